"""The VAT classifier: the Keras MNIST CNN and its (virtual adversarial) train step.

Model (`VatCNN`, the CNN of the Keras VAT write-up, Keras 3 layer names so weights
copy 1:1 from `keras.Sequential` built with the same layers):

    x [b, 28, 28, 1] in [0, 1]
    -> conv2d    Conv2D(32, 3, 'valid', relu)            [b, 26, 26, 32]
    -> conv2d_1  Conv2D(32, 3, 'valid', relu)            [b, 24, 24, 32]
    -> max_pooling2d  MaxPool2D(2)                       [b, 12, 12, 32]
    -> dropout   Dropout(0.25)        (if dropout)
    -> flatten                                           [b, 4608]
    -> dense     Dense(128, relu)                        [b, 128]
    -> dropout_1 Dropout(0.5)         (if dropout)
    -> dense_1   Dense(10)            logits             [b, 10]

600,810 parameters. `batch_norm=True` inserts `BatchNorm` between each conv and its
relu (a variant used to test that VAT's extra passes leave the moving statistics
alone; not part of the write-up).

Train step (`make_train_step`): with p = softmax(model(x)),

    loss = CE(y_l, model(x_l))
         + vat_weight * mean_i KL(p(.|x_u,i) || p(.|x_u,i + r_adv,i))     (if vat)
         + mean_i H(p(.|x_u,i))                                            (if entmin)

`tfcore.vat.virtual_adversarial_loss` computes the middle term (power iteration,
stop_gradient on the clean prediction and on r_adv). With all labels (a batch
`(x, y)`), x_u = x_l = x and the clean logits of the CE pass are reused as the VAT
target (one forward pass saved: VAT adds 1 + power_iterations forwards). With a
labeled subset (a batch `{'labeled': (x_l, y_l), 'unlabeled': x_u}`), the clean pass
of x_u is a separate forward that does not update BatchNorm statistics.

Randomness: the step's stateless `seed` drives everything. The clean pass of x and the
perturbed passes x + r use the SAME dropout seed by default (`shared_dropout_mask`), so
the KL measures the perturbation and not two different dropout masks; with
`shared_dropout_mask=False` every perturbed pass draws its own mask. The perturbed
passes call the model with `update_stats=False` (BatchNorm: batch moments, no update
of the moving averages; the official code's `update_batch_stats=False`).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from tfcore import losses, vat as vat_lib
from tfcore.batch_norm import BatchNorm
from tfcore.checks import check_bool, check_choice, check_int, check_real
from tfcore.conv2d import Conv2D
from tfcore.dense import Dense
from tfcore.dropout import Dropout
from tfcore.flatten import Flatten
from tfcore.layer import call_accepts, check_positive_int
from tfcore.max_pool2d import MaxPool2D
from tfcore.random_translate import random_translate
from tfcore.secant import secant
from tfcore.sequential import Sequential

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

# Stream indices folded into the step seed (tfcore.layer.fold_seed / stateless_fold_in).
_LABELED_STREAM = 1        # dropout of the labeled pass (semi-supervised batches)
_UNLABELED_STREAM = 2      # dropout of the clean unlabeled pass (and shared perturbed ones)
_DIRECTION_STREAM = 3      # VAT's initial direction d ~ N(0, I)
_TRANSLATE_STREAM = 4      # random shifts of the labeled (or only) batch; + 1: unlabeled
_INDEPENDENT_STREAM = 100  # + k: the k-th perturbed pass with shared_dropout_mask=False


class VatCNN(Sequential):
    """The Keras MNIST CNN of the VAT write-up, returning logits.

    Args:
      num_classes: size of the output layer (default 10).
      dropout: include Dropout(0.25) after the pooling and Dropout(0.5) after the
        hidden Dense (default True, as the Keras example).
      batch_norm: insert BatchNorm (Keras defaults) after each conv, before its relu
        (default False).
      pool_gradient: the max pool's gradient, 'kernel' (default) or 'one_hot' (the same
        values; its derivative, which VAT's hvp='exact' takes, is exact under XLA too:
        `tfcore.max_pool2d`). No variables: the weights are the same either way.
      name: module name.

    Call: `model(x, training=False, seed=None, update_stats=True)`, x [b, 28, 28, 1]
    (any H, W >= 6 build, but the write-up uses MNIST) -> logits [b, num_classes].
    `seed` (stateless, int [2]) fixes the dropout masks; `update_stats=False` keeps
    BatchNorm's moving statistics unchanged in training mode.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: bool = True,
                 batch_norm: bool = False, pool_gradient: str = "kernel",
                 name: Optional[str] = "vat_cnn"):
        num_classes = check_positive_int(num_classes, "num_classes")
        for what, v in (("dropout", dropout), ("batch_norm", batch_norm)):
            if not isinstance(v, bool):
                raise ValueError(f"{what} must be a bool, got {v!r}")
        act = None if batch_norm else "relu"
        layers = [Conv2D(32, 3, activation=act, name="conv2d")]
        if batch_norm:
            layers += [BatchNorm(name="batch_normalization"), tf.nn.relu]
        layers.append(Conv2D(32, 3, activation=act, name="conv2d_1"))
        if batch_norm:
            layers += [BatchNorm(name="batch_normalization_1"), tf.nn.relu]
        layers.append(MaxPool2D(2, gradient=pool_gradient, name="max_pooling2d"))
        if dropout:
            layers.append(Dropout(0.25, name="dropout"))
        layers += [Flatten(name="flatten"), Dense(128, activation="relu", name="dense")]
        if dropout:
            layers.append(Dropout(0.5, name="dropout_1"))
        layers.append(Dense(num_classes, name="dense_1"))
        super().__init__(layers, name=name)
        self.num_classes = num_classes
        self.dropout = dropout
        self.batch_norm = batch_norm


def _fold(seed, index: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), index,
                                                    alg="philox")


def direction_seed(seed) -> tf.Tensor:
    """The stateless seed (int64 [2]) of VAT's initial d ~ N(0, I) in a step with `seed`
    (`tfcore.vat.stateless_standard_normal(tf.shape(x), direction_seed(seed))`)."""
    return _fold(seed, _DIRECTION_STREAM)


def _call(model, x, seed, update_stats: bool):
    """model(x, training=True, seed=seed[, update_stats=...]) where the model takes it."""
    if call_accepts(model, "update_stats"):
        return model(x, training=True, seed=seed, update_stats=update_stats)
    return model(x, training=True, seed=seed)  # no statistics to update


def vat_term(model: Callable, x: tf.Tensor, logits: tf.Tensor, seed, *, xi: float = 10.0,
             eps: float = 1.0, power_iterations: int = 1, hvp: str = "finite_difference",
             shared_dropout_mask: bool = True, dropout_seed=None) -> tf.Tensor:
    """The VAT loss of `model` at `x`, whose clean logits (`logits`) are given.

    `tfcore.vat.virtual_adversarial_loss` with `logits_fn(x') = model(x',
    training=True, seed=s, update_stats=False)`, where s is `dropout_seed` (the seed
    the clean pass used, so the masks match) when `shared_dropout_mask`, else a new
    seed per perturbed pass. The initial direction d comes from `seed` (its own
    stream). `logits` are held constant (stop_gradient).

    Args:
      model: the classifier, called `model(x, training=, seed=[, update_stats=])`.
      x: [b, ...] inputs.
      logits: [b, classes] clean logits of x (from the same dropout seed).
      seed: the step's stateless seed, int [2].
      xi, eps, power_iterations, hvp: see `tfcore.vat.virtual_adversarial_loss`.
      shared_dropout_mask: reuse `dropout_seed` in every perturbed pass (default True).
      dropout_seed: the clean pass's dropout seed (default `seed`).

    Returns:
      The scalar VAT loss (batch mean); gradients reach the model's variables only
      through the final perturbed pass.
    """
    dropout_seed = seed if dropout_seed is None else dropout_seed
    calls = [0]

    def pass_seed():
        if shared_dropout_mask:
            return dropout_seed
        calls[0] += 1
        return _fold(seed, _INDEPENDENT_STREAM + calls[0] - 1)

    def logits_fn(x_perturbed):
        return _call(model, x_perturbed, pass_seed(), update_stats=False)

    def secant_fn(x_clean, dx):  # hvp='secant': the same passes, their change propagated
        kwargs = {"update_stats": False} if call_accepts(model, "update_stats") else {}
        return secant(model, x_clean, dx, training=True, seed=pass_seed(), **kwargs)

    return vat_lib.virtual_adversarial_loss(
        logits_fn, x, logits, xi=xi, eps=eps, power_iterations=power_iterations,
        hvp=hvp, seed=direction_seed(seed), secant_fn=secant_fn)


def _replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def _check_step_args(model, optimizer, *, vat, entmin, shared_dropout_mask, xi, eps,
                     vat_weight, power_iterations, translate,
                     hvp) -> Tuple[float, float, float, str]:
    """`make_train_step`'s argument checks (`tfcore.checks`: a ValueError naming the
    argument); returns the checked (xi, eps, vat_weight, hvp)."""
    if not callable(model) or not hasattr(model, "trainable_variables"):
        raise ValueError(f"model must be a callable module with trainable_variables, "
                         f"got {model!r}")
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    for what, v in (("vat", vat), ("entmin", entmin),
                    ("shared_dropout_mask", shared_dropout_mask)):
        check_bool(v, what)
    check_int(power_iterations, "power_iterations", low=0)
    check_int(translate, "translate (pixels)", low=0)
    return (check_real(xi, "xi", low=0, low_open=True), check_real(eps, "eps", low=0),
            check_real(vat_weight, "vat_weight", low=0),
            check_choice(hvp, "hvp", vat_lib.HVP_METHODS))


def make_train_step(model: Callable, optimizer, *, vat: bool = True, xi: float = 10.0,
                    eps: float = 1.0, power_iterations: int = 1,
                    hvp: str = "finite_difference", vat_weight: float = 1.0,
                    entmin: bool = False, shared_dropout_mask: bool = True,
                    translate: int = 0) -> Callable[..., Dict[str, tf.Tensor]]:
    """The (uncompiled) train step `step_fn(batch, seed) -> {name: scalar}`.

    The caller compiles it (`tfcore.loop.fit` does, per `--jit`; a benchmark may wrap
    it in its own `tf.function`). Build the model (call it once) and the optimizer
    (`optimizer.build(model.trainable_variables)`) first.

    Loss (see the module docstring): CE on the labeled examples + `vat_weight` * VAT
    (if `vat`) + entropy (if `entmin`), on the unlabeled examples. Gradients are
    summed over replicas (`tfcore.distribute`), the CE is averaged over the global
    batch and the VAT/entropy batch means are divided by the number of replicas, so
    the update is the single-device one.

    Args:
      model: a `VatCNN` (or any `model(x, training=, seed=[, update_stats=])` ->
        logits, with `trainable_variables`).
      optimizer: a `tfcore.optimizers.Optimizer`.
      vat: add the VAT term (default True).
      xi: power-iteration step (default 10, the write-up's; official 1e-6).
      eps: adversarial radius (default 1, the write-up's; official 2.1 / 0.3).
      power_iterations: K >= 1 in practice (0: random perturbation), default 1.
      hvp: each power-iteration product H d as a 'finite_difference' of step xi
        (default, the write-up's), 'exact' (J^T F J d linearised at x + xi d/|d|;
        under XLA, whose own max-pool second derivative is approximate, give the model
        `pool_gradient='one_hot'`) or 'secant' (the finite difference with the
        logits' change propagated through `model.secant`, `tfcore.secant`); see
        `tfcore.vat.kl_hessian_vector_product`.
      vat_weight: weight of the VAT term (default 1), >= 0.
      entmin: add the entropy of p(.|x_u) (VAT + EntMin, default False).
      shared_dropout_mask: same dropout mask in the clean and the perturbed passes
        (default True).
      translate: data augmentation: shift every input image (labeled and unlabeled,
        each its own draw from the step's seed) by up to this many whole pixels
        (`tfcore.random_translate`) before anything else; 0 (default) leaves the
        inputs alone.

    Returns:
      `step_fn(batch, seed)`: `batch` is `(x, y)` (x [b, 28, 28, 1] float in [0, 1],
      y [b] int: every example labeled) or `{'labeled': (x_l, y_l), 'unlabeled':
      x_u}`; `seed` a stateless seed, int [2]. It applies one update and returns
      float32 scalars: `loss` (the total), `ce`, `accuracy` (on the labeled batch,
      training mode), `grad_norm`, plus `vat` and/or `entropy` when enabled.

    Raises:
      ValueError: a bad hyperparameter (named in the message).
    """
    xi, eps, vat_weight, hvp = _check_step_args(
        model, optimizer, vat=vat, entmin=entmin, shared_dropout_mask=shared_dropout_mask,
        xi=xi, eps=eps, vat_weight=vat_weight, power_iterations=power_iterations,
        translate=translate, hvp=hvp)

    def augment(x, seed, stream):
        if not translate:
            return x
        return random_translate(x, translate, _fold(seed, stream))

    from tfcore import distribute  # pylint: disable=import-outside-toplevel

    def step_fn(batch, seed) -> Dict[str, tf.Tensor]:
        if seed is None:
            raise ValueError("step_fn needs a stateless seed (int [2]), got None")
        seed = tf.cast(seed, tf.int64)
        if isinstance(batch, Mapping):
            x_l, y_l = batch["labeled"]
            x_u = augment(batch["unlabeled"], seed, _TRANSLATE_STREAM + 1)
            seed_l = _fold(seed, _LABELED_STREAM)
        else:
            x_l, y_l = batch
            x_u = None
            seed_l = seed
        x_l = augment(x_l, seed, _TRANSLATE_STREAM)
        variables = model.trainable_variables
        inv_replicas = 1.0 / _replicas()
        logs = {}
        with tf.GradientTape() as tape:
            logits_l = _call(model, x_l, seed_l, update_stats=True)
            per_example = losses.sparse_softmax_cross_entropy(y_l, logits_l,
                                                              reduction="none")
            ce = distribute.average_loss(per_example)
            total = ce
            if vat or entmin:
                if x_u is None:
                    x_u, logits_u, seed_u = x_l, logits_l, seed_l
                else:
                    seed_u = _fold(seed, _UNLABELED_STREAM)
                    logits_u = _call(model, x_u, seed_u, update_stats=False)
                if vat:
                    v = vat_term(model, x_u, logits_u, seed, xi=xi, eps=eps,
                                 power_iterations=power_iterations, hvp=hvp,
                                 shared_dropout_mask=shared_dropout_mask,
                                 dropout_seed=seed_u)
                    total = total + (vat_weight * inv_replicas) * v
                    logs["vat"] = v
                if entmin:
                    ent = vat_lib.entropy_loss(logits_u)
                    total = total + inv_replicas * ent
                    logs["entropy"] = ent
        grads = distribute.gradients(tape, total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        ce_mean = tf.reduce_mean(per_example)
        total_mean = ce_mean
        if "vat" in logs:
            total_mean += vat_weight * logs["vat"]
        if "entropy" in logs:
            total_mean += logs["entropy"]
        out = {"loss": total_mean, "ce": ce_mean,
               "accuracy": losses.sparse_categorical_accuracy(y_l, logits_l),
               "grad_norm": tf.linalg.global_norm(grads)}
        out.update(logs)
        return {k: tf.cast(val, tf.float32) for k, val in out.items()}

    return step_fn


def make_eval_metrics(model: Callable) -> Callable[..., Dict[str, tf.Tensor]]:
    """`metric_fn((x, y)) -> {'loss': CE [b], 'accuracy': 0/1 [b]}`, inference mode.

    For `tfcore.loop.make_eval_fn`, which averages them exactly over a whole set.
    """
    def metric_fn(batch):
        x, y = batch
        logits = model(x, training=False)
        return {"loss": losses.sparse_softmax_cross_entropy(y, logits, reduction="none"),
                "accuracy": losses.sparse_categorical_accuracy(y, logits,
                                                               reduction="none")}
    return metric_fn


def probabilities(model: Callable) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
    """`fn(images) -> {'probabilities': softmax(model(images))}`, for SavedModel export."""
    def fn(images):
        return {"probabilities": tf.nn.softmax(model(images, training=False), axis=-1)}
    return fn
