"""``label-assistant select --project ID --workdir W``: rank a Label Studio project's unlabeled
tasks and write the ranking back, with the backend's own ranking
(:func:`label_assistant.ml_backend.ranking.rank_project`; see :mod:`.select`). ``--dask`` (or
``LA_DASK_SCHEDULER``) scores the tasks on that Dask cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from label_assistant.cli.common import CliError, project_settings_and_origin, write_json


def run_project(args: argparse.Namespace, check_args: Any, print_table: Any) -> int:
    from label_assistant.labelstudio.client import LabelStudioClient, LabelStudioError
    from label_assistant.ml_backend.ranking import RankingError, rank_project
    from label_assistant.selectors import StrategyError

    if args.project is None:
        raise CliError("give POOL (a folder of images) or --project ID (a Label Studio project)")
    if args.workdir is None:
        raise CliError("--project needs --workdir (the backend's work directory)")
    try:
        project = int(str(args.project))
    except ValueError:
        raise CliError(f"--project must be a Label Studio project number, got "
                       f"{args.project!r}") from None
    check_args(args)
    settings, origin = project_settings_and_origin(
        args, project, **({"dask_scheduler": args.dask} if args.dask else {}))

    def announce(strategy: str, version: str | None, n: int) -> None:
        print(f"ranking {n} unlabeled tasks of project {project} by {strategy} "
              f"({f'model {version}' if version else 'no model yet'})", file=sys.stderr)

    try:
        client = LabelStudioClient(origin.url, origin.token)
        outcome = rank_project(settings, project, client, origin, strategy=args.strategy,
                               seed=args.seed, budget=args.budget, write=not args.dry_run,
                               on_start=announce)
    except (LabelStudioError, RankingError, StrategyError) as error:
        raise CliError(str(error)) from None
    if outcome.view_id is not None:
        print(f"wrote la_rank for {len(outcome.ranking)} tasks; Data Manager tab "
              f"\"Next to label\" (id {outcome.view_id})", file=sys.stderr)
    source = f"model {outcome.version}" if outcome.version else "no model yet"
    rows = [{"rank": r, "task": t, "score": s, "reason": why}
            for t, r, s, why in outcome.ranking]
    if args.json:
        write_json({"project": project, "strategy": outcome.strategy,
                    "model_version": outcome.version, "written": not args.dry_run,
                    "items": rows}, args.json)
    else:
        table = [{"rank": r["rank"], "name": f"task {r['task']}", "sequence": None,
                  "score": r["score"], "components": {}, "reason": r["reason"]} for r in rows]
        print_table(table, f"{len(rows)} tasks of project {project} by {outcome.strategy} "
                    f"({source})" + ("; dry run, nothing written" if args.dry_run else ""))
    return 0
