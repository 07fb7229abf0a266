"""TiedDense: y = activation(x @ transpose(tied_to.kernel) + bias).

The decoder half of a tied-weight autoencoder: it reuses the kernel of another
`Dense` (`tied_to`, kernel [in, units]) transposed, so the pair shares ONE kernel
variable, and owns only its bias. Gradients reach the shared kernel from both uses
(the encoder's `x @ kernel` and this layer's `h @ kernel^T`), summed.

Shapes: x [..., tied_to.units] -> y [..., in], where `in` is the input dimension of
`tied_to`. Variables: `bias` [in] (zeros) when `use_bias`. `tied_to` must be built
(called once) before this layer is; the shared kernel is NOT among this layer's
`variables` (it belongs to `tied_to`), so a model holding both counts it once.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import tensorflow as tf

from tfcore import activations, initializers
from tfcore.dense import Dense
from tfcore.layer import add_bias, Layer


class TiedDense(Layer):
    """A Dense layer whose kernel is the transpose of another Dense's kernel.

    Args:
      tied_to: the `tfcore.Dense` whose `kernel` [in, units] is used transposed.
      activation: None (linear, default), a name from `tfcore.activations` or a
        callable.
      use_bias: add this layer's own `bias` [in] (default True).
      bias_initializer: default 'zeros'.
      name: module name.

    Raises:
      ValueError: `tied_to` is not a `tfcore.Dense`; at build, `tied_to` is not
        built or the input's last dimension is not `tied_to.units`.
    """

    # The tied layer is held outside tf.Module's variable walk: `variables` lists
    # only this layer's own bias (checkpoints still reach the kernel via tied_to).
    _TF_MODULE_IGNORED_PROPERTIES = Layer._TF_MODULE_IGNORED_PROPERTIES | {"tied_to"}

    def __init__(self, tied_to: Dense, activation: Union[None, str, Callable] = None,
                 use_bias: bool = True, bias_initializer="zeros",
                 name: Optional[str] = None):
        super().__init__(name=name)
        if not isinstance(tied_to, Dense):
            raise ValueError(f"TiedDense tied_to must be a tfcore.Dense, got {tied_to!r}")
        self.tied_to = tied_to
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = initializers.get(bias_initializer)

    @property
    def kernel(self) -> tf.Tensor:
        """The effective kernel [units, in]: `transpose(tied_to.kernel)` (a tensor)."""
        return tf.transpose(self.tied_to.kernel)

    @property
    def units(self) -> int:
        """Output size: the input dimension of `tied_to`."""
        return int(self.tied_to.kernel.shape[0])

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates `bias` [in]; checks the input matches `tied_to.units`."""
        if not getattr(self.tied_to, "built", False):
            raise ValueError(f"TiedDense '{self.name}': the tied Dense "
                             f"'{self.tied_to.name}' must be built (called once) first")
        self._require_dims(input_shape, [-1], "input feature dimension")
        if int(input_shape[-1]) != self.tied_to.units:
            raise ValueError(f"TiedDense '{self.name}': input feature dimension must be "
                             f"tied_to.units={self.tied_to.units}, got shape "
                             f"{tf.TensorShape(input_shape)}")
        if self.use_bias:
            self.bias = self.add_weight("bias", [self.units], self.bias_initializer)

    def call(self, x: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """x [..., units_of_tied_to] -> [..., in]."""
        kernel = self.tied_to.kernel
        if x.shape.rank == 2:
            y = tf.linalg.matmul(x, kernel, transpose_b=True)
        else:
            y = tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [1]])
        if self.use_bias:
            y = add_bias(y, self.bias)
        return self.activation(y)
