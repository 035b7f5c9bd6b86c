r"""Measures the SGAN training step: images/s, FLOP/s, input wait, execution modes.

    python experiments/benchmark.py --batch_sizes=100    # all presets and peers: ~53 min, 2 AVX2 cores
    python experiments/benchmark.py --presets=mnist_blog --batch_sizes=100 --peers=

For each preset at its source's batch size (and at ``--batch_sizes`` for the
presets of ``--batch_size_presets``: ``mnist_blog`` at batch 100, the figure
the performance issue names; ``--nosource_batch``: at those only), in one
process on one machine:

- ``function``: a bare loop ``step(next(iterator))`` over the package's
  ``tf.data`` pipeline, ``step = tf.function(model.train_step)``; the time
  spent in ``next()`` is the input wait.
- ``constant batch``: the same compiled step on one batch held in memory (no
  input pipeline at all), for comparison with ``function``.
- ``xla``: the same loop with ``tf.function(..., jit_compile=True)``.
- ``bf16``: the same loop on a model built with ``precision="mixed_bfloat16"``
  (bfloat16 compute, float32 weights and losses), on the row's kernels: for
  GANs in Action Eigen's, which emulate bfloat16 (a mixed-bfloat16 CLI run of
  it takes oneDNN's, ``sgan_keras/onednn.py``).
- ``unfused_adam``: the same loop with each Adam update written as separate
  Keras ops (``keras.optimizers.Adam``, or the improved-gan rule op by op:
  :class:`UnfusedImprovedGANAdam`), the form before the package's fused
  updates (``sgan_keras/optimizers.py``); the same rule, so the same work.
- ``joined_g_pass``: the same loop with G's feature-matching loss taken
  through one D call on the fakes and the real images concatenated, the form
  before commit b303210 (``SGAN._generator_pass`` now calls D on each apart,
  so G's backward pass skips the real half); the same losses, more work.
  Only for presets with feature matching and a D without BatchNorm.
- ``native_conv_transpose``: the same loop with G's first transposed
  convolution computed by TensorFlow's own op (``keras.layers.Conv2DTranspose``'s
  ``call``), the form before it became a ``MatmulConv2DTranspose`` (one
  matmul and shifted sums; ``sgan_keras/layers.py``); the same function and
  weights. Only for presets whose G has one.
- ``native_conv_input_grad``: the same loop with every stride-1 convolution's
  input gradient computed by TensorFlow's own op (``Conv2DBackpropInput``,
  the gradient of ``keras.ops.conv``), the form before those convolutions'
  input gradients became forward convolutions
  (``Conv2DWithConvInputGrad``, ``UpsampleConv2D`` and the stride-1
  ``WeightNormConv2D``; ``sgan_keras/layers.py``); the same function and
  weights. Only for presets with such a convolution.
- ``keras_batch_norm``: the same loop with every ``FusedBatchNormalization``
  computed by Keras' own ``BatchNormalization.call`` (moments, normalization
  and their gradients as separate ops), the form before those layers ran
  TensorFlow's fused kernel (``sgan_keras/layers.py``); the same function and
  weights. Only for presets with such a layer.
- ``without_noise``: not a form of the package's step but a measure of one
  part of it: the same loop with D's Gaussian noise layers passing their
  inputs through (``stddev`` 0), so ``1 - without_noise / function`` is the
  share of the step spent drawing and adding the noise, the source's
  regularizer (improved-gan's ``GaussianNoiseLayer``s). Only for presets
  whose D has such a layer.
- ``eager``: ``model.train_step`` without ``tf.function`` (few steps).
- ``fit``: ``model.fit`` on the same pipeline (``steps_per_execution=1``),
  then ``fit`` with ``steps_per_execution`` and ``fit`` with ``jit_compile``.
  Each window is the second epoch of a two-epoch ``fit`` call: like the bare
  loop, it excludes what a ``fit`` call pays once (tracing, and starting the
  ``tf.data`` iterator: ~0.2 s on the 2-core CPU, which spread over a short
  window had read as a 24% ``fit`` overhead), as a training run's one
  ``fit`` call over many epochs does.

Each preset runs on its own batches (``SemiSupervisedData.training_dataset``,
as the CLI): with ``label_batching="masked"`` (SVHN DCGAN) one real batch whose
labeled images are marked, two D calls a step; otherwise a labeled and an
unlabeled batch, three. Images/s counts the images D classifies in a step
(labeled + unlabeled + generated = 3 x batch; 2 x batch when masked). FLOPs
come from the layers (:mod:`sgan_keras.flops`); the peak is a large float32
matmul timed in the same run. Each time is the median over ``--repeats``
timed windows, measured in rounds that alternate the modes, so that slow
drifts of a shared machine hit every mode alike. Images are random (the
step's cost does not depend on pixel values), so no dataset is needed.

Each preset runs on the CPU kernels its CLI runs choose
(:func:`sgan_keras.onednn.kernels_setting`: oneDNN's on x86, Eigen's for
GANs in Action): TensorFlow takes them when it is imported, so a preset
whose kernels differ from this process's is timed by this command in a
process of its own (``--presets`` that preset, its files beside
``--output`` as ``<output>_kernels<value>.md``, with its own machine check)
and its rows join the table. ``TF_ENABLE_ONEDNN_OPTS`` set in the
environment times every preset in this process on those kernels.

Then, unless ``--peers=`` is empty, it runs ``benchmark_peers.py`` (each
source's own code beside the package's step, in their own processes; it
checks the machine again first) into ``<output>_peers.md`` and adds that
table to ``--output``: one command gives the presets and the peers of one
machine and commit.

Writes ``--output`` (Markdown) and the same rows as JSON beside it.
"""

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

from absl import app
from absl import flags

# This checkout's sgan_keras, whichever copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sgan_keras import onednn  # noqa: E402

# The CLI's default CPU kernels, chosen before TensorFlow is imported (see
# there); the presets its runs give other kernels are timed in a process of
# their own (timed_elsewhere), unless the environment chose for all.
KERNELS_FROM_ENVIRONMENT = os.environ.get(onednn.ONEDNN_VARIABLE)
onednn.choose_cpu_kernels()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import provenance  # noqa: E402
from sgan_keras import SGAN, PRESETS  # noqa: E402
from sgan_keras import data as data_lib  # noqa: E402
from sgan_keras import distribute  # noqa: E402
from sgan_keras import faults  # noqa: E402
from sgan_keras import flops as flops_lib  # noqa: E402
from sgan_keras import layers as sgan_layers  # noqa: E402
from sgan_keras import optimizers  # noqa: E402

flags.DEFINE_list("presets", sorted(PRESETS), "Presets to measure.")
flags.DEFINE_list("batch_sizes", [], "Extra batch sizes for the presets of "
                  "--batch_size_presets (for mnist_blog, the issue's 100).")
flags.DEFINE_list("batch_size_presets", ["mnist_blog"], "Presets of --presets also timed at "
                  "--batch_sizes.")
flags.DEFINE_boolean("source_batch", True, "Time each preset at its source's batch size; "
                     "--nosource_batch times the presets of --batch_size_presets at "
                     "--batch_sizes only (a smoke run's small step).")
flags.DEFINE_integer("steps", 20, "Steps per timed window (fewer for slow presets, see "
                     "--max_window_seconds).")
flags.DEFINE_float("max_window_seconds", 20.0, "Cap on one timed window's length.")
flags.DEFINE_integer("repeats", 3, "Timed windows per mode (the median is reported).")
flags.DEFINE_float("heavy_step_seconds", 4.0, "Presets whose compiled step takes longer get "
                   "one window per mode and skip eager, fit_spe and fit_xla (the rows of "
                   "--batch_sizes never do).")
flags.DEFINE_integer("eager_steps", 2, "Steps timed in eager mode.")
flags.DEFINE_integer("steps_per_execution", 10, "steps_per_execution of the fit variant.")
flags.DEFINE_list("modes", ["function", "constant", "xla", "bf16", "unfused_adam",
                            "joined_g_pass", "native_conv_transpose", "native_conv_input_grad",
                            "keras_batch_norm", "without_noise", "eager", "fit",
                            "fit_spe", "fit_xla"],
                  "Modes to measure.")
flags.DEFINE_list("peers", ["blog", "gans_in_action", "improved_gan"],
                  "Sources' own code timed after the presets by benchmark_peers.py "
                  "(empty: none).")
flags.DEFINE_float("peer_window_seconds", 15.0, "benchmark_peers.py's --window_seconds.")
flags.DEFINE_string("output", "experiments/results/benchmark.md", "Markdown table; JSON beside it.")
provenance.define_timing_flags()
FLAGS = flags.FLAGS

MODE_TITLES = {
    "function": "tf.function loop", "constant": "constant batch", "xla": "XLA loop",
    "bf16": "mixed bfloat16 loop", "unfused_adam": "unfused Adam loop",
    "joined_g_pass": "joined G pass loop", "native_conv_transpose": "native convT loop",
    "native_conv_input_grad": "native conv input grad loop",
    "keras_batch_norm": "Keras batch norm loop", "without_noise": "loop without D's noise",
    "eager": "eager", "fit": "fit()", "fit_spe": "fit() steps_per_execution",
    "fit_xla": "fit() jit_compile",
}


# ------------------------------------------------------------------ modes
class Bench:
    """One preset at one batch size: a model, its pipeline and each mode's timer."""

    def __init__(self, preset_name, batch_size):
        self.preset = PRESETS[preset_name]
        self.batch_size = batch_size
        config = self.preset.config
        self.data = data_lib.synthetic_dataset(
            config.data.dataset, min(config.data.labels, 10000),
            pixel_range=config.model.pixel_range)
        self.model = self._model()
        self.flops_per_step = flops_lib.train_step_flops(self.model, batch_size)
        self.iterator = iter(self.training_batches())
        self.model.initialize_weight_norm(next(self.iterator))
        self.constant_batch = next(self.iterator)
        # As drawn: a masked batch is one real batch with its labeled images
        # marked, so D classifies it and the fakes (2 x batch), not 3 x batch.
        self.label_batching = "masked" if "label_mask" in self.constant_batch else "separate"
        self.images_per_step = (2 if self.label_batching == "masked" else 3) * batch_size
        self.steps = FLAGS.steps
        self._functions = {}
        self.optimizers = {}   # loop mode -> the class names of its D and G optimizers
        self.page_faults = {}  # loop mode -> minor page faults per step, one per window

    def training_batches(self):
        """A new pipeline of the batches the preset trains on, as the CLI's."""
        return self.data.training_dataset(self.batch_size,
                                          self.preset.config.training.label_batching)

    def _model(self, precision="float32", **compile_kwargs):
        keras.utils.set_random_seed(0)
        model = SGAN.from_preset(self.preset.name, seed=0, precision=precision)
        model.compile(**compile_kwargs)
        return model

    def calibrate(self):
        """Compiles the loop step and sizes the timed window to ``max_window_seconds``."""
        step = self._function("function")
        step(next(self.iterator))
        start = time.perf_counter()
        _sync(step(next(self.iterator)))
        seconds = time.perf_counter() - start
        self.steps = max(2, min(FLAGS.steps, int(FLAGS.max_window_seconds / max(seconds, 1e-6))))
        return seconds

    def _function(self, mode):
        if mode not in self._functions:
            model = self.model
            if mode == "bf16":
                model = self._model(precision="mixed_bfloat16")
                model.initialize_weight_norm(self.constant_batch)
            if mode == "unfused_adam":
                fused = optimizers.for_training(self.preset.config.training)
                d_optimizer, g_optimizer = (unfused(optimizer) for optimizer in fused)
                model = self._model(d_optimizer=d_optimizer, g_optimizer=g_optimizer)
                model.initialize_weight_norm(self.constant_batch)
            if mode in REFERENCE_MODES:
                _, rewrite = REFERENCE_MODES[mode]
                model = rewrite(self._model())
                model.initialize_weight_norm(self.constant_batch)
            self._functions[mode] = tf.function(model.train_step, jit_compile=(mode == "xla"))
            self.optimizers[mode] = [type(optimizer).__name__
                                     for optimizer in (model.d_optimizer, model.g_optimizer)]
        return self._functions[mode]

    def time_loop(self, mode):
        """(seconds per step, input-wait seconds per step) of a bare loop; the
        process's minor page faults per step go to ``self.page_faults[mode]``."""
        if mode == "eager":
            steps, step = FLAGS.eager_steps, self.model.train_step
        else:
            steps, step = self.steps, self._function("function" if mode == "constant" else mode)
            _sync(step(self.constant_batch))       # traced (and XLA-compiled) before timing
        waited = 0.0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(steps):
            if mode == "constant":
                batch = self.constant_batch
            else:
                fetch = time.perf_counter()
                batch = next(self.iterator)
                waited += time.perf_counter() - fetch
            logs = step(batch)
        _sync(logs)
        seconds = (time.perf_counter() - start) / steps
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        self.page_faults.setdefault(mode, []).append(faults / steps)
        return seconds, waited / steps

    def time_fit(self, mode):
        """Seconds per step of ``model.fit``: the second epoch of one call."""
        if mode not in self._functions:
            kwargs = {"fit_spe": {"steps_per_execution": FLAGS.steps_per_execution},
                      "fit_xla": {"jit_compile": True}}.get(mode, {"jit_compile": False})
            model = self._model(**kwargs)
            model.initialize_weight_norm(self.constant_batch)
            self._functions[mode] = model
        model = self._functions[mode]
        steps = self.steps
        if mode == "fit_spe":  # whole executions only
            steps = max(1, round(steps / FLAGS.steps_per_execution)) * FLAGS.steps_per_execution
        timer = EpochTimer()
        model.fit(self.training_batches(), epochs=2, steps_per_epoch=steps, verbose=0,
                  shuffle=False, callbacks=[timer])
        return timer.seconds[-1] / steps, None


class UnfusedImprovedGANAdam(optimizers.ImprovedGANAdam):
    """openai/improved-gan's Adam rule as separate Keras ops, one pass through
    memory each: the ``unfused_adam`` mode's reference for the fused update."""

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = keras.ops.cast(learning_rate, dtype)
        gradient = keras.ops.cast(gradient, dtype)
        step = keras.ops.cast(self.iterations + 1, dtype)
        slot = self._get_variable_index(variable)
        m, v = self.momentums[slot], self.velocities[slot]
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * keras.ops.square(gradient))
        m_hat = m / (1.0 - keras.ops.power(keras.ops.cast(self.beta_1, dtype), step))
        v_hat = v / (1.0 - keras.ops.power(keras.ops.cast(self.beta_2, dtype), step))
        self.assign_sub(variable, lr * m_hat / keras.ops.sqrt(v_hat + self.epsilon))


def unfused(optimizer):
    """The same Adam rule and settings as ``optimizer``, computed op by op."""
    if isinstance(optimizer, optimizers.ImprovedGANAdam):
        return UnfusedImprovedGANAdam.from_config(optimizer.get_config())
    return keras.optimizers.Adam.from_config(optimizer.get_config())


def join_generator_pass(model):
    """``model`` with G's feature-matching pass on one D call over the fakes
    and the real images concatenated (``SGAN._discriminate``), as before
    commit b303210: the ``joined_g_pass`` mode's reference."""
    def generator_pass(fake_images, real_images):
        (fake_logits, fake_features), (_, real_features) = model._discriminate(
            fake_images, real_images)
        return model._generator_loss(fake_logits, fake_features, real_features)
    model._generator_pass = generator_pass
    return model


def joins_generator_pass(model):
    """Whether ``joined_g_pass`` differs from the package's step for ``model``."""
    return (model.config.model.generator_loss.startswith("feature_matching")
            and model.discriminator_batches_independent)


def matmul_conv_transposes(model):
    """G's ``MatmulConv2DTranspose`` layers."""
    return [layer for layer in model.generator.layers
            if isinstance(layer, sgan_layers.MatmulConv2DTranspose)]


def native_conv_transpose(model):
    """``model`` with each ``MatmulConv2DTranspose`` of G computed by
    TensorFlow's transposed convolution, the ``native_conv_transpose`` mode's
    reference (the same weights: the layer subclasses ``Conv2DTranspose``;
    padded "half", ``HalfPaddedConv2DTranspose``'s)."""
    for layer in matmul_conv_transposes(model):
        native = (sgan_layers.HalfPaddedConv2DTranspose if layer.padding == "half"
                  else keras.layers.Conv2DTranspose)
        layer.call = types.MethodType(native.call, layer)
    return model


def trained_layers(model):
    """Every layer of G and D (the trained networks), nested ones included."""
    return [layer for network in (model.generator, model.discriminator)
            for layer in sgan_layers.all_layers(network)]


def conv_input_grad_layers(model):
    """The layers of G and D whose convolution's input gradient is a forward
    convolution (``sgan_layers._conv2d_with_conv_input_grad``)."""
    return [layer for layer in trained_layers(model)
            if isinstance(layer, sgan_layers.Conv2DWithConvInputGrad)
            or (isinstance(layer, sgan_layers.WeightNormConv2D)
                and tuple(layer.strides) == (1, 1))]


def native_conv_input_grad(model):
    """``model`` with each of those convolutions computed by ``keras.ops.conv``
    (TensorFlow's gradient op for its input), the ``native_conv_input_grad``
    mode's reference (the same weights and function)."""
    for layer in conv_input_grad_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            layer.convolution_op = types.MethodType(keras.layers.Conv2D.convolution_op, layer)
        else:
            padding = sgan_layers._stride_one_padding(layer.padding)   # "half" as "same"
            layer._linear = functools.partial(keras.ops.conv, strides=1, padding=padding)
    return model


def fused_batch_norms(model):
    """The ``FusedBatchNormalization`` layers of G and D."""
    return [layer for layer in trained_layers(model)
            if isinstance(layer, sgan_layers.FusedBatchNormalization)]


def keras_batch_norm(model):
    """``model`` with each ``FusedBatchNormalization`` computed by Keras'
    ``BatchNormalization.call``, the ``keras_batch_norm`` mode's reference
    (the same weights: the layer subclasses it)."""
    for layer in fused_batch_norms(model):
        layer.call = types.MethodType(keras.layers.BatchNormalization.call, layer)
    return model


def noise_layers(model):
    """The Gaussian noise layers of G and D that add noise (Keras' and the
    package's; in the presets, D's)."""
    return [layer for layer in trained_layers(model)
            if isinstance(layer, keras.layers.GaussianNoise) and layer.stddev > 0]


def without_noise(model):
    """``model`` with each of those layers passing its inputs through
    (``stddev`` 0: both layers' ``call`` then return the inputs), the
    ``without_noise`` mode's step: not the source's training, a measure of
    what its noise costs."""
    for layer in noise_layers(model):
        layer.stddev = 0.0
    return model


# The modes that time the package's step beside an older or plainer form of
# it (or, ``without_noise``, beside it without one part): mode -> (whether the
# form differs for a model, the model rewritten to it).
REFERENCE_MODES = {
    "joined_g_pass": (joins_generator_pass, join_generator_pass),
    "native_conv_transpose": (matmul_conv_transposes, native_conv_transpose),
    "native_conv_input_grad": (conv_input_grad_layers, native_conv_input_grad),
    "keras_batch_norm": (fused_batch_norms, keras_batch_norm),
    "without_noise": (noise_layers, without_noise),
}


# The speed-up columns: (key in a row's ``derived``, column title, mode,
# whether it is the mode's speed-up over the loop, as for XLA and bfloat16,
# or the loop's over the mode, as for the reference forms above).
SPEEDUPS = (
    ("xla_speedup", "XLA speed-up", "xla", True),
    ("bf16_speedup", "bf16 speed-up", "bf16", True),
    ("fused_adam_speedup", "fused Adam speed-up", "unfused_adam", False),
    ("separate_g_pass_speedup", "separate G pass speed-up", "joined_g_pass", False),
    ("matmul_conv_transpose_speedup", "matmul convT speed-up", "native_conv_transpose", False),
    ("conv_input_grad_speedup", "conv input grad speed-up", "native_conv_input_grad", False),
    ("fused_batch_norm_speedup", "fused batch norm speed-up", "keras_batch_norm", False),
)


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, its last step's results waited for."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        _sync(logs)
        self.seconds.append(time.perf_counter() - self._start)


def _sync(logs):
    """Waits for a step's results (host copy of one value)."""
    value = next(iter(logs.values())) if isinstance(logs, dict) else logs
    return keras.ops.convert_to_numpy(value)


def measure(preset_name, batch_size, modes, repeats, always_full=False):
    """Median step time of each mode, measured in interleaved rounds."""
    bench = Bench(preset_name, batch_size)
    step_seconds = bench.calibrate()
    if step_seconds > FLAGS.heavy_step_seconds and not always_full:
        repeats = 1
        modes = [m for m in modes if m not in ("eager", "fit_spe", "fit_xla")]
    if PRESETS[preset_name].config.model.manifold != "none":
        modes = [m for m in modes if m != "bf16"]   # manifold regularization needs float32
    # A reference mode only where it differs from the package's step.
    modes = [m for m in modes if m not in REFERENCE_MODES or REFERENCE_MODES[m][0](bench.model)]
    times = {mode: [] for mode in modes}
    waits = []
    for _ in range(repeats):
        for mode in modes:
            if mode.startswith("fit"):
                seconds, _ = bench.time_fit(mode)
            else:
                seconds, waited = bench.time_loop(mode)
                if mode == "function":
                    waits.append(waited)
            times[mode].append(seconds)
    row = {"preset": preset_name, "batch_size": batch_size, "steps_per_window": bench.steps,
           "onednn": onednn.onednn_kernels_in_use(),
           "label_batching": bench.label_batching, "images_per_step": bench.images_per_step,
           "flops_per_step": bench.flops_per_step,
           "seconds_per_step": {mode: statistics.median(t) for mode, t in times.items()},
           "optimizers": bench.optimizers,
           # The pooled CPU allocator's effect (sgan_keras.distribute.use_pooled_cpu_allocator).
           "minor_page_faults_per_step": {mode: statistics.median(faults)
                                          for mode, faults in bench.page_faults.items()}}
    if waits:
        row["input_wait_per_step"] = statistics.median(waits)
    return row


# ----------------------------------------------------------------- report
def derived(row, peak):
    """Images/s, achieved FLOP/s and ratios of one row."""
    seconds = row["seconds_per_step"]
    out = {"images_per_second": {m: row["images_per_step"] / s for m, s in seconds.items()}}
    if "function" in seconds:
        out["achieved_flops"] = row["flops_per_step"] / seconds["function"]
        out["fraction_of_peak"] = out["achieved_flops"] / peak
        if "input_wait_per_step" in row:
            out["input_wait_fraction"] = row["input_wait_per_step"] / seconds["function"]
        if "fit" in seconds:
            out["fit_over_loop"] = seconds["fit"] / seconds["function"]
        for key, _, mode, of_the_mode in SPEEDUPS:
            if mode in seconds:
                out[key] = (seconds["function"] / seconds[mode] if of_the_mode
                            else seconds[mode] / seconds["function"])
        if "without_noise" in seconds:
            out["noise_share"] = 1 - seconds["without_noise"] / seconds["function"]
    return out


def timed_elsewhere(preset_names):
    """``{TF_ENABLE_ONEDNN_OPTS value: [preset]}``: the presets whose CLI runs
    choose other CPU kernels than this process runs
    (:func:`sgan_keras.onednn.kernels_setting`), each group to be timed in a
    process of its own (:func:`measure_elsewhere`); none when the environment
    chose the kernels for every preset, or off x86."""
    here = onednn.onednn_kernels_in_use()
    if KERNELS_FROM_ENVIRONMENT is not None or not onednn.is_x86() or here is None:
        return {}
    groups = {}
    for name in preset_names:
        setting = onednn.kernels_setting(PRESETS[name].config.model.architecture)
        if (setting == "1") != here:
            groups.setdefault(setting, []).append(name)
    return groups


def measure_elsewhere(setting, preset_names, output):
    """The rows of this command run on ``preset_names`` alone (no peers) in a
    new process with ``TF_ENABLE_ONEDNN_OPTS=setting``;
    its files go beside ``output``. It checks the machine again first."""
    path = f"{os.path.splitext(output)[0]}_kernels{setting}.md"
    command = [sys.executable, os.path.relpath(os.path.abspath(__file__)),  # its recorded command
               *sys.argv[1:],
               f"--presets={','.join(preset_names)}", "--peers=", f"--output={path}"]
    status = subprocess.run(command, env={**os.environ, onednn.ONEDNN_VARIABLE: setting}
                            ).returncode
    if status:
        sys.exit(f"the run of {preset_names} with {onednn.ONEDNN_VARIABLE}={setting} exited "
                 f"with status {status} (its message is above)")
    with open(os.path.splitext(path)[0] + ".json") as file:
        return json.load(file)["rows"]


def run_peers(peers, output):
    """Runs ``benchmark_peers.py`` on ``peers`` into ``<output>_peers.md``; returns that file's text.

    Its own processes and quiet check (it waits for this process's load to
    settle); ``--repeats``, ``--peak_repeats``, ``--force`` and a
    ``TF_ENABLE_ONEDNN_OPTS`` from the environment pass through.
    """
    path = os.path.splitext(output)[0] + "_peers.md"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_peers.py")
    command = [sys.executable, os.path.relpath(script),     # relative: its recorded command
               f"--peers={','.join(peers)}", f"--repeats={FLAGS.repeats}",
               f"--window_seconds={FLAGS.peer_window_seconds}",
               f"--peak_repeats={FLAGS.peak_repeats}", *provenance.smoke_arguments(FLAGS),
               f"--output={path}"]
    env = dict(os.environ)
    if KERNELS_FROM_ENVIRONMENT is None:   # this process's choice: it chooses per peer
        env.pop(onednn.ONEDNN_VARIABLE, None)
    status = subprocess.run(command + (["--force"] if FLAGS.force else []), env=env).returncode
    if status:
        sys.exit(f"benchmark_peers.py exited with status {status} (its message is above); "
                 f"the presets' table is in {output}")
    with open(path, encoding="utf-8") as file:     # as benchmark_peers.py writes it
        return file.read()


def markdown(machine, peak, rows, peers_markdown=None):
    modes = [m for m in MODE_TITLES if any(m in r["seconds_per_step"] for r in rows)]
    lines = [
        "# Training-step benchmark", "",
        f"Machine: {provenance.machine_line(machine)}. Command: `{machine['command']}` "
        f"({machine['date']}, commit {machine['commit']}).", "",
        provenance.quiet_line(machine["quiet_check"]), "",
        provenance.cpu_allocator_line(machine["pooled_cpu_allocator"]), "",
        f"Peak (float32 {FLAGS.peak_size}x{FLAGS.peak_size} matmul chain, same run, best of "
        f"{machine['peak_repeats']}): "
        f"{peak / 1e9:.1f} GFLOP/s.", "",
        "Milliseconds per training step (median of the timed windows); images/s counts the "
        "images D classifies per step (3 x batch; 2 x batch with masked label batching).", "",
        "`kernels`: the CPU kernels the row ran, those the CLI chooses for the preset "
        "(`sgan_keras/onednn.py`) unless TF_ENABLE_ONEDNN_OPTS was set; a preset whose "
        "kernels differ from the machine line's (this process's, the peak's) ran in a "
        "process of its own (its file `<output>_kernels<value>.md` records its own "
        "machine check).", "",
    ]
    titles = (["preset", "batch", "kernels", "GFLOP/step"] + [MODE_TITLES[m] for m in modes]
              + ["images/s (loop)", "GFLOP/s (% of peak)", "input wait", "fit / loop"]
              + [title for _, title, _, _ in SPEEDUPS]
              + ["noise share of the step", "page faults / step (loop)"])
    lines += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        d = row["derived"]
        seconds = row["seconds_per_step"]
        cells = [f"{1000 * seconds[m]:.1f}" if m in seconds else "-" for m in modes]
        lines.append(
            f"| {row['preset']} | {row['batch_size']} | "
            f"{provenance.kernels_name(row.get('onednn'))} | "
            f"{row['flops_per_step'] / 1e9:.2f} | "
            + " | ".join(cells) + " | "
            + (f"{d['images_per_second'].get('function', 0):.0f} | " if "function" in seconds else "- | ")
            + (f"{d['achieved_flops'] / 1e9:.1f} ({100 * d['fraction_of_peak']:.0f}%) | "
               if "achieved_flops" in d else "- | ")
            + (f"{100 * d['input_wait_fraction']:.2f}% | " if "input_wait_fraction" in d else "- | ")
            + (f"{d['fit_over_loop']:.3f} | " if "fit_over_loop" in d else "- | ")
            + "".join(f"{d[key]:.2f}x | " if key in d else "- | " for key, _, _, _ in SPEEDUPS)
            + (f"{100 * d['noise_share']:.1f}% | " if "noise_share" in d else "- | ")
            + (f"{row['minor_page_faults_per_step']['function']:.0f} |"
               if "function" in row["minor_page_faults_per_step"] else "- |"))
    if peers_markdown:   # its title one level down, as a section of this file
        lines += ["", "#" + peers_markdown.strip()]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.presets) - set(PRESETS))
    if unknown:
        raise app.UsageError(f"--presets: unknown {unknown}; allowed: {sorted(PRESETS)}")
    unknown = sorted(set(FLAGS.batch_size_presets) - set(PRESETS))
    if unknown:
        raise app.UsageError(f"--batch_size_presets: unknown {unknown}; "
                             f"allowed: {sorted(PRESETS)}")
    unknown = sorted(set(FLAGS.modes) - set(MODE_TITLES))
    if unknown:
        raise app.UsageError(f"--modes: unknown {unknown}; allowed: {sorted(MODE_TITLES)}")
    source_batch = {name: preset.config.training.batch_size for name, preset in PRESETS.items()}
    configs = [(name, source_batch[name]) for name in FLAGS.presets if FLAGS.source_batch]
    configs += [(name, int(b)) for name in FLAGS.presets if name in FLAGS.batch_size_presets
                for b in FLAGS.batch_sizes if (name, int(b)) not in configs]
    if not FLAGS.source_batch and not configs:
        raise app.UsageError("--nosource_batch times the presets of --presets that are in "
                             "--batch_size_presets at --batch_sizes only: none given")
    # What the CLI runs; TF_CPU_ALLOCATOR_USE_BFC=false times the default.
    distribute.use_pooled_cpu_allocator()
    check = provenance.quiet_check(FLAGS.quiet_seconds, force=FLAGS.force)
    machine = {**provenance.record(), "quiet_check": check,
               "pooled_cpu_allocator": distribute.pooled_cpu_allocator_in_use(),
               "peak_repeats": FLAGS.peak_repeats}
    peak = provenance.matmul_peak_flops(FLAGS.peak_size, repeats=FLAGS.peak_repeats)
    elsewhere = timed_elsewhere(FLAGS.presets)
    rows = []

    def add(row):
        row["derived"] = derived(row, peak)    # every row against this process's peak
        rows.append(row)
        rows.sort(key=lambda r: configs.index((r["preset"], r["batch_size"])))
        print(f"{row['preset']} batch {row['batch_size']}: "
              + ", ".join(f"{m} {1000 * s:.1f} ms" for m, s in row["seconds_per_step"].items()),
              flush=True)
        # Partial results survive an interruption.
        faults.write_text(FLAGS.output, markdown(machine, peak, rows))
        faults.write_text(os.path.splitext(FLAGS.output)[0] + ".json", json.dumps(
            {"machine": machine, "peak_flops": peak, "rows": rows}, indent=2))

    for name, batch_size in configs:
        if any(name in names for names in elsewhere.values()):
            continue
        extra = batch_size != source_batch[name] or not FLAGS.source_batch
        add(measure(name, batch_size, FLAGS.modes, FLAGS.repeats, always_full=extra))
    for setting, names in elsewhere.items():
        for row in measure_elsewhere(setting, names, FLAGS.output):
            add(row)
    if FLAGS.peers:
        faults.write_text(FLAGS.output, markdown(machine, peak, rows,
                                                 run_peers(FLAGS.peers, FLAGS.output)))


if __name__ == "__main__":
    app.run(main)
