"""Exports a trained classifier as a self-contained TensorFlow SavedModel.

The SavedModel's ``serving_default`` signature takes what a user has at hand,
uint8 images ``images: [N, H, W, C]``, scales them to the range the network
was trained on inside the graph, and returns ``probabilities`` (softmax,
float32 ``[N, K]``) and ``class_ids`` (argmax, int64 ``[N]``). Loading it
needs TensorFlow only, not ``sgan_keras``::

    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs = serve(images=tf.constant(uint8_images))

It is written with ``keras.export.ExportArchive``, the Keras 3 replacement of
``tf.keras`` SavedModel saving (https://keras.io/api/models/model_saving_apis/export/),
with the endpoint ``serving_default`` (the TF-Serving default key), which also
returns ``class_names`` (string ``[N]``), and ``classify``, the same without
strings, from which the TFLite files are converted.

With ``representative_images`` the export directory also holds, for phones
and microcontrollers (``tf.lite.TFLiteConverter``, TensorFlow's post-training
quantization guide):

- ``classifier.tflite``: the float model, uint8 images in, ``probabilities``
  and ``class_ids`` out;
- ``classifier_int8.tflite``: full integer quantization (every op int8, only
  the uint8 input cast and the float probabilities at the ends), calibrated
  on ``representative_images``: in semi-supervised training the unlabeled
  images are that data set, for free;
- ``labels.txt``: the class names, one per line (TFLite's convention).

Writing is atomic: the archive goes to a temporary sibling directory that is
renamed into place once complete, so a crash never leaves a half-written
export under ``export_dir`` and an ``overwrite`` replaces the old export only
after the new one is whole.

A classifier trained in mixed precision (bfloat16 compute, float32 variables)
is exported from a float32 copy: the same float32 variables, float32 compute.
TFLite has no bfloat16 matmul, and the Keras mixed-precision guide serves
such models in float32; the export's accuracy is measured, not assumed
(``trainer.py`` writes the test accuracy of the trained Keras model, the
SavedModel and both TFLite files to ``export/accuracy.json``).
"""

import concurrent.futures
import os
import re
import secrets
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from sgan_keras import checks, faults
from sgan_keras import layers as sgan_layers
from sgan_keras.choices import INPUT_PIXEL_RANGES


class ExportError(ValueError):
    """Bad export arguments or an existing export; the message is one line."""


TFLITE_FLOAT, TFLITE_INT8, LABELS = "classifier.tflite", "classifier_int8.tflite", "labels.txt"
# TF 2.21's tf.lite.Interpreter warns that it moves to ai-edge-litert ("scheduled
# for deletion in TF 2.20"); it still works.
_INTERPRETER_DEPRECATED = r"\s*Warning: tf\.lite\.Interpreter is deprecated"


def export_classifier(classifier, export_dir, *, image_shape, pixel_range, overwrite=False,
                      class_names=None, representative_images=None):
    """Writes ``classifier`` as a SavedModel serving uint8 images; returns ``export_dir``.

    Args:
      classifier: a ``keras.Model`` mapping float32 images scaled to
        ``pixel_range`` to K class logits ``[N, K]``.
      export_dir: the SavedModel directory to create.
      image_shape: ``(H, W, C)`` of one image.
      pixel_range: ``(-1.0, 1.0)`` or ``(0.0, 1.0)``, or 255/256 of either
        (``--pixel_scale=256``): the classifier's input range; uint8 ``0..255``
        maps linearly onto it.
      overwrite: replace an earlier export (or an empty directory) at
        ``export_dir`` once the new export is complete, instead of raising
        :class:`ExportError`; anything else there is refused all the same.
      class_names: K names (default ``"0"``..``"K-1"``).
      representative_images: uint8 images ``[M, H, W, C]`` (a few hundred):
        also write the TFLite files, the int8 one calibrated on them.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    image_shape = _check_image_shape(image_shape)
    low, high = _check_pixel_range(pixel_range)
    _check_replaceable(export_dir, overwrite)
    num_classes = _check_classifier(classifier, image_shape)
    classifier = _computing_in_float32(classifier)
    class_names = [str(name) for name in
                   (range(num_classes) if class_names is None else class_names)]
    if len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names for {num_classes} classes")
    broken = [name for name in class_names if "".join(name.splitlines()) != name]
    if broken and representative_images is not None:   # labels.txt would read as more names
        raise ExportError(f"class name {broken[0]!r} has a line break, and {LABELS} holds "
                          "one name a line")

    def classify(images):
        # A loaded signature does not check its input's shape: an image batch
        # without its channel axis ([N, H, W], as keras.datasets.mnist gives it)
        # would abort the process in oneDNN's convolution. This raises instead.
        images = tf.ensure_shape(images, [None, *image_shape])
        scaled = tf.cast(images, tf.float32) * ((high - low) / 255.0) + low
        logits = tf.cast(classifier(scaled, training=False), tf.float32)
        return {"probabilities": tf.nn.softmax(logits, axis=-1),
                "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int64)}

    names = tf.constant(class_names)

    def serving_default(images):
        outputs = classify(images)
        return {**outputs, "class_names": tf.gather(names, outputs["class_ids"])}

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    spec = [tf.TensorSpec([None, *image_shape], tf.uint8, name="images")]
    archive.add_endpoint(name="serving_default", fn=serving_default, input_signature=spec)
    archive.add_endpoint(name="classify", fn=classify, input_signature=spec)

    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(export_dir)
    # Not mkdtemp, which makes it owner-only: the export gets the umask's
    # mode, so that a server running as another user can read it.
    staging = os.path.join(
        parent, f".{name}{faults.TEMPORARY_MARK}-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(staging)
    try:
        archive.write_out(staging, verbose=False)
        _check_written(staging, num_classes, image_shape)
        if representative_images is not None:
            _write_tflite(staging, representative_images, image_shape, class_names)
        faults.fsync_tree(staging)   # on the disk before it replaces an old export
        _move_into_place(staging, export_dir, overwrite)
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def _write_tflite(saved_model_dir, representative_images, image_shape, class_names):
    """``classifier.tflite``, ``classifier_int8.tflite`` and ``labels.txt``
    from the SavedModel's ``classify`` signature."""
    images = np.asarray(representative_images)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(image_shape) or not len(images):
        raise ExportError(f"representative_images must be uint8 [M, {', '.join(map(str, image_shape))}]"
                          f" with M > 0, got {images.dtype} {images.shape}")

    def converter():
        return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                        signature_keys=["classify"])

    float_model = converter().convert()

    def representative_dataset():
        for image in images:
            yield {"images": image[None]}

    int8 = converter()
    int8.optimizations = [tf.lite.Optimize.DEFAULT]
    int8.representative_dataset = representative_dataset
    int8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():  # its calibration runs a tf.lite.Interpreter
        warnings.filterwarnings("ignore", _INTERPRETER_DEPRECATED, UserWarning)
        int8_model = int8.convert()
    for file_name, content in ((TFLITE_FLOAT, float_model), (TFLITE_INT8, int8_model)):
        with open(os.path.join(saved_model_dir, file_name), "wb") as file:
            file.write(content)
    # UTF-8 whatever the locale (TFLite's convention; an ASCII one would refuse 'café').
    with open(os.path.join(saved_model_dir, LABELS), "w", encoding="utf-8") as file:
        file.write("".join(f"{name}\n" for name in class_names))


def tflite_runner(model_path):
    """The ``classify`` signature of a TFLite file, ready to run.

    The file's bytes are loaded with ``model_content``, which runs TFLite's
    flatbuffer verifier first; ``model_path`` does not, and a truncated file
    would crash the process there (a segmentation fault). A file that does not
    verify raises ``ValueError``. Corruption that leaves a valid flatbuffer
    (changed weight bytes) is not detected.

    TFLite's default XNNPACK delegate refuses some int8 files when first run
    ("failed to create XNNPACK runtime"): one whose layer gave only zeros on
    the calibration images (a dead ReLU layer, as a diverged run leaves) gets a
    requantization scale beyond XNNPACK's range. A blank image is classified
    once here, and such a file runs on TFLite's own kernels instead.
    """
    with open(model_path, "rb") as file:
        content = file.read()
    if not content:
        raise ValueError("the file is empty")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _INTERPRETER_DEPRECATED, UserWarning)
        try:
            interpreter = tf.lite.Interpreter(model_content=content)
        except ValueError as error:
            if "not a valid Flatbuffer" not in str(error):
                raise
            raise ValueError("truncated, or not a TFLite file: its flatbuffer does not "
                             "verify") from None
        # Another tool's file: TFLite's own words name only the missing key.
        signature = interpreter.get_signature_list().get("classify", {})
        if "images" not in signature.get("inputs", ()):
            raise ValueError("it has no 'classify' signature taking 'images', so it is not "
                             "an export_classifier TFLite file")
        runner = interpreter.get_signature_runner("classify")
        shape = runner.get_input_details()["images"]["shape_signature"]
        try:
            runner(images=np.zeros((1, *shape[1:]), np.uint8))
        except RuntimeError as error:
            if "XNNPACK" not in str(error):
                raise
            interpreter = tf.lite.Interpreter(
                model_content=content, experimental_op_resolver_type=(
                    tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
            runner = interpreter.get_signature_runner("classify")
    return runner


def tflite_classify(model, images, batch_size=256):
    """``(probabilities [N, K], class_ids [N])`` of a TFLite file (or its
    :func:`tflite_runner`) on uint8 images."""
    runner = tflite_runner(model) if isinstance(model, (str, os.PathLike)) else model
    images = np.asarray(images)
    # TFLite resizes its input to any shape and classifies RGB images with a
    # grayscale model, or [N, H, W] ones, without a word; the SavedModel refuses them.
    shape = tuple(int(size) for size in runner.get_input_details()["images"]["shape_signature"])
    _check_image_batch_shape(images, shape)
    return _classify_in_batches(runner, images, batch_size)


def saved_model_classify(export_dir, images, batch_size=256):
    """``(probabilities [N, K], class_ids [N])`` of the exported SavedModel's
    ``serving_default`` signature on uint8 images."""
    def classify():
        serve = _serve(os.fspath(export_dir))
        # The signature's own refusals are TypeErrors that print the whole batch.
        spec = serve.structured_input_signature[1].get("images")
        if spec is None or spec.dtype != tf.uint8:   # e.g. SGAN.export()'s: float images
            raise ValueError(f"{os.fspath(export_dir)}: its serving_default signature takes "
                             "no uint8 'images', so it is not an export_classifier export")
        _check_image_batch_shape(np.asarray(images), tuple(spec.shape))
        return _classify_in_batches(serve, images, batch_size)
    return _outside_any_strategy(classify)


def _check_image_batch_shape(images, shape):
    """Refuses ``images`` whose shape is not ``[N, *shape[1:]]`` (a model's ``[N, H, W, C]``)."""
    if images.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"the images must be [N, {', '.join(map(str, shape[1:]))}], got "
                         f"shape {list(images.shape)}")


def _serve(export_dir):
    return tf.saved_model.load(export_dir).signatures["serving_default"]


def _outside_any_strategy(function):
    """``function()``, in a thread of its own under a caller's ``tf.distribute``
    strategy scope (a notebook exporting inside ``with strategy.scope():``):
    a SavedModel loaded there gets distributed variables, which its signatures
    cannot read outside ``strategy.run``. The scope belongs to the thread."""
    if not tf.distribute.has_strategy():
        return function()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result()


def _classify_in_batches(signature, images, batch_size):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        # A cast would turn float images scaled to [0, 1] into zeros without a word.
        raise ValueError(f"the images must be uint8 [N, H, W, C] (the raw 0-255 pixels; the "
                         f"export scales them), got {images.dtype}")
    if not checks.is_integer(batch_size) or batch_size < 1:
        # A negative one classified one blank image, its row returned for all the images.
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    probabilities, class_ids = [], []
    # No image: one blank one gives the [0, K] shapes (a convolution of an empty
    # batch fails, and concatenating no batch too).
    batches = ([images[start:start + batch_size] for start in range(0, len(images), batch_size)]
               or [np.zeros((1, *images.shape[1:]), np.uint8)])
    for batch in batches:
        outputs = signature(images=batch)
        probabilities.append(np.asarray(outputs["probabilities"], np.float32))
        class_ids.append(np.asarray(outputs["class_ids"], np.int64))
    return np.concatenate(probabilities)[:len(images)], np.concatenate(class_ids)[:len(images)]


def _computing_in_float32(classifier):
    """``classifier`` itself if every layer computes in float32, else a float32
    copy of it with the same weights (see the module docstring)."""
    if all(layer.compute_dtype == "float32"
           for layer in sgan_layers.computing_layers(classifier)):
        return classifier

    def float32_layer(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(classifier, clone_function=float32_layer,
                                        recursive=True)
    except ValueError:   # subclassed models cannot be cloned
        # The message names its layers' dtypes, not its own: a subclassed model's
        # policy may be float32 around bfloat16 layers (an SGAN's).
        dtypes = sorted({layer.compute_dtype
                         for layer in sgan_layers.computing_layers(classifier)}
                        - {"float32"})
        raise ExportError(f"the classifier has layers computing in {', '.join(dtypes)} and no "
                          f"float32 copy can be made of it ({type(classifier).__name__} is "
                          "not a functional or Sequential model): export a functional one "
                          "(an SGAN's model.classifier()), or build it with the float32 "
                          "policy") from None
    copy.set_weights(classifier.get_weights())
    return copy


def _check_image_shape(image_shape):
    try:
        shape = tuple(int(size) for size in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise ExportError(f"image_shape must be (height, width, channels) of positive "
                          f"integers, got {image_shape!r}")
    return shape


def _check_pixel_range(pixel_range):
    try:
        low, high = (float(value) for value in pixel_range)
    except (TypeError, ValueError):
        low = high = None
    if (low, high) not in INPUT_PIXEL_RANGES:
        raise ExportError(f"pixel_range must be one of {INPUT_PIXEL_RANGES}, got "
                          f"{pixel_range!r}")
    return low, high


def _check_classifier(classifier, image_shape):
    """Runs ``classifier`` on one blank image; returns K (its logit count)."""
    if not isinstance(classifier, keras.Model):
        raise ExportError(f"classifier must be a keras.Model, got {type(classifier).__name__}")
    try:
        logits = classifier(np.zeros((1, *image_shape), np.float32), training=False)
    except ValueError as error:   # Keras' input-shape check
        raise ExportError(f"classifier does not take images of image_shape {image_shape} "
                          f"({_keras_reason(error)[:200]})") from None
    if isinstance(logits, (list, tuple, dict)):   # an SGAN's D: logits and features
        raise ExportError(f"classifier must map images to one [N, K] logits tensor, got "
                          f"{len(logits)} outputs (for an SGAN, export model.classifier(), "
                          "not model.discriminator)")
    shape = tuple(logits.shape)
    if len(shape) != 2 or shape[0] != 1 or not shape[1]:
        raise ExportError(f"classifier must map [N, {', '.join(map(str, image_shape))}] images "
                          f"to [N, K] logits, got output shape {shape} for N=1")
    return int(shape[1])


def _keras_reason(error):
    """The line of a Keras layer's error that says what is wrong. Its first line
    says only where ('Exception encountered when calling Sequential.call().');
    the reason follows, in bold (terminal escape codes)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    if lines and lines[0].startswith("Exception encountered when calling"):
        return next((line for line in lines[1:] if line), lines[0])
    return faults.first_line(error)


def _check_written(path, num_classes, image_shape):
    """Loads the new export back and checks its signature before it replaces anything."""
    outputs = _outside_any_strategy(
        lambda: _serve(path)(images=tf.zeros((1, *image_shape), tf.uint8)))
    if tuple(outputs["probabilities"].shape) != (1, num_classes) or \
            tuple(outputs["class_ids"].shape) != (1,):
        raise ExportError(f"the SavedModel written to {path} does not serve "
                          f"[N, {num_classes}] probabilities")


def _check_replaceable(export_dir, overwrite):
    """Refuses an existing ``export_dir`` without ``overwrite``, and with it
    anything but an earlier SavedModel (a directory holding ``saved_model.pb``)
    or an empty directory: a user's folder or file there (a run directory, the
    working directory) would be deleted with the old export."""
    if not os.path.lexists(export_dir):
        return
    if not overwrite:
        raise ExportError(f"export_dir {export_dir} already exists; "
                          "pass overwrite=True to replace it")
    empty = os.path.isdir(export_dir) and not os.listdir(export_dir)
    if not empty and not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ExportError(f"export_dir {export_dir} is neither an earlier export "
                          "(saved_model.pb) nor an empty directory, all that overwrite=True "
                          "replaces: remove it or choose another export_dir")


def _move_into_place(staging, export_dir, overwrite):
    """Renames ``staging`` to ``export_dir``; an old export is removed only afterwards."""
    backup = None
    if os.path.lexists(export_dir):
        _check_replaceable(export_dir, overwrite)   # it may have appeared while we wrote
        backup = tempfile.mkdtemp(
            prefix=f".{os.path.basename(export_dir)}.old{faults.TEMPORARY_MARK}-",
            dir=os.path.dirname(export_dir))
        backup_path = os.path.join(backup, "previous")
        os.rename(export_dir, backup_path)
    try:
        os.rename(staging, export_dir)
    except BaseException:   # a failed rename, or Ctrl-C between the two
        if backup is not None:  # put the old export back
            os.rename(backup_path, export_dir)
            shutil.rmtree(backup, ignore_errors=True)
        raise
    faults.fsync(os.path.dirname(os.path.abspath(export_dir)))   # the rename itself
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
