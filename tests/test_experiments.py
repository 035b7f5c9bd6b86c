"""experiments/: every definition resolves, and the SVHN / CIFAR-10 code paths
(which cannot be downloaded here) run end to end on small generated data."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io

from sgan_keras import config as config_lib
from sgan_keras import distribute
from sgan_keras import onednn
from sgan_keras import presets
from sgan_keras import train
from sgan_keras import trainer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "experiments"))
import definitions  # noqa: E402
from definitions import EXPERIMENTS  # noqa: E402
import preloaded  # noqa: E402


def flag_values(argv):
    """The flag values of a ``--name=value`` command line, parsed by the CLI's own flags."""
    from absl import flags
    parsed = flags.FlagValues()
    config_lib.define_flags(parsed, preset_names=sorted(presets.PRESETS))
    parsed(["train", *argv])
    return {name: parsed[name].value for name in config_lib.flag_names()}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_resolves_to_its_preset(name):
    flags = EXPERIMENTS[name]["flags"]
    sgan, baseline = (definitions.training_command(name, 0, kind == "baseline", "out", {}, None)
                      for kind in ("sgan", "baseline"))
    config = train.resolve_config(flag_values(sgan[3:]))
    assert config.preset == flags["preset"]
    assert config.data.labels == flags["labels"]
    published = EXPERIMENTS[name]["published_accuracy"]
    assert published is None or 0 < published < 1
    for flag, value in flags.items():  # each flag reaches the config
        field = next(o.name for o in config_lib.OPTIONS.values() if o.flag == flag)
        assert config.value(field) == value, flag
    baseline = train.resolve_config(flag_values(baseline[3:]))
    assert baseline.supervised_only and baseline.preset == flags["preset"]


def test_the_runners_baseline_drops_the_gan_only_flags_and_the_sgan_the_baseline_only():
    gan_only = config_lib.gan_only_flags()
    assert {"fake_class", "generator_loss", "manifold_reg", "manifold_weight",
            "manifold_epsilon", "unsupervised_weight", "label_smoothing",
            "generator_activation"} <= set(gan_only)
    name = "mnist_improved_gan_100_softplus"     # defines the GAN-only generator_activation
    budget = {"epochs": 1, "label_smoothing": 0.1, "ema": 0.5}
    sgan = definitions.training_command(name, 0, False, "out", budget, None)
    baseline = definitions.training_command(name, 0, True, "out", budget, None)
    flags_of = lambda argv: {arg[2:].split("=")[0] for arg in argv[3:]}  # noqa: E731
    assert flags_of(sgan) - flags_of(baseline) == {"generator_activation", "label_smoothing"}
    assert flags_of(baseline) - flags_of(sgan) == {"supervised_only"}
    assert not flags_of(baseline) & set(gan_only)
    # And the SGAN drops the baseline's own flags, which its trainer refuses
    # without --supervised_only: such an override worked only with --kinds=baseline.
    assert set(config_lib.baseline_only_flags()) == {"baseline_epochs",
                                                     "baseline_steps_per_epoch",
                                                     "baseline_data_order"}
    budget = {"epochs": 1, "baseline_epochs": 3}
    sgan = definitions.training_command(name, 0, False, "out", budget, None)
    baseline = definitions.training_command(name, 0, True, "out", budget, None)
    assert "baseline_epochs" not in flags_of(sgan) and "baseline_epochs" in flags_of(baseline)
    train.resolve_config(flag_values(sgan[3:]))           # the trainer takes it
    assert definitions.run_directory("r", name, "sgan", 0, budget) == \
        os.path.join("r", name, "sgan_seed0_epochs1")


def write_svhn_fixture(directory, per_class=110, test_per_class=5, seed=0):
    """SVHN .mat files in the official layout: X is 32x32x3xN, digit 0 stored as 10."""
    rng = np.random.default_rng(seed)
    for name, count in (("train", per_class), ("test", test_per_class)):
        digits = np.repeat(np.arange(10), count)
        images = rng.integers(0, 256, size=(32, 32, 3, digits.size), dtype=np.uint8)
        labels = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)
        scipy.io.savemat(directory / f"{name}_32x32.mat", {"X": images, "y": labels})


def test_svhn_experiment_runs_with_its_baseline_on_generated_data(tmp_path):
    data_dir = tmp_path / "svhn"
    data_dir.mkdir()
    write_svhn_fixture(data_dir)
    # The runs, not the model: the SVHN experiment of the smallest step
    # (svhn_dcgan's: 11.6 and 7.3 CPU s a trainer here, svhn_lecouat's 14.6 and
    # 9.0), at a batch of 8.
    result = preloaded.run_script(      # forked; its trainers start as from a shell
        "experiments/run.py",
        ["--experiment=svhn_dcgan_1000", "--seeds=0", "--epochs=1", "--steps_per_epoch=1",
         f"--data_dir={data_dir}", "--overrides=tflite=false,batch_size=8",
         f"--runs_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}"],
        timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "svhn_dcgan_1000.json").read_text())
    assert report["status"] == "measured"
    for kind in ("sgan", "baseline"):
        assert 0.0 <= report[kind]["0"]["final_test_accuracy"] <= 1.0
        assert "--dataset=svhn" in report[kind]["0"]["command"]
        assert "--preset=svhn_dcgan" in report[kind]["0"]["command"]
    assert all("--batch_size=8" in report[kind]["0"]["command"] for kind in ("sgan", "baseline"))
    assert "--supervised_only" in report["baseline"]["0"]["command"]
    assert (tmp_path / "results" / "svhn_dcgan_1000_accuracy.png").exists()
    assert "seed" in (tmp_path / "results" / "svhn_dcgan_1000.md").read_text()


def test_a_training_that_stops_gets_one_line_and_its_exit_status(tmp_path):
    def run_py(*arguments):     # forked; its trainer starts as from a shell
        return preloaded.run_script(
            "experiments/run.py",
            ["--experiment=svhn_lecouat_1000", "--seeds=3", "--kinds=sgan",
             f"--runs_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}",
             *arguments], timeout=300)
    # Flags the trainer would refuse: refused before it starts, the run named.
    result = run_py("--overrides=batch_size=0", f"--data_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "run.py: the sgan run of seed 3: --batch_size must be positive, got 0")
    # A training that stops: the trainer's line, then run.py's, with its status.
    result = run_py(f"--data_dir={tmp_path / 'missing'}")
    assert result.returncode == 2, result.stderr[-2000:]    # the trainer's bad-input status
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("sgan_keras.train: error: data_dir") and "missing" in lines[-2]
    assert lines[-1].startswith("run.py: the sgan run of seed 3 stopped with exit status 2")
    assert not (tmp_path / "results" / "svhn_lecouat_1000.json").exists()


def test_any_tfds_image_set_trains_with_its_class_names(tmp_path):
    import tensorflow_datasets as tfds

    config = train.resolve_config(flag_values([
        "--dataset=tfds:fashion_mnist", "--preset=mnist_gans_in_action", "--labels=20",
        "--procedure=unified", "--epochs=1", "--steps_per_epoch=1", "--batch_size=4",
        "--eval_batch_size=8", f"--output_dir={tmp_path / 'run'}", f"--data_dir={tmp_path}",
        "--notflite"]))
    assert presets.run_name(config) == (
        "tfds-fashion_mnist_mnist_gans_in_action_labels20_unified_batch_size4_epochs1_"
        "steps_per_epoch1_seed0")
    with pytest.raises(config_lib.ConfigError, match="--dataset=tfds:fashion_mnist needs "
                       "--preset, whose networks set the image shape: 28x28x1: mnist_blog"):
        train.resolve_config(flag_values(["--dataset=tfds:fashion_mnist"]))
    with tfds.testing.mock_data(num_examples=40):
        trainer.train(config)
    names = json.loads((tmp_path / "run" / "class_names.json").read_text())
    assert names[:2] == ["T-shirt/top", "Trouser"] and len(names) == 10
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()


def test_cifar10_trains_through_the_tfds_path(tmp_path):
    import tensorflow_datasets as tfds

    # The data path, not the networks: the smallest 32x32x3 preset (its step
    # 1/40 of cifar10_improved_gan's; resolving the default one is test_config's).
    config = train.resolve_config(flag_values([
        "--dataset=cifar10", "--preset=svhn_dcgan", "--labels=10", "--epochs=1",
        "--steps_per_epoch=1", "--batch_size=4", "--eval_batch_size=8",
        f"--output_dir={tmp_path / 'run'}", f"--data_dir={tmp_path}", "--notflite"]))
    with tfds.testing.mock_data(num_examples=100):
        trainer.train(config)
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 2


PARTIAL = """
import sys
sys.path.insert(0, "experiments")
import run
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0, 1],
          "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d",
          "sgan": {"0": {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "wall_seconds": 1.0,
                         "train_seconds": 1.0, "command": "cmd0", "test_accuracy": [0.8]}}}
run.write_results("x", result, sys.argv[1])
"""


ELSEWHERE = """
import os, sys
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "train_seconds": 1.0,
        "test_accuracy": [0.8]}
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "epochs=1", "machine": "m", "commit": "c",
          "date": "d"}
for runs, results in ((sys.argv[1] + "/runs", sys.argv[1]),
                      ("experiments/runs", os.path.join(run.REPO_ROOT, "experiments/results"))):
    command = f"python -m sgan_keras.train --output_dir={runs}/x/sgan_seed0_epochs1"
    print(run.runner_command({**result, "sgan": {"0": {**run_, "command": command}}}, results))
"""


def test_the_command_to_resume_names_the_runs_and_results_directories_it_was_given(
        tmp_path):
    """Without them, the command a result file shows would train new runs in
    experiments/runs and record them in experiments/results."""
    result = preloaded.run_code(ELSEWHERE, [str(tmp_path)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"python experiments/run.py --experiment=x --seeds=0 --kinds=sgan --epochs=1 "
        f"--runs_dir={tmp_path}/runs --results_dir={tmp_path}",
        "python experiments/run.py --experiment=x --seeds=0 --kinds=sgan --epochs=1"]


RUN_ONLY_OVERRIDES = """
import sys
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "train_seconds": 1.0,
        "test_accuracy": [0.8]}
command = ("python -m sgan_keras.train --dataset=mnist --seed=0 --output_dir=experiments/runs/"
           "x/{kind}_seed0_epochs10_ema0.999 --epochs=10 --ema=0.999 --tflite=false "
           "--checkpoint_every_steps=50 --data_dir=../data")
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "epochs=10, ema=0.999", "machine": "m", "commit": "c",
          "date": "d", "sgan": {"0": {**run_, "command": command.format(kind="sgan")}},
          "baseline": {"0": {**run_, "command": command.format(kind="baseline")
                                     + " --supervised_only"}}}
print(run.runner_command(result))
# An experiment that sets a run-only flag itself: run.py refuses it in --overrides.
run.EXPERIMENTS["x"] = {"flags": {"tflite": "false"}}
print(run.runner_command(result))
"""


def test_the_command_to_resume_keeps_the_run_only_overrides_the_runs_were_given():
    """It gave the budget's overrides alone: resumed with it, a run given
    checkpoint_every_steps=50 checkpointed only at its epochs' ends, and one
    given tflite=false trained again to make the TFLite export it had skipped."""
    result = preloaded.run_code(RUN_ONLY_OVERRIDES, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "python experiments/run.py --experiment=x --seeds=0 --epochs=10 "
        "--overrides=ema=0.999,tflite=false,checkpoint_every_steps=50 --data_dir=../data",
        "python experiments/run.py --experiment=x --seeds=0 --epochs=10 "
        "--overrides=ema=0.999,checkpoint_every_steps=50 --data_dir=../data"]


def test_partial_results_are_written_while_seeds_remain(tmp_path):
    # run.py defines absl flags of the same names as the trainer: its own process.
    result = preloaded.run_code(PARTIAL, [str(tmp_path)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "x.md").read_text()
    assert "\n| 0 | 0.8000 | 0.8500 |" in text and "\n| 1 | " not in text


PARTIAL_BESIDE_BASELINE = """
import sys
sys.path.insert(0, "experiments")
import run
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d",
          "sgan": {"0": {"finished": False, "final_test_accuracy": 0.6, "best_test_accuracy": 0.6,
                         "train_seconds": 1.0, "command": "s", "test_accuracy": [0.3, 0.6]}},
          "baseline": {"0": {"finished": True, "final_test_accuracy": 0.7,
                             "best_test_accuracy": 0.7, "train_seconds": 1.0, "command": "b",
                             "test_accuracy": [0.4, 0.55, 0.65, 0.7]}}}
run.write_results("x", result, sys.argv[1])
"""


def test_partial_result_compares_with_the_baseline_after_as_many_epochs(tmp_path):
    result = preloaded.run_code(PARTIAL_BESIDE_BASELINE, [str(tmp_path)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "x.md").read_text()
    assert "| 0 (partial: 2 epochs so far) | 0.6000 |" in text
    assert "Seed 0 after 2 epochs (the SGAN's last so far): SGAN 0.6000, baseline 0.5500." in text


ACCURACY_CURVES = """
import json, sys
sys.path.insert(0, "experiments")
import run
def result(sgan_steps, baseline_steps):
    return {"sgan": {"0": {"steps_per_epoch": sgan_steps, "test_accuracy": [0.5, 0.6]}},
            "baseline": {"1": {"steps_per_epoch": baseline_steps,
                               "test_accuracy": [0.3, 0.4, 0.5]}}}
# Recorded before epoch lengths were: read from the command (GANs in Action's baseline
# 4 steps an epoch, its GAN 1,000), unless it no longer parses.
command = ("python -m sgan_keras.train --dataset=mnist --preset=mnist_gans_in_action "
           "--labels=100 --seed=0 --output_dir=runs/x")
old = result(None, None)
old["sgan"]["0"]["command"], old["baseline"]["1"]["command"] = command, command + " --supervised_only"
unparsed = result(None, None)
unparsed["sgan"]["0"]["command"] = command + " --no_such_flag=1"
print(json.dumps([run.accuracy_curves(result(1000, 4)), run.accuracy_curves(result(10, 5)),
                  run.accuracy_curves(result(10, 10)), run.accuracy_curves(result(None, 4)),
                  run.accuracy_curves(old), run.accuracy_curves(unparsed)]))
"""


def test_the_accuracy_plot_is_against_steps_where_the_runs_epochs_differ():
    """GANs in Action's baseline trains 30 epochs of 4 steps, its GAN 8 of
    1,000: against epochs, the baseline's curve read as the longer run."""
    result = preloaded.run_code(ACCURACY_CURVES, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    unequal, close, equal, unrecorded, old, unparsed = json.loads(
        result.stdout.strip().splitlines()[-1])
    assert unequal == ["training step", True, [["sgan seed 0", "-", [1000, 2000], [0.5, 0.6]],
                                               ["baseline seed 1", "--", [4, 8, 12],
                                                [0.3, 0.4, 0.5]]]]
    assert close[:2] == ["training step", False] and close[2][1][2] == [5, 10, 15]
    for same in equal, unrecorded, unparsed:
        assert same[:2] == ["epoch", False] and same[2][1][2] == [1, 2, 3]
    assert old[:2] == ["training step", True]
    assert [xs for _, _, xs, _ in old[2]] == [[1000, 2000], [4, 8, 12]]


PARTIAL_BASELINE = """
import sys
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.5, "best_test_accuracy": 0.5, "train_seconds": 1.0,
        "command": "b", "test_accuracy": [0.4, 0.5]}
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d",
          "sgan": {"0": {**run_, "final_test_accuracy": 0.7, "best_test_accuracy": 0.7,
                         "test_accuracy": [0.4, 0.5, 0.6, 0.7], "finished": True}},
          "baseline": {"0": {**run_, "finished": False}}}
print(run.markdown("x", result))
"""


def test_a_partial_baseline_is_marked_in_the_table_of_its_seed():
    """A baseline recorded by --snapshot was shown as if it had finished,
    beside a finished SGAN."""
    result = preloaded.run_code(PARTIAL_BASELINE, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\n| 0 | 0.7000 | 0.7000 | 0.5000 (partial: 2 epochs so far) | 0.5000 | 1 | 1 |\n" \
        in result.stdout


MERGED_FROM_TWO_COMMITS = """
import json, os, sys
sys.path.insert(0, "experiments")
import run
results = sys.argv[1]
accuracy = {"final_test_accuracy": 0.6, "best_test_accuracy": 0.6, "train_seconds": 1.0,
            "test_accuracy": [0.6]}
earlier = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
           "status": "measured", "budget": "b", "machine": "old machine", "commit": "aaa",
           "date": "day 1", "sgan": {"0": {**accuracy, "finished": False, "command": "s"}}}
run.write_results("x", earlier, results)
print(open(os.path.join(results, "x.md")).read())
later = {**earlier, "machine": "new machine", "commit": "bbb", "date": "day 2"}
del later["sgan"]
run.record("x", "baseline", 0, {**accuracy, "command": "b", **run.provenance_of(later)},
           later, results)
"""


def test_merged_runs_keep_the_commit_and_machine_each_was_made_on(tmp_path):
    """run.py records a baseline beside an SGAN run an earlier commit made: the
    result file names each run's own machine, commit and date."""
    result = preloaded.run_code(MERGED_FROM_TWO_COMMITS, [str(tmp_path)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Machine: old machine; commit aaa; day 1." in result.stdout    # one made them all
    text = (tmp_path / "x.md").read_text()
    assert "Runs merged from more than one commit or machine. A run names" in text
    assert "- sgan seed 0: old machine; commit aaa; day 1." in text
    assert "- baseline seed 0: new machine; commit bbb; day 2." in text
    merged = json.loads((tmp_path / "x.json").read_text())
    assert merged["sgan"]["0"]["commit"] == "aaa" and merged["baseline"]["0"]["commit"] == "bbb"


# What run.record is given, for the scripts below (each run in a process of its own).
RECORD_PRELUDE = """
import json, os, sys
sys.path.insert(0, "experiments")
import run
results = sys.argv[1]
def made(accuracy, finished=True):
    return {"final_test_accuracy": accuracy, "best_test_accuracy": accuracy,
            "train_seconds": 1.0, "test_accuracy": [accuracy], "finished": finished,
            "command": f"run {accuracy}"}
def invocation(seeds):     # main()'s result of one run.py process
    return {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": seeds,
            "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d"}
"""


def merged_result_of(script, results_dir):
    """The result file ``script`` (after RECORD_PRELUDE) leaves in ``results_dir``."""
    result = preloaded.run_code(RECORD_PRELUDE + script, [str(results_dir)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((results_dir / "x.json").read_text())


TWO_PROCESSES = """
grid = {seed: os.path.join(results, f"grid{seed}.png") for seed in (0, 1)}
for seed in grid:
    open(grid[seed], "w").write(f"seed {seed}")
first, second = invocation([0]), invocation([1])
run.record("x", "sgan", 1, made(0.5, finished=False), second, results)   # an old partial
run.record("x", "sgan", 0, made(0.8), first, results, grid=grid[0])
run.record("x", "sgan", 1, made(0.9), second, results, grid=grid[1])      # finishes it
run.record("x", "baseline", 0, made(0.6), first, results)
"""


def test_runs_recorded_by_two_processes_keep_each_others_latest(tmp_path):
    """Two run.py processes, one seed each, merge into one result file: a
    process's later record does not write back its stale copy of the other's
    run, and the samples shown are the lowest seed's, whichever finished last."""
    merged = merged_result_of(TWO_PROCESSES, tmp_path)
    assert merged["sgan"]["1"]["final_test_accuracy"] == 0.9 and merged["sgan"]["1"]["finished"]
    assert merged["sgan"]["0"]["final_test_accuracy"] == 0.8
    assert merged["baseline"]["0"]["final_test_accuracy"] == 0.6
    assert merged["seeds"] == [0, 1]
    assert merged["sgan_summary"]["final_mean"] == pytest.approx(0.85)
    assert merged["samples_seed"] == 0
    assert (tmp_path / "x_samples.png").read_text() == "seed 0"
    assert "![generated images (SGAN seed 0)](x_samples.png)" in (tmp_path / "x.md").read_text()


OLDER_FILE = """
# A file written before the grid's seed was recorded: seed 0's grid, no samples_seed.
older = {**invocation([0]), "sgan": {"0": made(0.8)}, "samples": "x_samples.png"}
json.dump(older, open(os.path.join(results, "x.json"), "w"))
open(os.path.join(results, "x_samples.png"), "w").write("seed 0")
open(os.path.join(results, "grid1.png"), "w").write("seed 1")
run.record("x", "sgan", 1, made(0.9), invocation([1]), results,
           grid=os.path.join(results, "grid1.png"))
"""


def test_a_higher_seed_keeps_the_grid_of_a_file_recorded_without_its_seed(tmp_path):
    """A result file from before ``samples_seed``, with one SGAN run, holds
    that run's grid: a run of a higher seed merged into it does not replace it."""
    merged = merged_result_of(OLDER_FILE, tmp_path)
    assert merged["seeds"] == [0, 1] and merged["samples_seed"] == 0
    assert (tmp_path / "x_samples.png").read_text() == "seed 0"
    assert "![generated images (SGAN seed 0)](x_samples.png)" in (tmp_path / "x.md").read_text()


def test_a_shortened_budget_trains_in_a_directory_of_its_own():
    """A finished run is reused, not retrained: only for the budget it ran."""
    full = definitions.run_directory("experiments/runs", "x", "sgan", 0, {})
    assert full == os.path.join("experiments/runs", "x", "sgan_seed0")
    short = definitions.run_directory("experiments/runs", "x", "sgan", 0,
                                      {"epochs": 8, "ema": "0.999"})
    assert short == os.path.join("experiments/runs", "x", "sgan_seed0_epochs8_ema0.999")
    # The baseline trains none of the GAN's flags: it retrained for each of them.
    gan_only = {"epochs": 8, "update_order": "split", "manifold_reg": "true"}
    assert definitions.run_directory("r", "x", "baseline", 0, gan_only) == \
        os.path.join("r", "x", "baseline_seed0_epochs8")
    assert definitions.run_directory("r", "x", "sgan", 0, gan_only) == \
        os.path.join("r", "x", "sgan_seed0_epochs8_update_ordersplit_manifold_regtrue")


@pytest.mark.parametrize("kinds", ["baselines", ""])    # none ran nothing and exited 0
def test_runner_refuses_an_unknown_kind(tmp_path, kinds):
    result = preloaded.run_script(      # forked: 0.1 s less than an interpreter
        "experiments/run.py", ["--experiment=svhn_lecouat_1000", f"--kinds={kinds}",
                               f"--runs_dir={tmp_path}", f"--results_dir={tmp_path}"],
        timeout=60)
    assert result.returncode == 1 and "--kinds takes sgan, baseline or both" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argument, message", [
    ("--seeds=0,a", "--seeds takes whole numbers"), ("--seeds=", "--seeds takes whole numbers"),
    ("--epochs=0", "--epochs=0: 0 is not a positive integer"),
    ("--steps_per_epoch=0", "--steps_per_epoch=0: 0 is not a positive integer")])
def test_runner_refuses_seeds_that_are_no_numbers_and_a_budget_of_zero(tmp_path, argument,
                                                                         message):
    """--epochs=0 was taken for no shortening: the source's full budget."""
    result = preloaded.run_script(      # forked: 0.1 s less than an interpreter
        "experiments/run.py", ["--experiment=svhn_lecouat_1000", argument,
                               f"--runs_dir={tmp_path}", f"--results_dir={tmp_path}"],
        timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr
    assert not list(tmp_path.iterdir())


def test_report_counts_the_seeds_of_a_file_with_only_baselines(tmp_path):
    import report

    result = {"name": "x", "published_accuracy": None, "status": "measured", "budget": "b",
              "baseline": {"0": {"finished": True, "test_accuracy": [0.4]},
                           "1": {"finished": True, "test_accuracy": [0.5]}},
              "baseline_summary": {"final_mean": 0.45, "final_std": 0.07}}
    (tmp_path / "x.json").write_text(json.dumps(result))
    assert report.table(str(tmp_path)).splitlines()[-1].endswith(
        "| - | 45.00 +- 7.07% | b | 2 |")


def test_report_sets_a_partial_sgan_beside_its_baseline_after_as_many_epochs(tmp_path):
    import report

    result = {"name": "x", "published_accuracy": None, "status": "measured", "budget": "b",
              "sgan": {"0": {"finished": False, "test_accuracy": [0.3, 0.6]}},
              "sgan_summary": {"final_mean": 0.6, "final_std": 0.0},
              "baseline": {"0": {"finished": True, "test_accuracy": [0.4, 0.55, 0.65]}},
              "baseline_summary": {"final_mean": 0.65, "final_std": 0.0}}
    (tmp_path / "x.json").write_text(json.dumps(result))
    row = report.table(str(tmp_path)).splitlines()[-1]
    assert "| 60.00% after 2 epochs | 55.00% after 2 epochs | b (partial: 2 epochs so far" in row
    result["baseline"]["0"]["test_accuracy"] = [0.4]     # shorter than the SGAN: its final
    (tmp_path / "x.json").write_text(json.dumps(result))
    assert "| 60.00% after 2 epochs | 40.00% |" in report.table(str(tmp_path))


PARTIAL_BESIDE_SHORTER_EPOCHS = """
import json, sys
sys.path.insert(0, "experiments")
import run
result = json.loads(sys.argv[1])
print(run.markdown("x", {**result, "published": "p", "seeds": [0], "machine": "m",
                         "commit": "c", "date": "d"}))
"""


def test_a_partial_sgan_is_not_set_beside_a_baseline_of_shorter_epochs(tmp_path):
    """GANs in Action's baseline trains 30 epochs of 4 steps beside its GAN's
    8 of 1,000: a partial SGAN after 2 epochs (2,000 steps) was set beside its
    baseline after 8 steps. run.py records each run's epoch length."""
    import report

    finished_run(tmp_path / "runs")
    assert run_py(tmp_path).returncode == 0
    recorded = json.loads((tmp_path / "results" / "svhn_lecouat_1000.json").read_text())
    config = definitions.trainer_config(definitions.training_command(
        "svhn_lecouat_1000", 0, False, "out", {}, None))
    assert recorded["sgan"]["0"]["steps_per_epoch"] == config.training.steps_per_epoch
    run = {"train_seconds": 1.0, "command": "c"}
    result = {"name": "x", "published_accuracy": None, "status": "measured", "budget": "b",
              "sgan": {"0": {**run, "finished": False, "test_accuracy": [0.3, 0.6],
                             "final_test_accuracy": 0.6, "best_test_accuracy": 0.6,
                             "steps_per_epoch": 1000}},
              "baseline": {"0": {**run, "finished": True, "test_accuracy": [0.4, 0.5, 0.7],
                                 "final_test_accuracy": 0.7, "best_test_accuracy": 0.7,
                                 "steps_per_epoch": 4}}}
    (tmp_path / "x.json").write_text(json.dumps(result))
    assert "| 60.00% after 2 epochs | 70.00% |" in report.table(str(tmp_path))
    shown = preloaded.run_code(PARTIAL_BESIDE_SHORTER_EPOCHS, [json.dumps(result)], timeout=60)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "| 0 (partial: 2 epochs so far) | 0.6000 |" in shown.stdout
    assert "Seed 0 after 2 epochs" not in shown.stdout


def test_readme_results_table_matches_the_result_files():
    result = subprocess.run([sys.executable, "experiments/report.py", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, "README.md is stale: run python experiments/report.py"


def report_checkout(tmp_path):
    """``tmp_path`` as a checkout holding report.py alone, for it to run there on
    its own README; returns its (empty) results directory."""
    results = tmp_path / "experiments" / "results"
    results.mkdir(parents=True)
    shutil.copy(os.path.join(REPO_ROOT, "experiments", "report.py"), tmp_path / "experiments")
    return results


@pytest.mark.parametrize("readme, line", [
    ("<!-- results:begin -->\n| stale |\n<!-- results:end -->\n",
     "report.py --check: README.md's results table differs from experiments/results/*.json; "
     "run python experiments/report.py"),
    ("no table here\n", "report.py: README.md has no results table between "
                         "<!-- results:begin --> and <!-- results:end -->")])
def test_report_check_says_why_it_fails(tmp_path, readme, line):
    # A stale table exited 1 without a word; a README without the markers was a traceback.
    report_checkout(tmp_path)
    (tmp_path / "README.md").write_text(readme)
    result = subprocess.run([sys.executable, "experiments/report.py", "--check"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (1, line)


def test_report_reads_and_writes_a_utf8_readme_under_an_ascii_locale(tmp_path):
    """The README holds '‖': under ``PYTHONUTF8=0 LC_ALL=C`` report.py read it
    as ASCII, a UnicodeDecodeError traceback."""
    import report
    results = report_checkout(tmp_path)
    (tmp_path / "README.md").write_text(
        "g / \u2016v\u2016\n<!-- results:begin -->\n| stale |\n<!-- results:end -->\n",
        encoding="utf-8")
    result = subprocess.run([sys.executable, "experiments/report.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C",
                                 "PYTHONPATH": str(REPO_ROOT)})  # this checkout's sgan_keras
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == (
        f"g / \u2016v\u2016\n<!-- results:begin -->\n{report.table(str(results))}\n"
        "<!-- results:end -->\n")


def test_report_without_a_readme_says_so_in_one_line(tmp_path):
    report_checkout(tmp_path)
    result = subprocess.run([sys.executable, "experiments/report.py", "--check"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (
        1, f"report.py: cannot read {tmp_path / 'README.md'} (No such file or directory)")


def test_report_refuses_an_argument_it_does_not_know_and_leaves_the_readme(tmp_path):
    """A typo of --check rewrote the README without a word."""
    report_checkout(tmp_path)
    readme = "<!-- results:begin -->\n| stale |\n<!-- results:end -->\n"
    (tmp_path / "README.md").write_text(readme)
    result = subprocess.run([sys.executable, "experiments/report.py", "--chek"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (
        2, "report.py: unknown arguments ['--chek']; usage: python experiments/report.py "
           "[--check]")
    assert (tmp_path / "README.md").read_text() == readme


def test_report_names_a_result_file_it_cannot_read_in_one_line(tmp_path):
    """A result file in a merge conflict was a JSONDecodeError traceback."""
    report_checkout(tmp_path)
    readme = "<!-- results:begin -->\n<!-- results:end -->\n"
    (tmp_path / "README.md").write_text(readme)
    damaged = tmp_path / "experiments" / "results" / "x.json"
    damaged.write_text("<<<<<<< HEAD\n{}\n")
    for arguments in ([], ["--check"]):
        result = subprocess.run([sys.executable, "experiments/report.py", *arguments],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr.strip()) == (
            1, f"report.py: {damaged} cannot be read as JSON (Expecting value: line 1 column "
               "1 (char 0)): fix it, or move it away")
    assert (tmp_path / "README.md").read_text() == readme


def finished_run(runs_dir, name="svhn_lecouat_1000", kind="sgan", seed=0, budget=None,
                 **changed):
    """A run directory as the trainer leaves a finished run of run.py's command
    (``changed``: fields its flags.json has otherwise); returns its path."""
    output_dir = definitions.run_directory(str(runs_dir), name, kind, seed, budget or {})
    config = definitions.trainer_config(definitions.training_command(
        name, seed, kind == "baseline", output_dir, budget or {}, None))
    run = pathlib.Path(output_dir)
    (run / "export").mkdir(parents=True)
    (run / "export" / "saved_model.pb").write_bytes(b"")
    (run / "export" / "accuracy.json").write_text("{}")
    (run / "flags.json").write_text(json.dumps(config.replace(**changed).to_dict()))
    (run / "metrics.csv").write_text("epoch,test_accuracy,seconds\n1,0.5,2.0\n2,0.625,2.0\n")
    return run


def run_py(tmp_path, *arguments):
    """run.py on svhn_lecouat_1000's seed 0, forked from a process that has
    imported TensorFlow (tests/preloaded.py): 4 s less each."""
    return preloaded.run_script(
        "experiments/run.py",
        ["--experiment=svhn_lecouat_1000", "--seeds=0", "--kinds=sgan",
         f"--runs_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}", *arguments],
        timeout=120)


def test_not_measured_commands_train_the_budget_the_file_names(tmp_path):
    """--not_measured wrote the full budget's commands into a file whose budget
    said epochs=2."""
    result = run_py(tmp_path, "--not_measured", "--epochs=2", "--overrides=ema=0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "results" / "svhn_lecouat_1000.json").read_text())
    assert written["budget"] == "epochs=2, ema=0.5" and written["status"] == "not measured"
    for kind, command in written["commands"].items():
        assert " --epochs=2 " in command and " --ema=0.5" in command, (kind, command)
        assert f"svhn_lecouat_1000/{kind}_seed0_epochs2_ema0.5 " in command, command


def test_not_measured_results_take_an_empty_note(tmp_path):
    """--note= kept the file's note for results not measured (it empties a
    measured file's)."""
    path = tmp_path / "results" / "svhn_lecouat_1000.json"
    for arguments, note in ((["--note=no SVHN here"], "no SVHN here"), (["--note="], "")):
        result = run_py(tmp_path, "--not_measured", *arguments)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(path.read_text())["note"] == note, arguments


def test_a_finished_run_of_other_flags_is_refused_not_recorded(tmp_path):
    """A run directory is reused only for the command that trained it: one
    that ran other flags (here another weight average) is not recorded as
    this experiment's."""
    finished_run(tmp_path / "runs", ema_decay=0.5)
    result = run_py(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: the sgan run of seed 0: {tmp_path}/runs/svhn_lecouat_1000/sgan_seed0 holds a run of other flags (--ema (ema_decay)) than "
        "this command's; move it away or pass another --runs_dir")
    assert not (tmp_path / "results").exists()


def test_a_finished_run_of_a_newer_version_is_refused_not_recorded(tmp_path):
    """A run whose flags.json has fields this version does not know was
    trained by a newer sgan_keras, under options this one cannot compare: it
    is not recorded as this experiment's (config.fields_of_a_newer_version)."""
    run = finished_run(tmp_path / "runs")
    flags = json.loads((run / "flags.json").read_text())
    (run / "flags.json").write_text(json.dumps({**flags, "g_clip": 1.0}))
    result = run_py(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: the sgan run of seed 0: {run} holds a run of a newer sgan_keras (its "
        "flags.json has g_clip, which this version does not know); record it with that "
        "version, or move it away")
    assert not (tmp_path / "results").exists()


def test_a_stopped_run_of_other_flags_is_refused_before_its_trainer_runs(tmp_path):
    """A stopped run of other flags went to the trainer, which refused it
    advising --output_dir or --overwrite, and run.py's line then said that
    the same command resumes it."""
    run = finished_run(tmp_path / "runs", ema_decay=0.5)
    shutil.rmtree(run / "export")
    result = run_py(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "sgan_keras.train" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: the sgan run of seed 0: {run} holds a run of other flags (--ema (ema_decay)) "
        "than this command's; move it away or pass another --runs_dir")
    assert not pathlib.Path(f"{run}.sessions.json").exists()


def test_a_finished_run_is_recorded_once_and_results_of_another_budget_stay(tmp_path):
    finished_run(tmp_path / "runs")
    assert run_py(tmp_path, "--note=first").returncode == 0
    path = tmp_path / "results" / "svhn_lecouat_1000.json"
    recorded = json.loads(path.read_text())
    run = recorded["sgan"]["0"]
    # Trained before run.py recorded its sessions: where is unknown, not this commit.
    assert run["final_test_accuracy"] == 0.625 and run["finished"]
    assert run["commit"] == run["machine"] == "not recorded"
    assert recorded["note"] == "first"
    before = path.read_bytes()
    result = run_py(tmp_path)       # again: its record stays, and so does the note
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is recorded already" in result.stderr and path.read_bytes() == before
    result = run_py(tmp_path, "--note=second")   # a new note for the runs it holds
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(path.read_text()) == {**recorded, "note": "second"}
    assert "second" in (tmp_path / "results" / "svhn_lecouat_1000.md").read_text()
    before = path.read_bytes()
    result = run_py(tmp_path, "--epochs=1")      # another budget: refused before training
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"run.py: {tmp_path / 'results' / 'svhn_lecouat_1000'}.json holds results of another "
        "budget (the source's full budget; this command: epochs=1)")
    assert path.read_bytes() == before
    assert not (tmp_path / "runs" / "svhn_lecouat_1000" / "sgan_seed0_epochs1").exists()


def test_a_seed_or_kind_given_twice_is_run_and_shown_once(tmp_path):
    finished_run(tmp_path / "runs")
    result = run_py(tmp_path, "--seeds=0,0", "--kinds=sgan,sgan")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is recorded already" not in result.stderr   # the second sgan found it recorded
    written = json.loads((tmp_path / "results" / "svhn_lecouat_1000.json").read_text())
    assert written["seeds"] == [0] and written["asked"] == {"sgan": [0]}
    text = (tmp_path / "results" / "svhn_lecouat_1000.md").read_text()
    assert text.count("\n| 0 | ") == 1 and "--seeds=0,0" not in text


def test_overrides_in_another_order_are_the_same_budget_and_runs(tmp_path):
    """The budget, which names the runs' directories and the result file's
    budget, does not depend on the order of --overrides."""
    finished_run(tmp_path / "runs", budget={"epochs": "2", "batch_size": "8", "ema": "0.5"})
    for overrides in ("batch_size=8,ema=0.5", "ema=0.5,batch_size=8"):
        result = run_py(tmp_path, "--epochs=2", f"--overrides={overrides}")
        assert result.returncode == 0, result.stderr[-2000:]
    assert "is recorded already" in result.stderr
    assert json.loads((tmp_path / "results" / "svhn_lecouat_1000.json").read_text())[
        "budget"] == "epochs=2, batch_size=8, ema=0.5"


@pytest.mark.parametrize("damaged, message", [
    ("results", "cannot be read as JSON (Expecting value"),
    ("sessions", "cannot be read as JSON (Expecting value"),
    ("flags", "cannot be read as JSON (Expecting value"),
    ("metrics", "has a row without a number in its test_accuracy or seconds column"),
    ("no epochs", "holds no epoch, so the run's test accuracy is unknown")])
def test_a_damaged_file_is_refused_in_one_line_not_replaced(tmp_path, damaged, message):
    """A result file in a merge conflict was replaced by this process's runs
    alone (the others' records lost); a damaged run file was a traceback."""
    run = finished_run(tmp_path / "runs")
    results = tmp_path / "results" / "svhn_lecouat_1000.json"
    path = {"results": results, "sessions": pathlib.Path(f"{run}.sessions.json"),
            "flags": run / "flags.json", "metrics": run / "metrics.csv",
            "no epochs": run / "metrics.csv"}[damaged]
    path.parent.mkdir(exist_ok=True)
    text = {"metrics": "epoch,test_accuracy,seconds\n1,,2.0\n",
            "no epochs": "epoch,test_accuracy,seconds\n"}.get(damaged, "<<<<<<< HEAD\n{}\n")
    path.write_text(text)
    result = run_py(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("run.py: ")
    assert f"{path} {message}" in result.stderr
    assert path.read_text() == text


INTERRUPTED_WHILE_RECORDING = """
import sys
sys.path.insert(0, "experiments")
from absl import app
import run
def interrupted(result, path):      # SIGTERM while the curves are drawn
    raise run.Interrupted("SIGTERM")
run.plot = interrupted
sys.argv = ["run.py", *sys.argv[1:]]
app.run(run.main)
"""


def test_a_stop_while_recording_leaves_the_run_to_record_again(tmp_path):
    """The JSON was written first: a stop before the Markdown left a run the
    JSON held and the Markdown did not, and the same command then kept that
    record ('recorded already') without writing the Markdown again."""
    finished_run(tmp_path / "runs")
    result = preloaded.run_code(
        INTERRUPTED_WHILE_RECORDING,
        ["--experiment=svhn_lecouat_1000", "--seeds=0", "--kinds=sgan",
         f"--runs_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}"],
        timeout=120)
    assert result.returncode == 75, result.stderr[-2000:]
    result = run_py(tmp_path)
    assert result.returncode == 0 and "recorded already" not in result.stderr, result.stderr
    assert "\n| 0 | 0.6250 | 0.6250 |" in (
        tmp_path / "results" / "svhn_lecouat_1000.md").read_text()


def test_runs_and_results_directories_under_the_home_directory(tmp_path, monkeypatch):
    """--runs_dir=~/runs: the trainer trained in the home directory, but run.py
    looked for the run (and wrote its sessions file) in a directory named ~
    in the repository, and --results_dir=~/results wrote there too."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = finished_run(tmp_path / "home" / "runs")
    (run / "samples").mkdir()
    (run / "samples" / "epoch_0002.png").write_bytes(b"grid")    # nor did it find the grid
    result = run_py(tmp_path, "--runs_dir=~/runs", "--results_dir=~/results")
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads((tmp_path / "home" / "results" / "svhn_lecouat_1000.json").read_text())
    assert recorded["sgan"]["0"]["final_test_accuracy"] == 0.625
    assert recorded["samples_seed"] == 0
    assert (tmp_path / "home" / "results" / "svhn_lecouat_1000_samples.png").read_bytes() == \
        b"grid"
    assert not (REPO_ROOT / "~").exists()


# Directories under the test's own may not be made, as for a user the owner does not let in.
REFUSED_DIRECTORIES = """
import errno
makedirs = os.makedirs
def refused(path, *args, **kwargs):
    if os.path.abspath(path).startswith(results):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return makedirs(path, *args, **kwargs)
os.makedirs = refused
"""
UNWRITABLE_RESULTS = REFUSED_DIRECTORIES + """
run.run_experiment = lambda: run.record("x", "sgan", 0, made(0.8), invocation([0]),
                                        os.path.join(results, "results"))
run.main([])
"""


def test_a_results_directory_that_cannot_be_made_gets_one_line_and_exit_5(tmp_path):
    """It was a PermissionError traceback (exit 1) once the runs had trained."""
    result = preloaded.run_code(RECORD_PRELUDE + UNWRITABLE_RESULTS, [str(tmp_path)], timeout=60)
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: cannot write {tmp_path}/results/x.lock (Permission denied); free space or "
        "fix the directory, then run the same command again to record the runs")


UNWRITABLE_RUNS = REFUSED_DIRECTORIES + """
sys.path.insert(0, "experiments")
import definitions
output_dir = os.path.join(results, "runs", "run")
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, output_dir, {}, None)
run.run_experiment = lambda: run.run_one(argv, run.provenance.record())
run.main([])
"""


def test_a_runs_directory_that_cannot_be_made_gets_one_line_and_exit_5(tmp_path):
    """It was a PermissionError traceback (exit 1) as run.py recorded the session."""
    result = preloaded.run_code(RECORD_PRELUDE + UNWRITABLE_RUNS, [str(tmp_path)], timeout=120)
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"run.py: cannot write {tmp_path}/runs/run.sessions.json (Permission denied); ")


NOTE_KEPT = """
run.record("x", "sgan", 0, made(0.8), {**invocation([0]), "note": "written by hand"}, results)
run.record("x", "sgan", 1, made(0.7), {**invocation([1]), "note": None}, results)
print(json.load(open(os.path.join(results, "x.json")))["note"])
run.record("x", "sgan", 2, made(0.6), {**invocation([2]), "note": "new"}, results)
"""


DISK_FULL = """
import errno
def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.replace = full
run.run_experiment = lambda: run.record("x", "sgan", 0, made(0.8), invocation([0]), results)
run.main([])
"""


def test_a_result_file_on_a_full_disk_gets_one_line_and_exit_5(tmp_path):
    result = preloaded.run_code(RECORD_PRELUDE + DISK_FULL, [str(tmp_path)], timeout=60)
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: cannot write {tmp_path}/x_accuracy.png (No space left on device); free "
        "space or fix the directory, then run the same command again to record the runs")
    assert not (tmp_path / "x.json").exists()


def test_a_process_without_a_note_keeps_the_files_note(tmp_path):
    """The docstring's second process (``--seeds=1``, no ``--note``) does not
    erase the note of the first."""
    result = preloaded.run_code(RECORD_PRELUDE + NOTE_KEPT, [str(tmp_path)], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "written by hand"
    assert json.loads((tmp_path / "x.json").read_text())["note"] == "new"


SESSIONS = """
import copy
made = run.provenance.record()
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, sys.argv[1] + "/run",
                                    {}, None)
config = definitions.trainer_config(argv)
run.add_session(sys.argv[1] + "/run", {**made, "commit": "aaa"}, config, 1)
run.add_session(sys.argv[1] + "/run", {**made, "commit": "bbb"}, config, 3)
run.add_session(sys.argv[1] + "/run", {**made, "commit": "ccc"}, config, 3)   # stopped in epoch 3
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d",
          "sgan": {"0": {"finished": True, "final_test_accuracy": 0.6, "best_test_accuracy": 0.6,
                         "train_seconds": 1.0, "command": "s", "test_accuracy": [0.6],
                         **run.run_provenance(sys.argv[1] + "/run")}}}
print(run.markdown("x", result))
"""


def run_py_script(script, tmp_path):
    """``script`` in a process of its own with run.py and definitions imported
    (and json, os, sys), its ``sys.argv[1]`` ``tmp_path``; forked from one that
    has imported TensorFlow (tests/preloaded.py): 4 s less each."""
    return preloaded.run_code("import json, os, sys; sys.path.insert(0, 'experiments'); "
                              "import definitions, run\n" + script, [str(tmp_path)], timeout=120)


def test_a_run_names_each_session_it_trained_in_and_the_trainers_kernels(tmp_path, monkeypatch):
    """A run resumed on another commit names both, from the sessions run.py
    records before each training, with the kernels the trainer picks for the
    preset (GANs in Action in float32: Eigen's on x86), not run.py's own."""
    monkeypatch.delenv(onednn.ONEDNN_VARIABLE, raising=False)
    result = run_py_script(SESSIONS, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("- sgan seed 0:"))
    assert re.fullmatch(r"- sgan seed 0: From epoch 1: .*; commit aaa; \S+\. "
                        r"From epoch 3: .*; commit bbb; \S+\. "
                        r"Resumed within epoch 3: .*; commit ccc; \S+\.", line), line
    if onednn.is_x86():
        assert line.count("(Eigen kernels, oneDNN off)") == 3


SESSION_OF_NOW = """
import datetime
made = {**run.provenance.record(), "commit": "at start", "date": "day 1"}
run.provenance.commit = lambda: "now"       # a commit made while the process ran
output_dir = sys.argv[1] + "/run"
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, output_dir, {}, None)

def trains(argv):         # an epoch and its checkpoint, as the trainer leaves them
    os.makedirs(output_dir + "/checkpoint", exist_ok=True)
    open(output_dir + "/checkpoint/ckpt-10.index", "w").close()
    open(output_dir + "/metrics.csv", "w").write("epoch,test_accuracy,seconds\\n1,0.5,2.0\\n")
    return 75
run.run_trainer = trains
try:
    run.run_one(argv, made)
except run.TrainingStopped as stopped:
    print("stopped", stopped.status)
run.run_trainer = lambda argv: 3          # refused: another process trains the run
try:
    run.run_one(argv, {**made, "commit": "other"})
except run.TrainingStopped as stopped:
    print("stopped", stopped.status)
sessions = json.load(open(run.sessions_path(output_dir)))
assert [(s["commit"], s["date"]) for s in sessions] == [
    ("now", datetime.date.today().isoformat())], sessions
"""


def test_a_session_names_the_commit_it_trained_on_and_one_that_trained_nothing_is_dropped(
        tmp_path):
    """A session records the commit and date it starts at, not those of
    run.py's start (another seed may have trained for hours in between); a
    trainer that stops with no new checkpoint (here: refused by the run's
    lock) trained nothing a result holds, and its session is not kept."""
    result = run_py_script(SESSION_OF_NOW, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-3:] == ["stopped 75", "stopped 3", ""]


REFUSED_BY_THE_LOCK = """
made = run.provenance.record()
output_dir = sys.argv[1] + "/run"
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, output_dir, {}, None)
config = definitions.trainer_config(argv)
run.add_session(output_dir, {**made, "commit": "first"}, config, 1)   # the process training

def refused(argv):       # the trainer refuses; the other process saves meanwhile
    os.makedirs(output_dir + "/checkpoint", exist_ok=True)
    open(output_dir + "/checkpoint/ckpt-10.index", "w").close()
    return 3
run.run_trainer = refused
try:
    run.run_one(argv, made)
except run.TrainingStopped as stopped:
    print("stopped", stopped.status)
print([s["commit"] for s in json.load(open(run.sessions_path(output_dir)))])
"""


def test_a_session_refused_by_the_runs_lock_is_dropped_though_the_run_saved_meanwhile(
        tmp_path):
    """A second run.py on a run another one trains: its trainer exits 3, and
    its session was kept whenever the other process saved a checkpoint in
    the meantime, naming a session that trained nothing."""
    result = run_py_script(REFUSED_BY_THE_LOCK, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-3:] == ["stopped 3", "['first']", ""]


MOVED_AWAY = """
made = run.provenance.record()
output_dir = sys.argv[1] + "/run"
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, output_dir, {}, None)
config = definitions.trainer_config(argv)
# The sessions file of a run moved away (as run.py's lines advise) stays beside its directory.
run.add_session(output_dir, {**made, "commit": "moved away", "date": "day 1"}, config, 1)

def trains(argv):         # an epoch and its checkpoint, as the trainer leaves them
    os.makedirs(output_dir + "/checkpoint", exist_ok=True)
    open(f"{output_dir}/checkpoint/ckpt-10.index", "w").close()
    open(output_dir + "/metrics.csv", "w").write("epoch,test_accuracy,seconds\\n1,0.5,2.0\\n")
    return 0
run.run_trainer = trains
for commit in ("new", "resumed"):
    run.provenance.commit = lambda: commit
    trained = run.run_one(argv, made)
    print(trained["commit"], [s["commit"] for s in trained.get("sessions", [])])
"""


def test_a_new_run_in_the_directory_of_one_moved_away_names_its_own_sessions(tmp_path):
    """A run trained from its first step where another was moved away named
    that run's first session (commit, date, machine) as where it trained."""
    result = run_py_script(MOVED_AWAY, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # Its resume, from its checkpoint, is still its own.
    assert result.stdout.split("\n")[-3:] == ["new []", "new ['new', 'resumed']", ""]


RESUMED_INSIDE_A_LATER_EPOCH = """
made = run.provenance.record()
output_dir = sys.argv[1] + "/run"
argv = definitions.training_command("mnist_gans_in_action_100", 0, False, output_dir,
                                    {"steps_per_epoch": 10}, None)
# Where each session stops (inside epoch 2, or killed after epoch 2's metrics.csv
# row but before its checkpoint), then at the end; the rows it leaves ahead of it.
stops = iter([(FIRST_STOP, ROWS_AHEAD), (30, 0)])

def trains(argv):           # a checkpoint at its last step, as the trainer leaves them
    step, ahead = next(stops)
    os.makedirs(output_dir + "/checkpoint", exist_ok=True)
    open(f"{output_dir}/checkpoint/ckpt-{step}.index", "w").close()
    rows = "".join(f"{epoch},0.5,2.0\\n" for epoch in range(1, step // 10 + 1 + ahead))
    open(output_dir + "/metrics.csv", "w").write("epoch,test_accuracy,seconds\\n" + rows)
    return 0 if step == 30 else 75
run.run_trainer = trains
for commit in ("aaa", "bbb"):
    run.provenance.commit = lambda: commit
    try:
        run.run_one(argv, made)
    except run.TrainingStopped:
        pass
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "b", "machine": "m", "commit": "c", "date": "d",
          "sgan": {"0": {"finished": True, "final_test_accuracy": 0.5, "best_test_accuracy": 0.5,
                         "train_seconds": 1.0, "command": "s", "test_accuracy": [0.5],
                         **run.run_provenance(output_dir)}}}
print(run.markdown("x", result))
"""


@pytest.mark.parametrize("first_stop, rows_ahead, second", [
    (15, 0, "Resumed within epoch 2"), (20, 1, "From epoch 3")])
def test_a_session_resumed_inside_a_later_epoch_says_so(tmp_path, first_stop, rows_ahead,
                                                       second):
    """A session resumed from a checkpoint inside epoch 2 (step 15 of 10-step
    epochs) read "From epoch 2", as if all of epoch 2 trained on its commit.
    A run killed after writing epoch 3's metrics.csv row, before its checkpoint,
    resumes at epoch 3's start (the trainer drops the row), not "From epoch 4"."""
    result = run_py_script(RESUMED_INSIDE_A_LATER_EPOCH.replace(
        "FIRST_STOP", str(first_stop)).replace("ROWS_AHEAD", str(rows_ahead)), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("- sgan seed 0:"))
    assert re.fullmatch(r"- sgan seed 0: From epoch 1: .*; commit aaa; \S+\. "
                        rf"{second}: .*; commit bbb; \S+\.", line), line


CHILD = """
import os, signal, sys, time
received = []
for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(number, lambda number, frame: received.append(number))
open(sys.argv[1] + ".ready", "w").close()
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline and not received:
    time.sleep(0.05)
time.sleep(0.5)                  # a duplicate would arrive by now
open(sys.argv[1], "w").write(str(len(received)))
sys.exit(75)
"""
PARENT = """
import signal, sys
signal.signal(signal.SIGHUP, signal.SIG_DFL)   # a terminal's, whatever the suite runs under
if len(sys.argv) > 4:         # as nohup or a background job of a script leaves it
    signal.signal(getattr(signal, sys.argv[4]), signal.SIG_IGN)
sys.path.insert(0, "experiments")
import run
sys.exit(run.run_trainer([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]]))
"""


def signal_the_runner(tmp_path, signal_name, *ignored):
    """Sends ``signal_name`` to the group of :data:`PARENT` (ignoring
    ``ignored``) as its trainer waits; returns its exit status and the
    signals its trainer received. The trainer waits up to 3 s for the
    signal, or 1 s when ignored: one passed on arrives within milliseconds."""
    import signal
    count = tmp_path / "count"
    wait = "1" if ignored else "3"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(count), wait, *ignored],
                              cwd=REPO_ROOT, start_new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / "count.ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(parent.pid, getattr(signal, signal_name))     # as the terminal does
    return parent.wait(timeout=60), count.read_text()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_to_the_runner_reaches_its_trainer_once(tmp_path, signal_name):
    """Ctrl-C in a terminal signals run.py's whole process group: the trainer
    (in a session of its own) gets the signal once, passed on, saves and
    exits 75, and run.py exits with that status. Twice, it would end at once.
    A closed terminal's SIGHUP ended run.py and left its trainer training
    alone (out of the terminal's session, it got none)."""
    assert signal_the_runner(tmp_path, signal_name) == (75, "1")


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGHUP"])
def test_a_signal_ignored_when_the_runner_starts_stays_ignored(tmp_path, signal_name):
    """As the trainer's own rule: a SIGINT ignored in a background job of a
    script (the script's Ctrl-C is not the job's) was passed on to the
    trainer, which saved and stopped; so is a SIGHUP under nohup."""
    assert signal_the_runner(tmp_path, signal_name, signal_name) == (75, "0")


BETWEEN_RUNS = """
import os, signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_DFL)   # a terminal's, whatever the suite runs under
sys.path.insert(0, "experiments")
import run
def recording():         # a signal while no trainer runs (run.py starts or records)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(10)
run.run_experiment = recording
run.main([])
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_to_the_runner_between_trainings_gets_one_line_and_exit_75(signal_name):
    """Ctrl-C while run.py imports TensorFlow or records a run was a
    KeyboardInterrupt traceback; SIGTERM ended it without a word."""
    result = preloaded.run_code(BETWEEN_RUNS, [signal_name], timeout=60)
    assert result.returncode == 75 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: interrupted: {signal_name} while no training ran; finished runs are "
        "recorded, the same command resumes")


@pytest.mark.parametrize("arguments, message", [
    (["--overrides=ema"], "--overrides takes flag=value pairs, got 'ema'"),
    (["--overrides=seed=3"], "--overrides=seed=...: --seed is set by the experiment or the runner"),
    # Both were taken, the last (the override) winning without a word:
    (["--overrides=ema=0.9,ema=0.99"], "--overrides gives ema twice; give each flag once"),
    (["--epochs=2", "--overrides=epochs=3"],
     "--epochs and --overrides=epochs=... both set the length; give one"),
])
def test_runner_refuses_a_bad_override_in_one_line(tmp_path, arguments, message):
    result = preloaded.run_script(      # forked: 0.1 s less than an interpreter
        "experiments/run.py", ["--experiment=svhn_lecouat_1000", *arguments,
                               f"--runs_dir={tmp_path}", f"--results_dir={tmp_path}"],
        timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"run.py: {message}")
    assert not list(tmp_path.iterdir())


def test_overrides_the_experiment_or_runner_sets_are_refused_and_run_only_ones_kept_apart():
    shaping, run_only = definitions.split_overrides(
        "svhn_lecouat_1000", {"ema": "0.999", "checkpoint_every_steps": "50"})
    assert shaping == {"ema": "0.999"} and run_only == {"checkpoint_every_steps": "50"}
    for flag, message in (("seed", "is set by the experiment or the runner"),
                          ("output_dir", "is set by the experiment or the runner"),
                          ("preset", "is set by the experiment or the runner"),
                          # Each resume removed the run and trained it again:
                          ("overwrite", "run.py resumes a stopped run with the same command"),
                          ("no_such_flag", "the trainer has no --no_such_flag")):
        with pytest.raises(ValueError, match=message):
            definitions.split_overrides("svhn_lecouat_1000", {flag: "1"})


def test_report_summarizes_finished_runs_and_counts_each_kind(tmp_path):
    import report

    run = lambda accuracies, finished=True: {  # noqa: E731
        "finished": finished, "test_accuracy": accuracies}
    result = {"name": "x", "published_accuracy": None, "status": "measured", "budget": "b",
              "sgan": {"0": run([0.8]), "1": run([0.9]), "2": run([0.1], finished=False)},
              "baseline": {"0": run([0.5])}}
    (tmp_path / "x.json").write_text(json.dumps(result))
    row = report.table(str(tmp_path)).splitlines()[-1]
    # The partial seed is out of the mean; one baseline run has no spread.
    assert row.endswith("| 85.00 +- 7.07% | 50.00% | b (partial: 1 epoch so far) | "
                        "2 SGAN, 1 baseline |"), row


# A timing script's smoke run: a 0.1 s look at the other processes (3 s
# measuring) and a 256x256 matmul-peak probe (2048), passed on to the timing
# scripts it starts.
QUIET_LOOK = "--quiet_seconds=0.1"
SMOKE = [QUIET_LOOK, "--peak_size=256"]


def test_a_timing_scripts_smoke_flags_default_to_a_measurements_and_pass_on_when_given():
    """--quiet_seconds and --peak_size shorten a test's run; left out, a
    measurement looks 3 s and probes 2048x2048 as before, and a script that
    starts another timing script passes on only those given."""
    from absl import flags
    import provenance

    def parsed(*argv):
        values = flags.FlagValues()
        provenance.define_timing_flags(flag_values=values)
        values(["benchmark.py", *argv])
        return values
    measuring = parsed("--peak_repeats=3")
    assert (measuring.quiet_seconds, measuring.peak_size) == (3.0, 2048)
    assert provenance.smoke_arguments(measuring) == []
    assert provenance.smoke_arguments(parsed(*SMOKE)) == SMOKE
    assert provenance.smoke_arguments(parsed("--peak_size=64")) == ["--peak_size=64"]


def test_benchmark_measures_every_mode_and_writes_its_tables(tmp_path):
    """Every mode of GANs in Action (at batch 4: --nosource_batch; the rows
    of the source's batch and of --batch_sizes are
    test_benchmark_times_the_batch_size_presets_at_their_source_batch_and_at_batch_sizes's),
    timed in a process of its own on Eigen's kernels. Its peers run: the two
    tests after this one."""
    output = tmp_path / "benchmark.md"
    result = preloaded.run_script(
        "experiments/benchmark.py",
        ["--presets=mnist_gans_in_action", "--nosource_batch",
         "--batch_size_presets=mnist_gans_in_action", "--batch_sizes=4",
         "--steps=2", "--repeats=1", "--eager_steps=1", "--steps_per_execution=2",
         "--modes=function,constant,bf16,unfused_adam,joined_g_pass,native_conv_transpose,"
         "keras_batch_norm,eager,fit,fit_spe",
         "--peers=", "--peak_repeats=1", *SMOKE, f"--output={output}", "--force"],
        env={key: value for key, value in os.environ.items()
             if key != distribute.POOLED_CPU_ALLOCATOR_VARIABLE}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(output.with_suffix(".json").read_text())
    row, = table["rows"]
    assert row["preset"] == "mnist_gans_in_action" and row["batch_size"] == 4
    # joined_g_pass is left out: GANs in Action's G loss sees the fakes alone.
    assert set(row["seconds_per_step"]) == {"function", "constant", "bf16", "unfused_adam",
                                            "native_conv_transpose", "keras_batch_norm",
                                            "eager", "fit", "fit_spe"}
    assert all(seconds > 0 for seconds in row["seconds_per_step"].values())
    assert 0 <= row["derived"]["input_wait_fraction"] < 1
    # Each speed-up is the ratio of its two timed steps, the right way up.
    seconds, derived = row["seconds_per_step"], row["derived"]
    assert derived["bf16_speedup"] == pytest.approx(seconds["function"] / seconds["bf16"])
    for key, mode in (("fused_adam_speedup", "unfused_adam"),
                      ("matmul_conv_transpose_speedup", "native_conv_transpose"),
                      ("fused_batch_norm_speedup", "keras_batch_norm")):
        assert derived[key] == pytest.approx(seconds[mode] / seconds["function"])
    assert "| fused batch norm speed-up |" in output.read_text()
    header, delimiter = [line for line in output.read_text().splitlines()
                         if line.startswith(("| preset | batch | kernels |", "|---"))][:2]
    assert header.count("|") == delimiter.count("|")    # else Markdown shows no table
    # The unfused mode times Keras' op-by-op Adam beside the package's fused one.
    assert row["optimizers"]["function"] == ["FusedAdam", "FusedAdam"]
    assert row["optimizers"]["unfused_adam"] == ["Adam", "Adam"]
    assert table["peak_flops"] > 0 and row["derived"]["achieved_flops"] > 0
    assert "256x256 matmul chain, same run, best of 1)" in output.read_text()
    assert "| mnist_gans_in_action | 4 |" in output.read_text()
    assert "--presets=mnist_gans_in_action" in table["machine"]["command"]
    assert table["machine"]["commit"] in output.read_text()
    assert "quiet" in table["machine"]["quiet_check"]
    assert "Machine check before measuring: load average" in output.read_text()
    # It times what the CLI runs: TensorFlow's pooled CPU allocator, and on x86
    # the preset's kernels (sgan_keras.onednn): oneDNN's in this process (the
    # peak's), Eigen's for GANs in Action, timed in a process of its own.
    assert table["machine"]["pooled_cpu_allocator"] is True
    if onednn.is_x86():
        assert table["machine"]["onednn"] is True and "(oneDNN kernels)" in output.read_text()
        assert row["onednn"] is False
        assert "| mnist_gans_in_action | 4 | Eigen |" in output.read_text()
        elsewhere = json.loads((tmp_path / "benchmark_kernels0.json").read_text())
        assert elsewhere["machine"]["onednn"] is False
        assert "--presets=mnist_gans_in_action" in elsewhere["machine"]["command"]
    assert set(row["minor_page_faults_per_step"]) == {"function", "constant", "bf16",
                                                      "unfused_adam", "native_conv_transpose",
                                                      "keras_batch_norm", "eager"}
    assert all(faults >= 0 for faults in row["minor_page_faults_per_step"].values())
    assert "CPU allocator: TensorFlow's pooled (BFC) allocator" in output.read_text()


def test_peers_time_our_step_beside_the_sources_code_each_in_its_own_process(tmp_path):
    """benchmark_peers.py: the package's step beside GANs in Action's Keras
    loop, each side a process of its own on the kernels the preset's CLI runs
    choose, one window a side (--repeats). Forked (tests/preloaded.py): the
    sides it starts still start as from a shell."""
    output = tmp_path / "benchmark_peers.md"
    result = preloaded.run_script(
        "experiments/benchmark_peers.py",
        ["--peers=gans_in_action", "--repeats=1", "--window_seconds=0.05", "--peak_repeats=1",
         *SMOKE, f"--output={output}", "--force"],
        env={key: value for key, value in os.environ.items()     # as benchmark.py starts it
             if key not in (distribute.POOLED_CPU_ALLOCATOR_VARIABLE, onednn.ONEDNN_VARIABLE)},
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    peers = json.loads(output.with_suffix(".json").read_text())
    peer_row, = peers["rows"]
    assert peer_row["peer"] == "gans_in_action" and peer_row["batch_size"] == 32
    assert peer_row["ours_ms"] > 0 and peer_row["peer_ms"] > 0
    assert len(peer_row["windows_ms"]["peer"]) == len(peer_row["windows_ms"]["ours"]) == 1
    assert peers["pooled_cpu_allocator"] is True
    if onednn.is_x86():     # both sides on the kernels the preset's CLI runs choose
        assert peer_row["onednn"] == {"ours": False, "peer": False}
    assert "a float32 256x256 matmul chain" in output.read_text()    # the smoke run's
    assert "| mnist_gans_in_action | 32 | Keras train_on_batch loop" in output.read_text()


def test_benchmark_runs_the_peers_with_its_timing_flags_and_adds_their_table(tmp_path):
    """benchmark.py's peers run: benchmark_peers.py (the test above) with
    --repeats, the window, --peak_repeats, the smoke flags and --force passed
    on, TF_ENABLE_ONEDNN_OPTS left for it to choose per peer, and its table a
    section of --output."""
    code = """
import json, os, subprocess, sys
sys.path[:0] = ["experiments"]
from absl import flags
import benchmark

real_run, started = subprocess.run, []

def run(command, **kwargs):     # benchmark_peers.py writes its table; git runs
    if not command[1].endswith("benchmark_peers.py"):
        return real_run(command, **kwargs)
    started.append({"command": command[2:], "kernels": kwargs["env"].get("TF_ENABLE_ONEDNN_OPTS")})
    path = next(arg for arg in command if arg.startswith("--output="))[len("--output="):]
    with open(path, "w") as file:
        file.write("# The peers' table\\n\\n| their row |\\n")
    return subprocess.CompletedProcess(command, 0)

subprocess.run = run
flags.FLAGS(["benchmark.py", "--presets=", "--peers=gans_in_action", "--repeats=1",
             "--peer_window_seconds=0.05", "--peak_repeats=1", "--quiet_seconds=0.1",
             "--peak_size=256", "--force", "--output=" + sys.argv[1]])
benchmark.main([])
print(json.dumps(started))
"""
    output = tmp_path / "benchmark.md"
    result = preloaded.run_code(
        code, [str(output)], env={key: value for key, value in os.environ.items()
                                  if key != onednn.ONEDNN_VARIABLE}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    started, = json.loads(result.stdout.strip().splitlines()[-1])
    assert started["command"] == [
        "--peers=gans_in_action", "--repeats=1", "--window_seconds=0.05", "--peak_repeats=1",
        *SMOKE, f"--output={tmp_path / 'benchmark_peers.md'}", "--force"]
    assert started["kernels"] is None
    assert "\n## The peers' table\n\n| their row |\n" in output.read_text()


@pytest.mark.parametrize("reference", ["", str(REPO_ROOT)], ids=["untouched", "checkout"])
def test_startup_time_times_the_shipped_cli_beside_a_reference(reference, tmp_path, mnist_dir):
    # The reference: the untouched main of this checkout, or another checkout's
    # CLI (here this one again, as a stand-in for a git worktree).
    # Forked (tests/preloaded.py): the processes it times start as they do from a shell.
    output = tmp_path / "startup.md"
    result = preloaded.run_script(
        "experiments/startup_time.py",
        ["--commands=refused", "--repeats=1", f"--data_dir={mnist_dir}", f"--output={output}",
         "--force", QUIET_LOOK, f"--reference={reference}"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(output.with_suffix(".json").read_text())
    times = record["results"]["refused"]["seconds"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    if reference:   # " + uncommitted changes" follows in an edited checkout
        assert record["reference"].startswith(f"commit {commit}")
    else:
        assert record["reference"] == "untouched"
    assert len(times["shipped"]) == len(times["reference"]) == 1
    assert all(seconds[0] > 0 for seconds in times.values())
    assert re.search(r"\| refused \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \| - \|", output.read_text())
    assert f"| command | shipped s | {record['reference']} s |" in output.read_text()


def test_trace_step_traces_a_presets_train_step_and_counts_its_ops():
    """The process startup_time.py's trace command starts in each checkout
    (forked here, from this one): one untimed trace, then the timed ones.
    The command itself needs a second checkout."""
    result = preloaded.run_script("experiments/trace_step.py", ["mnist_blog", "1"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert len(report["seconds"]) == 1 and all(seconds > 0 for seconds in report["seconds"])
    assert report["ops"] > 1000     # mnist_blog's step: 1,245 ops at commit 5422b3b
    refused = preloaded.run_script("experiments/startup_time.py",
                                   ["--commands=trace", "--force", QUIET_LOOK], timeout=60)
    assert refused.returncode == 1 and ("--commands=trace times two checkouts' traces: give "
                                        "--reference") in refused.stderr


def test_provenance_commit_says_when_the_code_has_uncommitted_changes(tmp_path):
    import provenance

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "experiments" / "results" / "table.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = provenance.commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{7,}", head)
    (tmp_path / "experiments" / "results" / "table.md").write_text("new\n")   # a result
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert provenance.commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")                               # the code
    assert provenance.commit(tmp_path) == head + " + uncommitted changes"
    in_results = provenance.commit(tmp_path / "experiments" / "results")   # the whole tree
    assert in_results == head + " + uncommitted changes"


def test_benchmark_fit_window_excludes_the_one_time_start_of_a_fit_call():
    """benchmark.py times fit() on the second epoch of one call; a fit call's
    iterator starts once, so a slow start lands in the first epoch only."""
    code = """
import sys, time
sys.path.insert(0, "experiments")
import keras, numpy as np, tensorflow as tf
import benchmark

def slow_start(_):
    time.sleep(1.0)
    return np.float32(0)

data = (tf.data.Dataset.range(1)
        .map(lambda i: tf.ensure_shape(tf.numpy_function(slow_start, [i], tf.float32), []))
        .flat_map(lambda z: tf.data.Dataset.from_tensors(
            (tf.zeros([4, 3]) + z, tf.zeros([4, 1]))).repeat()))
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
timer = benchmark.EpochTimer()
model.fit(data, epochs=2, steps_per_epoch=5, verbose=0, callbacks=[timer])
print(timer.seconds)
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = json.loads(result.stdout.strip().splitlines()[-1])
    assert first > 1.0 and second < 1.0     # a second epoch with the 1 s start would be over


def test_benchmarks_joined_g_pass_is_the_same_training_on_one_concatenated_call():
    """benchmark.py's ``joined_g_pass`` reference: G's feature matching on one
    D call over fakes and real images (the form before b303210), training
    exactly as the package's step does (a D without noise or dropout)."""
    code = """
import sys
sys.path[:0] = ["experiments", "tests"]
import numpy as np
import benchmark, test_model

trained, sizes = [], []
for joined in (False, True):
    model, recorder = test_model.recorded_model()
    assert benchmark.joins_generator_pass(model)
    if joined:
        benchmark.join_generator_pass(model)
    test_model.step(model, test_model.tiny_batch(size=8), steps=2)
    sizes.append(recorder.batch_sizes)
    trained.append(test_model.weights(model.generator) + test_model.weights(model.discriminator))
assert sizes == [[24, 8, 8], [24, 16]], sizes
for a, b in zip(*trained):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("same")
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("same")


@pytest.mark.parametrize("preset, layers, reference, op_type, counts", [
    ("mnist_gans_in_action", "matmul_conv_transposes", "native_conv_transpose",
     "Conv2DBackpropInput", [1, 2]),
    ("svhn_improved_gan", "matmul_conv_transposes", "native_conv_transpose",
     "Conv2DBackpropInput", [2, 3]),
    ("mnist_gans_in_action", "fused_batch_norms", "keras_batch_norm", "FusedBatchNormV3",
     [1, 0])])
def test_benchmarks_reference_modes_are_the_same_generator_on_other_ops(
        preset, layers, reference, op_type, counts):
    """benchmark.py's ``native_conv_transpose`` and ``keras_batch_norm``
    references: G with its first transposed convolution by TensorFlow's op
    (one more Conv2DBackpropInput in the traced G; padded "half" in
    svhn_improved_gan), or its batch norm by Keras' own call (no
    FusedBatchNormV3); the same images and moving averages as the package's
    layers."""
    code = f"""
import sys
sys.path[:0] = ["experiments"]
import numpy as np, tensorflow as tf
import benchmark
from sgan_keras import SGAN

z = tf.random.normal([4, 100], seed=1)
counts, results = [], []
for reference in (False, True):
    model = SGAN.from_preset("{preset}", seed=0)
    assert len(benchmark.{layers}(model)) == 1
    if reference:
        benchmark.{reference}(model)
    generate = tf.function(lambda z: model.generator(z, training=True))
    graph = generate.get_concrete_function(tf.TensorSpec([4, 100])).graph
    counts.append(sum(op.type == "{op_type}" for op in graph.get_operations()))
    images = generate(z).numpy()
    results.append([images, model.generator.get_layer("g_bn1").moving_variance.numpy()])
assert counts == {counts}, counts
for ours, theirs in zip(*results):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
print("same")
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("same")


def run_benchmark(tmp_path, *args):
    """``benchmark.py`` with ``args``, two-step windows, one window a mode, no
    peers; its rows and its Markdown table."""
    output = tmp_path / "benchmark.md"
    result = preloaded.run_script(
        "experiments/benchmark.py",
        [*args, "--steps=2", "--repeats=1", "--peak_repeats=1", *SMOKE, f"--output={output}",
         "--peers=", "--force"], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(output.with_suffix(".json").read_text())["rows"], output.read_text()


def test_benchmarks_native_conv_input_grad_is_the_same_function_on_tensorflows_op(tmp_path):
    """benchmark.py's ``native_conv_input_grad`` reference: every stride-1
    convolution's input gradient by TensorFlow's op (more Conv2DBackpropInput
    in the traced gradient of D(G(z))), the same gradients as the package's
    forward-convolution form; and the mode's column in the table."""
    code = """
import sys
sys.path[:0] = ["experiments"]
import numpy as np, tensorflow as tf
import benchmark
from sgan_keras import SGAN

for preset, layers, extra in (("mnist_blog", 5, 5), ("svhn_improved_gan", 7, 7)):
    z = tf.random.normal([2, 100], seed=1)
    counts, gradients = [], []
    for native in (False, True):
        model = SGAN.from_preset(preset, seed=0)
        assert len(benchmark.conv_input_grad_layers(model)) == layers, preset
        if native:
            benchmark.native_conv_input_grad(model)
        variables = model.generator.trainable_variables + model.discriminator.trainable_variables

        @tf.function
        def gradient(z):
            with tf.GradientTape() as tape:
                tape.watch(z)
                logits, features = model.discriminator(model.generator(z, training=False),
                                                       training=False)
                loss = tf.reduce_sum(logits) + tf.reduce_sum(features)
            return tape.gradient(loss, [z] + variables)

        graph = gradient.get_concrete_function(tf.TensorSpec([2, 100])).graph
        counts.append(sum(op.type == "Conv2DBackpropInput" for op in graph.get_operations()))
        gradients.append(gradient(z))
    assert counts[1] == counts[0] + extra, (preset, counts)
    for ours, reference in zip(*gradients):
        scale = float(tf.reduce_max(tf.abs(reference))) or 1.0
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4 * scale)
print("same")
"""
    result = preloaded.run_code(code, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("same")
    # At batch 2 only (--nosource_batch): the mode and its column, not the
    # source's batch of 32 (35 GFLOP a step); the sizes are the next test's.
    (row,), table = run_benchmark(tmp_path, "--presets=mnist_blog", "--nosource_batch",
                                  "--batch_size_presets=mnist_blog", "--batch_sizes=2",
                                  "--modes=function,native_conv_input_grad")
    assert row["batch_size"] == 2
    assert set(row["seconds_per_step"]) == {"function", "native_conv_input_grad"}
    assert row["derived"]["conv_input_grad_speedup"] > 0
    assert "| conv input grad speed-up |" in table


def test_benchmarks_without_noise_mode_times_the_step_with_ds_noise_off(tmp_path):
    """benchmark.py's ``without_noise`` mode: the Improved-GAN MNIST D with its
    six Gaussian noise layers passing their inputs through (its training-mode
    output then equals its inference-mode one, which it did not before), and
    the noise share column. At batch 8 only (--nosource_batch): which rows
    ``--batch_size_presets`` adds is the next test's."""
    code = """
import sys
sys.path[:0] = ["experiments"]
import numpy as np, tensorflow as tf
import benchmark
from sgan_keras import SGAN

model = SGAN.from_preset("mnist_improved_gan", seed=0)
images = tf.random.uniform([4, 28, 28, 1], seed=1)
def same_in_both_modes():
    trained, _ = model.discriminator(images, training=True)
    inferred, _ = model.discriminator(images, training=False)
    return np.allclose(trained.numpy(), inferred.numpy(), rtol=1e-6, atol=1e-6)
assert len(benchmark.noise_layers(model)) == 6
assert not same_in_both_modes()
benchmark.without_noise(model)
assert benchmark.noise_layers(model) == [] and same_in_both_modes()
assert benchmark.noise_layers(SGAN.from_preset("mnist_gans_in_action", seed=0)) == []
print("noise off")
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("noise off")
    (row,), table = run_benchmark(tmp_path, "--presets=mnist_improved_gan", "--nosource_batch",
                                  "--batch_size_presets=mnist_improved_gan", "--batch_sizes=8",
                                  "--modes=function,without_noise")
    assert (row["preset"], row["batch_size"]) == ("mnist_improved_gan", 8)
    assert set(row["seconds_per_step"]) == {"function", "without_noise"}
    assert row["derived"]["noise_share"] == pytest.approx(
        1 - row["seconds_per_step"]["without_noise"] / row["seconds_per_step"]["function"])
    assert "| noise share of the step |" in table
    assert "| mnist_improved_gan | 8 |" in table


ROWS_MADE = """
import json, sys
sys.path[:0] = ["experiments"]
from absl import flags
import benchmark

measured = []

def measure(name, batch_size, modes, repeats, always_full=False):   # a row, not timed
    measured.append([name, batch_size, always_full])
    return {"preset": name, "batch_size": batch_size, "steps_per_window": 2, "onednn": True,
            "label_batching": "separate", "images_per_step": 3 * batch_size,
            "flops_per_step": 1e6, "seconds_per_step": {"function": 0.01}, "optimizers": {},
            "minor_page_faults_per_step": {"function": 1.0}}

benchmark.measure = measure
flags.FLAGS(["benchmark.py", *sys.argv[1:]])
benchmark.main([])
print(json.dumps(measured))
"""


@pytest.mark.parametrize("source_batch", [True, False])
def test_benchmark_times_the_batch_size_presets_at_their_source_batch_and_at_batch_sizes(
        tmp_path, source_batch):
    """``--batch_size_presets``: those presets of ``--presets`` also timed at
    each of ``--batch_sizes``, in full (no heavy-step shortening), after every
    preset's row at its source's batch, in the same table;
    ``--nosource_batch``: at ``--batch_sizes`` only. Each row measured as
    the tests above measure theirs (here ``measure`` only names its row)."""
    output = tmp_path / "benchmark.md"
    result = preloaded.run_code(
        ROWS_MADE, ["--presets=mnist_improved_gan,mnist_blog", "--batch_sizes=8,4",
                    "--batch_size_presets=mnist_improved_gan", f"--output={output}",
                    "--peers=", "--peak_repeats=1", *SMOKE, "--force",
                    *([] if source_batch else ["--nosource_batch"])], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    extra = [["mnist_improved_gan", 8, True], ["mnist_improved_gan", 4, True]]
    source = [["mnist_improved_gan", presets.PRESETS["mnist_improved_gan"].config.training
               .batch_size, False],
              ["mnist_blog", presets.PRESETS["mnist_blog"].config.training.batch_size, False]]
    expected = (source if source_batch else []) + extra
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
    rows = json.loads(output.with_suffix(".json").read_text())["rows"]
    assert [[row["preset"], row["batch_size"]] for row in rows] == [row[:2] for row in expected]
    shown = [line for line in output.read_text().splitlines() if line.startswith("| mnist_")]
    assert [line.split(" | ")[:2] for line in shown] == [
        [f"| {name}", str(batch)] for name, batch, _ in expected]


def test_peers_time_our_step_in_float32_where_auto_would_pick_bfloat16():
    """The peers run in float32, so ours does too: on a machine with bfloat16
    matrix units ``--precision=auto`` gives ``mnist_blog`` mixed bfloat16, and
    the peers' table once set that step beside the blog's float32 graph."""
    code = """
import sys
sys.path[:0] = ["experiments"]
import benchmark_peers
from sgan_keras import SGAN

def compute_dtypes(model):
    return {layer.compute_dtype for network in (model.generator, model.discriminator)
            for layer in network.layers if layer.weights}

print(sorted(compute_dtypes(SGAN.from_preset("mnist_blog", seed=0))),
      sorted(compute_dtypes(benchmark_peers.our_model("mnist_blog"))))
"""
    result = preloaded.run_code(code, env={**os.environ, "SGAN_KERAS_BFLOAT16_UNITS": "test units"},
                                timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "['bfloat16'] ['float32']"


def test_benchmark_times_each_preset_on_the_batches_it_trains_on():
    """SVHN DCGAN trains on masked batches (one real batch, its labeled images
    marked: two D calls a step); timing it on a labeled batch beside unlabeled
    ones would time a third D call it never makes. benchmark.py's bare loop and
    fit() modes both draw from ``Bench.training_batches``."""
    code = """
import sys
sys.path[:0] = ["experiments"]
from absl import flags
import benchmark
flags.FLAGS(["benchmark.py"])
for preset in ("svhn_dcgan", "mnist_blog"):
    bench = benchmark.Bench(preset, 4)
    fit_batch = next(iter(bench.training_batches()))     # fit()'s pipeline
    assert sorted(fit_batch) == sorted(next(bench.iterator)), preset
    print(preset, sorted(fit_batch), bench.label_batching, bench.images_per_step)
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-2:] == [
        "svhn_dcgan ['images', 'label_mask', 'labels'] masked 8",
        "mnist_blog ['generator_images', 'labeled_images', 'labels', 'unlabeled_images'] "
        "separate 12"]


def test_input_pipeline_latency_times_the_pipeline_beside_its_own_batch_in_memory():
    """benchmark_input_pipeline.py's ``next_latency``: the in-memory reference
    holds the pipeline's own first batch (so the two differ by the pipeline
    only), and each dataset gets its median of one ``next()``."""
    code = """
import json, sys
sys.path.insert(0, "experiments")
import numpy as np
import benchmark_input_pipeline as bench
from sgan_keras import data as data_lib
datasets = bench.latency_datasets(data_lib.synthetic_dataset("mnist", 100), 8)
first = next(iter(datasets["train_dataset"]))
held = next(iter(datasets["same_tensors_in_memory"]))
print(json.dumps({"same": all(np.array_equal(first[key], held[key]) for key in first),
                  "keys": sorted(first) == sorted(held),
                  "latency": bench.next_latency(datasets, calls=3, step_ms=1.0)}))
"""
    result = preloaded.run_code(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"] and report["keys"]
    assert sorted(report["latency"]) == ["one_scalar", "same_tensors_in_memory", "train_dataset"]
    assert all(milliseconds > 0 for milliseconds in report["latency"].values())


def test_input_pipeline_benchmark_checks_the_machine_and_records_the_check(tmp_path, mnist_dir):
    output = tmp_path / "input_pipeline.json"
    result = preloaded.run_script(
        "experiments/benchmark_input_pipeline.py",
        [f"--data_dir={mnist_dir}", "--steps=2", "--warmup_steps=1", "--latency_calls=2",
         "--step_ms=1", "--force", QUIET_LOOK, f"--output={output}"], timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(output.read_text())
    assert set(record["quiet_check"]) >= {"load_average", "busy_processes", "quiet"}
    assert record["quiet_check"]["waited_seconds"] == 0      # --force never waits
    mnist, = [row for row in record["rows"] if row["dataset"] == "mnist"]
    assert mnist["images_per_second"] > 0
    assert sorted(mnist["next_latency_ms"]) == ["one_scalar", "same_tensors_in_memory",
                                                "train_dataset"]


def test_conv_transpose_bench_times_each_layer_and_its_rewrite(tmp_path):
    output = tmp_path / "profiles.md"
    result = preloaded.run_script(
        "experiments/conv_transpose_bench.py",
        ["--batch_size=2", "--window_seconds=0.001", "--repeats=1", "--peak_repeats=1",
         *SMOKE, f"--output={output}", "--force"], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    for layer in ("GANs in Action g_convt1 | 7x7x256 -> 128, 3x3, stride 2",
                  "GANs in Action g_images | 14x14x128 -> 1, 3x3, stride 2",
                  "SVHN DCGAN g_convt1 | 4x4x128 -> 64, 5x5, stride 2",
                  "conv-large g_convt1 | 4x4x512 -> 256, 5x5, stride 2"):
        assert f"| {layer} | 2 | conv_transpose |" in text
        assert f"| {layer} | 2 | MatmulConv2DTranspose |" in text
    assert "| 14x14x128 -> 64, 3x3, stride 1 | 2 | conv, flipped kernel |" in text
    assert text.count("sub-pixel 2x2 conv + depth_to_space |") == 2
    assert text.count("| conv_transpose |") == 7
    assert text.count("| MatmulConv2DTranspose, forward as separate ops |") == 6
    assert "Machine check before measuring" in text and "Matmul peak (same run, best of 1)" in text


def test_conv_input_grad_bench_times_each_stride_one_convolutions_input_gradient(tmp_path):
    output = tmp_path / "input_grads.md"
    result = preloaded.run_script(
        "experiments/conv_input_grad_bench.py",
        ["--batch_size=2", "--window_seconds=0.001", "--repeats=1", "--peak_repeats=1",
         *SMOKE, f"--output={output}", "--force"], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    for layer in ("MNIST blog g_conv1 (UpsampleConv2D) | 7x7x64 -> 512, 3x3, same",
                  "SVHN DCGAN d_conv6 | 4x4x128 -> 128, 3x3, valid",
                  "conv-large d_conv8 | 6x6x192 -> 192, 1x1, valid"):
        assert f"| {layer} | 2 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | 2 | " in line]
    assert len(rows) == 13 and all(row.endswith("x |") for row in rows)
    assert "## Stride-1 convolutions' input gradients alone" in text
    assert "Machine check before measuring" in text and "Matmul peak (same run, best of 1)" in text


def test_benchmarks_refuse_a_busy_machine_without_force(monkeypatch):
    import provenance
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    with pytest.raises(SystemExit, match=r"the machine is busy .load .3.0.* after waiting"):
        provenance.quiet_check(seconds=0.1, patience=0.3)
    check = provenance.quiet_check(seconds=0.1, force=True)      # never waits
    assert not check["quiet"] and "NOT quiet" in provenance.quiet_line(check)
    assert check["waited_seconds"] == 0


def test_benchmarks_wait_for_the_load_of_a_process_that_just_ended(monkeypatch):
    import provenance
    looks = iter([{"load_average": [1.7, 1.6, 1.8], "busy_processes": [], "quiet": False}] * 2
                 + [{"load_average": [1.2, 1.5, 1.7], "busy_processes": [], "quiet": True}])
    monkeypatch.setattr(provenance, "_machine_load",
                        lambda seconds: (time.sleep(seconds), next(looks))[1])
    check = provenance.quiet_check(seconds=0.6, patience=10)
    assert check["quiet"] and check["load_average"][0] == 1.2
    assert 1.0 <= check["waited_seconds"] < 5
    waited = f"after waiting {check['waited_seconds']:.0f} s for it to settle"
    assert waited in provenance.quiet_line(check)


@pytest.mark.parametrize("flags, isa, named", [
    ("fpu sse avx2 fma", ["avx2"], "AMD EPYC (avx2)"),
    ("fpu avx2 avx512f avx512_bf16", ["avx2", "avx512f", "avx512_bf16"],
     "AMD EPYC (avx2, avx512f, avx512_bf16)"),
])
def test_the_machine_record_names_the_cpus_vector_isa(tmp_path, monkeypatch, flags, isa, named):
    """Two CPUs both called "AMD EPYC" ran 1.7x apart in matmul peak: the record
    tells them apart by the ISA flags that the matrix math uses."""
    import provenance
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
    monkeypatch.setattr(distribute, "CPUINFO", str(cpuinfo))
    record = provenance.machine()
    assert record["cpu"] == "AMD EPYC" and record["cpu_isa"] == isa
    assert provenance.machine_line(record).startswith(named + ", ")
    del record["cpu_isa"]     # a record written before the ISA was kept
    assert provenance.machine_line(record).startswith("AMD EPYC, ")


def test_the_machine_record_names_the_cores_a_pinned_process_may_use(monkeypatch):
    """A run under ``taskset -c 0`` (run.py's seeds, one per core) trained on
    one of the machine's two cores: its record said "2 cores"."""
    import provenance
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    record = provenance.machine()
    assert ", 2 cores (1 usable: CPU affinity), " in provenance.machine_line(record)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert ", 2 cores, " in provenance.machine_line(provenance.machine())
    del record["cpu_cores_usable"]     # a record written before it was kept
    assert ", 2 cores, " in provenance.machine_line(record)


@pytest.mark.parametrize("script, names, message", [
    ("experiments/benchmark.py", "--presets=nope", "--presets: unknown ['nope']"),
    ("experiments/benchmark.py", "--batch_size_presets=nope",
     "--batch_size_presets: unknown ['nope']"),
    ("experiments/benchmark_peers.py", "--peers=blog,nope", "--peers: unknown ['nope']"),
    ("experiments/benchmark.py", "--nosource_batch",
     "--nosource_batch times the presets of --presets that are in --batch_size_presets "
     "at --batch_sizes only: none given"),
], ids=["preset", "batch_size_preset", "peer", "no_batch_at_all"])
def test_benchmarks_reject_an_unknown_name(script, names, message, tmp_path):
    result = preloaded.run_script(script, [names, f"--output={tmp_path / 'b.md'}"], timeout=120)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "b.md").exists()


LOCK_IS_A_DIRECTORY = """
os.makedirs(os.path.join(results, "x.lock"))
run.run_experiment = lambda: run.record("x", "sgan", 0, made(0.8), invocation([0]), results)
run.main([])
"""


def test_a_lock_path_that_is_a_directory_gets_one_line_and_exit_2(tmp_path):
    """It was an IsADirectoryError traceback (exit 1) once the runs had trained."""
    result = preloaded.run_code(RECORD_PRELUDE + LOCK_IS_A_DIRECTORY, [str(tmp_path)],
                                timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: {tmp_path}/x.lock is a directory, not the result files' lock: move it away")
    assert not (tmp_path / "x.json").exists()


def test_a_snapshot_of_a_run_without_a_finished_epoch_says_nothing_is_recorded(tmp_path):
    """It exited 0 without a word, as if it had recorded the run."""
    result = run_py(tmp_path, "--snapshot")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: the sgan run of seed 0 has finished no epoch yet ({tmp_path}/runs/"
        "svhn_lecouat_1000/sgan_seed0); nothing of it is recorded")
    assert not (tmp_path / "results" / "svhn_lecouat_1000.json").exists()


ONE_KIND = """
import sys
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "train_seconds": 1.0,
        "test_accuracy": [0.8], "command": "python -m sgan_keras.train --seed=0"}
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "epochs=1", "machine": "m", "commit": "c", "date": "d"}
for kinds in (["sgan"], ["baseline"], ["sgan", "baseline"]):
    print(run.runner_command({**result, **{kind: {"0": run_} for kind in kinds}}))
# Both kinds asked for, the SGAN recorded first (its baseline still to train): no --kinds.
print(run.runner_command({**result, "kinds": ["sgan", "baseline"], "sgan": {"0": run_}}))
# Two commands of one kind each: the file asks for both.
import tempfile
directory = tempfile.mkdtemp()
for kind in ("sgan", "baseline"):
    run.record("x", kind, 0, dict(run_), {**result, "note": None, "kinds": [kind]}, directory)
print(run.read_result(directory, "x")["kinds"])
"""


def test_the_command_to_resume_trains_only_the_kind_of_runs_recorded():
    """Runs of one kind (run.py --kinds=sgan) were shown with a command
    that trains the other kind too: hours of a baseline never asked for. The
    kinds are those the commands asked for, not those recorded so far."""
    result = preloaded.run_code(ONE_KIND, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "python experiments/run.py --experiment=x --seeds=0 --kinds=sgan --epochs=1",
        "python experiments/run.py --experiment=x --seeds=0 --kinds=baseline --epochs=1",
        "python experiments/run.py --experiment=x --seeds=0 --epochs=1",
        "python experiments/run.py --experiment=x --seeds=0 --epochs=1",
        "['sgan', 'baseline']"]


OTHER_SEEDS_EACH_KIND = """
import sys, tempfile
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "train_seconds": 1.0,
        "test_accuracy": [0.8], "command": "python -m sgan_keras.train"}
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "status": "measured",
          "budget": "epochs=1", "machine": "m", "commit": "c", "date": "d", "note": None}
directory = tempfile.mkdtemp()
# run.py --seeds=0 --kinds=sgan, then --seeds=1,2 --kinds=baseline, as run_experiment asks.
run.record("x", "sgan", 0, dict(run_),
           {**result, "seeds": [0], "kinds": ["sgan"], "asked": {"sgan": [0]}}, directory)
for seed in (1, 2):
    run.record("x", "baseline", seed, dict(run_), {**result, "seeds": [1, 2], "kinds": [
        "baseline"], "asked": {"baseline": [1, 2]}}, directory)
print(run.runner_command(run.read_result(directory, "x")))
# Then --seeds=1,2 --kinds=sgan and --seeds=0 --kinds=baseline: each kind of each seed.
run.record("x", "sgan", 1, dict(run_),
           {**result, "seeds": [1, 2], "kinds": ["sgan"], "asked": {"sgan": [1, 2]}}, directory)
run.record("x", "baseline", 0, dict(run_),
           {**result, "seeds": [0], "kinds": ["baseline"], "asked": {"baseline": [0]}}, directory)
print(run.runner_command(run.read_result(directory, "x")))
"""


def test_the_command_to_resume_trains_only_the_seeds_asked_for_of_each_kind():
    """Two commands, one of each kind with other seeds, were shown with one
    command for every seed and kind of the file: runs no one asked for
    (here the SGAN of seeds 1 and 2 and the baseline of seed 0)."""
    result = preloaded.run_code(OTHER_SEEDS_EACH_KIND, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "python experiments/run.py --experiment=x --seeds=0 --kinds=sgan --epochs=1",
        "python experiments/run.py --experiment=x --seeds=1,2 --kinds=baseline --epochs=1",
        "python experiments/run.py --experiment=x --seeds=0,1,2 --epochs=1"]


IN_THE_REPOSITORY = """
import os, sys
sys.path.insert(0, "experiments")
import run
run_ = {"final_test_accuracy": 0.8, "best_test_accuracy": 0.85, "train_seconds": 1.0,
        "test_accuracy": [0.8]}
result = {"name": "x", "published": "p", "published_accuracy": 0.9, "seeds": [0],
          "status": "measured", "budget": "epochs=1", "machine": "m", "commit": "c",
          "date": "d", "baseline": {"0": {**run_, "command": "python -m sgan_keras.train"}}}
for runs in ("experiments/runs_short", os.path.join(run.REPO_ROOT, "experiments/runs_short")):
    command = f"python -m sgan_keras.train --output_dir={runs}/x/sgan_seed0_epochs1"
    print(run.runner_command({**result, "sgan": {"0": {**run_, "command": command}}},
                             os.path.join(run.REPO_ROOT, "experiments", "results_short")))
"""


def test_the_command_to_resume_names_directories_in_the_repository_relative_to_it():
    """run.py makes --results_dir absolute: --results_dir=experiments/results_short
    was shown as this checkout's absolute path, which no other checkout has."""
    result = preloaded.run_code(IN_THE_REPOSITORY, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == 2 * [
        "python experiments/run.py --experiment=x --seeds=0 --epochs=1 "
        "--runs_dir=experiments/runs_short --results_dir=experiments/results_short"]


REPORT_ON_A_FULL_DISK = """
import errno, os, runpy, sys
def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.replace = full
sys.argv = ["experiments/report.py"]
runpy.run_path("experiments/report.py", run_name="__main__")
"""


def test_report_on_a_full_disk_gets_one_line_and_exit_5_and_leaves_the_readme(tmp_path):
    """It was a WriteError traceback (exit 1)."""
    report_checkout(tmp_path)
    readme = "<!-- results:begin -->\n| stale |\n<!-- results:end -->\n"
    (tmp_path / "README.md").write_text(readme)
    result = subprocess.run([sys.executable, "-c", REPORT_ON_A_FULL_DISK], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (
        5, f"report.py: cannot write {tmp_path}/README.md (No space left on device); README.md "
           "is as it was: free space or fix the directory, then run it again")
    assert (tmp_path / "README.md").read_text() == readme
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "experiments"]


WRONG_SHAPES = [("null", "not a JSON object"), ("[]", "not a JSON object"),
                ('{"name": "svhn_lecouat_1000", "status": "measured", "seeds": [0]}',
                 "no budget"),
                ('{"name": "svhn_lecouat_1000", "status": "measured", "seeds": [0], "budget": '
                 '"b", "sgan": {"0": {"test_accuracy": []}}}',
                 "its sgan run of seed 0 has no test_accuracy")]


@pytest.mark.parametrize("text, problem", WRONG_SHAPES)
def test_a_result_file_of_the_wrong_shape_is_refused_in_one_line_not_replaced(
        tmp_path, text, problem):
    """JSON that parses but is no result file (an edit by hand) was an
    AttributeError or KeyError traceback."""
    finished_run(tmp_path / "runs")
    path = tmp_path / "results" / "svhn_lecouat_1000.json"
    path.parent.mkdir()
    path.write_text(text)
    result = run_py(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"run.py: {path} cannot be read as a result file ({problem}): fix it, or move it away")
    assert path.read_text() == text


@pytest.mark.parametrize("text, problem", WRONG_SHAPES + [
    ('{"name": "x", "status": "not measured", "published_accuracy": "85%"}',
     "its published_accuracy is not a JSON number")])
def test_report_names_a_result_file_of_the_wrong_shape_in_one_line(tmp_path, text, problem):
    """A file of ``null`` or without its budget was a traceback; a list was
    left out of the table without a word; a published accuracy of text, too."""
    report_checkout(tmp_path)
    readme = "<!-- results:begin -->\n<!-- results:end -->\n"
    (tmp_path / "README.md").write_text(readme)
    path = tmp_path / "experiments" / "results" / "x.json"
    path.write_text(text.replace('"status"', '"published_accuracy": 0.9, "status"'))
    for arguments in ([], ["--check"]):
        result = subprocess.run([sys.executable, "experiments/report.py", *arguments],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr.strip()) == (
            1, f"report.py: {path} cannot be read as a result file ({problem}): fix it, or "
               "move it away")
    assert (tmp_path / "README.md").read_text() == readme
