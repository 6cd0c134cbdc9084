"""Bring your own model: checkpoints from plain timm scripts import safely, exactly, or not at all.

The "script" is what a timm user already has: a ResNet-18 trained for a few steps by their own loop on the
digits at 32 px, saved with ``torch.save(model.state_dict())`` or safetensors. Every bad input must leave
the registry folder exactly as it was (``snapshot``), and no pickle payload may ever run (``marker``).
"""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from zeal_core.data import load_dataset
from zeal_core.errors import ConfigError, DataError, ModelError
from zeal_core.evaluate import predict_logits
from zeal_core.importing import import_checkpoint
from zeal_core.models.checkpoint import WRAPPER_KEYS, check_fit, read_checkpoint
from zeal_core.models.factory import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, create_model
from zeal_core.models.importer import init_from_checkpoint, server_checkpoint_path
from zeal_core.models.registry import ModelCard, ModelRegistry, label_map

SIZE = 32  # px: the digits' own size, so neither side resizes


@dataclass(frozen=True, repr=False)
class Script:
    """A plain timm training script's model and what it computed itself on the val split."""

    model: torch.nn.Module
    state: dict[str, torch.Tensor]
    val_logits: torch.Tensor
    val_accuracy: float


def script_inputs(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """The script's own preprocessing: [0, 1] pixels normalised per channel."""
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


@pytest.fixture(scope="module")
def script() -> Script:
    """A ResNet-18 trained for 12 Adam steps on the digits by a plain loop (not the lab's trainer)."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    train_images, train_labels = data.split("train")
    val_images, val_labels = data.split("val")
    model = timm.create_model("resnet18", num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(12):
        index = torch.randint(0, len(train_images), (32,))
        loss = F.cross_entropy(model(script_inputs(train_images[index])), train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(script_inputs(val_images))
    accuracy = int((logits.argmax(1) == val_labels).sum()) / len(val_labels)  # as the lab counts it
    return Script(model=model, state={k: v.clone() for k, v in model.state_dict().items()}, val_logits=logits,
                  val_accuracy=accuracy)


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry()


def snapshot(*folders: Path) -> list[tuple[str, int, int]]:
    """Every file and folder under ``folders`` (hidden ones too), with size and modification time."""
    return sorted((str(path), path.stat().st_size, path.stat().st_mtime_ns)
                  for folder in folders for path in [folder, *folder.rglob("*")])


def imported_logits(registry: ModelRegistry, card: ModelCard) -> torch.Tensor:
    """The registered model's val logits, computed the lab's way (registry load + prepare_batch)."""
    model, card = registry.load(card.version)
    images, _ = load_dataset("digits").split("val")
    return predict_logits(model, card.model_config, images, "cpu")


# ------------------------------------------------------------------------------------- the target


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_plain_timm_checkpoint_imports_with_identical_logits_and_accuracy(kind: str, script: Script,
                                                                          registry: ModelRegistry,
                                                                          tmp_path: Path) -> None:
    path = tmp_path / f"model.{kind}"
    if kind == "pth":
        torch.save(script.model.state_dict(), path)  # exactly what a timm script does
    else:
        save_file(script.model.state_dict(), str(path))
    card = import_checkpoint(path, arch="resnet18", dataset="digits", registry=registry, device="cpu")
    model, _ = registry.load(card.version)
    for name, tensor in script.state.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    logits = imported_logits(registry, card)
    torch.testing.assert_close(logits, script.val_logits, rtol=0, atol=1e-5)
    assert torch.equal(logits.argmax(1), script.val_logits.argmax(1))
    assert card.metrics["val_accuracy"] == script.val_accuracy
    assert card.metrics["val_n"] == 450 and card.strategy == "import"
    source = card.recipe["import"]
    assert source["file"] == path.name and source["format"] == ("torch" if kind == "pth" else "safetensors")
    assert source["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert card.model_config == ModelConfig(arch="resnet18", num_classes=10, image_size=SIZE)
    assert set(card.metrics["val_per_class_accuracy"]) == {str(digit) for digit in range(10)}
    assert {"read", "check", "build", "evaluate", "total"} <= set(card.metrics["import_seconds"])


# ------------------------------------------------------------------------------ formats and wrappers

def _wrapped(state: dict[str, torch.Tensor], wrapper: str) -> object:
    prefixed = {
        "ddp": lambda: {f"module.{k}": v for k, v in state.items()},
        "compiled": lambda: {f"_orig_mod.{k}": v for k, v in state.items()},
        "ddp-compiled": lambda: {f"module._orig_mod.{k}": v for k, v in state.items()},
        "lightning": lambda: {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3,
                              "global_step": 120, "optimizer_states": [{"lr": 0.1}]},
        "nested": lambda: {"model": {"state_dict": state}, "epoch": 1},
    }
    if wrapper in prefixed:
        return prefixed[wrapper]()
    return {wrapper: state, "epoch": 7, "best_acc1": 0.5, "arch": "resnet18"}


@pytest.mark.parametrize("wrapper", [*WRAPPER_KEYS, "ddp", "compiled", "ddp-compiled", "lightning", "nested"])
def test_every_wrapper_and_prefix_reads_back_the_same_tensors(wrapper: str, script: Script,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save(_wrapped(script.state, wrapper), path)
    checkpoint = read_checkpoint(path)
    plan = check_fit(checkpoint, create_model(ModelConfig(num_classes=10)), arch="resnet18", num_classes=10,
                     reset_head=False)
    names = {key[len(plan.stripped_prefix or ""):] for key in checkpoint.state}
    assert names == set(script.state)
    if wrapper in WRAPPER_KEYS:
        assert checkpoint.entry == wrapper
    if wrapper.startswith("ddp"):
        assert checkpoint.stripped_prefixes[0] == "module."
    if wrapper == "lightning":
        assert checkpoint.entry == "state_dict" and plan.stripped_prefix == "model."
    key = "layer1.0.conv1.weight"
    stored = checkpoint.state[(plan.stripped_prefix or "") + key]
    assert torch.equal(stored, script.state[key])


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".ckpt", ".pth.tar", ".PTH"])
def test_torch_suffixes_and_the_legacy_format_read(suffix: str, script: Script, tmp_path: Path) -> None:
    path = tmp_path / f"weights{suffix}"
    torch.save(script.state, path, _use_new_zipfile_serialization=suffix != ".bin")
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "torch" and set(checkpoint.state) == set(script.state)


def test_a_chosen_entry_wins_over_the_search(script: Script, tmp_path: Path) -> None:
    average = {k: v + 1 if v.is_floating_point() else v for k, v in script.state.items()}
    path = tmp_path / "timm-train.pth"
    torch.save({"state_dict": script.state, "state_dict_ema": average}, path)
    assert read_checkpoint(path).entry == "state_dict"
    chosen = read_checkpoint(path, entry="state_dict_ema")
    assert torch.equal(chosen.state["fc.bias"], script.state["fc.bias"] + 1)
    with pytest.raises(ModelError, match=r"no entry 'ema'.*state_dict, state_dict_ema"):
        read_checkpoint(path, entry="ema")


def test_upload_bytes_import_like_the_file(script: Script, registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "upload.safetensors"
    save_file(script.state, str(path))
    card = import_checkpoint(path.read_bytes(), filename="my model.safetensors", arch="resnet18",
                             dataset="digits", registry=registry, device="cpu")
    assert card.recipe["import"]["file"] == "my model.safetensors"
    assert card.metrics["val_accuracy"] == script.val_accuracy
    with pytest.raises(ModelError, match="needs its file name"):
        import_checkpoint(path.read_bytes(), arch="resnet18", dataset="digits", registry=registry)


# ---------------------------------------------------------------------------------------- bad input

class CreateMarker:
    """Unpickling this runs ``touch MARKER``: a stand-in for any code a pickle can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(folder: Path, state: dict[str, torch.Tensor], marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, message pattern) for every kind of bad input."""
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, file_name: str, pattern: str) -> Path:
        files[name] = (folder / file_name, pattern)
        return folder / file_name

    refused = r"holds Python objects other than tensors{}.*refused without running"
    torch.save({"state_dict": state, "payload": CreateMarker(marker)},
               add("code in a torch zip", "evil.pth", refused.format(r" \(it needs posix\.system\)")))
    add("raw pickle with code", "evil.pt", refused.format("")).write_bytes(pickle.dumps(CreateMarker(marker)))
    add("pickle renamed safetensors", "evil.safetensors", r"not a safetensors file").write_bytes(
        (folder / "evil.pth").read_bytes())
    whole = refused.format(r" \(it needs timm\.models\.resnet\.ResNet\)")
    torch.save(create_model(ModelConfig(num_classes=10)), add("whole pickled model", "whole.pth", whole))
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)},
               add("training arguments", "args.pth", r"argparse\.Namespace"))
    torch.save(state, folder / "whole-file.pth")
    data = (folder / "whole-file.pth").read_bytes()
    add("truncated torch file", "cut.pth", r"damaged or truncated").write_bytes(data[: len(data) // 2])
    save_file(state, str(folder / "whole-file.safetensors"))
    data = (folder / "whole-file.safetensors").read_bytes()
    add("truncated safetensors", "cut.safetensors", r"damaged or truncated").write_bytes(data[:-1000])
    add("empty file", "empty.pth", r"empty \(0 bytes\)").write_bytes(b"")
    add("not a torch file", "notes.pth", r"not a torch\.save file").write_bytes(b"my notes\n" * 400)
    add("garbled pickle", "garbled.pth", r"damaged or truncated|holds Python objects").write_bytes(
        b"\x80\x02" + bytes(range(256)) * 8)
    nan_state = {k: v.clone() for k, v in state.items()}
    nan_state["layer2.0.bn1.weight"][3] = float("nan")
    nan_state["fc.bias"][0] = float("inf")
    non_finite = r"2 tensor\(s\) hold NaN or infinite values \(layer2\.0\.bn1\.weight, fc\.bias\)"
    torch.save(nan_state, add("non-finite weight", "nan.pth", non_finite))
    torch.save({"epoch": 3, "lr": 0.1}, add("no state dict", "meta.pth", r"has no state dict.*\[epoch, lr\]"))
    torch.save([state], add("a list", "list.pth", r"holds a list, not a state dict"))
    add("unknown suffix", "weights.txt", r"unknown checkpoint format").write_bytes(b"x")
    add("missing path", "nowhere.pth", r"does not exist")
    (folder / "a-folder.pth").mkdir()
    add("a folder", "a-folder.pth", r"is a folder")
    return files


BAD_INPUTS = ["code in a torch zip", "raw pickle with code", "pickle renamed safetensors",
              "whole pickled model", "training arguments", "truncated torch file", "truncated safetensors",
              "empty file", "not a torch file", "garbled pickle", "non-finite weight", "no state dict",
              "a list", "unknown suffix", "missing path", "a folder"]


@pytest.fixture(scope="module")
def bad_files(script: Script, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("bad")
    marker = folder / "PWNED"
    return _bad_files(folder, script.state, marker), marker


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_and_changes_nothing(case: str, bad_files: tuple[dict, Path],
                                                  registry: ModelRegistry, isolated_dirs: Path) -> None:
    files, marker = bad_files
    path, pattern = files[case]
    before = snapshot(registry.root, isolated_dirs / "state", path.parent)
    with pytest.raises(ModelError, match=pattern) as caught:
        import_checkpoint(path, arch="resnet18", dataset="digits", registry=registry, device="cpu")
    assert path.name in str(caught.value)
    assert not marker.exists(), "a pickle payload ran"
    assert snapshot(registry.root, isolated_dirs / "state", path.parent) == before
    assert registry.list() == []


def _assert_refused_cleanly(registry: ModelRegistry, error_type: type, pattern: str, **options) -> None:
    before, versions = snapshot(registry.root), registry.versions()
    with pytest.raises(error_type, match=pattern):
        import_checkpoint(device="cpu", registry=registry, **options)
    assert snapshot(registry.root) == before and registry.versions() == versions


def test_wrong_architecture_summarises_missing_and_unexpected_keys(script: Script, registry: ModelRegistry,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(script.state, path)
    _assert_refused_cleanly(
        registry, ModelError,
        r"resnet18\.pth does not fit resnet34: (\d+) of the model's (\d+) tensors are missing from the file "
        r"\(layer1\.2\.conv1\.weight, .*\.\.\. \d+ more\).*Is --arch right\?",
        source=path, arch="resnet34", dataset="digits")
    _assert_refused_cleanly(registry, ModelError,
                            r"does not fit resnet18d.*not in the model \(conv1\.weight.*another shape",
                            source=path, arch="resnet18d", dataset="digits")


def test_unknown_architecture_lists_near_matches(script: Script, registry: ModelRegistry,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(script.state, path)
    _assert_refused_cleanly(registry, ModelError,
                            r"unknown model architecture 'resnet81'.*near matches: resnet18",
                            source=path, arch="resnet81", dataset="digits")
    _assert_refused_cleanly(registry, ConfigError, r"name the architecture", source=path, dataset="digits")


# ------------------------------------------------------------------------------ head check and reset

@pytest.fixture(scope="module")
def imagenet_head(script: Script, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script's backbone with a 1000-class ImageNet-style classifier."""
    state = dict(script.state)
    generator = torch.Generator().manual_seed(1)
    state["fc.weight"] = torch.randn(1000, 512, generator=generator) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("head") / "imagenet.safetensors"
    save_file(state, str(path))
    return path


def test_wrong_class_count_names_both_counts_and_the_flag(imagenet_head: Path,
                                                          registry: ModelRegistry) -> None:
    _assert_refused_cleanly(registry, ModelError,
                            r"imagenet\.safetensors predicts 1000 classes but the dataset has 10: add "
                            r"--reset-head", source=imagenet_head, arch="resnet18", dataset="digits")
    _assert_refused_cleanly(registry, ModelError, r"predicts 1000 classes but the dataset has 3",
                            source=imagenet_head, arch="resnet18", dataset="digits",
                            class_names=["0", "1", "2"])


def test_reset_head_fits_a_new_classifier_and_keeps_the_backbone(imagenet_head: Path, script: Script,
                                                                  registry: ModelRegistry) -> None:
    events = []
    card = import_checkpoint(imagenet_head, arch="resnet18", dataset="digits", reset_head=True,
                             registry=registry, device="cpu", progress=events.append)
    model, card = registry.load(card.version)
    assert card.model_config.num_classes == 10 and model.fc.weight.shape == (10, 512)
    for name, tensor in script.state.items():
        if not name.startswith("fc."):
            assert torch.equal(model.state_dict()[name], tensor), name
    fit = card.recipe["import"]["head_fit"]
    assert card.recipe["import"]["head"] == "new" and card.recipe["import"]["file_classes"] == 1000
    assert fit["train_n"] == 1347 and 1 <= fit["iterations"] <= 100
    # After 12 steps the script's own head is near chance (about 18 % val), but its features already
    # separate the digits: the fitted probe reaches about 90 % (95 % train) on them.
    assert fit["train_accuracy"] > 0.6 and card.metrics["val_accuracy"] > max(0.5, script.val_accuracy)
    assert "head" in card.metrics["import_seconds"] and "new classifier fitted" in card.notes
    assert any(event.stage == "head" for event in events)


def test_model_with_its_own_class_list(script: Script, registry: ModelRegistry, tmp_path: Path) -> None:
    """A 3-class model of digits 7, 1, 3 (in that output order) imports with its class list."""
    order = ["7", "1", "3"]
    state = dict(script.state)
    rows = torch.tensor([int(name) for name in order])
    state["fc.weight"], state["fc.bias"] = script.state["fc.weight"][rows], script.state["fc.bias"][rows]
    path = tmp_path / "three.pth"
    torch.save(state, path)
    card = import_checkpoint(path, arch="resnet18", dataset="digits", class_names=order, registry=registry,
                             device="cpu")
    assert card.class_names == tuple(order) and card.model_config.num_classes == 3
    assert list(label_map(card, load_dataset("digits").class_names)) == [-1, 1, -1, 2, -1, -1, -1, 0, -1, -1]
    _, labels = load_dataset("digits").split("val")
    keep = torch.isin(labels, rows)
    expected = script.val_logits[keep][:, rows].argmax(1)
    truth = torch.tensor([order.index(str(int(label))) for label in labels[keep]])
    assert card.metrics["val_n"] == int(keep.sum())
    assert card.metrics["val_accuracy"] == int((expected == truth).sum()) / len(truth)
    _assert_refused_cleanly(registry, DataError, r"class subset.*got \['7', '1', 'x'\]", source=path,
                            arch="resnet18", dataset="digits", class_names=["7", "1", "x"])
    _assert_refused_cleanly(registry, ModelError, r"predicts 3 classes but the dataset has 4", source=path,
                            arch="resnet18", dataset="digits", class_names=["7", "1", "3", "4"])


# -------------------------------------------------------------------------------------- normalisation

def test_mean_and_std_reach_the_card_and_the_input(script: Script, registry: ModelRegistry,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "half.pth"
    torch.save(script.state, path)
    card = import_checkpoint(path, arch="resnet18", dataset="digits", mean=[0.5, 0.5, 0.5],
                             std=(0.5, 0.5, 0.5), registry=registry, device="cpu")
    assert card.model_config.mean == (0.5, 0.5, 0.5) and card.model_config.std == (0.5, 0.5, 0.5)
    assert card.recipe["import"]["defaults_from"]["mean"] == "option"
    images, _ = load_dataset("digits").split("val")
    with torch.no_grad():
        expected = script.model(script_inputs(images, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(imported_logits(registry, card), expected, rtol=0, atol=1e-5)
    _assert_refused_cleanly(registry, ConfigError, r"model_config\.std must be three numbers", source=path,
                            arch="resnet18", dataset="digits", std=[0.5, 0.0, 0.5])
    _assert_refused_cleanly(registry, ConfigError, r"image_size must be an integer in \[8, 1024\]",
                            source=path, arch="resnet18", dataset="digits", image_size=4)


def test_old_cards_without_normalisation_load_and_odd_values_are_refused() -> None:
    old = {"arch": "resnet18", "num_classes": 10, "image_size": 32, "pretrained": False}
    assert ModelConfig.from_dict(old).mean == IMAGENET_MEAN
    assert ModelConfig.from_dict({**old, "mean": [0.5, 0.4, 0.3]}).mean == (0.5, 0.4, 0.3)
    for bad in ([0.5, 0.5], [2.0, 0.5, 0.5], "0.5", [None, 0.5, 0.5], [float("nan")] * 3):
        with pytest.raises(ValueError, match=r"model_config\.mean must be three numbers"):
            ModelConfig.from_dict({**old, "mean": bad})
    card = {"version": "v1", "model_config": {**old, "std": [0, 1, 1]}, "dataset": "digits",
            "created": "2026-01-01T00:00:00Z"}
    with pytest.raises(ModelError, match=r"model card is damaged.*std must be three numbers"):
        ModelCard.from_dict(card)


# --------------------------------------------------------------------------- init and server paths

def test_init_reads_like_import_and_replaces_a_head_that_does_not_fit(imagenet_head: Path, script: Script,
                                                                      bad_files: tuple[dict, Path]) -> None:
    init = init_from_checkpoint(imagenet_head, arch="resnet18", num_classes=10, image_size=SIZE)
    assert init.source["head"] == "new" and init.source["file_classes"] == 1000
    assert init.model.fc.out_features == 10 and "1000-class classifier was replaced" in init.note
    assert torch.equal(init.model.state_dict()["conv1.weight"], script.state["conv1.weight"])
    files, marker = bad_files
    for case in ("code in a torch zip", "non-finite weight", "truncated torch file"):
        path, pattern = files[case]
        with pytest.raises(ModelError, match=pattern):
            init_from_checkpoint(path, arch="resnet18", num_classes=10, image_size=SIZE)
    assert not marker.exists()


def test_server_paths_stay_inside_the_allowed_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = tmp_path / "shared"
    allowed.mkdir()
    monkeypatch.setenv("ZEAL_FOLDER_ROOTS", str(allowed))
    assert server_checkpoint_path(str(allowed / "m.pth")) == (allowed / "m.pth").resolve()
    for outside in (str(tmp_path / "m.pth"), f"{allowed}/../m.pth", "/etc/passwd"):
        with pytest.raises(ModelError, match="outside the folders this server may read"):
            server_checkpoint_path(outside)
    with pytest.raises(ModelError, match="no checkpoint path"):
        server_checkpoint_path("  ")
