"""Performance, one subpackage per job: `tuning` (sweeps, reports, capacity plans),
`benchmarks`, `evaluation` (quality) and `reliability`. The modules at this level serve them
all: load generation (`loadgen`), latency summaries (`latency`), Triton statistics
(`triton_stats`) and perf_analyzer inputs (`inputs`)."""

from pathlib import Path

#: The repository's root, and the folder every job writes its results to.
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
