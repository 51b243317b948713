"""Image descriptors, k-center greedy and ranked batch (checked against modAL.batch)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from modAL.batch import ranked_batch as modal_ranked_batch
from modAL.batch import select_cold_start_instance, select_instance

from label_assistant.selectors.diversity import (
    DiversityError,
    greedy_select,
    image_descriptor,
    k_center_greedy,
    most_central,
    ranked_batch,
    ranked_batch_utility,
)

LINE = np.array([[0.0], [1.0], [2.0], [10.0]])


# ---------------------------------------------------------------- descriptors


def test_descriptor_length_depends_only_on_channels():
    rng = np.random.default_rng(0)
    sizes = [(1, 5, 7), (1, 64, 64), (1, 300, 1100), (1, 2, 2)]
    vectors = [image_descriptor(rng.random(s, dtype=np.float32)) for s in sizes]
    assert len({v.shape for v in vectors}) == 1
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in vectors)
    assert image_descriptor(rng.random((3, 32, 32))).size == 3 * vectors[0].size


def test_descriptor_tells_images_apart():
    rng = np.random.default_rng(1)
    dark = np.clip(0.2 + 0.02 * rng.standard_normal((1, 64, 64)), 0, 1).astype(np.float32)
    dark2 = np.clip(0.2 + 0.02 * rng.standard_normal((1, 64, 64)), 0, 1).astype(np.float32)
    bright = dark + 0.6
    edges = dark.copy()
    edges[:, :, ::4] = 0.9
    d = {
        k: image_descriptor(v)
        for k, v in dict(dark=dark, dark2=dark2, bright=bright, edges=edges).items()
    }
    near = np.linalg.norm(d["dark"] - d["dark2"])
    assert near < np.linalg.norm(d["dark"] - d["bright"]) / 5
    assert near < np.linalg.norm(d["dark"] - d["edges"]) / 5
    np.testing.assert_array_equal(image_descriptor(dark), d["dark"])  # deterministic


def test_descriptor_handles_flat_and_rejects_bad_images():
    assert np.isfinite(image_descriptor(np.zeros((1, 16, 16), np.float32))).all()
    with pytest.raises(DiversityError, match=r"\(C, H, W\)"):
        image_descriptor(np.zeros((16, 16)))
    with pytest.raises(DiversityError, match="NaN"):
        image_descriptor(np.full((1, 4, 4), np.nan))


# ---------------------------------------------------------------- k-center


def test_k_center_by_hand():
    # Cold start: mean distances 3.25, 2.75, 2.75, 6.75 -> index 1 (first of the tie);
    # then 10 (distance 9), then 0 and 2 tie at distance 1 -> 0, then 2.
    assert k_center_greedy(LINE, 10) == [1, 3, 0, 2]
    assert k_center_greedy(LINE, 10, already_selected=[0]) == [3, 2, 1]
    assert k_center_greedy(LINE, 1, already_selected=[0]) == [3]
    assert k_center_greedy(LINE, 0) == []
    assert k_center_greedy(LINE, None, already_selected=[0, 1, 2, 3]) == []


def _brute_k_center(x: np.ndarray, budget: int, selected: list[int]) -> list[int]:
    chosen, out = list(selected), []
    for _ in range(min(budget, len(x) - len(selected))):
        d = np.linalg.norm(x[:, None] - x[chosen][None], axis=2).min(1)
        d[chosen] = -1
        out.append(int(np.argmax(d)))
        chosen.append(out[-1])
    return out


def test_k_center_equals_brute_force_over_a_whole_ranking():
    x = np.random.default_rng(3).standard_normal((60, 5)) + 100.0  # far from the origin
    assert k_center_greedy(x, None, already_selected=[7, 8]) == _brute_k_center(x, 60, [7, 8])
    assert k_center_greedy(x.astype(np.float32), 20, [7]) == _brute_k_center(x, 20, [7])


def test_cold_start_equals_modal():
    x = np.random.default_rng(4).standard_normal((30, 4))
    expected, _ = select_cold_start_instance(x, "euclidean", None)
    everyone = np.arange(30)
    assert most_central(x, everyone, everyone) == expected
    assert k_center_greedy(x, 1) == [expected]


def test_cold_start_on_a_large_pool_estimates_the_mean_from_a_sample():
    angles = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    ring = np.c_[np.cos(angles), np.sin(angles)]
    x = np.vstack([ring[:150], [[0.0, 0.0]], ring[150:]])  # the centre is row 150
    everyone = np.arange(len(x))
    assert most_central(x, everyone, everyone, max_among=20) == 150


def test_bad_embeddings_and_indices_raise():
    with pytest.raises(DiversityError, match=r"\(N, D\)"):
        k_center_greedy(np.zeros(5), 2)
    with pytest.raises(DiversityError, match="selected indices"):
        k_center_greedy(LINE, 2, already_selected=[4])
    with pytest.raises(DiversityError, match="budget"):
        k_center_greedy(LINE, -1)


# ---------------------------------------------------------------- ranked batch


def test_ranked_batch_by_hand():
    # labeled {0}; candidates at 1, 2, 10 with uncertainties 0.9, 0.1, 0.0.
    # step 1, alpha = 3/4: 0.75*(1-1/2)+0.25*0.9 = 0.6, 0.75*(2/3)+0.025 = 0.525,
    #                      0.75*(10/11) = 0.682 -> 10 (index 3)
    # step 2, alpha = 2/4: 0.5*0.5+0.5*0.9 = 0.7, 0.5*(2/3)+0.05 = 0.383 -> index 1
    u = np.array([0.0, 0.9, 0.1, 0.0])
    assert ranked_batch(LINE, u, [0], 3) == [3, 1, 2]
    assert ranked_batch_utility(np.array([1.0, 2.0, 10.0]), u[1:], 3, 1) == pytest.approx(
        [0.6, 0.525, 0.75 * 10 / 11]
    )


def test_ranked_batch_utility_equals_modal_select_instance():
    rng = np.random.default_rng(5)
    labeled, pool, u = rng.standard_normal((4, 3)), rng.standard_normal((9, 3)), rng.random(9)
    mask = np.ones(9, bool)
    mask[2] = False
    best, _, _ = select_instance(labeled, pool, u, mask.copy(), "euclidean", None)
    d = np.linalg.norm(pool[:, None] - labeled[None], axis=2).min(1)
    util = ranked_batch_utility(d, u, int(mask.sum()), len(labeled))
    util[~mask] = -np.inf
    assert int(np.argmax(util)) == best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranked_batch_equals_modal_when_something_is_labeled(seed):
    rng = np.random.default_rng(seed)
    x, u = rng.standard_normal((40, 6)), rng.random(40)
    labeled = [3, 17, 25]
    unlabeled = np.setdiff1d(np.arange(40), labeled)
    stand_in = SimpleNamespace(on_transformed=False, X_training=x[labeled])
    expected, _ = modal_ranked_batch(stand_in, x[unlabeled], u[unlabeled], 15, "euclidean", None)
    assert ranked_batch(x, u, labeled, 15) == unlabeled[expected].tolist()


def test_ranked_batch_cold_start_starts_like_modal_and_never_repeats():
    rng = np.random.default_rng(6)
    x, u = rng.standard_normal((25, 3)), rng.random(25)
    stand_in = SimpleNamespace(on_transformed=False, X_training=None)
    expected, _ = modal_ranked_batch(stand_in, x, u, 5, "euclidean", None)
    got = ranked_batch(x, u, [], None)
    assert got[0] == expected[0]
    assert sorted(got) == list(range(25))


def test_greedy_respects_candidates_eligibility_and_tie_break():
    x = np.zeros((6, 2))  # all at one point: every pick is a tie
    picks = greedy_select(
        x, None, selected=[0], candidates=[1, 2, 3, 4], tie_break=np.array([0, 9, 1, 8, 2, 0])
    )
    assert [p.index for p in picks] == [2, 4, 3, 1]
    only_odd = greedy_select(x, None, selected=[0], eligible=lambda avail: np.arange(6) % 2 == 1)
    assert [p.index for p in only_odd][:3] == [1, 3, 5]  # then falls back to the rest
    assert sorted(p.index for p in only_odd) == [1, 2, 3, 4, 5]


def test_picks_after_exact_picks_use_frozen_distances():
    # Long rankings freeze the distances after `exact_picks` greedy picks (speed, see the
    # module docstring): the first picks are the exact ones, the rest ordered by the distance
    # to the rows chosen up to then, every candidate still ranked once.
    x = np.random.default_rng(5).standard_normal((80, 6))
    exact = greedy_select(x, None, selected=[0], exact_picks=None)
    frozen = greedy_select(x, None, selected=[0], exact_picks=10)
    assert [p.index for p in frozen[:10]] == [p.index for p in exact[:10]]
    assert [p.exact for p in frozen] == [True] * 10 + [False] * 69
    assert sorted(p.index for p in frozen) == list(range(1, 80))
    chosen = [0] + [p.index for p in exact[:10]]
    to_chosen = np.linalg.norm(x[:, None] - x[chosen][None], axis=2).min(1)
    tail = [p.index for p in frozen[10:]]
    assert tail == sorted(tail, key=lambda i: -to_chosen[i])
    assert np.allclose([p.distance for p in frozen[10:]], to_chosen[tail], atol=1e-5)
    assert [p.index for p in exact] == _brute_k_center(x, 80, [0])
    with pytest.raises(DiversityError, match="exact_picks"):
        greedy_select(x, 3, exact_picks=0)


def test_the_frozen_tail_in_one_sort_is_the_per_pick_rule():
    # With fixed utilities (k-center), sorting by (sequence round, utility) gives what asking
    # the eligibility rule at every pick gives, ties and already chosen rows included.
    from label_assistant.selectors.strategies import Pool, _Sequences

    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal((150, 4)), 1)  # rounded: some equal distances
    sequences = [f"s{i}" for i in rng.integers(0, 12, 150)]
    pool = Pool(names=[str(i) for i in range(150)], sequences=sequences, embeddings=x,
                labeled=[0, 1, 2, 3])
    rules = _Sequences(pool, pool.unlabeled_indices)
    common = dict(selected=[0, 1, 2, 3], eligible=rules.eligible,
                  tie_break=rng.permutation(150), exact_picks=7)
    per_pick = greedy_select(x, None, **common)
    sorted_ = greedy_select(x, None, tail_rounds=rules.rounds, **common)
    assert [p.index for p in sorted_] == [p.index for p in per_pick]
    assert [p.distance for p in sorted_] == pytest.approx([p.distance for p in per_pick])
    assert [p.exact for p in sorted_] == [True] * 7 + [False] * 139
