r"""Trains a semi-supervised GAN and exports its classifier.

    python -m sgan_keras.train --dataset=mnist --labels=100 \
        --data_dir=data/mnist --output_dir=runs/mnist100

There is one flag per option of the configuration (``sgan_keras/config.py``,
its help from there); every flag left unset takes the preset's value (the
source's own hyperparameters, ``sgan_keras/presets.py``). ``--batch_size`` is
the *global* batch, split across the replicas of ``--strategy``. The default
``--output_dir`` is ``runs/<run name>``, the name listing every option that
differs from the preset (``presets.run_name``).

The flags, each value and their combinations, are checked (``config.py``,
``presets.py``) before TensorFlow is imported: a mistyped flag is answered in
a fraction of a second. The training, and the checks of the data and the
output directory, are :func:`sgan_keras.trainer.train`'s.

The output directory receives ``flags.json``, ``labeled_indices.json``,
``class_names.json``, ``metrics.csv``, ``tensorboard/``, ``samples/``,
``accuracy.png``, ``losses.png``, ``checkpoint/`` (the last two training
states, saved at each epoch end and every ``--checkpoint_every_steps``
steps), ``export/`` (a SavedModel classifier; with ``--tflite``, the default,
also two TFLite files, ``labels.txt`` and ``accuracy.json``) and ``run.lock``
(one run per directory; README "What lands in --output_dir"). Running the
same command again resumes an interrupted run from its last checkpoint, at
that exact step; a finished run is never overwritten without ``--overwrite``.

Faults (README "Faults") print one line on stderr, no traceback, and exit with:

    0   done
    1   a flag absl's parser rejects (unknown flag, value not of its type or
        choices): absl's "FATAL Flags parsing error" line
    2   bad input: a flag, the data, or an --output_dir that cannot be used as
        given (including one whose checkpoints are all unreadable)
    3   another run holds --output_dir (the line names its pid)
    4   training diverged: a loss, or a variable about to be saved, is NaN or
        infinite; stopped at once, earlier checkpoints kept, none of that state
    5   a full disk or an unwritable file; earlier outputs are intact. Also
        an --output_dir moved or removed during the run (its run.lock gone)
    6   out of memory: a batch's tensors did not fit in the device's memory
        (TensorFlow's allocator; the system's out-of-memory killer is a
        SIGKILL, with no line); earlier checkpoints kept
    69  --strategy=multi_worker: another worker stopped (its own line says why)
        or the network to it failed (EX_UNAVAILABLE)
    75  stopped by SIGTERM or SIGINT after saving at the next step boundary
        (before training starts: with nothing to save); the line gives the
        command that resumes (EX_TEMPFAIL: try again)

Any other failure is a bug and keeps its traceback (exit 1). A second SIGTERM
or SIGINT ends the process at once (the run then resumes as after ``kill
-9``, from its last checkpoint). Under ``--strategy=multi_worker``,
TensorFlow's ``PreemptionCheckpointHandler`` handles SIGTERM to any worker:
every worker saves at the same step and exits 75.
"""

import errno
import gc
import os
import shlex
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from sgan_keras import config as config_lib
from sgan_keras import faults
from sgan_keras import presets as presets_lib

FLAGS = flags.FLAGS
# One flag per option of sgan_keras/config.py, with its help; --help lists them.
config_lib.define_flags(FLAGS, preset_names=sorted(presets_lib.PRESETS))
flags.adopt_module_key_flags(config_lib)

# Exit statuses (module docstring, README "Faults").
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_NON_FINITE = 4
EXIT_WRITE = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_WORKER_LOST = 69  # EX_UNAVAILABLE (sysexits.h): a service is unavailable
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, try again


def resolve_config(values):
    """Flag values -> the run's :class:`~sgan_keras.config.Config`.

    ``values`` maps flag names to values (``None`` = unset: the preset's).
    The output directory defaults to ``runs/<run name>``
    (:func:`sgan_keras.presets.run_name`). Raises
    :class:`~sgan_keras.config.ConfigError` naming the flag on bad input. A
    leading ``~`` of a path is the home directory, as the shell would have read
    it outside ``--flag=~/...``.
    """
    values = {**values, **{name: os.path.expanduser(values[name])
                           for name in ("data_dir", "output_dir") if values.get(name)}}
    if (values.get("dataset") or "").startswith("folder:~"):
        values["dataset"] = "folder:" + os.path.expanduser(values["dataset"][len("folder:"):])
    config = presets_lib.resolve(config_lib.overrides_from_flags(values))
    if config.run.output_dir is None:
        config = config.replace(output_dir=os.path.join("runs", presets_lib.run_name(config)))
    return config


def main(argv):
    """Checks the flags, then runs :func:`sgan_keras.trainer.train`; each fault
    the package knows becomes one line and its exit status (module docstring).
    Other errors keep their traceback."""
    logging.set_verbosity(logging.WARNING)  # keep TF's INFO lines out of the log
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), _OutputWhoseReaderMayGo):
            setattr(sys, name, _OutputWhoseReaderMayGo(getattr(sys, name), name))
    if len(argv) > 1:
        _exit(EXIT_USAGE, f"unexpected arguments {argv[1:]}; every option is a --flag "
                          "(see --helpfull)")
    values = {name: FLAGS[name].value for name in config_lib.flag_names()}
    try:
        config = resolve_config(values)
    except config_lib.ConfigError as error:
        _exit(EXIT_USAGE, faults.first_line(error))
    if problem := faults.no_temporary_directory():   # TensorFlow's import needs one
        _exit(EXIT_WRITE, problem)
    faults.give_matplotlib_a_writable_directory()   # for the plots (callbacks.py)
    # Until training takes the signals over (trainer.StopSignals), SIGTERM
    # interrupts like SIGINT (KeyboardInterrupt): one line, not a silent death.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        trainer = import_trainer(config.model.architecture, config.model.precision)
    except KeyboardInterrupt:   # nothing read or written yet: the same command, --overwrite too
        _exit_interrupted_outside_training(keep_overwrite=True)
    try:
        output_dir = trainer.train(config)
    except trainer.InterruptedBeforeTraining:   # the same command, --overwrite too
        _exit_interrupted_outside_training(keep_overwrite=True)
    except KeyboardInterrupt:
        _exit_interrupted_outside_training()
    except trainer.BAD_INPUT as error:
        _exit(EXIT_USAGE, faults.first_line(error))
    except trainer.LOCKED as error:
        _exit(EXIT_LOCKED, faults.first_line(error))
    except trainer.NON_FINITE as error:
        _exit(EXIT_NON_FINITE, f"{faults.first_line(error)}: training stopped without saving "
                               "that state; earlier checkpoints are kept (a smaller --lr may "
                               "help, in another --output_dir)")
    except trainer.OUTPUT_DIR_LOST as error:
        _exit(EXIT_WRITE, f"{faults.first_line(error)}: training stopped and writes nothing "
                          "more; a moved directory resumes where it now is, with its path as "
                          "--output_dir")
    except trainer.OVERWRITE_INCOMPLETE as error:
        _exit(EXIT_WRITE, faults.first_line(error))
    except trainer.WRITE_FAILED as error:
        _exit(EXIT_WRITE, f"{faults.first_line(error)}; earlier outputs are intact: free space "
                          f"or fix the directory, then resume with: {_resume_command()}")
    except trainer.WORKER_LOST as error:
        _exit(EXIT_WORKER_LOST, faults.first_line(error))
    except trainer.OUT_OF_MEMORY as error:
        _exit(EXIT_OUT_OF_MEMORY, faults.first_line(error))
    except trainer.INTERRUPTED as error:
        saved = f"saved {error.path}" if error.path else "no step trained since the last checkpoint"
        _exit(EXIT_INTERRUPTED, f"{error.reason} at step {error.step}: {saved}; resume with: "
                                f"{_resume_command()}", kind="interrupted")
    print(f"Done: outputs in {output_dir}", flush=True)


def import_trainer(architecture="", precision="float32"):
    """The module that trains (:mod:`sgan_keras.trainer`), imported once the
    flags are valid: it imports TensorFlow and Keras, which takes seconds, so
    a mistyped flag is answered without them. The CPU kernels measured faster
    for the run's ``architecture`` and ``precision``
    (:func:`sgan_keras.onednn.choose_cpu_kernels`, read when TensorFlow is
    imported) and TensorFlow's pooled CPU allocator
    (:func:`sgan_keras.distribute.use_pooled_cpu_allocator`) are chosen first.

    Under :func:`run` (the collector off), the import's objects are then
    frozen and the collector turned back on: the imports of TensorFlow,
    Keras and this package leave about 345,000 Python objects that live as
    long as the process, and ``gc.freeze()`` moves them out of the cyclic
    collector's reach, so it no longer scans them in every full collection
    and at exit (the ~4,000 objects of cyclic garbage the imports leave are
    frozen with them rather than collected, 0.4 s saved). On 2 AVX2 cores
    that saved 2.8 s of a short run, with the same metrics
    (experiments/results/startup.md).
    """
    from sgan_keras import onednn   # pylint: disable=import-outside-toplevel
    onednn.choose_cpu_kernels(architecture, precision)   # before TensorFlow is imported
    from sgan_keras import distribute   # pylint: disable=import-outside-toplevel
    distribute.use_pooled_cpu_allocator()   # before the runtime starts (see there)
    from sgan_keras import trainer   # pylint: disable=import-outside-toplevel
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    return trainer


def _resume_command(keep_overwrite=False):
    """The shell command that resumes this process's run from any directory:
    ``cd`` to this one (relative paths, the default ``runs/<name>``), then
    this command line without ``--overwrite``, which would remove the run it
    resumes (and with ``--nooverwrite`` last when a ``--flagfile`` might set
    it). ``keep_overwrite``: the command line as it is, for a process stopped
    before it removed anything (without ``--overwrite``, a finished run, or
    one of other flags, is refused)."""
    def name(argument):
        return argument.lstrip("-").split("=", 1)[0]
    arguments = [argument for argument in sys.argv[1:]
                 if keep_overwrite or name(argument) not in ("overwrite", "nooverwrite")]
    if not keep_overwrite and any(name(argument) == "flagfile" for argument in arguments):
        arguments.append("--nooverwrite")
    command = shlex.join([sys.executable, "-m", "sgan_keras.train", *arguments])
    return f"cd {shlex.quote(os.getcwd())} && {command}"


def _exit_interrupted_outside_training(keep_overwrite=False):
    _exit(EXIT_INTERRUPTED, "a signal (SIGTERM or SIGINT) arrived before training started or "
                            f"after it ended; resume with: {_resume_command(keep_overwrite)}",
          kind="interrupted")


class _OutputWhoseReaderMayGo:
    """``sys.stdout`` or ``sys.stderr`` whose pipe's reader may go (``| head -1``,
    a pager quit, a log collector that died), or whose terminal may hang up
    (an ssh session dropped: a write raises ``EIO``; training saves on its
    SIGHUP, :class:`sgan_keras.trainer.StopSignals`).

    Python ignores SIGPIPE, so a write there raises ``BrokenPipeError``:
    unhandled, the next epoch line ended the run with a traceback, before that
    epoch's checkpoint. Training is what the run is for: the stream's
    descriptor then writes to ``/dev/null`` (the signal module's docs, "Note
    on SIGPIPE"), the run goes on, and the other stream gets one line saying so.
    """

    def __init__(self, stream, name):
        self._stream, self._name = stream, name

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as error:
            if not _reader_gone_error(error):
                raise
            self._reader_gone()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as error:
            if not _reader_gone_error(error):
                raise
            self._reader_gone()

    def _reader_gone(self):
        faults.point_at_devnull(self._stream.fileno())   # what is still buffered goes there too
        other = sys.stderr if self._name == "stdout" else sys.stdout
        kept = " (metrics.csv has every epoch)" if self._name == "stdout" else ""
        print(f"sgan_keras.train: the reader of {self._name} has gone (a closed pipe or "
              f"terminal); the run goes on without it{kept}", file=other, flush=True)

    def __getattr__(self, name):    # isatty, fileno, encoding, ...: the stream's
        return getattr(self._stream, name)


def _reader_gone_error(error):
    """A write's error for a reader that has gone: a closed pipe, or a
    terminal that hung up (``EIO``)."""
    return isinstance(error, BrokenPipeError) or error.errno == errno.EIO


def _exit(status, message, kind="error"):
    faults.ignore_stop_signals()     # the status is decided
    print(f"sgan_keras.train: {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run():
    """Console-script entry point (``sgan-train``) and ``python -m sgan_keras.train``:
    :func:`main` with the cyclic garbage collector off until
    :func:`import_trainer` has imported TensorFlow (see there)."""
    faults.open_closed_standard_streams()   # before any file is opened
    gc.disable()
    faults.lend_main_the_usage(__doc__)
    _check_flag_files(sys.argv)
    app.run(main, flags_parser=faults.help_whose_reader_may_go(app.parse_flags_with_usage))


def _check_flag_files(argv):
    """A ``--flagfile`` that is not UTF-8 text (absl reads it as such, and its
    error is a traceback), or that starts with a byte order mark (absl read
    "unexpected arguments ['\\ufeff--...']"), gets one line; found as absl
    finds them: ``--flagfile=F``, ``--flagfile F``, one dash too, and the
    ``--flagfile=`` lines of a flag file."""
    paths, arguments = [], argv[1:]
    for index, argument in enumerate(arguments):
        if argument in ("--flagfile", "-flagfile") and index + 1 < len(arguments):
            paths.append(os.path.expanduser(arguments[index + 1]))
        elif argument.startswith(("--flagfile=", "-flagfile=")):
            paths.append(os.path.expanduser(argument.split("=", 1)[1].strip()))
    seen = set()
    while paths:
        path = paths.pop(0)
        if not path or path in seen:   # absl skips an empty one and a loop
            continue
        seen.add(path)
        try:
            with open(path, encoding="utf-8") as file:
                lines = file.readlines()
        except UnicodeDecodeError as error:
            _exit(EXIT_USAGE, f"--flagfile={path} is not UTF-8 text ({error.reason} at "
                              f"byte {error.start}); save it as UTF-8")
        except OSError:
            continue     # absl names a missing or unreadable flag file itself
        if lines and lines[0].startswith("\ufeff"):   # absl took it as an argument's first byte
            _exit(EXIT_USAGE, f"--flagfile={path} starts with a byte order mark (an editor's "
                              "'UTF-8 with BOM'); save it as UTF-8 without one")
        paths += [os.path.expanduser(line.split("=", 1)[1].strip()) for line in lines
                  if line.startswith(("--flagfile=", "-flagfile="))]


if __name__ == "__main__":
    run()
