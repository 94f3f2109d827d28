"""pyproject.toml's version floors are the versions .ci/oldest tests (.ci/oldest.txt)."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _floors():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in ("cuda", "test"):
        requirements += project["optional-dependencies"][extra]
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"expected NAME>=VERSION in pyproject.toml, got {requirement!r}"
        floors[match[1].lower()] = match[2]
    return floors


def _pins():
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_floor_is_the_version_ci_oldest_pins():
    assert _floors() == _pins()
