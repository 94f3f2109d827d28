"""HoG and HSV colour histograms (extras, not in the kernel contract).

Twins of the cpu kernels of :mod:`jitnet.features.hog_cpu` and
:mod:`jitnet.features.color`, called by :mod:`jitnet.features.hog` and ``color`` on
the cuda target after they have validated the input; see there for how each number
is defined (scikit-image's and matplotlib's rules, to the rounding).
"""

import functools
import math

import numba
import numpy as np

from ._launch import _grid_1d, _numba_type
from .arrays import _dev, _empty
from .device import SIMULATOR, cuda, jit, libdevice

#: atan2 in radians -> degrees: the constant NumPy's rad2deg multiplies by.
_DEGREES = 180 / math.pi

# Rounded float64 products and sums that the compiler must not fuse into one fma:
# NVVM contracts a * b + c by default, which would change the last bit of the hypot
# below. libdevice's _rn intrinsics are never contracted; the simulator does not
# implement libdevice, and plain Python floats are never contracted.
if SIMULATOR:

    @jit(device=True)
    def _mul_rn(a, b):
        return a * b

    @jit(device=True)
    def _add_rn(a, b):
        return a + b

else:

    @jit(device=True)
    def _mul_rn(a, b):
        return libdevice.dmul_rn(a, b)

    @jit(device=True)
    def _add_rn(a, b):
        return libdevice.dadd_rn(a, b)


# glibc's hypot constants: exact powers of two
_HYPOT_SCALE = 2.0**-600
_HYPOT_LARGE = 2.0**511
_HYPOT_TINY = 2.0**-511
_HYPOT_EPS = 2.0**-54


@jit(device=True)
def _glibc_hypot_kernel(ax, ay):
    """glibc's hypot core for ``ax >= ay`` in range: a square root and one correction."""
    h = math.sqrt(_add_rn(_mul_rn(ax, ax), _mul_rn(ay, ay)))
    if h <= 2.0 * ay:
        delta = _add_rn(h, -ay)
        t1 = _mul_rn(ax, _add_rn(2.0 * delta, -ax))
        t2 = _mul_rn(_add_rn(delta, -2.0 * _add_rn(ax, -ay)), delta)
    else:
        delta = _add_rn(h, -ax)
        t1 = _mul_rn(2.0 * delta, _add_rn(ax, -2.0 * ay))
        t2 = _add_rn(_mul_rn(_add_rn(4.0 * delta, -ay), ay), _mul_rn(delta, delta))
    return _add_rn(h, -(_add_rn(t1, t2) / (2.0 * h)))


@jit(device=True)
def _hypot(x, y):
    """``np.hypot`` of two float64 bit for bit: glibc's (2.35+, x86-64) algorithm.

    NumPy calls libm's ``hypot``, which is not correctly rounded (about 1 in 200
    ``k / 255`` differences round the other way), and skimage's choice of the
    strongest channel compares its results, so near ties need the same bits.
    """
    if not (abs(x) < math.inf and abs(y) < math.inf):
        if abs(x) == math.inf or abs(y) == math.inf:
            return math.inf
        return x + y  # NaN
    ax = max(abs(x), abs(y))
    ay = min(abs(x), abs(y))
    if ax > _HYPOT_LARGE:  # scale down to avoid overflow
        if ay <= ax * _HYPOT_EPS:
            return ax + ay
        return _glibc_hypot_kernel(ax * _HYPOT_SCALE, ay * _HYPOT_SCALE) / _HYPOT_SCALE
    if ay < _HYPOT_TINY:  # scale up to avoid underflow
        if ax >= ay / _HYPOT_EPS:
            return ax + ay
        return _glibc_hypot_kernel(ax / _HYPOT_SCALE, ay / _HYPOT_SCALE) * _HYPOT_SCALE
    if ay <= ax * _HYPOT_EPS:
        return ax + ay
    return _glibc_hypot_kernel(ax, ay)


@jit(device=True)
def _hog_gradient(images, n, ch, r, x, zero):
    """``(g_row, g_col)`` of channel ``ch`` at pixel ``(r, x)`` in ``zero``'s dtype.

    Centred differences, zero on the border rows and columns (as skimage).
    Adding ``zero`` first converts uint8 exactly, as skimage's ``astype`` does.
    """
    height, width = images.shape[2], images.shape[3]
    g_row = zero
    g_col = zero
    if 0 < r < height - 1:
        g_row = (images[n, ch, r + 1, x] + zero) - (images[n, ch, r - 1, x] + zero)
    if 0 < x < width - 1:
        g_col = (images[n, ch, r, x + 1] + zero) - (images[n, ch, r, x - 1] + zero)
    return g_row, g_col


@jit(device=True)
def _hog_bin(g_row, g_col, bounds, special_bins):
    """skimage's bin of one float64 gradient; ``-1``: in no bin, ``-2``: NaN (every bin).

    Axis-aligned and diagonal gradients (the ``_SPECIAL_DIRECTIONS`` of
    ``features/hog.py``, in its order) take their bin from ``special_bins``,
    computed with NumPy's arctan2, so that the exact angles 0, 45, 90 and 135
    degrees fall as on the host. Every other direction is binned by its angle
    ``atan2(g_row, g_col)`` in degrees modulo 180 against the lower edges
    ``bounds``, in float64 as skimage does.
    """
    n_orient = bounds.shape[0] - 1
    # the precedence of the cpu kernel's table (zero gradients take entry 1)
    if g_row == 0.0:
        return special_bins[0] if g_col > 0.0 else special_bins[1]
    if g_col == 0.0:
        return special_bins[2] if g_row > 0.0 else special_bins[3]
    if g_row == g_col:
        return special_bins[4] if g_row > 0.0 else special_bins[5]
    if g_row == -g_col:
        return special_bins[6] if g_row > 0.0 else special_bins[7]
    angle = (math.atan2(g_row, g_col) * _DEGREES) % 180.0
    if angle != angle:
        return -2
    b = 0
    while b < n_orient and bounds[b + 1] <= angle:
        b += 1
    return b if b < n_orient else -1


@functools.lru_cache(maxsize=None)
def _make_hog_cells_kernel(dtype):
    """Cell histograms with gradients in the working float ``dtype``: a thread per cell.

    Thread ``i -> (n, cell_r, cell_c)`` visits its cell's pixels in skimage's
    order (row-major), takes per pixel the gradient of the channel with the
    largest ``hypot`` in ``dtype`` (the first on ties, NaN beats all: NumPy's
    argmax), and adds the float64 magnitude to its bin in float32 (skimage's C
    ``float`` total), then divides by the cell area in float32. Each cell has
    one writer.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    single = np.dtype(dtype) == np.float32
    f64 = numba.float64

    @jit
    def hog_cells_kernel(images, c_row, c_col, bounds, special_bins, area, hist):
        n_img, n_channels = images.shape[0], images.shape[1]
        n_cells_row, n_cells_col, n_orient = hist.shape[1], hist.shape[2], hist.shape[3]
        start, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, n_img * n_cells_row * n_cells_col, step):
            n = i // (n_cells_row * n_cells_col)
            cell_r = (i // n_cells_col) % n_cells_row
            cell_c = i % n_cells_col
            for o in range(n_orient):
                hist[n, cell_r, cell_c, o] = 0
            for r in range(cell_r * c_row, (cell_r + 1) * c_row):
                for x in range(cell_c * c_col, (cell_c + 1) * c_col):
                    g_row = zero
                    g_col = zero
                    best = zero
                    for ch in range(n_channels):
                        gr, gc = _hog_gradient(images, n, ch, r, x, zero)
                        # NumPy's hypot in the working dtype, bit for bit: glibc's
                        # hypotf rounds the float64 root of exact float64 squares
                        if single:
                            key = nt(math.sqrt(f64(gr) * f64(gr) + f64(gc) * f64(gc)))
                        if not single or not key < math.inf:  # (and inf beats NaN)
                            key = nt(_hypot(f64(gr), f64(gc)))
                        if ch == 0 or (best == best and (key > best or key != key)):
                            best = key
                            g_row = gr
                            g_col = gc
                    gr64 = f64(g_row)
                    gc64 = f64(g_col)
                    magnitude = _hypot(gr64, gc64)  # skimage's float64 np.hypot
                    b = _hog_bin(gr64, gc64, bounds, special_bins)
                    if b == -2:  # skimage's bin test is false for NaN: it votes in every bin
                        for o in range(n_orient):
                            hist[n, cell_r, cell_c, o] = hist[n, cell_r, cell_c, o] + magnitude
                    elif b >= 0:
                        # float64 add rounded to float32 on the store, as C's float +=
                        hist[n, cell_r, cell_c, b] = hist[n, cell_r, cell_c, b] + magnitude
            for o in range(n_orient):
                hist[n, cell_r, cell_c, o] = hist[n, cell_r, cell_c, o] / area

    return hog_cells_kernel


@jit(cache=True)
def _hog_blocks_kernel(hist, b_row, b_col, norm_code, out):
    # One thread per (image, block): the block's norm, then its normalised values, in
    # float64 as skimage. norm_code indexes ("L1", "L1-sqrt", "L2", "L2-Hys").
    n_img, n_cells_row, n_cells_col, n_orient = hist.shape
    n_blocks_row = n_cells_row - b_row + 1
    n_blocks_col = n_cells_col - b_col + 1
    block_size = b_row * b_col * n_orient
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n_img * n_blocks_row * n_blocks_col, step):
        n = i // (n_blocks_row * n_blocks_col)
        block_r = (i // n_blocks_col) % n_blocks_row
        block_c = i % n_blocks_col
        total = 0.0
        for a in range(b_row):
            for b in range(b_col):
                for o in range(n_orient):
                    v = numba.float64(hist[n, block_r + a, block_c + b, o])
                    total += abs(v) if norm_code <= 1 else v * v
        if norm_code <= 1:
            denom = total + 1e-5
        else:
            denom = math.sqrt(total + 1e-10)
        # L2-Hys: clip the L2-normalised block at 0.2, then renormalise it
        clipped = 0.0
        if norm_code == 3:
            for a in range(b_row):
                for b in range(b_col):
                    for o in range(n_orient):
                        v = min(numba.float64(hist[n, block_r + a, block_c + b, o]) / denom, 0.2)
                        clipped += v * v
            clipped = math.sqrt(clipped + 1e-10)
        k = (block_r * n_blocks_col + block_c) * block_size
        for a in range(b_row):
            for b in range(b_col):
                for o in range(n_orient):
                    v = numba.float64(hist[n, block_r + a, block_c + b, o]) / denom
                    if norm_code == 1:
                        v = math.sqrt(v)
                    elif norm_code == 3:
                        v = min(v, 0.2) / clipped
                    out[n, k] = v
                    k += 1


def hog_cells(images, bounds, special_bins, pixels_per_cell):
    """HoG cell histograms of a batch (mean gradient vote per orientation bin).

    Parameters
    ----------
    images : host or device array, shape (N, C, H, W), uint8, float32 or float64
        Any strides; a host array is copied to the device. Gradients are taken in
        float32 for float32 images, else in float64 (integers are not rescaled).
    bounds : host array, shape (orientations + 1,), float64
        Lower bin edges in degrees, ``180 / orientations * i``.
    special_bins : host array, shape (8,), int64
        NumPy's bin (-1: none) of each axis-aligned or diagonal direction, in the
        order of ``_SPECIAL_DIRECTIONS`` in ``jitnet/features/hog.py``.
    pixels_per_cell : (int, int)

    Returns
    -------
    device array, shape (N, H // c_row, W // c_col, orientations), float32

    Notes
    -----
    Generic directions are binned by CUDA's float64 ``atan2``, which may round
    differently from NumPy's by an ulp or two: a gradient within about 1e-14
    degrees of a bin edge could fall in the neighbouring bin (the cpu kernel
    detects such pixels and redoes their image with NumPy). Integer and ``k /
    255`` images have no such gradients other than the axis-aligned and
    diagonal ones, which ``special_bins`` settles exactly.
    """
    images = _dev(images)
    c_row, c_col = pixels_per_cell
    n_img, _, height, width = images.shape
    n_orient = len(bounds) - 1
    hist = _empty((n_img, height // c_row, width // c_col, n_orient), np.float32)
    if hist.size == 0:
        return hist
    work = np.float32 if images.dtype == np.float32 else np.float64
    n_cells = n_img * hist.shape[1] * hist.shape[2]
    _make_hog_cells_kernel(np.dtype(work).str)[_grid_1d(n_cells)](
        images, int(c_row), int(c_col), _dev(np.asarray(bounds, np.float64)),
        _dev(np.asarray(special_bins, np.int64)), np.float32(c_row * c_col), hist,
    )
    return hist


def hog_blocks(hist, cells_per_block, norm_code):
    """Normalised overlapping blocks of cell histograms: the HoG features.

    Parameters
    ----------
    hist : device array, shape (N, n_cells_row, n_cells_col, orientations), float32
    cells_per_block : (int, int)
    norm_code : int
        0 ``L1``, 1 ``L1-sqrt``, 2 ``L2``, 3 ``L2-Hys`` (``eps = 1e-5``, clip 0.2).

    Returns
    -------
    device array, shape (N, F), float32
        Features ordered ``(block_row, block_col, cell_row, cell_col, orientation)``,
        ``F = blocks_row * blocks_col * b_row * b_col * orientations``.
    """
    b_row, b_col = cells_per_block
    n_img, n_cells_row, n_cells_col, n_orient = hist.shape
    n_blocks = max(n_cells_row - b_row + 1, 0) * max(n_cells_col - b_col + 1, 0)
    out = _empty((n_img, n_blocks * b_row * b_col * n_orient), np.float32)
    if out.size:
        _hog_blocks_kernel[_grid_1d(n_img * n_blocks)](
            hist, int(b_row), int(b_col), int(norm_code), out
        )
    return out


def hog(images, bounds, special_bins, pixels_per_cell, cells_per_block, norm_code):
    """HoG features of a batch: :func:`hog_cells` then :func:`hog_blocks`.

    Parameters
    ----------
    images : host or device array, shape (N, C, H, W), uint8, float32 or float64
    bounds, special_bins, pixels_per_cell
        As in :func:`hog_cells`.
    cells_per_block, norm_code
        As in :func:`hog_blocks`.

    Returns
    -------
    device array, shape (N, F), float32
    """
    hist = hog_cells(images, bounds, special_bins, pixels_per_cell)
    return hog_blocks(hist, cells_per_block, norm_code)


@jit(device=True)
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


@jit(cache=True)
def _color_histogram_kernel(images, scale, codes, edges, out):
    # One thread per output (image, channel k, bin): it converts every pixel of its
    # image to HSV (matplotlib's rgb_to_hsv) and counts those in its bin. The K * bins
    # threads of an image repeat the conversion, but need no atomics or shared memory,
    # and each output has one writer.
    n_img, _, height, width = images.shape
    bins = edges.shape[0] - 1
    n_out = out.shape[1]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n_img * n_out, step):
        n = i // n_out
        j = i % n_out
        code = codes[j // bins]
        target = j % bins
        count = 0
        for r in range(height):
            for c in range(width):
                # float64 first: the simulator would keep float32 pixels in float32
                red = numba.float64(images[n, 0, r, c]) / scale
                green = numba.float64(images[n, 1, r, c]) / scale
                blue = numba.float64(images[n, 2, r, c]) / scale
                high = max(red, green, blue)
                delta = high - min(red, green, blue)
                if code == 2:
                    value = high
                elif code == 1:
                    value = delta / high if high > 0.0 else 0.0
                else:
                    hue = 0.0
                    # matplotlib's order of precedence on ties: blue, then green, then red
                    if delta > 0.0:
                        if blue == high:
                            hue = 4.0 + (red - green) / delta
                        elif green == high:
                            hue = 2.0 + (blue - red) / delta
                        else:
                            hue = (green - blue) / delta
                    value = (hue / 6.0) % 1.0
                if _histogram_bin(value, edges) == target:
                    count += 1
        out[n, j] = count / (height * width)  # as the reference: float64, then float32


def color_histogram(images, scale, codes, bins):
    """HSV colour histograms of a batch of RGB images.

    Parameters
    ----------
    images : host or device array, shape (N, 3, H, W), uint8, float32 or float64
        Any strides; a host array is copied to the device.
    scale : float
        Divisor that brings pixel values to [0, 1] (255 for integer images).
    codes : host array, shape (K,), int64
        Channels to histogram (0 hue, 1 saturation, 2 value), in output order.
    bins : int
        Equal bins over [0, 1] per channel (``np.histogram``'s edges and rules).

    Returns
    -------
    device array, shape (N, K * bins), float32
        Per channel, the fraction of the image's pixels in each bin.
    """
    images = _dev(images)
    codes = np.asarray(codes, np.int64)
    out = _empty((images.shape[0], len(codes) * int(bins)), np.float32)
    if out.size:
        _color_histogram_kernel[_grid_1d(out.size)](
            images, float(scale), _dev(codes), _dev(np.linspace(0.0, 1.0, int(bins) + 1)), out
        )
    return out
