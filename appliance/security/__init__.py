"""Secrets and who may do what: dashboard users, the TLS certificate, CurveZMQ keys."""
