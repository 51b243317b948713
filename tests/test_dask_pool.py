"""Pool scoring on Dask (model.dask_pool): a real ``distributed.LocalCluster`` of 2 worker
processes on 127.0.0.1 gives the same ranking as one process, for ``select --dask`` and for the
backend's ranking with ``LA_DASK_SCHEDULER``; each worker loads the version once; a scheduler
that can't be reached is a one-line error; without the option nothing of Dask is imported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_backend_support import CONFIG, blob_image, data_url, png_bytes

from label_assistant.cli import main
from label_assistant.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["Background", "Cell"]


def _publish(models: Path) -> str:
    """An untrained tiny Unet (seeded) as the current version: real weights to load."""
    import torch

    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.model.registry import ModelRegistry

    torch.manual_seed(0)
    spec = ModelSpec(classes=tuple(CLASSES))
    model = create_model(spec)
    return ModelRegistry(models).publish(
        model.state_dict(), spec=spec.to_dict(), class_names=CLASSES, label_config_hash=None,
        manifest={}, metrics={}, curve=[], config={"inference_tile": 64}, parent=None).id


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A work directory with a version for the command line (W/models) and project 3."""
    workdir = tmp_path_factory.mktemp("dask") / "work"
    _publish(Workspace(workdir).models_dir())
    _publish(Workspace(workdir).models_dir("3"))
    return workdir


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory) -> Path:
    """12 images of 4 sequences (seqA_t0 .. seqD_t2)."""
    folder = tmp_path_factory.mktemp("pool")
    for i in range(12):
        image, _ = blob_image(64, 64, seed=i)
        Image.fromarray(image).save(folder / f"seq{'ABCD'[i // 3]}_t{i % 3}.png")
    return folder


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  worker_dashboard_address=None, env=env) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield cluster, client


def _loads(client) -> dict[str, int]:
    from label_assistant.model.dask_pool import PLUGIN

    return client.run(lambda dask_worker: dask_worker.plugins[PLUGIN].loads)


def _select(argv: list[str], capsys) -> list[dict]:
    assert main(["select", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["items"]


def _same_ranking(local: list[dict], remote: list[dict]) -> None:
    assert [i["name"] for i in remote] == [i["name"] for i in local]
    np.testing.assert_allclose([i["score"] for i in remote], [i["score"] for i in local],
                               rtol=1e-5, atol=1e-7)
    for a, b in zip(local, remote, strict=True):
        assert set(a["components"]) == set(b["components"])
        np.testing.assert_allclose(list(b["components"].values()),
                                   list(a["components"].values()), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_select_on_dask_ranks_as_one_process_and_loads_the_version_once_per_worker(
        cluster, workdir, pool_dir, capsys):
    cluster, client = cluster
    argv = [str(pool_dir), "--workdir", str(workdir), "--device", "cpu", "--seed", "3",
            "--sequence-regex", r"seq(\w)_"]
    strategy = ["--strategy", "sequence+margin+diversity"]  # scores, embeddings, sequences
    local = _select([*argv, *strategy], capsys)
    remote = _select([*argv, *strategy, "--dask", cluster.scheduler_address], capsys)
    assert len(local) == 12 and max(i["score"] for i in local) > 0
    assert {"margin", "round", "distance"} <= set(local[1]["components"])
    _same_ranking(local, remote)
    # 12 images in 8 partitions (4 a worker, unless one steals more): one load a worker
    loads = _loads(client)
    assert len(loads) == 2 and set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1


def _ranking_setup(workdir):
    """The label config, the backend's settings and the serving predictor of project 3."""
    from label_assistant.labelstudio import parse_label_config
    from label_assistant.ml_backend.ranking import serving_predictor
    from label_assistant.ml_backend.settings import Settings

    config = parse_label_config(CONFIG)
    settings = Settings(workdir=workdir, device="cpu", predict_tile=64)
    return config, settings, serving_predictor(settings, 3, config)


@pytest.mark.slow
def test_the_ranking_job_scores_on_dask_with_the_same_result(cluster, workdir):
    from label_assistant.ml_backend.fetch import ImageFetcher
    from label_assistant.ml_backend.ranking import rank_tasks
    from label_assistant.ml_backend.settings import Settings

    cluster, _ = cluster
    config, settings, predictor = _ranking_setup(workdir)
    tasks = [{"id": i, "data": {"image": data_url(png_bytes(blob_image(64, 64, seed=i)[0])),
                                "sequence": "AB"[i % 2]}} for i in range(1, 8)]
    tasks.append({"id": 8, "data": {"image": "data:image/png;base64,AAAA"}})  # unreadable
    labeled = [{"id": 9, "data": {"image": tasks[0]["data"]["image"], "sequence": "A"}}]

    def ranking(settings: Settings) -> list[tuple[int, int, float, str]]:
        return rank_tasks(settings, tasks, config=config, predictor=predictor,
                          fetcher=ImageFetcher.for_origin(settings, None), labeled_tasks=labeled,
                          strategy="sequence+entropy+diversity", seed=1, project="3")

    local = ranking(settings)
    remote = ranking(replace(settings, dask_scheduler=cluster.scheduler_address))
    assert [r[0] for r in remote] == [r[0] for r in local]
    assert [r[3] for r in remote][-1] == local[-1][3] and "ranked last" in local[-1][3]
    np.testing.assert_allclose([r[2] for r in remote], [r[2] for r in local], rtol=1e-5,
                               atol=1e-7)


@pytest.mark.slow
def test_clusters_and_class_balance_on_dask_rank_as_one_process(cluster, workdir):
    # no task has a sequence field: the workers compute the image descriptors to cluster
    from label_assistant.ml_backend.fetch import ImageFetcher
    from label_assistant.ml_backend.ranking import rank_tasks
    from label_assistant.ml_backend.settings import Settings

    cluster, _ = cluster
    config, settings, predictor = _ranking_setup(workdir)
    images = [blob_image(64, 64, seed=i)[0] for i in range(3)]
    images += [np.clip(255 - image, 0, 255).astype(np.uint8) for image in images]
    tasks = [{"id": i + 1, "data": {"image": data_url(png_bytes(image))}}
             for i, image in enumerate(images)]

    def ranking(settings: Settings) -> list[tuple[int, int, float, str]]:
        return rank_tasks(settings, tasks, config=config, predictor=predictor,
                          fetcher=ImageFetcher.for_origin(settings, None),
                          strategy="sequence+class_balance", seed=1, project="3",
                          labeled_counts=[1000, 10])

    local = ranking(settings)
    remote = ranking(replace(settings, dask_scheduler=cluster.scheduler_address))
    assert [r[0] for r in remote] == [r[0] for r in local]
    assert [r[3] for r in remote] == [r[3] for r in local]
    assert local[0][3].startswith("cluster0") and "class_balance" in local[0][3]
    np.testing.assert_allclose([r[2] for r in remote], [r[2] for r in local], rtol=1e-5,
                               atol=1e-7)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "message"),
    [("http://127.0.0.1:8786", "--dask must be a Dask scheduler address"),
     (None, "can't reach the Dask scheduler at tcp://127.0.0.1:")],
)
def test_a_bad_scheduler_is_one_line_and_exit_2(workdir, pool_dir, capsys, address, message):
    dask = pytest.importorskip("dask")
    address = address or f"tcp://127.0.0.1:{_closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["select", str(pool_dir), "--workdir", str(workdir), "--device", "cpu",
                     "--strategy", "entropy", "--dask", address])
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_the_ranking_job_names_an_unreachable_scheduler(workdir):
    dask = pytest.importorskip("dask")
    from label_assistant.labelstudio import parse_label_config
    from label_assistant.ml_backend.fetch import ImageFetcher
    from label_assistant.ml_backend.ranking import RankingError, rank_tasks, serving_predictor
    from label_assistant.ml_backend.settings import Settings

    config = parse_label_config(CONFIG)
    settings = Settings(workdir=workdir, device="cpu",
                        dask_scheduler=f"tcp://127.0.0.1:{_closed_port()}")
    task = {"id": 1, "data": {"image": data_url(png_bytes(blob_image(64, 64)[0]))}}
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(RankingError, match="project 3: can't reach the Dask scheduler"):
        rank_tasks(settings, [task], config=config, project="3",
                   predictor=serving_predictor(settings, 3, config),
                   fetcher=ImageFetcher.for_origin(settings, None))


def test_without_the_option_nothing_of_dask_is_imported(workdir, pool_dir):
    # A fresh interpreter: this one has imported Dask for the other tests.
    code = (
        "import sys\n"
        "from label_assistant.cli import main\n"
        f"assert main(['select', {str(pool_dir)!r}, '--workdir', {str(workdir)!r},"
        " '--device', 'cpu', '--strategy', 'entropy+diversity', '--budget', '2']) == 0\n"
        "from label_assistant.ml_backend import ranking, settings\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print('dask modules:', loaded)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "dask modules: []" in out.stdout
    assert "2 of 12 images by entropy+diversity (model v0001)" in out.stdout
