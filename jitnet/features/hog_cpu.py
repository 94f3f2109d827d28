"""The cpu target's HoG kernels: the ``@njit`` code behind ``jitnet.features.hog``.

:func:`_hog_cpu` takes float32 and float64 images, :func:`_hog_uint8_cpu` uint8
ones through the gradient tables of :func:`_uint8_tables`. Both are parallel over
the batch and write cell histograms and normalised blocks into arrays that
``_cell_histograms_and_features`` in ``jitnet/features/hog.py`` validates and
allocates. That module's docstring describes the algorithm (skimage's four stages)
and how these kernels stay equal to skimage bit for bit; ``BLOCK_NORMS`` and
``_SPECIAL_DIRECTIONS``, named in the docstrings here, live there too.

The constants and :func:`_bin_bounds` are shared with hog.py's NumPy reference,
which imports them from here.
"""

import functools
import math

import numpy as np
from numba import prange

from ..codegen import njit

# ---------------------------------------------------------------- constants, bin edges
_EPS = 1e-5
_HYS_CLIP = 0.2
# atan2 in radians -> degrees, the constant numpy's rad2deg multiplies by
_DEGREES = 180 / np.pi
# NumPy's arctan2 (SIMD, as skimage calls it) rounds its own way: a gradient whose
# direction lies this close to a bin edge (|sine of the angle to it|, about 6e-9
# degrees) may land in another bin than skimage's, so its image is redone with NumPy
_AMBIGUOUS_SINE = 1e-10
# returned by _bin_by_angle for a NaN angle, which skimage counts in every bin
_ALL_BINS = -2


def _bin_bounds(orientations):
    """Lower bin edges ``lo_0 .. lo_n`` in degrees, computed as skimage's Cython does."""
    return np.array([180.0 / orientations * i for i in range(orientations + 1)])


# ---------------------------------------------------------------- cpu kernel
@njit(cache=True)
def _term(a, i, squares):
    return a[i] * a[i] if squares else abs(a[i])


@njit(cache=True)
def _pairwise_sum(a, n, squares):
    """Sum of ``a[:n] ** 2`` (or of ``|a[:n]|``) in the order of NumPy's pairwise sum.

    That is how skimage's ``np.sum(block ** 2)`` adds a contiguous block of up to
    128 values: eight running sums over strides of 8, added as a tree, then the
    rest one by one (below 8 values, one by one). The eight sums are also eight
    independent chains, where one running sum would wait on every add.
    """
    if n < 8:
        total = 0.0
        for i in range(n):
            total += _term(a, i, squares)
        return total
    r0, r1, r2, r3 = _term(a, 0, squares), _term(a, 1, squares), _term(a, 2, squares), \
        _term(a, 3, squares)
    r4, r5, r6, r7 = _term(a, 4, squares), _term(a, 5, squares), _term(a, 6, squares), \
        _term(a, 7, squares)
    end = n - n % 8
    for i in range(8, end, 8):
        r0 += _term(a, i, squares)
        r1 += _term(a, i + 1, squares)
        r2 += _term(a, i + 2, squares)
        r3 += _term(a, i + 3, squares)
        r4 += _term(a, i + 4, squares)
        r5 += _term(a, i + 5, squares)
        r6 += _term(a, i + 6, squares)
        r7 += _term(a, i + 7, squares)
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, n):
        total += _term(a, i, squares)
    return total


# error_model="numpy": no zero-division check (the denominators hold eps), so the
# division loops vectorise
@njit(cache=True, error_model="numpy")
def _normalize_blocks(cells, n, b_row, b_col, n_orient, norm_code, block, out):
    """Normalise every block of image ``n``'s cell histograms into ``out[n]`` (float64 math).

    Parameters
    ----------
    cells : (N, n_cells_row, n_cells_col * n_orient) float32
        The cell histograms, each row of cells flat.
    n, b_row, b_col, n_orient, norm_code : int
    block : (b_row * b_col * n_orient,) float64
        Workspace: one block in feature order (then, for L2-Hys, clipped).
    out : (N, F) float32
        Row ``n`` overwritten.

    Notes
    -----
    A block's row ``i`` is the contiguous run ``cells[n, block_r + i, block_c *
    n_orient:(block_c + b_col) * n_orient]``, already in feature order. The steps
    are skimage's ``_hog_normalize_block``, in its order: sums as NumPy adds a
    contiguous array (:func:`_pairwise_sum`), then divisions (which vectorise).
    """
    n_cells_row, row_len = cells.shape[1], cells.shape[2]
    n_blocks_col = row_len // n_orient - b_col + 1
    run = b_col * n_orient
    block_size = b_row * run
    squares = norm_code >= 2
    for block_r in range(n_cells_row - b_row + 1):
        for block_c in range(n_blocks_col):
            base = (block_r * n_blocks_col + block_c) * block_size
            first = block_c * n_orient
            for i in range(b_row):
                seg = cells[n, block_r + i, first:first + run]
                for t in range(run):
                    block[i * run + t] = seg[t]
            total = _pairwise_sum(block, block_size, squares)
            denom = math.sqrt(total + _EPS * _EPS) if squares else total + _EPS
            dst = out[n, base:base + block_size]
            if norm_code != 3:
                for t in range(block_size):
                    v = block[t] / denom
                    dst[t] = math.sqrt(v) if norm_code == 1 else v
                continue
            # L2-Hys: clip the L2-normalised block, then renormalise it
            for t in range(block_size):
                block[t] = min(block[t] / denom, _HYS_CLIP)
            clipped = math.sqrt(_pairwise_sum(block, block_size, True) + _EPS * _EPS)
            for t in range(block_size):
                dst[t] = block[t] / clipped


@njit(cache=True)
def _finish_image(hist, cells, n, area, b_row, b_col, norm_code, block, out):
    """Image ``n``'s vote sums into mean votes, then its normalised blocks into ``out[n]``.

    ``hist`` and ``cells`` are the same memory (see :func:`_normalize_blocks`); the
    mean is divided in float32, as skimage's ``total / (rows * cols)``.
    """
    n_cells_row, n_cells_col, n_orient = hist.shape[1], hist.shape[2], hist.shape[3]
    for cell_r in range(n_cells_row):
        for cell_c in range(n_cells_col):
            for o in range(n_orient):
                hist[n, cell_r, cell_c, o] = hist[n, cell_r, cell_c, o] / area
    _normalize_blocks(cells, n, b_row, b_col, n_orient, norm_code, block, out)


@njit(cache=True)
def _strongest_gradient(images, n, r, x, zero):
    """``(g_row, g_col)`` at pixel ``(r, x)`` of image ``n``, from its strongest channel.

    Differences are taken in ``zero``'s dtype (adding ``zero`` converts uint8
    exactly), zero on the border. Channels are compared by squared magnitude in
    float64; near ties are settled by ``hypot`` in the image dtype, which is
    what skimage's ``argmax`` compares (first maximum wins, NaN beats all).
    """
    n_channels, height, width = images.shape[1], images.shape[2], images.shape[3]
    g_row = zero
    g_col = zero
    best = 0.0
    for ch in range(n_channels):
        gr = zero
        gc = zero
        if 0 < r < height - 1:
            gr = (images[n, ch, r + 1, x] + zero) - (images[n, ch, r - 1, x] + zero)
        if 0 < x < width - 1:
            gc = (images[n, ch, r, x + 1] + zero) - (images[n, ch, r, x - 1] + zero)
        square = np.float64(gr) * np.float64(gr) + np.float64(gc) * np.float64(gc)
        if ch == 0 or (best == best and square != square):
            pick = True
        elif best != best:
            pick = False
        elif square == best or abs(square - best) <= 1e-5 * best:
            # (squares that overflow to inf tie: hypot, finite up to 1.8e308, decides)
            pick = math.hypot(gr, gc) > math.hypot(g_row, g_col)
        else:
            pick = square > best
        if pick:
            best = square
            g_row = gr
            g_col = gc
    return g_row, g_col


@njit(cache=True)
def _bin_by_angle(g_row, g_col, bounds):
    """skimage's bin of one gradient via its angle; ``-1``: no bin, ``_ALL_BINS``: NaN.

    Used where libm's atan2 agrees with NumPy's bit for bit: zero, axis-aligned
    and diagonal gradients, and non-finite ones.
    """
    n_orient = bounds.shape[0] - 1
    angle = (math.atan2(g_row, g_col) * _DEGREES) % 180.0
    if angle != angle:
        return _ALL_BINS
    b = min(int(angle * n_orient / 180.0), n_orient - 1)
    while b > 0 and angle < bounds[b]:
        b -= 1
    while b < n_orient and angle >= bounds[b + 1]:
        b += 1
    return b if b < n_orient else -1


@njit(cache=True)
def _bin_by_direction(g_row, g_col, magnitude, edge_cos, edge_sin):
    """Bin of a finite, generic gradient without atan2, and whether it is near an edge.

    Folded into the upper half plane, the gradient's angle is at or past edge
    ``k`` exactly when ``sin(angle - edge_k) = g_row cos_k - g_col sin_k >= 0``.
    Within ``_AMBIGUOUS_SINE * magnitude`` of an edge the answer depends on how
    skimage's arctan2 rounds, and the caller redoes the image with NumPy.
    """
    n_orient = edge_cos.shape[0] - 1
    if g_row < 0.0:
        g_row = -g_row
        g_col = -g_col
    b = 0
    while b + 1 < n_orient and g_row * edge_cos[b + 1] - g_col * edge_sin[b + 1] >= 0.0:
        b += 1
    lower = abs(g_row * edge_cos[b] - g_col * edge_sin[b])
    upper = abs(g_row * edge_cos[b + 1] - g_col * edge_sin[b + 1])
    return b, min(lower, upper) <= _AMBIGUOUS_SINE * magnitude


@njit(cache=True)
def _pixel_bin(g_row, g_col, magnitude, bounds, edge_cos, edge_sin):
    """``(bin, near_edge)`` of one float64 gradient, the careful scalar way.

    Zero, axis-aligned, diagonal and non-finite gradients go through atan2 (on
    which libm and NumPy agree for them); the rest through the direction test.
    """
    if (g_row == 0.0 or g_col == 0.0 or abs(g_row) == abs(g_col)
            or not magnitude < math.inf):
        return _bin_by_angle(g_row, g_col, bounds), False
    return _bin_by_direction(g_row, g_col, magnitude, edge_cos, edge_sin)


@njit(cache=True)
def _take_channel(first, x, gr, gc, near_tie, g_row, g_col, square, careful):
    """Merge one channel's gradient at column ``x`` into the row buffers, branch-free.

    A strictly larger squared magnitude wins (numpy's argmax keeps the first of
    equals). Near ties (which ``hypot`` in the image dtype must settle) and NaN
    mark the pixel ``careful``: it is redone by :func:`_strongest_gradient`.
    Non-short-circuit ``&`` / ``|`` keep the loop free of branches (vectorisable).
    """
    sq = np.float64(gr) * np.float64(gr) + np.float64(gc) * np.float64(gc)
    if first:
        g_row[x] = gr
        g_col[x] = gc
        square[x] = sq
        careful[x] = 0.0 if sq == sq else 1.0
    else:
        best = square[x]
        flag = (((sq != best) & (abs(sq - best) <= near_tie * best))
                | (sq != sq) | (best != best))
        take = sq > best
        g_row[x] = gr if take else g_row[x]
        g_col[x] = gc if take else g_col[x]
        square[x] = sq if take else best
        careful[x] = 1.0 if flag else careful[x]


@njit(cache=True)
def _row_gradients(images, n, r, cols, zero, near_tie, g_row, g_col, square, careful):
    """Strongest-channel gradients of row ``r``, columns ``[0, cols)``, into the buffers."""
    n_channels, height, width = images.shape[1], images.shape[2], images.shape[3]
    inner_end = min(cols, width - 1)
    for ch in range(n_channels):
        first = ch == 0
        mid = images[n, ch, r]
        if 0 < r < height - 1:
            up = images[n, ch, r + 1]
            down = images[n, ch, r - 1]
            # interior columns: a branch-free loop the compiler can vectorise
            for x in range(1, inner_end):
                gr = (up[x] + zero) - (down[x] + zero)
                gc = (mid[x + 1] + zero) - (mid[x - 1] + zero)
                _take_channel(first, x, gr, gc, near_tie, g_row, g_col, square, careful)
            for x in (0, cols - 1):  # border columns: no column gradient
                if x == 0 or x == width - 1:
                    gr = (up[x] + zero) - (down[x] + zero)
                    _take_channel(first, x, gr, zero, near_tie, g_row, g_col, square, careful)
        else:  # border rows: no row gradient
            for x in range(1, inner_end):
                gc = (mid[x + 1] + zero) - (mid[x - 1] + zero)
                _take_channel(first, x, zero, gc, near_tie, g_row, g_col, square, careful)
            for x in (0, cols - 1):
                if x == 0 or x == width - 1:
                    _take_channel(first, x, zero, zero, near_tie, g_row, g_col, square, careful)


@njit(cache=True)
def _row_directions(g_row, g_col, cols, edge_cos, edge_sin, square, careful, special, bins,
                    margin):
    """Magnitude, bin and near-edge flag of each gradient in the row, by the direction test.

    The gradients are folded in place into the upper half plane, where the
    direction is at or past edge ``k`` exactly when ``g_row cos_k - g_col sin_k
    >= 0``; ``bins[x]`` counts the edges ``k >= 1`` passed. It becomes ``-2 - i``
    for the exact direction ``i`` of ``_SPECIAL_DIRECTIONS`` (whose bins the
    wrapper looks up with NumPy's arctan2; ``special`` is scratch for that), and
    -1 where the pixel needs the careful scalar path (flagged ``careful``, or
    non-finite, which is flagged here). ``square`` becomes the magnitude, and
    ``margin`` 1 where a generic direction is within ``_AMBIGUOUS_SINE`` of an
    edge (edges 0 and 180 give ``|g_row|``), else 0. The loops over ``x`` are
    innermost and branch-free, so that they vectorise.
    """
    n_orient = edge_cos.shape[0] - 1
    for x in range(cols):
        gr = g_row[x]
        gc = g_col[x]
        # exact directions (see _SPECIAL_DIRECTIONS) take their bin from a table: code -2 - i
        code = -1.0
        code = (-8.0 if gr > 0.0 else -9.0) if gr == -gc else code
        code = (-6.0 if gr > 0.0 else -7.0) if gr == gc else code
        code = (-4.0 if gr > 0.0 else -5.0) if gc == 0.0 else code
        code = (-2.0 if gc > 0.0 else -3.0) if gr == 0.0 else code
        special[x] = code
        # sqrt of the sum of squares is within an ulp of skimage's hypot
        magnitude = math.sqrt(square[x])
        square[x] = magnitude
        careful[x] = 1.0 if not magnitude < math.inf else careful[x]
        # fold into the upper half plane: (g_row, g_col) and its negation share a bin
        flip = (gr < 0.0) | ((gr == 0.0) & (gc < 0.0))
        g_row[x] = -gr if flip else gr
        g_col[x] = -gc if flip else gc
        bins[x] = 0.0
        margin[x] = abs(gr)
    for k in range(1, n_orient):
        c = edge_cos[k]
        s = edge_sin[k]
        for x in range(cols):
            cross = g_row[x] * c - g_col[x] * s
            bins[x] += 1.0 if cross >= 0.0 else 0.0
            margin[x] = min(margin[x], abs(cross))
    for x in range(cols):
        generic = special[x] == -1.0
        margin[x] = 1.0 if (generic & (margin[x] <= _AMBIGUOUS_SINE * square[x])) else 0.0
        bins[x] = -1.0 if careful[x] != 0.0 else (bins[x] if generic else special[x])


@njit(parallel=True, cache=True)
def _hog_cpu(images, zero, near_tie, bounds, edge_cos, edge_sin, special_bins, c_row, c_col,
             b_row, b_col, norm_code, scratch, hist, cells, blocks, out, ambiguous):
    """HoG of a batch: cell histograms into ``hist``, normalised blocks into ``out``.

    Parameters
    ----------
    images : (N, C, H, W) uint8, float32 or float64, C-contiguous
    zero : float32 or float64 scalar
        Zero of the working dtype (float32 for float32 images, else float64):
        gradients are computed in it, as skimage does after its ``astype``.
    near_tie : float
        Relative gap of squared channel magnitudes below which ``hypot`` decides.
    bounds : (orientations + 1,) float64
        Lower bin edges in degrees, as skimage computes them.
    edge_cos, edge_sin : (orientations + 1,) float64
        Cosine and sine of those edges (for the direction test).
    special_bins : (8,) int64
        skimage's bin of each of ``_SPECIAL_DIRECTIONS`` (-1: none).
    c_row, c_col, b_row, b_col : int
        Pixels per cell and cells per block.
    norm_code : int
        Index into :data:`BLOCK_NORMS`.
    scratch : (N, 7, W) float64
        Workspace: one row of gradients, magnitudes, flags, bins, margins, codes.
    hist : (N, n_cells_row, n_cells_col, orientations) float32
        Workspace, overwritten with the unnormalised cell histograms (mean votes).
    cells : (N, n_cells_row, n_cells_col * orientations) float32
        The same memory as ``hist``, each row of cells flat.
    blocks : (N, b_row * b_col * orientations) float64
        Workspace for :func:`_normalize_blocks`.
    out : (N, F) float32
        The features, overwritten.
    ambiguous : (N,) int64
        Overwritten with the number of pixels per image whose direction lies within
        ``_AMBIGUOUS_SINE`` of a bin edge (see there).

    Notes
    -----
    Row by row: vectorisable passes fill the row buffers (strongest channel,
    then the direction test against every edge), and a scalar pass votes each
    pixel into its cell, in skimage's order within a cell (row-major), so the
    float32 sums round as skimage's do. Pixels flagged by the vector passes
    (near ties, NaN, exact angles) take the careful scalar path.
    """
    n_images = images.shape[0]
    n_cells_row, n_cells_col, n_orient = hist.shape[1], hist.shape[2], hist.shape[3]
    cols = n_cells_col * c_col
    area = np.float32(c_row * c_col)
    # no race: iteration n writes only scratch[n], hist[n], blocks[n], out[n], ambiguous[n]
    for n in prange(n_images):
        hist[n] = 0.0
        ambiguous[n] = 0
        g_row, g_col, square = scratch[n, 0], scratch[n, 1], scratch[n, 2]
        careful, bins, margin = scratch[n, 3], scratch[n, 4], scratch[n, 5]
        special = scratch[n, 6]
        for r in range(n_cells_row * c_row):
            _row_gradients(images, n, r, cols, zero, near_tie, g_row, g_col, square, careful)
            _row_directions(g_row, g_col, cols, edge_cos, edge_sin, square, careful, special,
                            bins, margin)
            cell_row = hist[n, r // c_row]
            for cell_c in range(n_cells_col):
                for x in range(cell_c * c_col, (cell_c + 1) * c_col):
                    magnitude = square[x]
                    b = int(bins[x])
                    if b >= 0:
                        ambiguous[n] += int(margin[x])
                    elif b <= -2:
                        b = special_bins[-2 - b]
                        if b < 0:
                            continue  # an exact angle of 180 degrees: in no bin
                    else:  # careful: redo the pixel from the image, unfolded, the scalar way
                        g_r, g_c = _strongest_gradient(images, n, r, x, zero)
                        gr = np.float64(g_r)
                        gc = np.float64(g_c)
                        magnitude = math.sqrt(gr * gr + gc * gc)
                        b, near_edge = _pixel_bin(gr, gc, magnitude, bounds, edge_cos, edge_sin)
                        ambiguous[n] += int(near_edge)
                        if b == _ALL_BINS:
                            # skimage's bin test is false for a NaN angle: it votes in every bin
                            for o in range(n_orient):
                                cell_row[cell_c, o] = cell_row[cell_c, o] + magnitude
                            continue
                        if b < 0:
                            continue  # an angle of 180 after rounding: in no bin
                    # float32 accumulation, as skimage's C ``float total``
                    cell_row[cell_c, b] = cell_row[cell_c, b] + magnitude
        _finish_image(hist, cells, n, area, b_row, b_col, norm_code, blocks[n], out)


# ---------------------------------------------------------------- cpu kernel, uint8 images
# A uint8 image's centred differences are integers in [-255, 255], so every gradient
# it can have is one of 511 x 511: skimage's bin and magnitude of each come from
# NumPy once, into tables, and the kernel looks them up (no arctan2, no edge cases).
_U8_SPAN = 511


@functools.lru_cache(maxsize=8)
def _uint8_tables(orientations):
    """skimage's bin and magnitude of every integer gradient of a uint8 image.

    Returns
    -------
    bins : (511 * 511,) int8 (int16 past 127 orientations)
        ``bins[(g_row + 255) * 511 + g_col + 255]``: the bin, ``-1`` for none
        (an angle that rounds to 180 degrees).
    magnitudes : (256 * 256,) float64
        ``magnitudes[|g_row| * 256 + |g_col|]``: ``hypot(g_col, g_row)``.

    Both are computed on contiguous float64 planes with the calls skimage makes
    (``np.rad2deg(np.arctan2(g_row, g_col)) % 180``, ``np.hypot``), so they
    round as skimage's do on this machine.
    """
    values = np.arange(-255, 256, dtype=np.float64)
    g_row, g_col = np.meshgrid(values, values, indexing="ij")
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    bounds = _bin_bounds(orientations)
    bins = np.searchsorted(bounds[1:], angle, side="right")
    bins = np.where(bins < orientations, bins, -1)
    bins = bins.astype(np.int8 if orientations <= np.iinfo(np.int8).max else np.int16)
    magnitude = np.hypot(g_col, g_row)[255:, 255:]  # hypot ignores signs
    return bins.ravel(), np.ascontiguousarray(magnitude).ravel()


@njit(cache=True)
def _merge_channel(first, rows, up, down, cols, right, left, mask, start, n, g_row, g_col,
                   square):
    """One channel's gradients at pixels ``start .. start + n - 1`` merged into the buffers.

    Pixel ``start + k`` has the gradient ``(rows[up + k] - rows[down + k],
    (cols[right + k] - cols[left + k]) * mask[start + k])``; ``g_row``, ``g_col``
    and ``square`` (float32) keep it and its squared magnitude if this is the
    first channel or a strictly stronger one. Unsigned offsets (no
    negative-index fix-up) and no branches: the loop vectorises.
    """
    up, down = np.uint64(up), np.uint64(down)
    right, left = np.uint64(right), np.uint64(left)
    start = np.uint64(start)
    for k in range(n):
        u = np.uint64(k)
        i = start + u
        gr = np.float32(rows[up + u]) - np.float32(rows[down + u])
        gc = (np.float32(cols[right + u]) - np.float32(cols[left + u])) * mask[i]
        sq = gr * gr + gc * gc
        take = first | (sq > square[i])
        g_row[i] = gr if take else g_row[i]
        g_col[i] = gc if take else g_col[i]
        square[i] = sq if take else square[i]


@njit(cache=True)
def _uint8_gradients(image, width, mask, edge, g_row, g_col, square):
    """Strongest-channel gradients of one uint8 image, into flat float32 buffers.

    Parameters
    ----------
    image : (C, H * W) uint8
        The image's channels as flat rows of ``width`` pixels.
    width : int
    mask : (H * W,) float32
        1 at interior columns, 0 at columns 0 and W - 1 (no column gradient there).
    edge : (W + 2,) uint8
        Workspace: a border row with a pixel either side.
    g_row, g_col, square : (H * W,) float32
        Overwritten: the gradient of the channel with the largest ``g_row**2 +
        g_col**2`` (the first on ties) and that square.

    Notes
    -----
    The gradients are integers in [-255, 255] and their squares below 2**24, so
    float32 holds them exactly (16 lanes a vector, where Numba's integer
    arithmetic would widen to int64); squares of integers order exactly as
    skimage's ``hypot`` does, so the channel choice is exact.

    The interior rows are one flat loop: ``i +- 1`` crosses a row end only at
    the border columns, where ``mask`` zeroes the difference. The first and last
    rows take the row itself as both neighbour rows (a row gradient of zero),
    and their column neighbours from ``edge``, whose end pixels ``mask`` zeroes.
    """
    n_channels, size = image.shape
    height = size // width
    for ch in range(n_channels):
        plane = image[ch]
        first = ch == 0
        if height > 2:
            _merge_channel(first, plane, 2 * width, 0, plane, width + 1, width - 1, mask,
                           width, size - 2 * width, g_row, g_col, square)
        for r in range(0, height, max(height - 1, 1)):  # the border rows, once if one row
            start = r * width
            for x in range(width):
                edge[1 + x] = plane[start + x]
            _merge_channel(first, plane, start, start, edge, 2, 0, mask, start, width, g_row,
                           g_col, square)


@njit(parallel=True, cache=True)
def _hog_uint8_cpu(images, width, bins, magnitudes, mask, c_row, c_col, b_row, b_col,
                   norm_code, edges, scratch, where, blocks, hist, cells, out):
    """HoG of a uint8 batch: cell histograms into ``hist``, normalised blocks into ``out``.

    Parameters
    ----------
    images : (N, C, H * W) uint8, C-contiguous
        The batch with each channel flattened.
    width : int
        ``W``.
    bins, magnitudes : the tables of :func:`_uint8_tables`
    mask : (H * W,) float32
        See :func:`_uint8_gradients`.
    c_row, c_col, b_row, b_col, norm_code : int
        As for :func:`_hog_cpu`.
    edges : (n_chunks, W + 2) uint8
        Per-chunk workspace for :func:`_uint8_gradients`.
    scratch : (n_chunks, 3, H * W) float32
        Per-chunk workspace for the gradients.
    where : (n_chunks, 2, H * W) int32
        Per-chunk workspace for each pixel's positions in ``bins`` and ``magnitudes``.
    blocks : (n_chunks, b_row * b_col * orientations) float64
        Per-chunk workspace for :func:`_normalize_blocks`.
    hist : (N, n_cells_row, n_cells_col, orientations) float32
        Overwritten with the cell histograms (mean votes).
    cells : (N, n_cells_row, n_cells_col * orientations) float32
        The same memory as ``hist``, each row of cells flat.
    out : (N, F) float32
        The features, overwritten.

    Notes
    -----
    Each pixel votes ``magnitudes[...]`` (float64) into its cell's float32 sum,
    in skimage's order within a cell (row-major). The votes visit every cell in
    turn (pixel ``(r, j)`` of each cell, then the next pixel), so that
    consecutive votes go to different sums and need not wait on each other; the
    order within each cell is unchanged.
    """
    n_images, size = images.shape[0], images.shape[2]
    n_cells_row, n_cells_col = hist.shape[1], hist.shape[2]
    n_chunks = scratch.shape[0]
    area = np.float32(c_row * c_col)
    offset, span, side = np.float32(255), np.float32(_U8_SPAN), np.float32(256)
    per_chunk = (n_images + n_chunks - 1) // n_chunks
    # no race: chunk k writes only edges[k], scratch[k], where[k], blocks[k] and its images' rows
    for chunk in prange(n_chunks):
        g_row, g_col, square = scratch[chunk, 0], scratch[chunk, 1], scratch[chunk, 2]
        at_bin, at_magnitude = where[chunk, 0], where[chunk, 1]
        for n in range(chunk * per_chunk, min(n_images, (chunk + 1) * per_chunk)):
            _uint8_gradients(images[n], width, mask, edges[chunk], g_row, g_col, square)
            for i in range(size):  # exact in float32: the integers stay below 2**24
                gr = g_row[i]
                gc = g_col[i]
                at_bin[i] = np.int32((gr + offset) * span + (gc + offset))
                at_magnitude[i] = np.int32(abs(gr) * side + abs(gc))
            hist[n] = 0.0
            for r in range(c_row):
                for j in range(c_col):
                    for cell_r in range(n_cells_row):
                        cell_row = hist[n, cell_r]
                        row = np.uint64((cell_r * c_row + r) * width + j)
                        for cell_c in range(n_cells_col):
                            i = row + np.uint64(cell_c * c_col)
                            b = bins[np.uint32(at_bin[i])]
                            if b >= 0:
                                # float32 accumulation, as skimage's C ``float total``
                                o = np.uint32(b)
                                magnitude = magnitudes[np.uint32(at_magnitude[i])]
                                cell_row[cell_c, o] = cell_row[cell_c, o] + magnitude
            _finish_image(hist, cells, n, area, b_row, b_col, norm_code, blocks[chunk], out)
