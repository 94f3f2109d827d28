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
    with pytest.raises(TypeError, match=r"expected dy to be an array of shape .*, got list"):
        layer.backward(good.tolist())
    with pytest.raises(TypeError, match=r"expected dy to be an array of shape .*, got NoneType"):
        layer.backward(None)
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
        (ValueError, lambda: nn.Conv2d(3, 4, (3, 5)),
         r"Conv2d supports square kernel_size only, got \(3, 5\)"),
        (ValueError, lambda: nn.MaxPool2d(2, stride=[1, 2]),
         r"MaxPool2d supports square stride only, got \[1, 2\]"),
        # a pair where PyTorch takes none: Linear((4, 4), 2) was Linear(4, 2), and
        # Linear((4, 5), 2) said "supports square in_features only"
        (TypeError, lambda: nn.Linear((4, 4), 2),
         r"^Linear expected in_features to be an int >= 1, got \(4, 4\) \(tuple\)$"),
        (TypeError, lambda: nn.Conv2d(4, 4, 3, groups=(2, 2)),
         r"^Conv2d expected groups to be an int >= 1, got \(2, 2\) \(tuple\)$"),
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


def test_kernel_size_stride_and_padding_take_a_square_pair():
    conv = nn.Conv2d(3, 4, (3, 3), stride=[2, 2], padding=(1, 1))
    assert (conv.kernel_size, conv.stride, conv.padding) == (3, 2, 1)
    assert (nn.MaxPool2d((2, 2)).kernel_size, nn.MaxPool2d(3, stride=(1, 1)).stride) == (2, 1)


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


# -- parameters set by hand: `layer.weight.data = ...` ------------------------------------


def _set(attribute, value):
    """A function setting ``layer.<attribute>`` (dotted) to ``value``."""
    def set_it(layer):
        *path, last = attribute.split(".")
        owner = layer
        for name in path:
            owner = getattr(owner, name)
        setattr(owner, last, value)
    return set_it


f32 = np.float32
# (layer, what is set by hand, its input, error, message): the kernels took each size
# from the layer's configuration, so on the cpu target these read past an array's end
PARAMETER_CASES = {
    "linear_weight_wide": (
        lambda: nn.Linear(2, 2), _set("weight.data", np.ones((2, 50), f32)), (1, 2), ValueError,
        "Linear expected weight of shape (2, 2) (out_features, in_features), got (2, 50)"),
    "linear_bias_short": (
        lambda: nn.Linear(2, 2), _set("bias.data", np.ones(1, f32)), (1, 2), ValueError,
        "Linear expected bias of shape (2,) (out_features,), got (1,)"),
    "linear_weight_list": (
        lambda: nn.Linear(2, 2), _set("weight.data", [[1.0, 0.0], [0.0, 1.0]]), (1, 2),
        TypeError,
        "Linear expected weight to be an array of shape (2, 2) (out_features, in_features), "
        "got list"),
    "linear_weight_none": (
        lambda: nn.Linear(2, 2), _set("weight", None), (1, 2), TypeError,
        "Linear expected weight to be an array of shape (2, 2) (out_features, in_features), "
        "got NoneType"),
    "linear_weight_int": (
        lambda: nn.Linear(2, 2), _set("weight.data", np.ones((2, 2), np.int64)), (1, 2),
        ValueError, "Linear expected weight of dtype float32 or float64, got int64"),
    "linear_mixed_dtypes": (
        lambda: nn.Linear(2, 2), _set("weight.data", np.ones((2, 2))), (1, 2), ValueError,
        "Linear expected bias of dtype float64 (the weight's), got float32"),
    "conv_weight_channels": (
        lambda: nn.Conv2d(2, 2, 3), _set("weight.data", np.ones((2, 4, 3, 3), f32)),
        (1, 2, 3, 3), ValueError,
        "Conv2d expected weight of shape (2, 2, 3, 3) (out_channels, in_channels/groups, k, "
        "k), got (2, 4, 3, 3)"),
    "conv_weight_kernel": (
        lambda: nn.Conv2d(2, 2, 3), _set("weight.data", np.ones((2, 2, 5, 5), f32)),
        (1, 2, 3, 3), ValueError, "Conv2d expected weight of shape (2, 2, 3, 3)"),
    "conv_bias_long": (
        lambda: nn.Conv2d(2, 2, 3), _set("bias.data", np.ones(3, f32)), (1, 2, 3, 3),
        ValueError, "Conv2d expected bias of shape (2,) (out_channels,), got (3,)"),
    "maxout_bias": (
        lambda: nn.Maxout(2, 2), _set("bias.data", np.ones(3, f32)), (1, 2), ValueError,
        "Maxout expected bias of shape (4,) (out_features * pieces,), got (3,)"),
    "maxout_weight": (
        lambda: nn.Maxout(2, 2, pieces=3), _set("weight.data", np.ones((4, 2), f32)), (1, 2),
        ValueError,
        "Maxout expected weight of shape (6, 2) (out_features * pieces, in_features), got (4, 2)"),
    "batchnorm_running_mean": (
        lambda: nn.BatchNorm2d(4).eval(), _set("running_mean", np.zeros(1, f32)), (1, 4, 1, 1),
        ValueError, "BatchNorm2d expected running_mean of shape (4,) (num_features,), got (1,)"),
    "batchnorm_running_var_dtype": (
        lambda: nn.BatchNorm2d(4), _set("running_var", np.ones(4)), (2, 4, 2, 2),
        ValueError, "BatchNorm2d expected running_var of dtype float32 (the weight's), got "
                    "float64"),
    "batchnorm_bias": (
        lambda: nn.BatchNorm2d(4), _set("bias.data", np.zeros(5, f32)), (2, 4, 2, 2),
        ValueError, "BatchNorm2d expected bias of shape (4,) (num_features,), got (5,)"),
}


@pytest.mark.parametrize("case", sorted(PARAMETER_CASES))
def test_forward_checks_the_parameters_set_by_hand(target, case):
    make, change, shape, error, message = PARAMETER_CASES[case]
    layer = make()
    change(layer)
    x = np.ones(shape, np.float64 if case == "linear_mixed_dtypes" else np.float32)
    with pytest.raises(error, match=re.escape(message)):
        layer(x)


def test_a_refused_parameter_leaves_the_running_statistics_as_they_were(target):
    bn = nn.BatchNorm2d(3)
    bn.weight.data = np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"BatchNorm2d expected weight of shape \(3,\)"):
        bn(x4() + 5)
    np.testing.assert_array_equal(jitnet.to_numpy(bn.running_mean), np.zeros(3))
    np.testing.assert_array_equal(jitnet.to_numpy(bn.running_var), np.ones(3))


@pytest.mark.parametrize(
    "layers, index, attribute, value, message",
    [
        # the fused calls (Sequential's) check too
        (lambda: [nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()], 0, "bias.data",
         np.ones(2, np.float32), r"Conv2d expected bias of shape \(4,\)"),
        (lambda: [nn.BatchNorm2d(3), nn.MaxPool2d(2), nn.ReLU()], 0, "running_var",
         np.ones(2, np.float32), r"BatchNorm2d expected running_var of shape \(3,\)"),
        (lambda: [nn.Flatten(), nn.Linear(108, 5), nn.ReLU(), nn.Linear(5, 2)], 1,
         "weight.data", np.ones((5, 107), np.float32),
         r"Linear expected weight of shape \(5, 108\)"),
    ],
    ids=["conv_pool_relu", "batchnorm_pool_relu", "linear_relu"],
)
def test_sequential_checks_the_parameters_of_its_fused_layers(target, layers, index, attribute,
                                                             value, message):
    model = nn.Sequential(*layers())
    _set(attribute, value)(model[index])
    with pytest.raises(ValueError, match=message):
        model(x4())


@pytest.mark.parametrize(
    "layers, index",
    [
        (lambda: [nn.Conv2d(3, 4, 3, padding=1)], 0),
        (lambda: [nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()], 0),
        (lambda: [nn.Flatten(), nn.Linear(108, 5)], 1),
        (lambda: [nn.Flatten(), nn.Linear(108, 5), nn.ReLU(), nn.Linear(5, 2)], 3),
        (lambda: [nn.Flatten(), nn.Maxout(108, 5)], 1),
        (lambda: [nn.BatchNorm2d(3)], 0),
    ],
    ids=["conv", "conv_pool_relu", "linear", "relu_linear", "maxout", "batchnorm"],
)
@pytest.mark.parametrize("input_grad", [True, False])
def test_backward_checks_parameters_changed_since_forward(target, layers, index, input_grad):
    """The backward kernels read the weight too: one of another shape set between forward
    and backward was read past its end on the cpu target."""
    model = nn.Sequential(*layers())
    y = model(x4())
    layer = model[index]
    shape = tuple(layer.weight.shape)
    layer.weight.data = np.ones(shape[:-1] + (shape[-1] + 1,), np.float32)
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"{name} expected weight of shape \({shape[0]},"):
        model.backward(np.ones(y.shape, np.float32), input_grad=input_grad)


# -- inputs of the wrong kind ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_an_input_that_is_no_array_is_a_type_error_naming_its_type(target, name):
    make, data = LAYERS[name]
    layer = make()
    for bad, kind in [(None, "NoneType"), ("abc", "str"), (data().tolist(), "list"),
                      ({"x": 1}, "dict")]:
        with pytest.raises(TypeError, match=rf"^{name} expected an input array .* of float32 "
                                            rf"or float64, got {kind}$"):
            layer(bad)
    with pytest.raises(TypeError, match=rf"{name} expected a float32 or float64 input, got an "
                                        rf"array of dtype object"):
        layer(np.full(data().shape, None))
    with pytest.raises(ValueError, match=rf"{name} expected a float32 or float64 input, got "
                                         rf"int64$"):  # a numeric dtype: a ValueError, no hint
        layer(data().astype(np.int64))


@pytest.mark.parametrize(
    "loss, bad, message",
    [
        (nn.SoftmaxCrossEntropyLoss, None, r"integer class labels of shape \(4,\), got NoneType"),
        (nn.MulticlassHingeLoss, "abc", r"integer class labels of shape \(4,\), got str"),
        (nn.SoftmaxCrossEntropyLoss, np.array([None] * 4),
         r"integer class labels of shape \(4,\), got ndarray of dtype object"),
        (nn.BCEWithLogitsLoss, None, r"a numeric target of shape \(4, 3\), got NoneType"),
        (nn.MSELoss, {"a": 1}, r"a numeric target of shape \(4, 3\), got dict"),
        (nn.L1Loss, "abc", r"a numeric target of shape \(4, 3\), got str"),
    ],
)
def test_a_loss_names_the_type_of_labels_or_targets_that_hold_no_numbers(target, loss, bad,
                                                                         message):
    # None was "expected integer class labels, got dtype object", or for a regression
    # loss "expected a target of shape (4, 3) (the input's), got ()"
    with pytest.raises(TypeError, match=rf"^{loss.__name__} expected {message}$"):
        loss()(x2(4, 3), bad)


@pytest.mark.parametrize("loss", [nn.MSELoss, nn.L1Loss, nn.BCEWithLogitsLoss])
def test_a_loss_refuses_a_complex_target(target, loss):
    # complex numbers are numbers: "expected a numeric target" did not say what was wrong
    with pytest.raises(ValueError, match=rf"^{loss.__name__} expected a real target \(bool, "
                                         r"int or float\), got dtype complex128$"):
        loss()(x2(4, 3), np.ones((4, 3), complex))


def test_a_loss_takes_labels_and_targets_as_lists_still(target):
    scores = x2(4, 3)
    assert nn.SoftmaxCrossEntropyLoss()(scores, [0, 1, 2, 0]) > 0
    assert nn.MSELoss()(scores, scores.tolist()) == 0.0
    for bad, kind in [(None, "NoneType"), (scores.tolist(), "list")]:
        with pytest.raises(TypeError, match=rf"SoftmaxCrossEntropyLoss expected an input array "
                                            rf"\(N, C\) of float32 or float64, got {kind}"):
            nn.SoftmaxCrossEntropyLoss()(bad, [0, 1, 2, 0])
