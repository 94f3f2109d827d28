"""jitnet.gradcheck: numerical gradients and the module / loss checks built on them."""

import os

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


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)


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
