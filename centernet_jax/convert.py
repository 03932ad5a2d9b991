"""Official PyTorch CenterNet checkpoints -> flax variables -> an Orbax checkpoint.

  python -m centernet_jax.convert --input=ctdet_coco_dla_2x.pth --output=pretrained/dla
  python -m centernet_jax.convert --input=dla34-ba72cf86.pth --output=pretrained/dla_in --imagenet
  python -m centernet_jax.convert --input=CenterNet-52_480000.pkl --output=pretrained/hg52 \
      --backbone_only

and `--config.init.checkpoint=pretrained/dla` starts training (or evaluation) from it. In a
notebook: `convert.convert(input_path, output_dir)`; `convert.load(output_dir)` gives the
variables back.

What is supported: every xingyizhou/CenterNet model (`res_*`, `resdcn_*`, `dla_34`,
`hourglass`; any heads: ctdet, multi_pose, ddd, ...), the hourglass backbone of
Duankaiwen/CenterNet's CenterNet-52/104 (`backbone_only`: the triplet heads are not part of
this model), and ImageNet backbones for from-scratch training (torchvision ResNets, DLA-34).
The architecture (backbone, its widths and depths, heads and head width) is inferred from
the state dict's key names and shapes and checked against the flax model built from it:
missing, unexpected or mis-shaped keys are a `ConversionError` listing them.

Key mapping (one mechanical rule; backbones name their flax modules after the official
modules, see `models/*.py`): `.<i>` after a module name becomes `_<i>`, other dots become
path separators; leaf `weight` of a 4-D tensor -> `kernel` (transposed (2, 3, 1, 0): OIHW ->
HWIO for convolutions, (Cin, Cout/g, k, k) -> (k, k, Cout/g, Cin) for transposed ones),
of a 1-D tensor (BatchNorm gamma) -> `scale`; `bias` -> `bias`; `running_mean`/`running_var`
-> `mean`/`var` in `batch_stats`; `num_batches_tracked` is ignored. Backbone keys go under
`backbone/`; heads go to `heads_<stack>/<head>/{conv3x3,conv1x1}`:

  layer1.0.conv1.weight                 -> params/backbone/layer1_0/conv1/kernel
  dla_up.ida_0.proj_1.actf.0.running_var -> batch_stats/backbone/dla_up/ida_0/proj_1/actf_0/var
  hm.0.weight / hm.2.bias               -> params/heads_0/hm/conv3x3/kernel / conv1x1/bias
  wh.1.0.conv.weight / wh.1.1.bias      -> params/heads_1/wh/conv3x3/kernel / conv1x1/bias
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from flax import traverse_util

from centernet_jax import paths, torch_checkpoint
from centernet_jax.models import detector
from centernet_jax.models.heads import HeadSpec

Array = np.ndarray
FlatTree = dict[tuple[str, ...], Any]  # (collection, *path) -> array or shape

# Top-level official module names that belong to the backbone, per architecture.
BACKBONE_ROOTS = {
    "resnet": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "deconv_layers"),
    "dla": ("base", "dla_up", "ida_up"),
    "hourglass": ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_"),
}
# ImageNet classifiers the detectors never use: DLA's `base.fc` (a 1x1 conv the official
# ImageNet loader attaches) and torchvision's `fc`.
IGNORED_KEYS = re.compile(r"^(base\.)?fc\.(weight|bias)$")
# Heads of Duankaiwen/CenterNet (Keypoint Triplets) and CornerNet; not part of this model.
TRIPLET_ROOTS = re.compile(r"^(tl|br|ct)_(cnvs|heats|tags|regrs|modules)$")

_FLAT_HEAD_KEY = re.compile(r"^(?P<head>\w+?)\.(?P<layer>0|2)\.(?P<leaf>weight|bias)$")
_SINGLE_CONV_HEAD_KEY = re.compile(r"^(?P<head>\w+?)\.(?P<leaf>weight|bias)$")
_STACKED_HEAD_KEY = re.compile(
    r"^(?P<head>\w+?)\.(?P<stack>\d+)\.(?P<layer>0\.conv|1)\.(?P<leaf>weight|bias)$")
_BN_STATS = {"running_mean": "mean", "running_var": "var"}
CONVERSION_FILE = "conversion.json"
VARIABLES_DIR = "variables"


class ConversionError(ValueError):
    """The checkpoint does not match a supported model; the message lists what differs."""


# ----------------------------------------------------------------------------- key mapping


def _architecture_of_root(root: str) -> str | None:
    for arch, roots in BACKBONE_ROOTS.items():
        if root in roots:
            return arch
    return None


def official_key_to_flax(key: str, ndim: int) -> tuple[str, tuple[str, ...]] | None:
    """Maps one official state-dict key to (collection, flax path); None if ignored.

    `ndim` is the tensor's rank (4-D `weight` -> `kernel`, 1-D -> BatchNorm `scale`).
    Raises ConversionError for keys that are neither a backbone key nor a head key.
    """
    *parents, leaf = key.split(".")
    if leaf == "num_batches_tracked":
        return None
    if parents and _architecture_of_root(parents[0]) is not None:
        path = re.sub(r"\.(\d+)", r"_\1", ".".join(parents)).split(".")
        if leaf in _BN_STATS:
            return "batch_stats", ("backbone", *path, _BN_STATS[leaf])
        if leaf == "weight":
            return "params", ("backbone", *path, "kernel" if ndim >= 2 else "scale")
        if leaf == "bias":
            return "params", ("backbone", *path, "bias")
        raise ConversionError(f"unrecognised backbone tensor {key!r}")
    name = "kernel" if leaf == "weight" else "bias"
    if match := _STACKED_HEAD_KEY.match(key):
        conv = "conv3x3" if match["layer"] == "0.conv" else "conv1x1"
        return "params", (f"heads_{match['stack']}", match["head"], conv, name)
    if match := _FLAT_HEAD_KEY.match(key):
        conv = "conv3x3" if match["layer"] == "0" else "conv1x1"
        return "params", ("heads_0", match["head"], conv, name)
    if match := _SINGLE_CONV_HEAD_KEY.match(key):  # head_conv 0: a lone 1x1 conv
        return "params", ("heads_0", match["head"], "conv1x1", name)
    raise ConversionError(f"{key!r} is neither a CenterNet backbone nor a head tensor")


def torch_to_flax_array(value: np.ndarray) -> np.ndarray:
    """OIHW (or transposed-conv (Cin, Cout/g, k, k)) -> HWIO; other ranks unchanged."""
    value = np.asarray(value)
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    if np.issubdtype(value.dtype, np.floating):
        value = value.astype(np.float32)
    return np.ascontiguousarray(value)


# ----------------------------------------------------------------------------- architecture


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a state dict holds: a model config for `detector.build_model` plus its heads."""

    model_config: dict[str, Any]  # backbone name, backbone sub-config, head_conv
    heads: dict[str, int]  # {} for backbone-only checkpoints
    kind: str  # "full" (backbone + heads) or "backbone"

    @property
    def backbone(self) -> str:
        return self.model_config["backbone"]

    def config_dict(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.model_config)


def _shape(state: Mapping[str, Array], key: str) -> tuple[int, ...]:
    return tuple(np.shape(state[key]))


def _indices(state: Mapping[str, Array], pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def _hourglass_config(state: Mapping[str, Array]) -> dict[str, Any]:
    num_stacks = len(_indices(state, r"^kps\.(\d+)\."))
    dims, modules = [], []
    prefix = "kps.0."
    while f"{prefix}up1.0.conv1.weight" in state:
        dims.append(_shape(state, f"{prefix}up1.0.conv1.weight")[0])
        modules.append(len(_indices(state, re.escape(prefix) + r"up1\.(\d+)\.conv1\.weight$")))
        if f"{prefix}low2.up1.0.conv1.weight" not in state:
            # Innermost level: low2 is a chain of residuals at the deepest width.
            dims.append(_shape(state, f"{prefix}low2.0.conv1.weight")[0])
            modules.append(len(_indices(state, re.escape(prefix) + r"low2\.(\d+)\.conv1\.weight$")))
            break
        prefix += "low2."
    if not dims:
        raise ConversionError("hourglass checkpoint without kps.0.up1.0.conv1.weight")
    return dict(num_stacks=num_stacks, depth=len(dims) - 1, dims=tuple(dims),
                modules=tuple(modules), pre_width=_shape(state, "pre.0.conv.weight")[0],
                cnv_dim=_shape(state, "cnvs.0.conv.weight")[0])


# torchvision block counts per depth; Bottleneck blocks have a conv3.
_RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34,
                  ("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
                  ("bottleneck", (3, 8, 36, 3)): 152}


def _resnet_config(state: Mapping[str, Array]) -> dict[str, Any]:
    blocks = tuple(len(_indices(state, rf"^layer{i}\.(\d+)\.conv1\.weight$")) for i in range(1, 5))
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    if (block, blocks) not in _RESNET_DEPTHS:
        raise ConversionError(f"unsupported ResNet: {block} blocks {blocks}")
    config = dict(depth=_RESNET_DEPTHS[block, blocks], base_width=_shape(state, "conv1.weight")[0])
    deconv = [int(i) for i in _indices(state, r"^deconv_layers\.(\d+)\.weight$")]
    if deconv:
        config["deformable"] = "deconv_layers.0.conv_offset_mask.weight" in state
        # Up-sampling layers are every third module (conv [/ DCN], BN, ReLU), or the DCN and
        # deconv of each stage; their output widths are the BN widths after them.
        bn = _indices(state, r"^deconv_layers\.(\d+)\.running_mean$")
        widths = [_shape(state, f"deconv_layers.{i}.running_mean")[0] for i in bn]
        config["deconv_widths"] = tuple(widths[1::2] if config["deformable"] else widths)
    return config


def _dla_config(state: Mapping[str, Array]) -> dict[str, Any]:
    # level0/1 are plain conv stacks (BN in between); level2-5 are trees whose nesting
    # depth (tree1.tree1...) is the number of levels. Widths: the first conv of each level.
    channels = [_shape(state, "base.base_layer.0.weight")[0]]
    levels = []
    for level in range(6):
        prefix = f"base.level{level}."
        first = next((k for k in state if k.startswith(prefix) and k.endswith("weight")
                      and np.ndim(state[k]) == 4), None)
        if first is None:
            raise ConversionError(f"DLA checkpoint without {prefix}* convolutions")
        channels.append(_shape(state, first)[0])
        if level < 2:
            levels.append(len(_indices(state, re.escape(prefix) + r"(\d+)\.weight$")) // 2)
        else:
            levels.append(max(k.split(".").count("tree1") for k in state if k.startswith(prefix)))
    return dict(levels=tuple(levels), channels=tuple(channels[1:]))


def infer_architecture(state: Mapping[str, Array], *, backbone_only: bool = False) -> Architecture:
    """Backbone, its config, heads and head width from key names and shapes."""
    roots = {key.split(".")[0] for key in state}
    arches = {a for a in (_architecture_of_root(r) for r in roots) if a is not None}
    if len(arches) != 1:
        raise ConversionError(
            "cannot tell the backbone: expected keys of exactly one of "
            f"{ {a: r[:3] for a, r in BACKBONE_ROOTS.items()} }, found top-level modules "
            f"{sorted(roots)[:20]}")
    arch = arches.pop()
    if arch == "hourglass":
        model_config = {"backbone": "hourglass", "hourglass": _hourglass_config(state)}
    elif arch == "resnet":
        model_config = {"backbone": "resnet", "resnet": _resnet_config(state)}
    else:
        model_config = {"backbone": "dla", "dla": _dla_config(state)}

    heads: dict[str, int] = {}
    if not backbone_only:
        head_conv = None
        for key in state:
            match = (_STACKED_HEAD_KEY.match(key) or _FLAT_HEAD_KEY.match(key)
                     or _SINGLE_CONV_HEAD_KEY.match(key))
            if match is None or _architecture_of_root(key.split(".")[0]) is not None:
                continue
            if IGNORED_KEYS.match(key) or match["leaf"] != "weight":
                continue
            shape = _shape(state, key)
            layer = match.groupdict().get("layer")
            if layer in ("0", "0.conv"):
                head_conv = shape[0]
            elif match.groupdict().get("stack", "0") == "0":
                heads[match["head"]] = shape[0]
        if heads:
            model_config["head_conv"] = 0 if head_conv is None else int(head_conv)
    return Architecture(model_config=model_config, heads=heads,
                        kind="full" if heads else "backbone")


# ----------------------------------------------------------------------------- conversion


@dataclasses.dataclass
class Converted:
    """Flax variables ({'params', 'batch_stats'} of numpy arrays) and what was done."""

    variables: dict[str, Any]
    architecture: Architecture
    dropped: list[str]  # official keys deliberately left out (unused classifiers, triplet heads)

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(self.variables["params"]))


def _flatten(variables: Mapping[str, Any]) -> FlatTree:
    flat = {}
    for collection, tree in variables.items():
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            flat[(collection, *path)] = leaf
    return flat


def _join(path: tuple[str, ...]) -> str:
    return "/".join(path)


def abstract_variables(architecture: Architecture, heads: Mapping[str, int] | None = None
                       ) -> FlatTree:
    """(collection, *path) -> shape of the flax model the architecture describes."""
    heads = heads or architecture.heads
    # Shapes only: the heads' initialisation does not matter; a backbone-only checkpoint
    # gets one placeholder head, dropped below.
    specs = {name: HeadSpec(int(channels)) for name, channels in (heads or {"_": 1}).items()}
    model = detector.build_model(architecture.config_dict(), specs)
    size = _probe_input_size(architecture)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, size, size, 3)), train=False))
    flat = {k: tuple(v.shape) for k, v in _flatten(variables).items()}
    if not heads:
        flat = {k: v for k, v in flat.items() if k[1] == "backbone"}
    return flat


def _probe_input_size(architecture: Architecture) -> int:
    if architecture.backbone == "hourglass":
        return 4 * 2 ** int(architecture.model_config["hourglass"]["depth"])
    return 64


def _format_mismatch(missing, unexpected, misshaped, limit=20) -> str:
    lines = []
    for title, items in (("missing from the checkpoint", missing),
                         ("not in the model", unexpected), ("shape differs", misshaped)):
        if items:
            lines.append(f"{len(items)} {title}:")
            lines += [f"  {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def convert_state_dict(state: Mapping[str, Array], *, imagenet: bool = False,
                       backbone_only: bool = False) -> Converted:
    """Official state dict (numpy arrays, unprefixed keys) -> checked flax variables.

    imagenet: the state dict is an ImageNet classifier (torchvision ResNet, DLA-34): its
      classifier is dropped and the rest becomes a backbone-only checkpoint (the DLA keys
      gain the `base.` prefix the detector nests them under).
    backbone_only: keep only the backbone; heads (and Keypoint-Triplets modules) are
      reported as dropped.
    """
    state = dict(state)
    dropped = sorted(k for k in state if IGNORED_KEYS.match(k))
    for key in dropped:
        del state[key]
    if imagenet:
        backbone_only = True
        if any(k.startswith("base_layer.") for k in state):  # DLA ImageNet keys lack `base.`
            state = {f"base.{k}": v for k, v in state.items()}
    if backbone_only:
        heads = [k for k in state if _architecture_of_root(k.split(".")[0]) is None]
        dropped += heads
        state = {k: v for k, v in state.items() if k not in set(heads)}
    else:
        triplets = [k for k in state if TRIPLET_ROOTS.match(k.split(".")[0])]
        if triplets:
            raise ConversionError(
                f"{len(triplets)} keys ({triplets[0]}, ...) belong to Keypoint-Triplets / "
                "CornerNet heads, which this model does not have; convert the hourglass "
                "backbone alone with backbone_only=True (--backbone_only).")
    if not state:
        raise ConversionError("no backbone tensors left to convert")

    architecture = infer_architecture(state, backbone_only=backbone_only)
    expected = abstract_variables(architecture)
    if imagenet:
        # An ImageNet classifier has the encoder only; the detector's neck stays fresh.
        present = {path[1] for k, v in state.items()
                   if (target := official_key_to_flax(k, np.ndim(v))) for path in [target[1]]}
        expected = {k: v for k, v in expected.items() if k[2] in present}
    converted: FlatTree = {}
    sources: dict[tuple[str, ...], str] = {}
    unexpected, misshaped = [], []
    for key, value in state.items():
        target = official_key_to_flax(key, np.ndim(value))
        if target is None:
            continue
        collection, path = target
        flat_key = (collection, *path)
        array = torch_to_flax_array(value)
        if flat_key not in expected:
            unexpected.append(f"{key} -> {collection}/{_join(path)}")
        elif tuple(array.shape) != expected[flat_key]:
            converted[flat_key] = None  # present, so not also "missing"
            misshaped.append(f"{key}: checkpoint {tuple(np.shape(value))} -> {array.shape}, "
                             f"model {expected[flat_key]}")
        else:
            converted[flat_key] = array
            sources[flat_key] = key
    missing = [f"{_join(k)} {shape}" for k, shape in expected.items() if k not in converted]
    if missing or unexpected or misshaped:
        raise ConversionError(
            f"the checkpoint does not match the inferred {architecture.backbone} model "
            f"{architecture.model_config}, heads {architecture.heads}:\n"
            + _format_mismatch(missing, unexpected, misshaped))
    variables: dict[str, Any] = {}
    for (collection, *path), value in converted.items():
        variables.setdefault(collection, {})[tuple(path)] = value
    variables = {c: traverse_util.unflatten_dict(t) for c, t in variables.items()}
    variables.setdefault("batch_stats", {})
    return Converted(variables=variables, architecture=architecture, dropped=dropped)


# ----------------------------------------------------------------------------- files


def save(directory: str, converted: Converted, source: dict[str, Any] | None = None) -> str:
    """Writes `directory/variables` (Orbax) and `directory/conversion.json`; returns the path."""
    import orbax.checkpoint as ocp

    directory = paths.resolve(directory)  # local, or a bucket (gs://...)
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, converted.variables, force=True)
    metadata = {
        "format": "centernet_jax converted checkpoint v1",
        "kind": converted.architecture.kind,
        "model": converted.architecture.model_config,
        "heads": converted.architecture.heads,
        "num_params": converted.num_params,
        "dropped_keys": converted.dropped,
        "source": source or {},
    }
    (directory / CONVERSION_FILE).write_text(json.dumps(metadata, indent=2, default=list))
    return str(directory)


def load(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables as numpy arrays, metadata) of a directory written by `save`."""
    import orbax.checkpoint as ocp

    directory = paths.resolve(directory)
    meta_path = directory / CONVERSION_FILE
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a converted checkpoint (no {CONVERSION_FILE}); create one with "
            "`python -m centernet_jax.convert --input=MODEL.pth --output=DIR`")
    metadata = json.loads(meta_path.read_text())
    path = directory / VARIABLES_DIR
    with ocp.StandardCheckpointer() as checkpointer:
        abstract = checkpointer.metadata(path).item_metadata.tree
        target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), abstract)
        variables = checkpointer.restore(path, target)
    variables = jax.tree.map(np.asarray, variables)
    return variables, metadata


def convert(input_path: str, output_dir: str | None = None, *, imagenet: bool = False,
            backbone_only: bool = False, use_torch: bool | None = None) -> Converted:
    """Reads an official checkpoint safely, converts and checks it, optionally saves it."""
    digest = hashlib.sha256(epath.Path(input_path).read_bytes()).hexdigest()
    state = torch_checkpoint.load_state_dict(input_path, use_torch=use_torch)
    converted = convert_state_dict(state, imagenet=imagenet, backbone_only=backbone_only)
    if output_dir is not None:
        save(output_dir, converted, source={"file": os.path.basename(input_path), "sha256": digest,
                                            "imagenet": imagenet, "backbone_only": backbone_only})
    return converted


# ----------------------------------------------------------------------------- initialisation


def init_from_pretrained(params: Any, batch_stats: Any, directory: str,
                         exclude: tuple[str, ...] = ()) -> tuple[Any, Any, dict[str, int]]:
    """Overwrites freshly initialised `params`/`batch_stats` with a converted checkpoint.

    Every checkpoint tensor must exist in the model with the same shape (else a
    ConversionError listing the differences); flax paths matching one of the `exclude`
    regexes (e.g. `heads_\\d+/hm/conv1x1` for another number of classes) keep their fresh
    init. A "full" checkpoint must cover the whole model; a "backbone" one (ImageNet, or
    backbone_only) leaves the neck and heads at their fresh init, as the official recipes
    start. Arrays keep the shardings of `params`/`batch_stats`.

    Returns (params, batch_stats, counts) with counts of loaded / fresh tensors.
    """
    variables, metadata = load(directory)
    model = _flatten({"params": params, "batch_stats": batch_stats})
    loaded = _flatten(variables)
    patterns = [re.compile(p) for p in exclude]
    excluded = {k for k in set(model) | set(loaded) if any(p.search(_join(k)) for p in patterns)}
    unexpected = sorted(_join(k) for k in loaded if k not in model and k not in excluded)
    misshaped = sorted(f"{_join(k)}: checkpoint {loaded[k].shape}, model {model[k].shape}"
                       for k in loaded if k in model and k not in excluded
                       and tuple(loaded[k].shape) != tuple(model[k].shape))
    fresh = [k for k in model if k not in loaded or k in excluded]
    missing = []
    if metadata.get("kind") == "full":
        missing = sorted(_join(k) for k in fresh if k not in excluded)
    if unexpected or misshaped or missing:
        raise ConversionError(
            f"{directory} ({metadata.get('model')}, heads {metadata.get('heads')}) does not fit "
            "this model; fix model.* in the config, or list paths to keep at their fresh init "
            "in init.exclude:\n" + _format_mismatch(missing, unexpected, misshaped))
    merged = dict(model)
    for key in model:
        if key not in fresh:
            value = loaded[key].astype(model[key].dtype)
            merged[key] = jax.device_put(value, getattr(model[key], "sharding", None))
    out: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for (collection, *path), value in merged.items():
        out[collection][tuple(path)] = value
    counts = {"loaded": len(model) - len(fresh), "fresh": len(fresh)}
    if fresh:
        roots = sorted({_join(k[:3]) for k in fresh})
        logging.info("Left at fresh init (%d tensors): %s", len(fresh), ", ".join(roots[:12]))
    return (traverse_util.unflatten_dict(out["params"]),
            traverse_util.unflatten_dict(out["batch_stats"]), counts)


# ----------------------------------------------------------------------------- command line


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module (train does) adds no flags.
    flags.DEFINE_string("input", None, "Official checkpoint: .pth / .pkl (torch.save).")
    flags.DEFINE_string("output", None, "Directory for the converted Orbax checkpoint.")
    flags.DEFINE_bool("imagenet", False,
                      "The input is an ImageNet classifier (torchvision ResNet, DLA-34): keep "
                      "its backbone for from-scratch detector training.")
    flags.DEFINE_bool("backbone_only", False,
                      "Keep only the backbone (e.g. the hourglass of the Keypoint-Triplets "
                      "CenterNet-52/104 checkpoints).")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # the summary below says what happened
    args = flags.FLAGS
    if not args.input or not args.output:
        raise app.UsageError("--input and --output are required")
    try:
        converted = convert(args.input, args.output, imagenet=args.imagenet,
                            backbone_only=args.backbone_only)
    except (ConversionError, torch_checkpoint.CheckpointError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    arch = converted.architecture
    print(f"{arch.kind} checkpoint: {arch.model_config}")
    if arch.heads:
        print(f"heads: {arch.heads}")
    print(f"parameters: {converted.num_params}")
    if converted.dropped:
        print(f"left out ({len(converted.dropped)} keys): {', '.join(converted.dropped[:8])}"
              + (" ..." if len(converted.dropped) > 8 else ""))
    print(f"wrote {paths.resolve(args.output)}  (train from it with "
          f"--config.init.checkpoint={args.output})")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
