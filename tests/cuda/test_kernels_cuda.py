"""The cuda kernels against the NumPy reference, on small odd shapes.

The simulator runs every CUDA thread as a Python thread, so shapes stay tiny
(batch 1-2, 3-6 channels, 5x7 planes); the launch shapes are patched tiny too
(see conftest.py) so that grid-stride loops wrap and tiles have ragged edges.
"""

import copy
import inspect
import warnings

import numpy as np
import pytest

import jitnet
from jitnet import config
from jitnet.kernels import CONTRACT
from jitnet.kernels import numpy_ref as ref

import empty_inputs

cu = pytest.importorskip("jitnet.kernels.cuda")

DTYPES = [np.float32, np.float64]
#: (rtol, atol) per dtype: float64 must agree to rounding; float32 sums in another order.
TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}


def _assert_close(got, want, dtype, name=""):
    host = cu.to_numpy(got)
    assert host.dtype == np.asarray(want).dtype, f"{name}: dtype {host.dtype}"
    assert host.shape == np.shape(want), f"{name}: shape {host.shape} != {np.shape(want)}"
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(host, want, rtol=rtol, atol=atol, err_msg=name)


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _dev(a):
    return cu.asarray(a)


# --------------------------------------------------------------------------------------
# the contract and the arrays of the target
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTRACT)
def test_exports_contract_with_reference_signature(name):
    assert callable(getattr(cu, name, None)), f"jitnet.kernels.cuda lacks {name}"
    assert inspect.signature(getattr(cu, name)) == inspect.signature(getattr(ref, name))


def test_a_0_d_array_stays_0_d():
    # np.ascontiguousarray returns at least 1-d: a scalar came back with shape (1,)
    for value in (np.float32(2), 2.0, np.array(2.0, np.float32)):
        assert cu.asarray(value).shape == ()
    with jitnet.use_target("cuda"):
        relu = jitnet.nn.ReLU()
        y = relu(np.float32(-0.5))
        assert tuple(y.shape) == () and jitnet.to_numpy(y) == 0
        assert tuple(relu.backward(np.float32(1.0)).shape) == ()


def test_count_launches_counts_kernels_once_and_only_inside(rng):
    x = _dev(_normal(rng, (2, 3, 5, 7), np.float32))
    w = _dev(_normal(rng, (4, 3, 3, 3), np.float32))
    cu.relu_forward(x)  # compiled before counting
    with cu.count_launches() as launches:
        cu.relu_forward(x)
        cu.relu_forward(x)
        cu.conv2d_forward(x, w, None, 1, 1, 1)
    assert launches["_relu_forward_kernel"] == 2
    # the convolution's kernel(s), each launch once: device functions are not launches
    assert sum(launches.values()) >= 3
    assert all(name.endswith("kernel") for name in launches), launches
    total = sum(launches.values())
    cu.relu_forward(x)  # the patch is gone after the block
    assert sum(launches.values()) == total


def test_arrays_round_trip_and_stay_on_device(rng):
    host = rng.standard_normal((3, 5))[:, ::2]  # non-contiguous on purpose
    d = cu.asarray(host)
    assert jitnet.targets.is_device_array(d)
    np.testing.assert_array_equal(cu.to_numpy(d), host)
    assert cu.asarray(d) is d  # a device array passes through
    d32 = cu.asarray(d, np.float32)  # cast on the device
    assert d32.dtype == np.float32
    np.testing.assert_array_equal(cu.to_numpy(d32), host.astype(np.float32))
    z = cu.zeros((7, 11), np.float64)  # 77 elements: the fill loop wraps (2 blocks of 32)
    np.testing.assert_array_equal(cu.to_numpy(z), np.zeros((7, 11)))
    e = cu.empty((2, 3), np.int32)
    assert e.shape == (2, 3) and e.dtype == np.int32
    assert jitnet.to_numpy(jitnet.asarray(host)).shape == host.shape


# --------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------

CONV_CASES = [
    # n, c, f, h, w, k, stride, padding, groups
    (2, 3, 5, 5, 7, 3, 2, 1, 1),  # stride 2 with padding, 5 filters: a ragged filter block
    (1, 4, 6, 5, 7, 3, 1, 2, 2),  # two groups, padding 2
    (2, 3, 3, 5, 7, 3, 1, 1, 3),  # depthwise
    (1, 3, 6, 6, 5, 3, 2, 0, 3),  # depthwise with 2 filters per channel, stride 2, no padding
    (1, 6, 4, 5, 7, 1, 2, 0, 1),  # 1x1, stride 2
    (2, 3, 2, 7, 5, 1, 1, 1, 1),  # 1x1 with padding: the border sees only the bias
    (1, 2, 3, 5, 7, 5, 2, 2, 1),  # 5x5 as tall as the input, stride 2
    (1, 2, 3, 6, 6, 7, 1, 3, 1),  # 7x7: 49 weight taps, more than the 32 threads a block
]


def _conv_id(case):
    return "n{}c{}f{}_{}x{}_k{}s{}p{}g{}".format(*case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_matches_reference(case, dtype, rng):
    n, c, f, h, w, k, stride, padding, groups = case
    x = _normal(rng, (n, c, h, w), dtype)
    weight = _normal(rng, (f, c // groups, k, k), dtype)
    bias = _normal(rng, (f,), dtype)
    y = cu.conv2d_forward(_dev(x), _dev(weight), _dev(bias), stride, padding, groups)
    want = ref.conv2d_forward(x, weight, bias, stride, padding, groups)
    _assert_close(y, want, dtype, "y")

    dy = _normal(rng, want.shape, dtype)
    got = cu.conv2d_backward(_dev(dy), _dev(x), _dev(weight), stride, padding, groups)
    wants = ref.conv2d_backward(dy, x, weight, stride, padding, groups)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, wants):
        _assert_close(g, r, dtype, name)
    dx, dweight, dbias = cu.conv2d_backward(
        _dev(dy), _dev(x), _dev(weight), stride, padding, groups, input_grad=False
    )
    assert dx is None
    np.testing.assert_array_equal(dweight.copy_to_host(), got[1].copy_to_host())
    np.testing.assert_array_equal(dbias.copy_to_host(), got[2].copy_to_host())


def test_conv2d_without_bias(rng):
    x = _normal(rng, (1, 3, 5, 7), np.float64)
    weight = _normal(rng, (4, 3, 3, 3), np.float64)
    y = cu.conv2d_forward(_dev(x), _dev(weight), None, 1, 1, 1)
    _assert_close(y, ref.conv2d_forward(x, weight, None, 1, 1, 1), np.float64)


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, stride", [(2, 2), (3, 2), (2, 1)])
def test_maxpool2d_matches_reference(k, stride, dtype, rng):
    x = _normal(rng, (2, 3, 5, 7), dtype)
    x[0, 0, :2, :2] = 1.5  # a tie: the first in row-major window order must win
    y, argmax = cu.maxpool2d_forward(_dev(x), k, stride)
    want_y, want_argmax = ref.maxpool2d_forward(x, k, stride)
    _assert_close(y, want_y, dtype, "y")
    assert cu.to_numpy(argmax).dtype == np.int32
    np.testing.assert_array_equal(cu.to_numpy(argmax), want_argmax)

    dy = _normal(rng, want_y.shape, dtype)
    dx = cu.maxpool2d_backward(_dev(dy), argmax, x.shape)  # overlapping windows add up
    _assert_close(dx, ref.maxpool2d_backward(dy, want_argmax, x.shape), dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, stride", [(2, 2), (1, 2), (2, 3), (3, 3), (3, 2)])
def test_maxpool2d_backward_with_the_window_equals_the_scatter(k, stride, dtype, rng):
    # 5x7 leaves rows and columns in no window; (3, 2) overlaps and takes the scatter
    x = _normal(rng, (2, 3, 5, 7), dtype)
    y, argmax = cu.maxpool2d_forward(_dev(x), k, stride)
    dy = _normal(rng, y.shape, dtype)
    want = ref.maxpool2d_backward(dy, cu.to_numpy(argmax), x.shape)
    with cu.count_launches() as launches:
        dx = cu.maxpool2d_backward(_dev(dy), argmax, x.shape, k, stride)
    np.testing.assert_array_equal(cu.to_numpy(dx), want)  # one gradient each: exact
    if k <= stride:  # one launch writes every element: no zero fill, no scatter
        assert dict(launches) == {"_maxpool2d_backward_gather_kernel": 1}
    else:
        assert launches["_maxpool2d_backward_kernel"] == 1


@pytest.mark.parametrize("k, stride", [(2, 2), (3, 2)])  # the gather, the scatter
def test_maxpool2d_relu_backward_is_the_two_kernels(k, stride, rng):
    x = _normal(rng, (2, 3, 6, 7), np.float32)
    y, argmax = cu.maxpool2d_forward(_dev(x), k, stride)
    r = cu.relu_forward(y)
    dy = _dev(_normal(rng, y.shape, np.float32))
    want = cu.maxpool2d_backward(cu.relu_backward(dy, r), argmax, x.shape, k, stride)
    with cu.count_launches() as launches:
        dx = cu.maxpool2d_relu_backward(dy, r, argmax, x.shape, k, stride)
    np.testing.assert_array_equal(cu.to_numpy(dx), cu.to_numpy(want))
    _assert_close(dx, ref.maxpool2d_relu_backward(cu.to_numpy(dy), cu.to_numpy(r),
                                                  cu.to_numpy(argmax), x.shape),
                  np.float32, "dx")
    if k <= stride:
        assert dict(launches) == {"_maxpool2d_backward_gather_kernel": 1}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, groups, pool",
    [
        ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1, (2, 2)),  # odd columns: the last one unpooled
        ((1, 4, 11, 9), (6, 2, 3, 3), 2, 1, 2, (2, 2)),  # strided, grouped, several blocks
        ((2, 3, 7, 7), (5, 3, 3, 3), 1, 1, 1, (3, 2)),  # overlapping: two launches
    ],
)
def test_conv2d_maxpool2d_forward_matches_reference(rng, relu, x_shape, w_shape, stride,
                                                    padding, groups, pool):
    x = _normal(rng, x_shape, np.float32)
    x[0, 0, 0, :3] = np.nan  # NaN windows: the first NaN wins
    x[-1, -1] = np.round(x[-1, -1])  # ties
    w = np.round(_normal(rng, w_shape, np.float32))  # small integers: tied outputs
    b = _normal(rng, (w_shape[0],), np.float32)
    args = (stride, padding, groups, *pool)
    with cu.count_launches() as launches:
        y, argmax = cu.conv2d_maxpool2d_forward(_dev(x), _dev(w), _dev(b), *args, relu=relu)
    # 2x2 pooling in the convolution's own launch (the ReLU too), else two launches
    if pool == (2, 2):
        assert dict(launches) == {"conv2d_forward_kernel": 1}
    else:
        assert dict(launches) == {"conv2d_forward_kernel": 1, "_maxpool2d_forward_kernel": 1}
    # the separate kernels' results, bit for bit
    two_y, two_argmax = cu.maxpool2d_forward(cu.conv2d_forward(_dev(x), _dev(w), _dev(b),
                                                               *args[:3]), *pool)
    if relu:
        two_y = cu.relu_forward(two_y)
    np.testing.assert_array_equal(cu.to_numpy(y), cu.to_numpy(two_y))
    np.testing.assert_array_equal(cu.to_numpy(argmax), cu.to_numpy(two_argmax))
    want_y, _ = ref.conv2d_maxpool2d_forward(x, w, b, *args, relu=relu)  # (ties may differ)
    if relu and pool == (2, 2):  # the ReLU had something to do
        assert (want_y == 0).any() and (want_y > 0).any()
    finite = ~np.isnan(want_y)
    np.testing.assert_allclose(cu.to_numpy(y)[finite], want_y[finite], rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.isnan(cu.to_numpy(y)), ~finite)


@pytest.mark.parametrize("relu, input_grad", [(False, True), (True, False)])
def test_conv2d_maxpool2d_backward_is_the_calls(rng, relu, input_grad):
    x = _normal(rng, (2, 3, 6, 5), np.float32)
    w = _normal(rng, (4, 3, 3, 3), np.float32)
    b = _normal(rng, (4,), np.float32)
    y, argmax = cu.conv2d_maxpool2d_forward(_dev(x), _dev(w), _dev(b), 1, 1, 1, 2, 2, relu=relu)
    g = _dev(_normal(rng, y.shape, np.float32))
    relu_y = y if relu else None
    got = cu.conv2d_maxpool2d_backward(g, _dev(x), _dev(w), argmax, 1, 1, 1, 2, 2, input_grad,
                                       relu_y)
    conv_shape = (2, 4, 6, 5)
    dconv = (cu.maxpool2d_relu_backward(g, y, argmax, conv_shape, 2, 2) if relu
             else cu.maxpool2d_backward(g, argmax, conv_shape, 2, 2))
    want = cu.conv2d_backward(dconv, _dev(x), _dev(w), 1, 1, 1, input_grad)
    assert (got[0] is None) == (not input_grad)
    for a, e in zip(got, want):
        if e is not None:
            np.testing.assert_array_equal(cu.to_numpy(a), cu.to_numpy(e))
    ref_grads = ref.conv2d_maxpool2d_backward(
        cu.to_numpy(g), x, w, cu.to_numpy(argmax), 1, 1, 1, 2, 2, input_grad,
        None if relu_y is None else cu.to_numpy(relu_y))
    for a, e, name in zip(got, ref_grads, ("dx", "dweight", "dbias")):
        if e is not None:
            _assert_close(a, e, np.float32, name)


def test_maxpool2d_propagates_nan(rng):
    x = _normal(rng, (1, 1, 4, 4), np.float32)
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 0, 1] = 100.0  # bigger than any number, but NaN still wins the window
    y, argmax = cu.maxpool2d_forward(_dev(x), 2, 2)
    assert np.isnan(cu.to_numpy(y)[0, 0, 0, 0])
    assert cu.to_numpy(argmax)[0, 0, 0, 0] == 1 * 4 + 0


# --------------------------------------------------------------------------------------
# fully connected and maxout
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
# 17 rows: two row tiles; 21 outputs: the weight gradient (and its bias sums) in two too
@pytest.mark.parametrize("n, d, m", [(1, 7, 5), (17, 9, 6), (5, 9, 21)])
def test_linear_matches_reference(n, d, m, dtype, rng):
    x, weight = _normal(rng, (n, d), dtype), _normal(rng, (m, d), dtype)
    bias = _normal(rng, (m,), dtype)
    for b in (bias, None):
        y = cu.linear_forward(_dev(x), _dev(weight), None if b is None else _dev(b))
        _assert_close(y, ref.linear_forward(x, weight, b), dtype, f"y (bias {b is not None})")
    dy = _normal(rng, (n, m), dtype)
    got = cu.linear_backward(_dev(dy), _dev(x), _dev(weight))
    for name, g, r in zip(("dx", "dweight", "dbias"), got, ref.linear_backward(dy, x, weight)):
        _assert_close(g, r, dtype, name)
    dx, dweight, _ = cu.linear_backward(_dev(dy), _dev(x), _dev(weight), input_grad=False)
    assert dx is None
    np.testing.assert_array_equal(dweight.copy_to_host(), got[1].copy_to_host())
    # the bias gradient rides in the weight gradient's launch, summed in float64 in order
    with cu.count_launches() as launches:
        cu.linear_backward(_dev(dy), _dev(x), _dev(weight))
    assert dict(launches) == {"matmul_kernel": 2}
    want = np.zeros(m)
    for row in dy.astype(np.float64):
        want += row
    np.testing.assert_array_equal(cu.to_numpy(got[2]), want.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_its_relu_is_one_launch_and_the_two_kernels_bit_for_bit(dtype, rng):
    n, d, m = 17, 9, 6  # two row tiles
    x, weight = _normal(rng, (n, d), dtype), _normal(rng, (m, d), dtype)
    x[3] = 0  # outputs equal to the bias
    x[5, 2] = np.nan
    for b in (_normal(rng, (m,), dtype), None):
        with cu.count_launches() as launches:
            y = cu.linear_forward(_dev(x), _dev(weight), None if b is None else _dev(b), relu=True)
        assert dict(launches) == {"matmul_kernel": 1}
        want = cu.relu_forward(cu.linear_forward(_dev(x), _dev(weight),
                                                 None if b is None else _dev(b)))
        np.testing.assert_array_equal(cu.to_numpy(y), cu.to_numpy(want))
        _assert_close(y, ref.linear_forward(x, weight, b, relu=True), dtype, "y")
    relu_y = ref.relu_forward(_normal(rng, (n, d), dtype))
    relu_y[:, 0] = np.nan
    dy = _normal(rng, (n, m), dtype)
    with cu.count_launches() as launches:
        got = cu.linear_backward(_dev(dy), _dev(relu_y), _dev(weight), relu_y=_dev(relu_y))
    assert dict(launches) == {"matmul_kernel": 2}  # dx (gated) and dweight with dbias
    plain = cu.linear_backward(_dev(dy), _dev(relu_y), _dev(weight))
    np.testing.assert_array_equal(cu.to_numpy(got[0]),
                                  cu.to_numpy(cu.relu_backward(plain[0], _dev(relu_y))))
    for g, p in zip(got[1:], plain[1:]):
        np.testing.assert_array_equal(cu.to_numpy(g), cu.to_numpy(p))
    want = ref.linear_backward(dy, relu_y, weight, relu_y=relu_y)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        _assert_close(g, r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pieces", [2, 3])
def test_maxout_matches_reference(pieces, dtype, rng):
    n, d, m = 3, 7, 4
    x, weight = _normal(rng, (n, d), dtype), _normal(rng, (m * pieces, d), dtype)
    bias = _normal(rng, (m * pieces,), dtype)
    weight[1] = weight[0]  # unit 0: pieces 0 and 1 tie, the first must win
    bias[1] = bias[0]
    y, argmax = cu.maxout_forward(_dev(x), _dev(weight), _dev(bias), pieces)
    want_y, want_argmax = ref.maxout_forward(x, weight, bias, pieces)
    _assert_close(y, want_y, dtype, "y")
    np.testing.assert_array_equal(cu.to_numpy(argmax), want_argmax)

    dy = _normal(rng, (n, m), dtype)
    got = cu.maxout_backward(_dev(dy), _dev(x), _dev(weight), argmax, pieces)
    wants = ref.maxout_backward(dy, x, weight, want_argmax, pieces)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, wants):
        _assert_close(g, r, dtype, name)


# --------------------------------------------------------------------------------------
# element-wise activations and dropout
# --------------------------------------------------------------------------------------

ACTIVATIONS = {
    # name: (forward args after x, backward inputs after dy, given x and y)
    "relu": ((), lambda x, y: (y,)),
    "leaky_relu": ((0.1,), lambda x, y: (x, 0.1)),
    "sigmoid": ((), lambda x, y: (y,)),
    "tanh": ((), lambda x, y: (y,)),
    "elu": ((0.7,), lambda x, y: (x, y, 0.7)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_reference(name, dtype, rng):
    x = _normal(rng, (2, 3, 5, 7), dtype) * 4  # 210 elements: the 2 x 32 grid loops 4 times
    x.flat[[0, 1, 2]] = [np.nan, 0.0, 40.0]  # NaN propagates; 0 and saturation are exact
    args, backward_args = ACTIVATIONS[name]
    y = getattr(cu, name + "_forward")(_dev(x), *args)
    want_y = getattr(ref, name + "_forward")(x, *args)
    _assert_close(y, want_y, dtype, "y")

    dy = _normal(rng, x.shape, dtype)
    on_device = [_dev(a) if isinstance(a, np.ndarray) else a for a in backward_args(x, want_y)]
    dx = getattr(cu, name + "_backward")(_dev(dy), *on_device)
    _assert_close(dx, getattr(ref, name + "_backward")(dy, *backward_args(x, want_y)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_mask_is_bitwise_the_reference(p, dtype, rng):
    x = _normal(rng, (3, 5, 7), dtype)
    seed = 2**62 + 12345  # large: seed + i * golden wraps modulo 2**64
    y, mask = cu.dropout_forward(_dev(x), p, seed)
    want_y, want_mask = ref.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(cu.to_numpy(mask), want_mask)
    np.testing.assert_array_equal(cu.to_numpy(y), want_y)
    dy = _normal(rng, x.shape, dtype)
    np.testing.assert_array_equal(
        cu.to_numpy(cu.dropout_backward(_dev(dy), mask)), ref.dropout_backward(dy, want_mask)
    )


def test_dropout_mask_does_not_depend_on_the_launch_shape(monkeypatch, rng):
    x = _dev(_normal(rng, (100,), np.float32))
    _, mask = cu.dropout_forward(x, 0.5, 7)
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 3)
    _, again = cu.dropout_forward(x, 0.5, 7)
    np.testing.assert_array_equal(cu.to_numpy(mask), cu.to_numpy(again))


# --------------------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_matches_reference(training, dtype, rng):
    x = _normal(rng, (2, 3, 5, 7), dtype) * 3 + 1
    weight, bias = _normal(rng, (3,), dtype), _normal(rng, (3,), dtype)
    running_mean = _normal(rng, (3,), dtype)
    running_var = rng.uniform(0.5, 2.0, 3).astype(dtype)
    rm, rv = _dev(running_mean), _dev(running_var)
    got = cu.batchnorm2d_forward(_dev(x), _dev(weight), _dev(bias), rm, rv, 0.1, 1e-5, training)
    wants = ref.batchnorm2d_forward(
        x, weight, bias, running_mean, running_var, 0.1, 1e-5, training
    )
    for name, g, r in zip(("y", "mean", "invstd"), got, wants):
        _assert_close(g, r, dtype, name)
    _assert_close(rm, running_mean, dtype, "running_mean")  # updated in place (training)
    _assert_close(rv, running_var, dtype, "running_var")

    dy = _normal(rng, x.shape, dtype)
    _, mean, invstd = wants
    got = cu.batchnorm2d_backward(_dev(dy), _dev(x), _dev(weight), _dev(mean), _dev(invstd))
    wants = ref.batchnorm2d_backward(dy, x, weight, mean, invstd)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, wants):
        _assert_close(g, r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("pool", [(2, 2), (3, 2)])
def test_batchnorm2d_maxpool2d_forward_is_the_kernels_in_turn(dtype, training, pool, rng):
    x = _normal(rng, (2, 3, 5, 7), dtype) * 3 + 1
    x[0, 0, 0, :2] = 0.5  # a tie
    x[1, 2, 3, 4] = np.nan
    weight, bias = _normal(rng, (3,), dtype), _normal(rng, (3,), dtype)
    stats = [_normal(rng, (3,), dtype), rng.uniform(0.5, 2.0, 3).astype(dtype)]
    args = (0.1, 1e-5, training)
    for relu in (False, True):
        fused_stats, turn_stats = [_dev(s) for s in stats], [_dev(s) for s in stats]
        with cu.count_launches() as launches:
            y, argmax, mean, invstd = cu.batchnorm2d_maxpool2d_forward(
                _dev(x), _dev(weight), _dev(bias), *fused_stats, *args, *pool, relu=relu)
        # the statistics, then the normalisation inside the pooling's launch
        assert sum(launches.values()) == 2, launches
        z, want_mean, want_invstd = cu.batchnorm2d_forward(
            _dev(x), _dev(weight), _dev(bias), *turn_stats, *args)
        want_y, want_argmax = cu.maxpool2d_forward(z, *pool)
        if relu:
            want_y = cu.relu_forward(want_y)
        for got, want in [(y, want_y), (argmax, want_argmax), (mean, want_mean),
                          (invstd, want_invstd), *zip(fused_stats, turn_stats)]:
            np.testing.assert_array_equal(cu.to_numpy(got), cu.to_numpy(want))
        ref_stats = [s.copy() for s in stats]
        ref_y, ref_argmax, ref_mean, _ = ref.batchnorm2d_maxpool2d_forward(
            x, weight, bias, *ref_stats, *args, *pool, relu=relu)
        _assert_close(y, ref_y, dtype, "y")
        _assert_close(mean, ref_mean, dtype, "mean")
        np.testing.assert_array_equal(cu.to_numpy(argmax), ref_argmax)


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------


def _loss_cases(rng, dtype):
    scores = _normal(rng, (3, 5), dtype) * 3
    labels = np.array([4, 0, 2])
    return {
        "softmax_cross_entropy": (scores, (labels,)),
        "multiclass_hinge": (scores, (labels, 1.0)),
        "bce_with_logits": (scores * 10, (rng.uniform(size=scores.shape).astype(dtype),)),
        "mse": (scores, (_normal(rng, scores.shape, dtype),)),
        "l1": (scores, (np.where(np.arange(15).reshape(3, 5) == 7, scores, 0).astype(dtype),)),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name", ["softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse", "l1"]
)
def test_loss_matches_reference(name, dtype, rng):
    scores, args = _loss_cases(rng, dtype)[name]
    on_device = [_dev(a) if isinstance(a, np.ndarray) else a for a in args]
    loss, dscores = getattr(cu, name)(_dev(scores), *on_device)
    want_loss, want_dscores = getattr(ref, name)(scores, *args)
    assert type(loss) is float
    np.testing.assert_allclose(loss, want_loss, rtol=TOL[dtype][0])
    _assert_close(dscores, want_dscores, dtype, "dscores")


def test_loss_accepts_host_labels(rng):
    scores = _normal(rng, (2, 3), np.float64)
    labels = np.array([1, 2])
    loss, _ = cu.softmax_cross_entropy(_dev(scores), labels)
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy(scores, labels)[0], rtol=1e-12)


# --------------------------------------------------------------------------------------
# optimizer updates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)]
)
def test_sgd_update_matches_reference(momentum, nesterov, weight_decay, dtype, rng):
    param, grad = _normal(rng, (9, 11), dtype), _normal(rng, (9, 11), dtype)
    velocity = _normal(rng, (9, 11), dtype)
    p_dev, v_dev = _dev(param), _dev(velocity)
    for _ in range(2):
        v_arg = v_dev if momentum else None
        cu.sgd_update(p_dev, _dev(grad), v_arg, 0.1, momentum, nesterov, weight_decay)
        ref.sgd_update(param, grad, velocity, 0.1, momentum, nesterov, weight_decay)
    _assert_close(p_dev, param, dtype, "param")
    _assert_close(v_dev, velocity, dtype, "velocity")


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, True)])
def test_sgd_update_many_is_sgd_update_in_few_launches(momentum, nesterov, monkeypatch, rng):
    # 19 tensors of assorted shapes (a 16-tensor launch, then a 3-tensor one) against
    # one sgd_update each: the same bits, and 2 launches instead of 19
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)
    shapes = [(3, 4), (7,), (2, 3, 2), (1,), (5, 5)] * 3 + [(4,), (9,), (2, 2), (6, 1)]
    params = [_normal(rng, s, np.float32) for s in shapes]
    grads = [_normal(rng, s, np.float32) for s in shapes]
    vels = [_normal(rng, s, np.float32) for s in shapes]
    fused = ([_dev(p) for p in params], [_dev(v) for v in vels])
    single = ([_dev(p) for p in params], [_dev(v) for v in vels])
    v_fused = fused[1] if momentum else [None] * len(shapes)
    v_single = single[1] if momentum else [None] * len(shapes)
    with cu.count_launches() as launches:
        cu.sgd_update_many(fused[0], [_dev(g) for g in grads], v_fused, 0.1, momentum, nesterov,
                           1e-3)
    assert sum(launches.values()) == 2
    for p, g, v in zip(single[0], grads, v_single):
        cu.sgd_update(p, _dev(g), v, 0.1, momentum, nesterov, 1e-3)
    for a, b in zip(fused[0] + fused[1], single[0] + single[1]):
        np.testing.assert_array_equal(cu.to_numpy(a), cu.to_numpy(b))


def test_adam_update_many_is_adam_update_grouped_by_step(rng):
    # 5 tensors at step 3 and 2 at step 1: two launches, the same bits as one each
    shapes = [(3, 4), (7,), (2, 3, 2), (1,), (5, 5), (4,), (2, 2)]
    steps = [3, 3, 1, 3, 3, 1, 3]
    arrays = {name: [_normal(rng, s, np.float32) for s in shapes] for name in "pgm"}
    arrays["v"] = [np.abs(_normal(rng, s, np.float32)) for s in shapes]
    fused = {k: [_dev(a) for a in arrays[k]] for k in "pmv"}
    single = {k: [_dev(a) for a in arrays[k]] for k in "pmv"}
    grads = [_dev(g) for g in arrays["g"]]
    with cu.count_launches() as launches:
        cu.adam_update_many(fused["p"], grads, fused["m"], fused["v"], 0.01, 0.9, 0.999, 1e-8,
                            1e-3, steps)
    assert launches == {"_adam_many_kernel": 2}
    for i, step in enumerate(steps):
        cu.adam_update(single["p"][i], grads[i], single["m"][i], single["v"][i], 0.01, 0.9,
                       0.999, 1e-8, 1e-3, step)
    for key in "pmv":
        for a, b in zip(fused[key], single[key]):
            np.testing.assert_array_equal(cu.to_numpy(a), cu.to_numpy(b))


def test_sgd_update_many_with_mixed_dtypes_updates_each(rng):
    params = [_normal(rng, (3,), np.float32), _normal(rng, (2, 2), np.float64)]
    grads = [_normal(rng, p.shape, p.dtype) for p in params]
    dev = [_dev(p) for p in params]
    cu.sgd_update_many(dev, [_dev(g) for g in grads], [None, None], 0.5, 0.0, False, 0.0)
    ref.sgd_update_many(params, grads, [None, None], 0.5, 0.0, False, 0.0)
    for d, p in zip(dev, params):
        np.testing.assert_array_equal(cu.to_numpy(d), p)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_matches_reference(dtype, rng):
    param, grad = _normal(rng, (9, 11), dtype), _normal(rng, (9, 11), dtype)
    m, v = np.zeros_like(param), np.zeros_like(param)
    p_dev, m_dev, v_dev = _dev(param), cu.zeros(m.shape, dtype), cu.zeros(v.shape, dtype)
    for step in (1, 2, 3):
        cu.adam_update(p_dev, _dev(grad), m_dev, v_dev, 0.01, 0.9, 0.999, 1e-8, 0.01, step)
        ref.adam_update(param, grad, m, v, 0.01, 0.9, 0.999, 1e-8, 0.01, step)
    for name, g, r in (("param", p_dev, param), ("m", m_dev, m), ("v", v_dev, v)):
        _assert_close(g, r, dtype, name)


@pytest.mark.parametrize("update", ["sgd", "sgd momentum", "sgd many", "adam", "adam many"])
def test_an_infinite_parameter_stays_infinite_without_weight_decay(update):
    # the kernels added weight_decay * param always: 0 * inf made it NaN, where the cpu
    # target and PyTorch (which add the term only when asked) leave it infinite
    param = np.array([np.inf, -np.inf, 1.0], np.float32)
    grad = np.array([0.5, 0.5, 0.5], np.float32)
    host = {k: np.zeros_like(param) for k in "vm"}
    dev = {k: cu.zeros(param.shape, np.float32) for k in "vm"}
    p_dev = _dev(param)
    if update.startswith("sgd"):
        momentum = 0.0 if update == "sgd" else 0.9
        v_dev = dev["v"] if momentum else None
        if update == "sgd many":
            cu.sgd_update_many([p_dev], [_dev(grad)], [None], 0.1, 0.0, False, 0.0)
        else:
            cu.sgd_update(p_dev, _dev(grad), v_dev, 0.1, momentum, False, 0.0)
        ref.sgd_update(param, grad, host["v"] if momentum else None, 0.1, momentum, False, 0.0)
    elif update == "adam":
        cu.adam_update(p_dev, _dev(grad), dev["m"], dev["v"], 0.01, 0.9, 0.999, 1e-8, 0.0, 1)
        ref.adam_update(param, grad, host["m"], host["v"], 0.01, 0.9, 0.999, 1e-8, 0.0, 1)
    else:
        cu.adam_update_many([p_dev], [_dev(grad)], [dev["m"]], [dev["v"]], 0.01, 0.9, 0.999,
                            1e-8, 0.0, [1])
        ref.adam_update(param, grad, host["m"], host["v"], 0.01, 0.9, 0.999, 1e-8, 0.0, 1)
    assert np.isinf(param[:2]).all()
    np.testing.assert_array_equal(cu.to_numpy(p_dev), param)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_backward_keeps_its_precision_far_below_zero(dtype):
    # dy * (y + alpha) cancelled (float32: 4e-4 off at x = -10, 44% at -17, 0 at -20);
    # dy * alpha * exp(x) keeps every digit, as PyTorch's
    x = np.array([-80, -40, -20, -17, -10, -1, 0.5, 100], dtype)
    dy = np.linspace(0.5, 1.5, x.size).astype(dtype)
    y = ref.elu_forward(x, 0.7)
    got = cu.to_numpy(cu.elu_backward(_dev(dy), _dev(x), _dev(y), 0.7))
    want = np.where(x > 0, dy, dy * 0.7 * np.exp(np.minimum(x, 0).astype(np.float64)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=5e-7 if dtype == np.float32 else 2e-15, atol=0)


# --------------------------------------------------------------------------------------
# empty inputs
# --------------------------------------------------------------------------------------


def _on_device(arg):
    if isinstance(arg, list):
        return [_on_device(a) for a in arg]
    return _dev(arg) if isinstance(arg, np.ndarray) else arg


@pytest.fixture
def no_empty_launches(monkeypatch):
    """Under the simulator, a launch of an empty grid or block fails the test, as on a
    GPU (CUDA_ERROR_INVALID_VALUE); the simulator runs none of its threads, silently."""
    if not cu.device.SIMULATOR:
        return
    from numba.cuda.simulator import kernel as simulator

    launch = simulator.FakeCUDAKernel.__call__

    def checked(kernel, *args):
        if not kernel._device and simulator._kernel_context is None:
            assert min(kernel.grid_dim) > 0 and min(kernel.block_dim) > 0, (
                f"{kernel.fn.__name__}[{kernel.grid_dim}, {kernel.block_dim}]")
        return launch(kernel, *args)

    monkeypatch.setattr(simulator.FakeCUDAKernel, "__call__", checked)


# the simulator divides a batch of none's sums by its count of 0 as NumPy scalars, which
# warn; a GPU gives the same NaN silently
@pytest.mark.filterwarnings("ignore:invalid value encountered in (scalar )?divide:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", empty_inputs.NAMES)
def test_an_empty_input_gives_the_reference_results(case, dtype, no_empty_launches):
    """Every function of CONTRACT on an empty input, with no empty launch: the
    reference's shapes, dtypes and values (empty outputs and input gradients, zero
    weight gradients, NaN losses, parameters and running statistics updated as the
    reference updates them, NaN after a batch of none in training); the outputs stay
    on the device."""
    name, args = empty_inputs.cases(dtype)[case]
    on_device = [_on_device(a) for a in args]
    got = empty_inputs.outputs(getattr(cu, name)(*on_device), on_device)
    args = copy.deepcopy(args)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # the reference's np.mean of nothing warns; its NaN is the contract
        warnings.simplefilter("ignore", RuntimeWarning)
        want = empty_inputs.outputs(getattr(ref, name)(*args), args)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, k
        elif isinstance(w, float):
            assert type(g) is float, k
            np.testing.assert_equal(g, w, err_msg=str(k))  # NaN equals NaN
        else:
            on_host = name == "to_numpy" and k == 0  # its result, not its argument
            assert jitnet.targets.is_device_array(g) != on_host, k
            _assert_close(g, w, dtype, str(k))
            zeros = w == 0
            np.testing.assert_array_equal(np.signbit(cu.to_numpy(g)[zeros]),
                                          np.signbit(w[zeros]), err_msg=f"{k}: sign of zero")


# --------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------


def test_available_here_and_device_info():
    assert cu.unavailable_reason() is None
    assert "cuda" in jitnet.available_targets()
    info = cu.device_info()
    assert info["available"] is True and info["reason"] is None
    assert info["simulator"] == cu.SIMULATOR
    for key in ("name", "compute_capability", "driver_version", "runtime_version"):
        assert key in info
    assert info["numba_cuda_version"]


def test_reason_when_the_driver_is_missing(monkeypatch):
    monkeypatch.setattr(cu.device, "SIMULATOR", False)
    monkeypatch.setattr(cu.cuda, "cuda_error", lambda: "\nCUDA driver library cannot be found.\n")
    reason = cu.unavailable_reason()
    assert "CUDA driver library cannot be found" in reason
    assert "NUMBA_ENABLE_CUDASIM=1" in reason  # says what to do
    assert "\n" not in reason
    assert cu.device_info()["reason"] == reason


def test_reason_when_querying_cuda_fails_never_raises(monkeypatch):
    def broken():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(cu.device, "SIMULATOR", False)
    monkeypatch.setattr(cu.cuda, "cuda_error", broken)
    reason = cu.unavailable_reason()
    assert "libcuda.so" in reason and "NUMBA_ENABLE_CUDASIM=1" in reason


def test_reason_when_no_gpu(monkeypatch):
    monkeypatch.setattr(cu.device, "SIMULATOR", False)
    monkeypatch.setattr(cu.cuda, "cuda_error", lambda: None)
    monkeypatch.setattr(cu.cuda, "gpus", [])
    assert "no GPU" in cu.unavailable_reason()


def test_set_target_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(cu, "unavailable_reason", lambda: "no GPU here; try the simulator")
    with pytest.raises(jitnet.TargetUnavailableError, match="no GPU here; try the simulator"):
        jitnet.set_target("cuda")
    assert "cuda" not in jitnet.available_targets()


def test_the_layers_kernel_lookup_asks_about_the_gpu_once_and_set_target_every_time(
        monkeypatch):
    from jitnet import targets

    asked = []
    monkeypatch.setattr(cu, "unavailable_reason", lambda: asked.append(1))
    monkeypatch.setattr(targets, "_MODULES", {})  # as before the first cuda call
    for _ in range(3):
        assert targets.backend("cuda") is cu  # what every layer call does
    assert len(asked) == 1
    jitnet.set_target("cuda")
    jitnet.set_target("cuda")
    assert len(asked) == 3
