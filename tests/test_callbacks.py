"""The training callbacks, each driven by a real ``fit`` of a tiny stand-in for ``SGAN``."""

import csv
import hashlib
import io
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image as mpl_image

from conftest import summary_steps
from sgan_keras import callbacks as callbacks_lib
from sgan_keras import checkpoint

IMAGE_SIZE = 4
NUM_CLASSES = 3


class StandIn(keras.Model):
    """What the callbacks need from ``SGAN``: SGAN-like metric names, ``generate``, ``pixel_range``.

    ``generate`` makes image ``i`` a constant ``-1 + 2 * i / (N - 1)``, so a
    grid's tiles have known values.
    """

    def __init__(self, channels=1, pixel_range=(-1.0, 1.0)):
        super().__init__()
        self.channels = channels
        self.pixel_range = pixel_range
        self.net = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(NUM_CLASSES)])
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.accuracy_tracker,
                self.cross_entropy_tracker]

    def call(self, images, training=False):
        return self.net(images)

    def train_step(self, batch):
        images, labels = batch
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        variables = self.net.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.d_loss_tracker.update_state(loss)
        self.g_loss_tracker.update_state(2.0 * loss)
        self.accuracy_tracker.update_state(labels, logits)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result(),
                "accuracy": self.accuracy_tracker.result()}

    def test_step(self, batch):
        images, labels = batch
        logits = self(images, training=False)
        self.accuracy_tracker.update_state(labels, logits)
        self.cross_entropy_tracker.update_state(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return {"accuracy": self.accuracy_tracker.result(),
                "cross_entropy": self.cross_entropy_tracker.result()}

    def generate(self, num_images, seed=0):
        low, high = self.pixel_range
        levels = np.linspace(low, high, num_images, dtype=np.float32)
        return np.broadcast_to(levels[:, None, None, None],
                               (num_images, IMAGE_SIZE, IMAGE_SIZE, self.channels)).copy()


def train(callbacks, epochs=2, initial_epoch=0, channels=1, pixel_range=(-1.0, 1.0), verbose=0):
    """Fits a fresh stand-in on 32 random images (2 steps per epoch); returns its history."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (32, IMAGE_SIZE, IMAGE_SIZE, channels)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 32)
    model = StandIn(channels, pixel_range)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(images, labels, batch_size=16, epochs=epochs, initial_epoch=initial_epoch,
                        validation_data=(images[:16], labels[:16]), callbacks=callbacks,
                        verbose=verbose, shuffle=False)
    return history.history


def read_csv(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


# ----------------------------------------------------------------- MetricsCSV
@pytest.fixture(scope="module")
def two_epochs_csv(tmp_path_factory):
    """The bytes of the metrics.csv MetricsCSV wrote for a 2-epoch fit, for tests
    that start from such a file and train nothing themselves."""
    path = tmp_path_factory.mktemp("two_epochs") / "metrics.csv"
    train([callbacks_lib.MetricsCSV(path)], epochs=2)
    return path.read_bytes()


def test_metrics_csv_writes_one_row_per_epoch_with_test_names(tmp_path):
    path = tmp_path / "metrics.csv"
    history = train([callbacks_lib.MetricsCSV(path)], epochs=3)
    columns, rows = read_csv(path)
    assert columns[:3] == ["epoch", "train_accuracy", "test_accuracy"]
    assert columns[-1] == "seconds"
    assert set(columns) == {"epoch", "train_accuracy", "test_accuracy", "d_loss", "g_loss",
                            "test_cross_entropy", "seconds"}
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for column, key in [("train_accuracy", "accuracy"), ("test_accuracy", "val_accuracy"),
                        ("d_loss", "d_loss"), ("g_loss", "g_loss"),
                        ("test_cross_entropy", "val_cross_entropy")]:
        np.testing.assert_allclose([float(row[column]) for row in rows], history[key],
                                   rtol=1e-6, err_msg=column)
    assert all(float(row["seconds"]) > 0 for row in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary left


def test_metrics_csv_resume_drops_epochs_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.csv"
    train([callbacks_lib.MetricsCSV(path)], epochs=3)
    _, first_rows = read_csv(path)
    # The run died after writing row 3 but before checkpointing epoch 3: resume from 2.
    history = train([callbacks_lib.MetricsCSV(path, initial_epoch=2)], epochs=4, initial_epoch=2)
    _, rows = read_csv(path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert rows[:2] == first_rows[:2]
    np.testing.assert_allclose([float(row["d_loss"]) for row in rows[2:]], history["d_loss"],
                               rtol=1e-6)



def test_metrics_csv_continues_with_fits_initial_epoch(tmp_path):
    # A notebook's "train more" cell: fit(..., initial_epoch=3) with the same callback.
    path = tmp_path / "metrics.csv"
    metrics = callbacks_lib.MetricsCSV(path)
    train([metrics], epochs=3)
    _, first_rows = read_csv(path)
    history = train([metrics], epochs=5, initial_epoch=3)
    _, rows = read_csv(path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5]
    assert rows[:3] == first_rows
    np.testing.assert_allclose([float(row["d_loss"]) for row in rows[3:]], history["d_loss"],
                               rtol=1e-6)
    train([callbacks_lib.MetricsCSV(path)], epochs=2)     # a new fit from epoch 1
    assert [int(row["epoch"]) for row in read_csv(path)[1]] == [1, 2]


def test_metrics_csv_given_an_initial_epoch_continues_a_later_fit_from_its_own(tmp_path):
    # The given initial_epoch (a resumed run's) is the first fit()'s: a notebook's
    # "train more" cell with the same callback lost every row after it.
    path = tmp_path / "metrics.csv"
    metrics = callbacks_lib.MetricsCSV(path, initial_epoch=0)
    train([metrics], epochs=2)
    _, first_rows = read_csv(path)
    train([metrics], epochs=3, initial_epoch=2)
    _, rows = read_csv(path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3] and rows[:2] == first_rows

def test_metrics_csv_truncates_at_train_begin(tmp_path, two_epochs_csv):
    path = tmp_path / "metrics.csv"
    path.write_bytes(two_epochs_csv)
    callback = callbacks_lib.MetricsCSV(path, initial_epoch=1)
    callback.on_train_begin()
    _, rows = read_csv(path)
    assert [int(row["epoch"]) for row in rows] == [1]



def test_metrics_csv_row_cut_short_by_hand_gets_nan_in_its_missing_cells(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_accuracy,test_accuracy,seconds\n1,0.5,0.25,3.0\n2,0.75\n")
    rows = callbacks_lib.read_metrics_csv(path)
    assert rows[1] == {"epoch": "2", "train_accuracy": "0.75", "test_accuracy": "nan",
                       "seconds": "nan"}
    callback = callbacks_lib.MetricsCSV(path, initial_epoch=2)
    callback.on_train_begin()
    callback._write()                       # as at the next epoch's end
    assert path.read_text().splitlines()[2] == "2,0.75,nan,nan"


def test_metrics_csv_with_a_byte_order_mark_resumes(tmp_path):
    # Excel's "CSV UTF-8" starts the file with a UTF-8 byte order mark.
    path = tmp_path / "metrics.csv"
    train([callbacks_lib.MetricsCSV(path)], epochs=3)
    _, first_rows = read_csv(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert callbacks_lib.read_metrics_csv(path) == first_rows
    train([callbacks_lib.MetricsCSV(path, initial_epoch=2)], epochs=3, initial_epoch=2)
    _, rows = read_csv(path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3] and rows[:2] == first_rows[:2]


@pytest.mark.parametrize("damage, problem", [
    ("no epoch column", "has no epoch column"),
    ("epoch abc", "line 3 has epoch='abc', not a whole number"),
    ("random bytes", "is not UTF-8 text"),
    ("more cells than the header", "line 2 has more cells than the header"),
    ("a directory", r"cannot be read \(Is a directory\)"),
])
def test_a_damaged_metrics_csv_is_refused_with_one_line_and_kept(tmp_path, two_epochs_csv,
                                                                damage, problem):
    path = tmp_path / "metrics.csv"
    path.write_bytes(two_epochs_csv)
    lines = path.read_text().splitlines()   # the header, epoch 1, epoch 2
    if damage == "a directory":
        path.unlink()
        path.mkdir()
    elif damage == "random bytes":
        path.write_bytes(bytes(range(128, 256)) * 4)
    else:
        if damage == "no epoch column":
            lines[0] = lines[0].replace("epoch,", "Epoch,", 1)
        elif damage == "epoch abc":
            lines[2] = "abc," + lines[2].split(",", 1)[1]
        else:
            lines[1] += ",0.5"
        path.write_text("\n".join(lines) + "\n")
    before = sorted(tmp_path.iterdir())
    kept = None if damage == "a directory" else path.read_bytes()
    callback = callbacks_lib.MetricsCSV(path, initial_epoch=1)
    with pytest.raises(callbacks_lib.MetricsFileError, match=problem) as error:
        callback.on_train_begin()
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)) and "move it away" in message
    assert isinstance(error.value, checkpoint.CheckpointError)   # bad input: exit 2 (train.py)
    assert sorted(tmp_path.iterdir()) == before and (kept is None or path.read_bytes() == kept)


# ----------------------------------------------------------------- SampleGrid
def test_sample_grid_takes_numpy_integers_and_refuses_other_counts(tmp_path):
    # NumPy integers (a count read from an array) were refused, as the data builders do not.
    assert callbacks_lib.SampleGrid(tmp_path, num_images=np.int64(9)).num_images == 9
    for count in (0, -1, 2.0, True, "9"):
        with pytest.raises(ValueError, match="num_images must be a positive integer"):
            callbacks_lib.SampleGrid(tmp_path, num_images=count)


@pytest.mark.parametrize("channels, pixel_range", [(1, (-1.0, 1.0)), (3, (0.0, 1.0))])
def test_sample_grid_saves_a_square_grid_per_epoch(tmp_path, channels, pixel_range):
    directory = tmp_path / "samples"
    train([callbacks_lib.SampleGrid(directory, num_images=10, seed=3)], epochs=2,
          channels=channels, pixel_range=pixel_range)
    assert sorted(p.name for p in directory.iterdir()) == [
        "samples_epoch_0001.png", "samples_epoch_0002.png"]
    grid = mpl_image.imread(directory / "samples_epoch_0002.png")
    side = 4  # ceil(sqrt(10))
    assert grid.shape[:2] == (side * IMAGE_SIZE, side * IMAGE_SIZE)
    rgb = grid[..., :3]
    if channels == 1:  # grayscale: equal channels
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    # Tile i (row by row) holds generated image i mapped to [0, 1]; the rest is black.
    expected = np.concatenate([np.linspace(0, 1, 10), np.zeros(6)]).reshape(side, side)
    tiles = rgb[::IMAGE_SIZE, ::IMAGE_SIZE, 0]
    np.testing.assert_allclose(tiles, expected, atol=1 / 255 + 1e-6)


def test_sample_grid_logs_to_tensorboard_beside_each_epochs_scalars(tmp_path):
    logs = tmp_path / "tensorboard"
    train([keras.callbacks.TensorBoard(str(logs)),
           callbacks_lib.SampleGrid(tmp_path / "samples", num_images=4,
                                    tensorboard_dir=str(logs / "samples"))], epochs=2)
    scalars = summary_steps(logs / "train", lambda tag: tag.startswith("epoch_"))
    assert scalars == [0, 1]                               # Keras' epoch index
    assert summary_steps(logs / "samples", lambda tag: tag == "samples") == scalars


def test_sample_grid_logs_every_epoch_beside_a_tensorboard_of_batch_summaries(tmp_path):
    """Keras' ``TensorBoard(update_freq=3)`` leaves ``tf.summary.record_if`` set to
    its own steps (multiples of 3) while other callbacks run: the grids of the
    epochs ending at steps 2 and 4 were dropped from TensorBoard without a word."""
    logs = tmp_path / "tensorboard"
    train([keras.callbacks.TensorBoard(str(logs), update_freq=3),
           callbacks_lib.SampleGrid(tmp_path / "samples", num_images=4,
                                    tensorboard_dir=str(logs / "samples"))], epochs=2)
    assert summary_steps(logs / "samples", lambda tag: tag == "samples") == [0, 1]


def test_image_grid_layout():
    images = np.arange(3 * 2 * 2 * 1, dtype=np.float32).reshape(3, 2, 2, 1) / 11.0
    grid = callbacks_lib.image_grid(images, (0.0, 1.0))
    assert grid.shape == (4, 4, 1)
    np.testing.assert_array_equal(grid[:2, :2], images[0])
    np.testing.assert_array_equal(grid[:2, 2:], images[1])
    np.testing.assert_array_equal(grid[2:, :2], images[2])
    np.testing.assert_array_equal(grid[2:, 2:], 0.0)


def test_sample_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        callbacks_lib.SampleGrid(tmp_path, num_images=0)

    class NoGenerator(keras.Model):
        pass

    callback = callbacks_lib.SampleGrid(tmp_path)
    callback.set_model(NoGenerator())
    with pytest.raises(TypeError, match="generate"):
        callback.on_train_begin()


def test_sample_grid_refuses_a_supervised_only_sgan_before_training(tmp_path):
    from sgan_keras import SGAN, Config   # pylint: disable=import-outside-toplevel
    images = keras.Input((4, 4, 1))
    features = keras.layers.Flatten()(images)
    model = SGAN(None, keras.Model(images, [keras.layers.Dense(3)(features), features]),
                 Config(supervised_only=True))
    with pytest.raises(ValueError, match="has no generator"):
        model.generate(4)
    callback = callbacks_lib.SampleGrid(tmp_path / "samples")
    callback.set_model(model)
    with pytest.raises(ValueError, match="supervised_only"):   # not after the first epoch
        callback.on_train_begin()


# ----------------------------------------------------------------- CurvePlots
def test_curve_plots_are_redrawn_every_epoch(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    names = ("accuracy.png", "losses.png")
    digests = {name: [] for name in names}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for name in names:
                digests[name].append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())

    train([callbacks_lib.MetricsCSV(csv_path), callbacks_lib.CurvePlots(csv_path, tmp_path),
           Probe()], epochs=3)
    for name in names:     # each file on its own: a new picture each epoch
        assert len(set(digests[name])) == 3, f"{name} was not redrawn every epoch"
    for name in ("accuracy.png", "losses.png"):
        assert mpl_image.imread(tmp_path / name).shape[:2] == (400, 600)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accuracy.png", "losses.png", "metrics.csv"]


def test_curves_join_the_epochs_that_have_a_value(tmp_path, monkeypatch):
    """With ``fit(validation_freq=2)`` every other test accuracy is nan: the
    curve joins the epochs evaluated (at 50 rows and more, drawn without
    markers, a line cut at each nan showed nothing)."""
    csv_path = tmp_path / "metrics.csv"
    rows = ["epoch,train_accuracy,test_accuracy,d_loss,seconds"]
    rows += [f"{epoch},0.5,{'0.25' if epoch % 2 == 0 else 'nan'},1.0,1.0"
             for epoch in range(1, 61)]
    csv_path.write_text("\n".join(rows) + "\n")
    figures = []

    class Recorded(callbacks_lib.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(callbacks_lib, "Figure", Recorded)
    callbacks_lib.plot_curves(csv_path, tmp_path)
    lines = {line.get_label(): line for line in figures[0].axes[0].lines}
    np.testing.assert_array_equal(lines["test_accuracy"].get_xdata(), np.arange(2, 61, 2))
    np.testing.assert_array_equal(lines["train_accuracy"].get_xdata(), np.arange(1, 61))


def test_plot_curves_without_rows_draws_nothing(tmp_path):
    assert callbacks_lib.plot_curves(tmp_path / "missing.csv", tmp_path) == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- EpochSummary
def test_epoch_summary_prints_one_line_per_epoch(capsys):
    train([callbacks_lib.EpochSummary()], epochs=3, verbose=0)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch {number}/3: train_accuracy=")
        for name in ("test_accuracy=", "d_loss=", "g_loss=", "test_cross_entropy="):
            assert name in line
        assert line.endswith(" s)")


def test_run_progress_bar_numbers_a_resumed_epochs_fit_out_of_the_runs_epochs(
        capsys, monkeypatch):
    """The fit() that finishes an epoch resumed mid-way (epochs=2, initial_epoch=1
    of a 3-epoch run) showed "Epoch 2/2" in Keras' bar on a terminal; the
    command line's bar says "Epoch 2/3", as its EpochSummary line does."""
    train([callbacks_lib.RunProgbarLogger(total_epochs=3)], epochs=2, initial_epoch=1,
          verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/3" in out and "Epoch 2/2" not in out
    from sgan_keras import config as config_lib
    from sgan_keras import trainer
    monkeypatch.setattr(callbacks_lib, "progress_verbosity", lambda: 1)   # a terminal
    stop = types.SimpleNamespace(requested=lambda: None)
    callbacks = trainer._callbacks(config_lib.Config().replace(epochs=3), "unused", 1, None,
                                   None, stop, None, None, None)
    assert [callback.total_epochs for callback in callbacks
            if isinstance(callback, keras.callbacks.ProgbarLogger)] == [3]


class FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty, verbosity", [(True, 1), (False, 0)])
def test_progress_verbosity_follows_the_terminal(monkeypatch, tty, verbosity):
    monkeypatch.setattr(sys, "stdout", FakeStream(tty))
    assert callbacks_lib.progress_verbosity() == verbosity


class RecordingStore:
    def __init__(self):
        self.saved = []

    def save(self, step):
        self.saved.append(step)
        return f"ckpt-{step}"


def run_save_checkpoint(every_steps, epochs=2, steps_per_epoch=6, stop_at=None):
    store, counter = RecordingStore(), tf.Variable(0, dtype=tf.int64)
    save = callbacks_lib.SaveCheckpoint(
        store, counter, steps_per_epoch, every_steps=every_steps,
        stop_requested=lambda: "SIGTERM" if int(counter.numpy()) == stop_at else None)
    for epoch in range(epochs):
        for batch in range(steps_per_epoch):
            counter.assign_add(1)
            save.on_train_batch_end(batch)
        save.on_epoch_end(epoch)
    return store.saved


def test_save_checkpoint_saves_every_n_steps_and_each_epoch_end_once():
    # --checkpoint_every_steps=4 with 6 steps an epoch: steps 4 and 8 inside the
    # epochs, 6 and 12 at their ends (12 once: an epoch's last step waits for its end).
    assert run_save_checkpoint(every_steps=4) == [4, 6, 8, 12]
    assert run_save_checkpoint(every_steps=0) == [6, 12]
    assert run_save_checkpoint(every_steps=3) == [3, 6, 9, 12]
    with pytest.raises(callbacks_lib.TrainingInterrupted) as stopped:
        run_save_checkpoint(every_steps=0, stop_at=3)
    assert (stopped.value.reason, stopped.value.step, stopped.value.path) == (
        "SIGTERM", 3, "ckpt-3")
