"""jitnet.nn layers and losses against PyTorch, on every target whose kernels are ready."""

import numpy as np
import pytest

import jitnet
from jitnet import nn
from jitnet.targets import backend

import ready_targets

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(params=jitnet.available_targets())
def target(request):
    """Each available target whose kernel module imports and exports the whole contract."""
    yield from ready_targets.enter(request.param)


def scaled_error(a, b):
    """``max|a - b| / max|b|``: relative to the array's scale, robust to zeros."""
    a = np.asarray(jitnet.to_numpy(a), np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def tolerance(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


def compare_with_torch(ours, theirs, x, rng, dtype):
    """Forward, input gradient and parameter gradients of ``ours`` vs a float64 torch module.

    ``theirs`` gets ``ours``' parameters copied by position first.
    """
    theirs = theirs.double()
    theirs.zero_grad()
    with torch.no_grad():
        for p, tp in zip(ours.parameters(), theirs.parameters()):
            tp.copy_(torch.tensor(jitnet.to_numpy(p.data), dtype=torch.float64))
    y = ours(x.astype(dtype))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = theirs(tx)
    assert y.dtype == np.dtype(dtype) and tuple(y.shape) == tuple(ty.shape)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    dx = ours.backward(jitnet.asarray(dy.astype(dtype)))
    tol = tolerance(dtype)
    assert scaled_error(y, ty.detach().numpy()) < tol
    assert scaled_error(dx, tx.grad.numpy()) < tol
    tparams = list(theirs.parameters())
    assert len(tparams) == len(list(ours.parameters()))
    for p, tp in zip(ours.parameters(), tparams):
        assert p.grad is not None and p.grad.dtype == np.dtype(dtype)
        assert scaled_error(p.grad, tp.grad.numpy()) < tol, p.name


DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "c, f, k, stride, padding, groups, bias",
    [
        (3, 4, 3, 1, 1, 1, True),
        (4, 6, 3, 2, 0, 2, True),
        (4, 4, 3, 1, 2, 4, False),
        (3, 5, 1, 2, 0, 1, True),
        (2, 3, 5, 1, 2, 1, True),
        (4, 8, 3, 2, 1, 4, True),  # depthwise, strided, two outputs a channel
        (8, 16, 3, 2, 1, 1, True),  # on cpu: the input gradient a phase of dx at a time
        (3, 4, 7, 2, 3, 1, True),  # a 7x7/2 stem (cpu: the input's phases)
    ],
)
def test_conv2d(target, rng, dtype, c, f, k, stride, padding, groups, bias):
    ours = nn.Conv2d(c, f, k, stride=stride, padding=padding, groups=groups, bias=bias, dtype=dtype)
    theirs = torch.nn.Conv2d(c, f, k, stride=stride, padding=padding, groups=groups, bias=bias)
    compare_with_torch(ours, theirs, rng.standard_normal((2, c, 7, 6)), rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_depthwise_separable_net(target, rng, dtype):
    # a strided stem, a depthwise and a pointwise convolution, as MobileNet stacks them
    ours = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, dtype=dtype), nn.ReLU(),
        nn.Conv2d(8, 16, 1, dtype=dtype), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 3 * 3, 5, dtype=dtype))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 3 * 3, 5))
    compare_with_torch(ours, theirs, rng.standard_normal((3, 3, 10, 9)), rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, stride", [(2, None), (3, 2), (3, 1)])
def test_maxpool2d(target, rng, dtype, k, stride):
    compare_with_torch(
        nn.MaxPool2d(k, stride),
        torch.nn.MaxPool2d(k, stride),
        rng.standard_normal((2, 3, 7, 6)),
        rng,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(target, rng, dtype, bias):
    compare_with_torch(
        nn.Linear(7, 5, bias=bias, dtype=dtype),
        torch.nn.Linear(7, 5, bias=bias),
        rng.standard_normal((4, 7)),
        rng,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (nn.ReLU, torch.nn.ReLU),
        (nn.Sigmoid, torch.nn.Sigmoid),
        (nn.Tanh, torch.nn.Tanh),
        (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
        (lambda: nn.ELU(0.5), lambda: torch.nn.ELU(0.5)),
        (nn.LeakyReLU, torch.nn.LeakyReLU),  # the defaults: negative_slope=0.01, alpha=1.0
        (nn.ELU, torch.nn.ELU),
        (nn.Flatten, torch.nn.Flatten),
    ],
    ids=["relu", "sigmoid", "tanh", "leaky_relu", "elu", "leaky_relu_default", "elu_default",
         "flatten"],
)
def test_parameterless_layers(target, rng, dtype, ours, theirs):
    compare_with_torch(ours(), theirs(), 2 * rng.standard_normal((2, 3, 4, 5)), rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm2d_training_and_eval(target, rng, dtype):
    ours, theirs = (
        nn.BatchNorm2d(3, momentum=0.2, dtype=dtype),
        torch.nn.BatchNorm2d(3, momentum=0.2),
    )
    x = 3 * rng.standard_normal((4, 3, 5, 5)) + 1
    compare_with_torch(ours, theirs, x, rng, dtype)
    state = ours.state_dict()
    tol = tolerance(dtype)
    assert scaled_error(state["running_mean"], theirs.running_mean.numpy()) < tol
    assert scaled_error(state["running_var"], theirs.running_var.numpy()) < tol
    # eval mode: running statistics, and the backward of a fixed affine map
    ours.eval()
    theirs.eval()
    compare_with_torch(ours, theirs, rng.standard_normal((2, 3, 5, 5)), rng, dtype)


@pytest.mark.parametrize("forward_mode", ["train", "eval"])
def test_batchnorm2d_backward_uses_the_mode_its_forward_ran_in(target, rng, forward_mode):
    # model.eval() (or .train()) between a forward and its backward must not change the
    # gradient: batch statistics went into the forward, or fixed running ones did
    training = forward_mode == "train"
    weight, bias = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    ours = nn.BatchNorm2d(3, dtype="float64")
    ours.weight.data, ours.bias.data = jitnet.asarray(weight), jitnet.asarray(bias)
    ours.running_mean, ours.running_var = jitnet.asarray(mean), jitnet.asarray(var)
    theirs = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        for t, value in ((theirs.weight, weight), (theirs.bias, bias),
                         (theirs.running_mean, mean), (theirs.running_var, var)):
            t.copy_(torch.tensor(value))
    x = 3 * rng.standard_normal((4, 3, 5, 5)) + 1
    dy = rng.standard_normal(x.shape)
    ours.train(training)
    theirs.train(training)
    y = ours(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(dy))
    ours.train(not training)  # the switch between forward and backward
    dx = ours.backward(jitnet.asarray(dy))
    assert scaled_error(y, ty.detach().numpy()) < 1e-10
    assert scaled_error(dx, tx.grad.numpy()) < 1e-10
    assert scaled_error(ours.weight.grad, theirs.weight.grad.numpy()) < 1e-10
    assert scaled_error(ours.bias.grad, theirs.bias.grad.numpy()) < 1e-10


def test_batchnorm2d_rejects_single_value_per_channel_in_training(target):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(2)(np.ones((1, 2, 1, 1), np.float32))
    assert nn.BatchNorm2d(2).eval()(np.ones((1, 2, 1, 1), np.float32)).shape == (1, 2, 1, 1)


def test_maxout(target, rng):
    layer = nn.Maxout(5, 3, pieces=4, dtype="float64")
    x = rng.standard_normal((6, 5))
    y = jitnet.to_numpy(layer(x))
    w, b = jitnet.to_numpy(layer.weight.data), jitnet.to_numpy(layer.bias.data)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.linear(tx, tw, tb).reshape(6, 3, 4).max(dim=2).values
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    assert scaled_error(y, ty.detach().numpy()) < 1e-12
    assert scaled_error(layer.backward(jitnet.asarray(dy)), tx.grad.numpy()) < 1e-12
    assert scaled_error(layer.weight.grad, tw.grad.numpy()) < 1e-12
    assert scaled_error(layer.bias.grad, tb.grad.numpy()) < 1e-12


def test_dropout_train_and_eval(target, rng):
    layer = nn.Dropout(0.25)
    x = rng.standard_normal((8, 50)).astype(np.float32)
    jitnet.manual_seed(3)
    y = jitnet.to_numpy(layer(x))
    jitnet.manual_seed(3)
    seed = jitnet.rng.next_seed()
    _, mask = backend("numpy").dropout_forward(x, 0.25, seed)
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(
        jitnet.to_numpy(layer.backward(jitnet.asarray(dy))), dy * mask, rtol=1e-6
    )
    y2 = jitnet.to_numpy(layer(x))
    assert not np.array_equal(y, y2)  # a fresh seed on every training forward
    layer.eval()
    np.testing.assert_array_equal(jitnet.to_numpy(layer(x)), x)
    np.testing.assert_array_equal(jitnet.to_numpy(layer.backward(jitnet.asarray(dy))), dy)


def test_dropout_default_drops_half_and_doubles_the_rest(target, rng):
    # PyTorch's default p=0.5: each kept element is scaled by 1 / (1 - 0.5) = 2
    layer = nn.Dropout()
    assert layer.p == torch.nn.Dropout().p == 0.5
    x = rng.uniform(1.0, 2.0, (8, 50)).astype(np.float32)
    ratio = jitnet.to_numpy(layer(x)) / x
    kept = ratio != 0
    np.testing.assert_allclose(ratio[kept], 2.0, rtol=1e-6)
    assert 0.4 < kept.mean() < 0.6  # 400 draws: the binomial's std is 0.025


# -- losses --------------------------------------------------------------------------------

LOSSES = {
    "cross_entropy": (nn.SoftmaxCrossEntropyLoss, lambda s, y: F.cross_entropy(s, y), "labels"),
    "hinge": (
        lambda: nn.MulticlassHingeLoss(margin=0.5),
        lambda s, y: F.multi_margin_loss(s, y, margin=0.5) * s.shape[1],
        "labels",
    ),
    "bce": (nn.BCEWithLogitsLoss, F.binary_cross_entropy_with_logits, "probabilities"),
    "mse": (nn.MSELoss, F.mse_loss, "values"),
    "l1": (nn.L1Loss, F.l1_loss, "values"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses(target, rng, dtype, name):
    make, torch_loss, kind = LOSSES[name]
    scores = 2 * rng.standard_normal((6, 4))
    target_values = {
        "labels": rng.integers(0, 4, 6),
        "probabilities": rng.random((6, 4)),
        "values": rng.standard_normal((6, 4)),
    }[kind]
    loss_fn = make()
    loss = loss_fn(scores.astype(dtype), target_values)
    assert isinstance(loss, float)
    ts = torch.tensor(scores, requires_grad=True)
    tl = torch_loss(ts, torch.tensor(target_values))
    tl.backward()
    tol = tolerance(dtype)
    assert abs(loss - tl.item()) <= tol * max(1.0, abs(tl.item()))
    grad = loss_fn.backward()
    assert grad.dtype == np.dtype(dtype)
    assert scaled_error(grad, ts.grad.numpy()) < tol


def test_loss_validation(target):
    loss_fn = nn.SoftmaxCrossEntropyLoss()
    scores = np.zeros((3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"labels in \[0, 3\] for 4 classes, got values in \[0, 4\]"
    ):
        loss_fn(scores, np.array([0, 1, 4]))
    for negative in (nn.SoftmaxCrossEntropyLoss(), nn.MulticlassHingeLoss()):
        # -1 would index the last class (numpy) or read before the row (cpu)
        with pytest.raises(
            ValueError, match=r"labels in \[0, 3\] for 4 classes, got values in \[-1, 2\]"
        ):
            negative(scores, np.array([0, -1, 2]))
    with pytest.raises(
        ValueError, match=r"labels of shape \(3,\) for scores of shape \(3, 4\), got \(2,\)"
    ):
        loss_fn(scores, np.array([0, 1]))
    with pytest.raises(ValueError, match="integer class labels, got dtype float64"):
        loss_fn(scores, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"2-D input \(N, C\), got shape \(4,\)"):
        loss_fn(np.zeros(4, np.float32), np.array([0]))
    with pytest.raises(ValueError, match=r"target of shape \(3, 4\) \(the input's\), got \(3,\)"):
        nn.MSELoss()(scores, np.zeros(3))
    with pytest.raises(RuntimeError, match="before the forward pass"):
        nn.L1Loss().backward()


# -- module behaviour ----------------------------------------------------------------------


def small_model(dtype="float32", batchnorm=True):
    layers = [nn.Conv2d(3, 4, 3, padding=1, dtype=dtype)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4, dtype=dtype))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5, dtype=dtype)]
    return nn.Sequential(*layers)


def test_parameter_order_and_names_match_torch():
    ours = small_model()
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 5),
    )
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in theirs.named_parameters()]
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert [p.name for p in ours.parameters()] == ["weight", "bias"] * 3
    torch_keys = [k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(ours.state_dict()) == sorted(torch_keys)


def test_init_is_kaiming_uniform_and_seeded():
    jitnet.manual_seed(5)
    a = nn.Conv2d(8, 16, 3, groups=2)
    jitnet.manual_seed(5)
    b = nn.Conv2d(8, 16, 3, groups=2)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    bound = 1 / np.sqrt(4 * 9)
    w = jitnet.to_numpy(a.weight.data)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(jitnet.to_numpy(a.bias.data)).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound


def test_state_dict_round_trip(target, rng):
    a, b = small_model(), small_model()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    a(x)  # updates BatchNorm's running statistics
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    b.load_state_dict(state)
    a.eval()
    b.eval()
    np.testing.assert_array_equal(jitnet.to_numpy(a(x)), jitnet.to_numpy(b(x)))
    state["0.weight"][:] = 0  # a copy: the model is untouched
    assert np.abs(jitnet.to_numpy(a[0].weight.data)).max() > 0


def test_load_state_dict_errors():
    model = small_model()
    state = model.state_dict()
    bad = dict(state, **{"5.weight": np.zeros((5, 35), np.float32)})
    with pytest.raises(ValueError, match=r"5.weight expected shape \(5, 36\), got \(5, 35\)"):
        model.load_state_dict(bad)
    del state["1.running_var"]
    state["9.weight"] = np.zeros(1)
    with pytest.raises(
        ValueError, match=r"missing keys \['1.running_var'\], unexpected keys \['9.weight'\]"
    ):
        model.load_state_dict(state)


@pytest.mark.parametrize("destination", ["numpy", "cpu"])
def test_to_moves_data_grad_and_optimizer_state(rng, destination):
    jitnet.manual_seed(1)
    with jitnet.use_target("numpy"):
        model = small_model()
        loss_fn = nn.SoftmaxCrossEntropyLoss()
        x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
        loss_fn(model(x), np.array([1, 3]))
        model.backward(loss_fn.backward())
        opt = jitnet.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.step()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    grads = [jitnet.to_numpy(p.grad).copy() for p in model.parameters()]
    assert model.to(destination) is model
    after = model.state_dict()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), g)
        assert "momentum_buffer" in p.state
    model.to(destination, dtype="float64")
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(p.state["momentum_buffer"].dtype == np.float64 for p in model.parameters())
    assert model.state_dict()["1.running_var"].dtype == np.float64


def test_train_eval_and_repr():
    model = small_model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert model[1].training
    text = repr(model)
    assert "(0): Conv2d(3, 4, kernel_size=3, padding=1)" in text
    assert "(5): Linear(in_features=36, out_features=5, bias=True)" in text
    assert len(model) == 6 and isinstance(list(model)[2], nn.ReLU)


def test_gradients_are_overwritten_not_accumulated(target, rng):
    layer = nn.Linear(3, 2, dtype="float64")
    x = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 2))
    layer(x)
    layer.backward(jitnet.asarray(dy))
    first = jitnet.to_numpy(layer.weight.grad).copy()
    layer(x)
    layer.backward(jitnet.asarray(dy))
    np.testing.assert_allclose(jitnet.to_numpy(layer.weight.grad), first)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2)])
def test_relu_before_maxpool_runs_pooled_first_with_the_same_results(target, rng, kernel, stride):
    """Sequential pools before the ReLU (4x fewer elements); nothing observable changes."""
    jitnet.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype="float64"), nn.ReLU(),
                          nn.MaxPool2d(kernel, stride), nn.Flatten())
    x = rng.standard_normal((2, 2, 7, 7))
    x[0, :, :4, :4] = -1.0  # windows whose maximum is not positive (ties of zeros)
    x[1, 0, 5, 5] = np.nan
    y = model(x)
    assert model[1]._saved_y.shape == model[2]._saved_argmax.shape  # the ReLU ran pooled
    dy = rng.standard_normal(y.shape)
    dx = jitnet.to_numpy(model.backward(jitnet.asarray(dy)))

    # The same layers one by one, in the written order.
    conv, relu, pool, flat = list(model)
    want = flat(pool(relu(conv(x))))
    want_dx = jitnet.to_numpy(conv.backward(relu.backward(pool.backward(
        flat.backward(jitnet.asarray(dy))))))
    np.testing.assert_array_equal(jitnet.to_numpy(y), jitnet.to_numpy(want))
    np.testing.assert_array_equal(dx, want_dx)
    grads = [jitnet.to_numpy(p.grad).copy() for p in model.parameters()]
    model(x)
    model.backward(jitnet.asarray(dy))
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), g)


def test_sequential_runs_a_convolution_and_its_pooling_as_one_kernel_call(
    target, rng, monkeypatch
):
    calls = []
    module = jitnet.targets.backend()
    fused = module.conv2d_maxpool2d_forward
    monkeypatch.setattr(module, "conv2d_maxpool2d_forward",
                        lambda *args, relu=False: calls.append(args[6:] + (relu,))
                        or fused(*args, relu=relu))
    relus = []
    relu_forward = module.relu_forward
    monkeypatch.setattr(module, "relu_forward", lambda x: relus.append(x) or relu_forward(x))
    jitnet.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2, 1), nn.Flatten())
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = model(x)
    # the ReLU, run after the first pooling, joins its call; the second pooling has none
    assert calls == [(2, 2, True), (2, 1, False)]
    if target != "numpy":  # (numpy composes the fused function of relu_forward)
        assert relus == []
    conv, relu, pool, conv2, pool2, flat = list(model)
    want = flat(pool2(conv2(relu(pool(conv(x))))))  # one by one
    np.testing.assert_array_equal(jitnet.to_numpy(y), jitnet.to_numpy(want))
    # going back, each convolution with its pooling (and the ReLU after it) in one call
    back = []
    fused_back = module.conv2d_maxpool2d_backward
    monkeypatch.setattr(module, "conv2d_maxpool2d_backward",
                        lambda *args: back.append(args[7:9] + (args[10] is not None,))
                        or fused_back(*args))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = jitnet.to_numpy(model.backward(jitnet.asarray(dy)))
    assert back == [(2, 1, False), (2, 2, True)]
    want_dx = conv.backward(pool.backward(relu.backward(conv2.backward(pool2.backward(
        flat.backward(jitnet.asarray(dy)))))))  # the run order: the ReLU after the pooling
    np.testing.assert_array_equal(dx, jitnet.to_numpy(want_dx))
    # the pooling still checks its input, now the convolution's output
    small = nn.Sequential(nn.Conv2d(3, 2, 3), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match=r"MaxPool2d kernel size 2 is larger than the input 1x1"):
        small(rng.standard_normal((1, 3, 3, 3)).astype(np.float32))


def test_a_pooling_of_something_else_goes_back_on_its_own(target, rng):
    # The layers run one by one, the pooling on another array than the convolution's
    # output: going back through the Sequential, the two are not taken as one call
    # (the argmax would index planes of another size); the convolution then says
    # what it expected.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2))
    conv, pool = list(model)
    conv(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    y = pool(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
    dy = jitnet.asarray(np.ones(y.shape, np.float32))
    with pytest.raises(ValueError, match=r"Conv2d.backward expected dy of shape \(2, 4, 8, 8\)"):
        model.backward(dy)


def test_sequential_runs_a_batch_norm_and_its_pooling_as_one_kernel_call(
    target, rng, monkeypatch
):
    module = jitnet.targets.backend()
    calls = []
    fused = module.batchnorm2d_maxpool2d_forward
    monkeypatch.setattr(module, "batchnorm2d_maxpool2d_forward",
                        lambda *args, relu=False: calls.append(args[8:] + (relu,))
                        or fused(*args, relu=relu))
    jitnet.manual_seed(5)
    # Conv, BatchNorm, ReLU, MaxPool: the ReLU runs after the pooling, and the three
    # after the convolution are one call
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten())
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = model(x)
    assert calls == [(2, 2, True)]
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = jitnet.to_numpy(model.backward(jitnet.asarray(dy)))
    grads = [jitnet.to_numpy(p.grad).copy() for p in model.parameters()]
    running = [jitnet.to_numpy(b).copy() for b in (model[1].running_mean, model[1].running_var)]
    jitnet.manual_seed(5)
    again = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten())
    conv, bn, relu, pool, flat = list(again)  # one by one, in the run order
    want = flat(relu(pool(bn(conv(x)))))
    np.testing.assert_array_equal(jitnet.to_numpy(y), jitnet.to_numpy(want))
    want_dx = conv.backward(bn.backward(pool.backward(relu.backward(flat.backward(
        jitnet.asarray(dy))))))
    np.testing.assert_array_equal(dx, jitnet.to_numpy(want_dx))
    for p, g in zip(again.parameters(), grads):
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), g)
    for b, r in zip((bn.running_mean, bn.running_var), running):
        np.testing.assert_array_equal(jitnet.to_numpy(b), r)


def test_sequential_runs_a_linear_and_its_relu_as_one_kernel_call(target, rng, monkeypatch):
    module = jitnet.targets.backend()
    calls = {"forward": [], "backward": [], "relu": 0}
    linear_forward, linear_backward = module.linear_forward, module.linear_backward
    monkeypatch.setattr(module, "linear_forward", lambda x, w, b, relu=False: (
        calls["forward"].append(relu) or linear_forward(x, w, b, relu=relu)))
    monkeypatch.setattr(module, "linear_backward", lambda dy, x, w, g=True, relu_y=None: (
        calls["backward"].append(relu_y is not None)
        or linear_backward(dy, x, w, g, relu_y=relu_y)))
    for name in ("relu_forward", "relu_backward"):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _k=kernel: (
            calls.__setitem__("relu", calls["relu"] + 1) or _k(*a)))
    jitnet.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    x[0] = 0  # outputs equal to the bias alone; and a NaN through the whole row
    x[1, 0, 0, 0] = np.nan
    y = model(x)
    assert calls["forward"] == [True, False]
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = jitnet.to_numpy(model.backward(jitnet.asarray(dy)))
    assert calls["backward"] == [True, False]  # the ReLU goes back with the second layer
    if target != "numpy":  # (numpy composes the fused functions of the ReLU's)
        assert calls["relu"] == 0
    grads = [jitnet.to_numpy(p.grad).copy() for p in model.parameters()]
    flat, fc1, relu, fc2 = list(model)  # the same layers one by one
    want = fc2(relu(fc1(flat(x))))
    np.testing.assert_array_equal(jitnet.to_numpy(y), jitnet.to_numpy(want))
    want_dx = flat.backward(fc1.backward(relu.backward(fc2.backward(jitnet.asarray(dy)))))
    np.testing.assert_array_equal(dx, jitnet.to_numpy(want_dx))
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), g)
    # with input_grad=False nothing is computed below the first Linear
    model(x)
    assert model.backward(jitnet.asarray(dy), input_grad=False) is None
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(jitnet.to_numpy(p.grad), g)


def test_a_batch_passes_through_and_parameters_are_aligned_on_the_cpu(target, rng):
    raw = np.empty(64 * 3 * 32 * 32 * 4 + 64, np.uint8)
    start = (16 - raw.ctypes.data) % 64  # 16 bytes past a 64-byte boundary
    x = raw[start:start + 64 * 3 * 32 * 32 * 4].view(np.float32).reshape(64, 3, 32, 32)
    assert x.ctypes.data % 64 == 16
    from jitnet.nn.module import as_input

    assert as_input(x) is x  # a batch is read once: no copy for alignment
    if target == "cpu":  # a parameter is read every step: its memory is aligned
        assert nn.Linear(4096, 256).weight.data.ctypes.data % 64 == 0
        assert jitnet.asarray(x).ctypes.data % 64 == 0


def test_backward_without_input_grad(target, rng):
    """Same parameter gradients, no dx, nothing run below the first layer with parameters."""
    calls = []

    class Spy(nn.ReLU):
        def backward(self, dy):
            calls.append("spy")
            return super().backward(dy)

    def make():
        jitnet.manual_seed(3)
        return nn.Sequential(
            Spy(), nn.Conv2d(2, 3, 3, padding=1, dtype="float64"), nn.ReLU(), nn.Flatten(),
            nn.Linear(3 * 4 * 4, 2, dtype="float64"),
        )

    x = rng.standard_normal((2, 2, 4, 4))
    dy = jitnet.asarray(rng.standard_normal((2, 2)))
    full, partial = make(), make()
    full(x)
    assert full.backward(dy) is not None and calls == ["spy"]
    partial(x)
    assert partial.backward(dy, input_grad=False) is None
    assert calls == ["spy"]  # the leading ReLU was skipped
    for a, b in zip(full.parameters(), partial.parameters()):
        np.testing.assert_array_equal(jitnet.to_numpy(a.grad), jitnet.to_numpy(b.grad))


def test_sequential_without_parameters_or_children(target, rng):
    dy = jitnet.asarray(rng.standard_normal((2, 3)))
    empty = nn.Sequential()
    np.testing.assert_array_equal(jitnet.to_numpy(empty.backward(dy)), jitnet.to_numpy(dy))
    assert empty.backward(dy, input_grad=False) is None
    relu = nn.Sequential(nn.ReLU())
    relu(rng.standard_normal((2, 3)))
    assert relu.backward(dy) is not None and relu.backward(dy, input_grad=False) is None


def test_backward_without_input_grad_falls_back_for_custom_modules(target, rng):
    class Scale(nn.Module):  # a user's layer whose backward knows no input_grad
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(jitnet.asarray(np.array([2.0])), "weight")

        def forward(self, x):
            self._x = jitnet.to_numpy(x)
            return jitnet.asarray(self._x * jitnet.to_numpy(self.weight.data)[0])

        def backward(self, dy):
            self.weight.grad = jitnet.asarray(np.array([np.sum(jitnet.to_numpy(dy) * self._x)]))
            return jitnet.asarray(jitnet.to_numpy(dy) * 2.0)

    model = nn.Sequential(Scale(), nn.Linear(3, 2, dtype="float64"))
    x = rng.standard_normal((4, 3))
    model(x)
    assert model.backward(jitnet.asarray(rng.standard_normal((4, 2))), input_grad=False) is None
    assert model[0].weight.grad is not None


# -- validation ----------------------------------------------------------------------------


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size to be an int >= 1, got 0"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="padding to be an int >= 0, got -1"):
        nn.Conv2d(3, 4, 3, padding=-1)
    expected = r"Dropout expected p to be a finite number in \[0, 1\] \(a probability\), got 1.5"
    with pytest.raises(ValueError, match=expected):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="dtype float32 or float64, got int32"):
        nn.Linear(2, 3, dtype="int32")


def test_forward_validation(target):
    conv = nn.Conv2d(3, 4, 5)
    with pytest.raises(
        ValueError, match=r"Conv2d expected a 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"
    ):
        conv(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"Conv2d expected 3 input channels, got 4 \(input shape \(2, 4, 8, 8\)\)"
    ):
        conv(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="Conv2d expected a float32 or float64 input, got uint8"):
        conv(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="Conv2d expected a float32 input .* got float64"):
        conv(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"kernel size 5 is larger than the padded input 4x8"):
        conv(np.zeros((2, 3, 4, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"Linear expected 6 input features, got 5 \(input shape \(2, 5\)\)"
    ):
        nn.Linear(6, 2)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d kernel size 3 is larger than the input 2x5"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d expected 2 channels, got 3"):
        nn.BatchNorm2d(2)(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Flatten expected an input with a batch axis"):
        nn.Flatten()(np.zeros(3, np.float32))


def test_nan_propagates(target):
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 1, 2, 3] = np.nan
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)
    )
    hidden = jitnet.to_numpy(model[0](x))
    assert np.isnan(hidden[0, :, 1:4, 2:5]).all() and not np.isnan(hidden[0, :, 5, 0]).any()
    scores = jitnet.to_numpy(model(x))
    assert np.isnan(scores).all()
    assert np.isnan(nn.SoftmaxCrossEntropyLoss()(scores, np.array([0])))


def test_parameters_on_another_target_raise_a_clear_error():
    class FakeDeviceArray:
        dtype = np.dtype(np.float32)
        shape = (2, 3)

        def copy_to_host(self):
            return np.zeros(self.shape, self.dtype)

    layer = nn.Linear(3, 2)
    layer.weight.data = FakeDeviceArray()
    with jitnet.use_target("numpy"):
        with pytest.raises(
            RuntimeError,
            match="parameters live on the cuda device but the active target is 'numpy'",
        ):
            layer(np.zeros((4, 3), np.float32))


def test_replacing_parameters_keeps_order_and_zero_grad():
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter(np.zeros((2, 3), np.float32))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    layer.bias = None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    layer.weight.grad = np.ones((2, 3), np.float32)
    layer.zero_grad()
    assert layer.weight.grad is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_gradient_keeps_its_precision_far_below_zero(target, dtype):
    # from y + alpha it cancelled: float32 was 4e-4 off (5,000 ulp) at x = -10, 44% at
    # -17 and 0 at -20 (float64 0 at -40), where PyTorch's alpha * exp(x) keeps every digit
    x = np.array([-80, -40, -20, -17, -10, -1, -1e-3, 0.5, 100], dtype)
    layer = nn.ELU(0.7)
    layer(x)
    dy = np.linspace(0.5, 1.5, x.size).astype(dtype)
    got = jitnet.to_numpy(layer.backward(dy))
    want = np.where(x > 0, dy, dy * 0.7 * np.exp(np.minimum(x, 0).astype(np.float64)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=5e-7 if dtype == np.float32 else 2e-15, atol=0)


def test_sequential_refuses_one_module_object_in_two_places():
    # the second place's forward overwrote what the first kept for backward: wrong
    # gradients, and on the cpu target fused kernels read past the end of an array
    relu = nn.ReLU()
    with pytest.raises(ValueError, match=r"same ReLU object at 1 and at 3: .* its own"):
        nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)
    fc = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"same Linear object at 0\.0 and at 1"):
        nn.Sequential(nn.Sequential(fc, nn.ReLU()), fc)
    nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())  # one each: fine


@pytest.mark.parametrize("layers", ["linear", "pool", "conv_pool"])
def test_a_fused_backward_refuses_a_relu_that_ran_on_another_input(target, layers, rng):
    # a ReLU called on something else between forward and backward: its kept output has
    # another size, which the fused kernels would have read past the end of
    if layers == "linear":
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        x, other = rng.standard_normal((2, 3)), rng.standard_normal((5, 7))
    else:
        first = [nn.Conv2d(2, 3, 3, padding=1)] if layers == "conv_pool" else []
        model = nn.Sequential(*first, nn.MaxPool2d(2), nn.ReLU(), nn.Flatten())
        x, other = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((9,))
    relu = next(m for m in model if isinstance(m, nn.ReLU))
    y = model(x.astype(np.float32))
    relu(other.astype(np.float32))
    with pytest.raises(RuntimeError, match=r"ReLU.backward: the output its last forward kept "
                                           r"has shape .* expected"):
        model.backward(np.ones(y.shape, np.float32))
