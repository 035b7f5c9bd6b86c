"""Shared test set-up: quiet TensorFlow logs, paths to the shared data."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
SHARED_CIFAR10_DIR = REPO_ROOT.parent / "shared" / "data" / "cifar10"
