"""Cached computations behind the Drift Lab and "Your own images" pages (thin wrappers over zeal_core).

Shared read-only objects (fitted detectors, fitted projections) live in ``st.cache_resource``; per-view
results (embeddings, test results, scatter frames, curves) in ``st.cache_data``. Every key holds the model
version, the dataset name (its fingerprint is fixed per name and folder), the spec text, n and seed, plus the
folders in use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from pages._ui import device, folders_key, load_dataset_cached

ALPHA = 0.05  # significance level of every detector in the lab
# Per-detector options for the interactive lab: 500 permutations give p-value steps of 0.002, plenty for a
# decision at alpha = 0.05, at half the cost of the default 1000 (slider latency).
DETECTOR_OPTIONS: dict[str, dict[str, Any]] = {"mmd": {"num_permutations": 500}}
SEVERITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)  # x axis of the severity curves
PAIRS = 6  # clean/drifted image pairs shown


def sample_sizes(dataset: str) -> list[int]:
    """Sample sizes offered for ``dataset`` (reference and sample are disjoint halves of its val split)."""
    from zeal_core.embed import part_positions
    from zeal_core.settings import get_settings

    half = len(part_positions(int(load_dataset_cached(dataset).is_val.sum()), "sample"))
    largest = min(half, get_settings().max_n)  # the demo mode caps samples for a small shared host
    sizes = [size for size in (50, 100, 200, 300, 500, 1000) if size <= largest]
    return sizes or [largest]


@st.cache_data(show_spinner=False, max_entries=64)
def embeddings(version: str, dataset: str, spec_text: str, n: int, seed: int, part: str, folders: str) -> Any:
    """Features, softmax, predictions and labels of a seeded validation sample under ``spec_text``.

    ``part`` is "reference" or "sample": two disjoint halves of the validation split, so that a clean
    sample tested against the reference is a fair no-drift case.
    """
    from zeal_core.embed import embed_sample

    return embed_sample(version, load_dataset_cached(dataset), spec_text, n, seed=seed, split="val",
                        device=str(device()), part=part)


def reference(version: str, dataset: str, n: int, seed: int) -> Any:
    """The clean reference sample the detectors are fitted on."""
    return embeddings(version, dataset, "clean", n, seed, "reference", folders_key())


def sample(version: str, dataset: str, spec_text: str, n: int, seed: int) -> Any:
    """The (possibly drifted) sample tested against the reference."""
    return embeddings(version, dataset, spec_text, n, seed, "sample", folders_key())


@st.cache_resource(show_spinner="Fitting the detectors…", max_entries=8)
def fitted_detectors(version: str, dataset: str, n: int, seed: int, folders: str) -> dict[str, Any]:
    """Every registered detector fitted on the clean reference (shared read-only: ``test`` keeps it)."""
    from zeal_core.drift import create_detector, list_detectors
    from zeal_core.drift.runner import detector_input

    ref = reference(version, dataset, n, seed)
    detectors = {}
    for name in list_detectors():
        detector = create_detector(name, alpha=ALPHA, **DETECTOR_OPTIONS.get(name, {}))
        detectors[name] = detector.fit(detector_input(ref, detector.input_kind, "reference"))
    return detectors


def test_all(version: str, dataset: str, n: int, seed: int, tested: Any) -> list[Any]:
    """``DriftResult`` of every fitted detector on the ``tested`` embeddings."""
    from zeal_core.drift.runner import detector_input

    detectors = fitted_detectors(version, dataset, n, seed, folders_key())
    return [detector.test(detector_input(tested, detector.input_kind, "sample"))
            for detector in detectors.values()]


def result_rows(results: list[Any]) -> list[dict[str, Any]]:
    """Detector results as table rows."""
    return [{"detector": r.detector, "statistic": r.statistic, "p-value": r.p_value,
             "decision": "drift" if r.is_drift else "no drift", "effect size": r.effect_size,
             "runtime (ms)": r.runtime_s * 1000.0} for r in results]


def detector_table(rows: list[dict[str, Any]]) -> Any:
    """Detector rows formatted for ``st.table`` (plain HTML, readable by people and by the browser test)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["detector", "statistic", "p-value", "decision", "effect size",
                                        "runtime (ms)"])
    for column, form in (("statistic", "{:.3g}"), ("effect size", "{:.3g}"), ("runtime (ms)", "{:.0f}")):
        frame[column] = [form.format(value) for value in frame[column]]
    frame["p-value"] = [f"{value:.3f}" if value >= 0.001 else f"{value:.0e}" for value in frame["p-value"]]
    return frame.set_index("detector")


def accuracy_of(embedded: Any) -> float:
    """Share of the embedded images the model classifies correctly."""
    return float(np.mean(np.asarray(embedded.preds) == np.asarray(embedded.labels)))


@st.cache_resource(show_spinner="Fitting the projection…", max_entries=8)
def fitted_projection(version: str, dataset: str, n: int, seed: int, method: str, folders: str) -> Any:
    """A UMAP or PCA projector fitted on the reference features (shared read-only)."""
    from zeal_core.projection import fit_projection

    return fit_projection(reference(version, dataset, n, seed).features, method=method)


def warm_projection() -> None:
    """Start UMAP's one-off compilation in the background; PCA is shown until it is ready."""
    from zeal_core.projection import warm_umap

    warm_umap(background=True)


def projection_method() -> str:
    """"umap" once it is warm, else "pca"."""
    from zeal_core.projection import umap_ready

    return "umap" if umap_ready() else "pca"


@st.cache_data(show_spinner="Testing the drifted sample…", max_entries=128)
def _lab_results(version: str, dataset: str, spec_text: str, n: int, seed: int, method: str,
                 folders: str) -> dict[str, Any]:
    import pandas as pd

    from zeal_core.corruptions import DriftSpec

    ref = reference(version, dataset, n, seed)
    drifted = sample(version, dataset, spec_text, n, seed)
    projector = fitted_projection(version, dataset, n, seed, method, folders)
    ref_xy, sample_xy = projector.transform(ref.features), projector.transform(drifted.features)
    class_names = load_dataset_cached(dataset).class_names
    frames = []
    affected = np.asarray(drifted.affected if drifted.affected is not None else np.zeros(len(drifted), bool))
    for domain, emb, xy in (("reference", ref, ref_xy), ("sample", drifted, sample_xy)):
        frames.append(pd.DataFrame({
            "x": xy[:, 0], "y": xy[:, 1],
            "label": [class_names[i] for i in np.asarray(emb.labels)],
            "prediction": [class_names[i] for i in np.asarray(emb.preds)],
            # Sample points are "corrupted" or "sample, clean" (fraction < 1 leaves some untouched).
            "domain": domain if domain == "reference" else np.where(affected, "corrupted", "sample, clean"),
            "index": np.asarray(emb.indices)}))
    return {
        "detectors": result_rows(test_all(version, dataset, n, seed, drifted)),
        # The same images without the drift, so the two accuracies differ only by the corruption.
        "clean_accuracy": accuracy_of(sample(version, dataset, "clean", n, seed)),
        "drifted_accuracy": accuracy_of(drifted),
        "scatter": pd.concat(frames, ignore_index=True),
        "projection": method,
        "alpha": ALPHA,
        "fraction": DriftSpec.parse(spec_text).fraction,
    }


def lab_results(version: str, dataset: str, spec_text: str, n: int, seed: int) -> dict[str, Any]:
    """Everything the Drift Lab shows for one view: detector rows, accuracies, scatter frame."""
    return _lab_results(version, dataset, spec_text, n, seed, projection_method(), folders_key())


@st.cache_data(show_spinner=False, max_entries=64)
def _severity_curves(version: str, dataset: str, corruption: str, fraction: float, n: int, seed: int,
                     folders: str) -> dict[str, Any]:
    p_values: dict[str, list[float]] = {}
    accuracy = []
    for severity in SEVERITIES:
        spec_text = f"{corruption}:{severity:g}@{fraction:g}" if severity > 0 else "clean"
        drifted = sample(version, dataset, spec_text, n, seed)
        for result in test_all(version, dataset, n, seed, drifted):
            p_values.setdefault(result.detector, []).append(result.p_value)
        accuracy.append(accuracy_of(drifted))
    return {"corruption": corruption, "fraction": fraction, "severities": list(SEVERITIES),
            "p_values": p_values, "accuracy": accuracy}


def severity_curves(version: str, dataset: str, corruption: str, fraction: float, n: int,
                    seed: int) -> dict[str, Any]:
    """p-value per detector and accuracy for ``corruption`` at severities 0..5 (cached)."""
    return _severity_curves(version, dataset, corruption, float(fraction), n, seed, folders_key())


def _hwc(images: Any) -> list[np.ndarray]:
    return [image.permute(1, 2, 0).cpu().numpy() for image in images]


@st.cache_data(show_spinner=False, max_entries=64)
def _image_pairs(dataset: str, spec_text: str, seed: int, folders: str) -> dict[str, Any]:
    from zeal_core.corruptions import DriftSpec

    data = load_dataset_cached(dataset)
    images, labels = data.split("val")
    generator = np.random.default_rng(seed)
    chosen = np.sort(generator.choice(images.shape[0], size=min(PAIRS, images.shape[0]), replace=False))
    clean = images[chosen]
    spec = DriftSpec.parse(spec_text)
    if spec.is_clean:
        return {"clean": _hwc(clean), "drifted": [], "captions": []}
    full = DriftSpec(steps=spec.steps, fraction=1.0)  # every shown image corrupted
    drifted = full.apply(clean, seed=seed)
    return {"clean": _hwc(clean), "drifted": _hwc(drifted),
            "captions": [data.class_names[int(labels[i])] for i in chosen]}


def image_pairs(dataset: str, spec_text: str, seed: int) -> dict[str, Any]:
    """A few validation images, clean and fully corrupted with the spec's steps (HWC uint8 arrays)."""
    return _image_pairs(dataset, spec_text, seed, folders_key())


def thumbnail(version: str, dataset: str, spec_text: str, seed: int, domain: str, index: int,
              n: int) -> dict[str, Any]:
    """The image behind one scatter point (``index`` into the validation split), as the model saw it."""
    import torch

    from zeal_core.corruptions import DriftSpec

    data = load_dataset_cached(dataset)
    images, labels = data.split("val")
    in_sample = domain != "reference"
    emb = sample(version, dataset, spec_text, n, seed) if in_sample else reference(version, dataset, n, seed)
    positions = np.asarray(emb.indices)
    row = int(np.flatnonzero(positions == index)[0])
    spec = DriftSpec.parse(spec_text)
    if in_sample and not spec.is_clean:
        # The same call embed_sample makes, so the pixels match what the model saw.
        image = spec.apply(images[torch.from_numpy(positions)], seed=seed)[row:row + 1]
    else:
        image = images[index:index + 1]
    return {"image": _hwc(image)[0], "label": data.class_names[int(labels[index])],
            "prediction": data.class_names[int(np.asarray(emb.preds)[row])]}
