"""summary(model, inputs): a Keras-style table of a model's submodules.

One row per direct submodule (a `tf.Module` held in an attribute, or in a list,
tuple or dict attribute), in the order the model first calls them: name, type,
output shape (batch axis shown as None) and parameter count (the scalars in its
variables, trainable or not, shared variables counted once), then the totals over
the model's unique variables: the same numbers as Keras's `model.summary()` and
`count_params()` for the same architecture. A submodule called twice (shared
weights) is one row, its output shape marked `x2`; one never called shows '?'.
With `expand_nested=True` the rows of submodules that themselves hold modules are
followed by their own rows, indented.

The output shapes come from running the model once, eagerly, on the given example
(or on zeros of the given shapes), which also builds its variables.

Note: `tfcore.summary` is this function (the package re-exports it over the module's
name); `from tfcore.summary import count_params` still reaches the module.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf

from tfcore.layer import unique_variables

_MISSING = object()


def _children(module: tf.Module) -> List[tf.Module]:
    """Direct submodules, through list/tuple/dict attributes, in attribute order."""
    out, seen = [], set()

    def walk(value):
        if isinstance(value, tf.Module):
            if id(value) not in seen and value is not module:
                seen.add(id(value))
                out.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for key, value in vars(module).items():
        if key.startswith("_") and key not in ("_layers", "_modules"):
            continue
        walk(value)
    return out


def _count(variables) -> int:
    return int(sum(v.shape.num_elements() for v in unique_variables(variables)))


def _is_shape(x) -> bool:
    if isinstance(x, tf.TensorShape):
        return True
    return (isinstance(x, (list, tuple)) and len(x) > 0
            and all(d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool))
                    for d in x))


def example_inputs(spec):
    """Shapes / TensorSpecs / arrays / tensors (nested in lists or dicts) -> tensors.

    A shape is a tuple of ints and Nones (None becomes 1); it gives float32 zeros,
    which are also valid token ids for an `Embedding` (it casts to int32).
    """
    if isinstance(spec, tf.TensorSpec):
        shape = [1 if d is None else d for d in spec.shape.as_list()]
        return tf.zeros(shape, spec.dtype)
    if _is_shape(spec):
        dims = tf.TensorShape(spec).as_list()
        return tf.zeros([1 if d is None else d for d in dims], tf.float32)
    if isinstance(spec, dict):
        return {k: example_inputs(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return type(spec)(example_inputs(v) for v in spec)
    return tf.convert_to_tensor(spec)


def _format_shape(out) -> str:
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_format_shape(v)}" for k, v in out.items()) + "}"
    if isinstance(out, (list, tuple)):
        return "[" + ", ".join(_format_shape(v) for v in out) + "]"
    if isinstance(out, (tf.Tensor, tf.Variable, np.ndarray)):
        dims = list(out.shape)
        if dims:
            dims[0] = None
        return "(" + ", ".join("None" if d is None else str(int(d)) for d in dims) + \
            ("," if len(dims) == 1 else "") + ")"
    return type(out).__name__


@contextlib.contextmanager
def _recording(modules: List[tf.Module], record: Dict[int, list], order: List[int]):
    """Temporarily wraps the __call__ of the modules' classes to log outputs."""
    tracked = {id(m) for m in modules}
    active = set()
    saved = []
    for cls in {type(m) for m in modules}:
        orig = cls.__call__
        saved.append((cls, cls.__dict__.get("__call__", _MISSING)))

        def wrapper(self, *args, _orig=orig, **kwargs):
            key = id(self)
            if key not in tracked or key in active:
                return _orig(self, *args, **kwargs)
            active.add(key)
            try:
                out = _orig(self, *args, **kwargs)
            finally:
                active.discard(key)
            if key not in record:
                order.append(key)
            record.setdefault(key, []).append(out)
            return out

        cls.__call__ = wrapper
    try:
        yield
    finally:
        for cls, value in reversed(saved):
            if value is _MISSING:
                delattr(cls, "__call__")
            else:
                cls.__call__ = value


def _submodules(model: tf.Module, expand_nested: bool) -> List[tuple]:
    """(depth, module) of the model's submodules (all levels with expand_nested)."""
    rows = []

    def walk(m, depth):
        for c in _children(m):
            rows.append((depth, c))
            if expand_nested:
                walk(c, depth + 1)

    walk(model, 0)
    return rows


def _run_recorded(model, x, training, expand_nested):
    """Calls the model once (twice if the call created submodules, built lazily),
    recording each submodule's outputs: (rows, record, order, output)."""
    for _ in range(2):
        rows = _submodules(model, expand_nested)
        record: Dict[int, list] = {}
        order: List[int] = []
        with _recording([m for _, m in rows], record, order):
            y = model(x, training=training)
        if len(_submodules(model, expand_nested)) == len(rows):
            break
    return rows, record, order, y


def _in_call_order(model, rows, order, expand_nested) -> List[tuple]:
    """The rows in call order per nesting level, uncalled modules last (stable)."""
    rank = {k: i for i, k in enumerate(order)}
    ordered: List[tuple] = []

    def emit(m, depth):
        kids = [c for d, c in rows if d == depth and c in _children(m)]
        for c in sorted(kids, key=lambda k: rank.get(id(k), len(rank))):
            ordered.append((depth, c))
            if expand_nested:
                emit(c, depth + 1)

    emit(model, 0)
    return ordered


def _shape_text(outs) -> str:
    if not outs:
        return "?"
    shapes = []
    for o in outs:
        text = _format_shape(o)
        if text not in shapes:
            shapes.append(text)
    shape = " | ".join(shapes)
    if len(outs) > 1 and len(shapes) == 1:
        shape += f" x{len(outs)}"
    return shape


def _render(model, table, y, line_length: int) -> str:
    header = ("Layer (type)", "Output Shape", "Param #")
    w_name = max(len(r[0]) for r in table + [header]) + 2
    w_params = max(len(r[2]) for r in table + [header]) + 2
    w_shape = max(max(len(r[1]) for r in table + [header]) + 2,
                  line_length - w_name - w_params)
    width = w_name + w_shape + w_params

    def fmt(r):
        return f"{r[0]:<{w_name}}{r[1]:<{w_shape}}{r[2]:>{w_params}}".rstrip()

    lines = [f'Model: "{model.name}" ({type(model).__name__})', "=" * width, fmt(header),
             "=" * width] + [fmt(r) for r in table]
    lines.append("=" * width)
    all_vars = unique_variables(model.variables)
    trainable = [v for v in all_vars if v.trainable]
    lines.append(f"Total params: {_count(all_vars):,}")
    lines.append(f"Trainable params: {_count(trainable):,}")
    lines.append(f"Non-trainable params: {_count(all_vars) - _count(trainable):,}")
    lines.append(f"Output: {_format_shape(y)}")
    return "\n".join(lines)


def summary(model: tf.Module, inputs: Any, expand_nested: bool = False,
            training: bool = False, line_length: int = 88) -> str:
    """The table of `model`'s submodules with output shapes and parameter counts.

    Args:
        model: a tf.Module called as `model(inputs, training=...)`.
        inputs: an example input (tensor / array, or a list / dict of them) or its
            shape(s): a tuple like (None, 64), a list or dict of such tuples, or
            `tf.TensorSpec`s. Unknown dims (None) become 1 for the example run.
        expand_nested: also list the submodules of submodules, indented.
        training: passed to the model for the example run. Default False.
        line_length: width of the table.

    Returns:
        The table as one string (print it).
    """
    rows, record, order, y = _run_recorded(model, example_inputs(inputs), training,
                                           expand_nested)
    table = [("  " * depth + f"{m.name} ({type(m).__name__})",
              _shape_text(record.get(id(m))), f"{_count(m.variables):,}")
             for depth, m in _in_call_order(model, rows, order, expand_nested)]
    # Variables the model holds itself, outside any submodule.
    in_children = {id(v) for _, c in rows for v in c.variables}
    own = [v for v in unique_variables(model.variables) if id(v) not in in_children]
    if own:
        table.append(("(own variables)", "", f"{_count(own):,}"))
    return _render(model, table, y, line_length)


def count_params(model: tf.Module) -> int:
    """Scalars in the model's unique variables (Keras's `model.count_params()`)."""
    return _count(model.variables)
