"""`make bench-client`: what `clients.Client` costs over a bare tritonclient call.

Against one server (started here on `--repo`, or running at `--grpc-url` and
`--http-url`), for each protocol and pipeline, the same request is made
`--iterations` times at concurrency 1 by three arms, interleaved in one loop
(the order rotates every iteration, so drift hits all arms alike):

* bare: tritonclient alone (build the InferInputs, infer, read the outputs);
* client: `Client.search` / `Client.recommend` (request checks, routing, the
  retry loop with its deadline, the typed result);
* client+catalog: the same with a catalog, so the items carry their fields.

Writes p50, p99 and mean latency per arm, the ratios to bare, and the calling
thread's CPU time per call (p50; the client's own work, little moved by the
server's noise) into `perf/results/client_overhead.json`, and prints them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from builders import names
from clients import Client
from clients.formatting import format_table
from perf import RESULTS, ROOT, write_results
from perf.latency import percentile_ms
from server import TritonServer

OUT = RESULTS / "client_overhead.json"
QUERY = "red running shoes"
USER = 42
K = 10
ARMS = ("bare", "client", "client+catalog")


def bare_call(module, client, model: str) -> tuple[np.ndarray, np.ndarray]:
    """The request a tritonclient user writes by hand."""
    k = ("k", np.array([[K]], np.int32), "INT32")
    if model == names.SEARCH:
        values = [("query", np.array([[QUERY.encode()]], dtype=np.object_), "BYTES"), k]
    else:
        values = [("user_id", np.array([[USER]], np.int64), "INT64"), k]
    inputs = []
    for name, value, datatype in values:
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return result.as_numpy("item_ids")[0], result.as_numpy("scores")[0]


def typed_call(client: Client, model: str):
    if model == names.SEARCH:
        return client.search(QUERY, k=K)
    return client.recommend(USER, k=K)


def measure(protocol: str, url: str, catalog: Path, model: str, iterations: int, warmup: int):
    module = grpcclient if protocol == "grpc" else httpclient
    bare = module.InferenceServerClient(url)
    plain = Client(url, protocol=protocol)
    with_catalog = Client(url, protocol=protocol, catalog=catalog)
    calls = {
        "bare": lambda: bare_call(module, bare, model),
        "client": lambda: typed_call(plain, model),
        "client+catalog": lambda: typed_call(with_catalog, model),
    }
    expected = [int(i) for i in calls["bare"]()[0]]
    assert [i.item_id for i in calls["client"]().items] == expected
    wall = {arm: [] for arm in ARMS}
    cpu = {arm: [] for arm in ARMS}
    try:
        for iteration in range(warmup + iterations):
            shift = iteration % len(ARMS)
            for arm in ARMS[shift:] + ARMS[:shift]:
                started, started_cpu = time.perf_counter(), time.thread_time()
                calls[arm]()
                if iteration >= warmup:
                    wall[arm].append(time.perf_counter() - started)
                    cpu[arm].append(time.thread_time() - started_cpu)
    finally:
        bare.close()
        plain.close()
        with_catalog.close()
    return {arm: np.array(wall[arm]) * 1000 for arm in ARMS}, {
        arm: np.array(cpu[arm]) * 1e6 for arm in ARMS
    }


def summarise(protocol: str, model: str, times: dict, cpu: dict) -> list[dict]:
    base_p50, base_p99 = (percentile_ms(times["bare"], q) for q in (50, 99))
    rows = []
    for arm in ARMS:
        p50, p99 = (percentile_ms(times[arm], q) for q in (50, 99))
        rows.append(
            {
                "protocol": protocol,
                "model": model,
                "arm": arm,
                "p50_ms": round(float(p50), 4),
                "p99_ms": round(float(p99), 4),
                "mean_ms": round(float(times[arm].mean()), 4),
                "p50_ratio": round(float(p50 / base_p50), 4),
                "p99_ratio": round(float(p99 / base_p99), 4),
                "p50_overhead_us": round(float(p50 - base_p50) * 1000, 1),
                "cpu_p50_us": round(float(np.median(cpu[arm])), 1),
                "cpu_p50_overhead_us": round(
                    float(np.median(cpu[arm]) - np.median(cpu["bare"])), 1
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.benchmarks.client_overhead")
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--grpc-url", help="use a running server (with --http-url)")
    parser.add_argument("--http-url")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    latest = max(int(p.name) for p in (args.repo / names.SEARCH).iterdir() if p.name.isdigit())
    catalog = args.repo / names.SEARCH / str(latest) / "catalog.parquet"

    def run(urls: dict[str, str]) -> list[dict]:
        rows = []
        for protocol, url in urls.items():
            for model in (names.SEARCH, names.RECOMMEND):
                times, cpu = measure(protocol, url, catalog, model, args.iterations, args.warmup)
                rows += summarise(protocol, model, times, cpu)
        return rows

    if args.grpc_url and args.http_url:
        rows = run({"grpc": args.grpc_url, "http": args.http_url})
    else:
        print(f"starting tritonserver on {args.repo} ...", flush=True)
        with TritonServer(args.repo) as server:
            rows = run({"grpc": server.grpc_url, "http": server.http_url})

    results = {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "server": args.grpc_url or f"local tritonserver on {args.repo}",
        "concurrency": 1,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "request": {"search": {"query": QUERY, "k": K}, "recommend": {"user_id": USER, "k": K}},
        "results": rows,
    }
    write_results(args.out, results)
    columns = ["protocol", "model", "arm", "p50_ms", "p99_ms", "p50_ratio", "p99_ratio"]
    columns += ["p50_overhead_us", "cpu_p50_us", "cpu_p50_overhead_us"]
    formats = {c: ".1f" if c.endswith("_us") else ".3f" for c in columns}
    print(format_table(columns, [[row[c] for c in columns] for row in rows], formats))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
