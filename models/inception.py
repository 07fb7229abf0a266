"""An Inception module (Szegedy et al. 2015), as in the textbook's functional chapter.

Four parallel branches on x [b, h, w, c], concatenated on channels:

    a: Conv2D(128, 1, strides=2, relu)
    b: Conv2D(128, 1, relu) -> Conv2D(128, 3, strides=2, relu)
    c: AvgPool2D(3, strides=2) -> Conv2D(128, 3, relu)
    d: Conv2D(128, 1, relu) -> Conv2D(128, 3, relu) -> Conv2D(128, 3, strides=2, relu)
    y = concatenate([a, b, c, d])            # [b, ceil(h/2), ceil(w/2), 4 * 128]

Every conv and the pool use 'same' padding so the four branch outputs have the same
spatial size (the textbook's listing leaves padding at 'valid', where they differ and
the concatenation fails).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

import tfcore


class InceptionModule(tf.Module):
    """Four branches (1x1; 1x1-3x3; avgpool-3x3; 1x1-3x3-3x3), stride 2, concatenated.

    Args:
        filters: width of every conv. Default 128.
        strides: the downsampling stride of each branch. Default 2.
        name: module name.
    """

    def __init__(self, filters: int = 128, strides: int = 2,
                 name: Optional[str] = "inception"):
        super().__init__(name=name)

        def conv(k, s, n):
            return tfcore.Conv2D(filters, k, strides=s, padding="same", activation="relu",
                                 name=n)

        self.branch_a = conv(1, strides, "branch_a")
        self.branch_b_1 = conv(1, 1, "branch_b_1")
        self.branch_b_2 = conv(3, strides, "branch_b_2")
        self.branch_c_pool = tfcore.AvgPool2D(3, strides=strides, padding="same",
                                              name="branch_c_pool")
        self.branch_c_conv = conv(3, 1, "branch_c_conv")
        self.branch_d_1 = conv(1, 1, "branch_d_1")
        self.branch_d_2 = conv(3, 1, "branch_d_2")
        self.branch_d_3 = conv(3, strides, "branch_d_3")

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        """x [b, h, w, c] -> [b, ceil(h/s), ceil(w/s), 4 * filters]."""
        a = self.branch_a(x)
        b = self.branch_b_2(self.branch_b_1(x))
        c = self.branch_c_conv(self.branch_c_pool(x))
        d = self.branch_d_3(self.branch_d_2(self.branch_d_1(x)))
        return tfcore.concatenate([a, b, c, d], axis=-1)
