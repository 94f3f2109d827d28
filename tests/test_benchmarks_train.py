"""benchmarks/bench_train.py: the steps it times (no timing is asserted)."""

import json

import pytest


@pytest.fixture(scope="module")
def bench_train(load_benchmark):
    return load_benchmark("bench_train")


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


def _main_with_fake_children(bench_train, monkeypatch, capsys, *options):
    """bench_train.main(options) with no child process: each contender's run is recorded
    (its kind, step count, PyTorch threads and the environment it would inherit)."""
    monkeypatch.setattr(bench_train.os, "environ", dict(bench_train.os.environ))
    for name in bench_train.STEADY_MALLOC_ENV:
        bench_train.os.environ.pop(name, None)
    runs = []

    def fake_run_child(kind, batch, steps, threads, batchnorm, env=None):
        runs.append({"kind": kind, "steps": steps, "threads": threads,
                     "env": dict(bench_train.os.environ if env is None else env)})
        return {"step_ms": 1.0, "first_step_s": 1.0, "maxrss_mb": 1.0, "wall_s": 1.0}

    monkeypatch.setattr(bench_train, "_run_child", fake_run_child)
    bench_train.main(["--batch-size", "2", "--repeat", "4", "--rounds", "1", "--no-torch",
                      "--no-cold", *options])
    return runs, capsys.readouterr().out


def test_every_contender_runs_with_the_steady_allocator_by_default(bench_train, monkeypatch,
                                                                   capsys):
    runs, report = _main_with_fake_children(bench_train, monkeypatch, capsys)
    assert [r["kind"] for r in runs] == ["cpu", "numpy"]
    for run in runs:
        for name, value in bench_train.STEADY_MALLOC_ENV.items():
            assert run["env"][name] == value
    assert "fixed at 32 MiB in every contender (the default" in report


def test_default_malloc_leaves_glibc_alone_and_says_so(bench_train, monkeypatch, capsys):
    runs, report = _main_with_fake_children(bench_train, monkeypatch, capsys,
                                            "--default-malloc")
    assert runs and all(name not in run["env"] for run in runs
                        for name in bench_train.STEADY_MALLOC_ENV)
    assert "the allocator's default in every contender (`--default-malloc`)" in report
    assert "PyTorch" in report


def test_jitnet_steps_are_timed_only_after_the_precompile_helper_is_done(bench_train,
                                                                         monkeypatch, capsys):
    from jitnet.kernels import precompile

    monkeypatch.setattr(precompile, "_helper", None)
    events = []

    class FakeHelper:  # still compiling until waited for
        def wait(self, timeout=None):
            events.append("helper done")
            return 0

    def step():  # the first step starts the helper, as on a cold cache
        if precompile._helper is None:
            monkeypatch.setattr(precompile, "_helper", FakeHelper())
        events.append("step")

    monkeypatch.setattr(bench_train, "jitnet_step", lambda *args, **kwargs: (step, None))
    bench_train._child("cpu", 2, 5, 1, False)
    assert events == ["step", "step", "helper done", "step", "step", "step"]
    assert json.loads(capsys.readouterr().out)["step_ms"] >= 0


def test_pytorch_gets_jitnets_thread_count_and_the_report_says_it(bench_train, monkeypatch,
                                                                   capsys):
    import numba

    monkeypatch.setattr(bench_train.os, "cpu_count", lambda: 4)  # as under taskset -c 0
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    runs, report = _main_with_fake_children(bench_train, monkeypatch, capsys)
    assert {run["threads"] for run in runs} == {1}
    assert "jitnet threads: 1, torch threads: 1." in report


def test_the_report_gives_each_contenders_step_count(bench_train, monkeypatch, capsys):
    runs, report = _main_with_fake_children(bench_train, monkeypatch, capsys)  # --repeat 4
    warmup = 2
    assert [(r["kind"], r["steps"]) for r in runs] == [("cpu", 4 + warmup),
                                                        ("numpy", 3 + warmup)]
    assert "median of 4 steps (3 for the numpy target), the `steps timed` column" in report
    header, *rows = [line for line in report.splitlines() if line.startswith("| ")][:3]
    column = header.split(" | ").index("steps timed")
    assert [row.split(" | ")[column] for row in rows] == ["4", "3"]
