r"""Times the package's training step beside each source's own code, in one run.

    python experiments/benchmark_peers.py            # ~10 min on 2 CPU cores
    python experiments/benchmark_peers.py --peers=blog --repeats=5

Peers, each a faithful transcription of its source's training step at the
same precision (float32) and batch size:

- ``blog``: ``mnist_blog`` at batch 100 against the MNIST blog's TF1 graph
  (``dcganmnist/mnist_ssl.py``, final version) run in a ``tf.compat.v1``
  session: the same layers and losses, one G forward pass per step, the
  ``train_accuracy_op`` forward pass its ``sess.run`` fetches every step, and
  its ``tf.data`` input (``cache``, ``shuffle(4000)``, ``batch``, ``repeat``).
- ``gans_in_action``: ``mnist_gans_in_action`` at batch 32 against the
  book's Keras loop (``Chapter_7_SGAN.ipynb``) under Keras 3: per iteration
  ``generator.predict``, three ``train_on_batch`` D updates (supervised,
  real, fake), ``generator.predict`` again and the combined model's
  ``train_on_batch``, batches drawn with ``np.random.randint``.
- ``improved_gan``: ``mnist_improved_gan`` at batch 100 against a TF2
  transcription of ``train_mnist_feature_matching.py``'s Theano functions
  (``train_batch_disc`` then ``train_batch_gen``, ``nn.adam_updates``, the
  weight average), each compiled with ``tf.function`` as Theano compiles.

Where the preset's D has no batch statistics (``mnist_blog``,
``mnist_improved_gan``) a third side, ``ours, separate D calls``, runs the
package's step with D called once per batch instead of once on their
concatenation (``SGAN._discriminate``), to show what that one change gives.
The percentage of peak divides the step's FLOPs (``sgan_keras.flops``, in
the preset's procedure) by its time and by a float32 matmul chain's FLOP/s
measured in the same run.

Each side runs in its own subprocess (the TF1 graph needs graph mode), the
same thread settings for both; the parent alternates timed windows between
them (ours, peer, ours, ...) and reports medians, so a slow drift of the
machine hits both alike. Before it starts it checks that the machine is quiet
(load average and other busy processes) and records that check; ``--force``
measures anyway and says so.

Writes ``--output`` (Markdown) and JSON beside it.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

# This checkout's sgan_keras, whichever copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import provenance  # noqa: E402

flags.DEFINE_list("peers", ["blog", "gans_in_action", "improved_gan"], "Peers to measure.")
flags.DEFINE_integer("repeats", 3, "Timed windows per side (the median is reported).")
flags.DEFINE_float("window_seconds", 15.0, "Approximate length of one timed window.")
provenance.define_timing_flags()
flags.DEFINE_string("output", "experiments/results/benchmark_peers.md", "Markdown; JSON beside.")
flags.DEFINE_string("serve", None, "Internal: run one side as a timing server (peer:side).")
FLAGS = flags.FLAGS

PEERS = {  # peer: (preset, batch size, source)
    "blog": ("mnist_blog", 100, "TF1 graph of jostosh/gan dcganmnist/mnist_ssl.py"),
    "gans_in_action": ("mnist_gans_in_action", 32,
                       "Keras train_on_batch loop of Chapter_7_SGAN.ipynb"),
    "improved_gan": ("mnist_improved_gan", 100,
                     "TF2 transcription of improved-gan train_mnist_feature_matching.py"),
}


# -------------------------------------------------------------- the package
def our_model(preset_name):
    """The package's model of ``preset_name`` in float32, the peers' precision
    (the one model both the timed step and its FLOP count come from). Named,
    not left to ``--precision=auto``, which picks mixed bfloat16 for
    ``mnist_blog`` on a machine with bfloat16 matrix units."""
    from sgan_keras import SGAN
    return SGAN.from_preset(preset_name, seed=0, precision="float32")


def ours(peer, separate_discriminator_calls=False):
    """The package's compiled train step on its own input pipeline."""
    import tensorflow as tf
    from sgan_keras import PRESETS
    from sgan_keras import data as data_lib
    preset_name, batch_size, _ = PEERS[peer]
    preset = PRESETS[preset_name]
    data = data_lib.synthetic_dataset(preset.config.data.dataset, preset.config.data.labels,
                                      pixel_range=preset.config.model.pixel_range)
    model = our_model(preset_name)
    model.compile()
    if separate_discriminator_calls:
        model.discriminator_batches_independent = False
    iterator = iter(data.training_dataset(batch_size, preset.config.training.label_batching))
    model.initialize_weight_norm(next(iterator))
    step = tf.function(model.train_step)

    def run(steps):
        for _ in range(steps):
            logs = step(next(iterator))
        float(logs["d_loss"])
    return run


# ------------------------------------------------------------- the MNIST blog
def blog_tf1(batch_size):
    """The blog's graph (mnist_ssl.py): one ``sess.run(train_op, ...)`` per step."""
    import numpy as np
    import tensorflow as tf
    v1 = tf.compat.v1
    v1.disable_eager_execution()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(4000, 28, 28, 1)).astype(np.float32)
    labels = (np.arange(4000) % 10).astype(np.int64)

    def pipeline(data):
        return v1.data.make_one_shot_iterator(
            tf.data.Dataset.from_tensor_slices(data).cache().shuffle(4000)
            .batch(batch_size).repeat()).get_next()

    images_lab, labels_lab = pipeline((images, labels))
    images_unl, _ = pipeline((images, labels))
    images_unl2, _ = pipeline((images, labels))
    glorot = v1.glorot_uniform_initializer()

    def conv(x, name, filters, stride=1, activation=None):
        with v1.variable_scope(name, reuse=v1.AUTO_REUSE):
            kernel = v1.get_variable("kernel", [5, 5, x.shape[-1], filters], initializer=glorot)
            bias = v1.get_variable("bias", [filters], initializer=v1.zeros_initializer())
        x = tf.nn.conv2d(x, kernel, stride, "SAME") + bias
        return activation(x) if activation else x

    def dense(x, name, units, activation=None):
        with v1.variable_scope(name, reuse=v1.AUTO_REUSE):
            kernel = v1.get_variable("kernel", [x.shape[-1], units], initializer=glorot)
            bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
        x = tf.matmul(x, kernel) + bias
        return activation(x) if activation else x

    def upsample(x):
        return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)

    def generator(z):
        with v1.variable_scope("G"):
            x = tf.reshape(dense(z, "dense", 7 * 7 * 64, tf.nn.relu), [-1, 7, 7, 64])
            x = conv(upsample(x), "c0", 128, activation=tf.nn.relu)
            x = conv(upsample(x), "c1", 64, activation=tf.nn.relu)
            x = conv(x, "c2", 64, activation=tf.nn.relu)
            return conv(x, "c3", 1, activation=tf.nn.tanh)

    def discriminator(x, training):
        with v1.variable_scope("D", reuse=v1.AUTO_REUSE):
            for index, (filters, stride) in enumerate([(32, 2), (64, 2), (64, 1)]):
                x = conv(x, f"c{index}", filters, stride, tf.nn.leaky_relu)
                if training:
                    x = tf.nn.dropout(x, rate=0.3)
            features = tf.reshape(x, [tf.shape(x)[0], -1])
            return dense(features, "logits", 10), features

    z = v1.random_normal([batch_size, 100], stddev=1e-2)
    images_fake = generator(z)
    logits_fake, _ = discriminator(images_fake, True)
    logits_unl, _ = discriminator(images_unl, True)
    logits_lab, _ = discriminator(images_lab, True)
    logits_train, _ = discriminator(images_lab, False)
    loss_supervised = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels_lab, logits=logits_lab))
    sum_real = tf.reduce_logsumexp(logits_unl, axis=1)
    sum_fake = tf.reduce_logsumexp(logits_fake, axis=1)
    loss_d = loss_supervised + 0.5 * (-tf.reduce_mean(sum_real)
                                      + tf.reduce_mean(tf.nn.softplus(sum_real))
                                      + tf.reduce_mean(tf.nn.softplus(sum_fake)))
    d_vars = v1.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, "D")
    g_vars = v1.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, "G")
    optimize_d = v1.train.AdamOptimizer(2e-4 * 0.25).minimize(loss_d, var_list=d_vars)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits_train, 1), labels_lab),
                                      tf.float32))
    with tf.control_dependencies([optimize_d]):
        _, features_fake = discriminator(images_fake, True)
        _, features_real = discriminator(images_unl2, True)
    loss_g = tf.reduce_mean(tf.abs(tf.reduce_mean(features_real, 0)
                                   - tf.reduce_mean(features_fake, 0)))
    train_op = v1.train.AdamOptimizer(2e-4, beta1=0.5).minimize(loss_g, var_list=g_vars)
    session = v1.Session()
    session.run(v1.global_variables_initializer())

    def run(steps):
        for _ in range(steps):
            session.run([train_op, loss_g, loss_d, accuracy])
    return run


# ----------------------------------------------------------- GANs in Action
def gans_in_action_keras(batch_size):
    """The book's loop: models compiled as in the notebook, ``train_on_batch`` calls."""
    import keras
    import numpy as np
    rng = np.random.default_rng(0)
    x_train = rng.uniform(-1, 1, size=(60000, 28, 28, 1)).astype(np.float32)
    y_train = np.arange(60000) % 10
    num_labeled, z_dim = 100, 100

    def discriminator_net():
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, strides=2, padding="same"), keras.layers.LeakyReLU(0.01),
            keras.layers.Conv2D(64, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(), keras.layers.LeakyReLU(0.01),
            keras.layers.Conv2D(128, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(), keras.layers.LeakyReLU(0.01),
            keras.layers.Dropout(0.5), keras.layers.Flatten(), keras.layers.Dense(10)])

    def predict_real(x):   # the book's Lambda: D(x) = Z / (Z + 1)
        total = keras.ops.sum(keras.ops.exp(x), axis=-1, keepdims=True)
        return total / (total + 1.0)

    trunk = discriminator_net()
    supervised = keras.Sequential([trunk, keras.layers.Activation("softmax")])
    supervised.compile(loss="categorical_crossentropy", metrics=["accuracy"],
                       optimizer=keras.optimizers.Adam())
    unsupervised = keras.Sequential([trunk, keras.layers.Lambda(predict_real)])
    unsupervised.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
    generator = keras.Sequential([
        keras.Input((z_dim,)), keras.layers.Dense(256 * 7 * 7), keras.layers.Reshape((7, 7, 256)),
        keras.layers.Conv2DTranspose(128, 3, strides=2, padding="same"),
        keras.layers.BatchNormalization(), keras.layers.LeakyReLU(0.01),
        keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="tanh")])
    unsupervised.trainable = False
    gan = keras.Sequential([generator, unsupervised])
    gan.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
    real, fake = np.ones((batch_size, 1)), np.zeros((batch_size, 1))

    def run(steps):
        for _ in range(steps):
            index = np.random.randint(0, num_labeled, batch_size)
            images, labels = x_train[index], keras.utils.to_categorical(y_train[index], 10)
            unlabeled = x_train[np.random.randint(num_labeled, len(x_train), batch_size)]
            z = np.random.normal(0, 1, (batch_size, z_dim))
            generated = generator.predict(z, verbose=0)
            supervised.train_on_batch(images, labels)
            unsupervised.train_on_batch(unlabeled, real)
            unsupervised.train_on_batch(generated, fake)
            z = np.random.normal(0, 1, (batch_size, z_dim))
            generator.predict(z, verbose=0)
            gan.train_on_batch(z, np.ones((batch_size, 1)))
    return run


# -------------------------------------------------------------- improved-gan
def improved_gan_tf2(batch_size):
    """``train_batch_disc`` then ``train_batch_gen`` of the Theano script, in TF2."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 1, size=(60000, 784)).astype(np.float32)
    labeled = train[:100]
    labels = (np.arange(100) % 10).astype(np.int32)
    init = tf.random_normal_initializer(stddev=0.1, seed=0)
    sizes = [784, 1000, 500, 250, 250, 250, 10]
    theta = [tf.Variable(init([a, b])) for a, b in zip(sizes, sizes[1:])]
    scale = [tf.Variable(tf.ones([b]), trainable=(i == 5)) for i, b in enumerate(sizes[1:])]
    bias = [tf.Variable(tf.zeros([b])) for b in sizes[1:]]
    disc_params = theta + bias + [scale[-1]]
    average = [tf.Variable(tf.zeros_like(p)) for p in disc_params]
    def glorot(shape):   # lasagne's and Keras' GlorotUniform
        limit = (6.0 / sum(shape)) ** 0.5
        return tf.random.uniform(shape, -limit, limit, seed=1)

    g_w = [tf.Variable(glorot([100, 500])), tf.Variable(glorot([500, 500])),
           tf.Variable(glorot([500, 784]))]
    g_beta = [tf.Variable(tf.zeros([500])), tf.Variable(tf.zeros([500]))]
    g_scale, g_bias = tf.Variable(tf.ones([784])), tf.Variable(tf.zeros([784]))
    gen_params = g_w + g_beta + [g_scale, g_bias]

    def adam(params):
        state = [(tf.Variable(tf.zeros_like(p)), tf.Variable(tf.zeros_like(p))) for p in params]
        t = tf.Variable(1.0)

        def update(grads, lr):
            for p, g, (v, mg) in zip(params, grads, state):
                v.assign(0.5 * v + 0.5 * g)
                mg.assign(0.999 * mg + 0.001 * tf.square(g))
                v_hat = v / (1.0 - 0.5 ** t)
                mg_hat = mg / (1.0 - 0.999 ** t)
                p.assign_sub(lr * v_hat / tf.sqrt(mg_hat + 1e-8))
            t.assign_add(1.0)
        return update

    disc_adam, gen_adam = adam(disc_params), adam(gen_params)

    def discriminator(x, features=False):
        x = x + tf.random.normal(tf.shape(x), stddev=0.3)
        for index in range(6):
            w = theta[index] * scale[index] / tf.sqrt(tf.reduce_sum(tf.square(theta[index]), 0))
            x = tf.matmul(x, w) + bias[index]
            if index < 5:
                x = tf.nn.relu(x)
                if features and index == 4:
                    return x
                x = x + tf.random.normal(tf.shape(x), stddev=0.5)
        return x

    def generator():
        x = tf.random.uniform([batch_size, 100])
        for w, beta in zip(g_w[:2], g_beta):
            x = tf.matmul(x, w)
            mean, variance = tf.nn.moments(x, [0])
            x = tf.nn.softplus((x - mean) / tf.sqrt(1e-6 + variance) + beta)
        w = g_w[2] * g_scale / tf.sqrt(1e-6 + tf.reduce_sum(tf.square(g_w[2]), 0))
        return tf.nn.sigmoid(tf.matmul(x, w) + g_bias)

    @tf.function
    def train_batch_disc(x_lab, y_lab, x_unl, lr):
        with tf.GradientTape() as tape:
            out_lab, out_unl = discriminator(x_lab), discriminator(x_unl)
            out_fake = discriminator(generator())
            l_lab = tf.gather(out_lab, y_lab, batch_dims=1)
            loss_lab = -tf.reduce_mean(l_lab) + tf.reduce_mean(tf.reduce_logsumexp(out_lab, 1))
            l_unl = tf.reduce_logsumexp(out_unl, 1)
            loss_unl = (-0.5 * tf.reduce_mean(l_unl) + 0.5 * tf.reduce_mean(tf.nn.softplus(l_unl))
                        + 0.5 * tf.reduce_mean(tf.nn.softplus(tf.reduce_logsumexp(out_fake, 1))))
            loss = loss_lab + loss_unl
        disc_adam(tape.gradient(loss, disc_params), lr)
        for a, p in zip(average, disc_params):
            a.assign(a + 0.0001 * (p - a))
        return loss_lab, loss_unl

    @tf.function
    def train_batch_gen(x_unl, lr):
        with tf.GradientTape() as tape:
            mom_gen = tf.reduce_mean(discriminator(generator(), features=True), 0)
            mom_real = tf.reduce_mean(discriminator(x_unl, features=True), 0)
            loss_gen = tf.reduce_mean(tf.square(mom_gen - mom_real))
        gen_adam(tape.gradient(loss_gen, gen_params), lr)
        return loss_gen

    position = [0]
    lr = tf.constant(0.003)

    def run(steps):
        for _ in range(steps):
            t = position[0] % 600
            position[0] += 1
            rows = slice(t * batch_size, (t + 1) * batch_size)
            train_batch_disc(labeled, labels, train[rows], lr)
            loss = train_batch_gen(train[rows][::-1], lr)
        float(loss)
    return run


PEER_STEPS = {"blog": blog_tf1, "gans_in_action": gans_in_action_keras,
              "improved_gan": improved_gan_tf2}


# ----------------------------------------------------------- timing server
def serve(peer, side):
    """Reads step counts on stdin, answers the seconds each took."""
    if side == "peer":
        run = PEER_STEPS[peer](PEERS[peer][1])
    else:
        run = ours(peer, separate_discriminator_calls=(side == "separate"))
    run(2)                                   # compile / warm up
    from sgan_keras import onednn
    print(f"ready {json.dumps(onednn.onednn_kernels_in_use())}", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        run(int(line))
        print(time.perf_counter() - start, flush=True)


class Side:
    """One side's timing server (its own process); the sides of a peer start
    together and each answers once warm (:meth:`wait_ready`), before any window."""

    def __init__(self, peer, side, kernels_env):
        self.name = f"{peer}:{side}"
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--serve={self.name}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kernels_env})
        self.onednn = None

    def wait_ready(self):
        """Waits until warm; keeps whether it runs oneDNN's kernels."""
        answer = self.process.stdout.readline().split()
        if not answer or answer[0] != "ready":
            raise RuntimeError(f"{self.name} did not start")
        self.onednn = json.loads(answer[1])

    def time(self, steps):
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main(argv):
    del argv
    if FLAGS.serve:
        serve(*FLAGS.serve.split(":"))
        return
    unknown = sorted(set(FLAGS.peers) - set(PEERS))
    if unknown:
        raise app.UsageError(f"--peers: unknown {unknown}; allowed: {sorted(PEERS)}")
    # The CPU kernels and allocator the CLI runs each preset with, chosen
    # before TensorFlow is imported, for ours and the peer alike: this process
    # (the peak) gets the default kernels, each peer's two sides its preset's
    # (sgan_keras/onednn.py), unless TF_ENABLE_ONEDNN_OPTS is set.
    from sgan_keras import onednn
    kernels_from_environment = os.environ.get(onednn.ONEDNN_VARIABLE)
    onednn.choose_cpu_kernels()
    from sgan_keras import distribute
    distribute.use_pooled_cpu_allocator()
    pooled = distribute.pooled_cpu_allocator_in_use()   # this process's; the sides inherit it
    check = provenance.quiet_check(FLAGS.quiet_seconds, force=FLAGS.force)
    rows = []
    for peer in FLAGS.peers:
        step_flops, fused = step_facts(PEERS[peer][0], PEERS[peer][1])
        kernels_env = onednn.kernels_environment(architecture(peer), kernels_from_environment)
        sides = {side: Side(peer, side, kernels_env)
                 for side in ("ours", "peer") + (("separate",) if fused else ())}
        for process in sides.values():
            process.wait_ready()
        probe = sides["ours"].time(2) / 2
        steps = max(3, int(FLAGS.window_seconds / max(probe, 1e-3)))
        times = {side: [] for side in sides}
        for _ in range(FLAGS.repeats):
            for side, process in sides.items():
                times[side].append(process.time(steps) / steps)
        for process in sides.values():
            process.close()
        preset, batch_size, source = PEERS[peer]
        ours_ms = 1000 * statistics.median(times["ours"])
        peer_ms = 1000 * statistics.median(times["peer"])
        separate_ms = (1000 * statistics.median(times["separate"])
                       if "separate" in times else None)
        rows.append({"peer": peer, "preset": preset, "batch_size": batch_size, "source": source,
                     "ours_ms": round(ours_ms, 2), "peer_ms": round(peer_ms, 2),
                     "separate_d_ms": separate_ms and round(separate_ms, 2),
                     "flops_per_step": step_flops,
                     "speedup": round(peer_ms / ours_ms, 3), "steps_per_window": steps,
                     "onednn": {side: process.onednn for side, process in sides.items()},
                     "windows_ms": {side: [round(1000 * t, 2) for t in values]
                                    for side, values in times.items()}})
        print(f"{peer}: ours {ours_ms:.1f} ms, peer {peer_ms:.1f} ms, "
              f"{peer_ms / ours_ms:.2f}x", flush=True)
    peak = provenance.matmul_peak_flops(FLAGS.peak_size, repeats=FLAGS.peak_repeats)
    for row in rows:
        row["fraction_of_peak"] = round(row["flops_per_step"] / (row["ours_ms"] / 1000) / peak, 4)
    write(rows, check, peak, pooled)


def architecture(peer):
    """The architecture of ``peer``'s preset (which decides its CPU kernels)."""
    from sgan_keras.presets import PRESETS
    return PRESETS[PEERS[peer][0]].config.model.architecture


def step_facts(preset_name, batch_size):
    """(FLOPs of the package's step in the preset's procedure, whether its D
    batches go through one concatenated call)."""
    from sgan_keras import flops as flops_lib
    model = our_model(preset_name)
    return (flops_lib.train_step_flops(model, batch_size),
            model.discriminator_batches_independent)


def write(rows, check, peak, pooled):
    lines = ["# The package's training step beside each source's own code", "",
             f"Command: `python {' '.join(sys.argv)}`; {time.strftime('%Y-%m-%d')}, commit "
             f"{provenance.commit()}.", f"Machine: {provenance.machine_line(provenance.machine())}.",
             provenance.quiet_line(check), "",
             provenance.cpu_allocator_line(pooled) + " Both sides' processes use it.", "",
             "Milliseconds per training step, median of the timed windows (float32, "
             "alternating windows, each side in its own process).", "",
             f"Peak: a float32 {FLAGS.peak_size}x{FLAGS.peak_size} matmul chain, "
             f"{peak / 1e9:.1f} GFLOP/s in this run "
             f"(best of {FLAGS.peak_repeats}). "
             "`separate D` is the package's step with D called once per batch rather than "
             "once on their concatenation. `kernels`: the CPU kernels both sides of the row "
             "ran, those the CLI chooses for the preset (`sgan_keras/onednn.py`) unless "
             "TF_ENABLE_ONEDNN_OPTS was set; the machine line above is this process's (the "
             "peak's).", "",
             "| preset | batch | peer | kernels | ours ms | peer ms | ours is faster by "
             "| separate D ms | GFLOP/step | ours, % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        separate = row["separate_d_ms"]
        kernels = sorted({provenance.kernels_name(value) for value in row["onednn"].values()})
        lines.append(f"| {row['preset']} | {row['batch_size']} | {row['source']} | "
                     f"{' and '.join(kernels)} | {row['ours_ms']:.1f} | {row['peer_ms']:.1f} | "
                     f"{row['speedup']:.2f}x | "
                     + (f"{separate:.1f} | " if separate else "- | ")
                     + f"{row['flops_per_step'] / 1e9:.2f} | {100 * row['fraction_of_peak']:.0f}% |")
    from sgan_keras import faults
    faults.write_text(FLAGS.output, "\n".join(lines) + "\n")    # atomic, UTF-8
    faults.write_text(os.path.splitext(FLAGS.output)[0] + ".json", json.dumps(
        {"check": check, "pooled_cpu_allocator": pooled, "peak_flops": peak, "rows": rows},
        indent=2))


if __name__ == "__main__":
    app.run(main)
