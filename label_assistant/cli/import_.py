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

from label_assistant.cli.common import (
    IMAGE_SUFFIXES,
    CliError,
    add_json,
    add_plane_options,
    channel_list,
    input_files,
    progress,
    write_json,
)


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
    add_plane_options(p)
    p.add_argument("--workdir", default=os.environ.get("LA_WORKDIR", "./work"),
                   help="the backend's work directory: the originals go to W/originals "
                   "(default: $LA_WORKDIR or ./work)")
    p.add_argument("--local-files", default=None, metavar="DIR",
                   help="for a Label Studio on this machine serving local files: write the "
                   "display PNGs into DIR, under its LOCAL_FILES_DOCUMENT_ROOT, instead of "
                   "uploading them (the project gets a local-files storage of DIR)")
    p.add_argument("--document-root", default=os.environ.get("LOCAL_FILES_DOCUMENT_ROOT"),
                   metavar="ROOT", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: "
                   "that variable)")
    p.add_argument("--connect-backend", default=None, metavar="URL",
                   help="connect the label-assistant backend at URL to the project "
                   "(with LA_BASIC_AUTH_USER / LA_BASIC_AUTH_PASS when set)")
    add_json(p, "the import report")
    p.set_defaults(run=run)


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


def _instructions(xml: str) -> dict[str, Any]:
    """The partial-labeling instructions for a new project with this label config."""
    from label_assistant.labelstudio.config import labeling_instructions, parse_label_config

    config = parse_label_config(xml)
    return labeling_instructions(config.class_names, background_label=config.background_label)


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
            return client.create_project(args.new_project, xml, **_instructions(xml),
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
    from label_assistant.microscopy.importer import LocalDisplays, import_files
    from label_assistant.workspace import Workspace

    files = input_files(args.paths)
    channels_chosen = channel_list(args.channels)
    xml = _label_config(args)
    try:
        client = LabelStudioClient.from_env()
        project = _project(client, args, xml)
        config = parse_label_config(client.get_project(project)["label_config"])
        displays = None
        if args.local_files is not None:
            if not args.document_root:
                raise CliError("--local-files needs --document-root or "
                               "LOCAL_FILES_DOCUMENT_ROOT (Label Studio's)")
            try:
                displays = LocalDisplays(client, project, Path(args.local_files),
                                         Path(args.document_root))
            except (ValueError, OSError) as error:
                raise CliError(f"--local-files: {error}") from None
        report = import_files(
            client, project, files, Workspace(Path(args.workdir).resolve()),
            image_field=config.data_key, split_axis=args.split_axis, channel=args.channel,
            channels=channels_chosen,
            progress=lambda items, total: progress(items, "import", total), displays=displays)
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
