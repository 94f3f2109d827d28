"""A/B of jitnet revisions in one process: the training step, or kernels, timed in turn.

On a small virtual machine the same code runs at different speeds minutes apart
(2-core Zen 4: PyTorch's step 27.7-46.5 ms in four runs within five minutes), so
figures from separate processes, run one after another, cannot tell a 5% change
from the noise. Here each revision's ``jitnet`` package is imported into one
process under a name of its own (``jitnet_ab_<commit>``), and the revisions take
turns: a block of calls of each case each, for ``--blocks`` blocks, so that a slow
spell falls on all of them. Printed per revision: the minimum and the median of the blocks'
medians, and the median's ratio to the first revision's. Before timing, each
revision's results are compared bit for bit with the first one's: those of the first
three calls of each case and, for the training step, the parameters, batch norm
buffers and momentum buffers after them (a step's loss is computed before its backward
pass and its update, so the losses alone would miss a broken one).

A revision is anything ``git rev-parse`` takes, or ``.`` for the working tree. Past
commits are exported once into ``~/.cache/jitnet-ab/<commit>`` and keep Numba's
cache there, so a second A/B of them does not compile again. The step and the
kernels are bench_train.py's and bench_kernels.py's, called on each revision's
package (importing those scripts loads the installed ``jitnet`` too; it is not
timed). The helper process
that compiles backward kernels ahead (``JITNET_PRECOMPILE``) is off: it would load
the installed ``jitnet``, not the revision.

Usage::

    python benchmarks/ab.py 4070036 .              # the training step, batch 64
    python benchmarks/ab.py --kernels HEAD~2 HEAD  # the reference net's kernels
    python benchmarks/ab.py --batchnorm HEAD .     # jitnet compare's ConvNet's step
"""

import argparse
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_kernels  # noqa: E402
import bench_train  # noqa: E402
from common import default_threads, machine, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitnet-ab"


def export(rev, scratch):
    """The directory holding revision ``rev``'s package, and the package's name."""
    if rev == ".":
        name = "jitnet_ab_worktree"
        parent = Path(scratch) / "worktree"
        shutil.copytree(REPO / "jitnet", parent / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
        return parent, name
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=10",
                                 f"{rev}^{{commit}}"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"ab.py: {rev!r} is not a revision of {REPO}: "
                         f"{exc.stderr.strip()}") from None
    name = f"jitnet_ab_{commit}"
    parent = CACHE / commit
    if not (parent / name).is_dir():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "jitnet"],
                                 capture_output=True, check=True).stdout
        unpacked = Path(tempfile.mkdtemp(dir=scratch))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(unpacked, filter="data")
            else:
                tar.extractall(unpacked)
        parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked / "jitnet"), str(parent / name))
    return parent, name


def training_step(pkg, batch, batchnorm=False):
    """[("step", call)]: bench_train.py's training step of the reference ConvNet (with
    ``batchnorm``, the one with batch norms that ``jitnet compare`` trains)."""
    step, _ = bench_train.jitnet_step("cpu", batch, package=pkg, batchnorm=batchnorm)
    return [("step", step)]


def kernels(pkg, batch):
    """[(name, call)]: bench_kernels.py's kernels, on revision ``pkg``'s cpu target."""
    cpu = importlib.import_module(pkg + ".kernels.cpu")
    cases = bench_kernels._cases(batch, np.random.default_rng(0), cpu=cpu)
    return [(name, call) for name, _, call, _, _ in cases]


#: Calls of each case whose results are compared across revisions (the first compiles).
CHECKED_CALLS = 3


def _arrays(result):
    """A call's result as a flat list of arrays (a loss becomes a 0-d array, a dict its
    values in the order of its sorted keys)."""
    if isinstance(result, dict):
        return [a for key in sorted(result) for a in _arrays(result[key])]
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in _arrays(r)]
    return [] if result is None else [np.asarray(result)]


def _outcome(call):
    """[(what, arrays)]: copies of the results of the first :data:`CHECKED_CALLS` calls
    of ``call`` (a kernel may hand back an array it reuses), then, for a training step,
    the state it has left (``call.state()``, see :func:`bench_train.jitnet_step`)."""
    parts = [(f"call {i + 1}", [np.array(a) for a in _arrays(call())])
             for i in range(CHECKED_CALLS)]
    if hasattr(call, "state"):
        parts.append((f"state after {CHECKED_CALLS} calls", _arrays(call.state())))
    return parts


def _mismatch(got, want):
    """None when two :func:`_outcome` hold the same bits, else where they first differ."""
    for (what, a), (_, b) in zip(got, want):
        gap = _differs(a, b)
        if gap:
            return f"{what}: {gap}"
    return None if len(got) == len(want) else "not the same checks"


def _differs(a, b):
    """None when the results hold the same bits (NaN where NaN), else the largest gap."""
    a, b = _arrays(a), _arrays(b)
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b)):
        return "shapes differ"
    gap = max((float(np.nanmax(np.abs(p.astype(np.float64) - q))) if p.size else 0.0)
              for p, q in zip(a, b))
    same_nan = all(np.array_equal(np.isnan(p), np.isnan(q)) for p, q in zip(a, b)
                   if p.dtype.kind == "f")
    return None if gap == 0 and same_nan else f"largest difference {gap:.3g}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="+", help="git revisions, or . for the working tree")
    parser.add_argument("--kernels", action="store_true",
                        help="time the kernels instead of the training step")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batchnorm", action="store_true",
                        help="the step of the ConvNet with batch norms (jitnet compare's)")
    parser.add_argument("--blocks", type=int, default=20, help="turns each revision takes")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per block")
    parser.add_argument("--out", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    if len(set(args.revisions)) != len(args.revisions):
        parser.error(f"each revision once, got {args.revisions}")
    if args.blocks < 1 or args.calls < 1:
        parser.error(f"--blocks and --calls must be at least 1, got {args.blocks} and "
                     f"{args.calls}")
    if args.kernels and args.batchnorm:
        parser.error("--batchnorm times the training step; leave out --kernels")
    os.environ["JITNET_PRECOMPILE"] = "0"
    build = kernels if args.kernels else (
        lambda pkg, batch: training_step(pkg, batch, args.batchnorm))
    host = machine()
    base = args.revisions[0]
    with tempfile.TemporaryDirectory() as scratch:
        packages = {}
        for rev in args.revisions:
            parent, name = export(rev, scratch)
            same = [r for r, (_, n) in packages.items() if n == name]
            if same:
                parser.error(f"{same[0]!r} and {rev!r} are the same commit")
            packages[rev] = parent, name
        suites, results = {}, {}
        for rev, (parent, name) in packages.items():
            sys.path.insert(0, str(parent))
            t0 = time.perf_counter()
            suites[rev] = build(name, args.batch_size)
            # the first call compiles (or loads) the kernels; these calls warm up too
            results[rev] = [_outcome(call) for _, call in suites[rev]]
            print(f"{rev} ({name}): ready in {time.perf_counter() - t0:.1f} s", flush=True)
            wanted = {case: want for (case, _), want in zip(suites[base], results[base])}
            for (case, _), got in zip(suites[rev], results[rev]):
                gap = _mismatch(got, wanted[case]) if case in wanted else None
                if gap:
                    print(f"  {case}: not the bits of {base} ({gap})")
        # the cases every revision has (a kernel added since the first is left out)
        common = set.intersection(*({case for case, _ in suite} for suite in suites.values()))
        suites = {rev: [(case, call) for case, call in suite if case in common]
                  for rev, suite in suites.items()}
        for rev, suite in suites.items():  # in the first revision's order
            order = {case: i for i, (case, _) in enumerate(suites[base])}
            suite.sort(key=lambda item: order[item[0]])
        times = {rev: {case: [] for case, _ in suite} for rev, suite in suites.items()}
        for _ in range(args.blocks):
            for i in range(len(suites[base])):  # each case, the revisions in turn
                for rev, suite in suites.items():
                    case, call = suite[i]
                    t = []
                    for _ in range(args.calls):
                        start = time.perf_counter()
                        call()
                        t.append(time.perf_counter() - start)
                    times[rev][case].append(1e3 * float(np.median(t)))
    rows = []
    for case, _ in suites[base]:
        for rev in args.revisions:
            blocks = times[rev][case]
            ratio = np.median(blocks) / np.median(times[base][case])
            rows.append([case, rev, f"{min(blocks):.2f}", f"{np.median(blocks):.2f}",
                         f"{ratio:.3f}"])
    report = "\n".join([
        f"# A/B in one process, batch {args.batch_size}, float32"
        + (", the ConvNet with batch norms" if args.batchnorm else ""),
        "",
        f"Machine: {host}; jitnet threads: {default_threads()}. Each revision timed "
        f"{args.calls} calls at a time, in turn, for {args.blocks} blocks; ms of the "
        "blocks' medians.",
        "",
        table(["work", "revision", "min ms", "median ms", "median / first's"], rows),
    ])
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
