"""``label-assistant rounds``: the history of training rounds (model versions)."""

from __future__ import annotations

import argparse

from label_assistant.cli.common import CliError, existing_dir, write_json


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
    p.add_argument("--workdir", required=True, help="work directory (train's or the service's)")
    p.add_argument("--project", default=None, help="Label Studio project id (service work dir)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="machine-readable output (to FILE or stdout)")
    p.add_argument("--rollback", nargs="?", const="parent", default=None, metavar="VERSION",
                   help="make VERSION current (default: the parent of the current version)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.model.registry import ModelRegistry, RegistryError
    from label_assistant.rounds import empty_message, gather, text_table
    from label_assistant.workdir import models_dir

    existing_dir(args.workdir, "work directory")
    if args.rollback:
        registry = ModelRegistry(models_dir(args.workdir, args.project))
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
