"""CPU per stage: the arithmetic of a breakdown, snapshots, and a real one against Triton."""

import os

import pytest

from builders import names
from perf import inputs
from perf.benchmarks import bench, stage_cpu
from perf.tuning import spec


def test_a_breakdown_adds_the_instances_of_one_model_and_skips_new_processes():
    before = {1: ("text_encoder", 10.0), 2: ("text_encoder", 5.0), 3: ("top_k", 1.0)}
    after = {
        1: ("text_encoder", 11.0),
        2: ("text_encoder", 5.5),
        3: ("top_k", 1.1),
        4: ("top_k", 99.0),  # started meanwhile: its CPU is not all from this window
    }
    measured = stage_cpu.breakdown(before, after, requests=1000, wall_s=2.0, cores=2)
    assert list(measured["processes"]) == ["text_encoder", "top_k"]
    assert measured["processes"]["text_encoder"] == {
        "cpu_us_per_request": 1500.0,
        "share_of_cores": 0.375,
    }
    assert measured["cpu_us_per_request"] == pytest.approx(1600.0)
    assert measured["throughput"] == 500.0
    assert "| text_encoder | 1,500 | 38% |" in stage_cpu.table(measured)
    with pytest.raises(ValueError, match="requests answered"):
        stage_cpu.breakdown(before, after, requests=0, wall_s=2.0, cores=2)


def test_a_breakdown_shows_what_each_stage_computed_and_names_a_stage_it_missed():
    before = {1: ("search_query", 1.0), 2: ("tritonserver", 1.0)}
    after = {1: ("search_query", 1.5), 2: ("tritonserver", 1.2)}
    measured = stage_cpu.breakdown(before, after, requests=1000, wall_s=1.0, cores=2)
    counts = {
        "search_query": {"computed": 400, "executions": 50, "cache_hits": 600},
        "search_ranking": {"computed": 1000, "executions": 125, "cache_hits": 0},
        "top_k": {"computed": 0, "executions": 0, "cache_hits": 0},
    }
    shown = stage_cpu.with_stage_counts(measured, counts)
    assert shown["processes"]["search_query"] == {
        "cpu_us_per_request": 500.0,
        "share_of_cores": 0.25,
        "computed": 400,
        "mean_batch": 8.0,
        "cache_hits": 600,
    }
    assert shown["processes"]["tritonserver"] == measured["processes"]["tritonserver"]
    assert shown["unmeasured"] == ["search_ranking"]  # computed, but no process of it
    assert "unmeasured" not in stage_cpu.with_stage_counts(measured, {"top_k": counts["top_k"]})


def test_a_snapshot_reads_this_process_and_its_label():
    sum(i * i for i in range(200_000))  # some CPU time to read
    ((label, seconds),) = stage_cpu.snapshot({os.getpid(): "me"}).values()
    assert label == "me" and seconds > 0
    assert stage_cpu.snapshot({2**22 + 1: "gone"}) == {}  # above Linux's pid_max


def test_the_bench_breakdown_of_search_on_the_real_server(small_server, small_repository):
    dataset = inputs.dataset_of(small_repository, names.SEARCH)
    requests = inputs.input_data(names.SEARCH, dataset, small_repository, 64)["data"]
    bodies = bench.triton_bodies(names.SEARCH, requests)
    measured = bench.stage_cpu_breakdown(small_server, names.SEARCH, bodies, seconds=1.0)
    assert measured["errors"] == 0 and measured["requests"] > 0
    processes = measured["processes"]
    query_stage = bench.served_query_stage(
        bench.newest_release(small_repository, names.SEARCH)
    ).model
    for label in ("tritonserver", "load generator", query_stage, names.SEARCH_RANKING):
        assert processes[label]["cpu_us_per_request"] > 0, label
    assert names.TOP_K not in processes  # inside the ranking stage
    assert names.USER_TOWER not in processes  # a stage of the other pipeline
    # Each stage computed every request once, the last in flight after the window included;
    # the server has no response cache.
    for stage in (query_stage, names.SEARCH_RANKING):
        row = processes[stage]
        assert measured["requests"] <= row["computed"]
        assert row["computed"] <= measured["requests"] + bench.STAGE_CPU_CONCURRENCY
        assert row["mean_batch"] >= 1 and row["cache_hits"] == 0
    assert "unmeasured" not in measured


def test_the_bench_measures_search_with_the_teacher_in_place_of_its_student(
    small_server, small_repository, monkeypatch
):
    student = bench.served_encoder(small_repository).model
    if student == names.TEXT_ENCODER:
        pytest.skip("the small build's gate chose the teacher: no student to compare")
    dataset = inputs.dataset_of(small_repository, names.SEARCH)
    requests = inputs.input_data(names.SEARCH, dataset, small_repository, 64)["data"]
    bodies = bench.triton_bodies(names.SEARCH, requests)
    before = small_server.model_config(names.SEARCH)
    loaded: dict[str, dict] = {}
    load_configs = bench.load_configs

    def recorded(server, configs):
        loaded.update(configs)
        load_configs(server, configs)

    monkeypatch.setattr(bench, "load_configs", recorded)
    measured = bench.teacher_stage_cpu(small_server, bodies, seconds=1.0)
    # Measured as the other stages are, without the response cache (the repository's
    # config has it on: on a server with a cache, repeated queries would skip the stage).
    query_stage = bench.served_query_stage(
        bench.newest_release(small_repository, names.SEARCH)
    ).model
    teacher = bench.teacher_stage(query_stage)
    assert spec.model_config(small_repository, query_stage)["response_cache"]
    assert "response_cache" not in loaded[teacher]
    assert measured["errors"] == 0 and measured["requests"] > 0
    # The teacher and the same exact index, composed for the measurement and gone after it.
    assert measured["compared"] == {"student": query_stage, "teacher": teacher}
    assert measured["processes"][teacher]["cpu_us_per_request"] > 0
    assert query_stage not in measured["processes"]
    assert small_server.model_config(names.SEARCH) == before  # the release is back
    assert not small_server.is_model_ready(teacher)
    assert not (small_repository / teacher).exists()


#: Per pipeline: its composed stages, and the stages they were composed of.
COMPOSED = {
    names.SEARCH: (
        [names.SEARCH_QUERY, names.SEARCH_RANKING],
        [names.HYBRID_RETRIEVAL, names.QUERY_TOKENIZER, names.RANKING_FEATURES]
        + [names.SEARCH_RANKER, names.SEARCH_RETRIEVAL, names.TOP_K],
    ),
    names.RECOMMEND: (
        [names.RECOMMEND_RANKING],
        [names.RANKING_FEATURES, names.RECOMMEND_RANKER, names.RECOMMEND_RETRIEVAL, names.TOP_K],
    ),
}


@pytest.mark.parametrize("kind", sorted(COMPOSED))
def test_the_bench_measures_each_pipeline_with_its_composed_stages_apart(
    small_server, small_repository, kind
):
    dataset = inputs.dataset_of(small_repository, kind)
    requests = inputs.input_data(kind, dataset, small_repository, 64)["data"]
    bodies = bench.triton_bodies(kind, requests)
    before = small_server.model_config(kind)
    composed, parts = COMPOSED[kind]
    measured = bench.apart_stage_cpu(small_server, kind, bodies, seconds=1.0)
    assert measured["errors"] == 0 and measured["requests"] > 0
    assert measured["compared"] == {"composed": composed, "apart": parts}
    for part in parts:
        assert measured["processes"][part]["cpu_us_per_request"] > 0, part
    for model in composed:
        assert model not in measured["processes"]
    assert small_server.model_config(kind) == before  # the release is back
