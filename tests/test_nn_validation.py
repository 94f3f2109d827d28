"""What the layers refuse, and that a refused call loses nothing.

Backward is the dangerous side: the cpu kernels trust their arguments, so an
upstream gradient of the wrong shape used to read and write past the ends of the
buffers (a segfault, or silently wrong gradients) and a backward before any
forward was an AttributeError from deep inside a layer.
"""

import re

import numpy as np
import pytest

import jitnet
from jitnet import nn

import ready_targets


@pytest.fixture(params=["numpy", "cpu"])
def target(request):
    yield from ready_targets.enter(request.param)


def x4(n=2, c=3, h=6, w=6, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)


def x2(n=4, d=6, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, d)).astype(dtype)


# (layer, its input): every layer with a backward of its own
LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), x4),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), x4),
    "Linear": (lambda: nn.Linear(6, 3), x2),
    "Maxout": (lambda: nn.Maxout(6, 3, pieces=2), x2),
    "Flatten": (nn.Flatten, x4),
    "ReLU": (nn.ReLU, x4),
    "LeakyReLU": (nn.LeakyReLU, x4),
    "Sigmoid": (nn.Sigmoid, x4),
    "Tanh": (nn.Tanh, x4),
    "ELU": (nn.ELU, x4),
    "Dropout": (lambda: nn.Dropout(0.5), x4),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), x4),
}


def grads(layer):
    return [None if p.grad is None else np.array(jitnet.to_numpy(p.grad))
            for p in layer.parameters()]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_before_forward_is_a_runtime_error_naming_the_layer(target, name):
    make, _ = LAYERS[name]
    with pytest.raises(RuntimeError, match=rf"{name}.backward called before its forward pass"):
        make().backward(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_refuses_a_gradient_of_another_shape_or_dtype(target, name):
    make, data = LAYERS[name]
    layer = make()
    y = layer(data())
    shape = tuple(y.shape)
    good = np.ones(shape, np.float32)
    layer.backward(good)
    before = grads(layer)

    wrong_shapes = [shape[:-1] + (shape[-1] + 1,), (shape[0] + 1,) + shape[1:], shape[1:]]
    for wrong in wrong_shapes:
        message = (f"{name}.backward expected dy of shape {shape} and dtype float32 (those "
                   f"of its forward output), got shape {wrong} and dtype float32")
        with pytest.raises(ValueError, match=re.escape(message)):
            layer.backward(np.ones(wrong, np.float32))
    with pytest.raises(ValueError, match=r"got shape .* and dtype float64"):
        layer.backward(good.astype(np.float64))
    with pytest.raises(ValueError, match=r"expected dy to be an array of shape .*, got list"):
        layer.backward(good.tolist())
    for kept, now in zip(before, grads(layer)):  # a refused backward loses nothing
        np.testing.assert_array_equal(kept, now)
    layer.backward(good)  # and the layer still works


def test_a_gradient_on_the_device_is_refused_on_a_host_target(target):
    class FakeDeviceArray:
        dtype = np.dtype(np.float32)
        shape = (4, 3)

        def copy_to_host(self):
            return np.zeros(self.shape, self.dtype)

    layer = nn.Linear(6, 3)
    layer(x2())
    with pytest.raises(
        ValueError, match=rf"got dy on the cuda device but the active target is '{target}'"
    ):
        layer.backward(FakeDeviceArray())


def test_sequential_checks_the_gradient_of_its_fused_layers(target):
    """The fused calls (convolution + pooling + ReLU, Linear + ReLU) check too, and the
    error names the layer whose output ``dy`` belongs to."""
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU())
    y = pooled(x4())
    assert tuple(y.shape) == (2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"ReLU.backward expected dy of shape \(2, 4, 3, 3\)"):
        pooled.backward(np.ones((2, 4, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"ReLU.backward expected dy of shape \(2, 4, 3, 3\)"):
        pooled.backward(np.ones((2, 4, 3, 4), np.float32), input_grad=False)

    dense = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    dense(x2())
    with pytest.raises(ValueError, match=r"Linear.backward expected dy of shape \(4, 3\)"):
        dense.backward(np.ones((4, 5), np.float32))
    dense.backward(np.ones((4, 3), np.float32))


def test_backward_after_to_asks_for_a_new_forward(target):
    layer = nn.Conv2d(3, 4, 3)
    layer(x4())
    layer.to(target)
    with pytest.raises(RuntimeError, match="after Module.to, which drops what forward kept"):
        layer.backward(np.ones((2, 4, 4, 4), np.float32))


@pytest.mark.parametrize(
    "loss, scores, labels",
    [
        (nn.SoftmaxCrossEntropyLoss, np.zeros((0, 3), np.float32), np.zeros(0, np.int64)),
        (nn.MulticlassHingeLoss, np.zeros((0, 3), np.float32), np.zeros(0, np.int64)),
        (nn.MSELoss, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)),
        (nn.L1Loss, np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32)),
        (nn.BCEWithLogitsLoss, np.zeros(0, np.float32), np.zeros(0, np.float32)),
    ],
)
def test_a_loss_of_no_scores_is_refused(target, loss, scores, labels):
    """The mean over nothing: NaN on one target and ZeroDivisionError on another
    before, a clear error on every target now."""
    with pytest.raises(ValueError, match=r"expected at least one score to average over"):
        loss()(scores, labels)


@pytest.mark.parametrize(
    "error, make, message",
    [
        (ValueError, lambda: nn.BatchNorm2d(3, eps=0),
         r"BatchNorm2d expected eps to be a finite number > 0, got 0"),
        (ValueError, lambda: nn.BatchNorm2d(3, eps=float("nan")), r"eps .* got nan"),
        (TypeError, lambda: nn.BatchNorm2d(3, eps="1e-5"), r"eps .* got '1e-5' \(str\)"),
        (ValueError, lambda: nn.BatchNorm2d(3, momentum=1.5),
         r"momentum to be a finite number in \[0, 1\], got 1.5"),
        (TypeError, lambda: nn.BatchNorm2d(3, momentum=True), r"momentum .* got True \(bool\)"),
        (TypeError, lambda: nn.LeakyReLU("0.1"),
         r"LeakyReLU expected negative_slope to be a finite number, got '0.1'"),
        (ValueError, lambda: nn.ELU(float("inf")),
         r"ELU expected alpha to be a finite number, got inf"),
        (ValueError, lambda: nn.Dropout(1.5),
         r"Dropout expected p to be a finite number in \[0, 1\] \(a probability\), got 1.5"),
        (TypeError, lambda: nn.Dropout(None), r"Dropout expected p .* got None \(NoneType\)"),
        (TypeError, lambda: nn.MulticlassHingeLoss(margin=[1.0]), r"margin .* got \[1.0\]"),
        (TypeError, lambda: nn.Conv2d(3, 4, 2.5), r"kernel_size to be an int >= 1, got 2.5"),
        (ValueError, lambda: nn.Conv2d(3, 4, 0), r"kernel_size to be an int >= 1, got 0"),
        (TypeError, lambda: nn.Sequential("x"), r"Sequential expected Module arguments, got str"),
        (TypeError, lambda: nn.Sequential(nn.ReLU(), nn.ReLU), r"Module arguments, got type"),
        # only a bool is a flag: bool("no") is True, bias=0 dropped the bias silently
        (TypeError, lambda: nn.Linear(2, 2, bias="no"),
         r"Linear expected bias to be True or False, got 'no' \(str\)"),
        (TypeError, lambda: nn.Conv2d(2, 2, 3, bias=0),
         r"Conv2d expected bias to be True or False, got 0 \(int\)"),
        (TypeError, lambda: nn.Dropout().train(mode="False"),
         r"Dropout.train expected mode to be True or False, got 'False' \(str\)"),
        (TypeError, lambda: nn.Sequential(nn.ReLU()).train(0), r"Sequential.train expected mode"),
    ],
)
def test_constructors_refuse_numbers_they_cannot_use(error, make, message):
    """A value of the wrong kind is a TypeError that names its type, a number out of
    range a ValueError."""
    with pytest.raises(error, match=message):
        make()


def test_flags_take_python_and_numpy_bools():
    assert nn.Linear(2, 2, bias=np.False_).bias is None
    assert nn.Conv2d(2, 2, 3, bias=np.True_).bias is not None
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Dropout())
    assert not any(m.training for m in model.train(np.False_).modules())
    assert all(type(m.training) is bool for m in model.modules())
    assert all(m.training for m in model.train().modules())


def test_numbers_they_can_use_are_kept_as_floats():
    assert nn.BatchNorm2d(3, eps=1, momentum=np.float32(0.5)).eps == 1.0
    assert nn.LeakyReLU(-2).negative_slope == -2.0
    assert isinstance(nn.Dropout(np.float64(0.25)).p, float)


@pytest.mark.parametrize("dtype", [np.float16, "int32", "abc", object])
def test_to_refuses_a_dtype_without_kernels_and_moves_nothing(dtype):
    model = nn.Sequential(nn.Linear(6, 3), nn.BatchNorm2d(1))
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"Sequential.to expected dtype float32 or float64, got"):
        model.to(dtype=dtype)
    for key, value in model.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 5), np.float32), r"0.bias expected shape \(3,\), got \(3, 5\)"),
        (np.array(["a", "b", "c"]), r"0.bias expected a numeric array, got dtype <U1"),
    ],
)
def test_load_state_dict_checks_everything_before_copying_anything(bad, message):
    model = nn.Sequential(nn.Linear(6, 3), nn.ReLU())
    before = model.state_dict()
    state = {key: value + 1 for key, value in before.items()}
    state["0.bias"] = bad  # the weight comes first and would be copied already
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "dtype, got", [("int32", "int32"), (np.float16, "float16"), ("bogus", "'bogus'")]
)
def test_a_layer_names_itself_and_the_dtype_it_cannot_hold(dtype, got):
    """The constructors and Module.to share one check (a name NumPy does not know
    was its TypeError, 'data type not understood', before)."""
    with pytest.raises(ValueError, match=f"^Linear expected dtype float32 or float64, got {got}$"):
        nn.Linear(2, 3, dtype=dtype)
