"""Where each pipeline stage writes, for one dataset (``dvc.yaml`` declares the same paths).

``<d>`` is the dataset name:

- ``data/pipeline/<d>/raw/``: the raw source (the Imagenette archive; a note for the embedded digits).
- ``data/pipeline/<d>/prepared/``: the decoded uint8 cache (the data folder later stages load from).
- ``models/pipeline/<d>/``: the trained model's registry folder (safetensors + card JSON; ``active.json``
  names it, so ``ZEAL_MODELS_DIR=models/pipeline/<d>`` shows it in the app).
- ``reports/<d>/``: small JSON/CSV/Markdown/PNG results, meant to be committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zeal_core.paths import safe_name

__all__ = ["StagePaths"]


@dataclass(frozen=True)
class StagePaths:
    """Output locations of every stage for one dataset (``dvc.yaml`` declares the same paths)."""

    raw: Path  # download stage output folder
    prepared: Path  # prepare stage output folder (the data folder of the later stages)
    models: Path  # train stage output folder (a model registry root)
    reports: Path  # small committed results

    @classmethod
    def for_dataset(cls, dataset: str, root: Path | str = ".") -> StagePaths:
        """The paths for ``dataset`` under the project folder ``root``."""
        root = Path(root)
        name = safe_name(dataset, "dataset")
        return cls(raw=root / "data" / "pipeline" / name / "raw",
                   prepared=root / "data" / "pipeline" / name / "prepared",
                   models=root / "models" / "pipeline" / name,
                   reports=root / "reports" / name)

    @property
    def data_json(self) -> Path:
        """Dataset summary written by the prepare stage."""
        return self.reports / "data.json"

    @property
    def train_json(self) -> Path:
        """Model version and training metrics written by the train stage."""
        return self.reports / "train.json"

    @property
    def robustness_json(self) -> Path:
        """Robustness metrics (``dvc metrics``)."""
        return self.reports / "robustness.json"

    @property
    def robustness_csv(self) -> Path:
        """Accuracy per corruption and severity (``dvc plots``)."""
        return self.reports / "robustness.csv"

    @property
    def drift_json(self) -> Path:
        """Detector metrics (``dvc metrics``)."""
        return self.reports / "drift.json"

    @property
    def drift_csv(self) -> Path:
        """Detection rate per detector, corruption and severity (``dvc plots``)."""
        return self.reports / "drift.csv"

    @property
    def report_md(self) -> Path:
        """The human-readable report."""
        return self.reports / "report.md"
