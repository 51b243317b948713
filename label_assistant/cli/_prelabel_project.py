"""``label-assistant prelabel --project ID --workdir W``: pre-label every unlabeled task of a
Label Studio project with the project's serving version and write the pre-labels into Label
Studio as predictions, in batches (the backend's own pre-labeling job,
:func:`label_assistant.ml_backend.project_prelabels.prelabel_project`; see :mod:`.prelabel`).

Its checkpoint lives in ``W/projects/<ID>/jobs/prelabel-cli/``: interrupted, the same
command continues after the last batch done. Label Studio's address and token are resolved
as the backend resolves them (:func:`label_assistant.ml_backend.origin.project_origin`):
``--label-studio-url`` / ``--api-key``, else what the project's ``/setup`` sent, else
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``.
"""

from __future__ import annotations

import argparse
import time

from label_assistant.cli.common import CliError, project_settings_and_origin, write_json


def run_project(args: argparse.Namespace) -> int:
    from label_assistant.labelstudio.client import LabelStudioClient, LabelStudioError
    from label_assistant.ml_backend.project_prelabels import (
        LABEL_STUDIO_TIMEOUT,
        Checkpoint,
        PrelabelError,
        prelabel_project,
        progress_fields,
    )

    if args.project is None:
        raise CliError("give IMAGES (a folder or an image) with --out, or --project ID (a "
                       "Label Studio project) with --workdir")
    if args.workdir is None:
        raise CliError("--project needs --workdir (the backend's work directory, whose "
                       "serving version pre-labels)")
    try:
        project = int(str(args.project))
    except ValueError:
        raise CliError(f"--project must be a Label Studio project number, got "
                       f"{args.project!r}") from None
    if args.model is not None:
        raise CliError("--model is for IMAGES; --project pre-labels with the project's serving "
                       "version in --workdir")
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    settings, origin = project_settings_and_origin(args, project)
    job_dir = settings.workspace.command_job_dir(project, "prelabel", resumable=True)
    started = time.monotonic()

    try:
        client = LabelStudioClient(origin.url, origin.token, timeout=LABEL_STUDIO_TIMEOUT)
        outcome = prelabel_project(settings, project, client, origin, job_dir,
                                   batch=args.batch)  # it logs each batch
    except LabelStudioError as error:
        point = Checkpoint.read(job_dir)
        resume = (f" ({point.done} of {point.total} tasks done; the same command continues "
                  f"from there)" if point and point.done and not point.finished else "")
        raise CliError(f"Label Studio at {origin.url}: {error}{resume}") from None
    except PrelabelError as error:
        raise CliError(str(error)) from None
    state = outcome.checkpoint
    summary = {"project": project, "model_version": outcome.version,
               "seconds": round(time.monotonic() - started, 3), "job_dir": str(job_dir),
               **progress_fields(state), "errors": outcome.errors}
    if args.json is not None:
        write_json(summary, args.json)
    if args.json != "-":
        print(f"project {project}: {state.done} of {state.total} unlabeled tasks pre-labeled "
              f"with {outcome.version} ({state.written} written, {state.skipped} had it, "
              f"{state.failed} failed, {state.deleted} stale deleted)"
              + (f"; stopped: {state.superseded_by} serves now" if outcome.superseded else ""))
    return 1 if state.failed else 0
