r"""Times the training CLI's start and exit with and without its garbage-collector handling.

    python experiments/startup_time.py --output=experiments/results/startup.md

``sgan_keras.train.run`` freezes the objects that importing TensorFlow and
Keras made (``gc.freeze``), and ``python -m sgan_keras.train`` imports them
with the cyclic collector off. This times, in alternating processes, the
CLI as shipped (``python -m sgan_keras.train``) beside the same ``main``
started without that handling (``app.run(train.main)`` from ``python -c``,
the collector as Python leaves it), for two commands:

- ``refused``: a flag the CLI refuses after its imports (``--labels=0``),
  the import and exit alone, what a user waits for on a typo;
- ``short_run``: a short training run (the test suite's resumable run:
  2 epochs of 30 steps, a checkpoint every 10, deterministic), whose
  ``metrics.csv`` must come out the same both ways.

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
flags.DEFINE_list("commands", ["refused", "short_run"], "Which commands to time.")
flags.DEFINE_string("data_dir", os.path.join(provenance.REPO_ROOT, "..", "shared", "data",
                                             "mnist"), "The directory of mnist.npz.")
flags.DEFINE_string("output", "", "Markdown file to append the table to (and a .json beside).")
flags.DEFINE_bool("force", False, "Measure even if the machine is not quiet (recorded).")

SHIPPED = [sys.executable, "-m", "sgan_keras.train"]
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


def timed(launcher, name):
    """Wall seconds of one process, and its metrics.csv without the seconds column."""
    with tempfile.TemporaryDirectory() as directory:
        output_dir = os.path.join(directory, "run")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        result = subprocess.run([*launcher, *command_args(name, output_dir)], env=env,
                                capture_output=True, text=True, cwd=provenance.REPO_ROOT)
        seconds = time.perf_counter() - start
        if result.returncode != (2 if name == "refused" else 0):
            sys.exit(f"{name} exited {result.returncode}: {result.stderr[-1500:]}")
        metrics = None
        if name == "short_run":
            with open(os.path.join(output_dir, "metrics.csv")) as file:
                metrics = [{key: value for key, value in row.items() if key != "seconds"}
                           for row in csv.DictReader(file)]
        return seconds, metrics


def main(argv):
    del argv
    check = provenance.quiet_check(force=FLAGS.force)
    rows, results = [], {}
    for name in FLAGS.commands:
        times = {"shipped": [], "untouched": []}
        metrics = {}
        for _ in range(FLAGS.repeats):
            for way, launcher in (("shipped", SHIPPED), ("untouched", UNTOUCHED)):
                seconds, metrics[way] = timed(launcher, name)
                times[way].append(seconds)
                print(f"{name} {way}: {seconds:.2f} s", flush=True)
        # Only the short run writes metrics.csv; None: nothing to compare.
        same = metrics["shipped"] == metrics["untouched"] if name == "short_run" else None
        shipped, untouched = (statistics.median(times[way]) for way in ("shipped", "untouched"))
        results[name] = {"seconds": times, "same_metrics": same}
        same_cell = "-" if same is None else "yes" if same else "NO"
        rows.append(f"| {name} | {shipped:.2f} | {untouched:.2f} | {untouched - shipped:.2f} | "
                    f"{same_cell} | "
                    f"{', '.join(f'{s:.2f}' for s in times['shipped'])} / "
                    f"{', '.join(f'{s:.2f}' for s in times['untouched'])} |")
    table = ["| command | shipped s | untouched s | saved s | same metrics.csv | "
             "each process, shipped / untouched |", "|---|---|---|---|---|---|", *rows]
    print("\n".join(table))
    if FLAGS.output:
        record = provenance.record()
        with open(FLAGS.output, "a") as file:
            file.write("\n".join([
                "## The CLI's start and exit, with and without freezing the imported objects",
                "", f"`{record['command']}`; commit {record['commit']}, {record['date']}; "
                f"{provenance.machine_line(record)}. {provenance.quiet_line(check)}", "",
                f"Wall seconds per process, median of {FLAGS.repeats} alternating processes "
                "per way. shipped: `python -m sgan_keras.train` (imports with the collector "
                "off, then `gc.freeze()`); untouched: the same `train.main` under "
                "`app.run` from `python -c`, the collector as Python leaves it.", "",
                *table, "", ""]))
        with open(os.path.splitext(FLAGS.output)[0] + ".json", "w") as file:
            json.dump({"record": record, "quiet_check": check, "results": results}, file,
                      indent=1)


if __name__ == "__main__":
    app.run(main)
