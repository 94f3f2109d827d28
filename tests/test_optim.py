"""Optimizers and schedules against torch.optim, on every ready target."""

import os
import re

import numpy as np
import pytest

import jitnet
from jitnet import nn, optim
from jitnet.nn import Parameter

import ready_targets

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,)]


@pytest.fixture(params=jitnet.available_targets())
def target(request):
    """Each available target whose kernel module imports and exports the whole contract."""
    yield from ready_targets.enter(request.param, seed=None)


@pytest.fixture(params=[t for t in jitnet.available_targets()
                        if t != "cuda" or os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"])
def model_target(request):
    """The ``target``s but the simulated GPU, far too slow for a model's training steps."""
    yield from ready_targets.enter(request.param, seed=None)


def make_params(rng, dtype):
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [Parameter(jitnet.asarray(v.copy())) for v in values]
    theirs = [torch.tensor(v.astype(np.float64), requires_grad=True) for v in values]
    return ours, theirs


def run_steps(ours, theirs, opt, topt, rng, steps, dtype):
    for _ in range(steps):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad = jitnet.asarray(g.astype(dtype))
            tp.grad = torch.tensor(g.astype(dtype).astype(np.float64))
        opt.step()
        topt.step()


def assert_params_close(ours, theirs, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(jitnet.to_numpy(p.data), tp.detach().numpy(), rtol=tol, atol=tol)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.5, weight_decay=0.01),
    dict(lr=0.1, weight_decay=0.1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "config", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
def test_sgd_matches_torch(target, rng, dtype, config):
    ours, theirs = make_params(rng, dtype)
    run_steps(
        ours, theirs, optim.SGD(ours, **config), torch.optim.SGD(theirs, **config), rng, 5, dtype
    )
    assert_params_close(ours, theirs, dtype)


ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01, weight_decay=0.05),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "config", ADAM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
def test_adam_matches_torch(target, rng, dtype, config):
    ours, theirs = make_params(rng, dtype)
    run_steps(
        ours, theirs, optim.Adam(ours, **config), torch.optim.Adam(theirs, **config), rng, 6, dtype
    )
    assert_params_close(ours, theirs, dtype)
    assert all(p.state["step"] == 6 for p in ours)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_dict_resumes_exactly(target, rng, name):
    def make(params):
        if name == "sgd":
            return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
        return optim.Adam(params, lr=0.01)

    values = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(4)]

    def step(opt, params, i):
        for p, g in zip(params, grads[i]):
            p.grad = jitnet.asarray(g)
        opt.step()

    straight = [Parameter(jitnet.asarray(v.copy())) for v in values]
    opt = make(straight)
    for i in range(4):
        step(opt, straight, i)

    first = [Parameter(jitnet.asarray(v.copy())) for v in values]
    opt = make(first)
    for i in range(2):
        step(opt, first, i)
    saved = opt.state_dict()
    assert all(isinstance(v, (np.ndarray, int)) for s in saved["state"] for v in s.values())
    resumed = [Parameter(jitnet.asarray(jitnet.to_numpy(p.data).copy())) for p in first]
    opt2 = make(resumed)
    opt2.load_state_dict(saved)
    for i in range(2, 4):
        step(opt2, resumed, i)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(jitnet.to_numpy(a.data), jitnet.to_numpy(b.data))


def test_zero_grad_and_parameters_without_grad(rng):
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    p.grad = np.ones(3)
    opt = optim.SGD([p, q], lr=0.5, momentum=0.9)
    opt.step()
    np.testing.assert_array_equal(p.data, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(q.data, [1.0, 1.0])  # no grad: untouched, no state
    assert "momentum_buffer" not in q.state
    opt.zero_grad()
    assert p.grad is None


def test_zero_grad_set_to_none_false_fills_gradients_with_zeros_in_place(target, rng):
    p, q, r = (Parameter(jitnet.asarray(rng.standard_normal(s))) for s in [(3, 4), (5,), ()])
    p.grad = jitnet.asarray(rng.standard_normal((3, 4)))
    r.grad = jitnet.asarray(np.float64(2.0))  # a 0-d gradient
    grad, r_grad = p.grad, r.grad
    tp, tq = (torch.ones(s, requires_grad=True) for s in [(3, 4), (5,)])
    tp.grad = torch.ones(3, 4)
    their_grad = tp.grad
    opt = optim.SGD([p, q, r], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([tp, tq], lr=0.1, momentum=0.9)
    opt.zero_grad(set_to_none=False)
    topt.zero_grad(set_to_none=False)
    assert p.grad is grad and r.grad is r_grad  # the same arrays, where they live
    assert tp.grad is their_grad
    np.testing.assert_array_equal(jitnet.to_numpy(grad), their_grad.numpy())
    np.testing.assert_array_equal(jitnet.to_numpy(r_grad), 0.0)
    assert q.grad is None and tq.grad is None  # no gradient stays none, as in PyTorch
    opt.zero_grad(set_to_none=True)
    topt.zero_grad(set_to_none=True)
    assert p.grad is None and r.grad is None and tp.grad is None


@pytest.mark.parametrize("set_to_none, got", [("no", "'no' (str)"), (0, "0 (int)"),
                                              (None, "None (NoneType)")])
def test_zero_grad_set_to_none_must_be_a_bool(set_to_none, got):
    p = Parameter(np.ones(3))
    grad = p.grad = np.ones(3)
    opt = optim.Adam([p])
    with pytest.raises(TypeError, match=re.escape(
            f"Adam.zero_grad expected set_to_none to be True or False, got {got}")):
        opt.zero_grad(set_to_none)
    assert p.grad is grad and np.all(grad == 1)


def test_zero_grad_set_to_none_false_checks_every_gradient_before_filling_any():
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    grad = p.grad = np.ones(3)
    q.grad = (1.0, 1.0)
    opt = optim.SGD([p, q], lr=0.1)
    with pytest.raises(TypeError, match=re.escape(
            "SGD.zero_grad: parameter 1 expected .grad to be an array or None, got tuple")):
        opt.zero_grad(set_to_none=False)
    assert np.all(grad == 1)


@pytest.mark.parametrize("zeroes", ["optimizer", "module"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_zero_grad_set_to_none_false_trains_bit_for_bit_as_set_to_none(model_target, rng, name,
                                                                         zeroes):
    # backward overwrites grad (it never adds to it), so a zeroed gradient changes nothing
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 4)

    def train(set_to_none):
        jitnet.manual_seed(7)
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
        if name == "sgd":
            opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        else:
            opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
        loss_fn = nn.SoftmaxCrossEntropyLoss()
        grads = []
        for _ in range(3):
            (opt if zeroes == "optimizer" else model).zero_grad(set_to_none=set_to_none)
            grads += [None if p.grad is None else np.any(jitnet.to_numpy(p.grad))
                      for p in model.parameters()]
            loss_fn(model(x), labels)
            model.backward(loss_fn.backward())
            opt.step()
        return model, grads

    zeroed, zeroed_grads = train(set_to_none=False)
    dropped, dropped_grads = train(set_to_none=True)
    n = len(list(zeroed.parameters()))
    assert zeroed_grads[:n] == [None] * n and dropped_grads == [None] * 3 * n
    assert zeroed_grads[n:] == [False] * 2 * n  # zero arrays, until backward replaced them
    assert zeroed.state_dict().keys() == dropped.state_dict().keys()
    for key, value in zeroed.state_dict().items():
        np.testing.assert_array_equal(value, dropped.state_dict()[key], err_msg=key)


def test_optimizer_validation():
    p = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="lr to be a finite number >= 0, got -0.1"):
        optim.SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match=r"betas\[1\] to be a finite number in \[0, 1\), got 1.0"):
        optim.Adam(p, betas=(0.9, 1.0))
    opt = optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="state for 1 parameters, got 2"):
        opt.load_state_dict({"lr": 0.1, "state": [{}, {}]})


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
            lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        ),
        (
            lambda o: optim.CosineLR(o, t_max=5, eta_min=0.01),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
        ),
        (
            lambda o: optim.CosineLR(o, t_max=4),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4),
        ),
    ],
    ids=["step", "cosine_eta_min", "cosine"],
)
def test_schedules_match_torch(ours, theirs):
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.2)
    topt = torch.optim.SGD([torch.ones(2, requires_grad=True)], lr=0.2)
    schedule, tschedule = ours(opt), theirs(topt)
    assert schedule.get_last_lr() == pytest.approx(tschedule.get_last_lr())
    for _ in range(12):
        topt.step()
        schedule.step()
        tschedule.step()
        assert schedule.get_last_lr() == pytest.approx(tschedule.get_last_lr(), rel=1e-9, abs=1e-12)
        assert opt.lr == schedule.get_last_lr()[0]


def test_schedule_state_dict():
    opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    schedule = optim.StepLR(opt, step_size=2)
    for _ in range(5):
        schedule.step()
    state = schedule.state_dict()
    opt2 = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    schedule2 = optim.StepLR(opt2, step_size=2)
    schedule2.load_state_dict(state)
    assert opt2.lr == pytest.approx(0.01)
    schedule.step()
    schedule2.step()
    assert opt.lr == opt2.lr
