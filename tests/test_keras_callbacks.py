"""Keras' own callbacks and saving with ``SGAN.fit()``, as a notebook uses them.

Each test builds ``test_model``'s tiny SGAN and trains it a few steps on one
constant batch, so that two runs of the same seed take the same steps.
"""

import csv
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import summary_steps
from sgan_keras import callbacks as callbacks_lib
from test_model import class_patterns, tiny_batch, tiny_model, training_state

STEPS = 2   # per epoch


def constant_data():
    return tf.data.Dataset.from_tensors(tiny_batch()).repeat()


def validation_data():
    images, labels = class_patterns(64, 0)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)


def fit(model, epochs, callbacks=(), **kwargs):
    return model.fit(constant_data(), steps_per_epoch=STEPS, epochs=epochs, verbose=0,
                     callbacks=list(callbacks), **kwargs)


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
    # The package's callback stops at the first step with a non-finite loss
    # and names each. A NaN learning rate makes D's weights NaN at the first
    # step; which loss shows it first depends on the kernels' NaN handling
    # (step 1's g_loss on Eigen's kernels, step 2's D losses on oneDNN's,
    # measured with TF_ENABLE_ONEDNN_OPTS=0 and 1),
    # so the expected line is read off the logs a callback before it saw.
    model.d_optimizer.learning_rate.assign(np.nan)
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            {name: float(np.mean(value)) for name, value in logs.items()
             if name.endswith("loss")}))
    with pytest.raises(callbacks_lib.NonFiniteLossError) as error:
        fit(model, 3, [recorder, callbacks_lib.StopOnNonFiniteLoss()])
    assert 1 <= len(seen) <= 2
    assert all(np.isfinite(list(losses.values())).all() for losses in seen[:-1])
    named = re.fullmatch(r"(\w+) is nan(?: \(also ([\w, ]+)\))? at step (\d+)",
                         str(error.value))
    assert named, str(error.value)
    first, also, step = named.group(1), named.group(2), int(named.group(3))
    nonfinite = {name for name, value in seen[-1].items() if not np.isfinite(value)}
    assert {first, *(also.split(", ") if also else ())} == nonfinite
    assert first not in callbacks_lib.TOTAL_LOSSES or nonfinite <= set(callbacks_lib.TOTAL_LOSSES)
    assert step == len(seen) == int(model.d_optimizer.iterations)


def test_fit_takes_one_callback_or_nested_lists_as_keras_does(tmp_path):
    """Keras flattens ``callbacks``: one callback alone works, and a lone or
    nested ``TerminateOnNaN`` gets its line; ``fit()`` failed on a lone one
    with "object is not iterable"."""
    model = tiny_model()
    model.fit(constant_data(), steps_per_epoch=STEPS, epochs=1, verbose=0,
              callbacks=keras.callbacks.CSVLogger(tmp_path / "log.csv"))
    with open(tmp_path / "log.csv", newline="") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["0"]
    for callbacks in (keras.callbacks.TerminateOnNaN(), [[keras.callbacks.TerminateOnNaN()]]):
        with pytest.raises(ValueError, match="StopOnNonFiniteLoss"):
            model.fit(constant_data(), steps_per_epoch=STEPS, epochs=1, verbose=0,
                      callbacks=callbacks)
    assert int(model.d_optimizer.iterations) == STEPS


def test_a_non_finite_total_is_named_by_its_part():
    """``d_loss`` is the sum of its logged parts: the line names the part that
    went non-finite (``manifold_loss``) first, the total after it."""
    stop = callbacks_lib.StopOnNonFiniteLoss(step_counter=tf.Variable(7))
    stop.on_train_batch_end(0, {"d_loss": 1.0, "g_loss": 2.0, "accuracy": np.nan})
    logs = {"d_loss": np.inf, "g_loss": 2.0, "supervised_loss": 0.5,
            "manifold_loss": np.array([np.inf]), "accuracy": 0.5}
    with pytest.raises(callbacks_lib.NonFiniteLossError,
                       match=r"^manifold_loss is inf \(also d_loss\) at step 7$"):
        stop.on_train_batch_end(0, logs)


def test_fit_on_a_data_set_does_not_warn_that_shuffle_is_ignored():
    """Keras' ``shuffle=True`` default warned on every ``fit()`` of a
    ``tf.data.Dataset`` or a generator, which it does not shuffle; an SGAN's
    default is ``False`` there. An explicit ``shuffle=True`` still gets Keras' warning."""
    import warnings
    model = tiny_model()    # one for the three fits: the warning is fit()'s, not the model's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, 1)
        model.fit(((tiny_batch(),) for _ in range(STEPS)), steps_per_epoch=STEPS,
                  verbose=0)     # a generator, as well
    assert not [w for w in caught if "shuffle" in str(w.message)]
    with pytest.warns(UserWarning, match="shuffle=True"):
        fit(model, 1, shuffle=True)


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


class Snapshots(keras.callbacks.Callback):
    """The model's logits on a fixed batch at each epoch end (the EMA's, when on)."""

    def __init__(self):
        super().__init__()
        self.images = tiny_batch(seed=5)["unlabeled_images"]
        self.logits = []

    def on_epoch_end(self, epoch, logs=None):
        self.logits.append(self.model(self.images).numpy())


def interrupt_at(epoch):
    def on_epoch_begin(index, logs=None):
        if index == epoch:
            raise KeyboardInterrupt
    return keras.callbacks.LambdaCallback(on_epoch_begin=on_epoch_begin)


def test_backup_and_restore_resumes_every_optimizer_and_the_ema_as_an_uninterrupted_run(
        tmp_path):
    """``save_weights`` walks the model's attributes, so the backup holds
    G's optimizer and the split order's third one as well as
    ``model.optimizer``: a fresh model resumed from it (a restarted notebook)
    ends bit for bit where an uninterrupted run does."""
    settings = dict(update_order="split", ema_decay=0.5)
    uninterrupted = tiny_model(**settings)
    fit(uninterrupted, 4)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(**settings), 4, [backup, interrupt_at(2)])
    resumed = tiny_model(**settings)
    history = fit(resumed, 4, [keras.callbacks.BackupAndRestore(str(tmp_path))])
    assert history.epoch == [2, 3]
    assert int(resumed.g_optimizer.iterations) == 4 * STEPS
    assert int(resumed.d_unsupervised_optimizer.iterations) == 2 * 4 * STEPS   # two a step
    for a, b in zip(training_state(uninterrupted), training_state(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_backup_taken_inside_an_epoch_resumes_at_that_epochs_first_step(tmp_path):
    """README: only ``save_freq="epoch"`` resumes as an uninterrupted run. Keras
    restores a backup of ``save_freq=1`` taken after step 3 of 4 (the second
    epoch's first) and trains that whole epoch again: 3 + STEPS steps, not 4."""
    def stop_after_step_3(batch, logs=None):
        if int(model.d_optimizer.iterations) == 3:
            raise KeyboardInterrupt
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, 2, [keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=1),
                       keras.callbacks.LambdaCallback(on_train_batch_end=stop_after_step_3)])
    resumed = tiny_model()
    history = fit(resumed, 2, [keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=1)])
    assert history.epoch == [1]
    assert int(resumed.d_optimizer.iterations) == 3 + STEPS     # not 2 * STEPS


def test_fit_after_a_backup_and_restore_resume_starts_at_its_own_initial_epoch(tmp_path):
    """Keras keeps the epoch ``BackupAndRestore`` resumed at for every later
    ``fit()``: a second ``fit(epochs=2)`` trained nothing, and one with
    ``initial_epoch=4`` started at epoch 2."""
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), 4, [keras.callbacks.BackupAndRestore(str(tmp_path)), interrupt_at(2)])
    model = tiny_model()
    assert fit(model, 4, [keras.callbacks.BackupAndRestore(str(tmp_path))]).epoch == [2, 3]
    assert fit(model, 2).epoch == [0, 1]
    assert fit(model, 5, initial_epoch=4).epoch == [4]
    assert int(model.d_optimizer.iterations) == (4 + 2 + 1) * STEPS


def test_fit_refuses_class_and_sample_weights_with_one_line():
    """Keras failed on ``class_weight`` with dict batches (an AttributeError)
    and dropped a ``sample_weight`` given without labels silently."""
    model = tiny_model()
    arrays = {key: value.numpy() for key, value in tiny_batch().items()}
    for name, value in (("class_weight", {0: 1.0, 1: 2.0, 2: 1.0}),
                        ("sample_weight", np.ones(8))):
        for data in (dict(x=constant_data(), steps_per_epoch=STEPS), dict(x=arrays)):
            with pytest.raises(ValueError, match=rf"^SGAN.fit\(\) takes no {name}: an SGAN's "
                                                 r"training weighs every image alike$"):
                model.fit(**data, **{name: value}, epochs=1, verbose=0)
        # train_on_batch() failed on class_weight with Keras' IndexError.
        with pytest.raises(ValueError, match=rf"^SGAN.train_on_batch\(\) takes no {name}: "
                                             r"an SGAN's training weighs every image alike$"):
            model.train_on_batch(arrays, **{name: value})
    assert int(model.d_optimizer.iterations) == 0


def test_model_checkpoint_files_load_into_a_fresh_sgan(tmp_path):
    """A ``.keras`` file of the best ``val_accuracy`` epoch predicts as the
    model did then; a ``.weights.h5`` loads weights, EMA and both optimizers
    into a fresh, compiled SGAN."""
    model, snapshots = tiny_model(ema_decay=0.5), Snapshots()
    best = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="val_accuracy",
                                           mode="max", save_best_only=True)
    history = fit(model, 3, [keras.callbacks.ModelCheckpoint(
        tmp_path / "last.weights.h5", save_weights_only=True), best, snapshots],
        validation_data=validation_data())
    best_epoch = int(np.argmax(history.history["val_accuracy"]))
    loaded = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(loaded(snapshots.images), snapshots.logits[best_epoch],
                               atol=1e-6)
    fresh = tiny_model(ema_decay=0.5)
    fresh.load_weights(tmp_path / "last.weights.h5")
    assert int(fresh.g_optimizer.iterations) == 3 * STEPS
    trackers = len([v for tracker in model.metrics for v in tracker.variables])
    for a, b in zip(training_state(model)[:-trackers], training_state(fresh)[:-trackers],
                    strict=True):     # all but the metric trackers' sums, not in the file
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".weights.json"])
def test_a_file_whose_weight_average_the_model_does_not_keep_is_refused(tmp_path, suffix):
    """Keras ignores a saved EMA copy of D that the model lacks (and fails on
    a missing one with a list of layers): ``load_weights`` names the cause.
    ``.weights.json`` is Keras' sharded weights file (``max_shard_size``)."""
    with_average, without = tiny_model(ema_decay=0.5), tiny_model()
    for model, name in ((with_average, "average"), (without, "plain")):
        path = tmp_path / (name + suffix)
        if suffix == ".keras":
            model.save(path)
        else:
            model.save_weights(path, max_shard_size=1e-6 if suffix == ".weights.json" else None)
    fresh = tiny_model()
    before = [variable.numpy() for variable in fresh.discriminator.weights]
    with pytest.raises(ValueError, match=r"average\S* holds D's weight average .* keeps none "
                                         r"\(ema_decay=0\): build the SGAN with the ema_decay"):
        fresh.load_weights(tmp_path / ("average" + suffix))
    for a, b in zip(before, fresh.discriminator.weights, strict=True):   # nothing loaded
        np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(ValueError, match=r"holds no weight average of D .* keeps one "
                                         r"\(ema_decay=0.5\): build"):
        tiny_model(ema_decay=0.5).load_weights(tmp_path / ("plain" + suffix))
    fresh.load_weights(tmp_path / ("plain" + suffix))          # a match loads as before
    for a, b in zip(without.discriminator.weights, fresh.discriminator.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh.load_weights(tmp_path / ("average" + suffix), skip_mismatch=True)   # Keras' choices
    if suffix != ".keras":      # Keras skips objects in these files only
        averaging = tiny_model(ema_decay=0.5)
        averaging.load_weights(tmp_path / ("plain" + suffix),
                               objects_to_skip=[averaging.ema_discriminator])
        for a, b in zip(without.discriminator.weights, averaging.discriminator.weights,
                        strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_early_stopping_restores_the_best_epochs_weights_and_ema():
    model, snapshots = tiny_model(ema_decay=0.5), Snapshots()
    stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=1,
                                             restore_best_weights=True)
    history = fit(model, 20, [snapshots, stopping], validation_data=validation_data())
    assert len(history.epoch) < 20 and stopping.best_epoch < history.epoch[-1]
    assert history.history["val_accuracy"][stopping.best_epoch] == max(
        history.history["val_accuracy"])
    images = snapshots.images      # the EMA's logits, restored with D's weights
    np.testing.assert_array_equal(model(images), snapshots.logits[stopping.best_epoch])


def test_csv_logger_and_tensorboard_write_the_sgans_logs(tmp_path):
    fit(tiny_model(), 2, [keras.callbacks.CSVLogger(tmp_path / "log.csv"),
                          keras.callbacks.TensorBoard(str(tmp_path / "tensorboard"))],
        validation_data=validation_data())
    with open(tmp_path / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    names = ["accuracy", "d_loss", "g_loss", "manifold_loss", "supervised_loss",
             "unsupervised_loss", "val_accuracy", "val_cross_entropy"]
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert sorted(rows[0]) == sorted(["epoch", *names])
    assert all(np.isfinite(float(row[name])) for row in rows for name in names)
    train = summary_counts(tmp_path / "tensorboard" / "train")
    for name in ("d_loss", "g_loss", "accuracy", "learning_rate"):   # D's learning rate
        assert summary_steps(tmp_path / "tensorboard" / "train",
                             lambda tag, name=name: tag == f"epoch_{name}") == [0, 1], name
    assert summary_steps(tmp_path / "tensorboard" / "validation",
                         lambda tag: tag == "epoch_accuracy") == [0, 1]
    assert set(train.values()) == {1}
