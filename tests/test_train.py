"""The training CLI on the real MNIST: outputs, export, resume, distribution, bad input."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, SHARED_MNIST_DIR

pytestmark = pytest.mark.skipif(not (SHARED_MNIST_DIR / "mnist.npz").exists(),
                                reason=f"real MNIST not found at {SHARED_MNIST_DIR}")

# A small, fast configuration of the GANs in Action preset (BN, dropout, conv).
FAST = ["--dataset=mnist", "--preset=mnist_gans_in_action", "--labels=100",
        f"--data_dir={SHARED_MNIST_DIR}", "--batch_size=16", "--eval_batch_size=2500"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "sgan_keras.train", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=REPO_ROOT)


def metrics_rows(output_dir):
    with open(output_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def checkpoint_arrays(output_dir):
    with np.load(output_dir / "checkpoint" / "checkpoint.npz") as saved:
        return {key: saved[key] for key in saved.files}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("cli") / "run"
    result = cli(*FAST, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result


def test_cli_run_writes_every_output(finished_run):
    output_dir, result = finished_run
    flags = json.loads((output_dir / "flags.json").read_text())
    assert flags["preset"] == "mnist_gans_in_action" and flags["labels"] == 100
    indices = json.loads((output_dir / "labeled_indices.json").read_text())
    assert len(indices) == 100 and len(set(indices)) == 100
    rows = metrics_rows(output_dir)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    for column in ("train_accuracy", "test_accuracy", "d_loss", "g_loss", "seconds"):
        assert all(np.isfinite(float(row[column])) for row in rows), column
    assert len(list((output_dir / "samples").glob("*.png"))) == 2
    assert (output_dir / "accuracy.png").stat().st_size > 0
    assert (output_dir / "losses.png").stat().st_size > 0
    assert list((output_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert (output_dir / "checkpoint" / "checkpoint.npz").exists()
    assert (output_dir / "export" / "saved_model.pb").exists()
    # Not a terminal: one concise line per epoch, no progress bar.
    assert result.stdout.count("Epoch ") + result.stdout.count("epoch ") >= 2


def test_jit_compile_flag_compiles_the_step_with_xla(tmp_path):
    result = cli(*FAST, "--epochs=1", "--steps_per_epoch=2", "--jit_compile=true",
                 f"--output_dir={tmp_path / 'run'}", env={**ENV, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Compiled cluster using XLA" in result.stderr
    assert len(metrics_rows(tmp_path / "run")) == 1


EXPORT_PREDICT = """
import json, sys
import numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
outputs = serve(images=tf.constant(images))
assert "sgan_keras" not in sys.modules
print(json.dumps({"probabilities": outputs["probabilities"].numpy().tolist(),
                  "class_ids": outputs["class_ids"].numpy().tolist()}))
"""


def test_export_predicts_like_the_in_process_model(finished_run, tmp_path):
    import keras
    from sgan_keras import SGAN, checkpoint, data as data_lib

    output_dir, _ = finished_run
    data = data_lib.load_dataset("mnist", 100, data_dir=str(SHARED_MNIST_DIR))
    images = data.test_images[:32]
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", EXPORT_PREDICT, str(output_dir / "export"),
                             str(tmp_path / "images.npy")], capture_output=True, text=True,
                            env=ENV, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])

    model = SGAN.from_preset("mnist_gans_in_action", seed=0)
    model.compile()
    epoch = checkpoint.restore_checkpoint(str(output_dir / "checkpoint"), model.state_variables())
    assert epoch == 2
    logits = model.predict(data.scale(images), verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_array_equal(served["class_ids"], probabilities.argmax(-1))


def test_finished_run_is_not_overwritten_without_overwrite(finished_run):
    output_dir, _ = finished_run
    before = (output_dir / "metrics.csv").read_text()
    result = cli(*FAST, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    assert result.returncode != 0
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (output_dir / "metrics.csv").read_text() == before


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    common = [*FAST, "--epochs=3", "--steps_per_epoch=40", "--deterministic", "--seed=1"]
    reference = tmp_path / "reference"
    result = cli(*common, f"--output_dir={reference}")
    assert result.returncode == 0, result.stderr[-3000:]
    epoch_seconds = float(metrics_rows(reference)[1]["seconds"])

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "sgan_keras.train", *common,
                                f"--output_dir={killed}"], env=ENV, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoint" / "checkpoint.npz").exists():
        assert time.time() < deadline and process.poll() is None, "first epoch never finished"
        time.sleep(0.05)
    time.sleep(0.4 * epoch_seconds)          # well inside epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [row["epoch"] for row in metrics_rows(killed)] == ["1"], "not killed mid-epoch 2"

    result = cli(*common, f"--output_dir={killed}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from the end of epoch 1" in result.stdout
    assert [row["epoch"] for row in metrics_rows(killed)] == ["1", "2", "3"]
    resumed, uninterrupted = checkpoint_arrays(killed), checkpoint_arrays(reference)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    result = cli(*FAST, "--epochs=1", "--steps_per_epoch=2", "--strategy=mirrored",
                 "--virtual_cpus=2", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(metrics_rows(tmp_path / "run")) == 1


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_worker_multi_worker_run_on_localhost(tmp_path):
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    processes = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "sgan_keras.train", *FAST, "--epochs=1",
             "--steps_per_epoch=2", "--strategy=multi_worker", f"--output_dir={tmp_path / 'run'}"],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert len(metrics_rows(tmp_path / "run")) == 1
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, names", [
    (["--dataset=imagenet"], "--dataset"),
    (["--preset=resnet"], "--preset"),
    (["--fake_class=eleven"], "--fake_class"),
    (["--labels=ten"], "--labels"),
    (["--labels=0"], "--labels"),
    (["--labels=105", "--label_selection=balanced"], "labels"),
    (["--labels=60001"], "labels"),                 # the first 60,001 of 60,000
    (["--update_order=simultaneous", "--generator_fakes=reused"], "--generator_fakes"),
    (["--init_images=-1"], "--init_images"),
    (["--batch_size=0"], "--batch_size"),
    (["--epochs=0"], "--epochs"),
    (["--adam_epsilon=0"], "--adam_epsilon"),
    (["--jit_compile=maybe"], "--jit_compile"),
    (["--data_dir=/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--supervised_only", "--generator_loss=non_saturating"], "--generator_loss"),
    (["--generator_activation=softplus"], "--generator_activation"),
    (["--generator_activation=relu"], "--generator_activation"),
    (["--precision=mixed_bfloat16", "--manifold_reg=lecouat"], "--precision"),
    (["--precision=float16"], "--precision"),
    (["--preset=mnist_blog", "--dataset=svhn"], "--preset"),
    (["--include_extra"], "--include_extra"),
    (["--manifold_weight=0.1"], "--manifold"),
    (["--output_dir=/dev/null/run"], "--output_dir"),
    (["--strategy=mirrored", "--virtual_cpus=2", "--batch_size=15"], "--batch_size"),
])
def test_bad_input_gets_one_line_and_a_nonzero_exit(args, names, tmp_path):
    base = {arg.split("=")[0]: arg for arg in [*FAST, f"--output_dir={tmp_path / 'out'}",
                                              "--epochs=1", "--steps_per_epoch=1"]}
    base.update({arg.split("=")[0]: arg for arg in args})
    result = cli(*base.values())
    assert result.returncode != 0
    # TensorFlow's own start-up log lines aside, the error is one line.
    lines = [line for line in result.stderr.splitlines()
             if line.startswith(("sgan_keras.train: error:", "FATAL Flags parsing error"))]
    assert len(lines) == 1 and names in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_non_run_directory_is_never_touched(tmp_path):
    keep = tmp_path / "mine" / "thesis.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    result = cli(*FAST, "--epochs=1", "--steps_per_epoch=1", f"--output_dir={keep.parent}")
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert keep.read_text() == "precious"


def test_helpfull_explains_every_flag_and_flagfile_works(tmp_path):
    from sgan_keras import train
    result = cli("--helpfull")         # absl prints the help and exits 1
    assert "Global batch size" in result.stdout
    for name in train._KNOWN_FLAGS:
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, name
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--dataset=imagenet\n")
    result = cli(f"--flagfile={flagfile}")
    assert result.returncode != 0 and "--dataset=imagenet" in result.stderr
