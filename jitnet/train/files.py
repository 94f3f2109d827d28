"""Files written atomically (a checkpoint, metrics.json, the report): a reader never
sees half a file, and an interrupted write leaves the old one."""

import json
import os
import secrets
from pathlib import Path

import numpy as np


def atomic_write(path, write):
    """Write a file so that ``path`` is either the old or the complete new file.

    ``write(f)`` fills a temporary file in the same folder, which then replaces
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows): a crash or
    Ctrl-C mid-write never leaves a broken file behind. The file gets the mode
    ``open()`` gives a new file (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _new_file_beside(path):
    """``(fd, name)`` of a new, empty file ``<path>.<random>.tmp``, open for writing.

    Created with mode ``0o666``, which the OS reduces by the umask as for
    ``open()``, as the PNGs beside it are. Not ``tempfile.mkstemp``: its 0600
    would survive :func:`os.replace`, and changing that to the umask's mode means
    reading the umask, which only setting it does (for a moment, for every thread).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} in 100 tries")


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
