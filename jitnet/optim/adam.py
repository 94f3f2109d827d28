"""Adam, as ``torch.optim.Adam``."""

import numpy as np

from .._checks import check_real
from ..targets import backend
from .optimizer import _AT_LEAST_0, Optimizer, _hyperparameter


class Adam(Optimizer):
    """Adam with L2 weight decay (added to the gradient), as ``torch.optim.Adam``.

    Parameters
    ----------
    params : iterable of Parameter, of (name, Parameter) pairs, or of dict
        Each parameter once (``model.parameters()``, or ``model.named_parameters()``),
        or parameter groups (see :class:`Optimizer`).
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
    PyTorch's ``amsgrad``, ``maximize`` and ``decoupled_weight_decay`` are not
    implemented (a group may name them False).
    """

    betas = _hyperparameter("betas")
    eps = _hyperparameter("eps")
    weight_decay = _hyperparameter("weight_decay")
    _hyperparameters = ("betas", "eps", "weight_decay")
    _buffers = ("exp_avg", "exp_avg_sq")
    _counters = ("step",)
    _unsupported = {"amsgrad": False, "maximize": False, "decoupled_weight_decay": False}

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
        ``adam_update_many`` per parameter group, with the group's hyperparameters: the
        cuda target fuses the updates into few launches).

        Raises
        ------
        TypeError, ValueError
            As :meth:`.sgd.SGD.step`; no parameter and no state is changed then.
        """
        b = backend()
        for group, params in self._to_update():
            if not params:
                continue
            beta1, beta2 = group["betas"]
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
                group["lr"], beta1, beta2, group["eps"], group["weight_decay"], steps,
            )
            for p, step, exp_avg, exp_avg_sq in zip(params, steps, exp_avgs, exp_avg_sqs):
                p.state["step"], p.state["exp_avg"], p.state["exp_avg_sq"] = (
                    step, exp_avg, exp_avg_sq)
