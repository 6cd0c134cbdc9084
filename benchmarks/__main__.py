"""``python -m benchmarks <action> [--json]``: run one benchmark (see ``benchmarks/_actions.py``)."""

import sys

from benchmarks._actions import build_parser
from zeal_core.cli import run

sys.exit(run(build_parser()))
