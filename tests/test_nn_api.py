"""The PyTorch-style surface of jitnet.nn.Module: attribute assignment, parameters(),
load_state_dict, custom modules, and 0-d arrays."""

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
