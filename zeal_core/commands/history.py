"""``history``: the recorded checks (list, one report) and the retrain policy over them."""

from __future__ import annotations

import argparse
from typing import Any

from zeal_core.errors import ConfigError

ACTIONS = ("list", "show", "policy", "backup", "repair")


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``history`` command."""
    command = subparsers.add_parser(
        "history", parents=[parent], help="recorded checks, and the retrain policy over them",
        description="list (default): the recorded checks, oldest first; show ID: one check's report; "
                    "policy: show the retrain policy, or change it with --set KEY=VALUE (enabled, strategy, "
                    "alarms_to_retrain, window, cooldown, promote, margin); backup: a consistent copy of "
                    "the database (--out); repair: move a damaged database aside and rebuild it from the "
                    "rows still readable, or restore a backup (--from).")
    command.add_argument("action", nargs="?", choices=ACTIONS, default="list")
    command.add_argument("id", nargs="?", type=int, help="check id (for show)")
    command.add_argument("--model", default=None, help="only checks of this model version")
    command.add_argument("--limit", type=int, default=50, help="the newest N checks (default 50)")
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="policy setting (repeatable), e.g. --set enabled=true --set promote=auto")
    command.add_argument("--out", default=None, help="backup: file or folder to write the copy to "
                                                      "(default: backups/ beside the database)")
    command.add_argument("--from", dest="source", default=None, metavar="BACKUP",
                         help="repair: restore this backup instead of salvaging the damaged file")
    command.add_argument("--force", action="store_true", help="repair: rebuild even a healthy database")
    command.set_defaults(handler=run_history)


def run_history(args: argparse.Namespace) -> dict[str, Any]:
    """List, show or set the policy."""
    from zeal_core.history import HistoryStore
    from zeal_core.history.repair import backup, repair

    if args.action == "backup":
        return backup(out=args.out)
    if args.action == "repair":
        return repair(source=args.source, force=args.force)
    store = HistoryStore()
    if args.action == "show":
        if args.id is None:
            raise ConfigError("history show needs a check id, e.g. `zeal history show 3` (`zeal history` "
                              "lists them)")
        row = store.get(args.id)
        return {"history": str(store.path), **_row_dict(row), "report": row.report}
    if args.action == "policy":
        return _policy(store, args.set)
    rows = store.checks(model_version=args.model, limit=args.limit)
    lines = [f"  #{row.id:<5} {row.created}  {'DRIFT' if row.drift else 'ok   '}  n={row.n:<5} "
             f"min p={row.min_p_value if row.min_p_value is not None else float('nan'):<9.3g} "
             f"{_estimate_text(row)}  {row.source}" + (f"  [{row.diagnosis}]" if row.diagnosis else "")
             for row in rows]
    return {"history": str(store.path), "count": store.count(), "shown": len(rows),
            "table": "\n" + "\n".join(lines) if lines else "(no checks recorded yet)",
            "checks": [_row_dict(row) for row in rows]}


def _estimate_text(row: Any) -> str:
    if row.estimated_accuracy is None:
        return "est. acc -    "
    return f"est. acc {row.estimated_accuracy:.1%}"


def _row_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "created": row.created, "model_version": row.model_version, "dataset": row.dataset,
            "source": row.source, "origin": row.origin, "n": row.n, "drift": row.drift,
            "min_p_value": row.min_p_value, "p_values": row.p_values, "alpha": row.alpha,
            "estimator": row.estimator, "estimated_accuracy": row.estimated_accuracy,
            "estimate_low": row.estimate_low,
            "estimate_high": row.estimate_high, "diagnosis": row.diagnosis, "batch_file": row.batch_file}


def _policy(store: Any, pairs: list[str]) -> dict[str, Any]:
    from zeal_core.config import override, parse_pairs
    from zeal_core.history import load_policy, save_policy

    policy = load_policy(store)
    if pairs:
        policy = override(policy, parse_pairs(pairs, "--set", "enabled=true"), "zeal history policy --set")
        save_policy(store, policy)
    return {"history": str(store.path), "policy": policy.to_dict(), "events": store.events()}
