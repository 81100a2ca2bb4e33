"""Evaluating a checkpoint's probabilities against known labels: metrics, calibration, the report."""
