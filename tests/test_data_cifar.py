"""jitnet.data.cifar: the safe CIFAR-10 loader and the checked download."""

import codecs
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from jitnet.data import (
    CIFAR10_CLASSES,
    DataError,
    cifar10_classes,
    download_cifar10,
    load_cifar10,
)

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"


def _batch_dict(rng, n, label="batch"):
    # Keys and strings as bytes, like the official Python-2 pickles read with encoding="bytes".
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _make_folder(parent, rng, sizes=(7, 5, 6), n_test=4):
    """A CIFAR-format folder under ``parent``; returns it and the arrays written."""
    folder = parent / FOLDER
    folder.mkdir(parents=True)
    written = {}
    for k, n in enumerate(sizes, start=1):
        written[f"data_batch_{k}"] = _batch_dict(rng, n)
        _write(folder / f"data_batch_{k}", written[f"data_batch_{k}"])
    written["test_batch"] = _batch_dict(rng, n_test)
    _write(folder / "test_batch", written["test_batch"])
    names = [n.encode() for n in CIFAR10_CLASSES]
    _write(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, written


def test_load_folder_written_here(tmp_path, rng):
    folder, written = _make_folder(tmp_path, rng)
    before = sorted(os.listdir(folder))
    for root in (tmp_path, folder):  # the folder itself or its parent
        x_train, y_train, x_test, y_test = load_cifar10(root)
        assert x_train.shape == (18, 3, 32, 32) and x_train.dtype == np.uint8
        assert y_train.shape == (18,) and y_train.dtype == np.int64
        assert x_test.shape == (4, 3, 32, 32) and y_test.dtype == np.int64
        expected = np.concatenate([written[f"data_batch_{k}"][b"data"] for k in (1, 2, 3)])
        np.testing.assert_array_equal(x_train.reshape(18, -1), expected)
        np.testing.assert_array_equal(y_test, written["test_batch"][b"labels"])
    assert cifar10_classes(tmp_path) == CIFAR10_CLASSES
    assert sorted(os.listdir(folder)) == before  # nothing written into the user's folder


def test_batches_sorted_numerically(tmp_path, rng):
    folder, written = _make_folder(tmp_path, rng, sizes=(1,) * 10)
    x_train, _, _, _ = load_cifar10(folder)
    order = [written[f"data_batch_{k}"][b"data"][0] for k in range(1, 11)]
    np.testing.assert_array_equal(x_train.reshape(10, -1), np.stack(order))


def test_str_keys_and_modern_protocol(tmp_path, rng):
    folder = tmp_path / FOLDER
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        d = _batch_dict(rng, 3)
        _write(folder / name, {k.decode(): v for k, v in d.items()}, protocol=4)
    x_train, y_train, _, _ = load_cifar10(tmp_path)
    assert x_train.shape == (3, 3, 32, 32) and y_train.shape == (3,)


def test_shared_subset(shared_cifar_root):
    x_train, y_train, x_test, y_test = load_cifar10(shared_cifar_root)
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (3, 32, 32)
    assert len(x_train) + len(x_test) == 5170
    assert y_train.dtype == np.int64 and len(y_train) == len(x_train)
    assert y_train.min() >= 0 and y_train.max() <= 9 and len(np.unique(y_test)) == 10
    assert cifar10_classes(shared_cifar_root) == CIFAR10_CLASSES


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Utf8:
    """Pickles as ``_codecs.encode("x", "utf-8")``: an allowed global, a refused encoding."""

    def __reduce__(self):
        return (codecs.encode, ("x", "utf-8"))


def test_malicious_pickle_runs_nothing(tmp_path, rng):
    folder, _ = _make_folder(tmp_path, rng)
    marker = tmp_path / "pwned"
    _write(folder / "data_batch_2", {b"data": _Evil(marker), b"labels": [1]})
    with pytest.raises(DataError, match="data_batch_2.*not allowed"):
        load_cifar10(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "data_batch_1 is not a valid CIFAR-10 pickle"),
        ("mismatch", "data_batch_1: 7 images but 6 labels"),
        ("rowsize", "data_batch_1: rows of 'data' should hold 3072 values, got 100"),
        ("nolabels", "data_batch_1 has no 'labels'"),
        ("folder", r"cannot read CIFAR-10 file .*data_batch_1: \[Errno \d+\] "),
        ("list", r"data_batch_1 should hold a dict, got list$"),
        ("float", r"data_batch_1: 'data' should be a 2-D uint8 array, got float64 array of "
                  r"shape \(7, 3072\)$"),
        ("rows", r"data_batch_1: 'data' should be a 2-D uint8 array, got list$"),
        ("utf8", r"data_batch_1 is not a valid CIFAR-10 pickle: _codecs.encode with 'utf-8' is "
                 r"not allowed$"),
    ],
)
def test_damaged_batch_names_file(tmp_path, rng, damage, message):
    folder, written = _make_folder(tmp_path, rng)
    path = folder / "data_batch_1"
    d = written["data_batch_1"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "mismatch":
        _write(path, {**d, b"labels": d[b"labels"][:6]})
    elif damage == "rowsize":
        _write(path, {**d, b"data": np.zeros((7, 100), np.uint8)})
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    elif damage == "list":
        _write(path, [d[b"data"], d[b"labels"]])
    elif damage == "float":
        _write(path, {**d, b"data": d[b"data"].astype(np.float64)})
    elif damage == "rows":
        _write(path, {**d, b"data": d[b"data"].tolist()})
    elif damage == "utf8":
        _write(path, {**d, b"batch_label": _Utf8()})
    else:
        _write(path, {b"data": d[b"data"]})
    with pytest.raises(DataError, match=message):
        load_cifar10(folder)


def test_missing_pieces(tmp_path, rng):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_cifar10(tmp_path)
    folder, _ = _make_folder(tmp_path, rng)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="no test_batch"):
        load_cifar10(folder)
    _write(folder / "test_batch", _batch_dict(rng, 2))
    for k in (1, 2, 3):
        (folder / f"data_batch_{k}").unlink()
    with pytest.raises(DataError, match="no data_batch"):
        load_cifar10(folder)
    assert issubclass(DataError, ValueError)


def test_class_names_from_batches_meta_or_the_official_ones(tmp_path, rng):
    folder, _ = _make_folder(tmp_path, rng)
    _write(folder / "batches.meta", {b"label_names": [b"cat", "dog"]})
    assert cifar10_classes(folder) == ("cat", "dog")
    (folder / "batches.meta").unlink()
    assert cifar10_classes(folder) == CIFAR10_CLASSES


@pytest.mark.parametrize("meta", [{b"num_vis": 3072}, {b"label_names": []},
                                  {b"label_names": b"cat"}], ids=["none", "empty", "bytes"])
def test_batches_meta_without_a_list_of_label_names_is_refused(tmp_path, rng, meta):
    folder, _ = _make_folder(tmp_path, rng)
    _write(folder / "batches.meta", meta)
    with pytest.raises(DataError, match=r"batches\.meta has no list of 'label_names'$"):
        cifar10_classes(folder)


def test_default_root_outside_a_source_tree_is_data_in_the_working_folder(tmp_path, monkeypatch):
    from jitnet.data import cifar

    installed = tmp_path / "site-packages" / "jitnet" / "data" / "cifar.py"
    monkeypatch.setattr(cifar, "__file__", str(installed))
    assert cifar.default_root() == Path("data")


# --- download against a server on 127.0.0.1 -------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Bytes of a small CIFAR-format .tar.gz and its MD5."""
    src = tmp_path_factory.mktemp("src")
    _make_folder(src, np.random.default_rng(7), sizes=(3, 2), n_test=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / FOLDER, arcname=FOLDER)
    data = buf.getvalue()
    return data, hashlib.md5(data).hexdigest()


class _Server:
    """A loopback HTTP server for one archive; ``mode`` picks the behaviour."""

    def __init__(self, payload):
        self.payload = payload
        self.mode = "good"
        self.ranges = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.payload
                header = self.headers.get("Range")
                server.ranges.append(header)
                if server.mode.startswith("status "):  # "status 404": that HTTP error
                    self.send_error(int(server.mode.split()[1]))
                    return
                if server.mode == "cut":  # a chunked body whose connection breaks off
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"10\r\n" + body[:16] + b"\r\n")
                    return
                start = 0
                if header and server.mode != "ignore-range":
                    start = int(header.split("=")[1].split("-")[0])
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                sent = body[start:]
                if server.mode == "truncate":
                    sent = sent[: len(sent) // 2]  # fewer bytes than Content-Length
                self.wfile.write(sent)

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archive):
    s = _Server(archive[0])
    yield s
    s.close()


def test_download_good(tmp_path, server, archive):
    folder = download_cifar10(tmp_path, url=server.url, md5=archive[1])
    assert folder == tmp_path / FOLDER
    x_train, y_train, x_test, _ = load_cifar10(tmp_path)
    assert x_train.shape == (5, 3, 32, 32) and x_test.shape == (2, 3, 32, 32)
    assert sorted(os.listdir(tmp_path)) == [FOLDER]  # no archive, .part or staging left
    # Present and loadable: nothing is fetched again.
    assert download_cifar10(tmp_path, url=server.url, md5=archive[1]) == folder
    assert len(server.ranges) == 1


def test_download_wrong_checksum(tmp_path, server):
    with pytest.raises(DataError, match="checksum"):
        download_cifar10(tmp_path, url=server.url, md5="0" * 32)
    assert os.listdir(tmp_path) == []  # the bad file is removed


def test_download_truncated_then_resume(tmp_path, server, archive):
    server.mode = "truncate"
    with pytest.raises(DataError, match="truncated"):
        download_cifar10(tmp_path, url=server.url, md5=archive[1])
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert 0 < part.stat().st_size < len(archive[0])  # kept for resuming
    server.mode = "good"
    download_cifar10(tmp_path, url=server.url, md5=archive[1])
    assert server.ranges[-1] == f"bytes={len(archive[0]) // 2}-"
    assert load_cifar10(tmp_path)[0].shape == (5, 3, 32, 32)


def test_download_restarts_when_range_ignored(tmp_path, server, archive):
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"stale bytes")
    server.mode = "ignore-range"
    download_cifar10(tmp_path, url=server.url, md5=archive[1])
    assert server.ranges == ["bytes=11-"]
    assert load_cifar10(tmp_path)[0].shape == (5, 3, 32, 32)


def test_unsafe_archive_member(tmp_path, server):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    server.payload = buf.getvalue()
    root = tmp_path / "root"
    with pytest.raises(DataError, match="outside"):
        download_cifar10(root, url=server.url, md5=None)
    assert not (tmp_path / "escape.txt").exists()


def test_download_of_a_complete_part_the_server_answers_416_for(tmp_path, server, archive):
    (tmp_path / f"{ARCHIVE}.part").write_bytes(archive[0])
    server.mode = "status 416"  # Range Not Satisfiable: nothing left to send
    assert download_cifar10(tmp_path, url=server.url, md5=archive[1]) == tmp_path / FOLDER
    assert server.ranges == [f"bytes={len(archive[0])}-"]
    assert load_cifar10(tmp_path)[0].shape == (5, 3, 32, 32)
    assert sorted(os.listdir(tmp_path)) == [FOLDER]


def test_download_http_error(tmp_path, server):
    server.mode = "status 404"
    with pytest.raises(DataError, match=rf"^downloading {server.url} failed: HTTP 404 Not Found$"):
        download_cifar10(tmp_path, url=server.url, md5=None)
    assert os.listdir(tmp_path) == []


def test_download_from_nowhere(tmp_path):
    url = (tmp_path / "missing.tar.gz").as_uri()
    root = tmp_path / "root"
    with pytest.raises(DataError, match=rf"^downloading {url} failed: <urlopen error "):
        download_cifar10(root, url=url, md5=None)
    assert os.listdir(root) == []


def test_download_that_breaks_off_keeps_the_part(tmp_path, server):
    server.mode = "cut"
    part = tmp_path / f"{ARCHIVE}.part"
    with pytest.raises(DataError, match=rf"^download of {server.url} broke off after 0 bytes "
                                        rf"\(.+\); run again to resume from {part}$"):
        download_cifar10(tmp_path, url=server.url, md5=None)
    assert os.listdir(tmp_path) == [part.name]


# --- an archive already in root: checked and extracted, nothing fetched ----------------------

UNUSED_URL = "file:///nothing-is-fetched.tar.gz"


def test_an_archive_with_a_wrong_checksum_is_removed(tmp_path, archive):
    (tmp_path / ARCHIVE).write_bytes(archive[0])
    with pytest.raises(DataError, match=rf"{ARCHIVE} has a wrong checksum \(expected 0{{32}}\); "
                                        r"it was removed$"):
        download_cifar10(tmp_path, url=UNUSED_URL, md5="0" * 32)
    assert os.listdir(tmp_path) == []


def test_a_damaged_folder_is_replaced_from_the_archive(tmp_path, archive):
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "test_batch").write_bytes(b"damaged")
    (tmp_path / ARCHIVE).write_bytes(archive[0])
    assert download_cifar10(tmp_path, url=UNUSED_URL, md5=archive[1]) == tmp_path / FOLDER
    assert load_cifar10(tmp_path)[0].shape == (5, 3, 32, 32)
    assert sorted(os.listdir(tmp_path)) == [FOLDER]


def _write_archive(path, content):
    """A .tar.gz at ``path`` that download_cifar10 must refuse, by ``content``."""
    if content == "garbage":
        path.write_bytes(b"not a tar archive")
        return
    with tarfile.open(path, "w:gz") as tar:
        if content == "link":
            info = tarfile.TarInfo(f"{FOLDER}/test_batch")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
            return
        folder = FOLDER if content == "damaged" else "other-folder"
        for name in ("data_batch_1", "test_batch"):
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"junk"))


@pytest.mark.parametrize("content, message", [
    ("garbage", rf"^cannot extract .*{ARCHIVE}: "),
    ("link", rf"^archive member '{FOLDER}/test_batch' is a link or device; refused$"),
    ("other", rf"^.*{ARCHIVE} holds no {FOLDER}/ folder$"),
    # the batch's path was one in the staging folder, which is gone by then
    ("damaged", rf"^.*/{ARCHIVE} holds a damaged {FOLDER}/ \({FOLDER}/data_batch_1 is not a "
                r"valid CIFAR-10 pickle: .*\)$"),
])
def test_a_bad_archive_is_refused_and_extracts_nothing(tmp_path, content, message):
    _write_archive(tmp_path / ARCHIVE, content)
    with pytest.raises(DataError, match=message):
        download_cifar10(tmp_path, url=UNUSED_URL, md5=None)
    assert os.listdir(tmp_path) == [ARCHIVE]  # no staging folder left, nothing extracted
