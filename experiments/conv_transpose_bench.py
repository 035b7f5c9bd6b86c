r"""Times the GANs in Action generator's transposed convolutions, alone.

    python experiments/conv_transpose_bench.py --output=experiments/results/step_profiles.md

The GANs in Action step is mostly its generator's first transposed
convolution (7x7x256 -> 14x14x128, 3x3, stride 2), run forward twice and
backward once a step. This measures, at the preset's batch of 32 and in
float32, each transposed convolution of that generator (and of the book's
code's extra stride-1 one) forward and forward + backward (input and kernel
gradients), its GFLOP/s against the matmul peak of the same run, and the
rewrites one could try instead: a stride-1 transposed convolution as the
plain convolution with the flipped kernel, a stride-2 one as a 2x2
convolution with four times the filters and ``depth_to_space`` (sub-pixel).
If the layers already run near the peak, the step cannot be made much faster
without doing less work. Refuses a busy machine unless ``--force``.
"""

import os
import sys
import time

import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402  (experiments/provenance.py)

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Images per call (the GANs in Action batch).")
flags.DEFINE_integer("steps", 200, "Calls per timed window.")
flags.DEFINE_integer("repeats", 3, "Timed windows (the fastest is reported).")
flags.DEFINE_string("output", "", "Markdown file to append the table to.")
flags.DEFINE_bool("force", False, "Measure even if the machine is not quiet (recorded).")
flags.DEFINE_integer("peak_repeats", 10, "Timed runs of the matmul-peak probe (the fastest is "
                     "the peak; 1 for a smoke run).", lower_bound=1)

# (input size, input channels, output channels, stride) of each transposed conv.
LAYERS = ((7, 256, 128, 2), (14, 128, 64, 1), (14, 128, 1, 2))


def milliseconds(function, argument, steps, repeats):
    """Fastest window's milliseconds per call of ``function(argument)``."""
    for _ in range(5):
        result = function(argument)
    result[0].numpy()
    windows = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            result = function(argument)
        result[0].numpy()
        windows.append((time.perf_counter() - start) / steps * 1e3)
    return min(windows)


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


def variants(size, channels_in, channels_out, stride, batch):
    """``{name: forward}`` of the transposed conv and its rewrite."""
    kernel = tf.Variable(tf.random.normal([3, 3, channels_out, channels_in], stddev=0.05))
    out_size = size * stride
    found = {"conv_transpose": (lambda x: tf.nn.conv2d_transpose(
        x, kernel, [batch, out_size, out_size, channels_out], stride, "SAME"), kernel)}
    if stride == 1:
        flipped = tf.Variable(tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]))
        found["conv, flipped kernel"] = (lambda x: tf.nn.conv2d(x, flipped, 1, "SAME"),
                                         flipped)
    else:
        phases = tf.Variable(tf.random.normal([2, 2, channels_in, 4 * channels_out],
                                              stddev=0.05))
        found["sub-pixel 2x2 conv + depth_to_space"] = (lambda x: tf.nn.depth_to_space(
            tf.nn.conv2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), phases, 1, "VALID"),
            2), phases)
    return found


def main(argv):
    del argv
    check = provenance.quiet_check(force=FLAGS.force)
    peak = provenance.matmul_peak_flops(repeats=FLAGS.peak_repeats)
    batch = FLAGS.batch_size
    lines = [f"Matmul peak (same run, best of {FLAGS.peak_repeats}): {peak / 1e9:.1f} GFLOP/s; "
             f"batch {batch}, float32, fastest of {FLAGS.repeats} windows of {FLAGS.steps} calls.",
             "",
             "| layer | implementation | forward ms | GFLOP/s (% of peak) "
             "| forward + backward ms | GFLOP/s (% of peak) |", "|---|---|---|---|---|---|"]
    for size, channels_in, channels_out, stride in LAYERS:
        x = tf.random.normal([batch, size, size, channels_in], seed=0)
        flops = 2 * batch * size * size * channels_in * channels_out * 9
        for name, (forward, kernel) in variants(size, channels_in, channels_out, stride,
                                                batch).items():
            forward_only, both = forward_and_backward(forward, kernel)
            fwd = milliseconds(forward_only, x, FLAGS.steps, FLAGS.repeats)
            fwd_bwd = milliseconds(both, x, FLAGS.steps, FLAGS.repeats)
            rate = flops / fwd / 1e6
            rate_both = 3 * flops / fwd_bwd / 1e6
            lines.append(
                f"| {size}x{size}x{channels_in} -> {channels_out}, stride {stride} | {name} "
                f"| {fwd:.2f} | {rate:.0f} ({100 * rate * 1e9 / peak:.0f}%) | {fwd_bwd:.2f} "
                f"| {rate_both:.0f} ({100 * rate_both * 1e9 / peak:.0f}%) |")
            print(lines[-1], flush=True)
    if FLAGS.output:
        record = provenance.record()
        with open(FLAGS.output, "a") as file:
            file.write("\n".join([
                "## GANs in Action: its generator's transposed convolutions alone", "",
                f"`{record['command']}`; commit {record['commit']}, {record['date']}; "
                f"{provenance.machine_line(record)}. {provenance.quiet_line(check)}", "",
                "FLOPs count the useful multiply-adds (the rewrites do more: the "
                "sub-pixel one 16 taps per input pixel where 9 are needed).", "",
                *lines, "", ""]))


if __name__ == "__main__":
    app.run(main)
