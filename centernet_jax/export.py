r"""A trained detector as a self-contained, serialized StableHLO function.

  python -m centernet_jax.export --config=configs/hourglass.py:demo --workdir=runs/demo \
      --output=exports/demo [--checkpoint=best|latest|STEP|CONVERTED_DIR] [--flip] \
      [--top_k=100] [--platforms=cpu,cuda]

``export`` writes three files into a directory:

  exported.bin   ``jax.export`` serialization of the jitted function
                 ``detect(weights, images) -> {output name: array}``: the model's forward
                 pass (with the flip test when requested), the task's decode and its
                 ``export_outputs``, as StableHLO with a symbolic batch dimension ``b``.
  weights.npz    the model variables, one array per flax path
                 (``params/backbone/pre/conv/kernel``, ``batch_stats/...``), plain NumPy.
  metadata.json  what a caller needs to feed and read the function: task, input size, BGR
                 mean/std, down_ratio, top_k, flip, class count, output names, shapes and
                 units, the jax version and the platforms the function was lowered for.

The weights are an argument of the function, not constants folded into it: Hourglass-104's
191M parameters would otherwise make a ~0.8 GB StableHLO module that is slow to serialize,
deserialize and compile, and swapping weights (a fine-tuned checkpoint of the same model)
would need a new export. As an ``.npz`` they load with NumPy alone.

``load`` needs only jax and numpy (no flax, no model code): it deserializes the function,
reads the weights and returns an ``ExportedDetector``, ``det(images) -> dict of arrays``.

Inputs and outputs of the exported function, for images of the evaluation size H x W:
  images   float32 [b, H, W, 3], NHWC, BGR, normalised as (pixel / 255 - mean) / std.
  outputs  the task's (``metadata["outputs"]`` and ``metadata["output_units"]``), in pixels
           of the H x W input image: mapping them to the original picture is the inverse of
           however it was resized into H x W. For 2D detection:
             boxes    float32 [b, k, 4], (x1, y1, x2, y2);
             scores   float32 [b, k], best first; no threshold (entries past the last
                      peak score 0);
             classes  int32 [b, k], 0-based class index.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, Sequence

import jax
import numpy as np
from etils import epath

FUNCTION_FILE = "exported.bin"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"
FORMAT = "centernet_jax.export/1"
_SEPARATOR = "/"


def _flatten_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """{"params": {"a": {"kernel": x}}} -> {"params/a/kernel": x}."""
    flat = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                visit(f"{prefix}{_SEPARATOR}{key}" if prefix else str(key), child)
        else:
            flat[prefix] = node

    visit("", variables)
    return flat


def _unflatten_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``_flatten_variables``."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(_SEPARATOR)
        node = nested
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return nested


def export(config, variables: Mapping[str, Any], directory: str, *, flip: bool = False,
           top_k: int | None = None, platforms: Sequence[str] | None = None) -> str:
    """Exports the detector ``config`` describes, with ``variables``, into ``directory``.

    Args:
      config: the run's config (task, model, input normalisation, evaluation size); not
        changed.
      variables: ``{"params": ..., "batch_stats": ...}`` of the model, e.g.
        ``inference.load_variables(...).variables``.
      directory: created if needed (a bucket too); its export files are overwritten.
      flip: bake the flip test in (each image is run with its mirror image).
      top_k: detections per image; default ``config.eval.top_k``.
      platforms: lowering platforms ("cpu", "cuda", "rocm", "tpu"); default the current
        backend's. Several give one artifact that runs on each.

    Returns:
      ``directory``. See the module docstring for the files and the function's signature.
    """
    # Model code is imported here, not at module level: `load` must work without it.
    from centernet_jax import assembly, inference, paths  # pylint: disable=g-import-not-at-top

    parts = assembly.assemble(config)
    task = parts.task
    top_k = int(config.eval.top_k if top_k is None else top_k)
    down_ratio = int(config.input.down_ratio)
    height, width = inference.eval_input_hw(config)
    detect = inference.make_detect_fn(parts.model, task, top_k=top_k, flip=flip)

    def serving(weights: dict[str, jax.Array], images: jax.Array) -> dict[str, jax.Array]:
        return task.export_outputs(detect(_unflatten_variables(weights), images), down_ratio)

    weights = {path: np.asarray(jax.device_get(value))
               for path, value in _flatten_variables(variables).items()}
    weight_specs = {path: jax.ShapeDtypeStruct(value.shape, value.dtype)
                    for path, value in weights.items()}
    batch, = jax.export.symbolic_shape("b")
    image_spec = jax.ShapeDtypeStruct((batch, height, width, 3), np.float32)
    exported = jax.export.export(jax.jit(serving), platforms=platforms)(weight_specs,
                                                                        image_spec)

    target = paths.resolve(directory)
    target.mkdir(parents=True, exist_ok=True)
    (target / FUNCTION_FILE).write_bytes(exported.serialize())
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    (target / WEIGHTS_FILE).write_bytes(buffer.getvalue())
    output_avals = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    metadata = {
        "format": FORMAT,
        "task": task.name,
        "model": {"backbone": config.model.backbone, "variant": config.get("variant", ""),
                  "num_params": int(sum(np.size(w) for p, w in weights.items()
                                        if p.startswith("params" + _SEPARATOR)))},
        "input": {
            "name": "images", "shape": ["b", height, width, 3], "dtype": "float32",
            "layout": "NHWC", "channel_order": "BGR",
            "normalisation": "(pixel / 255 - mean) / std, per BGR channel",
            "mean": [float(m) for m in config.input.mean],
            "std": [float(s) for s in config.input.std],
        },
        "input_hw": [height, width],
        "down_ratio": down_ratio,
        "top_k": top_k,
        "flip": bool(flip),
        "num_classes": int(task.num_classes),
        "outputs": {
            name: {"shape": [_dim_to_json(d) for d in aval.shape], "dtype": str(aval.dtype)}
            for name, aval in output_avals.items()},
        "output_units": {name: task.export_units.get(name, "") for name in output_avals},
        "files": {"function": FUNCTION_FILE, "weights": WEIGHTS_FILE},
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
    }
    (target / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return directory


def export_checkpoint(config, output: str, *, workdir: str | None = None,
                      checkpoint: str = "best", flip: bool = False, top_k: int | None = None,
                      platforms: Sequence[str] | None = None) -> tuple[str, str]:
    """Loads a trained (``workdir`` + ``checkpoint``) or converted checkpoint and exports it
    into ``output``, as the command line does. Returns (``output``, where the variables
    came from)."""
    # pylint: disable=g-import-not-at-top
    from centernet_jax import assembly, config_checks, inference, runtime
    from centernet_jax.data import sources
    # pylint: enable=g-import-not-at-top

    config = config_checks.resolved_copy(config)
    config_checks.validate_config(config)
    runtime.prepare(config)
    sources.fill_dataset_facts_from_run(config, workdir)
    loaded = inference.load_variables(assembly.assemble(config), workdir=workdir,
                                      checkpoint=checkpoint)
    directory = export(config, loaded.variables, output, flip=flip, top_k=top_k,
                       platforms=platforms)
    return directory, loaded.source


def _dim_to_json(dim: Any) -> int | str:
    return dim if isinstance(dim, int) else str(dim)


class ExportedDetector:
    """A loaded export: ``det(images)`` -> the task's outputs as NumPy arrays (2D detection:
    {"boxes", "scores", "classes"}; ``metadata["outputs"]`` names them).

    Attributes:
      metadata: the export's ``metadata.json``.
      input_hw: (H, W) the images must have.
      mean, std: float32 [3] BGR normalisation (see ``normalize``).
      down_ratio, top_k, flip, num_classes, platforms: as exported.
      exported: the deserialized ``jax.export.Exported``.
    """

    def __init__(self, exported: jax.export.Exported, weights: dict[str, jax.Array],
                 metadata: dict[str, Any]):
        self.exported = exported
        self.metadata = metadata
        self.input_hw = tuple(metadata["input_hw"])
        self.mean = np.asarray(metadata["input"]["mean"], np.float32)
        self.std = np.asarray(metadata["input"]["std"], np.float32)
        self.down_ratio = metadata["down_ratio"]
        self.top_k = metadata["top_k"]
        self.flip = metadata["flip"]
        self.num_classes = metadata["num_classes"]
        self.platforms = tuple(exported.platforms)
        self._weights = weights
        self._call = jax.jit(exported.call)  # compiled once per batch size

    def normalize(self, images_bgr: np.ndarray) -> np.ndarray:
        """uint8 BGR images [..., H, W, 3] (already H x W) -> the float32 input."""
        images = np.asarray(images_bgr, np.float32) / np.float32(255.0)
        return (images - self.mean) / self.std

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        """The outputs for normalised float32 images [b, H, W, 3] (NumPy or jax)."""
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        height, width = self.input_hw
        expected = f"float32 [batch, {height}, {width}, 3] (NHWC, BGR, normalised)"
        if (len(images.shape) != 4 or tuple(images.shape[1:]) != (height, width, 3)
                or images.shape[0] < 1):
            raise ValueError(f"images must be {expected}; got shape {tuple(images.shape)}. "
                             "Resize or letterbox pictures to the export's input_hw first.")
        if np.dtype(images.dtype) != np.float32:
            hint = (" Normalise uint8 pictures with ExportedDetector.normalize."
                    if np.dtype(images.dtype) == np.uint8 else "")
            raise TypeError(f"images must be {expected}; got dtype {images.dtype}.{hint}")
        outputs = self._call(self._weights, images)
        return {name: np.asarray(value) for name, value in outputs.items()}

    def __repr__(self) -> str:
        height, width = self.input_hw
        return (f"ExportedDetector(input=[b, {height}, {width}, 3], top_k={self.top_k}, "
                f"flip={self.flip}, num_classes={self.num_classes}, "
                f"platforms={self.platforms})")


def load(directory: str) -> ExportedDetector:
    """Loads an export written by ``export``; needs jax and numpy only.

    Raises:
      FileNotFoundError: ``directory`` or one of its files is missing.
      RuntimeError: the function was not lowered for this process's JAX backend.
      ValueError: ``weights.npz`` does not fit the function (missing or extra tensors,
        wrong shapes or dtypes).
    """
    root = epath.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"Export directory {directory!r} does not exist.")
    files = {name: root / name for name in (FUNCTION_FILE, WEIGHTS_FILE, METADATA_FILE)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory!r} is not a complete export: missing {missing} "
            f"(found {sorted(p.name for p in root.iterdir())}); write it with "
            "centernet_jax.export.")
    metadata = json.loads(files[METADATA_FILE].read_text())
    exported = jax.export.deserialize(bytearray(files[FUNCTION_FILE].read_bytes()))

    backend = jax.export.default_export_platform()
    if backend not in exported.platforms:
        raise RuntimeError(
            f"{directory!r} was exported for platforms {tuple(exported.platforms)}, but this "
            f"process's JAX backend is {backend!r}: export again with platforms including "
            f"{backend!r}, or select a listed backend (e.g. JAX_PLATFORMS=cpu).")

    weights_spec, _ = jax.tree.unflatten(exported.in_tree, exported.in_avals)[0]
    weights_file = str(files[WEIGHTS_FILE])
    with np.load(io.BytesIO(files[WEIGHTS_FILE].read_bytes())) as stored:
        stored_names = set(stored.files)
        absent = sorted(set(weights_spec) - stored_names)
        extra = sorted(stored_names - set(weights_spec))
        if absent or extra:
            raise ValueError(
                f"{weights_file} does not fit the exported function: "
                f"{len(absent)} tensors missing (e.g. {absent[:3]}), "
                f"{len(extra)} unexpected (e.g. {extra[:3]}).")
        weights = {}
        for name, spec in weights_spec.items():
            value = stored[name]
            if value.shape != spec.shape or value.dtype != spec.dtype:
                raise ValueError(
                    f"{weights_file}: {name} is {value.dtype} {value.shape}; the "
                    f"exported function expects {spec.dtype} {spec.shape}.")
            weights[name] = jax.device_put(value)  # once, not on every call
    return ExportedDetector(exported, weights, metadata)


def main(argv: list[str]) -> None:
    # pylint: disable=g-import-not-at-top
    from absl import flags

    from centernet_jax import cli
    # pylint: enable=g-import-not-at-top

    config = cli.config_from_flags(argv)
    with cli.exit_on_user_error():
        directory, source = export_checkpoint(
            config, flags.FLAGS.output, workdir=flags.FLAGS.workdir,
            checkpoint=flags.FLAGS.checkpoint, flip=flags.FLAGS.flip,
            top_k=flags.FLAGS.top_k, platforms=flags.FLAGS.platforms or None)
    metadata = json.loads((epath.Path(directory) / METADATA_FILE).read_text())
    height, width = metadata["input_hw"]
    print(f"Exported {source} to {directory}: images [b, {height}, {width}, 3] -> "
          f"{', '.join(metadata['outputs'])} of the top {metadata['top_k']} "
          f"(flip={metadata['flip']}) on {', '.join(metadata['platforms'])}.")


def _define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top

    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    cli.define_config_flags(workdir_help="The training run's directory (unless --checkpoint "
                            "is a converted checkpoint directory).")
    cli.define_checkpoint_flag()
    flags.DEFINE_string("output", None, "Directory to write the export into.", required=True)
    flags.DEFINE_bool("flip", False, "Bake the flip test into the exported function.")
    flags.DEFINE_integer("top_k", None, "Detections per image (default: eval.top_k).")
    flags.DEFINE_list("platforms", None, "Lowering platforms, e.g. cpu,cuda (default: the "
                      "current JAX backend).")


if __name__ == "__main__":
    from centernet_jax import cli  # pylint: disable=g-import-not-at-top

    _define_flags()
    cli.run(main)
