"""The Keras 3 layers the networks use beyond Keras' own:

- ``WeightNormDense``, ``WeightNormConv2D``, ``WeightNormConv2DTranspose``:
  weight normalization and its data-dependent init (below);
- ``GaussianNoise`` (its normals drawn faster on CPU) and ``Dropout``: both
  draw apart on each replica of a ``tf.distribute`` strategy;
- ``Conv2DWithConvInputGrad``: a stride-1 convolution whose input gradient is
  a convolution;
- ``UpsampleConv2D``: a nearest x2 upsampling and a convolution, computed
  without the upsampled image;
- ``MatmulConv2DTranspose``: a transposed convolution as one matmul;
- ``HalfPaddedConv2DTranspose``: a transposed convolution padded as
  improved-gan's ``Deconv2DLayer`` (Theano's ``border_mode='half'``);
- ``BatchNormalization``: Keras' batch norm, its moving variance by Keras 3's
  rule or Keras 2's; ``FusedBatchNormalization``: the same on TensorFlow's
  fused kernel.

``Conv2DWithConvInputGrad``, ``UpsampleConv2D``, ``MatmulConv2DTranspose`` and
``FusedBatchNormalization`` compute the function of the Keras layers they
replace, faster on CPU (see each class's docstring).

Padding ``"half"`` (the weight-normalized convolutions and
``HalfPaddedConv2DTranspose``) is Theano's ``border_mode='half'``, which
improved-gan's SVHN/CIFAR-10 networks use (Lasagne's ``pad=1`` on their 3x3
convolutions, ``Deconv2DLayer`` on their transposed ones): ``k // 2`` zeros on
every side of a convolution, and a transposed convolution is the input gradient
of such a convolution, to ``stride`` times its input's size. Keras' ``"same"``
puts the extra zero of an even total after the image, so at stride 2 its grid
is one pixel off Theano's; at stride 1 the two pad alike.

Weight normalization (Salimans & Kingma 2016, "Weight Normalization: A Simple
Reparameterization to Accelerate Training of Deep Neural Networks") writes each
output unit's weight vector as ``w = g * v / ||v||``, the norm taken over every
kernel axis except the output one. ``v`` (the direction) and the bias are
trainable; ``g`` (the scale, one per output unit) too unless
``train_scale=False``, as in improved-gan's hidden layers, whose ``g`` only the
data-dependent init sets. tensorflow-addons, which used to provide
``WeightNormalization``, does not import with Keras 3, hence these native layers.

Data-dependent initialization follows OpenAI's improved-gan code
(``mnist_svhn_cifar10/nn.py``, the ``init=True`` pass): on a first batch each
layer computes its pre-activation ``t = x * v / ||v||`` (``g = 1, b = 0``) and
sets ``g = init_scale / std(t)`` and ``b = -mean(t) * g``, the statistics taken
per output unit over the batch (and the spatial axes of a convolution), so that
the initialized pre-activations have mean 0 and standard deviation
``init_scale``. ``init_scale`` is 1 by default; the improved-gan SVHN/CIFAR-10
code uses 0.1 for its last layers (``init_stdv=0.1``).

That initialization must not run inside a compiled train step: call
:func:`initialize_weight_norm` once, eagerly, before training. It toggles a
Python-level flag on each layer, so traced graphs never contain the init branch.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from sgan_keras.checks import is_integer

_NORM_EPSILON = 1e-12   # guards ||v|| of an all-zero direction
_STD_EPSILON = 1e-8     # guards the init statistics of a constant unit

__all__ = [
    "Conv2DWithConvInputGrad",
    "Dropout",
    "FusedBatchNormalization",
    "GaussianNoise",
    "HalfPaddedConv2DTranspose",
    "MatmulConv2DTranspose",
    "UpsampleConv2D",
    "all_layers",
    "WeightNormDense",
    "WeightNormConv2D",
    "WeightNormConv2DTranspose",
    "WeightNormInitError",
    "initialize_weight_norm",
    "replica_seed",
    "weight_norm_layers",
]


class WeightNormInitError(ValueError):
    """A batch the data-dependent init cannot take statistics over."""


class _WeightNormBase(keras.layers.Layer):
    """Shared parameters, normalization and data-dependent init.

    Subclasses define ``_kernel_shape(input_shape)``, ``_output_axis`` (the
    kernel axis of the output units) and ``_linear(inputs, kernel)``.
    """

    _output_axis = -1

    def __init__(self, *, activation=None, use_bias=True,
                 kernel_initializer=None, bias_initializer="zeros",
                 init_scale=1.0, data_init=True, train_scale=True, **kwargs):
        super().__init__(**kwargs)
        if not (init_scale > 0 and math.isfinite(init_scale)):   # inf: every g infinite
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        # improved-gan initializes v with N(0, 0.05) (lasagne.init.Normal(0.05)).
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.05))
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.init_scale = float(init_scale)
        self.data_init = bool(data_init)
        self.train_scale = bool(train_scale)
        self.init_mode = False          # set by initialize_weight_norm only
        self.initialized_in_last_pass = False
        self.init_problem = None        # why the last init pass could not set g

    # ------------------------------------------------------------ weights
    def build(self, input_shape):
        kernel_shape = self._kernel_shape(input_shape)
        units = kernel_shape[self._output_axis]
        self.v = self.add_weight(name="v", shape=kernel_shape,
                                 initializer=self.kernel_initializer)
        # improved-gan trains g only in output layers (train_g / train_scale);
        # elsewhere the data-dependent init sets it and it stays fixed.
        self.g = self.add_weight(name="g", shape=(units,), initializer="ones",
                                 trainable=self.train_scale)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(units,),
                                        initializer=self.bias_initializer)

    def _reduce_axes(self):
        """The kernel axes of one output unit's weight vector (all but the output one)."""
        axis = self._output_axis % len(self.v.shape)
        return tuple(i for i in range(len(self.v.shape)) if i != axis)

    def _inverse_norm(self):
        """``1 / ||v||``, one per output unit."""
        v = ops.convert_to_tensor(self.v)
        return ops.rsqrt(ops.sum(ops.square(v), axis=self._reduce_axes()) + _NORM_EPSILON)

    def _direction(self):
        """``v / ||v||`` with the norm over every axis but the output one."""
        return self.v * ops.reshape(self._inverse_norm(), self._scale_shape())

    def _scale_shape(self):
        shape = [1] * len(self.v.shape)
        shape[self._output_axis] = -1
        return shape

    @property
    def effective_kernel(self):
        """The kernel the layer applies: ``g * v / ||v||``."""
        return self._direction() * ops.reshape(ops.convert_to_tensor(self.g),
                                               self._scale_shape())

    # --------------------------------------------------------------- call
    def call(self, inputs):
        """``linear(x, v) * g / ||v|| + b``: the linear map is linear in the
        kernel, so scaling its output channels equals applying
        ``effective_kernel``, with one vector of scales instead of three
        kernel-sized elementwise ops forward and more backward (on the
        improved-gan MNIST step they took about a fifth of the time)."""
        if not keras.backend.is_float_dtype(inputs.dtype):
            # As Keras' Dense, integer inputs give float outputs (v cast to
            # their dtype was all zeros: the layer returned its bias).
            inputs = ops.cast(inputs, self.compute_dtype)
        if self.init_mode and self.data_init:
            return self._initialize_from(inputs)
        scale = ops.convert_to_tensor(self.g) * self._inverse_norm()
        outputs = self._linear(inputs, ops.cast(self.v, inputs.dtype)) * ops.cast(
            scale, inputs.dtype)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)

    def _initialize_from(self, inputs):
        """Sets ``g`` and the bias from this batch; returns the initialized output.

        Eager only (the values are assigned with ``Variable.assign``; in a
        ``tf.distribute`` scope this is a cross-replica assignment).
        """
        t = self._linear(inputs, ops.cast(self._direction(), inputs.dtype))
        t = ops.cast(t, "float32")
        batch_axes = tuple(range(len(t.shape) - 1))
        # One value per unit has no spread (g would be init_scale / 1e-4) and
        # none has no mean (g and the bias would be NaN): not written, and
        # initialize_weight_norm raises (Keras would rewrap an error raised here).
        values = math.prod(t.shape[:-1])
        if values < 2:
            positions = " and its positions" if len(t.shape) > 2 else ""
            self.init_problem = (
                f"{self.name}: weight norm's data-dependent init takes each unit's mean and "
                f"standard deviation over a batch of {t.shape[0]}{positions}: {values} "
                "value(s) per unit; initialize on 2 or more images (the CLI's "
                "--init_images; improved-gan: 500)")
            return self.activation(ops.cast(t, self.compute_dtype))
        mean = ops.mean(t, axis=batch_axes)
        std = ops.sqrt(ops.var(t, axis=batch_axes) + _STD_EPSILON)
        scale = self.init_scale / std
        self.g.assign(ops.cast(scale, self.g.dtype))
        if self.use_bias:
            self.bias.assign(ops.cast(-mean * scale, self.bias.dtype))
            outputs = (t - mean) * scale
        else:
            outputs = t * scale
        self.initialized_in_last_pass = True
        return self.activation(ops.cast(outputs, self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            init_scale=self.init_scale,
            data_init=self.data_init,
            train_scale=self.train_scale,
        )
        return config


@keras.saving.register_keras_serializable(package="sgan_keras")
class WeightNormDense(_WeightNormBase):
    """``keras.layers.Dense`` with ``w = g * v / ||v||`` (Salimans & Kingma 2016).

    ``v``: ``[input_dim, units]``, normalized over the input axis. Like
    ``Dense``, acts on the last axis of its input.

    Args:
      units: output units.
      activation, use_bias, kernel_initializer (of ``v``; default N(0, 0.05)
        as improved-gan), bias_initializer: as ``keras.layers.Dense``.
      init_scale: target std of the pre-activation after data-dependent init.
      train_scale: whether ``g`` is trained (improved-gan: output layers only).
      data_init: whether :func:`initialize_weight_norm` initializes this layer
        (improved-gan's MNIST generator output, ``nn.l2normalize``, is not).
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.units = _positive_int("units", units)

    def _kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


class _WeightNormConvBase(_WeightNormBase):
    """Shared arguments of the 2-D (transposed) convolutions (channels last)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 activation=None, use_bias=True, **kwargs):
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        padding = str(padding).lower()
        if padding not in ("valid", "same", "half"):
            raise ValueError(f"padding must be 'valid', 'same' or 'half', got {padding!r}")
        if padding == "half":
            _half_padding(self.kernel_size)     # odd kernels only
        self.padding = padding

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="sgan_keras")
class WeightNormConv2D(_WeightNormConvBase):
    """``keras.layers.Conv2D`` (channels last) with ``w = g * v / ||v||``.

    ``v``: ``[kh, kw, in_channels, filters]``, normalized over its first three
    axes (per output filter), as improved-gan's ``nn.weight_norm`` on a
    convolution.
    """

    def _kernel_shape(self, input_shape):
        return (*self.kernel_size, int(input_shape[-1]), self.filters)

    def compute_output_shape(self, input_shape):
        def length(size, kernel, stride):
            if size is None:
                return None
            if self.padding == "same":
                return -(-size // stride)
            if self.padding == "half":
                size += 2 * (kernel // 2)
            return (size - kernel) // stride + 1
        sizes = (length(size, kernel, stride) for size, kernel, stride
                 in zip(input_shape[1:3], self.kernel_size, self.strides))
        return (input_shape[0], *sizes, self.filters)

    def _linear(self, inputs, kernel):
        if tuple(self.strides) == (1, 1):
            return _conv2d_with_conv_input_grad(inputs, kernel,
                                                _stride_one_padding(self.padding))
        if self.padding == "half":
            return tf.nn.conv2d(inputs, kernel, [1, *self.strides, 1],
                                _half_padding(self.kernel_size))
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                        data_format="channels_last")


@keras.saving.register_keras_serializable(package="sgan_keras")
class WeightNormConv2DTranspose(_WeightNormConvBase):
    """``keras.layers.Conv2DTranspose`` (channels last) with ``w = g * v / ||v||``.

    ``v``: ``[kh, kw, filters, in_channels]`` (the Keras transposed-conv
    layout), normalized over every axis but the output-filter axis 2, as
    improved-gan's ``Deconv2DLayer`` under ``nn.weight_norm``.
    """

    _output_axis = 2

    def _kernel_shape(self, input_shape):
        return (*self.kernel_size, self.filters, int(input_shape[-1]))

    def compute_output_shape(self, input_shape):
        def length(size, kernel, stride):
            if size is None:
                return None
            # "same" and "half": stride times the input's size
            return size * stride + (max(kernel - stride, 0) if self.padding == "valid" else 0)
        sizes = (length(size, kernel, stride) for size, kernel, stride
                 in zip(input_shape[1:3], self.kernel_size, self.strides))
        return (input_shape[0], *sizes, self.filters)

    def _linear(self, inputs, kernel):
        if self.padding == "half":
            return _conv2d_transpose_half(inputs, kernel, self.strides)
        return ops.conv_transpose(inputs, kernel, strides=self.strides,
                                  padding=self.padding, data_format="channels_last")


@keras.saving.register_keras_serializable(package="sgan_keras")
class HalfPaddedConv2DTranspose(keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` (channels last, odd kernel) with
    ``padding="half"``: improved-gan's ``Deconv2DLayer``
    (``mnist_svhn_cifar10/nn.py``), Theano's ``AbstractConv2d_gradInputs``
    with ``border_mode='half'``, whose output is ``stride`` times its input's
    size. The same weights, initializer and config as Keras' layer otherwise.
    Theano's op flips the kernel in space, Keras' does not: a relabelling of
    weights drawn from a symmetric distribution, not copied.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        padding = str(kwargs.pop("padding", "half")).lower()
        if padding != "half":
            raise ValueError(f"HalfPaddedConv2DTranspose pads 'half', got {padding!r}; "
                             "use keras.layers.Conv2DTranspose for 'same' or 'valid'")
        super().__init__(filters, kernel_size, padding="valid", **kwargs)
        self.padding = "half"       # Keras' validation knows "valid" and "same" only
        if (tuple(self.dilation_rate) != (1, 1) or self.output_padding is not None
                or self.data_format != "channels_last"):
            raise ValueError("HalfPaddedConv2DTranspose needs no dilation or output_padding "
                             f"and channels_last; got {self.get_config()}")
        _half_padding(self.kernel_size)     # odd kernels only

    def call(self, inputs):
        outputs = _conv2d_transpose_half(inputs, ops.cast(self.kernel, inputs.dtype),
                                         self.strides)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return _upsampled_shape(input_shape, self.strides, self.filters)


def _stride_one_padding(padding):
    """``padding`` as TensorFlow's stride-1 ops take it: "half" pads an odd
    kernel as "same" does."""
    return "same" if padding == "half" else padding


def _upsampled_shape(input_shape, strides, filters):
    """The output shape of a "same" or "half" transposed convolution: ``strides``
    times the input's height and width."""
    sizes = (None if size is None else size * stride
             for size, stride in zip(input_shape[1:3], strides))
    return (input_shape[0], *sizes, filters)


def _half_padding(kernel_size):
    """Theano's ``border_mode='half'``, ``k // 2`` zeros on every side, as
    the explicit paddings of TensorFlow's convolution ops (channels last)."""
    kernel_h, kernel_w = kernel_size
    if kernel_h % 2 == 0 or kernel_w % 2 == 0:
        raise ValueError(f"padding 'half' needs an odd kernel, got {tuple(kernel_size)}")
    return [[0, 0], [kernel_h // 2] * 2, [kernel_w // 2] * 2, [0, 0]]


def _conv2d_transpose_half(inputs, kernel, strides):
    """The input gradient of a convolution padded ``"half"`` (kernel ``[kh,
    kw, filters, in]``, as Keras' transposed layers), whose input is
    ``strides`` times ``inputs``' size: Theano's ``AbstractConv2d_gradInputs``
    with ``border_mode='half'``."""
    _, height, width, _ = inputs.shape
    if height is None or width is None:
        raise ValueError("padding 'half' needs a known height and width; got input shape "
                         f"{tuple(inputs.shape)}")
    stride_h, stride_w = strides
    output_shape = tf.stack([tf.shape(inputs)[0], height * stride_h, width * stride_w,
                             kernel.shape[2]])
    return tf.nn.conv2d_transpose(inputs, kernel, output_shape, [1, stride_h, stride_w, 1],
                                  padding=_half_padding(kernel.shape[:2]))


@keras.saving.register_keras_serializable(package="sgan_keras")
class GaussianNoise(keras.layers.GaussianNoise):
    """``keras.layers.GaussianNoise`` whose normals come from one uniform draw
    by the Box-Muller transform, ``sqrt(-2 ln u1) * (cos, sin)(2 pi u2)``.

    The same distribution as Keras' ``random.normal`` (which TensorFlow also
    draws by Box-Muller, one element at a time); the vectorized transform
    takes about two thirds of its time on CPU (1.5M normals: 6.4 ms against
    10.0 ms on the development machine), and improved-gan's MNIST D draws
    1.5M of them every step (``mnist_svhn_cifar10/nn.py``'s
    ``GaussianNoiseLayer`` after the input and each hidden layer).
    The random stream differs from Keras' layer for the same seed.

    The uniforms come from TensorFlow's Philox generator, named: the same
    numbers as ``keras.random.uniform`` without XLA, where its default
    ``alg="auto_select"`` is Philox too. Under XLA an Improved-GAN MNIST
    step took 275.1 ms with that default, 50.8 ms with Philox named, on 2
    AVX512-BF16 cores (``experiments/results/xla_philox_avx512bf16.md``);
    why, inside XLA, was not traced.
    """

    def call(self, inputs, training=False):
        if not keras.backend.is_float_dtype(inputs.dtype):
            # Noise cast to integers would be truncated to (mostly) zeros; Keras'
            # layer fails on them with a graph error.
            dtype = keras.backend.standardize_dtype(inputs.dtype)
            raise TypeError(f"GaussianNoise takes float inputs, got {dtype}: scale "
                            "integer images to floats first")
        if not (training and self.stddev > 0):
            return inputs
        shape = ops.shape(inputs)
        pairs = (shape[-1] + 1) // 2
        uniform = philox_uniform((2, *shape[:-1], pairs),
                                 replica_seed(self.seed_generator.next()))
        first, second = tf.unstack(uniform)
        radius = ops.sqrt(-2.0 * ops.log(1.0 - first))   # 1 - u is in (0, 1]
        angle = (2.0 * math.pi) * second
        normal = ops.concatenate([radius * ops.cos(angle), radius * ops.sin(angle)], axis=-1)
        if not (isinstance(shape[-1], int) and shape[-1] % 2 == 0):   # one normal too many
            normal = normal[..., :shape[-1]]
        return inputs + ops.cast(self.stddev * normal, inputs.dtype)


@keras.saving.register_keras_serializable(package="sgan_keras")
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` whose mask differs between the replicas of a
    ``tf.distribute`` strategy (:func:`replica_seed`). Keras' layer gives
    every replica the same seed, so under ``MirroredStrategy`` each replica's
    k-th example gets the same mask. On one device the masks are Keras' own,
    bit for bit (``tf.nn.experimental.stateless_dropout``, as its TensorFlow
    backend draws them)."""

    def call(self, inputs, training=False):
        if not (training and self.rate > 0):
            return inputs
        if self.rate >= 1:     # as Keras' layer; TensorFlow's op refuses rate 1
            return ops.zeros_like(inputs)
        noise_shape = self.noise_shape
        if noise_shape is not None:
            noise_shape = [tf.shape(inputs)[axis] if size is None else size
                           for axis, size in enumerate(noise_shape)]
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=self.rate, noise_shape=noise_shape,
            seed=replica_seed(self.seed_generator.next()))


_PHILOX = tf.random.Algorithm.PHILOX.value   # the raw ops' alg
# The fixed Philox key under which TensorFlow scrambles a stateless op's seed.
_SEED_SCRAMBLE_KEY = 0x02461E293EC8F720


def philox_key_counter(seed):
    """The Philox key ``[1]`` and counter ``[2]`` (uint64) that TensorFlow's
    stateless ops derive from ``seed`` (an int32 or int64 pair) when told
    ``alg="philox"``: its own scramble, one Philox draw of the seed under a
    fixed key (``random_ops_util._philox_scramble_seed``, as the C++ kernels'
    ``GenerateKey``). TensorFlow builds it from 32-bit halves in 43 traced
    ops; drawn as two uint64s (TensorFlow packs each from two uint32s, low
    half first, as that scramble does), it takes 10, with the same values
    with and without XLA. Every draw of a traced step pays it (the
    Improved-GAN D's noise: 18 draws a step)."""
    mix = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=[2], key=tf.constant([_SEED_SCRAMBLE_KEY], tf.uint64),
        counter=tf.cast(seed, tf.uint64), alg=_PHILOX, dtype=tf.uint64)
    key, high = tf.split(mix, 2)
    return key, tf.concat([tf.zeros([1], tf.uint64), high], axis=0)


def philox_uniform(shape, seed):
    """``tf.random.stateless_uniform(shape, seed, alg="philox")`` (float32 in
    [0, 1)), the same numbers, in fewer traced ops (:func:`philox_key_counter`)."""
    key, counter = philox_key_counter(seed)
    return tf.raw_ops.StatelessRandomUniformV2(shape=shape, key=key, counter=counter,
                                               alg=_PHILOX, dtype=tf.float32)


def philox_normal(shape, seed):
    """``tf.random.stateless_normal(shape, seed, alg="philox")`` (float32,
    mean 0, standard deviation 1), the same numbers, in fewer traced ops."""
    key, counter = philox_key_counter(seed)
    return tf.raw_ops.StatelessRandomNormalV2(shape=shape, key=key, counter=counter,
                                              alg=_PHILOX, dtype=tf.float32)


def replica_seed(seed):
    """A ``SeedGenerator``'s seed (:func:`_int32_seed`), folded with the
    replica's id when a ``tf.distribute`` strategy runs several: each replica
    then draws its own dropout mask or noise. Keras' ``SeedGenerator`` state
    is one mirrored variable, so without this every replica draws the same
    numbers. On one replica the seed is unchanged."""
    seed = _int32_seed(seed)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)


def _int32_seed(seed):
    """A ``SeedGenerator``'s seed as the int32 pair TensorFlow's stateless ops
    take, cast as ``keras.random`` casts it (so the draws are Keras' own)."""
    if seed.dtype == tf.int32:
        return seed
    return tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)


@keras.saving.register_keras_serializable(package="sgan_keras")
class Conv2DWithConvInputGrad(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (stride 1, channels last) whose gradient with
    respect to its input runs as a forward convolution
    (:func:`_conv2d_with_conv_input_grad`).

    The same weights, initializer, config and function as the ``Conv2D`` it
    replaces (``tests/test_layers.py``). The networks use it for every stride-1
    convolution; ``WeightNormConv2D`` and ``UpsampleConv2D`` use the same
    function for theirs.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if (tuple(self.strides) != (1, 1) or tuple(self.dilation_rate) != (1, 1)
                or self.groups != 1 or self.data_format != "channels_last"):
            raise ValueError(f"{type(self).__name__} needs stride 1, no dilation or groups "
                             f"and channels_last; got {self.get_config()}")

    def convolution_op(self, inputs, kernel):
        return _conv2d_with_conv_input_grad(inputs, kernel, self.padding)


def _conv2d_with_conv_input_grad(inputs, kernel, padding):
    """Stride-1 ``tf.nn.conv2d(inputs, kernel, 1, padding)`` (channels last,
    ``padding`` "same" or "valid") whose input gradient is a forward
    convolution.

    The gradient of a stride-1 convolution with respect to its input is the
    convolution of the output gradient with the kernel flipped in space and
    its channel axes swapped, padded by ``k - 1 - p`` where the forward pass
    padded ``p`` (a "full" convolution where it was "valid"). TensorFlow's
    gradient op (``Conv2DBackpropInput``) computes the same on another code
    path, which on the AVX2 CPU the package is developed on runs up to several
    times slower than a forward ``Conv2D`` of the same size: the SVHN DCGAN
    D's 4x4x128 -> 128 3x3 convolution at batch 128 takes its input gradient
    in 35.3 ms that way, 6.7 ms this way; the MNIST blog G's first
    ``UpsampleConv2D`` at batch 32 in 33.1 against 7.9 ms
    (``experiments/results/conv_input_grad_avx2.md``; in the step, SVHN DCGAN
    1.37x, the blog 1.14x, conv-large 1.12x, ``benchmark_conv_input_grad_avx2.md``).
    The kernel gradient is TensorFlow's (``Conv2DBackpropFilter``). GPU speed
    is unmeasured.
    """
    padding = str(padding).upper()
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding.lower()!r}")
    kernel = ops.cast(kernel, inputs.dtype)     # a tensor: custom_gradient takes no variable
    kernel_h, kernel_w = kernel.shape[:2]

    def gradient_padding(size):
        total = size - 1 if padding == "SAME" else 0
        before = total // 2                       # TensorFlow's "same": the smaller half first
        return [size - 1 - before, size - 1 - (total - before)]

    pads = [[0, 0], gradient_padding(kernel_h), gradient_padding(kernel_w), [0, 0]]

    @tf.custom_gradient
    def conv(inputs, kernel):
        def gradients(upstream):
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            return (tf.nn.conv2d(upstream, flipped, 1, pads),
                    tf.raw_ops.Conv2DBackpropFilter(
                        input=inputs, filter_sizes=tf.shape(kernel), out_backprop=upstream,
                        strides=[1, 1, 1, 1], padding=padding))
        return tf.nn.conv2d(inputs, kernel, 1, padding), gradients

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package="sgan_keras")
class UpsampleConv2D(Conv2DWithConvInputGrad):
    """``UpSampling2D(2)`` (nearest neighbour) then this ``Conv2D`` (stride 1,
    ``"same"`` padding, odd kernel), computed on the input without making the
    upsampled image.

    Each output pixel ``(2i + p, 2j + q)`` of the pair reads a window of the
    upsampled image whose rows are input rows repeated twice, so it equals a
    convolution of the *input* at ``(i, j)`` with a smaller kernel for its
    phase ``(p, q)``, whose taps are sums of the original taps. The four phase
    kernels go side by side into one ``[m, m, in, 4 * filters]`` kernel (``m``
    is 3 for the 5x5 kernels of the MNIST blog's G), and ``depth_to_space``
    interleaves the four results into the ``2H x 2W`` output: 4 * 9 = 36
    multiply-adds per input pixel and channel pair instead of 4 * 25 = 100.

    The layer's weights are the original ``[k, k, in, filters]`` kernel and
    bias (the same initializer, shape and values as the ``Conv2D`` it
    replaces); the phase kernel is a fixed linear map of them. The output is
    the same function, up to float rounding (``tests/test_layers.py``). The
    phase convolution's input gradient is a convolution too
    (``Conv2DWithConvInputGrad``).
    """

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs.setdefault("padding", "same")
        super().__init__(filters, kernel_size, **kwargs)
        if self.padding != "same" or any(size % 2 == 0 for size in self.kernel_size):
            raise ValueError("UpsampleConv2D needs an odd kernel and 'same' padding; "
                             f"got {self.get_config()}")
        self._taps = [_phase_taps(size) for size in self.kernel_size]

    @property
    def phase_kernel_size(self):
        """``(m_rows, m_columns)`` of the phase kernel it convolves with."""
        return tuple(taps.shape[1] for taps in self._taps)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), self.filters)

    def call(self, inputs):
        rows, columns = (ops.cast(taps, self.kernel.dtype) for taps in self._taps)
        # [p, m, k] x [q, n, l] x [k, l, in, out] -> [m, n, in, p, q, out]
        phases = ops.einsum("pmk,qnl,klio->mnipqo", rows, columns, self.kernel)
        size = ops.shape(phases)
        kernel = ops.reshape(phases, (size[0], size[1], size[2], 4 * self.filters))
        outputs = self.convolution_op(inputs, ops.cast(kernel, inputs.dtype))
        outputs = tf.nn.depth_to_space(outputs, 2)     # channel (2p + q) * out + o -> (p, q)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)


@keras.saving.register_keras_serializable(package="sgan_keras")
class MatmulConv2DTranspose(keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` ("same" padding, channels last) whose
    forward pass is one matrix product and a sum of shifted taps; with
    ``padding="half"``, ``HalfPaddedConv2DTranspose`` so computed.

    Input pixel ``(i, j)`` adds ``x[i, j] @ kernel[ky, kx]`` to output pixel
    ``(s i + ky - p, s j + kx - p)`` (stride ``s``, ``p`` the top/left padding
    of "same", or ``k // 2`` of "half"). The product of the ``[N H W, in]``
    inputs with the kernel as ``[in, kh kw filters]`` makes every tap's
    contribution (the useful multiply-adds only); the taps that land on output
    phase ``(s q + r)``, shifted by their whole-pixel offset, are summed, and a
    reshape interleaves the ``s x s`` phases into the output. The gradients are TensorFlow's own
    for a transposed convolution (``Conv2D`` of the output gradient for the
    inputs, ``Conv2DBackpropFilter`` for the kernel).

    The same weights, initializer and config as the ``Conv2DTranspose`` it
    replaces; the output is the same function up to float rounding
    (``tests/test_layers.py``). Why: on the AVX2 CPU the package is developed
    on, TensorFlow's transposed convolution of a few pixels and many channels
    runs far below the machine's matmul speed (the GANs in Action G's first
    layer, 7x7x256 -> 14x14x128 at batch 32: 28.5 ms forward, 30% of the
    peak, against 10.6 ms this way); the generators use this layer for their
    first transposed convolution only, where it measured faster
    (``experiments/results/conv_transpose_matmul_avx2.md``; in the step,
    GANs in Action 1.26x, SVHN DCGAN 1.08x, conv-large 1.12x). GPU speed is
    unmeasured.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        padding = str(kwargs.pop("padding", "same")).lower()
        super().__init__(filters, kernel_size, padding="same" if padding == "half" else padding,
                         **kwargs)
        if (self.padding != "same" or tuple(self.dilation_rate) != (1, 1)
                or self.output_padding is not None or self.data_format != "channels_last"):
            raise ValueError("MatmulConv2DTranspose needs 'same' or 'half' padding, no "
                             "dilation or output_padding and channels_last; got "
                             f"{self.get_config()}")
        if padding == "half":
            _half_padding(self.kernel_size)     # odd kernels only
            self.padding = "half"   # Keras' validation knows "valid" and "same" only

    def call(self, inputs):
        if None in inputs.shape[1:]:
            raise ValueError("MatmulConv2DTranspose needs a known height, width and channel "
                             f"count; got input shape {tuple(inputs.shape)}")
        kernel = ops.cast(self.kernel, inputs.dtype)
        outputs = _matmul_conv_transpose(inputs, kernel, tuple(self.strides),
                                         padding=self.padding)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return _upsampled_shape(input_shape, self.strides, self.filters)


def _matmul_conv_transpose(inputs, kernel, strides, forward=None, padding="same"):
    """``conv2d_transpose(inputs, kernel, strides, "SAME")`` (or padded
    ``"half"``) as a matmul and shifted sums (see ``MatmulConv2DTranspose``);
    TensorFlow's gradients. ``forward`` replaces the XLA-compiled
    ``_summed_taps`` (benchmarks time its uncompiled ``python_function``)."""
    forward = forward or _summed_taps
    stride_h, stride_w = strides
    if padding == "half":
        pads = _half_padding(kernel.shape[:2])
        conv_padding = {"padding": "EXPLICIT",
                        "explicit_paddings": [size for pair in pads for size in pair]}
    else:
        pads, conv_padding = "SAME", {"padding": "SAME"}

    @tf.custom_gradient
    def conv_transpose(inputs, kernel):
        def gradients(upstream):
            strides4 = [1, stride_h, stride_w, 1]
            return (tf.nn.conv2d(upstream, kernel, strides4, pads),
                    tf.raw_ops.Conv2DBackpropFilter(
                        input=upstream, filter_sizes=tf.shape(kernel), out_backprop=inputs,
                        strides=strides4, **conv_padding))
        return forward(inputs, kernel, strides, padding), gradients

    return conv_transpose(inputs, kernel)


@tf.function(jit_compile=True, autograph=False)   # Python control flow only
def _summed_taps(inputs, kernel, strides, padding="same"):
    """The forward pass of ``_matmul_conv_transpose``, compiled by XLA into the
    matmul and one fused loop for the shifted sums and the interleave. As
    separate TensorFlow ops, each a pass through memory, the forward pass
    took 0.9-1.2 ms more on GANs in Action's first layer, 2.4-2.8 ms on SVHN
    DCGAN's and 26-39 ms on conv-large's (AVX2 CPU, Eigen's kernels:
    ``experiments/results/conv_transpose_matmul_avx2.md``)."""
    _, height, width, in_channels = inputs.shape
    kernel_h, kernel_w, filters, _ = kernel.shape
    stride_h, stride_w = strides
    rows = _tap_offsets(kernel_h, stride_h, padding)
    columns = _tap_offsets(kernel_w, stride_w, padding)
    # The kernel [kh, kw, filters, in] as [kh kw filters, in], transposed in
    # the product: column block ky * kw + kx of the taps is tap (ky, kx).
    taps = tf.matmul(tf.reshape(inputs, [-1, in_channels]),
                     tf.reshape(kernel, [-1, in_channels]), transpose_b=True)
    taps = tf.reshape(taps, [-1, height, width, kernel_h * kernel_w, filters])
    phases = [[None] * stride_w for _ in range(stride_h)]
    for ky, (phase_y, shift_y) in enumerate(rows):
        for kx, (phase_x, shift_x) in enumerate(columns):
            tap = _shift(_shift(taps[:, :, :, ky * kernel_w + kx], shift_y, 1), shift_x, 2)
            total = phases[phase_y][phase_x]
            phases[phase_y][phase_x] = tap if total is None else total + tap
    if any(p is None for row in phases for p in row):   # kernel smaller than stride
        zeros = tf.zeros_like(taps[:, :, :, 0])
        phases = [[zeros if p is None else p for p in row] for row in phases]
    # [N, H, sh, W, sw, filters] -> [N, H sh, W sw, filters]
    interleaved = tf.stack([tf.stack(row, axis=3) for row in phases], axis=2)
    return tf.reshape(interleaved, [-1, height * stride_h, width * stride_w, filters])


@keras.saving.register_keras_serializable(package="sgan_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose moving variance may follow
    Keras 2's rule (``unbiased_moving_variance=True``).

    Keras 3 moves the moving variance toward the batch's variance, the one it
    normalizes by (``/ n``, ``n`` the values a channel: the batch times the
    pixels). Keras 2's layer, from 2.1.3 on (keras-team/keras pull request
    9028), moves it toward ``variance * n / (n - (1 + epsilon))`` instead, an
    unbiased estimate; GANs in Action's repository pins Keras 2.1.6. Only the
    moving variance differs: the outputs and gradients are Keras 3's, and
    inference is Keras' own ``call``. Masks and renorm are refused with it.
    """

    def __init__(self, *args, unbiased_moving_variance=False, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(unbiased_moving_variance, bool):
            raise ValueError("unbiased_moving_variance must be True or False, got "
                             f"{unbiased_moving_variance!r}")
        self.unbiased_moving_variance = unbiased_moving_variance

    def call(self, inputs, training=None, mask=None):
        if not (self.unbiased_moving_variance and training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None or self.renorm:
            raise ValueError(f"{self.name}: unbiased_moving_variance=True takes no mask "
                             "and no renorm")
        inputs = ops.cast(inputs, "float32")
        axis = self.axis % len(inputs.shape)
        axes = [index for index in range(len(inputs.shape)) if index != axis]
        mean, variance = ops.moments(inputs, axes=axes, synchronized=self.synchronized)
        self._update_moving_statistics(mean, variance, _values_per_channel(
            inputs, axis, self.synchronized))
        outputs = ops.batch_normalization(
            inputs, mean, variance, axis=axis,
            offset=ops.cast(self.beta, "float32") if self.center else None,
            scale=ops.cast(self.gamma, "float32") if self.scale else None,
            epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, biased_variance, count):
        """Moves the moving mean and variance toward a training batch's ``mean``
        and ``biased_variance`` (``count`` values a channel), by Keras 3's rule
        or, with ``unbiased_moving_variance``, Keras 2's."""
        variance = biased_variance
        if self.unbiased_moving_variance:
            variance = biased_variance * count / (count - (1.0 + self.epsilon))
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum
                                    + variance * (1.0 - momentum))

    def get_config(self):
        return {**super().get_config(), "unbiased_moving_variance": self.unbiased_moving_variance}


def _values_per_channel(inputs, axis, synchronized):
    """How many values of each channel ``inputs`` holds (float32): over every
    replica's batch when ``synchronized`` under a strategy of several."""
    count = tf.cast(tf.size(inputs, out_type=tf.int64) // inputs.shape[axis], "float32")
    context = tf.distribute.get_replica_context()
    if synchronized and context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


@keras.saving.register_keras_serializable(package="sgan_keras")
class FusedBatchNormalization(BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training-mode pass on
    channels-last images is TensorFlow's fused kernel (``FusedBatchNormV3``
    and its gradient), as tf.keras 2 ran it by default for 4-D inputs.

    The same weights, config and function up to float rounding
    (``tests/test_layers.py``): the moving averages take the batch's biased
    variance, as Keras 3's layer does (the kernel returns the unbiased one,
    which is rescaled), or Keras 2's estimate (:class:`BatchNormalization`).
    Keras 3 computes the same step as separate moments,
    normalization and their gradients; on the AVX2 CPU the package is
    developed on, the fused kernel runs GANs in Action G's batch norm
    (and LeakyReLU) on 32x14x14x128 forward and backward in 2.6 ms against
    5.0 ms. Inference, masks, renorm, synchronized statistics, other ranks
    or axes, and an epsilon below the 1.001e-5 cuDNN accepts, run Keras'
    own ``call``, and so does a step compiled by XLA (``--jit_compile=true``),
    where XLA's own lowering of the fused op ran the GANs in Action step at
    127.9 ms against 60.9 ms with Keras' ops. GPU speed is unmeasured.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm
                or self.synchronized or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or self.epsilon < 1.001e-5
                or _in_xla_compilation()):
            return super().call(inputs, training=training, mask=mask)
        inputs = ops.cast(inputs, "float32")
        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.epsilon, is_training=True)
        count = _values_per_channel(inputs, 3, synchronized=False)
        self._update_moving_statistics(
            mean, unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0), count)
        return ops.cast(outputs, self.compute_dtype)


def _in_xla_compilation():
    """Whether the graph being traced, or one it is nested in, is compiled by
    XLA (TensorFlow's own test, as tf.keras 2's layers used it)."""
    from tensorflow.python.ops import control_flow_util
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _tap_offsets(kernel_size, stride, padding="same"):
    """``(phase, shift)`` of each kernel tap along one axis of a "same" (or
    "half") transposed convolution: tap ``k`` of input ``i`` lands on output
    ``stride * (i + shift) + phase``. "same" pads ``kernel_size - stride``
    in all, the smaller half before (TensorFlow's rule); "half" pads
    ``kernel_size // 2`` before."""
    if padding == "half":
        pad_before = kernel_size // 2
    else:
        pad_before = max(kernel_size - stride, 0) // 2
    return [((k - pad_before) % stride, (k - pad_before) // stride) for k in range(kernel_size)]


def _shift(tensor, offset, axis):
    """``tensor`` moved by ``offset`` along ``axis`` (``out[q] = in[q - offset]``),
    zero filled, same shape."""
    if offset == 0:
        return tensor
    rank = len(tensor.shape)
    length = tensor.shape[axis]
    padding = [[0, 0]] * rank
    padding[axis] = [offset, 0] if offset > 0 else [0, -offset]
    begin = [0] * rank
    begin[axis] = 0 if offset > 0 else -offset
    size = [-1] * rank
    size[axis] = length
    return tf.slice(tf.pad(tensor, padding), begin, size)


def _phase_taps(kernel_size):
    """``[2, m, kernel_size]`` 0/1: ``taps[p, j, t]`` is 1 when tap ``t`` of a
    kernel over the x2-upsampled axis falls on input offset ``j - m // 2`` for
    output phase ``p`` (0 or 1); ``m`` is the phase kernel's size."""
    radius = kernel_size // 2
    offsets = [[(phase + tap) // 2 for tap in range(-radius, radius + 1)] for phase in (0, 1)]
    reach = max(abs(offset) for row in offsets for offset in row)
    taps = np.zeros((2, 2 * reach + 1, kernel_size), "float32")
    for phase, row in enumerate(offsets):
        for tap, offset in enumerate(row):
            taps[phase, offset + reach, tap] = 1.0
    return taps


def all_layers(model):
    """Every layer of ``model``, the layers of nested models and of a user's
    custom layers included, in order. ``Model.layers`` is the direct children
    (Keras' ``_flatten_layers(recursive=False)``); a custom ``Layer`` has no
    ``layers``, so its weight-norm and batch-norm sublayers were missed."""
    for layer in model._flatten_layers(include_self=False, recursive=False):
        yield layer
        yield from all_layers(layer)


def computing_layers(model):
    """``all_layers(model)`` but its input layers and nested functional or
    Sequential models, whose own dtype policy computes nothing (their layers do):
    loaded (``keras.models.load_model``) under a global mixed policy, a float32
    model's take that policy, and said it was mixed. A subclassed model casts its
    inputs to its policy's dtype, and counts (it has no ``output_shape``)."""
    return [layer for layer in all_layers(model)
            if not isinstance(layer, keras.layers.InputLayer)
            and not (isinstance(layer, keras.Model) and hasattr(layer, "output_shape"))]


def weight_norm_layers(model):
    """The weight-normalized layers of ``model`` (nested models included), in order."""
    return [layer for layer in all_layers(model) if isinstance(layer, _WeightNormBase)]


def initialize_weight_norm(model: keras.Model, inputs, training=True) -> int:
    """Data-dependent initialization of ``model``'s weight-normalized layers.

    Runs ``model`` once eagerly on ``inputs`` in init mode: each
    weight-normalized layer with ``data_init=True``, in the order the forward
    pass reaches it, sets ``g`` and its bias from the statistics of its
    pre-activation on this batch (see the module docstring) and passes the
    initialized output on, so later layers see initialized inputs. Returns the
    number of layers initialized (0 for a model without such layers). Raises
    ``WeightNormInitError`` when a layer sees fewer than 2 values per unit (an
    empty batch, or a batch of 1 for a dense layer): the other layers are set.

    ``training=True`` (default) matches improved-gan, whose init pass runs with
    dropout and noise on (``deterministic=False``); it also makes
    BatchNormalization use (and update its moving statistics from) this batch.

    Works in a ``tf.distribute`` strategy scope: the pass is eager and
    cross-replica, and the new values are set with plain ``Variable.assign``,
    which writes every replica's copy. Must not be called inside a
    ``tf.function``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    layers = [layer for layer in weight_norm_layers(model) if layer.data_init]
    if not layers:
        return 0
    for layer in layers:
        layer.init_mode = True
        layer.initialized_in_last_pass = False
        layer.init_problem = None
    try:
        model(inputs, training=training)
    finally:
        for layer in layers:
            layer.init_mode = False
    problems = [layer.init_problem for layer in layers if layer.init_problem]
    if problems:
        raise WeightNormInitError(problems[0])
    return sum(layer.initialized_in_last_pass for layer in layers)


def _positive_int(name, value):
    """``value`` as an int; as Keras' layers, a float or a string is refused
    (``int()`` cut 5.7 units to 5 and took ``"5"``)."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pair(name, value):
    if is_integer(value):
        value = (value, value)
    try:
        pair = tuple(value)
        if len(pair) != 2:
            raise ValueError
        return tuple(_positive_int(name, v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive int or a pair of them, "
                         f"got {value!r}") from None
