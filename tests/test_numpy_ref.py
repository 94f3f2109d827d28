"""The NumPy reference kernels against PyTorch (float64) and numerical gradients."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jitnet.gradcheck import numerical_gradient
from jitnet.kernels import numpy_ref as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10  # float64 reference vs float64 PyTorch


def torch_run(fn, arrays, dy):
    """``fn(*tensors)`` and the gradients of ``sum(fn * dy)`` w.r.t. each array."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(dy))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def assert_close(a, b, tol=TOL):
    """Element-wise relative error under ``tol``, each element judged against at least
    a thousandth of the array's largest.

    A convolution or matrix-product output that cancels to a millionth of its terms
    carries the rounding of those terms, not of its own value: measured against itself
    (:func:`rel_error`) such an element fails a float64 tolerance on BLAS rounding alone
    (seen: 2.3e-6 off by 8.7e-16 in a dweight whose largest entry is 10).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    if a.size == 0:
        return
    floor = max(1e-3 * np.max(np.abs(b)), 1e-8)
    err = float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor)))
    assert err < tol, f"relative error {err:.3g} >= {tol:g}"


# -- convolution ---------------------------------------------------------------------------


def check_conv(rng, n, c, h, w, f, k, stride, padding, groups, bias=True):
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c // groups, k, k))
    b = rng.standard_normal(f) if bias else None
    y = ref.conv2d_forward(x, weight, b, stride, padding, groups)
    dy = rng.standard_normal(y.shape)
    arrays = (x, weight) + ((b,) if bias else ())

    def fn(tx, tw, tb=None):
        return F.conv2d(tx, tw, tb, stride=stride, padding=padding, groups=groups)

    ty, grads = torch_run(fn, arrays, dy)
    assert_close(y, ty)
    dx, dweight, dbias = ref.conv2d_backward(dy, x, weight, stride, padding, groups)
    assert_close(dx, grads[0])
    assert_close(dweight, grads[1])
    if bias:
        assert_close(dbias, grads[2])
    no_dx = ref.conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=False)
    assert no_dx[0] is None
    np.testing.assert_array_equal(no_dx[1], dweight)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("groups", ["one", "two", "depthwise"])
def test_conv2d_matches_torch(rng, stride, padding, k, groups):
    c, f = (4, 6) if groups != "depthwise" else (4, 4)
    g = {"one": 1, "two": 2, "depthwise": 4}[groups]
    check_conv(rng, 2, c, 7, 6, f, k, stride, padding, g)


def test_conv2d_batch_of_one_without_bias(rng):
    check_conv(rng, 1, 3, 5, 5, 2, 3, 1, 1, 1, bias=False)


def test_conv2d_depthwise_multiplier(rng):
    # groups == in_channels with two filters per channel
    check_conv(rng, 2, 3, 6, 6, 6, 3, 2, 1, 3)


def test_conv2d_numerical_gradients(rng):
    x = rng.standard_normal((2, 4, 5, 6))
    weight = rng.standard_normal((4, 2, 3, 3))
    bias = rng.standard_normal(4)
    args = (2, 1, 2)  # stride, padding, groups
    dy = rng.standard_normal(ref.conv2d_forward(x, weight, bias, *args).shape)
    dx, dweight, dbias = ref.conv2d_backward(dy, x, weight, *args)
    assert_close(
        dx, numerical_gradient(lambda v: ref.conv2d_forward(v, weight, bias, *args), x, df=dy), 1e-7
    )
    assert_close(
        dweight,
        numerical_gradient(lambda v: ref.conv2d_forward(x, v, bias, *args), weight, df=dy),
        1e-7,
    )
    assert_close(
        dbias,
        numerical_gradient(lambda v: ref.conv2d_forward(x, weight, v, *args), bias, df=dy),
        1e-7,
    )


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.integers(1, 3),
    cpg=st.integers(1, 2),
    fpg=st.integers(1, 2),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_conv2d_random_shapes(n, groups, cpg, fpg, h, w, k, stride, padding, seed):
    assume(h + 2 * padding >= k and w + 2 * padding >= k)
    check_conv(
        np.random.default_rng(seed), n, groups * cpg, h, w, groups * fpg, k, stride, padding, groups
    )


def test_conv2d_keeps_float32(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = np.zeros(4, np.float32)
    y = ref.conv2d_forward(x, weight, bias, 1, 1, 1)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert all(g.dtype == np.float32 for g in ref.conv2d_backward(y, x, weight, 1, 1, 1))


# -- max pooling ---------------------------------------------------------------------------


def check_pool(rng, shape, k, stride):
    x = rng.standard_normal(shape)
    y, argmax = ref.maxpool2d_forward(x, k, stride)
    dy = rng.standard_normal(y.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(tx, k, stride, return_indices=True)
    ty.backward(torch.tensor(dy))
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(argmax, tidx.numpy())
    assert_close(y, ty.detach().numpy())
    assert_close(ref.maxpool2d_backward(dy, argmax, x.shape), tx.grad.numpy())


@pytest.mark.parametrize("k, stride", [(2, 2), (3, 2), (3, 1), (2, 3), (1, 1)])
def test_maxpool2d_matches_torch(rng, k, stride):
    check_pool(rng, (2, 3, 7, 8), k, stride)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 4),
    stride=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_maxpool2d_random_shapes(n, c, h, w, k, stride, seed):
    assume(h >= k and w >= k)
    check_pool(np.random.default_rng(seed), (n, c, h, w), k, stride)


def test_maxpool2d_first_max_wins_and_overlaps_add():
    x = np.ones((1, 1, 4, 4))
    y, argmax = ref.maxpool2d_forward(x, 2, 1)
    # every window's first element (its top-left corner) wins a tie
    expected = np.array([[0, 1, 2], [4, 5, 6], [8, 9, 10]])
    np.testing.assert_array_equal(argmax[0, 0], expected)
    dx = ref.maxpool2d_backward(np.ones_like(y), argmax, x.shape)
    assert dx.sum() == 9 and dx[0, 0, 1, 1] == 1
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0  # the maximum of all four overlapping windows
    y, argmax = ref.maxpool2d_forward(x, 2, 1)
    dx = ref.maxpool2d_backward(np.ones_like(y), argmax, x.shape)
    assert dx[0, 0, 1, 1] == 4 and dx.sum() == 4


def test_maxpool2d_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y, _ = ref.maxpool2d_forward(x, 2, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


# -- fully connected and maxout ------------------------------------------------------------


def test_linear_matches_torch(rng):
    x, weight, bias = (
        rng.standard_normal((5, 7)),
        rng.standard_normal((3, 7)),
        rng.standard_normal(3),
    )
    y = ref.linear_forward(x, weight, bias)
    dy = rng.standard_normal(y.shape)
    ty, grads = torch_run(F.linear, (x, weight, bias), dy)
    assert_close(y, ty)
    for ours, theirs in zip(ref.linear_backward(dy, x, weight), grads):
        assert_close(ours, theirs)
    assert_close(ref.linear_forward(x, weight, None), x @ weight.T)


def test_maxout_matches_explicit_formula(rng):
    n, d, m, pieces = 4, 5, 3, 3
    x = rng.standard_normal((n, d))
    weight = rng.standard_normal((m * pieces, d))
    bias = rng.standard_normal(m * pieces)
    y, argmax = ref.maxout_forward(x, weight, bias, pieces)
    assert argmax.dtype == np.int32
    for j in range(m):
        z = np.stack([x @ weight[j * pieces + k] + bias[j * pieces + k] for k in range(pieces)], 1)
        assert_close(y[:, j], z.max(1))
        np.testing.assert_array_equal(argmax[:, j], z.argmax(1))
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = ref.maxout_backward(dy, x, weight, argmax, pieces)
    assert_close(
        dx,
        numerical_gradient(lambda v: ref.maxout_forward(v, weight, bias, pieces)[0], x, df=dy),
        1e-7,
    )
    assert_close(
        dweight,
        numerical_gradient(lambda v: ref.maxout_forward(x, v, bias, pieces)[0], weight, df=dy),
        1e-7,
    )
    assert_close(
        dbias,
        numerical_gradient(lambda v: ref.maxout_forward(x, weight, v, pieces)[0], bias, df=dy),
        1e-7,
    )


# -- activations ---------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": (lambda x: ref.relu_forward(x), lambda dy, x, y: ref.relu_backward(dy, y), F.relu),
    "leaky_relu": (
        lambda x: ref.leaky_relu_forward(x, 0.1),
        lambda dy, x, y: ref.leaky_relu_backward(dy, x, 0.1),
        lambda t: F.leaky_relu(t, 0.1),
    ),
    "sigmoid": (ref.sigmoid_forward, lambda dy, x, y: ref.sigmoid_backward(dy, y), torch.sigmoid),
    "tanh": (ref.tanh_forward, lambda dy, x, y: ref.tanh_backward(dy, y), torch.tanh),
    "elu": (
        lambda x: ref.elu_forward(x, 0.7),
        lambda dy, x, y: ref.elu_backward(dy, x, y, 0.7),
        lambda t: F.elu(t, 0.7),
    ),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_matches_torch(rng, name, dtype):
    forward, backward, torch_fn = ACTIVATIONS[name]
    x = (3 * rng.standard_normal((3, 4, 5))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = forward(x)
    dx = backward(dy, x, y)
    assert y.dtype == dtype and dx.dtype == dtype
    ty, (tdx,) = torch_run(torch_fn, (x.astype(np.float64),), dy.astype(np.float64))
    tol = TOL if dtype == np.float64 else 1e-6
    assert_close(y, ty, tol)
    # 1 - y**2 cancels where |y| is near 1: compare the gradient with an absolute floor
    np.testing.assert_allclose(dx, tdx, rtol=tol, atol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_numerical_gradient(rng, name):
    forward, backward, _ = ACTIVATIONS[name]
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks
    dy = rng.standard_normal(x.shape)
    assert_close(backward(dy, x, forward(x)), numerical_gradient(forward, x, df=dy), 1e-7)


def test_activations_propagate_nan_and_survive_extremes():
    x = np.array([np.nan, -1000.0, 1000.0, 0.0])
    for name in ACTIVATIONS:
        y = ACTIVATIONS[name][0](x)
        assert np.isnan(y[0]), name
        assert np.all(np.isfinite(y[1:])), name
    np.testing.assert_array_equal(ref.sigmoid_forward(x)[1:], [0.0, 1.0, 0.5])


# -- dropout -------------------------------------------------------------------------------


def splitmix_uniform(seed, i):
    """The documented formula with Python integers, one element at a time."""
    mask64 = 2**64 - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
    z = z ^ (z >> 31)
    return (z >> 11) * 2.0**-53


def test_dropout_mask_is_the_documented_formula():
    seed = 2**63 - 25
    u = ref.dropout_uniform(seed, 50)
    np.testing.assert_array_equal(u, [splitmix_uniform(seed, i) for i in range(50)])
    x = np.ones((5, 10))
    _, mask = ref.dropout_forward(x, 0.4, seed)
    expected = np.where(u >= 0.4, 1 / 0.6, 0.0).reshape(5, 10)
    np.testing.assert_array_equal(mask, expected)


def test_dropout_statistics_and_determinism(rng):
    x = rng.standard_normal((64, 32, 16)).astype(np.float32)
    y, mask = ref.dropout_forward(x, 0.3, 7)
    assert mask.dtype == np.float32 and y.dtype == np.float32
    assert abs((mask == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(np.unique(mask), [0.0, 1 / 0.7], rtol=1e-7)
    assert abs(mask.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
    np.testing.assert_array_equal(y, x * mask)
    y2, mask2 = ref.dropout_forward(x, 0.3, 7)
    np.testing.assert_array_equal(mask, mask2)
    _, mask3 = ref.dropout_forward(x, 0.3, 8)
    assert (mask != mask3).mean() > 0.3
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(ref.dropout_backward(dy, mask), dy * mask)


def test_dropout_edge_probabilities(rng):
    x = rng.standard_normal((4, 5))
    y, mask = ref.dropout_forward(x, 0.0, 1)
    np.testing.assert_array_equal(y, x)
    y, mask = ref.dropout_forward(x, 1.0, 1)
    assert not mask.any() and not y.any()


# -- batch norm ----------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_matches_torch(rng, training):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y, mean, invstd = ref.batchnorm2d_forward(x, weight, bias, rm, rv, 0.1, 1e-5, training)
    dy = rng.standard_normal(y.shape)

    def fn(tx, tw, tb):
        return F.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.1, eps=1e-5)

    ty, grads = torch_run(fn, (x, weight, bias), dy)
    assert_close(y, ty)
    assert_close(rm, trm.numpy())
    assert_close(rv, trv.numpy())
    if training:
        for ours, theirs in zip(ref.batchnorm2d_backward(dy, x, weight, mean, invstd), grads):
            assert_close(ours, theirs, 1e-9)


def test_batchnorm2d_numerical_gradient(rng):
    x = rng.standard_normal((2, 3, 3, 2))
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)

    def forward(v):
        return ref.batchnorm2d_forward(v, weight, bias, np.zeros(3), np.ones(3), 0.1, 1e-5, True)[0]

    y, mean, invstd = ref.batchnorm2d_forward(
        x, weight, bias, np.zeros(3), np.ones(3), 0.1, 1e-5, True
    )
    dy = rng.standard_normal(y.shape)
    dx, _, _ = ref.batchnorm2d_backward(dy, x, weight, mean, invstd)
    assert_close(dx, numerical_gradient(forward, x, df=dy), 1e-6)


# -- losses --------------------------------------------------------------------------------


def test_softmax_cross_entropy_matches_torch(rng):
    s, y = rng.standard_normal((6, 5)) * 3, rng.integers(0, 5, 6)
    loss, ds = ref.softmax_cross_entropy(s, y)
    ts = torch.tensor(s, requires_grad=True)
    tl = F.cross_entropy(ts, torch.tensor(y))
    tl.backward()
    assert isinstance(loss, float)
    assert abs(loss - tl.item()) < 1e-12
    assert_close(ds, ts.grad.numpy())
    # stable for huge scores
    loss, ds = ref.softmax_cross_entropy(
        np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([1, 0])
    )
    assert abs(loss - 500.0) < 1e-9 and np.all(np.isfinite(ds))


def test_multiclass_hinge_matches_torch(rng):
    s, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    loss, ds = ref.multiclass_hinge(s, y, 0.7)
    ts = torch.tensor(s, requires_grad=True)
    # MultiMarginLoss divides the class sum by C; ours (cs231n's SVM loss) does not.
    tl = F.multi_margin_loss(ts, torch.tensor(y), margin=0.7) * s.shape[1]
    tl.backward()
    assert abs(loss - tl.item()) < 1e-12
    assert_close(ds, ts.grad.numpy())


def test_bce_with_logits_matches_torch(rng):
    s = rng.standard_normal((4, 3)) * 4
    s[0, 0], s[1, 1] = 800.0, -800.0
    t = rng.random((4, 3))
    loss, ds = ref.bce_with_logits(s, t)
    ts = torch.tensor(s, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(ts, torch.tensor(t))
    tl.backward()
    assert abs(loss - tl.item()) < 1e-12
    assert_close(ds, ts.grad.numpy())


@pytest.mark.parametrize("name", ["mse", "l1"])
def test_regression_losses_match_torch(rng, name):
    p, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    p[0, 0] = t[0, 0]  # l1's gradient is 0 where they are equal
    loss, dp = getattr(ref, name)(p, t)
    tp = torch.tensor(p, requires_grad=True)
    tl = {"mse": F.mse_loss, "l1": F.l1_loss}[name](tp, torch.tensor(t))
    tl.backward()
    assert abs(loss - tl.item()) < 1e-12
    assert_close(dp, tp.grad.numpy())


@pytest.mark.parametrize(
    "name", ["softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse", "l1"]
)
def test_losses_numerical_gradient_and_dtype(rng, name):
    s = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    target = {"softmax_cross_entropy": labels, "multiclass_hinge": labels}.get(
        name, rng.random((5, 4))
    )
    extra = (1.0,) if name == "multiclass_hinge" else ()

    def f(v):
        return getattr(ref, name)(v, target, *extra)[0]

    _, ds = getattr(ref, name)(s, target, *extra)
    assert_close(ds, numerical_gradient(f, s), 1e-6)
    _, ds32 = getattr(ref, name)(s.astype(np.float32), target, *extra)
    assert ds32.dtype == np.float32


# -- optimizer updates ---------------------------------------------------------------------


def test_sgd_update_formula(rng):
    w, g, v = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    w0, v0 = w.copy(), v.copy()
    ref.sgd_update(w, g, v, 0.1, 0.9, True, 0.01)
    d = g + 0.01 * w0
    v_new = 0.9 * v0 + d
    assert_close(v, v_new)
    assert_close(w, w0 - 0.1 * (d + 0.9 * v_new))
    w = w0.copy()
    ref.sgd_update(w, g, None, 0.1, 0.0, False, 0.0)
    assert_close(w, w0 - 0.1 * g)


def test_adam_update_formula(rng):
    w, g = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    m, v = np.zeros(5, np.float32), np.zeros(5, np.float32)
    w0 = w.copy()
    ref.adam_update(w, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0.0, 1)
    assert w.dtype == np.float32
    # the first step moves every weight by lr against the sign of its gradient
    np.testing.assert_allclose(w, w0 - 0.01 * np.sign(g), rtol=1e-5, atol=1e-6)
