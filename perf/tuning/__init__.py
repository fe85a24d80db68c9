"""Tuning: perf_analyzer sweeps over model configs (`sweep`, `spec`, `search`, `analyzer`),
their reports (`report`) and capacity plans (`capacity`). `python -m perf sweep|plan`."""
