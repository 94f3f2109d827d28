"""Tests of jitnet.train: the loop, history, checkpoints, exact resuming, the NaN guard."""

import io
import json
import math
import os
import re
import stat
import warnings
import zipfile

import numpy as np
import pytest

import jitnet
from jitnet import nn, optim
from jitnet.train import (
    CheckpointError,
    TrainingDiverged,
    TrainingInterrupted,
    atomic_write,
    channel_stats,
    confusion_matrix,
    default_epochs,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
    train_convnet,
    train_hog_linear,
    write_json,
)

TARGETS = ["numpy", "cpu"]


def _data(n=48, size=8, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, (n, 3, size, size)).astype(np.uint8)
    y = r.integers(0, 10, n).astype(np.int64)
    # make the labels learnable: brighten one channel by class
    x[:, y % 3] = np.clip(x[:, y % 3].astype(int) + 40, 0, 255).astype(np.uint8)
    return x, y


def _scale(batch):
    return np.asarray(batch, dtype=np.float32) / 255.0


class _Loader:
    """A minimal loader with its own generator and random flips (the fit contract only)."""

    def __init__(self, x, y, batch_size, seed):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        order = self.generator.permutation(len(self.x))
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            xb = _scale(self.x[index])
            flip = self.generator.random(len(index)) < 0.5
            xb[flip] = xb[flip][..., ::-1]
            yield np.ascontiguousarray(xb), self.y[index]


def _tiny_model():
    # BatchNorm (buffers) and Dropout (jitnet's generator) so resuming must restore both
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(4 * 4 * 4, 10),
    )


def _setup(x, y, seed=0, loader=None):
    jitnet.manual_seed(seed)
    model = _tiny_model().to()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    scheduler = optim.CosineLR(optimizer, 3)
    if loader is None:
        loader = _Loader(x, y, 16, seed)
    return model, optimizer, scheduler, loader


def _run(x, y, epochs, out_dir=None, resume=False, loader=None):
    model, optimizer, scheduler, loader = _setup(x, y, loader=loader)
    metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x[:16], y[:16],
                  epochs=epochs, scheduler=scheduler, out_dir=out_dir, resume=resume,
                  quiet=True, model_name="tiny")
    return model, optimizer, metrics


@pytest.mark.parametrize("target", TARGETS)
def test_fit_history_and_checkpoint(target, tmp_path):
    x, y = _data()
    with jitnet.use_target(target):
        model, _, metrics = _run(x, y, 2, out_dir=tmp_path)
    assert metrics["model"] == "tiny" and metrics["target"] == target
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    for i, entry in enumerate(metrics["history"]):
        assert entry["epoch"] == i + 1
        for key in ("loss", "train_accuracy", "test_accuracy", "seconds", "images_per_second"):
            assert np.isfinite(entry[key]), key
        assert 0 <= entry["train_accuracy"] <= 1 and 0 <= entry["test_accuracy"] <= 1
    assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"]
    # each entry's lr is the rate the epoch trained with, before the schedule stepped:
    # CosineLR(t_max=3) from 0.05, lr_e = 0.05 * (1 + cos(pi * e / 3)) / 2
    assert [h["lr"] for h in metrics["history"]] == pytest.approx(
        [0.05 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(2)], rel=1e-12)
    assert metrics["parameters"] == sum(p.data.size for p in model.parameters())
    json.dumps(metrics)  # JSON-able as written to metrics.json
    state = load_checkpoint(tmp_path / "checkpoint.npz")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert set(state["model"]) == set(model.state_dict())  # parameters and BN buffers
    assert state["scheduler"]["last_epoch"] == 2
    # no temporary files left beside the checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


@pytest.mark.parametrize("target", TARGETS)
def test_resume_is_bitwise_equal_to_uninterrupted(target, tmp_path):
    x, y = _data()
    with jitnet.use_target(target):
        straight, opt_a, _ = _run(x, y, 3, out_dir=tmp_path / "a")
        _run(x, y, 1, out_dir=tmp_path / "b")
        resumed, opt_b, metrics = _run(x, y, 3, out_dir=tmp_path / "b", resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for pa, pb in zip(opt_a.params, opt_b.params):
        np.testing.assert_array_equal(jitnet.to_numpy(pa.state["momentum_buffer"]),
                                      jitnet.to_numpy(pb.state["momentum_buffer"]))
    assert opt_a.lr == opt_b.lr
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    # the resumed epochs record their rates as the uninterrupted ones do
    assert [h["lr"] for h in metrics["history"]] == pytest.approx(
        [0.05 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)], rel=1e-12)


def test_same_seed_same_threads_is_bitwise_reproducible():
    """Two runs of the reference ConvNet with the same seed end with the same bits (cpu)."""
    x, y = _data(n=40, size=32)
    T = jitnet.data.transforms
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                           T.Normalize(*channel_stats(x))])

    def run():
        jitnet.manual_seed(7)
        model = jitnet.models.convnet().to()
        optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loader = jitnet.data.DataLoader(x, y, batch_size=16, shuffle=True, transform=transform,
                                        seed=7)
        fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x[:8], y[:8], epochs=2,
            quiet=True)
        return model.state_dict()

    with jitnet.use_target("cpu"):
        first, second = run(), run()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_resume_with_jitnet_dataloader(tmp_path):
    x, y = _data()
    T = jitnet.data.transforms
    transform = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip(),
                           T.Normalize(*channel_stats(x))])

    def loader():
        return jitnet.data.DataLoader(x, y, batch_size=16, shuffle=True, drop_last=False,
                                      transform=transform, seed=3)

    with jitnet.use_target("cpu"):
        _check_resume_is_exact(x, y, 2, tmp_path, loader)


def _check_resume_is_exact(x, y, epochs, tmp_path, loader):
    """Train ``epochs`` epochs straight, and 1 then resumed to ``epochs``, each run with
    a fresh ``loader()``: the same parameters, bit for bit."""
    straight, _, _ = _run(x, y, epochs, out_dir=tmp_path / "a", loader=loader())
    _run(x, y, 1, out_dir=tmp_path / "b", loader=loader())
    resumed, _, _ = _run(x, y, epochs, out_dir=tmp_path / "b", resume=True, loader=loader())
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(value, resumed.state_dict()[key], err_msg=key)


def test_resume_with_seeded_transforms_is_bitwise_equal(tmp_path):
    # the transforms' own generators (seed=) were not in the checkpoint: a resumed run
    # cropped and flipped differently from an uninterrupted one
    x, y = _data()
    T = jitnet.data.transforms

    def loader():
        transform = T.Compose([T.RandomCrop(8, padding=2, seed=1),
                               T.RandomHorizontalFlip(seed=2), T.Normalize(*channel_stats(x))])
        return jitnet.data.DataLoader(x, y, batch_size=16, shuffle=True, transform=transform,
                                      seed=3)

    with jitnet.use_target("numpy"):
        _check_resume_is_exact(x, y, 3, tmp_path, loader)
        # another set of seeded transforms does not fit the checkpoint
        unseeded = jitnet.data.DataLoader(x, y, batch_size=16, shuffle=True,
                                          transform=T.RandomCrop(8), seed=3)
        with pytest.raises(CheckpointError, match="does not fit this loader"):
            _run(x, y, 3, out_dir=tmp_path / "b", resume=True, loader=unseeded)


def test_resume_from_a_checkpoint_whose_loader_entry_is_a_bare_generator_state(tmp_path):
    # checkpoints written before the seeded transforms' generators were saved hold the
    # loader's bit-generator state itself as their "loader" entry; resuming one still
    # restores the shuffling, so the next epoch draws the order of an uninterrupted run
    x, y = _data()

    def loader():
        return jitnet.data.DataLoader(x, y, batch_size=16, shuffle=True, seed=3)

    path = tmp_path / "b" / "checkpoint.npz"
    with jitnet.use_target("numpy"):
        straight, _, _ = _run(x, y, 3, out_dir=tmp_path / "a", loader=loader())
        _run(x, y, 1, out_dir=tmp_path / "b", loader=loader())
        with np.load(path) as npz:
            fields = dict(json.loads(str(npz["loader"]))["__dict__"])
        assert fields["transforms"] == {"__list__": [], "tuple": False}
        _rewrite(path, loader=np.array(json.dumps(fields["generator"])))
        legacy = load_checkpoint(path)["loader"]
        assert legacy["bit_generator"] == "PCG64" and "transforms" not in legacy

        probe = loader()  # epochs=1: restores the checkpoint and trains nothing
        _run(x, y, 1, out_dir=tmp_path / "b", resume=True, loader=probe)
        reference = loader()
        list(reference)  # the first epoch, drawn by the 1-epoch run
        np.testing.assert_array_equal(
            np.concatenate([jitnet.to_numpy(xb) for xb, _ in probe]),
            np.concatenate([jitnet.to_numpy(xb) for xb, _ in reference]))

        resumed, _, _ = _run(x, y, 3, out_dir=tmp_path / "b", resume=True, loader=loader())
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(value, resumed.state_dict()[key], err_msg=key)


def test_resume_on_another_target_continues_and_warns(tmp_path):
    # as PyTorch loads a checkpoint onto another device; the targets round differently,
    # so the run cannot be bit for bit an uninterrupted one on either
    x, y = _data()
    with jitnet.use_target("numpy"):
        _run(x, y, 1, out_dir=tmp_path)
    with jitnet.use_target("cpu"), pytest.warns(
            RuntimeWarning, match="saved on the numpy target, on the cpu target: training "
                                  "continues, but not bit for bit"):
        _, _, metrics = _run(x, y, 2, out_dir=tmp_path, resume=True)
    assert metrics["target"] == "cpu" and len(metrics["history"]) == 2
    with jitnet.use_target("cpu"), warnings.catch_warnings():
        warnings.simplefilter("error")  # the same target again: nothing to say
        _run(x, y, 3, out_dir=tmp_path, resume=True)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    x, y = _data()
    with jitnet.use_target("numpy"):
        _run(x, y, 1, out_dir=tmp_path)
        before = (tmp_path / "checkpoint.npz").read_bytes()
        calls = {"n": 0}
        original = nn.SoftmaxCrossEntropyLoss.forward

        def poisoned(self, scores, labels):
            calls["n"] += 1
            value = original(self, scores, labels)
            return float("nan") if calls["n"] == 2 else value

        monkeypatch.setattr(nn.SoftmaxCrossEntropyLoss, "forward", poisoned)
        with pytest.raises(TrainingDiverged, match="nan.*epoch 2, batch 2"):
            _run(x, y, 3, out_dir=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 1


class _RecordingLoss(nn.SoftmaxCrossEntropyLoss):
    """Softmax cross-entropy that keeps each batch's ``(loss, batch size)``."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, scores, labels):
        loss = super().forward(scores, labels)
        self.calls.append((float(loss), len(labels)))
        return loss


def test_history_loss_is_the_epoch_mean_weighted_by_batch_size():
    x, y = _data(n=40)  # batches of 16, 16 and 8
    loss_fn = _RecordingLoss()
    with jitnet.use_target("numpy"):
        jitnet.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        scheduler = optim.StepLR(optimizer, step_size=1, gamma=0.5)
        metrics = fit(model, loss_fn, optimizer, _Loader(x, y, 16, 0), x[:16], y[:16],
                      epochs=2, scheduler=scheduler, quiet=True)
    history = metrics["history"]
    assert [n for _, n in loss_fn.calls] == [16, 16, 8] * 2
    for epoch, entry in enumerate(history):
        losses, sizes = np.array(loss_fn.calls[3 * epoch:3 * epoch + 3]).T
        mean = float(np.sum(losses * sizes) / np.sum(sizes))
        # the data tell the weighted mean from the plain mean and from the last batch
        assert not np.isclose(mean, losses.mean()) and not np.isclose(mean, losses[-1])
        assert entry["loss"] == pytest.approx(mean, rel=1e-12)
        assert entry["images"] == 40
    # StepLR(1, 0.5): each epoch's rate, before the schedule stepped
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.05], rel=1e-12)


def _fit_linear_sgd(x, y, lr, epochs, out_dir):
    """``fit`` of a one-layer linear model on the numpy target by plain SGD at ``lr``."""
    with jitnet.use_target("numpy"):
        jitnet.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
        optimizer = optim.SGD(model.parameters(), lr=lr)
        fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, _Loader(x, y, 8, 0), x, y,
            epochs=epochs, out_dir=out_dir, quiet=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow notes on the way
def test_huge_learning_rate_diverges(tmp_path):
    x, y = _data()
    with pytest.raises(TrainingDiverged, match="learning rate"):
        _fit_linear_sgd(x, y, lr=1e38, epochs=5, out_dir=tmp_path)


def _ctrl_c_inside_a_kernel():
    # what Python raises when SIGINT arrives while a Numba kernel runs: the kernel's
    # dispatcher returns with the KeyboardInterrupt pending
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        raise SystemError("returned a result with an exception set") from exc


@pytest.mark.parametrize("where", ["python", "kernel"])
def test_keyboard_interrupt_keeps_checkpoint(tmp_path, where):
    x, y = _data()

    class Interrupting(_Loader):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == 1:
                    if where == "kernel":
                        _ctrl_c_inside_a_kernel()
                    raise KeyboardInterrupt
                yield batch

    with jitnet.use_target("numpy"):
        model, optimizer, scheduler, _ = _setup(x, y)
        with pytest.raises(TrainingInterrupted, match="after epoch 0"):
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, Interrupting(x, y, 16, 0),
                x, y, epochs=2, scheduler=scheduler, out_dir=tmp_path, quiet=True)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 0


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    x, y = _data()
    with jitnet.use_target("numpy"):
        with pytest.raises(CheckpointError, match="no checkpoint at .*checkpoint.npz"):
            _run(x, y, 1, out_dir=tmp_path, resume=True)
        (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
        with pytest.raises(CheckpointError, match="cannot read checkpoint .*checkpoint.npz"):
            _run(x, y, 1, out_dir=tmp_path, resume=True)


def _rewrite(path, **changes):
    """Rewrite the checkpoint at ``path`` with some entries replaced."""
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _rewrite_member(path, member, change):
    """Rewrite the zip member ``member`` of the .npz at ``path`` as ``change(its bytes)``."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members[member] = change(members[member])
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _flip_a_stored_byte(path, member):
    """Change the last byte of ``member`` in the .npz at ``path``, but not its CRC."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    local = info.header_offset  # the local header: 30 bytes, the name, the extra field
    start = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") + int.from_bytes(
        raw[local + 28:local + 30], "little")
    raw[start + info.compress_size - 1] ^= 1
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name, write, why", [
    ("text", lambda p: p.write_text("garbage\n"), r"not an \.npz archive"),
    # a zip whose first bytes are damaged: np.load read it as a pickle, and the
    # message said "it holds pickled objects"
    ("damaged start", lambda p: p.write_bytes(b"XX" + p.read_bytes()[2:]),
     r"\(not an \.npz archive\)"),
    ("truncated entry", lambda p: _rewrite_member(p, "epoch.npy", lambda b: b[:-2]),
     r"\(ValueError: EOF: reading array data, expected \d+ bytes got \d+\)"),
    ("bad CRC", lambda p: _flip_a_stored_byte(p, "epoch.npy"),
     r"\(BadZipFile: Bad CRC-32 for file 'epoch.npy'\)"),
    ("history no JSON", lambda p: _rewrite(p, history=np.array("[1, 2")),
     r"\(its 'history' entry is no JSON: .+\)"),
    ("config a list", lambda p: _rewrite(p, meta=np.array('{"config": [1]}')),
     r"\(its meta's 'config' is no dict\)"),
    ("optimizer array gone", lambda p: _rewrite(p, optimizer=np.array(
        '{"__array__": "optimizer/99"}')),
     r"\(its 'optimizer' entry does not unpack: KeyError: 'optimizer/99'\)"),
    ("object array", lambda p: _rewrite(p, epoch=np.array([{"a": 1}], dtype=object)),
     "it holds pickled objects, which jitnet never loads"),
    ("meta a list", lambda p: _rewrite(p, meta=np.array("[1, 2]")),
     "its 'meta' entry is a list, expected a dict"),
    ("epoch a str", lambda p: _rewrite(p, epoch=np.array('"2"')),
     "its 'epoch' entry is a str, expected an int"),
    ("no history", lambda p: np.savez(p, format=np.array('"jitnet-checkpoint-1"')),
     "no 'epoch' entry"),
])
def test_what_is_no_jitnet_checkpoint_is_said_so(tmp_path, name, write, why):
    # NumPy's "pickled (object) data ... allow_pickle=" advice or an AttributeError came
    # through before
    x, y = _data(n=16, size=8)
    with jitnet.use_target("numpy"):
        _run(x, y, 1, out_dir=tmp_path)
        write(tmp_path / "checkpoint.npz")
        with pytest.raises(CheckpointError) as info:
            _run(x, y, 2, out_dir=tmp_path, resume=True)
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {tmp_path / 'checkpoint.npz'}: "
                              "not a jitnet checkpoint (")
    assert re.search(why, message), message
    assert "allow_pickle" not in message and "pickle.load" not in message


def test_a_checkpoint_that_cannot_be_opened_says_why(tmp_path, monkeypatch):
    from jitnet.train import checkpoint

    path = tmp_path / "c.npz"
    save_checkpoint(path, nn.Sequential(nn.Linear(2, 2)), epoch=1)

    def denied(*args, **kwargs):  # root reads any file: the OS is made to say no
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match=rf"^cannot read checkpoint {re.escape(str(path))}: "
                                              r"\[Errno 13\] Permission denied: "):
        load_checkpoint(path)


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, nn.Sequential(nn.Linear(2, 2)), epoch=1)
    _rewrite(path, format=np.array('"jitnet-checkpoint-2"'))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is a "
                                              r"'jitnet-checkpoint-2' file, expected "
                                              r"'jitnet-checkpoint-1'$"):
        load_checkpoint(path)


def test_checkpoint_round_trip_of_nested_state(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    model(np.ones((4, 3), np.float32))
    optimizer.step()  # no gradients yet: state stays empty, still saved
    save_checkpoint(tmp_path / "c.npz", model, optimizer, epoch=7,
                    history=[{"loss": 1.5}], meta={"x": [1, 2.5, None]})
    state = load_checkpoint(tmp_path / "c.npz")
    assert state["epoch"] == 7 and state["history"] == [{"loss": 1.5}]
    assert state["meta"] == {"x": [1, 2.5, None]}
    assert state["optimizer"]["betas"] == (0.9, 0.999)
    assert state["optimizer"]["lr"] == 0.1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state["model"][key], value)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_write_json_takes_numpy_values_and_paths_and_refuses_the_rest(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"loss": np.float32(0.5), "epoch": np.int64(3),
                      "curve": np.arange(3), "out": tmp_path})
    assert json.loads(path.read_text()) == {"loss": 0.5, "epoch": 3, "curve": [0, 1, 2],
                                            "out": str(tmp_path)}
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        write_json(path, {"labels": {1, 2}})
    assert json.loads(path.read_text())["epoch"] == 3  # the old file stays


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_write_gives_the_mode_of_the_umask(tmp_path, umask):
    # mkstemp's 0600 made report.json unreadable beside its 0644 pictures
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    previous = os.umask(umask)
    try:
        write_json(path, {"a": 1})  # replacing a file
        atomic_write(tmp_path / "new.bin", lambda f: f.write(b"x"))  # a new one
    finally:
        os.umask(previous)
    for written in (path, tmp_path / "new.bin"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask, written


def test_atomic_write_leaves_the_umask_alone(tmp_path, monkeypatch):
    # reading the umask means setting it, for every thread of the process: a file
    # another thread created in that moment would be world-writable
    def umask(mask):
        raise AssertionError(f"os.umask({mask:#o}) called")

    mask = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", umask)
        atomic_write(tmp_path / "new.bin", lambda f: f.write(b"x"))
    finally:
        monkeypatch.undo()
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["new.bin"]


def test_predict_confusion_and_helpers():
    x, y = _data(20)
    jitnet.manual_seed(0)
    with jitnet.use_target("numpy"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
        pred = predict(model, x, batch_size=7)  # uint8 scaled to [0, 1] as the loader does
        scores = jitnet.to_numpy(model(_scale(x)))
        np.testing.assert_array_equal(pred, scores.argmax(axis=1))
        shifted = predict(model, x, batch_size=7, transform=lambda b: b - 0.5)
        np.testing.assert_array_equal(shifted, jitnet.to_numpy(model(_scale(x) - 0.5)).argmax(1))
    matrix = confusion_matrix(y, pred)
    assert matrix.sum() == 20 and np.trace(matrix) == np.sum(pred == y)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 2, 3)), rtol=1e-4)
    # uint8 by exact histogram sums, float images (in [0, 1], as the DataLoader,
    # Normalize.fit and predict take them) by float64 sums: the same statistics
    for dtype in (np.float32, np.float64):
        for got, want in zip(channel_stats(x), channel_stats(x.astype(dtype) / 255)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    float_fit = jitnet.data.transforms.Normalize.fit(x.astype(np.float32) / 255)
    np.testing.assert_allclose(channel_stats(x.astype(np.float32) / 255)[0], float_fit.mean,
                               rtol=1e-6)
    assert default_epochs(5000) == 24 and default_epochs(4153) == 29
    assert default_epochs(50000) == 10 and default_epochs(64) == 30


def test_resume_with_fewer_epochs_than_the_checkpoint_holds_is_refused(tmp_path):
    # it ran no epoch and returned metrics with epochs=1 beside a 2-epoch history
    x, y = _data(n=16, size=8)
    with jitnet.use_target("numpy"):
        _run(x, y, 2, out_dir=tmp_path)
        before = (tmp_path / "checkpoint.npz").read_bytes()
        with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint.npz already holds "
                                                  r"2 epochs, more than the 1 asked for"):
            _run(x, y, 1, out_dir=tmp_path, resume=True)
        assert (tmp_path / "checkpoint.npz").read_bytes() == before
        _, _, metrics = _run(x, y, 2, out_dir=tmp_path, resume=True)  # as many: nothing to do
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2


class _NoEpoch:
    """A loader that fails the test when an epoch starts."""

    def __len__(self):
        return 1

    def __iter__(self):
        raise AssertionError("an epoch started before the arguments were checked")


def _bad_fit_arguments():
    x, y = _data(n=16, size=8)
    return [
        ("y_test short", {"y_test": y[:3]}, ValueError,
         r"fit expected y_test to hold one label per image of x_test: shape \(16,\), "
         r"got \(3,\)"),
        ("y_test list", {"y_test": list(y)}, TypeError, "fit expected y_test to be an array"),
        ("y_test float", {"y_test": y + 0.5}, ValueError, "fit expected y_test to be integer"),
        ("empty test set", {"x_test": x[:0], "y_test": y[:0]}, ValueError,
         "fit expected at least one test image"),
        ("x_test 3-D", {"x_test": x[:, 0]}, ValueError,
         r"fit expected x_test to be images \(M, C, H, W\), got shape \(16, 8, 8\)"),
        ("eval_batch_size 0", {"eval_batch_size": 0}, ValueError,
         "fit expected eval_batch_size to be an int >= 1, got 0"),
        ("eval_batch_size 2.0", {"eval_batch_size": 2.0}, TypeError,
         "fit expected eval_batch_size to be an int >= 1, got 2.0"),
        ("epochs True", {"epochs": True}, TypeError, "fit expected epochs to be an int >= 0, "
                                                     "got True"),
        ("epochs '2'", {"epochs": "2"}, TypeError, "fit expected epochs to be an int >= 0, "
                                                   r"got '2' \(str\)"),
        ("epochs -1", {"epochs": -1}, ValueError, "fit expected epochs to be an int >= 0"),
        ("quiet 'no'", {"quiet": "no"}, TypeError, "fit expected quiet to be True or False, "
                                                   "got 'no'"),
        ("resume 1", {"resume": 1}, TypeError, "fit expected resume to be True or False"),
        ("resume without out_dir", {"resume": True, "out_dir": None}, ValueError,
         "fit expected an out_dir holding checkpoint.npz with resume=True"),
        ("model_name 3", {"model_name": 3}, TypeError, "fit expected model_name to be a str"),
        ("config list", {"config": [1]}, TypeError, "fit expected config to be a dict"),
        ("out_dir 3", {"out_dir": 3}, TypeError, r"fit expected out_dir to be a folder path "
                                                 r"\(str or os.PathLike\) or None, got 3 \(int\)"),
    ]


@pytest.mark.parametrize("name, changes, error, message", _bad_fit_arguments(),
                         ids=[case[0] for case in _bad_fit_arguments()])
def test_fit_checks_its_arguments_before_any_work(name, changes, error, message, tmp_path):
    x, y = _data(n=16, size=8)
    with jitnet.use_target("numpy"):
        model, optimizer, _, _ = _setup(x, y)
        arguments = {"x_test": x, "y_test": y, "epochs": 1, "out_dir": tmp_path / "out",
                     "quiet": True, **changes}
        with pytest.raises(error, match=message):
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, _NoEpoch(), **arguments)
    assert not (tmp_path / "out").exists()  # no checkpoint either


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (2.0, TypeError),
                                               (True, TypeError)])
def test_predict_checks_batch_size(batch_size, error):
    x, _ = _data(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(error, match="predict expected batch_size to be an int >= 1"):
        predict(model, x, batch_size=batch_size)


def test_fit_rejects_bad_epochs():
    with pytest.raises(ValueError, match="epochs"):
        fit(None, None, None, None, None, None, epochs=-1)


def test_other_system_errors_are_not_taken_for_ctrl_c(tmp_path):
    x, y = _data()

    class Broken(_Loader):
        def __iter__(self):
            raise SystemError("a real bug")
            yield

    with jitnet.use_target("numpy"):
        model, optimizer, scheduler, _ = _setup(x, y)
        with pytest.raises(SystemError, match="a real bug"):
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, Broken(x, y, 16, 0),
                x, y, epochs=1, out_dir=tmp_path, quiet=True)


def _images(n=4, size=32, seed=0):
    r = np.random.default_rng(seed)
    return r.integers(0, 256, (n, 3, size, size)).astype(np.uint8), np.arange(n) % 10


def _bad_runs():
    x, y = _images()
    float_x = x.astype(np.float32) / 255
    return [
        ("inconsistent", (x, y, x, y[:3]), {}, r"y_test must hold one label per image of "
                                               r"x_test: expected shape \(4,\), got \(3,\)"),
        ("label 10", (x, y, x, np.full(4, 10)), {}, "y_test must be labels in 0..9, got 10"),
        ("label -1", (x, y, x, np.array([0, 1, -1, 2])), {}, "got -1 at index 2"),
        ("float labels", (x, y + 0.5, x, y), {}, "y_train must be integer class labels"),
        ("float images", (float_x, y, x, y), {}, "x_train must be uint8 images .* float32"),
        ("16x16", (x[..., :16, :16], y, x, y), {}, r"x_train must be \(N, 3, 32, 32\)"),
        ("NHWC", (x.transpose(0, 2, 3, 1), y, x, y), {}, r"got shape \(4, 32, 32, 3\)"),
        ("empty", (x[:0], y[:0], x, y), {}, "x_train is empty"),
        ("epochs 1.7", (x, y, x, y), {"epochs": 1.7},
         "train_convnet expected epochs to be an int >= 0, got 1.7"),
        ("epochs 'a'", (x, y, x, y), {"epochs": "a"}, "epochs to be an int >= 0, got 'a'"),
        ("batch_size 0", (x, y, x, y), {"batch_size": 0}, "batch_size to be an int >= 1, got 0"),
        ("lr inf", (x, y, x, y), {"lr": float("inf")}, "lr to be a finite number > 0, got inf"),
        ("unknown option", (x, y, x, y), {"momentun": 0.9},
         r"^unknown ConvNet options \['momentun'\]; expected some of \['augment', 'batch_size', "
         r"'batchnorm', 'lr', 'momentum', 'nesterov', 'schedule', 'weight_decay'\]$"),
        ("unknown schedule", (x, y, x, y), {"schedule": "linear"},
         r"^unknown schedule 'linear': expected 'cosine', 'step' or 'none' \('constant' and "
         r"None are 'none' too\)$"),
        ("augment 'no'", (x, y, x, y), {"augment": "no"},
         "train_convnet expected augment to be True or False, got 'no'"),
    ]


@pytest.mark.parametrize("name, arrays, options, message", _bad_runs(),
                         ids=[case[0] for case in _bad_runs()])
def test_train_convnet_checks_its_data_and_settings_before_any_work(
        name, arrays, options, message, tmp_path):
    # a setting of the wrong kind is a TypeError, one out of range or bad data a ValueError
    error = TypeError if name.startswith(("epochs ", "augment ")) else ValueError
    with pytest.raises(error, match=message):
        train_convnet(*arrays, out_dir=tmp_path, quiet=True, **options)
    assert not any(tmp_path.iterdir())  # no checkpoint of a run that cannot be right


@pytest.mark.parametrize("options, message", [
    ({"schedule": "linear"}, r"^unknown schedule 'linear'"),
    ({"momentum": -1}, r"^SGD expected momentum to be a finite number >= 0, got -1$"),
], ids=["schedule", "momentum"])
def test_a_setting_refused_by_the_convnets_parts_leaves_jitnets_generator(options, message):
    # they were refused once train_convnet had reseeded jitnet's generator
    x, y = _images()
    jitnet.manual_seed(123)
    state = jitnet.rng.get_state()
    with pytest.raises(ValueError, match=message):
        train_convnet(x, y, x, y, epochs=1, quiet=True, **options)
    assert jitnet.rng.get_state() == state


@pytest.mark.parametrize("schedule, rates", [("step", [0.01, 0.001]), ("constant", [0.01] * 2)])
def test_train_convnet_schedules(schedule, rates):
    x, y = _images()
    with jitnet.use_target("numpy"):
        result = train_convnet(x, y, x, y, epochs=2, batch_size=4, quiet=True,
                               schedule=schedule)
    assert [h["lr"] for h in result.metrics["history"]] == pytest.approx(rates, rel=1e-12)


def test_train_hog_linear_checks_its_data_first():
    x, y = _images()
    with pytest.raises(ValueError, match="y_test must hold one label per image"):
        train_hog_linear(x, y, x, y[:3], quiet=True)
    with pytest.raises(ValueError, match="train_hog_linear expected epochs to be an int >= 1"):
        train_hog_linear(x, y, x, y, epochs=0, quiet=True)
    with pytest.raises(ValueError, match="^train_hog_linear expected lr to be a finite number "
                                         "> 0, got 0$"):
        train_hog_linear(x, y, x, y, lr=0, quiet=True)


def test_train_hog_linear_takes_lr_and_says_its_accuracy_unless_quiet(capsys):
    x, y = _images(8)
    result = train_hog_linear(x, y, x, y, epochs=1, lr=0.05, quiet=False)
    assert result.metrics["config"]["lr"] == 0.05
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"hog-linear: test accuracy \d+\.\d% in \d+\.\d s", last), last


def test_resume_with_other_settings_is_refused(tmp_path):
    x, y = _data(n=16, size=8)
    with jitnet.use_target("numpy"):
        model, optimizer, scheduler, loader = _setup(x, y)
        args = (model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x, y)
        fit(*args, epochs=1, out_dir=tmp_path, quiet=True, config={"lr": 0.05, "epochs": 1})
        before = (tmp_path / "checkpoint.npz").read_bytes()
        with pytest.raises(CheckpointError, match=r"other settings \(lr=0.05 there, 0.1 now\)"):
            fit(*args, epochs=2, out_dir=tmp_path, resume=True, quiet=True,
                config={"lr": 0.1, "epochs": 2})
        assert (tmp_path / "checkpoint.npz").read_bytes() == before
        # more epochs is what resuming is for
        fit(*args, epochs=2, out_dir=tmp_path, resume=True, quiet=True,
            config={"lr": 0.05, "epochs": 2})
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_step_that_overflows_the_weights_is_divergence_even_with_a_finite_loss(tmp_path):
    """One batch an epoch: its loss is finite, the update it causes is not."""
    x, y = _data(n=8, size=8)
    with pytest.raises(TrainingDiverged, match="parameters became non-finite in epoch 1"):
        _fit_linear_sgd(x, y, lr=1e300, epochs=1, out_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 0


def test_train_convnet_takes_labels_as_lists():
    # fit wants arrays; train_convnet's check takes lists, so it hands fit arrays
    x, y = _images(8)
    with jitnet.use_target("numpy"):
        result = train_convnet(x, list(y), x, list(y), epochs=0, quiet=True)
    assert result.metrics["epochs"] == 0 and 0 <= result.metrics["test_accuracy"] <= 1


def _run_groups(x, y, epochs, out_dir=None, resume=False):
    """:func:`_run` with two parameter groups of their own rates under one cosine schedule."""
    jitnet.manual_seed(0)
    model = _tiny_model().to()
    optimizer = optim.SGD([{"params": model[0].parameters(), "lr": 0.05},
                           {"params": model[1:].parameters(), "lr": 0.01, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.CosineLR(optimizer, 3)
    metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, _Loader(x, y, 16, 0),
                  x[:16], y[:16], epochs=epochs, scheduler=scheduler, out_dir=out_dir,
                  resume=resume, quiet=True, model_name="tiny")
    return model, optimizer, metrics


@pytest.mark.parametrize("target", TARGETS)
def test_fit_with_param_groups_records_the_first_groups_rate_and_resumes_exactly(target,
                                                                                 tmp_path):
    def cosine(base, e):
        return base * (1 + math.cos(math.pi * e / 3)) / 2

    x, y = _data()
    with jitnet.use_target(target):
        straight, opt_a, metrics_a = _run_groups(x, y, 3)
        _run_groups(x, y, 1, out_dir=tmp_path)
        state = load_checkpoint(tmp_path / "checkpoint.npz")
        resumed, opt_b, metrics_b = _run_groups(x, y, 3, out_dir=tmp_path, resume=True)
    # each group is scheduled from its own rate; the history holds the first group's
    assert state["scheduler"]["base_lrs"] == [0.05, 0.01]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx(
        [cosine(0.05, 1), cosine(0.01, 1)], rel=1e-12)
    for metrics in (metrics_a, metrics_b):
        assert [h["lr"] for h in metrics["history"]] == pytest.approx(
            [cosine(0.05, e) for e in range(3)], rel=1e-12)
    a, b = straight.state_dict(), resumed.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [dict(g, params=None) for g in opt_a.param_groups] == [
        dict(g, params=None) for g in opt_b.param_groups]


def test_resume_of_another_models_checkpoint_is_refused_and_changes_nothing(tmp_path):
    x, y = _data(n=16, size=8)
    path = tmp_path / "checkpoint.npz"
    with jitnet.use_target("numpy"):
        _run(x, y, 1, out_dir=tmp_path)  # model_name="tiny"
        written = path.read_bytes()
        model, optimizer, scheduler, loader = _setup(x, y, seed=1)
        before = model.state_dict()
        with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(str(path))} is of "
                                                  r"model 'tiny', not 'other'$"):
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x, y, epochs=2,
                scheduler=scheduler, out_dir=tmp_path, resume=True, quiet=True,
                model_name="other")
    assert path.read_bytes() == written
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


class _Lines:
    """A progress stream with write() and flush() only (no isatty())."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def getvalue(self):
        return "".join(self.parts)


def _epoch_line(epoch, epochs):
    return (rf"epoch {epoch}/{epochs}  loss \d+\.\d{{4}}  train \d+\.\d%  test \d+\.\d%  "
            r"\d+\.\d s  \d+ img/s")


@pytest.mark.parametrize("stream", [io.StringIO, _Lines], ids=["StringIO", "no_isatty"])
def test_fit_writes_a_line_per_epoch_and_one_on_resuming_to_progress(tmp_path, stream):
    x, y = _data(n=16, size=8)
    lines = []
    with jitnet.use_target("numpy"):
        for epochs, resume in ((1, False), (2, True)):
            model, optimizer, scheduler, loader = _setup(x, y)
            progress = stream()  # no terminal: lines, no progress bar
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x, y, epochs=epochs,
                scheduler=scheduler, out_dir=tmp_path, resume=resume, quiet=False,
                progress=progress)
            lines.append(progress.getvalue().splitlines())
    assert len(lines[0]) == 1 and re.fullmatch(_epoch_line(1, 1), lines[0][0]), lines
    assert lines[1][0] == f"resuming {tmp_path / 'checkpoint.npz'} after epoch 1"
    assert len(lines[1]) == 2 and re.fullmatch(_epoch_line(2, 2), lines[1][1]), lines


def test_keyboard_interrupt_without_out_dir_names_the_epoch():
    x, y = _data()

    class Interrupting(_Loader):
        def __iter__(self):
            raise KeyboardInterrupt
            yield

    with jitnet.use_target("numpy"):
        model, optimizer, scheduler, _ = _setup(x, y)
        with pytest.raises(TrainingInterrupted, match=r"^interrupted in epoch 1$"):
            fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, Interrupting(x, y, 16, 0),
                x, y, epochs=2, scheduler=scheduler, quiet=True)


class _Unsized:
    """An iterable of batches without len() (a generator-like loader)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


def test_fit_takes_a_loader_without_len():
    x, y = _data()
    with jitnet.use_target("numpy"):
        model, optimizer, scheduler, loader = _setup(x, y)
        metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, _Unsized(loader), x, y,
                      epochs=1, scheduler=scheduler, quiet=True)
    assert metrics["history"][0]["images"] == len(x)


class _OwnStateLoader:
    """A loader that saves its state itself (state_dict / load_state_dict), with its
    generator under a name the checkpoint does not look for."""

    def __init__(self, x, y, seed):
        self.x, self.y, self.shuffler = x, y, np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.x) // 16)

    def __iter__(self):
        order = self.shuffler.permutation(len(self.x))
        for start in range(0, len(order), 16):
            index = order[start:start + 16]
            yield _scale(self.x[index]), self.y[index]

    def state_dict(self):
        return {"shuffler": self.shuffler.bit_generator.state}

    def load_state_dict(self, state):
        self.shuffler.bit_generator.state = state["shuffler"]


class _Halving:
    """A schedule with step() only: the checkpoint saves its numbers."""

    def __init__(self, optimizer):
        self.optimizer, self.epochs_done = optimizer, 0

    def step(self):
        self.epochs_done += 1
        self.optimizer.lr = 0.05 * 0.5 ** self.epochs_done


def test_resume_with_a_loader_and_a_schedule_of_their_own_is_exact(tmp_path):
    x, y = _data()

    def run(epochs, out_dir, resume=False):
        jitnet.manual_seed(0)
        model = _tiny_model().to()
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer,
                      _OwnStateLoader(x, y, seed=3), x[:16], y[:16], epochs=epochs,
                      scheduler=_Halving(optimizer), out_dir=out_dir, resume=resume, quiet=True)
        return model, metrics

    with jitnet.use_target("numpy"):
        straight, _ = run(3, tmp_path / "a")
        run(1, tmp_path / "b")
        state = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
        resumed, metrics = run(3, tmp_path / "b", resume=True)
    assert state["scheduler"] == {"epochs_done": 1} and set(state["loader"]) == {"shuffler"}
    assert [h["lr"] for h in metrics["history"]] == [0.05, 0.025, 0.0125]
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(value, resumed.state_dict()[key], err_msg=key)


def test_resume_from_a_checkpoint_without_loader_state_leaves_the_loader_as_it_is(tmp_path):
    x, y = _data(n=16, size=8)
    with jitnet.use_target("numpy"):
        saved, optimizer, _, _ = _setup(x, y)
        save_checkpoint(tmp_path / "checkpoint.npz", saved, optimizer, epoch=1)  # no loader
        model, optimizer, scheduler, loader = _setup(x, y, seed=1)
        untouched = loader.generator.bit_generator.state
        fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x, y, epochs=1,
            scheduler=scheduler, out_dir=tmp_path, resume=True, quiet=True)
    assert loader.generator.bit_generator.state == untouched
    for key, value in saved.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[key], err_msg=key)
