"""What a request's computation costs at each batch size, with no serving at all
(`make bench-compute`, `python -m perf.benchmarks.compute_floor`).

The newest search and recommend releases' own stages run in this one process
(`builders.offline.OfflinePipeline`: the models and computation the served stages run, as
the bench's `in_process` arm runs them) on the bench's logged requests, cut into batches of
each size. Every round measures each batch size for `--seconds`, the sizes' order rotating
from round to round so that drift spreads over all of them; a figure is the median of the
rounds, shown with their range.

Per pipeline and batch size: the CPU time this process spent per request (user + system,
every thread, ONNX Runtime's and TensorFlow's included), the wall time, the CPU's ratio to
the smallest batch's (batch 1's by default: what batching saves the computation itself) and
the floor: the requests per second this machine's cores would answer if they did nothing but
this computation (cores × 10⁶ / CPU µs). No serving reaches the floor: a server adds its own
process, the copies between the stages' processes, and the clients that send the load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from builders import machine, names
from builders.offline import OfflinePipeline
from builders.repository import model_versions
from perf import RESULTS, write_results
from perf.benchmarks.bench import answer_batch, answer_for, bench_requests, in_batches

OUT = RESULTS / "compute_floor.json"
BATCH_SIZES = (1, 4, 8, 16, 32)
PIPELINES = (names.SEARCH, names.RECOMMEND)


def cost(pipeline: OfflinePipeline, kind: str, batches: list[list[dict]], seconds: float):
    """(CPU µs, wall µs) per request of answering `batches` over and over for `seconds`."""
    answered, cpu_s, wall_s = answer_for(pipeline, kind, batches, seconds)
    return cpu_s / answered * 1e6, wall_s / answered * 1e6


def measure(repo: Path, batch_sizes=BATCH_SIZES, seconds: float = 2.0, rounds: int = 5) -> dict:
    """The results file's contents: `rounds` rounds of every batch size (each size once)
    for both pipelines of `repo`, summarised (`summarise`)."""
    if rounds < 1 or seconds <= 0:
        raise ValueError(
            f"the measurement needs rounds >= 1 and seconds > 0, got {rounds}, {seconds}"
        )
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    batch_sizes = tuple(sorted(set(batch_sizes)))
    missing = [kind for kind in PIPELINES if not (repo / kind).is_dir()]
    if missing:
        raise ValueError(f"no {' or '.join(missing)} pipeline in {repo}: build it first")
    requests = bench_requests(repo)
    most = min(len(r) for r in requests.values())
    if max(batch_sizes) > most:
        raise ValueError(f"a batch can hold at most the bench's {most} requests")
    samples, described = {}, machine.describe()
    for kind in PIPELINES:
        pipeline = OfflinePipeline(repo, kind, max(model_versions(repo, kind)))
        batches = {size: in_batches(requests[kind], size) for size in batch_sizes}
        for size in batch_sizes:  # untimed: the first calls load the frameworks
            answer_batch(pipeline, kind, batches[size][0])
        samples[kind] = {size: [] for size in batch_sizes}
        for round_ in range(rounds):
            print(f"{kind}: round {round_ + 1}/{rounds}", flush=True)
            for size in rotated(batch_sizes, round_):
                samples[kind][size].append(cost(pipeline, kind, batches[size], seconds))
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": described,
        "seconds": seconds,
        "rounds": rounds,
        **summarise(samples, described["cores"]),
    }


def rotated(batch_sizes: tuple[int, ...], round_: int) -> list[int]:
    """The order a round measures the batch sizes in: each round starts one size later."""
    turn = round_ % len(batch_sizes)
    return [*batch_sizes[turn:], *batch_sizes[:turn]]


def summarise(samples: dict[str, dict[int, list[tuple[float, float]]]], cores: int) -> dict:
    """Per pipeline and batch size (keys as text, JSON's), from each round's (CPU µs, wall µs)
    per request: every round's figures, their medians, the CPU's ratio to the smallest
    batch's, and the floor in requests per second on `cores`."""
    summary = {}
    for kind, by_size in samples.items():
        cpu = {size: statistics.median(c for c, _ in rounds) for size, rounds in by_size.items()}
        smallest = min(by_size)
        summary[kind] = {
            str(size): {
                "cpu_us_each": [round(c, 1) for c, _ in rounds],
                "wall_us_each": [round(w, 1) for _, w in rounds],
                "cpu_us_per_request": round(cpu[size], 1),
                "wall_us_per_request": round(statistics.median(w for _, w in rounds), 1),
                "cpu_vs_smallest_batch": round(cpu[size] / cpu[smallest], 3),
                "floor_requests_per_s": round(cores * 1e6 / cpu[size], 1),
            }
            for size, rounds in by_size.items()
        }
    return summary


def table(results: dict) -> str:
    """Each pipeline's row per batch size: its CPU (median, the rounds' range), its ratio to
    the smallest batch, its wall time and its floor."""
    cores = results["machine"]["cores"]
    lines = [
        "| pipeline | batch | CPU µs per request (rounds' range) | vs the smallest batch "
        f"| wall µs per request | floor, req/s on {cores} cores |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for kind in PIPELINES:
        for size, row in results.get(kind, {}).items():
            each = row["cpu_us_each"]
            lines.append(
                f"| {kind} | {size} | {row['cpu_us_per_request']:,.0f} "
                f"({min(each):,.0f}–{max(each):,.0f}) | {row['cpu_vs_smallest_batch']:.2f} "
                f"| {row['wall_us_per_request']:,.0f} | {row['floor_requests_per_s']:,.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.compute_floor", description=__doc__
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), help="%(default)s"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size and round")
    parser.add_argument("--rounds", type=int, default=5, help="%(default)s")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        results = measure(args.repository, tuple(args.batch_sizes), args.seconds, args.rounds)
    except ValueError as error:
        print(f"compute_floor: {error}", file=sys.stderr)
        return 2
    write_results(args.out, results)
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
