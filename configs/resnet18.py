"""CenterNet 2D detection (ctdet) with a ResNet-18 backbone.

Usage:
  python -m centernet_jax.main --config=configs/resnet18.py --workdir=runs/resdcn18
  python -m centernet_jax.main --config=configs/resnet18.py:demo --workdir=runs/r18demo
  python -m centernet_jax.main --config=configs/resnet18.py:smoke --workdir=runs/smoke

Variants:
  coco        (default) ResNet-18 + DCNv2 upsampling (`resdcn_18`), 512x512, COCO 2017, the
              official ctdet_coco_resdcn18 recipe: batch 114, Adam lr 5e-4, 140 epochs,
              lr x0.1 after epochs 90 and 120, heads 64 wide. Officially the backbone starts
              from ImageNet weights; here it starts from scratch unless they are loaded.
  coco_nodcn  the same recipe with the msra "SimpleBaseline" neck (`res_18`: three 256-wide
              transposed convs, no DCN).
  custom      the coco recipe on a COCO-format folder (--config.dataset.annotations=FILE
              --config.dataset.images=DIR; classes from the json).
  pascal      the official ctdet_pascal_resdcn18 recipe at 384 on VOC 07+12.
  demo        a narrowed ResNet-18 with DCN (the official structure at a quarter of the
              width) on the embedded shapes dataset; trains and evaluates on a 2-core CPU
              in minutes.
  demo_nodcn  the demo with the msra neck; from scratch at 96 px it learns faster than
              the DCN neck (see the demo notes below).
  smoke       a tiny model and a few steps; used by the tests.
"""

import ml_collections

from configs import common


def resnet(*, depth: int, deformable: bool, base_width: int = 64,
           deconv_widths=None) -> ml_collections.ConfigDict:
    """`model.resnet`; deconv_widths None takes the official widths of the neck."""
    if deconv_widths is None:
        deconv_widths = (256, 128, 64) if deformable else (256, 256, 256)
    return ml_collections.ConfigDict(dict(
        depth=depth, deformable=deformable, base_width=base_width,
        deconv_widths=tuple(deconv_widths)))


def resnet_base_config() -> ml_collections.ConfigDict:
    config = common.base_config()
    config.model.backbone = "resnet"
    del config.model["hourglass"]  # not read by the ResNet; keeps config.json unambiguous
    config.model.head_conv = 64  # the official width for every ResNet
    return config


# The official 140-epoch ResNet schedule (the official experiment scripts).
RESNET_COCO_SCHEDULE = dict(num_epochs=140, lr_drop_epochs=(90, 120))


def get_config(arg: str | None = None):
    variant = arg or "coco"
    config = resnet_base_config()

    if variant in ("coco", "coco_nodcn", "custom"):
        # Official global batch 114; on a data-parallel mesh it must divide by the device
        # count (114 = 2 * 3 * 19), so e.g. --config.train.batch_size=112 on 8 devices.
        common.coco_recipe(config, **RESNET_COCO_SCHEDULE, batch_size=114, learning_rate=5e-4)
        if variant == "custom":  # any COCO-format folder: see common.coco_json_dataset
            common.custom_recipe(config)
        config.model.resnet = resnet(depth=18, deformable=variant != "coco_nodcn")
    elif variant == "pascal":
        common.pascal_recipe(config, input_size=384)
        config.model.resnet = resnet(depth=18, deformable=True)
    elif variant in ("demo", "demo_nodcn"):
        # Unlike the official recipe there are no ImageNet weights, and at 96 px layer4 is
        # only 3x3: the neck must recover every position from it, so ResNets learn this
        # task far slower than the hourglass (whose skip connections keep the 24x24
        # detail). DCN offsets on such small maps are unstable at higher learning rates.
        common.shapes_demo(config, num_train=44800, input_hw=(96, 96),
                           learning_rate=5e-4,  # AP: DCN 0.04 (1e-3: 0.02); msra 0.08 (2e-3: 0.07)
                           eval_input_hw=(128, 128))
        config.model.resnet = resnet(depth=18, deformable=variant == "demo", base_width=16,
                                     deconv_widths=(64, 32, 32))
        config.model.head_conv = 32
    elif variant == "smoke":
        common.shapes_smoke(config)
        config.model.resnet = resnet(depth=18, deformable=True, base_width=4,
                                     deconv_widths=(8, 8, 8))
        config.model.head_conv = 8
    else:
        raise ValueError(
            f"Unknown resnet18 config variant {variant!r}; use one of: coco, coco_nodcn, custom, "
            "pascal, demo, demo_nodcn, smoke.")
    config.variant = variant
    return config
