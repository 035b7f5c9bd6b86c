r"""Traces a preset's train step and prints how long each trace took.

    python experiments/trace_step.py mnist_gans_in_action 3

Builds the preset's model (synthetic images, no data needed) and traces
its train step (``tf.function``'s concrete function) once untimed, which
pays what a process pays once, then TRACES more times, a new model each;
prints one JSON line, ``{"seconds": [each timed trace], "ops": the traced
graph's op count}``: what every training run and test process pays before
its first step. ``experiments/startup_time.py --commands=trace`` runs it in
two checkouts side by side (the ``sgan_keras`` imported is the first on
``sys.path``: ``PYTHONPATH`` chooses the checkout).
"""

import json
import sys
import time

import keras
import tensorflow as tf

from sgan_keras import PRESETS
from sgan_keras import SGAN
from sgan_keras import data as data_lib


def trace_seconds_and_ops(preset, traces):
    """``(seconds of each timed trace, the traced graph's op count)``."""
    config = PRESETS[preset].config
    data = data_lib.synthetic_dataset(config.data.dataset, config.data.labels,
                                      pixel_range=config.model.pixel_range)
    batch = next(iter(data.training_dataset(16, config.training.label_batching)))
    seconds, ops = [], None
    for index in range(traces + 1):
        keras.utils.set_random_seed(0)
        model = SGAN.from_preset(preset, seed=0)
        model.compile()
        model.initialize_weight_norm(batch)
        start = time.perf_counter()
        graph = tf.function(model.train_step).get_concrete_function(batch).graph
        if index:
            seconds.append(time.perf_counter() - start)
        ops = len(graph.get_operations())
    return seconds, ops


if __name__ == "__main__":
    seconds, ops = trace_seconds_and_ops(sys.argv[1], int(sys.argv[2]))
    print(json.dumps({"seconds": seconds, "ops": ops}))
