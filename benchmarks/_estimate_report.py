"""``bench estimate`` report: Markdown tables (held-out coverage and error first) and the scatter figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Table, caption

HEADLINE = "shift-calibrated"  # the estimator a warm check shows first
SHOWN = "shown by a check"  # what a check shows first given its diagnosis (``_estimate_score.SHOWN``)
TARGETS = {"coverage": 0.85, "mae": 0.04, "max_kind_mae": 0.08}  # held-out families at the largest n


def _points(value: float | None, digits: int = 1) -> str:
    """A share as points (0.123 -> "12.3"); "-" for a missing value."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * value:.{digits}f}"


def _sizes(draws: dict[str, Any]) -> list[str]:
    return [key for key in draws if key.isdigit()]


def targets(result: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The issue's targets at the largest n (held-out coverage, MAE, worst kind) for ``name``: by default
    what a check shows (its diagnosis flags extrapolations) when scored, else shift-calibrated."""
    sizes = _sizes(result["draws"])
    if not sizes:
        return {}
    size = sizes[-1]
    name = name or (SHOWN if SHOWN in result["draws"][size] else HEADLINE)
    if name not in result["draws"][size]:
        return {}
    cell = result["draws"][size][name]
    held = cell.get("held_out")
    if not held:
        return {}
    worst_kind, worst = max(cell["by_kind"].items(), key=lambda item: item[1]["mae"])
    return {"n": int(size), "estimator": name, "coverage": held["coverage"],
            "coverage_se": held["coverage_se"], "mae": held["mae"], "mae_se": held["mae_se"],
            "worst_kind": worst_kind, "worst_kind_mae": worst["mae"], "draws": held["draws"],
            "met": {"coverage": held["coverage"] >= TARGETS["coverage"], "mae": held["mae"] <= TARGETS["mae"],
                    "max_kind_mae": worst["mae"] <= TARGETS["max_kind_mae"]}}


def markdown(result: dict[str, Any]) -> str:
    """The dataset's result as Markdown tables."""
    info, draws, names = result["info"], result["draws"], list(result["summary"])
    sizes = _sizes(draws)
    described = _described(result["machine"])
    lines = [f"### {info['dataset']}: model {info['version']} ({info['image_size']} px), {described}",
             "", f"Reference: {info['reference_n']} clean images of the validation split's reference half "
             f"(accuracy {info['reference_accuracy']:.3f}); bank: {info['bank_shifts']} shifts of those "
             f"images. Scored on the disjoint sample pool ({info['pool_n']} images, clean accuracy "
             f"{info['clean_pool_accuracy']:.3f}). Held out: bank kinds scored by fits *without their "
             "family* (leave one family out), registered kinds never in a bank (geometry, capture) and "
             "shifts of an independent PIL/numpy implementation (`benchmarks/_external_shifts.py`). "
             "Errors in points of accuracy against each draw's own accuracy; coverage: the 90 % interval "
             "holds the draw's accuracy; ± one standard error.", ""]
    for goal in (result.get("targets"), result.get("targets_estimator")):
        if not goal:
            continue
        met = goal["met"]
        lines += [f"Targets ({goal['estimator']}, held-out shifts, n = {goal['n']}, {goal['draws']} draws): "
                  f"coverage {_points(goal['coverage'], 0)} ± {_points(goal['coverage_se'], 0)} % "
                  f"(>= 85 %: {'met' if met['coverage'] else 'missed'}), MAE {_points(goal['mae'])} ± "
                  f"{_points(goal['mae_se'])} (<= 4: {'met' if met['mae'] else 'missed'}), worst kind "
                  f"{goal['worst_kind']} {_points(goal['worst_kind_mae'])} (<= 8: "
                  f"{'met' if met['max_kind_mae'] else 'missed'}).", ""]
    held_out = caption("Held-out shifts", n=[int(size) for size in sizes],
                       trials=f"{result.get('trials', '?')} draws per shift and size",
                       standard_error="± one standard error", machine_record=result["machine"])
    lines.append(Table(("estimator", *(f"n={size}: MAE / coverage / flagged" for size in sizes)),
                       [(name, *(_held_out_cell(draws[size][name].get("held_out", {})) for size in sizes))
                        for name in names], held_out).markdown())
    lines += _group_lines(draws, names, sizes)
    lines += _kind_lines(draws, sizes)
    lines += _family_lines(result["summary"], names)
    resplits = result.get("clean_resplits")
    if resplits:
        cells = [f"{name} {_points(value['mean'])} ({_points(value['sd'])}), "
                 f"{_points(value['within_2'], 0)} %" for name, value in resplits["errors"].items()]
        lines += ["", f"Clean held-out over {resplits['splits']} random re-splits of the clean images "
                  "(reference of the same size, sample the rest): estimate minus truth, mean (SD), points; "
                  "share within 2 points: " + ", ".join(cells) + "."]
    lines += _ablation_lines(result.get("ablation"))
    lines += _label_shift_lines(result.get("label_shift"), names)
    calibration = result["calibration"]
    lines += ["", f"Temperature scaling on the reference: T = {calibration['temperature']:.3f}, ECE "
              f"{_points(calibration['ece_before'])} -> {_points(calibration['ece_after'])} points "
              "(15 bins).", "", "Speed (CPU): " + ", ".join(
                  f"{name} fit {value['fit_seconds']:.2f} s, estimate {value['estimate_ms_n100']:.0f} / "
                  f"{value['estimate_ms_n1000']:.0f} ms at n = 100 / 1000 (B = {value['bootstrap']})"
                  for name, value in result["speed"].items()) + "."]
    return "\n".join(lines)


def _held_out_cell(held: dict[str, Any]) -> str:
    return f"{_points(held.get('mae'))} ± {_points(held.get('mae_se'))} / {_flagged_cell(held)}"


def _flagged_cell(cell: dict[str, Any]) -> str:
    """Coverage and share flagged as an extrapolation, in percent."""
    return f"{_points(cell.get('coverage'), 0)} % / {_points(cell.get('extrapolation'), 0)} %"


def _group_lines(draws: dict[str, Any], names: list[str], sizes: list[str]) -> list[str]:
    if not sizes:
        return []
    size = sizes[-1]
    groups = ("bank", "new", "external", "compound", "clean")
    labels = {"bank": "bank kinds, family held out", "new": "new kinds (geometry, capture)",
              "external": "external (independent code)", "compound": "compounds (whole bank)",
              "clean": "clean"}

    def cell(group: dict[str, Any] | None) -> str:
        return "-" if not group else (f"{_points(group['mae'])} / {_points(group['coverage'], 0)} % / "
                                      f"{_points(group['stream_coverage'], 0)} % / "
                                      f"{_points(group['width'], 0)}")

    return ["", Table(("estimator", *(labels[g] for g in groups)),
                      [(name, *(cell(draws[size][name].get(group)) for group in groups)) for name in names],
                      f"By group at n = {size} (MAE / coverage of the draw's accuracy / of the stream's / "
                      "mean width, points):").markdown()]


def _kind_lines(draws: dict[str, Any], sizes: list[str]) -> list[str]:
    if not sizes or HEADLINE not in draws[sizes[-1]]:
        return []
    size = sizes[-1]
    names = [name for name in (HEADLINE, SHOWN) if name in draws[size]]
    kinds = draws[size][HEADLINE].get("by_kind", {})
    rows = [(kind, *(f"{_points(c['mae'])} / {_flagged_cell(c)}"
                     for c in (draws[size][name]["by_kind"][kind] for name in names)), cell["draws"])
            for kind, cell in sorted(kinds.items(), key=lambda item: -item[1]["mae"])]
    return ["", Table(("kind", *names, "draws"), rows,
                      f"Held-out kinds at n = {size} (severities pooled): MAE / coverage / share flagged as "
                      "an extrapolation, for " + " and ".join(names) + ":").markdown()]


def _family_lines(summary: dict[str, Any], names: list[str]) -> list[str]:
    families = sorted({family for name in names for family in summary[name]["families"]})
    if not families:
        return []
    others = ("new", "external", "compound")
    rows = [(name, *(_points(summary[name]["families"].get(family, {}).get("mae")) for family in families),
             *(_points(summary[name].get(group, {}).get("mae")) for group in others)) for name in names]
    title = "Whole pool, MAE per bank family, scored by fits without that family (points):"
    return ["", Table(("estimator", *families, "new kinds", "external", "compound"), rows, title).markdown()]


def _ablation_lines(ablate: dict[str, Any] | None) -> list[str]:
    if not ablate:
        return []
    size = ablate["size"]
    rows = [(label, _points(value["mae"]), _points(value[f"mae_n{size}"]),
             _points(value["mae_new_kinds"])) for label, value in ablate["variants"].items()]
    return ["", Table(("variant", "MAE", f"MAE n={size}", "MAE new kinds"), rows,
                      f"What each part of pm-atc adds (MAE in points; whole pool over {ablate['shifts']} "
                      f"bank shifts, and {ablate['trials']} draws of n = {size} per shift; new and external "
                      "kinds: whole pool):").markdown()]


def _label_shift_lines(rows: list[dict[str, Any]] | None, names: list[str]) -> list[str]:
    if not rows:
        return []
    names = [name for name in names if name in rows[0]["estimates"]]
    cells = [(row["shift"], ",".join(map(str, row["classes"])), row["n"], _points(row["true"]),
              *(_points(row["estimates"][name]) for name in names)) for row in rows]
    title = "Label shift (only the listed classes kept; true vs estimated accuracy, points):"
    return ["", Table(("shift", "classes", "n", "true", *names), cells, title).markdown()]


def scatter(result: dict[str, Any], path: Path) -> Path:
    """Estimated vs true accuracy, one panel per estimator (PNG via matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["summary"])
    rows = result["rows"]
    groups = [group for group in ("bank", "new", "external", "compound", "clean")
              if any(row["group"] == group for row in rows)]
    colours = {group: plt.get_cmap("tab10")(index) for index, group in enumerate(groups)}
    columns = min(3, len(names))
    lines = -(-len(names) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.4 * columns, 3.3 * lines), sharex=True,
                                sharey=True, squeeze=False)
    axes = axes.ravel()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    for axis, name in zip(axes, names, strict=False):
        for group in groups:
            chosen = [row for row in rows if row["group"] == group]
            axis.scatter([100 * row["true"] for row in chosen],
                         [100 * row["estimates"][name]["accuracy"] for row in chosen], s=12,
                         color=colours[group], label=group, alpha=0.8)
        axis.plot([0, 100], [0, 100], color="grey", linewidth=0.8)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("true accuracy (%)")
        axis.tick_params(labelbottom=True)
        axis.set_xlim(-2, 102)
        axis.set_ylim(-2, 102)
    for axis in axes[::columns]:
        axis.set_ylabel("estimated accuracy (%)")
    axes[len(names) - 1].legend(fontsize=6, loc="lower right")
    figure.suptitle(f"{result['info']['dataset']}: estimated vs true accuracy, {len(rows)} shifts of the "
                    "sample pool (held out)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _described(machine: dict | str) -> str:
    """The machine line of a result (older result files hold the line itself)."""
    return machine["description"] if isinstance(machine, dict) else str(machine)
