"""The ``"cuda"`` target: ``numba.cuda`` kernels and their launch wrappers.

Every public function has the signature of its twin in :mod:`.numpy_ref` (the
reference and test oracle) and takes and returns numba device arrays; a host
``np.ndarray`` given as a read-only input is copied to the device first. A public
function validates nothing (the layers do), takes its outputs from a pool of
device arrays reused across calls (:func:`_empty`) and launches one or more
``_name_kernel`` kernels. Nothing comes back to the host except the loss value
(one scalar copy per loss call).

Launch shapes are read from :mod:`jitnet.config` at every call, never inside a
kernel, so tests can patch them tiny:

- element-wise kernels are 1-D grid-stride loops of ``CUDA_THREADS_PER_BLOCK``
  threads over at most ``CUDA_MAX_BLOCKS`` blocks;
- convolution and matmul use square ``CUDA_TILE x CUDA_TILE`` blocks with
  shared-memory tiles of the input and the weights, several outputs per thread;
- reductions (bias and weight gradients, batch-norm statistics, loss sums) give
  each output one block that sums in shared memory with a fixed tree (or one
  thread, for the short column sums of a linear layer's bias gradient), so every
  output element has exactly one writer and results are reproducible;
- bias adds are fused into the epilogues of the convolution and matmul kernels.

Kernels that need shared or local arrays (whose shapes and dtype must be
compile-time constants) are built by ``_make_*`` factories, cached per dtype and
launch shape for the process: the CUDA analogue of a C++ template instantiation.
Module-level kernels are also cached on disk (``cache=True``).

The only atomics are in :func:`maxpool2d_backward`: its signature does not carry
the window size, so each upstream gradient is added at its recorded argmax.
Windows do not overlap in the usual ``stride == kernel_size`` case, so the adds
never contend there.

All ``numba.cuda`` imports of jitnet live in this module. With
``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator (slowly, as
Python threads), which is how CI tests them.
"""

import collections
import contextlib
import functools
import importlib.metadata
import math
import sys

import numba
import numpy as np
from numba import cuda

from .. import config
from . import conv_pool_backward_calls
from .pool import ArrayPool

#: True when ``NUMBA_ENABLE_CUDASIM=1`` replaced the GPU by Numba's simulator.
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

_UINT64_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 2.0**-53

#: Output channels per thread of the convolution kernels (and input channels per
#: thread in the data-gradient kernel): each input value read from shared memory
#: feeds this many accumulators.
_CONV_OUTPUTS_PER_THREAD = 4

#: Rows of C per thread in the matmul kernel (register blocking).
_MATMUL_ROWS_PER_THREAD = 4

#: Largest grid dimension z (the CUDA limit); bigger (n, filter) counts loop.
_MAX_GRID_Z = 65535


# --------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------


def _one_line(text):
    return " ".join(str(text).split())


def unavailable_reason():
    """``None`` when kernels can run here, else a sentence saying why not and what to do.

    Never raises. The simulator (``NUMBA_ENABLE_CUDASIM=1``) always counts as usable.
    """
    if SIMULATOR:
        return None
    fix = (
        "use a machine with an NVIDIA GPU and driver, or set NUMBA_ENABLE_CUDASIM=1 "
        "(before starting Python) to run the cuda target in Numba's slow simulator"
    )
    try:
        error = cuda.cuda_error()
        if error is not None:
            return f"the CUDA driver could not be initialised ({_one_line(error)}); {fix}"
        if len(cuda.gpus) == 0:
            return f"the CUDA driver found no GPU; {fix}"
        if not cuda.is_available():
            return (
                "NVVM, the CUDA compiler library numba-cuda needs, was not found; install "
                "the CUDA toolkit wheels with `pip install 'numba-cuda[cu12]'` (or cu13)"
            )
    except Exception as exc:  # any failure to query CUDA means "unusable", not a crash
        return f"querying CUDA failed ({_one_line(exc)}); {fix}"
    return None


def device_info():
    """What ``jitnet info`` prints about the CUDA device; never raises.

    Returns
    -------
    dict
        ``available``, ``reason`` (None when available), ``simulator``,
        ``numba_cuda_version``, and when a device is usable ``name``,
        ``compute_capability``, ``driver_version``, ``runtime_version``.
    """
    reason = unavailable_reason()
    info = {"available": reason is None, "reason": reason, "simulator": SIMULATOR}
    try:
        info["numba_cuda_version"] = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        info["numba_cuda_version"] = None
    if reason is not None:
        return info
    if SIMULATOR:
        info.update(name="Numba CUDA simulator", compute_capability=None)
        info.update(driver_version=None, runtime_version=None)
        return info
    queries = {
        "name": lambda: _decode(cuda.get_current_device().name),
        "compute_capability": lambda: tuple(cuda.get_current_device().compute_capability),
        "driver_version": lambda: tuple(cuda.cudadrv.driver.driver.get_version()),
        "runtime_version": lambda: tuple(cuda.runtime.get_version()),
    }
    for key, query in queries.items():
        try:
            info[key] = query()
        except Exception:  # a field we cannot read is reported as unknown
            info[key] = None
    return info


def _decode(name):
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize():
    """Wait until every launched kernel has finished.

    Kernel launches return before the kernel runs; benchmarks call this before
    stopping a timer. (Training needs no explicit call: reading the loss value
    back waits for the step's kernels.)
    """
    cuda.synchronize()


@contextlib.contextmanager
def intercept_launches(on_launch):
    """Call ``on_launch(name)`` at each kernel launch made inside the ``with`` block.

    ``name`` is the kernel's Python name; the launch runs when ``on_launch`` returns
    true and is skipped otherwise (``benchmarks/bench_cuda_host.py`` skips them all to
    time jitnet's own host work under the simulator). It patches Numba's launch entry
    point (``_LaunchConfiguration.__call__`` on a GPU, the simulator's
    ``FakeCUDAKernel.__call__``) for the duration, and so sees every launch in the
    process meanwhile, jitnet's or not; device functions, and calls from a running
    kernel in the simulator, are not launches.
    """
    if SIMULATOR:
        from numba.cuda.simulator import kernel as simulator

        launcher = simulator.FakeCUDAKernel

        def name_of(kernel):
            launch = not kernel._device and simulator._kernel_context is None
            return kernel.fn.__name__ if launch else None
    else:
        from numba.cuda.dispatcher import _LaunchConfiguration as launcher

        def name_of(launch):
            return launch.dispatcher.py_func.__name__

    original = launcher.__call__

    def intercepted(self, *args):
        name = name_of(self)
        if name is None or on_launch(name):
            return original(self, *args)
        return None

    launcher.__call__ = intercepted
    try:
        yield
    finally:
        launcher.__call__ = original


@contextlib.contextmanager
def count_launches():
    """Count the kernel launches made inside the ``with`` block.

    Yields a ``collections.Counter`` that maps each kernel's name to its number of
    launches (``sum(counter.values())`` is the total). A small network on a big GPU
    is launch-bound: this is how benchmarks count the launches of a training step.
    Every launch in the process meanwhile counts (:func:`intercept_launches`).
    """
    counter = collections.Counter()

    def count(name):
        counter[name] += 1
        return True

    with intercept_launches(count):
        yield counter


# --------------------------------------------------------------------------------------
# launch shapes (read from config at every call, so tests can patch them)
# --------------------------------------------------------------------------------------


def _grid_1d(n):
    """``(blocks, threads)`` for a 1-D grid-stride loop over ``n`` items."""
    threads = int(config.CUDA_THREADS_PER_BLOCK)
    blocks = min(max(1, -(-n // threads)), int(config.CUDA_MAX_BLOCKS))
    return blocks, threads


def _reduction_threads():
    """Threads per block of a shared-memory tree reduction: a power of two."""
    return 1 << (max(1, int(config.CUDA_THREADS_PER_BLOCK)).bit_length() - 1)


def _tile():
    """Side of the square tiles; at most 32, as a block holds at most 1024 threads."""
    return min(32, max(1, int(config.CUDA_TILE)))


def _numba_type(dtype):
    return numba.from_dtype(np.dtype(dtype))


def _cdiv(a, b):
    return -(-a // b)


# --------------------------------------------------------------------------------------
# arrays of the target
# --------------------------------------------------------------------------------------


def _is_device(a):
    return hasattr(a, "copy_to_host")


@cuda.jit(cache=True)
def _cast_kernel(src, dst):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dst.size, step):
        dst[i] = src[i]


@cuda.jit(cache=True)
def _fill_kernel(dst, value):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dst.size, step):
        dst[i] = value


def _flat(a):
    """The 1-D view of a C-contiguous device array (element-wise kernels index flat);
    a 1-D array itself (numba-cuda's ``reshape`` builds a new array object even to the
    same shape, and the optimizer flattens every bias each step)."""
    if not a.is_c_contiguous():
        raise ValueError(
            f"cuda kernels expected a C-contiguous device array, got strides {a.strides} "
            f"for shape {a.shape}; make a contiguous copy first"
        )
    return a if a.ndim == 1 else a.reshape(a.size)


def asarray(a, dtype=None):
    """``a`` as a C-contiguous device array (of ``dtype`` when given).

    Parameters
    ----------
    a : array_like or device array
        A device array passes through as it is (cast into a new array on the device
        when ``dtype`` differs); anything else is copied to the device.
    dtype : dtype, optional
        Wanted dtype; by default the dtype of ``a`` is kept.

    Returns
    -------
    numba device array
    """
    if _is_device(a):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        out = _empty(a.shape, a.dtype if dtype is None else dtype)
        if out.size:
            _cast_kernel[_grid_1d(out.size)](_flat(a), _flat(out))
        return out
    return _to_device(np.asarray(a, dtype=dtype, order="C"))  # 0-d stays 0-d


def _dev(a):
    """A read-only input as a device array (host arrays are copied over once)."""
    return a if _is_device(a) else _to_device(np.asarray(a, order="C"))


def _to_device(host):
    """A copy of the C-contiguous ``host`` array in a pooled device array."""
    if not host.size:
        return cuda.to_device(host)
    out = _empty(host.shape, host.dtype)
    # flat on both sides: the simulator's copy mishandles the strides NumPy may give
    # a dimension of length 1
    _flat(out).copy_to_device(host.reshape(host.size))
    return out


def to_numpy(a):
    """A device array copied to the host as ``np.ndarray`` (host arrays pass through)."""
    return a.copy_to_host() if _is_device(a) else np.asarray(a)


def empty(shape, dtype):
    """An uninitialised device array of ``shape`` and ``dtype``."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    """A device array of zeros of ``shape`` and ``dtype`` (filled by a kernel)."""
    return fill_zeros(cuda.device_array(shape, dtype=np.dtype(dtype)))


def fill_zeros(out):
    """Fill the C-contiguous device array ``out`` with zeros in place (one launch); ``out``.

    Not part of the kernel contract: :func:`zeros` and the pool's arrays use it, and
    ``zero_grad(set_to_none=False)`` for gradients already on the device."""
    if out.size:
        _fill_kernel[_grid_1d(out.size)](_flat(out), out.dtype.type(0))
    return out


def _memory_shared(a):
    """True while something besides the device array ``a`` itself refers to its memory.

    A device array's views (``reshape``, slices) hold its memory, not the array
    object, so the pool's reference count of ``a`` cannot see them. numba-cuda
    counts them on the allocation (``refct``, one per owning pointer; a reshape
    shares ``a``'s pointer object); the simulator's views are NumPy views of the
    array it wraps. Memory this cannot account for counts as shared (never reused).
    """
    if SIMULATOR:
        return sys.getrefcount(a._ary) > 2  # a's attribute and the argument
    data = a.gpu_data
    base = getattr(data, "_mem", None)
    # references to data: a's attribute, the local name, getrefcount's argument
    return base is None or sys.getrefcount(data) > 3 or base.refct > 1


# Every wrapper output and host copy comes from here. A fresh device array is a
# cuMemAlloc, and numba-cuda's deferred frees call cuMemFree, which can wait for the
# device; a training step reuses the same shapes every time. Kernels run in the order
# they are launched (one stream), so memory handed out again is written only after
# the kernels that read it before have finished.
_POOL = ArrayPool(lambda shape, dtype: cuda.device_array(shape, dtype=dtype), min_bytes=1,
                  shared=_memory_shared)


@functools.cache
def _pool_usable():
    """The simulator, or numba-cuda's own allocator, whose counts :func:`_memory_shared`
    reads. An allocator plugged in by the user (RMM, say) pools memory itself."""
    if SIMULATOR:
        return True
    from numba.cuda.cudadrv.driver import NumbaCUDAMemoryManager

    return type(cuda.current_context().memory_manager) is NumbaCUDAMemoryManager


def _empty(shape, dtype):
    """An uninitialised device array from the pool, reused once no one holds it."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not _pool_usable():
        return cuda.device_array(shape, dtype=np.dtype(dtype))
    return _POOL.empty(shape, dtype)


def _zeros(shape, dtype):
    """:func:`_empty` filled with zeros by a kernel."""
    return fill_zeros(_empty(shape, dtype))


def _zero_bias(bias, length, dtype):
    """``bias`` on the device, or zeros when it is None (one kernel handles both)."""
    return _zeros((length,), dtype) if bias is None else _dev(bias)


# --------------------------------------------------------------------------------------
# shared-memory block reduction (device function factory)
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _make_block_sum(threads):
    """A device function summing one value per thread of a ``threads``-thread block.

    Every thread of the block must call it (it synchronises) with the same shared
    scratch array of at least ``threads`` elements; every thread gets the total. The
    tree is fixed, so the sum is reproducible.
    """

    @cuda.jit(device=True)
    def block_sum(scratch, tid, value):
        scratch[tid] = value
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if tid < half:
                scratch[tid] += scratch[tid + half]
            cuda.syncthreads()
            half //= 2
        total = scratch[0]
        cuda.syncthreads()  # all have read scratch[0] before it is reused
        return total

    return block_sum


@functools.lru_cache(maxsize=None)
def _make_sum_kernel(threads):
    """One block sums a flat float64 array into ``out[0] * scale`` (loss values)."""
    block_sum = _make_block_sum(threads)

    @cuda.jit
    def sum_kernel(values, scale, out):
        scratch = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        acc = 0.0
        for i in range(tid, values.size, threads):
            acc += values[i]
        total = block_sum(scratch, tid, acc)
        if tid == 0:
            out[0] = total * scale

    return sum_kernel


def _mean_to_host(values):
    """Mean of a flat float64 device array as a Python float: the one host copy."""
    threads = _reduction_threads()
    out = _empty(1, np.float64)
    _make_sum_kernel(threads)[1, threads](values, 1.0 / max(values.size, 1), out)
    return float(out.copy_to_host()[0])


# --------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------


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

    @cuda.jit
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

    @cuda.jit
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

    @cuda.jit
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


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _nchw(i, channels, h, w):
    """The ``(n, c, row, column)`` of flat index ``i`` into a C-contiguous NCHW array."""
    return i // (w * h * channels), (i // (w * h)) % channels, (i // w) % h, i % w


@cuda.jit(device=True, cache=True)
def _takes(v, best):
    """Whether window value ``v`` replaces the maximum so far: strictly greater, so the
    first maximum wins; the first NaN wins over any number (np.argmax's rule), so NaN
    propagates."""
    return v > best or (v != v and best == best)


@cuda.jit(cache=True)
def _maxpool2d_forward_kernel(x, k, stride, relu, y, argmax):
    # One thread per output element (grid-stride); it owns y and argmax there. With
    # relu, the maximum leaves through a ReLU (relu_forward's rule), argmax unchanged.
    _, channels, h, w = x.shape
    _, _, ho, wo = y.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        h0 = oh * stride
        w0 = ow * stride
        best = x[n, c, h0, w0]
        best_at = h0 * w + w0
        for a in range(k):
            for b in range(k):
                v = x[n, c, h0 + a, w0 + b]
                if _takes(v, best):
                    best = v
                    best_at = (h0 + a) * w + w0 + b
        if relu and best < 0:
            best = 0
        y[n, c, oh, ow] = best
        argmax[n, c, oh, ow] = best_at


@cuda.jit(cache=True)
def _maxpool2d_backward_kernel(dy, argmax, plane, dx_flat):
    # Scatter: dx_flat must start at zero. Overlapping windows (stride < kernel)
    # can send two gradients to the same input, hence the atomic add.
    _, channels, ho, wo = dy.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        nc = n * channels + c
        cuda.atomic.add(dx_flat, nc * plane + argmax[n, c, oh, ow], dy[n, c, oh, ow])


def maxpool2d_forward(x, kernel_size, stride):
    """Max pooling over square windows, no padding (see ``numpy_ref``).

    Parameters
    ----------
    x : device array, shape (N, C, H, W)
    kernel_size, stride : int

    Returns
    -------
    y : device array, shape (N, C, HO, WO), dtype of ``x``
        ``HO = (H - kernel_size) // stride + 1``, likewise ``WO``.
    argmax : device array, shape (N, C, HO, WO), int32
        Flat index ``h * W + w`` into the plane ``x[n, c]``; first maximum wins, NaN wins.
    """
    return _maxpool2d(_dev(x), int(kernel_size), int(stride), False)


def _pool_outputs(x, k, stride):
    """Fresh ``(y, argmax)`` for a ``k x k`` pooling of ``x`` with ``stride``."""
    n, c, h, w = x.shape
    shape = (n, c, (h - k) // stride + 1, (w - k) // stride + 1)
    return _empty(shape, dtype=x.dtype), _empty(shape, dtype=np.int32)


def _maxpool2d(x, k, stride, relu):
    y, argmax = _pool_outputs(x, k, stride)
    if y.size:
        _maxpool2d_forward_kernel[_grid_1d(y.size)](x, k, stride, relu, y, argmax)
    return y, argmax


def conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False):
    """:func:`conv2d_forward`, then :func:`maxpool2d_forward`, then with ``relu``
    :func:`relu_forward`: for 2x2 pooling (stride 2) one launch, the convolution
    kernel pooling its own block of outputs (see :func:`_make_conv2d_forward_kernel`);
    otherwise two, the ReLU inside the pooling's."""
    x, weight = _dev(x), _dev(weight)
    stride, padding, groups = int(stride), int(padding), int(groups)
    if int(pool_size) == int(pool_stride) == 2 and _tile() % 2 == 0:
        return _conv2d(x, weight, bias, stride, padding, groups, True, bool(relu))
    y = _conv2d(x, weight, bias, stride, padding, groups, False, False)[0]
    return _maxpool2d(y, int(pool_size), int(pool_stride), bool(relu))


@cuda.jit(cache=True)
def _maxpool2d_backward_gather_kernel(dy, argmax, k, stride, relu, relu_y, dx):
    # Windows that do not overlap (k <= stride): one thread per input element (grid-
    # stride) takes the gradient of the one window holding it, if it won there, else
    # 0. Every element is written once, so neither a zero fill nor atomics. With
    # relu, also 0 where relu_y (a ReLU's output after the pooling) is not positive:
    # that ReLU's backward, without its own launch.
    _, channels, h, w = dx.shape
    _, _, ho, wo = dy.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dx.size, step):
        n, c, ih, iw = _nchw(i, channels, h, w)
        oh = ih // stride
        ow = iw // stride
        inside = oh < ho and ow < wo and ih - oh * stride < k and iw - ow * stride < k
        if inside and argmax[n, c, oh, ow] == ih * w + iw and (
            not relu or relu_y[n, c, oh, ow] > 0
        ):
            dx[n, c, ih, iw] = dy[n, c, oh, ow]
        else:
            dx[n, c, ih, iw] = 0


def maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None):
    """Route each upstream gradient to its window's maximum.

    Parameters
    ----------
    dy : device array, shape (N, C, HO, WO)
    argmax : device array, shape (N, C, HO, WO), int32
    x_shape : tuple of int
        ``(N, C, H, W)``.
    kernel_size, stride : int, optional
        The forward's window. Given, and with windows that do not overlap
        (``kernel_size <= stride``, as ``nn.MaxPool2d`` passes for the reference
        net), ``dx`` takes one launch that writes each element once; otherwise a
        zero fill and an atomic scatter.

    Returns
    -------
    dx : device array, shape ``x_shape``, dtype of ``dy``
    """
    dy, argmax = _dev(dy), _dev(argmax)
    if _gather_pays(kernel_size, stride):
        return _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, None)
    x_shape = tuple(int(s) for s in x_shape)
    dx = _zeros(x_shape, dy.dtype)
    if dy.size:
        plane = x_shape[2] * x_shape[3]
        _maxpool2d_backward_kernel[_grid_1d(dy.size)](dy, argmax, plane, _flat(dx))
    return dx


def _gather_pays(kernel_size, stride):
    """The one-launch gather needs the window and windows that do not overlap."""
    return kernel_size is not None and stride is not None and int(kernel_size) <= int(stride)


def _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, relu_y):
    """The gather launch; ``relu_y`` None, or the output of a ReLU after the pooling."""
    dx = _empty(tuple(int(s) for s in x_shape), dtype=dy.dtype)
    if dx.size:
        relu = relu_y is not None
        _maxpool2d_backward_gather_kernel[_grid_1d(dx.size)](
            dy, argmax, int(kernel_size), int(stride), relu, relu_y if relu else dy, dx
        )
    return dx


def maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None):
    """:func:`relu_backward` (``y`` the ReLU's output) then :func:`maxpool2d_backward`:
    one launch where the gather applies (the ReLU's mask read as the gradient is
    routed), else the two."""
    dy, y, argmax = _dev(dy), _dev(y), _dev(argmax)
    if _gather_pays(kernel_size, stride):
        return _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, y)
    return maxpool2d_backward(relu_backward(dy, y), argmax, x_shape, kernel_size, stride)


def conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None):
    """:func:`maxpool2d_backward` (with ``relu_y``, :func:`maxpool2d_relu_backward`)
    then :func:`conv2d_backward`: their launches in turn, bit for bit."""
    return conv_pool_backward_calls(sys.modules[__name__], dy, x, weight, argmax, stride,
                                    padding, groups, pool_size, pool_stride, input_grad, relu_y)


# --------------------------------------------------------------------------------------
# fully connected and maxout: one tiled matmul kernel
# --------------------------------------------------------------------------------------


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

    @cuda.jit
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
    if c.size == 0 or n_k == 0:
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
    grid = (_cdiv(n_j, tile), _cdiv(n_i, tile * rpt))
    kernel[grid, (tile, tile)](a, b, _dev(bias) if with_bias else c, c,
                               row_sums if with_row_sums else c,
                               c if gate is None else _dev(gate))
    return c


@cuda.jit(cache=True)
def _broadcast_rows_kernel(row, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = row[i % row.size]


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


@cuda.jit(cache=True)
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


@cuda.jit(cache=True)
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


# --------------------------------------------------------------------------------------
# element-wise activations: one thread per element (grid-stride), flat indexing
# --------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def _relu_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = 0 if v < 0 else v  # NaN fails the test and propagates


@cuda.jit(cache=True)
def _relu_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if y[i] > 0 else 0


@cuda.jit(cache=True)
def _leaky_relu_forward_kernel(x, slope, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = v if v > 0 else v * slope


@cuda.jit(cache=True)
def _leaky_relu_backward_kernel(dy, x, slope, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@cuda.jit(device=True)
def _sigmoid(v):
    e = math.exp(-abs(v))  # in (0, 1]: never overflows
    return 1 / (1 + e) if v >= 0 else e / (1 + e)


@cuda.jit(cache=True)
def _sigmoid_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        y[i] = _sigmoid(x[i])


@cuda.jit(cache=True)
def _sigmoid_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] * y[i] * (1 - y[i])


@cuda.jit(cache=True)
def _tanh_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        y[i] = math.tanh(x[i])


@cuda.jit(cache=True)
def _tanh_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] * (1 - y[i] * y[i])


@cuda.jit(cache=True)
def _elu_forward_kernel(x, alpha, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = v if v > 0 else alpha * math.expm1(v)


@cuda.jit(cache=True)
def _elu_backward_kernel(dy, x, y, alpha, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * alpha * math.exp(x[i])


def _map(kernel, inputs, scalars=()):
    """Launch element-wise ``kernel(*flat inputs, *scalars, flat out)``; out like inputs[0]."""
    inputs = [_dev(a) for a in inputs]
    out = _empty(inputs[0].shape, dtype=inputs[0].dtype)
    if out.size:
        scalars = [inputs[0].dtype.type(s) for s in scalars]  # keep float32 in float32
        kernel[_grid_1d(out.size)](*[_flat(a) for a in inputs], *scalars, _flat(out))
    return out


def relu_forward(x):
    """``max(x, 0)`` element-wise; NaN stays NaN. ``x``: device array, any shape."""
    return _map(_relu_forward_kernel, [x])


def relu_backward(dy, y):
    """``dy`` where the forward output ``y > 0``, else 0."""
    return _map(_relu_backward_kernel, [dy, y])


def leaky_relu_forward(x, negative_slope):
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return _map(_leaky_relu_forward_kernel, [x], [negative_slope])


def leaky_relu_backward(dy, x, negative_slope):
    """``dy`` where the forward input ``x > 0``, else ``negative_slope * dy``."""
    return _map(_leaky_relu_backward_kernel, [dy, x], [negative_slope])


def sigmoid_forward(x):
    """Logistic sigmoid, without overflow for large ``|x|``."""
    return _map(_sigmoid_forward_kernel, [x])


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)`` with ``y`` the forward output."""
    return _map(_sigmoid_backward_kernel, [dy, y])


def tanh_forward(x):
    """Hyperbolic tangent."""
    return _map(_tanh_forward_kernel, [x])


def tanh_backward(dy, y):
    """``dy * (1 - y**2)`` with ``y`` the forward output."""
    return _map(_tanh_backward_kernel, [dy, y])


def elu_forward(x, alpha):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return _map(_elu_forward_kernel, [x], [alpha])


def elu_backward(dy, x, y, alpha):
    """``dy`` where ``x > 0``, else ``dy * alpha * exp(x)``."""
    return _map(_elu_backward_kernel, [dy, x, y], [alpha])


# --------------------------------------------------------------------------------------
# dropout: splitmix64 of the flat index, bit for bit the formula of numpy_ref
# --------------------------------------------------------------------------------------

if SIMULATOR:
    # The simulator runs kernels as Python on NumPy scalars, where uint64 overflow
    # wraps too but warns; exact Python integers avoid the warnings.
    @cuda.jit(device=True)
    def _wrapping_mul(a, b):
        return np.uint64((int(a) * int(b)) & _UINT64_MASK)

    @cuda.jit(device=True)
    def _wrapping_add(a, b):
        return np.uint64((int(a) + int(b)) & _UINT64_MASK)

else:
    # On the device uint64 arithmetic wraps modulo 2**64, as splitmix64 wants.
    @cuda.jit(device=True)
    def _wrapping_mul(a, b):
        return a * b

    @cuda.jit(device=True)
    def _wrapping_add(a, b):
        return a + b


@cuda.jit(device=True)
def _dropout_uniform(seed, i):
    """Uniform float64 in [0, 1) of flat index ``i``: splitmix64 of ``seed`` and ``i``."""
    z = _wrapping_add(seed, _wrapping_mul(np.uint64(i + 1), _GOLDEN))
    z = _wrapping_mul(z ^ (z >> np.uint64(30)), _MIX1)
    z = _wrapping_mul(z ^ (z >> np.uint64(27)), _MIX2)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * _TWO_POW_M53


@cuda.jit(cache=True)
def _dropout_forward_kernel(x, seed, p, scale, y, mask):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        mask[i] = scale if _dropout_uniform(seed, i) >= p else 0
        y[i] = x[i] * mask[i]  # the stored (rounded) mask, as numpy_ref multiplies


@cuda.jit(cache=True)
def _multiply_kernel(a, b, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, a.size, step):
        out[i] = a[i] * b[i]


def dropout_forward(x, p, seed):
    """Inverted dropout; the mask equals ``numpy_ref``'s bit for bit for the same seed.

    Parameters
    ----------
    x : device array, any shape, float32 or float64
    p : float
        Drop probability in ``[0, 1]``.
    seed : int
        In ``[0, 2**63)``.

    Returns
    -------
    y : device array, shape of ``x``
        ``x * mask``.
    mask : device array, shape of ``x``, dtype of ``x``
        ``1 / (1 - p)`` where kept (``u >= p``), 0 where dropped.

    Notes
    -----
    Thread ``i`` computes the splitmix64 uniform ``u`` of flat index ``i`` (see
    ``numpy_ref.dropout_forward`` for the formula): the mask does not depend on the
    launch shape.
    """
    x = _dev(x)
    p = float(p)
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    y = _empty(x.shape, dtype=x.dtype)
    mask = _empty(x.shape, dtype=x.dtype)
    if x.size:
        seed = np.uint64(int(seed) & _UINT64_MASK)
        _dropout_forward_kernel[_grid_1d(x.size)](
            _flat(x), seed, p, x.dtype.type(scale), _flat(y), _flat(mask)
        )
    return y, mask


def dropout_backward(dy, mask):
    """``dy * mask``, with ``mask`` from :func:`dropout_forward`."""
    return _map(_multiply_kernel, [dy, mask])


# --------------------------------------------------------------------------------------
# batch normalisation: per-channel statistics in one block each, then element-wise
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _make_batchnorm_stats_kernel(dtype, threads):
    """Batch mean and ``1/sqrt(var + eps)`` per channel, and the running statistics.

    One block per channel (grid-stride over channels): a first pass sums ``x`` for
    the mean, a second sums squared deviations (two passes are more exact than
    ``E[x^2] - E[x]^2`` in float32). Thread 0 writes the channel's outputs.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    block_sum = _make_block_sum(threads)

    @cuda.jit
    def batchnorm_stats_kernel(
        x, eps, keep, mean_rate, var_rate, running_mean, running_var, mean, invstd
    ):
        scratch = cuda.shared.array(threads, nt)
        n_img, channels, h, w = x.shape
        count = n_img * h * w
        tid = cuda.threadIdx.x
        for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
            acc = zero
            for p in range(tid, count, threads):
                acc += x[p // (h * w), c, (p // w) % h, p % w]
            mu = block_sum(scratch, tid, acc) / count
            acc = zero
            for p in range(tid, count, threads):
                d = x[p // (h * w), c, (p // w) % h, p % w] - mu
                acc += d * d
            var = block_sum(scratch, tid, acc) / count
            if tid == 0:
                mean[c] = mu
                invstd[c] = 1 / math.sqrt(var + eps)
                running_mean[c] = running_mean[c] * keep + mean_rate * mu
                running_var[c] = running_var[c] * keep + var_rate * var

    return batchnorm_stats_kernel


@cuda.jit(cache=True)
def _batchnorm_eval_stats_kernel(running_mean, running_var, eps, mean, invstd):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for c in range(start, mean.size, step):
        mean[c] = running_mean[c]
        invstd[c] = 1 / math.sqrt(running_var[c] + eps)


@cuda.jit(device=True, cache=True)
def _bn_affine(weight, bias, mean, invstd, c):
    """Channel ``c``'s ``(scale, shift)``: a batch norm maps ``x`` to ``x * scale + shift``."""
    scale = weight[c] * invstd[c]
    return scale, bias[c] - mean[c] * weight[c] * invstd[c]


@cuda.jit(device=True, cache=True)
def _bn_value(v, scale, shift):
    return v * scale + shift


@cuda.jit(cache=True)
def _batchnorm_apply_kernel(x, weight, bias, mean, invstd, y):
    # One thread per element; channel c = (i // (H*W)) % C of the flat NCHW index.
    _, channels, h, w = x.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        n, c, r, s = _nchw(i, channels, h, w)
        scale, shift = _bn_affine(weight, bias, mean, invstd, c)
        y[n, c, r, s] = _bn_value(x[n, c, r, s], scale, shift)


@cuda.jit(cache=True)
def _batchnorm_maxpool2d_kernel(x, weight, bias, mean, invstd, k, stride, relu, y, argmax):
    # _batchnorm_apply_kernel then _maxpool2d_forward_kernel in one launch: each thread
    # normalises its window's values as it reads them, by the same device functions
    # (so the same bits), and the normalised images are never stored.
    _, channels, h, w = x.shape
    _, _, ho, wo = y.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        scale, shift = _bn_affine(weight, bias, mean, invstd, c)
        h0 = oh * stride
        w0 = ow * stride
        best = _bn_value(x[n, c, h0, w0], scale, shift)
        best_at = h0 * w + w0
        for a in range(k):
            for b in range(k):
                v = _bn_value(x[n, c, h0 + a, w0 + b], scale, shift)
                if _takes(v, best):
                    best = v
                    best_at = (h0 + a) * w + w0 + b
        if relu and best < 0:
            best = 0
        y[n, c, oh, ow] = best
        argmax[n, c, oh, ow] = best_at


def batchnorm2d_maxpool2d_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                                  training, pool_size, pool_stride, relu=False):
    """:func:`batchnorm2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward`), bit for bit; ``(y, argmax, mean, invstd)``. Two launches:
    the statistics, then one thread per pooled element that normalises its window as
    it reads it (:func:`_batchnorm_maxpool2d_kernel`), so the normalised images are
    neither written nor read back."""
    x, weight, bias = _dev(x), _dev(weight), _dev(bias)
    mean, invstd = _batchnorm_statistics(x, running_mean, running_var, momentum, eps,
                                         training)
    k, stride = int(pool_size), int(pool_stride)
    y, argmax = _pool_outputs(x, k, stride)
    if y.size:
        _batchnorm_maxpool2d_kernel[_grid_1d(y.size)](x, weight, bias, mean, invstd, k, stride,
                                                      bool(relu), y, argmax)
    return y, argmax, mean, invstd


def batchnorm2d_forward(x, weight, bias, running_mean, running_var, momentum, eps, training):
    """Batch normalisation per channel over the (N, H, W) axes (see ``numpy_ref``).

    Parameters
    ----------
    x : device array, shape (N, C, H, W)
    weight, bias : device array, shape (C,)
    running_mean, running_var : device array, shape (C,)
        Updated in place when ``training`` (unbiased variance, as PyTorch).
    momentum, eps : float
    training : bool

    Returns
    -------
    y : device array, shape (N, C, H, W)
    mean : device array, shape (C,)
    invstd : device array, shape (C,)
        ``1 / sqrt(var + eps)`` with the biased batch variance (or ``running_var``).
    """
    x, weight, bias = _dev(x), _dev(weight), _dev(bias)
    mean, invstd = _batchnorm_statistics(x, running_mean, running_var, momentum, eps,
                                         training)
    y = _empty(x.shape, dtype=x.dtype)
    if y.size:
        _batchnorm_apply_kernel[_grid_1d(y.size)](x, weight, bias, mean, invstd, y)
    return y, mean, invstd


def _batchnorm_statistics(x, running_mean, running_var, momentum, eps, training):
    """``(mean, invstd)`` of :func:`batchnorm2d_forward`, one launch; in training the
    batch's, updating the running statistics, else the running ones."""
    n, c, h, w = x.shape
    mean = _empty((c,), dtype=x.dtype)
    invstd = _empty((c,), dtype=x.dtype)
    if c == 0:
        return mean, invstd
    typed = x.dtype.type
    if training:
        count = n * h * w
        rtype = running_mean.dtype.type
        threads = _reduction_threads()
        blocks = min(c, int(config.CUDA_MAX_BLOCKS))
        kernel = _make_batchnorm_stats_kernel(x.dtype.str, threads)
        kernel[blocks, threads](
            x, typed(eps), rtype(1 - momentum), rtype(momentum),
            rtype(momentum * count / max(count - 1, 1)),
            running_mean, running_var, mean, invstd,
        )
    else:
        _batchnorm_eval_stats_kernel[_grid_1d(c)](
            _dev(running_mean), _dev(running_var), typed(eps), mean, invstd
        )
    return mean, invstd


@functools.lru_cache(maxsize=None)
def _make_batchnorm_backward_stats_kernel(dtype, threads):
    """Per channel ``dbias = sum(dy)`` and ``dweight = sum(dy * xhat)``: a block each."""
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    block_sum = _make_block_sum(threads)

    @cuda.jit
    def batchnorm_backward_stats_kernel(dy, x, mean, invstd, dweight, dbias):
        scratch = cuda.shared.array(threads, nt)
        n_img, channels, h, w = x.shape
        tid = cuda.threadIdx.x
        for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
            acc_b = zero
            acc_w = zero
            for p in range(tid, n_img * h * w, threads):
                n = p // (h * w)
                r = (p // w) % h
                s = p % w
                g = dy[n, c, r, s]
                acc_b += g
                acc_w += g * ((x[n, c, r, s] - mean[c]) * invstd[c])
            total_b = block_sum(scratch, tid, acc_b)
            total_w = block_sum(scratch, tid, acc_w)
            if tid == 0:
                dbias[c] = total_b
                dweight[c] = total_w

    return batchnorm_backward_stats_kernel


@cuda.jit(cache=True)
def _batchnorm_backward_apply_kernel(dy, x, weight, mean, invstd, dweight, dbias, dx):
    # dx = weight * invstd * (dy - dbias / n - xhat * dweight / n), per element.
    n_img, channels, h, w = x.shape
    count = n_img * h * w
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        n, c, r, s = _nchw(i, channels, h, w)
        xhat = (x[n, c, r, s] - mean[c]) * invstd[c]
        dx[n, c, r, s] = (weight[c] * invstd[c]) * (
            dy[n, c, r, s] - dbias[c] / count - xhat * (dweight[c] / count)
        )


def batchnorm2d_backward(dy, x, weight, mean, invstd):
    """Gradients of :func:`batchnorm2d_forward` in training mode.

    Parameters
    ----------
    dy, x : device array, shape (N, C, H, W)
    weight : device array, shape (C,)
    mean, invstd : device array, shape (C,)

    Returns
    -------
    dx : device array, shape (N, C, H, W)
    dweight : device array, shape (C,)
    dbias : device array, shape (C,)
    """
    dy, x, weight, mean, invstd = (_dev(a) for a in (dy, x, weight, mean, invstd))
    c = x.shape[1]
    dx = _empty(x.shape, dtype=dy.dtype)
    dweight = _empty((c,), dtype=dy.dtype)
    dbias = _empty((c,), dtype=dy.dtype)
    if c == 0:
        return dx, dweight, dbias
    threads = _reduction_threads()
    blocks = min(c, int(config.CUDA_MAX_BLOCKS))
    kernel = _make_batchnorm_backward_stats_kernel(dy.dtype.str, threads)
    kernel[blocks, threads](dy, x, mean, invstd, dweight, dbias)
    if dx.size:
        _batchnorm_backward_apply_kernel[_grid_1d(dx.size)](
            dy, x, weight, mean, invstd, dweight, dbias, dx
        )
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------
# losses: per-row or per-element values on the device, then one block sums them
# --------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _bad_label_row(n, dscores):
    # A label out of range (which the loss module checks on the host only when the
    # loss comes out NaN, for labels already on the device): NaN, and nothing read.
    for j in range(dscores.shape[1]):
        dscores[n, j] = math.nan
    return math.nan


@cuda.jit(device=True)
def _softmax_cross_entropy_row(scores, labels, margin, n, n_rows, dscores):
    # Row n: its max, log-sum-exp, loss (returned) and gradient. (margin: unused.)
    n_classes = scores.shape[1]
    if labels[n] < 0 or labels[n] >= n_classes:
        return _bad_label_row(n, dscores)
    top = scores[n, 0]
    for j in range(1, n_classes):
        top = max(top, scores[n, j])
    total = 0.0
    for j in range(n_classes):
        e = math.exp(scores[n, j] - top)
        dscores[n, j] = e
        total += e
    y = labels[n]
    loss = math.log(total) - (scores[n, y] - top)
    for j in range(n_classes):
        d = dscores[n, j] / total
        if j == y:
            d -= 1
        dscores[n, j] = d / n_rows
    return loss


@cuda.jit(device=True)
def _multiclass_hinge_row(scores, labels, margin, n, n_rows, dscores):
    # Row n; the gradient at the label is minus the count of violators.
    n_classes = scores.shape[1]
    y = labels[n]
    if y < 0 or y >= n_classes:
        return _bad_label_row(n, dscores)
    correct = scores[n, y]
    loss = 0.0
    active = 0
    for j in range(n_classes):
        m = scores[n, j] - correct + margin
        if j != y and m > 0:
            loss += m
            active += 1
            dscores[n, j] = 1 / n_rows
        else:
            dscores[n, j] = 0
    dscores[n, y] = -active / n_rows
    return loss


@functools.lru_cache(maxsize=None)
def _make_row_loss_kernel(row, threads):
    """One block: ``row`` of every score row (a thread per row, striding) and the mean
    of their losses in ``out[0]``, the tree of :func:`_make_sum_kernel` in the same
    order. One launch for a classification loss, not one for the rows and one for
    their sum. Rows are short (classes), so a thread per row is the cheap layout."""
    block_sum = _make_block_sum(threads)

    @cuda.jit
    def row_loss_kernel(scores, labels, margin, n_rows, dscores, out):
        scratch = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        acc = 0.0
        for n in range(tid, scores.shape[0], threads):
            acc += row(scores, labels, margin, n, n_rows, dscores)
        total = block_sum(scratch, tid, acc)
        if tid == 0:
            out[0] = total / scores.shape[0]

    return row_loss_kernel


@cuda.jit(cache=True)
def _bce_with_logits_kernel(scores, targets, size, losses, dscores):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, scores.size, step):
        s = scores[i]
        t = targets[i]
        losses[i] = (s if s > 0 else 0) - s * t + math.log1p(math.exp(-abs(s)))
        dscores[i] = (_sigmoid(s) - t) / size


@cuda.jit(cache=True)
def _mse_kernel(pred, target, scale, losses, dpred):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, pred.size, step):
        d = pred[i] - target[i]
        losses[i] = d * d
        dpred[i] = d * scale


@cuda.jit(cache=True)
def _l1_kernel(pred, target, scale, losses, dpred):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, pred.size, step):
        d = pred[i] - target[i]
        losses[i] = abs(d)
        # np.sign: 0 at equality, NaN stays NaN.
        sign = 1 if d > 0 else (-1 if d < 0 else d)
        dpred[i] = sign * scale


def _row_loss(row, scores, labels, margin):
    scores, labels = _dev(scores), _dev(labels)
    n = scores.shape[0]
    dscores = _empty(scores.shape, dtype=scores.dtype)
    if n == 0:
        return float("nan"), dscores
    threads = _reduction_threads()
    out = _empty(1, np.float64)
    t = scores.dtype.type
    _make_row_loss_kernel(row, threads)[1, threads](scores, labels, t(margin), t(n), dscores, out)
    return float(out.copy_to_host()[0]), dscores


def _elementwise_loss(kernel, pred, target, scale):
    pred = _dev(pred)
    target = asarray(target, pred.dtype)
    losses = _empty((pred.size,), dtype=np.float64)
    dpred = _empty(pred.shape, dtype=pred.dtype)
    if pred.size == 0:
        return float("nan"), dpred
    kernel[_grid_1d(pred.size)](
        _flat(pred), _flat(target), pred.dtype.type(scale), losses, _flat(dpred)
    )
    return _mean_to_host(losses), dpred


def softmax_cross_entropy(scores, labels):
    """Softmax cross-entropy, mean over the batch.

    Parameters
    ----------
    scores : device array, shape (N, C)
    labels : device or host array, shape (N,), integer in ``[0, C)`` (a row with a label
        out of range makes the loss NaN and its gradient NaN, reading nothing out of
        bounds: the loss module checks device labels only then)

    Returns
    -------
    loss : float
    dscores : device array, shape (N, C), dtype of ``scores``
        ``(softmax(scores) - onehot(labels)) / N``.
    """
    return _row_loss(_softmax_cross_entropy_row, scores, labels, 0)


def multiclass_hinge(scores, labels, margin):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Parameters
    ----------
    scores : device array, shape (N, C)
    labels : device or host array, shape (N,), integer in ``[0, C)`` (out of range: as
        :func:`softmax_cross_entropy`)
    margin : float

    Returns
    -------
    loss : float
    dscores : device array, shape (N, C), dtype of ``scores``
    """
    return _row_loss(_multiclass_hinge_row, scores, labels, margin)


def bce_with_logits(scores, targets):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    Parameters
    ----------
    scores : device array, any shape
    targets : device or host array, shape of ``scores``, in ``[0, 1]``

    Returns
    -------
    loss : float
    dscores : device array, shape of ``scores``
        ``(sigmoid(s) - t) / scores.size``.
    """
    scores = _dev(scores)
    return _elementwise_loss(_bce_with_logits_kernel, scores, targets, scores.size)


def mse(pred, target):
    """Mean squared error over all elements; gradient ``2 * (pred - target) / size``.

    Parameters
    ----------
    pred : device array, any shape
    target : device or host array, shape of ``pred``

    Returns
    -------
    loss : float
    dpred : device array, shape of ``pred``
    """
    pred = _dev(pred)
    return _elementwise_loss(_mse_kernel, pred, target, 2.0 / max(pred.size, 1))


def l1(pred, target):
    """Mean absolute error over all elements; gradient ``sign(pred - target) / size``.

    Parameters
    ----------
    pred : device array, any shape
    target : device or host array, shape of ``pred``

    Returns
    -------
    loss : float
    dpred : device array, shape of ``pred``
    """
    pred = _dev(pred)
    return _elementwise_loss(_l1_kernel, pred, target, 1.0 / max(pred.size, 1))


# --------------------------------------------------------------------------------------
# optimizer updates: one thread per parameter element, in place
# --------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _decayed(g, p, weight_decay):
    # L2 decay added to the gradient, and only when asked for: 0 * inf would make an
    # infinite parameter NaN where the cpu target and PyTorch leave it infinite
    return g + weight_decay * p if weight_decay != 0 else g


@cuda.jit(cache=True)
def _sgd_kernel(param, grad, lr, weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        param[i] -= lr * _decayed(grad[i], param[i], weight_decay)


@cuda.jit(cache=True)
def _sgd_momentum_kernel(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        g = _decayed(grad[i], param[i], weight_decay)
        v = momentum * velocity[i] + g
        velocity[i] = v
        param[i] -= lr * (g + momentum * v if nesterov else v)


@cuda.jit(cache=True)
def _adam_kernel(
    param, grad, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2,
    bias_correction2_sqrt, eps, weight_decay,
):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        g = _decayed(grad[i], param[i], weight_decay)
        m[i] = beta1 * m[i] + one_minus_beta1 * g
        v[i] = beta2 * v[i] + one_minus_beta2 * (g * g)
        param[i] -= lr_t * m[i] / (math.sqrt(v[i]) / bias_correction2_sqrt + eps)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : device array, any shape
        Updated in place.
    grad : device array, shape of ``param``
    velocity : device array, shape of ``param``, or None
        Momentum buffer, updated in place; unused (may be None) when ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    if param.size == 0:
        return
    typed = param.dtype.type
    grad = _flat(_dev(grad))
    if momentum == 0:
        _sgd_kernel[_grid_1d(param.size)](_flat(param), grad, typed(lr), typed(weight_decay))
        return
    _sgd_momentum_kernel[_grid_1d(param.size)](
        _flat(param), grad, _flat(velocity), typed(lr), typed(momentum), bool(nesterov),
        typed(weight_decay),
    )


#: Most arrays one fused optimizer launch takes: a 1-D array costs 56 bytes of kernel
#: parameters, and 48 of them (16 tensors of SGD with momentum, 12 of Adam) stay
#: inside CUDA's 4 KiB limit.
_ARRAYS_PER_LAUNCH = 48


@cuda.jit(cache=True)
def _sgd_many_kernel(params, grads, lr, weight_decay):
    # params and grads: tuples of 1-D arrays; every thread strides through each in turn
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad = params[t], grads[t]
        for i in range(start, param.size, step):
            param[i] -= lr * _decayed(grad[i], param[i], weight_decay)


@cuda.jit(cache=True)
def _sgd_momentum_many_kernel(params, grads, velocities, lr, momentum, nesterov,
                              weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad, velocity = params[t], grads[t], velocities[t]
        for i in range(start, param.size, step):
            g = _decayed(grad[i], param[i], weight_decay)
            v = momentum * velocity[i] + g
            velocity[i] = v
            param[i] -= lr * (g + momentum * v if nesterov else v)


def _fused_launches(tensors, per_launch):
    """The arrays of each launch of a fused optimizer update.

    ``tensors`` yields ``(key, arrays)`` for each parameter (``arrays`` its
    parameter, gradient and state, ``key`` what its launch must share: dtype, step
    count). Yields ``(key, columns)`` for launches of at most ``per_launch`` tensors
    of one key, ``columns[j]`` the tuple of the tensors' ``j``-th arrays, flat and on
    the device (Numba types a tuple of one array type as one ``UniTuple``).
    """
    groups = {}
    for key, arrays in tensors:
        if arrays[0].size:
            groups.setdefault(key, []).append(arrays)
    for key, items in groups.items():
        for first in range(0, len(items), per_launch):
            chunk = items[first:first + per_launch]
            yield key, [tuple(_flat(_dev(a)) for a in column) for column in zip(*chunk)]


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every parameter, one launch per 16 tensors of a dtype.

    Parameters
    ----------
    params, grads : sequences of device arrays, pairwise of one shape
    velocities : sequence of device arrays (or of None when ``momentum == 0``)
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    Each element's arithmetic is that of :func:`sgd_update`'s kernels, so the
    results are the same bits.
    """
    if momentum == 0:
        tensors = ((p.dtype, (p, g)) for p, g in zip(params, grads))
    else:
        tensors = ((p.dtype, (p, g, v)) for p, g, v in zip(params, grads, velocities))
    for dtype, arrays in _fused_launches(tensors, _ARRAYS_PER_LAUNCH // 3):
        typed = dtype.type
        grid = _grid_1d(max(p.size for p in arrays[0]))
        if momentum == 0:
            _sgd_many_kernel[grid](*arrays, typed(lr), typed(weight_decay))
        else:
            _sgd_momentum_many_kernel[grid](*arrays, typed(lr), typed(momentum),
                                            bool(nesterov), typed(weight_decay))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay).

    Parameters
    ----------
    param : device array, any shape
        Updated in place.
    grad : device array, shape of ``param``
    m, v : device array, shape of ``param``
        Moment estimates, updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        Number of this step, from 1.
    """
    if param.size == 0:
        return
    typed = param.dtype.type
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    _adam_kernel[_grid_1d(param.size)](
        _flat(param), _flat(_dev(grad)), _flat(m), _flat(v), typed(lr / bias_correction1),
        typed(beta1), typed(1 - beta1), typed(beta2), typed(1 - beta2),
        typed(bias_correction2_sqrt), typed(eps), typed(weight_decay),
    )


@cuda.jit(cache=True)
def _adam_many_kernel(
    params, grads, ms, vs, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2,
    bias_correction2_sqrt, eps, weight_decay,
):
    # the tensors of one step count: tuples of 1-D arrays, strided through in turn
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad, m, v = params[t], grads[t], ms[t], vs[t]
        for i in range(start, param.size, step):
            g = _decayed(grad[i], param[i], weight_decay)
            m[i] = beta1 * m[i] + one_minus_beta1 * g
            v[i] = beta2 * v[i] + one_minus_beta2 * (g * g)
            param[i] -= lr_t * m[i] / (math.sqrt(v[i]) / bias_correction2_sqrt + eps)


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every parameter, one launch per 12 tensors of a dtype and step.

    Parameters
    ----------
    params, grads, ms, vs : sequences of device arrays, of one shape per index
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int
        ``steps[i]`` is the number of this step of ``params[i]``, from 1.

    Notes
    -----
    The bias corrections depend on the step count, so the tensors are grouped by
    ``(dtype, step)`` (usually one group: every parameter steps together). Each
    element's arithmetic is that of :func:`adam_update`'s kernel.
    """
    tensors = (((p.dtype, int(step)), (p, g, m, v))
               for p, g, m, v, step in zip(params, grads, ms, vs, steps))
    for (dtype, step), arrays in _fused_launches(tensors, _ARRAYS_PER_LAUNCH // 4):
        typed = dtype.type
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        _adam_many_kernel[_grid_1d(max(p.size for p in arrays[0]))](
            *arrays, typed(lr / bias_correction1), typed(beta1), typed(1 - beta1),
            typed(beta2), typed(1 - beta2), typed(bias_correction2_sqrt), typed(eps),
            typed(weight_decay),
        )


# --------------------------------------------------------------------------------------
# features: HoG and HSV colour histograms (extras, not in the kernel contract)
# --------------------------------------------------------------------------------------
#
# Twins of the cpu kernels in jitnet/features/hog.py and color.py, called by those
# modules on the cuda target after they have validated the input; see there for how
# each number is defined (scikit-image's and matplotlib's rules, to the rounding).

#: atan2 in radians -> degrees: the constant NumPy's rad2deg multiplies by.
_DEGREES = 180 / math.pi

# Rounded float64 products and sums that the compiler must not fuse into one fma:
# NVVM contracts a * b + c by default, which would change the last bit of the hypot
# below. libdevice's _rn intrinsics are never contracted; the simulator does not
# implement libdevice, and plain Python floats are never contracted.
if SIMULATOR:

    @cuda.jit(device=True)
    def _mul_rn(a, b):
        return a * b

    @cuda.jit(device=True)
    def _add_rn(a, b):
        return a + b

else:
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def _mul_rn(a, b):
        return libdevice.dmul_rn(a, b)

    @cuda.jit(device=True)
    def _add_rn(a, b):
        return libdevice.dadd_rn(a, b)


# glibc's hypot constants: exact powers of two
_HYPOT_SCALE = 2.0**-600
_HYPOT_LARGE = 2.0**511
_HYPOT_TINY = 2.0**-511
_HYPOT_EPS = 2.0**-54


@cuda.jit(device=True)
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


@cuda.jit(device=True)
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


@cuda.jit(device=True)
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


@cuda.jit(device=True)
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

    @cuda.jit
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


@cuda.jit(cache=True)
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


@cuda.jit(device=True)
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


@cuda.jit(cache=True)
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
