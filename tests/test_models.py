"""The reference ConvNet: a whole training step equals PyTorch's, on every ready target."""

import os

import numpy as np
import pytest

import jitnet
from jitnet import nn, optim
from jitnet.models import convnet

import ready_targets

torch = pytest.importorskip("torch")


def model_targets():
    """numpy and cpu; cuda too on a real GPU (the 32x32 ConvNet is far too slow for the
    simulator, whose parity tests live in tests/cuda)."""
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    return [t for t in jitnet.available_targets() if t != "cuda" or not simulated]


@pytest.fixture(params=model_targets())
def target(request):
    """Each available target whose kernel module imports and exports the whole contract."""
    yield from ready_targets.enter(request.param)


def torch_convnet(num_classes=10, batchnorm=False):
    tnn = torch.nn

    def block(c_in, c_out):
        layers = [tnn.Conv2d(c_in, c_out, 3, padding=1)]
        if batchnorm:
            layers.append(tnn.BatchNorm2d(c_out))
        return layers + [tnn.ReLU(), tnn.MaxPool2d(2)]

    return tnn.Sequential(
        *block(3, 32),
        *block(32, 64),
        tnn.Flatten(),
        tnn.Linear(4096, 256),
        tnn.ReLU(),
        tnn.Linear(256, num_classes),
    )


def scaled_error(a, b, floor=1e-3):
    """``max|a - b| / max|b|``; ``max|b|`` is floored: with BatchNorm the true gradient of
    a convolution's bias is exactly 0, and float32 leaves rounding noise of ~1e-8 there."""
    a = np.asarray(jitnet.to_numpy(a), np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_training_step_matches_torch(target, rng, batchnorm):
    model = convnet(num_classes=10, batchnorm=batchnorm)
    reference = torch_convnet(10, batchnorm).double()
    with torch.no_grad():
        for p, tp in zip(model.parameters(), reference.parameters()):
            tp.copy_(torch.tensor(jitnet.to_numpy(p.data), dtype=torch.float64))
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 7, 3])
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    topt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)

    loss_fn = nn.SoftmaxCrossEntropyLoss()
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    tloss = torch.nn.functional.cross_entropy(
        reference(torch.tensor(x, dtype=torch.float64)), torch.tensor(y)
    )
    tloss.backward()

    assert abs(loss - tloss.item()) <= 1e-4 * abs(tloss.item())
    tparams = list(reference.parameters())
    assert len(tparams) == len(list(model.parameters()))
    for (name, p), tp in zip(model.named_parameters(), tparams):
        assert scaled_error(p.grad, tp.grad.numpy()) < 1e-4, name
    opt.step()
    topt.step()
    for (name, p), tp in zip(model.named_parameters(), tparams):
        assert scaled_error(p.data, tp.detach().numpy()) < 1e-5, name
    if batchnorm:
        state = model.state_dict()
        tstate = reference.state_dict()
        for key in ("1.running_mean", "1.running_var", "5.running_var"):
            assert scaled_error(state[key], tstate[key].numpy()) < 1e-4, key


def test_convnet_shapes_and_validation():
    model = convnet(num_classes=4)
    assert [type(m).__name__ for m in model] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == sum(
        p.numel() for p in torch_convnet(4).parameters()
    )
    with jitnet.use_target("numpy"):
        assert model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 4)
    assert len(convnet(batchnorm=True)) == 12
    with pytest.raises(ValueError, match="num_classes to be an int >= 1, got 0"):
        convnet(num_classes=0)
    # the wrong kind is a TypeError; a NumPy int is an int, a bool is not
    with pytest.raises(TypeError, match=r"num_classes to be an int >= 1, got '10' \(str\)"):
        convnet(num_classes="10")
    with pytest.raises(TypeError, match=r"num_classes to be an int >= 1, got True \(bool\)"):
        convnet(num_classes=True)
    # only a bool is a flag: batchnorm="no" built two BatchNorm2d layers
    with pytest.raises(TypeError, match=r"convnet expected batchnorm to be True or False, got "
                                        r"'no' \(str\)"):
        convnet(batchnorm="no")
    assert len(convnet(batchnorm=np.False_)) == 10
    with jitnet.use_target("numpy"):
        model = convnet(num_classes=np.int64(4))
        assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 4)
