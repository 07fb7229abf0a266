"""IDX files (the format of LeCun's MNIST distribution) and the data package's error.

An IDX file is a big-endian header followed by the raw array:

    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions `ndim`
    then        `ndim` big-endian uint32 dimension sizes
    then        prod(dims) elements, big-endian, row-major

`read_idx` reads a plain or gzip-compressed file (recognised by its first two bytes,
not its name) into a native-endian NumPy array; `write_idx` writes one (gzip when the
name ends in `.gz`). Every problem with a file raises `DataError`, whose message
names the file and what was wrong.
"""
from __future__ import annotations

import gzip
import os
import zlib
from typing import Union

import numpy as np

from tfcore.checks import ArgumentError

PathLike = Union[str, os.PathLike]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(ArgumentError):
    """A data file is missing, truncated, corrupt or holds the wrong arrays (an
    `ArgumentError`, so a `ValueError`: the binaries print it as one line).

    The message always names the file (or folder) and what was wrong with it.
    """


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file (plain or gzip) into a native-endian array.

    Args:
      path: the file. Gzip is detected from its content, whatever its name.

    Returns:
      The array, shaped as the header says, dtype from the header's type code
      (uint8 for MNIST), native byte order.

    Raises:
      DataError: the file is missing or unreadable, is a broken gzip stream, has no
        IDX magic, an unknown type code, or a payload shorter or longer than its
        header says.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"IDX file {path} is not a valid gzip stream "
                            f"(truncated or corrupt): {e}") from e
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is too short ({len(raw)} bytes) to hold an "
                        "IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"IDX file {path} has bad IDX magic {raw[:4].hex()} (expected "
                        "00 00 <type code> <ndim>, e.g. 00000803 for uint8 images)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"IDX file {path} has a bad header: {ndim} dimensions in "
                        f"{len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        what = "short" if payload < expected else "long"
        raise DataError(f"IDX file {path} has a {what} payload: {payload} bytes, but its "
                        f"header (shape {dims}, {dtype.name}) needs {expected}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Writes `array` as an IDX file, gzip-compressed when `path` ends in `.gz`.

    Args:
      path: destination file.
      array: at least 1-D, of a dtype IDX can hold (uint8, int8, int16, int32,
        float32, float64).

    Raises:
      ValueError: the array is 0-D or of a dtype IDX cannot hold.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in _IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise ValueError(f"write_idx: array dtype must be one of uint8, int8, int16, "
                         f"int32, float32, float64, got {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"write_idx: array must be at least 1-D, got shape {array.shape}")
    code = codes[key]
    data = (bytes([0, 0, code, array.ndim])
            + np.asarray(array.shape, ">u4").tobytes()
            + np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes())
    path = os.fspath(path)
    if path.endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
