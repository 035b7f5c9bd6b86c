"""FLOP counts from the layers (sgan_keras.flops), checked against hand counts."""

import keras
import pytest

from sgan_keras import SGAN
from sgan_keras import flops
from sgan_keras import layers as wn


def test_dense_counts_two_flops_per_multiply_add():
    inputs = keras.Input((8,))
    outputs = wn.WeightNormDense(3)(keras.layers.Dense(4)(inputs))
    assert flops.forward_flops(keras.Model(inputs, outputs)) == 2 * 8 * 4 + 2 * 4 * 3


@pytest.mark.parametrize("conv", [keras.layers.Conv2D, wn.WeightNormConv2D])
def test_convolution_counts_per_output_position(conv):
    inputs = keras.Input((8, 8, 3))
    outputs = conv(5, 3, strides=2, padding="same")(inputs)          # 4 x 4 outputs
    assert flops.forward_flops(keras.Model(inputs, outputs)) == 2 * 9 * 3 * 5 * 16


@pytest.mark.parametrize("conv", [keras.layers.Conv2DTranspose, wn.WeightNormConv2DTranspose])
def test_transposed_convolution_counts_per_input_position(conv):
    inputs = keras.Input((4, 4, 5))
    outputs = conv(2, 3, strides=2, padding="same")(inputs)          # 8 x 8 outputs
    assert flops.forward_flops(keras.Model(inputs, outputs)) == 2 * 9 * 5 * 2 * 16


def test_upsample_convolution_counts_what_it_executes():
    inputs = keras.Input((7, 7, 4))
    outputs = wn.UpsampleConv2D(6, 5)(inputs)                         # 14 x 14 outputs
    # Four 3x3 phase kernels on the 7 x 7 input, not 25 taps at 14 x 14.
    assert flops.forward_flops(keras.Model(inputs, outputs)) == 2 * 9 * 4 * 4 * 6 * 49


def test_improved_gan_mnist_train_step():
    model = SGAN.from_preset("mnist_improved_gan", seed=0)
    generator = 2 * (100 * 500 + 500 * 500 + 500 * 784)
    discriminator = 2 * (784 * 1000 + 1000 * 500 + 500 * 250 + 2 * 250 * 250 + 250 * 10)
    assert flops.forward_flops(model.generator) == generator
    assert flops.forward_flops(model.discriminator) == discriminator
    # D step: G forward, D forward + backward on 3 batches; G step: G forward +
    # backward, D forward + input backward on the fakes, D forward on the reals.
    per_example = (generator + 9 * discriminator) + (3 * generator + 3 * discriminator)
    assert flops.train_step_flops(model, 100) == 100 * per_example


def test_manifold_and_supervised_only_steps():
    plain = SGAN.from_preset("svhn_improved_gan", seed=0)
    manifold = SGAN.from_preset("svhn_improved_gan", seed=0, manifold="lecouat")
    baseline = SGAN.from_preset("svhn_improved_gan", seed=0, supervised_only=True)
    generator = flops.forward_flops(plain.generator)
    discriminator = flops.forward_flops(plain.discriminator)
    assert (flops.train_step_flops(manifold, 10) - flops.train_step_flops(plain, 10)
            == 10 * (generator + 3 * discriminator))
    assert flops.train_step_flops(baseline, 10) == 10 * 3 * discriminator


def test_each_procedure_counts_the_passes_it_makes():
    def count(**overrides):
        return flops.train_step_flops(SGAN.from_preset("mnist_blog", seed=0, **overrides), 10)
    model = SGAN.from_preset("mnist_blog", seed=0)
    generator = flops.forward_flops(model.generator)
    discriminator = flops.forward_flops(model.discriminator)
    fresh = count(update_order="sequential", generator_fakes="fresh", label_batching="separate")
    # The blog's G step re-uses the D step's fakes: one G forward fewer.
    assert fresh - count(update_order="sequential", generator_fakes="reused",
                         label_batching="separate") == 10 * generator
    # Masked batching (Udacity): no separate labeled batch through D.
    assert fresh - count(update_order="sequential", generator_fakes="fresh",
                         label_batching="masked") == 10 * 3 * discriminator
    # One forward pass for both losses (the blog's G loss is feature matching):
    # no second G forward, D forward on the fakes or D forward on the reals.
    assert model.config.model.generator_loss.startswith("feature_matching")
    assert fresh - count(update_order="simultaneous", generator_fakes="fresh",
                         label_batching="separate") == 10 * (generator + 2 * discriminator)
    # GANs in Action's three D updates, each its own D call, with masked
    # batching as without: the labeled update is a pass of its own.
    split = dict(update_order="split", generator_fakes="fresh")
    assert (count(**split, label_batching="masked")
            == count(**split, label_batching="separate") == fresh)
