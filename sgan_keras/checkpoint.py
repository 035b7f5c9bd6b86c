"""Resumable training state: TensorFlow checkpoints kept by ``tf.train.CheckpointManager``.

A checkpoint holds every variable of ``SGAN.state_variables()``: both
networks' weights (and D's weight average), the seed states of their dropout
and noise layers, every optimizer's slots and step counter (three under
``update_order="split"``), and the metric trackers (the running
sums of an unfinished epoch). They are saved as one ordered list,
``tf.train.Checkpoint(state=[...])``, rather than through the Keras object
graph: Keras 3 keeps the state of its ``SeedGenerator`` objects out of that
graph (``tf.train.Checkpoint(model=sgan)`` misses it), and replaying dropout
exactly needs it. The list has the same order for the same configuration; a
checkpoint of another model does not restore (other count or shapes).
Variables added since (``optional``: the trainer's ``epoch_seconds``) are saved
beside the list under their own names. A checkpoint written without them (by an
earlier version) still restores, setting them to zero; one holding values
beside the list that a store was not given restores too, without them.

:class:`CheckpointStore` names each checkpoint after the training step it
holds (``ckpt-<step>``) and keeps the newest two (``max_to_keep=2``).

**Durable.** TensorFlow writes a checkpoint's data and index files under
temporary names, then renames them. A write callback
(``tf.train.CheckpointOptions(experimental_write_callbacks=...)``, run after
the files are written and before the manager names the new checkpoint in its
``checkpoint`` state file) fsyncs them, so the state file never names a
checkpoint whose bytes are not on the disk; the state file and the directory
are fsynced after each save.

**Falls back.** Restoring takes the newest checkpoint that reads whole
(TensorFlow checks each tensor's CRC32C). Newer ones that cannot be read are
renamed ``unreadable-ckpt-<step>.*`` (kept, out of the manager's way) and
listed in :attr:`Restored.unreadable`. The manager's state file, when it cannot
be read (empty, not text, not a ``CheckpointState``), is listed there too and
kept as ``unreadable-checkpoint``; the checkpoints are then found by their
``ckpt-*.index`` files, and a new state file is written. When checkpoints exist
(or the state file says they did) but none reads, :class:`CheckpointError`: a
run never starts over silently. A full disk or an unwritable directory when a
restore sets one aside or rewrites the state file is a :class:`faults.WriteError`.

**Multi-worker** (TensorFlow tutorial "Multi-worker training with Keras"):
every worker saves, since reading distributed variables may need all of them;
the chief into the run's directory, the others into a directory of their own
(``write_directory``). Every worker restores from the chief's.
"""

import contextlib
import dataclasses
import glob
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from sgan_keras import faults

CHECKPOINT_NAME = "ckpt"
UNREADABLE_PREFIX = "unreadable-"
LEGACY_FILE = "checkpoint.npz"  # the hand-written format of earlier versions
_STATE_FILE = "checkpoint"      # tf.train.CheckpointManager's
_STEP = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)$")
_RESTORE_ERRORS = (tf.errors.OpError, ValueError, IndexError, AssertionError)


class CheckpointError(ValueError):
    """No checkpoint can be restored, though some exist; the message is one line."""


class NonFiniteStateError(ArithmeticError):
    """A save was refused because a variable holds NaN or infinity."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`CheckpointStore.restore` restored.

    ``unreadable``: ``(path, reason)`` of each newer checkpoint that could
    not be read, newest first, after the manager's state file ``checkpoint``
    when that could not be read; ``set_aside``: the paths among them whose
    files were renamed ``unreadable-*`` (by the chief only; a checkpoint whose
    files are all gone has none to rename).
    """

    step: int
    path: str
    unreadable: tuple = ()
    set_aside: tuple = ()


class CheckpointStore:
    """Saves and restores ``variables`` as ``directory/ckpt-<step>``.

    Args:
      directory: where checkpoints are read from (the chief's).
      variables: the variables to save, always in the same order.
      optional: ``{name: variable}`` saved beside ``variables``; a checkpoint
        without one (an earlier version's) restores it as zero.
      write_directory: where this process writes; default ``directory`` (the
        chief). Only the chief renames unreadable checkpoints.
      max_to_keep: how many checkpoints the manager keeps.
    """

    def __init__(self, directory, variables, *, optional=None, write_directory=None,
                 max_to_keep=2):
        self.directory = os.fspath(directory)
        self.write_directory = os.fspath(write_directory or directory)
        self.variables = list(variables)
        self.optional = dict(optional or {})
        self.max_to_keep = max_to_keep
        self._checkpoint = tf.train.Checkpoint(state=self.variables, **self.optional)
        # Created now, so that a restore can check that every saved value matched.
        self._checkpoint.save_counter  # noqa: B018
        self._manager = None  # made at the first save, after restore() tidied the directory
        self._last_step = None

    def checkpoint_path(self, step):
        """The path of the checkpoint of ``step`` in ``directory`` (the chief's)."""
        return os.path.join(self.directory, f"{CHECKPOINT_NAME}-{int(step)}")

    @property
    def is_chief(self):
        return self.write_directory == self.directory

    def newest_step(self):
        """The step of the newest checkpoint in ``directory`` (0 when none), as
        its files name it: nothing is read, so no collective op runs."""
        candidates = _candidates(self.directory, _read_state(self.directory)[0])
        return candidates[0][0] if candidates else 0

    def restore(self):
        """Restores the newest readable checkpoint: a :class:`Restored`, or
        ``None`` when ``directory`` holds no checkpoint.

        Raises :class:`CheckpointError` when checkpoints exist (or an
        unreadable state file says they did) but none can be read, or the
        directory holds only an old ``checkpoint.npz``; :class:`faults.WriteError`
        when the chief cannot set unreadable ones aside or rewrite the state
        file (a full disk, a read-only directory).
        """
        state, state_reason = _read_state(self.directory)
        candidates = _candidates(self.directory, state)
        if not candidates and os.path.exists(os.path.join(self.directory, LEGACY_FILE)):
            raise CheckpointError(f"{os.path.join(self.directory, LEGACY_FILE)} was written by "
                                  "an earlier sgan_keras (before TensorFlow checkpoints); pass "
                                  "--overwrite to start over")
        # An unreadable state file: the checkpoints are those on the disk.
        unreadable = [(os.path.join(self.directory, _STATE_FILE), state_reason)] \
            if state_reason else []
        for step, path in candidates:
            reason = self._read(path)
            if reason is not None:
                unreadable.append((path, reason))
                continue
            set_aside = ()
            if self.is_chief:  # a full disk or a read-only directory: faults.WriteError
                set_aside = tuple(bad_path for bad_path, _ in unreadable if _set_aside(bad_path))
                _write_state(self.directory, [
                    os.path.basename(name) for name_step, name in reversed(candidates)
                    if name_step <= step and os.path.exists(name + ".index")])
                _remove_leftovers(self.directory, step)
            self._last_step = step
            return Restored(step, path, tuple(unreadable), set_aside=set_aside)
        if unreadable:
            details = "; ".join(f"{os.path.basename(path)}: {reason}" for path, reason in unreadable)
            raise CheckpointError(f"no checkpoint in {self.directory} can be read ({details}); "
                                  "pass --overwrite to start over")
        return None

    def save(self, step):
        """Saves the variables as ``ckpt-<step>`` (once per step); returns its path.

        Raises :class:`NonFiniteStateError` (saving nothing) when a variable
        holds NaN or infinity, and :class:`faults.WriteError` when the disk is
        full or the directory unwritable (the earlier checkpoints stay intact).
        """
        step = int(step)
        path = os.path.join(self.write_directory, f"{CHECKPOINT_NAME}-{step}")
        if step == self._last_step:
            return path
        _check_finite(self.variables, step)
        options = tf.train.CheckpointOptions(experimental_write_callbacks=[_fsync_checkpoint])
        try:
            with faults.writing(path):
                os.makedirs(self.write_directory, exist_ok=True)
                if self._manager is None:
                    self._manager = tf.train.CheckpointManager(
                        self._checkpoint, self.write_directory, max_to_keep=self.max_to_keep,
                        checkpoint_name=CHECKPOINT_NAME)
                path = self._manager.save(checkpoint_number=step, options=options)
                faults.fsync(os.path.join(self.write_directory, _STATE_FILE))
                faults.fsync(self.write_directory)
        finally:
            # TensorFlow's staging directory, left behind by a failed write.
            shutil.rmtree(path + "_temp", ignore_errors=True)
        self._last_step = step
        return path

    def read(self, path):
        """Restores the checkpoint ``path`` (one :meth:`restore` chose);
        :class:`CheckpointError` if it cannot be read."""
        reason = self._read(path)
        if reason is not None:
            raise CheckpointError(f"checkpoint {path} cannot be read ({reason})")

    def _read(self, path):
        """Restores ``path``; ``None`` on success, else why it failed (one line)."""
        status = None
        try:
            status = self._checkpoint_like(path).read(path)
            status.assert_consumed()
        except tf.errors.UnavailableError:
            raise   # a collective op of the restore aborted (a worker lost), not the file
        except _RESTORE_ERRORS as error:
            if status is not None:
                status.expect_partial()  # no "unrestored values" warnings at exit
            return _reason(error)
        return None

    def _checkpoint_like(self, path):
        """A ``tf.train.Checkpoint`` of the values checkpoint ``path`` holds beside
        the list, as ``assert_consumed()`` needs: an ``optional`` variable it lacks
        is set to zero, a value this store was not given is read into a new variable."""
        reader = tf.train.load_checkpoint(path)
        beside = {}
        for key in reader.get_variable_to_shape_map():
            name, _, rest = key.partition("/")
            if rest == ".ATTRIBUTES/VARIABLE_VALUE" and name not in ("state", "save_counter"):
                beside[name] = self.optional.get(name)
                if beside[name] is None:
                    beside[name] = tf.Variable(reader.get_tensor(key))
        if beside.keys() == self.optional.keys():
            return self._checkpoint
        for name, variable in self.optional.items():
            if name not in beside:
                variable.assign(tf.zeros_like(variable))
        checkpoint = tf.train.Checkpoint(state=self.variables, **beside)
        checkpoint.save_counter  # noqa: B018
        return checkpoint


def _candidates(directory, state):
    """``(step, path)`` of every checkpoint in ``directory``, newest first: those
    with an index file, and those the state file ``state`` names (even if missing)."""
    names = {os.path.basename(path)[:-len(".index")]
             for path in glob.glob(os.path.join(glob.escape(directory), f"{CHECKPOINT_NAME}-*.index"))}
    if state is not None:
        names.update(os.path.basename(path) for path in state.all_model_checkpoint_paths)
    steps = {int(match.group(1)): name for name in names if (match := _STEP.match(name))}
    return [(step, os.path.join(directory, steps[step])) for step in sorted(steps, reverse=True)]


def _read_state(directory):
    """The manager's state file in ``directory`` as ``(state, None)``; ``(None,
    None)`` when there is none; ``(None, reason)`` when it cannot be read (empty,
    not UTF-8 text, not a ``CheckpointState``: a crash or a disk fault, or an
    edit), which TensorFlow either raises for or logs and ignores."""
    path = os.path.join(directory, _STATE_FILE)
    if not os.path.lexists(path):
        return None, None
    if not os.path.isfile(path):
        return None, "not a file"
    try:
        with _quiet_tensorflow_log():  # its "Checkpoint ignored" warnings
            state = tf.train.get_checkpoint_state(directory)
    except ValueError as error:  # empty ("Invalid checkpoint state"), or UnicodeDecodeError
        return None, _reason(error)
    if state is None:
        return None, "not a checkpoint state file"
    return state, None


def _set_aside(path):
    """Renames the files of checkpoint ``path`` to ``unreadable-<name>.*`` (the
    manager's state file itself to ``unreadable-checkpoint``); returns whether
    there were any. A full disk or an unwritable directory raises
    :class:`faults.WriteError`."""
    directory, name = os.path.split(path)
    files = [path] if name == _STATE_FILE else glob.glob(glob.escape(path) + ".*")
    for file in files:
        target = os.path.join(directory, UNREADABLE_PREFIX + os.path.basename(file))
        with faults.writing(target):
            os.replace(file, target)
    return bool(files)


def _remove_leftovers(directory, step):
    """Removes what a run killed while saving left in ``directory``, which the
    state file no longer names, so the manager never deletes it: the data files
    of a checkpoint older than ``step`` whose index is gone (the manager deletes
    a checkpoint's index first), and TensorFlow's staging directories
    (``ckpt-<n>_temp``). Each is as large as a checkpoint. One that cannot be
    removed stays."""
    pattern = os.path.join(glob.escape(directory), f"{CHECKPOINT_NAME}-*")
    for path in glob.glob(pattern + "_temp"):
        shutil.rmtree(path, ignore_errors=True)
    for path in glob.glob(pattern + ".data-*"):
        prefix = path[:path.rindex(".data-")]
        match = _STEP.match(os.path.basename(prefix))
        if match and int(match.group(1)) < step and not os.path.exists(prefix + ".index"):
            with contextlib.suppress(OSError):
                os.remove(path)


def _write_state(directory, names):
    """Makes the manager's state file list ``names`` (oldest first), so that
    the manager keeps and deletes what is on the disk; nothing if it does.
    A full disk or an unwritable directory raises :class:`faults.WriteError`."""
    state, _ = _read_state(directory)  # one that cannot be read is rewritten
    if not names or (state is not None and [
            os.path.basename(path) for path in state.all_model_checkpoint_paths] == names):
        return
    # The state file lists timestamps too: the manager deletes only checkpoints
    # newer than last_preserved_timestamp (older ones count as kept for good).
    times = [os.path.getmtime(os.path.join(directory, name + ".index")) for name in names]
    # The writer takes names relative to the working directory when ``directory``
    # is relative (it stores them relative to ``directory``), bare when absolute.
    paths = names if os.path.isabs(directory) else [os.path.join(directory, n) for n in names]
    path = os.path.join(directory, _STATE_FILE)
    # tf.compat.v1's writer of the state file (atomic); its deprecation notice
    # (use CheckpointManager, which has no call for this) is kept out of the log.
    with faults.writing(path), _quiet_tensorflow_log():
        tf.compat.v1.train.update_checkpoint_state(
            directory, paths[-1], all_model_checkpoint_paths=paths,
            all_model_checkpoint_timestamps=times, last_preserved_timestamp=min(times) - 1)
        faults.fsync(path)


@contextlib.contextmanager
def _quiet_tensorflow_log():
    """Keeps TensorFlow's Python log to errors in the block."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_finite(variables, step):
    for variable in variables:
        # TensorFlow's test, not NumPy's: a bfloat16 value (ml_dtypes) is no np.floating.
        if not tf.as_dtype(variable.dtype).is_floating:
            continue
        value = np.asarray(variable.numpy())
        if not np.isfinite(value if value.dtype.kind == "f" else value.astype(np.float32)).all():
            name = getattr(variable, "path", variable.name)
            raise NonFiniteStateError(f"{name} holds NaN or infinity at step {step} (not saved)")


def _fsync_checkpoint(save_path):
    """Forces a just-written checkpoint's files and their directory to the disk."""
    for file in glob.glob(glob.escape(save_path) + ".*"):
        faults.fsync(file)
    faults.fsync(os.path.dirname(save_path))


def _reason(error):
    """``Type: first line`` of an error (``faults.first_line``: without
    TensorFlow's ``{{function_node ...}}`` tag), or ``Type`` if it has no message."""
    name, text = type(error).__name__, faults.first_line(error)
    return name if text == name else f"{name}: {text[:160]}"
