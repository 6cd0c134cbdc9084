"""The pipeline's files: JSON metrics, CSV plots, the PNG plots and the Markdown report.

Every file is written atomically (``zeal_core.fileio``) and JSON goes through ``zeal_core.jsonable`` (numpy
and torch values become plain numbers). ``write_report`` reads only the files the earlier stages wrote, so
it can be re-run without a model or data.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zeal_core.fileio import atomic_write_text
from zeal_core.jsonable import json_default
from zeal_core.pipeline.params import PipelineParams
from zeal_core.pipeline.paths import StagePaths
from zeal_core.robustness import MCE_DEFINITION

if TYPE_CHECKING:  # the report stage itself reads files only: no need to import the drift check
    from zeal_core.reference.grid import DetectorTable
    from zeal_core.robustness import RobustnessTable

__all__ = ["machine_description", "write_csv", "write_detector_table", "write_json", "write_plots",
           "write_report", "write_robustness_table"]

ROBUSTNESS_COLUMNS = ("corruption", "severity", "accuracy", "error")
DRIFT_COLUMNS = ("detector", "drift", "corruption", "severity", "detection_rate", "median_p_value",
                 "mean_runtime_s", "trials")


# ---------------------------------------------------------------------------------------------------------
# JSON and CSV.


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON (numpy/torch values as numbers), atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False, default=json_default) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A CSV file with one header line, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_robustness_table(paths: StagePaths, version: str, table: RobustnessTable) -> dict[str, Any]:
    """``robustness.csv`` (one row per cell) and ``robustness.json`` (the metrics); returns the metrics."""
    metrics = {"version": version, **table.metrics()}
    write_csv(paths.robustness_csv, ROBUSTNESS_COLUMNS,
              [[name, f"{severity:g}", f"{accuracy:.4f}", f"{1 - accuracy:.4f}"]
               for name, severity, accuracy in table.rows])
    write_json(paths.robustness_json, metrics)
    return metrics


def write_detector_table(paths: StagePaths, version: str, table: DetectorTable) -> dict[str, Any]:
    """``drift.csv`` (one row per detector and drift) and ``drift.json`` (metrics); returns the metrics."""
    metrics = {"version": version, **table.metrics()}
    write_csv(paths.drift_csv, DRIFT_COLUMNS,
              [[row.detector, row.drift, row.corruption, f"{row.severity:g}", f"{row.detection_rate:.4f}",
                f"{row.median_p_value:.4g}", f"{row.mean_runtime_s:.4g}", row.trials] for row in table.rows])
    write_json(paths.drift_json, metrics)
    return metrics


def machine_description(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a result was computed: OS, CPU count, torch threads and device, library versions."""
    from zeal_core.device import describe_device, resolve_device

    return {
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": describe_device(resolve_device(device)),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------------------------
# Plots.


def write_plots(robustness_rows: Sequence[dict[str, Any]], drift_rows: Sequence[dict[str, Any]],
                clean_accuracy: float, folder: Path) -> list[Path]:
    """PNG plots: accuracy vs severity per corruption, and detection rate per detector and drift.

    Args:
        robustness_rows: Rows of ``robustness.csv`` (corruption, severity, accuracy).
        drift_rows: Rows of ``drift.csv`` (detector, corruption, severity, detection_rate).
        clean_accuracy: Drawn as a dashed line on the first plot.
        folder: Where the PNGs go.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests

    written = [_plot_accuracy(robustness_rows, clean_accuracy, folder / "accuracy_vs_severity.png")]
    heatmap = _plot_detection(drift_rows, folder / "detection_rate.png")
    return written + ([heatmap] if heatmap is not None else [])


def _plot_accuracy(rows: Sequence[dict[str, Any]], clean_accuracy: float, path: Path) -> Path:
    """Accuracy against severity, one panel per drift-kind group (ImageNet-C, geometric, capture), each
    with its own legend beside it and the clean accuracy as a dashed line."""
    import matplotlib.pyplot as plt

    from zeal_core.corruptions import drift_kind_groups

    names = list(dict.fromkeys(row["corruption"] for row in rows))
    groups = {group: [name for name in members if name in names]
              for group, members in drift_kind_groups().items()}
    groups = {group: members for group, members in groups.items() if members} or {"drift": names}
    figure, panels = plt.subplots(len(groups), 1, figsize=(9, 3.2 * len(groups)), dpi=100, squeeze=False)
    colors = plt.get_cmap("tab20")
    for axes, (group, members) in zip(panels[:, 0], groups.items(), strict=True):
        for index, name in enumerate(members):
            points = sorted((float(r["severity"]), float(r["accuracy"]))
                            for r in rows if r["corruption"] == name)
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
                      color=colors(index % 20), linestyle="-" if index < 10 else "--")
        axes.axhline(clean_accuracy, color="black", linestyle="--", label="clean")
        axes.set(ylabel="top-1 accuracy", ylim=(0, 1.02), title=f"Accuracy vs severity: {group}")
        axes.legend(fontsize=7, ncol=1 if len(members) < 12 else 2, loc="center left",
                    bbox_to_anchor=(1.01, 0.5))
    panels[-1, 0].set_xlabel("severity")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _plot_detection(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """The detection-rate heat map (detectors x drifts), or None when there are no rows."""
    import matplotlib.pyplot as plt

    detectors = list(dict.fromkeys(row["detector"] for row in rows))
    drifts = list(dict.fromkeys(row["drift"] for row in rows))
    if not detectors or not drifts:
        return None
    figure, axes = plt.subplots(figsize=(max(6, 0.7 * len(drifts) + 2), 0.45 * len(detectors) + 1.8), dpi=100)
    rate = {(r["detector"], r["drift"]): float(r["detection_rate"]) for r in rows}
    grid = np.array([[rate.get((d, s), math.nan) for s in drifts] for d in detectors])
    image = axes.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(drifts)), drifts, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(detectors)), detectors, fontsize=8)
    for (i, j), value in np.ndenumerate(grid):
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axes, label="detection rate (clean: false positives)")
    axes.set_title("Detection rate per detector and drift")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------------------------
# The Markdown report.


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _setup_lines(params: PipelineParams, data: dict[str, Any], train: dict[str, Any],
                 robustness: dict[str, Any], drift: dict[str, Any]) -> list[str]:
    machine = train.get("machine", {})
    recipe = train.get("recipe", {})
    return [
        "## Setup",
        "",
        f"- Machine: {params.machine or 'not named (set report.machine in params.yaml)'}; detected: "
        f"{machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs visible, "
        f"device {machine.get('device', '?')}, torch {machine.get('torch', '?')}.",
        f"- Data: `{data['dataset']}`, {data['num_train']:,} train / {data['num_val']:,} val images, "
        f"{data['num_classes']} classes, stored at {data['image_size']} px, fingerprint "
        f"`{data['fingerprint'][:12]}`.",
        f"- Model: `{train['version']}` ({recipe.get('arch', '?')}, {recipe.get('epochs', '?')} epochs at "
        f"{recipe.get('image_size', '?')} px, batch {recipe.get('batch_size', '?')}, "
        f"{recipe.get('optimizer', '?')} lr {recipe.get('lr', '?')}), trained in "
        f"{train.get('seconds', float('nan')):.0f} s.",
        f"- Robustness table: {robustness['n']} validation images per cell; corruptions applied at the "
        f"model's input size: {params.evaluate.resize_first}; took {robustness['seconds']:.0f} s.",
        f"- Detector table: reference {drift['reference_size']} images, samples of {drift['sample_size']}, "
        f"{drift['trials']} trials per drift, alpha {drift['alpha']}; took {drift['seconds']:.0f} s.",
        "",
    ]


def _robustness_lines(robustness: dict[str, Any], rows: Sequence[dict[str, str]]) -> list[str]:
    severities = list(dict.fromkeys(row["severity"] for row in rows))
    corruptions = list(dict.fromkeys(row["corruption"] for row in rows))
    cell = {(row["corruption"], row["severity"]): float(row["accuracy"]) for row in rows}
    table = [[name, *(_pct(cell[(name, s)]) for s in severities),
              _pct(robustness["corruption_accuracy"][name])] for name in corruptions]
    return [
        "## Robustness",
        "",
        f"- Clean accuracy: **{_pct(robustness['clean_accuracy'])}**",
        f"- Mean corruption error (mCE): **{_pct(robustness['mean_corruption_error'])}**; relative mCE "
        f"(added error): {_pct(robustness['relative_mce'])}",
        f"- Definition: {MCE_DEFINITION}",
        "",
        "Top-1 accuracy per corruption and severity:",
        "",
        _table(["corruption", *(f"s{float(s):g}" for s in severities), "mean"], table),
        "",
        "![accuracy vs severity](accuracy_vs_severity.png)",
        "",
    ]


def _drift_lines(drift: dict[str, Any], rows: Sequence[dict[str, str]]) -> list[str]:
    detectors = list(dict.fromkeys(row["detector"] for row in rows))
    drifts = list(dict.fromkeys(row["drift"] for row in rows))
    rate = {(row["detector"], row["drift"]): float(row["detection_rate"]) for row in rows}
    table = [[name, *(f"{rate[(name, d)]:.2f}" for d in drifts),
              f"{drift['detectors'][name]['mean_runtime_s'] * 1000:.1f}"] for name in detectors]
    return [
        "## Drift detectors",
        "",
        "Share of trials flagged as drift (the `clean` column is the false-positive rate; it should be "
        f"close to alpha = {drift['alpha']}):",
        "",
        _table(["detector", *(f"`{d}`" for d in drifts), "ms/test"], table),
        "",
        "![detection rate](detection_rate.png)",
        "",
    ]


def _reproduce_lines(dataset: str) -> list[str]:
    mirror = [] if dataset == "digits" else [
        "# offline: serve a copy of the archive and name it (the environment wins over params.yaml)",
        "export ZEAL_IMAGENETTE_URL=http://127.0.0.1:8765/imagenette2-160.tgz",
        "export ZEAL_IMAGENETTE_MD5=<the copy's md5>",
    ]
    return ["## Reproduce", "", "```bash", "export DVC_NO_ANALYTICS=1", *mirror,
            f"dvc exp run -S dataset={dataset}", "dvc metrics show && dvc plots show", "```", ""]


def write_report(paths: StagePaths, params: PipelineParams) -> Path:
    """Write ``report.md`` (and its PNG plots) from the JSON/CSV files of the earlier stages.

    Returns:
        The report's path.
    """
    data = json.loads(paths.data_json.read_text())
    train = json.loads(paths.train_json.read_text())
    robustness = json.loads(paths.robustness_json.read_text())
    drift = json.loads(paths.drift_json.read_text())
    robustness_rows = _read_csv(paths.robustness_csv)
    drift_rows = _read_csv(paths.drift_csv)
    write_plots(robustness_rows, drift_rows, robustness["clean_accuracy"], paths.reports)
    lines = [
        f"# Robustness and drift report: {params.dataset}",
        "",
        f"Written by `dvc repro` (stage `report`) on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        *_setup_lines(params, data, train, robustness, drift),
        *_robustness_lines(robustness, robustness_rows),
        *_drift_lines(drift, drift_rows),
        *_reproduce_lines(params.dataset),
    ]
    atomic_write_text(paths.report_md, "\n".join(lines))
    return paths.report_md
