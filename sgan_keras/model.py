"""The semi-supervised GAN as a subclassed ``keras.Model``.

The model owns a ``generator`` and a ``discriminator`` and the
:class:`~sgan_keras.config.Config` they train under, and is compiled with
``compile(d_optimizer=..., g_optimizer=...)``, as in the keras-io GAN
examples. Each ``train_step`` is one discriminator update followed by one
generator update that sees the updated discriminator and a second unlabeled
batch (Salimans et al. 2016, "Improved Techniques for Training GANs";
openai/improved-gan ``train_*_feature_matching.py``), or a source's own order
(``update_order``).

The trained model is a classifier: calling it, ``predict()`` and
``evaluate()`` use the discriminator's K class logits (its exponential moving
average, when ``ema_decay > 0``).

Training batches are dicts from ``SemiSupervisedData.train_dataset``:
``labeled_images``, ``labels``, ``unlabeled_images`` (D step) and
``generator_images`` (G step); with ``label_batching="masked"`` from
``masked_dataset``: ``images``, ``labels`` and ``label_mask``
(``SemiSupervisedData.training_dataset`` picks the one a configuration
trains on). In ``supervised_only`` mode an ``(images, labels)`` tuple is
enough.

Randomness of the noise ``z`` is stateless: drawn from ``(seed, step)`` for the
whole global batch, each replica taking its slice. A run is therefore
reproducible, resumes exactly from a checkpoint (the step counter is the
optimizer's), and, for networks without dropout, Gaussian noise or
BatchNorm, one step gives the same result on one device or several. Those
layers work per replica: each replica draws its own masks and noise
(``layers.replica_seed``), so with them a run on several devices is a
different draw of the same training, not the same numbers. BatchNorm takes
its own replica's statistics (Keras' default) unless built with
``synchronized=True``, as the presets' networks are (``networks.py``): then
the global batch's, as on one device.
"""

import inspect
import json
import math
import os
import warnings
import zipfile

import h5py
import keras
import numpy as np
import tensorflow as tf

from sgan_keras import choices as choices_lib
from sgan_keras import config as config_lib
from sgan_keras import distribute
from sgan_keras import layers as sgan_layers
from sgan_keras import losses
from sgan_keras import networks
from sgan_keras import optimizers
from sgan_keras import presets as presets_lib

# Streams of the stateless noise: one per use within a step.
_DISCRIMINATOR_NOISE, _GENERATOR_NOISE, _MANIFOLD_NOISE = 0, 1, 2
_FEATURE_MATCHING_DISTANCES = {"feature_matching_l1": "l1", "feature_matching_l2": "l2"}
# The arguments of compile() on how fit() runs, which a saved model keeps.
_RUN_OPTIONS = ("jit_compile", "steps_per_execution", "run_eagerly")
# Keras' compile() arguments an SGAN has no use for (its losses and metrics are its own).
_KERAS_COMPILE_REFUSED = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
# The image entries of a training batch (train_dataset's dicts, or masked ones).
_IMAGE_KEYS = ("labeled_images", "unlabeled_images", "generator_images", "images")
# The key of save_own_variables' record of the weight-norm init.
_WEIGHT_NORM_INITIALIZED = "weight_norm_initialized"


@keras.saving.register_keras_serializable(package="sgan_keras")
class SGAN(keras.Model):
    """Semi-supervised GAN: a K-class classifier trained as the GAN's D.

    Args:
      generator: Keras model ``z [B, latent_dim] -> images`` (``None`` when
        ``config.supervised_only``).
      discriminator: Keras model ``images -> [logits, features]``; logits are
        ``[B, K]`` for ``fake_class="zero"``, ``[B, K+1]`` otherwise (see
        :func:`sgan_keras.losses.gan_logit`), so K is read from its output.
      config: the :class:`~sgan_keras.config.Config` to train under (its
        ``model`` and ``training`` sections, ``seed`` and
        ``supervised_only``); default ``Config()``. The networks' own shapes
        (latent size, image shape) are read from them.
    """

    def __init__(self, generator, discriminator, config=None, **kwargs):
        # float32 whatever Keras' global policy: the SGAN's own policy would only
        # cast call()'s images (to bfloat16 under a mixed one, so predict() and
        # classifier() would disagree); each network computes in its own.
        super().__init__(**{**kwargs, "dtype": "float32"})
        if config is not None and not isinstance(config, config_lib.Config):
            raise TypeError(f"config must be a sgan_keras.Config (e.g. Config().replace("
                            f"fake_class='learned')), got {type(config).__name__}")
        self.config = config_lib.Config() if config is None else config
        if generator is None and not self.config.supervised_only:
            raise ValueError("generator is required unless config.supervised_only")
        _check_shapes(generator, discriminator)
        for network in (generator, discriminator):
            if network is not None:
                _check_precision(network)
        self.generator = generator
        self.discriminator = discriminator
        logit_count = discriminator.output_shape[0][-1]
        self.num_classes = logit_count - (self.config.model.fake_class != "zero")
        if self.num_classes < 1:
            raise ValueError(
                f"fake_class={self.config.model.fake_class!r} takes K + 1 logits (K >= 1 "
                f"classes and one more); {discriminator.name} outputs {logit_count}")
        self.pixel_range = tuple(self.config.model.pixel_range)
        # What the networks compute in (auto already resolved when they were built):
        # G's layers count too, or a bfloat16 G, whose input rounds away the manifold
        # perturbation (a manifold loss of exactly 0), passed beside a float32 D.
        self.precision = ("mixed_bfloat16" if any(
            layer.compute_dtype == "bfloat16" for network in (generator, discriminator)
            if network is not None for layer in sgan_layers.computing_layers(network))
            else "float32")
        if self.config.model.precision not in ("auto", self.precision):
            raise ValueError(
                f"config precision={self.config.model.precision!r}, but the networks compute "
                f"in {self.precision}: a network's precision is its layers' (build them under "
                "keras.config.set_dtype_policy, or let SGAN.from_preset / for_config build them)")
        if (self.precision == "mixed_bfloat16" and self.config.model.manifold != "none"
                and not self.config.supervised_only):
            raise ValueError(
                f"networks computing in bfloat16 cannot be used with manifold="
                f"{self.config.model.manifold!r}: manifold regularization needs float32 (its "
                f"perturbation, epsilon {self.config.model.manifold_epsilon:g}, is below "
                "bfloat16's resolution)")
        self.latent_dim = generator.input_shape[-1] if generator is not None else None
        self.image_shape = tuple(discriminator.input_shape[1:])
        # Without batch statistics D treats each image on its own, so its
        # batches of one step can go through it as one concatenated batch.
        self.discriminator_batches_independent = not _has_batch_norm(discriminator)
        self.d_unsupervised_optimizer = None
        self.ema_discriminator = None
        if self.config.model.ema_decay > 0:
            # Same layers, so ``weights`` pair up one to one; never trained.
            self.ema_discriminator = _ema_copy(discriminator)
            self.ema_discriminator.trainable = False   # not in trainable_weights
            self._start_ema()
        self.weight_norm_initialized = False

        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.supervised_loss_tracker = keras.metrics.Mean(name="supervised_loss")
        self.unsupervised_loss_tracker = keras.metrics.Mean(name="unsupervised_loss")
        self.manifold_loss_tracker = keras.metrics.Mean(name="manifold_loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.build((None, *self.image_shape))

    def build(self, input_shape=None):
        """Nothing to create: G and D arrive built (Keras records the input shape)."""

    # ------------------------------------------------------------------ build
    @classmethod
    def from_preset(cls, name, **overrides):
        """The model of a source (``presets.PRESETS``) with its networks.

        ``overrides`` replace fields of its :class:`~sgan_keras.config.Config`,
        e.g. ``seed=1``, ``fake_class="learned"``, ``manifold="lecouat"``,
        ``ema_decay=0``, ``supervised_only=True``, ``precision="mixed_bfloat16"``
        (bfloat16 compute, float32 weights; see :mod:`sgan_keras.networks`).
        """
        if overrides.get("supervised_only"):
            presets_lib.refuse_gan_options(overrides, "supervised_only=True",
                                           lambda option: option.name)
        config = presets_lib.get_preset(name).config
        if overrides.get("procedure") == "unified":   # as the command line's --procedure
            config = config.replace(**presets_lib.UNIFIED_PROCEDURE)
        config = config.replace(**overrides)
        # As the command line: an override that would change nothing is refused.
        presets_lib.refuse_options_that_change_nothing(config, overrides,
                                                       lambda option: option.name)
        return cls.for_config(config)

    @classmethod
    def for_config(cls, config, num_classes=None):
        """The model of ``config`` with the networks of ``config.model.architecture``,
        built for their native image shape and ``num_classes`` classes (default:
        those of ``config.data.dataset``; a ``folder:`` or ``tfds:`` data set
        has its own)."""
        model = config.model
        if not model.architecture:
            raise config_lib.ConfigError("for_config() needs config.model.architecture; "
                                         "pass your own networks to SGAN() instead")
        image_shape = choices_lib.NATIVE_IMAGE_SHAPES[model.architecture]
        if num_classes is None:
            if choices_lib.is_custom(config.data.dataset):
                raise config_lib.ConfigError(f"for_config() needs num_classes for "
                                             f"--dataset={config.data.dataset}")
            num_classes = choices_lib.DATASETS[config.data.dataset].num_classes
        precision = model.resolved_precision(distribute.bfloat16_matrix_units())
        generator = None
        if not config.supervised_only:
            generator = networks.build_generator(
                model.architecture, image_shape=image_shape,
                latent_dim=model.latent_dim, seed=config.seed,
                output_activation=model.generator_activation or None,
                conv_padding=model.conv_padding, precision=precision,
                gans_in_action_generator=model.gans_in_action_generator,
                batch_norm_variance=model.batch_norm_variance)
        discriminator = networks.build_discriminator(
            model.architecture, image_shape=image_shape,
            num_classes=num_classes, fake_class=model.fake_class, seed=config.seed,
            conv_padding=model.conv_padding, precision=precision,
            batch_norm_variance=model.batch_norm_variance)
        return cls(generator, discriminator, config,
                   name=f"sgan_{config.preset or model.architecture}")

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        """``d_optimizer``/``g_optimizer``: two optimizers or Keras names
        (``"adam"``); each defaults to ``config.training``'s Adam
        (:func:`sgan_keras.optimizers.for_training`). Keras' ``optimizer``,
        ``loss`` and ``metrics`` arguments are refused: the losses and metrics
        are the model's own; so, with a generator, are optimizers with ``use_ema=True``.

        Both optimizers are built here, inside the model's distribution
        strategy, so ``fit`` can run under ``tf.distribute``. D's is also
        Keras' ``model.optimizer``, which ``fit()``'s callbacks read: the
        TensorBoard callback logs its learning rate and places evaluation
        points at its step count (Keras' default would be an RMSprop that
        never steps).

        ``jit_compile`` defaults to the config's (``--jit_compile``) when that
        is not ``auto``; the config's other ``run`` options are the command
        line's (:func:`sgan_keras.trainer.train`), not the model's.
        """
        refused = [name for name in _KERAS_COMPILE_REFUSED if name in kwargs]
        if refused:
            raise TypeError(f"SGAN.compile() takes d_optimizer= and g_optimizer=, not "
                            f"{', '.join(refused)}= (its losses and metrics are its own)")
        d_optimizer = _optimizer(d_optimizer, "d_optimizer")
        g_optimizer = _optimizer(g_optimizer, "g_optimizer")
        if d_optimizer is not None and d_optimizer is g_optimizer:
            raise ValueError("d_optimizer and g_optimizer must be two optimizers: "
                             "one updates only the variables it was built for")
        for argument, optimizer in (("d_optimizer", d_optimizer), ("g_optimizer", g_optimizer)):
            # Keras' fit() ends by writing model.optimizer's averages over all of the
            # model's trainable weights by position: G's, then D's, which D's do not match.
            # (Without G they are D's alone, and Keras' EMA works.)
            if getattr(optimizer, "use_ema", False) and self.generator is not None:
                raise ValueError(
                    f"{argument} has use_ema=True, which an SGAN cannot use: Keras' fit() "
                    "would write D's optimizer's averages over G's and D's weights by "
                    "position; average D's weights with the SGAN's ema_decay")
        if d_optimizer is None or (g_optimizer is None and not self.config.supervised_only):
            default_d, default_g = optimizers.for_training(self.config.training)
            d_optimizer = d_optimizer or default_d
            g_optimizer = g_optimizer or default_g
        if "jit_compile" not in kwargs and self.config.run.jit_compile != "auto":
            kwargs["jit_compile"] = self.config.run.keras_jit_compile   # it was ignored here
        replicas = self.distribute_strategy.num_replicas_in_sync
        if kwargs.get("steps_per_execution", 1) != 1 and replicas > 1:
            # Measured with TensorFlow 2.21 and Keras 3.15 on two logical CPUs, a
            # plain keras.Sequential alike (keras-team/keras issue 19246).
            raise ValueError(
                f"steps_per_execution={kwargs['steps_per_execution']!r} under {replicas} "
                "replicas: Keras' multi-step loop fails there at the first fit() (\"You "
                "must feed a value for placeholder tensor\"); compile with "
                "steps_per_execution=1")
        super().compile(**{"optimizer": d_optimizer, **kwargs})
        # Kept for get_compile_config: how fit() runs, as the caller asked.
        self._run_options = {name: kwargs[name] for name in _RUN_OPTIONS if name in kwargs}
        # A compile again with the same D optimizer (e.g. for jit_compile) keeps its copy's state.
        keep_copy = d_optimizer is getattr(self, "d_optimizer", None)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        if (self.config.training.update_order == "split" and not self.config.supervised_only
                and not (keep_copy and self.d_unsupervised_optimizer is not None)):
            # GANs in Action compiles a second model on D's trunk, with its own
            # Adam, for the real/fake updates: a copy of D's optimizer, which
            # updates twice a step; its schedule still follows training steps.
            self.d_unsupervised_optimizer = optimizers.copy_for_updates_per_step(
                d_optimizer, updates_per_step=2)
        with self.distribute_strategy.scope():
            self.d_optimizer.build(self.discriminator.trainable_variables)
            if self.d_unsupervised_optimizer is not None:
                self.d_unsupervised_optimizer.build(self.discriminator.trainable_variables)
            if not self.config.supervised_only:
                self.g_optimizer.build(self.generator.trainable_variables)

    # The one private Keras method overridden. ``fit()`` calls it to build a
    # model and its optimizer from a first batch; here both are built already,
    # and Keras' version reduces that batch across replicas, which fails for
    # dict batches under ``MultiWorkerMirroredStrategy`` (Keras 3.15).
    # tests/test_model.py fails if Keras renames it or changes its arguments.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build from data: G, D and every optimizer are built."""

    # ----------------------------------------------------- saving and export
    def get_config(self):
        """The networks, serialized, and the configuration (``model.save``)."""
        return {
            **super().get_config(),
            "generator": (keras.saving.serialize_keras_object(self.generator)
                          if self.generator is not None else None),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "config": self.config.to_dict(),
            "weight_norm_initialized": self.weight_norm_initialized,
        }

    @classmethod
    def from_config(cls, keras_config):
        """The model of a :meth:`get_config` (``keras.models.load_model``)."""
        keras_config = dict(keras_config)
        generator, discriminator = (
            None if keras_config[name] is None
            else keras.saving.deserialize_keras_object(keras_config[name])
            for name in ("generator", "discriminator"))
        config = config_lib.Config.from_dict(keras_config.pop("config"))
        initialized = keras_config.pop("weight_norm_initialized", False)
        del keras_config["generator"], keras_config["discriminator"]
        model = cls(generator, discriminator, config, **keras_config)
        model.weight_norm_initialized = initialized
        return model

    def save_own_variables(self, store):
        """Keras' ``.keras`` format leaves out the seed-generator states of the
        dropout and noise layers; they are saved here, so that a loaded model
        trains on exactly as the saved one would have. So is whether the
        weight-norm init has run: a ``.weights.h5`` file has no config, and
        ``fit()`` after ``load_weights`` would run the init again over the
        loaded weights."""
        super().save_own_variables(store)
        for index, state in enumerate(self._seed_states()):
            store[f"seed_state_{index}"] = keras.ops.convert_to_numpy(state)
        store[_WEIGHT_NORM_INITIALIZED] = np.array(self.weight_norm_initialized)

    def load_own_variables(self, store):
        ours = {key: store[key] for key in store.keys()
                if key.startswith("seed_state_") or key == _WEIGHT_NORM_INITIALIZED}
        super().load_own_variables({key: store[key] for key in store.keys()
                                    if key not in ours})
        for index, state in enumerate(self._seed_states()):
            if f"seed_state_{index}" in ours:
                state.assign(ours[f"seed_state_{index}"])
        if _WEIGHT_NORM_INITIALIZED in ours:    # files saved before it was kept: as they were
            self.weight_norm_initialized = bool(np.asarray(ours[_WEIGHT_NORM_INITIALIZED]))

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Keras' ``load_weights``, refusing a ``.weights.h5``, ``.keras`` or
        ``.weights.json`` file whose weight average of D (EMA) this model does not match: Keras
        would ignore a saved average silently, or fail on a missing one with
        a list of D's layers. ``skip_mismatch=True`` loads what matches, and
        Keras' ``objects_to_skip`` what it does not skip."""
        if not skip_mismatch and not kwargs.get("objects_to_skip"):
            saved = _holds_weight_average(filepath)
            kept = self.ema_discriminator is not None
            if saved is not None and saved != kept:
                decay = self.config.model.ema_decay
                raise ValueError(
                    f"{os.fspath(filepath)} holds "
                    + ("D's weight average (saved with ema_decay > 0) and this SGAN keeps "
                       "none (ema_decay=0)" if saved else
                       f"no weight average of D (saved with ema_decay=0) and this SGAN "
                       f"keeps one (ema_decay={decay:g})")
                    + ": build the SGAN with the ema_decay the file was saved with")
        return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)

    def _seed_states(self):
        return [variable for variable in self.variables
                if variable.path.endswith("seed_generator_state")]

    def get_compile_config(self):
        """D's and G's optimizers (:meth:`compile` makes the split order's
        second D optimizer again, a copy of D's), so that a loaded model trains
        on with their state, and the ``jit_compile``, ``steps_per_execution``
        and ``run_eagerly`` given to :meth:`compile`, as Keras' own
        ``get_compile_config`` keeps them."""
        if not self.compiled:
            return {}
        return {"d_optimizer": keras.optimizers.serialize(self.d_optimizer),
                "g_optimizer": (keras.optimizers.serialize(self.g_optimizer)
                                if self.g_optimizer is not None else None),
                **self._run_options}

    def compile_from_config(self, config):
        if not config:
            return
        self.compile(
            d_optimizer=keras.optimizers.deserialize(config["d_optimizer"]),
            g_optimizer=(keras.optimizers.deserialize(config["g_optimizer"])
                         if config["g_optimizer"] else None),
            **{name: config[name] for name in _RUN_OPTIONS if name in config})

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """``keras.Model.export``: a serving artifact of the classifier, float
        images in ``pixel_range`` -> K class logits. (``sgan_keras.export``
        writes one that takes uint8 images.)"""
        if input_signature is None:
            input_signature = [keras.InputSpec(shape=(None, *self.image_shape), dtype="float32")]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

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

        Runs once, eagerly, on ``batch`` (``fit()`` gives it the first training
        batch; the CLI a batch of ``--init_images`` images, improved-gan's 500):
        D on its unlabeled (or labeled) images, G on a noise batch of at most
        ``config.training.batch_size`` (improved-gan's init pass gives G its
        noise batch of ``batch_size`` and D the 500 images). A no-op for
        networks without weight normalization and on later calls.
        """
        self._initialize_weight_norm(batch)

    def _initialize_weight_norm(self, batch):
        """``initialize_weight_norm``, one call below it and ``fit()`` alike,
        so that the pixel-range warning names the caller's line."""
        if self.weight_norm_initialized:
            return
        images = _images_of(keras.utils.unpack_x_y_sample_weight(batch)[0])
        self._check_float_images(images)
        self._check_pixel_range(images)
        with self.distribute_strategy.scope():
            if self.generator is not None:
                size = tf.minimum(tf.shape(images)[0], self.config.training.batch_size)
                z = self._global_noise(_GENERATOR_NOISE, size, step=-1)
                sgan_layers.initialize_weight_norm(self.generator, z)
            sgan_layers.initialize_weight_norm(self.discriminator, images)
            if self.ema_discriminator is not None:
                self._start_ema()
        self.weight_norm_initialized = True

    def _check_first_batch(self, batch):
        """``_initialize_weight_norm``'s image checks, one call below ``fit()`` as
        there, for a ``fit()`` after the init: the warning on pixels out of range
        was given only with the init, so never to a loaded model's ``fit()``."""
        images = _images_of(keras.utils.unpack_x_y_sample_weight(batch)[0])
        self._check_float_images(images)
        self._check_pixel_range(images)

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        """``keras.Model.fit``, after weight-norm init on ``x``'s first batch
        (a data set's, a ``PyDataset``'s, a generator's or the first
        ``batch_size`` of arrays).

        ``keras.callbacks.TerminateOnNaN`` is refused: it reads the log
        ``loss``, which an SGAN does not have (its losses are ``d_loss``,
        ``g_loss``, ...), so it would never stop a run;
        ``sgan_keras.callbacks.StopOnNonFiniteLoss`` checks them all.
        ``shuffle`` defaults to ``False`` for a ``tf.data.Dataset`` or a
        generator, which Keras does not shuffle: its default ``True`` would
        warn on every call. ``class_weight`` and ``sample_weight`` are refused.
        Labels out of ``0..K-1`` in arrays are refused (``_check_class_ids``)."""
        given = inspect.signature(super().fit).bind(x, y, batch_size, *args, **kwargs).arguments
        self._check_scope("fit()")
        _refuse_terminate_on_nan(given.get("callbacks"))
        _check_class_ids(x, y, self.num_classes, "fit()")
        _check_replica_shares(x, batch_size, given.get("steps_per_epoch"),
                              self.distribute_strategy.num_replicas_in_sync,
                              validation_split=given.get("validation_split"))
        validation = given.get("validation_data")
        if isinstance(validation, dict):    # a dict batch of arrays, as x may be one
            validation = (validation,)
        if isinstance(validation, (tuple, list)) and validation:
            _check_class_ids(validation[0], validation[1] if len(validation) > 1 else None,
                             self.num_classes, "fit()'s validation_data")
            if len(validation) > 2:
                _refuse_dropped_sample_weight(*validation[:3], "fit()'s validation_data")
            # Integer images and dicts evaluate() refuses: here before the first epoch trains.
            images = validation[0]
            if isinstance(images, dict):
                _labeled_of(images if len(validation) < 2 or validation[1] is None
                            else validation[:2], "fit()'s validation_data")
            for array in _image_arrays(images):
                if hasattr(array, "dtype"):
                    self._check_float_images(array)
        if given.get("validation_split") and isinstance(x, dict) and y is None:
            _labeled_of(x, "fit()'s validation_split")      # a masked dict's is refused
        _refuse_training_weights("fit", given)
        if "shuffle" not in given and (isinstance(x, tf.data.Dataset)
                                       or inspect.isgenerator(x)):
            kwargs["shuffle"] = False
        if x is not None:
            x, first = _first_batch(x, batch_size)
            if first is not None and not self.weight_norm_initialized:
                self._initialize_weight_norm(first)
            elif first is not None:     # a loaded model, or a second fit(): checked all the same
                self._check_first_batch(first)
            elif not self.weight_norm_initialized and any(
                    layer.data_init for network in (self.generator, self.discriminator)
                    if network is not None for layer in sgan_layers.weight_norm_layers(network)):
                raise ValueError(f"fit() cannot read a first batch from {type(x).__name__} for "
                                 "weight norm's data-dependent init: call "
                                 "model.initialize_weight_norm(batch) first")
        # BackupAndRestore sets Keras' _initial_epoch for the fit() it resumes and Keras
        # never clears it: every later fit() would start at that epoch, whatever its own
        # initial_epoch (fit(epochs=2) after a resume at epoch 2 trained nothing).
        self._initial_epoch = None
        return super().fit(x, y, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate``, refusing labels out of ``0..K-1`` in arrays
        and a ``sample_weight`` Keras would drop (``_refuse_dropped_sample_weight``)."""
        given = inspect.signature(super().evaluate).bind(x, y, *args, **kwargs).arguments
        _refuse_dropped_sample_weight(x, y, given.get("sample_weight"), "evaluate()")
        _check_class_ids(x, y, self.num_classes, "evaluate()")
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, *args, **kwargs):
        """``keras.Model.train_on_batch``, refusing labels out of ``0..K-1``;
        under several replicas each trains on its share of the batch, as in ``fit()``."""
        given = inspect.signature(super().train_on_batch).bind(
            x, y, sample_weight, *args, **kwargs).arguments
        self._check_scope("train_on_batch()")
        _refuse_training_weights("train_on_batch", given)
        _check_class_ids(x, y, self.num_classes, "train_on_batch()")
        x, y, sample_weight = self._shares_of_batch((x, y, sample_weight), "train_on_batch()")
        return super().train_on_batch(x, y, sample_weight, *args, **kwargs)

    def test_on_batch(self, x, y=None, sample_weight=None, *args, **kwargs):
        """``keras.Model.test_on_batch``, refusing labels out of ``0..K-1``;
        under several replicas each scores its share of the batch."""
        _check_class_ids(x, y, self.num_classes, "test_on_batch()")
        x, y, sample_weight = self._shares_of_batch((x, y, sample_weight))
        return super().test_on_batch(x, y, sample_weight, *args, **kwargs)

    def predict_on_batch(self, x):
        """``keras.Model.predict_on_batch``; one row per image under several replicas too."""
        count = len(keras.tree.flatten(x)[0])
        # Fewer images than replicas: each replica had them all (_shares_of_batch).
        return super().predict_on_batch(self._shares_of_batch((x,))[0])[:count]

    def _check_scope(self, call):
        """Refuses training inside a several-replica ``tf.distribute`` scope the
        model was not built in (Keras failed with a bare AssertionError), or inside
        any scope but its own strategy's (Keras' RuntimeError printed both objects).
        A model of plain variables trains in a one-device scope, as Keras allows;
        outside any scope Keras enters the model's own."""
        if not (tf.distribute.has_strategy() and self.weights):
            return
        strategy, variable = tf.distribute.get_strategy(), self.weights[0].value
        if not strategy.extended.variable_created_in_scope(variable) and (
                strategy.num_replicas_in_sync > 1
                or isinstance(variable, tf.distribute.DistributedValues)):
            raise ValueError(f"{call} runs inside a tf.distribute strategy's scope this SGAN "
                             "was not built in: build and compile it (its networks too) "
                             "inside strategy.scope(), then train it there or outside any scope")

    def _shares_of_batch(self, arguments, training_call=None):
        """``arguments`` (each a batch, or None), each replica's share of each under
        several replicas: Keras' ``*_on_batch`` hand every replica the whole batch, so
        each trained on all of it with its own slice of the noise (not as one device
        does) and ``predict_on_batch`` returned every row once per replica. Shares are
        contiguous and in replica order, as ``fit()``'s data sets are split; a
        ``training_call``'s must be equal (``_check_replica_shares``, each array
        of a dict batch). A batch of fewer images than replicas, which an empty
        share would fail on (a convolution of no image), goes whole to each."""
        strategy = self.distribute_strategy
        replicas = strategy.num_replicas_in_sync
        if replicas == 1:
            return arguments
        arrays = keras.tree.flatten(arguments[0])
        if training_call is not None:
            for array in arrays:
                _check_replica_shares(array, len(array), None, replicas, training_call)
        elif min(len(array) for array in arrays) < replicas:
            return arguments

        def share(value, context):
            value = tf.convert_to_tensor(value)
            count, index = int(value.shape[0]), context.replica_id_in_sync_group
            start = index * (count // replicas) + min(index, count % replicas)
            return value[start:start + count // replicas + (index < count % replicas)]

        return tuple(
            None if argument is None else strategy.experimental_distribute_values_from_function(
                lambda context, argument=argument: tf.nest.map_structure(
                    lambda value: share(value, context), argument))
            for argument in arguments)

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
        seed = tf.stack([tf.constant(self.config.seed, tf.int64),
                         tf.cast(step, tf.int64) * 3 + stream])
        z = self._sample_noise([batch_size * replicas, self.latent_dim], seed,
                               distribution or self.config.model.noise)
        return z[replica * batch_size:(replica + 1) * batch_size]

    def _sample_noise(self, shape, seed, distribution):
        """``z ~ U(0, 1)``, ``N(0, noise_stddev)`` or ``N(0, 1)`` (``standard_normal``),
        by TensorFlow's Philox generator, named as in ``layers.GaussianNoise``
        (XLA runs its default, ``auto_select``, slowly)."""
        if distribution == "uniform":
            return sgan_layers.philox_uniform(shape, seed)
        z = sgan_layers.philox_normal(shape, seed)
        return self.config.model.noise_stddev * z if distribution == "normal" else z

    def generate(self, num_images, seed=0):
        """``num_images`` samples of G as a NumPy array: G in inference mode, or
        with ``sample_mode="training"`` in training mode (its batch norms
        normalize by this batch's statistics, as improved-gan's ``samplefun``),
        computed by ``stateless_call`` so that the moving statistics stay as
        they were (the sources run no update op when they sample)."""
        if self.generator is None:
            raise ValueError("a supervised_only SGAN has no generator to generate with")
        z = self._sample_noise([num_images, self.latent_dim],
                               tf.constant([seed, -7], tf.int64), self.config.model.noise)
        if self.config.model.sample_mode == "inference":
            return keras.ops.convert_to_numpy(self.generator(z, training=False))
        generator = self.generator
        images, _ = generator.stateless_call(
            [variable.value for variable in generator.trainable_variables],
            [variable.value for variable in generator.non_trainable_variables], z,
            training=True)
        return keras.ops.convert_to_numpy(images)

    # ------------------------------------------------------------ train step
    def train_step(self, batch):
        """One training step in the configured procedure (``update_order``).

        - ``sequential`` (Salimans et al.; the MNIST blog): one D update, then
          one G update that sees the updated D and ``generator_images``, a
          second unlabeled batch. Its fakes are a fresh ``G(z')``
          (``generator_fakes="fresh"``), or the D step's own ``G(z)``
          (``"reused"``: the blog's one G forward pass per step,
          ``dcganmnist/mnist_ssl.py``).
        - ``simultaneous`` (the Udacity SVHN notebook): D's and G's losses
          from one forward pass, both updates applied together (G's gradient
          is against the D before its update).
        - ``split`` (GANs in Action): three D updates, on the labeled batch
          (D's optimizer), on real and on fake images (a second optimizer,
          the book's second compiled model), the fakes made by G in inference
          mode (``generator.predict``); then the G update on a fresh ``z``.
          Only the first moves D's batch-norm statistics, as the book's
          frozen Keras 2 models do.

        With ``label_batching="masked"`` (Udacity) the batch is one batch of
        the training set with a ``label_mask``: only its labeled images reach
        ``L_sup``, and the same images are D's and G's real batch.
        """
        batch, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        if sample_weight is not None:
            raise ValueError("SGAN's training takes no sample_weight or class_weight")
        if self.ema_discriminator is not None and self._ema_as_improved_gan:
            self._average_discriminator_weights()   # the step's starting weights
        if self.config.supervised_only:
            return self._supervised_step(batch if labels is None else (batch, labels))
        if not isinstance(batch, dict) or labels is not None:
            raise ValueError("an SGAN trains on dict batches (SemiSupervisedData.train_dataset "
                             "or training_dataset); (images, labels) batches need "
                             "supervised_only=True")
        _check_training_keys(batch, self.config.training.update_order)
        for images in _image_arrays(batch):
            self._check_float_images(images)
        _check_shares_in_graph(_image_arrays(batch))
        # Other floats (NumPy's float64 from x / 255 in a data set) as float32, G's fakes'
        # dtype: D's one call on their concatenation failed on the mix (a no-op for float32).
        batch = {key: tf.cast(value, tf.float32) if key in _IMAGE_KEYS else value
                 for key, value in batch.items()}
        if "labels" in batch:
            batch = {**batch, "labels": _class_ids(batch["labels"])}
        if "label_mask" in batch:   # one batch: labeled images are marked in it
            images, mask = batch["images"], tf.cast(batch["label_mask"], tf.float32)
            if mask.shape.rank != 1:    # [N, 1], as labels may be: it broadcast to [N, N]
                mask = tf.reshape(mask, [-1])
            # The others' labels are never read; any value (e.g. -1) may stand there.
            labels = tf.where(mask > 0, tf.cast(batch["labels"], tf.int32), 0)
            batch = {"labeled_images": images, "labels": labels, "label_mask": mask,
                     "unlabeled_images": images, "generator_images": images}
        if self.config.training.update_order == "simultaneous":
            logs = self._simultaneous_step(batch)
        elif self.config.training.update_order == "split":
            logs = self._split_step(batch)
        else:
            logs = self._sequential_step(batch)
        return self._logs(logs)

    def _sequential_step(self, batch):
        z = self._global_noise(_DISCRIMINATOR_NOISE, tf.shape(batch["unlabeled_images"])[0])
        fresh = self.config.training.generator_fakes == "fresh"
        with tf.GradientTape() as g_tape:
            if fresh:
                kept = self._kept_generator_statistics()
            fake_images = self.generator(z, training=True)
            if not fresh:      # the fakes' pass is also G's loss pass
                kept = self._kept_generator_statistics()
            with g_tape.stop_recording():
                with tf.GradientTape() as d_tape:
                    d_loss, logs, _ = self._discriminator_loss(batch, fake_images, z)
                self._apply(self.d_optimizer, d_tape, d_loss, self.discriminator)
            self._restore(kept)
            if fresh:
                z = self._global_noise(_GENERATOR_NOISE, tf.shape(z)[0])
                fake_images = self.generator(z, training=True)
            g_loss, scaled_g_loss = self._generator_pass(fake_images, batch["generator_images"])
        self._apply(self.g_optimizer, g_tape, scaled_g_loss, self.generator)
        self._update_ema()    # after G's pass, which moves D's batch-norm statistics again
        return self._record(logs, g_loss)

    def _simultaneous_step(self, batch):
        z = self._global_noise(_DISCRIMINATOR_NOISE, tf.shape(batch["unlabeled_images"])[0])
        with tf.GradientTape(persistent=True) as tape:
            fake_images = self.generator(z, training=True)   # D's fakes and G's loss pass
            kept = self._kept_generator_statistics()
            d_loss, logs, (fake_logits, fake_features, real_features) = \
                self._discriminator_loss(batch, fake_images, z)
            self._restore(kept)     # the manifold term's pass
            g_loss, scaled_g_loss = self._generator_loss(fake_logits, fake_features, real_features)
        self._apply(self.d_optimizer, tape, d_loss, self.discriminator)
        self._apply(self.g_optimizer, tape, scaled_g_loss, self.generator)
        self._update_ema()
        return self._record(logs, g_loss)

    def _split_step(self, batch):
        labels, mask = batch["labels"], batch.get("label_mask")
        with tf.GradientTape() as tape:
            labeled_logits, _ = self.discriminator(batch["labeled_images"], training=True)
            supervised = self._supervised_term(labels, labeled_logits, mask)
        self._apply(self.d_optimizer, tape, supervised, self.discriminator)
        # Keras 2 updates a model's batch-norm statistics only while it is trainable, and
        # the book freezes its unsupervised D (so the combined model's) before their first
        # train_on_batch: only the supervised update moves D's moving statistics. The
        # other D calls still normalize by their batch's statistics (training mode).
        kept = _kept_moving_statistics(self.discriminator)
        z = self._global_noise(_DISCRIMINATOR_NOISE, tf.shape(batch["unlabeled_images"])[0])
        fake_images = self.generator(z, training=False)     # generator.predict
        unsupervised, manifold = [], tf.zeros(tf.shape(z)[:1])
        options = self.config.model
        for images, target in ((batch["unlabeled_images"], 1.0 - options.label_smoothing),
                               (fake_images, 0.0)):
            with tf.GradientTape() as tape:
                logits, _ = self.discriminator(images, training=True)
                per_example = losses.sigmoid_cross_entropy(self._gan_logit(logits), target)
                loss = options.unsupervised_weight * self._global_batch_mean(per_example)
                if target == 0.0 and options.manifold != "none":   # with the fake update
                    manifold = options.manifold_weight * self._manifold_term(
                        z, logits, generator_training=False)
                    loss += self._global_batch_mean(manifold)
            self._apply(self.d_unsupervised_optimizer, tape, loss, self.discriminator)
            unsupervised.append(per_example)
        with tf.GradientTape() as tape:
            fake_images = self.generator(
                self._global_noise(_GENERATOR_NOISE, tf.shape(z)[0]), training=True)
            g_loss, scaled_g_loss = self._generator_pass(fake_images, batch["generator_images"])
        self._apply(self.g_optimizer, tape, scaled_g_loss, self.generator)
        self._restore(kept)
        self._update_ema()     # after G's update, which leaves D's weights alone
        logs = self._track_discriminator(
            labels, labeled_logits, mask, supervised, unsupervised[0] + unsupervised[1], manifold)
        return self._record(logs, g_loss)

    def _kept_generator_statistics(self):
        """With ``generator_statistics="g_step"``, G's batch-norm moving
        statistics and their values now, for :meth:`_restore` after the D
        step's G passes (Lecouat et al. run G's update ops with G's train op
        only); else nothing to keep. The split order's D step runs G in
        inference mode, which moves nothing."""
        if self.config.model.generator_statistics != "g_step":
            return []
        return _kept_moving_statistics(self.generator)

    @staticmethod
    def _restore(kept):
        for variable, value in kept:
            variable.assign(value)

    def _discriminator_loss(self, batch, fake_images, z):
        """D's loss on one labeled, one real and one fake batch; also its logs and
        D's outputs G's loss needs (for a G loss from the same pass)."""
        labels, mask = batch["labels"], batch.get("label_mask")
        if mask is None:
            (real_logits, real_features), (labeled_logits, _), (fake_logits, fake_features) = \
                self._discriminate(batch["unlabeled_images"], batch["labeled_images"],
                                   fake_images)
        else:       # masked batching: the labeled images are the real batch
            (real_logits, real_features), (fake_logits, fake_features) = \
                self._discriminate(batch["unlabeled_images"], fake_images)
            labeled_logits = real_logits
        options = self.config.model
        supervised = self._supervised_term(labels, labeled_logits, mask)
        unsupervised = losses.unsupervised_loss(
            self._gan_logit(real_logits), self._gan_logit(fake_logits), options.label_smoothing)
        d_loss = supervised + options.unsupervised_weight * self._global_batch_mean(unsupervised)
        manifold = tf.zeros_like(unsupervised)
        if options.manifold != "none":
            manifold = options.manifold_weight * self._manifold_term(z, fake_logits)
            d_loss += self._global_batch_mean(manifold)
        logs = self._track_discriminator(labels, labeled_logits, mask, supervised, unsupervised,
                                         manifold)
        return d_loss, logs, (fake_logits, fake_features, real_features)

    def _supervised_term(self, labels, logits, mask=None):
        """``L_sup`` of this replica, scaled for a sum over replicas: the mean
        over the global batch, or with a ``mask`` the mean over the labeled
        images of the global batch (Udacity: ``sum(mask * ce) / max(1, sum(mask))``)."""
        per_example = losses.supervised_loss(labels, logits, self.config.model.fake_class,
                                             self.num_classes)
        if mask is None:
            return self._global_batch_mean(per_example)
        count = tf.reduce_sum(mask)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return tf.reduce_sum(mask * per_example) / tf.maximum(1.0, count)

    def _track_discriminator(self, labels, labeled_logits, mask, supervised, unsupervised,
                             manifold):
        """Updates D's trackers; ``supervised`` is this replica's scaled ``L_sup``."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # The trackers average this over the replicas: the global batch's L_sup.
        supervised_mean = supervised * replicas
        self.d_loss_tracker.update_state(
            supervised_mean + self.config.model.unsupervised_weight * tf.reduce_mean(unsupervised)
            + tf.reduce_mean(manifold))
        self.supervised_loss_tracker.update_state(supervised_mean)
        self.unsupervised_loss_tracker.update_state(unsupervised)
        self.manifold_loss_tracker.update_state(manifold)
        self.accuracy_tracker.update_state(
            losses.accuracy(labels, labeled_logits, self.num_classes), sample_weight=mask)
        return {tracker.name: tracker.result() for tracker in (
            self.d_loss_tracker, self.supervised_loss_tracker,
            self.unsupervised_loss_tracker, self.manifold_loss_tracker,
            self.accuracy_tracker)}

    def _record(self, logs, g_loss):
        self.g_loss_tracker.update_state(g_loss)
        return {**logs, "g_loss": self.g_loss_tracker.result()}

    @staticmethod
    def _global_batch_mean(per_example):
        """``per_example``'s mean over the global batch, for a sum over the replicas."""
        return losses.global_batch_mean(per_example,
                                        tf.distribute.get_strategy().num_replicas_in_sync)

    @staticmethod
    def _apply(optimizer, tape, loss, network):
        variables = network.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def _manifold_term(self, z, fake_logits, generator_training=True):
        """Per-example ``sum_k (l_k(G(z)) - l_k(G(z + delta)))^2`` (Lecouat 2018),
        ``G(z + delta)`` in the mode ``G(z)`` was drawn in (``generator_training``)."""
        if self.config.model.manifold == "lecouat":  # d ~ N(0, I), delta = eps * d / ||d||
            direction = self._global_noise(_MANIFOLD_NOISE, tf.shape(z)[0],
                                           distribution="standard_normal")
            delta = (self.config.model.manifold_epsilon
                     * tf.math.l2_normalize(direction, axis=-1))
        else:  # MNIST blog: delta = manifold_epsilon * N(0, stddev of z)
            delta = self.config.model.manifold_epsilon * self._global_noise(
                _MANIFOLD_NOISE, tf.shape(z)[0], distribution="normal")
        perturbed_logits, _ = self.discriminator(
            self.generator(z + delta, training=generator_training), training=True)
        return losses.manifold_loss(
            losses.class_logits(fake_logits, self.num_classes),
            losses.class_logits(perturbed_logits, self.num_classes),
            form=self.config.model.manifold)

    def _generator_loss(self, fake_logits, fake_features, real_features):
        """(G's loss, the loss to differentiate on this replica).

        Non-saturating: the mean over the global batch. Feature matching
        compares the global batch's mean features; every replica computes the
        same global loss and the optimizer sums the replicas' gradients, so
        each differentiates ``loss / replicas``.
        """
        if self.config.model.generator_loss == "non_saturating":
            per_example = losses.non_saturating_generator_loss(self._gan_logit(fake_logits))
            return tf.reduce_mean(per_example), self._global_batch_mean(per_example)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        g_loss = losses.feature_matching_loss(
            _global_mean(real_features), _global_mean(fake_features),
            distance=_FEATURE_MATCHING_DISTANCES[self.config.model.generator_loss])
        return g_loss, g_loss / replicas

    def _generator_pass(self, fake_images, real_images):
        """D on G's fakes (and, for feature matching, on ``real_images``) for G's loss.

        The real images get a D call of their own, as in both sources' graphs
        (improved-gan's two ``get_output`` calls, the MNIST blog's two
        ``discriminator`` calls): G's loss depends on G through the fakes
        only, so only their call is differentiated. Through one call on the
        concatenation, the backward pass would carry the real half through
        every layer as well: 6.8% more FLOPs on the Improved-GAN MNIST step,
        1.04x slower there, 1.02x-1.08x on the MNIST blog's
        (``experiments/results/benchmark_separate_g_pass_avx2.md``).
        """
        fake_logits, fake_features = self.discriminator(fake_images, training=True)
        if self.config.model.generator_loss == "non_saturating":
            return self._generator_loss(fake_logits, fake_features, None)
        _, real_features = self.discriminator(real_images, training=True)
        return self._generator_loss(fake_logits, fake_features, tf.stop_gradient(real_features))

    def _discriminate(self, *image_batches):
        """D's ``(logits, features)`` on each of ``image_batches`` (training mode).

        One call on their concatenation when D has no batch statistics: each
        image's outputs are the same as in its own call, its noise and dropout
        draws as independent, and one larger call is faster (fewer, larger
        kernels). With BatchNorm (the DCGAN-style presets) each batch keeps its
        own call, as in their sources, since the statistics couple the images.
        """
        if len(image_batches) == 1 or not self.discriminator_batches_independent:
            return [self.discriminator(images, training=True) for images in image_batches]
        sizes = tf.stack([tf.shape(images)[0] for images in image_batches])
        logits, features = self.discriminator(tf.concat(image_batches, axis=0), training=True)
        return list(zip(tf.split(logits, sizes, num=len(image_batches)),
                        tf.split(features, sizes, num=len(image_batches))))

    def _supervised_step(self, batch):
        images, labels = _labeled_of(batch, "a supervised_only SGAN's fit()")
        self._check_float_images(images)
        _check_shares_in_graph([images])
        with tf.GradientTape() as tape:
            logits, _ = self.discriminator(images, training=True)
            supervised = losses.supervised_loss(labels, logits, self.config.model.fake_class,
                                                self.num_classes)
            loss = self._global_batch_mean(supervised)
        self._apply(self.d_optimizer, tape, loss, self.discriminator)
        self._update_ema()
        self.supervised_loss_tracker.update_state(supervised)
        self.accuracy_tracker.update_state(losses.accuracy(labels, logits, self.num_classes))
        return self._logs({"supervised_loss": self.supervised_loss_tracker.result(),
                           "accuracy": self.accuracy_tracker.result()})

    def _logs(self, values):
        """The step's logs. With ``MultiWorkerMirroredStrategy`` on more than
        one worker Keras reduces them with ``strategy.reduce(MEAN, axis=0)``,
        which needs an axis: the (replica-identical) metric values get shape
        ``[1]`` there. On one worker Keras passes them on as they are, and
        TensorBoard takes scalars only.

        Under several replicas each value is the tracker's over the global
        batches so far: each replica's tracker sums its own images only, and
        Keras averages the replicas' logs, which is the global mean only when
        every replica has as many images (an ``evaluate()`` batch of 7 on 2
        replicas splits 4 and 3; a ``label_mask`` marks more labeled images
        on one replica than on another)."""
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            trackers = {tracker.name: tracker for tracker in self.metrics}
            values = _global_results({name: trackers[name] for name in values}, context)
        strategy = self.distribute_strategy
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)):
            return {name: tf.reshape(value, [1]) for name, value in values.items()}
        return values

    def _gan_logit(self, logits):
        return losses.gan_logit(logits, self.config.model.fake_class, self.num_classes)

    @property
    def input_pixel_range(self):
        """Where real images' uint8 0..255 go (``load_dataset``'s ``pixel_range``):
        ``pixel_range``, or 255/256 of it under improved-gan's x / 256
        (``config.ModelConfig.pixel_scale``)."""
        return self.config.model.input_pixel_range()

    @property
    def _ema_as_improved_gan(self):
        """Whether D's weight average follows improved-gan (``ema_rule``): from zeros,
        one step behind."""
        return self.config.model.ema_rule == "improved_gan"

    def _start_ema(self):
        """D's weight average as it starts: D's weights, or with ``ema_rule="improved_gan"``
        zeros for the trainable ones (improved-gan's ``disc_param_avg = 0.*p.get_value()``)."""
        self.ema_discriminator.set_weights([
            np.zeros_like(value) if self._ema_as_improved_gan and weight.trainable else value
            for weight, value in zip(self.discriminator.weights,
                                     self.discriminator.get_weights())])

    def _update_ema(self):
        """After a step's updates: the EMA of D's trainable weights (Salimans et
        al. 2016), unless ``ema_rule="improved_gan"`` averaged them before; D's
        other state (BatchNorm statistics, fixed weight-norm scales) is copied."""
        if self.ema_discriminator is None:
            return
        if not self._ema_as_improved_gan:
            self._average_discriminator_weights()
        for average, weight in zip(self.ema_discriminator.weights, self.discriminator.weights):
            if not weight.trainable:
                average.assign(weight)

    def _average_discriminator_weights(self):
        """Moves the average of D's trainable weights toward their values now.

        ``ema_rule="improved_gan"`` calls it at the start of a step: Theano applies
        a function's updates together, so improved-gan's ``disc_avg_updates``
        average the weights from before that call's Adam update, one step
        behind.
        """
        decay = self.config.model.ema_decay
        for average, weight in zip(self.ema_discriminator.weights, self.discriminator.weights):
            if weight.trainable:
                average.assign(decay * average + (1.0 - decay) * weight)

    # ------------------------------------------------------- classifier side
    def test_step(self, batch):
        """Accuracy and cross entropy on ``(images, labels[, sample_weight])`` or
        a training batch's labeled images."""
        batch, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        images, labels = _labeled_of(batch if labels is None else (batch, labels), "evaluate()")
        if sample_weight is not None:   # [N] or [N, 1]: a retrace that saw both gave weights
            sample_weight = tf.reshape(sample_weight, [-1])    # of unknown rank, an error
        self._check_float_images(images)      # before self(), whose errors Keras wraps in a note
        logits = self(images, training=False)
        self.cross_entropy_tracker.update_state(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(labels, tf.int32), logits=logits), sample_weight=sample_weight)
        self.accuracy_tracker.update_state(losses.accuracy(labels, logits, self.num_classes),
                                           sample_weight=sample_weight)
        return self._logs({"accuracy": self.accuracy_tracker.result(),
                           "cross_entropy": self.cross_entropy_tracker.result()})

    def predict_step(self, batch):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        images = _images_of(batch)
        self._check_float_images(images)
        return self(images, training=False)

    def call(self, images, training=False):
        """The K class logits of the evaluation discriminator."""
        self._check_float_images(images)
        logits, _ = self.evaluation_discriminator(images, training=training)
        return losses.class_logits(logits, self.num_classes)

    def _check_float_images(self, images):
        """Refuses integer images such as raw uint8 ones: Keras would cast their
        0-255 to float without a word, far outside the pixels D learns on."""
        dtype = tf.as_dtype(images.dtype)
        if dtype.is_integer:
            low, high = self.pixel_range
            raise ValueError(
                f"the images are {dtype.name}: an SGAN takes float images in its pixel_range "
                f"({low:g}, {high:g}), as SemiSupervisedData's data sets give them; scale raw "
                f"uint8 images as x / 127.5 - 1 for (-1, 1) or x / 255 for (0, 1)")

    def _check_pixel_range(self, images):
        """Warns when float images do not look like pixels in ``pixel_range``:
        values outside it by more than 1% of its width (floats 0-255, or (-1, 1)
        images for a (0, 1) model), or none below 0 for a (-1, 1) model (the
        usual x / 255 images). G's output activation keeps its images in the
        range, so D would tell real images from generated ones by their range
        alone. A warning, not an error: nothing else depends on it, and a batch
        of bright images may have no pixel below 0. The weight-norm init runs it
        on ``fit()``'s first batch."""
        if not int(tf.size(images)):
            return
        low, high = self.pixel_range
        lowest = float(tf.reduce_min(images))
        highest = float(tf.reduce_max(images))
        tolerance = 0.01 * (high - low)
        if lowest < low - tolerance or highest > high + tolerance:
            problem = "outside"
        elif low < 0 and lowest >= 0:
            problem = "none below 0 in"
        else:
            return
        warnings.warn(
            f"the images lie in [{lowest:.4g}, {highest:.4g}], {problem} the model's "
            f"pixel_range ({low:g}, {high:g}), where G's images are: scale them into it "
            f"(x / 127.5 - 1 for (-1, 1), x / 255 for (0, 1) from uint8; load_dataset("
            f"..., pixel_range=model.input_pixel_range) does)", stacklevel=4)

    def classifier(self):
        """A functional ``keras.Model``: images -> K class logits (EMA weights if on)."""
        inputs = keras.Input(self.image_shape, name="images")
        logits, _ = self.evaluation_discriminator(inputs, training=False)
        return keras.Model(inputs, losses.class_logits(logits, self.num_classes),
                           name="classifier")

    # ---------------------------------------------------------------- state
    def state_variables(self):
        """Every variable a resumed run needs: weights, RNG seeds, optimizers,
        and the metric trackers (the running sums of an unfinished epoch)."""
        variables = list(self.variables)
        for optimizer in (self.d_optimizer, self.d_unsupervised_optimizer, self.g_optimizer):
            if optimizer is not None:
                variables.extend(optimizer.variables)
        for tracker in self.metrics:
            variables.extend(tracker.variables)
        return variables


def _optimizer(value, argument):
    """``value`` (``None``, an optimizer or a Keras name like ``"adam"``) as an optimizer."""
    if value is None:
        return None
    try:
        return keras.optimizers.get(value)
    except ValueError:
        raise ValueError(f"{argument} must be a keras.optimizers.Optimizer or its name, "
                         f"got {value!r}") from None


def _holds_weight_average(filepath):
    """Whether a ``.weights.h5``, ``.keras`` or sharded ``.weights.json`` file
    holds an EMA copy of D (its ``ema_discriminator`` group); ``None`` for
    another format or a file that cannot be read, which Keras' own loading
    then names."""
    path = os.fspath(filepath)
    try:
        if path.endswith(".weights.h5"):
            with h5py.File(path, "r") as weights:
                return "ema_discriminator" in weights
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as file, \
                    h5py.File(file, "r") as weights:
                return "ema_discriminator" in weights
        if path.endswith(".weights.json"):     # save_weights(..., max_shard_size=...)
            with open(path, encoding="utf-8") as file:
                groups = json.load(file)["weight_map"]
            return any(group.startswith("/ema_discriminator/") for group in groups)
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    return None


def _ema_copy(discriminator):
    """A clone of ``discriminator`` for its EMA, named ``ema_discriminator``
    (else ``model.summary()`` lists two ``discriminator`` rows) and its weights'
    paths under ``ema_discriminator/``.

    A clone's layers keep their names, so without the name scope its weights'
    paths would be D's: TensorBoard's ``histogram_freq`` logs each weight
    under its path, and would write D's histograms and their average's under
    one tag at one step. (Saved files and checkpoints name weights by position.)
    """
    with keras.name_scope("ema_discriminator"):
        copy = keras.models.clone_model(discriminator)
    copy.name = "ema_discriminator"
    return copy


def _refuse_terminate_on_nan(callbacks):
    """Raises for a ``TerminateOnNaN`` among ``fit()``'s ``callbacks`` (a list,
    a ``CallbackList`` or, as Keras flattens them, one callback or nested
    lists) that still reads ``logs["loss"]``."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    for callback in keras.tree.flatten(callbacks) if callbacks else ():
        if (isinstance(callback, keras.callbacks.TerminateOnNaN) and type(callback).on_batch_end
                is keras.callbacks.TerminateOnNaN.on_batch_end):
            raise ValueError(
                "keras.callbacks.TerminateOnNaN reads the log 'loss', which an SGAN does not "
                "have (it logs d_loss, g_loss, ...), so it would never stop: use "
                "sgan_keras.callbacks.StopOnNonFiniteLoss(), which checks every loss")


def _refuse_dropped_sample_weight(x, y, sample_weight, call):
    """Refuses a ``sample_weight`` with a dict batch and no ``y``: Keras drops it
    without a word, so ``evaluate()`` gave the unweighted result where
    ``test_on_batch()`` weighs it."""
    if isinstance(x, dict) and y is None and sample_weight is not None:
        raise ValueError(f"{call} takes no sample_weight with a dict batch: Keras drops it "
                         "without labels y; give images, labels and sample_weight apart")


def _refuse_training_weights(method, given):
    """Refuses ``class_weight`` and ``sample_weight`` among a training call's
    ``given`` arguments: Keras fails on class_weight with dict batches (no y to
    weigh; an AttributeError in fit(), an IndexError in train_on_batch()) and
    drops a sample_weight given without y silently."""
    weighted = [name for name in ("class_weight", "sample_weight")
                if given.get(name) is not None]
    if weighted:
        raise ValueError(f"SGAN.{method}() takes no {' or '.join(weighted)}: an SGAN's "
                         "training weighs every image alike")


def _check_class_ids(x, y, num_classes, call):
    """Refuses a class id outside ``0..num_classes - 1`` among the labels given
    to ``call`` as an array: ``y``, or a dict batch's ``labels`` (those its
    ``label_mask`` marks, if it has one). TensorFlow's sparse cross entropy
    raises a graph error on one on the CPU and, as its documentation says,
    gives NaN on a GPU (not seen here: no GPU), and the
    accuracy counts it wrong without a word. Data sets and generators are not
    read ahead: ``SemiSupervisedData`` checks its labels when it loads them."""
    labels, mask = y, None
    if labels is None and isinstance(x, dict):
        labels, mask = x.get("labels"), x.get("label_mask")
    if labels is None or not hasattr(labels, "__array__"):
        return
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:      # Keras' [N, 1] sparse labels
        values = values[:, 0]
    if values.ndim == 2:    # refused in the graph too (_class_ids), but validation_data's
        # only after the first epoch had trained
        raise ValueError(f"{call}: {_one_hot_refusal(values.shape)}")
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        return                                          # refused where they are used
    if mask is not None and hasattr(mask, "__array__"):
        marked = np.asarray(mask).reshape(-1)
        if marked.shape == values.shape:
            values = values[marked > 0]
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        raise ValueError(
            f"{call}: label {values[bad[0]].item()!r} is not a class id of this model's "
            f"{num_classes} classes, 0..{num_classes - 1} ({bad.size} of {values.size} labels "
            f"are out of range); TensorFlow's cross entropy would fail on the CPU and give "
            f"NaN on a GPU")


def _check_replica_shares(x, batch_size, steps_per_epoch, replicas, call="fit()",
                          validation_split=None):
    """Refuses ``call``'s batches that ``replicas`` cannot share equally, where
    they can be seen before training: a data set's fixed batch size, or arrays'
    ``batch_size`` and last batch (of the arrays ``validation_split`` leaves for
    training). The training step gives each replica an
    equal share of the global batch's noise and of its loss's divisor: with
    unequal shares the noise rows overlapped, the step trained otherwise than
    on one device, and a replica without images logged NaN losses. (The
    command line refuses such a ``--batch_size`` too.) Generators and data
    sets of unknown batch size are checked in the step (``_check_shares_in_graph``)."""
    if replicas == 1:
        return
    if isinstance(x, tf.data.Dataset):
        leaves = [spec for spec in tf.nest.flatten(x.element_spec) if spec.shape.rank]
        sizes = [spec.shape[0] for spec in leaves if spec.shape[0] is not None]
    else:
        arrays = keras.tree.flatten(x)
        if not arrays or not all(hasattr(array, "shape") for array in arrays):
            return
        count, size = len(arrays[0]), batch_size or 32
        if validation_split:    # Keras trains on the first floor(count * (1 - split))
            count = int(math.floor(count * (1.0 - validation_split)))
        last = count % size
        reaches_last = not steps_per_epoch or steps_per_epoch * size > count - last
        sizes = [size] + ([last] if last and reaches_last else [])
    bad = [size for size in sizes if size % replicas]
    if bad:
        raise ValueError(
            f"{call} under {replicas} replicas needs batches they can share equally, a "
            f"multiple of {replicas} images; got batches of {bad[0]}: choose batch_size "
            f"(and the number of images) so, or batch the data set with drop_remainder=True")


def _check_shares_in_graph(arrays):
    """Under several replicas, stops training on a batch whose size was unknown
    when the step was traced (a data set batched without ``drop_remainder``, a
    generator) if the replicas got unequal shares of it (the last 7 images of
    a data set batched by 8: 4 and 3), which ``_check_replica_shares`` cannot
    see before training. An ``InvalidArgumentError`` at that step, naming
    each replica's share; one all-gather of the shares' sizes a step, for
    such batches only."""
    context = tf.distribute.get_replica_context()
    unknown = [array for array in arrays if array.shape[0] is None]
    if context is None or context.num_replicas_in_sync == 1 or not unknown:
        return
    replicas = context.num_replicas_in_sync
    # [replicas, arrays]: each replica's share of each array of unknown size.
    shares = context.all_gather(tf.stack([tf.shape(array)[0] for array in unknown])[None], 0)
    tf.debugging.Assert(
        tf.reduce_all(tf.equal(shares, shares[:1])),
        [f"training under {replicas} replicas needs batches they can share equally, a "
         f"multiple of {replicas} images; a batch of unknown size was split unequally: batch "
         f"the data set with drop_remainder=True, or give each batch a multiple of "
         f"{replicas}. The shares (a row per image array, a column per replica):",
         tf.transpose(shares)], summarize=-1)


def _global_results(trackers, context):
    """``keras.metrics.Mean`` trackers' results over every replica's sums, in
    one all-reduce of their totals and counts (one collective a step, not one
    per tracker)."""
    # Read on this replica's device: MultiWorkerMirroredStrategy's all-reduce
    # of the variables as converted by Keras found no device ("destinations can
    # not be empty").
    names = list(trackers)
    sums = tf.stack([tf.identity(variable.value) for name in names
                     for variable in (trackers[name].total, trackers[name].count)])
    sums = tf.reshape(context.all_reduce(tf.distribute.ReduceOp.SUM, sums), [-1, 2])
    results = tf.math.divide_no_nan(sums[:, 0], sums[:, 1])
    return {name: results[index] for index, name in enumerate(names)}


def _global_mean(features):
    """Mean over the global batch (all replicas), differentiable."""
    total = tf.reduce_sum(features, axis=0)
    count = tf.cast(tf.shape(features)[0], features.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
    return total / count


def _check_shapes(generator, discriminator):
    """Refuses a D that does not output ``[logits [B, n], features]`` (e.g. G and D
    swapped), or a G whose images D does not take; and networks whose shapes
    cannot be read (a subclassed model's ``output_shape`` raises AttributeError)."""
    for role, network in (("generator", generator), ("discriminator", discriminator)):
        if network is not None and not (isinstance(network, keras.Model)
                                        and hasattr(network, "input_shape")
                                        and hasattr(network, "output_shape")):
            raise TypeError(
                f"the {role} must be a functional or Sequential keras.Model (its input and "
                f"output shapes are read from it), got {type(network).__name__}; wrap a "
                f"subclassed one: inputs = keras.Input(shape); keras.Model(inputs, "
                f"network(inputs))")
    outputs = discriminator.output_shape
    # output_shape flattens the outputs (a dict's by key: features before
    # logits), so their structure is read from output.
    structure = getattr(discriminator, "output", None)
    if isinstance(structure, dict):
        raise ValueError(f"the discriminator must map images to [logits [B, n], features]; "
                         f"{discriminator.name} outputs a dict of {sorted(structure)}: give "
                         "keras.Model the list [logits, features]")
    if not (isinstance(outputs, (list, tuple)) and len(outputs) == 2
            and all(isinstance(shape, (list, tuple)) for shape in outputs)
            and len(outputs[0]) == 2
            and not any(isinstance(tensor, (list, tuple)) for tensor in structure or ())):
        raise ValueError(f"the discriminator must map images to [logits [B, n], features]; "
                         f"{discriminator.name} outputs shape {outputs}")
    if generator is not None and not (isinstance(generator.input_shape, tuple)
                                      and len(generator.input_shape) == 2
                                      and isinstance(generator.input_shape[1], int)):
        raise ValueError(f"the generator must take noise z [B, latent_dim]; {generator.name} "
                         f"takes {generator.input_shape}")
    if generator is not None and \
            tuple(generator.output_shape[1:]) != tuple(discriminator.input_shape[1:]):
        raise ValueError(f"the generator makes images of shape {generator.output_shape[1:]}, "
                         f"the discriminator takes {discriminator.input_shape[1:]}")


def _check_precision(network):
    """Refuses a network with outputs other than float32, or computing in float16."""
    dtypes = sorted({str(tensor.dtype) for tensor in getattr(network, "outputs", None) or []})
    if dtypes and dtypes != ["float32"]:
        raise ValueError(
            f"{network.name}'s outputs are {', '.join(dtypes)}; an SGAN needs float32 "
            "outputs (under a mixed precision policy, end the network with a float32 layer, "
            "e.g. keras.layers.Activation('linear', dtype='float32'))")
    if any(layer.compute_dtype == "float16" for layer in sgan_layers.computing_layers(network)):
        raise ValueError(f"{network.name} computes in float16, which needs loss scaling, "
                         "and an SGAN's training does none: use mixed_bfloat16")


def _has_batch_norm(network):
    """Whether ``network`` or a network inside it has a BatchNormalization layer."""
    return bool(_batch_norm_layers(network))


def _batch_norm_layers(network):
    """The BatchNormalization layers of ``network`` and the networks inside it."""
    return [layer for layer in sgan_layers.all_layers(network)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _kept_moving_statistics(network):
    """``network``'s batch-norm moving means and variances with their values
    now, for ``SGAN._restore``."""
    return [(variable, tf.identity(variable.value)) for layer in _batch_norm_layers(network)
            for variable in (layer.moving_mean, layer.moving_variance)]


def _first_batch(x, batch_size):
    """``(x, its first batch)`` for ``fit``; a generator is replaced by one
    that yields that batch again."""
    if isinstance(x, tf.data.Dataset):
        return x, next(iter(x.take(1)), None)    # None for an empty one: Keras' to handle
    if isinstance(x, keras.utils.PyDataset):
        return x, x[0]
    if inspect.isgenerator(x):
        first = next(x, None)
        if first is None:      # exhausted: Keras' to handle
            return x, None
        if isinstance(first, dict):    # Keras' refusal prints the whole batch (~500 lines)
            raise ValueError("a generator given to fit() yields tuples, (batch,) for an SGAN's "
                             f"dict batches; it yielded a dict of {sorted(first)}")

        def replayed():
            yield first
            yield from x

        return replayed(), first
    arrays = keras.tree.flatten(x)
    if arrays and all(hasattr(array, "shape") and hasattr(array, "__getitem__")
                      for array in arrays):
        return x, keras.tree.map_structure(lambda array: array[:batch_size or 32], x)
    return x, None    # e.g. a tf.distribute DistributedDataset


def _image_arrays(batch):
    """Every image array of ``batch``: a dict batch's under :data:`_IMAGE_KEYS`, or ``batch``."""
    if isinstance(batch, dict):
        return [batch[key] for key in _IMAGE_KEYS if key in batch]
    return [batch]


def _images_of(batch):
    if isinstance(batch, dict):   # train_dataset's batches, or masked_dataset's ("images")
        for key in ("unlabeled_images", "images", "labeled_images"):
            if key in batch:
                return batch[key]
        raise ValueError(f"a dict batch holds its images under unlabeled_images, images or "
                         f"labeled_images; got a dict of {sorted(batch)}")
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _check_training_keys(batch, update_order):
    """Refuses a training dict without a key the step reads, with the keys it
    needs: a misspelled or missing one was a bare ``KeyError`` from the graph.
    The simultaneous step reads no ``generator_images`` (G's loss comes from D's pass)."""
    needed = (("images", "labels", "label_mask") if "label_mask" in batch else
              ("labeled_images", "labels", "unlabeled_images")
              + (() if update_order == "simultaneous" else ("generator_images",)))
    missing = [key for key in needed if key not in batch]
    if missing:
        raise ValueError(
            f"an SGAN's training batch is a dict of labeled_images, labels, unlabeled_images "
            f"and generator_images (SemiSupervisedData.train_dataset), or of images, labels "
            f"and label_mask (masked_dataset); got a dict of {sorted(batch)}, without "
            f"{', '.join(missing)}")


def _labeled_of(batch, use):
    """The labeled images and class ids of ``batch``; ``use`` names the caller
    (``evaluate()``, ...) in the error."""
    if isinstance(batch, dict):
        if "labeled_images" not in batch:    # e.g. masked_dataset's one batch
            raise ValueError(
                f"{use} takes (images, labels) batches (SemiSupervisedData."
                f"test_dataset) or train_dataset's dicts; got a dict of {sorted(batch)}")
        return batch["labeled_images"], _class_ids(batch["labels"])
    if isinstance(batch[0], dict):      # it failed on the dict's dtype
        raise ValueError(f"{use} takes images and labels, or a dict batch holding both "
                         f"(labeled_images, labels); got a dict of {sorted(batch[0])} and "
                         f"labels apart")
    return batch[0], _class_ids(batch[1])


def _class_ids(labels):
    """``labels`` as ``[N]`` class ids. Keras' sparse losses and metrics also take
    ``[N, 1]`` (``keras.datasets.cifar10``'s shape), which the sparse cross
    entropy here would refuse with a rank error. A retraced ``tf.function`` that saw
    both may pass labels of unknown rank: they are flattened too. ``[N, K]``
    labels (one-hot) are refused: flattened, they would be N * K labels for N
    logits, a screen-long graph error."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank is not None and labels.shape.rank > 1 and any(
            size is not None and size > 1 for size in labels.shape[1:]):
        raise ValueError(_one_hot_refusal(labels.shape))
    return labels if labels.shape.rank == 1 else tf.reshape(labels, [-1])


def _one_hot_refusal(shape):
    """The line refusing ``[N, K]`` labels, host-side (:func:`_check_class_ids`)
    and in the graph (:func:`_class_ids`)."""
    return (f"labels of shape {shape} (one-hot?): an SGAN takes class ids, shape [N] or "
            "[N, 1]; np.argmax(labels, axis=-1) gives them")

