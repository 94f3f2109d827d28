"""CIFAR-10 in its official Python format: a safe loader and a checked download.

The official batches are Python-2 pickles. Unpickling can run arbitrary code,
so they are read by :class:`_CifarUnpickler`, which admits only the globals
those files hold (NumPy's array reconstruction) and raises :class:`DataError`
for anything else before it is called.
"""

import hashlib
import http.client
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._checks import check_real
from .loader import _integer_labels

try:  # NumPy >= 2 keeps the array internals in numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray

#: The ten CIFAR-10 class names, in label order (also in ``batches.meta``).
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
_ROW = 3 * 32 * 32


class DataError(ValueError):
    """A data set is missing, damaged or unsafe; the message names the file and the fault.

    A subclass of ``ValueError``: bad data is a bad value handed to jitnet.
    """


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


#: (module, name) -> object: everything a CIFAR-10 batch may reference.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 pickles of bytes at protocol 2 (the official files' protocol).
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`_ALLOWED`."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch"
            ) from None


def _unpickle(path):
    """The dict in a CIFAR-10 pickle, with str keys; raises DataError on any fault."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 file {path}: {exc}") from exc
    try:
        # Python-2 pickles: encoding="bytes" keeps their str objects as bytes.
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, ImportError, MemoryError) as exc:
        raise DataError(f"{path} is not a valid CIFAR-10 pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} should hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path):
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) of one batch file."""
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{path} has no {key!r} entry (keys: {sorted(map(str, batch))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) \
            else type(data).__name__
        raise DataError(f"{path}: 'data' should be a 2-D uint8 array, got {desc}")
    if data.shape[1] != _ROW:
        raise DataError(f"{path}: rows of 'data' should hold {_ROW} values, got {data.shape[1]}")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError) as exc:  # a ragged list
        raise DataError(f"{path}: 'labels' are not integers ({exc})") from exc
    try:  # [0.9, 1.7] must not load as [0, 1]
        labels = _integer_labels(f"{path}: 'labels'", labels)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(
            f"{path}: {len(data)} images but {labels.size} labels (shape {labels.shape})"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels should lie in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _root_path(who, root):
    """``root`` as a Path, or a TypeError naming the parameter (before any file is touched)."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(
            f"{who} expected root to be a folder path (str or os.PathLike), got {root!r} "
            f"({type(root).__name__})"
        )
    return Path(root).expanduser()


def _find_folder(who, root):
    """The ``cifar-10-batches-py`` folder: ``root`` itself or its child of that name."""
    root = _root_path(who, root)
    if root.exists() and not root.is_dir():
        raise DataError(f"CIFAR-10 root {root} is not a folder (it is a file)")
    if not root.is_dir():
        raise DataError(f"CIFAR-10 folder {root} does not exist")
    for folder in (root / FOLDER, root):
        if (folder / "test_batch").is_file() or any(folder.glob("data_batch_*")):
            return folder
    raise DataError(
        f"no CIFAR-10 batches in {root}: expected {FOLDER}/ (or the batch files themselves) "
        "with data_batch_1..5 and test_batch; jitnet.data.download_cifar10 fetches them"
    )


def _train_files(folder):
    files = [p for p in folder.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)]
    return sorted(files, key=lambda p: int(p.name.rsplit("_", 1)[1]))


def load_cifar10(root):
    """Load CIFAR-10 (or a subset in the same format) from its official Python batches.

    Parameters
    ----------
    root : str or os.PathLike
        The ``cifar-10-batches-py`` folder, or a folder holding it. Every
        ``data_batch_<k>`` present is loaded, in numeric order of ``k``, and
        ``test_batch``. Nothing is written there.

    Returns
    -------
    x_train : np.ndarray of uint8, shape (N_train, 3, 32, 32)
    y_train : np.ndarray of int64, shape (N_train,)
    x_test : np.ndarray of uint8, shape (N_test, 3, 32, 32)
    y_test : np.ndarray of int64, shape (N_test,)

    Raises
    ------
    TypeError
        ``root`` that is not a path (a str or ``os.PathLike``).
    DataError
        A missing folder (or a file in its place), no ``data_batch_*`` or no
        ``test_batch``, a truncated or unsafe pickle (one referencing anything but
        NumPy's array reconstruction: it is refused before any code runs), data and
        labels of different lengths, labels that are not integers in 0..9 (floats
        are not truncated), or rows that are not 3072 bytes. The message names the
        file.
    """
    folder = _find_folder("load_cifar10", root)
    files = _train_files(folder)
    if not files:
        raise DataError(f"no data_batch_* file in {folder}")
    if not (folder / "test_batch").is_file():
        raise DataError(f"no test_batch file in {folder}")
    train = [_read_batch(p) for p in files]
    x_test, y_test = _read_batch(folder / "test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def cifar10_classes(root):
    """Class names from ``batches.meta`` of the folder (``CIFAR10_CLASSES`` when it is absent).

    Parameters
    ----------
    root : str or os.PathLike
        As for :func:`load_cifar10`.

    Returns
    -------
    tuple of str
    """
    meta = _find_folder("cifar10_classes", root) / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    names = _unpickle(meta).get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta} has no list of 'label_names'")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def default_root():
    """The default data folder: the checkout's ``data/`` in a source tree, else ``./data``."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "jitnet").is_dir():
        return checkout / "data"
    return Path("data")


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url, part, timeout):
    """Download ``url`` into ``part``, resuming it with a Range request when it exists."""
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # the .part is already complete (or too long)
            return
        raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"downloading {url} failed: {exc}") from exc
    with response:
        if done and response.status != 206:
            done = 0  # the server ignored Range and sends the whole file: restart
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with open(part, "ab" if done else "wb") as f, tqdm(
            total=None if expected is None else done + expected, initial=done, unit="B",
            unit_scale=True, desc=f"CIFAR-10 {url.rsplit('/', 1)[-1]}",
        ) as bar:
            while True:
                try:
                    block = response.read(1 << 16)
                except (OSError, http.client.HTTPException) as exc:
                    raise DataError(
                        f"download of {url} broke off after {done + received} bytes ({exc}); "
                        f"run again to resume from {part}"
                    ) from exc
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if expected is not None and received < expected:
        raise DataError(
            f"download of {url} is truncated: got {received} of {expected} bytes; "
            f"run again to resume from {part}"
        )


def _safe_members(archive, target):
    """Members of ``archive`` after refusing absolute paths, ``..`` and links out of ``target``."""
    members = []
    for member in archive.getmembers():
        name = member.name
        if os.path.isabs(name) or ".." in Path(name).parts or name.startswith(("/", "\\")):
            raise DataError(f"archive member {name!r} would be written outside {target}")
        if member.issym() or member.islnk() or member.isdev():
            raise DataError(f"archive member {name!r} is a link or device; refused")
        members.append(member)
    return members


def _is_loadable(folder):
    try:
        load_cifar10(folder)
    except DataError:
        return False
    return True


def _check_download_arguments(url, md5, timeout):
    """Raise ValueError (TypeError for a ``timeout`` that is no number), naming the
    parameter, for a ``url``, ``md5`` or ``timeout`` that :func:`download_cifar10` could
    not use."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https", "ftp", "file") or (
            parts.scheme != "file" and not parts.netloc):
        raise ValueError(
            f"download_cifar10 expected url to be an http(s), ftp or file URL, got {url!r}"
        )
    if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
        raise ValueError(
            f"download_cifar10 expected md5 to be 32 hex digits or None, got {md5!r}"
        )
    check_real("download_cifar10", "timeout", timeout, "> 0 (seconds)", lambda v: v > 0)


def download_cifar10(root=None, url=CIFAR10_URL, md5=CIFAR10_MD5, timeout=60):
    """Download and extract the official CIFAR-10 archive into ``root/cifar-10-batches-py``.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Where the data goes; by default the checkout's ``data/`` folder (``./data``
        outside a source tree). Created when missing.
    url : str
        The archive (``.tar.gz`` holding ``cifar-10-batches-py/``): an http(s),
        ftp or file URL.
    md5 : str or None
        Its expected MD5 hex digest (32 hex digits); ``None`` skips the check.
    timeout : float
        Seconds to wait on the network before giving up, ``> 0``.

    Returns
    -------
    pathlib.Path
        The ``cifar-10-batches-py`` folder, ready for :func:`load_cifar10`.

    Raises
    ------
    ValueError
        For a bad ``url``, ``md5`` or ``timeout``, before anything is created or
        fetched (a TypeError for a ``root`` that is no path or a ``timeout`` that
        is no number).
    DataError
        For a failed, truncated or corrupt download or an unsafe archive.

    Notes
    -----
    Nothing is done when the folder is already there and loadable. The archive
    is written to ``root/cifar-10-python.tar.gz.part``; a later call resumes it
    with an HTTP Range request (restarting when the server ignores Range). A
    wrong checksum removes the file and raises :class:`DataError`; a truncated
    transfer raises :class:`DataError` and keeps the ``.part`` for resuming.
    Extraction refuses absolute paths, ``..`` and links, goes to a temporary
    folder inside ``root`` and is moved into place with ``os.replace``.
    """
    root = default_root() if root is None else _root_path("download_cifar10", root)
    _check_download_arguments(url, md5, timeout)
    final = root / FOLDER
    if final.is_dir() and _is_loadable(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    archive_path = root / ARCHIVE
    part = root / (ARCHIVE + ".part")
    if not archive_path.exists():
        _fetch(url, part, timeout)
        if md5 is not None:
            got = _md5(part)
            if got != md5.lower():
                part.unlink()
                raise DataError(
                    f"checksum of {url} is wrong: MD5 {got}, expected {md5}; the file was removed"
                )
        os.replace(part, archive_path)
    elif md5 is not None and _md5(archive_path) != md5.lower():
        archive_path.unlink()
        raise DataError(f"{archive_path} has a wrong checksum (expected {md5}); it was removed")
    staging = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=root))
    try:
        try:
            with tarfile.open(archive_path, "r:*") as archive:
                members = _safe_members(archive, staging)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.12: the stdlib check too
                    archive.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover
                    archive.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"cannot extract {archive_path}: {exc}") from exc
        extracted = staging / FOLDER
        if not extracted.is_dir():
            raise DataError(f"{archive_path} holds no {FOLDER}/ folder")
        try:
            load_cifar10(extracted)
        except DataError as exc:  # name the archive, not the staging folder removed below
            why = str(exc).replace(f"{staging}{os.sep}", "")
            raise DataError(f"{archive_path} holds a damaged {FOLDER}/ ({why})") from exc
        if final.exists():
            shutil.rmtree(final)  # a damaged earlier copy (a loadable one returned above)
        os.replace(extracted, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive_path.unlink()
    return final
