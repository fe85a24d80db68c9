"""A whole search build at catalog scale, served and graded (`make bench-search-scale`).

`python -m perf.benchmarks.search_scale` (default 1,000,000 items) runs, in `--work`
(`build/search_scale/`):

1. the synthetic catalog of `--items` items (`builders.data.synthetic.generate`, seed 0),
   written to `catalog.parquet`;
2. the real catalog-only build, `python -m builders build --dataset files --catalog
   catalog.parquet --out repo` (the search models: tokenizer, encoder and its INT8
   variants, embedding every item, the ANN index, BM25, fusion, top k), its output
   kept in `build.log`: wall time, each model's time, the embedding rate and the
   build's peak RSS;
3. the repository served by the real tritonserver: time to ready, the server's memory
   (proportional set size of every process in its group, in all and per process), a few
   queries' first hits, batch-1 latency of `search` over gRPC on the graded queries
   (`--repeats` passes) and each stage's queue and compute time per request in those
   passes (Triton's statistics), and NDCG@10 / recall@100 of every stage, the served
   pipeline and a plain BM25 over the same item texts (`perf.evaluation.quality.search_quality`) on
   the generator's graded relevance for that catalog.

The catalog is generated once per run (its graded relevance grades step 3); writing it and
step 2 are skipped when `repo` and `build.json` exist (`--rebuild` forces them).
Results go to `perf/results/search_scale.json`. A catalog-only build has no logged
queries, so no ranker is trained and the encoder's INT8 variants are not measured:
search serves retrieval, fusion and top k with the fp32 encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from perf import RESULTS, ROOT, triton_stats, write_results
from perf.latency import summary

OUT = RESULTS / "search_scale.json"
WORK = ROOT / "build" / "search_scale"

_STAGE_DONE = re.compile(r"\] (\w+) done in ([\d.]+) s$")
_EMBED_RATE = re.compile(r"^embedded (\d+)/(\d+) texts \((\d+) texts/s\)$")


def parse_build_log(lines: list[str]) -> dict:
    """Each model's build seconds and the last embedding rate, from the builder's output."""
    stages, rate = {}, None
    for line in lines:
        line = line.rstrip()
        if done := _STAGE_DONE.search(line):
            stages[done[1]] = float(done[2])
        elif embedded := _EMBED_RATE.match(line):
            rate = int(embedded[3])
    return {"stage_s": stages, "embed_texts_per_s": rate}


def group_memory_mb(pgid: int) -> dict:
    """Resident and proportional set size of every process in a group (shared pages counted
    once by PSS), and the PSS of each: a Python-backend stub under its model's name, the
    group's leader as `tritonserver` (the server and its in-process backends, ONNX Runtime
    among them), any other process as `other`."""
    from server.launcher import processes_in_group
    from server.stub_watchdog import server_stubs

    stubs = server_stubs(pgid)
    rss = pss = 0
    by_process: dict[str, int] = {}
    pids = processes_in_group(pgid)
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:])
        process_pss = int(fields["Pss"].split()[0])
        rss += int(fields["Rss"].split()[0])
        pss += process_pss
        label = stubs[pid].model if pid in stubs else "tritonserver" if pid == pgid else "other"
        by_process[label] = by_process.get(label, 0) + process_pss
    return {
        "processes": len(pids),
        "rss_mb": round(rss / 1024),
        "pss_mb": round(pss / 1024),
        "pss_mb_by_process": {label: round(kb / 1024) for label, kb in sorted(by_process.items())},
    }


def percentiles(times_ms: list[float]) -> dict:
    values = np.asarray(times_ms)
    return {
        "requests": len(values),
        **summary(values, 2),
        "mean_ms": round(float(values.mean()), 2),
    }


def stage_times(before: dict, after: dict) -> dict:
    """Mean milliseconds per request in each model's queue and compute (input, infer and
    output) between two of Triton's statistics answers (`model_stats` lists); models
    without requests in between are left out."""
    times = {}
    for (model, _), delta in sorted(triton_stats.difference(before, after).items()):
        count = delta["success"][0]
        if count <= 0:
            continue
        compute_ns = sum(delta[part][1] for part in triton_stats.COMPUTE)
        times[model] = {
            "requests": count,
            "queue_ms": round(float(delta["queue"][1]) / count / 1e6, 2),
            "compute_ms": round(float(compute_ns) / count / 1e6, 2),
        }
    return times


def generate(items: int):
    from builders.data import synthetic

    return synthetic.generate(n_items=items, n_users=50)


def build(work: Path, dataset, generated_s: float) -> dict:
    """The catalog (of `dataset`, generated in `generated_s` seconds) and the catalog-only
    build; returns what `build.json` records."""
    catalog, repo, log = work / "catalog.parquet", work / "repo", work / "build.log"
    shutil.rmtree(repo, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    items = len(dataset.catalog)
    started = time.perf_counter()
    dataset.catalog.to_parquet(catalog)
    catalog_s = generated_s + time.perf_counter() - started
    print(f"search_scale: catalog of {items:,} items in {catalog_s:.1f} s", file=sys.stderr)

    command = [sys.executable, "-m", "builders", "build", "--dataset", "files"]
    command += ["--catalog", str(catalog), "--out", str(repo)]
    started = time.perf_counter()
    lines = []
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        for line in process.stdout:
            out.write(line)
            lines.append(line)
            print(line, end="", file=sys.stderr, flush=True)
    if process.wait():
        raise SystemExit(f"search_scale: the build failed (exit {process.returncode}): see {log}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python", *command[1:]]),
        "items": items,
        "catalog_s": round(catalog_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        **parse_build_log(lines),
    }


def serve(repo: Path, dataset, repeats: int) -> dict:
    """Ready time, memory, sample hits, batch-1 latency and quality of the served repository."""
    import tritonclient.http as httpclient

    from clients.client import Client
    from perf.evaluation.quality import search_quality
    from server import TritonServer

    relevance = dataset.relevance
    queries = sorted(set(relevance["query"]))
    titles = dataset.catalog.set_index("item_id")["title"]
    started = time.perf_counter()
    with TritonServer(repo, startup_timeout=1800) as server:
        ready_s = time.perf_counter() - started
        print(f"search_scale: ready in {ready_s:.1f} s", file=sys.stderr, flush=True)
        with Client(server.grpc_url, timeout=60.0) as client:
            samples = {
                query: [str(titles[item.item_id]) for item in client.search(query, k=3).items]
                for query in dataset.sample_queries(4, seed=1)  # the demo's first four
            }
            statistics = httpclient.InferenceServerClient(server.http_url)
            before = statistics.get_inference_statistics()
            passes = []
            for _ in range(repeats):
                times = []
                for query in queries:
                    sent = time.perf_counter()
                    client.search(query, k=10)
                    times.append((time.perf_counter() - sent) * 1000)
                passes.append(percentiles(times))
                print(f"search_scale: latency {passes[-1]}", file=sys.stderr, flush=True)
            stages = stage_times(before, statistics.get_inference_statistics())
            statistics.close()
            memory = group_memory_mb(server.pid)
            print("search_scale: grading the stages and BM25 ...", file=sys.stderr, flush=True)
            quality = search_quality(repo, dataset, relevance, client)
    return {
        "ready_s": round(ready_s, 1),
        "memory": memory,
        "first_hits": samples,
        "latency_batch1_k10": passes,
        "stage_ms": stages,
        "quality": quality,
    }


def readme_table(result: dict) -> str:
    """The tables README.md quotes, from search_scale.json (a test checks that it quotes
    the committed copy, docs/results/search_scale.json)."""
    from perf.evaluation.quality import search_table

    build, served = result["build"], result["served"]
    lines = [
        f"| build step ({result['items']:,} items) | seconds |",
        "|---|---:|",
        f"| catalog (synthetic generator) | {build['catalog_s']:.1f} |",
        *(f"| {model} | {seconds:.1f} |" for model, seconds in build["stage_s"].items()),
        f"| whole build, wall clock | {build['wall_s']:.1f} |",
        "",
        f"Peak RSS of the build {build['peak_rss_mb']:,} MB; the encoder embedded "
        f"{build['embed_texts_per_s']} texts/s.",
        "",
        "| served | ready s | memory (PSS) MB | p50 ms per pass | p99 ms per pass |",
        "|---|---:|---:|---:|---:|",
    ]
    passes = served["latency_batch1_k10"]
    memory = served["memory"].get("pss_mb_by_process", {})
    p50 = ", ".join(f"{p['p50_ms']:.1f}" for p in passes)
    p99 = ", ".join(f"{p['p99_ms']:.1f}" for p in passes)
    lines += [
        f"| `search`, batch 1, k 10, {passes[0]['requests']} queries | {served['ready_s']:.1f} "
        f"| {served['memory']['pss_mb']:,} | {p50} | {p99} |",
        "",
        "| stage (server side, per request) | queue ms | compute ms | process PSS MB |",
        "|---|---:|---:|---:|",
        *(
            f"| `{model}` | {t['queue_ms']:.2f} | {t['compute_ms']:.2f} | "
            f"{format(memory[model], ',') if model in memory else ''} |"
            for model, t in served["stage_ms"].items()
        ),
        *(
            f"| {label} (process) | | | {mb:,} |"
            for label, mb in memory.items()
            if label not in served["stage_ms"]
        ),
        "",
        *search_table({f"{result['items']:,} items": served["quality"]}),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.search_scale", description=__doc__
    )
    parser.add_argument("--items", type=int, default=1_000_000, help="%(default)s")
    parser.add_argument("--work", type=Path, default=WORK, help="%(default)s")
    parser.add_argument("--rebuild", action="store_true", help="build even if work/repo exists")
    parser.add_argument("--repeats", type=int, default=3, help="latency passes (%(default)s)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    repo, record = args.work / "repo", args.work / "build.json"
    started = time.perf_counter()
    dataset = generate(args.items)  # the catalog to build and its graded relevance
    generated_s = time.perf_counter() - started
    built = json.loads(record.read_text()) if record.is_file() and repo.is_dir() else None
    if args.rebuild or built is None or built["items"] != args.items:
        built = build(args.work, dataset, generated_s)
        record.write_text(json.dumps(built, indent=2) + "\n")
    else:
        print(f"search_scale: reusing the build of {built['date']} in {repo}", file=sys.stderr)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "items": args.items,
        "graded_queries": int(dataset.relevance["query"].nunique()),
        "build": built,
        "served": serve(repo, dataset, args.repeats),
    }
    write_results(args.out, result)
    print(readme_table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
