"""A first training run compiles its backward kernels in a second process.

On an empty Numba cache a training step spends seconds compiling, one kernel after
another: compilation is single-threaded and holds a global lock. The backward pass
and the optimizer need kernels of their own (the weight gradients above all), so
while this process compiles the forward kernels a helper process can compile
those, into the same on-disk cache, and this process loads them when it gets
there. On two cores the reference ConvNet's cold first step went from 13.4-15.2
to 9.2-10.3 s in the same hours (see ``benchmarks/RESULTS.md``). The two work from
opposite ends of the list, and where they meet, the one that comes second to a
kernel the other is compiling waits for it and loads it rather than compiling it
too (:func:`jitnet.codegen.compile_lock`). (The helper going in the order the
training process needs the kernels made it wait for each: 14.2-15.6 s against
11.5-13.7.)

:func:`maybe_start` is called by ``nn.Sequential`` at its first forward pass in
training mode on the cpu target. It starts the helper once per process, and only
when Numba caches to disk here and holds no optimizer kernel yet, or no
convolution weight gradient for a model with convolutions (the first training run
of its kind with this cache), at least two CPUs are usable and
``JITNET_PRECOMPILE`` is not ``0``. The helper gets a copy of the model and the
input's shape (at most 8 images) and dtype. It compiles the optimizers' updates,
runs the forward pass on the numpy target (nothing to compile) and then each
layer's backward on the cpu target, first layer first: the reverse of the order in
which this process gets to them. Every result is thrown away: the cache entries are the point. If
anything fails, the helper just stops, and this process compiles what is missing
itself, as it always would. The helper is stopped when this process exits.
"""

import atexit
import os
import pickle
import subprocess
import sys

from .. import config

_helper = None
_tried = False

#: Most images of the batch the helper runs its layers on.
_BATCH = 8

# The helper's program: read the pickled job first (this process's write of it
# blocks until then), import this very jitnet package (the one this process
# imported, wherever it lies, without putting its folder before the standard
# library's on sys.path), then child().
_CHILD = """\
import sys
job = sys.stdin.buffer.read()
import importlib.util, os
package = {package!r}
spec = importlib.util.spec_from_file_location(
    "jitnet", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
module = importlib.util.module_from_spec(spec)
sys.modules["jitnet"] = module
spec.loader.exec_module(module)
from jitnet.kernels import precompile
precompile.child(job)
"""


def maybe_start(model, x):
    """Start the helper for ``model`` with input ``x`` if this is a cold first run."""
    if not _first_cold_try(model):
        return
    try:
        # A few images: the same kernels compile (their types do not depend on the
        # batch), without a second copy of a large batch's activations.
        shape = (min(int(x.shape[0]), _BATCH),) + tuple(x.shape[1:])
        payload = pickle.dumps(("backward", (model, shape, str(x.dtype))))
    except Exception:  # noqa: BLE001 - a model that does not pickle, an odd input: no helper
        return
    _spawn(payload)


def ahead(model, loss_fn, loader, eval_transform=None):
    """Start the helper now, long before ``model``'s first step, for all of that step.

    ``jitnet compare`` calls it before the HoG classifier trains, which leaves the
    ConvNet's kernels, forward ones included, to compile meanwhile. The helper
    compiles the kernels of a training step of (a copy of) ``model`` with
    ``loss_fn`` on the first batch of ``loader`` (a :class:`jitnet.data.DataLoader`
    over a few images, with the training transform), the optimizers' updates, and
    :func:`jitnet.train.predict`'s kernels with ``eval_transform`` (see
    :func:`compile_step_kernels`). When this process gets there, it loads what is
    compiled, waits for the kernel in flight, and compiles the rest itself. Same
    conditions as :func:`maybe_start` (once per process, a cold cache, two CPUs), and
    only on the cpu target.
    """
    from .. import targets

    if targets.get_target() != "cpu" or not _first_cold_try(model):
        return
    try:
        payload = pickle.dumps(("step", (model, loss_fn, loader, eval_transform)))
    except Exception:  # noqa: BLE001 - something that does not pickle: no helper
        return
    _spawn(payload)


def _first_cold_try(model):
    """True the first time per process, when a helper may start for ``model``."""
    global _tried
    if _tried:
        return False
    _tried = True
    if not config.PRECOMPILE or os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cpus or 1) >= 2 and not _training_kernels_cached(model)


def _spawn(payload):
    """Start the helper process on the pickled job ``payload``."""
    global _helper
    env = dict(os.environ, JITNET_PRECOMPILE="0")  # the helper starts no helper
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(package=os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
        )
        _helper.stdin.write(payload)
        _helper.stdin.close()
    except OSError:
        _helper = None
        return
    atexit.register(stop)


def wait(timeout=None):
    """Wait for the helper to finish (tests and benchmarks); its exit code, or None."""
    if _helper is None:
        return None
    return _helper.wait(timeout)


def stop():
    """Stop the helper if it still runs (at exit: what it compiled so far stays cached)."""
    if _helper is not None and _helper.poll() is None:
        _helper.kill()
        _helper.wait()


def _training_kernels_cached(model):
    """True when Numba's cache already holds an optimizer's update and, for a model
    with convolutions, a convolution weight gradient (or when it cannot be told):
    a training step of this kind has run with this cache before. (A linear model
    trained first, as ``jitnet compare`` does, leaves the ConvNet's kernels cold.)"""
    from ..nn.layers import Conv2d
    from . import cpu

    groups = [(cpu.optim._sgd_update, cpu.optim._adam_update)]
    if any(type(m) is Conv2d for m in model.modules()):
        rows, tiles, pooled = cpu.conv_rows, cpu.conv_tiles, cpu.conv_pooled
        groups.append((rows._conv2d_weight_rows, rows._conv2d_weight_rows3x3,
                       tiles._conv2d_weight_channel_tiles, tiles._conv2d_weight_tiles,
                       pooled._conv2d_weight_pooled, pooled._conv2d_weight_pooled_taps,
                       cpu.conv_depthwise._depthwise_weight_grad_kernel))
    try:
        return all(any(os.path.exists(kernel._cache._cache_file._index_path) for kernel in group)
                   for group in groups)
    except AttributeError:  # no cache, or another Numba's internals
        return True


def child(job):
    """The helper: compile the kernels of the pickled job (see :func:`maybe_start`
    and :func:`ahead`)."""
    kind, args = pickle.loads(job)
    if kind == "step":
        compile_step_kernels(*args)
    else:
        compile_training_kernels(*args)


def compile_step_kernels(model, loss_fn, loader, eval_transform):
    """The kernels of a training step on the first batch of ``loader`` and of
    :func:`jitnet.train.predict`, on the cpu target: the loader's transforms, the
    forward pass and the loss as :func:`jitnet.train.fit` runs them, then
    :func:`compile_training_kernels` (the optimizers, each layer's backward from the
    first layer on), then the eval-mode forward. Results are thrown away.

    The forward comes first because the training process needs it first; the
    backward goes first layer first, as in a helper started at the first step, so
    that a training process that gets there before this one is done compiles from
    the other end instead of waiting for each kernel in turn. (In a training step's
    order, jitnet compare from a cold cache took 80-84 s, the same as with the helper
    started at the ConvNet's first step.)
    """
    from .. import targets
    from ..train import predict

    with targets.use_target("cpu"):
        model.train()
        xb, yb = next(iter(loader))
        loss_fn(model(xb), targets.to_numpy(yb))
        loss_fn.backward()
    compile_training_kernels(model, tuple(xb.shape), str(xb.dtype))
    with targets.use_target("cpu"):
        predict(model, loader.x, transform=eval_transform)


def compile_training_kernels(model, shape, dtype):
    """Compile, on the cpu target, what a training step of ``model`` (a ``Sequential``)
    on inputs of ``shape`` and ``dtype`` needs beyond its forward pass, in the reverse
    of the order the step needs it: SGD's and Adam's updates, then each layer's
    backward, first layer first.

    Each layer gets the upstream gradient a step would give it, worked out on the
    numpy target (nothing to compile) from random inputs: a convolution's input
    gradient takes a kernel of its own when its upstream gradient is a max
    pooling's, mostly zeros (:func:`jitnet.kernels.cpu.conv_pooled._conv2d_input_sparse`). So a
    convolution after the first layer with parameters computes its input gradient
    here; a dense one, like a matrix product's, runs on a forward kernel, which the
    training process compiles for its forward pass anyway. A convolution with the
    pooling (and ReLU) after it goes back with them in one call, as the step takes
    them (the weight gradients then come from the pooling's windows)."""
    import numpy as np

    from .. import targets
    from ..nn.layers import Conv2d, MaxPool2d, ReLU
    from ..nn.module import (
        _backward_pooled,
        _pooled_convs,
        backward_without_input_grad,
        has_parameters,
    )
    from . import cpu

    p = np.zeros(16, dtype=dtype)
    cpu.sgd_update(p, p.copy(), p.copy(), 0.1, 0.9, False, 0.0)
    cpu.adam_update(p, p.copy(), p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    rng = np.random.default_rng(0)
    with targets.use_target("numpy"):  # every layer's saved state and upstream gradient
        order = model._run_order()
        x = rng.standard_normal(shape).astype(dtype)
        for m in order:
            x = m(x)
        upstream = [None] * len(order)
        dy = rng.standard_normal(x.shape).astype(dtype)
        for i in reversed(range(len(order))):
            upstream[i] = dy
            dy = order[i].backward(dy)
    first = next((i for i, m in enumerate(order) if has_parameters(m)), None)
    group_end = {conv: end for end, conv in _pooled_convs(order).items()}
    with targets.use_target("cpu"):
        i = 0
        while i < len(order):
            m = order[i]
            if i in group_end:  # a convolution, its pooling (and ReLU) in one call
                end = group_end[i]
                _backward_pooled(order, end, i, upstream[end], input_grad=i != first)
                i = end + 1
                continue
            if type(m) is MaxPool2d and i + 1 < len(order) and type(order[i + 1]) is ReLU:
                m._backward_relu(upstream[i + 1], order[i + 1])
                i += 2
                continue
            if type(m) is Conv2d and i != first:
                m.backward(upstream[i])
            else:
                backward_without_input_grad(m, upstream[i])
            i += 1
