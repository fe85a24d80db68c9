"""Do ONNX Runtime's spinning threads cost the served pipelines? (`make bench-spinning`)

The newest `search` and `recommend` releases of `--repository` are served with their composed
stages apart (`pipelines.apart`: the cpu profile's composed stages run their graphs in Python,
with sleeping threads), and every stage on the onnxruntime backend is loaded on one server with
the `allow_spinning` parameter at 1 (ONNX Runtime's own default: idle intra-op threads spin)
and at 0 (the served default: they sleep, since every stage is a process of its own on the
same cores). Each pipeline then takes closed-loop HTTP load
(`perf.loadgen`, the bench's logged requests) at each concurrency, `--repetitions` times with
the two arms interleaved, their order swapped every repetition. Writes throughput and p99
per run to `perf/results/spinning_ab.json`, and prints the arms' medians.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from builders import machine
from perf import RESULTS, ROOT, loadgen, write_results
from perf.benchmarks.bench import apart_ensemble, bench_requests, load_configs, triton_bodies
from perf.tuning import spec
from perf.tuning.sweep import apply_tunables
from server import TritonServer

#: `allow_spinning` of each arm.
ARMS = {"spinning": 1, "sleeping": 0}
CONCURRENCY = (16, 32)
OUT = RESULTS / "spinning_ab.json"


def onnx_stages(repo: Path, stages: list[str]) -> list[str]:
    """The stages among `stages` that the onnxruntime backend serves."""
    return [s for s in stages if spec.model_config(repo, s).get("backend") == "onnxruntime"]


def measure(repo: Path, seconds: float, repetitions: int, concurrency=CONCURRENCY) -> dict:
    requests = bench_requests(repo)
    ensembles = {kind: apart_ensemble(repo, kind) for kind in requests}
    stages = sorted({step.model for e in ensembles.values() for step in e.steps})
    originals = {m: spec.model_config(repo, m) for m in onnx_stages(repo, stages)}
    if not originals:
        raise ValueError(f"the pipelines of {repo} serve no stage on the onnxruntime backend")
    rows = []
    with TritonServer(
        repo, model_control="explicit", load_models=stages, exit_timeout_secs=5
    ) as server:
        load_configs(server, {kind: e.to_config() for kind, e in ensembles.items()})
        host, port = server.http_url.split(":")
        for repetition in range(repetitions):
            arms = list(ARMS.items())
            for arm, spinning in arms if repetition % 2 == 0 else arms[::-1]:
                configs = {
                    m: apply_tunables(c, {"allow_spinning": spinning}) for m, c in originals.items()
                }
                load_configs(server, configs)
                for kind in requests:
                    bodies = triton_bodies(kind, requests[kind])
                    for level in concurrency:
                        print(f"repetition {repetition + 1}/{repetitions}: {arm}, {kind}, {level}")
                        path = f"/v2/models/{kind}/infer"
                        load = loadgen.closed_loop(host, int(port), path, bodies, level, seconds)
                        rows.append(
                            {
                                "arm": arm,
                                "kind": kind,
                                "concurrency": level,
                                "repetition": repetition,
                                "throughput": round(load.throughput, 1),
                                "p99_ms": round(load.p99_ms, 1),
                                "errors": load.errors,
                            }
                        )
        load_configs(server, originals)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "repository": str(repo),
        "onnxruntime_stages": sorted(originals),
        "seconds": seconds,
        "rows": rows,
    }


def medians(results: dict) -> dict[tuple[str, int, str], tuple[float, float]]:
    """(kind, concurrency, arm) -> (median throughput, median p99 ms) over the repetitions."""
    groups: dict = {}
    for row in results["rows"]:
        key = (row["kind"], row["concurrency"], row["arm"])
        groups.setdefault(key, []).append((row["throughput"], row["p99_ms"]))
    return {key: tuple(float(v) for v in np.median(runs, axis=0)) for key, runs in groups.items()}


def readme_table(results: dict) -> str:
    """The runs as the README quotes them: each repetition, then the medians."""
    lines = [
        "| pipeline | concurrency | ONNX Runtime threads | req/s (each) | p99 ms (each) "
        "| median req/s | median p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    middle = medians(results)
    for kind, level, arm in sorted(middle, key=lambda k: (k[0] != "search", k[1], k[2])):
        runs = [
            r
            for r in results["rows"]
            if (r["kind"], r["concurrency"], r["arm"]) == (kind, level, arm)
        ]
        each = ", ".join(f"{r['throughput']:,.0f}" for r in runs)
        p99 = ", ".join(f"{r['p99_ms']:.0f}" for r in runs)
        throughput, latency = middle[(kind, level, arm)]
        lines.append(
            f"| {kind} | {level} | {arm} | {each} | {p99} | {throughput:,.0f} | {latency:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.spinning_ab", description=__doc__
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--seconds", type=float, default=8.0, help="per run (%(default)s)")
    parser.add_argument("--repetitions", type=int, default=3, help="%(default)s")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        results = measure(args.repository, args.seconds, args.repetitions)
    except ValueError as error:
        print(f"spinning_ab: {error}", file=sys.stderr)
        return 2
    write_results(args.out, results)
    print(readme_table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
