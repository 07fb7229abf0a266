"""tfcore.random_translate: whole-pixel shifts against NumPy, the range of the shifts,
reproducibility (eager == tf.function == XLA for one seed), validation."""
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from tfcore.random_translate import random_translate


def _images(b=64, h=9, w=7, c=2):
    # Strictly positive pixels: a zero marks a pixel shifted in from outside.
    return np.random.default_rng(0).uniform(0.5, 1.5, (b, h, w, c)).astype(np.float32)


def _numpy_shift(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[i, j] = img[i - dy, j - dx]
    return out


def _found_shift(x, y, m):
    """The (dy, dx) in [-m, m]^2 that maps x to y (asserting exactly one does)."""
    hits = [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)
            if np.array_equal(_numpy_shift(x, dy, dx), y)]
    assert len(hits) == 1, hits
    return hits[0]


def test_each_image_is_a_whole_pixel_shift_and_all_shifts_occur():
    x, m = _images(), 2
    y = random_translate(tf.constant(x), m, tf.constant([1, 2])).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    shifts = [_found_shift(x[b], y[b], m) for b in range(len(x))]
    # 64 draws over 25 shifts: every row and column offset in [-2, 2] shows up.
    assert {s[0] for s in shifts} == set(range(-m, m + 1))
    assert {s[1] for s in shifts} == set(range(-m, m + 1))
    assert len(set(shifts)) > 10  # per-image draws, not one shift for the batch


def test_same_seed_same_shifts_in_eager_graph_and_xla():
    x = tf.constant(_images(16))
    seed = tf.constant([7, 3], tf.int64)
    eager = random_translate(x, 3, seed).numpy()
    graph = tf.function(lambda a, s: random_translate(a, 3, s))(x, seed).numpy()
    xla = tf.function(lambda a, s: random_translate(a, 3, s), jit_compile=True)(
        x, seed).numpy()
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, xla)
    other = random_translate(x, 3, tf.constant([7, 4], tf.int64)).numpy()
    assert not np.array_equal(eager, other)


def test_zero_shift_is_identity_and_unknown_batch_traces():
    x = tf.constant(_images(4))
    assert random_translate(x, 0, tf.constant([1, 2])) is x
    fn = tf.function(lambda a: tfcore.random_translate(a, 1, tf.constant([1, 2])),
                     input_signature=[tf.TensorSpec([None, 9, 7, 2], tf.float32)])
    assert fn(x).shape == (4, 9, 7, 2)


@pytest.mark.parametrize("max_shift", [-1, 1.5, True, "2"])
def test_rejects_bad_max_shift(max_shift):
    with pytest.raises(ValueError, match="max_shift"):
        random_translate(tf.zeros([1, 4, 4, 1]), max_shift, tf.constant([1, 2]))


def test_rejects_non_image_shapes():
    with pytest.raises(ValueError, match=r"\[batch, height, width, channels\].*\(4, 4\)"):
        random_translate(tf.zeros([4, 4]), 1, tf.constant([1, 2]))
