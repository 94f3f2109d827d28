"""jitnet.kernels.pool: large arrays reused only once no one holds them."""

import gc

import numpy as np
import pytest

import jitnet
from jitnet import config
from jitnet.kernels import cpu
from jitnet.kernels.pool import ArrayPool

LARGE = (256, 512)  # 512 KiB of float32, above the default threshold


@pytest.fixture
def pool():
    return ArrayPool(np.empty)


def test_released_array_is_handed_out_again(pool):
    first = pool.empty(LARGE, np.float32)
    address = first.ctypes.data
    del first
    again = pool.empty(LARGE, np.float32)
    assert again.ctypes.data == address
    assert pool.nbytes == again.nbytes


def test_held_array_and_its_views_are_never_handed_out(pool):
    held = pool.empty(LARGE, np.float32)
    other = pool.empty(LARGE, np.float32)
    assert not np.shares_memory(held, other)
    view = other.reshape(-1)[::2]
    del other
    third = pool.empty(LARGE, np.float32)
    assert not np.shares_memory(third, view) and not np.shares_memory(third, held)
    del view
    gc.collect()
    assert pool.empty(LARGE, np.float32) is not held


def test_shape_and_dtype_select_the_array(pool):
    a = pool.empty(LARGE, np.float32)
    address = a.ctypes.data
    del a
    b = pool.empty(LARGE, np.float64)
    c = pool.empty(LARGE[::-1], np.float32)
    assert b.dtype == np.float64 and c.shape == LARGE[::-1]
    assert address not in (b.ctypes.data, c.ctypes.data)


def test_array_reshaped_in_place_is_not_handed_out_for_its_old_shape(pool):
    a = pool.empty(LARGE, np.float32)
    a.shape = (LARGE[0] * LARGE[1],)  # legal NumPy: the pooled object itself changes
    del a
    b = pool.empty(LARGE, np.float32)
    assert b.shape == LARGE and b.flags.c_contiguous
    assert pool.nbytes == b.nbytes  # the altered one was dropped, not counted twice


def test_small_arrays_bypass_the_pool(pool):
    small = pool.empty((4, 4), np.float32)
    assert small.shape == (4, 4) and pool.nbytes == 0


def test_zeros_are_zero_even_when_reused(pool):
    a = pool.empty(LARGE, np.float32)
    a.fill(7.0)
    del a
    z = pool.zeros(LARGE, np.float32)
    assert not z.any()


def test_budget_drops_idle_arrays_of_the_oldest_shape(pool, monkeypatch):
    nbytes = np.dtype(np.float32).itemsize * LARGE[0] * LARGE[1]
    monkeypatch.setattr(config, "ARRAY_POOL_MAX_BYTES", 2 * nbytes)
    old = pool.empty(LARGE, np.float32)
    kept = pool.empty((LARGE[0], LARGE[1] // 2), np.float32)
    del old
    new = pool.empty(LARGE[::-1], np.float32)  # evicts the idle LARGE array
    assert pool.nbytes == kept.nbytes + new.nbytes
    held = pool.empty(LARGE[::-1], np.float32)  # no room: handed out, not kept
    assert pool.nbytes == kept.nbytes + new.nbytes and not np.shares_memory(held, new)


def test_budget_zero_turns_the_pool_off(pool, monkeypatch):
    monkeypatch.setattr(config, "ARRAY_POOL_MAX_BYTES", 0)
    a = pool.empty(LARGE, np.float32)
    assert a.shape == LARGE and pool.nbytes == 0


def test_kernel_outputs_the_caller_keeps_stay_intact():
    # two forward calls on the cpu target: the first output must survive the second
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    first = cpu.relu_forward(x)
    expected = first.copy()
    second = cpu.relu_forward(-x)
    np.testing.assert_array_equal(first, expected)
    assert not np.shares_memory(first, second)
    del first
    third = cpu.relu_forward(x)  # may reuse the first one's memory: nothing refers to it
    np.testing.assert_array_equal(third, expected)


def test_training_steps_reuse_memory_and_match_without_pool(monkeypatch):
    # same seed with and without the pool: identical losses and weights
    def run():
        jitnet.manual_seed(0)
        model = jitnet.models.convnet(num_classes=4)
        loss_fn = jitnet.nn.SoftmaxCrossEntropyLoss()
        opt = jitnet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 4, 16)
        losses, pooled_bytes = [], []
        for _ in range(4):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            opt.step()
            losses.append(float(loss))
            pooled_bytes.append(cpu.arrays._POOL.nbytes)
        # from the second step on, every large array is one a previous step released
        assert pooled_bytes[1] == pooled_bytes[2] == pooled_bytes[3]
        return losses, [p.data.copy() for p in model.parameters()]

    with jitnet.use_target("cpu"):
        cpu.arrays._POOL.clear()
        pooled, pooled_weights = run()
        assert cpu.arrays._POOL.nbytes > 0
        monkeypatch.setattr(config, "ARRAY_POOL_MAX_BYTES", 0)
        plain, plain_weights = run()
    assert pooled == plain
    for a, b in zip(pooled_weights, plain_weights):
        np.testing.assert_array_equal(a, b)


def test_cpu_kernels_ignore_what_reused_memory_held(monkeypatch):
    # Every pooled array comes back uninitialised: poisoned with NaN, the second run of
    # the same calls must give the first one's results (padding borders, zero fills).
    monkeypatch.setattr(config, "ARRAY_POOL_MIN_BYTES", 0)
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    w1 = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
    x2 = rng.standard_normal((4, 32, 8, 8)).astype(np.float32)
    w2 = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)  # the channel tiles
    b = rng.standard_normal(64).astype(np.float32)

    def run():
        y1, a1 = cpu.conv2d_maxpool2d_forward(x1, w1, b[:32], 1, 1, 1, 2, 2, relu=True)
        y2 = cpu.conv2d_forward(x2, w2, b, 1, 1, 1)
        g2 = cpu.conv2d_backward(y2, x2, w2, 1, 1, 1)
        d1 = cpu.maxpool2d_relu_backward(y1, y1, a1, (4, 32, 16, 16), 2, 2)
        g1 = cpu.conv2d_backward(d1, x1, w1, 1, 1, 1, input_grad=False)
        return [np.array(a) for a in (y1, a1, y2, *g2, d1, *g1[1:])]

    cpu.arrays._POOL.clear()
    first = run()
    gc.collect()
    for arrays in cpu.arrays._POOL._arrays.values():
        for a in arrays:
            a.view(np.uint8).fill(0xFF)  # NaN as float, -1 as int
    again = run()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    cpu.arrays._POOL.clear()
