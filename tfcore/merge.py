"""Merging branches of a model: `concatenate` and `add` (Keras's merge layers).

* concatenate([x1, ..., xn], axis=-1): joins along `axis`; all other dims equal.
* add([x1, ..., xn]): x1 + ... + xn elementwise (NumPy broadcasting, as Keras 3).

Plain functions: they hold no variables, so a model calls them directly.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def _check_list(tensors, what: str, minimum: int):
    if not isinstance(tensors, (list, tuple)) or len(tensors) < minimum:
        raise ValueError(f"{what} expects a list of at least {minimum} tensors, got {tensors!r}")
    return [tf.convert_to_tensor(t) for t in tensors]


def concatenate(tensors: Sequence[tf.Tensor], axis: int = -1) -> tf.Tensor:
    """Concatenates tensors along `axis`.

    Args:
        tensors: list of tensors of equal rank, equal in every dim but `axis`.
        axis: default -1 (features, channels-last).

    Returns:
        One tensor whose `axis` dim is the sum of the inputs'.
    """
    tensors = _check_list(tensors, "concatenate", 1)
    rank = tensors[0].shape.rank
    for t in tensors[1:]:
        if t.shape.rank != rank:
            raise ValueError(f"concatenate: all inputs must have the same rank, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
    if rank is not None and not -rank <= axis < rank:
        raise ValueError(f"concatenate: axis {axis!r} out of range for rank {rank}")
    if rank is not None:
        a = axis % rank
        for t in tensors[1:]:
            for d in range(rank):
                if d == a:
                    continue
                x, y = tensors[0].shape[d], t.shape[d]
                if x is not None and y is not None and x != y:
                    raise ValueError(
                        f"concatenate: shapes must match except along axis {axis}, got "
                        f"{[tuple(t.shape) for t in tensors]}")
    if len(tensors) == 1:
        return tensors[0]
    return tf.concat(tensors, axis=axis)


def add(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Elementwise sum of tensors (broadcasting like NumPy).

    Args:
        tensors: list of at least 2 tensors with broadcast-compatible shapes.

    Returns:
        x1 + x2 + ... + xn.
    """
    tensors = _check_list(tensors, "add", 2)
    try:
        shape = tensors[0].shape
        for t in tensors[1:]:
            shape = tf.broadcast_static_shape(shape, t.shape)
    except ValueError:
        raise ValueError(f"add: input shapes are not broadcast-compatible, got "
                         f"{[tuple(t.shape) for t in tensors]}") from None
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out
