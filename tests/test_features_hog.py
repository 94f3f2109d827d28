"""jitnet.features.hog against skimage.feature.hog, image by image, on every target."""

import importlib
import math
import pickle

import numpy as np
import pytest

skfeature = pytest.importorskip("skimage.feature")

import jitnet  # noqa: E402
from jitnet.features import hog, hog_cpu, hog_image, n_hog_features  # noqa: E402

# the module, not the function that jitnet.features re-exports under the same name
hog_module = importlib.import_module("jitnet.features.hog")

ATOL = 1e-4
NORMS = ["L1", "L1-sqrt", "L2", "L2-Hys"]
# (pixels_per_cell, cells_per_block, (H, W), orientations)
GEOMETRIES = [
    ((8, 8), (2, 2), (32, 32), 9),
    ((4, 4), (3, 3), (20, 24), 9),
    ((6, 6), (1, 1), (24, 40), 6),
    ((3, 5), (2, 1), (24, 40), 8),
    ((5, 3), (1, 2), (17, 13), 4),
]
TARGETS = ["numpy", "cpu"]


def skimage_rows(images, channel_axis, **kwargs):
    """``skimage.feature.hog`` of each image; ``channel_axis`` as in the batch array."""
    axis = None if channel_axis is None else (channel_axis - 1 if channel_axis > 0 else -1)
    return np.stack([skfeature.hog(image, channel_axis=axis, **kwargs) for image in images])


def random_images(rng, n, shape, colour, dtype):
    images = rng.integers(0, 256, (n, 3, *shape) if colour else (n, *shape))
    if dtype == np.uint8:
        return images.astype(np.uint8)
    return (images / 255).astype(dtype)  # k / 255: near-ties and near-edge angles happen


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-{g[1]}-{g[2]}-{g[3]}")
def test_matches_skimage_every_norm(rng, target, dtype, colour, geometry):
    cells, blocks, shape, orientations = geometry
    images = random_images(rng, 3, shape, colour, dtype)
    channel_axis = 1 if colour else None
    for norm in NORMS:
        kwargs = dict(orientations=orientations, pixels_per_cell=cells, cells_per_block=blocks,
                      block_norm=norm)
        with jitnet.use_target(target):
            got = hog(images, channel_axis=channel_axis, **kwargs)
        expected = skimage_rows(images, channel_axis, **kwargs)
        assert got.dtype == np.float32
        assert got.shape == expected.shape == (3, n_hog_features(shape, orientations, cells,
                                                                 blocks))
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=norm)


@pytest.mark.parametrize("target", TARGETS)
def test_nhwc_equals_nchw(rng, target):
    images = random_images(rng, 4, (16, 24), True, np.uint8)
    with jitnet.use_target(target):
        nchw = hog(images, pixels_per_cell=4, channel_axis=1)
        nhwc = hog(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), pixels_per_cell=4,
                   channel_axis=-1)
        nhwc3 = hog(images.transpose(0, 2, 3, 1), pixels_per_cell=4, channel_axis=3)
    np.testing.assert_array_equal(nchw, nhwc)
    np.testing.assert_array_equal(nchw, nhwc3)


def test_cpu_equals_numpy_target(rng):
    images = random_images(rng, 16, (32, 32), True, np.float64)
    with jitnet.use_target("numpy"):
        reference = hog(images, channel_axis=1)
    with jitnet.use_target("cpu"):
        fast = hog(images, channel_axis=1)
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-6)


def test_other_dtypes_and_flat_images(rng):
    images = rng.integers(-300, 300, (2, 3, 16, 16)).astype(np.int16)
    np.testing.assert_allclose(hog(images, channel_axis=1),
                               skimage_rows(images, 1, cells_per_block=(2, 2)), atol=ATOL)
    flat = np.full((2, 16, 16), 7, dtype=np.uint8)
    assert not hog(flat).any()  # no gradient anywhere: every block normalises to 0


def test_nan_pixel_matches_skimage(rng):
    images = random_images(rng, 2, (16, 16), False, np.float64)
    images[0, 5, 6] = np.nan
    for target in TARGETS:
        with jitnet.use_target(target):
            got = hog(images, block_norm="L1")
        np.testing.assert_allclose(got, skimage_rows(images, None, block_norm="L1",
                                                     cells_per_block=(2, 2)),
                                   atol=ATOL, equal_nan=True)
        assert np.isnan(got[0]).any() and not np.isnan(got[1]).any()


def test_gradients_whose_squares_overflow_match_skimage():
    # at 1e300 squared gradients are inf: the strongest channel is the one of the largest
    # hypot, as skimage picks it, not the first of those tied at inf (the cpu kernel took
    # the first, and so another bin, and NaN elsewhere, than skimage)
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8)) / 255.0
    images[0] *= 1e300  # every gradient huge, or 0 on the border
    images[1, 0] *= 1e300  # one huge channel beside two ordinary ones
    images[1, 1, 2:5, 2:5] = 1e300 * (1 + 2.0**-50)
    images[1, 2, :, 3] = 1e300
    for norm in ("L1", "L2-Hys"):
        kwargs = dict(pixels_per_cell=(4, 4), cells_per_block=(2, 2), block_norm=norm)
        with jitnet.use_target("cpu"), np.errstate(all="ignore"):
            got = jitnet.to_numpy(hog(images, channel_axis=1, **kwargs))
        with np.errstate(all="ignore"):
            want = skimage_rows(images, 1, **kwargs)
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_near_edge_directions_are_flagged():
    bounds = hog_module._bin_bounds(9)
    edges = np.deg2rad(bounds)
    cos, sin = np.cos(edges), np.sin(edges)
    for degrees, near in [(20.0 + 1e-12, True), (20.0 - 1e-12, True), (30.0, False),
                          (179.9999999999999, True), (100.5, False)]:
        g_row, g_col = math.sin(math.radians(degrees)), math.cos(math.radians(degrees))
        b, flagged = hog_cpu._bin_by_direction(g_row, g_col, 1.0, cos, sin)
        assert flagged == near, degrees
        if not near:
            assert b == int(degrees // 20)


def test_real_cifar_images(shared_cifar_root):
    path = shared_cifar_root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = batch[b"data"][:6].reshape(-1, 3, 32, 32)
    for norm in NORMS:
        for data in (images, images / 255.0):
            for target in TARGETS:
                with jitnet.use_target(target):
                    got = hog(data, block_norm=norm, channel_axis=1)
                expected = skimage_rows(data, 1, block_norm=norm, cells_per_block=(2, 2))
                np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
            grey = data.mean(axis=1)
            np.testing.assert_allclose(hog(grey, pixels_per_cell=4, block_norm=norm),
                                       skimage_rows(grey, None, pixels_per_cell=(4, 4),
                                                    block_norm=norm, cells_per_block=(2, 2)),
                                       rtol=0, atol=ATOL)


def test_uint8_cifar_equals_skimage_bit_for_bit(shared_cifar_root):
    # the uint8 kernel takes bins and magnitudes from NumPy's own arctan2 and hypot,
    # votes in skimage's float32 order and sums blocks in NumPy's pairwise order:
    # the features are skimage's rounded to float32, not merely close (that kernel is the
    # cpu target's: the numpy target sums blocks in its own order, see test_matches_skimage...)
    x_train, _, x_test, _ = jitnet.data.load_cifar10(shared_cifar_root)
    images = np.concatenate([x_test[:40], x_train[:40]])
    for norm in NORMS:
        with jitnet.use_target("cpu"):
            got = hog(images, block_norm=norm, channel_axis=1)
        expected = skimage_rows(images, 1, block_norm=norm, cells_per_block=(2, 2))
        np.testing.assert_array_equal(got, expected.astype(np.float32), err_msg=norm)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 2), (2, 7), (3, 3), (7, 2)])
@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_uint8_tiny_images(rng, shape, colour):
    # one- and two-pixel rows and columns: every pixel is a border pixel
    images = random_images(rng, 2, shape, colour, np.uint8)
    channel_axis = 1 if colour else None
    kwargs = dict(orientations=5, pixels_per_cell=(1, 1), cells_per_block=(1, 1), block_norm="L1")
    expected = skimage_rows(images, channel_axis, **kwargs)
    for target in TARGETS:
        with jitnet.use_target(target):
            got = hog(images, channel_axis=channel_axis, **kwargs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=target)


def test_uint8_with_more_bins_than_int8_holds(rng):
    images = random_images(rng, 2, (16, 16), True, np.uint8)
    kwargs = dict(orientations=200, pixels_per_cell=(8, 8), cells_per_block=(1, 1))
    np.testing.assert_allclose(hog(images, channel_axis=1, **kwargs),
                               skimage_rows(images, 1, **kwargs), rtol=0, atol=ATOL)


def test_uint8_equals_float64_input(rng):
    # the uint8 kernel (tables) and the general one (direction test) on the same values
    images = random_images(rng, 5, (24, 40), True, np.uint8)
    kwargs = dict(orientations=8, pixels_per_cell=(3, 5), cells_per_block=(2, 1))
    np.testing.assert_allclose(hog(images, channel_axis=1, **kwargs),
                               hog(images.astype(np.float64), channel_axis=1, **kwargs),
                               rtol=0, atol=1e-6)


def test_uint8_tables_are_numpys_bins_and_magnitudes():
    bins, magnitudes = hog_cpu._uint8_tables(9)
    g_row, g_col = np.meshgrid(np.arange(-255, 256.0), np.arange(-255, 256.0), indexing="ij")
    index = ((g_row + 255) * 511 + g_col + 255).astype(np.int64)
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    expected = np.searchsorted(hog_module._bin_bounds(9)[1:], angle, side="right")
    np.testing.assert_array_equal(bins[index], np.where(expected < 9, expected, -1))
    # the table holds |g_row|, |g_col| only: hypot must not depend on the signs
    folded = (np.abs(g_row) * 256 + np.abs(g_col)).astype(np.int64)
    np.testing.assert_array_equal(magnitudes[folded], np.hypot(g_col, g_row))


def test_hog_image_matches_skimage_visualisation(rng):
    image = random_images(rng, 1, (32, 24), True, np.uint8)[0]
    picture = hog_image(image, pixels_per_cell=8, channel_axis=0)
    _, expected = skfeature.hog(image, pixels_per_cell=(8, 8), cells_per_block=(1, 1),
                                visualize=True, channel_axis=0)
    assert picture.shape == (32, 24)
    np.testing.assert_allclose(picture, expected, atol=1e-4)


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (np.zeros((2, 8, 8)), {}, "too small"),
        (np.zeros((2, 32, 32)), {"block_norm": "L3"}, "unknown block_norm"),
        (np.zeros((2, 3, 32, 32)), {}, "grey images"),
        (np.zeros((32, 32)), {}, "grey images"),
        (np.zeros((2, 32, 32)), {"channel_axis": 1}, "colour images"),
        (np.zeros((2, 3, 32, 32)), {"channel_axis": 4}, "does not exist"),
        (np.zeros((2, 3, 32, 32)), {"channel_axis": 0}, "batch axis"),
        (np.zeros((2, 32, 32)), {"pixels_per_cell": (0, 8)}, "pixels_per_cell"),
        (np.zeros((2, 32, 32)), {"orientations": 0}, "orientations"),
        (np.zeros((0, 32, 32)), {}, "at least one image"),
        (np.zeros((2, 32, 32), dtype=complex), {}, "real-valued"),
    ],
)
def test_validation_messages(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hog(images, **kwargs)
