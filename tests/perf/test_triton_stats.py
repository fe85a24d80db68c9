"""perf.triton_stats: Triton's statistics answers per (model, version) and part."""

from perf import triton_stats


def answer(*models):
    """A statistics answer: (name, version, {part: (count, ns)}, inference_count)."""
    return {
        "model_stats": [
            {
                "name": name,
                "version": version,
                "inference_count": str(requests),
                "execution_count": requests // 2,
                "inference_stats": {
                    part: {"count": str(count), "ns": ns} for part, (count, ns) in parts.items()
                },
            }
            for name, version, parts, requests in models
        ]
    }


BEFORE = answer(
    ("ranker", "1", {"success": (4, 400), "queue": (4, 40), "cache_hit": (1, 5)}, 4),
)
AFTER = answer(
    ("ranker", "1", {"success": (10, 1000), "queue": (10, 70), "cache_hit": (3, 9)}, 10),
    ("ranker", "2", {"success": (2, 50), "cache_hit": (2, 0), "cache_miss": (1, 0)}, 2),
)


def test_totals_are_integer_counts_and_ns():
    assert triton_stats.totals(BEFORE) == {
        ("ranker", "1"): {"success": (4, 400), "queue": (4, 40), "cache_hit": (1, 5)}
    }
    empty = {"name": "m", "version": "1", "inference_stats": {"queue": {}}}
    assert triton_stats.totals({"model_stats": [empty]}) == {("m", "1"): {"queue": (0, 0)}}


def test_difference_counts_what_before_lacks_from_zero():
    assert triton_stats.difference(BEFORE, AFTER) == {
        ("ranker", "1"): {"success": (6, 600), "queue": (6, 30), "cache_hit": (2, 4)},
        ("ranker", "2"): {"success": (2, 50), "cache_hit": (2, 0), "cache_miss": (1, 0)},
    }


def test_counts_sum_over_versions():
    assert triton_stats.part_count(AFTER, "cache_hit") == 5
    assert triton_stats.part_count(AFTER, "cache_miss") == 1
    assert triton_stats.part_count(BEFORE, "cache_miss") == 0
    assert triton_stats.counter(AFTER, "inference_count") == 12
    assert triton_stats.counter(AFTER, "execution_count") == 6
    assert triton_stats.counter({"model_stats": []}, "inference_count") == 0
