"""Small image sets from a folder, and augmentation to grow them.

`load_image_folder(path, size=(32, 32), grayscale=True)` decodes every PNG/JPEG (also
BMP/GIF, first frame) in a folder with Pillow, resizes it and returns float32 images
[N, h, w, 1] (or [N, h, w, 3]) in [0, 1], in sorted file-name order.

`augment(images, factor, seed)` returns `factor` times as many images: the originals
followed by `factor - 1` randomly scaled, shifted and brightened copies of each,
fixed by `seed`, clipped to the value range.
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfcore import checks
from tfcore.data.idx import DataError, PathLike
from tfcore.layer import normalize_tuple

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def list_image_files(path: PathLike, recursive: bool = False) -> List[str]:
    """Sorted paths of the image files (by extension, any case) in a folder.

    Hidden files (name starting with '.') and files of other extensions are skipped.
    With `recursive`, sub-folders are searched too (hidden ones skipped).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"image folder {path} does not exist or is not a directory")
    found = []
    if recursive:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in files if _is_image_name(f)]
    else:
        found = [os.path.join(path, f) for f in os.listdir(path)
                 if _is_image_name(f) and os.path.isfile(os.path.join(path, f))]
    return sorted(found)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def load_image_folder(path: PathLike, size: Sequence[int] = (32, 32),
                      grayscale: bool = True, recursive: bool = False) -> np.ndarray:
    """Loads all images of a folder as float32 [N, h, w, C] in [0, 1].

    Each file is decoded with Pillow (EXIF orientation applied; an alpha channel is
    ignored), converted to grayscale ('L', ITU-R 601 luma) or RGB, and resized to
    `size` with bilinear filtering (antialiased when shrinking); the aspect ratio is
    not kept.

    Args:
      path: the folder.
      size: (height, width) of the output images, or one int for both (default 32x32).
      grayscale: True (default) gives C = 1, False gives RGB, C = 3.
      recursive: also read sub-folders (default False: only files directly in
        `path`). Files are taken in sorted path order. Image files are recognised
        by extension (`IMAGE_EXTENSIONS`, any case); other files and hidden files
        are skipped.

    Returns:
      float32 array [N, h, w, C], values in [0, 1] (pixel / 255).

    Raises:
      DataError: the folder is missing or holds no image file (naming the folder), or
        an image file cannot be decoded (naming the file).
      ValueError: a bad `size`.
    """
    height, width = normalize_tuple(size, 2, "size")
    files = list_image_files(path, recursive)
    if not files:
        raise DataError(f"image folder {os.fspath(path)} holds no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)}"
                        f"{'' if recursive else '; sub-folders not searched'})")
    return np.stack([_load_one(f, height, width, grayscale) for f in files])


def _load_one(path: str, height: int, width: int, grayscale: bool) -> np.ndarray:
    from PIL import Image, ImageOps  # pillow is a dependency; imported when needed

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("L" if grayscale else "RGB")
            im = im.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(im, dtype=np.float32)
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), ...
        raise DataError(f"cannot decode image file {path}: {type(e).__name__}: {e}") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels / np.float32(255.0)


def augment(images, factor: int, seed: int, scale_range: Tuple[float, float] = (0.9, 1.1),
            max_shift: float = 0.1, max_brightness: float = 0.1,
            value_range: Tuple[float, float] = (0.0, 1.0),
            fill_value: float = 0.0) -> np.ndarray:
    """Grows a small image set: the originals plus `factor - 1` random variants of each.

    Each variant draws, independently per image, a zoom `s ~ U(scale_range)` about the
    image centre, a shift `(dy, dx) ~ U(-max_shift, max_shift) * (h, w)` pixels, and a
    brightness offset `b ~ U(-max_brightness, max_brightness)`; then

        out(p) = clip(in((p - c - t) / s + c) + b, *value_range)

    with bilinear sampling and `fill_value` outside the input. Draws come from
    stateless Philox streams seeded by `[seed, k]` for copy `k`, so the result is
    fixed by `seed`.

    Args:
      images: [N, h, w, C] float images.
      factor: output size multiplier (1 returns a copy of the input).
      seed: integer seed.
      scale_range: (min, max) zoom factors, both > 0 (default (0.9, 1.1)).
      max_shift: largest shift as a fraction of the image size (default 0.1).
      max_brightness: largest additive brightness change (default 0.1).
      value_range: (low, high) the outputs are clipped to (default [0, 1]).
      fill_value: value where the transform samples outside the image (default 0,
        black background).

    Returns:
      float32 array [factor * N, h, w, C]: `images` first, then copy 1 of every image,
      then copy 2, ...
    """
    checks.check_int(factor, "factor", low=1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, h, w, C] with N > 0, got shape {images.shape}")
    lo_s, hi_s = (float(v) for v in scale_range)
    if not 0 < lo_s <= hi_s:
        raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got "
                         f"{scale_range!r}")
    if not 0 <= max_shift < 1:
        raise ValueError(f"max_shift must be in [0, 1), got {max_shift!r}")
    if max_brightness < 0:
        raise ValueError(f"max_brightness must be >= 0, got {max_brightness!r}")
    low, high = (float(v) for v in value_range)
    if not low < high:
        raise ValueError(f"value_range must be (low, high) with low < high, got "
                         f"{value_range!r}")
    n, h, w, _ = images.shape
    x = tf.constant(images)
    outputs = [images]
    for k in range(1, factor):
        seeds = tf.random.experimental.stateless_split(
            tf.constant([int(seed), k], tf.int64), num=3, alg="philox")
        s = tf.random.stateless_uniform([n], seeds[0], lo_s, hi_s, alg="philox")
        shift = tf.random.stateless_uniform([n, 2], seeds[1], -max_shift, max_shift,
                                            alg="philox") * tf.constant([h, w], tf.float32)
        b = tf.random.stateless_uniform([n, 1, 1, 1], seeds[2], -max_brightness,
                                        max_brightness, alg="philox")
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        inv = 1.0 / s
        zeros = tf.zeros([n])
        # Output (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
        transforms = tf.stack([inv, zeros, cx - (cx + shift[:, 1]) * inv,
                               zeros, inv, cy - (cy + shift[:, 0]) * inv,
                               zeros, zeros], axis=1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.constant([h, w], tf.int32),
            fill_value=tf.constant(fill_value, tf.float32), interpolation="BILINEAR",
            fill_mode="CONSTANT")
        outputs.append(tf.clip_by_value(moved + b, low, high).numpy())
    return np.concatenate(outputs, axis=0)
