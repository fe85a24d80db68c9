"""`make bench`: the numbers behind perf/README.md, measured side by side in one run.

1. Five ways to serve `search` and `recommend`, the same closed-loop HTTP/JSON load
   from `perf.loadgen` for all: naive (`perf.benchmarks.naive`: FastAPI + PyTorch, one request per
   call), Ray Serve with `@serve.batch` (`perf.benchmarks.ray_serve`, in its own environment),
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
   generator per request (`perf.benchmarks.stage_cpu`).
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

from builders import machine, names, pipelines
from builders.offline import OfflinePipeline
from builders.pipelines import (
    PIPELINE_FILE,
    PipelineSpec,
    Stage,
    ensemble_steps,
    lineage,
    query_encoder,
)
from builders.ranking_metrics import ndcg
from builders.repository import MANIFEST, model_versions, read_manifest
from builders.retrieval import EXTERNAL_DATA_FILE, compose_retrieval, save_index
from builders.specs import WARMUP_FOLDER, EnsembleSpec
from perf import RESULTS, ROOT, inputs, loadgen, triton_stats
from perf.benchmarks import stage_cpu
from perf.tuning import report, spec
from perf.tuning.sweep import Sweep
from server import TritonServer
from server.launcher import free_port
from server.stub_watchdog import server_stubs

OUT = RESULTS / "bench"
SWEEP_FILES = {
    names.SEARCH: ROOT / "perf" / "sweeps" / "bench_search.yaml",
    names.RECOMMEND: ROOT / "perf" / "sweeps" / "bench_recommend.yaml",
}
#: The Ray Serve baseline's environment (`make ray-env`): its pins differ from ours.
RAY_VENV = ROOT / "build" / "ray-venv"
ARMS = (
    "naive",
    "ray_serve",
    "triton_default",
    "triton_tuned",
    "triton_tuned_cache",
    "in_process",
)
LEVELS = (1, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
CACHE_MB = 256
STAGE_CPU_CONCURRENCY = 16
#: The stage CPU breakdown of search with the teacher swapped in for a served student.
TEACHER_SEARCH = "search_with_teacher"
#: The stage CPU breakdown of each pipeline with its composed stages' parts apart, by kind.
APART = {kind: f"{kind}_stages_apart" for kind in pipelines.KINDS}
#: Names the copy of the query stage that holds the teacher, loaded for that breakdown.
TEACHER_SUFFIX = "_with_teacher"
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
    for model in dict.fromkeys((names.TEXT_ENCODER, served_encoder(repo).model)):
        version = max(int(p.name) for p in (repo / model).iterdir() if p.name.isdigit())
        path = repo / model / str(version) / "model.onnx"
        per_sequence = matmul_flops_per_token(path) * ids.shape[1]
        rate = encoder_rate(path, ids, mask)
        achieved = rate * per_sequence
        rows[model] = {
            "precision": "fp32",
            "batch": BATCH,
            "sequence_length": int(ids.shape[1]),
            "gflop_per_sequence": per_sequence / 1e9,
            "sequences_per_s": rate,
            "achieved_gflops": achieved / 1e9,
            "peak_gflops": peaks["fp32"] / 1e9,
            "fraction_of_peak": achieved / peaks["fp32"],
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
    """The baselines' JSON bodies (`perf.benchmarks.naive`, `perf.benchmarks.ray_serve`)."""
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
        "naive": [sys.executable, "-m", "perf.benchmarks.naive", "--repository", str(repo)]
    }
    ray_python = RAY_VENV / "bin" / "python"
    commands["ray_serve"] = (
        [str(ray_python), "-m", "perf.benchmarks.ray_serve", "--repository", str(repo)]
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


def model_counts(server: TritonServer, model: str) -> dict[str, int]:
    """`model`'s counts so far, all versions: `computed` (the requests it computed),
    `executions` (the batches it ran them in: between two readings, computed / executions is
    the mean batch its dynamic batcher formed), `cache_hits` and `cache_misses` (its response
    cache's)."""
    answer = model_statistics(server, model)
    return {
        "computed": triton_stats.counter(answer, "inference_count"),
        "executions": triton_stats.counter(answer, "execution_count"),
        "cache_hits": triton_stats.part_count(answer, "cache_hit"),
        "cache_misses": triton_stats.part_count(answer, "cache_miss"),
    }


def counted_since(server: TritonServer, model: str, before: dict[str, int]) -> dict[str, int]:
    """`model_counts` now, less `before` (an earlier reading)."""
    now = model_counts(server, model)
    return {name: count - before[name] for name, count in now.items()}


def hit_rate(counts: dict[str, int]) -> float:
    """The share of the lookups in `counts` (`model_counts`) that the cache answered."""
    return counts["cache_hits"] / max(counts["cache_hits"] + counts["cache_misses"], 1)


def model_statistics(server: TritonServer, model: str) -> dict:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return client.get_inference_statistics(model)
    finally:
        client.close()


def stage_cpu_breakdown(
    server: TritonServer,
    kind: str,
    bodies: list[bytes],
    seconds: float,
    stages: Collection[str] | None = None,
):
    """`perf.benchmarks.stage_cpu` of one pipeline under closed-loop load on `server`'s loaded
    configs (`stages`: the stage models it runs, when not those its release pins)."""
    host, port = server.http_url.split(":")
    path = f"/v2/models/{kind}/infer"
    loadgen.closed_loop(host, int(port), path, bodies, STAGE_CPU_CONCURRENCY, 1.0, warmup_s=0)
    if stages is None:
        stages = spec.pipeline_stages(server.model_repository, kind)
    labels = {pid: s.model for pid, s in server_stubs(server.pid).items() if s.model in stages}
    labels.update({server.pid: "tritonserver", os.getpid(): "load generator"})
    counted = {model: model_counts(server, model) for model in stages}
    before, started = stage_cpu.snapshot(labels), time.monotonic()
    load = loadgen.closed_loop(
        host, int(port), path, bodies, STAGE_CPU_CONCURRENCY, seconds, warmup_s=0
    )
    wall_s = time.monotonic() - started
    measured = stage_cpu.breakdown(
        before, stage_cpu.snapshot(labels), load.requests, wall_s, os.cpu_count() or 1
    )
    measured = stage_cpu.with_stage_counts(
        measured, {model: counted_since(server, model, counted[model]) for model in stages}
    )
    for model, row in measured["processes"].items():
        if row.get("cache_hits"):
            print(f"  {model}: its response cache answered {row['cache_hits']} requests")
    for model in measured.get("unmeasured", []):
        print(f"  {model}: computed requests, but no process of it was found")
    return {"concurrency": STAGE_CPU_CONCURRENCY, "errors": load.errors, **measured}


def stage_cpu_all(server: TritonServer, requests: dict[str, list], seconds: float) -> dict:
    """`perf.benchmarks.stage_cpu` of each pipeline on the loaded configs, of search with the
    teacher in place of a served student, and of each pipeline with its composed stages' parts
    apart."""
    repo = server.model_repository
    costs = {}
    for kind, pipeline_requests in requests.items():
        print(f"CPU per stage: {kind}", flush=True)
        bodies = triton_bodies(kind, pipeline_requests)
        costs[kind] = stage_cpu_breakdown(server, kind, bodies, seconds)
    search_bodies = triton_bodies(names.SEARCH, requests[names.SEARCH])
    if served_encoder(repo).model != names.TEXT_ENCODER:
        print("CPU per stage: search with the teacher as its query encoder", flush=True)
        costs[TEACHER_SEARCH] = teacher_stage_cpu(server, search_bodies, seconds)
    for kind, pipeline_requests in requests.items():
        release = newest_release(repo, kind)
        if pipelines.apart(repo, release) != release:
            print(f"CPU per stage: {kind} with its composed stages' parts apart", flush=True)
            bodies = triton_bodies(kind, pipeline_requests)
            costs[APART[kind]] = apart_stage_cpu(server, kind, bodies, seconds)
    return costs


def apart_stage_cpu(server: TritonServer, kind: str, bodies: list[bytes], seconds: float) -> dict:
    """`perf.benchmarks.stage_cpu` of the newest `kind` release with its composed stages
    (`query`, `ranking`) replaced by the stages they were composed of (the versions their
    manifests name), one step each, as releases served them before: what the composition
    saves, on the same server and configs. Parts the server has not loaded are loaded for the
    measurement (without the response cache, as the other stages run here) and unloaded after
    it."""
    repo = server.model_repository
    release = newest_release(repo, kind)
    roles = pipelines.apart(repo, release)
    parts = {r: s for r, s in roles.stages.items() if r not in release.stages}
    ensemble = spec.model_config(repo, kind)
    part_configs = {
        s.model: without_cache(spec.model_config(repo, s.model))
        | {"version_policy": {"specific": {"versions": [str(s.version)]}}}
        for s in parts.values()
    }
    loaded = {m for m in part_configs if server.is_model_ready(m)}  # e.g. `load_models=["*"]`
    try:
        load_configs(server, {m: c for m, c in part_configs.items() if m not in loaded})
        apart = apart_ensemble(repo, kind)
        load_configs(server, {kind: apart.to_config()})
        stages = {step.model for step in apart.steps}
        measured = stage_cpu_breakdown(server, kind, bodies, seconds, stages)
        composed = sorted(s.model for r, s in release.stages.items() if r not in roles.stages)
        return {**measured, "compared": {"composed": composed, "apart": sorted(part_configs)}}
    finally:
        load_configs(server, {kind: ensemble})
        for model in set(part_configs) - loaded:
            server.unload_model(model)


def apart_ensemble(repo: Path, kind: str) -> EnsembleSpec:
    """The `kind` ensemble of the newest release with its composed stages apart
    (`pipelines.apart`): one step per part, as releases served them before."""
    release = model_versions(repo, kind)[-1]
    return pipelines.ensemble(pipelines.apart(repo, newest_release(repo, kind)), release, kind)


def newest_release(repo: Path, kind: str) -> PipelineSpec:
    release = model_versions(repo, kind)[-1]
    return PipelineSpec.load(repo / kind / str(release) / PIPELINE_FILE)


def served_encoder(repo: Path) -> Stage:
    """The query encoder the newest search release serves (the teacher or a student)."""
    return query_encoder(repo, newest_release(repo, names.SEARCH))


def teacher_stage(model: str) -> str:
    """The model that stands for `model` (a composed query stage) with the teacher inside."""
    return f"{model}{TEACHER_SUFFIX}"


def served_query_stage(release: PipelineSpec) -> Stage:
    """The stage of a search release that runs its query encoder: `query` (the tokenizer,
    the encoder with the exact index, and hybrid retrieval in one model), `retrieval` (the
    encoder and the exact index in one model) or the encoder itself."""
    stages = release.stages
    return stages.get("query") or stages.get("retrieval") or stages["encoder"]


def teacher_stage_cpu(server: TritonServer, bodies: list[bytes], seconds: float) -> dict:
    """`perf.benchmarks.stage_cpu` of search with its query encoder swapped for the teacher the
    served student was distilled from (the index holds that teacher's item embeddings): what the
    student saves, measured on the same server and configs. Where the release serves the
    encoder inside a composed stage (`query`, or `retrieval`: the encoder and the exact index
    in one graph), the teacher and that index are composed here and take the encoder's place
    in a copy of that stage, `teacher_stage(<stage>)`, with the same config, in a model folder
    of the repository that lives only while it is measured (a Triton ensemble can only name
    models of its repository). The teacher's stage runs without the response cache, as the
    other stages of the breakdown do (`make bench` measures it on a server with a cache, where
    repeated queries would skip it)."""
    repo = server.model_repository
    release = newest_release(repo, names.SEARCH)
    student = query_encoder(repo, release)
    teacher = Stage(
        names.TEXT_ENCODER,
        read_manifest(repo, student.model, student.version)["depends_on"][names.TEXT_ENCODER],
    )
    swapped_out = served_query_stage(release)
    temporary = repo / teacher_stage(swapped_out.model)
    if swapped_out != student:
        index = lineage(repo, release)["index"]
        composed = compose_retrieval(
            onnx.load(str(repo / teacher.model / str(teacher.version) / "model.onnx")),
            "embedding",
            onnx.load(str(repo / index.model / str(index.version) / "model.onnx")),
        )
        shutil.copytree(repo / swapped_out.model / WARMUP_FOLDER, temporary / WARMUP_FOLDER)
        # The stage's own files (a `query` stage's tokenizer, BM25 index, modules and their
        # bytecode), then the graph.
        shutil.copytree(
            repo / swapped_out.model / str(swapped_out.version),
            temporary / "1",
            ignore=shutil.ignore_patterns(MANIFEST, "model.onnx", EXTERNAL_DATA_FILE),
        )
        save_index(composed, temporary / "1")
        config = without_cache(spec.model_config(repo, swapped_out.model))
        config["name"] = temporary.name
        config["version_policy"] = {"specific": {"versions": ["1"]}}
        swapped_in, loaded = Stage(temporary.name, 1), False
    else:
        swapped_in, loaded = teacher, server.is_model_ready(names.TEXT_ENCODER)
        config = without_cache(spec.model_config(repo, teacher.model))
    search = spec.model_config(repo, names.SEARCH)
    steps = [
        {**step, "model_name": swapped_in.model, "model_version": str(swapped_in.version)}
        if step["model_name"] == swapped_out.model
        else step
        for step in search["ensemble_scheduling"]["step"]
    ]
    try:
        if not loaded:
            load_configs(server, {swapped_in.model: config})
        load_configs(server, {names.SEARCH: {**search, "ensemble_scheduling": {"step": steps}}})
        stages = {*spec.pipeline_stages(repo, names.SEARCH), swapped_in.model}
        measured = stage_cpu_breakdown(
            server, names.SEARCH, bodies, seconds, stages - {swapped_out.model}
        )
        return {**measured, "compared": {"student": swapped_out.model, "teacher": swapped_in.model}}
    finally:
        load_configs(server, {names.SEARCH: search})
        if not loaded:
            server.unload_model(swapped_in.model)
        shutil.rmtree(temporary, ignore_errors=True)


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
        query_stage = served_query_stage(newest_release(repo, names.SEARCH)).model
        counted = model_counts(server, query_stage)
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
        replayed = counted_since(server, query_stage, counted)
    return {
        "searches": len(requests),
        "concurrency": REPLAY_CONCURRENCY,
        "throughput": round(load.throughput, 1),
        "p50_ms": round(load.p50_ms, 1),
        "p99_ms": round(load.p99_ms, 1),
        "errors": load.errors,
        "encoder_hit_rate": round(hit_rate(replayed), 4),
        "logged_repeat_share": round(repeat_share(queries), 4),
    }


def bench_requests(repo: Path) -> dict[str, list]:
    """The requests every arm sends, per pipeline: 512 drawn from the build's dataset."""
    requests = {}
    for kind in (names.SEARCH, names.RECOMMEND):
        dataset = inputs.dataset_of(repo, kind)
        requests[kind] = inputs.input_data(kind, dataset, repo, 512, seed=7)["data"]
    return requests


#: The search arms are graded by their NDCG at this depth, on the dataset's graded queries.
GRADED_K = 10


def post_json(port: int, path: str, body: dict) -> dict:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"POST {path} answered {response.status}: {answer}")
    return answer


def arm_search_answers(
    arm: str, queries: list[str], triton_port: int, baselines: dict[str, int], offline
) -> list[list[int]]:
    """Each graded query's item ids, best first, as `arm` answers it without a user: the
    Triton arms through the server (they serve the same models), the baselines through
    their HTTP endpoints, `in_process` through the release's stages in this process."""
    if arm == "in_process":
        return [ids.tolist() for ids, _ in offline.run(GRADED_K, queries=queries)]
    if arm.startswith("triton"):
        answers = []
        for query in queries:
            tensors = [_tensor("query", "BYTES", query), _tensor("k", "INT32", GRADED_K)]
            body = {"inputs": tensors, "outputs": [{"name": "item_ids"}]}
            (output,) = post_json(triton_port, f"/v2/models/{names.SEARCH}/infer", body)["outputs"]
            answers.append(output["data"])
        return answers
    return [
        post_json(baselines[arm], "/search", {"query": q, "k": GRADED_K})["item_ids"]
        for q in queries
    ]


def search_ndcg(answers: list[list[int]], queries: list[str], relevance) -> float:
    """Mean NDCG@10 of the answers to the graded queries (`relevance`: query, item_id,
    grade)."""
    grades = {q: dict(zip(g.item_id, g.grade)) for q, g in relevance.groupby("query")}
    return round(
        float(np.mean([ndcg(a, grades[q], GRADED_K) for q, a in zip(queries, answers)])), 4
    )


def first_stage(repo: Path, kind: str) -> str:
    """The model of the first step of a pipeline's newest release."""
    release = model_versions(repo, kind)[-1]
    spec_ = PipelineSpec.load(repo / kind / str(release) / PIPELINE_FILE)
    return ensemble_steps(spec_)[0].model


def in_batches(requests: list[dict], batch: int) -> list[list[dict]]:
    """`requests` cut into consecutive batches of `batch` (a short last one left out)."""
    return [requests[i : i + batch] for i in range(0, len(requests) - batch + 1, batch)]


def answer_batch(pipeline: OfflinePipeline, kind: str, batch: list[dict]) -> None:
    """One call of `pipeline` on a batch of the bench's requests (`bench_requests`)."""
    users = [r["user_id"][0] for r in batch]
    queries = [r["query"][0] for r in batch] if kind == names.SEARCH else None
    pipeline.run(batch[0]["k"][0], queries=queries, user_ids=users)


def in_process(
    pipeline: OfflinePipeline, kind: str, requests: list[dict], batch: int, seconds: float
) -> dict:
    """The `in_process` arm: the release's own stages (`OfflinePipeline`: the same models and
    computation) in this one process, `batch` requests a call (the mean batch the server
    formed at the pipeline's first stage under the tuned configs), without serving: the
    ceiling that serving approaches. Its throughput, in requests answered per second, after
    one untimed call (the first loads the stages' frameworks: TensorFlow takes seconds)."""
    batches = in_batches(requests, batch)
    answer_batch(pipeline, kind, batches[0])
    answered, _, elapsed = answer_for(pipeline, kind, batches, seconds)
    return {"throughput": round(answered / elapsed, 1), "batch": batch, "requests": answered}


def answer_for(
    pipeline: OfflinePipeline, kind: str, batches: list[list[dict]], seconds: float
) -> tuple[int, float, float]:
    """`batches` answered over and over for `seconds` (whole passes): the requests answered,
    and the CPU seconds (this process's, every thread) and wall seconds it took."""
    answered, cpu, started = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        for chunk in batches:
            answer_batch(pipeline, kind, chunk)
            answered += len(chunk)
    return answered, time.process_time() - cpu, time.perf_counter() - started


def stage_cpu_only(repo: Path, seconds: float, repetitions: int) -> dict:
    """Only the CPU per stage of both pipelines (and of search with the teacher, and with its
    query stage's parts apart), on the built configs, `repetitions` times on one server: what
    `make bench` measures last, in a minute a repetition. `stage_cpu` holds the last
    repetition's breakdowns, `repetitions` every repetition's totals, the query stage's ratio
    to the teacher's and search's ratio to search with the parts apart."""
    requests = bench_requests(repo)
    stages = sorted({m for kind in requests for m in spec.pipeline_stages(repo, kind)})
    runs = []
    with TritonServer(
        repo, model_control="explicit", load_models=[*requests, *stages], exit_timeout_secs=5
    ) as server:
        for repetition in range(repetitions):
            print(f"repetition {repetition + 1}/{repetitions}", flush=True)
            runs.append(stage_cpu_all(server, requests, seconds))
    peak = max(gemm_peak("fp32").values()) / 1e9
    query_stage = served_query_stage(newest_release(repo, names.SEARCH)).model
    for costs in runs:
        with_products(costs, peak, query_stage)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "stage_cpu": runs[-1],
        "repetitions": [
            {
                **{kind: costs[kind]["cpu_us_per_request"] for kind in requests},
                "search_encoder_cpu_vs_teacher": encoder_cpu_vs_teacher(costs),
                **{
                    f"{kind}_composed_cpu_vs_apart": composed_cpu_vs_apart(costs, kind)
                    for kind in requests
                },
            }
            for costs in runs
        ],
    }


def repetitions_table(measured: dict) -> str:
    """`stage_cpu_only`'s repetitions as the README quotes them (a test checks it against
    docs/results/stage_cpu.json)."""
    lines = [
        "| repetition | search, CPU µs per request | recommend | query stage ÷ the teacher's "
        "| search ÷ its composed stages' parts apart | recommend ÷ its parts apart |",
        "|---|---|---|---|---|---|",
    ]

    def ratio(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}×"

    for number, run in enumerate(measured["repetitions"], 1):
        lines.append(
            f"| {number} | {run[names.SEARCH]:,.0f} | {run[names.RECOMMEND]:,.0f} | "
            f"{ratio(run['search_encoder_cpu_vs_teacher'])} | "
            f"{ratio(run.get('search_composed_cpu_vs_apart'))} | "
            f"{ratio(run.get('recommend_composed_cpu_vs_apart'))} |"
        )
    return "\n".join(lines)


def composed_cpu_vs_apart(costs: dict, kind: str) -> float | None:
    """CPU per `kind` request with the release's composed stages over with their parts apart
    (`stage_cpu_all`); None where the release serves no composed `query` or `ranking`."""
    if APART[kind] not in costs:
        return None
    composed = costs[kind]["cpu_us_per_request"]
    return round(composed / costs[APART[kind]]["cpu_us_per_request"], 4)


def encoder_cpu_vs_teacher(costs: dict) -> float | None:
    """CPU per search request of the served query stage over the teacher's in its place
    (`stage_cpu_all`); None where the teacher serves."""
    if TEACHER_SEARCH not in costs:
        return None
    compared = costs[TEACHER_SEARCH]["compared"]
    student = costs[names.SEARCH]["processes"][compared["student"]]
    teacher = costs[TEACHER_SEARCH]["processes"][compared["teacher"]]
    return round(student["cpu_us_per_request"] / teacher["cpu_us_per_request"], 4)


def with_products(costs: dict, peak_gflops: float, query_stage: str) -> None:
    """Add each breakdown's MFLOP-equivalents (`stage_cpu.mflop_equivalents`) to it; for
    search, also without its query stage (the query encoder, with the exact index)."""
    for kind, measured in costs.items():
        encoder = query_stage if kind == names.SEARCH else None
        measured.update(stage_cpu.mflop_equivalents(measured, peak_gflops, encoder))


def serving(repo: Path, slo_ms: float, seconds: float, repetitions: int, work: Path) -> dict:
    """Every arm, both pipelines, `repetitions` times interleaved; see the module doc."""
    requests = bench_requests(repo)
    results: dict = {kind: {arm: [] for arm in ARMS} for kind in requests}
    skipped: dict[str, str] = {}
    stage_costs: dict[str, dict] = {}
    search_ndcg_at_10: dict[str, float] = {}
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
            query_stage = served_query_stage(newest_release(repo, names.SEARCH)).model
            first_stages = {kind: first_stage(repo, kind) for kind in requests}
            offline = {
                kind: OfflinePipeline(repo, kind, model_versions(repo, kind)[-1])
                for kind in requests
            }
            formed: dict[str, float] = {}  # the mean batch at each pipeline's first stage
            relevance = inputs.dataset_of(repo, names.SEARCH).relevance
            if relevance is not None:
                graded = sorted(set(relevance["query"]))
                print(f"grading each search arm on {len(graded)} queries", flush=True)
                load_configs(server, configs["triton_default"])  # no cache to warm
                search_ndcg_at_10 = {
                    arm: search_ndcg(
                        arm_search_answers(
                            arm, graded, int(port), baselines, offline[names.SEARCH]
                        ),
                        graded,
                        relevance,
                    )
                    for arm in ARMS
                    if arm not in skipped
                }
            for repetition in range(repetitions):
                for arm in (a for a in ARMS if a not in skipped):
                    if arm in configs:
                        load_configs(server, configs[arm])
                    for kind in requests:
                        print(
                            f"repetition {repetition + 1}/{repetitions}: {arm}, {kind}", flush=True
                        )
                        if arm == "in_process":
                            batch = max(1, round(formed[kind]))
                            results[kind][arm].append(
                                in_process(offline[kind], kind, requests[kind], batch, seconds)
                            )
                            continue
                        if arm in configs:
                            target = (host, int(port), f"/v2/models/{kind}/infer")
                            bodies = triton_bodies(kind, requests[kind])
                        else:
                            target = ("127.0.0.1", baselines[arm], f"/{kind}")
                            bodies = plain_bodies(kind, requests[kind])
                        cached_search = arm == "triton_tuned_cache" and kind == names.SEARCH
                        if cached_search:
                            counted = model_counts(server, query_stage)
                        batched = model_counts(server, first_stages[kind])
                        results[kind][arm].append(ramp(*target, bodies, slo_ms, seconds))
                        if arm == "triton_tuned":
                            ran = counted_since(server, first_stages[kind], batched)
                            formed[kind] = ran["computed"] / max(ran["executions"], 1)
                        if cached_search:
                            hit_rates.append(hit_rate(counted_since(server, query_stage, counted)))
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
        "search_ndcg_at_10": search_ndcg_at_10,
    }


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0


def summarise(
    serving_results: dict, slo_ms: float, repetitions: int, peak_gflops: float, query_stage: str
) -> dict:
    """summary.json: per pipeline and arm, the throughput at the SLO of each repetition,
    the ratios the targets are stated in (medians; tuned vs default per repetition) and
    the CPU per stage with its MFLOP-equivalents at the machine's fp32 GEMM peak
    (`peak_gflops`; search's also without its `query_stage`)."""
    summary: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "slo_p99_ms": slo_ms,
        "repetitions": repetitions,
        "skipped": serving_results["skipped"],
    }
    for kind, arms in serving_results["arms"].items():
        figures = {
            arm: [r["throughput"] if arm == "in_process" else r["throughput_at_slo"] for r in runs]
            for arm, runs in arms.items()
        }
        summary[kind] = {arm: values for arm, values in figures.items() if values}
        default, tuned = figures["triton_default"], figures["triton_tuned"]
        per_run = [t / d if d else None for t, d in zip(tuned, default)]
        naive, ceiling = median(figures["naive"]), median(figures.get("in_process", []))
        summary[f"{kind}_ratios"] = {
            "tuned_vs_naive_median": median(tuned) / naive if naive else None,
            "tuned_vs_in_process_median": median(tuned) / ceiling if ceiling else None,
            "tuned_vs_default_each_repetition": per_run,
            "tuned_beats_default_every_repetition": all(r is not None and r > 1 for r in per_run),
        }
    summary["stage_cpu"] = costs = serving_results["stage_cpu"]
    with_products(costs, peak_gflops, query_stage)
    if TEACHER_SEARCH in costs:
        summary["search_encoder_cpu_vs_teacher"] = encoder_cpu_vs_teacher(costs)
    for kind in pipelines.KINDS:
        if APART[kind] in costs:
            summary[f"{kind}_composed_cpu_vs_apart"] = composed_cpu_vs_apart(costs, kind)
    summary["search_cache"] = serving_results["search_cache"]
    summary["search_ndcg_at_10"] = serving_results.get("search_ndcg_at_10", {})
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
    parser = argparse.ArgumentParser(prog="python -m perf.benchmarks.bench", description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--slo-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=4.0, help="per load level")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--skip-serving", action="store_true", help="only the roofline")
    parser.add_argument(
        "--stage-cpu-only",
        action="store_true",
        help="only the CPU per stage of each pipeline, --repetitions times, into "
        "stage_cpu.json (about a minute a repetition)",
    )
    args = parser.parse_args(argv)
    repo = Path(args.repository).resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.stage_cpu_only:
        measured = stage_cpu_only(repo, 2 * args.seconds, args.repetitions)
        (OUT / "stage_cpu.json").write_text(json.dumps(measured, indent=1))
        for kind, costs in measured["stage_cpu"].items():
            print(f"\n{kind}\n\n{stage_cpu.table(costs)}")
        print(f"\n{repetitions_table(measured)}")
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
        summary = summarise(
            results["serving"],
            args.slo_ms,
            args.repetitions,
            results["roofline"]["gemm_peak_gflops"]["fp32"],
            served_query_stage(newest_release(repo, names.SEARCH)).model,
        )
        (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    results["wall_s"] = time.monotonic() - started
    (OUT / "bench.json").write_text(json.dumps(results, indent=1))
    (OUT / "bench.md").write_text(markdown(results, summary))
    print((OUT / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
