"""The shared list of block descriptors driving the cross-cutting layer tests.

Each `Block` says how to construct a fresh layer, the example input shape it is built
and checked on, and which `training` values matter. `test_layers_compile.py` runs every
block through eager / tf.function / XLA, the build-once check, a checkpoint round trip
and an unknown-batch `TensorSpec`. Add a block here and it gets all those tests.
Also shared helpers: `state_variables`, `value_and_grads`, and the `keras_impl` fixture
(Keras 3 and Keras 2) that parametrises the parity tests by Keras backend.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Tuple

import numpy as np
import pytest
import tensorflow as tf

import tfcore


@dataclasses.dataclass(frozen=True)
class Block:
    name: str
    make: Callable[[], tfcore.Layer]
    input_shape: Tuple[int, ...]
    trainings: Tuple[bool, ...] = (False,)  # the training values worth checking
    seeded: bool = False  # stochastic in training: call with a fixed stateless seed
    dynamic: bool = False  # uses tf.shape for an unknown batch: also test that under XLA

    def example(self, batch=None, offset=0) -> tf.Tensor:
        """A deterministic float32 input (batch overrides the first dimension)."""
        shape = (batch or self.input_shape[0],) + tuple(self.input_shape[1:])
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + offset)
        return tf.constant(rng.normal(size=shape).astype(np.float32))


def _seq():
    return tfcore.Sequential([
        tfcore.Conv2D(4, 3, padding="same"),
        tfcore.BatchNorm(),
        tf.nn.relu,
        tfcore.MaxPool2D(),
        tfcore.Sequential([tfcore.Flatten(), tfcore.Dropout(0.5), tfcore.Dense(3)]),
    ])


BLOCKS = [
    Block("dense", lambda: tfcore.Dense(5, activation="relu"), (3, 7)),
    Block("dense_rank3", lambda: tfcore.Dense(4, use_bias=False), (2, 3, 6)),
    Block("conv2d_valid", lambda: tfcore.Conv2D(4, 3, activation="relu"), (2, 7, 7, 3)),
    Block("conv2d_same_s2", lambda: tfcore.Conv2D(5, (3, 2), strides=2, padding="same"),
          (2, 7, 8, 3)),
    Block("conv2d_dilated", lambda: tfcore.Conv2D(3, 3, dilation_rate=2, padding="same"),
          (2, 8, 8, 2)),
    Block("conv2dT_valid_s2", lambda: tfcore.Conv2DTranspose(4, 3, strides=2), (2, 4, 5, 3),
          dynamic=True),
    Block("conv2dT_same_s2_op1", lambda: tfcore.Conv2DTranspose(
        3, 4, strides=2, padding="same", output_padding=1), (2, 4, 3, 2), dynamic=True),
    Block("conv2dT_same_s3", lambda: tfcore.Conv2DTranspose(2, 5, strides=3, padding="same",
                                                            activation="tanh"), (2, 3, 4, 2)),
    Block("conv2dT_dilated", lambda: tfcore.Conv2DTranspose(2, 3, dilation_rate=2,
                                                            padding="same"), (2, 5, 4, 3)),
    Block("max_pool", lambda: tfcore.MaxPool2D(3, strides=2, padding="same"), (2, 7, 6, 3)),
    Block("avg_pool", lambda: tfcore.AvgPool2D(), (2, 6, 5, 2)),
    Block("upsampling_nearest", lambda: tfcore.UpSampling2D((2, 3)), (2, 3, 4, 2)),
    Block("upsampling_bilinear", lambda: tfcore.UpSampling2D(2, interpolation="bilinear"),
          (2, 3, 4, 2)),
    Block("flatten", lambda: tfcore.Flatten(), (2, 3, 4, 5), dynamic=True),
    Block("dropout", lambda: tfcore.Dropout(0.4), (4, 6, 5), (False, True), seeded=True),
    Block("batch_norm", lambda: tfcore.BatchNorm(momentum=0.9), (4, 3, 3, 5), (False, True)),
    Block("batch_norm_axis1", lambda: tfcore.BatchNorm(axis=1, momentum=0.9), (4, 3, 5),
          (False, True)),
    Block("sequential", _seq, (3, 6, 6, 2), (False, True), seeded=True),
]

BY_NAME = {b.name: b for b in BLOCKS}


def state_variables(layer) -> list:
    """Every variable a checkpoint holds: layer.variables plus Dropout generator states."""
    out = list(layer.variables)
    for m in [layer, *layer.submodules]:
        gen = getattr(m, "generator", None)
        if isinstance(gen, tf.random.Generator):
            out.append(gen.state)
    return out


def value_and_grads(fn, x, variables, cot) -> list:
    """[y, dL/dx, dL/dv for v in variables] with y = fn(x), L = sum(y * cot). x is
    watched; the variables must be trainable ones (the tape watches those itself)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * cot)
    return [y, *tape.gradient(loss, [x, *variables])]


# --- the Keras backend of a parity case ---------------------------------------------------
KERAS_IMPLS = ("keras3", "keras2")


def keras_module(impl: str):
    """`keras` (Keras 3) for 'keras3', `tf_keras` (Keras 2) for 'keras2' (the test is
    skipped when tf-keras is not installed: `pip install -e .[test]`)."""
    if impl == "keras3":
        import keras
        return keras
    return pytest.importorskip("tf_keras")


def is_keras2(module) -> bool:
    return module.__name__ == "tf_keras"


@pytest.fixture(params=KERAS_IMPLS)
def keras_impl(request):
    """The Keras module a parity case runs against, `keras` (Keras 3) or `tf_keras`
    (Keras 2): one set of cases for both (import this fixture into a test module)."""
    return keras_module(request.param)
