"""CenterNet ("Objects as Points" and "Keypoint Triplets") in JAX/Flax."""

__version__ = "0.1.0"
