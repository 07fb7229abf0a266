"""The chapter's depthwise-separable convnet (images 64x64x3, 10 classes).

    SeparableConv2D(32, 3, relu)  -> SeparableConv2D(64, 3, relu)  -> MaxPool2D(2)
    SeparableConv2D(64, 3, relu)  -> SeparableConv2D(128, 3, relu) -> MaxPool2D(2)
    SeparableConv2D(64, 3, relu)  -> SeparableConv2D(128, 3, relu)
    GlobalAveragePool2D -> Dense(32, relu) -> Dense(10, softmax)

Shapes ('valid' padding): 64 -> 62 -> 60 -> 30 -> 28 -> 26 -> 13 -> 11 -> 9 -> [b, 128]
-> [b, 10]. Parameters: 155, 2,400, 4,736, 8,896, 9,408, 8,896, 4,128, 330 = 38,949.
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

import tfcore
from models.functional import make_classifier_train_step
from tfcore import losses


class SeparableConvNet(tf.Module):
    """Six SeparableConv2D layers, two max-pools, global average pooling, two Dense.

    Args:
        num_classes: softmax size. Default 10.
        name: module name.
    """

    def __init__(self, num_classes: int = 10, name: Optional[str] = "separable_convnet"):
        super().__init__(name=name)

        def sep(f, i):
            return tfcore.SeparableConv2D(f, 3, activation="relu", name=f"separable_conv2d_{i}")

        self.separable_conv2d_1 = sep(32, 1)
        self.separable_conv2d_2 = sep(64, 2)
        self.max_pool_1 = tfcore.MaxPool2D(2, name="max_pool_1")
        self.separable_conv2d_3 = sep(64, 3)
        self.separable_conv2d_4 = sep(128, 4)
        self.max_pool_2 = tfcore.MaxPool2D(2, name="max_pool_2")
        self.separable_conv2d_5 = sep(64, 5)
        self.separable_conv2d_6 = sep(128, 6)
        self.global_pool = tfcore.GlobalAveragePool2D(name="global_pool")
        self.dense_1 = tfcore.Dense(32, activation="relu", name="dense_1")
        self.dense_2 = tfcore.Dense(num_classes, activation="softmax", name="dense_2")

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        """images [b, 64, 64, 3] -> probabilities [b, num_classes]."""
        x = self.separable_conv2d_2(self.separable_conv2d_1(x))
        x = self.max_pool_1(x)
        x = self.separable_conv2d_4(self.separable_conv2d_3(x))
        x = self.max_pool_2(x)
        x = self.separable_conv2d_6(self.separable_conv2d_5(x))
        return self.dense_2(self.dense_1(self.global_pool(x)))


def make_train_step(model: SeparableConvNet, optimizer,
                    loss: Callable = losses.categorical_crossentropy) -> Callable:
    """The UN-compiled train step `step_fn(batch, seed) -> {'loss': CE}` on `batch =
    (images [b, 64, 64, 3], one-hot labels [b, num_classes])`: one optimizer step on
    `loss(targets, predictions)` (default: the categorical cross-entropy of the softmax
    outputs), `models.functional.make_classifier_train_step`. Build the model first.
    """
    return make_classifier_train_step(model, optimizer, loss)
