"""Run perf_analyzer 2.51 from a typed spec and parse what it reports.

`AnalyzerSpec` is one measurement: a model, one load level (a concurrency or a
request rate) and the measurement settings. `command(spec)` is the argv (pure);
`run(spec)` runs it and returns a `Measurement`: client throughput and latency
percentiles from the CSV (`-f`, `--verbose-csv`), the server-side breakdown of
the measured model (queue, compute input / infer / output) and the same
breakdown for every composing model (`--bls-composing-models`), read from the
report perf_analyzer prints, because its CSV leaves composing models out.

The defaults suit a 2-core machine: time windows of 2 s, stability judged on
the average latency and throughput (a window's p99 on 2 shared cores swings too
much to ever look stable) within a 100 % band (max/min of the last three
windows within 2x), at most 8 windows. The p99 reported is still the one over
the stable windows' requests.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from server.binaries import perf_analyzer_command

LOAD_MODES = ("concurrency", "request_rate")


class AnalyzerError(RuntimeError):
    """perf_analyzer failed or reported nothing usable."""


@dataclass(frozen=True)
class AnalyzerSpec:
    """One perf_analyzer measurement at one load level."""

    model: str
    url: str
    load: float
    load_mode: str = "concurrency"
    protocol: str = "http"
    input_data: Path | None = None
    composing_models: tuple[str, ...] = ()
    measurement_interval_ms: int = 2000
    stability_percentage: int = 100
    max_trials: int = 8
    shapes: tuple[str, ...] = ()
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.load_mode not in LOAD_MODES:
            raise ValueError(f"load_mode must be one of {', '.join(LOAD_MODES)}")
        if self.load <= 0:
            raise ValueError(f"load must be > 0, got {self.load}")
        if self.load_mode == "concurrency" and self.load != int(self.load):
            raise ValueError(f"a concurrency must be a whole number, got {self.load}")
        if self.protocol not in ("http", "grpc"):
            raise ValueError("protocol must be http or grpc")
        if self.measurement_interval_ms < 100 or self.max_trials < 3:
            raise ValueError("measurement_interval_ms must be >= 100 and max_trials >= 3")


@dataclass
class Breakdown:
    """Average server-side latency of one model, in microseconds."""

    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0
    total_us: float = 0.0


@dataclass
class Measurement:
    """What perf_analyzer measured at one load level."""

    model: str
    load_mode: str
    load: float
    throughput: float
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    server: Breakdown
    stages: dict[str, Breakdown] = field(default_factory=dict)

    @property
    def p99_ms(self) -> float:
        return self.p99_us / 1000.0

    def to_dict(self) -> dict:
        return asdict(self)


def command(spec: AnalyzerSpec, csv_path: Path) -> list[str]:
    """The perf_analyzer arguments for `spec` (without the binary)."""
    load = int(spec.load) if spec.load_mode == "concurrency" else spec.load
    flag = "--concurrency-range" if spec.load_mode == "concurrency" else "--request-rate-range"
    args = [
        "-m",
        spec.model,
        "-u",
        spec.url,
        "-i",
        spec.protocol,
        flag,
        f"{load}",
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(spec.measurement_interval_ms),
        "--stability-percentage",
        str(spec.stability_percentage),
        "--max-trials",
        str(spec.max_trials),
        "--verbose-csv",
        "-f",
        str(csv_path),
    ]
    if spec.input_data is not None:
        args += ["--input-data", str(spec.input_data)]
    if spec.composing_models:
        args += ["--bls-composing-models", ",".join(spec.composing_models)]
    for shape in spec.shapes:
        args += ["--shape", shape]
    return args


def run(spec: AnalyzerSpec) -> Measurement:
    """Run one measurement; raise AnalyzerError with perf_analyzer's own message on failure."""
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        csv_path = Path(tmp) / "result.csv"
        argv, env = perf_analyzer_command(command(spec, csv_path))
        try:
            result = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=spec.timeout_s
            )
        except subprocess.TimeoutExpired:
            raise AnalyzerError(
                f"perf_analyzer on {spec.model!r} ran past {spec.timeout_s:g} s"
            ) from None
        output = result.stdout + result.stderr
        if result.returncode != 0 or not csv_path.exists():
            raise AnalyzerError(f"perf_analyzer on {spec.model!r} failed: {error_message(output)}")
        rows = parse_csv(csv_path.read_text())
    if not rows:
        raise AnalyzerError(f"perf_analyzer on {spec.model!r} wrote an empty CSV")
    measurement = measurement_from_row(spec, rows[-1])
    measurement.stages = parse_composing_models(output)
    return measurement


def error_message(output: str) -> str:
    """The lines of perf_analyzer's output that say what went wrong."""
    keys = ("error", "failed", "unable", "unknown", "invalid", "not found", "expected")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    wanted = [line for line in lines if any(key in line.lower() for key in keys)]
    return "\n".join(wanted or lines[-5:]) or "(no output)"


def parse_csv(text: str) -> list[dict[str, float]]:
    """perf_analyzer's CSV report as one dict per load level (numbers as floats)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text.strip())):
        if not row or not row.get("Inferences/Second"):
            continue
        rows.append({key.strip(): float(value) for key, value in row.items() if value})
    return rows


def measurement_from_row(spec: AnalyzerSpec, row: dict[str, float]) -> Measurement:
    missing = [key for key in ("Inferences/Second", "p99 latency") if key not in row]
    if missing:
        raise AnalyzerError(f"perf_analyzer's CSV lacks the columns {missing}")
    parts = {
        "queue_us": row.get("Server Queue", 0.0),
        "compute_input_us": row.get("Server Compute Input", 0.0),
        "compute_infer_us": row.get("Server Compute Infer", 0.0),
        "compute_output_us": row.get("Server Compute Output", 0.0),
    }
    return Measurement(
        model=spec.model,
        load_mode=spec.load_mode,
        load=spec.load,
        throughput=row["Inferences/Second"],
        p50_us=row.get("p50 latency", 0.0),
        p90_us=row.get("p90 latency", 0.0),
        p95_us=row.get("p95 latency", 0.0),
        p99_us=row["p99 latency"],
        server=Breakdown(**parts, total_us=sum(parts.values())),
    )


STAGE_HEADER = re.compile(r"^\s*(\S+), version: (\S*)\s*$")
STAGE_LATENCY = re.compile(
    r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) usec \+ "
    r"compute input (\d+) usec \+ compute infer (\d+) usec \+ compute output (\d+) usec\)"
)
# A stage with `response_cache` on reports its queue on one line and its compute (on cache
# misses) on the next.
CACHED_STAGE_LATENCY = re.compile(
    r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) usec \+ "
    r"cache hit/miss (\d+) usec\)"
)
CACHE_MISS_LATENCY = re.compile(
    r"Average Cache Miss Latency: (\d+) usec \(cache lookup/insertion (\d+) usec \+ "
    r"compute input (\d+) usec \+ compute infer (\d+) usec \+ compute output (\d+) usec\)"
)


def parse_composing_models(output: str) -> dict[str, Breakdown]:
    """Per composing model breakdown of the last load level in perf_analyzer's report."""
    sections = re.split(r"^Request (?:concurrency|Rate): ", output, flags=re.MULTILINE)
    with_stages = [section for section in sections if "Composing models:" in section]
    if not with_stages:
        return {}
    last = with_stages[-1]
    stages: dict[str, Breakdown] = {}
    name, cached = None, None
    for line in last.split("Composing models:", 1)[1].splitlines():
        header = STAGE_HEADER.match(line)
        if header:
            name, cached = header.group(1), None
            continue
        if name is None:
            continue
        latency = STAGE_LATENCY.search(line)
        if latency:
            total, _, queue, c_in, c_infer, c_out = (float(v) for v in latency.groups())
            stages[name] = Breakdown(queue, c_in, c_infer, c_out, total)
            name = None
        elif match := CACHED_STAGE_LATENCY.search(line):
            cached = (float(match.group(1)), float(match.group(3)))
        elif (miss := CACHE_MISS_LATENCY.search(line)) and cached:
            _, _, c_in, c_infer, c_out = (float(v) for v in miss.groups())
            stages[name] = Breakdown(cached[1], c_in, c_infer, c_out, cached[0])
            name = None
    return stages
