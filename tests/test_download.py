"""The TFDS download path, driven for real up to the network call.

No test here mocks ``tfds.load``: the CLI runs in a process of its own
(``tests/preloaded.py``) with no prepared data (an empty ``TFDS_DATA_DIR``)
and ``HTTPS_PROXY``/``HTTP_PROXY`` pointing at a closed local port, so TFDS
builds its dataset builder, reads its checksums (the code that once needed
the undeclared ``importlib_resources``) and the first request is refused.
The run must end at once with one line that names the dataset and says
``--data_dir``.
"""

import os
import pathlib
import socket
import time

import pytest

import preloaded

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def closed_local_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize("dataset, host", [("mnist", "storage.googleapis.com"),
                                           ("cifar10", "www.cs.toronto.edu")])
def test_offline_download_fails_fast_with_one_line(dataset, host, tmp_path):
    proxy = f"http://127.0.0.1:{closed_local_port()}"
    env = {**os.environ, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "",
           "TFDS_DATA_DIR": str(tmp_path / "tfds"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.monotonic()
    argv = [f"--dataset={dataset}", f"--output_dir={tmp_path / 'run'}"]
    result = preloaded.run_module("sgan_keras.train", argv, env, REPO_ROOT, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"sgan_keras.train: error: cannot download {dataset}: "
                                f"{host} is unreachable"), last_line
    assert "--data_dir" in last_line
    # TFDS alone retries for ~200 s before it fails; start-up takes 10-60 s.
    assert elapsed < 150, f"{elapsed:.0f} s: the download was retried"
    # Nothing but the run's flags and lock: a corrected command may reuse the directory.
    assert {path.name for path in (tmp_path / "run").iterdir()} <= {"flags.json", "run.lock"}
