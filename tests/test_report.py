"""Tests of jitnet.report: the comparison table, the pictures, the report files, bench rows."""

import json

import numpy as np
import pytest

import jitnet
from jitnet import nn, report
from jitnet.train import TrainResult

CLASSES = [f"class{i}" for i in range(10)]


def _metrics(name, accuracy):
    history = [{"epoch": i + 1, "loss": 2.0 - 0.5 * i, "train_accuracy": 0.2 * (i + 1),
                "test_accuracy": accuracy * (i + 1) / 2, "seconds": 1.0} for i in range(2)]
    rng = np.random.default_rng(0)
    return {"model": name, "target": "cpu", "test_accuracy": accuracy, "train_seconds": 2.5,
            "images_per_second": 1234.5, "parameters": 4321, "epochs": 2,
            "config": {"n_train": 64}, "history": history,
            "confusion_matrix": rng.integers(0, 5, (10, 10)).tolist()}


def _results(n=20):
    jitnet.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 6, kernel_size=3), nn.Flatten())
    rng = np.random.default_rng(1)
    return {
        "hog_linear": TrainResult(object(), _metrics("hog-linear", 0.4),
                                  rng.integers(0, 10, n)),
        "convnet": TrainResult(conv, _metrics("convnet", 0.6), rng.integers(0, 10, n)),
    }


def test_comparison_table_plain_and_markdown():
    metrics = {"hog_linear": _metrics("hog-linear", 0.4), "convnet": _metrics("convnet", 0.6)}
    text = report.comparison_table(metrics)
    lines = text.splitlines()
    assert "HoG + linear" in lines[0] and "ConvNet" in lines[0]
    assert "40.0%" in text and "60.0%" in text and "4,321" in text and "1,234" in text
    md = report.comparison_table(metrics, markdown=True)
    assert md.splitlines()[1].startswith("| --- |")
    assert all(line.startswith("|") for line in md.splitlines())
    missing = dict(metrics["convnet"], parameters=None)
    assert "-" in report.comparison_table({"convnet": missing})
    # a value its format does not take is shown as it is, not a ValueError
    odd = dict(metrics["convnet"], test_accuracy="n/a", parameters="unknown")
    rows = report.comparison_table({"convnet": odd}).splitlines()
    assert rows[2].split() == ["test", "accuracy", "n/a"]
    assert rows[5].split() == ["parameters", "unknown"]


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 3, 32, 32)).astype(np.uint8)
    y = rng.integers(0, 10, 20)
    path = report.write_report(tmp_path, _results(), x, y, class_names=CLASSES,
                               wall_seconds=12.0)
    assert path == tmp_path / "report.md"
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data) == {"hog_linear", "convnet"}
    text = path.read_text()
    for picture in ("learning_curves.png", "confusion_matrices.png", "filters.png", "hog.png",
                    "predictions.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG", picture
        assert f"]({picture})" in text
    assert "not drawn" not in text and "wall time 12 s" in text


def test_a_failing_picture_does_not_lose_the_report(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "plot_hog", broken)
    x = np.zeros((20, 3, 32, 32), np.uint8)
    report.write_report(tmp_path, _results(), x, np.zeros(20, int), class_names=CLASSES)
    assert "not drawn (RuntimeError: no fonts)" in (tmp_path / "report.md").read_text()


def test_first_conv_weight_and_filters(tmp_path, monkeypatch):
    model = _results()["convnet"].model
    weight = report.first_conv_weight(model)
    assert weight.shape == (6, 3, 3, 3)
    report.plot_filters(weight, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    # filters of one input channel (a grey first layer) are drawn in grey, one tile each
    from matplotlib.axes import Axes

    drawn, imshow = [], Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda ax, tile, **kw: drawn.append(
        (tile.shape, kw.get("cmap"))) or imshow(ax, tile, **kw))
    grey = np.random.default_rng(3).standard_normal((4, 1, 5, 5))
    report.plot_filters(grey, tmp_path / "grey.png")
    assert (tmp_path / "grey.png").read_bytes()[:4] == b"\x89PNG"
    assert drawn == [((5, 5), "gray")] * 4
    with pytest.raises(ValueError, match="no convolution"):
        report.first_conv_weight(nn.Sequential(nn.Linear(2, 2)))


def test_bench_table_format():
    rows = [{"name": "conv", "numpy_ms": 10.0, "target_ms": 2.0, "speedup": 5.0},
            {"name": "training step", "numpy_ms": 100.0, "target_ms": 20.0, "speedup": 5.0,
             "images_per_second": 3200.0}]
    text = report.bench_table(rows, "cpu", 64)
    assert "5.0x" in text and "3200 images/s" in text and "cpu ms" in text


class _FakeHelper:
    """A precompile helper that is still compiling until it is waited for."""

    def __init__(self, events):
        self.events = events

    def wait(self, timeout=None):
        self.events.append("helper done")
        return 0


def test_bench_times_only_after_the_precompile_helper_is_done(monkeypatch):
    from jitnet.kernels import precompile

    monkeypatch.setattr(precompile, "_helper", None)
    events = []

    def step():  # the warm-up call starts the helper, as a cold cache's first step does
        if precompile._helper is None:
            monkeypatch.setattr(precompile, "_helper", _FakeHelper(events))
            events.append("warm-up")
        else:
            events.append("timed")

    report._median_ms(step, 3)
    assert events == ["warm-up", "helper done", "timed", "timed", "timed"]


def test_bench_times_the_backward_kernels_as_training_calls_them(monkeypatch):
    from jitnet.kernels import numpy_ref

    calls = []  # per timed row, the backward kernels it called

    def fake_median_ms(function, repeat):
        calls.append([])
        function()
        return float(len(calls) - 1)

    def spy(name):
        real = getattr(numpy_ref, name)

        def kernel(*args, **kwargs):
            calls[-1].append((name, args[3:], kwargs))
            return real(*args, **kwargs)
        return kernel

    monkeypatch.setattr(report, "_median_ms", fake_median_ms)
    for name in ("conv2d_backward", "maxpool2d_backward"):
        monkeypatch.setattr(numpy_ref, name, spy(name))
    rows = report._bench_target("numpy", 2, 1)
    # the first convolution without an input gradient, the pooling with its window
    assert calls[int(rows["conv1 backward"])] == [
        ("conv2d_backward", (1, 1, 1), {"input_grad": False})]
    assert calls[int(rows["maxpool backward"])] == [("maxpool2d_backward", (2, 2), {})]


def test_learning_curves_show_a_one_epoch_run(tmp_path, monkeypatch):
    # one point drawn as a line without a marker was invisible
    import matplotlib.figure

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: (figures.append(self), save(self, *a, **k)))
    history = [{"epoch": 1, "loss": 1.5, "train_accuracy": 0.3, "test_accuracy": 0.25}]
    report.plot_learning_curves({"convnet": history}, tmp_path / "curves.png")
    lines = [line for ax in figures[0].axes for line in ax.get_lines()]
    assert len(lines) == 3  # loss, train and test accuracy
    for line in lines:
        assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() > 0
