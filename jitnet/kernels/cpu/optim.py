"""Optimizer updates on the cpu target, in place on the parameter and its state;
IEEE semantics (no fast-math), so every target rounds alike.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT_EXACT
from .activations import _flat


@njit(**_JIT_EXACT)
def _sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    t = param.dtype.type
    lr_, mom, wd = t(lr), t(momentum), t(weight_decay)
    # No race: iteration i owns param[i] and velocity[i].
    for i in prange(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        if momentum != 0:
            v = velocity[i] * mom + g
            velocity[i] = v
            g = g + mom * v if nesterov else v
        param[i] -= lr_ * g


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : ndarray, any shape, C-contiguous; updated in place
    grad : ndarray, param's shape
    velocity : ndarray, param's shape, or None when ``momentum == 0``; updated in place
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    flat = param.reshape(-1)  # a view: param is contiguous
    vel = flat if velocity is None else velocity.reshape(-1)
    _sgd_update(
        flat,
        _flat(np.asarray(grad, dtype=param.dtype)),
        vel,
        float(lr),
        float(momentum) if velocity is not None else 0.0,
        bool(nesterov),
        float(weight_decay),
    )


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every ``(param, grad, velocity)``, in turn.

    Parameters
    ----------
    params, grads : sequences of ndarray, pairwise of one shape
    velocities : sequence of ndarray (or of None when ``momentum == 0``)
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    for param, grad, velocity in zip(params, grads, velocities):
        sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)


@njit(**_JIT_EXACT)
def _adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    t = param.dtype.type
    b1, b2, wd = t(beta1), t(beta2), t(weight_decay)
    one_b1, one_b2 = t(1 - beta1), t(1 - beta2)
    step_size = t(lr / (1 - beta1**step))
    bc2 = t(np.sqrt(1 - beta2**step))
    eps_ = t(eps)
    # No race: iteration i owns param[i], m[i] and v[i].
    for i in prange(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        mi = m[i] * b1 + one_b1 * g
        vi = v[i] * b2 + one_b2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] -= step_size * mi / (np.sqrt(vi) / bc2 + eps_)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay, not AdamW).

    Parameters
    ----------
    param : ndarray, any shape, C-contiguous; updated in place
    grad : ndarray, param's shape
    m, v : ndarray, param's shape; moment estimates, updated in place
    lr, beta1, beta2, eps, weight_decay : float
    step : int, number of this step, from 1
    """
    _adam_update(
        param.reshape(-1),
        _flat(np.asarray(grad, dtype=param.dtype)),
        m.reshape(-1),
        v.reshape(-1),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        int(step),
    )


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every ``(param, grad, m, v, step)``, in turn.

    Parameters
    ----------
    params, grads, ms, vs : sequences of ndarray, of one shape per index
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int, from 1
    """
    for param, grad, m, v, step in zip(params, grads, ms, vs, steps):
        adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
