"""The chapter's dense example: 64 -> Dense(32, relu) -> Dense(32, relu) -> Dense(10, softmax).

Shapes: x [batch, 64] -> class probabilities [batch, 10]. Parameters:
64*32+32 + 32*32+32 + 32*10+10 = 2,080 + 1,056 + 330 = 3,466 (as Keras's).
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

import tfcore


class DenseExample(tf.Module):
    """A stack of Dense layers ending in a softmax.

    Args:
        hidden_units: sizes of the relu layers. Default (32, 32).
        num_classes: size of the softmax output. Default 10.
        name: module name.
    """

    def __init__(self, hidden_units: Sequence[int] = (32, 32), num_classes: int = 10,
                 name: Optional[str] = "dense_example"):
        super().__init__(name=name)
        self.hidden = [tfcore.Dense(u, activation="relu", name=f"dense_{i + 1}")
                       for i, u in enumerate(hidden_units)]
        self.classifier = tfcore.Dense(num_classes, activation="softmax",
                                       name=f"dense_{len(self.hidden) + 1}")

    def __call__(self, inputs, training: bool = False) -> tf.Tensor:
        """inputs [batch, features] -> probabilities [batch, num_classes]."""
        h = inputs
        for layer in self.hidden:
            h = layer(h, training=training)
        return self.classifier(h, training=training)
