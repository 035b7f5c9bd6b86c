"""Chooses a ``tf.distribute`` strategy by name, and TensorFlow's CPU allocator.

Build and compile the model inside ``strategy.scope()`` and ``fit`` takes
care of the rest (TensorFlow guide "Distributed training with Keras",
https://www.tensorflow.org/tutorials/distribute/keras). Logical devices must
be configured (e.g. ``tf.config.set_logical_device_configuration``) before
calling :func:`make_strategy`, since creating a strategy initializes the
TensorFlow runtime.
"""

import errno
import hashlib
import json
import os
import signal
import socket
import threading

import tensorflow as tf

from sgan_keras import faults
from sgan_keras.choices import STRATEGIES

# The probe's override: "0" (no units) or a description of the units.
BFLOAT16_UNITS_VARIABLE = "SGAN_KERAS_BFLOAT16_UNITS"
# CPU flags (/proc/cpuinfo) of bfloat16 matrix math: Intel AMX's bfloat16 tiles,
# and AVX512-BF16's dot products, which oneDNN's matmuls and convolutions use
# (mixed bfloat16 measured 1.2x-1.6x faster with it,
# experiments/results/benchmark_avx512bf16.md).
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"
# TensorFlow reads it once, when its runtime starts (process_state.cc).
POOLED_CPU_ALLOCATOR_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"


def use_pooled_cpu_allocator():
    """Asks TensorFlow for its pooled CPU allocator, unless the environment
    already chose (``TF_CPU_ALLOCATOR_USE_BFC=false`` keeps the default).

    TensorFlow's default CPU allocator takes every tensor from ``malloc``,
    which hands large freed blocks back to the system and maps fresh, zeroed
    pages for the next: a CLI run of the Improved-GAN MNIST preset took about
    1,100 page faults a step that way (weight norm's kernel-sized
    temporaries, their gradients, the weight average). The pooled allocator
    (the best-fit-with-coalescing allocator TensorFlow uses on GPUs) keeps
    freed memory for the next step: that run's epochs ran 1.07x faster
    (median of four processes each way, 1.01x-1.15x a round) and 2.3-2.9 s
    less system time, with the same metrics
    (``experiments/results/cpu_allocator.md``; GANs in Action and the MNIST
    blog, whose big tensors ``malloc`` already reuses, ran 0.97x-1.02x; on
    SVHN-shaped data conv-large ran 1.15x faster, the SVHN DCGAN and the
    manifold-regularized preset the same). The process keeps its peak memory
    instead of returning it.
    With oneDNN's kernels on (:mod:`sgan_keras.onednn`), TensorFlow's CPU
    device pools its memory in oneDNN's own allocator, whatever this says.

    Takes effect only before the runtime starts (a process's first op), so
    the CLI calls it first; a notebook calls it (or sets the variable) before
    its first TensorFlow op. :func:`pooled_cpu_allocator_in_use` tells.
    """
    os.environ.setdefault(POOLED_CPU_ALLOCATOR_VARIABLE, "true")


def pooled_cpu_allocator_in_use():
    """Whether the CPU allocator is the pooled one (starts the runtime).

    Only the pooled allocator keeps the statistics ``get_memory_info`` reads.
    """
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return False
    return True


def bfloat16_matrix_units():
    """A short description of this machine's bfloat16 matrix units, "" if it has none.

    GPUs count when every visible one has compute capability 8.0 or later
    (the bfloat16 tensor cores of Ampere and later); without a GPU, a CPU
    with one of :data:`BFLOAT16_CPU_FLAGS` (AMX-BF16 or AVX512-BF16). The
    environment variable ``SGAN_KERAS_BFLOAT16_UNITS`` overrides the probe:
    ``0`` for none, any other value names the units. ``--precision=auto``
    reads it (``config.ModelConfig.resolved_precision``).
    """
    override = os.environ.get(BFLOAT16_UNITS_VARIABLE)
    if override is not None:
        return "" if override.strip() in ("", "0") else override.strip()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get(
            "compute_capability", (0, 0)) for gpu in gpus]
        if all(tuple(capability) >= (8, 0) for capability in capabilities):
            return f"{len(gpus)} GPU(s) of compute capability {min(capabilities)}"
        return ""
    flags = cpu_flags()
    found = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    return f"CPU with {', '.join(found)}" if found else ""


def cpu_flags():
    """The CPU's feature flags from ``/proc/cpuinfo`` (:data:`CPUINFO`); [] where
    there is no such file."""
    try:
        with open(CPUINFO) as file:
            return next((line.split(":", 1)[1].split() for line in file
                         if line.startswith("flags")), [])
    except OSError:
        return []


class StrategyError(ValueError):
    """An unknown strategy name, or one that cannot run here; the message is one line."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped, or the network to it failed
    (TensorFlow's ``UnavailableError`` in a collective); the message is one line."""


def make_strategy(name):
    """The ``tf.distribute.Strategy`` called ``name`` (one of :data:`STRATEGIES`).

    - ``auto``: ``MirroredStrategy`` over all GPUs when there are several,
      ``OneDeviceStrategy("/gpu:0")`` with one, the default strategy on CPU.
    - ``mirrored``: ``MirroredStrategy`` over all GPUs, or over all logical
      CPU devices when there is no GPU (to try it on a CPU split in two).
    - ``one_device``: the first GPU, else ``/cpu:0``.
    - ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured by the
      ``TF_CONFIG`` environment variable (TensorFlow tutorial "Multi-worker
      training with Keras").
    - ``tpu``: ``TPUStrategy`` on the TPU found by ``TPUClusterResolver``.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if name == "multi_worker":
        # First: collective ops must be configured before the runtime starts
        # (listing logical devices would start it).
        address = check_tf_config(os.environ.get("TF_CONFIG"))
        try:
            return _wait_for_the_cluster()
        except tf.errors.UnknownError as error:
            if "gRPC server" not in str(error):
                raise
            raise StrategyError(f"this task cannot serve at its TF_CONFIG address {address}: "
                                f"{_why_not_served(address)}") from None
    if name == "tpu":
        return _tpu_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        if len(gpus) == 1:
            return tf.distribute.OneDeviceStrategy("/gpu:0")
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")  # one_device


def _wait_for_the_cluster():
    """``MultiWorkerMirroredStrategy()``, which waits until every worker of the
    cluster is up.

    TensorFlow waits in C++ holding Python's interpreter lock, so no Python
    signal handler runs meanwhile: SIGINT (Ctrl-C) would go unanswered. While
    it waits, SIGINT takes its default action and ends the process at once;
    nothing of the run is written before then. TensorFlow's preemption
    notifier also takes SIGTERM there, in C++, behind Python's back: a SIGTERM
    between then and training's ``PreemptionCheckpointHandler`` (data, model,
    restore) was lost and the worker trained to the end. Python's handler is
    set again once the cluster is up.
    """
    if threading.current_thread() is not threading.main_thread():
        return tf.distribute.MultiWorkerMirroredStrategy()   # only it may set handlers
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    finally:
        signal.signal(signal.SIGINT, previous)
        sigterm = signal.getsignal(signal.SIGTERM)
        if sigterm is not None:      # None: a handler set outside Python
            signal.signal(signal.SIGTERM, sigterm)


def check_tf_config(text):
    """This task's address in the TF_CONFIG ``text``; raises :class:`StrategyError`
    unless it has a cluster of ``HOST:PORT`` addresses and a task in it, whose
    host resolves here (TensorFlow's server waits for an unknown host of its
    own without end, deaf to SIGTERM)."""
    if not text:
        raise StrategyError("strategy multi_worker needs the TF_CONFIG environment variable "
                            "(JSON with 'cluster' and 'task'); it is unset")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not config["cluster"]:
        raise StrategyError("TF_CONFIG must hold a non-empty 'cluster', e.g. "
                            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}')
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise StrategyError("TF_CONFIG must hold a 'task' with 'type' and 'index', e.g. "
                            '"task": {"type": "worker", "index": 0}')
    # TensorFlow's own checks end in a traceback; a 'ps' job leaves the workers
    # waiting for it without end, and an 'evaluator' task trained a model alone.
    for job, addresses in config["cluster"].items():
        if job not in ("chief", "worker", "evaluator"):
            raise StrategyError(f"TF_CONFIG's cluster has a {job!r} job: --strategy=multi_worker "
                                "(MultiWorkerMirroredStrategy) takes 'chief' and 'worker' tasks")
        if not isinstance(addresses, list):
            raise StrategyError(f"TF_CONFIG's cluster job {job!r} must be a list of HOST:PORT "
                                f"addresses; got {addresses!r}")
    if len(config["cluster"].get("chief", [])) > 1:
        raise StrategyError("TF_CONFIG's cluster has more than one 'chief' task")
    if task["type"] not in ("chief", "worker"):
        raise StrategyError(f"TF_CONFIG task type {task['type']!r}: --strategy=multi_worker "
                            "trains on 'chief' and 'worker' tasks only (it has no evaluator)")
    if type(task["index"]) is not int:   # "1" read as worker:1 "not in its cluster"
        raise StrategyError(f"TF_CONFIG task index must be a whole number, e.g. 0; "
                            f"got {task['index']!r}")
    jobs = config["cluster"].get(task["type"])
    if not isinstance(jobs, list) or not 0 <= task["index"] < len(jobs):
        raise StrategyError(f"TF_CONFIG task {task['type']}:{task['index']} is not in its "
                            f"cluster {config['cluster']}")
    for task_type, addresses in config["cluster"].items():
        for index, address in enumerate(addresses):
            _host_and_port(address, f"{task_type}:{index}")
    address = jobs[task["index"]]
    host, port = _host_and_port(address, f"{task['type']}:{task['index']}")
    try:
        socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise StrategyError(f"TF_CONFIG gives this task ({task['type']}:{task['index']}) the "
                            f"address {address}, whose host does not resolve here "
                            f"({getattr(error, 'strerror', None) or error})") from None
    return address


def _host_and_port(address, task_name):
    """``(host, port)`` of a TF_CONFIG address ``HOST:PORT`` (``[IPv6]:PORT`` too)."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise StrategyError(f"TF_CONFIG address {address!r} of {task_name} must be HOST:PORT, "
                            "with a port from 1 to 65535")
    return host.strip("[]"), int(port)


def _why_not_served(address):
    """Why TensorFlow's server could not listen at ``address``: its port taken, or unknown."""
    port = _host_and_port(address, "this task")[1]
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} is in use by another process"
            return f"port {port} cannot be opened ({error.strerror})"
    return "TensorFlow could not start its gRPC server there"


def _tpu_strategy():
    """TPUStrategy as in the TensorFlow guide "Use TPUs"."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise StrategyError(f"strategy tpu found no reachable TPU "
                            f"({faults.first_line(error)})") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this task writes the run's outputs.

    True except in a multi-worker cluster on a task that is not the chief:
    the ``chief`` task when the cluster has one, else ``worker`` 0 (the
    convention of TensorFlow's "Multi-worker training with Keras" tutorial).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    cluster = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, resolver.task_id
    if not cluster or task_type is None:
        return True
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and (task_id or 0) == 0


def each_workers_value(strategy, value):
    """``value`` (an int) as every replica of ``strategy`` has it, in replica
    order: an all-gather across workers, so it is also a barrier (every
    worker waits here for the others). One-element list without a
    multi-worker strategy."""
    return [row[0] for row in each_workers_values(strategy, [value])]


def each_workers_values(strategy, values):
    """``values`` (a list of ints) as every replica of ``strategy`` has them:
    one list per replica, in replica order (one all-gather, a barrier too).
    One list without a multi-worker strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return [[int(value) for value in values]]

    @tf.function
    def gather():
        def replica_fn():
            return tf.distribute.get_replica_context().all_gather(
                tf.constant([values], tf.int64), axis=0)
        return strategy.run(replica_fn)

    rows = strategy.experimental_local_results(gather())[0].numpy()
    return [[int(value) for value in row] for row in rows]


def _stop_every_worker(strategy, message):
    """Raises :class:`StrategyError` ``message``, which every worker raises
    on what a gather showed, once every worker has that gather's result: one
    that stopped as soon as its own ended shut its server while another still
    fetched from it, and that one then stopped on a lost worker (exit 69)
    instead of the same line. A worker reaches this second gather only once
    its first is over; the others may stop as soon as it ends, so its own
    failure here is ignored."""
    try:
        each_workers_value(strategy, 0)
    except tf.errors.OpError:   # a worker that had both gathers stopped first
        pass
    raise StrategyError(message)


def check_same_flags(strategy, flags):
    """Raises :class:`StrategyError` on every worker, naming the flags, unless
    all workers have the same ``flags`` (flag label -> JSON value): a worker
    started with another --lr applied the shared gradients at its own rate
    beside the chief, without a word."""
    names = sorted(flags)
    digests = [int.from_bytes(hashlib.sha256(json.dumps(flags[name], sort_keys=True).encode())
                              .digest()[:8], "big", signed=True) for name in names]
    rows = each_workers_values(strategy, digests)
    differ = [name for index, name in enumerate(names) if len({row[index] for row in rows}) > 1]
    if differ:
        _stop_every_worker(strategy, f"the workers were started with different flags "
                                     f"({', '.join(differ)}): start every worker of "
                                     "--strategy=multi_worker with the same flags")


def check_same_step(strategy, step, output_dir):
    """Raises :class:`StrategyError` on every worker unless all workers
    restored the same checkpoint ``step``: a worker that cannot see the
    chief's ``output_dir`` (no shared file system) would start from step 0
    and train a different model beside the others."""
    steps = each_workers_value(strategy, step)
    if len(set(steps)) > 1:
        _stop_every_worker(
            strategy,
            f"the workers restored different checkpoint steps ({', '.join(map(str, steps))}, "
            f"worker by worker): every worker must read the chief's --output_dir={output_dir} "
            "on a shared file system")

