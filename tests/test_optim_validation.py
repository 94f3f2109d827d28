"""Bad input to jitnet.optim: a clear error that names what was expected and what came,
raised before anything changes (all or nothing), on the numpy and cpu targets."""

import math

import numpy as np
import pytest

import jitnet
from jitnet import nn, optim
from jitnet.nn import Parameter
from jitnet.targets import backend

SHAPES = [(3, 4), (5,)]


@pytest.fixture(params=["numpy", "cpu"])
def target(request):
    with jitnet.use_target(request.param):
        yield request.param


def make_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    params = [Parameter(jitnet.asarray(rng.standard_normal(s).astype(dtype)), name=f"p{i}")
              for i, s in enumerate(SHAPES)]
    for p in params:
        p.grad = jitnet.asarray(rng.standard_normal(p.shape).astype(dtype))
    return params


def make_sgd(params):
    return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)


def make_adam(params):
    return optim.Adam(params, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)


MAKERS = {"sgd": make_sgd, "adam": make_adam}


def snapshot(opt):
    """Copies of everything an optimizer call may change: data, state, hyperparameters."""
    data = [jitnet.to_numpy(p.data).copy() for p in opt.params]
    state = opt.state_dict()
    return data, {k: v for k, v in state.items() if k != "state"}, state["state"]


def assert_unchanged(opt, before):
    data, hyper, state = snapshot(opt)
    for a, b in zip(before[0], data):
        np.testing.assert_array_equal(a, b)
    assert hyper == before[1]
    assert [sorted(s) for s in state] == [sorted(s) for s in before[2]]
    for a, b in zip(before[2], state):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# -- step(): every gradient is checked before any parameter is updated -------------------

BAD_GRADS = {
    # the audit's case: on cpu only part of the parameter was updated, silently
    "shape": (lambda p: np.full((2, 2), 100, p.dtype), ValueError,
              r"parameter 1 \('p1'\) expected \.grad of shape \(5,\) and dtype float32, "
              r"got shape \(2, 2\)"),
    "list": (lambda p: [1.0] * p.shape[0], TypeError,
             r"parameter 1 \('p1'\) expected \.grad to be an np\.ndarray of shape \(5,\) "
             r"and dtype float32, got list"),
    "dtype": (lambda p: np.ones(p.shape, np.float64), TypeError,
              "expected .grad of shape .5,. and dtype float32, got shape .5,. and dtype float64"),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("bad", sorted(BAD_GRADS))
def test_bad_grad_is_rejected_before_any_update(target, name, bad):
    params = make_params()
    opt = MAKERS[name](params)
    opt.step()  # state exists: a rejected step must keep it too
    make_grad, error, match = BAD_GRADS[bad]
    params[1].grad = make_grad(params[1])
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("how", ["transposed", "read_only"])
def test_parameter_that_cannot_be_updated_in_place_is_rejected(target, name, how):
    params = make_params()
    if how == "transposed":
        # a strided view: the cpu kernels would update a flat copy and lose the update
        params[1].data = np.ascontiguousarray(params[1].data[::-1])[::-1]
    else:
        params[1].data.flags.writeable = False
    opt = MAKERS[name](params)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"parameter 1 \('p1'\) expected .data to be a "
                                         "writeable C-contiguous array"):
        opt.step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("data, error, match", [
    (lambda p: jitnet.to_numpy(p.data).tolist(), TypeError,
     r"^\w+\.step: parameter 1 \('p1'\) expected \.data to be an array, got list$"),
    (lambda p: np.arange(5, dtype=np.int64), TypeError,
     r"^\w+\.step: parameter 1 \('p1'\) expected floating-point \.data, got dtype int64$"),
], ids=["list", "int64"])
def test_parameter_data_that_is_no_float_array_is_rejected(target, name, data, error, match):
    params = make_params()
    opt = MAKERS[name](params)
    params[1].data = data(params[1])
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step()
    assert_unchanged(opt, before)


def test_stale_buffer_after_data_replaced_is_rejected(target):
    params = make_params()
    opt = make_sgd(params)
    opt.step()
    params[1].data = jitnet.asarray(np.ones((7,), np.float32))
    params[1].grad = jitnet.asarray(np.ones((7,), np.float32))
    with pytest.raises(ValueError, match=r"parameter 1 \('p1'\) expected its state "
                                         "'momentum_buffer' of shape .7,."):
        opt.step()


def test_valid_step_matches_the_kernels_bit_for_bit(target):
    # the checks must not change a valid update: compare with the target's kernels
    params = make_params()
    expected = [jitnet.to_numpy(p.data).copy() for p in params]
    b = backend()
    for value, p in zip(expected, params):
        b.sgd_update(value, jitnet.to_numpy(p.grad), np.zeros_like(value), 0.1, 0.9, True,
                     0.01)
    make_sgd(params).step()
    for value, p in zip(expected, params):
        np.testing.assert_array_equal(jitnet.to_numpy(p.data), value)


# -- construction ------------------------------------------------------------------------


def test_params_must_be_an_iterable_of_parameters():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"iterable of Parameters \(e.g. model.parameters\(\)\)"
                                        ", got a Linear; pass model.parameters"):
        optim.SGD(model, lr=0.1)
    with pytest.raises(TypeError, match="got a Parameter; wrap it in a list"):
        optim.Adam(model.weight)
    with pytest.raises(TypeError, match="iterable of Parameters .*, got int"):
        optim.SGD(3, lr=0.1)
    with pytest.raises(TypeError, match="iterable of Parameters .*, got ndarray at index 1"):
        optim.SGD([model.weight, np.ones(2)], lr=0.1)
    with pytest.raises(TypeError, match="got Linear at index 0"):
        optim.Adam([model])


@pytest.mark.parametrize("ordered", [set, frozenset])
def test_a_set_of_parameters_is_rejected(ordered):
    # the state follows the parameters' order, which a set changes between runs (torch.optim
    # refuses a set in a group, and lets one through as the whole params)
    w, b = nn.Linear(3, 2).parameters()
    match = (rf"SGD expected an ordered collection of Parameters \(a list, or "
             rf"model.parameters\(\)\), got a {ordered.__name__}, whose order changes")
    with pytest.raises(TypeError, match=match):
        optim.SGD(ordered([w, b]), lr=0.1)
    opt = optim.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match=r"add_param_group expected 'params' to be an ordered"):
        opt.add_param_group({"params": ordered([b])})
    assert len(opt.param_groups) == 1


def test_duplicate_parameter_is_rejected():
    # torch.optim warns ("will cause an error") and then updates the parameter twice
    w, b = nn.Linear(3, 2).parameters()
    with pytest.raises(ValueError, match=r"parameter 2 \('weight'\) twice, at index 0 and 2"):
        optim.SGD([w, b, w], lr=0.1)
    optim.SGD(iter([w, b]), lr=0.1)  # any iterable, each parameter once


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda p: optim.SGD(p, lr="a"), TypeError,
         r"SGD expected lr to be a finite number >= 0, got 'a' \(str\)"),
        (lambda p: optim.SGD(p, lr=True), TypeError, "lr to be a finite number >= 0, got True"),
        (lambda p: optim.SGD(p, lr=float("nan")), ValueError,
         "lr to be a finite number >= 0, got nan"),
        (lambda p: optim.SGD(p, lr=float("inf")), ValueError,
         "lr to be a finite number >= 0, got inf"),
        (lambda p: optim.SGD(p, lr=0.1, momentum=-1), ValueError,
         "momentum to be a finite number >= 0"),
        (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov="no"), TypeError,
         "nesterov to be True or False, got 'no'"),
        (lambda p: optim.SGD(p, lr=0.1, weight_decay=None), TypeError, "weight_decay"),
        (lambda p: optim.Adam(p, betas=0.9), TypeError,
         r"betas to be a pair \(beta1, beta2\) of floats in \[0, 1\), got 0.9"),
        (lambda p: optim.Adam(p, betas=(0.9,)), ValueError,
         r"betas to be a pair \(beta1, beta2\) .*, got 1 values"),
        (lambda p: optim.Adam(p, betas=(0.9, "x")), TypeError, r"betas\[1\] to be a finite number"),
        (lambda p: optim.Adam(p, eps=-1e-8), ValueError, "eps to be a finite number >= 0"),
    ],
    ids=["lr_str", "lr_bool", "lr_nan", "lr_inf", "momentum", "nesterov", "weight_decay",
         "betas_float", "betas_short", "betas_str", "eps"],
)
def test_hyperparameter_messages_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make([Parameter(np.ones(2))])


def test_the_base_optimizer_checks_lr_and_says_it_updates_nothing():
    with pytest.raises(ValueError, match="^Optimizer expected lr to be a finite number >= 0, "
                                         "got -1$"):
        optim.Optimizer([Parameter(np.ones(2))], lr=-1)
    opt = optim.Optimizer([Parameter(np.ones(2))], lr=0.5)
    assert opt.lr == 0.5 and opt.defaults == {"lr": 0.5}
    # a bare NotImplementedError before
    with pytest.raises(NotImplementedError, match=r"^Optimizer\.step: the base Optimizer "
                                                  r"holds parameter groups and updates "
                                                  r"nothing; use a subclass \(SGD, Adam\)$"):
        opt.step()


def test_numpy_numbers_are_accepted():
    p = [Parameter(np.ones(2))]
    opt = optim.SGD(p, lr=np.float64(0.1), momentum=np.int64(0), nesterov=np.False_)
    assert (opt.lr, opt.momentum, opt.nesterov) == (0.1, 0.0, False)
    assert optim.Adam(p, betas=np.array([0.8, 0.9])).betas == (0.8, 0.9)


# -- hyperparameters set as attributes: checked on assignment ---------------------------

BAD_ASSIGNMENTS = [
    # the audit's cases: a str lr ran on cpu (float("0.01")) and failed inside the numpy
    # kernel after Adam had counted the step; betas[0] = 1 divided by zero; lr < 0 ascended
    ("sgd", "lr", "0.1", TypeError, r"SGD expected lr to be a finite number >= 0, got '0.1' "
                                    r"\(str\)"),
    ("sgd", "lr", -1.0, ValueError, "SGD expected lr to be a finite number >= 0, got -1.0"),
    ("sgd", "lr", float("nan"), ValueError, "lr to be a finite number >= 0, got nan"),
    ("sgd", "momentum", None, TypeError, "SGD expected momentum to be a finite number"),
    ("sgd", "momentum", 0.0, ValueError, "SGD with nesterov=True needs momentum > 0"),
    ("sgd", "nesterov", 1, TypeError, "SGD expected nesterov to be True or False, got 1"),
    ("sgd", "weight_decay", -0.1, ValueError, "SGD expected weight_decay to be a finite"),
    ("adam", "lr", "0.01", TypeError, r"Adam expected lr to be a finite number >= 0, got "
                                      r"'0.01' \(str\)"),
    ("adam", "lr", -1.0, ValueError, "Adam expected lr to be a finite number >= 0, got -1.0"),
    ("adam", "betas", (1.0, 0.999), ValueError,
     r"Adam expected betas\[0\] to be a finite number in \[0, 1\), got 1.0"),
    ("adam", "betas", 0.9, TypeError, r"Adam expected betas to be a pair \(beta1, beta2\)"),
    ("adam", "eps", "1e-8", TypeError, "Adam expected eps to be a finite number >= 0"),
    ("adam", "weight_decay", float("inf"), ValueError, "weight_decay to be a finite number"),
]


@pytest.mark.parametrize("name, attribute, value, error, match", BAD_ASSIGNMENTS,
                         ids=[f"{n}-{a}-{v!r}" for n, a, v, _, _ in BAD_ASSIGNMENTS])
def test_bad_hyperparameter_assignment_is_refused_and_changes_nothing(
        target, name, attribute, value, error, match):
    params = make_params()
    opt = MAKERS[name](params)
    opt.step()
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        setattr(opt, attribute, value)
    assert_unchanged(opt, before)
    # the next step is the one an optimizer that never saw the assignment takes
    twin_params = make_params()
    twin = MAKERS[name](twin_params)
    twin.step()
    opt.step()
    twin.step()
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(jitnet.to_numpy(p.data), jitnet.to_numpy(q.data))
    if name == "adam":
        assert [p.state["step"] for p in params] == [2, 2]


def test_good_hyperparameter_assignment_is_kept_as_the_constructor_keeps_it(target):
    opt = make_sgd(make_params())
    opt.lr, opt.momentum, opt.weight_decay = np.float32(0.5), np.int64(1), 0
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.5, 1.0, 0.0)
    assert all(type(v) is float for v in (opt.lr, opt.momentum, opt.weight_decay))
    opt.nesterov = False
    opt.momentum = 0.0  # allowed once nesterov is off
    adam = make_adam(make_params())
    adam.betas = np.array([0.5, 0.75])
    assert adam.betas == (0.5, 0.75) and adam.state_dict()["betas"] == (0.5, 0.75)


def test_loading_a_state_sets_hyperparameters_together(target):
    # assigned one by one, momentum=0 would be refused while nesterov is still True
    opt = make_sgd(make_params())
    plain = optim.SGD(make_params(), lr=0.2)
    opt.load_state_dict(plain.state_dict())
    assert (opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == (0.2, 0.0, False, 0.0)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("first", [True, False], ids=["first_step", "later_step"])
def test_step_that_raises_in_the_kernels_leaves_no_state(target, monkeypatch, name, first):
    # Adam counted the step (and a first step made its buffers) before the kernels ran,
    # so a step that failed there skewed the bias corrections for the rest of the run
    opt = MAKERS[name](make_params())
    if not first:
        opt.step()
    before = snapshot(opt)

    def failing(*args):
        raise RuntimeError("kernel failed")

    kernel = "sgd_update_many" if name == "sgd" else "adam_update_many"
    monkeypatch.setattr(backend(), kernel, failing)
    with pytest.raises(RuntimeError, match="kernel failed"):
        opt.step()
    assert_unchanged(opt, before)


# -- load_state_dict: everything is checked before anything is set -----------------------


def trained(name):
    params = make_params()
    opt = MAKERS[name](params)
    opt.step()
    return opt


def damaged(name, how):
    state = trained(name).state_dict()
    state["lr"] = 0.5  # differs from the target optimizer's, so a partial load would show
    if how == "buffer":
        key = "momentum_buffer" if name == "sgd" else "exp_avg_sq"
        state["state"][-1][key] = np.zeros((2, 2), np.float32)  # the last parameter's
    elif how == "buffer_dtype":
        key = "momentum_buffer" if name == "sgd" else "exp_avg"
        state["state"][-1][key] = np.zeros(SHAPES[-1], np.int64)
    elif how == "buffer_list":
        key = "momentum_buffer" if name == "sgd" else "exp_avg"
        state["state"][-1][key] = [0.0] * SHAPES[-1][0]
    elif how == "partial":
        del state["state"][-1]["exp_avg_sq" if name == "adam" else "momentum_buffer"]
        if name == "sgd":
            state["state"][-1]["exp_avg"] = np.zeros(SHAPES[-1], np.float32)
    elif how == "step":
        state["state"][-1]["step" if name == "adam" else "momentum_buffer"] = "3"
    elif how == "negative_lr":
        state["lr"] = -5
    elif how in ("no_state", "no_lr"):
        del state[how[3:]]
    elif how == "other_optimizer":
        state = trained("adam" if name == "sgd" else "sgd").state_dict()
    elif how == "entries":
        state["state"] = {"0": {}}
    elif how == "entry":
        state["state"][-1] = 3
    return state


DAMAGE = {
    "buffer": (ValueError, r"state of parameter 1 \('p1'\): \w+ expected shape \(5,\), "
                           r"got \(2, 2\)"),
    "buffer_dtype": (TypeError, "expected a floating-point dtype, got int64"),
    "buffer_list": (TypeError, r"expected \w+ to be an np.ndarray of shape \(5,\), got list"),
    "partial": (ValueError, r"state of parameter 1 \('p1'\) expected no keys or the keys"),
    "step": (TypeError, r"got ('3' \(str\)|str)$"),
    "negative_lr": (ValueError, "load_state_dict expected lr to be a finite number >= 0, got -5"),
    "no_state": (ValueError, r"missing \['state'\]"),
    "no_lr": (ValueError, r"missing \['lr'\]"),
    "other_optimizer": (ValueError, "the state of another optimizer"),
    "entries": (TypeError, "expected 'state' to be a list of dicts, one per parameter, "
                           "got dict"),
    "entry": (TypeError, r"load_state_dict: state of parameter 1 \('p1'\) expected a dict, "
                         "got int$"),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_bad_optimizer_state_is_rejected_and_changes_nothing(target, name, how):
    opt = trained(name)
    opt.step()
    before = snapshot(opt)
    state = damaged(name, how)
    error, match = DAMAGE[how]
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    assert_unchanged(opt, before)


def test_loaded_state_is_copied_and_cast(target):
    opt = trained("adam")
    state = opt.state_dict()
    state["state"][0]["exp_avg"] = state["state"][0]["exp_avg"].astype(np.float64)
    state["state"][0]["step"] = np.int64(4)
    fresh = make_adam(make_params())
    fresh.load_state_dict(state)
    p = fresh.params[0]
    assert p.state["step"] == 4 and type(p.state["step"]) is int
    assert p.state["exp_avg"].dtype == np.float32
    fresh.step()  # updates its own copy, not the caller's arrays
    np.testing.assert_array_equal(state["state"][1]["exp_avg"],
                                  opt.state_dict()["state"][1]["exp_avg"])


def test_non_dict_state_is_rejected():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(TypeError, match=r"expected a dict from SGD.state_dict\(\), got list"):
        opt.load_state_dict([0.1])


# -- schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda o: optim.StepLR(o, 2, gamma=-1), ValueError,
         "StepLR expected gamma to be a finite number > 0, got -1"),
        (lambda o: optim.StepLR(o, 2, gamma=0), ValueError, "gamma to be a finite number > 0"),
        (lambda o: optim.StepLR(o, True), TypeError, "step_size to be an int >= 1, got True"),
        (lambda o: optim.StepLR(o, 2.0), TypeError, "step_size to be an int >= 1, got 2.0"),
        (lambda o: optim.StepLR(o, 0), ValueError, "step_size to be an int >= 1, got 0"),
        (lambda o: optim.CosineLR(o, 4, eta_min=-1), ValueError,
         "CosineLR expected eta_min to be a finite number >= 0, got -1"),
        (lambda o: optim.CosineLR(o, np.bool_(True)), TypeError, "t_max to be an int"),
        (lambda o: optim.CosineLR(o.params, 4), TypeError,
         "CosineLR expected a jitnet.optim optimizer .*, got list"),
    ],
    ids=["gamma_negative", "gamma_zero", "step_bool", "step_float", "step_zero", "eta_min",
         "t_max_bool", "not_an_optimizer"],
)
def test_schedule_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(optim.SGD([Parameter(np.ones(2))], lr=1.0))


def test_schedules_accept_numpy_integers():
    lrs = []
    for step_size in (2, np.int64(2)):
        opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
        schedule = optim.StepLR(opt, step_size=step_size, gamma=np.float64(0.5))
        for _ in range(5):
            schedule.step()
        lrs.append(opt.lr)
    assert lrs == [0.25, 0.25]
    opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    assert optim.CosineLR(opt, np.int32(4)).t_max == 4


STEP_STATE = {"base_lr": 1.0, "last_epoch": 3, "step_size": 2, "gamma": 0.5}


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"base_lr": None}, ValueError, r"missing \['base_lr'\]"),
        ({"base_lr": -1.0}, ValueError, "base_lr to be a finite number >= 0, got -1.0"),
        ({"last_epoch": -1}, ValueError, "last_epoch to be an int >= 0"),
        ({"t_max": 4}, ValueError, r"unexpected \['t_max'\]"),
        ({"gamma": None}, ValueError, r"missing \['gamma'\]"),
        ({"gamma": 0.0}, ValueError,
         "StepLR.load_state_dict expected gamma to be a finite number > 0, got 0.0"),
        ({"step_size": 2.0}, TypeError,
         "StepLR.load_state_dict expected step_size to be an int >= 1, got 2.0"),
        # base_lr passes its own check, but makes a rate the optimizer refuses
        ({"base_lr": 1e308}, ValueError, "SGD expected lr to be a finite number >= 0, got inf"),
        (None, TypeError, "expected a dict from StepLR.state_dict"),
    ],
    ids=["no_base_lr", "negative_base_lr", "negative_epoch", "extra_key", "no_gamma",
         "gamma_zero", "step_size_float", "lr_overflows", "none"],
)
def test_bad_schedule_state_is_rejected_and_changes_nothing(changes, error, match):
    opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    schedule = optim.StepLR(opt, step_size=2, gamma=10.0)
    schedule.step()
    before = (schedule.state_dict(), opt.lr)
    state = None
    if changes is not None:
        state = {**STEP_STATE, **changes}
        state = {key: value for key, value in state.items() if value is not None}
    with pytest.raises(error, match=match):
        schedule.load_state_dict(state)
    assert (schedule.state_dict(), opt.lr) == before


@pytest.mark.parametrize("source, target", [("step", "cosine"), ("cosine", "step")])
def test_one_schedules_state_does_not_load_into_another(source, target):
    # both held only base_lr and last_epoch, so each loaded the other's silently
    makers = {"step": lambda o: optim.StepLR(o, step_size=2, gamma=0.5),
              "cosine": lambda o: optim.CosineLR(o, t_max=4)}
    saved = makers[source](optim.SGD([Parameter(np.ones(2))], lr=1.0))
    saved.step()
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.5)
    schedule = makers[target](opt)
    before = (schedule.state_dict(), opt.lr)
    name = type(schedule).__name__
    with pytest.raises(ValueError, match=f"{name}.load_state_dict expected a "
                                         f"{name}.state_dict.* another optimizer or schedule"):
        schedule.load_state_dict(saved.state_dict())
    assert (schedule.state_dict(), opt.lr) == before


def test_schedule_state_holds_its_hyperparameters_and_keeps_its_own_on_load():
    opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    cosine = optim.CosineLR(opt, t_max=2, eta_min=0.1)
    cosine.step()
    state = cosine.state_dict()
    assert state == {"base_lr": 1.0, "last_epoch": 1, "t_max": 2, "eta_min": 0.1}
    assert optim.StepLR(opt, 3, gamma=0.5).state_dict() == {
        "base_lr": opt.lr, "last_epoch": 0, "step_size": 3, "gamma": 0.5}
    # a run resumed with more epochs anneals over its own t_max, as an uninterrupted one
    longer = optim.CosineLR(optim.SGD([Parameter(np.ones(2))], lr=1.0), t_max=4, eta_min=0.1)
    longer.load_state_dict(state)
    assert (longer.t_max, longer.last_epoch) == (4, 1)
    uninterrupted = optim.CosineLR(optim.SGD([Parameter(np.ones(2))], lr=1.0), t_max=4,
                                   eta_min=0.1)
    uninterrupted.step()
    assert longer.get_last_lr() == uninterrupted.get_last_lr()


def test_schedule_step_that_sets_a_bad_rate_changes_nothing():
    opt = optim.SGD([Parameter(np.ones(2))], lr=1.0)
    schedule = optim.StepLR(opt, step_size=1, gamma=1e200)
    schedule.step()
    with pytest.raises(ValueError, match="SGD expected lr to be a finite number >= 0, got inf"):
        schedule.step()  # 1e400 is no float
    assert (schedule.last_epoch, opt.lr) == (1, 1e200)


def test_two_optimizers_over_the_same_parameters_keep_their_own_state(target):
    # param.state holds every optimizer's buffers: each saves and loads only its own
    params = make_params()
    sgd, adam = make_sgd(params), make_adam(params)
    sgd.step()
    adam.step()
    momentum = [jitnet.to_numpy(p.state["momentum_buffer"]).copy() for p in params]
    saved = adam.state_dict()
    assert all(sorted(s) == ["exp_avg", "exp_avg_sq", "step"] for s in saved["state"])
    adam.step()
    adam.load_state_dict(saved)
    assert [p.state["step"] for p in params] == [1, 1]
    for p, m in zip(params, momentum):
        np.testing.assert_array_equal(jitnet.to_numpy(p.state["momentum_buffer"]), m)


@pytest.mark.parametrize("make", [lambda o: optim.StepLR(o, step_size=2, gamma=0.5),
                                  lambda o: optim.CosineLR(o, t_max=4)], ids=["step", "cosine"])
def test_a_schedule_state_saved_before_it_held_hyperparameters_still_loads(make):
    # checkpoints written before 2026-12-07 18:00 UTC hold only these two keys
    reference = make(optim.SGD([Parameter(np.ones(2))], lr=1.0))
    reference.step()
    schedule = make(optim.SGD([Parameter(np.ones(2))], lr=1.0))
    schedule.load_state_dict({"base_lr": 1.0, "last_epoch": 1})
    assert schedule.state_dict() == reference.state_dict()
    assert schedule.get_last_lr() == reference.get_last_lr()


# -- parameter groups: a write into a group is checked as the constructor checks it --------


def make_grouped(name, params):
    """Two groups (``params[:1]``, ``params[1:]``) whose hyperparameters differ."""
    if name == "sgd":
        return optim.SGD([{"params": params[:1]},
                          {"params": params[1:], "lr": 0.05, "momentum": 0.5}],
                         lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    return optim.Adam([{"params": params[:1], "betas": (0.5, 0.9)},
                       {"params": params[1:], "lr": 0.02}],
                      lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)


BAD_GROUP_WRITES = [
    ("sgd", "lr", -1.0, ValueError,
     r"SGD\.param_groups\[1\] expected lr to be a finite number >= 0, got -1\.0$"),
    ("sgd", "lr", "0.1", TypeError,
     r"SGD\.param_groups\[1\] expected lr to be a finite number >= 0, got '0\.1' \(str\)$"),
    ("sgd", "lr", float("nan"), ValueError,
     r"SGD\.param_groups\[1\] expected lr to be a finite number >= 0, got nan$"),
    ("sgd", "momentum", 0.0, ValueError,
     r"SGD\.param_groups\[1\] with nesterov=True needs momentum > 0"),
    ("sgd", "nesterov", "no", TypeError,
     r"SGD\.param_groups\[1\] expected nesterov to be True or False, got 'no'"),
    ("sgd", "weight_decay", None, TypeError, r"SGD\.param_groups\[1\] expected weight_decay"),
    ("sgd", "dampening", 0.1, ValueError,
     r"SGD\.param_groups\[1\] got dampening=0\.1, which jitnet's SGD does not implement"),
    ("sgd", "params", 3, TypeError,
     r"SGD\.param_groups\[1\] expected 'params' to be an iterable of Parameters"),
    ("adam", "lr", -1.0, ValueError,
     r"Adam\.param_groups\[1\] expected lr to be a finite number >= 0, got -1\.0$"),
    ("adam", "lr", "0.01", TypeError, r"Adam\.param_groups\[1\] expected lr .*\(str\)$"),
    ("adam", "eps", float("nan"), ValueError,
     r"Adam\.param_groups\[1\] expected eps to be a finite number >= 0, got nan"),
    ("adam", "betas", (1.0, 0.9), ValueError,
     r"Adam\.param_groups\[1\] expected betas\[0\] to be a finite number in \[0, 1\)"),
    ("adam", "amsgrad", True, ValueError,
     r"Adam\.param_groups\[1\] got amsgrad=True, which jitnet's Adam does not implement"),
]


@pytest.mark.parametrize("name, key, value, error, match", BAD_GROUP_WRITES,
                         ids=[f"{n}-{k}-{v!r}" for n, k, v, _, _ in BAD_GROUP_WRITES])
def test_bad_value_written_into_a_group_is_refused_and_changes_nothing(
        target, name, key, value, error, match):
    params = make_params()
    opt = make_grouped(name, params)
    opt.step()
    before = snapshot(opt)
    groups = [dict(group) for group in opt.param_groups]
    with pytest.raises(error, match=match):
        opt.param_groups[1][key] = value
    with pytest.raises(error, match=match):
        other = "lr" if key == "weight_decay" else "weight_decay"
        opt.param_groups[1].update({other: 0.5, key: value})  # all or nothing
    with pytest.raises(error, match=match):
        opt.param_groups[1] |= {key: value}
    assert [dict(group) for group in opt.param_groups] == groups
    assert_unchanged(opt, before)
    # the next step is the one an optimizer that never saw the writes takes
    twin_params = make_params()
    twin = make_grouped(name, twin_params)
    twin.step()
    opt.step()
    twin.step()
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(jitnet.to_numpy(p.data), jitnet.to_numpy(q.data))


def test_good_group_writes_are_kept_as_the_constructor_keeps_them(target):
    opt = make_grouped("sgd", make_params())
    group = opt.param_groups[1]
    group["lr"], group["weight_decay"] = np.float32(0.5), 0
    assert (group["lr"], group["weight_decay"]) == (0.5, 0.0)
    assert type(group["lr"]) is float and type(group["weight_decay"]) is float
    # the cross-check sees both keys of one update, or an order that keeps it
    group.update(momentum=0, nesterov=False)
    assert (group["momentum"], group["nesterov"]) == (0.0, False)
    group["dampening"] = 0  # PyTorch's default: accepted, and not used
    assert group.setdefault("name", "head") == "head" and group.pop("name") == "head"
    opt.param_groups[1] |= {"weight_decay": 0.25}  # the group itself, updated
    assert opt.param_groups[1] is group and group["weight_decay"] == 0.25
    group["name"] = "head"
    assert group.popitem() == ("name", "head")
    assert group.popitem() == ("dampening", 0)  # not a hyperparameter: the group can lose it
    with pytest.raises(ValueError, match=r"SGD\.param_groups\[1\] cannot do without "
                                         r"'weight_decay'"):
        group.popitem()
    assert group["weight_decay"] == 0.25
    for key in ("lr", "params", "nesterov"):
        with pytest.raises(ValueError, match=rf"SGD\.param_groups\[1\] cannot do without "
                                             rf"'{key}'"):
            del group[key]
    with pytest.raises(ValueError, match="cannot do without 'params'"):
        group.clear()
    assert group["lr"] == 0.5 and len(group["params"]) == 1
    adam = make_grouped("adam", make_params())
    adam.param_groups[0]["betas"] = np.array([0.25, 0.5])
    assert adam.param_groups[0]["betas"] == (0.25, 0.5)


def test_group_writes_stay_checked_in_a_copy():
    import copy
    import pickle

    opt = make_grouped("adam", make_params())
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert [dict(g, params=None) for g in twin.param_groups] == [
            dict(g, params=None) for g in opt.param_groups]
        with pytest.raises(ValueError, match=r"Adam\.param_groups\[1\] expected lr"):
            twin.param_groups[1]["lr"] = -1.0
        twin.param_groups[1]["lr"] = 0.5
    assert opt.param_groups[1]["lr"] == 0.02


def test_attributes_of_an_optimizer_with_groups(target):
    params = make_params()
    opt = make_grouped("sgd", params)
    with pytest.raises(ValueError, match=r"SGD\.lr is ambiguous: its 2 parameter groups have lr "
                                         r"0\.1, 0\.05; read opt\.param_groups\[i\]\['lr'\]"):
        opt.lr
    assert opt.weight_decay == 0.01 and opt.nesterov is True  # values the groups share
    opt.lr = 0.3  # every group
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3] and opt.lr == 0.3
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"SGD\.param_groups\[0\] expected momentum to be a "
                                         "finite number >= 0, got -1"):
        opt.momentum = -1
    assert [dict(g) for g in opt.param_groups] == before
    assert opt.params == params and opt.defaults == {
        "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}


def test_a_group_takes_a_single_parameter_as_in_pytorch():
    params = make_params()
    opt = optim.SGD([{"params": params[0]}], lr=0.1)
    opt.add_param_group({"params": params[1], "lr": 0.5})
    assert [group["params"] for group in opt.param_groups] == [[params[0]], [params[1]]]
    assert opt.params == params


def test_a_parameter_in_two_groups_is_refused():
    params = make_params()
    with pytest.raises(ValueError, match=r"SGD\.param_groups\[1\] got parameter 0 \('p0'\), "
                                         r"which param_groups\[0\] holds already: some "
                                         "parameters appear in more than one parameter group"):
        optim.SGD([{"params": params}, {"params": [params[0]]}], lr=0.1)
    opt = make_grouped("sgd", params)
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"SGD\.add_param_group got parameter 1 \('p1'\), which "
                                         r"param_groups\[1\] holds already: some parameters "
                                         "appear in more than one parameter group"):
        opt.add_param_group({"params": [Parameter(np.ones(2)), params[1]], "lr": 0.5})
    with pytest.raises(ValueError, match=r"SGD\.add_param_group expected lr to be a finite "
                                         "number >= 0, got -0.5"):
        opt.add_param_group({"params": [Parameter(np.ones(2))], "lr": -0.5})
    with pytest.raises(ValueError, match=r"SGD\.add_param_group expected a parameter group "
                                         r"with the key 'params', got the keys \['lr'\]"):
        opt.add_param_group({"lr": 0.5})
    with pytest.raises(TypeError, match=r"SGD\.add_param_group expected a parameter group"):
        opt.add_param_group([Parameter(np.ones(2))])
    assert [dict(g) for g in opt.param_groups] == before


@pytest.mark.parametrize(
    "params, error, match",
    [
        (lambda p: [{"params": p}, p[0]], TypeError,
         "SGD expected every item of params to be a parameter group .*, got Parameter at "
         "index 1"),
        (lambda p: [{"params": []}], ValueError, "SGD got an empty parameter list"),
        (lambda p: [{"params": p, "lr": "0.1"}], TypeError,
         r"SGD\.param_groups\[0\] expected lr to be a finite number >= 0, got '0\.1' \(str\)"),
        (lambda p: [{"params": p[:1]}, {"params": p[1:], "momentum": 0}], ValueError,
         r"SGD\.param_groups\[1\] with nesterov=True needs momentum > 0"),
        (lambda p: [{"params": p, "dampening": 0.5}], ValueError,
         "SGD does not implement"),
        # not NumPy's "truth value of an array ... is ambiguous"
        (lambda p: [{"params": p, "dampening": np.zeros(2)}], ValueError,
         r"SGD\.param_groups\[0\] got dampening=array\(\[0\., 0\.\]\), which jitnet's SGD "
         r"does not implement \(only dampening=0, PyTorch's default\)"),
    ],
    ids=["mixed", "empty", "lr_str", "nesterov", "dampening", "dampening_array"],
)
def test_bad_groups_are_refused_by_the_constructor(params, error, match):
    with pytest.raises(error, match=match):
        optim.SGD(params(make_params()), lr=0.1, momentum=0.9, nesterov=True)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("how", ["append", "assign"])
def test_step_refuses_a_params_list_changed_into_a_duplicate(target, name, how):
    # the one write a group cannot check as it happens: a list changed in place
    params = make_params()
    opt = make_grouped(name, params)
    opt.step()
    before = snapshot(opt)
    if how == "append":
        opt.param_groups[1]["params"].append(params[0])
    else:
        opt.param_groups[1]["params"] = [params[1], params[0]]
    with pytest.raises(ValueError, match=r"step: parameter 2 \('p0'\) is listed twice \(in "
                                         r"param_groups\[1\]\); some parameters appear in "
                                         "more than one parameter group"):
        opt.step()
    opt.param_groups[1]["params"] = params[1:]
    assert_unchanged(opt, before)
    opt.param_groups.append({"params": [Parameter(np.ones(2))]})  # no hyperparameters
    with pytest.raises(TypeError, match=r"step expected param_groups\[2\] to be a group the "
                                        r"optimizer made \(add one with add_param_group\), got "
                                        "dict"):
        opt.step()
    opt.param_groups.pop()
    assert_unchanged(opt, before)


def test_step_refuses_a_params_list_changed_to_hold_what_is_no_parameter(target):
    params = make_params()
    opt = make_grouped("sgd", params)
    opt.step()
    before = snapshot(opt)
    opt.param_groups[1]["params"].append(np.ones(2, np.float32))
    with pytest.raises(TypeError, match=r"^SGD\.step expected param_groups\[1\]\['params'\] "
                                        "to hold Parameters, got ndarray$"):
        opt.step()
    opt.param_groups[1]["params"].pop()
    assert_unchanged(opt, before)


# -- parameter groups in states -----------------------------------------------------------

#: States as the optimizers wrote them before parameter groups (and still do for one group).
OLD_STATES = {
    "sgd": {"lr": 0.05, "state": [{"momentum_buffer": np.full((3, 4), 0.5, np.float32)}, {}],
            "momentum": 0.8, "nesterov": True, "weight_decay": 0.02},
    "adam": {"lr": 0.002, "state": [{"step": 3, "exp_avg": np.full((3, 4), 0.5, np.float32),
                                     "exp_avg_sq": np.full((3, 4), 0.25, np.float32)}, {}],
             "betas": (0.7, 0.9), "eps": 1e-6, "weight_decay": 0.02},
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_state_saved_before_groups_loads_into_one_group(target, name):
    params = make_params()
    make = optim.SGD if name == "sgd" else optim.Adam
    opt = make([{"params": params, "lr": 0.5}], lr=0.1)
    old = OLD_STATES[name]
    opt.load_state_dict(old)
    hyperparameters = {key: value for key, value in old.items() if key != "state"}
    assert dict(opt.param_groups[0], params=None) == {"params": None, **hyperparameters}
    saved = opt.state_dict()  # one group: the layout it always had, key for key
    assert list(saved) == list(old)
    assert {key: value for key, value in saved.items() if key != "state"} == hyperparameters
    for key, value in old["state"][0].items():
        np.testing.assert_array_equal(saved["state"][0][key], value)
        np.testing.assert_array_equal(jitnet.to_numpy(params[0].state[key]), value)
    assert saved["state"][1] == {}


def grouping_state(name, how):
    """A state that does not fit :func:`make_grouped` over :func:`make_params`."""
    params = make_params()
    if how == "one_group":
        return MAKERS[name](params).state_dict()
    if how == "other_split":
        make = optim.SGD if name == "sgd" else optim.Adam
        return make([{"params": []}, {"params": params}], lr=0.1).state_dict()
    state = make_grouped(name, params).state_dict()
    if how == "three_groups":
        state["param_groups"].append(dict(state["param_groups"][1], params=[]))
    elif how == "bad_lr":
        state["param_groups"][1]["lr"] = -1.0
    elif how == "other_optimizer":
        state = make_grouped("adam" if name == "sgd" else "sgd", params).state_dict()
    elif how == "no_params":
        del state["param_groups"][0]["params"]
    elif how == "with_lr":
        state["lr"] = 0.1
    return state


GROUPING_DAMAGE = {
    "one_group": r"expected the state of an optimizer of 2 parameter groups \(of 1 and 1 "
                 r"parameters\), got one of one parameter group",
    "other_split": r"param_groups\[0\] expected 'params' to be the parameters \[0\] \(this "
                   r"optimizer's grouping\), got \[\]",
    "three_groups": "expected the state of an optimizer of 2 parameter groups .*, got one of 3",
    "bad_lr": r"load_state_dict: param_groups\[1\] expected lr to be a finite number >= 0, "
              "got -1.0",
    "other_optimizer": r"param_groups\[0\] expected the keys \['params', 'lr', .*\(the state "
                       "of another optimizer",
    "no_params": r"param_groups\[0\] expected the keys \['params'",
    "with_lr": r"unexpected \['lr'\]",
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("how", sorted(GROUPING_DAMAGE))
def test_a_state_of_other_groups_is_refused_and_changes_nothing(target, name, how):
    opt = make_grouped(name, make_params())
    opt.step()
    before = snapshot(opt)
    groups = [dict(group) for group in opt.param_groups]
    with pytest.raises(ValueError, match=GROUPING_DAMAGE[how]):
        opt.load_state_dict(grouping_state(name, how))
    assert [dict(group) for group in opt.param_groups] == groups
    assert_unchanged(opt, before)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("how, match", [
    ("groups_a_dict", r"load_state_dict expected 'param_groups' to be a list of dicts, one per "
                      "parameter group, got dict$"),
    ("group_a_list", r"load_state_dict: param_groups\[1\] expected a dict, got list$"),
])
def test_a_state_whose_groups_are_no_list_of_dicts_is_refused_and_changes_nothing(
        target, name, how, match):
    opt = make_grouped(name, make_params())
    opt.step()
    before = snapshot(opt)
    state = make_grouped(name, make_params()).state_dict()
    if how == "groups_a_dict":
        state["param_groups"] = dict(enumerate(state["param_groups"]))
    else:
        state["param_groups"][1] = list(state["param_groups"][1].items())
    with pytest.raises(TypeError, match=match):
        opt.load_state_dict(state)
    assert_unchanged(opt, before)


def test_a_state_of_groups_does_not_load_into_one_group():
    opt = make_sgd(make_params())
    with pytest.raises(ValueError, match="expected the state of an optimizer of one parameter "
                                         "group, got one of 2 parameter groups"):
        opt.load_state_dict(make_grouped("sgd", make_params()).state_dict())
    assert opt.lr == 0.1


def test_schedules_of_groups_refuse_states_and_optimizers_of_other_groups():
    def grouped_opt():
        return optim.SGD([{"params": [Parameter(np.ones(2))], "lr": 1.0},
                          {"params": [Parameter(np.ones(2))]}], lr=0.5)

    opt = grouped_opt()
    schedule = optim.StepLR(opt, step_size=1, gamma=0.5)
    with pytest.raises(ValueError, match=r"StepLR\.base_lr is ambiguous: the parameter groups "
                                         r"start from \[1\.0, 0\.5\]; read base_lrs"):
        schedule.base_lr
    schedule.step()
    before = (schedule.state_dict(), [g["lr"] for g in opt.param_groups])
    assert before == ({"base_lrs": [1.0, 0.5], "last_epoch": 1, "step_size": 1, "gamma": 0.5},
                      [0.5, 0.25])
    for state, error, match in [
        ({"base_lr": 1.0, "last_epoch": 1}, ValueError,
         "StepLR.load_state_dict expected the state of a schedule of 2 parameter groups, got "
         "one of 1"),
        ({**before[0], "base_lrs": [1.0]}, ValueError, "of 2 parameter groups, got one of 1"),
        ({**before[0], "base_lrs": [1.0, -0.5]}, ValueError,
         r"expected base_lrs\[1\] to be a finite number >= 0, got -0\.5"),
        ({**before[0], "base_lrs": 1.0}, TypeError, "expected base_lrs to be a list"),
        ({**before[0], "base_lrs": [1.0, 1e308], "last_epoch": 0, "gamma": 10.0}, None, None),
    ]:
        if error is None:  # every rate is checked before any is set
            big = optim.StepLR(opt, step_size=1, gamma=10.0)
            big.load_state_dict({**state, "last_epoch": 0})
            with pytest.raises(ValueError, match=r"SGD\.param_groups\[1\] expected lr to be a "
                                                 "finite number >= 0, got inf"):
                big.step()
            assert [g["lr"] for g in opt.param_groups] == [1.0, 1e308]
            continue
        with pytest.raises(error, match=match):
            schedule.load_state_dict(state)
        assert (schedule.state_dict(), [g["lr"] for g in opt.param_groups]) == before
    # a group added after the schedule was made: refused, not left out of the schedule
    opt = grouped_opt()
    schedule = optim.CosineLR(opt, t_max=4)
    opt.add_param_group({"params": [Parameter(np.ones(2))]})
    with pytest.raises(ValueError, match="CosineLR has base rates for 2 parameter groups, the "
                                         "optimizer has 3; make the schedule after the last "
                                         "add_param_group"):
        schedule.step()
    assert schedule.last_epoch == 0 and [g["lr"] for g in opt.param_groups] == [1.0, 0.5, 0.5]
    schedule.base_lr = 0.8  # every group's
    assert schedule.base_lr == 0.8 and schedule.base_lrs == [0.8] * 3
    schedule.step()
    assert schedule.get_last_lr() == [pytest.approx(0.8 * (1 + math.cos(math.pi / 4)) / 2)] * 3


# -- named parameters ----------------------------------------------------------------------


def named(params, prefix="fc."):
    """``params`` as ``model.named_parameters()`` yields them: ``(name, Parameter)`` pairs."""
    return [(f"{prefix}{p.name}", p) for p in params]


#: Who refuses a list of parameters, and a group's.
OWNERS = {"list": r"SGD expected ", "group": r"SGD\.param_groups\[0\] expected 'params' to be "}

#: ``(name, Parameter)`` pairs that are not, each at index 1 after a good one.
BAD_PAIRS = {
    "name_int": (lambda p: (1, p), r"\(name, Parameter\) pairs, got \(int, Parameter\) at index "
                                   "1$"),
    "array": (lambda p: ("fc.bias", np.ones(5)), r"\(name, Parameter\) pairs, got \(str, "
                                                 r"ndarray\) at index 1$"),
    "triple": (lambda p: ("fc.bias", p, 0.1), r"\(name, Parameter\) pairs, got a tuple of 3 "
                                              "items at index 1$"),
    "swapped": (lambda p: (p, "fc.bias"), r"\(name, Parameter\) pairs, got \(Parameter, str\) "
                                          "at index 1$"),
    "not_a_pair": (lambda p: "fc.bias", r"\(name, Parameter\) pairs \(e\.g\. "
                                        r"model\.named_parameters\(\)\), got str at index 1$"),
}


@pytest.mark.parametrize("where", ["list", "group"])
@pytest.mark.parametrize("bad", sorted(BAD_PAIRS))
def test_named_parameters_must_be_str_parameter_pairs(where, bad):
    params = make_params()
    items = [("fc.weight", params[0]), BAD_PAIRS[bad][0](params[1])]
    owner = OWNERS[where]
    with pytest.raises(TypeError, match=owner + BAD_PAIRS[bad][1]):
        optim.SGD(items if where == "list" else [{"params": items}], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD expected an iterable of Parameters \(e\.g\. "
                                        r"model\.parameters\(\)\) or of \(name, Parameter\) pairs "
                                        r"\(model\.named_parameters\(\)\), got int at index 0"):
        optim.SGD([1, params[0]], lr=0.1)
    with pytest.raises(ValueError, match=r"SGD got parameter 1 \('fc\.w'\) twice, at index 0 "
                                         r"and 1; list each parameter once"):
        optim.SGD([("fc.weight", params[0]), ("fc.w", params[0])], lr=0.1)


@pytest.mark.parametrize("where", ["list", "group"])
def test_named_and_unnamed_parameters_do_not_mix_in_a_group(where):
    # torch.optim: "all optimizer params should be with/without names"
    params = make_params()
    owner = OWNERS[where]
    rule = ("; the parameters of an optimizer are all with names or all without, as in "
            "torch.optim$")
    for items, match in [
            ([("fc.weight", params[0]), params[1]],
             r"all \(name, Parameter\) pairs, as at index 0, got a Parameter without a name at "
             r"index 1"),
            ([params[0], ("fc.bias", params[1])],
             r"all Parameters without names, as at index 0, got a \(name, Parameter\) pair at "
             r"index 1")]:
        with pytest.raises(ValueError, match=owner + match + rule):
            optim.SGD(items if where == "list" else [{"params": items}], lr=0.1)


WITH, WITHOUT = r"with names \(\(name, Parameter\) pairs\)", r"without names \(Parameters\)"


@pytest.mark.parametrize("groups, match", [
    (lambda p: [{"params": named(p[:1])}, {"params": p[1:]}], f"expected a parameter group "
     f"{WITH}, as param_groups\\[0\\] is, got one {WITHOUT}"),
    (lambda p: [{"params": p[:1]}, {"params": named(p[1:]), "lr": 0.5}], f"expected a parameter "
     f"group {WITHOUT}, as param_groups\\[0\\] is, got one {WITH}"),
    # an empty group has no names, as in torch.optim, unless it says so
    (lambda p: [{"params": named(p)}, {"params": []}], f"expected a parameter group {WITH}, as "
     r"param_groups\[0\] is, got one without names \(an empty one has none, as in torch\.optim; "
     r"add 'param_names': \[\]\)"),
], ids=["named_then_unnamed", "unnamed_then_named", "named_then_empty"])
def test_named_and_unnamed_groups_do_not_mix(groups, match):
    with pytest.raises(ValueError, match=r"SGD\.param_groups\[1\] " + match + "; the parameters "
                                         "of an optimizer are all with names or all without"):
        optim.SGD(groups(make_params()), lr=0.1)


@pytest.mark.parametrize("named_first", [True, False], ids=["named", "unnamed"])
def test_add_param_group_of_the_other_kind_is_refused_and_changes_nothing(target, named_first):
    params, extra = make_params(), Parameter(jitnet.asarray(np.ones(3, np.float32)), name="w")
    opt = make_sgd(named(params) if named_first else params)
    opt.step()
    before, groups = snapshot(opt), [dict(g) for g in opt.param_groups]
    kinds = [WITHOUT, WITH] if named_first else [WITH, WITHOUT]
    group = {"params": [extra] if named_first else named([extra]), "lr": 0.5}
    with pytest.raises(ValueError, match=rf"SGD\.add_param_group expected a parameter group "
                                         rf"{kinds[1]}, as param_groups\[0\] is, got one "
                                         rf"{kinds[0]}; the parameters of an optimizer are all"):
        opt.add_param_group(group)
    with pytest.raises(TypeError, match=r"SGD\.add_param_group expected 'params' to be \(name, "
                                        r"Parameter\) pairs, got \(str, int\) at index 1"):
        opt.add_param_group({"params": [("a", extra), ("b", 3)]})
    assert [dict(g) for g in opt.param_groups] == groups and "momentum_buffer" not in extra.state
    assert_unchanged(opt, before)
    # the same kind is added, its names beside its parameters
    opt.add_param_group({"params": named([extra], "head.") if named_first else [extra]})
    assert opt.params == [*params, extra]
    if named_first:
        assert [g["param_names"] for g in opt.param_groups] == [
            ["fc.p0", "fc.p1"], ["head.w"]]
    else:
        assert all("param_names" not in g for g in opt.param_groups)


@pytest.mark.parametrize("write, error, match", [
    (lambda g, p: g.__setitem__("params", p), ValueError,
     r"expected 'params' to be \(name, Parameter\) pairs \(e\.g\. model\.named_parameters\(\)\), "
     r"or 'param_names' beside them, as the group has names, got Parameters without names"),
    (lambda g, p: g.__setitem__("param_names", ["a"]), ValueError,
     r"expected 'param_names' to be a list of 2 str \(one per parameter\), got a list of 1$"),
    (lambda g, p: g.__setitem__("param_names", ["a", 2]), TypeError,
     r"expected 'param_names' to be a list of 2 str \(one per parameter\), got int at index 1$"),
    (lambda g, p: g.__setitem__("param_names", "ab"), TypeError,
     r"expected 'param_names' to be a list of 2 str \(one per parameter\), got str$"),
    (lambda g, p: g.update(params=named(p), param_names=["a", "b"]), ValueError,
     r"expected the names of its parameters once, got \(name, Parameter\) pairs in 'params' and "
     r"'param_names' too"),
    (lambda g, p: g.update(params=named(p), lr=-1.0), ValueError,
     r"expected lr to be a finite number >= 0, got -1\.0$"),
    (lambda g, p: g.__delitem__("param_names"), ValueError,
     r"cannot do without 'param_names' \(a group made with names keeps them"),
    (lambda g, p: g.pop("param_names"), ValueError, r"cannot do without 'param_names'"),
], ids=["params_without_names", "short_names", "int_name", "str_names", "names_twice",
        "bad_lr", "del", "pop"])
def test_bad_write_into_a_group_with_names_is_refused_and_changes_nothing(write, error, match):
    params = make_params()
    opt = make_sgd(named(params))
    group = opt.param_groups[0]
    before = dict(group)
    with pytest.raises(error, match=r"^SGD\.param_groups\[0\] " + match):
        write(group, params[::-1])
    assert dict(group) == before and group["param_names"] == ["fc.p0", "fc.p1"]


def test_a_group_without_names_takes_none():
    params = make_params()
    opt = make_sgd(params)
    group = opt.param_groups[0]
    before = dict(group)
    for write, got in [(lambda: group.__setitem__("params", named(params)),
                        r"\(name, Parameter\) pairs"),
                       (lambda: group.__setitem__("param_names", ["a", "b"]), "'param_names'"),
                       (lambda: group.update(params=params, param_names=["a", "b"]),
                        "'param_names'")]:
        with pytest.raises(ValueError, match=r"^SGD\.param_groups\[0\] expected Parameters "
                                             rf"without names, as the group has none, got {got}; "
                                             "the parameters of an optimizer are all with"):
            write()
        assert dict(group) == before
    with pytest.raises(KeyError):  # not there, as in a dict
        del group["param_names"]


def test_good_writes_into_a_group_with_names():
    params = make_params()
    opt = make_sgd(named(params))
    group = opt.param_groups[0]
    group["params"] = named(params[::-1], "head.")  # new parameters bring their names
    assert group["params"] == params[::-1] and group["param_names"] == ["head.p1", "head.p0"]
    group.update(params=params, param_names=("a", "b"))  # or come with them
    assert group["params"] == params and group["param_names"] == ["a", "b"]
    group["param_names"] = iter(["x", "y"])
    assert group["param_names"] == ["x", "y"] and list(group)[:2] == ["params", "param_names"]
    group["params"] = []  # an empty group of an optimizer with names
    assert group["param_names"] == []
    # a group of names given as an optimizer holds them (another's group, copied)
    twin = make_sgd([{"params": params, "param_names": ["u", "v"]}])
    assert twin.param_groups[0]["param_names"] == ["u", "v"]
    twin.add_param_group({"params": [], "param_names": []})
    with pytest.raises(ValueError, match=r"SGD\.param_groups\[0\] expected 'param_names' to be a "
                                         r"list of 2 str \(one per parameter\), got a list of 3"):
        make_sgd([{"params": params, "param_names": ["u", "v", "w"]}])


@pytest.mark.parametrize("grouped", [False, True], ids=["one_group", "two_groups"])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_state_saves_and_loads_alike_with_names_and_without(target, name, grouped):
    # names are not saved (as no key of a group but its hyperparameters is): a state of an
    # optimizer with names is the state of one without, and loads into either
    def make(with_names):
        params = make_params()
        items = named(params) if with_names else params
        if grouped:
            items = [{"params": items[:1], "lr": 0.2}, {"params": items[1:]}]
        opt = MAKERS[name](items)
        opt.step()
        return opt

    plain, with_names = make(False), make(True)
    saved, saved_named = plain.state_dict(), with_names.state_dict()
    assert saved_named.keys() == saved.keys()
    assert {k: v for k, v in saved_named.items() if k != "state"} == {
        k: v for k, v in saved.items() if k != "state"}
    for ours, theirs in zip(saved_named["state"], saved["state"], strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
    names = [g["param_names"] for g in with_names.param_groups]
    for source, opt in [(saved_named, make(False)), (saved, make(True))]:
        expected = snapshot(plain if source is saved else with_names)
        opt.load_state_dict(source)
        if "param_names" in opt.param_groups[0]:
            assert [g["param_names"] for g in opt.param_groups] == names  # its own, kept
        else:
            assert all("param_names" not in g for g in opt.param_groups)
        assert_unchanged(opt, (snapshot(opt)[0], *expected[1:]))
    if not grouped:  # a checkpoint of before groups loads into an optimizer with names
        opt = MAKERS[name](named(make_params()))
        opt.load_state_dict(OLD_STATES[name])
        assert opt.state_dict().keys() == OLD_STATES[name].keys()
        assert opt.param_groups[0]["param_names"] == ["fc.p0", "fc.p1"]
