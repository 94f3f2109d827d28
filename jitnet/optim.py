"""Optimizers (SGD, Adam) and learning-rate schedules (StepLR, CosineLR).

Updates run as kernels of the active target (``sgd_update``, ``adam_update``), in
place on ``param.data``. Per-parameter buffers live in ``param.state``, so
``model.to(target)`` moves them with the parameters. The semantics are PyTorch's
``torch.optim.SGD`` / ``torch.optim.Adam`` with one parameter group.
"""

import math

import numpy as np

from .nn.module import like
from .targets import backend, is_device_array, to_numpy


def _check_positive(owner, name, value, allow_zero=True):
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner} expected {name} {bound}, got {value!r}")
    return value


class Optimizer:
    """Base: holds the parameter list and the learning rate ``lr`` schedules change."""

    _hyperparameters = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.lr = _check_positive(type(self).__name__, "lr", lr)

    def zero_grad(self):
        """Forget every gradient (``grad = None``); parameters without one are skipped."""
        for p in self.params:
            p.grad = None

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """Hyperparameters and per-parameter state as host arrays / ints (for checkpoints).

        Returns
        -------
        dict
            ``{"lr": float, <hyperparameters>, "state": [dict per parameter, in order]}``
            with every array an ``np.ndarray``.
        """
        state = []
        for p in self.params:
            entry = {}
            for key, value in p.state.items():
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
        """Restore what :meth:`state_dict` returned; arrays go where each parameter lives."""
        entries = state["state"]
        if len(entries) != len(self.params):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict expected state for "
                f"{len(self.params)} parameters, got {len(entries)}"
            )
        self.lr = float(state["lr"])
        for name in self._hyperparameters:
            if name in state:
                value = state[name]
                setattr(self, name, tuple(value) if isinstance(value, (list, tuple)) else value)
        for p, entry in zip(self.params, entries):
            p.state = {}
            for key, value in entry.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.shape != p.shape:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: {key} of {p.name} expected "
                            f"shape {p.shape}, got {value.shape}"
                        )
                    p.state[key] = like(p.data, value.astype(p.dtype))
                else:
                    p.state[key] = int(value) if key == "step" else value


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
    momentum : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0``.
    weight_decay : float, default 0
        Adds ``weight_decay * w`` to the gradient.

    Notes
    -----
    ``g = grad + wd * w``; ``v = momentum * v + g``; ``w -= lr * (g + momentum * v)``
    (Nesterov) or ``w -= lr * v``; without momentum ``w -= lr * g``. As
    ``torch.optim.SGD`` with ``dampening=0``.
    """

    _hyperparameters = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = _check_positive("SGD", "momentum", momentum)
        self.weight_decay = _check_positive("SGD", "weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD with nesterov=True needs momentum > 0, got momentum=0")

    def step(self):
        """Update every parameter that has a gradient, in place (one call of the target's
        ``sgd_update_many``: the cuda target fuses the updates into few launches)."""
        b = backend()
        params = [p for p in self.params if p.grad is not None]
        velocities = [None] * len(params)
        if self.momentum != 0:
            for i, p in enumerate(params):
                velocity = p.state.get("momentum_buffer")
                if velocity is None:
                    velocity = p.state["momentum_buffer"] = b.zeros(p.shape, p.dtype)
                velocities[i] = velocity
        b.sgd_update_many(
            [p.data for p in params], [p.grad for p in params], velocities, self.lr,
            self.momentum, self.nesterov, self.weight_decay,
        )


class Adam(Optimizer):
    """Adam with L2 weight decay (added to the gradient), as ``torch.optim.Adam``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0

    Notes
    -----
    Per parameter, ``state["step"]`` counts its updates (from 1) for the bias
    corrections; ``state["exp_avg"]`` and ``state["exp_avg_sq"]`` are the moments.
    """

    _hyperparameters = ("betas", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        beta1, beta2 = (float(b) for b in betas)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam expected betas in [0, 1), got {tuple(betas)!r}")
        self.betas = (beta1, beta2)
        self.eps = _check_positive("Adam", "eps", eps)
        self.weight_decay = _check_positive("Adam", "weight_decay", weight_decay)

    def step(self):
        """Update every parameter that has a gradient, in place (one call of the target's
        ``adam_update_many``: the cuda target fuses the updates into few launches)."""
        b = backend()
        beta1, beta2 = self.betas
        params = [p for p in self.params if p.grad is not None]
        for p in params:
            if "exp_avg" not in p.state:
                p.state["step"] = 0
                p.state["exp_avg"] = b.zeros(p.shape, p.dtype)
                p.state["exp_avg_sq"] = b.zeros(p.shape, p.dtype)
            p.state["step"] += 1
        b.adam_update_many(
            [p.data for p in params], [p.grad for p in params],
            [p.state["exp_avg"] for p in params], [p.state["exp_avg_sq"] for p in params],
            self.lr, beta1, beta2, self.eps, self.weight_decay,
            [p.state["step"] for p in params],
        )


class _Schedule:
    """Base: ``step()`` once per epoch sets ``optimizer.lr``; ``get_last_lr()`` reads it."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def _lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self._lr_at(self.last_epoch)

    def get_last_lr(self):
        """``[lr]``: the learning rate now in use (a list, as PyTorch's)."""
        return [self.optimizer.lr]

    def state_dict(self):
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self._lr_at(self.last_epoch)


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr = base_lr * gamma ** (epoch // step_size)``, as ``torch.optim.lr_scheduler.StepLR``.
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR expected step_size to be an int >= 1, got {step_size!r}")
        self.step_size = step_size
        self.gamma = float(gamma)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(_Schedule):
    """Cosine annealing from the initial rate to ``eta_min`` over ``t_max`` epochs.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2``, the
    closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR``.
    """

    def __init__(self, optimizer, t_max, eta_min=0.0):
        super().__init__(optimizer)
        if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"CosineLR expected t_max to be an int >= 1, got {t_max!r}")
        self.t_max = t_max
        self.eta_min = float(eta_min)

    def _lr_at(self, epoch):
        cosine = (1 + math.cos(math.pi * epoch / self.t_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
