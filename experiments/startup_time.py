r"""Times the training CLI's start and exit beside a reference: the same CLI
without its garbage-collector handling, or another commit's CLI; and, beside
another commit, the trace of each preset's train step.

    python experiments/startup_time.py --output=experiments/results/startup.md
    git worktree add /tmp/old 52ecf09
    python experiments/startup_time.py --reference=/tmp/old --output=...

``python -m sgan_keras.train`` checks its flags before importing TensorFlow,
imports it with the cyclic collector off and then freezes the objects that
importing TensorFlow and Keras made (``gc.freeze``, in
``sgan_keras.train.import_trainer``). This times, in alternating processes, the
CLI as shipped (``python -m sgan_keras.train``) beside the same ``main``
started without that handling (``app.run(train.main)`` from ``python -c``,
the collector as Python leaves it), or, with ``--reference=DIR``, beside
``python -m sgan_keras.train`` of the checkout in ``DIR`` (e.g. a ``git
worktree`` of an earlier commit), for these commands:

- ``refused``: a flag the CLI refuses (``--labels=0``), what a user waits
  for on a typo (refused before TensorFlow is imported since commit 81ab550);
- ``short_run``: a short training run (the test suite's resumable run:
  2 epochs of 30 steps, a checkpoint every 10, deterministic), whose
  ``metrics.csv`` must come out the same both ways (each repeat's; the
  script exits 1 when one differs, after writing its table);
- ``trace``: with ``--reference`` only, each preset of ``--trace_presets``
  in processes of its own (``experiments/trace_step.py``): its train step
  traced ``--traces`` times after one untimed trace; the row gives the
  median seconds of a trace and the traced graph's op count, what every
  run and test process pays before its first step.

Refuses a busy machine unless ``--force``.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402  (experiments/provenance.py)

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Processes per command and way (alternating).")
flags.DEFINE_list("commands", ["refused", "short_run"], "Which commands to time: "
                  "refused, short_run, trace (with --reference).")
flags.DEFINE_list("trace_presets", ["mnist_blog", "mnist_gans_in_action", "mnist_improved_gan"],
                  "The presets whose train step the trace command traces.")
flags.DEFINE_integer("traces", 3, "Timed traces per process of the trace command.")
flags.DEFINE_string("data_dir", os.path.join(provenance.REPO_ROOT, "..", "shared", "data",
                                             "mnist"), "The directory of mnist.npz.")
flags.DEFINE_string("output", "", "Markdown file to append the table to (and a .json beside).")
provenance.define_timing_flags(peak=False)
flags.DEFINE_string("reference", "", "A checkout of another commit (e.g. a git worktree): "
                    "time its `python -m sgan_keras.train` beside the shipped CLI instead of "
                    "the untouched main.")

SHIPPED = [sys.executable, "-m", "sgan_keras.train"]
TRACE_STEP = os.path.join(provenance.REPO_ROOT, "experiments", "trace_step.py")
UNTOUCHED = [sys.executable, "-c", "import sys; from absl import app; "
             "from sgan_keras import train; app.run(train.main, argv=sys.argv)"]


def command_args(name, output_dir):
    base = ["--dataset=mnist", "--preset=mnist_gans_in_action", "--labels=100",
            f"--data_dir={FLAGS.data_dir}", "--batch_size=16", "--eval_batch_size=2500",
            "--notflite", f"--output_dir={output_dir}"]
    if name == "refused":
        return [*base, "--labels=0"]
    return [*base, "--epochs=2", "--steps_per_epoch=30", "--checkpoint_every_steps=10",
            "--deterministic", "--seed=1"]


def reference_way():
    """``(name, directory, description)`` of the way timed beside the shipped CLI:
    its launcher runs from ``directory`` (``python -m`` imports the package there)."""
    if not FLAGS.reference:
        return ("untouched", provenance.REPO_ROOT, "untouched: the same `train.main` under "
                "`app.run` from `python -c`, the collector as Python leaves it")
    directory = os.path.abspath(FLAGS.reference)
    commit = provenance.commit(directory)
    return (f"commit {commit}", directory,
            f"commit {commit}: `python -m sgan_keras.train` of that commit's checkout")


def timed(launcher, name, directory):
    """Wall seconds of one process started in ``directory``, and its
    metrics.csv without the seconds column."""
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = os.path.join(scratch, "run")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        result = subprocess.run([*launcher, *command_args(name, output_dir)], env=env,
                                capture_output=True, text=True, cwd=directory)
        seconds = time.perf_counter() - start
        if result.returncode != (2 if name == "refused" else 0):
            sys.exit(f"{name} exited {result.returncode}: {result.stderr[-1500:]}")
        metrics = None
        if name == "short_run":
            with open(os.path.join(output_dir, "metrics.csv")) as file:
                metrics = [{key: value for key, value in row.items() if key != "seconds"}
                           for row in csv.DictReader(file)]
        return seconds, metrics


def traced(preset, directory):
    """The median seconds of a trace of ``preset``'s train step in one
    process (``experiments/trace_step.py``) that imports the package of the
    checkout in ``directory``, and the traced graph's op count."""
    result = subprocess.run([sys.executable, TRACE_STEP, preset, str(FLAGS.traces)],
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                 "PYTHONPATH": directory},
                            capture_output=True, text=True, cwd=directory)
    if result.returncode != 0:
        sys.exit(f"trace {preset} exited {result.returncode}: {result.stderr[-1500:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    return statistics.median(report["seconds"]), report["ops"]


def traces_only():
    """Whether the trace command is the only one timed."""
    return set(FLAGS.commands) == {"trace"}


def explained(reference, described):
    """What a table's figures are, for the output file."""
    traces = (f"median seconds of {FLAGS.traces} traces of the train step in each process "
              "(after one untimed) and the traced graph's ops, shipped / reference")
    if traces_only():
        return (f"A trace row: the median over {FLAGS.repeats} alternating processes per way "
                f"of the {traces}. shipped: this checkout's package; {reference}: that "
                "checkout's.")
    return (f"Wall seconds per process, median of {FLAGS.repeats} alternating processes "
            "per way. shipped: `python -m sgan_keras.train` (flags checked before "
            "TensorFlow is imported; imported with the collector off, then "
            f"`gc.freeze()`); {described}."
            + (f" A trace row: the {traces}." if "trace" in FLAGS.commands else ""))


def main(argv):
    del argv
    if "trace" in FLAGS.commands and not FLAGS.reference:
        raise app.UsageError("--commands=trace times two checkouts' traces: give --reference")
    check = provenance.quiet_check(FLAGS.quiet_seconds, force=FLAGS.force)
    reference, reference_dir, described = reference_way()
    launchers = {"shipped": (SHIPPED, provenance.REPO_ROOT),
                 "reference": (SHIPPED if FLAGS.reference else UNTOUCHED, reference_dir)}
    names = [f"trace {preset}" if name == "trace" else name for name in FLAGS.commands
             for preset in (FLAGS.trace_presets if name == "trace" else [None])]
    rows, results = [], {}
    for name in names:
        times = {way: [] for way in launchers}
        metrics, ops = {}, {}
        same = None     # only the short run writes metrics.csv; None: nothing to compare
        for _ in range(FLAGS.repeats):
            for way, (launcher, directory) in launchers.items():
                if name.startswith("trace "):
                    seconds, ops[way] = traced(name.split()[1], directory)
                else:
                    seconds, metrics[way] = timed(launcher, name, directory)
                times[way].append(seconds)
                print(f"{name} {way}: {seconds:.2f} s", flush=True)
            if name == "short_run":
                same = (same is not False) and metrics["shipped"] == metrics["reference"]
        shipped, other = (statistics.median(times[way]) for way in launchers)
        results[name] = {"seconds": times, "same_metrics": same, **({"ops": ops} if ops else {})}
        same_cell = "-" if same is None else "yes" if same else "NO"
        label = (f"{name} ({ops['shipped']:,} / {ops['reference']:,} ops)" if ops else name)
        rows.append(f"| {label} | {shipped:.2f} | {other:.2f} | {other - shipped:.2f} | "
                    f"{same_cell} | "
                    f"{', '.join(f'{s:.2f}' for s in times['shipped'])} / "
                    f"{', '.join(f'{s:.2f}' for s in times['reference'])} |")
    table = [f"| command | shipped s | {reference} s | saved s | same metrics.csv | "
             f"each process, shipped / {reference} |", "|---|---|---|---|---|---|", *rows]
    print("\n".join(table))
    if FLAGS.output:
        record = provenance.record()
        subject = "The train step's trace" if traces_only() else "The CLI's start and exit"
        with open(FLAGS.output, "a", encoding="utf-8") as file:
            file.write("\n".join([
                f"## {subject}, shipped and {reference}",
                "", f"`{record['command']}`; commit {record['commit']}, {record['date']}; "
                f"{provenance.machine_line(record)}. {provenance.quiet_line(check)}", "",
                explained(reference, described), "",
                *table, "", ""]))
        from sgan_keras import faults
        faults.write_text(os.path.splitext(FLAGS.output)[0] + ".json", json.dumps(
            {"record": record, "quiet_check": check, "reference": reference,
             "results": results}, indent=1))
    if any(result["same_metrics"] is False for result in results.values()):
        sys.exit("startup_time.py: the short run's metrics.csv differs between the two ways")


if __name__ == "__main__":
    app.run(main)
