"""The values the options choose among, and what is known of data sets and architectures.

This module imports nothing beyond the standard library, so that
``config.py`` and ``presets.py``, built on it alone, check a command line's
flags before TensorFlow is imported (a few seconds): ``python -m
sgan_keras.train`` answers a mistyped flag at once. ``config.py`` checks the
options against these names; the modules that implement the choices
(``data.py``, ``networks.py``, ``losses.py``, ``optimizers.py``,
``distribute.py``) import the ones they need from here.
"""

import dataclasses


# ------------------------------------------------------------------ data sets
@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the package knows of a data set before reading it."""

    name: str
    image_shape: tuple     # (height, width, channels) of one uint8 image
    num_classes: int
    train_size: int        # images of the training split (SVHN: without "extra")
    tfds_name: str         # its name in TensorFlow Datasets
    class_names: tuple = ()   # class k's name; the digits "0".."9" when empty


DATASETS = {info.name: info for info in (
    DatasetInfo("mnist", (28, 28, 1), 10, 60000, "mnist"),
    DatasetInfo("svhn", (32, 32, 3), 10, 73257, "svhn_cropped"),
    DatasetInfo("cifar10", (32, 32, 3), 10, 50000, "cifar10",
                class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                             "horse", "ship", "truck")),   # batches.meta's label_names
)}
SUPPORTED_DATASETS = tuple(DATASETS)
# Data sets of the user's: ``folder:PATH`` (image folders) and ``tfds:NAME[/config]``.
CUSTOM_PREFIXES = ("folder:", "tfds:")
# The ranges uint8 pixels are scaled to: tanh generators' and sigmoid ones'.
PIXEL_RANGES = ((-1.0, 1.0), (0.0, 1.0))
# What uint8 pixels are divided by: "255" maps 0..255 onto the whole range, "256"
# onto 255/256 of it, as openai/improved-gan: x / 256 in (0, 1) (its MNIST),
# (x - 127.5) / 128 in (-1, 1) (its CIFAR-10).
PIXEL_SCALES = ("255", "256")


def input_pixel_range(pixel_range, pixel_scale="255"):
    """The floats uint8 0 and 255 become: ``pixel_range`` times 255 / ``pixel_scale``
    (exact in binary: 255/256 = 0.99609375)."""
    factor = 255.0 / float(pixel_scale)
    return tuple(float(value) * factor for value in pixel_range)


# Every range uint8 images may be scaled to (data sets, exports).
INPUT_PIXEL_RANGES = tuple(input_pixel_range(pixel_range, scale)
                           for pixel_range in PIXEL_RANGES for scale in PIXEL_SCALES)
LABEL_SELECTIONS = ("balanced", "first")


def is_custom(name):
    """Whether ``name`` is a ``folder:`` or ``tfds:`` data set of the user's."""
    return isinstance(name, str) and name.startswith(CUSTOM_PREFIXES)


def unknown_dataset(name):
    """Why ``name`` is not a data set the package reads (one line), or ``""``
    for a built-in or a custom data set."""
    if name in DATASETS or (is_custom(name) and name.split(":", 1)[1]):
        return ""
    return (f"unknown dataset {name!r}; allowed: {', '.join(SUPPORTED_DATASETS)}, "
            "folder:PATH or tfds:NAME[/config]")


# ------------------------------------------------------------- architectures
# The data set each architecture of networks.py was made for; it takes that set's images.
NATIVE_DATASETS = {
    "mnist_blog": "mnist",
    "svhn_dcgan": "svhn",
    "mnist_gans_in_action": "mnist",
    "mnist_improved_gan": "mnist",
    "svhn_improved_gan": "svhn",
    "cifar10_improved_gan": "cifar10",
    "svhn_lecouat": "svhn",
    "cifar10_lecouat": "cifar10",
}
ARCHITECTURES = tuple(NATIVE_DATASETS)
NATIVE_IMAGE_SHAPES = {architecture: DATASETS[dataset].image_shape
                       for architecture, dataset in NATIVE_DATASETS.items()}

# The generator's output activation: the source's first, then the allowed
# alternatives (see networks.build_generator). Every generator body takes it.
GENERATOR_OUTPUT_ACTIVATIONS = {
    "mnist_blog": ("tanh",),
    "svhn_dcgan": ("tanh",),
    "mnist_gans_in_action": ("tanh",),
    "mnist_improved_gan": ("sigmoid", "softplus"),
    "svhn_improved_gan": ("tanh",),
    "cifar10_improved_gan": ("tanh",),
    "svhn_lecouat": ("tanh",),
    "cifar10_lecouat": ("tanh",),
}
# How generate() and the sample grids run G (model.py): in inference mode (its
# batch norms' moving statistics) or in training mode (each sample batch's own
# statistics), which only the generators with batch norm tell apart.
SAMPLE_MODES = ("inference", "training")
# Which of G's training-mode passes move its batch norms' moving statistics
# (model.py): every one (Keras'), or only those of G's own loss, as a TF1 graph
# running G's update ops with G's train op only (Lecouat et al.).
GENERATOR_STATISTICS = ("every_pass", "g_step")
# What the batch norms' moving variance follows (layers.BatchNormalization):
# the batch's variance (Keras 3's), or Keras 2's unbiased estimate of it.
BATCH_NORM_VARIANCES = ("biased", "unbiased")
GENERATOR_BATCH_NORM_ARCHITECTURES = ("svhn_dcgan", "mnist_gans_in_action",
                                      "mnist_improved_gan", "svhn_improved_gan",
                                      "cifar10_improved_gan", "svhn_lecouat", "cifar10_lecouat")
# The architectures whose weight-normalized layers take the data-dependent
# init (--init_images, else the first batch); Lecouat's scales start at 1.
WEIGHT_NORM_DATA_INIT = ("mnist_improved_gan", "svhn_improved_gan", "cifar10_improved_gan")
PRECISIONS = ("float32", "mixed_bfloat16")

# -------------------------------------------------- losses, optimizers, devices
FAKE_CLASSES = ("zero", "learned", "separate")
GENERATOR_LOSSES = ("feature_matching_l1", "feature_matching_l2", "non_saturating")
MANIFOLD_REGULARIZATIONS = ("none", "lecouat", "blog")
ADAM_RULES = ("keras", "improved_gan")
EMA_RULES = ("tensorflow", "improved_gan")
# How the SVHN/CIFAR-10 networks of improved-gan and Lecouat et al. pad their
# convolutions (networks.py): Keras' "same", or Theano's "half" (k // 2 zeros on
# every side), which improved-gan's Lasagne layers use.
CONV_PADDINGS = ("same", "half")
HALF_PADDING_ARCHITECTURES = ("svhn_improved_gan", "cifar10_improved_gan", "svhn_lecouat",
                              "cifar10_lecouat")
# GANs in Action's G (networks.py): as the book's text lists it, or as its
# chapter-7 notebook, with a convT(64,3,1) BN LReLU between the two others.
GANS_IN_ACTION_GENERATORS = ("text", "notebook")
# The order of the training batches (data.py): shuffles joined end to end,
# each epoch its own shuffles cut at the epoch's length (improved-gan, Lecouat
# et al.), every batch drawn with replacement (GANs in Action's
# np.random.randint), each shuffle in batches, its last one partial (Keras'
# fit(shuffle=True), the Udacity notebook's range(0, N, batch)), or one shuffle
# read pass after pass through a shuffle buffer (the MNIST blog's
# Dataset.shuffle(4000)).
DATA_ORDERS = ("joined", "per_epoch", "with_replacement", "per_shuffle", "shuffle_buffer")
# The images the unlabeled batches come from (data.py): the whole training
# split, or the images outside the labeled set (GANs in Action's 100..59,999).
UNLABELED_POOLS = ("all", "unlabeled_only")
# Which test images an evaluation scores (data.py): every one, in order;
# int(N / batch) batches of a fresh reshuffle each epoch (Lecouat et al.); or
# the next int(N / batch) batches of a repeating stream, scored as the mean of
# the batches' scores (the MNIST blog).
TEST_BATCHES = ("all", "reshuffled_full", "stream")
LR_SCHEDULES = ("constant", "per_epoch_decay", "linear_decay")
STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker", "tpu")
