"""How Numba compiles the cpu kernels: 512-bit vectors on AVX-512 CPUs, LLVM's -O2,
and never the same kernel in two processes at once.

Numba builds one LLVM target machine per process, at the first ``@njit``
decoration, from the host CPU's name and features. For Intel CPUs with AVX-512
(Skylake-X and later) LLVM's tuning adds ``prefer-256-bit``: the vectorisers then
emit 8-lane ymm code, and the 16-lane register tiles of the convolution and
matrix kernels (see ``jitnet/kernels/cpu/_tiles.py``) run at half width. Appending
``-prefer-256-bit`` to the host's features lifts that preference (measured on a
2-core Xeon: conv2 forward 4.8 -> 3.3 ms, fc1 backward 6.9 -> 2.1 ms); AMD Zen 4 has
no such preference and is unaffected.

The setting is Numba's documented ``NUMBA_CPU_FEATURES``, so it applies to every
function Numba compiles in the process, and it only changes vector widths: code
compiled without fast-math computes the same bits. It is left alone when the
user chose ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``, when Numba was already in
use (a function decorated) before jitnet was imported, or with ``JITNET_PREFER_512_BIT=0``
(:data:`jitnet.config.PREFER_512_BIT`). Numba's on-disk cache keys every entry by
the features, so the two settings never share compiled code.

jitnet's own kernels are decorated with :func:`njit`, Numba's, whose dispatcher
compiles each new signature at LLVM's ``-O2`` (:data:`jitnet.config.LLVM_OPT`)
instead of Numba's default ``-O3``. Their loops are blocked and unrolled by hand,
and ``-O3`` spent the most time on them for nothing: on a 2-core Zen 4 the
reference ConvNet's first step compiled for 19.2 s at ``-O3`` and 14.4 s at ``-O2``
(``_gemm`` alone 4.1 -> 2.0 s), while the kernels and the warm training step ran
as fast as before (see ``benchmarks/RESULTS.md``). The level is Numba's
``NUMBA_OPT`` setting, set only while a jitnet kernel compiles (under Numba's
compiler lock) and put back after, so other Numba code in the process keeps its
level; a ``NUMBA_OPT`` set in the environment wins. Numba's cache does not key its
entries by the level: a kernel cached at one level loads under the other.

The same dispatcher compiles a kernel under a lock on a file beside the kernel's
entry in Numba's on-disk cache (``fcntl.flock``, so on POSIX systems), taken after
Numba's own compiler lock. A process that needs a kernel another process is
compiling waits for it and then loads it from the cache instead of compiling it
again: a first training run's helper process (:mod:`jitnet.kernels.precompile`)
and the training process share the work without doing any of it twice, and so do
test workers on an empty cache. A wait longer than
:data:`jitnet.config.COMPILE_LOCK_TIMEOUT` gives up and compiles. Nested
compilations (a kernel that calls another) take the locks caller first, and Numba
kernels do not call themselves, so two processes cannot wait for each other.
"""

import contextlib
import functools
import hashlib
import os
import threading
import time
from pathlib import Path

import numba
from numba.core.caching import FunctionCache
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher, cpu_target

from . import config

#: What :func:`prefer_512_bit_vectors` did, for ``jitnet info``.
status = "not applied"


def _codegen_started():
    # CPUTarget builds its target context (and the LLVM target machine) lazily,
    # as a cached property, at the first @njit decoration.
    return "_toplevel_target_context" in cpu_target.__dict__


def prefer_512_bit_vectors():
    """Append ``-prefer-256-bit`` to Numba's CPU features where it helps and is allowed.

    Must run before the first ``@njit`` decoration in the process (jitnet calls it
    first thing on import). Returns True when the features were changed.
    """
    global status
    if not config.PREFER_512_BIT:
        status = "off (JITNET_PREFER_512_BIT=0)"
        return False
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        status = "left to NUMBA_CPU_NAME / NUMBA_CPU_FEATURES"
        return False
    if _codegen_started():
        status = "not applied: Numba was in use before jitnet was imported"
        return False
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx512f", False):
        status = "not needed (no AVX-512)"
        return False
    numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    status = "on (host features, -prefer-256-bit)"
    return True


def vector_lanes():
    """float32 lanes of the vectors Numba will compile jitnet's kernels with: 16 where
    it emits 512-bit vectors, else 8; :data:`jitnet.config.VECTOR_LANES` when set.

    The kernels' register tiles are written for this width (``jitnet/kernels/cpu/_tiles.py``):
    a tile of 16-lane rows on a CPU with 256-bit vectors holds twice as many
    registers as it has (16 on AVX2), and the spills cost 2-5x (measured on a 2-core
    Zen 3: conv2's forward 13.4 ms at 16 lanes). 512-bit vectors need AVX-512 and no
    ``prefer-256-bit`` tuning: Intel CPUs have it unless
    :func:`prefer_512_bit_vectors` lifted it; AMD's (Zen 4 and later) do not.
    """
    if config.VECTOR_LANES is not None:
        if str(config.VECTOR_LANES) not in ("8", "16"):
            raise ValueError(
                f"JITNET_VECTOR_LANES must be 8 or 16 (or unset), got {config.VECTOR_LANES!r}")
        return int(config.VECTOR_LANES)
    import llvmlite.binding as llvm

    if numba.config.CPU_FEATURES is not None:
        features = numba.config.CPU_FEATURES
    elif numba.config.CPU_NAME is None:
        features = llvm.get_host_cpu_features().flatten()
    else:
        features = ""
    flags = set(features.split(","))
    name = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    if "+avx512f" not in flags:
        return 8
    if "-prefer-256-bit" in flags or name.startswith("znver"):
        return 16
    return 8


def opt_level():
    """The LLVM level jitnet's kernels compile at, or None for Numba's own
    (``NUMBA_OPT`` set in the environment, or :data:`jitnet.config.LLVM_OPT` None)."""
    if "NUMBA_OPT" in os.environ:
        return None
    return config.LLVM_OPT


try:
    import fcntl
except ImportError:  # not POSIX: no lock, each process compiles what it needs
    fcntl = None

# Lock files this process holds, so that a compilation of a kernel nested in its own
# (another signature, typed while the first compiles) does not wait for itself.
_held = set()
_held_guard = threading.Lock()


@contextlib.contextmanager
def compile_lock(dispatcher):
    """Hold the cross-process lock of ``dispatcher``'s kernel (see the module's notes);
    nothing for a kernel without an on-disk cache, or without ``fcntl``."""
    try:
        path = dispatcher._cache._cache_file._index_path + ".lock"
    except AttributeError:  # no cache (NullCache), or another Numba's internals
        path = None
    with _held_guard:
        mine = path is not None and fcntl is not None and path not in _held
        if mine:
            _held.add(path)
    if not mine:
        yield
        return
    fd = None
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only cache folder: Numba will not write there either
            fd = None
        if fd is not None and not _flock(fd, config.COMPILE_LOCK_TIMEOUT):
            os.close(fd)
            fd = None
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the file releases its lock
        with _held_guard:
            _held.discard(path)


def _flock(fd, timeout):
    """Take an exclusive lock on ``fd`` within ``timeout`` seconds; whether it did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        except OSError:  # a file system without locks
            return False


class Dispatcher(CPUDispatcher):
    """Numba's cpu dispatcher, compiling new signatures at :func:`opt_level`, one
    process at a time (:func:`compile_lock`)."""

    def compile(self, sig):
        level = opt_level()
        # Numba's compiler lock first, then the file's (the order every nested
        # compilation keeps too). Numba's pass builders read numba.config.OPT as they
        # run, so setting it for this compilation (and the kernels it calls, compiled
        # inside it) is enough; the lock keeps another thread's from seeing it.
        with global_compiler_lock, compile_lock(self):
            if level is None:
                return super().compile(sig)
            saved = numba.config.OPT
            numba.config.OPT = type(saved)(level)
            try:
                return super().compile(sig)
            finally:
                numba.config.OPT = saved


@functools.lru_cache(maxsize=None)
def folder_digest(folder):
    """SHA-256 of the names and contents of the ``.py`` files in ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class _KernelCache(FunctionCache):
    """Numba's on-disk cache of a function, with :func:`vector_lanes` and the sources
    of the function's folder in each entry's key.

    Numba keys an entry by the function's own bytecode, its signature and the CPU, and
    drops a file's entries when that file changes. Two things the compiled code
    depends on are left out:

    - The kernels' tile shapes are module constants chosen from the vector width,
      which Numba freezes into the compiled code. The width follows the CPU features,
      which the key has, except where ``JITNET_VECTOR_LANES`` chooses it: without
      this, a process choosing 16 loaded kernels compiled for 8, and their tiles
      overran the wrappers' buffers.
    - A kernel compiles the kernels it calls into its own code, and the cpu kernels
      (``jitnet/kernels/cpu/``) call each other across files. Numba does not notice a
      change in another file (its documented limitation), so a kernel whose callee
      changed would load its old code. :func:`folder_digest` of the kernel's folder
      in the key makes every kernel of a package compile again when any of its files
      changes.
    """

    def _index_key(self, sig, codegen):
        folder = os.path.dirname(os.path.abspath(self._py_func.__code__.co_filename))
        return super()._index_key(sig, codegen) + (
            ("vector lanes", vector_lanes()), ("folder sources", folder_digest(folder)))


def njit(*args, **options):
    """``numba.njit`` whose dispatcher is :class:`Dispatcher` (and whose on-disk cache,
    with ``cache=True``, is :class:`_KernelCache`): used as ``@njit`` or
    ``@njit(**options)`` by jitnet's cpu kernels."""

    def decorate(func):
        dispatcher = numba.njit(**options)(func)
        dispatcher.__class__ = Dispatcher  # the same object, one method more
        if type(getattr(dispatcher, "_cache", None)) is FunctionCache:
            dispatcher._cache = _KernelCache(func)
        return dispatcher

    if args:
        if len(args) == 1 and callable(args[0]) and not options:
            return decorate(args[0])
        raise TypeError(f"njit expected a function or keyword options, got {args!r}")
    return decorate
