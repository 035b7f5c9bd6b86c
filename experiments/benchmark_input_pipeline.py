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
import platform
import resource
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from sgan_keras import data as data_lib

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


def svhn_shaped(count, seed=0):
    """``count`` random 32x32x3 images with balanced labels and 1,000 labels drawn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return data_lib.SemiSupervisedData(
        name="svhn", num_classes=10, image_shape=(32, 32, 3), train_images=images,
        train_labels=labels, test_images=images[:100], test_labels=labels[:100],
        labeled_indices=data_lib.draw_labeled_indices(labels[:73257], 1000, seed),
        pixel_range=(-1.0, 1.0), seed=seed)


def peak_memory_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def main(argv):
    del argv
    cases = [("mnist", lambda: data_lib.load_dataset("mnist", 100, data_dir=FLAGS.data_dir), 100),
             ("svhn-shaped", lambda: svhn_shaped(73257), 128)]
    if FLAGS.large:
        cases.append(("svhn-shaped-2.2GB", lambda: svhn_shaped(720000), 128))
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
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "tensorflow": tf.__version__, "steps": FLAGS.steps,
              "warmup_steps": FLAGS.warmup_steps, "rows": rows}
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output + ".tmp", "w") as file:
        json.dump(result, file, indent=2)
    os.replace(FLAGS.output + ".tmp", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
