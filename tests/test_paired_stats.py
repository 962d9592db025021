"""Paired differences over seeds: t interval, Holm, AUC, labels to reach."""

from __future__ import annotations

import math

import pytest

from apl_tui import paired_stats as ps


def test_interval_matches_hand_computation():
    # diffs 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/√3, t(0.975, 2) = 4.302653 → ±0.248414.
    r = ps.paired_interval([0.1, 0.2, 0.3])
    assert r.mean == pytest.approx(0.2) and r.sd == pytest.approx(0.1)
    assert (r.low, r.high) == pytest.approx((0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)
    # t = 0.2 / (0.1/√3) = 3.4641 with 2 df: two-sided p = 0.0742 (tables).
    assert r.p == pytest.approx(0.0742, abs=5e-4)
    assert ps.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-6)
    assert ps.t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)
    with pytest.raises(ValueError):
        ps.paired_interval([0.1])


def test_holm_auc_and_reach():
    assert ps.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == {"a": 0.03, "c": 0.06, "b": 0.06}
    assert ps.holm({"a": 0.6, "b": 0.5}) == {"b": 1.0, "a": 1.0}
    assert ps.auc([(16, 0.5), (32, 0.7), (48, 0.7)]) == pytest.approx((16 * 0.6 + 16 * 0.7) / 32)
    assert ps.labels_to_reach([(16, 0.5), (32, 0.7)], 0.6) == pytest.approx(24.0)
    assert ps.labels_to_reach([(16, 0.5), (32, 0.55)], 0.6) is None
    arm = {0: {16: 0.5, 32: 0.8}, 1: {16: 0.5, 32: 0.8}}
    base = {0: {16: 0.5, 32: 0.65}, 1: {16: 0.5, 32: 0.65}}
    assert ps.labels_to_reach_interval(arm, base) == (24.0, 24.0, 24.0)
    assert not math.isnan(ps.betainc(2.0, 3.0, 0.4))
    assert ps.betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)  # I_0.4(2, 3), tables
