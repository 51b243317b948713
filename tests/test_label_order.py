"""The labeling order's score (labelstudio.order): rank -> prediction score, pure."""

from __future__ import annotations

import pytest

from label_assistant.labelstudio.order import (
    MAX_SCORED_RANK,
    UNRANKED_SCORE,
    format_rank,
    order_score,
    parse_rank,
    task_rank,
)


def test_ranked_scores_follow_the_rank_and_stay_in_label_studios_range():
    scores = [order_score(rank) for rank in (1, 2, 10, 11, 999, MAX_SCORED_RANK)]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert scores[0] == 0.000001 and scores[-1] < UNRANKED_SCORE
    # Past the last scored rank every rank shares its score (still before unranked tasks).
    assert order_score(MAX_SCORED_RANK + 5) == order_score(MAX_SCORED_RANK)


@pytest.mark.parametrize("confidence", [-1.0, 0.0, 0.3, 1.0, 7.0])
def test_an_unranked_task_comes_after_every_ranked_one_least_sure_first(confidence):
    score = order_score(None, confidence)
    assert UNRANKED_SCORE <= score <= 1.0
    assert score > order_score(MAX_SCORED_RANK)
    assert order_score(None, 0.2) < order_score(None, 0.9)


def test_ranks_are_read_back_as_written():
    assert parse_rank(format_rank(12)) == 12 and parse_rank(3) == 3
    for bad in (None, "", "first", True, 0, -2, 10**6, "1.5"):
        assert parse_rank(bad) is None
    assert task_rank({"data": {"la_rank": "000004"}}) == 4
    assert task_rank({"data": {}}) is None and task_rank({"id": 1}) is None
