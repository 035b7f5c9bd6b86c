r"""Measures the training input pipeline in images per second.

    python experiments/benchmark_input_pipeline.py --data_dir=../shared/data/mnist [--large]

Counts every image of a ``train_dataset`` element (labeled + two unlabeled
batches) over ``--steps`` steps after a warm-up, for the real MNIST (batch
100, the Improved-GAN preset's) and for SVHN-shaped data (73,257 random
32x32x3 images, batch 128, the SVHN DCGAN preset's). ``--large`` adds
720,000 SVHN-shaped images (2.2 GB, past the 2 GB protobuf limit; SVHN +
extra is 604,388 images, 1.9 GB) to show the pipeline holds such arrays.
Writes the table as JSON, with the process's peak memory after each row.
Like every timing script here, it first checks that the machine is quiet
(``provenance.quiet_check``: it waits for a busy one to settle, then refuses
it unless ``--force``) and records that check with the table.

It also times one ``next()`` the way a training loop calls it
(``next_latency``): right after a burst of matmuls as long as a training
step, when the batch is already waiting in the prefetch buffer. That is the
input wait ``benchmark.py`` reports for its bare loop. The same call on the
same four tensors held in memory (``Dataset.from_tensors(batch).repeat()``)
and on a one-scalar dataset separates the pipeline's own share from what
any ``tf.data`` iterator costs per call from Python.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags

# This checkout's sgan_keras, whichever copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402
import tensorflow as tf  # noqa: E402
from sgan_keras import choices as choices_lib  # noqa: E402
from sgan_keras import data as data_lib  # noqa: E402
from sgan_keras import faults  # noqa: E402

flags.DEFINE_string("data_dir", "../shared/data/mnist", "Directory with the real mnist.npz.")
flags.DEFINE_integer("steps", 200, "Measured steps per dataset.")
flags.DEFINE_integer("warmup_steps", 20, "Steps run before the clock starts.")
flags.DEFINE_bool("large", False, "Also measure 720,000 SVHN-shaped images (2.2 GB).")
flags.DEFINE_integer("latency_calls", 150, "Timed next() calls per dataset of next_latency.")
flags.DEFINE_float("step_ms", 40.0, "Matmul burst before each timed next() call, about a "
                   "training step (the Improved-GAN MNIST step: 40-45 ms on 2 AVX2 cores).")
flags.DEFINE_string("output", "experiments/results/input_pipeline.json", "Where the table goes.")
provenance.define_timing_flags(peak=False)
FLAGS = flags.FLAGS


def images_per_second(data, batch_size, steps, warmup_steps):
    """Images per second and milliseconds per step of ``train_dataset``."""
    iterator = iter(data.train_dataset(batch_size))
    for _ in range(warmup_steps):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    seconds = time.perf_counter() - start
    return 3 * batch_size * steps / seconds, 1000 * seconds / steps


def next_latency(datasets, calls, step_ms):
    """Median milliseconds of one ``next()`` on each of ``datasets`` (name ->
    ``tf.data.Dataset``), each call right after about ``step_ms`` of
    matmuls, as in a training loop; ``calls`` timed calls after 20 untimed."""

    @tf.function
    def matmuls(matrix, count):
        for _ in tf.range(count):
            matrix = tf.matmul(matrix, matrix) * 1e-3
        return matrix

    matrix = tf.random.normal((512, 512))
    matmuls(matrix, tf.constant(1)).numpy()        # traced once: the count is a tensor
    start = time.perf_counter()
    matmuls(matrix, tf.constant(100)).numpy()
    count = tf.constant(max(1, round(step_ms / (1000 * (time.perf_counter() - start) / 100))))
    medians = {}
    for name, dataset in datasets.items():
        iterator = iter(dataset)
        for _ in range(20):
            next(iterator)
        times = []
        for _ in range(calls):
            matmuls(matrix, count).numpy()
            start = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - start)
        medians[name] = round(1000 * statistics.median(times), 3)
    return medians


def latency_datasets(data, batch_size):
    """``train_dataset``, its first element held in memory, and one scalar."""
    pipeline = data.train_dataset(batch_size)
    return {"train_dataset": pipeline,
            "same_tensors_in_memory": tf.data.Dataset.from_tensors(
                next(iter(pipeline))).repeat(),
            "one_scalar": tf.data.Dataset.from_tensors(tf.zeros(())).repeat()}


def peak_memory_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def main(argv):
    del argv
    check = provenance.quiet_check(FLAGS.quiet_seconds, force=FLAGS.force)
    cases = [("mnist", lambda: data_lib.load_dataset("mnist", 100, data_dir=FLAGS.data_dir), 100),
             ("svhn-shaped", lambda: data_lib.synthetic_dataset(
                 "svhn", 1000, train_size=choices_lib.DATASETS["svhn"].train_size), 128)]
    if FLAGS.large:
        cases.append(("svhn-shaped-2.2GB",
                      lambda: data_lib.synthetic_dataset("svhn", 1000, train_size=720000), 128))
    rows = []
    for name, make_data, batch_size in cases:
        data = make_data()
        rate, milliseconds = images_per_second(data, batch_size, FLAGS.steps, FLAGS.warmup_steps)
        rows.append({"dataset": name, "train_images": len(data.train_images),
                     "batch_size": batch_size, "images_per_second": round(rate),
                     "ms_per_step": round(milliseconds, 3),
                     "peak_memory_gb": round(peak_memory_gb(), 2)})
        print(f"{name:18s} batch {batch_size:4d}: {rate:12,.0f} images/s "
              f"({milliseconds:.2f} ms per step of 3 batches), peak memory "
              f"{peak_memory_gb():.2f} GB", flush=True)
        if name == "mnist":
            latency = next_latency(latency_datasets(data, batch_size), FLAGS.latency_calls,
                                   FLAGS.step_ms)
            rows[-1]["next_latency_ms"] = latency
            print(f"{name:18s} one next() after {FLAGS.step_ms:.0f} ms of matmuls (ms): "
                  + ", ".join(f"{key} {value:.3f}" for key, value in latency.items()),
                  flush=True)
        del data
    made = provenance.record()
    result = {"machine": provenance.machine_line(made), "tensorflow": made["tensorflow"],
              "commit": made["commit"], "date": made["date"], "command": made["command"],
              "quiet_check": check, "steps": FLAGS.steps, "warmup_steps": FLAGS.warmup_steps,
              "latency_calls": FLAGS.latency_calls, "step_ms": FLAGS.step_ms, "rows": rows}
    faults.write_text(FLAGS.output, json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
