"""Convolution: direct convolution forward and backward on shared-memory tiles of the
input and the weights, several output channels per thread, the bias added (and
the ReLU and pooling, for :mod:`.maxpool`, fused) in the forward's epilogue.
"""

import functools

import numpy as np

from ... import config
from ._launch import _cdiv, _numba_type, _reduction_threads, _tile
from .arrays import _dev, _empty, _zero_bias, _zeros
from .device import cuda, jit

#: Output channels per thread of the convolution kernels (and input channels per
#: thread in the data-gradient kernel): each input value read from shared memory
#: feeds this many accumulators.
_CONV_OUTPUTS_PER_THREAD = 4

#: Largest grid dimension z (the CUDA limit); bigger (n, filter) counts loop.
_MAX_GRID_Z = 65535


@functools.lru_cache(maxsize=None)
def _make_conv2d_forward_kernel(dtype, tile, kh, kw, stride, fpt, pool=False, relu=False):
    """Direct convolution: a ``tile x tile`` block of outputs, ``fpt`` filters per thread.

    Block ``(bx, by, z)`` owns output rows ``by*tile ..``, columns ``bx*tile ..`` of
    image ``n`` and filters ``f0 .. f0+fpt-1`` of one group, ``z -> (n, group, filter
    block)``. Per input channel of the group the block stages the input patch the
    tile reads (``(tile-1)*stride + kh`` rows, zero where it falls into the padding)
    and the ``fpt`` filters' ``kh x kw`` taps in shared memory, then every thread
    accumulates its ``fpt`` outputs. Each output has one writer.

    With ``pool`` (``tile`` even) the block's outputs are its ``tile/2 x tile/2`` 2x2
    windows instead: the threads stage their outputs in shared memory, and a quarter
    of them take each window's maximum and its flat position in the convolution's
    output plane, in :func:`_maxpool2d_forward_kernel`'s order and with its NaN rule,
    to ``y`` (the pooled output) and ``argmax`` (through a ReLU with ``relu``): the
    three kernels' results bit for bit, in one launch, and the convolution's output
    never reaches global memory. Without ``pool``, ``argmax`` is not touched.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    patch_h = (tile - 1) * stride + kh
    patch_w = (tile - 1) * stride + kw
    threads = tile * tile
    half = tile // 2
    outs_shape = (fpt, tile, tile) if pool else (1, 1, 1)  # shared shapes: constants

    @jit
    def conv2d_forward_kernel(x, weight, bias, padding, groups, y, argmax):
        patch = cuda.shared.array((patch_h, patch_w), nt)
        taps = cuda.shared.array((fpt, kh, kw), nt)
        outs = cuda.shared.array(outs_shape, nt)
        acc = cuda.local.array(fpt, nt)
        n_img, _, h, w = x.shape
        f_total, c_group, _, _ = weight.shape
        ho = (h + 2 * padding - kh) // stride + 1
        wo = (w + 2 * padding - kw) // stride + 1
        f_group = f_total // groups
        f_blocks = (f_group + fpt - 1) // fpt
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * tile + tx
        oh = cuda.blockIdx.y * tile + ty
        ow = cuda.blockIdx.x * tile + tx
        ih0 = cuda.blockIdx.y * tile * stride - padding
        iw0 = cuda.blockIdx.x * tile * stride - padding
        for z in range(cuda.blockIdx.z, n_img * groups * f_blocks, cuda.gridDim.z):
            n = z // (groups * f_blocks)
            g = (z // f_blocks) % groups
            f0 = g * f_group + (z % f_blocks) * fpt
            nf = min(fpt, (g + 1) * f_group - f0)
            for j in range(fpt):
                acc[j] = zero
            for ci in range(c_group):
                c = g * c_group + ci
                # Consecutive threads load consecutive columns: coalesced reads.
                for idx in range(tid, patch_h * patch_w, threads):
                    r = idx // patch_w
                    s = idx - r * patch_w
                    ih = ih0 + r
                    iw = iw0 + s
                    if 0 <= ih < h and 0 <= iw < w:
                        patch[r, s] = x[n, c, ih, iw]
                    else:
                        patch[r, s] = zero
                for idx in range(tid, fpt * kh * kw, threads):
                    j = idx // (kh * kw)
                    a = (idx // kw) % kh
                    b = idx % kw
                    taps[j, a, b] = weight[f0 + j, ci, a, b] if j < nf else zero
                cuda.syncthreads()
                for a in range(kh):
                    for b in range(kw):
                        v = patch[ty * stride + a, tx * stride + b]
                        for j in range(fpt):
                            acc[j] += v * taps[j, a, b]
                cuda.syncthreads()  # the tiles are overwritten by the next channel
            if not pool:
                if oh < ho and ow < wo:
                    for j in range(nf):
                        y[n, f0 + j, oh, ow] = acc[j] + bias[f0 + j]
                continue
            for j in range(nf):
                outs[j, ty, tx] = acc[j] + bias[f0 + j]
            cuda.syncthreads()
            ph = cuda.blockIdx.y * half + ty
            pw = cuda.blockIdx.x * half + tx
            if ty < half and tx < half and ph < ho // 2 and pw < wo // 2:
                for j in range(nf):
                    best = outs[j, 2 * ty, 2 * tx]
                    at = 2 * ph * wo + 2 * pw
                    for a in range(2):
                        for b in range(2):
                            v = outs[j, 2 * ty + a, 2 * tx + b]
                            if v > best or (v != v and best == best):
                                best = v
                                at = (2 * ph + a) * wo + 2 * pw + b
                    if relu and best < 0:
                        best = 0
                    y[n, f0 + j, ph, pw] = best
                    argmax[n, f0 + j, ph, pw] = at
            cuda.syncthreads()  # outs is overwritten by the next z

    return conv2d_forward_kernel


@functools.lru_cache(maxsize=None)
def _make_conv2d_backward_input_kernel(dtype, tile, kh, kw, stride, cpt):
    """``dx`` of a convolution: the transposed convolution, one writer per element.

    Block ``(bx, by, z)`` owns input rows ``by*tile ..``, columns ``bx*tile ..`` of
    image ``n`` and channels ``c0 .. c0+cpt-1`` of one group. For each filter of the
    group it stages the patch of ``dy`` that touches the tile and the filter's taps
    for its channels in shared memory.

    Index arithmetic: input row ``ih`` receives from output row ``oh`` through tap
    ``a`` when ``ih + padding - a == oh * stride``. The lowest output row touching the
    tile is ``oh_lo = ceil((ih0 + padding - kh + 1) / stride)`` and at most
    ``(tile + kh - 2) // stride + 1`` rows do; the patch holds those (zero outside
    ``dy``), and ``t = ih + padding - a - oh_lo * stride`` indexes it when
    ``t >= 0`` and ``t % stride == 0``.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    patch_h = (tile + kh - 2) // stride + 1
    patch_w = (tile + kw - 2) // stride + 1
    threads = tile * tile

    @jit
    def conv2d_backward_input_kernel(dy, weight, padding, groups, dx):
        patch = cuda.shared.array((patch_h, patch_w), nt)
        taps = cuda.shared.array((cpt, kh, kw), nt)
        acc = cuda.local.array(cpt, nt)
        n_img, _, h, w = dx.shape
        f_total, c_group, _, _ = weight.shape
        _, _, ho, wo = dy.shape
        f_group = f_total // groups
        c_blocks = (c_group + cpt - 1) // cpt
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * tile + tx
        ih0 = cuda.blockIdx.y * tile
        iw0 = cuda.blockIdx.x * tile
        ih = ih0 + ty
        iw = iw0 + tx
        oh_lo = -((kh - 1 - ih0 - padding) // stride)  # ceil division, negatives too
        ow_lo = -((kw - 1 - iw0 - padding) // stride)
        for z in range(cuda.blockIdx.z, n_img * groups * c_blocks, cuda.gridDim.z):
            n = z // (groups * c_blocks)
            g = (z // c_blocks) % groups
            cl0 = (z % c_blocks) * cpt  # first channel within the group
            nc = min(cpt, c_group - cl0)
            for j in range(cpt):
                acc[j] = zero
            for fi in range(f_group):
                f = g * f_group + fi
                for idx in range(tid, patch_h * patch_w, threads):
                    r = idx // patch_w
                    s = idx - r * patch_w
                    oh = oh_lo + r
                    ow = ow_lo + s
                    if 0 <= oh < ho and 0 <= ow < wo:
                        patch[r, s] = dy[n, f, oh, ow]
                    else:
                        patch[r, s] = zero
                for idx in range(tid, cpt * kh * kw, threads):
                    j = idx // (kh * kw)
                    a = (idx // kw) % kh
                    b = idx % kw
                    taps[j, a, b] = weight[f, cl0 + j, a, b] if j < nc else zero
                cuda.syncthreads()
                for a in range(kh):
                    th = ih + padding - a - oh_lo * stride
                    if th >= 0 and th % stride == 0:
                        for b in range(kw):
                            tw = iw + padding - b - ow_lo * stride
                            if tw >= 0 and tw % stride == 0:
                                v = patch[th // stride, tw // stride]
                                for j in range(cpt):
                                    acc[j] += v * taps[j, a, b]
                cuda.syncthreads()
            if ih < h and iw < w:
                for j in range(nc):
                    dx[n, g * c_group + cl0 + j, ih, iw] = acc[j]

    return conv2d_backward_input_kernel


@functools.lru_cache(maxsize=None)
def _make_conv2d_backward_weight_kernel(dtype, threads, kh, kw, stride):
    """``dweight`` and ``dbias`` of a convolution: one block per ``(f, c)`` pair owns its
    ``kh x kw`` taps, and the pair ``(f, 0)`` the bias ``f`` too.

    The block's threads stride over the ``N * HO * WO`` output positions (reading
    ``dy`` coalesced), each accumulating all ``kh * kw`` tap sums in registers, plus
    the sum of ``dy`` itself in a last slot (the bias; only the pairs ``(f, 0)``
    store it). One shared-memory tree then reduces every slot at once
    (``log2(threads)`` barriers per pair, not per tap), and the threads write the
    taps (striding, when there are more taps than threads) and the bias: no separate
    launch over ``dy`` for the bias.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    taps = kh * kw
    slots = taps + 1

    @jit
    def conv2d_backward_weight_kernel(dy, x, padding, groups, dweight, dbias):
        scratch = cuda.shared.array((slots, threads), nt)
        acc = cuda.local.array(slots, nt)
        n_img, _, h, w = x.shape
        f_total, c_group, _, _ = dweight.shape
        _, _, ho, wo = dy.shape
        f_group = f_total // groups
        tid = cuda.threadIdx.x
        positions = n_img * ho * wo
        for fc in range(cuda.blockIdx.x, f_total * c_group, cuda.gridDim.x):
            f = fc // c_group
            ci = fc - f * c_group
            c = (f // f_group) * c_group + ci
            for k in range(slots):
                acc[k] = zero
            for p in range(tid, positions, threads):
                n = p // (ho * wo)
                oh = (p // wo) % ho
                ow = p % wo
                g = dy[n, f, oh, ow]
                acc[taps] += g
                for a in range(kh):
                    ih = oh * stride - padding + a
                    if 0 <= ih < h:
                        for b in range(kw):
                            iw = ow * stride - padding + b
                            if 0 <= iw < w:
                                acc[a * kw + b] += g * x[n, c, ih, iw]
            for k in range(slots):
                scratch[k, tid] = acc[k]
            cuda.syncthreads()
            half = threads // 2
            while half > 0:
                if tid < half:
                    for k in range(slots):
                        scratch[k, tid] += scratch[k, tid + half]
                cuda.syncthreads()
                half //= 2
            # A kernel can have more taps than the block has threads (7x7: 49 > 32).
            for k in range(tid, taps, threads):
                dweight[f, ci, k // kw, k % kw] = scratch[k, 0]
            if tid == 0 and ci == 0:
                dbias[f] = scratch[taps, 0]
            cuda.syncthreads()  # scratch is reused by the next pair

    return conv2d_backward_weight_kernel


def _weight_grad_threads(taps, itemsize):
    """Threads of the weight-gradient kernel: its ``(taps, threads)`` scratch fits 32 KiB."""
    threads = _reduction_threads()
    while threads > 1 and taps * threads * itemsize > 32 * 1024:
        threads //= 2
    return threads


def _grid_tiles(rows, cols, depth, tile):
    return (_cdiv(cols, tile), _cdiv(rows, tile), max(1, min(depth, _MAX_GRID_Z))), (tile, tile)


def conv2d_forward(x, weight, bias, stride, padding, groups):
    """2-D cross-correlation with stride, zero padding and groups (see ``numpy_ref``).

    Parameters
    ----------
    x : device array, shape (N, C, H, W), float32 or float64
    weight : device array, shape (F, C/groups, KH, KW), same dtype
    bias : device array, shape (F,), or None
    stride, padding, groups : int

    Returns
    -------
    y : device array, shape (N, F, HO, WO), dtype of ``x``
        ``HO = (H + 2*padding - KH) // stride + 1``, likewise ``WO``.
    """
    x, weight = _dev(x), _dev(weight)
    return _conv2d(x, weight, bias, int(stride), int(padding), int(groups), False, False)[0]


def _conv2d(x, weight, bias, stride, padding, groups, pool, relu):
    """One launch of :func:`_make_conv2d_forward_kernel`: ``(y, argmax)``, with ``y`` the
    convolution's output, or with ``pool`` its 2x2 pooling (ReLU'd with ``relu``) and
    ``argmax`` the pooling's (else None)."""
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    y = _empty((n, f, ho // 2, wo // 2) if pool else (n, f, ho, wo), dtype=x.dtype)
    argmax = _empty(y.shape, dtype=np.int32) if pool else None
    if y.size == 0:
        return y, argmax
    fpt = min(_CONV_OUTPUTS_PER_THREAD, f // groups)
    tile = _tile()
    kernel = _make_conv2d_forward_kernel(x.dtype.str, tile, kh, kw, stride, fpt, pool, relu)
    grid = _grid_tiles(ho, wo, n * groups * _cdiv(f // groups, fpt), tile)
    kernel[grid](x, weight, _zero_bias(bias, f, x.dtype), padding, groups, y,
                 argmax if pool else y)
    return y, argmax


def conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dy : device array, shape (N, F, HO, WO)
    x : device array, shape (N, C, H, W)
    weight : device array, shape (F, C/groups, KH, KW)
    stride, padding, groups : int
    input_grad : bool, default True
        False skips ``dx`` (returned as None): a network's input needs no gradient.

    Returns
    -------
    dx : device array, shape (N, C, H, W), or None
    dweight : device array, shape (F, C/groups, KH, KW)
    dbias : device array, shape (F,)
    """
    dy, x, weight = _dev(dy), _dev(x), _dev(weight)
    stride, padding, groups = int(stride), int(padding), int(groups)
    n, c, h, w = x.shape
    f, c_group, kh, kw = weight.shape
    if dy.size == 0:  # an empty batch: zero gradients (and no zero-sized launches)
        dx = _zeros(x.shape, dy.dtype) if input_grad else None
        return dx, _zeros(weight.shape, dy.dtype), _zeros((f,), dy.dtype)
    dtype = dy.dtype.str
    dx = None
    dweight = _empty(weight.shape, dtype=dy.dtype)
    dbias = _empty((f,), dtype=dy.dtype)

    if input_grad:
        dx = _empty(x.shape, dtype=dy.dtype)
        tile = _tile()
        cpt = min(_CONV_OUTPUTS_PER_THREAD, c_group)
        kernel = _make_conv2d_backward_input_kernel(dtype, tile, kh, kw, stride, cpt)
        kernel[_grid_tiles(h, w, n * groups * _cdiv(c_group, cpt), tile)](
            dy, weight, padding, groups, dx
        )

    threads = _weight_grad_threads(kh * kw + 1, dy.dtype.itemsize)
    blocks = min(f * c_group, int(config.CUDA_MAX_BLOCKS))
    kernel = _make_conv2d_backward_weight_kernel(dtype, threads, kh, kw, stride)
    kernel[blocks, threads](dy, x, padding, groups, dweight, dbias)
    return dx, dweight, dbias
