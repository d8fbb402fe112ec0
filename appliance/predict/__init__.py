"""The predictor: rig state, derived channels, detectors, alarms, models and their evaluation."""
