"""tfcore.data.load_mnist: real file, npz and IDX layouts, search order, bad files,
and the verified atomic download (faked locally: no network is used)."""
import gzip
import io
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from tfcore.data import DataError, download_mnist, load_mnist, read_idx, write_idx
from tfcore.data import mnist as mnist_mod

IDX = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
       "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}

# From /work/shared/data/README.md (the published MNIST statistics).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
ARRAY_SHA256_PREFIX = {"x_train": "741c988805d008ac", "y_train": "1feba77c54802fa5",
                       "x_test": "6d87418db22cc802", "y_test": "ddeff807876a9661"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No env data dir, an empty home, and no network: a test that reaches the
    download without faking it fails loudly."""
    monkeypatch.delenv("TFCORE_DATA_DIR", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def no_network(url, out):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(mnist_mod, "_fetch", no_network)


def synthetic(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": (np.arange(n_train) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": (np.arange(n_test) % 10).astype(np.uint8)}


def write_npz(directory, arrays, compressed=False):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "mnist.npz")
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_idx_set(directory, arrays, gz=False):
    os.makedirs(directory, exist_ok=True)
    for key, base in IDX.items():
        write_idx(os.path.join(directory, base + (".gz" if gz else "")), arrays[key])


def assert_loaded(result, arrays):
    (x, y), (xt, yt) = result
    for got, key in ((x, "x_train"), (y, "y_train"), (xt, "x_test"), (yt, "y_test")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


# -- the real file ---------------------------------------------------------------------

def test_real_mnist(mnist_dir):
    (x, y), (xt, yt) = load_mnist(mnist_dir)
    assert (x.shape, y.shape, xt.shape, yt.shape) == (
        (60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    assert {a.dtype for a in (x, y, xt, yt)} == {np.dtype(np.uint8)}
    assert np.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(yt, minlength=10).tolist() == TEST_COUNTS
    for key, a in zip(IDX, (x, y, xt, yt)):
        assert hashlib.sha256(a.tobytes()).hexdigest()[:16] == ARRAY_SHA256_PREFIX[key]
    pixels = x / 255.0
    assert abs(pixels.mean() - 0.1307) < 5e-4 and abs(pixels.std() - 0.3081) < 5e-4


def test_real_mnist_via_env_and_file_path(mnist_dir, monkeypatch):
    monkeypatch.setenv("TFCORE_DATA_DIR", mnist_dir)
    (_, y), _ = load_mnist()
    (_, y2), _ = load_mnist(os.path.join(mnist_dir, "mnist.npz"))
    assert len(y) == 60000
    np.testing.assert_array_equal(y, y2)


# -- layouts ---------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True])
def test_npz_layout(tmp_path, compressed):
    arrays = synthetic()
    path = write_npz(tmp_path / "d", arrays, compressed)
    assert_loaded(load_mnist(tmp_path / "d"), arrays)
    assert_loaded(load_mnist(path), arrays)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_layout(tmp_path, gz):
    arrays = synthetic()
    write_idx_set(tmp_path, arrays, gz)
    assert_loaded(load_mnist(str(tmp_path)), arrays)


def test_idx_mixed_plain_and_gz_and_npz_preferred(tmp_path):
    arrays = synthetic()
    for i, (key, base) in enumerate(IDX.items()):
        write_idx(tmp_path / (base + (".gz" if i % 2 else "")), arrays[key])
    assert_loaded(load_mnist(tmp_path), arrays)
    other = synthetic(seed=1)
    write_npz(tmp_path, other)  # mnist.npz wins over the IDX files
    assert_loaded(load_mnist(tmp_path), other)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_idx_round_trip(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    raw = (tmp_path / "a.idx").read_bytes()
    # Header: 0, 0, type code, ndim, then big-endian dims.
    assert raw[:2] == b"\0\0" and raw[3] == 3
    assert np.frombuffer(raw[4:16], ">u4").tolist() == [2, 3, 4]
    b = read_idx(tmp_path / "a.idx")
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_idx_reads_lecun_header_bytes(tmp_path):
    # A hand-built file as LeCun's: magic 0x00000801 (uint8, 1-D), count, labels.
    (tmp_path / "l").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    np.testing.assert_array_equal(read_idx(tmp_path / "l"), np.array([7, 2, 1], np.uint8))


# -- search order -------------------------------------------------------------------------

def test_search_env_before_keras_cache(tmp_path, monkeypatch):
    env_arrays, cache_arrays = synthetic(seed=1), synthetic(seed=2)
    write_npz(tmp_path / "env", env_arrays)
    write_npz(tmp_path / "home" / ".keras" / "datasets", cache_arrays)
    assert_loaded(load_mnist(), cache_arrays)
    monkeypatch.setenv("TFCORE_DATA_DIR", str(tmp_path / "env"))
    assert_loaded(load_mnist(), env_arrays)
    # An env dir without MNIST falls through to the cache.
    os.makedirs(tmp_path / "empty")
    monkeypatch.setenv("TFCORE_DATA_DIR", str(tmp_path / "empty"))
    assert_loaded(load_mnist(), cache_arrays)


def test_search_keras_home(tmp_path, monkeypatch):
    arrays = synthetic(seed=3)
    write_npz(tmp_path / "kh" / "datasets", arrays)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert_loaded(load_mnist(), arrays)


def test_explicit_data_dir_never_falls_through(tmp_path, monkeypatch):
    write_npz(tmp_path / "env", synthetic())
    write_npz(tmp_path / "home" / ".keras" / "datasets", synthetic())
    monkeypatch.setenv("TFCORE_DATA_DIR", str(tmp_path / "env"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="no MNIST in data_dir .*empty"):
        load_mnist(tmp_path / "empty")
    with pytest.raises(DataError, match="data_dir .*nowhere.* does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_nothing_anywhere_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCORE_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DataError, match=r"not found \(looked in .*envdir.*\.keras.*"
                                        r"download=False"):
        load_mnist(download=False)


# -- bad local files --------------------------------------------------------------------------

def _npz_bytes(arrays, compressed=False, tmp=None):
    path = write_npz(tmp, arrays, compressed)
    data = open(path, "rb").read()
    os.remove(path)
    return data


def _npz_case(name, tmp):
    """Writes a broken mnist.npz into tmp; returns the expected message fragment."""
    path = tmp / "mnist.npz"
    good = synthetic()
    if name == "not_a_zip":
        path.write_bytes(b"this is not a zip archive" * 10)
        return r"is not an .npz \(zip\) archive: it starts with b'this i'"
    if name == "truncated":
        data = _npz_bytes(good, tmp=tmp)
        path.write_bytes(data[: len(data) // 2])
        return "truncated or corrupt"
    if name == "corrupt_payload":
        data = bytearray(_npz_bytes(good, compressed=True, tmp=tmp))
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(64)
        path.write_bytes(bytes(data))
        return "truncated or corrupt"
    if name == "empty_file":
        path.write_bytes(b"")
        return "is empty"
    if name == "single_npy":
        with open(path, "wb") as f:
            np.save(f, good["x_train"])
        return "is a single .npy array, not an .npz archive"
    if name == "missing_array":
        np.savez(path, **{k: v for k, v in good.items() if k != "y_test"})
        return r"lacks the arrays \['y_test'\]"
    if name == "pickled_object_array":
        bad = dict(good, y_test=np.array([object()] * 5, dtype=object))
        np.savez(path, **bad)
        return r"holds pickled object arrays, which are never loaded \(allow_pickle=False\)"
    if name == "wrong_dtype":
        np.savez(path, **dict(good, x_train=good["x_train"].astype(np.float32)))
        return "x_train has dtype float32, expected uint8"
    if name == "wrong_shape":
        np.savez(path, **dict(good, x_test=good["x_test"][:, :, :27]))
        return r"x_test has shape \(5, 28, 27\), expected \[N, 28, 28\]"
    if name == "empty_split":
        np.savez(path, **dict(good, x_test=good["x_test"][:0], y_test=good["y_test"][:0]))
        return r"x_test has shape \(0, 28, 28\)"
    if name == "length_mismatch":
        np.savez(path, **dict(good, y_train=good["y_train"][:-1]))
        return "x_train has 12 images but y_train has 11 labels"
    if name == "bad_label":
        np.savez(path, **dict(good, y_test=np.array([0, 1, 10, 2, 3], np.uint8)))
        return r"y_test has label 10, expected labels in 0\.\.9"
    raise AssertionError(name)


@pytest.mark.parametrize("case", ["not_a_zip", "truncated", "corrupt_payload", "empty_file",
                                  "single_npy", "missing_array", "pickled_object_array",
                                  "wrong_dtype", "wrong_shape", "empty_split",
                                  "length_mismatch", "bad_label"])
def test_bad_npz(tmp_path, case):
    fragment = _npz_case(case, tmp_path)
    path = str(tmp_path / "mnist.npz")
    with pytest.raises(DataError, match=fragment) as info:
        load_mnist(tmp_path)
    assert path in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_file_in_cache_is_not_skipped(tmp_path):
    cache = tmp_path / "home" / ".keras" / "datasets"
    os.makedirs(cache)
    (cache / "mnist.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_mnist()  # raises rather than downloading over it (the fetch would fail)


def test_missing_npz_file(tmp_path):
    os.symlink(tmp_path / "gone.npz", tmp_path / "mnist.npz")  # dangling link
    with pytest.raises(DataError, match=f"{tmp_path / 'mnist.npz'} does not exist"):
        load_mnist(tmp_path)


def _idx_case(name, tmp):
    """Writes a full IDX set with one broken file; returns (broken path, fragment)."""
    good = synthetic()
    write_idx_set(tmp, good, gz=(name == "truncated_gz"))
    suffix = ".gz" if name == "truncated_gz" else ""
    images = tmp / (IDX["x_train"] + suffix)
    labels = tmp / (IDX["y_test"] + suffix)
    if name == "bad_magic":
        data = bytearray(images.read_bytes())
        data[0:4] = b"\x12\x34\x08\x03"
        images.write_bytes(bytes(data))
        return images, "bad IDX magic 12340803"
    if name == "short_payload":
        images.write_bytes(images.read_bytes()[:-100])
        return images, (r"short payload: 9308 bytes, but its header \(shape \(12, 28, 28\), "
                        r"uint8\) needs 9408")
    if name == "long_payload":
        labels.write_bytes(labels.read_bytes() + b"\0\0")
        return labels, "long payload: 7 bytes"
    if name == "header_only":
        images.write_bytes(b"\0\0\x08")
        return images, "too short"
    if name == "truncated_gz":
        data = images.read_bytes()
        images.write_bytes(data[: len(data) // 2])
        return images, "not a valid gzip stream"
    if name == "wrong_dtype":
        write_idx(labels, good["y_test"].astype(np.int32))
        return labels, "y_test has dtype int32, expected uint8"
    if name == "wrong_rank":
        write_idx(images, good["x_train"].reshape(12, 28 * 28))
        return images, r"x_train has shape \(12, 784\)"
    if name == "missing_file":
        os.remove(labels)
        return tmp, r"incomplete MNIST IDX files .*missing \['t10k-labels-idx1-ubyte'\]"
    raise AssertionError(name)


@pytest.mark.parametrize("case", ["bad_magic", "short_payload", "long_payload",
                                  "header_only", "truncated_gz", "wrong_dtype",
                                  "wrong_rank", "missing_file"])
def test_bad_idx(tmp_path, case):
    path, fragment = _idx_case(case, tmp_path)
    with pytest.raises(DataError, match=fragment) as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_idx_length_mismatch_names_both_files(tmp_path):
    arrays = synthetic()
    arrays["y_train"] = arrays["y_train"][:7]
    write_idx_set(tmp_path, arrays, gz=True)
    with pytest.raises(DataError, match="x_train has 12 images but y_train has 7") as info:
        load_mnist(tmp_path)
    assert IDX["x_train"] in str(info.value) and IDX["y_train"] in str(info.value)


# -- download ----------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.server.payload
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut.npz":  # the connection drops half-way
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server serving a synthetic mnist.npz; the real fetch is restored."""
    monkeypatch.setattr(mnist_mod, "_fetch", _REAL_FETCH)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    arrays = synthetic(seed=7)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    httpd.payload = buf.getvalue()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{httpd.server_address[1]}", arrays,
               hashlib.sha256(httpd.payload).hexdigest())
    finally:
        httpd.shutdown()
        httpd.server_close()


_REAL_FETCH = mnist_mod._fetch


def test_published_location():
    assert mnist_mod.MNIST_URL == (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz")
    assert mnist_mod.MNIST_SHA256 == (
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")


def test_download_success(tmp_path, server):
    base, arrays, digest = server
    dest = tmp_path / "dl"
    path = download_mnist(dest, url=f"{base}/mnist.npz", sha256=digest.upper())
    assert path == str(dest / "mnist.npz")
    assert os.listdir(dest) == ["mnist.npz"]  # no temporary file left
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert_loaded(load_mnist(dest), arrays)


def test_download_file_url(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_fetch", _REAL_FETCH)
    arrays = synthetic(seed=4)
    src = write_npz(tmp_path / "src", arrays)
    digest = hashlib.sha256(open(src, "rb").read()).hexdigest()
    download_mnist(tmp_path / "dl", url=f"file://{src}", sha256=digest)
    assert_loaded(load_mnist(tmp_path / "dl"), arrays)


def test_download_hash_mismatch_leaves_nothing(tmp_path, server):
    base, _, digest = server
    url = f"{base}/mnist.npz"
    wrong = "0" * 64
    with pytest.raises(DataError, match=f"download of {url} failed: sha256 mismatch, got "
                                        f"{digest}, expected {wrong}"):
        download_mnist(tmp_path / "dl", url=url, sha256=wrong)
    assert os.listdir(tmp_path / "dl") == []


def test_download_interrupted_leaves_nothing(tmp_path, server):
    base, _, digest = server
    url = f"{base}/cut.npz"
    with pytest.raises(DataError, match=f"download of {url} failed") as info:
        download_mnist(tmp_path / "dl", url=url, sha256=digest)
    assert "sha256" not in str(info.value)  # caught as a broken transfer, not by the hash
    assert os.listdir(tmp_path / "dl") == []


def test_download_fetch_errors_leave_nothing(tmp_path, monkeypatch):
    def dies_midway(url, out):
        out.write(b"partial bytes")
        raise ConnectionResetError("peer reset")

    monkeypatch.setattr(mnist_mod, "_fetch", dies_midway)
    with pytest.raises(DataError, match="download of u://x failed: ConnectionResetError: "
                                        "peer reset"):
        download_mnist(tmp_path / "dl", url="u://x", sha256="0" * 64)
    assert os.listdir(tmp_path / "dl") == []

    def interrupted(url, out):
        out.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_mod, "_fetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_mnist(tmp_path / "dl", url="u://x", sha256="0" * 64)
    assert os.listdir(tmp_path / "dl") == []


def test_download_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_fetch", _REAL_FETCH)
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist.npz"
    with pytest.raises(DataError, match=f"download of {url} failed"):
        download_mnist(tmp_path / "dl", url=url, sha256="0" * 64)
    assert os.listdir(tmp_path / "dl") == []


def test_load_mnist_downloads_into_keras_cache_once(tmp_path, server, monkeypatch):
    base, arrays, digest = server
    monkeypatch.setattr(mnist_mod, "MNIST_URL", f"{base}/mnist.npz")
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", digest)
    assert_loaded(load_mnist(), arrays)
    cache = tmp_path / "home" / ".keras" / "datasets"
    assert os.listdir(cache) == ["mnist.npz"]

    def no_network(url, out):
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(mnist_mod, "_fetch", no_network)
    assert_loaded(load_mnist(), arrays)  # now from the cache


def test_load_mnist_failed_download_names_url(tmp_path, server, monkeypatch):
    base, _, _ = server
    monkeypatch.setattr(mnist_mod, "MNIST_URL", f"{base}/mnist.npz")
    # The default published hash does not match the fake file.
    with pytest.raises(DataError, match=f"{base}/mnist.npz failed: sha256 mismatch"):
        load_mnist()
    assert os.listdir(tmp_path / "home" / ".keras" / "datasets") == []


def test_gzip_helper_sanity(tmp_path):
    # write_idx's .gz output is real gzip (readable by the gzip module).
    write_idx(tmp_path / "a.gz", np.arange(3, dtype=np.uint8))
    assert gzip.decompress((tmp_path / "a.gz").read_bytes())[:4] == bytes([0, 0, 8, 1])
