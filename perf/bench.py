"""`make bench`: the numbers behind perf/README.md, measured side by side in one run.

1. Three ways to serve search, the same closed-loop HTTP/JSON load from
   `perf.loadgen` for all three: naive (FastAPI + PyTorch eager, one request per
   call), Triton with the builders' default configs, Triton with the configs a
   sweep (`perf/sweeps/bench_search.yaml`, run here on the same server) chose.
   Reported: throughput at the p99 SLO and the ratios against naive.
2. Encoder roofline: the machine's GEMM peak (the best of torch and ONNX Runtime
   on a 2048 x 2048 matmul, fp32 and int8) and the encoders' achieved FLOP/s in
   ONNX Runtime at batch 32.

Writes `perf/results/bench/bench.json` and `bench.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from builders import names
from perf import inputs, loadgen, report, spec
from perf.sweep import Sweep
from server import TritonServer
from server.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "perf" / "results" / "bench"
SWEEP_FILE = ROOT / "perf" / "sweeps" / "bench_search.yaml"
LEVELS = (1, 2, 4, 8, 16)
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
    for model, precision in ((names.TEXT_ENCODER, "fp32"), (names.TEXT_ENCODER_INT8, "int8")):
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
            f"  concurrency {concurrency}: {result.throughput:.1f}/s p99 {result.p99_ms:.1f} ms "
            f"({result.errors} errors)",
            flush=True,
        )
        if not result.p99_ms <= slo_ms:
            break
    within = [lv for lv in levels if lv["p99_ms"] <= slo_ms and lv["errors"] == 0]
    best = max(within, key=lambda lv: lv["throughput"], default=None)
    lowest = min(levels, key=lambda lv: lv["p99_ms"])
    return {
        "levels": levels,
        "throughput_at_slo": best["throughput"] if best else 0.0,
        "lowest_p99_ms": lowest["p99_ms"],
    }


def triton_bodies(requests: list[dict]) -> list[bytes]:
    def tensor(name, datatype, value):
        return {"name": name, "shape": [1, 1], "datatype": datatype, "data": [value]}

    return [
        json.dumps(
            {
                "inputs": [
                    tensor("query", "BYTES", r["query"][0]),
                    tensor("user_id", "INT64", r["user_id"][0]),
                    tensor("k", "INT32", r["k"][0]),
                ],
                "outputs": [{"name": "item_ids"}, {"name": "scores"}],
            }
        ).encode()
        for r in requests
    ]


def naive_bodies(requests: list[dict]) -> list[bytes]:
    return [
        json.dumps({"query": r["query"][0], "user_id": r["user_id"][0], "k": r["k"][0]}).encode()
        for r in requests
    ]


def wait_http(port: int, path: str, timeout: float = 180) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answered on port {port} after {timeout:g} s")


def serving(repo: Path, slo_ms: float, seconds: float, work: Path) -> dict:
    dataset = inputs.dataset_of(repo, names.SEARCH)
    requests = inputs.input_data(names.SEARCH, dataset, repo, 512, seed=7)["data"]
    arms = {}

    print("naive: FastAPI + PyTorch eager", flush=True)
    port = free_port()
    naive = subprocess.Popen(
        [sys.executable, "-m", "perf.naive", "--repository", str(repo), "--port", str(port)],
        cwd=ROOT,
    )
    try:
        wait_http(port, "/health")
        arms["naive"] = ramp("127.0.0.1", port, "/search", naive_bodies(requests), slo_ms, seconds)
    finally:
        naive.terminate()
        naive.wait(timeout=30)

    search_models = [names.SEARCH, *spec.pipeline_stages(repo, names.SEARCH)]
    bodies = triton_bodies(requests)
    with TritonServer(
        repo, model_control="explicit", load_models=search_models, exit_timeout_secs=5
    ) as server:
        host, port = server.http_url.split(":")
        print("triton, default configs", flush=True)
        path = f"/v2/models/{names.SEARCH}/infer"
        arms["triton_default"] = ramp(host, int(port), path, bodies, slo_ms, seconds)

        print(f"sweep {SWEEP_FILE.name} (smart) on the same server", flush=True)
        sweep_spec = spec.load(SWEEP_FILE, repo)
        result = Sweep(sweep_spec, server, work / "sweep").run()
        summary = report.write(result, work / "sweep")
        for model, config in result.chosen_configs().items():
            server.load_model(model, config=config)
        print(f"triton, tuned configs {result.best.config}", flush=True)
        arms["triton_tuned"] = ramp(host, int(port), path, bodies, slo_ms, seconds)
        arms["triton_tuned"]["config"] = result.best.config
        arms["triton_tuned"]["sweep"] = {
            k: summary[k] for k in ("configs_tried", "measurements", "wall_s", "feasible")
        }
    base = arms["naive"]["throughput_at_slo"]
    for arm in arms.values():
        arm["ratio_vs_naive"] = arm["throughput_at_slo"] / base if base else None
    return arms


def markdown(results: dict) -> str:
    lines = [f"# Benchmarks ({results['machine']})", ""]
    serving_results = results.get("serving")
    if serving_results:
        lines += [
            f"## Serving search: throughput at p99 <= {results['slo_ms']:g} ms",
            "",
            f"Load generator: `perf.loadgen` (closed loop, HTTP/JSON, keep-alive, "
            f"concurrency {list(LEVELS)}, {results['seconds']:g} s per level), the same for "
            "every arm.",
            "",
            "| arm | throughput at SLO (req/s) | vs naive | lowest p99 (ms) |",
            "|---|---|---|---|",
        ]
        for name, arm in serving_results.items():
            ratio = arm["ratio_vs_naive"]
            lines.append(
                f"| {name} | {arm['throughput_at_slo']:.1f} | "
                f"{'-' if ratio is None else f'{ratio:.2f}x'} | {arm['lowest_p99_ms']:.1f} |"
            )
        lines += ["", "A throughput of 0 means the arm's p99 broke the SLO even at concurrency 1."]
        if "triton_tuned" in serving_results:
            lines.append(f"Tuned config: `{serving_results['triton_tuned']['config']}`.")
        lines.append("")
    roof = results["roofline"]
    lines += [
        f"## Encoder roofline ({roof['threads']} threads)",
        "",
        "GEMM peak: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roof["gemm_peak_gflops"].items()),
        "",
        "| model | precision | sequences/s (batch 32) | achieved GFLOP/s | fraction of peak |",
        "|---|---|---|---|---|",
    ]
    for name, row in roof["encoders"].items():
        lines.append(
            f"| {name} | {row['precision']} | {row['sequences_per_s']:.0f} | "
            f"{row['achieved_gflops']:.1f} | {row['fraction_of_peak']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench", description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--slo-ms", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load level")
    parser.add_argument("--skip-serving", action="store_true", help="only the roofline")
    args = parser.parse_args(argv)
    repo = Path(args.repository).resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}",
        "slo_ms": args.slo_ms,
        "seconds": args.seconds,
    }
    print("roofline", flush=True)
    results["roofline"] = roofline(repo)
    if not args.skip_serving:
        work = OUT / "work"
        shutil.rmtree(work, ignore_errors=True)
        results["serving"] = serving(repo, args.slo_ms, args.seconds, work)
    results["wall_s"] = time.monotonic() - started
    (OUT / "bench.json").write_text(json.dumps(results, indent=1))
    (OUT / "bench.md").write_text(markdown(results))
    print((OUT / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
