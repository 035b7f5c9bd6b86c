"""The optimizers of the reproduced sources: Adam's update rules and the learning-rate schedules.

TF1's ``tf.train.AdamOptimizer`` (the MNIST blog, the Udacity notebook) and
Keras 2's ``Adam`` (GANs in Action) update as Keras 3's ``keras.optimizers.Adam``
does, ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``; they
differ only in ``epsilon`` (1e-8 in TF1, 1e-7 in Keras), a preset's ``adam_epsilon``.

openai/improved-gan (Salimans et al. 2016) has its own rule,
``mnist_svhn_cifar10/nn.py`` ``adam_updates``::

    m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)
    p -= lr * m_hat / sqrt(v_hat + 1e-8)

with epsilon *inside* the square root and added to the bias-corrected
``v_hat``. Keras' form adds its epsilon outside the root and to the
*uncorrected* ``sqrt(v)``, so early in training (``t`` small) its epsilon
acts ``1 / sqrt(1 - b2^t)`` times larger (31x at the first step): no choice
of Keras' epsilon reproduces the source. :class:`ImprovedGANAdam` does.

The two Adam classes here update each variable in one pass over its arrays
(parameter, gradient, two moments) instead of Keras' dozen elementwise ops,
each a pass through memory: :class:`FusedAdam` runs TensorFlow's own Adam kernel
(``ResourceApplyAdam``, the op TF1's ``AdamOptimizer`` runs),
:class:`ImprovedGANAdam` its rule compiled by XLA with the moments and the
parameter updated in place. Adam is memory-bound, so this is a step-time
matter for the presets with millions of parameters and little arithmetic
per parameter (the Improved-GAN MNIST MLP, GANs in Action):
``experiments/results/benchmark_fused_adam.md``.
"""

import keras
import tensorflow as tf
from keras import ops

from sgan_keras.choices import ADAM_RULES
from sgan_keras.choices import LR_SCHEDULES


def for_training(training):
    """``(d_optimizer, g_optimizer)`` of a ``config.TrainingConfig``: Adam with its
    rule, epsilon, betas and learning rates under its schedule."""
    return tuple(adam(training.adam_rule, learning_rate(training, lr), beta_1,
                      training.adam_epsilon)
                 for lr, beta_1 in ((training.d_lr, training.d_beta_1),
                                    (training.g_lr, training.g_beta_1)))


def learning_rate(training, base_lr):
    """A Keras schedule (or a float) for ``base_lr`` under ``training.lr_schedule``."""
    if training.lr_schedule == "constant":
        return base_lr
    if training.lr_schedule == "per_epoch_decay":
        # The Udacity SVHN notebook: lr x 0.9 after every epoch.
        return keras.optimizers.schedules.ExponentialDecay(
            base_lr, decay_steps=training.steps_per_epoch,
            decay_rate=training.lr_decay_rate, staircase=True)
    if training.lr_schedule == "linear_decay":
        return LinearDecay(base_lr,
                           start_step=training.lr_decay_start_epoch * training.steps_per_epoch,
                           end_step=training.epochs * training.steps_per_epoch,
                           steps_per_epoch=training.steps_per_epoch)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {training.lr_schedule!r}")


@keras.saving.register_keras_serializable(package="sgan_keras")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant, then linear to 0 between ``start_step`` and ``end_step``,
    set once an epoch.

    Salimans et al.'s code sets the rate at the start of each epoch ``e``
    (from 0) to ``lr * min(3 - e/400, 1)`` (a ramp to 0 over the last third
    of 1,200 epochs, openai/improved-gan ``train_cifar_feature_matching.py``);
    Lecouat et al.'s ``linear_decay(decay_start, decay_end, epoch)`` is the
    same ramp. Here the ramp's start is ``lr_decay_start_epoch``, and the
    rate holds for ``steps_per_epoch`` steps (1: a new rate every step).
    """

    def __init__(self, initial_learning_rate, start_step, end_step, steps_per_epoch=1):
        self.initial_learning_rate = initial_learning_rate
        self.start_step = start_step
        self.end_step = end_step
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch_start = keras.ops.floor_divide(step, self.steps_per_epoch) * self.steps_per_epoch
        epoch_start = keras.ops.cast(epoch_start, "float32")
        span = max(self.end_step - self.start_step, 1)
        fraction = keras.ops.clip((self.end_step - epoch_start) / span, 0.0, 1.0)
        return self.initial_learning_rate * fraction

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "start_step": self.start_step, "end_step": self.end_step,
                "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="sgan_keras")
class PerTrainingStep(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` read at the training step of an optimizer that updates
    ``updates_per_step`` times a training step.

    A schedule is a function of its optimizer's own update count. The split
    order's copied D optimizer updates twice a step (real, then fake: GANs in
    Action's second compiled model), so its schedule, read directly, would
    run twice as fast as the other optimizers'. Adam's bias correction still
    counts every update, as the book's Keras ``Adam`` does.
    """

    def __init__(self, schedule, updates_per_step):
        if int(updates_per_step) < 1:
            raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
        self.schedule = schedule
        self.updates_per_step = int(updates_per_step)

    def __call__(self, step):
        return self.schedule(keras.ops.floor_divide(step, self.updates_per_step))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "updates_per_step": self.updates_per_step}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]),
                   config["updates_per_step"])


def copy_for_updates_per_step(optimizer, updates_per_step):
    """A fresh optimizer with ``optimizer``'s configuration whose learning-rate
    schedule (if any) follows training steps while it updates
    ``updates_per_step`` times a step (:class:`PerTrainingStep`)."""
    config = optimizer.get_config()
    if isinstance(config["learning_rate"], dict):   # a serialized schedule
        schedule = keras.optimizers.schedules.deserialize(config["learning_rate"])
        config["learning_rate"] = PerTrainingStep(schedule, updates_per_step)
    return optimizer.__class__.from_config(config)


class _ScalarsOncePerApply:
    """Mixin: the scalars every variable's update shares (the step, the
    learning rate, the betas and their powers) made once per ``apply`` for
    each dtype and device, not once per variable as ``update_step`` would.

    The values are the same; the traced step has fewer ops (GANs in Action's
    2,503 became 1,975), and GANs in Action's and SVHN DCGAN's steps, traced
    by every run and test, trace in about a fifth less time
    (docs/performance.md). Keras' ``apply``
    calls ``update_step`` for each variable (under ``tf.distribute``, once
    for each variable's copy on each device, in one merge call) and counts
    the step after the last one, so the scalars hold for the whole call.
    """

    def apply(self, grads, trainable_variables=None):
        self._scalars_of_this_apply = _Scalars()
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._scalars_of_this_apply = None

    def shared_scalars(self, variable, learning_rate):
        """``{name: tensor}`` of ``step_scalars`` for ``variable``'s dtype and device."""
        scalars = getattr(self, "_scalars_of_this_apply", None)
        if scalars is None:    # update_step called outside apply
            return self.step_scalars(variable.dtype, learning_rate)
        key = (variable.dtype, _tf_variable(variable).device)
        if key not in scalars.by_key:
            scalars.by_key[key] = self.step_scalars(variable.dtype, learning_rate)
        return scalars.by_key[key]


class _Scalars:
    """A plain holder (a dict attribute would be wrapped by Keras' tracker)."""

    def __init__(self):
        self.by_key = {}


@keras.saving.register_keras_serializable(package="sgan_keras")
class FusedAdam(_ScalarsOncePerApply, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (``amsgrad=False``) computed by TensorFlow's fused
    ``ResourceApplyAdam`` kernel: the same rule, ``alpha = lr * sqrt(1 - b2^t) /
    (1 - b1^t)``, ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``p -= alpha * m / (sqrt(v) + eps)``, in one pass over the arrays."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("FusedAdam has no amsgrad; use keras.optimizers.Adam")

    def step_scalars(self, dtype, learning_rate):
        """``ResourceApplyAdam``'s scalar inputs at this step, in ``dtype``."""
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        return {"beta1_power": ops.power(beta_1, step), "beta2_power": ops.power(beta_2, step),
                "lr": ops.cast(learning_rate, dtype), "beta1": beta_1, "beta2": beta_2,
                "epsilon": ops.cast(self.epsilon, dtype)}

    def update_step(self, gradient, variable, learning_rate):
        slot = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[slot]),
            v=_handle(self._velocities[slot]), grad=ops.cast(gradient, variable.dtype),
            **self.shared_scalars(variable, learning_rate))


def _tf_variable(variable):
    """The TensorFlow variable of a Keras one (Keras passes ``update_step`` the
    model's variable as a TensorFlow one already, and the slots as Keras ones)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _handle(variable):
    """The resource handle of a variable (under ``tf.distribute``'s update
    call: this device's copy)."""
    return _tf_variable(variable).handle


@tf.function(jit_compile=True, autograph=False)   # no control flow to convert
def _improved_gan_adam_update(variable, m, v, gradient, lr, beta_1, beta_2, epsilon, step):
    """openai/improved-gan's Adam on one variable, compiled by XLA into one
    pass that updates ``m``, ``v`` and the variable in place.

    XLA compiles it once per variable shape, at a process's first step: the
    first update of the Improved-GAN MNIST model's 20 variables took about
    2.5 s instead of 0.8 s on 2 AVX2 cores, paid once a run."""
    m.assign(beta_1 * m + (1.0 - beta_1) * gradient)
    v.assign(beta_2 * v + (1.0 - beta_2) * tf.square(gradient))
    m_hat = m / (1.0 - tf.pow(beta_1, step))
    v_hat = v / (1.0 - tf.pow(beta_2, step))
    variable.assign_sub(lr * m_hat / tf.sqrt(v_hat + epsilon))


@keras.saving.register_keras_serializable(package="sgan_keras")
class ImprovedGANAdam(_ScalarsOncePerApply, keras.optimizers.Optimizer):
    """Adam as openai/improved-gan's ``nn.adam_updates``: ``p -= lr * m_hat / sqrt(v_hat + eps)``.

    Args:
      learning_rate: float or ``LearningRateSchedule``.
      beta_1, beta_2: the moment decays (the source's ``mom1``, ``mom2``).
      epsilon: added to the bias-corrected second moment inside the root
        (1e-8 in the source).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 name="improved_gan_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.velocities = self.add_optimizer_variables(variables, "velocity")

    def step_scalars(self, dtype, learning_rate):
        """The update's scalar inputs at this step, in ``dtype``."""
        return {"lr": ops.cast(learning_rate, dtype), "beta_1": ops.cast(self.beta_1, dtype),
                "beta_2": ops.cast(self.beta_2, dtype), "epsilon": ops.cast(self.epsilon, dtype),
                "step": ops.cast(self.iterations + 1, dtype)}

    def update_step(self, gradient, variable, learning_rate):
        # The slot lookup every Keras 3 optimizer uses (keras.optimizers.Adam too);
        # tests/test_optimizers.py fails if it changes.
        slot = self._get_variable_index(variable)
        _improved_gan_adam_update(
            _tf_variable(variable), _tf_variable(self.momentums[slot]),
            _tf_variable(self.velocities[slot]), ops.cast(gradient, variable.dtype),
            **self.shared_scalars(variable, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


def adam(rule, learning_rate, beta_1, epsilon):
    """An Adam optimizer with ``rule`` ``keras`` (Keras/TF1 form) or ``improved_gan``."""
    if rule == "keras":
        return FusedAdam(learning_rate, beta_1=beta_1, epsilon=epsilon)
    if rule == "improved_gan":
        return ImprovedGANAdam(learning_rate, beta_1=beta_1, epsilon=epsilon)
    raise ValueError(f"adam_rule must be one of {ADAM_RULES}, got {rule!r}")
