"""Every cpu kernel of jitnet, run once on fixed data; ``test_cache_bits.py`` runs this
in two processes sharing an empty Numba cache, and compares what they computed.

    python tests/cache_bits_battery.py OUT.json

Writes ``{"digests": {case: sha256 of its results}, "compiled": [...], "loaded":
[...]}``: the second two name the kernels this process compiled and those it loaded
from Numba's cache. The cases are the kernel contract (``jitnet.kernels.CONTRACT``) in
float32 and float64 at the reference net's shapes and at odd ones (strides, groups,
depthwise, 1x1 and 5x5 kernels, tails), the features, and short training runs of
both ConvNets and of the HoG classifier (the data transforms). The shapes matter, not
only the types: a sum's order shows only where its loop runs long enough to be
vectorised.
"""

import hashlib
import inspect
import json
import sys

import numpy as np
from numba.core.registry import CPUDispatcher

import jitnet
from jitnet import data, features, train
from jitnet.data import transforms
from jitnet.features import color, hog_cpu
from jitnet.kernels import cpu as K

#: The modules whose @njit kernels the battery must reach (the test checks it does):
#: every module of the cpu target's package, the features' (HoG's are in ``hog_cpu``)
#: and the transforms'.
MODULES = (*(module for _, module in inspect.getmembers(K, inspect.ismodule)),
           hog_cpu, color, transforms)

#: Convolutions: (n, c, h, w, f, k, stride, padding, groups).
CONVOLUTIONS = (
    (64, 3, 32, 32, 32, 3, 1, 1, 1),  # the reference net's conv1
    (64, 32, 16, 16, 64, 3, 1, 1, 1),  # and conv2
    (3, 3, 10, 18, 8, 3, 1, 1, 1),  # the 3x3 weight gradient's odd rows and bias
    (5, 4, 13, 11, 6, 5, 2, 2, 2),
    (4, 8, 10, 10, 8, 3, 1, 1, 8),  # depthwise
    (3, 6, 9, 9, 10, 1, 1, 0, 1),
    (7, 3, 28, 28, 16, 5, 1, 0, 1),
    (2, 16, 12, 12, 24, 3, 2, 1, 1),
    (3, 8, 11, 11, 16, 3, 2, 1, 8),  # depthwise, strided, two outputs a channel
    (2, 40, 12, 12, 24, 3, 2, 1, 2),  # strided: the input gradient's dilated dy
)

#: Fully connected layers: (n, in, out).
LINEARS = ((64, 4096, 128), (64, 128, 10), (7, 33, 5), (256, 300, 70))


def digest(*values):
    """sha256 of the bytes of ``values`` (arrays, scalars, or lists of them; None skipped)."""
    h = hashlib.sha256()
    for v in values:
        for a in (v if isinstance(v, (list, tuple)) else [v]):
            if a is not None:
                h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


def kernel_cases(dtype, out):
    """The contract's kernels in ``dtype``; each case's digest into ``out``."""
    rng = np.random.default_rng(1)
    name = np.dtype(dtype).name

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    for n, c, h, w, f, k, s, p, g in CONVOLUTIONS:
        case = f"{name} conv {n, c, h, w, f, k, s, p, g}"
        x, weight, bias = normal(n, c, h, w), normal(f, c // g, k, k) * 0.2, normal(f)
        y = K.conv2d_forward(x, weight, bias, s, p, g)
        out[case + " forward"] = digest(y)
        out[case + " forward, no bias"] = digest(K.conv2d_forward(x, weight, None, s, p, g))
        dy = normal(*y.shape)
        out[case + " backward"] = digest(K.conv2d_backward(dy, x, weight, s, p, g))
        out[case + " weight gradient"] = digest(
            K.conv2d_backward(dy, x, weight, s, p, g, input_grad=False))
        if min(y.shape[2:]) < 2:
            continue
        for relu in (False, True):
            yp, argmax = K.conv2d_maxpool2d_forward(x, weight, bias, s, p, g, 2, 2, relu=relu)
            out[case + f" + pool, relu={relu}"] = digest(yp, argmax)
            out[case + f" + pool backward, relu={relu}"] = digest(K.conv2d_maxpool2d_backward(
                normal(*yp.shape), x, weight, argmax, s, p, g, 2, 2,
                relu_y=yp if relu else None))

    x = normal(8, 6, 15, 15)
    for k, s in ((2, 2), (3, 2), (3, 1)):
        y, argmax = K.maxpool2d_forward(x, k, s)
        dy = normal(*y.shape)
        out[f"{name} pool {k, s}"] = digest(y, argmax)
        out[f"{name} pool {k, s} backward"] = digest(
            K.maxpool2d_backward(dy, argmax, x.shape, k, s))
        out[f"{name} pool {k, s} relu backward"] = digest(
            K.maxpool2d_relu_backward(dy, np.maximum(y, 0), argmax, x.shape, k, s))

    for n, d, m in LINEARS:
        case = f"{name} linear {n, d, m}"
        x, weight, bias, dy = normal(n, d), normal(m, d) * 0.05, normal(m), normal(n, m)
        out[case + " forward"] = digest(K.linear_forward(x, weight, bias))
        out[case + " forward, relu"] = digest(K.linear_forward(x, weight, bias, relu=True))
        out[case + " forward, no bias"] = digest(K.linear_forward(x, weight, None))
        out[case + " backward"] = digest(K.linear_backward(dy, x, weight))
        out[case + " backward, relu_y"] = digest(
            K.linear_backward(dy, x, weight, relu_y=np.maximum(x, 0)))
        out[case + " weight gradient"] = digest(K.linear_backward(dy, x, weight, input_grad=False))

    x, weight, bias = normal(9, 20), normal(12, 20), normal(12)
    y, argmax = K.maxout_forward(x, weight, bias, 3)
    out[f"{name} maxout"] = digest(y, argmax, K.maxout_backward(normal(9, 4), x, weight, argmax, 3))

    x, dy = normal(5, 7, 9, 11), normal(5, 7, 9, 11)
    for act in ("relu", "sigmoid", "tanh"):
        y = getattr(K, act + "_forward")(x)
        out[f"{name} {act}"] = digest(y, getattr(K, act + "_backward")(dy, y))
    out[f"{name} leaky_relu"] = digest(K.leaky_relu_forward(x, 0.1),
                                       K.leaky_relu_backward(dy, x, 0.1))
    y = K.elu_forward(x, 1.3)
    out[f"{name} elu"] = digest(y, K.elu_backward(dy, x, y, 1.3))
    y, mask = K.dropout_forward(x, 0.3, 123)
    out[f"{name} dropout"] = digest(y, mask, K.dropout_backward(dy, mask))

    for shape in ((64, 32, 32, 32), (64, 64, 16, 16), (3, 5, 7, 9)):
        case = f"{name} batchnorm {shape}"
        ch = shape[1]
        x = normal(*shape) * 2 + 1
        weight, bias = normal(ch), normal(ch)
        running = (normal(ch), np.abs(normal(ch)) + 0.5)
        y, mean, invstd = K.batchnorm2d_forward(x, weight, bias, *running, 0.1, 1e-5, True)
        out[case] = digest(y, mean, invstd, running)
        out[case + " backward"] = digest(K.batchnorm2d_backward(normal(*shape), x, weight,
                                                                mean, invstd))
        for relu in (False, True):
            out[case + f" + pool, relu={relu}"] = digest(K.batchnorm2d_maxpool2d_forward(
                x, weight, bias, *running, 0.1, 1e-5, True, 2, 2, relu=relu), running)
        out[case + " eval"] = digest(
            K.batchnorm2d_forward(x, weight, bias, *running, 0.1, 1e-5, False))

    for n in (64, 257):
        scores, labels = normal(n, 10), rng.integers(0, 10, n)
        target = normal(n, 10)
        for loss, args in (("softmax_cross_entropy", (labels,)),
                           ("multiclass_hinge", (labels, 1.0)),
                           ("bce_with_logits", ((target > 0).astype(dtype),)),
                           ("mse", (target,)), ("l1", (target,))):
            value, grad = getattr(K, loss)(scores, *args)
            out[f"{name} {loss} {n}"] = digest(np.float64(value), grad)

    shapes = ((32, 3, 3, 3), (32,), (64, 32, 3, 3), (4096, 128), (10,))
    for nesterov in (False, True):
        params, grads, velocities = ([normal(*s) for s in shapes] for _ in range(3))
        K.sgd_update_many(params, grads, velocities, 0.01, 0.9, nesterov, 5e-4)
        out[f"{name} sgd_update_many nesterov={nesterov}"] = digest(params, velocities)
        param, grad, velocity = normal(100), normal(100), normal(100)
        K.sgd_update(param, grad, velocity, 0.01, 0.9, nesterov, 5e-4)
        out[f"{name} sgd_update nesterov={nesterov}"] = digest(param, velocity)
    param = normal(100)
    K.sgd_update(param, normal(100), None, 0.01, 0.0, False, 0.0)
    out[f"{name} sgd_update plain"] = digest(param)
    params, grads, ms = ([normal(*s) for s in shapes] for _ in range(3))
    vs = [np.abs(normal(*s)) for s in shapes]
    K.adam_update_many(params, grads, ms, vs, 1e-3, 0.9, 0.999, 1e-8, 1e-4, [3] * len(shapes))
    out[f"{name} adam_update_many"] = digest(params, ms, vs)
    param, m, v = normal(100), normal(100), np.abs(normal(100))
    K.adam_update(param, normal(100), m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 2)
    out[f"{name} adam_update"] = digest(param, m, v)


def feature_and_training_cases(out):
    images = np.random.default_rng(2).integers(0, 256, (37, 3, 32, 32), dtype=np.uint8)
    out["hog, colour"] = digest(features.hog(images, channel_axis=1))
    out["hog, grey"] = digest(features.hog(images[:, 0]))
    out["hog, float, L1"] = digest(features.hog(images.astype(np.float32) / 255, channel_axis=1,
                                                block_norm="L1"))
    out["color_histogram"] = digest(features.color_histogram(images, channel_axis=1))

    x_train, y_train, x_test, y_test = data.synthetic_cifar(n_train=256, n_test=64, seed=0)
    for batchnorm in (True, False):
        result = train.train_convnet(x_train, y_train, x_test, y_test, epochs=2, batch_size=64,
                                     quiet=True, batchnorm=batchnorm)
        out[f"train_convnet batchnorm={batchnorm}"] = digest(
            [p.data for p in result.model.parameters()],
            [entry["loss"] for entry in result.metrics["history"]])
    result = train.train_hog_linear(x_train, y_train, x_test, y_test, epochs=3, quiet=True)
    out["train_hog_linear"] = digest([entry["loss"] for entry in result.metrics["history"]],
                                     result.predictions)


def kernels():
    """``{name: dispatcher}`` of the battery's modules' own @njit kernels (those inlined
    into others, ``inline="always"``, are never compiled on their own)."""
    found = {}
    for module in MODULES:
        for name, obj in vars(module).items():
            if (isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__
                    and obj.targetoptions.get("inline", "never") != "always"):
                found[f"{module.__name__}.{name}"] = obj
    return found


def main(path):
    jitnet.set_target("cpu")
    out = {}
    for dtype in (np.float32, np.float64):
        kernel_cases(dtype, out)
    feature_and_training_cases(out)
    compiled = sorted(name for name, d in kernels().items() if d.stats.cache_misses)
    loaded = sorted(name for name, d in kernels().items() if d.stats.cache_hits)
    with open(path, "w") as f:
        json.dump({"digests": out, "compiled": compiled, "loaded": loaded}, f, indent=0)


if __name__ == "__main__":
    main(sys.argv[1])
