"""Helpers shared by the benchmarks: timing, machine description, sgemm peak.

Every timing is the median of ``repeat`` calls after ``warmup`` untimed calls
(the first of which compiles); nothing here runs inside the test suite.
"""

import os
import platform
import statistics
import subprocess
import time

import numpy as np


def median_ms(call, repeat=10, warmup=2, sync=None):
    """Median wall time of ``call()`` in milliseconds, after ``warmup`` untimed calls.

    ``sync`` (optional) is called before each timer stops, e.g. to wait for a GPU.
    """
    for _ in range(warmup):
        call()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def first_call_s(call):
    """Seconds taken by the first call (includes Numba compilation or cache loading)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def machine():
    """One line naming the CPU, its core count and the load when the benchmark ran."""
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
    return f"{model}, {os.cpu_count()} cores, load average {load:.1f} at start{extra}"


def sgemm_gflops(n=1024, repeat=10):
    """Measured float32 matrix-multiply rate (GFLOP/s) of ``np.dot`` on ``n x n`` matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ms = median_ms(lambda: np.dot(a, b), repeat=repeat)
    return 2.0 * n**3 / (ms * 1e6)


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
