"""tfcore.data.images: loading a folder of PNG/JPEG files and growing it by augmentation."""
import os

import numpy as np
import pytest
from PIL import Image

from tfcore.data import DataError, augment, load_image_folder


def _gradient(h, w):
    """uint8 [h, w] image: a horizontal ramp 0..255 (a known resize target)."""
    return np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))


@pytest.fixture
def folder(tmp_path):
    """Images of different sizes, modes and formats plus files to be skipped."""
    Image.fromarray(np.full((40, 50), 255, np.uint8)).save(tmp_path / "a_white.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "b_black.JPG")
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "c_ramp.png")
    rgb = np.zeros((33, 17, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "d_red.jpeg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    os.makedirs(tmp_path / "sub")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "sub" / "e_grey.png")
    return tmp_path


def test_load_folder_grayscale(folder):
    images = load_image_folder(folder, size=(32, 32))
    assert images.shape == (4, 32, 32, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Sorted names: a_white, b_black, c_ramp, d_red.
    np.testing.assert_allclose(images[0], 1.0)
    np.testing.assert_allclose(images[1], 0.0, atol=2 / 255)  # JPEG
    ramp = images[2, 0, :, 0]
    assert np.all(np.diff(ramp) > 0) and ramp[0] < 0.05 and ramp[-1] > 0.95
    np.testing.assert_allclose(images[2, :, :, 0], np.tile(ramp, (32, 1)), atol=1e-6)
    # Red in ITU-R 601 luma: 0.299 * 255 -> 76 / 255.
    np.testing.assert_allclose(images[3], 76 / 255, atol=3 / 255)


def test_load_folder_rgb_size_and_recursive(folder):
    images = load_image_folder(folder, size=(5, 7), grayscale=False)
    assert images.shape == (4, 5, 7, 3)
    np.testing.assert_allclose(images[3].mean(axis=(0, 1)), [1, 0, 0], atol=3 / 255)
    deep = load_image_folder(str(folder), size=6, recursive=True)
    assert deep.shape == (5, 6, 6, 1)
    np.testing.assert_allclose(deep[4], 128 / 255, atol=1e-6)  # sub/e_grey.png comes last


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match=f"image folder {tmp_path} holds no image files"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        load_image_folder(tmp_path / "nope")


@pytest.mark.parametrize("content", [b"definitely not a png", b""])
def test_undecodable_image_names_file(folder, content):
    bad = folder / "z_broken.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"cannot decode image file {bad}"):
        load_image_folder(folder)


def test_truncated_jpeg_names_file(tmp_path):
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=f"cannot decode image file {tmp_path / 't.jpg'}"):
        load_image_folder(tmp_path)


def test_bad_size():
    with pytest.raises(ValueError, match=r"size must be a positive int or 2 positive ints, "
                                         r"got \(0, 3\)"):
        load_image_folder(".", size=(0, 3))


# -- augment ----------------------------------------------------------------------------

def _blobs(n=3, size=16):
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size, 1), np.float32)
    images[:, 4:12, 5:11] = rng.uniform(0.3, 0.9, (n, 8, 6, 1))
    return images


def test_augment_shape_determinism_and_range():
    images = _blobs()
    out = augment(images, factor=4, seed=0)
    assert out.shape == (12, 16, 16, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:3], images)  # originals first
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, augment(images, factor=4, seed=0))
    assert not np.allclose(out[3:], augment(images, factor=4, seed=1)[3:])
    for k in (1, 2, 3):  # every copy differs from its original
        assert np.abs(out[3 * k:3 * k + 3] - images).max() > 0.05
    np.testing.assert_array_equal(augment(images, 1, seed=5), images)


def test_augment_identity_and_pure_transforms():
    images = _blobs()
    same = augment(images, 2, seed=3, scale_range=(1, 1), max_shift=0, max_brightness=0)
    np.testing.assert_allclose(same[3:], images, atol=1e-6)
    # Brightness only: a constant offset per image within +-0.1, clipped at 0.
    bright = augment(images, 2, seed=3, scale_range=(1, 1), max_shift=0)[3:]
    inside = bright[:, 4:12, 5:11] - images[:, 4:12, 5:11]
    offsets = inside.reshape(3, -1)
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(offsets.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(offsets[:, 0]) <= 0.1)
    np.testing.assert_allclose(bright[:, 0, 0, 0], np.maximum(offsets[:, 0], 0), atol=1e-6)
    # Shift only, by at most 0.1 * 16 = 1.6 pixels: the blob's mass is kept and its
    # centre moves by at most that much (bilinear resampling conserves the sum here).
    shifted = augment(images, 2, seed=3, scale_range=(1, 1), max_brightness=0,
                      max_shift=0.1)[3:]
    np.testing.assert_allclose(shifted.sum(axis=(1, 2, 3)), images.sum(axis=(1, 2, 3)),
                               rtol=1e-4)
    grid = np.arange(16, dtype=np.float32)
    for a, b in zip(images[..., 0], shifted[..., 0]):
        moved = [(b.sum(axis=ax) @ grid) / b.sum() - (a.sum(axis=ax) @ grid) / a.sum()
                 for ax in (1, 0)]
        assert max(abs(m) for m in moved) <= 1.6 + 1e-4
        assert max(abs(m) for m in moved) > 0.01


def test_augment_zoom_scales_blob_area():
    images = np.zeros((1, 32, 32, 1), np.float32)
    images[0, 12:20, 12:20] = 1.0
    big = augment(images, 2, seed=0, scale_range=(1.5, 1.5), max_shift=0,
                  max_brightness=0)[1]
    # Zoom 1.5 about the centre: the 8x8 square becomes 12x12 (area x 2.25).
    np.testing.assert_allclose(big.sum(), images.sum() * 2.25, rtol=0.02)
    np.testing.assert_allclose(big[..., 0], big[::-1, ::-1, 0], atol=1e-5)  # still centred


@pytest.mark.parametrize("kwargs, match", [
    (dict(factor=0), "factor must be a positive integer, got 0"),
    (dict(seed=None), "seed must be an integer, got None"),
    (dict(scale_range=(0, 1)), r"scale_range must be \(min, max\) with 0 < min <= max"),
    (dict(max_shift=1.0), r"max_shift must be in \[0, 1\), got 1.0"),
    (dict(max_brightness=-0.1), "max_brightness must be >= 0, got -0.1"),
    (dict(value_range=(1, 0)), "value_range must be"),
])
def test_augment_errors(kwargs, match):
    kw = dict(factor=2, seed=0)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        augment(_blobs(), **kw)


def test_augment_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"images must be \[N, h, w, C\].*\(16, 16\)"):
        augment(np.zeros((16, 16), np.float32), 2, seed=0)
