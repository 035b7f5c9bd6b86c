"""What the single-layer benchmarks (``conv_transpose_bench.py``,
``conv_input_grad_bench.py``) share: their flags, their timer, and the
Markdown section each appends to ``--output``."""

import time

from absl import flags

import provenance

flags.DEFINE_integer("batch_size", 0, "Images per call; 0: each layer's preset batch.")
flags.DEFINE_float("window_seconds", 1.0, "Length of one timed window (at least one call).")
flags.DEFINE_integer("repeats", 3, "Timed windows (the fastest is reported).")
flags.DEFINE_string("output", "", "Markdown file to append the table to.")
provenance.define_timing_flags()
FLAGS = flags.FLAGS


def start():
    """The quiet-machine check (refusing a busy one unless ``--force``), then
    the matmul peak in FLOP/s and the line that states it."""
    check = provenance.quiet_check(FLAGS.quiet_seconds, force=FLAGS.force)
    peak = provenance.matmul_peak_flops(FLAGS.peak_size, repeats=FLAGS.peak_repeats)
    line = (f"Matmul peak (same run, best of {FLAGS.peak_repeats}): {peak / 1e9:.1f} GFLOP/s; "
            f"float32, fastest of {FLAGS.repeats} windows of about {FLAGS.window_seconds:g} s.")
    return check, peak, line


def milliseconds(function, argument):
    """Fastest window's milliseconds per call of ``function(argument)`` (a tuple
    of tensors), over ``--repeats`` windows of about ``--window_seconds``."""
    for _ in range(2):
        result = function(argument)
    result[0].numpy()
    start_time = time.perf_counter()
    function(argument)[0].numpy()
    steps = max(1, int(FLAGS.window_seconds / (time.perf_counter() - start_time)))
    windows = []
    for _ in range(FLAGS.repeats):
        start_time = time.perf_counter()
        for _ in range(steps):
            result = function(argument)
        result[0].numpy()
        windows.append((time.perf_counter() - start_time) / steps * 1e3)
    return min(windows)


def append_section(title, check, lines):
    """Appends ``## title``, the command, commit, machine and quiet check, then
    ``lines`` to ``--output`` (nothing without it)."""
    if not FLAGS.output:
        return
    record = provenance.record()
    with open(FLAGS.output, "a", encoding="utf-8") as file:
        file.write("\n".join([
            f"## {title}", "",
            f"`{record['command']}`; commit {record['commit']}, {record['date']}; "
            f"{provenance.machine_line(record)}. {provenance.quiet_line(check)}", "",
            *lines, "", ""]))
