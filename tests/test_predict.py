"""The predict CLI: run directories, exports and TFLite files on image files."""

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import preloaded
from conftest import fill
from sgan_keras import data as data_lib
from sgan_keras.export import TFLITE_FLOAT, export_classifier

IMAGE_SHAPE = (8, 8, 3)
NAMES = ["zebra", "apple", "mango"]       # not alphabetical
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A directory laid out like a training run's: its classifier in export/."""
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Conv2D(4, 3),
                                   keras.layers.Flatten(), keras.layers.Dense(3)])
    run = tmp_path_factory.mktemp("predict") / "run"
    representative = np.random.default_rng(0).integers(0, 256, (32, *IMAGE_SHAPE), np.uint8)
    export_classifier(classifier, run / "export", image_shape=IMAGE_SHAPE, pixel_range=(-1, 1),
                      class_names=NAMES, representative_images=representative)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """PNG and JPEG files, one of another size, in nested folders, and a corrupt one."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    (root / "nested" / "deeper").mkdir(parents=True)
    paths = []
    for index, (folder, size, encode) in enumerate([
            ("", 8, tf.io.encode_png), ("nested", 8, tf.io.encode_jpeg),
            ("nested/deeper", 20, tf.io.encode_png), ("nested", 8, tf.io.encode_png)]):
        pixels = rng.integers(0, 256, (size, size, 3), np.uint8)
        path = root / folder / f"image{index}.{'jpg' if encode is tf.io.encode_jpeg else 'png'}"
        path.write_bytes(encode(pixels).numpy())
        paths.append(path)
    (root / "nested" / "broken.png").write_bytes(b"\x89PNG not really")
    return root, paths


EARLIER_PREDICTIONS = "file,class_name,class_id,probability\nold.png,apple,1,0.900000\n"


def predict(*args):
    """``python -m sgan_keras.predict *args``, forked from a process that has
    imported TensorFlow (tests/preloaded.py)."""
    return preloaded.run_module("sgan_keras.predict", args, ENV, os.getcwd(), timeout=300)


def rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_matches_the_saved_model_and_the_tflite_file(run_dir, images, tmp_path):
    root, paths = images
    gray = tmp_path / "gray.png"         # converted to RGB only when asked
    gray.write_bytes(tf.io.encode_png(np.full((8, 8, 1), 200, np.uint8)).numpy())
    result = predict(f"--model={run_dir}", root, gray, f"--output={tmp_path / 'out.csv'}",
                     "--batch_size=2", "--convert_channels")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped 1 unreadable file(s)" in result.stderr and "broken.png" in result.stderr
    saved = rows((tmp_path / "out.csv").read_text())
    assert sorted(row["file"] for row in saved) == sorted(map(str, paths + [gray]))
    # The same images through the SavedModel directly.
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    decoded = np.stack([data_lib.read_image_file(row["file"], IMAGE_SHAPE, convert_channels=True)
                        for row in saved])
    outputs = serve(images=tf.constant(decoded))
    ids = outputs["class_ids"].numpy()
    assert [int(row["class_id"]) for row in saved] == ids.tolist()
    assert [row["class_name"] for row in saved] == [NAMES[k] for k in ids]
    np.testing.assert_allclose([float(row["probability"]) for row in saved],
                               outputs["probabilities"].numpy()[np.arange(len(ids)), ids],
                               atol=1e-5)
    # The float TFLite file: same classes, probabilities within 1e-4 (its extension in
    # capitals, as some file systems and tools write it, was not taken for a TFLite file).
    shutil.copy(run_dir / "export" / TFLITE_FLOAT, tmp_path / "CLASSIFIER.TFLITE")
    shutil.copy(run_dir / "export" / "labels.txt", tmp_path)     # the class names beside it
    lite = predict(f"--model={tmp_path / 'CLASSIFIER.TFLITE'}", *paths)
    assert lite.returncode == 0, lite.stderr[-2000:]
    lite_rows = {row["file"]: row for row in rows(lite.stdout)}
    assert sorted(lite_rows) == sorted(map(str, paths))
    saved_rows = {row["file"]: row for row in saved}
    for path in map(str, paths):
        assert lite_rows[path]["class_name"] == saved_rows[path]["class_name"], path
        assert abs(float(lite_rows[path]["probability"])
                   - float(saved_rows[path]["probability"])) < 1e-4, path


def test_channel_conversion_is_explicit_and_a_refused_run_keeps_the_earlier_output(
        run_dir, images, tmp_path):
    root, paths = images
    gray = tmp_path / "gray.png"
    gray.write_bytes(tf.io.encode_png(np.full((8, 8, 1), 200, np.uint8)).numpy())
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(EARLIER_PREDICTIONS)
    # The colour image is classified first; the grayscale one then stops the run.
    refused = predict(f"--model={run_dir}", paths[0], gray, "--batch_size=1",
                      f"--output={earlier}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"sgan_keras.predict: error: {gray} is grayscale but the images must be colour "
        "(RGB); pass --convert_channels to convert them")
    assert earlier.read_text() == EARLIER_PREDICTIONS
    assert sorted(os.listdir(tmp_path)) == ["earlier.csv", "gray.png"]   # no temporary left
    nothing = predict(f"--model={run_dir}", root / "nested" / "broken.png", f"--output={earlier}")
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == (
        "sgan_keras.predict: error: no image could be read")
    assert earlier.read_text() == EARLIER_PREDICTIONS


def test_a_corrupt_model_and_an_unwritable_output_get_one_line(run_dir, images, tmp_path):
    _, paths = images
    broken = tmp_path / "export"
    shutil.copytree(run_dir / "export", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    (tmp_path / "broken.tflite").write_bytes(b"not a TFLite file")
    for model in (broken, tmp_path / "broken.tflite"):
        refused = predict(f"--model={model}", paths[0])
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith(
            f"sgan_keras.predict: error: --model={model} cannot be loaded (")
    short_labels = tmp_path / "short"             # a labels.txt that lacks classes
    short_labels.mkdir()
    shutil.copy(run_dir / "export" / TFLITE_FLOAT, short_labels)
    (short_labels / "labels.txt").write_text("only\ntwo\n")
    refused = predict(f"--model={short_labels / TFLITE_FLOAT}", paths[0])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"sgan_keras.predict: error: --model={short_labels / TFLITE_FLOAT} cannot be loaded "
        f"({short_labels / 'labels.txt'} names 2 classes, the model has {len(NAMES)})")
    output = tmp_path / "missing" / "out.csv"
    refused = predict(f"--model={run_dir}", paths[0], f"--output={output}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"sgan_keras.predict: error: --output={output} cannot be written "
        "(No such file or directory)")
    refused = predict(f"--model={run_dir}", paths[0], f"--output={tmp_path}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"sgan_keras.predict: error: --output={tmp_path} is a directory")


def test_bad_model_and_image_arguments_are_named(tmp_path):
    from sgan_keras.predict import Classifier, PredictError, image_files
    with pytest.raises(PredictError, match="--model=/nonexistent is neither"):
        Classifier("/nonexistent")
    (tmp_path / "run").mkdir()                     # a run still training: no export yet
    (tmp_path / "run" / "flags.json").write_text("{}")
    with pytest.raises(PredictError, match=r"run is a run that has not exported its "
                       r"classifier yet \(no export/\): let it finish, or resume it$"):
        Classifier(str(tmp_path / "run"))
    with pytest.raises(PredictError, match="/nonexistent/\\*.png is no file, directory"):
        image_files(["/nonexistent/*.png"])
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(PredictError, match="no image file in"):
        image_files([str(tmp_path)])



def test_the_console_scripts_help_is_the_modules(tmp_path):
    # As pip's sgan-predict script runs it: absl's --help printed a bare USAGE
    # line, its __main__ having no docstring, not the usage and exit statuses.
    script = tmp_path / "sgan-predict"
    script.write_text("import sys\nfrom sgan_keras.predict import run\nsys.exit(run())\n")
    result = subprocess.run([sys.executable, str(script), "--helpshort"], capture_output=True,
                            text=True, timeout=300, env=ENV)
    assert "Classifies image files with an exported classifier." in result.stdout
    assert "75  stopped by SIGINT" in result.stdout

def test_a_keras_model_export_is_named_as_not_the_classifier_export(tmp_path):
    """SGAN.export() (Keras' model.export) serves float images, no ``images``
    input: predict said only ``cannot be loaded ('images')``."""
    from sgan_keras.predict import Classifier, PredictError
    model = keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.export(str(tmp_path / "keras_export"), verbose=False)
    with pytest.raises(PredictError, match=r"keras_export cannot be loaded \(its serving_"
                       r"default signature takes no uint8 'images', so.*export_classifier writes\)$"):
        Classifier(str(tmp_path / "keras_export"))


def test_a_model_of_neither_one_nor_three_channels_gets_one_line(images, tmp_path):
    """export_classifier exports any channel count; predict ended in a KeyError
    (or a ValueError with --convert_channels) traceback on a 4-channel one."""
    from sgan_keras.predict import Classifier, PredictError
    shape = (8, 8, 4)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(3)])
    export = export_classifier(model, tmp_path / "export", image_shape=shape, pixel_range=(0, 1),
                               representative_images=np.zeros((2, *shape), np.uint8))
    _, paths = images
    for flags in ([], ["--convert_channels"]):
        result = predict(f"--model={export}", *flags, str(paths[0]))
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == (
            f"sgan_keras.predict: error: --model={export} takes images of 4 channels; image "
            "files are read as grayscale (1) or RGB (3)")
        assert "Traceback" not in result.stderr
    with pytest.raises(PredictError, match="takes images of 4 channels"):
        Classifier(os.path.join(export, TFLITE_FLOAT))


def test_a_glob_that_matches_directories_searches_them(images):
    from sgan_keras.predict import image_files
    root, paths = images
    found = image_files([str(root / "*")])         # image0.png and the folder nested/
    assert sorted(found) == sorted(map(str, paths + [root / "nested" / "broken.png"]))


def test_a_full_disk_gets_one_line_and_keeps_the_earlier_output(run_dir, images, small_disk):
    _, paths = images
    earlier = small_disk / "predictions.csv"
    earlier.write_text(EARLIER_PREDICTIONS)
    fill(small_disk)
    refused = predict(f"--model={run_dir}", *paths, f"--output={earlier}")
    assert refused.returncode == 5 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"sgan_keras.predict: error: cannot write {earlier} (No space left on device); "
        "an earlier file there is unchanged")
    assert earlier.read_text() == EARLIER_PREDICTIONS
    assert sorted(os.listdir(small_disk)) == ["filler", "predictions.csv"]  # no temporary left


def test_output_replaces_only_an_earlier_predictions_file(run_dir, images, tmp_path):
    """A user's file (an image, notes) or a link at --output is refused and
    left as it was; an earlier predictions file is replaced."""
    _, paths = images
    picture = tmp_path / "keep.png"
    shutil.copy(paths[0], picture)
    notes = tmp_path / "notes.csv"
    notes.write_text("name,comment\n")
    link = tmp_path / "link.csv"
    link.symlink_to(notes)
    for output in (picture, notes, link):
        before = output.read_bytes()
        refused = predict(f"--model={run_dir}", paths[1], f"--output={output}")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == (
            f"sgan_keras.predict: error: --output={output} exists and is not an earlier "
            "predictions file; remove it or choose another --output")
        assert output.read_bytes() == before
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(EARLIER_PREDICTIONS)
    result = predict(f"--model={run_dir}", paths[1], f"--output={earlier}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["file"] for row in rows(earlier.read_text())] == [str(paths[1])]


def test_standard_output_closed_early_or_full(run_dir, images):
    """A reader that closes the pipe early (``| head``) ends the run quietly
    with 0; a full standard output (``> /dev/full``) gets one line and 5."""
    arguments = [f"--model={run_dir}", "--batch_size=1", *map(str, images[1])]
    closed = preloaded.run_module_with_stdout("sgan_keras.predict", "closed", arguments, ENV,
                                              timeout=300)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr[-2000:]
    assert "sgan_keras.predict: error" not in closed.stderr
    full = preloaded.run_module_with_stdout("sgan_keras.predict", "/dev/full", arguments, ENV,
                                            timeout=300)
    assert full.returncode == 5 and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert full.stderr.strip().splitlines()[-1] == (
        "sgan_keras.predict: error: cannot write standard output (No space left on device)")


def test_a_truncated_tflite_file_gets_one_line_not_a_crash(run_dir, images, tmp_path):
    """TFLite's ``model_path`` loader does not verify the flatbuffer: a file
    cut at 100 or 1000 bytes crashed predict (SIGSEGV, in the forked child
    here). Each cut, and an empty file, is bad input."""
    _, paths = images
    whole = (run_dir / "export" / TFLITE_FLOAT).read_bytes()
    for size in (100, 1000, len(whole) * 9 // 10, len(whole) - 1, 0):
        cut = tmp_path / str(size)
        cut.mkdir()
        (cut / TFLITE_FLOAT).write_bytes(whole[:size])
        shutil.copy(run_dir / "export" / "labels.txt", cut)
        refused = predict(f"--model={cut / TFLITE_FLOAT}", paths[0])
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, (
            size, refused.returncode, refused.stderr[-2000:])
        reason = ("the file is empty" if not size else
                  "truncated, or not a TFLite file: its flatbuffer does not verify")
        assert refused.stderr.strip().splitlines()[-1] == (
            f"sgan_keras.predict: error: --model={cut / TFLITE_FLOAT} cannot be loaded "
            f"({reason})"), size


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_gets_one_line_and_75_and_leaves_no_temporary(
        run_dir, images, tmp_path, number):
    """The same image named 20,000 times, one per batch: the signal arrives
    once the temporary beside --output holds rows."""
    shutil.copy(images[1][0], tmp_path / "i.png")
    (tmp_path / "o").mkdir()
    child = preloaded.launch_module(
        "sgan_keras.predict", [f"--model={run_dir}", "--batch_size=1", "--output=o/new.csv",
                               *["i.png"] * 20000], ENV, tmp_path)
    deadline = time.monotonic() + 120
    while not any(name.startswith(".new.csv.tmp") and
                  os.path.getsize(tmp_path / "o" / name) > 100
                  for name in os.listdir(tmp_path / "o")):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1]
        time.sleep(0.05)
    child.send_signal(number)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 75 and "Traceback" not in stderr, (child.returncode,
                                                                   stderr[-2000:])
    assert stderr.strip().splitlines()[-1] == (
        "sgan_keras.predict: interrupted: a signal (SIGINT or SIGTERM) stopped the run; "
        "--output=o/new.csv is not written (an earlier file there is unchanged)")
    assert os.listdir(tmp_path / "o") == []           # no temporary left


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_tensorflow_loads_gets_one_line_and_75(tmp_path, number):
    """In a fresh interpreter: the signal arrives while the import runs."""
    script = ("import os, signal, sys\n"
              "from sgan_keras import predict\n"
              f"predict._import_tensorflow = lambda: os.kill(os.getpid(), {int(number)})\n"
              "sys.argv = ['predict.py', '--model=anything', 'a.png']\n"
              "predict.run()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode == 75 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "sgan_keras.predict: interrupted: a signal (SIGINT or SIGTERM) stopped the run; "
        "standard output has the rows classified before it")


def test_a_signal_while_writing_standard_output_keeps_whole_rows(run_dir, images, tmp_path):
    """The rows already on standard output stay, each whole."""
    shutil.copy(images[1][0], tmp_path / "i.png")
    child = preloaded.launch_module(
        "sgan_keras.predict", [f"--model={run_dir}", "--batch_size=1", *["i.png"] * 20000],
        ENV, tmp_path)
    deadline = time.monotonic() + 120
    # The header and 20 rows: with only 20 lines seen, a signal landing at once left 19 rows.
    while child.poll() is None and len(child.stdout_so_far().splitlines()) < 21:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 75, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].endswith(
        "standard output has the rows classified before it")
    lines = stdout.splitlines()
    assert lines[0] == "file,class_name,class_id,probability" and stdout.endswith("\n")
    assert 20 <= len(lines) - 1 < 20000
    assert all(row["file"] == "i.png" and float(row["probability"]) > 0
               for row in rows(stdout))


def test_a_file_name_that_is_not_utf8_is_skipped_and_named_with_escapes(
        run_dir, images, tmp_path):
    _, paths = images
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(paths[0], folder / "good.png")
    shutil.copy(paths[0], os.fsencode(folder) + b"/caf\xe9.png")
    output = tmp_path / "out.csv"
    result = predict(f"--model={run_dir}", folder, f"--output={output}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "sgan_keras.predict: skipped 1 file(s) whose name is not valid UTF-8 (the CSV "
        f"cannot name them; rename them), e.g. {folder}/caf\\xe9.png")
    assert [row["file"] for row in rows(output.read_text())] == [str(folder / "good.png")]


def test_a_utf8_name_skipped_under_an_ascii_file_name_encoding_says_to_change_the_locale(
        run_dir, images, tmp_path):
    """Under ``PYTHONUTF8=0 LC_ALL=C`` a UTF-8 name arrives as lone surrogates:
    the line said only that it is not UTF-8 and to rename it."""
    _, paths = images
    shutil.copy(paths[0], tmp_path / "café.png")
    result = subprocess.run(
        [sys.executable, "-m", "sgan_keras.predict", f"--model={run_dir}",
         os.fsencode(tmp_path / "café.png")], capture_output=True, text=True, timeout=300,
        env={**ENV, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("(the CSV cannot name them; rename them) (this Python decodes file names as ascii: "
            "run it under a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or with PYTHONUTF8=1), e.g. "
            in result.stderr), result.stderr[-2000:]


def test_an_output_under_a_file_says_that_it_is_not_a_directory(tmp_path):
    from sgan_keras.predict import PredictError, check_output
    (tmp_path / "notes.txt").write_text("a user's file")
    for output in (tmp_path / "notes.txt" / "x.csv", tmp_path / "notes.txt" / "a" / "x.csv"):
        with pytest.raises(PredictError) as raised:
            check_output(str(output))
        assert str(raised.value) == (f"--output={output} cannot be written "
                                     f"({tmp_path / 'notes.txt'} is not a directory)")
    with pytest.raises(PredictError, match=r"\(No such file or directory\)$"):
        check_output(str(tmp_path / "missing" / "x.csv"))


def test_a_signal_while_classifying_stops_before_the_next_image(images):
    """SIGINT and SIGTERM raised KeyboardInterrupt at once; one that landed
    inside TensorFlow's eager ops now and then crashed predict (SIGSEGV, -11).
    They are recorded, and the run stops before the next image."""
    from sgan_keras import predict as predict_lib

    class Classifier:
        image_shape = (8, 8, 3)

        def classify(self, batch):
            return ["a"] * len(batch), np.zeros(len(batch), int), np.ones((len(batch), 1))

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with predict_lib._signals_stop_before_the_next_image() as stopped:
        os.kill(os.getpid(), signal.SIGTERM)     # handled by the next bytecode: recorded
        assert stopped()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    # A SIGINT ignored (a non-interactive shell's background job) stays ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with predict_lib._signals_stop_before_the_next_image() as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            assert not stopped()
    finally:
        signal.signal(signal.SIGINT, before[1])
    output, asked = io.StringIO(), []
    with pytest.raises(KeyboardInterrupt):     # stopped after the first batch of 2 images
        predict_lib.predict(Classifier(), [str(path) for path in images[1]], output,
                            batch_size=2, stopped=lambda: asked.append(1) or len(asked) > 2)
    assert output.getvalue().splitlines()[1:] == [f"{path},a,0,1.000000"
                                                  for path in images[1][:2]]


def test_an_output_that_is_a_device_a_pipe_or_one_long_line_is_refused_reading_little(
        tmp_path):
    """Whether --output is an earlier predictions file is told from its first
    line, read up to the header's length: a file without line breaks was read
    whole (--output=/dev/full took 21 GB until the OOM killer came), and a
    named pipe blocked the run until something wrote to it."""
    import threading
    import tracemalloc

    from sgan_keras.predict import PredictError, check_output
    long_line = tmp_path / "long.bin"
    long_line.write_bytes(b"x" * 16_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(PredictError, match="exists and is not an earlier predictions"):
            check_output(str(long_line))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    raised = []

    def check():
        try:
            check_output(str(pipe))
        except PredictError as error:
            raised.append(str(error))

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(5)
    blocked = thread.is_alive()
    if blocked:                # waiting for a writer: give it one, so the thread ends
        with open(pipe, "w"):
            pass
        thread.join()
    assert not blocked, "check_output waited on the named pipe"
    assert raised == [f"--output={pipe} exists and is not an earlier predictions file; "
                      "remove it or choose another --output"]


def test_a_link_to_an_earlier_predictions_file_is_refused_as_output(tmp_path):
    """A link is a user's: --output replaces only an earlier predictions file
    itself, even when the link points at one (replaced, the link would become
    a file and its target stay as it was)."""
    from sgan_keras.predict import PredictError, check_output
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(EARLIER_PREDICTIONS)
    check_output(str(earlier))                       # the file itself: replaced
    link = tmp_path / "link.csv"
    link.symlink_to(earlier)
    with pytest.raises(PredictError, match=r"^--output=.*link.csv exists and is not an "
                                           r"earlier predictions file"):
        check_output(str(link))
    assert link.is_symlink() and earlier.read_text() == EARLIER_PREDICTIONS


def test_a_stop_after_the_last_image_leaves_an_earlier_output_unchanged(images, tmp_path):
    """A signal that lands after the last image is classified, before --output
    replaces an earlier file, still stops the run: KeyboardInterrupt, the
    earlier file as it was."""
    from sgan_keras.predict import write_predictions

    class Stub:
        image_shape = IMAGE_SHAPE

        def classify(self, batch):
            return ["a"] * len(batch), np.zeros(len(batch), np.int64), np.ones((len(batch), 1))

    _, paths = images
    calls = []

    def stopped():                       # false before the one image, true after it
        calls.append(None)
        return len(calls) > 1
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(EARLIER_PREDICTIONS)
    with pytest.raises(KeyboardInterrupt):
        write_predictions(str(earlier), Stub(), [str(paths[0])], stopped=stopped)
    assert len(calls) == 2
    assert earlier.read_text() == EARLIER_PREDICTIONS
    assert os.listdir(tmp_path) == ["earlier.csv"]
