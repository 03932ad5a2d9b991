"""Building blocks shared by the configs. Every hyper-parameter lives in a config."""

import ml_collections
from ml_collections import config_dict

# Official normalisation, applied to images in BGR channel order (the official COCO loader).
COCO_MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
COCO_STD_BGR = (0.28863828, 0.27408164, 0.27809835)


def base_config(task: str = "ctdet") -> ml_collections.ConfigDict:
    """Fields every config has, with `task`'s loss options; variants override what differs."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.variant = ""
    config.seed = 317  # the official seed

    config.dataset = ml_collections.ConfigDict()

    config.input = ml_collections.ConfigDict(dict(
        input_hw=(512, 512),
        down_ratio=4,  # output stride; every backbone here is stride 4
        mean=COCO_MEAN_BGR,
        std=COCO_STD_BGR,
        flip_prob=0.5,
        # The crop window (data/transforms.py): "random_crop" (official default: s = max(h, w)
        # * choice(scale_choices), centre within `border`), "shift_scale" (official
        # --not_rand_crop: normal jitter of `shift` and `scale`) or "ddd" (KITTI: that jitter
        # with probability ddd_aug_prob, shifts relative to the image size).
        crop_mode="random_crop",
        scale_choices=(0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
        border=128,
        shift=0.1,
        scale=0.4,
        ddd_aug_prob=0.5,
        color_aug=True,
    ))

    config.model = ml_collections.ConfigDict(dict(
        backbone="hourglass",
        hourglass=ml_collections.ConfigDict(),
        head_conv=256,
        hm_bias=-2.19,
        dtype="float32",  # computation dtype; parameters stay float32
    ))

    # Initialisation from a checkpoint made by `python -m centernet_jax.convert` (an official
    # CenterNet model, or an ImageNet backbone as the official recipes start from). Flax
    # paths matching an `exclude` regex keep their fresh init, e.g. the class heatmap
    # r"heads_\d+/hm/conv1x1" when fine-tuning on another number of classes.
    config.init = ml_collections.ConfigDict(dict(checkpoint="", exclude=()))

    # The task's training objective; each task reads exactly its own fields.
    config.loss = TASK_LOSSES[task]()

    config.train = ml_collections.ConfigDict(dict(
        batch_size=32,  # global, over all devices and processes
        learning_rate=1.25e-4,
        num_epochs=140,
        lr_drop_epochs=(90, 120),
        lr_drop_factor=0.1,
        log_every_steps=50,
        checkpoint_every_steps=1000,
        max_checkpoints_to_keep=3,
        num_workers=0,  # Grain worker processes; 0 reads in the main process
        prefetch_buffer_size=4,
        # A step whose loss or gradient is not finite is never applied; then "stop" ends
        # the run naming the step, "skip" goes on (and counts such steps).
        on_nonfinite="stop",
    ))

    config.eval = ml_collections.ConfigDict(dict(
        every_steps=0,  # 0: evaluate only at the end of training
        batch_size=32,
        # Evaluation input canvas; () uses input.input_hw. The model is fully convolutional,
        # so it may differ from the training size. resize_mode "fix_res" letterboxes into it;
        # "keep_res" (official COCO testing) pads each image to (size | keep_res_pad) + 1
        # without resizing, placed in this canvas, which must hold the largest such size.
        input_hw=(),
        resize_mode="fix_res",
        keep_res_pad=31,  # 127 for the hourglass
        top_k=100,
        num_pictures=4,  # validation images drawn to PNG and TensorBoard
        vis_threshold=0.3,  # drawing only; all top_k boxes go to COCOeval
        # Test mode (the official test script): "plain", "flip" or "multiscale" (test_scales, with
        # flip when multiscale_flip, merged per class by Gaussian soft-NMS).
        test_mode="plain",
        test_scales=(0.5, 0.75, 1.0, 1.25, 1.5),
        multiscale_flip=True,
        nms=False,  # soft-NMS at a single scale too (the official --nms)
        # "official" keeps the boxes soft-NMS discards as stale duplicate rows, as the
        # official merge does; "corrected" drops them.
        soft_nms="official",
        max_per_image=100,  # after merging: keep scores >= the 100th best (ties kept)
    ))

    # Device mesh: -1 takes every device not used by the other axis. On a machine without
    # accelerators, host_cpu_devices > 0 splits the CPU into that many JAX devices so that
    # data parallelism keeps every core busy (small convolutions use one core poorly).
    # Multi-slice TPU pods: num_slices > 1 spreads `data` over the slices (see
    # sharding.make_mesh).
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, num_slices=1,
                                                 host_cpu_devices=0))
    return config


def ctdet_loss() -> ml_collections.ConfigDict:
    """2D detection (Objects as Points): focal + 0.1 x size + offset losses."""
    return ml_collections.ConfigDict(dict(
        hm_weight=1.0,
        wh_weight=0.1,
        off_weight=1.0,
        # "official" keeps CornerNet's gaussian_radius typo; "corrected" fixes it.
        radius="official",
        min_overlap=0.7,
    ))


TASK_LOSSES = {"ctdet": ctdet_loss}


def coco_dataset() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="coco",
        data_dir=config_dict.placeholder(str),  # TFDS data dir; default $TFDS_DATA_DIR
        num_classes=80,
        max_objects=128,
        drop_crowd=False,  # the official loader trains on crowd boxes too
        train_split="train",
        eval_split="validation",
    ))


# ImageNet mean/std in RGB order, which the official KITTI and Pascal loaders apply to BGR
# images; kept for reproduction.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def voc_dataset() -> ml_collections.ConfigDict:
    """Pascal VOC: train on 2007+2012 trainval, test on 2007 test (TFDS voc/2007, voc/2012)."""
    return ml_collections.ConfigDict(dict(
        name="voc",
        data_dir=config_dict.placeholder(str),
        num_classes=20,
        max_objects=50,  # official pascal.py
        drop_difficult=False,  # the official loader trains on difficult objects too
        train_split="train",
        eval_split="test",
    ))


def pascal_recipe(config: ml_collections.ConfigDict, *, input_size: int = 384) -> None:
    """The official ctdet_pascal recipe: batch 32, lr 1.25e-4, 70 epochs, drops at 45 and 60,
    fix_res at `input_size` (384 or 512) for training and testing, ImageNet mean/std on BGR."""
    config.dataset = voc_dataset()
    config.input.input_hw = (input_size, input_size)
    config.input.mean = IMAGENET_MEAN
    config.input.std = IMAGENET_STD
    config.train.batch_size = 32
    config.train.learning_rate = 1.25e-4
    config.train.num_epochs = 70
    config.train.lr_drop_epochs = (45, 60)
    config.train.checkpoint_every_steps = 2000
    config.eval.every_steps = 5000
    config.eval.input_hw = ()


def coco_json_dataset() -> ml_collections.ConfigDict:
    """Any COCO-format dataset: an annotation json and an image folder per split.

    Class names and count come from the json's categories. `val_*` default to the training
    files (with a warning). Set them from the command line, e.g.
    --config.dataset.annotations=data/train.json --config.dataset.images=data/train_images.
    """
    return ml_collections.ConfigDict(dict(
        name="coco_json",
        annotations=config_dict.placeholder(str),
        images=config_dict.placeholder(str),
        val_annotations=config_dict.placeholder(str),
        val_images=config_dict.placeholder(str),
        num_classes=config_dict.placeholder(int),  # unset: from the json
        max_objects=128,
        drop_crowd=False,
        skip_empty=False,
        train_split="train",
        eval_split="val",
    ))


def coco_keypoints_dataset() -> ml_collections.ConfigDict:
    """COCO 2017 person keypoints (our TFDS builder; `python -m centernet_jax.prepare`)."""
    return ml_collections.ConfigDict(dict(
        name="coco_keypoints",
        data_dir=config_dict.placeholder(str),
        num_classes=1,
        max_objects=32,  # official coco_hp.py
        skip_empty=True,  # official: training images without people are left out
        drop_crowd=False,
        train_split="train",
        eval_split="validation",
    ))


def kitti_dataset(split_set: str = "3dop") -> ml_collections.ConfigDict:
    """KITTI object with P2 calibration (our TFDS builder), 3DOP or SubCNN train/val split."""
    return ml_collections.ConfigDict(dict(
        name="kitti",
        data_dir=config_dict.placeholder(str),
        split_set=split_set,
        num_classes=3,
        max_objects=50,  # official kitti.py
        train_split="train",
        eval_split="validation",
    ))


def kitti_input(config: ml_collections.ConfigDict) -> None:
    """The official ddd input: 384x1280, jitter with probability 0.5, no flip, no colour
    augmentation, ImageNet mean/std on BGR, fix_res testing."""
    config.input.input_hw = (384, 1280)
    config.input.crop_mode = "ddd"
    config.input.ddd_aug_prob = 0.5
    config.input.flip_prob = 0.0
    config.input.color_aug = False
    config.input.mean = IMAGENET_MEAN
    config.input.std = IMAGENET_STD
    config.eval.resize_mode = "fix_res"
    config.eval.input_hw = ()


def custom_recipe(config: ml_collections.ConfigDict) -> None:
    """Training on a COCO-format folder with the model's COCO recipe, 512x512 input,
    evaluated with fix_res (image sizes of custom data are unknown in advance)."""
    config.dataset = coco_json_dataset()
    config.eval.resize_mode = "fix_res"
    config.eval.input_hw = ()


def coco_recipe(config: ml_collections.ConfigDict, *, batch_size: int, learning_rate: float,
                num_epochs: int, lr_drop_epochs: tuple[int, ...],
                eval_every_steps: int = 20000, eval_batch_size: int = 32,
                keep_res_pad: int = 31) -> None:
    """An official COCO 2017 ctdet recipe at 512x512: Adam, step drops of x0.1 (the official
    experiment scripts).

    Testing is keep_res as officially: COCO's longest side is 640, so the canvas is
    (640 | pad) + 1 = 672 (pad 31) or 768 (pad 127, the hourglass).
    """
    config.dataset = coco_dataset()
    config.eval.resize_mode = "keep_res"
    config.eval.keep_res_pad = keep_res_pad
    canvas = (640 | keep_res_pad) + 1
    config.eval.input_hw = (canvas, canvas)
    config.input.input_hw = (512, 512)
    config.train.batch_size = batch_size
    config.train.learning_rate = learning_rate
    config.train.num_epochs = num_epochs
    config.train.lr_drop_epochs = tuple(lr_drop_epochs)
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 2000
    config.eval.every_steps = eval_every_steps
    config.eval.batch_size = eval_batch_size


def shapes_demo(config: ml_collections.ConfigDict, *, num_train: int, input_hw: tuple[int, int],
                learning_rate: float, eval_input_hw: tuple[int, int],
                host_cpu_devices: int = 2) -> None:
    """The demo recipe on the embedded dataset, sized for a 2-core CPU.

    Shapes are generated afresh for every index, so one pass (batch 16) over many examples
    with mild jitter replaces the heavy crop/scale augmentation real datasets need; the
    learning rate drops x0.1 for the last 15% of the steps and evaluation runs once, at
    the end, on 256 validation images.
    """
    config.dataset = shapes_dataset(num_train=num_train, num_val=256)
    config.input.input_hw = tuple(input_hw)
    config.input.crop_mode = "shift_scale"
    config.input.shift = 0.05
    config.input.scale = 0.1
    config.input.color_aug = False  # shapes already have random colours; saves CPU
    config.train.batch_size = 16
    config.train.learning_rate = learning_rate
    config.train.num_epochs = 1
    config.train.lr_drop_epochs = (0.85,)
    config.mesh.host_cpu_devices = host_cpu_devices  # 2: ~1.5x faster steps on 2 cores
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 400
    config.eval.every_steps = 0  # only at the end
    config.eval.batch_size = 32
    config.eval.input_hw = tuple(eval_input_hw)


def shapes_smoke(config: ml_collections.ConfigDict) -> None:
    """A few steps of a tiny model on tiny generated images: the tests' end-to-end runs.

    64 training images at batch 8, two epochs (16 steps), evaluated at steps 8 and 16.
    """
    config.dataset = shapes_dataset(num_train=64, num_val=16)
    config.dataset.image_size = (48, 80)
    config.dataset.max_objects = 8
    config.input.input_hw = (64, 64)
    config.input.border = 16
    config.train.batch_size = 8
    config.train.learning_rate = 1e-3
    config.train.num_epochs = 2
    config.train.lr_drop_epochs = (1,)
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 4
    config.eval.every_steps = 8
    config.eval.batch_size = 8
    config.eval.num_pictures = 2


def shapes_dataset(num_train: int, num_val: int) -> ml_collections.ConfigDict:
    """The embedded, procedurally generated dataset (no download)."""
    return ml_collections.ConfigDict(dict(
        name="shapes",
        seed=0,
        num_classes=5,
        max_objects=32,
        num_train=num_train,
        num_val=num_val,
        image_size=(96, 160),  # min and max side, pixels
        objects_per_image=(1, 8),
        object_size=(8.0, 0.8),  # min side in pixels, max fraction of the image
        train_split="train",
        eval_split="val",
    ))


def hourglass_104() -> ml_collections.ConfigDict:
    return small_hourglass(num_stacks=2, depth=5, dims=(256, 256, 384, 384, 384, 512),
                           modules=(2, 2, 2, 2, 2, 4), pre_width=128, cnv_dim=256)


def small_hourglass(*, num_stacks, depth, dims, modules, pre_width, cnv_dim):
    return ml_collections.ConfigDict(dict(
        num_stacks=num_stacks, depth=depth, dims=tuple(dims), modules=tuple(modules),
        pre_width=pre_width, cnv_dim=cnv_dim))
