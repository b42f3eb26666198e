"""Sensors: runs on uploads (``uploads``) and alerts (``alerts``)."""
