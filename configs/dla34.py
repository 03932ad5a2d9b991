"""CenterNet 2D detection (ctdet) with the DLA-34 backbone and its deformable neck.

Usage:
  python -m centernet_jax.main --config=configs/dla34.py --workdir=runs/dla
  python -m centernet_jax.main --config=configs/dla34.py:demo --workdir=runs/dlademo
  python -m centernet_jax.main --config=configs/dla34.py:smoke --workdir=runs/smoke

Variants:
  coco   (default) DLA-34 with DCNv2, 512x512, COCO 2017, the official ctdet_coco_dla_1x
         recipe: batch 128, Adam lr 5e-4, 140 epochs, lr x0.1 after epochs 90 and 120,
         heads 256 wide. Officially the backbone starts from ImageNet DLA-34 weights:
         convert them with `python -m centernet_jax.convert --imagenet` and pass
         `--config.init.checkpoint=...`.
  custom the coco recipe on any COCO-format folder: --config.dataset.annotations=FILE.json
         --config.dataset.images=DIR (and val_annotations / val_images); the classes come
         from the json.
  pascal / pascal_512
         the official ctdet_pascal_dla recipe on VOC 07+12 (384 or 512 input, batch 32,
         lr 1.25e-4, 70 epochs, drops at 45 and 60).
  demo   a narrow DLA (same structure, DCN included) on the embedded shapes dataset;
         trains and evaluates on a 2-core CPU in minutes.
  smoke  a tiny model and a few steps; used by the tests.

Input sizes (training and evaluation) must be multiples of 32.
"""

import ml_collections

from configs import common


def dla_34() -> ml_collections.ConfigDict:
    return small_dla(levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512))


def small_dla(*, levels, channels, deformable=True) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        levels=tuple(levels), channels=tuple(channels), deformable=deformable))


def get_config(arg: str | None = None):
    variant = arg or "coco"
    config = common.base_config()
    config.model.backbone = "dla"

    if variant in ("coco", "custom"):
        common.coco_recipe(config, batch_size=128, learning_rate=5e-4, num_epochs=140,
                           lr_drop_epochs=(90, 120), eval_every_steps=10000)
        if variant == "custom":
            common.custom_recipe(config)
        config.model.dla = dla_34()
        config.model.head_conv = 256
    elif variant in ("pascal", "pascal_512"):
        common.pascal_recipe(config, input_size=512 if variant == "pascal_512" else 384)
        config.model.dla = dla_34()
        config.model.head_conv = 256
    elif variant == "demo":
        # The hourglass demo's recipe on smaller images: the stride-1 DLA stem and the
        # deformable convolutions make a DLA step ~2.5x as costly as a hourglass step of
        # the same size on CPU.
        common.shapes_demo(config, num_train=24000, input_hw=(64, 64),
                           learning_rate=1e-3,  # tuned: 1e-3 best, 2e-3 worse, 4e-3 stalls
                           eval_input_hw=(96, 96), host_cpu_devices=0)
        config.dataset.image_size = (64, 96)
        config.dataset.objects_per_image = (1, 6)
        config.model.dla = small_dla(levels=(1, 1, 1, 2, 2, 1),
                                     channels=(8, 16, 24, 32, 48, 64))
        config.model.head_conv = 24
    elif variant == "smoke":
        common.shapes_smoke(config)
        config.model.dla = small_dla(levels=(1, 1, 1, 2, 2, 1), channels=(4, 8, 8, 8, 16, 16))
        config.model.head_conv = 8
    else:
        raise ValueError(f"Unknown dla34 config variant {variant!r}; use one of: coco, custom, "
                         "pascal, pascal_512, demo, smoke.")
    config.variant = variant
    return config
