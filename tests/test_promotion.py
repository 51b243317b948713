"""Champion and challenger (model.promotion): the validation split, the scores, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.labelmap import UNLABELED
from label_assistant.model.promotion import (
    MIN_VALIDATION_PIXELS,
    Scores,
    decide,
    score,
    validation_keys,
)

CLASSES = ["Background", "Nucleus"]


def test_the_validation_share_is_stable_as_the_set_grows():
    keys = [f"task-{i}" for i in range(200)]
    held = validation_keys(keys, 0.2)
    assert 25 <= len(held) <= 55  # about a fifth
    for n in (20, 50, 120):  # earlier, smaller sets: the same keys are held out of them
        assert validation_keys(keys[:n], 0.2) == held & set(keys[:n]) or n < 3
    assert validation_keys(reversed(keys), 0.2) == held  # order does not matter


def test_small_sets_hold_out_one_once_there_are_three_and_never_all():
    assert validation_keys(["a"], 0.2) == set()
    assert validation_keys(["a", "b"], 0.2) <= {"a", "b"}
    three = validation_keys(["a", "b", "c"], 0.2)
    assert len(three) >= 1 and len(three) < 3
    assert validation_keys(["a", "b", "c"], 0.0) == set()
    assert len(validation_keys([str(i) for i in range(5)], 0.99)) == 4  # one always trains
    with pytest.raises(ValueError, match="share"):
        validation_keys(["a"], 1.0)


def test_a_collapse_cannot_hide_behind_foreground_dice():
    # Partial truth: a nucleus and background around it, the rest unlabeled.
    truth = np.full((20, 20), UNLABELED, np.uint8)
    truth[5:10, 5:10] = 1
    truth[2:13, 2:4] = 0
    truth[2:13, 11:13] = 0
    blob = np.ones((20, 20), np.uint8)  # everything foreground
    good = np.zeros((20, 20), np.uint8)
    good[5:10, 5:10] = 1
    collapsed, right = score([truth], [blob], 1), score([truth], [good], 1)
    assert collapsed.dice[1] > 0.5  # its foreground Dice looks fine ...
    assert collapsed.dice[0] == 0.0 and collapsed.mean_dice < 0.5  # ... the mean does not
    assert right.mean_dice == 1.0 and right.pixel_accuracy == 1.0
    assert right.pixels == (44, 25)


def test_scores_of_a_confusion_matrix_by_hand():
    s = Scores.of_confusion(np.array([[8, 2], [0, 10]]))
    assert s.dice == pytest.approx((16 / 18, 20 / 22))
    assert s.mean_dice == pytest.approx((16 / 18 + 20 / 22) / 2)
    assert s.pixel_accuracy == pytest.approx(0.9) and s.pixels == (10, 10)
    absent = Scores.of_confusion(np.array([[5, 0, 0], [0, 0, 0], [0, 0, 5]]))
    assert absent.dice[1] is None and absent.mean_dice == 1.0  # a class in neither map


def _scores(mean: float, pixels: tuple[int, int] = (1000, 1000)) -> Scores:
    return Scores(dice=(mean, mean), mean_dice=mean, pixel_accuracy=mean, pixels=pixels)


def test_the_candidate_serves_only_when_it_beats_the_champion():
    won = decide(_scores(0.8), _scores(0.7), "otsu-1234", CLASSES)
    assert won.promoted and "0.8000 beats otsu-1234's 0.7000" in won.reason
    lost = decide(_scores(0.7), _scores(0.7), "v0002", CLASSES)
    assert not lost.promoted and "does not beat" in lost.reason
    assert not decide(_scores(0.71), _scores(0.7), "v0002", CLASSES, min_gain=0.02).promoted
    few = decide(_scores(0.9, (1000, MIN_VALIDATION_PIXELS - 1)), _scores(0.1), "v1", CLASSES)
    assert not few.promoted and "too few validation pixels" in few.reason
    assert "Nucleus 199" in few.reason
    none = decide(None, None, "otsu-1", CLASSES)
    assert not none.promoted and "no validation annotations" in none.reason
    assert none.to_dict()["candidate_scores"] is None and won.to_dict()["promoted"] is True


def _maps(seed: int, errors: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A truth map (a grid of squares) and a prediction with ``errors`` random pixels wrong."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.uint8)
    for y in range(8, size, 32):
        for x in range(8, size, 32):
            truth[y:y + 16, x:x + 16] = 1
    prediction = truth.copy()
    flat = rng.choice(truth.size, errors, replace=False)
    prediction.flat[flat] = 1 - prediction.flat[flat]
    return truth, prediction


def test_block_confusions_add_up_to_the_score_and_skip_unlabeled_blocks():
    from label_assistant.model.promotion import block_confusions

    truth, prediction = _maps(0, 500)
    truth[:, 128:] = UNLABELED  # the right half unlabeled: its blocks are left out
    blocks = block_confusions([truth, truth[:100, :70]], [prediction, prediction[:100, :70]], 1)
    assert blocks.shape == (4 * 2 + 2 * 2, 2, 2)  # 64-pixel blocks, edges included
    whole = score([truth, truth[:100, :70]], [prediction, prediction[:100, :70]], 1)
    assert blocks.sum(axis=0).sum(axis=1).tolist() == list(whole.pixels)


def test_a_gain_that_could_be_chance_does_not_promote():
    from label_assistant.model.promotion import block_confusions, gain_interval

    truth, champion = _maps(1, 3000)
    _, slightly = _maps(2, 2950)  # 50 pixels fewer wrong of 65,536
    _, clearly = _maps(3, 300)
    blocks = {name: block_confusions([truth], [m], 1)
              for name, m in (("champion", champion), ("slightly", slightly),
                              ("clearly", clearly))}

    def verdict(name: str):
        interval = gain_interval(blocks[name], blocks["champion"])
        return decide(score([truth], [{"slightly": slightly, "clearly": clearly}[name]], 1),
                      score([truth], [champion], 1), "v0001", CLASSES, interval=interval)

    small = verdict("slightly")
    assert small.candidate_scores.mean_dice > small.champion_scores.mean_dice
    assert not small.promoted and "it could be chance" in small.reason
    assert small.gain_interval[0] <= 0 < small.gain_interval[1]
    large = verdict("clearly")
    assert large.promoted and large.gain_interval[0] > 0 and "bootstrap bound" in large.reason
    assert gain_interval(blocks["clearly"], blocks["champion"]) == large.gain_interval  # seeded
    same = gain_interval(blocks["champion"], blocks["champion"])
    assert same == (0.0, 0.0)


def test_two_annotations_are_held_out_from_six():
    from label_assistant.model.promotion import MIN_ANNOTATIONS_TO_HOLD_OUT_TWO

    for n in range(MIN_ANNOTATIONS_TO_HOLD_OUT_TWO, 12):
        keys = [f"task-{i}" for i in range(n)]
        assert len(validation_keys(keys, 0.2)) >= 2
    assert len(validation_keys([f"task-{i}" for i in range(5)], 0.2)) >= 1


def test_a_gain_on_one_image_must_hold_on_the_others():
    from label_assistant.model.promotion import block_confusions, block_images, gain_interval

    truth_a, champion_a = _maps(4, 6000)
    _, candidate_a = _maps(5, 500)  # much better on image A
    truth_b, champion_b = _maps(6, 500)
    _, candidate_b = _maps(7, 1500)  # worse on image B
    truths = [truth_a, truth_b]
    mine = block_confusions(truths, [candidate_a, candidate_b], 1)
    theirs = block_confusions(truths, [champion_a, champion_b], 1)
    images = block_images(truths)
    assert images.tolist() == [0] * 16 + [1] * 16
    assert score(truths, [candidate_a, candidate_b], 1).mean_dice > \
        score(truths, [champion_a, champion_b], 1).mean_dice
    assert gain_interval(mine, theirs)[0] > 0  # the blocks alone: a sure gain...
    assert gain_interval(mine, theirs, images)[0] <= 0  # ...that one image of two contradicts
    with pytest.raises(ValueError, match="block images"):
        gain_interval(mine, theirs, images[:3])


def _two_kinds(n_a: int, n_b: int) -> tuple[list[str], np.ndarray]:
    """Keys of two kinds of image: descriptors near 0 (kind a) and near 10 (kind b)."""
    rng = np.random.default_rng(0)
    keys = [f"a{i}" for i in range(n_a)] + [f"b{i}" for i in range(n_b)]
    rows = np.concatenate([rng.normal(0, 0.05, (n_a, 4)), rng.normal(10, 0.05, (n_b, 4))])
    return keys, rows


@pytest.mark.parametrize("n_a, n_b", [(7, 3), (12, 6), (20, 4), (3, 3)])
def test_every_kind_of_image_with_three_annotations_has_a_validation_image(n_a, n_b):
    keys, rows = _two_kinds(n_a, n_b)
    held = validation_keys(keys, 0.2, rows)
    for kind, n in (("a", n_a), ("b", n_b)):
        mine = {k for k in held if k.startswith(kind)}
        assert len(mine) >= (2 if n >= 6 else 1), (kind, sorted(held))
        assert len(mine) < n  # each kind still trains
    assert validation_keys(keys, 0.2) <= held  # the hash share and minimum always hold out
    order = np.random.default_rng(1).permutation(len(keys))  # the order of keys does not matter
    assert validation_keys([keys[i] for i in order], 0.2, rows[order]) == held


def test_a_kind_of_one_or_two_images_gets_no_validation_image_of_its_own():
    keys, rows = _two_kinds(9, 2)
    held = validation_keys(keys, 0.2, rows)
    assert held == validation_keys(keys, 0.2)  # nothing to add: kind b is too small
    with pytest.raises(ValueError, match="descriptors for"):
        validation_keys(keys, 0.2, rows[:3])
