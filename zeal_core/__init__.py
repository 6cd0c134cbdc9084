"""Zeal Drift Lab core library: data, corruptions, models, drift detection and retraining.

Nothing in this package imports streamlit: pages and the command line are thin layers over it.
"""

from zeal_core.errors import ZealError

__all__ = ["ZealError"]
__version__ = "0.1.0"
