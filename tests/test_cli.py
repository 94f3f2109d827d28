"""Tests of the ``jitnet`` command: train, compare, bench, info, errors, Ctrl-C, resume."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
import urllib.error

import numpy as np
import pytest

import jitnet
from jitnet.cli import main
from jitnet.train import TrainingDiverged, load_checkpoint

#: Tiny synthetic runs: a few seconds each on 2 cores.
TINY = ["--data", "synthetic", "--n-train", "64", "--n-test", "32", "--batch-size", "32",
        "--quiet"]
LOUD = TINY[:-1]  # the same, with progress output

METRIC_KEYS = {"model", "target", "test_accuracy", "train_seconds", "history",
               "images_per_second", "parameters", "config", "confusion_matrix"}
# README: every entry of either model has these
HISTORY_KEYS = {"loss", "train_accuracy", "test_accuracy", "seconds", "images_per_second", "lr"}


def _env():
    env = dict(os.environ, NUMBA_NUM_THREADS=os.environ.get("NUMBA_NUM_THREADS", "2"),
               PYTHONUNBUFFERED="1")
    env.pop("JITNET_DEBUG", None)
    return env


def _check_metrics(metrics, model, target):
    assert METRIC_KEYS <= set(metrics)
    assert metrics["model"] == model and metrics["target"] == target
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["train_seconds"] >= 0
    for entry in metrics["history"]:
        assert HISTORY_KEYS <= set(entry)
    assert np.asarray(metrics["confusion_matrix"]).shape == (10, 10)


def test_train_convnet_writes_metrics_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "convnet", "--target", "cpu", "--epochs", "1",
                 "--out", str(out)] + TINY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, "convnet", "cpu")
    assert len(metrics["history"]) == 1 and metrics["config"]["n_train"] == 64
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 1
    assert "test accuracy" in capsys.readouterr().out


def test_train_hog_linear(tmp_path):
    out = tmp_path / "hog"
    assert main(["train", "--model", "hog-linear", "--target", "cpu", "--epochs", "2",
                 "--out", str(out)] + TINY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, "hog-linear", "cpu")
    assert metrics["config"]["batch_size"] == 32  # TINY's --batch-size reaches it
    # each epoch's rate, before the cosine schedule steps: lr, then lr / 2
    assert [e["lr"] for e in metrics["history"]] == pytest.approx(
        [metrics["config"]["lr"], metrics["config"]["lr"] / 2])
    # DESIGN: train writes OUT/checkpoint.npz for either model; this one loads back
    # without a pickle into a classifier that predicts as the trained one did
    from jitnet.models import HogLinearClassifier

    with np.load(out / "checkpoint.npz", allow_pickle=False) as npz:
        classifier = HogLinearClassifier().load_state_dict(npz)
    _, _, x_test, y_test = jitnet.data.synthetic_cifar(64, 32, seed=0)
    predictions = classifier.predict(x_test)
    np.testing.assert_array_equal(np.bincount(y_test * 10 + predictions, minlength=100),
                                  np.ravel(metrics["confusion_matrix"]))


def test_resume_through_the_cli_matches_an_uninterrupted_run(tmp_path):
    common = ["train", "--target", "cpu"] + TINY
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        np.testing.assert_array_equal(value, b["model"][key], err_msg=key)


def test_resume_on_another_target_is_a_one_line_warning(tmp_path, capsys):
    out = tmp_path / "moved"
    common = ["train", "--out", str(out)] + TINY
    assert main(common + ["--target", "numpy", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(common + ["--target", "cpu", "--epochs", "2", "--resume"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"jitnet: warning: resuming {out / 'checkpoint.npz'}, saved on the numpy "
                   "target, on the cpu target: training continues, but not bit for bit as "
                   "it would have on numpy"], err


def test_resume_with_fewer_epochs_is_a_one_line_error_that_writes_nothing(tmp_path, capsys):
    out = tmp_path / "shrink"
    common = ["train", "--target", "numpy", "--out", str(out)] + TINY
    assert main(common + ["--epochs", "2"]) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(common + ["--epochs", "1", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds 2 epochs, more than the 1" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_compare_writes_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--target", "cpu", "--epochs", "1", "--out", str(out)] + TINY) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"hog_linear", "convnet"}
    _check_metrics(report["hog_linear"], "hog-linear", "cpu")
    _check_metrics(report["convnet"], "convnet", "cpu")
    text = (out / "report.md").read_text()
    for picture in ("learning_curves.png", "confusion_matrices.png", "filters.png", "hog.png",
                    "predictions.png"):
        assert (out / picture).stat().st_size > 1000, picture
        assert f"]({picture})" in text
    printed = capsys.readouterr().out
    assert "HoG + linear" in printed and "ConvNet" in printed and "test accuracy" in printed


def test_python_dash_m_jitnet_train(tmp_path):
    out = tmp_path / "sub"
    done = subprocess.run(
        [sys.executable, "-m", "jitnet", "train", "--target", "cpu", "--epochs", "1",
         "--out", str(out)] + TINY, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    _check_metrics(json.loads((out / "metrics.json").read_text()), "convnet", "cpu")


def test_ctrl_c_saves_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "int"
    process = subprocess.Popen(
        [sys.executable, "-m", "jitnet", "train", "--target", "numpy", "--data", "synthetic",
         "--n-train", "512", "--n-test", "32", "--epochs", "20", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        # Ctrl-C's default action even where this run inherited SIGINT ignored (a job
        # started in the background by a shell): Python then installs no handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.npz").exists():  # written before the first batch
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("jitnet: interrupted") and "checkpoint.npz" in last
    assert "Traceback" not in stderr
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] >= 0


def test_diverging_training_exits_3_and_keeps_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    assert main(["train", "--target", "cpu", "--out", str(out), "--epochs", "3",
                 "--lr", "1e38"] + TINY) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("jitnet: training diverged") and len(err.splitlines()) == 1
    assert "learning rate" in err and str(out / "checkpoint.npz") in err
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 0  # the last good state


def test_corrupt_or_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "bad"
    args = ["train", "--target", "cpu", "--epochs", "1", "--out", str(out), "--resume"] + TINY
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / "checkpoint.npz") in err
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"\x00garbage")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err
    assert str(out / "checkpoint.npz") in err


def test_missing_data_dir_is_one_line_error(tmp_path, capsys):
    assert main(["train", "--data", "cifar10", "--data-dir", str(tmp_path / "nowhere"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err and "Traceback" not in err


def test_unknown_and_unavailable_targets(capsys):
    assert main(["train", "--target", "tpu"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    if "cuda" in jitnet.available_targets():
        pytest.skip("cuda is available here")
    assert main(["train", "--target", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cuda target is unavailable" in err


@pytest.mark.parametrize("option, text, wanted", [
    ("--epochs", "abc", "a non-negative integer"),
    ("--epochs", "-1", "a non-negative integer"),
    ("--n-train", "0", "a positive integer"),
    ("--lr", "abc", "a positive finite number"),
    ("--lr", "inf", "a positive finite number"),
    ("--lr", "nan", "a positive finite number"),
])
def test_a_bad_number_is_a_usage_error_naming_the_option(option, text, wanted, capsys):
    assert main(["train", option, text]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected {wanted}, got {text!r}" in err, err
    assert "_int" not in err and "_float" not in err  # no internal function names


def test_a_bad_jitnet_target_is_a_one_line_error_and_info_says_why(monkeypatch, capsys):
    from jitnet import targets

    monkeypatch.setattr(targets, "_active", "tpu")  # as the import leaves them; put back
    monkeypatch.setattr(targets, "_environment_error",
                        (ValueError, "JITNET_TARGET='tpu' is not a target"))
    assert main(["train", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jitnet: error: JITNET_TARGET='tpu' is not a target"
    assert main(["info"]) == 0
    assert "active target      none (JITNET_TARGET='tpu' is not a target)" in (
        capsys.readouterr().out)
    # --target overrides it for that command (the run itself: test_train_convnet_writes_...)
    assert main(["bench", "--target", "numpy", "--batch-size", "1", "--repeat", "1"]) == 0
    assert "numpy" in capsys.readouterr().out
    with pytest.raises(ValueError, match="JITNET_TARGET='tpu' is not a target"):
        jitnet.get_target()  # and only for it


@pytest.mark.parametrize("command", ["bench", "train", "train-fails"])
def test_target_holds_for_the_command_only(command, tmp_path, capsys):
    # main() in the caller's own process (a notebook, a test) leaves its active target
    # as it was, whether the command succeeds or fails
    previous = jitnet.get_target()
    other = "numpy" if previous != "numpy" else "cpu"
    argv = {"bench": ["bench", "--batch-size", "1", "--repeat", "1"],
            "train": ["train", "--epochs", "1", "--out", str(tmp_path / "out")] + TINY,
            "train-fails": ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "none"),
                            "--quiet"]}[command]
    assert main(argv[:1] + ["--target", other] + argv[1:]) == (2 if "fails" in command else 0)
    assert jitnet.get_target() == previous


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("jitnet", "numpy", "numba", "python", "NUMBA_NUM_THREADS", "threading layer",
                 "available targets", "cuda", "cpu kernels", "LLVM -O"):
        assert word in out, word


def test_bench_small(tmp_path, capsys):
    assert main(["bench", "--target", "cpu", "--batch-size", "2", "--repeat", "1",
                 "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "training step" in table and "conv1 forward" in table
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert all(r["numpy_ms"] > 0 and r["target_ms"] > 0 for r in rows)


@pytest.mark.parametrize("command", ["train", "compare", "bench", "info"])
def test_help_explains_every_option(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: jitnet " + command)
    from jitnet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    flat = " ".join(text.split())
    for action in sub._actions:
        assert action.help, action.option_strings
        # every default worth saying is said, 0 included (0 == False hid --seed's)
        if action.option_strings and not any(
                action.default is unsaid for unsaid in (None, False, argparse.SUPPRESS)):
            helped = " ".join(sub._get_formatter()._get_help_string(action).split())
            assert "default" in helped, action.option_strings
    if command in ("train", "compare"):
        assert "--seed S seeds initialisation, shuffling and augmentation (default: 0)" in flat


@pytest.mark.parametrize("command, out", [
    (["bench", "--target", "numpy", "--batch-size", "1", "--repeat", "1"], "afile"),
    (["train", "--model", "hog-linear"] + TINY, "afile/x"),
    (["train", "--model", "convnet"] + TINY, "afile"),
    (["compare"] + TINY, "afile"),
])
def test_out_must_be_a_folder_before_any_work(tmp_path, monkeypatch, capsys, command, out):
    # bench ran its whole benchmark and hog-linear its whole fit before finding out
    from jitnet import report, train

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    for module, name in ((report, "benchmark"), (train, "train_hog_linear"),
                         (train, "train_convnet"), (train, "precompile_convnet")):
        monkeypatch.setattr(module, name, no_work)
    (tmp_path / "afile").write_text("hi")
    assert main(command + ["--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jitnet: error: --out expected a folder, got {tmp_path / out} (")
    assert len(err.splitlines()) == 1 and "a file" in err
    assert (tmp_path / "afile").read_text() == "hi"


def test_too_little_memory_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    # --n-train 1000000000000 ended in NumPy's MemoryError traceback and exit status 1
    def huge(n_train, n_test, seed):
        raise MemoryError(f"Unable to allocate 7.28 TiB for an array with shape ({n_train},) "
                          "and data type int64")

    monkeypatch.setattr(jitnet.data, "synthetic_cifar", huge)
    assert main(["train", "--n-train", "1000000000000", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jitnet: error: out of memory: Unable to allocate 7.28 TiB")
    assert len(err.splitlines()) == 1 and "--n-train" in err


@pytest.mark.parametrize("command", ["train", "compare"])
def test_data_dir_defaults_to_where_download_cifar10_puts_it(command, capsys):
    from jitnet.cli import build_parser

    args = build_parser().parse_args([command])
    assert args.data_dir == jitnet.data.default_root()
    assert main([command, "--help"]) == 0
    assert str(jitnet.data.default_root()) in " ".join(capsys.readouterr().out.split())


def _option_help(command, option):
    from jitnet.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return " ".join(next(a for a in sub._actions if option in a.option_strings).help.split())


@pytest.mark.parametrize("option", ["--epochs", "--batch-size", "--lr"])
def test_help_says_which_model_a_budget_option_reaches(option):
    # compare trains HoG-linear with its tuned defaults whatever these say; train
    # --model hog-linear applies them (--batch-size was silently ignored there)
    assert "the HoG-linear classifier keeps its tuned" in _option_help("compare", option)
    assert "hog-linear" in _option_help("train", option)


@pytest.mark.parametrize("raised", ["interrupt", "inside a kernel", "other"])
def test_ctrl_c_inside_a_kernel_exits_130_too(monkeypatch, capsys, raised):
    from jitnet import cli

    def info(args):
        if raised == "other":
            raise SystemError("a real bug")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            if raised == "interrupt":
                raise
            # what Python raises when SIGINT arrives while a Numba kernel runs
            raise SystemError("returned a result with an exception set") from exc

    monkeypatch.setattr(cli, "cmd_info", info)
    if raised == "other":  # not taken for Ctrl-C
        with pytest.raises(SystemError, match="a real bug"):
            main(["info"])
        return
    assert main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "jitnet: interrupted"


def test_resume_with_hog_linear_is_a_one_line_error_before_any_work(
        tmp_path, monkeypatch, capsys):
    # --resume is ConvNet-only (its help says so): hog-linear must not quietly fit afresh
    from jitnet import train

    def no_work(*args, **kwargs):
        raise AssertionError("hog-linear started training despite --resume")

    monkeypatch.setattr(train, "train_hog_linear", no_work)
    out = tmp_path / "hog"
    assert main(["train", "--model", "hog-linear", "--resume", "--out", str(out)] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("jitnet: error: --resume is for --model convnet (hog-linear fits in one "
                   "go)"), err
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["bench", "--target", "numpy", "--batch-size", "1", "--repeat", "1"],
    ["train", "--model", "hog-linear"] + TINY,
    ["train", "--model", "convnet"] + TINY,
    ["compare"] + TINY,
])
def test_out_that_cannot_be_written_is_refused_before_any_work(
        tmp_path, monkeypatch, capsys, command):
    # the tests run as root, for whom os.access(..., W_OK) is always True whatever the
    # mode bits: so the OS is made to say no for this test's folder
    from jitnet import cli, report, train

    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and str(path).startswith(str(tmp_path)):
            return False
        return real_access(path, mode, *args, **kwargs)

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(cli.os, "access", access)
    for module, name in ((report, "benchmark"), (train, "train_hog_linear"),
                         (train, "train_convnet"), (train, "precompile_convnet")):
        monkeypatch.setattr(module, name, no_work)
    out = tmp_path / "o"
    assert main(command + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"jitnet: error: --out expected a folder that can be written, got {out} "
                   f"({tmp_path} is not writable)"), err
    assert list(tmp_path.iterdir()) == []


def _write_cifar_folder(folder, n_train, n_test):
    """A CIFAR-format folder of random images: data_batch_1 and test_batch; returns the
    test labels."""
    import pickle

    r = np.random.default_rng(5)
    folder.mkdir(parents=True)
    labels = {}
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        labels[name] = np.arange(n) % 10
        data = r.integers(0, 256, (n, 3072)).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels[name].tolist()}, f, protocol=2)
    return labels["test_batch"]


def test_cifar10_n_train_and_n_test_keep_the_first_images_of_each_set(tmp_path, capsys):
    y_test = _write_cifar_folder(tmp_path / "data" / "cifar-10-batches-py", 20, 20)
    out = tmp_path / "run"
    assert main(["train", "--model", "convnet", "--target", "numpy", "--data", "cifar10",
                 "--data-dir", str(tmp_path / "data"), "--n-train", "12", "--n-test", "7",
                 "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["n_train"] == 12 and metrics["config"]["n_test"] == 7
    assert metrics["history"][0]["images"] == 12
    # the confusion matrix counts the first 7 test images, by their true class
    matrix = np.asarray(metrics["confusion_matrix"])
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(y_test[:7], minlength=10))
    assert "test accuracy" in capsys.readouterr().out


def test_zero_epochs_is_accepted_and_writes_the_untrained_run(tmp_path, capsys):
    # --epochs takes a non-negative integer: 0 evaluates the initial ConvNet
    out = tmp_path / "zero"
    assert main(["train", "--model", "convnet", "--target", "numpy", "--epochs", "0",
                 "--out", str(out)] + TINY) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, "convnet", "numpy")
    assert metrics["epochs"] == 0 and metrics["history"] == []
    assert metrics["config"]["epochs"] == 0 and metrics["train_seconds"] == 0
    assert np.sum(metrics["confusion_matrix"]) == 32  # TINY's --n-test
    state = load_checkpoint(out / "checkpoint.npz")
    assert state["epoch"] == 0 and state["history"] == []
    assert "convnet: test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("raised, status, line", [
    (TrainingDiverged("training diverged in epoch 2"), 3, "jitnet: training diverged in epoch 2"),
    (MemoryError("Unable to allocate 8.00 GiB"), 2,
     "jitnet: error: out of memory: Unable to allocate 8.00 GiB; use fewer images (--n-train, "
     "--n-test) or a smaller --batch-size"),
    (ValueError("a bad value"), 2, "jitnet: error: a bad value"),
], ids=["diverged", "memory", "bad_input"])
def test_jitnet_debug_shows_the_traceback_instead_of_the_line(monkeypatch, capsys, raised,
                                                              status, line):
    from jitnet import cli

    def info(args):
        raise raised

    monkeypatch.setattr(cli, "cmd_info", info)
    monkeypatch.delenv("JITNET_DEBUG", raising=False)
    assert main(["info"]) == status
    assert capsys.readouterr().err.strip() == line
    monkeypatch.setenv("JITNET_DEBUG", "1")
    with pytest.raises(type(raised)) as caught:
        main(["info"])
    assert caught.value is raised and capsys.readouterr().err == ""


@pytest.mark.parametrize("named", [False, True], ids=["file_not_in_message", "file_in_message"])
def test_an_os_error_names_its_file_once(monkeypatch, capsys, named):
    from jitnet import cli

    def info(args):
        if named:  # OSError's message names the file already
            raise FileNotFoundError(2, "No such file or directory", "/data/x")
        # an OSError whose message leaves out its filename (here the URL)
        raise urllib.error.HTTPError("http://host/x.tar.gz", 404, "Not Found", {}, None)

    monkeypatch.setattr(cli, "cmd_info", info)
    assert main(["info"]) == 2
    assert capsys.readouterr().err.strip() == (
        "jitnet: error: [Errno 2] No such file or directory: '/data/x'" if named
        else "jitnet: error: HTTP Error 404: Not Found: http://host/x.tar.gz")


def test_train_without_quiet_says_what_it_trains_and_where(tmp_path, capsys):
    out = tmp_path / "loud"
    assert main(["train", "--target", "numpy", "--epochs", "0", "--out", str(out)] + LOUD) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        f"training convnet on synthetic (64 train / 32 test images) on the numpy target; "
        f"writing to {out}")


def test_compare_without_quiet_says_what_it_compares(tmp_path, monkeypatch, capsys):
    from jitnet import train

    def stop(*args, **kwargs):
        raise ValueError("stopped before any training")

    monkeypatch.setattr(train, "precompile_convnet", stop)
    assert main(["compare", "--target", "numpy", "--out", str(tmp_path / "cmp")] + LOUD) == 2
    assert capsys.readouterr().err.splitlines() == [
        "comparing hog-linear and convnet on synthetic (64 train / 32 test images) on the "
        "numpy target", "jitnet: error: stopped before any training"]


@pytest.mark.parametrize("data, names", [
    ("cifar10", ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]),
    ("synthetic", list(jitnet.data.CLASS_NAMES)),
])
def test_the_report_names_the_classes_of_its_data_set(data, names):
    from jitnet import cli

    assert cli._class_names(argparse.Namespace(data=data)) == names


def _info(capsys):
    """``jitnet info``'s lines as a dict: name -> value."""
    assert main(["info"]) == 0
    return dict(re.match(r"(.*?) {2,}(.*)$", line).groups()
                for line in capsys.readouterr().out.splitlines())


def test_info_names_numbas_level_when_jitnet_sets_none(monkeypatch, capsys):
    import numba

    from jitnet import codegen

    monkeypatch.setattr(codegen, "opt_level", lambda: None)  # NUMBA_OPT set, say
    assert _info(capsys)["cpu kernels"] == (
        f"LLVM -O{int(numba.config.OPT)} (Numba's level, NUMBA_OPT)")


def test_info_says_why_there_is_no_threading_layer(monkeypatch, capsys):
    import numba

    def no_layer():
        raise ValueError("No threading layer could be loaded.")

    monkeypatch.setattr(numba, "threading_layer", no_layer)
    assert _info(capsys)["threading layer"] == "unavailable (No threading layer could be loaded.)"


def _no_device_info():
    raise RuntimeError("driver gone")


@pytest.mark.parametrize("device_info, lines", [
    (lambda: {"name": "Fake GPU", "memory": "80 GiB"},
     {"gpu name": "Fake GPU", "gpu memory": "80 GiB"}),
    (lambda: "Fake GPU (sm_90)", {"gpu": "Fake GPU (sm_90)"}),
    (_no_device_info, {"cuda": "available, but device_info failed: driver gone"}),
], ids=["dict", "text", "fails"])
def test_info_describes_the_gpu_of_a_usable_cuda_target(monkeypatch, capsys, device_info, lines):
    # the cuda backend is faked: only what info prints of it is tested here
    from jitnet import targets

    real = targets.backend
    cuda = types.SimpleNamespace(device_info=device_info)
    monkeypatch.setattr(targets, "backend", lambda name=None: cuda if name == "cuda"
                        else real(name))
    info = _info(capsys)
    assert {key: info[key] for key in lines} == lines
    assert ("cuda" in info) == ("cuda" in lines)  # informational: info still exits 0
