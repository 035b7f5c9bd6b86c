"""The SGAN model: step order, training, determinism, EMA, distribution."""

import functools
import json
import textwrap
import types
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import preloaded
from conftest import random_algorithms
from sgan_keras import PRESETS, SGAN, Config
from sgan_keras import model as model_lib
from sgan_keras import presets
from sgan_keras.config import ConfigError
from sgan_keras.layers import all_layers
from sgan_keras.optimizers import FusedAdam, ImprovedGANAdam, LinearDecay

K = 3
LATENT = 5
IMAGE_SHAPE = (4, 4, 1)


def tiny_networks(fake_class="zero", seed=0):
    """A dense G and D small enough to train in a few steps."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    z = keras.Input((LATENT,))
    x = keras.layers.Dense(16, activation="tanh", kernel_initializer=init(0))(z)
    generator = keras.Model(z, keras.layers.Reshape(IMAGE_SHAPE)(x), name="generator")
    images = keras.Input(IMAGE_SHAPE)
    features = keras.layers.Dense(8, activation="relu", kernel_initializer=init(1))(
        keras.layers.Flatten()(images))
    width = K if fake_class == "zero" else K + 1
    logits = keras.layers.Dense(width, kernel_initializer=init(2))(features)
    discriminator = keras.Model(images, [logits, features], name="discriminator")
    return generator, discriminator


def tiny_model(fake_class="zero", seed=0, **kwargs):
    generator, discriminator = tiny_networks(fake_class, seed)
    model = SGAN(generator, discriminator, Config().replace(
        fake_class=fake_class, noise_stddev=1.0, seed=seed, **kwargs))
    assert model.num_classes == K          # read from D's logits
    model.compile(d_optimizer=keras.optimizers.Adam(1e-2),
                  g_optimizer=keras.optimizers.Adam(1e-2))
    return model


def class_patterns(count, seed):
    """Images in (-1, 1), the models' pixel_range, whose class is which third
    of the pixels is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=count)
    images = rng.normal(0, 0.3, size=(count, 16)).astype(np.float32)
    for i, label in enumerate(labels):
        images[i, label * 5:(label + 1) * 5] += 1.5
    return np.tanh(images).reshape(count, *IMAGE_SHAPE), labels.astype(np.int32)


def tiny_batch(seed=0, size=8):
    labeled, labels = class_patterns(size, seed)
    unlabeled, _ = class_patterns(size, seed + 1)
    generator_images, _ = class_patterns(size, seed + 2)
    return {"labeled_images": tf.constant(labeled), "labels": tf.constant(labels),
            "unlabeled_images": tf.constant(unlabeled),
            "generator_images": tf.constant(generator_images)}


def tiny_dataset(seed=0, size=8):
    labeled, labels = class_patterns(64, seed)
    unlabeled, _ = class_patterns(256, seed + 1)
    def element(i):
        pick = lambda n, offset: tf.random.stateless_uniform(  # noqa: E731
            [size], [seed + offset, i], 0, n, tf.int64)
        l_idx = pick(64, 0)
        return {"labeled_images": tf.gather(labeled, l_idx),
                "labels": tf.gather(labels, l_idx),
                "unlabeled_images": tf.gather(unlabeled, pick(256, 1)),
                "generator_images": tf.gather(unlabeled, pick(256, 2))}
    return tf.data.Dataset.range(10**6).map(element)


def weights(model):
    return [w.numpy().copy() for w in model.weights]


class CallCounter(keras.layers.Layer):
    """The identity, counting its calls in training and in inference mode."""

    def build(self, input_shape):
        self.training_calls = self.add_weight(shape=(), initializer="zeros",
                                              trainable=False, name="training_calls")
        self.inference_calls = self.add_weight(shape=(), initializer="zeros",
                                               trainable=False, name="inference_calls")

    def call(self, inputs, training=False):
        (self.training_calls if training else self.inference_calls).assign_add(1.0)
        return inputs


def counted_model(update_order="sequential", generator_fakes="fresh",
                  d_lr=1e-2, g_lr=1e-2, **kwargs):
    """``tiny_model`` whose G counts its forward passes."""
    generator, discriminator = tiny_networks()
    z = keras.Input((LATENT,))
    counter = CallCounter(name="counter")
    counted = keras.Model(z, generator(counter(z)), name="counted_generator")
    model = SGAN(counted, discriminator, Config().replace(
        noise_stddev=1.0, seed=0, update_order=update_order, generator_fakes=generator_fakes,
        **kwargs))
    model.compile(d_optimizer=keras.optimizers.Adam(d_lr),
                  g_optimizer=keras.optimizers.Adam(g_lr))
    return model, counter


def step(model, batch, steps=1):
    """Runs ``train_step`` compiled, as ``fit`` does."""
    compiled = tf.function(model.train_step)
    for _ in range(steps):
        logs = compiled(batch)
    return logs


def training_state(model):
    """Every variable of ``model``'s training state (``SGAN.state_variables``), as arrays."""
    return [variable.numpy().copy() for variable in model.state_variables()]


def restore(model, state):
    """Puts back a ``training_state``: weights, optimizers (their step, so the
    noise drawn), trackers."""
    for variable, value in zip(model.state_variables(), state, strict=True):
        variable.assign(value)


ORDERS = [("sequential", "fresh"), ("sequential", "reused"), ("simultaneous", "fresh"),
          ("split", "fresh")]
# (D's learning rate, G's): both networks train, G is frozen, D is frozen.
LEARNING_RATES = {"both": (1e-2, 1e-2), "frozen_generator": (1e-2, 0.0),
                  "frozen_discriminator": (0.0, 1e-2)}


@functools.cache
def one_step_at_each_learning_rate(update_order, generator_fakes):
    """``counted_model(update_order, generator_fakes)`` stepped once on ``tiny_batch()``
    at each of ``LEARNING_RATES`` from the same start (its training state restored
    in between), on one trace of the step: G's and D's weights before and after
    each step, and G's forward passes in a step. Several tests read it (one
    trace per order, not one per test and learning rate); none may change it.
    Also the first step's logs and each optimizer's updates in it."""
    model, counter = counted_model(update_order, generator_fakes)
    d_optimizers = [optimizer for optimizer in (model.d_optimizer, model.d_unsupervised_optimizer)
                    if optimizer is not None]
    compiled_d_rates = [float(optimizer.learning_rate) for optimizer in d_optimizers]
    start = training_state(model)
    compiled = tf.function(model.train_step)
    networks = ("generator", "discriminator")
    before = {name: weights(getattr(model, name)) for name in networks}
    trainable = {name: [w.trainable for w in getattr(model, name).weights] for name in networks}
    after, first = {}, None
    for rates in (*LEARNING_RATES, "both"):
        restore(model, start)
        d_lr, g_lr = LEARNING_RATES[rates]
        for optimizer in d_optimizers:
            optimizer.learning_rate.assign(d_lr)
        model.g_optimizer.learning_rate.assign(g_lr)
        logs = compiled(tiny_batch())
        stepped = {name: weights(getattr(model, name)) for name in networks}
        if rates in after:       # the restored start trains as the first did
            for a, b in zip(after[rates]["generator"] + after[rates]["discriminator"],
                            stepped["generator"] + stepped["discriminator"]):
                np.testing.assert_array_equal(a, b)
        after[rates] = stepped
        if first is None:
            first = types.SimpleNamespace(
                logs={name: float(value) for name, value in logs.items()},
                updates={name: int(getattr(model, name).iterations) for name in (
                    "d_optimizer", "d_unsupervised_optimizer", "g_optimizer")
                    if getattr(model, name) is not None},
                training_calls=float(counter.training_calls),
                inference_calls=float(counter.inference_calls))
    return types.SimpleNamespace(before=before, after=after, trainable=trainable,
                                 compiled_d_rates=compiled_d_rates, first_step=first)


@pytest.mark.parametrize("update_order, generator_fakes", ORDERS)
def test_each_optimizer_changes_only_its_network(update_order, generator_fakes):
    run = one_step_at_each_learning_rate(update_order, generator_fakes)
    # The split order's copy of D's optimizer took D's rate in compile() (the
    # runs set both by hand): D's rate given to compile() is the rate of both.
    assert run.compiled_d_rates == pytest.approx([1e-2] * (2 if update_order == "split" else 1))
    for frozen in ("generator", "discriminator"):
        after = run.after[f"frozen_{frozen}"]
        for name in ("generator", "discriminator"):
            unchanged = all(np.array_equal(a, b) for a, b, trainable in
                            zip(run.before[name], after[name], run.trainable[name]) if trainable)
            assert unchanged == (name == frozen), (name, frozen)


@pytest.mark.parametrize("update_order, generator_fakes", ORDERS)
def test_generator_update_sees_the_updated_discriminator_unless_simultaneous(
        update_order, generator_fakes):
    # G's update after a D update of lr 1e-2 and after one of lr 0: the same
    # G weights exactly when G's gradient is taken against the D before its
    # update (the Udacity notebook's one sess.run), different otherwise.
    run = one_step_at_each_learning_rate(update_order, generator_fakes)
    same = all(np.array_equal(a, b) for a, b in zip(
        run.after["both"]["generator"], run.after["frozen_discriminator"]["generator"]))
    assert same == (update_order == "simultaneous")


@pytest.mark.parametrize("update_order, generator_fakes, training_calls, inference_calls", [
    ("sequential", "fresh", 2, 0),      # Salimans et al.: a fresh G(z') for G's update
    ("sequential", "reused", 1, 0),     # the MNIST blog: one G forward pass per step
    ("simultaneous", "fresh", 1, 0),    # Udacity: one forward pass for both updates
    ("split", "fresh", 1, 1),           # GANs in Action: generator.predict, then G's update
])
def test_generator_forward_passes_per_step(update_order, generator_fakes, training_calls,
                                           inference_calls):
    run = one_step_at_each_learning_rate(update_order, generator_fakes)
    assert run.first_step.training_calls == training_calls
    assert run.first_step.inference_calls == inference_calls


def test_keras_sees_ds_optimizer_so_callbacks_log_its_rate_and_step():
    """TensorBoard logs ``model.optimizer``'s learning rate and puts evaluation
    points at its step count: D's, not an RMSprop Keras made and never steps."""
    model = tiny_model()
    model.fit(tiny_dataset(), steps_per_epoch=3, epochs=1, verbose=0)
    assert model.optimizer is model.d_optimizer
    assert int(model.optimizer.iterations) == 3
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)


def test_split_order_perturbs_its_fakes_in_the_mode_it_drew_them():
    """GANs in Action draws its fakes in inference mode (``generator.predict``):
    the manifold term's perturbed fakes come from G in the same mode, so the
    term compares like with like (and G's BatchNorm statistics stay as they were)."""
    model, counter = counted_model("split", "fresh", manifold="lecouat")
    step(model, tiny_batch(), steps=3)
    assert counter.training_calls.numpy() == 3        # G's own update only
    assert counter.inference_calls.numpy() == 3 * 2   # the fakes and the perturbed fakes


@pytest.mark.parametrize("distribution", ["uniform", "normal", "standard_normal"])
def test_latent_noise_names_tensorflows_philox_generator(distribution):
    """``z``'s draw names Philox (``SGAN._sample_noise``), as the noise layer
    does: with ``alg="auto_select"`` an XLA-compiled step ran slowly."""
    model = SGAN(*tiny_networks(), Config().replace(noise_stddev=1.0))
    algorithms = random_algorithms(lambda seed: model._sample_noise([5, LATENT], seed,
                                                                    distribution),
                                   tf.TensorSpec([2], tf.int64))
    assert algorithms == [tf.random.Algorithm.PHILOX.value]


def test_reused_fakes_train_g_on_the_d_steps_noise():
    # With reused fakes G's update differs from the fresh-noise one: it is
    # taken on G(z) of the D step, not on G(z').
    fresh, reused = (one_step_at_each_learning_rate("sequential", generator_fakes)
                     for generator_fakes in ("fresh", "reused"))
    assert any(not np.allclose(a, b) for a, b in zip(fresh.after["both"]["generator"],
                                                     reused.after["both"]["generator"]))


def test_split_order_takes_three_discriminator_updates_with_two_optimizers():
    first_step = one_step_at_each_learning_rate("split", "fresh").first_step
    assert first_step.updates == {"d_optimizer": 1,                  # labeled batch
                                  "d_unsupervised_optimizer": 2,     # real, then fake
                                  "g_optimizer": 1}
    assert np.isfinite(first_step.logs["d_loss"]) and np.isfinite(first_step.logs["g_loss"])


def batch_norm_discriminator():
    """``tiny_networks``' D with its hidden layer batch-normalized."""
    init = lambda i: keras.initializers.GlorotUniform(seed=i)  # noqa: E731
    images = keras.Input(IMAGE_SHAPE)
    hidden = keras.layers.Dense(8, kernel_initializer=init(1))(keras.layers.Flatten()(images))
    features = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(hidden))
    logits = keras.layers.Dense(K, kernel_initializer=init(2))(features)
    return keras.Model(images, [logits, features], name="discriminator")


def test_split_order_moves_ds_batch_norm_statistics_on_the_labeled_batch_only():
    """GANs in Action's Keras 2 models: the unsupervised D and the combined
    model's D are frozen, so their updates leave D's moving statistics alone.
    Two steps from the same start that differ only in the unlabeled and
    generator images end with the same statistics, which the labeled batch has moved."""
    rng = np.random.default_rng(0)

    def images(scale):
        return tf.constant(rng.uniform(-scale, scale, (4, *IMAGE_SHAPE)).astype(np.float32))

    generator, _ = tiny_networks()
    model = SGAN(generator, batch_norm_discriminator(), Config().replace(
        noise_stddev=1.0, seed=0, update_order="split"))
    model.compile(d_optimizer="adam", g_optimizer="adam")
    start = training_state(model)
    compiled = tf.function(model.train_step)
    labeled = {"labeled_images": images(1.0), "labels": tf.constant([0, 1, 2, 0])}
    statistics = []
    for scale in (0.1, 1.0):
        restore(model, start)
        compiled({**labeled, "unlabeled_images": images(scale),
                  "generator_images": images(scale)})
        statistics.append([variable.numpy() for layer in all_layers(model.discriminator)
                           if isinstance(layer, keras.layers.BatchNormalization)
                           for variable in (layer.moving_mean, layer.moving_variance)])
    assert statistics[0] and all(np.array_equal(a, b) for a, b in zip(*statistics))
    initial = [np.zeros_like(v) if i % 2 == 0 else np.ones_like(v)
               for i, v in enumerate(statistics[0])]           # mean 0, variance 1
    assert all(not np.allclose(a, b) for a, b in zip(statistics[0], initial))


def test_compiling_again_with_the_same_optimizers_keeps_the_split_orders_third():
    # e.g. compile(...) again to change jit_compile: Keras keeps an optimizer's state
    model = tiny_model(update_order="split")
    model.fit(tiny_dataset(), steps_per_epoch=2, epochs=1, verbose=0)
    third = model.d_unsupervised_optimizer
    model.compile(d_optimizer=model.d_optimizer, g_optimizer=model.g_optimizer,
                  jit_compile=False)
    assert model.d_unsupervised_optimizer is third and int(third.iterations) == 4
    model.compile(d_optimizer="adam", g_optimizer="adam")     # a new D optimizer: a new copy
    assert int(model.d_unsupervised_optimizer.iterations) == 0


def test_split_orders_copied_optimizer_follows_the_schedule_by_training_step():
    # The copy updates twice a step; its schedule must not run twice as fast.
    schedule = LinearDecay(1e-2, start_step=0, end_step=10)
    model, _ = counted_model("split")
    model.compile(d_optimizer=keras.optimizers.Adam(schedule),
                  g_optimizer=keras.optimizers.Adam(1e-2))
    step(model, tiny_batch(), steps=3)
    copied = model.d_unsupervised_optimizer
    assert int(copied.iterations) == 6
    assert float(model.d_optimizer.learning_rate) == pytest.approx(float(schedule(3)))
    assert float(copied.learning_rate) == pytest.approx(float(schedule(3)))
    assert float(schedule(3)) != pytest.approx(float(schedule(6)))
    rebuilt = keras.optimizers.Adam.from_config(copied.get_config())   # serializable
    rebuilt.build(model.discriminator.trainable_variables)
    rebuilt.iterations.assign(6)
    assert float(rebuilt.learning_rate) == pytest.approx(float(schedule(3)))


def masked_batch(seed=0, size=8, labeled=(0, 3, 5)):
    images, labels = class_patterns(size, seed)
    mask = np.zeros(size, np.float32)
    mask[list(labeled)] = 1.0
    return images, labels, mask


@pytest.mark.parametrize("update_order", ["simultaneous", "sequential"])
def test_masked_batching_uses_only_the_labeled_images_labels(update_order):
    images, labels, mask = masked_batch()
    model, _ = counted_model(update_order)
    start = training_state(model)
    compiled = tf.function(model.train_step)

    def train(step_labels):       # one step from the same start, on one trace
        restore(model, start)
        compiled({"images": tf.constant(images), "labels": tf.constant(step_labels),
                  "label_mask": tf.constant(mask)})
        return weights(model.discriminator)

    reference = train(labels)
    unmasked_changed = labels.copy()
    unmasked_changed[mask == 0] = (labels[mask == 0] + 1) % K    # labels L_sup must ignore
    for a, b in zip(reference, train(unmasked_changed)):
        np.testing.assert_array_equal(a, b)
    unknown = labels.copy()
    unknown[mask == 0] = -1                          # "no label", as a user's data may say
    for a, b in zip(reference, train(unknown)):
        np.testing.assert_array_equal(a, b)
    masked_changed = labels.copy()
    masked_changed[mask == 1] = (labels[mask == 1] + 1) % K
    assert any(not np.array_equal(a, b) for a, b in zip(reference, train(masked_changed)))


def test_masked_supervised_loss_is_the_mean_over_labeled_images():
    images, labels, mask = masked_batch()
    model, _ = counted_model("simultaneous", d_lr=0.0, g_lr=0.0)
    logs = model.train_step({"images": tf.constant(images), "labels": tf.constant(labels),
                             "label_mask": tf.constant(mask)})
    logits, _ = model.discriminator(images, training=False)   # tiny D: no dropout
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()
    np.testing.assert_allclose(float(logs["supervised_loss"]),
                               cross_entropy[mask == 1].mean(), rtol=1e-5)


@pytest.mark.parametrize("update_order", ["sequential", "split"])
def test_a_label_mask_of_shape_n_by_1_trains_as_one_of_shape_n(update_order):
    """A [N, 1] mask (labels may be [N, 1]) broadcast against the [N] labels
    into [N, N]: a rank error from the cross entropy."""
    images, labels, mask = masked_batch()
    def train(step_mask):
        model, _ = counted_model(update_order)
        return model.train_on_batch({"images": images, "labels": labels[:, None],
                                     "label_mask": step_mask}, return_dict=True)

    assert train(mask[:, None].astype(bool)) == train(mask)


def test_fit_takes_masked_batches_as_the_cli_gives_them():
    """svhn_dcgan's source procedure: fit() on a dataset of masked batches
    (its first batch also feeds the weight-norm init)."""
    images, labels, mask = masked_batch(size=16, labeled=(0, 3, 5, 9))
    batches = tf.data.Dataset.from_tensors({"images": images, "labels": labels,
                                            "label_mask": mask}).repeat()
    model, _ = counted_model("simultaneous")
    history = model.fit(batches, epochs=1, steps_per_epoch=2, verbose=0)
    assert int(model.d_optimizer.iterations) == 2
    assert np.isfinite(history.history["supervised_loss"][-1])


@pytest.mark.parametrize("generator_loss", ["feature_matching_l2", "non_saturating"])
@pytest.mark.parametrize("update_order", ["sequential", "simultaneous"])
def test_one_concatenated_discriminator_call_trains_as_separate_calls(update_order,
                                                                      generator_loss):
    trained, largest_call = [], []
    for independent in (True, False):
        model, recorder = recorded_model(update_order=update_order,
                                         generator_loss=generator_loss)
        assert model.discriminator_batches_independent      # tiny D: no BatchNorm
        model.discriminator_batches_independent = independent
        logs = step(model, tiny_batch(size=8), steps=2)
        trained.append((weights(model.discriminator) + weights(model.generator),
                        {name: float(value) for name, value in logs.items()}))
        largest_call.append(max(recorder.batch_sizes))
    # The two took different paths: D saw one joined batch, or only single ones.
    assert largest_call[0] > 8 and largest_call[1] == 8
    for a, b in zip(trained[0][0], trained[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name, value in trained[0][1].items():
        np.testing.assert_allclose(value, trained[1][1][name], rtol=1e-5, atol=1e-6)


class BatchSizeRecorder(keras.layers.Layer):
    """The identity, recording the batch size of each call (when traced)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batch_sizes = []

    def call(self, inputs):
        self.batch_sizes.append(inputs.shape[0])
        return inputs


def recorded_model(generator_fakes="fresh", **overrides):
    """A ``tiny_model`` (feature matching unless ``overrides`` say otherwise)
    whose D records its calls' batch sizes."""
    generator, discriminator = tiny_networks()
    recorder = BatchSizeRecorder()
    images = keras.Input(IMAGE_SHAPE)
    recorded = keras.Model(images, discriminator(recorder(images)))
    model = SGAN(generator, recorded, Config().replace(**{
        "noise_stddev": 1.0, "seed": 0, "generator_fakes": generator_fakes,
        "generator_loss": "feature_matching_l2", **overrides}))
    model.compile(d_optimizer=keras.optimizers.Adam(1e-2),
                  g_optimizer=keras.optimizers.Adam(1e-2))
    recorder.batch_sizes.clear()
    return model, recorder


@pytest.mark.parametrize("generator_fakes", ["fresh", "reused"])
def test_feature_matching_calls_d_on_the_fakes_and_the_real_images_apart(generator_fakes):
    """G's loss depends on G through the fakes only: the real images get a D
    call of their own (as in improved-gan and the MNIST blog), so G's
    backward pass does not run through them; D's update keeps one call."""
    model, recorder = recorded_model(generator_fakes)
    step(model, tiny_batch(size=8))
    assert recorder.batch_sizes == [3 * 8, 8, 8]   # D's update; G's: fakes, then real


def test_discriminators_with_batch_norm_keep_one_call_per_batch():
    # BatchNorm's statistics would mix the labeled, real and fake batches.
    for name in sorted(PRESETS):
        model = SGAN.from_preset(name, seed=0)
        has_batch_norm = any(isinstance(layer, keras.layers.BatchNormalization)
                             for layer in model.discriminator.layers)
        assert model.discriminator_batches_independent is not has_batch_norm, name
    # A user's D whose batch norm sits inside a custom layer (not a Model): it
    # was not found, and D's batches went through it as one concatenated batch.
    class NormalizedDense(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(8)
            self.norm = keras.layers.BatchNormalization()

        def call(self, inputs, training=False):
            return self.norm(self.dense(inputs), training=training)

    generator, discriminator = tiny_networks()
    images = keras.Input(IMAGE_SHAPE)
    features = NormalizedDense()(keras.layers.Flatten()(images))
    blocked = keras.Model(images, [keras.layers.Dense(K)(features), features])
    assert not SGAN(generator, blocked, Config()).discriminator_batches_independent


def test_reused_fakes_need_the_sequential_order():
    with pytest.raises(ValueError, match="needs --update_order=sequential"):
        counted_model("simultaneous", "reused")


@pytest.mark.parametrize("fake_class", ["zero", "learned", "separate"])
def test_fit_lowers_the_supervised_loss(fake_class):
    model = tiny_model(fake_class)
    images, labels = class_patterns(64, 0)
    test = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    before = model.evaluate(test, verbose=0, return_dict=True)
    history = model.fit(tiny_dataset(), steps_per_epoch=40, epochs=1, verbose=0)
    after = model.evaluate(test, verbose=0, return_dict=True)
    assert after["cross_entropy"] < 0.5 * before["cross_entropy"]
    assert after["accuracy"] > 0.9
    for name in ("d_loss", "g_loss", "supervised_loss", "unsupervised_loss", "accuracy"):
        assert np.isfinite(history.history[name][0])


def weight_norm_discriminator():
    """``tiny_networks``' D with a weight-normalized hidden layer (data-dependent init)."""
    from sgan_keras.layers import WeightNormDense   # pylint: disable=import-outside-toplevel
    images = keras.Input(IMAGE_SHAPE)
    features = WeightNormDense(8, activation="relu", kernel_initializer="glorot_uniform")(
        keras.layers.Flatten()(images))
    return keras.Model(images, [keras.layers.Dense(K)(features), features])


def test_fit_initializes_weight_norm_on_the_first_batch_of_any_data(tmp_path):
    images, labels = class_patterns(64, 0)
    initialized = []
    for data in ("arrays", "generator", "dataset"):
        keras.utils.set_random_seed(0)
        model = SGAN(None, weight_norm_discriminator(), Config(supervised_only=True))
        model.compile(d_optimizer=keras.optimizers.SGD(0.0))   # weights stay as initialized
        if data == "arrays":
            model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
        elif data == "generator":
            batches = ((images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16))
            model.fit(batches, steps_per_epoch=4, epochs=1, verbose=0)
            assert int(model.d_optimizer.iterations) == 4   # the first batch trained too
        else:
            model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(16),
                      epochs=1, verbose=0)
        assert model.weight_norm_initialized, data
        initialized.append(weights(model))
    for other in initialized[1:]:       # each on the same first 16 images
        for a, b in zip(initialized[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # Data it cannot peek into (e.g. a DistributedDataset) asks for the init by hand.
    model = SGAN(None, weight_norm_discriminator(), Config(supervised_only=True))
    model.compile(d_optimizer="sgd")
    with pytest.raises(ValueError, match="call model.initialize_weight_norm"):
        model.fit(iter([(images, labels)]), epochs=1, verbose=0)


def test_fit_after_load_weights_keeps_the_loaded_weights_of_a_weight_norm_network(tmp_path):
    """fit() ran the data-dependent init again on weights loaded from a
    ``.weights.h5`` file, overwriting their trained scales and biases."""
    images, labels = class_patterns(64, 0)
    model = SGAN(None, weight_norm_discriminator(), Config(supervised_only=True))
    model.compile(d_optimizer=keras.optimizers.SGD(0.1))
    path = tmp_path / "before_fit.weights.h5"
    model.save_weights(path)                      # not initialized yet: fit() still inits
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    model.save_weights(tmp_path / "trained.weights.h5")
    for name, initialized in (("trained", True), ("before_fit", False)):
        fresh = SGAN(None, weight_norm_discriminator(), Config(supervised_only=True))
        fresh.compile(d_optimizer=keras.optimizers.SGD(0.1))
        fresh.load_weights(tmp_path / f"{name}.weights.h5")
        fresh.d_optimizer.learning_rate.assign(0.0)   # (the file's 0.1): only the init moves them
        loaded = weights(fresh)
        fresh.fit(images[::-1], labels[::-1], batch_size=16, epochs=1, verbose=0)
        assert fresh.weight_norm_initialized
        kept = all(np.array_equal(a, b) for a, b in zip(loaded, weights(fresh)))
        assert kept == initialized, name


def test_two_runs_with_the_same_seed_give_identical_weights():
    runs = []
    for _ in range(2):
        model = tiny_model(seed=3, manifold="lecouat")
        model.fit(tiny_dataset(seed=3), steps_per_epoch=5, epochs=1, verbose=0)
        runs.append(weights(model))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = tiny_model(seed=4, manifold="lecouat")
    other.fit(tiny_dataset(seed=3), steps_per_epoch=5, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], weights(other)))


def test_classifier_outputs_k_logits_for_the_learned_variant():
    model = tiny_model("learned")
    images, labels = class_patterns(10, 0)
    assert model.predict(images, verbose=0).shape == (10, K)
    assert model(images).shape == (10, K)
    np.testing.assert_allclose(model.classifier()(images), model(images), rtol=1e-6)
    metrics = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert set(metrics) == {"accuracy", "cross_entropy"}


def test_ema_tracks_the_discriminator_and_is_used_for_evaluation():
    # A decay other than 0.5, at which decay and 1 - decay swapped pass too.
    model = tiny_model(ema_decay=0.75)
    # The average is no trainable weight of the model (summary(), count_params()).
    assert {id(w) for w in model.trainable_weights} == {
        id(w) for w in model.generator.trainable_weights + model.discriminator.trainable_weights}
    batch = tiny_batch()
    before = [w.numpy().copy() for w in model.discriminator.weights]
    model.train_step(batch)
    averages = model.ema_discriminator.weights
    assert len(averages) == len(before) == 4
    for average, old, new in zip(averages, before, model.discriminator.weights):
        assert not np.allclose(old, new.numpy())
        np.testing.assert_allclose(average.numpy(), 0.75 * old + 0.25 * new.numpy(), rtol=1e-5)
    images = batch["labeled_images"]
    ema_logits, _ = model.ema_discriminator(images)
    np.testing.assert_allclose(model(images), ema_logits, rtol=1e-6)


def test_weight_norm_init_gives_g_a_noise_batch_of_batch_size_and_d_every_image(monkeypatch):
    """improved-gan's init pass: D on the 500 init images, G on its noise batch of
    batch_size (100); G got as many noise rows as D's images."""
    seen = {}
    initialize = model_lib.sgan_layers.initialize_weight_norm

    def recording(network, batch):
        seen[network.name] = int(batch.shape[0])
        return initialize(network, batch)
    monkeypatch.setattr(model_lib.sgan_layers, "initialize_weight_norm", recording)
    model = SGAN.from_preset("mnist_improved_gan", batch_size=4)
    model.initialize_weight_norm(np.random.default_rng(0).random((12, 28, 28, 1), np.float32))
    assert seen == {model.generator.name: 4, model.discriminator.name: 12}


def test_from_preset_refuses_the_gans_options_with_supervised_only():
    """from_preset("mnist_blog", supervised_only=True, update_order="split")
    blamed the preset's generator_fakes; the CLI's --supervised_only already
    named the option that changes nothing."""
    with pytest.raises(ConfigError, match=r"^supervised_only=True trains no generator; drop "
                                          r"update_order$"):
        SGAN.from_preset("mnist_blog", supervised_only=True, update_order="split")
    assert SGAN.from_preset("mnist_blog", supervised_only=True).generator is None


def test_from_preset_with_the_unified_procedure_trains_it_as_the_command_line():
    """from_preset("mnist_gans_in_action", procedure="unified") set the field
    alone: its config said unified while the model took the book's three D
    updates (update_order "split") and its first 100 labels."""
    model = SGAN.from_preset("mnist_gans_in_action", procedure="unified", seed=0)
    assert model.config == presets.resolve({"preset": "mnist_gans_in_action",
                                            "procedure": "unified"})
    assert model.config.training.update_order == "sequential"
    own = SGAN.from_preset("mnist_gans_in_action", procedure="unified", update_order="split")
    assert own.config.training.update_order == "split"   # a flag overrides either


def test_from_preset_refuses_an_override_that_changes_nothing():
    """manifold_weight without a manifold regularization built a model
    without one, where --manifold_weight alone is refused."""
    with pytest.raises(ConfigError, match=r"^manifold_weight changes nothing without "
                                          r"--manifold_reg=lecouat or blog; drop it$"):
        SGAN.from_preset("mnist_gans_in_action", manifold_weight=0.1)
    with pytest.raises(ConfigError, match=r"^noise_stddev changes nothing without"):
        SGAN.from_preset("mnist_improved_gan", noise_stddev=0.5)


def test_supervised_only_mode_needs_no_generator():
    _, discriminator = tiny_networks()
    model = SGAN(None, discriminator, Config(supervised_only=True))
    model.compile(d_optimizer=keras.optimizers.Adam(1e-2))
    images, labels = class_patterns(64, 0)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(16)
    history = model.fit(data, steps_per_epoch=30, epochs=1, verbose=0)
    assert set(history.history) == {"supervised_loss", "accuracy"}
    assert model.evaluate(images, labels, verbose=0, return_dict=True)["accuracy"] > 0.9



def test_a_batch_without_labeled_images_names_the_call_that_needs_them():
    """masked_dataset's one batch has no labeled_images: the line names fit()
    of a supervised_only model, or evaluate(), whichever was called."""
    _, discriminator = tiny_networks()
    model = SGAN(None, discriminator, Config(supervised_only=True))
    model.compile(d_optimizer=keras.optimizers.Adam(1e-2))
    images, labels = class_patterns(8, 0)
    masked = {"images": images, "labels": labels, "label_mask": np.ones(8, bool)}
    with pytest.raises(ValueError, match=r"a supervised_only SGAN's fit\(\) takes \(images, "
                                         r"labels\) batches .* got a dict of \['images', "):
        model.fit(masked, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^evaluate\(\) takes \(images, labels\) batches"):
        model.evaluate(masked, verbose=0)

def test_bad_options_are_rejected():
    generator, discriminator = tiny_networks()
    for option in ({"fake_class": "eleven"}, {"generator_loss": "wasserstein"},
                   {"manifold": "yes"}, {"ema_decay": 1.0}):
        with pytest.raises(ValueError, match=next(iter(option))):
            SGAN(generator, discriminator, Config().replace(**option))


def test_wrong_networks_or_config_get_a_clear_error():
    generator, discriminator = tiny_networks()
    with pytest.raises(TypeError, match="config must be a sgan_keras.Config"):
        SGAN(generator, discriminator, {"fake_class": "zero"})
    with pytest.raises(ValueError, match=r"must map images to \[logits \[B, n\], features\]"):
        SGAN(discriminator, generator, Config())      # swapped
    logits_only = keras.Model(discriminator.input, discriminator.output[0])
    with pytest.raises(ValueError, match="must map images to"):
        SGAN(generator, logits_only, Config())
    z = keras.Input((LATENT,))
    wide = keras.Model(z, keras.layers.Reshape((4, 8, 1))(keras.layers.Dense(32)(z)))
    with pytest.raises(ValueError, match=r"makes images of shape \(4, 8, 1\), the "
                                         r"discriminator takes \(4, 4, 1\)"):
        SGAN(wide, discriminator, Config())
    with pytest.raises(ValueError, match=r"config precision='mixed_bfloat16', but the "
                                         r"networks compute in float32"):
        SGAN(generator, discriminator, Config().replace(precision="mixed_bfloat16"))
    # Keras flattens a dict's outputs by key: features came first, read as the
    # logits (K = the feature width), and fit() failed on a SplitV of strings.
    logits, features = discriminator.output
    as_dict = keras.Model(discriminator.input, {"logits": logits, "features": features})
    with pytest.raises(ValueError, match=r"outputs a dict of \['features', 'logits'\]: give "
                                         r"keras.Model the list \[logits, features\]"):
        SGAN(generator, as_dict, Config())
    nested = keras.Model(discriminator.input, [logits, [features]])
    with pytest.raises(ValueError, match="must map images to"):
        SGAN(generator, nested, Config())
    one_logit = keras.Model(discriminator.input, [keras.layers.Dense(1)(features), features])
    for fake_class in ("learned", "separate"):     # K = 0: a traceback at the first step
        with pytest.raises(ValueError, match=rf"^fake_class='{fake_class}' takes K \+ 1 "
                                             r"logits .* outputs 1$"):
            SGAN(generator, one_logit, Config().replace(fake_class=fake_class))
    grid_noise = keras.Sequential([keras.Input((2, LATENT)), keras.layers.Flatten(),
                                   keras.layers.Dense(16), keras.layers.Reshape((4, 4, 1))])
    with pytest.raises(ValueError, match=r"must take noise z \[B, latent_dim\]; .* takes "
                                         r"\(None, 2, "):
        SGAN(grid_noise, discriminator, Config())
    # Every preset's own networks pass: test_discriminators_with_batch_norm_keep_one_call_per_batch
    # and test_every_preset_takes_a_finite_training_step build each.
    for precision in ("float32", "mixed_bfloat16"):     # built in the precision asked
        assert SGAN.from_preset("mnist_blog", precision=precision).precision == precision


class SubclassedDiscriminator(keras.Model):
    """``tiny_networks``' D written as a subclassed model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.logits = keras.layers.Dense(K)

    def call(self, images, training=False):
        features = self.hidden(keras.ops.reshape(images, (-1, 16)))
        return self.logits(features), features


def test_a_subclassed_network_is_refused_with_how_to_wrap_it():
    """Its shapes cannot be read: SGAN() raised AttributeError 'output_shape'."""
    generator, _ = tiny_networks()
    subclassed = SubclassedDiscriminator()
    subclassed(np.zeros((1, *IMAGE_SHAPE), np.float32))
    with pytest.raises(TypeError, match=r"the discriminator must be a functional or Sequential "
                       r"keras.Model .* got SubclassedDiscriminator; wrap a subclassed one"):
        SGAN(generator, subclassed, Config())
    images = keras.Input(IMAGE_SHAPE)
    wrapped = keras.Model(images, subclassed(images))     # as the message says
    model = SGAN(generator, wrapped, Config().replace(noise_stddev=1.0))
    model.compile(d_optimizer="adam", g_optimizer="adam")
    assert np.isfinite(model.train_on_batch(tiny_batch(), return_dict=True)["d_loss"])


def test_compile_takes_optimizer_names_and_refuses_what_it_cannot_use():
    generator, discriminator = tiny_networks()
    model = SGAN(generator, discriminator, Config().replace(noise_stddev=1.0))
    model.compile(d_optimizer="adam", g_optimizer="sgd")   # Keras names, as compile() takes
    assert isinstance(model.d_optimizer, keras.optimizers.Adam)
    assert isinstance(model.g_optimizer, keras.optimizers.SGD)
    model.fit(tiny_dataset(), steps_per_epoch=2, epochs=1, verbose=0)
    assert int(model.d_optimizer.iterations) == int(model.g_optimizer.iterations) == 2
    shared = keras.optimizers.Adam(1e-3)
    with pytest.raises(ValueError, match="must be two optimizers"):
        model.compile(d_optimizer=shared, g_optimizer=shared)
    with pytest.raises(ValueError, match="d_optimizer must be a keras.optimizers.Optimizer"):
        model.compile(d_optimizer=3)
    for keras_argument in ({"optimizer": "adam"}, {"loss": "mse"}, {"metrics": ["accuracy"]}):
        with pytest.raises(TypeError, match=f"not {next(iter(keras_argument))}="):
            model.compile(**keras_argument)


def test_compile_takes_the_configs_jit_compile_unless_given_its_own():
    """Config(jit_compile='true') (from_preset(..., jit_compile=...)) was accepted
    and ignored by compile(): only the command line's trainer read it."""
    assert tiny_model(jit_compile="true").jit_compile is True
    assert tiny_model(jit_compile="false").jit_compile is False
    model = tiny_model(jit_compile="true")
    model.compile(jit_compile=False)
    assert model.jit_compile is False


def test_compile_refuses_an_optimizer_that_keeps_its_own_weight_average():
    """Keras' ``fit()`` ends with ``model.optimizer.finalize_variable_values(
    model.trainable_weights)``: with ``use_ema=True`` D's optimizer wrote its
    averages over G's and D's weights by position (here a shape error after
    the last step; silently wrong weights where shapes agree)."""
    model = tiny_model()
    for argument in ("d_optimizer", "g_optimizer"):
        with pytest.raises(ValueError, match=f"^{argument} has use_ema=True, which an SGAN "
                                             r"cannot use: .* the SGAN's ema_decay$"):
            model.compile(**{argument: keras.optimizers.Adam(1e-2, use_ema=True)})
    model.fit(tiny_dataset(), steps_per_epoch=2, epochs=1, verbose=0)   # still as compiled
    # Without G the trainable weights are D's alone: Keras' EMA ends the fit.
    baseline = SGAN(None, tiny_networks()[1], Config().replace(supervised_only=True))
    baseline.compile(d_optimizer=keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5))
    images, labels = class_patterns(16, 0)
    baseline.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    averages = baseline.d_optimizer._model_variables_moving_average
    for weight, average in zip(baseline.discriminator.trainable_weights, averages, strict=True):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())


def test_batch_methods_take_dict_batches_and_evaluate_weighs_samples():
    model = tiny_model()
    batch = tiny_batch()
    logs = model.train_on_batch(batch, return_dict=True)     # Keras passes (batch, None, None)
    assert int(model.d_optimizer.iterations) == 1 and np.isfinite(logs["g_loss"])
    on_batch = model.test_on_batch(batch, return_dict=True)
    images, labels = batch["labeled_images"], batch["labels"]
    assert on_batch == model.evaluate(images, labels, verbose=0, return_dict=True)
    assert model.predict_on_batch(batch).shape == (8, K)
    # sample_weight counts: weight only the first image, as if evaluated alone
    weighted = model.evaluate(images, labels, sample_weight=np.eye(8)[0], verbose=0,
                              return_dict=True)
    alone = model.evaluate(images[:1], labels[:1], verbose=0, return_dict=True)
    assert weighted == pytest.approx(alone)
    with pytest.raises(ValueError, match="need supervised_only=True"):
        model.train_on_batch(images, labels)
    masked = {"images": images, "labels": labels, "label_mask": tf.ones([8])}  # masked_dataset
    with pytest.raises(ValueError, match=r"evaluate\(\) takes \(images, labels\) batches.*"
                                         r"\['images', 'label_mask', 'labels'\]"):
        model.test_on_batch(masked)
    # A dict of images with labels apart failed on the dict's dtype (AttributeError).
    with pytest.raises(ValueError, match=r"^evaluate\(\) takes images and labels, or a dict "
                                         r"batch holding both .* got a dict of \['images'\]"):
        model.evaluate({"images": images}, labels, verbose=0)


def test_a_training_dict_without_a_key_the_step_reads_is_refused_naming_it():
    """A missing key was a bare KeyError from the graph ('generator_images'),
    and one without any image key the step knows an AttributeError on the
    dict's dtype (British spelling; zipping data sets into a dict of tuples)."""
    batch = {key: value.numpy() for key, value in tiny_batch().items()}
    message = (r"^an SGAN's training batch is a dict of labeled_images, labels, "
               r"unlabeled_images and generator_images .* got a dict of ")
    with pytest.raises(ValueError, match=message + r".* without generator_images$"):
        tiny_model().fit({key: value for key, value in batch.items()
                          if key != "generator_images"}, epochs=1, verbose=0)
    # The simultaneous step takes G's loss from D's pass: it reads no generator_images.
    tiny_model(update_order="simultaneous").train_on_batch(
        {key: value for key, value in batch.items() if key != "generator_images"})
    with pytest.raises(ValueError, match=message + r"\['generator_images', 'label', .* "
                                                   r"without labels$"):
        tiny_model().train_on_batch({("label" if key == "labels" else key): value
                                     for key, value in batch.items()})
    british = {key.replace("labeled", "labelled"): value for key, value in batch.items()}
    with pytest.raises(ValueError, match=r"^a dict batch holds its images under "
                                         r"unlabeled_images, images or labeled_images; got "
                                         r"a dict of \['generator_images', 'labelled_images'"):
        tiny_model().fit(british, epochs=1, verbose=0)


def test_validation_dicts_evaluate_refuses_are_refused_before_training():
    """A masked dict (validation_data or validation_split), or a dict of images
    with the labels apart, was refused by evaluate() after the first epoch."""
    images, labels = class_patterns(8, 0)
    masked = {"images": images, "labels": labels, "label_mask": np.ones(8, np.float32)}
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^fit\(\)'s validation_data takes \(images, labels\) "
                                         r"batches .* got a dict of \['images', 'label_mask'"):
        model.fit(tiny_dataset().take(2), epochs=1, verbose=0, validation_data=masked)
    with pytest.raises(ValueError, match=r"^fit\(\)'s validation_data takes images and labels, "
                                         r"or a dict batch holding both"):
        model.fit(tiny_dataset().take(2), epochs=1, verbose=0,
                  validation_data=({"images": images}, labels))
    with pytest.raises(ValueError, match=r"^fit\(\)'s validation_split takes \(images, labels\)"):
        model.fit(masked, batch_size=4, epochs=1, verbose=0, validation_split=0.5)
    assert int(model.d_optimizer.iterations) == 0
    history = model.fit(tiny_batch(), epochs=1, verbose=0, validation_split=0.5).history
    assert "val_accuracy" in history       # train_dataset's dicts hold labeled images


def test_a_sample_weight_keras_would_drop_with_a_dict_batch_is_refused():
    """evaluate(dict, sample_weight=...) gave the unweighted result without a
    word (Keras drops a sample_weight without y), where test_on_batch weighs it."""
    model = tiny_model()
    batch = {key: value.numpy() for key, value in tiny_batch().items()}
    first = np.eye(8, dtype=np.float32)[0]
    message = r"takes no sample_weight with a dict batch: Keras drops it without labels y"
    with pytest.raises(ValueError, match=r"^evaluate\(\) " + message):
        model.evaluate(batch, sample_weight=first, verbose=0)
    with pytest.raises(ValueError, match=r"^fit\(\)'s validation_data " + message):
        model.fit(tiny_dataset().take(2), epochs=1, verbose=0,
                  validation_data=(batch, None, first))
    assert int(model.d_optimizer.iterations) == 0
    weighted = model.evaluate(batch["labeled_images"], batch["labels"], sample_weight=first,
                              verbose=0, return_dict=True)
    assert model.test_on_batch(batch, sample_weight=first, return_dict=True) == weighted


def test_sample_weights_of_shape_n_and_n_by_1_evaluate_alike_one_after_the_other():
    """evaluate()'s retrace for [N, 1] weights after [N] ones gave them unknown
    rank: 'Cannot take the length of shape with unknown rank' from the trackers."""
    images, labels = class_patterns(16, 0)
    weights = (np.arange(16) % 3 == 0).astype(np.float32)
    model = tiny_model()
    flat = model.evaluate(images, labels, sample_weight=weights, verbose=0, return_dict=True)
    column = model.evaluate(images, labels, sample_weight=weights[:, None], verbose=0,
                            return_dict=True)
    assert column == pytest.approx(flat)
    assert flat == pytest.approx(model.evaluate(images[weights > 0], labels[weights > 0],
                                                verbose=0, return_dict=True))


def test_labels_of_shape_n_by_1_train_and_evaluate_as_keras_sparse_labels():
    """keras.datasets.cifar10 gives labels [N, 1], which Keras' sparse losses take:
    they raised a rank error in the SGAN's cross entropy."""
    images, labels = class_patterns(16, 0)
    column = labels[:, None]
    model = tiny_model()
    assert model.evaluate(images, column, verbose=0, return_dict=True) == \
        model.evaluate(images, labels, verbose=0, return_dict=True)
    batch = {**tiny_batch(), "labels": tiny_batch()["labels"][:, None]}
    assert np.isfinite(model.train_on_batch(batch, return_dict=True)["supervised_loss"])
    _, discriminator = tiny_networks()
    supervised = SGAN(None, discriminator, Config(supervised_only=True))
    supervised.compile(d_optimizer=keras.optimizers.Adam(1e-2))
    logs = supervised.fit(images, column, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["supervised_loss"][0])
    # One-hot [N, K] labels flattened to N * K labels: a graph error; now one line.
    one_hot = np.eye(10, dtype=np.float32)[labels]
    message = r"labels of shape \(\w+, 10\) \(one-hot\?\): an SGAN takes class ids"
    with pytest.raises(ValueError, match=message):
        model.evaluate(images, one_hot, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=message):      # a data set's: in the graph
        model.evaluate(tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(8), verbose=0)
    with pytest.raises(ValueError, match=message):
        model.train_on_batch({**tiny_batch(), "labels": np.eye(10)[tiny_batch()["labels"]]})
    with pytest.raises(ValueError, match=message):
        supervised.fit(images, one_hot, batch_size=8, epochs=1, verbose=0)
    # validation_data's were refused only after the first epoch had trained.
    steps = int(supervised.d_optimizer.iterations)
    with pytest.raises(ValueError, match="fit\\(\\)'s validation_data: " + message):
        supervised.fit(images, labels, batch_size=8, epochs=1, verbose=0,
                       validation_data=(images, one_hot))
    assert int(supervised.d_optimizer.iterations) == steps


def test_labels_out_of_the_models_classes_are_refused_in_arrays():
    """A label >= K in arrays was a graph error from the cross entropy on the CPU,
    and NaN losses without a word on a GPU; unlabeled images' labels under a
    label_mask may be anything (-1 here)."""
    images, labels = class_patterns(16, 0)
    wrong = labels.copy()
    wrong[5] = K
    model = tiny_model()
    message = rf"label {K} is not a class id of this model's {K} classes, 0..{K - 1} \(1 of 16"
    with pytest.raises(ValueError, match="evaluate\\(\\): " + message):
        model.evaluate(images, wrong, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="test_on_batch"):
        model.test_on_batch(images, wrong[:, None] * 1)
    with pytest.raises(ValueError, match=r"label -1 is not a class id"):
        model.train_on_batch({**tiny_batch(), "labels": -np.ones(8, np.int32)})
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(tiny_dataset().take(2), epochs=1, verbose=0,
                  validation_data=(images, wrong))
    # A dict batch as validation_data was refused only after the first epoch, by evaluate().
    with pytest.raises(ValueError, match="fit\\(\\)'s validation_data: " + message):
        model.fit(tiny_dataset().take(2), epochs=1, verbose=0,
                  validation_data={"labeled_images": images, "labels": wrong})
    assert int(model.d_optimizer.iterations) == 0
    _, discriminator = tiny_networks()
    supervised = SGAN(None, discriminator, Config(supervised_only=True))
    supervised.compile(d_optimizer=keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="fit"):
        supervised.fit(images, wrong, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^a supervised_only SGAN's fit\(\) takes images and "
                                         r"labels, or a dict batch holding both"):
        supervised.fit({"images": images}, labels, batch_size=8, epochs=1, verbose=0)
    masked = {"images": images, "labels": np.where(np.arange(16) % 2, -1, labels),
              "label_mask": (np.arange(16) % 2 == 0).astype(np.float32)}
    assert np.isfinite(model.train_on_batch(masked, return_dict=True)["supervised_loss"])


def test_integer_images_are_refused_with_one_line_not_cast_to_float():
    """Raw uint8 images reached D as floats 0-255 without a word (Keras casts
    them): fit(), the steps, evaluate(), predict() and the init refuse them."""
    images, labels = class_patterns(16, 0)
    raw = np.clip(images * 100 + 100, 0, 255).astype(np.uint8)
    message = r"the images are uint8: an SGAN takes float images in its pixel_range \(-1, 1\)"
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        model.initialize_weight_norm(raw)
    assert not model.weight_norm_initialized        # the refused batch set nothing up
    with pytest.raises(ValueError, match=message):
        model.fit({**tiny_batch(), "unlabeled_images": raw[:8]}, epochs=1, verbose=0)
    model.initialize_weight_norm(tiny_batch())
    for key in ("labeled_images", "unlabeled_images", "generator_images"):
        with pytest.raises(ValueError, match=message):
            model.train_on_batch({**tiny_batch(), key: raw[:8]})
    with pytest.raises(ValueError, match=message):
        model.evaluate(raw, labels, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.predict(raw, verbose=0)
    with pytest.raises(ValueError, match=message):
        model(raw)
    _, discriminator = tiny_networks()
    supervised = SGAN(None, discriminator, Config(supervised_only=True))
    supervised.compile(d_optimizer=keras.optimizers.Adam(1e-2))
    supervised.initialize_weight_norm((images, labels))
    with pytest.raises(ValueError, match=message):
        supervised.fit(raw, labels, batch_size=8, epochs=1, verbose=0)
    # validation_data's were refused only after the first epoch had trained.
    steps = int(model.d_optimizer.iterations)
    for validation in ((raw, labels), {"labeled_images": raw, "labels": labels}):
        with pytest.raises(ValueError, match=message):
            model.fit(tiny_dataset().take(2), epochs=1, verbose=0, validation_data=validation)
    assert int(model.d_optimizer.iterations) == steps
    assert np.isfinite(model.evaluate(images, labels, verbose=0, return_dict=True)["accuracy"])


def test_float64_images_train_as_float32_ones():
    """NumPy's x / 255 is float64: D's one call on the real and fake images
    (float32) failed with a ConcatV2 dtype error in train_on_batch() and in
    fit() on a data set (Keras casts arrays only)."""
    batch = {key: value.numpy() for key, value in tiny_batch().items()}
    wide = {key: value.astype(np.float64) if key.endswith("images") else value
            for key, value in batch.items()}
    expected = tiny_model().train_on_batch(batch, return_dict=True)
    assert tiny_model().train_on_batch(wide, return_dict=True) == expected
    data = tf.data.Dataset.from_tensors(wide).repeat(2)
    history = tiny_model().fit(data, epochs=1, verbose=0).history
    assert np.isfinite(history["d_loss"][0])



@pytest.mark.parametrize("pixel_range, scale, problem", [
    ((-1.0, 1.0), lambda x: (x + 1) * 127.5, "outside"),      # floats 0-255
    ((-1.0, 1.0), lambda x: (x + 1) / 2, "none below 0 in"),  # x / 255 images
    ((0.0, 1.0), lambda x: x, "outside"),                     # (-1, 1) images
])
def test_images_not_in_the_pixel_range_get_a_warning_naming_both_ranges(
        pixel_range, scale, problem):
    """D would tell real images from G's by their range alone. The first batch
    (initialize_weight_norm, which fit() calls on it) names the range it saw
    and the model's; images in the range give no warning."""
    batch = tiny_batch()
    low, high = pixel_range
    wrong = {key: scale(value) if key.endswith("images") else value
             for key, value in batch.items()}
    message = (rf"the images lie in \[.*\], {problem} the model's pixel_range "
               rf"\({low:g}, {high:g}\), where G's images are")
    with pytest.warns(UserWarning, match=message) as caught:
        tiny_model(pixel_range=pixel_range).initialize_weight_norm(wrong)
    assert [w.filename for w in caught if "pixel_range" in str(w.message)] == [__file__]
    right = {key: (value + 1) / 2 if key.endswith("images") and low == 0 else value
             for key, value in batch.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_model(pixel_range=pixel_range).initialize_weight_norm(right)
    assert not [w for w in caught if "pixel_range" in str(w.message)]


def test_fit_checks_the_pixel_range_of_its_first_batch():
    images, labels = class_patterns(16, 0)
    with pytest.warns(UserWarning, match=r"none below 0 in the model's pixel_range \(-1, 1\)") \
            as caught:
        tiny_model().fit({**tiny_batch(), "unlabeled_images": (images[:8] + 1) / 2},
                         epochs=1, verbose=0)
    assert [w.filename for w in caught if "pixel_range" in str(w.message)] == [__file__]


def test_fit_checks_its_first_batch_after_the_weight_norm_init_too():
    """The check ran with the init alone: a loaded model's fit(), one after
    initialize_weight_norm() or a second fit() took 0-255 floats without a word.
    An empty data set is left to Keras (it raised a bare StopIteration)."""
    images, _ = class_patterns(8, 0)
    model = tiny_model()
    model.initialize_weight_norm(tiny_batch())
    wrong = {**tiny_batch(), "unlabeled_images": (images + 1) * 127.5}
    with pytest.warns(UserWarning, match=r"outside the model's pixel_range \(-1, 1\)") as caught:
        model.fit(wrong, epochs=1, verbose=0)
    assert [w.filename for w in caught if "pixel_range" in str(w.message)] == [__file__]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(tf.data.Dataset.from_tensors(tiny_batch()).take(0), epochs=1, verbose=0)
    assert not [w for w in caught if "pixel_range" in str(w.message)]


# A script's start: two logical CPUs, before TensorFlow makes its devices.
TWO_LOGICAL_CPUS = """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests_dir!r})
    import test_model as t
"""

MIRRORED_SCRIPT = textwrap.dedent(TWO_LOGICAL_CPUS + """
    import keras
    from sgan_keras import optimizers

    def one_step(strategy):
        with strategy.scope():
            model = t.tiny_model(manifold="lecouat", ema_decay=0.9, ema_rule={ema_rule!r},
                                 generator_loss={loss!r})
            # Each device updates its own copy of every variable through the fused update.
            model.compile(d_optimizer=optimizers.adam({rule!r}, 1e-2, 0.9, 1e-8),
                          g_optimizer=optimizers.adam({rule!r}, 1e-2, 0.9, 1e-8))
        history = model.fit(t.tiny_dataset(size=8), steps_per_epoch=1, epochs=1, verbose=0)
        return ({{k: v[0] for k, v in history.history.items()}},
                [w.numpy() for w in model.weights])

    single_logs, single_weights = one_step(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    mirrored_logs, mirrored_weights = one_step(mirrored)
    weight_gap = max(float(np.max(np.abs(a - b))) for a, b in zip(single_weights, mirrored_weights))
    print(json.dumps({{"single": single_logs, "mirrored": mirrored_logs, "weight_gap": weight_gap}}))
""")


@pytest.mark.parametrize("generator_loss, adam_rule", [("feature_matching_l1", "improved_gan"),
                                                      ("non_saturating", "keras")])
def test_mirrored_strategy_on_two_cpus_matches_one_device(generator_loss, adam_rule, tmp_path):
    import json
    import pathlib
    # The weight average by the same source's rule: improved-gan's reads D's
    # weights at the step's start, in each replica (the model's weights compared).
    script = MIRRORED_SCRIPT.format(
        tests_dir=str(pathlib.Path(__file__).parent), loss=generator_loss, rule=adam_rule,
        ema_rule="improved_gan" if adam_rule == "improved_gan" else "tensorflow")
    # Logical CPUs need a TensorFlow runtime of its own (tests/preloaded.py).
    result = preloaded.run_code(script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["single"]) == set(report["mirrored"])
    for name, value in report["single"].items():
        assert abs(value - report["mirrored"][name]) < 1e-5, name
    assert report["weight_gap"] < 1e-5


UNEVEN_REPLICAS_SCRIPT = textwrap.dedent(TWO_LOGICAL_CPUS + """

    images, labels = t.class_patterns(16, 5)
    # One step of 8 images whose 3 labeled ones all go to the first replica.
    masked = {{"images": images[:8], "labels": labels[:8],
               "label_mask": np.array([1, 1, 1, 0, 0, 0, 0, 0], np.float32)}}
    def logs(strategy):
        with strategy.scope():
            model = t.tiny_model(label_batching="masked")
        evaluated = model.evaluate(images, labels, batch_size=7, verbose=0, return_dict=True)
        trained = model.fit(masked, batch_size=8, epochs=1, verbose=0).history
        return {{**evaluated, "train_accuracy": trained["accuracy"][0]}}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # Training batches the 2 replicas cannot share equally are refused.
    with mirrored.scope():
        model = t.tiny_model()
    arrays = {{key: np.concatenate([value] * 3) for key, value in t.tiny_batch().items()}}
    arrays, split = {{key: value[:15] for key, value in arrays.items()}}, {{
        key: value[:18] for key, value in arrays.items()}}
    refused = []
    for data, kwargs in ((t.tiny_dataset(size=7), {{"steps_per_epoch": 1}}),
                         (arrays, {{"batch_size": 7}}), (arrays, {{"batch_size": 8}}),
                         (split, {{"batch_size": 8, "validation_split": 1 / 6}})):
        try:
            model.fit(data, epochs=1, verbose=0, **kwargs)
        except ValueError as error:
            refused.append(str(error))
    shared = model.fit(arrays, batch_size=8, steps_per_epoch=1, epochs=1, verbose=0).history
    # Data sets of unknown batch size (batched by 8, the last batch 7 or 6 of 15 or 14):
    # checked at each step, for the GAN's step and the supervised one.
    with mirrored.scope():
        supervised = t.tiny_model(supervised_only=True)
    in_graph = []
    for fitted, count in ((model, 15), (model, 14), (supervised, 15)):
        data = tf.data.Dataset.from_tensor_slices({{key: value[:count]
                                                   for key, value in split.items()}})
        if fitted is supervised:
            data = data.map(lambda batch: (batch["labeled_images"], batch["labels"]))
        try:
            fitted.fit(data.batch(8), epochs=1, verbose=0)
            in_graph.append("")
        except tf.errors.InvalidArgumentError as error:
            in_graph.append(error.message)
    try:
        with mirrored.scope():
            model.compile(steps_per_execution=2)
        refused.append("")
    except ValueError as error:
        refused.append(str(error))
    print(json.dumps({{"single": logs(tf.distribute.get_strategy()),
                      "mirrored": logs(mirrored), "refused": refused, "in_graph": in_graph,
                      "shared": np.isfinite(shared["d_loss"][0]).item()}}))
""")


def test_metrics_of_replicas_with_unequal_shares_are_the_global_batches():
    # Keras averages the replicas' logs: evaluate()'s batches of 7 split 4 and 3
    # (accuracy 0.167 for 0.1875), and with the labeled images on one replica the
    # training accuracy was another (0.75 for 0.667).
    import json
    import pathlib
    script = UNEVEN_REPLICAS_SCRIPT.format(tests_dir=str(pathlib.Path(__file__).parent))
    result = preloaded.run_code(script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["single"]) == set(report["mirrored"])
    for name, value in report["single"].items():
        assert abs(value - report["mirrored"][name]) < 1e-5, (name, report)
    # Training batches they cannot share (a data set's 7, arrays' 7, the last 7 of
    # 15 in 8s, also of the 15 of 18 that validation_split=1/6 trains on, which
    # passed) overlapped their noise, trained otherwise than one device, or
    # logged NaN on an empty replica; refused with one line. 8 of 15 for one step is not.
    *uneven, steps_per_execution = report["refused"]
    assert len(uneven) == 4, report["refused"]
    for message in uneven:
        assert message.startswith("fit() under 2 replicas needs batches they can share "
                                  "equally, a multiple of 2 images; got batches of 7:"), message
    assert report["shared"] is True
    # A data set of unknown batch size can only be checked as it trains: its last
    # batch of 7 split 4 and 3 stops training, one of 6 (3 and 3) trains.
    uneven, even, supervised = report["in_graph"]
    for message in uneven, supervised:
        assert ("assertion failed: [training under 2 replicas needs batches they can share "
                "equally, a multiple of 2 images; a batch of unknown size was split "
                "unequally:") in message, message[-3000:]
    assert "[[4 3]" in uneven and "[[4 3]]" in supervised, (uneven[-3000:], supervised[-3000:])
    assert even == ""
    # Keras' multi-step loop under 2 replicas: a graph error at the first fit().
    assert steps_per_execution == (
        "steps_per_execution=2 under 2 replicas: Keras' multi-step loop fails there at the "
        "first fit() (\"You must feed a value for placeholder tensor\"); compile with "
        "steps_per_execution=1")


ON_BATCH_REPLICAS_SCRIPT = textwrap.dedent(TWO_LOGICAL_CPUS + """

    images, _ = t.class_patterns(7, 3)
    def on_batch(strategy):
        with strategy.scope():
            model = t.tiny_model(ema_decay=0.9)
        logs = [model.train_on_batch(t.tiny_batch(seed), return_dict=True) for seed in (0, 1)]
        return logs[-1], [w.numpy() for w in model.weights], model.predict_on_batch(images)

    single_logs, single_weights, single_logits = on_batch(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    logs, weights, logits = on_batch(mirrored)
    with mirrored.scope():
        model = t.tiny_model()
    refused = []
    for cut in ("every array", "labeled_images"):    # a dict batch's arrays checked each
        try:
            model.train_on_batch({{key: value[:7] if cut in (key, "every array") else value
                                  for key, value in t.tiny_batch().items()}})
            refused.append("")
        except ValueError as error:
            refused.append(str(error))
    # Fewer images than replicas, to a weight-normed convolution (an empty share fails there).
    import keras
    from sgan_keras.model import SGAN
    from sgan_keras.config import Config
    from sgan_keras.layers import WeightNormConv2D
    with mirrored.scope():
        generator, _ = t.tiny_networks()
        inputs = keras.Input(t.IMAGE_SHAPE)
        x = keras.layers.Conv2D(2, 1)(inputs)
        features = keras.layers.Flatten()(WeightNormConv2D(3, 3, data_init=False)(x))
        conv = SGAN(generator, keras.Model(inputs, [keras.layers.Dense(t.K)(features), features]),
                    Config().replace(fake_class="zero", seed=0))
        conv.compile()
    one_image = {{"rows": conv.predict_on_batch(images[:1]).shape[0],
                 "accuracy": conv.test_on_batch(images[:1], np.array([0]),
                                                return_dict=True)["accuracy"]}}
    # A model built outside the scope, or in another strategy's: one line, not Keras'
    # bare AssertionError (or its RuntimeError); in a one-device scope it trains.
    scopes = []
    for built, scope in ((tf.distribute.get_strategy(), mirrored),
                         (mirrored, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                         (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0"))):
        with built.scope():
            model = t.tiny_model()
        with scope.scope():
            try:
                model.fit(t.tiny_batch(), epochs=1, verbose=0)
                scopes.append("trained")
            except ValueError as error:
                scopes.append(str(error))
    print(json.dumps({{"single": single_logs, "mirrored": logs, "refused": refused,
                      "scopes": scopes, "one_image": one_image,
                      "weight_gap": max(float(np.max(np.abs(a - b)))
                                        for a, b in zip(single_weights, weights)),
                      "logits": list(logits.shape),
                      "logit_gap": float(np.max(np.abs(logits[:7] - single_logits)))}}))
""")


def test_on_batch_calls_under_two_replicas_split_the_batch_as_fit_does():
    """Keras' train_on_batch() gave every replica the whole batch: each trained on
    all of it with its own slice of a twice as large noise draw (other losses and
    weights than one device), and predict_on_batch() returned 14 rows for 7 images.
    Training in a scope the model was not built in gets one line."""
    import json
    import pathlib
    script = ON_BATCH_REPLICAS_SCRIPT.format(tests_dir=str(pathlib.Path(__file__).parent))
    result = preloaded.run_code(script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, value in report["single"].items():
        assert abs(value - report["mirrored"][name]) < 1e-5, (name, report)
    assert report["weight_gap"] < 1e-5
    assert report["logits"] == [7, K] and report["logit_gap"] < 1e-5
    for refused in report["refused"]:
        assert refused.startswith("train_on_batch() under 2 replicas needs batches they can "
                                  "share equally, a multiple of 2 images; got batches of 7"), refused
    assert report["one_image"]["rows"] == 1 and report["one_image"]["accuracy"] in (0.0, 1.0)
    outside = ("fit() runs inside a tf.distribute strategy's scope this SGAN was not built in: "
               "build and compile it (its networks too) inside strategy.scope(), then train it "
               "there or outside any scope")
    assert report["scopes"] == [outside, outside, "trained"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_takes_a_finite_training_step(preset):
    fake_class = "learned" if preset == "svhn_dcgan" else "zero"
    manifold = "blog" if preset == "mnist_blog" else "lecouat"
    model = SGAN.from_preset(preset, seed=0, fake_class=fake_class, manifold=manifold)
    model.compile()
    rng = np.random.default_rng(0)
    low, high = model.pixel_range
    images = lambda: tf.constant(  # noqa: E731
        rng.uniform(low, high, size=(2, *model.image_shape)).astype(np.float32))
    batch = {"labeled_images": images(), "labels": tf.constant([0, 1]),
             "unlabeled_images": images(), "generator_images": images()}
    model.initialize_weight_norm(batch)
    logs = model.train_step(batch)
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert float(logs["manifold_loss"]) > 0
    assert model.generate(2).shape == (2, *model.image_shape)


def test_presets_use_their_sources_adam():
    # improved-gan's nn.adam_updates: epsilon 1e-8 inside the root (optimizers.py).
    for name in ("mnist_improved_gan", "svhn_improved_gan", "cifar10_improved_gan"):
        model = SGAN.from_preset(name, seed=0)
        model.compile()
        for optimizer in (model.d_optimizer, model.g_optimizer):
            assert isinstance(optimizer, ImprovedGANAdam) and optimizer.epsilon == 1e-8
    for name, epsilon in (("mnist_blog", 1e-8), ("svhn_dcgan", 1e-8),     # TF1's default
                          ("mnist_gans_in_action", 1e-7)):                # Keras'
        model = SGAN.from_preset(name, seed=0)
        model.compile()
        assert type(model.d_optimizer) is FusedAdam
        assert model.d_optimizer.epsilon == model.g_optimizer.epsilon == epsilon
    model = SGAN.from_preset("mnist_blog", seed=0, adam_epsilon=1e-3)
    model.compile()
    assert model.g_optimizer.epsilon == 1e-3


def float32_heads(network):
    """``network`` with each output through a float32 layer (the Keras mixed precision guide)."""
    outputs = [keras.layers.Activation("linear", dtype="float32")(tensor)
               for tensor in network.outputs]
    return keras.Model(network.inputs, outputs if len(outputs) > 1 else outputs[0],
                       name=network.name)


def test_a_global_mixed_policy_trains_float32_headed_networks_and_refuses_others():
    float32_generator, float32_discriminator = tiny_networks()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        generator, discriminator = tiny_networks()
        # The SGAN itself stays float32: predict() gets the images unrounded.
        model = SGAN(float32_generator, float32_discriminator, Config().replace(noise_stddev=1.0))
        assert model.dtype_policy.name == "float32"
        with pytest.raises(ValueError, match="discriminator's outputs are bfloat16"):
            SGAN(float32_generator, discriminator, Config())
        with pytest.raises(ValueError, match="generator's outputs are bfloat16"):
            SGAN(generator, float32_discriminator, Config())
        mixed = SGAN(float32_heads(generator), float32_heads(discriminator),
                     Config().replace(noise_stddev=1.0))
        with pytest.raises(ValueError, match="manifold regularization needs float32"):
            SGAN(float32_heads(generator), float32_heads(discriminator),   # its term was 0
                 Config().replace(manifold="lecouat"))
        # A bfloat16 G beside a float32 D is mixed too (only D's layers were read:
        # its manifold loss was exactly 0, and precision='float32' passed).
        with pytest.raises(ValueError, match="manifold regularization needs float32"):
            SGAN(float32_heads(generator), float32_discriminator,
                 Config().replace(manifold="lecouat"))
        with pytest.raises(ValueError, match=r"config precision='float32', but the networks "
                                             r"compute in mixed_bfloat16"):
            SGAN(float32_heads(generator), float32_discriminator,
                 Config().replace(precision="float32"))
        keras.config.set_dtype_policy("mixed_float16")
        half_generator, half_discriminator = (float32_heads(network)
                                              for network in tiny_networks())
        with pytest.raises(ValueError, match="computes in float16"):
            SGAN(half_generator, half_discriminator, Config())
    finally:
        keras.config.set_dtype_policy("float32")
    images, _ = class_patterns(16, 0)
    images = images * 1.001 + 0.0123       # values bfloat16 rounds
    model.compile(d_optimizer="adam", g_optimizer="adam")
    np.testing.assert_array_equal(model.predict(images, verbose=0), model.classifier()(images))
    assert mixed.precision == "mixed_bfloat16"
    mixed.compile(d_optimizer="adam", g_optimizer="adam")
    history = mixed.fit(tiny_dataset(), steps_per_epoch=2, epochs=1, verbose=0)
    assert all(np.isfinite(values[0]) for values in history.history.values())


@pytest.mark.parametrize("preset", ["mnist_gans_in_action", "mnist_improved_gan"])
def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_losses(preset):
    reference = SGAN.from_preset(preset, seed=0)
    model = SGAN.from_preset(preset, seed=0, precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"   # no global state left behind
    assert model.precision == "mixed_bfloat16" and reference.precision == "float32"
    assert {layer.compute_dtype for layer in model.discriminator.layers} >= {"bfloat16"}
    assert {w.dtype for w in model.weights} == {"float32"}
    for ours, theirs in zip(model.weights, reference.weights):   # same initial weights
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    rng = np.random.default_rng(0)
    low, high = model.pixel_range
    images = rng.uniform(low, high, size=(2, *model.image_shape)).astype(np.float32)
    logits, features = model.discriminator(images, training=False)
    expected, _ = reference.discriminator(images, training=False)
    assert logits.dtype == features.dtype == "float32"
    # bfloat16 keeps ~3 significant digits: close to float32, not equal to it.
    gap = np.abs(logits.numpy() - expected.numpy()).max()
    assert 0 < gap < 0.1 * (np.abs(expected.numpy()).max() + 1)
    assert model.generator(tf.zeros([2, 100]), training=False).dtype == "float32"
    assert model.classifier()(images).dtype == "float32"
    model.compile()
    batch = {"labeled_images": tf.constant(images), "labels": tf.constant([0, 1]),
             "unlabeled_images": tf.constant(images), "generator_images": tf.constant(images)}
    model.initialize_weight_norm(batch)
    logs = model.train_step(batch)
    assert all(np.isfinite(float(value)) for value in logs.values())


def test_mixed_bfloat16_refuses_manifold_regularization():
    with pytest.raises(ValueError, match="manifold regularization needs float32"):
        SGAN.from_preset("mnist_blog", seed=0, precision="mixed_bfloat16", manifold="blog")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="precision"):
        SGAN.from_preset("mnist_blog", seed=0, precision="float16")


def test_generate_in_training_mode_takes_the_samples_statistics_and_moves_nothing():
    """--sample_mode=training, as improved-gan's samplefun, Lecouat et al.'s and
    the Udacity notebook's samples: G in training mode (each sample batch's own
    batch-norm statistics), its moving statistics left as they were (the
    sources run no update op when they sample)."""
    model = SGAN.from_preset("mnist_gans_in_action", seed=0, sample_mode="training")
    inference = SGAN.from_preset("mnist_gans_in_action", seed=0)
    state = [variable.numpy() for variable in model.generator.non_trainable_variables]
    sampled = model.generate(6, seed=3)
    for variable, value in zip(model.generator.non_trainable_variables, state):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert not np.allclose(sampled, inference.generate(6, seed=3), atol=1e-4)
    z = model._sample_noise([6, model.latent_dim], tf.constant([3, -7], tf.int64),
                            model.config.model.noise)
    np.testing.assert_allclose(sampled, model.generator(z, training=True).numpy(), atol=1e-6)


@pytest.mark.parametrize("update_order, counted", [("sequential", [2]),
                                                   ("simultaneous", [0])])
def test_g_step_statistics_move_only_by_gs_own_loss_pass_and_change_no_weight(update_order,
                                                                             counted):
    """--generator_statistics=g_step, as Lecouat et al.'s G update ops (run
    with G's train op only): of G's training-mode passes in a step (D's
    fakes, the manifold term's perturbed ones, G's fresh ones), only those of
    G's loss move its batch norms' moving statistics; every_pass, Keras', is
    every one in turn. The weights train the same."""
    def step(generator_statistics):
        model = SGAN.from_preset("mnist_gans_in_action", seed=0, update_order=update_order,
                                 manifold="lecouat", generator_statistics=generator_statistics)
        model.compile()
        layer = [layer for layer in model.generator.layers
                 if isinstance(layer, keras.layers.BatchNormalization)][0]
        passes, call = [], layer.call

        def recording(inputs, training=None, **kwargs):
            if training:
                passes.append(inputs.numpy())
            return call(inputs, training=training, **kwargs)
        layer.call = recording
        rng = np.random.default_rng(0)
        images = lambda: tf.constant(  # noqa: E731
            rng.uniform(-1, 1, size=(4, 28, 28, 1)).astype(np.float32))
        model.train_step({"labeled_images": images(), "labels": tf.constant([0, 1, 2, 3]),
                          "unlabeled_images": images(), "generator_images": images()})
        return model, layer, passes

    def moved(layer, passes):
        mean, variance = np.zeros(layer.moving_mean.shape), np.ones(layer.moving_mean.shape)
        for inputs in passes:
            mean = layer.momentum * mean + (1 - layer.momentum) * inputs.mean(axis=(0, 1, 2))
            variance = (layer.momentum * variance
                        + (1 - layer.momentum) * inputs.var(axis=(0, 1, 2)))
        return mean, variance

    weights, modes = {}, [("g_step", counted)]
    if update_order == "sequential":   # Keras' every pass, and its weights beside g_step's, once
        modes.insert(0, ("every_pass", None))
    for generator_statistics, kept in modes:
        model, layer, passes = step(generator_statistics)
        assert len(passes) == (3 if update_order == "sequential" else 2)
        mean, variance = moved(layer, passes if kept is None else [passes[i] for i in kept])
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, atol=1e-5)
        weights[generator_statistics] = [v.numpy() for v in model.trainable_variables]
    if update_order == "sequential":
        for every_pass, g_step in zip(weights["every_pass"], weights["g_step"]):
            np.testing.assert_array_equal(every_pass, g_step)


# ------------------------------------------------------------- Keras-native
def test_keras_file_round_trip_predicts_the_same_and_trains_on_exactly(tmp_path):
    # The split order has a third optimizer; EMA a second discriminator;
    # dropout layers carry seed-generator states.
    generator, _ = tiny_networks()
    images_in = keras.Input(IMAGE_SHAPE)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(images_in))
    features = keras.layers.Dropout(0.5, seed=1)(hidden)
    discriminator = keras.Model(images_in, [keras.layers.Dense(K)(features), features])
    model = SGAN(generator, discriminator, Config().replace(
        noise_stddev=1.0, seed=0, update_order="split", ema_decay=0.9))
    model.compile(jit_compile=False, steps_per_execution=2)
    data = tf.data.Dataset.from_tensors(tiny_batch()).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    model.save(tmp_path / "sgan.keras")
    loaded = keras.models.load_model(tmp_path / "sgan.keras")
    assert type(loaded) is SGAN and loaded.config == model.config
    assert (loaded.jit_compile, loaded.steps_per_execution) == (False, 2)   # as compiled
    assert loaded.config.training.update_order == "split"
    assert loaded.config.model.ema_decay == 0.9
    images, _ = class_patterns(8, 1)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    for name in ("d_optimizer", "g_optimizer", "d_unsupervised_optimizer"):
        saved, restored = getattr(model, name), getattr(loaded, name)
        assert int(restored.iterations) == int(saved.iterations) > 0, name
        for a, b in zip(saved.variables, restored.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    loaded.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The file of a newer version, whose configuration has a field this one
    # does not know, is refused with a ConfigError naming it
    # (config.fields_of_a_newer_version).
    with zipfile.ZipFile(tmp_path / "sgan.keras") as saved:
        files = {name: saved.read(name) for name in saved.namelist()}
    keras_config = json.loads(files["config.json"])
    keras_config["config"]["config"]["g_clip"] = 1.0
    files["config.json"] = json.dumps(keras_config).encode()
    with zipfile.ZipFile(tmp_path / "newer.keras", "w") as newer:
        for name, content in files.items():
            newer.writestr(name, content)
    with pytest.raises(ConfigError, match="written by a newer sgan_keras: it has g_clip,"):
        keras.models.load_model(tmp_path / "newer.keras")


def test_a_float32_keras_file_loads_as_float32_under_a_global_mixed_policy(tmp_path):
    # Loaded under keras.config.set_dtype_policy("mixed_bfloat16"), the networks'
    # InputLayers took that policy: the SGAN said it computed in mixed_bfloat16 and
    # refused its own config (precision='float32', or a manifold loss), and an
    # export of it was refused as computing in bfloat16.
    from sgan_keras.export import export_classifier
    model = tiny_model(precision="float32", manifold="lecouat")
    model.save(tmp_path / "sgan.keras")
    images, _ = class_patterns(5, 9)
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        loaded = keras.models.load_model(tmp_path / "sgan.keras")
        assert loaded.precision == "float32"
        export_classifier(loaded, tmp_path / "export", image_shape=IMAGE_SHAPE,
                          pixel_range=loaded.pixel_range)
    finally:
        keras.config.set_dtype_policy("float32")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))


def test_model_export_writes_a_serving_saved_model(tmp_path):
    model = tiny_model(ema_decay=0.5)
    model.fit(tiny_dataset(), steps_per_epoch=2, epochs=1, verbose=0)
    model.export(tmp_path / "export", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    images, _ = class_patterns(5, 9)
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(),
                               model.predict(images, verbose=0), atol=1e-6)


def test_the_one_private_keras_method_overridden_still_exists():
    # SGAN overrides keras.Model._maybe_symbolic_build (see model.py): if Keras
    # renames it or changes its arguments, the override silently stops working.
    import inspect
    assert list(inspect.signature(keras.Model._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
    overridden = [name for name in vars(SGAN) if name.startswith("_")
                  and not name.startswith("__") and hasattr(keras.Model, name)]
    assert overridden == ["_maybe_symbolic_build"]


@pytest.mark.parametrize("update_order", ["simultaneous", "sequential", "split"])
def test_ema_copies_the_discriminators_non_trainable_state_rather_than_averaging_it(
        update_order):
    # BatchNorm's moving statistics (and fixed weight-norm scales) are state,
    # not weights to average: the copy takes them as they are at the end of the
    # step, after G's pass through D (which moves them in the sequential order).
    generator, _ = tiny_networks()
    model = SGAN(generator, batch_norm_discriminator(), Config().replace(
        fake_class="zero", noise_stddev=1.0, seed=0, ema_decay=0.75,
        update_order=update_order))
    model.compile(d_optimizer=keras.optimizers.Adam(1e-2),
                  g_optimizer=keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.discriminator.weights]
    model.train_step(tiny_batch())
    pairs = list(zip(model.ema_discriminator.weights, before, model.discriminator.weights))
    assert sum(not weight.trainable for _, _, weight in pairs) == 2   # moving mean, variance
    for average, old, new in pairs:
        assert not np.allclose(old, new.numpy()), new.path
        expected = 0.75 * old + 0.25 * new.numpy() if new.trainable else new.numpy()
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, err_msg=new.path)


@pytest.mark.parametrize("order", ["simultaneous", "sequential", "split", "supervised_only"])
def test_improved_gans_weight_average_starts_at_zero_and_averages_each_steps_starting_weights(
        order):
    """``ema_rule="improved_gan"``: openai/improved-gan's ``disc_param_avg``
    starts at zeros and, updated in the Theano call of D's Adam step, averages
    the weights from before it. D's other state is still copied after the step."""
    if order == "supervised_only":
        model = SGAN(None, batch_norm_discriminator(), Config(supervised_only=True).replace(
            seed=0, ema_decay=0.75, ema_rule="improved_gan"))
        model.compile(d_optimizer=keras.optimizers.Adam(1e-2))
        labeled = tiny_batch()
        batch = (labeled["labeled_images"], labeled["labels"])
    else:
        generator, _ = tiny_networks()
        model = SGAN(generator, batch_norm_discriminator(), Config().replace(
            fake_class="zero", noise_stddev=1.0, seed=0, ema_decay=0.75,
            ema_rule="improved_gan", update_order=order))
        model.compile(d_optimizer=keras.optimizers.Adam(1e-2),
                      g_optimizer=keras.optimizers.Adam(1e-2))
        batch = tiny_batch()
    pairs = list(zip(model.ema_discriminator.weights, model.discriminator.weights))
    assert sum(not weight.trainable for _, weight in pairs) == 2   # moving mean, variance
    for average, weight in pairs:
        start = np.zeros(weight.shape) if weight.trainable else weight.numpy()
        np.testing.assert_array_equal(average.numpy(), start, err_msg=weight.path)
    for _ in range(2):
        old_averages = [average.numpy().copy() for average, _ in pairs]
        old_weights = [weight.numpy().copy() for _, weight in pairs]
        model.train_step(batch)
        for (average, weight), old_average, old in zip(pairs, old_averages, old_weights):
            assert not np.allclose(old, weight.numpy()), weight.path   # the rules differ
            expected = (0.75 * old_average + 0.25 * old if weight.trainable
                        else weight.numpy())
            np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, atol=1e-7,
                                       err_msg=weight.path)


def test_a_generator_yielding_bare_dicts_is_refused_with_one_line():
    # Keras refuses a generator's bare dict with a message that prints the whole
    # batch (about 500 lines); a (dict,) tuple is what it takes.
    batch = {key: value.numpy() for key, value in tiny_batch().items()}

    def batches(wrap):
        while True:
            yield wrap(batch)

    with pytest.raises(ValueError, match=r"^a generator given to fit\(\) yields tuples, "
                                         r"\(batch,\) for an SGAN's dict batches; it yielded "
                                         r"a dict of \['generator_images', 'labeled_images', "
                                         r"'labels', 'unlabeled_images'\]$"):
        tiny_model().fit(batches(lambda b: b), steps_per_epoch=2, epochs=1, verbose=0)
    history = tiny_model().fit(batches(lambda b: (b,)), steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["d_loss"][-1])


def test_d_loss_logs_its_weighted_terms_and_the_manifold_term():
    """The logged d_loss is L_sup + unsupervised_weight * L_unsup + the manifold
    term, as trained (weights still: learning rates 0)."""
    model, _ = counted_model("sequential", d_lr=0.0, g_lr=0.0, unsupervised_weight=0.5,
                             manifold="lecouat", manifold_weight=1e3, manifold_epsilon=0.5)
    logs = model.train_step(tiny_batch())
    assert float(logs["manifold_loss"]) > 1e-3
    np.testing.assert_allclose(
        float(logs["d_loss"]), float(logs["supervised_loss"])
        + 0.5 * float(logs["unsupervised_loss"]) + float(logs["manifold_loss"]), rtol=1e-5)


def test_an_unsupervised_weight_of_zero_trains_d_on_the_supervised_loss_alone():
    """D's update is the gradient of L_sup + unsupervised_weight * L_unsup: at
    weight 0, one SGD step of D is the supervised cross entropy's."""
    generator, discriminator = tiny_networks()
    model = SGAN(generator, discriminator, Config().replace(
        noise_stddev=1.0, seed=0, unsupervised_weight=0.0))
    model.compile(d_optimizer=keras.optimizers.SGD(0.5), g_optimizer=keras.optimizers.SGD(0.5))
    batch = tiny_batch()
    variables = discriminator.trainable_variables
    with tf.GradientTape() as tape:
        logits, _ = discriminator(batch["labeled_images"], training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            batch["labels"], logits))
    expected = [v.numpy() - 0.5 * g.numpy() for v, g in zip(variables, tape.gradient(
        loss, variables))]
    model.train_step(batch)
    for variable, value in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("update_order", ["sequential", "simultaneous", "split"])
def test_a_masked_batch_without_labeled_images_has_a_supervised_loss_of_zero(update_order):
    """L_sup is sum(mask * ce) / max(1, sum(mask)) (Udacity): 0, not NaN, for a
    batch of unlabeled images only."""
    images, labels, mask = masked_batch()
    model, _ = counted_model(update_order)
    logs = model.train_step({"images": tf.constant(images), "labels": tf.constant(labels),
                             "label_mask": tf.zeros_like(tf.constant(mask))})
    assert float(logs["supervised_loss"]) == 0.0
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert all(np.isfinite(w).all() for w in weights(model.discriminator))


def test_the_split_orders_real_update_smooths_its_target():
    """The split order's update on real images smooths their target to
    1 - label_smoothing, as the other orders do: with weights still, the
    logged unsupervised loss moves by label_smoothing * mean(D's GAN logit
    on the real images) (softplus(-l) against 0.7 * softplus(-l) + 0.3 * softplus(l))."""
    from sgan_keras import losses

    def unsupervised(smoothing):
        model, _ = counted_model("split", d_lr=0.0, g_lr=0.0, label_smoothing=smoothing)
        return float(model.train_step(tiny_batch())["unsupervised_loss"]), model

    smoothed, model = unsupervised(0.3)
    plain, _ = unsupervised(0.0)
    logits, _ = model.discriminator(tiny_batch()["unlabeled_images"], training=True)
    real = float(tf.reduce_mean(losses.gan_logit(logits, "zero", K)))
    assert abs(real) > 0.1
    np.testing.assert_allclose(smoothed - plain, 0.3 * real, rtol=1e-4)


@pytest.mark.parametrize("update_order", ["sequential", "split"])
def test_masked_training_accuracy_counts_the_labeled_images_only(update_order):
    """The logged accuracy of a masked batch is over its labeled images: here
    all wrong, the unlabeled ones' (unread) labels all D's own guesses."""
    images, _, mask = masked_batch()
    model, _ = counted_model(update_order, d_lr=0.0, g_lr=0.0)
    logits, _ = model.discriminator(images, training=False)
    guesses = np.argmax(logits.numpy(), axis=-1).astype(np.int32)
    labels = np.where(mask == 1, (guesses + 1) % K, guesses).astype(np.int32)
    logs = model.train_step({"images": tf.constant(images), "labels": tf.constant(labels),
                             "label_mask": tf.constant(mask)})
    assert float(logs["accuracy"]) == 0.0


def test_evaluate_runs_d_in_inference_mode():
    """evaluate()'s cross entropy is that of D's inference-mode logits: no
    dropout draws in the scores."""
    generator, _ = tiny_networks()
    images_in = keras.Input(IMAGE_SHAPE)
    features = keras.layers.Dropout(0.5, seed=1)(keras.layers.Dense(
        8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(
        keras.layers.Flatten()(images_in)))
    logits = keras.layers.Dense(K, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(
        features)
    discriminator = keras.Model(images_in, [logits, features], name="discriminator")
    model = SGAN(generator, discriminator, Config().replace(noise_stddev=1.0, seed=0))
    model.compile()
    images, labels = class_patterns(16, seed=5)
    scores = model.evaluate(images, labels, verbose=0, return_dict=True)
    inference, _ = discriminator(images, training=False)
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, inference).numpy().mean()
    np.testing.assert_allclose(scores["cross_entropy"], expected, rtol=1e-5)
