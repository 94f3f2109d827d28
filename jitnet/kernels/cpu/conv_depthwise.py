"""Depthwise convolution (``groups == C``, weight (F, 1, KH, KW), ``F = m * C``) on
the cpu target: vectors along flat planes, any stride.

The generic kernels tile output channels against input channels, and a depthwise
weight has one input channel per output channel, so most of their lanes idle.
Here each parallel iteration owns whole planes, and every pass is one loop over a
flat plane: ``out[q] (+)= sum_t w_t * src[q + o_t]`` for a handful of taps ``t``
whose offsets ``o_t`` are constants of the shape. The planes are laid out so that
this holds whatever the stride:

- A strided input is split into its ``s * s`` phases (polyphase):
  ``xph[rb, cb, r, c] = xpad[r * s + rb, c * s + cb]``. Then
  ``xpad[i * s + a, j * s + b] = xph[a % s, b % s, i + a // s, j + b // s]``: each
  tap reads one phase at unit stride, and the output row ``i`` is the phase row
  ``i + a // s``.
- A phase plane is ``WQ = WO + (KW - 1) // s`` wide, and the output is computed on
  that width too (flat index ``q = i * WQ + j``): the ``WQ - WO`` columns past the
  output are garbage, computed and never stored, so that one loop runs over all rows.
- The loops run in blocks of ``_LANES`` (an inner ``for lane in range(_LANES)``
  whose body is too large to unroll): one vector per block, no scalar remainder
  (the buffers have a block of slack past their end).

The input gradient is a sum of the same form per phase of ``dx``, and the weight
gradient the matching dot products (see each kernel's Notes).
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT
from ._tiles import _LANES, _chunks, _conv_out_size
from .arrays import _empty

_U = np.uint64


def _depthwise_forward(x, weight, bias, stride, padding):
    """Depthwise convolution: ``y = conv2d(x, weight, bias, stride, padding, groups=C)``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    weight : ndarray, (F, 1, KH, KW), x's dtype, ``F = m * C``
    bias : ndarray, (F,), x's dtype (zeros for none)
    stride, padding : int

    Returns
    -------
    y : ndarray, (N, F, HO, WO), ``HO = (H + 2 * padding - KH) // stride + 1`` (likewise WO)

    Notes
    -----
    ``y[n, f, i, j] = bias[f] + sum_{a, b} weight[f, 0, a, b] * xpad[n, f // m, i * s + a,
    j * s + b]`` (:func:`_depthwise_forward_kernel`).
    """
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    s, p = int(stride), int(padding)
    y = _empty((n, f, _conv_out_size(h, kh, s, p), _conv_out_size(w, kw, s, p)), x.dtype)
    _depthwise_forward_kernel(x, weight, bias, y, s, p, _chunks(n * c))
    return y


def _depthwise_input_grad(dy, weight, x_shape, stride, padding):
    """Gradient of :func:`_depthwise_forward` with respect to ``x``.

    Parameters
    ----------
    dy : ndarray, (N, F, HO, WO), float32 or float64, C-contiguous
    weight : ndarray, (F, 1, KH, KW), dy's dtype
    x_shape : tuple, (N, C, H, W)
    stride, padding : int

    Returns
    -------
    dx : ndarray, (N, C, H, W), dy's dtype

    Notes
    -----
    ``dx[n, c, h, w] = sum_{k < m} sum_{a, b} weight[c m + k, 0, a, b] *
    dy[n, c m + k, i, j]`` over ``i s + a = h + p``, ``j s + b = w + p``
    (:func:`_depthwise_input_grad_kernel`).
    """
    n, c, h, w = x_shape
    dx = _empty((n, c, h, w), dy.dtype)
    _depthwise_input_grad_kernel(dy, weight, dx, int(stride), int(padding), _chunks(n * c))
    return dx


def _depthwise_weight_grad(dy, x, weight_shape, stride, padding, dbias):
    """Gradient of :func:`_depthwise_forward` with respect to ``weight`` (and ``bias``).

    Parameters
    ----------
    dy : ndarray, (N, F, HO, WO), x's dtype, C-contiguous
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    weight_shape : tuple, (F, 1, KH, KW)
    stride, padding : int
    dbias : ndarray, (F,), x's dtype, or None
        Filled with ``dy.sum(axis=(0, 2, 3))`` when given.

    Returns
    -------
    dweight : ndarray, (F, 1, KH, KW), x's dtype

    Notes
    -----
    ``dweight[f, 0, a, b] = sum_{n, i, j} dy[n, f, i, j] * xpad[n, f // m, i s + a, j s + b]``
    (:func:`_depthwise_weight_grad_kernel`). Iteration ``c`` of the kernel owns
    channels ``f = c m ... c m + m - 1`` and sums over images, rows and lanes in one
    fixed order: the bits do not depend on the thread count.
    """
    c = x.shape[1]
    dweight = _empty(tuple(weight_shape), x.dtype)
    with_bias = dbias is not None
    if not with_bias:
        dbias = np.empty(0, dtype=x.dtype)
    _depthwise_weight_grad_kernel(dy, x, dweight, dbias, int(stride), int(padding),
                                  _chunks(c))
    return dweight


# ---------------------------------------------------------------------------
# passes over flat planes
# ---------------------------------------------------------------------------


@njit(inline="always")
def _pass9(out, src, n_blk, o, w, t, b, first):
    """``out[q] (= b +) += sum_{k < 9} w[t + k] * src[q + o[t + k]]`` for the
    ``n_blk * _LANES`` first ``q``."""
    o0, o1, o2, o3, o4 = o[t], o[t + 1], o[t + 2], o[t + 3], o[t + 4]
    o5, o6, o7, o8 = o[t + 5], o[t + 6], o[t + 7], o[t + 8]
    w0, w1, w2, w3, w4 = w[t], w[t + 1], w[t + 2], w[t + 3], w[t + 4]
    w5, w6, w7, w8 = w[t + 5], w[t + 6], w[t + 7], w[t + 8]
    if first:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] = (b + w0 * src[u + o0] + w1 * src[u + o1] + w2 * src[u + o2]
                          + w3 * src[u + o3] + w4 * src[u + o4] + w5 * src[u + o5]
                          + w6 * src[u + o6] + w7 * src[u + o7] + w8 * src[u + o8])
    else:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] += (w0 * src[u + o0] + w1 * src[u + o1] + w2 * src[u + o2]
                           + w3 * src[u + o3] + w4 * src[u + o4] + w5 * src[u + o5]
                           + w6 * src[u + o6] + w7 * src[u + o7] + w8 * src[u + o8])


@njit(inline="always")
def _pass4(out, src, n_blk, o, w, t, b, first):
    """:func:`_pass9` with 4 taps."""
    o0, o1, o2, o3 = o[t], o[t + 1], o[t + 2], o[t + 3]
    w0, w1, w2, w3 = w[t], w[t + 1], w[t + 2], w[t + 3]
    if first:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] = (b + w0 * src[u + o0] + w1 * src[u + o1] + w2 * src[u + o2]
                          + w3 * src[u + o3])
    else:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] += (w0 * src[u + o0] + w1 * src[u + o1] + w2 * src[u + o2]
                           + w3 * src[u + o3])


@njit(inline="always")
def _pass2(out, src, n_blk, o, w, t, b, first):
    """:func:`_pass9` with 2 taps."""
    o0, o1 = o[t], o[t + 1]
    w0, w1 = w[t], w[t + 1]
    if first:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] = b + w0 * src[u + o0] + w1 * src[u + o1]
    else:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] += w0 * src[u + o0] + w1 * src[u + o1]


@njit(inline="always")
def _pass1(out, src, n_blk, o, w, t, b, first):
    """:func:`_pass9` with 1 tap."""
    o0 = o[t]
    w0 = w[t]
    if first:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] = b + w0 * src[u + o0]
    else:
        for qb in range(n_blk):
            q = _U(qb * _LANES)
            for lane in range(_LANES):
                u = q + _U(lane)
                out[u] += w0 * src[u + o0]


@njit(inline="always")
def _taps(out, src, n_blk, o, w, t0, t1, b, first):
    """``out[q] (= b +) += sum_{t0 <= t < t1} w[t] * src[q + o[t]]``, in passes of 9, 4,
    2 and 1 taps (every tap a multiply-add, none wasted on a zero weight)."""
    t = t0
    while t < t1:
        left = t1 - t
        if left >= 9:
            _pass9(out, src, n_blk, o, w, t, b, first)
            t += 9
        elif left >= 4:
            _pass4(out, src, n_blk, o, w, t, b, first)
            t += 4
        elif left >= 2:
            _pass2(out, src, n_blk, o, w, t, b, first)
            t += 2
        else:
            _pass1(out, src, n_blk, o, w, t, b, first)
            t += 1
        first = False


@njit(inline="always")
def _phase_tables(h_n, w_n, s, p, pl, hq, wq):
    """Where :func:`_fill_phases` puts each row and column phase of a plane (worked out
    once: integer divisions cost more than the copy).

    Returns ``rows`` (H,): the flat start in the phases of row ``h`` (``(h + p) % s * s *
    pl + (h + p) // s * wq``), -1 for a row no output reads; and ``cols`` (s, 3): for
    column phase ``cb``, its first column of ``x`` ``w0``, the flat start of that column
    in its phase plane, and how many columns it takes.
    """
    rows = np.full(h_n, -1, dtype=np.int64)
    for h in range(h_n):
        if (h + p) // s < hq:
            rows[h] = (h + p) % s * s * pl + (h + p) // s * wq
    cols = np.zeros((s, 3), dtype=np.int64)
    for cb in range(s):
        w0 = (cb - p) % s
        c0 = (w0 + p) // s
        cols[cb, 0] = w0
        cols[cb, 1] = cb * pl + c0
        cols[cb, 2] = max(0, min((w_n - w0 + s - 1) // s, wq - c0))
    return rows, cols


@njit(inline="always")
def _tap_offsets(offs, kh_n, kw_n, s, pl, wq):
    """``offs[a * KW + b]``: where tap ``(a, b)`` reads the phases, relative to the output
    ``q = i * WQ + j`` (phase ``(a % s, b % s)``, ``PL`` numbers each, row ``a // s``,
    column ``b // s``)."""
    for a in range(kh_n):
        for b in range(kw_n):
            offs[a * kw_n + b] = ((a % s) * s + b % s) * pl + (a // s) * wq + b // s


@njit(inline="always")
def _fill_phases(ph, xf, plane, w_n, s, rows, cols):
    """The ``s * s`` phases of plane ``plane`` of ``xf`` (planes, H * W), zero-padded,
    into ``ph``: ``ph[(rb * s + cb) * pl + r * wq + c] = xpad[r * s + rb, c * s + cb]``
    (``rows``, ``cols`` from :func:`_phase_tables`).

    Only the entries that hold ``x`` are written: the padding, and what lies past
    ``hq`` x ``wq``, keep the zeros the caller put there once for all planes.
    Strides 1 and 2 have loops of their own with a constant stride, which LLVM
    vectorises (a copy, and an interleaved load).
    """
    n_cb = cols.shape[0]
    # stride 2: the column phase that starts at x's column 0, and the other
    lo = 0 if cols[0, 0] == 0 else 1
    hi = 1 - lo
    both = min(cols[lo, 2], cols[hi, 2])
    for h in range(rows.shape[0]):
        r = rows[h]
        if r < 0:
            continue
        row = h * w_n
        if s == 2:
            # both phases in one loop: LLVM loads the pairs as vectors and splits
            # them (an interleaved group); one phase at a time it gathered
            b_lo = _U(r + cols[lo, 1])
            b_hi = _U(r + cols[hi, 1])
            src = _U(row)
            for k in range(both):
                ph[b_lo + _U(k)] = xf[plane, src + _U(2 * k)]
                ph[b_hi + _U(k)] = xf[plane, src + _U(2 * k + 1)]
            for k in range(both, cols[lo, 2]):
                ph[b_lo + _U(k)] = xf[plane, src + _U(2 * k)]
            for k in range(both, cols[hi, 2]):
                ph[b_hi + _U(k)] = xf[plane, src + _U(2 * k + 1)]
            continue
        for cb in range(n_cb):
            # unsigned offsets: signed ones pay Numba's negative-index fix-up, and
            # this copy ran 2.4x slower
            base = _U(r + cols[cb, 1])
            src = _U(row + cols[cb, 0])
            cnt = cols[cb, 2]
            if s == 1:
                for k in range(cnt):
                    ph[base + _U(k)] = xf[plane, src + _U(k)]
            else:
                for k in range(cnt):
                    ph[base + _U(k)] = xf[plane, src + _U(k * s)]


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


@njit(**_JIT)
def _depthwise_forward_kernel(x, weight, bias, y, s, p, n_chunks):
    """``y`` (N, F, HO, WO) of :func:`_depthwise_forward`; ``n_chunks`` parallel
    iterations, each a run of (n, c) planes.

    Notes
    -----
    Per plane ``(n, c)``: its phases ``xph`` (see the module's docstring), then for each
    of its ``m`` output channels one pass per group of taps on the flat output
    ``out[i * WQ + j]``, tap ``(a, b)`` reading ``xph`` at offset
    ``(a % s * s + b % s) * PL + (a // s) * WQ + b // s`` (``PL`` numbers per phase),
    then the ``WO`` first columns of each row of ``out`` copied to ``y``.
    Each phase is ``HQ + 1`` rows of ``WQ`` plus a block: a garbage output past
    the last row reads up to ``(KW - 1) // s`` numbers past the plane, and the last
    block up to ``_LANES - 1`` more.
    """
    n_img, c_n, h_n, w_n = x.shape
    f_n, _, kh_n, kw_n = weight.shape
    m = f_n // c_n
    ho_n, wo_n = y.shape[2], y.shape[3]
    hq = ho_n + (kh_n - 1) // s
    wq = wo_n + (kw_n - 1) // s
    pl = (hq + 1) * wq + _LANES
    n_blk = (ho_n * wq + _LANES - 1) // _LANES
    rows, cols = _phase_tables(h_n, w_n, s, p, pl, hq, wq)
    k_n = kh_n * kw_n
    offs = np.empty(k_n, dtype=np.uint64)
    _tap_offsets(offs, kh_n, kw_n, s, pl, wq)
    wf = weight.reshape((f_n, k_n))
    xf = x.reshape((n_img * c_n, h_n * w_n))
    yf = y.reshape((n_img * f_n, ho_n * wo_n))
    n_pl = n_img * c_n
    per = (n_pl + n_chunks - 1) // n_chunks
    # No race: iteration ``chunk`` owns input planes [t0, t1) and so output planes
    # [t0 m, t1 m) (plane n * C + c feeds n * F + c * m + k): it writes those alone.
    for chunk in prange(n_chunks):
        t0 = chunk * per
        t1 = min(t0 + per, n_pl)
        ph = np.zeros(s * s * pl, dtype=y.dtype)
        out = np.empty(n_blk * _LANES, dtype=y.dtype)
        for t in range(t0, t1):
            _fill_phases(ph, xf, t, w_n, s, rows, cols)
            for k in range(m):
                f = (t % c_n) * m + k
                _taps(out, ph, n_blk, offs, wf[f], 0, k_n, bias[f], True)
                dst = (t // c_n) * f_n + f
                for i in range(ho_n):
                    yrow = _U(i * wo_n)
                    orow = _U(i * wq)
                    for j in range(wo_n):
                        yf[dst, yrow + _U(j)] = out[orow + _U(j)]


@njit(**_JIT)
def _depthwise_input_grad_kernel(dy, weight, dx, s, p, n_chunks):
    """``dx`` (N, C, H, W) of :func:`_depthwise_input_grad`; ``n_chunks`` parallel
    iterations, each a run of (n, c) planes.

    Notes
    -----
    Row ``h`` of ``dx`` has padded index ``h + p = r s + rb``: it is row ``r`` of phase
    ``rb``, and only the taps ``a = rb + s u`` reach it, from ``dy`` row ``r - u``
    (likewise columns: ``w + p = c s + cb``, ``b = cb + s v``, ``dy`` column ``c - v``).
    So each phase ``(rb, cb)`` of ``dx`` is a stride-1 correlation of ``dy`` with the
    taps ``weight[rb::s, cb::s]`` turned by 180 degrees:
    ``dxph[rb, cb][r, c] = sum_{u, v} weight[rb + s u, cb + s v] * dy[r - u, c - v]``.

    Phase rows from ``r0 = p // s`` (the first a row of ``dx`` needs) to ``RQ = ceil((H +
    p) / s)``, columns from ``c0 = p // s`` to ``CQ``; flat ``q = (r - r0) * WD + c -
    c0`` on rows ``WD = CQ - c0 + V`` wide, ``U = (KH - 1) // s``, ``V = (KW - 1) // s``.
    ``dy`` is copied into a zeroed plane ``dyp`` ``WD`` wide, ``dy[i, j]`` at
    ``(i + U - r0) * WD + j + V - c0`` (what falls outside it reaches no ``dx``), so tap
    ``(u, v)`` reads ``dyp[q + (U - u) * WD + V - v]``: never negative, never past
    the row for a column ``c < CQ``. The ``m`` output channels of ``c`` add to the same
    phases in turn, then the phases are scattered to ``dx``.
    """
    n_img, f_n, ho_n, wo_n = dy.shape
    c_n, h_n, w_n = dx.shape[1], dx.shape[2], dx.shape[3]
    kh_n, kw_n = weight.shape[2], weight.shape[3]
    m = f_n // c_n
    r0 = p // s
    c0 = p // s
    rq = (h_n + p + s - 1) // s
    cq = (w_n + p + s - 1) // s
    uu = (kh_n - 1) // s
    vv = (kw_n - 1) // s
    wd = cq - c0 + vv
    hd = rq - r0 + uu + 1
    dl = hd * wd + _LANES
    n_blk = ((rq - r0) * wd + _LANES - 1) // _LANES
    al = n_blk * _LANES
    k_n = kh_n * kw_n
    # each phase's taps, in turn: their offsets in dyp and their index a * KW + b
    n_ph = s * s
    tap0 = np.zeros(n_ph + 1, dtype=np.int64)
    offs = np.empty(k_n, dtype=np.uint64)
    idx = np.empty(k_n, dtype=np.int64)
    t = 0
    for rb in range(s):
        for cb in range(s):
            for a in range(rb, kh_n, s):
                for b in range(cb, kw_n, s):
                    offs[t] = (uu - (a - rb) // s) * wd + vv - (b - cb) // s
                    idx[t] = a * kw_n + b
                    t += 1
            tap0[rb * s + cb + 1] = t
    wf = weight.reshape((f_n, k_n))
    dyf = dy.reshape((n_img * f_n, ho_n * wo_n))
    dxf = dx.reshape((n_img * c_n, h_n * w_n))
    n_pl = n_img * c_n
    per = (n_pl + n_chunks - 1) // n_chunks
    # first row of dyp that dy fills, and how many; likewise columns
    i_dst = uu - r0
    i_lo = max(0, -i_dst)
    i_hi = min(ho_n, hd - i_dst)
    j_dst = vv - c0
    j_lo = max(0, -j_dst)
    j_hi = min(wo_n, wd - j_dst)
    # No race: iteration ``chunk`` owns dx planes [t0, t1), reads dy planes alone.
    for chunk in prange(n_chunks):
        t0 = chunk * per
        t1 = min(t0 + per, n_pl)
        dyp = np.zeros(dl, dtype=dx.dtype)
        acc = np.empty(n_ph * al, dtype=dx.dtype)
        wv = np.empty(k_n, dtype=dx.dtype)
        zero = dx.dtype.type(0)
        for t in range(t0, t1):
            for k in range(m):
                f = (t % c_n) * m + k
                src = (t // c_n) * f_n + f
                for i in range(i_lo, i_hi):
                    base = _U((i + i_dst) * wd + j_dst)
                    row = _U(i * wo_n)
                    for j in range(j_lo, j_hi):
                        dyp[base + _U(j)] = dyf[src, row + _U(j)]
                for tt in range(k_n):
                    wv[tt] = wf[f, idx[tt]]
                for ph in range(n_ph):
                    out = acc[ph * al:(ph + 1) * al]
                    if tap0[ph] == tap0[ph + 1]:  # a stride past the kernel: no tap
                        if k == 0:
                            out[:] = zero
                        continue
                    _taps(out, dyp, n_blk, offs, wv, tap0[ph], tap0[ph + 1], zero, k == 0)
            for h in range(h_n):
                rb = (h + p) % s
                row = ((h + p) // s - r0) * wd - c0
                if s == 2:
                    # both column phases in one loop (even columns of dx from one,
                    # odd from the other): one loop a row instead of two, and no
                    # strided index per phase (64 x 64 planes 16 x 16: this scatter
                    # and so the kernel 0.72 -> 0.51 ms; two rows a loop: no gain)
                    b_ev = _U((rb * 2 + p % 2) * al + row + p // 2)
                    b_od = _U((rb * 2 + 1 - p % 2) * al + row + (p + 1) // 2)
                    dst = _U(h * w_n)
                    for kk in range(w_n // 2):
                        dxf[t, dst + _U(2 * kk)] = acc[b_ev + _U(kk)]
                        dxf[t, dst + _U(2 * kk + 1)] = acc[b_od + _U(kk)]
                    if w_n % 2:
                        dxf[t, dst + _U(w_n - 1)] = acc[b_ev + _U(w_n // 2)]
                    continue
                for cb in range(s):
                    w0 = (cb - p) % s
                    base = (rb * s + cb) * al + row + (w0 + p) // s
                    dst = _U(h * w_n + w0)
                    if s == 1:
                        for kk in range(w_n):
                            dxf[t, dst + _U(kk)] = acc[_U(base + kk)]
                    else:
                        for kk in range((w_n - w0 + s - 1) // s):
                            dxf[t, dst + _U(kk * s)] = acc[_U(base + kk)]


@njit(inline="always")
def _wgrad9(acc, a0, d, src, n, o, t):
    """``acc[a0 + k] += sum_{q < n} d[q] * src[q + o[t + k]]`` (``k < 9``) and
    ``acc[a0 + 9] += sum_q d[q]``.

    Ten sums in scalars that fast-math lets LLVM vectorise as reductions: vector
    accumulators that stay in registers, 10 loads for 9 multiply-adds. Lane sums
    kept in an array (an explicit ``for lane in range(_LANES)``) were loaded and
    stored at every multiply-add, and the kernel ran 1.4-2x slower.
    """
    o0, o1, o2, o3, o4 = o[t], o[t + 1], o[t + 2], o[t + 3], o[t + 4]
    o5, o6, o7, o8 = o[t + 5], o[t + 6], o[t + 7], o[t + 8]
    z = acc[a0] * 0
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = sb = z
    for qq in range(n):
        u = _U(qq)
        g = d[u]
        s0 += g * src[u + o0]
        s1 += g * src[u + o1]
        s2 += g * src[u + o2]
        s3 += g * src[u + o3]
        s4 += g * src[u + o4]
        s5 += g * src[u + o5]
        s6 += g * src[u + o6]
        s7 += g * src[u + o7]
        s8 += g * src[u + o8]
        sb += g
    acc[a0] += s0
    acc[a0 + 1] += s1
    acc[a0 + 2] += s2
    acc[a0 + 3] += s3
    acc[a0 + 4] += s4
    acc[a0 + 5] += s5
    acc[a0 + 6] += s6
    acc[a0 + 7] += s7
    acc[a0 + 8] += s8
    acc[a0 + 9] += sb


@njit(**_JIT)
def _depthwise_weight_grad_kernel(dy, x, dweight, dbias, s, p, n_chunks):
    """``dweight`` (F, 1, KH, KW) of :func:`_depthwise_weight_grad`, and ``dbias`` (F,)
    unless empty; ``n_chunks`` parallel iterations, each a run of input channels.

    Notes
    -----
    With ``x``'s phases laid out as in :func:`_depthwise_forward_kernel` and ``dy``
    copied into a zeroed plane ``dq`` ``WQ`` wide (zeros in the garbage columns and
    past the last row), ``dweight[f, a, b]`` is the dot product of ``dq`` with the
    phase plane at tap ``(a, b)``'s offset, summed over images. Taps go 9 at a time
    (a last group padded with copies of tap 0, whose sums are dropped) with the sum
    of ``dy`` for the bias (:func:`_wgrad9`); each image's sums are added to the
    totals in image order. An input channel's sums are all its iteration's, so
    their order does not depend on the thread count.
    """
    n_img, f_n, ho_n, wo_n = dy.shape
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    kh_n, kw_n = dweight.shape[2], dweight.shape[3]
    m = f_n // c_n
    hq = ho_n + (kh_n - 1) // s
    wq = wo_n + (kw_n - 1) // s
    pl = (hq + 1) * wq + _LANES
    n_blk = (ho_n * wq + _LANES - 1) // _LANES
    rows, cols = _phase_tables(h_n, w_n, s, p, pl, hq, wq)
    k_n = kh_n * kw_n
    n_grp = (k_n + 8) // 9
    offs = np.zeros(n_grp * 9, dtype=np.uint64)  # the padding taps read offset 0
    _tap_offsets(offs, kh_n, kw_n, s, pl, wq)
    xf = x.reshape((n_img * c_n, h_n * w_n))
    dyf = dy.reshape((n_img * f_n, ho_n * wo_n))
    dwf = dweight.reshape((f_n, k_n))
    n_q = ho_n * wq
    per = (c_n + n_chunks - 1) // n_chunks
    # No race: iteration ``chunk`` owns input channels [c_lo, c_hi), so output channels
    # [c_lo m, c_hi m) of dweight and dbias; every sum is its own, over all images.
    for chunk in prange(n_chunks):
        c_lo = chunk * per
        c_hi = min(c_lo + per, c_n)
        ph = np.zeros(s * s * pl, dtype=x.dtype)
        dq = np.zeros(n_blk * _LANES, dtype=x.dtype)
        acc = np.zeros(m * n_grp * 10, dtype=x.dtype)
        for c in range(c_lo, c_hi):
            acc[:] = 0
            for n in range(n_img):
                _fill_phases(ph, xf, n * c_n + c, w_n, s, rows, cols)
                for k in range(m):
                    src = n * f_n + c * m + k
                    for i in range(ho_n):
                        drow = _U(i * wq)
                        row = _U(i * wo_n)
                        for j in range(wo_n):
                            dq[drow + _U(j)] = dyf[src, row + _U(j)]
                    for g in range(n_grp):
                        _wgrad9(acc, (k * n_grp + g) * 10, dq, ph, n_q, offs, 9 * g)
            for k in range(m):
                f = c * m + k
                for tt in range(k_n):
                    dwf[f, tt] = acc[(k * n_grp + tt // 9) * 10 + tt % 9]
                if dbias.size:
                    dbias[f] = acc[k * n_grp * 10 + 9]
