"""The benchmark entry point runs (quick mode) and reports consistent numbers."""

import dataclasses
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

from centernet_jax import bench, decode, targets, tasks, train
from centernet_jax.benchmarks import input_pipeline, memory, models
from centernet_jax.data import sanitize
from centernet_jax.tasks import ctdet_reference

# The quick models suite (2 models) takes ~36 s on 2 idle CPU cores from a cold compilation
# cache, most of it compiling; the time is benchmark output, printed (pytest -s).
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


@pytest.mark.slow
def test_quick_models_run_wide_fields(quick_models):
    result, elapsed = quick_models
    assert result["what"] == "models" and result["quick"] is True
    assert result["device_kind"] and result["backend"] == jax.default_backend()
    assert result["configs"] == SMOKE_LABELS
    assert result["batch"] == models.QUICK_BATCH and result["iters"] == models.QUICK_ITERS
    assert 0 < result["compile_s"] <= result["total_s"] <= elapsed
    assert result["device_memory_stats"] is (jax.default_backend() != "cpu")


@pytest.mark.slow
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
@pytest.mark.slow
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
             ctdet_reference.SCORE_TOLERANCE),
            ("numpy_targets", rendering, ctdet_reference.HEATMAP_TOLERANCE)):
        baseline = _one(result, config, measure, jax_row["mode"], batch)
        assert baseline["agrees"] is True and 0 <= baseline["max_abs_diff"] <= tolerance
        assert baseline["batch"] == jax_row["batch"]
        assert baseline["input_hw"] == jax_row["input_hw"]
        assert jax_row["vs_numpy"] == pytest.approx(baseline["ms"] / jax_row["ms"])
    assert rendering["objects_per_image"] > 0


@pytest.mark.slow
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
    want = ctdet_reference.decode(hm, wh, reg, k=20)
    got = decode.box_decode(jax.nn.sigmoid(hm), wh, reg, k=20)
    assert ctdet_reference.check_decode(got, want) <= ctdet_reference.SCORE_TOLERANCE
    assert np.all(np.diff(want["scores"], axis=-1) <= 0)
    moved = dict(want, boxes=want["boxes"] + 0.5)
    with pytest.raises(AssertionError, match="boxes"):
        ctdet_reference.check_decode(got, moved)
    with pytest.raises(AssertionError, match="scores"):
        ctdet_reference.check_decode(got, dict(want, scores=want["scores"] * 0.9))


def test_numpy_targets_match_the_jax_renderer_and_the_check_can_fail():
    config = models.load_config("configs/hourglass.py:smoke")[1]
    batch = models.random_train_batch(config, 3, seed=4)
    grid = (16, 16)
    want = ctdet_reference.batch_targets(batch["boxes"], batch["classes"], batch["mask"],
                                         num_classes=5, output_hw=grid)
    got = targets.box_targets(batch["boxes"], batch["classes"], batch["mask"],
                              num_classes=5, output_hw=grid)
    assert ctdet_reference.check_targets(got, want) <= ctdet_reference.HEATMAP_TOLERANCE
    assert want["mask"].any() and want["heatmap"].max() == 1.0
    broken = dict(want, heatmap=want["heatmap"].copy())
    broken["heatmap"][0, 0, 5, 5] += 0.01
    with pytest.raises(AssertionError, match="targets differ"):
        ctdet_reference.check_targets(got, broken)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------
# input: host pipeline per core, device- vs host-rendered targets (quick: 4 tiny JPEGs).


@pytest.fixture(scope="module")
def quick_input():
    result = bench.run("input", quick=True)
    print("\n" + bench.report(result))
    return json.loads(json.dumps(result))  # what --json writes


def test_quick_input_rows_ratios_and_exact_bytes(quick_input):
    result = quick_input
    settings = input_pipeline.QUICK
    assert result["what"] == "input" and result["quick"] is True
    assert result["images"] == settings.images and result["num_threads"] == 1
    assert result["input_hw"] == "64x64" and result["output_hw"] == "16x16"
    assert result["jpeg_kbyte"] > 0 and result["objects_per_image"] >= 1
    device, host = result["rows"]
    assert (device["pipeline"], host["pipeline"]) == input_pipeline.PIPELINES
    task = tasks.make_task(models.load_config(settings.config)[1])
    assert result["config"] == settings.config and result["task"] == task.name == "ctdet"
    assert result["num_classes"] == task.num_classes == 80
    assert device["h2d_fields"] == ",".join(train.train_fields(task))
    assert host["h2d_fields"] == ",".join(("image", *task.reference.shipped_fields))
    for row in (device, host):
        assert row["examples"] == settings.images and row["rounds"] == settings.rounds
        for field in ("cpu_ms_per_example", "wall_ms_per_example", "images_per_s_per_core",
                      "wall_images_per_s", "decode_cpu_ms", "transform_cpu_ms",
                      "cpu_ratio", "bytes_ratio"):
            assert row[field] > 0, (row["pipeline"], field)
        assert row["images_per_s_per_core"] == pytest.approx(1e3 / row["cpu_ms_per_example"])
        # One round: the stages add up to the whole.
        assert row["cpu_ms_per_example"] == pytest.approx(
            sum(row[f"{stage}_cpu_ms"] for stage in input_pipeline.STAGES))
    assert host["render_cpu_ms"] > 0
    assert device["cpu_ratio"] == device["bytes_ratio"] == 1.0
    assert host["cpu_ratio"] == pytest.approx(host["cpu_ms_per_example"]
                                              / device["cpu_ms_per_example"])

    # Bytes per example, by hand for 64x64 input, 16x16 grid, 80 classes, 128 slots.
    assert train.train_fields(task) == ("image", "boxes", "classes", "mask",
                                        *sanitize.COUNTERS)
    image = 64 * 64 * 3 * 4
    # boxes f32 [128, 4], classes i32 [128], mask bool [128], the counters i32 [] each.
    ours = image + 128 * (4 * 4 + 4 + 1) + 4 * len(sanitize.COUNTERS)
    # hm f32 [80, 16, 16], wh and reg f32 [128, 2], ind i64 [128], reg_mask u8 [128].
    official = image + 80 * 16 * 16 * 4 + 128 * (2 * 4 + 2 * 4 + 8 + 1)
    assert (ours, official) == (51_840 + 4 * len(sanitize.COUNTERS), 134_272)
    assert device["h2d_bytes_per_example"] == ours
    assert host["h2d_bytes_per_example"] == official
    assert host["bytes_ratio"] == pytest.approx(official / ours)

    (summary,) = result["summary"]
    assert summary["host_over_device_bytes"] == host["bytes_ratio"]
    assert summary["host_over_device_cpu"] == host["cpu_ratio"]
    assert summary["device_over_host_images_per_core"] == pytest.approx(host["cpu_ratio"])
    assert summary["device_render_ms_per_batch"] > 0
    assert summary["device_render_batch"] == settings.batch
    assert 0 <= summary["device_render_max_abs_diff"] <= ctdet_reference.HEATMAP_TOLERANCE
    table = bench.format_table(result["rows"], result["table_columns"])
    assert len(table.splitlines()) == 3 and "bytes_ratio" in table


def test_synthetic_examples_are_deterministic_and_decode():
    settings = dataclasses.replace(input_pipeline.QUICK, images=3, image_hw=(40, 56))
    first, again = (input_pipeline.make_examples(settings, 80) for _ in range(2))
    for example, same in zip(first, again):
        assert example["jpeg"] == same["jpeg"]
        np.testing.assert_array_equal(example["boxes"], same["boxes"])
        element = input_pipeline.decode(example)
        assert element["image"].shape == (40, 56, 3) and element["image"].dtype == np.uint8
        boxes = element["boxes"]
        assert boxes.dtype == np.float32 and len(boxes) == len(element["classes"]) >= 1
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 56)
        assert np.all(boxes[:, 3] <= 40) and np.all(boxes[:, 2:] - boxes[:, :2] >= 1)
        assert np.all((element["classes"] >= 0) & (element["classes"] < 80))
    assert first[0]["jpeg"] != first[1]["jpeg"]


def test_host_renderer_equals_the_device_renderer():
    grid, num_classes = (16, 20), 4
    boxes = np.array([
        [2.0, 3.0, 9.5, 12.25],      # inside
        [15.0, -4.0, 26.0, 6.0],     # crosses the right and top borders: clipped
        [-9.0, 2.0, -1.0, 8.0],      # entirely left of the grid: degenerate
        [5.0, 5.0, 5.0, 9.0],        # zero width
        [3.0, 4.0, 8.0, 11.0],       # class 0 again, same integer centre as the first
        [10.2, 10.1, 10.6, 10.4],    # sub-pixel: radius 0, a single 1
        [1.0, 1.0, 6.0, 6.0],        # class out of range: not drawn
        [4.0, 4.0, 12.0, 12.0],      # masked slot
        [-30.0, -30.0, 60.0, 60.0],  # larger than the grid
    ], np.float32)
    classes = np.array([0, 1, 2, 3, 0, 2, num_classes, 1, 3], np.int32)
    mask = np.array([True] * 7 + [False, True])
    got = ctdet_reference.image_targets(boxes, classes, mask, num_classes=num_classes,
                                        output_hw=grid, max_objects=12)
    want = targets.box_targets(boxes[None], classes[None], mask[None],
                               num_classes=num_classes, output_hw=grid)
    want = jax.tree.map(lambda x: np.asarray(x)[0], want)

    assert got["hm"].shape == (num_classes, *grid) and got["hm"].dtype == np.float32
    assert got["ind"].dtype == np.int64 and got["reg_mask"].dtype == np.uint8
    assert got["wh"].shape == got["reg"].shape == (12, 2)
    expected_valid = [True, True, False, False, True, True, False, False, True]
    np.testing.assert_array_equal(got["reg_mask"][:9].astype(bool), expected_valid)
    assert not got["reg_mask"][9:].any()  # the 3 slots past the 9 objects
    np.testing.assert_array_equal(got["reg_mask"][:9].astype(bool), want["mask"])
    heatmap = got["hm"].transpose(1, 2, 0)
    np.testing.assert_allclose(heatmap, want["heatmap"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(heatmap == 1.0, want["heatmap"] == 1.0)
    assert (heatmap == 1.0).sum() == 4  # 5 drawn objects, 2 sharing their peak
    np.testing.assert_array_equal(got["ind"][:9], want["index"])
    np.testing.assert_array_equal(got["wh"][:9], want["size"])
    np.testing.assert_array_equal(got["reg"][:9], want["offset"])
    # The clipped box [15, 0, 19, 6]: centre (17, 3), size (4, 6).
    assert got["ind"][1] == 3 * 20 + 17 and tuple(got["wh"][1]) == (4.0, 6.0)


def test_input_cli_passes_images_and_batch_and_writes_json(tmp_path):
    out = tmp_path / "input.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "centernet_jax.bench", "--what=input", "--quick",
                    "--images=3", "--batch=2", f"--json={out}"],
                   cwd=root, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["what"] == "input" and result["images"] == 3 and result["batch"] == 2
    assert [row["examples"] for row in result["rows"]] == [3, 3]
    assert result["summary"][0]["device_render_batch"] == 2


def test_startup_benchmark_times_the_missing_dataset_stop_and_a_json_opening():
    result = json.loads(json.dumps(bench.run("startup", quick=True)))
    rows = {row["case"]: row for row in result["rows"]}
    assert set(rows) == {"missing_dataset", "coco_json_open"}
    assert all(row["as_expected"] is True and row["seconds"] > 0 for row in rows.values())
    assert rows["coco_json_open"]["size"] == "500 images, 2000 annotations"
    with pytest.raises(ValueError, match="images must be positive"):
        bench.run("startup", images=-1)
