"""numba-cuda itself: the one module of jitnet that imports ``numba.cuda``.

The other modules of this package take ``cuda`` (the kernel language:
``cuda.grid``, ``cuda.shared.array``, ...), :func:`jit` and :data:`libdevice` from
here, so moving to another package that provides the same kernel language changes
this file: numba-cuda's successor, ``numba-cuda-mlir`` (which has no simulator),
asks its users to import ``cuda`` from ``numba_cuda_mlir`` instead. The rest of this
module asks numba-cuda's runtime, through internals a move would check too: whether
a GPU (or the simulator) is usable and which, waiting for the device, counting
launches (its launch entry point), the disk cache's key, and whether numba-cuda's
own allocator is in use.
"""

import collections
import contextlib
import functools
import importlib.metadata
import os

import numba
from numba import cuda

from ...codegen import folder_digest

#: True when ``NUMBA_ENABLE_CUDASIM=1`` replaced the GPU by Numba's simulator.
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

if SIMULATOR:
    libdevice = None  # the simulator does not implement libdevice
else:
    from numba.cuda import libdevice  # noqa: F401  (for the kernels of .features)


def jit(func=None, **options):
    """``cuda.jit`` whose on-disk cache (``cache=True``) is also keyed by the sources
    of the kernel's folder: used as ``@jit`` or ``@jit(**options)`` by every kernel of
    the cuda target.

    A kernel compiles the device functions it calls into its own code, and kernels
    here call device functions of other files (:mod:`.batchnorm` the indexing of
    :mod:`.maxpool`, :mod:`.losses` the sigmoid of :mod:`.activations`). numba-cuda
    keys a cached kernel by its own file only, so after an edit of the callee's file
    the caller would load its old code: the cpu target's
    :class:`jitnet.codegen._KernelCache` mends the same limitation the same way. The
    simulator caches nothing; with another cache class (a numba-cuda whose caching
    works otherwise) the kernel keeps it.
    """
    if func is None:
        return functools.partial(jit, **options)
    dispatcher = cuda.jit(func, **options)
    cache = getattr(dispatcher, "_cache", None)
    if options.get("cache") and type(cache).__name__ == "CUDACache":
        dispatcher._cache = _folder_keyed(type(cache))(func)
    return dispatcher


@functools.cache
def _folder_keyed(cache_class):
    """A subclass of numba-cuda's ``cache_class`` whose index key adds the sources of
    the kernel's folder (:func:`jitnet.codegen.folder_digest`)."""

    class FolderKeyedCache(cache_class):
        def _index_key(self, sig, codegen):
            code = self._py_func.__code__
            folder = os.path.dirname(os.path.abspath(code.co_filename))
            return super()._index_key(sig, codegen) + (
                ("folder sources", folder_digest(folder)),)

    return FolderKeyedCache


def _one_line(text):
    return " ".join(str(text).split())


def unavailable_reason():
    """``None`` when kernels can run here, else a sentence saying why not and what to do.

    Never raises. The simulator (``NUMBA_ENABLE_CUDASIM=1``) always counts as usable.
    """
    if SIMULATOR:
        return None
    fix = (
        "use a machine with an NVIDIA GPU and driver, or set NUMBA_ENABLE_CUDASIM=1 "
        "(before starting Python) to run the cuda target in Numba's slow simulator"
    )
    try:
        error = cuda.cuda_error()
        if error is not None:
            return f"the CUDA driver could not be initialised ({_one_line(error)}); {fix}"
        if len(cuda.gpus) == 0:
            return f"the CUDA driver found no GPU; {fix}"
        if not cuda.is_available():
            return (
                "NVVM, the CUDA compiler library numba-cuda needs, was not found; install "
                "the CUDA toolkit wheels with `pip install 'numba-cuda[cu12]'` (or cu13)"
            )
    except Exception as exc:  # any failure to query CUDA means "unusable", not a crash
        return f"querying CUDA failed ({_one_line(exc)}); {fix}"
    return None


def device_info():
    """What ``jitnet info`` prints about the CUDA device; never raises.

    Returns
    -------
    dict
        ``available``, ``reason`` (None when available), ``simulator``,
        ``numba_cuda_version``, and when a device is usable ``name``,
        ``compute_capability``, ``driver_version``, ``runtime_version``.
    """
    reason = unavailable_reason()
    info = {"available": reason is None, "reason": reason, "simulator": SIMULATOR}
    try:
        info["numba_cuda_version"] = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        info["numba_cuda_version"] = None
    if reason is not None:
        return info
    if SIMULATOR:
        info.update(name="Numba CUDA simulator", compute_capability=None)
        info.update(driver_version=None, runtime_version=None)
        return info
    queries = {
        "name": lambda: _decode(cuda.get_current_device().name),
        "compute_capability": lambda: tuple(cuda.get_current_device().compute_capability),
        "driver_version": lambda: tuple(cuda.cudadrv.driver.driver.get_version()),
        "runtime_version": lambda: tuple(cuda.runtime.get_version()),
    }
    for key, query in queries.items():
        try:
            info[key] = query()
        except Exception:  # a field we cannot read is reported as unknown
            info[key] = None
    return info


def _decode(name):
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize():
    """Wait until every launched kernel has finished.

    Kernel launches return before the kernel runs; benchmarks call this before
    stopping a timer. (Training needs no explicit call: reading the loss value
    back waits for the step's kernels.)
    """
    cuda.synchronize()


@contextlib.contextmanager
def intercept_launches(on_launch):
    """Call ``on_launch(name)`` at each kernel launch made inside the ``with`` block.

    ``name`` is the kernel's Python name; the launch runs when ``on_launch`` returns
    true and is skipped otherwise (``benchmarks/bench_cuda_host.py`` skips them all to
    time jitnet's own host work under the simulator). It patches Numba's launch entry
    point (``_LaunchConfiguration.__call__`` on a GPU, the simulator's
    ``FakeCUDAKernel.__call__``) for the duration, and so sees every launch in the
    process meanwhile, jitnet's or not; device functions, and calls from a running
    kernel in the simulator, are not launches.
    """
    if SIMULATOR:
        from numba.cuda.simulator import kernel as simulator

        launcher = simulator.FakeCUDAKernel

        def name_of(kernel):
            launch = not kernel._device and simulator._kernel_context is None
            return kernel.fn.__name__ if launch else None
    else:
        from numba.cuda.dispatcher import _LaunchConfiguration as launcher

        def name_of(launch):
            return launch.dispatcher.py_func.__name__

    original = launcher.__call__

    def intercepted(self, *args):
        name = name_of(self)
        if name is None or on_launch(name):
            return original(self, *args)
        return None

    launcher.__call__ = intercepted
    try:
        yield
    finally:
        launcher.__call__ = original


@contextlib.contextmanager
def count_launches():
    """Count the kernel launches made inside the ``with`` block.

    Yields a ``collections.Counter`` that maps each kernel's name to its number of
    launches (``sum(counter.values())`` is the total). A small network on a big GPU
    is launch-bound: this is how benchmarks count the launches of a training step.
    Every launch in the process meanwhile counts (:func:`intercept_launches`).
    """
    counter = collections.Counter()

    def count(name):
        counter[name] += 1
        return True

    with intercept_launches(count):
        yield counter


@functools.cache
def _pool_usable():
    """The simulator, or numba-cuda's own allocator, whose counts :func:`_memory_shared`
    reads. An allocator plugged in by the user (RMM, say) pools memory itself."""
    if SIMULATOR:
        return True
    from numba.cuda.cudadrv.driver import NumbaCUDAMemoryManager

    return type(cuda.current_context().memory_manager) is NumbaCUDAMemoryManager
