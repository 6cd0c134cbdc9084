"""One fold model of the signature diagnoser's cross-fitting: what its held-out half shows.

``CrossFit`` holds the reference and bank as the fit sees them (raw statistics, predictions, features per
group). For a random split of the reference rows into two halves, ``fold_model`` fits signatures (and the
label-shift check) on one half and scores subsets of the other half (``calibration``):

- ``known``: clean, label-shifted and every bank set's subsets, at the calibrated sizes (the gate, the
  temperatures and the label-shift check's null);
- ``rule``: the bank sets' subsets as cases for the unknown rule: those above plus one subset of every set
  at the size of the whole held-out half, named by the full signatures (``unseen`` False), and, when asked,
  every family's sets named by signatures fitted without that family (``unseen`` True).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.diagnose.assumption import LabelShiftCheck
from zeal_core.diagnose.base import UNKNOWN
from zeal_core.diagnose.calibration import HeldOutGroup, SubsetPlan, draw_rows, score_subsets
from zeal_core.diagnose.signature_table import CLEAN, GroupRows, SignatureTable, build_table
from zeal_core.diagnose.statistics import FoldMoments, Projection

if TYPE_CHECKING:
    from zeal_core.diagnose.signature import SignatureConfig


@dataclass(frozen=True)
class Source:
    """One group of the fit: the clean reference or a bank set, as arrays."""

    kind: str  # "clean" or the corruption
    family: str  # the corruption's family ("" for clean)
    severity: float  # 0 for clean
    raw: np.ndarray  # float32 rows x (D + 4) raw statistics
    preds: np.ndarray  # int64 rows
    probs: np.ndarray  # float64 rows x C
    features: np.ndarray  # float32 rows x D penultimate features


class CrossFit:
    """The groups of one fit and the settings; ``fold_model`` scores one half with the other's model."""

    def __init__(self, sources: list[Source], labels: np.ndarray, num_classes: int, config: SignatureConfig,
                 components: int, spread: int) -> None:
        self.sources = sources
        self.labels = labels
        self.num_classes = num_classes
        self.config = config
        self.components = components
        self.spread = spread
        self.families = sorted({source.family for source in sources[1:]})

    def moments(self, fold: np.ndarray) -> FoldMoments:
        """Per-fold sums of every group's raw statistics, each group in the block of its family."""
        moments = FoldMoments(2)
        for source in self.sources:
            moments.add(source.raw.astype(np.float64), fold, source.family)
        return moments

    def table(self, projection: Projection, rows: np.ndarray, without: str | None = None) -> SignatureTable:
        """Signatures of every group (but the family ``without``) on reference rows ``rows``."""
        groups = [GroupRows(source.kind, source.severity, projection(source.raw[rows]), source.preds[rows],
                            source.probs[rows], self.labels[rows])
                  for source in self.sources if source.family != without or source.kind == CLEAN]
        return build_table(groups, self.spread, self.config.severity_step, self.num_classes,
                           self.config.fractions)

    def sizes(self, pool: int) -> list[int]:
        """Calibrated sizes for a held-out pool: at most half of it, so that subsets of one pool differ (a
        subset of nearly the whole pool repeats one draw, and the gate's tail quantiles would rest on a
        handful of draws)."""
        return [size for size in self.config.calibration_sizes if size <= pool // 2] or [max(2, pool // 2)]

    def fold_model(self, moments: FoldMoments, fold: np.ndarray, model: int, rng: np.random.Generator,
                   unseen: bool) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
        """Fit on fold ``model`` and score the other fold: (known results per size, unknown-rule cases)."""
        config = self.config
        own, held = np.flatnonzero(fold == model), np.flatnonzero(fold != model)
        projection = moments.projection([model], self.components, config.shrinkage)
        table = self.table(projection, own)
        clean = self.sources[0]
        check = LabelShiftCheck.fit(clean.features[own], clean.preds[own], self.num_classes)
        # the check's item scores are needed on clean rows only (its null: clean and label-shifted subsets)
        items = [check.items(clean.features[held], clean.preds[held])] + [np.zeros(len(held))] * (
            len(self.sources) - 1)
        groups = [HeldOutGroup(source.kind, table.expand(projection(source.raw[held])), source.preds[held],
                               source.probs[held], item)
                  for source, item in zip(self.sources, items, strict=True)]
        labels, known, cases = self.labels[held], {}, []
        plan = SubsetPlan(config.clean_trials, config.label_shift_trials, config.shift_trials)
        for size in self.sizes(len(held)):
            draws, truths = draw_rows(groups, labels, size, plan, rng)
            result = score_subsets(table, groups, draws, truths, size, config.bbse_ridge)
            result["feature_z"] = check.standardise(result["item_means"], result["pred_shares"], size)
            known[size] = result
            cases.append(self._cases(table, result, size, len(own), unseen=False))
        whole = SubsetPlan(0, 0, 1)
        draws, truths = draw_rows(groups, labels, len(held), whole, rng)
        result = score_subsets(table, groups, draws, truths, len(held), config.bbse_ridge)
        cases.append(self._cases(table, result, len(held), len(own), unseen=False))
        if unseen and len(self.families) > 1:
            cases += self._unseen_cases(moments, model, own, held, rng)
        return known, cases

    def _unseen_cases(self, moments: FoldMoments, model: int, own: np.ndarray, held: np.ndarray,
                      rng: np.random.Generator) -> list[dict[str, Any]]:
        """Each family's sets scored by signatures (and a projection) fitted without that family."""
        config, cases = self.config, []
        labels = self.labels[held]
        for family in self.families:
            projection = moments.projection([model], self.components, config.shrinkage, without=family)
            table = self.table(projection, own, without=family)
            members = [self.sources[0]] + [source for source in self.sources[1:] if source.family == family]
            groups = [HeldOutGroup(source.kind, table.expand(projection(source.raw[held])),
                                   source.preds[held], source.probs[held], np.zeros(len(held)))
                      for source in members]
            plan = SubsetPlan(0, 0, config.shift_trials, shift_truth=UNKNOWN)
            for size in [*self.sizes(len(held)), len(held)]:
                draws, truths = draw_rows(groups, labels, size, plan, rng)
                result = score_subsets(table, groups, draws, truths, size, config.bbse_ridge)
                cases.append(self._cases(table, result, size, len(own), unseen=True))
        return cases

    def _cases(self, table: SignatureTable, result: dict[str, Any], size: int, rows: int,
               unseen: bool) -> dict[str, Any]:
        """The unknown rule's raw material from scored subsets (shifted ones only)."""
        shifted = result["truths"] != "no_drift"
        shifted &= result["truths"] != "label_shift"
        family_of = {source.kind: source.family for source in self.sources[1:]}
        return {"size": size, "rows": rows, "dims": table.means.shape[1], "unseen": unseen,
                "families": np.asarray([family_of[kind] for kind in table.corruptions]),
                "truth_family": np.asarray(["" if unseen else family_of[kind]
                                            for kind in result["truths"][shifted]]),
                **{key: result[key][shifted] for key in ("best_reference", "best_estimated",
                                                         "corruption_distance")}}
