"""Faults: SIGKILL during download, caching, training and registry writes, and a full disk.

After each fault: nothing half-written is visible (only hidden temp files may remain, and the next writer
removes those once they are stale), the old state is intact, and the interrupted work can be redone.

A kill "at the right moment" is made deterministic: the child process prints a marker and pauses at that
point (a trickling server, a progress callback, or a wrapped ``os.replace``), and the test kills it there.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeal_core import data
from zeal_core.errors import DataError, ModelError
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.paths import STALE_TEMP_S, data_dir, models_dir

ROOT = Path(__file__).resolve().parent.parent
TINY = ModelConfig(arch="resnet18", num_classes=3, image_size=8, pretrained=False)
SIZE = 16  # px, working size for decoding


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), colour, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_imagenette() -> bytes:
    """An Imagenette-shaped .tgz: two classes, two images each in train/ and val/, plus padding.

    The padding member (random bytes, so it does not compress) makes the body long enough to trickle.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {f"imagenette2-160/{split}/{wnid}/{index}.png": _png(colour)
                   for split in ("train", "val") for wnid, colour in (("n01440764", (200, 0, 0)),
                                                                      ("n02102040", (0, 0, 200)))
                   for index in range(2)}
        members["imagenette2-160/padding.bin"] = np.random.default_rng(0).bytes(200_000)
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class TrickleServer:
    """Loopback HTTP server sending its body in 4 kB pieces, ``delay_s`` apart (0 = all at once)."""

    def __init__(self, body: bytes) -> None:
        self.body, self.delay_s, self.sent = body, 0.05, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                try:
                    for start in range(0, len(outer.body), 4096):
                        self.wfile.write(outer.body[start:start + 4096])
                        self.wfile.flush()
                        outer.sent += 4096
                        if outer.delay_s:
                            time.sleep(outer.delay_s)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/imagenette2-160.tgz"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def trickle(monkeypatch) -> Iterator[TrickleServer]:
    body = tiny_imagenette()
    server = TrickleServer(body)
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", server.url)
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", hashlib.md5(body).hexdigest())
    yield server
    server.close()


def visible_files(folder: Path) -> list[str]:
    """Files a reader would see: everything except hidden (dot) temp files."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def age(paths: list[Path], seconds: float = STALE_TEMP_S + 60) -> None:
    """Make files look older than they are (as if the killed process ran long ago)."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def wait_for(condition, timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_child(code: str) -> subprocess.Popen:
    """Run Python ``code`` in a child process (inheriting the per-test data/models/state folders)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at_marker(child: subprocess.Popen, marker: str = "PAUSED", timeout_s: float = 120.0) -> None:
    """Read the child's stdout until ``marker``, then SIGKILL it."""
    deadline = time.monotonic() + timeout_s
    for line in child.stdout:
        if marker in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise AssertionError(f"child ended before {marker}: {child.stderr.read()[-2000:]}")
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


# Download ---------------------------------------------------------------------------------------------------


def test_sigkill_during_download_leaves_no_partial_file_and_the_next_prepare_succeeds(trickle) -> None:
    child = subprocess.Popen([sys.executable, "-m", "zeal_core", "data", "prepare", "--dataset", "imagenette",
                              "--size", str(SIZE)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: trickle.sent >= 40_000, what="the download to start")  # about a fifth of the body
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    root = data_dir()
    assert visible_files(root) == []  # no half archive under its real name
    partial = hidden_files(root)
    assert partial and all(p.suffix == ".part" for p in partial)  # the temp file the kill left
    assert not data.is_prepared("imagenette", image_size=SIZE)

    age(partial)  # as if the kill was long ago: the next download removes the leftover
    trickle.delay_s = 0.0
    dataset = data.prepare_dataset("imagenette", image_size=SIZE)
    assert dataset.images.shape[0] == 8 and dataset.class_names == ("tench", "English springer")
    assert data.is_prepared("imagenette", image_size=SIZE)
    assert hidden_files(root) == []


# Caching ---------------------------------------------------------------------------------------------------


def _pet_folder(root: Path, per_class: int = 6) -> Path:
    for class_name, colour in (("cats", (250, 120, 0)), ("dogs", (0, 90, 250))):
        (root / class_name).mkdir(parents=True)
        for index in range(per_class):
            (root / class_name / f"{index}.png").write_bytes(_png(colour))
    return root


CHILD_DECODE = """
    import sys, time
    from zeal_core import data
    def progress(event):
        if event.stage == "decode" and event.done:
            print("PAUSED", flush=True)
            time.sleep(120)
    data.load_dataset(sys.argv[1] if len(sys.argv) > 1 else {name!r}, progress=progress, image_size=16)
"""

CHILD_PAUSE_AT_REPLACE = """
    import os, time
    real_replace = os.replace
    def paused_replace(source, target):
        if str(target).endswith({suffix!r}):
            print("PAUSED", flush=True)
            time.sleep(120)
        return real_replace(source, target)
    os.replace = paused_replace
    {body}
"""


def test_sigkill_during_decode_leaves_no_cache_and_the_next_load_rebuilds(tmp_path: Path) -> None:
    name = f"folder:{_pet_folder(tmp_path / 'pets')}"
    kill_at_marker(start_child(CHILD_DECODE.format(name=name)))
    assert visible_files(data_dir()) == []
    assert not data.is_prepared(name, image_size=SIZE)
    dataset = data.load_dataset(name, image_size=SIZE)
    assert dataset.images.shape[0] == 12 and data.is_prepared(name, image_size=SIZE)


@pytest.mark.parametrize("suffix", [".safetensors", ".json"])
def test_sigkill_while_saving_the_cache_leaves_it_unused_and_the_next_load_rebuilds(suffix: str,
                                                                                    tmp_path: Path) -> None:
    name = f"folder:{_pet_folder(tmp_path / 'pets')}"
    body = f"from zeal_core import data; data.load_dataset({name!r}, image_size=16)"
    kill_at_marker(start_child(CHILD_PAUSE_AT_REPLACE.format(suffix=suffix, body=body)))
    assert not data.is_prepared(name, image_size=SIZE)  # a cache is valid only with both halves
    leftovers = hidden_files(data_dir())
    assert leftovers  # the temp file the kill left
    age(leftovers)
    dataset = data.load_dataset(name, image_size=SIZE)
    assert dataset.images.shape[0] == 12 and data.is_prepared(name, image_size=SIZE)
    assert hidden_files(data_dir()) == []
    assert data.load_dataset(name, image_size=SIZE).fingerprint == dataset.fingerprint


# Training and registry writes -----------------------------------------------------------------------------


def _save(registry: ModelRegistry) -> str:
    return registry.save(create_model(TINY), model_config=TINY, dataset="digits", dataset_fingerprint="f",
                         recipe={"epochs": 1}, metrics={"val_accuracy": 0.5}).version


@pytest.mark.parametrize("suffix", [".safetensors", ".json"])
def test_sigkill_between_registry_writes_never_shows_a_half_model(suffix: str) -> None:
    registry = ModelRegistry()
    old = _save(registry)
    registry.set_active(old)
    body = f"""
    from zeal_core.models import ModelConfig, create_model
    from zeal_core.models.registry import ModelRegistry
    config = ModelConfig(**{TINY.to_dict()!r})
    ModelRegistry().save(create_model(config), model_config=config, dataset="digits",
                         dataset_fingerprint="f", recipe={{}}, metrics={{}})
    """
    kill_at_marker(start_child(CHILD_PAUSE_AT_REPLACE.format(suffix=suffix, body=textwrap.indent(
        textwrap.dedent(body), "    ").strip())))
    assert registry.versions() == [old] and registry.get_active() == old
    registry.load(old)  # the old version is intact
    leftovers = [p for p in registry.root.iterdir() if p.stem.split(".")[0] not in (old, "active")]
    assert leftovers  # a temp file, or weights without a card: neither is a version
    age(leftovers)
    new = _save(registry)  # the next save clears what the kill left, and works
    assert set(registry.versions()) == {old, new}
    assert sorted(p.name for p in registry.root.iterdir()) == sorted(
        [f"{v}.{ext}" for v in (old, new) for ext in ("json", "safetensors")] + ["active.json"])


def test_sigkill_during_training_leaves_the_registry_valid_and_a_rerun_works() -> None:
    train = [sys.executable, "-m", "zeal_core", "train", "--dataset", "digits", "--image-size", "16",
             "--batch-size", "32"]
    child = subprocess.Popen([*train, "--epochs", "50"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in child.stderr:  # progress lines; kill after the first optimisation steps
            if "train" in line and "step" in line.lower():
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    registry = ModelRegistry()
    assert registry.list() == [] and registry.get_active() is None
    assert visible_files(models_dir()) == []
    rerun = subprocess.run([*train, "--epochs", "1", "--max-seconds", "3", "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    version = json.loads(rerun.stdout)["version"]
    assert registry.versions() == [version] and registry.get_active() == version
    model, card = registry.load(version)
    assert card.dataset == "digits" and not model.training


# A full disk -----------------------------------------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_saving_weights_keeps_the_registry_as_it_was(monkeypatch) -> None:
    registry = ModelRegistry()
    old = _save(registry)
    before = sorted(registry.root.iterdir())
    monkeypatch.setattr("zeal_core.models.registry.save_file", _no_space)
    with pytest.raises(ModelError, match=r"could not write model weights to .*No space left.*free space"):
        _save(registry)
    assert sorted(registry.root.iterdir()) == before and registry.versions() == [old]
    registry.load(old)


def test_full_disk_while_writing_the_card_removes_the_new_weights(monkeypatch) -> None:
    registry = ModelRegistry()
    old = _save(registry)
    before = sorted(registry.root.iterdir())
    real_write_text = Path.write_text

    def write_text(self: Path, *args, **kwargs):
        if ".json." in self.name:  # the card's temp file
            _no_space()
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(ModelError, match=r"could not write model card .*\.json.*free space"):
        _save(registry)
    monkeypatch.undo()
    assert sorted(registry.root.iterdir()) == before and registry.versions() == [old]
    assert _save(registry) in registry.versions()  # space is back: saving works again


@pytest.mark.parametrize("target", ["tensors", "json"])
def test_full_disk_while_saving_a_cache_is_a_clear_error_and_the_old_cache_stays(target: str,
                                                                                  tmp_path: Path,
                                                                                  monkeypatch) -> None:
    import zeal_core.data.dataset as dataset_module

    folder = _pet_folder(tmp_path / "pets", per_class=3)
    name = f"folder:{folder}"
    first = data.load_dataset(name, image_size=SIZE)
    old_cache = visible_files(data_dir())
    (folder / "cats" / "new.png").write_bytes(_png((255, 255, 0)))  # the folder changed: a new cache
    if target == "tensors":
        monkeypatch.setattr(dataset_module, "save_file", _no_space)
    else:
        monkeypatch.setattr(dataset_module, "atomic_write_bytes", _no_space)
    with pytest.raises(DataError, match=r"could not write the dataset cache .*pets.*Free some disk space"):
        data.load_dataset(name, image_size=SIZE)
    assert visible_files(data_dir()) == old_cache and hidden_files(data_dir()) == []
    monkeypatch.undo()
    second = data.load_dataset(name, image_size=SIZE)
    assert second.images.shape[0] == first.images.shape[0] + 1
