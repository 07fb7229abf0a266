"""Bad hyperparameters and unbuildable inputs raise ValueError naming the argument and
quoting the value."""
import re

import numpy as np
import pytest
import tensorflow as tf

import tfcore

BAD = [  # (constructor, kwargs, words the message must contain)
    (tfcore.Conv2D, dict(filters=0, kernel_size=3), ["filters", "0"]),
    (tfcore.Conv2D, dict(filters=2.5, kernel_size=3), ["filters", "2.5"]),
    (tfcore.Conv2D, dict(filters="4", kernel_size=3), ["filters", "'4'"]),
    (tfcore.Conv2D, dict(filters=True, kernel_size=3), ["filters", "True"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=0), ["kernel_size", "0"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=(3,)), ["kernel_size", "(3,)"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=(3, -1)), ["kernel_size", "(3, -1)"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=2.5), ["kernel_size", "2.5"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size="3"), ["kernel_size", "'3'"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, strides=0), ["strides", "0"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, padding="full"), ["padding", "'full'"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, padding="causal"),
     ["padding", "'causal'"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, dilation_rate=(1, 0)),
     ["dilation_rate", "(1, 0)"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, strides=2, dilation_rate=2),
     ["strides=2", "dilation_rate=2"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, activation="swishy"),
     ["activation", "'swishy'"]),
    (tfcore.Conv2D, dict(filters=4, kernel_size=3, kernel_initializer="nope"),
     ["initializer", "'nope'"]),
    (tfcore.Conv2DTranspose, dict(filters=-1, kernel_size=3), ["filters", "-1"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=(2, 2, 2)),
     ["kernel_size", "(2, 2, 2)"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=3, padding="SAMEISH"),
     ["padding", "'SAMEISH'"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, output_padding=2),
     ["output_padding=2", "strides=2"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=3, output_padding=1),
     ["output_padding=1", "strides=1"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, output_padding=-1),
     ["output_padding", "-1"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=4, strides=2, padding="same",
                                  output_padding=0), ["output_padding=0", "kernel_size=4"]),
    (tfcore.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, dilation_rate=2),
     ["strides=2", "dilation_rate=2"]),
    (tfcore.MaxPool2D, dict(pool_size=0), ["pool_size", "0"]),
    (tfcore.MaxPool2D, dict(strides=(2, 0)), ["strides", "(2, 0)"]),
    (tfcore.MaxPool2D, dict(padding="reflect"), ["padding", "'reflect'"]),
    (tfcore.MaxPool2D, dict(gradient="onehot"), ["gradient", "'onehot'", "one_hot"]),
    (tfcore.MaxPool2D, dict(pool_size=3, strides=2, gradient="one_hot"),
     ["one_hot", "strides", "(2, 2)", "(3, 3)"]),
    (tfcore.AvgPool2D, dict(pool_size=(2, 2, 2)), ["pool_size", "(2, 2, 2)"]),
    (tfcore.AvgPool2D, dict(strides=-1), ["strides", "-1"]),
    (tfcore.UpSampling2D, dict(size=0), ["size", "0"]),
    (tfcore.UpSampling2D, dict(size=1.5), ["size", "1.5"]),
    (tfcore.UpSampling2D, dict(interpolation="bicubic"), ["interpolation", "'bicubic'"]),
    (tfcore.Dropout, dict(rate=-0.1), ["rate", "-0.1"]),
    (tfcore.Dropout, dict(rate=1.0), ["rate", "1.0"]),
    (tfcore.Dropout, dict(rate=1.5), ["rate", "1.5"]),
    (tfcore.Dropout, dict(rate="0.5"), ["rate", "'0.5'"]),
    (tfcore.Dropout, dict(rate=True), ["rate", "True"]),
    (tfcore.Dropout, dict(rate=0.5, seed=-3), ["seed", "-3"]),
    (tfcore.Dropout, dict(rate=0.5, seed=1.5), ["seed", "1.5"]),
    (tfcore.Dropout, dict(rate=0.5, noise_shape="abc"), ["noise_shape", "'abc'"]),
    (tfcore.Dropout, dict(rate=0.5, noise_shape=(None, 0)), ["noise_shape", "(None, 0)"]),
    (tfcore.BatchNorm, dict(axis=1.5), ["axis", "1.5"]),
    (tfcore.BatchNorm, dict(momentum=1.5), ["momentum", "1.5"]),
    (tfcore.BatchNorm, dict(momentum=-0.1), ["momentum", "-0.1"]),
    (tfcore.BatchNorm, dict(epsilon=0.0), ["epsilon", "0.0"]),
    (tfcore.BatchNorm, dict(epsilon=-1e-3), ["epsilon", "-0.001"]),
    (tfcore.Sequential, dict(layers=tfcore.Dense(2)), ["layers", "Dense"]),
    (tfcore.Sequential, dict(layers=[tfcore.Dense(2), 3]), ["layers[1]", "3"]),
    (tfcore.Dense, dict(units=0), ["units", "0"]),
]


@pytest.mark.parametrize("cls,kwargs,words", BAD,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(BAD)])
def test_bad_hyperparameters_raise(cls, kwargs, words):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_good_hyperparameters_are_normalised():
    conv = tfcore.Conv2DTranspose(2, (4, 3), strides=(2, 3), padding="SAME",
                                  output_padding=(1, 0))
    assert conv.kernel_size == (4, 3) and conv.strides == (2, 3)
    assert conv.padding == "same" and conv.output_padding == (1, 0)
    pool = tfcore.MaxPool2D(3)
    assert pool.pool_size == (3, 3) and pool.strides == (3, 3)  # Keras: strides=pool
    assert tfcore.AvgPool2D((2, 3), strides=1).strides == (1, 1)
    assert tfcore.UpSampling2D().size == (2, 2)
    bn = tfcore.BatchNorm()
    assert (bn.axis, bn.momentum, bn.epsilon) == (-1, 0.99, 1e-3)
    numpy_ints = tfcore.Conv2D(np.int64(4), (np.int32(3), 2))  # NumPy ints are ints
    assert numpy_ints.filters == 4 and numpy_ints.kernel_size == (3, 2)
    assert all(type(v) is int for v in numpy_ints.kernel_size)


UNBUILDABLE = [  # (layer, input spec, words of the build error)
    (lambda: tfcore.Conv2D(2, 3), [None, 5, 5, None], ["channel", "axis -1"]),
    (lambda: tfcore.Conv2DTranspose(2, 3), [None, 5, 5, None], ["channel", "axis -1"]),
    (lambda: tfcore.Dense(2), [None, None], ["feature", "axis -1"]),
    (lambda: tfcore.BatchNorm(), [None, 4, None], ["feature", "axis 2"]),
    (lambda: tfcore.BatchNorm(axis=1), [None, None, 4], ["feature", "axis 1"]),
    (lambda: tfcore.Flatten(), [None, 3, None], ["non-batch", "axis 2"]),
]


@pytest.mark.parametrize("make,shape,words", UNBUILDABLE)
def test_unknown_needed_dimension_fails_to_build(make, shape, words):
    layer = make()
    fn = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec(shape)])
    with pytest.raises(ValueError) as err:
        fn.get_concrete_function()
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not layer.variables


@pytest.mark.parametrize("make,shape,words", [
    (lambda: tfcore.Conv2D(2, 3), (2, 5, 3), ["4-D", "(2, 5, 3)"]),
    (lambda: tfcore.Conv2DTranspose(2, 3), (2, 5, 5, 5, 3), ["4-D", "(2, 5, 5, 5, 3)"]),
    (lambda: tfcore.MaxPool2D(), (2, 5, 3), ["4-D", "(2, 5, 3)"]),
    (lambda: tfcore.AvgPool2D(), (4, 3), ["4-D", "(4, 3)"]),
    (lambda: tfcore.UpSampling2D(), (2, 5, 3), ["4-D", "(2, 5, 3)"]),
    (lambda: tfcore.BatchNorm(axis=3), (2, 5, 3), ["axis=3", "(2, 5, 3)"]),
    (lambda: tfcore.Dropout(0.5, noise_shape=(1, 1)), (2, 5, 3), ["noise_shape", "(1, 1)"]),
])
def test_wrong_input_rank_raises(make, shape, words):
    with pytest.raises(ValueError) as err:
        make()(tf.zeros(shape))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_error_quotes_the_value_exactly():
    with pytest.raises(ValueError, match=re.escape("got (3, 'x')")):
        tfcore.Conv2D(2, (3, "x"))
