r"""Times the generators' transposed convolutions alone, and their rewrites.

    python experiments/conv_transpose_bench.py \
        --output=experiments/results/conv_transpose_matmul_avx2.md

Each layer below at its preset's batch, in float32, forward and forward +
backward (input and kernel gradients), with its GFLOP/s against the matmul
peak of the same run: TensorFlow's transposed convolution (what
``keras.layers.Conv2DTranspose`` runs) and the rewrites one could use
instead. A stride-2 layer as ``sgan_keras.layers.MatmulConv2DTranspose``
(one matmul and shifted sums, TensorFlow's gradients), which the presets use
for G's first transposed convolution, the same with its forward pass as
separate TensorFlow ops rather than one XLA computation (the layer before
commit 42edd2c), and, for 3x3 kernels, as a 2x2
convolution with four times the filters and ``depth_to_space`` (sub-pixel);
a stride-1 layer as the plain convolution with the flipped kernel. A GANs in
Action step runs its G forward twice (the fakes of D's update, then G's
update) and backward once. Refuses a busy machine unless ``--force``.
"""

import os
import sys

import tensorflow as tf
from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import layer_bench  # noqa: E402  (flags, timer, report)
from sgan_keras import layers as sgan_layers  # noqa: E402

# (generator, input size, input channels, output channels, kernel, stride, batch)
LAYERS = (
    ("GANs in Action g_convt1", 7, 256, 128, 3, 2, 32),
    ("GANs in Action book's extra layer", 14, 128, 64, 3, 1, 32),
    ("GANs in Action g_images", 14, 128, 1, 3, 2, 32),
    ("SVHN DCGAN g_convt1", 4, 128, 64, 5, 2, 128),
    ("SVHN DCGAN g_convt2", 8, 64, 32, 5, 2, 128),
    ("conv-large g_convt1", 4, 512, 256, 5, 2, 100),
    ("conv-large g_convt2", 8, 256, 128, 5, 2, 100),
)


def forward_and_backward(forward, kernel):
    """``tf.function``s of ``forward(x)`` and of its input and kernel gradients."""
    forward_only = tf.function(lambda x: (forward(x),))

    @tf.function
    def both(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, kernel])
    return forward_only, both


def variants(size, channels_in, channels_out, kernel_size, stride, batch):
    """``{name: (forward, kernel variable)}`` of the transposed conv and its rewrites."""
    kernel = tf.Variable(tf.random.normal(
        [kernel_size, kernel_size, channels_out, channels_in], stddev=0.05))
    out_size = size * stride
    found = {"conv_transpose": (lambda x: tf.nn.conv2d_transpose(
        x, kernel, [batch, out_size, out_size, channels_out], stride, "SAME"), kernel)}
    if stride == 1:
        flipped = tf.Variable(tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]))
        found["conv, flipped kernel"] = (lambda x: tf.nn.conv2d(x, flipped, 1, "SAME"),
                                         flipped)
        return found
    layer = sgan_layers.MatmulConv2DTranspose(channels_out, kernel_size, strides=stride,
                                              use_bias=False)
    layer.build((batch, size, size, channels_in))
    layer.kernel.assign(kernel)
    found["MatmulConv2DTranspose"] = (layer, layer.kernel)
    separate_ops = sgan_layers._summed_taps.python_function   # the forward uncompiled
    found["MatmulConv2DTranspose, forward as separate ops"] = (
        lambda x: sgan_layers._matmul_conv_transpose(x, tf.convert_to_tensor(layer.kernel),
                                                     (stride, stride),
                                                     forward=separate_ops), layer.kernel)
    if kernel_size == 3 and stride == 2:
        phases = tf.Variable(tf.random.normal([2, 2, channels_in, 4 * channels_out],
                                              stddev=0.05))
        found["sub-pixel 2x2 conv + depth_to_space"] = (lambda x: tf.nn.depth_to_space(
            tf.nn.conv2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), phases, 1, "VALID"),
            2), phases)
    return found


def main(argv):
    del argv
    check, peak, peak_line = layer_bench.start()
    lines = ["FLOPs count the useful multiply-adds (the sub-pixel rewrite does more: "
             "16 taps per input pixel where 9 are needed).", "", peak_line, "",
             "| generator layer | shape | batch | implementation | forward ms "
             "| GFLOP/s (% of peak) | forward + backward ms | GFLOP/s (% of peak) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, size, channels_in, channels_out, kernel_size, stride, batch in LAYERS:
        batch = layer_bench.FLAGS.batch_size or batch
        x = tf.random.normal([batch, size, size, channels_in], seed=0)
        flops = 2 * batch * size * size * channels_in * channels_out * kernel_size ** 2
        shape = (f"{size}x{size}x{channels_in} -> {channels_out}, {kernel_size}x{kernel_size}, "
                 f"stride {stride}")
        for implementation, (forward, kernel) in variants(
                size, channels_in, channels_out, kernel_size, stride, batch).items():
            forward_only, both = forward_and_backward(forward, kernel)
            fwd = layer_bench.milliseconds(forward_only, x)
            fwd_bwd = layer_bench.milliseconds(both, x)
            rate = flops / fwd / 1e6
            rate_both = 3 * flops / fwd_bwd / 1e6
            lines.append(
                f"| {name} | {shape} | {batch} | {implementation} "
                f"| {fwd:.2f} | {rate:.0f} ({100 * rate * 1e9 / peak:.0f}%) | {fwd_bwd:.2f} "
                f"| {rate_both:.0f} ({100 * rate_both * 1e9 / peak:.0f}%) |")
            print(lines[-1], flush=True)
    layer_bench.append_section("The generators' transposed convolutions alone", check, lines)


if __name__ == "__main__":
    app.run(main)
