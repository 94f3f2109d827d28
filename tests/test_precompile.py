"""jitnet.kernels.precompile: a cold first training run compiles its backward kernels
in a helper process."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitnet
from jitnet import config, nn
from jitnet.kernels import cpu, precompile

from cpu_patch import patch_cpu_kernel


def _small_net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 2 * 2, 5), nn.Sigmoid(),
    )


class _FakePopen:
    started = []

    def __init__(self, args, stdin, stdout, stderr, env):
        self.args, self.env = args, env
        self.stdin = self
        self.written = b""
        _FakePopen.started.append(self)

    def write(self, data):
        self.written += data

    def close(self):
        pass

    def poll(self):
        return 0


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried yet, with a fake helper and a cold cache."""
    monkeypatch.setattr(precompile, "_tried", False)
    monkeypatch.setattr(precompile, "_helper", None)
    monkeypatch.setattr(config, "PRECOMPILE", True)
    monkeypatch.setattr(precompile, "_training_kernels_cached", lambda model: False)
    monkeypatch.setattr(precompile.subprocess, "Popen", _FakePopen)
    monkeypatch.setattr(precompile.atexit, "register", lambda f: None)
    _FakePopen.started = []
    return _FakePopen.started


def test_the_first_training_forward_on_the_cpu_starts_one_helper(fresh):
    x = np.zeros((2, 3, 8, 8), np.float32)
    with jitnet.use_target("cpu"):
        model = _small_net()
        model(x)
        model(x)
    assert len(fresh) == 1
    helper = fresh[0]
    assert helper.env["JITNET_PRECOMPILE"] == "0"  # it starts none of its own
    assert "precompile.child(job)" in helper.args[-1]
    assert repr(os.path.dirname(jitnet.__file__)) in helper.args[-1]  # this very package
    kind, (sent, shape, dtype) = pickle.loads(helper.written)
    assert kind == "backward"
    assert [type(m) for m in sent] == [type(m) for m in model]
    assert shape == (2, 3, 8, 8) and dtype == "float32"


def test_the_helper_runs_a_few_images_of_a_large_batch(fresh):
    with jitnet.use_target("cpu"):
        _small_net()(np.zeros((64, 3, 8, 8), np.float32))
    _, (_, shape, _) = pickle.loads(fresh[0].written)
    assert shape == (8, 3, 8, 8)


def test_compare_starts_the_convnets_helper_before_the_hog_classifier(fresh, monkeypatch):
    from jitnet import train

    x = (np.arange(20 * 3 * 32 * 32) % 256).astype(np.uint8).reshape(20, 3, 32, 32)
    y = np.arange(20) % 10
    state = jitnet.rng.get_state()
    with jitnet.use_target("cpu"):
        train.precompile_convnet(x, y)
        train.precompile_convnet(x, y)  # once per process
    assert jitnet.rng.get_state() == state  # the training's random draws are untouched
    assert len(fresh) == 1
    kind, (model, loss_fn, loader, normalize) = pickle.loads(fresh[0].written)
    assert kind == "step" and len(loader.x) == 8 and loader.batch_size == 8
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert type(loss_fn).__name__ == "SoftmaxCrossEntropyLoss"
    assert type(normalize).__name__ == "Normalize"


def test_no_step_helper_off_the_cpu_target(fresh):
    from jitnet import train

    x = np.zeros((8, 3, 32, 32), np.uint8)
    with jitnet.use_target("numpy"):
        train.precompile_convnet(x, np.zeros(8, np.int64))
    assert fresh == []


def test_the_step_helper_compiles_what_the_training_runs(monkeypatch):
    # Its job, run here: a training step's forward as fit takes it (the fused
    # convolution, batch norm and pooling calls), every layer's backward and the
    # updates, then predict in eval mode.
    from jitnet import data, models

    calls = []
    for name in ("conv2d_forward", "conv2d_maxpool2d_forward", "batchnorm2d_maxpool2d_forward",
                 "batchnorm2d_forward", "conv2d_backward", "batchnorm2d_backward",
                 "linear_forward", "linear_backward", "sgd_update", "sgd_update_many"):
        if hasattr(cpu, name):
            kernel = getattr(cpu, name)
            patch_cpu_kernel(monkeypatch, name, lambda *a, name=name, kernel=kernel, **kw:
                             calls.append(name) or kernel(*a, **kw))
    model = models.convnet(batchnorm=True)
    normalize = data.transforms.Normalize([0.5] * 3, [0.25] * 3)
    loader = data.DataLoader(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, np.int64), 4,
                             transform=normalize)
    precompile.compile_step_kernels(model, nn.SoftmaxCrossEntropyLoss(), loader, normalize)
    assert "conv2d_backward" in calls and "linear_backward" in calls
    assert "batchnorm2d_maxpool2d_forward" in calls  # Sequential's fused forward
    assert any(name.startswith("sgd_update") for name in calls)
    assert not model.training  # and predict ran in eval mode


@pytest.mark.parametrize("case", ["eval", "numpy", "off", "cached"])
def test_no_helper_unless_a_cold_training_run_on_the_cpu(fresh, monkeypatch, case):
    target = "numpy" if case == "numpy" else "cpu"
    if case == "off":
        monkeypatch.setattr(config, "PRECOMPILE", False)
    if case == "cached":
        monkeypatch.setattr(precompile, "_training_kernels_cached", lambda model: True)
    with jitnet.use_target(target):
        model = _small_net()
        if case == "eval":
            model.eval()
        model(np.zeros((2, 3, 8, 8), np.float32))
    assert fresh == []


def test_a_model_that_does_not_pickle_starts_none_and_still_runs(fresh):
    with jitnet.use_target("cpu"):
        model = _small_net()
        model.hook = lambda: None  # not picklable
        y = model(np.zeros((2, 3, 8, 8), np.float32))
    assert fresh == [] and y.shape == (2, 5)


def test_training_kernels_cached_reads_numbas_index(monkeypatch):
    cpu.sgd_update(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32),
                   0.1, 0.9, False, 0.0)  # compiled or loaded: its index is on disk now
    linear = nn.Sequential(nn.Linear(3, 2))
    assert precompile._training_kernels_cached(linear)
    # a model with convolutions also needs a convolution's weight gradient cached
    for kernel in (cpu.conv_rows._conv2d_weight_rows, cpu.conv_rows._conv2d_weight_rows3x3,
                   cpu.conv_tiles._conv2d_weight_channel_tiles, cpu.conv_tiles._conv2d_weight_tiles,
                   cpu.conv_pooled._conv2d_weight_pooled,
                   cpu.conv_pooled._conv2d_weight_pooled_taps,
                   cpu.conv_depthwise._depthwise_weight_grad_kernel):
        monkeypatch.setattr(kernel._cache._cache_file, "_index_path", "/nonexistent")
    assert not precompile._training_kernels_cached(_small_net())
    assert precompile._training_kernels_cached(linear)


def test_compile_training_kernels_walks_every_layer_backward(monkeypatch):
    calls = []
    for name in ("conv2d_backward", "conv2d_maxpool2d_backward", "maxpool2d_relu_backward",
                 "maxpool2d_backward", "batchnorm2d_backward", "relu_backward",
                 "dropout_backward", "linear_backward", "sigmoid_backward", "sgd_update",
                 "adam_update"):
        kernel = getattr(cpu, name)
        patch_cpu_kernel(monkeypatch, name, lambda *args, name=name, kernel=kernel, **kw:
                         calls.append((name, args)) or kernel(*args, **kw))
    model = _small_net()
    before = [p.data.copy() for p in model.parameters()]
    precompile.compile_training_kernels(model, (2, 3, 8, 8), "float32")
    names = [name for name, _ in calls]
    # the optimizers first, then every layer's backward, the first layer first, the ReLUs
    # after poolings with them, a convolution with its pooling and ReLU as the step takes
    # them; the input gradient of the second convolution only (the first layer needs
    # none, a matrix product's is a forward kernel)
    assert names == ["sgd_update", "adam_update", "conv2d_backward", "batchnorm2d_backward",
                     "maxpool2d_relu_backward", "conv2d_maxpool2d_backward",
                     "dropout_backward", "linear_backward", "sigmoid_backward"]
    input_grad_at = {"conv2d_backward": -1, "conv2d_maxpool2d_backward": 9,
                     "linear_backward": -1}
    input_grads = [args[input_grad_at[name]] for name, args in calls if name in input_grad_at]
    assert input_grads == [False, True, False]
    # each got the gradient a step gives it: dense after a batch norm; the pooling's,
    # with the ReLU's output, for the second convolution
    first = next(args[0] for name, args in calls if name == "conv2d_backward")
    assert np.count_nonzero(first) == first.size
    second = next(args for name, args in calls if name == "conv2d_maxpool2d_backward")
    assert second[0].shape == (2, 8, 2, 2) and second[10].shape == (2, 8, 2, 2)
    for p, b in zip(model.parameters(), before):  # the results are thrown away
        np.testing.assert_array_equal(p.data, b)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_helper_compiles_the_gradient_kernels_the_step_takes(monkeypatch, batchnorm):
    # The reference ConvNet's second convolution gets a max pooling's gradient, whose
    # input gradient takes the sparse kernel; with a batch norm in between it gets a
    # dense one (its input gradient then runs on a forward kernel).
    from jitnet import models

    calls, kernels = [], {}
    for name in ("_conv2d_input_sparse", "_conv2d_weight_channel_tiles", "_conv2d_weight_rows3x3",
                 "_conv2d_weight_pooled", "_conv2d_weight_pooled_taps"):
        def counted(*args, name=name):
            calls.append(name)
            return kernels[name](*args)

        kernels[name] = patch_cpu_kernel(monkeypatch, name, counted)
    precompile.compile_training_kernels(models.convnet(batchnorm=batchnorm), (2, 3, 32, 32),
                                        "float32")
    if batchnorm:
        assert calls == ["_conv2d_weight_rows3x3", "_conv2d_weight_channel_tiles"]
    else:
        # the weight gradients from the poolings' windows
        assert calls == ["_conv2d_weight_pooled", "_conv2d_input_sparse",
                         "_conv2d_weight_pooled_taps"]


@pytest.mark.slow
def test_a_cold_run_leaves_the_backward_kernels_in_the_cache(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, jitnet
        from jitnet import nn
        from jitnet.kernels import precompile
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        model(np.zeros((2, 3, 8, 8), np.float32))  # a forward pass only
        print("helper exit code", precompile.wait(timeout=600))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), JITNET_PRECOMPILE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr
    assert "helper exit code 0" in out.stdout
    cached = " ".join(p.name for p in tmp_path.rglob("*.nbi"))
    # the helper's: a weight gradient (from the pooling's windows) and an optimizer update,
    # which this process never ran
    assert "_conv2d_weight_pooled" in cached and "_sgd_update" in cached
