"""Performance, one subpackage per job: `tuning` (sweeps, reports, capacity plans),
`benchmarks`, `evaluation` (quality) and `reliability`. The modules at this level serve them
all: load generation (`loadgen`), latency summaries (`latency`), Triton statistics
(`triton_stats`), perf_analyzer inputs (`inputs`) and results files (`write_results`)."""

import json
from pathlib import Path

#: The repository's root, and the folder every job writes its results to.
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"


def write_results(path: Path, results: dict) -> None:
    """A results file: `results` as indented JSON at `path`, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
