"""A strided convolution as a stride-1 one on the phases of its input (space-to-depth).

With stride ``s``, output pixel ``(i, j)`` reads the padded input at rows ``i * s + a``
and columns ``j * s + b``. Split the padded input into its phases, ``xp[n, (c * SH +
ra) * SW + rb, i, j] = xpad[n, c, i * s + ra, j * s + rb]``, and tap ``(a, b)`` becomes
tap ``(a // s, b // s)`` of phase ``(a % s, b % s)``: the convolution is a stride-1
one of ``C * SH * SW`` channels with a ``ceil(KH / s) x ceil(KW / s)`` kernel, the
taps past ``KH`` or ``KW`` zero (:func:`_phase_weight`). ``SH = min(s, KH)`` (likewise
``SW``): a phase that no tap reads is left out.

That runs on the stride-1 kernels of :mod:`.conv_rows`, whose vectors fill where the
channel tiles' waste most lanes on a layer with few channels (a first layer, or the
input gradient's few outputs), at the cost of the zero taps' multiply-adds (3x3,
stride 2: 16 for 9). :mod:`.conv` chooses it (:func:`.conv._phases_pay`). The input
gradient is the stride-1 convolution's, taken back to the input's pixels
(:func:`_from_phases`); the weight gradient the stride-1 one's, its zero taps dropped
(:func:`_phase_weight_grad`).
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT
from .arrays import _empty, _zeros


def _phase_shape(kh, kw, s):
    """``(SH, SW, KH2, KW2)``: phases used down and across, and the phase kernel's size."""
    return min(s, kh), min(s, kw), -(-kh // s), -(-kw // s)


@njit(inline="always")
def _phase_columns(rb, s, p, w_n, wp_n):
    """``(j0, j1)``: the columns ``j < WP`` of column phase ``rb`` that hold a column of
    the image, ``0 <= j * s + rb - p < W`` (the others are padding)."""
    j0 = min(max(-((rb - p) // s), 0), wp_n)
    return j0, min(max(-((rb - p - w_n) // s), j0), wp_n)


@njit(**_JIT)
def _to_phases(x, xp, s, p, sh, sw):
    """``x`` (N, C, H, W) into its phases ``xp`` (N, C * SH * SW, HP, WP), every element
    written.

    ``xp[n, (c * SH + ra) * SW + rb, i, j] = x[n, c, i * s + ra - p, j * s + rb - p]``,
    zero where that is outside ``x`` (the padding, and rows or columns past it).
    """
    n_img, n_ch, h_n, w_n = x.shape
    hp_n, wp_n = xp.shape[2], xp.shape[3]
    zero = xp.dtype.type(0)
    # No race: iteration t owns the SH * SW phase planes of channel t % C of image t // C.
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for ra in range(sh):
            for rb in range(sw):
                plane = xp[n, (c * sh + ra) * sw + rb]
                j0, j1 = _phase_columns(rb, s, p, w_n, wp_n)
                for i in range(hp_n):
                    h = i * s + ra - p
                    row = plane[i]
                    if h < 0 or h >= h_n:
                        for j in range(wp_n):
                            row[j] = zero
                        continue
                    for j in range(j0):
                        row[j] = zero
                    for j in range(j0, j1):
                        row[j] = x[n, c, h, j * s + rb - p]
                    for j in range(j1, wp_n):
                        row[j] = zero


@njit(**_JIT)
def _from_phases(dxp, dx, s, p, sh, sw):
    """The adjoint of :func:`_to_phases`: ``dx`` (N, C, H, W) from ``dxp`` (N, C * SH *
    SW, HP, WP), every element written.

    Each pixel of ``x`` is at most one element of its phases, so this copies: ``dx[n, c,
    h, w] = dxp[n, (c * SH + ra) * SW + rb, i, j]`` for ``h + p = i * s + ra``, ``w + p
    = j * s + rb``, and zero where no phase holds the pixel (``ra >= SH``, ``i >= HP``:
    no tap reads it, so its gradient is zero).
    """
    n_img, n_ch, h_n, w_n = dx.shape
    hp_n, wp_n = dxp.shape[2], dxp.shape[3]
    zero = dx.dtype.type(0)
    # No race: iteration t owns the plane dx[t // C, t % C].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for h in range(h_n):
            row = dx[n, c, h]
            for w in range(w_n):
                row[w] = zero
            i, ra = (h + p) // s, (h + p) % s
            if ra >= sh or i >= hp_n:
                continue
            for rb in range(sw):
                src = dxp[n, (c * sh + ra) * sw + rb, i]
                j0, j1 = _phase_columns(rb, s, p, w_n, wp_n)  # to columns j * s + rb - p
                for j in range(j0, j1):
                    row[j * s + rb - p] = src[j]


def _phases(x, s, p, kh, kw, ho, wo):
    """The phases of ``x`` for a ``KH x KW`` kernel, stride ``s``, padding ``p``, sized
    for the ``(HO, WO)`` outputs: ``(N, C * SH * SW, HO + KH2 - 1, WO + KW2 - 1)``."""
    sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
    n, c = x.shape[0], x.shape[1]
    xp = _empty((n, c * sh * sw, ho + kh2 - 1, wo + kw2 - 1), dtype=x.dtype)
    _to_phases(x, xp, s, p, sh, sw)
    return xp


def _phase_weight(weight, s):
    """``weight`` (F, Cg, KH, KW) as the phases' kernel (F, Cg * SH * SW, KH2, KW2):
    ``[f, (c * SH + ra) * SW + rb, a, b] = weight[f, c, a * s + ra, b * s + rb]``,
    zero past the kernel's edge."""
    f, cg, kh, kw = weight.shape
    sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
    wp = np.zeros((f, cg, sh, sw, kh2, kw2), dtype=weight.dtype)
    for ra in range(sh):
        for rb in range(sw):
            taps = weight[:, :, ra::s, rb::s]
            wp[:, :, ra, rb, :taps.shape[2], :taps.shape[3]] = taps
    return wp.reshape(f, cg * sh * sw, kh2, kw2)


def _phase_weight_grad(dwp, weight_shape, s):
    """The gradient of :func:`_phase_weight`: ``dwp`` (F, Cg * SH * SW, KH2, KW2) back to
    ``weight_shape`` (F, Cg, KH, KW), the zero taps' sums dropped."""
    f, cg, kh, kw = weight_shape
    sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
    dwp = dwp.reshape(f, cg, sh, sw, kh2, kw2)
    dweight = _zeros(weight_shape, dtype=dwp.dtype)
    for ra in range(sh):
        for rb in range(sw):
            taps = dweight[:, :, ra::s, rb::s]
            taps[...] = dwp[:, :, ra, rb, :taps.shape[2], :taps.shape[3]]
    return dweight


@njit(**_JIT)
def _from_phase(dxs, dx, s, p, ra, rb):
    """Phase ``(ra, rb)`` of ``dx`` (N, C, H, W) from ``dxs`` (N, C, HS, WS): the pixels
    with ``(h + p) % s == ra`` and ``(w + p) % s == rb``, ``dx[n, c, h, w] = dxs[n, c,
    (h + p) // s, (w + p) // s]``, zero where that is past ``dxs``. The ``s * s``
    phases together write every element of ``dx`` once."""
    n_img, n_ch, h_n, w_n = dx.shape
    hs_n, ws_n = dxs.shape[2], dxs.shape[3]
    zero = dx.dtype.type(0)
    h0, w0 = (ra - p) % s, (rb - p) % s  # the phase's first row and column
    r0 = (w0 + p) // s  # column w0's source column in dxs
    # the phase's columns w0 + k * s, k < K; those with k < k1 have a source in dxs
    k_n = max(0, -((w0 - w_n) // s))
    k1 = min(k_n, max(0, ws_n - r0))
    # No race: iteration t owns this phase's pixels of the plane dx[t // C, t % C].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        for h in range(h0, h_n, s):
            q = (h + p) // s
            row = dx[n, c, h]
            if q >= hs_n:
                for k in range(k_n):
                    row[w0 + k * s] = zero
                continue
            src = dxs[n, c, q]
            for k in range(k1):
                row[w0 + k * s] = src[r0 + k]
            for k in range(k1, k_n):
                row[w0 + k * s] = zero


def _sub_kernel(weight, s, ra, rb):
    """The taps of ``weight`` (F, Cg, KH, KW) in phase ``(ra, rb)``: ``[f, c, t, u] =
    weight[f, c, ra + t * s, rb + u * s]`` (empty past the kernel)."""
    return np.ascontiguousarray(weight[:, :, ra::s, rb::s])
