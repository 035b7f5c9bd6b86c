"""oneDNN's CPU kernels for TensorFlow on x86: chosen before TensorFlow is imported.

TensorFlow's x86 build runs its matmuls, convolutions and their gradients
either with oneDNN's kernels or with Eigen's, as the environment variable
``TF_ENABLE_ONEDNN_OPTS`` says; unset, it decides by the CPU. On the
AVX512-BF16 EPYC of this package's earlier benchmarks it chose oneDNN, on the
AVX2-only EPYC Eigen. There, oneDNN's float32 matmul ran at 187 GFLOP/s
against Eigen's 139, and the training steps of 8 of the 9 benchmarked
configurations ran faster with oneDNN (the conv-large, Lecouat and MNIST
blog steps 1.07x-1.29x in every round), GANs in Action 0.75x-0.95x
(``experiments/results/onednn_avx2.md``, with the short seeded runs that
show the same accuracies), so the command line asks for oneDNN.

TensorFlow reads the variable once, when it is imported, so
:func:`use_onednn` must run before the first ``import tensorflow`` (this
module imports nothing of TensorFlow); the CLI calls it first
(``sgan_keras.train.import_trainer``). A notebook that wants the same sets
the variable before importing TensorFlow.
"""

import os
import platform

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


def use_onednn():
    """Asks TensorFlow for oneDNN's kernels on an x86 CPU, unless the
    environment already chose (``TF_ENABLE_ONEDNN_OPTS=0`` keeps Eigen's).

    Other CPUs (e.g. aarch64, whose oneDNN build differs and was not
    measured) keep TensorFlow's default. Returns the variable's value, or
    ``None`` when it stays unset.
    """
    if is_x86():
        os.environ.setdefault(ONEDNN_VARIABLE, "1")
    return os.environ.get(ONEDNN_VARIABLE)


def is_x86():
    """Whether this machine's CPU is x86, where :func:`use_onednn` asks for oneDNN."""
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
