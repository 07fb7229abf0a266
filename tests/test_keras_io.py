"""tfcore.keras_io: Keras 3 and Keras 2 weight files in and out, on the project's models.

Each model (the VAT CNN with and without dropout and with BatchNorm, the dense, tied,
transposed-conv and upsampling autoencoders, the DCGAN's generators and
discriminator, the functional models, a DepthwiseConv2D stack) is built in Keras 3
and in Keras 2 (`bench.keras_models`' twins), its weights (BatchNorm statistics
included) moved off their initial values, and saved in every format: Keras 3
`.keras` and `.weights.h5`, Keras 2 `.h5` whole model and weights only. A fresh tfcore
model loads each file and must predict what the Keras model predicts (inference mode,
rtol = atol = 1e-5). Then: tfcore -> Keras 3 -> tfcore round trips (save_weights, Keras
3's load_weights, Keras 3's save_weights, load_weights) end bitwise where they began;
files that do not fit are refused with the listing and nothing is assigned; the
format and argument errors.
"""
import dataclasses
import os
import zipfile
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcore
from bench import keras_models as km
from models.autoencoder import ConvAutoencoder, DenseAutoencoder
from models.dcgan import Discriminator, Generator
from models.dense_example import DenseExample
from models.inception import InceptionModule
from models.multi_output import MultiOutputModel
from models.qa import QuestionAnswering
from models.residual import ResidualNet
from models.separable_convnet import SeparableConvNet
from models.siamese import SiameseLSTM
from models.vat_cnn import VatCNN
from models.vision_tower import TwoCameraModel
from tfcore import keras_io

tf_keras = pytest.importorskip("tf_keras")
TOL = dict(rtol=1e-5, atol=1e-5)


def _floats(shape, seed):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _images(shape, seed):
    return tf.constant(np.random.default_rng(seed).uniform(size=shape).astype(np.float32))


def _tokens(shape, vocab, seed):
    return tf.constant(np.random.default_rng(seed).integers(1, vocab, size=shape,
                                                            dtype=np.int32))


def _depthwise_keras(k):
    return k.Sequential([k.layers.DepthwiseConv2D(3, depth_multiplier=2),
                         k.layers.Flatten(), k.layers.Dense(3)])


def _depthwise_ours():
    return tfcore.Sequential([tfcore.DepthwiseConv2D(3, depth_multiplier=2,
                                                     name="depthwise_conv2d"),
                              tfcore.Flatten(name="flatten"), tfcore.Dense(3, name="dense")])


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ours: Callable[[], Any]                   # a fresh tfcore model
    theirs: Callable[[Any], Any]              # keras module -> the Keras twin
    inputs: Callable[[], Any]                 # the example input
    forward: Callable[[Any, Any], Any] = lambda m, x: m(x)  # tfcore inference call
    round_trip: bool = True                   # Keras 3 loads save_weights' flat file


CASES = [
    Case("vat_cnn", lambda: VatCNN(), lambda k: km.vat_cnn_net(True, keras_module=k),
         lambda: _images((2, 28, 28, 1), 1)),
    Case("vat_cnn_no_dropout", lambda: VatCNN(dropout=False),
         lambda k: km.vat_cnn_net(False, keras_module=k), lambda: _images((2, 28, 28, 1), 2)),
    Case("vat_cnn_batchnorm", lambda: VatCNN(batch_norm=True),
         lambda k: km.vat_cnn_net(True, batch_norm=True, keras_module=k),
         lambda: _images((2, 28, 28, 1), 3)),
    Case("dense_ae", lambda: DenseAutoencoder(),
         lambda k: km.autoencoder_net("dense", keras_module=k),
         lambda: _images((2, 28, 28, 1), 4), lambda m, x: m.logits(x)),
    Case("dense_ae_tied", lambda: DenseAutoencoder(hidden=32, hidden_activation="relu",
                                                   tied=True),
         lambda k: km.autoencoder_net("dense", 32, "relu", tied=True, keras_module=k),
         lambda: _images((2, 28, 28, 1), 5), lambda m, x: m.logits(x)),
    Case("conv_ae", lambda: ConvAutoencoder(),
         lambda k: km.autoencoder_net("conv_transpose", keras_module=k),
         lambda: _images((2, 28, 28, 1), 6), lambda m, x: m.logits(x)),
    Case("conv_ae_upsample", lambda: ConvAutoencoder("upsample"),
         lambda k: km.autoencoder_net("conv_upsample", keras_module=k),
         lambda: _images((2, 28, 28, 1), 7), lambda m, x: m.logits(x)),
    Case("dcgan_generator", lambda: Generator(latent_dim=30),
         lambda k: km.dcgan_generator(30, keras_module=k), lambda: _floats((2, 30), 8)),
    Case("dcgan_generator_transpose", lambda: Generator(upsampling="transpose"),
         lambda k: km.dcgan_generator(None, "transpose", keras_module=k),
         lambda: _floats((2, 4, 4, 4), 9)),
    Case("dcgan_discriminator", lambda: Discriminator(),
         lambda k: km.dcgan_discriminator(keras_module=k),
         lambda: _floats((2, 32, 32, 1), 10)),
    Case("dense_example", DenseExample, lambda k: km.functional_net("dense_example", k),
         lambda: _floats((2, 64), 11)),
    Case("separable_convnet", SeparableConvNet,
         lambda k: km.functional_net("separable_convnet", k),
         lambda: _floats((2, 64, 64, 3), 12)),
    Case("residual", ResidualNet, lambda k: km.functional_net("residual", k),
         lambda: _floats((2, 32, 32, 3), 13)),
    Case("inception", InceptionModule, lambda k: km.functional_net("inception", k),
         lambda: _floats((2, 32, 32, 64), 14)),
    Case("qa", QuestionAnswering, lambda k: km.functional_net("qa", k),
         lambda: [_tokens((2, 100), 10000, 15), _tokens((2, 20), 10000, 16)]),
    Case("siamese_lstm", SiameseLSTM, lambda k: km.functional_net("siamese_lstm", k),
         lambda: [_floats((2, 20, 128), 17), _floats((2, 20, 128), 18)]),
    Case("vision_tower", TwoCameraModel, lambda k: km.functional_net("vision_tower", k),
         lambda: [_floats((2, 64, 64, 3), 19), _floats((2, 64, 64, 3), 20)],
         round_trip=False),  # a nested Keras model: save_weights writes flat files
    Case("multi_output", MultiOutputModel, lambda k: km.functional_net("multi_output", k),
         lambda: _tokens((2, 500), 50000, 21)),
    Case("depthwise", _depthwise_ours, _depthwise_keras, lambda: _floats((2, 6, 6, 3), 22)),
]
BY_NAME = {c.name: c for c in CASES}
FORMATS = ("keras3.keras", "keras3.weights.h5", "keras2_model.h5", "keras2_weights.h5")


def _jiggle(model, seed):
    """Moves every Keras weight off its initial value (positive BN variance / gamma)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        short = w.name.split("/")[-1].split(":")[0]
        if short in ("moving_variance", "gamma"):
            w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
        else:
            w.assign(np.asarray(w.numpy()) + rng.normal(scale=0.05, size=w.shape)
                     .astype(np.float32))


def _outputs(y):
    return [np.asarray(t) for t in tf.nest.flatten(y)]


def _built(case):
    model = case.ours()
    case.forward(model, case.inputs())
    return model


def _clear(model):
    """Sets every variable to zero (so a load that skipped one shows)."""
    for v in model.variables:
        v.assign(tf.zeros_like(v))


@dataclasses.dataclass
class Saved:
    paths: dict          # format -> file
    expected: dict       # format -> the saving Keras model's predictions
    keras3: Any          # the Keras 3 model (for the round trip)
    ours: Any            # a built tfcore model, shared by the tests (each sets it first)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """case name -> `Saved`: each case's Keras 3 and Keras 2 twins saved in FORMATS."""
    root = tmp_path_factory.mktemp("keras_files")
    out = {}
    for case in CASES:
        paths, expected, models = {}, {}, {}
        for k, files in ((keras, ("keras3.keras", "keras3.weights.h5")),
                         (tf_keras, ("keras2_model.h5", "keras2_weights.h5"))):
            k.backend.clear_session()  # default layer names (conv2d, conv2d_1, ...)
            model = models[k.__name__] = case.theirs(k)
            model(case.inputs())
            _jiggle(model, seed=len(out))
            prediction = _outputs(model(case.inputs(), training=False))
            for fmt in files:
                paths[fmt] = str(root / f"{case.name}.{fmt}")
                expected[fmt] = prediction
                if fmt.endswith("weights.h5"):
                    model.save_weights(paths[fmt])
                else:
                    model.save(paths[fmt])
        out[case.name] = Saved(paths, expected, models["keras"], _built(case))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_load_every_format_predicts_as_keras(case, fmt, saved):
    s = saved[case.name]
    _clear(s.ours)
    result = keras_io.load_weights(s.ours, s.paths[fmt])
    assert result.weights == len(s.ours.variables) > 0
    assert ("Keras 2" in result.format) == fmt.startswith("keras2")
    for got, want in zip(_outputs(case.forward(s.ours, case.inputs())), s.expected[fmt]):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("case", [c for c in CASES if c.round_trip], ids=lambda c: c.name)
def test_round_trip_tfcore_keras3_tfcore(case, tmp_path, saved):
    """save_weights -> Keras 3 load_weights (same predictions) -> Keras 3 save_weights
    -> load_weights into the zeroed model: bitwise the saved variables."""
    ours, theirs = saved[case.name].ours, saved[case.name].keras3
    rng = np.random.default_rng(7)
    for v in ours.variables:
        value = rng.normal(scale=0.05, size=v.shape).astype(np.float32)
        v.assign(np.abs(value) + 0.5 if "variance" in v.name else value)
    original = _snapshot(ours)
    order = [layer.name for layer in theirs.layers]  # functional: graph order
    keras_io.save_weights(ours, tmp_path / "ours.weights.h5", layer_order=order)
    theirs.load_weights(str(tmp_path / "ours.weights.h5"))
    for a, b in zip(_outputs(theirs(case.inputs(), training=False)),
                    _outputs(case.forward(ours, case.inputs()))):
        np.testing.assert_allclose(a, b, **TOL)
    theirs.save_weights(str(tmp_path / "theirs.weights.h5"))
    for name in ("theirs", "ours"):  # Keras 3 -> tfcore, and tfcore -> tfcore
        _clear(ours)
        keras_io.load_weights(ours, tmp_path / f"{name}.weights.h5")
        assert _unchanged(ours, original), name


def _snapshot(model):
    return [v.numpy().copy() for v in model.variables]


def _unchanged(model, snapshot):
    return all(np.array_equal(v.numpy(), s) for v, s in zip(model.variables, snapshot))


@pytest.mark.parametrize("fmt", ["keras3.weights.h5", "keras2_model.h5"])
def test_a_file_that_does_not_fit_is_refused_with_the_listing(fmt, saved):
    bn_file = saved["vat_cnn_batchnorm"].paths[fmt]
    plain_file = saved["vat_cnn"].paths[fmt]
    wider = VatCNN(num_classes=11)  # dense_1 is [128, 11]
    wider(tf.zeros([1, 28, 28, 1]))
    before = _snapshot(wider)
    with pytest.raises(keras_io.WeightsMismatchError) as err:
        keras_io.load_weights(wider, plain_file)
    message = str(err.value)
    assert "\n" not in message and plain_file in message and "nothing was assigned" in message
    assert [m.split(" ")[0] for m in err.value.misshaped] == ["dense_1/kernel",
                                                              "dense_1/bias"]
    assert "(128, 11)" in message and "(128, 10)" in message
    assert _unchanged(wider, before)  # the other 6 weights fitted, none was assigned
    plain = _built(BY_NAME["vat_cnn"])  # the file has BatchNorms the model has not
    before = _snapshot(plain)
    with pytest.raises(keras_io.WeightsMismatchError) as err:
        keras_io.load_weights(plain, bn_file)
    assert len(err.value.unexpected) == 8 and not err.value.missing
    assert all("batch_normalization" in u for u in err.value.unexpected)
    assert _unchanged(plain, before)
    with_bn = _built(BY_NAME["vat_cnn_batchnorm"])
    with pytest.raises(keras_io.WeightsMismatchError) as err:
        keras_io.load_weights(with_bn, plain_file)
    assert sorted(err.value.missing) == sorted(
        f"{layer}/{w}" for layer in ("batch_normalization", "batch_normalization_1")
        for w in ("gamma", "beta", "moving_mean", "moving_variance"))


def test_keras3_auto_names_fall_back_to_keras3_paths(tmp_path):
    """A Keras 3 model whose layers got later auto names (conv2d_7, ...) in a busy
    session still loads, by its class-numbered paths, as Keras 3 itself loads."""
    keras.backend.clear_session()
    km.vat_cnn_net(False)  # takes the names conv2d, conv2d_1, ...
    theirs = km.vat_cnn_net(False)
    x = _images((2, 28, 28, 1), 30)
    theirs(x)
    _jiggle(theirs, 3)
    assert theirs.layers[0].name != "conv2d"
    theirs.save_weights(str(tmp_path / "m.weights.h5"))
    ours = _built(BY_NAME["vat_cnn_no_dropout"])
    assert keras_io.load_weights(ours, tmp_path / "m.weights.h5").matched_by == "Keras 3 path"
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), **TOL)


def test_keras_layers_lists_paths_weights_and_order():
    model = _built(BY_NAME["conv_ae"])
    layers = keras_io.keras_layers(model)
    assert [layer.path for layer in layers][:2] == [("encoder", "conv2d"),
                                                    ("encoder", "conv2d_1")]
    assert [layer.name for layer in layers][-1] == "decoder__conv2d_3"
    assert [layer.keras_class for layer in layers][3:6] == ["Conv2DTranspose"] * 3
    tied = keras_io.keras_layers(_built(BY_NAME["dense_ae_tied"]))
    assert [(layer.path, [n for n, _ in layer.weights]) for layer in tied] == [
        (("dense",), ["kernel", "bias"]), (("tied_dense",), ["bias"])]  # shared once
    bn = [layer for layer in keras_io.keras_layers(_built(BY_NAME["vat_cnn_batchnorm"]))
          if layer.keras_class == "BatchNormalization"][0]
    assert [n for n, _ in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    depthwise = keras_io.keras_layers(_depthwise_ours_built())[0]
    assert depthwise.keras2_name("kernel") == "depthwise_kernel"
    assert depthwise.keras2_name("bias") == "bias"


def _depthwise_ours_built():
    model = _depthwise_ours()
    model(tf.zeros([1, 6, 6, 3]))
    return model


def test_ambiguous_names_are_refused(saved):
    """Two tfcore layers both matching one file layer by name: refused, not guessed."""
    model = tfcore.Sequential([
        tfcore.Sequential([tfcore.DepthwiseConv2D(3, depth_multiplier=2,
                                                  name="depthwise_conv2d")], name="a"),
        tfcore.Sequential([tfcore.Flatten(), tfcore.Dense(3, name="dense")], name="b")])
    model(tf.zeros([2, 6, 6, 3]))
    keras_io.load_weights(model, saved["depthwise"].paths["keras2_model.h5"])  # unique: fits
    twice = tfcore.Sequential([tfcore.Sequential([tfcore.Dense(3, name="dense")], name="a"),
                               tfcore.Sequential([tfcore.Dense(3, name="dense")], name="b")])
    twice(tf.zeros([2, 4]))
    keras.backend.clear_session()
    flat = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(3, name="other")])
    flat(tf.zeros([2, 4]))
    path = os.path.join(os.path.dirname(saved["depthwise"].paths["keras2_model.h5"]),
                        "ambiguous.weights.h5")
    flat.save_weights(path)
    with pytest.raises(keras_io.WeightsMismatchError) as err:
        keras_io.load_weights(twice, path)
    assert err.value.ambiguous == ["dense matches a__dense and b__dense"]


def test_errors_name_the_file(tmp_path, saved):
    model = _built(BY_NAME["depthwise"])
    with pytest.raises(keras_io.WeightsFileNotFoundError, match="missing.h5"):
        keras_io.load_weights(model, tmp_path / "missing.h5")
    assert issubclass(keras_io.WeightsFileNotFoundError, FileNotFoundError)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(keras_io.WeightsFormatError, match="notes.h5: not a Keras"):
        keras_io.load_weights(model, text)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(keras_io.WeightsFormatError, match="other.keras: a zip archive"):
        keras_io.load_weights(model, tmp_path / "other.keras")
    unbuilt = _depthwise_ours()
    with pytest.raises(keras_io.NotBuiltError, match="depthwise.keras2_model.h5.*not built"):
        keras_io.load_weights(unbuilt, saved["depthwise"].paths["keras2_model.h5"])
    with pytest.raises(keras_io.KerasIOError, match=r"w\.h5: .*end in \.weights\.h5"):
        keras_io.save_weights(model, tmp_path / "w.h5")
    with pytest.raises(keras_io.KerasIOError, match="does not place.*dense"):
        keras_io.save_weights(model, tmp_path / "w.weights.h5",
                              layer_order=["depthwise_conv2d"])
    for cls in (keras_io.WeightsFormatError, keras_io.NotBuiltError,
                keras_io.WeightsMismatchError):
        assert issubclass(cls, ValueError)
