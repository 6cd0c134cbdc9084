"""``python -m zeal_core.pipeline <stage> [--params FILE] [--root DIR]``: run one stage of ``dvc.yaml``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from zeal_core.errors import ZealError
from zeal_core.jsonable import json_default
from zeal_core.pipeline.stages import list_stages, run_stage


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage and print its JSON summary; exit code 2 with a one-line reason on a user error."""
    parser = argparse.ArgumentParser(prog="python -m zeal_core.pipeline",
                                     description="Run one stage of the DVC pipeline (see dvc.yaml).")
    parser.add_argument("stage", choices=list_stages())
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--root", default=".", help="project folder the stage paths are relative to")
    args = parser.parse_args(argv)
    try:
        result = run_stage(args.stage, args.params, args.root)
    except ZealError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
