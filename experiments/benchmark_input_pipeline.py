r"""Measures the training input pipeline in images per second.

    python experiments/benchmark_input_pipeline.py --data_dir=../shared/data/mnist [--large]

Counts every image of a ``train_dataset`` element (labeled + two unlabeled
batches) over ``--steps`` steps after a warm-up, for the real MNIST (batch
100, the Improved-GAN preset's) and for SVHN-shaped data (73,257 random
32x32x3 images, batch 128, the SVHN DCGAN preset's). ``--large`` adds
720,000 SVHN-shaped images (2.2 GB, past the 2 GB protobuf limit; SVHN +
extra is 604,388 images, 1.9 GB) to show the pipeline holds such arrays.
Writes the table as JSON, with the process's peak memory after each row.
"""

import json
import os
import resource
import sys
import time

from absl import app
from absl import flags

# This checkout's sgan_keras, whichever copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402
from sgan_keras import choices as choices_lib  # noqa: E402
from sgan_keras import data as data_lib  # noqa: E402
from sgan_keras import faults  # noqa: E402

flags.DEFINE_string("data_dir", "../shared/data/mnist", "Directory with the real mnist.npz.")
flags.DEFINE_integer("steps", 200, "Measured steps per dataset.")
flags.DEFINE_integer("warmup_steps", 20, "Steps run before the clock starts.")
flags.DEFINE_bool("large", False, "Also measure 720,000 SVHN-shaped images (2.2 GB).")
flags.DEFINE_string("output", "experiments/results/input_pipeline.json", "Where the table goes.")
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


def peak_memory_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def main(argv):
    del argv
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
        del data
    made = provenance.record()
    result = {"machine": provenance.machine_line(made), "tensorflow": made["tensorflow"],
              "commit": made["commit"], "date": made["date"], "command": made["command"],
              "steps": FLAGS.steps, "warmup_steps": FLAGS.warmup_steps, "rows": rows}
    faults.write_text(FLAGS.output, json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
