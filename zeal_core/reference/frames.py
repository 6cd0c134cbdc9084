"""Tables drawn from a check for plotting: the scatter of reference and sample in the projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from zeal_core.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from zeal_core.reference.fitted import FittedReference
    from zeal_core.reference.report import CheckReport

UNSEEN = "unseen class"  # label of an image whose class the model never saw
UNKNOWN = "unknown"  # label of a real image (no label known)


def class_labels(values: np.ndarray | None, class_names: tuple[str, ...], count: int) -> list[str]:
    """Class names for label/prediction ids (-1: a class the model never saw; None: labels unknown)."""
    if values is None:
        return [UNKNOWN] * count
    return [class_names[value] if 0 <= value < len(class_names) else UNSEEN for value in np.asarray(values)]


def scatter_frame(report: CheckReport, reference: FittedReference,
                  sample_domain: str = "sample") -> pd.DataFrame:
    """Reference and tested points in the reference's projection: one row each.

    Columns: ``x, y``; ``label`` and ``prediction`` (class names); ``domain`` ("reference", and for the
    tested points "corrupted" / "sample, clean" when ``sample_domain`` is "sample", else ``sample_domain``,
    e.g. "upload"); ``row`` (row in the reference or in the report, for its thumbnail); ``index`` (position in
    the split, or the row of an uploaded image).

    Raises:
        ConfigError: The report has no projection (it was checked without the "projection" part).
    """
    import pandas as pd

    if report.coords is None or report.reference_coords is None:
        raise ConfigError("this report has no projection: check with the 'projection' part")
    names = reference.class_names
    clean = reference.reference
    frames = [pd.DataFrame({
        "x": report.reference_coords[:, 0], "y": report.reference_coords[:, 1],
        "label": class_labels(clean.labels, names, len(clean)),
        "prediction": class_labels(clean.preds, names, len(clean)), "domain": "reference",
        "row": np.arange(len(clean)), "index": np.asarray(clean.indices)})]
    sample = report.sample
    if sample_domain == "sample":
        affected = sample.affected if sample.affected is not None else np.zeros(len(sample), bool)
        domain = np.where(affected, "corrupted", "sample, clean")
    else:
        domain = np.full(len(sample), sample_domain, dtype=object)
    frames.append(pd.DataFrame({
        "x": report.coords[:, 0], "y": report.coords[:, 1],
        "label": class_labels(sample.labels, names, len(sample)),
        "prediction": class_labels(sample.preds, names, len(sample)), "domain": domain,
        "row": np.arange(len(sample)), "index": np.asarray(sample.indices)}))
    return pd.concat(frames, ignore_index=True)
