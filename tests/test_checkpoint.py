"""CheckpointStore: keeps two, falls back past unreadable ones, never saves NaN."""

import os
import pathlib
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from sgan_keras import checkpoint
from sgan_keras import faults


def make_variables(value=0.0):
    return [tf.Variable(np.full((64, 32), value, np.float32)),
            tf.Variable(np.int64(value)), tf.Variable(np.full((7,), value, np.float32))]


def saved_steps(directory):
    return sorted(int(name[len("ckpt-"):-len(".index")]) for name in os.listdir(directory)
                  if name.startswith("ckpt-") and name.endswith(".index"))


def save_steps(directory, steps):
    variables = make_variables()
    store = checkpoint.CheckpointStore(directory, variables)
    for step in steps:
        for variable in variables:
            variable.assign(tf.cast(tf.fill(variable.shape, step), variable.dtype))
        store.save(step)


def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def test_saves_are_named_by_step_and_the_newest_two_are_kept(tmp_path):
    save_steps(tmp_path, [10, 20, 30])
    assert saved_steps(tmp_path) == [20, 30]
    variables = make_variables()
    restored = checkpoint.CheckpointStore(tmp_path, variables).restore()
    assert restored.step == 30 and restored.unreadable == ()
    assert all(np.all(variable.numpy() == 30) for variable in variables)


def test_an_empty_directory_restores_nothing(tmp_path):
    assert checkpoint.CheckpointStore(tmp_path / "none", make_variables()).restore() is None


@pytest.mark.parametrize("damage", ["truncated data", "truncated index", "missing index"])
def test_an_unreadable_newest_checkpoint_falls_back_and_is_set_aside(tmp_path, damage):
    save_steps(tmp_path, [10, 20])
    if damage == "truncated data":
        truncate(tmp_path / "ckpt-20.data-00000-of-00001")
    elif damage == "truncated index":
        truncate(tmp_path / "ckpt-20.index")
    else:
        os.remove(tmp_path / "ckpt-20.index")
    variables = make_variables()
    store = checkpoint.CheckpointStore(tmp_path, variables)
    restored = store.restore()
    assert restored.step == 10 and [path for path, _ in restored.unreadable] == [
        str(tmp_path / "ckpt-20")]
    assert all(np.all(variable.numpy() == 10) for variable in variables)
    # Kept for inspection, out of the manager's way; the newest two are kept again.
    assert (tmp_path / "unreadable-ckpt-20.data-00000-of-00001").exists()
    assert restored.set_aside == (str(tmp_path / "ckpt-20"),)
    store.save(11)
    store.save(12)
    assert saved_steps(tmp_path) == [11, 12]


def test_a_checkpoint_the_state_file_names_whose_files_are_gone_is_not_said_set_aside(
        tmp_path):
    # The line said "set aside as unreadable-ckpt-20" for files that did not exist.
    save_steps(tmp_path, [10, 20])
    for file in tmp_path.glob("ckpt-20.*"):
        file.unlink()
    restored = checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert restored.step == 10 and [path for path, _ in restored.unreadable] == [
        str(tmp_path / "ckpt-20")]
    assert restored.set_aside == ()


def test_what_a_killed_save_left_is_removed_at_restore(tmp_path):
    # kill -9 while the manager deleted the oldest checkpoint (its index first)
    # left its data file, and one during a save TensorFlow's staging directory;
    # the state file no longer named them, so they stayed, a checkpoint's size each.
    save_steps(tmp_path, [10, 20])
    (tmp_path / "ckpt-10.index").unlink()
    (tmp_path / "ckpt-30_temp").mkdir()
    (tmp_path / "ckpt-30_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (tmp_path / "mine.txt").write_text("a user's")
    restored = checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert restored.step == 20
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint", "ckpt-20.data-00000-of-00001", "ckpt-20.index", "mine.txt"]


def test_a_restore_aborted_by_a_lost_worker_is_not_an_unreadable_checkpoint(
        tmp_path, monkeypatch):
    """Under MultiWorkerMirroredStrategy a restore runs collective ops; one that
    another worker's end aborted (UnavailableError) was taken for an unreadable
    checkpoint: set aside for an older one, or "pass --overwrite to start over"."""
    save_steps(tmp_path, [10, 20])
    read = tf.train.Checkpoint.read
    calls = []

    def aborted_once(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: ...")
        return read(self, path, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "read", aborted_once)
    with pytest.raises(tf.errors.UnavailableError):
        checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert saved_steps(tmp_path) == [10, 20]      # nothing set aside


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    save_steps(tmp_path, [10, 20])
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    truncate(tmp_path / "ckpt-10.data-00000-of-00001")
    truncate(tmp_path / "ckpt-20.data-00000-of-00001")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint .* can be read") as error:
        checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert "\n" not in str(error.value) and "ckpt-20" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # nothing renamed or deleted


def test_a_checkpoint_of_another_model_does_not_restore(tmp_path):
    save_steps(tmp_path, [10])
    other = [tf.Variable(np.zeros((3, 3), np.float32))]
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.CheckpointStore(tmp_path, other).restore()


def test_a_checkpoint_written_without_an_optional_variable_restores_it_as_zero(tmp_path):
    """A run's checkpoints from before a variable was added (``optional``,
    the trainer's ``epoch_seconds``) still restore, as a fall-back too; a store
    not given it restores the newer ones."""
    save_steps(tmp_path, [10])          # the earlier format: the list alone
    seconds = tf.Variable(5.0, dtype=tf.float64)
    variables = make_variables()
    store = checkpoint.CheckpointStore(tmp_path, variables, optional={"epoch_seconds": seconds})
    assert store.restore().step == 10 and seconds.numpy() == 0.0
    assert all(np.all(variable.numpy() == 10) for variable in variables)
    seconds.assign(12.5)
    store.save(20)
    seconds.assign(0.0)
    store = checkpoint.CheckpointStore(tmp_path, variables, optional={"epoch_seconds": seconds})
    assert store.restore().step == 20 and seconds.numpy() == 12.5
    assert checkpoint.CheckpointStore(tmp_path, make_variables()).restore().step == 20
    truncate(tmp_path / "ckpt-20.data-00000-of-00001")   # back to the earlier format's
    assert store.restore().step == 10 and seconds.numpy() == 0.0


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_a_lost_state_file_is_rebuilt_from_the_files_on_disk(tmp_path, monkeypatch, relative):
    # A relative directory (the CLI's default runs/<name>) must not make the
    # rebuilt state name files of the working directory (TensorFlow's writer
    # takes names relative to it), nor let the manager delete them.
    monkeypatch.chdir(tmp_path)
    directory = pathlib.Path("run/checkpoint") if relative else tmp_path / "run" / "checkpoint"
    save_steps(directory, [10, 20])
    os.remove(directory / "checkpoint")
    (tmp_path / "ckpt-10.index").write_text("a user's own file")
    variables = make_variables()
    store = checkpoint.CheckpointStore(directory, variables)
    assert store.restore().step == 20
    store.save(30)
    assert saved_steps(directory) == [20, 30]
    assert (tmp_path / "ckpt-10.index").read_text() == "a user's own file"
    state = tf.train.get_checkpoint_state(directory)
    assert [os.path.basename(path) for path in state.all_model_checkpoint_paths] == [
        "ckpt-20", "ckpt-30"]
    assert all(os.path.exists(path + ".index") for path in state.all_model_checkpoint_paths)


def test_a_non_finite_state_is_never_saved(tmp_path):
    variables = make_variables()
    store = checkpoint.CheckpointStore(tmp_path, variables)
    store.save(1)
    variables[2].assign(np.full((7,), np.nan, np.float32))
    with pytest.raises(checkpoint.NonFiniteStateError, match="at step 2"):
        store.save(2)
    assert saved_steps(tmp_path) == [1]


def test_a_non_finite_bfloat16_state_is_never_saved(tmp_path):
    # NumPy does not count bfloat16 (ml_dtypes) as np.floating: a NaN there was saved.
    variables = [tf.Variable(tf.ones([3], tf.bfloat16))]
    store = checkpoint.CheckpointStore(tmp_path, variables)
    store.save(1)
    variables[0].assign(tf.constant([1.0, np.nan, 1.0], tf.bfloat16))
    with pytest.raises(checkpoint.NonFiniteStateError, match="at step 2"):
        store.save(2)
    assert saved_steps(tmp_path) == [1]


def test_an_old_npz_checkpoint_is_refused_not_ignored(tmp_path):
    np.savez(tmp_path / checkpoint.LEGACY_FILE, v00000=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="--overwrite"):
        checkpoint.CheckpointStore(tmp_path, make_variables()).restore()


@pytest.mark.parametrize("damage, reason", [
    ("empty", "ValueError: Invalid checkpoint state"),
    ("random bytes", "UnicodeDecodeError"),
    ("not a state", "not a checkpoint state file"),
    ("a directory", "not a file"),
])
def test_an_unreadable_state_file_falls_back_to_the_checkpoint_files(tmp_path, damage, reason):
    # The manager's state file, damaged (a crash, a disk fault, an edit): the
    # checkpoints are those on the disk, the file is kept as unreadable-checkpoint
    # and a new one written, which the manager then keeps to.
    save_steps(tmp_path, [10, 20])
    state = tmp_path / "checkpoint"
    os.remove(state)
    if damage == "a directory":
        state.mkdir()
    else:
        state.write_bytes({"empty": b"", "random bytes": bytes(range(128, 256)),
                           "not a state": b"a user's note\n"}[damage])
    variables = make_variables()
    store = checkpoint.CheckpointStore(tmp_path, variables)
    restored = store.restore()
    assert restored.step == 20 and all(np.all(variable.numpy() == 20) for variable in variables)
    [(path, why)] = restored.unreadable
    assert path == str(state) and why.startswith(reason) and "\n" not in why
    kept = tmp_path / "unreadable-checkpoint"
    assert kept.is_dir() if damage == "a directory" else kept.exists()
    assert [os.path.basename(path) for path in
            tf.train.get_checkpoint_state(tmp_path).all_model_checkpoint_paths] == [
        "ckpt-10", "ckpt-20"]
    store.save(30)
    assert saved_steps(tmp_path) == [20, 30]


def test_an_unreadable_state_file_without_checkpoints_is_an_error_not_a_fresh_start(tmp_path):
    save_steps(tmp_path, [10])
    for name in os.listdir(tmp_path):
        if name.startswith("ckpt-10."):
            os.remove(tmp_path / name)
    (tmp_path / "checkpoint").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint .* can be read") as error:
        checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert "\n" not in str(error.value) and "--overwrite" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]  # nothing renamed or deleted


@pytest.fixture
def read_only(tmp_path):
    """Makes a directory read-only with a bind mount (real EROFS; needs root)."""
    mounted = []

    def make(directory):
        bind = subprocess.run(["mount", "--bind", directory, directory], capture_output=True,
                              text=True)
        if bind.returncode:
            pytest.skip(f"cannot bind-mount (needs root): {bind.stderr.strip()}")
        mounted.append(directory)
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)

    yield make
    for directory in mounted:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.mark.parametrize("damage, file", [("truncated newest", "unreadable-ckpt-20.index"),
                                          ("lost state file", "checkpoint")])
def test_an_unwritable_directory_at_restore_is_a_write_error(tmp_path, read_only, damage, file):
    # A restore that must set a checkpoint aside or rewrite the state file, in a
    # read-only directory: faults.WriteError (one line naming the file, exit 5).
    save_steps(tmp_path, [10, 20])
    if damage == "truncated newest":
        truncate(tmp_path / "ckpt-20.data-00000-of-00001")
    else:
        os.remove(tmp_path / "checkpoint")
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    read_only(tmp_path)
    with pytest.raises(faults.WriteError) as error:
        checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert str(error.value) == f"cannot write {tmp_path / file} (Read-only file system)"
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


def test_the_newest_checkpoint_is_the_highest_step_not_the_last_name(tmp_path):
    # ckpt-10 is newer than ckpt-9, though "9" sorts after "10" as text.
    save_steps(tmp_path, [9, 10])
    for state_file in ("kept", "lost"):
        if state_file == "lost":
            os.remove(tmp_path / "checkpoint")
        variables = make_variables()
        store = checkpoint.CheckpointStore(tmp_path, variables)
        assert store.newest_step() == 10, state_file
        restored = store.restore()
        assert restored.step == 10 and restored.unreadable == (), state_file
        assert all(np.all(variable.numpy() == 10) for variable in variables)
    truncate(tmp_path / "ckpt-10.data-00000-of-00001")
    restored = checkpoint.CheckpointStore(tmp_path, make_variables()).restore()
    assert restored.step == 9
    assert [os.path.basename(path) for path, _ in restored.unreadable] == ["ckpt-10"]


def test_restore_keeps_the_older_checkpoint_whole_for_a_later_fall_back(tmp_path):
    # Only data files whose index is gone are leftovers: the older of the two
    # kept checkpoints must still read after a restore of the newer one.
    save_steps(tmp_path, [10, 20])
    before = sorted(os.listdir(tmp_path))
    assert checkpoint.CheckpointStore(tmp_path, make_variables()).restore().step == 20
    assert sorted(os.listdir(tmp_path)) == before
    variables = make_variables()
    checkpoint.CheckpointStore(tmp_path, variables).read(str(tmp_path / "ckpt-10"))
    assert all(np.all(variable.numpy() == 10) for variable in variables)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_an_infinite_state_is_never_saved(tmp_path, bad):
    # Adam's velocity overflows to infinity before anything is NaN.
    variables = make_variables()
    store = checkpoint.CheckpointStore(tmp_path, variables)
    store.save(1)
    variables[0].assign(tf.tensor_scatter_nd_update(variables[0], [[3, 4]], [bad]))
    with pytest.raises(checkpoint.NonFiniteStateError, match="NaN or infinity at step 2"):
        store.save(2)
    assert saved_steps(tmp_path) == [1]
