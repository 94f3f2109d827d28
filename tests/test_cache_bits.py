"""A kernel loaded from Numba's on-disk cache computes the bits it computed when this
process compiled it.

A first training run compiles some kernels and loads others that its helper process
(or an earlier run) cached, so if the two ways gave different bits, runs of the same
seed would train apart depending on the state of the cache. They did: Numba runs a
``prange`` body as compiled on its own, but caches the copy it optimised again inside
its caller, and where fast-math lets LLVM reorder a sum the two copies can sum in
different orders (the batch-norm statistics and gradients in float64, and earlier the
3x3 weight gradient's bias sums; see ``_JIT_ORDERED`` in ``jitnet/kernels/cpu/_common.py``).

``cache_bits_battery.py`` runs every cpu kernel (the kernel contract in float32 and
float64, the features, short training runs); here it runs twice on one empty cache:
the first run compiles everything, the second loads everything.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BATTERY = Path(__file__).with_name("cache_bits_battery.py")


def run_battery(cache, out):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), JITNET_PRECOMPILE="0")
    done = subprocess.run([sys.executable, str(BATTERY), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache_bits")
    return [run_battery(folder / "numba_cache", folder / f"run{i}.json") for i in (1, 2)]


def test_every_kernel_gives_the_same_bits_compiled_and_loaded_from_the_cache(runs):
    compiled, loaded = (run["digests"] for run in runs)
    assert compiled.keys() == loaded.keys()
    differ = [case for case in compiled if compiled[case] != loaded[case]]
    assert not differ, f"{len(differ)} of {len(compiled)} cases differ: {differ}"


def test_the_battery_compiles_every_kernel_then_loads_every_kernel(runs):
    sys.path.insert(0, str(BATTERY.parent))
    try:
        import cache_bits_battery
    finally:
        sys.path.remove(str(BATTERY.parent))
    every = sorted(cache_bits_battery.kernels())
    first, second = runs
    # a kernel missing here is one the battery never ran: add a case that reaches it
    assert first["compiled"] == every and first["loaded"] == []
    # (kernels only called by others come inside their callers' cached code)
    assert second["compiled"] == [] and set(second["loaded"]) <= set(every)
    assert "jitnet.kernels.cpu.batchnorm._batchnorm2d_stats" in second["loaded"]
