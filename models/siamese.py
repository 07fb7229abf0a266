"""Siamese LSTM: one LSTM (one set of weights) applied to two sequences.

    left  [b, t, features] -> LSTM(32) -+
                                        concatenate -> Dense(1, sigmoid)   (e.g. "same meaning?")
    right [b, t, features] -> LSTM(32) -+   (the same LSTM object)

Both branches read and backpropagate into the same `kernel`, `recurrent_kernel` and
`bias`, so their gradients add up in the one set of variables (the textbook's shared
layer; the input `features` is 128 there). Inputs: `[left, right]` or
`{'left': ..., 'right': ...}`; output [b, 1].
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

import tfcore
from models.functional import make_classifier_train_step, named_inputs
from tfcore import losses

INPUT_NAMES = ("left", "right")


class SiameseLSTM(tf.Module):
    """A shared LSTM encoder for two sequences and a sigmoid classifier.

    Args:
        units: LSTM size. Default 32.
        name: module name.
    """

    def __init__(self, units: int = 32, name: Optional[str] = "siamese_lstm"):
        super().__init__(name=name)
        self.lstm = tfcore.LSTM(units, name="lstm")
        self.classifier = tfcore.Dense(1, activation="sigmoid", name="classifier")

    def __call__(self, inputs, training: bool = False) -> tf.Tensor:
        """[left, right] (or a dict) -> probabilities [b, 1]."""
        left, right = named_inputs(inputs, INPUT_NAMES, "SiameseLSTM")
        merged = tfcore.concatenate([self.lstm(left), self.lstm(right)], axis=-1)
        return self.classifier(merged, training=training)


def make_train_step(model: SiameseLSTM, optimizer,
                    loss: Callable = losses.binary_crossentropy) -> Callable:
    """The UN-compiled train step `step_fn(batch, seed) -> {'loss': BCE}` on `batch =
    ([left, right] (or a dict), labels [b, 1] in {0, 1})`: one optimizer step on
    `loss(targets, predictions)` (default: the binary cross-entropy of the sigmoid
    output), `models.functional.make_classifier_train_step`. Build the model first.
    """
    return make_classifier_train_step(model, optimizer, loss)
