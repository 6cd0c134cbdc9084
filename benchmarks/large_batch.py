"""``bench large-batch``: peak memory and time of ``python -m zeal_core check`` on a very large batch.

A folder of ``--files`` small PNGs (the dataset's own images, repeated cyclically, 32 px digits by default)
is checked by the real command in a child process, whose wall time and peak resident memory (``wait4``'s
``ru_maxrss``) are read by this process. Each tree named (``--tree``, a checkout of the lab; the current
one by default) gets its own state folder, warmed first by a check of 50 files (the diagnosis's shift bank,
built once per model), so the timed run measures a check, not the one-off warm-up. Pass an older checkout
as a second ``--tree`` to measure before and after in the same session.

Run: ``python -m benchmarks large-batch --files 20000 --tree /tmp/base --tree . --json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import script_main

ROOT = Path(__file__).resolve().parent.parent
WARM_FILES = 50  # files in the warm-up check of each tree


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench large-batch``."""
    bench = actions.add_parser("large-batch", parents=[parent], description=__doc__.split("\n\n")[0],
                               help="peak memory and time of check on a very large batch")
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--files", type=int, default=20_000, help="PNG files checked (default 20,000)")
    parser.add_argument("--tree", action="append", default=[],
                        help="a checkout of the lab to run (repeatable; default: this one)")
    parser.add_argument("--models", default=None, help="models folder with a digits model (default: a "
                        "new one is trained into a temporary folder)")
    parser.add_argument("--work", default=None, help="folder for the images and state (default: temporary)")
    parser.add_argument("--extra", default="", help="extra arguments for check, e.g. '--no-diagnosis'")


def _write_pngs(folder: Path, files: int) -> None:
    """``files`` PNGs of the digits dataset's images, repeated cyclically."""
    from PIL import Image

    from zeal_core.data import load_dataset

    images = load_dataset("digits").images
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        image = images[index % images.shape[0]]
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"img_{index:05d}.png")


def measured(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``command``; its wall time (s), peak resident memory (MiB), exit code and JSON output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    try:
        result = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    except json.JSONDecodeError:
        result = {}
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "exit_code": process.returncode, "n": result.get("n"), "drift": result.get("drift"),
            "sampled": result.get("sampled"), "error": result.get("error") or
            (stderr.strip().splitlines() or [""])[-1][:300] if process.returncode not in (0, 1) else None}


def _check_command(tree: Path, folder: Path, extra: str) -> list[str]:
    return [sys.executable, "-m", "zeal_core", "check", str(folder), "--json", *extra.split()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm each tree, then time its check of the large folder."""
    trees = [Path(tree).resolve() for tree in (args.tree or [str(ROOT)])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        big, small = work / "big", work / "small"
        if not big.is_dir():
            _write_pngs(big, args.files)
        if not small.is_dir():
            _write_pngs(small, WARM_FILES)
        models = Path(args.models) if args.models else work / "models"
        if not list(models.glob("*.json")):
            from benchmarks.app import seed_model

            seed_model(models, epochs=1)
        runs = []
        for number, tree in enumerate(trees):
            state = work / f"state-{number}"
            env = {**os.environ, "PYTHONPATH": str(tree), "ZEAL_MODELS_DIR": str(models),
                   "ZEAL_STATE_DIR": str(state), "ZEAL_DATA_DIR": str(work / f"data-{number}")}
            warm = measured(_check_command(tree, small, args.extra), env, tree)
            timed = measured(_check_command(tree, big, args.extra), env, tree)
            runs.append({"tree": str(tree), "warm_up": warm, "check": timed})
    return {"files": args.files, "extra": args.extra, "load_average": os.getloadavg(), "runs": runs}


def show(result: dict[str, Any]) -> None:
    """Print one line per tree."""
    print(f"check of {result['files']} PNGs (load average {result['load_average'][0]:.1f}):")
    for item in result["runs"]:
        check = item["check"]
        print(f"  {item['tree']}: {check['seconds']} s, peak {check['peak_rss_mib']} MiB, exit "
              f"{check['exit_code']}, n {check['n']}, sampled {check['sampled']}, error {check['error']}")


if __name__ == "__main__":
    raise SystemExit(script_main(__doc__.split("\n\n")[0], add_arguments, run, show))
