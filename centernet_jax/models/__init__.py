"""Backbones, necks and CenterNet heads as Flax linen modules (NHWC)."""
