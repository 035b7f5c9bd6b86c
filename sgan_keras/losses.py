"""Loss functions of the semi-supervised GAN, as pure functions of tensors.

The losses are those of Salimans et al. 2016, "Improved Techniques for
Training GANs" (section 5, the semi-supervised loss; 3.1, feature matching;
3.4, one-sided label smoothing) and its code, openai/improved-gan
``train_*_feature_matching.py``; each function names the other sources whose
variants it computes. D outputs K class logits and a fake logit
``l_f``; P(real | x) = Z / (Z + exp(l_f)) with Z = sum_k exp(l_k), so the
real-vs-fake logit is ``logsumexp(l_1..l_K) - l_f``.

All terms are computed in log space (``logsumexp``, ``softplus``): no ``exp``
of a raw logit, so losses and gradients stay finite for logits of +-1e4.

Functions that can be written per example return a ``[batch]`` vector; the
model reduces them by the *global* batch (:func:`global_batch_mean`) so
that they are correct under ``tf.distribute``. Feature matching compares batch
means, so it takes the (already globally averaged) means.
"""

import tensorflow as tf

from sgan_keras.choices import FAKE_CLASSES


def global_batch_mean(per_example, replicas):
    """``tf.nn.compute_average_loss(per_example)`` under ``replicas`` replicas
    in sync: this replica's sum divided by the global batch (its examples
    times ``replicas``; 0 for an empty batch), by the same ops, so the same
    value. Without TensorFlow's checks that the batch size is a non-negative
    integer scalar (it is: a shape times a count): 11 traced ops, not 27,
    and a step has several."""
    global_batch = tf.cast(tf.shape(per_example)[0] * replicas, per_example.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), global_batch)


def class_logits(logits, num_classes):
    """The K real-class logits (drops the fake/real-vs-fake column, if any)."""
    return logits[:, :num_classes]


def gan_logit(logits, fake_class, num_classes):
    """The real-vs-fake logit of each example.

    - ``zero``: K outputs, ``l_f = 0`` (Salimans et al.; the MNIST blog):
      ``logsumexp(l)``.
    - ``learned``: K+1 outputs, the last is ``l_f`` (Udacity ``extra_class=1``):
      ``logsumexp(l_1..l_K) - l_f``.
    - ``separate``: the last column is an independent sigmoid head's logit
      (the PyTorch SGAN write-up): returned as is.
    """
    _check_fake_class(fake_class)
    if fake_class == "zero":
        return tf.reduce_logsumexp(logits, axis=-1)
    if fake_class == "learned":
        # (logsumexp(l - m) + m) - l_f cancels: at logits of 1e4 it lost 1e-3 of an
        # O(1) result (float32's spacing there). m - l_f is exact when they are close.
        class_logits = logits[:, :num_classes]
        peak = tf.stop_gradient(tf.reduce_max(class_logits, axis=-1))
        return (tf.reduce_logsumexp(class_logits - peak[:, None], axis=-1)
                + (peak - logits[:, num_classes]))
    return logits[:, num_classes]


def supervised_loss(labels, logits, fake_class, num_classes):
    """Per-example softmax cross-entropy of the labeled batch.

    ``learned`` uses the (K+1)-way softmax with the true class (the fake
    class then competes for probability mass, as in the Udacity notebook);
    ``zero`` and ``separate`` use the K-way softmax over the class logits.
    """
    _check_fake_class(fake_class)
    labels = tf.cast(labels, tf.int32)
    if fake_class != "learned":
        logits = logits[:, :num_classes]
    else:
        # Label K is in the (K+1)-way softmax's range, so TensorFlow's check of
        # the range (an error on the CPU, NaN on a GPU) let it train the fake
        # class as a real one without a word; the other variants fail on it.
        with tf.control_dependencies([tf.debugging.assert_less(
                labels, num_classes, message=f"labels must be class ids 0..{num_classes - 1}; "
                f"{num_classes} is the learned fake class's")]):
            labels = tf.identity(labels)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def sigmoid_cross_entropy(logits, target):
    """``-t log s(x) - (1-t) log(1-s(x))`` written as softplus terms."""
    return target * tf.nn.softplus(-logits) + (1.0 - target) * tf.nn.softplus(logits)


def unsupervised_loss(real_gan_logits, fake_gan_logits, label_smoothing=0.0):
    """Per-example GAN loss of D: real unlabeled -> 1, generated -> 0.

    ``softplus(-g_real) + softplus(g_fake)``; pairs the i-th real with the
    i-th generated example, so both batches must have the same size. With
    one-sided label smoothing (the SVHN write-up's ``smooth``) the real
    target is ``1 - label_smoothing``; the fake target stays 0.
    """
    real_target = 1.0 - label_smoothing
    return (sigmoid_cross_entropy(real_gan_logits, real_target)
            + sigmoid_cross_entropy(fake_gan_logits, 0.0))


def non_saturating_generator_loss(fake_gan_logits):
    """Per-example ``-log D(G(z))`` (GANs in Action): ``softplus(-g_fake)``."""
    return tf.nn.softplus(-fake_gan_logits)


def feature_matching_loss(real_feature_mean, fake_feature_mean, distance="l1"):
    """Distance between D's mean feature on real and on generated data.

    L1 (mean absolute difference) as in the MNIST blog, the Udacity notebook
    and Salimans' SVHN and CIFAR-10 code; ``l2`` (mean squared) as in
    Salimans' MNIST code.
    Takes batch *means* (shape ``[features]``) so that the model can average
    over the global batch under ``tf.distribute``.
    """
    difference = real_feature_mean - fake_feature_mean
    if distance == "l1":
        return tf.reduce_mean(tf.abs(difference))
    if distance == "l2":
        return tf.reduce_mean(tf.square(difference))
    raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")


def manifold_loss(logits, perturbed_logits, form="lecouat"):
    """Per-example manifold regularizer of Lecouat et al. 2018 (D loss only).

    ``sum_k (l_k(G(z)) - l_k(G(z + delta)))^2`` over the K class logits;
    the caller multiplies by the weight (``manifold_weight``, Lecouat et
    al.'s lambda = 1e-3). The MNIST blog's form
    is ``l2_loss(diff) / batch``, i.e. half of the same sum per example.
    """
    squared = tf.reduce_sum(tf.square(logits - perturbed_logits), axis=-1)
    if form == "lecouat":
        return squared
    if form == "blog":
        return 0.5 * squared
    raise ValueError(f"manifold form must be 'lecouat' or 'blog', got {form!r}")


def accuracy(labels, logits, num_classes):
    """Per-example 0/1 correctness of argmax over the K real classes.

    ``labels``: ``[N]`` or Keras' ``[N, 1]``, whose column would otherwise
    broadcast against the ``[N]`` predictions into an ``[N, N]`` matrix."""
    predictions = tf.argmax(logits[:, :num_classes], axis=-1, output_type=tf.int32)
    labels = tf.reshape(tf.cast(labels, tf.int32), tf.shape(predictions))
    return tf.cast(tf.equal(predictions, labels), tf.float32)


def _check_fake_class(fake_class):
    if fake_class not in FAKE_CLASSES:
        raise ValueError(f"fake_class must be one of {FAKE_CLASSES}, got {fake_class!r}")
