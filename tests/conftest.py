"""Shared test set-up: quiet TensorFlow logs, and the shared data sets as fixtures.

Tests that read the real MNIST or CIFAR-10 take the ``mnist_dir`` or
``cifar10_dir`` fixture: the directory of the data set, kept beside the
repository in ``../shared/data/`` (never committed). When a collected test
needs a data set that is not there, the session stops before running any
test, with one message saying which data is missing and where it belongs: a
missing data set fails loudly, it is never a silent skip.
"""

import errno
import fcntl
import os
import pathlib
import shutil
import signal
import subprocess

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# --precision=auto resolves the same on every machine (float32: no bfloat16
# matrix units), in this process and the CLIs it starts; tests/test_precision.py
# sets the probe's answer where the rule itself is tested.
os.environ["SGAN_KERAS_BFLOAT16_UNITS"] = "0"
# A shell without job control starts a background command (`make test &` in a
# script) with SIGINT ignored, and every process the tests start inherits
# that: the CLI keeps an ignored SIGINT ignored, so the Ctrl-C tests saw a run
# finish (exit 0, not 75). The tests' processes take SIGINT as a terminal's
# foreground job does, as Python sets it up when SIGINT is not ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
# fixture -> (its directory, a file that must be in it)
DATA_SETS = {
    "mnist_dir": (SHARED_DATA / "mnist", "mnist.npz"),
    "cifar10_dir": (SHARED_DATA / "cifar10", "cifar-10-batches-bin/data_batch_1.bin"),
}


# The slowest tests (20-45 s each on 2 AVX2 cores) that share no module
# fixture, run first: pytest-xdist hands out tests in collection order, and a
# long test drawn last keeps one worker busy while the other has nothing left.
# Under `make test`'s `--dist worksteal` the first half of that order is one
# worker's queue, and a worker whose queue runs out takes half of the other's
# (README, Development).
SLOW_TESTS_FIRST = (
    "test_two_worker_multi_worker_run_on_localhost_with_a_preemption",
    "test_short_real_mnist_run_ships_tflite_files_that_score_like_the_model",
    "test_notebook_runs",
    "test_benchmark_measures_every_mode_and_writes_its_tables",
    "test_peers_time_our_step_beside_the_sources_code_each_in_its_own_process",
    "test_svhn_experiment_runs_with_its_baseline_on_generated_data",
    "test_mirrored_strategy_on_two_logical_cpus_and_the_chiefs_start_lines",
)


@pytest.hookimpl(trylast=True)   # after -k and -m have deselected tests
def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: getattr(item, "originalname", item.name) not in SLOW_TESTS_FIRST)
    missing = {}
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            directory, marker = DATA_SETS.get(fixture, (None, None))
            if directory is not None and not (directory / marker).exists():
                missing.setdefault(directory / marker, []).append(item.nodeid)
    if missing:
        paths = ", ".join(str(path) for path in missing)
        count = len({nodeid for nodeids in missing.values() for nodeid in nodeids})
        pytest.exit(f"{count} collected tests need the shared data sets, which are missing "
                    f"({paths}): put the real MNIST (Keras mnist.npz) and CIFAR-10 (binary "
                    "version) in ../shared/data/mnist/ and ../shared/data/cifar10/ beside the "
                    "repository, or deselect those tests", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def mnist_dir():
    """The directory of the real MNIST (Keras ``mnist.npz``)."""
    return DATA_SETS["mnist_dir"][0]


@pytest.fixture(scope="session")
def small_mnist_dir(tmp_path_factory, mnist_dir):
    """A ``mnist.npz`` of the real MNIST's first 10,000 training and 2,000 test
    images, for CLI runs whose test is not about the data: each run reads and
    evaluates a sixth of the images (about 2 s less a two-epoch run)."""
    def make(directory):
        import numpy as np
        with np.load(mnist_dir / "mnist.npz") as full:
            np.savez(directory / "mnist.npz", x_train=full["x_train"][:10000],
                     y_train=full["y_train"][:10000], x_test=full["x_test"][:2000],
                     y_test=full["y_test"][:2000])
    return made_once(tmp_path_factory, "small_mnist", make)


@pytest.fixture(scope="session")
def cifar10_dir():
    """The directory of the real CIFAR-10 (``cifar-10-batches-bin/``)."""
    return DATA_SETS["cifar10_dir"][0]


def made_once(tmp_path_factory, name, make):
    """The directory that ``make(directory)`` filled, made once per test session.

    Under pytest-xdist each worker sets a module fixture up for itself, so a
    fixture that trains a run trained it on both workers. The first worker
    makes it under a file lock in the session's directory, which the workers
    share; the other waits and reuses it (pytest-xdist docs, "Making
    session-scoped fixtures execute only once"). Tests must only read it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent     # pytest-of-<user>/pytest-<n>/: this session's, every worker's
    directory = root / f"made_once_{name}"
    with open(root / f"made_once_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # released when the file closes
        if not (directory / ".made").exists():
            shutil.rmtree(directory, ignore_errors=True)   # a failed attempt's leftovers
            directory.mkdir()
            make(directory)
            (directory / ".made").touch()
    return directory


def random_algorithms(function, *args):
    """The generator each of ``function``'s stateless random draws names
    (its ``alg`` input: 1 Philox, 3 ``auto_select``), traced for ``args``."""
    import tensorflow as tf   # pylint: disable=import-outside-toplevel
    graph = tf.function(function).get_concrete_function(*args).graph
    draws = [op for op in graph.get_operations()
             if op.type in ("StatelessRandomUniformV2", "StatelessRandomNormalV2")]
    assert draws, "no stateless draw in the traced function"
    return [tf.get_static_value(op.inputs[3]) for op in draws]


def summary_steps(directory, accept):
    """The steps at which the TensorBoard event files in ``directory`` hold a
    value whose tag ``accept`` takes."""
    import tensorflow as tf   # pylint: disable=import-outside-toplevel
    steps = set()
    for event_file in directory.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            steps |= {event.step for value in event.summary.value if accept(value.tag)}
    return sorted(steps)


@pytest.fixture
def small_disk(tmp_path):
    """A 100 MB tmpfs, a real file system that fills up (mounting one needs root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, leave=0):
    """Fills the file system of ``directory`` up to ``leave`` free bytes; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            block = bytes(size)
            try:
                while True:
                    os.write(fd, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler
