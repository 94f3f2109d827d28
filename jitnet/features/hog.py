"""Batched histograms of oriented gradients, equal to ``skimage.feature.hog`` row by row.

Each image goes through scikit-image's four stages, reproduced to the rounding:

1. Gradients by centred differences ``x[i + 1] - x[i - 1]`` with zero on the
   border rows and columns, in the image's float dtype (float32 for float32
   input, float64 otherwise; integer images are *not* rescaled). For colour
   images each pixel takes the gradient of the channel with the largest
   magnitude ``hypot(g_row, g_col)`` (the first such channel on ties).
2. Orientation ``atan2(g_row, g_col)`` in degrees modulo 180 and magnitude
   ``hypot(g_col, g_row)`` in float64; a pixel votes its magnitude into the bin
   ``i`` with ``lo_i <= angle < lo_{i+1}``, ``lo_i = 180 / orientations * i``.
3. A cell's histogram is the *mean* vote over its pixels: skimage's Cython
   sums in a C ``float`` (float32) and divides by the cell area in float32;
   pixels beyond the last whole cell are ignored.
4. Overlapping blocks of ``cells_per_block`` cells normalised by ``L1``,
   ``L1-sqrt``, ``L2`` or ``L2-Hys`` (clip at 0.2, renormalise), ``eps = 1e-5``,
   in float64; features ordered ``(block_row, block_col, cell_row, cell_col,
   orientation)``.

The cpu target has two kernels, both parallel over the batch, in
``jitnet/features/hog_cpu.py`` (this module validates, allocates and calls them);
the numpy target runs the same computation vectorised over the whole batch (the
reference, below).

uint8 images (CIFAR, photographs) take the fast kernel: their differences are
integers in [-255, 255], so skimage's bin and magnitude of every possible
gradient come from NumPy once, into tables (``hog_cpu._uint8_tables``), and the
kernel only computes integer gradients (exactly, in float32 vectors) and looks
them up. Its features are skimage's rounded to float32, bit for bit.

How the kernel for float images stays equal to skimage without calling arctan2
per pixel: the bin of a gradient is decided by its sign against each bin edge's
direction (``g_row cos(edge) - g_col sin(edge)``), which is exact away from the edges.
Directions every arctan2 gets exactly (along the axes and diagonals) take
their bin from a table computed with NumPy; an image with any other direction
within ``hog_cpu._AMBIGUOUS_SINE`` of an edge (where NumPy's SIMD arctan2 may round it
into the neighbouring bin) is recomputed on the NumPy path. On real images this
practically never happens (0 of 1000 CIFAR images).
"""

import numba
import numpy as np

from .._checks import is_int
from ..targets import backend, get_target, to_numpy
from .hog_cpu import _EPS, _HYS_CLIP, _bin_bounds, _hog_cpu, _hog_uint8_cpu, _uint8_tables

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


# ---------------------------------------------------------------- validation
def _pair(value, name):
    """``value`` as a pair of positive ints (an int ``k`` means ``(k, k)``).

    Floats are refused rather than truncated: ``pixels_per_cell=7.5`` is a slip. As
    everywhere (``jitnet._checks``), a value of the wrong kind (a float, a bool, a
    str, a pair of those) is a TypeError, ints out of range or a sequence that is not
    a pair a ValueError.
    """
    pair = (value, value) if is_int(value) else value
    message = f"{name} must be a positive int or a pair of positive ints, got {value!r}"
    if (not isinstance(pair, (tuple, list, np.ndarray)) or getattr(pair, "ndim", 1) != 1
            or not all(is_int(v) for v in pair)):
        raise TypeError(f"{message} ({type(value).__name__})")
    if len(pair) != 2 or not all(v >= 1 for v in pair):
        raise ValueError(message)
    return int(pair[0]), int(pair[1])


def _options(orientations, pixels_per_cell, cells_per_block):
    """Validated ``(orientations, (c_row, c_col), (b_row, b_col))``."""
    if not is_int(orientations):
        raise TypeError(f"orientations must be a positive int, got {orientations!r} "
                        f"({type(orientations).__name__})")
    if orientations < 1:
        raise ValueError(f"orientations must be a positive int, got {orientations!r}")
    return (int(orientations), _pair(pixels_per_cell, "pixels_per_cell"),
            _pair(cells_per_block, "cells_per_block"))


def _work_dtype(dtype):
    """skimage's ``_supported_float_type``: float32 stays float32, the rest float64."""
    if dtype in (np.float16, np.float32):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _real_images(images, name):
    """``images`` as a host ``np.ndarray`` of a real (integer or float, not bool) dtype."""
    images = to_numpy(images)
    if images.dtype.kind not in "uif":
        raise ValueError(f"{name} expected a real-valued image array, got dtype {images.dtype}")
    return images


def _axis(channel_axis, shape, name, expected):
    """``channel_axis`` of an array of ``shape`` as an index in ``0 .. ndim - 1``."""
    ndim = len(shape)
    if not is_int(channel_axis):
        raise TypeError(f"{name}: channel_axis must be an int ({expected}), got "
                        f"{channel_axis!r} ({type(channel_axis).__name__})")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(
            f"{name}: channel_axis={channel_axis!r} does not exist for input of shape "
            f"{shape} (expected {expected})"
        )
    return int(channel_axis) % ndim


def _colour_axis(channel_axis, shape, name):
    """The colour axis (1, 2 or 3) of a 4-D batch array; the batch axis 0 is refused."""
    axis = _axis(channel_axis, shape, name, "1 for NCHW or -1 for NHWC")
    if axis == 0:
        raise ValueError(
            f"{name}: channel_axis={channel_axis} names the batch axis; expected the "
            f"colour axis (1 for NCHW, -1 for NHWC), input shape {shape}"
        )
    return axis


def _check_not_empty(batch, shape, name):
    """Raise unless the ``(N, C, H, W)`` view ``batch`` has an image, a channel and a pixel.

    Empty axes must stop here: the kernels trust their input (no channel to take
    a gradient from reads out of bounds; no pixel divides by zero).
    """
    n, c, h, w = batch.shape
    if min(n, c, h, w) == 0:
        raise ValueError(
            f"{name} expected at least one image, with at least one channel and one pixel, "
            f"got input of shape {shape} (N={n}, C={c}, H={h}, W={w})"
        )


def _as_nchw(images, channel_axis, name):
    """The batch as an ``(N, C, H, W)`` view (no copy for uint8, float32 and float64).

    Grey batches ``(N, H, W)`` get ``C = 1``; ``channel_axis`` counts in the
    batch array (``1`` for NCHW, ``-1`` or ``3`` for NHWC). Other dtypes are
    converted to their working float dtype (see :func:`_work_dtype`).
    """
    images = _real_images(images, name)
    if channel_axis is None:
        if images.ndim != 3:
            raise ValueError(
                f"{name} expected grey images (N, H, W) with channel_axis=None, got "
                f"{images.ndim}-D input of shape {images.shape} (pass channel_axis for colour)"
            )
        batch = images[:, None]
    else:
        if images.ndim != 4:
            raise ValueError(
                f"{name} expected colour images (N, C, H, W) or (N, H, W, C) with "
                f"channel_axis={channel_axis!r}, got {images.ndim}-D input of shape "
                f"{images.shape}"
            )
        batch = np.moveaxis(images, _colour_axis(channel_axis, images.shape, name), 1)
    _check_not_empty(batch, images.shape, name)
    if batch.dtype not in (np.uint8, np.float32, np.float64):
        batch = batch.astype(_work_dtype(batch.dtype))
    return batch


def _geometry(shape, orientations, pixels_per_cell, cells_per_block, block_norm):
    """Validated ``(orientations, (c_row, c_col), (b_row, b_col), norm_code, n_cells)``."""
    orientations, (c_row, c_col), (b_row, b_col) = _options(
        orientations, pixels_per_cell, cells_per_block)
    if not isinstance(block_norm, str):
        raise TypeError(f"block_norm must be a str, one of {BLOCK_NORMS}, got {block_norm!r} "
                        f"({type(block_norm).__name__})")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"unknown block_norm {block_norm!r}: expected one of {BLOCK_NORMS}")
    height, width = shape[-2:]
    n_cells = (height // c_row, width // c_col)
    if n_cells[0] < b_row or n_cells[1] < b_col:
        raise ValueError(
            f"images of {height}x{width} pixels are too small for one block of "
            f"{b_row}x{b_col} cells of {c_row}x{c_col} pixels: they need at least "
            f"{b_row * c_row} rows and {b_col * c_col} columns"
        )
    code = BLOCK_NORMS.index(block_norm)
    return orientations, (c_row, c_col), (b_row, b_col), code, n_cells


#: Gradients ``(g_row, g_col)`` (up to a positive factor) whose angle every arctan2
#: gets exactly: along the axes and the diagonals. Their bins come from NumPy.
_SPECIAL_DIRECTIONS = np.array(
    [(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0), (1.0, 1.0), (-1.0, -1.0), (1.0, -1.0),
     (-1.0, 1.0)]
)


def _special_bins(bounds):
    """skimage's bin (-1: none) of each of ``_SPECIAL_DIRECTIONS``, via NumPy's arctan2."""
    g_row, g_col = _SPECIAL_DIRECTIONS.T
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    bins = np.searchsorted(bounds[1:], angle, side="right")
    return np.where(bins < len(bounds) - 1, bins, -1).astype(np.int64)


def n_hog_features(image_shape, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)):
    """Length of the HoG vector of one ``(H, W)`` image (the ``F`` of :func:`hog`)."""
    orientations, (c_row, c_col), (b_row, b_col) = _options(
        orientations, pixels_per_cell, cells_per_block)
    n_blocks_row = image_shape[-2] // c_row - b_row + 1
    n_blocks_col = image_shape[-1] // c_col - b_col + 1
    return max(n_blocks_row, 0) * max(n_blocks_col, 0) * b_row * b_col * orientations


# ---------------------------------------------------------------- numpy reference
def _gradients_numpy(batch):
    """Per-pixel ``(g_row, g_col)`` of the strongest channel, ``(N, H, W)`` each."""
    g_row = np.zeros_like(batch)
    g_col = np.zeros_like(batch)
    g_row[:, :, 1:-1, :] = batch[:, :, 2:, :] - batch[:, :, :-2, :]
    g_col[:, :, :, 1:-1] = batch[:, :, :, 2:] - batch[:, :, :, :-2]
    if batch.shape[1] == 1:
        return g_row[:, 0], g_col[:, 0]
    pick = np.hypot(g_row, g_col).argmax(axis=1)[:, None]
    return (np.take_along_axis(g_row, pick, 1)[:, 0], np.take_along_axis(g_col, pick, 1)[:, 0])


def _cell_histograms_numpy(batch, orientations, c_row, c_col, n_cells):
    """Unnormalised cell histograms ``(N, n_cells_row, n_cells_col, orientations)`` float64."""
    g_row, g_col = _gradients_numpy(batch.astype(_work_dtype(batch.dtype)))
    g_row = np.ascontiguousarray(g_row, dtype=np.float64)
    g_col = np.ascontiguousarray(g_col, dtype=np.float64)
    n_images = batch.shape[0]
    n_cells_row, n_cells_col = n_cells

    def cells(a):  # (N, H, W) -> (N, cells_row, c_row, cells_col, c_col)
        a = a[:, : n_cells_row * c_row, : n_cells_col * c_col]
        return a.reshape(n_images, n_cells_row, c_row, n_cells_col, c_col)

    # on whole contiguous planes, as skimage calls them (SIMD arctan2 rounds its own way)
    magnitude = cells(np.hypot(g_col, g_row))
    angle = cells(np.rad2deg(np.arctan2(g_row, g_col)) % 180)
    bounds = _bin_bounds(orientations)
    # bin b holds bounds[b] <= angle < bounds[b + 1]; b == orientations falls out
    bins = np.searchsorted(bounds[1:], angle, side="right")
    nan = np.isnan(angle)
    bins[nan] = orientations
    cell_index = (
        np.arange(n_images)[:, None, None, None, None] * n_cells_row
        + np.arange(n_cells_row)[None, :, None, None, None]
    ) * n_cells_col + np.arange(n_cells_col)[None, None, None, :, None]
    flat = (cell_index * (orientations + 1) + bins).ravel()
    size = n_images * n_cells_row * n_cells_col * (orientations + 1)
    hist = np.bincount(flat, weights=magnitude.ravel(), minlength=size)
    hist = hist.reshape(n_images, n_cells_row, n_cells_col, orientations + 1)[..., :orientations]
    # skimage's bin test is false for NaN angles: they vote in every bin
    nan_votes = np.where(nan, magnitude, 0.0).sum(axis=(2, 4))
    return (hist + nan_votes[..., None]) / (c_row * c_col)


def _normalize_blocks_numpy(hist, b_row, b_col, block_norm):
    """``(N, F)`` float32 normalised blocks from ``(N, cr, cc, o)`` histograms."""
    n_images = hist.shape[0]
    blocks = np.lib.stride_tricks.sliding_window_view(hist, (b_row, b_col), axis=(1, 2))
    blocks = blocks.transpose(0, 1, 2, 4, 5, 3)  # (N, blocks_r, blocks_c, b_row, b_col, o)
    axes = (3, 4, 5)
    if block_norm in ("L1", "L1-sqrt"):
        out = blocks / (np.abs(blocks).sum(axis=axes, keepdims=True) + _EPS)
        if block_norm == "L1-sqrt":
            out = np.sqrt(out)
    else:
        out = blocks / np.sqrt((blocks**2).sum(axis=axes, keepdims=True) + _EPS**2)
        if block_norm == "L2-Hys":
            out = np.minimum(out, _HYS_CLIP)
            out = out / np.sqrt((out**2).sum(axis=axes, keepdims=True) + _EPS**2)
    return out.reshape(n_images, -1).astype(np.float32)


# ---------------------------------------------------------------- public
def _cell_histograms_and_features(batch, orientations, cells, blocks, code, n_cells, target):
    c_row, c_col = cells
    b_row, b_col = blocks
    if target == "numpy":
        hist = _cell_histograms_numpy(batch, orientations, c_row, c_col, n_cells)
        return hist, _normalize_blocks_numpy(hist, b_row, b_col, BLOCK_NORMS[code])
    n_images = batch.shape[0]
    hist = np.empty((n_images, *n_cells, orientations), dtype=np.float32)
    cell_rows = hist.reshape(n_images, n_cells[0], n_cells[1] * orientations)
    n_features = n_hog_features(batch.shape, orientations, cells, blocks)
    out = np.empty((n_images, n_features), dtype=np.float32)
    if batch.dtype == np.uint8:
        height, width = batch.shape[2:]
        mask = np.ones((height, width), dtype=np.float32)
        mask[:, [0, -1]] = 0.0
        n_chunks = min(n_images, 2 * numba.get_num_threads())
        edges = np.zeros((n_chunks, width + 2), dtype=np.uint8)
        scratch = np.empty((n_chunks, 3, height * width), dtype=np.float32)
        where = np.empty((n_chunks, 2, height * width), dtype=np.int32)
        bins, magnitudes = _uint8_tables(orientations)
        flat = np.ascontiguousarray(batch).reshape(n_images, batch.shape[1], height * width)
        blocks = np.empty((n_chunks, b_row * b_col * orientations))
        _hog_uint8_cpu(flat, width, bins, magnitudes, mask.ravel(), c_row, c_col, b_row, b_col,
                       code, edges, scratch, where, blocks, hist, cell_rows, out)
        return hist, out
    ambiguous = np.empty(n_images, dtype=np.int64)
    work = _work_dtype(batch.dtype)
    # hypot in float32 can tie where float64 squares do not; in float64 it cannot
    near_tie = 1e-6 if work == np.float32 else 1e-12
    bounds = _bin_bounds(orientations)
    edges = np.deg2rad(bounds)
    scratch = np.empty((n_images, 7, batch.shape[3]))
    _hog_cpu(np.ascontiguousarray(batch), work.type(0), near_tie, bounds, np.cos(edges),
             np.sin(edges), _special_bins(bounds), c_row, c_col, b_row, b_col, code, scratch,
             hist, cell_rows, np.empty((n_images, b_row * b_col * orientations)), out, ambiguous)
    redo = np.flatnonzero(ambiguous)
    if redo.size:
        # rare: an angle within an ulp-sized distance of a bin edge (see _AMBIGUOUS_SINE)
        hist[redo], out[redo] = _cell_histograms_and_features(
            batch[redo], orientations, cells, blocks, code, n_cells, "numpy")
    return hist, out


def hog(
    images,
    orientations=9,
    pixels_per_cell=(8, 8),
    cells_per_block=(2, 2),
    block_norm="L2-Hys",
    channel_axis=None,
):
    """Histogram-of-oriented-gradients features of a batch of images.

    Row ``i`` equals ``skimage.feature.hog(images[i], orientations,
    pixels_per_cell, cells_per_block, block_norm, channel_axis=<image axis>)``
    (to float32 rounding), in the same feature order.

    Parameters
    ----------
    images : (N, H, W), (N, C, H, W) or (N, H, W, C) array, any real dtype
        Integer images are used as they are (not rescaled to [0, 1]), as skimage does.
    orientations : int
        Number of orientation bins over [0, 180) degrees.
    pixels_per_cell : int or (int, int)
        Cell size ``(rows, cols)`` in pixels.
    cells_per_block : int or (int, int)
        Block size ``(rows, cols)`` in cells; blocks slide by one cell.
    block_norm : {"L1", "L1-sqrt", "L2", "L2-Hys"}
        Block normalisation (``eps = 1e-5``; L2-Hys clips at 0.2).
    channel_axis : int or None
        Colour axis of the batch array: ``1`` for NCHW, ``-1`` for NHWC, ``None``
        for grey ``(N, H, W)``. Per pixel the channel with the largest gradient
        magnitude is used.

    Returns
    -------
    (N, F) float32 array of the active target
        ``F = blocks_row * blocks_col * cells_per_block[0] * cells_per_block[1] *
        orientations`` with ``blocks_row = H // pixels_per_cell[0] -
        cells_per_block[0] + 1`` (likewise for columns).

    Raises
    ------
    TypeError
        For ``orientations``, ``pixels_per_cell`` or ``cells_per_block`` not an int
        or a pair of ints (bools, floats and strings are refused), a
        ``block_norm`` that is not a str, or a ``channel_axis`` that is neither
        None nor an int.
    ValueError
        For the wrong number of dimensions, a ``channel_axis`` the input lacks,
        no image, channel or pixel (an axis of length 0), a parameter int that is
        not positive, a sequence that is not a pair, an unknown ``block_norm`` or
        images smaller than one block.

    Notes
    -----
    The "cpu" target runs one ``@njit(parallel=True)`` kernel over the batch, the
    "numpy" target a vectorised NumPy version, the "cuda" target the numba.cuda
    twin ``jitnet.kernels.cuda.hog`` (one thread per cell, then one per block).
    """
    batch = _as_nchw(images, channel_axis, "hog")
    orientations, cells, blocks, code, n_cells = _geometry(
        batch.shape, orientations, pixels_per_cell, cells_per_block, block_norm
    )
    target = get_target()
    if target == "cuda":
        bounds = _bin_bounds(orientations)
        return backend().hog(batch, bounds, _special_bins(bounds), cells, blocks, code)
    _, out = _cell_histograms_and_features(batch, orientations, cells, blocks, code, n_cells,
                                           target)
    return out


def hog_image(image, orientations=9, pixels_per_cell=(8, 8), channel_axis=None):
    """Picture of one image's cell histograms, as ``skimage.feature.hog(visualize=True)``.

    Each cell gets one line segment per orientation bin through its centre,
    perpendicular to the bin's middle angle, with brightness equal to the
    bin's (unnormalised) gradient total.

    Parameters
    ----------
    image : (H, W), (C, H, W) or (H, W, C) array
        One image (no batch axis); ``channel_axis`` is its colour axis.
    orientations, pixels_per_cell
        As in :func:`hog`.
    channel_axis : int or None
        ``0`` for CHW, ``-1`` for HWC, ``None`` for grey.

    Returns
    -------
    (H, W) float64 array

    Raises
    ------
    TypeError, ValueError
        As :func:`hog`; ValueError also for an image that is not 2-D (grey) or 3-D
        (colour).
    """
    from skimage import draw

    image = _real_images(image, "hog_image")
    batch_axis = None
    if channel_axis is not None:  # the image's axis, one more in the batch of one
        batch_axis = _axis(channel_axis, image.shape, "hog_image", "0 for CHW or -1 for HWC") + 1
    if image.ndim != (2 if channel_axis is None else 3):
        raise ValueError(
            f"hog_image expected one image, (H, W) with channel_axis=None or (C, H, W) / "
            f"(H, W, C) with its channel_axis, got {image.ndim}-D input of shape {image.shape} "
            f"and channel_axis={channel_axis!r}"
        )
    batch = _as_nchw(image[None], batch_axis, "hog_image")
    orientations, (c_row, c_col), _, _, n_cells = _geometry(
        batch.shape, orientations, pixels_per_cell, (1, 1), "L1"
    )
    hist = _cell_histograms_numpy(batch, orientations, c_row, c_col, n_cells)[0]
    height, width = batch.shape[2:]
    radius = min(c_row, c_col) // 2 - 1
    middles = np.pi * (np.arange(orientations) + 0.5) / orientations
    picture = np.zeros((height, width))
    for r in range(n_cells[0]):
        for c in range(n_cells[1]):
            centre_r, centre_c = r * c_row + c_row // 2, c * c_col + c_col // 2
            for o, angle in enumerate(middles):
                dr, dc = radius * np.sin(angle), radius * np.cos(angle)
                rr, cc = draw.line(int(centre_r - dc), int(centre_c + dr),
                                   int(centre_r + dc), int(centre_c - dr))
                picture[rr, cc] += hist[r, c, o]
    return picture
