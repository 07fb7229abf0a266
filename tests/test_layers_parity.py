"""Numerical parity of the core layers with real Keras layers, Keras 3 and Keras 2.

Every case runs against Keras 3 (`keras`) and Keras 2 (`tf_keras`): the `keras_impl`
fixture (tests/blocks.py) is the Keras module. Keras 2's weight names are mapped to
tfcore's by `tfcore.keras_io` (DepthwiseConv2D's `depthwise_kernel` is our `kernel`),
and Keras 2's fused BatchNormalization (4-D inputs) is compared with
`BatchNorm(unbiased_moving_variance=True)`, the option that reproduces it.

For each case a Keras layer and a tfcore layer are built on the same deterministic
NumPy input, the Keras weights are copied into the tfcore variables by name, and we
compare (float32, rtol = atol = 1e-5):
* the variable names, shapes and trainable flags (Keras `layer.weights` vs ours);
* the forward output;
* the gradients of sum(y * w) (w a fixed random cotangent) w.r.t. the input and every
  trainable variable.
BatchNorm is also run for several training steps, comparing the moving statistics,
and then in inference mode.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from blocks import is_keras2, keras_impl, value_and_grads  # noqa: F401 (a fixture)
from tfcore import keras_io

TOL = dict(rtol=1e-5, atol=1e-5)


def _x(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _short(name):
    return name.split("/")[-1].split(":")[0]


def our_name(ours, keras_weight) -> str:
    """Our attribute name for a Keras 3 or Keras 2 weight of the layer `ours`."""
    keras2 = {v: k for k, v in keras_io.KERAS2_WEIGHT_NAMES.get(type(ours).__name__,
                                                                 {}).items()}
    name = _short(keras_weight.name)
    return keras2.get(name, name)


def copy_and_check_weights(ours, theirs):
    """Checks names/shapes/trainable flags like Keras's, then copies Keras -> ours."""
    keras_w = {our_name(ours, w): w for w in theirs.weights}
    ours_w = {_short(v.name): v for v in ours.variables}
    assert sorted(ours_w) == sorted(keras_w)
    for name, w in keras_w.items():
        v = getattr(ours, name)  # stored as the attribute of the Keras name
        assert v is ours_w[name]
        assert tuple(v.shape) == tuple(w.shape), name
        assert v.trainable == w.trainable, name
        v.assign(np.asarray(w.numpy()))


def build_and_copy(ours, theirs, x, keras_jit=False, **our_kwargs):
    """Builds both on x (inference mode, so no statistics move) and copies weights."""
    if keras_jit:
        theirs.build(tuple(x.shape))  # its eager call would fail (see keras_jit)
    else:
        theirs(x)
    ours(x, **our_kwargs)
    copy_and_check_weights(ours, theirs)


def compare(ours, theirs, x, training=False, keras_jit=False, **our_kwargs):
    """One call of each: outputs and input/variable gradients must agree."""
    keras_vars = list(theirs.trainable_weights)
    our_vars = [getattr(ours, our_name(ours, w)) for w in keras_vars]

    def keras_fn(x, cot):
        return value_and_grads(lambda t: theirs(t, training=training), x,
                               keras_vars, cot)
    if keras_jit:  # e.g. dilated transposed convs: TF's CPU kernel lacks them
        keras_fn = tf.function(keras_fn, jit_compile=True)
    # the output shape from an inference call (a training call would move BN stats)
    cot = _x(ours(x, training=False, **our_kwargs).shape, seed=99)
    y_k, *g_k = keras_fn(x, cot)
    y_o, *g_o = value_and_grads(lambda t: ours(t, training=training, **our_kwargs), x,
                                our_vars, cot)
    assert y_o.shape == y_k.shape
    np.testing.assert_allclose(y_o.numpy(), y_k.numpy(), **TOL)
    assert len(g_o) == len(g_k) == len(keras_vars) + 1
    for a, b in zip(g_o, g_k):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)
    return y_o


def check_parity(ours, theirs, x, training=False, keras_jit=False, **our_kwargs):
    """Builds both, copies weights, compares outputs and gradients."""
    build_and_copy(ours, theirs, x, keras_jit, **our_kwargs)
    return compare(ours, theirs, x, training, keras_jit, **our_kwargs)


# -- Dense ----------------------------------------------------------------------
@pytest.mark.parametrize("shape,kwargs", [
    ((4, 6), dict(units=5, activation="relu")),
    ((2, 3, 6), dict(units=4, activation="tanh")),
    ((4, 3), dict(units=2, use_bias=False)),
])
def test_dense(shape, kwargs, keras_impl):
    check_parity(tfcore.Dense(**kwargs), keras_impl.layers.Dense(**kwargs), _x(shape))


# -- Conv2D ---------------------------------------------------------------------
@pytest.mark.parametrize("shape,kwargs", [
    ((2, 7, 6, 3), dict(filters=4, kernel_size=3)),
    ((2, 7, 6, 3), dict(filters=4, kernel_size=3, padding="same", activation="relu")),
    ((2, 8, 7, 2), dict(filters=3, kernel_size=(3, 2), strides=2, padding="same")),
    ((2, 9, 8, 2), dict(filters=3, kernel_size=(2, 3), strides=(3, 2), use_bias=False)),
    ((2, 9, 9, 2), dict(filters=2, kernel_size=3, dilation_rate=2, padding="same")),
    ((1, 9, 8, 3), dict(filters=2, kernel_size=(3, 2), dilation_rate=(1, 2))),
])
def test_conv2d(shape, kwargs, keras_impl):
    check_parity(tfcore.Conv2D(**kwargs), keras_impl.layers.Conv2D(**kwargs), _x(shape))


@pytest.mark.parametrize("shape,kwargs", [
    ((2, 7, 6, 3), dict(kernel_size=3)),
    ((2, 8, 7, 2), dict(kernel_size=(3, 2), strides=2, padding="same", depth_multiplier=2,
                        activation="relu")),
])
def test_depthwise_conv2d(shape, kwargs, keras_impl):
    # Keras 2 names the kernel depthwise_kernel (mapped by tfcore.keras_io), Keras 3 kernel.
    theirs = keras_impl.layers.DepthwiseConv2D(**kwargs)
    check_parity(tfcore.DepthwiseConv2D(**kwargs), theirs, _x(shape))
    assert [_short(w.name) for w in theirs.weights][0] == (
        "depthwise_kernel" if is_keras2(keras_impl) else "kernel")


# -- Conv2DTranspose ------------------------------------------------------------
CONV_T = [
    ((2, 4, 5, 3), dict(filters=3, kernel_size=3, strides=2)),
    ((2, 4, 5, 3), dict(filters=3, kernel_size=3, strides=2, padding="same")),
    ((2, 4, 3, 2), dict(filters=2, kernel_size=4, strides=2, padding="same")),
    ((2, 4, 3, 2), dict(filters=2, kernel_size=3, strides=2, padding="same",
                        output_padding=1)),
    ((2, 3, 4, 2), dict(filters=2, kernel_size=4, strides=2, padding="same",
                        output_padding=1, activation="relu")),
    ((2, 3, 4, 3), dict(filters=2, kernel_size=3, strides=3, output_padding=2)),
    ((2, 3, 4, 2), dict(filters=2, kernel_size=2, strides=3)),
    ((2, 3, 4, 2), dict(filters=3, kernel_size=5, strides=3, padding="same",
                        output_padding=0, use_bias=False)),
    ((2, 3, 4, 2), dict(filters=2, kernel_size=(3, 5), strides=(3, 2), padding="same",
                        output_padding=(2, 1))),
    ((2, 4, 4, 2), dict(filters=2, kernel_size=3, strides=1, padding="valid",
                        output_padding=0)),
]


@pytest.mark.parametrize("shape,kwargs", CONV_T)
def test_conv2d_transpose(shape, kwargs, keras_impl):
    y = check_parity(tfcore.Conv2DTranspose(**kwargs),
                     keras_impl.layers.Conv2DTranspose(**kwargs), _x(shape))
    # Keras's own shape inference agrees with ours.
    assert tuple(y.shape) == tuple(
        keras_impl.layers.Conv2DTranspose(**kwargs).compute_output_shape(shape))


@pytest.mark.parametrize("shape,kwargs", [
    ((2, 5, 4, 3), dict(filters=2, kernel_size=3, dilation_rate=2, padding="same")),
    ((1, 4, 5, 2), dict(filters=2, kernel_size=(2, 3), dilation_rate=(1, 2))),
])
def test_conv2d_transpose_dilated(shape, kwargs, keras_impl):
    # Keras on CPU needs XLA here (TF's CPU Conv2DBackpropInput has no dilation).
    if is_keras2(keras_impl) and len(set(np.broadcast_to(kwargs["dilation_rate"], 2))) > 1:
        pytest.skip("Keras 2's Conv2DTranspose takes equal dilation rates only")
    check_parity(tfcore.Conv2DTranspose(**kwargs),
                 keras_impl.layers.Conv2DTranspose(**kwargs),
                 _x(shape), keras_jit=True)


# -- Pooling, upsampling, flatten -------------------------------------------------
POOLS = [
    ((2, 6, 7, 3), dict()),
    ((2, 7, 7, 2), dict(pool_size=3, strides=2, padding="same")),
    ((2, 7, 8, 2), dict(pool_size=(3, 2), strides=1)),
    ((2, 5, 6, 2), dict(pool_size=2, padding="same")),
]


@pytest.mark.parametrize("shape,kwargs", POOLS)
def test_max_pool2d(shape, kwargs, keras_impl):
    check_parity(tfcore.MaxPool2D(**kwargs), keras_impl.layers.MaxPooling2D(**kwargs),
                 _x(shape))


@pytest.mark.parametrize("shape,kwargs", [(s, k) for s, k in POOLS if "strides" not in k])
def test_max_pool2d_one_hot_gradient(shape, kwargs, keras_impl):
    check_parity(tfcore.MaxPool2D(gradient="one_hot", **kwargs),
                 keras_impl.layers.MaxPooling2D(**kwargs), _x(shape))


@pytest.mark.parametrize("shape,kwargs", POOLS)
def test_avg_pool2d(shape, kwargs, keras_impl):
    keras_kwargs = {"pool_size": 2, **kwargs}  # Keras 3.15 has no pool_size default here
    check_parity(tfcore.AvgPool2D(**kwargs),
                 keras_impl.layers.AveragePooling2D(**keras_kwargs),
                 _x(shape))


@pytest.mark.parametrize("kwargs", [dict(), dict(size=(2, 3)),
                                    dict(size=2, interpolation="bilinear"),
                                    dict(size=(3, 2), interpolation="bilinear")])
def test_upsampling2d(kwargs, keras_impl):
    check_parity(tfcore.UpSampling2D(**kwargs), keras_impl.layers.UpSampling2D(**kwargs),
                 _x((2, 3, 4, 2)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (2, 2, 3)])
def test_flatten(shape, keras_impl):
    check_parity(tfcore.Flatten(), keras_impl.layers.Flatten(), _x(shape))


# -- Dropout (masks come from different RNGs: compare the semantics) ----------------
def test_dropout_matches_keras_semantics(keras_impl):
    x = _x((64, 32))
    ours, theirs = tfcore.Dropout(0.25), keras_impl.layers.Dropout(0.25)
    np.testing.assert_array_equal(ours(x).numpy(), theirs(x).numpy())  # inference
    y_o = ours(x, training=True, seed=tf.constant([3, 4])).numpy()
    y_k = theirs(x, training=True).numpy()
    for y in (y_o, y_k):  # same scaling rule: kept values are x / (1 - rate)
        kept = y != 0
        np.testing.assert_allclose(y[kept], x.numpy()[kept] / 0.75, rtol=1e-6)
    assert abs((y_o != 0).mean() - (y_k != 0).mean()) < 0.05


# -- BatchNorm --------------------------------------------------------------------
def keras2_fused(theirs) -> bool:
    """Whether a BUILT Keras BatchNormalization is Keras 2's fused one (4-D inputs),
    whose moving variance `BatchNorm(unbiased_moving_variance=True)` reproduces."""
    return bool(getattr(theirs, "fused", False))


@pytest.mark.parametrize("shape,kwargs", [
    ((6, 4, 3, 5), dict(momentum=0.9)),
    ((6, 4, 3, 5), dict(axis=1, momentum=0.8, epsilon=1e-2)),
    ((8, 5), dict()),
    ((6, 3, 4), dict(center=False, momentum=0.7)),
    ((6, 3, 4), dict(scale=False, axis=-2)),
])
def test_batch_norm_training_steps_then_inference(shape, kwargs, keras_impl):
    theirs = keras_impl.layers.BatchNormalization(**kwargs)
    theirs(_x(shape))
    ours = tfcore.BatchNorm(**kwargs, unbiased_moving_variance=keras2_fused(theirs))
    assert keras2_fused(theirs) == (is_keras2(keras_impl) and len(shape) == 4)
    build_and_copy(ours, theirs, _x(shape))
    rng = np.random.default_rng(5)  # non-trivial gamma/beta
    for w in theirs.trainable_weights:
        value = rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32)
        w.assign(value)
        getattr(ours, _short(w.name)).assign(value)
    for step in range(3):  # training: batch moments + moving-average updates
        x = _x(shape, seed=step + 1) * (step + 1.0) + step
        compare(ours, theirs, x, training=True)
        for name in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(getattr(ours, name).numpy(),
                                       getattr(theirs, name).numpy(), **TOL)
    assert not np.allclose(ours.moving_mean.numpy(), 0.0)  # the stats really moved
    compare(ours, theirs, _x(shape, seed=11), training=False)


@pytest.mark.parametrize("fused", [True, False])
def test_batch_norm_keras2_fused_moving_variance_is_unbiased(fused):
    """Keras 2's fused BatchNormalization moves the variance by var * n / (n - 1):
    `unbiased_moving_variance=True` matches it, the default (Keras 3's) does not;
    Keras 2's `fused=False` matches the default."""
    tf_keras = pytest.importorskip("tf_keras")
    shape, n = (3, 2, 2, 4), 3 * 2 * 2
    x = _x(shape) * 2.0 + 1.0
    theirs = tf_keras.layers.BatchNormalization(momentum=0.5, fused=fused)
    theirs(x, training=True)
    plain, unbiased = tfcore.BatchNorm(momentum=0.5), tfcore.BatchNorm(
        momentum=0.5, unbiased_moving_variance=True)
    for bn in (plain, unbiased):
        bn(x, training=True)
    var = np.var(x.numpy(), axis=(0, 1, 2))
    np.testing.assert_allclose(plain.moving_variance.numpy(), 0.5 + 0.5 * var, rtol=1e-5)
    np.testing.assert_allclose(unbiased.moving_variance.numpy(),
                               0.5 + 0.5 * var * n / (n - 1), rtol=1e-5)
    match = unbiased if fused else plain
    np.testing.assert_allclose(theirs.moving_variance.numpy(),
                               match.moving_variance.numpy(), **TOL)
    np.testing.assert_allclose(theirs(x, training=True).numpy(),  # output: biased var
                               plain(x, training=True).numpy(), **TOL)


def test_batch_norm_unbiased_with_one_value_per_feature_is_finite():
    bn = tfcore.BatchNorm(momentum=0.5, unbiased_moving_variance=True)
    bn(tf.ones([1, 3]), training=True)  # n == 1: the factor is 1, as TF's fused kernel
    np.testing.assert_allclose(bn.moving_variance.numpy(), [0.5, 0.5, 0.5])


def test_batch_norm_update_stats_false(keras_impl):
    shape = (6, 3, 3, 4)
    theirs = keras_impl.layers.BatchNormalization(momentum=0.5)
    x = _x(shape) * 3.0 + 1.0
    theirs(x)
    ours = tfcore.BatchNorm(momentum=0.5, unbiased_moving_variance=keras2_fused(theirs))
    build_and_copy(ours, theirs, x)
    before = [v.numpy() for v in (ours.moving_mean, ours.moving_variance)]
    # training-mode output (batch moments) but no update of the moving statistics
    y_no_update = tf.function(lambda t: ours(t, training=True, update_stats=False))(x)
    np.testing.assert_allclose(y_no_update.numpy(), theirs(x, training=True).numpy(), **TOL)
    for v, b in zip((ours.moving_mean, ours.moving_variance), before):
        np.testing.assert_array_equal(v.numpy(), b)
    ours(x, training=True)  # the default does update, like Keras did above
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), **TOL)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               theirs.moving_variance.numpy(), **TOL)


# -- Sequential -------------------------------------------------------------------
def test_sequential_matches_keras_sequential(keras_impl):
    x = _x((3, 8, 8, 2))
    kl = keras_impl.layers
    ours = tfcore.Sequential([
        tfcore.Conv2D(4, 3, padding="same", activation="relu"),
        tfcore.BatchNorm(unbiased_moving_variance=is_keras2(keras_impl)),  # fused there
        tfcore.MaxPool2D(), tfcore.Conv2DTranspose(3, 3, strides=2, padding="same"),
        tfcore.UpSampling2D(), tfcore.AvgPool2D(), tfcore.Flatten(), tfcore.Dense(5)])
    theirs = keras_impl.Sequential([
        kl.Conv2D(4, 3, padding="same", activation="relu"), kl.BatchNormalization(),
        kl.MaxPooling2D(), kl.Conv2DTranspose(3, 3, strides=2, padding="same"),
        kl.UpSampling2D(), kl.AveragePooling2D(2), kl.Flatten(), kl.Dense(5)])
    ours(x), theirs(x)
    assert len(ours.layers) == len(theirs.layers)
    for a, b in zip(ours.layers, theirs.layers):
        copy_and_check_weights(a, b)
    for training in (False, True):
        np.testing.assert_allclose(ours(x, training=training).numpy(),
                                   theirs(x, training=training).numpy(), **TOL)
    np.testing.assert_allclose(ours.layers[1].moving_variance.numpy(),
                               theirs.layers[1].moving_variance.numpy(), **TOL)


# -- activations and initialisers -----------------------------------------------------
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "elu",
                                  "leaky_relu", "linear"])
def test_activation_matches_keras(name, keras_impl):
    x = _x((4, 7)) * 3.0
    np.testing.assert_allclose(tfcore.activations.get(name)(x).numpy(),
                               np.asarray(keras_impl.activations.get(name)(x)), **TOL)


def test_leaky_relu_default_slope_is_keras_3s():
    x = tf.constant([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_allclose(tfcore.activations.leaky_relu(x).numpy(),
                               np.asarray(keras.activations.leaky_relu(x)), rtol=1e-6)
    np.testing.assert_allclose(tfcore.activations.leaky_relu(x).numpy(),
                               [-0.4, -0.1, 0.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(tfcore.activations.leaky(0.3)(x).numpy(),
                               np.asarray(keras.layers.LeakyReLU(0.3)(x)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(5,), (4, 6), (3, 3, 2, 8), (4, 4, 8, 2)])
def test_initializer_fans_and_glorot_limit(shape):
    from keras.src.initializers.random_initializers import compute_fans
    assert tfcore.initializers.compute_fans(shape) == tuple(compute_fans(shape))
    fan_in, fan_out = compute_fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    w = tfcore.initializers.glorot_uniform(list(shape)).numpy()
    assert w.shape == shape and np.abs(w).max() <= limit
    big = tfcore.initializers.glorot_uniform([3, 3, 64, 64]).numpy()
    fi, fo = compute_fans((3, 3, 64, 64))
    np.testing.assert_allclose(big.std(), np.sqrt(6.0 / (fi + fo)) / np.sqrt(3.0), rtol=0.02)
