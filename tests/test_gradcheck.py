"""jitnet.gradcheck: numerical gradients and the module / loss checks built on them."""

import os
import re

import numpy as np
import pytest

import jitnet
from jitnet import nn
from jitnet.gradcheck import check_loss, check_module, numerical_gradient, rel_error
from jitnet.kernels import CONTRACT
from jitnet.targets import backend


@pytest.fixture(autouse=True)
def numpy_target():
    with jitnet.use_target("numpy"):
        jitnet.manual_seed(0)
        yield


def ready_targets():
    """Targets whose kernel module imports and exports the contract (cuda: real GPU only)."""
    names = []
    for name in jitnet.available_targets():
        if name == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            continue
        try:
            module = backend(name)
        except (ImportError, jitnet.TargetUnavailableError):
            continue
        if all(hasattr(module, n) for n in CONTRACT):
            names.append(name)
    return names


def test_numerical_gradient_of_known_functions(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(v**3), x), 3 * x**2, rtol=1e-8)
    x_before = x.copy()
    df = rng.standard_normal((3, 4))
    np.testing.assert_allclose(numerical_gradient(np.sin, x, df=df), np.cos(x) * df, rtol=1e-8)
    np.testing.assert_array_equal(x, x_before)  # restored after every perturbation


def test_numerical_gradient_needs_float64():
    with pytest.raises(ValueError, match="float64 np.ndarray, got float32"):
        numerical_gradient(np.sum, np.ones(3, np.float32))


def test_numerical_gradient_refuses_what_it_cannot_use():
    with pytest.raises(TypeError, match="float64 np.ndarray, got list"):
        numerical_gradient(np.sum, [1.0, 2.0])
    with pytest.raises(TypeError, match="expected f to be callable, got int"):
        numerical_gradient(3, np.ones(3))
    for h in (0, -1e-5, float("nan")):  # h=0 divided by zero
        with pytest.raises(ValueError, match=r"expected h to be a finite number > 0, got"):
            numerical_gradient(np.sum, np.ones(3), h=h)
    with pytest.raises(TypeError, match=r"expected h to be a finite number > 0, got '1e-5'"):
        numerical_gradient(np.sum, np.ones(3), h="1e-5")
    with pytest.raises(ValueError, match=r"C-contiguous array, got strides \(24,\) for shape"):
        numerical_gradient(np.sum, np.ones((3, 3))[:, 0])
    # a df of another shape than f(x) broadcast into a wrong sum
    with pytest.raises(ValueError, match=r"f\(x\) of the shape of df \(1, 3\), got \(3,\)"):
        numerical_gradient(np.sin, np.ones(3), df=np.ones((1, 3)))


def test_numerical_gradient_of_an_empty_array_is_empty():
    # was "expected a contiguous array" (an empty array shares no memory with its view)
    for shape in [(0,), (0, 3), (2, 0, 4)]:
        grad = numerical_gradient(np.sum, np.zeros(shape))
        assert grad.shape == shape and grad.dtype == np.float64


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0


@pytest.mark.parametrize("a, b", [((3, 1), (1, 3)), ((3,), (4,)), ((2, 3), (3, 2))])
def test_rel_error_refuses_arrays_of_other_shapes(a, b):
    # (3, 1) and (1, 3) broadcast and "agreed"
    with pytest.raises(ValueError, match=re.escape(f"arrays of one shape, got {a} and {b}")):
        rel_error(np.ones(a), np.ones(b))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, dtype="float64"), (2, 2, 5, 5)),
        (lambda: nn.Linear(4, 3, dtype="float64"), (3, 4)),
        (lambda: nn.Maxout(4, 2, pieces=3, dtype="float64"), (3, 4)),
        (lambda: nn.BatchNorm2d(3, dtype="float64"), (2, 3, 3, 3)),
        (lambda: nn.Sequential(nn.ELU(), nn.Dropout(0.4), nn.Tanh()), (3, 5)),
        (lambda: nn.Sequential(nn.Sigmoid(), nn.LeakyReLU(0.3)), (3, 5)),
    ],
    ids=["conv", "linear", "maxout", "batchnorm", "elu_dropout_tanh", "sigmoid_leaky"],
)
def test_check_module_passes_for_correct_layers(rng, make, shape):
    module = make()
    errors = check_module(module, rng.standard_normal(shape))
    assert set(errors) == {"input"} | {name for name, _ in module.named_parameters()}
    assert max(errors.values()) < 1e-6, errors


def test_check_module_catches_a_wrong_backward(rng):
    class Broken(nn.Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.weight.grad = self.weight.grad * 1.01
            return dx

    errors = check_module(Broken(3, 2, dtype="float64"), rng.standard_normal((4, 3)))
    assert errors["weight"] > 1e-3 and errors["input"] < 1e-7


def test_check_module_needs_float64_parameters(rng):
    with pytest.raises(ValueError, match="float64 parameters, got float32 for weight"):
        check_module(nn.Linear(3, 2), rng.standard_normal((4, 3)))


def test_check_module_and_check_loss_want_modules(rng):
    with pytest.raises(TypeError, match="check_module expected a jitnet.nn.Module, got function"):
        check_module(lambda x: x, rng.standard_normal((1, 3)))
    with pytest.raises(TypeError, match="check_loss expected a jitnet.nn loss, got function"):
        check_loss(lambda s, y: 0.0, rng.standard_normal((2, 3)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="check_module expected h to be a finite number > 0"):
        check_module(nn.Linear(3, 2, dtype="float64"), rng.standard_normal((1, 3)), h=0)
    with pytest.raises(ValueError, match="check_loss expected h to be a finite number > 0"):
        check_loss(nn.MSELoss(), rng.standard_normal((2, 3)), np.zeros((2, 3)), h=-1.0)


def test_check_module_on_an_empty_batch(rng):
    errors = check_module(nn.Linear(3, 2, dtype="float64"), np.zeros((0, 3)))
    assert errors == {"input": 0.0, "weight": 0.0, "bias": 0.0}


def test_check_module_leaves_the_running_statistics_as_they_were(rng):
    # its 2 * numel + 1 training-mode forwards moved running_mean from 0 to ~0.3
    model = nn.Sequential(nn.Conv2d(2, 2, 1, dtype="float64"), nn.BatchNorm2d(2, dtype="float64"))
    before = model.state_dict()
    errors = check_module(model, rng.standard_normal((2, 2, 3, 3)) + 1.0)
    assert errors["1.weight"] < 1e-6
    after = model.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize(
    "loss_fn, kind",
    [
        (nn.SoftmaxCrossEntropyLoss(), "labels"),
        (nn.MulticlassHingeLoss(), "labels"),
        (nn.BCEWithLogitsLoss(), "probabilities"),
        (nn.MSELoss(), "values"),
        (nn.L1Loss(), "values"),
    ],
    ids=["cross_entropy", "hinge", "bce", "mse", "l1"],
)
def test_check_loss(rng, loss_fn, kind):
    target = {
        "labels": rng.integers(0, 5, 4),
        "probabilities": rng.random((4, 5)),
        "values": rng.standard_normal((4, 5)),
    }[kind]
    assert check_loss(loss_fn, rng.standard_normal((4, 5)), target) < 1e-7


@pytest.mark.parametrize("name", ready_targets())
def test_whole_small_network_on_every_target(rng, name):
    with jitnet.use_target(name):
        jitnet.manual_seed(1)
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(12, 4),
            nn.Sigmoid(),
        ).to(dtype="float64")
        errors = check_module(model, rng.standard_normal((3, 2, 4, 4)))
        # the conv bias feeds BatchNorm, which removes it: its true gradient is 0 and its
        # relative error is noise over noise
        del errors["0.bias"]
        assert max(errors.values()) < 1e-5, errors
        loss = nn.SoftmaxCrossEntropyLoss()
        assert check_loss(loss, rng.standard_normal((5, 4)), rng.integers(0, 4, 5)) < 1e-7
