"""Parameter counts of every official model, from `jax.eval_shape` alone."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from centernet_jax.models import detector
from centernet_jax.models.heads import HeadSpec
from centernet_jax.models.hourglass import HOURGLASS_52, HOURGLASS_104

CTDET = {"hm": HeadSpec(80, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}
MULTI_POSE = {"hm": HeadSpec(1, init="heatmap"), "wh": HeadSpec(2), "hps": HeadSpec(34),
              "reg": HeadSpec(2), "hm_hp": HeadSpec(17, init="heatmap"), "hp_offset": HeadSpec(2)}
DDD = {"hm": HeadSpec(3, init="heatmap"), "dep": HeadSpec(1), "rot": HeadSpec(8),
       "dim": HeadSpec(3), "wh": HeadSpec(2), "reg": HeadSpec(2)}
PASCAL = {"hm": HeadSpec(20, init="heatmap"), "wh": HeadSpec(2), "reg": HeadSpec(2)}
DLA_FC = 513_000  # DLA's ImageNet classifier: in the official count, never used, not ported


def _count(model_config, heads, size=128):
    model = detector.build_model(ml_collections.ConfigDict(model_config), heads)
    variables = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))


def _resnet(depth, deformable):
    return {"backbone": "resnet", "resnet": {"depth": depth, "deformable": deformable,
                                             "deconv_widths": (256, 128, 64) if deformable
                                             else (256, 256, 256)}}


@pytest.mark.parametrize("name,model_config,heads,official", [
    ("res_18", _resnet(18, False), CTDET, 15_820_372),
    ("res_101", _resnet(101, False), CTDET, 53_435_476),
    ("resdcn_18", _resnet(18, True), CTDET, 14_437_349),
    ("resdcn_101", _resnet(101, True), CTDET, 49_673_189),
    ("resdcn_18 pascal", _resnet(18, True), PASCAL, 14_437_349 - 3_900),
    ("dla_34", {"backbone": "dla"}, CTDET, 20_188_892 - DLA_FC),
    ("dla_34 multi_pose", {"backbone": "dla"}, MULTI_POSE, 20_625_346 - DLA_FC),
    ("dla_34 ddd", {"backbone": "dla"}, DDD, 20_615_323 - DLA_FC),
    ("dla_34 pascal", {"backbone": "dla"}, PASCAL,
     20_188_892 - DLA_FC - 15_420),
    ("hourglass", {"backbone": "hourglass", "hourglass": HOURGLASS_104}, CTDET, 191_284_008),
    ("hourglass multi_pose", {"backbone": "hourglass", "hourglass": HOURGLASS_104}, MULTI_POSE,
     194_811_124),
], ids=lambda v: v if isinstance(v, str) else "")
def test_parameter_count_equals_official(name, model_config, heads, official):
    assert _count(model_config, heads) == official


def test_hourglass_52_backbone_equals_the_official_centernet_52_backbone():
    # Official CenterNet-52 (Keypoint Triplets): backbone keys are pre / kps / cnvs.
    path = os.path.join(os.path.dirname(__file__), "fixtures", "parity", "triplets_hg52.keys.json")
    with open(path) as f:
        keys = json.load(f)
    official = sum(math.prod(shape) for name, shape, _ in keys
                   if name.split(".")[0] in ("pre", "kps", "cnvs")
                   and not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
    model = detector.build_model(
        ml_collections.ConfigDict({"backbone": "hourglass", "hourglass": HOURGLASS_52}), CTDET)
    variables = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 128, 128, 3)), train=False))
    backbone = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]["backbone"]))
    assert backbone == official
