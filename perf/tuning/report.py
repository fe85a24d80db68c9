"""Write a sweep's results: every trial as CSV and JSON, the Pareto front, the
chosen configs as ready `config.pbtxt` files, PNG plots and a Markdown report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from builders.specs import render_pbtxt  # noqa: E402
from perf.tuning import capacity  # noqa: E402
from perf.tuning.sweep import SweepResult, Trial  # noqa: E402

PARTS = ("queue_us", "compute_input_us", "compute_infer_us", "compute_output_us")


#: How a trial of the original configs (a confirmation round's) is named.
ORIGINAL_LABEL = "the original configs"


def rows(result: SweepResult) -> list[dict]:
    """One flat row per measurement (and one per trial that measured nothing)."""
    slo = result.spec.slo_p99_ms
    out = []
    for trial in result.trials:
        base = {"trial": trial.index, **trial.config}
        for m in trial.measurements:
            row = {
                **base,
                m.load_mode: m.load,
                "throughput": round(m.throughput, 2),
                "p50_ms": m.p50_us / 1000,
                "p90_ms": m.p90_us / 1000,
                "p95_ms": m.p95_us / 1000,
                "p99_ms": m.p99_us / 1000,
                "meets_slo": m.p99_ms <= slo,
            }
            row.update({f"server_{p[:-3]}_ms": getattr(m.server, p) / 1000 for p in PARTS})
            for stage, b in sorted(m.stages.items()):
                row[f"{stage}_queue_ms"] = b.queue_us / 1000
                row[f"{stage}_compute_ms"] = (b.total_us - b.queue_us) / 1000
            out.append(row)
        if trial.error:
            out.append({**base, "error": trial.error})
    return out


def pareto_front(points: list[tuple[float, float, object]]) -> list[tuple[float, float, object]]:
    """(throughput, p99, tag) points that no other point beats on both (more, lower)."""
    front = []
    for throughput, p99, tag in sorted(points, key=lambda p: (p[1], -p[0])):
        if not front or throughput > front[-1][0]:
            front.append((throughput, p99, tag))
    return front


def _write_csv(path: Path, records: list[dict]) -> None:
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in record.items()}
            )


def _label(trial: Trial) -> str:
    return f"#{trial.index} " + (
        ", ".join(
            f"{k.split('.', 1)[1] if len(k.split('.')) == 2 else k}={v}"
            for k, v in trial.config.items()
        )
        or ORIGINAL_LABEL
    )


def plot_curves(result: SweepResult, path: Path) -> None:
    """Throughput vs p99, one line per config, the SLO and the chosen point marked."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for trial in result.trials:
        if not trial.measurements:
            continue
        points = sorted((m.throughput, m.p99_ms) for m in trial.measurements)
        chosen = trial is result.best
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            linewidth=2.5 if chosen else 1,
            alpha=1 if chosen else 0.45,
            label=_label(trial) if chosen or len(result.trials) <= 8 else None,
        )
    best = result.best.best(result.spec.slo_p99_ms)
    if best is not None:
        ax.scatter(
            [best.throughput],
            [best.p99_ms],
            s=250,
            marker="*",
            color="red",
            zorder=5,
            label="chosen",
        )
    ax.axhline(result.spec.slo_p99_ms, color="red", linestyle="--", label="p99 SLO")
    ax.set_xlabel("throughput (inferences/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(f"{result.spec.model}: throughput vs p99 per config")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_breakdown(result: SweepResult, path: Path) -> None:
    """Stacked average server latency per config at its best point: per stage for a
    pipeline, queue / compute parts for a single model."""
    slo = result.spec.slo_p99_ms
    trials = [t for t in result.trials if t.measurements]
    points = [t.best(slo) for t in trials]
    stages = sorted({s for p in points for s in p.stages})
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(trials) + 5), 5))
    x = list(range(len(trials)))
    bottom = [0.0] * len(trials)
    colours = plt.get_cmap("tab10").colors
    if stages:
        layers = []
        for i, s in enumerate(stages):
            got = [p.stages.get(s) for p in points]
            colour = colours[i % len(colours)]
            compute = [(b.total_us - b.queue_us) / 1000 if b else 0 for b in got]
            layers.append((f"{s} compute", compute, colour, None))
            layers.append(
                (f"{s} queue", [b.queue_us / 1000 if b else 0 for b in got], colour, "//")
            )
    else:
        layers = [
            (
                p[:-3].replace("_", " "),
                [getattr(m.server, p) / 1000 for m in points],
                colours[i],
                None,
            )
            for i, p in enumerate(PARTS)
        ]
    for name, values, colour, hatch in layers:
        ax.bar(
            x,
            values,
            bottom=bottom,
            label=name,
            color=colour,
            hatch=hatch,
            alpha=0.55 if hatch else 1,
            edgecolor="white",
        )
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(x, [f"#{t.index}" + (" *" if t is result.best else "") for t in trials])
    ax.set_xlabel("config (* chosen), each at its best load within the SLO")
    ax.set_ylabel("average server latency (ms)")
    ax.set_title(f"{result.spec.model}: latency breakdown per stage (hatched: queue)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chosen_curve(result: SweepResult) -> list[tuple[float, float]]:
    return [(m.throughput, m.p99_ms) for m in result.best.measurements]


def write(result: SweepResult, out: Path) -> dict:
    """Write every output under `out`; return a summary dict (also written as summary.json)."""
    out.mkdir(parents=True, exist_ok=True)
    spec, slo = result.spec, result.spec.slo_p99_ms
    records = rows(result)
    _write_csv(out / "trials.csv", records)
    (out / "trials.json").write_text(json.dumps(records, indent=1))

    points = [
        (m.throughput, m.p99_ms, (t.index, m.load)) for t in result.trials for m in t.measurements
    ]
    front = pareto_front(points)
    pareto = [
        {
            "trial": i,
            spec.load_mode: load,
            "throughput": tp,
            "p99_ms": p99,
            **result.trials[i].config,
        }
        for tp, p99, (i, load) in front
    ]
    _write_csv(out / "pareto.csv", pareto)

    chosen_dir = out / "chosen"
    for model, config in result.chosen_configs().items():
        (chosen_dir / model).mkdir(parents=True, exist_ok=True)
        (chosen_dir / model / "config.pbtxt").write_text(render_pbtxt(config))

    best = result.best.best(slo)
    plan = None
    plan_error = None
    if spec.capacity is not None:
        try:
            plan = capacity.plan(
                chosen_curve(result),
                spec.capacity.target_qps,
                slo,
                spec.capacity.headroom,
                spec.capacity.price_per_replica_hour,
            )
        except capacity.CapacityError as err:
            plan_error = str(err)
    has_points = any(t.measurements for t in result.trials)
    if has_points:
        plot_curves(result, out / "throughput_vs_p99.png")
        plot_breakdown(result, out / "latency_breakdown.png")

    summary = {
        "model": spec.model,
        "search": spec.search,
        "slo_p99_ms": slo,
        "feasible": result.feasible,
        "chosen": {"trial": result.best.index, "config": result.best.config},
        "confirmation": result.confirmation,
        "chosen_point": None if best is None else best.to_dict(),
        "configs_tried": len(result.trials),
        "measurements": result.measurement_count,
        "wall_s": round(result.wall_s, 1),
        "plan": None if plan is None else plan.to_dict(),
        "plan_error": plan_error,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(markdown(result, pareto, plan, plan_error, has_points))
    return summary


def markdown(result, pareto, plan, plan_error, has_points) -> str:
    spec, slo = result.spec, result.spec.slo_p99_ms
    best = result.best.best(slo)
    lines = [
        f"# Sweep `{spec.name}`: {spec.model}",
        "",
        f"* search: **{spec.search}**; {len(result.trials)} configs, "
        f"{result.measurement_count} measurements, {result.wall_s / 60:.1f} min",
        f"* load: {spec.load_mode} {list(spec.loads)}; SLO p99 <= {slo:g} ms; "
        "objective: throughput",
    ]
    if spec.composing_models:
        lines.append(
            f"* pipeline stages (p99 is the pipeline's end to end): "
            f"{', '.join(spec.composing_models)}"
        )
    lines.append("")
    if best is None:
        lines += ["**No config could be measured.** See `trials.csv` for the errors.", ""]
    elif result.feasible:
        lines += [
            f"**Chosen: config #{result.best.index}**: {best.throughput:.1f} inferences/s at "
            f"{spec.load_mode} {best.load:g}, p99 {best.p99_ms:.1f} ms.",
            "",
        ]
    else:
        lines += [
            f"**No config meets p99 <= {slo:g} ms.** The closest is config "
            f"#{result.best.index}: p99 {best.p99_ms:.1f} ms at {spec.load_mode} {best.load:g} "
            f"({best.throughput:.1f} inferences/s). Its config is in `chosen/` for reference; "
            "relax the SLO, lower the load or add to the space.",
            "",
        ]
    if result.confirmation is not None:
        rounds = "; ".join(
            f"{original:.0f} vs {winner:.0f}" for original, winner in result.confirmation["rounds"]
        )
        verdict = (
            "kept"
            if result.confirmation["kept"]
            else "not kept: it did not beat them every round, so the original configs are chosen"
        )
        lines += [
            f"Confirmation of config #{result.confirmation['winner']} against the original "
            f"configs, inferences/s at the SLO (original vs it) per round: {rounds}; "
            f"{verdict}.",
            "",
        ]
    lines += ["| tunable | chosen |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.best.config.items()] or [
        f"| all | {ORIGINAL_LABEL} |"
    ]
    lines += [
        "",
        "Ready configs: "
        + ", ".join(f"`chosen/{m}/config.pbtxt`" for m in sorted(result.chosen_configs())),
        "",
    ]
    if has_points:
        lines += [
            "![throughput vs p99](throughput_vs_p99.png)",
            "",
            "![latency breakdown](latency_breakdown.png)",
            "",
        ]
    lines += [
        "## Pareto front (throughput vs p99)",
        "",
        "| trial | load | inferences/s | p99 ms |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| #{p['trial']} | {p[spec.load_mode]:g} | {p['throughput']:.1f} | {p['p99_ms']:.1f} |"
        for p in pareto
    ]
    lines += [
        "",
        "## Every config",
        "",
        "| trial | config | best inferences/s within SLO | lowest p99 ms | note |",
        "|---|---|---|---|---|",
    ]
    for t in result.trials:
        ok = t.feasible(slo)
        lowest = min((m.p99_ms for m in t.measurements), default=float("nan"))
        through = f"{max(m.throughput for m in ok):.1f}" if ok else "-"
        note = (t.error or "").splitlines()[0][:80] if t.error else ""
        config = ", ".join(f"{k}={v}" for k, v in t.config.items()) or ORIGINAL_LABEL
        lines.append(f"| #{t.index} | {config} | {through} | {lowest:.1f} | {note} |")
    lines.append("")
    if spec.capacity is not None:
        lines += ["## Capacity plan", ""]
        lines.append(plan.markdown() if plan else f"No plan: {plan_error}")
    return "\n".join(lines) + "\n"


def write_back(result: SweepResult, repository: Path) -> list[Path]:
    """Write the chosen configs over the models' config.pbtxt in `repository`."""
    written = []
    for model, config in result.chosen_configs().items():
        path = Path(repository) / model / "config.pbtxt"
        path.write_text(render_pbtxt(config))
        written.append(path)
    return written
