"""End to end on the cuda target: a tiny ConvNet trains like it does on the reference.

Both runs start from the same seed, so they create the same weights and draw the
same dropout seeds; every layer, the loss and the optimizer then run as cuda
kernels, and the losses must follow the NumPy target's step for step.
"""

import contextlib

import numpy as np
import pytest

import jitnet
from jitnet import config, nn, optim
from jitnet.targets import is_device_array


def _tiny_convnet():
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, kernel_size=3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(4 * 2 * 2, 3),
    )


def _fused_convnet():
    # Conv2d, ReLU, MaxPool2d: Sequential runs the three as one call forward and the
    # pooling with its ReLU as one going back.
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def _train(target, images, labels, steps=3, make_model=_tiny_convnet):
    """Losses of ``steps`` SGD steps on ``target``, the final state and eval-mode scores."""
    with jitnet.use_target(target):
        jitnet.manual_seed(0)
        model = make_model()
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        loss_fn = nn.SoftmaxCrossEntropyLoss()
        losses = []
        for _ in range(steps):
            losses.append(loss_fn(model(images), labels))
            model.backward(loss_fn.backward())
            optimizer.step()
        if target == "cuda":
            for p in model.parameters():  # nothing fell back to the host
                assert is_device_array(p.data) and is_device_array(p.grad), p
                assert is_device_array(p.state["momentum_buffer"]), p
        scores = jitnet.to_numpy(model.eval()(images))
        return losses, model.state_dict(), scores


def test_tiny_convnet_trains_like_the_reference():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])

    losses, state, scores = _train("cuda", images, labels)
    want_losses, want_state, want_scores = _train("numpy", images, labels)

    assert all(type(v) is float for v in losses)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    assert losses[-1] < losses[0]  # it learns
    assert state.keys() == want_state.keys()
    for key in state:
        np.testing.assert_allclose(state[key], want_state[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)


def test_a_step_launches_the_same_kernels_and_updates_all_parameters_at_once():
    from jitnet.kernels import cuda as cu

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 2])
    with jitnet.use_target("cuda"):
        jitnet.manual_seed(0)
        model = _tiny_convnet()
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = nn.SoftmaxCrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            loss_fn(model(images), labels)
            model.backward(loss_fn.backward())
            optimizer.step()

        step()  # creates the momentum buffers
        counts = []
        for _ in range(2):
            with cu.count_launches() as launches:
                step()
            counts.append(launches)
    assert counts[0] == counts[1]
    # the 8 parameters (3 layers' weights and biases, BatchNorm's 2) in one launch
    assert len(list(model.parameters())) == 8
    assert counts[0]["_sgd_momentum_many_kernel"] == 1
    assert "_sgd_momentum_kernel" not in counts[0]
    # the loss and its mean in one launch; the pooling's gradient in one (no zero
    # fill); each convolution's bias gradient inside its weight-gradient launch
    assert counts[0]["row_loss_kernel"] == 1
    assert counts[0]["_maxpool2d_backward_gather_kernel"] == 1
    # the ReLU after the pooling goes back inside the pooling's launch; the other alone
    assert counts[0]["_relu_backward_kernel"] == 1
    assert counts[0]["conv2d_backward_weight_kernel"] == 2
    # the Linear layer's bias gradient inside its weight gradient's matmul launch
    for fused_away in ("sum_kernel", "_fill_kernel", "channel_sum_kernel",
                       "_maxpool2d_backward_kernel", "_column_sum_kernel"):
        assert fused_away not in counts[0], counts[0]


@pytest.mark.parametrize("loss_name", ["MulticlassHingeLoss", "MSELoss"])
def test_linear_model_with_adam_matches_reference(loss_name):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 0])
    target = rng.standard_normal((5, 3)).astype(np.float32)

    def run(name):
        with jitnet.use_target(name):
            jitnet.manual_seed(3)
            model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Maxout(8, 3, pieces=2))
            optimizer = optim.Adam(model.parameters(), lr=0.05)
            loss_fn = getattr(nn, loss_name)()
            wanted = labels if loss_name == "MulticlassHingeLoss" else target
            losses = []
            for _ in range(3):
                losses.append(loss_fn(model(x), wanted))
                model.backward(loss_fn.backward())
                optimizer.step()
            return losses

    np.testing.assert_allclose(run("cuda"), run("numpy"), rtol=1e-4)


def test_the_fused_conv_pool_relu_trains_like_the_reference():
    rng = np.random.default_rng(3)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([1, 0, 2, 2])
    losses, state, scores = _train("cuda", images, labels, make_model=_fused_convnet)
    want_losses, want_state, want_scores = _train("numpy", images, labels,
                                                  make_model=_fused_convnet)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    for key in state:
        np.testing.assert_allclose(state[key], want_state[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)


def _mlp():
    # Linear, ReLU, Linear: the ReLU rides in the first product's launch forward and in
    # the second's input gradient going back
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_linear_relu_linear_trains_like_the_reference_without_relu_launches():
    from jitnet.kernels import cuda as cu

    rng = np.random.default_rng(2)
    images = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    losses, state, scores = _train("cuda", images, labels, make_model=_mlp)
    want_losses, want_state, want_scores = _train("numpy", images, labels, make_model=_mlp)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    for key in state:
        np.testing.assert_allclose(state[key], want_state[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)
    with jitnet.use_target("cuda"):
        model, loss_fn = _mlp(), nn.SoftmaxCrossEntropyLoss()
        with cu.count_launches() as launches:
            loss_fn(model(images), labels)
            model.backward(loss_fn.backward())
    assert launches["matmul_kernel"] == 6  # 2 forward, 2 per layer back
    assert "_relu_forward_kernel" not in launches and "_relu_backward_kernel" not in launches


def test_training_steps_reuse_device_memory_and_train_the_same(monkeypatch):
    """After the first steps, a step allocates no device memory: every output, the
    batch's copy and the labels' come from the pool (issue 4: buffers reused across
    steps). With the pool off the losses are the same."""
    from jitnet.kernels import cuda as cu

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 2])
    fresh = []
    allocate = cu.arrays._POOL._allocate
    monkeypatch.setattr(cu.arrays._POOL, "_allocate",
                        lambda shape, dtype: fresh.append(shape) or allocate(shape, dtype))

    def run():
        cu.arrays._POOL.clear()
        with jitnet.use_target("cuda"):
            jitnet.manual_seed(0)
            model = _tiny_convnet()
            optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            loss_fn = nn.SoftmaxCrossEntropyLoss()
            losses, per_step = [], []
            for _ in range(4):
                fresh.clear()
                optimizer.zero_grad()
                losses.append(loss_fn(model(images), labels))
                model.backward(loss_fn.backward())
                optimizer.step()
                per_step.append(len(fresh))
        return losses, per_step

    losses, per_step = run()
    assert per_step[0] > 0 and per_step[2:] == [0, 0], per_step
    monkeypatch.setattr(config, "ARRAY_POOL_MAX_BYTES", 0)
    unpooled, per_step = run()
    assert per_step[-1] > 0  # the pool off: every step allocates again
    assert losses == unpooled


def _address(a):
    from jitnet.kernels import cuda as cu

    return a._ary.ctypes.data if cu.SIMULATOR else a.device_ctypes_pointer.value


def test_device_memory_that_a_view_still_uses_is_not_handed_out_again():
    from jitnet.kernels import cuda as cu

    x = cu.asarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 10)
    y = cu.relu_forward(x)
    address, want = _address(y), jitnet.to_numpy(y).copy()
    flat, part = y.reshape(24), y[1:]  # views hold y's memory, not y
    del y
    taken = [cu.relu_forward(x) for _ in range(3)]
    assert address not in {_address(t) for t in taken}
    for t in taken:  # writing what was handed out leaves the views' memory alone
        cu.arrays._fill_kernel[cu._launch._grid_1d(t.size)](cu.arrays._flat(t),
                                                             np.float32(-1))
    np.testing.assert_array_equal(jitnet.to_numpy(flat).reshape(2, 3, 4), want)
    np.testing.assert_array_equal(jitnet.to_numpy(part), want[1:])
    del flat, part, taken
    got = [cu.relu_forward(x) for _ in range(4)]  # once they are gone, it is reused
    assert address in {_address(g) for g in got}


@contextlib.contextmanager
def _launches_and_copies(monkeypatch):
    """A list that gets each kernel launch's name and ``"copy_to_host"`` for each copy
    of a device array to the host, in order (the simulator's arrays, or numba-cuda's)."""
    from jitnet.kernels import cuda as cu

    if cu.SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as DeviceArray
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as DeviceArray
    events = []
    copy = DeviceArray.copy_to_host

    def copying(self, *args, **kwargs):
        events.append("copy_to_host")
        return copy(self, *args, **kwargs)

    monkeypatch.setattr(DeviceArray, "copy_to_host", copying)
    with cu.intercept_launches(lambda name: events.append(name) or True):
        yield events


def test_fit_reads_nothing_back_between_a_steps_update_and_the_next_batch(monkeypatch):
    # Reading the scores after the update would wait for the whole backward pass;
    # without that, the GPU runs it while the loader makes the next batch.
    from jitnet import data, train

    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    jitnet.manual_seed(0)
    model = _fused_convnet()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = data.DataLoader(images, labels, batch_size=2, shuffle=False)
    with _launches_and_copies(monkeypatch) as events:
        train.fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, images[:2],
                  labels[:2], epochs=1, quiet=True)

    update = events.index("_sgd_momentum_many_kernel")  # the first batch's
    next_launch = next(i for i in range(update + 1, len(events))
                       if events[i] != "copy_to_host")
    assert "copy_to_host" in events[:update]  # the loss value, the scores
    assert events[update + 1:next_launch] == []


@pytest.mark.parametrize("make_loss", [nn.SoftmaxCrossEntropyLoss, nn.MulticlassHingeLoss])
def test_device_labels_are_not_read_back_unless_the_loss_is_nan(make_loss, monkeypatch):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4)).astype(np.float32)
    good = np.array([0, 3, 1])
    want = make_loss()(scores, good)  # host labels, checked on the host
    nan = np.full((3, 4), np.nan, np.float32)
    want_nan = make_loss()(nan, good)  # NaN for cross-entropy (0 for the hinge): no error
    with jitnet.use_target("cuda"):
        on_device, good_on_device = jitnet.asarray(scores), jitnet.asarray(good)
        with _launches_and_copies(monkeypatch) as events:
            got = make_loss()(on_device, good_on_device)
        assert events.count("copy_to_host") == 1  # the loss value, not the labels
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for bad in ([0, 4, 1], [-1, 0, 1]):  # out of range: NaN in the kernel, then the check
            with pytest.raises(ValueError, match=r"labels in \[0, 3\] for 4 classes, got values"):
                make_loss()(on_device, jitnet.asarray(np.array(bad)))
        np.testing.assert_equal(make_loss()(jitnet.asarray(nan), jitnet.asarray(good)), want_nan)
        with pytest.raises(ValueError, match="integer class labels, got dtype float32"):
            make_loss()(on_device, jitnet.asarray(good.astype(np.float32)))
        with pytest.raises(ValueError, match=r"labels of shape \(3,\) for scores"):
            make_loss()(on_device, jitnet.asarray(good[:2]))
