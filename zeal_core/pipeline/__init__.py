"""The reproducible pipeline of ``dvc.yaml``: download, prepare, train, evaluate, drift-eval, report.

Each stage is ``python -m zeal_core.pipeline <stage> [--params params.yaml]``. Every knob lives in
``params.yaml``: the top-level ``dataset`` picks a profile, and each stage reads its section for that dataset
(``train.<dataset>``, ``evaluate.<dataset>``, ``drift_eval.<dataset>``), so ``dvc exp run -S
dataset=imagenette`` switches the whole pipeline and ``-S drift_eval.digits.trials=50`` re-runs only the
stages that depend on it.

The package: ``params`` (the params schema, ``load_params``), ``paths`` (``StagePaths``: where each stage
writes), ``stages`` (one function per stage in one name -> function table; ``run_stage``), ``report`` (JSON,
CSV, plots, ``report.md``). The computations live in the library and run without any files:
``zeal_core.robustness.robustness_table`` (evaluate) and ``zeal_core.reference.grid.detector_table``
(drift-eval).
"""

from zeal_core.pipeline.params import DriftEvalParams, EvaluateParams, PipelineParams, load_params
from zeal_core.pipeline.paths import StagePaths
from zeal_core.pipeline.report import machine_description, write_report
from zeal_core.pipeline.stages import STAGES, StageRun, list_stages, register_stage, run_stage

__all__ = ["STAGES", "DriftEvalParams", "EvaluateParams", "PipelineParams", "StagePaths", "StageRun",
           "list_stages", "load_params", "machine_description", "register_stage", "run_stage", "write_report"]
