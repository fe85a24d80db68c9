"""`make bench-ma`: our sweep against NVIDIA's `triton-model-analyzer` on one model.

Both tools tune the same model (`text_encoder` by default) over the same space
(`max_batch_size`, dynamic batching's `max_queue_delay_microseconds`, the CPU
instance count) at the same concurrencies, under the same p99 SLO, against the
same `tritonserver` 2.51 binary and backend directory, measured by the same
`perf_analyzer` 2.51 with the same settings (time windows, stability band,
window count, realistic `--input-data`, HTTP). Model Analyzer runs in local
launch mode, CPU only (`cpu_only`, DCGM off), on a copy of the model under
`build/model-analyzer/`, since it writes model variants of its own.

Runs, one after the other on the same machine:

1. `python -m perf sweep` (smart, and brute unless `--skip-brute`) on a sweep
   file generated from the comparison's space;
2. `model-analyzer profile` with a manual brute search over the same space
   and its automatic `quick` search (unless `--skip-ma-quick`);
3. a re-measurement of every winner on one server, interleaved, with the same
   perf_analyzer settings, so the best throughput under the SLO is compared on
   equal terms rather than as each tool reported it.

Writes `perf/results/model_analyzer/comparison.json` and `comparison.md`.
Model Analyzer comes from its own virtual environment (`build/model-analyzer-venv`,
made by `make bench-ma`), so the project's pinned environment is left untouched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from builders.specs import parse_pbtxt
from perf import RESULTS, ROOT, inputs
from perf.tuning import analyzer, spec
from server import TritonServer
from server.binaries import (
    BUILD_DIR,
    backend_directory,
    perf_analyzer_environment,
    perf_analyzer_path,
    server_environment,
    tritonserver_path,
)
from server.launcher import free_ports

OUT = RESULTS / "model_analyzer"
WORK = BUILD_DIR / "model-analyzer"
MA_VENV = BUILD_DIR / "model-analyzer-venv"
MA_VERSION = "1.58.0"
MACHINE = (
    f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
    f"{platform.system()} {platform.release()}"
)


@dataclass(frozen=True)
class Comparison:
    """What both tools tune, under which constraint, measured how."""

    model: str = "text_encoder"
    slo_p99_ms: float = 100.0
    concurrency: tuple[int, ...] = (2, 4, 8, 16, 32)
    max_batch_size: tuple[int, ...] = (16, 64)
    max_queue_delay_microseconds: tuple[int, ...] = (0, 1000, 5000)
    instance_count: tuple[int, ...] = (1, 2)
    interval_ms: int = 2000
    stability_percentage: int = 100
    max_trials: int = 8
    input_samples: int = 512
    input_seed: int = 0
    space_size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        size = len(self.max_batch_size) * len(self.max_queue_delay_microseconds)
        object.__setattr__(self, "space_size", size * len(self.instance_count))

    def perf_analyzer_flags(self, input_data: Path) -> dict:
        """The measurement settings both tools hand perf_analyzer."""
        return {
            "input-data": str(input_data),
            "measurement-mode": "time_windows",
            "measurement-interval": self.interval_ms,
            "stability-percentage": self.stability_percentage,
            "max-trials": self.max_trials,
        }


def sweep_document(c: Comparison, repository: Path, search: str) -> dict:
    """Our sweep file for the comparison (validated by `perf.tuning.spec.parse`)."""
    return {
        "name": f"ma_{c.model}_{search}",
        "model": c.model,
        "repository": str(repository),
        "search": search,
        "slo": {"p99_ms": c.slo_p99_ms},
        "objective": "throughput",
        "load": {"concurrency": list(c.concurrency)},
        "space": {
            c.model: {
                "max_batch_size": list(c.max_batch_size),
                "max_queue_delay_microseconds": list(c.max_queue_delay_microseconds),
                "instance_count": list(c.instance_count),
            }
        },
        "measurement": {
            "interval_ms": c.interval_ms,
            "stability_percentage": c.stability_percentage,
            "max_trials": c.max_trials,
        },
        "input_data": {"samples": c.input_samples, "seed": c.input_seed},
    }


def ma_config(
    c: Comparison,
    *,
    repository: Path,
    work: Path,
    input_data: Path,
    ports: tuple[int, int, int],
    server_path: Path,
    analyzer_path: Path,
    backends: Path,
    mode: str = "brute",
) -> dict:
    """A Model Analyzer `profile` config: local launch, CPU only, same space and SLO.

    `brute` is Model Analyzer's manual brute search over exactly the comparison's
    space; `quick` is its automatic hill-climbing search, bounded by the same
    largest batch size, instance count and concurrency.
    """
    if mode not in ("brute", "quick"):
        raise ValueError(f"mode must be brute or quick, got {mode!r}")
    http, grpc, metrics = ports
    model: dict = {
        "cpu_only": True,
        "constraints": {"perf_latency_p99": {"max": c.slo_p99_ms}},
        "objectives": {"perf_throughput": 10},
    }
    config: dict = {
        "model_repository": str(repository),
        "output_model_repository_path": str(work / "output_repository"),
        "override_output_model_repository": True,
        "export_path": str(work / "export"),
        "checkpoint_directory": str(work / "checkpoints"),
        "triton_launch_mode": "local",
        "triton_server_path": str(server_path),
        "perf_analyzer_path": str(analyzer_path),
        "triton_server_flags": {"backend-directory": str(backends), "exit-timeout-secs": 5},
        "triton_output_path": str(work / "tritonserver.log"),
        "triton_http_endpoint": f"localhost:{http}",
        "triton_grpc_endpoint": f"localhost:{grpc}",
        "triton_metrics_url": f"http://localhost:{metrics}/metrics",
        "client_protocol": "http",
        "gpus": [],  # none: the server gets CUDA_VISIBLE_DEVICES="" (local mode needs DCGM on)
        "perf_analyzer_flags": c.perf_analyzer_flags(input_data),
        "skip_summary_reports": True,
        "skip_detailed_reports": True,
        "profile_models": {c.model: model},
    }
    if mode == "brute":
        config["run_config_search_disable"] = True
        model["parameters"] = {"concurrency": list(c.concurrency)}
        model["model_config_parameters"] = {
            "max_batch_size": list(c.max_batch_size),
            "dynamic_batching": {
                "max_queue_delay_microseconds": list(c.max_queue_delay_microseconds)
            },
            "instance_group": [[{"kind": "KIND_CPU", "count": list(c.instance_count)}]],
        }
    else:
        config.update(
            {
                "run_config_search_mode": "quick",
                "run_config_search_min_concurrency": min(c.concurrency),
                "run_config_search_max_concurrency": max(c.concurrency),
                "run_config_search_min_instance_count": min(c.instance_count),
                "run_config_search_max_instance_count": max(c.instance_count),
                "run_config_search_min_model_batch_size": min(c.max_batch_size),
                "run_config_search_max_model_batch_size": max(c.max_batch_size),
            }
        )
    return config


@dataclass
class MaRow:
    """One Model Analyzer measurement: a model variant at one concurrency."""

    variant: str
    concurrency: int
    throughput: float
    p99_ms: float


def parse_ma_checkpoint(document: dict, model: str) -> list[MaRow]:
    """Every measurement of `model` in a Model Analyzer checkpoint (`checkpoints/0.ckpt`).

    The checkpoint is what `profile` leaves behind when its reports are skipped:
    `ResultManager.results._results[model][variant]` is `[run config, {perf_analyzer
    command: {_model_config_measurements: [...]}}]`, each measurement holding its
    concurrency and `[metric, {"_value": ...}]` pairs (latencies in ms).
    """
    results = document.get("ResultManager.results", {}).get("_results", {})
    rows = []
    for variant, entry in results.get(model, {}).items():
        by_command = entry[1] if isinstance(entry, list) and len(entry) > 1 else {}
        for run in by_command.values():
            for measured in run.get("_model_config_measurements", []):
                metrics = {name: value["_value"] for name, value in measured["_non_gpu_data"]}
                params = measured.get("_model_specific_pa_params", {})
                if "perf_throughput" not in metrics or "perf_latency_p99" not in metrics:
                    continue
                rows.append(
                    MaRow(
                        variant=run.get("_model_variants_name", variant),
                        concurrency=int(params.get("concurrency-range") or 0),
                        throughput=float(metrics["perf_throughput"]),
                        p99_ms=float(metrics["perf_latency_p99"]),
                    )
                )
    return sorted(rows, key=lambda r: (r.variant, r.concurrency))


def _write_rows(path: Path, rows: list[MaRow]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MaRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(r.__dict__ for r in rows)


def _point(row: MaRow) -> dict:
    return {"concurrency": row.concurrency, "throughput": row.throughput, "p99_ms": row.p99_ms}


def ma_best(rows: list[MaRow], slo_ms: float) -> MaRow | None:
    """The highest-throughput measurement within the SLO (None when none meets it)."""
    within = [r for r in rows if r.p99_ms <= slo_ms]
    return max(within, key=lambda r: r.throughput, default=None)


def variant_config(output_repository: Path, variant: str, model: str) -> dict:
    """A Model Analyzer variant's config, renamed back to the model it tunes."""
    config = parse_pbtxt((output_repository / variant / "config.pbtxt").read_text())
    config["name"] = model
    return config


def best_within(levels: list[dict], slo_ms: float) -> dict | None:
    within = [lv for lv in levels if lv.get("p99_ms", float("inf")) <= slo_ms]
    return max(within, key=lambda lv: lv["throughput"], default=None)


# -- running -------------------------------------------------------------
def model_analyzer_bin() -> Path:
    path = MA_VENV / "bin" / "model-analyzer"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; `make bench-ma` creates it")
    return path


def ma_environment() -> dict[str, str]:
    """tritonserver's and perf_analyzer's environment (libraries; this Python first on PATH)."""
    return perf_analyzer_environment(server_environment())


def run_our_sweep(c: Comparison, repo: Path, search: str, out: Path) -> dict:
    document = sweep_document(c, repo, search)
    spec.parse(document, "comparison")  # the generated file must be a valid sweep
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sweep_{search}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    run_dir = out / f"sweep_{search}"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "perf", "sweep", str(path), "--out", str(run_dir), "--quiet"]
    print(f"our sweep ({search}): {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT)
    wall = time.monotonic() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    config_path = run_dir / "chosen" / c.model / "config.pbtxt"
    point = summary["chosen_point"]
    return {
        "tool": f"perf sweep ({search})",
        "exit_status": result.returncode,
        "wall_s": round(wall, 1),
        "search_wall_s": summary["wall_s"],
        "configs_tried": summary["configs_tried"],
        "measurements": summary["measurements"],
        "best_reported": None
        if point is None or not summary["feasible"]
        else {
            "concurrency": point["load"],
            "throughput": point["throughput"],
            "p99_ms": point["p99_us"] / 1000,
        },
        "chosen": summary["chosen"]["config"],
        "config": parse_pbtxt(config_path.read_text()),
        "results": str(run_dir),
    }


def run_model_analyzer(c: Comparison, repo: Path, input_data: Path, mode: str, out: Path) -> dict:
    work = WORK / mode
    shutil.rmtree(work, ignore_errors=True)
    copy = work / "repository"
    shutil.copytree(repo / c.model, copy / c.model)
    config = ma_config(
        c,
        repository=copy,
        work=work,
        input_data=input_data,
        ports=tuple(free_ports(3)),
        server_path=tritonserver_path(),
        analyzer_path=perf_analyzer_path(),
        backends=backend_directory(),
        mode=mode,
    )
    config_path = out / f"model_analyzer_{mode}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [str(model_analyzer_bin()), "profile", "-f", str(config_path)]
    log = out / f"model_analyzer_{mode}.log"
    print(f"model-analyzer ({mode}): {' '.join(argv)}; log {log}", flush=True)
    started = time.monotonic()
    with open(log, "w") as handle:
        result = subprocess.run(
            argv, cwd=work, env=ma_environment(), stdout=handle, stderr=subprocess.STDOUT
        )
    wall = time.monotonic() - started
    checkpoint = work / "checkpoints" / "0.ckpt"
    if result.returncode != 0 or not checkpoint.is_file():
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(
            f"model-analyzer ({mode}) failed with status {result.returncode}:\n" + "\n".join(tail)
        )
    rows = parse_ma_checkpoint(json.loads(checkpoint.read_text()), c.model)
    if not rows:
        raise RuntimeError(f"model-analyzer ({mode}) measured nothing; see {log}")
    _write_rows(out / f"model_analyzer_{mode}_measurements.csv", rows)
    best = ma_best(rows, c.slo_p99_ms)
    chosen = best or min(rows, key=lambda r: r.p99_ms)
    return {
        "tool": f"model-analyzer {MA_VERSION} ({mode})",
        "exit_status": result.returncode,
        "wall_s": round(wall, 1),
        "configs_tried": len({r.variant for r in rows}),
        "measurements": len(rows),
        "best_reported": None if best is None else _point(best),
        "chosen": chosen.variant,
        "config": variant_config(work / "output_repository", chosen.variant, c.model),
        "results": str(work),
    }


def remeasure(c: Comparison, repo: Path, input_data: Path, arms: dict, rounds: int) -> dict:
    """Every arm's chosen config on one server, interleaved, with the same perf_analyzer."""
    levels: dict[str, list[dict]] = {name: [] for name in arms}
    with TritonServer(
        repo, model_control="explicit", load_models=[c.model], exit_timeout_secs=5
    ) as server:
        original = spec.model_config(repo, c.model)
        try:
            for round_index in range(rounds):
                for name, arm in arms.items():
                    server.load_model(c.model, config=arm["config"])
                    for load in c.concurrency:
                        measured = analyzer.run(
                            analyzer.AnalyzerSpec(
                                model=c.model,
                                url=server.http_url,
                                load=load,
                                input_data=input_data,
                                measurement_interval_ms=c.interval_ms,
                                stability_percentage=c.stability_percentage,
                                max_trials=c.max_trials,
                            )
                        )
                        levels[name].append(
                            {
                                "round": round_index,
                                "concurrency": load,
                                "throughput": measured.throughput,
                                "p99_ms": measured.p99_ms,
                            }
                        )
                        print(
                            f"  {name} c={load}: {measured.throughput:.1f}/s "
                            f"p99 {measured.p99_ms:.1f} ms",
                            flush=True,
                        )
        finally:
            server.load_model(c.model, config=original)
    out = {}
    for name, points in levels.items():
        per_round = []
        for round_index in range(rounds):
            best = best_within([p for p in points if p["round"] == round_index], c.slo_p99_ms)
            per_round.append(best["throughput"] if best else 0.0)
        out[name] = {
            "levels": points,
            "throughput_at_slo_per_round": per_round,
            "throughput_at_slo": statistics.median(per_round),
        }
    return out


def markdown(results: dict) -> str:
    c = results["comparison"]
    lines = [
        f"# Sweep vs Model Analyzer: `{c['model']}`, p99 <= {c['slo_p99_ms']:g} ms",
        "",
        f"Machine: {results['machine']}; load average before {results['loadavg_before']}, "
        f"after {results['loadavg_after']}.",
        f"Space: max_batch_size {c['max_batch_size']}, max_queue_delay_microseconds "
        f"{c['max_queue_delay_microseconds']}, instances {c['instance_count']} (KIND_CPU) "
        f"= {c['space_size']} configs; concurrency {c['concurrency']}. perf_analyzer 2.51 for "
        f"all: time windows of {c['interval_ms']} ms, stability {c['stability_percentage']} %, "
        f"at most {c['max_trials']} windows, HTTP, dataset queries as input.",
        "",
        "| tool | wall time | configs | measurements | best reported (req/s at c) "
        "| re-measured at SLO (req/s) | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in results["arms"].items():
        reported = arm["best_reported"]
        reported_text = (
            "none within SLO"
            if reported is None
            else f"{reported['throughput']:.1f} at {reported['concurrency']:g} "
            f"(p99 {reported['p99_ms']:.0f} ms)"
        )
        again = results["remeasured"].get(name, {}).get("throughput_at_slo")
        lines.append(
            f"| {arm['tool']} | {arm['wall_s'] / 60:.1f} min | {arm['configs_tried']} | "
            f"{arm['measurements']} | {reported_text} | "
            f"{'-' if again is None else f'{again:.1f}'} | `{arm['chosen']}` |"
        )
    remeasured = results["remeasured"].values()
    rounds = {len(r.get("throughput_at_slo_per_round", [0])) for r in remeasured}
    lines += [
        "",
        "Re-measured: each tool's chosen config on one server, interleaved, at every "
        f"concurrency above; the best throughput with p99 within the SLO (median of "
        f"{max(rounds, default=1)} round(s)).",
    ]
    if results.get("remeasured_loadavg"):
        lines.append(f"Load average around the re-measurement: {results['remeasured_loadavg']}.")
    ratios = results.get("ratios") or {}
    if ratios:
        lines += ["", "Ratios (our smart sweep / Model Analyzer):", ""]
        lines += [f"* {key}: {value:.2f}" for key, value in ratios.items()]
    return "\n".join(lines) + "\n"


def ratios(arms: dict, remeasured: dict) -> dict:
    """Our smart sweep against each Model Analyzer run: time, measurements, throughput."""
    out = {}
    for mine in ("sweep_smart", "sweep_smart_rerun"):
        ours = arms.get(mine)
        for name in ("ma_brute", "ma_quick"):
            theirs = arms.get(name)
            if not ours or not theirs:
                continue
            label = mine.removeprefix("sweep_")
            out[f"wall_time_{label}_vs_{name}"] = ours["wall_s"] / theirs["wall_s"]
            out[f"measurements_{label}_vs_{name}"] = ours["measurements"] / theirs["measurements"]
            a = remeasured.get(mine, {}).get("throughput_at_slo")
            b = remeasured.get(name, {}).get("throughput_at_slo")
            if a and b:
                out[f"remeasured_throughput_{label}_vs_{name}"] = a / b
    return out


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.model_analyzer", description=__doc__
    )
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--model", default=Comparison.model)
    parser.add_argument("--slo-ms", type=float, default=Comparison.slo_p99_ms)
    parser.add_argument("--skip-brute", action="store_true", help="no brute run of our sweep")
    parser.add_argument(
        "--skip-ma-quick", action="store_true", help="no run of Model Analyzer's quick search"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="re-measurement rounds (the median is reported)"
    )
    parser.add_argument(
        "--remeasure-only",
        action="store_true",
        help="only re-measure the chosen configs of the last comparison.json",
    )
    args = parser.parse_args(argv)
    repo = Path(args.repository).resolve()
    if args.remeasure_only:
        return remeasure_only(repo, args.rounds)
    c = Comparison(model=args.model, slo_p99_ms=args.slo_ms)
    model_analyzer_bin()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "machine": MACHINE,
        "loadavg_before": loadavg(),
        "comparison": {k: v for k, v in c.__dict__.items()},
        "arms": {},
    }
    document = inputs.input_data(
        c.model, inputs.dataset_of(repo, c.model), repo, c.input_samples, c.input_seed
    )
    input_data = inputs.write_input_data(OUT / "input_data.json", document)
    started = time.monotonic()
    arms = results["arms"]
    arms["sweep_smart"] = run_our_sweep(c, repo, "smart", OUT)
    arms["ma_brute"] = run_model_analyzer(c, repo, input_data, "brute", OUT)
    if not args.skip_ma_quick:
        arms["ma_quick"] = run_model_analyzer(c, repo, input_data, "quick", OUT)
    if not args.skip_brute:
        arms["sweep_brute"] = run_our_sweep(c, repo, "brute", OUT)
    print("re-measuring the chosen configs", flush=True)
    results["remeasured"] = remeasure(c, repo, input_data, arms, args.rounds)
    results["ratios"] = ratios(arms, results["remeasured"])
    results["loadavg_after"] = loadavg()
    results["wall_s"] = round(time.monotonic() - started, 1)
    write_results(results)
    return 0


def write_results(results: dict) -> None:
    (OUT / "comparison.json").write_text(json.dumps(results, indent=1, default=str))
    (OUT / "comparison.md").write_text(markdown(results))
    print((OUT / "comparison.md").read_text())


def remeasure_only(repo: Path, rounds: int) -> int:
    """Re-measure the chosen configs of the last run again (more rounds, a quieter machine)."""
    path = OUT / "comparison.json"
    if not path.is_file():
        print(f"error: {path} does not exist; run the comparison first", file=sys.stderr)
        return 1
    results = json.loads(path.read_text())
    saved = {k: v for k, v in results["comparison"].items() if k != "space_size"}
    c = Comparison(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    loads = [loadavg()]
    print(f"re-measuring the chosen configs, {rounds} rounds", flush=True)
    remeasured = remeasure(c, repo, OUT / "input_data.json", results["arms"], rounds)
    loads.append(loadavg())
    results["remeasured"] = remeasured
    results["remeasured_loadavg"] = loads
    results["ratios"] = ratios(results["arms"], remeasured)
    write_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
