"""Numerical gradient checks, as in cs231n's ``gradient_check.py``.

Use float64 modules (``nn.Conv2d(..., dtype="float64")`` or
``model.to(dtype="float64")``): with centred differences the truncation error is
``O(h**2)`` and the rounding error ``O(eps / h)``, which float32 makes far too
large for a meaningful check. A correct backward pass gives relative errors around
``1e-8`` or smaller; ``1e-2`` means a bug (near a kink of ReLU or max pooling a
single element can legitimately be off).

Example::

    import numpy as np
    from jitnet import nn
    from jitnet.gradcheck import check_module, check_loss

    layer = nn.Conv2d(3, 4, kernel_size=3, padding=1, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    print(check_module(layer, x))   # {"input": 2e-09, "weight": 6e-10, "bias": 6e-10}

    scores = np.random.default_rng(1).standard_normal((4, 10))
    print(check_loss(nn.SoftmaxCrossEntropyLoss(), scores, np.array([1, 0, 9, 3])))
"""

import numpy as np

from . import rng
from ._checks import check_real
from .nn.module import Module, like
from .targets import backend, to_numpy


def rel_error(a, b):
    """Largest element-wise relative error ``|a - b| / max(1e-8, |a| + |b|)``.

    ``a`` and ``b`` must have the same shape (a ValueError otherwise: broadcast, a
    ``(3, 1)`` and a ``(1, 3)`` array of ones would agree); 0.0 when they are empty.
    """
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error expected arrays of one shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, h=1e-5, df=None):
    """Centred-difference gradient of ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        ``f(x)``. Without ``df`` it returns a scalar; with ``df`` it returns an array
        and the gradient is that of ``sum(f(x) * df)`` (the backward of ``df``).
    x : np.ndarray, float64, C-contiguous
        Perturbed in place, one element at a time, and restored. With no element
        the gradient is empty and ``f`` is not called.
    h : float, default 1e-5
        Step, > 0.
    df : np.ndarray, optional
        Upstream gradient, shape of ``f(x)``.

    Returns
    -------
    np.ndarray, shape of ``x``, float64
        ``(F(x + h e_i) - F(x - h e_i)) / (2 h)`` for every element ``i``.
    """
    if not callable(f):
        raise TypeError(f"numerical_gradient expected f to be callable, got {type(f).__name__}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient expected a float64 np.ndarray, got "
                        f"{type(x).__name__}")
    if x.dtype != np.float64:
        raise ValueError(f"numerical_gradient expected a float64 np.ndarray, got {x.dtype}")
    h = _step("numerical_gradient", h)
    if df is not None:
        df = np.asarray(to_numpy(df), dtype=np.float64)

    def scalar(value):
        if df is None:
            return float(value)
        value = np.asarray(to_numpy(value), dtype=np.float64)
        if value.shape != df.shape:  # a product would broadcast them
            raise ValueError(
                f"numerical_gradient expected f(x) of the shape of df {df.shape}, got "
                f"{value.shape}"
            )
        return float(np.sum(value * df))

    grad = np.zeros_like(x)
    if x.size == 0:
        return grad
    if not x.flags.c_contiguous:  # perturbations must reach f through x's memory
        raise ValueError(
            f"numerical_gradient expected a C-contiguous array, got strides {x.strides} "
            f"for shape {x.shape} (pass np.ascontiguousarray(x))"
        )
    flat_x = x.reshape(-1)  # a view
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = scalar(f(x))
        flat_x[i] = old - h
        minus = scalar(f(x))
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def _step(owner, h):
    """``h`` as a float, after checking it is a finite number > 0."""
    return check_real(owner, "h", h, "> 0", lambda v: v > 0)


def check_module(module, x, h=1e-5, seed=0):
    """Compare a module's backward pass with numerical gradients.

    The scalar checked is ``sum(module(x) * dy)`` for a fixed random ``dy``. The
    global generator is rewound before every forward pass, so a Dropout layer draws
    the same mask each time. The buffers (BatchNorm's running statistics, which every
    training-mode forward updates) are put back as they were when it returns.

    Parameters
    ----------
    module : nn.Module
        With float64 parameters, on the active target.
    x : np.ndarray
        Input (converted to float64).
    h : float, default 1e-5
    seed : int, default 0
        Seed of the upstream gradient ``dy``.

    Returns
    -------
    dict
        ``{"input": err, "<param name>": err, ...}``: the largest relative error of
        each analytic gradient (see :func:`rel_error`).
    """
    if not isinstance(module, Module):
        raise TypeError(f"check_module expected a jitnet.nn.Module, got {type(module).__name__}")
    h = _step("check_module", h)
    for name, p in module.named_parameters():
        if p.dtype != np.float64:
            raise ValueError(
                f"check_module expected float64 parameters, got {p.dtype} for {name}; "
                f"call module.to(dtype='float64') first"
            )
    x = np.array(to_numpy(x), dtype=np.float64)
    buffers = [(m, name, np.array(to_numpy(getattr(m, name))))
               for m in module.modules() for name in m._buffers]
    try:
        return _check_module(module, x, h, seed)
    finally:
        for m, name, saved in buffers:
            setattr(m, name, like(getattr(m, name), saved))


def _check_module(module, x, h, seed):
    b = backend()
    state = rng.get_state()

    def forward(x_host):
        rng.set_state(state)
        return module(b.asarray(x_host))

    y = to_numpy(forward(x))
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    dx = to_numpy(module.backward(b.asarray(dy)))
    params = list(module.named_parameters())
    analytic = {name: to_numpy(p.grad) for name, p in params}

    errors = {"input": rel_error(dx, numerical_gradient(forward, x, h, df=dy))}
    for name, p in params:
        values = np.array(to_numpy(p.data), dtype=np.float64)

        def f(v, p=p):
            p.data = b.asarray(v)
            return forward(x)

        numeric = numerical_gradient(f, values, h, df=dy)
        p.data = b.asarray(values)
        errors[name] = rel_error(analytic[name], numeric)
    return errors


def check_loss(loss_fn, scores, target, h=1e-5):
    """Compare a loss module's gradient with the numerical gradient of its value.

    Parameters
    ----------
    loss_fn : nn.Module
        A loss: ``loss_fn(scores, target)`` returns a float, ``loss_fn.backward()``
        the gradient.
    scores : np.ndarray
        Converted to float64.
    target : np.ndarray
        Labels or targets, as the loss expects.
    h : float, default 1e-5

    Returns
    -------
    float
        The largest relative error of the analytic gradient.
    """
    if not isinstance(loss_fn, Module):
        raise TypeError(f"check_loss expected a jitnet.nn loss, got {type(loss_fn).__name__}")
    h = _step("check_loss", h)
    b = backend()
    scores = np.array(to_numpy(scores), dtype=np.float64)
    loss_fn(b.asarray(scores), target)
    analytic = to_numpy(loss_fn.backward())
    numeric = numerical_gradient(lambda s: loss_fn(b.asarray(s), target), scores, h)
    return rel_error(analytic, numeric)
