"""The registry of tfcore's models: one name -> how to build it, its input, its step.

Every name that `python -m bench.run --models` takes, and the functional-API models
that have no bench entry, with the binaries' defaults (`python -m models.summary
--model=NAME`, `bench.run`, `bench.epoch_check` and the tests all read this one list):

* vat_cnn, vat_cnn_dropout, vat_cnn_vat, vat_cnn_vat_dropout: `models.vat_cnn.VatCNN`;
  step: `train.vat_lib.build(VatConfig(dropout=, vat=))`, train.vat's (writeup preset).
* dense_ae, dense_ae_tied, dense_ae_small (32 relu), conv_ae, conv_ae_upsample:
  `models.autoencoder.make_model`; step: `train.autoencoder_lib.build` of its
  `Config` (the binary's default optimizer, rate, schedule and length).
* dcgan, dcgan_mixed: the parts dcgan_generator (`Generator(latent_dim=30)`) and
  dcgan_discriminator; step: `train.dcgan_lib.build(DCGANConfig(d_batch=))`,
  train.dcgan's (the weight average of G included).
* separable_convnet, residual, qa, siamese_lstm, multi_output: `models.<module>`;
  step: the module's `make_train_step(model, Adam(1e-3))`.
* dense_example, inception, vision_tower, dcgan_generator, dcgan_discriminator: no
  step (summaries).

The models with a training binary take their step from the binary's own library
(imported when `train()` is called, never by `models.summary`), so that the bench
times exactly the step the binary runs by default. Every step is UN-compiled:
`step_fn(batch, seed) -> dict of scalars` (the loop compiles it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from tfcore import checks, optimizers
from tfcore.summary import example_inputs
from models import (autoencoder, dcgan, dense_example, functional, inception, multi_output,
                    qa, residual, separable_convnet, siamese, vat_cnn, vision_tower)

IMAGES = (None, 28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Training:
    """A model ready to train: the UN-compiled `step_fn(batch, seed) -> {name: scalar}`
    and its trackables (model(s), optimizer(s): `tfcore.training.loop.Loop`'s objects)."""

    step_fn: Callable
    objects: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registry model.

    Attributes:
      description: one line.
      model: `() -> tf.Module`, a fresh model with the binaries' defaults (None for an
        entry made of `parts`).
      inputs: its example input shapes (None for the batch axis), as `tfcore.summary`
        takes them.
      parts: names of the entries it is made of (the DCGAN: its two networks).
      train: `train() -> Training` with the step the binary (or the model module)
        builds; None: no train step (summary only). With a training binary,
        `train(config)` builds from another configuration of it.
      config: `() -> the binary's configuration` (its library's config class: the
        binary's defaults plus this entry's options) that `train()` builds the step
        from; None for a model without a training binary.
      data: `(n, rng) -> nest of NumPy arrays`, n synthetic training examples with
        the real shapes (what `step_fn` takes in batches).
      batch_size: the bench's default batch.
      cpu_xla: the model's measured `--jit=auto` choice on CPU.
    """

    description: str
    model: Optional[Callable[[], Any]] = None
    inputs: Any = None
    parts: Tuple[str, ...] = ()
    train: Optional[Callable[..., Training]] = None
    data: Optional[Callable[[int, Any], Any]] = None
    config: Optional[Callable[[], Any]] = None
    batch_size: int = 0
    cpu_xla: bool = False


# -- synthetic data -------------------------------------------------------------------

def _images(rng, n: int, size: int = 28, low: float = 0.0, channels: int = 1):
    return rng.uniform(low, 1.0, size=(n, size, size, channels)).astype(np.float32)


def _onehot(rng, n: int, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=n)]


def _tokens(rng, n: int, length: int, vocab: int) -> np.ndarray:
    return rng.integers(1, vocab, (n, length)).astype(np.int32)


def _labeled_images(n, rng):
    return _images(rng, n), rng.integers(0, 10, size=n).astype(np.int32)


_DATA = {
    "separable_convnet": lambda n, rng: (_images(rng, n, 64, channels=3),
                                         _onehot(rng, n, 10)),
    "residual": lambda n, rng: (_images(rng, n, 32, channels=3), _onehot(rng, n, 10)),
    "qa": lambda n, rng: ((_tokens(rng, n, 100, 10000), _tokens(rng, n, 20, 10000)),
                          _onehot(rng, n, 500)),
    "siamese_lstm": lambda n, rng: (
        (rng.standard_normal((n, 20, 128)).astype(np.float32),
         rng.standard_normal((n, 20, 128)).astype(np.float32)),
        rng.integers(0, 2, (n, 1)).astype(np.float32)),
    "multi_output": lambda n, rng: (
        _tokens(rng, n, 500, 50000),
        (rng.uniform(18, 80, (n, 1)).astype(np.float32), _onehot(rng, n, 10),
         rng.integers(0, 2, (n, 1)).astype(np.float32))),
}


# -- the models and their steps -------------------------------------------------------

def _vat(dropout: bool, vat: bool) -> Dict[str, Any]:
    def model():
        return vat_cnn.VatCNN(dropout=dropout)

    def config():
        from train import vat_lib  # pylint: disable=import-outside-toplevel
        return vat_lib.VatConfig(dropout=dropout, vat=vat)

    def train(cfg=None) -> Training:
        from train import vat_lib  # pylint: disable=import-outside-toplevel
        net, opt, step = vat_lib.build((cfg or config()).resolved())
        return Training(step, {"model": net, "optimizer": opt})

    return dict(model=model, inputs=IMAGES, train=train, config=config,
                data=_labeled_images, batch_size=128)


def _autoencoder(**options) -> Dict[str, Any]:
    def model():
        return autoencoder.make_model(**options)

    def config():
        from train import autoencoder_lib  # pylint: disable=import-outside-toplevel
        return autoencoder_lib.Config(**options)

    def train(cfg=None) -> Training:
        from train import autoencoder_lib  # pylint: disable=import-outside-toplevel
        from tfcore.training import loop  # pylint: disable=import-outside-toplevel
        resolved = (cfg or config()).resolved()  # default length: 10,000 steps
        # The schedule's length; epochs are passes over the training images (MNIST's
        # 60,000, or --train_subset, less the held-out --val_size).
        images = (resolved.train_subset or 60000) - resolved.val_size
        total = loop.total_steps(resolved.epochs, resolved.steps,
                                 images // resolved.batch_size)
        net, opt, step, _ = autoencoder_lib.build(resolved, None, total)
        return Training(step, {"model": net, "optimizer": opt})

    return dict(model=model, inputs=IMAGES, train=train, config=config,
                data=lambda n, rng: _images(rng, n), batch_size=128,
                cpu_xla=autoencoder.prefers_xla_on_cpu(options["model"]))


def _dcgan(d_batch: str) -> Dict[str, Any]:
    def config():
        from train import dcgan_lib  # pylint: disable=import-outside-toplevel
        return dcgan_lib.DCGANConfig(d_batch=d_batch)

    def train(cfg=None) -> Training:
        from train import dcgan_lib  # pylint: disable=import-outside-toplevel
        nets, step = dcgan_lib.build((cfg or config()).resolved())
        return Training(step, nets)

    return dict(parts=("dcgan_generator", "dcgan_discriminator"), train=train,
                config=config,
                data=lambda n, rng: _images(rng, n, 32, low=-1.0), batch_size=64)


def _functional(name: str, module: Any, make: Callable[[], Any], inputs: Any,
                batch_size: int = 0) -> Dict[str, Any]:
    """A functional-API model; with a batch size, trainable with its module's
    `make_train_step` and Adam(1e-3) on `_DATA[name]`."""
    entry: Dict[str, Any] = dict(model=make, inputs=inputs)
    if batch_size:
        def train() -> Training:
            net = make()
            net(example_inputs(inputs))
            opt = optimizers.Adam(learning_rate=1e-3)
            opt.build(net.trainable_variables)
            return Training(module.make_train_step(net, opt),
                            {"model": net, "optimizer": opt})

        entry.update(train=train, data=_DATA[name], batch_size=batch_size,
                     cpu_xla=name in functional.CPU_XLA_MODELS)
    return entry


_SPECS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "vat_cnn": ("VAT write-up CNN, plain CE step", _vat(False, False)),
    "vat_cnn_dropout": ("the CNN with dropout", _vat(True, False)),
    "vat_cnn_vat": ("CE + VAT (1 power iteration)", _vat(False, True)),
    "vat_cnn_vat_dropout": ("CE + VAT, dropout", _vat(True, True)),
    "dense_ae": ("784-625(sigmoid)-784 AE", _autoencoder(model="dense")),
    "dense_ae_tied": ("the same, tied", _autoencoder(model="dense", tied=True)),
    "dense_ae_small": ("784-32(relu)-784 AE (the Keras blog's)",
                       _autoencoder(model="dense", hidden=32, hidden_activation="relu")),
    "conv_ae": ("16-8-8 conv AE, conv2d_transpose decoder",
                _autoencoder(model="conv", decoder="transpose")),
    "conv_ae_upsample": ("16-8-8 conv AE, UpSampling2D decoder",
                         _autoencoder(model="conv", decoder="upsample")),
    "dcgan": ("DCGAN D step (split real/fake) + G step + EMA of G", _dcgan("split")),
    "dcgan_mixed": ("DCGAN D step (mixed batch) + G step + EMA of G", _dcgan("mixed")),
    "separable_convnet": ("6 SeparableConv2D, 64x64x3, CE", _functional(
        "separable_convnet", separable_convnet, separable_convnet.SeparableConvNet,
        (None, 64, 64, 3), 32)),
    "residual": ("3 residual blocks, 32x32x3, CE", _functional(
        "residual", residual, residual.ResidualNet, (None, 32, 32, 3), 8)),
    "qa": ("two-input Embedding+LSTM QA, CE", _functional(
        "qa", qa, qa.QuestionAnswering, {"text": (None, 100), "question": (None, 20)},
        64)),
    "siamese_lstm": ("shared LSTM(32), BCE", _functional(
        "siamese_lstm", siamese, siamese.SiameseLSTM,
        {"left": (None, 20, 128), "right": (None, 20, 128)}, 64)),
    "multi_output": ("Embedding+Conv1D, three heads, weighted losses", _functional(
        "multi_output", multi_output, multi_output.MultiOutputModel,
        {"posts": (None, 500)}, 8)),
    "dense_example": ("64 -> Dense 32 -> Dense 32 -> Dense 10 softmax", _functional(
        "dense_example", dense_example, dense_example.DenseExample, (None, 64))),
    "inception": ("one Inception module (four branches, stride 2)", _functional(
        "inception", inception, inception.InceptionModule, (None, 32, 32, 64))),
    "vision_tower": ("one conv tower applied to left and right images", _functional(
        "vision_tower", vision_tower, vision_tower.TwoCameraModel,
        {"left": (None, 64, 64, 3), "right": (None, 64, 64, 3)})),
    "dcgan_generator": ("the DCGAN's generator: z [30] -> 32x32x1 in [-1, 1]", dict(
        model=lambda: dcgan.Generator(latent_dim=dcgan.DEFAULT_LATENT_DIM),
        inputs=(None, 30))),
    "dcgan_discriminator": ("the DCGAN's discriminator: 32x32x1 -> logit",
                            dict(model=dcgan.Discriminator, inputs=(None, 32, 32, 1))),
}

REGISTRY: Dict[str, Entry] = {name: Entry(description, **spec)
                              for name, (description, spec) in _SPECS.items()}
NAMES: Tuple[str, ...] = tuple(REGISTRY)
# The names with a train step (what `bench.run --models` takes), in registry order.
TRAINABLE: Tuple[str, ...] = tuple(n for n, e in REGISTRY.items() if e.train is not None)


def get(name: str) -> Entry:
    """The entry of `name`; `tfcore.checks.ArgumentError` (a ValueError) listing the
    known names otherwise."""
    if name not in REGISTRY:
        raise checks.ArgumentError(f"unknown model {name!r}; known models: "
                                   f"{', '.join(NAMES)}")
    return REGISTRY[name]


def modules(name: str) -> Dict[str, Tuple[Any, Any]]:
    """part name -> (fresh model, its example input shapes) of `name`: the model
    itself, or each of its `parts`."""
    entry = get(name)
    if entry.parts:
        return {part: (get(part).model(), get(part).inputs) for part in entry.parts}
    return {name: (entry.model(), entry.inputs)}
