"""The kernel contract: one package per target, each exporting these functions.

``numpy_ref`` (vectorised NumPy, the reference and test oracle), ``cpu``
(``@njit(parallel=True)``) and ``cuda`` (``@cuda.jit``, imported lazily) export
every name in :data:`CONTRACT` with the same signature. Arrays are float32 or
float64, images NCHW. Kernels trust their inputs: layers validate first.

Signatures (``numpy_ref`` holds the full docstrings)::

    # arrays of the target
    asarray(a, dtype=None) -> array        to_numpy(a) -> np.ndarray
    empty(shape, dtype) -> array           zeros(shape, dtype) -> array

    # convolution: x (N, C, H, W), weight (F, C/groups, KH, KW), bias (F,) or None
    conv2d_forward(x, weight, bias, stride, padding, groups) -> y (N, F, HO, WO)
    conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=True)
        -> (dx, dweight, dbias)             dx is None when input_grad is False

    # max pooling: argmax (N, C, HO, WO) int32, flat index h * W + w into the input plane
    maxpool2d_forward(x, kernel_size, stride) -> (y, argmax)
    maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None) -> dx
    conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False)
        -> (y, argmax)    the two forwards (and relu_forward) in one, bit for bit
                          (nn.Sequential calls it)
    maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None) -> dx
        relu_backward(dy, y) then maxpool2d_backward, bit for bit (nn.Sequential calls it)
    conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None)
        -> (dx, dweight, dbias)   maxpool2d_backward (maxpool2d_relu_backward with relu_y)
                                  then conv2d_backward (nn.Sequential calls it); the cpu
                                  target may sum dweight and dbias from the pooling's
                                  windows: the same up to rounding

    # fully connected: x (N, D), weight (M, D), bias (M,) or None; y = x @ weight.T + bias
    linear_forward(x, weight, bias, relu=False) -> y (N, M)
        with relu, relu_forward(y), bit for bit (nn.Sequential: a Linear then a ReLU)
    linear_backward(dy, x, weight, input_grad=True, relu_y=None) -> (dx, dweight, dbias)
        with relu_y (the output of a ReLU just before the layer), dx is
        relu_backward(dy @ weight, relu_y), bit for bit

    # maxout: weight (M * pieces, D), row j * pieces + k is piece k of unit j
    maxout_forward(x, weight, bias, pieces) -> (y (N, M), argmax (N, M) int32 piece index)
    maxout_backward(dy, x, weight, argmax, pieces) -> (dx, dweight, dbias)

    # element-wise activations, any shape
    relu_forward(x) -> y                     relu_backward(dy, y) -> dx
    leaky_relu_forward(x, negative_slope)    leaky_relu_backward(dy, x, negative_slope)
    sigmoid_forward(x) -> y                  sigmoid_backward(dy, y) -> dx
    tanh_forward(x) -> y                     tanh_backward(dy, y) -> dx
    elu_forward(x, alpha) -> y               elu_backward(dy, x, y, alpha) -> dx

    # inverted dropout; the keep mask is a pure function of (seed, flat index),
    # so every target draws the same mask for the same seed
    dropout_forward(x, p, seed) -> (y, mask)   mask holds 0 or 1 / (1 - p), x's dtype
    dropout_backward(dy, mask) -> dx

    # batch norm over (N, H, W) per channel; updates running_mean / running_var
    # in place when training (unbiased variance, as PyTorch)
    batchnorm2d_forward(x, weight, bias, running_mean, running_var, momentum, eps, training)
        -> (y, mean, invstd)
    batchnorm2d_maxpool2d_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                                  training, pool_size, pool_stride, relu=False)
        -> (y, argmax, mean, invstd)   batchnorm2d_forward then maxpool2d_forward (and
                                       relu_forward), bit for bit (nn.Sequential calls it)
    batchnorm2d_backward(dy, x, weight, mean, invstd) -> (dx, dweight, dbias)

    # losses: (value as a Python float, gradient w.r.t. the first argument),
    # mean reduction as PyTorch's default
    softmax_cross_entropy(scores, labels) -> (loss, dscores)
    multiclass_hinge(scores, labels, margin) -> (loss, dscores)
    bce_with_logits(scores, targets) -> (loss, dscores)
    mse(pred, target) -> (loss, dpred)
    l1(pred, target) -> (loss, dpred)

    # optimizer updates, in place on param and state
    sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay) -> None
    sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay) -> None
        sgd_update of every (param, grad, velocity); the cuda target fuses the launches
    adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) -> None
    adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps) -> None
        adam_update of every parameter (steps: one int each); the cuda target fuses
"""

CONTRACT = (
    "asarray",
    "to_numpy",
    "empty",
    "zeros",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "conv2d_maxpool2d_forward",
    "maxpool2d_relu_backward",
    "conv2d_maxpool2d_backward",
    "linear_forward",
    "linear_backward",
    "maxout_forward",
    "maxout_backward",
    "relu_forward",
    "relu_backward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "tanh_forward",
    "tanh_backward",
    "elu_forward",
    "elu_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm2d_forward",
    "batchnorm2d_maxpool2d_forward",
    "batchnorm2d_backward",
    "softmax_cross_entropy",
    "multiclass_hinge",
    "bce_with_logits",
    "mse",
    "l1",
    "sgd_update",
    "sgd_update_many",
    "adam_update",
    "adam_update_many",
)


def conv_pool_backward_calls(kernels, dy, x, weight, argmax, stride, padding, groups, pool_size,
                             pool_stride, input_grad, relu_y):
    """What ``conv2d_maxpool2d_backward`` stands for, on the target module ``kernels``:
    its ``maxpool2d_backward`` (with ``relu_y``, ``maxpool2d_relu_backward``) over the
    convolution's output, then its ``conv2d_backward``. The numpy and cuda targets
    return this; the cpu target where its windows' kernels do not apply."""
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    stride, padding = int(stride), int(padding)
    conv_shape = (n, f, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1)
    if relu_y is None:
        dconv = kernels.maxpool2d_backward(dy, argmax, conv_shape, pool_size, pool_stride)
    else:
        dconv = kernels.maxpool2d_relu_backward(dy, relu_y, argmax, conv_shape, pool_size,
                                                pool_stride)
    return kernels.conv2d_backward(dconv, x, weight, stride, padding, groups, input_grad)
