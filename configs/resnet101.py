"""CenterNet 2D detection (ctdet) with a ResNet-101 backbone.

Usage:
  python -m centernet_jax.main --config=configs/resnet101.py --workdir=runs/resdcn101
  python -m centernet_jax.main --config=configs/resnet101.py:smoke --workdir=runs/smoke

Variants:
  coco        (default) ResNet-101 + DCNv2 upsampling (`resdcn_101`), 512x512, COCO 2017,
              the official ctdet_coco_resdcn101 recipe: batch 96, Adam lr 3.75e-4,
              140 epochs, lr x0.1 after epochs 90 and 120, heads 64 wide. Officially the
              backbone starts from ImageNet weights; here it starts from scratch unless
              they are loaded.
  coco_nodcn  the same recipe with the msra "SimpleBaseline" neck (`res_101`).
  smoke       a tiny Bottleneck ResNet-101 (full depth, 4-wide stem) and a few steps.
"""

from configs import common
from configs import resnet18


def get_config(arg: str | None = None):
    variant = arg or "coco"
    if variant in ("coco", "coco_nodcn"):
        config = resnet18.resnet_base_config()
        common.coco_recipe(config, **resnet18.RESNET_COCO_SCHEDULE, batch_size=96,
                           learning_rate=3.75e-4)
        config.model.resnet = resnet18.resnet(depth=101, deformable=variant == "coco")
    elif variant == "smoke":
        # The ResNet-18 smoke run with every layer of ResNet-101 at a quarter-size width.
        config = resnet18.get_config("smoke")
        config.model.resnet = resnet18.resnet(depth=101, deformable=True, base_width=4,
                                              deconv_widths=(8, 8, 8))
    else:
        raise ValueError(
            f"Unknown resnet101 config variant {variant!r}; use one of: coco, coco_nodcn, smoke.")
    config.variant = variant
    return config
