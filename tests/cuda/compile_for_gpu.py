"""Compile every cuda kernel for a real GPU architecture, without a GPU.

The simulator runs kernels as Python, so it cannot catch what only the CUDA
compiler sees (typing of uint64 and mixed-precision arithmetic, unsupported
functions, shared-memory sizes). This script calls every public function of
:mod:`jitnet.kernels.cuda` on small float32 and float64 inputs with the launches
intercepted: each ``kernel[grid, block](*args)`` is compiled to PTX for
``--cc`` (default 9.0, H100) with the argument types the real launch would have,
instead of running. With ``--ptxas`` each PTX is also assembled by ``ptxas -v``,
which reports registers, spills and shared memory per kernel.

Needs numba-cuda with NVVM and NVRTC (the CUDA toolkit or its pip wheels), but no
driver and no GPU. Not a pytest module: run it directly, without the simulator::

    python tests/cuda/compile_for_gpu.py [--cc 9.0] [--ptxas /usr/local/cuda/bin/ptxas]
"""

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import types

import numba
import numpy as np

if numba.config.ENABLE_CUDASIM:
    raise SystemExit("run compile_for_gpu.py without NUMBA_ENABLE_CUDASIM=1")

from numba import cuda  # noqa: E402, I001  (after the check above)
from numba.cuda import dispatcher as cuda_dispatcher  # noqa: E402

from jitnet import config  # noqa: E402
hog_module = importlib.import_module("jitnet.features.hog")  # the module, not the function
from jitnet.kernels import cuda as k  # noqa: E402


class FakeDeviceArray(np.ndarray):
    """A host array standing in for a device array: same typing, no driver needed."""

    def copy_to_host(self):
        return np.array(self)

    def copy_to_device(self, ary):
        self[...] = ary

    def is_c_contiguous(self):
        return self.flags.c_contiguous


def _fake(a):
    return np.ascontiguousarray(a).view(FakeDeviceArray)


_compiled = {}


def _compile_instead_of_launch(cc):
    def getitem(dispatcher, launch):
        def launch_kernel(*args):
            signature = tuple(numba.typeof(a) for a in args)
            key = (dispatcher.py_func.__qualname__, id(dispatcher.py_func), signature)
            if key not in _compiled:
                ptx, _ = cuda.compile_ptx(dispatcher.py_func, signature, cc=cc)
                name = dispatcher.py_func.__qualname__.replace(".<locals>.", ".")
                _compiled[key] = (name, signature, ptx)

        return launch_kernel

    return getitem


def _exercise(dtype, rng):
    def arr(*shape):
        return k.asarray(rng.standard_normal(shape).astype(dtype))

    for n, c, f, h, w, ks, stride, padding, groups in [
        (2, 3, 5, 5, 7, 3, 2, 1, 1),
        (1, 4, 6, 5, 7, 3, 1, 2, 2),
        (2, 3, 3, 5, 7, 3, 1, 1, 3),
        (1, 6, 4, 5, 7, 1, 2, 0, 1),
        (1, 3, 8, 9, 9, 5, 1, 2, 1),
    ]:
        x, wt = arr(n, c, h, w), arr(f, c // groups, ks, ks)
        y = k.conv2d_forward(x, wt, arr(f), stride, padding, groups)
        k.conv2d_forward(x, wt, None, stride, padding, groups)
        k.conv2d_backward(arr(*y.shape), x, wt, stride, padding, groups)
    for relu in (False, True):  # the convolution that pools its own outputs
        k.conv2d_maxpool2d_forward(arr(2, 3, 8, 8), arr(4, 3, 3, 3), arr(4), 1, 1, 1, 2, 2,
                                   relu=relu)
    x = arr(2, 3, 6, 8)
    y, argmax = k.maxpool2d_forward(x, 2, 2)
    k.maxpool2d_backward(arr(*y.shape), argmax, x.shape)
    k.maxpool2d_backward(arr(*y.shape), argmax, x.shape, 2, 2)  # the one-launch gather
    xf, wf = arr(5, 7), arr(6, 7)
    k.linear_forward(xf, wf, arr(6))
    k.linear_backward(arr(5, 6), xf, wf)
    k.linear_forward(xf, wf, arr(6), relu=True)  # the ReLU in the product's epilogue
    k.linear_backward(arr(5, 6), xf, wf, relu_y=xf)  # and its backward in dx's
    y, argmax = k.maxout_forward(xf, wf, arr(6), 2)
    k.maxout_backward(arr(5, 3), xf, wf, argmax, 2)
    for name in ("relu", "sigmoid", "tanh"):
        out = getattr(k, name + "_forward")(x)
        getattr(k, name + "_backward")(x, out)
    k.leaky_relu_backward(x, k.leaky_relu_forward(x, 0.1), 0.1)
    k.elu_backward(x, x, k.elu_forward(x, 1.0), 1.0)
    y, mask = k.dropout_forward(x, 0.3, 2**62 + 1)
    k.dropout_backward(x, mask)
    gamma, beta, mean, var = arr(3), arr(3), arr(3), arr(3)
    for training in (True, False):
        _, mu, invstd = k.batchnorm2d_forward(x, gamma, beta, mean, var, 0.1, 1e-5, training)
    k.batchnorm2d_backward(x, x, gamma, mu, invstd)
    k.batchnorm2d_maxpool2d_forward(x, gamma, beta, mean, var, 0.1, 1e-5, True, 2, 2, relu=True)
    scores, labels = arr(4, 5), k.asarray(np.array([0, 1, 2, 4]))
    k.softmax_cross_entropy(scores, labels)
    k.multiclass_hinge(scores, labels, 1.0)
    for loss in (k.bce_with_logits, k.mse, k.l1):
        loss(scores, arr(4, 5))
    p, g = arr(4, 5), arr(4, 5)
    k.sgd_update(p, g, None, 0.1, 0.0, False, 0.0)
    k.sgd_update(p, g, arr(4, 5), 0.1, 0.9, True, 1e-4)
    k.sgd_update_many([p, arr(3)], [g, arr(3)], [None, None], 0.1, 0.0, False, 0.0)
    k.sgd_update_many([p, arr(3)], [g, arr(3)], [arr(4, 5), arr(3)], 0.1, 0.9, True, 1e-4)
    k.adam_update(p, g, arr(4, 5), arr(4, 5), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    k.adam_update_many([p, arr(3)], [g, arr(3)], [arr(4, 5), arr(3)], [arr(4, 5), arr(3)], 1e-3,
                       0.9, 0.999, 1e-8, 0.0, [1, 1])
    k.asarray(x, np.float64 if dtype == np.float32 else np.float32)
    k.zeros((3, 4), dtype)


def _exercise_features(rng):
    """HoG (every block norm) and colour histograms on uint8, float32 and float64 images."""
    bounds = hog_module._bin_bounds(9)
    special = hog_module._special_bins(bounds)
    for dtype in (np.uint8, np.float32, np.float64):
        images = (rng.random((2, 3, 16, 16)) * 255).astype(dtype)
        for code in range(4):
            k.hog(_fake(images), bounds, special, (8, 8), (2, 2), code)
        k.color_histogram(_fake(images), 255.0, np.array([0, 1, 2]), 10)


def _ptxas_report(ptxas, cc, ptx):
    """``ptxas -v`` summary: registers, spill bytes, shared memory bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        arch = f"sm_{cc[0]}{cc[1]}"
        result = subprocess.run(
            [ptxas, "-v", f"-arch={arch}", path, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True, text=True, check=True,
        )
    text = result.stderr
    registers = re.findall(r"Used (\d+) registers", text)
    spills = re.findall(r"(\d+) bytes spill stores", text)
    smem = re.findall(r"(\d+) bytes smem", text)
    return (
        f"{registers[-1] if registers else '?':>4} regs  "
        f"{spills[-1] if spills else '0':>4} B spill  {smem[-1] if smem else '0':>6} B smem"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0, H100)")
    parser.add_argument("--ptxas", default=None, help="path of ptxas for a resource report")
    parser.add_argument("--dump", default=None, help="folder to write every PTX into")
    args = parser.parse_args(argv)
    cc = tuple(int(v) for v in args.cc.split("."))

    # Intercept allocation, copies and launches: nothing touches a driver.
    cuda.device_array = lambda shape, dtype=np.float64: np.empty(shape, dtype).view(
        FakeDeviceArray
    )
    cuda.to_device = _fake
    k.arrays._pool_usable = lambda: False  # no context to ask; the pool is only Python
    cuda_dispatcher.CUDADispatcher.__getitem__ = _compile_instead_of_launch(cc)
    # Device functions compile for "the current device": make that the target.
    cuda_dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    config.CUDA_THREADS_PER_BLOCK, config.CUDA_TILE = 256, 16  # the shipped defaults

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _exercise(dtype, rng)
    _exercise_features(rng)
    for number, (name, signature, ptx) in enumerate(sorted(_compiled.values(), key=str)):
        arg_types = ", ".join(str(t) for t in signature)
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            first = next((t for t in signature if isinstance(t, numba.types.Array)), None)
            dtype = first.dtype if first is not None else "scalar"
            with open(os.path.join(args.dump, f"{number:03d}_{name}_{dtype}.ptx"), "w") as f:
                f.write(f"// {name}({arg_types})\n{ptx}")
        report = _ptxas_report(args.ptxas, cc, ptx) if args.ptxas else f"{len(ptx)} B of PTX"
        print(f"{name:60s} {report}   ({arg_types})")
    print(f"{len(_compiled)} kernel instantiations compiled for sm_{cc[0]}{cc[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
