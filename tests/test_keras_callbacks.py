"""Keras' own callbacks and saving with ``SGAN.fit()``, as a notebook uses them.

Each test builds ``test_model``'s tiny SGAN and trains it a few steps on one
constant batch, so that two runs of the same seed take the same steps.
"""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import summary_steps
from sgan_keras import callbacks as callbacks_lib
from test_model import class_patterns, tiny_batch, tiny_model

STEPS = 2   # per epoch


def constant_data():
    return tf.data.Dataset.from_tensors(tiny_batch()).repeat()


def validation_data():
    images, labels = class_patterns(64, 0)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)


def fit(model, epochs, callbacks=(), **kwargs):
    return model.fit(constant_data(), steps_per_epoch=STEPS, epochs=epochs, verbose=0,
                     callbacks=list(callbacks), **kwargs)


def training_state(model):
    """Every variable a resumed run needs, as arrays, in a fixed order."""
    return [variable.numpy().copy() for variable in model.state_variables()]


def test_terminate_on_nan_is_refused_for_the_callback_that_checks_every_loss():
    """``TerminateOnNaN`` reads ``logs["loss"]``, which an SGAN does not log:
    it would never stop. ``fit()`` refuses it and names the one that works."""
    model = tiny_model()
    with pytest.raises(ValueError, match="StopOnNonFiniteLoss") as error:
        fit(model, 1, [keras.callbacks.TerminateOnNaN()])
    assert "\n" not in str(error.value)
    assert int(model.d_optimizer.iterations) == 0      # refused before any step
    with pytest.raises(ValueError, match="StopOnNonFiniteLoss"):   # positional as well
        model.fit(constant_data(), None, None, 1, 0,
                  keras.callbacks.CallbackList([keras.callbacks.TerminateOnNaN()]),
                  steps_per_epoch=STEPS)
    # The package's callback stops at the first non-finite loss: the second
    # step's, after a NaN learning rate has made D's weights NaN.
    model.d_optimizer.learning_rate.assign(np.nan)
    with pytest.raises(callbacks_lib.NonFiniteLossError, match="^d_loss is nan at step 2$"):
        fit(model, 3, [callbacks_lib.StopOnNonFiniteLoss()])


def summary_counts(directory):
    """How many values each ``(tag, step)`` has in the event files in ``directory``."""
    counts = {}
    for event_file in directory.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                counts[value.tag, event.step] = counts.get((value.tag, event.step), 0) + 1
    return counts


def test_tensorboard_histograms_name_the_ema_apart_from_the_discriminator(tmp_path):
    """``histogram_freq`` logs each layer's weights under its path: the EMA
    copy's layers are named apart, so D's histograms are not overwritten by
    (or mixed with) its average's at the same step."""
    model = tiny_model(ema_decay=0.5)
    fit(model, 1, [keras.callbacks.TensorBoard(str(tmp_path), histogram_freq=1)])
    histograms = {tag: count for (tag, _), count in summary_counts(tmp_path / "train").items()
                  if tag.endswith("/histogram")}
    assert len(histograms) == len(model.weights) and set(histograms.values()) == {1}
    discriminator_paths = {weight.path for weight in model.discriminator.weights}
    assert {weight.path for weight in model.ema_discriminator.weights}.isdisjoint(
        discriminator_paths)
    assert all(f"{path}/histogram" in histograms for path in discriminator_paths)
