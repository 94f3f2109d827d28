"""Helpers shared by the benchmarks: timing, machine description, sgemm and FMA peaks.

Every timing is the median of ``repeat`` calls after ``warmup`` untimed calls
(the first of which compiles); nothing here runs inside the test suite.
"""

import ctypes
import ctypes.util
import os
import platform
import statistics
import subprocess
import time

import numpy as np


def median_ms(call, repeat=10, warmup=2, sync=None, before=None):
    """Median wall time of ``call()`` in milliseconds, after ``warmup`` untimed calls.

    ``sync`` (optional) is called before each timer stops, e.g. to wait for a GPU;
    ``before`` (optional) before each timed call, untimed (:func:`cache_evictor`).
    """
    for _ in range(warmup):
        call()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        call()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def usable_cpus():
    """The CPUs this process may run on (its affinity: ``taskset``, a cpuset), which
    ``os.cpu_count()`` does not see."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads(requested=None):
    """PyTorch's thread count: ``requested``, else the count of jitnet's (Numba's)
    threads, ``numba.get_num_threads()``, which honours ``NUMBA_NUM_THREADS`` and the
    CPU affinity (``os.cpu_count()`` counts CPUs the process may not run on, and
    PyTorch would be oversubscribed under ``taskset``)."""
    if requested:
        return requested
    import numba

    return numba.get_num_threads()


def machine():
    """One line naming the CPU, its core count (and how many this process may use)
    and the load when the benchmark ran."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")
           if k in os.environ]
    extra = f" ({', '.join(env)})" if env else ""
    return (f"{model}, {os.cpu_count()} cores ({usable_cpus()} usable by this process), "
            f"load average {load:.1f} at start{extra}")


def sgemm_gflops(n=1024, repeat=10):
    """Measured float32 matrix-multiply rate (GFLOP/s) of ``np.dot`` on ``n x n`` matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ms = median_ms(lambda: np.dot(a, b), repeat=repeat)
    return 2.0 * n**3 / (ms * 1e6)


def _fma_loop(lanes):
    """A parallel Numba kernel of 12 independent ``lanes``-wide multiply-add chains."""
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def loop(n_iter, out):
        # No race: iteration t owns out[t].
        for t in prange(out.shape[0]):
            acc = np.empty((12, lanes), dtype=np.float32)
            for k in range(12):
                for lane in range(lanes):
                    acc[k, lane] = np.float32(k + lane)
            b = np.float32(0.999) + np.float32(t) * np.float32(1e-9)
            c = np.float32(1e-3)
            for _ in range(n_iter):
                # written out row by row: with every index a constant offset LLVM
                # keeps the 12 accumulators in registers (a nested loop over rows
                # measured 100x slower)
                for lane in range(lanes):
                    acc[0, lane] = acc[0, lane] * b + c
                    acc[1, lane] = acc[1, lane] * b + c
                    acc[2, lane] = acc[2, lane] * b + c
                    acc[3, lane] = acc[3, lane] * b + c
                    acc[4, lane] = acc[4, lane] * b + c
                    acc[5, lane] = acc[5, lane] * b + c
                    acc[6, lane] = acc[6, lane] * b + c
                    acc[7, lane] = acc[7, lane] * b + c
                    acc[8, lane] = acc[8, lane] * b + c
                    acc[9, lane] = acc[9, lane] * b + c
                    acc[10, lane] = acc[10, lane] * b + c
                    acc[11, lane] = acc[11, lane] * b + c
            s = np.float32(0)
            for k in range(12):
                for lane in range(lanes):
                    s += acc[k, lane]
            out[t] = s

    return loop


def fma_peak_gflops(n_iter=20_000_000):
    """Measured float32 fused multiply-add rate (GFLOP/s) of all Numba threads.

    Twelve independent chains of vector FMAs per thread, 16 lanes where the CPU
    has AVX-512 and 8 otherwise (so the chains fit its registers): the most a
    kernel of this machine can compute, which ``np.dot`` may not reach (an OpenBLAS
    build without a kernel for the CPU falls back to an older one's).
    """
    import llvmlite.binding as ll
    import numba

    lanes = 16 if ll.get_host_cpu_features().get("avx512f") else 8
    loop = _fma_loop(lanes)
    threads = numba.get_num_threads()
    out = np.empty(threads, dtype=np.float32)
    loop(10, out)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        loop(n_iter, out)
        best = max(best, threads * n_iter * 12 * lanes * 2 / (time.perf_counter() - start))
    return best / 1e9


def cache_evictor(mib=96, threads=None):
    """A function that evicts the CPU caches: ``threads`` threads (default: one a usable CPU)
    each read their share of a ``mib`` MiB buffer (three times a 32 MiB L3), so that
    the cores' L1 and L2 and the shared L3 hold clean lines of it, and the next call
    reads its inputs from memory, as a kernel does whose inputs a training step wrote
    long before.

    Reading, not writing: written lines would be written back during the next call.
    Python threads running NumPy (which lets go of the GIL), not a Numba parallel
    loop, whose OpenMP workers keep spinning a while after it, beside the call timed
    next (PyTorch's conv1 forward after a Numba loop's eviction: 0.77 ms, after this
    one's 0.67-0.78; 2-core Zen 5).
    """
    from concurrent.futures import ThreadPoolExecutor

    threads = threads or usable_cpus()
    parts = np.array_split(np.ones((mib << 20) // 8, dtype=np.int64), threads)
    pool = ThreadPoolExecutor(threads)

    def evict():
        for _ in pool.map(np.sum, parts):
            pass

    evict()
    return evict


#: glibc's thresholds for a steady allocator (see :func:`steady_malloc`): blocks up to
#: 32 MiB come from the heap, and the heap keeps up to 256 MiB it no longer uses.
STEADY_MMAP_THRESHOLD = 32 << 20
STEADY_TRIM_THRESHOLD = 256 << 20
#: The same for a child process, which glibc reads from its environment at start.
STEADY_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(STEADY_MMAP_THRESHOLD),
                     "MALLOC_TRIM_THRESHOLD_": str(STEADY_TRIM_THRESHOLD)}


def steady_malloc():
    """Keep glibc's allocator from handing large blocks back to the OS after use.

    By default glibc serves a block above its mmap threshold (128 KiB at first,
    raised as the process frees large blocks) by a fresh ``mmap``, so an 8 MiB array
    allocated afresh each call page-faults 2,048 times: PyTorch's conv1 forward at
    batch 64 measured 4.8-6.8 ms that way and 0.58 ms once an earlier free had
    raised the threshold. Fixing the threshold at 32 MiB (and the trim threshold
    above it) times every contender as a long-running process finds it. jitnet's
    kernels take their arrays from their own pool and do not depend on this.
    Returns True when glibc took both settings (False elsewhere).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, STEADY_MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, STEADY_TRIM_THRESHOLD))


def peak_rss_mb():
    """This process's peak resident memory in MiB: Linux's ``VmHWM`` (the high-water mark
    of the process's own memory since it started its program), else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: ``execve`` carries the memory the process had before
    into it, so a child started by a parent holding 300 MiB reports 327 MiB where its
    own peak is 13 (bench_train.py's children reported their parent's size: 230 and 285
    MiB for jitnet's 202, with PyTorch imported in the parent).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def torch_or_none(threads):
    """``torch`` with ``threads`` intra-op threads, or None when it does not import."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def table(header, rows):
    """A GitHub-flavoured Markdown table as a string."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
