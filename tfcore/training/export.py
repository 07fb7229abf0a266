"""SavedModel export with a serving signature, loadable without tfcore.

`export_saved_model(model, directory, input_spec)` saves a `tf.Module` holding the
model's variables and a `serve` `tf.function` (inference mode,
`model(x, training=False)` unless you give `fn`), registered as the
`serving_default` signature: named input (the spec's name, e.g. `images`) -> a dict of
named outputs (`outputs`, or the keys of the dict `fn` returns, e.g.
`probabilities`, `reconstructions`, `samples`).

Reload anywhere TensorFlow is installed, no tfcore import needed:

    m = tf.saved_model.load(path)
    out = m.signatures["serving_default"](images=x)["outputs"]   # or m.serve(x)

The directory is written under a temporary name and renamed into place, so a
crash during export never leaves a half-written `directory`.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, Mapping, Optional

import tensorflow as tf


def export_saved_model(model: tf.Module, directory: str, input_spec: tf.TensorSpec,
                       fn: Optional[Callable] = None, output_name: str = "outputs",
                       signature_name: str = "serving_default") -> str:
    """Exports `model` as a SavedModel with one serving signature.

    Args:
      model: a built `tf.Module` (its variables are saved).
      directory: the SavedModel directory (replaced if it exists).
      input_spec: e.g. `tf.TensorSpec([None, 28, 28, 1], tf.float32, name='images')`;
        its name is the signature's input key (default 'input' when unnamed).
      fn: `fn(x) -> tensor or {name: tensor}`; default `model(x, training=False)`.
        Traced without AutoGraph (no Python `if`/`while` on tensors).
      output_name: the output key when `fn` returns a single tensor.
      signature_name: the signature key (default 'serving_default').

    Returns:
      `directory`.

    Raises:
      ValueError: `model` is not a tf.Module, or `input_spec` not a tf.TensorSpec.
    """
    if not isinstance(model, tf.Module):
        raise ValueError(f"model must be a tf.Module, got {type(model).__name__}")
    if not isinstance(input_spec, tf.TensorSpec):
        raise ValueError(f"input_spec must be a tf.TensorSpec, got {input_spec!r}")
    if input_spec.name is None:
        input_spec = tf.TensorSpec(input_spec.shape, input_spec.dtype, name="input")
    call = fn if fn is not None else (lambda x: model(x, training=False))

    wrapper = tf.Module()
    wrapper.model = model

    # Traced without AutoGraph, like the loop's steps: tfcore's layers branch on
    # Python values only, and AutoGraph's conversion cache once handed the DCGAN
    # export (after a 17,803-step run in the same process) a converted `build` for
    # `Generator.call`. An `fn` that branches on tensors must use tf.cond / tf.while_loop.
    @tf.function(input_signature=[input_spec], autograph=False)
    def serve(x):
        out = call(x)
        if isinstance(out, Mapping):
            return {str(k): tf.convert_to_tensor(v) for k, v in out.items()}
        return {output_name: tf.convert_to_tensor(out)}

    wrapper.serve = serve
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{directory}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    tf.saved_model.save(wrapper, tmp, signatures={signature_name: serve})
    if os.path.exists(directory):
        old = f"{directory}.old-{os.getpid()}"
        os.rename(directory, old)
        os.rename(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, directory)
    return directory
