"""Drilling telemetry appliance: rig data in, stored, watched and shown live."""

__version__ = "0.1.0"
