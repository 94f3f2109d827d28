"""How Numba compiles the cpu kernels: 512-bit vectors on AVX-512 CPUs, LLVM's -O2.

Numba builds one LLVM target machine per process, at the first ``@njit``
decoration, from the host CPU's name and features. For Intel CPUs with AVX-512
(Skylake-X and later) LLVM's tuning adds ``prefer-256-bit``: the vectorisers then
emit 8-lane ymm code, and the 16-lane register tiles of the convolution and
matrix kernels (see ``jitnet/kernels/cpu.py``) run at half width. Appending
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
"""

import os

import numba
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


def opt_level():
    """The LLVM level jitnet's kernels compile at, or None for Numba's own
    (``NUMBA_OPT`` set in the environment, or :data:`jitnet.config.LLVM_OPT` None)."""
    if "NUMBA_OPT" in os.environ:
        return None
    return config.LLVM_OPT


class Dispatcher(CPUDispatcher):
    """Numba's cpu dispatcher, compiling new signatures at :func:`opt_level`."""

    def compile(self, sig):
        level = opt_level()
        if level is None:
            return super().compile(sig)
        # Numba's pass builders read numba.config.OPT as they run, so setting it
        # for this compilation (and the kernels it calls, compiled inside it) is
        # enough; the lock keeps another thread's compilation from seeing it.
        with global_compiler_lock:
            saved = numba.config.OPT
            numba.config.OPT = type(saved)(level)
            try:
                return super().compile(sig)
            finally:
                numba.config.OPT = saved


def njit(*args, **options):
    """``numba.njit`` whose dispatcher is :class:`Dispatcher`: used as ``@njit`` or
    ``@njit(**options)`` by jitnet's cpu kernels."""

    def decorate(func):
        dispatcher = numba.njit(**options)(func)
        dispatcher.__class__ = Dispatcher  # the same object, one method more
        return dispatcher

    if args:
        if len(args) == 1 and callable(args[0]) and not options:
            return decorate(args[0])
        raise TypeError(f"njit expected a function or keyword options, got {args!r}")
    return decorate
