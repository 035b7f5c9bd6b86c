"""Writing outputs safely: whole files or nothing, and failures as one-line errors.

An ``OSError`` whose errno says that the disk is full or the file cannot be
written (``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EROFS``, ``EACCES``, ``EPERM``),
or a TensorFlow ``OpError`` carrying one of those reasons (TensorFlow's file
system reports ``ENOSPC`` as ``ResourceExhaustedError`` and ``EROFS`` as
``PermissionDeniedError``, with the ``strerror`` text in the message), raised
while an output is written becomes a :class:`WriteError` that names the output.
Any other error keeps its type and traceback.

Every file the package writes goes through :func:`replace_atomically` (a
temporary sibling, fsynced, then renamed over the file); checkpoints through
``tf.train.CheckpointManager`` (``checkpoint.py``) and the export through a
renamed directory (``export.py``). The exceptions: ``run.lock``, written in
place because the lock is held on that very file (``lock.py``), and
TensorBoard's event files, which TensorFlow's summary writers append to as
training goes.
A failed write leaves the earlier version in place. TensorFlow's own
``atomic_write_string_to_file`` is not public API and does not fsync, hence
the helper here.

This module does not import TensorFlow: a TensorFlow error can only be raised
once something else has imported it, so :func:`_tensorflow_errors` looks it up
in ``sys.modules``. Scripts that only write files (``experiments/run.py``)
then start without TensorFlow's seconds-long import.
"""

import atexit
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sys
import tempfile

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
TEMPORARY_MARK = ".tmp"   # in the name of a file being written: .<name>.tmp<pid>


def _tensorflow_errors():
    """TensorFlow's ``OpError`` class as a tuple when TensorFlow is imported, else ``()``."""
    tensorflow = sys.modules.get("tensorflow")
    return (tensorflow.errors.OpError,) if tensorflow is not None else ()


def first_line(error):
    """The first line of ``error``'s message (its type's name if it has none):
    the one line a fault or bad input is reported with. TensorFlow's op errors
    start with a ~100-character ``{{function_node ...}}`` tag, left out."""
    lines = str(error).strip().splitlines()
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0]) if lines else ""
    return line or type(error).__name__


class WriteError(OSError):
    """An output could not be written (disk full, read-only or not permitted); one line."""


def disk_reason(error):
    """The ``strerror`` text when ``error`` is a disk-full or unwritable-file
    failure, else ``None``."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return error.strerror or os.strerror(error.errno)
    if isinstance(error, _tensorflow_errors()):
        for code in DISK_ERRNOS:
            if os.strerror(code) in str(error.message):
                return os.strerror(code)
    return None


def tensorflow_file(error, reason):
    """The absolute path a TensorFlow file-system error's first line starts
    with, before ``; <reason>`` (``/run/tensorboard/validation/events...;
    Read-only file system [Op:CreateSummaryFileWriter]``), else ``None``."""
    if not isinstance(error, _tensorflow_errors()):
        return None
    match = re.match(rf"(/.*?); {re.escape(reason)}", first_line(error))
    return match.group(1) if match else None


@contextlib.contextmanager
def writing(what, name_tensorflow_file=False):
    """Turns a disk-full or unwritable-file error raised in the block into a
    :class:`WriteError` ``cannot write <what> (<reason>)``. With
    ``name_tensorflow_file``, for a block whose files TensorFlow writes
    itself (TensorBoard's event files), the line names the file a
    TensorFlow error names, where there is one, in place of ``what``."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, *_tensorflow_errors()) as error:
        reason = disk_reason(error)
        if reason is None:
            raise
        if name_tensorflow_file:
            what = tensorflow_file(error, reason) or what
        raise WriteError(f"cannot write {what} ({reason})") from None


def replace_atomically(path, write, mode="w"):
    """Replaces ``path`` in one step with what ``write(file)`` writes.

    ``write`` fills a temporary sibling of ``path`` (opened with ``mode``:
    text, UTF-8 whatever the locale, or binary), which is flushed to the
    disk (``fsync``) and renamed over ``path`` (``os.replace``, atomic on
    POSIX); the directory is fsynced too. A crash leaves the old version or
    the new one, never half a file. A full disk or an unwritable directory
    raises :class:`WriteError` and leaves ``path`` as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with writing(path):
            os.makedirs(directory, exist_ok=True)
            text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
            with open(temporary, mode, **text) as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            fsync(directory)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def is_temporary(name):
    """Whether the file ``name`` is one of this package's short-lived files,
    named with :data:`TEMPORARY_MARK`: the temporary of a
    :func:`replace_atomically` in progress (``.<name>.tmp<pid>``), an
    export's staging directory or the old export it replaces
    (``export.py``), or the output directory's write check
    (``trainer.prepare_output_dir``). One a killed run left behind is
    removed by the next run in that directory."""
    return name.startswith(".") and TEMPORARY_MARK in name


def write_text(path, text):
    """Writes ``text`` to ``path`` with :func:`replace_atomically`."""
    replace_atomically(path, lambda file: file.write(text))


def write_json(path, value):
    """Writes ``value`` as indented JSON (keys sorted) with :func:`replace_atomically`."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def fsync(path):
    """Forces the file or directory ``path`` to the disk. A directory the file
    system cannot sync (``EINVAL``, ``ENOTSUP``: some FUSE and network file
    systems) is left as it is: its entries are written, and the run stopped
    there with a traceback."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if not (error.errno in (errno.EINVAL, errno.ENOTSUP) and os.path.isdir(path)):
            raise
    finally:
        os.close(fd)


def fsync_tree(directory):
    """Forces every file and folder under ``directory``, and ``directory``
    itself, to the disk (for what TensorFlow's writers leave unsynced, such
    as a SavedModel)."""
    for root, _, files in os.walk(directory, topdown=False):
        for name in files:
            fsync(os.path.join(root, name))
        fsync(root)


def is_utf8(path):
    """Whether ``path`` is UTF-8 text: a name's bytes that are not arrive as
    lone surrogates (Python's surrogateescape), which TensorFlow refuses."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_name_encoding_hint():
    """``""``, or, when this Python decodes file names with another encoding
    than UTF-8 (the C locale with ``PYTHONUTF8=0``), what to change: a
    UTF-8 name then arrives as lone surrogates, and :func:`is_utf8` refuses
    it although its bytes are UTF-8."""
    encoding = sys.getfilesystemencoding()
    if encoding.lower().replace("-", "") == "utf8":
        return ""
    return (f" (this Python decodes file names as {encoding}: run it under a UTF-8 locale, "
            "e.g. LC_ALL=C.UTF-8, or with PYTHONUTF8=1)")


def printable(path):
    """``path`` for a message: the bytes of a name that is not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def point_at_devnull(fd, flags=os.O_WRONLY):
    """Makes descriptor ``fd`` read or write ``/dev/null`` from now on (a
    standard stream closed at launch, or whose pipe's reader has gone: the
    signal module's docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, flags)
    if devnull != fd:            # fd was closed, and the open took its number
        os.dup2(devnull, fd)
        os.close(devnull)


def lend_main_the_usage(usage):
    """Makes ``usage`` (a CLI module's docstring: its usage and exit statuses)
    ``__main__``'s docstring when it has none. absl's --help prints
    ``__main__``'s: the module's own under ``python -m``, but pip's console
    scripts (``sgan-train``) have none, so they printed a bare USAGE line."""
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:
        main_module.__doc__ = usage


def help_whose_reader_may_go(parse):
    """absl's flag parser ``parse`` (``app.parse_flags_with_usage``), for
    ``app.run(..., flags_parser=...)``: ``--help`` into a pipe whose reader
    has gone (``| head -3``) ends as absl ends a help, status 1, without a
    BrokenPipeError traceback. absl prints the help before ``main`` runs, so
    the CLIs' own handling of a gone reader is not in place yet."""
    def parse_flags(argv):
        try:
            try:
                return parse(argv)
            finally:
                sys.stdout.flush()   # the help's last lines: a gone reader is caught here
        except BrokenPipeError:
            point_at_devnull(sys.stdout.fileno())   # or Python's exit flush raises it again
            sys.exit(1)
    return parse_flags


def open_closed_standard_streams():
    """Opens ``/dev/null`` on each of descriptors 0, 1 and 2 that is closed
    (a launch with ``>&-`` or ``2>&-``, some daemons); call it before any file
    is opened.

    Otherwise the first files the run opens take those descriptors (run.lock,
    a TensorBoard event file), and what is written to standard output or
    error lands in them: TensorFlow's C++ log lines, written to descriptor 2,
    corrupt the event file's records. Python set ``sys.stdin``,
    ``sys.stdout`` or ``sys.stderr`` to ``None`` for a closed one; each gets
    its ``/dev/null``.
    """
    for fd, name, flags, mode in ((0, "stdin", os.O_RDONLY, "r"), (1, "stdout", os.O_WRONLY, "w"),
                                  (2, "stderr", os.O_WRONLY, "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        point_at_devnull(fd, flags)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))   # pylint: disable=consider-using-with


def no_temporary_directory():
    """Why no temporary directory can be had, or ``None`` when one can.

    Importing TensorFlow needs one (absl's test module, which it imports,
    asks ``tempfile``): when none of ``$TMPDIR``, ``/tmp``, ``/var/tmp``,
    ``/usr/tmp`` and the working directory takes a file (full, read-only: a
    container's read-only root file system), the import ends in a traceback.
    The CLIs check first and say this in one line.
    """
    try:
        tempfile.gettempdir()
    except FileNotFoundError as error:
        return (f"{error.strerror} (each is full, read-only or missing), and TensorFlow needs "
                "one: set TMPDIR to a writable directory")
    return None


def give_matplotlib_a_writable_directory():
    """Points ``MPLCONFIGDIR`` at a new temporary directory, removed at exit,
    when matplotlib's own configuration or cache directory
    (``$XDG_CONFIG_HOME`` or ``~/.config``, ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``matplotlib``) is not absolute or cannot be made or
    written: ``HOME`` read-only, unset or a file, as in some containers.
    Matplotlib would do the same, with two warning lines a run. Call it
    before matplotlib is imported; a set ``MPLCONFIGDIR`` is left alone."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    home = os.path.expanduser("~")      # "~" itself when HOME is unset and no passwd entry
    bases = (os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
             os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"))
    if all(os.path.isabs(base) and _writable_directory(os.path.join(base, "matplotlib"))
           for base in bases):
        return
    temporary = tempfile.mkdtemp(prefix="matplotlib-")
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = temporary


def _writable_directory(path):
    """Whether ``path`` is, or can be made, a directory this process may write."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def take_over_signals(numbers, handler):
    """Sets ``handler`` for each signal of ``numbers``; returns the handlers it
    replaced, for :func:`restore_signals`. SIGTERM is always taken; a SIGINT or
    SIGHUP ignored when the run started stays ignored: SIGHUP under ``nohup``,
    SIGINT in a background job of a non-interactive shell, so that shell's
    Ctrl-C is not the run's (Python leaves such a SIGINT ignored too)."""
    return {number: signal.signal(number, handler) for number in numbers
            if number == signal.SIGTERM or signal.getsignal(number) is not signal.SIG_IGN}


def restore_signals(previous):
    """Puts back the handlers :func:`take_over_signals` returned."""
    for number, handler in previous.items():
        signal.signal(number, handler)


def ignore_stop_signals():
    """Ignores SIGTERM, SIGINT and SIGHUP from here on: a CLI calls it once its exit
    status is decided and its line about to be printed. A signal during the
    exit, while TensorFlow tears down, ended the process with -15 or -2, or
    raised ``KeyboardInterrupt`` into the exit, with a traceback; ignored
    signals stay ignored through the interpreter's finalization (Python
    restores only the handlers it installed). A hung exit takes SIGKILL."""
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
