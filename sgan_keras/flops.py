"""Floating-point operations of the networks and of one SGAN training step.

Counted from the layers, as the usual "multiply-adds x 2" of the dense and
convolution layers (biases, activations, normalization and noise are
elementwise and left out; they are a few percent of these networks' work):

- Dense (and ``WeightNormDense``): ``2 * inputs * units`` per example.
- Conv2D: ``2 * kh * kw * in_channels * filters`` per *output* position.
- Conv2DTranspose: ``2 * kh * kw * in_channels * filters`` per *input* position.
- UpsampleConv2D: what it executes, ``2 * m * m * in_channels * 4 * filters``
  per *input* position (``m`` = 3 for a 5x5 kernel), not the 2.8x larger
  count of the upsampling and convolution it computes.

A training step's count (:func:`train_step_flops`) uses the standard
approximation that a backward pass costs twice its forward pass when it
computes both weight and input gradients, and once when it only needs input
gradients (D in the generator step). ``experiments/benchmark.py`` divides it
by measured step times to report achieved FLOP/s.
"""

import math

import keras

from sgan_keras import layers as sgan_layers

_DENSE = (keras.layers.Dense, sgan_layers.WeightNormDense)
_CONV = (keras.layers.Conv2D, sgan_layers.WeightNormConv2D)
_CONV_TRANSPOSE = (keras.layers.Conv2DTranspose, sgan_layers.WeightNormConv2DTranspose)


def layer_flops(layer):
    """Forward FLOPs of ``layer`` per example (0 for layers without a kernel)."""
    # UpsampleConv2D subclasses Conv2D but runs a smaller kernel: test it first.
    if isinstance(layer, sgan_layers.UpsampleConv2D):
        rows, columns = layer.phase_kernel_size
        in_shape = layer.input.shape
        return (2 * rows * columns * int(in_shape[-1]) * 4 * layer.filters
                * int(in_shape[1]) * int(in_shape[2]))
    if isinstance(layer, _CONV_TRANSPOSE):
        kh, kw = layer.kernel_size
        in_shape = layer.input.shape
        return 2 * kh * kw * int(in_shape[-1]) * layer.filters * int(in_shape[1]) * int(in_shape[2])
    if isinstance(layer, _CONV):
        kh, kw = layer.kernel_size
        out_shape = layer.output.shape
        return (2 * kh * kw * int(layer.input.shape[-1]) * layer.filters
                * int(out_shape[1]) * int(out_shape[2]))
    if isinstance(layer, _DENSE):
        positions = math.prod(int(d) for d in layer.input.shape[1:-1])
        return 2 * int(layer.input.shape[-1]) * layer.units * positions
    return 0


def forward_flops(model):
    """Forward FLOPs per example of a built functional ``keras.Model``."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        else:
            total += layer_flops(layer)
    return total


def train_step_flops(sgan, batch_size):
    """FLOPs of one ``SGAN.train_step`` on a global batch of ``batch_size``,
    in the model's procedure (``update_order``, ``generator_fakes``,
    ``label_batching``).

    - ``sequential``: D step: G forward on B, D forward + backward on the
      labeled, unlabeled and generated batches (3B; 2B with masked batching,
      whose labeled images are the real batch). G step: G forward (none with
      ``generator_fakes="reused"``) + backward on B, D forward + input-gradient
      backward on the generated batch, and (feature matching) D forward on
      the real batch.
    - ``simultaneous``: one G forward and one D forward per batch; D's loss
      backward on every batch, G's loss backward through D on the generated
      batch and through G.
    - ``split``: D forward + backward on the labeled, the real and the
      generated batch (G forward in inference mode), three updates with masked
      batching too, then the sequential G step.

    Manifold regularization adds a G forward and a D forward + backward on the
    perturbed batch. ``supervised_only``: D forward + backward on B.
    """
    d = forward_flops(sgan.discriminator)
    if sgan.config.supervised_only:
        return 3 * d * batch_size
    g = forward_flops(sgan.generator)
    training, options = sgan.config.training, sgan.config.model
    # Masked batching's labeled images are the real batch, in one D call,
    # except under split, whose three D updates each make their own.
    masked = training.label_batching == "masked" and training.update_order != "split"
    d_batches = 2 if masked else 3
    feature_matching = options.generator_loss.startswith("feature_matching")
    if training.update_order == "simultaneous":
        total = g + 3 * d_batches * d + d + 2 * g
    else:
        total = g + 3 * d_batches * d                # discriminator step(s)
        reused = (training.update_order == "sequential"
                  and training.generator_fakes == "reused")
        total += (2 * g if reused else 3 * g) + 2 * d + (d if feature_matching else 0)
    if options.manifold != "none":
        total += g + 3 * d
    return total * batch_size
