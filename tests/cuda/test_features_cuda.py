"""HoG and colour histograms on the cuda target against the numpy target.

Tiny batches (2-3 images of 16x16 or 24x24): the simulator runs every CUDA
thread as a Python thread. Launch shapes are patched tiny (see conftest.py), so
the grid-stride loops over cells, blocks and histogram bins wrap.
"""

import importlib
import pickle

import numpy as np
import pytest

import jitnet
from jitnet.features import color_histogram, hog

cu = pytest.importorskip("jitnet.kernels.cuda")
# the module, not the function that jitnet.features re-exports under the same name
hog_module = importlib.import_module("jitnet.features.hog")

NORMS = ["L1", "L1-sqrt", "L2", "L2-Hys"]
ATOL = 1e-4


def _images(rng, n, shape, colour, dtype):
    """``k / 255`` values (uint8 as they are): channel ties and exact angles happen."""
    images = rng.integers(0, 256, (n, 3, *shape) if colour else (n, *shape))
    if dtype == np.uint8:
        return images.astype(np.uint8)
    return (images / 255).astype(dtype)


def _reference(function, images, **kwargs):
    # NaN pixels make the reference's bin index cast warn; they are counted nowhere
    with jitnet.use_target("numpy"), np.errstate(invalid="ignore"):
        return function(images, **kwargs)


def _check(got, want):
    assert jitnet.targets.is_device_array(got)
    host = cu.to_numpy(got)
    assert host.dtype == np.float32 and host.shape == want.shape
    np.testing.assert_allclose(host, want, rtol=0, atol=ATOL)
    # exact but for float32 rounding of the normalised values
    np.testing.assert_allclose(host, want, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize(
    "dtype, colour, layout",
    [
        (np.uint8, False, None),
        (np.float32, True, "NCHW"),
        (np.float64, True, "NHWC"),
        (np.uint8, True, "NHWC"),
    ],
)
def test_hog_matches_numpy_every_norm(rng, dtype, colour, layout):
    images = _images(rng, 2, (16, 16), colour, dtype)
    channel_axis = None
    if layout == "NHWC":
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        channel_axis = -1
    elif layout == "NCHW":
        channel_axis = 1
    for norm in NORMS:
        kwargs = dict(orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2),
                      block_norm=norm, channel_axis=channel_axis)
        _check(hog(images, **kwargs), _reference(hog, images, **kwargs))


@pytest.mark.parametrize(
    "cells, blocks, orientations",
    [((6, 5), (1, 2), 4), ((8, 8), (2, 2), 6), ((3, 3), (3, 3), 8)],
)
def test_hog_odd_geometry_and_device_input(rng, cells, blocks, orientations):
    # 24x23: pixels beyond the last whole cell are ignored; 4 and 8 bins put edges on
    # the axes and diagonals (the exact-angle table), 6 bins only on the axes
    images = _images(rng, 3, (24, 23), False, np.float32)
    images[0, 5:9, 5:9] = 0.5  # flat patch: zero gradients
    kwargs = dict(orientations=orientations, pixels_per_cell=cells, cells_per_block=blocks,
                  block_norm="L2-Hys")
    want = _reference(hog, images, **kwargs)
    _check(hog(cu.asarray(images), **kwargs), want)


def test_hog_nan_pixel_votes_like_numpy(rng):
    images = _images(rng, 2, (16, 16), True, np.float64)
    images[1, 2, 6, 5] = np.nan
    kwargs = dict(pixels_per_cell=(4, 4), cells_per_block=(2, 2), block_norm="L1",
                  channel_axis=1)
    want = _reference(hog, images, **kwargs)
    got = cu.to_numpy(hog(images, **kwargs))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_hog_cells_and_blocks_pieces(rng):
    images = _images(rng, 2, (16, 16), False, np.uint8)
    bounds = np.array([180.0 / 9 * i for i in range(10)])
    hist = cu.hog_cells(images[:, None], bounds, hog_module._special_bins(bounds), (4, 4))
    assert cu.to_numpy(hist).shape == (2, 4, 4, 9)
    with jitnet.use_target("numpy"):
        want = hog_module._cell_histograms_numpy(images[:, None], 9, 4, 4, (4, 4))
    np.testing.assert_allclose(cu.to_numpy(hist), want, rtol=1e-6, atol=1e-7)
    out = cu.hog_blocks(hist, (2, 2), 3)
    _check(out, _reference(hog, images, pixels_per_cell=(4, 4), cells_per_block=(2, 2)))


def test_hog_on_real_images(shared_cifar_root):
    path = shared_cifar_root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"][:2], dtype=np.uint8).reshape(2, 3, 32, 32)
    kwargs = dict(pixels_per_cell=(8, 8), cells_per_block=(2, 2), channel_axis=1)
    _check(hog(images, **kwargs), _reference(hog, images, **kwargs))
    grey = (images.mean(axis=1) / 255).astype(np.float32)
    _check(hog(grey, pixels_per_cell=8), _reference(hog, grey, pixels_per_cell=8))


@pytest.mark.parametrize(
    "dtype, layout, channels, bins",
    [(np.uint8, "NCHW", "h", 10), (np.float32, "NHWC", "hsv", 7), (np.float64, "NCHW", "vs", 3)],
)
def test_color_histogram_matches_numpy(rng, dtype, layout, channels, bins):
    images = _images(rng, 3, (8, 8), True, dtype)
    images[0, :, :2, :2] = images[0, 0, 0, 0]  # grey pixels: zero delta, hue 0
    images[1, :, 0, 0] = images[1, :, 0, 0].max()  # channel ties
    if dtype == np.float64:
        images[2, 0, 3, 3] = np.nan  # counted nowhere
        images[2, 1, 4, 4] = 2.0  # value out of [0, 1]: counted nowhere
    channel_axis = 1
    if layout == "NHWC":
        images = images.transpose(0, 2, 3, 1)  # a strided view on purpose
        channel_axis = -1
    kwargs = dict(bins=bins, channel_axis=channel_axis, channels=channels)
    got = color_histogram(images, **kwargs)
    assert jitnet.targets.is_device_array(got)
    np.testing.assert_array_equal(cu.to_numpy(got), _reference(color_histogram, images, **kwargs))
