"""perf.benchmarks.search_scale: the build-log parser, and a whole run on a small catalog (real
build, real tritonserver), then a second run that reuses the build."""

import json

import pytest

from perf.benchmarks import search_scale

BUILD_OUTPUT = """\
[build 08:52:59] query_tokenizer done in 0.9 s
[build 08:53:13] text_encoder done in 13.2 s
[build 08:53:13] embedding 1,000,000 items with text_encoder
embedded 100032/1000000 texts (565 texts/s)
embedded 1000000/1000000 texts (554 texts/s)
[build 09:24:01] IVF4096,Flat nprobe 10: held-out recall@100 0.9930
[build 09:24:05] search_index done in 1852.7 s
[build 09:25:03] lexical_index done in 57.2 s
"""


def test_build_log_gives_each_model_time_and_the_last_embedding_rate():
    parsed = search_scale.parse_build_log(BUILD_OUTPUT.splitlines(keepends=True))
    assert parsed == {
        "stage_s": {
            "query_tokenizer": 0.9,
            "text_encoder": 13.2,
            "search_index": 1852.7,
            "lexical_index": 57.2,
        },
        "embed_texts_per_s": 554,
    }


def test_build_log_without_embedding_has_no_rate():
    assert search_scale.parse_build_log([]) == {"stage_s": {}, "embed_texts_per_s": None}


def statistics(*models):
    """A Triton statistics answer: (name, success count, queue ns, compute ns per part)."""
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "inference_stats": {
                    "success": {"count": count, "ns": 0},
                    "queue": {"count": count, "ns": queue},
                    "compute_input": {"count": count, "ns": part},
                    "compute_infer": {"count": count, "ns": part},
                    "compute_output": {"count": count, "ns": part},
                },
            }
            for name, count, queue, part in models
        ]
    }


def test_stage_times_are_per_request_between_the_two_answers():
    before = statistics(("search_index", 10, 5_000_000, 1_000_000), ("top_k", 4, 0, 0))
    after = statistics(
        ("search_index", 30, 25_000_000, 21_000_000),
        ("top_k", 4, 0, 0),
        ("lexical_index", 5, 0, 2e6),
    )
    assert search_scale.stage_times(before, after) == {
        "lexical_index": {"requests": 5, "queue_ms": 0.0, "compute_ms": 1.2},
        "search_index": {"requests": 20, "queue_ms": 1.0, "compute_ms": 3.0},
    }


@pytest.mark.slow
def test_small_run_builds_serves_grades_and_then_reuses_the_build(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "search_scale.json"
    args = ["--items", "1500", "--work", str(work), "--out", str(out), "--repeats", "2"]
    assert search_scale.main(args) == 0
    result = json.loads(out.read_text())
    build = result["build"]
    assert build["items"] == 1500 and build["peak_rss_mb"] > 100
    assert set(build["stage_s"]) >= {"text_encoder", "search_index", "hybrid_retrieval", "search"}
    assert build["embed_texts_per_s"] > 0
    assert (work / "build.log").read_text().count("done in") == len(build["stage_s"])

    served = result["served"]
    assert served["ready_s"] > 0 and served["memory"]["pss_mb"] > 100
    by_process = served["memory"]["pss_mb_by_process"]
    python_stages = {"query_tokenizer", "search_index", "hybrid_retrieval", "top_k"}
    assert set(by_process) >= python_stages | {"tritonserver"}
    assert abs(sum(by_process.values()) - served["memory"]["pss_mb"]) <= len(by_process)
    assert len(served["first_hits"]) == 4
    assert all(len(titles) == 3 for titles in served["first_hits"].values())
    assert [p["requests"] for p in served["latency_batch1_k10"]] == [result["graded_queries"]] * 2
    # An exact index at this size: search serves its query side as one composed stage.
    assert served["stage_ms"]["search_query"]["requests"] == 2 * result["graded_queries"]
    ndcg = served["quality"]["ndcg_at_10"]
    assert ndcg["served"] > ndcg["bm25"]
    table = search_scale.readme_table(result)
    assert f"| whole build, wall clock | {build['wall_s']:.1f} |" in table
    assert f"| 1,500 items | NDCG@10 | {ndcg['served']:.4f} |" in table
    assert f"| tritonserver (process) | | | {by_process['tritonserver']:,} |" in table

    capsys.readouterr()
    assert search_scale.main([*args, "--repeats", "1"]) == 0
    assert "reusing the build" in capsys.readouterr().err
    assert json.loads(out.read_text())["build"] == build
