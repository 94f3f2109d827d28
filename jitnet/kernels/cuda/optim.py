"""Optimizer updates: one thread per parameter element, in place; the ``_many``
updates take many parameters in one launch.
"""

import math

from ._launch import _grid_1d
from .arrays import _dev, _flat
from .device import cuda, jit


@jit(device=True)
def _decayed(g, p, weight_decay):
    # L2 decay added to the gradient, and only when asked for: 0 * inf would make an
    # infinite parameter NaN where the cpu target and PyTorch leave it infinite
    return g + weight_decay * p if weight_decay != 0 else g


@jit(cache=True)
def _sgd_kernel(param, grad, lr, weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        param[i] -= lr * _decayed(grad[i], param[i], weight_decay)


@jit(cache=True)
def _sgd_momentum_kernel(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        g = _decayed(grad[i], param[i], weight_decay)
        v = momentum * velocity[i] + g
        velocity[i] = v
        param[i] -= lr * (g + momentum * v if nesterov else v)


@jit(cache=True)
def _adam_kernel(
    param, grad, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2,
    bias_correction2_sqrt, eps, weight_decay,
):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, param.size, step):
        g = _decayed(grad[i], param[i], weight_decay)
        m[i] = beta1 * m[i] + one_minus_beta1 * g
        v[i] = beta2 * v[i] + one_minus_beta2 * (g * g)
        param[i] -= lr_t * m[i] / (math.sqrt(v[i]) / bias_correction2_sqrt + eps)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : device array, any shape
        Updated in place.
    grad : device array, shape of ``param``
    velocity : device array, shape of ``param``, or None
        Momentum buffer, updated in place; unused (may be None) when ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    if param.size == 0:
        return
    typed = param.dtype.type
    grad = _flat(_dev(grad))
    if momentum == 0:
        _sgd_kernel[_grid_1d(param.size)](_flat(param), grad, typed(lr), typed(weight_decay))
        return
    _sgd_momentum_kernel[_grid_1d(param.size)](
        _flat(param), grad, _flat(velocity), typed(lr), typed(momentum), bool(nesterov),
        typed(weight_decay),
    )


#: Most arrays one fused optimizer launch takes: a 1-D array costs 56 bytes of kernel
#: parameters, and 48 of them (16 tensors of SGD with momentum, 12 of Adam) stay
#: inside CUDA's 4 KiB limit.
_ARRAYS_PER_LAUNCH = 48


@jit(cache=True)
def _sgd_many_kernel(params, grads, lr, weight_decay):
    # params and grads: tuples of 1-D arrays; every thread strides through each in turn
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad = params[t], grads[t]
        for i in range(start, param.size, step):
            param[i] -= lr * _decayed(grad[i], param[i], weight_decay)


@jit(cache=True)
def _sgd_momentum_many_kernel(params, grads, velocities, lr, momentum, nesterov,
                              weight_decay):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad, velocity = params[t], grads[t], velocities[t]
        for i in range(start, param.size, step):
            g = _decayed(grad[i], param[i], weight_decay)
            v = momentum * velocity[i] + g
            velocity[i] = v
            param[i] -= lr * (g + momentum * v if nesterov else v)


def _fused_launches(tensors, per_launch):
    """The arrays of each launch of a fused optimizer update.

    ``tensors`` yields ``(key, arrays)`` for each parameter (``arrays`` its
    parameter, gradient and state, ``key`` what its launch must share: dtype, step
    count). Yields ``(key, columns)`` for launches of at most ``per_launch`` tensors
    of one key, ``columns[j]`` the tuple of the tensors' ``j``-th arrays, flat and on
    the device (Numba types a tuple of one array type as one ``UniTuple``).
    """
    groups = {}
    for key, arrays in tensors:
        if arrays[0].size:
            groups.setdefault(key, []).append(arrays)
    for key, items in groups.items():
        for first in range(0, len(items), per_launch):
            chunk = items[first:first + per_launch]
            yield key, [tuple(_flat(_dev(a)) for a in column) for column in zip(*chunk)]


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every parameter, one launch per 16 tensors of a dtype.

    Parameters
    ----------
    params, grads : sequences of device arrays, pairwise of one shape
    velocities : sequence of device arrays (or of None when ``momentum == 0``)
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    Each element's arithmetic is that of :func:`sgd_update`'s kernels, so the
    results are the same bits.
    """
    if momentum == 0:
        tensors = ((p.dtype, (p, g)) for p, g in zip(params, grads))
    else:
        tensors = ((p.dtype, (p, g, v)) for p, g, v in zip(params, grads, velocities))
    for dtype, arrays in _fused_launches(tensors, _ARRAYS_PER_LAUNCH // 3):
        typed = dtype.type
        grid = _grid_1d(max(p.size for p in arrays[0]))
        if momentum == 0:
            _sgd_many_kernel[grid](*arrays, typed(lr), typed(weight_decay))
        else:
            _sgd_momentum_many_kernel[grid](*arrays, typed(lr), typed(momentum),
                                            bool(nesterov), typed(weight_decay))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay).

    Parameters
    ----------
    param : device array, any shape
        Updated in place.
    grad : device array, shape of ``param``
    m, v : device array, shape of ``param``
        Moment estimates, updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        Number of this step, from 1.
    """
    if param.size == 0:
        return
    typed = param.dtype.type
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    _adam_kernel[_grid_1d(param.size)](
        _flat(param), _flat(_dev(grad)), _flat(m), _flat(v), typed(lr / bias_correction1),
        typed(beta1), typed(1 - beta1), typed(beta2), typed(1 - beta2),
        typed(bias_correction2_sqrt), typed(eps), typed(weight_decay),
    )


@jit(cache=True)
def _adam_many_kernel(
    params, grads, ms, vs, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2,
    bias_correction2_sqrt, eps, weight_decay,
):
    # the tensors of one step count: tuples of 1-D arrays, strided through in turn
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(len(params)):
        param, grad, m, v = params[t], grads[t], ms[t], vs[t]
        for i in range(start, param.size, step):
            g = _decayed(grad[i], param[i], weight_decay)
            m[i] = beta1 * m[i] + one_minus_beta1 * g
            v[i] = beta2 * v[i] + one_minus_beta2 * (g * g)
            param[i] -= lr_t * m[i] / (math.sqrt(v[i]) / bias_correction2_sqrt + eps)


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every parameter, one launch per 12 tensors of a dtype and step.

    Parameters
    ----------
    params, grads, ms, vs : sequences of device arrays, of one shape per index
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int
        ``steps[i]`` is the number of this step of ``params[i]``, from 1.

    Notes
    -----
    The bias corrections depend on the step count, so the tensors are grouped by
    ``(dtype, step)`` (usually one group: every parameter steps together). Each
    element's arithmetic is that of :func:`adam_update`'s kernel.
    """
    tensors = (((p.dtype, int(step)), (p, g, m, v))
               for p, g, m, v, step in zip(params, grads, ms, vs, steps))
    for (dtype, step), arrays in _fused_launches(tensors, _ARRAYS_PER_LAUNCH // 4):
        typed = dtype.type
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        _adam_many_kernel[_grid_1d(max(p.size for p in arrays[0]))](
            *arrays, typed(lr / bias_correction1), typed(beta1), typed(1 - beta1),
            typed(beta2), typed(1 - beta2), typed(bias_correction2_sqrt), typed(eps),
            typed(weight_decay),
        )
