r"""Classifies image files with an exported classifier.

    python -m sgan_keras.predict --model=runs/gia100 photos/ 'more/*.png' \
        --output=predictions.csv

``--model`` is a run directory (its ``export/``), an export directory (the
SavedModel ``sgan_keras.train`` writes) or one of its TFLite files
(``classifier.tflite``, ``classifier_int8.tflite``, with ``labels.txt`` beside
them). Arguments are image files, directories (searched recursively) or glob
patterns. PNG, JPEG, GIF and BMP images are decoded and resized to the model's
input (bilinear, antialiased); a colour image for a grayscale model, or the
reverse, needs ``--convert_channels``. Files are read and classified in
batches of ``--batch_size``, and each batch's rows are written at once.

The output (CSV, to ``--output`` or standard output) has one row per image:
``file``, ``class_name``, ``class_id``, ``probability`` (of that class).

Unreadable files (not an image, truncated) are skipped; the run ends with one
line counting them on standard error. So are files whose name is not valid
UTF-8 (the CSV, UTF-8 text, cannot name them), counted on a line of their
own that shows the name's undecodable bytes as ``\xNN`` escapes. ``--output``
replaces only an earlier predictions file (its first row is the header
above), once every row is written; any other file there is refused. Faults
print one line naming what is wrong, and the exit status says which:

    0   at least one image was classified (also when the reader of standard
        output, e.g. ``| head``, closed it early)
    1   a flag absl's parser rejects (its "FATAL Flags parsing error" line)
    2   bad input: no model, no image, a channel mismatch without
        ``--convert_channels``, an ``--output`` that is not a predictions file
        or cannot be written there
    5   a full disk or an unwritable file; an earlier ``--output`` is unchanged
    75  stopped by SIGINT (Ctrl-C) or SIGTERM: an ``--output`` is not written
        (its temporary is removed, an earlier file there is unchanged); on
        standard output, the rows of the batches classified before it
        (``sgan_keras.train``'s status for an interrupted run)

TensorFlow is imported once the flags are checked, in :func:`main`, so that a
signal during its seconds-long import gets the same line and status.
"""

import gc

if __name__ == "__main__":
    gc.disable()   # imports with the collector off: see _import_tensorflow()

import contextlib
import csv
import glob
import importlib
import os
import signal
import sys

import numpy as np
from absl import app
from absl import flags

from sgan_keras import faults

FLAGS = flags.FLAGS


def define_flags():
    """The CLI's flags, defined when it runs (importing the module defines none)."""
    flags.DEFINE_string("model", None, "A run directory, its export/ directory, or a .tflite "
                        "file.")
    flags.DEFINE_string("output", None, "CSV file to write; default: standard output.")
    flags.DEFINE_integer("batch_size", 256, "Images read and classified at a time.")
    flags.DEFINE_bool("convert_channels", False, "Convert colour images to grayscale for a "
                      "grayscale model, and grayscale to RGB for a colour one.")


class PredictError(ValueError):
    """Bad input to the predict CLI; the message is one line."""


class Classifier:
    """An exported classifier: ``classify(uint8 images) -> (class_names, class_ids,
    probabilities)``."""

    def __init__(self, path):
        path = os.fspath(path)
        if os.path.isdir(os.path.join(path, "export")):
            path = os.path.join(path, "export")          # a run directory
        self.path = path
        if path.lower().endswith(".tflite") and os.path.isfile(path):
            load = self._load_tflite
        elif os.path.isfile(os.path.join(path, "saved_model.pb")):
            load = self._load_saved_model
        elif os.path.isfile(os.path.join(path, "flags.json")):
            raise PredictError(f"--model={path} is a run that has not exported its "
                               "classifier yet (no export/): let it finish, or resume it")
        else:
            raise PredictError(f"--model={path} is neither a run directory, an export "
                               "directory (saved_model.pb) nor a .tflite file")
        try:
            load(path)
        except Exception as error:  # noqa: BLE001 -- TensorFlow and TFLite raise many types
            raise PredictError(f"--model={path} cannot be loaded "
                               f"({faults.first_line(error)[:200]})") from None
        if self.image_shape[-1] not in (1, 3):   # export_classifier takes any channel count
            raise PredictError(f"--model={path} takes images of {self.image_shape[-1]} "
                               "channels; image files are read as grayscale (1) or RGB (3)")

    def _load_saved_model(self, path):
        import tensorflow as tf
        loaded = tf.saved_model.load(path)
        self._serve = loaded.signatures["serving_default"]
        inputs = self._serve.structured_input_signature[1]
        if "images" not in inputs or inputs["images"].dtype != tf.uint8:
            # e.g. SGAN.export() (Keras' model.export): float images in, logits out
            raise ValueError("its serving_default signature takes no uint8 'images', "
                             "so it is not the classifier export that sgan_keras.train or "
                             "sgan_keras.export.export_classifier writes")
        self.image_shape = tuple(inputs["images"].shape[1:])
        outputs = self._serve(images=tf.zeros((1, *self.image_shape), tf.uint8))
        self.class_names = None
        if "class_names" not in outputs:     # an export from before class names
            self.class_names = [str(k) for k in range(outputs["probabilities"].shape[-1])]

    def _load_tflite(self, path):
        from sgan_keras import export as export_lib  # pylint: disable=import-outside-toplevel
        self._tflite = export_lib.tflite_runner(path)   # verified: a truncated file raises
        inputs = self._tflite.get_input_details()
        self.image_shape = tuple(int(size) for size in inputs["images"]["shape"][1:])
        labels = os.path.join(os.path.dirname(path), export_lib.LABELS)
        self.class_names = None
        if os.path.exists(labels):
            with open(labels, encoding="utf-8") as file:   # as export writes it
                self.class_names = file.read().splitlines()
            classes = int(self._tflite.get_output_details()["probabilities"]["shape"][-1])
            if len(self.class_names) != classes:
                raise ValueError(f"{labels} names {len(self.class_names)} classes, the "
                                 f"model has {classes}")

    def classify(self, images):
        """``(class_names [N], class_ids [N], probabilities [N, K])``."""
        if hasattr(self, "_tflite"):
            from sgan_keras import export as export_lib  # pylint: disable=import-outside-toplevel
            probabilities, class_ids = export_lib.tflite_classify(self._tflite, images)
            names = [self.class_names[k] if self.class_names else str(k) for k in class_ids]
            return names, class_ids, probabilities
        import tensorflow as tf
        outputs = self._serve(images=tf.constant(images))
        class_ids = outputs["class_ids"].numpy()
        if "class_names" in outputs:
            names = [name.decode() for name in outputs["class_names"].numpy()]
        else:
            names = [self.class_names[k] for k in class_ids]
        return names, class_ids, outputs["probabilities"].numpy()


def image_files(arguments):
    """Every image file named by ``arguments`` (files, directories, globs), in order."""
    from sgan_keras import data as data_lib  # pylint: disable=import-outside-toplevel
    found = []
    for argument in arguments:
        if os.path.isdir(argument):
            found += data_lib.image_files_in(argument)
        elif os.path.isfile(argument):
            found.append(argument)
        else:
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise PredictError(f"{argument} is no file, directory or matching pattern")
            for path in matches:                  # a matched directory is searched too
                found += data_lib.image_files_in(path) if os.path.isdir(path) else [path]
    if not found:
        raise PredictError(f"no image file in {' '.join(arguments)}")
    return found


HEADER = ["file", "class_name", "class_id", "probability"]
EXIT_USAGE = 2
EXIT_WRITE = 5   # as sgan_keras.train's
EXIT_INTERRUPTED = 75   # as sgan_keras.train's: EX_TEMPFAIL, try again


def predict(classifier, paths, output, batch_size=256, convert_channels=False,
            stopped=lambda: False):
    """Writes the CSV rows of ``paths`` to the file object ``output``;
    returns ``(classified, skipped)``: a count and the skipped paths (unreadable,
    or a name that is not valid UTF-8: :func:`sgan_keras.faults.is_utf8`).
    ``stopped()`` true before an image, or after the last, raises
    ``KeyboardInterrupt`` there."""
    from sgan_keras import data as data_lib  # pylint: disable=import-outside-toplevel
    writer = csv.writer(output)
    writer.writerow(HEADER)
    classified, skipped = 0, []
    for start in range(0, len(paths), batch_size):
        batch, names = [], []
        for path in paths[start:start + batch_size]:
            if stopped():
                raise KeyboardInterrupt
            if not faults.is_utf8(path):     # read_image_file cannot take it, the CSV
                skipped.append(path)     # could not name it
                continue
            try:
                batch.append(data_lib.read_image_file(path, classifier.image_shape,
                                                      convert_channels=convert_channels))
                names.append(path)
            except data_lib.UnreadableImage:
                skipped.append(path)
        if not batch:
            continue
        class_names, class_ids, probabilities = classifier.classify(np.stack(batch))
        for path, name, class_id, row in zip(names, class_names, class_ids, probabilities):
            writer.writerow([path, name, int(class_id), f"{row[class_id]:.6f}"])
        output.flush()
        classified += len(batch)
    if stopped():      # after the last image, before an --output replaces an earlier one
        raise KeyboardInterrupt
    return classified, skipped


class _NothingClassified(Exception):
    """No image could be read: the output file is not replaced."""


def check_output(path):
    """Refuses an ``--output`` that is a directory, lies in none, or is a file
    other than an earlier predictions file (a user's image, a link): only
    those are replaced."""
    if os.path.isdir(path):
        raise PredictError(f"--output={path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        existing = parent                 # its nearest existing ancestor: a file, or a
        while not os.path.exists(existing):   # directory that lacks the rest
            existing = os.path.dirname(existing)
        reason = ("No such file or directory" if os.path.isdir(existing)
                  else f"{existing} is not a directory")
        raise PredictError(f"--output={path} cannot be written ({reason})")
    if os.path.lexists(path) and (os.path.islink(path) or not _is_predictions_file(path)):
        raise PredictError(f"--output={path} exists and is not an earlier predictions file; "
                           "remove it or choose another --output")


def _is_predictions_file(path):
    """Whether ``path`` is a regular file whose first line is the header, read
    up to the header's length only: a device or a file without line breaks
    (``--output=/dev/full``, whose endless zeros took 21 GB until the OOM
    killer came) was read whole, and a named pipe waited for a writer."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, newline="") as file:
            first = file.readline(len(",".join(HEADER)) + len("\r\n"))
        return next(csv.reader([first]), None) == HEADER
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def write_predictions(path, classifier, paths, batch_size=256, convert_channels=False,
                      stopped=lambda: False):
    """:func:`predict` into the file ``path``, replaced only once every row is
    written (:func:`sgan_keras.faults.replace_atomically`): a bad image, no
    readable image or a full disk leave an earlier file as it was. Returns
    ``(classified, skipped)``. Call :func:`check_output` first."""
    counts = []

    def write(file):
        counts.extend(predict(classifier, paths, file, batch_size, convert_channels, stopped))
        if not counts[0]:
            raise _NothingClassified()

    try:
        faults.replace_atomically(path, write)
    except _NothingClassified:
        pass
    except faults.WriteError as error:
        raise faults.WriteError(f"{error}; an earlier file there is unchanged") from None
    except OSError as error:   # e.g. a name too long for the temporary beside it
        raise PredictError(f"--output={path} cannot be written ({error.strerror}); an earlier "
                           "file there is unchanged") from None
    return tuple(counts)


@contextlib.contextmanager
def _signals_stop_before_the_next_image():
    """While images are classified, SIGINT and SIGTERM are recorded and stop
    the run before the next image (``KeyboardInterrupt`` there): raised at
    once, one that landed inside TensorFlow's eager ops now and then crashed
    the process (SIGSEGV, exit -11) instead of its one line and 75; an ignored
    SIGINT stays ignored (:func:`faults.take_over_signals`). Yields the test
    ``stopped()``."""
    received = []
    previous = faults.take_over_signals((signal.SIGINT, signal.SIGTERM),
                                        lambda number, frame: received.append(number))
    try:
        yield lambda: bool(received)
    finally:
        faults.restore_signals(previous)


def main(argv):
    files = argv[1:]
    try:
        if not FLAGS.model:
            raise PredictError("--model is required (a run directory, export/ or .tflite)")
        if not files:
            raise PredictError("name the images to classify: files, directories or globs")
        if FLAGS.batch_size <= 0:
            raise PredictError(f"--batch_size must be positive, got {FLAGS.batch_size}")
        if FLAGS.output:
            check_output(FLAGS.output)
        if problem := faults.no_temporary_directory():   # TensorFlow's import needs one
            raise faults.WriteError(problem)
        _import_tensorflow()                     # once the flags are checked: seconds
        paths = image_files(files)               # before the model's seconds-long load
        classifier = Classifier(FLAGS.model)
        with _signals_stop_before_the_next_image() as stopped:
            if FLAGS.output:
                classified, skipped = write_predictions(FLAGS.output, classifier, paths,
                                                        FLAGS.batch_size, FLAGS.convert_channels,
                                                        stopped)
            else:
                with faults.writing("standard output"):
                    classified, skipped = predict(classifier, paths, sys.stdout,
                                                  FLAGS.batch_size, FLAGS.convert_channels,
                                                  stopped)
    except KeyboardInterrupt:   # SIGINT, or SIGTERM (run()); a temporary is removed
        _exit_interrupted()
    except _bad_input() as error:
        _exit(EXIT_USAGE, f"error: {error}")
    except faults.WriteError as error:
        _exit(EXIT_WRITE, f"error: {error}")
    except BrokenPipeError:
        # The reader of standard output (| head) has what it wanted. Python
        # would report the pipe again when it flushes at exit: send that to
        # /dev/null.
        faults.point_at_devnull(sys.stdout.fileno())
        sys.exit(0)
    unreadable = [path for path in skipped if faults.is_utf8(path)]
    if unreadable:
        print(f"sgan_keras.predict: skipped {len(unreadable)} unreadable file(s), e.g. "
              f"{unreadable[0]}", file=sys.stderr, flush=True)
    if len(unreadable) < len(skipped):
        unnamed = [path for path in skipped if not faults.is_utf8(path)]
        # Under an ASCII file-name encoding (PYTHONUTF8=0 LC_ALL=C) a UTF-8 name
        # arrives undecoded too: the hint says so ("rename them" alone would mislead).
        print(f"sgan_keras.predict: skipped {len(unnamed)} file(s) whose name is not valid "
              f"UTF-8 (the CSV cannot name them; rename them)"
              f"{faults.file_name_encoding_hint()}, e.g. {faults.printable(unnamed[0])}",
              file=sys.stderr, flush=True)
    if not classified:
        _exit(EXIT_USAGE, "error: no image could be read")


def _import_tensorflow():
    """Imports :mod:`sgan_keras.data` and :mod:`sgan_keras.export` (TensorFlow,
    Keras: seconds), then freezes the imported modules' objects, as
    :func:`sgan_keras.train.import_trainer` does and for its reason: the
    collector is off until then (since :func:`run`, under ``python -m`` since
    the module's top). A signal during the import is handled by :func:`main`."""
    for module in ("sgan_keras.data", "sgan_keras.export"):
        importlib.import_module(module)
    gc.freeze()
    gc.enable()


def _bad_input():
    """The exceptions that are bad input: :class:`PredictError`, and
    :class:`sgan_keras.data.DataError` once that module is imported."""
    data = sys.modules.get("sgan_keras.data")
    return (PredictError,) + ((data.DataError,) if data is not None else ())


def _exit_interrupted():
    written = (f"--output={FLAGS.output} is not written (an earlier file there is unchanged)"
               if FLAGS.output else "standard output has the rows classified before it")
    _exit(EXIT_INTERRUPTED, f"a signal (SIGINT or SIGTERM) stopped the run; {written}",
          kind="interrupted")


def _exit(status, message, kind=None):
    faults.ignore_stop_signals()     # the status is decided
    if kind:
        message = f"{kind}: {message}"
    print(f"sgan_keras.predict: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run():
    """Entry point of ``python -m sgan_keras.predict`` and the console script
    ``sgan-predict``. SIGTERM interrupts like SIGINT (``KeyboardInterrupt``):
    :func:`main` turns either into one line and :data:`EXIT_INTERRUPTED`.
    TensorFlow is imported in :func:`main` (:func:`_import_tensorflow`)."""
    faults.open_closed_standard_streams()   # before any file is opened
    gc.disable()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    faults.lend_main_the_usage(__doc__)
    define_flags()
    app.run(main, flags_parser=faults.help_whose_reader_may_go(app.parse_flags_with_usage))


if __name__ == "__main__":
    run()
