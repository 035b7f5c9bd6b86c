"""Every preset's G and D are built layer for layer as its source lists them.

Trainable parameter counts are worked out by hand from the sources' layer
lists (``networks.describe``, and where a source leaves a detail open, the
choice the networks docstrings name) and
asserted as literal integers. Conventions: conv(f,k) on c channels has
k*k*c*f + f parameters; weight-normalized layers count v and bias, and g
only where the source trains it (output layers; hidden layers' g is fixed);
BatchNorm counts gamma and beta (2 per channel/unit), the improved-gan
offset-only BatchNorm (``nn.batch_norm(g=None)``) beta only (1).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sgan_keras import choices
from sgan_keras import layers as wn
from sgan_keras import networks
from sgan_keras import presets

K = 10

GENERATOR_PARAMS = {
    # Dense 100 -> 7*7*64=3136 (ReLU):        100*3136 + 3136          = 316,736
    # conv(128,5) on 64 channels (14x14):      5*5*64*128 + 128         = 204,928
    # conv(64,5) on 128 channels (28x28):      5*5*128*64 + 64          = 204,864
    # conv(64,5) on 64:                        5*5*64*64 + 64           = 102,464
    # conv(1,5) on 64 (tanh):                  5*5*64*1 + 1             =   1,601
    # total 316,736 + 204,928 + 204,864 + 102,464 + 1,601               = 830,593
    "mnist_blog": 830_593,
    # m = 32. Dense 100 -> 4*4*128=2048:       100*2048 + 2048          = 206,848
    # BN(128) after the reshape:               2*128                    =     256
    # convT(64,5,2) on 128:                    5*5*128*64 + 64          = 204,864
    # BN(64):                                                           =     128
    # convT(32,5,2) on 64:                     5*5*64*32 + 32           =  51,232
    # BN(32):                                                           =      64
    # convT(3,5,2) on 32 (tanh):               5*5*32*3 + 3             =   2,403
    # total                                                             = 465,795
    "svhn_dcgan": 465_795,
    # Dense 100 -> 7*7*256=12544:              100*12544 + 12544        = 1,266,944
    # convT(128,3,2) on 256:                   3*3*256*128 + 128        =   295,040
    # BN(128):                                                          =       256
    # convT(1,3,2) on 128 (tanh):              3*3*128*1 + 1            =     1,153
    # total                                                             = 1,563,393
    "mnist_gans_in_action": 1_563_393,
    # Dense 100 -> 500, no bias:               100*500                  =  50,000
    # offset-only BN(500):                                              =     500
    # Dense 500 -> 500, no bias:               500*500                  = 250,000
    # offset-only BN(500):                                              =     500
    # WN Dense 500 -> 784 (sigmoid): v 500*784 + g 784 + b 784          = 393,568
    # total                                                             = 694,568
    "mnist_improved_gan": 694_568,
    # Dense 100 -> 4*4*512=8192, no bias:      100*8192                 =   819,200
    # offset-only BN on the 8192 dense units (before the reshape):      =     8,192
    # convT(256,5,2) on 512, no bias:          5*5*512*256              = 3,276,800
    # offset-only BN(256):                                              =       256
    # convT(128,5,2) on 256, no bias:          5*5*256*128              =   819,200
    # offset-only BN(128):                                              =       128
    # WN convT(3,5,2) on 128: v 5*5*128*3 + g 3 + b 3                   =     9,606
    # total                                                             = 4,933,382
    "svhn_improved_gan": 4_933_382,
    "cifar10_improved_gan": 4_933_382,  # the same generator
    # Lecouat et al.: the same layers with biases and scale-and-offset BN.
    # Dense 100 -> 8192 + bias:                100*8192 + 8192          =   827,392
    # BN(8192), scale and offset:                                       =    16,384
    # convT(256,5,2) on 512 + bias:            5*5*512*256 + 256        = 3,277,056
    # BN(256):                                                          =       512
    # convT(128,5,2) on 256 + bias:            5*5*256*128 + 128        =   819,328
    # BN(128):                                                          =       256
    # WN convT(3,5,2) on 128: v + g 3 + b 3                             =     9,606
    # total                                                             = 4,950,534
    "svhn_lecouat": 4_950_534,
    "cifar10_lecouat": 4_950_534,
}

# D without its output layer (the "body"), then the output layer for K and K+1 units.
DISCRIMINATOR_BODY_PARAMS = {
    # conv(32,5,2) on 1:      5*5*1*32 + 32    =     832
    # conv(64,5,2) on 32:     5*5*32*64 + 64   =  51,264
    # conv(64,5,1) on 64:     5*5*64*64 + 64   = 102,464
    # body                                     = 154,560
    "mnist_blog": 154_560,
    # conv(64,3,2) on 3:      3*3*3*64 + 64    =   1,792
    # conv(64,3,2) on 64:     3*3*64*64 + 64   =  36,928  (no BN: bn2 unused in the notebook)
    # conv(64,3,2) on 64:                      =  36,928  + BN(64) 128
    # conv(128,3,1) on 64:    3*3*64*128 + 128 =  73,856  + BN(128) 256
    # conv(128,3,1) on 128:   3*3*128*128+128  = 147,584  + BN(128) 256
    # conv(128,3,1,valid):                     = 147,584  (no BN)
    # body 1,792 + 36,928*2 + 128 + 73,856 + 147,584*2 + 256*2 = 445,312
    "svhn_dcgan": 445_312,
    # conv(32,3,2) on 1:      3*3*1*32 + 32    =     320
    # conv(64,3,2) on 32:     3*3*32*64 + 64   =  18,496  + BN(64) 128
    # conv(128,3,2) on 64:    3*3*64*128 + 128 =  73,856  + BN(128) 256
    # body                                     =  93,056
    "mnist_gans_in_action": 93_056,
    # WN Dense 784 -> 1000:   784*1000 + 1000        = 785,000   (g fixed)
    # WN Dense 1000 -> 500:   1000*500 + 500         = 500,500
    # WN Dense 500 -> 250:    500*250 + 250          = 125,250
    # WN Dense 250 -> 250:    250*250 + 250          =  62,750   (twice)
    # body 785,000 + 500,500 + 125,250 + 2*62,750    = 1,536,250
    "mnist_improved_gan": 1_536_250,
    # WN conv(64,3) on 3:     3*3*3*64 + 64          =   1,792   (g fixed)
    # WN conv(64,3) on 64:    3*3*64*64 + 64         =  36,928   (twice)
    # WN conv(128,3) on 64:   3*3*64*128 + 128       =  73,856
    # WN conv(128,3) on 128:  3*3*128*128 + 128      = 147,584   (twice, + the valid one)
    # WN 1x1 conv 128 on 128: 128*128 + 128          =  16,512   (twice)
    # body 1,792 + 2*36,928 + 73,856 + 3*147,584 + 2*16,512 = 625,280
    "svhn_improved_gan": 625_280,
    # WN conv(96,3) on 3:     3*3*3*96 + 96          =   2,688   (g fixed)
    # WN conv(96,3) on 96:    3*3*96*96 + 96         =  83,040   (twice)
    # WN conv(192,3) on 96:   3*3*96*192 + 192       = 166,080
    # WN conv(192,3) on 192:  3*3*192*192 + 192      = 331,968   (twice, + the valid one)
    # WN 1x1 conv 192 on 192: 192*192 + 192          =  37,056   (twice)
    # body 2,688 + 2*83,040 + 166,080 + 3*331,968 + 2*37,056 = 1,404,864
    "cifar10_improved_gan": 1_404_864,
    # Lecouat et al.: the improved-gan bodies with g trained in every layer:
    # + 3*64 + 6*128 = 960 (SVHN), + 3*96 + 6*192 = 1,440 (CIFAR-10).
    "svhn_lecouat": 626_240,
    "cifar10_lecouat": 1_406_304,
}

OUTPUT_LAYER_PARAMS = {
    # (features, K outputs, K+1 outputs). Dense F -> n: F*n + n; WN Dense: F*n + 2n.
    "mnist_blog": (3136, 31_370, 34_507),            # 3136*10+10, 3136*11+11
    "svhn_dcgan": (128, 1_290, 1_419),               # 128*10+10, 128*11+11
    "mnist_gans_in_action": (2048, 20_490, 22_539),  # 2048*10+10, 2048*11+11
    "mnist_improved_gan": (250, 2_520, 2_772),       # 250*10+20, 250*11+22
    "svhn_improved_gan": (128, 1_300, 1_430),        # 128*10+20, 128*11+22
    "cifar10_improved_gan": (192, 1_940, 2_134),     # 192*10+20, 192*11+22
    "svhn_lecouat": (128, 1_300, 1_430),
    "cifar10_lecouat": (192, 1_940, 2_134),
}

DISCRIMINATOR_PARAMS = {
    # body + K outputs ("zero"), body + K+1 outputs ("learned")
    "mnist_blog": {"zero": 185_930, "learned": 189_067},
    "svhn_dcgan": {"zero": 446_602, "learned": 446_731},
    "mnist_gans_in_action": {"zero": 113_546, "learned": 115_595},
    "mnist_improved_gan": {"zero": 1_538_770, "learned": 1_539_022},
    "svhn_improved_gan": {"zero": 626_580, "learned": 626_710},
    "cifar10_improved_gan": {"zero": 1_406_804, "learned": 1_406_998},
    "svhn_lecouat": {"zero": 627_540, "learned": 627_670},
    "cifar10_lecouat": {"zero": 1_408_244, "learned": 1_408_438},
}

IMAGE_SHAPES = {
    "mnist_blog": (28, 28, 1), "svhn_dcgan": (32, 32, 3), "mnist_gans_in_action": (28, 28, 1),
    "mnist_improved_gan": (28, 28, 1), "svhn_improved_gan": (32, 32, 3),
    "cifar10_improved_gan": (32, 32, 3), "svhn_lecouat": (32, 32, 3),
    "cifar10_lecouat": (32, 32, 3),
}


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_hand_counts_add_up():
    """The per-part comments above agree with the per-network totals."""
    for architecture, (_, k_out, k1_out) in OUTPUT_LAYER_PARAMS.items():
        body = DISCRIMINATOR_BODY_PARAMS[architecture]
        assert DISCRIMINATOR_PARAMS[architecture] == {"zero": body + k_out,
                                                      "learned": body + k1_out}


def test_every_architecture_is_covered():
    assert set(networks.ARCHITECTURES) == set(GENERATOR_PARAMS) == set(DISCRIMINATOR_PARAMS)
    assert networks.FAKE_CLASSES == ("zero", "learned", "separate")


@pytest.mark.parametrize("architecture", sorted(GENERATOR_PARAMS))
def test_generator_output_shape_range_and_trainable_parameters(architecture):
    shape = IMAGE_SHAPES[architecture]
    generator = networks.build_generator(architecture, image_shape=shape, seed=0)
    assert generator.input_shape == (None, 100)
    assert generator.output_shape == (None, *shape)
    assert trainable_count(generator) == GENERATOR_PARAMS[architecture]
    # tanh output, pixels in [-1, 1], except mnist_improved_gan's sigmoid, [0, 1]:
    # the range its preset scales the real images to.
    low, high = (0.0, 1.0) if architecture == "mnist_improved_gan" else (-1.0, 1.0)
    assert presets.get_preset(architecture).config.model.pixel_range == (low, high)
    z = np.random.default_rng(0).normal(size=(4, 100)).astype("float32")
    images = generator(z, training=False).numpy()
    assert images.shape == (4, *shape) and images.min() >= low and images.max() <= high
    # An untrained G's pixels sit well inside the range, where another output
    # activation (or none) would pass as well. Every layer before the output
    # activation is positively homogeneous but for its biases (Dense, conv and
    # weight-normalized layers are linear in their input; ReLU, LReLU, and
    # softplus far from 0; BatchNorm in inference, with its moving statistics),
    # so z scaled by 1e4 makes the output's pre-activations huge and of both
    # signs: the pixels must then reach both ends of the range, never beyond.
    saturated = generator(z * 1e4, training=False).numpy()
    assert saturated.min() >= low and saturated.max() <= high
    assert saturated.min() <= low + 1e-3 and saturated.max() >= high - 1e-3


def test_the_gans_in_action_notebooks_generator_adds_its_convt_64_between_the_texts_two():
    """--gans_in_action_generator=notebook: the chapter-7 notebook's G, with a
    convT(64,3,1) BN LReLU after the first convT(128,3,2) BN LReLU; the text's
    (the preset's) keeps its seeds, so its weights are as before."""
    text = networks.build_generator("mnist_gans_in_action", image_shape=(28, 28, 1), seed=0)
    notebook = networks.build_generator("mnist_gans_in_action", image_shape=(28, 28, 1), seed=0,
                                        gans_in_action_generator="notebook")
    assert notebook.output_shape == (None, 28, 28, 1)
    names = [layer.name for layer in notebook.layers]
    assert names[names.index("g_lrelu1") + 1:names.index("g_images")] == [
        "g_convt2", "g_bn2", "g_lrelu2"]
    assert notebook.get_layer("g_convt2").kernel.shape == (3, 3, 64, 128)
    assert notebook.get_layer("g_images").kernel.shape == (3, 3, 1, 64)
    assert trainable_count(notebook) - trainable_count(text) == (
        3 * 3 * 128 * 64 + 64 + 2 * 64 - 3 * 3 * 64 * 1)   # convT2, its BN; g_images' narrower
    assert [layer.name for layer in text.layers] == [name for name in names
                                                     if not name.endswith("2")]
    np.testing.assert_array_equal(text.get_layer("g_dense").kernel.numpy(),
                                  notebook.get_layer("g_dense").kernel.numpy())
    with pytest.raises(ValueError, match="a choice of mnist_gans_in_action only"):
        networks.build_generator("mnist_blog", image_shape=(28, 28, 1),
                                 gans_in_action_generator="notebook")


def test_improved_gan_mnist_generator_output_activation_is_a_choice():
    """sigmoid by default (the source); softplus (Sleepychord/ImprovedGAN-pytorch) on request."""
    z = np.random.default_rng(0).uniform(size=(64, 100)).astype("float32")
    outputs = {}
    for activation in (None, "sigmoid", "softplus"):
        generator = networks.build_generator("mnist_improved_gan", image_shape=(28, 28, 1),
                                             seed=0, output_activation=activation)
        assert trainable_count(generator) == GENERATOR_PARAMS["mnist_improved_gan"]
        outputs[activation] = generator(z, training=True).numpy()
    np.testing.assert_array_equal(outputs[None], outputs["sigmoid"])
    # Same weights, so softplus(a) = -log(1 - sigmoid(a)) elementwise.
    np.testing.assert_allclose(outputs["softplus"], -np.log1p(-outputs["sigmoid"]),
                               rtol=1e-4, atol=1e-5)
    assert outputs["softplus"].min() >= 0.0


@pytest.mark.parametrize("architecture", sorted(DISCRIMINATOR_PARAMS))
@pytest.mark.parametrize("fake_class", ["zero", "learned"])
def test_discriminator_outputs_and_trainable_parameters(architecture, fake_class):
    shape = IMAGE_SHAPES[architecture]
    discriminator = networks.build_discriminator(architecture, image_shape=shape,
                                                 num_classes=K, fake_class=fake_class, seed=0)
    width = K if fake_class == "zero" else K + 1
    num_features = OUTPUT_LAYER_PARAMS[architecture][0]
    assert discriminator.input_shape == (None, *shape)
    assert discriminator.output_shape == [(None, width), (None, num_features)]
    assert trainable_count(discriminator) == DISCRIMINATOR_PARAMS[architecture][fake_class]
    logits, features = discriminator(np.zeros((2, *shape), "float32"), training=False)
    assert logits.shape == (2, width) and features.shape == (2, num_features)


@pytest.mark.parametrize("architecture", ["mnist_blog", "svhn_improved_gan"])
def test_separate_fake_class_adds_an_independent_real_fake_head(architecture):
    shape = IMAGE_SHAPES[architecture]
    discriminator = networks.build_discriminator(architecture, image_shape=shape,
                                                 fake_class="separate", seed=0)
    # K class logits + one real/fake unit, both reading the same F features:
    # (F*K + K) + (F*1 + 1) for Dense; (F*K + 2K) + (F + 2) for WN Dense.
    expected = {"mnist_blog": 154_560 + 31_370 + 3_137,         # 3136*1+1 = 3,137
                "svhn_improved_gan": 625_280 + 1_300 + 130}     # 128*1+2 = 130
    assert trainable_count(discriminator) == expected[architecture]
    assert discriminator.output_shape[0] == (None, K + 1)
    head = discriminator.get_layer("d_real_fake_logit")
    images = np.random.default_rng(0).uniform(-1, 1, (3, *shape)).astype("float32")
    logits, _ = discriminator(images, training=False)
    head_input = keras.Model(discriminator.input, head.input)(images, training=False)
    # The last column is the head's own output, not a function of the class logits.
    np.testing.assert_allclose(logits[:, K], head(head_input)[:, 0], rtol=1e-5, atol=1e-6)
    class_layer = discriminator.get_layer("d_class_logits")
    assert head.input is class_layer.input  # "on the same features"


@pytest.mark.parametrize("architecture", sorted(GENERATOR_PARAMS))
def test_only_the_first_transposed_convolution_is_a_matmul_one(architecture):
    """G's first transposed convolution (few pixels, many channels) is a
    MatmulConv2DTranspose; the later ones, measured slower that way, are not."""
    generator = networks.build_generator(architecture, image_shape=IMAGE_SHAPES[architecture],
                                         seed=0)
    transposed = [layer for layer in generator.layers
                  if isinstance(layer, (keras.layers.Conv2DTranspose,
                                        wn.WeightNormConv2DTranspose))]
    matmul = [layer.name for layer in transposed if isinstance(layer, wn.MatmulConv2DTranspose)]
    assert matmul == (["g_convt1"] if transposed else [])
    if transposed:
        assert transposed[0].name == "g_convt1"


@pytest.mark.parametrize("architecture", sorted(GENERATOR_PARAMS))
def test_only_the_gans_in_action_generator_runs_its_batch_norm_on_the_fused_kernel(architecture):
    """GANs in Action G's BN is a FusedBatchNormalization (measured faster on
    its activations, accuracy checked); D's BNs and the other presets' are
    Keras' own."""
    shape = IMAGE_SHAPES[architecture]
    built = [networks.build_generator(architecture, image_shape=shape, seed=0),
             networks.build_discriminator(architecture, image_shape=shape, seed=0)]
    fused = [layer.name for network in built for layer in wn.all_layers(network)
             if isinstance(layer, wn.FusedBatchNormalization)]
    assert fused == (["g_bn1"] if architecture == "mnist_gans_in_action" else [])


@pytest.mark.parametrize("rule", choices.BATCH_NORM_VARIANCES)
def test_every_batch_norm_of_both_networks_follows_the_batch_norm_variance(rule):
    """batch_norm_variance reaches each batch norm of the model's G and D (GANs
    in Action has both kinds, the fused one in G), and a saved network keeps it."""
    from sgan_keras.model import SGAN
    shape = IMAGE_SHAPES["mnist_gans_in_action"]
    model = SGAN.for_config(presets.resolve({"preset": "mnist_gans_in_action",
                                             "batch_norm_variance": rule}))
    built = [model.generator, model.discriminator]
    norms = {layer.name: layer.unbiased_moving_variance for network in built
             for layer in wn.all_layers(network)
             if isinstance(layer, keras.layers.BatchNormalization)}
    assert norms == dict.fromkeys(["g_bn1", "d_bn2", "d_bn3"], rule == "unbiased")
    copy = keras.Model.from_config(built[1].get_config())
    assert copy.get_layer("d_bn2").unbiased_moving_variance == (rule == "unbiased")
    with pytest.raises(ValueError, match="batch_norm_variance must be one of"):
        networks.build_discriminator("mnist_gans_in_action", image_shape=shape,
                                     batch_norm_variance="keras2")


def input_gradient_ops(layer):
    """The op types of ``layer``'s gradient with respect to a small input."""
    channels = int(layer.v.shape[2])

    @tf.function
    def gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images)
        return tape.gradient(outputs, images)

    graph = gradient.get_concrete_function(tf.TensorSpec([1, 8, 8, channels])).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("architecture", sorted(GENERATOR_PARAMS))
def test_stride_one_convolutions_take_their_input_gradient_as_a_convolution(architecture):
    """Every stride-1 convolution of G and D computes its input gradient as a
    forward convolution (Conv2DWithConvInputGrad, UpsampleConv2D, stride-1
    WeightNormConv2D); the strided ones are Keras' own."""
    shape = IMAGE_SHAPES[architecture]
    models = [networks.build_generator(architecture, image_shape=shape, seed=0),
              networks.build_discriminator(architecture, image_shape=shape, seed=0)]
    convolutions = [layer for model in models for layer in wn.all_layers(model)
                    if isinstance(layer, (keras.layers.Conv2D, wn.WeightNormConv2D))]
    for layer in convolutions:
        stride_one = tuple(layer.strides) == (1, 1)
        if isinstance(layer, keras.layers.Conv2D):
            assert isinstance(layer, wn.Conv2DWithConvInputGrad) == stride_one, layer.name
        else:   # its kernel is made in call(): read the gradient's ops
            assert ("Conv2DBackpropInput" in input_gradient_ops(layer)) != stride_one, layer.name
    has_stride_one = any(tuple(layer.strides) == (1, 1) for layer in convolutions)
    assert has_stride_one == (architecture not in ("mnist_gans_in_action", "mnist_improved_gan"))


def test_layer_details_follow_spec():
    blog = networks.build_discriminator("mnist_blog", image_shape=(28, 28, 1), seed=0)
    assert blog.get_layer("d_conv1").kernel.shape == (5, 5, 1, 32)
    assert blog.get_layer("d_conv1").strides == (2, 2)
    assert blog.get_layer("d_dropout1").rate == 0.3
    assert blog.get_layer("d_lrelu1").negative_slope == pytest.approx(0.2)

    dcgan = networks.build_discriminator("svhn_dcgan", image_shape=(32, 32, 3), seed=0)
    assert dcgan.get_layer("d_input_dropout").rate == pytest.approx(0.2)  # r / 2.5
    assert dcgan.get_layer("d_conv6").padding == "valid"
    assert dcgan.get_layer("d_conv6").output.shape == (None, 2, 2, 128)

    mnist = networks.build_discriminator("mnist_improved_gan", image_shape=(28, 28, 1), seed=0)
    assert mnist.get_layer("d_input_noise").stddev == pytest.approx(0.3)
    assert mnist.get_layer("d_noise5").stddev == pytest.approx(0.5)
    # Features are the last 250-unit layer's activations, before its noise.
    assert mnist.outputs[1] is mnist.get_layer("d_dense5").output

    cifar = networks.build_discriminator("cifar10_improved_gan", image_shape=(32, 32, 3), seed=0)
    widths = [cifar.get_layer(f"d_conv{i}").filters for i in range(1, 10)]
    assert widths == [96, 96, 96, 192, 192, 192, 192, 192, 192]
    assert cifar.get_layer("d_conv8").kernel_size == (1, 1)
    assert isinstance(cifar.get_layer("d_logits"), wn.WeightNormDense)
    assert cifar.get_layer("d_logits").init_scale == pytest.approx(0.1)


@pytest.mark.parametrize("architecture, g_layers, d_layers", [
    ("mnist_improved_gan", 0, 6),   # G's output layer is nn.l2normalize: no data init
    ("svhn_improved_gan", 1, 10),   # 9 convs + the output Dense
    ("svhn_lecouat", 0, 0),         # Lecouat et al.: weight norm without data init
])
def test_weight_norm_networks_data_initialize(architecture, g_layers, d_layers):
    shape = IMAGE_SHAPES[architecture]
    generator = networks.build_generator(architecture, image_shape=shape, seed=0)
    discriminator = networks.build_discriminator(architecture, image_shape=shape, seed=0)
    z = np.random.default_rng(0).uniform(size=(16, 100)).astype("float32")
    assert wn.initialize_weight_norm(generator, z) == g_layers
    assert wn.initialize_weight_norm(discriminator, generator(z, training=False)) == d_layers


@pytest.mark.parametrize("architecture", networks.ARCHITECTURES)
def test_the_procedure_table_says_which_presets_have_a_data_dependent_init(architecture):
    """docs/presets.md said "first batch" for Lecouat's presets, whose weight
    norm has no data-dependent init (README), and for those without weight norm."""
    shape = IMAGE_SHAPES[architecture]
    discriminator = networks.build_discriminator(architecture, image_shape=shape, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, size=(4, *shape)).astype("float32")
    initialized = wn.initialize_weight_norm(discriminator, images) > 0
    assert (architecture in choices.WEIGHT_NORM_DATA_INIT) == initialized
    lines = presets.procedure_markdown().splitlines()
    row = next(line for line in lines if line.startswith(f"| `{architecture}` |"))
    column = lines[0].split(" | ").index("weight-norm init")
    assert (row.split(" | ")[column] != "none") == initialized


# The sources whose own samples come from G in training mode (each sample batch's
# statistics); GANs in Action's generator.predict is in inference mode, as
# generate(), and improved-gan's MNIST script draws no samples.
_SOURCE_SAMPLES_IN_TRAINING_MODE = ("mnist_blog", "svhn_dcgan", "svhn_improved_gan",
                                    "cifar10_improved_gan", "svhn_lecouat", "cifar10_lecouat")


@pytest.mark.parametrize("architecture", networks.ARCHITECTURES)
def test_each_preset_samples_in_its_sources_mode_where_g_has_batch_norm(architecture):
    """generate() and the sample grids ran G in inference mode only: where G has
    batch norm and its source samples in training mode the two differ (a
    deviation row each), so those presets now sample in training mode
    (--sample_mode); the option is taken exactly where G has batch norm."""
    shape = IMAGE_SHAPES[architecture]
    generator = networks.build_generator(architecture, image_shape=shape, seed=0)
    batch_norm = any(isinstance(layer, keras.layers.BatchNormalization)
                     for layer in generator.layers)
    assert batch_norm == (architecture in choices.GENERATOR_BATCH_NORM_ARCHITECTURES)
    preset = presets.get_preset(architecture)
    expected = ("training" if batch_norm and architecture in _SOURCE_SAMPLES_IN_TRAINING_MODE
                else "inference")
    assert preset.config.model.sample_mode == expected
    assert "generated samples" not in [row.aspect for row in preset.deviations]


@pytest.mark.parametrize("architecture", networks.ARCHITECTURES)
def test_same_seed_builds_identical_weights(architecture):
    shape = IMAGE_SHAPES[architecture]

    def weights(seed):
        g = networks.build_generator(architecture, image_shape=shape, seed=seed)
        d = networks.build_discriminator(architecture, image_shape=shape, seed=seed)
        return [w.numpy() for w in g.weights + d.weights]

    first, second, other = weights(3), weights(3), weights(4)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(a.size > 1 and not np.array_equal(a, c) for a, c in zip(first, other))


def test_numpy_integers_are_taken_and_bools_refused():
    # labels.max() + 1 is a NumPy integer: it was refused as "not an integer".
    labels = np.array([0, 3, 1])
    generator = networks.build_generator("mnist_improved_gan", image_shape=(28, 28, 1),
                                         latent_dim=np.int64(7), seed=np.int32(1))
    discriminator = networks.build_discriminator(
        "mnist_improved_gan", image_shape=(28, 28, 1), num_classes=labels.max() + 1,
        seed=np.int64(1))
    assert generator.input_shape == (None, 7) and discriminator.output_shape[0] == (None, 4)
    for argument in ("latent_dim", "seed"):
        with pytest.raises(ValueError, match=argument):
            networks.build_generator("mnist_improved_gan", image_shape=(28, 28, 1),
                                     **{argument: np.True_})


def test_layers_of_equal_shape_get_different_initial_weights():
    discriminator = networks.build_discriminator("svhn_improved_gan", image_shape=(32, 32, 3),
                                                 seed=0)
    v5 = discriminator.get_layer("d_conv5").v.numpy()
    v6 = discriminator.get_layer("d_conv6").v.numpy()
    assert v5.shape == v6.shape and not np.array_equal(v5, v6)


# The CIFAR-10 networks are the SVHN ones at other widths (the same builders).
@pytest.mark.parametrize("architecture", ["svhn_improved_gan", "svhn_lecouat"])
def test_half_padding_pads_every_convolution_as_improved_gans_lasagne_layers(architecture):
    """conv_padding="half": D's 3x3 convolutions (Lasagne's pad=1) and G's
    transposed ones (Deconv2DLayer) pad as Theano's border_mode='half'; the
    same weights, shapes and data-dependent init, a different function."""
    shape = IMAGE_SHAPES[architecture]
    built = {padding: (networks.build_generator(architecture, image_shape=shape, seed=0,
                                                conv_padding=padding),
                       networks.build_discriminator(architecture, image_shape=shape, seed=0,
                                                    conv_padding=padding))
             for padding in ("same", "half")}
    generator, discriminator = built["half"]
    padded = {layer.name: layer.padding for layer in generator.layers + discriminator.layers
              if hasattr(layer, "padding") and layer.padding != "valid"}
    assert set(padded.values()) == {"half"}
    assert {"g_convt1", "g_convt2", "g_images", "d_conv3", "d_conv6"} <= set(padded)
    assert isinstance(generator.get_layer("g_convt1"), wn.MatmulConv2DTranspose)
    z = np.random.default_rng(0).uniform(size=(16, 100)).astype("float32")
    images = {}
    for padding, (g, d) in built.items():
        assert [w.shape for w in g.weights + d.weights] == [
            w.shape for w in generator.weights + discriminator.weights]
        wn.initialize_weight_norm(g, z)
        wn.initialize_weight_norm(d, g(z, training=False))
        images[padding] = g(z, training=False)
        assert images[padding].shape == (16, *shape)
        assert d(images[padding], training=False)[0].shape == (16, K)
    assert not np.allclose(images["same"], images["half"], atol=1e-3)


def test_the_improved_gan_presets_pad_as_their_source():
    """improved-gan's SVHN/CIFAR-10 networks pad 'half' (Lasagne); Lecouat et
    al.'s TensorFlow ones and every other source 'same'."""
    padding = {name: preset.config.model.conv_padding
               for name, preset in presets.PRESETS.items()}
    assert {name for name, value in padding.items() if value == "half"} == {
        "svhn_improved_gan", "cifar10_improved_gan"}
    assert not any(deviation.aspect == "padding" for preset in presets.PRESETS.values()
                   for deviation in preset.deviations)


@pytest.mark.parametrize("build, arguments, name", [
    (networks.build_generator, {"architecture": "mnist_blog", "image_shape": (28, 28, 1),
                                "conv_padding": "half"}, "conv_padding='half' is a choice of"),
    (networks.build_discriminator, {"architecture": "svhn_improved_gan",
                                    "image_shape": (32, 32, 3), "conv_padding": "full"},
     "conv_padding must be one of"),
    (networks.build_generator, {"architecture": "mnist_cnn", "image_shape": (28, 28, 1)},
     "architecture"),
    (networks.build_generator, {"architecture": "mnist_blog", "image_shape": (32, 32, 3)},
     "image_shape"),
    (networks.build_generator, {"architecture": "svhn_dcgan", "image_shape": (32, 32, 3),
                                "latent_dim": 0}, "latent_dim"),
    (networks.build_generator, {"architecture": "mnist_blog", "image_shape": (28, 28, 1),
                                "output_activation": "softplus"}, "output_activation"),
    (networks.build_generator, {"architecture": "mnist_improved_gan",
                                "image_shape": (28, 28, 1), "output_activation": "relu"},
     "output_activation"),
    (networks.build_discriminator, {"architecture": "svhn_dcgan", "image_shape": (32, 32, 3),
                                    "fake_class": "eleven"}, "fake_class"),
    (networks.build_discriminator, {"architecture": "svhn_dcgan", "image_shape": (28, 28, 1)},
     "image_shape"),
    (networks.build_discriminator, {"architecture": "svhn_dcgan", "image_shape": (32, 32, 3),
                                    "num_classes": 1}, "num_classes"),
])
def test_bad_arguments_raise_one_line_value_errors(build, arguments, name):
    architecture = arguments.pop("architecture")
    with pytest.raises(ValueError, match=name) as error:
        build(architecture, **arguments)
    assert "\n" not in str(error.value)


def test_describe_names_the_source():
    assert "improved-gan" in networks.describe("cifar10_improved_gan")
    assert "96/192" in networks.describe("cifar10_improved_gan")
    assert "Udacity" in networks.describe("svhn_dcgan")
    with pytest.raises(ValueError, match="architecture"):
        networks.describe("nope")


def test_lecouat_features_are_a_global_max_pool():
    import keras
    lecouat = networks.build_discriminator("svhn_lecouat", image_shape=(32, 32, 3), seed=0)
    salimans = networks.build_discriminator("svhn_improved_gan", image_shape=(32, 32, 3), seed=0)
    assert isinstance(lecouat.get_layer("d_features"), keras.layers.GlobalMaxPooling2D)
    assert isinstance(salimans.get_layer("d_features"), keras.layers.GlobalAveragePooling2D)
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    features = keras.Model(lecouat.input, lecouat.get_layer("d_lrelu9").output)(images)
    np.testing.assert_allclose(lecouat(images)[1], np.max(features, axis=(1, 2)), rtol=1e-6)


SYNCHRONIZED_SCRIPT = """
import json
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sgan_keras import networks
images = np.random.default_rng(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
images[4:] += 0.5          # the second replica's half of the batch is brighter
def moving_means(strategy):
    with strategy.scope():
        d = networks.build_discriminator("mnist_gans_in_action", image_shape=(28, 28, 1), seed=0)
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(images).batch(8))))
    strategy.run(tf.function(lambda x: d(x, training=True)), args=(batch,))
    norms = [layer for layer in d.layers if isinstance(layer, keras.layers.BatchNormalization)]
    return [[np.asarray(copy).tolist()
             for copy in strategy.experimental_local_results(layer.moving_mean.value)]
            for layer in norms]
print(json.dumps({"one": moving_means(tf.distribute.get_strategy()),
                  "two": moving_means(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}))
"""


def test_batch_norm_under_several_replicas_takes_the_global_batchs_statistics():
    """Each replica's BatchNorm took its own images' statistics, so the replicas'
    copies of the moving averages differed (the evaluation used each replica's, a
    checkpoint the first's: a resumed run was not the uninterrupted one) and
    differed from one device's."""
    import json
    import preloaded
    result = preloaded.run_code(SYNCHRONIZED_SCRIPT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["one"]) == len(report["two"]) == 2          # d_bn2, d_bn3
    for (one_device,), replicas in zip(report["one"], report["two"]):
        assert len(replicas) == 2
        for copy in replicas:
            np.testing.assert_allclose(copy, one_device, atol=1e-6)
