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


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_default_lr_matches_torch(target, rng, momentum):
    # torch.optim.SGD(params) takes lr=1e-3; jitnet's SGD(params) the same
    ours, theirs = make_params(rng, np.float64)
    opt, topt = optim.SGD(ours, momentum=momentum), torch.optim.SGD(theirs, momentum=momentum)
    assert opt.defaults["lr"] == topt.defaults["lr"] == 1e-3
    assert opt.param_groups[0]["lr"] == topt.param_groups[0]["lr"]
    run_steps(ours, theirs, opt, topt, rng, 4, np.float64)
    assert_params_close(ours, theirs, np.float64)


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


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_dict_resumes_exactly(target, rng, name, grouped):
    def make(params):
        if grouped:
            params = [{"params": params[:1], "lr": 0.2},
                      {"params": params[1:], "weight_decay": 0.1}]
        if name == "sgd":
            return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
        return optim.Adam(params, lr=0.01, betas=(0.8, 0.99) if grouped else (0.9, 0.999))

    values = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(4)]

    def step(opt, params, i):
        for p, g in zip(params, grads[i]):
            p.grad = jitnet.asarray(g)
        opt.step()
        if grouped and i == 1:
            opt.param_groups[1]["lr"] = 0.03  # a changed rate is part of the state

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
    if grouped:
        assert sorted(saved) == ["param_groups", "state"]
        assert [g["params"] for g in saved["param_groups"]] == [[0], [1]]
        assert [g["lr"] for g in saved["param_groups"]] == [0.2, 0.03]
        opt2.param_groups[1]["name"] = "decayed"  # a key of the caller's: kept, not saved
    opt2.load_state_dict(saved)
    if grouped:
        assert [g["lr"] for g in opt2.param_groups] == [0.2, 0.03]
        assert opt2.param_groups[1]["name"] == "decayed"
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


# -- parameter groups ----------------------------------------------------------------------


def make_group_params(rng, shapes=((3, 4), (5,), (2, 3), (4,))):
    """Parameters in float64 for two groups (the first two, the last two), and torch's twins."""
    values = [rng.standard_normal(s) for s in shapes]
    ours = [Parameter(jitnet.asarray(v.copy())) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    return ours, theirs


def grouped(params, options):
    """``[{"params": params[:2], **options[0]}, {"params": params[2:], **options[1]}]``."""
    return [{"params": params[:2], **options[0]}, {"params": params[2:], **options[1]}]


SGD_GROUPS = [
    (dict(lr=0.02), [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                     dict(momentum=0.5)]),
    (dict(lr=0.05, momentum=0.9, weight_decay=1e-3), [dict(weight_decay=0.0),
                                                       dict(lr=0.2, nesterov=True)]),
    (dict(lr=0.1), [dict(), dict(lr=0.3, weight_decay=0.1)]),
]


@pytest.mark.parametrize("defaults, options", SGD_GROUPS, ids=["nesterov", "no_decay", "plain"])
def test_sgd_param_groups_match_torch(target, rng, defaults, options):
    ours, theirs = make_group_params(rng)
    opt = optim.SGD(grouped(ours, options), **defaults)
    topt = torch.optim.SGD(grouped(theirs, options), **defaults)
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    assert_params_close(ours, theirs, np.float64)
    # the idiom of hand-written schedules takes effect at the next step, per group
    for i, (group, their_group) in enumerate(zip(opt.param_groups, topt.param_groups)):
        group["lr"] = their_group["lr"] = 0.5 / (i + 2)
    opt.param_groups[1]["momentum"] = topt.param_groups[1]["momentum"] = 0.8
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    assert_params_close(ours, theirs, np.float64)


ADAM_GROUPS = [
    (dict(), [dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(weight_decay=0.05)]),
    (dict(lr=0.02, weight_decay=0.01), [dict(eps=1e-4, weight_decay=0.0),
                                        dict(lr=0.005, betas=(0.5, 0.9))]),
]


@pytest.mark.parametrize("defaults, options", ADAM_GROUPS, ids=["betas_eps", "no_decay"])
def test_adam_param_groups_match_torch(target, rng, defaults, options):
    ours, theirs = make_group_params(rng)
    opt = optim.Adam(grouped(ours, options), **defaults)
    topt = torch.optim.Adam(grouped(theirs, options), **defaults)
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    for group, their_group in zip(opt.param_groups, topt.param_groups):
        group["lr"] = their_group["lr"] = their_group["lr"] * 3
    opt.param_groups[0]["betas"] = topt.param_groups[0]["betas"] = (0.7, 0.95)
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    assert_params_close(ours, theirs, np.float64)
    assert all(p.state["step"] == 6 for p in ours)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_param_groups_defaults_and_add_param_group_as_torch(target, rng, name):
    ours, theirs = make_group_params(rng)
    if name == "sgd":
        make = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
        opt, topt = optim.SGD(ours[:2], **make), torch.optim.SGD(theirs[:2], **make)
        added = dict(lr=0.2, nesterov=True)
    else:
        make = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)
        opt, topt = optim.Adam(ours[:2], **make), torch.optim.Adam(theirs[:2], **make)
        added = dict(betas=(0.5, 0.9), weight_decay=0.1)
    # the hyperparameters both have, with the values torch keeps (floats, betas a tuple)
    assert opt.defaults == {key: topt.defaults[key] for key in opt.defaults}
    run_steps(ours[:2], theirs[:2], opt, topt, rng, 2, np.float64)
    opt.add_param_group({"params": ours[2:], **added})
    topt.add_param_group({"params": theirs[2:], **added})
    assert [group["params"] for group in opt.param_groups] == [ours[:2], ours[2:]]
    for group, their_group in zip(opt.param_groups, topt.param_groups):
        assert {key: group[key] for key in opt.defaults} == {
            key: their_group[key] for key in opt.defaults}
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    assert_params_close(ours, theirs, np.float64)
    assert opt.params == ours


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_one_group_is_bit_for_bit_the_plain_optimizer_and_groups_run_their_own_kernel(
        target, rng, name):
    # a list of Parameters, one group of them and two groups of equal settings take the
    # same steps; groups of other settings each take the kernel's step with their own
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES + [(2, 3)]]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in values]
             for _ in range(3)]
    if name == "sgd":
        make, options = optim.SGD, [dict(lr=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=0.01), dict(lr=0.05, momentum=0.5)]
    else:
        make, options = optim.Adam, [dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
                                     dict(lr=0.02, eps=1e-4)]

    def train(split, group_options):
        params = [Parameter(jitnet.asarray(v.copy())) for v in values]
        if split is None:
            opt = make(params, **group_options[0])
        else:
            opt = make([{"params": params[:split], **group_options[0]},
                        {"params": params[split:], **group_options[1]}], lr=0.5)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = jitnet.asarray(g)
            opt.step()
        return [jitnet.to_numpy(p.data) for p in params]

    plain = train(None, options)
    for split in (3, 1):
        for a, b in zip(plain, train(split, [options[0], options[0]])):
            np.testing.assert_array_equal(a, b)
    # two groups, each against its own optimizer over its own parameters
    together = train(1, options)
    first = train(None, options)[:1]
    second = [Parameter(jitnet.asarray(v.copy())) for v in values[1:]]
    opt = make(second, **options[1])
    for step in grads:
        for p, g in zip(second, step[1:]):
            p.grad = jitnet.asarray(g)
        opt.step()
    for a, b in zip(together, first + [jitnet.to_numpy(p.data) for p in second]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
        (lambda o: optim.CosineLR(o, t_max=5, eta_min=0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01)),
    ],
    ids=["step", "cosine"],
)
def test_schedules_with_param_groups_match_torch(ours, theirs):
    # each group from its own initial rate, as torch keeps initial_lr per group
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    opt = optim.SGD([{"params": [a, b], "lr": 0.5}, {"params": [c]}], lr=0.2, momentum=0.9)
    ta, tb, tc = (torch.ones(2, requires_grad=True) for _ in range(3))
    topt = torch.optim.SGD([{"params": [ta, tb], "lr": 0.5}, {"params": [tc]}], lr=0.2,
                           momentum=0.9)
    schedule, tschedule = ours(opt), theirs(topt)
    assert schedule.base_lrs == tschedule.base_lrs == [0.5, 0.2]
    assert schedule.get_last_lr() == tschedule.get_last_lr()
    for _ in range(12):
        topt.step()
        schedule.step()
        tschedule.step()
        assert schedule.get_last_lr() == pytest.approx(tschedule.get_last_lr(), rel=1e-9,
                                                       abs=1e-12)
        assert [g["lr"] for g in opt.param_groups] == schedule.get_last_lr()
    # a state of a two-group schedule resumes a two-group schedule
    resumed = ours(optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.2))
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.get_last_lr() == schedule.get_last_lr()
    schedule.step()
    resumed.step()
    assert resumed.get_last_lr() == schedule.get_last_lr()


# -- named parameters (torch 2: model.named_parameters()) ---------------------------------


def make_named_models(rng):
    """A jitnet model and torch's twin of the same float64 weights, with the same names."""
    ours = nn.Sequential(nn.Linear(4, 3, dtype=np.float64), nn.ReLU(),
                         nn.Linear(3, 2, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
                                 torch.nn.Linear(3, 2)).double()
    with torch.no_grad():
        for (name, p), (their_name, tp) in zip(ours.named_parameters(),
                                               theirs.named_parameters(), strict=True):
            assert name == their_name
            p.data = jitnet.asarray(rng.standard_normal(p.shape))
            tp.copy_(torch.tensor(jitnet.to_numpy(p.data)))
    return ours, theirs


NAMED_SETUPS = {
    # the whole model, groups with their own rates, and a group added later
    "model": (lambda m: m.named_parameters(), None),
    "groups": (lambda m: [{"params": m[0].named_parameters(), "lr": 0.01},
                          {"params": m[2].named_parameters(), "weight_decay": 0.1}], None),
    "added": (lambda m: m[0].named_parameters(),
              lambda m: {"params": m[2].named_parameters(), "lr": 0.3}),
}


@pytest.mark.parametrize("setup", sorted(NAMED_SETUPS))
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_named_parameters_train_as_torch(target, rng, name, setup):
    model, their_model = make_named_models(rng)
    params, added = NAMED_SETUPS[setup]
    if name == "sgd":
        make, config = optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)
        their_make = torch.optim.SGD
    else:
        make, config, their_make = optim.Adam, dict(lr=0.02), torch.optim.Adam
    opt, topt = make(params(model), **config), their_make(params(their_model), **config)
    if added is not None:
        opt.add_param_group(added(model))
        topt.add_param_group(added(their_model))
    assert len(opt.param_groups) == len(topt.param_groups) > 0
    for group, their_group in zip(opt.param_groups, topt.param_groups):
        assert group["param_names"] == their_group["param_names"]
        assert len(group["params"]) == len(their_group["params"])
        assert {key: group[key] for key in opt.defaults} == {
            key: their_group[key] for key in opt.defaults}
    ours, theirs = list(model.parameters()), list(their_model.parameters())
    assert opt.params == ours
    run_steps(ours, theirs, opt, topt, rng, 3, np.float64)
    assert_params_close(ours, theirs, np.float64)
