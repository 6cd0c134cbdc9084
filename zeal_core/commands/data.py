"""``data prepare``, ``data info`` and ``data download``."""

from __future__ import annotations

import argparse
import time

from zeal_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``data`` command and its actions."""
    data = subparsers.add_parser("data", help="prepare and inspect datasets")
    actions = data.add_subparsers(dest="action", required=True)
    for action, helptext, handler in (
        ("prepare", "download, verify and decode a dataset (idempotent)", _prepare),
        ("info", "counts per class and split, fingerprint (needs a prepared dataset)", _info),
        ("download", "only download and verify the Imagenette archive (for a DVC stage)", _download),
    ):
        sub = actions.add_parser(action, parents=[parent], help=helptext)
        sub.add_argument("--dataset", default="digits", help="digits, imagenette or folder:PATH")
        sub.add_argument("--size", type=int, default=None,
                         help="working size in pixels (default from params.yaml: 160 imagenette, 64 folders)")
        sub.set_defaults(handler=handler)


def _prepare(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.data import is_prepared, prepare_dataset

    start = time.perf_counter()
    was_prepared = args.dataset != "digits" and is_prepared(args.dataset, image_size=args.size)
    dataset = prepare_dataset(args.dataset, progress=stderr_progress, image_size=args.size)
    info = dataset.info()
    info["already_prepared"] = was_prepared
    info["seconds"] = round(time.perf_counter() - start, 3)
    return info


def _info(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.data import load_dataset

    return load_dataset(args.dataset, progress=stderr_progress, image_size=args.size).info()


def _download(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.data.download import file_md5
    from zeal_core.data.imagenette import download_imagenette

    if args.dataset != "imagenette":
        raise ConfigError(f"data download only applies to imagenette, not {args.dataset!r}")
    start = time.perf_counter()
    path, downloaded = download_imagenette(args.size, progress=stderr_progress)
    return {"dataset": "imagenette", "archive": str(path), "bytes": path.stat().st_size,
            "md5": file_md5(path), "downloaded": downloaded, "seconds": round(time.perf_counter() - start, 3)}
