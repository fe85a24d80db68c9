"""Triton's model statistics (`get_inference_statistics`, JSON): per (model, version) counts
and nanoseconds of each part, and what changed between two answers."""

from __future__ import annotations

#: The parts of a request's compute time.
COMPUTE = ("compute_input", "compute_infer", "compute_output")

Totals = dict[tuple[str, str], dict[str, tuple[int, int]]]


def totals(answer: dict) -> Totals:
    """(model, version) -> part (`success`, `queue`, `compute_infer`, `cache_hit`, ...) ->
    (count, ns)."""
    return {
        (model["name"], model["version"]): {
            part: (int(value.get("count", 0)), int(value.get("ns", 0)))
            for part, value in model["inference_stats"].items()
        }
        for model in answer["model_stats"]
    }


def difference(before: dict, after: dict) -> Totals:
    """`totals(after)` less `totals(before)`; what `before` lacks counts as zero."""
    start = totals(before)
    changed: Totals = {}
    for key, parts in totals(after).items():
        old = start.get(key, {})
        changed[key] = {}
        for part, (count, ns) in parts.items():
            old_count, old_ns = old.get(part, (0, 0))
            changed[key][part] = (count - old_count, ns - old_ns)
    return changed


def part_count(answer: dict, part: str) -> int:
    """How many requests `part` (e.g. `cache_hit`) counted, over every model and version."""
    return sum(parts.get(part, (0, 0))[0] for parts in totals(answer).values())


def counter(answer: dict, name: str) -> int:
    """A model-level counter (`inference_count`, `execution_count`), over every model and
    version."""
    return sum(int(model.get(name, 0)) for model in answer["model_stats"])
