"""A user's image folder and uploaded files: every colour mode loads; bad files are skipped with reasons."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from zeal_core.data import decode_images, is_prepared, load_dataset
from zeal_core.data.decode import SkipImage, decode_image
from zeal_core.data.folder import stratified_val_mask
from zeal_core.errors import DataError
from zeal_core.paths import data_dir

SIZE = 24  # px, small to keep the tests quick


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def palette_image() -> Image.Image:
    image = Image.new("P", (30, 20), 1)
    image.putpalette([0, 0, 0, 20, 60, 220] + [0] * 762)  # index 1 is a blue
    return image


def half_transparent() -> Image.Image:
    image = Image.new("RGBA", (40, 40), (220, 10, 10, 255))
    image.paste((0, 0, 0, 0), (20, 0, 40, 40))  # right half fully transparent
    return image


# Good files in every colour mode the issue names, with the RGB colour each should become.
GOOD = {
    "rgb.jpg": (encode(Image.new("RGB", (50, 30), (10, 120, 230)), "JPEG", quality=95), (10, 120, 230)),
    "grey.png": (encode(Image.new("L", (30, 30), 77), "PNG"), (77, 77, 77)),
    "palette.png": (encode(palette_image(), "PNG"), (20, 60, 220)),
    "cmyk.jpg": (encode(Image.new("CMYK", (30, 30), (255, 0, 0, 0)), "JPEG", quality=95), (0, 255, 255)),
    "sixteen.png": (encode(Image.fromarray(np.full((30, 30), 128 * 257, np.uint16)), "PNG"), (128, 128, 128)),
}
_NOISE_JPEG = encode(noise((96, 96), 1), "JPEG", quality=90)
_NOISE_PNG = encode(noise((96, 96), 2), "PNG")
# Bad files and a word their skip reason must contain.
BAD = {
    "empty.jpg": (b"", "empty"),
    "truncated.jpg": (_NOISE_JPEG[: len(_NOISE_JPEG) // 2], "truncated"),
    "truncated.png": (_NOISE_PNG[: len(_NOISE_PNG) // 2], "truncated"),
    "notes.jpg": (b"shopping list: milk, eggs\n" * 20, "not an image"),
    "bomb.png": (encode(Image.new("1", (8000, 7000)), "PNG"), "decompression bomb"),
    "readme.txt": (b"about these pictures", "name ending"),
}


def write_folder(root: Path) -> Path:
    """``root/good``: the good files plus an RGBA; ``root/mixed``: one good JPEG and the bad files."""
    (root / "good").mkdir(parents=True)
    (root / "mixed").mkdir()
    for name, (data, _) in GOOD.items():
        (root / "good" / name).write_bytes(data)
    (root / "good" / "rgba.png").write_bytes(encode(half_transparent(), "PNG"))
    (root / "mixed" / "fine.jpg").write_bytes(encode(noise((40, 60), 3), "JPEG"))
    for name, (data, _) in BAD.items():
        (root / "mixed" / name).write_bytes(data)
    (root / "mixed" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are ignored, not reported
    return root


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_colour_mode_becomes_the_right_rgb(name: str) -> None:
    data, expected = GOOD[name]
    pixels = decode_image(data, SIZE)
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - np.array(expected)).max() < 6


def test_transparency_is_drawn_over_white() -> None:
    pixels = decode_image(encode(half_transparent(), "PNG"), 40).astype(int)
    assert np.abs(pixels[:, :15].reshape(-1, 3).mean(0) - [220, 10, 10]).max() < 3
    assert (pixels[:, 25:] >= 250).all()


@pytest.mark.parametrize("name", sorted(set(BAD) - {"readme.txt"}))
def test_bad_bytes_are_refused_with_a_reason(name: str) -> None:
    data, word = BAD[name]
    with pytest.raises(SkipImage, match=word):
        decode_image(data, SIZE)


def test_folder_loads_good_files_and_reports_bad_ones(tmp_path) -> None:
    root = write_folder(tmp_path / "pictures")
    dataset = load_dataset(f"folder:{root}", image_size=SIZE)
    assert dataset.class_names == ("good", "mixed")
    assert dataset.images.shape == (len(GOOD) + 2, 3, SIZE, SIZE) and dataset.images.dtype == torch.uint8
    assert dataset.class_counts()["good"]["train"] + dataset.class_counts()["good"]["val"] == len(GOOD) + 1
    reasons = dict(dataset.skipped)
    assert set(reasons) == {f"mixed/{name}" for name in BAD}
    for name, (_, word) in BAD.items():
        assert word in reasons[f"mixed/{name}"]
    assert dataset.name == f"folder:{root.resolve()}"
    assert load_dataset(dataset.name, image_size=SIZE).fingerprint == dataset.fingerprint


def test_folder_cache_is_reused_and_rebuilt_when_files_change(tmp_path) -> None:
    root = write_folder(tmp_path / "pictures")
    name = f"folder:{root}"
    assert not is_prepared(name, image_size=SIZE)
    events = []
    first = load_dataset(name, events.append, image_size=SIZE)
    assert "decode" in {e.stage for e in events} and is_prepared(name, image_size=SIZE)
    events.clear()
    assert load_dataset(name, events.append, image_size=SIZE).fingerprint == first.fingerprint
    assert {e.stage for e in events} == {"cached"}
    (root / "good" / "extra.png").write_bytes(encode(noise((20, 20), 9), "PNG"))
    assert not is_prepared(name, image_size=SIZE)
    second = load_dataset(name, image_size=SIZE)
    assert second.images.shape[0] == first.images.shape[0] + 1
    assert len(list((data_dir() / "folders").glob("*.safetensors"))) == 1  # the stale cache is gone


def make_classes(root: Path, counts: dict[str, int]) -> None:
    for class_name, count in counts.items():
        (root / class_name).mkdir(parents=True)
        for index in range(count):
            (root / class_name / f"{index}.png").write_bytes(encode(noise((16, 16), index), "PNG"))


def test_split_is_stratified_and_seeded(tmp_path) -> None:
    make_classes(tmp_path / "f", {"cat": 10, "dog": 5, "emu": 1})
    dataset = load_dataset(f"folder:{tmp_path / 'f'}", image_size=16)
    counts = dataset.class_counts()
    assert counts == {"cat": {"train": 8, "val": 2}, "dog": {"train": 4, "val": 1},
                      "emu": {"train": 1, "val": 0}}
    labels = dataset.labels.numpy()
    assert np.array_equal(stratified_val_mask(labels, 0.2, 0), dataset.is_val.numpy())
    assert not np.array_equal(stratified_val_mask(labels, 0.2, 0), stratified_val_mask(labels, 0.2, 1))


def test_train_and_val_subfolders_are_the_split(tmp_path) -> None:
    make_classes(tmp_path / "f" / "train", {"cat": 4, "dog": 3})
    make_classes(tmp_path / "f" / "val", {"cat": 1, "dog": 2})
    dataset = load_dataset(f"folder:{tmp_path / 'f'}", image_size=16)
    assert dataset.class_counts() == {"cat": {"train": 4, "val": 1}, "dog": {"train": 3, "val": 2}}


def test_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "loose.txt").write_bytes(b"")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")


def test_decode_uploaded_files_keeps_order_and_reports_skips() -> None:
    items = [("a.jpg", GOOD["rgb.jpg"][0]), ("b.jpg", BAD["notes.jpg"][0]), ("c.png", GOOD["grey.png"][0]),
             ("d.jpg", b"")]
    images, skipped = decode_images(items, SIZE)
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert [name for name, _ in skipped] == ["b.jpg", "d.jpg"]
    assert abs(images[1].float().mean().item() - 77) < 1  # rows keep upload order: c.png is second
    empty, none_skipped = decode_images([], SIZE)
    assert empty.shape == (0, 3, SIZE, SIZE) and none_skipped == []


def test_cli_info_on_a_folder_lists_skipped_files(tmp_path) -> None:
    root = write_folder(tmp_path / "pictures")
    out = subprocess.run([sys.executable, "-m", "zeal_core", "data", "info", "--dataset", f"folder:{root}",
                          "--size", str(SIZE), "--json"], cwd=ROOT, capture_output=True, text=True,
                         env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["num_images"] == len(GOOD) + 2 and info["image_size"] == SIZE
    assert {item["file"] for item in info["skipped"]} == {f"mixed/{name}" for name in BAD}
