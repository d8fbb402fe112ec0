"""The predictor: rig state, drilling physics and alarm detection over channel frames.

Pure streaming logic in plain Python — no sockets, files or clocks, and no numpy (~15 MiB
of resident memory per process) — so the same code runs live (`rigtel predictor`), in
tests and in backtests, and gives the same answer for the same samples. The entry point is `appliance.predict.engine.Predictor`; the
program around it is `appliance.predict.service`. What each detector looks for is in
docs/PREDICTOR.md.
"""
