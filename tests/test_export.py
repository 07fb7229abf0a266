"""tfcore.export: SavedModel with a serving signature, reloaded in a subprocess that
imports TensorFlow but NOT tfcore, giving the same outputs."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfcore
from tfcore.training import export

RELOAD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    out = {}
    for path in sys.argv[2:]:
        m = tf.saved_model.load(path)
        sig = m.signatures["serving_default"]
        x = np.load(sys.argv[1])["images"]
        res = sig(images=tf.constant(x))
        out[path] = {"keys": sorted(res), "inputs": sorted(sig.structured_input_signature[1]),
                     "values": {k: v.numpy().tolist() for k, v in res.items()},
                     "serve": m.serve(tf.constant(x[:2])) is not None}
    out["tfcore_imported"] = any(k == "tfcore" or k.startswith("tfcore.") for k in sys.modules)
    print(json.dumps(out))
''')


def _classifier():
    tf.random.set_seed(3)
    model = tfcore.Sequential([tfcore.Conv2D(3, 3, activation="relu"), tfcore.Flatten(),
                               tfcore.Dropout(0.5), tfcore.Dense(4)])
    model(tf.zeros([1, 6, 6, 1]))
    return model


def test_saved_model_round_trip_without_tfcore(tmp_path):
    model = _classifier()
    x = np.random.RandomState(0).rand(5, 6, 6, 1).astype("float32")
    spec = tf.TensorSpec([None, 6, 6, 1], tf.float32, name="images")
    p1 = export.export_saved_model(model, str(tmp_path / "probs"), spec,
                                   fn=lambda im: tf.nn.softmax(model(im, training=False)),
                                   output_name="probabilities")
    p2 = export.export_saved_model(
        model, str(tmp_path / "multi"), spec,
        fn=lambda im: {"logits": model(im), "classes": tf.argmax(model(im), -1)})
    p3 = export.export_saved_model(model, str(tmp_path / "multi"), spec)  # replaced in place
    np.savez(tmp_path / "x.npz", images=x)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)  # tfcore is not importable there
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "x.npz"), p1, p3],
                         env=env, capture_output=True, text=True, timeout=180,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["tfcore_imported"] is False
    want_logits = model(tf.constant(x), training=False).numpy()
    r1 = res[p1]
    assert r1["keys"] == ["probabilities"] and r1["inputs"] == ["images"] and r1["serve"]
    np.testing.assert_allclose(r1["values"]["probabilities"],
                               tf.nn.softmax(want_logits).numpy(), rtol=1e-5, atol=1e-7)
    r3 = res[p3]
    assert r3["keys"] == ["outputs"]  # the default fn replaced the 2-output export
    np.testing.assert_allclose(r3["values"]["outputs"], want_logits, rtol=1e-5, atol=1e-6)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
    # the in-process reload exposes both outputs of the dict-returning fn variant
    p2b = export.export_saved_model(
        model, str(tmp_path / "multi2"), spec,
        fn=lambda im: {"logits": model(im), "classes": tf.argmax(model(im), -1)})
    sig = tf.saved_model.load(p2b).signatures["serving_default"]
    got = sig(images=tf.constant(x))
    assert sorted(got) == ["classes", "logits"] and got["classes"].dtype == tf.int64
    np.testing.assert_array_equal(got["classes"].numpy(), want_logits.argmax(-1))
    assert p2 == os.path.abspath(str(tmp_path / "multi"))


def test_export_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="model must be a tf.Module, got function"):
        export.export_saved_model(lambda x: x, str(tmp_path / "a"),
                                  tf.TensorSpec([None, 2], tf.float32))
    with pytest.raises(ValueError, match="input_spec must be a tf.TensorSpec"):
        export.export_saved_model(_classifier(), str(tmp_path / "a"), [None, 6, 6, 1])
