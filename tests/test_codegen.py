"""jitnet.codegen: 512-bit vectors on AVX-512 CPUs, and when it stays out of the way.

Numba fixes its CPU features once per process, so each case runs in a fresh
interpreter.
"""

import json
import os
import subprocess
import sys

import llvmlite.binding as llvm
import pytest

PROBE = """
import json, sys
if sys.argv[1] == "numba-first":
    import numba
    numba.njit(lambda x: x + 1)(1)
import numba, jitnet
from jitnet import codegen
print(json.dumps({"features": numba.config.CPU_FEATURES, "status": codegen.status}))
"""

AVX512 = llvm.get_host_cpu_features().get("avx512f", False)


def probe(case="plain", **env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "JITNET_PREFER_512_BIT")}
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, case], env=clean, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512")
def test_avx512_host_lifts_the_256_bit_preference():
    result = probe()
    assert result["features"].endswith(",-prefer-256-bit")
    assert "+avx512f" in result["features"]
    assert result["status"].startswith("on")


@pytest.mark.skipif(AVX512, reason="this CPU has AVX-512")
def test_host_without_avx512_is_left_alone():
    result = probe()
    assert result["features"] is None
    assert "no AVX-512" in result["status"]


def test_opt_out_and_user_choices_are_respected():
    assert probe(JITNET_PREFER_512_BIT="0") == {
        "features": None, "status": "off (JITNET_PREFER_512_BIT=0)"}
    chosen = probe(NUMBA_CPU_FEATURES="+sse2")
    assert chosen["features"] == "+sse2" and "left to" in chosen["status"]
    assert "left to" in probe(NUMBA_CPU_NAME="generic")["status"]


def test_numba_used_before_jitnet_is_left_alone():
    result = probe("numba-first")
    assert result["features"] is None
    assert "before jitnet" in result["status"]


@pytest.mark.parametrize("name, features, lanes", [
    ("znver3", "+avx,+avx2,+fma,-avx512f", 8),
    ("znver4", "+avx2,+avx512f", 16),
    ("skylake-avx512", "+avx2,+avx512f", 8),  # LLVM's tuning prefers 256-bit vectors
    ("skylake-avx512", "+avx2,+avx512f,-prefer-256-bit", 16),
    ("generic", "", 8),
])
def test_vector_lanes_follow_the_vectors_numba_compiles(monkeypatch, name, features, lanes):
    import numba

    from jitnet import codegen, config

    monkeypatch.setattr(config, "VECTOR_LANES", None)
    monkeypatch.setattr(numba.config, "CPU_NAME", name)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    assert codegen.vector_lanes() == lanes


def test_vector_lanes_chosen_in_the_environment(monkeypatch):
    from jitnet import codegen, config

    monkeypatch.setattr(config, "VECTOR_LANES", "16")
    assert codegen.vector_lanes() == 16
    monkeypatch.setattr(config, "VECTOR_LANES", "12")
    with pytest.raises(ValueError, match="must be 8 or 16.*'12'"):
        codegen.vector_lanes()


OPT_PROBE = """
import json
import numba
from numba.core import event
import jitnet
from jitnet import codegen

seen = {}

class Level(event.Listener):  # numba.config.OPT as each compilation starts
    def on_start(self, ev):
        seen.setdefault(ev.data["dispatcher"].py_func.__name__, int(numba.config.OPT))
    def on_end(self, ev):
        pass

event.register("numba:compile", Level())

@codegen.njit(cache=False)
def add_one(x):
    return x + 1

@codegen.njit
def calls_add_one(x):
    return add_one(x) * 2

@numba.njit
def plain(x):
    return x - 1

assert calls_add_one(1) == 4 and plain(1) == 0 and add_one(2.5) == 3.5
print(json.dumps({"seen": seen, "after": int(numba.config.OPT),
                  "types": type(add_one).__name__}))
"""


def opt_probe(**env):
    clean = {k: v for k, v in os.environ.items() if k != "NUMBA_OPT"}
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", OPT_PROBE], env=clean, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def test_jitnet_kernels_compile_at_llvm_o2_and_other_numba_code_keeps_its_level():
    from jitnet import config

    result = opt_probe()
    assert config.LLVM_OPT == 2
    # jitnet's kernels (and the one compiled inside another's compilation) at -O2;
    # a plain @numba.njit function, and numba.config after, at Numba's own -O3.
    assert result["seen"] == {"calls_add_one": 2, "add_one": 2, "plain": 3}
    assert result["after"] == 3
    assert result["types"] == "Dispatcher"


def test_numba_opt_in_the_environment_wins():
    result = opt_probe(NUMBA_OPT="1")
    assert result["seen"] == {"calls_add_one": 1, "add_one": 1, "plain": 1}


def test_njit_rejects_positional_options():
    from jitnet import codegen

    with pytest.raises(TypeError, match="expected a function or keyword options"):
        codegen.njit("float64(float64)")


KERNEL_MODULE = """
from jitnet.codegen import njit

@njit(cache=True)
def triple(x):
    return 3 * x
"""

WAITER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import lockmod
print("ready", flush=True)
assert lockmod.triple(2) == 6
stats = lockmod.triple.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
"""


def _kernel_module(tmp_path, name):
    import importlib

    (tmp_path / f"{name}.py").write_text(KERNEL_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.skipif(sys.platform == "win32", reason="the compile lock needs fcntl")
def test_a_kernel_another_process_compiles_is_waited_for_and_loaded(tmp_path):
    import time

    from jitnet import codegen

    module = _kernel_module(tmp_path, "lockmod")
    with codegen.compile_lock(module.triple):  # this process is compiling triple
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True)
        assert waiter.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the other process asks for triple and waits
        assert module.triple(2) == 6  # compiled here (no wait for its own lock) and cached
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0
    result = json.loads(out.splitlines()[-1])
    # Without the lock the other process would have compiled triple itself, a second
    # before this one did; with it, it waited and loaded this one's compilation.
    assert result["misses"] == 0 and result["hits"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="the compile lock needs fcntl")
def test_a_lock_held_too_long_is_given_up(tmp_path, monkeypatch):
    import fcntl

    from jitnet import codegen, config

    module = _kernel_module(tmp_path, "lockmod2")
    path = module.triple._cache._cache_file._index_path + ".lock"
    monkeypatch.setattr(config, "COMPILE_LOCK_TIMEOUT", 0.3)
    tries = []
    flock = codegen._flock
    monkeypatch.setattr(codegen, "_flock", lambda fd, timeout: tries.append(
        (timeout, flock(fd, timeout))) or tries[-1][1])
    with open(path, "w") as other:  # a process that holds the lock and never lets go
        fcntl.flock(other, fcntl.LOCK_EX)
        assert module.triple(2) == 6
    assert tries == [(0.3, False)]  # it tried for the timeout, did not get the lock,
    assert sum(module.triple.stats.cache_misses.values()) == 1  # and compiled it itself
    assert codegen._held == set()


CALLER = """
from jitnet.codegen import njit
from callee import offset

@njit(cache=True)
def shifted(x):
    return x + offset(x)
"""

CALLEE = """
from jitnet.codegen import njit

@njit
def offset(x):
    return {}
"""

SHIFTED = """
import sys
sys.path.insert(0, sys.argv[1])
import caller
print(caller.shifted(1), sum(caller.shifted.stats.cache_hits.values()))
"""


def test_a_kernel_compiles_again_when_a_kernel_it_calls_changes_in_another_file(tmp_path):
    # Numba keys its cache by the kernel's own file and bytecode, and a kernel holds
    # the code of those it calls: without the folder's sources in the key, the
    # caller would load its old code after the callee's file changed.
    (tmp_path / "caller.py").write_text(CALLER)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def run():
        done = subprocess.run([sys.executable, "-c", SHIFTED, str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    (tmp_path / "callee.py").write_text(CALLEE.format(10))
    assert run() == ["11", "0"]  # compiled
    assert run() == ["11", "1"]  # loaded from the cache
    (tmp_path / "callee.py").write_text(CALLEE.format(20))
    assert run() == ["21", "0"]  # compiled again, though caller.py did not change
    assert run() == ["21", "1"]


def test_folder_digest_follows_the_names_and_contents_of_the_python_files(tmp_path):
    from jitnet import codegen

    def digest():
        codegen.folder_digest.cache_clear()
        return codegen.folder_digest(str(tmp_path))

    (tmp_path / "a.py").write_text("x = 1\n")
    first = digest()
    (tmp_path / "notes.txt").write_text("not a source")
    assert digest() == first
    (tmp_path / "a.py").write_text("x = 2\n")
    second = digest()
    assert second != first
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert digest() not in (first, second)


def test_the_cuda_kernels_cache_is_keyed_by_the_sources_of_their_folder():
    # The cuda target's kernels call device functions of other files of their package
    # too (jitnet.kernels.cuda.device.jit). The simulator caches nothing, so this
    # checks the key numba-cuda's cache gives a compiled kernel, which needs no GPU.
    pytest.importorskip("numba.cuda")
    import importlib
    import pkgutil

    import numba

    if numba.config.ENABLE_CUDASIM:
        pytest.skip("the simulator caches nothing")
    from jitnet import codegen
    from jitnet.kernels import cuda

    class Codegen:  # what the cache asks of numba-cuda's code generator
        def magic_tuple(self):
            return ("nvptx64-nvidia-cuda", "sm_90", "")

    folder = os.path.dirname(cuda.__file__)
    cached = []
    for info in pkgutil.iter_modules(cuda.__path__):
        module = importlib.import_module(f"{cuda.__name__}.{info.name}")
        for name, kernel in vars(module).items():
            cache = getattr(kernel, "_cache", None)
            if type(cache).__name__ in ("NullCache", "NoneType") or (
                    kernel.py_func.__module__ != module.__name__):  # imported from another
                continue
            assert type(cache).__name__ == "FolderKeyedCache", f"{info.name}.{name}"
            plain = super(type(cache), cache)._index_key((), Codegen())
            assert cache._index_key((), Codegen()) == plain + (
                ("folder sources", codegen.folder_digest(folder)),)
            cached.append(name)
    assert len(cached) == 38  # every kernel and device function with cache=True
