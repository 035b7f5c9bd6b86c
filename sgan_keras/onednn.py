"""oneDNN's or Eigen's CPU kernels for TensorFlow on x86: chosen before TensorFlow is imported.

TensorFlow's x86 build runs its matmuls, convolutions and their gradients
either with oneDNN's kernels or with Eigen's, as the environment variable
``TF_ENABLE_ONEDNN_OPTS`` says; unset, it decides by the CPU. On the
AVX512-BF16 EPYC of this package's earlier benchmarks it chose oneDNN, on the
AVX2-only EPYC Eigen. There, oneDNN's float32 matmul ran at 187 GFLOP/s
against Eigen's 139, and the training steps of 8 of the 9 benchmarked
configurations ran faster with oneDNN (the conv-large, Lecouat and MNIST
blog steps 1.07x-1.29x in every round), GANs in Action's slower in every
pair of processes (``experiments/results/onednn_avx2.md``, with the short
seeded runs that show the same accuracies). So the command line asks for
oneDNN, except for the architectures in :data:`EIGEN_ARCHITECTURES` in
float32, for which it asks for Eigen's. Eigen's were measured faster there
on the AVX2 EPYC; on the AVX512-BF16 EPYC the two ran alike (67.8 against
65.3 ms, ``experiments/results/onednn_avx512bf16.md``). A mixed-bfloat16
run always gets oneDNN's: Eigen's kernels emulate bfloat16 matrix math, and
GANs in Action's mixed-bfloat16 step took 371 ms on them against 58.5 ms in
float32 on the AVX512-BF16 EPYC (on oneDNN's 42.4 against 50.1 ms; both in
``onednn_avx512bf16.md``).

TensorFlow reads the variable once, when it is imported, so
:func:`choose_cpu_kernels` must run before the first ``import tensorflow``
(this module imports nothing of TensorFlow); the CLI calls it first, with
the run's architecture and precision (``sgan_keras.train.import_trainer``). A notebook
that wants the same calls it (or sets the variable) before importing
TensorFlow. A script that starts processes for several architectures
gives each :func:`kernels_environment` (``experiments/benchmark_peers.py``).
"""

import os
import platform

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


# Architectures (``sgan_keras.choices.ARCHITECTURES``) whose training step
# ran faster with Eigen's kernels than with oneDNN's on the AVX2 EPYC: GANs
# in Action's, in each of the nine pairs of processes of
# experiments/results/onednn_avx2.md (oneDNN 2%-33% slower).
EIGEN_ARCHITECTURES = ("mnist_gans_in_action",)


def kernels_setting(architecture="", precision="float32"):
    """The ``TF_ENABLE_ONEDNN_OPTS`` value this package runs ``architecture``
    with on x86: ``"0"`` (Eigen's kernels) for :data:`EIGEN_ARCHITECTURES`
    unless ``precision`` (``config.ModelConfig.precision``) is
    ``"mixed_bfloat16"``, else ``"1"`` (oneDNN's); ``""`` means no
    architecture (networks of one's own, or several presets in one process).
    ``"auto"`` counts as float32: it picks bfloat16 only for presets checked
    in it, and no architecture of :data:`EIGEN_ARCHITECTURES` is."""
    eigen = architecture in EIGEN_ARCHITECTURES and precision != "mixed_bfloat16"
    return "0" if eigen else "1"


def kernels_environment(architecture="", chosen=None, precision="float32"):
    """``{TF_ENABLE_ONEDNN_OPTS: value}`` for a process that runs
    ``architecture`` in ``precision``: ``chosen`` (the environment's value,
    if it set one) wins; else, on an x86 CPU, :func:`kernels_setting`.

    Other CPUs (e.g. aarch64, whose oneDNN build differs and was not
    measured) get ``{}``: TensorFlow's default.
    """
    if chosen is not None:
        return {ONEDNN_VARIABLE: chosen}
    return {ONEDNN_VARIABLE: kernels_setting(architecture, precision)} if is_x86() else {}


def choose_cpu_kernels(architecture="", precision="float32"):
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` for this process as
    :func:`kernels_environment` says for ``architecture`` in ``precision`` (a
    value already set stays, e.g. ``=0`` for Eigen's kernels). Returns the
    variable's value, or ``None`` when it stays unset (not x86).

    TensorFlow reads the variable once, when it is imported: called after
    that, the value is set but the kernels do not change. The value stays in
    the environment, so later calls and child processes take it as given.
    """
    os.environ.update(kernels_environment(architecture, os.environ.get(ONEDNN_VARIABLE),
                                          precision))
    return os.environ.get(ONEDNN_VARIABLE)


def is_x86():
    """Whether this machine's CPU is x86, where :func:`choose_cpu_kernels` chooses."""
    return platform.machine().lower() in X86_MACHINES


def onednn_kernels_in_use():
    """Whether this process's TensorFlow runs oneDNN's kernels (imports
    TensorFlow, which decides then); ``None`` if this TensorFlow cannot tell.

    TensorFlow has no public call for it: this asks its internal
    ``_pywrap_util_port.IsMklEnabled``, the check its own kernels make.
    """
    try:
        # pylint: disable-next=import-outside-toplevel
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
