"""`make bench`: the numbers behind perf/README.md, measured side by side in one run.

1. Five ways to serve `search` and `recommend`, the same closed-loop HTTP/JSON load
   from `perf.loadgen` for all: naive (`perf.naive`: FastAPI + PyTorch, one request per
   call), Ray Serve with `@serve.batch` (`perf.ray_serve`, in its own environment),
   Triton with the builders' default configs, Triton with the configs the sweeps
   (`perf/sweeps/bench_*.yaml`, run first on the same server) chose, and those tuned
   configs with the response cache on at every stage that depends on the query alone
   (`names.QUERY_ONLY_STAGES`; the encoder's hit rate is recorded). The Triton arms run
   on one server (its cache configured; the cache-off arms load every model without
   `response_cache`). Each arm is measured `--repetitions` times, the arms interleaved
   within every repetition; an arm's figure is its best throughput at p99 <= the SLO
   over the concurrency levels.
2. Where the CPU goes: each pipeline on the default configs at concurrency 16, the CPU
   time of every Triton process (a stage's stub, `tritonserver`) and of the load
   generator per request (`perf.stage_cpu`).
3. Encoder roofline: the machine's GEMM peak (the best of torch and ONNX Runtime
   on a 2048 x 2048 matmul, fp32 and int8) and the encoders' achieved FLOP/s in
   ONNX Runtime at batch 32.

Writes `perf/results/bench/summary.json` (one throughput per repetition and arm),
`bench.json` (every level) and `bench.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import tritonclient.http as httpclient

from builders import machine, names
from builders.pipelines import PIPELINE_FILE, PipelineSpec, Stage
from builders.repository import model_versions, read_manifest
from perf import inputs, loadgen, report, spec, stage_cpu
from perf.sweep import Sweep
from server import TritonServer
from server.launcher import free_port
from server.stub_watchdog import server_stubs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "perf" / "results" / "bench"
SWEEP_FILES = {
    names.SEARCH: ROOT / "perf" / "sweeps" / "bench_search.yaml",
    names.RECOMMEND: ROOT / "perf" / "sweeps" / "bench_recommend.yaml",
}
#: The Ray Serve baseline's environment (`make ray-env`): its pins differ from ours.
RAY_VENV = ROOT / "build" / "ray-venv"
ARMS = ("naive", "ray_serve", "triton_default", "triton_tuned", "triton_tuned_cache")
LEVELS = (1, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
CACHE_MB = 256
STAGE_CPU_CONCURRENCY = 16
#: The stage CPU breakdown of search with the teacher swapped in for a served student.
TEACHER_SEARCH = "search_with_teacher"
REPLAY_CONCURRENCY = 32
BATCH = 32


# -- roofline -------------------------------------------------------------
def _best_time(run, seconds: float) -> float:
    run()
    best, deadline = float("inf"), time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _ort_matmul(dtype: str, n: int):
    """An ONNX Runtime session of one n x n MatMul (MatMulInteger for int8)."""
    from onnx import TensorProto, helper

    if dtype == "int8":
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        types = (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
        feed = {
            "a": np.random.randint(0, 200, (n, n), dtype=np.uint8),
            "b": np.random.randint(-100, 100, (n, n), dtype=np.int8),
        }
    else:
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        types = (TensorProto.FLOAT,) * 3
        feed = {
            "a": np.random.rand(n, n).astype(np.float32),
            "b": np.random.rand(n, n).astype(np.float32),
        }
    graph = helper.make_graph(
        [node],
        "gemm",
        [
            helper.make_tensor_value_info("a", types[0], [n, n]),
            helper.make_tensor_value_info("b", types[1], [n, n]),
        ],
        [helper.make_tensor_value_info("c", types[2], [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def gemm_peak(dtype: str, n: int = 2048, seconds: float = 3.0) -> dict:
    """Best FLOP/s (ops/s for int8) of a square n x n matmul, torch and ONNX Runtime."""
    if dtype == "int8":
        a = torch.randint(-100, 100, (n, n), dtype=torch.int8)
        b = torch.randint(-100, 100, (n, n), dtype=torch.int8)

        def torch_run():
            return torch._int_mm(a, b)
    else:
        a, b = torch.randn(n, n), torch.randn(n, n)

        def torch_run():
            return a @ b

    flops = 2 * n**3
    return {
        "torch": flops / _best_time(torch_run, seconds),
        "onnxruntime": flops / _best_time(_ort_matmul(dtype, n), seconds),
    }


def matmul_flops_per_token(path: Path) -> int:
    """2 x K x N summed over the graph's MatMul weights (attention's own products left out)."""
    model = onnx.load(str(path))
    weights = {i.name: list(i.dims) for i in model.graph.initializer if len(i.dims) == 2}
    flops = 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            for name in node.input[1:2]:
                if name in weights:
                    k, n = weights[name]
                    flops += 2 * k * n
    return flops


def encoder_rate(path: Path, ids: np.ndarray, mask: np.ndarray, seconds: float = 4.0) -> float:
    """Sequences per second at batch `len(ids)` in ONNX Runtime."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": mask}
    session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        runs += 1
    return runs * len(ids) / (time.perf_counter() - start)


def roofline(repo: Path) -> dict:
    dataset = inputs.dataset_of(repo, names.SEARCH)
    tokenizer = inputs._tokenizer(repo)
    ids, mask = tokenizer.encode(dataset.sample_queries(BATCH, 0))
    measured = {"fp32": gemm_peak("fp32"), "int8": gemm_peak("int8")}
    peaks = {precision: max(by_library.values()) for precision, by_library in measured.items()}
    rows = {}
    for model, precision in ((names.TEXT_ENCODER, "fp32"), (names.QUERY_ENCODER_SHALLOW, "fp32")):
        version = max(int(p.name) for p in (repo / model).iterdir() if p.name.isdigit())
        path = repo / model / str(version) / "model.onnx"
        per_sequence = matmul_flops_per_token(path) * ids.shape[1]
        rate = encoder_rate(path, ids, mask)
        achieved = rate * per_sequence
        rows[model] = {
            "precision": precision,
            "batch": BATCH,
            "sequence_length": int(ids.shape[1]),
            "gflop_per_sequence": per_sequence / 1e9,
            "sequences_per_s": rate,
            "achieved_gflops": achieved / 1e9,
            "peak_gflops": peaks[precision] / 1e9,
            "fraction_of_peak": achieved / peaks[precision],
        }
    return {
        "threads": torch.get_num_threads(),
        "gemm_gflops_by_library": {
            p: {lib: v / 1e9 for lib, v in libs.items()} for p, libs in measured.items()
        },
        "gemm_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "encoders": rows,
    }


# -- serving arms ---------------------------------------------------------
def ramp(host: str, port: int, path: str, bodies: list[bytes], slo_ms: float, seconds: float):
    """Closed-loop levels until p99 breaks the SLO; return every level and the best within."""
    levels = []
    for concurrency in LEVELS:
        result = loadgen.closed_loop(host, port, path, bodies, concurrency, seconds)
        levels.append(result.__dict__)
        print(
            f"    concurrency {concurrency}: {result.throughput:.1f}/s p99 {result.p99_ms:.1f} ms "
            f"({result.errors} errors)",
            flush=True,
        )
        if not result.p99_ms <= slo_ms:
            break
    within = [lv for lv in levels if lv["p99_ms"] <= slo_ms and lv["errors"] == 0]
    best = max(within, key=lambda lv: lv["throughput"], default=None)
    return {"throughput_at_slo": best["throughput"] if best else 0.0, "levels": levels}


def _tensor(name: str, datatype: str, value) -> dict:
    return {"name": name, "shape": [1, 1], "datatype": datatype, "data": [value]}


def triton_bodies(kind: str, requests: list[dict]) -> list[bytes]:
    """KServe v2 JSON bodies of the pipeline's requests (one request of batch 1 each)."""
    bodies = []
    for r in requests:
        tensors = [_tensor("user_id", "INT64", r["user_id"][0]), _tensor("k", "INT32", r["k"][0])]
        if kind == names.SEARCH:
            tensors.insert(0, _tensor("query", "BYTES", r["query"][0]))
        outputs = [{"name": "item_ids"}, {"name": "scores"}]
        bodies.append(json.dumps({"inputs": tensors, "outputs": outputs}).encode())
    return bodies


def plain_bodies(kind: str, requests: list[dict]) -> list[bytes]:
    """The baselines' JSON bodies (`perf.naive`, `perf.ray_serve`)."""
    fields = ("query", "user_id", "k") if kind == names.SEARCH else ("user_id", "k")
    return [json.dumps({f: r[f][0] for f in fields}).encode() for r in requests]


def wait_http(port: int, path: str, process: subprocess.Popen, timeout: float = 300) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"nothing answered on port {port} after {timeout:g} s")


def baseline_commands(repo: Path) -> dict[str, list[str] | str]:
    """argv (without the port) of each baseline server, or why it cannot run here."""
    commands: dict[str, list[str] | str] = {
        "naive": [sys.executable, "-m", "perf.naive", "--repository", str(repo)]
    }
    ray_python = RAY_VENV / "bin" / "python"
    commands["ray_serve"] = (
        [str(ray_python), "-m", "perf.ray_serve", "--repository", str(repo)]
        if ray_python.exists()
        else f"no Ray environment at {RAY_VENV} (make ray-env)"
    )
    return commands


def without_cache(config: dict) -> dict:
    config = dict(config)
    config.pop("response_cache", None)
    return config


def arm_configs(originals: dict[str, dict], tuned: dict[str, dict]) -> dict[str, dict]:
    """Per Triton arm, the configs to load: the builder's defaults and the sweep's choice,
    both with the response cache off, and the tuned configs with the encoders' cache on."""
    return {
        "triton_default": {m: without_cache(c) for m, c in originals.items()},
        "triton_tuned": {m: without_cache({**originals, **tuned}[m]) for m in originals},
        "triton_tuned_cache": {m: {**originals, **tuned}[m] for m in originals},
    }


def load_configs(server: TritonServer, configs: dict[str, dict]) -> None:
    for model, config in configs.items():
        server.load_model(model, config=config)


def repeat_share(queries: list[str]) -> float:
    """The share of `queries` (in logged order) whose query came before: the hit rate an
    unbounded response cache, empty at the start, would have on that traffic."""
    seen: set[str] = set()
    repeats = 0
    for query in queries:
        repeats += query in seen
        seen.add(query)
    return repeats / len(queries) if queries else 0.0


def cache_counts(server: TritonServer, model: str) -> tuple[int, int]:
    """(hits, misses) of `model`'s response cache so far, all versions."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"]
    finally:
        client.close()
    counts = [
        sum(int(s["inference_stats"].get(key, {}).get("count", 0)) for s in stats)
        for key in ("cache_hit", "cache_miss")
    ]
    return counts[0], counts[1]


def stage_cpu_breakdown(
    server: TritonServer,
    kind: str,
    bodies: list[bytes],
    seconds: float,
    stages: Collection[str] | None = None,
):
    """`perf.stage_cpu` of one pipeline under closed-loop load on `server`'s loaded configs
    (`stages`: the stage models it runs, when not those its release pins)."""
    host, port = server.http_url.split(":")
    path = f"/v2/models/{kind}/infer"
    loadgen.closed_loop(host, int(port), path, bodies, STAGE_CPU_CONCURRENCY, 1.0, warmup_s=0)
    if stages is None:
        stages = spec.pipeline_stages(server.model_repository, kind)
    labels = {pid: s.model for pid, s in server_stubs(server.pid).items() if s.model in stages}
    labels.update({server.pid: "tritonserver", os.getpid(): "load generator"})
    before, started = stage_cpu.snapshot(labels), time.monotonic()
    load = loadgen.closed_loop(
        host, int(port), path, bodies, STAGE_CPU_CONCURRENCY, seconds, warmup_s=0
    )
    wall_s = time.monotonic() - started
    measured = stage_cpu.breakdown(
        before, stage_cpu.snapshot(labels), load.requests, wall_s, os.cpu_count() or 1
    )
    return {"concurrency": STAGE_CPU_CONCURRENCY, "errors": load.errors, **measured}


def stage_cpu_all(server: TritonServer, requests: dict[str, list], seconds: float) -> dict:
    """`perf.stage_cpu` of each pipeline on the loaded configs, and of search with the
    teacher in place of a served student."""
    costs = {}
    for kind, pipeline_requests in requests.items():
        print(f"CPU per stage: {kind}", flush=True)
        bodies = triton_bodies(kind, pipeline_requests)
        costs[kind] = stage_cpu_breakdown(server, kind, bodies, seconds)
    if served_encoder(server.model_repository).model != names.TEXT_ENCODER:
        print("CPU per stage: search with the teacher as its query encoder", flush=True)
        bodies = triton_bodies(names.SEARCH, requests[names.SEARCH])
        costs[TEACHER_SEARCH] = teacher_stage_cpu(server, bodies, seconds)
    return costs


def served_encoder(repo: Path) -> Stage:
    """The query encoder the newest search release pins (the teacher or a student)."""
    release = model_versions(repo, names.SEARCH)[-1]
    return PipelineSpec.load(repo / names.SEARCH / str(release) / PIPELINE_FILE).stages["encoder"]


def teacher_stage_cpu(server: TritonServer, bodies: list[bytes], seconds: float) -> dict:
    """`perf.stage_cpu` of search with its query-encoder step swapped for the teacher the
    served student was distilled from (the index holds that teacher's item embeddings): what
    the student saves, measured on the same server and configs."""
    repo = server.model_repository
    student = served_encoder(repo)
    search = spec.model_config(repo, names.SEARCH)
    manifest = read_manifest(repo, student.model, student.version)
    teacher_version = manifest["depends_on"][names.TEXT_ENCODER]
    steps = [
        {**step, "model_name": names.TEXT_ENCODER, "model_version": teacher_version}
        if step["model_name"] == student.model
        else step
        for step in search["ensemble_scheduling"]["step"]
    ]
    swapped = {**search, "ensemble_scheduling": {"step": steps}}
    loaded = server.is_model_ready(names.TEXT_ENCODER)
    if not loaded:
        load_configs(server, {names.TEXT_ENCODER: spec.model_config(repo, names.TEXT_ENCODER)})
    load_configs(server, {names.SEARCH: swapped})
    try:
        stages = {*spec.pipeline_stages(repo, names.SEARCH), names.TEXT_ENCODER} - {student.model}
        return stage_cpu_breakdown(server, names.SEARCH, bodies, seconds, stages)
    finally:
        load_configs(server, {names.SEARCH: search})
        if not loaded:
            server.unload_model(names.TEXT_ENCODER)


def cold_cache_replay(repo: Path, configs: dict[str, dict]) -> dict:
    """Every logged search once, in logged order, on a fresh server with the response
    cache on (`configs`: the cache arm's): what real traffic meets from a cold cache."""
    dataset = inputs.dataset_of(repo, names.SEARCH)
    queries = dataset.logged_searches().tolist()
    users = dataset.sample_user_ids(len(queries), seed=11)
    requests = [
        {"query": [q], "user_id": [int(u)], "k": [inputs.DEFAULT_K]} for q, u in zip(queries, users)
    ]
    stages = spec.pipeline_stages(repo, names.SEARCH)
    with TritonServer(
        repo,
        model_control="explicit",
        load_models=[names.SEARCH, *stages],
        exit_timeout_secs=5,
        response_cache_mb=CACHE_MB,
    ) as server:
        load_configs(server, {m: c for m, c in configs.items() if m in stages})
        host, port = server.http_url.split(":")
        encoder = served_encoder(repo).model
        counted = cache_counts(server, encoder)
        load = loadgen.closed_loop(
            host,
            int(port),
            f"/v2/models/{names.SEARCH}/infer",
            triton_bodies(names.SEARCH, requests),
            REPLAY_CONCURRENCY,
            duration_s=1800,
            warmup_s=0,
            once=True,
        )
        hits, misses = np.subtract(cache_counts(server, encoder), counted)
    return {
        "searches": len(requests),
        "concurrency": REPLAY_CONCURRENCY,
        "throughput": round(load.throughput, 1),
        "p50_ms": round(load.p50_ms, 1),
        "p99_ms": round(load.p99_ms, 1),
        "errors": load.errors,
        "encoder_hit_rate": round(float(hits / max(hits + misses, 1)), 4),
        "logged_repeat_share": round(repeat_share(queries), 4),
    }


def bench_requests(repo: Path) -> dict[str, list]:
    """The requests every arm sends, per pipeline: 512 drawn from the build's dataset."""
    requests = {}
    for kind in (names.SEARCH, names.RECOMMEND):
        dataset = inputs.dataset_of(repo, kind)
        requests[kind] = inputs.input_data(kind, dataset, repo, 512, seed=7)["data"]
    return requests


def stage_cpu_only(repo: Path, seconds: float) -> dict:
    """Only the CPU per stage of both pipelines (and of search with the teacher), on the
    built configs: what `make bench` measures last, in a minute."""
    requests = bench_requests(repo)
    stages = sorted({m for kind in requests for m in spec.pipeline_stages(repo, kind)})
    with TritonServer(
        repo, model_control="explicit", load_models=[*requests, *stages], exit_timeout_secs=5
    ) as server:
        costs = stage_cpu_all(server, requests, seconds)
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine.describe(), "stage_cpu": costs}


def serving(repo: Path, slo_ms: float, seconds: float, repetitions: int, work: Path) -> dict:
    """Every arm, both pipelines, `repetitions` times interleaved; see the module doc."""
    requests = bench_requests(repo)
    results: dict = {kind: {arm: [] for arm in ARMS} for kind in requests}
    skipped: dict[str, str] = {}
    stage_costs: dict[str, dict] = {}
    hit_rates: list[float] = []
    replay: dict = {}
    baselines: dict[str, int] = {}
    processes: list[subprocess.Popen] = []
    stages = sorted({m for kind in requests for m in spec.pipeline_stages(repo, kind)})
    try:
        for arm, command in baseline_commands(repo).items():
            if isinstance(command, str):
                skipped[arm] = command
                continue
            baselines[arm] = free_port()
            processes.append(subprocess.Popen([*command, "--port", str(baselines[arm])], cwd=ROOT))
            wait_http(baselines[arm], "/health", processes[-1])
        originals = {m: spec.model_config(repo, m) for m in stages}
        tuned: dict[str, dict] = {}
        sweeps = {}
        # The sweeps tune the cache-off configs, so they run on a server without a cache.
        with TritonServer(
            repo, model_control="explicit", load_models=[*requests, *stages], exit_timeout_secs=5
        ) as server:
            for kind, sweep_file in SWEEP_FILES.items():
                print(f"sweep {sweep_file.name} (smart)", flush=True)
                result = Sweep(spec.load(sweep_file, repo), server, work / kind).run()
                summary = report.write(result, work / kind)
                tuned.update(result.chosen_configs())
                sweeps[kind] = {
                    "config": result.best.config if result.best else None,
                    "confirmation": result.confirmation,
                    **{k: summary[k] for k in ("configs_tried", "measurements", "wall_s")},
                }
        with TritonServer(
            repo,
            model_control="explicit",
            load_models=[*requests, *stages],
            exit_timeout_secs=5,
            response_cache_mb=CACHE_MB,
        ) as server:
            host, port = server.http_url.split(":")
            configs = arm_configs(originals, tuned)
            for repetition in range(repetitions):
                for arm in (a for a in ARMS if a not in skipped):
                    if arm in configs:
                        load_configs(server, configs[arm])
                    for kind in requests:
                        print(
                            f"repetition {repetition + 1}/{repetitions}: {arm}, {kind}", flush=True
                        )
                        if arm in configs:
                            target = (host, int(port), f"/v2/models/{kind}/infer")
                            bodies = triton_bodies(kind, requests[kind])
                        else:
                            target = ("127.0.0.1", baselines[arm], f"/{kind}")
                            bodies = plain_bodies(kind, requests[kind])
                        cached_search = arm == "triton_tuned_cache" and kind == names.SEARCH
                        if cached_search:
                            counted = cache_counts(server, served_encoder(repo).model)
                        results[kind][arm].append(ramp(*target, bodies, slo_ms, seconds))
                        if cached_search:
                            hits, misses = np.subtract(
                                cache_counts(server, served_encoder(repo).model), counted
                            )
                            hit_rates.append(float(hits / max(hits + misses, 1)))
            load_configs(server, configs["triton_default"])
            stage_costs = stage_cpu_all(server, requests, 2 * seconds)
        print("search: the logged searches in order, from a cold cache", flush=True)
        replay = cold_cache_replay(repo, configs["triton_tuned_cache"])
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    return {
        "arms": results,
        "skipped": skipped,
        "sweeps": sweeps,
        "stage_cpu": stage_costs,
        "search_cache": {"encoder_hit_rate_each_repetition": hit_rates, "cold_replay": replay},
    }


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0


def summarise(serving_results: dict, slo_ms: float, repetitions: int) -> dict:
    """summary.json: per pipeline and arm, the throughput at the SLO of each repetition,
    the ratios the targets are stated in (medians; tuned vs default per repetition) and
    the CPU per stage."""
    summary: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "slo_p99_ms": slo_ms,
        "repetitions": repetitions,
        "skipped": serving_results["skipped"],
    }
    for kind, arms in serving_results["arms"].items():
        figures = {arm: [r["throughput_at_slo"] for r in runs] for arm, runs in arms.items()}
        summary[kind] = {arm: values for arm, values in figures.items() if values}
        default, tuned = figures["triton_default"], figures["triton_tuned"]
        per_run = [t / d if d else None for t, d in zip(tuned, default)]
        naive = median(figures["naive"])
        summary[f"{kind}_ratios"] = {
            "tuned_vs_naive_median": median(tuned) / naive if naive else None,
            "tuned_vs_default_each_repetition": per_run,
            "tuned_beats_default_every_repetition": all(r is not None and r > 1 for r in per_run),
        }
    summary["stage_cpu"] = costs = serving_results["stage_cpu"]
    if TEACHER_SEARCH in costs:
        served = costs[names.SEARCH]["processes"]
        (student,) = (served[model] for model in names.QUERY_ENCODERS[1:] if model in served)
        teacher = costs[TEACHER_SEARCH]["processes"][names.TEXT_ENCODER]
        summary["search_encoder_cpu_vs_teacher"] = round(
            student["cpu_us_per_request"] / teacher["cpu_us_per_request"], 4
        )
    summary["search_cache"] = serving_results["search_cache"]
    return summary


def readme_table(summary: dict) -> str:
    """The table README.md and perf/README.md quote, from summary.json (a test checks
    that they quote the committed copy, docs/results/bench_summary.json)."""
    lines = [
        f"| pipeline | arm | req/s at p99 ≤ {summary['slo_p99_ms']:g} ms, each repetition "
        "| median |",
        "|---|---|---|---|",
    ]
    for kind in (names.SEARCH, names.RECOMMEND):
        for arm, values in summary.get(kind, {}).items():
            each = ", ".join(f"{v:,.0f}" for v in values)
            lines.append(f"| {kind} | {arm} | {each} | {median(values):,.0f} |")
    return "\n".join(lines) + "\n"


def markdown(results: dict, summary: dict) -> str:
    lines = [f"# Benchmarks ({machine.line(results['machine'])}, {summary['date']})", ""]
    for kind in (names.SEARCH, names.RECOMMEND):
        if kind not in summary:
            continue
        lines += [
            f"## {kind}: throughput (req/s) at p99 <= {summary['slo_p99_ms']:g} ms",
            "",
            f"Closed loop, HTTP/JSON (`perf.loadgen`), concurrency {list(LEVELS)}, "
            f"{results['seconds']:g} s a level, {summary['repetitions']} repetitions.",
            "",
            "| arm | each repetition | median |",
            "|---|---|---|",
        ]
        for arm, values in summary[kind].items():
            each = ", ".join(f"{v:.0f}" for v in values)
            lines.append(f"| {arm} | {each} | {median(values):.0f} |")
        ratios = summary[f"{kind}_ratios"]
        each = ", ".join(
            "-" if r is None else f"{r:.2f}x" for r in ratios["tuned_vs_default_each_repetition"]
        )
        verdict = (
            "beats the defaults every time"
            if ratios["tuned_beats_default_every_repetition"]
            else "does NOT beat the defaults every time"
        )
        lines += ["", f"Tuned vs default in each repetition: {each} ({verdict}).", ""]
    for arm, why in summary["skipped"].items():
        lines.append(f"Skipped {arm}: {why}.")
    cache = summary.get("search_cache")
    if cache:
        each = ", ".join(f"{r:.0%}" for r in cache["encoder_hit_rate_each_repetition"])
        replay = cache["cold_replay"]
        lines += [
            "",
            f"Search, cache on: the encoder's cache hit rate in each repetition {each} "
            "(every level of the arm cycles through the same requests). The "
            f"{replay['searches']:,} logged searches in logged order from a cold cache, "
            f"concurrency {replay['concurrency']}: {replay['throughput']:.0f} req/s, p99 "
            f"{replay['p99_ms']:.0f} ms, encoder hit rate {replay['encoder_hit_rate']:.0%} "
            f"({replay['logged_repeat_share']:.0%} of them repeat an earlier query).",
        ]
    for kind, measured in summary.get("stage_cpu", {}).items():
        lines += [
            "",
            f"## {kind}: CPU per request by process (default configs, concurrency "
            f"{measured['concurrency']}, {measured['throughput']:.0f} req/s)",
            "",
            stage_cpu.table(measured),
        ]
    roof = results["roofline"]
    lines += [
        "",
        f"## Encoder roofline ({roof['threads']} threads)",
        "",
        "GEMM peak: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roof["gemm_peak_gflops"].items()),
        "",
        "| model | precision | tokens | sequences/s (batch 32) | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in roof["encoders"].items():
        lines.append(
            f"| {name} | {row['precision']} | {row['sequence_length']} | "
            f"{row['sequences_per_s']:.0f} | {row['achieved_gflops']:.1f} | "
            f"{row['fraction_of_peak']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench", description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--slo-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load level")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--skip-serving", action="store_true", help="only the roofline")
    parser.add_argument(
        "--stage-cpu-only",
        action="store_true",
        help="only the CPU per stage of each pipeline, into stage_cpu.json (about a minute)",
    )
    args = parser.parse_args(argv)
    repo = Path(args.repository).resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.stage_cpu_only:
        measured = stage_cpu_only(repo, 2 * args.seconds)
        (OUT / "stage_cpu.json").write_text(json.dumps(measured, indent=1))
        for kind, costs in measured["stage_cpu"].items():
            print(f"\n{kind}\n\n{stage_cpu.table(costs)}")
        print(f"wrote {OUT / 'stage_cpu.json'}")
        return 0
    started = time.monotonic()
    results = {
        "machine": machine.describe(),
        "slo_ms": args.slo_ms,
        "seconds": args.seconds,
    }
    print("roofline", flush=True)
    results["roofline"] = roofline(repo)
    summary: dict = {"date": time.strftime("%Y-%m-%d"), "skipped": {}}
    if not args.skip_serving:
        work = OUT / "work"
        shutil.rmtree(work, ignore_errors=True)
        results["serving"] = serving(repo, args.slo_ms, args.seconds, args.repetitions, work)
        summary = summarise(results["serving"], args.slo_ms, args.repetitions)
        (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    results["wall_s"] = time.monotonic() - started
    (OUT / "bench.json").write_text(json.dumps(results, indent=1))
    (OUT / "bench.md").write_text(markdown(results, summary))
    print((OUT / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
