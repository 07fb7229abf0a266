"""Shared test set-up: quiet TF logs, a fixed seed per test, the real-data dir."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(autouse=True)
def _seed():
    tf.random.set_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory holding the real mnist.npz, or skip when the machine has none."""
    for d in (os.environ.get("TFCORE_DATA_DIR"), _SHARED):
        if d and os.path.exists(os.path.join(d, "mnist.npz")):
            return d
    pytest.skip("real MNIST not available (set TFCORE_DATA_DIR)")
