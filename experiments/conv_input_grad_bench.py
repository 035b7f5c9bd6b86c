r"""Times the stride-1 convolutions' input gradients alone: TensorFlow's op
against the forward convolution the package uses.

    python experiments/conv_input_grad_bench.py \
        --output=experiments/results/conv_input_grad_avx2.md

Each stride-1 convolution of the presets' networks below, at its preset's
batch, in float32: the forward pass alone, then the forward pass and the
gradient with respect to its input, once with ``tf.nn.conv2d`` (whose input
gradient is TensorFlow's ``Conv2DBackpropInput``) and once with
``sgan_keras.layers._conv2d_with_conv_input_grad`` (the same function; its
input gradient a forward convolution with the flipped kernel), which
``Conv2DWithConvInputGrad``, ``UpsampleConv2D`` and the stride-1
``WeightNormConv2D`` run. Refuses a busy machine unless ``--force``.
"""

import os
import sys

import tensorflow as tf
from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import layer_bench  # noqa: E402  (flags, timer, report)
from sgan_keras import layers as sgan_layers  # noqa: E402

# (layer, input size, input channels, output channels, kernel, padding, batch). The blog's
# UpsampleConv2D layers convolve with a 3x3 phase kernel of four times the filters.
LAYERS = (
    ("MNIST blog g_conv1 (UpsampleConv2D)", 7, 64, 4 * 128, 3, "same", 32),
    ("MNIST blog g_conv2 (UpsampleConv2D)", 14, 128, 4 * 64, 3, "same", 32),
    ("MNIST blog g_conv3", 28, 64, 64, 5, "same", 32),
    ("MNIST blog g_images", 28, 64, 1, 5, "same", 32),
    ("MNIST blog d_conv3", 7, 64, 64, 5, "same", 32),
    ("SVHN DCGAN d_conv4", 4, 64, 128, 3, "same", 128),
    ("SVHN DCGAN d_conv5", 4, 128, 128, 3, "same", 128),
    ("SVHN DCGAN d_conv6", 4, 128, 128, 3, "valid", 128),
    ("conv-large d_conv2", 32, 96, 96, 3, "same", 100),
    ("conv-large d_conv4", 16, 96, 192, 3, "same", 100),
    ("conv-large d_conv5", 16, 192, 192, 3, "same", 100),
    ("conv-large d_conv7", 8, 192, 192, 3, "valid", 100),
    ("conv-large d_conv8", 6, 192, 192, 1, "valid", 100),
)


def timed_functions(kernel, padding):
    """``{name: tf.function(x)}``: the forward pass, and the forward pass with
    the input gradient by each implementation."""
    def with_input_gradient(convolution):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = convolution(x)
                loss = tf.reduce_sum(y * y)
            return (tape.gradient(loss, x),)
        return run

    native = lambda x: tf.nn.conv2d(x, kernel, 1, padding.upper())  # noqa: E731
    package = lambda x: sgan_layers._conv2d_with_conv_input_grad(x, kernel, padding)  # noqa: E731
    return {"forward": tf.function(lambda x: (native(x),)),
            "tensorflow": with_input_gradient(native),
            "package": with_input_gradient(package)}


def main(argv):
    del argv
    check, peak, peak_line = layer_bench.start()
    lines = [peak_line + " Input gradient = (forward + input gradient) - forward.", "",
             "| layer | shape | batch | forward ms | forward + input gradient ms, TensorFlow's "
             "op | the same, flipped-kernel convolution | input gradient ms, TensorFlow's op "
             "(% of peak) | input gradient ms, flipped-kernel convolution (% of peak) "
             "| input gradient speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, size, channels_in, channels_out, kernel_size, padding, batch in LAYERS:
        batch = layer_bench.FLAGS.batch_size or batch
        x = tf.random.normal([batch, size, size, channels_in], seed=0)
        kernel = tf.random.normal([kernel_size, kernel_size, channels_in, channels_out],
                                  stddev=0.05, seed=1)
        out_size = size if padding == "same" else size - kernel_size + 1
        flops = 2 * batch * out_size ** 2 * channels_in * channels_out * kernel_size ** 2
        ms = {implementation: layer_bench.milliseconds(function, x)
              for implementation, function in timed_functions(kernel, padding).items()}
        grads = {k: max(ms[k] - ms["forward"], 1e-3) for k in ("tensorflow", "package")}
        rate = {k: 100 * flops / grads[k] / 1e-3 / peak for k in grads}
        lines.append(
            f"| {name} | {size}x{size}x{channels_in} -> {channels_out}, "
            f"{kernel_size}x{kernel_size}, {padding} | {batch} | {ms['forward']:.2f} "
            f"| {ms['tensorflow']:.2f} | {ms['package']:.2f} | {grads['tensorflow']:.2f} "
            f"({rate['tensorflow']:.0f}%) | {grads['package']:.2f} ({rate['package']:.0f}%) "
            f"| {grads['tensorflow'] / grads['package']:.2f}x |")
        print(lines[-1], flush=True)
    layer_bench.append_section("Stride-1 convolutions' input gradients alone", check, lines)


if __name__ == "__main__":
    app.run(main)
