"""Prints the summary table of any model of the registry (`models.registry`).

    python -m models.summary --model=separable_convnet [--expand_nested]
    python -m models.summary --model=dcgan        # its generator, then its discriminator

`--model` takes every name `python -m bench.run --models` takes (vat_cnn...,
dense_ae..., conv_ae..., dcgan, dcgan_mixed, the functional-API models) and
dense_example, inception, vision_tower, dcgan_generator, dcgan_discriminator. The
model is built with the binaries' defaults on zeros of its example input shapes and
`tfcore.summary`'s table printed: each submodule's output shape and parameter count,
then the totals (Keras's `count_params()` of the same architecture). A model of
several networks (the DCGAN) prints one table per network, then their sum.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from absl import app, flags

from models import registry

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """--model and --expand_nested on `flag_values`."""
    flags.DEFINE_string("model", None, "Model to summarise, one of: "
                        f"{', '.join(registry.NAMES)}.", flag_values=flag_values)
    flags.DEFINE_bool("expand_nested", False, "Also list the submodules of submodules.",
                      flag_values=flag_values)


def summarize(name: str, expand_nested: bool = False,
              parts: Optional[Dict[str, Tuple[Any, Any]]] = None) -> str:
    """The summary of registry model `name` (ArgumentError, a ValueError, if unknown):
    its table, or each part's table under its name and a line with their total.
    `parts`: the models to summarise (default fresh ones, `registry.modules(name)`);
    they are built by the summary's call on their example inputs."""
    import tfcore  # pylint: disable=import-outside-toplevel
    from tfcore.summary import count_params  # pylint: disable=import-outside-toplevel
    parts = registry.modules(name) if parts is None else parts
    if len(parts) == 1:
        (model, shapes), = parts.values()
        return tfcore.summary(model, shapes, expand_nested=expand_nested)
    texts, total = [], 0
    for part, (model, shapes) in parts.items():
        texts.append(f"{part}:\n" + tfcore.summary(model, shapes,
                                                   expand_nested=expand_nested))
        total += count_params(model)
    return "\n".join(texts) + f"\n{name} ({' + '.join(parts)}): Total params: {total:,}\n"


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """Prints the summary of the parsed `--model` (app.UsageError for a bad one)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flag_values.model:
        raise app.UsageError(f"--model is required; one of: {', '.join(registry.NAMES)}")
    try:
        registry.get(flag_values.model)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    print(summarize(flag_values.model, flag_values.expand_nested))


if __name__ == "__main__":
    define_flags()
    app.run(main)
