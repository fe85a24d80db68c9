"""The CPU a figure was measured on: speeds differ from machine to machine, so every results
file and every build's speed table records it."""

from __future__ import annotations

import os
from pathlib import Path

#: The vector and matrix extensions that decide what a CPU's kernels can use.
VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
)


def describe(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU model, the vector extensions it has (of VECTOR_FLAGS) and the cores this
    process may use."""
    model, flags = "unknown", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "cpu_model": model,
        "vector_extensions": [flag for flag in VECTOR_FLAGS if flag in flags],
        "cores": len(os.sched_getaffinity(0)),
    }


def line(described: dict) -> str:
    """`describe()` as one line for a report."""
    extensions = ", ".join(described["vector_extensions"]) or "no AVX"
    return f"{described['cpu_model']} ({extensions}), {described['cores']} cores"
