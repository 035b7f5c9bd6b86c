"""Writes the README's results table from ``experiments/results/*.json``.

    python experiments/report.py            # rewrites the table in README.md
    python experiments/report.py --check    # exits 1 if the README is stale

The table sits between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` markers of README.md. Exit statuses: 1 for a stale
table (``--check``), a missing table or a damaged result file; 2 for an
unknown argument; 5 when README.md cannot be written (a full disk; it stays
as it was).
"""

import glob
import json
import os
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)      # this checkout's sgan_keras, whichever copy is installed
from sgan_keras import faults  # noqa: E402
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


class DamagedResultFile(Exception):
    """A result file that cannot be read as JSON, or not as one (one line; exit 1)."""


def shape_problem(result, fields=None, run_fields=()):
    """Why ``result`` (a result file's JSON) is not as run.py writes it (an
    edit by hand), in a few words, or ``None``: what the table reads (a name
    and status; if measured, a budget and runs with a test accuracy per
    epoch), and a measured one's ``fields`` (name: type) and each run's
    ``run_fields`` (what run.py reads too)."""
    if not isinstance(result, dict):
        return "not a JSON object"
    expected = {"name": str, "status": str}
    if result.get("status") == "measured":
        expected.update({"budget": str, **(fields or {})})
    for key, kind in expected.items():
        if not isinstance(result.get(key), kind):
            return f"no {key}" if key not in result else f"its {key} is not a JSON {kind.__name__}"
    published = result.get("published_accuracy")    # None: no published number
    if isinstance(published, bool) or not isinstance(published, (int, float, type(None))):
        return "its published_accuracy is not a JSON number"
    for kind in ("sgan", "baseline"):
        runs = result.get(kind, {})
        if not isinstance(runs, dict) or not all(isinstance(run, dict) for run in runs.values()):
            return f"its {kind} runs are not JSON objects"
        for seed, run in runs.items():
            missing = [key for key in ("test_accuracy", *run_fields)
                       if run.get(key) in (None, "", [])]
            if missing or not isinstance(run["test_accuracy"], list):
                return f"its {kind} run of seed {seed} has no {(missing or ['test_accuracy'])[0]}"
    return None


def epochs(count):
    """``"1 epoch"``, ``"5 epochs"``."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def epochs_as_long(sgan, baseline):
    """Whether two runs' epochs are as long, so that the same epoch is the same
    point of both (GANs in Action's baseline trains 30 epochs of 4 steps, its
    GAN 8 of 1,000); a run recorded before its length was is taken to be."""
    lengths = sgan.get("steps_per_epoch"), baseline.get("steps_per_epoch")
    return None in lengths or lengths[0] == lengths[1]


def accuracy_cell(finals):
    """``"mean +- sample standard deviation%"`` of several runs' final test
    accuracies (n - 1 in the deviation), the one value of a single run."""
    if len(finals) == 1:
        return f"{100 * finals[0]:.2f}%"
    return f"{100 * statistics.mean(finals):.2f} +- {100 * statistics.stdev(finals):.2f}%"


def table(results_dir=os.path.join(REPO_ROOT, "experiments", "results")):
    """The README's table: each experiment's finished runs of each kind, and a
    partial SGAN (no finished one yet) beside its baseline after as many
    epochs."""
    rows = ["| experiment | published | SGAN test accuracy | supervised-only | budget | seeds |",
            "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as file:
                result = json.load(file)
        except (OSError, ValueError) as error:    # a merge conflict, an edit by hand
            problem = (error.strerror or type(error).__name__ if isinstance(error, OSError)
                       else faults.first_line(error))
            raise DamagedResultFile(f"{path} cannot be read as JSON ({problem}): fix it, "
                                    "or move it away") from None
        problem = (shape_problem(result) if not isinstance(result, dict)
                   or "published_accuracy" in result else None)
        if problem:
            raise DamagedResultFile(f"{path} cannot be read as a result file ({problem}): "
                                    "fix it, or move it away")
        if "published_accuracy" not in result:
            continue  # e.g. the input-pipeline benchmark
        name = result["name"]
        link = f"[{name}](experiments/results/{name}.md)"
        published = (f"{100 * result['published_accuracy']:.2f}%"
                     if result["published_accuracy"] is not None else "none")
        if result["status"] != "measured":
            rows.append(f"| {link} | {published} | not yet measured | | | |")
            continue
        finished, running = {}, {}
        for kind in ("sgan", "baseline"):
            runs = result.get(kind, {}).values()
            finished[kind] = [run["test_accuracy"][-1] for run in runs
                              if run.get("finished", True)]
            running[kind] = [run for run in runs if not run.get("finished", True)]
        cells = [accuracy_cell(finished[kind]) if finished[kind] else "-"
                 for kind in ("sgan", "baseline")]
        budget = result["budget"]
        if running["sgan"]:
            done = min(len(run["test_accuracy"]) for run in running["sgan"])
            budget += f" (partial: {epochs(done)} so far)"
        if running["sgan"] and not finished["sgan"]:
            cells[0] = (f"{100 * statistics.mean(run['test_accuracy'][done - 1] for run in running['sgan']):.2f}%"
                        f" after {epochs(done)}")
            partial_seeds = [seed for seed, run in result["sgan"].items()
                             if not run.get("finished", True)]
            baselines = [result.get("baseline", {}).get(seed) for seed in partial_seeds]
            if all(run and len(run["test_accuracy"]) >= done
                   and epochs_as_long(result["sgan"][seed], run)
                   for seed, run in zip(partial_seeds, baselines)):
                # Beside a partial SGAN: its baseline after as many epochs.
                accuracy = statistics.mean(run["test_accuracy"][done - 1] for run in baselines)
                cells[1] = f"{100 * accuracy:.2f}% after {epochs(done)}"
        counts = [len(finished[kind]) or len(running[kind]) for kind in ("sgan", "baseline")]
        seeds = (str(max(counts)) if min(counts) in (0, max(counts))
                 else f"{counts[0]} SGAN, {counts[1]} baseline")
        rows.append(f"| {link} | {published} | {cells[0]} | {cells[1]} | {budget} | {seeds} |")
    return "\n".join(rows)


def main():
    # Anything else (a typo of --check) would rewrite the README unasked.
    if sys.argv[1:] not in ([], ["--check"]):
        print(f"report.py: unknown arguments {sys.argv[1:]}; usage: python "
              "experiments/report.py [--check]", file=sys.stderr)
        sys.exit(2)
    readme_path = os.path.join(REPO_ROOT, "README.md")
    try:
        with open(readme_path, encoding="utf-8") as file:
            readme = file.read()
    except OSError as error:
        sys.exit(f"report.py: cannot read {readme_path} ({error.strerror})")
    if BEGIN not in readme or END not in readme.split(BEGIN, 1)[-1]:
        sys.exit(f"report.py: README.md has no results table between {BEGIN} and {END}")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    try:
        updated = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    except DamagedResultFile as error:
        sys.exit(f"report.py: {error}")
    if sys.argv[1:] == ["--check"]:
        if updated != readme:
            sys.exit("report.py --check: README.md's results table differs from "
                     "experiments/results/*.json; run python experiments/report.py")
        return
    try:
        faults.write_text(readme_path, updated)     # in one rename: never half a README
    except faults.WriteError as error:
        print(f"report.py: {error}; README.md is as it was: free space or fix the directory, "
              "then run it again", file=sys.stderr)
        sys.exit(5)     # run.py's and the trainer's status for it


if __name__ == "__main__":
    main()
