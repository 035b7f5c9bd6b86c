"""Hyperparameters of each reproduced source (``SPEC.md`` section 3).

A :class:`Preset` names an architecture (built by :mod:`sgan_keras.networks`)
and the defaults its source trains it with. ``SGAN.from_preset`` and the CLI
read them; every field can be overridden. Deviations from a source are
written in the preset's ``notes``.
"""

import dataclasses
import typing

import keras

from sgan_keras import optimizers as optimizers_lib


class Deviation(typing.NamedTuple):
    """Where a preset's default differs from its source's code."""

    aspect: str
    source: str    # what the source does, and where (file, function or line)
    ours: str      # what the preset does instead
    option: str    # the flag that restores the source, or why there is none


@dataclasses.dataclass(frozen=True)
class Preset:
    """One source's architecture and training defaults."""

    name: str
    architecture: str
    dataset: str
    image_shape: tuple
    labels: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    pixel_range: tuple = (-1.0, 1.0)
    latent_dim: int = 100
    noise: str = "normal"            # "normal" or "uniform" (U(0, 1))
    noise_stddev: float = 1.0
    fake_class: str = "zero"
    generator_loss: str = "feature_matching_l1"
    unsupervised_weight: float = 1.0
    label_smoothing: float = 0.0
    manifold: str = "none"           # "none", "lecouat" or "blog"
    manifold_weight: float = 1e-3
    manifold_epsilon: float = 1e-5
    g_lr: float = 2e-4
    d_lr_ratio: float = 1.0          # D learning rate = ratio x G learning rate
    g_beta_1: float = 0.5
    d_beta_1: float = 0.5
    adam_epsilon: float = 1e-7       # Keras' default; TF1 sources and improved-gan: 1e-8
    adam_rule: str = "keras"         # "keras" (also TF1's) or "improved_gan" (optimizers.py)
    init_images: int = 0             # weight-norm init batch; 0 = the first training batch
    init_from: str = "unlabeled"     # ... drawn from the "unlabeled" (all) or "labeled" images
    lr_schedule: str = "constant"    # "constant", "per_epoch_decay", "linear_decay"
    lr_decay_rate: float = 1.0       # per-epoch factor for "per_epoch_decay"
    lr_decay_start_epoch: int = 0    # first epoch of the linear ramp to 0
    ema_decay: float = 0.0           # 0 disables the EMA of D's weights
    generator_activation: str = ""   # G's output; "" = the source's (networks.py)
    # The training procedure (model.SGAN.train_step, data.py).
    label_selection: str = "balanced"   # "balanced" draw, or the "first" N images
    label_batching: str = "separate"    # a "separate" labeled batch, or "masked" in one batch
    update_order: str = "sequential"    # "sequential", "simultaneous" or "split"
    generator_fakes: str = "fresh"      # G's update on "fresh" fakes or the D step's ("reused")
    baseline_epochs: int = 0            # the supervised-only baseline's length; 0 = the GAN's
    baseline_steps_per_epoch: int = 0
    notes: str = ""
    deviations: tuple = ()   # Deviation rows: where the default differs from the source

    @property
    def d_lr(self):
        return self.g_lr * self.d_lr_ratio

    def replace(self, **overrides):
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown preset field(s) {unknown}; allowed: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)

    def learning_rate(self, base_lr):
        """A Keras schedule (or float) for ``base_lr`` under ``lr_schedule``."""
        if self.lr_schedule == "constant":
            return base_lr
        if self.lr_schedule == "per_epoch_decay":
            # Udacity SVHN notebook: lr x 0.9 after every epoch.
            return keras.optimizers.schedules.ExponentialDecay(
                base_lr, decay_steps=self.steps_per_epoch,
                decay_rate=self.lr_decay_rate, staircase=True)
        if self.lr_schedule == "linear_decay":
            return LinearDecay(base_lr,
                               start_step=self.lr_decay_start_epoch * self.steps_per_epoch,
                               end_step=self.epochs * self.steps_per_epoch)
        raise ValueError("lr_schedule must be 'constant', 'per_epoch_decay' or "
                         f"'linear_decay', got {self.lr_schedule!r}")

    def optimizers(self):
        """(d_optimizer, g_optimizer): Adam with this source's rule and settings."""
        return tuple(optimizers_lib.adam(self.adam_rule, self.learning_rate(lr), beta_1,
                                         self.adam_epsilon)
                     for lr, beta_1 in ((self.d_lr, self.d_beta_1), (self.g_lr, self.g_beta_1)))


@keras.saving.register_keras_serializable(package="sgan_keras")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant, then linear to 0 between ``start_step`` and ``end_step``.

    Salimans et al.'s code scales the rate by ``min(3 - epoch/400, 1)``
    (a ramp to 0 over the last third of 1,200 epochs); here the ramp's
    start is a preset field.
    """

    def __init__(self, initial_learning_rate, start_step, end_step):
        self.initial_learning_rate = initial_learning_rate
        self.start_step = start_step
        self.end_step = end_step

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        span = max(self.end_step - self.start_step, 1)
        fraction = keras.ops.clip((self.end_step - step) / span, 0.0, 1.0)
        return self.initial_learning_rate * fraction

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "start_step": self.start_step, "end_step": self.end_step}


# Sources, as cited in the deviation rows below.
_BLOG = "jostosh/gan dcganmnist/mnist_ssl.py"
_UDACITY = "udacity/deep-learning semi-supervised/semi-supervised_learning_2_solution.ipynb"
_GIA = "GANs-in-Action/gans-in-action chapter-7/Chapter_7_SGAN.ipynb"
_IMPROVED_GAN = "openai/improved-gan mnist_svhn_cifar10/"
_LECOUAT = "bruno-31/GAN-manifold-regularization"

_EMA_FROM_ZERO = Deviation(
    "weight average's start", _IMPROVED_GAN + "train_*_feature_matching.py "
    "(disc_param_avg = 0.*p.get_value())", "the initial weights, as TF's "
    "ExponentialMovingAverage and Lecouat et al. (the start's weight is 0.9999^t: "
    "0.25% after 60,000 steps)", "none")


_PRESETS = [
    Preset(
        name="mnist_blog", architecture="mnist_blog", dataset="mnist",
        image_shape=(28, 28, 1), labels=4000, batch_size=32, epochs=100,
        steps_per_epoch=50000 // 32, noise="normal", noise_stddev=0.01,
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, manifold="none", g_lr=2e-4, d_lr_ratio=0.25,
        g_beta_1=0.5, d_beta_1=0.9, adam_epsilon=1e-8, generator_fakes="reused",
        notes="MNIST blog post: D lr = 0.25 x G lr (the final code; the text says 0.1) "
              "with Adam's default betas for D; manifold regularization off by "
              "default, --manifold_reg=blog turns on the blog's form. One G forward "
              "pass per step: G's update re-uses the D step's fakes.",
        deviations=(
            Deviation("data order", _BLOG + " prepare_input_pipeline (one shuffled copy "
                      "read through .shuffle(4000))", "a seeded reshuffle of the whole "
                      "set every epoch (exact resume)", "none"),
        )),
    Preset(
        name="svhn_dcgan", architecture="svhn_dcgan", dataset="svhn",
        image_shape=(32, 32, 3), labels=1000, batch_size=128, epochs=25,
        steps_per_epoch=73257 // 128, noise="normal", noise_stddev=1.0,
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=1.0, g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8,
        lr_schedule="per_epoch_decay", lr_decay_rate=0.9, label_selection="first",
        label_batching="masked", update_order="simultaneous",
        notes="Udacity SVHN notebook: one batch of the training set per step, labels "
              "masked to the first 1,000 images; D's and G's losses from one forward "
              "pass, both updates together; lr x 0.9 after every epoch.",
        deviations=(
            Deviation("dropout", _UDACITY + " discriminator (tf.layers.dropout without "
                      "training=, so it never drops)", "dropout drops while training",
                      "none (a bug, not copied)"),
            Deviation("batch norm at test time", _UDACITY + " (is_training stays True "
                      "when testing)", "inference mode (moving statistics)",
                      "none (a bug, not copied)"),
            Deviation("unused layer", _UDACITY + " discriminator (a stride-2 conv after "
                      "the fifth whose output is never used)", "left out", "none"),
            Deviation("test set", _UDACITY + " (half of the test split)",
                      "the whole test split", "none"),
        )),
    Preset(
        name="mnist_gans_in_action", architecture="mnist_gans_in_action",
        dataset="mnist", image_shape=(28, 28, 1), labels=100, batch_size=32,
        epochs=8, steps_per_epoch=1000, noise="normal", noise_stddev=1.0,
        fake_class="zero", generator_loss="non_saturating",
        unsupervised_weight=1.0, g_lr=1e-3, d_lr_ratio=1.0, g_beta_1=0.9,
        d_beta_1=0.9, label_selection="first", update_order="split",
        baseline_epochs=30, baseline_steps_per_epoch=4,
        notes="GANs in Action SGAN tutorial: 8,000 iterations as 8 epochs x 1,000 "
              "steps; Adam defaults. The first 100 training images are the labeled "
              "set. Each iteration takes three D updates (labeled; real; fake, made "
              "by G in inference mode) with two Adam optimizers on one trunk, then "
              "the G update. The baseline trains the same D for 120 steps.",
        deviations=(
            Deviation("sampling", _GIA + " Dataset.batch_labeled/batch_unlabeled "
                      "(np.random.randint: with replacement)", "seeded permutations, "
                      "without replacement within an epoch", "none"),
            Deviation("unlabeled pool", _GIA + " Dataset.batch_unlabeled (images "
                      "100..59,999)", "all 60,000 training images", "none"),
            Deviation("D's unsupervised loss", _GIA + " (Keras 2 binary cross-entropy "
                      "of the clipped probability 1 - 1/(sum exp + 1))",
                      "the same loss in log space, unclipped", "none (numerics)"),
            Deviation("generator", _GIA + " build_generator (an extra convT(64,3,1) BN "
                      "LReLU; the book's text has none)", "left out, as the book's text",
                      "none"),
            Deviation("baseline batches", _GIA + " (fit(batch_size=32, epochs=30) on "
                      "100 images: batches of 32, 32, 32, 4)", "120 batches of 32 from "
                      "the tiled labeled set", "none"),
            Deviation("which first 100", _GIA + " (Keras' mnist.npz order)", "the first "
                      "100 of the given copy; a copy in another order gives other labels",
                      "--data_dir holding Keras' own mnist.npz"),
        )),
    Preset(
        name="mnist_improved_gan", architecture="mnist_improved_gan",
        dataset="mnist", image_shape=(28, 28, 1), labels=100, batch_size=100,
        epochs=300, steps_per_epoch=600, pixel_range=(0.0, 1.0),
        noise="uniform", fake_class="zero", generator_loss="feature_matching_l2",
        unsupervised_weight=0.5, g_lr=3e-3, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="unlabeled", ema_decay=0.9999,
        notes="Salimans et al. 2016 MNIST (train_mnist_feature_matching.py): sigmoid "
              "generator, pixels in [0, 1]; mean squared feature matching; the "
              "unsupervised loss weighted 0.5 as in their code; their Adam (epsilon "
              "inside the root); weight-norm init on 500 training images; lr 3e-3 "
              "without decay; test error of the weight average (decay 0.9999). "
              "generator_activation='softplus' (Sleepychord/ImprovedGAN-pytorch) is "
              "an option.",
        deviations=(
            _EMA_FROM_ZERO,
            Deviation("pixel scale", _IMPROVED_GAN + " (mnist.npz of floats, x/256)",
                      "x/255", "none"),
        )),
    Preset(
        name="svhn_improved_gan", architecture="svhn_improved_gan",
        dataset="svhn", image_shape=(32, 32, 3), labels=1000, batch_size=100,
        epochs=900, steps_per_epoch=73257 // 100, noise="uniform",
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="labeled",
        lr_schedule="linear_decay", lr_decay_start_epoch=600, ema_decay=0.9999,
        notes="Salimans et al. 2016 SVHN (train_svhn_feature_matching.py): 900 epochs, "
              "lr linearly to 0 over the last 300 (min(3 - epoch/300, 1)); their Adam; "
              "weight-norm init on 500 labeled images; EMA evaluation; the unsupervised "
              "loss weighted 0.5 as in their code.",
        deviations=(_EMA_FROM_ZERO,)),
    Preset(
        name="cifar10_improved_gan", architecture="cifar10_improved_gan",
        dataset="cifar10", image_shape=(32, 32, 3), labels=4000, batch_size=100,
        epochs=1200, steps_per_epoch=50000 // 100, noise="uniform",
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="labeled",
        lr_schedule="linear_decay", lr_decay_start_epoch=800, ema_decay=0.9999,
        notes="Salimans et al. 2016 CIFAR-10 (train_cifar_feature_matching.py): the "
              "SVHN model at widths 96/192; 1,200 epochs, lr linearly to 0 over the "
              "last 400; their Adam; weight-norm init on 500 labeled images.",
        deviations=(_EMA_FROM_ZERO,)),
    Preset(
        name="svhn_lecouat", architecture="svhn_lecouat", dataset="svhn",
        image_shape=(32, 32, 3), labels=1000, batch_size=50, epochs=400,
        steps_per_epoch=73257 // 50, noise="uniform", fake_class="zero",
        generator_loss="feature_matching_l1", unsupervised_weight=0.5,
        manifold="lecouat", manifold_weight=1e-3, manifold_epsilon=1e-5,
        g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8, lr_schedule="linear_decay",
        lr_decay_start_epoch=300, ema_decay=0.9999,
        notes="Lecouat et al. 2018 SVHN (train_svhn.py, svhn_gan.py): Salimans' "
              "networks with a global max pool as the feature layer, weight norm "
              "without data-dependent init, G with biases and Keras-default batch "
              "norm; manifold regularization (lambda 1e-3, eps 1e-5); batch 50; 400 "
              "epochs, lr linearly down from epoch 300; TF's Adam.",
        deviations=(
            Deviation("test batches", _LECOUAT + " train_svhn.py (int(26032/50) "
                      "batches: 32 test images left out each epoch)", "every test image",
                      "none"),
        )),
    Preset(
        name="cifar10_lecouat", architecture="cifar10_lecouat", dataset="cifar10",
        image_shape=(32, 32, 3), labels=4000, batch_size=25, epochs=1400,
        steps_per_epoch=50000 // 25, noise="uniform", fake_class="zero",
        generator_loss="feature_matching_l1", unsupervised_weight=0.5,
        manifold="lecouat", manifold_weight=1e-3, manifold_epsilon=1e-5,
        g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8, lr_schedule="linear_decay",
        lr_decay_start_epoch=1200, ema_decay=0.9999,
        notes="Lecouat et al. 2018 CIFAR-10 (train_cifar.py, cifar_gan.py): the SVHN "
              "model at widths 96/192; batch 25; 1,400 epochs, lr linearly down from "
              "epoch 1,200.",
        deviations=()),
]

PRESETS = {preset.name: preset for preset in _PRESETS}

# The package's one procedure for every preset (``--procedure=unified``): the
# fields that make a preset train its source's way, set to the shared choice.
UNIFIED_PROCEDURE = {
    "label_selection": "balanced", "label_batching": "separate",
    "update_order": "sequential", "generator_fakes": "fresh", "adam_rule": "keras",
    "init_images": 0, "baseline_epochs": 0, "baseline_steps_per_epoch": 0,
}
DEFAULT_PRESET_FOR_DATASET = {
    "mnist": "mnist_improved_gan",
    "svhn": "svhn_improved_gan",
    "cifar10": "cifar10_improved_gan",
}


def procedure_markdown():
    """A Markdown table of each preset's training procedure (docs/presets.md)."""
    rows = ["| preset | labels | label batching | update order | G's fakes | Adam | "
            "weight-norm init | length | lr schedule | baseline |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for preset in _PRESETS:
        init = (f"{preset.init_images} {preset.init_from} images" if preset.init_images
                else "first batch")
        schedule = {"constant": "constant",
                    "per_epoch_decay": f"x {preset.lr_decay_rate:g} per epoch",
                    "linear_decay": f"linear to 0 from epoch {preset.lr_decay_start_epoch}",
                    }[preset.lr_schedule]
        baseline = (f"{preset.baseline_epochs} x {preset.baseline_steps_per_epoch} steps"
                    if preset.baseline_epochs else "as the GAN")
        rows.append(
            f"| `{preset.name}` | {preset.labels:,} {preset.label_selection} | "
            f"{preset.label_batching} | {preset.update_order} | {preset.generator_fakes} | "
            f"{preset.adam_rule}, eps {preset.adam_epsilon:g} | {init} | "
            f"{preset.epochs} x {preset.steps_per_epoch} steps, batch {preset.batch_size} | "
            f"{schedule} | {baseline} |")
    return "\n".join(rows)


def deviations_markdown():
    """A Markdown table of every preset's deviations from its source (docs/presets.md)."""
    rows = ["| preset | aspect | source | ours | option |", "|---|---|---|---|---|"]
    for preset in _PRESETS:
        for deviation in preset.deviations:
            rows.append(f"| `{preset.name}` | {deviation.aspect} | {deviation.source} | "
                        f"{deviation.ours} | {deviation.option} |")
    return "\n".join(rows)


def get_preset(name):
    """The :class:`Preset` called ``name``; ``ValueError`` lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}") from None
