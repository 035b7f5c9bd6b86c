"""Generated documentation stays current, and README's Python examples run."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_preset_tables_in_the_docs_are_current():
    result = subprocess.run([sys.executable, "docs/update.py", "--check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "docs/presets.md is stale: run python docs/update.py"


def readme_python_block(heading):
    """The first ```python block after the line ``heading`` of README.md."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"README.md has no section {heading!r}"
    block = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return block.search(text, text.index(f"\n{heading}\n")).group(1)


def with_small_budget(code, replacements):
    """``code`` with each ``old`` text replaced by ``new``: each must be there
    once, so that a changed example fails here instead of running its full length."""
    for old, new in replacements.items():
        assert code.count(old) == 1, f"README's example no longer holds {old!r}: update this test"
        code = code.replace(old, new)
    return code


def run_example(code, namespace):
    """Runs ``code`` statement by statement in ``namespace``, as a user types
    it; returns the value of each expression statement, keyed by its source."""
    values = {}
    for statement in ast.parse(code).body:
        if isinstance(statement, ast.Expr):
            expression = compile(ast.Expression(statement.value), "README.md", "eval")
            values[ast.get_source_segment(code, statement)] = eval(expression, namespace)
        else:
            exec(compile(ast.Module([statement], type_ignores=[]), "README.md", "exec"), namespace)
    return values


def value_of(values, call):
    [value] = [value for source, value in values.items() if call in source]
    return value


def test_the_readme_library_example_runs_as_it_says(mnist_dir, monkeypatch):
    # As written, from the repository's root, whose ../shared/data/mnist is the
    # mnist_dir fixture's, for 2 steps instead of 6,000.
    code = with_small_budget(readme_python_block("## Using the library"),
                             {"steps_per_epoch=600, epochs=10": "steps_per_epoch=2, epochs=1"})
    assert 'data_dir="../shared/data/mnist"' in code
    assert (REPO_ROOT / "../shared/data/mnist").resolve() == mnist_dir.resolve()
    monkeypatch.chdir(REPO_ROOT)
    namespace = {}
    values = run_example(code, namespace)
    model, images, logits = namespace["model"], namespace["images"], namespace["logits"]
    # The text after the example: the losses and labeled-batch accuracy it reports.
    assert set(model.history.history) == {
        "d_loss", "g_loss", "supervised_loss", "unsupervised_loss", "manifold_loss",
        "accuracy", "val_accuracy", "val_cross_entropy"}
    assert set(value_of(values, "model.evaluate(")) == {"accuracy", "cross_entropy"}
    assert logits.shape == (len(images), 10)     # [N, K]


def test_the_readme_export_example_runs_as_it_says(mnist_dir, tmp_path, monkeypatch):
    import numpy as np

    import sgan_keras
    from sgan_keras import export

    # runs/gia100/export as the CLI writes it (without the TFLite files), of an
    # untrained classifier: the example is about the SavedModel's interface.
    model = sgan_keras.SGAN.from_preset("mnist_gans_in_action")
    export.export_classifier(model.classifier(), tmp_path / "runs/gia100/export",
                             image_shape=(28, 28, 1), pixel_range=model.config.model.pixel_range,
                             class_names=[f"digit {k}" for k in range(10)])
    with np.load(mnist_dir / "mnist.npz") as mnist:
        uint8_images = mnist["x_test"][:5, :, :, None]
    monkeypatch.chdir(tmp_path)
    values = run_example(readme_python_block("### Using the export"),
                         {"uint8_images": uint8_images})
    probabilities, class_ids, class_names = value_of(values, 'outputs["probabilities"]')
    assert probabilities.shape == (5, 10) and class_ids.shape == class_names.shape == (5,)
    assert [name.decode() for name in class_names.numpy()] == [
        f"digit {k}" for k in class_ids.numpy()]


def readme_module_names():
    """``(module, name)`` of each ``sgan_keras.<module>.<name>`` README writes."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"\bsgan_keras\.([a-z_]+)\.([A-Za-z_0-9]+)", text)))


# One new interpreter for the two tests below (a TensorFlow import each was 6 CPU
# seconds): after NumPy and Keras, it forks; the child runs argv[2] (README's
# sgan_keras.<module>.<name> after `import sgan_keras` alone) and writes its
# traceback, if any, to names.err; the parent runs README's statement, loads
# argv[1]/sgan.keras and saves its logits of argv[1]/images.npy. Each part
# starts from the same imports: neither sees the modules the other imported.
NEW_PROCESS = """
import os, sys, traceback
import keras, numpy as np
child = os.fork()
if child == 0:
    error = ""
    try:
        exec(sys.argv[2])
    except BaseException:
        error = traceback.format_exc()
    with open(sys.argv[1] + "/names.err", "w") as file:
        file.write(error)
    os._exit(0)
try:
{statement}
    model = keras.models.load_model(sys.argv[1] + "/sgan.keras")
    np.save(sys.argv[1] + "/logits.npy", model.predict(np.load(sys.argv[1] + "/images.npy"),
                                                       verbose=0))
finally:
    os.waitpid(child, 0)
"""


@pytest.fixture(scope="session")
def in_a_new_process(tmp_path_factory):
    """The directory where NEW_PROCESS ran once per session (conftest.made_once),
    with a tiny SGAN's sgan.keras, images.npy, its expected.npy logits, and
    what the new process wrote (names.err, logits.npy, stderr.txt)."""
    import numpy as np
    from conftest import made_once
    from test_model import class_patterns, tiny_model

    def make(directory):
        # After `import sgan_keras` alone, keras.models.load_model failed with a
        # screen-long "Could not locate class 'SGAN'": Keras imports no module of
        # a package of its own to find a class.
        text = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
        statement = re.search(r"in a new process, `([^`]+)` first", text).group(1)
        model = tiny_model(ema_decay=0.5)
        model.save(directory / "sgan.keras")
        images, _ = class_patterns(4, 0)
        np.save(directory / "images.npy", images)
        np.save(directory / "expected.npy", model.predict(images, verbose=0))
        names = "import sgan_keras\n" + "".join(f"sgan_keras.{module}.{name}\n"
                                                for module, name in readme_module_names())
        result = subprocess.run(
            [sys.executable, "-c", NEW_PROCESS.format(statement="    " + statement),
             str(directory), names], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        (directory / "stderr.txt").write_text(f"exit status {result.returncode}\n"
                                              f"{result.stderr[-2000:]}")
    return made_once(tmp_path_factory, "docs_new_process", make)


def test_the_modules_the_readme_names_work_after_import_sgan_keras_alone(in_a_new_process):
    # A notebook writes sgan_keras.callbacks.StopOnNonFiniteLoss() as README (and
    # fit()'s refusal of TerminateOnNaN) spells it: it raised AttributeError.
    names = readme_module_names()
    assert ("callbacks", "StopOnNonFiniteLoss") in names and ("export", "export_classifier") in names
    errors = in_a_new_process / "names.err"
    assert errors.exists(), (in_a_new_process / "stderr.txt").read_text()
    assert errors.read_text() == ""


def test_a_saved_sgan_loads_in_a_new_process_after_the_import_the_readme_names(in_a_new_process):
    import numpy as np
    logits = in_a_new_process / "logits.npy"
    assert logits.exists(), (in_a_new_process / "stderr.txt").read_text()
    np.testing.assert_array_equal(np.load(logits), np.load(in_a_new_process / "expected.npy"))


READMES_START_STEP = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests_dir!r})
import test_model as t
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    model = t.tiny_model()
model.train_on_batch(t.tiny_batch())
print(json.dumps(eval({expression!r}, {{"model": model}})))
"""


def test_the_readmes_start_step_for_a_second_fit_works_under_a_strategy():
    # int(model.optimizer.iterations), as README wrote it, raised TypeError for a
    # model built in a strategy's scope (Keras' int() of a MirroredVariable).
    import preloaded

    text = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    expression = re.search(r"data\.train_dataset\(batch_size, start_step=(.+?)\)`",
                           text).group(1)
    script = READMES_START_STEP.format(tests_dir=str(REPO_ROOT / "tests"), expression=expression)
    result = preloaded.run_code(script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "1"


def test_the_readme_names_every_field_the_unified_procedure_sets():
    """README's --procedure=unified sentence left out G's fresh fakes, which it
    sets (mnist_blog's reused fakes become fresh ones)."""
    from sgan_keras import presets
    text = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    start = text.index("`--procedure=unified` trains any preset")
    sentence = text[start:text.index(")", start)]
    words = {"label_selection": "label selection", "unlabeled_pool": "unlabeled pool",
             "test_fraction": "test set", "test_batches": "test set",
             "label_batching": "batches",
             "data_order": "data order", "update_order": "update order",
             "generator_fakes": "G's fresh fakes",
             "adam_rule": "Adam rule", "ema_rule": "weight-average rule",
             "batch_norm_variance": "batch-norm variance", "init_images": "init",
             "baseline_epochs": "baseline budget", "baseline_steps_per_epoch": "baseline budget",
             "baseline_data_order": "baseline budget and data order"}
    assert [field for field in presets.UNIFIED_PROCEDURE
            if words[field] not in sentence] == []


def test_the_readme_lists_jit_compile_apart_from_the_flags_that_change_nothing():
    """From the same runtime seed, as the step's z, dropout and noise have,
    TensorFlow's XLA-compiled stateless Philox draws other numbers than its
    kernels: ``--jit_compile`` changes the draws, so README's resume sentence
    must not list it among the flags that do not change what is computed."""
    import numpy as np
    import tensorflow as tf
    seed = tf.Variable([0, 3], dtype=tf.int64)

    def draw():
        return tf.random.stateless_normal([4, 4], seed, alg="philox")

    differ = not np.array_equal(draw().numpy(), tf.function(draw, jit_compile=True)().numpy())
    text = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    start = text.index("A resume may change only the flags")
    unchanged = text[start:text.index(")", start)]
    assert ("--jit_compile" in unchanged) != differ
