"""Generator and discriminator of each reproduced source.

``build_generator(architecture, ...)`` maps noise ``z: [B, latent_dim]`` to
images ``[B, H, W, C]``; ``build_discriminator(architecture, ...)`` maps images
to ``[logits, features]``:

- ``logits``: ``[B, K]`` for ``fake_class="zero"``; ``[B, K+1]`` for
  ``"learned"`` (the last column is the fake-class logit ``l_f``); ``[B, K+1]``
  for ``"separate"``, whose last column is the real-vs-fake logit of an
  independent 1-unit head on the same input as the class head (the PyTorch
  SGAN write-up), see :mod:`sgan_keras.losses`.
- ``features``: the layer the generator's feature matching compares (named
  per architecture in its layer list).

Each architecture follows the layer list of its source (``_SOURCES`` names
the paper, tutorial or file; ``_LAYERS`` lists the layers); where the source
leaves a detail open (biases, BatchNorm scale, initializers, upsampling mode)
the choice is written in the builder's docstring. ``describe(architecture)``
returns the source and the layer list. ``conv(f, k, s)`` below is a 2-D
convolution with "same" padding unless noted; LReLU(a) is a leaky ReLU.
``conv_padding="half"`` pads the SVHN/CIFAR-10 Improved-GAN and Lecouat
networks' convolutions as Theano's ``border_mode='half'``, improved-gan's
(``HALF_PADDING_ARCHITECTURES``; ``sgan_keras/layers.py``).

A fixed ``seed`` builds identical weights: every initializer, Dropout and
GaussianNoise layer gets its own seed derived from it (``None``: random).

``precision="mixed_bfloat16"`` builds the layers with Keras' mixed policy
(bfloat16 compute, float32 variables; the Keras mixed-precision guide) and
casts the networks' outputs back to float32, so that losses, feature
matching and exported logits stay in float32. bfloat16 needs no loss
scaling; float16 (which does) is not offered.
"""

import contextlib
import functools

import keras
import tensorflow as tf

from sgan_keras import layers as sgan_layers
from sgan_keras.checks import is_integer
from sgan_keras.choices import ARCHITECTURES
from sgan_keras.choices import BATCH_NORM_VARIANCES
from sgan_keras.choices import CONV_PADDINGS
from sgan_keras.choices import FAKE_CLASSES
from sgan_keras.choices import GANS_IN_ACTION_GENERATORS
from sgan_keras.choices import GENERATOR_OUTPUT_ACTIVATIONS
from sgan_keras.choices import HALF_PADDING_ARCHITECTURES
from sgan_keras.choices import NATIVE_IMAGE_SHAPES
from sgan_keras.choices import PRECISIONS

_SOURCES = {
    "mnist_blog": "the MNIST semi-supervised GAN blog post (feature matching + "
                  "manifold regularization)",
    "svhn_dcgan": "the Udacity deep-learning SVHN semi-supervised GAN notebook and "
                  "the SVHN write-up",
    "mnist_gans_in_action": "GANs in Action (Langr & Bok 2019), chapter 7 SGAN "
                            "Keras notebook",
    "mnist_improved_gan": "Salimans et al. 2016, openai/improved-gan "
                          "train_mnist_feature_matching.py",
    "svhn_improved_gan": "Salimans et al. 2016, openai/improved-gan "
                         "train_svhn_feature_matching.py; Lecouat et al. 2018",
    "cifar10_improved_gan": "Salimans et al. 2016, openai/improved-gan "
                            "train_cifar_feature_matching.py; Lecouat et al. 2018",
    "svhn_lecouat": "Lecouat et al. 2018, bruno-31/GAN-manifold-regularization "
                    "svhn_gan.py",
    "cifar10_lecouat": "Lecouat et al. 2018, bruno-31/GAN-manifold-regularization "
                       "cifar_gan.py",
}

_LAYERS = {
    "mnist_blog": (
        "G: z -> Dense 7*7*64 ReLU -> reshape -> Upsample x2 (nearest) -> conv(128,5,1) "
        "ReLU -> Upsample x2 -> conv(64,5,1) ReLU -> conv(64,5,1) ReLU -> conv(1,5,1) tanh",
        "D: conv(32,5,2) LReLU(0.2) Dropout 0.3 -> conv(64,5,2) LReLU Dropout 0.3 -> "
        "conv(64,5,1) LReLU Dropout 0.3 -> Flatten (3136, features) -> Dense K"),
    "svhn_dcgan": (
        "G: z -> Dense 4*4*128 -> reshape -> BN -> LReLU(0.2) -> convT(64,5,2) BN LReLU "
        "-> convT(32,5,2) BN LReLU -> convT(3,5,2) tanh",
        "D: Dropout 0.2 -> conv(64,3,2) LReLU Dropout 0.5 -> conv(64,3,2) LReLU -> "
        "conv(64,3,2) BN LReLU Dropout 0.5 -> conv(128,3,1) BN LReLU -> conv(128,3,1) BN "
        "LReLU -> conv(128,3,1,valid) LReLU -> global average pool (128, features) -> Dense K"),
    "mnist_gans_in_action": (
        "G: z -> Dense 7*7*256 -> reshape -> convT(128,3,2) BN LReLU(0.01) -> "
        "[convT(64,3,1) BN LReLU: --gans_in_action_generator=notebook] -> convT(1,3,2) tanh",
        "D: conv(32,3,2) LReLU(0.01) -> conv(64,3,2) BN LReLU -> conv(128,3,2) BN LReLU "
        "-> Dropout 0.5 -> Flatten (2048, features) -> Dense K"),
    "mnist_improved_gan": (
        "G: z -> Dense 500 (no bias) BN (no scale) softplus -> Dense 500 BN softplus -> "
        "weight-normalized Dense 784 sigmoid -> reshape 28x28x1",
        "D: Flatten -> GaussianNoise 0.3 -> WN Dense 1000, 500, 250, 250, 250 (ReLU, "
        "GaussianNoise 0.5 after each; features: the last 250 before its noise) -> "
        "WN Dense K"),
    "svhn_improved_gan": (
        "G: z -> Dense 4*4*512 (no bias) BN (no scale) ReLU -> convT(256,5,2) BN ReLU -> "
        "convT(128,5,2) BN ReLU -> WN convT(3,5,2) tanh (the source pads 'half': "
        "conv_padding)",
        "D: Dropout 0.2 -> WN conv(64,3) x3 (third stride 2) -> Dropout 0.5 -> WN "
        "conv(128,3) x3 (third stride 2) -> Dropout 0.5 -> WN conv(128,3,valid) -> WN 1x1 "
        "conv 128 x2 -> global average pool (128, features) -> WN Dense K; LReLU(0.2) "
        "(the source pads 'half': conv_padding)"),
    "cifar10_improved_gan": (
        "G: as svhn_improved_gan",
        "D: as svhn_improved_gan with widths 96/192 (features: 192)"),
    "svhn_lecouat": (
        "G: z -> Dense 4*4*512 BN ReLU -> convT(256,5,2) BN ReLU -> convT(128,5,2) BN "
        "ReLU -> WN convT(3,5,2) tanh (biases everywhere, BN with scale and offset, "
        "momentum 0.99; weight norm without data-dependent init)",
        "D: as svhn_improved_gan (padded 'same', as their TensorFlow), but a global MAX "
        "pool (128, features) and weight norm without data-dependent init (g = 1, "
        "trained)"),
    "cifar10_lecouat": (
        "G: as svhn_lecouat",
        "D: as svhn_lecouat with widths 96/192 (features: 192)"),
}


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def describe(architecture):
    """One paragraph: the source of ``architecture`` and its G and D layer lists."""
    _check_architecture(architecture)
    generator, discriminator = _LAYERS[architecture]
    return (f"{architecture} ({_SOURCES[architecture]})\n"
            f"  {generator}\n  {discriminator}")


def build_generator(architecture, *, image_shape, latent_dim=100, seed=None,
                    output_activation=None, conv_padding="same", precision="float32",
                    gans_in_action_generator="text", batch_norm_variance="biased"):
    """The generator ``z [B, latent_dim] -> images [B, H, W, C]`` of ``architecture``.

    ``image_shape`` must be the architecture's native ``(H, W, C)``
    (``NATIVE_IMAGE_SHAPES``); the output is tanh (range [-1, 1]) except
    ``mnist_improved_gan`` (sigmoid, [0, 1]), as each source.

    ``output_activation`` (``None``: the source's) is a choice only where
    ``GENERATOR_OUTPUT_ACTIVATIONS`` lists one: ``mnist_improved_gan`` also
    takes ``softplus``, the output of Sleepychord/ImprovedGAN-pytorch, whose
    author replaced the source's sigmoid with it (what the sigmoid does here:
    ``experiments/results/mnist_improved_gan_sigmoid_early_epochs.md``).

    ``conv_padding``: ``"same"`` or, for ``HALF_PADDING_ARCHITECTURES``, ``"half"``.
    ``gans_in_action_generator``: ``"text"`` or, for ``mnist_gans_in_action``,
    ``"notebook"`` (:func:`_gans_in_action_generator`).
    ``batch_norm_variance``: what the batch norms' moving variance follows,
    ``"biased"`` (Keras 3's) or ``"unbiased"`` (Keras 2's;
    ``layers.BatchNormalization``).
    """
    _check_architecture(architecture)
    _check_image_shape(architecture, image_shape)
    if not is_integer(latent_dim) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    latent_dim = int(latent_dim)
    allowed = GENERATOR_OUTPUT_ACTIVATIONS[architecture]
    if output_activation is None:
        output_activation = allowed[0]
    if output_activation not in allowed:
        raise ValueError(f"output_activation of the {architecture} generator must be one of "
                         f"{allowed}, got {output_activation!r}")
    seeds = _SeedStream(seed, salt=0)
    builder = _with_conv_padding(_GENERATORS[architecture], architecture, conv_padding)
    if gans_in_action_generator not in GANS_IN_ACTION_GENERATORS:
        raise ValueError(f"gans_in_action_generator must be one of "
                         f"{GANS_IN_ACTION_GENERATORS}, got {gans_in_action_generator!r}")
    if architecture == "mnist_gans_in_action":
        builder = functools.partial(builder, variant=gans_in_action_generator)
    elif gans_in_action_generator != "text":
        raise ValueError(f"gans_in_action_generator={gans_in_action_generator!r} is a choice "
                         f"of mnist_gans_in_action only, not {architecture}")
    with _dtype_policy(precision):
        z = keras.Input((latent_dim,), name="z")
        images = builder(z, seeds, output_activation)
        images = _float32_output(images, precision, "g_images_float32")
    return _configure_batch_norm(keras.Model(z, images, name=f"generator_{architecture}"),
                                 batch_norm_variance)


def build_discriminator(architecture, *, image_shape, num_classes=10, fake_class="zero",
                        seed=None, conv_padding="same", precision="float32",
                        batch_norm_variance="biased"):
    """The discriminator ``images -> [logits, features]`` of ``architecture``.

    See the module docstring for the meaning of ``logits`` under each
    ``fake_class`` and ``describe(architecture)`` for the layers;
    ``conv_padding`` and ``batch_norm_variance`` as :func:`build_generator`'s.
    """
    _check_architecture(architecture)
    _check_image_shape(architecture, image_shape)
    if fake_class not in FAKE_CLASSES:
        raise ValueError(f"fake_class must be one of {FAKE_CLASSES}, got {fake_class!r}")
    if not is_integer(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    num_classes = int(num_classes)
    seeds = _SeedStream(seed, salt=1)
    body = _with_conv_padding(_DISCRIMINATOR_BODIES[architecture], architecture, conv_padding)
    with _dtype_policy(precision):
        images = keras.Input(tuple(image_shape), name="images")
        features, head_input, make_dense = body(images, seeds)
        logits = _logits_head(head_input, num_classes, fake_class, make_dense)
        logits = _float32_output(logits, precision, "d_logits_float32")
        features = _float32_output(features, precision, "d_features_float32")
    return _configure_batch_norm(
        keras.Model(images, [logits, features], name=f"discriminator_{architecture}"),
        batch_norm_variance)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class _SeedStream:
    """Distinct, reproducible seeds for the layers of one network (None: random)."""

    def __init__(self, seed, salt):
        if seed is not None and not is_integer(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self._base = None if seed is None else (int(seed) * 2 + salt) * 1000
        self._count = 0

    def __call__(self):
        if self._base is None:
            return None
        self._count += 1
        return self._base + self._count

    def glorot(self):
        """Keras' default kernel initializer (Keras, tf.layers, lasagne default)."""
        return keras.initializers.GlorotUniform(seed=self())

    def normal(self, stddev):
        return keras.initializers.RandomNormal(stddev=stddev, seed=self())


def _configure_batch_norm(network, batch_norm_variance):
    """``network`` with its batch norms' moving variance following
    ``batch_norm_variance`` (``layers.BatchNormalization``).

    Built in the scope of a strategy of several replicas, its batch norms
    also take the global batch's statistics (Keras' ``synchronized``), so
    that the replicas train as one device does (the sources ran on one).
    Each replica's own statistics made training differ from one device's, and
    the replicas' copies of the moving averages differ from each other (Keras
    3.15 updates each from its replica's images): the evaluation used each
    replica's, a checkpoint the first's."""
    if batch_norm_variance not in BATCH_NORM_VARIANCES:
        raise ValueError(f"batch_norm_variance must be one of {BATCH_NORM_VARIANCES}, got "
                         f"{batch_norm_variance!r}")
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
    for layer in network.layers:
        if synchronized and isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
        if isinstance(layer, sgan_layers.BatchNormalization):
            layer.unbiased_moving_variance = batch_norm_variance == "unbiased"
    return network


@contextlib.contextmanager
def _dtype_policy(precision):
    """Keras' dtype policy set to ``precision`` while the layers are made."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_output(tensor, precision, name):
    """Mixed precision: the output layer computes in float32 (the Keras guide)."""
    if precision == "float32":
        return tensor
    return keras.layers.Activation("linear", dtype="float32", name=name)(tensor)


def _with_conv_padding(builder, architecture, conv_padding):
    """``builder`` padding its convolutions as ``conv_padding`` says, where
    ``architecture`` has the choice (``HALF_PADDING_ARCHITECTURES``)."""
    if conv_padding not in CONV_PADDINGS:
        raise ValueError(f"conv_padding must be one of {CONV_PADDINGS}, got {conv_padding!r}")
    if architecture in HALF_PADDING_ARCHITECTURES:
        return functools.partial(builder, conv_padding=conv_padding)
    if conv_padding != "same":
        raise ValueError(f"conv_padding={conv_padding!r} is a choice of "
                         f"{', '.join(HALF_PADDING_ARCHITECTURES)} only, not {architecture}")
    return builder


def _check_architecture(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def _check_image_shape(architecture, image_shape):
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        shape = image_shape
    if shape != NATIVE_IMAGE_SHAPES[architecture]:
        raise ValueError(f"image_shape must be {NATIVE_IMAGE_SHAPES[architecture]} for "
                         f"architecture {architecture!r}, got {image_shape!r}")


def _logits_head(x, num_classes, fake_class, make_dense):
    """K (``zero``), K+1 (``learned``) or K class + 1 real/fake (``separate``) logits."""
    if fake_class == "zero":
        return make_dense(num_classes, "d_logits")(x)
    if fake_class == "learned":
        return make_dense(num_classes + 1, "d_logits")(x)
    class_logits = make_dense(num_classes, "d_class_logits")(x)
    real_fake_logit = make_dense(1, "d_real_fake_logit")(x)
    return keras.layers.Concatenate(axis=-1, name="d_logits")([class_logits, real_fake_logit])


def _conv_transpose(index, padding="same"):
    """The class of G's ``index``-th transposed convolution (from 1).

    The first, on the few pixels and many channels after G's Dense, is a
    ``MatmulConv2DTranspose``: the same function and weights as Keras'
    ``Conv2DTranspose``, faster there on CPU (``sgan_keras/layers.py``); the
    later ones measured slower that way and stay Keras' own
    (``HalfPaddedConv2DTranspose`` for ``padding="half"``).
    """
    if index == 1:
        return sgan_layers.MatmulConv2DTranspose
    if padding == "half":
        return sgan_layers.HalfPaddedConv2DTranspose
    return keras.layers.Conv2DTranspose


def _conv2d(stride):
    """The class of a ``Conv2D`` of stride ``stride``.

    Stride 1: ``Conv2DWithConvInputGrad``, the same function and weights as
    Keras' ``Conv2D``, whose input gradient runs as a forward convolution,
    faster on CPU (``sgan_keras/layers.py``). Strided ones stay Keras' own.
    """
    return sgan_layers.Conv2DWithConvInputGrad if stride == 1 else keras.layers.Conv2D


def _lrelu(slope, name):
    return keras.layers.LeakyReLU(negative_slope=slope, name=name)


def _dense_factory(seeds):
    """Plain ``Dense`` output layers with seeded Glorot kernels."""
    def make(units, name):
        return keras.layers.Dense(units, kernel_initializer=seeds.glorot(), name=name)
    return make


def _wn_dense_factory(seeds, stddev, init_scale, data_init=True):
    """Weight-normalized output layers (``v ~ N(0, stddev)``)."""
    def make(units, name):
        return sgan_layers.WeightNormDense(units, kernel_initializer=seeds.normal(stddev),
                                           init_scale=init_scale, data_init=data_init, name=name)
    return make


# ---------------------------------------------------------------------------
# mnist_blog
# ---------------------------------------------------------------------------
def _mnist_blog_generator(z, seeds, output_activation):
    """MNIST blog G (jostosh/gan ``dcganmnist``): Dense 7*7*64 ReLU, two x2
    upsamplings, four 5x5 convs.

    The blog post does not name the upsampling mode: nearest neighbour (the
    Keras ``UpSampling2D`` default; the blog's code repeats rows and columns).
    All layers have biases, Glorot kernels. Each upsampling and the conv after
    it are one ``UpsampleConv2D``: the same function and weights, computed on
    the small image (about half the G's multiply-adds).
    """
    x = keras.layers.Dense(7 * 7 * 64, activation="relu", kernel_initializer=seeds.glorot(),
                           name="g_dense")(z)
    x = keras.layers.Reshape((7, 7, 64), name="g_reshape")(x)
    x = sgan_layers.UpsampleConv2D(128, 5, activation="relu", kernel_initializer=seeds.glorot(),
                                   name="g_conv1")(x)
    x = sgan_layers.UpsampleConv2D(64, 5, activation="relu", kernel_initializer=seeds.glorot(),
                                   name="g_conv2")(x)
    x = _conv2d(1)(64, 5, padding="same", activation="relu",
                   kernel_initializer=seeds.glorot(), name="g_conv3")(x)
    return _conv2d(1)(1, 5, padding="same", activation=output_activation,
                      kernel_initializer=seeds.glorot(), name="g_images")(x)


def _mnist_blog_discriminator(images, seeds):
    """MNIST blog D (``dcganmnist``): three 5x5 convs, LReLU(0.2), Dropout 0.3;
    features: Flatten."""
    x = images
    for index, (filters, stride) in enumerate([(32, 2), (64, 2), (64, 1)], start=1):
        x = _conv2d(stride)(filters, 5, strides=stride, padding="same",
                            kernel_initializer=seeds.glorot(), name=f"d_conv{index}")(x)
        x = _lrelu(0.2, f"d_lrelu{index}")(x)
        x = sgan_layers.Dropout(0.3, seed=seeds(), name=f"d_dropout{index}")(x)
    features = keras.layers.Flatten(name="d_features")(x)
    return features, features, _dense_factory(seeds)


# ---------------------------------------------------------------------------
# svhn_dcgan (Udacity notebook)
# ---------------------------------------------------------------------------
def _svhn_dcgan_generator(z, seeds, output_activation, width=32):
    """Udacity SVHN G (the notebook's ``generator``), ``m = 32``: Dense 4*4*4m,
    BN, LReLU(0.2), three 5x5 stride-2 convT.

    As the notebook's ``tf.layers`` defaults: biases everywhere, BatchNorm
    with scale and offset (momentum 0.99, epsilon 1e-3), Glorot kernels.
    """
    x = keras.layers.Dense(4 * 4 * 4 * width, kernel_initializer=seeds.glorot(),
                           name="g_dense")(z)
    x = keras.layers.Reshape((4, 4, 4 * width), name="g_reshape")(x)
    x = sgan_layers.BatchNormalization(name="g_bn0")(x)
    x = _lrelu(0.2, "g_lrelu0")(x)
    for index, filters in enumerate([2 * width, width], start=1):
        x = _conv_transpose(index)(filters, 5, strides=2, padding="same",
                                   kernel_initializer=seeds.glorot(),
                                   name=f"g_convt{index}")(x)
        x = sgan_layers.BatchNormalization(name=f"g_bn{index}")(x)
        x = _lrelu(0.2, f"g_lrelu{index}")(x)
    return keras.layers.Conv2DTranspose(3, 5, strides=2, padding="same",
                                        activation=output_activation,
                                        kernel_initializer=seeds.glorot(), name="g_images")(x)


def _svhn_dcgan_discriminator(images, seeds, width=64, rate=0.5):
    """Udacity SVHN D (the notebook's ``discriminator``), ``m = 64``, ``r = 0.5``: six 3x3
    convs, LReLU(0.2).

    The notebook's unused stride-2 conv after the fifth is left out (its output
    is never read; a deviation row of the ``svhn_dcgan`` preset). Its second
    conv has no batch norm: the notebook computes ``bn2`` but feeds ``x2`` on
    (``relu2 = tf.maximum(alpha * x2, x2)``).
    Features: global average pool of the last, BN-free ``valid`` conv (128).
    """
    def conv(x, index, filters, stride, padding="same", batch_norm=True, dropout=False):
        x = _conv2d(stride)(filters, 3, strides=stride, padding=padding,
                            kernel_initializer=seeds.glorot(), name=f"d_conv{index}")(x)
        if batch_norm:
            x = sgan_layers.BatchNormalization(name=f"d_bn{index}")(x)
        x = _lrelu(0.2, f"d_lrelu{index}")(x)
        if dropout:
            x = sgan_layers.Dropout(rate, seed=seeds(), name=f"d_dropout{index}")(x)
        return x

    x = sgan_layers.Dropout(rate / 2.5, seed=seeds(), name="d_input_dropout")(images)
    x = conv(x, 1, width, 2, batch_norm=False, dropout=True)
    x = conv(x, 2, width, 2, batch_norm=False)       # bn2 unused in the notebook
    x = conv(x, 3, width, 2, dropout=True)
    x = conv(x, 4, 2 * width, 1)
    x = conv(x, 5, 2 * width, 1)
    x = conv(x, 6, 2 * width, 1, padding="valid", batch_norm=False)
    features = keras.layers.GlobalAveragePooling2D(name="d_features")(x)
    return features, features, _dense_factory(seeds)


# ---------------------------------------------------------------------------
# mnist_gans_in_action
# ---------------------------------------------------------------------------
def _gans_in_action_generator(z, seeds, output_activation, variant="text"):
    """GANs in Action SGAN G (chapter 7): Dense 7*7*256, convT(128,3,2) BN LReLU(0.01),
    convT(1,3,2).

    The book's chapter-7 notebook also has a ``convT(64,3,1) BN LReLU``
    between the two (``variant="notebook"``); the book's text lists it
    without, and the preset follows the text, as the peers' transcription of
    the book's loop in ``experiments/benchmark_peers.py`` does (a deviation
    row of the preset). Keras defaults otherwise
    (biases, BN momentum 0.99). Its BN is a ``FusedBatchNormalization``
    (Keras' layer on TensorFlow's fused kernel, as tf.keras 2 ran the book's;
    in the step 0.98x-1.03x: README, Performance). D's BNs, on fewer pixels,
    measured no faster that way and stay Keras' own.
    """
    x = keras.layers.Dense(7 * 7 * 256, kernel_initializer=seeds.glorot(), name="g_dense")(z)
    x = keras.layers.Reshape((7, 7, 256), name="g_reshape")(x)
    x = _conv_transpose(1)(128, 3, strides=2, padding="same",
                           kernel_initializer=seeds.glorot(), name="g_convt1")(x)
    x = sgan_layers.FusedBatchNormalization(name="g_bn1")(x)
    x = _lrelu(0.01, "g_lrelu1")(x)
    if variant == "notebook":
        x = keras.layers.Conv2DTranspose(64, 3, strides=1, padding="same",
                                         kernel_initializer=seeds.glorot(), name="g_convt2")(x)
        x = sgan_layers.FusedBatchNormalization(name="g_bn2")(x)
        x = _lrelu(0.01, "g_lrelu2")(x)
    return keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same",
                                        activation=output_activation,
                                        kernel_initializer=seeds.glorot(), name="g_images")(x)


def _gans_in_action_discriminator(images, seeds):
    """GANs in Action SGAN D (chapter 7): three 3x3 stride-2 convs, LReLU(0.01), Dropout 0.5.

    28 -> 14 -> 7 -> 4 ("same"), so the flattened features have 4*4*128 = 2048
    units (the book's comment says 3x3; Keras "same" padding gives 4x4).
    """
    x = images
    for index, filters in enumerate([32, 64, 128], start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                                kernel_initializer=seeds.glorot(), name=f"d_conv{index}")(x)
        if index > 1:
            x = sgan_layers.BatchNormalization(name=f"d_bn{index}")(x)
        x = _lrelu(0.01, f"d_lrelu{index}")(x)
    x = sgan_layers.Dropout(0.5, seed=seeds(), name="d_dropout")(x)
    features = keras.layers.Flatten(name="d_features")(x)
    return features, features, _dense_factory(seeds)


# ---------------------------------------------------------------------------
# improved-GAN (Salimans et al. 2016)
# ---------------------------------------------------------------------------
def _improved_gan_batch_norm(name):
    """improved-gan's ``nn.batch_norm(layer, g=None)``: offset only, no scale.

    Its BatchNormLayer uses epsilon 1e-6 and moving averages with 0.9 (the
    wrapped layer's bias is dropped: the builders pass ``use_bias=False``).
    """
    return sgan_layers.BatchNormalization(scale=False, momentum=0.9, epsilon=1e-6, name=name)


def _mnist_improved_gan_generator(z, seeds, output_activation):
    """improved-gan MNIST G: Dense 500 softplus BN, Dense 500 softplus BN, WN Dense 784 sigmoid.

    The source wraps each ``DenseLayer(500, softplus)`` in ``nn.batch_norm(...,
    g=None)``, which removes the Dense bias, adds an offset-only BatchNorm and
    applies the softplus after it: Dense (no bias) -> BN (no scale) ->
    softplus. The paper's "Dense 500 softplus BN" is read that way. The output
    layer is ``nn.l2normalize`` (trainable scale, bias, Glorot ``v``, no
    data-dependent init: ``data_init=False``). Output reshaped to 28x28x1.
    ``output_activation="softplus"`` is Sleepychord/ImprovedGAN-pytorch's
    replacement of the sigmoid (see :func:`build_generator`).
    """
    x = z
    for index in (1, 2):
        x = keras.layers.Dense(500, use_bias=False, kernel_initializer=seeds.glorot(),
                               name=f"g_dense{index}")(x)
        x = _improved_gan_batch_norm(f"g_bn{index}")(x)
        x = keras.layers.Activation("softplus", name=f"g_softplus{index}")(x)
    x = sgan_layers.WeightNormDense(28 * 28, activation=output_activation,
                                    kernel_initializer=seeds.glorot(),
                                    data_init=False, name="g_dense3")(x)
    return keras.layers.Reshape((28, 28, 1), name="g_images")(x)


def _mnist_improved_gan_discriminator(images, seeds):
    """improved-gan MNIST D: GaussianNoise 0.3, WN Dense 1000-500-250-250-250 ReLU + noise 0.5.

    ``v ~ N(0, 0.1)`` as the source's ``nn.DenseLayer``; all layers take part in
    the data-dependent init (target std 1). Features: the last 250-unit
    layer's activations (``layers[-3]`` in the source, before its noise); the
    class head reads the noised activations, as the source.

    As the source, ``g`` is trained only in the output layer (``train_scale``);
    the hidden layers' ``g`` is set by the data-dependent init and stays fixed.
    """
    x = keras.layers.Flatten(name="d_flatten")(images)
    x = sgan_layers.GaussianNoise(0.3, seed=seeds(), name="d_input_noise")(x)
    features = None
    for index, units in enumerate([1000, 500, 250, 250, 250], start=1):
        x = sgan_layers.WeightNormDense(units, activation="relu",
                                        kernel_initializer=seeds.normal(0.1),
                                        train_scale=False, name=f"d_dense{index}")(x)
        features = x
        x = sgan_layers.GaussianNoise(0.5, seed=seeds(), name=f"d_noise{index}")(x)
    return features, x, _wn_dense_factory(seeds, stddev=0.1, init_scale=1.0)


def _improved_gan_conv_generator(z, seeds, output_activation, lecouat=False,
                                 conv_padding="same"):
    """improved-gan SVHN/CIFAR-10 G: Dense 4*4*512 BN ReLU, convT 256, 128 BN ReLU, WN convT 3.

    As the source: ``v``/kernels ~ N(0, 0.05); Dense and BN'd convT without bias
    and offset-only BatchNorm (``nn.batch_norm(..., g=None)``); the output WN
    convT is data-initialized to pre-activation std 0.1 (``init_stdv=0.1``).
    ``conv_padding="half"`` pads the transposed convolutions as the source's
    ``Deconv2DLayer``; ``"same"`` as Keras (and Lecouat et al.'s TensorFlow).
    ``lecouat=True`` (Lecouat et al.'s ``svhn_gan.py`` generator): biases, TF's
    default BatchNorm (scale and offset, momentum 0.99, epsilon 1e-3) and an
    output weight norm without data-dependent init (``g = 1``).
    """
    def batch_norm(name):
        if lecouat:
            return sgan_layers.BatchNormalization(name=name)
        return _improved_gan_batch_norm(name)

    x = keras.layers.Dense(4 * 4 * 512, use_bias=lecouat, kernel_initializer=seeds.normal(0.05),
                           name="g_dense")(z)
    x = batch_norm("g_bn0")(x)
    x = keras.layers.Activation("relu", name="g_relu0")(x)
    x = keras.layers.Reshape((4, 4, 512), name="g_reshape")(x)
    for index, filters in enumerate([256, 128], start=1):
        x = _conv_transpose(index, conv_padding)(
            filters, 5, strides=2, padding=conv_padding, use_bias=lecouat,
            kernel_initializer=seeds.normal(0.05), name=f"g_convt{index}")(x)
        x = batch_norm(f"g_bn{index}")(x)
        x = keras.layers.Activation("relu", name=f"g_relu{index}")(x)
    return sgan_layers.WeightNormConv2DTranspose(3, 5, strides=2, padding=conv_padding,
                                                 activation=output_activation,
                                                 kernel_initializer=seeds.normal(0.05),
                                                 init_scale=0.1, data_init=not lecouat,
                                                 name="g_images")(x)


def _improved_gan_conv_discriminator(images, seeds, narrow, wide, lecouat=False,
                                     conv_padding="same"):
    """improved-gan SVHN/CIFAR-10 D (widths 64/128 or 96/192), all weight-normalized, LReLU(0.2).

    ``v ~ N(0, 0.05)``; hidden layers data-initialized to std 1, the output
    Dense to 0.1 (``init_stdv=0.1``). ``conv_padding="half"`` is the
    source's ``pad=1``; ``"same"`` (Keras', and Lecouat et al.'s TensorFlow)
    pads its stride-2 convolutions one pixel off it. The 1x1 convs are the
    source's NIN layers. Features: the global average pool before the output
    Dense.

    As the source, the hidden layers' ``g`` is fixed after the data-dependent
    init (``train_g=False``); the output layer's is trained.

    ``lecouat=True`` (Lecouat et al.'s ``svhn_gan.py``): the features are a
    global MAX pool, and weight norm has no data-dependent init (their
    ``nn.py`` comments it out): ``g = 1``, trained in every layer, ``b = 0``.
    """
    def conv(x, index, filters, kernel_size=3, stride=1, padding=conv_padding):
        x = sgan_layers.WeightNormConv2D(filters, kernel_size, strides=stride, padding=padding,
                                         kernel_initializer=seeds.normal(0.05), train_scale=lecouat,
                                         data_init=not lecouat, name=f"d_conv{index}")(x)
        return _lrelu(0.2, f"d_lrelu{index}")(x)

    x = sgan_layers.Dropout(0.2, seed=seeds(), name="d_input_dropout")(images)
    x = conv(x, 1, narrow)
    x = conv(x, 2, narrow)
    x = conv(x, 3, narrow, stride=2)
    x = sgan_layers.Dropout(0.5, seed=seeds(), name="d_dropout1")(x)
    x = conv(x, 4, wide)
    x = conv(x, 5, wide)
    x = conv(x, 6, wide, stride=2)
    x = sgan_layers.Dropout(0.5, seed=seeds(), name="d_dropout2")(x)
    x = conv(x, 7, wide, padding="valid")
    x = conv(x, 8, wide, kernel_size=1)
    x = conv(x, 9, wide, kernel_size=1)
    pool = keras.layers.GlobalMaxPooling2D if lecouat else keras.layers.GlobalAveragePooling2D
    features = pool(name="d_features")(x)
    return features, features, _wn_dense_factory(seeds, stddev=0.05, init_scale=0.1,
                                                 data_init=not lecouat)


_GENERATORS = {
    "mnist_blog": _mnist_blog_generator,
    "svhn_dcgan": _svhn_dcgan_generator,
    "mnist_gans_in_action": _gans_in_action_generator,
    "mnist_improved_gan": _mnist_improved_gan_generator,
    "svhn_improved_gan": _improved_gan_conv_generator,
    "cifar10_improved_gan": _improved_gan_conv_generator,
    "svhn_lecouat": functools.partial(_improved_gan_conv_generator, lecouat=True),
    "cifar10_lecouat": functools.partial(_improved_gan_conv_generator, lecouat=True),
}

_DISCRIMINATOR_BODIES = {
    "mnist_blog": _mnist_blog_discriminator,
    "svhn_dcgan": _svhn_dcgan_discriminator,
    "mnist_gans_in_action": _gans_in_action_discriminator,
    "mnist_improved_gan": _mnist_improved_gan_discriminator,
    "svhn_improved_gan": functools.partial(_improved_gan_conv_discriminator,
                                           narrow=64, wide=128),
    "cifar10_improved_gan": functools.partial(_improved_gan_conv_discriminator,
                                              narrow=96, wide=192),
    "svhn_lecouat": functools.partial(_improved_gan_conv_discriminator,
                                      narrow=64, wide=128, lecouat=True),
    "cifar10_lecouat": functools.partial(_improved_gan_conv_discriminator,
                                         narrow=96, wide=192, lecouat=True),
}
