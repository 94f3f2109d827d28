"""The ``cpu`` kernels against the NumPy reference, on random odd shapes.

Tolerances are relative to the norm of the expected array: the kernels sum in
a different order from BLAS, so float32 results differ in the last bits.
"""

import copy
import inspect
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitnet.kernels import CONTRACT, cpu
from jitnet.kernels import numpy_ref as ref

import empty_inputs
from cpu_patch import patch_cpu_kernel

DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def assert_close(actual, expected, dtype=None):
    """``|actual - expected| <= rtol * |expected|`` in the 2-norm, same shape and dtype."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    if dtype is not None:
        assert actual.dtype == dtype
    rtol = RTOL[np.dtype(dtype or expected.dtype).type]
    err = np.linalg.norm((actual - expected).ravel().astype(np.float64))
    scale = np.linalg.norm(expected.ravel().astype(np.float64))
    assert err <= rtol * scale + 1e-30, f"relative error {err / max(scale, 1e-30):.3g}"


def assert_all_close(actual, expected, dtype):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e, dtype)


def test_contract_names_and_signatures():
    for name in CONTRACT:
        assert hasattr(cpu, name), name
        assert inspect.signature(getattr(cpu, name)) == inspect.signature(getattr(ref, name)), name


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------


def _conv_case(rng, dtype, n, c, h, w, f, k, stride, padding, groups):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((f, c // groups, k, k)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    return x, weight, bias


def _check_conv(rng, dtype, n, c, h, w, f, k, stride, padding, groups, with_bias=True):
    x, weight, bias = _conv_case(rng, dtype, n, c, h, w, f, k, stride, padding, groups)
    bias = bias if with_bias else None
    y = cpu.conv2d_forward(x, weight, bias, stride, padding, groups)
    assert_close(y, ref.conv2d_forward(x, weight, bias, stride, padding, groups), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = cpu.conv2d_backward(dy, x, weight, stride, padding, groups)
    want = ref.conv2d_backward(dy, x, weight, stride, padding, groups)
    assert_all_close(got, want, dtype)
    # Without the input gradient: no dx, the very same parameter gradients.
    dx, dweight, dbias = cpu.conv2d_backward(dy, x, weight, stride, padding, groups, False)
    assert dx is None
    np.testing.assert_array_equal(dweight, got[1])
    np.testing.assert_array_equal(dbias, got[2])


# (N, C, H, W, F, K, stride, padding, groups): batch of 1, stride 2, padding
# 0..2, kernels 1/3/5, depthwise, groups=2, non-square planes.
CONV_CASES = [
    (1, 3, 7, 9, 4, 3, 1, 1, 1),
    (2, 4, 8, 5, 6, 3, 2, 2, 2),
    (3, 4, 6, 6, 4, 5, 1, 2, 4),  # depthwise
    (2, 6, 5, 7, 4, 1, 2, 0, 2),  # 1x1, strided
    (2, 3, 9, 9, 5, 3, 2, 0, 1),
    (1, 5, 11, 4, 3, 5, 2, 1, 1),
    (2, 3, 32, 32, 8, 3, 1, 1, 1),  # the reference net's first layer, narrower
    (3, 2, 32, 17, 5, 3, 1, 1, 1),  # row weight kernel: blocks of 2 images, the last of 1
    (2, 8, 16, 16, 16, 3, 1, 1, 1),  # the second layer, narrower
    # Stride 1 on both layouts (cpu.conv_rows._rows_pay, cpu.conv._conv_weight_grad): narrow planes
    # take the channel tiles for forward, input and weight gradient.
    (2, 32, 5, 6, 32, 3, 1, 1, 1),
    (1, 4, 5, 33, 7, 3, 1, 2, 1),  # row vectors, 3 column blocks, the last padded
    (2, 16, 8, 9, 36, 3, 1, 1, 1),  # channel-block tiles: Cg*K*K = 144, 36 of 64 lanes
    (2, 32, 6, 7, 72, 3, 1, 1, 2),  # channel-block tiles within two groups
    (2, 16, 8, 9, 20, 3, 1, 1, 1),  # fewer outputs than a channel block: the row kernel
    (1, 16, 4, 32, 40, 3, 1, 1, 1),  # planes 32 wide: the row kernel
    (2, 32, 6, 7, 20, 3, 1, 1, 1),  # input-channel tiles (Cg = 32), 20 of 24 outputs
    (2, 64, 7, 6, 18, 3, 2, 1, 2),  # input-channel tiles, strided, two groups
    # cpu.conv_tiles._to_padded_nhwc copies wide planes or large images by channel
    (1, 5, 6, 34, 8, 3, 2, 1, 1),  # 34 columns
    (1, 64, 16, 17, 8, 3, 2, 1, 1),  # 64 x 16 x 17 elements an image
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_fixed_cases(rng, dtype, case):
    _check_conv(rng, dtype, *case)


@pytest.mark.parametrize("case, rows", [
    ((2, 16, 8, 9, 20, 3, 1, 1, 1), True),  # fewer outputs than a channel block
    ((1, 16, 4, 32, 40, 3, 1, 1, 1), True),  # planes 32 wide
    ((2, 16, 8, 9, 36, 3, 1, 1, 1), False),  # channel-block tiles
    ((2, 32, 8, 9, 20, 3, 1, 1, 1), False),  # input-channel tiles (whole blocks of 32)
    ((2, 3, 8, 9, 20, 3, 1, 1, 1), True),  # short sums (Cg * K * K = 27)
])
def test_stride1_weight_gradient_route(rng, monkeypatch, case, rows):
    # cpu.conv._conv_weight_grad's choice between the row kernel and the tiles, as its
    # docstring's measurements have it
    calls = []
    row_kernel = cpu.conv._conv_weight_grad_rows
    monkeypatch.setattr(cpu.conv, "_conv_weight_grad_rows",
                        lambda *args: calls.append(args) or row_kernel(*args))
    _check_conv(rng, np.float64, *case)
    assert bool(calls) == rows


def test_strided_routes_follow_the_measurements():
    # cpu.conv's choices for the shapes its docstrings measured; weight (F, Cg, K, K)
    pays, sub_pixel = cpu.conv._phases_pay, cpu.conv._sub_pixel_pays
    assert pays("forward", (16, 3, 3, 3), 2) and pays("forward", (128, 64, 1, 1), 2)
    assert not pays("forward", (64, 3, 7, 7), 2) and not pays("forward", (64, 32, 3, 3), 2)
    assert pays("input", (16, 3, 3, 3), 2) and pays("input", (64, 32, 5, 5), 2)
    assert not pays("input", (64, 32, 3, 3), 2)
    assert pays("weight", (16, 8, 3, 3), 2) and pays("weight", (32, 16, 1, 1), 2)
    assert not pays("weight", (32, 16, 3, 3), 2) and not pays("weight", (128, 64, 1, 1), 2)
    assert sub_pixel((32, 16, 3, 3), 2, 1) and sub_pixel((128, 64, 3, 3), 2, 1)
    assert not sub_pixel((32, 3, 3, 3), 2, 1) and not sub_pixel((32, 32, 3, 3), 2, 1)
    assert not sub_pixel((64, 32, 3, 3), 2, 2) and not sub_pixel((128, 64, 1, 1), 2, 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_convolutions_take_their_kernels(rng, monkeypatch, stride):
    calls = []
    for name in ("_depthwise_forward", "_depthwise_input_grad", "_depthwise_weight_grad"):
        kernel = getattr(cpu.conv, name)
        monkeypatch.setattr(cpu.conv, name, lambda *args, name=name, kernel=kernel:
                            calls.append(name) or kernel(*args))
    _check_conv(rng, np.float32, 2, 6, 9, 9, 12, 3, stride, 1, 6)
    # the stride-1 weight gradient stays on the row kernel (as fast)
    assert sorted(set(calls)) == sorted(["_depthwise_forward", "_depthwise_input_grad"]
                                        + (["_depthwise_weight_grad"] if stride > 1 else []))


@pytest.mark.parametrize("route", ["direct", "phases", "sub-pixel"])
@pytest.mark.parametrize(
    "case",
    [
        (2, 3, 9, 11, 5, 3, 2, 1, 1),
        (1, 4, 10, 7, 6, 5, 3, 2, 2),  # stride 3, two groups
        (2, 6, 8, 8, 6, 1, 2, 0, 3),  # 1x1: one phase of four
        (1, 2, 13, 9, 4, 4, 2, 1, 1),  # an even kernel
        (2, 3, 7, 7, 4, 2, 3, 0, 1),  # a kernel smaller than the stride
        (1, 3, 16, 16, 8, 7, 2, 3, 1),  # a 7x7 stem
        (2, 4, 5, 5, 4, 3, 2, 2, 4),  # depthwise, padding past the kernel's reach
    ],
)
def test_strided_conv2d_every_way(rng, monkeypatch, case, route):
    # cpu.conv picks, per gradient, the direct kernels, a stride-1 convolution of the
    # input's phases (_phases_pay, cpu.conv_phases) or, for the input gradient, one
    # stride-1 convolution a phase of dx (_sub_pixel_pays); each must be right.
    monkeypatch.setattr(cpu.conv, "_phases_pay", lambda *args: route == "phases")
    monkeypatch.setattr(cpu.conv, "_sub_pixel_pays", lambda *args: route == "sub-pixel")
    for dtype in DTYPES:
        _check_conv(rng, dtype, *case)


def test_prefetch_for_write_is_a_hint():
    # The first layer's forward asks for its next outputs' cache lines with it
    # (cpu.conv_rows._conv2d_rows): LLVM's prefetch, which changes no value and faults nowhere.
    @numba.njit
    def prefetch_all(a, step):
        for i in range(0, a.size + 64, step):  # past the end too
            cpu.conv_rows._prefetch_for_write(a, np.uint64(i))
        return a.sum()

    for dtype in DTYPES:
        a = np.arange(100, dtype=dtype)
        assert prefetch_all(a, 7) == np.arange(100, dtype=dtype).sum()
        np.testing.assert_array_equal(a, np.arange(100, dtype=dtype))
    assert "llvm.prefetch" in prefetch_all.inspect_llvm(prefetch_all.signatures[0])


@pytest.mark.parametrize(
    "case",
    [
        (2, 3, 9, 20, 8, 3, 1, 1, 1),  # 3x3: two rows at a time, every tile sums the bias
        (3, 2, 7, 9, 5, 3, 1, 0, 1),  # 3x3, 5 output rows (odd), 5 outputs (a tile of 1)
        (2, 6, 7, 9, 6, 3, 1, 1, 6),  # depthwise 3x3: tiles of one output channel
        (2, 3, 9, 20, 8, 1, 1, 0, 1),  # 1x1, 3 triples: the bias rides in a spare slot
        (2, 5, 6, 6, 12, 1, 1, 0, 1),  # 5 triples fill the tile: a separate bias pass
    ],
    ids=["3x3", "3x3-odd-rows", "depthwise-3x3", "spare-slot", "no-spare-slot"],
)
def test_row_weight_gradient_and_its_bias(rng, case):
    n, c, h, w, f, k, s, p, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((f, c // groups, k, k)).astype(np.float32)
    dy = rng.standard_normal((n, f, h + 2 * p - k + 1, w + 2 * p - k + 1)).astype(np.float32)
    _, dweight, dbias = cpu.conv2d_backward(dy, x, weight, s, p, groups, input_grad=False)
    _, want_w, want_b = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                            weight.astype(np.float64), s, p, groups)
    assert_close(dweight, want_w, np.float32)
    assert_close(dbias, want_b, np.float32)


@pytest.mark.parametrize(
    "case",
    [
        (2, 32, 16, 16, 64, 3, 1, 1, 1),  # the reference net's second layer, batch 2
        (2, 32, 6, 7, 20, 3, 1, 1, 1),  # 20 of 24 outputs: the last tile's 4 not stored
        (2, 64, 7, 6, 18, 3, 2, 1, 2),  # strided, two groups of 9 outputs
    ],
    ids=["conv2", "partial-tile", "groups"],
)
@pytest.mark.parametrize("input_grad", [True, False])
def test_channel_tile_weight_gradient_sums_the_bias(rng, monkeypatch, case, input_grad):
    # Whole blocks of 32 input channels: the weight-gradient tiles sum dy's planes
    # for the bias as they go, with no pass of their own (np.sum would be one).
    n, c, h, w, f, k, s, p, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((f, c // groups, k, k)).astype(np.float32)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    dy = rng.standard_normal((n, f, ho, wo)).astype(np.float32)

    def no_pass(dy, dbias):
        raise AssertionError("the bias gradient took a pass of its own")

    patch_cpu_kernel(monkeypatch, "_conv_bias_grad", no_pass)
    _, dweight, dbias = cpu.conv2d_backward(dy, x, weight, s, p, groups, input_grad=input_grad)
    _, want_w, want_b = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                            weight.astype(np.float64), s, p, groups)
    assert_close(dweight, want_w, np.float32)
    assert_close(dbias, want_b, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_without_bias(rng, dtype):
    _check_conv(rng, dtype, 2, 4, 6, 7, 4, 3, 1, 1, 2, with_bias=False)


@st.composite
def conv_shapes(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    f = groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 2, 3, 5]))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * padding), 10))
    w = draw(st.integers(max(1, k - 2 * padding), 10))
    n = draw(st.integers(1, 3))
    return n, c, h, w, f, k, stride, padding, groups


@SETTINGS
@given(shape=conv_shapes(), use_float64=st.booleans())
def test_conv2d_random_shapes(shape, use_float64):
    dtype = np.float64 if use_float64 else np.float32
    _check_conv(np.random.default_rng(sum(shape)), dtype, *shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_is_deterministic(rng, dtype):
    x, weight, bias = _conv_case(rng, dtype, 3, 6, 10, 9, 8, 3, 1, 1, 2)
    y1 = cpu.conv2d_forward(x, weight, bias, 1, 1, 2)
    y2 = cpu.conv2d_forward(x, weight, bias, 1, 1, 2)
    assert np.array_equal(y1, y2)
    dy = rng.standard_normal(y1.shape).astype(dtype)
    g1 = cpu.conv2d_backward(dy, x, weight, 1, 1, 2)
    g2 = cpu.conv2d_backward(dy, x, weight, 1, 1, 2)
    for a, b in zip(g1, g2):
        assert np.array_equal(a, b)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
@pytest.mark.parametrize("case", [
    (4, 3, 32, 32, 32, 3, 1, 1, 1),  # row kernels (the first layer)
    (4, 3, 16, 16, 8, 5, 1, 2, 1),  # the row weight gradient's 4 x 5 tiles (not 3x3)
    (4, 32, 16, 16, 64, 3, 1, 1, 1),  # row kernels, input-channel weight tiles
    (3, 16, 9, 8, 40, 3, 2, 1, 2),  # channel-block tiles
    (3, 16, 9, 8, 72, 3, 1, 1, 2),  # channel-block tiles, stride 1
    (3, 3, 17, 17, 8, 3, 2, 1, 1),  # the phases of a strided convolution
    (3, 16, 17, 17, 8, 3, 2, 1, 1),  # a strided input gradient, a phase of dx at a time
    (3, 8, 17, 17, 8, 3, 2, 1, 8),  # depthwise
    (3, 8, 17, 17, 16, 3, 1, 1, 8),  # depthwise, two outputs a channel
])
def test_results_do_not_depend_on_the_thread_count(rng, case):
    """Chunked reductions sum in a fixed order: 1 thread and all threads agree bit for bit."""
    x, weight, bias = _conv_case(rng, np.float32, *case)
    n, c, h, w, f, k, stride, padding, groups = case
    y = cpu.conv2d_forward(x, weight, bias, stride, padding, groups)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    xf, wf = rng.standard_normal((9, 300), np.float32), rng.standard_normal((70, 300), np.float32)
    dyf = rng.standard_normal((9, 70), np.float32)

    pooled = _pooled_dy(rng, np.float32, *y.shape)  # the sparse kernels

    def run():
        return (cpu.conv2d_forward(x, weight, bias, stride, padding, groups),
                *cpu.conv2d_backward(dy, x, weight, stride, padding, groups),
                *cpu.conv2d_backward(pooled, x, weight, stride, padding, groups),
                cpu.linear_forward(xf, wf, None), *cpu.linear_backward(dyf, xf, wf))

    _assert_same_at_one_thread(run)


def _assert_same_at_one_thread(run):
    """``run()``'s arrays (None skipped) are the same bits at 1 thread and at all."""
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, run()):
        if a is not None or b is not None:
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# the input gradient of a dy routed through a max pooling (mostly zeros)
# --------------------------------------------------------------------------


def _pooled_dy(rng, dtype, n, f, ho, wo, keep=0.75):
    """A 2x2 max pooling's gradient (at most one nonzero per window), with a share
    ``1 - keep`` of the windows zero as after a ReLU."""
    y = rng.standard_normal((n, f, ho, wo)).astype(dtype)
    _, argmax = ref.maxpool2d_forward(y, 2, 2)
    g = rng.standard_normal(argmax.shape).astype(dtype)
    g *= rng.random(g.shape) < keep
    return ref.maxpool2d_backward(g, argmax, y.shape, 2, 2)


def _spy(monkeypatch, name, calls=None):
    """Count the calls of the cpu kernel ``name`` from here on (in ``calls``, when given)."""
    calls = [] if calls is None else calls

    def counted(*args):
        calls.append(name)
        return kernel(*args)

    kernel = patch_cpu_kernel(monkeypatch, name, counted)
    return calls


# (N, C, H, W, F, padding): the reference net's second layer, padding 0 and 2,
# two channel blocks, more than 64 output channels (two mask words), odd planes,
# a batch of 1 and one of 9 (chunks of 3 images, the last one short).
SPARSE_CASES = [
    (2, 32, 16, 16, 64, 1),
    (1, 32, 7, 9, 24, 0),
    (3, 64, 6, 10, 70, 2),
    (9, 32, 5, 4, 20, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPARSE_CASES)
def test_sparse_input_gradient_of_a_pooled_dy(rng, monkeypatch, dtype, case):
    n, c, h, w, f, p = case
    x, weight, _ = _conv_case(rng, dtype, n, c, h, w, f, 3, 1, p, 1)
    dy = _pooled_dy(rng, dtype, n, f, h + 2 * p - 2, w + 2 * p - 2)
    sparse = _spy(monkeypatch, "_conv2d_input_sparse")
    got = cpu.conv2d_backward(dy, x, weight, 1, p, 1)
    assert sparse, "a max pooling's gradient took the dense kernel"
    assert_all_close(got, ref.conv2d_backward(dy, x, weight, 1, p, 1), dtype)


def test_a_dense_dy_takes_the_dense_kernel(rng, monkeypatch):
    x, weight, _ = _conv_case(rng, np.float32, 2, 32, 8, 8, 16, 3, 1, 1, 1)
    dy = _pooled_dy(rng, np.float32, 2, 16, 8, 8, keep=1.0)
    dy[0, :, 0, 0] = 1  # a quarter and a little more nonzero
    sparse = _spy(monkeypatch, "_conv2d_input_sparse")
    got = cpu.conv2d_backward(dy, x, weight, 1, 1, 1)
    assert not sparse
    assert_all_close(got, ref.conv2d_backward(dy, x, weight, 1, 1, 1), np.float32)


@pytest.mark.parametrize("where", ["weight", "x", "dy"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_sparse_input_gradient_keeps_nan_and_inf(rng, monkeypatch, where, bad):
    # A zero of dy times an infinite weight is NaN, which skipping the zero would
    # lose: such a weight sends the input gradient to the dense kernel. A NaN or inf
    # in dy itself is a nonzero like any other, and x does not enter dx. Either way
    # the gradients are the dense kernels' (whose zero padding meets an infinite
    # weight too: NaN at the border where the reference has inf, a difference of
    # their own).
    x, weight, _ = _conv_case(rng, np.float64, 2, 32, 6, 6, 16, 3, 1, 1, 1)
    dy = _pooled_dy(rng, np.float64, 2, 16, 6, 6)
    {"weight": weight, "x": x, "dy": dy}[where][1, 3, 2, 1] = bad
    got = cpu.conv2d_backward(dy, x, weight, 1, 1, 1)
    patch_cpu_kernel(monkeypatch, "_sparse_dy", lambda dy: False)
    dense = cpu.conv2d_backward(dy, x, weight, 1, 1, 1)
    assert not all(np.isfinite(g).all() for g in got)
    for g, e in zip(got, dense):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(e))
        finite = np.isfinite(e)
        assert_close(g[finite], e[finite], np.float64)


def test_sparse_input_gradient_does_not_depend_on_its_chunks(rng):
    dy = _pooled_dy(rng, np.float32, 7, 40, 8, 8)
    weight = rng.standard_normal((40, 32, 3, 3)).astype(np.float32)
    wpk = np.ascontiguousarray(weight.transpose(0, 2, 3, 1))
    results = []
    for n_chunks in (1, 3, 7):
        dx = np.empty((7, 32, 8, 8), np.float32)
        none = np.empty((0, 0, 0), np.float32)
        cpu.conv_pooled._conv2d_input_sparse(dy, wpk, dx, 1, n_chunks,
                                 np.empty((n_chunks, 40, 64), np.float32), none, none,
                                 np.empty((0, 0, 0), np.int32))
        results.append(dx)
    for dx in results[1:]:
        np.testing.assert_array_equal(dx, results[0])


@pytest.mark.parametrize("dilate", [1, 2])
def test_padded_channel_last_copy(rng, dilate):
    # Every element of xh written (it starts as NaN): the padding as zeros, a negative
    # offset cropping, groups channel-last each, a dilation spreading the pixels.
    for n, groups, cg, h, w, top, left, hp, wp in [
        (2, 1, 3, 5, 4, 1, 1, 7, 6), (1, 2, 3, 4, 6, -1, 2, 5, 9), (3, 3, 1, 3, 3, 2, -2, 8, 2),
        (1, 1, 5, 2, 2, 0, 0, 2, 2), (2, 2, 2, 3, 5, 4, 7, 3, 4),
    ]:
        x = rng.standard_normal((n, groups * cg, h, w)).astype(np.float32)
        want = np.zeros((n, groups, hp, wp, cg), np.float32)
        for i in range(h):
            for j in range(w):
                hh, ww = top + i * dilate, left + j * dilate
                if 0 <= hh < hp and 0 <= ww < wp:
                    want[:, :, hh, ww] = x[:, :, i, j].reshape(n, groups, cg)
        xh = np.full((n, groups, hp, wp * cg), np.nan, np.float32)
        cpu.conv_tiles._to_padded_nhwc(x, xh, top, left, dilate, dilate)
        np.testing.assert_array_equal(xh, want.reshape(xh.shape))


def test_conv2d_matches_torch_float64(rng):
    torch = pytest.importorskip("torch")
    x, weight, bias = _conv_case(rng, np.float64, 2, 4, 9, 7, 6, 3, 2, 1, 2)
    y = cpu.conv2d_forward(x, weight, bias, 2, 1, 2)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(weight, requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1, groups=2)
    assert_close(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    dx, dw, db = cpu.conv2d_backward(dy, x, weight, 2, 1, 2)
    assert_all_close((dx, dw, db), (tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()), np.float64)


def _conv_relu_pool_in_torch(rng, n, c, h, w, f):
    """A 3x3 convolution (padding 1), ReLU and 2x2 max pooling, forward on the cpu
    target (checked against PyTorch) and backward in PyTorch, in float64:
    ``x, weight, pooled, argmax, g`` (the pooled output's gradient) and PyTorch's
    ``(dx, dweight, dbias)``."""
    torch = pytest.importorskip("torch")
    x, weight, bias = _conv_case(rng, np.float64, n, c, h, w, f, 3, 1, 1, 1)
    pooled, argmax = cpu.conv2d_maxpool2d_forward(x, weight, bias, 1, 1, 1, 2, 2, relu=True)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    tp = torch.relu(torch.nn.functional.max_pool2d(
        torch.nn.functional.conv2d(tx, tw, tb, padding=1), 2))
    assert_close(pooled, tp.detach().numpy())
    g = rng.standard_normal(pooled.shape)
    tp.backward(torch.tensor(g))
    return x, weight, pooled, argmax, g, (tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())


def test_conv_relu_pool_backward_matches_torch_float64(rng, monkeypatch):
    # The reference net's second layer as a training step runs it: the convolution's
    # gradient comes through the max pooling and the ReLU and takes the sparse kernel.
    x, weight, pooled, argmax, g, want = _conv_relu_pool_in_torch(rng, 3, 32, 10, 8, 64)
    dy = cpu.maxpool2d_relu_backward(g, pooled, argmax, (3, 64, 10, 8), 2, 2)
    sparse = _spy(monkeypatch, "_conv2d_input_sparse")
    dx, dw, db = cpu.conv2d_backward(dy, x, weight, 1, 1, 1)
    assert sparse
    assert_all_close((dx, dw, db), want, np.float64)



# --------------------------------------------------------------------------
# a convolution's gradients from its max pooling's (conv2d_maxpool2d_backward)
# --------------------------------------------------------------------------


def _pooled_case(rng, dtype, n, c, h, w, f, k, padding, relu, stride=1, groups=1, pool=(2, 2)):
    """A convolution, its pooling (and ReLU) forward, and the pooling's gradient."""
    x, weight, bias = _conv_case(rng, dtype, n, c, h, w, f, k, stride, padding, groups)
    y, argmax = cpu.conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, *pool,
                                             relu=relu)
    g = rng.standard_normal(y.shape).astype(dtype)
    return x, weight, y, argmax, g


def _the_calls(g, x, weight, y, argmax, stride, padding, groups, pool, relu, input_grad,
               module=cpu):
    """The pooling's (and ReLU's) backward then the convolution's, one call each."""
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    conv_shape = (n, f, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1)
    if relu:
        dconv = module.maxpool2d_relu_backward(g, y, argmax, conv_shape, *pool)
    else:
        dconv = module.maxpool2d_backward(g, argmax, conv_shape, *pool)
    return module.conv2d_backward(dconv, x, weight, stride, padding, groups, input_grad)


# (N, C, H, W, F, K, padding). Rows that fit a vector (_conv2d_weight_pooled): the
# reference net's first layer, one grey channel, the widest rows a vector holds (4 x 4
# channels), a 5x5 and a 1x1 kernel (two passes of three kernel rows; rows past the
# kernel read and not used), even kernels, odd planes (an unpooled last row and
# column), 9 images (a short block), 13 channels (a short tile). Channels in whole
# blocks (_conv2d_weight_pooled_taps): the reference net's second layer, two blocks,
# 25 taps (three tap groups, the last one short), one tap, 9 images.
POOLED_CASES = [
    (3, 3, 32, 32, 32, 3, 1),
    (9, 1, 9, 7, 13, 3, 0),
    (2, 4, 7, 8, 6, 4, 1),
    (2, 3, 10, 11, 5, 5, 2),
    (2, 5, 6, 6, 4, 1, 0),
    (1, 2, 8, 9, 9, 2, 1),
    (2, 32, 16, 16, 64, 3, 1),
    (3, 64, 6, 10, 20, 3, 2),
    (2, 32, 7, 9, 5, 5, 2),
    (2, 32, 6, 6, 4, 1, 0),
    (9, 32, 5, 4, 20, 3, 1),
]
_WINDOW_KERNELS = ("_conv2d_weight_pooled", "_conv2d_weight_pooled_taps")


def _spy_windows(monkeypatch):
    """Count the calls of the two window kernels from here on."""
    calls = []
    for name in _WINDOW_KERNELS:
        calls = _spy(monkeypatch, name, calls)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOLED_CASES)
@pytest.mark.parametrize("relu, input_grad", [(True, False), (False, True), (True, True)])
def test_weight_gradient_from_the_pooling_windows(rng, monkeypatch, dtype, case, relu,
                                                  input_grad):
    n, c, h, w, f, k, p = case
    x, weight, y, argmax, g = _pooled_case(rng, dtype, n, c, h, w, f, k, p, relu)
    calls = _spy_windows(monkeypatch)
    dense_dy = _spy(monkeypatch, "_route_to_argmax")
    got = cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, p, 1, 2, 2, input_grad,
                                        y if relu else None)
    narrow = k * c <= cpu.conv_pooled._POOLED_LANES
    assert calls == [_WINDOW_KERNELS[0 if narrow else 1]], "the weight gradient took the calls"
    # where the sparse kernel applies (whole channel blocks and tap tiles) the input
    # gradient takes the windows too, no dense dy; the same bits as from the calls'
    # dense dy either way
    sparse = c % cpu._tiles._FB == 0 and (k * k) % cpu.conv_pooled._SPARSE_TAPS == 0
    assert bool(dense_dy) == (input_grad and not sparse)
    want = ref.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, p, 1, 2, 2, input_grad,
                                         y if relu else None)
    if input_grad:
        calls_dx = _the_calls(g, x, weight, y, argmax, 1, p, 1, (2, 2), relu, True)[0]
        np.testing.assert_array_equal(got[0], calls_dx)
    else:
        assert got[0] is None and want[0] is None
    assert_all_close(got[1:], want[1:], dtype)


@pytest.mark.parametrize("case", [
    # (N, C, H, W, F, K, stride, padding, groups, pool): rows wider than a vector and
    # channels in no whole block, strided, grouped, overlapping and 3x3 poolings
    (2, 8, 8, 8, 16, 3, 1, 1, 1, (2, 2)),
    (2, 3, 9, 9, 4, 3, 2, 1, 1, (2, 2)),
    (2, 4, 8, 8, 4, 3, 1, 1, 2, (2, 2)),
    (2, 3, 8, 8, 4, 3, 1, 1, 1, (2, 1)),
    (2, 3, 9, 9, 4, 3, 1, 1, 1, (3, 3)),
])
@pytest.mark.parametrize("relu", [False, True])
def test_other_poolings_take_the_calls_bit_for_bit(rng, monkeypatch, case, relu):
    n, c, h, w, f, k, s, p, groups, pool = case
    x, weight, y, argmax, g = _pooled_case(rng, np.float32, n, c, h, w, f, k, p, relu, s,
                                           groups, pool)
    calls = _spy_windows(monkeypatch)
    got = cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, s, p, groups, *pool, True,
                                        y if relu else None)
    assert not calls
    for a, b in zip(got, _the_calls(g, x, weight, y, argmax, s, p, groups, pool, relu, True)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("c", [3, 32])
@pytest.mark.parametrize("where", ["x", "g"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_weight_gradient_from_the_pooling_windows_keeps_nan_and_inf(rng, monkeypatch, c, where,
                                                                     bad):
    # The dense kernel multiplies every zero of dy by the input: an infinite or NaN x
    # makes NaN there, which the windows would miss; such an x takes the calls, bit
    # for bit. A NaN or inf in the pooling's gradient reaches the weight gradient the
    # same way both ways, and the input gradient too (with 32 channels from the
    # windows as well).
    x, weight, y, argmax, g = _pooled_case(rng, np.float64, 2, c, 8, 8, 4, 3, 1, True)
    if where == "x":
        x[1, 2, 3, 4] = bad
    else:
        g[1, 2, 1, 2] = bad
        y[1, 2, 1, 2] = 1.0  # a window the ReLU lets through
    calls = _spy_windows(monkeypatch)
    got = cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, 1, 1, 2, 2, True, y)
    want = _the_calls(g, x, weight, y, argmax, 1, 1, 1, (2, 2), True, True)
    assert bool(calls) == (where == "g")
    assert not all(np.isfinite(a).all() for a in got[1:])
    for a, e in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        finite = np.isfinite(e)
        assert_close(a[finite], e[finite], np.float64)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
@pytest.mark.parametrize("c", [3, 32])
def test_weight_gradient_from_the_pooling_windows_does_not_depend_on_the_thread_count(rng, c):
    x, weight, y, argmax, g = _pooled_case(rng, np.float32, 19, c, 12, 12, 10, 3, 1, True)
    _assert_same_at_one_thread(
        lambda: cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, 1, 1, 2, 2, False, y))


@pytest.mark.parametrize("c, f", [(3, 8), (32, 64)])
def test_gradients_from_the_pooling_windows_match_torch_float64(rng, monkeypatch, c, f):
    # The reference net's layers as a training step runs them: convolution, ReLU and
    # pooling, the weight and bias gradients from the pooling's windows.
    x, weight, pooled, argmax, g, want = _conv_relu_pool_in_torch(rng, 3, c, 10, 8, f)
    calls = _spy_windows(monkeypatch)
    got = cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, 1, 1, 2, 2, True, pooled)
    assert calls
    assert_all_close(got, want, np.float64)


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------


def _check_pool(x, k, s):
    y, argmax = cpu.maxpool2d_forward(x, k, s)
    y_ref, argmax_ref = ref.maxpool2d_forward(x, k, s)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = np.random.default_rng(0).standard_normal(y.shape).astype(x.dtype)
    dx = cpu.maxpool2d_backward(dy, argmax, x.shape)
    assert_close(dx, ref.maxpool2d_backward(dy, argmax, x.shape), x.dtype)


@st.composite
def pool_shapes(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 4))
    h = draw(st.integers(k, 11))
    w = draw(st.integers(k, 11))
    return draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w, k, s


@SETTINGS
@given(shape=pool_shapes(), use_float64=st.booleans(), ties=st.booleans())
def test_maxpool2d_random_shapes(shape, use_float64, ties):
    n, c, h, w, k, s = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c, h, w))
    if ties:  # few distinct values: ties everywhere, the first maximum must win
        x = np.round(x)
    _check_pool(x.astype(np.float64 if use_float64 else np.float32), k, s)


def test_maxpool2d_overlapping_windows_add_gradients(rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    _check_pool(x, 3, 1)
    _check_pool(np.zeros((1, 2, 5, 5), np.float32), 3, 1)  # all ties


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_2x2_fast_path_odd_sizes_and_ties(rng, dtype):
    x = np.round(rng.standard_normal((2, 3, 7, 9))).astype(dtype)  # odd sizes, many ties
    _check_pool(x, 2, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, weight_shape, stride, padding, groups, pool",
    [
        ((3, 3, 32, 32), (32, 3, 3, 3), 1, 1, 1, (2, 2)),  # the reference net's layers
        ((2, 32, 16, 16), (64, 32, 3, 3), 1, 1, 1, (2, 2)),
        ((2, 5, 13, 11), (7, 5, 3, 3), 1, 1, 1, (2, 2)),  # odd rows and columns
        ((2, 4, 9, 20), (6, 2, 3, 3), 1, 0, 2, (2, 2)),  # groups, no padding
        ((1, 2, 34, 40), (9, 2, 5, 5), 1, 2, 1, (2, 2)),  # 5x5, ragged channel tile
        ((2, 3, 12, 12), (8, 3, 3, 3), 1, 1, 1, (3, 2)),  # overlapping: the two kernels
        ((2, 3, 12, 12), (8, 3, 3, 3), 2, 1, 1, (2, 2)),  # strided: the two kernels
    ],
)
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_maxpool2d_forward_is_the_two_kernels_bit_for_bit(
    rng, dtype, shape, weight_shape, stride, padding, groups, pool, relu
):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :4] = np.nan  # NaN windows: the first NaN must win, as in the pooling
    x[-1, -1] = np.round(x[-1, -1])  # ties
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[0]).astype(dtype)
    y, argmax = cpu.conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, *pool,
                                             relu=relu)
    want_y, want_argmax = cpu.maxpool2d_forward(
        cpu.conv2d_forward(x, weight, bias, stride, padding, groups), *pool
    )
    if relu:  # and the ReLU of the pooling: zeros where not positive, NaN kept
        want_y = cpu.relu_forward(want_y)
        assert (y == 0).any() and (y > 0).any()
    assert y.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    ref_y, ref_argmax = ref.conv2d_maxpool2d_forward(
        x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64),
        stride, padding, groups, *pool, relu=relu,
    )
    finite = ~np.isnan(ref_y)
    np.testing.assert_allclose(y[finite], ref_y[finite], rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.isnan(y), ~finite)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, stride", [(2, 2), (3, 2), (2, 1)])
def test_maxpool2d_relu_backward_is_the_two_kernels_bit_for_bit(rng, dtype, k, stride):
    x = np.round(rng.standard_normal((2, 3, 7, 9)), 1).astype(dtype)  # ties, zeros
    x[0, 0, 0, :4] = np.nan
    y, argmax = cpu.maxpool2d_forward(x, k, stride)
    r = cpu.relu_forward(y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = cpu.maxpool2d_backward(cpu.relu_backward(dy, r), argmax, x.shape)
    got = cpu.maxpool2d_relu_backward(dy, r, argmax, x.shape, k, stride)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    # the reference adds overlapping windows' gradients in float64
    assert_close(got, ref.maxpool2d_relu_backward(dy, r, argmax, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 2, 7, 33), (2, 1, 5, 64)])
@pytest.mark.parametrize("relu", [False, True])
def test_maxpool2x2_backward_gathers_what_the_scatter_adds(rng, dtype, shape, relu, monkeypatch):
    # 2x2 windows of stride 2 on rows of 16 or 32 windows, odd rows and columns
    # (in no window) included: the gather, bit for bit the scatter's values.
    x = np.round(rng.standard_normal(shape), 1).astype(dtype)  # ties, zeros
    x[0, 0, 0, :4] = np.nan
    y, argmax = cpu.maxpool2d_forward(x, 2, 2)
    r = cpu.relu_forward(y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy[0, 0, 1, :3] = np.nan
    if relu:
        want = cpu.maxpool2d_relu_backward(dy, r, argmax, x.shape)  # no window: the scatter
        want_ref = ref.maxpool2d_relu_backward(dy, r, argmax, x.shape)
    else:
        want = cpu.maxpool2d_backward(dy, argmax, x.shape)
        want_ref = ref.maxpool2d_backward(dy, argmax, x.shape)

    def no_scatter(*args):
        raise AssertionError("the scatter ran")

    patch_cpu_kernel(monkeypatch, "_maxpool2d_backward", no_scatter)
    for stride in (2, None, (2, 2)):
        if relu:
            got = cpu.maxpool2d_relu_backward(dy, r, argmax, x.shape, 2, stride)
        else:
            got = cpu.maxpool2d_backward(dy, argmax, x.shape, (2, 2), stride)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want_ref))
        assert_close(np.nan_to_num(got), np.nan_to_num(want_ref), dtype)


def test_maxpool2x2_backward_scatters_short_rows(rng, monkeypatch):
    # rows of 8 windows: the gather's loop would run one window at a time
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    y, argmax = cpu.maxpool2d_forward(x, 2, 2)
    dy = rng.standard_normal(y.shape).astype(np.float32)

    def no_gather(*args):
        raise AssertionError("the gather ran")

    patch_cpu_kernel(monkeypatch, "_maxpool2x2_backward", no_gather)
    got = cpu.maxpool2d_backward(dy, argmax, x.shape, 2, 2)
    assert_close(got, ref.maxpool2d_backward(dy, argmax, x.shape), np.float32)


def test_maxpool2d_propagates_nan(rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 0, 1] = np.nan
    y, argmax = cpu.maxpool2d_forward(x, 2, 2)
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1  # first NaN wins
    assert not np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("top, left, dst_hw", [(1, 1, (7, 8)), (0, 0, (5, 16)), (2, 3, (6, 5)),
                                               (-1, -2, (3, 4)), (9, 12, (4, 4))], ids=str)
def test_pad_planes(rng, copies, top, left, dst_hw):
    # The padded copies of the row kernels: zeros around src's planes, the corner
    # at (top, left), cut to dst's size; offsets below zero crop src. Every copy
    # the same (the weight gradient's, one per thread), and a dst channel past
    # src's all ones (its bias slot's plane).
    src = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    dst = np.full((copies, 2, 4) + dst_hw, 7.0, dtype=np.float32)
    cpu.conv_rows._pad_planes(src, dst, top, left)
    want = np.zeros((2, 3) + dst_hw, dtype=np.float32)
    for i in range(dst_hw[0]):
        for j in range(dst_hw[1]):
            if 0 <= i - top < 5 and 0 <= j - left < 6:
                want[:, :, i, j] = src[:, :, i - top, j - left]
    for k in range(copies):
        np.testing.assert_array_equal(dst[k, :, :3], want)
        assert (dst[k, :, 3] == 1.0).all()


# --------------------------------------------------------------------------
# fully connected and maxout
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear(rng, dtype, with_bias):
    x = rng.standard_normal((5, 7)).astype(dtype)
    weight = rng.standard_normal((3, 7)).astype(dtype)
    bias = rng.standard_normal(3).astype(dtype) if with_bias else None
    assert_close(cpu.linear_forward(x, weight, bias), ref.linear_forward(x, weight, bias), dtype)
    dy = rng.standard_normal((5, 3)).astype(dtype)
    got = cpu.linear_backward(dy, x, weight)
    assert_all_close(got, ref.linear_backward(dy, x, weight), dtype)
    dx, dweight, dbias = cpu.linear_backward(dy, x, weight, input_grad=False)
    assert dx is None
    np.testing.assert_array_equal(dweight, got[1])
    np.testing.assert_array_equal(dbias, got[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 7, 3), (9, 300, 64), (130, 70, 64), (200, 600, 31),
                                   (3, 0, 5)], ids=str)
def test_matmul_packed_or_not_gives_the_same_bits(rng, dtype, shape):
    # (I, K, J): one row tile; two reduction panels; 17 row tiles, which _matmul packs
    # b for; a last column block padded with zeros; no reduction at all.
    i, k, j = shape
    a = rng.standard_normal((i, k)).astype(dtype)
    b = rng.standard_normal((k, j)).astype(dtype)
    c = cpu.linear._matmul(a, b, dtype)
    assert_close(c, a.astype(np.float64) @ b, dtype)
    np.testing.assert_array_equal(cpu.linear._matmul(a, b.T.copy(), dtype, b_transposed=True), c)
    if k == 0:
        return  # (_gemm itself needs a reduction)
    # Both of _gemm's layouts of b, where b's own is one (whole column blocks).
    cols, rows = cpu.linear._GEMM_COLS, cpu._tiles._PIX  # the tile: 32 x 8 or 16 x 4 (vector width)
    jb = -(-j // cols) * cols
    bb = np.zeros((k, jb), dtype=dtype)
    bb[:, :j] = b
    packed = np.empty((jb // cols, k, cols), dtype=dtype)
    cpu.linear._pack_columns(bb, False, packed)
    np.testing.assert_array_equal(packed, bb.reshape(k, -1, cols).transpose(1, 0, 2))
    n_tiles = -(-i // rows) * (jb // cols)
    part = np.empty((n_tiles, rows, cols), dtype=dtype)
    for column_major in (False, True):
        for bf, k_step, cb_step in ((bb, jb, cols), (packed, cols, cols * k)):
            out = np.full((i, j), np.nan, dtype=dtype)
            cpu.linear._gemm(a, bf.reshape(-1), k_step, cb_step, out, column_major, 3, part)
            np.testing.assert_array_equal(out, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("j", [1, 8, 15, 16, 17, 31, 32, 33, 47, 64, 70])
def test_pack_columns_of_a_transposed_operand(rng, dtype, j):
    # linear_forward's x (batch j): every column copied and the padding zeroed, whichever
    # thread owns which columns (iterations own whole cache lines of the packed block)
    k, cols = 37, cpu.linear._GEMM_COLS
    b = rng.standard_normal((j, k)).astype(dtype)
    n_cb = -(-j // cols)
    packed = np.full((n_cb, k, cols), np.nan, dtype=dtype)
    cpu.linear._pack_columns(b, True, packed)
    want = np.zeros((k, n_cb * cols), dtype=dtype)
    want[:, :j] = b.T
    np.testing.assert_array_equal(packed, want.reshape(k, n_cb, cols).transpose(1, 0, 2))


@pytest.mark.parametrize("module", [cpu, ref], ids=["cpu", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_its_relu_is_the_two_kernels_bit_for_bit(rng, module, dtype):
    x = rng.standard_normal((70, 9)).astype(dtype)  # a batch past 64: the GEMM's row tiles
    x[3] = 0  # outputs equal to the bias, and to -0.0 with a zero bias
    x[5, 2] = np.nan
    weight = rng.standard_normal((40, 9)).astype(dtype)
    for bias in (rng.standard_normal(40).astype(dtype), None):
        y = module.linear_forward(x, weight, bias, relu=True)
        np.testing.assert_array_equal(y, module.relu_forward(module.linear_forward(x, weight,
                                                                                   bias)))
        assert np.isnan(y[5]).all() and (y >= 0)[~np.isnan(y)].all()
    relu_y = module.relu_forward(rng.standard_normal((70, 40)).astype(dtype))
    relu_y[:, 0] = np.nan  # a NaN output lets no gradient through, as relu_backward
    dy = rng.standard_normal((70, 9)).astype(dtype)
    got = module.linear_backward(dy, relu_y, weight.T.copy(), relu_y=relu_y)
    plain = module.linear_backward(dy, relu_y, weight.T.copy())
    np.testing.assert_array_equal(got[0], module.relu_backward(plain[0], relu_y))
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[2], plain[2])
    assert module.linear_backward(dy, relu_y, weight.T.copy(), False, relu_y=relu_y)[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxout(rng, dtype):
    x = rng.standard_normal((4, 6)).astype(dtype)
    weight = rng.standard_normal((5 * 3, 6)).astype(dtype)
    bias = rng.standard_normal(15).astype(dtype)
    y, argmax = cpu.maxout_forward(x, weight, bias, 3)
    y_ref, argmax_ref = ref.maxout_forward(x, weight, bias, 3)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert_close(y, y_ref, dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = cpu.maxout_backward(dy, x, weight, argmax, 3)
    assert_all_close(got, ref.maxout_backward(dy, x, weight, argmax, 3), dtype)


@pytest.mark.parametrize("module", [cpu, ref], ids=["cpu", "numpy"])
def test_an_empty_batch_gives_empty_results(module):
    """N = 0: empty outputs and input gradients, zero weight gradients (the cpu matrix
    product divided by its tile count, the reference's maxout reshaped with -1)."""
    x = np.zeros((0, 6), np.float32)
    weight = np.ones((15, 6), np.float32)
    bias = np.ones(15, np.float32)
    assert module.linear_forward(x, weight, bias).shape == (0, 15)
    dx, dweight, dbias = module.linear_backward(np.zeros((0, 15), np.float32), x, weight)
    assert dx.shape == (0, 6) and not dweight.any() and not dbias.any()
    y, argmax = module.maxout_forward(x, weight, bias, 3)
    assert y.shape == argmax.shape == (0, 5)
    dx, dweight, dbias = module.maxout_backward(y, x, weight, argmax, 3)
    assert dx.shape == (0, 6) and dweight.shape == (15, 6) and not dweight.any()
    images = np.zeros((0, 3, 8, 8), np.float32)
    kernel = np.ones((4, 3, 3, 3), np.float32)
    assert module.conv2d_forward(images, kernel, bias[:4], 1, 1, 1).shape == (0, 4, 8, 8)
    assert module.maxpool2d_forward(images, 2, 2)[0].shape == (0, 3, 4, 4)


def _call_on_empty(module, name, args):
    args = copy.deepcopy(args)
    quiet = module is not ref  # the reference's mean of nothing warns; its NaN is the contract
    with np.errstate(all="raise" if quiet else "ignore"), warnings.catch_warnings():
        warnings.simplefilter("error" if quiet else "ignore")
        result = getattr(module, name)(*args)
    return empty_inputs.outputs(result, args)


def _assert_same_outputs(got, want, dtype):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, k
            continue
        if isinstance(w, float):
            assert isinstance(g, float), k
            np.testing.assert_equal(g, w, err_msg=str(k))  # NaN equals NaN
            continue
        g, w = np.asarray(g), np.asarray(w)
        assert (g.shape, g.dtype) == (w.shape, w.dtype), k
        np.testing.assert_allclose(g, w, rtol=RTOL[dtype], atol=0, err_msg=str(k))
        zeros = w == 0
        np.testing.assert_array_equal(np.signbit(g[zeros]), np.signbit(w[zeros]),
                                      err_msg=f"{k}: the sign of zero")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", empty_inputs.NAMES)
def test_an_empty_input_gives_the_reference_results(case, dtype):
    """Every function of CONTRACT on an empty input, without a warning: the reference's
    shapes, dtypes and values (empty outputs and input gradients, zero weight gradients,
    NaN losses, parameters and running statistics updated as the reference updates
    them, NaN after a batch of none in training)."""
    name, args = empty_inputs.cases(dtype)[case]
    _assert_same_outputs(_call_on_empty(cpu, name, args), _call_on_empty(ref, name, args),
                         dtype)


# --------------------------------------------------------------------------
# activations, dropout, batch norm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 110, 110)])  # serial, parallel kernel
def test_activations(rng, dtype, shape):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x[0, 0, 0] = 0
    dy = rng.standard_normal(x.shape).astype(dtype)
    for name in ("relu", "sigmoid", "tanh"):
        y = getattr(cpu, name + "_forward")(x)
        assert_close(y, getattr(ref, name + "_forward")(x), dtype)
        dx = getattr(cpu, name + "_backward")(dy, y)
        assert_close(dx, getattr(ref, name + "_backward")(dy, y), dtype)
    assert_close(cpu.leaky_relu_forward(x, 0.1), ref.leaky_relu_forward(x, 0.1), dtype)
    assert_close(cpu.leaky_relu_backward(dy, x, 0.1), ref.leaky_relu_backward(dy, x, 0.1), dtype)
    y = cpu.elu_forward(x, 0.7)
    assert_close(y, ref.elu_forward(x, 0.7), dtype)
    assert_close(cpu.elu_backward(dy, x, y, 0.7), ref.elu_backward(dy, x, y, 0.7), dtype)


def test_relu_propagates_nan():
    y = cpu.relu_forward(np.array([np.nan, -1.0, 2.0], np.float32))
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


def test_elementwise_kernels_run_serially_on_small_arrays_only(monkeypatch):
    ran = []
    kernel = cpu.activations._relu_forward
    # two compilations of one function, kept apart in Numba's on-disk cache by name
    assert kernel.serial.py_func.__qualname__ == "_relu_forward_serial"
    assert kernel.parallel.targetoptions["parallel"]
    assert not kernel.serial.targetoptions.get("parallel")
    for name in ("parallel", "serial"):
        compiled = getattr(kernel, name)
        monkeypatch.setattr(kernel, name,
                            lambda *args, name=name, compiled=compiled: ran.append(name)
                            or compiled(*args))
    small = cpu.activations._PARALLEL_MIN_ELEMENTS - 1
    for n in (small, small + 1):
        np.testing.assert_array_equal(cpu.relu_forward(np.arange(n, dtype=np.float32) - 9),
                                      np.maximum(np.arange(n, dtype=np.float32) - 9, 0))
    assert ran == ["serial", "parallel"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_mask_is_bitwise_the_reference(rng, dtype, p):
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    y, mask = cpu.dropout_forward(x, p, 2**62 + 12345)
    y_ref, mask_ref = ref.dropout_forward(x, p, 2**62 + 12345)
    assert mask.dtype == dtype
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(cpu.dropout_backward(dy, mask), ref.dropout_backward(dy, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d(rng, dtype, training):
    x = (rng.standard_normal((3, 4, 5, 6)) + 2).astype(dtype)
    weight = rng.standard_normal(4).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    stats = [rng.standard_normal(4).astype(dtype), (rng.random(4) + 0.5).astype(dtype)]
    stats_ref = [s.copy() for s in stats]
    got = cpu.batchnorm2d_forward(x, weight, bias, *stats, 0.1, 1e-5, training)
    want = ref.batchnorm2d_forward(x, weight, bias, *stats_ref, 0.1, 1e-5, training)
    assert_all_close(got, want, dtype)
    assert_all_close(stats, stats_ref, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    got = cpu.batchnorm2d_backward(dy, x, weight, want[1], want[2])
    assert_all_close(got, ref.batchnorm2d_backward(dy, x, weight, want[1], want[2]), dtype)


@pytest.mark.parametrize("module", [cpu, ref], ids=["cpu", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape, pool", [((3, 4, 6, 8), (2, 2)), ((2, 3, 7, 5), (2, 2)),
                                         ((2, 3, 7, 7), (3, 2))])
def test_batchnorm2d_maxpool2d_forward_is_the_kernels_in_turn_bit_for_bit(
    rng, module, dtype, training, shape, pool
):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = 0.5  # a tie
    x[1, 1, 2, 3] = np.nan
    c = shape[1]
    weight = rng.standard_normal(c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    stats = [rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)]
    for relu in (False, True):
        fused_stats = [s.copy() for s in stats]
        y, argmax, mean, invstd = module.batchnorm2d_maxpool2d_forward(
            x, weight, bias, *fused_stats, 0.1, 1e-5, training, *pool, relu=relu)
        turn_stats = [s.copy() for s in stats]
        z, want_mean, want_invstd = module.batchnorm2d_forward(x, weight, bias, *turn_stats,
                                                               0.1, 1e-5, training)
        want_y, want_argmax = module.maxpool2d_forward(z, *pool)
        if relu:
            want_y = module.relu_forward(want_y)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(argmax, want_argmax)
        np.testing.assert_array_equal(mean, want_mean)
        np.testing.assert_array_equal(invstd, want_invstd)
        for a, b in zip(fused_stats, turn_stats):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm2d_statistics_of_a_large_mean_do_not_cancel(rng, dtype):
    # One pass of float64 sums: shifted by each channel's first value, the sum of
    # squares keeps the spread of values near 1000 with a standard deviation of 1e-2.
    x = (1000 + 1e-2 * rng.standard_normal((4, 3, 6, 7))).astype(dtype)
    x[:, 1] = 7  # a constant channel: variance 0, not a negative rounding error
    mean64 = np.empty(3)
    var64 = np.empty(3)
    cpu.batchnorm._batchnorm2d_stats(x, mean64, var64)
    want = x.astype(np.float64)
    np.testing.assert_allclose(mean64, want.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(var64, want.var(axis=(0, 2, 3)), rtol=1e-9, atol=1e-18)
    assert var64[1] == 0


# --------------------------------------------------------------------------
# losses and optimizer updates
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses(rng, dtype):
    scores = (3 * rng.standard_normal((6, 5))).astype(dtype)
    labels = rng.integers(0, 5, 6)
    cases = [
        ("softmax_cross_entropy", (scores, labels)),
        ("multiclass_hinge", (scores, labels, 1.0)),
        ("bce_with_logits", (scores, rng.random((6, 5)).astype(dtype))),
        ("mse", (scores, (scores * 0.5 + 1).astype(dtype))),
        ("l1", (scores, np.round(scores))),
    ]
    for name, args in cases:
        loss, grad = getattr(cpu, name)(*args)
        loss_ref, grad_ref = getattr(ref, name)(*args)
        assert isinstance(loss, float), name
        assert loss == pytest.approx(loss_ref, rel=RTOL[dtype] * 10), name
        assert_close(grad, grad_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)]
)
def test_sgd_update(rng, dtype, momentum, nesterov, weight_decay):
    param = rng.standard_normal((3, 4)).astype(dtype)
    grad = rng.standard_normal((3, 4)).astype(dtype)
    velocity = rng.standard_normal((3, 4)).astype(dtype) if momentum else None
    param_ref = param.copy()
    velocity_ref = None if velocity is None else velocity.copy()
    cpu.sgd_update(param, grad, velocity, 0.1, momentum, nesterov, weight_decay)
    ref.sgd_update(param_ref, grad, velocity_ref, 0.1, momentum, nesterov, weight_decay)
    assert_close(param, param_ref, dtype)
    if momentum:
        assert_close(velocity, velocity_ref, dtype)


def test_sgd_update_many_is_each_sgd_update(rng):
    shapes = [(3, 4), (5,), (2, 1, 3)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    vels = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    p_ref, v_ref = [p.copy() for p in params], [v.copy() for v in vels]
    cpu.sgd_update_many(params, grads, vels, 0.1, 0.9, True, 1e-3)
    for p, g, v in zip(p_ref, grads, v_ref):
        cpu.sgd_update(p, g, v, 0.1, 0.9, True, 1e-3)
    for a, b in zip(params + vels, p_ref + v_ref):
        np.testing.assert_array_equal(a, b)


def test_adam_update_many_is_each_adam_update(rng):
    shapes, steps = [(3, 4), (5,)], [2, 1]
    arrays = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    arrays[3] = [np.abs(v) for v in arrays[3]]
    params, grads, ms, vs = arrays
    want = [[a.copy() for a in arrays[i]] for i in (0, 2, 3)]
    cpu.adam_update_many(params, grads, ms, vs, 0.01, 0.9, 0.999, 1e-8, 1e-3, steps)
    for i, step in enumerate(steps):
        cpu.adam_update(want[0][i], grads[i], want[1][i], want[2][i], 0.01, 0.9, 0.999, 1e-8,
                        1e-3, step)
    for got, exp in zip((params, ms, vs), want):
        for a, b in zip(got, exp):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(rng, dtype):
    param, grad, m = (rng.standard_normal((3, 4)).astype(dtype) for _ in range(3))
    v = rng.random((3, 4)).astype(dtype)
    state_ref = [param.copy(), m.copy(), v.copy()]
    cpu.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3)
    ref.adam_update(state_ref[0], grad, state_ref[1], state_ref[2], 1e-3, 0.9, 0.999, 1e-8, 0.01, 3)
    assert_all_close((param, m, v), state_ref, dtype)


# --------------------------------------------------------------------------
# the other vector width
# --------------------------------------------------------------------------

OTHER_WIDTH = """
import json
import numpy as np
from jitnet.kernels import cpu, numpy_ref as ref

rng = np.random.default_rng(0)
f32 = np.float32
errors = {"lanes": cpu._tiles._LANES}


def err(name, got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    errors[name] = float(np.linalg.norm(got - want) / np.linalg.norm(want))


def conv(name, n, c, h, w, f, k, s, p, pooled=False):
    x = rng.standard_normal((n, c, h, w)).astype(f32)
    weight = rng.standard_normal((f, c, k, k)).astype(f32)
    bias = rng.standard_normal(f).astype(f32)
    y = cpu.conv2d_forward(x, weight, bias, s, p, 1)
    err(name + " forward", y, ref.conv2d_forward(x, weight, bias, s, p, 1))
    dy = rng.standard_normal(y.shape).astype(f32)
    if pooled:  # one nonzero in each 2x2 window, as a max pooling routes it
        dy = ref.maxpool2d_backward(*ref.maxpool2d_forward(dy, 2, 2), dy.shape, 2, 2)
        errors[name + " dense (1) or sparse (0)"] = 0.0 if cpu.conv_pooled._sparse_dy(dy) else 1.0
    got = cpu.conv2d_backward(dy, x, weight, s, p, 1)
    for part, g, e in zip(("dx", "dweight", "dbias"), got,
                          ref.conv2d_backward(dy, x, weight, s, p, 1)):
        err(f"{name} {part}", g, e)


conv("rows", 3, 3, 9, 21, 7, 3, 1, 1)      # row kernels; dweight with the bias slot
conv("channel tiles", 2, 32, 6, 7, 10, 3, 1, 1)  # dweight on whole channel blocks
conv("tiles", 2, 5, 9, 9, 19, 3, 2, 1)     # strided: channel-last tiles
conv("sparse", 2, 32, 8, 6, 20, 3, 1, 1, pooled=True)  # dx and dweight on the nonzeros
x = rng.standard_normal((3, 3, 10, 18)).astype(f32)
weight = rng.standard_normal((9, 3, 3, 3)).astype(f32)
bias = rng.standard_normal(9).astype(f32)
got = cpu.conv2d_maxpool2d_forward(x, weight, bias, 1, 1, 1, 2, 2, relu=True)
want = ref.conv2d_maxpool2d_forward(x, weight, bias, 1, 1, 1, 2, 2, relu=True)
err("conv + pool + relu", got[0], want[0])
errors["argmax equal"] = bool(np.array_equal(got[1], want[1]))
for c in (3, 32):  # the weight gradient from the windows: rows of a vector, channel blocks
    x = rng.standard_normal((3, c, 10, 18)).astype(f32)
    weight = rng.standard_normal((9, c, 3, 3)).astype(f32)
    y, argmax = cpu.conv2d_maxpool2d_forward(x, weight, bias, 1, 1, 1, 2, 2, relu=True)
    g = rng.standard_normal(y.shape).astype(f32)
    back = cpu.conv2d_maxpool2d_backward(g, x, weight, argmax, 1, 1, 1, 2, 2, True, y)
    for part, b, e in zip(("dx", "dweight", "dbias"), back, ref.conv2d_maxpool2d_backward(
            g, x, weight, argmax, 1, 1, 1, 2, 2, True, y)):
        err(f"conv + pool + relu backward, {c} channels, {part}", b, e)
a = rng.standard_normal((30, 300)).astype(f32)
b = rng.standard_normal((300, 45)).astype(f32)
err("matmul", cpu.linear._matmul(a, b, f32), a.astype(np.float64) @ b)
print(json.dumps(errors))
"""


def test_kernels_at_the_other_vector_width(tmp_path):
    # The register tiles are sized for the CPU's vectors (16 or 8 float32 lanes):
    # this runs the width this machine does not choose, in a process of its own,
    # on a Numba cache that a process at the native width filled first (the width
    # is in each entry's key: loading the other's kernels overran their buffers).
    import json
    import os
    import subprocess
    import sys

    native = cpu._tiles._LANES
    other = 8 if native == 16 else 16
    for lanes in (native, other):
        env = dict(os.environ, JITNET_VECTOR_LANES=str(lanes),
                   NUMBA_CACHE_DIR=str(tmp_path))
        out = subprocess.run([sys.executable, "-c", OTHER_WIDTH], env=env, check=True,
                             capture_output=True, text=True).stdout
        errors = json.loads(out.splitlines()[-1])
        assert errors.pop("lanes") == lanes
        assert errors.pop("argmax equal")
        bad = {name: e for name, e in errors.items() if not e <= RTOL[np.float32]}
        assert not bad, (lanes, bad)
