"""Stochastic gradient descent, as ``torch.optim.SGD``."""

from .._checks import check_flag, check_real
from ..targets import backend
from .optimizer import _AT_LEAST_0, Optimizer, _hyperparameter


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter, of (name, Parameter) pairs, or of dict
        Each parameter once (``model.parameters()``, or ``model.named_parameters()``),
        or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
        ``>= 0``; the default is torch.optim.SGD's.
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
    ``torch.optim.SGD`` with ``dampening=0`` (a group may say so; another value is
    refused).
    """

    momentum = _hyperparameter("momentum")
    nesterov = _hyperparameter("nesterov")
    weight_decay = _hyperparameter("weight_decay")
    _hyperparameters = ("momentum", "nesterov", "weight_decay")
    _buffers = ("momentum_buffer",)
    _unsupported = {"dampening": 0, "maximize": False}

    def __init__(self, params, lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0):
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
        ``sgd_update_many`` per parameter group, with the group's hyperparameters: the
        cuda target fuses the updates into few launches).

        Raises
        ------
        TypeError, ValueError
            When a gradient is not an array of its parameter's shape and dtype (or a
            parameter cannot be updated in place), naming the parameter; no parameter
            is updated then.
        """
        b = backend()
        for group, params in self._to_update():
            if not params:
                continue
            momentum = group["momentum"]
            velocities = [None] * len(params)
            new = []  # a first step's zero buffers, kept once the kernels have run
            if momentum != 0:
                for i, p in enumerate(params):
                    velocity = p.state.get("momentum_buffer")
                    if velocity is None:
                        velocity = b.zeros(p.shape, p.dtype)
                        new.append((p, velocity))
                    velocities[i] = velocity
            b.sgd_update_many(
                [p.data for p in params], [p.grad for p in params], velocities, group["lr"],
                momentum, group["nesterov"], group["weight_decay"],
            )
            for p, velocity in new:
                p.state["momentum_buffer"] = velocity
