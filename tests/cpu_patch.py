"""Patching a cpu kernel where its callers find it.

The cpu target is a package (:mod:`jitnet.kernels.cpu`) whose modules import each
other's kernels by name, so a kernel is a global of every module that calls it (and
the contract's functions attributes of the package too): :func:`patch_cpu_kernel`
replaces it in each of them.
"""

import sys

from jitnet.kernels import cpu


def patch_cpu_kernel(monkeypatch, name, replacement):
    """Replace the cpu kernel ``name`` by ``replacement`` in every module of the cpu
    package that holds it, for the test's duration; returns the original."""
    holders = [module for key, module in sorted(sys.modules.items())
               if (key == cpu.__name__ or key.startswith(cpu.__name__ + "."))
               and name in vars(module)]
    assert holders, f"no module of {cpu.__name__} holds {name}"
    original = vars(holders[0])[name]
    assert all(vars(module)[name] is original for module in holders), name
    for module in holders:
        monkeypatch.setattr(module, name, replacement)
    return original
