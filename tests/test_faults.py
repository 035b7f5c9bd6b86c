"""sgan_keras.faults: which errors become one-line write errors, and that the
module (and the experiment runner built on it) starts without TensorFlow."""

import errno
import os
import pathlib
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
