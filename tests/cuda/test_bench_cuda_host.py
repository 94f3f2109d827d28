"""benchmarks/bench_cuda_host.py: jitnet's host work per cuda step, every launch a
no-op (no timing is asserted)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

cu = pytest.importorskip("jitnet.kernels.cuda")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its `common` and `bench_train`
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_cuda_host", ROOT / "benchmarks" / "bench_cuda_host.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.skipif(not cu.SIMULATOR, reason="bench_cuda_host.py runs under the simulator")
@pytest.mark.parametrize("batchnorm, launches", [(False, 15), (True, 23)])
def test_it_runs_whole_steps_with_every_launch_stubbed_and_puts_them_back(
        bench, batchnorm, launches, tmp_path):
    from numba.cuda.simulator import kernel as simulator

    real = simulator.FakeCUDAKernel.__call__
    medians, per_step = bench.phase_times(2, steps=2, batchnorm=batchnorm, warmup=1)
    assert per_step == launches  # the step's launches, each stubbed
    assert set(medians) == set(bench.PHASES) and all(t >= 0 for t in medians.values())
    assert simulator.FakeCUDAKernel.__call__ is real

    bench.main(["--steps", "2", "--batch-size", "2", "--out", str(tmp_path / "host.md")])
    report = (tmp_path / "host.md").read_text()
    assert "Kernel launches per step: 15" in report and "| optimizer step |" in report
