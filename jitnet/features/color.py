"""Batched HSV colour histograms (the colour feature of the classic HoG + colour pipeline).

Each pixel's RGB is converted to hue, saturation and value exactly as
``matplotlib.colors.rgb_to_hsv`` does; each requested channel is histogrammed
over [0, 1] into ``bins`` equal bins (bin edges and edge cases as
``np.histogram(..., range=(0, 1))``) and divided by the number of pixels.
With the default ``channels="h"`` this is cs231n's ``color_histogram_hsv``
(hue only, ``density=True`` times the bin width).
"""

import numpy as np
from numba import njit, prange

from .._checks import check_int
from ..targets import backend, get_target
from .hog import _check_not_empty, _colour_axis, _real_images

_CHANNELS = "hsv"


def _check_options(bins, channels, who="color_histogram", names=("bins", "channels")):
    """Raise unless ``bins`` is a positive int and ``channels`` a string of h, s, v.

    ``who`` and ``names`` are how the caller calls itself and the two (the
    HoG-linear classifier's ``color_bins`` and ``color_channels``).
    """
    check_int(who, names[0], bins, 1)
    expected = f"{who} expected {names[1]} to be a non-empty string of 'h', 's', 'v'"
    if not isinstance(channels, str):
        raise TypeError(f"{expected}, got {channels!r} ({type(channels).__name__})")
    if not channels or any(c not in _CHANNELS for c in channels):
        raise ValueError(f"{expected}, got {channels!r}")


def _validate(images, bins, channel_axis, channels):
    """``(batch (N, 3, H, W) view, scale, channel codes (K,) int64)`` after checking."""
    images = _real_images(images, "color_histogram")
    if images.ndim != 4:
        raise ValueError(
            f"color_histogram expected RGB images (N, 3, H, W) or (N, H, W, 3), got "
            f"{images.ndim}-D input of shape {images.shape}"
        )
    axis = _colour_axis(channel_axis, images.shape, "color_histogram")
    if images.shape[axis] != 3:
        raise ValueError(
            f"color_histogram expected 3 (RGB) channels on axis {channel_axis}, got "
            f"{images.shape[axis]} (input shape {images.shape})"
        )
    _check_options(bins, channels)
    batch = np.moveaxis(images, axis, 1)
    _check_not_empty(batch, images.shape, "color_histogram")
    if batch.dtype not in (np.uint8, np.float32, np.float64):
        batch = batch.astype(np.float64)
    # integer images are 0..255; float images are taken to be in [0, 1]
    scale = 255.0 if images.dtype.kind in "ui" else 1.0
    codes = np.array([_CHANNELS.index(c) for c in channels], dtype=np.int64)
    return batch, scale, codes


# ---------------------------------------------------------------- cpu kernel
@njit(cache=True)
def _histogram_bin(value, edges):
    """``np.histogram``'s bin of ``value`` over ``edges[0] .. edges[-1]``; -1 outside."""
    bins = edges.shape[0] - 1
    if not (edges[0] <= value <= edges[bins]):  # also drops NaN, as np.histogram
        return -1
    b = int((value - edges[0]) * (bins / (edges[bins] - edges[0])))
    if b == bins:
        b -= 1
    if value < edges[b]:
        b -= 1
    elif b != bins - 1 and value >= edges[b + 1]:
        b += 1
    return b


@njit(parallel=True, cache=True)
def _color_histogram_cpu(images, scale, codes, edges, out):
    """HSV histograms of a batch into ``out``.

    Parameters
    ----------
    images : (N, 3, H, W) uint8, float32 or float64, any strides
    scale : float
        Divisor that brings pixel values to [0, 1].
    codes : (K,) int64
        Channels to histogram (0 hue, 1 saturation, 2 value), in output order.
    edges : (bins + 1,) float64
        ``np.linspace(0, 1, bins + 1)``.
    out : (N, K * bins) float32
        Overwritten with the histograms, each summing to 1 over in-range pixels.
    """
    n_images, _, height, width = images.shape
    bins = edges.shape[0] - 1
    weight = 1.0 / (height * width)
    # no race: iteration n writes only out[n]
    for n in prange(n_images):
        out[n] = 0.0
        for r in range(height):
            for c in range(width):
                red = images[n, 0, r, c] / scale
                green = images[n, 1, r, c] / scale
                blue = images[n, 2, r, c] / scale
                high = max(red, green, blue)
                delta = high - min(red, green, blue)
                hue = 0.0
                # matplotlib's order of precedence on ties: blue, then green, then red
                if delta > 0.0:
                    if blue == high:
                        hue = 4.0 + (red - green) / delta
                    elif green == high:
                        hue = 2.0 + (blue - red) / delta
                    else:
                        hue = (green - blue) / delta
                hue = (hue / 6.0) % 1.0
                saturation = delta / high if high > 0.0 else 0.0
                for k in range(codes.shape[0]):
                    value = hue if codes[k] == 0 else (saturation if codes[k] == 1 else high)
                    b = _histogram_bin(value, edges)
                    if b >= 0:
                        out[n, k * bins + b] += 1.0  # counts stay exact in float32
        for j in range(out.shape[1]):
            out[n, j] = out[n, j] * weight


# ---------------------------------------------------------------- numpy reference
def _hsv_numpy(batch, scale):
    """``(hue, saturation, value)``, each ``(N, H, W)`` float64, as matplotlib computes them."""
    rgb = batch.astype(np.float64) / scale
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    high = rgb.max(axis=1)
    delta = high - rgb.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hue = np.where(delta > 0, (green - blue) / delta, 0.0)
        hue = np.where((green == high) & (delta > 0), 2.0 + (blue - red) / delta, hue)
        hue = np.where((blue == high) & (delta > 0), 4.0 + (red - green) / delta, hue)
        saturation = np.where(high > 0, delta / high, 0.0)
    return (hue / 6.0) % 1.0, saturation, high


def _color_histogram_numpy(batch, scale, codes, bins):
    hsv = _hsv_numpy(batch, scale)
    n_images = batch.shape[0]
    n_pixels = batch.shape[2] * batch.shape[3]
    out = np.zeros((n_images, len(codes) * bins))
    for k, code in enumerate(codes):
        values = hsv[code].reshape(n_images, -1)
        # np.histogram's uniform-bin rule: scaled index, then corrected against the edges
        edges = np.linspace(0.0, 1.0, bins + 1)
        index = np.clip((values * bins).astype(np.int64), 0, bins - 1)
        index = np.where(values < edges[index], index - 1, index)
        index = np.where((index != bins - 1) & (values >= edges[np.minimum(index + 1, bins)]),
                         index + 1, index)
        inside = (values >= 0.0) & (values <= 1.0)
        flat = (np.arange(n_images)[:, None] * bins + index)[inside]
        counts = np.bincount(flat, minlength=n_images * bins).reshape(n_images, bins)
        out[:, k * bins : (k + 1) * bins] = counts / n_pixels
    return out.astype(np.float32)


# ---------------------------------------------------------------- public
def color_histogram(images, bins=10, channel_axis=1, channels="h"):
    """HSV colour histograms of a batch of RGB images.

    Parameters
    ----------
    images : (N, 3, H, W) or (N, H, W, 3) array
        RGB images; integer images are 0..255, float images are taken to be in [0, 1]
        (hue and saturation do not depend on the scale, value does).
    bins : int
        Equal bins over [0, 1] per channel (as ``np.histogram(..., range=(0, 1))``).
    channel_axis : int
        Colour axis of the batch array: ``1`` for NCHW, ``-1`` for NHWC.
    channels : str
        Which of hue ``"h"``, saturation ``"s"`` and value ``"v"`` to histogram, in
        output order. The default, hue only, is cs231n's ``color_histogram_hsv``.

    Returns
    -------
    (N, len(channels) * bins) float32 array of the active target
        Per channel, the fraction of the image's pixels in each bin (values
        outside [0, 1] and NaN are not counted, so a row may sum to less than 1).

    Raises
    ------
    TypeError
        For bins or channel_axis that are not an int, or channels that are not a str.
    ValueError
        For input that is not a batch of 3-channel images, one with no image or no
        pixel (an axis of length 0), an unknown channel or bins below 1.
    """
    batch, scale, codes = _validate(images, bins, channel_axis, channels)
    target = get_target()
    if target == "numpy":
        return _color_histogram_numpy(batch, scale, codes, int(bins))
    if target == "cuda":
        return backend().color_histogram(batch, scale, codes, int(bins))
    out = np.empty((batch.shape[0], len(codes) * int(bins)), dtype=np.float32)
    _color_histogram_cpu(batch, scale, codes, np.linspace(0.0, 1.0, int(bins) + 1), out)
    return out
