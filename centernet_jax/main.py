r"""Command-line entry point.

  python -m centernet_jax.main --config=configs/hourglass.py:demo --workdir=runs/demo
  python -m centernet_jax.main --config=configs/hourglass.py --dry_run

Multi-process (one process per host): every host runs the same command, with
JAX_COORDINATOR_ADDRESS=host0:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i set, or under
Slurm, Open MPI or on a Cloud TPU pod, which are detected (``centernet_jax.distributed``).

Everything else lives in ``centernet_jax.train.train_and_evaluate``, which notebooks can
import and call directly with a config from ``centernet_jax.load_config``.
"""

import sys

from absl import app, flags, logging

from centernet_jax import cli

FLAGS = flags.FLAGS
# 128 + SIGTERM, what a shell reports for a job the signal ended; schedulers that requeue
# preempted jobs look for a non-zero status.
PREEMPTED_EXIT_STATUS = 143
cli.define_config_flags(workdir_help="Directory for checkpoints, metrics and pictures.")
flags.DEFINE_bool("dry_run", False,
                  "Build the model abstractly, print head shapes and the parameter count, "
                  "and exit (no data, no training).")
flags.DEFINE_bool("log_all_processes", False,
                  "In multi-process runs, keep INFO logs on every process (by default only "
                  "process 0 logs below WARNING, so that lines are not repeated per host).")


def main(argv):
    # Imported here so that --help and flag errors stay fast.
    # pylint: disable=g-import-not-at-top
    import jax

    from centernet_jax import assembly, distributed, runtime, tasks, train

    config = cli.config_from_flags(argv)

    if FLAGS.dry_run:
        shapes, num_params = assembly.assemble(config).describe()
        for i, stack in enumerate(shapes):
            for name, shape in stack.items():
                print(f"stack {i} head {name}: {shape}")
        print(f"parameters: {num_params}")
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required for training.")
    runtime.prepare(config)
    distributed.log_process_info()
    distributed.quiet_non_primary_logging(FLAGS.log_all_processes)
    with cli.exit_on_user_error():
        try:
            metrics = train.train_and_evaluate(config, FLAGS.workdir)
        except train.Preempted as preempted:
            logging.warning("%s", preempted)
            sys.exit(PREEMPTED_EXIT_STATUS)
    if jax.process_index() > 0:  # one summary per run, not one per host
        return
    print(tasks.get(config.task).metrics.format(metrics))


if __name__ == "__main__":
    cli.run(main)
