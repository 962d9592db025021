"""Head-based acquisition functions and the batch wrapper, each on a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from apl_tui import acquisition as acq
from apl_tui.pref_head import fit_head


def test_gap_ucb_is_mean_gap_plus_both_spreads() -> None:
    # members: [0, 2, 1] and [2, 2, 1] → μ = [1, 2, 1], σ = [1, 0, 0]
    util = np.array([[0.0, 2.0, 1.0], [2.0, 2.0, 1.0]])
    assert acq.gap_ucb(util, [0, 0, 1], [1, 2, 2]) == [2.0, 1.0, 1.0]
    assert acq.gap_ucb(util, [0, 0, 1], [1, 2, 2], c=2.0) == [3.0, 2.0, 1.0]


def test_drts_with_agreeing_members_is_the_plain_gap() -> None:
    util = np.array([[3.0, 0.0, 1.0], [3.0, 0.0, 1.0]])
    assert acq.drts(util, [0, 0, 1], [1, 2, 2], [7, 7, 7], seed=0) == [3.0, 2.0, 1.0]


def test_drts_draws_two_members_per_prompt() -> None:
    # u_0 = [3, 0], u_1 = [1, 1]: (m1, m2) = (0, 1) gives max(3−1, 0−1) = 2; (1, 0) gives max(1−0, 1−3) = 1
    util = np.array([[3.0, 0.0], [1.0, 1.0]])
    seen = {acq.drts(util, [0], [1], [0], seed=s)[0] for s in range(20)}
    assert seen == {1.0, 2.0}
    assert acq.drts(util, [0], [1], [0], seed=3) == acq.drts(util, [0], [1], [0], seed=3)


def test_center_by_group_removes_each_prompts_mean() -> None:
    util = np.array([[1.0, 3.0, 10.0, 4.0], [0.0, 0.0, 5.0, 7.0]])
    assert acq.center_by_group(util, [0, 0, 1, 1]).tolist() == [[-1.0, 1.0, 3.0, -3.0], [0.0, 0.0, -1.0, 1.0]]


def test_dopt_picks_the_uncovered_direction_second() -> None:
    x = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    # q₀ = [1, 1, 1]; pick 0 (gain 1), H = I + e₁e₁ᵀ → q = [.5, .5, 1]; pick 2 (gain 1) → q = [.5, .5, .5]
    assert acq.dopt(x, [0, 1, 2], batch=2) == pytest.approx([1.0, 0.5, 1.0])
    assert acq.top_k(acq.dopt(x, [0, 1, 2], batch=2), 2) == [0, 2]


def test_dopt_starts_from_the_labels_and_weights() -> None:
    x = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    # H₀ = I + e₁e₁ᵀ = diag(2, 1): q₀ = [.5, .5, 1]
    assert acq.dopt(x, [0, 1, 2], batch=1, labeled=[[1.0, 0.0]]) == pytest.approx([0.5, 0.5, 1.0])
    # w = p(1 − p) can overrule coverage: w = [1, 1, .1] → gains [.5, .5, .1]
    assert acq.top_k(acq.dopt(x, [0, 1, 2], batch=1, labeled=[[1.0, 0.0]], weights=[1, 1, 0.1]), 1) == [0]


def test_dopt_takes_one_pair_per_prompt() -> None:
    x = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    scores = acq.dopt(x, [0, 0, 1], batch=2)
    assert acq.top_k(scores, 1) == [0]
    assert scores[2] == pytest.approx(1.0)  # picked second: prompt 0 is taken


@pytest.mark.parametrize("n", [3, 12])
def test_h0_inverse_woodbury_and_explicit_agree(n: int) -> None:
    rng = np.random.default_rng(n)
    lab, v = rng.standard_normal((n, 6)), rng.standard_normal((6, 4))
    want = np.linalg.solve(0.5 * np.eye(6) + lab.T @ lab, v)
    apply, q = acq._h0_inverse(lab, 0.5, v.T)
    assert np.allclose(apply(v), want)
    assert np.allclose(q, (v * want).sum(axis=0))


def test_dopt_gap_represents_each_prompt_by_its_widest_pair() -> None:
    x = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    gaps = [0.2, 0.9, 0.5, 0.1]
    scores = acq.dopt_gap(x, gaps, [0, 0, 1, 1], batch=2)
    # reps: pair 1 (prompt 0) and pair 2 (prompt 1), orthogonal: both gain 1; the others fall below −1
    assert scores[1] == pytest.approx(1.0) and scores[2] == pytest.approx(1.0)
    assert scores[0] == pytest.approx(-1.7) and scores[3] == pytest.approx(-1.4)
    assert acq.dopt_gap(x, None, [0, 0, 1, 1], batch=2) == acq.dopt(x, [0, 0, 1, 1], batch=2)


def test_batch_keys_top_k_is_identity_and_mix_random_takes_its_share() -> None:
    scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert acq.batch_keys(scores, 2) == scores
    keys = acq.batch_keys(scores, 4, mix_random=0.5, seed=1)
    picked = acq.top_k(keys, 4)
    drawn = [i for i in range(6) if keys[i] > 5.0]
    assert len(drawn) == 2 and set(drawn) <= set(picked)
    rest = [i for i in picked if i not in drawn]
    assert rest == [i for i in range(6) if i not in drawn][:2]  # the best of the others, in order


def test_softmax_selection_draws_in_proportion_to_exp_score() -> None:
    # standardised scores [−1, 1], τ = 1: the first draw is index 1 with p = e / (e + 1/e) ≈ 0.881
    firsts = [acq.top_k(acq.batch_keys([0.0, 1.0], 1, selection="softmax", seed=s), 1)[0] for s in range(4000)]
    assert np.mean(firsts) == pytest.approx(np.e / (np.e + 1 / np.e), abs=0.02)
    cold = acq.batch_keys([0.0, 3.0, 1.0], 2, selection="softmax", tau=1e-6, seed=0)
    assert acq.top_k(cold, 2) == [1, 2]


def test_batch_keys_refuses_an_unknown_selection() -> None:
    with pytest.raises(ValueError, match="selection"):
        acq.batch_keys([1.0], 1, selection="greedy")


def test_head_one_label_prefers_the_winner_and_is_antisymmetric() -> None:
    head = fit_head(np.array([[2.0, 0.0]]), np.array([True]), members=3)
    p, _ = head.prefer(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))
    q, _ = head.prefer(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert p[0] > 0.5 and p[0] + q[0] == pytest.approx(1.0)
    assert head.members == 3 and head.n_labels == 1


def test_head_learns_a_direction_and_its_members_differ() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros(20)
    truth[3] = 3.0
    x = rng.standard_normal((400, 20))
    y = rng.random(400) < 1 / (1 + np.exp(-x @ truth))
    head = fit_head(x, y, members=5, seed=1)
    test = rng.standard_normal((500, 20))
    p, sd = head.prefer(test, np.zeros_like(test))
    assert ((p > 0.5) == (test @ truth > 0)).mean() > 0.85
    assert (sd > 0).all()  # bootstrap members differ
    small = fit_head(x[:10], y[:10], members=5, seed=1)  # ridge keeps a thin fit near p = ½
    assert np.abs(small.prefer(test, np.zeros_like(test))[0] - 0.5).mean() < np.abs(p - 0.5).mean()


def test_head_refuses_no_labels() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_head(np.zeros((0, 4)), np.zeros(0, dtype=bool))
