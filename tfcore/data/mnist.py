"""MNIST, loaded like `keras.datasets.mnist.load_data()`, without Keras.

`load_mnist(data_dir=None)` returns `((x_train, y_train), (x_test, y_test))`: uint8
arrays shaped (60000, 28, 28), (60000,), (10000, 28, 28), (10000,) for the real data
(any N > 0 is accepted as long as the four arrays are consistent).

Where it looks, in order:

1. `data_dir`, when given: a directory (or an `.npz` file). If it holds no MNIST an
   error is raised; there is no fall-through to the other places.
2. `$TFCORE_DATA_DIR`, when set (directory or `.npz` file); skipped if it holds no
   MNIST at all.
3. Keras's cache, `$KERAS_HOME/datasets/mnist.npz` (default `~/.keras/datasets/`).
4. A download of Keras's published file (`MNIST_URL`), checked against its published
   sha256 (`MNIST_SHA256`) and stored atomically in Keras's cache (3.); with
   `download=False` a `DataError` is raised instead.

A directory holds MNIST either as Keras's `mnist.npz` (four arrays `x_train`,
`y_train`, `x_test`, `y_test`; always read with `allow_pickle=False`) or as LeCun's
four IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or `.gz`; `mnist.npz`
wins when both are present. A file found locally is checked by its arrays (names,
shapes, dtype uint8, labels in 0..9, matching lengths), not by a file hash: copies of
MNIST differ byte-wise. Any problem raises `DataError` (a `ValueError`) naming the
file and the problem; a broken file is never skipped silently.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from typing import BinaryIO, Dict, Optional, Tuple

import numpy as np

from tfcore.data.idx import DataError, PathLike, read_idx

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
NPZ_NAME = "mnist.npz"
# Array name -> IDX base name (each may also end in `.gz`).
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
ENV_DATA_DIR = "TFCORE_DATA_DIR"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
_DOWNLOAD_TIMEOUT_S = 60.0

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def load_mnist(data_dir: Optional[PathLike] = None, *, download: bool = True) -> Arrays:
    """Loads MNIST as `((x_train, y_train), (x_test, y_test))`.

    Args:
      data_dir: a directory holding `mnist.npz` or the four IDX files, or the path of
        an `.npz` file. When given it is the only place looked at. Default: search
        `$TFCORE_DATA_DIR`, then Keras's cache, then download (see the module doc).
      download: whether the last resort may download Keras's file (default True).

    Returns:
      uint8 arrays x_train [N, 28, 28], y_train [N], x_test [M, 28, 28], y_test [M];
      N = 60000 and M = 10000 for the real MNIST.

    Raises:
      DataError: no MNIST where it was told to look (or anywhere, with
        `download=False`), a file that is truncated, corrupt or holds wrong arrays,
        or a failed or mismatching download.
    """
    if data_dir is not None:
        if not os.path.exists(data_dir):
            raise DataError(f"data_dir {os.fspath(data_dir)!r} does not exist")
        source = _find_in(data_dir)
        if source is None:
            raise DataError(f"no MNIST in data_dir {os.fspath(data_dir)!r}: expected "
                            f"{NPZ_NAME} or the IDX files {sorted(IDX_NAMES.values())} "
                            "(plain or .gz)")
        return _load_source(source)
    searched = []
    env_dir = os.environ.get(ENV_DATA_DIR)
    if env_dir:
        searched.append(f"${ENV_DATA_DIR}={env_dir}")
        source = _find_in(env_dir)
        if source is not None:
            return _load_source(source)
    cache = keras_cache_dir()
    searched.append(cache)
    source = _find_in(cache)
    if source is not None:
        return _load_source(source)
    if not download:
        raise DataError(f"MNIST not found (looked in {', '.join(searched)}) and "
                        "download=False")
    try:
        path = download_mnist(cache)
    except DataError as e:
        raise DataError(f"MNIST not found (looked in {', '.join(searched)}; give "
                        f"--data_dir or set ${ENV_DATA_DIR}), and {e}") from e
    return _load_source(path)


def keras_cache_dir() -> str:
    """Keras's dataset cache: `$KERAS_HOME/datasets`, default `~/.keras/datasets`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def download_mnist(dest_dir: PathLike, url: Optional[str] = None,
                   sha256: Optional[str] = None) -> str:
    """Downloads Keras's `mnist.npz` into `dest_dir`, verified and atomically.

    The bytes go to a temporary file in `dest_dir`, their sha256 is checked, and only
    then the file is renamed (`os.replace`) to `dest_dir/mnist.npz`. A failed,
    interrupted or mismatching download leaves no file behind.

    Args:
      dest_dir: destination directory (created if missing).
      url: where to fetch from; default `MNIST_URL` (any URL `urllib` opens,
        `file://` included).
      sha256: expected hex digest; default `MNIST_SHA256`.

    Returns:
      The path of the stored file.

    Raises:
      DataError: naming the URL, when fetching fails or the digest differs.
    """
    url = MNIST_URL if url is None else url
    sha256 = MNIST_SHA256 if sha256 is None else sha256.lower()
    dest_dir = os.fspath(dest_dir)
    dest = os.path.join(dest_dir, NPZ_NAME)
    try:
        os.makedirs(dest_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{NPZ_NAME}.", suffix=".part", dir=dest_dir)
    except OSError as e:
        raise DataError(f"cannot download {url}: cannot write to {dest_dir}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                _fetch(url, out)
            except Exception as e:  # network errors come in many classes
                raise DataError(f"download of {url} failed: {type(e).__name__}: {e}") from e
            out.flush()
            os.fsync(out.fileno())
        digest = _sha256_of(tmp)
        if digest != sha256:
            raise DataError(f"download of {url} failed: sha256 mismatch, got {digest}, "
                            f"expected {sha256} ({os.path.getsize(tmp)} bytes received)")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


def _fetch(url: str, out: BinaryIO) -> None:
    """Copies the body at `url` into `out` (tests replace this to fake the network)."""
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        expected = response.headers.get("Content-Length")
        received = 0
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
    if expected is not None and received != int(expected):
        raise OSError(f"connection closed after {received} of {expected} bytes")


def _sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- finding and reading local files --------------------------------------------------

def _find_in(location: PathLike):
    """The MNIST source in a directory or file: an .npz path, a dict of IDX paths, or
    None when there is no MNIST at all. A partial IDX set raises."""
    location = os.fspath(location)
    if os.path.isfile(location):
        return location
    if not os.path.isdir(location):
        return None
    npz = os.path.join(location, NPZ_NAME)
    if os.path.lexists(npz):
        return npz
    found: Dict[str, str] = {}
    for key, base in IDX_NAMES.items():
        for name in (base, base + ".gz"):
            if os.path.lexists(os.path.join(location, name)):
                found[key] = os.path.join(location, name)
                break
    if not found:
        return None
    missing = [IDX_NAMES[k] for k in IDX_NAMES if k not in found]
    if missing:
        raise DataError(f"incomplete MNIST IDX files in {location}: missing {missing} "
                        "(plain or .gz)")
    return found


def _load_source(source) -> Arrays:
    if isinstance(source, dict):
        arrays = {k: (read_idx(p), p) for k, p in source.items()}
    else:
        arrays = {k: (a, source) for k, a in _read_npz(source).items()}
    _check_arrays(arrays)
    return ((arrays["x_train"][0], arrays["y_train"][0]),
            (arrays["x_test"][0], arrays["y_test"][0]))


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    """The four arrays of a Keras-layout npz (read fully, so truncation shows here)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        what = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read: {e}"
        raise DataError(f"MNIST file {path} {what}") from e
    if not head:
        raise DataError(f"MNIST file {path} is empty")
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"MNIST file {path} is a single .npy array, not an .npz archive of "
                        "x_train, y_train, x_test, y_test")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # zip magic, as np.load
        raise DataError(f"MNIST file {path} is not an .npz (zip) archive: it starts with "
                        f"{head!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in IDX_NAMES if k not in f.files]
            if missing:
                raise DataError(f"MNIST file {path} lacks the arrays {missing} (it has "
                                f"{sorted(f.files)})")
            return {k: f[k] for k in IDX_NAMES}
    except DataError:
        raise
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise DataError(f"MNIST file {path} is truncated or corrupt (not a readable "
                            f".npz): {type(e).__name__}: {e}") from e
        raise DataError(f"MNIST file {path} holds pickled object arrays, which are never "
                        f"loaded (allow_pickle=False): {e}") from e
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ...
        raise DataError(f"MNIST file {path} is truncated or corrupt (not a readable .npz): "
                        f"{type(e).__name__}: {e}") from e


def _check_arrays(arrays: Dict[str, Tuple[np.ndarray, str]]) -> None:
    """Checks names, shapes, dtypes, label range and split consistency."""
    for key, (a, path) in arrays.items():
        if a.dtype != np.uint8:
            raise DataError(f"MNIST file {path}: {key} has dtype {a.dtype}, expected uint8")
        expected = "[N, 28, 28]" if key.startswith("x") else "[N]"
        ok = (a.shape[1:] == IMAGE_SHAPE) if key.startswith("x") else True
        if a.ndim != (3 if key.startswith("x") else 1) or not ok or a.shape[0] == 0:
            raise DataError(f"MNIST file {path}: {key} has shape {a.shape}, expected "
                            f"{expected} with N > 0")
    for split in ("train", "test"):
        (x, x_path), (y, y_path) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            where = x_path if x_path == y_path else f"{x_path} and {y_path}"
            raise DataError(f"MNIST file {where}: x_{split} has {len(x)} images but "
                            f"y_{split} has {len(y)} labels")
        if y.max() >= NUM_CLASSES:
            raise DataError(f"MNIST file {y_path}: y_{split} has label {int(y.max())}, "
                            f"expected labels in 0..{NUM_CLASSES - 1}")

