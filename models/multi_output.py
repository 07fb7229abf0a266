"""Three-output model (the textbook's social-media example) and its weighted loss.

    posts [b, t] -> Embedding(50000, 256)
      -> Conv1D(128, 5, relu) -> MaxPool1D(5)
      -> Conv1D(256, 5, relu) -> Conv1D(256, 5, relu) -> MaxPool1D(5)
      -> Conv1D(256, 5, relu) -> Conv1D(256, 5, relu)
      -> GlobalMaxPool1D -> Dense(128, relu)
      -> age:    Dense(1)                            (MSE)
      -> income: Dense(num_income_groups, softmax)   (categorical cross-entropy)
      -> gender: Dense(1, sigmoid)                   (binary cross-entropy)

Inputs: token ids `posts` [b, t] as a tensor, `[posts]` or `{'posts': posts}`; with
'valid' convolutions and two pools of 5 the sequence needs t >= 269. Output: a dict
`{'age': [b, 1], 'income': [b, num_income_groups], 'gender': [b, 1]}`.

Loss (Keras's `compile(loss=[mse, categorical_crossentropy, binary_crossentropy],
loss_weights=[0.25, 1., 10.])`):

    loss = 0.25 * mean_b (age - age_hat)^2
         + 1.0  * mean_b -sum_c income_c log(income_hat_c)
         + 10.0 * mean_b -(g log(g_hat) + (1 - g) log(1 - g_hat))

(the probabilities clipped to [1e-7, 1 - 1e-7], as Keras). The weights balance the
losses' scales: age in years gives MSEs in the hundreds, cross-entropies are ~1.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

import tfcore
from models.functional import make_classifier_train_step, named_inputs

OUTPUT_NAMES = ("age", "income", "gender")
LOSS_WEIGHTS = (0.25, 1.0, 10.0)


class MultiOutputModel(tf.Module):
    """Embedding + Conv1D stack shared by three heads (age, income, gender).

    Args:
        vocab_size: default 50,000.
        embedding_dim: default 256.
        num_income_groups: default 10.
        filters: the five Conv1D widths. Default (128, 256, 256, 256, 256).
        kernel_size: Conv1D window. Default 5.
        pool_size: MaxPool1D window and stride. Default 5.
        dense_units: the shared Dense layer. Default 128.
        name: module name.
    """

    def __init__(self, vocab_size: int = 50000, embedding_dim: int = 256,
                 num_income_groups: int = 10,
                 filters: Sequence[int] = (128, 256, 256, 256, 256), kernel_size: int = 5,
                 pool_size: int = 5, dense_units: int = 128,
                 name: Optional[str] = "multi_output"):
        super().__init__(name=name)
        if len(filters) != 5:
            raise ValueError(f"MultiOutputModel filters must list 5 Conv1D widths, "
                             f"got {filters!r}")
        self.embedding = tfcore.Embedding(vocab_size, embedding_dim, name="embedding")
        conv = [tfcore.Conv1D(f, kernel_size, activation="relu", name=f"conv1d_{i + 1}")
                for i, f in enumerate(filters)]
        self.conv1d_1, self.conv1d_2, self.conv1d_3, self.conv1d_4, self.conv1d_5 = conv
        self.max_pool_1 = tfcore.MaxPool1D(pool_size, name="max_pool_1")
        self.max_pool_2 = tfcore.MaxPool1D(pool_size, name="max_pool_2")
        self.global_pool = tfcore.GlobalMaxPool1D(name="global_pool")
        self.dense = tfcore.Dense(dense_units, activation="relu", name="dense")
        self.age = tfcore.Dense(1, name="age")
        self.income = tfcore.Dense(num_income_groups, activation="softmax", name="income")
        self.gender = tfcore.Dense(1, activation="sigmoid", name="gender")

    def __call__(self, inputs, training: bool = False) -> Dict[str, tf.Tensor]:
        """posts (tensor, [posts] or {'posts': ...}) -> {'age', 'income', 'gender'}."""
        (posts,) = named_inputs(inputs, ("posts",), "MultiOutputModel")
        x = self.embedding(posts)
        x = self.max_pool_1(self.conv1d_1(x))
        x = self.max_pool_2(self.conv1d_3(self.conv1d_2(x)))
        x = self.conv1d_5(self.conv1d_4(x))
        x = self.dense(self.global_pool(x))
        return {"age": self.age(x), "income": self.income(x), "gender": self.gender(x)}


def _as_dict(values: Union[Mapping[str, Any], Sequence[Any]], what: str) -> Dict[str, Any]:
    if isinstance(values, Mapping):
        if sorted(values) != sorted(OUTPUT_NAMES):
            raise ValueError(f"{what} dict must have the keys {list(OUTPUT_NAMES)}, "
                             f"got {sorted(values)}")
        return dict(values)
    if isinstance(values, (list, tuple)) and len(values) == len(OUTPUT_NAMES):
        return dict(zip(OUTPUT_NAMES, values))
    raise ValueError(f"{what} must be a list of 3 (in the order {list(OUTPUT_NAMES)}) or a "
                     f"dict keyed by those names, got {values!r}")


def multi_output_loss(targets, predictions,
                      loss_weights=LOSS_WEIGHTS) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """The weighted sum of the three heads' batch-mean losses (formula above).

    Args:
        targets: `[age, income, gender]` or a dict keyed 'age', 'income', 'gender':
            age [b] or [b, 1] floats; income one-hot [b, groups] (or integer labels
            [b], one-hot encoded here); gender [b] or [b, 1] in {0, 1}.
        predictions: the model's outputs, as a dict or list in the same order.
        loss_weights: three weights as a list (same order) or dict. Default
            (0.25, 1, 10), the textbook's.

    Returns:
        `(total, {'age': mse, 'income': cce, 'gender': bce})`, the parts unweighted.
    """
    targets = _as_dict(targets, "targets")
    predictions = _as_dict(predictions, "predictions")
    weights = _as_dict(loss_weights, "loss_weights")
    income_true = tf.convert_to_tensor(targets["income"])
    if income_true.dtype.is_integer:
        income_true = tf.one_hot(income_true, tf.shape(predictions["income"])[-1])
    parts = {
        "age": tfcore.losses.mean_squared_error(targets["age"], predictions["age"]),
        "income": tfcore.losses.categorical_crossentropy(income_true, predictions["income"]),
        "gender": tfcore.losses.binary_crossentropy(targets["gender"], predictions["gender"]),
    }
    total = tf.add_n([tf.cast(weights[k], parts[k].dtype) * parts[k] for k in OUTPUT_NAMES])
    return total, parts


def make_train_step(model: MultiOutputModel, optimizer,
                    loss_weights=LOSS_WEIGHTS) -> Callable:
    """The UN-compiled train step `step_fn(batch, seed) -> logs` on `batch = (inputs,
    targets)` (targets as list or dict, see `multi_output_loss`): one optimizer step on
    the weighted loss, `models.functional.make_classifier_train_step`. Build the model
    (call it on an example) and the optimizer first.

    Returns:
        `step_fn`; its logs are {'loss': weighted total, 'age_loss', 'income_loss',
        'gender_loss'} (the parts unweighted, as Keras logs them).
    """
    return make_classifier_train_step(
        model, optimizer, lambda targets, predictions: multi_output_loss(
            targets, predictions, loss_weights))
