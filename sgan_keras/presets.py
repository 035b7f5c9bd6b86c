"""Each reproduced source's configuration, and how a command line picks and changes one.

A :class:`Preset` is a :class:`~sgan_keras.config.Config` holding its
source's values of every option (an architecture of :mod:`sgan_keras.networks`
and the procedure its source trains it with), the notes on how the source was
read and the :class:`Deviation` rows where a default differs from its code.
``SGAN.from_preset`` and the CLI start from one: :func:`resolve` applies a
command line's options to it, :func:`run_name` names the result by the options
that differ from it. ``docs/presets.md`` tabulates the procedures and the
deviations (:func:`procedure_markdown`, :func:`deviations_markdown`).
"""

import dataclasses
import os
import typing

from sgan_keras import choices as choices_lib
from sgan_keras import config as config_lib
from sgan_keras.choices import DATASETS


class Deviation(typing.NamedTuple):
    """Where a preset's default differs from its source's code."""

    aspect: str
    source: str    # what the source does, and where (file, function or line)
    ours: str      # what the preset does instead
    option: str    # the flag that restores the source, or why there is none


@dataclasses.dataclass(frozen=True)
class Preset:
    """One source: its values of every option, how they were read, and where we differ."""

    config: config_lib.Config
    notes: str = ""
    deviations: tuple = ()   # Deviation rows: where the default differs from the source

    @property
    def name(self):
        return self.config.preset


def _source(name, **values):
    """The :class:`~sgan_keras.config.Config` of preset ``name``: the package's
    defaults with the source's ``values`` (fields of any section)."""
    return config_lib.Config(preset=name).replace(**values)


# Sources, as cited in the deviation rows below.
_BLOG = "jostosh/gan dcganmnist/mnist_ssl.py"
_UDACITY = "udacity/deep-learning semi-supervised/semi-supervised_learning_2_solution.ipynb"
_GIA = "GANs-in-Action/gans-in-action chapter-7/Chapter_7_SGAN.ipynb"
_IMPROVED_GAN = "openai/improved-gan mnist_svhn_cifar10/"
_LECOUAT = "bruno-31/GAN-manifold-regularization"

# Where --precision=auto's bfloat16 choice for a preset was checked.
_BFLOAT16_CHECK = "experiments/results/mixed_precision.md"

_PRESETS = [
    Preset(
        _source("mnist_blog", architecture="mnist_blog", dataset="mnist",
                labels=4000, batch_size=32, epochs=100,
                steps_per_epoch=50000 // 32, noise="normal", noise_stddev=0.01,
                fake_class="zero", generator_loss="feature_matching_l1",
                unsupervised_weight=0.5, manifold="none", g_lr=2e-4, d_lr_ratio=0.25,
                g_beta_1=0.5, d_beta_1=0.9, adam_epsilon=1e-8, generator_fakes="reused",
                data_order="shuffle_buffer", shuffle_buffer=4000, test_batches="stream",
                bfloat16_checked_in=_BFLOAT16_CHECK),
        notes="MNIST blog post: D lr = 0.25 x G lr (the final code; the text says 0.1) "
              "with Adam's default betas for D; manifold regularization off by "
              "default, --manifold_reg=blog turns on the blog's form. One G forward "
              "pass per step: G's update re-uses the D step's fakes. Its input "
              "pipelines: D's and G's unlabeled images each shuffled once and read pass "
              "after pass through a 4,000-image shuffle buffer (.shuffle(4000)), a pass "
              "of the 60,000 in 1,875 batches of 32; the labels reshuffled every pass "
              "(their buffer holds them all). "
              "Each epoch tests on the next 312 batches of its repeating test stream, "
              "the mean of their accuracies.",
        deviations=(
            Deviation("precision", _BLOG + " (float32)", "mixed bfloat16 where "
                      "--precision=auto finds bfloat16 matrix units (checked on this "
                      "preset)", "--precision=float32"),
        )),
    Preset(
        _source("svhn_dcgan", architecture="svhn_dcgan", dataset="svhn",
                labels=1000, batch_size=128, epochs=25,
                steps_per_epoch=-(-DATASETS["svhn"].train_size // 128), noise="normal",
                noise_stddev=1.0,
                fake_class="zero", generator_loss="feature_matching_l1",
                unsupervised_weight=1.0, g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8,
                lr_schedule="per_epoch_decay", lr_decay_rate=0.9, label_selection="first",
                label_batching="masked", update_order="simultaneous", data_order="per_shuffle",
                test_fraction=0.5, sample_mode="training"),
        notes="Udacity SVHN notebook: one batch of the training set per step, labels "
              "masked to the first 1,000 images; D's and G's losses from one forward "
              "pass, both updates together; each epoch a reshuffle in 573 batches, the "
              "last of 41 images (G's fakes as many: the notebook draws 128 z for it); "
              "lr x 0.9 after every epoch.",
        deviations=(
            Deviation("dropout", _UDACITY + " discriminator (tf.layers.dropout without "
                      "training=, so it never drops)", "dropout drops while training",
                      "none (a bug, not copied)"),
            Deviation("batch norm at test time", _UDACITY + " (is_training stays True "
                      "when testing)", "inference mode (moving statistics)",
                      "none (a bug, not copied)"),
            Deviation("digit 0's label", _UDACITY + " Dataset, model_loss (the .mat files' "
                      "y kept, 10 for digit 0, and tf.one_hot(10, 10) is all zeros: a labeled "
                      "0 adds nothing to L_sup but counts in its denominator, and a test 0 "
                      "never counts as correct)", "class 0, as the .mat readers map it",
                      "none (a bug, not copied)"),
            Deviation("the last batch's fakes", _UDACITY + " (batch_z of batch_size, 128, "
                      "also beside the epoch's last 41 images)", "as many fakes as real "
                      "images: 41", "none (D's unsupervised loss pairs each real image with "
                      "a fake)"),
            Deviation("unused layer", _UDACITY + " discriminator (a stride-2 conv after "
                      "the fifth whose output is never used)", "left out", "none"),
            Deviation("which first 1,000", _UDACITY + " (the .mat files' order: the "
                      "first 1,000 training images and the first 13,016 test images)",
                      "the first ones of the given copy; TFDS' copy is in another order",
                      "--data_dir holding the .mat files"),
        )),
    Preset(
        _source("mnist_gans_in_action", architecture="mnist_gans_in_action",
                dataset="mnist", labels=100, batch_size=32,
                epochs=8, steps_per_epoch=1000, noise="normal", noise_stddev=1.0,
                fake_class="zero", generator_loss="non_saturating",
                unsupervised_weight=1.0, g_lr=1e-3, d_lr_ratio=1.0, g_beta_1=0.9,
                d_beta_1=0.9, label_selection="first", update_order="split",
                data_order="with_replacement", unlabeled_pool="unlabeled_only",
                batch_norm_variance="unbiased", baseline_epochs=30,
                baseline_steps_per_epoch=4, baseline_data_order="per_shuffle"),
        notes="GANs in Action SGAN tutorial: 8,000 iterations as 8 epochs x 1,000 "
              "steps; Adam defaults. The first 100 training images are the labeled "
              "set, the other 59,900 the unlabeled pool; every batch is drawn from its "
              "set with replacement. Each iteration takes three D updates (labeled; "
              "real; fake, made by G in inference mode) with two Adam optimizers on one "
              "trunk, then the G update. The batch norms' moving variance is Keras 2's "
              "unbiased estimate (the book's repository pins Keras 2.1.6). The baseline "
              "trains the same D as the book's fit(batch_size=32, epochs=30) does: 30 "
              "reshuffles of the 100 labeled images in batches of 32, 32, 32 and 4.",
        deviations=(
            Deviation("D's and G's losses", _GIA + " (Keras 2 cross-entropies of clipped "
                      "probabilities: categorical of D's softmax; binary of 1 - 1/(sum exp + 1) "
                      "for D's real and fake updates and G's)",
                      "the same losses in log space, unclipped", "none (numerics)"),
            Deviation("generator", _GIA + " build_generator (an extra convT(64,3,1) BN "
                      "LReLU; the book's text has none)", "left out, as the book's text",
                      "--gans_in_action_generator=notebook"),
            Deviation("which first 100", _GIA + " (Keras' mnist.npz order)", "the first "
                      "100 of the given copy; a copy in another order gives other labels",
                      "--data_dir holding Keras' own mnist.npz"),
        )),
    Preset(
        _source("mnist_improved_gan", architecture="mnist_improved_gan",
                dataset="mnist", labels=100, batch_size=100,
                epochs=300, steps_per_epoch=600, pixel_range=(0.0, 1.0), pixel_scale="256",
        noise="uniform", fake_class="zero", generator_loss="feature_matching_l2",
        unsupervised_weight=0.5, g_lr=3e-3, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="unlabeled", ema_decay=0.9999,
        ema_rule="improved_gan", data_order="per_epoch"),
        notes="Salimans et al. 2016 MNIST (train_mnist_feature_matching.py): sigmoid "
              "generator, pixels in [0, 1] (x/256, as their mnist.npz); mean squared "
              "feature matching; the unsupervised loss weighted 0.5 as in their code; "
              "their Adam (epsilon inside the root); weight-norm init on 500 training "
              "images; lr 3e-3 without decay; test error of the weight average (decay "
              "0.9999, from zeros, one step behind D's update, as their Theano updates). "
              "generator_activation='softplus' (Sleepychord/ImprovedGAN-pytorch) is "
              "an option.",
        deviations=()),
    Preset(
        _source("svhn_improved_gan", architecture="svhn_improved_gan",
                dataset="svhn", labels=1000, batch_size=100,
                epochs=900, steps_per_epoch=DATASETS["svhn"].train_size // 100,
                noise="uniform",
                fake_class="zero", generator_loss="feature_matching_l1",
                unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
                adam_epsilon=1e-8, init_images=500, init_from="labeled",
                lr_schedule="linear_decay", lr_decay_start_epoch=600, ema_decay=0.9999,
                ema_rule="improved_gan", conv_padding="half", data_order="per_epoch",
                sample_mode="training"),
        notes="Salimans et al. 2016 SVHN (train_svhn_feature_matching.py): 900 epochs, "
              "lr linearly to 0 over the last 300 (min(3 - epoch/300, 1)); their Adam; "
              "weight-norm init on 500 labeled images; EMA evaluation; the unsupervised "
              "loss weighted 0.5 as in their code; convolutions padded as their Lasagne "
              "layers (Theano's border_mode='half').",
        deviations=()),
    Preset(
        _source("cifar10_improved_gan", architecture="cifar10_improved_gan",
                dataset="cifar10", labels=4000, batch_size=100,
                epochs=1200, steps_per_epoch=DATASETS["cifar10"].train_size // 100,
                noise="uniform",
                fake_class="zero", generator_loss="feature_matching_l1",
                unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
                adam_epsilon=1e-8, init_images=500, init_from="labeled",
                lr_schedule="linear_decay", lr_decay_start_epoch=800, ema_decay=0.9999,
                ema_rule="improved_gan", conv_padding="half", pixel_scale="256",
                data_order="per_epoch", sample_mode="training"),
        notes="Salimans et al. 2016 CIFAR-10 (train_cifar_feature_matching.py): the "
              "SVHN model at widths 96/192; 1,200 epochs, lr linearly to 0 over the "
              "last 400; their Adam; weight-norm init on 500 labeled images.",
        deviations=()),
    Preset(
        _source("svhn_lecouat", architecture="svhn_lecouat", dataset="svhn",
                labels=1000, batch_size=50, epochs=400,
                steps_per_epoch=DATASETS["svhn"].train_size // 50, noise="uniform",
                fake_class="zero",
                generator_loss="feature_matching_l1", unsupervised_weight=0.5,
                manifold="lecouat", manifold_weight=1e-3, manifold_epsilon=1e-5,
                g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8, lr_schedule="linear_decay",
                lr_decay_start_epoch=300, ema_decay=0.9999, data_order="per_epoch",
                generator_statistics="g_step", sample_mode="training",
                test_batches="reshuffled_full"),
        notes="Lecouat et al. 2018 SVHN (train_svhn.py, svhn_gan.py): Salimans' "
              "networks with a global max pool as the feature layer, weight norm "
              "without data-dependent init, G with biases and Keras-default batch "
              "norm; manifold regularization (lambda 1e-3, eps 1e-5); batch 50; 400 "
              "epochs, lr linearly down from epoch 300; TF's Adam; each epoch tested "
              "on int(26032 / 50) batches of a fresh reshuffle of the test set.",
        deviations=()),
    Preset(
        _source("cifar10_lecouat", architecture="cifar10_lecouat", dataset="cifar10",
                labels=4000, batch_size=25, epochs=1400,
                steps_per_epoch=DATASETS["cifar10"].train_size // 25, noise="uniform",
                fake_class="zero",
                generator_loss="feature_matching_l1", unsupervised_weight=0.5,
                manifold="lecouat", manifold_weight=1e-3, manifold_epsilon=1e-5,
                g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8, lr_schedule="linear_decay",
                lr_decay_start_epoch=1200, ema_decay=0.9999, data_order="per_epoch",
                generator_statistics="g_step", sample_mode="training"),
        notes="Lecouat et al. 2018 CIFAR-10 (train_cifar.py, cifar_gan.py): the SVHN "
              "model at widths 96/192; batch 25; 1,400 epochs, lr linearly down from "
              "epoch 1,200.",
        deviations=()),
]

PRESETS = {preset.name: preset for preset in _PRESETS}

# The package's one procedure for every preset (``--procedure=unified``): the
# fields that make a preset train its source's way, set to the shared choice.
UNIFIED_PROCEDURE = {
    "label_selection": "balanced", "unlabeled_pool": "all", "test_fraction": 1.0,
    "test_batches": "all",
    "label_batching": "separate", "data_order": "joined", "update_order": "sequential",
    "generator_fakes": "fresh", "adam_rule": "keras", "ema_rule": "tensorflow",
    "batch_norm_variance": "biased", "init_images": 0,
    "baseline_epochs": 0, "baseline_steps_per_epoch": 0, "baseline_data_order": "",
}
DEFAULT_PRESET_FOR_DATASET = {
    "mnist": "mnist_improved_gan",
    "svhn": "svhn_improved_gan",
    "cifar10": "cifar10_improved_gan",
}


def get_preset(name):
    """The :class:`Preset` called ``name``; :class:`~sgan_keras.config.ConfigError`
    lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise config_lib.ConfigError(f"--preset={name} is unknown; allowed: "
                                     f"{', '.join(sorted(PRESETS))}") from None


def resolve(overrides):
    """The configuration a command line asks for.

    ``overrides`` maps fields to values (:func:`config.overrides_from_flags`).
    They start from ``preset`` (default: ``dataset``'s in
    :data:`DEFAULT_PRESET_FOR_DATASET`, mnist's without either), take
    :data:`UNIFIED_PROCEDURE` with ``procedure="unified"``, and a
    ``supervised_only`` baseline the length of ``baseline_epochs`` and
    ``baseline_steps_per_epoch`` (the preset's own; GANs in Action: 120 steps)
    and the data order ``baseline_data_order`` unless ``epochs``,
    ``steps_per_epoch`` or ``data_order`` are given. Options that would
    change nothing are refused: the GAN's with ``supervised_only``, and each
    whose ``needs`` (``config.option``) the configuration does not meet,
    e.g. the manifold weight without a manifold regularization.
    """
    overrides = dict(overrides)
    dataset = overrides.get("dataset", "mnist")
    config_lib.check_dataset(dataset)
    name = overrides.pop("preset", None)
    if not name and choices_lib.is_custom(dataset):
        raise config_lib.ConfigError(
            f"--dataset={dataset} needs --preset, whose networks set the image shape: "
            + "; ".join(f"{shape[0]}x{shape[1]}x{shape[2]}: {', '.join(names)}"
                        for shape, names in _presets_by_shape().items()))
    name = name or DEFAULT_PRESET_FOR_DATASET[dataset]
    config = get_preset(name).config
    if overrides.get("procedure") == "unified":
        config = config.replace(**UNIFIED_PROCEDURE)
    if overrides.get("supervised_only"):
        refuse_gan_options(overrides, "--supervised_only", lambda option: "--" + option.flag)
        for field in ("epochs", "steps_per_epoch", "data_order"):
            if field in overrides and "baseline_" + field in overrides:   # the first won
                what = "data order" if field == "data_order" else "length"
                raise config_lib.ConfigError(f"--{field} and --baseline_{field} both set the "
                                             f"baseline's {what}; give one")
            baseline_value = overrides.get("baseline_" + field, config.value("baseline_" + field))
            overrides.setdefault(field, baseline_value or config.value(field))
    config = config.replace(**overrides)
    refuse_options_that_change_nothing(config, overrides, lambda option: option.label())
    return config


def refuse_options_that_change_nothing(config, fields, name):
    """Refuses each of ``fields`` whose ``needs`` (``config.option``) ``config``
    does not meet, e.g. the manifold weight without a manifold regularization;
    ``name`` spells an option as the caller took it (a flag, a field)."""
    for field in fields:
        option = config_lib.OPTIONS[field]
        if not option.acts_in(config):
            raise config_lib.ConfigError(f"{name(option)} changes nothing without "
                                         f"{option.needs[2]}; drop it")


def refuse_gan_options(fields, supervised_only, name):
    """Refuses the GAN's options (``gan_only``) among ``fields`` of a
    supervised-only configuration, which would change nothing; ``name``
    spells an option as the caller took it (a flag, a field)."""
    clashing = [name(config_lib.OPTIONS[field]) for field in fields
                if field in config_lib.OPTIONS and config_lib.OPTIONS[field].gan_only]
    if clashing:
        raise config_lib.ConfigError(f"{supervised_only} trains no generator; drop "
                                     f"{clashing[0]}")


def _presets_by_shape():
    shapes = {}
    for preset in _PRESETS:
        shape = choices_lib.NATIVE_IMAGE_SHAPES[preset.config.model.architecture]
        shapes.setdefault(shape, []).append(preset.name)
    return shapes


def defaults_of(config):
    """What ``config``'s preset gives before any other option: :func:`resolve` of
    its preset, dataset, procedure and ``supervised_only`` alone."""
    return resolve({"preset": config.preset, "dataset": config.data.dataset,
                    "procedure": config.procedure, "supervised_only": config.supervised_only})


def run_name(config):
    """A directory name that says the configuration, as google-research/fixmatch's:
    the dataset, preset and labels, ``supervised`` and ``unified`` when set, every
    option that differs from :func:`defaults_of` (e.g. ``lr0.001``,
    ``manifold_reg_lecouat``), then the seed. Run-only options are left out."""
    base = defaults_of(config)
    dataset = config.data.dataset
    if choices_lib.is_custom(dataset):   # folder:/data/pets -> folder-pets
        kind, source = dataset.split(":", 1)
        if kind == "folder":   # tfds:NAME/config keeps its NAME: config names repeat
            source = os.path.basename(source.rstrip("/")) or source
        dataset = f"{kind}-" + "".join(c if c.isalnum() or c in "-._" else "-" for c in source)
    parts = [dataset, config.preset, f"labels{config.data.labels}"]
    if config.supervised_only:
        parts.append("supervised")
    if config.procedure == "unified":
        parts.append("unified")
    for option in config_lib.OPTIONS.values():
        value = config.value(option.name)
        if option.in_run_name and value != base.value(option.name):
            parts.append(_name_part(option.flag or option.name, value))
    parts.append(f"seed{config.seed}")
    return "_".join(parts)


def _name_part(name, value):
    if isinstance(value, bool):
        return name if value else f"no{name}"
    if isinstance(value, float):
        # :g's 6 digits, unless they name another value (--ema=0.9999995 and
        # 0.9999999 were both "ema1": two runs, one directory).
        return f"{name}{value:g}" if float(f"{value:g}") == value else f"{name}{value!r}"
    if isinstance(value, int):
        return f"{name}{value}"
    if isinstance(value, tuple):
        return f"{name}{'_'.join(f'{item:g}' for item in value)}"
    # A TFDS split's slice (--train_split=train[:50%]) made a default
    # --output_dir that RunConfig refuses as a file pattern: its brackets
    # become parentheses, other pattern characters and a / a -.
    return f"{name}_{value.translate(_FILE_NAME_SAFE)}"


_FILE_NAME_SAFE = str.maketrans({"[": "(", "]": ")", "*": "-", "?": "-", "\\": "-", "/": "-"})


def procedure_markdown():
    """A Markdown table of each preset's training procedure (docs/presets.md)."""
    rows = ["| preset | labels | unlabeled pool | label batching | data order | update order | "
            "G's fakes | Adam | weight-norm init | length | lr schedule | weight average | "
            "baseline | --precision=auto |", "|---" * 14 + "|"]
    for preset in _PRESETS:
        data, training = preset.config.data, preset.config.training
        init = (f"{training.init_images} {training.init_from} images" if training.init_images
                else "first batch")
        if preset.config.model.architecture not in choices_lib.WEIGHT_NORM_DATA_INIT:
            init = "none"   # no weight norm, or Lecouat's without the data-dependent init
        schedule = {"constant": "constant",
                    "per_epoch_decay": f"x {training.lr_decay_rate:g} per epoch",
                    "linear_decay": f"linear to 0 from epoch {training.lr_decay_start_epoch}",
                    }[training.lr_schedule]
        baseline = (f"{training.baseline_epochs} x {training.baseline_steps_per_epoch} steps"
                    if training.baseline_epochs else "as the GAN")
        if training.baseline_data_order:
            baseline += f", {training.baseline_data_order}"
        order = training.data_order
        if order == "shuffle_buffer":
            order += f" {training.shuffle_buffer:,}"
        model = preset.config.model
        average = f"{model.ema_decay:g}, {model.ema_rule}" if model.ema_decay else "none"
        rows.append(
            f"| `{preset.name}` | {data.labels:,} {data.label_selection} | "
            f"{data.unlabeled_pool} | {training.label_batching} | {order} | "
            f"{training.update_order} | "
            f"{training.generator_fakes} | {training.adam_rule}, eps "
            f"{training.adam_epsilon:g} | {init} | {training.epochs} x "
            f"{training.steps_per_epoch} steps, batch {training.batch_size} | "
            f"{schedule} | {average} | {baseline} | {_auto_precision(model)} |")
    return "\n".join(rows)


def _auto_precision(model):
    if model.resolved_precision(bfloat16_units=True) == "mixed_bfloat16":
        return f"bfloat16 on bfloat16 matrix units ([checked](../{model.bfloat16_checked_in}))"
    return "float32"


def deviations_markdown():
    """A Markdown table of every preset's deviations from its source (docs/presets.md)."""
    rows = ["| preset | aspect | source | ours | option |", "|---|---|---|---|---|"]
    for preset in _PRESETS:
        for deviation in preset.deviations:
            rows.append(f"| `{preset.name}` | {deviation.aspect} | {deviation.source} | "
                        f"{deviation.ours} | {deviation.option} |")
    return "\n".join(rows)
