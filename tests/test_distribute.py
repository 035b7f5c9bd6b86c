"""Strategy selection. Device set-up must precede TensorFlow's start, and pytest runs every
test file in one process, so strategies that need it are built in subprocesses."""

import json
import os
import pathlib
import platform
import re
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

import preloaded

from sgan_keras import distribute
from sgan_keras import onednn
from sgan_keras.distribute import StrategyError, is_chief, make_strategy

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
ENV.pop("TF_CONFIG", None)


def run_python(script, env=ENV, timeout=120, fresh=False, argv=()):
    """Runs ``script`` (with ``argv``) in a TensorFlow runtime of its own: forked
    from a process that has imported TensorFlow (tests/preloaded.py), or with
    ``fresh``, in a new interpreter (for what happens before TensorFlow is imported)."""
    if fresh:
        result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                                text=True, env=env, cwd=REPO_ROOT, timeout=timeout)
    else:
        result = preloaded.run_code(script, argv, env=env, cwd=REPO_ROOT, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


LOCAL_STRATEGIES = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sgan_keras import distribute

def replica_sum(strategy):
    @tf.function
    def all_reduce_ones():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            "sum", tf.constant(1.0)))
    return float(strategy.experimental_local_results(all_reduce_ones())[0])

report = {}
for name in ("mirrored", "auto", "one_device"):
    strategy = distribute.make_strategy(name)
    report[name] = {"type": type(strategy).__name__,
                    "replicas": strategy.num_replicas_in_sync,
                    "devices": [] if name == "auto" else list(strategy.extended.worker_devices),
                    "replica_sum": replica_sum(strategy),
                    "is_default": strategy is tf.distribute.get_strategy(),
                    "is_chief": distribute.is_chief(strategy)}
print(json.dumps(report))
"""


def test_local_strategies_on_two_logical_cpus():
    report = run_python(LOCAL_STRATEGIES)
    mirrored, auto, one_device = report["mirrored"], report["auto"], report["one_device"]
    assert mirrored["type"] == "MirroredStrategy"
    assert mirrored["replicas"] == 2 and mirrored["replica_sum"] == 2.0
    assert [device.rsplit("/", 1)[1].lower() for device in mirrored["devices"]] == [
        "device:cpu:0", "device:cpu:1"]
    assert auto["is_default"] and auto["replicas"] == 1 and auto["replica_sum"] == 1.0
    assert one_device["type"] == "OneDeviceStrategy" and one_device["replicas"] == 1
    assert one_device["devices"][0].lower().endswith("cpu:0")
    assert mirrored["is_chief"] and auto["is_chief"] and one_device["is_chief"]


# What the CLI does before importing TensorFlow for a run of argv[1] (an
# architecture), then whether TensorFlow runs oneDNN's kernels and which CPU
# allocator it took.
CLI_RUNTIME = """
import json, sys
from sgan_keras import train
train.import_trainer(sys.argv[1])
from sgan_keras import distribute, onednn
print(json.dumps({"onednn": onednn.onednn_kernels_in_use(),
                  "pooled": distribute.pooled_cpu_allocator_in_use()}))
"""
# Each case: (architecture, the variables the environment sets). With oneDNN's
# kernels TensorFlow's CPU device pools memory whatever the allocator's variable
# says (its oneDNN allocator): the allocator is tested with them off.
CLI_RUNTIME_CASES = {
    "mnist_blog": ("mnist_blog", {}),
    "mnist_gans_in_action": ("mnist_gans_in_action", {}),
    "mnist_blog, oneDNN off": ("mnist_blog", {onednn.ONEDNN_VARIABLE: "0"}),
    "oneDNN off, allocator false": ("", {onednn.ONEDNN_VARIABLE: "0",
                                        distribute.POOLED_CPU_ALLOCATOR_VARIABLE: "false"}),
}


@pytest.fixture(scope="session")
def cli_runtime(tmp_path_factory):
    """``cli_runtime(case)``: CLI_RUNTIME's report for a CLI_RUNTIME_CASES case, in
    a new interpreter (the variables are read at TensorFlow's import and start),
    run once per session (conftest.made_once), whichever tests read it."""
    from conftest import made_once

    def run(case):
        architecture, variables = CLI_RUNTIME_CASES[case]

        def make(directory):
            env = {key: value for key, value in ENV.items()
                   if key not in (onednn.ONEDNN_VARIABLE, distribute.POOLED_CPU_ALLOCATOR_VARIABLE)}
            report = run_python(CLI_RUNTIME, env={**env, **variables}, fresh=True,
                                argv=[architecture])
            (directory / "report.json").write_text(json.dumps(report))
        name = "cli_runtime_" + re.sub(r"\W+", "_", case)
        return json.loads((made_once(tmp_path_factory, name, make) / "report.json").read_text())
    return run


@pytest.mark.parametrize("case, pooled", [("mnist_blog, oneDNN off", True),
                                          ("oneDNN off, allocator false", False)])
def test_the_train_cli_runs_tensorflow_with_the_pooled_cpu_allocator_unless_told_not_to(
        cli_runtime, case, pooled):
    report = cli_runtime(case)
    assert report["onednn"] is False     # else TensorFlow pools whatever the variable says
    assert report["pooled"] is pooled


def test_use_pooled_cpu_allocator_keeps_the_environments_choice(monkeypatch):
    variable = distribute.POOLED_CPU_ALLOCATOR_VARIABLE
    monkeypatch.setenv(variable, "false")
    distribute.use_pooled_cpu_allocator()
    assert os.environ[variable] == "false"
    monkeypatch.delenv(variable)
    distribute.use_pooled_cpu_allocator()
    assert os.environ[variable] == "true"


@pytest.mark.skipif(not onednn.is_x86(),
                    reason="the CLI chooses the kernels on x86 CPUs only")
@pytest.mark.parametrize("case, enabled", [
    ("mnist_blog", True),                 # oneDNN's kernels, measured faster
    ("mnist_gans_in_action", False),      # Eigen's, measured faster for it
    ("mnist_blog, oneDNN off", False),    # the environment's choice wins
])
def test_the_train_cli_runs_tensorflow_with_the_kernels_measured_faster_for_the_architecture(
        cli_runtime, case, enabled):
    assert cli_runtime(case)["onednn"] is enabled


def test_choose_cpu_kernels_on_x86_only_by_architecture_and_keeps_the_environments_choice(
        monkeypatch):
    variable = onednn.ONEDNN_VARIABLE
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(variable, "0")
    assert onednn.choose_cpu_kernels("mnist_blog") == "0" and os.environ[variable] == "0"
    monkeypatch.delenv(variable)
    assert onednn.choose_cpu_kernels() == "1" and os.environ[variable] == "1"
    monkeypatch.delenv(variable)
    assert onednn.choose_cpu_kernels("mnist_gans_in_action") == "0"
    assert os.environ[variable] == "0"
    monkeypatch.delenv(variable)
    # Eigen's kernels emulate bfloat16: a mixed-bfloat16 run takes oneDNN's;
    # auto is float32 for GANs in Action (its preset is not checked in bfloat16).
    assert onednn.choose_cpu_kernels("mnist_gans_in_action", "mixed_bfloat16") == "1"
    monkeypatch.delenv(variable)
    assert onednn.kernels_setting("mnist_gans_in_action", "auto") == "0"
    assert onednn.kernels_setting("mnist_blog", "float32") == "1"
    # What a script gives the process it starts for an architecture.
    assert onednn.kernels_environment("mnist_gans_in_action", chosen="1") == {variable: "1"}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert onednn.choose_cpu_kernels("mnist_gans_in_action") is None
    assert variable not in os.environ
    assert onednn.kernels_environment("mnist_gans_in_action") == {}


@pytest.mark.parametrize("precision", ["auto", "mixed_bfloat16"])
def test_the_cli_chooses_the_kernels_for_the_presets_architecture_and_precision(
        precision, monkeypatch, tmp_path):
    from absl import app, flags
    from sgan_keras import train
    chosen = []

    def import_trainer(architecture="", precision="float32"):
        chosen.append((architecture, precision))
        raise SystemExit(0)        # stop before TensorFlow: only the choice is tested
    monkeypatch.setattr(train, "import_trainer", import_trainer)
    try:
        with pytest.raises(SystemExit):
            app.run(train.main, argv=["sgan_keras.train", "--preset=mnist_gans_in_action",
                                      f"--precision={precision}", f"--output_dir={tmp_path}"])
    finally:
        flags.FLAGS.unparse_flags()
    assert chosen == [("mnist_gans_in_action", precision)]


# Each worker all-reduces (its index + 1); both must see 1 + 2 = 3. Then each
# checks the checkpoint steps: equal ones pass, 0 and 10 stop both workers.
MULTI_WORKER = """
import json, os, pathlib, time
from sgan_keras import distribute
import tensorflow as tf
strategy = distribute.make_strategy("multi_worker")
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

@tf.function
def reduce_across_workers():
    def replica_fn():
        return tf.distribute.get_replica_context().all_reduce("sum", tf.constant(index + 1.0))
    return strategy.run(replica_fn)

value = strategy.experimental_local_results(reduce_across_workers())[0]
distribute.check_same_step(strategy, 7, "out")       # the same step: no error
try:
    distribute.check_same_step(strategy, 10 * index, "out")
    disagreement = ""
except distribute.StrategyError as error:
    disagreement = str(error)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "value": float(value),
                  "is_chief": distribute.is_chief(strategy),
                  "steps": distribute.each_workers_value(strategy, index + 1),
                  "disagreement": disagreement}))
# Neither exits before both are done: a worker whose last collective had ended
# could close its server while the other still fetched its value from it.
barrier = pathlib.Path(os.environ["BARRIER_DIR"])
(barrier / f"done{index}").touch()
while len(list(barrier.glob("done*"))) < 2:
    time.sleep(0.05)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_workers_on_localhost_all_reduce_and_check_their_restored_steps(tmp_path):
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            workers.append(preloaded.launch_code(
                MULTI_WORKER, env={**ENV, "TF_CONFIG": tf_config, "BARRIER_DIR": str(tmp_path)},
                cwd=REPO_ROOT))
        outputs = [worker.communicate(timeout=90) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    reports = []
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [report["replicas"] for report in reports] == [2, 2]
    assert [report["value"] for report in reports] == [3.0, 3.0]
    assert [report["is_chief"] for report in reports] == [True, False]
    assert [report["steps"] for report in reports] == [[1, 2], [1, 2]]
    for report in reports:   # workers that restored steps 0 and 10 both stop
        assert "restored different checkpoint steps (0, 10, worker by worker)" in (
            report["disagreement"])
        assert "--output_dir=out" in report["disagreement"]


# ------------------------------------------------------------------ bad input
def test_unknown_strategy_lists_the_allowed_ones():
    with pytest.raises(StrategyError) as error:
        make_strategy("parameter_server")
    message = str(error.value)
    assert "\n" not in message and "parameter_server" in message
    assert all(name in message for name in distribute.STRATEGIES)


@pytest.mark.parametrize("tf_config, words", [
    (None, "unset"),
    ("{not json", "JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "cluster"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "task"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
     "worker:1"),
    ('["a list"]', "cluster"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "'localhost' of worker:0 must be HOST:PORT"),
    ('{"cluster": {"worker": ["localhost:1", "localhost:99999"]}, '
     '"task": {"type": "worker", "index": 0}}', "'localhost:99999' of worker:1"),
    ('{"cluster": {"worker": ["nosuchhost.invalid:2222"]}, '
     '"task": {"type": "worker", "index": 0}}', "nosuchhost.invalid:2222, whose host does not"),
])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, words):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(StrategyError) as error:
        make_strategy("multi_worker")
    message = str(error.value)
    assert "TF_CONFIG" in message and words in message and "\n" not in message


@pytest.mark.parametrize("tf_config, words", [
    ('{"cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}, '
     '"task": {"type": "worker", "index": 0}}', "cluster has a 'ps' job"),
    ('{"cluster": {"trainer": ["localhost:1"]}, "task": {"type": "trainer", "index": 0}}',
     "cluster has a 'trainer' job"),
    ('{"cluster": {"worker": ["localhost:1"], "chief": "localhost:2"}, '
     '"task": {"type": "worker", "index": 0}}', "job 'chief' must be a list"),
    ('{"cluster": {"chief": ["localhost:1", "localhost:2"]}, '
     '"task": {"type": "chief", "index": 0}}', "more than one 'chief'"),
    ('{"cluster": {"worker": ["localhost:1"], "evaluator": ["localhost:2"]}, '
     '"task": {"type": "evaluator", "index": 0}}', "task type 'evaluator'"),
    ('{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
     '"task": {"type": "worker", "index": "1"}}', "index must be a whole number, e.g. 0; got '1'"),
])
def test_multi_worker_takes_only_chief_and_worker_tasks(tf_config, words):
    """TensorFlow's own checks of these ended in a traceback; a worker waited
    without end for a parameter server, and an evaluator task trained a model
    alone and wrote nothing (exit 0). An index "1" was said not to be in a
    cluster of two workers."""
    with pytest.raises(StrategyError) as error:
        distribute.check_tf_config(tf_config)
    message = str(error.value)
    assert "TF_CONFIG" in message and words in message and "\n" not in message


PORT_IN_USE = """
import json, os, socket
from sgan_keras import distribute
with socket.socket() as taken:
    taken.bind(("localhost", 0))
    taken.listen()
    port = taken.getsockname()[1]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port}"]},
                                          "task": {"type": "worker", "index": 0}})
    try:
        distribute.make_strategy("multi_worker")
        print(json.dumps({"port": port, "error": None}))
    except distribute.StrategyError as error:
        print(json.dumps({"port": port, "error": str(error)}))
"""


def test_multi_worker_on_a_port_in_use_names_the_port():
    """TensorFlow says only "Could not start gRPC server", with a traceback."""
    report = run_python(PORT_IN_USE)
    assert report["error"] == (f"this task cannot serve at its TF_CONFIG address "
                               f"localhost:{report['port']}: port {report['port']} is in use "
                               "by another process")



SIGTERM_ONCE_THE_CLUSTER_IS_UP = """
import json, os, signal, socket, time
from sgan_keras import distribute
with socket.socket() as probe:
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port}"]},
                                      "task": {"type": "worker", "index": 0}})
signal.signal(signal.SIGTERM, signal.default_int_handler)    # as the CLI sets it
distribute.make_strategy("multi_worker")
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(3)
    print(json.dumps({"answered": False}))
except KeyboardInterrupt:
    print(json.dumps({"answered": True}))
"""


def test_a_sigterm_once_the_cluster_is_up_reaches_pythons_handler():
    """TensorFlow's preemption notifier took SIGTERM in C++ as the strategy
    started: one before training (data, model, restore) was lost, and the
    worker trained to the end (exit 0) instead of stopping with its line."""
    assert run_python(SIGTERM_ONCE_THE_CLUSTER_IS_UP) == {"answered": True}

def test_tpu_without_a_tpu_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(StrategyError) as error:
        make_strategy("tpu")
    assert "tpu" in str(error.value) and "\n" not in str(error.value)


# A notebook that has run TensorFlow, then asks train() for logical CPUs.
VIRTUAL_CPUS_TOO_LATE = """
import json, os, tempfile
import tensorflow as tf
from sgan_keras import presets, trainer
tf.constant(1.0)
output_dir = os.path.join(tempfile.mkdtemp(), "run")
config = presets.resolve({"preset": "mnist_gans_in_action", "strategy": "mirrored",
                          "virtual_cpus": 2, "output_dir": output_dir})
try:
    trainer.train(config)
    error = None
except trainer.BAD_INPUT as bad:
    error = str(bad)
print(json.dumps({"error": error, "written": os.path.exists(output_dir)}))
"""


def test_virtual_cpus_after_tensorflow_started_is_bad_input():
    # It raised TensorFlow's RuntimeError, none of the errors train() documents.
    report = run_python(VIRTUAL_CPUS_TOO_LATE)
    assert report["error"] is not None and "\n" not in report["error"], report
    assert "virtual_cpus=2" in report["error"] and "already started" in report["error"]
    assert not report["written"]


# ------------------------------------------------------------------- is_chief
class FakeStrategy:
    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


WORKERS = {"worker": ["host:1", "host:2"]}
WITH_CHIEF = {"chief": ["host:0"], "worker": ["host:1", "host:2"]}


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    (WORKERS, "worker", 0, True),
    (WORKERS, "worker", 1, False),
    (WITH_CHIEF, "chief", 0, True),
    (WITH_CHIEF, "worker", 0, False),
    (WORKERS, "evaluator", 0, False),
    ({}, None, None, True),
])
def test_is_chief(cluster, task_type, task_id, chief):
    assert is_chief(FakeStrategy(cluster, task_type, task_id)) is chief


def test_is_chief_without_a_cluster():
    assert is_chief(tf.distribute.get_strategy()) is True


@pytest.mark.parametrize("second_gather", ["ends", "fails"])
def test_a_worker_stopping_on_a_gather_joins_one_more_before_it_raises(
        monkeypatch, second_gather):
    """check_same_flags and check_same_step stop every worker on what one
    gather showed. A worker that raised as soon as its own gather ended shut
    its server while another still fetched that gather's result from it,
    and the other stopped with 'lost another worker' (exit 69) instead of the
    same line (seen once in CI). Each first joins one more gather, which ends
    only once every worker has the first's result; that gather failing (a
    worker that had both already stopped) changes nothing. The race itself
    depends on timing; this tests the order of the calls."""
    calls = []

    def gather(strategy, value):
        calls.append(("gather", value))
        if len(calls) > 1 and second_gather == "fails":
            raise tf.errors.UnavailableError(None, None, "the other worker has stopped")
        return [value, value + 1]      # the first gather: the two workers differ

    def gather_flags(strategy, values):
        calls.append(("flags", len(values)))
        return [values, [value + 1 for value in values]]     # every flag differs

    monkeypatch.setattr(distribute, "each_workers_value", gather)
    monkeypatch.setattr(distribute, "each_workers_values", gather_flags)
    with pytest.raises(StrategyError, match=r"restored different checkpoint steps \(7, 8,"):
        distribute.check_same_step("strategy", 7, "runs/x")
    assert calls == [("gather", 7), ("gather", 0)]
    calls.clear()
    with pytest.raises(StrategyError, match=r"different flags \(--lr\)"):
        distribute.check_same_flags("strategy", {"--lr": 0.1})
    assert calls == [("flags", 1), ("gather", 0)]
