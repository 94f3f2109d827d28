"""jitnet.features.color_histogram against matplotlib's rgb_to_hsv + np.histogram."""

import numpy as np
import pytest

import jitnet
from jitnet.features import color_histogram

colors = pytest.importorskip("matplotlib.colors")

TARGETS = ["numpy", "cpu"]


def naive_color_histogram(images_nchw, bins, channels):
    """Image by image: matplotlib's HSV, then ``np.histogram`` over [0, 1] per channel."""
    rows = []
    for image in images_nchw:
        rgb = np.moveaxis(image, 0, -1)
        hsv = colors.rgb_to_hsv(rgb / 255.0 if image.dtype == np.uint8 else rgb)
        n_pixels = rgb.shape[0] * rgb.shape[1]
        rows.append(np.concatenate([
            np.histogram(hsv[..., "hsv".index(c)], bins=bins, range=(0, 1))[0] / n_pixels
            for c in channels
        ]))
    return np.array(rows)


@pytest.fixture
def images(rng):
    x = rng.integers(0, 256, (6, 3, 12, 20)).astype(np.uint8)
    x[:, :, :3] = x[:, :1, :3]  # grey pixels: no hue
    x[:, 2, 3:6] = x[:, 1, 3:6]  # green and blue tie for the maximum
    x[0] = 9  # a flat image
    return x


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bins", [1, 7, 10])
@pytest.mark.parametrize("channels", ["h", "hsv", "vs"])
def test_matches_matplotlib_and_numpy_histogram(images, target, bins, channels):
    expected = naive_color_histogram(images, bins, channels)
    with jitnet.use_target(target):
        nchw = color_histogram(images, bins, channel_axis=1, channels=channels)
        nhwc = color_histogram(images.transpose(0, 2, 3, 1), bins, channel_axis=-1,
                               channels=channels)
        floats = color_histogram(images / 255.0, bins, channel_axis=1, channels=channels)
    assert nchw.dtype == np.float32 and nchw.shape == (6, bins * len(channels))
    for got in (nchw, nhwc, floats):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nchw.reshape(6, len(channels), bins).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16])
def test_integer_images_are_0_to_255_as_uint8(images, target, dtype):
    # any integer dtype holds 0..255 values; the value channel shows the scale
    with jitnet.use_target(target):
        want = color_histogram(images, 10, channels="hsv")
        got = color_histogram(images.astype(dtype), 10, channels="hsv")
    np.testing.assert_array_equal(got, want)


def test_default_is_hue_only_like_cs231n(images):
    got = color_histogram(images)
    assert got.shape == (6, 10)
    # cs231n: np.histogram(hue * 255, bins=linspace(0, 255, 11), density=True) * bin width
    for image, row in zip(images, got):
        hue = colors.rgb_to_hsv(np.moveaxis(image, 0, -1) / 255.0)[..., 0] * 255
        density, edges = np.histogram(hue, bins=np.linspace(0, 255, 11), density=True)
        np.testing.assert_allclose(row, density * np.diff(edges), atol=1e-6)


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (np.zeros((2, 4, 8, 8)), {}, "3 \\(RGB\\) channels"),
        (np.zeros((2, 8, 8)), {}, "RGB images"),
        (np.zeros((2, 3, 8, 8)), {"channel_axis": 5}, "does not exist"),
        (np.zeros((2, 3, 8, 8)), {"channel_axis": 0}, "batch axis"),
        (np.zeros((2, 3, 8, 8)), {"bins": 0}, "bins"),
        (np.zeros((2, 3, 8, 8)), {"channels": "hx"}, "channels"),
    ],
)
def test_validation_messages(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        color_histogram(x, **kwargs)
