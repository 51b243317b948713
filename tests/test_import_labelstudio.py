"""``label-assistant import`` against a real Label Studio 1.23.2: generated 16-bit OME-TIFF and
ImageJ hyperstacks become one task per plane with their sequence and frame, the display PNG is
served by Label Studio, the originals are what the backend reads and ranks, a rerun adds
nothing, an interrupted import continues, an unreadable file is reported and skipped."""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest
import requests
import tifffile
from labelstudio_harness import *  # noqa: F403
from PIL import Image

from label_assistant.cli import main
from label_assistant.labelstudio.config import brush_label_config, parse_label_config
from label_assistant.microscopy.importer import import_files
from label_assistant.microscopy.originals import ORIGINAL_FIELD, SOURCE_FIELD
from label_assistant.ml_backend.fetch import FetchOriginalMissing, ImageFetcher
from label_assistant.ml_backend.ranking import rank_tasks
from label_assistant.ml_backend.settings import Settings
from label_assistant.workspace import Workspace

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

H, W = 40, 48


def make_folder(folder):
    """An OME-TIFF TZCYX (3 x 2 x 2 channels), an ImageJ TYX time-lapse (4 frames), a PNG and
    a file that is not an image; returns the arrays."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    ome = rng.integers(0, 4000, size=(3, 2, 2, H, W), dtype=np.uint16)
    ome[..., 10:20, 10:20] += 20000  # a bright object in every plane
    tifffile.imwrite(folder / "a_ome.ome.tif", ome, ome=True,
                     metadata={"axes": "TZCYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4})
    imagej = rng.integers(0, 60000, size=(4, H, W), dtype=np.uint16)
    tifffile.imwrite(folder / "b_timelapse.tif", imagej, imagej=True,
                     metadata={"axes": "TYX"})
    Image.fromarray(rng.integers(0, 255, size=(H, W), dtype=np.uint8)).save(folder / "c.png")
    (folder / "d_broken.tif").write_bytes(b"II*\x00not a tiff at all")
    return ome, imagej


def test_import_stacks_rerun_and_the_backend_reads_the_originals(labelstudio, tmp_path,
                                                                  monkeypatch, capsys):
    ome, imagej = make_folder(tmp_path / "stacks")
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    work = tmp_path / "work"
    args = ["import", str(tmp_path / "stacks"), "--new-project", "Microscopy stacks",
            "--classes", "Nucleus", "--workdir", str(work)]
    assert main([*args, "--json", str(tmp_path / "first.json")]) == 1  # the broken file
    first = json.loads((tmp_path / "first.json").read_text())
    assert (first["created"], first["already_imported"]) == (6 + 4 + 1, 0)
    assert [f["file"].endswith("d_broken.tif") for f in first["failed"]] == [True]
    assert "d_broken.tif" in capsys.readouterr().err
    project = first["project"]
    client = labelstudio.client
    made = client.get_project(project)
    assert made["label_config"] == brush_label_config(["Nucleus"])
    # The partial-labeling instructions, shown before labeling.
    assert made["show_instruction"] is True and "Nucleus" in made["expert_instruction"]

    tasks = client.list_tasks(project)
    assert len(tasks) == 11
    workspace = Workspace(work)
    by_source = {t["data"][SOURCE_FIELD]: t for t in tasks}
    ome_path = (tmp_path / "stacks" / "a_ome.ome.tif").resolve()
    task = by_source[f"{ome_path} T=2,Z=1"]
    assert (task["data"]["sequence"], task["data"]["frame"]) == (f"{ome_path} Z=1", 2)
    assert workspace.original_file(task["data"][ORIGINAL_FIELD]).is_file()
    png_task = next(t for t in tasks if t["data"][SOURCE_FIELD].endswith("c.png"))
    assert "sequence" not in png_task["data"]  # a single image is its own sequence
    timelapse = [t for t in tasks if "b_timelapse" in t["data"][SOURCE_FIELD]]
    assert sorted(t["data"]["frame"] for t in timelapse) == [0, 1, 2, 3]
    assert len({t["data"]["sequence"] for t in timelapse}) == 1

    # The browser gets an 8-bit PNG from Label Studio ...
    shown = requests.get(labelstudio.url + task["data"]["image"], timeout=10,
                         headers={"Authorization": f"Token {labelstudio.token}"})
    assert shown.status_code == 200
    png = np.asarray(Image.open(io.BytesIO(shown.content)))
    assert png.dtype == np.uint8 and png.shape == (H, W, 3)  # 2 channels: red + green
    assert png[..., 2].max() == 0
    # ... the backend the 16-bit original (2 channels and an empty third).
    config = parse_label_config(client.get_project(project)["label_config"])
    fetcher = ImageFetcher(label_studio_url=labelstudio.url, token=labelstudio.token,
                           workspace=workspace)
    original = fetcher.task_image(task, config).image
    assert original.dtype == np.uint16
    np.testing.assert_array_equal(original[..., :2], np.moveaxis(ome[2, 1], 0, -1))

    # Ranking reads the stacks' sequences (and the originals): one plane per stack first.
    settings = Settings(workdir=work, device="cpu")
    rows = rank_tasks(settings, tasks, config=config, fetcher=fetcher, strategy="sequence")
    first_sequences = [next(t for t in tasks if t["id"] == r[0])["data"].get("sequence", "png")
                       for r in rows[:4]]
    assert len(set(first_sequences)) == 4  # OME Z=0, OME Z=1, the time-lapse, the PNG

    # Rerun (by id now): nothing twice.
    assert main([*args[:2], "--project", str(project), "--workdir", str(work),
                 "--json", str(tmp_path / "again.json")]) == 1
    again = json.loads((tmp_path / "again.json").read_text())
    assert (again["created"], again["already_imported"]) == (0, 11)
    assert len(client.list_tasks(project)) == 11
    # ... and by title: the same project again, not a second one.
    assert main([*args, "--json", str(tmp_path / "third.json")]) == 1
    third = json.loads((tmp_path / "third.json").read_text())
    assert (third["project"], third["created"]) == (project, 0)
    assert [p["id"] for p in client.find_projects("Microscopy stacks")] == [project]

    # An original gone from the work directory: the backend refuses the task, says why.
    workspace.original_file(task["data"][ORIGINAL_FIELD]).unlink()
    with pytest.raises(FetchOriginalMissing, match="a_ome.ome.tif T=2,Z=1"):
        fetcher.task_image(task, config)


class _Interrupted(Exception):
    pass


class _FailingClient:
    """The real client, but the second task import dies (an interrupted run)."""

    def __init__(self, client):
        self.client, self.imports = client, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def import_tasks(self, project, tasks):
        self.imports += 1
        if self.imports == 2:
            raise _Interrupted
        return self.client.import_tasks(project, tasks)


def test_an_interrupted_import_continues(labelstudio, tmp_path):
    make_folder(tmp_path / "stacks")
    files = sorted((tmp_path / "stacks").glob("*.tif"))[:2]  # 6 + 4 planes
    client = labelstudio.client
    project = client.create_project("Interrupted", brush_label_config(["Nucleus"]))
    workspace = Workspace(tmp_path / "work")
    with pytest.raises(_Interrupted):
        import_files(_FailingClient(client), project, files, workspace, batch=4)
    assert len(client.list_tasks(project)) == 4
    report = import_files(client, project, files, workspace, batch=4)
    assert (report.created, report.already, report.failed) == (6, 4, [])
    sources = [t["data"][SOURCE_FIELD] for t in client.list_tasks(project)]
    assert len(sources) == len(set(sources)) == 10


def test_the_readme_path_from_stacks_to_a_ranked_project_and_measurements(
        labelstudio, tmp_path, monkeypatch):
    """import --connect-backend, pre-labels from the originals, an annotation admitted,
    select --project, measure --project: the README's commands, in order."""
    from test_backend_e2e import AUTH, serve

    from label_assistant.labelstudio import label_map_to_results
    from label_assistant.labelstudio.client import RANK_FIELD, STATUS_FIELD

    folder = tmp_path / "stacks"
    folder.mkdir()
    rng = np.random.default_rng(5)
    stack = rng.integers(100, 900, size=(3, H, W), dtype=np.uint16)
    stack[:, 10:20, 10:20] = 30000  # one bright nucleus
    tifffile.imwrite(folder / "nuclei.ome.tif", stack, ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4})
    # The same planes without a pixel size: other originals (imported first, by name).
    tifffile.imwrite(folder / "more.tif", stack[:2], imagej=True, metadata={"axes": "TYX"})
    for name, value in (("LABEL_STUDIO_URL", labelstudio.url),
                        ("LABEL_STUDIO_API_KEY", labelstudio.token),
                        ("LA_BASIC_AUTH_USER", AUTH[0]), ("LA_BASIC_AUTH_PASS", AUTH[1])):
        monkeypatch.setenv(name, value)
    with serve(tmp_path, labelstudio) as (url, workdir, log):
        assert main(["import", str(folder), "--new-project", "Nuclei time-lapse", "--classes",
                     "Nucleus", "--workdir", str(workdir), "--connect-backend", url,
                     "--json", str(tmp_path / "import.json")]) == 0, log.read_text()[-3000:]
        project = json.loads((tmp_path / "import.json").read_text())["project"]
        client = labelstudio.client
        tasks = client.list_tasks(project)
        assert len(tasks) == 5

        client.retrieve_predictions(project)  # Otsu on the 16-bit originals
        predicted = {int(p["task"]) for p in client.predictions(project)}
        assert predicted == {t["id"] for t in tasks}, log.read_text()[-3000:]

        task = next(t for t in tasks if t["data"]["la_source"].endswith("nuclei.ome.tif T=0"))
        label_map = np.full((H, W), 255, np.uint8)
        label_map[5:25, 5:25] = 0
        label_map[10:20, 10:20] = 1
        config = parse_label_config(client.get_project(project)["label_config"])
        labelstudio.sdk.annotations.create(
            id=task["id"], result=label_map_to_results(label_map, config,
                                                      include_background=True))

        def admitted():
            return client.get_task(project, task["id"])["data"].get(STATUS_FIELD)

        deadline = time.time() + 60
        while admitted() != "admitted":
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)

        assert main(["select", "--project", str(project), "--workdir", str(workdir)]) == 0
        ranked = [t for t in client.list_tasks(project) if t["data"].get(RANK_FIELD)]
        assert len(ranked) == 4  # the unlabeled planes

        out = tmp_path / "nuclei.csv"
        assert main(["measure", "--project", str(project), "--workdir", str(workdir),
                     "--out", str(out)]) == 0
    with out.open() as handle:
        (row,) = list(csv.DictReader(handle))

    assert row["class"] == "Nucleus" and row["area_px"] == "100"
    assert float(row["area_um2"]) == pytest.approx(100 * 0.16)
    assert row["max_0"] == "30000"  # the original's values, not the display PNG's


def test_display_pngs_through_local_files_storage(labelstudio, tmp_path, monkeypatch):
    make_folder(tmp_path / "stacks")
    (tmp_path / "stacks" / "d_broken.tif").unlink()
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    displays = labelstudio.document_root / "la-display"
    args = ["import", str(tmp_path / "stacks"), "--new-project", "Local stacks", "--classes",
            "Nucleus", "--workdir", str(tmp_path / "work"), "--local-files", str(displays)]
    assert main(args) == 0
    project = labelstudio.client.find_projects("Local stacks")[0]["id"]
    tasks = labelstudio.client.list_tasks(project)
    assert len(tasks) == 11 and len(list(displays.glob("*.png"))) == 11
    task = tasks[0]
    assert task["data"]["image"].startswith("/data/local-files/?d=la-display/")
    shown = requests.get(labelstudio.url + task["data"]["image"], timeout=10,
                         headers={"Authorization": f"Token {labelstudio.token}"})
    assert shown.status_code == 200 and shown.content[:4] == b"\x89PNG"
    assert main(args) == 0  # a rerun: the same storage, nothing twice
    assert len(labelstudio.client.list_tasks(project)) == 11
    storages = labelstudio.sdk.import_storage.local.list(project=project)
    assert len(storages) == 1
    labelstudio.sdk.import_storage.local.sync(id=storages[0].id)  # a "Sync" adds nothing
    assert len(labelstudio.client.list_tasks(project)) == 11
    outside = ["--local-files", str(tmp_path / "elsewhere")]
    assert main([*args[:-2], *outside]) == 2
