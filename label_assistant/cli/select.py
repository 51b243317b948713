"""``label-assistant select``: rank a folder of unlabeled images, best to label first.

With ``--workdir`` the current model version there (``W/models``, or the project's with
``--project``) predicts every image for the uncertainty scores and embeds it for diversity;
without a model only the model-free strategies run (image descriptors for diversity).

Label Studio project form (no POOL): ``select --project ID --workdir W`` ranks the project's
unlabeled tasks with the project's current version in W (the backend's work directory;
model-free strategies before any model) and writes the ranking back (``la_rank`` and the
"Next to label" tab) through :func:`label_assistant.ml_backend.ranking.rank_project`, the
backend's own ranking; ``--dry-run`` only prints it. Label Studio's address and token:
``--label-studio-url`` / ``--api-key``, else what the project's ``/setup`` sent to the backend,
else ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (resolved as the backend resolves them,
:func:`label_assistant.ml_backend.origin.project_origin`).

``--dask tcp://scheduler:8786`` (both forms; for a project also ``LA_DASK_SCHEDULER``) scores
the images on a Dask cluster (:mod:`label_assistant.model.dask_pool`): each worker loads the
version once and scores its partitions, this process merges and ranks; the same ranking as
without it. Dask is imported only then.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from label_assistant.cli.common import (
    CliError,
    add_device,
    add_json,
    add_workdir,
    image_files,
    progress,
    progress_bar,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "select",
        help="rank unlabeled images: which to label next",
        description="Rank the images of POOL by a selection strategy (uncertainty, diversity, "
        "one per sequence, or the random/sequential baselines; parts joined by '+', e.g. "
        "sequence+entropy) and print the best BUDGET with their scores and the reason. Uses "
        "the current model version of --workdir when one exists; without a model only "
        "strategies without a score part run.",
    )
    p.add_argument("pool", nargs="?", default=None,
                   help="folder of unlabeled images (PNG, JPEG, TIFF); leave out with --project "
                   "to rank a Label Studio project's unlabeled tasks")
    p.add_argument("--budget", type=int, default=None,
                   help="how many images to list (default: the whole pool)")
    p.add_argument("--strategy", default=None,
                   help="e.g. random, sequential, sequence, entropy, sequence+entropy, "
                   "entropy+diversity, sequence+bald+diversity (default: sequence for a "
                   "folder; LA_STRATEGY or sequence+entropy for a project, whose score part "
                   "is left out before any model)")
    add_workdir(p, help="work directory whose current model version scores the images; "
                "with --project and without POOL, that project's unlabeled tasks in Label "
                "Studio are ranked")
    p.add_argument("--label-studio-url", default=None,
                   help="project form: Label Studio's address (default: the one the project's "
                   "/setup sent, else LABEL_STUDIO_URL)")
    p.add_argument("--api-key", default=None,
                   help="project form: Label Studio token (default: the one that came with the "
                   "address, from /setup or LABEL_STUDIO_API_KEY)")
    p.add_argument("--dry-run", action="store_true",
                   help="project form: print the ranking, don't write it to Label Studio")
    p.add_argument("--sequence-regex", default=None, metavar="R",
                   help="sequence id from file names: named group 'seq', else group 1, else "
                   "the match (no match: the image is its own sequence)")
    p.add_argument("--tta", action="store_true",
                   help="flip test-time augmentation (needed by variance and bald)")
    p.add_argument("--mc-samples", type=int, default=0, metavar="S",
                   help="Monte-Carlo dropout passes (needed by variance and bald without --tta)")
    add_device(p)
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="score the pool on a Dask cluster (e.g. tcp://scheduler:8786): each "
                   "worker loads the model version once and scores its share; the workers "
                   "read the images and W/models by the same paths (a shared filesystem); "
                   "the ranking is the one of a run without --dask (project form: default "
                   "LA_DASK_SCHEDULER; --device applies on the workers, whose default is "
                   "their own GPU when they have one)")
    p.add_argument("--seed", type=int, default=0, help="tie-break and random order seed")
    add_json(p, "the ranking, instead of the table,")
    p.set_defaults(run=run)


def _check_args(args: argparse.Namespace) -> None:
    from label_assistant.selectors import StrategyError, parse_strategy
    from label_assistant.selectors.sequences import SequencePatternError, compile_pattern

    if args.budget is not None and args.budget < 1:
        raise CliError(f"--budget must be >= 1, got {args.budget}")
    if args.mc_samples < 0:
        raise CliError(f"--mc-samples must be >= 0, got {args.mc_samples}")
    if args.project is not None and args.workdir is None:
        raise CliError("--project needs --workdir (where the project's models are)")
    if args.dask is not None:
        from label_assistant.ml_backend.settings import dask_address

        try:
            args.dask = dask_address(args.dask)
        except ValueError as error:
            raise CliError(f"--dask {error}") from None
    try:
        parse_strategy(args.strategy or "sequence")
        if args.sequence_regex is not None:
            compile_pattern(args.sequence_regex)
    except (StrategyError, SequencePatternError) as error:
        raise CliError(str(error)) from None


def _load_predictor(args: argparse.Namespace) -> Any:
    """The current model version of ``--workdir``, or None when there is none."""
    if args.workdir is None:
        return None
    from label_assistant.model.predictor import Predictor
    from label_assistant.model.registry import RegistryError
    from label_assistant.workspace import Workspace

    registry = Workspace(args.workdir).registry(args.project)
    if registry.current_id() is None:
        return None
    try:
        return Predictor.from_registry(registry, "current", device=args.device)
    except (RegistryError, ValueError, OSError) as error:
        raise CliError(f"can't load the current model of {registry.root}: {error}") from None


def _read(paths: list[Path], predictor: Any) -> Iterator[tuple[str, Any]]:
    """``(name, model input)`` per file, read one at a time."""
    from label_assistant.images import normalize_for_model, read_image

    for path in progress(paths, "scoring", total=len(paths)):
        image = read_image(path)
        yield path.name, (predictor.model_input(image) if predictor is not None
                          else normalize_for_model(image))


def _dask_pool(args: argparse.Namespace, images: list[Path], predictor: Any,
               sequences: list[str]) -> Any:
    """The pool scored on the Dask cluster at ``--dask`` (:mod:`label_assistant.model.dask_pool`,
    imported only here); the same numbers as :func:`pool_from_images` computes here."""
    from label_assistant.images import read_image
    from label_assistant.model.dask_pool import DaskError, VersionRef, connect, score_pool
    from label_assistant.selectors.pool import plan, pool_from_numbers
    from label_assistant.workspace import Workspace

    work = plan(args.strategy, has_model=True, tta=args.tta, mc_samples=args.mc_samples)
    registry = Workspace(args.workdir).registry(args.project)
    ref = VersionRef(str(registry.root.resolve()), predictor.version, device=args.device,
                     tta=args.tta, mc_samples=args.mc_samples)
    paths = [str(path.resolve()) for path in images]
    try:
        client = connect(args.dask)
        try:
            workers = len(client.nthreads())
            print(f"scoring on Dask at {args.dask} ({workers} workers)", file=sys.stderr)
            bar = progress_bar("scoring", total=len(paths))
            numbers = score_pool(client, paths, read_image, ref, work, on_partition=bar.update)
            bar.close()
        finally:
            client.close()
    except DaskError as error:
        raise CliError(str(error)) from None
    failed = [(path, n) for path, n in zip(images, numbers, strict=True) if isinstance(n, str)]
    if failed:
        raise CliError(f"{failed[0][0]}: {failed[0][1]}")
    return pool_from_numbers([p.name for p in images], numbers, sequences=sequences)


def run(args: argparse.Namespace) -> int:
    if args.pool is None:
        from label_assistant.cli._select_project import run_project

        return run_project(args, _check_args, _print_table)
    if args.strategy is None:
        args.strategy = "sequence"
    from functools import partial

    from label_assistant.images import ImageError
    from label_assistant.model.inference import InferenceError
    from label_assistant.selectors import StrategyError, rank
    from label_assistant.selectors.pool import PoolError, check_strategy, pool_from_images
    from label_assistant.selectors.sequences import sequence_ids

    _check_args(args)
    images = image_files(args.pool, "pool folder")
    predictor = _load_predictor(args)
    version = predictor.version if predictor is not None else None
    source = f"model {version}" if version else "no model, image descriptors"
    try:
        check_strategy(args.strategy, has_model=predictor is not None, tta=args.tta,
                       mc_samples=args.mc_samples)
        print(f"scoring {len(images)} images with {source}", file=sys.stderr)
        sequences = sequence_ids([p.name for p in images], regex=args.sequence_regex)
        if args.dask is not None and predictor is not None:
            pool = _dask_pool(args, images, predictor, sequences)
        else:
            if args.dask is not None:
                print("no model version: the image descriptors are computed here, not on Dask",
                      file=sys.stderr)
            callables = {} if predictor is None else {
                "predict": partial(predictor.predict, tta=args.tta, mc_samples=args.mc_samples),
                "embed": predictor.embed}
            pool = pool_from_images(_read(images, predictor), strategy=args.strategy,
                                    tta=args.tta, mc_samples=args.mc_samples,
                                    sequences=sequences, **callables)
        items = rank(pool, args.strategy, args.budget, seed=args.seed)
    except PoolError as error:
        hint = "" if version or args.workdir is None else f" (no model version in {args.workdir})"
        raise CliError(f"{error}{hint}") from None
    except (StrategyError, ImageError, InferenceError) as error:
        raise CliError(str(error)) from None
    rows = [_row(rank_, item) for rank_, item in enumerate(items, start=1)]
    if args.json:
        write_json({"strategy": args.strategy, "model_version": version, "pool": pool.n,
                    "budget": args.budget, "items": rows}, args.json)
    else:
        _print_table(rows, f"{len(rows)} of {pool.n} images by {args.strategy} ({source})")
    return 0


def _row(rank_: int, item: Any) -> dict[str, Any]:
    from label_assistant.selectors.sequences import is_own_sequence

    return {
        "rank": rank_,
        "name": item.name,
        "sequence": None if is_own_sequence(item.sequence) else item.sequence,
        "score": item.score,
        "components": item.components,
        "reason": item.reason,
    }


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(title)
    cells = [
        [str(r["rank"]), r["name"], r["sequence"] or "-", f"{r['score']:.4g}",
         " ".join(f"{k}={v:.3g}" for k, v in r["components"].items()) or "-", r["reason"]]
        for r in rows
    ]
    header = ["rank", "name", "sequence", "score", "components", "reason"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
