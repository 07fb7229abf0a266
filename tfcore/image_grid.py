"""Image grids as PNG: `image_grid` tiles images into one uint8 picture, `save_png`
writes it (encoded with `tf.io.encode_png`) atomically.

Layout of `image_grid(images, rows, cols, pad)`: image `i` goes to row `i // cols`,
column `i % cols` (row-major); cells are separated, and the whole grid framed, by
`pad` pixels of `pad_value`. For images [n, h, w, c]:

    H = rows * h + (rows + 1) * pad,   W = cols * w + (cols + 1) * pad.

Cells beyond `n` stay black (0). Used for autoencoder reconstructions (rows of test
digits, their noisy versions, their reconstructions) and GAN samples.
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import tensorflow as tf

from tfcore.training import metrics_io

ArrayLike = Union[np.ndarray, tf.Tensor]


def _check_count(value, what: str, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{what} must be a {kind} integer, got {value!r}")
    return int(value)


def image_grid(images: ArrayLike, rows: int, cols: int, pad: int = 1,
               pad_value: float = 1.0) -> np.ndarray:
    """Tiles images into a grid (see the module docstring for the layout).

    Args:
      images: [n, h, w, c] (c in 1, 3, 4) or [n, h, w] (then c = 1): floats in
        [0, 1] (clipped) or uint8, with n <= rows * cols.
      rows: grid rows (positive int).
      cols: grid columns (positive int).
      pad: pixels between cells and around the grid (>= 0, default 1).
      pad_value: the padding's intensity in [0, 1] (default 1.0, white, which
        separates dark MNIST backgrounds).

    Returns:
      uint8 NumPy array [rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c].

    Raises:
      ValueError: bad rows / cols / pad / pad_value, a bad image shape, or more
        images than cells.
    """
    rows = _check_count(rows, "rows")
    cols = _check_count(cols, "cols")
    pad = _check_count(pad, "pad", allow_zero=True)
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)) or \
            not 0.0 <= pad_value <= 1.0:
        raise ValueError(f"pad_value must be a number in [0, 1], got {pad_value!r}")
    x = np.asarray(images.numpy() if hasattr(images, "numpy") else images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [n, h, w, c] with c in 1, 3, 4 (or [n, h, w]), "
                         f"got shape {np.shape(images)}")
    n, h, w, c = x.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a grid of rows={rows} x cols={cols}")
    if x.dtype != np.uint8:
        x = np.round(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    grid = np.full([rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c],
                   int(round(pad_value * 255)), np.uint8)
    for i in range(rows * cols):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = x[i] if i < n else 0
    return grid


def encode_png(grid: ArrayLike) -> bytes:
    """PNG bytes of a uint8 image [H, W, c] (`tf.io.encode_png`)."""
    g = tf.convert_to_tensor(grid)
    if g.dtype != tf.uint8 or g.shape.rank != 3 or g.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"grid must be a uint8 [H, W, c] image with c in 1..4, got "
                         f"{g.dtype.name} {g.shape}")
    return tf.io.encode_png(g).numpy()


def save_png(path: Union[str, os.PathLike], grid: ArrayLike) -> str:
    """Writes a uint8 image [H, W, c] as a PNG at `path` atomically (temp file +
    rename, so readers never see a partial file); returns `path`."""
    path = os.fspath(path)
    metrics_io.atomic_write_bytes(path, encode_png(grid))
    return path


def split_grid(grid: ArrayLike, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """The inverse of `image_grid`: the rows * cols cells of a grid, [rows * cols, h,
    w, c] (row-major), with h = (H - (rows + 1) * pad) / rows (likewise w).

    Raises:
      ValueError: the grid's size does not fit rows, cols and pad.
    """
    rows = _check_count(rows, "rows")
    cols = _check_count(cols, "cols")
    pad = _check_count(pad, "pad", allow_zero=True)
    g = np.asarray(grid.numpy() if hasattr(grid, "numpy") else grid)
    if g.ndim == 2:
        g = g[..., None]
    H, W = g.shape[0], g.shape[1]
    h, rh = divmod(H - (rows + 1) * pad, rows)
    w, rw = divmod(W - (cols + 1) * pad, cols)
    if g.ndim != 3 or rh or rw or h <= 0 or w <= 0:
        raise ValueError(f"a grid of shape {g.shape} does not split into rows={rows} x "
                         f"cols={cols} cells with pad={pad}")
    cells = [g[pad + r * (h + pad):pad + r * (h + pad) + h,
               pad + k * (w + pad):pad + k * (w + pad) + w]
             for r in range(rows) for k in range(cols)]
    return np.stack(cells)


def load_png(path: Union[str, os.PathLike]) -> np.ndarray:
    """A PNG file as a uint8 array [H, W, c] (`tf.io.decode_png`)."""
    with open(os.fspath(path), "rb") as f:
        return tf.io.decode_png(f.read()).numpy()
