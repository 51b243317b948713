"""The oracle active-learning simulator: splits, sequences, the intake gate, end to end, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from label_assistant.cli import main
from label_assistant.datasets import Example, content_hash
from label_assistant.labelmap import UNLABELED
from label_assistant.simulate import (
    FULL_DATA,
    Dataset,
    RunStore,
    Simulation,
    SimulationError,
    SimulationSettings,
    initial_strategy,
    parse_test_split,
    sequence_chunks,
)

NAMES = [f"s{i:02d}.png" for i in range(10)]


# ---------------------------------------------------------------- settings and splits


def test_test_split_specs():
    assert parse_test_split("last:3", NAMES) == [7, 8, 9]
    assert parse_test_split("first:2", NAMES) == [0, 1]
    assert parse_test_split("every:3", NAMES) == [0, 3, 6, 9]
    assert parse_test_split("list:s05,s01.png", NAMES) == [1, 5]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("last:0", "positive count"),
        ("every:x", "positive count"),
        ("half:2", "use last:N"),
        ("list:nope", "no image named 'nope'"),
        ("list:", "selects no image"),
        ("last:10", "leaves no image for the pool"),
        ("every:1", "leaves no image for the pool"),
    ],
)
def test_bad_test_splits(spec, message):
    with pytest.raises(SimulationError, match=message):
        parse_test_split(spec, NAMES)


def test_stratified_test_split_takes_each_group_and_leaves_one_in_the_pool():
    groups = ["a"] * 5 + ["b"] * 2 + ["c"] + ["d"] * 2
    chosen = parse_test_split("stratified:2", NAMES, groups)
    by_group = {g: [i for i in chosen if groups[i] == g] for g in "abcd"}
    assert by_group == {"a": [1, 3], "b": [1 + 5], "c": [], "d": [8 + 1]}  # evenly spaced
    for spec, groups_, message in (("stratified:0", groups, "positive count"),
                                   ("stratified:1", None, "needs groups"),
                                   ("stratified:1", [str(i) for i in range(10)], "needs groups")):
        with pytest.raises(SimulationError, match=message):
            parse_test_split(spec, NAMES, groups_)


def test_groups_file_is_read_by_name_or_stem(tmp_path):
    from label_assistant.simulate.data import read_groups

    path = tmp_path / "groups.csv"
    path.write_text("name,group\ns00.png,a\ns01,b\n")
    assert read_groups(path) == {"s00.png": "a", "s00": "a", "s01": "b"}
    path.write_text("file,experiment\ns00.png,a\n")
    with pytest.raises(SimulationError, match="columns name and group"):
        read_groups(path)
    with pytest.raises(SimulationError, match="can't read --groups"):
        read_groups(tmp_path / "missing.csv")


def test_versus_random_pairs_seeds():
    from label_assistant.simulate.reports import versus_random

    settings = SimulationSettings(strategies=("random", "sequence"), initial=2, per_round=1,
                                  rounds=0, seeds=(0, 1, 2))
    rows = []
    for seed, (r, s) in enumerate([(0.70, 0.75), (0.60, 0.66), (0.80, 0.84)]):
        rows.append({"strategy": "random", "seed": seed, "round": 0, "labeled_images": 2,
                     "test_dice": r, "test_image_dice": [r, r - 0.1]})
        rows.append({"strategy": "sequence", "seed": seed, "round": 0, "labeled_images": 2,
                     "test_dice": s, "test_image_dice": [s, s - 0.1]})
    (v,) = versus_random(rows, settings)
    diffs = np.array([0.05, 0.06, 0.04])
    half = 4.302653 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert v["strategy"] == "sequence" and v["seeds"] == 3
    assert v["diff"] == pytest.approx(0.05)
    assert (v["low"], v["high"]) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    assert v["significant"]
    assert v["image_low"] is None  # no per-image confusions: no bootstrap of the pooled Dice
    # the same differences with a sign flip in one seed: not significant
    rows[-1]["test_dice"] = 0.70
    (v,) = versus_random(rows, settings)
    assert v["low"] < 0 < v["high"] and not v["significant"]


def _confusion(dice: float, foreground: int) -> list[list[int]]:
    """A 2-class confusion matrix whose foreground Dice is ``dice`` (as many false positives
    as false negatives)."""
    tp = round(dice * foreground)
    return [[10 * foreground, foreground - tp], [foreground - tp, tp]]


def test_pooled_bootstrap_resamples_confusions():
    """The interval beside the pooled difference bootstraps the pooled Dice (the images'
    confusions summed), not the mean per-image Dice: the strategy wins on the large test
    images and loses on the small ones, so its pooled interval is above 0 and its per-image
    one below."""
    from label_assistant.simulate.reports import (
        CANDIDATE,
        CANDIDATE_PER_IMAGE,
        versus_random,
        with_image_means,
    )

    settings = SimulationSettings(strategies=("random", "sequence"), initial=2, per_round=1,
                                  rounds=0, seeds=(0, 1, 2))
    sizes = (10_000,) * 6 + (100,) * 12
    rows = []
    for seed in settings.seeds:
        for strategy, dice in (("random", (0.70,) * 6 + (0.90 - seed / 100,) * 12),
                               ("sequence", (0.90 - seed / 100,) * 6 + (0.30,) * 12)):
            cms = [_confusion(d, n) for d, n in zip(dice, sizes, strict=True)]
            total = np.sum(cms, axis=0)
            rows.append({"strategy": strategy, "seed": seed, "round": 0, "labeled_images": 2,
                         "candidate_test_dice": 2 * total[1, 1] / (2 * total[1, 1]
                                                                  + total[0, 1] + total[1, 0]),
                         "candidate_test_image_dice": list(dice),
                         "candidate_test_image_confusions": cms})
    (pooled,) = versus_random(rows, settings, CANDIDATE)
    assert pooled["diff"] > 0.15
    assert 0 < pooled["image_low"] <= pooled["diff"] <= pooled["image_high"]
    (per_image,) = versus_random(with_image_means(rows), settings, CANDIDATE_PER_IMAGE)
    assert per_image["diff"] < 0 and per_image["image_high"] < 0


def test_per_image_view_counts_each_test_image_once():
    """The pooled Dice weighs a large test image by its pixels; the per-image view weighs each
    test image alike: here the strategy wins on the large image (pooled) and loses on the two
    small ones (per image)."""
    from label_assistant.simulate.reports import (
        CANDIDATE_PER_IMAGE,
        summarize,
        versus_random,
        with_image_means,
    )

    settings = SimulationSettings(strategies=("random", "sequence"), initial=2, per_round=1,
                                  rounds=0, seeds=(0, 1))
    rows = [{"strategy": "full-data", "seed": seed, "round": 0, "labeled_images": 9,
             "labeled_pixels": 9, "test_dice": 0.8, "test_image_dice": [0.9, 0.7, None]}
            for seed in (0, 1)]
    for seed in (0, 1):
        rows.append({"strategy": "random", "seed": seed, "round": 0, "labeled_images": 2,
                     "labeled_pixels": 2, "candidate_test_dice": 0.60,
                     "candidate_test_image_dice": [0.6, 0.8, 0.8]})
        rows.append({"strategy": "sequence", "seed": seed, "round": 0, "labeled_images": 2,
                     "labeled_pixels": 2, "candidate_test_dice": 0.70,
                     "candidate_test_image_dice": [0.7 + seed / 100, 0.5, 0.5]})
    means = with_image_means(rows)
    assert means[0]["test_image_mean_dice"] == pytest.approx(0.8)  # None skipped
    assert means[2][CANDIDATE_PER_IMAGE] == pytest.approx(2.2 / 3)
    (v,) = versus_random(means, settings, CANDIDATE_PER_IMAGE)
    assert v["diff"] == pytest.approx((1.705 - 2.2) / 3) and v["diff"] < 0
    assert v["image_high"] < 0  # the bootstrap resamples the per-image lists
    summary = summarize(rows, settings)
    assert summary["versus_random_candidate"][0]["diff"] == pytest.approx(0.10)
    assert summary["versus_random_candidate_per_image"][0]["diff"] == pytest.approx(v["diff"])
    assert summary["full_data_per_image"]["dice_mean"] == pytest.approx(0.8)

def test_sequence_chunks_are_contiguous_and_even():
    ids = sequence_chunks(20, 6)
    sizes = [ids.count(c) for c in dict.fromkeys(ids)]
    assert sizes == [4, 4, 3, 3, 3, 3]
    assert ids == sorted(ids) and ids[0] == "chunk1" and ids[-1] == "chunk6"
    assert len(set(sequence_chunks(12, 12))) == 12
    assert sequence_chunks(30, 10)[:4] == ["chunk01"] * 3 + ["chunk02"]
    for bad in (0, 21):
        with pytest.raises(SimulationError, match="sequence-chunks must be in 1..20"):
            sequence_chunks(20, bad)


def test_initial_selection_is_the_model_free_part():
    assert initial_strategy("sequence+entropy") == "sequence"
    assert initial_strategy("entropy+diversity") == "diversity"
    assert initial_strategy("sequence+bald+diversity") == "sequence+diversity"
    assert initial_strategy("margin") == "random"
    assert initial_strategy("sequential") == "sequential"


def test_settings_are_checked():
    ok = SimulationSettings(strategies=("Entropy+Sequence", "random"), initial=2, per_round=3,
                            rounds=2)
    assert ok.strategies == ("sequence+entropy", "random") and ok.budgets == [2, 5, 8]
    bad = [
        (dict(strategies=("nope",)), "unknown strategy part"),
        (dict(strategies=("sequence+entropy", "entropy+sequence")), "named twice"),
        (dict(strategies=("bald",)), "several predictions"),
        (dict(initial=0), "--initial >= 1"),
        (dict(annotation="partial"), "--annotation"),
        (dict(sparse_fraction=0.0), "--sparse-fraction"),
        (dict(sequence_regex="x", sequence_chunks=2), "not several"),
        (dict(groups="g.csv", sequence_clusters="auto"), "--groups, --sequence-clusters"),
        (dict(sequence_clusters="many"), "auto or a count"),
        (dict(seeds=(1, 1)), "distinct"),
    ]
    base = dict(strategies=("random",), initial=2, per_round=2, rounds=1)
    for change, message in bad:
        with pytest.raises(SimulationError, match=message):
            SimulationSettings(**{**base, **change})
    assert SimulationSettings(**{**base, "strategies": ("bald",), "tta": True}).tta


def test_run_store_refuses_other_settings(tmp_path):
    store = RunStore(tmp_path, {"rounds": 2, "initial": 2})
    store.append({"strategy": "random", "seed": 0, "round": 0})
    again = RunStore(tmp_path, {"rounds": 2, "initial": 2})
    assert again.done("random", 0) == [{"strategy": "random", "seed": 0, "round": 0}]
    with pytest.raises(SimulationError, match=r"other settings \(differ: rounds\)"):
        RunStore(tmp_path, {"rounds": 3, "initial": 2})
    # a line cut short by a kill is ignored: that step runs again
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('{"strategy": "random", "se')
    assert len(RunStore(tmp_path, {"rounds": 2, "initial": 2}).rows) == 1


# ---------------------------------------------------------------- the intake: real gate


def _blobs(seed: int, size: int = 64, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(n):
        y, x = rng.integers(8, size - 8, 2)
        label[y - 5 : y + 5, x - 5 : x + 5] = 1
    image = np.clip(label * 150 + 50 + rng.normal(0, 15, label.shape), 0, 255).astype(np.uint8)
    return image, label


def _example(name: str, seed: int, n: int = 3) -> Example:
    image, label = _blobs(seed, n=n)
    image = (image / 255.0).astype(np.float32)[None]
    return Example(name, image, label, content_hash(image, label))


def test_sparse_intake_quarantines_what_the_gate_refuses(tmp_path):
    # "empty" has no object at all: its sparse annotation keeps no pixel, and the gate's
    # `empty` rule quarantines it; the others are admitted with about 20% of pixels labeled.
    pool = [_example("a", 1), _example("b", 2), _example("empty", 3, n=0)]
    data = Dataset(pool, [_example("t", 9)], [None] * 3, ["Background", "Class1"])
    settings = SimulationSettings(strategies=("random",), initial=2, per_round=1, rounds=1,
                                  annotation="sparse", sparse_fraction=0.2)
    sim = Simulation(data, settings, tmp_path, device="cpu", log=lambda line: None)
    intake = sim.intake(["a", "b", "empty"], None, seed=0)
    assert intake.admitted == ["a", "b"] and intake.quarantined == ["empty"]
    assert intake.prelabel_source == "otsu" and intake.prelabel_dice > 0.5
    annotation = sim._annotation("a", 0).label_map
    share = float((annotation != UNLABELED).mean())
    assert 0.05 < share < 0.5
    assert np.array_equal(annotation, sim._annotation("a", 0).label_map)  # resume rebuilds it
    assert (sim._annotation("a", 0, dense=True).label_map != UNLABELED).all()


# ---------------------------------------------------------------- end to end


@pytest.fixture
def dataset_dirs(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(10):
        image, label = _blobs(i)
        Image.fromarray(image).save(images / f"img_{i:02d}.png")
        Image.fromarray(label * 255).save(masks / f"img_{i:02d}.png")
    return images, masks


def _argv(images: Path, masks: Path, out: Path, *extra: str) -> list[str]:
    return ["simulate", str(images), str(masks), "--strategies", "random,sequence+entropy",
            "--initial", "2", "--per-round", "2", "--rounds", "2", "--seeds", "1",
            "--sequence-chunks", "3", "--test-split", "last:3", "--out", str(out),
            "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--tile", "64",
            "--inference-tile", "128", "--device", "cpu", *extra]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_simulation_end_to_end_and_resume(dataset_dirs, tmp_path, capsys):
    images, masks = dataset_dirs
    out = tmp_path / "out"
    assert main(_argv(images, masks, out)) == 0
    printed = capsys.readouterr()
    assert "| full-data | 7 of 10 |" in printed.out and "results in" in printed.out
    assert "[7/7]" in printed.err

    rows = _rows(out)
    assert len(rows) == 7  # full data + 2 strategies x 3 rounds
    full = [r for r in rows if r["strategy"] == FULL_DATA]
    assert len(full) == 1 and full[0]["labeled_images"] == 7 and full[0]["labeled_pixel_share"] == 1
    for strategy in ("random", "sequence+entropy"):
        run = [r for r in rows if r["strategy"] == strategy]
        assert [r["labeled_images"] for r in run] == [2, 4, 6]
        # What served after a round (Otsu until a candidate beats it) pre-labels the next.
        assert run[0]["prelabel_source"] == "otsu"
        for before, after in zip(run, run[1:], strict=False):
            served_otsu = before["serving_version"].startswith("otsu")
            assert after["prelabel_source"] == ("otsu" if served_otsu else "model")
        assert all(r["promoted"] in (True, False) and r["verdict"] for r in run)
        assert all(0.0 <= r["test_dice"] <= 1.0 and r["train_seconds"] > 0 for r in run)
        names = [n for r in run for n in r["new_images"]]
        assert len(set(names)) == 6 and not set(names) & {"img_07", "img_08", "img_09"}
    first = [r for r in rows if r["strategy"] == "sequence+entropy" and r["round"] == 0][0]
    # round 0 of sequence+entropy is the sequence choice: two different chunks
    assert len({int(n[-2:]) * 3 // 7 for n in first["new_images"]}) == 2

    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 8 and csv_lines[0].startswith("strategy,seed,round,labeled_images")
    result = json.loads((out / "results.json").read_text())
    assert len(result["rows"]) == 7 and result["summary"]["full_data"]["seeds"] == 1
    guard = result["summary"]["guard"]
    assert guard["candidates"] == 6 and guard["promoted"] + guard["kept"] == 6
    assert guard["serving_below_otsu"] == []  # what serves never scores below Otsu
    for png in ("dice_vs_images.png", "dice_vs_pixels.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "| sequence+entropy | 6 of 10 |" in summary and "share of full-data Dice" in summary

    # rerun: everything is done, nothing trains again
    assert main(_argv(images, masks, out)) == 0
    assert "resuming: 7 of 7 steps" in capsys.readouterr().err
    assert len(_rows(out)) == 7

    # an interrupted run (its last round and the reference lost) continues from the stored
    # selection
    assert rows[-1]["strategy"] == FULL_DATA  # the reference comes last
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    assert main(_argv(images, masks, out)) == 0
    assert "resuming: 5 of 7 steps" in capsys.readouterr().err
    redone, last = _rows(out)[-2], rows[-2]
    assert (redone["strategy"], redone["round"]) == (last["strategy"], last["round"])
    assert redone["new_images"] == last["new_images"]
    assert redone["test_dice"] == pytest.approx(last["test_dice"])
    assert redone["serving_version"] == last["serving_version"]

    # other settings in the same folder: one line, exit 2
    assert main(_argv(images, masks, out, "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings (differ: train)" in err[0]


def test_simulate_bad_input_is_one_line(dataset_dirs, tmp_path, capsys):
    images, masks = dataset_dirs
    cases = [
        (["--rounds", "5"], "the last round needs 12 images but the pool has 7"),
        (["--test-split", "middle:2"], "use last:N"),
        (["--seeds", "a,b"], "--seeds"),
        (["--encoder", "nope"], "unknown encoder"),
        (["--strategies", "random,bald"], "several predictions"),
    ]
    for extra, message in cases:
        assert main(_argv(images, masks, tmp_path / "o", *extra)) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert main(["simulate", str(images), str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_sparse_annotation_trains_on_partial_labels(dataset_dirs, tmp_path, capsys):
    images, masks = dataset_dirs
    out = tmp_path / "sparse"
    argv = _argv(images, masks, out, "--annotation", "sparse", "--sparse-fraction", "0.2")
    argv[argv.index("random,sequence+entropy")] = "sequential"
    argv[argv.index("--rounds") + 1] = "0"
    assert main(argv) == 0
    rows = {r["strategy"]: r for r in _rows(out)}
    assert rows[FULL_DATA]["labeled_pixel_share"] == 1.0  # the baseline is always dense
    sparse = rows["sequential"]
    assert sparse["new_images"] == ["img_00", "img_01"]  # pool order
    assert 0.05 < sparse["labeled_pixel_share"] * 7 / 2 < 0.5  # ~20% of the 2 images' pixels
    assert sparse["test_dice"] is not None and sparse["admitted"] == 2
    assert "(differ" not in capsys.readouterr().err


@pytest.mark.slow
def test_groups_stratified_split_and_paired_comparison_end_to_end(dataset_dirs, tmp_path,
                                                                   capsys):
    images, masks = dataset_dirs
    groups = tmp_path / "groups.csv"
    groups.write_text("name,group\n" + "".join(f"img_{i:02d}.png,{'ab'[i % 2]}\n"
                                               for i in range(10)))
    out = tmp_path / "grouped"
    argv = _argv(images, masks, out, "--groups", str(groups))
    for flag, value in (("--sequence-chunks", None), ("--test-split", "stratified:1"),
                        ("--strategies", "random,sequence,sequential"), ("--rounds", "0"),
                        ("--seeds", "0,1")):
        at = argv.index(flag)
        if value is None:
            del argv[at:at + 2]
        else:
            argv[at + 1] = value
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    test = json.loads((out / "results.json").read_text())["settings"]["data"]["test"]
    assert len(test) == 2 and {int(n[4:6]) % 2 for n in test} == {0, 1}  # one per group
    sequence = [r for r in rows if r["strategy"] == "sequence"]
    for r in sequence:  # one image of each group first
        assert sorted(int(n[4:6]) % 2 for n in r["new_images"]) == [0, 1]
    for r in (r for r in rows if r["strategy"] == "sequential"):  # group a, then group b
        assert r["new_images"] == ["img_00", "img_02"]
    assert all(r["finished_at"] > 0 for r in rows)
    assert rows[-1]["strategy"] == "full-data"  # each seed's reference comes last
    assert all(len(r["test_image_dice"]) == 2 for r in rows)
    for r in rows:  # each test image's confusion: their sum gives the pooled Dice back
        total = np.sum(r["test_image_confusions"], axis=0)
        assert len(r["test_image_confusions"]) == 2 and r["test_dice"] == pytest.approx(
            2 * total[1, 1] / (2 * total[1, 1] + total[0, 1] + total[1, 0]))
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert all(v["image_low"] is not None for v in summary["versus_random"])
    assert "## Against random, what serves (test Dice difference, paired by seed)" in printed
    assert "| sequence | 0 | 2 |" in printed
    assert (out / "gain_vs_random.png").stat().st_size > 0
    assert (out / "gain_vs_random_candidate.png").stat().st_size > 0
    assert (out / "gain_vs_random_candidate_per_image.png").stat().st_size > 0
    assert "## Against random, the candidate trained on the selected images" in printed
