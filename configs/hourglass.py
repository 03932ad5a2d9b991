"""CenterNet 2D detection (ctdet) with a stacked Hourglass backbone.

Usage:
  python -m centernet_jax.main --config=configs/hourglass.py --workdir=runs/hg
  python -m centernet_jax.main --config=configs/hourglass.py:demo --workdir=runs/demo
  python -m centernet_jax.main --config=configs/hourglass.py:smoke --workdir=runs/smoke \
      --config.train.batch_size=4

Variants:
  coco   (default) Hourglass-104, 512x512, COCO 2017, the official ctdet_coco_hg recipe:
         batch 24, Adam lr 2.5e-4, 50 epochs, lr x0.1 after epoch 40.
  custom the coco recipe on a COCO-format folder (--config.dataset.annotations=FILE
         --config.dataset.images=DIR; classes from the json).
  demo   a small one-stack hourglass on the embedded shapes dataset; trains and evaluates
         on a 2-core CPU in minutes.
  quick  a small one-stack hourglass trained 300 steps on small embedded images: learns
         within a minute on a 2-core CPU (the tests' check that training learns).
  smoke  a tiny model and a few steps; used by the tests.
"""

from configs import common


def get_config(arg: str | None = None):
    variant = arg or "coco"
    config = common.base_config()
    config.model.backbone = "hourglass"

    if variant in ("coco", "custom"):
        # Hourglass-104 (CornerNet's "large hourglass"); heads are always 256 wide.
        common.coco_recipe(config, batch_size=24, learning_rate=2.5e-4, num_epochs=50,
                           lr_drop_epochs=(40,), eval_batch_size=24, keep_res_pad=127)
        if variant == "custom":  # any COCO-format folder: see common.coco_json_dataset
            common.custom_recipe(config)
        config.model.hourglass = common.hourglass_104()
        config.model.head_conv = 256
    elif variant == "demo":
        # ~0.12 s per step on a 2-core CPU, under 10 minutes end to end. Shapes span
        # 96-160 px: a 128 px letterbox at evaluation keeps small ones resolvable (+5 AP
        # over 96 px for the same weights).
        common.shapes_demo(config, num_train=44800, input_hw=(96, 96), learning_rate=2e-3,
                           eval_input_hw=(128, 128))
        config.model.hourglass = common.small_hourglass(
            num_stacks=1, depth=3, dims=(32, 48, 64, 96), modules=(1, 1, 1, 2),
            pre_width=16, cnv_dim=32)
        config.model.head_conv = 32
    elif variant == "quick":
        # 300 steps at batch 16 on 48-80 px images with 1-4 shapes: AP ~0.1 (AP50 ~0.28).
        common.shapes_demo(config, num_train=4800, input_hw=(64, 64), learning_rate=4e-3,
                           eval_input_hw=(64, 64), host_cpu_devices=0)
        config.dataset.num_val = 64
        config.dataset.image_size = (48, 80)
        config.dataset.objects_per_image = (1, 4)
        config.dataset.object_size = (10.0, 0.8)
        config.train.log_every_steps = 50
        config.train.checkpoint_every_steps = 1000
        config.model.hourglass = common.small_hourglass(
            num_stacks=1, depth=3, dims=(16, 24, 32, 48), modules=(1, 1, 1, 2),
            pre_width=16, cnv_dim=24)
        config.model.head_conv = 24
    elif variant == "smoke":
        common.shapes_smoke(config)
        config.model.hourglass = common.small_hourglass(
            num_stacks=2, depth=2, dims=(8, 12, 16), modules=(1, 1, 1),
            pre_width=8, cnv_dim=8)
        config.model.head_conv = 8
    else:
        raise ValueError(
            f"Unknown hourglass config variant {variant!r}; use one of: coco, custom, demo, quick, "
            "smoke.")
    config.variant = variant
    return config
