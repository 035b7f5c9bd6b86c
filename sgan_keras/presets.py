"""Hyperparameters of each reproduced source (``SPEC.md`` section 3).

A :class:`Preset` names an architecture (built by :mod:`sgan_keras.networks`)
and the defaults its source trains it with. ``SGAN.from_preset`` and the CLI
read them; every field can be overridden. Deviations from a source are
written in the preset's ``notes``.
"""

import dataclasses

import keras

from sgan_keras import optimizers as optimizers_lib


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
    notes: str = ""

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


_PRESETS = [
    Preset(
        name="mnist_blog", architecture="mnist_blog", dataset="mnist",
        image_shape=(28, 28, 1), labels=4000, batch_size=32, epochs=100,
        steps_per_epoch=50000 // 32, noise="normal", noise_stddev=0.01,
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, manifold="none", g_lr=2e-4, d_lr_ratio=0.25,
        g_beta_1=0.5, d_beta_1=0.9, adam_epsilon=1e-8,
        notes="MNIST blog post: D lr = 0.25 x G lr (the final code; the text says 0.1) "
              "with Adam's default betas for D; manifold regularization off by "
              "default, --manifold_reg=blog turns on the blog's form."),
    Preset(
        name="svhn_dcgan", architecture="svhn_dcgan", dataset="svhn",
        image_shape=(32, 32, 3), labels=1000, batch_size=128, epochs=25,
        steps_per_epoch=73257 // 128, noise="normal", noise_stddev=1.0,
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=1.0, g_lr=3e-4, d_lr_ratio=1.0, adam_epsilon=1e-8,
        lr_schedule="per_epoch_decay", lr_decay_rate=0.9,
        notes="Udacity SVHN notebook: labels drawn class-balanced with a seed "
              "(the notebook takes the first 1,000 images) and evaluated on the "
              "whole test split (the notebook uses half); the unused stride-2 conv "
              "is left out."),
    Preset(
        name="mnist_gans_in_action", architecture="mnist_gans_in_action",
        dataset="mnist", image_shape=(28, 28, 1), labels=100, batch_size=32,
        epochs=8, steps_per_epoch=1000, noise="normal", noise_stddev=1.0,
        fake_class="zero", generator_loss="non_saturating",
        unsupervised_weight=1.0, g_lr=1e-3, d_lr_ratio=1.0, g_beta_1=0.9,
        d_beta_1=0.9,
        notes="GANs in Action SGAN tutorial: 8,000 iterations as 8 epochs x 1,000 "
              "steps; Adam defaults. The tutorial's supervised and unsupervised Keras "
              "models share one trunk (softmax head, and Z / (Z + 1) head) and take "
              "three separate optimizer steps per iteration (labeled, real, fake); here "
              "they are one D with the `zero` fake logit and one step on the summed loss."),
    Preset(
        name="mnist_improved_gan", architecture="mnist_improved_gan",
        dataset="mnist", image_shape=(28, 28, 1), labels=100, batch_size=100,
        epochs=300, steps_per_epoch=600, pixel_range=(0.0, 1.0),
        noise="uniform", fake_class="zero", generator_loss="feature_matching_l2",
        unsupervised_weight=0.5, g_lr=3e-3, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="unlabeled", ema_decay=0.9999,
        notes="Salimans et al. 2016 MNIST: sigmoid generator, pixels in [0, 1]; "
              "mean squared feature matching; the unsupervised loss weighted 0.5 as in "
              "their code (0.5 * (softplus(-l_unl) + softplus(l_gen))); test error of "
              "the weight average (decay 0.9999), which their code starts at zero and "
              "this package at the initial weights. Adam epsilon 1e-4: their "
              "nn.adam_updates divides by sqrt(v_hat + 1e-8). lr 3e-3 as SPEC and "
              "mnist_svhn_cifar10/train_mnist_feature_matching.py. With the source's "
              "sigmoid output G collapses here within an epoch; generator_activation="
              "'softplus' (Sleepychord/ImprovedGAN-pytorch's fix) trains, and the "
              "experiment uses it (experiments/definitions.py)."),
    Preset(
        name="svhn_improved_gan", architecture="svhn_improved_gan",
        dataset="svhn", image_shape=(32, 32, 3), labels=1000, batch_size=100,
        epochs=400, steps_per_epoch=73257 // 100, noise="uniform",
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="labeled",
        lr_schedule="linear_decay", lr_decay_start_epoch=300, ema_decay=0.9999,
        notes="Salimans et al. 2016 / Lecouat et al. 2018 SVHN: EMA evaluation; "
              "--manifold_reg=lecouat adds the manifold term (Lecouat use batch 50); "
              "the unsupervised loss weighted 0.5 as in their code. SPEC gives no "
              "epoch count: 400, the linear decay over the last 100."),
    Preset(
        name="cifar10_improved_gan", architecture="cifar10_improved_gan",
        dataset="cifar10", image_shape=(32, 32, 3), labels=4000, batch_size=100,
        epochs=1200, steps_per_epoch=50000 // 100, noise="uniform",
        fake_class="zero", generator_loss="feature_matching_l1",
        unsupervised_weight=0.5, g_lr=3e-4, d_lr_ratio=1.0, adam_rule="improved_gan",
        adam_epsilon=1e-8, init_images=500, init_from="labeled",
        lr_schedule="linear_decay", lr_decay_start_epoch=800, ema_decay=0.9999,
        notes="Salimans et al. 2016 CIFAR-10: the SVHN model at widths 96/192; "
              "linear decay over the last 400 of 1,200 epochs as in their code."),
]

PRESETS = {preset.name: preset for preset in _PRESETS}
DEFAULT_PRESET_FOR_DATASET = {
    "mnist": "mnist_improved_gan",
    "svhn": "svhn_improved_gan",
    "cifar10": "cifar10_improved_gan",
}


def get_preset(name):
    """The :class:`Preset` called ``name``; ``ValueError`` lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}") from None
