"""Hardened edges (issue 26): faults never become false alarms, odd inputs never crash, nothing leaks.

Every case reproduces a failure seen before the fix. The command line runs in a child process (the real
exit code, stdout and stderr); the library cases call it directly. Pages: ``test_reliability_pages.py``;
the Markdown case in Chromium: ``test_reliability_markdown_browser.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from zeal_core.config import FALSE_WORDS, TRUE_WORDS, override, parse_pairs
from zeal_core.corruptions import DriftSpec
from zeal_core.errors import ConfigError, ModelError
from zeal_core.history import HistoryStore, load_policy
from zeal_core.history.policy import HistoryPolicy
from zeal_core.history.repair import backup, health, repair
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ACTIVE_FILE, ModelRegistry

CHILD_TIMEOUT_S = 300  # s for one command in a child process (a check imports torch and fits a reference)
CHECK_ARGS = ["--json", "--no-diagnosis", "--detector", "mmd,ks", "--reference-n", "120"]


def cli(args: list[str], *, env: dict[str, str] | None = None,
        code: str | None = None) -> tuple[int, dict, str]:
    """``python -m zeal_core ARGS`` (or ``python -c CODE``) in a child: (exit code, stdout JSON, stderr)."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "zeal_core", *args]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr


def one_line_error(stderr: str) -> str:
    """The last stderr line, after checking it is the one error line and no traceback came before."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def save_random_model(registry: ModelRegistry, dataset: str = "digits") -> str:
    """A seeded, untrained digits ResNet-18 (the checks need a model, not a good one)."""
    from zeal_core.data import load_dataset

    config = ModelConfig(arch="resnet18", num_classes=10, image_size=32)
    torch.manual_seed(0)
    fingerprint = load_dataset("digits").fingerprint if dataset == "digits" else "other"
    card = registry.save(create_model(config), model_config=config, dataset=dataset,
                         dataset_fingerprint=fingerprint, recipe={}, metrics={})
    return card.version


def held_out_pngs(folder: Path, count: int, spec: str | None = None) -> Path:
    """``count`` held-out digits as PNGs in ``folder`` (under ``spec``'s drift when given)."""
    from zeal_core.data import load_dataset
    from zeal_core.embed import part_positions

    images, _ = load_dataset("digits").split("val")
    chosen = images[torch.from_numpy(part_positions(images.shape[0], "sample")[:count])]
    if spec:
        chosen = DriftSpec.parse(spec).apply(chosen, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(chosen):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"img_{index:03d}.png")
    return folder


@pytest.fixture()
def version(isolated_dirs: Path) -> str:
    registry = ModelRegistry()
    version = save_random_model(registry)
    registry.set_active(version)
    return version


def history_path() -> Path:
    return Path(os.environ["ZEAL_STATE_DIR"]) / "history" / "history.sqlite"


# ------------------------------------------------------------------------------- the exit-code contract


def test_an_unexpected_exception_exits_2_with_one_line_never_1() -> None:
    """An exception that is not the lab's own (an I/O error of the disk under the history) used to print
    a traceback and exit 1, which a ``check ... || alert`` script reads as drift."""
    code = ("import sys, zeal_core.history.store as store\n"
            "def broken(self, *args, **kwargs):\n"
            "    raise OSError(5, 'Input/output error\\nsecond line')\n"
            "store.HistoryStore.__init__ = broken\n"
            "from zeal_core.cli import main\n"
            "sys.exit(main(['history', '--json']))\n")
    status, out, err = cli([], code=code)
    assert status == 2
    assert out["ok"] is False and out["error"].startswith("unexpected OSError")
    assert "second line" not in out["error"]  # one line
    assert one_line_error(err).startswith("error: unexpected OSError")


def test_an_unexpected_exception_inside_check_exits_2(version: str, tmp_path: Path) -> None:
    folder = held_out_pngs(tmp_path / "batch", 12)
    code = ("import sys, zeal_core.data.files as files\n"
            "def broken(*args, **kwargs):\n"
            "    raise MemoryError('cannot allocate')\n"
            "files.decode_paths = broken\n"
            "from zeal_core.cli import main\n"
            f"sys.exit(main(['check', {str(folder)!r}, *{CHECK_ARGS!r}]))\n")
    status, out, err = cli([], code=code)
    assert status == 2 and out == {"ok": False, "error": out["error"]}
    assert "MemoryError" in out["error"] and "ZEAL_DEBUG" in out["error"]
    one_line_error(err)


# ------------------------------------------------------------------- a history that cannot be written


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database, it was overwritten" * 100)


def _truncated(path: Path) -> None:
    """A real history with rows, then cut short (a disk that filled up, a copy interrupted)."""
    store = HistoryStore(path)
    for index in range(200):
        store.set_setting(f"key{index}", "x" * 500)
    store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 3)


@pytest.mark.parametrize("damage", [_corrupt, _truncated], ids=["corrupt", "truncated"])
def test_check_with_a_damaged_history_reports_and_exits_by_its_decision(
        version: str, tmp_path: Path, damage) -> None:
    """Before: ``sqlite3.DatabaseError`` traceback, exit 1 (= drift) and nothing on stdout."""
    damage(history_path())
    clean = held_out_pngs(tmp_path / "clean", 40)
    status, out, err = cli(["check", str(clean), *CHECK_ARGS])
    assert status == 0 and out["drift"] is False and out["n"] == 40
    assert out["recorded"] is False and "history repair" in out["record_error"]
    assert "warning: the check was not recorded" in err and "Traceback" not in err


def test_check_with_a_damaged_history_still_says_drift_with_exit_1(version: str, tmp_path: Path) -> None:
    _corrupt(history_path())
    noisy = held_out_pngs(tmp_path / "noisy", 40, "gaussian_noise:5")
    status, out, _ = cli(["check", str(noisy), *CHECK_ARGS])
    assert status == 1 and out["drift"] is True and out["recorded"] is False


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files and folders read-only for this user: file modes, or for root (whom modes do not stop)
    the immutable attribute; skips where neither is possible."""
    if os.geteuid() != 0:
        modes = [(path, path.stat().st_mode) for path in paths]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes:
                path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", *map(str, paths)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot make a file read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)


def test_check_with_a_read_only_history_reports_and_exits_0(version: str, tmp_path: Path) -> None:
    HistoryStore().close()
    clean = held_out_pngs(tmp_path / "clean", 30)
    with read_only(history_path(), history_path().parent):
        status, out, err = cli(["check", str(clean), *CHECK_ARGS])
        assert status == 0 and out["drift"] is False, err
        assert out["recorded"] is False and "read-only" in out["record_error"]
        status, out, err = cli(["history", "--json"])
        assert status == 2 and "read-only" in out["error"]
        one_line_error(err)


def test_check_with_a_history_locked_by_another_writer_reports_and_exits_0(version: str,
                                                                            tmp_path: Path) -> None:
    """Another process holds the write lock for longer than the wait (30 s by default; 1 s here)."""
    HistoryStore().close()
    clean = held_out_pngs(tmp_path / "clean", 30)
    holder = sqlite3.connect(history_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        status, out, err = cli(["check", str(clean), *CHECK_ARGS], env={"ZEAL_HISTORY_BUSY_S": "1"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status == 0 and out["drift"] is False
    assert out["recorded"] is False and "locked by another process" in out["record_error"]
    assert "warning" in err


def test_history_says_damaged_then_repair_and_backup_recover(isolated_dirs: Path) -> None:
    path = history_path()
    store = HistoryStore(path)
    store.set_setting("retrain_policy", {"enabled": True})
    store.add_event("v1", [1, 2], "queued", detail="kept across the repair")
    store.close()
    status, out, _ = cli(["history", "backup", "--json"])
    assert status == 0 and Path(out["backup"]).is_file() and health(out["backup"])["ok"]
    copy = out["backup"]

    _corrupt(path)
    status, out, err = cli(["history", "--json"])
    assert status == 2 and "damaged" in out["error"] and "history repair" in out["error"]
    one_line_error(err)
    status, out, _ = cli(["history", "repair", "--json"])
    assert status == 0 and out["repaired"] is True and Path(out["damaged_copy"]).is_file()
    assert health(path)["ok"]
    status, out, _ = cli(["history", "--json"])
    assert status == 0 and out["count"] == 0  # nothing was readable in the overwritten file

    status, out, _ = cli(["history", "repair", "--from", copy, "--json"])
    assert status == 0 and out["restored_from"] == copy
    assert HistoryStore(path).events()[0]["detail"] == "kept across the repair"


def test_repair_salvages_the_readable_rows_of_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    store = HistoryStore(path)
    for index in range(40):
        store.add_event(f"v{index}", [index], "queued", detail="d" * 300)
    store.set_setting("retrain_policy", {"enabled": False})
    store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    last = len(data) // page - 1
    data[last * page:last * page + page] = b"\xff" * page  # one page of events overwritten
    path.write_bytes(bytes(data))
    assert not health(path)["ok"]
    result = repair(path)
    assert result["repaired"] and 0 < result["salvaged"]["policy_events"] < 40
    assert health(path)["ok"] and len(HistoryStore(path).events()) == result["salvaged"]["policy_events"]
    assert repair(path)["repaired"] is False  # a healthy file is left alone


def test_history_backup_copies_a_live_database(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    store.set_setting("a", 1)
    (tmp_path / "copies").mkdir()
    result = backup(tmp_path / "h.sqlite", tmp_path / "copies")  # a folder: a dated file inside
    assert Path(result["backup"]).parent == tmp_path / "copies" and result["checks"] == 0
    assert HistoryStore(result["backup"]).setting("a") == 1


# --------------------------------------------------------------------------------------------- booleans


@pytest.mark.parametrize("word", [*TRUE_WORDS, *FALSE_WORDS, "YES", "Off", " true "])
def test_boolean_settings_take_the_usual_words(word: str) -> None:
    policy = override(HistoryPolicy(enabled=word.strip().lower() in FALSE_WORDS),
                      parse_pairs([f"enabled={word}"], "--set", "enabled=true"), "history policy")
    assert policy.enabled is (word.strip().lower() in TRUE_WORDS)


@pytest.mark.parametrize("word", ["maybe", "2", "", "null", "[1]", "ja"])
def test_boolean_settings_refuse_anything_else(word: str) -> None:
    with pytest.raises(ConfigError, match="must be true or false"):
        override(HistoryPolicy(), parse_pairs([f"enabled={word}"], "--set", "enabled=true"), "history policy")


def test_history_policy_enabled_no_switches_it_off() -> None:
    """Before: ``--set enabled=no`` switched the auto-retrain policy ON ("no" is a truthy string)."""
    status, out, _ = cli(["history", "policy", "--set", "enabled=yes", "--json"])
    assert status == 0 and out["policy"]["enabled"] is True
    status, out, _ = cli(["history", "policy", "--set", "enabled=no", "--json"])
    assert status == 0 and out["policy"]["enabled"] is False
    status, out, err = cli(["history", "policy", "--set", "enabled=maybe", "--json"])
    assert status == 2 and "must be true or false" in out["error"]
    one_line_error(err)
    assert load_policy(HistoryStore()).enabled is False


# ---------------------------------------------------------------------------------- a damaged active model


def _damage_weights(registry: ModelRegistry, version: str) -> None:
    path = registry.weights_path(version)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_card(registry: ModelRegistry, version: str) -> None:
    registry.card_path(version).write_text("{not json")


@pytest.mark.parametrize("damage", [_damage_weights, _damage_card], ids=["weights", "card"])
def test_a_damaged_active_model_is_never_replaced_by_another(damage) -> None:
    """Before: "active" silently became the newest other version, even of another dataset."""
    registry = ModelRegistry()
    active = save_random_model(registry)
    registry.set_active(active)
    time.sleep(1.1)  # the other version is newer (cards sort by their creation second)
    other = save_random_model(registry, dataset="other")
    damage(registry, active)
    with pytest.raises(ModelError, match=f"active model version {active}") as error:
        registry.resolve("active")
    assert f"models delete {active}" in str(error.value) and other not in str(error.value)
    assert registry.active_problem()[0] == active
    assert [version for version, _ in registry.damaged()] == [active]
    assert registry.resolve("latest") == other


def test_models_list_import_and_delete_with_a_damaged_active(isolated_dirs: Path, tmp_path: Path) -> None:
    registry = ModelRegistry()
    active = save_random_model(registry)
    registry.set_active(active)
    export = tmp_path / "weights.safetensors"
    export.write_bytes(registry.weights_path(active).read_bytes())
    _damage_weights(registry, active)

    status, out, _ = cli(["models", "list", "--json"])
    assert status == 0 and out["active"] is None and out["count"] == 0
    assert out["damaged"][0]["version"] == active and "sha256" in out["damaged"][0]["problem"]
    assert active in out["active_problem"]

    images = tmp_path / "batch"  # real images: a non-image is refused before the model is even loaded
    images.mkdir()
    for index in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * index, dtype=np.uint8)).save(images / f"{index}.png")
    status, out, err = cli(["check", str(images), "--json"])
    assert status == 2 and f"active model version {active}" in out["error"]
    one_line_error(err)

    status, out, _ = cli(["models", "import", "--weights", str(export), "--arch", "resnet18", "--dataset",
                          "digits", "--json"])
    assert status == 0 and out["active"] is False  # before: it took over active.json
    assert json.loads((registry.root / ACTIVE_FILE).read_text())["version"] == active

    status, out, _ = cli(["models", "delete", active, "--json"])
    assert status == 0 and out["deleted"] == active
    assert not (registry.root / ACTIVE_FILE).exists() and registry.damaged() == []
    status, out, _ = cli(["models", "delete", active, "--json"])
    assert status == 2 and "no model version" in out["error"]


def test_models_delete_refuses_the_working_active_version_without_force() -> None:
    registry = ModelRegistry()
    active = save_random_model(registry)
    registry.set_active(active)
    status, out, _ = cli(["models", "delete", active, "--json"])
    assert status == 2 and "--force" in out["error"] and registry.get_active() == active
    status, out, _ = cli(["models", "delete", active, "--force", "--json"])
    assert status == 0 and registry.versions() == []


# -------------------------------------------------------------------------------- orphaned temp files


def _orphan(folder: Path, name: str, age_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.k1ll3d.tmp"
    path.write_bytes(b"half")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_orphaned_temp_files_are_removed_by_the_next_write_in_their_folder(isolated_dirs: Path) -> None:
    """Before: a writer killed mid-write left ``.<name>.<random>.tmp`` files forever (jobs, history
    batches, banks, active.json), since only the same target's next write looked for them."""
    from zeal_core.fileio import atomic_write_text
    from zeal_core.jobs import JobQueue

    jobs = Path(os.environ["ZEAL_STATE_DIR"]) / "jobs"
    stale = _orphan(jobs, "job-that-died.json", age_s=3600)
    fresh = _orphan(jobs, "job-still-writing.json", age_s=5)
    JobQueue().submit("train", {"dataset": "digits"})
    assert not stale.exists() and fresh.exists()  # a live writer's file is never touched

    models = Path(os.environ["ZEAL_MODELS_DIR"])
    stale = _orphan(models, ACTIVE_FILE, age_s=3600)
    atomic_write_text(models / "notes.txt", "x")
    assert not stale.exists()


# ------------------------------------------------------------------------------------------------ inputs


def test_a_folder_whose_name_holds_glob_characters_is_a_folder(version: str, tmp_path: Path) -> None:
    """Before: ``photos [2024]`` was read as a glob pattern (matching ``photos 2``, ``photos 0``...)."""
    from zeal_core.data.files import find_images

    folder = held_out_pngs(tmp_path / "photos [2024]", 30)
    paths, skipped = find_images([str(folder)])
    assert len(paths) == 30 and skipped == []
    status, out, _ = cli(["check", str(folder), *CHECK_ARGS, "--no-record"])
    assert status == 0 and out["n"] == 30
    assert find_images([str(tmp_path / "photos [2024]" / "img_00*.png")])[0]  # patterns still work


def _non_utf8_folder(root: Path) -> Path:
    base = os.fsencode(root / "odd")
    rng = np.random.default_rng(0)
    for class_name in (b"plain", b"caf\xe9"):  # Latin-1 bytes: not UTF-8
        os.makedirs(base + b"/" + class_name, exist_ok=True)
        for index in range(6):
            pixels = (rng.random((16, 16, 3)) * 255).astype("uint8")
            name = base + b"/" + class_name + b"/img\xff" + bytes([48 + index]) + b".png"
            Image.fromarray(pixels).save(os.fsdecode(name))
    return root / "odd"


def test_non_utf8_file_names_do_not_crash_folder_datasets(tmp_path: Path) -> None:
    """Before: ``UnicodeEncodeError: surrogates not allowed`` from ``data info``, ``train`` and the page."""
    folder = _non_utf8_folder(tmp_path)
    status, out, err = cli(["data", "info", "--dataset", f"folder:{folder}", "--json"])
    assert status == 0, err
    assert out["num_images"] == 12 and sorted(out["class_names"]) == ["caf\\xe9", "plain"]
    status, out, err = cli(["train", "--dataset", f"folder:{folder}", "--epochs", "1", "--image-size", "32",
                            "--json"])
    assert status == 0, err
    assert out["dataset"] == f"folder:{folder}"


def test_a_batch_over_the_cap_is_checked_on_a_seeded_subset_and_says_so(version: str,
                                                                         tmp_path: Path) -> None:
    folder = held_out_pngs(tmp_path / "big", 60)
    status, out, _ = cli(["check", str(folder), *CHECK_ARGS, "--max-images", "40"])
    assert status == 0 and out["n"] == 40
    assert out["sampled"] == {"kept": 40, "of": 60, "seed": 0, "source": out["sampled"]["source"]}
    assert "a random 40 of 60 images" in out["summary"]
    assert "a random 40 of 60" in HistoryStore().get(out["check_id"]).source
    status, again, _ = cli(["check", str(folder), *CHECK_ARGS, "--max-images", "40", "--no-record"])
    p_values = [[item["p_value"] for item in result["detectors"]] for result in (out, again)]
    assert status == 0 and p_values[0] == p_values[1]  # the same seeded subset, the same answer


def test_the_default_cap_comes_from_the_settings() -> None:
    from zeal_core.settings import load_settings

    assert load_settings({}).max_check_n == 5000 and load_settings({"ZEAL_DEMO": "1"}).max_check_n == 1000
    assert load_settings({"ZEAL_MAX_CHECK_N": "300"}).max_check_n == 300
    with pytest.raises(ConfigError, match="ZEAL_MAX_CHECK_N"):
        load_settings({"ZEAL_MAX_CHECK_N": "many"})


@pytest.mark.parametrize("name", ["mmd", "mmd-fuse", "mmd-agg"])
def test_kernel_tests_pool_at_most_max_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The N x N matrices stop growing past the cap: the distance matrix is never larger than it."""
    from zeal_core.drift import create_detector, kernels

    shapes = []
    original = kernels.squared_distances

    def spy(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        shapes.append((left.shape[0], right.shape[0]))
        return original(left, right)

    monkeypatch.setattr(kernels, "squared_distances", spy)
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(100, 8)).astype("float32")
    detector = create_detector(name, num_permutations=100, max_rows=120).fit(reference)
    clean = detector.test(rng.normal(size=(900, 8)).astype("float32"))
    shifted = detector.test(rng.normal(size=(900, 8)).astype("float32") + 0.5)
    assert shapes and max(max(shape) for shape in shapes) == 120
    assert clean.details["subsampled"] == {"reference_kept": 60, "reference_rows": 100, "sample_kept": 60,
                                           "sample_rows": 900}
    assert clean.p_value > 0.01 and shifted.p_value < 0.05
    small = detector.test(rng.normal(size=(15, 8)).astype("float32"))
    assert "subsampled" not in small.details  # under the cap nothing changes


# ----------------------------------------------------------------------------------------- weight types


def _checkpoint(tmp_path: Path, dtype: torch.dtype | None) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = create_model(ModelConfig(arch="resnet18", num_classes=10, image_size=32)).state_dict()
    if dtype is not None:
        state = {key: (tensor * 100).to(dtype) if tensor.is_floating_point() else tensor
                 for key, tensor in state.items()}
    path = tmp_path / f"weights-{dtype}.safetensors"
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
def test_integer_boolean_and_complex_weights_are_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    """Before: registered without a word, scoring 8-10 % (rounded or cast weights)."""
    from zeal_core.importing import import_checkpoint

    with pytest.raises(ModelError, match="integer, boolean or complex") as error:
        import_checkpoint(_checkpoint(tmp_path, dtype), arch="resnet18", dataset="digits", device="cpu")
    assert str(dtype).removeprefix("torch.") in str(error.value)
    assert ModelRegistry().versions() == []


def test_half_precision_weights_are_converted_with_a_note(tmp_path: Path) -> None:
    from zeal_core.importing import import_checkpoint

    events = []
    card = import_checkpoint(_checkpoint(tmp_path, torch.float16), arch="resnet18", dataset="digits",
                             device="cpu", progress=events.append)
    assert "float16 -> float32" in card.notes
    assert any("warning" in event.message and "float16" in event.message for event in events)


def test_the_root_of_the_disk_is_never_an_image_folder() -> None:
    """Before: ``folder:/`` walked and decoded the whole disk (the Data page never came back)."""
    from zeal_core.data import load_dataset
    from zeal_core.errors import DataError

    with pytest.raises(DataError, match="root of the disk"):
        load_dataset("folder:/")


def test_demo_permissions_are_read_strictly() -> None:
    from zeal_core.settings import DEMO_ACTIONS, load_settings

    demo = load_settings({"ZEAL_DEMO": "1"})
    assert demo.allows("train-default") and not any(demo.allows(name) for name in DEMO_ACTIONS
                                                    if name != "train-default")
    assert all(load_settings({}).allows(name) for name in DEMO_ACTIONS)  # a local install: everything
    chosen = load_settings({"ZEAL_DEMO": "1", "ZEAL_DEMO_ALLOW": "delete, Policy"})
    assert chosen.allows("delete") and chosen.allows("policy") and not chosen.allows("train-default")
    everything = load_settings({"ZEAL_DEMO": "1", "ZEAL_DEMO_ALLOW": "all"})
    assert all(everything.allows(name) for name in DEMO_ACTIONS)
    assert not load_settings({"ZEAL_DEMO": "1", "ZEAL_DEMO_ALLOW": "none"}).allows("train-default")
    with pytest.raises(ConfigError, match="ZEAL_DEMO_ALLOW"):
        load_settings({"ZEAL_DEMO": "1", "ZEAL_DEMO_ALLOW": "delete,destroy"})
    with pytest.raises(ConfigError, match="unknown action"):
        demo.allows("nonsense")
