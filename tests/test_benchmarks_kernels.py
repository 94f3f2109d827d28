"""benchmarks/bench_kernels.py: the report and PyTorch's calls (no timing is asserted)."""


import pytest


@pytest.fixture(scope="module")
def bench_kernels(load_benchmark):
    return load_benchmark("bench_kernels")


def _report(bench_kernels, monkeypatch, capsys, *options):
    """bench_kernels.main(options) on two fake kernels, no peak measured, no pause;
    the report, and how many times each contender's call ran."""
    calls = {"jitnet": 0, "numpy": 0}

    def counted(lib):
        def call():
            calls[lib] += 1
        return call

    cases = [("fake fwd", 1e6, counted("jitnet"), counted("numpy"), None),
             ("fake bwd", 0, lambda: None, None, None)]
    monkeypatch.setattr(bench_kernels, "_cases", lambda batch, rng, torch=None: cases)
    monkeypatch.setattr(bench_kernels, "sgemm_gflops", lambda: 100.0)
    monkeypatch.setattr(bench_kernels, "fma_peak_gflops", lambda: 200.0)
    monkeypatch.setattr(bench_kernels, "steady_malloc", lambda: True)
    monkeypatch.setattr(bench_kernels.time, "sleep", lambda seconds: None)
    bench_kernels.main(["--batch-size", "2", "--no-torch", "--rounds", "1", *options])
    return capsys.readouterr().out, calls


def test_no_first_call_column(bench_kernels, monkeypatch, capsys):
    # building the cases runs several kernels first: such a column hid their compile time
    report, _ = _report(bench_kernels, monkeypatch, capsys)
    header = next(line for line in report.splitlines() if line.startswith("| kernel"))
    assert "first call" not in report
    assert header.count("|") == 10
    assert "fake fwd" in report and "fake bwd" in report


def test_the_report_gives_each_contenders_sample_count(bench_kernels, monkeypatch, capsys):
    report, calls = _report(bench_kernels, monkeypatch, capsys, "--repeat", "10")
    warmup = 2  # common.median_ms's
    assert calls == {"jitnet": 10 + warmup, "numpy": 5 + warmup}
    assert "Median of 10 calls (jitnet cpu), 5 calls (numpy target) after 2 warm-up" in report


def test_pytorchs_convolution_backward_is_the_one_call_autograd_makes(bench_kernels,
                                                                       monkeypatch):
    import numpy as np

    torch = pytest.importorskip("torch")
    cases = {name: (jit, reference) for name, _, jit, _, reference
             in bench_kernels._cases(2, np.random.default_rng(0), torch=torch)}

    def separate_call(*args, **kwargs):
        raise AssertionError("a gradient of its own, not aten::convolution_backward")

    monkeypatch.setattr(torch.nn.grad, "conv2d_input", separate_call)
    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", separate_call)
    rows = [name for name in cases if "bwd (all)" in name or "relu + pool" in name]
    assert len(rows) == 5
    for name in rows:
        jit, reference = cases[name]
        want = jit()
        got = reference()
        if "bwd-weight" in name:  # the first layer's: no input gradient, as in a step
            assert got[0] is None and want[0] is None
        for g, w in zip(got, want):
            if w is not None:
                np.testing.assert_allclose(g.numpy(), w, rtol=1e-3, atol=1e-3, err_msg=name)
