"""Tests for the functional-API chapter's models (models/, issue 4) and the registry.

Each model is checked against its Keras 3 functional equivalent with Keras's weights
copied in (outputs and gradients w.r.t. every variable; small hyperparameters where
the textbook's are big), parameter counts against Keras's `count_params()` at the
textbook's sizes and the chapter's figures, shared weights really shared, the
three-output loss weighting and train step, each functional model's `make_train_step`
(uncompiled, and it trains), and `summary` / `python -m models.summary` for every
name of `models.registry` against the Keras twins (`bench.keras_models`).
"""
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from absl import app, flags
from tfcore.summary import count_params
from tfcore.training.compile import compile_step
from models import multi_output, qa, registry, residual, separable_convnet, siamese, summary
from models.dense_example import DenseExample
from models.functional import named_inputs
from models.inception import InceptionModule
from models.multi_output import (LOSS_WEIGHTS, MultiOutputModel, make_train_step,
                                 multi_output_loss)
from models.qa import QuestionAnswering
from models.residual import ResidualBlock, ResidualNet
from models.separable_convnet import SeparableConvNet
from models.siamese import SiameseLSTM
from models.vision_tower import TwoCameraModel, VisionTower

L = keras.layers
ATOL, RTOL = 2e-5, 1e-4  # float32 parity of outputs and gradients through whole models


def _floats(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _tokens(shape, vocab, seed=0, low=0):
    return np.random.default_rng(seed).integers(low, vocab, size=shape).astype(np.int32)


# --------------------------------------------------------------------------------------
# Keras 3 functional equivalents. Layer names are our module paths joined by "__"
# (e.g. "block_1__conv_1"); a nested Keras model maps to our submodule of its name.
# --------------------------------------------------------------------------------------
def keras_dense_example():
    x = keras.Input((64,))
    h = L.Dense(32, activation="relu", name="dense_1")(x)
    h = L.Dense(32, activation="relu", name="dense_2")(h)
    return keras.Model(x, L.Dense(10, activation="softmax", name="dense_3")(h))


def keras_qa(text_vocab_size=10000, question_vocab_size=10000, answer_vocab_size=500,
             text_embedding_dim=64, question_embedding_dim=32, text_units=32,
             question_units=16, mask_zero=False):
    text = keras.Input((None,), dtype="int32", name="text")
    question = keras.Input((None,), dtype="int32", name="question")
    t = L.Embedding(text_vocab_size, text_embedding_dim, mask_zero=mask_zero,
                    name="text_embedding")(text)
    t = L.LSTM(text_units, name="text_lstm")(t)
    q = L.Embedding(question_vocab_size, question_embedding_dim, mask_zero=mask_zero,
                    name="question_embedding")(question)
    q = L.LSTM(question_units, name="question_lstm")(q)
    merged = L.concatenate([t, q], axis=-1)
    return keras.Model([text, question],
                       L.Dense(answer_vocab_size, activation="softmax", name="answer")(merged))


def keras_multi_output(vocab_size=50000, embedding_dim=256, num_income_groups=10,
                       filters=(128, 256, 256, 256, 256), kernel_size=5, pool_size=5,
                       dense_units=128):
    posts = keras.Input((None,), dtype="int32", name="posts")
    x = L.Embedding(vocab_size, embedding_dim, name="embedding")(posts)
    conv = [L.Conv1D(f, kernel_size, activation="relu", name=f"conv1d_{i + 1}")
            for i, f in enumerate(filters)]
    x = L.MaxPooling1D(pool_size)(conv[0](x))
    x = L.MaxPooling1D(pool_size)(conv[2](conv[1](x)))
    x = conv[4](conv[3](x))
    x = L.Dense(dense_units, activation="relu", name="dense")(L.GlobalMaxPooling1D()(x))
    age = L.Dense(1, name="age")(x)
    income = L.Dense(num_income_groups, activation="softmax", name="income")(x)
    gender = L.Dense(1, activation="sigmoid", name="gender")(x)
    return keras.Model(posts, [age, income, gender])


def keras_inception(input_shape, filters=128, strides=2):
    x = keras.Input(input_shape)

    def conv(k, s, n):
        return L.Conv2D(filters, k, strides=s, padding="same", activation="relu", name=n)

    a = conv(1, strides, "branch_a")(x)
    b = conv(3, strides, "branch_b_2")(conv(1, 1, "branch_b_1")(x))
    c = conv(3, 1, "branch_c_conv")(L.AveragePooling2D(3, strides=strides, padding="same")(x))
    d = conv(1, 1, "branch_d_1")(x)
    d = conv(3, strides, "branch_d_3")(conv(3, 1, "branch_d_2")(d))
    return keras.Model(x, L.concatenate([a, b, c, d], axis=-1))


def _keras_residual_block(x, filters, downsample, prefix):
    y = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{prefix}__conv_1")(x)
    y = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{prefix}__conv_2")(y)
    if downsample:
        y = L.MaxPooling2D(2, strides=2)(y)
        shortcut = L.Conv2D(filters, 1, strides=2, padding="same",
                            name=f"{prefix}__projection")(x)
    elif x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, padding="same", name=f"{prefix}__projection")(x)
    else:
        shortcut = x
    return L.add([y, shortcut])


def keras_residual_net(input_shape, filters=(64, 128), num_classes=10):
    x = keras.Input(input_shape)
    y = _keras_residual_block(x, filters[0], False, "block_1")
    y = _keras_residual_block(y, filters[0], False, "block_2")
    y = _keras_residual_block(y, filters[1], True, "block_3")
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(num_classes, activation="softmax", name="classifier")(y))


def keras_siamese(features=128, units=32):
    left, right = keras.Input((None, features)), keras.Input((None, features))
    lstm = L.LSTM(units, name="lstm")
    merged = L.concatenate([lstm(left), lstm(right)], axis=-1)
    return keras.Model([left, right], L.Dense(1, activation="sigmoid", name="classifier")(merged))


def keras_two_camera(image_shape, filters=(32, 64, 64)):
    inp = keras.Input(image_shape)
    x = L.MaxPooling2D(2)(L.Conv2D(filters[0], 3, activation="relu", name="conv_1")(inp))
    x = L.MaxPooling2D(2)(L.Conv2D(filters[1], 3, activation="relu", name="conv_2")(x))
    x = L.GlobalAveragePooling2D()(L.Conv2D(filters[2], 3, activation="relu", name="conv_3")(x))
    tower = keras.Model(inp, x, name="vision_tower")
    left, right = keras.Input(image_shape), keras.Input(image_shape)
    return keras.Model([left, right], L.concatenate([tower(left), tower(right)], axis=-1))


def keras_separable_convnet(num_classes=10):
    x = keras.Input((64, 64, 3))

    def sep(f, i):
        return L.SeparableConv2D(f, 3, activation="relu", name=f"separable_conv2d_{i}")

    y = L.MaxPooling2D(2)(sep(64, 2)(sep(32, 1)(x)))
    y = L.MaxPooling2D(2)(sep(128, 4)(sep(64, 3)(y)))
    y = L.GlobalAveragePooling2D()(sep(128, 6)(sep(64, 5)(y)))
    y = L.Dense(32, activation="relu", name="dense_1")(y)
    return keras.Model(x, L.Dense(num_classes, activation="softmax", name="dense_2")(y))


# --------------------------------------------------------------------------------------
# Weight copying: Keras layer name "a__b" -> our child "a", then its child "b".
# --------------------------------------------------------------------------------------
def _child(module, name):
    values = list(vars(module).values())
    while values:
        v = values.pop(0)
        if isinstance(v, tf.Module) and v.name == name:
            return v
        if isinstance(v, (list, tuple)):
            values.extend(v)
    raise AssertionError(f"{module.name} has no submodule named {name!r}")


def copy_keras_weights(ours, kmodel):
    """Assigns every Keras weight to our variable; returns [(ours_var, keras_var)]."""
    pairs = []
    for layer in kmodel.layers:
        if not layer.weights:
            continue
        target = ours
        for part in layer.name.split("__"):
            target = _child(target, part)
        if isinstance(layer, keras.Model):
            pairs += copy_keras_weights(target, layer)
            continue
        for w in layer.weights:
            var = getattr(target, w.path.split("/")[-1])
            assert tuple(var.shape) == tuple(w.shape), (layer.name, w.path)
            var.assign(np.asarray(w.numpy()))
            pairs.append((var, w))
    return pairs


def _flat_outputs(y):
    if isinstance(y, dict):
        return [y[k] for k in ("age", "income", "gender")]
    return list(y) if isinstance(y, (list, tuple)) else [y]


def check_parity(ours, kmodel, inputs, atol=ATOL, rtol=RTOL):
    """Same outputs and gradients (w.r.t. every variable) as the Keras model."""
    ours(inputs)  # build
    pairs = copy_keras_weights(ours, kmodel)
    # Every one of our variables got a Keras value (none left at our init).
    assert {id(v) for v, _ in pairs} == {id(v) for v in ours.variables}
    ys = _flat_outputs(kmodel(inputs))
    rs = [tf.constant(_floats(y.shape, 100 + i)) for i, y in enumerate(ys)]
    with tf.GradientTape(persistent=True) as tape:
        mine = _flat_outputs(ours(inputs))
        loss = tf.add_n([tf.reduce_sum(y * r) for y, r in zip(mine, rs)])
        theirs = _flat_outputs(kmodel(inputs))
        kloss = tf.add_n([tf.reduce_sum(y * r) for y, r in zip(theirs, rs)])
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a.numpy(), np.asarray(b), atol=atol, rtol=rtol)
    g_ours = tape.gradient(loss, [v for v, _ in pairs])
    g_keras = tape.gradient(kloss, [w for _, w in pairs])
    for (_, w), a, b in zip(pairs, g_ours, g_keras):
        np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(),
                                   tf.convert_to_tensor(b).numpy(),
                                   atol=atol, rtol=rtol, err_msg=w.path)
    return mine


# --------------------------------------------------------------------------------------
# Parity, model by model (small hyperparameters for the big ones)
# --------------------------------------------------------------------------------------
def test_dense_example_parity():
    keras.utils.set_random_seed(1)
    check_parity(DenseExample(), keras_dense_example(), tf.constant(_floats((4, 64))))


@pytest.mark.parametrize("mask_zero", [False, True])
def test_question_answering_parity(mask_zero):
    keras.utils.set_random_seed(2)
    hp = dict(text_vocab_size=40, question_vocab_size=30, answer_vocab_size=7,
              text_embedding_dim=6, question_embedding_dim=5, text_units=4,
              question_units=3, mask_zero=mask_zero)
    text = _tokens((3, 9), 40, 1)
    text[0, 6:] = 0          # right padding
    question = _tokens((3, 4), 30, 2)
    question[1, :2] = 0      # left padding
    y = check_parity(QuestionAnswering(**hp), keras_qa(**hp),
                     [tf.constant(text), tf.constant(question)])[0]
    assert y.shape == (3, 7)
    np.testing.assert_allclose(tf.reduce_sum(y, -1).numpy(), 1.0, atol=1e-5)


def _small_multi_output():
    return dict(vocab_size=30, embedding_dim=4, num_income_groups=3, filters=(3, 4, 4, 4, 4),
                dense_units=6)


def test_multi_output_parity_and_input_structures():
    keras.utils.set_random_seed(3)
    hp = _small_multi_output()
    posts = tf.constant(_tokens((2, 280), 30, 3))
    model = MultiOutputModel(**hp)
    age, income, gender = check_parity(model, keras_multi_output(**hp), posts)
    assert age.shape == (2, 1) and income.shape == (2, 3) and gender.shape == (2, 1)
    by_tensor = model(posts)
    for structure in ([posts], {"posts": posts}):
        out = model(structure)
        for k in ("age", "income", "gender"):
            np.testing.assert_array_equal(out[k].numpy(), by_tensor[k].numpy())
    with pytest.raises(ValueError, match="posts"):
        model({"text": posts})


def test_inception_module_parity_and_shape():
    keras.utils.set_random_seed(4)
    x = tf.constant(_floats((2, 9, 9, 3), 4))  # odd size: 'same' + stride 2 -> 5
    y = check_parity(InceptionModule(filters=4), keras_inception((9, 9, 3), filters=4), x)[0]
    assert y.shape == (2, 5, 5, 16)


def test_residual_net_parity_and_shortcut_kinds():
    keras.utils.set_random_seed(5)
    x = tf.constant(_floats((2, 8, 8, 3), 5))
    model = ResidualNet(filters=(4, 6), num_classes=5)
    check_parity(model, keras_residual_net((8, 8, 3), filters=(4, 6), num_classes=5), x)
    # block_1: 3 -> 4 channels (1x1 projection, stride 1); block_2 identity;
    # block_3: 4 -> 6 and downsampling (1x1 projection, stride 2).
    assert model.block_1.projection.strides == (1, 1)
    assert model.block_2.projection is None
    assert model.block_3.projection.strides == (2, 2)
    identity = ResidualBlock(3)
    x3 = tf.constant(_floats((1, 4, 4, 3), 6))
    y = identity(x3)
    np.testing.assert_allclose(y.numpy(), (identity.conv_2(identity.conv_1(x3)) + x3).numpy(),
                               atol=1e-6)
    assert identity.projection is None
    assert ResidualBlock(3, downsample=True)(x3).shape == (1, 2, 2, 3)


def test_siamese_lstm_parity():
    keras.utils.set_random_seed(6)
    left, right = tf.constant(_floats((3, 5, 6), 7)), tf.constant(_floats((3, 5, 6), 8))
    y = check_parity(SiameseLSTM(units=4), keras_siamese(features=6, units=4), [left, right])[0]
    assert y.shape == (3, 1)


def test_two_camera_model_parity():
    keras.utils.set_random_seed(7)
    left, right = tf.constant(_floats((2, 20, 20, 3), 9)), tf.constant(_floats((2, 20, 20, 3), 10))
    model = TwoCameraModel(VisionTower(filters=(3, 4, 5)))
    y = check_parity(model, keras_two_camera((20, 20, 3), filters=(3, 4, 5)), [left, right])[0]
    assert y.shape == (2, 10)


def test_separable_convnet_parity():
    keras.utils.set_random_seed(8)
    x = tf.constant(_floats((2, 64, 64, 3), 11))
    y = check_parity(SeparableConvNet(), keras_separable_convnet(), x)[0]
    assert y.shape == (2, 10)


# --------------------------------------------------------------------------------------
# Shared weights
# --------------------------------------------------------------------------------------
class _UnsharedSiamese(tf.Module):
    """The siamese model with two separate LSTMs (copies), to split the gradient."""

    def __init__(self, shared):
        super().__init__()
        self.left_lstm = tfcore.LSTM(shared.lstm.units)
        self.right_lstm = tfcore.LSTM(shared.lstm.units)
        self.classifier = shared.classifier

    def __call__(self, inputs):
        left, right = inputs
        return self.classifier(tfcore.concatenate([self.left_lstm(left),
                                                   self.right_lstm(right)]))


def test_siamese_lstm_one_variable_set_and_gradients_add_up():
    model = SiameseLSTM(units=4)
    left, right = tf.constant(_floats((3, 5, 6), 12)), tf.constant(_floats((3, 5, 6), 13))
    model([left, right])
    # One LSTM: kernel, recurrent_kernel, bias; plus the classifier's kernel and bias.
    assert len(model.variables) == 5
    assert sum(v.shape.num_elements() for v in model.variables) == \
        keras_siamese(features=6, units=4).count_params()
    twin = _UnsharedSiamese(model)
    twin([left, right])
    lstm_vars = [model.lstm.kernel, model.lstm.recurrent_kernel, model.lstm.bias]
    for branch in (twin.left_lstm, twin.right_lstm):
        for mine, v in zip([branch.kernel, branch.recurrent_kernel, branch.bias], lstm_vars):
            mine.assign(v)
    np.testing.assert_allclose(twin([left, right]).numpy(), model([left, right]).numpy(),
                               atol=1e-6)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(model([left, right]))
        twin_loss = tf.reduce_sum(twin([left, right]))
    shared = tape.gradient(loss, lstm_vars)
    g_left = tape.gradient(twin_loss, [twin.left_lstm.kernel, twin.left_lstm.recurrent_kernel,
                                       twin.left_lstm.bias])
    g_right = tape.gradient(twin_loss, [twin.right_lstm.kernel,
                                        twin.right_lstm.recurrent_kernel, twin.right_lstm.bias])
    for g, a, b in zip(shared, g_left, g_right):
        assert np.abs(a.numpy()).max() > 0 and np.abs(b.numpy()).max() > 0
        np.testing.assert_allclose(g.numpy(), (a + b).numpy(), atol=1e-6, rtol=1e-5)
        assert not np.allclose(g.numpy(), a.numpy())  # both branches contribute


def test_two_camera_model_shares_one_tower():
    tower = VisionTower(filters=(3, 4, 5))
    model = TwoCameraModel(tower)
    x = tf.constant(_floats((1, 20, 20, 3), 14))
    y = model({"left": x, "right": x})
    np.testing.assert_array_equal(y[:, :5].numpy(), y[:, 5:].numpy())
    assert {id(v) for v in model.variables} == {id(v) for v in tower.variables}
    assert len(model.variables) == 6


# --------------------------------------------------------------------------------------
# Parameter counts: Keras's count_params() at the textbook's sizes, and the figures
# --------------------------------------------------------------------------------------
PARAM_CASES = {
    "dense_example": keras_dense_example,
    "qa": keras_qa,
    "multi_output": keras_multi_output,
    "inception": lambda: keras_inception((32, 32, 64)),
    "residual": lambda: keras_residual_net((32, 32, 3)),
    "siamese_lstm": keras_siamese,
    "vision_tower": lambda: keras_two_camera((64, 64, 3)),
    "separable_convnet": keras_separable_convnet,
}


def _keras_count_params(name):
    """`count_params()` of the Keras twin of registry model `name`: the functional
    ones above, the bench's (`bench.keras_models`, built on the registry's data) and
    the DCGAN's two networks."""
    if name in PARAM_CASES:
        return PARAM_CASES[name]().count_params()
    from bench import keras_models  # pylint: disable=import-outside-toplevel
    from models.dcgan import DEFAULT_LATENT_DIM  # pylint: disable=import-outside-toplevel
    if name in ("dcgan_generator", "dcgan", "dcgan_mixed"):  # keras_models.DCGAN's nets
        count = keras_models.dcgan_generator(latent_dim=DEFAULT_LATENT_DIM).count_params()
        return count + (0 if name == "dcgan_generator" else _keras_count_params(
            "dcgan_discriminator"))
    if name == "dcgan_discriminator":
        return keras_models.dcgan_discriminator().count_params()
    data = registry.get(name).data(2, np.random.default_rng(0))
    return keras_models.build(name, data, jit_compile=False).model.count_params()


def _one(name):
    (model, shapes), = registry.modules(name).values()
    return model, shapes


def test_registry_lists_the_bench_and_functional_models_once():
    from bench import keras_models  # pylint: disable=import-outside-toplevel
    assert len(set(registry.NAMES)) == len(registry.NAMES)
    assert set(PARAM_CASES) | set(keras_models.NAMES) <= set(registry.NAMES)
    assert set(keras_models.NAMES) <= set(registry.TRAINABLE)
    assert set(registry.TRAINABLE) & set(PARAM_CASES) == set(keras_models.FUNCTIONAL)
    for name in registry.TRAINABLE:
        entry = registry.get(name)
        assert entry.batch_size > 0 and entry.data is not None, name
    assert set(registry.modules("dcgan")) == {"dcgan_generator", "dcgan_discriminator"}
    with pytest.raises(ValueError, match="unknown model 'nope'.*separable_convnet.*dcgan"):
        registry.get("nope")


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_registry_model_summarises_with_keras_count_params(name):
    """`models.summary` of every registry name (the bench's, the functional models,
    the DCGAN's networks), its total against the Keras twin's count_params()."""
    parts = registry.modules(name)
    text = summary.summarize(name, parts=parts)
    want = _keras_count_params(name)
    totals = re.findall(r"^.*Total params: ([\d,]+)$", text, flags=re.M)
    assert int(totals[-1].replace(",", "")) == want, text
    assert len(totals) == (len(parts) + 1 if len(parts) > 1 else 1)  # per part, the sum
    assert sum(count_params(m) for m, _ in parts.values()) == want
    assert sum(v.shape.num_elements() for m, _ in parts.values() for v in m.variables) == want


def _param_column(text):
    body = text.splitlines()
    start = [i for i, l in enumerate(body) if l.startswith("Layer (type)")][0] + 2
    counts = []
    for line in body[start:]:
        if line.startswith("="):
            break
        counts.append(int(line.split()[-1].replace(",", "")))
    return counts


def test_separable_convnet_and_dense_example_figures():
    model, shapes = _one("separable_convnet")
    text = tfcore.summary(model, shapes)
    assert [c for c in _param_column(text) if c] == [155, 2400, 4736, 8896, 9408, 8896, 4128, 330]
    assert "Total params: 38,949" in text
    assert "(None, 9, 9, 128)" in text and "Output: (None, 10)" in text
    model, shapes = _one("dense_example")
    text = tfcore.summary(model, shapes)
    assert _param_column(text) == [2080, 1056, 330]
    assert "Total params: 3,466" in text
    kd = keras_dense_example()
    assert [l.count_params() for l in kd.layers if l.weights] == [2080, 1056, 330]


def test_summary_shared_and_nested_rows():
    text = tfcore.summary(TwoCameraModel(), {"left": (None, 64, 64, 3),
                                             "right": (None, 64, 64, 3)},
                          expand_nested=True)
    assert "vision_tower (VisionTower)" in text and "(None, 64) x2" in text
    assert "  conv_1 (Conv2D)" in text and "(None, 62, 62, 32) x2" in text
    assert "Total params: 56,320" in text and "Output: (None, 128)" in text
    text = tfcore.summary(ResidualNet(), (None, 32, 32, 3), expand_nested=True)
    assert "  projection (Conv2D)" in text  # created lazily, still listed


# --------------------------------------------------------------------------------------
# Three-output loss weighting and the train step
# --------------------------------------------------------------------------------------
def _multi_output_batch(groups=3, seed=20):
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 70, size=(4, 1)).astype(np.float32)
    income_labels = rng.integers(0, groups, size=4)
    income = np.eye(groups, dtype=np.float32)[income_labels]
    gender = rng.integers(0, 2, size=(4, 1)).astype(np.float32)
    return age, income, income_labels, gender


def test_multi_output_loss_weights_against_hand_computation():
    age, income, labels, gender = _multi_output_batch()
    rng = np.random.default_rng(21)
    p_age = rng.uniform(20, 60, size=(4, 1)).astype(np.float32)
    p_income = rng.dirichlet(np.ones(3), size=4).astype(np.float32)
    p_gender = rng.uniform(0.05, 0.95, size=(4, 1)).astype(np.float32)
    mse = np.mean((age - p_age) ** 2)
    cce = np.mean(-np.sum(income * np.log(p_income), axis=-1))
    bce = np.mean(-(gender * np.log(p_gender) + (1 - gender) * np.log(1 - p_gender)))
    want = 0.25 * mse + 1.0 * cce + 10.0 * bce
    preds = {"age": p_age, "income": p_income, "gender": p_gender}
    total, parts = multi_output_loss([age, income, gender], preds)
    np.testing.assert_allclose(total.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose([parts["age"], parts["income"], parts["gender"]],
                               [mse, cce, bce], rtol=1e-5)
    # Lists and dicts (targets, predictions, weights) give the same loss.
    for targets in ({"gender": gender, "age": age, "income": income},
                    {"gender": gender, "age": age, "income": labels},   # integer labels
                    (age, income, gender)):
        for p in (preds, [p_age, p_income, p_gender]):
            t2, _ = multi_output_loss(targets, p)
            np.testing.assert_allclose(t2.numpy(), total.numpy(), rtol=1e-6)
    t3, _ = multi_output_loss(targets, preds, {"income": 1.0, "gender": 10.0, "age": 0.25})
    np.testing.assert_allclose(t3.numpy(), total.numpy(), rtol=1e-6)
    t4, _ = multi_output_loss(targets, preds, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(t4.numpy(), mse + cce + bce, rtol=1e-5)
    assert LOSS_WEIGHTS == (0.25, 1.0, 10.0)
    with pytest.raises(ValueError, match="keys"):
        multi_output_loss({"age": age, "income": income}, preds)
    with pytest.raises(ValueError, match="list of 3"):
        multi_output_loss([age, income], preds)


def test_multi_output_train_step_matches_keras_fit_step():
    keras.utils.set_random_seed(9)
    hp = _small_multi_output()
    posts = _tokens((4, 270), 30, 22)
    age, income, _, gender = _multi_output_batch()
    kmodel = keras_multi_output(**hp)
    kmodel.compile(optimizer=keras.optimizers.SGD(0.01),
                   loss=["mse", "categorical_crossentropy", "binary_crossentropy"],
                   loss_weights=[0.25, 1.0, 10.0], run_eagerly=True)
    model = MultiOutputModel(**hp)
    model(posts)
    pairs = copy_keras_weights(model, kmodel)
    targets = {"age": age, "income": income, "gender": gender}
    logs = kmodel.train_on_batch(posts, [age, income, gender], return_dict=True)
    optimizer = tfcore.SGD(0.01)
    out = make_train_step(model, optimizer)(({"posts": tf.constant(posts)}, targets), None)
    np.testing.assert_allclose(out["loss"].numpy(), logs["loss"], rtol=1e-5)
    for mine, w in pairs:
        np.testing.assert_allclose(mine.numpy(), w.numpy(), atol=1e-5, rtol=1e-5,
                                   err_msg=w.path)


def test_multi_output_compiled_train_steps_equal_eager():
    hp = _small_multi_output()
    posts = tf.constant(_tokens((4, 270), 30, 23))
    age, income, _, gender = _multi_output_batch(seed=24)
    batch = (posts, [tf.constant(age), tf.constant(income), tf.constant(gender)])
    models = [MultiOutputModel(**hp) for _ in range(3)]  # eager, tf.function, XLA
    for m in models:
        m(posts)
        for a, b in zip(m.variables, models[0].variables):
            a.assign(b)
    before = [v.numpy() for v in models[0].trainable_variables]
    opts = [tfcore.SGD(0.05) for _ in models]
    # The step is uncompiled; the loop compiles it (compile_step), in graph mode or XLA.
    steps = [make_train_step(models[0], opts[0]),
             compile_step(make_train_step(models[1], opts[1]), jit=False),
             compile_step(make_train_step(models[2], opts[2]), jit=True)]
    seed = tf.constant([0, 1], tf.int64)
    for _ in range(2):
        logs = [step(batch, seed) for step in steps]
    for got, m in zip(logs[1:], models[1:]):
        for k in ("loss", "age_loss", "income_loss", "gender_loss"):
            np.testing.assert_allclose(got[k].numpy(), logs[0][k].numpy(), rtol=1e-4, atol=1e-5)
        for a, b in zip(m.variables, models[0].variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, rtol=1e-4)
    moved = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, models[0].trainable_variables)]
    assert all(moved)  # every variable, the embedding included, got a gradient


def _small_batches():
    """(module, model, batch) of each functional model with a train step, small."""
    rng = np.random.default_rng(30)
    onehot = lambda n, k: np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]  # noqa: E731
    posts = _tokens((4, 270), 30, 31)
    age, income, _, gender = _multi_output_batch(seed=32)
    return [
        ("separable_convnet", separable_convnet, SeparableConvNet(num_classes=3),
         (_floats((4, 32, 32, 3), 33), onehot(4, 3))),
        ("residual", residual, ResidualNet(filters=(4, 6), num_classes=3),
         (_floats((4, 8, 8, 3), 34), onehot(4, 3))),
        ("qa", qa, QuestionAnswering(text_vocab_size=40, question_vocab_size=30,
                                     answer_vocab_size=5, text_embedding_dim=6,
                                     question_embedding_dim=5, text_units=4,
                                     question_units=3),
         ((_tokens((4, 9), 40, 35), _tokens((4, 4), 30, 36)), onehot(4, 5))),
        ("siamese_lstm", siamese, SiameseLSTM(units=4),
         ((_floats((4, 5, 6), 37), _floats((4, 5, 6), 38)),
          rng.integers(0, 2, (4, 1)).astype(np.float32))),
        ("multi_output", multi_output, MultiOutputModel(**_small_multi_output()),
         (posts, (age, income, gender))),
    ]


def test_each_functional_models_step_is_uncompiled_and_trains():
    """Every functional model's `make_train_step`: a plain function (the loop compiles
    it) taking (batch, seed), whose loss goes down on a fixed batch in a few steps;
    every trainable variable moves."""
    seed = tf.constant([0, 1], tf.int64)
    for name, module, model, batch in _small_batches():
        batch = tf.nest.map_structure(tf.constant, batch)
        model(batch[0])
        opt = tfcore.Adam(learning_rate=0.01)
        opt.build(model.trainable_variables)
        step = module.make_train_step(model, opt)
        assert not isinstance(step, tf.types.experimental.PolymorphicFunction), name
        before = [v.numpy() for v in model.trainable_variables]
        losses = [float(step(batch, seed)["loss"]) for _ in range(4)]
        assert losses[-1] < losses[0], (name, losses)
        assert all(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, model.trainable_variables)), name


def test_named_inputs_errors():
    x = tf.zeros([1, 2])
    assert named_inputs({"left": x, "right": x}, ("left", "right"), "M")[0] is x
    with pytest.raises(ValueError, match=r"exactly the keys \['left', 'right'\]"):
        named_inputs({"left": x}, ("left", "right"), "M")
    with pytest.raises(ValueError, match="expected 2 inputs"):
        named_inputs([x], ("left", "right"), "M")
    with pytest.raises(ValueError, match="list or dict"):
        named_inputs(x, ("left", "right"), "M")


# --------------------------------------------------------------------------------------
# python -m models.summary (its main)
# --------------------------------------------------------------------------------------
def test_summary_binary_prints_tables_and_rejects_unknown_names(capsys):
    """`python -m models.summary`'s main (its flags on their own FlagValues): the
    DCGAN's two tables and their total, a functional model, unknown / missing names
    (the message lists every name)."""
    def main(*argv):
        fv = flags.FlagValues()
        summary.define_flags(fv)
        return summary.main(fv(["models.summary", *argv]), fv)

    main("--model=dcgan")
    out = capsys.readouterr().out
    assert "dcgan_generator:\n" in out and "dcgan_discriminator:\n" in out
    assert "up_sampling2d_2 (UpSampling2D)" in out
    totals = [int(t.replace(",", "")) for t in re.findall(r"Total params: ([\d,]+)", out)]
    assert len(totals) == 3 and totals[2] == totals[0] + totals[1] > 0
    assert out.rstrip().endswith(
        f"dcgan (dcgan_generator + dcgan_discriminator): Total params: {totals[2]:,}")
    main("--model=separable_convnet")
    out = capsys.readouterr().out
    assert "Total params: 38,949" in out and "separable_conv2d_6 (SeparableConv2D)" in out
    for argv, message in ((["--model=resnet50"], "unknown model 'resnet50'; known models: "),
                          ([], "--model is required; one of: ")):
        with pytest.raises(app.UsageError, match=message) as e:
            main(*argv)
        assert all(name in str(e.value) for name in registry.NAMES)
