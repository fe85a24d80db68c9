"""Where a pipeline's CPU time goes, stage by stage, under load (Linux).

Locally every Triton model instance runs in a Python backend stub, a process of its own
(`server.stub_watchdog.server_stubs` finds them and their models), so the CPU
time each process spends while a load runs, divided by the requests answered, is the
stage's cost per request: its framework call plus its share of the Python backend's
overhead. `tritonserver` itself holds the HTTP/gRPC front end, the ensemble scheduler and
the copies into and out of the stubs; the load generator's own process is counted too.
Unlike the queue and compute times Triton reports, these are CPU seconds, so stages that
wait for a core do not look costlier than they are, and the rows add up to what the
machine spent.
"""

from __future__ import annotations

import os
from pathlib import Path

#: A process's CPU seconds, keyed by pid: (what it is, user + system seconds).
Snapshot = dict[int, tuple[str, float]]


def snapshot(labels: dict[int, str]) -> Snapshot:
    """CPU seconds of each process `labels` names (pid -> label), from /proc; a process
    gone meanwhile is left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: Snapshot = {}
    for pid, label in labels.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = int(fields[11]), int(fields[12])
        found[pid] = (label, (user + system) / ticks)
    return found


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds of each process label between two snapshots (processes present in both;
    a label's processes, e.g. two instances of one model, add up)."""
    seconds: dict[str, float] = {}
    for pid, (label, cpu) in after.items():
        if pid in before:
            seconds[label] = seconds.get(label, 0.0) + cpu - before[pid][1]
    return seconds


def breakdown(
    before: Snapshot,
    after: Snapshot,
    requests: int,
    wall_s: float,
    cores: int,
) -> dict:
    """CPU per request of each process label between two snapshots (`spent`), with each
    label's share of what the cores could have spent."""
    if requests <= 0 or wall_s <= 0:
        raise ValueError("a breakdown needs requests answered over a positive time")
    by_label = spent(before, after)
    rows = {
        label: {
            "cpu_us_per_request": round(seconds / requests * 1e6, 1),
            "share_of_cores": round(seconds / (cores * wall_s), 4),
        }
        for label, seconds in sorted(by_label.items(), key=lambda item: -item[1])
    }
    total = sum(by_label.values())
    return {
        "requests": requests,
        "wall_s": round(wall_s, 3),
        "cores": cores,
        "throughput": round(requests / wall_s, 1),
        "cpu_us_per_request": round(total / requests * 1e6, 1),
        "share_of_cores": round(total / (cores * wall_s), 4),
        "processes": rows,
    }


def with_stage_counts(measured: dict, counts: dict[str, dict[str, int]]) -> dict:
    """`measured` (a `breakdown`) with what each stage did meanwhile by Triton's statistics
    (`counts`: model -> `computed`, the requests it computed, `executions`, the batches it
    ran them in, and `cache_hits`, the requests its response cache answered without it): in
    the stage's row, `computed`, `mean_batch` and `cache_hits`. So a stage whose CPU looks too
    low shows why (its cache answered), and a stage that computed requests but whose process
    the breakdown missed is named in `unmeasured` instead of passing for free."""
    rows = dict(measured["processes"])
    for model, count in counts.items():
        if model in rows:
            batches = count["executions"]
            rows[model] = {
                **rows[model],
                "computed": count["computed"],
                "mean_batch": round(count["computed"] / batches, 2) if batches else 0.0,
                "cache_hits": count["cache_hits"],
            }
    unmeasured = sorted(m for m, c in counts.items() if c["computed"] and m not in rows)
    return {**measured, "processes": rows, **({"unmeasured": unmeasured} if unmeasured else {})}


def table(measured: dict) -> str:
    """A Markdown table of one breakdown, costliest process first."""
    lines = ["| process | CPU µs per request | share of the cores |", "|---|---|---|"]
    for label, row in measured["processes"].items():
        lines.append(
            f"| {label} | {row['cpu_us_per_request']:,.0f} | {row['share_of_cores']:.0%} |"
        )
    lines.append(
        f"| all | {measured['cpu_us_per_request']:,.0f} | {measured['share_of_cores']:.0%} |"
    )
    return "\n".join(lines) + "\n"


def mflop_equivalents(measured: dict, peak_gflops: float, encoder: str | None = None) -> dict:
    """A breakdown's CPU per request times the machine's fp32 GEMM peak, in MFLOP
    (µs x GFLOP/s = kFLOP): what the request costs counted in the arithmetic the machine
    could have done instead, a figure that compares across CPUs where microseconds do not.
    With `encoder` (the process that runs the query encoder), also the cost without it."""
    if peak_gflops <= 0:
        raise ValueError(f"the GEMM peak must be positive, got {peak_gflops}")
    figures = {
        "gemm_peak_gflops": round(peak_gflops, 1),
        "mflop_equivalent_per_request": round(
            measured["cpu_us_per_request"] * peak_gflops / 1e3, 1
        ),
    }
    if encoder is not None:
        rest = measured["cpu_us_per_request"] - measured["processes"][encoder]["cpu_us_per_request"]
        figures["mflop_equivalent_without_encoder"] = round(rest * peak_gflops / 1e3, 1)
    return figures
