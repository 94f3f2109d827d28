"""Time the reference ConvNet's kernels: jitnet cpu vs jitnet numpy vs PyTorch.

For each kernel at its training shape (batch ``B``, float32): the median of
``--repeat`` calls after warm-up (compilation excluded), GFLOP/s, the fractions
of the sgemm rate (``np.dot`` on 1024x1024 float32 matrices) and of the FMA peak
(:func:`common.fma_peak_gflops`) measured in the same run, the speed-up over the
numpy target and over PyTorch (CPU, same thread count; a convolution's gradients
together are the one ``aten::convolution_backward`` call PyTorch's autograd makes,
checked against separate calls for each gradient). Compile times are not
here (building the cases already calls several kernels): bench_train.py's cold
start rows measure them, a first training step with an empty Numba cache. glibc's
mmap threshold is fixed first (:func:`common.steady_malloc`), so that no
contender's time depends on which large blocks the process happened to free before.
With ``--cold`` every contender's caches are evicted before each timed call
(:func:`common.cache_evictor`):
in a training step most kernels read inputs, and write outputs, that other layers'
work has pushed out of the caches since they were last touched, and the two tables
can disagree (see ``benchmarks/RESULTS.md``: conv1's forward was 1.24x PyTorch's warm
and 0.69-0.82x cold before it prefetched its outputs).

Usage::

    NUMBA_NUM_THREADS=2 python benchmarks/bench_kernels.py --batch-size 64 [--cold] [--out FILE.md]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    cache_evictor,
    default_threads,
    fma_peak_gflops,
    machine,
    median_ms,
    sgemm_gflops,
    steady_malloc,
    table,
    torch_or_none,
)

from jitnet.kernels import cpu, numpy_ref  # noqa: E402


def _torch_conv2d_backward(torch, dy, x, w, input_grad=True):
    """PyTorch's gradients of a 3x3 convolution of padding 1 (input, weight, bias) as
    its autograd takes them: one ``aten::convolution_backward`` call, the input's
    gradient left out unless ``input_grad`` (it is then None)."""
    return torch.ops.aten.convolution_backward(
        dy, x, w, [w.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [input_grad, True, True])


def _checked_torch_conv2d_backward(torch, dy, x, w):
    """A call of :func:`_torch_conv2d_backward`, once checked against the gradients of
    separate calls (``torch.nn.grad`` and a sum over the batch and the pixels)."""
    g = torch.nn.grad
    separate = (g.conv2d_input(x.shape, w, dy, padding=1),
                g.conv2d_weight(x, w.shape, dy, padding=1), dy.sum((0, 2, 3)))
    for name, got, want in zip(("input", "weight", "bias"),
                               _torch_conv2d_backward(torch, dy, x, w), separate):
        gap = float((got - want).abs().max())
        if not gap <= 1e-4 * float(want.abs().max()):
            raise RuntimeError(f"aten::convolution_backward's {name} gradient is {gap:.3g} "
                               "from the separate call's")
    return lambda: _torch_conv2d_backward(torch, dy, x, w)


def _cases(batch, rng, cpu=cpu, torch=None):
    """(name, flops, jitnet-cpu call, numpy call, torch call or None) per kernel.

    ``cpu`` is the jitnet cpu kernel module to call (``ab.py`` passes each
    revision's); ``torch`` the PyTorch module, or None for no PyTorch calls."""
    f32 = np.float32
    rows = []
    # the convolution's private gradient kernels: in jitnet/kernels/cpu/conv.py, or
    # in cpu.py itself for a revision from before the cpu target was a package
    conv_kernels = getattr(cpu, "conv", cpu)

    def normal(*shape):
        # 64-byte aligned, as the arrays of a training step are (cpu.asarray); every
        # contender reads the same memory
        return cpu.asarray(rng.standard_normal(shape, dtype=f32))

    def conv(tag, c, f, hw):
        x = normal(batch, c, hw, hw)
        w = normal(f, c, 3, 3)
        b = normal(f)
        dy = normal(batch, f, hw, hw)
        flops = 2.0 * batch * f * hw * hw * c * 9
        t = {}
        if torch is not None:
            tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
            g = torch.nn.grad
            t = {
                "fwd": lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1),
                "bwd-input": lambda: g.conv2d_input(tx.shape, tw, tdy, padding=1),
                "bwd-weight": lambda: g.conv2d_weight(tx, tw.shape, tdy, padding=1),
            }
        rows.append((f"{tag} fwd", flops, lambda: cpu.conv2d_forward(x, w, b, 1, 1, 1),
                     lambda: numpy_ref.conv2d_forward(x, w, b, 1, 1, 1), t.get("fwd")))
        rows.append((f"{tag} bwd-input", flops,
                     lambda: conv_kernels._conv_input_grad(dy, w, x.shape, 1, 1, 1), None,
                     t.get("bwd-input")))
        rows.append((f"{tag} bwd-weight", flops,
                     lambda: conv_kernels._conv_weight_grad(dy, x, w.shape, 1, 1, 1), None,
                     t.get("bwd-weight")))
        # PyTorch's three gradients in the one call its autograd makes
        tb_all = None if torch is None else _checked_torch_conv2d_backward(torch, tdy, tx, tw)
        rows.append((f"{tag} bwd (all)", 2 * flops,
                     lambda: cpu.conv2d_backward(dy, x, w, 1, 1, 1),
                     lambda: numpy_ref.conv2d_backward(dy, x, w, 1, 1, 1), tb_all))
        if c % 32 == 0:  # the gradient a step gives: through ReLU and 2x2 max pooling
            z = cpu.conv2d_forward(x, w, b, 1, 1, 1)
            p, am = cpu.maxpool2d_forward(z, 2, 2)
            dyp = cpu.asarray(cpu.maxpool2d_relu_backward(
                normal(*p.shape), cpu.relu_forward(p), am, z.shape, 2, 2))
            tp = {}
            if torch is not None:
                tdyp = torch.from_numpy(dyp)
                tp = {"bwd-input": lambda: g.conv2d_input(tx.shape, tw, tdyp, padding=1)}
                tp["bwd (all)"] = _checked_torch_conv2d_backward(torch, tdyp, tx, tw)
            # no GFLOP/s: the sparse input gradient skips the zeros' multiply-adds (the
            # weight gradient is the dense kernel's, as in the bwd-weight row)
            rows.append((f"{tag} bwd-input, pooled dy", 0,
                         lambda: conv_kernels._conv_input_grad(dyp, w, x.shape, 1, 1, 1), None,
                         tp.get("bwd-input")))
            rows.append((f"{tag} bwd (all), pooled dy", 0,
                         lambda: cpu.conv2d_backward(dyp, x, w, 1, 1, 1),
                         lambda: numpy_ref.conv2d_backward(dyp, x, w, 1, 1, 1),
                         tp.get("bwd (all)")))
        # The layer as a training step takes it back, from its ReLU'd 2x2 pooling's
        # gradient: the first without an input gradient. jitnet sums the weight and bias
        # gradients from the pooling's windows; PyTorch's autograd runs the ReLU's and
        # the pooling's backward, then the convolution's gradients. (ab.py passes older
        # revisions' cpu modules too, without this function.)
        if hasattr(cpu, "conv2d_maxpool2d_backward"):
            first = c == 3
            pr, amr = cpu.conv2d_maxpool2d_forward(x, w, b, 1, 1, 1, 2, 2, relu=True)
            gp = normal(*pr.shape)
            t_win = None
            if torch is not None:
                tz = t["fwd"]()
                _, t_idx = torch.nn.functional.max_pool2d(tz, 2, return_indices=True)
                tpr, tgp = torch.from_numpy(pr), torch.from_numpy(gp)

                def t_win(first=first, tz=tz, t_idx=t_idx, tpr=tpr, tgp=tgp):
                    d = torch.ops.aten.threshold_backward(tgp, tpr, 0)
                    dz = torch.ops.aten.max_pool2d_with_indices_backward(
                        d, tz, [2, 2], [2, 2], [0, 0], [1, 1], False, t_idx)
                    return _torch_conv2d_backward(torch, dz, tx, tw, input_grad=not first)
            name = "bwd-weight" if first else "bwd (all)"
            rows.append((f"{tag} relu + pool + {name}", 0,
                         lambda: cpu.conv2d_maxpool2d_backward(gp, x, w, amr, 1, 1, 1, 2, 2,
                                                               not first, pr),
                         lambda: numpy_ref.conv2d_maxpool2d_backward(gp, x, w, amr, 1, 1, 1,
                                                                     2, 2, not first, pr),
                         t_win))
        # the convolution and its 2x2 pooling, as nn.Sequential runs them
        pooled = None
        if torch is not None:
            pooled = lambda: torch.nn.functional.max_pool2d(  # noqa: E731
                t["fwd"](), 2, return_indices=True)
        rows.append((f"{tag} fwd + pool", flops,
                     lambda: cpu.conv2d_maxpool2d_forward(x, w, b, 1, 1, 1, 2, 2),
                     lambda: numpy_ref.conv2d_maxpool2d_forward(x, w, b, 1, 1, 1, 2, 2),
                     pooled))

    conv("conv1 3->32 32x32", 3, 32, 32)
    conv("conv2 32->64 16x16", 32, 64, 16)

    a = normal(batch, 32, 32, 32)
    y, am = cpu.maxpool2d_forward(a, 2, 2)
    ta = torch.from_numpy(a) if torch is not None else None
    rows.append(("pool1 fwd", 0, lambda: cpu.maxpool2d_forward(a, 2, 2),
                 lambda: numpy_ref.maxpool2d_forward(a, 2, 2),
                 (lambda: torch.nn.functional.max_pool2d(ta, 2, return_indices=True))
                 if torch is not None else None))
    # the window given, as the layer gives it (2x2 of stride 2: the gather)
    pool_bwd_torch = None
    if torch is not None:
        _, t_idx = torch.nn.functional.max_pool2d(ta, 2, return_indices=True)
        t_dp = torch.from_numpy(y)
        pool_bwd_torch = lambda: torch.ops.aten.max_pool2d_with_indices_backward(  # noqa: E731
            t_dp, ta, [2, 2], [2, 2], [0, 0], [1, 1], False, t_idx)
    rows.append(("pool1 bwd", 0, lambda: cpu.maxpool2d_backward(y, am, a.shape, 2, 2),
                 lambda: numpy_ref.maxpool2d_backward(y, am, a.shape, 2, 2), pool_bwd_torch))

    x = normal(batch, 4096)
    w = normal(256, 4096)
    b = normal(256)
    dy = normal(batch, 256)
    flops = 2.0 * batch * 4096 * 256
    tl = {}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(v) for v in (x, w, b, dy))
        tl = {"fwd": lambda: torch.nn.functional.linear(tx, tw, tb),
              "bwd": lambda: (tdy @ tw, tdy.T @ tx, tdy.sum(0))}
    rows.append(("fc1 4096->256 fwd", flops, lambda: cpu.linear_forward(x, w, b),
                 lambda: numpy_ref.linear_forward(x, w, b), tl.get("fwd")))
    rows.append(("fc1 4096->256 bwd", 2 * flops, lambda: cpu.linear_backward(dy, x, w),
                 lambda: numpy_ref.linear_backward(dy, x, w), tl.get("bwd")))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns each library's group of kernels takes; the best counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads (default: jitnet's, numba.get_num_threads(): "
                             "NUMBA_NUM_THREADS or the CPUs this process may use)")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--cold", action="store_true",
                        help="evict the CPU caches before each timed call (inputs and "
                             "outputs come from memory, as in a training step)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    threads = default_threads(args.threads)
    steady = steady_malloc()  # before any contender allocates
    torch = None if args.no_torch else torch_or_none(threads)

    peak = sgemm_gflops()
    fma = fma_peak_gflops()
    cases = _cases(args.batch_size, np.random.default_rng(0), torch=torch)
    # Each library's kernels are timed as a group, with a pause between groups:
    # OpenBLAS (behind the numpy target) and PyTorch's OpenMP keep their threads
    # spinning for a while after a call, and a jitnet kernel timed right after one of
    # theirs found a core taken (fc1 backward measured 5.6-8.9 ms that way, 1.6 alone).
    # The groups take turns for --rounds rounds and each kernel's best round counts:
    # a 2-core virtual machine has slow spells of seconds, and one spell over one
    # library's group would decide the ratios.
    time.sleep(0.5)
    evict = cache_evictor() if args.cold else None
    groups = [("jitnet", 2, args.repeat)]
    if not args.no_numpy:
        groups.append(("numpy", 3, max(3, args.repeat // 2)))
    if torch is not None:
        groups.append(("torch", 4, args.repeat))
    best = {lib: {} for lib, _, _ in groups}
    for _ in range(args.rounds):
        for lib, column, repeat in groups:
            time.sleep(0.5)
            for case in cases:
                name, call = case[0], case[column]
                if call is not None:
                    t = median_ms(call, repeat=repeat, before=evict)
                    best[lib][name] = min(t, best[lib].get(name, t))
    label = {"jitnet": "jitnet cpu", "numpy": "numpy target", "torch": "PyTorch"}
    t_jits, t_nps, t_torches = best["jitnet"], best.get("numpy", {}), best.get("torch", {})
    rows = []
    for name, flops, _, _, _ in cases:
        t_jit, t_np, t_torch = t_jits[name], t_nps.get(name), t_torches.get(name)
        gflops = flops / (t_jit * 1e6) if flops else None
        rows.append([
            name,
            f"{t_jit:.2f}",
            f"{gflops:.1f}" if gflops else "-",
            f"{gflops / peak:.0%}" if gflops else "-",
            f"{gflops / fma:.0%}" if gflops else "-",
            f"{t_np:.2f}" if t_np else "-",
            f"{t_np / t_jit:.1f}x" if t_np else "-",
            f"{t_torch:.2f}" if t_torch else "-",
            f"{t_torch / t_jit:.2f}x" if t_torch else "-",
        ])
        print("  ".join(rows[-1]), file=sys.stderr)

    lines = [
        f"# Kernels of the reference ConvNet, batch {args.batch_size}, float32", "",
        f"Machine: {machine()}; jitnet threads: "
        f"{default_threads()}, torch threads: {threads}.",
        f"Measured sgemm rate (np.dot 1024^2 float32): {peak:.0f} GFLOP/s; measured "
        f"FMA peak (float32, all threads): {fma:.0f} GFLOP/s. "
        "Median of "
        + ", ".join(f"{repeat} calls ({label[lib]})" for lib, _, repeat in groups)
        + " after 2 warm-up calls"
        + (", the caches evicted before each (`--cold`: the inputs come from memory)"
           if args.cold else "")
        + f", the best of {args.rounds} rounds "
        "taken in turn by the libraries; `speed-up` is the other's time "
        "over jitnet cpu's (> 1: jitnet cpu is faster). glibc's mmap threshold: "
        + ("fixed at 32 MiB (no page faults on fresh large arrays)." if steady
           else "the allocator's default (mallopt unavailable)."), "",
        table(["kernel", "cpu ms", "GFLOP/s", "of sgemm", "of FMA peak", "numpy ms",
               "speed-up vs numpy",
               "torch ms", "speed-up vs torch"], rows), "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
