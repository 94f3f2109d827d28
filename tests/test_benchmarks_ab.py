"""benchmarks/ab.py: revisions exported as packages of their own, results compared bit for bit.

The timing itself is not tested (no timing is asserted anywhere); a whole A/B compiles
every kernel once per revision, too slow for CI.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ab(load_benchmark):
    return load_benchmark("ab")


def test_the_working_tree_is_copied_under_its_own_name(ab, tmp_path):
    parent, name = ab.export(".", tmp_path)
    assert name == "jitnet_ab_worktree"
    package = parent / name
    assert (package / "__init__.py").read_bytes() == (ROOT / "jitnet" / "__init__.py").read_bytes()
    assert (package / "kernels" / "cpu" / "conv.py").is_file()
    assert not list(package.rglob("__pycache__"))


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout")
def test_a_commit_is_exported_once_into_the_cache(ab, tmp_path, monkeypatch):
    monkeypatch.setattr(ab, "CACHE", tmp_path / "cache")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    parent, name = ab.export("HEAD", tmp_path)
    assert name == f"jitnet_ab_{commit}" and parent == tmp_path / "cache" / commit
    committed = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:jitnet/kernels/cpu/conv.py"],
                               capture_output=True, check=True).stdout
    assert (parent / name / "kernels" / "cpu" / "conv.py").read_bytes() == committed
    marker = parent / name / "kept.txt"
    marker.write_text("a second export reuses the first")
    assert ab.export("HEAD", tmp_path) == (parent, name) and marker.is_file()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout")
def test_an_unknown_revision_is_a_clear_error(ab, tmp_path, monkeypatch):
    monkeypatch.setattr(ab, "CACHE", tmp_path / "cache")
    with pytest.raises(SystemExit, match="'no-such-rev' is not a revision of"):
        ab.export("no-such-rev", tmp_path)


def test_arguments_are_checked(ab, capsys):
    with pytest.raises(SystemExit):
        ab.main(["HEAD", "HEAD"])
    assert "each revision once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ab.main(["HEAD", ".", "--blocks", "0"])
    assert "--blocks and --calls must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ab.main(["HEAD", ".", "--kernels", "--batchnorm"])
    assert "--batchnorm times the training step" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout")
def test_two_names_of_one_commit_are_refused(ab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ab, "CACHE", tmp_path / "cache")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    with pytest.raises(SystemExit):
        ab.main(["HEAD", commit])
    assert f"'HEAD' and '{commit}' are the same commit" in capsys.readouterr().err


def test_results_compare_bit_for_bit(ab):
    a = np.array([1.0, np.nan, -0.0], dtype=np.float32)
    assert ab._differs((a, 2.5), (a.copy(), 2.5)) is None
    assert ab._differs(a, np.array([1.0, np.nan, 0.0], dtype=np.float32)) is None  # 0 == -0
    assert ab._differs(a, np.array([1.0, 2.0, 0.0], dtype=np.float32)) is not None  # NaN lost
    assert ab._differs(np.float32(1), np.nextafter(np.float32(1), np.float32(2))) == (
        "largest difference 1.19e-07")  # one ulp
    assert ab._differs(a, a[:2]) == "shapes differ"


def test_a_step_whose_update_does_nothing_is_not_the_same_bits(ab, monkeypatch):
    # the loss of the first call comes before any update: the later calls and the
    # parameters and momentum buffers they leave are what tell a broken step
    import jitnet
    from jitnet import optim

    with jitnet.use_target("cpu"):
        (_, step), = ab.training_step("jitnet", 4)
        want = ab._outcome(step)
        (_, again), = ab.training_step("jitnet", 4)
        assert ab._mismatch(ab._outcome(again), want) is None
        monkeypatch.setattr(optim.SGD, "step", lambda self: None)
        (_, broken), = ab.training_step("jitnet", 4)
        got = ab._outcome(broken)
    assert [what for what, _ in want] == ["call 1", "call 2", "call 3",
                                          "state after 3 calls"]
    assert ab._differs(got[0][1], want[0][1]) is None
    assert ab._mismatch(got, want).startswith("call 2: largest difference")


def test_the_state_after_the_calls_is_compared_too(ab):
    def call():
        return 1.0

    call.state = lambda: ({"0.weight": np.ones(3)}, {"lr": 0.1, "state": [{"b": np.ones(3)}]})
    want = ab._outcome(call)
    call.state = lambda: ({"0.weight": np.ones(3)}, {"lr": 0.1, "state": [{"b": np.zeros(3)}]})
    assert ab._mismatch(ab._outcome(call), want) == "state after 3 calls: largest difference 1"
