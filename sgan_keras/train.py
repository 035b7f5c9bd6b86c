r"""Trains a semi-supervised GAN and exports its classifier.

    python -m sgan_keras.train --dataset=mnist --labels=100 \
        --data_dir=../shared/data/mnist --output_dir=runs/mnist100

Every flag left unset takes the preset's value (the source's own
hyperparameters, ``sgan_keras/presets.py``). ``--batch_size`` is the *global*
batch, split across the replicas of ``--strategy``.

The output directory receives ``flags.json``, ``labeled_indices.json``,
``metrics.csv``, ``tensorboard/``, ``samples/``, ``accuracy.png``,
``losses.png``, ``checkpoint/`` (the last two training states, saved at each
epoch end and every ``--checkpoint_every_steps`` steps), ``export/`` (a
SavedModel classifier) and ``run.lock`` (one run per directory). Running the
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
    5   a full disk or an unwritable file; earlier outputs are intact
    75  stopped by SIGTERM or SIGINT after saving at the next step boundary;
        the line gives the command that resumes (EX_TEMPFAIL: try again)

Any other failure is a bug and keeps its traceback (exit 1). A second SIGTERM
or SIGINT ends the process at once (the run then resumes as after ``kill
-9``, from its last checkpoint). Under ``--strategy=multi_worker``,
TensorFlow's ``PreemptionCheckpointHandler`` handles SIGTERM to any worker:
every worker saves at the same step and exits 75.
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile

import keras
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from sgan_keras import callbacks as callbacks_lib
from sgan_keras import checkpoint
from sgan_keras import data as data_lib
from sgan_keras import distribute
from sgan_keras import export
from sgan_keras import faults
from sgan_keras import lock as lock_lib
from sgan_keras import losses
from sgan_keras import networks
from sgan_keras import optimizers
from sgan_keras import presets as presets_lib
from sgan_keras.model import GENERATOR_FAKES, SGAN, UPDATE_ORDERS

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", "mnist", ["mnist", "svhn", "cifar10"], "Dataset to train on.")
flags.DEFINE_string("labels", None, "Total label budget, class-balanced (a multiple of "
                    "the class count), or 'all'. Default: the preset's.")
flags.DEFINE_enum("preset", None, sorted(presets_lib.PRESETS),
                  "Source to reproduce. Default: mnist -> mnist_improved_gan, "
                  "svhn -> svhn_improved_gan, cifar10 -> cifar10_improved_gan.")
flags.DEFINE_enum("fake_class", None, list(losses.FAKE_CLASSES),
                  "zero: fixed zero fake logit; learned: K+1 outputs; separate: sigmoid head.")
flags.DEFINE_enum("generator_loss", None, list(losses.GENERATOR_LOSSES), "Generator loss.")
flags.DEFINE_enum("generator_activation", None, ["sigmoid", "softplus", "tanh"],
                  "The generator's output activation; default: the source's. Only "
                  "mnist_improved_gan has a choice (sigmoid, or softplus as "
                  "Sleepychord/ImprovedGAN-pytorch).")
flags.DEFINE_enum("manifold_reg", None, list(losses.MANIFOLD_REGULARIZATIONS),
                  "Manifold regularization of D: Lecouat et al. 2018 or the MNIST blog's form.")
flags.DEFINE_float("manifold_weight", None, "Manifold regularization weight (lambda).")
flags.DEFINE_float("manifold_epsilon", None, "Manifold regularization perturbation size.")
flags.DEFINE_float("unsupervised_weight", None, "Weight of the unsupervised GAN term in D's loss.")
flags.DEFINE_float("label_smoothing", None, "One-sided smoothing of the real target.")
flags.DEFINE_float("ema", None, "Decay of the moving average of D's weights used for "
                   "evaluation and export; 0 turns it off.")
flags.DEFINE_integer("epochs", None, "Epochs to train.")
flags.DEFINE_integer("steps_per_epoch", None, "Training steps per epoch.")
flags.DEFINE_integer("batch_size", None, "Global batch size (split across replicas).")
flags.DEFINE_float("lr", None, "Generator learning rate (D's is --d_lr_ratio times it).")
flags.DEFINE_float("d_lr_ratio", None, "Discriminator learning rate / generator learning rate.")
flags.DEFINE_float("adam_epsilon", None, "Adam's epsilon for both optimizers.")
flags.DEFINE_enum("adam_rule", None, list(optimizers.ADAM_RULES),
                  "Adam's update rule: keras (also TF1's: epsilon outside the root) or "
                  "improved_gan (openai/improved-gan nn.adam_updates: epsilon inside the "
                  "root of the bias-corrected second moment).")
flags.DEFINE_integer("init_images", None, "Images of the weight-norm data-dependent init "
                     "(improved-gan: 500); 0 = the first training batch.")
flags.DEFINE_enum("init_from", None, ["unlabeled", "labeled"],
                  "Draw the weight-norm init images from all training images or the labeled ones.")
flags.DEFINE_enum("procedure", "source", ["source", "unified"],
                  "source: train as the preset's source did; unified: the package's one "
                  "procedure for every preset (balanced labels, a separate labeled batch, "
                  "sequential updates, fresh fakes for G, Keras' Adam, init on the first "
                  "batch, the baseline as long as the GAN). The flags below override either.")
flags.DEFINE_enum("label_selection", None, list(data_lib.LABEL_SELECTIONS),
                  "balanced: --labels/10 per class, drawn with --seed; first: the first "
                  "--labels training images (GANs in Action, the Udacity notebook).")
flags.DEFINE_enum("label_batching", None, ["separate", "masked"],
                  "separate: a labeled batch beside the unlabeled ones; masked: one batch of "
                  "the training set whose labeled images alone reach the supervised loss "
                  "(the Udacity notebook).")
flags.DEFINE_enum("update_order", None, list(UPDATE_ORDERS),
                  "sequential: D, then G against the updated D; simultaneous: both from one "
                  "forward pass (Udacity); split: three D updates then G (GANs in Action).")
flags.DEFINE_enum("generator_fakes", None, list(GENERATOR_FAKES),
                  "fresh: G's update draws new noise; reused: it re-uses the D step's fakes "
                  "(the MNIST blog's one G forward pass per step).")
flags.DEFINE_integer("baseline_epochs", None, "--supervised_only: epochs (0 = --epochs).")
flags.DEFINE_integer("baseline_steps_per_epoch", None,
                     "--supervised_only: steps per epoch (0 = --steps_per_epoch).")
flags.DEFINE_integer("seed", 0, "Seed of the label draw, data order, weights and noise.")
flags.DEFINE_string("data_dir", None, "Local data directory (mnist.npz, IDX files, SVHN "
                    ".mat files or prepared TFDS data). Default: TFDS download.")
flags.DEFINE_bool("include_extra", False, "SVHN: add the 531,131 'extra' images to the unlabeled set.")
flags.DEFINE_string("output_dir", None, "Where outputs go. Default: runs/<experiment name>.")
flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                  "auto: all GPUs (Mirrored), one GPU, or the default strategy on CPU; "
                  "multi_worker reads TF_CONFIG.")
flags.DEFINE_integer("virtual_cpus", 0, "Split the CPU into this many logical devices "
                     "(to try tf.distribute without GPUs).")
flags.DEFINE_bool("supervised_only", False, "Train the same discriminator on the labeled "
                  "data alone, without a generator (the baseline).")
flags.DEFINE_bool("overwrite", False, "Replace the outputs of an earlier run in --output_dir.")
flags.DEFINE_bool("deterministic", False, "Make TensorFlow ops deterministic (slower on GPU).")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA-compile the train step. auto: off on CPU, where "
                  "experiments/results/benchmark.md measures it slower, and Keras' choice "
                  "elsewhere.")
flags.DEFINE_enum("precision", "auto", ["auto", *networks.PRECISIONS],
                  "Compute precision. mixed_bfloat16: bfloat16 math, float32 weights "
                  "and losses. auto: float32 (see experiments/results/benchmark.md).")
flags.DEFINE_integer("eval_batch_size", 1000, "Batch size of test-set evaluation.")

# Fault tolerance.
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also save the training state every this "
                     "many steps inside an epoch (0: at epoch ends only). SIGTERM and SIGINT "
                     "always save at the next step.")

# Exit statuses (module docstring, README "Faults").
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_NON_FINITE = 4
EXIT_WRITE = 5
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, try again

# Flags whose value goes into the Preset of the same (or the mapped) name.
_PRESET_FLAGS = {
    "fake_class": "fake_class", "generator_loss": "generator_loss",
    "manifold_reg": "manifold", "manifold_weight": "manifold_weight",
    "manifold_epsilon": "manifold_epsilon", "unsupervised_weight": "unsupervised_weight",
    "label_smoothing": "label_smoothing", "ema": "ema_decay", "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch", "batch_size": "batch_size", "lr": "g_lr",
    "d_lr_ratio": "d_lr_ratio", "adam_epsilon": "adam_epsilon",
    "generator_activation": "generator_activation", "adam_rule": "adam_rule",
    "init_images": "init_images", "init_from": "init_from",
    "label_selection": "label_selection", "label_batching": "label_batching",
    "update_order": "update_order", "generator_fakes": "generator_fakes",
    "baseline_epochs": "baseline_epochs", "baseline_steps_per_epoch": "baseline_steps_per_epoch",
}
_GAN_ONLY_FLAGS = ("fake_class", "generator_loss", "manifold_reg", "manifold_weight",
                   "manifold_epsilon", "unsupervised_weight", "label_smoothing",
                   "generator_activation")
_IMAGE_SHAPES = {"mnist": (28, 28, 1), "svhn": (32, 32, 3), "cifar10": (32, 32, 3)}
# Flags that do not change what a run computes (a resumed run may differ in them).
_RUN_ONLY_FLAGS = ("overwrite", "output_dir", "strategy", "virtual_cpus", "eval_batch_size",
                   "jit_compile", "checkpoint_every_steps")
# "auto" is Keras' rule (XLA off on CPU-only machines and under tf.distribute),
# which experiments/benchmark.py confirms on CPU: XLA is slower there.
_JIT_COMPILE = {"auto": "auto", "true": True, "false": False}


class UsageError(ValueError):
    """A bad flag value or combination; the message is one line."""


def resolve_config(values):
    """Flag values -> (preset, config dict) with every default filled in.

    ``values`` maps flag names to values (``None`` = unset). Raises
    :class:`UsageError` naming the flag on bad input.
    """
    dataset = values["dataset"]
    preset_name = values["preset"] or presets_lib.DEFAULT_PRESET_FOR_DATASET[dataset]
    preset = presets_lib.get_preset(preset_name)
    if tuple(preset.image_shape) != _IMAGE_SHAPES[dataset]:
        raise UsageError(f"--preset={preset_name} is built for {preset.image_shape} images, "
                         f"but --dataset={dataset} has {_IMAGE_SHAPES[dataset]}")
    if values["supervised_only"]:
        clashing = [name for name in _GAN_ONLY_FLAGS if values.get(name) is not None]
        if clashing:
            raise UsageError(f"--supervised_only trains no generator; drop --{clashing[0]}")
    manifold = values.get("manifold_reg") or preset.manifold
    if manifold == "none" and (values.get("manifold_weight") is not None
                               or values.get("manifold_epsilon") is not None):
        raise UsageError("--manifold_weight/--manifold_epsilon need --manifold_reg=lecouat or blog")
    if values.get("init_images") is not None and values["init_images"] < 0:
        raise UsageError(f"--init_images must be >= 0, got {values['init_images']}")
    for name in ("baseline_epochs", "baseline_steps_per_epoch"):
        if values.get(name) is not None and values[name] < 0:
            raise UsageError(f"--{name} must be >= 0, got {values[name]}")
    for name in ("epochs", "steps_per_epoch", "batch_size", "eval_batch_size"):
        if values.get(name) is not None and values[name] <= 0:
            raise UsageError(f"--{name} must be a positive integer, got {values[name]}")
    if (values.get("checkpoint_every_steps") or 0) < 0:
        raise UsageError("--checkpoint_every_steps must be >= 0 (0: at epoch ends only), "
                         f"got {values['checkpoint_every_steps']}")
    for name in ("lr", "d_lr_ratio", "adam_epsilon", "manifold_weight", "manifold_epsilon"):
        if values.get(name) is not None and values[name] <= 0:
            raise UsageError(f"--{name} must be positive, got {values[name]}")
    if values.get("ema") is not None and not 0 <= values["ema"] < 1:
        raise UsageError(f"--ema must be in [0, 1), got {values['ema']}")
    if values.get("label_smoothing") is not None and not 0 <= values["label_smoothing"] < 1:
        raise UsageError(f"--label_smoothing must be in [0, 1), got {values['label_smoothing']}")
    if values["include_extra"] and dataset != "svhn":
        raise UsageError("--include_extra applies to --dataset=svhn only")
    if values.get("virtual_cpus", 0) < 0:
        raise UsageError(f"--virtual_cpus must be >= 0, got {values['virtual_cpus']}")
    if resolve_precision(values.get("precision")) != "float32" and manifold != "none":
        raise UsageError(f"--precision={values['precision']} cannot be used with "
                         f"--manifold_reg={manifold}: its perturbation is below bfloat16's "
                         "resolution; use --precision=float32")
    activation = values.get("generator_activation")
    allowed = networks.GENERATOR_OUTPUT_ACTIVATIONS[preset.architecture]
    if activation is not None and activation not in allowed:
        raise UsageError(f"--generator_activation={activation}: the {preset_name} generator "
                         f"allows {', '.join(allowed)}")
    labels = parse_labels(values["labels"], preset.labels)

    if values.get("procedure") == "unified":
        preset = preset.replace(**presets_lib.UNIFIED_PROCEDURE)
    overrides = {field: values[flag] for flag, field in _PRESET_FLAGS.items()
                 if values.get(flag) is not None}
    preset = preset.replace(**overrides)
    if preset.generator_fakes == "reused" and preset.update_order != "sequential":
        raise UsageError("--generator_fakes=reused needs --update_order=sequential "
                         f"(the {preset.name} preset's order is {preset.update_order})")
    if values["supervised_only"]:
        # The baseline's own length (GANs in Action: 120 steps), unless given.
        preset = preset.replace(**{
            name: getattr(preset, "baseline_" + name) or getattr(preset, name)
            for name in ("epochs", "steps_per_epoch") if values.get(name) is None})
    config = {name: values.get(name) for name in (
        "dataset", "seed", "data_dir", "include_extra", "supervised_only", "deterministic",
        "strategy", "virtual_cpus", "eval_batch_size", "overwrite", "jit_compile",
        "precision", "procedure")}
    config["checkpoint_every_steps"] = values.get("checkpoint_every_steps") or 0
    config.update(preset=preset.name, labels=labels,
                  **{field: getattr(preset, field) for field in sorted(set(_PRESET_FLAGS.values()))})
    config["output_dir"] = values["output_dir"] or os.path.join("runs", experiment_name(config))
    return preset, config


def resolve_precision(precision):
    """``--precision``; ``auto`` is float32 on every device for now.

    experiments/results/benchmark.md measures mixed_bfloat16 on the
    development CPU; no GPU measurement exists yet to justify another default.
    """
    return "float32" if precision in (None, "auto") else precision


def parse_labels(text, default):
    """``--labels``: a positive integer or ``all``; unset -> the preset's."""
    if text is None:
        return default
    if text.strip().lower() == "all":
        return "all"
    try:
        labels = int(text)
    except ValueError:
        raise UsageError(f"--labels must be a positive integer or 'all', got {text!r}") from None
    if labels <= 0:
        raise UsageError(f"--labels must be a positive integer or 'all', got {labels}")
    return labels


def experiment_name(config):
    """A directory name that says the configuration (fixmatch style)."""
    parts = [config["dataset"], config["preset"], f"labels{config['labels']}"]
    if config["supervised_only"]:
        parts.append("supervised")
    else:
        parts += [config["fake_class"], config["generator_loss"]]
        if config["manifold"] != "none":
            parts.append(f"manifold_{config['manifold']}{config['manifold_weight']:g}")
        if config["generator_activation"]:
            parts.append(f"g_{config['generator_activation']}")
    if config.get("procedure") == "unified":
        parts.append("unified")
    parts.append(f"seed{config['seed']}")
    return "_".join(str(part) for part in parts)


def _comparable(config):
    return {k: v for k, v in config.items() if k not in _RUN_ONLY_FLAGS}


def prepare_output_dir(config):
    """Checks ``--output_dir``, takes its lock, writes ``flags.json``; returns
    the held :class:`lock_lib.RunLock`.

    Before anything is touched: a file, or a non-empty directory holding no
    sgan_keras run, is refused (unless ``--overwrite``). Then the lock: one
    run per directory (:class:`lock_lib.RunLockedError` names the holder).
    Under it, a directory holding the same configuration resumes; a finished
    run or a different configuration needs ``--overwrite``, which empties the
    directory (the lock file aside).
    """
    output_dir = config["output_dir"]
    flags_path = os.path.join(output_dir, "flags.json")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir={output_dir} is a file, not a directory")
    if (os.path.isdir(output_dir) and set(os.listdir(output_dir)) - {lock_lib.LOCK_FILE}
            and not os.path.exists(flags_path) and not config["overwrite"]):
        raise UsageError(f"--output_dir={output_dir} is not empty and holds no sgan_keras run; "
                         "choose another directory or pass --overwrite")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise UsageError(f"--output_dir={output_dir} cannot be written ({error.strerror})") from None
    with faults.writing(os.path.join(output_dir, lock_lib.LOCK_FILE)):
        run_lock = lock_lib.RunLock(output_dir).acquire()
    try:
        if config["overwrite"]:
            with faults.writing(output_dir):
                _empty_directory(output_dir, keep=lock_lib.LOCK_FILE)
        elif os.path.exists(flags_path):
            _check_same_run(output_dir, flags_path, config)
        write_json(flags_path, config)
    except BaseException:
        run_lock.release()
        raise
    return run_lock


def _check_same_run(output_dir, flags_path, config):
    """Refuses a directory holding a finished run, or another configuration's
    training (one that stopped before its first step, e.g. on a data error,
    left only its flags: they are replaced)."""
    try:
        with open(flags_path) as file:
            earlier = json.load(file)
    except ValueError as error:
        raise UsageError(f"{flags_path} cannot be read ({error}); pass --overwrite or another "
                         "--output_dir") from None
    trained = any(os.path.exists(os.path.join(output_dir, name))
                  for name in ("metrics.csv", "checkpoint", "export"))
    if _comparable(earlier) != _comparable(config) and trained:
        changed = sorted(k for k in _comparable(config) if earlier.get(k) != config.get(k))
        raise UsageError(f"--output_dir={output_dir} holds a run with other flags "
                         f"({', '.join(changed)}); pass --overwrite or another --output_dir")
    if os.path.exists(os.path.join(output_dir, "export")):
        raise UsageError(f"--output_dir={output_dir} holds a finished run; "
                         "pass --overwrite to train it again")


def _empty_directory(directory, keep):
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name == keep:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def write_json(path, value):
    """Writes JSON atomically (temporary file, then rename); a full disk or an
    unwritable directory raises :class:`faults.WriteError`, leaving ``path`` as it was."""
    temporary = path + ".tmp"
    try:
        with faults.writing(path):
            with open(temporary, "w") as file:
                json.dump(value, file, indent=2, sort_keys=True)
                file.write("\n")
            os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class StopSignals:
    """While active, SIGTERM and SIGINT ask training to stop at the next step boundary.

    The handler (Python's ``signal`` module) only records the first signal's
    name in :attr:`received`, which :class:`callbacks_lib.SaveCheckpoint`
    polls after every step; it also restores the default actions, so a
    second signal ends the process at once (the run then resumes from its
    last checkpoint, as after ``kill -9``). Under ``MultiWorkerMirroredStrategy``
    (``sigint_as_sigterm``), TensorFlow's ``PreemptionCheckpointHandler`` owns
    SIGTERM; SIGINT is re-sent to the process as SIGTERM for it.
    """

    def __init__(self, sigint_as_sigterm=False):
        self.received = None
        self._sigint_as_sigterm = sigint_as_sigterm
        self._previous = {}

    def __enter__(self):
        signals = (signal.SIGINT,) if self._sigint_as_sigterm else (signal.SIGTERM, signal.SIGINT)
        for number in signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def requested(self):
        """The name of the signal received (``"SIGTERM"``), or ``None``."""
        return self.received

    def _handle(self, number, frame):
        if self._sigint_as_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.received = signal.Signals(number).name
        for other in self._previous:
            signal.signal(other, signal.SIG_DFL)


def train(preset, config):
    """Runs the training described by ``config``; returns the output directory.

    Faults raise the package's errors (see :func:`main`), after the lock is
    released and the signal handlers are restored.
    """
    if config["virtual_cpus"]:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config["virtual_cpus"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    strategy = distribute.make_strategy(config["strategy"])
    if preset.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size={preset.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas of --strategy={config['strategy']}")
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with contextlib.ExitStack() as cleanup:
        if distribute.is_chief(strategy):
            run_lock = prepare_output_dir(config)
            cleanup.callback(run_lock.release)
            if run_lock.stale_pid:
                print(f"Taking over {config['output_dir']}: its lock names pid {run_lock.stale_pid}, "
                      "which ended without releasing it (killed or crashed).", flush=True)
            output_dir = config["output_dir"]
        else:
            # Non-chief workers of a multi-worker run write to a throw-away directory.
            output_dir = tempfile.mkdtemp(prefix="sgan_worker_")
            cleanup.callback(shutil.rmtree, output_dir, ignore_errors=True)
        stop = cleanup.enter_context(StopSignals(sigint_as_sigterm=multi_worker))
        _train(preset, config, strategy, output_dir, stop)
    return config["output_dir"]


def _train(preset, config, strategy, output_dir, stop):
    """:func:`train` once the output directory is ours. ``output_dir`` is this
    worker's (the run's on the chief); ``stop`` the :class:`StopSignals`."""
    chief = output_dir == config["output_dir"]
    keras.utils.set_random_seed(config["seed"])
    data = data_lib.load_dataset(
        config["dataset"], config["labels"], seed=config["seed"], data_dir=config["data_dir"],
        pixel_range=preset.pixel_range, include_extra=config["include_extra"],
        label_selection=preset.label_selection)
    if chief:
        write_json(os.path.join(output_dir, "labeled_indices.json"),
                   [int(i) for i in data.labeled_indices])

    with strategy.scope():
        model = SGAN.from_preset(
            preset.name, num_classes=data.num_classes, seed=config["seed"],
            supervised_only=config["supervised_only"],
            precision=resolve_precision(config["precision"]),
            **{field: getattr(preset, field) for field in set(_PRESET_FLAGS.values())})
        model.compile(jit_compile=_JIT_COMPILE[config["jit_compile"] or "auto"])
    # Every worker restores from the chief's checkpoints (a shared file system).
    store = checkpoint.CheckpointStore(
        os.path.join(config["output_dir"], "checkpoint"), model.state_variables(),
        write_directory=os.path.join(output_dir, "checkpoint"))
    restored = _restore(store, preset.steps_per_epoch, os.path.join(output_dir, "metrics.csv"))
    step = restored.step if restored else 0
    if step:
        model.weight_norm_initialized = True
    elif preset.init_images:  # else fit() initializes on the first training batch
        model.initialize_weight_norm(data.init_batch(preset.init_images, preset.init_from))
    # A checkpoint inside an epoch also holds that epoch's running metrics.
    restore_metrics = (lambda: store.read(restored.path)) if step % preset.steps_per_epoch else None

    step_counter = model.d_optimizer.iterations
    if stop.received:  # before any training step: nothing new to save
        raise callbacks_lib.TrainingInterrupted(stop.received, step, path=None)
    with contextlib.ExitStack() as context:
        preemption = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            preemption = _preemption_handler(strategy, store, step_counter,
                                             context.enter_context(tempfile.TemporaryDirectory()))
        for index, (initial_epoch, epochs, steps, start_step) in enumerate(_fit_calls(
                step, preset.steps_per_epoch, preset.epochs)):
            if config["supervised_only"]:
                train_data = data.supervised_dataset(preset.batch_size, start_step=start_step)
            elif preset.label_batching == "masked":
                train_data = data.masked_dataset(preset.batch_size, start_step=start_step)
            else:
                train_data = data.train_dataset(preset.batch_size, start_step=start_step)
            callbacks = _callbacks(preset, config, output_dir, initial_epoch, store,
                                   step_counter, stop, preemption,
                                   restore_metrics=restore_metrics if index == 0 else None)
            model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps,
                      validation_data=data.test_dataset(config["eval_batch_size"]),
                      callbacks=callbacks, verbose=callbacks_lib.progress_verbosity(),
                      shuffle=False)
    # All workers export (reading distributed variables may need every worker);
    # the non-chief ones into their throw-away directory.
    export_dir = os.path.join(output_dir, "export")
    with faults.writing(export_dir):
        export.export_classifier(model.classifier(), export_dir, image_shape=data.image_shape,
                                 pixel_range=preset.pixel_range, overwrite=True)


def _restore(store, steps_per_epoch, metrics_path):
    """Restores the newest readable checkpoint, saying what it does; returns
    the :class:`checkpoint.Restored` or ``None``."""
    restored = store.restore()
    if restored is None:
        rows = callbacks_lib.read_metrics_csv(metrics_path) if store.is_chief else []
        if rows:
            print(f"No checkpoint in {store.directory}: starting from step 0 (metrics.csv's "
                  f"{len(rows)} rows are dropped).", flush=True)
        return None
    for path, reason in restored.unreadable:
        aside = (f"set aside as {checkpoint.UNREADABLE_PREFIX}{os.path.basename(path)}"
                 if restored.set_aside else "skipped")
        print(f"Checkpoint {path} cannot be read ({reason}): {aside}; falling back to "
              f"{os.path.basename(restored.path)}.", flush=True)
    epoch, done = divmod(restored.step, steps_per_epoch)
    if done:
        print(f"Resuming from step {restored.step}: epoch {epoch + 1}, after {done} of its "
              f"{steps_per_epoch} steps.", flush=True)
    else:
        print(f"Resuming from the end of epoch {epoch}.", flush=True)
    return restored


def _fit_calls(step, steps_per_epoch, epochs):
    """``(initial_epoch, epochs, steps_per_epoch, start_step)`` of the ``fit()``
    calls that train from ``step`` to the end.

    Keras runs the same number of steps in every epoch of one ``fit()`` call,
    so an epoch resumed after ``done`` of its steps is finished by a call of
    the remaining steps; a second call trains the epochs after it.
    """
    epoch, done = divmod(step, steps_per_epoch)
    calls = []
    if done:
        calls.append((epoch, epoch + 1, steps_per_epoch - done, step))
        epoch += 1
    if epoch < epochs:
        calls.append((epoch, epochs, steps_per_epoch, epoch * steps_per_epoch))
    return calls


def _callbacks(preset, config, output_dir, initial_epoch, store, step_counter, stop, preemption,
               restore_metrics):
    """The callbacks of one ``fit()`` call, in the order they must run."""
    metrics_path = os.path.join(output_dir, "metrics.csv")
    callbacks = [callbacks_lib.StopOnNonFiniteLoss(step_counter)]  # first: before any save
    if restore_metrics is not None:
        callbacks.append(callbacks_lib.ResumeEpochMetrics(restore_metrics))
    callbacks += [
        callbacks_lib.MetricsCSV(metrics_path, initial_epoch=initial_epoch),
        callbacks_lib.CurvePlots(metrics_path, output_dir),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")),
    ]
    if not config["supervised_only"]:
        callbacks.append(callbacks_lib.SampleGrid(
            os.path.join(output_dir, "samples"), seed=config["seed"],
            tensorboard_dir=os.path.join(output_dir, "tensorboard", "samples")))
    if callbacks_lib.progress_verbosity() == 0:
        callbacks.append(callbacks_lib.EpochSummary(total_epochs=preset.epochs))
    # Last: an epoch's checkpoint is saved once its metrics.csv row is written.
    callbacks.append(callbacks_lib.SaveCheckpoint(
        store, step_counter, preset.steps_per_epoch, every_steps=config["checkpoint_every_steps"],
        stop_requested=None if preemption else stop.requested, preemption=preemption))
    return callbacks


def _preemption_handler(strategy, store, step_counter, scratch_dir):
    """TensorFlow's ``tf.distribute.experimental.PreemptionCheckpointHandler``
    for ``MultiWorkerMirroredStrategy``.

    When any worker gets SIGTERM, the handler agrees with every worker on a
    step, where each saves through ``store`` (its ``save_fn``) and stops (its
    ``exit_fn`` raises :class:`callbacks_lib.TrainingInterrupted`). The
    handler restores from the checkpoint manager it is given when it starts;
    it gets an empty one in ``scratch_dir`` and never writes to it (``save_fn``
    replaces its saving): ``store`` has restored the run already, with
    fall-back, and the handler's step count must start equal on every worker.
    TensorFlow documents the handler as doing nothing on GCP CPU VMs; there,
    SIGTERM ends the workers at once and a re-run resumes from the last
    checkpoint.
    """
    def save():
        store.save(int(step_counter.numpy()))

    def stop():
        step = int(step_counter.numpy())
        raise callbacks_lib.TrainingInterrupted("SIGTERM (preemption)", step,
                                                store.checkpoint_path(step))

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), scratch_dir, max_to_keep=1)
    return tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver, manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            save_fn=save, exit_fn=stop))


def main(argv):
    """Runs :func:`train`; each fault the package knows becomes one line and
    its exit status (module docstring). Other errors keep their traceback."""
    logging.set_verbosity(logging.WARNING)  # keep TF's INFO lines out of the log
    if len(argv) > 1:
        _exit(EXIT_USAGE, f"unexpected arguments {argv[1:]}; every option is a --flag "
                          "(see --helpfull)")
    values = {name: FLAGS[name].value for name in FLAGS if name in _KNOWN_FLAGS}
    try:
        preset, config = resolve_config(values)
        output_dir = train(preset, config)
    except (UsageError, data_lib.DataError, distribute.StrategyError, export.ExportError,
            checkpoint.CheckpointError) as error:
        _exit(EXIT_USAGE, _first_line(error))
    except lock_lib.RunLockedError as error:
        _exit(EXIT_LOCKED, _first_line(error))
    except (callbacks_lib.NonFiniteLossError, checkpoint.NonFiniteStateError) as error:
        _exit(EXIT_NON_FINITE, f"{_first_line(error)}: training stopped without saving "
                               "that state; earlier checkpoints are kept (a smaller --lr may help)")
    except faults.WriteError as error:
        _exit(EXIT_WRITE, f"{_first_line(error)}; earlier outputs are intact: free space "
                          "or fix the directory, then re-run the same command to resume")
    except callbacks_lib.TrainingInterrupted as error:
        saved = f"saved {error.path}" if error.path else "no step trained since the last checkpoint"
        _exit(EXIT_INTERRUPTED, f"{error.reason} at step {error.step}: {saved}; resume with "
                                f"the same command: {_command()}", kind="interrupted")
    print(f"Done: outputs in {output_dir}", flush=True)


_KNOWN_FLAGS = ("dataset", "labels", "preset", "supervised_only", "include_extra", "seed",
                "data_dir", "output_dir", "strategy", "virtual_cpus", "overwrite",
                "deterministic", "eval_batch_size", "jit_compile", "precision", "procedure",
                "checkpoint_every_steps", *_PRESET_FLAGS)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _command():
    """The command line of this process, to run again."""
    return shlex.join([sys.executable, "-m", "sgan_keras.train", *sys.argv[1:]])


def _exit(status, message, kind="error"):
    print(f"sgan_keras.train: {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run():
    """Console-script entry point (``sgan-train``)."""
    app.run(main)


if __name__ == "__main__":
    run()
