"""The demo's pieces that need no server (the whole demo runs as ``make demo DEMO_CHECK=1``
inside ``make test``): sample data and how tasks are recognised on a rerun."""

from __future__ import annotations

import numpy as np
import pytest
from labelstudio_harness import *  # noqa: F403
from PIL import Image

from label_assistant.devtools import demo
from label_assistant.devtools.samples import nuclei_sequence, to_uint8
from label_assistant.labelstudio import parse_label_config


def test_samples_are_bright_nuclei_with_true_masks():
    frames = nuclei_sequence("seqA", 3, seed=1, size=96, count=5)
    assert [f.name for f in frames] == ["seqA_t00", "seqA_t01", "seqA_t02"]
    for f in frames:
        assert f.image.dtype == np.uint16 and f.instances.shape == f.image.shape
        inside, outside = f.image[f.instances > 0], f.image[f.instances == 0]
        assert inside.mean() > 2 * outside.mean()
        assert 1 <= len(np.unique(f.instances)) - 1 <= 5
    # Nuclei drift: consecutive frames differ, but only a little.
    assert not np.array_equal(frames[0].instances, frames[1].instances)
    assert (frames[0].instances > 0).sum() > 0.5 * (frames[1].instances > 0).sum()


def test_to_uint8_stretches_percentiles():
    image = np.linspace(100, 4000, 10_000).reshape(100, 100).astype(np.uint16)
    out = to_uint8(image)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_demo_images_are_real_microscopy_shipped_with_their_attribution():
    rows = demo.demo_images()
    groups = {r["group"] for r in rows}
    assert 24 <= len(rows) <= 48 and 2 <= len(groups) <= 3
    assert all(sum(r["group"] == g for r in rows) >= 8 for g in groups)
    files = [demo.DEMO_IMAGES / kind / f"{r['id']}.png" for r in rows
             for kind in ("images", "masks")]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) < 3 * 2**20  # a few MB at most
    attribution = (demo.DEMO_IMAGES / "ATTRIBUTION.md").read_text()
    for needed in ("BBBC038v1", "CC0", "Caicedo", "Nature Methods", *sorted(groups)):
        assert needed in attribution, needed


def test_make_samples_copies_once_grey_stretched_and_reuses(tmp_path):
    files = demo.make_samples(tmp_path)
    rows = demo.demo_images()
    assert len(files) == len(rows) and len({f.name for f in files}) == len(rows)
    assert {f.sequence for f in files} == {r["group"] for r in rows}
    for sample, row in zip(files, rows, strict=True):
        image = np.asarray(Image.open(sample.path))
        truth = demo.load_truth(sample)
        assert image.dtype == np.uint8 and image.shape[:2] == truth.shape
        assert image.shape[:2] == (row["height"], row["width"])
        assert len(np.unique(truth)) - 1 == row["nucleus_count"]
        if image.ndim == 2:  # dark fluorescence, stretched for the browser
            assert image.max() == 255
    stamp = files[0].path.stat().st_mtime_ns
    again = demo.make_samples(tmp_path)
    assert again == files and files[0].path.stat().st_mtime_ns == stamp
    assert not list((tmp_path / "images").glob("*.tmp.png"))


def test_task_name_from_field_or_uploaded_file_name():
    assert demo._task_name({"data": {"name": "seqB_t01", "image": "/x.png"}}) == "seqB_t01"
    uploaded = {"data": {"image": "/data/upload/3/5f2a9c1e-seqB_t01.png"}}
    assert demo._task_name(uploaded) == "seqB_t01"
    assert demo._task_name({"data": {"image": "/data/upload/3/plain.png"}}) is None


def test_label_config_has_background_a_class_and_the_warnings_header():
    config = parse_label_config(demo.LABEL_CONFIG)
    assert config.labels == ("Background", demo.CLASS_NAME)
    assert "$la_warnings" in demo.LABEL_CONFIG


def test_label_config_shows_hint_warnings_and_label_buttons_above_the_image():
    import xml.etree.ElementTree as ET

    hint = demo.PARTIAL_LABELING_HINT
    assert "Background" in hint and "unlabeled" in hint
    assert "$" not in hint  # literal text, not a task data field
    root = ET.fromstring(demo.LABEL_CONFIG)
    tags = [child.tag for child in root]
    # Warnings first, in a block of bounded height that scrolls, coloured on the View
    # (Label Studio's CSS makes a Header's own colour inherit).
    block = root[0]
    assert block.tag == "View" and [h.get("value") for h in block] == ["$la_warnings"]
    style = block.get("style")
    assert "max-height" in style and "overflow-y: auto" in style and "color:" in style
    assert root[1].tag == "Header" and root[1].get("value") == hint
    assert tags.index("BrushLabels") < tags.index("Image")
    config = parse_label_config(demo.LABEL_CONFIG)  # still parses: same image, same classes
    assert (config.to_name, config.data_key) == ("image", "image")
    assert config.labels == ("Background", demo.CLASS_NAME)


def test_demo_project_shows_the_instructions_before_labeling():
    assert demo.INSTRUCTIONS["show_instruction"] is True
    text = demo.INSTRUCTIONS["expert_instruction"]
    assert demo.CLASS_NAME in text and "Background" in text and "Quarantined" in text


@pytest.mark.labelstudio
@pytest.mark.slow
def test_demo_check_against_an_existing_label_studio(labelstudio, tmp_path, monkeypatch, capsys):
    """``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``: no local server is started, the
    project is made there, and the whole check (pre-labels, tab, verdict, reuse) passes."""
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    demo.run(tmp_path / "demo", headless=True)
    out = capsys.readouterr().out
    assert f"Label Studio: using {labelstudio.url}" in out
    assert "Label Studio: started" not in out and not (tmp_path / "demo" / "label-studio").exists()
    projects = [p for p in labelstudio.sdk.projects.list() if p.title == demo.PROJECT_TITLE]
    assert len(projects) == 1  # the second start reused it
    assert len(labelstudio.client.list_tasks(projects[0].id)) == len(demo.demo_images())


def test_existing_label_studio_without_a_token_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(demo.DemoError, match="LABEL_STUDIO_API_KEY is not"):
        with demo.label_studio(tmp_path, None):
            pass


def test_the_demo_and_walkthrough_find_the_repository_and_the_walkthrough_the_shared_data():
    from label_assistant.devtools import walkthrough

    for module in (demo, walkthrough):
        assert (module.ROOT / "pyproject.toml").is_file(), module.ROOT
    assert walkthrough.SHARED_NUCLEI.parent == walkthrough.ROOT.parent / "shared" / "data"
