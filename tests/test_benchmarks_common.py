"""benchmarks/common.py: the timing helpers (no timing is asserted)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common(load_benchmark):
    return load_benchmark("common")


def test_median_ms_runs_before_ahead_of_each_timed_call_only(common):
    events = []
    ms = common.median_ms(lambda: events.append("call"), repeat=3, warmup=2,
                          before=lambda: events.append("before"))
    assert events == ["call", "call"] + ["before", "call"] * 3
    assert ms >= 0


def test_cache_evictor_reads_its_buffer_in_threads(common, monkeypatch):
    import threading

    seen = set()
    real_sum = common.np.sum

    def spy(part, *args, **kwargs):
        seen.add(threading.get_ident())
        return real_sum(part, *args, **kwargs)

    monkeypatch.setattr(common.np, "sum", spy)
    evict = common.cache_evictor(mib=2, threads=2)
    seen.clear()
    assert evict() is None
    # not the caller's thread: Python threads of its own, no OpenMP pool left spinning
    assert seen and threading.get_ident() not in seen


def test_machine_names_the_cpus_this_process_may_use(common, monkeypatch):
    monkeypatch.setattr(common.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(common.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert common.usable_cpus() == 1
    assert ", 4 cores (1 usable by this process), load average" in common.machine()


def test_pytorch_gets_as_many_threads_as_numba(common, monkeypatch):
    import numba

    monkeypatch.setattr(common.os, "cpu_count", lambda: 4)  # under taskset -c 0
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    assert common.default_threads() == 1
    assert common.default_threads(3) == 3


def test_peak_rss_of_a_child_is_its_own_not_its_parents(common):
    # ru_maxrss carries a process's memory across execve: bench_train.py's children
    # reported their parent's size (230 and 285 MiB for jitnet's 202)
    import subprocess
    import sys

    import numpy as np

    held = np.ones(200 * 2**20 // 8)  # 200 MiB touched in this process
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location("
            f"'c', {str(ROOT / 'benchmarks' / 'common.py')!r}); m = importlib.util."
            "module_from_spec(spec); spec.loader.exec_module(m); print(m.peak_rss_mb())")
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
    assert held.sum() > 0 and child < 150, child
