"""Chaussettes: real-time anomaly detection on HTTP access logs."""

__version__ = "0.1.0"
