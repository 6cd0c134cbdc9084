"""``bench diagnose`` report: targets, Markdown tables (held-out shifts first) and the confusion figure."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from benchmarks._diagnose_score import TARGET_MIN_SEVERITY, TARGET_SIZE, _rate
from benchmarks._harness import Table

HELD_OUT_SIZE = 200  # the held-out targets are at n = 200


def _pct(cell: dict[str, float]) -> str:
    return f"{100 * cell['rate']:.0f} ± {100 * cell['se']:.0f}" if cell["trials"] else "-"


def _num(cell: dict[str, float]) -> str:
    return f"{cell['mean']:.2f} ± {cell['se']:.2f}" if cell["trials"] else "-"


def _pool(cells: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Rates of ``key`` pooled over cells (trial-weighted)."""
    hits = sum(round(cell[key]["rate"] * cell[key]["trials"]) for cell in cells if cell[key]["trials"])
    return _rate(hits, sum(cell[key]["trials"] for cell in cells))


def held_out_cells(result: dict[str, Any], n: int,
                   severities: str = "all") -> dict[str, list[dict[str, Any]]]:
    """Held-out cells at n by group: bank families left out, new registered kinds, external shifts."""
    families = [cell for cell in result.get("held_out_families", {}).values()
                if cell["n"] == n and cell["severities"] == severities]
    unseen = result.get("unseen", {}).values()
    return {"families held out": families,
            "new kinds": [cell for cell in unseen if cell["group"] == "new" and cell["n"] == n],
            "external": [cell for cell in unseen if cell["group"] == "external" and cell["n"] == n]}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The targets: known kinds at n = 100, severity >= 3; held-out shifts at n = 200 ("unknown" or the
    right family, all severities); prediction collapse never "label shift"; clean "no drift"; label
    shift L1 at the largest size <= 500."""
    cells = [cell for cell in result["corruptions"]["cells"].values()
             if cell["n"] == TARGET_SIZE and cell["severity"] >= TARGET_MIN_SEVERITY]
    out: dict[str, Any] = {}
    if cells:
        for key in ("top1", "top3", "family_top1", "unknown", "detected_own_gate"):
            out[key] = _pool(cells, key)
        weights = [cell["severity_mae"]["trials"] for cell in cells]
        means = [cell["severity_mae"]["mean"] for cell in cells]
        ses = [cell["severity_mae"]["se"] for cell in cells]
        total = sum(weights)
        out["severity_mae"] = {"mean": float(np.dot(weights, means) / total),
                               "se": float(np.sqrt(np.dot(np.square(weights), np.square(ses))) / total),
                               "trials": total}
    out["clean_no_drift"] = _pool(list(result["clean"].values()), "no_drift")
    sizes = sorted({cell["n"] for cell in result.get("unseen", {}).values()})
    size = HELD_OUT_SIZE if HELD_OUT_SIZE in sizes else (sizes[-1] if sizes else None)
    if size is not None:
        groups = held_out_cells(result, size)
        out["held_out_n"] = size
        out["held_out_unknown_or_right"] = _pool([c for group in groups.values() for c in group],
                                                 "unknown_or_right")
        out["held_out_by_group"] = {name: _pool(group, "unknown_or_right") for name, group in groups.items()
                                    if group}
    collapse = [*result.get("held_out_families", {}).values(), *result.get("unseen", {}).values(),
                *result.get("collapse_known", {}).values()]
    collapse = [cell for cell in collapse if cell.get("severities", "all") == "all"]
    out["collapse_label_shift"] = _pool(collapse, "collapse_label_shift")
    label_sizes = sorted(int(size) for size in result["label_shift"])
    if label_sizes:
        size = max([s for s in label_sizes if s <= 500] or label_sizes)
        cell = result["label_shift"][str(size)]
        out["label_shift_l1"] = {**cell["l1_vs_sample"], "n": size}
        out["label_shift_verdict"] = {**cell["label_shift_verdict"], "n": size}
        out["label_shift_assumption_rejected"] = {**cell["assumption_rejected"], "n": size}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The dataset's tables as Markdown: targets, held-out shifts, then the known kinds."""
    info, machine = result["info"], result["machine"]
    lines = [f"### {info['dataset']} ({info['version']})", "",
             f"Machine: {machine['description']}. Reference {info['reference_n']} images (fit, bank of "
             f"{result['bank_sets']} shifts), sample pool {info['pool_n']} disjoint images (label shift: "
             f"{info.get('label_pool_n', info['pool_n'])} clean ones); "
             f"fit {result['fit_seconds']:.0f} s; diagnose median "
             + ", ".join(f"{1000 * value:.0f} ms at n = {n}" for n, value in result["speed_s"].items())
             + ". Rates in % ± one standard error; trials per cell in the last column.", ""]
    lines += _target_lines(result["targets"])
    lines += _held_out_lines(result)
    lines += _known_lines(result)
    lines += ["", "Most frequent confusions (n = 100, severity >= 3; true -> top-1, share of its trials):",
              ""]
    lines += [f"- {item}" for item in top_confusions(result)] or ["- none"]
    return "\n".join(lines) + "\n"


def _target_lines(goal: dict[str, Any]) -> list[str]:
    if not goal:
        return []
    rows: list[tuple[str, str, str]] = []
    if "held_out_unknown_or_right" in goal:
        rows.append((f"held-out shifts 'unknown' or right family (n = {goal['held_out_n']}, all severities)",
                     _pct(goal["held_out_unknown_or_right"]), ">= 80 %"))
        rows += [(f"... {name}", _pct(cell), "") for name, cell in goal.get("held_out_by_group", {}).items()]
    rows.append(("prediction-collapse shifts called 'label shift'", f"{_pct(goal['collapse_label_shift'])} "
                 f"({goal['collapse_label_shift']['trials']} checks)", "0"))
    rows.append(("clean -> no drift (all n)", _pct(goal["clean_no_drift"]), ">= 95 %"))
    if "label_shift_l1" in goal:
        shift = goal["label_shift_l1"]
        rows += [(f"label shift L1 (n = {shift['n']})", _num(shift), "<= 0.15"),
                 (f"label shift: verdict 'label shift' (n = {shift['n']})", _pct(goal["label_shift_verdict"]),
                  ""),
                 (f"label shift: assumption check rejects (n = {shift['n']})",
                  _pct(goal["label_shift_assumption_rejected"]), "~1 %")]
    for key, label, aim in (("top1", "known kinds top-1 (n = 100, severity >= 3)", ">= 80 %"),
                            ("top3", "known kinds top-3", ">= 95 %"),
                            ("family_top1", "known kinds top-1 family", ">= 90 %"),
                            ("unknown", "known kinds called 'unknown'", "")):
        if key in goal:
            rows.append((label, _pct(goal[key]), aim))
    if "severity_mae" in goal:
        rows.append(("known kinds severity MAE (levels)", _num(goal["severity_mae"]), "<= 0.75"))
    return [Table(("measure", "value", "target"), rows).markdown(), ""]


def _named(cell: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in cell["named"].items())


def _held_out_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    cells = result.get("held_out_families", {})
    if cells:
        lines += [Table(("family", "n", "severities", "'unknown shift'", "own gate detects",
                         "called label shift", "named instead", "trials"),
                        [(cell["family"], cell["n"], cell["severities"], _pct(cell["unknown"]),
                          _pct(cell["detected_own_gate"]), _pct(cell["label_shift"]), _named(cell),
                          cell["unknown"]["trials"]) for cell in cells.values()],
                        "Bank families held out (the diagnoser refitted without the whole family; only "
                        "'unknown shift' is right):").markdown(), ""]
    unseen = result.get("unseen", {})
    if unseen:
        lines += [Table(("group", "kind", "n", "'unknown'", "right family", "either", "called label shift",
                         "named instead", "trials"),
                        [(cell["group"], cell["kind"], cell["n"], _pct(cell["unknown"]),
                          _pct(cell["right_family"]), _pct(cell["unknown_or_right"]),
                          _pct(cell["label_shift"]), _named(cell), cell["unknown"]["trials"])
                         for cell in unseen.values()],
                        "Kinds never in the bank, full diagnoser (right: 'unknown shift' or a family the "
                        "shift belongs to; external = independent PIL/numpy code):").markdown(), ""]
    collapse = result.get("collapse_known", {})
    if collapse:
        shifts = next(iter(collapse.values()))["shifts"]
        lines += [f"Bank kinds that collapse predictions ({', '.join(shifts) or 'none'}), full diagnoser: "
                  "called label shift " + ", ".join(f"{_pct(cell['label_shift'])} at n = {n}"
                                                    for n, cell in collapse.items()) + ".", ""]
    return lines


def _known_lines(result: dict[str, Any]) -> list[str]:
    known = Table(("n", "severity", "top-1", "top-3", "family top-1", "severity MAE", "own gate detects",
                   "unknown", "trials"),
                  [(cell["n"], f"{cell['severity']:g}", _pct(cell["top1"]), _pct(cell["top3"]),
                    _pct(cell["family_top1"]), _num(cell["severity_mae"]), _pct(cell["detected_own_gate"]),
                    _pct(cell["unknown"]), cell["top1"]["trials"])
                   for cell in result["corruptions"]["cells"].values()], "Known kinds (full diagnoser):")
    clean = Table(("n", "clean -> no drift", "trials"),
                  [(n, _pct(cell["no_drift"]), cell["no_drift"]["trials"])
                   for n, cell in result["clean"].items()])
    label = Table(("n", "label shift L1 (vs sample)", "L1 (vs prior)", "verdict 'label shift'",
                   "top-1 when forced", "assumption rejected", "trials"),
                  [(n, _num(cell["l1_vs_sample"]), _num(cell["l1_vs_prior"]),
                    _pct(cell["label_shift_verdict"]), _pct(cell["label_shift_top1_forced"]),
                    _pct(cell["assumption_rejected"]),
                    cell["l1_vs_sample"]["trials"]) for n, cell in result["label_shift"].items()])
    lines = [known.markdown(), "", clean.markdown(), "", label.markdown()]
    if result.get("fractions"):
        size = next(iter(result["fractions"].values()))["n"]
        lines += ["", Table(("share", "top-1", "family top-1", "unknown", "share error",
                             "per-image score AUC", "trials"),
                            [(f"{cell['fraction']:g}", _pct(cell["top1"]), _pct(cell["family_top1"]),
                              _pct(cell["unknown"]), _num(cell["fraction_mae"]),
                              _num(cell["image_score_auc"]), cell["top1"]["trials"])
                             for cell in result["fractions"].values()],
                            f"Partial drifts (a share of the images corrupted, n = {size}):").markdown()]
    return lines


def pooled_confusion(result: dict[str, Any], n: int = TARGET_SIZE,
                     min_severity: float = TARGET_MIN_SEVERITY) -> tuple[list[str], list[str], np.ndarray]:
    """True corruption x top-1 cause counts at ``n``, pooled over severities >= ``min_severity``."""
    rows = result["corruptions"]["confusion"].get(str(n), {})
    kinds = list(dict.fromkeys(key.rsplit(":", 1)[0] for key in rows))
    columns = kinds + sorted({name for row in rows.values() for name in row} - set(kinds))
    matrix = np.zeros((len(kinds), len(columns)), dtype=np.int64)
    for key, row in rows.items():
        kind, severity = key.rsplit(":", 1)
        if float(severity) >= min_severity:
            for name, count in row.items():
                matrix[kinds.index(kind), columns.index(name)] += count
    return kinds, columns, matrix


def top_confusions(result: dict[str, Any], limit: int = 8) -> list[str]:
    """'true -> predicted: share' for the largest off-diagonal cells of the pooled confusion matrix."""
    kinds, columns, matrix = pooled_confusion(result)
    items = []
    for i, kind in enumerate(kinds):
        total = matrix[i].sum()
        for j, name in enumerate(columns):
            if name != kind and matrix[i, j]:
                items.append((matrix[i, j] / total, f"{kind} -> {name}: {100 * matrix[i, j] / total:.0f} %"))
    return [text for _, text in sorted(items, reverse=True)[:limit]]


def confusion_figure(result: dict[str, Any]) -> bytes:
    """PNG of the pooled confusion matrix (rows: true corruption, columns: top-1 cause), row-normalised."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    kinds, columns, matrix = pooled_confusion(result)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(0.42 * len(columns) + 3, 0.38 * len(kinds) + 2.2))
    image = axes.imshow(shares, cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    axes.set_yticks(range(len(kinds)), kinds, fontsize=8)
    axes.set_xlabel("top-1 cause")
    axes.set_ylabel("true corruption")
    axes.set_title(f"{result['info']['dataset']}: diagnosis at n = {TARGET_SIZE}, severity >= "
                   f"{TARGET_MIN_SEVERITY:g}", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, label="share of trials")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


