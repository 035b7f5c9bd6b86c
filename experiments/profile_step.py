r"""Where a preset's training step spends its time, by TensorFlow op type.

    pip install xprof                # TensorFlow's profiler tools (optional)
    python experiments/profile_step.py --preset=mnist_improved_gan --batch_size=100

Traces ``--steps`` compiled train steps with ``tf.profiler.experimental``
(TensorFlow's profiler guide) into ``--logdir`` (open it in TensorBoard's
Profile tab) and, when ``xprof`` is installed, prints the self time of each
op type per step, summed over the CPU threads, with ``IDLE`` the time the
op threads waited. Pass ``--output`` to also append that table to a Markdown file.
Run it on a quiet machine: the shares are what matter, not the totals.
"""

import collections
import glob
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402

flags.DEFINE_string("preset", "mnist_improved_gan", "Preset to profile.")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the preset's).")
flags.DEFINE_integer("steps", 20, "Traced steps.")
flags.DEFINE_string("logdir", "/tmp/sgan_profile", "Where the trace goes.")
flags.DEFINE_integer("top", 15, "Op types listed.")
flags.DEFINE_string("output", None, "Markdown file for the table (optional).")
FLAGS = flags.FLAGS


def trace(preset_name, batch_size, steps, logdir):
    """Traces ``steps`` train steps; returns the trace file."""
    import tensorflow as tf
    from sgan_keras import PRESETS, SGAN
    from sgan_keras import data as data_lib
    config = PRESETS[preset_name].config
    data = data_lib.synthetic_dataset(config.data.dataset, min(config.data.labels, 10000),
                                      pixel_range=config.model.pixel_range)
    model = SGAN.from_preset(preset_name, seed=0)
    model.compile()
    batches = iter(data.training_dataset(batch_size, config.training.label_batching))
    model.initialize_weight_norm(next(batches))
    step = tf.function(model.train_step)
    held = [next(batches) for _ in range(5)]
    for batch in held:                         # traced and warm before profiling
        logs = step(batch)
    float(logs["d_loss"])
    tf.profiler.experimental.start(logdir)
    for index in range(steps):
        logs = step(held[index % len(held)])
    float(logs["d_loss"])
    tf.profiler.experimental.stop()
    return max(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")),
               key=os.path.getmtime)


def op_type_table(xplane, steps):
    """``[(op type, milliseconds per step)]``, most expensive first (needs xprof)."""
    from xprof.convert import raw_to_tool_data
    data, _ = raw_to_tool_data.xspace_to_tool_data([xplane], "framework_op_stats^",
                                                   {"tqx": "out:csv"})
    table = json.loads(data)
    table = table[0] if isinstance(table, list) else table
    columns = [column["id"] for column in table["cols"]]
    totals = collections.Counter()
    for row in table["rows"]:
        values = dict(zip(columns, [cell["v"] if cell else None for cell in row["c"]]))
        totals[values["type"]] += values["total_self_time"] / 1000 / steps
    return totals.most_common()


def main(argv):
    del argv
    from sgan_keras import onednn
    from sgan_keras.presets import PRESETS   # (imports no TensorFlow)
    # The preset's kernels, as its CLI run chooses them before TensorFlow is imported.
    onednn.choose_cpu_kernels(PRESETS[FLAGS.preset].config.model.architecture)
    batch_size = FLAGS.batch_size or PRESETS[FLAGS.preset].config.training.batch_size
    xplane = trace(FLAGS.preset, batch_size, FLAGS.steps, FLAGS.logdir)
    print(f"trace: {xplane} (TensorBoard --logdir={FLAGS.logdir}, Profile tab)")
    try:
        rows = op_type_table(xplane, FLAGS.steps)
    except ImportError:
        print("pip install xprof for the table of op types")
        return
    total = sum(ms for _, ms in rows)
    lines = [f"{FLAGS.preset}, batch {batch_size}: {total:.1f} ms of thread time per step",
             "", "| op type | ms per step | share |", "|---|---|---|"]
    lines += [f"| {op} | {ms:.2f} | {100 * ms / total:.1f}% |" for op, ms in rows[:FLAGS.top]]
    print("\n".join(lines))
    if FLAGS.output:
        record = provenance.record()
        with open(FLAGS.output, "a", encoding="utf-8") as file:
            file.write("\n".join([f"## {FLAGS.preset}", "",
                                  f"`{record['command']}`; commit {record['commit']}, "
                                  f"{record['date']}; {provenance.machine_line(record)}.", "",
                                  *lines, "", ""]))


if __name__ == "__main__":
    app.run(main)
