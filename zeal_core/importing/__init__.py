"""Importing a model made elsewhere: the checkpoint checked, a new classifier fitted when asked
(``head``), evaluated and saved as a version (``flow``). Above ``models``, ``data``, ``evaluate`` and
``embed``, which it all uses."""

from zeal_core.importing.flow import IMPORT_STRATEGY, import_checkpoint
from zeal_core.importing.head import fit_linear_head

__all__ = ["IMPORT_STRATEGY", "fit_linear_head", "import_checkpoint"]
