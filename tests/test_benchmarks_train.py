"""benchmarks/bench_train.py: the steps it times (no timing is asserted)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_train():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its `common`
    try:
        spec = importlib.util.spec_from_file_location("bench_train",
                                                      ROOT / "benchmarks" / "bench_train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_jitnet_step_trains_the_chosen_model(bench_train, batchnorm, monkeypatch):
    import jitnet
    from jitnet import models, nn

    built = []
    real = models.convnet

    def spy(**options):
        built.append(real(**options))
        return built[-1]

    monkeypatch.setattr(models, "convnet", spy)
    with jitnet.use_target("cpu"):
        step, sync = bench_train.jitnet_step("cpu", 4, batchnorm=batchnorm)
        first, second = step(), step()
    assert sync is None
    assert second < first  # the same batch: SGD lowers its loss
    norms = [m for m in built[0] if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (2 if batchnorm else 0)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_torch_step_builds_the_same_architecture(bench_train, batchnorm):
    torch = pytest.importorskip("torch")
    layers = []
    real = torch.nn.Sequential

    def spy(*modules):
        layers.extend(type(m).__name__ for m in modules)
        return real(*modules)

    torch.nn.Sequential = spy
    try:
        step, sync = bench_train.torch_step(torch, "cpu", 4, batchnorm)
    finally:
        torch.nn.Sequential = real
    assert sync is None and step().item() > 0
    block = ["Conv2d"] + ["BatchNorm2d"] * batchnorm + ["ReLU", "MaxPool2d"]
    assert layers == block * 2 + ["Flatten", "Linear", "ReLU", "Linear"]
