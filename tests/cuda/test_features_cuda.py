"""HoG and colour histograms on the cuda target against the numpy target.

Tiny batches (2-3 images of 16x16 or 24x24): the simulator runs every CUDA
thread as a Python thread. Launch shapes are patched tiny (see conftest.py), so
the grid-stride loops over cells, blocks and histogram bins wrap.
"""

import importlib
import pickle
import platform

import numpy as np
import pytest

import jitnet
from jitnet.features import color_histogram, hog

cu = pytest.importorskip("jitnet.kernels.cuda")
# the module, not the function that jitnet.features re-exports under the same name
hog_module = importlib.import_module("jitnet.features.hog")
cuda_features = importlib.import_module("jitnet.kernels.cuda.features")
# a global, so that the simulator swaps it for its own in the test's kernel
cuda = cu.device.cuda
try:
    from skimage.feature import hog as skimage_hog
except ImportError:  # the comparisons with skimage itself are left out
    skimage_hog = None

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


# --------------------------------------------------------------------------------------
# extreme values: infinities, NaN, and gradients whose squares overflow or underflow
# --------------------------------------------------------------------------------------


def _extreme_images(rng, kind, dtype):
    """Two colour images (2, 3, 8, 8) of ``k / 255`` values with ``kind``'s extremes."""
    images = _images(rng, 2, (8, 8), True, np.float64)
    rows, cols = np.mgrid[0:8, 0:8]
    if kind == "inf":
        images[0, 1, 3, 3] = np.inf  # its neighbours' gradients are infinite
        images[0, 0, 5, 2] = -np.inf
        images[1, 2, 4, 4] = images[1, 2, 4, 6] = np.inf  # inf - inf: a NaN g_col at (4, 5)
        images[1, 1, 1, 5] = np.nan  # (2, 5): a NaN g_row beside an infinite g_col
        images[1, 1, 2, 6] = np.inf
    elif kind == "huge":  # 1e300: the squares overflow (glibc scales by 2**-600)
        images[0] *= 1e300  # every gradient huge, or 0 on the border
        images[1, 0] *= 1e300  # one huge channel beside two ordinary ones
        images[1, 1, 2:5, 2:5] = 1e300 * (1 + 2.0**-50)  # g_col / g_row = 2**-50: scaled
        images[1, 2, :, 3] = 1e300  # a huge g_col beside an ordinary g_row: ax + ay
    elif kind == "tiny":  # 1e-300: the squares underflow (glibc scales by 2**600)
        images[0] *= 1e-300
        images[1, 1] *= 1e-300
        # g_row of +-1 on rows 2 and 4 beside a g_col of 4e-300 (channel 0) or of 1e-20
        # (channel 2, in range but below 2**-54 of g_row): ax + ay
        images[1, 0] = cols * 2e-300 + (rows == 3)
        images[1, 2] = cols * 5e-21 + (rows == 3)
    return images.astype(dtype)


# the simulator runs the kernels on NumPy scalars, which warn where infinities and NaN
# meet (inf - inf, 0 / 0); a GPU computes the same values silently
SIMULATED_EXTREMES = pytest.mark.filterwarnings("ignore:(overflow|invalid value) "
                                                "encountered:RuntimeWarning")


@SIMULATED_EXTREMES
@pytest.mark.parametrize("kind, dtype", [("inf", np.float32), ("inf", np.float64),
                                         ("huge", np.float64), ("tiny", np.float64)])
def test_hog_extreme_values_match_the_cpu_target(rng, kind, dtype):
    # the cpu target equals skimage bit for bit on these (the numpy target does not: it
    # keeps its cell sums in float64, where skimage's float32 ones overflow to inf)
    images = _extreme_images(rng, kind, dtype)
    for norm in ("L1", "L2-Hys"):
        kwargs = dict(orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2),
                      block_norm=norm, channel_axis=1)
        with jitnet.use_target("cpu"), np.errstate(all="ignore"):
            want = jitnet.to_numpy(hog(images, **kwargs))
        if skimage_hog is not None:  # the oracle is right
            sk_kwargs = {k: v for k, v in kwargs.items() if k != "channel_axis"}
            with np.errstate(all="ignore"):
                rows = [skimage_hog(image, channel_axis=0, **sk_kwargs) for image in images]
            np.testing.assert_array_equal(want, np.stack(rows).astype(np.float32))
        got = hog(images, **kwargs)
        assert jitnet.targets.is_device_array(got)
        got = cu.to_numpy(got)
        assert got.dtype == np.float32 and got.shape == want.shape
        if kind != "tiny":
            assert not np.isfinite(want).all()  # the extremes reach the features
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-7)


def _hypot_pairs(rng):
    inf, nan, big, small = np.inf, np.nan, 2.0**511, 2.0**-511
    special = [
        (inf, 1.0), (1.0, -inf), (inf, nan), (nan, -inf), (-inf, inf), (nan, 1.0), (2.0, nan),
        (nan, nan), (0.0, 0.0), (-0.0, 0.0), (3.0, 4.0),
        # above 2**511: ay negligible (ax + ay), or both scaled down, or overflowing
        (1e300, 0.0), (1e300, 1e300 * 2.0**-55), (1e300, 7e299), (-1.5 * big, 1.2 * big),
        (1.7e308, 1.7e308), (1e300, 1e-300),
        # below 2**-511: ax dominant (ax + ay), or both scaled up; subnormals
        (1.0, 1e-300), (1e-300, 0.0), (1e-300, 7e-301), (1e-290, 1e-300), (5e-324, 5e-324),
        (3e-320, -4e-320), (0.9 * small, 0.8 * small), (small, small),
    ]
    x, y = np.array(special).T
    # and every scale: |x|, |y| log-uniform over 1e-320 .. 1e308, ratios of any size
    exponents = rng.uniform(-320, 308, (2, 200))
    signs = rng.choice([-1.0, 1.0], (2, 200))
    x = np.concatenate([x, signs[0] * 10.0 ** exponents[0]])
    y = np.concatenate([y, signs[1] * 10.0 ** np.where(rng.random(200) < 0.5, exponents[1],
                                                        exponents[0] - rng.uniform(0, 20, 200))])
    return x, y


@cuda.jit
def _hypot_kernel(x, y, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = cuda_features._hypot(x[i], y[i])


@SIMULATED_EXTREMES
def test_hypot_is_numpys_bit_for_bit_at_every_scale(rng):
    # the HoG kernels' float64 hypot: glibc's algorithm, whose branches for infinite,
    # NaN, huge and tiny operands ordinary images never reach
    x, y = _hypot_pairs(rng)
    out = cu.empty(x.shape, np.float64)
    _hypot_kernel[2, 32](cu.asarray(x), cu.asarray(y), out)
    got = cu.to_numpy(out)
    with np.errstate(over="ignore"):
        want = np.hypot(x, y)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    libc, version = platform.libc_ver()
    if libc == "glibc" and tuple(map(int, version.split("."))) >= (2, 35):
        # NumPy calls libm's hypot: glibc's since 2.35 is the algorithm of the kernel
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)


@SIMULATED_EXTREMES
@pytest.mark.parametrize("bins", [7, 10])
def test_color_histogram_values_on_the_bin_edges_and_extremes(bins):
    # np.histogram's index (value - lo) * bins / (hi - lo) rounds across an edge for
    # some values on it (10 bins: 0.3, 0.6, 0.7 fall back a bin; 7 bins: 5 / 7 goes up a
    # bin): grey pixels hold every edge and its neighbours as their value (channel "v")
    edges = np.linspace(0.0, 1.0, bins + 1)
    values = np.concatenate([np.nextafter(edges, -1.0), edges, np.nextafter(edges, 2.0),
                             np.arange(1, bins) / bins])
    images = np.zeros((2, 3, 6, 6))
    images[0] = np.resize(values, (6, 6))
    images[1] = np.resize(values[::-1], (6, 6))
    images[1, 0, 0] = [np.inf, -np.inf, np.nan, 1e300, 1e-300, -0.0]
    images[1, 1, 1] = [np.inf, 1e-300, 5e-324, 1e300, 2.0, 0.5]
    images[1, 2, 2, :3] = -np.inf
    kwargs = dict(bins=bins, channel_axis=1, channels="hsv")
    got = color_histogram(images, **kwargs)
    assert jitnet.targets.is_device_array(got)
    with np.errstate(all="ignore"):
        want = _reference(color_histogram, images, **kwargs)
    np.testing.assert_array_equal(cu.to_numpy(got), want)
