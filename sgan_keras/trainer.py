"""Trains one run: its output directory, devices, data, model, ``fit()`` and export.

:func:`train` takes a checked :class:`~sgan_keras.config.Config` and does
what ``python -m sgan_keras.train`` does once its flags are valid (the
command line, ``train.py``, lists the outputs and turns the errors below
into one line and an exit status); notebooks and tests call it directly.
It imports TensorFlow and Keras, which the command line does only after
checking its flags.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading

import keras
import numpy as np
import tensorflow as tf

from sgan_keras import callbacks as callbacks_lib
from sgan_keras import checkpoint
from sgan_keras import choices as choices_lib
from sgan_keras import config as config_lib
from sgan_keras import data as data_lib
from sgan_keras import distribute
from sgan_keras import export
from sgan_keras import faults
from sgan_keras import layers
from sgan_keras import lock as lock_lib
from sgan_keras import presets as presets_lib
from sgan_keras.model import SGAN

TFLITE_CALIBRATION_IMAGES = 300   # unlabeled training images for the int8 export


class UsageError(ValueError):
    """An --output_dir that cannot be used, or a batch the replicas cannot split; one line."""


class OutOfMemoryError(RuntimeError):
    """A batch's tensors did not fit in the device's memory (TensorFlow's
    allocator said so: a GPU's, or the CPU's pooled one); one line. The
    system's out-of-memory killer, which ends a process without a word, is a
    SIGKILL (README "Faults")."""


class OverwriteIncomplete(faults.WriteError):
    """``--overwrite`` removed part of an earlier run's outputs, not all: a
    write failure whose earlier outputs are not all intact."""


class InterruptedBeforeTraining(KeyboardInterrupt):
    """SIGINT (or SIGTERM, as the command line sets it) before :class:`StopSignals`
    took the signals over: no step was trained, and ``--overwrite`` removed at
    most the earlier run, so the same command, its ``--overwrite`` too, starts
    the run again. A ``KeyboardInterrupt`` after training ended is a plain one."""


# The errors train() raises for the faults a user can meet, by the exit
# status the command line gives them (train.py); any other error is a bug.
BAD_INPUT = (config_lib.ConfigError, UsageError, data_lib.DataError, distribute.StrategyError,
             export.ExportError, checkpoint.CheckpointError, layers.WeightNormInitError)
LOCKED = (lock_lib.RunLockedError,)
OUTPUT_DIR_LOST = (lock_lib.LockLostError,)
NON_FINITE = (callbacks_lib.NonFiniteLossError, checkpoint.NonFiniteStateError)
OVERWRITE_INCOMPLETE = (OverwriteIncomplete,)    # before WRITE_FAILED: one of them
WRITE_FAILED = (faults.WriteError,)
INTERRUPTED = (callbacks_lib.TrainingInterrupted,)
WORKER_LOST = (distribute.WorkerLostError,)
OUT_OF_MEMORY = (OutOfMemoryError,)


# What a run writes in --output_dir (README "What lands in --output_dir"),
# besides its lock and temporaries: all --overwrite removes.
RUN_OUTPUTS = ("flags.json", "labeled_indices.json", "class_names.json", "metrics.csv",
               "accuracy.png", "losses.png", "tensorboard", "samples", "checkpoint", "export")
RUN_DIRECTORIES = ("tensorboard", "samples", "checkpoint", "export")   # the rest are files
WRITE_CHECK_PREFIX = f".write_check{faults.TEMPORARY_MARK}"


def prepare_output_dir(config):
    """Checks ``--output_dir``, takes its lock, writes ``flags.json``; returns
    the held :class:`lock_lib.RunLock`.

    Before anything is touched: a file, or a non-empty directory holding no
    sgan_keras run, is refused (``--overwrite`` too: it never removes what
    this package did not write). Then the lock: one run per directory
    (:class:`lock_lib.RunLockedError` names the holder). Under it, a
    directory holding the same configuration resumes; a finished run, or one
    that has trained under a different configuration, needs ``--overwrite``,
    which removes the run's outputs (:data:`RUN_OUTPUTS`) and temporaries;
    a user's other files in the directory stay.
    """
    output_dir = config.run.output_dir
    flags_path = os.path.join(output_dir, "flags.json")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir={output_dir} is a file, not a directory")
    if os.path.islink(output_dir) and not os.path.exists(output_dir):
        raise UsageError(f"--output_dir={output_dir} is a symbolic link to "
                         f"{os.readlink(output_dir)}, which does not exist")
    try:
        # Listed before flags.json is read: a launch beside this one may write
        # flags.json in between (in one rename), and then it is read as a run's.
        names = _files_in(output_dir) if os.path.isdir(output_dir) else []
        earlier = _earlier_flags(flags_path)
    except OSError as error:
        raise UsageError(f"--output_dir={output_dir} cannot be read ({error.strerror})") from None
    if names and earlier is None:   # without a run's flags.json, all of it is a user's
        listed = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise UsageError(f"--output_dir={output_dir} is not empty and holds no sgan_keras run "
                         f"({listed}); choose another directory")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=WRITE_CHECK_PREFIX):
            pass
    except OSError as error:
        raise UsageError(f"--output_dir={output_dir} cannot be written ({error.strerror})") from None
    lock_path = os.path.join(output_dir, lock_lib.LOCK_FILE)
    if os.path.lexists(lock_path) and not os.path.isfile(lock_path):
        # A directory, a named pipe or a broken link: the lock's open or pid read
        # failed on it in a traceback.
        raise UsageError(f"{lock_path} is not a regular file, where the run keeps its lock "
                         "file; move it away")
    with faults.writing(lock_path):
        run_lock = lock_lib.RunLock(output_dir).acquire()
    try:
        try:
            with faults.writing(output_dir):
                _remove_run_outputs(output_dir, temporaries_only=not config.run.overwrite)
        except faults.WriteError as error:
            if not config.run.overwrite:
                raise
            raise OverwriteIncomplete(
                f"--overwrite removed only part of the earlier run in {output_dir} "
                f"({faults.first_line(error)}); its flags.json stays, so the same command "
                "removes the rest once the directory is fixed") from None
        if earlier is not None and not config.run.overwrite:
            _check_same_run(output_dir, earlier, config)
        _check_output_kinds(output_dir)
        faults.write_json(flags_path, config.to_dict())
    except BaseException:
        run_lock.release()
        raise
    return run_lock


def _check_output_kinds(output_dir):
    """Refuses a file where the run keeps a directory of :data:`RUN_OUTPUTS`,
    or a directory where it keeps a file (moved there by hand)."""
    for name in RUN_OUTPUTS:
        path = os.path.join(output_dir, name)
        if os.path.lexists(path) and os.path.isdir(path) != (name in RUN_DIRECTORIES):
            found, kept = (("a directory", "file") if os.path.isdir(path)
                           else ("a file", "directory"))
            raise UsageError(f"{path} is {found}, where the run keeps its {name} {kept}; "
                             "move it away")


def _files_in(output_dir):
    """The files of ``output_dir`` but the lock and temporaries. A launch on
    the same new directory may hold, for a moment, the lock, its write check
    and the temporary of its ``flags.json`` before that file exists: those
    are not a user's files (the lock then refuses the second launch)."""
    return [name for name in os.listdir(output_dir)
            if name != lock_lib.LOCK_FILE and not faults.is_temporary(name)]


def _earlier_flags(flags_path):
    """The ``flags.json`` an earlier run of this package wrote at ``flags_path``
    (a mapping with a ``preset`` and a ``dataset``), or ``None`` when there is
    none: no file, or one this package did not write (another tool's
    ``flags.json``, or not JSON), which then counts as a user's file."""
    try:
        with open(flags_path) as file:
            earlier = json.load(file)
    except (FileNotFoundError, ValueError):   # ValueError: not JSON, or not text
        return None
    if not isinstance(earlier, dict) or not {"preset", "dataset"} <= set(earlier):
        return None
    return earlier


def _check_same_run(output_dir, earlier, config):
    """Refuses a directory holding a finished run, or another configuration's
    training (one that stopped before its first step, e.g. on a data error,
    left only its flags: they are replaced), and one a newer version of the
    package trained. ``earlier`` is its ``flags.json``."""
    trained = any(os.path.exists(os.path.join(output_dir, name))
                  for name in ("metrics.csv", "checkpoint", "export"))
    newer = config_lib.fields_of_a_newer_version(earlier)
    if newer and trained:
        # Resumed here, the run would go on without what those fields chose,
        # and its flags.json, rewritten, would lose them.
        raise UsageError(f"--output_dir={output_dir} holds a run of a newer sgan_keras (its "
                         f"flags.json has {', '.join(newer)}, which this version does not "
                         "know); resume it with that version, or pass --overwrite to remove "
                         "that run's outputs and train this one there")
    changed = changed_options(earlier, config)
    if changed and trained:
        labels = ", ".join(config_lib.OPTIONS[name].label() for name in changed)
        # Another --output_dir first: two folders of one name (folder:/a/pets and
        # folder:/b/pets) share a default one, and --overwrite removes that run.
        raise UsageError(f"--output_dir={output_dir} holds a run with other flags ({labels}); "
                         "pass another --output_dir, or --overwrite to remove that run's "
                         "outputs and train this one there")
    if is_finished(output_dir, config):
        raise UsageError(f"--output_dir={output_dir} holds a finished run; "
                         "pass --overwrite to train it again")


def is_finished(output_dir, config):
    """Whether ``output_dir`` holds a run that reached its end: its export and,
    with ``--tflite``, the export's scores, written last. A run stopped between
    the two resumes at its last step: it exports and scores again."""
    export_dir = os.path.join(output_dir, "export")
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        return False
    return not config.run.tflite or os.path.exists(os.path.join(export_dir, "accuracy.json"))


def changed_options(earlier, config):
    """The fields, run-only ones aside, in which an earlier run's ``flags.json``
    (``earlier``) differs from ``config``. A field an older ``flags.json`` lacks
    had no flag then: the run had its preset's value, or the one
    ``config.VALUES_BEFORE_ADDED`` lists."""
    earlier = {**config_lib.VALUES_BEFORE_ADDED, **earlier}
    if config.preset in presets_lib.PRESETS:
        earlier = {**presets_lib.defaults_of(config).to_dict(), **earlier}
    earlier = {**earlier, "generator_activation": config_lib.source_activation_as_unset(
        config.model.architecture, earlier.get("generator_activation", ""))}
    current = config.to_dict()
    return sorted(name for name, option in config_lib.OPTIONS.items()
                  if not option.run_only and option.acts_in(config)
                  and not _same_value(name, earlier.get(name), current[name]))


def _same_value(name, earlier, current):
    """Whether a field's value is unchanged; the data directory, and a
    ``folder:`` data set's, by the directory it names (``../data``, ``../data/``
    and ``/home/me/data`` may be one)."""
    if earlier == current:
        return True
    folder = "folder:"
    if name == "dataset" and str(earlier).startswith(folder) and current.startswith(folder):
        name, earlier, current = "data_dir", earlier[len(folder):], current[len(folder):]
    if name == "data_dir" and earlier and current:
        return os.path.realpath(os.path.expanduser(earlier)) == os.path.realpath(
            os.path.expanduser(current))
    return False


def _remove_run_outputs(directory, temporaries_only=False):
    """Removes what a run wrote in ``directory`` (:data:`RUN_OUTPUTS` and
    temporaries); the lock and a user's files stay. Called under the lock,
    so every temporary there is stale (a killed run's half-written file or
    export), but for another launch's write check, which it is about to
    delete itself. ``temporaries_only``: the stale temporaries alone."""
    # flags.json last: stopped part way (a file it cannot delete, a signal),
    # the directory still holds a run's flags.json, so --overwrite can finish.
    for name in sorted(os.listdir(directory), key=lambda name: name == "flags.json"):
        stale = faults.is_temporary(name) and not name.startswith(WRITE_CHECK_PREFIX)
        if not (stale or (name in RUN_OUTPUTS and not temporaries_only)):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


class StopSignals:
    """While active, SIGTERM, SIGINT and SIGHUP ask training to stop at the next
    step boundary. SIGHUP is a closed terminal (an ssh session dropped): it
    killed the run with everything since its last checkpoint. SIGHUP or
    SIGINT ignored when training starts (``nohup``; a background job of a
    non-interactive shell) stays ignored.

    The handler (Python's ``signal`` module) only records the first signal's
    name in :attr:`received`, which :class:`callbacks_lib.SaveCheckpoint`
    polls after every step; it also restores the default actions, so a
    second signal ends the process at once (the run then resumes from its
    last checkpoint, as after ``kill -9``). Under ``MultiWorkerMirroredStrategy``
    (``sigint_as_sigterm``), TensorFlow's ``PreemptionCheckpointHandler`` owns
    SIGTERM; SIGINT is re-sent to the process as SIGTERM for it.
    """

    def __init__(self, sigint_as_sigterm=False):
        self.received = None
        self.entered = False    # the handlers are (or were) this object's
        self._sigint_as_sigterm = sigint_as_sigterm
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            # Python lets the main thread alone set handlers (train() in a thread
            # raised ValueError), and delivers signals to it: they act as there.
            self.entered = True
            return self
        signals = (signal.SIGINT,) if self._sigint_as_sigterm else (signal.SIGTERM, signal.SIGINT)
        self._previous = faults.take_over_signals((*signals, signal.SIGHUP), self._handle)
        self.entered = True
        return self

    def __exit__(self, *exc_info):
        faults.restore_signals(self._previous)

    def requested(self):
        """The name of the signal received (``"SIGTERM"``), or ``None``."""
        return self.received

    def _handle(self, number, frame):
        if self._sigint_as_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.received = signal.Signals(number).name
        for other in self._previous:
            signal.signal(other, signal.SIG_DFL)


def train(config):
    """Runs the training ``config`` describes; returns the output directory.

    Faults raise the errors of :data:`BAD_INPUT`, :data:`LOCKED`, :data:`OUTPUT_DIR_LOST`,
    :data:`NON_FINITE`, :data:`WRITE_FAILED`, :data:`INTERRUPTED`,
    :data:`WORKER_LOST` and :data:`OUT_OF_MEMORY`, after the lock is released
    and the signal handlers are restored; a ``KeyboardInterrupt`` before
    training took the signals over is :class:`InterruptedBeforeTraining`.
    """
    if not isinstance(config, config_lib.Config):   # e.g. a path, or a preset's name
        raise TypeError(f"train() takes a sgan_keras.Config (e.g. presets.resolve({{...}})), "
                        f"got {type(config).__name__} {config!r:.60}")
    stop = StopSignals(sigint_as_sigterm=config.run.strategy == "multi_worker")
    try:
        return _prepare_and_train(config, stop)
    except KeyboardInterrupt:
        if not stop.entered:
            raise InterruptedBeforeTraining() from None
        raise


def _prepare_and_train(config, stop):
    """:func:`train` of a ``config`` of the right type; ``stop`` its
    :class:`StopSignals`, entered once the output directory is ours."""
    run, training = config.run, config.training
    if run.output_dir is None:   # the CLI's default is runs/<run name> (train.py)
        raise config_lib.ConfigError("--output_dir (config.run.output_dir) is not set")
    if not config.model.architecture:   # networks given in code go to SGAN(...) and fit()
        raise config_lib.ConfigError("train() needs config.model.architecture (set by a "
                                     "--preset); pass networks to SGAN(...) and call fit()")
    if run.virtual_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * run.virtual_cpus)
        except RuntimeError:   # TensorFlow fixes its devices when its runtime starts
            raise config_lib.ConfigError(
                f"--virtual_cpus={run.virtual_cpus} cannot split the CPU: this process's "
                f"TensorFlow runtime already started with "
                f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); call train() "
                "before any TensorFlow op (e.g. in a new notebook kernel)") from None
    if run.deterministic:
        tf.config.experimental.enable_op_determinism()
    if run.strategy == "multi_worker":
        distribute.check_tf_config(os.environ.get("TF_CONFIG"))   # a bad one waits for nothing
        print("Waiting for every worker of TF_CONFIG's cluster to start (Ctrl-C ends this "
              "process at once until they have)...", flush=True)
    strategy = distribute.make_strategy(run.strategy)
    if training.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size={training.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas of --strategy={run.strategy}")
    if run.jit_compile == "true" and strategy.num_replicas_in_sync > 1:
        # XLA reaches only its own replica's copy of a variable (the optimizer
        # steps failed with "Trying to access resource ... located in device");
        # Keras' "auto" turns XLA off under tf.distribute for the same reason.
        raise UsageError(f"--jit_compile=true cannot compile the step of the "
                         f"{strategy.num_replicas_in_sync} replicas of --strategy={run.strategy} "
                         "(XLA reaches one device's variables); use --jit_compile=auto or false")
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    data_lib.check_paths(config.data.dataset, config.data.data_dir)   # before --overwrite
    try:
        with contextlib.ExitStack() as cleanup:
            # Before the chief writes: every worker must run the same training.
            distribute.check_same_flags(strategy, _shared_flags(config))
            if distribute.is_chief(strategy):
                run_lock = prepare_output_dir(config)
                cleanup.callback(run_lock.release)
                if run_lock.stale_pid:
                    print(f"Taking over {run.output_dir}: its lock names pid "
                          f"{run_lock.stale_pid}, which ended without releasing it (killed or "
                          "crashed).", flush=True)
                output_dir = run.output_dir
                check_output_dir = run_lock.check_in_place
            else:
                # Non-chief workers of a multi-worker run write to a throw-away directory.
                output_dir = tempfile.mkdtemp(prefix="sgan_worker_")
                cleanup.callback(shutil.rmtree, output_dir, ignore_errors=True)
                check_output_dir = None
            cleanup.enter_context(stop)
            _train(config, strategy, output_dir, stop, check_output_dir)
    except tf.errors.UnavailableError:
        if not multi_worker:
            raise
        raise distribute.WorkerLostError(
            "lost another worker of --strategy=multi_worker: it stopped (its log says why) or "
            "the network to it failed; run the same command on every worker to resume"
        ) from None
    except tf.errors.ResourceExhaustedError as error:
        allocation = out_of_memory_allocation(error)
        if allocation is None:   # not the allocator's (a full disk is a WriteError by now)
            raise
        raise OutOfMemoryError(
            f"out of memory ({allocation}) with --batch_size={training.batch_size} and "
            f"--eval_batch_size={run.eval_batch_size}: training stopped, earlier checkpoints "
            "are kept; the same command with a smaller --eval_batch_size resumes, a smaller "
            "--batch_size trains anew in another --output_dir") from None
    return run.output_dir


def _shared_flags(config):
    """The options every worker of a multi-worker run must share, by flag: those
    that change what is computed and the two that schedule collective ops (the
    evaluation's batches, the saves); not the data's paths, which may differ
    from machine to machine."""
    flags = {}
    for name, value in config.to_dict().items():
        option = config_lib.OPTIONS[name]
        if name == "data_dir" or (option.run_only and name not in (
                "eval_batch_size", "checkpoint_every_steps")):
            continue
        if name == "dataset" and str(value).startswith("folder:"):
            value = "folder:"
        flags[option.label()] = value
    return flags


def out_of_memory_allocation(error):
    """The allocation TensorFlow's allocator refused, as its message gives it
    ("OOM when allocating tensor with shape[...]", "Out of memory while trying
    to allocate 49.00MiB"), or ``None`` if ``error`` is no allocator's."""
    match = re.search(r"OOM when allocating tensor with shape\s*\[[^\]]*\]"
                      r"|Out of memory while trying to allocate [\d.]+\s*\w+", str(error))
    return match.group(0) if match else None


def _train(config, strategy, output_dir, stop, check_output_dir):
    """:func:`train` once the output directory is ours. ``output_dir`` is this
    worker's (the run's on the chief); ``stop`` the :class:`StopSignals`;
    ``check_output_dir`` the chief's ``RunLock.check_in_place`` (else ``None``),
    called before each write."""
    training = config.training
    chief = output_dir == config.run.output_dir
    keras.utils.set_random_seed(config.seed)
    data = data_lib.load_dataset(
        config.data.dataset, config.data.labels, seed=config.seed,
        data_dir=config.data.data_dir, pixel_range=config.model.input_pixel_range(),
        include_extra=config.data.include_extra, label_selection=config.data.label_selection,
        image_shape=choices_lib.NATIVE_IMAGE_SHAPES[config.model.architecture],
        convert_channels=config.data.convert_channels, train_split=config.data.train_split,
        test_split=config.data.test_split, unlabeled_pool=config.data.unlabeled_pool,
        test_fraction=config.data.test_fraction)
    _check_partial_batches(config, data, strategy.num_replicas_in_sync)
    source_batch, tested, testing_line = _tested_per_evaluation(config, len(data.test_images))
    _check_eval_batches(config.run, tested, strategy.num_replicas_in_sync)
    for note in data.notes:
        print(note, flush=True)
    if testing_line:
        print(testing_line, flush=True)
    if chief:
        faults.write_json(os.path.join(output_dir, "labeled_indices.json"),
                          [int(i) for i in data.labeled_indices])
        faults.write_json(os.path.join(output_dir, "class_names.json"), list(data.class_names))

    with strategy.scope():
        model = SGAN.for_config(config, num_classes=data.num_classes)
        model.compile(jit_compile=config.run.keras_jit_compile)
    precision_line = config.model.precision_line(distribute.bfloat16_matrix_units())
    for line in (precision_line, training.schedule_line()):
        if line and chief:
            print(line, flush=True)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and chief:
        print(f"--strategy={config.run.strategy}: {type(strategy).__name__}, {replicas} replicas, "
              f"{training.batch_size // replicas} images each a step", flush=True)
    # Every worker restores from the chief's checkpoints (a shared file system),
    # once the chief has prepared the directory (the gather is a barrier), and
    # all must restore the same step.
    distribute.each_workers_value(strategy, 0)
    # An epoch's seconds at each save, so that a resumed epoch's metrics.csv
    # row counts the earlier sessions' time (callbacks_lib.SaveCheckpoint).
    epoch_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    store = checkpoint.CheckpointStore(
        os.path.join(config.run.output_dir, "checkpoint"), model.state_variables(),
        optional={"epoch_seconds": epoch_seconds},
        write_directory=os.path.join(output_dir, "checkpoint"))
    # A restore runs collective ops, which a worker without checkpoints (no
    # shared file system) would not join: compare the newest steps first.
    distribute.check_same_step(strategy, store.newest_step(), config.run.output_dir)
    restored = _restore(store, training.steps_per_epoch, os.path.join(output_dir, "metrics.csv"))
    step = restored.step if restored else 0
    distribute.check_same_step(strategy, step, config.run.output_dir)
    if step:
        model.weight_norm_initialized = True
    elif training.init_images:  # else fit() initializes on the first training batch
        try:
            init_batch = data.init_batch(training.init_images, training.init_from)
        except MemoryError:   # NumPy's, for the images: a huge --init_images ended in a traceback
            raise OutOfMemoryError(
                f"out of memory for the {training.init_images} images of --init_images "
                "(improved-gan: 500): nothing trained yet; the same command with fewer "
                "starts the run") from None
        model.initialize_weight_norm(init_batch)
    # A checkpoint inside an epoch also holds that epoch's running metrics.
    restore_metrics = ((lambda: store.read(restored.path))
                       if step % training.steps_per_epoch else None)
    earlier_seconds = float(epoch_seconds.numpy()) if restore_metrics else 0.0

    step_counter = model.d_optimizer.iterations
    if stop.received:  # before any training step: nothing new to save
        raise callbacks_lib.TrainingInterrupted(stop.received, step, path=None)
    with contextlib.ExitStack() as context:
        preemption = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            preemption = _preemption_handler(strategy, store, step_counter,
                                             context.enter_context(tempfile.TemporaryDirectory()))
        for index, (initial_epoch, epochs, steps, start_step) in enumerate(_fit_calls(
                step, training.steps_per_epoch, training.epochs)):
            train_data = data.training_dataset(training.batch_size, training.label_batching,
                                               config.supervised_only, start_step=start_step,
                                               epoch_steps=training.epoch_steps,
                                               with_replacement=training.with_replacement,
                                               partial_batches=training.partial_batches,
                                               shuffle_buffer=training.buffer_size)
            # The epoch picks its test images' reshuffle: set as it begins,
            # read when its evaluation iterates the test set.
            evaluation = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
            test_data = data.test_dataset(config.run.eval_batch_size, config.data.test_batches,
                                          source_batch, evaluation)
            callbacks = _callbacks(config, output_dir, initial_epoch, store, step_counter, stop,
                                   preemption, check_output_dir,
                                   restore_metrics=restore_metrics if index == 0 else None,
                                   epoch_seconds=epoch_seconds,
                                   earlier_seconds=earlier_seconds if index == 0 else 0.0)
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs, evaluation=evaluation: evaluation.assign(
                    epoch)))
            # Each output names itself when it cannot be written; this names
            # the rest: TensorBoard's event files, which TensorFlow writes (a
            # resumed run creates its first validation file at an epoch end).
            with faults.writing(f"the outputs in {output_dir}", name_tensorflow_file=True), \
                    _named_if_output_dir_lost(check_output_dir):
                model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps,
                          validation_data=test_data,
                          callbacks=callbacks, verbose=callbacks_lib.progress_verbosity(),
                          shuffle=False)
    # A signal after the last step stops here, or between the export and its
    # scores: the run is not finished, and the same command exports again.
    last_step = training.epochs * training.steps_per_epoch
    _stop_if_requested(stop, last_step)
    # All workers export the SavedModel (reading distributed variables may need
    # every worker); the non-chief ones into their throw-away directory. The
    # TFLite files are converted from the written SavedModel, on the chief only.
    export_dir = os.path.join(output_dir, "export")
    representative = None
    if config.run.tflite and chief:   # int8 calibration: unlabeled training images, free here
        picked = np.random.default_rng([config.seed, 13]).permutation(
            len(data.train_images))[:TFLITE_CALIBRATION_IMAGES]
        representative = data.train_images[np.sort(picked)]
    with faults.writing(export_dir):
        if check_output_dir:
            check_output_dir()
        export.export_classifier(model.classifier(), export_dir, image_shape=data.image_shape,
                                 pixel_range=config.model.input_pixel_range(), overwrite=True,
                                 class_names=data.class_names,
                                 representative_images=representative)
    if config.run.tflite and chief:
        _stop_if_requested(stop, last_step)
        check_output_dir()     # the chief's
        _score_exports(export_dir, data, model, config.run.eval_batch_size)


def _check_partial_batches(config, data, replicas):
    """Refuses ``--data_order=per_shuffle`` where the last batch of a shuffle,
    ``N mod --batch_size`` images of the stream's ``N``, is not a multiple of
    the replicas: the step refuses a batch they cannot share equally, which
    would stop the run there with a traceback."""
    training = config.training
    if not training.partial_batches or replicas == 1:
        return
    count = len(data.labeled_indices) if config.supervised_only else len(data.train_images)
    last = count % training.batch_size
    if last % replicas:
        raise UsageError(f"--data_order=per_shuffle ends each shuffle of the {count} images "
                         f"with a batch of {last}, which the {replicas} replicas of "
                         f"--strategy={config.run.strategy} cannot share equally: choose a "
                         f"--batch_size that leaves a multiple of {replicas}, or another "
                         "--data_order")


def _tested_per_evaluation(config, test_images):
    """``(source_batch, places, line)`` of ``--test_batches``: the source's
    test batch (the training batch; 0 for ``all``), how many places of the
    ``test_images`` an evaluation scores, and a line that says so ("" for all)."""
    order = config.data.test_batches
    if order == "all":
        return 0, test_images, ""
    batch = config.training.batch_size
    batches = test_images // batch
    if not batches:
        raise UsageError(f"--test_batches={order} tests on batches of --batch_size={batch}, "
                         f"and the test split has {test_images} images")
    if order == "reshuffled_full":
        line = (f"Testing each epoch on {batches * batch:,} of the {test_images:,} test images: "
                f"{batches:,} batches of {batch} of a fresh reshuffle (--test_batches="
                "reshuffled_full); export/accuracy.json scores every one.")
    else:
        line = (f"Testing each epoch on the next {batches:,} batches of {batch} of a repeating "
                f"stream of the {test_images:,} test images, the last of each pass of "
                f"{test_images % batch or batch}, scored as the mean of the batches' scores "
                "(--test_batches=stream); export/accuracy.json scores every image.")
    return batch, batches * batch, line


def _check_eval_batches(run, test_images, replicas):
    """Refuses an ``--eval_batch_size`` that leaves a test batch, the last one
    or every one, smaller than the replica count: a replica then gets no
    image, and TensorFlow's CPU convolution of an empty batch returns its
    input (a traceback: "input depth must be evenly divisible by filter depth")."""
    batch = run.eval_batch_size
    smallest = min(batch, test_images, test_images % batch or batch)
    if replicas > 1 and smallest < replicas:
        raise UsageError(f"--eval_batch_size={batch} leaves a test batch of {smallest} of the "
                         f"{test_images} test images, fewer than the {replicas} replicas of "
                         f"--strategy={run.strategy}: choose one that leaves every batch, the "
                         f"last too, at least {replicas}")


@contextlib.contextmanager
def _named_if_output_dir_lost(check_output_dir):
    """A write that fails because ``--output_dir`` went while it ran (between
    two checks) raises ``check_output_dir``'s :class:`lock_lib.LockLostError`."""
    try:
        yield
    except (OSError, tf.errors.OpError):
        if check_output_dir:
            check_output_dir()
        raise


def _stop_if_requested(stop, step):
    """Raises :class:`callbacks_lib.TrainingInterrupted` if a signal came
    (``stop``: the :class:`StopSignals`); its checkpoint is already saved."""
    if stop.received:
        raise callbacks_lib.TrainingInterrupted(stop.received, step, path=None)


def _score_exports(export_dir, data, model, batch_size):
    """Test accuracy of the trained Keras model (in its training precision),
    of the exported SavedModel (float32) and of both TFLite files, printed and
    written to ``export/accuracy.json``."""
    images, labels = data.test_images, data.test_labels
    # Direct calls, not predict(): under MultiWorkerMirroredStrategy predict()
    # gathers across the workers, and only the chief scores.
    class_ids = np.concatenate([
        np.argmax(model(data.scale(images[start:start + batch_size]), training=False), -1)
        for start in range(0, len(images), batch_size)])
    scores = {"keras": float(np.mean(class_ids == labels))}
    _, class_ids = export.saved_model_classify(export_dir, images, batch_size)
    scores["saved_model"] = float(np.mean(class_ids == labels))
    for name, file_name in (("tflite_float", export.TFLITE_FLOAT),
                            ("tflite_int8", export.TFLITE_INT8)):
        _, class_ids = export.tflite_classify(os.path.join(export_dir, file_name), images,
                                              batch_size)
        scores[name] = float(np.mean(class_ids == labels))
    faults.write_json(os.path.join(export_dir, "accuracy.json"), scores)
    print("Test accuracy of the export: " + ", ".join(
        f"{name} {100 * value:.2f}%" for name, value in scores.items()), flush=True)


def _restore(store, steps_per_epoch, metrics_path):
    """Restores the newest readable checkpoint, saying what it does; returns
    the :class:`checkpoint.Restored` or ``None``."""
    restored = store.restore()
    if restored is None:
        rows = callbacks_lib.read_metrics_csv(metrics_path) if store.is_chief else []
        if rows:
            print(f"No checkpoint in {store.directory}: starting from step 0 (metrics.csv's "
                  f"{len(rows)} rows are dropped).", flush=True)
        return None
    for path, reason in restored.unreadable:
        aside = (f"set aside as {checkpoint.UNREADABLE_PREFIX}{os.path.basename(path)}"
                 if path in restored.set_aside else "skipped")
        print(f"Checkpoint {path} cannot be read ({reason}): {aside}; falling back to "
              f"{os.path.basename(restored.path)}.", flush=True)
    epoch, done = divmod(restored.step, steps_per_epoch)
    if done:
        print(f"Resuming from step {restored.step}: epoch {epoch + 1}, after {done} of its "
              f"{steps_per_epoch} steps.", flush=True)
    else:
        print(f"Resuming from the end of epoch {epoch}.", flush=True)
    return restored


def _fit_calls(step, steps_per_epoch, epochs):
    """``(initial_epoch, epochs, steps_per_epoch, start_step)`` of the ``fit()``
    calls that train from ``step`` to the end.

    Keras runs the same number of steps in every epoch of one ``fit()`` call,
    so an epoch resumed after ``done`` of its steps is finished by a call of
    the remaining steps; a second call trains the epochs after it.
    """
    epoch, done = divmod(step, steps_per_epoch)
    calls = []
    if done:
        calls.append((epoch, epoch + 1, steps_per_epoch - done, step))
        epoch += 1
    if epoch < epochs:
        calls.append((epoch, epochs, steps_per_epoch, epoch * steps_per_epoch))
    return calls


def _callbacks(config, output_dir, initial_epoch, store, step_counter, stop, preemption,
               check_output_dir, restore_metrics, epoch_seconds=None, earlier_seconds=0.0):
    """The callbacks of one ``fit()`` call, in the order they must run;
    ``earlier_seconds``: what earlier sessions spent on its first epoch."""
    metrics_path = os.path.join(output_dir, "metrics.csv")
    callbacks = [callbacks_lib.StopOnNonFiniteLoss(step_counter)]  # first: before any save
    if check_output_dir:     # then: before an epoch end's writes
        callbacks.append(callbacks_lib.CheckOutputDirectory(check_output_dir, every_step=False))
    if restore_metrics is not None:
        callbacks.append(callbacks_lib.ResumeEpochMetrics(restore_metrics))
    metrics_csv = callbacks_lib.MetricsCSV(metrics_path, initial_epoch=initial_epoch,
                                           earlier_seconds=earlier_seconds)
    callbacks.append(metrics_csv)
    if callbacks_lib.progress_verbosity() == 0:    # prints the CSV row's seconds
        callbacks.append(callbacks_lib.EpochSummary(total_epochs=config.training.epochs,
                                                    metrics_csv=metrics_csv))
    else:   # in place of Keras' own bar, which would count a resumed epoch's fit() alone
        callbacks.append(callbacks_lib.RunProgbarLogger(total_epochs=config.training.epochs))
    callbacks += [
        callbacks_lib.CurvePlots(metrics_path, output_dir),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")),
    ]
    if not config.supervised_only:
        callbacks.append(callbacks_lib.SampleGrid(
            os.path.join(output_dir, "samples"), seed=config.seed,
            tensorboard_dir=os.path.join(output_dir, "tensorboard", "samples")))
    if check_output_dir:     # before each checkpoint (the epoch's writes above take a while)
        callbacks.append(callbacks_lib.CheckOutputDirectory(check_output_dir))
    # Last: an epoch's checkpoint is saved once its metrics.csv row is written.
    callbacks.append(callbacks_lib.SaveCheckpoint(
        store, step_counter, config.training.steps_per_epoch,
        every_steps=config.run.checkpoint_every_steps,
        stop_requested=None if preemption else stop.requested, preemption=preemption,
        epoch_seconds=epoch_seconds, earlier_seconds=earlier_seconds))
    return callbacks


def _preemption_handler(strategy, store, step_counter, scratch_dir):
    """TensorFlow's ``tf.distribute.experimental.PreemptionCheckpointHandler``
    for ``MultiWorkerMirroredStrategy``.

    When any worker gets SIGTERM, the handler agrees with every worker on a
    step, where each saves through ``store`` (its ``save_fn``) and stops (its
    ``exit_fn`` raises :class:`callbacks_lib.TrainingInterrupted`). The
    handler restores from the checkpoint manager it is given when it starts;
    it gets an empty one in ``scratch_dir`` and never writes to it (``save_fn``
    replaces its saving): ``store`` has restored the run already, with
    fall-back, and the handler's step count must start equal on every worker.
    TensorFlow documents the handler as doing nothing on GCP CPU VMs; there,
    SIGTERM ends the workers at once and a re-run resumes from the last
    checkpoint.
    """
    def save():
        store.save(int(step_counter.numpy()))

    def stop():
        step = int(step_counter.numpy())
        raise callbacks_lib.TrainingInterrupted("SIGTERM (preemption)", step,
                                                store.checkpoint_path(step))

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), scratch_dir, max_to_keep=1)
    return tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver, manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            save_fn=save, exit_fn=stop))
