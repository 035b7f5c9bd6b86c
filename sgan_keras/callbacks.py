"""Keras callbacks that write a run's outputs: metrics, sample grids, curves, log lines.

As in the keras-io GAN examples (e.g. "DCGAN to generate face images",
https://keras.io/examples/generative/dcgan_overriding_train_step/), images and
plots come from callbacks at the end of each epoch rather than from the
model. Every file is written atomically (``faults.replace_atomically``), so a
run killed at any moment leaves either the previous or the new version, never
half a file.

Epochs are numbered from 1 in every output (Keras numbers them from 0).
A full disk or an unwritable file raises :class:`sgan_keras.faults.WriteError`.

Fault handling around the checkpoint (``SaveCheckpoint``,
``StopOnNonFiniteLoss``, ``ResumeEpochMetrics``) works at step boundaries:
``on_train_batch_end`` and ``on_epoch_end``, between two ``train_step`` calls.
"""

import csv
import math
import os
import sys
import time

import keras
import numpy as np
from matplotlib import image as mpl_image
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sgan_keras import checkpoint
from sgan_keras.checks import is_integer
from sgan_keras import faults

CSV_FIRST_COLUMNS = ("epoch", "train_accuracy", "test_accuracy")
CSV_LAST_COLUMN = "seconds"


def metric_column(name):
    """The ``metrics.csv`` name of a Keras log key.

    Keras prefixes validation metrics with ``val_``; we evaluate on the test
    set, so ``val_accuracy`` -> ``test_accuracy``, ``val_cross_entropy`` ->
    ``test_cross_entropy``, ``val_loss`` -> ``test_loss``; the training
    ``accuracy`` becomes ``train_accuracy``; other names are kept.
    """
    if name == "accuracy":
        return "train_accuracy"
    if name.startswith("val_"):
        return "test_" + name[len("val_"):]
    return name


def _numeric_logs(logs):
    """``{csv column: float}`` for the scalar entries of Keras ``logs``."""
    values = {}
    for key, value in (logs or {}).items():
        try:
            values[metric_column(key)] = float(value)
        except (TypeError, ValueError):
            continue  # not a scalar (Keras logs hold numbers only, but be safe)
    return values


class MetricsFileError(checkpoint.CheckpointError):
    """``metrics.csv`` cannot be read back to resume a run (damaged, edited, not a
    file); the message is one line naming the file. A :class:`CheckpointError`
    (bad input: ``train.py`` exits 2): the file is part of the run's saved state."""


def read_metrics_csv(path):
    """Rows of ``metrics.csv`` as ``{column: str}`` dicts (``[]`` if there is no file).

    A UTF-8 byte order mark (as spreadsheet programs save "CSV UTF-8") is
    accepted. Raises :class:`MetricsFileError`, touching nothing, when the
    file cannot be read, is not UTF-8 CSV, has no ``epoch`` column, or a row
    whose ``epoch`` is not a whole number or that has more cells than the header.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return []

    def refuse(problem):
        return MetricsFileError(f"{path} {problem}: fix it, or move it away and run again (the "
                                "run then writes a new metrics.csv from the epoch it resumes at)")

    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            numbered = [(reader.line_num, row) for row in reader]  # line_num: the row's last line
            columns = reader.fieldnames or []
    except OSError as error:
        raise refuse(f"cannot be read ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise refuse("is not UTF-8 text") from None
    except csv.Error as error:
        raise refuse(f"is not CSV ({faults.first_line(error)})") from None
    if columns and "epoch" not in columns:
        raise refuse(f"has no epoch column (its header: {','.join(columns)[:80]!r})")
    for number, row in numbered:
        if None in row:
            raise refuse(f"line {number} has more cells than the header")
        epoch = _number(row["epoch"])
        if epoch is None or epoch != int(epoch):
            raise refuse(f"line {number} has epoch={str(row['epoch'])[:20]!r}, not a whole number")
    # A row with fewer cells than the header (cut short by hand) gets nan in the
    # rest, as MetricsCSV writes a missing value; it was rewritten with empty cells.
    return [{column: "nan" if value is None else value for column, value in row.items()}
            for _, row in numbered]


def _number(text):
    """``float(text)`` when that is finite, else ``None``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _EpochClock:
    """An epoch's seconds so far, from :meth:`start` (at the epoch's begin); the
    first epoch adds ``earlier_seconds``, what earlier sessions spent on it
    (a run resumed inside it: :class:`SaveCheckpoint`'s ``epoch_seconds``)."""

    def __init__(self, earlier_seconds=0.0):
        self._earlier = float(earlier_seconds)
        self._start = None

    @property
    def started(self):
        return self._start is not None

    def start(self):
        self._start = time.perf_counter() - self._earlier
        self._earlier = 0.0

    def seconds(self):
        return time.perf_counter() - self._start if self.started else 0.0


class MetricsCSV(keras.callbacks.Callback):
    """Writes one ``metrics.csv`` row per epoch.

    Columns: ``epoch`` (1-based), ``train_accuracy``, ``test_accuracy``, every
    other scalar in the epoch's logs (names from :func:`metric_column`), then
    ``seconds``, the epoch's wall time (training and test evaluation). The
    first epoch adds ``earlier_seconds``: for one resumed mid-way, what earlier
    sessions spent on it (:class:`SaveCheckpoint`'s ``epoch_seconds``). A value
    missing from an epoch's logs is written as ``nan``, so every cell parses
    as a float.

    Resume-safe: rows with ``epoch > initial_epoch`` are dropped (they come
    from a run killed after writing its CSV row but before saving its
    checkpoint), so every epoch appears once after a resume. A given
    ``initial_epoch`` drops them when the first ``fit()`` begins; ``None``
    (default), and every later ``fit()`` with the same callback, take
    ``fit()``'s own ``initial_epoch`` when its first epoch begins, so a second
    ``fit(..., initial_epoch=3)`` continues the file after its epoch 3. The
    whole file is rewritten atomically after each epoch (like Keras'
    ``CSVLogger`` with ``append=True``, but crash-safe and resumable).
    """

    def __init__(self, path, initial_epoch=None, earlier_seconds=0.0):
        super().__init__()
        if initial_epoch is not None and int(initial_epoch) < 0:
            raise ValueError(f"initial_epoch must be >= 0, got {initial_epoch}")
        self.path = os.fspath(path)
        self.initial_epoch = None if initial_epoch is None else int(initial_epoch)
        self._rows = []
        self._clock = _EpochClock(earlier_seconds)
        self.last_seconds = None     # the newest row's seconds
        self._first_epoch = True
        self._resume_epoch = self.initial_epoch    # the first fit()'s only

    def on_train_begin(self, logs=None):
        self._rows = read_metrics_csv(self.path)
        self._first_epoch = True
        if self._resume_epoch is not None:
            self._drop_rows_after(self._resume_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and self._resume_epoch is None:
            self._drop_rows_after(epoch)     # fit()'s initial_epoch
        self._resume_epoch = None   # a later fit() with this callback continues from its own
        self._first_epoch = False
        self._clock.start()

    def _drop_rows_after(self, epoch):
        kept = [row for row in self._rows if int(float(row["epoch"])) <= epoch]
        dropped = len(kept) != len(self._rows)
        self._rows = kept
        if dropped and os.path.exists(self.path):
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self.last_seconds = self._clock.seconds()
        row = {**_numeric_logs(logs), "epoch": epoch + 1, CSV_LAST_COLUMN: self.last_seconds}
        self._rows = [old for old in self._rows if int(float(old["epoch"])) != epoch + 1]
        self._rows.append(row)
        self._write()

    def _columns(self):
        middle = []
        for row in self._rows:
            middle += [column for column in row
                       if column not in CSV_FIRST_COLUMNS + (CSV_LAST_COLUMN,)
                       and column not in middle]
        return [*CSV_FIRST_COLUMNS, *middle, CSV_LAST_COLUMN]

    def _write(self):
        columns = self._columns()

        def write(file):
            writer = csv.DictWriter(file, fieldnames=columns, restval="nan")
            writer.writeheader()
            for row in self._rows:
                writer.writerow({key: (repr(value) if isinstance(value, float) else value)
                                 for key, value in row.items()})

        faults.replace_atomically(self.path, write)


def image_grid(images, pixel_range):
    """Tiles ``[N, H, W, C]`` images into one ``[S*H, S*W, C]`` image in [0, 1].

    ``S = ceil(sqrt(N))``: a square grid, filled row by row, empty tiles
    black. Pixels are mapped linearly from ``pixel_range`` to [0, 1] and
    clipped.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    low, high = (float(value) for value in pixel_range)
    images = np.clip((images - low) / (high - low), 0.0, 1.0)
    count, height, width, channels = images.shape
    side = max(1, math.ceil(math.sqrt(count)))
    tiles = np.zeros((side * side, height, width, channels), np.float32)
    tiles[:count] = images
    tiles = tiles.reshape(side, side, height, width, channels)
    return tiles.transpose(0, 2, 1, 3, 4).reshape(side * height, side * width, channels)


def save_png(path, grid):
    """Saves a ``[H, W, C]`` image in [0, 1] as a PNG (grayscale colormap for ``C == 1``)."""
    def write(file):
        if grid.shape[-1] == 1:
            mpl_image.imsave(file, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
        else:
            mpl_image.imsave(file, grid, format="png")

    faults.replace_atomically(path, write, mode="wb")


class SampleGrid(keras.callbacks.Callback):
    """Saves a grid of generated images after every epoch.

    Writes ``directory/samples_epoch_{epoch:04d}.png`` (1-based epoch), a
    square grid of ``model.generate(num_images, seed)`` (the same noise every
    epoch, so the grids show how G evolves, as in the keras-io GAN examples),
    mapped from ``model.pixel_range`` to [0, 1]. When ``tensorboard_dir`` is
    given, the grid also goes to TensorBoard as the image summary ``samples``,
    at the step of the epoch's ``epoch_*`` scalars, which Keras' TensorBoard
    callback logs at the epoch's index from 0.
    """

    def __init__(self, directory, num_images=100, seed=0, tensorboard_dir=None):
        super().__init__()
        if not is_integer(num_images) or num_images <= 0:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        self.directory = os.fspath(directory)
        self.num_images = int(num_images)
        self.seed = seed
        self.tensorboard_dir = tensorboard_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        if not callable(getattr(self.model, "generate", None)) or \
                not hasattr(self.model, "pixel_range"):
            raise TypeError(f"SampleGrid needs a model with generate(num_images, seed) and "
                            f"pixel_range; {type(self.model).__name__} has not")
        if getattr(self.model, "generator", True) is None:
            raise ValueError("SampleGrid needs a generator; this model is supervised_only")
        os.makedirs(self.directory, exist_ok=True)
        if self.tensorboard_dir is not None and self._writer is None:
            import tensorflow as tf
            self._writer = tf.summary.create_file_writer(os.fspath(self.tensorboard_dir))

    def on_epoch_end(self, epoch, logs=None):
        images = self.model.generate(self.num_images, seed=self.seed)
        grid = image_grid(images, self.model.pixel_range)
        save_png(os.path.join(self.directory, f"samples_epoch_{epoch + 1:04d}.png"), grid)
        if self._writer is not None:
            import tensorflow as tf
            # record_if(True): Keras' TensorBoard(update_freq=N) leaves its own condition
            # set (steps that are multiples of N) for summaries written by other callbacks.
            with self._writer.as_default(), tf.summary.record_if(True):
                tf.summary.image("samples", grid[np.newaxis], step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _float_column(rows, column):
    values = []
    for row in rows:
        try:
            values.append(float(row.get(column) or "nan"))
        except ValueError:
            values.append(float("nan"))
    return np.asarray(values)


def _plot(path, rows, columns, ylabel, title):
    """One line per column against ``epoch``; columns with no finite value are skipped."""
    epochs = _float_column(rows, "epoch")
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    for column in columns:
        values = _float_column(rows, column)
        # Only the epochs that have a value: with fit(validation_freq=2) every test
        # accuracy sits between two nan cells, and a line cut at each nan draws nothing.
        finite = np.isfinite(values)
        if finite.any():
            axes.plot(epochs[finite], values[finite], marker="." if len(rows) < 50 else None,
                      label=column)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    faults.replace_atomically(path, lambda file: figure.savefig(file, format="png"), mode="wb")


def plot_curves(csv_path, directory):
    """Draws ``accuracy.png`` and ``losses.png`` in ``directory`` from ``metrics.csv``.

    ``accuracy.png``: train and test accuracy per epoch. ``losses.png``:
    every column ending in ``loss`` or ``cross_entropy``. Uses matplotlib's
    object API (``Figure`` renders with Agg), never pyplot, so no global
    backend is set. Returns the paths written (none when the CSV has no rows).
    """
    rows = read_metrics_csv(csv_path)
    if not rows:
        return []
    loss_columns = [column for column in rows[0]
                    if column.endswith("loss") or column.endswith("cross_entropy")]
    paths = [os.path.join(directory, "accuracy.png"), os.path.join(directory, "losses.png")]
    _plot(paths[0], rows, ["train_accuracy", "test_accuracy"], "accuracy",
          "Classification accuracy")
    _plot(paths[1], rows, loss_columns, "loss", "Losses")
    return paths


class CurvePlots(keras.callbacks.Callback):
    """Redraws ``accuracy.png`` and ``losses.png`` from ``metrics.csv`` after every epoch.

    Place it after :class:`MetricsCSV` in the callback list, so the CSV
    already holds the epoch that just ended.
    """

    def __init__(self, csv_path, directory):
        super().__init__()
        self.csv_path = os.fspath(csv_path)
        self.directory = os.fspath(directory)

    def on_epoch_end(self, epoch, logs=None):
        plot_curves(self.csv_path, self.directory)


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch: number, every metric (CSV names), seconds.

    For logs that are files or pipes, where Keras' progress bar (``verbose=1``)
    writes hundreds of carriage-return updates; use it with ``verbose=0``
    (see :func:`progress_verbosity`). ``total_epochs`` is the run's epoch
    count when a ``fit()`` call trains only part of them (a resumed epoch);
    ``earlier_seconds`` is added to the first epoch's, as :class:`MetricsCSV` does.
    With ``metrics_csv``, a :class:`MetricsCSV` listed before it, the line
    gives that row's seconds, so the two agree; a clock of its own read
    later, after the CSV's atomic write, was 0.13 s past it on a busy disk.
    """

    def __init__(self, stream=None, total_epochs=None, earlier_seconds=0.0, metrics_csv=None):
        super().__init__()
        self.stream = stream
        self.total_epochs = total_epochs  # default: fit()'s epochs
        self.metrics_csv = metrics_csv
        self._clock = _EpochClock(earlier_seconds)

    def on_epoch_begin(self, epoch, logs=None):
        self._clock.start()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self.metrics_csv.last_seconds if self.metrics_csv is not None
                   else self._clock.seconds())
        total = self.total_epochs or (self.params or {}).get("epochs")
        number = f"{epoch + 1}/{total}" if total else f"{epoch + 1}"
        values = _numeric_logs(logs)
        ordered = [name for name in CSV_FIRST_COLUMNS[1:] if name in values]
        ordered += [name for name in values if name not in ordered]
        fields = [f"{name}={values[name]:.4g}" for name in ordered] + [f"({seconds:.1f} s)"]
        print(f"Epoch {number}: " + " ".join(fields), file=self.stream or sys.stdout, flush=True)


class RunProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar (``fit(verbose=1)``) with epochs numbered out of
    ``total_epochs``, as :class:`EpochSummary` does: the ``fit()`` that finishes
    an epoch resumed mid-way has ``epochs=epoch + 1``, which Keras' own bar
    shows as the total ("Epoch 2/2" of a 3-epoch run)."""

    def __init__(self, total_epochs):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs or params["epochs"]})


def progress_verbosity():
    """``fit(verbose=...)``: 1 (progress bar) on a terminal, else 0 (add :class:`EpochSummary`)."""
    try:
        return 1 if sys.stdout.isatty() else 0
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return 0


class TrainingInterrupted(Exception):
    """Training stopped on request (a signal or a preemption notice), after saving."""

    def __init__(self, reason, step, path=None):
        super().__init__(f"{reason} at step {step}" + (f"; saved {path}" if path else ""))
        self.reason, self.step, self.path = reason, step, path


class NonFiniteLossError(ArithmeticError):
    """A training loss became NaN or infinite; the message names it and the step."""


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves the training state through a :class:`sgan_keras.checkpoint.CheckpointStore`.

    Checkpoints are numbered by ``step_counter`` (the optimizer's step
    counter, a variable) and written at step boundaries:

    - at the end of every epoch. Put this callback last, so that the epoch's
      ``metrics.csv`` row is written first: the last step of an epoch is saved
      only there, so a checkpoint at a multiple of ``steps_per_epoch`` always
      means a complete epoch;
    - every ``every_steps`` steps inside an epoch (0: never);
    - when ``stop_requested()`` returns a reason (``"SIGTERM"``), at the next
      step boundary; then :class:`TrainingInterrupted` is raised, which ends
      ``fit()`` at once;
    - under ``MultiWorkerMirroredStrategy``, ``preemption`` (a
      ``tf.distribute.experimental.PreemptionCheckpointHandler`` whose
      ``save_fn`` saves through the store and whose ``exit_fn`` raises
      :class:`TrainingInterrupted`) is asked once per step instead of
      ``stop_requested``: it makes every worker save at the same step.

    ``epoch_seconds`` (a float64 variable the store saves) is set before each
    save to the epoch's seconds so far: from this callback's ``on_epoch_begin``
    to the save, plus, in the first epoch, ``earlier_seconds`` (the value
    restored from a checkpoint inside that epoch). So an epoch resumed from a
    checkpoint counts the time earlier sessions spent on the steps it holds
    (their earlier saves in the epoch included), not their time after it (lost
    work) nor their start-up before the epoch began.
    """

    def __init__(self, store, step_counter, steps_per_epoch, every_steps=0,
                 stop_requested=None, preemption=None, epoch_seconds=None,
                 earlier_seconds=0.0):
        super().__init__()
        self.store = store
        self.step_counter = step_counter
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = int(every_steps or 0)
        self.stop_requested = stop_requested
        self.preemption = preemption
        self.epoch_seconds = epoch_seconds
        self._clock = _EpochClock(earlier_seconds)

    def _step(self):
        return int(self.step_counter.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._clock.start()

    def _record_seconds(self):
        if self.epoch_seconds is not None and self._clock.started:
            self.epoch_seconds.assign(self._clock.seconds())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.steps_per_epoch:  # an epoch's last step waits for on_epoch_end
            self._step_boundary(step, save=bool(self.every_steps) and step % self.every_steps == 0)

    def on_epoch_end(self, epoch, logs=None):
        self._step_boundary(self._step(), save=True)

    def _step_boundary(self, step, save):
        if save:
            self._record_seconds()
            self.store.save(step)
        if self.preemption is not None:
            self._record_seconds()   # its save_fn saves through the store
            self.preemption.save_checkpoint_if_preempted()
        elif self.stop_requested is not None:
            reason = self.stop_requested()
            if reason:
                self._record_seconds()
                raise TrainingInterrupted(reason, step, self.store.save(step))


class CheckOutputDirectory(keras.callbacks.Callback):
    """Calls ``check()`` (``RunLock.check_in_place``) at each epoch end and,
    with ``every_step``, at every step end, before the callbacks after it
    write there: a run whose ``--output_dir`` was moved or removed stops
    instead of writing into a new directory of that name. Two system calls
    each time."""

    def __init__(self, check, every_step=True):
        super().__init__()
        self.check = check
        self.every_step = every_step

    def on_train_batch_end(self, batch, logs=None):
        if self.every_step:
            self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()


TOTAL_LOSSES = ("d_loss", "g_loss", "loss")   # sums of the logged parts, or Keras' own


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose losses are not all finite.

    Like ``keras.callbacks.TerminateOnNaN(raise_error=True)``, but it checks
    every log whose name ends in ``loss`` (``d_loss``, ``g_loss``, ...; that
    callback reads ``loss`` alone), and raises :class:`NonFiniteLossError`
    naming the step and the losses, a part (``manifold_loss``) before the
    total it is in. Raising ends ``fit()`` before any epoch end,
    so no checkpoint or ``metrics.csv`` row of that state is written: put it
    first in the callback list. ``step_counter`` defaults to
    ``model.optimizer.iterations`` (D's optimizer's, an SGAN's step count).
    """

    def __init__(self, step_counter=None):
        super().__init__()
        self.step_counter = step_counter

    def on_train_batch_end(self, batch, logs=None):
        values = {name: float(np.mean(value)) for name, value in (logs or {}).items()
                  if name.endswith("loss")}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if not bad:
            return
        # A total (d_loss, g_loss) is non-finite through a part: name the part.
        bad.sort(key=lambda name: name in TOTAL_LOSSES)
        counter = self.step_counter
        if counter is None:
            counter = self.model.optimizer.iterations
        step = int(counter.numpy())
        also = f" (also {', '.join(bad[1:])})" if bad[1:] else ""
        raise NonFiniteLossError(f"{bad[0]} is {values[bad[0]]}{also} at step {step}")


class ResumeEpochMetrics(keras.callbacks.Callback):
    """Puts back the running metrics of an epoch resumed mid-way.

    ``fit()`` resets every metric when an epoch begins, but a checkpoint
    taken inside an epoch holds the sums of its first steps. ``restore()``
    (the checkpoint's restore) runs again at the first epoch's begin, after
    that reset, so the epoch's ``metrics.csv`` row equals an uninterrupted
    run's. (A restore, not an ``assign``: under a ``tf.distribute`` strategy
    metric variables are sync-on-read sums, which only a restore may set.)
    """

    def __init__(self, restore):
        super().__init__()
        self.restore = restore

    def on_epoch_begin(self, epoch, logs=None):
        if self.restore is not None:
            self.restore()
            self.restore = None
