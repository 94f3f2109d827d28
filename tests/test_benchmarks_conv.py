"""benchmarks/bench_conv.py: its report, and its check against PyTorch (no timing is
asserted)."""

import types

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench_conv(load_benchmark):
    return load_benchmark("bench_conv")


def test_the_report_has_each_shapes_work(bench_conv, capsys, tmp_path):
    out = tmp_path / "conv.md"
    bench_conv.main(["--batch-size", "2", "--repeat", "1", "--rounds", "1",
                     "--cases", "depthwise 64 3x3/2,stem", "--out", str(out)])
    report = capsys.readouterr().out
    assert out.read_text() == report.rstrip("\n") + "\n"  # print adds a line
    rows = [line for line in report.splitlines() if line.startswith("| ") and "ms" not in line]
    names = ["stem 3->64 7x7/2 on 64x64", "depthwise 64 3x3/2 on 16x16"]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| " + name, work] for name in names for work in bench_conv.WORK]


def test_a_result_that_differs_from_pytorchs_stops_the_benchmark(bench_conv, monkeypatch):
    torch = pytest.importorskip("torch")
    from jitnet.kernels import cpu

    def off_by_one(*args):
        return cpu.conv2d_forward(*args) + np.float32(1)

    fake = types.SimpleNamespace(conv2d_forward=off_by_one, conv2d_backward=cpu.conv2d_backward)
    monkeypatch.setattr(bench_conv, "cpu", fake)
    with pytest.raises(AssertionError, match=r"forward: jitnet and PyTorch differ"):
        bench_conv._calls(bench_conv.SHAPES["3->32 3x3/2 on 32x32"], 2,
                          np.random.default_rng(0), torch)


def test_a_word_that_names_no_shape_is_refused(bench_conv, capsys):
    with pytest.raises(SystemExit):
        bench_conv.main(["--cases", "nothing-like-it"])
    assert "the shapes:" in capsys.readouterr().err
