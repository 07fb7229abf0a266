"""Prints the summary table of one of the functional-chapter models.

    python -m models.summary --model=separable_convnet [--expand_nested]

Builds the model on zeros of its example input shapes (see `models.functional`)
and prints `tfcore.summary`'s table: each submodule's output shape and parameter
count, then the totals.
"""
from __future__ import annotations

from absl import app, flags

from models.functional import MODEL_NAMES, get_model

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, f"Model to summarise, one of: {', '.join(MODEL_NAMES)}.")
flags.DEFINE_bool("expand_nested", False, "Also list the submodules of submodules.")


def summarize(name: str, expand_nested: bool = False) -> str:
    """The summary table of the registry model `name` (ValueError if unknown)."""
    import tfcore

    model, shapes = get_model(name)
    return tfcore.summary(model, shapes, expand_nested=expand_nested)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.model:
        raise app.UsageError(f"--model is required; one of: {', '.join(MODEL_NAMES)}")
    if FLAGS.model not in MODEL_NAMES:
        raise app.UsageError(f"unknown model {FLAGS.model!r}; known models: "
                             f"{', '.join(MODEL_NAMES)}")
    print(summarize(FLAGS.model, FLAGS.expand_nested))


if __name__ == "__main__":
    app.run(main)
