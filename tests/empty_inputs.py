"""Empty inputs for every kernel of the contract, shared by the cpu and the cuda
kernel tests (each compares its target with the reference on them)."""

import numpy as np


def cases(dtype):
    """``{case: (name, args)}``: every function of the kernel contract called on an empty
    input (a batch of N = 0, in_features = 0, zero channels, a zero-size parameter). The
    layers refuse most of these (an empty batch, a BatchNorm2d of no channel); the
    kernels still give the reference's results."""
    def z(*shape):
        return np.zeros(shape, dtype)

    def a(*shape):  # small distinct values, exact in float32 and in every sum order
        return (np.arange(np.prod(shape)).reshape(shape) % 7 - 3).astype(dtype)

    def i32(*shape):
        return np.zeros(shape, np.int32)

    labels = np.zeros(0, np.int64)
    bias = np.array([0.5, -1, 2, -0.0, 3], dtype)  # -0.0: 0 + bias is +0.0
    dy = a(3, 5)
    stats = [np.ones(3, dtype), np.full(3, 0.5, dtype)]
    no_stats = [z(0), z(0)]
    return {
        "asarray": ("asarray", (z(0, 3),)),
        "to_numpy": ("to_numpy", (z(0, 3),)),
        "empty": ("empty", ((0, 3), dtype)),
        "zeros": ("zeros", ((0, 3), dtype)),
        "conv_fwd": ("conv2d_forward", (z(0, 3, 5, 5), a(4, 3, 3, 3), a(4), 1, 1, 1)),
        "conv_fwd_groups": ("conv2d_forward", (z(0, 4, 5, 5), a(6, 2, 3, 3), None, 2, 0, 2)),
        "conv_bwd": ("conv2d_backward", (z(0, 4, 5, 5), z(0, 3, 5, 5), a(4, 3, 3, 3), 1, 1, 1)),
        "conv_bwd_no_dx": ("conv2d_backward",
                           (z(0, 4, 5, 5), z(0, 3, 5, 5), a(4, 3, 3, 3), 1, 1, 1, False)),
        "pool_fwd": ("maxpool2d_forward", (z(0, 3, 4, 4), 2, 2)),
        "pool_bwd": ("maxpool2d_backward", (z(0, 3, 2, 2), i32(0, 3, 2, 2), (0, 3, 4, 4), 2, 2)),
        "pool_relu_bwd": ("maxpool2d_relu_backward",
                          (z(0, 3, 2, 2), z(0, 3, 2, 2), i32(0, 3, 2, 2), (0, 3, 4, 4), 2, 2)),
        "conv_pool_fwd": ("conv2d_maxpool2d_forward",
                          (z(0, 3, 6, 6), a(4, 3, 3, 3), a(4), 1, 1, 1, 2, 2)),
        "conv_pool_relu_fwd": ("conv2d_maxpool2d_forward",
                               (z(0, 3, 6, 6), a(4, 3, 3, 3), a(4), 1, 1, 1, 2, 2, True)),
        "conv_pool_bwd": ("conv2d_maxpool2d_backward",
                          (z(0, 4, 3, 3), z(0, 3, 6, 6), a(4, 3, 3, 3), i32(0, 4, 3, 3),
                           1, 1, 1, 2, 2)),
        "conv_pool_relu_bwd": ("conv2d_maxpool2d_backward",
                               (z(0, 4, 3, 3), z(0, 3, 6, 6), a(4, 3, 3, 3), i32(0, 4, 3, 3),
                                1, 1, 1, 2, 2, False, z(0, 4, 3, 3))),
        "linear_fwd": ("linear_forward", (z(0, 6), a(5, 6), a(5))),
        "linear_relu_fwd": ("linear_forward", (z(0, 6), a(5, 6), a(5), True)),
        "linear_bwd": ("linear_backward", (z(0, 5), z(0, 6), a(5, 6))),
        "linear_relu_bwd": ("linear_backward", (z(0, 5), z(0, 6), a(5, 6), True, z(0, 6))),
        # in_features = 0: y is the bias broadcast (its ReLU), dbias still dy.sum(0)
        "linear_d0_fwd": ("linear_forward", (z(3, 0), z(5, 0), bias)),
        "linear_d0_relu_fwd": ("linear_forward", (z(3, 0), z(5, 0), bias, True)),
        "linear_d0_no_bias_fwd": ("linear_forward", (z(3, 0), z(5, 0), None, True)),
        "linear_d0_bwd": ("linear_backward", (dy, z(3, 0), z(5, 0))),
        "linear_d0_relu_bwd": ("linear_backward", (dy, z(3, 0), z(5, 0), True, z(3, 0))),
        "linear_d0_bwd_no_dx": ("linear_backward", (dy, z(3, 0), z(5, 0), False)),
        "maxout_fwd": ("maxout_forward", (z(0, 6), a(15, 6), a(15), 3)),
        "maxout_bwd": ("maxout_backward", (z(0, 5), z(0, 6), a(15, 6), i32(0, 5), 3)),
        "maxout_d0_fwd": ("maxout_forward", (z(2, 0), z(6, 0), a(6), 3)),
        "maxout_d0_bwd": ("maxout_backward",
                          (a(2, 2), z(2, 0), z(6, 0), np.array([[1, 0], [2, 2]], np.int32), 3)),
        "relu_fwd": ("relu_forward", (z(0, 3),)),
        "relu_bwd": ("relu_backward", (z(0, 3), z(0, 3))),
        "leaky_relu_fwd": ("leaky_relu_forward", (z(0, 3), 0.1)),
        "leaky_relu_bwd": ("leaky_relu_backward", (z(0, 3), z(0, 3), 0.1)),
        "sigmoid_fwd": ("sigmoid_forward", (z(0, 3),)),
        "sigmoid_bwd": ("sigmoid_backward", (z(0, 3), z(0, 3))),
        "tanh_fwd": ("tanh_forward", (z(0, 3),)),
        "tanh_bwd": ("tanh_backward", (z(0, 3), z(0, 3))),
        "elu_fwd": ("elu_forward", (z(0, 3), 0.7)),
        "elu_bwd": ("elu_backward", (z(0, 3), z(0, 3), z(0, 3), 0.7)),
        "dropout_fwd": ("dropout_forward", (z(0, 3), 0.5, 12345)),
        "dropout_bwd": ("dropout_backward", (z(0, 3), z(0, 3))),
        # N = 0 in training: the batch's statistics are NaN, and so the running ones
        "batchnorm_train_fwd": ("batchnorm2d_forward",
                                (z(0, 3, 4, 4), a(3), a(3), *stats, 0.1, 1e-5, True)),
        "batchnorm_eval_fwd": ("batchnorm2d_forward",
                               (z(0, 3, 4, 4), a(3), a(3), *stats, 0.1, 1e-5, False)),
        "batchnorm_pool_train_fwd": ("batchnorm2d_maxpool2d_forward",
                                     (z(0, 3, 4, 4), a(3), a(3), *stats, 0.1, 1e-5, True, 2, 2)),
        "batchnorm_pool_eval_fwd": ("batchnorm2d_maxpool2d_forward",
                                    (z(0, 3, 4, 4), a(3), a(3), *stats, 0.1, 1e-5, False, 2, 2,
                                     True)),
        "batchnorm_bwd": ("batchnorm2d_backward",
                          (z(0, 3, 4, 4), z(0, 3, 4, 4), a(3), a(3), a(3) + 4)),
        # zero channels
        "batchnorm_c0_eval_fwd": ("batchnorm2d_forward",
                                  (z(2, 0, 4, 4), z(0), z(0), *no_stats, 0.1, 1e-5, False)),
        "batchnorm_pool_c0_eval_fwd": ("batchnorm2d_maxpool2d_forward",
                                       (z(2, 0, 4, 4), z(0), z(0), *no_stats, 0.1, 1e-5, False,
                                        2, 2)),
        "batchnorm_c0_train_fwd": ("batchnorm2d_forward",
                                   (z(2, 0, 4, 4), z(0), z(0), *no_stats, 0.1, 1e-5, True)),
        "batchnorm_pool_c0_train_fwd": ("batchnorm2d_maxpool2d_forward",
                                        (z(2, 0, 4, 4), z(0), z(0), *no_stats, 0.1, 1e-5, True,
                                         2, 2, True)),
        "batchnorm_c0_bwd": ("batchnorm2d_backward",
                             (z(2, 0, 4, 4), z(2, 0, 4, 4), z(0), z(0), z(0))),
        # the mean over no row is NaN
        "softmax_cross_entropy": ("softmax_cross_entropy", (z(0, 5), labels)),
        "multiclass_hinge": ("multiclass_hinge", (z(0, 5), labels, 1.0)),
        "bce_with_logits": ("bce_with_logits", (z(0, 5), z(0, 5))),
        "mse": ("mse", (z(0, 5), z(0, 5))),
        "l1": ("l1", (z(0, 5), z(0, 5))),
        "sgd": ("sgd_update", (z(0, 3), z(0, 3), None, 0.1, 0.0, False, 0.01)),
        "sgd_momentum": ("sgd_update", (z(0, 3), z(0, 3), z(0, 3), 0.1, 0.9, True, 0.01)),
        # one empty parameter beside one that is not
        "sgd_many": ("sgd_update_many", ([z(0, 3), a(2, 3)], [z(0, 3), a(2, 3) / 4],
                                         [None, None], 0.5, 0.0, False, 0.25)),
        "sgd_many_momentum": ("sgd_update_many",
                              ([a(2, 3), z(0, 3)], [a(2, 3) / 4, z(0, 3)], [a(2, 3), z(0, 3)],
                               0.5, 0.5, True, 0.0)),
        "adam": ("adam_update", (z(0, 3), z(0, 3), z(0, 3), z(0, 3), 0.1, 0.9, 0.999, 1e-8, 0.01,
                                 1)),
        "adam_many": ("adam_update_many",
                      ([z(0, 3), a(2, 3)], [z(0, 3), a(2, 3) / 4], [z(0, 3), a(2, 3)],
                       [z(0, 3), a(2, 3) ** 2], 0.1, 0.9, 0.999, 1e-8, 0.01, (1, 2))),
    }


#: The cases' names.
NAMES = list(cases(np.float32))


def outputs(result, args):
    """The arrays (and floats, and Nones) a call produced: its results, then its array
    arguments after the call (in-place updates), lists of arrays flattened."""
    items = list(result) if isinstance(result, tuple) else [result]
    for arg in args:  # host arrays, or the cuda target's (which have copy_to_host)
        is_array = isinstance(arg, np.ndarray) or hasattr(arg, "copy_to_host")
        items.extend(arg if isinstance(arg, list) else [arg] if is_array else [])
    return items
