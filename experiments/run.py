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
of the same budget under a lock, so neither overwrites the other's.
``--not_measured`` writes result files that say the experiment has not been
run (for datasets this machine cannot download). ``experiments/report.py``
turns the JSON files into the README's table.
"""

import csv
import fcntl
import glob
import json
import os
import shlex
import shutil
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
from definitions import EXPERIMENTS, run_directory, training_command  # noqa: E402
from sgan_keras import faults  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("experiment", None, sorted(EXPERIMENTS), "Experiment to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (label draw, weights, data order).")
flags.DEFINE_integer("epochs", None, "Shorter budget: epochs (default: the source's).")
flags.DEFINE_integer("steps_per_epoch", None, "Shorter budget: steps per epoch.")
flags.DEFINE_list("overrides", [], "Extra trainer flags for both runs, e.g. ema=0.999 "
                  "(recorded with the results).")
flags.DEFINE_string("data_dir", None, "Local data directory passed to the trainer.")
flags.DEFINE_string("runs_dir", "experiments/runs", "Where the training runs go (not "
                    "committed), relative to the repository.")
flags.DEFINE_string("results_dir", "experiments/results", "Where the result files go, "
                    "relative to the repository.")
flags.DEFINE_list("kinds", ["sgan", "baseline"], "Which runs: sgan, baseline (the "
                  "supervised-only one) or both; e.g. run the baselines in another process.")
flags.register_validator("kinds", lambda kinds: set(kinds) <= {"sgan", "baseline"},
                         message="--kinds takes sgan, baseline or both")
flags.DEFINE_bool("snapshot", False, "Train nothing: record the epochs the runs of --seeds "
                  "have finished so far (each marked 'N epochs so far'), e.g. while a long "
                  "run goes on.")
flags.DEFINE_bool("not_measured", False, "Write result files marked 'not yet measured'.")
flags.DEFINE_string("note", "", "A sentence recorded with the results (budget, machine).")
flags.mark_flag_as_required("experiment")


def read_metrics(path):
    with open(path) as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


class TrainingStopped(Exception):
    """A training process ended without finishing (its own line is on stderr)."""

    def __init__(self, output_dir, status):
        super().__init__(output_dir, status)
        self.output_dir, self.status = output_dir, status


def last_grid(output_dir):
    """The run's last grid of generated images, or ``None``."""
    grids = sorted(glob.glob(os.path.join(REPO_ROOT, output_dir, "samples", "*.png")))
    return grids[-1] if grids else None


def run_one(argv, train=True):
    """Runs (or resumes) one training; returns its per-epoch metrics and wall
    time, or ``None`` when ``train=False`` finds no finished epoch yet.

    ``train=False`` only reads the epochs the run has finished so far.
    """
    start = time.time()
    output_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--output_dir="))
    finished = os.path.isdir(os.path.join(REPO_ROOT, output_dir, "export"))
    if train and not finished:
        status = subprocess.run(argv, cwd=REPO_ROOT).returncode
        if status:
            raise TrainingStopped(output_dir, status)
    metrics = os.path.join(REPO_ROOT, output_dir, "metrics.csv")
    rows = read_metrics(metrics) if os.path.exists(metrics) else []
    if not rows and not train:
        return None
    return {"finished": train or finished,
            "test_accuracy": [row["test_accuracy"] for row in rows],
            "final_test_accuracy": rows[-1]["test_accuracy"],
            "best_test_accuracy": max(row["test_accuracy"] for row in rows),
            "wall_seconds": round(time.time() - start, 1),
            "train_seconds": round(sum(row["seconds"] for row in rows), 1),
            "command": shlex.join(["python"] + argv[1:])}


def summarize(runs):
    finals = [run["final_test_accuracy"] for run in runs]
    bests = [run["best_test_accuracy"] for run in runs]
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    return {"final_mean": statistics.mean(finals), "final_std": spread(finals),
            "best_mean": statistics.mean(bests), "best_std": spread(bests)}


def record(name, kind, seed, run, result, results_dir, grid=None):
    """Adds one finished run to this process's ``result`` and writes the result
    files, merged under a lock with the runs other processes recorded for the
    same budget, as the file holds them now: this process's runs replace only
    their own kind and seed.

    ``grid``: an SGAN run's last grid of generated images; the result shows the
    lowest seed's (``samples_seed``), whichever process records it.
    """
    result.setdefault(kind, {})[str(seed)] = run
    os.makedirs(results_dir, exist_ok=True)
    base = os.path.join(results_dir, name)
    with open(base + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(base + ".json") as file:
                earlier = json.load(file)
        except (OSError, ValueError):
            earlier = {}
        merged = dict(result)
        if earlier.get("status") == "measured" and earlier.get("budget") == result["budget"]:
            for key in ("sgan", "baseline"):
                # Runs recorded before runs kept their own provenance: the file's.
                kept = {seed: {**provenance_of(earlier), **kept_run}
                        for seed, kept_run in earlier.get(key, {}).items()}
                if kept or result.get(key):
                    merged[key] = {**kept, **result.get(key, {})}
            merged["seeds"] = sorted(set(earlier["seeds"]) | set(result["seeds"]))
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
            shutil.copyfile(grid, os.path.join(results_dir, merged["samples"]))
        for key in ("sgan", "baseline"):
            if merged.get(key):
                merged[key + "_summary"] = summarize(
                    [merged[key][str(s)] for s in merged["seeds"] if str(s) in merged[key]])
        write_results(name, merged, results_dir)


def provenance_of(record):
    """The machine, commit and date a run (or a result file) was made on."""
    return {key: record[key] for key in ("machine", "commit", "date") if key in record}


def provenance_lines(result):
    """The machine, commit and date of the runs: one line when they share them,
    else a line for each run (runs merged from several commits or machines)."""
    made = {(kind, seed): {**provenance_of(result), **provenance_of(run)}
            for kind in ("sgan", "baseline") for seed, run in result.get(kind, {}).items()}
    shared = {tuple(sorted(p.items())) for p in made.values()}
    if len(shared) <= 1:
        p = dict(shared.pop()) if shared else result
        return [f"Machine: {p['machine']}; commit {p['commit']}; {p['date']}."]
    return ["", "Runs merged from more than one commit or machine:", ""] + [
        f"- {kind} seed {seed}: {p['machine']}; commit {p['commit']}; {p['date']}."
        for (kind, seed), p in sorted(made.items())]


def write_results(name, result, results_dir):
    base = os.path.join(results_dir, name)
    faults.write_text(base + ".json", json.dumps(result, indent=2))
    if result["status"] == "measured":
        plot(result, base + "_accuracy.png")
    faults.write_text(base + ".md", markdown(name, result))


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    for kind, style in (("sgan", "-"), ("baseline", "--")):
        for seed, run in sorted(result.get(kind, {}).items(), key=lambda item: int(item[0])):
            epochs = range(1, len(run["test_accuracy"]) + 1)
            axis.plot(epochs, run["test_accuracy"], style, label=f"{kind} seed {seed}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("test accuracy")
    axis.set_title(result["name"])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    faults.replace_atomically(path, lambda file: figure.savefig(file, format="png", dpi=100),
                              mode="wb")
    plt.close(figure)


def markdown(name, result):
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

        def accuracies(run):
            return (f"{run['final_test_accuracy']:.4f} | {run['best_test_accuracy']:.4f} | "
                    if run else "- | - | ")
        lines.append(
            f"| {seed}{f' (partial: {report.epochs(done)} so far)' if partial else ''} | "
            + accuracies(sgan) + accuracies(base)
            + (f"{sgan['train_seconds']:.0f} | " if sgan else "- | ")
            + (f"{base['train_seconds']:.0f} |" if base else "- |"))
        if partial and base and len(base["test_accuracy"]) >= done:
            same_epoch.append(f"\nSeed {seed} after {report.epochs(done)} (the SGAN's last so far): "
                              f"SGAN {sgan['final_test_accuracy']:.4f}, "
                              f"baseline {base['test_accuracy'][done - 1]:.4f}.")
    lines += same_epoch
    for kind in ("sgan", "baseline"):
        if kind + "_summary" in result:
            s = result[kind + "_summary"]
            lines.append(f"\n{kind}: final {s['final_mean']:.4f} +- {s['final_std']:.4f}, "
                         f"best {s['best_mean']:.4f} +- {s['best_std']:.4f}")
    lines += ["", f"![test accuracy per epoch]({name}_accuracy.png)", ""]
    if result.get("samples"):
        seed = result.get("samples_seed")
        lines += [f"![generated images{f' (SGAN seed {seed})' if seed is not None else ''}]"
                  f"({result['samples']})", ""]
    lines += ["Commands:", "", "```"]
    for seed in shown:
        for kind in ("sgan", "baseline"):
            if str(seed) in result.get(kind, {}):
                lines.append(result[kind][str(seed)]["command"])
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    name = FLAGS.experiment
    seeds = [int(seed) for seed in FLAGS.seeds]
    budget = {k: v for k, v in (("epochs", FLAGS.epochs),
                                ("steps_per_epoch", FLAGS.steps_per_epoch)) if v}
    budget.update(override.split("=", 1) for override in FLAGS.overrides)
    made = provenance.record()
    results_dir = os.path.join(REPO_ROOT, FLAGS.results_dir)   # as the report reads them
    result = {"name": name, "published": EXPERIMENTS[name]["published"],
              "published_accuracy": EXPERIMENTS[name]["published_accuracy"],
              "seeds": seeds, "note": FLAGS.note,
              "budget": ", ".join(f"{k}={v}" for k, v in budget.items()) or "the source's full budget",
              "machine": provenance.machine_line(made), "commit": made["commit"],
              "date": made["date"]}
    if FLAGS.not_measured:
        result["status"] = "not measured"
        result["commands"] = {
            kind: shlex.join(["python"] + training_command(
                name, 0, kind == "baseline", run_directory(FLAGS.runs_dir, name, kind, 0, {}),
                {}, FLAGS.data_dir)[1:])
            for kind in ("sgan", "baseline")}
        write_results(name, result, results_dir)
        return
    result["status"] = "measured"
    for seed in seeds:
        for kind in FLAGS.kinds:
            output_dir = run_directory(FLAGS.runs_dir, name, kind, seed, budget)
            argv = training_command(name, seed, kind == "baseline", output_dir, budget,
                                    FLAGS.data_dir)
            # Recorded as each run ends: partial results survive a stop.
            try:
                run = run_one(argv, train=not FLAGS.snapshot)
            except TrainingStopped as stopped:
                # The trainer printed why; its exit status is the runner's
                # (README, Faults: 75 = interrupted, 2 = bad input, ...).
                status = stopped.status if stopped.status > 0 else 128 - stopped.status
                print(f"run.py: the {kind} run of seed {seed} stopped with exit status "
                      f"{stopped.status} ({stopped.output_dir}); finished runs are recorded, "
                      "the same command resumes it, --snapshot records it as it is",
                      file=sys.stderr)
                sys.exit(status)
            if run is None:      # --snapshot: no epoch finished yet
                continue
            # This invocation's machine and commit (with --snapshot, the
            # snapshot's: the trainer's run directory records neither).
            run.update(provenance_of(result))
            record(name, kind, seed, run, result, results_dir,
                   grid=last_grid(output_dir) if kind == "sgan" else None)


if __name__ == "__main__":
    app.run(main)
