"""Black-box shift detection (BBSD, Lipton et al. 2018; best single method in Rabanser et al. 2019).

The detector itself is ``BBSDDetector`` in ``zeal_core.drift.univariate`` (it shares the per-dimension KS +
Bonferroni logic); this module re-exports it under the name the architecture notes use.
"""

from zeal_core.drift.univariate import BBSDDetector

__all__ = ["BBSDDetector"]
