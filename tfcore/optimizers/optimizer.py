"""Base class of the tfcore optimizers: Keras 3's `apply_gradients` on a `tf.Module`.

State (all non-trainable `tf.Variable`s, tracked for `tf.train.Checkpoint`):

* `iterations`: int64 scalar, the number of applied steps (Keras's "iteration").
* `learning_rate`: float32 scalar. Change it with `opt.learning_rate.assign(x)` (or
  `opt.learning_rate = x`, which assigns); a compiled step reads the variable, so the
  new rate takes effect without retracing.
* slot variables, one set per model variable, zeros of its shape and dtype, named
  like Keras 3's `"{variable path with '/' -> '_'}_{slot}"` (e.g.
  `"dense_kernel_momentum"`; the `":0"` suffix of a `tf.Variable` name is dropped).

Fused kernels (`fused=True`, the default): Adam, Adadelta and SGD update each variable
with TensorFlow's own training op (`ResourceApplyAdam`, `ResourceApplyAdadelta`,
`ResourceApplyGradientDescent`, `ResourceApplyKerasMomentum`), which computes the same
formula as the pure update function in one multithreaded pass over the variable and
its slots instead of ~10 separate element-wise ops (docs/decisions.md, "Fused
optimizer kernels"). XLA has kernels for them too. Mirrored
(`tf.distribute`) variables always take the unfused path, whose replica-context
`assign` keeps their copies in sync. `fused=False` gives the plain ops everywhere.

`opt.variables` lists them in Keras 3's order (`iteration`, `learning_rate`, then
the slots of each model variable in turn), so a Keras optimizer's state copies 1:1:
`for a, b in zip(opt.variables, keras_opt.variables): a.assign(b)`.

Building: call `opt.build(model.trainable_variables)` eagerly before compiling a
step or restoring a checkpoint. Otherwise the first `apply_gradients` builds it from
the variables it is given; the slots are then created under `tf.init_scope()`, i.e.
eagerly even inside a `tf.function` trace (also with `jit_compile=True`), which works
because model variables have static shapes. Later calls must pass only variables the
optimizer was built with (others raise `ValueError`, as Keras).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfcore import checks

Number = Union[float, tf.Tensor]  # a hyperparameter given to the pure update functions


def slot_name(variable: tf.Variable, slot: str) -> str:
    """Keras 3's slot name: 'dense/kernel:0' + 'momentum' -> 'dense_kernel_momentum'."""
    name = variable.name
    if name.endswith(":0"):
        name = name[:-2]
    return f"{name.replace('/', '_').replace(':', '_')}_{slot}"


def clip_by_norm(grad: tf.Tensor, clipnorm: float) -> tf.Tensor:
    """Keras's per-tensor clip: `g * clipnorm / max(||g||_2, clipnorm)` (NaN-safe)."""
    l2sum = tf.reduce_sum(tf.math.square(grad), keepdims=True)
    pred = l2sum > 0
    l2sum_safe = tf.where(pred, l2sum, tf.ones_like(l2sum))
    l2norm = tf.where(pred, tf.math.sqrt(l2sum_safe), l2sum)
    return grad * clipnorm / tf.math.maximum(l2norm, clipnorm)


def clip_by_global_norm(grads: Sequence[tf.Tensor], clipnorm: float) -> List[tf.Tensor]:
    """Keras's global clip: scale all by `clipnorm * min(1/||g||, 1/clipnorm)`.

    `||g||` is the global L2 norm of all the gradients; a non-finite norm gives NaN.
    """
    norm = tf.math.sqrt(tf.add_n([tf.reduce_sum(tf.math.square(g)) for g in grads]))
    scale = clipnorm * tf.math.minimum(1.0 / norm, 1.0 / clipnorm)
    scale = scale + (norm - norm)
    return [g * tf.cast(scale, g.dtype) for g in grads]


class Optimizer(tf.Module):
    """Shared machinery; subclasses implement `build_slots` and `update_step`.

    Args:
      learning_rate: initial learning rate, a float >= 0.
      clipnorm: if set (> 0), each gradient is clipped to this L2 norm (Keras).
      global_clipnorm: if set (> 0), all gradients are scaled so their global L2
        norm is at most this (Keras). At most one of the two.
      name: the module name (Keras's default: the lower-case class name).
      fused: update with TensorFlow's fused training op where the subclass has one
        (default True; see the module docstring).
    """

    def __init__(self, learning_rate: float, clipnorm: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None,
                 fused: bool = True):
        super().__init__(name=name or type(self).__name__.lower())
        lr = checks.check_real(learning_rate, "learning_rate", low=0)
        self.fused = checks.check_bool(fused, "fused")
        if clipnorm is not None:
            clipnorm = checks.check_real(clipnorm, "clipnorm", low=0, low_open=True)
        if global_clipnorm is not None:
            global_clipnorm = checks.check_real(global_clipnorm, "global_clipnorm", low=0,
                                                low_open=True)
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError(f"only one of clipnorm and global_clipnorm can be set, got "
                             f"clipnorm={clipnorm!r}, global_clipnorm={global_clipnorm!r}")
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        with tf.init_scope(), tf.name_scope(self.name):
            self._iterations = tf.Variable(0, dtype=tf.int64, name="iteration",
                                           trainable=False)
            self._learning_rate = tf.Variable(lr, dtype=tf.float32,
                                              name="learning_rate", trainable=False)
        self.built = False
        self._var_index = {}
        self._optimizer_variables = []

    # -- state ---------------------------------------------------------------------
    @property
    def iterations(self) -> tf.Variable:
        """int64 variable: the number of `apply_gradients` calls so far."""
        return self._iterations

    @property
    def learning_rate(self) -> tf.Variable:
        """float32 variable holding the learning rate."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        self._learning_rate.assign(value)

    @property
    def variables(self) -> Tuple[tf.Variable, ...]:
        """`iteration`, `learning_rate`, then the slots in Keras 3's order."""
        return (self._iterations, self._learning_rate, *self._optimizer_variables)

    # -- building ------------------------------------------------------------------
    def build(self, variables: Iterable[tf.Variable]) -> None:
        """Creates the slot variables for `variables` (once; later calls no-op)."""
        if self.built:
            return
        variables = list(variables)
        for v in variables:
            if v.shape.num_elements() is None:
                raise ValueError(f"{type(self).__name__}: variable {v.name!r} needs a "
                                 f"static shape to build slots, got {v.shape}")
        with tf.init_scope(), tf.name_scope(self.name):
            self._var_index = {v.ref(): i for i, v in enumerate(variables)}
            self.build_slots(variables)
        self.built = True

    def build_slots(self, variables: List[tf.Variable]) -> None:
        """Subclasses: create their slots with `add_slots` (default: none)."""

    def add_slots(self, variables: Sequence[tf.Variable], names: Sequence[str]
                  ) -> Tuple[List[tf.Variable], ...]:
        """Zeros like each variable for each slot name; one list per name.

        Created interleaved (for each variable, each slot) as Keras 3 does, so
        `self.variables` lists them in Keras's order.
        """
        lists = tuple([] for _ in names)
        with tf.init_scope():
            for v in variables:
                for i, slot in enumerate(names):
                    s = tf.Variable(tf.zeros(v.shape, v.dtype), name=slot_name(v, slot),
                                    trainable=False)
                    lists[i].append(s)
                    self._optimizer_variables.append(s)
        return lists

    def _index(self, variable: tf.Variable) -> int:
        return self._var_index[variable.ref()]

    # -- applying --------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Iterable[Tuple[Optional[tf.Tensor],
                                                             tf.Variable]]
                        ) -> tf.Variable:
        """Applies one update step, as `keras.optimizers.Optimizer.apply_gradients`.

        Pairs whose gradient is None are skipped (their variables still count for
        `build`). `tf.IndexedSlices` gradients (from `tf.gather` / embeddings) are
        converted to dense tensors (duplicate indices summed), which gives the same
        update as Keras. Clipping (`clipnorm` / `global_clipnorm`) is applied to the
        non-None gradients, then each variable is updated with `update_step`, then
        `iterations` is incremented. Works eagerly, in `tf.function` and with
        `jit_compile=True`.

        Args:
          grads_and_vars: an iterable of `(gradient, variable)` pairs, e.g.
            `zip(grads, model.trainable_variables)`.

        Returns:
          The `iterations` variable.
        """
        pairs = list(grads_and_vars)
        if not self.built:
            self.build([v for _, v in pairs])
        for _, v in pairs:
            if v.ref() not in self._var_index:
                raise ValueError(f"Unknown variable {v.name!r}: this optimizer can only "
                                 f"update the variables it was built with; create a new "
                                 f"optimizer for new variables")
        pairs = [(g, v) for g, v in pairs if g is not None]
        if not pairs:
            raise ValueError("No gradients provided for any variable (all are None)")
        # tf.IndexedSlices -> dense (unsorted_segment_sum of the slices).
        grads = [tf.convert_to_tensor(g) for g, _ in pairs]
        variables = [v for _, v in pairs]
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables)]
        if self.clipnorm is not None:
            grads = [clip_by_norm(g, self.clipnorm) for g in grads]
        elif self.global_clipnorm is not None:
            grads = clip_by_global_norm(grads, self.global_clipnorm)
        with tf.name_scope(self.name):
            for g, v in zip(grads, variables):
                lr = tf.cast(self._learning_rate, v.dtype)
                self.update_step(g, v, lr)
            self._iterations.assign_add(1)
        return self._iterations

    def update_step(self, gradient: tf.Tensor, variable: tf.Variable,
                    learning_rate: tf.Tensor) -> None:
        """Subclasses: update `variable` (and its slots) from a dense gradient."""
        raise NotImplementedError

    def use_fused(self, variable: tf.Variable) -> bool:
        """Whether `variable` is updated with the fused training op: `fused` is on and
        the variable is a plain (not mirrored) resource variable."""
        return (self.fused and not isinstance(variable, tf.distribute.DistributedValues)
                and hasattr(variable, "handle"))

    def local_step(self, dtype) -> tf.Tensor:
        """`iterations + 1` cast to `dtype`: the 1-based step being applied."""
        return tf.cast(self._iterations + 1, dtype)

    def get_config(self) -> dict:
        """The constructor arguments (learning rate: its current value)."""
        return {"name": self.name, "learning_rate": float(self._learning_rate.numpy()),
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "fused": self.fused}
