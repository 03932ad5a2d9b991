r"""Command-line entry point.

  python -m centernet_jax.main --config=configs/hourglass.py:demo --workdir=runs/demo
  python -m centernet_jax.main --config=configs/hourglass.py --dry_run

Everything else lives in ``centernet_jax.train.train_and_evaluate``, which notebooks can
import and call directly with a config from ``configs/``.
"""

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant: configs/hourglass.py:demo.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.DEFINE_bool("dry_run", False,
                  "Build the model abstractly, print head shapes and the parameter count, "
                  "and exit (no data, no training).")


def main(argv):
    # Imported here so that --help and flag errors stay fast.
    from centernet_jax import cli, train  # pylint: disable=g-import-not-at-top

    config = cli.config_from_flags(argv)

    if FLAGS.dry_run:
        shapes, num_params = train.describe_model(config)
        for i, stack in enumerate(shapes):
            for name, shape in stack.items():
                print(f"stack {i} head {name}: {shape}")
        print(f"parameters: {num_params}")
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required for training.")
    cli.prepare_process()
    with cli.exit_on_user_error():
        metrics = train.train_and_evaluate(config, FLAGS.workdir)
    print("COCO bbox: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in
                                    ("AP", "AP50", "AP75", "APs", "APm", "APl")))


if __name__ == "__main__":
    app.run(main)
