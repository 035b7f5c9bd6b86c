"""The data layer: every local format, TFDS, label budgets, pipelines, bad input."""

import collections
import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
import threading
import zlib

import keras
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

import preloaded

from sgan_keras import data as data_lib
from sgan_keras import faults
from sgan_keras.data import DataError, load_dataset



# ---------------------------------------------------------------- fixtures
def fake_digits(count_per_class, shape, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), count_per_class)
    images = rng.integers(0, 256, size=(labels.size, *shape), dtype=np.uint8)
    images[:, 0, 0, ...] = labels[:, None] if len(shape) == 3 else labels  # pixel = label
    return images, labels


def write_npz(directory, per_class=6):
    x_train, y_train = fake_digits(per_class, (28, 28))
    x_test, y_test = fake_digits(2, (28, 28), seed=1)
    np.savez(directory / "mnist.npz", x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)
    return x_train, y_train


def write_idx(directory, per_class=6):
    for prefix, count, seed in (("train", per_class, 0), ("t10k", 2, 1)):
        images, labels = fake_digits(count, (28, 28), seed)
        with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as file:
            file.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())
        with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as file:
            file.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())
    return fake_digits(per_class, (28, 28), 0)


def write_svhn(directory, per_class=6, extra_per_class=0, label_dtype=np.uint8):
    splits = [("train", per_class, 0), ("test", 2, 1)]
    if extra_per_class:
        splits.append(("extra", extra_per_class, 2))
    for split, count, seed in splits:
        images, digits = fake_digits(count, (32, 32, 3), seed)
        stored = np.where(digits == 0, 10, digits).astype(label_dtype)  # digit 0 is label 10
        scipy.io.savemat(directory / f"{split}_32x32.mat",
                         {"X": np.transpose(images, (1, 2, 3, 0)), "y": stored[:, None]})
    return fake_digits(per_class, (32, 32, 3), 0)


def cifar10_batches(per_class=3, seed=0):
    """Seven small CIFAR-10 batches (five train, test) of records with a known
    pixel: at (0, 0) the R, G and B values are label, label + 100, label + 200."""
    batches = {}
    for index, name in enumerate(data_lib.CIFAR10_TRAIN_BATCHES + ("test_batch",)):
        images, labels = fake_digits(per_class, (32, 32, 3), seed=seed + index)
        images[:, 0, 0] = labels[:, None] + np.array([0, 100, 200])
        batches[name] = images, labels
    return batches


def cifar10_bytes(images, labels, version):
    """One batch file's content: the binary version's records (label byte, then
    the R, G and B planes) or the python version's pickled dict."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    if version == "bin":
        return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()
    return pickle.dumps({b"data": planes, b"labels": labels.tolist(), b"batch_label": b"x"})


def write_cifar10(directory, layout, batches=None):
    """CIFAR-10 in ``layout``: ``{bin,py}_{files,folder,archive,kerascache}`` (the
    batch files in ``directory``, in ``cifar-10-batches-*/`` below it, its
    ``.tar.gz``, or where Keras 3's ``cifar10.load_data()`` caches them)."""
    batches = batches or cifar10_batches()
    version, where = layout.split("_")
    folder = f"cifar-10-batches-{version}"
    suffix = ".bin" if version == "bin" else ""
    files = {name + suffix: cifar10_bytes(*batch, version) for name, batch in batches.items()}
    if where in ("archive", "kerascache"):
        archive = directory / ("cifar-10-binary.tar.gz" if version == "bin"
                               else "cifar-10-python.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for name, content in files.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        if where == "kerascache":
            # Keras' own get_file, called as cifar10.load_data() calls it, with
            # directory as the cache; the archive stays only under Keras' name.
            keras.utils.get_file(fname="cifar-10-batches-py-target", origin=archive.as_uri(),
                                 extract=True, cache_dir=str(directory), cache_subdir=".")
            archive.unlink()
        return batches
    target = {"files": directory, "folder": directory / folder}[where]
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (target / name).write_bytes(content)
    return batches


# ------------------------------------------------------------ local formats
@pytest.mark.parametrize("layout", [f"{version}_{where}" for version in ("bin", "py")
                                    for where in ("files", "folder", "archive")]
                         + ["py_kerascache"])
def test_cifar10_local_formats(layout, tmp_path):
    batches = write_cifar10(tmp_path, layout)
    data = load_dataset("cifar10", 20, data_dir=str(tmp_path))
    train = [batches[name] for name in data_lib.CIFAR10_TRAIN_BATCHES]
    np.testing.assert_array_equal(data.train_images, np.concatenate([b[0] for b in train]))
    np.testing.assert_array_equal(data.train_labels, np.concatenate([b[1] for b in train]))
    np.testing.assert_array_equal(data.test_images, batches["test_batch"][0])
    # The R, G, B planes land in the channels: the known pixel reads back.
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 1], data.train_labels + 100)
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 2], data.train_labels + 200)
    assert data.image_shape == (32, 32, 3) and data.train_images.shape == (150, 32, 32, 3)
    assert np.bincount(data.train_labels[data.labeled_indices]).tolist() == [2] * 10


@pytest.mark.parametrize("version", ["bin", "py"])
def test_cifar10_bad_files_are_refused_by_name(version, tmp_path):
    write_cifar10(tmp_path, f"{version}_folder")
    folder = tmp_path / f"cifar-10-batches-{version}"
    name = "data_batch_3" + (".bin" if version == "bin" else "")
    content = (folder / name).read_bytes()
    (folder / name).write_bytes(content[:-5])                             # truncated
    with pytest.raises(DataError, match=f"{name} is truncated or corrupt"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))
    (folder / name).write_bytes(content)
    test_batch = folder / ("test_batch" if version == "py" else "test_batch.bin")
    test_content = test_batch.read_bytes()
    test_batch.unlink()
    with pytest.raises(DataError, match="lacks test_batch"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))
    test_batch.write_bytes(test_content)
    (folder / name).unlink()
    (folder / name).mkdir()                          # there, but no readable file
    with pytest.raises(DataError, match=f"{name} is a directory, not a regular file"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))


def test_cifar10_mis_sized_and_mislabeled_files(tmp_path):
    write_cifar10(tmp_path, "bin_files")
    record = np.zeros(3073, np.uint8)
    record[0] = 10                                                        # no class 10
    (tmp_path / "data_batch_2.bin").write_bytes(record.tobytes() * 3)
    with pytest.raises(DataError, match="data_batch_2.bin: labels must be in 0..9"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))
    (tmp_path / "data_batch_2.bin").write_bytes(b"")
    with pytest.raises(DataError, match="data_batch_2.bin is truncated"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))

    python = tmp_path / "py"
    python.mkdir()
    write_cifar10(python, "py_files")
    (python / "data_batch_1").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}))
    with pytest.raises(DataError, match=r"data_batch_1: b'data' must be uint8 of shape \[N, 3072\]"):
        load_dataset("cifar10", 10, data_dir=str(python))
    (python / "data_batch_1").write_bytes(pickle.dumps({b"images": 1}))
    with pytest.raises(DataError, match="data_batch_1 lacks b'data' or b'labels'"):
        load_dataset("cifar10", 10, data_dir=str(python))
    (python / "data_batch_1").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}))
    with pytest.raises(DataError, match="data_batch_1: 4 images but 3 labels"):
        load_dataset("cifar10", 10, data_dir=str(python))

    archive = tmp_path / "archive"
    archive.mkdir()
    write_cifar10(archive, "bin_archive")
    path = archive / "cifar-10-binary.tar.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz is not a readable"):
        load_dataset("cifar10", 10, data_dir=str(archive))


@pytest.mark.parametrize("version", ["bin", "py"])
def test_a_corrupt_cifar10_archive_fails_its_gzip_check(version, tmp_path):
    """A byte flipped inside the compressed batches: the gzip CRC-32 refuses it
    (reading only the members never reached the check: wrong pixels loaded)."""
    write_cifar10(tmp_path, f"{version}_archive")
    path = tmp_path / ("cifar-10-binary.tar.gz" if version == "bin" else "cifar-10-python.tar.gz")
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=f"{path.name} is not a readable .tar.gz archive "
                                        r"\(CRC check failed"):
        load_dataset("cifar10", 10, data_dir=str(tmp_path))


def write_unpacked_idx(directory):
    """The IDX files as ``gunzip`` leaves them (no ``.gz``)."""
    written = write_idx(directory)
    for packed in directory.glob("*.gz"):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    return written


@pytest.mark.parametrize("writer", [write_npz, write_idx, write_unpacked_idx],
                         ids=["npz", "idx", "unpacked idx"])
def test_mnist_local_formats(writer, tmp_path):
    images, labels = writer(tmp_path)
    data = load_dataset("mnist", 20, data_dir=str(tmp_path))
    np.testing.assert_array_equal(data.train_images[..., 0], images)
    np.testing.assert_array_equal(data.train_labels, labels)
    assert data.image_shape == (28, 28, 1) and data.num_classes == 10
    assert data.test_images.shape == (20, 28, 28, 1)
    assert np.bincount(data.train_labels[data.labeled_indices]).tolist() == [2] * 10


# The real SVHN files store y as double (MATLAB's default); whole numbers are accepted.
@pytest.mark.parametrize("label_dtype", [np.uint8, np.float64])
def test_svhn_mat_maps_label_10_to_digit_0(tmp_path, label_dtype):
    images, digits = write_svhn(tmp_path, label_dtype=label_dtype)
    data = load_dataset("svhn", 10, data_dir=str(tmp_path))
    assert data.train_labels.dtype == np.int64
    np.testing.assert_array_equal(data.train_labels, digits)
    assert data.train_labels.min() == 0 and data.train_labels.max() == 9
    np.testing.assert_array_equal(data.train_images, images)
    # The pixel written as the label sits at (0, 0) of each image after the transpose.
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 0], digits)


def test_svhn_extra_joins_the_unlabeled_set_only(tmp_path):
    write_svhn(tmp_path, per_class=6, extra_per_class=3)
    data = load_dataset("svhn", 10, data_dir=str(tmp_path), include_extra=True)
    assert len(data.train_images) == 90
    assert data.labeled_indices.max() < 60       # labels come from the train split


def test_tfds_path_with_mock_data(tmp_path):
    # mock_data fakes the records of every split (random images, labels 0..9)
    # of TFDS data prepared in a data_dir. (The download path is driven for
    # real, up to the network, by test_download.py.)
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=100):
        data = load_dataset("cifar10", 10, seed=0, data_dir=str(tmp_path))
        svhn = load_dataset("svhn", 10, seed=0, include_extra=True, data_dir=str(tmp_path))
    assert data.train_images.shape == (100, 32, 32, 3) and data.test_images.shape[0] == 100
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert np.bincount(data.train_labels[data.labeled_indices], minlength=10).tolist() == [1] * 10
    assert svhn.train_images.shape == (200, 32, 32, 3)       # train + extra
    assert svhn.labeled_indices.max() < 100                  # labels come from train only
    assert data.notes == ()


def test_first_labels_from_tfds_say_they_are_not_the_files_first(tmp_path):
    # TFDS stores examples shuffled by key: "first" there is not the sources' set.
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=30):
        from_tfds = load_dataset("mnist", 10, data_dir=str(tmp_path), label_selection="first")
    assert from_tfds.labeled_indices.tolist() == list(range(10))
    assert len(from_tfds.notes) == 1
    assert "first 10 mnist training images in TFDS' order" in from_tfds.notes[0]
    assert "mnist.npz" in from_tfds.notes[0]
    local = tmp_path / "local"
    local.mkdir()
    write_npz(local)
    assert load_dataset("mnist", 10, data_dir=str(local), label_selection="first").notes == ()


def test_an_empty_tfds_split_is_refused_in_one_line(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=0):   # e.g. a slice that rounds to nothing
        with pytest.raises(DataError, match="the split 'train' holds no examples"):
            data_lib.read_tfds_images("fashion_mnist", (28, 28, 1), data_dir=str(tmp_path))
        with pytest.raises(DataError, match="the split 'train' holds no examples") as error:
            load_dataset("mnist", 10, data_dir=str(tmp_path))
    assert str(error.value) == "TFDS mnist: the split 'train' holds no examples"


def test_label_draw_is_pinned():
    # np.random.default_rng (PCG64) is the same on every machine: these exact indices.
    labels = np.repeat(np.arange(10), 50)
    assert data_lib.draw_labeled_indices(labels, 20, seed=0).tolist() == [
        31, 41, 63, 65, 100, 103, 182, 189, 224, 230,
        281, 285, 327, 346, 383, 389, 419, 442, 451, 488]
    other = data_lib.draw_labeled_indices(labels, 20, seed=1)
    assert np.bincount(labels[other]).tolist() == [2] * 10
    assert other.tolist()[:4] == [23, 25, 51, 96]


# ------------------------------------------------------------ real CIFAR-10
@pytest.fixture(scope="module")
def cifar10(cifar10_dir):
    return load_dataset("cifar10", 4000, seed=0, data_dir=str(cifar10_dir))


def test_real_cifar10_sizes_budget_and_pixel_range(cifar10, cifar10_dir):
    assert cifar10.train_images.shape == (50000, 32, 32, 3)
    assert cifar10.test_images.shape == (10000, 32, 32, 3)
    # The labels as the files store them: byte 0 of every 3,073-byte record.
    folder = cifar10_dir / "cifar-10-batches-bin"
    file_labels = np.concatenate([
        np.fromfile(folder / f"data_batch_{i}.bin", np.uint8).reshape(-1, 3073)[:, 0]
        for i in range(1, 6)])
    np.testing.assert_array_equal(cifar10.train_labels, file_labels)
    assert np.bincount(file_labels[cifar10.labeled_indices]).tolist() == [400] * 10
    assert len(set(cifar10.labeled_indices.tolist())) == 4000
    scaled = cifar10.scale(cifar10.train_images[:2000]).numpy()
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    # Class names as the set's own batches.meta.txt gives them (the export's labels.txt).
    meta = (folder / "batches.meta.txt").read_text().split()
    assert cifar10.class_names == tuple(meta) and len(meta) == 10
    assert cifar10.train_images.dtype == np.uint8


# --------------------------------------------------------------- real MNIST
@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_dataset("mnist", 100, seed=0, data_dir=str(mnist_dir))


def test_real_mnist_sizes_and_a_balanced_budget(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1)
    assert mnist.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(mnist.train_labels[mnist.labeled_indices]).tolist() == [10] * 10
    assert len(set(mnist.labeled_indices.tolist())) == 100


def test_same_seed_same_indices_other_seed_other_indices(mnist):
    labels = mnist.train_labels
    same = data_lib.draw_labeled_indices(labels, 100, seed=0)
    other = data_lib.draw_labeled_indices(labels, 100, seed=1)
    np.testing.assert_array_equal(same, mnist.labeled_indices)
    assert len(set(same.tolist()) & set(other.tolist())) < 10
    # Pinned on the shared file (SHA256SUMS): the draw must not change across machines.
    assert same[:8].tolist() == [113, 325, 476, 1000, 1064, 1715, 2047, 2561]


@pytest.mark.parametrize("pixel_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_pixel_range_as_asked(mnist_dir, pixel_range):
    data = load_dataset("mnist", 100, data_dir=str(mnist_dir), pixel_range=pixel_range)
    batch = next(iter(data.train_dataset(500)))
    for key in ("labeled_images", "unlabeled_images", "generator_images"):
        assert batch[key].dtype == tf.float32 and batch[key].shape == (500, 28, 28, 1)
        assert float(tf.reduce_min(batch[key])) == pixel_range[0]
        assert float(tf.reduce_max(batch[key])) == pixel_range[1]
    images, labels = next(iter(data.test_dataset(10000)))
    assert float(tf.reduce_min(images)) == pixel_range[0]
    assert float(tf.reduce_max(images)) == pixel_range[1]


def test_improved_gans_pixel_scale_divides_by_256(mnist_dir):
    """--pixel_scale=256: x / 256 in (0, 1), as improved-gan's MNIST, and
    (x - 127.5) / 128 in (-1, 1), as its CIFAR-10 (cifar10_data.py)."""
    from sgan_keras import choices
    with np.load(mnist_dir / "mnist.npz") as mnist:
        raw = mnist["x_test"][:50, :, :, None]
    for pixel_range, expected in (((0.0, 1.0), raw / 256), ((-1.0, 1.0), (raw - 127.5) / 128)):
        data = load_dataset("mnist", 100, data_dir=str(mnist_dir),
                            pixel_range=choices.input_pixel_range(pixel_range, "256"))
        np.testing.assert_array_equal(data.scale(raw).numpy(), expected.astype(np.float32))
        images, _ = next(iter(data.test_dataset(50)))
        np.testing.assert_array_equal(images.numpy(), expected.astype(np.float32))
    with pytest.raises(DataError, match="pixel_range must be"):
        load_dataset("mnist", 100, data_dir=str(mnist_dir), pixel_range=(0.0, 0.5))


def test_training_pipeline_is_deterministic_and_resumable(mnist):
    full = list(mnist.train_dataset(64).take(6).as_numpy_iterator())
    again = list(mnist.train_dataset(64).take(6).as_numpy_iterator())
    resumed = list(mnist.train_dataset(64, start_step=3).take(3).as_numpy_iterator())
    assert (len(full), len(again), len(resumed)) == (6, 6, 3)
    for a, b in zip(full, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(full[3:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    first = full[0]
    assert not np.array_equal(first["unlabeled_images"], first["generator_images"])
    assert first["labels"].dtype == np.int32


@pytest.mark.parametrize("label_batching, supervised_only, made_by", [
    ("separate", False, "train_dataset"), ("masked", False, "masked_dataset"),
    ("masked", True, "supervised_dataset"), ("separate", True, "supervised_dataset")])
def test_training_dataset_is_the_pipeline_the_configuration_trains_on(
        mnist, label_batching, supervised_only, made_by):
    # The CLI and the benchmarks take their batches from here: a masked preset
    # (SVHN DCGAN) gets one batch with a label mask, not a labeled batch beside
    # two unlabeled ones (which would time a third D call it never makes).
    chosen = mnist.training_dataset(8, label_batching, supervised_only, start_step=2)
    expected = getattr(mnist, made_by)(8, start_step=2)
    chosen_batches = list(chosen.take(2).as_numpy_iterator())
    expected_batches = list(expected.take(2).as_numpy_iterator())
    assert len(chosen_batches) == len(expected_batches) == 2
    for a, b in zip(chosen_batches, expected_batches):
        assert type(a) is type(b)
        for key in (a if isinstance(a, dict) else range(len(a))):
            np.testing.assert_array_equal(a[key], b[key])
    if made_by == "masked_dataset":
        assert set(next(chosen.as_numpy_iterator())) == {"images", "labels", "label_mask"}
    with pytest.raises(DataError, match="label_batching must be 'separate' or 'masked'"):
        mnist.training_dataset(8, "mixed")


def test_pipelines_are_deterministic_without_model_autotuning(mnist):
    # data._pipeline_options: autotuning made fresh fit() iterators slow (see its docstring).
    for dataset in (mnist.train_dataset(64), mnist.supervised_dataset(64),
                    mnist.test_dataset(100)):
        options = dataset.options()
        assert options.deterministic is True and options.autotune.enabled is False


def test_labeled_stream_tiles_the_budget_and_matches_its_labels(mnist):
    # 100 labels, batches of 64: every batch full, every image one of the 100.
    labeled = {mnist.train_images[i].tobytes(): mnist.train_labels[i]
               for i in mnist.labeled_indices}
    seen = set()
    for images, labels in mnist.labeled_dataset(64).take(5).as_numpy_iterator():
        assert images.shape == (64, 28, 28, 1)
        for image, label in zip(images, labels):
            raw = np.round((image + 1) * 127.5).astype(np.uint8).tobytes()
            assert labeled[raw] == label
            seen.add(raw)
    assert len(seen) == 100          # 320 draws cover each labeled image (epoch-wise shuffles)


def test_all_labels(mnist_dir):
    data = load_dataset("mnist", "all", data_dir=str(mnist_dir))
    assert len(data.labeled_indices) == 60000


def test_start_step_resumes_across_epoch_boundaries(tmp_path):
    # 60 training images, 20 labels, batch 8: the unlabeled streams start a new
    # epoch inside step 7 and the labeled stream inside every third step.
    write_npz(tmp_path)
    data = load_dataset("mnist", 20, seed=3, data_dir=str(tmp_path))
    full = list(data.train_dataset(8).take(26).as_numpy_iterator())
    supervised = list(data.supervised_dataset(8).take(26).as_numpy_iterator())
    for start in (1, 7, 8, 15, 23):
        resumed = list(data.train_dataset(8, start_step=start).take(3).as_numpy_iterator())
        assert len(resumed) == 3, start
        for expected, got in zip(full[start:], resumed):
            for key in expected:
                np.testing.assert_array_equal(expected[key], got[key], err_msg=f"{start} {key}")
        images, labels = next(data.supervised_dataset(8, start_step=start).as_numpy_iterator())
        np.testing.assert_array_equal(images, full[start]["labeled_images"])
        np.testing.assert_array_equal(labels, supervised[start][1])
    # 15 steps = two unlabeled epochs, each a permutation of the 60 images, in
    # another order each epoch and in each stream.
    index_of = {image.tobytes(): i for i, image in enumerate(data.train_images)}
    def order(key):
        images = np.concatenate([batch[key] for batch in full[:15]])
        return [index_of[np.round((x + 1) * 127.5).astype(np.uint8).tobytes()] for x in images]
    for key in ("unlabeled_images", "generator_images"):
        first, second = order(key)[:60], order(key)[60:]
        assert sorted(first) == sorted(second) == list(range(60))
        assert first != second
    assert order("unlabeled_images") != order("generator_images")


def indices_of(data, images):
    """The training-set index of each of a batch's scaled ``images`` (pixel range -1..1)."""
    index_of = {image.tobytes(): i for i, image in enumerate(data.train_images)}
    return [index_of[np.round((x + 1) * 127.5).astype(np.uint8).tobytes()] for x in images]


def test_per_epoch_order_gives_each_epoch_its_own_shuffles_and_leaves_out_the_rest():
    """``epoch_steps`` (--data_order=per_epoch): improved-gan's epoch, int(N /
    batch) batches of a fresh reshuffle, the labeled set tiled by fresh
    shuffles and cut the same way. 30 images, 10 labeled, 3 steps of 8: each
    epoch 24 distinct images of the 30 (6 left out, not carried over), its
    labeled batches 3 shuffles of the 10 cut at 24."""
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    epochs = 3
    unlabeled = [indices_of(data, batch["unlabeled_images"]) for batch in
                 data.train_dataset(8, epoch_steps=3).take(3 * epochs).as_numpy_iterator()]
    generator = [indices_of(data, batch["generator_images"]) for batch in
                 data.train_dataset(8, epoch_steps=3).take(3 * epochs).as_numpy_iterator()]
    labeled = [indices_of(data, images) for images, _ in
               data.labeled_dataset(8, epoch_steps=3).take(3 * epochs).as_numpy_iterator()]
    joined = [indices_of(data, batch) for batch in
              data.unlabeled_dataset(8).take(3 * epochs).as_numpy_iterator()]
    shuffles = set()
    for epoch in range(epochs):
        for stream in (unlabeled, generator):
            taken = sum(stream[3 * epoch:3 * epoch + 3], [])
            assert len(set(taken)) == 24      # one shuffle, its last 6 left out
            shuffles.add(tuple(taken))
        taken = sum(labeled[3 * epoch:3 * epoch + 3], [])
        assert [sorted(taken[start:start + 10]) for start in (0, 10)] == [
            sorted(data.labeled_indices.tolist())] * 2        # two whole shuffles...
        assert len(set(taken[20:])) == 4                      # ...and 4 of a third
    assert len(shuffles) == 2 * epochs       # every epoch and stream its own
    # The first epoch is the joined order's first 24; the second starts a new
    # shuffle where the joined order goes on with the first one's last 6.
    assert unlabeled[:3] == joined[:3] and unlabeled[3] != joined[3]
    assert sorted(sum(joined[3:], [])[:6]) == sorted(set(range(30)) - set(sum(joined[:3], [])))


def test_per_epoch_order_resumes_at_any_step_and_is_the_joined_one_when_epochs_are_whole_shuffles():
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    for make in (lambda **kw: data.train_dataset(8, **kw),
                 lambda **kw: data.masked_dataset(8, **kw),
                 lambda **kw: data.supervised_dataset(8, **kw)):
        full = list(make(epoch_steps=3).take(9).as_numpy_iterator())
        for start in (1, 3, 5, 7):
            resumed = list(make(epoch_steps=3, start_step=start).take(2).as_numpy_iterator())
            for expected, got in zip(full[start:], resumed):
                for key in (expected if isinstance(expected, dict) else range(len(expected))):
                    np.testing.assert_array_equal(expected[key], got[key], err_msg=str(start))
    # Batches of 10 of 30 images and 10 labels, 3 steps: an epoch is one
    # unlabeled shuffle and three labeled ones, as joined.
    aligned = list(data.train_dataset(10, epoch_steps=3).take(7).as_numpy_iterator())
    joined = list(data.train_dataset(10).take(7).as_numpy_iterator())
    for a, b in zip(aligned, joined):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(DataError, match="epoch_steps must be a non-negative integer"):
        data.train_dataset(8, epoch_steps=-1)


def test_with_replacement_draws_each_batch_anew_from_its_pool_and_resumes_at_any_step():
    """--data_order=with_replacement: GANs in Action's np.random.randint, every
    batch of every stream ``batch`` uniform draws of its set (repeats within
    a batch, none left out for good), batch ``i`` from ``(seed, i)`` alone.
    With --unlabeled_pool=unlabeled_only the unlabeled streams draw from the
    images outside the labeled set (GANs in Action's 100..59,999)."""
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    labeled = set(data.labeled_indices.tolist())
    draws = [indices_of(data, images) for images, _ in
             data.labeled_dataset(16, with_replacement=True).take(20).as_numpy_iterator()]
    assert all(set(batch) <= labeled for batch in draws)
    # Shuffles would give every 10 draws from a multiple of 10 on each image once.
    flat = sum(draws, [])
    assert sum(sorted(flat[i:i + 10]) != sorted(labeled) for i in range(0, 320, 10)) > 25
    assert len({tuple(batch) for batch in draws}) == 20
    # Uniform: each labeled image drawn 32 times on average in 320 draws.
    counts = np.bincount(sum(draws, []), minlength=30)[sorted(labeled)]
    assert counts.min() > 12 and counts.max() < 56, counts
    outside = dataclasses.replace(data, unlabeled_pool="unlabeled_only")
    for make in (lambda **kw: data.train_dataset(8, **kw),
                 lambda **kw: outside.train_dataset(8, **kw),
                 lambda **kw: data.masked_dataset(8, **kw),
                 lambda **kw: data.supervised_dataset(8, **kw)):
        full = list(make(with_replacement=True).take(6).as_numpy_iterator())
        for start in (1, 4):
            resumed = list(make(with_replacement=True, start_step=start).take(2)
                           .as_numpy_iterator())
            for expected, got in zip(full[start:], resumed):
                for key in (expected if isinstance(expected, dict) else range(len(expected))):
                    np.testing.assert_array_equal(expected[key], got[key], err_msg=str(start))
    batches = list(outside.train_dataset(8, with_replacement=True).take(20).as_numpy_iterator())
    for key in ("unlabeled_images", "generator_images"):
        drawn = set(sum((indices_of(data, batch[key]) for batch in batches), []))
        assert drawn == set(range(30)) - labeled, key         # all 20 others, no labeled one
    assert not np.array_equal(batches[0]["unlabeled_images"], batches[0]["generator_images"])
    with pytest.raises(DataError, match="four data orders: give one"):
        data.train_dataset(8, epoch_steps=3, with_replacement=True)


def test_partial_batches_cut_each_shuffle_with_its_last_batch_partial():
    """--data_order=per_shuffle (Keras fit's shuffle on GANs in Action's 100
    labels, the Udacity notebook's range(0, N, 128)): each shuffle of the one
    stream in ceil(N / batch) batches, the last partial, the next shuffle a
    new batch; resumed at any step, also across a shuffle, it gives the
    same batches. The masked batches' mask follows their images. Three
    streams (a labeled batch beside unlabeled ones) are refused."""
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    labeled = data.supervised_dataset(4, partial_batches=True)
    assert labeled.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    batches = list(labeled.take(9).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [4, 4, 2] * 3
    for shuffle in range(3):
        images = np.concatenate([batch[0] for batch in batches[3 * shuffle:3 * shuffle + 3]])
        assert sorted(indices_of(data, images)) == sorted(data.labeled_indices), shuffle
    assert indices_of(data, batches[0][0]) != indices_of(data, batches[3][0])   # reshuffled
    masked = list(data.masked_dataset(8, partial_batches=True).take(8).as_numpy_iterator())
    assert [len(batch["labels"]) for batch in masked] == [8, 8, 8, 6] * 2
    for batch in masked:
        picked = indices_of(data, batch["images"])
        np.testing.assert_array_equal(batch["label_mask"],
                                      np.isin(picked, data.labeled_indices).astype(np.float32))
    assert sorted(sum((indices_of(data, batch["images"]) for batch in masked[:4]), [])) \
        == list(range(30))
    for start in (1, 2, 3, 5):
        resumed = list(data.supervised_dataset(4, start_step=start, partial_batches=True)
                       .take(9 - start).as_numpy_iterator())
        for expected, got in zip(batches[start:], resumed):
            np.testing.assert_array_equal(expected[0], got[0], err_msg=str(start))
            np.testing.assert_array_equal(expected[1], got[1], err_msg=str(start))
    with pytest.raises(DataError, match="partial_batches cuts each shuffle of one stream"):
        data.training_dataset(4, "separate", partial_batches=True)
    with pytest.raises(DataError, match="four data orders: give one"):
        data.supervised_dataset(4, epoch_steps=3, partial_batches=True)


def _sequential_buffer_order(count, buffer_size, slot_seed, drain_seed):
    """tf.data's shuffle buffer step by step, on the draws ``buffer_order`` makes."""
    buffered = min(buffer_size, count)
    steps = count - buffered
    slots = (tf.random.stateless_uniform([steps], slot_seed, minval=0, maxval=buffered,
                                         dtype=tf.int64).numpy() if steps else [])
    buffer, order = list(range(buffered)), []
    for step in range(steps):
        order.append(buffer[slots[step]])
        buffer[slots[step]] = buffered + step        # the next item takes its place
    keys = tf.random.stateless_uniform([buffered], drain_seed).numpy()
    return order + [buffer[slot] for slot in np.argsort(keys, kind="stable")]


@pytest.mark.parametrize("count, buffer_size", [(10, 3), (200, 7), (4000, 250), (9, 9),
                                                (5, 40), (8, 1)])
def test_buffer_order_is_a_shuffle_buffer_read_to_its_end(count, buffer_size):
    """``buffer_order`` (tf.data's ``Dataset.shuffle(buffer_size)``, vectorized)
    is the sequential algorithm: each step takes a uniformly drawn slot's item
    and the next item takes its place, then the buffer is emptied in a random
    order. So an item can come out no earlier than ``buffer_size`` - 1 steps
    before its place in the input, which a global shuffle would break."""
    slot_seed, drain_seed = tf.constant([3, 1], tf.int64), tf.constant([3, 2], tf.int64)
    order = data_lib.buffer_order(count, buffer_size, slot_seed, drain_seed).numpy()
    assert order.dtype == np.int64
    assert order.tolist() == _sequential_buffer_order(count, buffer_size, slot_seed,
                                                      drain_seed)
    assert sorted(order) == list(range(count))
    place = np.argsort(order)                  # the step each item comes out at
    late = np.arange(buffer_size, count)
    assert np.all(place[late] >= late - buffer_size + 1)
    if buffer_size == 1:
        assert order.tolist() == list(range(count))


def test_buffer_order_draws_each_possible_order_alike():
    """Three items through a buffer of two: the first out is item 0 or 1,
    each half the time, and the other two follow in either order: four
    orders, a quarter each; item 2 never comes first."""
    seen = collections.Counter(
        tuple(data_lib.buffer_order(3, 2, tf.constant([seed, 0], tf.int64),
                                    tf.constant([seed, 1], tf.int64)).numpy().tolist())
        for seed in range(400))
    assert set(seen) == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0)}
    assert all(60 < times < 140 for times in seen.values()), seen


def test_the_shuffle_buffer_order_reads_one_shuffle_of_each_stream_pass_after_pass():
    """--data_order=shuffle_buffer (the MNIST blog's ``.shuffle(4000)``
    pipelines): each unlabeled stream's images shuffled once, every pass read
    through the buffer. With a buffer of one image every pass is that one
    shuffle; D's and G's streams shuffle apart; the labels are reshuffled
    every pass whatever the buffer, as are the masked batches of a stream no
    larger than it; resumed at any step, the same batches."""
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    labeled = sorted(data.labeled_indices)

    def passes(dataset, key, batches):
        taken = list(dataset.take(batches).as_numpy_iterator())
        return np.reshape(sum((indices_of(data, batch[key]) for batch in taken), []),
                          (-1, 30))

    one = data.train_dataset(10, shuffle_buffer=1)
    for key in ("unlabeled_images", "generator_images"):
        order = passes(one, key, 9)
        assert (order == order[0]).all() and order[0].tolist() != list(range(30)), key
        assert sorted(order[0]) == list(range(30))
    assert (passes(one, "unlabeled_images", 3) != passes(one, "generator_images", 3)).any()
    for make in (lambda: data.train_dataset(5, shuffle_buffer=1),
                 lambda: data.supervised_dataset(5, shuffle_buffer=1)):
        taken = list(make().take(6).as_numpy_iterator())
        images = [batch["labeled_images"] if isinstance(batch, dict) else batch[0]
                  for batch in taken]
        shuffles = [sum((indices_of(data, batch) for batch in images[i:i + 2]), [])
                    for i in (0, 2, 4)]
        assert all(sorted(shuffle) == labeled for shuffle in shuffles)
        assert len({tuple(shuffle) for shuffle in shuffles}) == 3     # a reshuffle a pass
    masked = passes(data.masked_dataset(10, shuffle_buffer=40), "images", 9)
    assert all(sorted(order) == list(range(30)) for order in masked)
    assert len({tuple(order) for order in masked}) == 3
    masked = passes(data.masked_dataset(10, shuffle_buffer=1), "images", 6)
    assert (masked == masked[0]).all()          # the masked stream reads its buffer
    full = list(data.train_dataset(4, shuffle_buffer=6).take(20).as_numpy_iterator())
    for start in (1, 7, 8, 15):
        resumed = list(data.train_dataset(4, start_step=start, shuffle_buffer=6)
                       .take(20 - start).as_numpy_iterator())
        for expected, got in zip(full[start:], resumed):
            for key in expected:
                np.testing.assert_array_equal(expected[key], got[key], err_msg=str(start))
    with pytest.raises(DataError, match="four data orders: give one"):
        data.train_dataset(4, epoch_steps=3, shuffle_buffer=6)
    for make in (data.train_dataset, data.supervised_dataset, data.masked_dataset):
        with pytest.raises(DataError, match="shuffle_buffer must be a non-negative integer"):
            make(4, shuffle_buffer=-1)


def test_a_test_fraction_keeps_the_first_part_of_the_test_split(tmp_path):
    """--test_fraction=0.5: the Udacity notebook's Dataset(val_frac=0.5) tests
    on the first int(N x 0.5) test images (the rest is its validation set)."""
    write_npz(tmp_path)
    whole = load_dataset("mnist", 10, data_dir=str(tmp_path))
    half = load_dataset("mnist", 10, data_dir=str(tmp_path), test_fraction=0.5)
    count = len(whole.test_images) // 2
    np.testing.assert_array_equal(half.test_images, whole.test_images[:count])
    np.testing.assert_array_equal(half.test_labels, whole.test_labels[:count])
    assert sum(len(labels) for _, labels in half.test_dataset(8).as_numpy_iterator()) == count
    assert half.notes[-1].startswith(f"Testing on the first {count:,} of the ")
    np.testing.assert_array_equal(half.train_images, whole.train_images)
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(DataError, match="test_fraction must be in"):
            load_dataset("mnist", 10, data_dir=str(tmp_path), test_fraction=bad)


def test_the_unlabeled_pool_outside_the_labeled_set_is_the_rest_of_the_split(tmp_path):
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path), label_selection="first",
                        unlabeled_pool="unlabeled_only")
    np.testing.assert_array_equal(data.unlabeled_indices,
                                  np.arange(10, len(data.train_images)))
    assert len(load_dataset("mnist", 10, data_dir=str(tmp_path)).unlabeled_indices) == len(
        data.train_images)
    with pytest.raises(DataError, match="masked batches are drawn from the whole training split"):
        data.training_dataset(4, label_batching="masked")
    with pytest.raises(DataError, match="unlabeled_pool must be one of all, unlabeled_only"):
        load_dataset("mnist", 10, data_dir=str(tmp_path), unlabeled_pool="rest")
    every = load_dataset("mnist", "all", data_dir=str(tmp_path), unlabeled_pool="unlabeled_only")
    assert len(list(every.supervised_dataset(4).take(1))) == 1    # a baseline needs no pool
    with pytest.raises(DataError, match="leaves no unlabeled image"):
        every.train_dataset(4)


def test_pipelines_inside_a_strategy_scope(tmp_path):
    # Made inside a strategy scope the host arrays must not become mirrored variables.
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path))
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        batch = next(iter(data.train_dataset(4)))
        images, _ = next(iter(data.test_dataset(4)))
    assert batch["unlabeled_images"].shape == (4, 28, 28, 1) and images.shape == (4, 28, 28, 1)


def test_test_dataset_keeps_the_last_partial_batch(tmp_path):
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path))
    sizes = [len(labels) for _, labels in data.test_dataset(8).as_numpy_iterator()]
    assert sizes == [8, 8, 4]


def test_reshuffled_full_test_batches_are_a_fresh_seeded_reshuffle_each_evaluation(tmp_path):
    """--test_batches=reshuffled_full (Lecouat et al.'s train_svhn.py): an
    evaluation tests on int(N / b) batches of b of a reshuffle of the N test
    images, drawn from (seed, evaluation); the evaluation a tf.Variable sets
    picks it each time the dataset is iterated, and the same evaluation is
    the same images again (a resumed run's). The batches it is cut into for
    the forward pass do not change which images."""
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path), seed=5)
    count = 23
    data = dataclasses.replace(   # image i holds the pixel value i
        data, test_images=np.arange(count, dtype=np.uint8)[:, None, None, None]
        * np.ones((1, 28, 28, 1), np.uint8), test_labels=np.arange(count) % 10)

    def tested(dataset):
        batches = [images.numpy() for images, _ in dataset]
        return ([len(batch) for batch in batches],
                [round((image[0, 0, 0] + 1) * 127.5) for batch in batches for image in batch])

    evaluation = tf.Variable(0, dtype=tf.int64)
    dataset = data.test_dataset(4, "reshuffled_full", 5, evaluation)
    sizes, first = tested(dataset)
    assert sizes == [4, 4, 4, 4, 4] and dataset.cardinality() == 5
    assert len(set(first)) == 20 and set(first) <= set(range(count))
    assert first != sorted(first)                      # reshuffled, not in order
    assert tested(dataset)[1] == first                 # the same evaluation again
    assert tested(data.test_dataset(7, "reshuffled_full", 5))[1] == first   # any batching
    evaluation.assign(1)
    second = tested(dataset)[1]
    assert set(second) != set(first) and len(set(second)) == 20
    assert tested(data.test_dataset(20, "reshuffled_full", 5, 1))[1] == second
    other_seed = dataclasses.replace(data, seed=6)
    assert tested(other_seed.test_dataset(20, "reshuffled_full", 5))[1] != first
    assert tested(data.test_dataset(8))[0] == [8, 8, 7]   # without: every image, in order
    with pytest.raises(DataError, match="23 test images make no batch of 24"):
        data.test_dataset(8, "reshuffled_full", 24)


def test_a_test_stream_scores_the_next_batches_as_the_mean_of_their_scores(tmp_path):
    """--test_batches=stream (the MNIST blog's .batch(32).repeat() test set,
    312 batches an evaluation): evaluation e reads stream batches
    [e x int(N / b), (e + 1) x int(N / b)), batch j being batch j mod
    ceil(N / b) of the test set in order, the last of a pass partial; each
    image weighs b / (its batch's size), so a weighted mean is the mean of
    the batches' means, and the missing places of a partial batch are
    padding of weight 0."""
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path))
    count = 23   # batches of 5: 4 an evaluation, 5 a pass, the last of 3
    data = dataclasses.replace(
        data, test_images=np.arange(count, dtype=np.uint8)[:, None, None, None]
        * np.ones((1, 28, 28, 1), np.uint8), test_labels=np.arange(count) % 10)

    def read(evaluation, batch_size=6):
        images, weights = [], []
        for batch_images, _, batch_weights in data.test_dataset(batch_size, "stream", 5,
                                                                evaluation):
            images += [round((image[0, 0, 0] + 1) * 127.5) for image in batch_images.numpy()]
            weights += list(batch_weights.numpy())
        return images, weights

    images, weights = read(0)
    assert images == list(range(20))      # stream batches 0-3
    np.testing.assert_allclose(weights, [1.0] * 20)
    images, weights = read(1)          # stream batches 4 (the partial one), 5, 6, 7
    assert images == [20, 21, 22, 0, 0] + list(range(15))
    np.testing.assert_allclose(weights, [5 / 3] * 3 + [0.0, 0.0] + [1.0] * 15, rtol=1e-6)
    evaluation = tf.Variable(2, dtype=tf.int64)
    dataset = data.test_dataset(20, "stream", 5, evaluation)
    assert dataset.cardinality() == 1
    assert read(evaluation) == read(2)     # stream batches 8, 9 (partial), 10, 11
    assert read(2)[0] == [15, 16, 17, 18, 19, 20, 21, 22, 0, 0] + list(range(10))
    correct = np.isin(np.arange(count), [0, 20]).astype(float)   # two right answers
    images, weights = read(1)
    batch_means = [np.mean(correct[[20, 21, 22]]), np.mean(correct[0:5]),
                   np.mean(correct[5:10]), np.mean(correct[10:15])]
    assert np.isclose(np.dot(weights, correct[images]) / np.sum(weights), np.mean(batch_means))
    with pytest.raises(DataError, match="order must be one of all, reshuffled_full, stream"):
        data.test_dataset(8, "shuffled")


# ---------------------------------------------------------------- bad input
def test_bad_arguments(tmp_path):
    write_npz(tmp_path)
    cases = [
        (dict(name="imagenet", labels=10), "imagenet"),
        (dict(name="mnist", labels=0), "labels"),
        (dict(name="mnist", labels=-10), "labels"),
        (dict(name="mnist", labels=15), "labels=15"),
        (dict(name="mnist", labels=70), "labels=70"),          # 7 per class, only 6
        (dict(name="mnist", labels="many"), "labels"),
        (dict(name="mnist", labels=10, pixel_range=(0, 255)), "pixel_range"),
        # NumPy's or TensorFlow's own error before: a seed or range --seed never allows.
        (dict(name="mnist", labels=10, seed=-1), "seed must be an integer in 0..2"),
        (dict(name="mnist", labels=10, seed=2**64), "seed must be an integer in 0..2"),
        (dict(name="mnist", labels=10, seed=1.5), "seed must be an integer in 0..2"),
        (dict(name="mnist", labels=10, pixel_range=None), "pixel_range"),
        (dict(name="mnist", labels=10, pixel_range=("low", "high")), "pixel_range"),
        (dict(name="mnist", labels=10, pixel_range="01"), "pixel_range"),
        (dict(name="mnist", labels=10, include_extra=True), "include_extra"),
    ]
    for kwargs, expected in cases:
        name = kwargs.pop("name")
        with pytest.raises(DataError, match=expected.replace("(", r"\(")) as error:
            load_dataset(name, data_dir=str(tmp_path), **kwargs)
        assert "\n" not in str(error.value)


def test_bad_pipeline_arguments(tmp_path):
    write_npz(tmp_path)
    data = load_dataset("mnist", 10, data_dir=str(tmp_path))
    for make in (lambda: data.train_dataset(0), lambda: data.test_dataset(-1),
                 lambda: data.labeled_dataset(2.5)):
        with pytest.raises(DataError, match="batch_size must be a positive integer"):
            make()
    with pytest.raises(DataError, match="start_step must be a non-negative integer"):
        data.train_dataset(8, start_step=-1)
    with pytest.raises(DataError, match="stream must be 0 or 1"):
        data.unlabeled_dataset(8, stream=2)
    with pytest.raises(DataError, match="^count must be a positive integer, got 0$"):
        data.init_batch(0)   # it said batch_size, which init_batch has not


def test_missing_directory_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", 10, data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "mnist.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"mnist.npz is a file: pass the directory that holds"):
        load_dataset("mnist", 10, data_dir=str(tmp_path / "mnist.npz"))
    (tmp_path / "mnist.npz").unlink()
    with pytest.raises(DataError, match="mnist.npz"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))          # empty directory
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 1), np.uint8),
                                                    "y": np.ones((1, 1))})
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))
    with pytest.raises(DataError, match="data_dir .* holds no cifar10 files") as error:
        load_dataset("cifar10", 10, data_dir=str(tmp_path))
    assert "download_and_prepare" not in str(error.value)    # TFDS' advice, not a CLI user's
    # Train files alone: the message lists the test files that are missing.
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx)
    (idx / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", 10, data_dir=str(idx))


@pytest.mark.parametrize("dataset, write, remove, expected", [
    ("mnist", write_idx, "train-labels-idx1-ubyte.gz", r"lacks train-labels-idx1-ubyte.gz \("),
    ("mnist", write_idx, "train-images-idx3-ubyte.gz", r"lacks train-images-idx3-ubyte.gz \("),
    ("svhn", write_svhn, "train_32x32.mat", r"lacks train_32x32.mat"),
    ("cifar10", lambda d: write_cifar10(d, "bin_files"), "data_batch_1.bin",
     r"p[/\\]data lacks data_batch_1.bin \("),
    ("cifar10", lambda d: write_cifar10(d.parent, "py_folder"), "data_batch_1",
     r"cifar-10-batches-py lacks data_batch_1 \("),
])
def test_a_directory_missing_some_of_its_files_names_them(dataset, write, remove, expected,
                                                          tmp_path):
    """Some but not all of a format's files: the missing ones are named (it
    said the directory held no files of the data set at all)."""
    directory = tmp_path / "p" / "data"
    directory.mkdir(parents=True)
    write(directory)
    if dataset == "cifar10" and remove == "data_batch_1":
        directory = tmp_path / "p"
        (directory / "cifar-10-batches-py" / remove).unlink()
    else:
        (directory / remove).unlink()
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(dataset, 10, data_dir=str(directory))
    assert "holds no" not in str(error.value)


def test_a_whole_cifar10_set_is_read_beside_a_partial_one(tmp_path):
    batches = write_cifar10(tmp_path, "py_folder")
    (tmp_path / "test_batch.bin").write_bytes(b"")      # a stray file of the binary version
    data = load_dataset("cifar10", 10, data_dir=str(tmp_path))
    np.testing.assert_array_equal(data.test_images, batches["test_batch"][0])


def test_truncated_and_corrupt_files(tmp_path):
    write_npz(tmp_path)
    content = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="mnist.npz"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))

    # A compressed .npz (as Keras ships it) with a corrupt deflate stream: the
    # first byte flip that makes zlib itself fail.
    compressed = tmp_path / "compressed"
    compressed.mkdir()
    x, y = fake_digits(2, (28, 28))
    np.savez_compressed(compressed / "mnist.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    content = (compressed / "mnist.npz").read_bytes()
    for offset in range(100, len(content)):
        flipped = content[:offset] + bytes([content[offset] ^ 0xFF]) + content[offset + 1:]
        (compressed / "mnist.npz").write_bytes(flipped)
        try:
            with np.load(compressed / "mnist.npz") as archive:
                [archive[key] for key in archive.files]
        except zlib.error:
            break
        except Exception:   # noqa: BLE001 -- other corruptions: not this case
            continue
    else:
        pytest.fail("no byte flip made zlib fail")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset("mnist", 10, data_dir=str(compressed))

    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx)
    path = idx / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as file:
        raw = file.read()
    with gzip.open(path, "wb") as file:
        file.write(raw[:-100])                                   # truncated payload
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", 10, data_dir=str(idx))
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", 10, data_dir=str(idx))
    # A gzip header before a corrupt deflate stream: zlib's own error.
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 64)
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_dataset("mnist", 10, data_dir=str(idx))

    npy = tmp_path / "npy"        # one array saved by np.save, under the .npz name
    npy.mkdir()
    np.save(npy / "mnist.npy", fake_digits(2, (28, 28))[0])
    os.rename(npy / "mnist.npy", npy / "mnist.npz")
    with pytest.raises(DataError, match="holds one array .a .npy file., not a .npz archive"):
        load_dataset("mnist", 10, data_dir=str(npy))

    svhn = tmp_path / "svhn"
    svhn.mkdir()
    write_svhn(svhn)
    (svhn / "train_32x32.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_dataset("svhn", 10, data_dir=str(svhn))


def test_idx_images_of_another_size_are_named_so_not_truncated(tmp_path):
    write_idx(tmp_path)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as file:
        file.write(struct.pack(">IIII", 2051, 60, 32, 32) + bytes(60 * 32 * 32))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz holds 32x32 images, "
                                        r"expected 28x28"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))


def test_idx_file_with_bytes_after_its_items_is_called_corrupt_not_truncated(tmp_path):
    write_idx(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as file:
        raw = file.read()
    with gzip.open(path, "wb") as file:
        file.write(raw + b"\x00" * 7)
    with pytest.raises(DataError) as error:
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    assert "t10k-labels-idx1-ubyte.gz is corrupt: 7 bytes follow its 20 items" in str(error.value)
    assert "truncated" not in str(error.value)


def test_npz_images_of_another_integer_type_within_0_255_are_read_as_uint8(tmp_path):
    x_train, y_train = write_npz(tmp_path)
    with np.load(tmp_path / "mnist.npz") as archive:
        arrays = dict(archive)
    np.savez(tmp_path / "mnist.npz", **{**arrays, "x_train": arrays["x_train"].astype(np.int64)})
    data = load_dataset("mnist", 10, data_dir=str(tmp_path))
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images[..., 0], x_train)
    too_bright = arrays["x_train"].astype(np.int64)
    too_bright[3, 0, 0] = 256
    np.savez(tmp_path / "mnist.npz", **{**arrays, "x_train": too_bright})
    with pytest.raises(DataError, match=r"mnist.npz x_train: pixels must be in 0..255, "
                                        r"got 0..256"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))


def test_a_stray_local_file_beside_a_tfds_copy_says_it_hides_that_copy(tmp_path):
    write_idx(tmp_path)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()            # one stray IDX file is left
    with pytest.raises(DataError) as without_copy:
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    assert "TFDS" not in str(without_copy.value)
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)   # where TFDS prepares mnist
    with pytest.raises(DataError) as with_copy:
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    assert str(with_copy.value).startswith(str(without_copy.value))
    assert f"data_dir also holds TFDS' {tmp_path / 'mnist'}" in str(with_copy.value)
    assert "move those away" in str(with_copy.value)


def test_wrong_shapes_and_ranges(tmp_path):
    def npz(**arrays):
        x, y = fake_digits(2, (28, 28))
        base = dict(x_train=x, y_train=y, x_test=x, y_test=y)
        base.update(arrays)
        np.savez(tmp_path / "mnist.npz", **base)

    npz(x_train=np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(DataError, match="shape"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    npz(x_train=np.zeros((20, 28, 28), np.float32))
    with pytest.raises(DataError, match="uint8"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    npz(y_train=np.full(20, 12))
    with pytest.raises(DataError, match="0..9"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    npz(y_train=np.zeros(19, np.int64))
    with pytest.raises(DataError, match="labels must have shape"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    npz(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="mnist train holds no images"):
        load_dataset("mnist", "all", data_dir=str(tmp_path))
    npz(y_train=np.full(20, 1.5))
    with pytest.raises(DataError, match="y_train: labels must be whole numbers"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    npz(x_test=np.zeros((20, 28), np.uint8))
    with pytest.raises(DataError, match="test images must be uint8 of shape"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                    "y": np.array([[0], [11]])})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                   "y": np.array([[1], [2]])})
    with pytest.raises(DataError, match="1..10"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.float64),
                                                    "y": np.array([[1], [2]])})
    with pytest.raises(DataError, match="train_32x32.mat: X must be uint8"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 1, 2), np.uint8),
                                                    "y": np.array([[1], [2]])})
    with pytest.raises(DataError, match="32x32x3xN"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))


def test_bad_arrays_in_a_local_file_are_refused_naming_the_file(tmp_path):
    """Labels out of range or an empty split: the message names the file
    (it said only "mnist train labels must be in 0..9")."""
    npz = tmp_path / "npz"
    npz.mkdir()
    x, y = fake_digits(2, (28, 28))
    np.savez(npz / "mnist.npz", x_train=x, y_train=np.full(20, 12), x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"mnist.npz: mnist train labels must be in 0..9"):
        load_dataset("mnist", 10, data_dir=str(npz))

    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx)
    with gzip.open(idx / "t10k-labels-idx1-ubyte.gz", "wb") as file:
        file.write(struct.pack(">II", 2049, 20) + bytes([11] * 20))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: mnist test labels must be "
                                        r"in 0..9, got 11..11"):
        load_dataset("mnist", 10, data_dir=str(idx))

    python = tmp_path / "py"
    python.mkdir()
    write_cifar10(python, "py_files")
    (python / "data_batch_4").write_bytes(pickle.dumps(
        {b"data": np.zeros((3, 3072), np.uint8), b"labels": [-1, 0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_4: labels must be in 0..9, got -1..1"):
        load_dataset("cifar10", 10, data_dir=str(python))
    (python / "data_batch_4").write_bytes(cifar10_bytes(*cifar10_batches()["data_batch_4"], "py"))
    (python / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    with pytest.raises(DataError, match=r"test_batch holds no images"):
        load_dataset("cifar10", 10, data_dir=str(python))

    svhn = tmp_path / "svhn"
    svhn.mkdir()
    write_svhn(svhn)
    scipy.io.savemat(svhn / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 0), np.uint8),
                                               "y": np.zeros((0, 1))})
    with pytest.raises(DataError, match=r"test_32x32.mat holds no images"):
        load_dataset("svhn", 10, data_dir=str(svhn))



def test_labels_beyond_int64_are_named_as_the_file_holds_them(tmp_path):
    """Cast to int64 first, 2**64 - 1 wrapped to -1 and 1e30 to -2**63 (with a
    RuntimeWarning): the line named labels the file does not hold."""
    x, y = fake_digits(2, (28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.full(20, 2**64 - 1, np.uint64),
             x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"mnist.npz y_train: labels must be class numbers, "
                                        r"got 18446744073709551615\.\.18446744073709551615"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                   "y": np.array([[1.0], [1e30]])})
    with pytest.raises(DataError, match=r"test_32x32.mat y: labels must be class numbers, "
                                        r"got 1.0\.\.1e\+30"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))

def test_svhn_with_extra_names_the_extra_file_among_those_expected(tmp_path):
    """With --include_extra the files to pass include extra_32x32.mat; the line
    named train and test only, so following it led to 'lacks extra_32x32.mat'."""
    with pytest.raises(DataError, match=r"holds no svhn files \(expected train_32x32.mat, "
                                        r"test_32x32.mat, extra_32x32.mat or prepared TFDS"):
        load_dataset("svhn", 10, data_dir=str(tmp_path), include_extra=True)
    with pytest.raises(DataError, match=r"holds no svhn files \(expected train_32x32.mat, "
                                        r"test_32x32.mat or prepared TFDS"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))


def test_a_nan_label_in_a_mat_file_is_named_without_a_numpy_warning(tmp_path):
    """A NaN (or inf) in y: the line names it, and NumPy's RuntimeWarning of
    its remainder no longer prints two lines of source before that line."""
    import warnings
    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                   "y": np.array([[1.0], [np.nan]])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"test_32x32.mat y: labels must be whole numbers, "
                                            r"got nan \(dtype float64\)$"):
            load_dataset("svhn", 10, data_dir=str(tmp_path))


def test_a_matlab_v7_3_file_says_to_save_it_as_v7(tmp_path):
    """scipy cannot read MATLAB's HDF5 format; its reason said to use h5py."""
    import h5py
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    with h5py.File(path, "w", userblock_size=512) as file:   # as MATLAB's save -v7.3
        file["X"] = np.zeros((2, 3, 32, 32), np.uint8)       # column-major: axes reversed
        file["y"] = np.ones((1, 2))
    with open(path, "r+b") as file:   # the MAT header in the user block: v7.3 is 0x0200
        file.write(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM")
    with pytest.raises(DataError, match=r"train_32x32.mat is a MATLAB v7.3 \(HDF5\) file, which "
                                        r"scipy cannot read; save it as v7"):
        load_dataset("svhn", 10, data_dir=str(tmp_path))


def test_init_batch_draws_from_the_asked_pool(tmp_path):
    write_npz(tmp_path, per_class=30)
    data = load_dataset("mnist", 20, seed=3, data_dir=str(tmp_path), pixel_range=(0.0, 1.0))
    labeled = data.init_batch(50, "labeled")["unlabeled_images"].numpy()
    # Only the 20 labeled images, tiled: each pixel pattern is one of theirs.
    allowed = {data.train_images[i].tobytes() for i in data.labeled_indices}
    as_uint8 = np.round(labeled * 255).astype(np.uint8)
    assert {image.tobytes() for image in as_uint8} == allowed
    anywhere = data.init_batch(200, "unlabeled")["unlabeled_images"].numpy()
    assert anywhere.shape == (200, 28, 28, 1) and 0.0 <= anywhere.min() and anywhere.max() <= 1.0
    assert len({image.tobytes() for image in anywhere}) == 200          # no repeats
    np.testing.assert_array_equal(anywhere, data.init_batch(200)["unlabeled_images"].numpy())
    with pytest.raises(DataError, match="init source"):
        data.init_batch(10, "test")


# ------------------------------------------------------------ image folders
def write_folder(root, classes=("zebra", "apple", "mango"), per_class=5, unlabeled=12,
                 test=True, size=12, channels=3, seed=0, distinct=False):
    """A folder data set of PNG and JPEG files; each image is one flat colour
    whose value says its class (class k: 40 * (k + 1)). ``distinct``: the
    labeled image i of class k is 40 * (k + 1) + 3 * i instead, each its own
    (per_class <= 13), so that which images a split took can be seen."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)

    def write(path, value):
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((size, size, channels), value, np.uint8)
        encode = tf.io.encode_jpeg if path.suffix == ".jpg" else tf.io.encode_png
        path.write_bytes(encode(pixels).numpy())

    for split, count in (("labeled", per_class),) + ((("test", 2),) if test else ()):
        for k, name in enumerate(classes):
            for i in range(count):
                value = 40 * (k + 1) + (3 * i if distinct and split == "labeled" else 0)
                write(root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}", value)
    for i in range(unlabeled):           # nested folders, any depth
        write(root / "unlabeled" / f"part{i % 3}" / ("deep" if i % 2 else "") / f"u{i}.png",
              int(rng.integers(0, 256)))


def test_image_files_follow_linked_folders_once_and_name_one_that_cannot_be_listed(
        tmp_path, monkeypatch):
    # A linked folder's images were left out without a word (os.walk follows no link).
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    for folder in (root / "a", root / "b", elsewhere):
        folder.mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"")
    (elsewhere / "2.png").write_bytes(b"")
    (root / "b" / "linked").symlink_to(elsewhere)
    (root / "b" / "loop").symlink_to(root)          # a cycle: walked once
    (root / "c").symlink_to(root / "a")             # a second way in: its files once
    assert data_lib.image_files_in(root) == [str(root / "a" / "1.png"),
                                             str(root / "b" / "linked" / "2.png")]
    scandir = os.scandir

    def unlistable(path):
        if os.fspath(path) == str(root / "b"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", unlistable)
    with pytest.raises(data_lib.DataError, match=rf"^cannot list the folder {root / 'b'} "
                                                 r"\(Permission denied\)$"):
        data_lib.image_files_in(root)


def test_image_folder_reads_classes_in_sorted_order_and_resizes(tmp_path):
    write_folder(tmp_path)
    # apple's 0.png (labeled_images[0]: apple sorts first) is neither flat nor square, 10 x 20:
    # red grows left to right, green top to bottom, 0 to 160 (mean 80, apple's).
    rows, columns = np.meshgrid(np.linspace(0, 160, 10), np.linspace(0, 160, 20), indexing="ij")
    gradient = np.stack([columns, rows, np.full_like(rows, 80)], axis=-1).round().astype(np.uint8)
    (tmp_path / "labeled" / "apple" / "0.png").write_bytes(tf.io.encode_png(gradient).numpy())
    (tmp_path / "unlabeled" / "broken.png").write_bytes(b"not an image")
    for split in ("labeled", "test"):     # a notebook's hidden folder is no class
        (tmp_path / split / ".ipynb_checkpoints").mkdir()
    folder = data_lib.read_image_folder(tmp_path, (8, 8, 3))
    # Sorted names, not the order the folders were made in.
    assert folder.class_names == ("apple", "mango", "zebra")
    assert folder.labeled_images.shape == (15, 8, 8, 3) and folder.labeled_images.dtype == np.uint8
    # Resized whole (bilinear, antialiased; to the nearest uint8), not cropped:
    # each edge keeps its end of the gradients, which an 8 x 8 corner has not.
    resized = folder.labeled_images[0]
    expected = tf.image.resize(gradient.astype(np.float32), (8, 8), antialias=True).numpy()
    np.testing.assert_allclose(resized, expected, atol=0.5 + 1e-3)
    assert resized[:, 0, 0].max() < 20 and resized[:, -1, 0].min() > 140     # red
    assert resized[0, :, 1].max() < 20 and resized[-1, :, 1].min() > 140     # green
    value = {"zebra": 40, "apple": 80, "mango": 120}          # written as 40 * (k + 1)
    for image, label in zip(folder.labeled_images, folder.labeled_labels):
        assert abs(int(image.mean()) - value[folder.class_names[label]]) <= 2  # JPEG rounding
    assert len(folder.unlabeled_images) == 12
    assert [os.path.basename(p) for p in folder.skipped] == ["broken.png"]
    assert not folder.test_held_out and np.bincount(folder.test_labels).tolist() == [2, 2, 2]


def test_an_image_file_it_may_not_read_is_skipped_as_unreadable(tmp_path, monkeypatch):
    """EACCES (a file of another user) is an unreadable image, as a corrupt one
    is. The tests run as root, whom no mode bit stops, so the read is refused
    here by TensorFlow's error for it."""
    write_folder(tmp_path)
    forbidden = tmp_path / "unlabeled" / "part0" / "u0.png"
    read_file = tf.io.read_file

    def refuse(path, *args, **kwargs):
        if path == os.fspath(forbidden):
            raise tf.errors.PermissionDeniedError(None, None, f"{path}; Permission denied")
        return read_file(path, *args, **kwargs)

    monkeypatch.setattr(tf.io, "read_file", refuse)
    with pytest.raises(data_lib.UnreadableImage, match=r"u0\.png cannot be read or decoded "
                       r"\(.*Permission denied\)"):
        data_lib.read_image_file(forbidden, (8, 8, 3))
    folder = data_lib.read_image_folder(tmp_path, (8, 8, 3))
    assert folder.skipped == (os.fspath(forbidden),) and len(folder.unlabeled_images) == 11


def test_a_named_pipe_called_png_is_skipped_without_being_opened(tmp_path, monkeypatch):
    """Opening a FIFO blocks until something writes to it: a folder data set (and
    predict, which reads through ``read_image_file``) skips it unread. The read
    is made to fail loudly here instead of blocking, should it happen."""
    write_folder(tmp_path)
    pipe = tmp_path / "unlabeled" / "part0" / "pipe.png"
    os.mkfifo(pipe)
    read_file = tf.io.read_file

    def no_pipe(path, *args, **kwargs):
        assert path != os.fspath(pipe), "the named pipe was opened"
        return read_file(path, *args, **kwargs)

    monkeypatch.setattr(tf.io, "read_file", no_pipe)
    with pytest.raises(data_lib.UnreadableImage, match=r"pipe\.png is a named pipe, not a regular file"):
        data_lib.read_image_file(pipe, (8, 8, 3))
    folder = data_lib.read_image_folder(tmp_path, (8, 8, 3))
    assert folder.skipped == (os.fspath(pipe),) and len(folder.unlabeled_images) == 12


PIPED_LOCAL_FILES = {   # data set, the files of one local format, made named pipes
    "mnist npz": ("mnist", ["mnist.npz"]),
    "mnist idx": ("mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
    "svhn mat": ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
    "cifar10 bin": ("cifar10", [f"cifar-10-batches-bin/{name}.bin" for name in
                                data_lib.CIFAR10_TRAIN_BATCHES + (data_lib.CIFAR10_TEST_BATCH,)]),
    "cifar10 tar.gz": ("cifar10", ["cifar-10-binary.tar.gz"]),
}


@pytest.mark.parametrize("layout", PIPED_LOCAL_FILES)
def test_a_named_pipe_in_place_of_a_local_data_file_is_refused_unread(tmp_path, layout):
    """Opening a FIFO waits for a writer without end. Should a reader open one,
    a thread writes nothing to it after 5 s, so the test fails instead of hanging."""
    name, files = PIPED_LOCAL_FILES[layout]
    pipes = [tmp_path / file for file in files]
    for pipe in pipes:
        pipe.parent.mkdir(exist_ok=True)
        os.mkfifo(pipe)
    done = threading.Event()

    def unblock_readers():
        if not done.wait(5):
            for pipe in pipes:
                try:     # succeeds only while a reader waits: it then reads an empty file
                    os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass

    threading.Thread(target=unblock_readers, daemon=True).start()
    try:
        with pytest.raises(DataError, match=r"is a named pipe, not a regular file"):
            load_dataset(name, "all", data_dir=str(tmp_path))
    finally:
        done.set()



@pytest.mark.parametrize("layout", PIPED_LOCAL_FILES)
def test_a_broken_link_in_place_of_a_local_data_file_is_named(tmp_path, layout):
    """A link to a data file on a drive not mounted: each set's line names
    the link, not a missing file or a directory that holds no data."""
    name, files = PIPED_LOCAL_FILES[layout]
    for file in files:
        (tmp_path / file).parent.mkdir(exist_ok=True)
        os.symlink(tmp_path / "unmounted" / os.path.basename(file), tmp_path / file)
    with pytest.raises(DataError, match=rf"{files[0]} is a broken symbolic link \(to "):
        load_dataset(name, "all", data_dir=str(tmp_path))

def test_a_folders_labels_are_class_balanced_even_for_first(tmp_path):
    """A folder is read class by class: 'the first N images' would be one
    class's, so a preset's label_selection='first' draws balanced there."""
    write_folder(tmp_path, per_class=4)
    data = data_lib.load_dataset(f"folder:{tmp_path}", 6, label_selection="first", seed=3,
                                 image_shape=(8, 8, 3))
    labels = data.train_labels[data.labeled_indices]
    assert np.bincount(labels, minlength=3).tolist() == [2, 2, 2]
    assert any("not the first images" in note for note in data.notes)
    balanced = data_lib.load_dataset(f"folder:{tmp_path}", 6, seed=3, image_shape=(8, 8, 3))
    np.testing.assert_array_equal(balanced.labeled_indices, data.labeled_indices)


def test_image_folder_without_test_holds_out_a_seeded_part(tmp_path):
    write_folder(tmp_path, test=False, per_class=10, distinct=True)   # 30 different images

    def split(seed):
        """The held-out and the kept images, each a set of their values (flat
        images, written 3 apart: JPEG's rounding cannot make two alike)."""
        folder = data_lib.read_image_folder(tmp_path, (8, 8, 3), seed=seed)
        assert folder.test_held_out
        assert np.bincount(folder.test_labels).tolist() == [2, 2, 2]    # 20% of each class
        assert np.bincount(folder.labeled_labels).tolist() == [8, 8, 8]
        held_out = {round(image.mean()) for image in folder.test_images}
        kept = {round(image.mean()) for image in folder.labeled_images}
        assert len(held_out) == 6 and len(kept) == 24 and not held_out & kept
        return held_out, kept

    first = split(seed=1)
    assert split(seed=1) == first                  # the seed alone picks them
    other = split(seed=2)
    assert other[0] != first[0]                    # another seed, other images
    assert other[0] | other[1] == first[0] | first[1]   # out of the same 30


def test_image_folder_channel_conversion_is_explicit(tmp_path):
    write_folder(tmp_path, channels=3)
    with pytest.raises(DataError, match="is colour \\(RGB\\) but the images must be grayscale"):
        data_lib.read_image_folder(tmp_path, (8, 8, 1))
    folder = data_lib.read_image_folder(tmp_path, (8, 8, 1), convert_channels=True)
    assert folder.labeled_images.shape[-1] == 1


def test_a_gray_gif_is_a_grayscale_image(tmp_path):
    # TensorFlow decodes every GIF as RGB: a grayscale GIF (PIL's "L" image,
    # saved with a palette of grays) was refused for a grayscale model.
    from PIL import Image     # Pillow: a dependency of matplotlib
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(pixels).save(tmp_path / "gray.gif")
    image = data_lib.read_image_file(tmp_path / "gray.gif", (8, 8, 1))
    np.testing.assert_array_equal(image[..., 0], pixels)
    Image.fromarray(np.stack([pixels, pixels, 255 - pixels], axis=-1)).save(tmp_path / "rgb.gif")
    with pytest.raises(DataError, match="is colour \\(RGB\\) but the images must be grayscale"):
        data_lib.read_image_file(tmp_path / "rgb.gif", (8, 8, 1))


def test_a_bmp_with_a_palette_takes_its_colours(tmp_path):
    # TensorFlow's BMP decoder returns an 8-bit BMP's palette indices as one
    # gray channel: a colour palette gave a gray image of indices.
    from PIL import Image     # Pillow: a dependency of matplotlib
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    indexed = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    indexed.save(tmp_path / "colour.bmp")
    image = data_lib.read_image_file(tmp_path / "colour.bmp", (8, 8, 3))
    np.testing.assert_array_equal(image, np.asarray(indexed.convert("RGB")))
    with pytest.raises(DataError, match="is colour \\(RGB\\) but the images must be grayscale"):
        data_lib.read_image_file(tmp_path / "colour.bmp", (8, 8, 1))
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4     # PIL saves it with a gray palette
    Image.fromarray(gray).save(tmp_path / "gray.bmp")
    np.testing.assert_array_equal(
        data_lib.read_image_file(tmp_path / "gray.bmp", (8, 8, 1))[..., 0], gray)


def test_a_jpeg_is_turned_upright_as_its_exif_orientation_says(tmp_path):
    # A phone stores a portrait photo sideways with an EXIF orientation, which
    # TensorFlow's JPEG decoder ignores: the digit was read lying on its side.
    from PIL import Image, ImageOps     # Pillow: a dependency of matplotlib
    stored = np.random.default_rng(0).integers(0, 256, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    decoded = data_lib.read_image_file(tmp_path / "plain.jpg", (16, 8, 3))  # TF's own pixels
    for orientation in range(1, 9):
        photo = Image.fromarray(stored)
        exif = photo.getexif()
        exif[0x0112] = orientation
        photo.save(tmp_path / f"{orientation}.jpg", quality=95, exif=exif.tobytes())
        tagged = Image.fromarray(decoded)
        tagged.getexif()[0x0112] = orientation
        upright = np.asarray(ImageOps.exif_transpose(tagged))   # as PIL turns it
        image = data_lib.read_image_file(tmp_path / f"{orientation}.jpg", upright.shape)
        np.testing.assert_array_equal(image, upright, err_msg=f"orientation {orientation}")
    assert data_lib.read_image_file(tmp_path / "6.jpg", (4, 8, 3)).shape == (4, 8, 3)
    # A PNG's pixels are as stored: the tag is read from JPEGs only.
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "6.png", exif=exif.tobytes())
    np.testing.assert_array_equal(data_lib.read_image_file(tmp_path / "6.png", (16, 8, 3)),
                                  stored)


def test_image_folder_bad_layouts_are_named(tmp_path):
    with pytest.raises(DataError, match="nowhere does not exist; expected"):
        data_lib.read_image_folder(tmp_path / "nowhere", (8, 8, 3))
    write_folder(tmp_path / "a")
    for image in (tmp_path / "a" / "labeled" / "mango").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="class 'mango' has no readable image"):
        data_lib.read_image_folder(tmp_path / "a", (8, 8, 3))
    write_folder(tmp_path / "b", unlabeled=0)
    (tmp_path / "b" / "unlabeled").mkdir()
    with pytest.raises(DataError, match="unlabeled holds no readable image"):
        data_lib.read_image_folder(tmp_path / "b", (8, 8, 3))
    write_folder(tmp_path / "c", classes=("only",))
    with pytest.raises(DataError, match="at least two"):
        data_lib.read_image_folder(tmp_path / "c", (8, 8, 3))
    # The export's labels.txt holds a class name a line: one with a line break
    # would make the run's own export unreadable to predict.
    write_folder(tmp_path / "d", classes=("ant", "bee\nwasp"))
    with pytest.raises(DataError, match=r"class folder '.*bee\\nwasp' has a line break"):
        data_lib.read_image_folder(tmp_path / "d", (8, 8, 3))


def test_image_folder_names_that_are_not_utf8(tmp_path):
    """A file name's bytes that are not UTF-8 (an old Latin-1 archive): the
    file is skipped like an unreadable one (TensorFlow cannot open it); a
    class folder so named is refused, its name shown with escapes, since the
    run writes class names as UTF-8 text (class_names.json, labels.txt)."""
    write_folder(tmp_path / "a")
    good = (tmp_path / "a" / "labeled" / "apple" / "0.png").read_bytes()
    latin = os.path.join(os.fsencode(tmp_path / "a" / "unlabeled"), b"caf\xe9.png")
    with open(latin, "wb") as file:
        file.write(good)
    folder = data_lib.read_image_folder(tmp_path / "a", (8, 8, 3))
    assert folder.skipped == (os.fsdecode(latin),)
    assert faults.printable(folder.skipped[0]).endswith("caf\\xe9.png")
    os.rename(os.fsencode(tmp_path / "a" / "labeled" / "mango"),
              os.path.join(os.fsencode(tmp_path / "a" / "labeled"), b"mang\xf3"))
    with pytest.raises(DataError, match=r"class folder .*mang\\xf3 has a name that is not "
                                        r"UTF-8 text; rename it$"):
        data_lib.read_image_folder(tmp_path / "a", (8, 8, 3))


# Run once per session in one interpreter under ``PYTHONUTF8=0 LC_ALL=C`` (the
# file name and text encodings are chosen at start-up): what read_image_folder
# refuses for a UTF-8 class folder name, the notes of load_dataset for a UTF-8
# image name, and a text file written by faults.write_text, as every text
# output of the package is (metrics.csv, flags.json, the experiments' records).
ASCII_FILE_NAMES = """
import json, sys
from sgan_keras import data, faults
report = {}
try:
    faults.write_text(sys.argv[1] + "/written.txt", "g / \\u2016v\\u2016, caf\\u00e9")
except UnicodeError as error:
    report["written"] = repr(error)
try:
    data.read_image_folder(sys.argv[1] + "/class_folder", (8, 8, 3))
except data.DataError as error:
    report["class_folder"] = str(error)
loaded = data.load_dataset("folder:" + sys.argv[1] + "/image_name", "all", image_shape=(8, 8, 3))
report["image_name"] = [note for note in loaded.notes if "Skipped" in note]
print(json.dumps(report))   # ASCII: JSON escapes the rest
"""


def write_utf8_named_folders(root):
    """``root/class_folder``, whose class 'café' has a UTF-8 name, and
    ``root/image_name``, whose unlabeled 'café.png' has one."""
    write_folder(root / "class_folder", classes=("ant", "café"))
    write_folder(root / "image_name")
    (root / "image_name" / "unlabeled" / "café.png").write_bytes(
        (root / "image_name" / "unlabeled" / "part0" / "u0.png").read_bytes())


@pytest.fixture(scope="session")
def under_an_ascii_file_name_encoding(tmp_path_factory):
    """The report of ASCII_FILE_NAMES on write_utf8_named_folders' folders, and their root."""
    import json
    import subprocess
    import sys
    from conftest import made_once

    def make(directory):
        write_utf8_named_folders(directory)
        result = subprocess.run(
            [sys.executable, "-c", ASCII_FILE_NAMES, str(directory)], capture_output=True,
            text=True, timeout=300, env={**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C",
                                         "LANG": "C", "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert result.returncode == 0, result.stderr[-2000:]
        (directory / "report.json").write_text(result.stdout.strip().splitlines()[-1])

    root = made_once(tmp_path_factory, "ascii_file_names", make)
    return json.loads((root / "report.json").read_text()), root


def test_a_utf8_class_folder_under_an_ascii_file_name_encoding_says_to_change_the_locale(
        under_an_ascii_file_name_encoding):
    """Under ``PYTHONUTF8=0 LC_ALL=C`` a UTF-8 class folder name ('café')
    arrives undecoded: the refusal said only to rename it."""
    report, _ = under_an_ascii_file_name_encoding
    assert report.get("class_folder", "").endswith(
        "has a name that is not UTF-8 text (this Python decodes file names as ascii: run it "
        "under a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or with PYTHONUTF8=1); rename it"), report


def test_a_utf8_image_name_skipped_under_an_ascii_file_name_encoding_says_to_change_the_locale(
        under_an_ascii_file_name_encoding):
    """Under ``PYTHONUTF8=0 LC_ALL=C`` an unlabeled 'café.png' arrives undecoded
    and is skipped: the note gives the cause, as for a class folder."""
    import sys
    report, root = under_an_ascii_file_name_encoding
    notes = " ".join(report["image_name"])
    assert "Skipped 1 unreadable image file(s)" in notes
    assert ("a name that is not UTF-8 (this Python decodes file names as ascii: run it under "
            "a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or with PYTHONUTF8=1))") in notes, notes
    # Decoded as UTF-8 (as this Python does), the same file is read.
    assert sys.getfilesystemencoding() == "utf-8"
    loaded = load_dataset(f"folder:{root / 'image_name'}", "all", image_shape=(8, 8, 3))
    assert [note for note in loaded.notes if "Skipped" in note] == []


def test_text_files_are_written_as_utf8_under_an_ascii_locale(under_an_ascii_file_name_encoding):
    """faults.write_text (every text file the package and its experiment
    scripts write) writes UTF-8 whatever the locale: under ``PYTHONUTF8=0
    LC_ALL=C`` it raised UnicodeEncodeError on the README's '‖'."""
    report, root = under_an_ascii_file_name_encoding
    assert "written" not in report, report["written"]
    assert (root / "written.txt").read_bytes() == "g / \u2016v\u2016, caf\u00e9".encode()


# ------------------------------------------------------------- any TFDS set
def test_any_tfds_image_classification_set_with_its_class_names(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=20):   # a name the package does not build in
        fashion = data_lib.read_tfds_images("fashion_mnist", (28, 28, 1), data_dir=str(tmp_path))
        with pytest.raises(DataError, match="grayscale but the model takes colour"):
            data_lib.read_tfds_images("fashion_mnist", (32, 32, 3), data_dir=str(tmp_path))
        colour = data_lib.read_tfds_images("fashion_mnist", (32, 32, 3), data_dir=str(tmp_path),
                                           convert_channels=True)
    assert fashion.class_names[:3] == ("T-shirt/top", "Trouser", "Pullover")
    assert fashion.train_images.shape == (20, 28, 28, 1) and fashion.train_images.dtype == np.uint8
    assert fashion.test_images.shape == (20, 28, 28, 1)
    assert fashion.train_labels.max() < 10 and colour.train_images.shape == (20, 32, 32, 3)


def test_a_tfds_set_offline_says_how_to_prepare_it(tmp_path, monkeypatch):
    """``tfds:NAME`` reads TFDS' prepared data only, so the offline advice is
    to prepare it elsewhere, not to pass the built-in sets' local files."""
    import socket
    with socket.socket() as probe:      # a closed local port: the request is refused
        probe.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for variable in ("HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(variable, proxy)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(DataError, match=r"^cannot download mnist: .* is unreachable .*; without "
                       r"a network, prepare it where there is one \(`tfds build mnist "
                       r"--data_dir=DIR`\) and pass --data_dir=DIR$"):
        data_lib.read_tfds_images("mnist", (28, 28, 1))
    with pytest.raises(DataError, match=r"^data_dir .*empty holds no prepared TFDS mnist "):
        data_lib.read_tfds_images("mnist", (28, 28, 1), data_dir=str(tmp_path / "empty"))


def test_the_download_check_skips_urls_requests_cannot_fetch(monkeypatch):
    """An ftp:// URL (so2sat's) is TFDS' to fetch: requests has no FTP adapter,
    so the check said the host was unreachable even with a network."""
    import socket
    with socket.socket() as probe:      # a closed local port: the request is refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/b.h5"
    monkeypatch.setenv("NO_PROXY", "*")

    class Builder:
        name = "ftp_set"
        url_infos = {"ftp://user:password@127.0.0.1/a.h5": None}

        def is_prepared(self):
            return False

    data_lib._check_download_reachable(Builder(), "hint")   # left to TFDS: no error
    Builder.url_infos = {**Builder.url_infos, closed: None}
    with pytest.raises(DataError, match=r"^cannot download ftp_set: 127\.0\.0\.1:\d+ is "
                                        r"unreachable .*; without a network, hint$"):
        data_lib._check_download_reachable(Builder(), "hint")


def test_a_tfds_set_downloaded_by_hand_points_at_its_instructions(tmp_path, monkeypatch):
    """TFDS' first line ends 'using instructions:' (cut at 200 characters), the
    instructions on the lines the one-line reason drops: the catalog page has them."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"^TFDS resisc45 is downloaded by hand \(see https://"
                       r"www\.tensorflow\.org/datasets/catalog/resisc45\): Manual directory "):
        data_lib.read_tfds_images("resisc45", (32, 32, 3))


def test_a_tfds_set_of_rgba_images_loses_its_alpha_channel(tmp_path, monkeypatch):
    """As read_image_file drops it; no TFDS set of this version has RGBA
    images, so a small generated one stands in."""
    import tensorflow_datasets as tfds

    class RgbaShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 4)),
                "label": tfds.features.ClassLabel(names=["dark", "light"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

        def _generate_examples(self, count):
            for index in range(count):
                image = np.full((8, 8, 4), 40 * (index % 2 + 1), np.uint8)
                image[..., 3] = 7                      # nearly transparent: not blended
                yield index, {"image": image, "label": index % 2}

    RgbaShapes(data_dir=str(tmp_path)).download_and_prepare()
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: RgbaShapes(data_dir=data_dir))
    read = data_lib.read_tfds_images("rgba_shapes", (8, 8, 3), data_dir=str(tmp_path))
    assert read.train_images.shape == (6, 8, 8, 3) and read.test_images.shape == (2, 8, 8, 3)
    assert sorted(np.unique(read.train_images).tolist()) == [40, 80]
    np.testing.assert_array_equal(read.train_images[:, 0, 0, 0], 40 * (read.train_labels + 1))
    with pytest.raises(DataError, match="images are colour \\(RGB\\) but the model takes "
                       "grayscale ones; pass --convert_channels"):
        data_lib.read_tfds_images("rgba_shapes", (8, 8, 1), data_dir=str(tmp_path))
    gray = data_lib.read_tfds_images("rgba_shapes", (8, 8, 1), data_dir=str(tmp_path),
                                     convert_channels=True)
    assert gray.train_images.shape == (6, 8, 8, 1)


def test_a_tfds_split_of_unlabeled_examples_is_refused_in_one_line(monkeypatch):
    """stl10's "unlabelled" split labels its examples -1: no class to draw."""
    import types
    images = np.zeros((20, 28, 28, 1), np.uint8)
    labels = np.tile(np.arange(10), 2)
    read = types.SimpleNamespace(class_names=tuple("abcdefghij"), train_images=images,
                                 train_labels=np.where(np.arange(20) < 15, labels, -1),
                                 test_images=images, test_labels=labels)
    monkeypatch.setattr(data_lib, "read_tfds_images", lambda *args, **kwargs: read)
    with pytest.raises(DataError, match="split 'train' holds 5 examples labeled -1, outside "
                                        "its 10 classes"):
        load_dataset("tfds:stl10", 10, image_shape=(28, 28, 1))


def test_tfds_names_that_are_not_image_classification_are_refused():
    with pytest.raises(DataError, match="TFDS has no data set 'no_such_set_xyz'"):
        data_lib.read_tfds_images("no_such_set_xyz", (28, 28, 1))
    with pytest.raises(DataError, match="imdb_reviews is not an image-classification data set"):
        data_lib.read_tfds_images("imdb_reviews", (28, 28, 1))


def test_a_tfds_config_that_does_not_exist_names_the_configs_there_are():
    """TFDS' first line ended 'Here are 10 BuilderConfigs whose name closely
    match:', the names on the lines the one-line reason drops."""
    with pytest.raises(DataError, match=r"^TFDS mnist_corrupted has no config 'fgo'; it has 16, "
                                        r"e\.g\. fog(, |$)"):
        data_lib.read_tfds_images("mnist_corrupted/fgo", (28, 28, 1))
    with pytest.raises(DataError, match=r"^TFDS mnist has no configs: pass tfds:mnist$"):
        data_lib.read_tfds_images("mnist/fog:3.0.1", (28, 28, 1))
    with pytest.raises(DataError, match=r"^TFDS has no data set 'no_such_set_xyz/fog' "):
        data_lib.read_tfds_images("no_such_set_xyz/fog", (28, 28, 1))


def test_a_prepared_tfds_copy_with_a_damaged_dataset_info_gets_one_line(tmp_path):
    """TFDS cannot open the copy: --dataset=mnist ended in a traceback (the
    check whether data_dir holds a copy failed as the load had), tfds:mnist
    said TFDS had no data set 'mnist'."""
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").write_text("{not json")
    with pytest.raises(DataError, match=r"^TFDS could not load mnist from data_dir .*: .*JSON"):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"^TFDS could not open mnist in data_dir .*: .*JSON"):
        data_lib.read_tfds_images("mnist", (28, 28, 1), data_dir=str(tmp_path))


def test_a_tfds_copy_of_a_version_this_tfds_does_not_read_is_named(tmp_path):
    """Prepared by another TFDS release: the line said data_dir held none."""
    (tmp_path / "mnist" / "1.0.0").mkdir(parents=True)   # this TFDS reads 3.0.1
    (tmp_path / "mnist" / "1.0.0" / "dataset_info.json").write_text("{}")
    expected = (r"^data_dir .* holds TFDS mnist version 1\.0\.0, but this TFDS reads version "
                r"3\.0\.1 only: prepare it with this TFDS \(`tfds build mnist --data_dir=DIR`\)$")
    with pytest.raises(DataError, match=expected):
        load_dataset("mnist", 10, data_dir=str(tmp_path))
    with pytest.raises(DataError, match=expected):
        data_lib.read_tfds_images("mnist", (28, 28, 1), data_dir=str(tmp_path))


def test_a_corrupt_prepared_tfds_file_gets_tensorflows_whole_reason(tmp_path, monkeypatch):
    """TensorFlow's ``{{function_node ...}}`` tag is dropped: it took half the
    reason's 200 characters and cut the reason itself off."""
    import tensorflow_datasets as tfds

    class Squares(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(names=["a", "b"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20), "test": self._generate_examples(2)}

        def _generate_examples(self, count):
            for index in range(count):
                yield index, {"image": np.full((8, 8, 1), index, np.uint8), "label": index % 2}

    Squares(data_dir=str(tmp_path)).download_and_prepare()
    (record,) = (tmp_path / "squares" / "1.0.0").glob("squares-train.tfrecord*")
    content = bytearray(record.read_bytes())
    content[len(content) // 2:len(content) // 2 + 20] = b"x" * 20
    record.write_bytes(bytes(content))
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Squares(data_dir=data_dir))
    with pytest.raises(DataError) as error:
        data_lib.read_tfds_images("squares", (8, 8, 1), data_dir=str(tmp_path))
    assert str(error.value).startswith("TFDS squares cannot be read: corrupted record at ")
    assert "function_node" not in str(error.value)


def test_no_two_streams_or_epochs_share_a_shuffle():
    # Each (stream, epoch) has its own permutation: D's and G's unlabeled
    # streams are shuffled independently, and the masked one apart from both;
    # seeds [seed, stream + epoch] made D's second epoch G's first.
    data = data_lib.synthetic_dataset("mnist", 10, train_size=30, seed=5)
    epochs = {}
    for stream in (0, 1):
        batches = data.unlabeled_dataset(30, stream=stream).take(4).as_numpy_iterator()
        for epoch, images in enumerate(batches):       # a batch of 30 is an epoch
            epochs[f"unlabeled {stream} epoch {epoch}"] = images
    for epoch, batch in enumerate(data.masked_dataset(30).take(4).as_numpy_iterator()):
        epochs[f"masked epoch {epoch}"] = batch["images"]
    everything = np.sort(data.scale(data.train_images).numpy().reshape(30, -1), axis=0)
    names = sorted(epochs)
    for i, name in enumerate(names):
        # every epoch is a permutation of the 30 images...
        np.testing.assert_array_equal(np.sort(epochs[name].reshape(30, -1), axis=0), everything)
        for other in names[i + 1:]:
            # ...and no two are the same one.
            assert not np.array_equal(epochs[name], epochs[other]), (name, other)


def test_a_balanced_budget_may_take_every_image_of_the_smallest_class():
    labels = np.concatenate([np.repeat(np.arange(10), 3), np.zeros(5, int)])  # class 0: 8
    every = data_lib.draw_labeled_indices(labels, 30, seed=0)
    assert np.bincount(labels[every]).tolist() == [3] * 10
    assert set(every.tolist()) >= set(range(3, 30))      # all of classes 1..9
    with pytest.raises(DataError, match="asks for 4 per class, but the smallest class has 3"):
        data_lib.draw_labeled_indices(labels, 40, seed=0)


def test_the_label_mask_marks_exactly_the_labeled_set():
    # A balanced draw (not the first N): the mask follows the drawn indices
    # through the shuffle, and the labels of the marked images are theirs.
    data = data_lib.synthetic_dataset("mnist", 10, train_size=40, seed=2)
    assert data.labeled_indices.tolist() != list(range(10))
    scaled = data.scale(data.train_images).numpy().reshape(40, -1)
    index_of = {row.tobytes(): i for i, row in enumerate(scaled)}
    for batch in data.masked_dataset(20).take(4).as_numpy_iterator():   # two epochs
        picked = [index_of[row.tobytes()] for row in batch["images"].reshape(20, -1)]
        marked = {i for i, flag in zip(picked, batch["label_mask"]) if flag == 1}
        assert marked == set(picked) & set(data.labeled_indices.tolist())
        np.testing.assert_array_equal(batch["labels"], data.train_labels[picked])


# Builds and reads every training and test pipeline, calls the matmul
# transposed convolution (its XLA-compiled forward pass) and takes an
# Improved-GAN Adam step (its XLA-compiled update) in a tf.function; prints
# each function AutoGraph rewrote.
_AUTOGRAPH_SCRIPT = """
import numpy as np
import tensorflow as tf
from tensorflow.python.autograph.pyct import transpiler
from sgan_keras import data as data_lib, layers, optimizers

transform = transpiler.GenericTranspiler.transform_function
def recorded(self, function, user_context):
    print(function.__module__, function.__qualname__)
    return transform(self, function, user_context)
transpiler.GenericTranspiler.transform_function = recorded

rng = np.random.default_rng(0)
data = data_lib.SemiSupervisedData(
    name="mnist", num_classes=10, image_shape=(8, 8, 1),
    train_images=rng.integers(0, 256, (40, 8, 8, 1), np.uint8), train_labels=np.arange(40) % 10,
    test_images=rng.integers(0, 256, (20, 8, 8, 1), np.uint8), test_labels=np.arange(20) % 10,
    labeled_indices=np.arange(20), pixel_range=(-1.0, 1.0), seed=0)
for pipeline in (data.train_dataset(4), data.masked_dataset(4), data.supervised_dataset(4),
                 data.test_dataset(8)):
    next(iter(pipeline))
convolution = layers.MatmulConv2DTranspose(3, 3, strides=2)
variable = tf.Variable(tf.ones([3]))
optimizer = optimizers.ImprovedGANAdam(0.1)
optimizer.build([variable])

@tf.function
def step(images):
    optimizer.apply_gradients([(tf.ones([3]), variable)])
    return convolution(images)
step(tf.ones([2, 4, 4, 2]))
print("done")
"""


def test_the_packages_functions_are_traced_as_written_not_rewritten_by_autograph():
    """AutoGraph turns Python control flow on tensors into graph ops; the
    package's tf.data and compiled functions branch on Python values only, so
    its rewrite changed nothing but took time in every process: 0.75 s of
    building the pipelines, 0.5 s of the transposed convolution's first trace
    (experiments/results/startup.md). A forked process: AutoGraph caches each
    function it has rewritten, and this one has traced nothing yet."""
    result = preloaded.run_code(_AUTOGRAPH_SCRIPT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "done"
    assert [line for line in lines if line.startswith("sgan_keras")] == []
