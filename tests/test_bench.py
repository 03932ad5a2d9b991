"""The benchmark entry point runs (quick mode) and reports consistent numbers."""

import json
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import bench, decode, targets
from centernet_jax.benchmarks import memory, models

# The quick models suite (2 models) takes ~36 s on 2 idle CPU cores from a cold compilation
# cache, most of it compiling. The bound leaves room for other jobs on the machine; the real
# time is printed (pytest -s).
QUICK_MODELS_BOUND_S = 150.0
SMOKE_LABELS = ["hourglass:smoke", "resnet18:smoke"]


def test_dcn_quick_benchmark_fields(tmp_path):
    result = bench.run("dcn", quick=True)
    result = json.loads(json.dumps(result))  # what --json writes must be JSON-serialisable
    assert result["what"] == "dcn" and result["quick"] is True
    assert result["device_kind"] and result["backend"]
    rows = result["rows"]
    shapes = sorted({row["shape"] for row in rows})
    assert len(shapes) == len(bench.DCN_QUICK_SHAPES) and len(rows) == 2 * len(shapes)
    for shape in shapes:
        dcn, conv = ({row["layer"]: row for row in rows if row["shape"] == shape}[layer]
                     for layer in ("dcn", "conv"))
        for row in (dcn, conv):
            for field in ("fwd_ms", "fwd_bwd_ms", "fwd_gflop", "fwd_bwd_gflop", "fwd_mbyte",
                          "fwd_bwd_mbyte", "matmul_gflop"):
                assert row[field] > 0, (shape, row["layer"], field)
        assert dcn["fwd_ratio"] == pytest.approx(dcn["fwd_ms"] / conv["fwd_ms"])
        assert dcn["fwd_bwd_ratio"] == pytest.approx(dcn["fwd_bwd_ms"] / conv["fwd_bwd_ms"])
        assert conv["fwd_ratio"] == conv["fwd_bwd_ratio"] == 1.0
        # The DCN does strictly more work than the plain conv (offset conv + sampling).
        assert dcn["fwd_gflop"] > conv["fwd_gflop"]
        assert dcn["matmul_gflop"] > conv["matmul_gflop"]
    table = bench.format_table(rows)
    assert len(table.splitlines()) == len(rows) + 1 and "fwd_bwd_ratio" in table


def test_unknown_benchmark_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.run("no-such-benchmark")


# ---------------------------------------------------------------------------------------
# models: the whole quick suite, run once for the module.


@pytest.fixture(scope="module")
def quick_models():
    start = time.perf_counter()
    result = bench.run("models", quick=True)
    elapsed = time.perf_counter() - start
    print(f"\nquick models suite: {elapsed:.1f} s wall ({result['compile_s']:.1f} s until "
          f"every program was compiled, {result['compile_workers']} compile workers)\n"
          + bench.report(result))
    return json.loads(json.dumps(result)), elapsed  # what --json writes


def _rows(result, config, measure, mode=None, batch=None):
    return [r for r in result["rows"] if r["config"] == config and r["measure"] == measure
            and r["mode"] == mode and (batch is None or r["batch"] == batch)]


def _one(result, config, measure, mode=None, batch=None):
    (row,) = _rows(result, config, measure, mode, batch)
    return row


def test_quick_models_run_wide_fields_and_time(quick_models):
    result, elapsed = quick_models
    assert result["what"] == "models" and result["quick"] is True
    assert result["device_kind"] and result["backend"] == jax.default_backend()
    assert result["configs"] == SMOKE_LABELS
    assert result["batch"] == models.QUICK_BATCH and result["iters"] == models.QUICK_ITERS
    assert 0 < result["compile_s"] <= result["total_s"] <= elapsed
    assert elapsed < QUICK_MODELS_BOUND_S, f"quick models suite took {elapsed:.0f} s"
    assert result["device_memory_stats"] is (jax.default_backend() != "cpu")


def test_quick_models_rows_record_every_field(quick_models):
    result, _ = quick_models
    assert result["rows"] and result["table_columns"]
    for row in result["rows"]:
        assert list(row) == list(models.ROW_FIELDS)
        # Every timing says where, on what and how often it was measured.
        assert row["device_kind"] == result["device_kind"] and row["backend"]
        assert row["batch"] in (1, result["batch"]) and row["iters"] == result["iters"]
        assert row["input_hw"] in ("64x64", "16x16") and row["warmup"] >= 1
        assert row["ms"] > 0
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["ms"])
    table = bench.format_table(result["rows"], result["table_columns"])
    assert len(table.splitlines()) == len(result["rows"]) + 1


@pytest.mark.parametrize("config", SMOKE_LABELS)
def test_quick_models_measurements_are_consistent(quick_models, config):
    result, _ = quick_models
    batch = result["batch"]
    for size in (1, batch):
        plain = _one(result, config, "detect", "plain", size)
        flip = _one(result, config, "detect", "flip", size)
        for row in (plain, flip):
            assert row["xla_gflop_per_image"] > 0 and row["matmul_gflop_per_image"] > 0
            assert row["achieved_gflop_per_s"] == pytest.approx(
                row["xla_gflop_per_image"] * size / (row["ms"] / 1e3))
            assert row["xla_memory_mbyte"] == pytest.approx(
                row["xla_temp_mbyte"] + row["xla_argument_mbyte"] + row["xla_output_mbyte"]
                - row["xla_alias_mbyte"])
            assert row["compile_s"] > 0
        # Flip runs the forward on the image and its mirror: about twice the work.
        assert 1.8 < flip["matmul_gflop_per_image"] / plain["matmul_gflop_per_image"] < 2.2
        assert 1.8 < flip["xla_gflop_per_image"] / plain["xla_gflop_per_image"] < 2.2
        for mode, detect_row in (("plain", plain), ("flip", flip)):
            decode_row = _one(result, config, "decode", mode, size)
            assert decode_row["share"] == pytest.approx(decode_row["ms"] / detect_row["ms"])
            assert decode_row["share_of"] == f"detect {mode} batch {size}"
            assert 0 < decode_row["share"] < 1
    # The forward is the same per image at any batch size.
    assert (_one(result, config, "detect", "plain", batch)["matmul_gflop_per_image"]
            == pytest.approx(_one(result, config, "detect", "plain", 1)
                             ["matmul_gflop_per_image"]))

    step = _one(result, config, "train_step")
    assert step["batch"] == batch and step["images_per_s"] > 0
    # Forward + backward: roughly three forwards' worth of convolution work.
    assert 2 < step["matmul_gflop_per_image"] / plain["matmul_gflop_per_image"] < 4.5
    assert step["xla_gflop_per_image"] > plain["xla_gflop_per_image"]
    assert step["xla_memory_mbyte"] > 0 and step["xla_alias_mbyte"] > 0  # donated state
    rendering = _one(result, config, "targets")
    assert rendering["share"] == pytest.approx(rendering["ms"] / step["ms"])
    assert 0 < rendering["share"] < 1 and rendering["share_of"] == "train_step"

    # Baselines: checked against the JAX results before timing, then timed.
    for measure, jax_row, tolerance in (
            ("numpy_decode", _one(result, config, "decode", "plain", batch),
             models.SCORE_TOLERANCE),
            ("numpy_targets", rendering, models.HEATMAP_TOLERANCE)):
        baseline = _one(result, config, measure, jax_row["mode"], batch)
        assert baseline["agrees"] is True and 0 <= baseline["max_abs_diff"] <= tolerance
        assert baseline["batch"] == jax_row["batch"]
        assert baseline["input_hw"] == jax_row["input_hw"]
        assert jax_row["vs_numpy"] == pytest.approx(baseline["ms"] / jax_row["ms"])
    assert rendering["objects_per_image"] > 0


def test_quick_models_summary_matches_rows(quick_models):
    result, _ = quick_models
    assert [s["config"] for s in result["summary"]] == SMOKE_LABELS
    for summary in result["summary"]:
        config = summary["config"]
        assert summary["latency_ms"] == _one(result, config, "detect", "plain", 1)["ms"]
        assert summary["flip_latency_ms"] == _one(result, config, "detect", "flip", 1)["ms"] > 0
        assert summary["flip_images_per_s"] == _one(
            result, config, "detect", "flip", result["batch"])["images_per_s"]
        assert summary["train_images_per_s"] == _one(result, config, "train_step")[
            "images_per_s"]
        assert summary["targets_share"] == _one(result, config, "targets")["share"]
        assert summary["gflop_per_image"] > 0 and summary["train_gflop_per_image"] > 0
        if jax.default_backend() == "cpu":
            assert summary["device_peak_mbyte"] is None  # CPU has no memory_stats


# ---------------------------------------------------------------------------------------
# models: the pieces, on small hand-made inputs.


def test_numpy_decode_matches_the_jax_decode_and_the_check_can_fail():
    rng = np.random.default_rng(0)
    hm = (rng.normal(size=(2, 12, 10, 3)) * 2 - 2).astype(np.float32)
    wh = rng.uniform(0, 4, (2, 12, 10, 2)).astype(np.float32)
    reg = rng.uniform(0, 1, (2, 12, 10, 2)).astype(np.float32)
    want = models.numpy_ctdet_decode(hm, wh, reg, k=20)
    got = decode.ctdet_decode(jax.nn.sigmoid(hm), wh, reg, k=20)
    assert models.check_decode_agreement(got, want) <= models.SCORE_TOLERANCE
    assert np.all(np.diff(want["scores"], axis=-1) <= 0)
    moved = dict(want, boxes=want["boxes"] + 0.5)
    with pytest.raises(AssertionError, match="boxes"):
        models.check_decode_agreement(got, moved)
    with pytest.raises(AssertionError, match="scores"):
        models.check_decode_agreement(got, dict(want, scores=want["scores"] * 0.9))


def test_numpy_targets_match_the_jax_renderer_and_the_check_can_fail():
    config = models.load_config("configs/hourglass.py:smoke")[1]
    batch = models.random_train_batch(config, 3, seed=4)
    grid = (16, 16)
    want = models.numpy_ctdet_targets(batch["boxes"], batch["classes"], batch["mask"],
                                      num_classes=5, output_hw=grid)
    got = targets.ctdet_targets(batch["boxes"], batch["classes"], batch["mask"],
                                num_classes=5, output_hw=grid)
    assert models.check_targets_agreement(got, want) <= models.HEATMAP_TOLERANCE
    assert want["mask"].any() and want["heatmap"].max() == 1.0
    broken = dict(want, heatmap=want["heatmap"].copy())
    broken["heatmap"][0, 0, 5, 5] += 0.01
    with pytest.raises(AssertionError, match="targets differ"):
        models.check_targets_agreement(got, broken)


def test_matmul_flops_counts_convs_dots_and_scan_iterations():
    conv = nn.Conv(6, (3, 3), padding="SAME")
    x = jnp.ones((2, 8, 8, 4))
    params = conv.init(jax.random.key(0), x)
    assert models.matmul_flops(conv.apply, params, x) == 2 * 2 * 8 * 8 * 6 * 9 * 4

    def looped(w, v):  # five [4, 4] @ [4] products inside a scan, under jit
        return jax.lax.scan(lambda c, _: (w @ c, None), v, None, length=5)[0]

    assert models.matmul_flops(jax.jit(looped), jnp.ones((4, 4)), jnp.ones(4)) == 5 * 2 * 16


def test_load_config_specs():
    label, config = models.load_config("configs/resnet18.py:coco_nodcn")
    assert label == "resnet18:coco_nodcn" and not config.model.resnet.deformable
    assert models.load_config("configs/dla34.py", "smoke")[0] == "dla34:smoke"
    assert models.load_config("configs/dla34.py")[1].input.input_hw == (512, 512)
    with pytest.raises(FileNotFoundError, match="no_such"):
        models.load_config("configs/no_such.py")


def test_cli_writes_json(tmp_path):
    out = tmp_path / "models.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        [sys.executable, "-m", "centernet_jax.bench", "--what=models", "--quick",
         # The quick batch again: the programs come from the session's compilation cache.
         "--configs=configs/resnet18.py", f"--batch={models.QUICK_BATCH}", "--iters=1",
         f"--json={out}"],
        cwd=root, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    batch = models.QUICK_BATCH
    assert result["configs"] == ["resnet18:smoke"] and result["batch"] == batch
    assert {(r["measure"], r["mode"], r["batch"]) for r in result["rows"]} >= {
        ("detect", "plain", 1), ("detect", "flip", batch), ("train_step", None, batch),
        ("numpy_decode", "plain", batch), ("numpy_targets", None, batch)}
    assert all(r["iters"] == 1 for r in result["rows"])


# ---------------------------------------------------------------------------------------
# memory: the quick suite (smoke hourglass, 8 fake CPU devices from conftest, in-process).


@pytest.fixture(scope="module")
def quick_memory():
    start = time.perf_counter()
    result = bench.run("memory", quick=True)
    print(f"\nquick memory suite: {time.perf_counter() - start:.1f} s\n" + bench.report(result))
    return result


def test_quick_memory_rows_and_json_round_trip(quick_memory):
    result = json.loads(json.dumps(quick_memory))  # what --json writes
    assert result == quick_memory
    assert result["what"] == "memory" and result["fake_devices"] == "in-process"
    assert result["devices"] == 8 and result["fsdp"] == 8
    assert result["batch_per_device"] == memory.QUICK_BATCH
    assert "proxy" in result["note"]
    rows = result["rows"]
    assert {(r["dtype"], r["mesh"]) for r in rows} == {
        (dtype, mesh) for dtype in ("float32", "bfloat16")
        for mesh in ("data=8,fsdp=1", "data=1,fsdp=8")}
    for row in rows:
        assert list(row) == list(memory.ROW_FIELDS)
        assert row["config"] == "hourglass:smoke" and row["input_hw"] == "64x64"
        assert row["devices"] == row["data"] * row["fsdp"] == 8
        assert row["global_batch"] == 8 * row["batch_per_device"] == 8 * memory.QUICK_BATCH
        for field in ("argument_mbyte", "output_mbyte", "alias_mbyte", "temp_mbyte",
                      "total_mbyte", "params_mbyte", "opt_state_mbyte", "state_mbyte",
                      "batch_mbyte", "residual_mbyte", "compile_s", "lower_s"):
            assert row[field] > 0, (row["dtype"], row["mesh"], field)
        assert row["generated_code_mbyte"] >= 0
        assert row["total_mbyte"] == pytest.approx(
            row["argument_mbyte"] + row["output_mbyte"] + row["temp_mbyte"]
            - row["alias_mbyte"])
        # XLA receives exactly the analytic shards: the state and the batch slice.
        assert row["argument_mbyte"] == pytest.approx(row["state_mbyte"] + row["batch_mbyte"])
        # The donated state is rewritten in place, all of it.
        assert row["alias_mbyte"] == pytest.approx(row["state_mbyte"])
        # Adam's mu and nu: two float32 copies of the parameters (plus two step counters).
        assert row["opt_state_mbyte"] == pytest.approx(2 * row["params_mbyte"], abs=1e-4)
        assert row["state_mbyte"] > row["params_mbyte"] + row["opt_state_mbyte"]


def test_quick_memory_fsdp_shards_state_and_bf16_halves_activations(quick_memory):
    case = {(r["dtype"], r["fsdp"]): r for r in quick_memory["rows"]}
    for dtype in ("float32", "bfloat16"):
        dp, fsdp = case[dtype, 1], case[dtype, 8]
        assert dp["sharded_param_fraction"] == 0.0 < fsdp["sharded_param_fraction"]
        assert fsdp["argument_mbyte"] < dp["argument_mbyte"]
        assert fsdp["params_mbyte"] < dp["params_mbyte"]
        assert fsdp["batch_mbyte"] == dp["batch_mbyte"]  # batch split over both axes
    for fsdp in (1, 8):
        f32, bf16 = case["float32", fsdp], case["bfloat16", fsdp]
        # The state is float32 whatever the computation dtype ...
        assert bf16["state_mbyte"] == f32["state_mbyte"]
        # ... while the activations kept for the backward pass shrink. (XLA:CPU's temp
        # bytes do not: it has no bf16 convolutions and converts around each one, so
        # bf16 temp is about f32 temp there; see the memory module docstring.)
        assert bf16["residual_mbyte"] < 0.9 * f32["residual_mbyte"]
    (summary,) = quick_memory["summary"]
    assert summary["fsdp_over_dp_argument_f32"] == pytest.approx(
        case["float32", 8]["argument_mbyte"] / case["float32", 1]["argument_mbyte"])
    assert summary["bf16_over_f32_residual"] < 0.9


def test_memory_cli_runs_in_a_subprocess_with_fake_devices(tmp_path):
    out = tmp_path / "memory.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # One CPU device here: the benchmark must start its own 8-device worker.
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "centernet_jax.bench", "--what=memory", "--quick",
                    f"--json={out}"], cwd=root, env=env, check=True, capture_output=True,
                   timeout=600)
    result = json.loads(out.read_text())
    assert result["fake_devices"] == "subprocess" and result["devices"] == 8
    assert len(result["rows"]) == 4 and all(r["devices"] == 8 for r in result["rows"])
