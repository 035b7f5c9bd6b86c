"""Why the GANs in Action baseline scores below the book's ~70% here.

    python experiments/gans_in_action_baseline_batchnorm.py --data_dir=../shared/data/mnist

Trains the preset's supervised-only baseline on the experiment's budget (the
first 100 labels, 30 epochs of 4 steps of 32; with ``model.fit`` and
TensorFlow's default CPU kernels, where the CLI picks Eigen's for this
preset, so not bit for bit the experiment's run), then scores the same
weights three ways: as exported (BatchNorm's moving statistics, momentum
0.99, after only 120 updates), with BatchNorm on batch statistics (training
mode, so dropout is on too), and with the moving statistics re-estimated on
the 100 labeled images (no weight changes).
"""

import numpy as np
from absl import app
from absl import flags

import keras
from sgan_keras import SGAN
from sgan_keras import data as data_lib

flags.DEFINE_string("data_dir", None, "Directory of mnist.npz.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and data order.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    data = data_lib.load_dataset("mnist", 100, seed=FLAGS.seed, data_dir=FLAGS.data_dir,
                                 label_selection="first")
    model = SGAN.from_preset("mnist_gans_in_action", seed=FLAGS.seed, supervised_only=True)
    model.compile()
    model.fit(data.supervised_dataset(32), steps_per_epoch=4, epochs=30, verbose=0)
    images, labels = data.scale(data.test_images).numpy(), data.test_labels

    def accuracy(logits):
        return float(np.mean(np.argmax(logits, -1) == labels))

    print(f"moving statistics (as exported): {accuracy(model.predict(images, batch_size=1000, verbose=0)):.4f}")
    batch_statistics = np.concatenate([model.discriminator(images[i:i + 1000], training=True)[0]
                                       for i in range(0, len(images), 1000)])
    print(f"batch statistics (training mode, dropout on): {accuracy(batch_statistics):.4f}")
    for layer in model.discriminator.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0          # the next pass sets the moving statistics
    model.discriminator(data.scale(data.train_images[data.labeled_indices]), training=True)
    print(f"moving statistics re-estimated on the labeled images: "
          f"{accuracy(model.predict(images, batch_size=1000, verbose=0)):.4f}")


if __name__ == "__main__":
    app.run(main)
