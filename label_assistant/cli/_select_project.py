"""``label-assistant select --project ID --workdir W``: rank a Label Studio project's unlabeled
tasks and write the ranking back (the project form of ``select``; see :mod:`.select`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from label_assistant.cli.common import CliError, write_json


def _settings(args: argparse.Namespace) -> Any:
    from label_assistant.ml_backend.settings import Settings, SettingsError

    overrides: dict[str, Any] = {"workdir": args.workdir}
    if args.device:
        overrides["device"] = args.device
    try:
        settings = Settings.from_env(**overrides)
    except (SettingsError, ValueError) as error:
        raise CliError(str(error)) from None
    return settings


def _origin(args: argparse.Namespace, settings: Any, row: dict[str, Any]) -> tuple[str, str]:
    url = args.label_studio_url or os.environ.get("LABEL_STUDIO_URL") or row.get("hostname")
    key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY") or row.get("token")
    if not url or not key:
        raise CliError("no Label Studio address and token: pass --label-studio-url and "
                       "--api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
    return str(url).rstrip("/"), str(key)


def run_project(args: argparse.Namespace) -> int:
    from label_assistant.cli.select import _check_args, _print_table
    from label_assistant.labelstudio.client import LabelStudioClient, LabelStudioError
    from label_assistant.ml_backend.ranking import (
        RankingError,
        effective_strategy,
        load_ranking_model,
        rank_tasks,
    )
    from label_assistant.ml_backend.store import Store
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
    _check_args(args)
    settings = _settings(args)
    strategy = args.strategy or settings.strategy
    store = Store.for_workdir(settings.workdir) if settings.workdir.is_dir() else None
    row = (store.get_project(str(project)) if store else None) or {}
    url, key = _origin(args, settings, row)
    try:
        client = LabelStudioClient(url, key)
        label_config = client.get_project(project)["label_config"]
        model = load_ranking_model(settings, project, "current")
        used = effective_strategy(strategy, model is not None)
        source = f"model {model.version}" if model else "no model yet"
        unlabeled = client.list_unlabeled_tasks(project)
        ids = {int(t["id"]) for t in unlabeled}
        labeled = [t for t in client.list_tasks(project) if int(t["id"]) not in ids]
        print(f"ranking {len(unlabeled)} unlabeled tasks of project {project} by {used} "
              f"({source})", file=sys.stderr)
        ranking = rank_tasks(settings, project, model.version if model else None, unlabeled,
                             labeled_tasks=labeled, label_config=label_config, hostname=url,
                             token=key, model=model, strategy=strategy, seed=args.seed,
                             store=store)
        if args.budget is not None:
            ranking = ranking[: args.budget]
        if not args.dry_run:
            view = client.write_ranking(project, ranking)
            print(f"wrote la_rank for {len(ranking)} tasks; Data Manager tab "
                  f"\"Next to label\" (id {view})", file=sys.stderr)
    except (LabelStudioError, RankingError, StrategyError) as error:
        raise CliError(str(error)) from None
    rows = [{"rank": r, "task": t, "score": s, "reason": why} for t, r, s, why in ranking]
    if args.json:
        write_json({"project": project, "strategy": used,
                    "model_version": model.version if model else None,
                    "written": not args.dry_run, "items": rows}, args.json)
    else:
        table = [{"rank": r["rank"], "name": f"task {r['task']}", "sequence": None,
                  "score": r["score"], "components": {}, "reason": r["reason"]} for r in rows]
        _print_table(table, f"{len(rows)} tasks of project {project} by {used} ({source})"
                     + ("; dry run, nothing written" if args.dry_run else ""))
    return 0
