"""The configuration of a run: every option once, with its flag, help and checks.

A :class:`Config` is frozen dataclasses in four sections, as the experiment
configurations of tensorflow/models (``official/core/config_definitions.py``):

- ``model`` (:class:`ModelConfig`): the networks and the losses, what a step computes;
- ``training`` (:class:`TrainingConfig`): the optimizers, the length and the
  training procedure (label batching, update order, weight-norm init, the
  baseline's budget);
- ``data`` (:class:`DataConfig`): the data set, the label budget, where it is read;
- ``run`` (:class:`RunConfig`): how the run is carried out (devices, outputs,
  checkpoints);

and four fields of its own: the preset its values start from, the procedure,
the supervised-only switch and the seed.

Each field is declared once, with :func:`option`: its default, its help text,
its flag name where that differs from the field's, its allowed values, and
two properties, ``gan_only`` (it only shapes the GAN: a ``--supervised_only``
run refuses its flag, and the experiments' baselines drop it) and
``run_only`` (it does not change what a run computes, so a resumed run may
change it). From these, and nowhere else:

- :func:`define_flags` defines the command line's absl flags;
- ``__post_init__`` checks every instance once, raising :class:`ConfigError`
  (one line naming the flag);
- ``presets.py`` holds each source's values as instances, ``model.SGAN``
  takes one with its networks, and ``flags.json`` is :meth:`Config.to_dict`.

Adding an option means one field here and the line that uses it. This module
and ``presets.py`` import no TensorFlow (the values to choose among are in
``choices.py``): the command line checks its flags before importing it.
"""

import dataclasses
import math
import numbers
import struct
import typing

from absl import flags

from sgan_keras import choices as choices_lib
from sgan_keras import faults
from sgan_keras.checks import is_integer

SECTIONS = ("model", "training", "data", "run")


class ConfigError(ValueError):
    """A bad option value or combination; the message is one line naming its flag."""


# Checks of a number: what the message says it must be, and the test.
POSITIVE = ("positive", lambda value: value > 0)
NON_NEGATIVE = (">= 0", lambda value: value >= 0)
SEED_RANGE = ("in 0..2**32 - 1 (NumPy's seed range)", lambda value: 0 <= value < 2**32)
FRACTION = ("in [0, 1)", lambda value: 0 <= value < 1)
# A path TensorFlow's file system can take (faults.is_utf8).
UTF8_PATH = ("a non-empty path of UTF-8 text" + faults.file_name_encoding_hint(),
             lambda value: value != "" and faults.is_utf8(value))
NON_EMPTY = ("a non-empty path (leave it out for the default)", lambda value: value != "")
NO_FLAG = ""   # ``flag=NO_FLAG``: set by the preset or in code only

# ``needs`` of options that only act with another's value: (field, test, what).
MANIFOLD_ON = ("manifold", lambda value: value != "none", "--manifold_reg=lecouat or blog")
SUPERVISED_ONLY = ("supervised_only", bool, "--supervised_only")
TFDS_DATASET = ("dataset", lambda value: value.startswith("tfds:"), "a tfds: --dataset")
OWN_DATASET = ("dataset", lambda value: value.startswith(("folder:", "tfds:")),
               "a folder: or tfds: --dataset")
BATCH_NORM = ("architecture",
              lambda value: value in choices_lib.GENERATOR_BATCH_NORM_ARCHITECTURES,
              "a preset whose G has batch norm (all but mnist_blog)")


def option(default, help, *, flag=None, choices=None, check=None, gan_only=False,
           run_only=False, in_run_name=True, parser=None, needs=None):
    """A configuration field: its default and what the flags, checks and run names need.

    Args:
      default: the value when neither a preset nor a flag sets it.
      help: the flag's help text.
      flag: the flag's name; ``None``: the field's; :data:`NO_FLAG`: no flag.
      choices: the allowed values (the flag is an enum of them; ``""`` is
        allowed in the field only, as "the source's").
      check: ``(what, test)`` for numbers, e.g. :data:`POSITIVE`.
      gan_only: only shapes the GAN; ``--supervised_only`` refuses the flag.
      run_only: does not change what a run computes; a resumed run may
        change it and run names leave it out.
      in_run_name: run names list it when it differs from the preset (off
        for the fields every run name starts or ends with, and paths).
      parser: an absl ``ArgumentParser`` for a flag of another type.
      needs: ``(field, test, what)`` when the option only acts if another
        field's value passes ``test`` (``what`` says how, for the message):
        given without it, it would change nothing, so it is refused.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "choices": None if choices is None else tuple(choices),
        "check": check, "gan_only": gan_only, "run_only": run_only,
        "in_run_name": in_run_name and not run_only, "parser": parser, "needs": needs})


class LabelsParser(flags.ArgumentParser):
    """``--labels``: a positive integer or ``all``."""

    syntactic_help = "a positive integer or 'all'"

    def parse(self, argument):
        if isinstance(argument, int) or argument == "all":
            return argument
        if str(argument).strip().lower() == "all":
            return "all"
        try:
            return int(argument)
        except ValueError:
            raise ValueError(f"must be a positive integer or 'all', got {argument!r}") from None

    def flag_type(self):
        return "labels"


def _check_labels(labels):
    return labels == "all" or (is_integer(labels) and labels > 0)


# ------------------------------------------------------------------ sections
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The networks and the losses (Salimans et al. 2016; ``losses.py``, ``model.py``)."""

    architecture: str = option(
        "", "The generator and discriminator of a source (networks.py); '' for networks "
        "given to SGAN.", flag=NO_FLAG, choices=("", *choices_lib.ARCHITECTURES))
    latent_dim: int = option(100, "Size of the generator's noise z.", check=POSITIVE,
                             gan_only=True)
    noise: str = option("normal", "The noise z: normal, N(0, --noise_stddev), or uniform, "
                        "U(0, 1).", choices=("normal", "uniform"), gan_only=True)
    noise_stddev: float = option(1.0, "Standard deviation of normal noise z.", check=POSITIVE,
                                 gan_only=True,
                                 needs=("noise", lambda value: value == "normal", "--noise=normal"))
    pixel_range: tuple = option(
        (-1.0, 1.0), "The range of real and generated pixels: (-1, 1) for tanh generators, "
        "(0, 1) for sigmoid ones.", flag=NO_FLAG, choices=choices_lib.PIXEL_RANGES)
    pixel_scale: str = option(
        "255", "What uint8 pixels are divided by: 255 maps 0..255 onto the whole pixel range "
        "(x/255, or x/127.5 - 1); 256 onto 255/256 of it, as openai/improved-gan (x/256 for "
        "its MNIST, (x - 127.5)/128 for its CIFAR-10).", choices=choices_lib.PIXEL_SCALES)
    generator_activation: str = option(
        "", "The generator's output activation; default: the source's. Only "
        "mnist_improved_gan has a choice (sigmoid, or softplus as "
        "Sleepychord/ImprovedGAN-pytorch).",
        choices=("", *sorted({name for names in
                              choices_lib.GENERATOR_OUTPUT_ACTIVATIONS.values()
                              for name in names})), gan_only=True)
    conv_padding: str = option(
        "same", "How the SVHN/CIFAR-10 Improved-GAN and Lecouat networks pad their "
        "convolutions: same (Keras' and TensorFlow's, as Lecouat et al.; at stride 2 the "
        "extra zero goes after the image) or half (Theano's border_mode='half', kernel // 2 "
        "zeros on every side: openai/improved-gan's Lasagne pad=1 and Deconv2DLayer).",
        choices=choices_lib.CONV_PADDINGS,
        needs=("architecture", lambda value: value in choices_lib.HALF_PADDING_ARCHITECTURES,
               "an SVHN or CIFAR-10 Improved-GAN or Lecouat preset"))
    gans_in_action_generator: str = option(
        "text", "GANs in Action's G as the book's text lists it (Dense, convT(128,3,2) BN "
        "LReLU, convT(1,3,2)) or as its chapter-7 notebook, with a convT(64,3,1) BN LReLU "
        "between the two.", choices=choices_lib.GANS_IN_ACTION_GENERATORS, gan_only=True,
        needs=("architecture", lambda value: value == "mnist_gans_in_action",
               "--preset=mnist_gans_in_action"))
    sample_mode: str = option(
        "inference", "How generate() and the sample grids run G: inference (batch norms "
        "by their moving statistics; GANs in Action's generator.predict) or training (each "
        "sample batch's own statistics, the moving statistics left as they were: "
        "openai/improved-gan's samplefun, Lecouat et al.'s gen_images, the Udacity "
        "notebook's samples).", choices=choices_lib.SAMPLE_MODES, gan_only=True,
        run_only=True,
        needs=BATCH_NORM)
    generator_statistics: str = option(
        "every_pass", "Which of G's training-mode passes move its batch norms' moving "
        "statistics: every_pass (Keras': also the D step's fakes and the manifold term's "
        "perturbed ones) or g_step (only those of G's own loss: Lecouat et al.'s G update "
        "ops, run with G's train op). Only inference-mode samples read them: no weight "
        "changes.", choices=choices_lib.GENERATOR_STATISTICS, gan_only=True, run_only=True,
        needs=BATCH_NORM)
    batch_norm_variance: str = option(
        "biased", "What the batch norms' moving variance follows: biased (Keras 3's: the "
        "batch's variance, the one it normalizes by) or unbiased (Keras 2's, which GANs in "
        "Action ran: that variance x n / (n - 1 - epsilon), n the values a channel). Only "
        "inference reads it: the test accuracy, the export, and the fakes G makes in "
        "inference mode in the split step (GANs in Action's generator.predict).",
        choices=choices_lib.BATCH_NORM_VARIANCES,
        needs=BATCH_NORM)
    fake_class: str = option(
        "zero", "zero: fixed zero fake logit; learned: K+1 outputs; separate: sigmoid head.",
        choices=choices_lib.FAKE_CLASSES, gan_only=True)
    generator_loss: str = option(
        "feature_matching_l1", "Generator loss: feature matching (the L1 or squared distance "
        "of D's mean features on real and generated images) or the non-saturating GAN loss.",
        choices=choices_lib.GENERATOR_LOSSES, gan_only=True)
    unsupervised_weight: float = option(
        1.0, "Weight of the unsupervised GAN term in D's loss.", check=NON_NEGATIVE,
        gan_only=True)
    label_smoothing: float = option(0.0, "One-sided smoothing of the real target.",
                                    check=FRACTION, gan_only=True)
    manifold: str = option(
        "none", "Manifold regularization of D: Lecouat et al. 2018 or the MNIST blog's form.",
        flag="manifold_reg", choices=choices_lib.MANIFOLD_REGULARIZATIONS, gan_only=True)
    manifold_weight: float = option(1e-3, "Manifold regularization weight (lambda).",
                                    check=POSITIVE, gan_only=True, needs=MANIFOLD_ON)
    manifold_epsilon: float = option(1e-5, "Manifold regularization perturbation size.",
                                     check=POSITIVE, gan_only=True, needs=MANIFOLD_ON)
    ema_decay: float = option(
        0.0, "Decay of the moving average of D's weights used for evaluation and export; "
        "0 turns it off.", flag="ema", check=FRACTION)
    ema_rule: str = option(
        "tensorflow", "How D's weight average follows D: tensorflow (from D's initial weights, "
        "each step's weights after D's update, as tf.train.ExponentialMovingAverage and "
        "Lecouat et al.) or improved_gan (from zeros, each step's weights before D's update, "
        "one step behind: openai/improved-gan's disc_param_avg, which Theano updates "
        "together with Adam's step).", choices=choices_lib.EMA_RULES,
        needs=("ema_decay", lambda value: value > 0, "--ema above 0"))
    precision: str = option(
        "auto", "Compute precision. mixed_bfloat16: bfloat16 math, float32 weights and "
        "losses. auto: mixed_bfloat16 on devices with bfloat16 matrix math (GPUs of "
        "compute capability 8.0 or later, CPUs with AMX-BF16 or AVX512-BF16) for the "
        "presets whose bfloat16 accuracy and speed were checked (docs/presets.md, "
        "bfloat16_checked_in), without --manifold_reg; float32 otherwise.",
        choices=("auto", *choices_lib.PRECISIONS))
    bfloat16_checked_in: str = option(
        "", "The result file that checked this preset in mixed_bfloat16 against float32 "
        "(the same test accuracy on seeded runs, a faster step); only then does "
        "--precision=auto choose bfloat16.", flag=NO_FLAG, in_run_name=False)

    def __post_init__(self):
        _check_fields(self)

    def input_pixel_range(self):
        """The floats real images' uint8 0 and 255 become (``pixel_scale``);
        G's images stay in ``pixel_range``."""
        return choices_lib.input_pixel_range(self.pixel_range, self.pixel_scale)

    def resolved_precision(self, bfloat16_units):
        """``precision`` with ``auto`` resolved for devices that have (truthy
        ``bfloat16_units``, see :func:`distribute.bfloat16_matrix_units`) or lack
        bfloat16 matrix units: mixed_bfloat16 for a preset checked in bfloat16
        (``bfloat16_checked_in``) without manifold regularization, else float32."""
        if self.precision != "auto":
            return self.precision
        if bfloat16_units and self.bfloat16_checked_in and self.manifold == "none":
            return "mixed_bfloat16"
        return "float32"

    def precision_line(self, bfloat16_units):
        """The line the trainer prints about precision, "" if none: what ``auto``
        chose and why, or a warning when mixed bfloat16 was asked for on a
        device without bfloat16 matrix units, where it is emulated (12x slower
        than float32 on the cifar10_improved_gan step of an AVX2 CPU:
        ``experiments/results/benchmark_cifar10_avx2.md``)."""
        if self.precision == "auto":
            checked = self.bfloat16_checked_in or "not checked for this preset"
            # Else a checked preset on bfloat16 units read as a reason for bfloat16.
            manifold = ("; --manifold_reg needs float32" if self.manifold != "none" else "")
            return (f"--precision=auto: {self.resolved_precision(bfloat16_units)} (bfloat16 "
                    f"matrix units: {bfloat16_units or 'none'}; bfloat16 accuracy: "
                    f"{checked}{manifold})")
        if self.precision == "mixed_bfloat16" and not bfloat16_units:
            return ("warning: --precision=mixed_bfloat16 on a device without bfloat16 matrix "
                    "units (no GPU of compute capability 8.0+, no amx_bf16 or avx512_bf16 CPU "
                    "flag): bfloat16 math is emulated here and can run many times slower than "
                    "float32; --precision=auto picks float32 here")
        return ""


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The optimizers, the length and the training procedure (``model.py``, ``data.py``)."""

    batch_size: int = option(100, "Global batch size (split across replicas).", check=POSITIVE)
    epochs: int = option(10, "Epochs to train.", check=POSITIVE)
    steps_per_epoch: int = option(100, "Training steps per epoch.", check=POSITIVE)
    g_lr: float = option(2e-4, "Generator learning rate (D's is --d_lr_ratio times it).",
                         flag="lr", check=POSITIVE)
    d_lr_ratio: float = option(1.0, "Discriminator learning rate / generator learning rate.",
                               check=POSITIVE)
    g_beta_1: float = option(0.5, "Adam's beta_1 (first-moment decay) of G's optimizer.",
                             check=FRACTION, gan_only=True)
    d_beta_1: float = option(0.5, "Adam's beta_1 (first-moment decay) of D's optimizer.",
                             check=FRACTION)
    adam_epsilon: float = option(
        1e-7, "Adam's epsilon for both optimizers (Keras' default 1e-7; the TF1 sources and "
        "improved-gan use 1e-8).", check=POSITIVE)
    adam_rule: str = option(
        "keras", "Adam's update rule: keras (also TF1's: epsilon outside the root) or "
        "improved_gan (openai/improved-gan nn.adam_updates: epsilon inside the root of the "
        "bias-corrected second moment).", choices=choices_lib.ADAM_RULES)
    lr_schedule: str = option(
        "constant", "constant; per_epoch_decay: x --lr_decay_rate after every epoch (the "
        "Udacity notebook); linear_decay: linearly to 0 from epoch --lr_decay_start_epoch to "
        "the last (Salimans et al. 2016).", choices=choices_lib.LR_SCHEDULES)
    lr_decay_rate: float = option(
        1.0, "Per-epoch factor of --lr_schedule=per_epoch_decay.", check=POSITIVE,
        needs=("lr_schedule", lambda value: value == "per_epoch_decay",
               "--lr_schedule=per_epoch_decay"))
    lr_decay_start_epoch: int = option(
        0, "First epoch of --lr_schedule=linear_decay's ramp to 0.", check=NON_NEGATIVE,
        needs=("lr_schedule", lambda value: value == "linear_decay", "--lr_schedule=linear_decay"))
    init_images: int = option(
        0, "Images of the weight-norm data-dependent init (improved-gan: 500); 0 = the "
        "first training batch.", check=NON_NEGATIVE)
    init_from: str = option(
        "unlabeled", "Draw the weight-norm init images from all training images or the "
        "labeled ones.", choices=("unlabeled", "labeled"),
        needs=("init_images", lambda value: value > 0, "--init_images above 0"))
    label_batching: str = option(
        "separate", "separate: a labeled batch beside the unlabeled ones; masked: one batch "
        "of the training set whose labeled images alone reach the supervised loss (the "
        "Udacity notebook).", choices=("separate", "masked"), gan_only=True)
    data_order: str = option(
        "joined", "joined: each stream's seeded shuffles joined end to end, cut into batches "
        "whatever the epoch (every image used; a batch may span two shuffles); per_epoch: "
        "every epoch takes its own shuffles and leaves out the rest of the last one "
        "(openai/improved-gan's and Lecouat et al.'s int(N / batch) batches of each epoch's "
        "reshuffle, the labeled set tiled by fresh shuffles and cut the same way; the Udacity "
        "notebook's reshuffle every epoch); with_replacement: every batch of every stream "
        "drawn uniformly with replacement (GANs in Action's np.random.randint); per_shuffle: "
        "each shuffle cut into ceil(N / --batch_size) batches, the last one partial, for one "
        "stream of batches, masked or a baseline's (the Udacity notebook's range(0, 73257, "
        "128), Keras' fit(shuffle=True): GANs in Action's baseline); shuffle_buffer: the "
        "images of each unlabeled (or masked) stream shuffled once, then read pass after "
        "pass through a buffer of --shuffle_buffer images, as tf.data's Dataset.shuffle, "
        "the passes joined end to end, the labeled stream's shuffles joined (the MNIST "
        "blog's .shuffle(4000) pipelines, its labels' buffer holding them all).",
        choices=choices_lib.DATA_ORDERS)
    shuffle_buffer: int = option(
        4000, "--data_order=shuffle_buffer: the unlabeled (or masked) streams' buffer, in "
        "images (each step takes one of them uniformly and the next image takes its place; "
        "a stream no larger is reshuffled uniformly every pass).", check=POSITIVE,
        needs=("data_order", lambda value: value == "shuffle_buffer",
               "--data_order=shuffle_buffer"))
    update_order: str = option(
        "sequential", "sequential: D, then G against the updated D; simultaneous: both from "
        "one forward pass (Udacity); split: three D updates then G (GANs in Action).",
        choices=("sequential", "simultaneous", "split"), gan_only=True)
    generator_fakes: str = option(
        "fresh", "fresh: G's update draws new noise; reused: it re-uses the D step's fakes "
        "(the MNIST blog's one G forward pass per step).", choices=("fresh", "reused"),
        gan_only=True)
    baseline_epochs: int = option(0, "--supervised_only: epochs (0 = --epochs).",
                                  check=NON_NEGATIVE, needs=SUPERVISED_ONLY)
    baseline_steps_per_epoch: int = option(
        0, "--supervised_only: steps per epoch (0 = --steps_per_epoch).", check=NON_NEGATIVE,
        needs=SUPERVISED_ONLY)
    baseline_data_order: str = option(
        "", "--supervised_only: the data order ('' = --data_order).",
        choices=("", *choices_lib.DATA_ORDERS), needs=SUPERVISED_ONLY)

    def __post_init__(self):
        _check_fields(self)

    @property
    def epoch_steps(self):
        """The pipelines' ``epoch_steps`` (``data.py``): the epoch's length for
        ``data_order="per_epoch"``, else 0."""
        return self.steps_per_epoch if self.data_order == "per_epoch" else 0

    @property
    def with_replacement(self):
        """The pipelines' ``with_replacement`` (``data.py``): ``data_order="with_replacement"``."""
        return self.data_order == "with_replacement"

    @property
    def partial_batches(self):
        """The pipelines' ``partial_batches`` (``data.py``): ``data_order="per_shuffle"``."""
        return self.data_order == "per_shuffle"

    @property
    def buffer_size(self):
        """The pipelines' ``shuffle_buffer`` (``data.py``): ``shuffle_buffer`` with
        ``data_order="shuffle_buffer"``, else 0."""
        return self.shuffle_buffer if self.data_order == "shuffle_buffer" else 0

    @property
    def d_lr(self):
        """D's learning rate: ``d_lr_ratio`` x ``g_lr``."""
        return self.g_lr * self.d_lr_ratio

    def schedule_line(self):
        """The line the trainer prints about the learning rate, "" if none: a
        linear decay that lowers no epoch's rate. Its ramp leaves epoch
        ``lr_decay_start_epoch`` at the full rate (``optimizers.LinearDecay``), so
        a start at or past the run's last epoch (the long presets on a short
        budget) keeps the rate constant, as the first epochs of the source's
        schedule do. Also a per-epoch decay that lowers no epoch's rate: by the
        factor 1 (the option's default), or in a run of one epoch."""
        if self.lr_schedule == "per_epoch_decay" and (self.lr_decay_rate == 1
                                                      or self.epochs == 1):
            reason = ("--lr_decay_rate=1 (its default) keeps it" if self.lr_decay_rate == 1
                      else "it lowers the rate after each epoch and this run has 1")
            return (f"note: --lr_schedule=per_epoch_decay: {reason}, so the learning rate "
                    "stays constant")
        if self.lr_schedule != "linear_decay" or self.lr_decay_start_epoch < self.epochs - 1:
            return ""
        # One epoch has one rate, whatever the start: no start to suggest then.
        remedy = (f"--lr_decay_start_epoch below {self.epochs - 1} decays it within the run"
                  if self.epochs > 1 else "the rate is set once an epoch, so one epoch has one")
        return (f"note: --lr_schedule=linear_decay keeps the full rate for "
                f"{self.lr_decay_start_epoch + 1} epochs (--lr_decay_start_epoch="
                f"{self.lr_decay_start_epoch}) and this run has {self.epochs}: the learning "
                f"rate stays constant; {remedy}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data set and its label budget (``data.py``)."""

    dataset: str = option(
        "mnist", "Dataset to train on: mnist, svhn or cifar10; folder:PATH (images in "
        "PATH/labeled/<class>/, PATH/unlabeled/ and optionally PATH/test/<class>/) or "
        "tfds:NAME[/config] (any TensorFlow Datasets image-classification set), both "
        "resized to the preset's image shape. Default: the preset's; mnist without --preset.",
        in_run_name=False)
    labels: typing.Union[int, str] = option(
        100, "Total label budget (with --label_selection=balanced a multiple of the class "
        "count), or 'all'. Default: the preset's.", parser=LabelsParser(), in_run_name=False)
    label_selection: str = option(
        "balanced", "balanced: --labels / (the class count) per class, drawn with --seed; "
        "first: the first --labels training images (GANs in Action, the Udacity notebook; "
        "balanced for folder: data, which has no order across classes).",
        choices=choices_lib.LABEL_SELECTIONS)
    unlabeled_pool: str = option(
        "all", "The images of the unlabeled batches: all (the whole training split, labeled "
        "images included) or unlabeled_only (those outside the labeled set: GANs in Action's "
        "images 100..59,999).", choices=choices_lib.UNLABELED_POOLS, gan_only=True)
    data_dir: typing.Optional[str] = option(
        None, "Local data directory (mnist.npz, IDX files, SVHN .mat files, CIFAR-10 "
        "batches or prepared TFDS data). Default: TFDS download.", check=NON_EMPTY,
        in_run_name=False)
    include_extra: bool = option(False, "SVHN: add the 531,131 'extra' images to the "
                                 "unlabeled set.")
    test_fraction: float = option(
        1.0, "Test on the first int(N x this) of the test split's N images (the Udacity "
        "notebook's Dataset(val_frac=0.5): the first half); 1 = all of them.",
        check=("in (0, 1]", lambda value: 0 < value <= 1))
    test_batches: str = option(
        "all", "Which test images each epoch's evaluation scores: all (every one, in order); "
        "reshuffled_full (int(N / --batch_size) batches of --batch_size of a fresh seeded "
        "reshuffle each epoch, the rest left out: Lecouat et al.'s train_svhn.py, 32 of "
        "SVHN's 26,032 images an epoch); or stream (the next int(N / --batch_size) batches of "
        "a repeating stream of the test set in batches of --batch_size, the last of each pass "
        "partial, scored as the mean of the batches' scores: the MNIST blog's 312 batches of "
        "its .batch(32).repeat() test stream). export/accuracy.json scores every image.",
        choices=choices_lib.TEST_BATCHES)
    train_split: str = option("train", "tfds: data sets: the split to train on.",
                              needs=TFDS_DATASET)
    test_split: str = option("test", "tfds: data sets: the split to test on.",
                             needs=TFDS_DATASET)
    convert_channels: bool = option(
        False, "folder: and tfds: data sets: convert colour images to grayscale for a "
        "grayscale preset, or grayscale to RGB for a colour one (else such images are "
        "refused).", needs=OWN_DATASET)

    def __post_init__(self):
        _check_fields(self)
        check_dataset(self.dataset)
        if not _check_labels(self.labels):
            raise ConfigError(f"--labels must be a positive integer or 'all', got {self.labels!r}")
        if self.labels != "all":
            object.__setattr__(self, "labels", int(self.labels))   # as _check_fields' numbers
        # Known here for the built-in sets, so refused before any data is read
        # or written (a folder's or a TFDS set's classes are counted when read).
        dataset = choices_lib.DATASETS.get(self.dataset)
        if (dataset and self.label_selection == "balanced" and self.labels != "all"
                and self.labels % dataset.num_classes):
            raise ConfigError(f"--labels={self.labels} must be a multiple of {self.dataset}'s "
                              f"{dataset.num_classes} classes with --label_selection=balanced")


def check_dataset(name):
    """Raises :class:`ConfigError` naming ``--dataset`` unless ``name`` is one we read."""
    problem = choices_lib.unknown_dataset(name)
    if problem:
        raise ConfigError(f"--dataset={name}: {problem}")


def source_activation_as_unset(architecture, activation):
    """``activation``, or ``""`` (unset) where it is ``architecture``'s source's
    own: giving the source's activation is the preset unchanged, not another
    run, run name or ``flags.json``. Also reads an older ``flags.json``, which
    recorded it as given."""
    allowed = choices_lib.GENERATOR_OUTPUT_ACTIVATIONS.get(architecture, ())
    return "" if allowed and activation == allowed[0] else activation


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a run is carried out: devices, outputs, checkpoints (``trainer.py``)."""

    output_dir: typing.Optional[str] = option(
        None, "Where outputs go. Default: runs/<run name>, the run name saying the dataset, "
        "preset, labels, every option that differs from the preset, and the seed.",
        check=UTF8_PATH, run_only=True)
    overwrite: bool = option(False, "Replace the outputs of an earlier run in --output_dir "
                             "(its other files stay).", run_only=True)
    strategy: str = option(
        "auto", "auto: all GPUs (Mirrored), one GPU, or the default strategy on CPU; "
        "multi_worker reads TF_CONFIG.", choices=choices_lib.STRATEGIES, run_only=True)
    virtual_cpus: int = option(0, "Split the CPU into this many logical devices (to try "
                               "tf.distribute without GPUs).", check=NON_NEGATIVE,
                               run_only=True,
                               # Only MirroredStrategy takes them: auto's default strategy
                               # and multi_worker's use one CPU device.
                               needs=("strategy", lambda value: value == "mirrored",
                                      "--strategy=mirrored"))
    deterministic: bool = option(False, "Make TensorFlow ops deterministic (slower on GPU).")
    jit_compile: str = option(
        "auto", "XLA-compile the train step. auto: off on CPU, where "
        "experiments/results/benchmark.md measures it slower, and Keras' choice elsewhere.",
        choices=("auto", "true", "false"), run_only=True)
    eval_batch_size: int = option(1000, "Batch size of test-set evaluation.", check=POSITIVE,
                                  run_only=True)
    checkpoint_every_steps: int = option(
        0, "Also save the training state every this many steps inside an epoch (0: at epoch "
        "ends only). SIGTERM and SIGINT always save at the next step.", check=NON_NEGATIVE,
        run_only=True)
    tflite: bool = option(
        True, "Also export classifier.tflite (float) and classifier_int8.tflite (full "
        "integer, calibrated on unlabeled training images) and score both on the test set.",
        run_only=True)

    def __post_init__(self):
        _check_fields(self)
        # TensorFlow reads a checkpoint's and a SavedModel's path as a file
        # pattern: under a [ or a backslash it finds no file (a good checkpoint
        # was read as unreadable at resume, and the export's check failed), nor
        # old checkpoints to delete; a * or ? may match other directories' files.
        pattern = sorted(set(self.output_dir or "") & set("*?[\\"))
        if pattern:
            raise ConfigError(f"--output_dir={self.output_dir} has {' '.join(pattern)}, which "
                              "TensorFlow reads as a file pattern (its checkpoints would not "
                              "be found): choose a path without *, ?, [ or \\")

    @property
    def keras_jit_compile(self):
        """``jit_compile`` as ``Model.compile`` takes it. Keras' ``"auto"`` is off
        on CPU-only machines and under tf.distribute, which experiments/benchmark.py
        confirms on CPU (XLA is slower there)."""
        return {"auto": "auto", "true": True, "false": False}[self.jit_compile]


# ------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: four fields of its own and the four sections."""

    preset: str = option(
        "", "Source to reproduce (docs/presets.md). Default: the Salimans et al. preset of "
        "--dataset (mnist_improved_gan, svhn_improved_gan, cifar10_improved_gan).",
        in_run_name=False)
    procedure: str = option(
        "source", "source: train as the preset's source did; unified: the package's one "
        "procedure for every preset (balanced labels, the whole training split unlabeled, "
        "every image of the whole test split, a separate labeled batch, shuffles joined end "
        "to end, sequential updates, fresh fakes for G, Keras' Adam, TensorFlow's weight "
        "average, Keras 3's batch-norm variance, init on the first batch, the baseline as "
        "long as the GAN). The other flags override either.",
        choices=("source", "unified"), in_run_name=False)
    supervised_only: bool = option(
        False, "Train the same discriminator on the labeled data alone, without a generator "
        "(the baseline).", in_run_name=False)
    seed: int = option(0, "Seed of the label draw, data order, weights and noise.",
                       check=SEED_RANGE, in_run_name=False)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def __post_init__(self):
        _check_fields(self)
        model, training, data = self.model, self.training, self.data
        source = f"--preset={self.preset}" if self.preset else f"architecture {model.architecture}"
        if model.architecture and not choices_lib.is_custom(data.dataset):
            native = choices_lib.NATIVE_IMAGE_SHAPES[model.architecture]
            shape = choices_lib.DATASETS[data.dataset].image_shape
            if native != shape:
                raise ConfigError(f"{source} is built for {native} images, but "
                                  f"--dataset={data.dataset} has {shape}")
        if model.architecture:   # a folder: or tfds: set too (a traceback at G's build)
            allowed = choices_lib.GENERATOR_OUTPUT_ACTIVATIONS[model.architecture]
            if model.generator_activation and model.generator_activation not in allowed:
                raise ConfigError(f"--generator_activation={model.generator_activation}: the "
                                  f"{self.preset or model.architecture} generator allows "
                                  f"{', '.join(allowed)}")
            unset = source_activation_as_unset(model.architecture, model.generator_activation)
            if unset != model.generator_activation:
                object.__setattr__(self, "model", dataclasses.replace(
                    model, generator_activation=unset))
        if data.include_extra and data.dataset != "svhn":
            raise ConfigError("--include_extra applies to --dataset=svhn only")
        if data.unlabeled_pool == "unlabeled_only" and not self.supervised_only:
            if training.label_batching == "masked":
                raise ConfigError("--unlabeled_pool=unlabeled_only needs --label_batching="
                                  "separate: a masked batch is drawn from the whole training "
                                  "split")
            if data.labels == "all":
                raise ConfigError("--unlabeled_pool=unlabeled_only leaves no unlabeled image "
                                  "with --labels=all")
        if (training.data_order == "per_shuffle" and training.label_batching == "separate"
                and not self.supervised_only):
            raise ConfigError("--data_order=per_shuffle cuts the shuffles of one stream of "
                              "batches: it needs --label_batching=masked or --supervised_only "
                              "(a labeled batch beside unlabeled ones has three)")
        if training.generator_fakes == "reused" and training.update_order != "sequential":
            raise ConfigError("--generator_fakes=reused (the D step's fakes for G, mnist_blog's) "
                              "needs --update_order=sequential, got "
                              f"{training.update_order!r}; with another order, give "
                              "--generator_fakes=fresh too")
        if (model.precision == "mixed_bfloat16" and model.manifold != "none"
                and not self.supervised_only):
            raise ConfigError(
                f"--precision={model.precision} cannot be used with --manifold_reg="
                f"{model.manifold}: manifold regularization needs float32 (its perturbation, "
                f"epsilon {model.manifold_epsilon:g}, is below bfloat16's resolution)")

    def value(self, name):
        """The value of the field called ``name``, in whichever section."""
        section = OPTIONS[name].section
        return getattr(getattr(self, section) if section else self, name)

    def replace(self, **changes):
        """A copy with the fields named in ``changes`` (any section) replaced, checked again."""
        unknown = sorted(set(changes) - set(OPTIONS))
        if unknown:
            # The CLI's names for three fields (--lr, --ema, --manifold_reg) are
            # what a notebook user types first: name their fields.
            fields = {option.flag: name for name, option in OPTIONS.items() if option.flag}
            renamed = [f"--{flag} is the field {fields[flag]}" for flag in unknown
                       if fields.get(flag, flag) != flag]
            raise ConfigError(f"unknown option(s) {unknown}"
                              + (f" ({'; '.join(renamed)})" if renamed else "")
                              + f"; allowed: {sorted(OPTIONS)}")
        top = {name: value for name, value in changes.items() if not OPTIONS[name].section}
        sections = {}
        for section in SECTIONS:
            ours = {name: value for name, value in changes.items()
                    if OPTIONS[name].section == section}
            if ours:
                sections[section] = dataclasses.replace(getattr(self, section), **ours)
        return dataclasses.replace(self, **top, **sections)

    def to_dict(self):
        """Every field by name (one flat dict, JSON-ready: tuples as lists)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in ((name, self.value(name)) for name in OPTIONS)}

    @classmethod
    def from_dict(cls, values):
        """The :class:`Config` of a :meth:`to_dict` (a saved model's); missing
        fields take their defaults (:data:`VALUES_BEFORE_ADDED`'s where listed),
        :data:`RETIRED_FIELDS` are dropped, and a
        field this version does not know is a newer version's (``ConfigError``)."""
        newer = fields_of_a_newer_version(values)
        if newer:
            raise ConfigError(f"this configuration was written by a newer sgan_keras: it has "
                              f"{', '.join(newer)}, which this version does not know; "
                              "read it with that version")
        values = {**VALUES_BEFORE_ADDED, **values}
        return cls().replace(**{
            name: tuple(value) if OPTIONS[name].type is tuple else value
            for name, value in values.items() if name not in RETIRED_FIELDS})


# A field removed from Config goes here: what runs and models from before its
# removal wrote (flags.json, a saved model's configuration) still holds it,
# and is read without it rather than taken for a newer version's.
RETIRED_FIELDS = frozenset()

# A field added after runs were recorded, where some preset's value is not what
# those runs did, goes here with what they did: an older flags.json that lacks
# it is read with this value rather than its preset's (trainer.changed_options).
# Before ema_rule, every weight average followed TensorFlow's rule; before
# conv_padding, every network padded as Keras' "same"; before pixel_scale, every
# data set was divided by 255; before data_order, every run joined its shuffles;
# before unlabeled_pool, every unlabeled batch came from the whole training split;
# before test_fraction, every run tested on its whole test split; before
# batch_norm_variance, every batch norm's moving variance followed Keras 3's rule;
# before test_batches, every evaluation scored every test image.
VALUES_BEFORE_ADDED = {"ema_rule": "tensorflow", "conv_padding": "same", "pixel_scale": "255",
                       "data_order": "joined", "unlabeled_pool": "all", "test_fraction": 1.0,
                       "batch_norm_variance": "biased", "test_batches": "all"}


def fields_of_a_newer_version(values):
    """The fields of a :meth:`Config.to_dict` written earlier (a run's
    ``flags.json``, a saved model's configuration) that this version does not
    know: a newer version of the package wrote them."""
    return sorted(set(values) - set(OPTIONS) - RETIRED_FIELDS)


# ------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True)
class Option:
    """One field of :class:`Config`, as the flags, checks and run names see it."""

    name: str
    section: str          # "" for the fields of Config itself
    type: type
    default: object
    flag: str             # "" when the field has no flag
    help: str
    choices: tuple
    check: tuple
    gan_only: bool
    run_only: bool
    in_run_name: bool
    parser: object
    needs: tuple

    def acts_in(self, config):
        """Whether it can change what ``config`` computes: not when ``config``
        does not meet its ``needs`` (the manifold weight without a manifold
        regularization, a baseline's data order in a GAN's run)."""
        return not self.needs or self.needs[1](config.value(self.needs[0]))

    def label(self):
        """How messages name it: ``--flag``, ``--flag (field)``, or the field."""
        if not self.flag:
            return self.name
        return f"--{self.flag}" if self.flag == self.name else f"--{self.flag} ({self.name})"


def _collect_options():
    found = {}
    for section, cls in (("", Config), ("model", ModelConfig), ("training", TrainingConfig),
                         ("data", DataConfig), ("run", RunConfig)):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name in SECTIONS:
                continue
            meta = field.metadata
            kind = hints[field.name]
            if typing.get_origin(kind) is typing.Union:   # Optional[str] -> str
                kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
            found[field.name] = Option(
                name=field.name, section=section, type=kind, default=field.default,
                flag=field.name if meta["flag"] is None else meta["flag"], help=meta["help"],
                choices=meta["choices"], check=meta["check"], gan_only=meta["gan_only"],
                run_only=meta["run_only"], in_run_name=meta["in_run_name"],
                parser=meta["parser"], needs=meta["needs"])
    return found


OPTIONS = _collect_options()   # field name -> Option, in declaration order


def _check_fields(instance):
    """Checks the type, allowed values and range of each field of ``instance``."""
    for field in dataclasses.fields(instance):
        if field.name in SECTIONS:
            continue
        option, value = OPTIONS[field.name], getattr(instance, field.name)
        if option.parser is not None:
            continue   # its own check, in the section's __post_init__
        if value is None and field.default is None:
            continue
        if not _is_a(value, option.type):
            raise ConfigError(f"{option.label()} must be {option.type.__name__}, got {value!r}")
        if option.type in (int, float) and type(value) is not option.type:
            # A NumPy scalar (np.int64 from an array) as Python's: to_dict() is
            # JSON (flags.json, a saved model's config), which takes no NumPy.
            value = option.type(value)
            object.__setattr__(instance, field.name, value)
        if option.type is float and not math.isfinite(value):   # inf passes "positive"
            raise ConfigError(f"{option.label()} must be a finite number, got {value!r}")
        if option.choices is not None and value not in option.choices:
            allowed = tuple(choice for choice in option.choices if choice != "")
            raise ConfigError(f"{option.label()} must be one of {allowed}, got {value!r}")
        if option.check is not None and not option.check[1](value):
            raise ConfigError(f"{option.label()} must be {option.check[0]}, got {value!r}")
        if option.type is int and abs(value) >= 2**63:   # a tensor's int64 cannot hold it
            raise ConfigError(f"{option.label()} must be below 2**63 (int64, which TensorFlow "
                              f"counts in), got {value!r}")
        if option.type is float and (problem := _float32_problem(value, option.check)):
            raise ConfigError(f"{option.label()} must be {problem} in float32, which training "
                              f"computes in: got {value!r}, {_float32(value)!r} in float32")


# float32's largest value and smallest normal one (TensorFlow's CPU kernels
# flush smaller ones to zero).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


def _float32(value):
    """``value`` rounded to float32 (inf past its range)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _float32_problem(value, check):
    """What a float option must be to keep its meaning in float32, the
    precision of the variables and losses, or "" when it does: an epsilon of
    1e-300 became 0 (NaN at the first step), an --ema of 0.99999999 became 1
    (a weight average that never moved), a weight of 1e300 became inf."""
    single = _float32(value)
    if not math.isfinite(single) or (value != 0 and abs(single) < FLOAT32_TINY):
        return f"0 or {FLOAT32_TINY:.4g}..{FLOAT32_MAX:.4g} in magnitude"
    if check is not None and not check[1](single):
        return check[0]
    return ""


def _is_a(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return is_integer(value)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


# -------------------------------------------------------------------- flags
def define_flags(flag_values, preset_names):
    """Defines one absl flag per field in ``flag_values`` (e.g. ``flags.FLAGS``).

    Each flag's help is its field's; an enum's values are the field's choices
    (``preset_names`` for ``--preset``). Every flag defaults to ``None``,
    "unset": the preset's value (:func:`overrides_from_flags`).
    """
    for option in OPTIONS.values():
        if not option.flag:
            continue
        args = dict(name=option.flag, default=None, help=option.help, flag_values=flag_values)
        choices = preset_names if option.name == "preset" else option.choices
        if option.parser is not None:
            flags.DEFINE(option.parser, serializer=flags.ArgumentSerializer(), **args)
        elif option.type is bool:
            flags.DEFINE_bool(**args)
        elif option.type is int:
            flags.DEFINE_integer(**args)
        elif option.type is float:
            flags.DEFINE_float(**args)
        elif choices is not None:
            flags.DEFINE_enum(enum_values=[choice for choice in choices if choice != ""], **args)
        else:
            flags.DEFINE_string(**args)


def flag_names():
    """The flags :func:`define_flags` defines, in field order."""
    return tuple(option.flag for option in OPTIONS.values() if option.flag)


def gan_only_flags():
    """The flags of the fields that only shape the GAN (``--supervised_only``
    refuses them; the experiments' baselines drop them)."""
    return tuple(option.flag for option in OPTIONS.values() if option.flag and option.gan_only)


def baseline_only_flags():
    """The flags of the fields that act only with ``--supervised_only``
    (``baseline_epochs``; the trainer refuses them without it, and the
    experiments' SGAN runs drop them)."""
    return tuple(option.flag for option in OPTIONS.values()
                 if option.flag and option.needs == SUPERVISED_ONLY)


def overrides_from_flags(values):
    """``{field: value}`` of the flags set in ``values`` (flag name -> value, ``None``: unset)."""
    return {option.name: values[option.flag] for option in OPTIONS.values()
            if option.flag and values.get(option.flag) is not None}
