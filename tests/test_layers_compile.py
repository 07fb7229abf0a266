"""Cross-cutting tests for every block in tests/blocks.py.

* eager == tf.function == tf.function(jit_compile=True): outputs and the variables
  after the call (BatchNorm's moving statistics, Dropout's generator state), for each
  `training` value the block lists; stochastic blocks get a fixed stateless seed.
  Tolerance: rtol = atol = 1e-5 (float32; XLA may reorder sums); seeded dropout
  masks must agree exactly (checked on the zero pattern).
* variables are created once: a second call (eager or compiled) adds none.
* tf.train.Checkpoint round trip into a differently initialised twin.
* unknown batch through tf.TensorSpec([None, ...]): static non-batch output shape,
  values equal to eager, for two batch sizes, with tf.function (and XLA for the
  blocks that read the batch size with tf.shape; XLA's stateless-RNG compiles take
  1-2 s each on CPU, so they are not repeated for every block).
"""
import numpy as np
import pytest
import tensorflow as tf

from blocks import BLOCKS, state_variables

TOL = dict(rtol=1e-5, atol=1e-5)
SEED = tf.constant([7, 11], tf.int64)


def _call(layer, block, training):
    seed = SEED if (block.seeded and training) else None
    return lambda x: layer(x, training=training, seed=seed)


def _run_restoring(layer, fn, x):
    """fn(x) and the state afterwards; then puts the state back as it was."""
    state = state_variables(layer)
    before = [v.numpy() for v in state]
    y = fn(x).numpy()
    after = [v.numpy() for v in state]
    for v, b in zip(state, before):
        v.assign(b)
    return y, after


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_eager_function_xla_agree(block):
    layer = block.make()
    x = block.example()
    layer(x)  # build eagerly
    for training in block.trainings:
        fn = _call(layer, block, training)
        y_e, s_e = _run_restoring(layer, fn, x)
        y_f, s_f = _run_restoring(layer, tf.function(fn), x)
        y_x, s_x = _run_restoring(layer, tf.function(fn, jit_compile=True), x)
        for y in (y_f, y_x):
            np.testing.assert_allclose(y, y_e, **TOL)
            if block.seeded and training:  # the same dropout masks
                np.testing.assert_array_equal(y == 0, y_e == 0)
        for s in (s_f, s_x):
            for a, b in zip(s, s_e):
                np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_variables_created_once(block):
    layer = block.make()
    x = block.example()
    training = block.trainings[-1]
    layer(x, training=training)
    ids = [id(v) for v in state_variables(layer)]
    names = sorted(v.name for v in layer.variables)
    layer(x, training=training)
    tf.function(_call(layer, block, training))(x)
    assert [id(v) for v in state_variables(layer)] == ids
    assert sorted(v.name for v in layer.variables) == names
    assert len({v.name for v in layer.variables}) == len(layer.variables)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_checkpoint_round_trip(block, tmp_path):
    x = block.example()
    a, b = block.make(), block.make()
    a(x), b(x)
    if True in block.trainings:
        a(block.example(offset=1), training=True)  # moves moving stats / generators
    path = tf.train.Checkpoint(layer=a).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(layer=b).read(path).assert_consumed()
    for va, vb in zip(state_variables(a), state_variables(b)):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    for training in block.trainings:  # training: unseeded, so generators must match too
        np.testing.assert_array_equal(a(x, training=training).numpy(),
                                      b(x, training=training).numpy())


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_unknown_batch(block):
    layer = block.make()
    x = block.example()
    layer(x)
    spec = tf.TensorSpec([None, *block.input_shape[1:]], tf.float32)
    training = block.seeded  # seeded blocks: check the stochastic path too
    fn = _call(layer, block, training)
    for jit in ((False, True) if block.dynamic else (False,)):
        compiled = tf.function(fn, input_signature=[spec], jit_compile=jit)
        out_shape = compiled.get_concrete_function().structured_outputs.shape
        eager_shape = layer(x).shape
        assert out_shape.as_list() == [None, *eager_shape[1:]]
        for batch in (2, 3):
            xb = block.example(batch=batch, offset=2)
            y_e, _ = _run_restoring(layer, fn, xb)
            y_c, _ = _run_restoring(layer, compiled, xb)
            np.testing.assert_allclose(y_c, y_e, **TOL)
            assert y_c.shape == (batch, *eager_shape[1:])
