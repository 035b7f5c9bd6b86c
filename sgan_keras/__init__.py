"""sgan_keras: semi-supervised GANs for TensorFlow 2 / Keras 3.

    import sgan_keras
    model = sgan_keras.SGAN.from_preset("mnist_improved_gan")
    data = sgan_keras.load_dataset("mnist", labels=100, data_dir="data/mnist",
                                   pixel_range=model.input_pixel_range)
    model.compile()
    model.fit(data.train_dataset(100), steps_per_epoch=600, epochs=300,
              validation_data=data.test_dataset(1000))

The names below are imported on first use, so ``import sgan_keras.losses``
stays light; so are the library's modules, so that ``sgan_keras.callbacks.
StopOnNonFiniteLoss()`` or ``sgan_keras.export.export_classifier(...)``, as the
README spells them, work after ``import sgan_keras`` alone (they raised
AttributeError). The command lines (``train``, ``predict``, which define absl
flags) are not among them: run them with ``python -m``.
"""

import importlib

_EXPORTS = {
    "Config": "sgan_keras.config",
    "ConfigError": "sgan_keras.config",
    "DataError": "sgan_keras.data",
    "SemiSupervisedData": "sgan_keras.data",
    "load_dataset": "sgan_keras.data",
    "SGAN": "sgan_keras.model",
    "PRESETS": "sgan_keras.presets",
    "Preset": "sgan_keras.presets",
    "get_preset": "sgan_keras.presets",
}
_MODULES = frozenset({
    "callbacks", "checkpoint", "choices", "config", "data", "distribute", "export", "faults",
    "flops", "layers", "lock", "losses", "model", "networks", "onednn", "optimizers",
    "presets", "trainer"})
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'sgan_keras' has no attribute {name!r}")
