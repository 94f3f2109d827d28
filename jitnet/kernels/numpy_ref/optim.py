"""Optimizer updates (in place)."""

import numpy as np


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : np.ndarray, any shape
        Updated in place.
    grad : np.ndarray, shape of ``param``
        Not modified.
    velocity : np.ndarray, shape of ``param``, or None
        Momentum buffer, updated in place; unused (may be None) when ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    ``g = grad + weight_decay * param``; with momentum ``v = momentum * v + g`` and the
    step is ``g + momentum * v`` (Nesterov) or ``v``; ``param -= lr * step``. A zero
    initial ``v`` makes the first step ``v = g``, PyTorch's first step.
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every parameter of an optimizer step.

    Parameters
    ----------
    params, grads : sequences of np.ndarray, pairwise of one shape
        ``params[i]`` is updated in place with ``grads[i]``.
    velocities : sequence of np.ndarray (or of None when ``momentum == 0``)
        ``velocities[i]`` is the momentum buffer of ``params[i]``, updated in place.
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    Every element gets exactly :func:`sgd_update`'s arithmetic. The targets that pay
    per launch fuse the updates (the cuda target: one kernel for up to 16 tensors).
    """
    for param, grad, velocity in zip(params, grads, velocities):
        sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay, not AdamW).

    Parameters
    ----------
    param : np.ndarray, any shape
        Updated in place.
    grad : np.ndarray, shape of ``param``
        Not modified.
    m, v : np.ndarray, shape of ``param``
        First and second moment estimates, updated in place (zeros before step 1).
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        Number of this step, starting at 1 (for the bias corrections).

    Notes
    -----
    ``g = grad + weight_decay * param``; ``m = beta1*m + (1-beta1)*g``;
    ``v = beta2*v + (1-beta2)*g**2``;
    ``param -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)``.
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = np.sqrt(1 - beta2**step)
    denom = np.sqrt(v) / param.dtype.type(bias_correction2_sqrt) + param.dtype.type(eps)
    param -= param.dtype.type(lr / bias_correction1) * m / denom


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every parameter of an optimizer step.

    Parameters
    ----------
    params, grads, ms, vs : sequences of np.ndarray, of one shape per index
        ``params[i]``, ``ms[i]`` and ``vs[i]`` are updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int
        ``steps[i]`` is the number of this step of ``params[i]``, from 1.

    Notes
    -----
    Every element gets exactly :func:`adam_update`'s arithmetic; the cuda target
    fuses the updates of tensors that share a dtype and a step count.
    """
    for param, grad, m, v, step in zip(params, grads, ms, vs, steps):
        adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
