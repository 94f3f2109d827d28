"""Learning-rate schedules: ``StepLR`` and ``CosineLR``, as PyTorch's ``StepLR`` and
``CosineAnnealingLR``."""

import math
from collections.abc import Mapping

from .._checks import check_int, check_real
from .optimizer import _AT_LEAST_0, Optimizer, _check_keys


class _Schedule:
    """Base: ``step()`` once per epoch sets each parameter group's ``lr``;
    ``get_last_lr()`` reads them.

    Each step sets each group's rate from its closed form in the epoch and the rate
    the group had when the schedule was made (``base_lrs``, one per group, as
    PyTorch's ``initial_lr``), so schedules do not chain as PyTorch's do: a rate set
    by hand between steps, or a second schedule on the same optimizer, is overwritten
    at the next step, not scaled. To change the rates for the rest of a run, set
    ``base_lrs`` (or ``base_lr``, every group's). Make the schedule after the last
    ``add_param_group``: a schedule refuses to step an optimizer whose number of
    groups changed.

    Notes
    -----
    A subclass names its own hyperparameters in ``_hyperparameters`` (keys of
    :meth:`state_dict`, beside ``base_lr`` or ``base_lrs`` and ``last_epoch``) and
    checks them in its ``_checked``, as the optimizers do.
    """

    _hyperparameters = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} expected a jitnet.optim optimizer "
                            f"(SGD, Adam), got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0

    @property
    def base_lr(self):
        """The rate every group starts from; a ValueError if they differ (read
        ``base_lrs``). Setting it sets every group's."""
        if any(lr != self.base_lrs[0] for lr in self.base_lrs[1:]):
            raise ValueError(f"{type(self).__name__}.base_lr is ambiguous: the parameter "
                             f"groups start from {self.base_lrs}; read base_lrs")
        return self.base_lrs[0]

    @base_lr.setter
    def base_lr(self, value):
        self.base_lrs = [value] * len(self.optimizer.param_groups)

    @staticmethod
    def _checked(owner, **hyperparameters):
        """The hyperparameters as the schedule keeps them, after the constructor's checks."""
        raise NotImplementedError

    def _lr_at(self, base_lr, epoch):
        raise NotImplementedError

    def _set_lrs(self, owner, base_lrs, epoch):
        """Set each group's rate at ``epoch`` from ``base_lrs`` (the optimizer checks every
        rate before it sets any)."""
        n = len(self.optimizer.param_groups)
        if len(base_lrs) != n:
            raise ValueError(f"{owner} has base rates for {len(base_lrs)} parameter groups, "
                             f"the optimizer has {n}; make the schedule after the last "
                             "add_param_group")
        self.optimizer._assign("lr", [self._lr_at(lr, epoch) for lr in base_lrs])

    def step(self):
        """Advance one epoch and set the learning rate of every parameter group."""
        # first: the optimizer checks the rates (a base rate may be bad)
        self._set_lrs(type(self).__name__, self.base_lrs, self.last_epoch + 1)
        self.last_epoch += 1

    def get_last_lr(self):
        """``[lr of each parameter group]``: the rates now in use (as PyTorch's)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """``{"base_lr", "last_epoch", <hyperparameters>}`` (for checkpoints); with several
        parameter groups ``"base_lrs"`` (a list, one per group) for ``"base_lr"``.

        The hyperparameters (StepLR's ``step_size`` and ``gamma``, CosineLR's ``t_max``
        and ``eta_min``, as PyTorch's schedules save theirs) make the keys of one
        schedule's state differ from another's, so that neither loads the other's.
        """
        if len(self.base_lrs) == 1:
            state = {"base_lr": self.base_lrs[0], "last_epoch": self.last_epoch}
        else:
            state = {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}
        for name in self._hyperparameters:
            state[name] = getattr(self, name)
        return state

    def load_state_dict(self, state):
        """Restore the progress :meth:`state_dict` saved (and the optimizer's rates with it).

        ``base_lr`` (or ``base_lrs``) and ``last_epoch`` are loaded. The hyperparameters
        are checked as the constructor checks them but not loaded: the schedule keeps
        those it was made with, so that a run resumed with more epochs (``jitnet train
        --resume --epochs N``, whose ``CosineLR`` has ``t_max=N``) follows the schedule
        of an uninterrupted run of ``N`` epochs.

        A state of only ``base_lr`` and ``last_epoch``, as checkpoints saved before
        2026-12-07 18:00 UTC hold, loads as it did then.

        Raises
        ------
        TypeError, ValueError
            For missing or unexpected keys (the state of another schedule), a base rate
            ``< 0``, base rates for another number of parameter groups, ``last_epoch``
            not an int ``>= 0`` or a bad hyperparameter; nothing is changed then.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        names = self._hyperparameters
        rates = "base_lrs" if isinstance(state, Mapping) and "base_lrs" in state else "base_lr"
        if isinstance(state, Mapping) and set(state) == {rates, "last_epoch"}:
            names = ()  # saved before the states held their hyperparameters: resumes as then
        _check_keys(owner, state, (rates, "last_epoch", *names), type(self).__name__)
        if rates == "base_lr":
            base_lrs = [check_real(owner, "base_lr", state["base_lr"], *_AT_LEAST_0)]
        else:
            saved = state["base_lrs"]
            if not isinstance(saved, (list, tuple)):
                raise TypeError(f"{owner} expected base_lrs to be a list of floats, one per "
                                f"parameter group, got {type(saved).__name__}")
            base_lrs = [check_real(owner, f"base_lrs[{i}]", lr, *_AT_LEAST_0)
                        for i, lr in enumerate(saved)]
        n = len(self.optimizer.param_groups)
        if len(base_lrs) != n:
            raise ValueError(f"{owner} expected the state of a schedule of {n} parameter "
                             f"group{'s' if n != 1 else ''}, got one of {len(base_lrs)}")
        last_epoch = check_int(owner, "last_epoch", state["last_epoch"], 0)
        if names:
            self._checked(owner, **{name: state[name] for name in names})
        self._set_lrs(owner, base_lrs, last_epoch)  # first: the optimizer checks the rates
        self.base_lrs, self.last_epoch = base_lrs, last_epoch


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
