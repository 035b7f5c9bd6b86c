"""Datasets, label budgets and ``tf.data`` pipelines.

``choices.DATASETS`` describes each data set once: its image shape, class
count and split sizes. ``load_dataset(name, labels, seed=..., data_dir=...)`` reads MNIST, SVHN
(cropped digits) or CIFAR-10 from local files when ``data_dir`` holds them
(Keras ``mnist.npz``, MNIST IDX ``*-ubyte.gz``, SVHN ``*_32x32.mat``,
CIFAR-10's binary or python batches or their ``.tar.gz``), else from
TensorFlow Datasets; or a ``folder:PATH`` of images or any ``tfds:NAME``
image-classification set. It draws the label budget with a seed
(class-balanced, or a source's first N images) and returns a
:class:`SemiSupervisedData` with the training pipelines.

Pipelines batch *indices* and gather a whole batch of images at once, so
the images stay one uint8 array in memory and an element costs one gather
and one scaling. Element ``i`` of every training pipeline depends only on
``(seed, i)``: ``start_step`` resumes a run with exactly the batches it
would have seen.

Data orders (``TrainingConfig.data_order``): by default each stream is its
shuffles of its images joined end to end, cut into batches, whatever the epoch
(every image used, a batch may span two shuffles). With ``epoch_steps`` each
training epoch of that many steps takes its own shuffles and leaves out the
rest of the last one, as improved-gan's and Lecouat et al.'s scripts do (every
epoch reshuffles the unlabeled set and takes ``int(N / batch)`` batches of it;
the labeled set, tiled by fresh shuffles, is cut the same way) and the Udacity
SVHN notebook (a reshuffle every epoch). Where an epoch is a whole number of
shuffles of every stream (MNIST: 600 batches of 100, and 100 labels) the two
orders are the same. A third order, ``with_replacement``, draws every batch of
every stream uniformly with replacement, as GANs in Action's
``np.random.randint`` does; its batch ``i`` too depends only on ``(seed, i)``.
A fourth, ``partial_batches``, cuts each shuffle of one stream into
``ceil(N / batch)`` batches, the last one partial, as Keras'
``fit(shuffle=True)`` on arrays (GANs in Action's baseline: 32, 32, 32 and 4
of its 100 images) and the Udacity notebook's ``range(0, 73257, 128)`` (572
batches of 128 and one of 41); with several streams their last batches would
not line up, so only the masked and the supervised batches take it. A fifth,
``shuffle_buffer``, shuffles the images of each unlabeled (or masked) stream
once and reads them pass after pass through a buffer of that many, as
``tf.data``'s ``Dataset.shuffle`` does (:func:`buffer_order`), the passes
joined end to end, while the labeled stream's shuffles are joined as by
default: the MNIST blog's pipelines, which read D's and G's unlabeled images
each through ``.shuffle(4000)`` and its labels through a buffer that holds
them all.

The unlabeled batches come from the whole training split (labeled images
included), or with ``unlabeled_pool="unlabeled_only"`` from the images
outside the labeled set (GANs in Action's images 100..59,999).

Memory and the 2 GB limit: the images live in ONE non-trainable host
``tf.Variable`` per split, shared by every stream; the ``map`` functions
capture its resource handle, so the array is never a ``Const`` node of a
``GraphDef`` (the 2 GB protobuf limit) and tf.data's graph rewrites, which
run when each iterator is made, serialize a handle, not the pixels. A
captured ``tf.constant`` also works past 2 GB, but measured here it cost
about four copies of the array once an iterator existed, against one for
the variable. SVHN + extra is 1.9 GB; ``experiments/benchmark_input_pipeline.py
--large`` runs a 2.2 GB array (also checked under a two-device
``MirroredStrategy``).
"""

import dataclasses
import difflib
import functools
import gzip
import io
import os
import pickle
import stat
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import PIL.Image
import tensorflow as tf

from sgan_keras import faults
from sgan_keras.checks import is_integer
from sgan_keras.choices import DATASETS
from sgan_keras.choices import LABEL_SELECTIONS
from sgan_keras.choices import INPUT_PIXEL_RANGES
from sgan_keras.choices import TEST_BATCHES
from sgan_keras.choices import UNLABELED_POOLS
from sgan_keras.choices import is_custom
from sgan_keras.choices import unknown_dataset

_MNIST_IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_STREAM_LABELED, _STREAM_UNLABELED = 0, 1
_STREAM_MASKED = 3   # after the unlabeled streams 1 and 2
# CIFAR-10's official releases (https://www.cs.toronto.edu/~kriz/cifar.html):
# the binary version (records of 1 label byte + 3,072 pixel bytes, the R, G and
# B planes of 32x32 row-major) and the python version (pickled dicts with
# b"data" [N, 3072] uint8 in the same layout and b"labels"), as directories or
# as the archives they ship in.
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
_CIFAR10_LAYOUTS = (  # (directory, file suffix, archive)
    ("cifar-10-batches-bin", ".bin", "cifar-10-binary.tar.gz"),
    ("cifar-10-batches-py", "", "cifar-10-python.tar.gz"),
)
# Where Keras 3's cifar10.load_data() leaves the python version in its cache
# (~/.keras/datasets): get_file's directory named as its fname, which has no
# dot (get_file adds "_extracted" only to a name with one, cut at the dot).
_KERAS_CACHE_DIRECTORY = "cifar-10-batches-py-target"
_CIFAR10_PIXELS = int(np.prod(DATASETS["cifar10"].image_shape))   # 3,072 bytes
_CIFAR10_RECORD_BYTES = 1 + _CIFAR10_PIXELS
_DOWNLOAD_CHECK_SECONDS = 20


class DataError(ValueError):
    """Bad dataset argument or data file; the message is one line."""


def check_dataset_name(name):
    """Raises :class:`DataError` unless ``name`` is a built-in or a custom data set."""
    problem = unknown_dataset(name)
    if problem:
        raise DataError(problem)


@dataclasses.dataclass(frozen=True, eq=False)
class SemiSupervisedData:
    """A training split with a labeled subset, a test split and their pipelines."""

    name: str
    num_classes: int
    image_shape: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    labeled_indices: np.ndarray
    pixel_range: tuple
    seed: int
    class_names: tuple = ()   # class k's name (default: "0".."K-1")
    notes: tuple = ()         # lines the trainer reports (a held-out test set, skipped files)
    unlabeled_pool: str = "all"   # or "unlabeled_only" (UNLABELED_POOLS; the module docstring)

    def __post_init__(self):
        if not self.class_names:
            object.__setattr__(self, "class_names",
                               tuple(str(k) for k in range(self.num_classes)))
        _check_unlabeled_pool(self.unlabeled_pool)

    @functools.cached_property
    def unlabeled_indices(self):
        """The training images the unlabeled batches come from (``unlabeled_pool``)."""
        every = np.arange(len(self.train_images))
        if self.unlabeled_pool == "all":
            return every
        return np.setdiff1d(every, self.labeled_indices)

    def scale(self, images):
        """uint8 images -> float32 in ``pixel_range`` (x / 127.5 - 1 or x / 255; 255/256
        of either range for improved-gan's (x - 127.5) / 128 or x / 256)."""
        low, high = self.pixel_range
        return tf.cast(images, tf.float32) * ((high - low) / 255.0) + low

    @functools.cached_property
    def _train_tensors(self):
        """Training images (uint8) and labels (int32) on the host, made once
        and shared by every pipeline (see the module docstring)."""
        return _host_array(self.train_images), _host_array(self.train_labels.astype(np.int32))

    @functools.cached_property
    def _test_tensors(self):
        return _host_array(self.test_images), _host_array(self.test_labels.astype(np.int32))

    # -------------------------------------------------------------- training
    def labeled_dataset(self, batch_size, start_step=0, epoch_steps=0, with_replacement=False,
                        partial_batches=False):
        """Infinite shuffled labeled batches ``(images, labels)``.

        The labeled set is tiled so that every step has a full labeled batch
        even when the budget is smaller than the batch. ``epoch_steps``,
        ``with_replacement`` and ``partial_batches``: the data order (the
        module docstring); by default the shuffles are joined end to end,
        also in the ``shuffle_buffer`` order, as the MNIST blog's labeled
        pipeline, whose buffer holds every label.
        """
        return self._batches(self.labeled_indices, batch_size, _STREAM_LABELED, start_step,
                             epoch_steps, with_replacement, with_labels=True,
                             partial_batches=partial_batches)

    def unlabeled_dataset(self, batch_size, stream=0, start_step=0, epoch_steps=0,
                          with_replacement=False, shuffle_buffer=0):
        """Infinite shuffled batches of the ``unlabeled_pool``'s images;
        streams 0 (D step) and 1 (G step) are shuffled independently."""
        if stream not in (0, 1):
            raise DataError(f"stream must be 0 or 1, got {stream!r}")
        if not len(self.unlabeled_indices):
            raise DataError("unlabeled_pool='unlabeled_only' leaves no unlabeled image: every "
                            "training image is labeled")
        return self._batches(self.unlabeled_indices, batch_size, _STREAM_UNLABELED + stream,
                             start_step, epoch_steps, with_replacement,
                             shuffle_buffer=shuffle_buffer)

    def train_dataset(self, batch_size, start_step=0, epoch_steps=0, with_replacement=False,
                      partial_batches=False, shuffle_buffer=0):
        """Dicts of a labeled batch and two unlabeled batches (D step, G step).

        Infinite, prefetched; element ``i`` depends only on ``(seed, i)``.
        Its three streams' shuffles differ in length, so it refuses
        ``partial_batches``, whose last batches would not line up.
        """
        if partial_batches:
            raise DataError("partial_batches cuts each shuffle of one stream: a labeled batch "
                            "beside the unlabeled ones has three; use the masked or the "
                            "supervised batches")
        order = (start_step, epoch_steps, with_replacement)
        batches = tf.data.Dataset.zip((
            self.labeled_dataset(batch_size, *order),
            self.unlabeled_dataset(batch_size, 0, *order, shuffle_buffer=shuffle_buffer),
            self.unlabeled_dataset(batch_size, 1, *order, shuffle_buffer=shuffle_buffer)))
        return _pipeline_options(batches.map(
            _as_written(lambda labeled, unlabeled, generator: {
                "labeled_images": labeled[0], "labels": labeled[1],
                "unlabeled_images": unlabeled, "generator_images": generator}),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        ).prefetch(tf.data.AUTOTUNE))

    def masked_dataset(self, batch_size, start_step=0, epoch_steps=0, with_replacement=False,
                       partial_batches=False, shuffle_buffer=0):
        """Batches of the whole training split with a label mask (the Udacity
        SVHN notebook's scheme): dicts of ``images``, ``labels`` and
        ``label_mask`` (1 for the images of the labeled set, else 0; their
        labels are then not to be used). Infinite, prefetched; element ``i``
        depends only on ``(seed, i)``."""
        is_labeled = np.zeros(len(self.train_images), np.float32)
        is_labeled[self.labeled_indices] = 1.0
        mask = tf.constant(is_labeled)
        batches = self._batches(np.arange(len(self.train_images)), batch_size, _STREAM_MASKED,
                                start_step, epoch_steps, with_replacement, with_labels=True,
                                with_indices=True, partial_batches=partial_batches,
                                shuffle_buffer=shuffle_buffer)
        return _pipeline_options(batches.map(
            _as_written(lambda images, labels, picked: {"images": images, "labels": labels,
                                                        "label_mask": tf.gather(mask, picked)}),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        ).prefetch(tf.data.AUTOTUNE))

    def training_dataset(self, batch_size, label_batching="separate", supervised_only=False,
                         start_step=0, epoch_steps=0, with_replacement=False,
                         partial_batches=False, shuffle_buffer=0):
        """The batches a configuration trains on (``TrainingConfig.label_batching``,
        ``Config.supervised_only``): ``supervised_dataset`` for a supervised-only
        run, ``masked_dataset`` for ``"masked"``, else ``train_dataset``.

        The CLI and the benchmarks both call this, so a benchmark times the
        step a preset trains with (two D batches a step with masked batching,
        three with separate). ``epoch_steps``, ``with_replacement``,
        ``partial_batches`` and ``shuffle_buffer``: the data order (the module
        docstring).
        """
        order = (start_step, epoch_steps, with_replacement, partial_batches, shuffle_buffer)
        if supervised_only:
            return self.supervised_dataset(batch_size, *order)
        if label_batching == "masked":
            if self.unlabeled_pool != "all":
                raise DataError("masked batches are drawn from the whole training split: "
                                "unlabeled_pool must be 'all'")
            return self.masked_dataset(batch_size, *order)
        if label_batching != "separate":
            raise DataError(f"label_batching must be 'separate' or 'masked', "
                            f"got {label_batching!r}")
        return self.train_dataset(batch_size, *order)

    def supervised_dataset(self, batch_size, start_step=0, epoch_steps=0,
                           with_replacement=False, partial_batches=False, shuffle_buffer=0):
        """Labeled batches only (the supervised-only baseline), prefetched;
        the same labeled batches as ``train_dataset``'s at every step (with
        ``shuffle_buffer`` too: the labeled stream's shuffles are joined)."""
        _check_non_negative("shuffle_buffer", shuffle_buffer)
        return _pipeline_options(
            self.labeled_dataset(batch_size, start_step, epoch_steps, with_replacement,
                                 partial_batches)
            .prefetch(tf.data.AUTOTUNE))

    def init_batch(self, count, source="unlabeled"):
        """A batch for the weight-norm data-dependent init: ``count`` training
        images drawn with the seed from every image (``unlabeled``) or from the
        labeled ones (``labeled``; tiled if fewer), as ``{"unlabeled_images": ...}``.

        improved-gan initializes on 500 images: 500 random training images
        in its MNIST script, the first 500 of its shuffled labeled set in its
        SVHN and CIFAR-10 scripts (``init_param(trainx[:500])``).
        """
        if source not in ("unlabeled", "labeled"):
            raise DataError(f"init source must be 'unlabeled' or 'labeled', got {source!r}")
        _check_batch_size(count, "count")
        pool = self.labeled_indices if source == "labeled" else np.arange(len(self.train_images))
        picked = np.resize(np.random.default_rng([self.seed, 7]).permutation(pool), count)
        return {"unlabeled_images": self.scale(self.train_images[picked])}

    def test_dataset(self, batch_size, order="all", source_batch=0, evaluation=0):
        """The test images an evaluation scores, batched by ``batch_size``:
        ``(images, labels)``, or ``(images, labels, weights)`` for ``stream``.

        ``order`` (``TEST_BATCHES``): ``all``, the ``N`` test images in order,
        the last batch partial. ``reshuffled_full``: ``int(N / source_batch)``
        batches of ``source_batch`` of a fresh reshuffle, the rest left out,
        as Lecouat et al.'s ``train_svhn.py`` (a permutation of the test set
        every epoch, ``int(26032 / 50)`` batches). ``stream``: the next
        ``int(N / source_batch)`` batches of a repeating stream of the test
        set in batches of ``source_batch``, the last of each pass partial, as
        the MNIST blog's ``.batch(32).repeat()`` read 312 batches at a time;
        weighted so that the scores are the mean of those batches' scores,
        as the blog's mean of its batch accuracies (an image of a partial
        batch weighs more; each evaluation pads its batches' missing places
        with weight 0, so that every one has ``int(N / source_batch) x
        source_batch`` places). The reshuffle, or where the stream stands, is
        evaluation ``evaluation``'s: an int or a scalar int64 ``tf.Variable``
        (the trainer sets it to the epoch), read each time the dataset is
        iterated.
        """
        _check_batch_size(batch_size)
        if order not in TEST_BATCHES:
            raise DataError(f"order must be one of {', '.join(TEST_BATCHES)}, got {order!r}")
        images, labels = self._test_tensors
        total = len(self.test_images)
        count = total
        if order != "all":
            _check_batch_size(source_batch, "source_batch")
            per_evaluation = total // source_batch
            count = per_evaluation * source_batch
            if count == 0:
                raise DataError(f"{total} test images make no batch of {source_batch}")

        def evaluation_index():   # read when the dataset is iterated
            return tf.cast(evaluation, tf.int64)

        @_as_written
        def reshuffled(_):
            seed = tf.random.experimental.stateless_fold_in(
                tf.constant([self.seed, 11], tf.int64), evaluation_index())
            shuffled = tf.random.experimental.stateless_shuffle(
                tf.range(total, dtype=tf.int64), seed)
            return tf.data.Dataset.from_tensor_slices(shuffled[:count])

        @_as_written
        def streamed(_):
            # Batch j of the stream is batch j mod ceil(N / b) of the test set.
            batches = (evaluation_index() * per_evaluation
                       + tf.range(per_evaluation, dtype=tf.int64)) % -(-total // source_batch)
            places = batches[:, None] * source_batch + tf.range(source_batch, dtype=tf.int64)
            sizes = tf.minimum(tf.constant(source_batch, tf.int64), total - batches * source_batch)
            present = places < total
            weights = tf.where(present, source_batch / tf.cast(sizes, tf.float32)[:, None], 0.0)
            return tf.data.Dataset.from_tensor_slices(
                (tf.reshape(tf.where(present, places, 0), [-1]), tf.reshape(weights, [-1])))

        if order == "all":
            indices = tf.data.Dataset.range(count)
        else:   # drawn when iterated: once an evaluation
            indices = tf.data.Dataset.range(1).flat_map(
                reshuffled if order == "reshuffled_full" else streamed)
        batches = indices.batch(batch_size).apply(
            tf.data.experimental.assert_cardinality(-(-count // batch_size)))

        @_as_written
        def gather(index, *weights):
            return (self.scale(tf.gather(images, index)), tf.gather(labels, index), *weights)

        return _pipeline_options(batches.map(
            gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        ).prefetch(tf.data.AUTOTUNE))

    def _batches(self, indices, batch_size, stream, start_step, epoch_steps=0,
                 with_replacement=False, with_labels=False, with_indices=False,
                 partial_batches=False, shuffle_buffer=0):
        """Shuffles of ``indices`` (the ``p``-th from the seed ``[seed, stream +
        1000 p]``), cut into batches of ``batch_size``.

        ``epoch_steps`` 0: the shuffles joined end to end. Else epoch ``e``
        (``epoch_steps`` batches) takes the next ``ceil(epoch_steps x
        batch_size / len(indices))`` shuffles and leaves out what is left of
        the last one. ``start_step`` jumps to its shuffle (its epoch) and
        drops the indices before it (a slice): no batch is gathered twice.
        ``with_replacement``: batch ``i`` is instead ``batch_size`` uniform
        draws of ``indices`` from the seed ``[seed, stream + 1000 i + 500]``.
        ``partial_batches``: each shuffle is cut into ``ceil(len(indices) /
        batch_size)`` batches, its last one partial, and the next shuffle
        starts a new batch (the batches' size is then unknown when traced).
        ``shuffle_buffer``: the shuffles are instead passes over one shuffle of
        ``indices`` (seed ``[seed, stream - 1000]``) through a buffer of that
        many (:func:`buffer_order`, pass ``p`` from the seeds ``[seed, stream +
        1000 p]`` and ``[seed, stream + 1000 p + 250]``), joined end to end.
        Batches are gathered and scaled whole after batching the indices.
        """
        _check_batch_size(batch_size)
        for name, value in (("start_step", start_step), ("epoch_steps", epoch_steps),
                            ("shuffle_buffer", shuffle_buffer)):
            _check_non_negative(name, value)
        if sum(map(bool, (epoch_steps, with_replacement, partial_batches, shuffle_buffer))) > 1:
            raise DataError("epoch_steps, with_replacement, partial_batches and shuffle_buffer "
                            "are four data orders: give one")
        count = len(indices)
        indices = tf.constant(indices, tf.int64)
        seed = tf.constant([self.seed, stream], tf.int64)
        images, labels = self._train_tensors

        @_as_written
        def gather(picked):
            batch = self.scale(tf.gather(images, picked))
            if not with_labels:
                return batch
            batch = (batch, tf.gather(labels, picked))
            return batch + (picked,) if with_indices else batch

        if with_replacement:   # one map: draw a step's indices and gather them
            @_as_written
            def draw(step):
                drawn = tf.random.stateless_uniform(
                    [batch_size], seed + tf.stack([0, step * 1000 + 500]), minval=0,
                    maxval=count, dtype=tf.int64)
                return gather(tf.gather(indices, drawn))

            return (tf.data.Dataset.counter(start=int(start_step))
                    .map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

        if shuffle_buffer:   # the one shuffle the buffer reads, pass after pass
            once = tf.gather(indices, tf.argsort(
                tf.random.stateless_uniform([count], seed - tf.constant([0, 1000], tf.int64))))

        @_as_written
        def shuffle(number):
            # Seed [seed, stream + 1000 * number]: streams 0..3 never collide.
            number_seed = seed + tf.stack([0, number * 1000])
            if shuffle_buffer:
                order = tf.gather(once, buffer_order(count, shuffle_buffer, number_seed,
                                                     number_seed + tf.constant([0, 250], tf.int64)))
            else:
                order = tf.gather(indices, tf.argsort(
                    tf.random.stateless_uniform([count], number_seed)))
            return tf.data.Dataset.from_tensor_slices(order)

        if partial_batches:   # shuffle p is batches [p * per_shuffle, (p + 1) * per_shuffle)
            first, skipped = divmod(int(start_step), -(-count // batch_size))

            @_as_written
            def batched_shuffle(number):
                return shuffle(number).batch(batch_size).skip(
                    tf.where(number == first, tf.constant(skipped, tf.int64), 0))

            return (tf.data.Dataset.counter(start=first).flat_map(batched_shuffle)
                    .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

        # The run's parts: its epochs (per_epoch), else its shuffles. ``first``
        # is the part ``start_step`` falls in, ``offset`` its indices before it.
        if epoch_steps:
            part_size = int(epoch_steps) * batch_size
            shuffles = -(-part_size // count)
            first, offset = divmod(int(start_step), int(epoch_steps))
            offset *= batch_size
        else:
            first, offset = divmod(int(start_step) * batch_size, count)

        @_as_written
        def part(number):
            taken = (tf.data.Dataset.range(number * shuffles, (number + 1) * shuffles)
                     .flat_map(shuffle).take(part_size) if epoch_steps else shuffle(number))
            return taken.skip(tf.where(number == first, tf.constant(offset, tf.int64), 0))

        return (tf.data.Dataset.counter(start=first)
                .flat_map(part)
                .batch(batch_size, drop_remainder=True)
                .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def buffer_order(count, buffer_size, slot_seed, drain_seed):
    """The order in which ``tf.data``'s ``Dataset.shuffle(buffer_size)`` reads
    ``count`` items: positions ``[count]`` (int64) into its input.

    The buffer first holds items ``0 .. B - 1`` (``B = min(buffer_size,
    count)``). Each of the next ``count - B`` steps takes the item of a
    uniformly drawn slot (seed ``slot_seed``) and puts the next input item in
    its place; then the ``B`` items left come out in a uniform order (seed
    ``drain_seed``). So item ``i >= B`` comes out at step ``i - B + 1`` or
    later, and ``count <= buffer_size`` is a uniform shuffle. ``tf.data``
    keeps its buffer in another layout with its own generator: the same
    distribution of orders, other numbers. Vectorized: step ``t`` takes the
    item its slot last received, ``B + s`` for the latest step ``s < t``
    that drew the same slot, else the slot's first item.
    """
    buffered = min(int(buffer_size), int(count))
    steps = int(count) - buffered
    left = tf.range(buffered, dtype=tf.int64)           # the slots' first items
    taken = tf.zeros([0], tf.int64)
    if steps:
        step = tf.range(steps, dtype=tf.int64)
        slot = tf.random.stateless_uniform([steps], slot_seed, minval=0, maxval=buffered,
                                           dtype=tf.int64)
        by_slot = tf.cast(tf.argsort(slot * steps + step), tf.int64)   # each slot's steps
        sorted_slot = tf.gather(slot, by_slot)
        same_slot = tf.concat([[False], sorted_slot[1:] == sorted_slot[:-1]], axis=0)
        previous = tf.where(same_slot, tf.concat([[-1], by_slot[:-1]], axis=0),
                            tf.constant(-1, tf.int64))
        previous = tf.scatter_nd(by_slot[:, None], previous, [steps])   # per step
        taken = tf.where(previous >= 0, buffered + previous, slot)
        last = tf.math.unsorted_segment_max(step, slot, buffered)  # < 0: never drawn
        left = tf.where(last >= 0, buffered + last, left)
    drained = tf.gather(left, tf.argsort(tf.random.stateless_uniform([buffered], drain_seed)))
    return tf.concat([taken, drained], axis=0)


def _check_non_negative(name, value):
    if not is_integer(value) or value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")


def _check_unlabeled_pool(unlabeled_pool):
    if unlabeled_pool not in UNLABELED_POOLS:
        raise DataError(f"unlabeled_pool must be one of {', '.join(UNLABELED_POOLS)}, "
                        f"got {unlabeled_pool!r}")


def _host_array(array):
    """``array`` as a non-trainable ``tf.Variable`` on the CPU.

    Inside a ``tf.distribute`` strategy scope a variable would be mirrored
    onto every device, so there it is a host ``tf.constant`` instead.
    """
    with tf.device("/cpu:0"):
        if tf.distribute.has_strategy():
            return tf.constant(array)
        return tf.Variable(array, trainable=False)


def _check_batch_size(batch_size, name="batch_size"):
    """``name``: the argument the line names (``init_batch``'s is ``count``)."""
    if not is_integer(batch_size) or batch_size <= 0:
        raise DataError(f"{name} must be a positive integer, got {batch_size!r}")


def _as_written(function):
    """``function`` traced as written, without AutoGraph's rewrite.

    tf.data converts every ``map`` function with AutoGraph (Python ``if`` and
    ``for`` on tensors into graph control flow); these branch on Python
    values only, so the rewrite changes nothing but costs its time, in every
    process that builds a pipeline.
    """
    return tf.autograph.experimental.do_not_convert(function)


def _pipeline_options(dataset):
    """Pins the options of every pipeline of this module.

    ``deterministic``: element order never depends on thread timing.
    ``autotune.enabled = False``: ``AUTOTUNE`` parallelism and prefetch fall
    back to their static defaults (one call per core, a self-sizing prefetch
    buffer). With model-based autotuning on, a fresh iterator (every
    ``fit()`` call makes one) ran the SVHN DCGAN step at 343 ms instead of
    215 ms in about half of the trials on 2 CPU cores; off, it never did
    (``experiments/results/benchmark_pipeline_options.md``). This pipeline
    only gathers whole batches from memory: it needs no tuning.
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return dataset.with_options(options)


def load_dataset(name, labels, *, seed=0, data_dir=None, pixel_range=(-1.0, 1.0),
                 include_extra=False, label_selection="balanced", image_shape=None,
                 convert_channels=False, train_split="train", test_split="test",
                 unlabeled_pool="all", test_fraction=1.0):
    """Loads ``name`` with a budget of ``labels`` labels.

    Args:
      name: ``mnist``, ``svhn`` or ``cifar10``; or the user's: ``folder:PATH``
        (:func:`read_image_folder`) or ``tfds:NAME[/config]`` (any TFDS
        image-classification set, :func:`read_tfds_images`, its
        ``train_split`` and ``test_split``), whose images are decoded to
        ``image_shape`` (the model's), converting colour to grayscale or back
        only with ``convert_channels``.
      labels: the total label budget, or ``"all"`` (also ``None``) for every
        training label.
      label_selection: ``balanced``: ``labels / K`` per class (K classes), drawn with
        ``seed`` (Salimans et al., the MNIST blog); ``first``: the first
        ``labels`` images of the training split in file order, whatever their
        classes (GANs in Action; the Udacity SVHN notebook). A ``folder:``
        set, read class by class, has no such order: ``balanced`` there.
      seed: seed of the label draw and of the data order.
      data_dir: a directory with local files or prepared TFDS data; ``None``
        downloads with TFDS.
      pixel_range: ``(-1, 1)`` for tanh generators, ``(0, 1)`` for sigmoid ones,
        or 255/256 of either for improved-gan's scaling (a model's
        ``input_pixel_range``, ``--pixel_scale=256``).
      include_extra: SVHN only: add the ``extra`` split to the unlabeled data.
      unlabeled_pool: ``all`` (the whole training split) or ``unlabeled_only``
        (the images outside the labeled set) for the unlabeled batches.
      test_fraction: test on the first ``int(N x test_fraction)`` of the test
        split's ``N`` images (the Udacity notebook's ``Dataset(val_frac=0.5)``:
        the first half); 1 tests on all of them.
    """
    check_dataset_name(name)
    _check_seed(seed)
    pixel_range = _pixel_range(pixel_range)
    if include_extra and name != "svhn":
        raise DataError("include_extra applies to svhn only")
    budget = _check_budget(labels)
    if label_selection not in LABEL_SELECTIONS:
        raise DataError(f"label_selection must be one of {', '.join(LABEL_SELECTIONS)}, "
                        f"got {label_selection!r}")
    _check_unlabeled_pool(unlabeled_pool)   # before any file is read
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction <= 1:
        raise DataError(f"test_fraction must be in (0, 1], got {test_fraction!r}")
    check_paths(name, data_dir)
    if is_custom(name):
        data = _load_custom(name, budget, seed=seed, data_dir=data_dir, pixel_range=pixel_range,
                            label_selection=label_selection, image_shape=image_shape,
                            convert_channels=convert_channels, train_split=train_split,
                            test_split=test_split)
        return _tested_on(dataclasses.replace(data, unlabeled_pool=unlabeled_pool), test_fraction)
    splits = _read_local(name, data_dir, include_extra) if data_dir else None
    notes = []
    if splits is None:
        splits = _read_tfds(name, data_dir, include_extra)
        if label_selection == "first" and budget is not None:
            # TFDS stores a set's examples shuffled (by key), so its first
            # images are not the original files' first, which the sources take.
            notes.append(f"--label_selection=first takes the first {budget} {name} training "
                         "images in TFDS' order, not the original files' order the sources "
                         f"use; for their labeled set pass --data_dir with {_expected_files(name)}")
    (train_images, train_labels, labeled_pool), (split_images, test_labels) = splits
    for split, images, split_labels in (("train", train_images, train_labels),
                                        ("test", split_images, test_labels)):
        _check_arrays(name, split, images, split_labels)
    labeled_indices = select_labeled_indices(
        train_labels[:labeled_pool], budget, seed, label_selection,
        num_classes=DATASETS[name].num_classes, pool_name="training images")
    return _tested_on(SemiSupervisedData(
        name=name, num_classes=DATASETS[name].num_classes, image_shape=DATASETS[name].image_shape,
        train_images=train_images, train_labels=train_labels, test_images=split_images,
        test_labels=test_labels, labeled_indices=labeled_indices, pixel_range=pixel_range,
        seed=int(seed), class_names=DATASETS[name].class_names, notes=tuple(notes),
        unlabeled_pool=unlabeled_pool), test_fraction)


def _tested_on(data, test_fraction):
    """``data`` with the first ``int(N x test_fraction)`` of its ``N`` test
    images alone (at least one)."""
    if test_fraction == 1:
        return data
    count = max(1, int(len(data.test_images) * test_fraction))
    return dataclasses.replace(
        data, test_images=data.test_images[:count], test_labels=data.test_labels[:count],
        notes=data.notes + (f"Testing on the first {count:,} of the {len(data.test_images):,} "
                            f"test images (--test_fraction={test_fraction:g}).",))


def synthetic_dataset(name, labels, *, train_size=10000, seed=0, pixel_range=(-1.0, 1.0)):
    """Random uint8 images of data set ``name``'s shape, ``labels`` of them
    labeled (class-balanced), as a :class:`SemiSupervisedData`; the test split
    is the first 100 training images.

    A training step costs the same whatever the pixels, so the benchmarks
    (``experiments/``) measure on this and need no download.
    """
    info = DATASETS[name]
    rng = np.random.default_rng(seed)
    train_labels = np.arange(train_size) % info.num_classes
    images = rng.integers(0, 256, size=(train_size, *info.image_shape), dtype=np.uint8)
    return SemiSupervisedData(
        name=name, num_classes=info.num_classes, image_shape=info.image_shape,
        train_images=images, train_labels=train_labels, test_images=images[:100],
        test_labels=train_labels[:100],
        labeled_indices=draw_labeled_indices(train_labels, labels, seed, info.num_classes),
        pixel_range=tuple(pixel_range), seed=seed)


def check_paths(name, data_dir):
    """A :class:`DataError` for a ``data_dir``, or a ``folder:PATH`` data set's
    folder, that is not a directory. The trainer checks them before it touches
    the output directory: a mistyped path with ``--overwrite`` removed the
    earlier run, then stopped at the data."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is a file: pass the directory that holds it"
                        if os.path.exists(data_dir) else f"data_dir {data_dir} does not exist")
    if is_custom(name) and name.startswith("folder:"):
        path = name.split(":", 1)[1]
        if not os.path.isdir(path):
            raise DataError(f"folder {path} does not exist; expected {path}/labeled/<class>/*, "
                            f"{path}/unlabeled/** and optionally {path}/test/<class>/*")


def _load_custom(name, budget, *, seed, data_dir, pixel_range, label_selection, image_shape,
                 convert_channels, train_split, test_split):
    """A ``folder:`` or ``tfds:`` data set as :class:`SemiSupervisedData`."""
    if image_shape is None:
        raise DataError(f"{name} needs the model's image_shape")
    kind, source = name.split(":", 1)
    notes = []
    if kind == "folder":
        folder = read_image_folder(source, image_shape, convert_channels=convert_channels,
                                   seed=seed)
        class_names = folder.class_names
        # The labeled images first (the pool labels are drawn from), then the unlabeled
        # ones, whose labels are unknown: 0 stands in for them and is never read.
        train_images = np.concatenate([folder.labeled_images, folder.unlabeled_images])
        train_labels = np.concatenate([folder.labeled_labels,
                                       np.zeros(len(folder.unlabeled_images), np.int64)])
        pool = len(folder.labeled_labels)
        test_images, test_labels = folder.test_images, folder.test_labels
        if folder.test_held_out:
            notes.append(f"{source} has no test/ folder: {len(test_labels)} of its labeled "
                         f"images ({FOLDER_TEST_FRACTION:.0%} of each class, drawn with the "
                         "seed) are held out as the test set.")
        if folder.skipped:
            # A UTF-8 name under an ASCII file-name encoding is skipped too: the hint.
            hint = ("" if all(faults.is_utf8(os.fspath(path)) for path in folder.skipped)
                    else faults.file_name_encoding_hint())
            notes.append(f"Skipped {len(folder.skipped)} unreadable image file(s) in {source} "
                         f"(not an image, or a name that is not UTF-8{hint}), e.g. "
                         f"{faults.printable(folder.skipped[0])}.")
        if label_selection == "first" and budget is not None:
            # Read class by class, its first images would all be the first class's.
            label_selection = "balanced"
            notes.append(f"{source} has no image order across its classes: the {budget} "
                         "labels are a class-balanced draw with the seed "
                         "(--label_selection=balanced), not the first images.")
    else:
        read = read_tfds_images(source, image_shape, data_dir=data_dir, train_split=train_split,
                                test_split=test_split, convert_channels=convert_channels)
        class_names = read.class_names
        train_images, train_labels = read.train_images, read.train_labels
        pool = len(train_labels)
        test_images, test_labels = read.test_images, read.test_labels
        for split, labels in ((train_split, train_labels), (test_split, test_labels)):
            outside = labels[(labels < 0) | (labels >= len(class_names))]
            if outside.size:   # e.g. stl10's "unlabelled" split: label -1
                raise DataError(f"{source} split {split!r} holds {outside.size} examples "
                                f"labeled {int(outside[0])}, outside its {len(class_names)} "
                                "classes; train and test on labeled splits (every training "
                                "image also serves as unlabeled)")
    num_classes = len(class_names)
    labeled_indices = select_labeled_indices(
        train_labels[:pool], budget, seed, label_selection, num_classes=num_classes,
        pool_name=f"labeled images of {name}", where=name)
    return SemiSupervisedData(
        name=name, num_classes=num_classes, image_shape=tuple(image_shape),
        train_images=train_images, train_labels=train_labels, test_images=test_images,
        test_labels=test_labels, labeled_indices=labeled_indices, pixel_range=pixel_range,
        seed=int(seed), class_names=tuple(class_names), notes=tuple(notes))


def select_labeled_indices(labels, budget, seed, label_selection, num_classes,
                           pool_name, where=None):
    """The labeled set out of ``labels`` (the pool labels may come from):
    the first ``budget`` (``label_selection="first"``, GANs in Action) or a
    class-balanced seeded draw (:func:`draw_labeled_indices`)."""
    if label_selection == "first" and budget is not None:
        if budget > len(labels):
            raise DataError(f"labels={budget} exceeds the {len(labels)} {pool_name}")
        return np.arange(budget, dtype=np.int64)
    return draw_labeled_indices(labels, budget, seed, num_classes=num_classes, where=where)


def draw_labeled_indices(labels, budget, seed, num_classes=10, where=None):
    """``budget / num_classes`` indices per class, drawn with ``seed`` (sorted).

    ``np.random.default_rng`` (PCG64) gives the same draw on every machine.
    ``budget=None`` means every index. ``where`` names the data set in errors.
    """
    if budget is None:
        return np.arange(len(labels), dtype=np.int64)
    of = f" of {where}" if where else ""
    if budget % num_classes:
        raise DataError(f"labels={budget} must be a multiple of the {num_classes} classes{of}")
    per_class = budget // num_classes
    counts = np.bincount(labels, minlength=num_classes)
    if per_class > counts.min():
        raise DataError(f"labels={budget} asks for {per_class} per class, but the smallest "
                        f"class{of} has {counts.min()} labeled training images")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == k), per_class, replace=False)
              for k in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_seed(seed):
    """The seeds NumPy takes and ``--seed`` allows: an integer in 0..2**32 - 1."""
    if not is_integer(seed) or not 0 <= seed < 2**32:
        raise DataError(f"seed must be an integer in 0..2**32 - 1, got {seed!r}")


def _pixel_range(pixel_range):
    """``pixel_range`` as a pair of floats of ``INPUT_PIXEL_RANGES``, or a DataError."""
    try:
        as_floats = None if isinstance(pixel_range, str) else tuple(float(x) for x in pixel_range)
    except (TypeError, ValueError):
        as_floats = None
    if as_floats not in INPUT_PIXEL_RANGES:
        raise DataError(f"pixel_range must be (-1, 1) or (0, 1), or 255/256 of either "
                        f"(choices.input_pixel_range), got {pixel_range!r}")
    return as_floats


def _check_budget(labels):
    if labels is None or (isinstance(labels, str) and labels.lower() == "all"):
        return None
    if not is_integer(labels):
        raise DataError(f"labels must be a positive integer or 'all', got {labels!r}")
    if labels <= 0:
        raise DataError(f"labels must be a positive integer or 'all', got {labels}")
    return int(labels)


def _check_arrays(name, split, images, labels, source=None):
    """A :class:`DataError` for images or labels unlike ``name``'s; ``source``
    (the file they were read from) starts its message."""
    shape, num_classes = DATASETS[name].image_shape, DATASETS[name].num_classes
    where = f"{source}: {name} {split}" if source else f"{name} {split}"
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise DataError(f"{where} images must be uint8 of shape [N, "
                        f"{', '.join(map(str, shape))}], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"{where} labels must have shape [{len(images)}], got {labels.shape}")
    if not len(images):
        raise DataError(f"{where} holds no images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where} labels must be in 0..{num_classes - 1}, "
                        f"got {labels.min()}..{labels.max()}")


# ------------------------------------------------------------------ sources
def _read_local(name, data_dir, include_extra):
    """Local files in ``data_dir``, or ``None`` if it holds none of ours. Some
    of a format's files but not all: a :class:`DataError` naming the missing.
    Local files come before a TFDS copy in the same directory, so an error
    here says so when there is one (a stray file hides it)."""
    try:
        return _read_local_files(name, data_dir, include_extra)
    except DataError as error:
        tfds_copy = os.path.join(data_dir, DATASETS[name].tfds_name)
        if not os.path.isdir(tfds_copy):
            raise
        raise DataError(f"{error}; data_dir also holds TFDS' {tfds_copy}, which is read "
                        f"only when there are no local {name} files: move those away to "
                        "use it") from None


def _read_local_files(name, data_dir, include_extra):
    # lexists: a broken link to a data file is reported by name, not taken as no file.
    has = lambda file: os.path.lexists(os.path.join(data_dir, file))  # noqa: E731
    if name == "mnist":
        if has("mnist.npz"):
            return _read_mnist_npz(os.path.join(data_dir, "mnist.npz"))
        if any(has(file) or has(file[:-len(".gz")])
               for file in _MNIST_IDX["train"] + _MNIST_IDX["test"]):
            return _read_mnist_idx(data_dir)
    if name == "svhn" and any(has(f"{split}_32x32.mat") for split in ("train", "test", "extra")):
        return _read_svhn_mat(data_dir, include_extra)
    if name == "cifar10":
        return _read_cifar10(data_dir)
    return None


def _with_pool(train, test):
    """Adds the labeled pool size (the whole training split here)."""
    (images, labels), test = train, test
    return (images, labels, len(labels)), test


def check_regular_file(path, error=DataError):
    """Raises ``error`` naming ``path`` unless it is a regular file (or a link
    to one): opening a named pipe would wait for a writer without end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as problem:
        if os.path.islink(path):
            raise error(f"{path} is a broken symbolic link (to {os.readlink(path)}: "
                        f"{problem.strerror})") from None
        raise error(f"{path} cannot be read ({problem.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe"
                if stat.S_ISFIFO(mode) else "a socket or device")
        raise error(f"{path} is {kind}, not a regular file")


def _read_mnist_npz(path):
    check_regular_file(path)
    try:
        loaded = np.load(path)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds one array (a .npy file), not a .npz archive of "
                            "x_train, y_train, x_test, y_test")
        with loaded as archive:
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as error:
        raise DataError(f"{path} lacks the array {error}; expected x_train, y_train, "
                        "x_test, y_test") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path} is not a readable .npz file ({_reason(error)})") from None
    to_images = lambda x: x[..., None] if x.ndim == 3 else x  # noqa: E731
    splits = [(to_images(_integer_pixels(arrays[f"x_{split}"], f"{path} x_{split}")),
               _integer_labels(arrays[f"y_{split}"], f"{path} y_{split}"))
              for split in ("train", "test")]
    for split, (images, labels) in zip(("train", "test"), splits):
        _check_arrays("mnist", split, images, labels, source=path)
    return _with_pool(*splits)


def _integer_pixels(images, where):
    """``images`` as uint8 if they are integers of another type (an array a
    user saved as int64, say) within 0..255; else unchanged, for
    :func:`_check_arrays` to judge. Out of range: a :class:`DataError`."""
    if not np.issubdtype(images.dtype, np.integer) or images.dtype == np.uint8:
        return images
    if images.size and (images.min() < 0 or images.max() > 255):
        raise DataError(f"{where}: pixels must be in 0..255, got {images.min()}..{images.max()}")
    return images.astype(np.uint8)


def _integer_labels(labels, where):
    """``labels`` as int64, if every value is a whole number (MATLAB files
    store SVHN's ``y`` as double); else a :class:`DataError`."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating):
        with np.errstate(invalid="ignore"):   # NaN and inf: not whole, and no RuntimeWarning
            fraction = labels[~(np.mod(labels, 1) == 0)]
        if fraction.size:
            raise DataError(f"{where}: labels must be whole numbers, got {fraction[0]} "
                            f"(dtype {labels.dtype})")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be whole numbers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < -2**63 or labels.max() >= 2**63):
        # The cast would wrap them (2**64 - 1 to -1): the range check would name
        # labels the file does not hold.
        raise DataError(f"{where}: labels must be class numbers, got "
                        f"{labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _read_idx(path, magic, item_shape):
    """An IDX file, gzipped (``.gz``, as downloaded) or not (as unpacked)."""
    check_regular_file(path)
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError, zlib.error) as error:
        kind = "gzip file" if path.endswith(".gz") else "file"
        raise DataError(f"{path} is not a readable {kind} ({_reason(error)})") from None
    header = 8 if magic == 2049 else 16
    if len(content) < header or struct.unpack(">I", content[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file (magic number {magic} expected)")
    count = struct.unpack(">I", content[4:8])[0]
    if magic == 2051 and struct.unpack(">II", content[8:16]) != tuple(item_shape):
        # Before the size check: other images are not a truncated file.
        raise DataError(f"{path} holds {'x'.join(map(str, struct.unpack('>II', content[8:16])))} "
                        f"images, expected {'x'.join(map(str, item_shape))}")
    expected = header + count * int(np.prod(item_shape, dtype=np.int64))
    if len(content) < expected:
        raise DataError(f"{path} is truncated or corrupt: {len(content)} bytes, "
                        f"{expected} expected for {count} items")
    if len(content) > expected:
        raise DataError(f"{path} is corrupt: {len(content) - expected} bytes follow its "
                        f"{count} items ({expected} bytes expected in all)")
    return np.frombuffer(content, np.uint8, offset=header).reshape(count, *item_shape)


def _read_mnist_idx(data_dir):
    """MNIST's four IDX files in ``data_dir``, each gzipped or unpacked."""
    def found(name):
        for candidate in (name, name[:-len(".gz")]):
            if os.path.lexists(os.path.join(data_dir, candidate)):
                return os.path.join(data_dir, candidate)
        return None

    names = _MNIST_IDX["train"] + _MNIST_IDX["test"]
    missing = [name for name in names if found(name) is None]
    if missing:
        raise DataError(f"data_dir {data_dir} lacks {', '.join(missing)} (MNIST's IDX files "
                        f"are {', '.join(names)}, gzipped or not)")
    splits = []
    for split in ("train", "test"):
        image_file, label_file = (found(name) for name in _MNIST_IDX[split])
        images = _read_idx(image_file, 2051, DATASETS["mnist"].image_shape[:2])[..., None]
        labels = _read_idx(label_file, 2049, ()).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{image_file} and {label_file} hold {len(images)} images "
                            f"but {len(labels)} labels")
        _check_arrays("mnist", split, images, labels, source=label_file)
        splits.append((images, labels))
    return _with_pool(*splits)


def _read_mat(path):
    import scipy.io
    check_regular_file(path)
    try:
        mat = scipy.io.loadmat(path)
        images, labels = mat["X"], mat["y"]
    except KeyError as error:
        raise DataError(f"{path} lacks the variable {error}; expected X and y") from None
    except NotImplementedError:  # scipy's reason for v7.3 tells a program to use h5py
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save "
                        "it as v7, as SVHN's own files are (MATLAB: save(FILE, 'X', 'y', "
                        "'-v7'))") from None
    except Exception as error:  # scipy raises many types on corrupt files
        raise DataError(f"{path} is not a readable .mat file ({_reason(error)})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or \
            images.shape[:3] != DATASETS["svhn"].image_shape:
        raise DataError(f"{path}: X must be uint8 of shape 32x32x3xN, got {images.dtype} "
                        f"{'x'.join(map(str, images.shape))}")
    labels = _integer_labels(np.asarray(labels).reshape(-1), f"{path} y")
    if len(labels) != images.shape[3]:
        raise DataError(f"{path}: {images.shape[3]} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: y must hold 1..10 (10 is digit 0), got "
                        f"{labels.min()}..{labels.max()}")
    if not len(labels):
        raise DataError(f"{path} holds no images")
    images = np.ascontiguousarray(np.transpose(images, (3, 0, 1, 2)))
    return images, np.where(labels == 10, 0, labels)   # SVHN stores digit 0 as 10


def _read_svhn_mat(data_dir, include_extra):
    paths = {split: os.path.join(data_dir, f"{split}_32x32.mat")
             for split in ("train", "test", "extra")}
    for split in ("train", "test") + (("extra",) if include_extra else ()):
        if not os.path.lexists(paths[split]):
            raise DataError(f"data_dir {data_dir} lacks {split}_32x32.mat")
    train_images, train_labels = _read_mat(paths["train"])
    test = _read_mat(paths["test"])
    pool = len(train_labels)
    if include_extra:
        extra_images, extra_labels = _read_mat(paths["extra"])
        train_images = np.concatenate([train_images, extra_images])
        train_labels = np.concatenate([train_labels, extra_labels])
    return (train_images, train_labels, pool), test


def _read_cifar10(data_dir):
    """CIFAR-10 from ``data_dir``: the batch files themselves, their
    ``cifar-10-batches-{bin,py}/`` directory (also inside Keras 3's cache
    directory), or its ``.tar.gz`` archive (read in place, not extracted);
    ``None`` if none is there. A folder with
    some of the batch files but not all (and no whole set elsewhere) is a
    :class:`DataError` naming those it lacks."""
    partial = None
    for directory, suffix, archive in _CIFAR10_LAYOUTS:
        names = [batch + suffix for batch in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,)]
        for folder in (data_dir, os.path.join(data_dir, directory),
                       os.path.join(data_dir, _KERAS_CACHE_DIRECTORY, directory)):
            missing = [name for name in names
                       if not os.path.lexists(os.path.join(folder, name))]
            if not missing:
                return _read_cifar10_batches(functools.partial(_read_cifar10_file, folder, suffix))
            if len(missing) < len(names) and partial is None:
                partial = (f"{folder} lacks {', '.join(missing)} (CIFAR-10 needs "
                           f"{_cifar10_files(suffix)})")
        archive_path = os.path.join(data_dir, archive)
        if os.path.lexists(archive_path):
            return _read_cifar10_archive(archive_path, suffix)
    if partial:
        raise DataError(partial)
    return None


def _read_cifar10_file(folder, suffix, batch):
    """The batch file ``batch`` of the folder ``folder``, parsed."""
    path = os.path.join(folder, batch + suffix)
    check_regular_file(path)
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror})") from None
    return _parse_cifar10_batch(content, path, suffix)


def _read_cifar10_archive(path, suffix):
    """The batches of an official CIFAR-10 ``.tar.gz``, read without extracting.

    The gzip stream is read to its end, where its CRC-32 is checked: reading
    only the members stops before it, and a corrupt download loaded.
    """
    wanted = {batch + suffix for batch in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,)}
    contents = {}
    check_regular_file(path)
    try:
        with gzip.open(path, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    name = os.path.basename(member.name)
                    if member.isfile() and name in wanted:
                        contents[name] = archive.extractfile(member).read()
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise DataError(f"{path} is not a readable .tar.gz archive ({_reason(error)})") from None

    def read(batch):
        if batch + suffix not in contents:
            raise DataError(f"{path} lacks {batch + suffix} (CIFAR-10 needs "
                            f"{_cifar10_files(suffix)})")
        return _parse_cifar10_batch(contents.pop(batch + suffix), f"{path}:{batch + suffix}",
                                    suffix)
    return _read_cifar10_batches(read)


def _read_cifar10_batches(read):
    """The five training batches and the test batch, each read by ``read(name)``."""
    train = [read(batch) for batch in CIFAR10_TRAIN_BATCHES]
    train = (np.concatenate([images for images, _ in train]),
             np.concatenate([labels for _, labels in train]))
    return _with_pool(train, read(CIFAR10_TEST_BATCH))


def _parse_cifar10_batch(content, where, suffix):
    """``(images [N, 32, 32, 3] uint8, labels [N] int64)`` of one batch file's bytes."""
    if suffix == ".bin":
        if not content or len(content) % _CIFAR10_RECORD_BYTES:
            raise DataError(f"{where} is truncated or corrupt: {len(content)} bytes is not a "
                            f"whole number of {_CIFAR10_RECORD_BYTES}-byte records")
        records = np.frombuffer(content, np.uint8).reshape(-1, _CIFAR10_RECORD_BYTES)
        labels, pixels = records[:, 0].astype(np.int64), records[:, 1:]
    else:
        try:
            batch = pickle.load(io.BytesIO(content), encoding="bytes")
            pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
        except (KeyError, TypeError, IndexError):
            raise DataError(f"{where} lacks b'data' or b'labels' (a CIFAR-10 python "
                            "batch is a dict of both)") from None
        except Exception as error:  # pickle raises many types on corrupt input
            raise DataError(f"{where} is truncated or corrupt ({_reason(error)})") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _CIFAR10_PIXELS:
            raise DataError(f"{where}: b'data' must be uint8 of shape [N, {_CIFAR10_PIXELS}], got "
                            f"{pixels.dtype} {pixels.shape}")
        labels = _integer_labels(labels.reshape(-1), f"{where} b'labels'")
        if len(labels) != len(pixels):
            raise DataError(f"{where}: {len(pixels)} images but {len(labels)} labels")
    if not len(labels):
        raise DataError(f"{where} holds no images")
    if labels.min() < 0 or labels.max() >= DATASETS["cifar10"].num_classes:
        raise DataError(f"{where}: labels must be in 0..9, got {labels.min()}..{labels.max()} "
                        "(corrupt file?)")
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> channels last
    return np.ascontiguousarray(images), labels


def _cifar10_files(suffix):
    return ", ".join(batch + suffix for batch in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,))


def _read_tfds(name, data_dir, include_extra):
    import tensorflow_datasets as tfds
    splits = ["train", "test"] + (["extra"] if include_extra else [])
    expected = _expected_files(name, include_extra)
    if data_dir is None:
        _check_download_reachable(tfds.builder(DATASETS[name].tfds_name),
                                  f"pass --data_dir with local files ({expected})")
    try:
        loaded = tfds.load(DATASETS[name].tfds_name, split=splits, data_dir=data_dir,
                           as_supervised=True, download=data_dir is None)
        arrays = [_to_numpy(split, DATASETS[name].tfds_name, split_name)
                  for split, split_name in zip(loaded, splits)]
    except DataError:
        raise
    except Exception as error:  # TFDS raises many types; the reason is one line.
        builder = None
        if data_dir:
            try:   # a damaged prepared copy (its dataset_info.json) fails here too
                builder = tfds.builder(DATASETS[name].tfds_name, data_dir=data_dir)
            except Exception:
                pass
        if builder is not None and not builder.is_prepared():
            _refuse_other_versions(builder, data_dir, DATASETS[name].tfds_name)
            # TFDS' reason then tells a program to download: not for a CLI user.
            raise DataError(f"data_dir {data_dir} holds no {name} files (expected "
                            f"{expected} or prepared TFDS data)") from None
        raise DataError(f"TFDS could not load {DATASETS[name].tfds_name}"
                        f"{f' from data_dir {data_dir}' if data_dir else ''}: "
                        f"{_reason(error)}") from None
    train_images, train_labels = arrays[0]
    pool = len(train_labels)
    if include_extra:
        train_images = np.concatenate([train_images, arrays[2][0]])
        train_labels = np.concatenate([train_labels, arrays[2][1]])
    return (train_images, train_labels, pool), arrays[1]


def _check_download_reachable(builder, offline_hint):
    """One request, without retries, to the host TFDS would download ``name`` from.

    TFDS' downloader retries a refused connection ten times with backoff
    (about 200 s in TFDS 4.9.10) before it fails; offline, this fails in
    at most ``_DOWNLOAD_CHECK_SECONDS`` with a line that says what to do. The
    URL comes from the builder's own checksums file (``url_infos``), and the
    request goes through ``requests``, as TFDS' own, so the same proxy
    settings (``HTTPS_PROXY``, ``HTTP_PROXY``) apply. Prepared data skips it.
    ``offline_hint`` says what to do without a network.
    """
    import requests
    if builder.is_prepared():
        return
    # requests speaks HTTP only: an ftp:// URL (so2sat's) would fail with a network too.
    url = next((url for url in type(builder).url_infos or {}
                if url.startswith(("http://", "https://"))), None)
    if url is None:
        return
    try:
        requests.head(url, timeout=_DOWNLOAD_CHECK_SECONDS, allow_redirects=True).close()
    except requests.RequestException as error:
        host = url.split("/")[2]
        raise DataError(f"cannot download {builder.name}: {host} is unreachable "
                        f"({_reason_of_request(error)}); without a network, {offline_hint}") \
            from None


def _reason_of_request(error):
    """The innermost cause of a ``requests`` error, e.g. "Connection refused"."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__
    text = str(error)
    return text.rsplit("] ", 1)[-1].rstrip(")'\"") if "] " in text else _reason(error)


def _to_numpy(split, dataset, split_name):
    """A TFDS ``(image, label)`` split as two arrays, read in batches of 10,000.

    Not ``tfds.load(..., batch_size=-1)`` (one batch of the whole split):
    under ``tfds.testing.mock_data`` (TFDS 4.9.10) that aborts the process
    with ``std::length_error``, so the tested path would not be this one.
    """
    batches = list(split.batch(10000).as_numpy_iterator())
    if not batches:
        raise DataError(f"TFDS {dataset}: the split {split_name!r} holds no examples")
    return (np.concatenate([images for images, _ in batches]),
            np.concatenate([labels for _, labels in batches]).astype(np.int64))


def _expected_files(name, include_extra=False):
    if include_extra:   # svhn's: the run needs the extra file too
        return "train_32x32.mat, test_32x32.mat, extra_32x32.mat"
    if name not in DATASETS:
        return "TFDS data prepared on another machine"
    return {"mnist": "mnist.npz or " + ", ".join(_MNIST_IDX["train"] + _MNIST_IDX["test"]),
            "svhn": "train_32x32.mat, test_32x32.mat",
            "cifar10": ("cifar-10-batches-bin/, cifar-10-batches-py/, their .tar.gz "
                        "archives or the batch files themselves")}[name]


def _reason(error):
    return faults.first_line(error)[:200]   # without TensorFlow's {{function_node ...}} tag


# ------------------------------------------------------------------ images
class UnreadableImage(DataError):
    """An image file that cannot be read or decoded (not an image, truncated)."""


def _colour_channels(channels):
    """The channels of an image with ``channels`` once its alpha channel is
    dropped: grayscale-and-alpha (2) and RGBA (4) lose their last one."""
    return channels - 1 if channels in (2, 4) else channels


def read_image_file(path, image_shape, convert_channels=False):
    """One PNG, JPEG, GIF or BMP file as uint8 ``image_shape`` ``(H, W, C)``.

    An alpha channel is dropped; a colour image for ``C = 1`` (or a grayscale
    one for ``C = 3``) is converted only with ``convert_channels``, otherwise
    it is a :class:`DataError`; a GIF, which TensorFlow decodes as RGB, is
    grayscale when its pixels are all gray, and a BMP with a palette takes
    its colours (:func:`_bmp_palette`). Other sizes are resized (bilinear,
    antialiased), as ``tf.image.resize``. Raises :class:`UnreadableImage`
    for a file that does not decode, and for a path that is no regular file
    (a named pipe called ``*.png`` would block the read without end).
    """
    check_regular_file(path, UnreadableImage)
    try:
        content = tf.io.read_file(os.fspath(path))
        image = tf.io.decode_image(content, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.PermissionDeniedError) as error:
        raise UnreadableImage(f"{path} cannot be read or decoded ({_reason(error)})") from None
    height, width, channels = (int(size) for size in image_shape)
    image = _upright(image, content.numpy())
    image = image[..., :_colour_channels(image.shape[-1])]      # no alpha channel
    palette = _bmp_palette(content.numpy()) if image.shape[-1] == 1 else None
    if palette is not None:
        image = tf.gather(palette, tf.cast(image[..., 0], tf.int32))
    if (channels == 1 and image.shape[-1] == 3 and content.numpy()[:3] == b"GIF"
            and bool(tf.reduce_all(image == image[..., :1]))):
        image = image[..., :1]   # a gray GIF: GIF has no grayscale form, TF decodes it as RGB
    if image.shape[-1] != channels:
        if not convert_channels:
            kinds = {1: "grayscale", 3: "colour (RGB)"}
            raise DataError(f"{path} is {kinds[image.shape[-1]]} but the images must be "
                            f"{kinds[channels]}; pass --convert_channels to convert them")
        image = (tf.image.rgb_to_grayscale(image) if channels == 1
                 else tf.image.grayscale_to_rgb(image))
    if tuple(image.shape[:2]) != (height, width):
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image.numpy()


# PIL's Image.Transpose methods of EXIF orientations 2-8 (PIL.ImageOps.exif_transpose),
# written with NumPy's axes: rot90 turns counter-clockwise, rows are axis 0.
_EXIF_ORIENTATION = {
    2: lambda image: image[:, ::-1],                           # mirrored
    3: lambda image: image[::-1, ::-1],                        # upside down
    4: lambda image: image[::-1],                              # flipped
    5: lambda image: np.swapaxes(image, 0, 1),                 # transposed
    6: lambda image: np.rot90(image, 3),                       # turned a quarter clockwise
    7: lambda image: np.swapaxes(image[::-1, ::-1], 0, 1),     # transversed
    8: lambda image: np.rot90(image, 1),                       # a quarter counter-clockwise
}


def _upright(image, content):
    """A JPEG turned as its EXIF orientation says, as photo viewers and
    ``PIL.ImageOps.exif_transpose`` show it: a phone stores a portrait photo
    sideways with the tag, which TensorFlow's decoder ignores, so the digit
    was read lying on its side. Other formats, and JPEGs without the tag or
    whose EXIF is unreadable, are left as decoded."""
    if content[:2] != b"\xff\xd8":
        return image
    try:                   # PIL reads the header only, not the pixels
        with PIL.Image.open(io.BytesIO(content)) as file:
            orientation = file.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):   # EXIF that PIL cannot parse
        return image
    turn = _EXIF_ORIENTATION.get(orientation)
    return image if turn is None else tf.constant(np.ascontiguousarray(turn(image.numpy())))


def _bmp_palette(content):
    """The colours of a BMP file of 8 bits a pixel or fewer, as uint8 ``[N, 1]``
    grays or ``[N, 3]`` RGB, else ``None``. TensorFlow's BMP decoder returns
    such a file's palette indices as one gray channel, not its colours: a
    colour palette gave a gray image of indices without a word. (Indices
    past the palette, a broken file, are clamped to its last colour.)"""
    if content[:2] != b"BM" or len(content) < 30:
        return None
    header_size = int.from_bytes(content[14:18], "little")
    bits = int.from_bytes(content[28:30], "little") if header_size >= 40 else (
        int.from_bytes(content[24:26], "little"))
    if bits > 8:
        return None
    used = int.from_bytes(content[46:50], "little") if header_size >= 40 else 0
    entry = 3 if header_size == 12 else 4          # OS/2's header: BGR triples
    count = used or 2 ** bits
    start = 14 + header_size
    table = np.frombuffer(content[start:start + entry * count], np.uint8)
    colours = table[:len(table) // entry * entry].reshape(-1, entry)[:256, 2::-1]   # to RGB
    if not len(colours):
        return None
    colours = np.concatenate([colours, np.repeat(colours[-1:], 256 - len(colours), axis=0)])
    if (colours == colours[:, :1]).all():
        return colours[:, :1]                    # a gray palette: a grayscale image
    return colours


# ----------------------------------------------------------- image folders
FOLDER_TEST_FRACTION = 0.2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The images of a ``folder:PATH`` data set, decoded to one image shape.

    ``labeled_*`` come from ``PATH/labeled/<class>/``, ``unlabeled_images``
    from every image under ``PATH/unlabeled/``, ``test_*`` from
    ``PATH/test/<class>/`` or, without it, a seeded held-out part of the
    labeled images (``test_held_out``). ``class_names`` are the class folders'
    names in sorted order (as ``keras.utils.image_dataset_from_directory``);
    class ``k`` is ``class_names[k]``. ``skipped`` lists unreadable files.
    """

    class_names: tuple
    labeled_images: np.ndarray
    labeled_labels: np.ndarray
    unlabeled_images: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_held_out: bool
    skipped: tuple


def read_image_folder(path, image_shape, *, convert_channels=False, seed=0,
                      test_fraction=FOLDER_TEST_FRACTION):
    """Reads ``path`` laid out as ``labeled/<class>/*``, ``unlabeled/**`` and
    optionally ``test/<class>/*`` (see :class:`ImageFolder`).

    Every image is decoded and resized to ``image_shape`` by
    :func:`read_image_file`. Unreadable files are skipped and listed in
    ``skipped`` (the caller reports their count); a folder, class or split
    without any image is a :class:`DataError` naming it.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"folder {path} does not exist; expected {path}/labeled/<class>/*, "
                        f"{path}/unlabeled/** and optionally {path}/test/<class>/*")
    labeled_dir = os.path.join(path, "labeled")
    class_names = tuple(sorted(name for name in _subdirectories(labeled_dir)))
    unwritable = [name for name in class_names if "\n" in name or "\r" in name]
    if unwritable:      # the export's labels.txt holds one class name a line
        raise DataError(f"class folder {os.path.join(labeled_dir, unwritable[0])!r} has a line "
                        "break in its name; rename it")
    unnamed = [name for name in class_names if not faults.is_utf8(name)]
    if unnamed:         # class_names.json and labels.txt are UTF-8 text
        # Under an ASCII file-name encoding a UTF-8 name arrives undecoded too: the hint.
        raise DataError(f"class folder {faults.printable(os.path.join(labeled_dir, unnamed[0]))} "
                        f"has a name that is not UTF-8 text{faults.file_name_encoding_hint()}; "
                        "rename it")
    if len(class_names) < 2:
        raise DataError(f"{labeled_dir} must hold one folder of images per class (at least "
                        f"two), found {len(class_names)}")
    skipped = []

    def read_classes(root):
        images, labels = [], []
        for label, name in enumerate(class_names):
            files = image_files_in(os.path.join(root, name))
            decoded = _read_images(files, image_shape, convert_channels, skipped)
            images += decoded
            labels += [label] * len(decoded)
        return images, labels

    images, labels = read_classes(labeled_dir)
    counts = np.bincount(labels, minlength=len(class_names))
    if counts.min() == 0:
        empty = class_names[int(np.argmin(counts))]
        raise DataError(f"class {empty!r} has no readable image in {labeled_dir}/{empty}")
    labeled_images, labeled_labels = np.stack(images), np.asarray(labels, np.int64)

    unlabeled_dir = os.path.join(path, "unlabeled")
    unlabeled = _read_images(image_files_in(unlabeled_dir), image_shape, convert_channels, skipped)
    if not unlabeled:
        raise DataError(f"{unlabeled_dir} holds no readable image (PNG, JPEG, GIF or BMP, "
                        "in any subfolder)")

    test_dir = os.path.join(path, "test")
    if os.path.isdir(test_dir):
        unknown = sorted(set(_subdirectories(test_dir)) - set(class_names))
        if unknown:
            raise DataError(f"{test_dir}/{unknown[0]} is not a class of {labeled_dir} "
                            f"({', '.join(class_names)})")
        images, labels = read_classes(test_dir)
        if not images:
            raise DataError(f"{test_dir} holds no readable image in its class folders")
        test_images, test_labels = np.stack(images), np.asarray(labels, np.int64)
        held_out = False
    else:   # a seeded part of each class's labeled images
        rng = np.random.default_rng([seed, 11])
        test = np.concatenate([
            rng.permutation(np.flatnonzero(labeled_labels == k))[
                :int(np.floor(test_fraction * counts[k]))] for k in range(len(class_names))])
        keep = np.setdiff1d(np.arange(len(labeled_labels)), test)
        test_images, test_labels = labeled_images[test], labeled_labels[test]
        labeled_images, labeled_labels = labeled_images[keep], labeled_labels[keep]
        held_out = True
        if not len(test):
            raise DataError(f"{path} has no test/ folder and too few labeled images to hold "
                            f"{test_fraction:.0%} of each class out for testing")
    return ImageFolder(class_names=class_names, labeled_images=labeled_images,
                       labeled_labels=labeled_labels, unlabeled_images=np.stack(unlabeled),
                       test_images=test_images, test_labels=test_labels,
                       test_held_out=held_out, skipped=tuple(skipped))


def _subdirectories(directory):
    """The class folders of ``directory``: hidden ones (``.ipynb_checkpoints``)
    left out, as ``keras.utils.image_dataset_from_directory`` does."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory} does not exist")
    return [name for name in os.listdir(directory)
            if os.path.isdir(os.path.join(directory, name)) and not name.startswith(".")]


def image_files_in(directory):
    """Every image file under ``directory`` (recursively, through symbolic
    links to folders, each folder once), sorted. A folder that cannot be
    listed is a :class:`DataError`: its images would be left out without a
    word, as a linked folder's were."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory} does not exist")

    def refuse(error):
        raise DataError(f"cannot list the folder {faults.printable(error.filename)} "
                        f"({error.strerror})")
    found, listed = [], set()
    for root, directories, files in os.walk(directory, onerror=refuse, followlinks=True):
        real = os.path.realpath(root)
        if real in listed:      # a link back up, or a second link to it
            directories.clear()
            continue
        listed.add(real)
        directories.sort()
        found += [os.path.join(root, name) for name in sorted(files)
                  if name.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _read_images(files, image_shape, convert_channels, skipped):
    """The images of ``files``; unreadable ones, and names that are not UTF-8
    (which TensorFlow cannot open), are appended to ``skipped``."""
    images = []
    for file in files:
        if not faults.is_utf8(file):
            skipped.append(file)
            continue
        try:
            images.append(read_image_file(file, image_shape, convert_channels))
        except UnreadableImage:
            skipped.append(file)
    return images


# ------------------------------------------------------------ any TFDS set
@dataclasses.dataclass(frozen=True)
class TFDSImages:
    """An image-classification data set of TensorFlow Datasets, as arrays."""

    class_names: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_tfds_images(name, image_shape, *, data_dir=None, train_split="train",
                     test_split="test", convert_channels=False):
    """``name`` (``NAME`` or ``NAME/config``) of TFDS, with an image and a class
    label feature, its images converted to uint8 ``image_shape``.

    Class names and count come from the data set's ``ClassLabel`` feature.
    Images of another size are resized (bilinear, antialiased); an alpha
    channel is dropped; a colour data set for a grayscale model, or the
    reverse, needs ``convert_channels``.
    """
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # TFDS raises many types for unknown names
        raise DataError(_unknown_tfds_name(name, data_dir, error)) from None
    image_key, label_key = _image_and_label_features(builder, name)
    try:
        if data_dir is None:   # else: TFDS data prepared there
            _check_download_reachable(builder, (
                f"prepare it where there is one (`tfds build {name} --data_dir=DIR`) and "
                "pass --data_dir=DIR"))
            builder.download_and_prepare()
        splits = builder.as_dataset(split=[train_split, test_split], as_supervised=False)
    except DataError:
        raise
    except Exception as error:  # TFDS raises many types; the reason is one line
        if data_dir and not builder.is_prepared():   # TFDS' reason tells a program to download
            _refuse_other_versions(builder, data_dir, name)
            raise DataError(f"data_dir {data_dir} holds no prepared TFDS {name} (made where "
                            f"there is a network by `tfds build {name} --data_dir=DIR`)") from None
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not builder.is_prepared():
            # TFDS' reason ends 'using instructions:', the instructions on lines dropped here.
            raise DataError(f"TFDS {name} is downloaded by hand (see https://www.tensorflow.org/"
                            f"datasets/catalog/{builder.name}): {_reason(error)}") from None
        raise DataError(f"TFDS could not load {name} splits {train_split!r} and "
                        f"{test_split!r}: {_reason(error)}") from None
    height, width, channels = image_shape
    source_channels = _colour_channels(builder.info.features[image_key].shape[-1])
    if source_channels != channels and not convert_channels:
        kinds = {1: "grayscale", 3: "colour (RGB)"}
        raise DataError(f"TFDS {name} images are {kinds.get(source_channels, source_channels)} "
                        f"but the model takes {kinds[channels]} ones; pass --convert_channels")

    @_as_written
    def convert(example):
        image = example[image_key][..., :source_channels]     # no alpha channel
        if image.shape[-1] != channels:
            image = (tf.image.rgb_to_grayscale(image) if channels == 1
                     else tf.image.grayscale_to_rgb(image))
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), example[label_key]

    try:
        arrays = [_to_numpy(split.map(convert, num_parallel_calls=tf.data.AUTOTUNE), name,
                            split_name)
                  for split, split_name in zip(splits, (train_split, test_split))]
    except DataError:
        raise
    except Exception as error:  # a corrupt prepared file, an undecodable image
        raise DataError(f"TFDS {name} cannot be read: {_reason(error)}") from None
    label_feature = builder.info.features[label_key]
    return TFDSImages(class_names=tuple(label_feature.names), train_images=arrays[0][0],
                      train_labels=arrays[0][1], test_images=arrays[1][0],
                      test_labels=arrays[1][1])


def _refuse_other_versions(builder, data_dir, name):
    """A :class:`DataError` if ``data_dir`` holds ``builder``'s set (``name``) prepared
    only at versions this TFDS does not read (another TFDS release made it); the
    line would say it holds none."""
    folder = os.path.dirname(builder.data_dir)   # DIR/NAME[/config]/VERSION
    try:
        versions = sorted(entry for entry in os.listdir(folder) if entry != str(builder.version)
                          and os.path.isfile(os.path.join(folder, entry, "dataset_info.json")))
    except OSError:
        return
    if versions:
        raise DataError(f"data_dir {data_dir} holds TFDS {name} version {', '.join(versions)}, "
                        f"but this TFDS reads version {builder.version} only: prepare it with "
                        f"this TFDS (`tfds build {name} --data_dir=DIR`)") from None


def _unknown_tfds_name(name, data_dir, error):
    """The line for a ``NAME[/config][:version]`` TFDS cannot build: no such set, a
    config it lacks (with the configs it has: TFDS lists the close ones on lines
    after its first), or a version or prepared copy it cannot open."""
    import tensorflow_datasets as tfds
    base, _, config = name.split(":")[0].partition("/")
    try:
        configs = list(tfds.builder_cls(base).builder_configs)
    except Exception:  # no such data set: TFDS' reason says so
        return (f"TFDS has no data set {name!r} ({_reason(error)}); see "
                "https://www.tensorflow.org/datasets/catalog")
    if config and config not in configs:
        if not configs:
            return f"TFDS {base} has no configs: pass tfds:{base}"
        close = difflib.get_close_matches(config, configs, n=5, cutoff=0.5) or configs[:5]
        return (f"TFDS {base} has no config {config!r}; it has {len(configs)}, e.g. "
                f"{', '.join(close)}")
    # A set TFDS has: a version it lacks, or a damaged copy (its dataset_info.json).
    return (f"TFDS could not open {name}{f' in data_dir {data_dir}' if data_dir else ''}: "
            f"{_reason(error)}")


def _image_and_label_features(builder, name):
    """The names of ``builder``'s image and ``ClassLabel`` features, or a DataError."""
    import tensorflow_datasets as tfds
    features = builder.info.features
    images = [key for key, feature in features.items()
              if isinstance(feature, tfds.features.Image)]
    labels = [key for key, feature in features.items()
              if isinstance(feature, tfds.features.ClassLabel)]
    if not images or not labels:
        raise DataError(f"TFDS {name} is not an image-classification data set: it needs an "
                        f"Image and a ClassLabel feature, it has {', '.join(features.keys())}")
    prefer = lambda keys, word: word if word in keys else keys[0]  # noqa: E731
    return prefer(images, "image"), prefer(labels, "label")
