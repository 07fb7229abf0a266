"""ConvBase: the arguments every convolution layer shares, checked in one place.

`Conv1D`, `Conv2D`, `Conv2DTranspose`, `DepthwiseConv2D` and `SeparableConv2D` take
Keras's `kernel_size`, `strides`, `padding`, `dilation_rate`, `activation`,
`use_bias` and `bias_initializer`; `ConvBase.__init__` normalises them (ints to
tuples of the layer's rank, padding lower-cased) and rejects bad values and the
combination no layer supports (strides > 1 with dilation_rate > 1), with a message
that names the layer and quotes the values. Each layer then checks only what is its
own (filters, depth multiplier, output padding, algorithm, ...).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from tfcore import activations, checks, initializers
from tfcore.layer import Layer, normalize_tuple


class ConvBase(Layer):
    """A convolution layer's shared arguments (see the module docstring).

    Args:
      rank: the spatial rank (1 or 2).
      kernel_size, strides, dilation_rate: an int or `rank` positive ints.
      padding: one of `paddings` (any case).
      activation: a name or callable (`tfcore.activations.get`).
      use_bias: whether the layer has a `bias`.
      bias_initializer: `tfcore.initializers.get`'s argument.
      paddings: the paddings the layer supports (default 'valid', 'same').
      name: the layer's name.
    """

    def __init__(self, rank: int, kernel_size, strides=1, padding: str = "valid",
                 dilation_rate=1, activation: Union[None, str, Callable] = None,
                 use_bias: bool = True, bias_initializer="zeros",
                 paddings: Sequence[str] = ("valid", "same"), name: Optional[str] = None):
        super().__init__(name=name)
        what = type(self).__name__
        self.kernel_size = normalize_tuple(kernel_size, rank, f"{what} kernel_size")
        self.strides = normalize_tuple(strides, rank, f"{what} strides")
        self.dilation_rate = normalize_tuple(dilation_rate, rank, f"{what} dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise checks.ArgumentError(
                f"{what}: strides > 1 is not supported with dilation_rate > 1, got "
                f"strides={strides!r} and dilation_rate={dilation_rate!r}")
        self.padding = str(padding).lower()
        if self.padding not in paddings:  # the message quotes the value as given
            checks.check_choice(padding, f"{what} padding", paddings)
        self.activation = activations.get(activation)
        self.use_bias = checks.check_bool(use_bias, f"{what} use_bias")
        self.bias_initializer = initializers.get(bias_initializer)
