"""The training CLI on the real MNIST: outputs, export, resume, distribution, bad input,
and every fault of the README's "Faults" table (one line, a documented exit status,
nothing lost)."""

import csv
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import preloaded
from conftest import fill, made_once, summary_steps
from sgan_keras import config as config_lib
from sgan_keras import onednn
from sgan_keras import presets

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The CLI runs forked from tests/preloaded.py's server all run the server's
# kernels (one process imported TensorFlow for them); a run in a new
# interpreter is told the same, or its GANs in Action steps would take Eigen's
# (sgan_keras/onednn.py) and no longer match theirs bit for bit.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
       **onednn.kernels_environment(chosen=os.environ.get(onednn.ONEDNN_VARIABLE))}


def cli(*args, timeout=300, env=None):
    """Runs the training CLI to its end in a process of its own, forked from
    one that has already imported TensorFlow (tests/preloaded.py)."""
    return preloaded.run_module("sgan_keras.train", args, env or ENV, REPO_ROOT, timeout)


def fresh_cli(*args, timeout=300, env=None):
    """The same in a new interpreter: for what happens before TensorFlow's
    import, and for another C++ log level."""
    return subprocess.run([sys.executable, "-m", "sgan_keras.train", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=REPO_ROOT)


@pytest.fixture(scope="session")
def fast(small_mnist_dir):
    """A small, fast configuration of the GANs in Action preset (BN, dropout,
    conv) on a sixth of MNIST (``small_mnist_dir``)."""
    return ["--dataset=mnist", "--preset=mnist_gans_in_action", "--labels=100",
            f"--data_dir={small_mnist_dir}", "--batch_size=16", "--eval_batch_size=2500",
            "--notflite"]


@pytest.fixture(scope="session")
def fast_blog(fast):
    """fast with the MNIST blog post's preset, whose networks are the cheapest
    of MNIST's to trace and run: for runs whose test is not about the networks."""
    return [arg if not arg.startswith("--preset=") else "--preset=mnist_blog" for arg in fast]


def metrics_rows(output_dir):
    with open(output_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def checkpoint_arrays(output_dir):
    """Every saved variable of the newest checkpoint (not TF's save counter)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(output_dir / "checkpoint"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith("state/")}


def checkpoint_steps(output_dir):
    names = os.listdir(output_dir / "checkpoint")
    return sorted(int(name[len("ckpt-"):-len(".index")]) for name in names
                  if name.startswith("ckpt-") and name.endswith(".index"))


def latest_step(output_dir, settled=False):
    """The newest step named by the checkpoint manager's state file, or None.

    ``settled``: None until the manager has also deleted the checkpoints past
    the two it keeps (it rewrites its state file after deleting them).
    """
    state = output_dir / "checkpoint" / "checkpoint"
    text = state.read_text() if state.exists() else ""
    match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', text)
    if not match or (settled and len(re.findall("all_model_checkpoint_paths", text)) > 2):
        return None
    return int(match.group(1))


def error_lines(stderr):
    """Our fault lines (TensorFlow's own log lines aside)."""
    return [line for line in stderr.splitlines() if line.startswith("sgan_keras.train:")]


def launch(*args, env=None):
    """Starts the training CLI as :func:`cli` does; returns a Popen-like child."""
    return preloaded.launch_module("sgan_keras.train", args, env or ENV, REPO_ROOT)


def wait_for_step(process, output_dir, step, timeout=240):
    """Waits until the run's newest checkpoint is ``step`` and its save is over
    (the manager's state file is the marker: no fixed sleeps)."""
    deadline = time.time() + timeout
    while latest_step(output_dir, settled=True) != step:
        if process.poll() is not None or time.time() > deadline:
            _, stderr = process.communicate()
            pytest.fail(f"no checkpoint of step {step}; the run ended: {stderr[-2000:]}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fast):
    """A finished short run (made once per session; tests only read it) and its stdout."""
    def make(directory):
        result = cli(*fast, "--epochs=2", "--steps_per_epoch=3",
                     f"--output_dir={directory / 'run'}")
        assert result.returncode == 0, result.stderr[-3000:]
        (directory / "stdout.txt").write_text(result.stdout)
    directory = made_once(tmp_path_factory, "finished_run", make)
    return directory / "run", (directory / "stdout.txt").read_text()


def test_cli_run_writes_every_output(finished_run):
    output_dir, stdout = finished_run
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
    assert checkpoint_steps(output_dir) == [3, 6] and latest_step(output_dir) == 6  # keeps 2
    assert (output_dir / "export" / "saved_model.pb").exists()
    assert (output_dir / "run.lock").read_text() == ""  # released cleanly
    # All of them are run outputs, which --overwrite removes (a user's files stay).
    from sgan_keras import trainer
    assert sorted(set(os.listdir(output_dir)) - {"run.lock"}) == sorted(trainer.RUN_OUTPUTS)
    # Not a terminal: one concise line per epoch, no progress bar.
    epoch_lines = re.findall(r"^Epoch [12]/2: train_accuracy=.* \(\d+\.\d s\)$", stdout, re.M)
    assert len(epoch_lines) == 2, stdout[-2000:]
    assert "\r" not in stdout and "\u2501" not in stdout     # Keras' bar: '\r' and '━'


def test_jit_compile_flag_compiles_the_step_with_xla(tmp_path, fast):
    """The discriminator alone (--supervised_only): the generator's transposed
    convolutions run an XLA-compiled function of their own (layers.py), which
    XLA would compile without the flag. XLA writes each module it compiles to
    ``--xla_dump_to`` (read at its first compilation, so a forked run takes it):
    Keras' step function (``one_step_on_data``) is among them."""
    result = cli(*fast, "--epochs=1", "--steps_per_epoch=2", "--jit_compile=true",
                 "--supervised_only", f"--output_dir={tmp_path / 'run'}",
                 env={**ENV, "XLA_FLAGS": f"--xla_dump_to={tmp_path / 'xla'}"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "xla").glob("*one_step_on_data*")), "XLA compiled no step"
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


def test_export_predicts_like_the_in_process_model(finished_run, tmp_path, mnist_dir):
    import keras
    from sgan_keras import SGAN, checkpoint, data as data_lib

    output_dir, _ = finished_run
    data = data_lib.load_dataset("mnist", 100, data_dir=str(mnist_dir))
    images = data.test_images[:32]
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", EXPORT_PREDICT, str(output_dir / "export"),
                             str(tmp_path / "images.npy")], capture_output=True, text=True,
                            env=ENV, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])

    model = SGAN.from_preset("mnist_gans_in_action", seed=0)
    model.compile()
    restored = checkpoint.CheckpointStore(output_dir / "checkpoint",
                                          model.state_variables()).restore()
    assert restored.step == 6 and restored.unreadable == ()  # 2 epochs of 3 steps
    logits = model.predict(data.scale(images), verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_array_equal(served["class_ids"], probabilities.argmax(-1))


def test_finished_run_is_not_overwritten_without_overwrite(finished_run, fast, tmp_path):
    output_dir = copy_run(finished_run[0], tmp_path)   # other tests read the shared run
    before = (output_dir / "metrics.csv").read_text()
    result = cli(*fast, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    assert result.returncode != 0
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (output_dir / "metrics.csv").read_text() == before


def test_overwrite_with_a_mistyped_data_dir_keeps_the_earlier_run(finished_run, fast, tmp_path):
    # The earlier run was removed, then the run stopped at the data it could not find.
    output_dir = copy_run(finished_run[0], tmp_path)
    before = (output_dir / "metrics.csv").read_text()
    result = cli(*fast, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}",
                 f"--data_dir={tmp_path / 'mnsit'}", "--overwrite")
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        f"sgan_keras.train: error: data_dir {tmp_path / 'mnsit'} does not exist"]
    assert (output_dir / "metrics.csv").read_text() == before


def test_a_run_that_never_trained_leaves_its_directory_to_a_corrected_command(tmp_path):
    from sgan_keras import trainer
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        output_dir=str(tmp_path / "run"), data_dir="wrong")
    trainer.prepare_output_dir(config).release()        # e.g. then a data error
    corrected = config.replace(data_dir="right")
    trainer.prepare_output_dir(corrected).release()
    assert json.loads((tmp_path / "run" / "flags.json").read_text())["data_dir"] == "right"
    (tmp_path / "run" / "metrics.csv").write_text("epoch\n1\n")     # it trained
    with pytest.raises(trainer.UsageError, match=r"other flags \(--data_dir\); pass another "
                       r"--output_dir, or --overwrite to remove that run's outputs"):
        trainer.prepare_output_dir(config.replace(data_dir="other"))
    # Run-only options may change on a resume; no other may (here --lr).
    trainer.prepare_output_dir(corrected.replace(eval_batch_size=10, checkpoint_every_steps=5)
                               ).release()
    with pytest.raises(trainer.UsageError, match=r"other flags \(--lr \(g_lr\)\)"):
        trainer.prepare_output_dir(corrected.replace(g_lr=0.5))



@pytest.mark.parametrize("trained", ["metrics.csv", "checkpoint", "export"])
def test_a_run_that_trained_to_any_output_is_not_replaced_by_other_flags(trained, tmp_path):
    """A run counts as trained by any of its metrics.csv, checkpoint (e.g. a
    --checkpoint_every_steps save before the first epoch ended) or export:
    other flags there are refused, not written over its flags.json."""
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    (run / trained).mkdir() if trained != "metrics.csv" else (run / trained).write_text("e\n")
    with pytest.raises(trainer.UsageError, match=r"other flags \(--lr \(g_lr\)\)"):
        trainer.prepare_output_dir(config.replace(g_lr=0.5))
    assert json.loads((run / "flags.json").read_text())["g_lr"] == config.training.g_lr


def test_a_run_of_a_newer_version_is_refused_and_its_flags_kept(tmp_path, monkeypatch):
    """A flags.json holding fields this version does not know was written by a
    newer sgan_keras: resuming its training here would drop what they chose,
    and rewriting flags.json would lose them. A retired field, which this
    version knew once, resumes."""
    from sgan_keras import config as config_lib
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    newer = {**json.loads((run / "flags.json").read_text()), "g_clip": 1.0, "d_clip": 2.0}
    (run / "flags.json").write_text(json.dumps(newer))
    trainer.prepare_output_dir(config).release()       # not trained yet: replaced
    assert json.loads((run / "flags.json").read_text()) == config.to_dict()
    (run / "flags.json").write_text(json.dumps(newer))
    (run / "metrics.csv").write_text("epoch\n1\n")
    with pytest.raises(trainer.UsageError, match=(
            r"holds a run of a newer sgan_keras \(its flags.json has d_clip, g_clip, which "
            r"this version does not know\); resume it with that version, or pass --overwrite")):
        trainer.prepare_output_dir(config)
    assert json.loads((run / "flags.json").read_text()) == newer
    monkeypatch.setattr(config_lib, "RETIRED_FIELDS", frozenset({"g_clip", "d_clip"}))
    trainer.prepare_output_dir(config).release()
    assert json.loads((run / "flags.json").read_text()) == config.to_dict()


@pytest.mark.parametrize("moment", ["write_check", "flags_temporary"])
def test_a_second_launch_on_a_new_directory_is_refused_by_the_lock_not_as_a_users(
        moment, tmp_path, monkeypatch):
    """Two launches on the same new directory: the first holds, for a moment,
    its write check, then its lock and the temporary of its flags.json, before
    flags.json exists. A second launch at either moment must meet the lock
    (exit 3), not take those files for a user's (exit 2, "holds no sgan_keras
    run"). The second launch runs inside the first's write, on its real files."""
    import tempfile
    from sgan_keras import faults, lock as lock_lib, trainer
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        output_dir=str(tmp_path / "run"))
    seen = []        # the directory as the second launch found it
    held = []        # the lock of the launch that won it

    def second_launch():
        seen.append(sorted(os.listdir(tmp_path / "run")))
        held.append(trainer.prepare_output_dir(config))

    if moment == "write_check":        # before the first holds the lock: the second wins it
        make_check = tempfile.NamedTemporaryFile

        def write_check(*args, **kwargs):
            check = make_check(*args, **kwargs)
            if not seen:
                second_launch()
            return check
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", write_check)
    else:                              # the first holds the lock: the second meets it
        replace = faults.replace_atomically

        def replace_atomically(path, write, mode="w"):
            def write_then_launch(file):
                write(file)
                with pytest.raises(lock_lib.RunLockedError):
                    second_launch()
            replace(path, write_then_launch, mode)
        monkeypatch.setattr(faults, "replace_atomically", replace_atomically)
        trainer.prepare_output_dir(config).release()
    if moment == "write_check":
        with pytest.raises(lock_lib.RunLockedError):
            trainer.prepare_output_dir(config)
    found, = seen
    assert "flags.json" not in found and any(faults.is_temporary(name) for name in found)
    monkeypatch.undo()
    for run_lock in held:
        run_lock.release()
    (tmp_path / "run" / "flags.json").unlink()
    (tmp_path / "run" / "thesis.txt").write_text("precious")   # a user's file is still refused
    with pytest.raises(trainer.UsageError, match="holds no sgan_keras run"):
        trainer.prepare_output_dir(config)


# ------------------------------------------------------------------ faults
# One deterministic configuration for the resume tests: 2 epochs of 15 steps,
# a checkpoint every 5 steps (a step is about 0.1 s of CPU: the 5 steps between
# two saves leave the fault tests half a second to act). Every interrupted run
# of it, once resumed, must end bit-identical to the uninterrupted one.
@pytest.fixture(scope="session")
def resumable(fast):
    return [*fast, "--epochs=2", "--steps_per_epoch=15", "--checkpoint_every_steps=5",
            "--deterministic", "--seed=1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, resumable):
    """The uninterrupted run of resumable (made once per session; tests only read it)."""
    def make(directory):
        result = cli(*resumable, f"--output_dir={directory / 'run'}")
        assert result.returncode == 0, result.stderr[-3000:]
    return made_once(tmp_path_factory, "reference", make) / "run"


@pytest.fixture(scope="module")
def killed(tmp_path_factory, resumable):
    """A run of resumable killed with SIGKILL in epoch 2, just after its step-20
    checkpoint (made once per session); tests work on copies. Returns the
    directory and the dead pid."""
    def make(directory):
        output_dir = directory / "run"
        process = launch(*resumable, f"--output_dir={output_dir}")
        wait_for_step(process, output_dir, 20)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert latest_step(output_dir) == 20 and checkpoint_steps(output_dir) == [15, 20]
        assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1"], \
            "not killed mid-epoch 2"
        (directory / "pid").write_text(str(process.pid))
    directory = made_once(tmp_path_factory, "killed", make)
    return directory / "run", int((directory / "pid").read_text())


def copy_run(source, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target


def files_of(output_dir, skip=("flags.json", "run.lock")):
    """Every file's bytes, but those a new run rewrites by design."""
    return {str(path.relative_to(output_dir)): path.read_bytes()
            for path in sorted(output_dir.rglob("*")) if path.is_file() and path.name not in skip}


def assert_same_as(reference, output_dir):
    """Bit-identical weights, optimizer and RNG states and metric sums, and the
    same metrics.csv but for the wall times."""
    resumed, uninterrupted = checkpoint_arrays(output_dir), checkpoint_arrays(reference)
    assert resumed.keys() == uninterrupted.keys() and len(resumed) > 50
    for key in uninterrupted:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)

    def without_seconds(rows):
        return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]
    assert without_seconds(metrics_rows(output_dir)) == without_seconds(metrics_rows(reference))


def test_sigkill_mid_epoch_then_resume_is_bit_identical_at_step_granularity(
        killed, reference, tmp_path, resumable):
    source, dead_pid = killed
    output_dir = copy_run(source, tmp_path)
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    # The killed run's lock is stale: taken over, with a line saying so.
    assert f"its lock names pid {dead_pid}, which ended without releasing it" in result.stdout
    assert "Resuming from step 20: epoch 2, after 5 of its 15 steps." in result.stdout
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1", "2"]
    assert_same_as(reference, output_dir)
    assert not error_lines(result.stderr) and "Traceback" not in result.stderr


def test_truncated_newest_checkpoint_falls_back_and_finishes(
        killed, reference, tmp_path, resumable):
    output_dir = copy_run(killed[0], tmp_path)
    data = output_dir / "checkpoint" / "ckpt-20.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 3])  # a crash before the disk had it
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"Checkpoint \S+/ckpt-20 cannot be read \(.+\): set aside as "
                     r"unreadable-ckpt-20; falling back to ckpt-15\.", result.stdout), result.stdout
    assert "Resuming from the end of epoch 1." in result.stdout
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1", "2"]
    assert_same_as(reference, output_dir)
    assert (output_dir / "checkpoint" / "unreadable-ckpt-20.index").exists()  # kept, not deleted
    assert checkpoint_steps(output_dir) == [25, 30]
    assert "Traceback" not in result.stderr


def test_no_readable_checkpoint_refuses_with_one_line_and_touches_nothing(
        killed, tmp_path, resumable):
    output_dir = copy_run(killed[0], tmp_path)
    for step in (15, 20):
        data = output_dir / "checkpoint" / f"ckpt-{step}.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:1000])
    before = files_of(output_dir)
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "no checkpoint" in lines[0] and "--overwrite" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert files_of(output_dir) == before  # never starts over silently


def test_sigint_and_sigterm_save_at_the_next_step_and_the_printed_command_resumes(
        reference, tmp_path, resumable):
    output_dir = tmp_path / "run"
    command = [sys.executable, "-m", "sgan_keras.train", *resumable, f"--output_dir={output_dir}"]
    for sent, after_step in ((signal.SIGINT, 5), (signal.SIGTERM, 20)):
        process = launch(*command[3:])
        wait_for_step(process, output_dir, after_step)
        process.send_signal(sent)
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 75, stderr[-3000:]
        lines = error_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
        match = re.fullmatch(rf"sgan_keras\.train: interrupted: {sent.name} at step (\d+): saved "
                             r"(\S+); resume with: (.+)", lines[0])
        assert match, lines[0]
        step = int(match.group(1))
        assert after_step <= step < after_step + 5  # the next step boundary, not a later save
        assert match.group(2) == str(output_dir / "checkpoint" / f"ckpt-{step}")
        assert latest_step(output_dir) == step
        assert shlex.split(match.group(3)) == ["cd", str(REPO_ROOT), "&&", *command]
    # What the stopped run wrote for its finished epoch reached TensorBoard's
    # files, though fit() raised before its callbacks closed their writers.
    tensorboard = output_dir / "tensorboard"
    assert summary_steps(tensorboard / "train", lambda tag: tag == "epoch_d_loss") == [0]
    assert summary_steps(tensorboard / "samples", lambda tag: tag == "samples") == [0]
    # The printed command as a shell splits it (checked above): its "cd", then
    # the module with its arguments, forked from the preloaded server (the
    # interpreter's start is shown by fresh_cli's tests).
    _, directory, _, _, _, module, *arguments = shlex.split(match.group(3))
    result = preloaded.run_module(module, arguments, ENV, directory, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1", "2"]
    assert_same_as(reference, output_dir)


def test_the_printed_resume_command_leaves_out_overwrite(monkeypatch):
    """Run again with ``--overwrite``, the command would empty the run it resumes."""
    from sgan_keras import train
    monkeypatch.setattr(sys, "argv", ["train.py", "--overwrite", "--labels=100",
                                      "--overwrite=true", "--output_dir=runs/x"])
    monkeypatch.chdir("/tmp")       # a relative --output_dir resumes from where it ran
    assert shlex.split(train._resume_command()) == [
        "cd", "/tmp", "&&", sys.executable, "-m", "sgan_keras.train", "--labels=100",
        "--output_dir=runs/x"]
    # A flag file may hold --overwrite: the last --nooverwrite wins over it.
    monkeypatch.setattr(sys, "argv", ["train.py", "--nooverwrite", "--flagfile=f.txt",
                                      "--labels=100"])
    assert shlex.split(train._resume_command())[3:] == [
        sys.executable, "-m", "sgan_keras.train", "--flagfile=f.txt", "--labels=100",
        "--nooverwrite"]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_before_training_starts_gets_one_line_and_exit_75(signal_name, tmp_path, fast):
    """Before trainer.StopSignals takes the signals over (here: while
    TensorFlow is imported), SIGTERM and SIGINT end the run with the
    interrupted line and its status, without a traceback or any output."""
    script = (f"import os, signal, sys\n"
              f"from sgan_keras import train\n"
              f"train.import_trainer = lambda *a: os.kill(os.getpid(), signal.{signal_name})\n"
              f"sys.argv = ['train.py'] + sys.argv[1:]\n"
              f"train.run()\n")
    output_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", script, *fast, f"--output_dir={output_dir}"],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO_ROOT)
    assert result.returncode == 75, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "interrupted: a signal (SIGTERM or SIGINT) arrived before training started" in lines[0]
    assert not output_dir.exists()


# Where a signal lands before training: while TensorFlow loads (the import),
# or inside trainer.train before StopSignals (here: while --overwrite prepares
# the directory), by a stand-in trainer interrupted as the real one reports it
# (test_train_tells_an_interrupt_before_training_from_one_after).
BEFORE_TRAINING = {
    "while tensorflow loads": (
        "train.import_trainer = lambda *a: os.kill(os.getpid(), signal.SIGINT)\n"),
    "inside trainer.train": (
        "class Interrupted(KeyboardInterrupt): pass\n"
        "def interrupted(config):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    except KeyboardInterrupt:\n"
        "        raise Interrupted() from None\n"
        "train.import_trainer = lambda *a: types.SimpleNamespace(\n"
        "    InterruptedBeforeTraining=Interrupted, train=interrupted)\n"),
}


@pytest.mark.parametrize("where", sorted(BEFORE_TRAINING))
def test_a_signal_before_training_prints_the_command_with_its_overwrite(where, tmp_path, fast):
    """Nothing is trained yet: without --overwrite, the printed command was
    refused on the finished run (or the run of other flags) it was to replace."""
    script = ("import os, signal, sys, types\n"
              "from sgan_keras import train\n"
              f"{BEFORE_TRAINING[where]}"
              "sys.argv = ['train.py'] + sys.argv[1:]\n"
              "train.run()\n")
    output_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", script, *fast, f"--output_dir={output_dir}",
                             "--overwrite"], capture_output=True, text=True, timeout=120,
                            env=ENV, cwd=REPO_ROOT)
    assert result.returncode == 75, result.stderr[-3000:]
    command = error_lines(result.stderr)[0].split("resume with: ", 1)[1]
    assert shlex.split(command)[-2:] == [f"--output_dir={output_dir}", "--overwrite"]


def test_train_tells_an_interrupt_before_training_from_one_after(tmp_path, small_mnist_dir,
                                                                 monkeypatch):
    """KeyboardInterrupt before StopSignals took the signals over is
    InterruptedBeforeTraining (the CLI keeps --overwrite in its command);
    after training ended it is a plain one (the command leaves it out)."""
    from sgan_keras import trainer
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        dataset="mnist", labels=100, data_dir=str(small_mnist_dir), epochs=1, steps_per_epoch=2,
        batch_size=16, output_dir=str(tmp_path / "run"))

    def interrupt(*args):
        raise KeyboardInterrupt
    prepare = trainer.prepare_output_dir
    monkeypatch.setattr(trainer, "prepare_output_dir", interrupt)
    with pytest.raises(trainer.InterruptedBeforeTraining):
        trainer.train(config)
    monkeypatch.setattr(trainer, "prepare_output_dir", prepare)
    monkeypatch.setattr(trainer, "_train", interrupt)    # the run's own part, after StopSignals
    with pytest.raises(KeyboardInterrupt) as raised:
        trainer.train(config)
    assert type(raised.value) is KeyboardInterrupt


def test_the_train_cli_freezes_what_importing_tensorflow_made_and_keeps_the_collector_on(
        monkeypatch):
    import gc
    from absl import app
    from sgan_keras import distribute, train
    # import_trainer chooses the kernels and the allocator in os.environ: restored after the test.
    monkeypatch.setenv(onednn.ONEDNN_VARIABLE, "1")
    monkeypatch.setenv(distribute.POOLED_CPU_ALLOCATOR_VARIABLE, "true")
    seen = []
    monkeypatch.setattr(app, "run", lambda main, **kwargs: seen.append((main, gc.isenabled())))
    try:
        train.run()
    finally:
        gc.enable()
    assert seen == [(train.main, False)]     # main() starts with the collector off
    gc.unfreeze()          # whatever this process froze before
    gc.disable()
    try:
        trainer = train.import_trainer()    # TensorFlow: already imported in this process
        frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    finally:
        gc.enable()
    # TensorFlow's and Keras' modules alone are hundreds of thousands of objects.
    assert trainer.__name__ == "sgan_keras.trainer" and frozen > 100_000 and enabled
    gc.unfreeze()          # with the collector on (a notebook, a test): nothing is frozen
    train.import_trainer()
    assert gc.get_freeze_count() == 0


def test_the_predict_cli_freezes_what_its_imports_made_and_keeps_the_collector_on(monkeypatch):
    import gc
    from absl import app
    from sgan_keras import predict
    seen = []
    monkeypatch.setattr(predict, "define_flags", lambda: None)  # defined once a process
    monkeypatch.setattr(app, "run", lambda main, **kwargs: seen.append((main, gc.isenabled())))
    sigterm = signal.getsignal(signal.SIGTERM)     # run() makes SIGTERM interrupt
    gc.unfreeze()          # whatever this process froze before
    gc.disable()           # as ``python -m sgan_keras.predict`` imports
    try:
        predict.run()
        # main() imports TensorFlow once the flags are checked, the collector still off.
        predict._import_tensorflow()
        frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    finally:
        gc.enable()
        signal.signal(signal.SIGTERM, sigterm)
    (main, enabled_at_main), = seen
    assert main is predict.main and not enabled_at_main
    assert frozen > 100_000 and enabled


def test_a_signal_during_the_exit_after_an_error_line_keeps_its_status(tmp_path, fast):
    """Once the one line is out, the status is decided: a SIGTERM or SIGINT
    while the process exits (TensorFlow tearing down) ended it with -15 or
    -2, or raised KeyboardInterrupt into the exit with a traceback. A new
    interpreter: a forked test process (preloaded.py) exits without that
    teardown."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for number in (signal.SIGTERM, signal.SIGINT):
        for attempt in range(5):     # until the signal lands before the process has ended
            process = subprocess.Popen(
                [sys.executable, "-m", "sgan_keras.train", *fast, f"--data_dir={empty}",
                 f"--output_dir={tmp_path / f'{number}_{attempt}'}"], stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO_ROOT)
            line = ""
            while not line.startswith("sgan_keras.train:"):
                line = process.stderr.readline()
                assert line, "the process ended without its line"
            landed = process.poll() is None
            process.send_signal(number)
            rest = process.communicate(timeout=120)[1]
            assert process.returncode == 2 and "Traceback" not in rest, (number, rest[-2000:])
            assert line.startswith(f"sgan_keras.train: error: data_dir {empty} holds no mnist")
            if landed:
                break
        assert landed, f"{number!r} never arrived before the process ended"


def test_train_needs_an_output_dir_before_it_touches_anything():
    from sgan_keras import trainer
    config = presets.get_preset("mnist_gans_in_action").config
    assert config.run.output_dir is None
    with pytest.raises(config_lib.ConfigError, match="--output_dir"):
        trainer.train(config)


def test_train_names_what_it_takes_when_given_no_config():
    # trainer.train("runs/x") from a notebook was an AttributeError ('str' object has no 'run').
    from sgan_keras import trainer
    with pytest.raises(TypeError, match=r"^train\(\) takes a sgan_keras.Config .*got str 'runs/x'"):
        trainer.train("runs/x")


def test_stop_signals_record_the_first_signal_and_let_a_second_one_end_the_process():
    from sgan_keras import trainer
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with trainer.StopSignals() as stop:
        assert stop.requested() is None
        os.kill(os.getpid(), signal.SIGINT)  # handled by the next bytecode
        assert stop.requested() == "SIGINT"
        # A second signal takes the default action: the process ends at once.
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_stop_signals_in_a_thread_leave_the_signals_to_the_main_thread():
    """train() run in a thread (a notebook that keeps its kernel free) stopped
    at once: Python lets only the main thread set handlers (ValueError)."""
    import threading
    from sgan_keras import trainer
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    errors = []

    def enter():
        try:
            with trainer.StopSignals() as stop:
                assert stop.requested() is None
        except Exception as error:   # noqa: BLE001 (reported below, in the main thread)
            errors.append(error)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors == []
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sighup_saves_as_sigterm_does_unless_it_is_ignored_as_nohup_leaves_it():
    """A dropped ssh session (SIGHUP) killed the run with everything since its
    last checkpoint; under nohup (SIGHUP ignored) it must stay ignored, and so
    must an ignored SIGINT."""
    from sgan_keras import trainer
    before, interrupt_before = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with trainer.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGHUP)  # handled by the next bytecode
            assert stop.requested() == "SIGHUP"
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # a second one ends it
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with trainer.StopSignals() as stop:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop.requested() is None
        # SIGINT, as a non-interactive shell's background job inherits it: the
        # shell's Ctrl-C stopped the run.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with trainer.StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested() is None
    finally:
        signal.signal(signal.SIGHUP, before)
        signal.signal(signal.SIGINT, interrupt_before)


def test_a_terminal_that_hung_up_is_a_reader_gone_not_a_traceback(capsys):
    """Writes to a terminal that hung up raise EIO: the epoch line after a SIGHUP
    (or the line saying where the run saved) ended in a traceback, exit 1."""
    import pty
    controller, terminal = pty.openpty()
    from sgan_keras import train
    stream = train._OutputWhoseReaderMayGo(open(terminal, "w", buffering=1), "stdout")
    os.close(controller)                     # the terminal hangs up
    assert stream.write("Epoch 1/2: ...\n") == len("Epoch 1/2: ...\n")
    stream.flush()
    assert "the reader of stdout has gone (a closed pipe or terminal)" in capsys.readouterr().err
    stream.write("goes to /dev/null now\n")


def test_a_signal_after_the_last_step_stops_before_the_export_and_the_run_then_finishes(
        tmp_path, small_mnist_dir, monkeypatch):
    """SIGTERM after the last step (here in the last epoch's end): the run
    stops before exporting (TrainingInterrupted, exit 75) rather than ignore
    it, and the same configuration then exports without training again."""
    import keras
    from sgan_keras import callbacks as callbacks_lib
    from sgan_keras import trainer
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        dataset="mnist", labels=100, data_dir=str(small_mnist_dir), epochs=1, steps_per_epoch=2,
        batch_size=16, eval_batch_size=2500, tflite=False, output_dir=str(tmp_path / "run"))
    callbacks_of = trainer._callbacks

    class SignalAtTheEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            os.kill(os.getpid(), signal.SIGTERM)     # StopSignals records it

    monkeypatch.setattr(trainer, "_callbacks", lambda *args, **kwargs: [
        *callbacks_of(*args, **kwargs), SignalAtTheEnd()])
    with pytest.raises(callbacks_lib.TrainingInterrupted, match=r"^SIGTERM at step 2$"):
        trainer.train(config)
    assert not (tmp_path / "run" / "export").exists()
    monkeypatch.setattr(trainer, "_callbacks", callbacks_of)
    trainer.train(config)
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()
    assert len(metrics_rows(tmp_path / "run")) == 1       # not trained again


def test_a_resumed_epochs_seconds_count_the_earlier_sessions_steps_not_their_lost_work(
        tmp_path, small_mnist_dir, monkeypatch, capsys):
    """metrics.csv's seconds of an epoch stopped and resumed mid-way count what
    the stopped session spent up to its last checkpoint (experiments/run.py
    sums them), not what it lost after it; EpochSummary's line says the same."""
    import keras
    from sgan_keras import callbacks as callbacks_lib
    from sgan_keras import trainer
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        dataset="mnist", labels=100, data_dir=str(small_mnist_dir), epochs=1, steps_per_epoch=4,
        checkpoint_every_steps=1, batch_size=16, eval_batch_size=2500, tflite=False,
        output_dir=str(tmp_path / "run"))
    callbacks_of = trainer._callbacks
    times = {}

    class Killed(Exception):
        pass

    class Clock(keras.callbacks.Callback):      # put first and last, around the others
        def __init__(self, name, stop_after=None):
            super().__init__()
            self.name, self.stop_after = name, stop_after

        def on_epoch_begin(self, epoch, logs=None):
            times.setdefault(self.name, {})["begin"] = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            if self.stop_after is not None:
                time.sleep(0.4)     # the steps the checkpoint holds: 0.8 s

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == self.stop_after:    # after the save of step 2
                times[self.name]["saved"] = time.perf_counter()
                time.sleep(1.5)     # lost work: no checkpoint holds it
                raise Killed()

        def on_epoch_end(self, epoch, logs=None):
            times[self.name]["end"] = time.perf_counter()

    def session(first, last, around_csv=()):
        def callbacks(*args, **kwargs):
            inner = callbacks_of(*args, **kwargs)
            if around_csv:      # clocks just before and after MetricsCSV's own
                at = [type(c).__name__ for c in inner].index("MetricsCSV")
                inner[at:at + 1] = [around_csv[0], inner[at], around_csv[1]]
            return [first, *inner, last]
        monkeypatch.setattr(trainer, "_callbacks", callbacks)

    session(Clock("stopped"), Clock("stopped last", stop_after=2))
    with pytest.raises(Killed):
        trainer.train(config)
    session(Clock("first"), Clock("last"), (Clock("before csv"), Clock("after csv")))
    write = callbacks_lib.MetricsCSV._write

    def slow_write(self):     # a busy disk: the line must still give the CSV's seconds
        write(self)
        time.sleep(0.3)
    monkeypatch.setattr(callbacks_lib.MetricsCSV, "_write", slow_write)
    capsys.readouterr()
    trainer.train(config)
    [row] = metrics_rows(tmp_path / "run")
    seconds = float(row["seconds"])
    earlier = times["stopped last"]["saved"] - times["stopped"]["begin"]
    # The resumed session's own time: at least from the last callback's epoch
    # begin to the first's end, at most MetricsCSV's own window (1.5 s less than
    # it would be with the lost work counted).
    inner = times["first"]["end"] - times["last"]["begin"]
    window = times["after csv"]["end"] - times["before csv"]["begin"]
    assert inner + 0.8 <= seconds <= window + earlier, (inner, window, earlier, seconds)
    printed = float(re.search(r"^Epoch 1/1: .* \(([\d.]+) s\)$", capsys.readouterr().out,
                              re.MULTILINE).group(1))
    # The CSV row's seconds, rounded to 0.1 s. Printed after the plots and the
    # sample grid, the line read 1.4 s more than the CSV here (on a busy core);
    # by a clock of its own right after the CSV's write, 0.13 s more (a busy
    # disk; 0.3 s more with slow_write).
    assert abs(printed - seconds) <= 0.05 + 1e-9 and printed >= inner + 0.8 - 0.05


def test_two_concurrent_launches_exactly_one_runs(tmp_path, fast_blog):
    output_dir = tmp_path / "run"
    # The winner holds the lock for seconds (its start, evaluation and export),
    # the other meets it within its first second: 2 steps are enough.
    args = [*fast_blog, "--epochs=1", "--steps_per_epoch=2", f"--output_dir={output_dir}"]
    processes = [launch(*args), launch(*args)]
    outcomes = [(process, *process.communicate(timeout=300)) for process in processes]
    codes = sorted(process.returncode for process in processes)
    assert codes == [0, 3], [(process.returncode, stderr[-2000:]) for process, _, stderr in outcomes]
    (winner, _, _), = [outcome for outcome in outcomes if outcome[0].returncode == 0]
    (_, _, stderr), = [outcome for outcome in outcomes if outcome[0].returncode == 3]
    lines = error_lines(stderr)
    assert len(lines) == 1 and f"another run (pid {winner.pid}) is using {output_dir}" in lines[0]
    assert "Traceback" not in stderr
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1"]


@pytest.fixture
def non_finite(fast):
    return [*(arg for arg in fast if not arg.startswith("--preset")), "--preset=mnist_blog",
            "--supervised_only", "--lr=1e6", "--epochs=1", "--steps_per_epoch=10",
            "--deterministic"]


@pytest.mark.parametrize("every_steps", [0, 1])
def test_non_finite_training_stops_at_once_and_keeps_the_last_good_checkpoint(
        every_steps, tmp_path, non_finite):
    # --lr=1e6 diverges for real: Adam's velocity overflows at step 2, the loss
    # becomes NaN at step 4. Saving every step, the save of step 2 is refused;
    # saving at epoch ends only, the NaN loss of step 4 stops the run.
    output_dir = tmp_path / "run"
    result = cli(*non_finite, f"--checkpoint_every_steps={every_steps}",
                 f"--output_dir={output_dir}")
    assert result.returncode == 4, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].endswith("training stopped without saving that state; earlier checkpoints "
                             "are kept (a smaller --lr may help, in another --output_dir)")
    assert not (output_dir / "metrics.csv").exists()  # no row of a diverged epoch
    if every_steps == 0:
        assert re.search(r"error: \w*loss is (nan|inf|-inf)( \(also [\w, ]+\))? at step \d+:", lines[0]), lines[0]
        assert not (output_dir / "checkpoint").exists() or not checkpoint_steps(output_dir)
    else:
        match = re.search(r"error: \S+ holds NaN or infinity at step (\d+) \(not saved\)", lines[0])
        assert match, lines[0]
        assert checkpoint_steps(output_dir)[-1] == int(match.group(1)) - 1
        for key, value in checkpoint_arrays(output_dir).items():
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), key


def test_out_of_memory_gets_one_line_and_a_smaller_eval_batch_resumes(tmp_path, fast,
                                                                    mnist_dir):
    """TensorFlow's allocator refusing a tensor (a GPU's usual fault; here the
    CPU's pooled allocator under a 250 MB limit, which MNIST's arrays fit)
    ended in a traceback. The evaluation's 10,000-image batch does not fit.
    On Eigen's kernels, which the CLI picks for this preset: oneDNN's crash
    the process (SIGSEGV) when an allocation fails inside them."""
    args = [*fast, f"--data_dir={mnist_dir}", "--epochs=1", "--steps_per_epoch=2",
            "--checkpoint_every_steps=1", f"--output_dir={tmp_path / 'run'}"]
    result = fresh_cli(*args, "--eval_batch_size=10000", env={
        **ENV, "TF_CPU_BFC_MEM_LIMIT_IN_MB": "250", onednn.ONEDNN_VARIABLE: "0"})
    assert result.returncode == 6, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("sgan_keras.train: error: out of memory (OOM when allocating "
                               "tensor with shape[10000,"), lines[0]
    assert "--batch_size=16 and --eval_batch_size=10000: training stopped" in lines[0]
    assert latest_step(tmp_path / "run") == 1   # saved mid-epoch; step 2's save follows the test
    result = cli(*args, "--eval_batch_size=500")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from step 1:" in result.stdout and len(metrics_rows(tmp_path / "run")) == 1


def test_only_the_allocators_resource_exhausted_errors_are_out_of_memory():
    import tensorflow as tf
    from sgan_keras import trainer

    def error(message):
        return tf.errors.ResourceExhaustedError(None, None, message)
    gpu = ("Graph execution error:\n\nOOM when allocating tensor with shape[512,64,14,14] and "
           "type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")
    assert trainer.out_of_memory_allocation(error(gpu)) == (
        "OOM when allocating tensor with shape[512,64,14,14]")
    assert trainer.out_of_memory_allocation(error(
        "Graph execution error:\n\nOut of memory while trying to allocate 49.00MiB.\n\t [[{{node "
        "g_convt1}}]]")) == "Out of memory while trying to allocate 49.00MiB"
    assert trainer.out_of_memory_allocation(error("runs/x/ckpt-3.data; No space left on "
                                                  "device")) is None


def test_init_images_beyond_memory_are_out_of_memory_and_fewer_then_start(
        tmp_path, small_mnist_dir, monkeypatch):
    """``--init_images=100000000``: NumPy's MemoryError for 73 GiB of images
    ended the run in a traceback (exit 1). Raised here without the allocation."""
    from sgan_keras import data as data_lib
    from sgan_keras import presets
    from sgan_keras import trainer

    def config(init_images):
        return presets.resolve({
            "preset": "mnist_improved_gan", "data_dir": str(small_mnist_dir), "epochs": 1,
            "steps_per_epoch": 1, "batch_size": 16, "eval_batch_size": 5000, "tflite": False,
            "init_images": init_images, "output_dir": str(tmp_path / "run")})

    init_batch = data_lib.SemiSupervisedData.init_batch

    def too_many(self, count, source="unlabeled"):
        if count > 1000:
            raise MemoryError(f"Unable to allocate for {count} images")
        return init_batch(self, count, source)
    monkeypatch.setattr(data_lib.SemiSupervisedData, "init_batch", too_many)
    with pytest.raises(trainer.OutOfMemoryError, match=r"^out of memory for the 100000000 "
                                                       r"images of --init_images \(improved"):
        trainer.train(config(10**8))
    trainer.train(config(20))
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()


def test_a_run_scales_and_orders_its_data_as_its_preset_says_and_exports_the_same_scaling(
        tmp_path, small_mnist_dir, monkeypatch):
    """mnist_improved_gan divides by 256 as improved-gan (--pixel_scale): the
    data set the run trains and scores on and the export that serves uint8
    images both map 255 to 255/256. Its batches follow its epochs
    (--data_order=per_epoch): the pipeline gets the epoch's length."""
    from sgan_keras import data as data_lib
    from sgan_keras import export
    from sgan_keras import presets
    from sgan_keras import trainer

    seen = {}
    load_dataset, export_classifier = data_lib.load_dataset, export.export_classifier

    def loading(*args, **kwargs):
        seen["data"] = load_dataset(*args, **kwargs)
        return seen["data"]

    def exporting(*args, **kwargs):
        seen["export"] = kwargs["pixel_range"]
        return export_classifier(*args, **kwargs)
    training_dataset = data_lib.SemiSupervisedData.training_dataset

    def ordering(self, *args, **kwargs):
        seen["epoch_steps"] = kwargs["epoch_steps"]
        return training_dataset(self, *args, **kwargs)
    monkeypatch.setattr(data_lib, "load_dataset", loading)
    monkeypatch.setattr(export, "export_classifier", exporting)
    monkeypatch.setattr(data_lib.SemiSupervisedData, "training_dataset", ordering)
    config = presets.resolve({
        "preset": "mnist_improved_gan", "data_dir": str(small_mnist_dir), "epochs": 1,
        "steps_per_epoch": 2, "batch_size": 16, "init_images": 20, "supervised_only": True,
        "tflite": False, "output_dir": str(tmp_path / "run")})
    assert (config.model.pixel_scale, config.training.data_order) == ("256", "per_epoch")
    trainer.train(config)
    assert seen["epoch_steps"] == 2
    scaled = seen["data"].scale(np.array([0, 128, 255], np.uint8)).numpy()
    np.testing.assert_array_equal(scaled, np.array([0, 128, 255]) / 256)
    assert seen["export"] == (0.0, 255 / 256)


def test_a_run_draws_its_batches_as_its_preset_says(tmp_path, small_mnist_dir, monkeypatch):
    """GANs in Action (--data_order=with_replacement, --unlabeled_pool=
    unlabeled_only): the run's data holds the pool and its pipeline draws
    with replacement; --test_fraction=0.5 (the Udacity notebook's test half)
    leaves it the first half of the test split. Stopped at the pipeline: what
    follows is any run's."""
    from sgan_keras import data as data_lib
    from sgan_keras import presets
    from sgan_keras import trainer

    class Seen(Exception):
        pass

    def ordering(self, *args, **kwargs):
        raise Seen(self.unlabeled_pool, kwargs["epoch_steps"], kwargs["with_replacement"],
                   len(self.test_images), self.notes)
    monkeypatch.setattr(data_lib.SemiSupervisedData, "training_dataset", ordering)
    config = presets.resolve({
        "preset": "mnist_gans_in_action", "data_dir": str(small_mnist_dir), "epochs": 1,
        "steps_per_epoch": 2, "batch_size": 16, "tflite": False, "test_fraction": 0.5,
        "output_dir": str(tmp_path / "run")})
    with pytest.raises(Seen) as seen:
        trainer.train(config)
    pool, epoch_steps, with_replacement, tested, notes = seen.value.args
    assert (pool, epoch_steps, with_replacement) == ("unlabeled_only", 0, True)
    whole = len(np.load(small_mnist_dir / "mnist.npz")["y_test"])
    assert tested == whole // 2
    assert notes[-1] == (f"Testing on the first {whole // 2:,} of the {whole:,} test images "
                         "(--test_fraction=0.5).")


def test_a_gans_in_action_baseline_cuts_each_reshuffle_of_its_labels_as_keras_fit(
        tmp_path, small_mnist_dir, monkeypatch):
    """The baseline's data order (per_shuffle: the book's fit(batch_size=32,
    epochs=30)) reaches its pipeline, and the MNIST blog's shuffle buffer its
    GAN's; stopped there, as the GAN's test above.
    Under two replicas a last batch they cannot share is refused before any
    training, naming its size."""
    from sgan_keras import data as data_lib
    from sgan_keras import presets
    from sgan_keras import trainer

    class Seen(Exception):
        pass

    def ordering(self, *args, **kwargs):
        raise Seen(kwargs["partial_batches"], kwargs["with_replacement"],
                   kwargs["shuffle_buffer"], args)
    monkeypatch.setattr(data_lib.SemiSupervisedData, "training_dataset", ordering)
    config = presets.resolve({
        "preset": "mnist_gans_in_action", "data_dir": str(small_mnist_dir),
        "supervised_only": True, "tflite": False, "output_dir": str(tmp_path / "run")})
    with pytest.raises(Seen) as seen:
        trainer.train(config)
    assert seen.value.args == (True, False, 0, (32, "separate", True))
    # The MNIST blog's GAN reads its streams through its 4,000-image buffer.
    blog = presets.resolve({"preset": "mnist_blog", "data_dir": str(small_mnist_dir),
                            "labels": 100, "tflite": False, "output_dir": str(tmp_path / "blog")})
    with pytest.raises(Seen) as seen:
        trainer.train(blog)
    assert seen.value.args == (False, False, 4000, (32, "separate", False))
    odd = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                           "labels": 99, "batch_size": 16})
    data = dataclasses.replace(data_lib.synthetic_dataset("mnist", 100, train_size=200),
                               labeled_indices=np.arange(99))
    trainer._check_partial_batches(odd, data, 1)
    with pytest.raises(trainer.UsageError, match="ends each shuffle of the 99 images with a "
                                                 "batch of 3, which the 2 replicas"):
        trainer._check_partial_batches(odd, data, 2)


@pytest.mark.parametrize("order, line", [
    ("reshuffled_full", "Testing each epoch on 1,968 of the 2,000 test images: 41 batches of 48 "
                        "of a fresh reshuffle"),
    ("stream", "Testing each epoch on the next 41 batches of 48 of a repeating stream of the "
               "2,000 test images, the last of each pass of 32")])
def test_each_epoch_tests_on_its_sources_test_batches(order, line, tmp_path, small_mnist_dir,
                                                       monkeypatch, capsys):
    """--test_batches=reshuffled_full (Lecouat et al.) and stream (the MNIST
    blog): epoch e's evaluation scores what evaluation e's batches are
    (data.py: a reshuffle, or the stream's next batches), a line says so, and
    the export still scores every test image."""
    import tensorflow as tf
    from sgan_keras import data as data_lib
    from sgan_keras import presets
    from sgan_keras import trainer

    scored, made = [], []   # each test batch's image sums; the data
    test_dataset = data_lib.SemiSupervisedData.test_dataset

    def recording(self, *args, **kwargs):
        made.append(self)

        def record(images):
            scored.extend(images.numpy().reshape(len(images), -1).sum(axis=1))
            return np.int64(0)
        return test_dataset(self, *args, **kwargs).map(lambda images, labels, *weights: (
            images, labels + tf.cast(tf.py_function(record, [images], tf.int64), labels.dtype),
            *weights))
    monkeypatch.setattr(data_lib.SemiSupervisedData, "test_dataset", recording)
    config = presets.resolve({
        "preset": "mnist_improved_gan", "data_dir": str(small_mnist_dir), "epochs": 2,
        "steps_per_epoch": 1, "batch_size": 48, "init_images": 20, "supervised_only": True,
        "test_batches": order, "eval_batch_size": 500, "tflite": False,
        "output_dir": str(tmp_path / "run")})
    trainer.train(config)
    data, = made
    assert line in capsys.readouterr().out
    expected = [np.concatenate([batch[0].numpy().reshape(len(batch[0]), -1).sum(axis=1)
                                for batch in test_dataset(data, 500, order, 48, evaluation)])
                for evaluation in (0, 1)]
    assert len(scored) == 2 * 1968
    np.testing.assert_allclose(scored[:1968], expected[0], rtol=1e-6)
    np.testing.assert_allclose(scored[1968:], expected[1], rtol=1e-6)
    assert sorted(expected[0]) != sorted(expected[1])


def test_full_disk_mid_training_gets_one_line_and_loses_nothing(small_disk, reference, resumable):
    output_dir = small_disk / "run"
    process = launch(*resumable, f"--output_dir={output_dir}")
    wait_for_step(process, output_dir, 20)
    before = files_of(output_dir / "checkpoint")  # ckpt-15, ckpt-20, the manager's state file
    filler = fill(small_disk)  # ckpt-25 is 5 steps away
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 5, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"error: cannot write \S+/checkpoint/ckpt-25 \(No space left on device\); "
                     r"earlier outputs are intact", lines[0]), lines[0]
    assert files_of(output_dir / "checkpoint") == before  # no half-written ckpt-25 either
    filler.unlink()
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from step 20: epoch 2, after 5 of its 15 steps." in result.stdout
    assert_same_as(reference, output_dir)


def test_a_full_disk_under_tensorboards_writer_gets_one_line(tmp_path, fast_blog):
    """TensorFlow writes TensorBoard's event files itself and reports a full
    disk as an OpError naming the file and the reason (simulated at an epoch's
    TensorBoard write, in the words of its summary writer, which a resumed run
    creates at its first epoch end): one line naming the file, and exit 5,
    like every other output. (Without a file in TensorFlow's message the line
    names the output directory: test_faults.py.)"""
    output_dir = tmp_path / "run"
    events = output_dir / "tensorboard" / "validation" / "events.out.tfevents.1.vm.2.v2"
    message = ("{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost/"
               f"replica:0/task:0/device:CPU:0}}}} {events}; No space left on device\n"
               f"\tCreating writable file {events}\n\tCould not initialize events writer.")
    script = ("import sys, keras, tensorflow as tf\n"
              "def full(*args, **kwargs):\n"
              f"    raise tf.errors.ResourceExhaustedError(None, None, {message!r})\n"
              "keras.callbacks.TensorBoard.on_epoch_end = full\n"
              "from sgan_keras import train\n"
              "sys.argv = ['train.py'] + sys.argv[1:]\n"
              "train.run()\n")
    result = preloaded.run_code(script, [*fast_blog, "--epochs=1", "--steps_per_epoch=2",
                                         f"--output_dir={output_dir}"], ENV, timeout=300)
    assert result.returncode == 5, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"sgan_keras.train: error: cannot write {events} (No space left "
                               "on device); earlier outputs are intact"), lines[0]
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1"]   # written before it


def test_read_only_directory_at_an_epoch_end_gets_one_line_and_loses_nothing(tmp_path, resumable):
    output_dir = tmp_path / "run"
    process = launch(*resumable, f"--output_dir={output_dir}")
    wait_for_step(process, output_dir, 25)  # the epoch ends at step 30
    # A read-only bind mount over the run: every new write fails with EROFS.
    # (A whole file system cannot be remounted read-only while files are open
    # on it; the bind mount can, once the run has no file open for writing.)
    mounted = subprocess.run(["mount", "--bind", output_dir, output_dir], capture_output=True,
                             text=True)
    if mounted.returncode:
        process.kill()
        process.communicate()
        pytest.skip(f"cannot bind-mount (needs root): {mounted.stderr.strip()}")
    try:
        for _ in range(100):  # busy while the save of step 25 finishes its writes
            read_only = subprocess.run(["mount", "-o", "remount,bind,ro", output_dir],
                                       capture_output=True, text=True)
            if read_only.returncode == 0:
                break
        assert read_only.returncode == 0, read_only.stderr
        before = files_of(output_dir)  # nothing can change it from here on
        _, stderr = process.communicate(timeout=240)
        after = files_of(output_dir)
    finally:
        subprocess.run(["umount", "-l", str(output_dir)], check=False)
    assert process.returncode == 5, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"error: cannot write \S+/metrics\.csv \(Read-only file system\)",
                     lines[0]), lines[0]
    assert {name: data for name, data in after.items() if not name.startswith("tensorboard")} \
        == {name: data for name, data in before.items() if not name.startswith("tensorboard")}
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1"]


def test_an_output_dir_moved_mid_run_stops_with_one_line_and_resumes_where_it_went(
        killed, tmp_path, resumable, reference):
    """A run whose directory is moved stops at its next step end with exit 5,
    writes nothing more (no new directory of the old name) and resumes, bit
    for bit, from where the directory went. The run is itself a resumed one
    (of killed, from step 20): it trains 5 steps, not 25, before the move."""
    output_dir, moved = copy_run(killed[0], tmp_path), tmp_path / "moved"
    process = launch(*resumable, f"--output_dir={output_dir}")
    wait_for_step(process, output_dir, 25)
    os.rename(output_dir, moved)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 5, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0] == (f"sgan_keras.train: error: {output_dir} was moved or removed during the "
                        "run (its run.lock is no longer there): training stopped and writes "
                        "nothing more; a moved directory resumes where it now is, with its "
                        "path as --output_dir")
    assert not output_dir.exists()
    resumed = cli(*resumable, f"--output_dir={moved}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from step 25" in resumed.stdout
    assert_same_as(reference, moved)


def test_full_disk_at_export_gets_one_line_and_keeps_the_trained_run(
        small_disk, reference, resumable):
    output_dir = small_disk / "run"
    shutil.copytree(reference, output_dir)
    shutil.rmtree(output_dir / "export")  # trained, not exported (as if killed while exporting)
    before = files_of(output_dir)
    filler = fill(small_disk, leave=256 * 1024)
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 5, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"error: cannot write \S+/export \(No space left on device\)", lines[0]), lines
    assert files_of(output_dir) == before  # nothing half-written left behind
    filler.unlink()
    result = cli(*resumable, f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from the end of epoch 2." in result.stdout
    assert (output_dir / "export" / "saved_model.pb").exists()


def test_a_run_launched_with_stdout_and_stderr_closed_keeps_its_log_out_of_its_files(
        tmp_path, fast_blog):
    """Launched with ``>&- 2>&-`` (a daemon, a cron job), the run's first files
    would take descriptors 1 and 2, and TensorFlow's C++ log lines (written to
    2) would corrupt a TensorBoard event file. They go to /dev/null. A new
    interpreter: the streams must be closed from its start, and its C++ log
    level must show TensorFlow's notices."""
    import tensorflow as tf
    output_dir = tmp_path / "run"
    result = subprocess.run(
        ["bash", "-c", 'exec "$@" >&- 2>&-', "bash", sys.executable, "-m", "sgan_keras.train",
         *fast_blog, "--epochs=1", "--steps_per_epoch=2", f"--output_dir={output_dir}"],
        timeout=300, env={**ENV, "TF_CPP_MIN_LOG_LEVEL": "0"}, cwd=REPO_ROOT)
    assert result.returncode == 0
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1"]
    event_files = list((output_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert len(event_files) == 3
    for path in event_files:     # every record whole (a log line in one: DataLossError)
        assert list(tf.compat.v1.train.summary_iterator(str(path)))
    for path in [output_dir / "run.lock", *output_dir.glob("*.json"), *output_dir.glob("*.csv")]:
        assert b".cc:" not in path.read_bytes(), path   # no C++ log line (file.cc:NN])


def test_a_home_that_cannot_hold_matplotlibs_directory_gets_no_warning(tmp_path, fast_blog):
    """With ``HOME`` a file (or read-only, unset: some containers) matplotlib
    cannot make ``~/.config/matplotlib`` and printed two warning lines a run;
    the CLI gives it a temporary directory, removed at exit. A new
    interpreter: matplotlib must not be imported yet."""
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.write_text("not a directory")
    temporary.mkdir()
    environment = {name: value for name, value in ENV.items()
                   if name not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    result = fresh_cli(*fast_blog, "--epochs=1", "--steps_per_epoch=2",
                       f"--output_dir={tmp_path / 'run'}",
                       env={**environment, "HOME": str(home), "TMPDIR": str(temporary)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "matplotlib" not in result.stderr.lower(), result.stderr[-3000:]
    assert (tmp_path / "run" / "accuracy.png").stat().st_size > 0
    assert not list(temporary.glob("matplotlib-*"))     # removed at exit


def test_a_run_whose_stdout_reader_has_gone_trains_to_the_end(tmp_path, fast):
    """``... | head -1``: the pipe's reader has gone, and Python, which ignores
    SIGPIPE, raises BrokenPipeError at the next line on stdout. The run goes
    on without its stdout, says so once on stderr, and finishes."""
    output_dir = tmp_path / "run"
    result = preloaded.run_module_with_stdout(
        "sgan_keras.train", "closed",
        [*fast, "--epochs=2", "--steps_per_epoch=2", f"--output_dir={output_dir}"], ENV,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert error_lines(result.stderr) == [
        "sgan_keras.train: the reader of stdout has gone (a closed pipe or terminal); the run "
        "goes on without it (metrics.csv has every epoch)"]
    assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1", "2"]
    assert latest_step(output_dir) == 4 and (output_dir / "export" / "saved_model.pb").exists()


@pytest.mark.parametrize("module", ["train", "predict"])
def test_no_writable_temporary_directory_gets_one_line_and_exit_5(module, tmp_path, fast):
    """A container's read-only root file system, or a full /tmp: importing
    TensorFlow asks ``tempfile`` for a directory and failed with a traceback.
    Read-only bind mounts, in a mount namespace of the run's own, over every
    directory ``tempfile`` tries (needs root)."""
    tried = [path for path in ("/tmp", "/var/tmp", "/usr/tmp") if os.path.isdir(path)]
    script = ('for d in "$@"; do [ "$d" = -- ] && break; mount --bind "$d" "$d" && '
              'mount -o remount,bind,ro "$d" || exit 99; shift; done; shift; exec "$@"')
    output_dir = tmp_path / "run"
    args = ([*fast, "--epochs=1", "--steps_per_epoch=1", f"--output_dir={output_dir}"]
            if module == "train" else [f"--model={output_dir}", str(tmp_path / "cat.png")])
    result = subprocess.run(
        ["unshare", "--mount", "bash", "-c", script, "bash", *tried, str(tmp_path), "--",
         sys.executable, "-m", f"sgan_keras.{module}", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**ENV, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)})
    if result.returncode == 99 or "unshare: " in result.stderr:
        pytest.skip(f"cannot make a mount namespace (needs root): {result.stderr.strip()}")
    assert result.returncode == 5, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("sgan_keras.")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"sgan_keras.{module}: error: No usable temporary directory found "
                               f"in [{str(tmp_path)!r}, '/tmp', "), lines[0]   # $TMPDIR first
    assert lines[0].endswith("set TMPDIR to a writable directory"), lines[0]
    assert not output_dir.exists()


def test_mirrored_strategy_on_two_logical_cpus_and_the_chiefs_start_lines(tmp_path, fast):
    # GANs in Action: the one CLI run of batch norm (and the split order's
    # restore of its statistics, Keras 2's moving variance synchronized)
    # under two replicas, and of the test set's reshuffle read from a variable.
    result = cli(*fast, "--epochs=1", "--steps_per_epoch=2", "--strategy=mirrored",
                 "--virtual_cpus=2", "--lr_schedule=linear_decay", "--lr_decay_start_epoch=3",
                 "--test_batches=reshuffled_full", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--strategy=mirrored: MirroredStrategy, 2 replicas," in result.stdout
    assert "Testing each epoch on 2,000 of the 2,000 test images: 125 batches of 16" \
        in result.stdout
    assert "--lr_decay_start_epoch=3) and this run has 1: the learning rate stays constant" \
        in result.stdout
    assert len(metrics_rows(tmp_path / "run")) == 1


def test_jit_compile_true_under_two_replicas_is_refused_before_training(tmp_path, fast):
    # It trained into an XLA error, a traceback at the first step: XLA reaches
    # only one device's copy of a mirrored variable.
    result = cli(*fast, "--epochs=1", "--steps_per_epoch=2", "--strategy=mirrored",
                 "--virtual_cpus=2", "--jit_compile=true", f"--output_dir={tmp_path / 'run'}")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "--jit_compile=true" in lines[0] and "2 replicas" in lines[0], lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("eval_batch_size", [1, 1999])   # small_mnist_dir: 2,000 = 1,999 + 1
def test_an_eval_batch_that_leaves_a_replica_no_image_is_refused_before_training(
        eval_batch_size, tmp_path, fast):
    # It trained, then the evaluation's convolution of an empty batch failed
    # with a traceback ("input depth must be evenly divisible by filter depth").
    result = cli(*fast, "--epochs=1", "--steps_per_epoch=2", "--strategy=mirrored",
                 "--virtual_cpus=2", f"--eval_batch_size={eval_batch_size}",
                 f"--output_dir={tmp_path / 'run'}")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert (f"--eval_batch_size={eval_batch_size} leaves a test batch of 1 of the 2000 test "
            "images, fewer than the 2 replicas") in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.csv").exists()


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# The training CLI, with sgan_keras.export's TFLite conversion appending the
# worker's TF_CONFIG task index to the file argv[1] before it converts.
RECORDING_TFLITE_CONVERSIONS = """
import json, os, runpy, sys
from sgan_keras import export
convert, record = export._write_tflite, sys.argv[1]
def recorded(*args, **kwargs):
    with open(record, "a") as file:
        file.write(f"{json.loads(os.environ['TF_CONFIG'])['task']['index']}\\n")
    return convert(*args, **kwargs)
export._write_tflite = recorded
sys.argv = ["-m", *sys.argv[2:]]
runpy.run_module("sgan_keras.train", run_name="__main__", alter_sys=True)
"""


def test_two_worker_multi_worker_run_on_localhost_with_a_preemption(tmp_path, fast_blog):
    """SIGTERM to the non-chief worker: TensorFlow's PreemptionCheckpointHandler
    makes both workers save at the same step and stop (75); the same command
    resumes (here with the TFLite files, which only the chief converts and
    scores: the other worker's export is thrown away)."""
    output_dir = tmp_path / "run"
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    conversions = tmp_path / "tflite_conversions.txt"

    def start(*extra):
        args = (*fast_blog, "--epochs=1", "--steps_per_epoch=20", "--checkpoint_every_steps=5",
                "--strategy=multi_worker", f"--output_dir={output_dir}", *extra)
        return [preloaded.launch_code(RECORDING_TFLITE_CONVERSIONS, [conversions, *args],
                                      env={**ENV, "TF_CONFIG": json.dumps({
                                          "cluster": cluster,
                                          "task": {"type": "worker", "index": index}})})
                for index in range(2)]

    preempted = start()
    wait_for_step(preempted[0], output_dir, 5)
    preempted[1].send_signal(signal.SIGTERM)
    steps = set()
    for process in preempted:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 75, stderr[-3000:]
        lines = error_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
        steps.add(int(re.search(r"interrupted: SIGTERM \(preemption\) at step (\d+): saved",
                                lines[0]).group(1)))
    assert len(steps) == 1 and latest_step(output_dir) == steps.pop()  # the same step

    for process in start("--tflite"):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert len(metrics_rows(output_dir)) == 1
    assert (output_dir / "export" / "saved_model.pb").exists()
    scores = json.loads((output_dir / "export" / "accuracy.json").read_text())
    assert set(scores) == {"keras", "saved_model", "tflite_float", "tflite_int8"}
    assert conversions.read_text() == "0\n"     # the chief's, once


def test_a_worker_without_the_chiefs_checkpoints_stops_every_worker_with_one_line(
        finished_run, tmp_path, fast):
    """A worker that cannot see the chief's --output_dir (no shared file system)
    finds no checkpoint where the chief has one: both name the steps and exit 2.
    The chief's restore runs collective ops the other did not join: that worker
    ended in a traceback, and the chief called its checkpoint unreadable. The
    chief's is a copy of finished_run without its export, which resumes."""
    chief_dir, worker_dir = resumable_copy(finished_run, tmp_path), tmp_path / "worker"
    args = (*fast, "--epochs=2", "--steps_per_epoch=3")
    step = latest_step(chief_dir)
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = [launch(*args, "--strategy=multi_worker", f"--output_dir={directory}",
                      env={**ENV, "TF_CONFIG": json.dumps({
                          "cluster": cluster, "task": {"type": "worker", "index": index}})})
               for index, directory in enumerate((chief_dir, worker_dir))]
    for process in workers:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
        [line] = error_lines(stderr)
        assert f"restored different checkpoint steps ({step}, 0, worker by worker)" in line
    assert latest_step(chief_dir) == step


def test_workers_started_with_different_flags_all_stop_with_one_line(tmp_path, fast,
                                                                     mnist_dir):
    """A worker with another --lr applied the shared gradients at its own rate
    beside the chief, and both finished (exit 0) without a word. The data's
    paths may differ from machine to machine."""
    output_dir = tmp_path / "run"
    (tmp_path / "mnist").symlink_to(mnist_dir)
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = [launch(*fast, "--epochs=1", "--steps_per_epoch=2", "--strategy=multi_worker",
                      f"--output_dir={output_dir}", *extra,
                      env={**ENV, "TF_CONFIG": json.dumps({
                          "cluster": cluster, "task": {"type": "worker", "index": index}})})
               for index, extra in enumerate(
                   ([], ["--lr=0.0005", f"--data_dir={tmp_path / 'mnist'}"]))]
    for process in workers:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
        [line] = error_lines(stderr)
        assert "the workers were started with different flags (--lr (g_lr))" in line, line
    assert not output_dir.exists()


def test_ctrl_c_ends_a_worker_waiting_for_the_others_of_its_cluster(tmp_path, fast):
    """A worker waits in TensorFlow's C++, holding the interpreter, until every
    worker of TF_CONFIG is up; no Python handler runs there, so SIGINT must take
    its default action (it went unanswered). Nothing is written before."""
    output_dir = tmp_path / "run"
    port = free_port()
    cluster = {"worker": [f"localhost:{port}", f"localhost:{free_port()}"]}   # 1 never starts
    waiting = launch(*fast, "--strategy=multi_worker", f"--output_dir={output_dir}",
                     env={**ENV, "TF_CONFIG": json.dumps(
                         {"cluster": cluster, "task": {"type": "worker", "index": 0}})})
    try:
        deadline = time.monotonic() + 120
        while True:                # its server listens once it waits for the other worker
            assert waiting.poll() is None and time.monotonic() < deadline, "never waited"
            with socket.socket() as probe:
                if probe.connect_ex(("localhost", port)) == 0:
                    break
            time.sleep(0.2)
        waiting.send_signal(signal.SIGINT)
        stdout, _ = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == -signal.SIGINT
    assert "Waiting for every worker of TF_CONFIG's cluster to start" in stdout
    assert not output_dir.exists()


def test_a_multi_worker_run_without_tf_config_does_not_say_it_waits(tmp_path, fast):
    """It said it was waiting for TF_CONFIG's cluster, then that TF_CONFIG was unset."""
    env = {name: value for name, value in ENV.items() if name != "TF_CONFIG"}
    result = cli(*fast, "--strategy=multi_worker", f"--output_dir={tmp_path / 'run'}", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "TF_CONFIG environment variable" in error_lines(result.stderr)[0]
    assert "Waiting" not in result.stdout


def test_a_one_worker_multi_worker_run_trains_and_logs_scalars(tmp_path, fast_blog):
    """A TF_CONFIG of one worker (a job scaled down to one machine): Keras
    passes the step's logs on unreduced there, and they must be scalars for
    TensorBoard (the shape [1] of several workers stopped it with a traceback)."""
    output_dir = tmp_path / "run"
    tf_config = {"cluster": {"worker": [f"localhost:{free_port()}"]},
                 "task": {"type": "worker", "index": 0}}
    result = cli(*fast_blog, "--epochs=1", "--steps_per_epoch=2", "--strategy=multi_worker",
                 f"--output_dir={output_dir}", env={**ENV, "TF_CONFIG": json.dumps(tf_config)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(metrics_rows(output_dir)) == 1


def test_a_multi_worker_run_whose_chief_stops_ends_every_worker_with_one_line(tmp_path, fast):
    """The chief refuses its --output_dir (a user's directory): it says so
    (exit 2); the other worker, left waiting for it, says it lost a worker
    (exit 69) instead of TensorFlow's traceback."""
    output_dir = tmp_path / "mine"
    output_dir.mkdir()
    (output_dir / "thesis.txt").write_text("precious")
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = [launch(*fast, "--epochs=1", "--steps_per_epoch=5", "--strategy=multi_worker",
                      f"--output_dir={output_dir}",
                      env={**ENV, "TF_CONFIG": json.dumps({
                          "cluster": cluster, "task": {"type": "worker", "index": index}})})
               for index in range(2)]
    ends = [process.communicate(timeout=300)[1] for process in workers]
    for process, stderr, status, says in zip(
            workers, ends, (2, 69), ("holds no sgan_keras run", "lost another worker")):
        assert process.returncode == status, stderr[-3000:]
        lines = error_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert says in lines[0], lines[0]
    assert (output_dir / "thesis.txt").read_text() == "precious"


# ------------------------------------------------------------------ bad input
BAD_INPUTS = [
    # First: logical CPUs can only be configured before TensorFlow's runtime
    # starts, and the cases share one process (BAD_INPUT_DRIVER).
    (["--strategy=mirrored", "--virtual_cpus=2", "--batch_size=15"], "--batch_size"),
    (["--dataset=imagenet"], "--dataset"),
    (["--preset=resnet"], "--preset"),
    (["--fake_class=eleven"], "--fake_class"),
    (["--labels=ten"], "--labels"),
    (["--labels=0"], "--labels"),
    (["--labels=105", "--label_selection=balanced"], "labels"),
    (["--labels=60001"], "labels"),                 # the first 60,001 of 60,000
    (["--update_order=simultaneous", "--generator_fakes=reused"], "--generator_fakes"),
    (["--init_images=-1"], "--init_images"),
    # A dense layer's init statistics over one image have no spread (g = 1e4,
    # then "g_loss is inf at step 1" and advice to lower --lr).
    (["--preset=mnist_improved_gan", "--init_images=1"], "--init_images"),
    (["--batch_size=0"], "--batch_size"),
    (["--epochs=0"], "--epochs"),
    (["--seed=4294967296"], "--seed"),              # past NumPy's seed range
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
    (["--checkpoint_every_steps=-1"], "--checkpoint_every_steps"),
    (["--dataset=folder:/nonexistent/pets", "--preset=svhn_dcgan"], "/nonexistent/pets"),
    (["--dataset=tfds:imdb_reviews"], "imdb_reviews is not an image-classification"),
]

# Runs the CLI's own entry point, absl's ``app.run(main)``, once per argv (a
# JSON list, its first argument) in one process: each case pays TensorFlow's
# import (~5 s) once for all, not once each. absl's flags are reset between cases; each case's stderr and exit
# status are captured as the process would have printed and returned them,
# and an exception that escapes ``app.run`` prints its traceback as an
# uncaught one would.
BAD_INPUT_DRIVER = """
import contextlib, io, json, sys, traceback
from absl import app, flags
from sgan_keras import train
results = []
for argv in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    stderr, status = io.StringIO(), None
    with contextlib.redirect_stderr(stderr):
        try:
            app.run(train.main, argv=["sgan_keras.train", *argv])
        except SystemExit as exit:
            status = exit.code
        except BaseException:
            traceback.print_exc()
            status = 1
    results.append({"returncode": status or 0, "stderr": stderr.getvalue()})
print(json.dumps({"results": results, "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def run_bad_inputs(cases, fast, output_dir, forked=False):
    """BAD_INPUT_DRIVER's report of the CLI on each of ``cases`` (lists of
    flags) on top of the fast configuration; ``output_dir(index)`` gives each
    its output directory. In a new interpreter, or ``forked`` from one that
    has imported TensorFlow already (tests/preloaded.py: its report then says
    nothing of what the cases import)."""
    argvs = []
    for index, args in enumerate(cases):
        base = {arg.split("=")[0]: arg for arg in [*fast, f"--output_dir={output_dir(index)}",
                                                  "--epochs=1", "--steps_per_epoch=1"]}
        base.update({arg.split("=")[0]: arg for arg in args})
        argvs.append(list(base.values()))
    if forked:
        result = preloaded.run_code(BAD_INPUT_DRIVER, [json.dumps(argvs)], ENV, timeout=600)
    else:
        result = subprocess.run([sys.executable, "-c", BAD_INPUT_DRIVER, json.dumps(argvs)],
                                capture_output=True, text=True, timeout=600, env=ENV,
                                cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory, fast):
    """Each BAD_INPUTS case's exit status and stderr from the CLI, with a fresh
    output directory (made once per session; tests only read it)."""
    def make(directory):
        report = run_bad_inputs([args for args, _ in BAD_INPUTS], fast,
                                lambda index: directory / f"bad_input_{index}" / "out",
                                forked=True)
        (directory / "results.json").write_text(json.dumps(report["results"]))
    directory = made_once(tmp_path_factory, "bad_input_results", make)
    return json.loads((directory / "results.json").read_text())


def test_flags_are_checked_before_tensorflow_is_imported(tmp_path, fast):
    # Refused by config.py and presets.py: a check of one field, of a section,
    # of the whole configuration, of a preset. No TensorFlow, nothing written.
    cases = [["--labels=0"], ["--dataset=imagenet"], ["--preset=mnist_blog", "--dataset=svhn"],
             ["--supervised_only", "--generator_loss=non_saturating"],
             ["--precision=mixed_bfloat16", "--manifold_reg=lecouat"]]
    report = run_bad_inputs(cases, fast, lambda index: tmp_path / f"out{index}")
    assert [result["returncode"] for result in report["results"]] == [2] * len(cases)
    assert not report["tensorflow_imported"] and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", range(len(BAD_INPUTS)),
                         ids=[name.strip("-") for _, name in BAD_INPUTS])
def test_bad_input_gets_one_line_and_a_nonzero_exit(case, bad_input_results):
    names = BAD_INPUTS[case][1]
    result = bad_input_results[case]
    assert result["returncode"] != 0
    # TensorFlow's own start-up log lines aside, the error is one line.
    lines = [line for line in result["stderr"].splitlines()
             if line.startswith(("sgan_keras.train: error:", "FATAL Flags parsing error"))]
    assert len(lines) == 1 and names in lines[0], result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"]
    # absl's flag parser exits 1; our own checks exit 2 (README "Faults").
    assert result["returncode"] == (1 if lines[0].startswith("FATAL") else 2)


def test_non_run_directory_is_never_touched(tmp_path, fast):
    keep = tmp_path / "mine" / "thesis.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    (keep.parent / "samples").mkdir()          # named like an output, but no run's
    (keep.parent / "samples" / "cat.png").write_text("precious too")
    for overwrite in ([], ["--overwrite"]):
        result = cli(*fast, "--epochs=1", "--steps_per_epoch=1", f"--output_dir={keep.parent}",
                     *overwrite)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert ("holds no sgan_keras run (samples, thesis.txt); choose another directory"
                in result.stderr)
        assert sorted(os.listdir(keep.parent)) == ["samples", "thesis.txt"]
    assert keep.read_text() == "precious"
    assert (keep.parent / "samples" / "cat.png").read_text() == "precious too"


@pytest.mark.parametrize("content", ['["--lr=0.1"]', '{"learning_rate": 0.1}', "not json"])
def test_another_tools_flags_json_is_a_users_file(content, tmp_path):
    """A flags.json this package did not write (another tool's, or not JSON)
    does not make a directory a run: it is refused, with --overwrite too."""
    from sgan_keras import trainer
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "flags.json").write_text(content)
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        output_dir=str(tmp_path / "run"))
    for overwrite in (False, True):
        with pytest.raises(trainer.UsageError, match=r"holds no sgan_keras run \(flags.json\)"):
            trainer.prepare_output_dir(config.replace(overwrite=overwrite))
    assert (tmp_path / "run" / "flags.json").read_text() == content
    assert os.listdir(tmp_path / "run") == ["flags.json"]


def test_overwrite_removes_a_runs_outputs_and_keeps_a_users_files(tmp_path):
    """--overwrite replaces a run's outputs; a user's file beside them, in the
    run directory, stays. A killed run's stale temporaries (a half-written
    file, an export's staging) go on the next run, --overwrite or not."""
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    for name in ("metrics.csv", "notes.txt", ".metrics.csv.tmp123"):
        (run / name).write_text(name)
    (run / "samples").mkdir()
    (run / ".export.tmp-123-abcd").mkdir()
    trainer.prepare_output_dir(config).release()          # a resume
    assert sorted(os.listdir(run)) == ["flags.json", "metrics.csv", "notes.txt", "run.lock",
                                       "samples"]
    trainer.prepare_output_dir(config.replace(overwrite=True, g_lr=0.5)).release()
    assert sorted(os.listdir(run)) == ["flags.json", "notes.txt", "run.lock"]
    assert (run / "notes.txt").read_text() == "notes.txt"
    assert json.loads((run / "flags.json").read_text())["g_lr"] == 0.5


def test_a_dangling_symbolic_link_as_output_dir_is_named(tmp_path):
    from sgan_keras import trainer
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        output_dir=str(tmp_path / "link"))
    with pytest.raises(trainer.UsageError, match=(
            r"^--output_dir=.*link is a symbolic link to .*gone, which does not exist$")):
        trainer.prepare_output_dir(config)


@pytest.mark.parametrize("name, make", [("samples", "file"), ("metrics.csv", "directory")])
def test_a_file_where_the_run_keeps_a_directory_or_the_reverse_is_named(tmp_path, name, make):
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    (run / name).mkdir() if make == "directory" else (run / name).write_text("mine")
    kept = "directory" if make == "file" else "file"
    with pytest.raises(trainer.UsageError, match=(
            rf"^{re.escape(str(run / name))} is a {make}, where the run keeps its {name} "
            rf"{kept}; move it away$")):
        trainer.prepare_output_dir(config)
    assert (run / name).exists()


@pytest.mark.parametrize("make", ["directory", "named pipe", "broken link"])
def test_a_lock_file_that_is_no_regular_file_is_named(tmp_path, make):
    """os.open, or the read of the pid, failed on it in a traceback (exit 1)."""
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    lock = run / "run.lock"
    lock.unlink()
    {"directory": lock.mkdir, "named pipe": lambda: os.mkfifo(lock),
     "broken link": lambda: lock.symlink_to(tmp_path / "gone")}[make]()
    with pytest.raises(trainer.UsageError, match=(
            rf"^{re.escape(str(lock))} is not a regular file, where the run keeps its lock "
            r"file; move it away$")):
        trainer.prepare_output_dir(config)
    assert os.path.lexists(lock) and (run / "flags.json").exists()


def test_an_overwrite_stopped_part_way_keeps_the_runs_flags_so_it_can_finish(
        tmp_path, monkeypatch):
    """A run output --overwrite cannot delete (an immutable file, a read-only
    mount) stops it part way: the directory keeps its flags.json, so it still
    counts as a run and the same command finishes the job once it is fixed;
    the line does not claim the earlier outputs are intact."""
    import shutil
    from sgan_keras import trainer
    run = tmp_path / "run"
    config = presets.get_preset("mnist_gans_in_action").config.replace(output_dir=str(run))
    trainer.prepare_output_dir(config).release()
    for name in ("metrics.csv", "tensorboard", "export"):
        (run / name).mkdir() if name != "metrics.csv" else (run / name).write_text("epoch\n")
    real_rmtree = shutil.rmtree

    def stuck_export(path, *args, **kwargs):
        if os.path.basename(path) == "export":
            raise PermissionError(1, "Operation not permitted", path)
        return real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(shutil, "rmtree", stuck_export)
    again = config.replace(overwrite=True)
    with pytest.raises(trainer.OverwriteIncomplete, match=(
            r"^--overwrite removed only part of the earlier run in .*run \(cannot write .*run "
            r"\(Operation not permitted\)\); its flags.json stays")):
        trainer.prepare_output_dir(again)
    assert (run / "flags.json").exists() and (run / "export").exists()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)      # the directory fixed
    trainer.prepare_output_dir(again).release()
    assert sorted(os.listdir(run)) == ["flags.json", "run.lock"]


def test_a_resume_names_the_data_directory_any_way_it_likes(tmp_path):
    """--data_dir=../data and /home/me/data are one directory: resuming with
    either is the same run, and another directory is not."""
    from sgan_keras import trainer
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        data_dir=str(tmp_path / "data"))
    earlier = config.to_dict()
    spelled = str(tmp_path / "other" / ".." / "data")
    assert trainer.changed_options(earlier, config.replace(data_dir=spelled)) == []
    assert trainer.changed_options(earlier, config.replace(
        data_dir=str(tmp_path / "other"))) == ["data_dir"]


def test_helpfull_explains_every_flag_and_flagfile_works(tmp_path):
    result = fresh_cli("--helpfull")   # absl prints the help and exits 1
    assert "Global batch size" in result.stdout
    help_text = " ".join(result.stdout.split())       # absl wraps lines
    for option in config_lib.OPTIONS.values():
        if option.flag:
            flag = f"--{option.flag}" if option.type is not bool else f"--[no]{option.flag}"
            assert f"{flag}: " in help_text, option.flag
            assert " ".join(option.help.split()) in help_text, option.flag
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--dataset=imagenet\n")
    result = fresh_cli(f"--flagfile={flagfile}")
    assert result.returncode != 0 and "--dataset=imagenet" in result.stderr
    flagfile.write_bytes("--output_dir=café\n".encode("latin-1"))    # not UTF-8
    result = fresh_cli(f"--flagfile={flagfile}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"sgan_keras.train: error: --flagfile={flagfile} is not UTF-8 text (invalid "
        "continuation byte at byte 16); save it as UTF-8"]


@pytest.mark.parametrize("spelling", ["--flagfile {}", "-flagfile={}", "--flagfile={}.outer"])
def test_a_flag_file_not_utf8_gets_one_line_however_it_is_named(tmp_path, spelling):
    """Only --flagfile=F was checked: --flagfile F, -flagfile=F and a flag file
    included by another ended in absl's UnicodeDecodeError traceback."""
    flagfile = tmp_path / "flags.txt"
    flagfile.write_bytes("--output_dir=café\n".encode("latin-1"))
    (tmp_path / "flags.txt.outer").write_text(f"# runs\n--flagfile={flagfile}\n")
    result = fresh_cli(*spelling.format(flagfile).split())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"sgan_keras.train: error: --flagfile={flagfile} is not UTF-8 text (invalid "
        "continuation byte at byte 16); save it as UTF-8"]



def test_a_flag_file_with_a_byte_order_mark_gets_one_line(tmp_path):
    # Notepad's "UTF-8 with BOM": absl read "unexpected arguments ['\ufeff--dataset=mnist']".
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--dataset=mnist\n", encoding="utf-8-sig")
    result = fresh_cli(f"--flagfile={flagfile}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        f"sgan_keras.train: error: --flagfile={flagfile} starts with a byte order mark (an "
        "editor's 'UTF-8 with BOM'); save it as UTF-8 without one"]


def test_the_console_scripts_help_is_the_modules(tmp_path):
    # As pip's sgan-train script runs it: its own __main__ has no docstring,
    # so absl's --help printed a bare USAGE line, not the usage and exit statuses.
    script = tmp_path / "sgan-train"
    script.write_text("import sys\nfrom sgan_keras.train import run\nsys.exit(run())\n")
    result = subprocess.run([sys.executable, str(script), "--helpshort"], capture_output=True,
                            text=True, timeout=300, env=ENV, cwd=REPO_ROOT)
    assert "Faults (README" in result.stdout and "75  stopped by SIGTERM" in result.stdout


@pytest.mark.parametrize("module", ["sgan_keras.train", "sgan_keras.predict"])
def test_help_into_a_pipe_whose_reader_has_gone_ends_without_a_traceback(module):
    """``--help | head -3``: absl prints the help before main guards stdout, so a
    reader gone mid-help was a BrokenPipeError traceback (1 run in 5 with head)."""
    child = subprocess.Popen([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()             # gone before the child has started Python
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=300) == 1, stderr      # absl's status for a help
    assert stderr == "", stderr

# ------------------------------------------------------------ own images, TFLite
def test_short_real_mnist_run_ships_tflite_files_that_score_like_the_model(small_mnist_dir,
                                                                          tmp_path):
    output_dir = tmp_path / "run"
    result = cli("--dataset=mnist", "--preset=mnist_gans_in_action",
                 f"--data_dir={small_mnist_dir}",
                 "--epochs=1", "--steps_per_epoch=100", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    export_dir = output_dir / "export"
    for name in ("classifier.tflite", "classifier_int8.tflite", "labels.txt"):
        assert (export_dir / name).stat().st_size > 0, name
    scores = json.loads((export_dir / "accuracy.json").read_text())
    assert "Test accuracy of the export: keras" in result.stdout
    assert scores["keras"] > 0.3               # it learned something: 3x chance (0.41 here)
    assert abs(scores["saved_model"] - scores["keras"]) <= 0.001
    assert abs(scores["tflite_float"] - scores["saved_model"]) <= 0.001
    assert abs(scores["tflite_int8"] - scores["tflite_float"]) <= 0.02
    assert (export_dir / "labels.txt").read_text().split() == [str(k) for k in range(10)]
    # Stopped after its export but before its scores (e.g. a full disk): the
    # same command resumes at the last step, trains nothing, exports and scores.
    (export_dir / "accuracy.json").unlink()
    rows = (output_dir / "metrics.csv").read_text()
    again = cli("--dataset=mnist", "--preset=mnist_gans_in_action",
                f"--data_dir={small_mnist_dir}",
                "--epochs=1", "--steps_per_epoch=100", f"--output_dir={output_dir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((export_dir / "accuracy.json").read_text()) == scores
    assert (output_dir / "metrics.csv").read_text() == rows


def test_cli_trains_and_exports_on_an_image_folder_of_real_cifar10(cifar10_dir, tmp_path,
                                                                   monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "experiments"))
    from cifar10_image_folder import write_folder
    names = write_folder(cifar10_dir, tmp_path / "pets", unlabeled=200)   # > 5 steps of 32
    (tmp_path / "pets" / "unlabeled" / "notes.png").write_bytes(b"not an image")
    output_dir = tmp_path / "run"
    result = cli(f"--dataset=folder:{tmp_path / 'pets'}", "--preset=svhn_dcgan",
                 "--procedure=unified", "--labels=100", "--epochs=1", "--steps_per_epoch=5",
                 "--batch_size=32", "--notflite", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipped 1 unreadable image file(s)" in result.stdout
    assert json.loads((output_dir / "class_names.json").read_text()) == list(names)
    assert len(json.loads((output_dir / "labeled_indices.json").read_text())) == 100
    import tensorflow as tf
    serve = tf.saved_model.load(str(output_dir / "export")).signatures["serving_default"]
    outputs = serve(images=tf.zeros((2, 32, 32, 3), tf.uint8))
    assert outputs["probabilities"].shape == (2, 10)
    assert all(name.decode() in names for name in outputs["class_names"].numpy())
    rows = metrics_rows(output_dir)
    assert len(rows) == 1 and 0.0 <= float(rows[0]["test_accuracy"]) <= 1.0


# ------------------------------------- a damaged run directory at resume time
def resumable_copy(finished_run, tmp_path, keep_newest=True):
    """A copy of finished_run (ckpt-3, ckpt-6) that resumes: without its export
    (as if killed while exporting) or, with ``keep_newest=False``, without ckpt-6
    and the manager's state file either (as if killed in epoch 2)."""
    output_dir = copy_run(finished_run[0], tmp_path)
    shutil.rmtree(output_dir / "export")
    if not keep_newest:
        for path in (output_dir / "checkpoint").glob("ckpt-6.*"):
            path.unlink()
        (output_dir / "checkpoint" / "checkpoint").unlink()
    return output_dir


def test_an_unreadable_checkpoint_state_file_falls_back_to_the_checkpoint_files(
        finished_run, fast, tmp_path):
    output_dir = resumable_copy(finished_run, tmp_path)
    state = output_dir / "checkpoint" / "checkpoint"
    state.write_bytes(bytes(range(128, 256)))   # not even text
    result = cli(*fast, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"Checkpoint {re.escape(str(state))} cannot be read \(UnicodeDecodeError: "
                     r".+\): set aside as unreadable-checkpoint; falling back to ckpt-6\.",
                     result.stdout), result.stdout
    assert (output_dir / "checkpoint" / "unreadable-checkpoint").read_bytes() == \
        bytes(range(128, 256))
    assert latest_step(output_dir) == 6 and (output_dir / "export" / "saved_model.pb").exists()
    assert "Traceback" not in result.stderr


def test_an_unwritable_checkpoint_directory_at_restore_gets_one_line_and_exit_5(
        finished_run, fast, tmp_path):
    output_dir = resumable_copy(finished_run, tmp_path)
    checkpoints = output_dir / "checkpoint"
    data = checkpoints / "ckpt-6.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])   # to be set aside, in a read-only directory
    before = files_of(checkpoints)
    mounted = subprocess.run(["mount", "--bind", checkpoints, checkpoints], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot bind-mount (needs root): {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", checkpoints], check=True)
        result = cli(*fast, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    finally:
        subprocess.run(["umount", "-l", str(checkpoints)], check=False)
    assert result.returncode == 5, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"error: cannot write \S+/checkpoint/unreadable-ckpt-6\.index \(Read-only "
                     r"file system\); earlier outputs are intact", lines[0]), lines[0]
    assert files_of(checkpoints) == before


@pytest.mark.parametrize("damage", ["byte order mark", "epoch abc"])
def test_a_damaged_metrics_csv_at_resume_is_read_or_refused_with_one_line(
        finished_run, fast, tmp_path, damage):
    output_dir = resumable_copy(finished_run, tmp_path, keep_newest=False)   # resumes epoch 2
    metrics = output_dir / "metrics.csv"
    text = metrics.read_bytes()
    damaged = b"\xef\xbb\xbf" + text if damage == "byte order mark" else \
        text.replace(b"\n1,", b"\nabc,", 1)
    metrics.write_bytes(damaged)
    result = cli(*fast, "--epochs=2", "--steps_per_epoch=3", f"--output_dir={output_dir}")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if damage == "byte order mark":   # as Excel's "CSV UTF-8" saves it
        assert result.returncode == 0, result.stderr[-3000:]
        assert [row["epoch"] for row in metrics_rows(output_dir)] == ["1", "2"]
        return
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f"sgan_keras.train: error: {metrics} line 2 has epoch='abc', not a whole number"), lines
    assert "move it away" in lines[0]
    assert metrics.read_bytes() == damaged   # the user's file, untouched
