"""What every result file records about how it was made: commit, machine, date, command.

``experiments/run.py``, ``benchmark.py`` and ``benchmark_input_pipeline.py``
store :func:`record` beside their numbers (and :func:`machine_line` in their
Markdown), so a figure can be traced to the code and the machine behind it.
"""

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit():
    """Short hash of the checked-out commit ("unknown" outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def matmul_peak_flops(size=2048, repeats=10):
    """FLOP/s of a ``size`` x ``size`` float32 matmul chain (best of ``repeats``):
    the machine's attainable peak, measured in the same run as the figures."""
    import tensorflow as tf
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size]) / size ** 0.5

    @tf.function
    def chain(x):
        for _ in range(4):
            x = tf.matmul(x, b)
        return tf.reduce_sum(x)

    chain(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 4 * 2 * size ** 3 / best


def machine():
    """CPU model and cores, accelerator, and the TensorFlow, Keras and Python versions."""
    import keras
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    accelerator = "no GPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        accelerator = f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "accelerator": accelerator,
            "system": platform.system(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}


def record(argv=None):
    """:func:`machine`, the commit, today's date and the command (``argv``, default
    this process's) as one dict."""
    argv = sys.argv if argv is None else argv
    return {**machine(), "commit": commit(), "date": datetime.date.today().isoformat(),
            "command": shlex.join(["python", *argv])}


def machine_line(record):
    """One line naming the machine of a :func:`record`."""
    return (f"{record['cpu']}, {record['cpu_cores']} cores, {record['accelerator']}, "
            f"{record['system']}; TensorFlow {record['tensorflow']}, Keras {record['keras']}, "
            f"Python {record['python']}")
