"""Sweep files (validation, clear errors) and the report written from a result (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from builders import names
from builders.pipelines import PipelineSpec, Stage, ensemble
from builders.specs import parse_pbtxt, render_pbtxt
from perf.tuning import report, spec, sweep
from perf.tuning.analyzer import Breakdown, Measurement
from perf.tuning.sweep import SweepResult, Trial, apply_tunables, configs_current_value, valid_point

FULL_SEARCH = {
    role: Stage(model, 1)
    for role, model in [
        ("tokenizer", names.QUERY_TOKENIZER),
        ("encoder", names.TEXT_ENCODER),
        ("index", names.SEARCH_INDEX),
        ("top_k", names.TOP_K),
    ]
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Configs of the search pipeline and its stages, plus the pipeline's pins."""
    models = {
        names.SEARCH: ensemble(PipelineSpec(names.SEARCH, 50, FULL_SEARCH), 1, names.SEARCH),
        names.QUERY_TOKENIZER: names.query_tokenizer_spec(32),
        names.TEXT_ENCODER: names.text_encoder_spec(names.TEXT_ENCODER),
        names.SEARCH_RANKER: names.ranker_spec(names.SEARCH_RANKER, "onnxruntime"),
    }
    for name, model in models.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(model.to_pbtxt())
    stages = {
        role: {"model": model, "version": 1}
        for role, model in [
            ("tokenizer", names.QUERY_TOKENIZER),
            ("encoder", names.TEXT_ENCODER),
            ("ranker", names.SEARCH_RANKER),
        ]
    }
    (tmp_path / names.SEARCH / "1" / "pipeline.json").write_text(json.dumps({"stages": stages}))
    return tmp_path


def document(repo: Path, **changes) -> dict:
    base = {
        "model": "search",
        "repository": str(repo),
        "slo": {"p99_ms": 100},
        "load": {"concurrency": [1, 2]},
        "space": {"text_encoder": {"max_queue_delay_microseconds": [0, 1000]}},
    }
    return {**base, **changes}


def test_valid_file(repo, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(document(repo, capacity={"target_qps": 10})))
    parsed = spec.load(path)
    assert parsed.name == "s" and parsed.search == "smart" and parsed.load_mode == "concurrency"
    assert parsed.composing_models == ("query_tokenizer", "search_ranker", "text_encoder")
    assert parsed.dimensions == {"text_encoder.max_queue_delay_microseconds": [0, 1000]}
    assert parsed.capacity.target_qps == 10


def test_a_space_key_may_name_a_stage_by_its_role_in_the_pipeline(repo):
    parsed = spec.parse(document(repo, space={"encoder": {"instance_count": [1, 2]}}))
    assert parsed.dimensions == {"text_encoder.instance_count": [1, 2]}


def test_a_winner_is_confirmed_only_by_winning_every_round():
    assert sweep.confirmed([((1, 100.0), (1, 120.0)), ((1, 110.0), (1, 111.0))])
    assert not sweep.confirmed([((1, 100.0), (1, 120.0)), ((1, 110.0), (1, 105.0))])
    assert not sweep.confirmed([((1, 100.0), (0, -80.0))])  # infeasible loses to feasible
    assert not sweep.confirmed([])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": 1}, "unknown keys"),
        ({"model": "nosuch"}, "unknown model 'nosuch'"),
        ({"slo": {"p99_ms": -1}}, "slo.p99_ms must be a positive number"),
        ({"load": {"qps": [1]}}, "load must be"),
        ({"load": {"concurrency": [1.5]}}, "not a positive integer"),
        ({"search": "genetic"}, "search must be one of"),
        ({"space": {"user_tower": {"instance_count": [1]}}}, "neither 'search' nor one of"),
        ({"space": {"text_encoder": {"batch": [1]}}}, "unknown tunables"),
        ({"space": {"search": {"instance_count": [1]}}}, "'search' is an ensemble"),
        ({"space": {"text_encoder": {"instance_count": []}}}, "non-empty list"),
        ({"space": {"text_encoder": {"max_batch_size": [8, 64]}}}, r"max_batch_size >= 32"),
        ({"space": {"text_encoder": {"preferred_batch_size": [4]}}}, "list of positive integers"),
        ({"space": {"text_encoder": {"length_buckets": ["8"]}}}, "only the query tokenizer"),
        ({"space": {"query_tokenizer": {"length_buckets": [16]}}}, "must be a text like"),
        ({"space": {"query_tokenizer": {"length_buckets": ["8,64"]}}}, r"lie in .*\(max_length\)"),
        ({"measurement": {"windows": 3}}, "measurement"),
        ({"capacity": {"target_qps": 0}}, "capacity"),
        ({"confirm_rounds": -1}, "confirm_rounds must be a whole number"),
    ],
)
def test_bad_files_get_clear_errors(repo, changes, message):
    with pytest.raises(spec.SweepFileError, match=message):
        spec.parse(document(repo, **changes))


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(spec.SweepFileError, match="not valid YAML"):
        spec.load(path)
    with pytest.raises(spec.SweepFileError, match="does not exist"):
        spec.load(tmp_path / "missing.yaml")


def test_random_input_data_is_allowed_for_any_model(repo):
    parsed = spec.parse(
        document(
            repo,
            model="search_ranker",
            input_data="random",
            space={"search_ranker": {"instance_count": [1, 2]}},
        )
    )
    assert parsed.input_samples is None and parsed.composing_models == ()
    with pytest.raises(spec.SweepFileError, match="input_data: random"):
        spec.parse(
            document(repo, model="search_ranker", space={"search_ranker": {"instance_count": [1]}})
        )


def test_the_tokenizer_length_buckets_are_a_tunable(repo):
    space = {"query_tokenizer": {"length_buckets": ["8,16", "16", ""]}}
    parsed = spec.parse(document(repo, space=space))
    assert parsed.dimensions == {"query_tokenizer.length_buckets": ["8,16", "16", ""]}
    original = parse_pbtxt((repo / "query_tokenizer" / "config.pbtxt").read_text())
    tuned = apply_tunables(original, {"length_buckets": "16"})
    assert tuned["parameters"]["length_buckets"] == {"string_value": "16"}
    assert configs_current_value(tuned, "length_buckets") == "16"


def test_the_bounded_queue_is_a_tunable(repo):
    space = {"encoder": {"max_queue_size": [16, 128], "default_timeout_microseconds": [20_000]}}
    parsed = spec.parse(document(repo, space=space))
    assert parsed.dimensions == {
        "text_encoder.max_queue_size": [16, 128],
        "text_encoder.default_timeout_microseconds": [20_000],
    }
    original = parse_pbtxt((repo / "text_encoder" / "config.pbtxt").read_text())
    assert configs_current_value(original, "max_queue_size") == 0  # built unbounded
    assert configs_current_value(original, "default_timeout_microseconds") == 0
    tuned = apply_tunables(original, {"max_queue_size": 16, "default_timeout_microseconds": 20_000})
    assert tuned["dynamic_batching"]["default_queue_policy"] == {
        "timeout_action": "REJECT",
        "allow_timeout_override": True,
        "max_queue_size": 16,
        "default_timeout_microseconds": 20_000,
    }
    reloaded = parse_pbtxt(render_pbtxt(tuned))  # what load_model sends passes the proto
    assert configs_current_value(reloaded, "default_timeout_microseconds") == 20_000
    retuned = apply_tunables(tuned, {"max_queue_size": 8})["dynamic_batching"]
    assert retuned["default_queue_policy"]["max_queue_size"] == 8
    assert retuned["default_queue_policy"]["default_timeout_microseconds"] == 20_000
    with pytest.raises(spec.SweepFileError, match="must be a positive integer"):
        spec.parse(document(repo, space={"encoder": {"max_queue_size": [0]}}))


def test_apply_tunables_and_validity(repo):
    original = parse_pbtxt((repo / "text_encoder" / "config.pbtxt").read_text())
    tuned = apply_tunables(
        original,
        {
            "max_batch_size": 32,
            "preferred_batch_size": [8, 16],
            "max_queue_delay_microseconds": 0,
            "instance_count": 2,
            "intra_op_thread_count": 1,
        },
    )
    assert tuned["max_batch_size"] == 32 and tuned["instance_group"][0]["count"] == 2
    assert tuned["dynamic_batching"] == {
        "max_queue_delay_microseconds": 0,
        "preferred_batch_size": [8, 16],
    }
    assert tuned["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    assert original["max_batch_size"] == 64  # the original is untouched
    originals = {
        "search": parse_pbtxt((repo / "search" / "config.pbtxt").read_text()),
        "text_encoder": original,
    }
    assert valid_point({"text_encoder.preferred_batch_size": [64]}, originals, "search")
    assert not valid_point({"text_encoder.preferred_batch_size": [128]}, originals, "search")
    assert not valid_point({"search.max_batch_size": 128}, originals, "search")


def measurement(load, throughput, p99_ms, stages=True) -> Measurement:
    parts = Breakdown(1000, 10, 5000, 20, 6030)
    per_stage = (
        {
            "text_encoder": Breakdown(500, 5, 4000, 10, 4515),
            "search_ranker": Breakdown(100, 5, 800, 5, 910),
        }
        if stages
        else {}
    )
    return Measurement(
        "search",
        "concurrency",
        load,
        throughput,
        p99_ms * 500,
        p99_ms * 800,
        p99_ms * 900,
        p99_ms * 1000,
        parts,
        per_stage,
    )


def result_for(repo, slo, capacity=None) -> SweepResult:
    parsed = spec.parse(document(repo, slo={"p99_ms": slo}, capacity=capacity))
    originals = {"text_encoder": parse_pbtxt((repo / "text_encoder" / "config.pbtxt").read_text())}
    trials = [
        Trial(
            0,
            {"text_encoder.max_queue_delay_microseconds": 0},
            [measurement(1, 50, 30), measurement(2, 80, 60)],
        ),
        Trial(
            1,
            {"text_encoder.max_queue_delay_microseconds": 1000},
            [measurement(1, 55, 35), measurement(2, 95, 70)],
        ),
        Trial(2, {"text_encoder.max_queue_delay_microseconds": 5000}, [], "load failed: nope"),
    ]
    best = max(trials, key=lambda t: t.score(slo))
    return SweepResult(parsed, trials, best, originals, 12.0)


def test_report_and_plots_are_written(repo, tmp_path):
    result = result_for(repo, slo=65, capacity={"target_qps": 300, "price_per_replica_hour": 1})
    out = tmp_path / "run"
    summary = report.write(result, out)
    assert summary["feasible"] and summary["chosen"]["trial"] == 0
    assert summary["plan"]["replicas"] == 5  # 300 x 1.3 / 80 = 4.9
    for name in (
        "trials.csv",
        "trials.json",
        "pareto.csv",
        "summary.json",
        "report.md",
        "throughput_vs_p99.png",
        "latency_breakdown.png",
    ):
        assert (out / name).stat().st_size > 0, name
    chosen = parse_pbtxt((out / "chosen" / "text_encoder" / "config.pbtxt").read_text())
    assert chosen["dynamic_batching"].get("max_queue_delay_microseconds", "0") == "0"
    text = (out / "report.md").read_text()
    assert "**Chosen: config #0**" in text and "## Capacity plan" in text
    assert "load failed: nope" in text
    rows = json.loads((out / "trials.json").read_text())
    assert rows[0]["text_encoder_compute_ms"] == pytest.approx(4.015)
    pareto = (out / "pareto.csv").read_text().splitlines()
    assert len(pareto) == 1 + 4  # every point: each adds throughput for more p99
    assert (out / "throughput_vs_p99.png").read_bytes()[:4] == b"\x89PNG"


def test_infeasible_slo_names_the_closest_config(repo, tmp_path):
    result = result_for(repo, slo=10, capacity={"target_qps": 300})
    summary = report.write(result, tmp_path / "run")
    assert not summary["feasible"] and summary["chosen"]["trial"] == 0
    text = (tmp_path / "run" / "report.md").read_text()
    assert "**No config meets p99 <= 10 ms.** The closest is config #0: p99 30.0 ms" in text
    assert "No plan: no measured point meets" in text


def test_write_back(repo, tmp_path):
    result = result_for(repo, slo=65)
    written = report.write_back(result, repo)
    assert written == [repo / "text_encoder" / "config.pbtxt"]
    config = parse_pbtxt(written[0].read_text())
    assert config["dynamic_batching"].get("max_queue_delay_microseconds", "0") == "0"
    assert config["name"] == "text_encoder" and config["max_batch_size"] == 64
