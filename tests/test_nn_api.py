"""The PyTorch-style surface of jitnet.nn.Module: attribute assignment, parameters(),
load_state_dict, custom modules, and 0-d arrays."""

import inspect
import re

import numpy as np
import pytest

import jitnet
from jitnet import nn
from jitnet.nn.module import IncompatibleKeys
from jitnet.targets import backend

import ready_targets


@pytest.fixture(params=["numpy", "cpu"])
def target(request):
    yield from ready_targets.enter(request.param)


def names(module):
    return [name for name, _ in module.named_parameters()]


# -- assigning attributes (PyTorch's Module.__setattr__ rules) ----------------------------


@pytest.mark.parametrize(
    "value, kind",
    [
        (np.ones((2, 2), np.float32), "numpy.ndarray"),
        ([[1.0, 0.0], [0.0, 1.0]], "list"),
        (nn.ReLU(), "jitnet.nn.layers.ReLU"),
    ],
)
def test_a_parameter_takes_only_a_parameter_or_none(target, value, kind):
    # a plain array used to unregister the weight: no longer trained, saved or moved
    layer = nn.Linear(2, 2)
    weight = layer.weight
    message = (f"cannot assign '{kind}' as parameter 'weight' of Linear "
               "(jitnet.nn.Parameter or None expected)")
    with pytest.raises(TypeError, match=re.escape(message)):
        layer.weight = value
    assert layer.weight is weight and names(layer) == ["weight", "bias"]
    assert set(layer.state_dict()) == {"weight", "bias"}
    layer.weight.data = np.ones((2, 2), np.float32)  # the way to set the values
    np.testing.assert_array_equal(jitnet.to_numpy(layer(np.ones((1, 2), np.float32))),
                                  1 + 1 + jitnet.to_numpy(layer.bias.data)[None])


def test_a_child_module_takes_only_a_module_or_none():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    child = model[0]
    with pytest.raises(TypeError, match=r"cannot assign 'numpy.ndarray' as child module '0' of "
                                        r"Sequential \(jitnet.nn.Module or None expected\)"):
        setattr(model, "0", np.ones(3))
    assert model[0] is child and names(model) == ["0.weight", "0.bias"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    net = Net()
    with pytest.raises(TypeError, match=r"cannot assign 'int' as child module 'fc' of Net"):
        net.fc = 3
    net.fc = nn.Linear(2, 3)  # another module: fine
    assert names(net) == ["fc.weight", "fc.bias"]
    net.fc = None  # None unregisters it, as for a parameter
    assert names(net) == [] and net.fc is None


def test_a_buffer_takes_only_an_array(target):
    bn = nn.BatchNorm2d(2)
    kept = bn.running_mean
    with pytest.raises(TypeError, match=r"cannot assign 'list' as buffer 'running_mean' of "
                                        r"BatchNorm2d \(an array of the target expected\)"):
        bn.running_mean = [0.0, 0.0]
    assert bn.running_mean is kept
    bn.running_var = jitnet.asarray(np.full(2, 4.0, np.float32))
    np.testing.assert_array_equal(bn.state_dict()["running_var"], [4.0, 4.0])


def test_a_module_that_skipped_super_init_says_so():
    class NoSuper(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"cannot assign module 'fc' before "
                                             r"Module.__init__\(\) call: NoSuper.__init__ must "
                                             r"call super\(\).__init__\(\) first"):
        NoSuper()

    class Plain(nn.Module):
        def __init__(self):
            self.scale = 2.0  # a plain attribute before Module.__init__ is fine (PyTorch too)

        def forward(self, x):
            return x

    plain = Plain()
    assert plain.scale == 2.0
    with pytest.raises(AttributeError, match=r"'Plain' object has no attribute '_parameters': "
                                             r"its __init__ did not call super\(\).__init__\(\)"):
        list(plain.parameters())
    with pytest.raises(AttributeError, match=r"^'Plain' object has no attribute 'other'$"):
        _ = plain.other  # any other missing attribute: Python's usual message


def test_a_custom_module_without_forward_or_backward_says_what_to_write(target):
    class NoBackward(nn.Module):
        def forward(self, x):
            return x

    model = nn.Sequential(NoBackward(), nn.Linear(2, 2))
    model(np.ones((1, 2), np.float32))
    message = (r"NoBackward.backward\(dy\) is not implemented: jitnet modules need an explicit "
               r"backward pass, backward\(self, dy\) setting p.grad .* returning dx")
    with pytest.raises(NotImplementedError, match=message):
        model.backward(np.ones((1, 2), np.float32))
    with pytest.raises(NotImplementedError, match=r"Module.forward\(x\) is not implemented"):
        nn.Module()(np.ones(2))


# -- repr: the settings, as PyTorch's extra_repr shows them ------------------------------


@pytest.mark.parametrize("module, text", [
    (lambda: nn.Conv2d(4, 8, 3), "Conv2d(4, 8, kernel_size=3)"),
    (lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False),
     "Conv2d(4, 8, kernel_size=3, stride=2, padding=1, groups=2, bias=False)"),
    (lambda: nn.Maxout(6, 3, pieces=2), "Maxout(in_features=6, out_features=3, pieces=2)"),
    (lambda: nn.LeakyReLU(0.2), "LeakyReLU(negative_slope=0.2)"),
    (lambda: nn.ELU(), "ELU(alpha=1.0)"),
    (lambda: nn.Dropout(0.25), "Dropout(p=0.25)"),
    (lambda: nn.MulticlassHingeLoss(margin=2), "MulticlassHingeLoss(margin=2.0)"),
    (lambda: nn.Linear(2, 3).weight, "Parameter(name='weight', shape=(3, 2), dtype=float32)"),
], ids=["conv", "conv_all", "maxout", "leaky_relu", "elu", "dropout", "hinge", "parameter"])
def test_repr_shows_the_settings(module, text):
    assert repr(module()) == text


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


# -- load_state_dict -------------------------------------------------------------------


@pytest.mark.parametrize("state, got", [(None, "NoneType"), ([1, 2], "list"), ("abc", "str")])
def test_load_state_dict_wants_a_mapping(state, got):
    model = nn.Sequential(nn.Linear(2, 2))
    before = model.state_dict()
    with pytest.raises(TypeError, match=rf"^load_state_dict expected a mapping from "
                                        rf"state_dict\(\), got {got}$"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_lists_keys_of_any_type():
    model = nn.Sequential(nn.Linear(2, 2))
    state = {**model.state_dict(), 1: np.zeros(1), "x": np.zeros(1)}
    with pytest.raises(ValueError, match=re.escape("missing keys [], unexpected keys [1, 'x']")):
        model.load_state_dict(state)


def test_load_state_dict_names_pytorchs_batch_norm_counter():
    model = nn.Sequential(nn.BatchNorm2d(2))
    state = {**model.state_dict(), "0.num_batches_tracked": np.array(3)}
    with pytest.raises(ValueError, match=r"unexpected keys \['0.num_batches_tracked'\] "
                                         r"\(num_batches_tracked is PyTorch's BatchNorm step "
                                         r"counter, which jitnet does not keep"):
        model.load_state_dict(state)


def nested_model():
    """Parameters and buffers at two depths, for the key lists of load_state_dict."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def partial_state(model):
    """``model``'s state plus one, two keys gone and four it lacks, at both depths."""
    state = {key: value + 1 for key, value in model.state_dict().items()}
    del state["1.running_var"], state["3.1.bias"]
    return {**state, "9.weight": np.zeros(2), "3.1.extra": np.zeros(1),
            "1.extra": np.zeros(1), "scale": np.zeros(1)}


def test_load_state_dict_strict_false_loads_the_keys_it_has_and_lists_the_others(target):
    model = nested_model()
    before = model.state_dict()
    state = partial_state(model)
    result = model.load_state_dict(state, strict=False)
    assert isinstance(result, IncompatibleKeys) and isinstance(result, tuple)
    # PyTorch's orders: state_dict()'s, and the state's module by module, the top first
    assert result == (["1.running_var", "3.1.bias"],
                      ["9.weight", "scale", "1.extra", "3.1.extra"])
    assert result.missing_keys == ["1.running_var", "3.1.bias"]
    assert result.unexpected_keys == ["9.weight", "scale", "1.extra", "3.1.extra"]
    after = model.state_dict()
    for key, value in after.items():
        np.testing.assert_array_equal(value, state.get(key, before[key]))
        assert value.dtype == before[key].dtype
    assert model.load_state_dict(after, strict=False) == ([], [])


@pytest.mark.parametrize("gone, extra", [("3.1.weight", None), (None, "1.num_batches_tracked")])
def test_load_state_dict_strict_false_with_keys_only_missing_or_only_unexpected(gone, extra):
    model = nested_model()
    state = {key: value + 1 for key, value in model.state_dict().items() if key != gone}
    if extra is not None:
        state[extra] = np.array(3)
    result = model.load_state_dict(state, strict=False)
    assert result == ([gone] if gone else [], [extra] if extra else [])
    for key, value in model.state_dict().items():
        if key != gone:
            np.testing.assert_array_equal(value, state[key])


def test_load_state_dict_lists_keys_as_pytorch():
    torch = pytest.importorskip("torch")
    ours = nested_model()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    # a PyTorch state dict loads as it is: its num_batches_tracked is the one key left out
    torch_state = {key: value.numpy() for key, value in theirs.state_dict().items()}
    assert ours.load_state_dict(torch_state, strict=False) == ([], ["1.num_batches_tracked"])
    state = partial_state(ours)
    result = ours.load_state_dict(state, strict=False)
    their_result = theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()},
                                          strict=False)
    assert result.missing_keys == [key for key in their_result.missing_keys
                                   if not key.endswith("num_batches_tracked")]
    assert result.unexpected_keys == their_result.unexpected_keys
    their_state = theirs.state_dict()
    for key, value in ours.state_dict().items():  # the same values loaded, and kept
        np.testing.assert_array_equal(value, their_state[key].numpy())
    result = ours.load_state_dict(ours.state_dict())
    their_result = theirs.load_state_dict(theirs.state_dict())
    assert result == tuple(their_result) == ([], [])
    assert repr(result) == str(result) == repr(their_result) == "<All keys matched successfully>"
    result = ours.load_state_dict({"0.weight": state["0.weight"]}, strict=False)
    their_result = theirs.load_state_dict({"0.weight": torch.tensor(state["0.weight"])},
                                          strict=False)
    missing = [key for key in their_result.missing_keys if "num_batches" not in key]
    assert result == (missing, their_result.unexpected_keys) and len(missing) == 7
    assert repr(result) == f"IncompatibleKeys(missing_keys={missing!r}, unexpected_keys=[])"


def test_load_state_dict_returns_no_incompatible_keys_when_strict(target):
    model = nested_model()
    state = {key: value + 1 for key, value in model.state_dict().items()}
    result = model.load_state_dict(state, strict=True)
    assert isinstance(result, IncompatibleKeys)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    assert model.load_state_dict(model.state_dict()) == ([], [])  # strict by default
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


@pytest.mark.parametrize("strict", [True, np.True_])
def test_load_state_dict_strict_still_refuses_other_keys_and_changes_nothing(strict):
    model = nested_model()
    before = model.state_dict()
    state = partial_state(model)
    message = (r"^load_state_dict: missing keys \['1.running_var', '3.1.bias'\], unexpected "
               r"keys \['1.extra', '3.1.extra', '9.weight', 'scale'\]$")
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state, strict=strict)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 5), np.float32), r"3.1.weight expected shape \(2, 4\), got \(2, 5\)"),
        (np.array([["a"] * 4] * 2), r"3.1.weight expected a numeric array, got dtype <U1"),
    ],
)
def test_load_state_dict_strict_false_still_checks_arrays_before_copying_any(bad, message):
    # PyTorch raises too (after copying the arrays before it; jitnet copies none)
    model = nested_model()
    before = model.state_dict()
    state = partial_state(model)
    state["3.1.weight"] = bad  # the last array: all the others would be copied already
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state, strict=False)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("strict, got", [("yes", "'yes' (str)"), (1, "1 (int)"),
                                         (None, "None (NoneType)")])
def test_load_state_dict_strict_must_be_a_bool(strict, got):
    model = nested_model()
    before = model.state_dict()
    with pytest.raises(TypeError, match=re.escape(
            f"Sequential.load_state_dict expected strict to be True or False, got {got}")):
        model.load_state_dict(partial_state(model), strict=strict)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# -- zero_grad -------------------------------------------------------------------------


def test_zero_grad_set_to_none_false_fills_gradients_with_zeros_in_place(target):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    model(np.ones((2, 3), np.float32))
    model.backward(jitnet.asarray(np.ones((2, 2), np.float32)))
    model[0].bias.grad = None  # no gradient: stays None, as in PyTorch
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert any(np.any(jitnet.to_numpy(g) != 0) for g in grads.values() if g is not None)
    model.zero_grad(set_to_none=False)
    for name, p in model.named_parameters():
        if grads[name] is None:
            assert p.grad is None
            continue
        assert p.grad is grads[name]  # the same array, filled
        assert p.grad.dtype == np.float32 and p.grad.shape == p.shape
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), np.zeros(p.shape))
    model.zero_grad(set_to_none=np.True_)
    assert all(p.grad is None for p in model.parameters())


def test_zero_grad_set_to_none_false_as_pytorch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ours.weight.grad = np.ones((2, 3), np.float32)
    theirs.weight.grad = torch.ones(2, 3)
    grad, their_grad = ours.weight.grad, theirs.weight.grad
    ours.zero_grad(set_to_none=False)
    theirs.zero_grad(set_to_none=False)
    assert ours.weight.grad is grad and theirs.weight.grad is their_grad
    np.testing.assert_array_equal(grad, their_grad.numpy())
    assert ours.bias.grad is None and theirs.bias.grad is None


@pytest.mark.parametrize("set_to_none, got", [("yes", "'yes' (str)"), (0, "0 (int)"),
                                              (None, "None (NoneType)")])
def test_zero_grad_set_to_none_must_be_a_bool(set_to_none, got):
    model = nn.Sequential(nn.Linear(3, 2))
    grad = model[0].weight.grad = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match=re.escape(
            f"Sequential.zero_grad expected set_to_none to be True or False, got {got}")):
        model.zero_grad(set_to_none=set_to_none)
    assert model[0].weight.grad is grad and np.all(grad == 1)


def test_zero_grad_set_to_none_false_checks_every_gradient_before_filling_any():
    model = nn.Sequential(nn.Linear(3, 2))
    grad = model[0].weight.grad = np.ones((2, 3), np.float32)
    model[0].bias.grad = [1.0, 1.0]
    with pytest.raises(TypeError, match=re.escape(
            "Sequential.zero_grad: parameter '0.bias' expected .grad to be an array or None, "
            "got list")):
        model.zero_grad(set_to_none=False)
    model[0].bias.grad = np.broadcast_to(np.float32(1), (2,))  # read-only
    with pytest.raises(ValueError, match=re.escape(
            "Sequential.zero_grad: parameter '0.bias' has a read-only .grad")):
        model.zero_grad(set_to_none=False)
    assert np.all(grad == 1)


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
        assert tuple(module.backward(np.float32(1.0)).shape) == ()
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


# -- walking a model, as PyTorch's Module does ------------------------------------------


def test_children_modules_and_buffers_walk_the_model_as_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours.children()] == [
        type(m).__name__ for m in theirs.children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == [
        type(m).__name__ for m in theirs.modules()]
    # PyTorch's BatchNorm also keeps num_batches_tracked, which jitnet does not
    assert [n for n, _ in ours.named_buffers()] == [
        n for n, _ in theirs.named_buffers() if not n.endswith("num_batches_tracked")]
    assert [b.shape for b in ours.buffers()] == [(4,), (4,)]


def test_sequential_slices_are_sequentials_and_indices_are_checked():
    relu, fc = nn.ReLU(), nn.Linear(4, 2)
    model = nn.Sequential(nn.Flatten(), relu, fc)
    head = model[1:]
    assert isinstance(head, nn.Sequential) and list(head) == [relu, fc]  # the same objects
    assert model[-1] is fc and model[np.int64(1)] is relu
    with pytest.raises(IndexError, match="Sequential index 3 out of range for 3 modules"):
        model[3]
    with pytest.raises(TypeError, match="Sequential indices must be ints or slices, got str"):
        model["1"]
