"""Fully connected and maxout layers on the cpu target.

The matrix products run on a Numba micro-kernel (the convolution's register tile,
8 rows x 32 columns, :mod:`._tiles`) rather than on BLAS: OpenBLAS keeps its own
thread pool, and on a small machine its spinning threads fight Numba's for the
cores between calls.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT, _JIT_SMALL
from ._tiles import _FB, _LANES, _PIX, _chunks, _tile_fma
from .activations import _flat, _relu_backward, _relu_forward
from .arrays import _empty, _zeros

_GEMM_COLS = _FB


#: Reduction steps per panel of :func:`_gemm`: a 32-column block of ``b`` over one
#: panel is 32 KiB, 8 rows of ``a`` 8 KiB.
_GEMM_KC = 256

#: Largest ``b`` that :func:`_matmul` re-reads for every 8 rows of ``a`` (it stays
#: in a core's L2). fc1's weight gradient at batch 64, ``dy.T @ x`` with x 1 MiB,
#: went from 8-row strips of its 4 MiB result to whole rows: training step 17.7 ->
#: 17.2 ms (interleaved A/B medians), though no faster timed alone.
_GEMM_REREAD_BYTES = 1 << 20

#: :func:`_matmul` packs ``b`` (:func:`_pack_columns`) for a product of at least this
#: many 8-row tiles of ``a``, each of which reads all of ``b``. Measured on a 2-core
#: Zen 4 (each best of 4 medians, interleaved processes): fc1's weight gradient
#: (32 tiles) 1.05-1.12 -> 0.82-0.93 ms, its input gradient at batch 128 (16)
#: 1.54-1.79 -> 1.47-1.55, and at batch 64 (8 tiles) 0.68-0.72 -> 0.75-0.81 (the
#: packing of the 4 MiB weight not paid back).
_GEMM_PACK_ROW_TILES = 16


@njit(**_JIT)
def _gemm(a, bf, k_step, cb_step, c, column_major, n_chunks, part):
    """``c[i, j] = sum_k a[i, k] * b[k, j]`` for the columns ``j`` that ``c`` has.

    ``a`` is (I, K); ``c`` is (I, J). ``b`` (K, J) comes flat, as ``bf`` with
    ``b[k, 32 cb + j] = bf[cb * cb_step + k * k_step + j]`` for ``j < 32``: either
    ``b`` itself (``k_step = J``, ``cb_step = 32``; J a multiple of 32) or packed
    in blocks of 32 columns by :func:`_pack_columns` (``k_step = 32``,
    ``cb_step = 32 K``; zeros past J). A tile is 8 rows times 32 columns;
    the last row tile repeats its last row in unused slots (clamped indices) and
    stores only the valid rows. ``part`` (tiles, 8, 32) holds each tile's sums
    between panels.

    Notes
    -----
    Iteration ``chunk`` owns a contiguous run of tiles and sweeps them once per
    panel of ``_GEMM_KC`` reduction steps, so the panel's slices of ``a`` and
    ``b`` are read from cache by all its tiles (the whole of a 4096-deep ``b``
    block would not stay there). The tile order decides which operand
    consecutive tiles share: with ``column_major`` a column block of ``b``,
    else 8 rows of ``a``; the caller re-reads the smaller one. Every element
    sums ``k`` in ascending order, whatever ``n_chunks``.

    Packed, a tile reads its block of ``b`` front to back. In ``b``'s own layout
    the block's rows lie a row of ``b`` apart, 16 KiB for fc1's 4096 columns, so
    all of them fall in the same two sets of the L1 cache: a product that
    re-reads ``b`` for many row tiles pays for that (see :func:`_matmul`).
    """
    i_n, k_n = a.shape
    n_cb = (c.shape[1] + _GEMM_COLS - 1) // _GEMM_COLS
    ks = np.uint64(k_step)
    n_rt = (i_n + _PIX - 1) // _PIX
    n_t = n_rt * n_cb
    last = i_n - 1
    cflat = c.reshape(c.size)
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    # No race: iteration chunk owns tiles [t0, t1): their part and c entries.
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty((_PIX, _GEMM_COLS), dtype=c.dtype)
        for k0 in range(0, k_n, _GEMM_KC):
            k1 = min(k0 + _GEMM_KC, k_n)
            for t in range(t0, t1):
                if column_major:
                    i0 = (t % n_rt) * _PIX
                    cb = t // n_rt
                else:
                    i0 = (t // n_cb) * _PIX
                    cb = t % n_cb
                r0 = min(i0, last)
                r1 = min(i0 + 1, last)
                r2 = min(i0 + 2, last)
                r3 = min(i0 + 3, last)
                r4 = min(i0 + 4, last)
                r5 = min(i0 + 5, last)
                r6 = min(i0 + 6, last)
                r7 = min(i0 + 7, last)
                for p in range(_PIX):
                    for j in range(_GEMM_COLS):
                        acc[p, j] = 0 if k0 == 0 else part[t, p, j]
                for k in range(k0, k1):
                    u = np.uint64(k)  # unsigned: no negative-index fix-up per load
                    a0 = a[r0, u]
                    a1 = a[r1, u]
                    a2 = a[r2, u]
                    a3 = a[r3, u]
                    a4 = a[r4, u]
                    a5 = a[r5, u]
                    a6 = a[r6, u]
                    a7 = a[r7, u]
                    row = np.uint64(cb * cb_step) + u * ks  # unsigned, as u
                    for j in range(_LANES):
                        ba = bf[row + np.uint64(j)]
                        bb = bf[row + np.uint64(_LANES + j)]
                        _tile_fma(acc, j, a0, a1, a2, a3, a4, a5, a6, a7, ba, bb)
                if k1 < k_n:
                    for p in range(_PIX):
                        for j in range(_GEMM_COLS):
                            part[t, p, j] = acc[p, j]
                else:
                    _gemm_store(acc, cflat, i_n, c.shape[1], i0, cb * _GEMM_COLS)


#: Columns of a packed block that one thread of _pack_columns writes: 16 are a
#: whole 64-byte cache line of float32 (and two of float64).
_PACK_COLS = min(16, _GEMM_COLS)


@njit(**_JIT)
def _pack_columns(b, transposed, bp):
    """``bp[cb, k, j] = B[k, 32 cb + j]``, zero past B's columns, for ``B = b``
    (K, J) or, with ``transposed``, ``B = b.T`` with ``b`` (J, K): :func:`_gemm`'s
    operand. Either way ``b`` is read row by row."""
    k_n = b.shape[1] if transposed else b.shape[0]
    j_n = b.shape[0] if transposed else b.shape[1]
    n_cb = bp.shape[0]
    zero = bp.dtype.type(0)
    if transposed:
        # No race: iteration q owns _PACK_COLS columns of bp's rows, which are whole
        # cache lines (64 bytes of float32, 128 of float64), zero padding included.
        # (Iterations over 8 columns had two threads write into the same lines: the
        # batch-16 fc1 forward took 2.5x the time of batch 32.) b is read row by row.
        per_cb = _GEMM_COLS // _PACK_COLS
        for q in prange(n_cb * per_cb):
            cb = q // per_cb
            for j in range(q % per_cb * _PACK_COLS, q % per_cb * _PACK_COLS + _PACK_COLS):
                col = cb * _GEMM_COLS + j
                if col < j_n:
                    for k in range(k_n):
                        bp[cb, k, j] = b[col, k]
                else:
                    for k in range(k_n):
                        bp[cb, k, j] = zero
        return
    # No race: iteration kb owns bp[:, 8 kb : 8 kb + 8].
    for kb in prange((k_n + 7) // 8):
        for cb in range(n_cb):
            n_cols = min(_GEMM_COLS, j_n - cb * _GEMM_COLS)
            for k in range(kb * 8, min(kb * 8 + 8, k_n)):
                for j in range(n_cols):
                    bp[cb, k, j] = b[k, cb * _GEMM_COLS + j]
                for j in range(n_cols, _GEMM_COLS):
                    bp[cb, k, j] = zero


@njit(**_JIT_SMALL)
def _gemm_store(acc, cflat, i_n, j_n, i0, j0):
    """A :func:`_gemm` tile ``acc`` (8, 32) to ``c[i0:, j0:]``, as far as ``c`` (I, J),
    flat as ``cflat``, goes.

    A function of its own (its run-time loops vectorise; inlined, the variable-count
    stores became scatter instructions). It takes ``c`` flat, not reshaping it
    itself: a reshape is a call into Numba's runtime and two reference counts, and
    per tile that was a quarter of conv1's pooled forward in
    :func:`.conv_rows._pool_tile` (see there)."""
    n_cols = np.uint64(min(_GEMM_COLS, j_n - j0))
    for p in range(min(_PIX, i_n - i0)):
        row = np.uint64((i0 + p) * j_n + j0)
        for j in range(n_cols):
            cflat[row + j] = acc[p, j]


def _matmul(a, b, dtype, b_transposed=False):
    """``a @ b`` on :func:`_gemm`; ``a`` (I, K) and ``b`` (K, J) any layout, or with
    ``b_transposed`` ``a @ b.T`` for ``b`` (J, K) (packed from its rows, no copy of
    the transpose)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    k, j = b.shape[::-1] if b_transposed else b.shape
    c = _empty((a.shape[0], j), dtype=dtype)
    if c.size == 0:  # no rows (an empty batch) or no columns: no tile to share out
        return c
    if k == 0:  # an empty sum: _gemm would store no tile
        c.fill(0)
        return c
    n_cb = -(-j // _GEMM_COLS)
    n_rt = -(-a.shape[0] // _PIX)
    if b_transposed or j % _GEMM_COLS or n_rt >= _GEMM_PACK_ROW_TILES:
        bf = _empty((n_cb, k, _GEMM_COLS), dtype=dtype)
        _pack_columns(b, b_transposed, bf)
        k_step, cb_step = _GEMM_COLS, k * _GEMM_COLS
    else:
        bf, k_step, cb_step = b, j, _GEMM_COLS
    n_tiles = n_rt * n_cb
    n_chunks = _chunks(n_tiles)
    part = _empty((n_tiles if k > _GEMM_KC else 0, _PIX, _GEMM_COLS), dtype=dtype)
    # Row-major tile order re-reads b and writes c along its rows; column-major
    # re-reads a and writes c in 8-row strips (see _gemm's notes). Re-read b when it
    # stays in cache, else the smaller operand.
    column_major = b.nbytes > _GEMM_REREAD_BYTES and b.size > a.size
    _gemm(a, bf.reshape(-1), k_step, cb_step, c, column_major, n_chunks, part)
    return c


@njit(**_JIT_SMALL)
def _transpose_add_bias(yt, bias, y):
    n_img, m = y.shape
    for i in range(n_img):
        for j in range(m):
            y[i, j] = yt[j, i] + bias[j]


def linear_forward(x, weight, bias, relu=False):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : ndarray, (N, D)
    weight : ndarray, (M, D)
    bias : ndarray, (M,), or None
    relu : bool, default False
        Return :func:`.activations.relu_forward` of ``y`` instead, bit for bit (by that kernel, in
        place: on the cpu a ReLU over one layer's outputs costs microseconds).

    Returns
    -------
    y : ndarray, (N, M), x's dtype

    Notes
    -----
    Computed as ``y.T = weight @ x.T`` so that the micro-kernel's vectors run
    along the batch (``x.T`` packed from x's rows) and weight rows are read in place.
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    m = weight.shape[0]
    b = _zeros(m, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    yt = _matmul(weight, x, dtype, b_transposed=True)
    y = _empty((x.shape[0], m), dtype=dtype)
    _transpose_add_bias(yt, b, y)
    if relu:  # in place, by relu_forward's kernel
        _relu_forward(y.reshape(-1), y.reshape(-1))
    return y


@njit(**_JIT_SMALL)
def _column_sums(a, out):
    n_rows, n_cols = a.shape
    for j in range(n_cols):  # rows are added in order
        s = a.dtype.type(0)
        for i in range(n_rows):
            s += a[i, j]
        out[j] = s


def linear_backward(dy, x, weight, input_grad=True, relu_y=None):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : ndarray, (N, M)
    x : ndarray, (N, D)
    weight : ndarray, (M, D)
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : ndarray, (N, D), optional
        The output of a ReLU that ran just before this layer: ``dx`` goes back
        through it too, ``relu_backward(dy @ weight, relu_y)``, bit for bit.

    Returns
    -------
    dx : ndarray, (N, D), ``dy @ weight``, or None
    dweight : ndarray, (M, D), ``dy.T @ x``
    dbias : ndarray, (M,), ``dy.sum(0)``
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    dy = np.ascontiguousarray(dy, dtype=dtype)
    dx = _matmul(dy, weight, dtype) if input_grad else None
    if dx is not None and relu_y is not None:  # in place, by relu_backward's kernel
        _relu_backward(dx.reshape(-1), _flat(relu_y), dx.reshape(-1))
    dweight = _matmul(dy.T, x, dtype)
    dbias = _empty(weight.shape[0], dtype=dtype)
    _column_sums(dy, dbias)
    return dx, dweight, dbias


@njit(**_JIT_SMALL)
def _maxout_select(z, y, argmax, pieces):
    n_img, m = y.shape
    for i in range(n_img):
        for j in range(m):
            best = z[i, j * pieces]
            at = 0
            for k in range(1, pieces):
                v = z[i, j * pieces + k]
                # First maximum wins; a NaN wins so that it propagates.
                if v > best or (v != v and best == best):
                    best = v
                    at = k
            y[i, j] = best
            argmax[i, j] = at


def maxout_forward(x, weight, bias, pieces):
    """Maxout units, ``y[n, j] = max_k (x[n] @ weight[j*pieces + k] + bias[j*pieces + k])``.

    Parameters
    ----------
    x : ndarray, (N, D)
    weight : ndarray, (M * pieces, D); row ``j * pieces + k`` is piece k of unit j
    bias : ndarray, (M * pieces,), or None
    pieces : int

    Returns
    -------
    y : ndarray, (N, M), x's dtype
    argmax : ndarray, (N, M), int32, winning piece (first on ties)
    """
    pieces = int(pieces)
    z = linear_forward(x, weight, bias)
    m = z.shape[1] // pieces
    y = _empty((z.shape[0], m), dtype=z.dtype)
    argmax = _empty((z.shape[0], m), dtype=np.int32)
    _maxout_select(z, y, argmax, pieces)
    return y, argmax


@njit(**_JIT_SMALL)
def _maxout_scatter(dy, argmax, dz, pieces):
    n_img, m = dy.shape
    for i in range(n_img):
        for j in range(m):
            for k in range(pieces):
                dz[i, j * pieces + k] = 0
            dz[i, j * pieces + argmax[i, j]] = dy[i, j]


def maxout_backward(dy, x, weight, argmax, pieces):
    """Gradients of :func:`maxout_forward`.

    Parameters
    ----------
    dy : ndarray, (N, M)
    x : ndarray, (N, D)
    weight : ndarray, (M * pieces, D)
    argmax : ndarray, (N, M), int32
    pieces : int

    Returns
    -------
    dx : ndarray, (N, D)
    dweight : ndarray, (M * pieces, D)
    dbias : ndarray, (M * pieces,)
    """
    pieces = int(pieces)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    dz = _empty((dy.shape[0], dy.shape[1] * pieces), dtype=dy.dtype)
    _maxout_scatter(dy, np.ascontiguousarray(argmax, dtype=np.int32), dz, pieces)
    return linear_backward(dz, x, weight)
