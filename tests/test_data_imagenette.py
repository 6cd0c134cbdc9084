"""Imagenette end to end against a loopback HTTP server serving tiny archives built here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from zeal_core.data import is_prepared, load_dataset, prepare_dataset
from zeal_core.data.imagenette import archive_path
from zeal_core.errors import Cancelled, DataError
from zeal_core.paths import data_dir
from zeal_core.progress import CancelToken

# Two real Imagenette wnids and one unknown id, which keeps its folder name as class name.
CLASSES = {"n01440764": (200, 40, 40), "n03888257": (40, 200, 40), "n09999999": (40, 40, 200)}
TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 2
TOP = "imagenette2-160"


def _jpeg(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def good_archive() -> bytes:
    """A tiny Imagenette look-alike: solid-colour JPEGs of mixed aspect ratios, plus a CSV to ignore."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, f"{TOP}/noisy_imagenette.csv", b"path,label\n")
        for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
            for wnid, color in CLASSES.items():
                for index in range(count):
                    size = (48 + 8 * index, 36) if index % 2 else (30, 52)
                    _add(tar, f"{TOP}/{split}/{wnid}/{wnid}_{index}.JPEG", _jpeg(color, size))
    return buffer.getvalue()


def unsafe_archive(kind: str) -> bytes:
    """A small archive that is fine except for one member of the given unsafe ``kind``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, f"{TOP}/train/n01440764/ok.JPEG", _jpeg((1, 2, 3), (20, 20)))
        if kind == "dotdot":
            _add(tar, f"{TOP}/train/n01440764/../../../../escaped.JPEG", _jpeg((1, 2, 3), (20, 20)))
        elif kind == "absolute":
            _add(tar, "/tmp/zeal-absolute.JPEG", _jpeg((1, 2, 3), (20, 20)))
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo(f"{TOP}/train/n01440764/link.JPEG")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "fifo":
            info = tarfile.TarInfo(f"{TOP}/train/n01440764/pipe")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        elif kind == "bomb":  # 20 MB of zeros compress about 1000x
            _add(tar, f"{TOP}/train/n01440764/zeros.JPEG", bytes(20_000_000))
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class ArchiveServer:
    """Serves ``files`` on 127.0.0.1; ``truncate`` sends half the body with the full Content-Length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate = False
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if outer.truncate else body)
                if outer.truncate:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def publish(self, monkeypatch: pytest.MonkeyPatch, body: bytes, checksum: str | None = None) -> str:
        """Serve ``body`` and point the Imagenette settings at it; returns the URL."""
        self.files["/imagenette2-160.tgz"] = body
        url = f"http://127.0.0.1:{self.httpd.server_port}/imagenette2-160.tgz"
        monkeypatch.setenv("ZEAL_IMAGENETTE_URL", url)
        monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", checksum or md5(body))
        return url

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    instance = ArchiveServer()
    yield instance
    instance.close()


def leftovers() -> list[str]:
    return sorted(str(p.relative_to(data_dir())) for p in data_dir().rglob("*"))


def test_good_archive_prepares_with_counts_classes_and_colours(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    assert not is_prepared("imagenette")
    events = []
    dataset = prepare_dataset("imagenette", progress=events.append)
    per_class = TRAIN_PER_CLASS + VAL_PER_CLASS
    assert dataset.images.shape == (len(CLASSES) * per_class, 3, 160, 160)
    assert dataset.images.dtype == torch.uint8
    assert dataset.class_names == ("tench", "parachute", "n09999999")  # sorted by wnid, unknown kept
    assert all(c == {"train": TRAIN_PER_CLASS, "val": VAL_PER_CLASS} for c in dataset.class_counts().values())
    assert dataset.skipped == ()
    # Solid colours survive resizing and cropping (JPEG shifts them a little).
    for label, color in enumerate(CLASSES.values()):
        mean = dataset.images[dataset.labels == label].float().mean(dim=(0, 2, 3))
        assert torch.allclose(mean, torch.tensor(color, dtype=torch.float32), atol=6)
    stages = {event.stage for event in events}
    assert {"download", "decode"} <= stages
    download_events = [e for e in events if e.stage == "download" and e.total]
    assert download_events[-1].done == download_events[-1].total
    assert is_prepared("imagenette")
    loaded = load_dataset("imagenette")
    assert loaded.fingerprint == dataset.fingerprint and torch.equal(loaded.images, dataset.images)
    # Only the archive and the cache stay: no temporary or extracted files.
    assert not [name for name in leftovers() if name.startswith(".") or "/." in name or ".part" in name]
    assert not (data_dir() / TOP).exists()


def test_second_prepare_does_no_work(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    first = prepare_dataset("imagenette")
    requests = server.requests
    events = []
    second = prepare_dataset("imagenette", progress=events.append)
    assert server.requests == requests == 1
    assert {event.stage for event in events} == {"cached"}
    assert second.fingerprint == first.fingerprint


def test_archive_placed_by_hand_is_used_without_network(monkeypatch) -> None:
    body = good_archive()
    archive_path().parent.mkdir(parents=True, exist_ok=True)
    archive_path().write_bytes(body)
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", f"http://127.0.0.1:{closed_port()}/imagenette2-160.tgz")
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", md5(body))
    dataset = prepare_dataset("imagenette")
    assert dataset.images.shape[0] == len(CLASSES) * (TRAIN_PER_CLASS + VAL_PER_CLASS)


def test_wrong_checksum_fails_clearly_and_leaves_nothing(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive(), checksum="0" * 32)
    with pytest.raises(DataError, match=r"checksum mismatch.*expected md5 0{32}"):
        prepare_dataset("imagenette")
    assert leftovers() == []
    assert not is_prepared("imagenette")


def test_truncated_body_fails_clearly_and_leaves_nothing(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    server.truncate = True
    with pytest.raises(DataError, match="cut off"):
        prepare_dataset("imagenette")
    assert leftovers() == []


@pytest.mark.parametrize(("kind", "reason"), [
    ("dotdot", r"'\.\.'"), ("absolute", "absolute path"), ("symlink", "symbolic link"),
    ("hardlink", "hard link"), ("fifo", "device or fifo"), ("bomb", "compression bomb"),
])
def test_unsafe_archive_is_refused_and_leaves_nothing(server, monkeypatch, tmp_path, kind, reason) -> None:
    server.publish(monkeypatch, unsafe_archive(kind))
    with pytest.raises(DataError, match=reason):
        prepare_dataset("imagenette")
    assert leftovers() == []
    assert not (tmp_path / "escaped.JPEG").exists() and not Path("/tmp/zeal-absolute.JPEG").exists()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_network_names_the_mirror_and_manual_fixes(monkeypatch) -> None:
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", f"http://127.0.0.1:{closed_port()}/imagenette2-160.tgz")
    with pytest.raises(DataError) as caught:
        prepare_dataset("imagenette")
    message = str(caught.value)
    assert "cannot reach" in message and "ZEAL_IMAGENETTE_URL" in message
    assert str(archive_path()) in message
    assert leftovers() == []


def test_cancel_stops_download_and_leaves_nothing(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        prepare_dataset("imagenette", cancel=token)
    assert leftovers() == []


def test_local_path_as_url_works(tmp_path, monkeypatch) -> None:
    body = good_archive()
    mirror = tmp_path / "mirror.tgz"
    mirror.write_bytes(body)
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", str(mirror))
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", md5(body))
    assert prepare_dataset("imagenette", image_size=32).images.shape[-1] == 32
    assert is_prepared("imagenette", image_size=32) and not is_prepared("imagenette")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zeal_core", "data", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def test_cli_prepare_and_info_print_one_json_object(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    info = _cli("info", "--dataset", "imagenette")
    assert info.returncode == 2 and "data prepare --dataset imagenette" in info.stderr
    assert json.loads(info.stdout)["ok"] is False

    prepared = _cli("prepare", "--dataset", "imagenette")
    assert prepared.returncode == 0, prepared.stderr
    result = json.loads(prepared.stdout)  # exactly one JSON object: this fails on any extra output
    assert result["num_images"] == len(CLASSES) * (TRAIN_PER_CLASS + VAL_PER_CLASS)
    assert result["already_prepared"] is False
    assert "[download]" in prepared.stderr and "[decode]" in prepared.stderr

    again = json.loads(_cli("prepare", "--dataset", "imagenette").stdout)
    assert again["already_prepared"] is True and server.requests == 1
    shown = json.loads(_cli("info", "--dataset", "imagenette").stdout)
    assert shown["num_train"] == len(CLASSES) * TRAIN_PER_CLASS
    assert shown["num_val"] == len(CLASSES) * VAL_PER_CLASS
    assert shown["fingerprint"] == result["fingerprint"]
    assert np.array_equal(sorted(shown["class_names"]), sorted(["tench", "parachute", "n09999999"]))


def test_cli_download_only_fetches_once(server, monkeypatch, capsys) -> None:
    from zeal_core.cli import main

    body = good_archive()
    server.publish(monkeypatch, body)
    assert main(["data", "download", "--dataset", "imagenette", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["downloaded"] is True and first["md5"] == md5(body) and first["bytes"] == len(body)
    assert main(["data", "download", "--dataset", "imagenette", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["downloaded"] is False and server.requests == 1
    assert not is_prepared("imagenette")  # download alone does not decode


def test_params_file_sets_url_and_md5_and_environment_wins(tmp_path, monkeypatch) -> None:
    from zeal_core.data.settings import IMAGENETTE_URL, imagenette_settings

    params = tmp_path / "params.yaml"
    params.write_text("data:\n  imagenette:\n    url: http://mirror.example/x.tgz\n    md5: " + "a" * 32
                      + "\n    image_size: 96\n  other: {}\nmodel: {arch: resnet18}\n")
    monkeypatch.setenv("ZEAL_PARAMS", str(params))
    monkeypatch.delenv("ZEAL_IMAGENETTE_URL", raising=False)
    monkeypatch.delenv("ZEAL_IMAGENETTE_MD5", raising=False)
    settings = imagenette_settings()
    assert (settings.url, settings.md5, settings.image_size) == ("http://mirror.example/x.tgz", "a" * 32, 96)
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", "B" * 32)
    assert imagenette_settings().md5 == "b" * 32
    monkeypatch.setenv("ZEAL_PARAMS", str(tmp_path / "absent.yaml"))
    assert imagenette_settings().url == IMAGENETTE_URL


def test_cancel_during_decode_keeps_the_verified_archive_but_no_cache(server, monkeypatch) -> None:
    server.publish(monkeypatch, good_archive())
    token = CancelToken()

    def cancel_when_decoding(event) -> None:
        if event.stage == "decode":
            token.cancel()

    with pytest.raises(Cancelled):
        prepare_dataset("imagenette", progress=cancel_when_decoding, cancel=token)
    assert leftovers() == [archive_path().name] and not is_prepared("imagenette")
    assert prepare_dataset("imagenette").images.shape[0] > 0 and server.requests == 1
