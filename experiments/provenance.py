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


def commit(directory=REPO_ROOT):
    """Short hash of the commit checked out in ``directory`` (default: this
    repository; "unknown" outside a git checkout), followed by " + uncommitted
    changes" when tracked files other than ``experiments/results`` differ from
    it: a figure measured on edited code says so."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        edited = git("status", "--porcelain", "--untracked-files=no", "--", ":/",
                     ":(top,exclude)experiments/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if edited else "")


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


# The /proc/cpuinfo flags that decide what the matrix math runs on: two CPUs
# both named "AMD EPYC" differ by 1.7x in matmul peak and by 12x in mixed
# bfloat16 speed (experiments/results/benchmark_cifar10_avx2.md), and these tell them apart.
CPU_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine():
    """CPU model, its vector ISA flags and cores (and those this process may
    use), accelerator, and the TensorFlow, Keras and Python versions."""
    import keras
    import tensorflow as tf
    from sgan_keras import distribute, onednn
    cpu = platform.processor() or platform.machine()
    try:
        with open(distribute.CPUINFO) as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = distribute.cpu_flags()
    gpus = tf.config.list_physical_devices("GPU")
    accelerator = "no GPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        accelerator = f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    # The cores this process may run on: ``taskset -c 0`` (as run.py's seeds
    # run, one per core) leaves one of the machine's.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cpu_isa": [flag for flag in CPU_ISA_FLAGS if flag in flags],
            "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable, "accelerator": accelerator,
            "system": platform.system(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(),
            "onednn": onednn.onednn_kernels_in_use()}


def record(argv=None):
    """:func:`machine`, the commit, today's date and the command (``argv``, default
    this process's) as one dict."""
    argv = sys.argv if argv is None else argv
    return {**machine(), "commit": commit(), "date": datetime.date.today().isoformat(),
            "command": shlex.join(["python", *argv])}


def cpu_allocator_line(pooled):
    """One line naming the CPU allocator TensorFlow timed with
    (:func:`sgan_keras.distribute.use_pooled_cpu_allocator`)."""
    from sgan_keras import distribute
    return ("CPU allocator: TensorFlow's pooled (BFC) allocator, as the CLI runs."
            if pooled else "CPU allocator: TensorFlow's default (malloc), "
            f"{distribute.POOLED_CPU_ALLOCATOR_VARIABLE}=false.")


def kernels_name(onednn_in_use):
    """The kernels' name (oneDNN, Eigen or ?) for a record's ``onednn`` value
    (:func:`sgan_keras.onednn.onednn_kernels_in_use`; None if unknown)."""
    return {True: "oneDNN", False: "Eigen"}.get(onednn_in_use, "?")


def machine_line(record):
    """One line naming the machine of a :func:`record`."""
    isa = record.get("cpu_isa")     # absent from records made before it was kept
    cpu = f"{record['cpu']} ({', '.join(isa) or 'no AVX2'})" if isa is not None else record["cpu"]
    kernels = {True: " (oneDNN kernels)", False: " (Eigen kernels, oneDNN off)"}.get(
        record.get("onednn"), "")      # absent from records made before it was kept
    usable = record.get("cpu_cores_usable")     # absent from records made before it was kept
    cores = f"{record['cpu_cores']} cores" + (
        f" ({usable} usable: CPU affinity)" if usable and usable < record["cpu_cores"] else "")
    return (f"{cpu}, {cores}, {record['accelerator']}, "
            f"{record['system']}; TensorFlow {record['tensorflow']}{kernels}, "
            f"Keras {record['keras']}, Python {record['python']}")


def define_timing_flags(peak=True, flag_values=None):
    """The flags of every timing script: ``--force`` and ``--quiet_seconds``
    (:func:`quiet_check`'s) and, with ``peak``, ``--peak_repeats`` and
    ``--peak_size`` (:func:`matmul_peak_flops`'), in ``flag_values`` (default
    absl's ``FLAGS``). ``--quiet_seconds`` and ``--peak_size`` only shorten a
    smoke run (a test's): their defaults are what a measurement uses."""
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_bool("force", False, "Measure even if the machine is not quiet (recorded).",
                      flag_values=flag_values)
    flags.DEFINE_float("quiet_seconds", 3.0, "Length of the quiet check's look at the other "
                       "processes (less for a smoke run).", lower_bound=0.01,
                       flag_values=flag_values)
    if peak:
        flags.DEFINE_integer("peak_repeats", 10, "Timed runs of the matmul-peak probe (the "
                             "fastest is the peak; 1 for a smoke run).", lower_bound=1,
                             flag_values=flag_values)
        flags.DEFINE_integer("peak_size", 2048, "Side of the matmul-peak probe's square "
                             "matrices (less for a smoke run).", lower_bound=1,
                             flag_values=flag_values)


def smoke_arguments(flag_values):
    """The ``--quiet_seconds`` and ``--peak_size`` arguments given on this
    command line (none when left at their defaults), for a script that starts
    another timing script to pass on."""
    return [f"--{name}={flag_values[name].value}" for name in ("quiet_seconds", "peak_size")
            if name in flag_values and flag_values[name].present]


def quiet_check(seconds=3.0, force=False, patience=120.0):
    """The load average, and the processes that used a CPU over ``seconds``.

    A busy machine (load average over 1.5, or another process using over
    10% of a core) is checked again, every ``seconds``, for up to
    ``patience`` seconds: the 1-minute load average of a process that just
    ended (the previous benchmark of an alternating series) stays over 1.5
    for a minute after it. Still busy then, it exits with one line unless
    ``force`` (which never waits): timings from a busy machine are not
    results. The returned dict, with the seconds waited, is recorded with them.
    """
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start      # before this look
        check = _machine_load(seconds)
        if check["quiet"] or force or waited >= patience:
            break
    check["waited_seconds"] = round(waited, 1)
    if not check["quiet"] and not force:
        sys.exit(f"the machine is busy (load {check['load_average']}, busy: "
                 f"{check['busy_processes'][:3]}) after waiting {waited:.0f} s; wait, or pass "
                 "--force (recorded)")
    return check


def _machine_load(seconds):
    """:func:`quiet_check`'s one look: the load average and the processes
    that used over 10% of a core in ``seconds``."""
    def cpu_times():
        times = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline") as file:
                    command = file.read().replace("\0", " ").strip()[:100]
            except OSError:
                continue
            times[pid] = (int(fields[11]) + int(fields[12]), command)   # utime + stime
        return times

    before = cpu_times()
    time.sleep(seconds)
    after = cpu_times()
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    busy = [f"{command} ({100 * (used - before[pid][0]) / ticks:.0f}% of a core)"
            for pid, (used, command) in after.items()
            if pid in before and command and (used - before[pid][0]) > 0.1 * ticks]
    load = os.getloadavg()
    return {"load_average": [round(value, 2) for value in load], "busy_processes": busy,
            "quiet": load[0] < 1.5 and not busy}


def quiet_line(check):
    """The Markdown sentence that records a :func:`quiet_check`."""
    return (f"Machine check before measuring: load average {check['load_average']}, other "
            f"processes using over 10% of a core: {check['busy_processes'] or 'none'}"
            + ("" if check["quiet"] else " (NOT quiet: measured with --force)")
            + (f" (after waiting {check['waited_seconds']:.0f} s for it to settle)"
               if check.get("waited_seconds", 0) >= 1 else "") + ".")
