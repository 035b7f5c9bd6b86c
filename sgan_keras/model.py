"""The semi-supervised GAN as a subclassed ``keras.Model``.

The model owns a ``generator`` and a ``discriminator`` and is compiled with
``compile(d_optimizer=..., g_optimizer=...)``, as in the keras-io GAN
examples. Each ``train_step`` is one discriminator update followed by one
generator update that sees the updated discriminator and a second unlabeled
batch (Salimans et al. 2016; ``SPEC.md`` section 1).

The trained model is a classifier: calling it, ``predict()`` and
``evaluate()`` use the discriminator's K class logits (its exponential moving
average, when ``ema_decay > 0``).

Training batches are dicts from ``SemiSupervisedData.train_dataset``:
``labeled_images``, ``labels``, ``unlabeled_images`` (D step) and
``generator_images`` (G step). In ``supervised_only`` mode an ``(images,
labels)`` tuple is enough.

Randomness of the noise ``z`` is stateless: drawn from ``(seed, step)`` for the
whole global batch, each replica taking its slice. A run is therefore
reproducible, resumes exactly from a checkpoint (the step counter is the
optimizer's), and one step gives the same result on one device or several.
"""

import keras
import tensorflow as tf

from sgan_keras import layers as sgan_layers
from sgan_keras import losses
from sgan_keras import networks
from sgan_keras import presets as presets_lib

NOISE_DISTRIBUTIONS = ("normal", "uniform")

# Streams of the stateless noise: one per use within a step.
_DISCRIMINATOR_NOISE, _GENERATOR_NOISE, _MANIFOLD_NOISE = 0, 1, 2


class SGAN(keras.Model):
    """Semi-supervised GAN: a K-class classifier trained as the GAN's D.

    Args:
      generator: Keras model ``z [B, latent_dim] -> images`` (``None`` when
        ``supervised_only``).
      discriminator: Keras model ``images -> [logits, features]``; logits are
        ``[B, K]`` for ``fake_class="zero"``, ``[B, K+1]`` otherwise (see
        :func:`sgan_keras.losses.gan_logit`).
      num_classes: K.
      fake_class: ``zero`` | ``learned`` | ``separate``.
      generator_loss: ``feature_matching_l1`` | ``feature_matching_l2`` |
        ``non_saturating``.
      unsupervised_weight: weight of ``L_unsup`` in D's loss (0.5 in the MNIST
        blog, 1 in the Udacity notebook and Salimans et al.).
      label_smoothing: one-sided smoothing of the real target (SVHN write-up).
      manifold: ``none`` | ``lecouat`` | ``blog`` manifold regularization of D,
        with ``manifold_weight`` (lambda) and ``manifold_epsilon``.
      noise, noise_stddev: ``z ~ N(0, stddev)`` or ``U(0, 1)``.
      pixel_range: the range of real and generated pixels.
      ema_decay: decay of the exponential moving average of D's weights used
        for evaluation and export (0.9999 in the papers); 0 turns it off.
      supervised_only: train D on the labeled batch alone (the baseline).
      seed: seed of the noise ``z``.
    """

    def __init__(self, generator, discriminator, *, num_classes=10,
                 fake_class="zero", generator_loss="feature_matching_l1",
                 unsupervised_weight=1.0, label_smoothing=0.0, manifold="none",
                 manifold_weight=1e-3, manifold_epsilon=1e-5, noise="normal",
                 noise_stddev=1.0, pixel_range=(-1.0, 1.0), ema_decay=0.0,
                 supervised_only=False, seed=0, preset=None, **kwargs):
        super().__init__(**kwargs)
        _check_choice("fake_class", fake_class, losses.FAKE_CLASSES)
        _check_choice("generator_loss", generator_loss, losses.GENERATOR_LOSSES)
        _check_choice("manifold", manifold, losses.MANIFOLD_REGULARIZATIONS)
        _check_choice("noise", noise, NOISE_DISTRIBUTIONS)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if generator is None and not supervised_only:
            raise ValueError("generator is required unless supervised_only=True")
        self.precision = ("mixed_bfloat16" if any(
            layer.compute_dtype == "bfloat16" for layer in discriminator.layers) else "float32")
        if self.precision != "float32" and manifold != "none" and not supervised_only:
            raise ValueError("manifold regularization needs float32: its perturbation "
                             f"(epsilon {manifold_epsilon:g}) is below bfloat16's resolution")
        self.generator = generator
        self.discriminator = discriminator
        self.num_classes = num_classes
        self.fake_class = fake_class
        self.generator_loss_name = generator_loss
        self.unsupervised_weight = unsupervised_weight
        self.label_smoothing = label_smoothing
        self.manifold = manifold
        self.manifold_weight = manifold_weight
        self.manifold_epsilon = manifold_epsilon
        self.noise = noise
        self.noise_stddev = noise_stddev
        self.pixel_range = tuple(pixel_range)
        self.ema_decay = ema_decay
        self.supervised_only = supervised_only
        self.seed = int(seed)
        self.preset = preset
        self.latent_dim = generator.input_shape[-1] if generator is not None else None
        self.image_shape = tuple(discriminator.input_shape[1:])
        self.ema_discriminator = None
        if ema_decay > 0:
            # Same layers, so ``weights`` pair up one to one; never trained.
            self.ema_discriminator = keras.models.clone_model(discriminator)
            self.ema_discriminator.set_weights(discriminator.get_weights())
        self.weight_norm_initialized = False
        self.built = True  # G and D are built models; nothing to infer from data

        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.supervised_loss_tracker = keras.metrics.Mean(name="supervised_loss")
        self.unsupervised_loss_tracker = keras.metrics.Mean(name="unsupervised_loss")
        self.manifold_loss_tracker = keras.metrics.Mean(name="manifold_loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")

    # ------------------------------------------------------------------ build
    @classmethod
    def from_preset(cls, name, *, num_classes=10, seed=0, supervised_only=False,
                    precision="float32", **overrides):
        """Builds the networks and defaults of a source (``presets.PRESETS``).

        ``overrides`` replace :class:`~sgan_keras.presets.Preset` fields, e.g.
        ``fake_class="learned"``, ``manifold="lecouat"``, ``ema_decay=0``.
        ``precision="mixed_bfloat16"`` computes in bfloat16 with float32
        weights (see :mod:`sgan_keras.networks`).
        """
        preset = presets_lib.get_preset(name).replace(**overrides)
        generator = None
        if not supervised_only:
            generator = networks.build_generator(
                preset.architecture, image_shape=preset.image_shape,
                latent_dim=preset.latent_dim, seed=seed,
                output_activation=preset.generator_activation or None, precision=precision)
        discriminator = networks.build_discriminator(
            preset.architecture, image_shape=preset.image_shape,
            num_classes=num_classes, fake_class=preset.fake_class, seed=seed,
            precision=precision)
        return cls(
            generator, discriminator, num_classes=num_classes,
            fake_class=preset.fake_class, generator_loss=preset.generator_loss,
            unsupervised_weight=preset.unsupervised_weight,
            label_smoothing=preset.label_smoothing, manifold=preset.manifold,
            manifold_weight=preset.manifold_weight,
            manifold_epsilon=preset.manifold_epsilon, noise=preset.noise,
            noise_stddev=preset.noise_stddev, pixel_range=preset.pixel_range,
            ema_decay=preset.ema_decay, supervised_only=supervised_only,
            seed=seed, preset=preset, name=f"sgan_{preset.name}")

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        """``d_optimizer``/``g_optimizer`` default to the preset's Adam settings.

        Both optimizers are built here, inside the model's distribution
        strategy, so ``fit`` can run under ``tf.distribute``.
        """
        super().compile(**kwargs)
        if d_optimizer is None or (g_optimizer is None and not self.supervised_only):
            if self.preset is None:
                raise ValueError("compile() needs d_optimizer and g_optimizer "
                                 "when the model has no preset")
            default_d, default_g = self.preset.optimizers()
            d_optimizer = d_optimizer or default_d
            g_optimizer = g_optimizer or default_g
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        with self.distribute_strategy.scope():
            self.d_optimizer.build(self.discriminator.trainable_variables)
            if not self.supervised_only:
                self.g_optimizer.build(self.generator.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build from data: G, D and both optimizers are built.

        (Keras' version reduces a first batch across replicas, which fails
        for dict batches under ``MultiWorkerMirroredStrategy``.)
        """

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker,
                self.supervised_loss_tracker, self.unsupervised_loss_tracker,
                self.manifold_loss_tracker, self.accuracy_tracker,
                self.cross_entropy_tracker]

    @property
    def evaluation_discriminator(self):
        """D's EMA copy when ``ema_decay > 0``, else D itself."""
        return self.ema_discriminator or self.discriminator

    # ------------------------------------------------ weight-norm initialization
    def initialize_weight_norm(self, batch):
        """Data-dependent init of weight-normalized layers (Salimans & Kingma 2016).

        Runs once, eagerly, on the first training batch: D on its unlabeled
        (or labeled) images, G on a noise batch. A no-op for networks without
        weight normalization and on later calls.
        """
        if self.weight_norm_initialized:
            return
        images = _images_of(batch)
        with self.distribute_strategy.scope():
            if self.generator is not None:
                z = self._global_noise(_GENERATOR_NOISE, tf.shape(images)[0], step=-1)
                sgan_layers.initialize_weight_norm(self.generator, z)
            sgan_layers.initialize_weight_norm(self.discriminator, images)
            if self.ema_discriminator is not None:
                self.ema_discriminator.set_weights(self.discriminator.get_weights())
        self.weight_norm_initialized = True

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit``, after weight-norm init on ``x``'s first batch."""
        if not self.weight_norm_initialized and isinstance(x, tf.data.Dataset):
            self.initialize_weight_norm(next(iter(x.take(1))))
        return super().fit(x, *args, **kwargs)

    # ----------------------------------------------------------------- noise
    def _global_noise(self, stream, batch_size, step=None, distribution=None):
        """This replica's slice of the global batch's noise for ``(seed, step)``.

        Every replica draws the whole global batch statelessly and keeps rows
        ``[r * b, (r + 1) * b)``, the rows a single device would give the
        same examples, so results do not depend on the number of replicas.
        """
        context = tf.distribute.get_replica_context()
        replica, replicas = 0, 1
        if context is not None:
            replica = context.replica_id_in_sync_group
            replicas = context.num_replicas_in_sync
        if step is None:
            step = self.d_optimizer.iterations
        seed = tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(step, tf.int64) * 3 + stream])
        z = self._sample_noise([batch_size * replicas, self.latent_dim], seed,
                               distribution or self.noise)
        return z[replica * batch_size:(replica + 1) * batch_size]

    def _sample_noise(self, shape, seed, distribution):
        """``z ~ U(0, 1)``, ``N(0, noise_stddev)`` or ``N(0, 1)`` (``standard_normal``)."""
        if distribution == "uniform":
            return tf.random.stateless_uniform(shape, seed)
        z = tf.random.stateless_normal(shape, seed)
        return self.noise_stddev * z if distribution == "normal" else z

    def generate(self, num_images, seed=0):
        """``num_images`` samples of G (inference mode) as a NumPy array."""
        z = self._sample_noise([num_images, self.latent_dim],
                               tf.constant([seed, -7], tf.int64), self.noise)
        return keras.ops.convert_to_numpy(self.generator(z, training=False))

    # ------------------------------------------------------------ train step
    def train_step(self, batch):
        if self.supervised_only:
            return self._supervised_step(batch)
        labeled_images = batch["labeled_images"]
        labels = batch["labels"]
        unlabeled_images = batch["unlabeled_images"]
        generator_images = batch["generator_images"]
        discriminator_logs = self._discriminator_step(labeled_images, labels, unlabeled_images)
        g_loss = self._generator_step(generator_images)
        self.g_loss_tracker.update_state(g_loss)
        return self._logs({**discriminator_logs, "g_loss": self.g_loss_tracker.result()})

    def _discriminator_step(self, labeled_images, labels, unlabeled_images):
        batch_size = tf.shape(unlabeled_images)[0]
        z = self._global_noise(_DISCRIMINATOR_NOISE, batch_size)
        with tf.GradientTape() as tape:
            fake_images = self.generator(z, training=True)
            labeled_logits, _ = self.discriminator(labeled_images, training=True)
            real_logits, _ = self.discriminator(unlabeled_images, training=True)
            fake_logits, _ = self.discriminator(fake_images, training=True)
            supervised = losses.supervised_loss(
                labels, labeled_logits, self.fake_class, self.num_classes)
            unsupervised = losses.unsupervised_loss(
                self._gan_logit(real_logits), self._gan_logit(fake_logits),
                self.label_smoothing)
            d_loss = (tf.nn.compute_average_loss(supervised)
                      + self.unsupervised_weight * tf.nn.compute_average_loss(unsupervised))
            manifold = tf.zeros([batch_size])
            if self.manifold != "none":
                manifold = self.manifold_weight * self._manifold_term(z, fake_logits)
                d_loss += tf.nn.compute_average_loss(manifold)
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        self._update_ema()

        supervised_mean = tf.reduce_mean(supervised)
        unsupervised_mean = tf.reduce_mean(unsupervised)
        self.d_loss_tracker.update_state(
            supervised_mean + self.unsupervised_weight * unsupervised_mean
            + tf.reduce_mean(manifold))
        self.supervised_loss_tracker.update_state(supervised)
        self.unsupervised_loss_tracker.update_state(unsupervised)
        self.manifold_loss_tracker.update_state(manifold)
        self.accuracy_tracker.update_state(
            losses.accuracy(labels, labeled_logits, self.num_classes))
        return {tracker.name: tracker.result() for tracker in (
            self.d_loss_tracker, self.supervised_loss_tracker,
            self.unsupervised_loss_tracker, self.manifold_loss_tracker,
            self.accuracy_tracker)}

    def _manifold_term(self, z, fake_logits):
        """Per-example ``sum_k (l_k(G(z)) - l_k(G(z + delta)))^2`` (Lecouat 2018)."""
        if self.manifold == "lecouat":  # d ~ N(0, I), delta = eps * d / ||d||
            direction = self._global_noise(_MANIFOLD_NOISE, tf.shape(z)[0],
                                           distribution="standard_normal")
            delta = self.manifold_epsilon * tf.math.l2_normalize(direction, axis=-1)
        else:  # MNIST blog: delta = 1e-5 * N(0, stddev of z)
            delta = self.manifold_epsilon * self._global_noise(
                _MANIFOLD_NOISE, tf.shape(z)[0], distribution="normal")
        perturbed_logits, _ = self.discriminator(
            self.generator(z + delta, training=True), training=True)
        return losses.manifold_loss(
            losses.class_logits(fake_logits, self.num_classes),
            losses.class_logits(perturbed_logits, self.num_classes),
            form=self.manifold)

    def _generator_step(self, generator_images):
        batch_size = tf.shape(generator_images)[0]
        z = self._global_noise(_GENERATOR_NOISE, batch_size)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            fake_logits, fake_features = self.discriminator(
                self.generator(z, training=True), training=True)
            if self.generator_loss_name == "non_saturating":
                per_example = losses.non_saturating_generator_loss(self._gan_logit(fake_logits))
                g_loss = tf.reduce_mean(per_example)
                scaled_loss = tf.nn.compute_average_loss(per_example)
            else:
                _, real_features = self.discriminator(generator_images, training=True)
                g_loss = losses.feature_matching_loss(
                    _global_mean(real_features), _global_mean(fake_features),
                    distance=self.generator_loss_name[-2:])
                # Every replica computes the same global loss and the optimizer
                # sums the replicas' gradients: divide by their number.
                scaled_loss = g_loss / replicas
        variables = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
        return g_loss

    def _supervised_step(self, batch):
        images, labels = _labeled_of(batch)
        with tf.GradientTape() as tape:
            logits, _ = self.discriminator(images, training=True)
            supervised = losses.supervised_loss(labels, logits, self.fake_class, self.num_classes)
            loss = tf.nn.compute_average_loss(supervised)
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self._update_ema()
        self.supervised_loss_tracker.update_state(supervised)
        self.accuracy_tracker.update_state(losses.accuracy(labels, logits, self.num_classes))
        return self._logs({"supervised_loss": self.supervised_loss_tracker.result(),
                           "accuracy": self.accuracy_tracker.result()})

    def _logs(self, values):
        """The step's logs. Under ``MultiWorkerMirroredStrategy`` Keras reduces
        them with ``strategy.reduce(MEAN, axis=0)``, which needs an axis: the
        (replica-identical) metric values get shape ``[1]`` there."""
        if isinstance(self.distribute_strategy,
                      tf.distribute.MultiWorkerMirroredStrategy):
            return {name: tf.reshape(value, [1]) for name, value in values.items()}
        return values

    def _gan_logit(self, logits):
        return losses.gan_logit(logits, self.fake_class, self.num_classes)

    def _update_ema(self):
        """EMA of D's weights (Salimans et al. 2016); other state is copied."""
        if self.ema_discriminator is None:
            return
        decay = self.ema_decay
        for average, weight in zip(self.ema_discriminator.weights, self.discriminator.weights):
            if weight.trainable:
                average.assign(decay * average + (1.0 - decay) * weight)
            else:  # BatchNorm statistics, fixed weight-norm scales
                average.assign(weight)

    # ------------------------------------------------------- classifier side
    def test_step(self, batch):
        images, labels = _labeled_of(batch)
        logits = self(images, training=False)
        self.cross_entropy_tracker.update_state(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(labels, tf.int32), logits=logits))
        self.accuracy_tracker.update_state(losses.accuracy(labels, logits, self.num_classes))
        return self._logs({"accuracy": self.accuracy_tracker.result(),
                           "cross_entropy": self.cross_entropy_tracker.result()})

    def predict_step(self, batch):
        return self(_images_of(batch), training=False)

    def call(self, images, training=False):
        """The K class logits of the evaluation discriminator."""
        logits, _ = self.evaluation_discriminator(images, training=training)
        return losses.class_logits(logits, self.num_classes)

    def classifier(self):
        """A functional ``keras.Model``: images -> K class logits (EMA weights if on)."""
        inputs = keras.Input(self.image_shape, name="images")
        logits, _ = self.evaluation_discriminator(inputs, training=False)
        return keras.Model(inputs, logits[:, :self.num_classes], name="classifier")

    # ---------------------------------------------------------------- state
    def state_variables(self):
        """Every variable a resumed run needs: weights, RNG seeds, optimizers,
        and the metric trackers (the running sums of an unfinished epoch)."""
        variables = list(self.variables)
        for optimizer in (self.d_optimizer, self.g_optimizer):
            if optimizer is not None:
                variables.extend(optimizer.variables)
        for tracker in self.metrics:
            variables.extend(tracker.variables)
        return variables


def _global_mean(features):
    """Mean over the global batch (all replicas), differentiable."""
    total = tf.reduce_sum(features, axis=0)
    count = tf.cast(tf.shape(features)[0], features.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
    return total / count


def _images_of(batch):
    if isinstance(batch, dict):
        return batch.get("unlabeled_images", batch.get("labeled_images"))
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _labeled_of(batch):
    if isinstance(batch, dict):
        return batch["labeled_images"], batch["labels"]
    return batch[0], batch[1]


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
