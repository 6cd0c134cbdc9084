"""Subcommands of ``zeal`` / ``python -m zeal_core``; each module exposes ``register(subparsers, parent)``.

Registering a command must stay cheap: ``zeal check --help`` builds every command's parser, so a module
imports torch, timm, scikit-learn and the like only inside its handler. Help text that needs a registry
which lives behind such imports is filled in only when that command's help is shown (``describe_lazily``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def describe_lazily(parser: argparse.ArgumentParser, describe: Callable[[], str]) -> None:
    """Set ``parser``'s description from ``describe()`` when its help is printed, not when it is built.

    Args:
        parser: A command's parser.
        describe: Builds the description (may import the modules a registry lives in).
    """
    format_help = parser.format_help

    def format_help_described() -> str:
        parser.description = describe()
        return format_help()

    parser.format_help = format_help_described  # type: ignore[method-assign]
