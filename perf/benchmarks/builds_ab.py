"""What a change to the stages costs a request: one pipeline served from two model
repositories side by side (`python -m perf.benchmarks.builds_ab --before A --after B`).

Build the repository before the change and after it (or copy the before's first), then this
serves the pipeline from each in turn, one server at a time, `--repetitions` times, the order
swapped every repetition. Each run is `perf.benchmarks.stage_cpu` under the bench's
closed-loop load (`bench.stage_cpu_breakdown`: concurrency 16, the bench's logged requests):
the CPU each process spends per request, and the throughput. Writes every run to
`perf/results/builds_ab.json` and prints the after/before ratios of the arms' means, and of
each repetition's two runs: absolute figures drift with the machine's neighbours from minute to
minute, and a run's place in the order can move it too, which the alternating order cancels
in the means.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from builders import machine, names
from perf import RESULTS, write_results
from perf.benchmarks.bench import bench_requests, stage_cpu_breakdown, triton_bodies
from server import TritonServer

ARMS = ("before", "after")
OUT = RESULTS / "builds_ab.json"


def measure(repos: dict[str, Path], kind: str, seconds: float, repetitions: int) -> dict:
    """`repos`: the repository of each arm (ARMS)."""
    if repetitions < 1:
        raise ValueError(f"the comparison needs at least one repetition, got {repetitions}")
    missing = [str(repo) for repo in repos.values() if not (repo / kind).is_dir()]
    if missing:
        raise ValueError(f"no {kind} pipeline in {', '.join(missing)}: build it first")
    bodies = triton_bodies(kind, bench_requests(repos["before"])[kind])
    rows = []
    for repetition in range(repetitions):
        for arm in ARMS if repetition % 2 == 0 else ARMS[::-1]:
            print(f"repetition {repetition + 1}/{repetitions}: {arm}", flush=True)
            with TritonServer(
                repos[arm], model_control="explicit", load_models=[kind], exit_timeout_secs=5
            ) as server:
                measured = stage_cpu_breakdown(server, kind, bodies, seconds)
            rows.append({"arm": arm, "repetition": repetition, **measured})
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "pipeline": kind,
        "repositories": {arm: str(repo) for arm, repo in repos.items()},
        "seconds": seconds,
        "rows": rows,
        "ratios": ratios(rows),
    }


def ratios(rows: list[dict]) -> dict:
    """after / before of the CPU per request (in all and of each process both arms measured)
    and of the throughput: of the arms' means over every repetition (`overall`: the order
    alternates, so each arm ran first as often as second, give or take one, and what running
    first or second does to a figure cancels), and of each repetition's two runs (`each`:
    the spread)."""
    runs = {(row["repetition"], row["arm"]): row for row in rows}
    repetitions = sorted({row["repetition"] for row in rows})
    return {
        "overall": _ratios(
            [runs[(r, "after")] for r in repetitions], [runs[(r, "before")] for r in repetitions]
        ),
        "each": [_ratios([runs[(r, "after")]], [runs[(r, "before")]]) for r in repetitions],
    }


def _ratios(after: list[dict], before: list[dict]) -> dict:
    def ratio(**figure) -> float:
        return round(mean(after, **figure) / mean(before, **figure), 3)

    shared = set.intersection(*(set(run["processes"]) for run in after + before))
    return {
        "cpu_us_per_request": ratio(),
        "throughput": ratio(key="throughput"),
        "processes": {process: ratio(process=process) for process in sorted(shared)},
    }


def mean(runs: list[dict], key: str = "cpu_us_per_request", process: str | None = None) -> float:
    """The mean of a figure of `runs`: of the whole run, or of one of its processes."""
    return float(np.mean([(run["processes"][process] if process else run)[key] for run in runs]))


def table(results: dict) -> str:
    """Each repetition's CPU per request and throughput, with its ratios, then the arms'
    means with theirs."""
    lines = [
        "| repetition | CPU µs per request, before | after | after / before "
        "| req/s, before | after | after / before |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = {(row["repetition"], row["arm"]): row for row in results["rows"]}
    for repetition, ratio in enumerate(results["ratios"]["each"]):
        before, after = runs[(repetition, "before")], runs[(repetition, "after")]
        lines.append(
            f"| {repetition + 1} | {before['cpu_us_per_request']:,.0f} "
            f"| {after['cpu_us_per_request']:,.0f} | {ratio['cpu_us_per_request']:.2f} "
            f"| {before['throughput']:,.0f} | {after['throughput']:,.0f} "
            f"| {ratio['throughput']:.2f} |"
        )
    arms = {arm: [row for row in results["rows"] if row["arm"] == arm] for arm in ARMS}
    overall = results["ratios"]["overall"]
    lines.append(
        f"| mean | {mean(arms['before']):,.0f} | {mean(arms['after']):,.0f} "
        f"| {overall['cpu_us_per_request']:.2f} | {mean(arms['before'], 'throughput'):,.0f} "
        f"| {mean(arms['after'], 'throughput'):,.0f} | {overall['throughput']:.2f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.builds_ab", description=__doc__
    )
    parser.add_argument("--before", type=Path, required=True, help="model repository")
    parser.add_argument("--after", type=Path, required=True, help="model repository")
    parser.add_argument("--pipeline", choices=(names.SEARCH, names.RECOMMEND), default="search")
    parser.add_argument("--seconds", type=float, default=8.0, help="per run (%(default)s)")
    parser.add_argument("--repetitions", type=int, default=4, help="%(default)s")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    repos = {"before": args.before, "after": args.after}
    try:
        results = measure(repos, args.pipeline, args.seconds, args.repetitions)
    except ValueError as error:
        print(f"builds_ab: {error}", file=sys.stderr)
        return 2
    write_results(args.out, results)
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
