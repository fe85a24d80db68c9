"""Performance: perf_analyzer sweeps, reports, capacity plans and benchmarks."""
