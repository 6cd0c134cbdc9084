"""Bad inputs through every entry point: uploads, image folders, archives, parameters and the command line.

Each bad case must give a clear message that names the file or value (and how to fix it), and the process
must keep working: after every bad input a good input still decodes, trains or parses.
"""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import tarfile
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeal_core import corruptions, data
from zeal_core.data import decode
from zeal_core.data.download import MAX_COMPRESSION_RATIO, checked_members
from zeal_core.errors import ConfigError, DataError, ZealError
from zeal_core.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SIZE = 16  # px, working size for decoding in these tests


# Tiny encoded images ---------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _gradient_rgb(size: tuple[int, int] = (24, 20)) -> Image.Image:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8), "RGB")


def good_png() -> bytes:
    return _encode(_gradient_rgb(), "PNG")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` RGB pixels, with one tiny IDAT: a few hundred bytes.

    Decoding it would need 1.2 GB; it must be refused from the header alone.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    first_rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)  # 4 rows of filter byte + black pixels
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", first_rows) + \
        png_chunk(b"IEND", b"")


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Bad uploads: name -> (bytes, a word the skip reason must contain)."""
    jpeg = _encode(_gradient_rgb((64, 64)), "JPEG", quality=90)
    png = _encode(_gradient_rgb((64, 64)), "PNG")
    return {
        "notes.txt": (b"these are my holiday notes, not a picture\n" * 4, "not an image"),
        "empty.png": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "header-only.jpg": (jpeg[:20], "image"),
        "bomb.png": (bomb_png(), "decompression bomb"),
        "script.png": (b"#!/bin/sh\nrm -rf /\n", "not an image"),
    }


def odd_but_valid_files() -> dict[str, bytes]:
    """Images in unusual modes that must decode to 8-bit RGB (not be skipped)."""
    grey16 = Image.fromarray(np.arange(20 * 20, dtype=np.uint16).reshape(20, 20) * 160)
    cmyk = _gradient_rgb().convert("CMYK")
    palette = _gradient_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent = _gradient_rgb().convert("RGBA")
    transparent.putalpha(0)
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "grey16.png": _encode(grey16, "PNG"),
        "cmyk.jpg": _encode(cmyk, "JPEG", quality=95),
        "cmyk.tif": _encode(cmyk, "TIFF"),
        "palette.png": _encode(palette, "PNG"),
        "palette.gif": _encode(palette, "GIF"),
        "transparent.png": _encode(transparent, "PNG"),
        "animated.gif": gif.getvalue(),
    }


# Uploads: decode_images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_upload_is_skipped_with_its_name_and_reason_and_good_ones_still_decode(name: str) -> None:
    payload, word = bad_files()[name]
    items = [("first.png", good_png()), (name, payload), ("last.png", good_png())]
    images, skipped = data.decode_images(items, SIZE)
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert [file for file, _ in skipped] == [name]
    assert word in skipped[0][1].lower(), skipped


@pytest.mark.parametrize("side", [20_000, 10_000])  # above Pillow's own limit, and between ours and Pillow's
def test_decompression_bomb_is_refused_from_the_header_without_allocating(side: int, monkeypatch) -> None:
    payload = bomb_png(side, side)
    assert len(payload) < 2_000  # the file is tiny; only its header claims 100-400 million pixels
    loads = []
    original_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self.size) or original_load(self))
    with pytest.raises(decode.SkipImage, match=r"decompression bomb") as caught:
        decode.decode_image(payload, SIZE)
    assert f"{side * side:,}" in str(caught.value) or f"{side} x {side}" in str(caught.value) \
        or f"{side * side} pixels" in str(caught.value)
    assert loads == []  # no pixel buffer was ever asked for


@pytest.mark.parametrize("name", sorted(odd_but_valid_files()))
def test_unusual_modes_decode_to_8_bit_rgb(name: str) -> None:
    images, skipped = data.decode_images([(name, odd_but_valid_files()[name])], SIZE)
    assert skipped == []
    assert images.shape == (1, 3, SIZE, SIZE) and images.dtype == torch.uint8


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    ramp = Image.fromarray(np.full((20, 20), 32_768, dtype=np.uint16))  # half of full scale
    images, _ = data.decode_images([("half.png", _encode(ramp, "PNG"))], SIZE)
    assert abs(int(images.float().mean()) - 128) <= 1  # 32768 / 257, not 255 (clipped)


def test_animated_gif_uses_its_first_frame() -> None:
    images, _ = data.decode_images([("animated.gif", odd_but_valid_files()["animated.gif"])], SIZE)
    red, green, blue = (images[0, channel].float().mean().item() for channel in range(3))
    assert red > 200 and green < 50 and blue < 50  # frame 1 is red; frames 2-3 (blue, green) are ignored


def test_transparent_pixels_are_drawn_over_white() -> None:
    images, _ = data.decode_images([("clear.png", odd_but_valid_files()["transparent.png"])], SIZE)
    assert int(images.min()) == 255


def test_upload_over_the_byte_limit_is_skipped_before_decoding(monkeypatch) -> None:
    big = good_png()
    monkeypatch.setattr(decode, "MAX_FILE_BYTES", len(big) - 1)
    images, skipped = data.decode_images([("big.png", big), ("ok.png", b"")], SIZE)
    assert images.shape[0] == 0
    assert skipped[0][0] == "big.png" and "too large" in skipped[0][1] and f"{len(big):,}" in skipped[0][1]


def test_streamlit_upload_limit_is_set_and_below_the_library_guard() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    upload_mb = config["server"]["maxUploadSize"]
    assert 1 <= upload_mb * 1024 * 1024 <= decode.MAX_FILE_BYTES


# Image folders: folder:PATH --------------------------------------------------------------------------------


def test_folder_with_every_bad_file_keeps_the_good_ones_and_names_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for class_name in ("cats", "dogs"):
        (root / class_name).mkdir(parents=True)
        for index in range(3):
            (root / class_name / f"good{index}.png").write_bytes(good_png())
    for name, (payload, _) in bad_files().items():
        (root / "cats" / name).write_bytes(payload)
    for name, payload in odd_but_valid_files().items():
        (root / "dogs" / name).write_bytes(payload)
    dataset = data.load_dataset(f"folder:{root}", image_size=SIZE)
    skipped = dict(dataset.skipped)
    assert set(skipped) == {f"cats/{name}" for name in bad_files()}
    assert "not an image file name ending" in skipped["cats/notes.txt"]
    assert "decompression bomb" in skipped["cats/bomb.png"]
    assert dataset.images.shape[0] == 6 + len(odd_but_valid_files())
    assert dataset.class_names == ("cats", "dogs")


def test_folder_of_only_bad_files_fails_naming_the_first_problem(tmp_path: Path) -> None:
    (tmp_path / "junk" / "a").mkdir(parents=True)
    (tmp_path / "junk" / "a" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable image in .*junk.*zero\.png.*empty"):
        data.load_dataset(f"folder:{tmp_path / 'junk'}", image_size=SIZE)


@pytest.mark.parametrize("name", ["folder:", "folder:   ", "folder:/no/such/folder/anywhere"])
def test_missing_folder_names_the_path_and_the_form(name: str) -> None:
    with pytest.raises(DataError, match=r"folder:PATH"):
        data.load_dataset(name)


def test_file_instead_of_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(good_png())
    with pytest.raises(DataError, match=r"photo\.png.*not a folder"):
        data.load_dataset(f"folder:{tmp_path / 'photo.png'}")


# Archives --------------------------------------------------------------------------------------------------


def _tar_bytes(add) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        add(tar)
    return buffer.getvalue()


def _file(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


UNSAFE_ARCHIVES = {
    "dot-dot": (lambda tar: _file(tar, "imagenette2-160/train/../../../evil.png", good_png()), r"'\.\.'"),
    "absolute": (lambda tar: _file(tar, "/tmp/evil.png", good_png()), r"absolute path"),
    "symlink": (lambda tar: _link(tar, "imagenette2-160/train/n01/x.png", "/etc/passwd", tarfile.SYMTYPE),
                r"symbolic link.*/etc/passwd"),
    "hardlink": (lambda tar: _link(tar, "imagenette2-160/train/n01/x.png", "/etc/passwd", tarfile.LNKTYPE),
                 r"hard link"),
    "fifo": (lambda tar: _link(tar, "imagenette2-160/pipe", "", tarfile.FIFOTYPE), r"device or fifo"),
    # 20 MB of zero bytes squeeze into ~20 kB of gzip: a ratio of about 1000, far above the limit.
    "bomb": (lambda tar: _file(tar, "imagenette2-160/train/n01/zeros.png", bytes(20_000_000)),
             r"compression bomb"),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE_ARCHIVES))
def test_unsafe_archive_members_are_refused_before_anything_is_read(kind: str, tmp_path: Path) -> None:
    add, reason = UNSAFE_ARCHIVES[kind]
    archive = tmp_path / f"{kind}.tgz"
    archive.write_bytes(_tar_bytes(add))
    if kind == "bomb":
        assert archive.stat().st_size * MAX_COMPRESSION_RATIO < 20_000_000
    with tarfile.open(archive, "r:*") as tar, pytest.raises(DataError, match=reason) as caught:
        checked_members(tar, archive)
    assert str(archive) in str(caught.value)


@pytest.mark.parametrize("kind", ["dot-dot", "symlink", "bomb"])
def test_unsafe_archive_through_prepare_leaves_data_dir_clean(kind: str, tmp_path: Path, monkeypatch) -> None:
    import hashlib

    payload = _tar_bytes(UNSAFE_ARCHIVES[kind][0])
    source = tmp_path / "mirror" / "imagenette2-160.tgz"
    source.parent.mkdir()
    source.write_bytes(payload)
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", str(source))
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", hashlib.md5(payload).hexdigest())
    with pytest.raises(DataError, match=r"unsafe archive|compression bomb"):
        data.prepare_dataset("imagenette", image_size=SIZE)
    data_dir = tmp_path / "data"
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []  # the refused download was removed
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_damaged_archive_names_the_file_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    payload = b"\x1f\x8b\x08\x00" + bytes(200)  # a gzip magic number and then nonsense
    source = tmp_path / "broken.tgz"
    source.write_bytes(payload)
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", str(source))
    monkeypatch.setenv("ZEAL_IMAGENETTE_MD5", hashlib.md5(payload).hexdigest())
    with pytest.raises(DataError, match=r"imagenette2-160\.tgz.*damaged: delete it") as caught:
        data.prepare_dataset("imagenette", image_size=SIZE)
    assert "\n" not in str(caught.value)  # one line, for the command line and the job log


# Parameters -------------------------------------------------------------------------------------------------

BAD_SPECS = {
    "fog:nan": "nan",
    "fog:inf": "inf",
    "fog:-1": "-1",
    "fog:5.5": "5.5",
    "fog:two": "two",
    "fog:2@1.5": "1.5",
    "fog:2@nan": "nan",
    "fog:2@-0.1": "-0.1",
    "fog": "name:severity",
    "": "empty",
    "teleport:2": "teleport",
    "fog:2+blur_everything:1": "blur_everything",
}


@pytest.mark.parametrize("text", sorted(BAD_SPECS))
def test_bad_drift_spec_raises_config_error_naming_the_value(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        corruptions.DriftSpec.parse(text)
    message = str(caught.value)
    assert BAD_SPECS[text] in message and "\n" not in message
    assert corruptions.DriftSpec.parse("fog:2@0.5").fraction == 0.5  # still works afterwards


def test_unknown_corruption_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        corruptions.apply(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "teleport", 1.0)
    assert all(name in str(caught.value) for name in corruptions.list_corruptions())


@pytest.mark.parametrize("severity", [math.nan, math.inf, -0.5, 5.01])
def test_apply_refuses_out_of_range_severity(severity: float) -> None:
    with pytest.raises(ConfigError, match="severity"):
        corruptions.apply(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "gaussian_noise", severity)


BAD_TRAINING = {
    "epochs": 0,
    "batch_size": 1,
    "lr": math.nan,
    "momentum": math.nan,
    "weight_decay": math.inf,
    "label_smoothing": 1.0,
    "image_size": 4,
    "optimizer": "adagrad",
    "schedule": "random",
    "crop_scale": (0.5, math.nan),
    "corruption_share": 0.0,
    "max_seconds": math.nan,
    "stop_at_accuracy": 1.5,
}


@pytest.mark.parametrize("field", sorted(BAD_TRAINING))
def test_bad_training_setting_names_the_field_and_the_allowed_range(field: str) -> None:
    config = TrainConfig(**{field: BAD_TRAINING[field]})
    with pytest.raises(ConfigError, match=rf"training setting {field}=.* is invalid: use "):
        config.validate()
    TrainConfig().validate()


def test_unknown_augmentation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="teleport"):
        TrainConfig(augmentations=("flip", "teleport")).validate()


@pytest.mark.parametrize("name", ["mnist", "../digits", "FOLDER:/tmp", "imagenette "])
def test_unknown_dataset_lists_the_valid_names(name: str) -> None:
    with pytest.raises(DataError, match=r"unknown dataset .*digits.*imagenette.*folder:PATH"):
        data.load_dataset(name)


def test_unknown_detector_and_strategy_list_the_valid_names() -> None:
    from zeal_core import drift, retrain

    with pytest.raises(ConfigError) as caught:
        drift.create_detector("magic")
    assert all(name in str(caught.value) for name in drift.list_detectors())
    with pytest.raises(ConfigError) as caught:
        retrain.adapt("magic", "v1", "digits", "clean", device="cpu", progress=None, cancel=None)
    assert all(name in str(caught.value) for name in retrain.list_strategies())


# The command line -----------------------------------------------------------------------------------------

CLI_CASES = {
    "epochs": (["train", "--epochs", "0"], "epochs"),
    "lr": (["train", "--lr", "nan"], "lr"),
    "image-size": (["train", "--image-size", "100000"], "image_size"),
    "dataset": (["data", "info", "--dataset", "mnist"], "mnist"),
}


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zeal_core", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=180)


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_flag_exits_2_with_one_line_and_json_ok_false(case: str, tmp_path: Path) -> None:
    args, word = CLI_CASES[case]
    result = _cli([*args, "--json"], tmp_path)
    assert result.returncode == 2, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and word in payload["error"]
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and word in error_lines[0] and "Traceback" not in result.stderr


def seed_random_digits_model() -> str:
    """An untrained ResNet-18 for digits, saved and made active in the per-test registry: its version."""
    from zeal_core.models import ModelConfig, create_model
    from zeal_core.models.registry import ModelRegistry

    config = ModelConfig(arch="resnet18", num_classes=10, image_size=8, pretrained=False)
    registry = ModelRegistry()
    card = registry.save(create_model(config), model_config=config, dataset="digits", dataset_fingerprint="",
                         recipe={}, metrics={})
    registry.set_active(card.version)
    return card.version


@pytest.mark.parametrize(("flags", "word"), [(["--drift", "fog:9"], "fog"), (["--n", "-5"], "n")])
def test_cli_drift_bad_values_exit_2_with_one_line(flags: list[str], word: str, tmp_path: Path) -> None:
    seed_random_digits_model()
    result = _cli(["drift", "--detector", "ks", *flags, "--json"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and word in payload["error"]
    assert "Traceback" not in result.stderr


def test_every_user_error_is_a_zeal_error_and_config_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ZealError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataError, ZealError)
