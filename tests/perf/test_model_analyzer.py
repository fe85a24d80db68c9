"""The Model Analyzer comparison's pure parts: both tools' configs and the checkpoint parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import names
from perf.benchmarks import model_analyzer as ma
from perf.tuning import spec


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / names.TEXT_ENCODER
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(names.text_encoder_spec(names.TEXT_ENCODER).to_pbtxt())
    return tmp_path


def _ma(c: ma.Comparison, tmp_path: Path, mode: str) -> dict:
    return ma.ma_config(
        c,
        repository=tmp_path / "copy",
        work=tmp_path / "work",
        input_data=tmp_path / "input.json",
        ports=(8100, 8101, 8102),
        server_path=Path("/bin/tritonserver"),
        analyzer_path=Path("/bin/perf_analyzer"),
        backends=Path("/backends"),
        mode=mode,
    )


def test_both_tools_get_the_same_space_load_and_slo(repo: Path, tmp_path: Path) -> None:
    c = ma.Comparison()
    ours = spec.parse(ma.sweep_document(c, repo, "smart"), "comparison")
    theirs = _ma(c, tmp_path, "brute")
    model = theirs["profile_models"][c.model]

    assert ours.slo_p99_ms == model["constraints"]["perf_latency_p99"]["max"] == c.slo_p99_ms
    assert ours.loads == tuple(model["parameters"]["concurrency"]) == c.concurrency
    space = ours.space[c.model]
    params = model["model_config_parameters"]
    assert space["max_batch_size"] == params["max_batch_size"]
    assert (
        space["max_queue_delay_microseconds"]
        == params["dynamic_batching"]["max_queue_delay_microseconds"]
    )
    assert params["instance_group"] == [[{"kind": "KIND_CPU", "count": space["instance_count"]}]]
    assert c.space_size == len(space["max_batch_size"]) * len(
        space["max_queue_delay_microseconds"]
    ) * len(space["instance_count"])
    # Same perf_analyzer settings on both sides.
    flags = theirs["perf_analyzer_flags"]
    assert flags["measurement-mode"] == "time_windows"
    assert flags["measurement-interval"] == ours.measurement.interval_ms
    assert flags["stability-percentage"] == ours.measurement.stability_percentage
    assert flags["max-trials"] == ours.measurement.max_trials
    assert theirs["client_protocol"] == "http"


def test_model_analyzer_runs_locally_on_cpu_with_our_binaries(tmp_path: Path) -> None:
    config = _ma(ma.Comparison(), tmp_path, "brute")
    assert config["triton_launch_mode"] == "local"
    assert config["profile_models"]["text_encoder"]["cpu_only"] is True
    assert config["gpus"] == []
    assert config["triton_server_path"] == "/bin/tritonserver"
    assert config["perf_analyzer_path"] == "/bin/perf_analyzer"
    assert config["triton_server_flags"]["backend-directory"] == "/backends"
    assert config["triton_http_endpoint"].endswith(":8100")
    assert config["triton_metrics_url"] == "http://localhost:8102/metrics"
    assert config["run_config_search_disable"] is True


def test_quick_mode_is_bounded_by_the_same_space(tmp_path: Path) -> None:
    c = ma.Comparison()
    config = _ma(c, tmp_path, "quick")
    assert config["run_config_search_mode"] == "quick"
    assert config["run_config_search_max_concurrency"] == max(c.concurrency)
    assert config["run_config_search_max_instance_count"] == max(c.instance_count)
    assert config["run_config_search_max_model_batch_size"] == max(c.max_batch_size)
    assert "model_config_parameters" not in config["profile_models"][c.model]
    with pytest.raises(ValueError, match="brute or quick"):
        _ma(c, tmp_path, "optuna")


def _measurement(concurrency: int, throughput: float, p99: float) -> dict:
    return {
        "_model_specific_pa_params": {"batch-size": 1, "concurrency-range": concurrency},
        "_non_gpu_data": [
            ["perf_latency_p99", {"_value": p99, "_timestamp": 0}],
            ["perf_throughput", {"_value": throughput, "_timestamp": 0}],
        ],
    }


def test_checkpoint_parsing_and_best_within_the_slo() -> None:
    def runs(variant: str, points: list[tuple[int, float, float]]) -> list:
        by_command = {
            f"{variant} -m text_encoder --concurrency-range={c}": {
                "_model_variants_name": variant,
                "_model_config_measurements": [_measurement(c, tp, p99)],
            }
            for c, tp, p99 in points
        }
        return [{"_model_run_configs": []}, by_command]

    document = {
        "ResultManager.results": {
            "_results": {
                "text_encoder": {
                    "text_encoder_config_default": runs(
                        "text_encoder_config_default", [(2, 90.0, 40.0)]
                    ),
                    "text_encoder_config_0": runs(
                        "text_encoder_config_0", [(2, 100.0, 30.0), (8, 300.0, 120.0)]
                    ),
                    "text_encoder_config_1": runs("text_encoder_config_1", [(4, 200.0, 80.0)]),
                },
                "other_model": {"other_config_0": runs("other_config_0", [(2, 999.0, 1.0)])},
            }
        }
    }
    rows = ma.parse_ma_checkpoint(document, "text_encoder")
    assert len(rows) == 4
    assert {r.variant for r in rows} == {
        "text_encoder_config_default",
        "text_encoder_config_0",
        "text_encoder_config_1",
    }
    best = ma.ma_best(rows, 100.0)
    assert (best.variant, best.concurrency, best.throughput) == ("text_encoder_config_1", 4, 200.0)
    assert ma.ma_best(rows, 10.0) is None
    assert ma.parse_ma_checkpoint({}, "text_encoder") == []


def test_variant_config_loads_back_under_the_model_name(repo: Path, tmp_path: Path) -> None:
    original = spec.model_config(repo, names.TEXT_ENCODER)
    variant = tmp_path / "out" / "text_encoder_config_3"
    variant.mkdir(parents=True)
    text = (repo / names.TEXT_ENCODER / "config.pbtxt").read_text()
    variant.joinpath("config.pbtxt").write_text(
        text.replace('name: "text_encoder"', 'name: "text_encoder_config_3"')
    )
    config = ma.variant_config(tmp_path / "out", "text_encoder_config_3", names.TEXT_ENCODER)
    assert config == {**original, "name": names.TEXT_ENCODER}


def test_best_within() -> None:
    levels = [
        {"throughput": 10.0, "p99_ms": 5.0},
        {"throughput": 30.0, "p99_ms": 150.0},
        {"throughput": 20.0, "p99_ms": 90.0},
    ]
    assert ma.best_within(levels, 100.0)["throughput"] == 20.0
    assert ma.best_within(levels, 1.0) is None
