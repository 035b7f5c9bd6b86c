r"""Measures the training input pipeline in images per second.

    python experiments/benchmark_input_pipeline.py --data_dir=../shared/data/mnist

Counts every image of a ``train_dataset`` element (labeled + two unlabeled
batches) over ``--steps`` steps after a warm-up, for the real MNIST (batch
100, the Improved-GAN preset's) and for SVHN-shaped data (73,257 random
32x32x3 images, batch 128, the SVHN DCGAN preset's). Writes a JSON table.
"""

import json
import os
import platform
import time

import numpy as np
from absl import app
from absl import flags

from sgan_keras import data as data_lib

flags.DEFINE_string("data_dir", "../shared/data/mnist", "Directory with the real mnist.npz.")
flags.DEFINE_integer("steps", 300, "Measured steps per dataset.")
flags.DEFINE_string("output", "experiments/results/input_pipeline.json", "Where the table goes.")
FLAGS = flags.FLAGS


def images_per_second(data, batch_size, steps):
    iterator = iter(data.train_dataset(batch_size))
    for _ in range(20):                                   # warm-up
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    seconds = time.perf_counter() - start
    return 3 * batch_size * steps / seconds, 1000 * seconds / steps


def svhn_shaped(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), 7326)[:73257]
    images = rng.integers(0, 256, size=(73257, 32, 32, 3), dtype=np.uint8)
    return data_lib.SemiSupervisedData(
        name="svhn", num_classes=10, image_shape=(32, 32, 3), train_images=images,
        train_labels=labels, test_images=images[:100], test_labels=labels[:100],
        labeled_indices=data_lib.draw_labeled_indices(labels, 1000, seed),
        pixel_range=(-1.0, 1.0), seed=seed)


def main(argv):
    del argv
    rows = []
    for name, data, batch_size in (
            ("mnist", data_lib.load_dataset("mnist", 100, data_dir=FLAGS.data_dir), 100),
            ("svhn-shaped", svhn_shaped(), 128)):
        rate, milliseconds = images_per_second(data, batch_size, FLAGS.steps)
        rows.append({"dataset": name, "batch_size": batch_size, "images_per_second": round(rate),
                     "ms_per_step": round(milliseconds, 3)})
        print(f"{name:12s} batch {batch_size:4d}: {rate:12,.0f} images/s "
              f"({milliseconds:.2f} ms per step of 3 batches)")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "steps": FLAGS.steps, "rows": rows}
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output + ".tmp", "w") as file:
        json.dump(result, file, indent=2)
    os.replace(FLAGS.output + ".tmp", FLAGS.output)


if __name__ == "__main__":
    app.run(main)
