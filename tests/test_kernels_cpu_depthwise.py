"""The cpu depthwise-convolution kernels against the NumPy reference, on random odd
shapes (strides 1-3, padding 0-2, kernels 1-5, channel multipliers 1-2), and their
bits whatever the thread count."""

import numba
import numpy as np
import pytest
from test_kernels_cpu import assert_close

from jitnet.kernels import numpy_ref as ref
from jitnet.kernels.cpu.conv_depthwise import (
    _depthwise_forward,
    _depthwise_input_grad,
    _depthwise_weight_grad,
)

# (N, C, H, W, m, K, stride, padding)
CASES = [
    (2, 3, 7, 10, 1, 3, 1, 1),
    (2, 3, 7, 10, 2, 3, 2, 1),
    (1, 2, 9, 5, 2, 5, 3, 2),
    (3, 2, 4, 4, 1, 5, 1, 2),
    (1, 3, 6, 7, 2, 1, 2, 0),
    (2, 2, 11, 13, 1, 3, 2, 2),
    (1, 2, 5, 6, 1, 1, 3, 1),
    (1, 1, 3, 3, 2, 3, 3, 0),  # a single output: the plane is just the kernel
    (1, 2, 2, 3, 1, 5, 2, 2),  # a plane smaller than the kernel
    (2, 5, 17, 19, 1, 3, 1, 0),
    (1, 3, 12, 9, 2, 5, 2, 1),
]


def _run(rng, dtype, n, c, h, w, m, k, s, p):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((c * m, 1, k, k)).astype(dtype)
    bias = rng.standard_normal(c * m).astype(dtype)
    y = _depthwise_forward(x, weight, bias, s, p)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = _depthwise_input_grad(dy, weight, x.shape, s, p)
    dbias = np.empty(c * m, dtype=dtype)
    dweight = _depthwise_weight_grad(dy, x, weight.shape, s, p, dbias)
    return (x, weight, bias, dy), (y, dx, dweight, dbias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_depthwise_against_the_reference(dtype, case):
    rng = np.random.default_rng(sum(case))
    n, c, h, w, m, k, s, p = case
    (x, weight, bias, dy), (y, dx, dweight, dbias) = _run(rng, dtype, *case)
    assert_close(y, ref.conv2d_forward(x, weight, bias, s, p, c), dtype)
    want = ref.conv2d_backward(dy, x, weight, s, p, c)
    for got, expected in zip((dx, dweight, dbias), want):
        assert_close(got, expected, dtype)
    # without dbias: the same weight gradient
    np.testing.assert_array_equal(_depthwise_weight_grad(dy, x, weight.shape, s, p, None),
                                  dweight)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
@pytest.mark.parametrize("case", [(4, 6, 16, 16, 1, 3, 1, 1), (3, 5, 15, 14, 2, 3, 2, 1)],
                         ids=str)
def test_depthwise_bits_do_not_depend_on_the_thread_count(case):
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append(_run(np.random.default_rng(7), np.float32, *case)[1])
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
