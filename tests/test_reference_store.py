"""The fitted reference kept on disk: loaded bit-identical, refitted when anything it depends on changes,
refused when damaged or edited, fitted once by two processes racing, and stored without pickle."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.test_estimate import fitted as fitted_estimator
from tests.test_estimate import synthetic
from zeal_core.data import load_dataset
from zeal_core.diagnose import create_diagnoser
from zeal_core.estimate import list_estimators
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.reference import fit_reference, forget_references
from zeal_core.reference.persist import ReferenceStore
from zeal_core.reference.state import BundleRefused, StateError, decode, encode, read_bundle
from zeal_core.service import CheckService, get_profile

PROFILE = get_profile("standard", {"bank_n": 20, "permutations": 200})

# A check of real images in a fresh process: prints its results and which heavy modules it imported.
CHECKER = """
import json, sys
import numpy as np, torch
from tests.test_reference_store import diagnosis_text
from zeal_core.service import CheckService, get_profile
profile = get_profile("standard", {"bank_n": 20, "permutations": 200})
service = CheckService(profile)
reference = service.reference(sys.argv[1])
images = torch.from_numpy(np.load(sys.argv[2]))
report = service.check(images, reference=reference, projection="pca")
print(json.dumps({"p": [r.p_value for r in report.results],
                  "estimates": [e.accuracy for e in report.estimates],
                  "diagnosis": diagnosis_text(report.diagnosis),
                  "ready": reference.label_free.ready,
                  "heavy": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in
                                   ("sklearn", "umap", "frouros", "streamlit", "pandas")})}))
"""


@pytest.fixture()
def version() -> str:
    forget_references()
    config = ModelConfig(arch="test_resnet", num_classes=10, image_size=32)
    torch.manual_seed(0)
    card = ModelRegistry().save(create_model(config), model_config=config, dataset="digits",
                                dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    return card.version


def diagnosis_text(diagnosis) -> str | None:
    """A diagnosis as JSON text without its wall-clock time (which differs between calls)."""
    if diagnosis is None:
        return None
    values = json.loads(json.dumps(diagnosis.to_dict(), default=float))
    values["details"].pop("runtime_s", None)
    return json.dumps(values, sort_keys=True)


def _summary(report) -> str:
    """Everything a check computed, as JSON text (NaN compares equal as text)."""
    return json.dumps({
        "p": [result.p_value for result in report.results],
        "estimates": [(estimate.accuracy, estimate.low, estimate.high) for estimate in report.estimates],
        "diagnosis": diagnosis_text(report.diagnosis),
        "scores": None if report.drift_scores is None else report.drift_scores.tolist(),
        "coords": None if report.coords is None else report.coords.tolist()}, sort_keys=True, default=float)


def _noisy_images(path: Path) -> torch.Tensor:
    """60 held-out digits under noise, also saved to ``path`` (.npy) for a checking subprocess."""
    from zeal_core.corruptions import DriftSpec
    from zeal_core.embed import part_positions

    images, _ = load_dataset("digits").split("val")
    batch = images[torch.from_numpy(part_positions(images.shape[0], "sample")[:60])]
    noisy = DriftSpec.parse("gaussian_noise:4").apply(batch, seed=3)
    np.save(path, noisy.numpy())
    return noisy


def _kinds(store: ReferenceStore) -> list[str]:
    return sorted(path.name.split("-")[0] for path in store.files())


def _reference(version: str, **overrides):
    profile = PROFILE.with_overrides(overrides)
    return CheckService(profile).reference(version)


# ----------------------------------------------------------------------------------------- round trips


def test_a_new_process_loads_the_kept_reference_and_gets_bit_identical_results(version: str,
                                                                             tmp_path: Path) -> None:
    reference = _reference(version)
    reference.warm_label_free()  # the diagnosis's warm-up, once for the model
    images = _noisy_images(tmp_path / "batch.npy")
    report = reference.check(images, projection="pca")
    fresh = _summary(report)
    store = ReferenceStore.for_version(ModelRegistry().root, version)
    assert _kinds(store) == ["bank", "profile", "split", "warm"]
    stamps = {path: path.stat().st_mtime_ns for path in store.files()}

    done = subprocess.run([sys.executable, "-c", CHECKER, version, str(tmp_path / "batch.npy")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout)
    assert loaded["ready"] and loaded["heavy"] == []  # no warm-up, no sklearn: nothing was refitted
    assert loaded["p"] == [result.p_value for result in report.results]
    assert loaded["estimates"] == [estimate.accuracy for estimate in report.estimates]
    assert loaded["diagnosis"] == diagnosis_text(report.diagnosis) is not None
    assert {path: path.stat().st_mtime_ns for path in store.files()} == stamps  # nothing rewritten

    forget_references()  # and in this process, from disk: every part of the report is the same
    again = _reference(version)
    assert again is not reference and again.label_free.ready
    assert _summary(again.check(images, projection="pca")) == fresh


def test_the_warm_up_is_once_per_model_for_every_reference_size(version: str) -> None:
    _reference(version).warm_label_free()
    store = ReferenceStore.for_version(ModelRegistry().root, version)
    smaller = _reference(version, reference_n=100)
    assert smaller.label_free.ready and smaller.reference_n == 100  # loaded, not fitted again
    assert _kinds(store) == ["bank", "profile", "profile", "split", "warm"]


def test_changed_weights_dataset_or_profile_refit(version: str, caplog: pytest.LogCaptureFixture) -> None:
    reference = _reference(version)
    store = ReferenceStore.for_version(ModelRegistry().root, version)
    files = set(store.files())
    # Another profile: its own profile bundle; the split is reused.
    other = _reference(version, seed=1)
    assert len(set(store.files()) - files) == 1 and other.reference_n == reference.reference_n
    # Another dataset (one pixel changed): another split bundle.
    digits = load_dataset("digits")
    images = digits.images.clone()
    images[int(np.flatnonzero(digits.is_val.numpy())[0]), 0, 0, 0] ^= 1
    from zeal_core.data.dataset import content_fingerprint

    changed = dataclasses.replace(digits, images=images, fingerprint=content_fingerprint(
        images, digits.labels, digits.is_val, digits.class_names))
    before = set(store.files())
    fit_reference(version, changed, PROFILE.reference_config(), device="cpu")
    assert {path.name.split("-")[0] for path in set(store.files()) - before} == {"split", "profile"}
    # Other weights: their own files; a bundle copied over from the first model is refused as foreign.
    registry = ModelRegistry()
    torch.manual_seed(1)
    config = ModelConfig(arch="test_resnet", num_classes=10, image_size=32)
    second = registry.save(create_model(config), model_config=config, dataset="digits",
                           dataset_fingerprint=digits.fingerprint, recipe={}, metrics={}).version
    _reference(second)
    target = ReferenceStore.for_version(registry.root, second)
    assert _kinds(target) == ["profile", "split"]
    mine = next(path for path in target.files() if path.name.startswith("split-"))
    mine.write_bytes(next(path for path in store.files() if path.name.startswith("split-")).read_bytes())
    forget_references()
    with caplog.at_level(logging.WARNING):
        _reference(second)
    assert any("fitted for another model" in message for message in caplog.messages)
    assert read_bundle(mine, "split", _stored_key(mine))  # refitted: its own again
    registry.delete(second)  # deleting a version deletes what was fitted for it
    assert not target.folder.exists() and store.folder.exists()


def test_damaged_edited_or_foreign_bundles_are_refused_and_refitted(version: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    reference = _reference(version)
    expected = _summary(reference.check("contrast:3", n=50, seed=1, parts=("detectors", "estimates")))
    store = ReferenceStore.for_version(ModelRegistry().root, version)
    split = next(path for path in store.files() if path.name.startswith("split-"))
    profile = next(path for path in store.files() if path.name.startswith("profile-"))

    profile.write_bytes(profile.read_bytes()[: profile.stat().st_size // 2])  # truncated
    with np.load(split, allow_pickle=False) as stored:  # one number edited, the digest left as it was
        arrays = {name: np.array(stored[name]) for name in stored.files}
    arrays["features"][0, 0] += 1.0
    np.savez(split, **arrays)
    for case in (profile, split):
        with pytest.raises(BundleRefused):
            read_bundle(case, case.name.split("-")[0], {})
    forget_references()
    with caplog.at_level(logging.WARNING):
        again = _reference(version)
    refusals = [message for message in caplog.messages if "refused the fitted reference file" in message]
    assert len(refusals) == 2 and "digest" in " ".join(refusals) and "unreadable" in " ".join(refusals)
    assert _summary(again.check("contrast:3", n=50, seed=1, parts=("detectors", "estimates"))) == expected
    for path in (profile, split):  # refitted and rewritten, whole
        assert read_bundle(path, path.name.split("-")[0], _stored_key(path))

    # A pickle in disguise (an object array) is never unpickled.
    np.savez(store.folder / "evil.npz", __meta__=np.frombuffer(b"{}", np.uint8),
             a0=np.array([object()], dtype=object))
    with pytest.raises(BundleRefused, match="unreadable"):
        read_bundle(store.folder / "evil.npz", "profile", {})


def _stored_key(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as stored:
        return json.loads(stored["__meta__"].tobytes())["key"]


def test_two_processes_warming_one_model_fit_it_once(version: str, tmp_path: Path) -> None:
    script = CHECKER.replace('reference = service.reference(sys.argv[1])', (
        'events = []\nservice.progress = lambda e: events.append(e.message)\n'
        'reference = service.reference(sys.argv[1])\nreference.warm_label_free()\n'
        'print("LOADED" if any("(loaded)" in m for m in events) else "FITTED")'))
    _noisy_images(tmp_path / "batch.npy")
    racers = [subprocess.Popen([sys.executable, "-c", script, version, str(tmp_path / "batch.npy")],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outputs = [racer.communicate(timeout=900) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    first_lines = sorted(out.splitlines()[0] for out, _ in outputs)
    assert first_lines == ["FITTED", "LOADED"]  # one fitted; the other waited on the lock, then loaded
    results = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert results[0]["p"] == results[1]["p"] and results[0]["diagnosis"] == results[1]["diagnosis"]
    store = ReferenceStore.for_version(ModelRegistry().root, version)
    assert _kinds(store) == ["bank", "profile", "split", "warm"]  # one copy of each, all valid
    for path in store.files():
        if not path.name.startswith("bank-"):
            assert read_bundle(path, path.name.split("-")[0], _stored_key(path))
    assert not list(store.folder.glob(".*.tmp"))


# ------------------------------------------------------------------------------- the generic encoder


@pytest.mark.parametrize("name", list_estimators())
def test_every_registered_estimator_round_trips_without_pickle(name: str) -> None:
    """Fails loudly (naming the attribute) the day an estimator keeps something that cannot be stored."""
    estimator = fitted_estimator(name)
    tree, arrays = encode(estimator, f"estimator[{name!r}]")
    json.dumps(tree)  # plain JSON
    assert all(array.dtype.kind != "O" for array in arrays.values())
    restored = decode(json.loads(json.dumps(tree)), arrays)
    assert type(restored) is type(estimator)
    sample = synthetic(120, 7, collapse=0.3)
    first, second = estimator.estimate(sample), restored.estimate(sample)
    assert (first.accuracy, first.low, first.high) == (second.accuracy, second.low, second.high)


def test_the_diagnoser_round_trips_without_pickle() -> None:
    from tests.test_diagnose import FAST, World

    world = World()  # a small model, its reference, a bank of 18 shifts and held-out images
    diagnoser = create_diagnoser("signature", **FAST).fit(world.reference, world.bank)
    tree, arrays = encode(diagnoser, "diagnoser")
    restored = decode(json.loads(json.dumps(tree)), arrays)
    sample = world.sample.subset(np.arange(80))
    # The same numbers to the last bit: arrays keep their memory layout, so BLAS rounds the same way.
    assert diagnosis_text(restored.diagnose(sample)) == diagnosis_text(diagnoser.diagnose(sample))


def test_what_cannot_be_stored_fails_loudly_and_nothing_outside_zeal_core_is_built() -> None:
    from sklearn.linear_model import LogisticRegression

    estimator = fitted_estimator("atc-mc")
    estimator.helper = LogisticRegression()
    with pytest.raises(StateError, match=r"estimator\.helper: sklearn"):
        encode(estimator, "estimator")
    estimator.helper = {"score": lambda x: x}
    with pytest.raises(StateError, match=r"estimator\.helper\['score'\]"):
        encode(estimator, "estimator")
    estimator.helper = torch.nn.Linear(2, 2)
    with pytest.raises(StateError, match="torch"):
        encode(estimator, "estimator")
    for name in ("os:system", "builtins:eval", "subprocess:Popen", "zeal_core.paths:Path"):
        with pytest.raises(StateError):
            decode({"$object": name, "state": {}}, {})
    values = {"nan": float("nan"), "tuple": (1, "a", None), "set": {3, 1}, 2: np.float32(0.5),
              "array": np.arange(3), "tensor": torch.ones(2)}
    back = decode(*encode(values))
    assert np.isnan(back["nan"]) and back["tuple"] == (1, "a", None) and back["set"] == {1, 3}
    assert back[2] == np.float32(0.5) and back[2].dtype == np.float32 and back["array"].tolist() == [0, 1, 2]
    assert torch.equal(back["tensor"], torch.ones(2))
