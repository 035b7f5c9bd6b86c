r"""Writes an image-folder data set made of real CIFAR-10 test images (PNG files).

    python experiments/cifar10_image_folder.py --data_dir=../shared/data/cifar10 \
        --output=/tmp/cifar10_folder

The layout ``python -m sgan_keras.train --dataset=folder:PATH`` reads:
``labeled/<class>/`` (``--labeled`` images per class), ``test/<class>/``
(``--test`` per class) and ``unlabeled/batch0..3/`` (``--unlabeled`` other
images, in nested folders as photos from several sources would be). It is
the README's "Your own images" walk-through and the CLI test's data set.
"""

import os

from absl import app
from absl import flags

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")


def write_folder(cifar10_dir, root, labeled=10, unlabeled=2000, test=20):
    """Writes the folder data set under ``root``; returns the class names."""
    import numpy as np
    import tensorflow as tf
    from sgan_keras import data as data_lib
    cifar = data_lib.load_dataset("cifar10", "all", data_dir=str(cifar10_dir))
    images, labels = cifar.test_images, cifar.test_labels
    used = []
    for k, name in enumerate(CLASS_NAMES):
        of_class = np.flatnonzero(labels == k)[:labeled + test]
        used.append(of_class)
        for split, picked in (("labeled", of_class[:labeled]), ("test", of_class[labeled:])):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for index in picked:
                with open(os.path.join(root, split, name, f"{index}.png"), "wb") as file:
                    file.write(tf.io.encode_png(images[index]).numpy())
    rest = np.setdiff1d(np.arange(len(labels)), np.concatenate(used))[:unlabeled]
    for index in rest:
        folder = os.path.join(root, "unlabeled", f"batch{index % 4}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{index}.png"), "wb") as file:
            file.write(tf.io.encode_png(images[index]).numpy())
    return CLASS_NAMES


def main(argv):
    del argv
    names = write_folder(FLAGS.data_dir, FLAGS.output, FLAGS.labeled, FLAGS.unlabeled,
                         FLAGS.test)
    print(f"Wrote {FLAGS.output}: {len(names)} classes, {FLAGS.labeled} labeled and "
          f"{FLAGS.test} test images each, {FLAGS.unlabeled} unlabeled images.")


if __name__ == "__main__":
    flags.DEFINE_string("data_dir", None, "CIFAR-10 directory (cifar-10-batches-bin/).")
    flags.DEFINE_string("output", None, "Where to write the folder data set.")
    flags.DEFINE_integer("labeled", 10, "Labeled images per class.")
    flags.DEFINE_integer("test", 20, "Test images per class.")
    flags.DEFINE_integer("unlabeled", 2000, "Unlabeled images.")
    flags.mark_flags_as_required(["data_dir", "output"])
    FLAGS = flags.FLAGS
    app.run(main)
