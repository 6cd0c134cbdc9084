"""``models``: list the registry's versions, import a checkpoint made elsewhere, export, activate, delete.

    python -m zeal_core models list [--json]          (damaged versions are listed as damaged, with why)
    python -m zeal_core models import --weights PATH --arch resnet18 --dataset digits [--reset-head] [--json]
    python -m zeal_core models export VERSION --out DIR [--format safetensors|state-dict] [--json]
    python -m zeal_core models activate VERSION [--json]
    python -m zeal_core models delete VERSION [--force] [--json]
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``models`` command and its actions (list, import, export, activate, delete)."""
    # --json belongs to each action (``models list --json``), so the actions' defaults cannot hide it.
    models = subparsers.add_parser("models", help="list, import or export model versions",
                                   description="The model registry: list versions, import a timm/PyTorch "
                                               "checkpoint (never unpickled), export a version for timm.")
    actions = models.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[parent], help="the versions, newest first")
    listing.set_defaults(handler=_list)

    imports = actions.add_parser(
        "import", parents=[parent], help="import a .safetensors or PyTorch state-dict checkpoint",
        description="Read a checkpoint (safetensors, or torch.load(weights_only=True) for .pth/.pt/.bin), "
                    "check it against a timm architecture and a dataset's classes, evaluate it on the val "
                    "split and register it as a new version.")
    imports.add_argument("--weights", required=True, help="the checkpoint file")
    imports.add_argument("--arch", help="timm model name, e.g. resnet18 (optional for a file this lab "
                                        "exported)")
    imports.add_argument("--dataset", required=True, help="digits, imagenette or folder:PATH")
    imports.add_argument("--image-size", type=int, help="input side in px the model expects "
                                                        "(default: the file's metadata, else the dataset's)")
    imports.add_argument("--classes", nargs="+", metavar="CLASS",
                         help="the model's own classes in output order (classes of the dataset)")
    imports.add_argument("--reset-head", action="store_true",
                         help="replace the classifier with a new one fitted on the train split "
                              "(the rest of the network frozen)")
    imports.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                         help="input mean per channel in [0, 1] units (default: timm's for the arch)")
    imports.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"),
                         help="input std per channel in [0, 1] units (default: timm's for the arch)")
    imports.add_argument("--key", help="checkpoint entry holding the weights (default: the top level, or "
                                       "state_dict, model_state_dict, model, ..., ema)")
    imports.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    imports.add_argument("--activate", action="store_true",
                         help="make the new version the active one (done anyway when none was ever made "
                              "active; never otherwise, even when the active one is damaged)")
    imports.set_defaults(handler=_import)

    exports = actions.add_parser("export", parents=[parent], help="write a version for plain timm",
                                 description="Write a version's weights (timm's own tensor names) and card "
                                             "to a folder.")
    exports.add_argument("version", help="version id, 'active' or 'latest'")
    exports.add_argument("--out", required=True, help="folder to write to (created when missing)")
    exports.add_argument("--format", default=None,
                         help="safetensors (default) or state-dict (a torch.save .pth)")
    exports.add_argument("--name", help="file name stem (default: the version id)")
    exports.set_defaults(handler=_export)

    activate = actions.add_parser("activate", parents=[parent], help="make a version the active one",
                                  description="The version every page and command uses by default.")
    activate.add_argument("version", help="version id, or 'latest'")
    activate.set_defaults(handler=_activate)

    delete = actions.add_parser("delete", parents=[parent], help="delete a version (card and weights)",
                                description="Remove a version, damaged or not. The active version is only "
                                            "deleted when it is damaged or with --force (no version is "
                                            "active afterwards).")
    delete.add_argument("version", help="version id")
    delete.add_argument("--force", action="store_true", help="delete even the active, working version")
    delete.set_defaults(handler=_delete)


def _list(args: argparse.Namespace) -> dict:
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    active = registry.get_active()
    active_problem = registry.active_problem()
    damaged = [{"version": version, "problem": problem} for version, problem in registry.damaged()]
    versions = [{
        "version": card.version, "dataset": card.dataset, "arch": card.model_config.arch,
        "num_classes": card.model_config.num_classes, "image_size": card.model_config.image_size,
        "val_accuracy": card.metrics.get("val_accuracy"), "strategy": card.strategy, "parent": card.parent,
        "created": card.created, "active": card.version == active,
    } for card in registry.list()]
    if not args.json:
        for row in versions:
            accuracy = row["val_accuracy"]
            shown = f"{accuracy:.1%}" if isinstance(accuracy, (int, float)) else "-"
            print(f"{'*' if row['active'] else ' '} {row['version']}  {row['arch']}  {row['dataset']}  "
                  f"{shown}  {row['strategy'] or 'trained'}")
        for row in damaged:
            mark = "*" if active_problem and active_problem[0] == row["version"] else " "
            print(f"{mark} {row['version']}  DAMAGED: {row['problem']}")
    result = {"root": str(registry.root), "active": active, "count": len(versions), "damaged": damaged,
              **({"versions": versions} if args.json else {})}
    if active_problem:
        result["active_problem"] = str(registry.damaged_active_error(*active_problem))
    return result


def _import(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.importing import import_checkpoint
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    card = import_checkpoint(args.weights, arch=args.arch, dataset=args.dataset, image_size=args.image_size,
                             class_names=args.classes, reset_head=args.reset_head, mean=args.mean,
                             std=args.std, entry=args.key, registry=registry, device=args.device,
                             progress=stderr_progress)
    activated = False
    if args.activate or not registry.active_is_set():  # a damaged active version is never replaced silently
        registry.set_active(card.version)
        activated = True
    source = card.recipe["import"]
    return {
        "version": card.version, "dataset": card.dataset, "arch": card.model_config.arch,
        "num_classes": card.model_config.num_classes, "image_size": card.model_config.image_size,
        "mean": list(card.model_config.mean), "std": list(card.model_config.std),
        "class_names": None if card.class_names is None else list(card.class_names),
        "source": source["file"], "sha256": source["sha256"], "head": source["head"],
        "val_accuracy": card.metrics["val_accuracy"], "val_n": card.metrics["val_n"],
        "seconds": card.metrics["import_seconds"], "active": activated, "notes": card.notes,
    }


def _export(args: argparse.Namespace) -> dict:
    from zeal_core.models.export import export_version, list_export_formats

    return export_version(args.version, args.out, args.format or list_export_formats()[0], name=args.name)


def _activate(args: argparse.Namespace) -> dict:
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    version = registry.resolve(args.version) if args.version == "latest" else args.version
    registry.set_active(version)
    return {"active": version, "root": str(registry.root)}


def _delete(args: argparse.Namespace) -> dict:
    from zeal_core.errors import ModelError
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    if registry.get_active() == args.version and not args.force:
        raise ModelError(f"{args.version} is the active version and it works: make another version active "
                         "first (`zeal models activate VERSION`), or add --force")
    registry.delete(args.version)
    return {"deleted": args.version, "active": registry.get_active(), "root": str(registry.root)}
