"""Two-input question answering (the textbook's functional-API example).

    text     [b, t_text]  -> Embedding(text_vocab, 64)     -> LSTM(32) -+
                                                                        +-> concatenate
    question [b, t_quest] -> Embedding(question_vocab, 32) -> LSTM(16) -+
    concatenate [b, 48] -> Dense(answer_vocab, softmax)

Inputs: `[text, question]` or `{'text': ..., 'question': ...}`, integer token ids
(any lengths; 0 is padding and is masked in the LSTMs when `mask_zero`).
Output: answer probabilities [b, answer_vocab]. Defaults: text and question vocab
10,000, answer vocab 500, embeddings 64 / 32, LSTMs 32 / 16 (1,000,052 parameters).
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

import tfcore
from models.functional import make_classifier_train_step, named_inputs
from tfcore import losses

INPUT_NAMES = ("text", "question")


class QuestionAnswering(tf.Module):
    """Text and question encoders, concatenated, softmax over answers.

    Args:
        text_vocab_size: default 10,000.
        question_vocab_size: default 10,000.
        answer_vocab_size: default 500.
        text_embedding_dim: default 64.
        question_embedding_dim: default 32.
        text_units: LSTM size for the text. Default 32.
        question_units: LSTM size for the question. Default 16.
        mask_zero: treat token 0 as padding (skipped by the LSTMs). Default False,
            as the textbook.
        name: module name.
    """

    def __init__(self, text_vocab_size: int = 10000, question_vocab_size: int = 10000,
                 answer_vocab_size: int = 500, text_embedding_dim: int = 64,
                 question_embedding_dim: int = 32, text_units: int = 32,
                 question_units: int = 16, mask_zero: bool = False,
                 name: Optional[str] = "question_answering"):
        super().__init__(name=name)
        self.text_embedding = tfcore.Embedding(text_vocab_size, text_embedding_dim,
                                               mask_zero=mask_zero, name="text_embedding")
        self.text_lstm = tfcore.LSTM(text_units, name="text_lstm")
        self.question_embedding = tfcore.Embedding(question_vocab_size, question_embedding_dim,
                                                   mask_zero=mask_zero,
                                                   name="question_embedding")
        self.question_lstm = tfcore.LSTM(question_units, name="question_lstm")
        self.answer = tfcore.Dense(answer_vocab_size, activation="softmax", name="answer")

    def __call__(self, inputs, training: bool = False) -> tf.Tensor:
        """inputs: [text, question] or a dict -> answer probabilities [b, answers]."""
        text, question = named_inputs(inputs, INPUT_NAMES, "QuestionAnswering")
        encoded_text = self.text_lstm(self.text_embedding(text),
                                      mask=self.text_embedding.compute_mask(text))
        encoded_question = self.question_lstm(
            self.question_embedding(question),
            mask=self.question_embedding.compute_mask(question))
        merged = tfcore.concatenate([encoded_text, encoded_question], axis=-1)
        return self.answer(merged, training=training)


def make_train_step(model: QuestionAnswering, optimizer,
                    loss: Callable = losses.categorical_crossentropy) -> Callable:
    """The UN-compiled train step `step_fn(batch, seed) -> {'loss': CE}` on `batch =
    ([text, question] (or a dict), one-hot answers [b, answer_vocab])`: one optimizer
    step on `loss(targets, predictions)` (default: the categorical cross-entropy of the
    answer probabilities), `models.functional.make_classifier_train_step`. Build the
    model first.
    """
    return make_classifier_train_step(model, optimizer, loss)
