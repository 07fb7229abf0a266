"""Random translation of images by whole pixels, zero-filled (data augmentation).

    y[b, i, j, c] = x[b, i - dy_b, j - dx_b, c]   (0 where that falls outside x)

with dy_b, dx_b drawn independently per image, uniform over the integers in
[-max_shift, max_shift]. Shapes: x [b, h, w, c] -> y [b, h, w, c], same dtype.
Implemented as a zero pad of max_shift on each side and a per-image crop (two batched
gathers), so it compiles under XLA with static shapes.

Randomness: the shifts come from `tf.random.stateless_uniform(..., dtype=int32,
alg='philox')` with the given stateless seed: the same seed gives the same shifts,
eager, in `tf.function` and under XLA. Keras's nearest equivalent is
`RandomTranslation(fill_mode='constant', interpolation='nearest')` with a whole-pixel
factor; MNIST semi-supervised papers use shifts of up to 2 pixels.
"""
from __future__ import annotations

import tensorflow as tf


def random_translate(x: tf.Tensor, max_shift: int, seed) -> tf.Tensor:
    """Shifts each image of x by its own random (dy, dx) in [-max_shift, max_shift]^2.

    Args:
      x: images [b, h, w, c] (static h and w).
      max_shift: largest shift in pixels, an int >= 0 (0 returns x unchanged).
      seed: stateless seed, int32/int64 tensor of shape [2].

    Returns:
      [b, h, w, c]: the shifted images, zeros where nothing was shifted in.

    Raises:
      ValueError: max_shift not an int >= 0, or x not of rank 4 with static h, w.
    """
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"random_translate needs images [batch, height, width, channels] "
                         f"with static height and width, got shape {x.shape}")
    if max_shift == 0:
        return x
    h, w = int(x.shape[1]), int(x.shape[2])
    shifts = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed=seed, minval=0,
                                         maxval=2 * max_shift + 1, dtype=tf.int32,
                                         alg="philox")
    padded = tf.pad(x, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    # Output row i reads padded row i + max_shift - dy = i + (2 * max_shift - s_y).
    rows = (2 * max_shift - shifts[:, :1]) + tf.range(h)[None, :]   # [b, h]
    cols = (2 * max_shift - shifts[:, 1:]) + tf.range(w)[None, :]   # [b, w]
    y = tf.gather(padded, rows, axis=1, batch_dims=1)              # [b, h, w + 2m, c]
    return tf.gather(y, cols, axis=2, batch_dims=1)                # [b, h, w, c]
