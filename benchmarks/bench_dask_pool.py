"""Pool scoring on Dask: images/s in one process and on 1 and 2 local Dask workers, and the
whole ranking of a large pool from stored scores and embeddings.

    PYTHONPATH=. nice -n 15 .venv/bin/python benchmarks/bench_dask_pool.py \
        [--images 64] [--side 256] [--workers 1 2] [--pool 100000] [--dim 512]

Scoring: ``--images`` PNGs of ``--side``^2 and an untrained (seeded) version of the default
model (Unet/resnet18) in a fresh work directory; what is timed is what ``select`` does: read,
model input, predict, the image scores and the embedding
(:func:`label_assistant.selectors.pool.score_image`), in this process, then with
:func:`label_assistant.model.dask_pool.score_pool` on a ``distributed.LocalCluster`` of N
worker processes (1 thread each) on 127.0.0.1. "cold" includes each worker loading the version
(once), "warm" is a second pool on the same workers. Cluster start-up is not counted. CPU
seconds per image (this process, or the workers' processes) are given next to the wall clock:
on a shared machine they are the steadier per-image cost.

Ranking: a generated pool (random scores and ``--dim`` embeddings, 1% labeled, one sequence
per 100 images), ranked whole by ``rank`` for each strategy, as the backend ranks after
scoring. Writes benchmarks/results/bench_dask_pool.json and prints two tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, print_table, write_results  # noqa: E402

RANKED = ("sequence+entropy", "entropy+diversity", "sequence+entropy+diversity")
STRATEGY = "sequence+entropy+diversity"  # scores and embeddings: the most per-image work


def _images(folder: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        image = rng.normal(60, 12, (side, side))
        for _ in range(6):
            y, x = rng.integers(8, side - 24, 2)
            image[y:y + 16, x:x + 16] += 120
        path = folder / f"seq{i // 4:03d}_t{i % 4}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _publish(workdir: Path) -> Path:
    import torch

    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.workspace import Workspace

    torch.manual_seed(0)
    spec = ModelSpec(classes=("Background", "Cell"))
    registry = Workspace(workdir).registry(None)
    registry.publish(create_model(spec).state_dict(), spec=spec.to_dict(),
                     class_names=list(spec.classes), label_config_hash=None, manifest={},
                     metrics={}, curve=[], config={}, parent=None)
    return registry.root


def bench_scoring(n: int, side: int, workers: list[int]) -> list[dict]:
    import torch

    from label_assistant.images import read_image
    from label_assistant.model.predictor import Predictor
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.selectors.pool import plan, score_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _images(Path(tmp), n, side)
        root = _publish(Path(tmp) / "work")
        work = plan(STRATEGY, has_model=True)

        start = time.perf_counter()
        predictor = Predictor.from_registry(ModelRegistry(root), "current", device="cpu")
        load_s = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        local = [score_image(predictor.model_input(read_image(p)), work,
                             predict=predictor.predict, embed=predictor.embed) for p in paths]
        score_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        rows.append({"executor": "one process", "workers": 1,
                     "threads": torch.get_num_threads(), "images": n, "side": side,
                     "load_s": load_s, "cold_s": load_s + score_s, "warm_s": score_s,
                     "images_per_s": n / score_s, "s_per_image": score_s / n,
                     "cpu_s_per_image": cpu_s / n})
        print(f"  one process: {rows[-1]['images_per_s']:.2f} images/s", flush=True)

        import distributed

        from label_assistant.model.dask_pool import VersionRef, score_pool

        ref = VersionRef(str(root), predictor.version, device="cpu")
        refs = [str(p) for p in paths]
        for k in workers:
            with distributed.LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                                          host="127.0.0.1", dashboard_address=None,
                                          worker_dashboard_address=None) as cluster, \
                    distributed.Client(cluster, set_as_default=False) as client:
                start = time.perf_counter()
                cold = score_pool(client, refs, read_image, ref, work)
                cold_s = time.perf_counter() - start
                cpu = sum(client.run(time.process_time).values())
                start = time.perf_counter()
                score_pool(client, refs, read_image, ref, work)
                warm_s = time.perf_counter() - start
                cpu_s = sum(client.run(time.process_time).values()) - cpu
            worst = max(abs(a.scores["entropy"] - b.scores["entropy"])
                        for a, b in zip(local, cold, strict=True))
            rows.append({"executor": "dask LocalCluster", "workers": k, "threads": 1,
                         "images": n, "side": side, "cold_s": cold_s, "warm_s": warm_s,
                         "images_per_s": n / warm_s, "s_per_image": warm_s / n,
                         "cpu_s_per_image": cpu_s / n, "max_entropy_difference": worst})
            print(f"  dask, {k} worker(s): {n / warm_s:.2f} images/s warm, "
                  f"{n / cold_s:.2f} cold", flush=True)
    return rows


def bench_ranking(n: int, dim: int, strategies: tuple[str, ...]) -> list[dict]:
    from label_assistant.selectors.strategies import Pool, rank

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    pool = Pool(names=[f"img_{i:06d}.png" for i in range(n)],
                sequences=[f"seq_{i}" for i in rng.integers(0, max(1, n // 100), size=n)],
                scores={"entropy": rng.random(n)},
                embeddings=rng.standard_normal((n, dim)).astype(np.float32),
                labeled=rng.choice(n, size=n // 100, replace=False))
    print(f"  pool of {n} built in {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    for strategy in strategies:
        start, cpu = time.perf_counter(), time.process_time()
        items = rank(pool, strategy)
        whole_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        rows.append({"strategy": strategy, "pool": n, "dim": dim, "ranked": len(items),
                     "whole_pool_s": whole_s, "cpu_s": cpu_s})
        print(f"  {strategy}: whole pool {whole_s:.1f} s ({cpu_s:.1f} s CPU)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--strategies", nargs="+", default=list(RANKED))
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_dask_pool.json")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} (shared machine)")
    scoring = [] if args.skip_scoring else bench_scoring(args.images, args.side, args.workers)
    ranking = bench_ranking(args.pool, args.dim, tuple(args.strategies))
    path = write_results("bench_dask_pool", [*scoring, *ranking], {
        "cpus": os.cpu_count(), "load_average": load, "scoring": scoring, "ranking": ranking,
        "note": "2 CPU cores shared with other users: workers compete for the same cores"},
        out=args.out)
    if scoring:
        print()
        print_table(scoring, ["executor", "workers", "threads", "images", "side", "cold_s",
                              "warm_s", "images_per_s", "s_per_image", "cpu_s_per_image"])
    print()
    print_table(ranking, ["strategy", "pool", "dim", "whole_pool_s", "cpu_s"])
    print(f"\nmedian whole-pool ranking {statistics.median(r['whole_pool_s'] for r in ranking):.1f}"
          f" s; written {path}")


if __name__ == "__main__":
    main()
