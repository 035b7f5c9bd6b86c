"""The SavedModel export: uint8 serving signature, standalone loading, atomic overwrite."""

import json
import os
import stat
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import preloaded
from sgan_keras import faults
from sgan_keras.export import ExportError, export_classifier, saved_model_classify

IMAGE_SHAPE = (6, 5, 2)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Runs in plain Python: loads each export with TensorFlow alone and serves uint8 images.
SERVE_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf
images = np.load(sys.argv[1])
results = []
for path in sys.argv[2:]:
    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs = serve(images=tf.constant(images))
    results.append({"probabilities": outputs["probabilities"].numpy().tolist(),
                    "probabilities_dtype": outputs["probabilities"].dtype.name,
                    "class_ids": outputs["class_ids"].numpy().tolist(),
                    "class_ids_dtype": outputs["class_ids"].dtype.name})
assert "sgan_keras" not in sys.modules, "the export must not need sgan_keras"
print(json.dumps(results))
"""


def tiny_classifier(seed, num_classes=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes)])


def softmax(logits):
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


def uint8_images(count=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *IMAGE_SHAPE), dtype=np.uint8)


def scale(images, pixel_range):
    low, high = pixel_range
    return images.astype(np.float32) / 255.0 * (high - low) + low


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export per supported pixel range, with the model that made it."""
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for seed, pixel_range in enumerate([(-1.0, 1.0), (0.0, 1.0)]):
        model = tiny_classifier(seed)
        path = export_classifier(model, root / f"range{seed}", image_shape=IMAGE_SHAPE,
                                 pixel_range=pixel_range)
        made[pixel_range] = (model, path)
    return made


def test_export_serves_uint8_images_in_plain_tensorflow(exports, tmp_path):
    images = uint8_images()
    np.save(tmp_path / "images.npy", images)
    paths = [path for _, path in exports.values()]
    result = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(tmp_path / "images.npy"),
                             *paths], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for (pixel_range, (model, _)), outputs in zip(exports.items(), served):
        expected = softmax(model(scale(images, pixel_range), training=False))
        assert outputs["probabilities_dtype"] == "float32"
        assert outputs["class_ids_dtype"] == "int64"
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(outputs["class_ids"], expected.argmax(-1))
    # The two exports differ in their scaling: the same images give other outputs.
    assert not np.allclose(served[0]["probabilities"], served[1]["probabilities"], atol=1e-3)


def test_an_export_divides_by_256_where_its_model_does(tmp_path):
    """A model trained on improved-gan's scaling (--pixel_scale=256) is served
    x / 256 or (x - 127.5) / 128 from uint8 images."""
    from sgan_keras import choices
    images = uint8_images()
    for pixel_range, expected in (((0.0, 1.0), images / 256),
                                  ((-1.0, 1.0), (images - 127.5) / 128)):
        model = tiny_classifier(0)
        path = export_classifier(model, tmp_path / f"from{pixel_range[0]:g}",
                                 image_shape=IMAGE_SHAPE,
                                 pixel_range=choices.input_pixel_range(pixel_range, "256"))
        probabilities, _ = saved_model_classify(path, images)
        np.testing.assert_allclose(probabilities, softmax(model(expected.astype(np.float32))),
                                   atol=1e-6)


def test_saved_model_cli_lists_the_serving_signature(exports):
    # The console script, forked from a process that has imported TensorFlow
    # (tests/preloaded.py): the tool's own code and output, without its import.
    _, path = exports[(-1.0, 1.0)]
    result = preloaded.run_script(SAVED_MODEL_CLI, ["show", "--all", "--dir", path], env=ENV,
                                  timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    signature = result.stdout.split("signature_def['serving_default']:", 1)[1]
    signature = signature.split("signature_def[", 1)[0]
    assert "inputs['images']" in signature and "DT_UINT8" in signature
    assert f"(-1, {', '.join(map(str, IMAGE_SHAPE))})" in signature
    assert "outputs['probabilities']" in signature and "(-1, 3)" in signature
    assert "outputs['class_ids']" in signature and "DT_INT64" in signature


def read_tree(path):
    return {os.path.relpath(os.path.join(root, name), path):
            open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(path) for name in names}


def serve_in_process(path, images):
    import tensorflow as tf
    outputs = tf.saved_model.load(str(path)).signatures["serving_default"](images=images)
    return outputs["probabilities"].numpy()


def test_images_of_another_shape_raise_an_error_naming_the_shape_expected(exports):
    # A tensor (not a NumPy array, which the signature checks) without its channel
    # axis ([N, H, W]) went on into the network without the export's own check:
    # through oneDNN's convolution it aborted the whole process.
    import tensorflow as tf
    _, path = exports[(-1.0, 1.0)]
    for images in (uint8_images()[..., 0], uint8_images()[:, :-1]):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"not compatible with expected shape \[\?,6,5,2\]"):
            serve_in_process(path, tf.constant(images))


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    """The export, with its TFLite files, of a tiny convolutional classifier
    (pixel range [0, 1]), made once per session: tests only read it."""
    from conftest import made_once

    def make(directory):
        export_classifier(tiny_conv_classifier(0), directory / "export", image_shape=IMAGE_SHAPE,
                          pixel_range=(0, 1), representative_images=uint8_images(2))
    return str(made_once(tmp_path_factory, "conv_export", make) / "export")


def float_classifiers(path):
    """``(classify, model)`` of the export at ``path``: the SavedModel and its
    float TFLite file."""
    from sgan_keras.export import TFLITE_FLOAT, saved_model_classify, tflite_classify
    return [(saved_model_classify, path), (tflite_classify, os.path.join(path, TFLITE_FLOAT))]


def test_the_classify_helpers_refuse_images_that_are_not_uint8(conv_export):
    # They cast with NumPy: float images scaled to [0, 1] became zeros, and every
    # image got the class of a black one, without a word.
    images = uint8_images(4)
    for classify, model in float_classifiers(conv_export):
        for wrong in (scale(images, (0, 1)), images.astype(np.int64)):
            with pytest.raises(ValueError, match=rf"must be uint8 .* got {wrong.dtype}$"):
                classify(model, wrong)
        assert classify(model, images)[0].shape == (4, 3)


def test_tflite_classify_refuses_images_of_another_shape(conv_export):
    # TFLite resized its input to them: images of another channel count, or
    # without their channel axis, were classified without a word.
    from sgan_keras.export import TFLITE_FLOAT, TFLITE_INT8, tflite_classify
    path = conv_export
    images = uint8_images(4)
    for name in (TFLITE_FLOAT, TFLITE_INT8):
        for wrong in (np.concatenate([images, images[..., :1]], -1), images[..., 0],
                      images[:, :-1]):
            got = ", ".join(map(str, wrong.shape))
            with pytest.raises(ValueError, match=rf"must be \[N, 6, 5, 2\], got shape \[{got}\]$"):
                tflite_classify(os.path.join(path, name), wrong)
        assert tflite_classify(os.path.join(path, name), images)[0].shape == (4, 3)


def test_tflite_classify_refuses_another_tools_file_with_one_line(tmp_path):
    # TFLite's own words named only the key: 'Invalid signature_key provided: "classify"'.
    import tensorflow as tf
    from sgan_keras.export import tflite_classify
    path = tmp_path / "foreign.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny_classifier(0)).convert())
    with pytest.raises(ValueError, match=r"^it has no 'classify' signature taking 'images', "
                                         r"so it is not an export_classifier TFLite file$"):
        tflite_classify(path, uint8_images(2))


def test_saved_model_classify_refuses_images_of_another_shape_or_another_export(tmp_path):
    # The signature's refusals were TypeErrors ('Binding inputs to tf.function
    # failed') printing the whole image batch, for a grayscale batch given to a
    # colour model and for any batch given to Keras' own export (model.export()).
    from sgan_keras.export import saved_model_classify
    classifier = tiny_classifier(0)
    path = export_classifier(classifier, tmp_path / "export", image_shape=IMAGE_SHAPE,
                             pixel_range=(0, 1))
    images = uint8_images(4)
    for wrong in (images[..., :1], images[..., 0], images[0]):
        got = ", ".join(map(str, wrong.shape))
        with pytest.raises(ValueError, match=rf"^the images must be \[N, 6, 5, 2\], "
                                             rf"got shape \[{got}\]$"):
            saved_model_classify(path, wrong)
    classifier.export(str(tmp_path / "keras_export"), verbose=False)
    with pytest.raises(ValueError, match=r"keras_export: its serving_default signature takes "
                                         r"no uint8 'images', so it is not an "
                                         r"export_classifier export$"):
        saved_model_classify(tmp_path / "keras_export", images)
    assert saved_model_classify(path, images)[0].shape == (4, 3)


def test_export_and_saved_model_classify_work_inside_a_strategy_scope(tmp_path):
    # A notebook that builds, trains and exports inside `with strategy.scope():`:
    # the export's load-back check got distributed variables and ended in a
    # traceback ('Trying to access a placeholder that is not supposed to be executed').
    import tensorflow as tf
    from sgan_keras.export import saved_model_classify
    images = uint8_images(4)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        classifier = tiny_classifier(0)
        path = export_classifier(classifier, tmp_path / "export", image_shape=IMAGE_SHAPE,
                                 pixel_range=(0, 1))
        probabilities, _ = saved_model_classify(path, images)
    np.testing.assert_allclose(probabilities, softmax(classifier(scale(images, (0, 1)))),
                               atol=1e-5)


def test_the_classify_helpers_give_empty_results_for_no_image(conv_export):
    # They ended in NumPy's 'need at least one array to concatenate' (and the
    # signature itself, given an empty batch, in a convolution's shape error).
    from sgan_keras.export import TFLITE_INT8, saved_model_classify, tflite_classify
    path = conv_export
    for classify, model in ((saved_model_classify, path),
                            (tflite_classify, os.path.join(path, TFLITE_INT8))):
        probabilities, class_ids = classify(model, uint8_images(0))
        assert probabilities.shape == (0, 3) and probabilities.dtype == np.float32
        assert class_ids.shape == (0,) and class_ids.dtype == np.int64


def test_the_classify_helpers_refuse_a_batch_size_that_is_not_a_positive_integer(
        conv_export):
    # A negative one classified one blank image and returned its row alone for all
    # the images, without a word; 0 ended in range()'s 'arg 3 must not be zero'.
    images = uint8_images(5)
    for classify, model in float_classifiers(conv_export):
        for wrong in (-1, 0, 2.0, True):
            with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer, "
                                                 rf"got {wrong!r}$"):
                classify(model, images, batch_size=wrong)
        assert classify(model, images, batch_size=np.int64(2))[0].shape == (5, 3)


def test_existing_export_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "export"
    export_classifier(tiny_classifier(0), path, image_shape=IMAGE_SHAPE, pixel_range=(-1, 1))
    before = read_tree(path)
    with pytest.raises(ExportError) as error:
        export_classifier(tiny_classifier(1), path, image_shape=IMAGE_SHAPE, pixel_range=(-1, 1))
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "overwrite" in message
    assert read_tree(path) == before
    assert os.listdir(tmp_path) == ["export"]


def test_overwrite_replaces_the_export_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "export"
    images = uint8_images(4)
    first, second = tiny_classifier(0), tiny_classifier(1)
    export_classifier(first, path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1))
    returned = export_classifier(second, path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1),
                                 overwrite=True)
    assert returned == str(path)
    expected = softmax(second(scale(images, (0, 1))))
    assert not np.allclose(expected, softmax(first(scale(images, (0, 1)))), atol=1e-3)
    np.testing.assert_allclose(serve_in_process(path, images), expected, atol=1e-5)
    assert os.listdir(tmp_path) == ["export"]


def test_overwrite_replaces_only_an_earlier_export_or_an_empty_directory(tmp_path):
    # overwrite=True on a run directory (or '.') deleted it, the user's files with it.
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "ckpt-1.index").write_bytes(b"weights")
    (tmp_path / "model.keras").write_bytes(b"a user's model")
    before = read_tree(tmp_path)
    for name in ("run", "model.keras"):
        with pytest.raises(ExportError) as error:
            export_classifier(tiny_classifier(0), tmp_path / name, image_shape=IMAGE_SHAPE,
                              pixel_range=(0, 1), overwrite=True)
        message = str(error.value)
        assert "\n" not in message and str(tmp_path / name) in message
        assert "neither an earlier export" in message
    assert read_tree(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "run"]   # no temporaries
    (tmp_path / "empty").mkdir()
    export_classifier(tiny_classifier(0), tmp_path / "empty", image_shape=IMAGE_SHAPE,
                      pixel_range=(0, 1), overwrite=True)
    assert (tmp_path / "empty" / "saved_model.pb").is_file()


def test_the_export_is_on_the_disk_before_it_replaces_an_old_one(tmp_path, monkeypatch):
    # TensorFlow's SavedModel writer does not fsync: a power loss after the
    # rename could leave empty files where the old export was.
    path = tmp_path / "export"
    export_classifier(tiny_classifier(0), path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1))
    synced, renamed = [], []
    real_fsync, real_rename = faults.fsync, os.rename
    monkeypatch.setattr(faults, "fsync", lambda p: (synced.append(str(p)), real_fsync(p)))
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed.append((str(a), str(b), len(synced))),
                                                    real_rename(a, b)))
    export_classifier(tiny_classifier(1), path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1),
                      representative_images=uint8_images(4), overwrite=True)
    staging, _, synced_before = next(move for move in renamed if move[1] == str(path))
    files = {os.path.relpath(os.path.join(root, name), path)
             for root, folders, names in os.walk(path) for name in names + folders}
    before = {os.path.relpath(p, staging) for p in synced[:synced_before]}
    assert files and files <= before and "." in before     # every file, folder and the root
    assert str(tmp_path) in synced[synced_before:]          # then the rename itself


def test_the_export_has_the_umasks_mode_for_a_server_of_another_user(tmp_path):
    umask = os.umask(0o022)
    try:
        export_classifier(tiny_classifier(0), tmp_path / "export", image_shape=IMAGE_SHAPE,
                          pixel_range=(0, 1))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "export").st_mode) == 0o755


def test_failed_overwrite_keeps_the_old_export(tmp_path, monkeypatch):
    path = tmp_path / "export"
    export_classifier(tiny_classifier(0), path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1))
    before = read_tree(path)

    import tensorflow as tf

    def crash(obj, export_dir, **kwargs):
        os.makedirs(os.path.join(export_dir, "variables"), exist_ok=True)  # half written
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        export_classifier(tiny_classifier(1), path, image_shape=IMAGE_SHAPE,
                          pixel_range=(0, 1), overwrite=True)
    assert read_tree(path) == before
    assert os.listdir(tmp_path) == ["export"]


@pytest.mark.parametrize("interruption", [OSError("cross-device link"), KeyboardInterrupt()])
def test_an_overwrite_stopped_between_its_renames_puts_the_old_export_back(
        tmp_path, monkeypatch, interruption):
    path = tmp_path / "export"
    export_classifier(tiny_classifier(0), path, image_shape=IMAGE_SHAPE, pixel_range=(0, 1))
    before = read_tree(path)
    rename = os.rename

    def rename_then_stop(source, destination):
        if os.path.basename(source).startswith(".export.tmp-"):   # the old export has moved
            raise interruption
        rename(source, destination)

    monkeypatch.setattr(os, "rename", rename_then_stop)
    with pytest.raises(type(interruption)):
        export_classifier(tiny_classifier(1), path, image_shape=IMAGE_SHAPE,
                          pixel_range=(0, 1), overwrite=True)
    assert read_tree(path) == before
    assert os.listdir(tmp_path) == ["export"]   # no backup or staging directory left


def logits_and_features():
    """A model with the two outputs of an SGAN's discriminator."""
    images = keras.Input(IMAGE_SHAPE)
    features = keras.layers.Flatten()(images)
    return keras.Model(images, [keras.layers.Dense(3)(features), features])


@pytest.mark.parametrize("kwargs, names", [
    ({"pixel_range": (0, 255)}, "pixel_range"),
    ({"image_shape": (6, 5)}, "image_shape"),
    ({"image_shape": (6, 0, 2)}, "image_shape"),
    ({"image_shape": (5, 5, 2)}, "image_shape (5, 5, 2)"),   # not the classifier's input
    # Keras' reason, not its first line ('Exception encountered when calling ...').
    ({"image_shape": (6, 5, 1)}, "expected axis -1 of input shape to have value 60, but "
                                 "received input with shape (1, 30)"),
    ({"class_names": np.array(["a", "b"])}, "2 class names for 3 classes"),
    # labels.txt holds one name a line: predict then counted 4 names for 3 classes.
    ({"class_names": ["a\nb", "c", "d"], "representative_images": uint8_images()},
     "class name 'a\\nb' has a line break"),
    ({"classifier": lambda: "not a model"}, "classifier"),
    # Logits [N, H, W, 3] instead of [N, 3]: no Flatten.
    ({"classifier": lambda: keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Dense(3)])},
     "classifier"),
    # Two outputs, as an SGAN's discriminator (logits, features): an AttributeError traceback.
    ({"classifier": lambda: logits_and_features()}, "got 2 outputs"),
])
def test_bad_arguments_raise_one_line_errors(tmp_path, kwargs, names):
    arguments = {"classifier": lambda: tiny_classifier(0), "image_shape": IMAGE_SHAPE,
                 "pixel_range": (-1, 1), **kwargs}
    classifier = arguments.pop("classifier")()
    with pytest.raises(ExportError) as error:
        export_classifier(classifier, tmp_path / "export", **arguments)
    assert names in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


def tiny_conv_classifier(seed, num_classes=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Conv2D(4, 3),
                             keras.layers.LeakyReLU(0.2), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes)])


def test_class_names_and_tflite_files_ship_with_the_export(tmp_path):
    import tensorflow as tf
    from sgan_keras.export import LABELS, TFLITE_FLOAT, TFLITE_INT8, tflite_classify
    classifier = tiny_conv_classifier(0)
    names = ["cat", "dog", "bird"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_classifier(classifier, tmp_path / "export", image_shape=IMAGE_SHAPE,
                                 pixel_range=(-1, 1), class_names=names,
                                 representative_images=uint8_images(64, seed=1))
    # The int8 calibration's tf.lite.Interpreter warned that it is deprecated.
    assert not [str(warning.message) for warning in caught
                if "tf.lite.Interpreter" in str(warning.message)]
    images = uint8_images(40, seed=2)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    ids = served["class_ids"].numpy()
    assert [name.decode() for name in served["class_names"].numpy()] == [names[i] for i in ids]
    assert (tmp_path / "export" / LABELS).read_text().split("\n")[:3] == names
    probabilities, class_ids = tflite_classify(tmp_path / "export" / TFLITE_FLOAT, images)
    np.testing.assert_allclose(probabilities, served["probabilities"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(class_ids, ids)
    # Full integer: int8 tensors inside, the same class for most images.
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "export" / TFLITE_INT8))
    assert any(detail["dtype"] == np.int8 for detail in interpreter.get_tensor_details())
    probabilities8, class_ids8 = tflite_classify(tmp_path / "export" / TFLITE_INT8, images)
    assert probabilities8.shape == (40, 3) and np.mean(class_ids8 == ids) >= 0.8


def test_tflite_needs_uint8_representative_images_of_the_image_shape(tmp_path):
    with pytest.raises(ExportError, match="representative_images must be uint8"):
        export_classifier(tiny_conv_classifier(0), tmp_path / "export", image_shape=IMAGE_SHAPE,
                          pixel_range=(-1, 1), representative_images=uint8_images()[:, :3])
    assert not (tmp_path / "export").exists()      # nothing half-written
    with pytest.raises(ExportError, match="2 class names for 3 classes"):
        export_classifier(tiny_conv_classifier(0), tmp_path / "export", image_shape=IMAGE_SHAPE,
                          pixel_range=(-1, 1), class_names=["a", "b"])


def test_an_int8_file_xnnpack_refuses_is_classified_on_tflites_own_kernels(tmp_path):
    # A layer that gives only zeros on the calibration images (a dead ReLU
    # layer, as a diverged run leaves) gets a requantization scale beyond
    # XNNPACK's range: its runtime failed to prepare, a RuntimeError traceback
    # at the end of such a run, in scoring the export.
    from sgan_keras.export import TFLITE_INT8, saved_model_classify, tflite_classify
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([
        keras.Input(IMAGE_SHAPE), keras.layers.Flatten(),
        keras.layers.Dense(4, "relu", bias_initializer=keras.initializers.Constant(-1e3)),
        keras.layers.Dense(3, bias_initializer=keras.initializers.Constant([0.0, 1.0, -1.0]))])
    images = uint8_images()
    path = export_classifier(classifier, tmp_path / "export", image_shape=IMAGE_SHAPE,
                             pixel_range=(0, 1), representative_images=images)
    _, class_ids = tflite_classify(os.path.join(path, TFLITE_INT8), images)
    np.testing.assert_array_equal(class_ids, saved_model_classify(path, images)[1])


def test_a_mixed_bfloat16_classifier_exports_in_float32_with_its_tflite_files(tmp_path):
    """Mixed-precision runs exported with a traceback (TFLite has no bfloat16
    MatMul); the export now serves a float32 copy with the same weights."""
    import tensorflow as tf
    from sgan_keras import SGAN
    from sgan_keras.export import TFLITE_FLOAT, TFLITE_INT8, tflite_classify
    model = SGAN.from_preset("mnist_blog", seed=0, precision="mixed_bfloat16")
    classifier, shape = model.classifier(), model.image_shape
    conv = next(layer for layer in model.discriminator.layers if "conv" in layer.name)
    assert conv.compute_dtype == "bfloat16"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, *shape), dtype=np.uint8)
    inputs = scale(images, model.pixel_range)
    # Untrained, the float32 copy would get these very weights from its layers'
    # seeded initializers even if export did not copy them: move every weight
    # off its initial value (as training would), so only copied weights serve
    # the classifier's outputs. Seeded noise: N(0, the weight's own standard
    # deviation), 0.05 for the zero-initialized biases.
    initial = softmax(classifier(inputs).numpy())
    for variable in classifier.weights:
        value = variable.numpy()
        spread = max(float(value.std()), 0.05)
        variable.assign(value + rng.normal(0.0, spread, value.shape).astype(value.dtype))
    # The same weights in a float32 build: what the export must compute.
    reference_classifier = SGAN.from_preset("mnist_blog", seed=0, precision="float32").classifier()
    reference_classifier.set_weights(classifier.get_weights())
    reference = softmax(reference_classifier(inputs).numpy())
    # An export of the initial weights would be this far off (here 0.48; the
    # untrained net's outputs are all near 1/10), far beyond both tolerances.
    assert np.abs(reference - initial).max() > 0.1
    path = export_classifier(classifier, tmp_path / "export", image_shape=shape,
                             pixel_range=model.pixel_range, representative_images=images)
    served = tf.saved_model.load(path).signatures["classify"](images=tf.constant(images))
    # float32 against float32 with the same weights: only the order of the
    # sums may differ, float32 rounding, ~1e-7 on probabilities < 1 (measured
    # 2e-7); 1e-5 leaves room for other kernels, far below a miss's 0.48.
    np.testing.assert_allclose(served["probabilities"].numpy(), reference, atol=1e-5)
    # Against the bfloat16 classifier itself: bfloat16 keeps 8 significant
    # bits (a rounding error of up to 2^-9 = 0.2% of each activation), which
    # through the four layers here leaves the logits about 1e-2 off; softmax
    # moves a probability p by at most 2p times that (measured: 3e-3).
    bfloat16 = softmax(classifier(inputs).numpy())
    np.testing.assert_allclose(served["probabilities"].numpy(), bfloat16, atol=1e-2)
    probabilities, _ = tflite_classify(tmp_path / "export" / TFLITE_FLOAT, images)
    np.testing.assert_allclose(probabilities, served["probabilities"].numpy(), atol=1e-4)
    assert os.path.getsize(tmp_path / "export" / TFLITE_INT8) > 0
    assert conv.compute_dtype == "bfloat16"   # the trained model is untouched


def test_a_mixed_bfloat16_sgan_itself_is_refused_naming_its_layers_dtype(tmp_path):
    """An SGAN computes in float32 around bfloat16 networks: the refusal said the
    classifier 'computes in float32' and to build it with the float32 policy."""
    from sgan_keras import SGAN
    model = SGAN.from_preset("mnist_blog", seed=0, precision="mixed_bfloat16")
    with pytest.raises(ExportError, match=r"has layers computing in bfloat16 and no float32 "
                       r"copy can be made of it \(SGAN is not a functional or Sequential "
                       r"model\): export a functional one \(an SGAN's model.classifier\(\)\)"):
        export_classifier(model, tmp_path / "export", image_shape=model.image_shape,
                          pixel_range=model.pixel_range)
    assert not (tmp_path / "export").exists()


def test_labels_txt_is_utf8_under_an_ascii_locale(tmp_path):
    """labels.txt (TFLite's convention: UTF-8) was written, and read by predict,
    in the locale's encoding: under ``PYTHONUTF8=0 LC_ALL=C`` a class named
    'café' ended the export in a UnicodeEncodeError."""
    script = (
        "import sys, keras, numpy as np\n"
        "from sgan_keras.export import export_classifier\n"
        "from sgan_keras.predict import Classifier\n"
        "model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), "
        "keras.layers.Dense(2)])\n"
        "export_classifier(model, sys.argv[1], image_shape=(4, 4, 1), pixel_range=(-1, 1), "
        "class_names=['caf\\u00e9', 'na\\u00efve'], "
        "representative_images=np.zeros((4, 4, 4, 1), np.uint8))\n"
        "print(ascii(Classifier(sys.argv[1] + '/classifier.tflite').class_names))\n")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "export")], capture_output=True,
        text=True, timeout=300,
        env={**ENV, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['caf\\xe9', 'na\\xefve']"
    assert (tmp_path / "export" / "labels.txt").read_bytes() == "café\nnaïve\n".encode()


def test_the_int8_calibration_sees_every_representative_image_in_order(tmp_path, monkeypatch):
    """The int8 model is calibrated on all of representative_images, one at a
    time ([1, H, W, C] each), not on a part of them."""
    import tensorflow as tf
    converters = []
    real = tf.lite.TFLiteConverter.from_saved_model

    def recorded(*args, **kwargs):
        converters.append(real(*args, **kwargs))
        return converters[-1]
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", recorded)
    images = uint8_images(5, seed=3)
    export_classifier(tiny_conv_classifier(0), tmp_path / "export", image_shape=IMAGE_SHAPE,
                      pixel_range=(-1, 1), representative_images=images)
    calibrated = [c for c in converters if c.representative_dataset is not None]
    assert len(calibrated) == 1
    dataset = calibrated[0].representative_dataset     # TFLite wraps the function
    seen = [sample["images"] for sample in getattr(dataset, "input_gen", dataset)()]
    assert len(seen) == 5
    for sample, image in zip(seen, images):
        np.testing.assert_array_equal(sample, image[None])
