"""perf_analyzer wrapper: argv from the spec, CSV and report parsing (real outputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf.tuning import analyzer

DATA = Path(__file__).parent / "data"
STAGES = ("query_tokenizer", "ranking_features", "search_index", "search_ranker", "text_encoder")


def spec(**changes) -> analyzer.AnalyzerSpec:
    return analyzer.AnalyzerSpec(
        **{"model": "search", "url": "127.0.0.1:8000", "load": 4, **changes}
    )


def test_command_has_load_windows_and_composing_models():
    argv = analyzer.command(
        spec(input_data=Path("in.json"), composing_models=("a", "b"), shapes=("x:32",)),
        Path("out.csv"),
    )
    joined = " ".join(argv)
    assert "--concurrency-range 4 " in joined
    assert "--measurement-mode time_windows --measurement-interval 2000" in joined
    assert "--stability-percentage 100 --max-trials 8" in joined
    assert "--verbose-csv -f out.csv" in joined
    assert "--input-data in.json" in joined
    assert "--bls-composing-models a,b" in joined
    assert "--shape x:32" in joined


def test_command_request_rate():
    argv = analyzer.command(spec(load=12.5, load_mode="request_rate"), Path("o.csv"))
    assert argv[argv.index("--request-rate-range") + 1] == "12.5"


@pytest.mark.parametrize(
    "changes",
    [{"load": 0}, {"load": 1.5}, {"load_mode": "rps"}, {"protocol": "ftp"}, {"max_trials": 1}],
)
def test_bad_spec_is_refused(changes):
    with pytest.raises(ValueError):
        spec(**changes)


def test_parse_csv_concurrency():
    rows = analyzer.parse_csv((DATA / "search_concurrency.csv").read_text())
    assert [r["Concurrency"] for r in rows] == [1, 4]
    m = analyzer.measurement_from_row(spec(), rows[-1])
    assert m.throughput == pytest.approx(96.6507)
    assert m.p99_us == 89426 and m.p99_ms == pytest.approx(89.426)
    assert m.server.queue_us == 16993 and m.server.compute_infer_us == 22875
    assert m.server.total_us == 16993 + 30 + 22875 + 137


def test_parse_csv_request_rate():
    rows = analyzer.parse_csv((DATA / "search_request_rate.csv").read_text())
    assert rows[0]["Request Rate"] == 30 and rows[0]["p99 latency"] == 25208


def test_csv_without_latency_columns_is_an_error():
    with pytest.raises(analyzer.AnalyzerError, match="p99 latency"):
        analyzer.measurement_from_row(spec(), {"Inferences/Second": 3.0})


def test_composing_models_of_the_last_level():
    stages = analyzer.parse_composing_models((DATA / "search_concurrency.txt").read_text())
    assert tuple(sorted(stages)) == STAGES
    encoder = stages["text_encoder"]
    # the concurrency 4 section, not the concurrency 1 one
    assert (encoder.total_us, encoder.queue_us, encoder.compute_infer_us) == (12309, 1124, 10994)


def test_composing_models_request_rate_report():
    stages = analyzer.parse_composing_models((DATA / "search_request_rate.txt").read_text())
    assert sorted(stages) == ["query_tokenizer", "text_encoder"]
    assert stages["query_tokenizer"].compute_output_us == 179


def test_no_composing_models():
    assert analyzer.parse_composing_models("Request concurrency: 1\n  Client:\n") == {}


def test_error_message_keeps_the_cause():
    output = "*** Measurement Settings ***\nerror: failed to get model metadata: unknown model\n"
    assert analyzer.error_message(output) == "error: failed to get model metadata: unknown model"


CACHED_REPORT = """Request concurrency: 2
  Composing models:
  text_encoder, version: 1
      Inference count: 381
      Cache hit count: 120
      Cache miss count: 261
      Avg request latency: 8340 usec (overhead 4 usec + queue 1587 usec + cache hit/miss 6749 usec)
          Average Cache Hit Latency: 12 usec
          Average Cache Miss Latency: 6749 usec (cache lookup/insertion 3 usec + compute input 24 usec + compute infer 6626 usec + compute output 98 usec)

  top_k, version: 1
      Avg request latency: 960 usec (overhead 1 usec + queue 588 usec + compute input 9 usec + compute infer 278 usec + compute output 82 usec)
"""  # noqa: E501


def test_composing_models_with_a_response_cache():
    """perf_analyzer 2.51 reports a cache-enabled stage's compute on its cache-miss line."""
    stages = analyzer.parse_composing_models(CACHED_REPORT)
    assert stages["text_encoder"] == analyzer.Breakdown(1587, 24, 6626, 98, 8340)
    assert stages["top_k"].compute_infer_us == 278
