"""The source Adam rules against NumPy transcriptions of the sources' code."""

import collections
import re

import keras
import numpy as np
import pytest

from sgan_keras import Config
from sgan_keras import optimizers


def improved_gan_adam_numpy(params, grads_per_step, lr, mom1, mom2=0.999):
    """openai/improved-gan ``nn.adam_updates``, line by line, in NumPy (float64)."""
    params = [p.astype(np.float64).copy() for p in params]
    v = [np.zeros_like(p) for p in params]      # the source's v: first moment
    mg = [np.zeros_like(p) for p in params]     # mg: second moment
    t = 1.0
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            v_t = mom1 * v[i] + (1.0 - mom1) * g
            mg_t = mom2 * mg[i] + (1.0 - mom2) * np.square(g)
            v_hat = v_t / (1.0 - mom1 ** t)
            mg_hat = mg_t / (1.0 - mom2 ** t)
            g_t = v_hat / np.sqrt(mg_hat + 1e-8)
            params[i] = params[i] - lr * g_t
            v[i], mg[i] = v_t, mg_t
        t += 1
    return params


def test_improved_gan_adam_matches_the_source_rule():
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    # Gradients over five orders of magnitude, where the epsilon's place matters.
    steps = [[rng.normal(size=p.shape) * scale for p in initial]
             for scale in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-5, 1e-6)]
    variables = [keras.Variable(p) for p in initial]
    optimizer = optimizers.ImprovedGANAdam(learning_rate=3e-3, beta_1=0.5)
    for grads in steps:
        optimizer.apply_gradients(zip([g.astype("float32") for g in grads], variables))
    expected = improved_gan_adam_numpy(initial, steps, lr=3e-3, mom1=0.5)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, atol=1e-6, rtol=0)
    # Keras' Adam, even with the source's 1e-8, moves small gradients differently.
    keras_variables = [keras.Variable(p) for p in initial]
    keras_adam = keras.optimizers.Adam(learning_rate=3e-3, beta_1=0.5, epsilon=1e-8)
    for grads in steps:
        keras_adam.apply_gradients(zip([g.astype("float32") for g in grads], keras_variables))
    assert max(np.abs(k.numpy() - w).max() for k, w in zip(keras_variables, expected)) > 1e-4


def test_adam_rule_names():
    assert isinstance(optimizers.adam("keras", 1e-3, 0.5, 1e-8), keras.optimizers.Adam)
    source = optimizers.adam("improved_gan", 1e-3, 0.5, 1e-8)
    assert isinstance(source, optimizers.ImprovedGANAdam) and source.epsilon == 1e-8
    with pytest.raises(ValueError, match="adam_rule must be one of"):
        optimizers.adam("sgd", 1e-3, 0.5, 1e-8)


def test_improved_gan_adam_round_trips_its_config():
    optimizer = optimizers.ImprovedGANAdam(learning_rate=3e-3, beta_1=0.5, epsilon=1e-8)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, optimizers.ImprovedGANAdam)
    assert (clone.beta_1, clone.epsilon) == (0.5, 1e-8)


def test_fused_adam_follows_keras_adam():
    """TensorFlow's fused kernel computes Keras' Adam rule (to float32 rounding)."""
    rng = np.random.default_rng(1)
    initial = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    steps = [[(rng.normal(size=p.shape) * scale).astype("float32") for p in initial]
             for scale in (1e-6, 1e-3, 1.0, 1e-4, 10.0)]
    fused_variables = [keras.Variable(p) for p in initial]
    keras_variables = [keras.Variable(p) for p in initial]
    fused = optimizers.FusedAdam(learning_rate=2e-3, beta_1=0.5, epsilon=1e-8)
    reference = keras.optimizers.Adam(learning_rate=2e-3, beta_1=0.5, epsilon=1e-8)
    for grads in steps:
        fused.apply_gradients(zip(grads, fused_variables))
        reference.apply_gradients(zip(grads, keras_variables))
    for ours, theirs, start in zip(fused_variables, keras_variables, initial):
        assert np.abs(theirs.numpy() - start).max() > 5e-3      # the steps moved them
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="amsgrad"):
        optimizers.FusedAdam(amsgrad=True)


@pytest.mark.parametrize("optimizer_class", [optimizers.FusedAdam, optimizers.ImprovedGANAdam])
def test_a_traced_update_makes_the_step_scalars_once_not_once_a_variable(optimizer_class):
    """One more variable adds its update op and its inputs (the gradient and
    three handles, the graph's placeholders), no arithmetic: the step, the
    learning rate and the betas (and their powers) are shared. Their values
    at each step: the tests above (which apply eagerly, step after step)."""
    import tensorflow as tf

    def op_types(variable_count):
        variables = [keras.Variable(np.ones(3, "float32")) for _ in range(variable_count)]
        optimizer = optimizer_class(learning_rate=1e-3)
        optimizer.build(variables)
        update = tf.function(lambda grads: optimizer.apply(grads, variables))
        graph = update.get_concrete_function([tf.TensorSpec((3,))] * variable_count).graph
        return collections.Counter(op.type for op in graph.get_operations())

    added = op_types(3) - op_types(2)
    update_op = ("ResourceApplyAdam" if optimizer_class is optimizers.FusedAdam
                 else "StatefulPartitionedCall")     # the XLA-compiled rule
    assert added == {"Placeholder": 4, update_op: 1, "Identity": 1}


def test_linear_decay_sets_the_rate_once_an_epoch_as_the_sources_do():
    # Salimans et al. and Lecouat et al.: lr * min((end - e) / (end - start), 1)
    # at the start of epoch e (from 0); here 4 epochs of 10 steps, ramp from epoch 2.
    training = Config().replace(lr_schedule="linear_decay", lr_decay_start_epoch=2,
                                epochs=4, steps_per_epoch=10).training
    schedule = optimizers.learning_rate(training, 0.1)
    for step in range(40):
        epoch = step // 10
        source = 0.1 * min((4 - epoch) / (4 - 2), 1.0)
        assert float(schedule(step)) == pytest.approx(source), step
    rebuilt = optimizers.LinearDecay.from_config(schedule.get_config())
    assert float(rebuilt(35)) == pytest.approx(0.05)


@pytest.mark.parametrize("start, epochs", [(0, 1), (1, 3), (2, 3), (3, 3), (600, 2), (2, 4)])
def test_the_schedule_line_appears_exactly_when_linear_decay_never_lowers_the_rate(start, epochs):
    # The presets decay from epoch 300-1,200; their short CPU budgets end first.
    training = Config().replace(lr_schedule="linear_decay", lr_decay_start_epoch=start,
                                epochs=epochs, steps_per_epoch=3).training
    schedule = optimizers.learning_rate(training, 0.1)
    constant = all(float(schedule(step)) == pytest.approx(0.1) for step in range(epochs * 3))
    line = training.schedule_line()
    assert bool(line) == constant
    if constant:
        assert f"--lr_decay_start_epoch={start}" in line and f"this run has {epochs}" in line
        # The start it suggests decays the rate (it said "below 0" for one epoch).
        suggested = re.search(r"below (\d+) decays", line)
        assert bool(suggested) == (epochs > 1), line
        if suggested:
            decaying = optimizers.learning_rate(Config().replace(
                lr_schedule="linear_decay", lr_decay_start_epoch=int(suggested.group(1)) - 1,
                epochs=epochs, steps_per_epoch=3).training, 0.1)
            assert float(decaying((epochs - 1) * 3)) < 0.1
    assert Config().replace(epochs=1).training.schedule_line() == ""   # constant by choice


@pytest.mark.parametrize("rate, epochs", [(1.0, 3), (0.5, 1), (0.5, 3), (1.0, 1)])
def test_the_schedule_line_appears_exactly_when_per_epoch_decay_never_lowers_the_rate(
        rate, epochs):
    """--lr_schedule=per_epoch_decay with the default --lr_decay_rate=1 kept the
    rate constant without a word."""
    training = Config().replace(lr_schedule="per_epoch_decay", lr_decay_rate=rate,
                                epochs=epochs, steps_per_epoch=3).training
    schedule = optimizers.learning_rate(training, 0.1)
    constant = all(float(schedule(step)) == pytest.approx(0.1) for step in range(epochs * 3))
    line = training.schedule_line()
    assert bool(line) == constant, line
    assert not line or line.startswith("note: --lr_schedule=per_epoch_decay: ")


@pytest.mark.parametrize("rule", ["keras", "improved_gan"])
def test_for_training_gives_d_and_g_their_own_rate_beta_and_epsilon(rule):
    # --d_lr_ratio and the two --*_beta_1 flags are per network: D's optimizer
    # first, G's second, each under the run's schedule.
    training = Config().replace(g_lr=2e-4, d_lr_ratio=3.0, d_beta_1=0.3, g_beta_1=0.7,
                                adam_rule=rule, adam_epsilon=1e-6).training
    d_optimizer, g_optimizer = optimizers.for_training(training)
    assert float(d_optimizer.learning_rate) == pytest.approx(6e-4)
    assert float(g_optimizer.learning_rate) == pytest.approx(2e-4)
    assert (d_optimizer.beta_1, g_optimizer.beta_1) == (0.3, 0.7)
    assert d_optimizer.epsilon == g_optimizer.epsilon == 1e-6
    decaying = Config().replace(g_lr=2e-4, d_lr_ratio=3.0, lr_schedule="per_epoch_decay",
                                lr_decay_rate=0.5, epochs=3, steps_per_epoch=2).training
    d_optimizer, g_optimizer = optimizers.for_training(decaying)
    d_optimizer.iterations.assign(2)
    g_optimizer.iterations.assign(4)
    assert float(d_optimizer.learning_rate) == pytest.approx(3e-4)
    assert float(g_optimizer.learning_rate) == pytest.approx(5e-5)
