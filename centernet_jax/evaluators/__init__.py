"""Metric computations on decoded detections: the evaluator interface and its COCO (and,
per task, other) implementations."""
