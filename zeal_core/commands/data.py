"""``data prepare`` and ``data info``."""

from __future__ import annotations

import argparse
import time

from zeal_core.data import load_dataset, prepare_dataset


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``data`` command and its actions."""
    data = subparsers.add_parser("data", help="prepare and inspect datasets")
    actions = data.add_subparsers(dest="action", required=True)
    for action, helptext, handler in (
        ("prepare", "download, verify and decode a dataset (idempotent)", _prepare),
        ("info", "counts per class and split, fingerprint", _info),
    ):
        sub = actions.add_parser(action, parents=[parent], help=helptext)
        sub.add_argument("--dataset", default="digits", help="digits, imagenette or folder:PATH")
        sub.set_defaults(handler=handler)


def _prepare(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress

    start = time.perf_counter()
    dataset = prepare_dataset(args.dataset, progress=stderr_progress)
    info = dataset.info()
    info["seconds"] = round(time.perf_counter() - start, 3)
    return info


def _info(args: argparse.Namespace) -> dict:
    return load_dataset(args.dataset).info()
