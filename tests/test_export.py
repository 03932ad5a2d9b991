"""Export round trips: the serialized function reproduces the live model, without its code."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from centernet_jax import assembly, export, inference, tasks, train_state
from centernet_jax.tasks import ctdet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images_for(config, batch: int, seed: int = 0) -> np.ndarray:
    height, width = inference.eval_input_hw(config)
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, height, width, 3)).astype(np.float32)


def live_detections(config, model, variables, images, *, flip=False, top_k=None):
    """The in-process reference: decode boxes (output grid) scaled to input pixels."""
    task = tasks.make_task(config)
    detect = jax.jit(inference.make_detect_fn(
        model, task, top_k=top_k or config.eval.top_k, flip=flip))
    out = jax.device_get(detect(variables, images))
    return {"boxes": out["boxes"] * config.input.down_ratio, "scores": out["scores"],
            "classes": out["classes"]}


def assert_detections_close(got, want):
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["boxes"], want["boxes"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got["classes"], want["classes"])


@pytest.fixture(scope="module")
def hourglass(trained_smoke):
    """(config, model, variables, workdir) of the trained smoke hourglass."""
    config, workdir = trained_smoke
    parts = assembly.assemble(config)
    loaded = inference.load_variables(parts, workdir=workdir, checkpoint="latest")
    return config, parts.model, loaded.variables, workdir


@pytest.fixture(scope="module")
def hourglass_export(hourglass, tmp_path_factory):
    config, _, variables, _ = hourglass
    return export.export(config, variables, str(tmp_path_factory.mktemp("export_hg")))


def test_round_trip_matches_live_model_for_any_batch_size(hourglass, hourglass_export):
    config, model, variables, _ = hourglass
    det = export.load(hourglass_export)
    (_, image_aval), _ = jax.tree.unflatten(det.exported.in_tree, det.exported.in_avals)
    assert jax.export.is_symbolic_dim(image_aval.shape[0])
    k = config.eval.top_k
    for batch in (1, 3):  # one export serves both
        images = images_for(config, batch, seed=batch)
        got = det(images)
        assert got["boxes"].shape == (batch, k, 4) and got["boxes"].dtype == np.float32
        assert got["scores"].shape == (batch, k) and got["classes"].dtype == np.int32
        assert got["scores"][:, 0].min() > 0  # real peaks, not padding
        assert_detections_close(got, live_detections(config, model, variables, images))


def test_metadata_describes_input_and_outputs(hourglass, hourglass_export):
    config, _, variables, _ = hourglass
    with open(os.path.join(hourglass_export, export.METADATA_FILE)) as f:
        metadata = json.load(f)
    height, width = inference.eval_input_hw(config)
    k = config.eval.top_k
    assert metadata["input"]["shape"] == ["b", height, width, 3]
    assert metadata["input"]["channel_order"] == "BGR"
    np.testing.assert_allclose(metadata["input"]["mean"], config.input.mean)
    np.testing.assert_allclose(metadata["input"]["std"], config.input.std)
    assert metadata["input_hw"] == [height, width]
    assert (metadata["down_ratio"], metadata["top_k"], metadata["flip"]) == (4, k, False)
    assert metadata["num_classes"] == config.dataset.num_classes
    assert metadata["outputs"] == {
        "boxes": {"shape": ["b", k, 4], "dtype": "float32"},
        "scores": {"shape": ["b", k], "dtype": "float32"},
        "classes": {"shape": ["b", k], "dtype": "int32"}}
    assert metadata["task"] == "ctdet"
    assert metadata["output_units"] == ctdet.CtdetTask.export_units
    assert set(metadata["output_units"]) == {"boxes", "scores", "classes"}
    assert metadata["platforms"] == [jax.export.default_export_platform()]
    assert metadata["jax_version"] == jax.__version__
    assert metadata["model"]["num_params"] == train_state.count_params(variables["params"])
    det = export.load(hourglass_export)
    assert det.input_hw == (height, width) and det.top_k == k
    pixels = np.full((1, height, width, 3), 255, np.uint8)
    np.testing.assert_allclose(det.normalize(pixels)[0, 0, 0],
                               (1 - np.asarray(config.input.mean)) / config.input.std,
                               rtol=1e-6)


def test_weights_are_an_argument_and_can_be_swapped(hourglass, hourglass_export, tmp_path):
    config, model, variables, _ = hourglass
    directory = str(tmp_path / "swapped")
    shutil.copytree(hourglass_export, directory)
    with np.load(os.path.join(directory, export.WEIGHTS_FILE)) as stored:
        weights = {name: stored[name] for name in stored.files}
    swapped = {name: w * 0.9 if name.startswith("params/") else w
               for name, w in weights.items()}
    np.savez(os.path.join(directory, export.WEIGHTS_FILE), **swapped)
    images = images_for(config, 2)
    got = export.load(directory)(images)
    want = live_detections(config, model, export._unflatten_variables(swapped), images)
    assert_detections_close(got, want)
    original = live_detections(config, model, variables, images)
    assert np.abs(got["scores"] - original["scores"]).max() > 1e-4


def test_flip_export_matches_live_flip(hourglass, tmp_path):
    config, model, variables, _ = hourglass
    directory = export.export(config, variables, str(tmp_path), flip=True, top_k=20)
    det = export.load(directory)
    assert det.flip and det.metadata["outputs"]["scores"]["shape"] == ["b", 20]
    images = images_for(config, 2, seed=7)
    got = det(images)
    assert_detections_close(
        got, live_detections(config, model, variables, images, flip=True, top_k=20))
    plain = live_detections(config, model, variables, images, top_k=20)
    assert np.abs(got["scores"] - plain["scores"]).max() > 1e-5  # flip did something


def test_deformable_model_round_trip_for_two_platforms(tmp_path):
    """ResNet-18 with DCNv2 (plain JAX gathers) exports; the official export fails on DCN."""
    from configs import resnet18

    config = resnet18.get_config("smoke")
    model = assembly.assemble(config).model
    height, width = config.input.input_hw
    variables = jax.jit(model.init, static_argnames="train")(
        train_state.init_rng(config.seed), jnp.zeros((1, height, width, 3)), train=False)
    # The offsets start at zero (official init); random ones make the sampling bilinear.
    rng = np.random.default_rng(1)
    flat = export._flatten_variables(jax.device_get(variables))
    offset_kernels = [name for name in flat if "conv_offset_mask/kernel" in name]
    assert offset_kernels
    for name in offset_kernels:
        flat[name] = rng.normal(scale=0.3, size=flat[name].shape).astype(np.float32)
    variables = export._unflatten_variables(flat)

    directory = export.export(config, variables, str(tmp_path), platforms=("cpu", "cuda"))
    det = export.load(directory)
    assert det.platforms == ("cpu", "cuda")
    assert det.metadata["platforms"] == ["cpu", "cuda"]
    for batch in (1, 2):
        images = images_for(config, batch, seed=batch)
        assert_detections_close(det(images), live_detections(config, model, variables, images))


def test_loader_runs_without_model_code(hourglass_export, tmp_path):
    config = json.load(open(os.path.join(hourglass_export, export.METADATA_FILE)))
    height, width = config["input_hw"]
    images = np.random.default_rng(3).normal(size=(2, height, width, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "from centernet_jax import export\n"
        "det = export.load(sys.argv[1])\n"
        "np.savez(sys.argv[3], **det(np.load(sys.argv[2])))\n"
        "heavy = ('centernet_jax.models', 'centernet_jax.tasks', 'centernet_jax.inference',\n"
        "         'flax', 'optax', 'orbax', 'tensorflow', 'ml_collections')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-c", script, hourglass_export, str(tmp_path / "images.npy"),
         str(tmp_path / "out.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    with np.load(tmp_path / "out.npz") as got:
        want = export.load(hourglass_export)(images)
        assert_detections_close({name: got[name] for name in got.files}, want)


@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (64, 64, 3), (1, 64, 64, 1),
                                   (0, 64, 64, 3)])
def test_rejects_images_of_the_wrong_shape(hourglass_export, shape):
    det = export.load(hourglass_export)
    with pytest.raises(ValueError, match=r"float32 \[batch, 64, 64, 3\].*got shape "
                                         + re.escape(str(shape))):
        det(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_rejects_images_of_the_wrong_dtype(hourglass_export, dtype):
    det = export.load(hourglass_export)
    with pytest.raises(TypeError, match=rf"float32 \[batch, 64, 64, 3\].*got dtype "
                                        rf"{np.dtype(dtype).name}"):
        det(np.zeros((1, 64, 64, 3), dtype))


def test_missing_or_incomplete_directory(hourglass_export, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.load(str(tmp_path / "nowhere"))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(os.path.join(hourglass_export, export.METADATA_FILE), partial)
    with pytest.raises(FileNotFoundError, match=r"missing \['exported.bin', 'weights.npz'\]"):
        export.load(str(partial))


def test_weights_that_do_not_fit_are_named(hourglass_export, tmp_path):
    directory = str(tmp_path / "bad")
    shutil.copytree(hourglass_export, directory)
    path = os.path.join(directory, export.WEIGHTS_FILE)
    with np.load(path) as stored:
        weights = {name: stored[name] for name in stored.files}
    name = sorted(weights)[0]
    np.savez(path, **{**weights, name: np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match=f"{name} is float32 \\(2, 2\\)"):
        export.load(directory)
    del weights[name]
    np.savez(path, **weights)
    with pytest.raises(ValueError, match="1 tensors missing"):
        export.load(directory)


def test_platform_mismatch_is_reported(hourglass, tmp_path):
    config, _, variables, _ = hourglass
    current = jax.export.default_export_platform()
    other = "cuda" if current != "cuda" else "cpu"
    directory = export.export(config, variables, str(tmp_path), platforms=(other,))
    with pytest.raises(RuntimeError, match=rf"exported for platforms \('{other}',\).*"
                                           rf"backend is '{current}'"):
        export.load(directory)


@pytest.mark.slow  # two processes that import TensorFlow (runtime.prepare)
def test_command_line(hourglass, hourglass_export, tmp_path):
    config, _, _, workdir = hourglass
    output = str(tmp_path / "cli")
    command = [sys.executable, "-m", "centernet_jax.export",
               "--config=configs/hourglass.py:smoke", f"--workdir={workdir}",
               "--checkpoint=latest", f"--output={output}", "--top_k=10"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Exported" in result.stdout
    images = images_for(config, 2, seed=5)
    got = export.load(output)(images)
    full = export.load(hourglass_export)(images)
    assert_detections_close(got, {name: v[:, :10] for name, v in full.items()})

    result = subprocess.run(command[:-3] + ["--checkpoint=99", f"--output={output}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error: No checkpoint at step 99" in result.stderr
