"""Optimizers (SGD, Adam) and learning-rate schedules (StepLR, CosineLR).

Updates run as kernels of the active target (``sgd_update_many``, ``adam_update_many``),
in place on ``param.data``. Per-parameter buffers live in ``param.state``, so
``model.to(target)`` moves them with the parameters. The semantics are PyTorch's
``torch.optim.SGD`` / ``torch.optim.Adam`` with one parameter group.

Every public call validates all of its input before it changes anything: a rejected
``step()`` or ``load_state_dict()`` leaves parameters, buffers and hyperparameters as
they were (the kernels trust their inputs, and a fused update cannot be undone). A
hyperparameter set as an attribute (``opt.lr = 0.01``, as the schedules do) is checked
on assignment, as the constructor checks it.
"""

import math
from collections.abc import Mapping

import numpy as np

from ._checks import check_flag, check_int, check_real
from .nn.module import Module, Parameter, like, zero_grads
from .targets import backend, is_device_array, to_numpy

#: What an optimizer takes as ``params``, for the messages that reject something else.
_PARAMS_EXPECTED = "an iterable of Parameters (e.g. model.parameters())"


#: ``check_real``'s condition for the hyperparameters that may be 0 but not below.
_AT_LEAST_0 = (">= 0", lambda v: v >= 0)


def _hyperparameter(name):
    """The attribute ``name`` of an optimizer, whose assignment runs the constructor's checks.

    ``opt.lr = 0.01`` is how schedules and users change a rate, so it is checked as
    ``SGD(..., lr=0.01)`` would be (with the other hyperparameters as they are: a
    cross-check such as nesterov's ``momentum > 0`` holds too). A rejected value is a
    TypeError or ValueError naming ``name`` and leaves every hyperparameter as it was;
    ``step()`` then only reads values that passed.
    """

    def get(self):
        return self._values[name]

    def set(self, value):
        self._values = self._checked(type(self).__name__, **{**self._values, name: value})

    return property(get, set, doc=f"``{name}``; checked on assignment, as by the constructor.")


def _check_keys(owner, state, expected, source):
    """Raise unless ``state`` is a mapping with exactly the keys ``expected``.

    ``source`` names what ``state_dict()`` should have made it (``"SGD"``), so that a
    state of another optimizer or schedule is told apart from a damaged one.
    """
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{owner} expected a dict from {source}.state_dict(), got {type(state).__name__}"
        )
    missing = [key for key in expected if key not in state]
    unexpected = sorted(str(key) for key in state if key not in expected)
    if missing or unexpected:
        raise ValueError(
            f"{owner} expected a {source}.state_dict() with the keys {list(expected)}, got "
            f"the keys {sorted(str(key) for key in state)} (missing {missing}, unexpected "
            f"{unexpected}: the state of another optimizer or schedule?)"
        )


def _check_params(owner, params):
    """The list of ``params``, or a TypeError / ValueError saying what was wrong.

    Rejects a Module or a single Parameter (not an iterable of them), items that are
    not Parameters, an empty list and a parameter listed twice (which would take
    two updates per step; ``torch.optim`` warns that this will become an error).
    """
    if isinstance(params, (Module, Parameter)):
        hint = "pass model.parameters()" if isinstance(params, Module) else "wrap it in a list"
        raise TypeError(
            f"{owner} expected {_PARAMS_EXPECTED}, got a {type(params).__name__}; {hint}"
        )
    try:
        params = list(params)
    except TypeError:
        raise TypeError(
            f"{owner} expected {_PARAMS_EXPECTED}, got {type(params).__name__}"
        ) from None
    if not params:
        raise ValueError(f"{owner} got an empty parameter list")
    first_index = {}
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(
                f"{owner} expected {_PARAMS_EXPECTED}, got {type(p).__name__} at index {i}"
            )
        if id(p) in first_index:
            raise ValueError(
                f"{owner} got {_describe(i, p)} twice, at index {first_index[id(p)]} and "
                f"{i}; list each parameter once"
            )
        first_index[id(p)] = i
    return params


def _describe(index, p):
    """``parameter 1 ('bias')``: how messages name a parameter of an optimizer."""
    return f"parameter {index}" + (f" ({p.name!r})" if p.name else "")


def _check_update(owner, index, p, buffers):
    """Raise unless parameter ``p`` (``index`` in its optimizer) can take an update.

    Parameters
    ----------
    owner : str
        Who checks (``"SGD.step"``).
    index : int
        Position of ``p`` in the optimizer's parameters, for the message.
    p : Parameter
        Its ``data`` must be a writeable C-contiguous floating-point array (updated in
        place through a flat view); its ``grad`` an array of the same shape and dtype
        (``np.ndarray``, or on the cuda target also a device array); the ``buffers``
        it holds in ``state`` the same shape and dtype as ``data``.
    buffers : tuple of str
        Keys of ``p.state`` that hold arrays like ``data``.

    Notes
    -----
    Only attributes are compared (no copy, nothing read from a device): this runs
    for every parameter on every step.
    """
    data, grad = p.data, p.grad
    # the messages are put together only when one is raised (formatting a dtype is
    # what cost most: 33 -> 15 us a step for the reference net's 8 parameters)
    def where():
        return f"{owner}: {_describe(index, p)}"

    on_device = is_device_array(data)
    if not (on_device or isinstance(data, np.ndarray)):
        raise TypeError(f"{where()} expected .data to be an array, got {type(data).__name__}")
    shape, dtype = tuple(data.shape), np.dtype(data.dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where()} expected floating-point .data, got dtype {dtype}")
    # the cpu kernels update a reshape(-1) of data, which is a copy (so the update
    # would be lost) unless data is C-contiguous
    if on_device:
        in_place = data.is_c_contiguous()
    else:
        in_place = data.flags.c_contiguous and data.flags.writeable
    if not in_place:
        raise ValueError(
            f"{where()} expected .data to be a writeable C-contiguous array (it is updated "
            f"in place), got strides {data.strides} for shape {shape}"
        )

    def expected():
        return f"of shape {shape} and dtype {dtype}"

    # a host gradient of a device parameter is copied over by the cuda kernels; a
    # device gradient of a host parameter has nowhere to go
    if not (isinstance(grad, np.ndarray) or (on_device and is_device_array(grad))):
        kind = "an np.ndarray or a device array" if on_device else "an np.ndarray"
        raise TypeError(f"{where()} expected .grad to be {kind} {expected()}, "
                        f"got {type(grad).__name__}")
    if tuple(grad.shape) != shape or np.dtype(grad.dtype) != dtype:
        error = ValueError if tuple(grad.shape) != shape else TypeError
        raise error(f"{where()} expected .grad {expected()}, "
                    f"got shape {tuple(grad.shape)} and dtype {grad.dtype}")
    for key in buffers:
        buffer = p.state.get(key)
        if buffer is not None and (tuple(buffer.shape) != shape or buffer.dtype != dtype):
            raise ValueError(
                f"{where()} expected its state {key!r} {expected()}, got shape "
                f"{tuple(buffer.shape)} and dtype {buffer.dtype} (was .data replaced?); "
                "clear param.state or load a matching state_dict"
            )


class Optimizer:
    """Base: holds the parameter list and the learning rate ``lr`` schedules change.

    Parameters
    ----------
    params : iterable of Parameter
        Each parameter once (``model.parameters()``).
    lr : float
        ``>= 0``.
    **hyperparameters
        The subclass's others. All are checked by its ``_checked`` and set as
        attributes.

    Notes
    -----
    A subclass names its hyperparameters besides ``lr`` in ``_hyperparameters`` (the
    keys of :meth:`state_dict`), each an attribute made by :func:`_hyperparameter`,
    the arrays it keeps in ``param.state`` in ``_buffers`` and its counters there in
    ``_counters``. The values live in ``_values``, replaced as a whole by every
    assignment (so a rejected one changes nothing).
    """

    lr = _hyperparameter("lr")
    _hyperparameters = ()
    _buffers = ()
    _counters = ()

    @property
    def _own_keys(self):
        """This optimizer's keys of ``param.state`` (another one over the same
        parameters keeps its own there too)."""
        return (*self._counters, *self._buffers)

    def __init__(self, params, lr, **hyperparameters):
        owner = type(self).__name__
        self.params = _check_params(owner, params)
        self._values = self._checked(owner, lr=lr, **hyperparameters)

    @staticmethod
    def _checked(owner, lr):
        """The hyperparameters as the optimizer keeps them, after the constructor's checks."""
        return {"lr": check_real(owner, "lr", lr, *_AT_LEAST_0)}

    def zero_grad(self, set_to_none=True):
        """Reset the gradient of every parameter, as PyTorch's ``Optimizer.zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default True
            Forget each gradient (``grad = None``). With False, each gradient array
            is filled with zeros in place, where it lives (host or device); a
            parameter without a gradient keeps ``grad = None``, and one whose
            gradient stays zero is still updated by :meth:`step` (weight decay,
            momentum), as in PyTorch.

        Raises
        ------
        TypeError
            When ``set_to_none`` is not a bool, or (set_to_none=False) a gradient is
            neither an array nor None.
        ValueError
            When (set_to_none=False) a gradient is a read-only array. Every gradient
            is checked before any is filled.
        """
        named = ((_describe(i, p), p) for i, p in enumerate(self.params))
        zero_grads(f"{type(self).__name__}.zero_grad", named, set_to_none)

    def step(self):
        raise NotImplementedError

    def _to_update(self):
        """The parameters that have a gradient, once every one of them has passed
        :func:`_check_update` (so that a bad gradient leaves all parameters as they are)."""
        owner = f"{type(self).__name__}.step"
        params = []
        for i, p in enumerate(self.params):
            if p.grad is not None:
                _check_update(owner, i, p, self._buffers)
                params.append(p)
        return params

    def state_dict(self):
        """Hyperparameters and per-parameter state as host arrays / ints (for checkpoints).

        Returns
        -------
        dict
            ``{"lr": float, <hyperparameters>, "state": [dict per parameter, in order]}``
            with every array an ``np.ndarray``; a parameter's dict holds this optimizer's
            keys of ``param.state`` (none before its first update).
        """
        own = self._own_keys
        state = []
        for p in self.params:
            entry = {}
            for key, value in p.state.items():
                if key not in own:
                    continue
                if isinstance(value, np.ndarray) or is_device_array(value):
                    entry[key] = np.array(to_numpy(value))
                else:
                    entry[key] = value
            state.append(entry)
        out = {"lr": self.lr, "state": state}
        for name in self._hyperparameters:
            out[name] = getattr(self, name)
        return out

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned; arrays go where each parameter lives.

        Parameters
        ----------
        state : dict
            ``state_dict()`` of an optimizer of this class over parameters of the same
            shapes: every hyperparameter (checked as by the constructor) and, per
            parameter, no state or all of it, arrays of the parameter's shape (cast to
            its dtype). It replaces this optimizer's keys of each ``param.state``.

        Raises
        ------
        TypeError, ValueError
            Naming the key or parameter at fault. Everything is checked before
            anything is set, so a rejected state changes nothing.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        entries = state.get("state") if isinstance(state, Mapping) else None
        # a state of another model is the likeliest mistake: say so before the keys
        if isinstance(entries, (list, tuple)) and len(entries) != len(self.params):
            raise ValueError(
                f"{owner} expected state for {len(self.params)} parameters, got {len(entries)}"
            )
        names = ("lr", *self._hyperparameters)
        _check_keys(owner, state, (*names, "state"), type(self).__name__)
        if not isinstance(entries, (list, tuple)):
            raise TypeError(f"{owner} expected 'state' to be a list of dicts, one per "
                            f"parameter, got {type(entries).__name__}")
        hyperparameters = self._checked(owner, **{name: state[name] for name in names})
        param_states = [self._loaded(owner, i, p, entry)
                        for i, (p, entry) in enumerate(zip(self.params, entries))]
        # all at once, not attribute by attribute: each assignment checks the others
        # as they are (nesterov=True with the old momentum=0 would be refused)
        self._values = hyperparameters
        own = self._own_keys
        for p, param_state in zip(self.params, param_states):
            p.state = {key: value for key, value in p.state.items() if key not in own}
            p.state.update(param_state)

    def _loaded(self, owner, index, p, entry):
        """Parameter ``p``'s state from ``entry`` (new arrays where ``p`` lives), checked."""
        where = f"{owner}: state of {_describe(index, p)}"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} expected a dict, got {type(entry).__name__}")
        keys = self._own_keys
        # a partial state would fail in step(), where the missing buffer is looked up
        if entry and set(entry) != set(keys):
            raise ValueError(f"{where} expected no keys or the keys {list(keys)}, "
                             f"got {sorted(str(key) for key in entry)}")
        loaded = {}
        for key in self._counters:
            if key in entry:
                loaded[key] = check_int(where, key, entry[key], 0)
        for key in self._buffers:
            if key not in entry:
                continue
            value = entry[key]
            if not (isinstance(value, np.ndarray) or is_device_array(value)):
                raise TypeError(f"{where} expected {key} to be an np.ndarray of shape "
                                f"{p.shape}, got {type(value).__name__}")
            if tuple(value.shape) != p.shape:
                raise ValueError(f"{where}: {key} expected shape {p.shape}, "
                                 f"got {tuple(value.shape)}")
            if np.dtype(value.dtype).kind != "f":
                raise TypeError(f"{where}: {key} expected a floating-point dtype, "
                                f"got {value.dtype}")
            # astype copies: the optimizer updates its buffers in place, and must not
            # write into the arrays of the dict it was given
            loaded[key] = like(p.data, to_numpy(value).astype(p.dtype))
        return loaded


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter
        Each parameter once (``model.parameters()``).
    lr : float
        ``>= 0``.
    momentum : float, default 0
        ``>= 0``.
    nesterov : bool, default False
        Needs ``momentum > 0``.
    weight_decay : float, default 0
        Adds ``weight_decay * w`` to the gradient; ``>= 0``.

    Notes
    -----
    ``g = grad + wd * w``; ``v = momentum * v + g``; ``w -= lr * (g + momentum * v)``
    (Nesterov) or ``w -= lr * v``; without momentum ``w -= lr * g``. As
    ``torch.optim.SGD`` with ``dampening=0``.
    """

    momentum = _hyperparameter("momentum")
    nesterov = _hyperparameter("nesterov")
    weight_decay = _hyperparameter("weight_decay")
    _hyperparameters = ("momentum", "nesterov", "weight_decay")
    _buffers = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    @staticmethod
    def _checked(owner, lr, momentum, nesterov, weight_decay):
        values = {
            "lr": check_real(owner, "lr", lr, *_AT_LEAST_0),
            "momentum": check_real(owner, "momentum", momentum, *_AT_LEAST_0),
            "nesterov": check_flag(owner, "nesterov", nesterov),
            "weight_decay": check_real(owner, "weight_decay", weight_decay, *_AT_LEAST_0),
        }
        if values["nesterov"] and values["momentum"] == 0:
            raise ValueError(f"{owner} with nesterov=True needs momentum > 0, got momentum=0")
        return values

    def step(self):
        """Update every parameter that has a gradient, in place (one call of the target's
        ``sgd_update_many``: the cuda target fuses the updates into few launches).

        Raises
        ------
        TypeError, ValueError
            When a gradient is not an array of its parameter's shape and dtype (or a
            parameter cannot be updated in place), naming the parameter; no parameter
            is updated then.
        """
        params = self._to_update()
        b = backend()
        velocities = [None] * len(params)
        new = []  # a first step's zero buffers, kept once the kernels have run
        if self.momentum != 0:
            for i, p in enumerate(params):
                velocity = p.state.get("momentum_buffer")
                if velocity is None:
                    velocity = b.zeros(p.shape, p.dtype)
                    new.append((p, velocity))
                velocities[i] = velocity
        b.sgd_update_many(
            [p.data for p in params], [p.grad for p in params], velocities, self.lr,
            self.momentum, self.nesterov, self.weight_decay,
        )
        for p, velocity in new:
            p.state["momentum_buffer"] = velocity


class Adam(Optimizer):
    """Adam with L2 weight decay (added to the gradient), as ``torch.optim.Adam``.

    Parameters
    ----------
    params : iterable of Parameter
        Each parameter once (``model.parameters()``).
    lr : float, default 1e-3
        ``>= 0``.
    betas : (float, float), default (0.9, 0.999)
        Each in ``[0, 1)``.
    eps : float, default 1e-8
        ``>= 0``.
    weight_decay : float, default 0
        ``>= 0``.

    Notes
    -----
    Per parameter, ``state["step"]`` counts its updates (from 1) for the bias
    corrections; ``state["exp_avg"]`` and ``state["exp_avg_sq"]`` are the moments.
    """

    betas = _hyperparameter("betas")
    eps = _hyperparameter("eps")
    weight_decay = _hyperparameter("weight_decay")
    _hyperparameters = ("betas", "eps", "weight_decay")
    _buffers = ("exp_avg", "exp_avg_sq")
    _counters = ("step",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @staticmethod
    def _checked(owner, lr, betas, eps, weight_decay):
        pair = "a pair (beta1, beta2) of floats in [0, 1)"
        if not isinstance(betas, (tuple, list, np.ndarray)):
            raise TypeError(f"{owner} expected betas to be {pair}, got {betas!r} "
                            f"({type(betas).__name__})")
        if len(betas) != 2:
            raise ValueError(f"{owner} expected betas to be {pair}, got {len(betas)} "
                             f"values: {betas!r}")
        betas = tuple(check_real(owner, f"betas[{i}]", b, "in [0, 1)", lambda v: 0 <= v < 1)
                      for i, b in enumerate(betas))
        return {
            "lr": check_real(owner, "lr", lr, *_AT_LEAST_0),
            "betas": betas,
            "eps": check_real(owner, "eps", eps, *_AT_LEAST_0),
            "weight_decay": check_real(owner, "weight_decay", weight_decay, *_AT_LEAST_0),
        }

    def step(self):
        """Update every parameter that has a gradient, in place (one call of the target's
        ``adam_update_many``: the cuda target fuses the updates into few launches).

        Raises
        ------
        TypeError, ValueError
            As :meth:`SGD.step`; no parameter and no state is changed then.
        """
        params = self._to_update()
        b = backend()
        beta1, beta2 = self.betas
        # the new counters and a first step's zero buffers go into param.state only
        # once the kernels have run: a step that raises leaves no state behind (a
        # counter one ahead would skew the bias corrections for the rest of the run)
        steps, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            if "exp_avg" in p.state:
                steps.append(p.state["step"] + 1)
                exp_avgs.append(p.state["exp_avg"])
                exp_avg_sqs.append(p.state["exp_avg_sq"])
            else:
                steps.append(1)
                exp_avgs.append(b.zeros(p.shape, p.dtype))
                exp_avg_sqs.append(b.zeros(p.shape, p.dtype))
        b.adam_update_many(
            [p.data for p in params], [p.grad for p in params], exp_avgs, exp_avg_sqs,
            self.lr, beta1, beta2, self.eps, self.weight_decay, steps,
        )
        for p, step, exp_avg, exp_avg_sq in zip(params, steps, exp_avgs, exp_avg_sqs):
            p.state["step"], p.state["exp_avg"], p.state["exp_avg_sq"] = (
                step, exp_avg, exp_avg_sq)


class _Schedule:
    """Base: ``step()`` once per epoch sets ``optimizer.lr``; ``get_last_lr()`` reads it.

    Each step sets the rate from its closed form in the epoch and the rate the
    optimizer had when the schedule was made (``base_lr``), so schedules do not chain
    as PyTorch's do: a rate set by hand between steps, or a second schedule on the same
    optimizer, is overwritten at the next step, not scaled. To change the rate for the
    rest of a run, set ``base_lr`` (PyTorch: ``base_lrs``).

    Notes
    -----
    A subclass names its own hyperparameters in ``_hyperparameters`` (keys of
    :meth:`state_dict`, beside ``base_lr`` and ``last_epoch``) and checks them in its
    ``_checked``, as the optimizers do.
    """

    _hyperparameters = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} expected a jitnet.optim optimizer "
                            f"(SGD, Adam), got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    @staticmethod
    def _checked(owner, **hyperparameters):
        """The hyperparameters as the schedule keeps them, after the constructor's checks."""
        raise NotImplementedError

    def _lr_at(self, base_lr, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's learning rate."""
        lr = self._lr_at(self.base_lr, self.last_epoch + 1)
        self.optimizer.lr = lr  # first: the optimizer checks the rate (base_lr may be bad)
        self.last_epoch += 1

    def get_last_lr(self):
        """``[lr]``: the learning rate now in use (a list, as PyTorch's)."""
        return [self.optimizer.lr]

    def state_dict(self):
        """``{"base_lr", "last_epoch", <hyperparameters>}`` (for checkpoints).

        The hyperparameters (StepLR's ``step_size`` and ``gamma``, CosineLR's ``t_max``
        and ``eta_min``, as PyTorch's schedules save theirs) make the keys of one
        schedule's state differ from another's, so that neither loads the other's.
        """
        state = {"base_lr": self.base_lr, "last_epoch": self.last_epoch}
        for name in self._hyperparameters:
            state[name] = getattr(self, name)
        return state

    def load_state_dict(self, state):
        """Restore the progress :meth:`state_dict` saved (and the optimizer's rate with it).

        ``base_lr`` and ``last_epoch`` are loaded. The hyperparameters are checked as
        the constructor checks them but not loaded: the schedule keeps those it was made
        with, so that a run resumed with more epochs (``jitnet train --resume
        --epochs N``, whose ``CosineLR`` has ``t_max=N``) follows the schedule of an
        uninterrupted run of ``N`` epochs.

        A state of only ``base_lr`` and ``last_epoch``, as checkpoints saved before
        2026-12-07 18:00 UTC hold, loads as it did then.

        Raises
        ------
        TypeError, ValueError
            For missing or unexpected keys (the state of another schedule), ``base_lr <
            0``, ``last_epoch`` not an int ``>= 0`` or a bad hyperparameter; nothing is
            changed then.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        names = self._hyperparameters
        if isinstance(state, Mapping) and set(state) == {"base_lr", "last_epoch"}:
            names = ()  # saved before the states held their hyperparameters: resumes as then
        _check_keys(owner, state, ("base_lr", "last_epoch", *names), type(self).__name__)
        base_lr = check_real(owner, "base_lr", state["base_lr"], *_AT_LEAST_0)
        last_epoch = check_int(owner, "last_epoch", state["last_epoch"], 0)
        if names:
            self._checked(owner, **{name: state[name] for name in names})
        self.optimizer.lr = self._lr_at(base_lr, last_epoch)  # first: the optimizer checks it
        self.base_lr, self.last_epoch = base_lr, last_epoch


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr = base_lr * gamma ** (epoch // step_size)``, as ``torch.optim.lr_scheduler.StepLR``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        ``>= 1`` (a Python or NumPy integer).
    gamma : float, default 0.1
        ``> 0``.
    """

    _hyperparameters = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        vars(self).update(self._checked("StepLR", step_size=step_size, gamma=gamma))

    @staticmethod
    def _checked(owner, step_size, gamma):
        return {"step_size": check_int(owner, "step_size", step_size, 1),
                "gamma": check_real(owner, "gamma", gamma, "> 0", lambda v: v > 0)}

    def _lr_at(self, base_lr, epoch):
        try:
            factor = self.gamma ** (epoch // self.step_size)
        except OverflowError:  # float ** int raises where float * float gives inf
            factor = math.inf  # and the optimizer refuses the rate
        return base_lr * factor


class CosineLR(_Schedule):
    """Cosine annealing from the initial rate to ``eta_min`` over ``t_max`` epochs.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2``, the
    closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR``.

    Parameters
    ----------
    optimizer : Optimizer
    t_max : int
        ``>= 1`` (a Python or NumPy integer).
    eta_min : float, default 0
        ``>= 0``.
    """

    _hyperparameters = ("t_max", "eta_min")

    def __init__(self, optimizer, t_max, eta_min=0.0):
        super().__init__(optimizer)
        vars(self).update(self._checked("CosineLR", t_max=t_max, eta_min=eta_min))

    @staticmethod
    def _checked(owner, t_max, eta_min):
        return {"t_max": check_int(owner, "t_max", t_max, 1),
                "eta_min": check_real(owner, "eta_min", eta_min, *_AT_LEAST_0)}

    def _lr_at(self, base_lr, epoch):
        cosine = (1 + math.cos(math.pi * epoch / self.t_max)) / 2
        return self.eta_min + (base_lr - self.eta_min) * cosine
