"""Zeal Drift Lab core library: data, corruptions, models, drift detection and retraining.

Nothing in this package imports streamlit: pages and the command line are thin layers over it.
"""

import os

# Idle OpenMP threads sleep instead of spinning: on a shared CPU (a demo server, CI, a laptop running the app
# and a training job at once) spinning threads made 2-thread training steps 10-30x slower. Must be set before
# torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from zeal_core.errors import ZealError

__all__ = ["ZealError"]
__version__ = "0.1.0"
