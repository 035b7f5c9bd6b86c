"""Writes the README's results table from ``experiments/results/*.json``.

    python experiments/report.py            # rewrites the table in README.md
    python experiments/report.py --check    # exits 1 if the README is stale

The table sits between the ``<!-- results:begin -->`` and
``<!-- results:end -->`` markers of README.md.
"""

import glob
import json
import os
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def epochs(count):
    """``"1 epoch"``, ``"5 epochs"``."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def table(results_dir=os.path.join(REPO_ROOT, "experiments", "results")):
    rows = ["| experiment | published | SGAN test accuracy | supervised-only | budget | seeds |",
            "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as file:
            result = json.load(file)
        if "published_accuracy" not in result:
            continue  # e.g. the input-pipeline benchmark
        name = result["name"]
        link = f"[{name}](experiments/results/{name}.md)"
        published = (f"{100 * result['published_accuracy']:.2f}%"
                     if result["published_accuracy"] is not None else "none")
        if result["status"] != "measured":
            rows.append(f"| {link} | {published} | not yet measured | | | |")
            continue
        cells = []
        for kind in ("sgan", "baseline"):
            summary = result.get(kind + "_summary")
            cells.append(f"{100 * summary['final_mean']:.2f} +- {100 * summary['final_std']:.2f}%"
                         if summary else "-")
        budget = result["budget"]
        sgan_runs = result.get("sgan", {})    # none yet when only baselines ran
        running = [run for run in sgan_runs.values() if not run.get("finished", True)]
        if running:
            done = min(len(run["test_accuracy"]) for run in running)
            budget += f" (partial: {epochs(done)} so far)"
            baselines = [result.get("baseline", {}).get(seed) for seed in sgan_runs]
            if all(run and len(run["test_accuracy"]) >= done for run in baselines):
                # Beside a partial SGAN: its baseline after as many epochs.
                accuracy = statistics.mean(run["test_accuracy"][done - 1] for run in baselines)
                cells[1] = f"{100 * accuracy:.2f}% after {epochs(done)}"
        seeds = len(sgan_runs) or len(result.get("baseline", {}))
        rows.append(f"| {link} | {published} | {cells[0]} | {cells[1]} | {budget} | {seeds} |")
    return "\n".join(rows)


def main():
    readme_path = os.path.join(REPO_ROOT, "README.md")
    with open(readme_path) as file:
        readme = file.read()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv:
        sys.exit(0 if updated == readme else 1)
    with open(readme_path, "w") as file:
        file.write(updated)


if __name__ == "__main__":
    main()
