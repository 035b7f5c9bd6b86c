"""The loss functions against naive reference formulas, and at extreme logits."""

import numpy as np
import pytest
import tensorflow as tf

from sgan_keras import losses

K = 10
RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(8, K + 1)).astype(np.float32)
LABELS = RNG.integers(0, K, size=8)


def naive_softmax_cross_entropy(logits, labels):
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return -np.log(probabilities[np.arange(len(labels)), labels])


def naive_d_real_probability(logits, fake_class):
    """P(real | x) = Z / (Z + exp(l_f)) written with plain exponentials."""
    z = np.exp(logits[:, :K]).sum(-1)
    if fake_class == "zero":
        return z / (z + 1.0)
    if fake_class == "learned":
        return z / (z + np.exp(logits[:, K]))
    return 1.0 / (1.0 + np.exp(-logits[:, K]))


@pytest.mark.parametrize("fake_class", losses.FAKE_CLASSES)
def test_gan_logit_is_the_log_odds_of_real(fake_class):
    logits = LOGITS if fake_class != "zero" else LOGITS[:, :K]
    probability = naive_d_real_probability(LOGITS, fake_class)
    got = losses.gan_logit(tf.constant(logits), fake_class, K).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-got)), probability, rtol=1e-5)


@pytest.mark.parametrize("fake_class", losses.FAKE_CLASSES)
def test_supervised_loss_matches_naive_cross_entropy(fake_class):
    width = K + 1 if fake_class == "learned" else K
    expected = naive_softmax_cross_entropy(LOGITS[:, :width], LABELS)
    logits = LOGITS if fake_class != "zero" else LOGITS[:, :K]
    got = losses.supervised_loss(LABELS, tf.constant(logits), fake_class, K).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("fake_class", losses.FAKE_CLASSES)
def test_unsupervised_loss_matches_naive_formula(fake_class):
    real, fake = LOGITS[:4], LOGITS[4:]
    if fake_class == "zero":
        real, fake = real[:, :K], fake[:, :K]
    p_real = naive_d_real_probability(LOGITS[:4], fake_class)
    p_fake = naive_d_real_probability(LOGITS[4:], fake_class)
    smoothing = 0.1
    expected = (-(1 - smoothing) * np.log(p_real) - smoothing * np.log(1 - p_real)
                - np.log(1 - p_fake))
    got = losses.unsupervised_loss(losses.gan_logit(tf.constant(real), fake_class, K),
                                   losses.gan_logit(tf.constant(fake), fake_class, K),
                                   label_smoothing=smoothing).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_zero_and_learned_agree_when_the_learned_fake_logit_is_zero():
    class_logits = tf.constant(LOGITS[:, :K])
    learned = tf.concat([class_logits, tf.zeros([8, 1])], axis=1)
    zero_loss = losses.unsupervised_loss(losses.gan_logit(class_logits, "zero", K),
                                         losses.gan_logit(class_logits[::-1], "zero", K))
    learned_loss = losses.unsupervised_loss(losses.gan_logit(learned, "learned", K),
                                            losses.gan_logit(learned[::-1], "learned", K))
    np.testing.assert_allclose(zero_loss.numpy(), learned_loss.numpy(), rtol=1e-6)


def test_generator_losses_match_naive_formulas():
    real = RNG.normal(size=(6, 5)).astype(np.float32)
    fake = RNG.normal(size=(6, 5)).astype(np.float32)
    difference = real.mean(0) - fake.mean(0)
    l1 = losses.feature_matching_loss(real.mean(0), fake.mean(0), "l1").numpy()
    l2 = losses.feature_matching_loss(real.mean(0), fake.mean(0), "l2").numpy()
    np.testing.assert_allclose(l1, np.abs(difference).mean(), rtol=1e-6)
    np.testing.assert_allclose(l2, (difference ** 2).mean(), rtol=1e-6)
    gan = losses.gan_logit(tf.constant(LOGITS[:, :K]), "zero", K)
    expected = -np.log(naive_d_real_probability(LOGITS, "zero"))
    np.testing.assert_allclose(losses.non_saturating_generator_loss(gan).numpy(),
                               expected, rtol=1e-5)


def test_manifold_forms():
    a, b = LOGITS[:, :K], LOGITS[:, :K] * 0.5
    expected = ((a - b) ** 2).sum(-1)
    np.testing.assert_allclose(losses.manifold_loss(a, b, "lecouat").numpy(), expected, rtol=1e-6)
    # The blog: l2_loss(diff) / batch = half the sum of squares per example.
    np.testing.assert_allclose(losses.manifold_loss(a, b, "blog").numpy().mean(),
                               tf.nn.l2_loss(a - b).numpy() / len(a), rtol=1e-5)


@pytest.mark.parametrize("fake_class", losses.FAKE_CLASSES)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_losses_and_gradients_stay_finite_for_extreme_logits(fake_class, scale):
    width = K if fake_class == "zero" else K + 1
    logits = tf.Variable(np.sign(RNG.normal(size=(8, width))).astype(np.float32) * scale)
    with tf.GradientTape() as tape:
        gan = losses.gan_logit(logits, fake_class, K)
        total = (tf.reduce_sum(losses.supervised_loss(LABELS, logits, fake_class, K))
                 + tf.reduce_sum(losses.unsupervised_loss(gan, gan[::-1], 0.1))
                 + tf.reduce_sum(losses.non_saturating_generator_loss(gan)))
    gradient = tape.gradient(total, logits)
    assert np.isfinite(total.numpy())
    assert np.all(np.isfinite(gradient.numpy()))


def test_accuracy_ignores_the_fake_column():
    logits = np.zeros((2, K + 1), np.float32)
    logits[:, K] = 100.0          # the fake column is the largest...
    logits[0, 3] = logits[1, 5] = 1.0
    got = losses.accuracy(np.array([3, 4]), tf.constant(logits), K).numpy()
    np.testing.assert_array_equal(got, [1.0, 0.0])


def test_accuracy_takes_keras_column_labels():
    # [N, 1] labels (keras.datasets' shape) broadcast against the [N]
    # predictions gave an [N, N] matrix, whose mean is not the accuracy.
    logits = np.zeros((3, K), np.float32)
    logits[0, 3] = logits[1, 5] = logits[2, 7] = 1.0
    got = losses.accuracy(np.array([[3], [4], [7]]), tf.constant(logits), K).numpy()
    np.testing.assert_array_equal(got, [1.0, 0.0, 1.0])


def test_unknown_fake_class_is_rejected():
    with pytest.raises(ValueError, match="fake_class"):
        losses.gan_logit(tf.constant(LOGITS), "eleven", K)


@pytest.mark.parametrize("dtype, rtol", [(tf.float32, 1e-6), (tf.bfloat16, 1e-2)])
def test_learned_gan_logit_keeps_its_precision_beside_large_logits(dtype, rtol):
    # logsumexp(l_1..l_K) - l_f at logits near 1e4 cancelled: float32 lost 1e-3
    # of the O(1) result (log 4 read 1.3869), bfloat16 all of it (read 0).
    logits = np.full((3, 5), 1e4, np.float32)
    logits[1] *= -1
    logits[2, :2] = 3e38
    logits[2, 2:] = -3e38
    logits[2, 4] = 3e38
    variable = tf.Variable(tf.constant(logits, dtype))
    with tf.GradientTape() as tape:
        got = losses.gan_logit(variable, "learned", 4)
        total = tf.reduce_sum(got)
    gradient = tf.cast(tape.gradient(total, variable), tf.float32).numpy()
    # float64 log space, the fake logit subtracted before the exponentials.
    exact = tf.cast(variable, tf.float64).numpy()
    shifted = exact[:, :4] - exact[:, 4:]
    peak = shifted.max(-1)
    expected = peak + np.log(np.exp(shifted - peak[:, None]).sum(-1))
    np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), expected, rtol=rtol)
    assert np.all(np.isfinite(gradient))


def test_learned_refuses_the_fake_class_id_as_a_label():
    # Label K lies in the (K+1)-way softmax's range: it trained the fake class
    # as a real one without a word, where zero and separate fail on it.
    logits = tf.constant(LOGITS)
    for fake_class in losses.FAKE_CLASSES:
        with pytest.raises(tf.errors.InvalidArgumentError):
            losses.supervised_loss(np.array([0, K]), logits[:2], fake_class, K)
    losses.supervised_loss(np.array([0, K - 1]), logits[:2], "learned", K)


@pytest.mark.parametrize("replicas", [1, 2])
def test_global_batch_mean_is_tensorflows_compute_average_loss_in_fewer_traced_ops(replicas):
    """The same value bit for bit, eagerly and traced (0 for an empty batch),
    without TensorFlow's checks of the batch size: the model reduces every
    per-example loss of a step with it."""
    def ours(per_example):
        return losses.global_batch_mean(per_example, replicas)

    def tensorflows(per_example):
        return tf.nn.compute_average_loss(
            per_example, global_batch_size=tf.shape(per_example)[0] * replicas)

    for values in (RNG.normal(size=37).astype(np.float32), np.zeros([0], np.float32)):
        for wrap in (lambda f: f, tf.function):
            ours_value, tensorflows_value = (float(wrap(f)(tf.constant(values)))
                                             for f in (ours, tensorflows))
            assert ours_value == tensorflows_value
            assert (ours_value == 0.0) == (len(values) == 0)
    op_counts = [len(tf.function(f).get_concrete_function(tf.TensorSpec([None])).graph
                     .get_operations()) for f in (ours, tensorflows)]
    assert op_counts[0] * 2 <= op_counts[1], op_counts
