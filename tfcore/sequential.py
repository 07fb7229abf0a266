"""Sequential: y = layers[n-1](... layers[1](layers[0](x)) ...).

Each child that is a `tfcore.Layer` is called as
`child(h, training=training, seed=fold_seed(seed, i)[, update_stats=update_stats])`:
* `training` is passed to every child;
* `seed`: when a stateless seed is given, child i gets its own seed
  `tfcore.layer.fold_seed(seed, i)` (i = its index in `layers`), so two dropout layers
  never share a mask while the whole stack replays exactly for the same seed; with
  `seed=None` every child gets None (stochastic children use their own generators);
* `update_stats` is forwarded only to the children whose `call` declares it
  (`tfcore.layer.call_accepts`: BatchNorm, nested Sequentials, models that take it).
Other callables (e.g. `tf.nn.relu`, an activation function) are called as `f(h)`.
Shapes: those of the children. Variables: the children's (tracked through `layers`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import tensorflow as tf

from tfcore.layer import Layer, call_accepts, fold_seed
from tfcore.secant import secant


class Sequential(Layer):
    """A stack of layers called in order (Keras 3 `Sequential`, without `add`).

    Args:
      layers: a sequence of `tfcore.Layer`s or plain callables `f(x) -> y`.
      name: module name.

    Call: `model(x, training=False, seed=None, update_stats=True)`.
    """

    def __init__(self, layers: Sequence[Callable], name: Optional[str] = None):
        super().__init__(name=name)
        if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple)):
            raise ValueError(f"Sequential layers must be a list or tuple of layers, "
                             f"got {layers!r}")
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise ValueError(f"Sequential layers[{i}] must be a Layer or a callable, "
                                 f"got {layer!r}")
        self.layers = list(layers)

    def call(self, x: tf.Tensor, training: bool = False, seed=None,
             update_stats: bool = True) -> tf.Tensor:
        """Runs the children in order (see the module docstring for the arguments)."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Layer):
                kwargs = {"update_stats": update_stats} if call_accepts(
                    layer, "update_stats") else {}
                x = layer(x, training=training, seed=fold_seed(seed, i), **kwargs)
            else:
                x = layer(x)
        return x

    def secant(self, x: tf.Tensor, dx: tf.Tensor, training: bool = False, seed=None,
               update_stats: bool = True):
        """(y, dy), dy = self(x + dx) - self(x), propagated child by child
        (`tfcore.secant`), each child with the seed and keywords `call` gives it."""
        self.ensure_built(x)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Layer):
                kwargs = {"update_stats": update_stats} if call_accepts(
                    layer, "update_stats") else {}
                x, dx = layer.secant(x, dx, training=training, seed=fold_seed(seed, i),
                                     **kwargs)
            else:
                x, dx = secant(layer, x, dx)
        return x, dx
