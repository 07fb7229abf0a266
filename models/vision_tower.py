"""A model used as a layer: one vision tower applied to a left and a right image.

The textbook applies one Xception base (shared weights) to two cameras' images and
concatenates the features. Here the tower is a small tfcore conv net, itself a model:

    VisionTower: Conv2D(32, 3, relu) -> MaxPool2D(2) -> Conv2D(64, 3, relu)
                 -> MaxPool2D(2) -> Conv2D(64, 3, relu) -> GlobalAveragePool2D   # [b, 64]
    TwoCameraModel: concatenate([tower(left), tower(right)])                    # [b, 128]

Inputs: `[left, right]` or `{'left': ..., 'right': ...}` images [b, h, w, c]
(h, w >= 18). One set of tower weights serves both images.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

import tfcore
from models.functional import named_inputs

INPUT_NAMES = ("left", "right")


class VisionTower(tf.Module):
    """A small convolutional feature extractor: images [b, h, w, c] -> [b, filters[-1]].

    Args:
        filters: widths of the three 3x3 relu convs. Default (32, 64, 64).
        name: module name.
    """

    def __init__(self, filters: Sequence[int] = (32, 64, 64),
                 name: Optional[str] = "vision_tower"):
        super().__init__(name=name)
        self.conv_1 = tfcore.Conv2D(filters[0], 3, activation="relu", name="conv_1")
        self.pool_1 = tfcore.MaxPool2D(2, name="pool_1")
        self.conv_2 = tfcore.Conv2D(filters[1], 3, activation="relu", name="conv_2")
        self.pool_2 = tfcore.MaxPool2D(2, name="pool_2")
        self.conv_3 = tfcore.Conv2D(filters[2], 3, activation="relu", name="conv_3")
        self.global_pool = tfcore.GlobalAveragePool2D(name="global_pool")

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        x = self.pool_1(self.conv_1(x))
        x = self.pool_2(self.conv_2(x))
        return self.global_pool(self.conv_3(x))


class TwoCameraModel(tf.Module):
    """One `VisionTower` on both images, features concatenated: -> [b, 2 * features].

    Args:
        tower: the shared tower; default a new `VisionTower()`.
        name: module name.
    """

    def __init__(self, tower: Optional[tf.Module] = None,
                 name: Optional[str] = "two_camera"):
        super().__init__(name=name)
        self.tower = tower if tower is not None else VisionTower()

    def __call__(self, inputs, training: bool = False) -> tf.Tensor:
        """[left, right] (or a dict) images -> merged features [b, 2 * features]."""
        left, right = named_inputs(inputs, INPUT_NAMES, "TwoCameraModel")
        return tfcore.concatenate([self.tower(left, training=training),
                                   self.tower(right, training=training)], axis=-1)
