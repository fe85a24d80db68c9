"""The benchmark's pure parts: request bodies, per-arm configs and the summary."""

import json

from builders import names
from perf.benchmarks import bench


def test_bodies_carry_each_pipelines_inputs():
    requests = [{"query": ["red shoes"], "user_id": [7], "k": [10]}]
    (search,) = bench.triton_bodies("search", requests)
    assert [t["name"] for t in json.loads(search)["inputs"]] == ["query", "user_id", "k"]
    (recommend,) = bench.triton_bodies("recommend", [{"user_id": [7], "k": [10]}])
    assert [t["name"] for t in json.loads(recommend)["inputs"]] == ["user_id", "k"]
    assert json.loads(bench.plain_bodies("search", requests)[0]) == {
        "query": "red shoes",
        "user_id": 7,
        "k": 10,
    }


def test_only_the_cache_arm_keeps_the_response_cache():
    originals = {
        "text_encoder": {"name": "text_encoder", "response_cache": {"enable": True}},
        "search_ranker": {"name": "search_ranker", "max_batch_size": 64},
    }
    tuned = {"text_encoder": {**originals["text_encoder"], "instance_group": [{"count": 2}]}}
    configs = bench.arm_configs(originals, tuned)
    assert "response_cache" not in configs["triton_default"]["text_encoder"]
    assert "response_cache" not in configs["triton_tuned"]["text_encoder"]
    assert configs["triton_tuned"]["text_encoder"]["instance_group"] == [{"count": 2}]
    assert configs["triton_tuned_cache"]["text_encoder"]["response_cache"] == {"enable": True}
    assert configs["triton_tuned"]["search_ranker"] == originals["search_ranker"]


def run(*throughputs):
    return [{"throughput_at_slo": t, "levels": []} for t in throughputs]


def test_summary_lists_each_repetition_and_says_whether_tuning_won():
    serving = {
        "skipped": {"ray_serve": "no Ray environment"},
        "arms": {
            "search": {
                "naive": run(50, 60, 55),
                "ray_serve": [],
                "triton_default": run(300, 310, 290),
                "triton_tuned": run(400, 300, 350),
                "triton_tuned_cache": run(900, 950, 920),
            }
        },
        "search_cache": {
            "encoder_hit_rate_each_repetition": [0.9, 0.95],
            "cold_replay": {
                "searches": 12950,
                "concurrency": 32,
                "throughput": 600.0,
                "p99_ms": 80.0,
                "encoder_hit_rate": 0.61,
                "logged_repeat_share": 0.6,
            },
        },
        "stage_cpu": {
            "search": {
                "concurrency": 16,
                "throughput": 250.0,
                "cpu_us_per_request": 3500.0,
                "share_of_cores": 0.375,
                "processes": {
                    "text_encoder": {"cpu_us_per_request": 3000.0, "share_of_cores": 0.375}
                },
            }
        },
    }
    summary = bench.summarise(serving, 100, 3, 150.0, "text_encoder")
    assert summary["slo_p99_ms"] == 100 and summary["repetitions"] == 3
    assert summary["search"]["triton_tuned"] == [400, 300, 350]
    assert "ray_serve" not in summary["search"]
    ratios = summary["search_ratios"]
    assert ratios["tuned_vs_naive_median"] == 350 / 55
    assert ratios["tuned_beats_default_every_repetition"] is False
    search_cpu = summary["stage_cpu"]["search"]
    assert search_cpu["gemm_peak_gflops"] == 150.0
    assert search_cpu["mflop_equivalent_per_request"] == 525.0  # 3,500 µs at 150 GFLOP/s
    assert search_cpu["mflop_equivalent_without_encoder"] == 75.0
    text = bench.markdown(
        {
            "machine": {"cpu_model": "m", "vector_extensions": ["avx2"], "cores": 2},
            "seconds": 4,
            "roofline": {"threads": 2, "gemm_peak_gflops": {}, "encoders": {}},
        },
        summary,
    )
    assert "does NOT beat the defaults" in text
    assert "| text_encoder | 3,000 | 38% |" in text
    assert "hit rate in each repetition 90%, 95%" in text
    assert "12,950 logged searches in logged order from a cold cache" in text
    assert "600 req/s, p99 80 ms, encoder hit rate 61% (60% of them" in text
    assert "search_encoder_cpu_vs_teacher" not in summary  # the teacher served: no student


def test_the_summary_compares_the_served_students_cpu_with_the_teachers():
    def breakdown(encoder: str, us: float) -> dict:
        return {
            "cpu_us_per_request": 2 * us,
            "processes": {encoder: {"cpu_us_per_request": us, "share_of_cores": 0.1}},
        }

    teacher = bench.teacher_stage(names.SEARCH_QUERY)
    serving = {
        "skipped": {},
        "arms": {},
        "search_cache": {},
        "stage_cpu": {
            "search": breakdown(names.SEARCH_QUERY, 150.0),
            bench.TEACHER_SEARCH: {
                **breakdown(teacher, 3000.0),
                "compared": {"student": names.SEARCH_QUERY, "teacher": teacher},
            },
            bench.APART[names.SEARCH]: {
                **breakdown(names.SEARCH_RETRIEVAL, 200.0),
                "compared": {"composed": [names.SEARCH_QUERY], "apart": []},
            },
            "recommend": breakdown(names.RECOMMEND_RANKING, 100.0),
            bench.APART[names.RECOMMEND]: {
                **breakdown(names.RECOMMEND_RANKER, 125.0),
                "compared": {"composed": [names.RECOMMEND_RANKING], "apart": []},
            },
        },
    }
    summary = bench.summarise(serving, 100, 3, 100.0, names.SEARCH_QUERY)
    assert summary["search_encoder_cpu_vs_teacher"] == 0.05
    assert summary["stage_cpu"][bench.TEACHER_SEARCH]["mflop_equivalent_per_request"] == 600.0
    # The whole search as released (300 µs) over with the query stage's parts apart (400).
    assert summary["search_composed_cpu_vs_apart"] == 0.75
    assert summary["recommend_composed_cpu_vs_apart"] == 0.8


def test_the_repeat_share_is_the_hit_rate_of_a_cache_empty_at_the_start():
    assert bench.repeat_share(["a", "b", "a", "a", "c"]) == 2 / 5
    assert bench.repeat_share([]) == 0.0


def test_the_in_process_arm_times_only_calls_after_a_warm_up():
    class Pipeline:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def run(self, k, queries=None, user_ids=None) -> None:
            self.calls.append((k, tuple(queries), tuple(user_ids)))

    requests = [{"query": [f"q{i}"], "user_id": [i], "k": [10]} for i in range(7)]
    pipeline = Pipeline()
    measured = bench.in_process(pipeline, names.SEARCH, requests, batch=3, seconds=0.01)
    assert pipeline.calls[0] == (10, ("q0", "q1", "q2"), (0, 1, 2))  # the untimed warm-up
    assert {call[1] for call in pipeline.calls} == {("q0", "q1", "q2"), ("q3", "q4", "q5")}
    assert measured["requests"] == 3 * (len(pipeline.calls) - 1)
    assert measured["batch"] == 3 and measured["throughput"] > 0
