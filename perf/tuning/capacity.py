"""Capacity plan: replicas, expected p99, utilisation and cost for a target QPS.

Assumptions, stated in every plan:

* the single-replica curve (throughput vs p99) measured by the sweep holds for
  each replica, and replicas scale linearly (a load balancer spreads requests
  evenly, no shared bottleneck);
* a replica's capacity is the highest throughput on that curve whose p99 meets
  the SLO, interpolated linearly between the measured points around the SLO;
* headroom is extra capacity on top of the target: replicas =
  ceil(target x (1 + headroom) / capacity);
* the expected p99 is read off the measured curve at the per-replica load
  (linear interpolation; below the first point, the first point's p99).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HOURS_PER_MONTH = 730

ASSUMPTIONS = (
    "each replica behaves like the measured single-replica curve; replicas scale linearly "
    "(even load balancing, no shared bottleneck)",
    "replica capacity = highest throughput on the curve with p99 within the SLO "
    "(linear interpolation between measured points)",
    "replicas = ceil(target QPS x (1 + headroom) / replica capacity)",
    "expected p99 = the curve's p99 at the per-replica load (linear interpolation)",
)


class CapacityError(ValueError):
    """No plan exists: an empty curve, or no point meets the SLO."""


@dataclass(frozen=True)
class Plan:
    target_qps: float
    slo_p99_ms: float
    headroom: float
    replica_capacity_qps: float
    replicas: int
    per_replica_qps: float
    utilisation: float
    expected_p99_ms: float
    price_per_replica_hour: float | None
    cost_per_hour: float | None
    cost_per_month: float | None

    def to_dict(self) -> dict:
        return {**asdict(self), "assumptions": list(ASSUMPTIONS)}

    def markdown(self) -> str:
        rows = [
            ("target", f"{self.target_qps:g} QPS at p99 <= {self.slo_p99_ms:g} ms"),
            ("headroom", f"{self.headroom:.0%}"),
            ("capacity of one replica", f"{self.replica_capacity_qps:.1f} QPS"),
            ("replicas (pods / GPUs)", str(self.replicas)),
            ("load per replica", f"{self.per_replica_qps:.1f} QPS"),
            ("utilisation", f"{self.utilisation:.0%}"),
            ("expected p99", f"{self.expected_p99_ms:.1f} ms"),
        ]
        if self.cost_per_hour is not None:
            rows.append(
                ("cost", f"{self.cost_per_hour:.2f} / hour, {self.cost_per_month:.0f} / month")
            )
        table = "\n".join(f"| {a} | {b} |" for a, b in rows)
        notes = "\n".join(f"* {line}" for line in ASSUMPTIONS)
        return f"| | |\n|---|---|\n{table}\n\nAssumptions:\n\n{notes}\n"


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def monotone_curve(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(throughput, p99 ms) points sorted by throughput, keeping those that raise it."""
    curve: list[tuple[float, float]] = []
    for throughput, p99 in sorted(points):
        if throughput <= 0:
            continue
        if curve and p99 < curve[-1][1]:
            p99 = curve[-1][1]  # latency does not fall as load rises: keep the envelope
        curve.append((throughput, p99))
    return curve


def replica_capacity(points: list[tuple[float, float]], slo_p99_ms: float) -> float:
    """The highest throughput whose p99 meets the SLO, interpolated on the curve."""
    curve = monotone_curve(points)
    if not curve:
        raise CapacityError("the curve has no measured point")
    if curve[0][1] > slo_p99_ms:
        raise CapacityError(
            f"no measured point meets p99 <= {slo_p99_ms:g} ms "
            f"(the lightest load measured {curve[0][1]:.1f} ms)"
        )
    capacity = curve[0][0]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if y1 <= slo_p99_ms:
            capacity = x1
        else:
            capacity = x0 + (x1 - x0) * (slo_p99_ms - y0) / (y1 - y0) if y1 > y0 else x0
            break
    return capacity


def plan(
    points: list[tuple[float, float]],
    target_qps: float,
    slo_p99_ms: float,
    headroom: float = 0.3,
    price_per_replica_hour: float | None = None,
) -> Plan:
    """The plan for `target_qps` from one replica's measured (throughput, p99 ms) points."""
    if target_qps <= 0 or slo_p99_ms <= 0 or headroom < 0:
        raise CapacityError("target QPS and SLO must be > 0 and headroom >= 0")
    capacity = replica_capacity(points, slo_p99_ms)
    replicas = max(1, math.ceil(target_qps * (1 + headroom) / capacity - 1e-9))
    per_replica = target_qps / replicas
    curve = monotone_curve(points)
    expected = _interpolate(per_replica, [c[0] for c in curve], [c[1] for c in curve])
    cost = None if price_per_replica_hour is None else replicas * price_per_replica_hour
    return Plan(
        target_qps=target_qps,
        slo_p99_ms=slo_p99_ms,
        headroom=headroom,
        replica_capacity_qps=capacity,
        replicas=replicas,
        per_replica_qps=per_replica,
        utilisation=per_replica / capacity,
        expected_p99_ms=expected,
        price_per_replica_hour=price_per_replica_hour,
        cost_per_hour=cost,
        cost_per_month=None if cost is None else cost * HOURS_PER_MONTH,
    )
