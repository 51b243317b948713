"""``label-assistant rounds``: the history of training rounds (model versions)."""

from __future__ import annotations

import argparse

from label_assistant.cli.common import CliError, add_json, add_workdir, existing_dir, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rounds",
        help="list model versions: what serves and why, data and metrics; promote, roll back",
        description="List the training rounds of a work directory, oldest first. The first "
        "line says what serves the pre-labels (Otsu before any promoted model) and why. Per "
        "version: its time (UTC), parent (what served when it was trained), annotations "
        "admitted (the ones it trained on) and quarantined (held out by the gate by then; '-' "
        "without the backend's store), images, labeled pixels, its mean validation Dice over "
        "all classes and the champion's on the same pixels, epochs, training time, and "
        "whether it serves, was promoted, or was kept (with the reason); labeled pixels, Dice "
        "and IoU per class on the lines below. With --project on the backend's work "
        "directory, jobs that failed or still run are listed too. --rollback goes back to "
        "what served before (down to Otsu); --promote makes a kept candidate serve.",
    )
    add_workdir(p, required=True)
    add_json(p, "the history")
    change = p.add_mutually_exclusive_group()
    change.add_argument("--rollback", nargs="?", const="parent", default=None,
                        metavar="VERSION",
                        help="make VERSION (or 'otsu') serve; default: what served before the "
                        "current version (its parent, Otsu for a first model)")
    change.add_argument("--promote", default=None, metavar="VERSION",
                        help="make VERSION serve although it did not beat the champion (or "
                        "could not be validated); recorded as forced")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.model.registry import OTSU, RegistryError
    from label_assistant.reporting.rounds import empty_message, gather, text_table
    from label_assistant.workspace import Workspace

    existing_dir(args.workdir, "work directory")
    registry = Workspace(args.workdir).registry(args.project)
    try:
        if args.rollback:
            target = None if args.rollback == "parent" else args.rollback
            info = registry.rollback(OTSU if target and target.lower() == OTSU else target)
            print(f"serving now: {info.id if info else 'Otsu'}")
        elif args.promote:
            info = registry.set_current(args.promote, event="promote",
                                        reason="forced with rounds --promote")
            print(f"serving now: {info.id if info else 'Otsu'} (forced)")
    except RegistryError as error:
        raise CliError(str(error)) from None
    history = gather(args.workdir, args.project)
    if args.json:
        write_json(history, args.json)
        return 0
    if not history["versions"]:
        print(empty_message(history, args.workdir))
        if not history["jobs"]:
            return 0
    print("\n".join(text_table(history)))
    return 0
