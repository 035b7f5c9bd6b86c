"""sgan_keras.faults: which errors become one-line write errors, and that the
module (and the experiment runner built on it) starts without TensorFlow."""

import errno
import os
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from sgan_keras import faults

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_disk_errors_of_python_and_of_tensorflow_become_write_errors():
    full = os.strerror(errno.ENOSPC)
    assert faults.disk_reason(OSError(errno.ENOSPC, full)) == full
    # TensorFlow's file system reports ENOSPC as ResourceExhaustedError.
    assert faults.disk_reason(tf.errors.ResourceExhaustedError(
        None, None, f"ckpt-50.tempstate; {full}")) == full
    assert faults.disk_reason(tf.errors.InvalidArgumentError(None, None, "bad shape")) is None
    assert faults.disk_reason(OSError(errno.ENOENT, "No such file")) is None
    with pytest.raises(faults.WriteError, match=rf"^cannot write ckpt-50 \({full}\)$"):
        with faults.writing("ckpt-50"):
            raise tf.errors.ResourceExhaustedError(None, None, full)
    with pytest.raises(tf.errors.InvalidArgumentError):   # any other error keeps its type
        with faults.writing("ckpt-50"):
            raise tf.errors.InvalidArgumentError(None, None, "bad shape")


def test_a_write_tensorflow_makes_names_the_file_its_error_names(tmp_path):
    """TensorFlow's own file errors (TensorBoard's summary writer) name the
    file before the reason; with name_tensorflow_file the line names it."""
    unwritable = "/sys/sgan_keras_test"   # sysfs: no new directories, even for root
    with pytest.raises(faults.WriteError) as raised:
        with faults.writing(f"the outputs in {tmp_path}", name_tensorflow_file=True):
            tf.summary.create_file_writer(unwritable)
    # EPERM here; EACCES for another user, EROFS where a container mounts /sys read-only.
    assert re.fullmatch(rf"cannot write {unwritable} \((Operation not permitted|Permission "
                        r"denied|Read-only file system)\)", str(raised.value)), raised.value
    with pytest.raises(faults.WriteError, match=rf"^cannot write the outputs in {tmp_path} \("):
        with faults.writing(f"the outputs in {tmp_path}"):
            tf.summary.create_file_writer(unwritable)
    # A TensorFlow error that names no file: the line names the block's outputs.
    with pytest.raises(faults.WriteError, match=rf"^cannot write the outputs in {tmp_path} "
                                                r"\(No space left on device\)$"):
        with faults.writing(f"the outputs in {tmp_path}", name_tensorflow_file=True):
            raise tf.errors.ResourceExhaustedError(
                None, None, "events.out.tfevents; No space left on device")
    # The TensorFlow tag is left out of the one line.
    assert faults.first_line(tf.errors.NotFoundError(
        None, None, "{{function_node __wrapped__X_device_/job:localhost/replica:0}} a; b\nc")) \
        == "a; b"


@pytest.mark.parametrize("code", [
    "import sgan_keras.faults",
    "sys.path.insert(0, 'experiments'); import run",     # writes results; trains in children
])
def test_writing_files_does_not_import_tensorflow(code):
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print('tensorflow' in sys.modules)"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False"]


@pytest.mark.parametrize("case", ["fine", "relative config home", "cache home a file"])
def test_matplotlib_gets_a_temporary_directory_only_when_its_own_cannot_be_used(
        case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", "config" if case == "relative config home"
                       else str(tmp_path / "config"))
    (tmp_path / "cache").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ("cache" if case == "cache home a file"
                                                         else "cache_home")))
    faults.give_matplotlib_a_writable_directory()
    if case == "fine":
        assert "MPLCONFIGDIR" not in os.environ
        assert (tmp_path / "config" / "matplotlib").is_dir()
    else:
        assert os.path.isdir(os.environ["MPLCONFIGDIR"])
        if case == "relative config home":
            assert not (tmp_path / "config").exists()     # nothing made relative to the cwd


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP])
def test_a_directory_the_file_system_cannot_sync_is_written_without_its_fsync(
        tmp_path, monkeypatch, code):
    """Some FUSE and network file systems refuse fsync on a directory (EINVAL):
    every atomic write raised it as a traceback. A file's fsync still counts."""
    fsync = os.fsync

    def fsync_refusing_directories(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_refusing_directories)
    faults.write_text(tmp_path / "a.txt", "kept")
    assert (tmp_path / "a.txt").read_text() == "kept"
    faults.fsync_tree(tmp_path)

    def fsync_refusing_everything(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync_refusing_everything)
    with pytest.raises(OSError):
        faults.fsync(tmp_path / "a.txt")       # a file it cannot sync is not written safely


def test_taking_over_signals_leaves_an_ignored_sigint_or_sighup_ignored_but_not_sigterm():
    """The rule training and predict share: SIGINT ignored at start (a
    non-interactive shell's background job) or SIGHUP (nohup) stays ignored,
    so that shell's Ctrl-C is not the run's; SIGTERM is always taken; the
    handlers come back as they were."""
    import signal
    numbers = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {number: signal.getsignal(number) for number in numbers}
    received = []
    try:
        for number in numbers:
            signal.signal(number, signal.SIG_IGN)
        previous = faults.take_over_signals(numbers, lambda number, frame: received.append(number))
        assert set(previous) == {signal.SIGTERM}
        assert [signal.getsignal(number) is signal.SIG_IGN for number in numbers] == [
            False, True, True]
        os.kill(os.getpid(), signal.SIGTERM)       # handled by the next bytecode
        assert received == [signal.SIGTERM]
        faults.restore_signals(previous)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        previous = faults.take_over_signals(numbers, lambda number, frame: received.append(number))
        assert set(previous) == {signal.SIGTERM, signal.SIGINT}
        os.kill(os.getpid(), signal.SIGINT)
        assert received == [signal.SIGTERM, signal.SIGINT]
        faults.restore_signals(previous)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
