"""Tests for the functional-API blocks (issue 4): Embedding, LSTM, Conv1D, MaxPool1D,
global pooling, DepthwiseConv2D, SeparableConv2D, concatenate / add, summary.

Every block is checked against the real Keras 3 layer with Keras's weights copied in
(outputs and gradients w.r.t. inputs and variables), eager == tf.function == XLA,
variables built once with Keras's names and shapes, and argument validation.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore

ATOL = 1e-5  # float32 parity tolerance for outputs and gradients (abs, and rel 1e-5)
RTOL = 1e-5


def _rng(seed=0):
    return np.random.default_rng(seed)


def _floats(shape, seed=0):
    return _rng(seed).normal(size=shape).astype(np.float32)


def _tokens(shape, vocab, seed=0):
    return _rng(seed).integers(0, vocab, size=shape).astype(np.int32)


def _copy_keras_weights(ours, keras_layer):
    """Copies each Keras weight into our variable of the same (last path) name."""
    names = []
    for w in keras_layer.weights:
        name = w.path.split("/")[-1]
        var = getattr(ours, name)
        assert tuple(var.shape) == tuple(w.shape), (name, var.shape, w.shape)
        var.assign(np.asarray(w.numpy()))
        names.append(name)
    return names


def _dense_grad(g):
    return tf.convert_to_tensor(g).numpy()


# --------------------------------------------------------------------------------------
# One descriptor per block configuration: (id, ours, keras, input, call kwargs)
# --------------------------------------------------------------------------------------
def _cases():
    L = keras.layers
    return [
        ("embedding", lambda: tfcore.Embedding(11, 4), lambda: L.Embedding(11, 4),
         lambda: _tokens((3, 5), 11), {}),
        ("lstm_last", lambda: tfcore.LSTM(5), lambda: L.LSTM(5),
         lambda: _floats((2, 6, 3)), {}),
        ("lstm_seq", lambda: tfcore.LSTM(4, return_sequences=True),
         lambda: L.LSTM(4, return_sequences=True), lambda: _floats((2, 5, 3), 1), {}),
        ("lstm_relu_nobias_backwards",
         lambda: tfcore.LSTM(3, activation="relu", use_bias=False, go_backwards=True,
                             return_sequences=True),
         lambda: L.LSTM(3, activation="relu", use_bias=False, go_backwards=True,
                        return_sequences=True), lambda: _floats((2, 4, 3), 2), {}),
        ("conv1d_valid", lambda: tfcore.Conv1D(4, 3, activation="relu"),
         lambda: L.Conv1D(4, 3, activation="relu"), lambda: _floats((2, 9, 3), 3), {}),
        ("conv1d_same_s2", lambda: tfcore.Conv1D(3, 4, strides=2, padding="same"),
         lambda: L.Conv1D(3, 4, strides=2, padding="same"), lambda: _floats((2, 9, 2), 4), {}),
        ("conv1d_causal_d2", lambda: tfcore.Conv1D(3, 3, padding="causal", dilation_rate=2,
                                                   use_bias=False),
         lambda: L.Conv1D(3, 3, padding="causal", dilation_rate=2, use_bias=False),
         lambda: _floats((2, 8, 2), 5), {}),
        ("maxpool1d", lambda: tfcore.MaxPool1D(), lambda: L.MaxPooling1D(),
         lambda: _floats((2, 9, 3), 6), {}),
        ("maxpool1d_same", lambda: tfcore.MaxPool1D(3, strides=2, padding="same"),
         lambda: L.MaxPooling1D(3, strides=2, padding="same"), lambda: _floats((2, 8, 3), 7), {}),
        ("gmp1d", lambda: tfcore.GlobalMaxPool1D(), lambda: L.GlobalMaxPooling1D(),
         lambda: _floats((2, 7, 3), 8), {}),
        ("gap1d", lambda: tfcore.GlobalAveragePool1D(), lambda: L.GlobalAveragePooling1D(),
         lambda: _floats((2, 7, 3), 9), {}),
        ("gap2d", lambda: tfcore.GlobalAveragePool2D(), lambda: L.GlobalAveragePooling2D(),
         lambda: _floats((2, 5, 4, 3), 10), {}),
        ("gap2d_keepdims", lambda: tfcore.GlobalAveragePool2D(keepdims=True),
         lambda: L.GlobalAveragePooling2D(keepdims=True), lambda: _floats((2, 5, 4, 3), 11), {}),
        ("gmp2d", lambda: tfcore.GlobalMaxPool2D(), lambda: L.GlobalMaxPooling2D(),
         lambda: _floats((2, 5, 4, 3), 12), {}),
        ("depthwise", lambda: tfcore.DepthwiseConv2D(3), lambda: L.DepthwiseConv2D(3),
         lambda: _floats((2, 7, 6, 3), 13), {}),
        ("depthwise_dm2_same_s2",
         lambda: tfcore.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=2,
                                        activation="relu"),
         lambda: L.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=2,
                                   activation="relu"),
         lambda: _floats((2, 7, 6, 3), 14), {}),
        ("separable", lambda: tfcore.SeparableConv2D(5, 3, activation="relu"),
         lambda: L.SeparableConv2D(5, 3, activation="relu"), lambda: _floats((2, 7, 6, 3), 15), {}),
        ("separable_dm2_same_s2",
         lambda: tfcore.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2,
                                        use_bias=False),
         lambda: L.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2,
                                   use_bias=False),
         lambda: _floats((2, 7, 6, 3), 16), {}),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


def _loss_weights(y, seed=99):
    return tf.constant(_floats(y.shape, seed))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parity_with_keras_outputs_and_gradients(case):
    _, make_ours, make_keras, make_x, kwargs = case
    keras.utils.set_random_seed(1)
    x = make_x()
    k = make_keras()
    yk0 = k(x, **kwargs)
    ours = make_ours()
    ours(tf.constant(x), **kwargs)  # build
    copied = _copy_keras_weights(ours, k)
    assert sorted(copied) == sorted(v.name.split(":")[0].split("/")[-1] for v in ours.variables)

    is_float = x.dtype == np.float32
    xt = tf.constant(x)
    r = _loss_weights(yk0)
    with tf.GradientTape(persistent=True) as tape:
        if is_float:
            tape.watch(xt)
        y = ours(xt, **kwargs)
        loss = tf.reduce_sum(y * r)
    with tf.GradientTape(persistent=True) as ktape:
        xk = tf.constant(x)
        if is_float:
            ktape.watch(xk)
        yk = k(xk, **kwargs)
        kloss = tf.reduce_sum(yk * r)
    np.testing.assert_allclose(y.numpy(), np.asarray(yk), atol=ATOL, rtol=RTOL)
    if is_float:
        np.testing.assert_allclose(tape.gradient(loss, xt).numpy(),
                                   ktape.gradient(kloss, xk).numpy(), atol=ATOL, rtol=RTOL)
    if k.trainable_weights:
        kgrads = ktape.gradient(kloss, k.trainable_weights)
        ours_by_name = {v.name.split(":")[0].split("/")[-1]: v for v in ours.trainable_variables}
        mine = tape.gradient(loss, [ours_by_name[w.path.split("/")[-1]]
                                    for w in k.trainable_weights])
        for w, g_ours, g_k in zip(k.trainable_weights, mine, kgrads):
            np.testing.assert_allclose(_dense_grad(g_ours), _dense_grad(g_k),
                                       atol=ATOL, rtol=RTOL, err_msg=w.path)
    assert ours.count_params() == k.count_params()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eager_equals_tf_function_equals_xla(case):
    _, make_ours, _, make_x, kwargs = case
    ours = make_ours()
    x = tf.constant(make_x())
    y = ours(x, **kwargs)
    n_vars = len(ours.variables)
    y_fn = tf.function(lambda t: ours(t, **kwargs))(x)
    y_xla = tf.function(lambda t: ours(t, **kwargs), jit_compile=True)(x)
    np.testing.assert_allclose(y_fn.numpy(), y.numpy(), atol=1e-6)
    np.testing.assert_allclose(y_xla.numpy(), y.numpy(), atol=1e-5)
    assert len(ours.variables) == n_vars  # built once


# --------------------------------------------------------------------------------------
# LSTM: masking, Embedding(mask_zero) -> LSTM, state, initialisers, dynamic shapes
# --------------------------------------------------------------------------------------
_MASK = np.array([[1, 1, 1, 0, 0, 0],     # right padded
                  [0, 0, 1, 1, 1, 1],     # left padded: output zeros until step 2
                  [1, 0, 1, 0, 1, 1]],    # holes
                 dtype=bool)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_masking_matches_keras(return_sequences):
    keras.utils.set_random_seed(2)
    x = _floats((3, 6, 4), 20)
    k = keras.layers.LSTM(5, return_sequences=return_sequences)
    k(x)
    ours = tfcore.LSTM(5, return_sequences=return_sequences)
    ours(tf.constant(x))
    _copy_keras_weights(ours, k)
    xt = tf.constant(x)
    mask = tf.constant(_MASK)
    r = tf.constant(_floats((3, 6, 5) if return_sequences else (3, 5), 21))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y = ours(xt, mask=mask)
        loss = tf.reduce_sum(y * r)
        yk = k(xt, mask=mask)
        kloss = tf.reduce_sum(yk * r)
    np.testing.assert_allclose(y.numpy(), yk.numpy(), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(),
                               tape.gradient(kloss, xt).numpy(), atol=ATOL, rtol=RTOL)
    for ours_v, kw in zip([ours.kernel, ours.recurrent_kernel, ours.bias], k.trainable_weights):
        np.testing.assert_allclose(tape.gradient(loss, ours_v).numpy(),
                                   tape.gradient(kloss, kw).numpy(), atol=ATOL, rtol=RTOL)
    # Masked steps really are skipped: the gradient w.r.t. masked inputs is zero.
    gx = tape.gradient(loss, xt).numpy()
    assert np.all(gx[~_MASK] == 0.0)
    if return_sequences:
        y = y.numpy()
        assert np.all(y[1, :2] == 0.0)             # before the first real step
        np.testing.assert_array_equal(y[0, 3:], np.repeat(y[0, 2:3], 3, axis=0))
        np.testing.assert_array_equal(y[2, 1], y[2, 0])


def test_embedding_mask_zero_feeds_lstm_like_keras():
    keras.utils.set_random_seed(3)
    tokens = np.array([[3, 5, 2, 0, 0], [0, 0, 7, 1, 4], [6, 0, 2, 9, 0]], np.int32)
    km = keras.Sequential([keras.Input((5,), dtype="int32"),
                           keras.layers.Embedding(10, 4, mask_zero=True),
                           keras.layers.LSTM(3, return_sequences=True)])
    emb = tfcore.Embedding(10, 4, mask_zero=True)
    lstm = tfcore.LSTM(3, return_sequences=True)
    lstm(emb(tokens))
    _copy_keras_weights(emb, km.layers[0])
    _copy_keras_weights(lstm, km.layers[1])
    mask = emb.compute_mask(tokens)
    np.testing.assert_array_equal(mask.numpy(), tokens != 0)
    assert tfcore.Embedding(10, 4).compute_mask(tokens) is None
    np.testing.assert_allclose(lstm(emb(tokens), mask=mask).numpy(), km(tokens).numpy(),
                               atol=ATOL, rtol=RTOL)


def test_lstm_return_state_and_initial_state_match_keras():
    keras.utils.set_random_seed(4)
    x = _floats((2, 4, 3), 30)
    h0, c0 = _floats((2, 5), 31), _floats((2, 5), 32)
    k = keras.layers.LSTM(5, return_state=True)
    k(x)
    ours = tfcore.LSTM(5, return_state=True)
    ours(tf.constant(x))
    _copy_keras_weights(ours, k)
    got = ours(tf.constant(x), initial_state=[h0, c0])
    want = k(x, initial_state=[h0, c0])
    assert len(got) == 3
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), np.asarray(b), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(got[0].numpy(), got[1].numpy())  # output == h_T


def test_lstm_variables_names_shapes_and_initialisers():
    lstm = tfcore.LSTM(6)
    lstm(tf.zeros([1, 2, 4]))
    assert sorted(v.name for v in lstm.variables) == ["lstm/bias:0", "lstm/kernel:0",
                                                      "lstm/recurrent_kernel:0"]
    assert lstm.kernel.shape == (4, 24) and lstm.recurrent_kernel.shape == (6, 24)
    b = lstm.bias.numpy()
    np.testing.assert_array_equal(b[6:12], 1.0)                 # forget gate
    np.testing.assert_array_equal(np.delete(b, range(6, 12)), 0.0)
    rk = lstm.recurrent_kernel.numpy()                          # orthogonal rows
    np.testing.assert_allclose(rk @ rk.T, np.eye(6), atol=1e-5)
    no_forget = tfcore.LSTM(2, unit_forget_bias=False)
    no_forget(tf.zeros([1, 2, 3]))
    np.testing.assert_array_equal(no_forget.bias.numpy(), 0.0)
    emb = tfcore.Embedding(50, 7)
    emb(tf.zeros([1, 2], tf.int32))
    e = emb.embeddings.numpy()
    assert emb.embeddings.name == "embedding/embeddings:0" and e.shape == (50, 7)
    assert e.min() >= -0.05 and e.max() <= 0.05 and e.std() > 0.02


def test_lstm_unknown_batch_and_time_through_tensor_spec():
    lstm = tfcore.LSTM(3, return_sequences=True)
    x = tf.constant(_floats((2, 5, 4), 40))
    mask = tf.constant(_MASK[:2, :5])
    want = lstm(x, mask=mask)
    fn = tf.function(lambda t, m: lstm(t, mask=m),
                     input_signature=[tf.TensorSpec([None, None, 4]),
                                      tf.TensorSpec([None, None], tf.bool)])
    np.testing.assert_allclose(fn(x, mask).numpy(), want.numpy(), atol=1e-6)
    np.testing.assert_allclose(fn(x[:1, :3], mask[:1, :3]).numpy(),
                               lstm(x[:1, :3], mask=mask[:1, :3]).numpy(), atol=1e-6)


def test_lstm_masked_xla_matches_eager():
    lstm = tfcore.LSTM(3)
    x = tf.constant(_floats((3, 6, 2), 41))
    mask = tf.constant(_MASK)
    want = lstm(x, mask=mask)
    got = tf.function(lambda t, m: lstm(t, mask=m), jit_compile=True)(x, mask)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_embedding_gradient_is_indexed_slices_and_float_ids_are_cast():
    emb = tfcore.Embedding(6, 2)
    ids = tf.constant([[1, 1, 4]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(emb(ids))
    g = tape.gradient(loss, emb.embeddings)
    assert isinstance(g, tf.IndexedSlices)
    dense = tf.convert_to_tensor(g).numpy()
    np.testing.assert_array_equal(dense[:, 0], [0, 2, 0, 0, 1, 0])
    np.testing.assert_array_equal(emb(tf.constant([[1.0, 4.0]])).numpy(),
                                  emb(tf.constant([[1, 4]])).numpy())


# --------------------------------------------------------------------------------------
# Numbers against NumPy and shapes
# --------------------------------------------------------------------------------------
def test_separable_equals_depthwise_then_pointwise_numpy():
    x = _floats((1, 5, 5, 2), 50)
    sep = tfcore.SeparableConv2D(3, 3, depth_multiplier=2)
    y = sep(tf.constant(x)).numpy()
    dk, pk, b = sep.depthwise_kernel.numpy(), sep.pointwise_kernel.numpy(), sep.bias.numpy()
    b = b + _floats(b.shape, 51)
    sep.bias.assign(b)
    y = sep(tf.constant(x)).numpy()
    d = np.zeros((1, 3, 3, 4), np.float32)
    for i in range(3):
        for j in range(3):
            patch = x[0, i:i + 3, j:j + 3, :]                    # [3, 3, 2]
            for c in range(2):
                for m in range(2):
                    d[0, i, j, c * 2 + m] = np.sum(patch[:, :, c] * dk[:, :, c, m])
    want = d @ pk[0, 0] + b
    np.testing.assert_allclose(y, want, atol=1e-5)
    assert sep.count_params() == 3 * 3 * 2 * 2 + 4 * 3 + 3


def test_conv1d_causal_output_depends_only_on_the_past():
    conv = tfcore.Conv1D(2, 3, padding="causal")
    x = _floats((1, 7, 2), 52)
    y = conv(tf.constant(x)).numpy()
    x2 = x.copy()
    x2[:, 4:] += 10.0
    y2 = conv(tf.constant(x2)).numpy()
    assert y.shape == (1, 7, 2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert not np.allclose(y[:, 4:], y2[:, 4:])


def test_merge_concatenate_and_add():
    a, b, c = _floats((2, 3), 60), _floats((2, 4), 61), _floats((2, 3), 62)
    np.testing.assert_array_equal(tfcore.concatenate([a, b]).numpy(),
                                  np.concatenate([a, b], -1))
    np.testing.assert_array_equal(tfcore.concatenate([a[None], c[None]], axis=0).numpy(),
                                  np.stack([a, c]))
    np.testing.assert_allclose(tfcore.add([a, c, a]).numpy(), a + c + a, atol=1e-6)
    np.testing.assert_allclose(tfcore.add([a, c[:1]]).numpy(), a + c[:1], atol=1e-6)
    k = keras.layers.Concatenate()([a, b])
    np.testing.assert_array_equal(tfcore.concatenate([a, b]).numpy(), np.asarray(k))
    np.testing.assert_allclose(tfcore.add([a, c]).numpy(),
                               np.asarray(keras.layers.Add()([a, c])), atol=1e-6)
    with pytest.raises(ValueError, match="shapes must match"):
        tfcore.concatenate([a, _floats((3, 4))])
    with pytest.raises(ValueError, match="same rank"):
        tfcore.concatenate([a, a[None]])
    with pytest.raises(ValueError, match="broadcast"):
        tfcore.add([a, b])
    with pytest.raises(ValueError, match="at least 2"):
        tfcore.add([a])
    with pytest.raises(ValueError, match="list"):
        tfcore.concatenate(a)


# --------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: tfcore.Embedding(0, 4), "input_dim.*0"),
    (lambda: tfcore.Embedding(10, -2), "output_dim.*-2"),
    (lambda: tfcore.LSTM(0), "units.*0"),
    (lambda: tfcore.LSTM(4, activation="swishy"), "swishy"),
    (lambda: tfcore.Conv1D(4, 3, padding="full"), "padding.*'full'"),
    (lambda: tfcore.Conv1D(4, 0), "kernel_size.*0"),
    (lambda: tfcore.Conv1D(4, 3, strides=2, dilation_rate=2), "dilation_rate=2"),
    (lambda: tfcore.MaxPool1D(0), "pool_size.*0"),
    (lambda: tfcore.MaxPool1D(2, padding="causal"), "padding.*'causal'"),
    (lambda: tfcore.GlobalMaxPool1D(keepdims="yes"), "keepdims.*'yes'"),
    (lambda: tfcore.DepthwiseConv2D(3, depth_multiplier=0), "depth_multiplier.*0"),
    (lambda: tfcore.DepthwiseConv2D((3, 3, 3)), r"kernel_size.*\(3, 3, 3\)"),
    (lambda: tfcore.SeparableConv2D(0, 3), "filters.*0"),
    (lambda: tfcore.SeparableConv2D(4, 3, padding="causal"), "padding.*'causal'"),
    (lambda: tfcore.LSTM(4, recurrent_initializer="eye"), "initializer 'eye'"),
    (lambda: tfcore.Embedding(4, 2, embeddings_initializer="uniformish"), "'uniformish'"),
])
def test_bad_arguments_raise_value_error_quoting_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_ranks_raise():
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        tfcore.LSTM(2)(tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="rank 3"):
        tfcore.GlobalMaxPool1D()(tf.zeros([2, 3, 4, 5]))
    with pytest.raises(ValueError, match="channels"):
        tfcore.SeparableConv2D(2, 3)(tf.zeros([2, 5, 5]))
    with pytest.raises(ValueError, match="channel dimension"):
        tfcore.Conv1D(2, 3).build(tf.TensorShape([None, 5, None]))


# --------------------------------------------------------------------------------------
# summary()
# --------------------------------------------------------------------------------------
class _Tiny(tf.Module):
    def __init__(self):
        super().__init__(name="tiny")
        self.second = tfcore.Dense(3, name="second")   # attribute order != call order
        self.first = tfcore.Dense(4, name="first")
        self.unused = tfcore.Dense(2, name="unused")

    def __call__(self, x, training=False):
        h = self.first(x)
        return tfcore.concatenate([self.second(h), self.second(h)])


def test_summary_rows_in_call_order_with_shapes_and_counts():
    text = tfcore.summary(_Tiny(), (None, 5))
    lines = text.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith("first"))
    second = next(i for i, l in enumerate(lines) if l.startswith("second"))
    unused = next(i for i, l in enumerate(lines) if l.startswith("unused"))
    assert first < second < unused
    assert "(None, 4)" in lines[first] and lines[first].rstrip().endswith("24")
    assert "(None, 3) x2" in lines[second] and lines[second].rstrip().endswith("15")
    assert "?" in lines[unused] and lines[unused].rstrip().endswith("0")
    assert "Total params: 39" in text and "Output: (None, 6)" in text
    # A call through summary leaves Dense.__call__ as it was.
    assert "__call__" not in tfcore.Dense.__dict__
