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
