"""Fully connected and maxout layers: one tiled matmul kernel in shared memory."""

import functools

import numba
import numpy as np

from ._launch import _cdiv, _grid_1d, _numba_type, _tile
from .activations import relu_backward, relu_forward
from .arrays import _dev, _empty, _fill_kernel, _flat, _zeros
from .device import cuda, jit

#: Rows of C per thread in the matmul kernel (register blocking).
_MATMUL_ROWS_PER_THREAD = 4


@functools.lru_cache(maxsize=None)
def _make_matmul_kernel(dtype, tile, rpt, trans_a, trans_b, with_bias, with_row_sums=False,
                        relu=False, gated=False):
    """``c = op(a) @ op(b) + bias`` with ``op`` an optional transpose, fixed at compile time.

    ``op(a)`` is ``(I, K)`` (``a`` is stored ``(K, I)`` when ``trans_a``), ``op(b)`` is
    ``(K, J)`` (stored ``(J, K)`` when ``trans_b``), ``c`` is ``(I, J)``, ``bias`` is
    ``(J,)``; without ``with_bias`` the bias is not read (any array will do: the
    branch is pruned at compile time), which spares a gradient's product a zero
    vector and its fill launch. A ``tile x tile`` block computes a ``(tile*rpt) x tile``
    tile of ``c``; each thread owns ``rpt`` rows of one column, so every ``b`` value read from
    shared memory feeds ``rpt`` accumulators. Tiles of ``a`` and ``b`` are loaded with
    consecutive threads on the stored array's last axis (coalesced) whatever the
    transpose; the shared tiles are padded by one column so that the transposed
    stores and the column reads do not hit the same bank.

    With ``with_row_sums`` the kernel also writes ``row_sums[i] = sum_k op(a)[i, k]``
    (a Linear layer's bias gradient, ``dy.sum(0)``, beside its weight gradient
    ``dy.T @ x``: one launch fewer). The blocks of the first column of tiles sum
    the ``a`` tiles they hold in shared memory, one thread per row, in float64 and
    in ``k`` order, then rounded to the array's dtype.

    With ``relu`` each result leaves through :func:`_relu_forward_kernel`'s test
    (a Linear layer followed by a ReLU); with ``gated`` through
    :func:`_relu_backward_kernel`'s, ``c[i, j]`` where ``gate[i, j] > 0`` else 0 (the
    input gradient of a Linear layer that a ReLU feeds): the same bits as that
    kernel's launch after this one, which they spare.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    rows = tile * rpt
    padded = tile + 1  # shared shapes must be constants: computed here, not in the kernel
    threads = tile * tile

    @jit
    def matmul_kernel(a, b, bias, c, row_sums, gate):
        a_tile = cuda.shared.array((rows, padded), nt)
        b_tile = cuda.shared.array((tile, padded), nt)
        acc = cuda.local.array(rpt, nt)
        sums = cuda.local.array(rpt, numba.float64)
        n_i, n_j = c.shape
        n_k = a.shape[0] if trans_a else a.shape[1]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * tile + tx
        i0 = cuda.blockIdx.y * rows
        j0 = cuda.blockIdx.x * tile
        summing = with_row_sums and cuda.blockIdx.x == 0 and tx == 0
        for r in range(rpt):
            acc[r] = zero
            sums[r] = 0.0
        for k0 in range(0, n_k, tile):
            for idx in range(tid, rows * tile, threads):
                if trans_a:
                    kk = idx // rows
                    ii = idx - kk * rows
                else:
                    ii = idx // tile
                    kk = idx - ii * tile
                i = i0 + ii
                k = k0 + kk
                if i < n_i and k < n_k:
                    a_tile[ii, kk] = a[k, i] if trans_a else a[i, k]
                else:
                    a_tile[ii, kk] = zero
            if trans_b:
                jj = tid // tile
                kk = tid - jj * tile
            else:
                kk = tid // tile
                jj = tid - kk * tile
            j = j0 + jj
            k = k0 + kk
            if j < n_j and k < n_k:
                b_tile[kk, jj] = b[j, k] if trans_b else b[k, j]
            else:
                b_tile[kk, jj] = zero
            cuda.syncthreads()
            for kk in range(tile):
                bv = b_tile[kk, tx]
                for r in range(rpt):
                    acc[r] += a_tile[ty + r * tile, kk] * bv
            if summing:  # zeros past the end of k add nothing
                for kk in range(min(tile, n_k - k0)):
                    for r in range(rpt):
                        sums[r] += a_tile[ty + r * tile, kk]
            cuda.syncthreads()
        j = j0 + tx
        if j < n_j:
            for r in range(rpt):
                i = i0 + ty + r * tile
                if i < n_i:
                    if with_bias:
                        v = acc[r] + bias[j]
                    else:
                        v = acc[r]
                    if relu:
                        v = zero if v < zero else v  # NaN fails the test and propagates
                    if gated:
                        v = v if gate[i, j] > zero else zero
                    c[i, j] = v
        if summing:
            for r in range(rpt):
                i = i0 + ty + r * tile
                if i < n_i:
                    row_sums[i] = sums[r]

    return matmul_kernel


def _matmul(a, b, bias, trans_a, trans_b, n_i, n_j, row_sums=None, relu=False, gate=None):
    """``op(a) @ op(b) + bias`` as a new ``(n_i, n_j)`` device array (bias may be None).

    ``row_sums``, an ``(n_i,)`` device array if given, gets the sums of ``op(a)``'s
    rows in the same launch; ``relu`` passes the result through a ReLU, and ``gate``,
    an ``(n_i, n_j)`` device array if given, through a ReLU's backward with that
    output (see :func:`_make_matmul_kernel`).
    """
    c = _empty((n_i, n_j), dtype=a.dtype)
    n_k = a.shape[0] if trans_a else a.shape[1]
    # no column (in_features = 0) but rows to sum: the launch below, a column of blocks
    sums_only = n_j == 0 and n_i > 0 and n_k > 0 and row_sums is not None
    if (c.size == 0 or n_k == 0) and not sums_only:
        if row_sums is not None and row_sums.size:
            _fill_kernel[_grid_1d(row_sums.size)](row_sums, row_sums.dtype.type(0))
        if c.size == 0:
            return c
        c = _zeros((n_i, n_j), a.dtype) if bias is None else _broadcast_rows(bias, n_i)
        if relu:
            c = relu_forward(c)
        return c if gate is None else relu_backward(c, gate)
    tile = _tile()
    rpt = _MATMUL_ROWS_PER_THREAD
    with_bias = bias is not None
    with_row_sums = row_sums is not None
    kernel = _make_matmul_kernel(a.dtype.str, tile, rpt, bool(trans_a), bool(trans_b),
                                 with_bias, with_row_sums, bool(relu), gate is not None)
    grid = (max(1, _cdiv(n_j, tile)), _cdiv(n_i, tile * rpt))
    kernel[grid, (tile, tile)](a, b, _dev(bias) if with_bias else c, c,
                               row_sums if with_row_sums else c,
                               c if gate is None else _dev(gate))
    return c


@jit(cache=True)
def _broadcast_rows_kernel(row, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = row[i % row.size] + 0  # 0 + bias, as the matmul's sum: -0.0 gives +0.0


def _broadcast_rows(row, n):
    out = _empty((n, row.size), dtype=row.dtype)
    if out.size:
        _broadcast_rows_kernel[_grid_1d(out.size)](_dev(row), _flat(out))
    return out


def linear_forward(x, weight, bias, relu=False):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : device array, shape (N, D)
    weight : device array, shape (M, D)
    bias : device array, shape (M,), or None
    relu : bool, default False
        Return :func:`relu_forward` of ``y`` instead, bit for bit, in the matrix
        product's launch.

    Returns
    -------
    y : device array, shape (N, M), dtype of ``x``
    """
    x, weight = _dev(x), _dev(weight)
    return _matmul(x, weight, bias, False, True, x.shape[0], weight.shape[0], relu=relu)


def linear_backward(dy, x, weight, input_grad=True, relu_y=None):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : device array, shape (N, M)
    x : device array, shape (N, D)
    weight : device array, shape (M, D)
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : device array, shape (N, D), optional
        The output of a ReLU that ran just before this layer: ``dx`` goes back
        through it too, ``relu_backward(dy @ weight, relu_y)``, bit for bit, in the
        matrix product's launch.

    Returns
    -------
    dx : device array, shape (N, D), or None
        ``dy @ weight``
    dweight : device array, shape (M, D)
        ``dy.T @ x``
    dbias : device array, shape (M,)
        ``dy.sum(0)``
    """
    dy, x, weight = _dev(dy), _dev(x), _dev(weight)
    n, m = dy.shape
    d = x.shape[1]
    dx = _matmul(dy, weight, None, False, False, n, d, gate=relu_y) if input_grad else None
    dbias = _empty((m,), dtype=dy.dtype)
    dweight = _matmul(dy, x, None, True, False, m, d, row_sums=dbias)  # and dbias
    return dx, dweight, dbias


@jit(cache=True)
def _maxout_select_kernel(z, pieces, y, argmax):
    # One thread per unit (n, j) picks the best of its pieces; np.argmax's rule.
    n_units = y.shape[1]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.size, step):
        n = i // n_units
        j = i - n * n_units
        best = z[n, j * pieces]
        best_k = 0
        for k in range(1, pieces):
            v = z[n, j * pieces + k]
            if v > best or (v != v and best == best):
                best = v
                best_k = k
        y[n, j] = best
        argmax[n, j] = best_k


@jit(cache=True)
def _maxout_route_kernel(dy, argmax, pieces, dz):
    # One thread per element of dz: the unit's gradient if it is the winning piece.
    width = dz.shape[1]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dz.size, step):
        n = i // width
        col = i - n * width
        j = col // pieces
        if argmax[n, j] == col - j * pieces:
            dz[n, col] = dy[n, j]
        else:
            dz[n, col] = 0


def maxout_forward(x, weight, bias, pieces):
    """Maxout units, ``y[n, j] = max_k (x[n] @ weight[j*pieces + k] + bias[j*pieces + k])``.

    Parameters
    ----------
    x : device array, shape (N, D)
    weight : device array, shape (M * pieces, D)
    bias : device array, shape (M * pieces,), or None
    pieces : int

    Returns
    -------
    y : device array, shape (N, M), dtype of ``x``
    argmax : device array, shape (N, M), int32
        The winning piece of each unit (first on ties, NaN wins).
    """
    pieces = int(pieces)
    z = linear_forward(x, weight, bias)
    n, width = z.shape
    y = _empty((n, width // pieces), dtype=z.dtype)
    argmax = _empty((n, width // pieces), dtype=np.int32)
    if y.size:
        _maxout_select_kernel[_grid_1d(y.size)](z, pieces, y, argmax)
    return y, argmax


def maxout_backward(dy, x, weight, argmax, pieces):
    """Gradients of :func:`maxout_forward`.

    Parameters
    ----------
    dy : device array, shape (N, M)
    x : device array, shape (N, D)
    weight : device array, shape (M * pieces, D)
    argmax : device array, shape (N, M), int32
    pieces : int

    Returns
    -------
    dx : device array, shape (N, D)
    dweight : device array, shape (M * pieces, D)
    dbias : device array, shape (M * pieces,)
    """
    dy, argmax = _dev(dy), _dev(argmax)
    pieces = int(pieces)
    n, m = dy.shape
    dz = _empty((n, m * pieces), dtype=dy.dtype)
    if dz.size:
        _maxout_route_kernel[_grid_1d(dz.size)](dy, argmax, pieces, dz)
    return linear_backward(dz, x, weight)
