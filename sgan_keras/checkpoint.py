"""Resumable training state: every variable of a run in one ``.npz`` file.

``SGAN.state_variables()`` lists the weights of both networks, the random
seed states of their dropout/noise layers and both optimizers' slots and step
counters, always in the same order for the same configuration. Saving their
values (atomically: a temporary file, then ``os.replace``) after each epoch,
and assigning them back on restart, resumes a run exactly where its last
finished epoch left it.
"""

import json
import os

import numpy as np

STATE_FILE = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that does not belong to this model."""


def save_checkpoint(directory, variables, epoch):
    """Writes ``variables`` and the number of finished epochs to ``directory``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, STATE_FILE)
    temporary = path + ".tmp.npz"
    arrays = {f"v{i:05d}": np.asarray(variable.numpy()) for i, variable in enumerate(variables)}
    arrays["epoch"] = np.asarray(epoch)
    arrays["names"] = np.asarray(json.dumps([variable.path for variable in variables]))
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def restore_checkpoint(directory, variables):
    """Assigns the saved values to ``variables``; returns the finished epochs,
    or ``None`` when ``directory`` holds no checkpoint."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as saved:
            names = json.loads(str(saved["names"]))
            values = [saved[f"v{i:05d}"] for i in range(len(names))]
            epoch = int(saved["epoch"])
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error})") from None
    if len(values) != len(variables) or any(
            value.shape != tuple(variable.shape) for value, variable in zip(values, variables)):
        raise CheckpointError(f"checkpoint {path} was written by a different model; "
                              "pass --overwrite or another --output_dir")
    for value, variable in zip(values, variables):
        variable.assign(value)
    return epoch
