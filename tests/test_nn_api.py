"""The PyTorch-style surface of jitnet.nn.Module: attribute assignment, parameters(),
load_state_dict, custom modules, and 0-d arrays."""

import inspect

import numpy as np
import pytest

import jitnet
from jitnet import nn
from jitnet.targets import backend

import ready_targets


@pytest.fixture(params=["numpy", "cpu"])
def target(request):
    yield from ready_targets.enter(request.param)


def names(module):
    return [name for name, _ in module.named_parameters()]


# -- parameters() ----------------------------------------------------------------------


def test_parameters_yields_as_pytorch(target):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert inspect.isgenerator(model.parameters())
    first = next(model.parameters())  # the device / dtype probe of PyTorch code
    assert first is model[1].weight and first.dtype == np.float32
    assert [p.name for p in model.parameters()] == ["weight", "bias"] * 2
    assert next(nn.ReLU().parameters(), None) is None


def test_backward_without_input_grad_skips_the_layers_before_the_first_parameters(target):
    # with parameters() a generator, `if m.parameters()` held for every module
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(4, 3))
    model(np.ones((2, 2, 2), np.float32))

    def refuse(dy):
        raise AssertionError("backward ran through a layer before the first parameters")

    model[0].backward = refuse
    model[1].backward = refuse
    assert model.backward(np.ones((2, 3), np.float32), input_grad=False) is None
    assert model[2].weight.grad is not None


def test_precompile_skips_the_input_gradient_of_the_first_layer_with_parameters(monkeypatch):
    from jitnet.kernels import precompile

    calls = []
    conv_backward = nn.Conv2d.backward

    def record(self, dy, input_grad=True):
        if jitnet.get_target() == "cpu":
            calls.append(input_grad)
        return conv_backward(self, dy, input_grad)

    monkeypatch.setattr(nn.Conv2d, "backward", record)
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 3), nn.ReLU())
    precompile.compile_training_kernels(model, (2, 2, 5, 5), np.float32)
    assert calls == [False]


# -- 0-d arrays ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_asarray_keeps_a_scalar_0_d(name):
    # np.ascontiguousarray returns at least 1-d
    module = backend(name)
    for value in (np.float32(2), 2.0, np.array(2.0, np.float32)):
        assert module.asarray(value).shape == ()
    assert module.asarray(np.float32(2), np.float64).dtype == np.float64
    assert module.asarray([[1, 2]]).shape == (1, 2)


@pytest.mark.parametrize(
    "layer", [nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, lambda: nn.Dropout(0.0)]
)
def test_an_element_wise_layer_keeps_a_0_d_input_0_d(target, layer):
    module = layer()
    for x in (np.float32(-0.5), np.array(1.5, np.float32)):
        y = module(x)
        assert tuple(y.shape) == () and y.dtype == np.float32
        assert tuple(module.backward(np.ones((), np.float32)).shape) == ()
    assert jitnet.asarray(np.float32(2)).shape == ()


@pytest.mark.parametrize(
    "loss, want", [(nn.MSELoss, 1.0), (nn.L1Loss, 1.0), (nn.BCEWithLogitsLoss, None)]
)
def test_a_regression_loss_takes_0_d_values(target, loss, want):
    fn = loss()
    value = fn(np.float32(1), np.float32(2) if want else np.float32(1))
    if want is not None:
        assert value == pytest.approx(want)
    assert tuple(fn.backward().shape) == ()
