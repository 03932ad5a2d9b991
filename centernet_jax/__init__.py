"""CenterNet ("Objects as Points" and "Keypoint Triplets") in JAX/Flax.

From a notebook or a cluster job::

    from centernet_jax import load_config, train
    config = load_config("configs/hourglass.py:demo", {"train.num_epochs": 0.1})
    metrics = train.train_and_evaluate(config, "runs/demo")
"""

__version__ = "0.1.0"


def load_config(spec, overrides=None, *, lock=True):
    """``config_loading.load_config``: a config file by path, with variant and overrides,
    exactly as ``--config=...`` and ``--config.a.b=v`` on the command line."""
    from centernet_jax import config_loading  # pylint: disable=g-import-not-at-top

    return config_loading.load_config(spec, overrides, lock=lock)
