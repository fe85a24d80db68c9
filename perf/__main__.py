"""`python -m perf sweep FILE` and `python -m perf plan ...`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from perf import RESULTS
from perf.tuning import capacity, report
from perf.tuning.spec import SweepFileError, load
from perf.tuning.sweep import RemoteServer, Sweep, progress_bar
from server import TritonServer
from server.launcher import ServerError


def sweep(args: argparse.Namespace) -> int:
    spec = load(args.file, args.repository)
    if args.search:
        spec = type(spec)(**{**spec.__dict__, "search": args.search})
    run_name = args.run or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(args.out) if args.out else RESULTS / run_name
    progress = None if args.quiet else progress_bar
    print(f"sweep {spec.name}: {spec.model}, {spec.search} search; results in {out}", flush=True)
    try:
        if args.url:
            result = Sweep(spec, RemoteServer(args.url), out, progress).run()
        else:
            models = [spec.model, *spec.composing_models]
            with TritonServer(
                spec.repository, model_control="explicit", load_models=models, exit_timeout_secs=5
            ) as server:
                result = Sweep(spec, server, out, progress).run()
    except KeyboardInterrupt:
        print("interrupted: the original configs are loaded back", file=sys.stderr)
        return 130
    summary = report.write(result, out)
    print(
        f"{summary['configs_tried']} configs, {summary['measurements']} measurements, "
        f"{summary['wall_s'] / 60:.1f} min; report: {out / 'report.md'}"
    )
    point = summary["chosen_point"]
    if point is None:
        print("no config could be measured; see trials.csv", file=sys.stderr)
        return 1
    if not result.feasible:
        print(
            f"no config meets p99 <= {spec.slo_p99_ms:g} ms; closest: trial "
            f"#{result.best.index} (p99 {point['p99_us'] / 1000:.1f} ms)",
            file=sys.stderr,
        )
        return 2
    print(
        f"chosen: trial #{result.best.index} {result.best.config}: "
        f"{point['throughput']:.1f}/s at p99 {point['p99_us'] / 1000:.1f} ms"
    )
    if args.write_back:
        for path in report.write_back(result, spec.repository):
            print(f"wrote {path}")
    return 0


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(throughput, p99 ms) points: a sweep folder (its chosen config) or a CSV with
    `throughput` and `p99_ms` columns."""
    if path.is_dir():
        summary = json.loads((path / "summary.json").read_text())
        chosen = summary["chosen"]["trial"]
        rows = json.loads((path / "trials.json").read_text())
        return [
            (r["throughput"], r["p99_ms"]) for r in rows if r["trial"] == chosen and "p99_ms" in r
        ]
    with open(path, newline="") as handle:
        return [(float(r["throughput"]), float(r["p99_ms"])) for r in csv.DictReader(handle)]


def plan(args: argparse.Namespace) -> int:
    points = read_curve(Path(args.curve))
    result = capacity.plan(points, args.target_qps, args.slo_ms, args.headroom, args.price)
    print(result.markdown())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("sweep", help="run a sweep file (perf/sweeps/*.yaml)")
    s.add_argument("file")
    s.add_argument("--repository", help="model repository (overrides the file's)")
    s.add_argument(
        "--url",
        help="a running Triton in explicit mode (HTTP host:port); "
        "default: start one on the repository",
    )
    s.add_argument("--search", choices=("smart", "brute"), help="override the file's search")
    s.add_argument("--run", help="run name (default: the sweep name and a timestamp)")
    s.add_argument("--out", help="output folder (default: perf/results/<run>)")
    s.add_argument(
        "--write-back",
        action="store_true",
        help="write the chosen configs over the repository's config.pbtxt files",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=sweep)

    p = commands.add_parser("plan", help="capacity plan from a measured curve")
    p.add_argument(
        "--curve",
        required=True,
        help="a sweep's results folder, or a CSV with throughput and p99_ms columns",
    )
    p.add_argument("--target-qps", type=float, required=True)
    p.add_argument("--slo-ms", type=float, required=True, help="p99 SLO in ms")
    p.add_argument("--headroom", type=float, default=0.3, help="extra capacity (0.3 = 30%%)")
    p.add_argument("--price", type=float, help="price per replica-hour")
    p.add_argument("--json", help="also write the plan as JSON here")
    p.set_defaults(func=plan)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (SweepFileError, capacity.CapacityError, ServerError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
