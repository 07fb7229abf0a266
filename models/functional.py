"""The functional-API chapter's models: a registry, and input-structure helpers.

`MODELS` maps a name to `(constructor, example input shapes)` for every model of
issue 4 (used by `python -m models.summary --model=NAME` and by the tests):

| name              | model                                                  |
| ----------------- | ------------------------------------------------------ |
| dense_example     | 64 -> Dense 32 relu -> Dense 32 relu -> Dense 10 softmax |
| qa                | two-input question answering (text + question)         |
| multi_output      | posts -> age / income / gender (three outputs)          |
| inception         | one Inception module (four branches, stride 2)         |
| residual          | a small net of residual blocks (identity + projections) |
| siamese_lstm      | one LSTM shared by a left and a right sequence          |
| vision_tower      | one conv tower applied to left and right images         |
| separable_convnet | the depthwise-separable convnet (64x64x3, 10 classes)  |

Example shapes use None for the batch axis; sequence lengths are arbitrary (the
parameter counts do not depend on them).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Sequence, Tuple

if TYPE_CHECKING:  # TensorFlow is imported only when a model is built
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


def _registry() -> Dict[str, Tuple[Callable[[], "tf.Module"], Any]]:
    from models.dense_example import DenseExample
    from models.inception import InceptionModule
    from models.multi_output import MultiOutputModel
    from models.qa import QuestionAnswering
    from models.residual import ResidualNet
    from models.separable_convnet import SeparableConvNet
    from models.siamese import SiameseLSTM
    from models.vision_tower import TwoCameraModel

    return {
        "dense_example": (DenseExample, (None, 64)),
        "qa": (QuestionAnswering, {"text": (None, 100), "question": (None, 20)}),
        "multi_output": (MultiOutputModel, {"posts": (None, 500)}),
        "inception": (InceptionModule, (None, 32, 32, 64)),
        "residual": (ResidualNet, (None, 32, 32, 3)),
        "siamese_lstm": (SiameseLSTM, {"left": (None, 20, 128), "right": (None, 20, 128)}),
        "vision_tower": (TwoCameraModel, {"left": (None, 64, 64, 3),
                                          "right": (None, 64, 64, 3)}),
        "separable_convnet": (SeparableConvNet, (None, 64, 64, 3)),
    }


MODEL_NAMES = ("dense_example", "qa", "multi_output", "inception", "residual",
               "siamese_lstm", "vision_tower", "separable_convnet")


# The models whose train step ran faster under XLA than in graph mode on the project's
# 2-core CPU (`python -m bench.run`, README): the LSTMs' recurrence is a while loop of
# small ops, which XLA compiles into one kernel (measured side by side: qa 8.3 vs 15.2
# ms/step, siamese_lstm 2.8 vs 3.9). Not multi_output (Embedding + Conv1D, three
# heads): its single XLA step was even with graph mode (0.94-1.01), but its compiled
# multi-step loop under XLA took 1,621 ms/step against 36 (graph), so auto keeps graph.
# `--jit=auto` takes XLA for these on CPU (`tfcore.training.compile.resolve_jit(cpu_xla=...)`).
CPU_XLA_MODELS = ("qa", "siamese_lstm")


def prefers_xla_on_cpu(name: str) -> bool:
    """Whether `--jit=auto` compiles model `name`'s step with XLA on CPU (measured)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return name in CPU_XLA_MODELS


def get_model(name: str) -> Tuple["tf.Module", Any]:
    """A fresh, unbuilt model by registry name and its example input shapes.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    constructor, shapes = registry[name]
    return constructor(), shapes
