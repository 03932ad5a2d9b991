"""assembly.assemble: the one place a config becomes a task, a model and an optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import assembly, train_state
from centernet_jax.tasks import ctdet
from configs import dla34, hourglass


def test_assembles_task_model_and_state_of_the_config():
    config = hourglass.get_config("smoke")
    parts = assembly.assemble(config, steps_per_epoch=8)
    assert isinstance(parts.task, ctdet.CtdetTask) and parts.task.num_classes == 5
    assert set(parts.model.heads) == set(parts.task.heads)
    assert parts.output_hw() == (16, 16) and parts.output_hw((128, 96)) == (32, 24)
    abstract = parts.abstract_state()
    state = jax.jit(parts.init)(train_state.init_rng(config.seed))
    assert jax.tree.structure(state) == jax.tree.structure(abstract)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(state),
                                                  jax.tree.leaves(abstract)))
    # The optimizer is the config's: Adam's first step moves each parameter by the lr.
    grads = jax.tree.map(jnp.ones_like, state.params)
    first, _ = parts.tx.update(grads, parts.tx.init(state.params), state.params)
    leaf = jax.tree.leaves(first)[0]
    assert np.allclose(np.abs(leaf), config.train.learning_rate, rtol=1e-3)


def test_describe_counts_the_official_hourglass_104():
    shapes, num_params = assembly.assemble(hourglass.get_config()).describe()
    assert num_params == 191_284_008
    assert [stack["hm"] for stack in shapes] == [(1, 128, 128, 80)] * 2


def test_assembling_needs_the_class_count():
    config = dla34.get_config("custom")  # classes come from the json
    with pytest.raises(ValueError, match="dataset.num_classes is not set"):
        assembly.assemble(config)
