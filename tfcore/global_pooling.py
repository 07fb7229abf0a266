"""Global pooling: reduce every spatial/time axis to one value per channel.

* GlobalMaxPool1D:     [batch, steps, c] -> [batch, c], max over steps.
* GlobalAveragePool1D: [batch, steps, c] -> [batch, c], mean over steps.
* GlobalMaxPool2D:     [batch, h, w, c]  -> [batch, c], max over h and w.
* GlobalAveragePool2D: [batch, h, w, c]  -> [batch, c], mean over h and w.

With `keepdims=True` the reduced axes are kept with size 1 (Keras's option).
Channels-last only. No variables.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore.layer import Layer


class _GlobalPool(Layer):
    _rank = 1
    _reduce = staticmethod(tf.reduce_max)

    def __init__(self, keepdims: bool = False, name: Optional[str] = None):
        super().__init__(name=name)
        if not isinstance(keepdims, bool):
            raise ValueError(f"{type(self).__name__} keepdims must be a bool, got {keepdims!r}")
        self.keepdims = keepdims

    def call(self, x, training=False, seed=None):
        if x.shape.rank != self._rank + 2:
            raise ValueError(f"{type(self).__name__} '{self.name}': input must have rank "
                             f"{self._rank + 2} (channels last), got shape {x.shape}")
        axes = list(range(1, self._rank + 1))
        return self._reduce(x, axis=axes, keepdims=self.keepdims)


class GlobalMaxPool1D(_GlobalPool):
    """Max over the steps axis: [batch, steps, c] -> [batch, c].

    Args:
        keepdims: keep the steps axis with size 1. Default False.
        name: module name.
    """
    _rank = 1
    _reduce = staticmethod(tf.reduce_max)


class GlobalAveragePool1D(_GlobalPool):
    """Mean over the steps axis: [batch, steps, c] -> [batch, c].

    Args:
        keepdims: keep the steps axis with size 1. Default False.
        name: module name.
    """
    _rank = 1
    _reduce = staticmethod(tf.reduce_mean)


class GlobalMaxPool2D(_GlobalPool):
    """Max over height and width: [batch, h, w, c] -> [batch, c].

    Args:
        keepdims: keep the spatial axes with size 1. Default False.
        name: module name.
    """
    _rank = 2
    _reduce = staticmethod(tf.reduce_max)


class GlobalAveragePool2D(_GlobalPool):
    """Mean over height and width: [batch, h, w, c] -> [batch, c].

    Args:
        keepdims: keep the spatial axes with size 1. Default False.
        name: module name.
    """
    _rank = 2
    _reduce = staticmethod(tf.reduce_mean)
