"""Capacity maths on known curves (pure)."""

from __future__ import annotations

import pytest

from perf.tuning import capacity

# throughput (inferences/s), p99 (ms): saturates near 200/s
CURVE = [(50.0, 10.0), (100.0, 20.0), (150.0, 40.0), (200.0, 120.0)]


def test_capacity_interpolates_at_the_slo():
    assert capacity.replica_capacity(CURVE, 40) == 150
    assert capacity.replica_capacity(CURVE, 80) == pytest.approx(175)
    assert capacity.replica_capacity(CURVE, 500) == 200


def test_plan_replicas_utilisation_p99_and_cost():
    plan = capacity.plan(
        CURVE, target_qps=1000, slo_p99_ms=40, headroom=0.3, price_per_replica_hour=2
    )
    # 1000 x 1.3 / 150 = 8.67 -> 9 replicas, 111.1/s each
    assert plan.replicas == 9
    assert plan.per_replica_qps == pytest.approx(1000 / 9)
    assert plan.utilisation == pytest.approx(1000 / 9 / 150)
    assert plan.expected_p99_ms == pytest.approx(20 + 20 * (1000 / 9 - 100) / 50)
    assert plan.cost_per_hour == 18 and plan.cost_per_month == 18 * 730
    assert "linear" in plan.markdown() and plan.to_dict()["assumptions"]


def test_exact_fit_does_not_add_a_replica():
    plan = capacity.plan(CURVE, target_qps=300, slo_p99_ms=40, headroom=0)
    assert plan.replicas == 2 and plan.utilisation == pytest.approx(1.0)
    assert plan.cost_per_hour is None


def test_small_target_takes_one_replica_and_the_first_points_p99():
    plan = capacity.plan(CURVE, target_qps=10, slo_p99_ms=40, headroom=0.3)
    assert plan.replicas == 1 and plan.expected_p99_ms == 10


def test_noisy_curve_keeps_the_latency_envelope():
    noisy = [(100.0, 30.0), (50.0, 10.0), (150.0, 25.0)]
    assert capacity.monotone_curve(noisy) == [(50.0, 10.0), (100.0, 30.0), (150.0, 30.0)]


def test_infeasible_slo_says_so():
    with pytest.raises(capacity.CapacityError, match="lightest load measured 10.0 ms"):
        capacity.plan(CURVE, target_qps=100, slo_p99_ms=5)
    with pytest.raises(capacity.CapacityError, match="no measured point"):
        capacity.plan([], target_qps=100, slo_p99_ms=5)
