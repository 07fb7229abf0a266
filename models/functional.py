"""What the functional-API chapter's models share: input structures and the train step.

* `named_inputs`: a tensor, a list/tuple or a dict of inputs -> the tuple of a model's
  named inputs (qa, multi_output, siamese_lstm, vision_tower).
* `make_classifier_train_step(model, optimizer, loss)`: the one train step of the
  models trained on (inputs, targets) with one loss (separable_convnet, residual, qa,
  siamese_lstm, multi_output: each module's `make_train_step` is this step with its
  loss).

The models themselves, their example inputs and bench settings are listed in
`models.registry`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import tensorflow as tf


def named_inputs(inputs: Any, names: Sequence[str], what: str) -> Tuple["tf.Tensor", ...]:
    """A tensor, a list/tuple in `names` order, or a dict keyed by `names` -> a tuple.

    Args:
        inputs: the model's inputs.
        names: the input names, in positional order.
        what: the model's name, for error messages.

    Returns:
        The inputs as a tuple ordered like `names`.
    """
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        extra = [k for k in inputs if k not in names]
        if missing or extra:
            raise ValueError(f"{what}: inputs dict must have exactly the keys {list(names)}, "
                             f"got {sorted(inputs)}")
        return tuple(inputs[n] for n in names)
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != len(names):
            raise ValueError(f"{what}: expected {len(names)} inputs {list(names)}, "
                             f"got {len(inputs)}")
        return tuple(inputs)
    if len(names) == 1:
        return (inputs,)
    raise ValueError(f"{what}: expected a list or dict of inputs {list(names)}, "
                     f"got {type(inputs).__name__}")


# The models whose train step ran faster under XLA than in graph mode on the project's
# CPU (`python -m bench.run`, README): the LSTMs' recurrence is a while loop of small
# ops, which XLA compiles into one kernel. Not multi_output: its compiled multi-step
# loop under XLA is a trap (docs/decisions.md, "Compile mode per device"). `--jit=auto`
# takes XLA for these on CPU (`tfcore.training.compile.resolve_jit(cpu_xla=...)`).
CPU_XLA_MODELS = ("qa", "siamese_lstm")


def make_classifier_train_step(model: Callable, optimizer, loss: Callable) -> Callable:
    """One optimizer step on a batch `(inputs, targets)`, UN-compiled (the loop compiles
    it): `step_fn(batch, seed) -> {'loss': scalar, ...}`.

        predictions = model(inputs, training=True)
        loss = loss(targets, predictions)               (a batch mean)
        optimizer.apply_gradients(d loss / d model.trainable_variables)

    Args:
      model: a BUILT model (its variables exist: call it on an example first).
      optimizer: a `tfcore.optimizers` optimizer (built on the model's variables).
      loss: `loss(targets, predictions)` -> a scalar, or `(scalar, {name: scalar})`
        whose parts are logged too, as '<name>_loss' (multi_output's three heads).

    Returns:
      `step_fn(batch, seed)`; `seed` is unused (these steps draw nothing random), and
      the logs are {'loss': the scalar the gradient is taken of} (+ the parts).
    """

    def step_fn(batch, seed=None):
        del seed
        inputs, targets = batch
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            value = loss(targets, model(inputs, training=True))
        total, parts = value if isinstance(value, tuple) else (value, {})
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return {"loss": total, **{f"{k}_loss": v for k, v in parts.items()}}

    # No Python control flow on tensors: traced without AutoGraph's conversion.
    return tf.autograph.experimental.do_not_convert(step_fn)
