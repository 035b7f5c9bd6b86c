"""Weight-normalized layers (Salimans & Kingma 2016) and their data-dependent init."""

import functools
import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import preloaded
from conftest import random_algorithms
from sgan_keras import layers as wn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def normal(seed, stddev=0.05):
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


def make_layer(kind, **kwargs):
    if kind == "dense":
        return wn.WeightNormDense(5, kernel_initializer=normal(1), **kwargs)
    if kind == "conv":
        return wn.WeightNormConv2D(5, 3, strides=2, padding="same",
                                   kernel_initializer=normal(1), **kwargs)
    return wn.WeightNormConv2DTranspose(5, 3, strides=2, padding="same",
                                        kernel_initializer=normal(1), **kwargs)


def reference_layer(kind):
    """The plain Keras layer a weight-normalized one must compute."""
    if kind == "dense":
        return keras.layers.Dense(5)
    if kind == "conv":
        return keras.layers.Conv2D(5, 3, strides=2, padding="same")
    return keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")


INPUT_SHAPES = {"dense": (4, 7), "conv": (4, 6, 6, 3), "conv_transpose": (4, 6, 6, 3)}
# The output-unit axis of each kernel layout: Dense [in, out], Conv2D
# [kh, kw, in, out], Conv2DTranspose [kh, kw, out, in].
OUTPUT_AXIS = {"dense": 1, "conv": 3, "conv_transpose": 2}


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_transpose"])
def test_effective_kernel_is_g_times_v_over_its_norm(kind):
    rng = np.random.default_rng(0)
    layer = make_layer(kind)
    inputs = rng.normal(size=INPUT_SHAPES[kind]).astype("float32")
    layer(inputs)
    layer.g.assign(rng.uniform(0.5, 2.0, size=5).astype("float32"))
    layer.bias.assign(rng.normal(size=5).astype("float32"))

    v = layer.v.numpy()
    axis = OUTPUT_AXIS[kind]
    other_axes = tuple(i for i in range(v.ndim) if i != axis)
    norm = np.sqrt(np.sum(v ** 2, axis=other_axes, keepdims=True))
    g_shape = [1] * v.ndim
    g_shape[axis] = 5
    expected = layer.g.numpy().reshape(g_shape) * v / norm
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.effective_kernel), expected,
                               rtol=1e-5, atol=1e-7)
    # Each output unit's weight vector has norm g.
    np.testing.assert_allclose(np.sqrt(np.sum(expected ** 2, axis=other_axes)).ravel(),
                               layer.g.numpy(), rtol=1e-5)

    # The layer applies exactly that kernel: same output as the plain Keras layer.
    reference = reference_layer(kind)
    reference(inputs)
    reference.set_weights([expected, layer.bias.numpy()])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(inputs)),
                               keras.ops.convert_to_numpy(reference(inputs)),
                               rtol=1e-4, atol=1e-5)


def test_weight_norm_dense_takes_integer_inputs_as_keras_dense_does():
    """Integer inputs (a notebook's np.arange, uint8 pixels) give the float
    outputs of the same values as floats; v cast to int32 was all zeros."""
    inputs = np.arange(12, dtype="int32").reshape(3, 4)
    layer = make_layer("dense")
    expected = keras.ops.convert_to_numpy(layer(inputs.astype("float32")))
    outputs = layer(inputs)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), expected, rtol=1e-6)
    assert wn.initialize_weight_norm(keras.Sequential([layer]), inputs) == 1
    np.testing.assert_allclose(np.std(keras.ops.convert_to_numpy(layer(inputs)), axis=0),
                               1.0, rtol=1e-3)


def three_layer_model(init_scale_last=1.0):
    """Conv -> LReLU -> ConvT -> LReLU -> Flatten -> Dense; WN layers are linear."""
    images = keras.Input((8, 8, 3))
    x = wn.WeightNormConv2D(6, 3, strides=2, padding="same", kernel_initializer=normal(1),
                            name="conv")(images)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)
    x = wn.WeightNormConv2DTranspose(4, 3, strides=2, padding="same",
                                     kernel_initializer=normal(2), name="conv_transpose")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)
    x = keras.layers.Flatten()(x)
    logits = wn.WeightNormDense(3, kernel_initializer=normal(3), init_scale=init_scale_last,
                                name="dense")(x)
    return keras.Model(images, logits)


def pre_activations(model, name, inputs):
    probe = keras.Model(model.input, model.get_layer(name).output)
    out = keras.ops.convert_to_numpy(probe(inputs, training=False))
    return out.reshape(-1, out.shape[-1])  # batch (and spatial) axes first


def test_initialize_weight_norm_standardizes_each_pre_activation():
    # Inputs far from zero mean / unit scale, so an un-initialized net is not standardized.
    inputs = np.random.default_rng(0).uniform(1.0, 5.0, (64, 8, 8, 3)).astype("float32")
    model = three_layer_model(init_scale_last=0.1)
    before = pre_activations(model, "conv", inputs)
    assert np.abs(before.mean(axis=0)).max() > 0.1  # not already standardized

    assert wn.initialize_weight_norm(model, inputs) == 3

    for name, target_std in (("conv", 1.0), ("conv_transpose", 1.0), ("dense", 0.1)):
        t = pre_activations(model, name, inputs)
        np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-4 * max(1, target_std))
        np.testing.assert_allclose(t.std(axis=0), target_std, rtol=1e-3)
    assert not any(layer.init_mode for layer in wn.weight_norm_layers(model))


def test_initialize_weight_norm_skips_layers_without_data_init():
    inputs = np.random.default_rng(1).normal(2.0, 3.0, (32, 7)).astype("float32")
    z = keras.Input((7,))
    hidden = wn.WeightNormDense(6, activation="relu", kernel_initializer=normal(1))(z)
    frozen = wn.WeightNormDense(4, kernel_initializer=normal(2), data_init=False,
                                name="frozen")(hidden)
    model = keras.Model(z, frozen)
    assert wn.initialize_weight_norm(model, inputs) == 1
    np.testing.assert_array_equal(model.get_layer("frozen").g.numpy(), np.ones(4))
    np.testing.assert_array_equal(model.get_layer("frozen").bias.numpy(), np.zeros(4))


@pytest.mark.parametrize("batch", [0, 1])
def test_initialize_weight_norm_refuses_a_batch_without_spread(batch):
    # A batch of 1 gave a dense layer g = 1e4 (logits of 1e23 two layers on);
    # an empty one wrote NaN into g and the bias without a word.
    z = keras.Input((7,))
    conv = keras.Input((4, 4, 3))
    dense = keras.Model(z, wn.WeightNormDense(4, kernel_initializer=normal(1))(z))
    with pytest.raises(wn.WeightNormInitError, match=f"batch of {batch}: {batch} value"):
        wn.initialize_weight_norm(dense, np.ones((batch, 7), "float32"))
    for weight in dense.get_weights():
        assert np.isfinite(weight).all()
    np.testing.assert_array_equal(dense.layers[-1].g.numpy(), np.ones(4))
    assert not dense.layers[-1].init_mode
    # A convolution takes its statistics over the positions too: one image will do.
    model = keras.Model(conv, wn.WeightNormConv2D(2, 3, kernel_initializer=normal(1))(conv))
    images = np.random.default_rng(0).normal(size=(max(batch, 1), 4, 4, 3)).astype("float32")
    assert wn.initialize_weight_norm(model, images) == 1


def test_initialize_weight_norm_reaches_layers_inside_a_users_custom_layer():
    # all_layers walked Model.layers only: a custom Layer's sublayers were
    # never initialized (0 returned, g left at 1) without a word.
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = wn.WeightNormDense(4, kernel_initializer=normal(1), name="inner")

        def call(self, inputs):
            return self.inner(inputs)

    z = keras.Input((7,), name="z")
    model = keras.Model(z, Block(name="block")(z))
    assert [layer.name for layer in wn.all_layers(model)] == ["z", "block", "inner"]
    inputs = np.random.default_rng(1).normal(2.0, 3.0, (32, 7)).astype("float32")
    assert wn.initialize_weight_norm(model, inputs) == 1
    np.testing.assert_allclose(model(inputs).numpy().std(axis=0), 1.0, rtol=1e-3)


def test_initialize_weight_norm_without_weight_norm_layers_is_a_no_op():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert wn.initialize_weight_norm(model, np.ones((4, 3), "float32")) == 0


def test_weight_norm_model_compiles_and_fits():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=16)
    model = three_layer_model()
    wn.initialize_weight_norm(model, images)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # Every weight-norm parameter (v, g, bias of each layer) is trained.
    assert len(model.trainable_weights) == 9
    for old, new in zip(before, model.trainable_weights):
        assert not np.allclose(old, new.numpy()), new.path


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel_size, strides", [(3, 2), (1, 3), ((4, 2), (1, 2))])
@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_compute_output_shape_is_the_shape_call_makes(kind, kernel_size, strides, padding):
    # The convolutions had none: NotImplementedError, and so in TimeDistributed.
    layer = (wn.WeightNormConv2D if kind == "conv" else wn.WeightNormConv2DTranspose)(
        2, kernel_size, strides=strides, padding=padding)
    outputs = layer(np.zeros((3, 7, 8, 1), "float32"))
    assert layer.compute_output_shape((3, 7, 8, 1)) == tuple(outputs.shape)
    assert layer.compute_output_shape((None, None, 8, 1))[:2] == (None, None)
    sequences = keras.Input((5, 7, 8, 1))
    assert keras.layers.TimeDistributed(layer)(sequences).shape == (None, 5, *outputs.shape[1:])


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_transpose"])
def test_get_config_round_trip(kind):
    layer = make_layer(kind, activation="tanh", use_bias=False, init_scale=0.1,
                       data_init=False, name=f"wn_{kind}")
    config = layer.get_config()
    json.dumps(config)  # plain, serializable values
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_saved_model_file_reloads_with_identical_outputs(tmp_path):
    inputs = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype("float32")
    model = three_layer_model()
    wn.initialize_weight_norm(model, inputs)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(inputs).numpy(), model(inputs).numpy(), rtol=1e-6)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), model(inputs).numpy(), rtol=1e-6)


def _half_padded_conv(images, kernel, strides):
    """A convolution with ``kernel // 2`` zeros on every side of the image
    (improved-gan's Lasagne ``pad=1`` on a 3x3 kernel), padded by hand."""
    kernel_h, kernel_w = kernel.shape[:2]
    padded = tf.pad(images, [[0, 0], [kernel_h // 2] * 2, [kernel_w // 2] * 2, [0, 0]])
    return tf.nn.conv2d(padded, kernel, [1, *strides, 1], "VALID")


@pytest.mark.parametrize("kernel_size, strides, image", [
    (3, 2, (8, 8)), (3, 2, (7, 6)), ((3, 5), (2, 1), (6, 4)), (5, 1, (5, 5)), (1, 1, (3, 3))])
def test_half_padding_pads_a_convolution_by_half_its_kernel_on_every_side(kernel_size, strides,
                                                                          image):
    """Theano's border_mode='half': at stride 2 not Keras' "same", which puts
    the odd zero after the image; at stride 1 the same as "same"."""
    images = tf.constant(np.random.default_rng(0).normal(size=(2, *image, 3)), tf.float32)
    layer = wn.WeightNormConv2D(4, kernel_size, strides=strides, padding="half",
                                bias_initializer="random_normal", kernel_initializer=normal(1))
    outputs = layer(images)
    expected = _half_padded_conv(images, layer.effective_kernel, layer.strides) + layer.bias
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    assert layer.compute_output_shape(images.shape) == tuple(outputs.shape)
    same = keras.layers.Conv2D(4, kernel_size, strides=strides, padding="same")
    same.build(images.shape)
    same.set_weights([layer.effective_kernel.numpy(), layer.bias.numpy()])
    if layer.strides == (2, 2) and image[0] % 2 == 0:
        assert not np.allclose(same(images), outputs, atol=1e-3)
    elif layer.strides == (1, 1):
        np.testing.assert_allclose(same(images), outputs, atol=1e-5)


@pytest.mark.parametrize("kernel_size, strides, image", [
    (5, 2, (4, 4)), (3, 2, (3, 5)), ((5, 3), (2, 1), (4, 3)), (3, 1, (4, 4))])
@pytest.mark.parametrize("kind", ["plain", "matmul", "weight_norm"])
def test_half_padded_transposed_convolution_is_the_input_gradient_of_a_half_padded_one(
        kind, kernel_size, strides, image):
    """improved-gan's Deconv2DLayer: Theano's AbstractConv2d_gradInputs with
    border_mode='half', the gradient of the half-padded convolution of an
    image ``strides`` times the input's size with respect to that image."""
    inputs = tf.constant(np.random.default_rng(1).normal(size=(2, *image, 4)), tf.float32)
    if kind in ("plain", "matmul"):
        layer = (wn.HalfPaddedConv2DTranspose if kind == "plain" else wn.MatmulConv2DTranspose)(
            3, kernel_size, strides=strides, padding="half", use_bias=False,
            kernel_initializer=normal(2))
    else:
        layer = wn.WeightNormConv2DTranspose(3, kernel_size, strides=strides, padding="half",
                                             use_bias=False, kernel_initializer=normal(2))
    outputs = layer(inputs)
    kernel = layer.effective_kernel if kind == "weight_norm" else layer.kernel
    target = tf.zeros((2, image[0] * layer.strides[0], image[1] * layer.strides[1], 3))
    with tf.GradientTape() as tape:
        tape.watch(target)
        forward = _half_padded_conv(target, kernel, layer.strides)
        total = tf.reduce_sum(forward * inputs)
    np.testing.assert_allclose(outputs, tape.gradient(total, target), atol=1e-5)
    assert layer.compute_output_shape(inputs.shape) == tuple(outputs.shape)


@pytest.mark.parametrize("kernel_size, strides, image", [
    (5, 2, (4, 4)), (3, 2, (3, 5)), ((5, 3), (2, 1), (4, 3)), (1, 2, (3, 3))])
def test_matmul_conv_transpose_padded_half_has_the_gradients_of_tensorflows_op(
        kernel_size, strides, image):
    """Its custom gradients (an explicitly padded Conv2D and
    Conv2DBackpropFilter) are those of TensorFlow's transposed convolution."""
    inputs = tf.constant(np.random.default_rng(0).normal(size=(3, *image, 4)).astype("float32"))
    assert_same_outputs_and_gradients(
        wn.MatmulConv2DTranspose(6, kernel_size, strides=strides, padding="half"),
        wn.HalfPaddedConv2DTranspose(6, kernel_size, strides=strides), inputs)


def test_half_padded_layers_round_trip_and_refuse_what_they_cannot_compute(tmp_path):
    inputs = keras.Input((4, 4, 5))
    x = wn.MatmulConv2DTranspose(6, 5, strides=2, padding="half", name="matmul_convt")(inputs)
    x = wn.HalfPaddedConv2DTranspose(6, 5, strides=1, name="convt")(x)
    x = wn.WeightNormConv2DTranspose(3, 5, strides=2, padding="half", name="wn_convt")(x)
    outputs = wn.WeightNormConv2D(2, 3, strides=2, padding="half", name="wn_conv")(x)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 8, 8, 2)
    assert model.get_layer("convt").get_config()["padding"] == "half"
    assert model.get_layer("matmul_convt").get_config()["padding"] == "half"
    images = np.random.default_rng(2).normal(size=(2, 4, 4, 5)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(images), model(images), rtol=1e-6)
    with pytest.raises(ValueError, match="HalfPaddedConv2DTranspose pads 'half', got 'same'"):
        wn.HalfPaddedConv2DTranspose(6, 5, strides=2, padding="same")
    for layer in (wn.HalfPaddedConv2DTranspose, wn.MatmulConv2DTranspose,
                  wn.WeightNormConv2DTranspose, wn.WeightNormConv2D):
        with pytest.raises(ValueError, match=r"padding 'half' needs an odd kernel, got \(4, 3\)"):
            layer(6, (4, 3), strides=2, padding="half")


@pytest.mark.parametrize("arguments, name", [
    ({"init_scale": 0.0}, "init_scale"),
    ({"padding": "full"}, "padding"),
    ({"kernel_size": (3, 0)}, "kernel_size"),
    # As Keras' layers: int() made 2.5 filters 2 and took "2"; a float kernel
    # size was a TypeError traceback.
    ({"filters": 2.5}, "filters"),
    ({"filters": "2"}, "filters"),
    ({"kernel_size": 2.5}, "kernel_size"),
    ({"strides": (1, 2.0)}, "strides"),
])
def test_bad_arguments_raise_one_line_errors(arguments, name):
    options = {"filters": 2, "kernel_size": 3, **arguments}
    with pytest.raises(ValueError, match=name) as error:
        wn.WeightNormConv2D(**options)
    assert "\n" not in str(error.value)


# Runs in a fresh interpreter: logical devices must be configured before
# TensorFlow initializes them, which other tests in this process already did.
_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import sys
    sys.path.insert(0, "tests")
    from sgan_keras import layers as wn
    from test_layers import three_layer_model as build

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 3, (32, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, 32)
    single = build()
    wn.initialize_weight_norm(single, images)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
        count = wn.initialize_weight_norm(model, images)
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    max_diff = 0.0
    for name in ("conv", "conv_transpose", "dense"):
        for attribute in ("g", "bias"):
            variable = getattr(model.get_layer(name), attribute)
            expected = getattr(single.get_layer(name), attribute).numpy()
            copies = strategy.experimental_local_results(variable.value)
            assert len(copies) == 2, copies
            diffs = [float(np.abs(c.numpy() - expected).max()) for c in copies]
            max_diff = max([max_diff] + diffs)
    loss = model.fit(images, labels, batch_size=16, epochs=1, verbose=0).history["loss"][-1]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "count": count,
                      "max_diff": max_diff, "loss": float(loss)}))
""")


def test_initialize_weight_norm_under_mirrored_strategy_with_two_cpus():
    # Logical CPUs need a TensorFlow runtime of its own (tests/preloaded.py).
    result = preloaded.run_code(_MIRRORED_SCRIPT, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["count"] == 3
    # Every replica's copy holds exactly what a single-device init computes.
    assert report["max_diff"] < 1e-5
    assert np.isfinite(report["loss"])


_REPLICA_DRAWS_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sgan_keras import layers as wn

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layers = {"dropout": wn.Dropout(0.5, seed=3), "noise": wn.GaussianNoise(0.5, seed=3),
                  "keras_dropout": keras.layers.Dropout(0.5, seed=3)}

    @tf.function
    def draw():
        ones = tf.ones((64, 16))
        return {name: layer(ones, training=True) for name, layer in layers.items()}

    draws = strategy.run(draw)
    report = {name: [r.numpy().tolist() for r in strategy.experimental_local_results(value)]
              for name, value in draws.items()}
    print(json.dumps(report))
""")


def test_dropout_and_noise_draw_apart_on_each_replica():
    """Under MirroredStrategy each replica draws its own dropout mask and
    noise (Keras' Dropout, for contrast, gives both replicas one mask)."""
    result = preloaded.run_code(_REPLICA_DRAWS_SCRIPT, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = {name: [np.asarray(r) for r in replicas]
              for name, replicas in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    assert all(len(replicas) == 2 for replicas in report.values())
    np.testing.assert_array_equal(*report["keras_dropout"])      # the flaw worked around
    for name in ("dropout", "noise"):
        first, second = report[name]
        assert not np.array_equal(first, second), name
    for mask in report["dropout"]:
        assert set(np.unique(mask)) == {0.0, 2.0} and abs(np.mean(mask == 0) - 0.5) < 0.05


def test_dropout_is_keras_dropout_bit_for_bit_on_one_device():
    inputs = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    for noise_shape in (None, (None, 1, 1, 3)):
        ours = wn.Dropout(0.3, noise_shape=noise_shape, seed=5)
        theirs = keras.layers.Dropout(0.3, noise_shape=noise_shape, seed=5)
        for _ in range(2):      # the seed generator advances alike
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(inputs, training=True)),
                                          keras.ops.convert_to_numpy(theirs(inputs, training=True)))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(inputs)), inputs)
    # Rate 1 (which Keras takes): TensorFlow's op refused it with a traceback.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wn.Dropout(1.0)(inputs, training=True)),
        keras.ops.convert_to_numpy(keras.layers.Dropout(1.0)(inputs, training=True)))


@pytest.mark.parametrize("shape", [(2000, 251), (500, 4, 4, 3)])
def test_gaussian_noise_draws_standard_normals_by_box_muller(shape):
    """The Box-Muller layer adds N(0, stddev^2) noise: moments, tails, odd last axes."""
    layer = wn.GaussianNoise(0.5, seed=3)
    noise = keras.ops.convert_to_numpy(layer(np.zeros(shape, "float32"), training=True)) / 0.5
    assert noise.shape == shape
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    kurtosis = np.mean((noise - noise.mean()) ** 4) / noise.var() ** 2
    assert abs(kurtosis - 3) < 0.05
    assert abs(np.mean(np.abs(noise) > 2) - 0.0455) < 0.003   # two-sided tail of N(0, 1)
    # Neighbouring values (a cos/sin pair) are uncorrelated.
    flat = noise.reshape(-1, shape[-1])
    assert abs(np.corrcoef(flat[:, 0], flat[:, (shape[-1] + 1) // 2])[0, 1]) < 0.05


def test_gaussian_noise_is_seeded_and_off_at_inference():
    inputs = np.ones((8, 5), "float32")
    first = keras.ops.convert_to_numpy(wn.GaussianNoise(0.3, seed=7)(inputs, training=True))
    again = keras.ops.convert_to_numpy(wn.GaussianNoise(0.3, seed=7)(inputs, training=True))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, inputs)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wn.GaussianNoise(0.3, seed=7)(inputs, training=False)), inputs)
    layer = wn.GaussianNoise.from_config(wn.GaussianNoise(0.3, seed=7).get_config())
    assert isinstance(layer, wn.GaussianNoise) and layer.stddev == 0.3


def test_gaussian_noise_refuses_integer_inputs_rather_than_truncate_its_noise():
    # Noise of stddev 0.3 cast to int32 was mostly 0: the layer added almost nothing.
    with pytest.raises(TypeError, match="GaussianNoise takes float inputs, got int32"):
        wn.GaussianNoise(0.3, seed=7)(np.arange(12, dtype="int32").reshape(3, 4), training=True)


@pytest.mark.parametrize("init_scale", [0.0, -1.0, float("nan"), float("inf")])
def test_weight_norm_refuses_an_init_scale_that_is_not_a_finite_positive_number(init_scale):
    # inf made every g infinite at the data-dependent init.
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0"):
        wn.WeightNormDense(3, init_scale=init_scale)


def test_gaussian_noise_names_tensorflows_philox_generator():
    """Named, not TensorFlow's default ``alg="auto_select"``, with which an
    XLA-compiled Improved-GAN MNIST step took 275.1 against 50.8 ms
    (``sgan_keras/layers.py``); without XLA the same numbers as before."""
    layer = wn.GaussianNoise(0.5, seed=7)
    algorithms = random_algorithms(lambda x: layer(x, training=True),
                                   tf.TensorSpec([6, 9], tf.float32))
    assert algorithms == [tf.random.Algorithm.PHILOX.value]


@pytest.mark.parametrize("seed", [np.array([12345, -987654321], np.int64),
                                  np.array([-3, 7], np.int32),
                                  np.array([2**40, -2**50], np.int64)])
def test_philox_draws_are_tensorflows_own_numbers_in_a_third_of_the_traced_ops(seed):
    """``philox_uniform`` and ``philox_normal`` (the noise layer's and z's
    draws) give ``tf.random.stateless_*(alg="philox")``'s numbers bit for
    bit, eagerly, traced and under XLA, from a scramble of the seed that
    TensorFlow traces in 43 ops."""
    pairs = ((wn.philox_uniform, functools.partial(tf.random.stateless_uniform, alg="philox")),
             (wn.philox_normal, functools.partial(tf.random.stateless_normal, alg="philox")))
    for ours, tensorflows in pairs:
        for compiled in (None, False, True):
            results = []
            for draw in (ours, tensorflows):
                function = functools.partial(draw, [3, 5, 7])
                if compiled is not None:
                    function = tf.function(function, jit_compile=compiled)
                results.append(function(tf.constant(seed)).numpy())
            np.testing.assert_array_equal(*results)
        op_counts = [len(tf.function(functools.partial(draw, [3, 5])).get_concrete_function(
            tf.TensorSpec([2], tf.as_dtype(seed.dtype))).graph.get_operations())
            for draw in (ours, tensorflows)]
        assert op_counts[0] * 3 <= op_counts[1], op_counts


def assert_same_outputs_and_gradients(layer, reference, inputs, prepare=lambda x: x):
    """Gives ``layer`` and ``reference`` (applied to ``prepare(inputs)``) the same
    random kernel and bias, then checks their outputs (to 1e-5) and the gradients
    of a random projection of them with respect to the inputs, kernel and bias
    (to 1e-4). Returns the reference's output, the weights, the projection and
    the reference's input gradient, for a bfloat16 check."""
    import tensorflow as tf
    rng = np.random.default_rng(1)
    layer(inputs), reference(prepare(inputs))
    weights = [rng.normal(size=layer.kernel.shape).astype("float32"),
               rng.normal(size=layer.bias.shape).astype("float32")]
    layer.set_weights(weights), reference.set_weights(weights)
    projection = tf.constant(rng.normal(size=reference(prepare(inputs)).shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        outputs, reference_outputs = layer(inputs), reference(prepare(inputs))
        loss = tf.reduce_sum(outputs * projection)
        reference_loss = tf.reduce_sum(reference_outputs * projection)
    assert outputs.shape == reference_outputs.shape
    np.testing.assert_allclose(outputs.numpy(), reference_outputs.numpy(), rtol=1e-5, atol=1e-5)
    reference_grads = tape.gradient(reference_loss, [inputs, reference.kernel, reference.bias])
    for grad, reference_grad in zip(tape.gradient(loss, [inputs, layer.kernel, layer.bias]),
                                    reference_grads):
        np.testing.assert_allclose(grad.numpy(), reference_grad.numpy(), rtol=1e-4, atol=1e-4)
    return reference_outputs, weights, projection, reference_grads[0]


def assert_bfloat16_close(half, inputs, reference):
    """``half`` (a mixed-bfloat16 layer) with the weights of ``reference`` (what
    ``assert_same_outputs_and_gradients`` returned) gives bfloat16 outputs
    within bfloat16's precision of the float32 ones, and an input gradient
    pointing the float32 one's way (cosine above 0.9: elementwise, bfloat16
    rounding flips the ReLU's mask at outputs near zero)."""
    import tensorflow as tf
    reference_outputs, weights, projection, reference_input_grad = reference
    half(inputs)
    half.set_weights(weights)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = half(inputs)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * projection)
    assert outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), reference_outputs.numpy(),
                               rtol=0.05,
                               atol=0.05 * float(tf.reduce_max(tf.abs(reference_outputs))))
    grad, expected = tape.gradient(loss, inputs).numpy().ravel(), reference_input_grad.numpy().ravel()
    assert np.dot(grad, expected) > 0.9 * np.linalg.norm(grad) * np.linalg.norm(expected)


@pytest.mark.parametrize("kernel_size, image", [(5, (7, 7)), (3, (4, 5)), (1, (3, 3)),
                                                ((7, 5), (6, 3))])
def test_upsample_conv_equals_upsampling_then_conv(kernel_size, image):
    """The same outputs and gradients as UpSampling2D(2) + Conv2D with the same weights."""
    import tensorflow as tf
    inputs = tf.constant(np.random.default_rng(0).normal(size=(3, *image, 4)).astype("float32"))
    reference_outputs, *_ = assert_same_outputs_and_gradients(
        wn.UpsampleConv2D(6, kernel_size, activation="relu"),
        keras.layers.Conv2D(6, kernel_size, padding="same", activation="relu"), inputs,
        prepare=keras.layers.UpSampling2D(2))
    assert reference_outputs.shape == (3, 2 * image[0], 2 * image[1], 6)
    fused = wn.UpsampleConv2D(6, kernel_size)
    assert fused.compute_output_shape((None, *image, 4)) == (None, 2 * image[0], 2 * image[1], 6)


def test_upsample_conv_round_trips_and_refuses_what_it_cannot_compute():
    layer = wn.UpsampleConv2D(8, 5, activation="relu", name="g_conv1")
    copy = wn.UpsampleConv2D.from_config(layer.get_config())
    assert copy.filters == 8 and copy.kernel_size == (5, 5) and copy.phase_kernel_size == (3, 3)
    for bad, message in (({"strides": 2}, "needs stride 1"), ({"padding": "valid"}, "needs an odd"),
                         ({"kernel_size": 4}, "needs an odd kernel")):
        with pytest.raises(ValueError, match=f"UpsampleConv2D {message}"):
            wn.UpsampleConv2D(**{"filters": 8, "kernel_size": 5, **bad})


@pytest.mark.parametrize("kernel_size, padding, image", [
    (3, "same", (5, 5)), (5, "same", (4, 6)), (1, "same", (3, 3)), (2, "same", (4, 4)),
    (4, "same", (5, 3)), ((3, 5), "same", (6, 4)), (3, "valid", (4, 4)), ((2, 3), "valid", (5, 4)),
    (5, "valid", (5, 7))])
def test_conv_input_grad_conv2d_equals_conv2d(kernel_size, padding, image):
    """Conv2DWithConvInputGrad: the same outputs and gradients (its input's by a
    forward convolution) as keras.layers.Conv2D with the same weights, odd and
    even kernels, "same" and "valid", in float32 and in mixed bfloat16."""
    import tensorflow as tf
    inputs = tf.constant(np.random.default_rng(0).normal(size=(3, *image, 4)).astype("float32"))
    reference = assert_same_outputs_and_gradients(
        wn.Conv2DWithConvInputGrad(6, kernel_size, padding=padding, activation="relu"),
        keras.layers.Conv2D(6, kernel_size, padding=padding, activation="relu"), inputs)
    assert_bfloat16_close(wn.Conv2DWithConvInputGrad(6, kernel_size, padding=padding,
                                                     activation="relu", dtype="mixed_bfloat16"),
                          inputs, reference)


def test_conv_input_grad_conv2d_round_trips_and_refuses_what_it_cannot_compute():
    layer = wn.Conv2DWithConvInputGrad(8, 3, padding="same", name="d_conv4")
    copy = wn.Conv2DWithConvInputGrad.from_config(layer.get_config())
    assert copy.filters == 8 and copy.kernel_size == (3, 3) and copy.padding == "same"
    for bad in ({"strides": 2}, {"dilation_rate": 2}, {"groups": 2},
                {"data_format": "channels_first"}):
        with pytest.raises(ValueError, match="Conv2DWithConvInputGrad needs stride 1"):
            wn.Conv2DWithConvInputGrad(**{"filters": 8, "kernel_size": 3, **bad})
    with pytest.raises(ValueError, match="padding must be 'same' or 'valid', got 'causal'"):
        wn._conv2d_with_conv_input_grad(np.zeros((1, 4, 4, 2), "float32"),
                                        np.zeros((3, 3, 2, 2), "float32"), "causal")


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_stride_one_weight_norm_conv_has_the_gradients_of_keras_conv(padding):
    """A stride-1 WeightNormConv2D takes its input gradient as a forward
    convolution: the same outputs and gradients as with keras.ops.conv."""
    import functools
    import tensorflow as tf
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(3, 6, 5, 4)).astype("float32"))
    layers = [wn.WeightNormConv2D(5, 3, padding=padding, kernel_initializer=normal(1))
              for _ in range(2)]
    for layer in layers:
        layer(inputs)
        layer.g.assign(rng.uniform(0.5, 2.0, size=5).astype("float32"))
    layers[1].set_weights(layers[0].get_weights())
    layers[1]._linear = functools.partial(keras.ops.conv, strides=1, padding=padding)
    weights = tf.constant(rng.normal(size=layers[0](inputs).shape).astype("float32"))
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            loss = tf.reduce_sum(outputs * weights)
        results.append([outputs, *tape.gradient(loss, [inputs, layer.v, layer.g, layer.bias])])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


# The mixed-bfloat16 check (an XLA compilation of its own, about 0.9 CPU
# seconds) on three cases: the odd-sized image, a kernel smaller than its
# stride (its zero phases) and a non-square kernel and stride; the layer's
# code does not otherwise depend on the dtype.
@pytest.mark.parametrize("kernel_size, strides, image, bfloat16", [
    (3, 2, (7, 7), True), (5, 2, (4, 4), False), (4, 2, (3, 5), False), (1, 2, (3, 3), True),
    ((5, 3), (2, 1), (4, 3), True), (3, 1, (5, 5), False), (2, 3, (2, 3), False)])
def test_matmul_conv_transpose_equals_conv2d_transpose(kernel_size, strides, image, bfloat16):
    """The same outputs and gradients as keras.layers.Conv2DTranspose with the same weights,
    in float32 and (``bfloat16``) in mixed bfloat16."""
    import tensorflow as tf
    inputs = tf.constant(np.random.default_rng(0).normal(size=(3, *image, 4)).astype("float32"))
    reference = assert_same_outputs_and_gradients(
        wn.MatmulConv2DTranspose(6, kernel_size, strides=strides, activation="relu"),
        keras.layers.Conv2DTranspose(6, kernel_size, strides=strides, padding="same",
                                     activation="relu"), inputs)
    if bfloat16:
        assert_bfloat16_close(wn.MatmulConv2DTranspose(6, kernel_size, strides=strides,
                                                       activation="relu",
                                                       dtype="mixed_bfloat16"),
                              inputs, reference)


def test_matmul_conv_transpose_runs_its_forward_pass_as_one_xla_computation():
    """The matmul and shifted sums are compiled by XLA (one fused loop for the
    sums; faster than separate ops): the layer's graph calls a function that
    must be compiled, and that function holds the matmul."""
    import tensorflow as tf
    layer = wn.MatmulConv2DTranspose(8, 3, strides=2)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec([2, 4, 4, 5])).graph
    compiled = [op for op in graph.get_operations() if op.type.endswith("PartitionedCall")
                and op.get_attr("_XlaMustCompile")]
    assert len(compiled) == 1
    function_name = compiled[0].get_attr("f").name
    inner = {f.signature.name: f for f in graph.as_graph_def().library.function}[function_name]
    assert any(node.op == "MatMul" for node in inner.node_def)


@pytest.mark.parametrize("options, shape", [
    ({}, (4, 5, 3, 6)), ({"scale": False}, (4, 5, 3, 6)),
    ({"center": False, "momentum": 0.9, "epsilon": 1e-4}, (2, 3, 3, 4))])
def test_fused_batch_norm_equals_keras_batch_norm(options, shape):
    """FusedBatchNormalization: in training mode the same outputs, gradients and
    moving averages (Keras' biased batch variance, not the kernel's unbiased
    one) as keras.layers.BatchNormalization with the same weights; in
    inference the same outputs; one FusedBatchNormV3 op in training."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(2.0, 3.0, size=shape).astype("float32"))
    layers = [wn.FusedBatchNormalization(**options), keras.layers.BatchNormalization(**options)]
    for layer in layers:
        layer.build(shape)
    weights = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in layers[1].weights]
    projection = tf.constant(rng.normal(size=shape).astype("float32"))
    results = []
    for layer in layers:
        layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(outputs * projection)
        gradients = tape.gradient(loss, [inputs, *layer.trainable_weights])
        results.append([outputs, *gradients, *layer.non_trainable_weights,
                        layer(inputs, training=False)])
    assert len(results[0]) == len(results[1])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-5, atol=1e-5)
    graph = tf.function(lambda x: layers[0](x, training=True)).get_concrete_function(
        tf.TensorSpec(shape)).graph
    assert [op.type for op in graph.get_operations()].count("FusedBatchNormV3") == 1


def test_fused_batch_norm_runs_keras_own_call_where_the_kernel_does_not_apply():
    """Rank-2 inputs, a channels-first axis, an epsilon under cuDNN's 1.001e-5
    and XLA compilation run Keras' call (no fused op)."""
    import tensorflow as tf
    for layer, shape in ((wn.FusedBatchNormalization(), (4, 6)),
                         (wn.FusedBatchNormalization(axis=1), (2, 3, 4, 4)),
                         (wn.FusedBatchNormalization(epsilon=1e-6), (2, 3, 3, 4))):
        graph = tf.function(lambda x, layer=layer: layer(x, training=True)).get_concrete_function(
            tf.TensorSpec(shape)).graph
        assert "FusedBatchNormV3" not in [op.type for op in graph.get_operations()]
    # Nor under XLA, whose lowering of the fused op is the slower there.
    layer = wn.FusedBatchNormalization()
    compiled = tf.function(lambda x: layer(x, training=True), jit_compile=True)
    graph = compiled.get_concrete_function(tf.TensorSpec((2, 3, 3, 4))).graph
    assert "FusedBatchNormV3" not in [op.type for op in graph.get_operations()]
    assert "Mean" in [op.type for op in graph.get_operations()]
    copy = wn.FusedBatchNormalization.from_config(
        wn.FusedBatchNormalization(momentum=0.8, name="g_bn1").get_config())
    assert copy.momentum == 0.8 and copy.name == "g_bn1"


def _train_once(layer, inputs, weights, projection, jit_compile=False):
    """One training-mode call of ``layer`` (built, ``weights`` set, the step
    compiled by XLA if ``jit_compile``): its outputs, the gradients of
    ``sum(outputs * projection)`` for the inputs and the trainable weights,
    and the moving mean and variance after the call."""
    if not layer.built:
        layer.build(inputs.shape)
    layer.set_weights(weights)

    def step(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(outputs * projection)
        return [outputs, *tape.gradient(loss, [images, *layer.trainable_weights])]

    if jit_compile:
        step = tf.function(step, jit_compile=True)
    results = [np.asarray(result) for result in step(inputs)]
    return results, [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]


@pytest.mark.parametrize("layer_class, shape, jit_compile", [
    (wn.BatchNormalization, (6, 5), False), (wn.BatchNormalization, (4, 3, 3, 5), False),
    (wn.FusedBatchNormalization, (4, 3, 3, 5), False),
    (wn.FusedBatchNormalization, (4, 3, 3, 5), True)])
def test_unbiased_moving_variance_is_keras_2s_and_changes_nothing_else(layer_class, shape,
                                                                        jit_compile):
    """unbiased_moving_variance=True (GANs in Action's Keras 2): the moving
    variance moves toward the batch's variance x n / (n - 1 - epsilon), n the
    values a channel; the outputs, gradients and moving mean are
    keras.layers.BatchNormalization's, and inference reads the moving
    statistics. Without it the moving variance is Keras 3's too. For the plain
    layer, the fused kernel, and Keras' own call, which the fused layer runs
    under XLA."""
    rng = np.random.default_rng(1)
    inputs = tf.constant(rng.normal(2.0, 3.0, size=shape).astype("float32"))
    projection = tf.constant(rng.normal(size=shape).astype("float32"))
    options = {"momentum": 0.8, "epsilon": 1e-3}
    reference = keras.layers.BatchNormalization(**options)
    reference.build(shape)
    weights = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in reference.weights]
    gamma, beta, moving_mean, moving_variance = weights
    expected, _ = _train_once(reference, inputs, weights, projection)
    flat = np.asarray(inputs, np.float64).reshape(-1, shape[-1])
    count = flat.shape[0]
    mean = 0.8 * moving_mean + 0.2 * flat.mean(axis=0)
    biased = 0.8 * moving_variance + 0.2 * flat.var(axis=0)
    unbiased = 0.8 * moving_variance + 0.2 * flat.var(axis=0) * count / (count - 1.001)
    assert np.all(unbiased / biased > 1 + 1e-3)   # the two rules tell apart here
    for flag, variance in ((False, biased), (True, unbiased)):
        layer = layer_class(unbiased_moving_variance=flag, **options)
        ours, moving = _train_once(layer, inputs, weights, projection, jit_compile)
        for got, want in zip(ours, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(moving[0], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(moving[1], variance, rtol=1e-5)
        inferred = gamma * (flat - moving[0]) / np.sqrt(moving[1] + 1e-3) + beta
        np.testing.assert_allclose(np.asarray(layer(inputs, training=False)).reshape(-1, shape[-1]),
                                   inferred, rtol=1e-4, atol=1e-4)
    copy = layer_class.from_config(layer.get_config())
    assert copy.unbiased_moving_variance is True and copy.momentum == 0.8


_SYNCHRONIZED_UNBIASED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sgan_keras import layers as wn

    images = np.random.default_rng(2).normal(1.0, 2.0, (8, 3, 3, 4)).astype("float32")
    single = wn.BatchNormalization(unbiased_moving_variance=True, momentum=0.5)
    single(images, training=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = wn.BatchNormalization(unbiased_moving_variance=True, momentum=0.5,
                                      synchronized=True)
        layer.build(images.shape)
    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(images).batch(8))
    strategy.run(tf.function(lambda x: layer(x, training=True)), (next(iter(batches)),))
    copies = strategy.experimental_local_results(layer.moving_variance.value)
    print(json.dumps({"replicas": len(copies), "gap": max(
        float(np.abs(np.asarray(copy) - np.asarray(single.moving_variance)).max())
        for copy in copies)}))
""")


def test_unbiased_moving_variance_counts_every_replicas_values_when_synchronized():
    """Synchronized over two replicas of four images each (as the networks'
    batch norms are under a strategy of several), n is the eight images' count:
    every replica's moving variance is one device's on the whole batch."""
    # Logical CPUs need a TensorFlow runtime of its own (tests/preloaded.py).
    result = preloaded.run_code(_SYNCHRONIZED_UNBIASED_SCRIPT, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["gap"] < 1e-5


def test_unbiased_moving_variance_refuses_masks_and_non_booleans():
    layer = wn.BatchNormalization(unbiased_moving_variance=True)
    with pytest.raises(ValueError, match="takes no mask and no renorm"):
        layer(tf.ones((2, 3, 4)), training=True, mask=tf.ones((2, 3), bool))
    layer(tf.ones((2, 3, 4)), training=False, mask=tf.ones((2, 3), bool))   # inference: Keras'
    with pytest.raises(ValueError, match="unbiased_moving_variance must be True or False"):
        wn.BatchNormalization(unbiased_moving_variance="unbiased")


def test_matmul_conv_transpose_round_trips_and_refuses_what_it_cannot_compute():
    layer = wn.MatmulConv2DTranspose(8, 3, strides=2, name="g_convt1")
    copy = wn.MatmulConv2DTranspose.from_config(layer.get_config())
    assert copy.filters == 8 and copy.kernel_size == (3, 3) and copy.strides == (2, 2)
    for bad in ({"padding": "valid"}, {"dilation_rate": 2}, {"strides": 2, "output_padding": 1}):
        with pytest.raises(ValueError,
                           match="MatmulConv2DTranspose needs 'same' or 'half' padding"):
            wn.MatmulConv2DTranspose(**{"filters": 8, "kernel_size": 3, **bad})
    import tensorflow as tf
    unknown_size = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 4])])
    with pytest.raises(ValueError, match="needs a known height, width"):
        unknown_size.get_concrete_function()


def test_gaussian_noise_draws_new_noise_at_every_call_in_a_seeded_sequence():
    # Each training call advances the layer's seed: the same noise every step
    # would be one fixed offset, not noise. Two layers of one seed draw one sequence.
    inputs = np.zeros((4, 6), "float32")
    first, second = wn.GaussianNoise(0.3, seed=7), wn.GaussianNoise(0.3, seed=7)
    draws = [keras.ops.convert_to_numpy(first(inputs, training=True)) for _ in range(3)]
    again = [keras.ops.convert_to_numpy(second(inputs, training=True)) for _ in range(3)]
    for i in range(3):
        np.testing.assert_array_equal(draws[i], again[i])
        for j in range(i):
            assert not np.allclose(draws[i], draws[j]), (i, j)
