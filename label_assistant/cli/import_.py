"""``label-assistant import``: microscopy files (TIFF stacks, 16-bit, multi-channel, PNG,
JPEG) into a Label Studio project, one task per plane (:mod:`label_assistant.microscopy`).

Exit status: 0 = every file imported (or already there), 1 = some files or planes could not
be read (reported, skipped; the rest is imported), 2 = bad input (paths, options, Label
Studio unreachable or refusing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from label_assistant.cli.common import IMAGE_SUFFIXES, CliError, add_json, progress, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="import microscopy files (TIFF stacks, 16-bit, multi-channel) into Label Studio",
        description="Import PNG, JPEG and TIFF files (8/16/32-bit, float, 1-4 channels, "
        "multi-page stacks with OME or ImageJ axes) into a Label Studio project: each plane "
        "becomes a task with a display PNG (percentile-normalized as the model sees it), its "
        "'sequence' (the stack) and 'frame' (its index), while the original plane is kept in "
        "the backend's work directory (W/originals), where the backend trains and predicts "
        "on it. Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY. Rerunning adds nothing "
        "twice and continues an interrupted import. Exit 0 = all imported, 1 = some files "
        "or planes unreadable (skipped), 2 = bad input.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files, or folders (their " + ", ".join(IMAGE_SUFFIXES) + " files)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", type=int, default=None, metavar="ID",
                        help="an existing project")
    target.add_argument("--new-project", default=None, metavar="TITLE",
                        help="create a project with this title (or reuse the one with that "
                        "title: a rerun does not make a second)")
    config = p.add_mutually_exclusive_group()
    config.add_argument("--classes", default=None, metavar="NAMES",
                        help="comma-separated classes, e.g. Nucleus,Cell: the label config "
                        "gets Background plus these, the warnings header and the "
                        "partial-labelling hint (set on the project)")
    config.add_argument("--label-config", default=None, metavar="FILE",
                        help="a label config XML file to set on the project instead")
    channels = p.add_mutually_exclusive_group()
    channels.add_argument("--channel", type=int, default=None, metavar="C",
                          help="label channel C (0-based) alone, in grey")
    channels.add_argument("--channels", default=None, metavar="R,G,B",
                          help="a colour composite of these channels (2 or 3, 0-based); "
                          "default: 1 channel grey, 2 as red+green, 3 as RGB, 4: the first 3")
    p.add_argument("--split-axis", choices=("t", "z"), default=None,
                   help="the axis whose index is a task's frame when a stack has both t "
                   "and z (default t); the other axis' levels are separate sequences")
    p.add_argument("--workdir", default=os.environ.get("LA_WORKDIR", "./work"),
                   help="the backend's work directory: the originals go to W/originals "
                   "(default: $LA_WORKDIR or ./work)")
    p.add_argument("--connect-backend", default=None, metavar="URL",
                   help="connect the label-assistant backend at URL to the project "
                   "(with LA_BASIC_AUTH_USER / LA_BASIC_AUTH_PASS when set)")
    add_json(p, "the import report")
    p.set_defaults(run=run)


def input_files(paths: list[str]) -> list[Path]:
    """The files to import, in order: files as given, folders' image files sorted."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"folder {raw!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            raise CliError(f"{raw!r} does not exist")
    return list(dict.fromkeys(files))


def _channel_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--channels {text!r}: give 2 or 3 channel numbers, like 0,1,2") from None
    if not 2 <= len(values) <= 3 or min(values) < 0:
        raise CliError(f"--channels {text!r}: give 2 or 3 channel numbers (0-based)")
    return values


def _label_config(args: argparse.Namespace) -> str | None:
    from label_assistant.labelstudio.config import (
        LabelConfigError,
        brush_label_config,
        parse_label_config,
    )

    try:
        if args.label_config:
            try:
                xml = Path(args.label_config).read_text()
            except OSError as error:
                raise CliError(f"--label-config {args.label_config!r}: "
                               f"{error.strerror or error}") from None
            parse_label_config(xml)
            return xml
        if args.classes is not None:
            return brush_label_config([c.strip() for c in args.classes.split(",")])
    except LabelConfigError as error:
        raise CliError(str(error)) from None
    return None


def _project(client: Any, args: argparse.Namespace, xml: str | None) -> int:
    from label_assistant.labelstudio.config import LabelConfigError, parse_label_config

    if args.new_project is not None:
        if len(args.new_project.strip()) < 3:
            raise CliError("--new-project: a title needs at least 3 characters")
        found = client.find_projects(args.new_project)
        if found:
            project = int(found[0]["id"])
        else:
            if xml is None:
                raise CliError("a new project needs --classes or --label-config")
            return client.create_project(args.new_project, xml,
                                         description="Imported by label-assistant import")
    else:
        project = int(args.project)
    current = client.get_project(project).get("label_config") or ""
    if xml is not None and current != xml:
        client.update_project(project, label_config=xml)
        current = xml
    try:
        parse_label_config(current)
    except LabelConfigError as error:
        raise CliError(f"project {project}: {error} (set one with --classes or "
                       "--label-config)") from None
    return project


def run(args: argparse.Namespace) -> int:
    from label_assistant.labelstudio.client import LabelStudioClient, LabelStudioError
    from label_assistant.labelstudio.config import parse_label_config
    from label_assistant.microscopy.importer import import_files
    from label_assistant.workspace import Workspace

    files = input_files(args.paths)
    channel_list = _channel_list(args.channels)
    if args.channel is not None and args.channel < 0:
        raise CliError("--channel must be 0 or more")
    xml = _label_config(args)
    try:
        client = LabelStudioClient.from_env()
        project = _project(client, args, xml)
        config = parse_label_config(client.get_project(project)["label_config"])
        report = import_files(
            client, project, files, Workspace(Path(args.workdir).resolve()),
            image_field=config.data_key, split_axis=args.split_axis, channel=args.channel,
            channels=channel_list,
            progress=lambda items, total: progress(items, "import", total))
        if args.connect_backend:
            user = os.environ.get("LA_BASIC_AUTH_USER")
            password = os.environ.get("LA_BASIC_AUTH_PASS")
            client.connect_backend(project, args.connect_backend,
                                   basic_auth=(user, password) if user and password else None)
    except LabelStudioError as error:
        raise CliError(str(error)) from None
    if args.json is not None:
        write_json(report.as_dict(), args.json)
    else:
        print(f"project {project}: {report.created} tasks created, {report.already} planes "
              f"already imported, {len(report.failed)} unreadable; {report.planes} planes in "
              f"{report.files} files, {report.seconds:.1f} s; originals in "
              f"{Path(args.workdir).resolve() / 'originals'}")
    for failure in report.failed:
        plane = f" {failure['plane']}" if failure["plane"] else ""
        print(f"skipped {failure['file']}{plane}: {failure['error']}", file=sys.stderr)
    return 1 if report.failed else 0
