"""Sequence ids, strategy names, and one contract run over every registered strategy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from label_assistant.selectors import scores
from label_assistant.selectors.sequences import (
    SequencePatternError,
    cluster_ids,
    is_cluster_id,
    is_own_sequence,
    sequence_ids,
)
from label_assistant.selectors.strategies import (
    STRATEGIES,
    MissingPoolDataError,
    Pool,
    RankedItem,
    StrategyError,
    UnknownStrategyError,
    make_strategy,
    parse_strategy,
    rank,
    strategy_names,
)

# ---------------------------------------------------------------- sequence ids


def test_sequence_ids_from_data_field_win_over_the_pattern():
    names = ["a_s1_t0.png", "a_s1_t1.png", "a_s2_t0.png", "b.png"]
    data = [{"sequence": "x"}, {"sequence": 7}, {"other": 1}, None]
    ids = sequence_ids(names, data=data, regex=r"_(s\d+)_")
    assert ids[:3] == ["x", "7", "s2"]
    assert is_own_sequence(ids[3])
    assert sequence_ids(names, data=[{"seq": "q"}] * 4, field="seq") == ["q"] * 4


def test_sequence_ids_from_pattern_groups():
    names = ["exp3_well12_t001.tif", "exp3_well12_t002.tif", "exp3_well7_t001.tif", "x.tif"]
    by_named = sequence_ids(names, regex=r"exp(?P<exp>\d+)_(?P<seq>well\d+)")
    assert by_named[:3] == ["well12", "well12", "well7"]
    assert sequence_ids(names, regex=r"(well\d+)")[:3] == ["well12", "well12", "well7"]
    assert sequence_ids(names, regex=r"well\d+")[:3] == ["well12", "well12", "well7"]
    assert is_own_sequence(by_named[3])


def test_images_without_id_are_each_their_own_sequence():
    ids = sequence_ids(["same.png", "same.png", "c.png"], data=[{"sequence": ""}, {}, None])
    assert len(set(ids)) == 3 and all(is_own_sequence(i) for i in ids)


def test_bad_pattern_and_length_mismatch_raise():
    with pytest.raises(SequencePatternError, match="invalid sequence pattern"):
        sequence_ids(["a"], regex="(unclosed")
    with pytest.raises(SequencePatternError, match="2 data items for 1 names"):
        sequence_ids(["a"], data=[{}, {}])


def _two_blobs(n_each: int = 6, seed: int = 0) -> np.ndarray:
    """Two tight, well separated groups of rows, interleaved: 0, 2, 4, ... and 1, 3, 5, ..."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.05, size=(n_each, 4))
    b = rng.normal(5.0, 0.05, size=(n_each, 4))
    return np.stack([a, b], axis=1).reshape(2 * n_each, 4)


def test_cluster_ids_find_two_well_separated_blobs():
    ids = cluster_ids(_two_blobs())
    assert ids[:2] == ["cluster01", "cluster02"]  # numbered by first appearance
    assert ids == ["cluster01", "cluster02"] * 6
    assert all(is_cluster_id(i) and not is_own_sequence(i) for i in ids)
    assert cluster_ids(_two_blobs(), seed=3) == ids


def test_cluster_ids_with_k_given():
    x = _two_blobs()
    assert cluster_ids(x, k=1) == ["cluster01"] * 12
    assert cluster_ids(x, k=2) == cluster_ids(x)
    four = cluster_ids(x, k=4)
    assert len(set(four)) == 4
    # each of the 4 clusters stays within one blob
    assert all(len({i % 2 for i, c in enumerate(four) if c == label}) == 1 for label in set(four))
    # more clusters than distinct rows: as many as there are distinct rows
    assert len(set(cluster_ids(np.repeat(x[:2], 3, axis=0), k=5))) == 2


def test_cluster_ids_of_fewer_than_three_rows_are_one_cluster():
    assert cluster_ids(np.zeros((0, 3))) == []
    assert cluster_ids(np.array([[0.0, 1.0]])) == ["cluster01"]
    assert cluster_ids(np.array([[0.0, 1.0], [9.0, 9.0]])) == ["cluster01"] * 2
    assert cluster_ids(np.ones((5, 3))) == ["cluster01"] * 5  # all alike: one cluster


def test_cluster_ids_bad_input_is_a_one_line_error():
    with pytest.raises(SequencePatternError, match=r"must be \(N, D\)"):
        cluster_ids(np.zeros(4))
    with pytest.raises(SequencePatternError, match="NaN or infinite"):
        cluster_ids(np.array([[0.0], [np.nan], [1.0]]))
    with pytest.raises(SequencePatternError, match=r"cluster count must be in 1..3, got 4"):
        cluster_ids(np.zeros((3, 2)), k=4)
    with pytest.raises(SequencePatternError, match="got 0"):
        cluster_ids(np.zeros((3, 2)), k=0)


def test_cluster_sequences_read_as_clusters_in_reasons():
    pool = Pool(names=list("abcd"), sequences=["cluster01", "cluster01", "cluster02", "cluster02"],
                scores={"entropy": np.array([0.9, 0.8, 0.1, 0.2])})
    items = rank(pool, "sequence+entropy")
    assert [i.index for i in items] == [0, 3, 1, 2]
    assert items[0].reason == "cluster01 (first pick), entropy 0.9 (rank 1 of 4)"
    assert items[2].reason.startswith("cluster01 (pick 2, round 2)")
    assert rank(Pool(names=["a"], sequences=["A"]), "sequence")[0].reason.startswith(
        "sequence A (first pick)")


def test_sequence_plus_class_balance_takes_the_richest_image_of_each_sequence_first():
    # sequences A (0, 1) and B (2, 3); class 2 is the rarest labeled, image 1 and 3 rich in it
    probabilities = [np.array(v, np.float32)[:, None, None] * np.ones((3, 2, 2), np.float32)
                     for v in ((0.8, 0.1, 0.1), (0.2, 0.1, 0.7), (0.6, 0.3, 0.1), (0.5, 0.1, 0.4))]
    counts = [10_000, 1_000, 10]
    values = np.array([scores.class_balance(p, counts) for p in probabilities])
    pool = Pool(names=list("abcd"), sequences=["A", "A", "B", "B"],
                scores={"class_balance": values})
    items = rank(pool, "sequence+class_balance")
    assert [i.index for i in items] == [1, 3, 2, 0]
    assert items[0].reason.startswith("sequence A (first pick), class_balance 0.6")
    assert parse_strategy("Class_Balance+sequence").name == "sequence+class_balance"


def test_sequence_plus_diversity_starts_each_sequence_with_its_most_typical_image():
    # two sequences, each a tight cluster of 4 images and one outlier far from everything
    rng = np.random.default_rng(0)
    a = np.array([0.0, 0.0]) + rng.normal(0, 0.1, (4, 2))
    b = np.array([5.0, 0.0]) + rng.normal(0, 0.1, (4, 2))
    embeddings = np.vstack([a, [[0.0, 9.0]], b, [[5.0, -9.0]]])  # outliers: rows 4 and 9
    pool = Pool(names=[f"i{k}" for k in range(10)], sequences=["A"] * 5 + ["B"] * 5,
                embeddings=embeddings)
    items = rank(pool, "sequence+diversity", budget=2)
    assert {i.sequence for i in items} == {"A", "B"}
    assert not {i.index for i in items} & {4, 9}  # farthest-first took an outlier here
    assert all("(first pick, its most typical image)" in i.reason for i in items)
    # once a sequence holds an image, its next picks are the far ones again
    again = rank(pool, "sequence+diversity", budget=4)
    assert {i.index for i in again[2:]} == {4, 9}
    # a smaller fresh sequence, however far, waits for the larger ones
    far = Pool(names=[*pool.names, "c0", "c1"], sequences=[*pool.sequences, "C", "C"],
               embeddings=np.vstack([embeddings, [[50.0, 50.0], [50.1, 50.0]]]))
    first = rank(far, "sequence+diversity", budget=3)
    assert [i.sequence for i in first][2] == "C" and {i.sequence for i in first[:2]} == {"A", "B"}


# ---------------------------------------------------------------- names


def test_parse_is_order_and_case_insensitive():
    assert parse_strategy("Diversity+BALD+sequence").name == "sequence+bald+diversity"
    assert parse_strategy(" entropy ").name == "entropy"
    assert "sequence+bald+diversity" in STRATEGIES and "random" in STRATEGIES
    assert make_strategy("diversity+entropy").__name__ == "entropy+diversity"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("entropyy", "unknown strategy part 'entropyy'; parts: random, sequential, sequence"),
        ("random+sequence", "baseline"),
        ("entropy+margin", "two scores"),
        ("sequence+sequence", "repeats"),
        ("sequence++entropy", "empty part"),
        ("", "empty part"),
    ],
)
def test_bad_names_raise(name, message):
    with pytest.raises(UnknownStrategyError, match=message.replace("+", r"\+")):
        parse_strategy(name)


def test_registry_covers_every_combination():
    names = strategy_names()
    assert len(names) == len(set(names)) == 2 + 3 + 4 * len(scores.SCORES)
    assert all(parse_strategy(n).name == n for n in names)


# ---------------------------------------------------------------- the contract


def _pool(n: int = 30, labeled=(0, 5, 11), seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    sequences = [f"s{i % 4}" for i in range(n)]
    sequences[-1] = None  # one image without a sequence
    return Pool(
        names=[f"img_{i:03d}.png" for i in range(n)],
        sequences=sequences,
        scores={name: rng.random(n) for name in scores.SCORES},
        embeddings=rng.standard_normal((n, 8)),
        labeled=list(labeled),
    )


@pytest.mark.parametrize("name", strategy_names())
@pytest.mark.parametrize("labeled", [(0, 5, 11), ()], ids=["some-labeled", "none-labeled"])
def test_strategy_contract(name, labeled):
    pool = _pool(labeled=labeled)
    strategy = STRATEGIES[name]
    n_free = pool.n - len(labeled)
    for budget in (0, 1, 7, n_free, n_free + 10):
        items = strategy(pool, budget, np.random.default_rng(3))
        indices = [item.index for item in items]
        assert len(indices) == min(budget, n_free)
        assert len(set(indices)) == len(indices)
        assert all(0 <= i < pool.n and not pool.labeled[i] for i in indices)
        for item in items:
            assert isinstance(item, RankedItem) and item.name == pool.names[item.index]
            assert item.sequence == pool.sequences[item.index]
            assert math.isfinite(item.score) and item.reason
            assert all(math.isfinite(v) for v in item.components.values())
    again = strategy(pool, 7, np.random.default_rng(3))
    assert again == strategy(pool, 7, np.random.default_rng(3))
    # a shorter budget is a prefix of a longer one: the ranking doesn't depend on the budget
    full = [i.index for i in strategy(pool, n_free, np.random.default_rng(3))]
    assert [i.index for i in again] == full[:7]


@pytest.mark.parametrize("name", [n for n in strategy_names() if n not in ("random", "sequential")])
def test_strategy_contract_missing_data_raises(name):
    spec = parse_strategy(name)
    bare = Pool(names=["a", "b"], sequences=["s", "s"])
    if spec.score or spec.diversity:
        with pytest.raises(MissingPoolDataError, match="needs"):
            STRATEGIES[name](bare, 1, np.random.default_rng(0))
    else:
        assert len(STRATEGIES[name](bare, 1, np.random.default_rng(0))) == 1


def test_rank_whole_pool_and_bad_budget():
    pool = _pool()
    assert len(rank(pool, "entropy")) == pool.n - 3
    with pytest.raises(StrategyError, match="budget"):
        rank(pool, "entropy", budget=-1)


# ---------------------------------------------------------------- behaviour


def test_baselines():
    pool = _pool(n=10, labeled=[1])
    assert [i.index for i in rank(pool, "sequential", 4)] == [0, 2, 3, 4]
    first = [i.index for i in rank(pool, "random", None, seed=1)]
    assert first == [i.index for i in rank(pool, "random", None, seed=1)]
    assert first != [i.index for i in rank(pool, "random", None, seed=2)]


def test_score_strategy_is_top_k_with_reason():
    pool = Pool(names=list("abcd"), scores={"entropy": np.array([0.1, 0.9, 0.5, 0.7])})
    items = rank(pool, "entropy", 3)
    assert [i.index for i in items] == [1, 3, 2]
    assert items[0].score == 0.9 and items[0].components == {"entropy": 0.9}
    assert items[1].reason == "entropy 0.7 (rank 2 of 4)"


def test_sequence_one_per_sequence_first_then_round_robin_by_score():
    # sequences A (0, 1, 2), B (3, 4), C (5); scores make A's best the overall best.
    pool = Pool(
        names=list("abcdef"),
        sequences=["A", "A", "A", "B", "B", "C"],
        scores={"entropy": np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.1])},
    )
    items = rank(pool, "sequence+entropy")
    assert [i.index for i in items] == [0, 4, 5, 1, 3, 2]
    assert items[0].reason == "sequence A (first pick), entropy 0.9 (rank 1 of 6)"
    assert items[3].reason.startswith("sequence A (pick 2, round 2)")


def test_sequences_with_labeled_images_come_after():
    pool = Pool(
        names=list("abcd"),
        sequences=["A", "A", "B", "B"],
        scores={"entropy": np.array([0.0, 0.9, 0.1, 0.2])},
        embeddings=np.array([[0.0], [9.0], [1.0], [2.0]]),  # A's free image is the farthest
        labeled=[0],
    )
    items = rank(pool, "sequence+entropy")
    assert [i.index for i in items] == [3, 1, 2]
    assert items[1].reason.startswith("sequence A (first pick; 1 already labeled)")
    for name in ("sequence+diversity", "sequence+entropy+diversity", "sequence"):
        items = rank(pool, name)
        assert [i.sequence for i in items] == ["B", "A", "B"], name
    assert [i.index for i in rank(pool, "diversity")][0] == 1  # without the rule: A first


def test_fewer_sequences_than_budget_covers_each_before_repeating():
    pool = _pool(n=40, labeled=())
    n_sequences = len(set(pool.sequences))
    for name in ("sequence", "sequence+entropy", "sequence+diversity", "sequence+bald+diversity"):
        items = rank(pool, name, 12)
        first = [i.sequence for i in items[:n_sequences]]
        assert len(set(first)) == n_sequences, name
        rounds = [i.components["round"] for i in items]
        assert rounds == sorted(rounds), name


def test_one_sequence_or_no_sequences_reduce_to_the_inner_strategy():
    pool = _pool(n=20, labeled=[2])
    for inner in ("entropy", "bald+diversity", "diversity"):
        expected = [i.index for i in rank(pool, inner, None, seed=4)]
        one = Pool(pool.names, ["same"] * 20, pool.scores, pool.embeddings, pool.labeled)
        none = Pool(pool.names, None, pool.scores, pool.embeddings, pool.labeled)
        # one shared sequence: the labeled image puts it at round 2 for everyone alike
        assert [i.index for i in rank(one, f"sequence+{inner}", None, seed=4)] == expected
        # every image its own sequence: every image is a first pick, order as the inner one
        assert [i.index for i in rank(none, f"sequence+{inner}", None, seed=4)] == expected


def test_sequence_strategy_beats_pool_order_on_a_time_lapse_pool():
    # 8 sequences of 10 near-identical frames, stored sequence after sequence (the reference's
    # "first 32 in order" failure): one per sequence covers all 8 with 8 picks.
    seq = [f"seq_{i // 10}" for i in range(80)]
    pool = Pool(names=[f"f{i}" for i in range(80)], sequences=seq)
    assert len({i.sequence for i in rank(pool, "sequential", 8)}) == 1
    assert len({i.sequence for i in rank(pool, "sequence", 8)}) == 8


def test_diversity_uses_the_embeddings():
    # two tight clusters far apart, the first already labeled: the next pick is in the other.
    emb = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0], [9.1, 9.0]])
    pool = Pool(names=list("abcde"), embeddings=emb, labeled=[0])
    items = rank(pool, "diversity", 2)
    assert items[0].index in (3, 4) and items[1].index in (1, 2)
    assert items[0].reason.startswith("distance 12.")


def test_pool_validation():
    with pytest.raises(StrategyError, match="sequence ids"):
        Pool(names=["a", "b"], sequences=["s"])
    with pytest.raises(StrategyError, match="shape"):
        Pool(names=["a", "b"], scores={"entropy": [1.0]})
    with pytest.raises(StrategyError, match="NaN"):
        Pool(names=["a"], scores={"entropy": [np.nan]})
    with pytest.raises(StrategyError, match="embeddings"):
        Pool(names=["a", "b"], embeddings=np.zeros((3, 2)))
    with pytest.raises(StrategyError, match="labeled indices"):
        Pool(names=["a"], labeled=[1])
    assert Pool(names=["a", "b"], labeled=np.array([True, False])).unlabeled_indices.tolist() == [1]


def test_labeled_images_outside_the_pool_count_in_their_sequence():
    pool = Pool(names=["a1", "a2", "b1", "b2"], sequences=["A", "A", "B", "B"],
                embeddings=np.eye(4, dtype=np.float32))
    outside = Pool(names=pool.names, sequences=pool.sequences, embeddings=pool.embeddings,
                   labeled_elsewhere={"A": 1, "Z": 2})  # Z: a sequence with nothing left
    for strategy in ("sequence", "sequence+diversity"):
        assert {rank(outside, strategy, seed=s)[0].name[0] for s in range(20)} == {"b"}
        assert "a" in {rank(pool, strategy, seed=s)[0].name[0] for s in range(20)}  # without
    with pytest.raises(StrategyError, match="0 or more"):
        Pool(names=["a"], labeled_elsewhere={"A": -1})
