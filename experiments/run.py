r"""Runs an experiment for several seeds beside its supervised-only baseline.

    python experiments/run.py --experiment=mnist_gans_in_action_100 --seeds=0,1,2 \
        --data_dir=../shared/data/mnist

Each seed trains the SGAN and the baseline (same discriminator, same labels,
``--supervised_only``) with ``python -m sgan_keras.train`` and the flags of
``experiments/definitions.py`` (``training_command``), in
``experiments/runs/<name>/<kind>_seed<N>[_<shortened budget>]``
(``run_directory``): the same command resumes an interrupted run, and a
finished one is recorded without training again. ``--epochs`` and
``--steps_per_epoch`` shorten the budget (recorded in the results). Writes
``experiments/results/<name>.json``,
``.md``, ``_accuracy.png`` (test accuracy per epoch, SGAN against baseline)
and ``_samples.png`` (the lowest seed's last grid of generated images).

Seeds may run in separate processes, one per core, e.g.
``taskset -c 0 python experiments/run.py ... --seeds=0`` beside
``taskset -c 1 ... --seeds=1``: each merges its runs into the result files
of the same budget under a lock, so neither overwrites the other's. The
result's Markdown gives the run.py command that trains (or resumes) the
runs those processes asked for: one command, or one a kind when they asked
for other seeds of each kind (``asked`` in the JSON). A
result file of another budget is never replaced (exit 2: use another
``--results_dir``), and the note stays unless ``--note`` gives a new one
(also when every run is recorded already).
``--not_measured`` writes result files that say the experiment has not been
run (for datasets this machine cannot download). ``experiments/report.py``
turns the JSON files into the README's table.

Where each run trained: before each training session, the commit, date and
machine (with the kernels the trainer chooses for the preset) are appended
to ``<run directory>.sessions.json`` (and dropped if it stops before it saves
a checkpoint), and the result names them per run. A
run found finished is checked against the command (its ``flags.json``; exit
2 if it trained other flags) and recorded once: a run already in the
result file keeps its record.

The trainer runs in a session of its own: SIGINT, SIGTERM or SIGHUP to this
process (a terminal's Ctrl-C, ``kill``, a closed terminal) is passed on to it
once, so it saves at its next step and exits 75 (README, Faults), and so does
this process (a SIGINT or SIGHUP ignored at start stays ignored: ``nohup``); one
while no trainer runs (run.py starts, or records a run) stops it with one
line, also with 75. Exit
statuses: the trainer's when a training stops; 2 for a command run.py
refuses; 5 when a result file cannot be written (a full disk).
"""

import contextlib
import datetime
import fcntl
import glob
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

# This checkout's experiments and sgan_keras, whichever copy is installed.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO_ROOT, "experiments"), REPO_ROOT]
import provenance  # noqa: E402
import report  # noqa: E402
from definitions import (EXPERIMENTS, RUNNER_FLAGS, run_directory,  # noqa: E402
                         split_overrides, trainer_config, training_command)
from sgan_keras import config as config_lib  # noqa: E402
from sgan_keras import faults  # noqa: E402
from sgan_keras import onednn  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("experiment", None, sorted(EXPERIMENTS), "Experiment to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (label draw, weights, data order).")
flags.register_validator("seeds", lambda seeds: bool(seeds) and all(
    seed.isdecimal() for seed in seeds), message="--seeds takes whole numbers, e.g. 0,1,2")
# Lower bounds: 0 would read as no shortening, i.e. the source's full budget.
flags.DEFINE_integer("epochs", None, "Shorter budget: epochs (default: the source's).",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Shorter budget: steps per epoch.",
                     lower_bound=1)
flags.DEFINE_list("overrides", [], "Extra trainer flags for both runs, e.g. ema=0.999 "
                  "(recorded with the results).")
flags.DEFINE_string("data_dir", None, "Local data directory passed to the trainer, "
                    "relative to the repository (the trainer runs there).")
flags.DEFINE_string("runs_dir", "experiments/runs", "Where the training runs go (not "
                    "committed), relative to the repository.")
flags.DEFINE_string("results_dir", "experiments/results", "Where the result files go, "
                    "relative to the repository.")
flags.DEFINE_list("kinds", ["sgan", "baseline"], "Which runs: sgan, baseline (the "
                  "supervised-only one) or both; e.g. run the baselines in another process.")
flags.register_validator(
    "kinds", lambda kinds: bool(kinds) and set(kinds) <= {"sgan", "baseline"},
    message="--kinds takes sgan, baseline or both")
flags.DEFINE_bool("snapshot", False, "Train nothing: record the epochs the runs of --seeds "
                  "have finished so far (each marked 'N epochs so far'), e.g. while a long "
                  "run goes on.")
flags.DEFINE_bool("not_measured", False, "Write result files marked 'not yet measured'.")
flags.DEFINE_string("note", None, "A sentence recorded with the results (budget, machine); "
                    "without it the result file keeps its note.")
flags.mark_flag_as_required("experiment")


FULL_BUDGET = "the source's full budget"   # a result's budget without shortening
# The trainer's exit status when another process holds the run's lock (README, Faults).
TRAINER_LOCKED = 3


def read_metrics(path):
    """A run's ``metrics.csv`` rows (``test_accuracy`` and ``seconds``, as
    numbers), read as the trainer reads it; :class:`Refused` names a damaged file."""
    from sgan_keras import callbacks  # pylint: disable=import-outside-toplevel
    try:
        return [{key: float(row[key]) for key in ("test_accuracy", "seconds")}
                for row in callbacks.read_metrics_csv(path)]
    except callbacks.MetricsFileError as error:
        raise Refused(faults.first_line(error)) from None
    except (KeyError, TypeError, ValueError):
        raise Refused(f"{path} has a row without a number in its test_accuracy or seconds "
                      "column: fix it, or move it away") from None


class TrainingStopped(Exception):
    """A training process ended without finishing (its own line is on stderr)."""

    def __init__(self, output_dir, status):
        super().__init__(output_dir, status)
        self.output_dir, self.status = output_dir, status
        self.run = "a run"     # which one: set by the caller that knows


class Refused(Exception):
    """A command run.py does not carry out (one line; exit 2)."""


class Interrupted(Exception):
    """A stop signal while no trainer runs (one line; exit 75, as the trainer's)."""


# The trainer's (README, Faults), by the trainer's rule (faults.take_over_signals):
# a SIGINT or SIGHUP ignored when run.py starts stays ignored, and so it is in the trainer.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt(number, frame):
    """The handler of :data:`STOP_SIGNALS` outside :func:`run_trainer`: a
    signal while run.py starts or records gets one line, not a traceback."""
    del frame
    raise Interrupted(signal.Signals(number).name)


def last_grid(output_dir):
    """The run's last grid of generated images, or ``None``."""
    directory = os.path.join(REPO_ROOT, os.path.expanduser(output_dir))  # as the trainer reads it
    grids = sorted(glob.glob(os.path.join(directory, "samples", "*.png")))
    return grids[-1] if grids else None


def run_one(argv, made, train=True):
    """Runs (or resumes) one training; returns its per-epoch metrics, wall
    time and provenance (:func:`run_provenance`), or ``None`` when
    ``train=False`` finds no finished epoch yet. ``made``: this process's
    :func:`provenance.record`.

    ``train=False`` only reads the epochs the run has finished so far. A
    run not trained here (finished, or ``train=False``) must hold the
    command's flags (:class:`Refused` otherwise); ``"trained_here"`` says
    whether this call trained it.
    """
    from sgan_keras import trainer    # pylint: disable=import-outside-toplevel
    start = time.time()
    try:
        config = trainer_config(argv)
    except (flags.Error, config_lib.ConfigError) as error:
        raise Refused(faults.first_line(error)) from None
    output_dir = os.path.join(REPO_ROOT, config.run.output_dir)
    finished = trainer.is_finished(output_dir, config)
    metrics = os.path.join(output_dir, "metrics.csv")
    trained_here = train and not finished
    if trained_here:
        epochs_before = len(read_metrics(metrics)) if os.path.exists(metrics) else 0
        saved_before = checkpoints(output_dir)
        if saved_before or epochs_before:
            # A stopped run of other flags (the experiment changed since): the
            # trainer refuses it too, advising --output_dir or --overwrite,
            # which run.py sets or refuses, and the same command cannot resume it.
            check_same_flags(config, trainer)
        # Where the trainer resumes: the newest checkpoint's step (a metrics.csv
        # row may be one epoch ahead of it, written just before a kill).
        step, steps_per_epoch = resume_step(output_dir), config.training.steps_per_epoch
        # The commit and date of now: the code may have changed since this
        # process started, hours of training ago.
        session = add_session(output_dir, {**made, "commit": provenance.commit(),
                                           "date": datetime.date.today().isoformat()},
                              config, step // steps_per_epoch + 1, new_run=not step,
                              within_epoch=bool(step % steps_per_epoch))
        status = run_trainer(argv)
        if status:
            if status == TRAINER_LOCKED or checkpoints(output_dir) == saved_before:
                # Refused (another process trains the run, and may have saved
                # meanwhile) or stopped before it saved: a resume keeps
                # nothing of this session.
                drop_session(output_dir, session)
            raise TrainingStopped(config.run.output_dir, status)
    else:
        check_same_flags(config, trainer)
    rows = read_metrics(metrics) if os.path.exists(metrics) else []
    if not rows and not train:
        return None
    if not rows:      # a finished run's metrics.csv moved away (or emptied)
        raise Refused(f"{metrics} holds no epoch, so the run's test accuracy is unknown: "
                      "put its metrics.csv back, or move the run away")
    return {"finished": train or finished,
            "test_accuracy": [row["test_accuracy"] for row in rows],
            "final_test_accuracy": rows[-1]["test_accuracy"],
            "best_test_accuracy": max(row["test_accuracy"] for row in rows),
            # A partial SGAN is set beside its baseline after as many epochs of this length.
            "steps_per_epoch": config.training.steps_per_epoch,
            "wall_seconds": round(time.time() - start, 1),
            "train_seconds": round(sum(row["seconds"] for row in rows), 1),
            "command": shlex.join(["python"] + argv[1:]),
            **run_provenance(output_dir), "trained_here": trained_here}


def run_trainer(argv):
    """Runs the trainer to its end; returns its exit status.

    It runs in a session of its own, and each of :data:`STOP_SIGNALS` this
    process takes is passed on to it once: it then saves at its next
    step and exits 75, as it does on its own. In this process's group it
    would get a terminal's Ctrl-C twice (from the terminal and passed on),
    and a second signal ends it at once (``trainer.StopSignals``). Out of
    the terminal's session it gets no SIGHUP of its own when the terminal
    closes: passed on, it saves, where it would go on alone.
    """
    child = subprocess.Popen(argv, cwd=REPO_ROOT, start_new_session=True)
    previous = faults.take_over_signals(
        STOP_SIGNALS, lambda number, frame: child.send_signal(number))
    try:
        return child.wait()
    finally:
        faults.restore_signals(previous)


def check_same_flags(config, trainer):
    """Refuses a run directory whose ``flags.json`` differs from ``config``
    (run-only options aside), or that a newer version trained, as the trainer
    refuses to resume one."""
    earlier = read_json(os.path.join(REPO_ROOT, config.run.output_dir, "flags.json"), None)
    if earlier is None:
        return
    newer = config_lib.fields_of_a_newer_version(earlier)
    if newer:
        raise Refused(f"{config.run.output_dir} holds a run of a newer sgan_keras (its "
                      f"flags.json has {', '.join(newer)}, which this version does not know); "
                      "record it with that version, or move it away")
    changed = trainer.changed_options(earlier, config)
    if changed:
        labels = ", ".join(config_lib.OPTIONS[name].label() for name in changed)
        raise Refused(f"{config.run.output_dir} holds a run of other flags ({labels}) than "
                      "this command's; move it away or pass another --runs_dir")


def sessions_path(output_dir):
    """The run's sessions file: beside its directory, since inside it the
    trainer would take a new run's directory for a user's."""
    return os.path.normpath(output_dir) + ".sessions.json"


def checkpoints(output_dir):
    """The names of the checkpoint files the run holds."""
    directory = os.path.join(output_dir, "checkpoint")
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


def resume_step(output_dir):
    """The step the trainer resumes the run from: its newest checkpoint's (0 without one)."""
    from sgan_keras import checkpoint     # pylint: disable=import-outside-toplevel
    return checkpoint.CheckpointStore(os.path.join(output_dir, "checkpoint"), []).newest_step()


def add_session(output_dir, made, config, first_epoch, new_run=False, within_epoch=None):
    """Appends where this training session runs (commit, date, and the
    machine with the kernels the trainer chooses for ``config``) to the
    run's sessions file; returns the session appended. ``new_run``: the run
    has no checkpoint, so the session trains it from its first step;
    ``within_epoch``: it resumes from a checkpoint inside ``first_epoch``."""
    chosen = onednn.kernels_environment(config.model.architecture,
                                        os.environ.get(onednn.ONEDNN_VARIABLE),
                                        config.model.precision).get(onednn.ONEDNN_VARIABLE)
    machine = {**made, "onednn": made.get("onednn") if chosen is None else chosen == "1"}
    path = sessions_path(output_dir)
    sessions = read_json(path, [])
    session = {"commit": made["commit"], "date": made["date"],
               "machine": provenance.machine_line(machine), "first_epoch": first_epoch}
    if new_run:
        session["new_run"] = True
    if within_epoch is not None:
        session["within_epoch"] = within_epoch
    sessions.append(session)
    with faults.writing(path):     # an unwritable --runs_dir: exit 5, as the trainer's
        os.makedirs(os.path.dirname(path), exist_ok=True)
    faults.write_json(path, sessions)
    return session


def drop_session(output_dir, session):
    """Removes ``session`` (the last one equal to it) from the run's sessions file."""
    path = sessions_path(output_dir)
    sessions = read_json(path, [])
    if session in sessions:
        del sessions[len(sessions) - 1 - sessions[::-1].index(session)]
        faults.write_json(path, sessions)


def run_provenance(output_dir):
    """A run's machine, commit and date: its first session's, with
    ``sessions`` when it trained on more than one commit or machine; "not
    recorded" for a run trained before run.py recorded its sessions."""
    sessions = read_json(sessions_path(output_dir), [])
    # The sessions before the last that trained the run from its first step
    # are another run's: one moved away (the file stays beside the directory).
    starts = [index for index, session in enumerate(sessions) if session.get("new_run")]
    sessions = sessions[starts[-1]:] if starts else sessions
    if not sessions:
        return {key: "not recorded" for key in ("machine", "commit", "date")}
    made = {key: sessions[0][key] for key in ("machine", "commit", "date")}
    if len({(session["commit"], session["machine"]) for session in sessions}) > 1:
        made["sessions"] = sessions
    return made


def read_json(path, default):
    """The JSON value in ``path``, or ``default`` when there is no such file.
    A file that cannot be read as JSON (edited by hand, a merge conflict) is
    :class:`Refused`: what it holds is not replaced without a word."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as error:
        problem = (error.strerror or type(error).__name__ if isinstance(error, OSError)
                   else faults.first_line(error))
        raise Refused(f"{path} cannot be read as JSON ({problem}): fix it, or move it "
                      "away") from None


def summarize(runs):
    """Mean and sample standard deviation (n - 1; 0 for one run) of the
    finished runs' final and best test accuracies, and their count."""
    runs = [run for run in runs if run.get("finished", True)]
    if not runs:
        return None
    finals = [run["final_test_accuracy"] for run in runs]
    bests = [run["best_test_accuracy"] for run in runs]
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    return {"final_mean": statistics.mean(finals), "final_std": spread(finals),
            "best_mean": statistics.mean(bests), "best_std": spread(bests),
            "finished_runs": len(runs)}


def record(name, kind, seed, run, result, results_dir, grid=None):
    """Adds one run to this process's ``result`` and writes the result
    files, merged under a lock with the runs other processes recorded for the
    same budget, as the file holds them now: this process's runs replace only
    their own kind and seed. The note stays unless this process has one
    (``result["note"]`` not ``None``). A file of another budget is not
    touched: :class:`Refused`.

    ``grid``: an SGAN run's last grid of generated images; the result shows the
    lowest seed's (``samples_seed``), whichever process records it.
    """
    result.setdefault(kind, {})[str(seed)] = run
    with locked(results_dir, name):
        earlier = read_result(results_dir, name)
        check_same_budget(results_dir, name, result, earlier)
        merged = dict(result)
        if merged.get("note") is None:
            merged["note"] = earlier.get("note", "")
        if earlier.get("status") == "measured":
            for key in ("sgan", "baseline"):
                # Runs recorded before runs kept their own provenance: the file's.
                kept = {seed: {**provenance_of(earlier), **kept_run}
                        for seed, kept_run in earlier.get(key, {}).items()}
                if kept or result.get(key):
                    merged[key] = {**kept, **result.get(key, {})}
            merged["seeds"] = sorted(set(earlier["seeds"]) | set(result["seeds"]))
            earlier_asked, result_asked = asked_runs(earlier), asked_runs(result)
            merged["asked"] = {kind: sorted(set(earlier_asked.get(kind, []))
                                            | set(result_asked.get(kind, [])))
                               for kind in ("sgan", "baseline")
                               if kind in earlier_asked or kind in result_asked}
            merged["kinds"] = list(merged["asked"])
            if "samples" in earlier:
                merged["samples"] = earlier["samples"]
                # A file from before the grid's seed was recorded holds its one
                # SGAN run's grid; with several, which one's is unknown, and a
                # new grid replaces it.
                sgan_seeds = [int(s) for s in earlier.get("sgan", {})]
                grid_seed = earlier.get("samples_seed",
                                        sgan_seeds[0] if len(sgan_seeds) == 1 else None)
                if grid_seed is not None:
                    merged["samples_seed"] = grid_seed
        if grid and seed <= merged.get("samples_seed", seed):
            merged["samples"], merged["samples_seed"] = f"{name}_samples.png", seed
            with open(grid, "rb") as file:
                image = file.read()
            faults.replace_atomically(os.path.join(results_dir, merged["samples"]),
                                      lambda file: file.write(image), mode="wb")
        for key in ("sgan", "baseline"):
            merged.pop(key + "_summary", None)
            summary = summarize(merged.get(key, {}).values())
            if summary:
                merged[key + "_summary"] = summary
        write_results(name, merged, results_dir)


def read_result(results_dir, name):
    """The result file of experiment ``name`` in ``results_dir``, or ``{}``;
    one not as run.py writes it (an edit by hand) is :class:`Refused`, as a
    damaged one is."""
    path = os.path.join(results_dir, name + ".json")
    result = read_json(path, {})
    problem = result != {} and report.shape_problem(result, {"seeds": list}, (
        "final_test_accuracy", "best_test_accuracy", "train_seconds", "command"))
    if problem:
        raise Refused(f"{path} cannot be read as a result file ({problem}): fix it, or move "
                      "it away")
    return result


def check_same_budget(results_dir, name, result, earlier):
    """Refuses to replace measured results of another budget (or mark them
    not measured): run.py never drops runs a result file holds."""
    if earlier.get("status") != "measured":
        return
    if result["status"] != "measured" or earlier["budget"] != result["budget"]:
        asked = result["budget"] if result["status"] == "measured" else "not measured"
        raise Refused(f"{os.path.join(results_dir, name)}.json holds results of another "
                      f"budget ({earlier['budget']}; this command: {asked}), which this "
                      "would replace; pass another --results_dir")


def provenance_of(record):
    """The machine, commit and date a run (or a result file) was made on, and
    the run's ``sessions`` if it has them (:func:`run_provenance`)."""
    return {key: record[key] for key in ("machine", "commit", "date", "sessions")
            if key in record}


def provenance_lines(result):
    """Where the runs trained: one line when they share machine, commit and
    date, else a line for each run, with each of its sessions when it
    trained on several commits or machines."""
    made = {(kind, seed): {**provenance_of(result), **provenance_of(run)}
            for kind in ("sgan", "baseline") for seed, run in result.get(kind, {}).items()}
    explained = ("A run names where it trained (its first training session; run.py "
                 "records them since 2026-12-04); one recorded before names the commit and "
                 "machine that recorded it.")
    shared = {json.dumps(p, sort_keys=True) for p in made.values()}
    if len(shared) <= 1 and not any("sessions" in p for p in made.values()):
        p = json.loads(shared.pop()) if shared else result
        return [f"Machine: {p['machine']}; commit {p['commit']}; {p['date']}. {explained}"]

    def where(p):
        if "sessions" not in p:
            return f"{p['machine']}; commit {p['commit']}; {p['date']}."
        # A session that resumed from a checkpoint inside an epoch says so; one
        # recorded before sessions said so did if it starts in the epoch the
        # one before started (a resume inside a later epoch read as its start).
        starts = [None] + [s["first_epoch"] for s in p["sessions"]]
        return " ".join(
            f"{'Resumed within' if s.get('within_epoch', s['first_epoch'] == before) else 'From'}"
            f" epoch {s['first_epoch']}: {s['machine']}; commit {s['commit']}; {s['date']}."
            for before, s in zip(starts, p["sessions"]))
    return ["", "Runs merged from more than one commit or machine. " + explained, ""] + [
        f"- {kind} seed {seed}: {where(p)}" for (kind, seed), p in sorted(made.items())]


@contextlib.contextmanager
def locked(results_dir, name):
    """Holds the lock of ``name``'s result files: one process writes them at a time."""
    path = os.path.join(results_dir, name + ".lock")
    with faults.writing(path):     # an unwritable directory: exit 5, as a full disk
        os.makedirs(results_dir, exist_ok=True)
        try:
            lock = open(path, "w")
        except IsADirectoryError:
            raise Refused(f"{path} is a directory, not the result files' lock: move it "
                          "away") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_note(name, note, results_dir):
    """Writes ``note`` into ``name``'s result files if they hold another:
    their runs were recorded already, so ``record`` did not write it."""
    with locked(results_dir, name):
        earlier = read_result(results_dir, name)
        if earlier and earlier.get("note") != note:
            write_results(name, {**earlier, "note": note}, results_dir)


def write_results(name, result, results_dir):
    """Writes the result files, the JSON last: a run it holds is recorded
    already (never written again), so a stop before the others are written
    must leave it without the run."""
    base = os.path.join(results_dir, name)
    if result["status"] == "measured":
        plot(result, base + "_accuracy.png")
    faults.write_text(base + ".md", markdown(name, result, results_dir))
    faults.write_text(base + ".json", json.dumps(result, indent=2))


def accuracy_curves(result):
    """``(x label, log x axis, [(label, line style, x values, test accuracies)])``
    of a result's runs: against epochs where every run's epochs are as long,
    else against training steps, on a log axis where the runs' lengths differ
    more than tenfold. (GANs in Action's baseline trains 30 epochs of 4
    steps, its GAN 8 of 1,000: on an epoch axis the baseline looked the
    longer run.) A run whose epoch length is unknown (``epoch_length``)
    is taken to have the others'."""
    runs = [(kind, style, seed, run) for kind, style in (("sgan", "-"), ("baseline", "--"))
            for seed, run in sorted(result.get(kind, {}).items(), key=lambda item: int(item[0]))]
    lengths = [epoch_length(run) for *_, run in runs]
    by_steps = None not in lengths and len(set(lengths)) > 1
    curves = []
    for (kind, style, seed, run), length in zip(runs, lengths):
        epochs = range(1, len(run["test_accuracy"]) + 1)
        xs = [epoch * length if by_steps else epoch for epoch in epochs]
        curves.append((f"{kind} seed {seed}", style, xs, run["test_accuracy"]))
    ends = [xs[-1] for _, _, xs, _ in curves if xs]
    log = by_steps and max(ends) > 10 * min(ends)
    return ("training step" if by_steps else "epoch"), log, curves


def epoch_length(run):
    """A recorded run's steps per epoch; for one recorded before they were,
    as its recorded command resolves today, where that leaves room for its
    recorded epochs (else ``None``)."""
    if run.get("steps_per_epoch") or "command" not in run:
        return run.get("steps_per_epoch")
    try:
        training = trainer_config(shlex.split(run["command"])).training
    except (flags.Error, ValueError):    # a flag or value this checkout no longer has
        return None
    return training.steps_per_epoch if len(run["test_accuracy"]) <= training.epochs else None


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    label, log, curves = accuracy_curves(result)
    for name, style, xs, accuracies in curves:
        axis.plot(xs, accuracies, style, label=name)
    axis.set_xlabel(label)
    if log:
        axis.set_xscale("log")
    axis.set_ylabel("test accuracy")
    axis.set_title(result["name"])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    faults.replace_atomically(path, lambda file: figure.savefig(file, format="png", dpi=100),
                              mode="wb")
    plt.close(figure)


def markdown(name, result, results_dir=None):
    """The Markdown of a result file (written in ``results_dir``)."""
    lines = [f"# {name}", "", f"Published: {result['published']}.", ""]
    if result["status"] != "measured":
        lines += ["**Not yet measured.** " + result.get("note", ""), "",
                  "Command (full budget, per seed):", "", "```",
                  result["commands"]["sgan"], result["commands"]["baseline"], "```", ""]
        return "\n".join(lines)
    lines += [f"Budget: {result['budget']}. {result.get('note', '')}",
              *provenance_lines(result), "",
              "| seed | SGAN final | SGAN best | baseline final | baseline best | SGAN train s | baseline train s |",
              "|---|---|---|---|---|---|---|"]
    shown = [seed for seed in result["seeds"]
             if str(seed) in result.get("sgan", {}) or str(seed) in result.get("baseline", {})]
    same_epoch = []     # a partial SGAN beside its baseline after as many epochs
    for seed in shown:
        sgan = result.get("sgan", {}).get(str(seed))
        base = result.get("baseline", {}).get(str(seed))
        done = len(sgan["test_accuracy"]) if sgan else 0
        partial = sgan is not None and not sgan.get("finished", True)

        def accuracies(run, marked=False):
            """``marked``: a partial run says so here (a partial SGAN, in the seed's cell)."""
            if not run:
                return "- | - | "
            so_far = (f" (partial: {report.epochs(len(run['test_accuracy']))} so far)"
                      if marked and not run.get("finished", True) else "")
            return f"{run['final_test_accuracy']:.4f}{so_far} | {run['best_test_accuracy']:.4f} | "
        lines.append(
            f"| {seed}{f' (partial: {report.epochs(done)} so far)' if partial else ''} | "
            + accuracies(sgan) + accuracies(base, marked=True)
            + (f"{sgan['train_seconds']:.0f} | " if sgan else "- | ")
            + (f"{base['train_seconds']:.0f} |" if base else "- |"))
        if (partial and base and len(base["test_accuracy"]) >= done
                and report.epochs_as_long(sgan, base)):
            same_epoch.append(f"\nSeed {seed} after {report.epochs(done)} (the SGAN's last so far): "
                              f"SGAN {sgan['final_test_accuracy']:.4f}, "
                              f"baseline {base['test_accuracy'][done - 1]:.4f}.")
    lines += same_epoch
    for kind in ("sgan", "baseline"):
        s = summarize(result.get(kind, {}).values())
        if s and s["finished_runs"] > 1:
            lines.append(f"\n{kind}, {s['finished_runs']} finished seeds: final "
                         f"{s['final_mean']:.4f} +- {s['final_std']:.4f}, best "
                         f"{s['best_mean']:.4f} +- {s['best_std']:.4f} (mean +- sample "
                         "standard deviation)")
        elif s:
            lines.append(f"\n{kind}, 1 finished seed: final {s['final_mean']:.4f}, "
                         f"best {s['best_mean']:.4f}")
    lines += ["", f"![test accuracy per epoch]({name}_accuracy.png)", ""]
    if result.get("samples"):
        seed = result.get("samples_seed")
        lines += [f"![generated images{f' (SGAN seed {seed})' if seed is not None else ''}]"
                  f"({result['samples']})", ""]
    if runner_command(result, results_dir):
        lines += ["To train (or resume) these runs and record them again:", "", "```",
                  runner_command(result, results_dir), "```", ""]
    lines += ["Each run's training command, as recorded (a run recorded by an earlier "
              "run.py has the run directory of its day):", "", "```"]
    for seed in shown:
        for kind in ("sgan", "baseline"):
            if str(seed) in result.get(kind, {}):
                lines.append(result[kind][str(seed)]["command"])
    lines += ["```", ""]
    return "\n".join(lines)


def runner_command(result, results_dir=None):
    """The run.py command of a result's seeds, kinds and budget (and the data
    directory and run-only overrides its runs were given, and their runs and
    results directories when not run.py's defaults), or one command a kind,
    a line each (:func:`asked_runs`); ``None`` for a budget run.py did not
    write."""
    items = [] if result["budget"] == FULL_BUDGET else result["budget"].split(", ")
    if not all("=" in item for item in items):
        return None
    budget = dict(item.split("=", 1) for item in items)
    # One command for the seeds and kinds asked for, or, when the commands that
    # recorded the file asked for other seeds of each kind (run.py --seeds=0
    # --kinds=sgan beside --seeds=1 --kinds=baseline), one a kind: a command
    # for the union of both would train runs no one asked for.
    asked = asked_runs(result)
    same_seeds = len({tuple(seeds) for seeds in asked.values()}) == 1
    groups = ([(list(asked), next(iter(asked.values())))] if same_seeds
              else [([kind], seeds) for kind, seeds in asked.items()])
    selections = []
    for kinds, seeds in groups:
        selection = [f"--seeds={','.join(str(seed) for seed in seeds)}"]
        if len(kinds) == 1:     # without it, the command would train the other kind too
            selection.append(f"--kinds={kinds[0]}")
        selections.append(selection)
    argv = [f"--{key}={budget.pop(key)}" for key in ("epochs", "steps_per_epoch")
            if key in budget]
    commands = [run["command"] for kind in ("sgan", "baseline")
                for run in result.get(kind, {}).values()]
    arguments = [argument for command in commands for argument in shlex.split(command)]
    # The run-only overrides the runs were given (not in the budget): without
    # them a resume would checkpoint less often, or make the export they skipped.
    run_only = {option.flag for option in config_lib.OPTIONS.values()
                if option.run_only and option.flag} - set(RUNNER_FLAGS) - set(
                    EXPERIMENTS.get(result["name"], {}).get("flags", {}))
    for argument in arguments:
        key, _, value = argument[2:].partition("=")
        if argument.startswith("--") and key in run_only and value:
            budget.setdefault(key, value)
    if budget:
        argv.append("--overrides=" + ",".join(f"{key}={value}" for key, value in budget.items()))
    data_dirs = [argument for argument in arguments if argument.startswith("--data_dir=")]
    output_dirs = [argument.split("=", 1)[1] for argument in arguments
                   if argument.startswith("--output_dir=")]
    # Elsewhere, the command would train new runs there and record them there.
    directories = {"runs_dir": os.path.dirname(os.path.dirname(output_dirs[0]))
                   if output_dirs else None, "results_dir": results_dir}
    for flag, directory in directories.items():
        if directory and not same_directory(directory, FLAGS[flag].default):
            argv.append(f"--{flag}={in_repository(directory)}")
    return "\n".join(shlex.join(["python", "experiments/run.py",
                                 f"--experiment={result['name']}", *selection, *argv,
                                 *data_dirs[:1]]) for selection in selections)


def asked_runs(result):
    """``{kind: seeds}`` of the runs the commands that wrote a result asked
    for; for a file written before they were recorded, each of its kinds
    (:func:`recorded_kinds`) for each of its seeds."""
    return result.get("asked") or {kind: sorted(result["seeds"])
                                   for kind in recorded_kinds(result)}


def recorded_kinds(result):
    """The kinds of runs a result's commands asked for (``--kinds``); for a file
    written before they were recorded, the kinds it holds runs of."""
    return result.get("kinds") or [kind for kind in ("sgan", "baseline") if result.get(kind)]


def in_repository(path):
    """``path`` relative to the repository when it is inside it: the command
    runs there, in any checkout (run.py makes ``--results_dir`` absolute)."""
    relative = os.path.relpath(path, REPO_ROOT) if os.path.isabs(path) else path
    return relative if relative.split(os.sep)[0] != os.pardir else path


def same_directory(path, default):
    """Whether ``path`` (relative to the repository or absolute) is ``default``'s."""
    return (os.path.normpath(os.path.join(REPO_ROOT, path))
            == os.path.normpath(os.path.join(REPO_ROOT, default)))


def main(argv):
    del argv
    faults.take_over_signals(STOP_SIGNALS, interrupt)
    try:
        run_experiment()
    except Refused as refused:
        print(f"run.py: {refused}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as interrupted:
        print(f"run.py: interrupted: {interrupted} while no training ran; finished runs are "
              "recorded, the same command resumes", file=sys.stderr)
        sys.exit(75)
    except faults.WriteError as error:      # the result files' (each replaced in one rename)
        # Not only a full disk: a directory not permitted or read-only too.
        print(f"run.py: {error}; free space or fix the directory, then run the same command "
              "again to record the runs", file=sys.stderr)
        sys.exit(5)     # the trainer's status for it (README, Faults)
    except TrainingStopped as stopped:
        # The trainer printed why; its exit status is the runner's
        # (README, Faults: 75 = interrupted, 2 = bad input, ...).
        print(f"run.py: {stopped.run} stopped with exit status {stopped.status} "
              f"({stopped.output_dir}); finished runs are recorded, the same command "
              "resumes it, --snapshot records it as it is", file=sys.stderr)
        sys.exit(stopped.status if stopped.status > 0 else 128 - stopped.status)


def run_experiment():
    """:func:`main`'s work: each seed and kind of ``FLAGS.experiment``,
    trained or resumed and recorded as it ends (partial results survive a
    stop)."""
    name = FLAGS.experiment
    seeds = list(dict.fromkeys(int(seed) for seed in FLAGS.seeds))   # each once, in order
    malformed = [override for override in FLAGS.overrides if "=" not in override]
    if malformed:
        raise Refused(f"--overrides takes flag=value pairs, got {malformed[0]!r}")
    given = [override.split("=", 1)[0] for override in FLAGS.overrides]
    twice = [flag for flag in given if given.count(flag) > 1]
    if twice:
        raise Refused(f"--overrides gives {twice[0]} twice; give each flag once")
    both = [flag for flag in ("epochs", "steps_per_epoch")
            if flag in given and getattr(FLAGS, flag)]
    if both:
        raise Refused(f"--{both[0]} and --overrides={both[0]}=... both set the length; "
                      "give one")
    try:
        budget, run_options = split_overrides(
            name, dict(override.split("=", 1) for override in FLAGS.overrides))
    except ValueError as error:
        raise Refused(error) from None
    budget = {**{k: v for k, v in (("epochs", FLAGS.epochs),
                                   ("steps_per_epoch", FLAGS.steps_per_epoch)) if v}, **budget}
    # In one order, whatever the command's: the budget names the runs'
    # directories and the result file's budget (epochs, steps, then by name).
    first = ("epochs", "steps_per_epoch")
    budget = dict(sorted(budget.items(), key=lambda item: (
        first.index(item[0]) if item[0] in first else len(first), item[0])))
    made = provenance.record()
    # As the report reads them; ~ as the trainer reads --runs_dir's.
    results_dir = os.path.join(REPO_ROOT, os.path.expanduser(FLAGS.results_dir))
    kinds = list(dict.fromkeys(FLAGS.kinds))   # each once, in order
    asked = {kind: sorted(seeds) for kind in ("sgan", "baseline") if kind in kinds}
    result = {"name": name, "published": EXPERIMENTS[name]["published"],
              "published_accuracy": EXPERIMENTS[name]["published_accuracy"],
              "seeds": seeds, "kinds": list(asked), "asked": asked,
              "note": FLAGS.note,
              "budget": ", ".join(f"{k}={v}" for k, v in budget.items()) or FULL_BUDGET,
              "machine": provenance.machine_line(made), "commit": made["commit"],
              "date": made["date"],
              "status": "not measured" if FLAGS.not_measured else "measured"}
    earlier = read_result(results_dir, name)
    check_same_budget(results_dir, name, result, earlier)   # before hours of training
    if FLAGS.not_measured:
        # An empty --note empties it, as for measured results.
        result["note"] = earlier.get("note", "") if FLAGS.note is None else FLAGS.note
        # The commands train what the file's budget says (they ignored --epochs,
        # --steps_per_epoch and --overrides, so a short budget's file named the
        # full budget's commands).
        result["commands"] = {
            kind: shlex.join(["python"] + training_command(
                name, 0, kind == "baseline", run_directory(FLAGS.runs_dir, name, kind, 0, budget),
                {**budget, **run_options}, FLAGS.data_dir)[1:])
            for kind in ("sgan", "baseline")}
        write_results(name, result, results_dir)
        return
    for seed in seeds:
        for kind in kinds:
            output_dir = run_directory(FLAGS.runs_dir, name, kind, seed, budget)
            argv = training_command(name, seed, kind == "baseline", output_dir,
                                    {**budget, **run_options}, FLAGS.data_dir)
            what = f"the {kind} run of seed {seed}"
            try:
                run = run_one(argv, made, train=not FLAGS.snapshot)
            except Refused as refused:
                raise Refused(f"{what}: {refused}") from None
            except TrainingStopped as stopped:
                stopped.run = what
                raise
            if run is None:      # --snapshot: no epoch finished yet
                print(f"run.py: {what} has finished no epoch yet ({output_dir}); nothing of it "
                      "is recorded", file=sys.stderr)
                continue
            recorded = read_result(results_dir, name).get(kind, {}).get(str(seed), {})
            if not run.pop("trained_here") and recorded.get("finished") and run["finished"]:
                print(f"run.py: the {kind} run of seed {seed} is recorded already "
                      f"({output_dir}); its record stays", file=sys.stderr)
                continue
            record(name, kind, seed, run, result, results_dir,
                   grid=last_grid(output_dir) if kind == "sgan" else None)
    if FLAGS.note is not None:    # runs recorded already: record() wrote none of them
        update_note(name, FLAGS.note, results_dir)


if __name__ == "__main__":
    app.run(main)
