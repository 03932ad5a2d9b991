"""Config -> task -> model -> optimizer -> initial train state: the one place that builds them.

Training, evaluation, prediction, export, the benchmarks and the tests all start from
`assemble(config)`, so they build the same model for the same config::

    parts = assembly.assemble(config, steps_per_epoch=1000)
    state = parts.init(train_state.init_rng(config.seed))      # or parts.abstract_state()
    outputs = parts.model.apply(state.variables, images, train=False)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from centernet_jax import tasks, train_state
from centernet_jax.models import detector


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: jit takes its methods
class Assembly:
    """What a config builds.

    Attributes:
      config: the config it was built from.
      task: `config.task`'s task (`tasks.base.Task`).
      model: the `CenterNet` of `config.model` with the task's heads.
      tx: the optimizer (its schedule needs the steps per epoch; its state's structure
        does not, so inference assembles with any).
    """

    config: Any
    task: tasks.Task
    model: detector.CenterNet
    tx: optax.GradientTransformation

    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.config.input.input_hw)

    def init(self, rng: jax.Array) -> train_state.TrainState:
        """A fresh train state (parameters initialised from ``rng``)."""
        return train_state.create_train_state(rng, self.model, self.tx, self.input_hw)

    def abstract_state(self) -> train_state.TrainState:
        """The state's structure, shapes and dtypes (``jax.eval_shape``: nothing computed)."""
        return jax.eval_shape(self.init, train_state.init_rng(self.config.seed))

    def output_hw(self, input_hw=None) -> tuple[int, int]:
        """The output grid of ``input_hw`` (default the training input size)."""
        return self.task.output_hw(input_hw or self.input_hw, self.config.input.down_ratio)

    def describe(self) -> tuple[list[dict[str, tuple[int, ...]]], int]:
        """(per stack, head name -> output shape at batch 1; number of parameters), from
        ``jax.eval_shape`` alone."""
        images = jax.ShapeDtypeStruct((1, *self.input_hw, 3), jnp.float32)
        variables = jax.eval_shape(functools.partial(self.model.init, train=False),
                                   jax.random.key(0), images)
        outputs = jax.eval_shape(functools.partial(self.model.apply, train=False),
                                 variables, images)
        shapes = [{name: tuple(out.shape) for name, out in stack.items()} for stack in outputs]
        return shapes, train_state.count_params(variables["params"])


def assemble(config, steps_per_epoch: int = 1) -> Assembly:
    """Builds the task, the model and the optimizer ``config`` describes.

    Args:
      config: a run's config; ``dataset.num_classes`` must be known (from the config, the
        data via ``sources.fill_dataset_facts``, or a training run's config.json).
      steps_per_epoch: for the learning-rate schedule (training); 1 elsewhere.
    """
    task = tasks.make_task(config)
    model = detector.build_model(config.model, task.heads, task.pre_heads)
    tx = train_state.make_optimizer(config, steps_per_epoch)
    return Assembly(config=config, task=task, model=model, tx=tx)
