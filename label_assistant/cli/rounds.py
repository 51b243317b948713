"""``label-assistant rounds``: the history of training rounds (model versions)."""

from __future__ import annotations

import argparse

from label_assistant.cli.common import CliError, add_json, add_workdir, existing_dir, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rounds",
        help="list model versions with their data and metrics; roll back",
        description="List the training rounds of a work directory, oldest first: per version "
        "its time (UTC), parent, annotations admitted (the ones it trained on) and "
        "quarantined (held out by the gate by then; '-' without the backend's store), images, "
        "labeled pixels (training + validation images), validation Dice, epochs, training "
        "time and status, with labeled pixels, Dice and IoU per class on the lines below. "
        "With --project on the backend's work directory, jobs that failed or still run "
        "are listed too. --rollback makes an earlier version current again.",
    )
    add_workdir(p, required=True)
    add_json(p, "the history")
    p.add_argument("--rollback", nargs="?", const="parent", default=None, metavar="VERSION",
                   help="make VERSION current (default: the parent of the current version)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.model.registry import RegistryError
    from label_assistant.reporting.rounds import empty_message, gather, text_table
    from label_assistant.workspace import Workspace

    existing_dir(args.workdir, "work directory")
    if args.rollback:
        registry = Workspace(args.workdir).registry(args.project)
        try:
            info = registry.rollback(None if args.rollback == "parent" else args.rollback)
        except RegistryError as error:
            raise CliError(str(error)) from None
        print(f"current version is now {info.id}")
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
