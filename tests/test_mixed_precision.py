"""``config.model.dtype = "bfloat16"``: bf16 compute, everything that accumulates in float32.

Intended behaviour, checked on the smoke hourglass and the smoke ResNet-18 + DCN:
* every convolution and matmul of the train step (forward and backward) takes bf16
  operands, while the parameters, the Adam moments and the BatchNorm statistics stay
  float32 through jitted train steps;
* the heads emit float32 (bf16 values cast up), so the focal loss, the L1 losses and the
  decoder (sigmoid, NMS, top-K, boxes) run in float32 and return float32;
* bf16 training starts from the float32 loss (same parameters) and reduces the loss on a
  fixed batch as float32 training does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from centernet_jax import assembly, inference, losses, train, train_state
from centernet_jax.benchmarks.models import random_train_batch
from configs import hourglass, resnet18

CONFIGS = {"hourglass": hourglass, "resnet18_dcn": resnet18}
BATCH = 4
STEPS = 10
# bf16 rounds activations to 8 mantissa bits (relative 2^-9 per op); the loss of a fresh
# model agrees with the float32 one far better than this.
FIRST_LOSS_RTOL = 5e-2
# A fixed batch at lr 1e-3: float32 and bf16 both lose > 30% of the loss in 10 steps.
MIN_LOSS_DROP = 0.3


def _walk(jaxpr):
    """Every equation of ``jaxpr`` and of its sub-jaxprs (jit, scan, remat, custom_vjp)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _walk(sub)


def _input_dtypes(jaxpr, primitive: str) -> list[tuple[str, ...]]:
    return [tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in _walk(jaxpr)
            if eqn.primitive.name == primitive]


def _float_leaf_dtypes(tree) -> set[str]:
    return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)}


def _setup(name: str, dtype: str) -> assembly.Assembly:
    config = CONFIGS[name].get_config("smoke")
    config.model.dtype = dtype
    # Many steps per epoch: no learning-rate drop within the few steps run here.
    return assembly.assemble(config, steps_per_epoch=1000)


class Run:
    """``STEPS`` jitted train steps of one config and dtype on one fixed batch."""

    def __init__(self, name: str, dtype: str, initial_state, batch):
        parts = _setup(name, dtype)
        self.config, self.task, self.model = parts.config, parts.task, parts.model
        step = jax.jit(train.make_train_step(self.model, self.task, parts.tx,
                                             parts.output_hw()))
        self.jaxpr = jax.make_jaxpr(step)(initial_state, batch).jaxpr
        state, self.metrics = initial_state, []
        for _ in range(STEPS):
            state, metrics = step(state, batch)
            self.metrics.append(jax.device_get(metrics))
        self.state = state
        self.losses = np.array([float(m["loss"]) for m in self.metrics])


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def runs(request):
    """(name, {dtype: Run}) from one float32-initialised state (the init does not depend
    on the computation dtype: parameters are created in float32 either way)."""
    name = request.param
    parts = _setup(name, "float32")
    state = jax.jit(parts.init)(train_state.init_rng(0))
    batch = jax.device_put(random_train_batch(parts.config, BATCH, seed=1))
    return name, {dtype: Run(name, dtype, state, batch) for dtype in ("float32", "bfloat16")}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bf16_model_creates_float32_variables(name):
    abstract = _setup(name, "bfloat16").abstract_state()
    assert _float_leaf_dtypes(abstract.params) == {"float32"}
    assert _float_leaf_dtypes(abstract.batch_stats) == {"float32"}
    assert _float_leaf_dtypes(abstract.opt_state) == {"float32"}
    f32_abstract = _setup(name, "float32").abstract_state()
    # Same tree, shapes and dtypes as the float32 model: checkpoints are interchangeable.
    assert jax.tree.structure(abstract) == jax.tree.structure(f32_abstract)
    assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype,
                                        abstract, f32_abstract)) == [True] * len(
        jax.tree.leaves(abstract))


@pytest.mark.slow
def test_bf16_train_step_convolves_in_bf16(runs):
    name, by_dtype = runs
    bf16_convs = _input_dtypes(by_dtype["bfloat16"].jaxpr, "conv_general_dilated")
    f32_convs = _input_dtypes(by_dtype["float32"].jaxpr, "conv_general_dilated")
    # Forward, input-gradient and kernel-gradient convolutions alike.
    assert len(bf16_convs) == len(f32_convs) > 50
    assert set(bf16_convs) == {("bfloat16", "bfloat16")}, name
    assert set(f32_convs) == {("float32", "float32")}, name
    # Matmuls (the DCN taps): at least one bf16 operand each. The DCN accumulates its taps
    # in float32, so the backward dots take that float32 cotangent with a bf16 operand.
    for operands in _input_dtypes(by_dtype["bfloat16"].jaxpr, "dot_general"):
        assert "bfloat16" in operands, (name, operands)


@pytest.mark.slow
def test_bf16_losses_and_batch_statistics_reduce_in_float32(runs):
    name, by_dtype = runs
    jaxpr = by_dtype["bfloat16"].jaxpr
    # Focal loss: sigmoid and logs of the heatmap; BatchNorm: rsqrt of the variance.
    for primitive in ("logistic", "log", "rsqrt"):
        found = _input_dtypes(jaxpr, primitive)
        assert found and set(found) == {("float32",)}, (name, primitive, found)


@pytest.mark.slow
def test_bf16_train_state_stays_float32(runs):
    name, by_dtype = runs
    state = by_dtype["bfloat16"].state
    assert int(state.step) == STEPS
    assert _float_leaf_dtypes(state.params) == {"float32"}, name
    assert _float_leaf_dtypes(state.batch_stats) == {"float32"}, name
    adam = [s for s in jax.tree.leaves(state.opt_state,
                                       is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam) == 1
    assert _float_leaf_dtypes(adam[0].mu) == _float_leaf_dtypes(adam[0].nu) == {"float32"}
    assert jax.tree.structure(adam[0].mu) == jax.tree.structure(state.params)
    # The steps really updated the float32 state (not skipped as non-finite).
    assert all(float(m["nonfinite"]) == 0.0 for m in by_dtype["bfloat16"].metrics)
    moved = jax.tree.leaves(jax.tree.map(
        lambda mu: bool(jnp.any(mu != 0)), adam[0].mu))
    assert sum(moved) > len(moved) // 2


@pytest.mark.slow
def test_bf16_loss_parts_are_finite_float32_scalars(runs):
    name, by_dtype = runs
    for metrics in by_dtype["bfloat16"].metrics:
        for part in ("loss", "hm_loss", "wh_loss", "off_loss", "grad_norm"):
            value = np.asarray(metrics[part])
            assert value.shape == () and value.dtype == np.float32, (name, part, value.dtype)
            assert np.isfinite(value), (name, part)


@pytest.mark.slow
def test_bf16_first_loss_matches_float32_and_bf16_trains(runs):
    name, by_dtype = runs
    f32, bf16 = by_dtype["float32"], by_dtype["bfloat16"]
    print(f"\n{name} losses\n  float32  {np.round(f32.losses, 4)}\n"
          f"  bfloat16 {np.round(bf16.losses, 4)}")
    # Step 1 runs on identical parameters: only the computation dtype differs.
    np.testing.assert_allclose(bf16.losses[0], f32.losses[0], rtol=FIRST_LOSS_RTOL)
    for part in ("hm_loss", "wh_loss", "off_loss"):
        np.testing.assert_allclose(bf16.metrics[0][part], f32.metrics[0][part],
                                   rtol=FIRST_LOSS_RTOL, atol=1e-3, err_msg=part)
    for run in (f32, bf16):
        assert run.losses[-1] < (1 - MIN_LOSS_DROP) * run.losses[0], (name, run.losses)
    # bf16 follows the float32 trajectory (loosely: rounding compounds over the steps).
    assert bf16.losses[-1] < 1.5 * f32.losses[-1], (name, f32.losses, bf16.losses)


@pytest.mark.slow
def test_bf16_head_outputs_are_float32_and_differ_from_float32(runs):
    name, by_dtype = runs
    images = random_train_batch(by_dtype["float32"].config, 2, seed=3)["image"]
    variables = by_dtype["bfloat16"].state.variables
    outputs = {dtype: jax.device_get(jax.jit(functools.partial(run.model.apply, train=False))(
        variables, images)) for dtype, run in by_dtype.items()}
    for stack_f32, stack_bf16 in zip(outputs["float32"], outputs["bfloat16"]):
        for head, value in stack_bf16.items():
            assert value.dtype == np.float32, (name, head)
            assert np.all(np.isfinite(value)), (name, head)
            # Rounded computation: close to, but not the same as, the float32 model's.
            # (Not exactly bf16 values: XLA may keep excess precision between fused ops.)
            scale = np.max(np.abs(stack_f32[head]))
            difference = np.max(np.abs(value - stack_f32[head]))
            assert 0 < difference < 0.1 * scale, (name, head, difference, scale)


@pytest.mark.slow
def test_bf16_detections_are_float32(runs):
    name, by_dtype = runs
    run = by_dtype["bfloat16"]
    detect = jax.jit(inference.make_detect_fn(run.model, run.task, top_k=10))
    images = random_train_batch(run.config, 2, seed=4)["image"]
    jaxpr = jax.make_jaxpr(detect)(run.state.variables, images).jaxpr
    assert set(_input_dtypes(jaxpr, "top_k")) == {("float32",)}, name
    detections = jax.device_get(detect(run.state.variables, images))
    for field in ("scores", "boxes"):
        assert detections[field].dtype == np.float32, (name, field)
        assert np.all(np.isfinite(detections[field])), (name, field)
    assert detections["boxes"].shape == (2, 10, 4)


def test_losses_of_bf16_logits_are_float32():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(-2, 1, (2, 8, 8, 3)), jnp.bfloat16)
    heatmap = np.zeros((2, 8, 8, 3), np.float32)
    heatmap[0, 3, 4, 1] = heatmap[1, 5, 2, 0] = 1.0
    loss = losses.focal_loss(logits, heatmap)
    assert loss.dtype == jnp.float32
    # Same value as the float32 loss of the same (bf16-representable) logits.
    np.testing.assert_allclose(loss, losses.focal_loss(logits.astype(jnp.float32), heatmap),
                               rtol=1e-6)
    index = jnp.array([[3 * 8 + 4], [5 * 8 + 2]], jnp.int32)
    l1 = losses.reg_l1_loss(logits[..., :2], index, jnp.ones((2, 1)), jnp.zeros((2, 1, 2)))
    assert l1.dtype == jnp.float32
