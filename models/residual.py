"""Residual blocks (He et al. 2016) as in the textbook, and a small net of them.

ResidualBlock(filters, downsample):

    y = Conv2D(filters, 3, relu, same)(x) -> Conv2D(filters, 3, relu, same)
    if downsample: y = MaxPool2D(2, strides=2)(y); shortcut = Conv2D(filters, 1, strides=2, same)(x)
    elif channels(x) != filters:               shortcut = Conv2D(filters, 1, same)(x)
    else:                                      shortcut = x            (identity)
    out = add([y, shortcut])

The 1x1 projection (linear, strided when downsampling) is created only when the
shapes of y and x differ. ResidualNet: three blocks (3 -> 64 projection, 64 identity,
64 -> 128 strided projection), GlobalAveragePool2D, Dense(num_classes, softmax).
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

import tfcore
from models.functional import make_classifier_train_step
from tfcore import losses


class ResidualBlock(tf.Module):
    """Two 3x3 convs plus a shortcut (identity, or a 1x1 projection when shapes differ).

    Args:
        filters: output channels. Default 128.
        downsample: halve h and w (MaxPool2D on the main path, stride-2 1x1 conv on
            the shortcut). Default False.
        name: module name.
    """

    def __init__(self, filters: int = 128, downsample: bool = False,
                 name: Optional[str] = "residual_block"):
        super().__init__(name=name)
        self.filters = filters
        self.downsample = bool(downsample)
        self.conv_1 = tfcore.Conv2D(filters, 3, padding="same", activation="relu",
                                    name="conv_1")
        self.conv_2 = tfcore.Conv2D(filters, 3, padding="same", activation="relu",
                                    name="conv_2")
        self.pool = tfcore.MaxPool2D(2, strides=2, name="pool") if self.downsample else None
        self.projection = None  # created on the first call when shapes differ

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        """x [b, h, w, c] -> [b, h', w', filters] (h' = ceil(h/2) when downsampling)."""
        if self.projection is None and (self.downsample or x.shape[-1] != self.filters):
            with self.name_scope:
                self.projection = tfcore.Conv2D(self.filters, 1,
                                                strides=2 if self.downsample else 1,
                                                padding="same", name="projection")
        y = self.conv_2(self.conv_1(x))
        if self.pool is not None:
            y = self.pool(y)
        shortcut = x if self.projection is None else self.projection(x)
        return tfcore.add([y, shortcut])


class ResidualNet(tf.Module):
    """block_1 (-> 64, projection), block_2 (64, identity), block_3 (-> 128, strided).

    Args:
        filters: widths of the first two blocks and of the third. Default (64, 128).
        num_classes: softmax size. Default 10.
        name: module name.
    """

    def __init__(self, filters=(64, 128), num_classes: int = 10,
                 name: Optional[str] = "residual_net"):
        super().__init__(name=name)
        self.block_1 = ResidualBlock(filters[0], name="block_1")
        self.block_2 = ResidualBlock(filters[0], name="block_2")
        self.block_3 = ResidualBlock(filters[1], downsample=True, name="block_3")
        self.pool = tfcore.GlobalAveragePool2D(name="pool")
        self.classifier = tfcore.Dense(num_classes, activation="softmax", name="classifier")

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        """images [b, h, w, c] -> probabilities [b, num_classes]."""
        x = self.block_3(self.block_2(self.block_1(x)))
        return self.classifier(self.pool(x))


def make_train_step(model: ResidualNet, optimizer,
                    loss: Callable = losses.categorical_crossentropy) -> Callable:
    """The UN-compiled train step `step_fn(batch, seed) -> {'loss': CE}` on `batch =
    (images [b, h, w, c], one-hot labels [b, num_classes])`: one optimizer step on
    `loss(targets, predictions)` (default: the categorical cross-entropy of the softmax
    outputs), `models.functional.make_classifier_train_step`. Build the model first.
    """
    return make_classifier_train_step(model, optimizer, loss)
