"""Metric computations on decoded detections."""
