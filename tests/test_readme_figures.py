"""The figures the READMEs quote are the ones in the committed results files (docs/results/,
copies of what `make bench`, `make quality` and the BLS comparison wrote under
perf/results/)."""

import json
from pathlib import Path

from perf.benchmarks import bench, search_scale, stage_cpu
from perf.evaluation import quality
from perf.reliability import scenarios as reliability

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def test_the_bench_table_is_the_one_in_the_summary():
    summary = json.loads((RESULTS / "bench_summary.json").read_text())
    table = bench.readme_table(summary)
    assert len(table.splitlines()) > 2
    for readme in ("README.md", "perf/README.md"):
        text = (ROOT / readme).read_text()
        assert table in text, f"{readme} does not quote docs/results/bench_summary.json"
        assert summary["date"] in text
    search_cpu = stage_cpu.table(summary["stage_cpu"]["search"])
    assert search_cpu in (ROOT / "README.md").read_text()
    perf_readme = (ROOT / "perf" / "README.md").read_text()
    for kind in ("search", "recommend"):
        assert stage_cpu.table(summary["stage_cpu"][kind]) in perf_readme, kind


def test_the_query_encoder_stage_cpu_tables_are_the_ones_in_its_results():
    measured = json.loads((RESULTS / "stage_cpu.json").read_text())
    text = (ROOT / "README.md").read_text()
    for kind in ("search", bench.TEACHER_SEARCH):
        assert stage_cpu.table(measured["stage_cpu"][kind]) in text, kind
    assert bench.repetitions_table(measured) in text
    assert f"run of\n{measured['date']}" in text


def test_the_bls_vs_ensemble_table_is_the_one_in_its_results():
    results = json.loads((RESULTS / "bls_vs_ensemble.json").read_text())
    text = (ROOT / "perf" / "README.md").read_text()
    for concurrency in (8, 16):
        for arm, label in (("bls", "BLS"), ("ensemble", "ensemble")):
            rows = [
                r for r in results["rows"] if r["arm"] == arm and r["concurrency"] == concurrency
            ]
            each = ", ".join(f"{r['throughput']:.1f}" for r in rows)
            p99 = ", ".join(f"{r['p99_ms']:.0f}" for r in rows)
            assert f"| {concurrency} | {label} | {each} | {p99} |" in text


def test_the_quality_tables_are_the_ones_in_its_results():
    report = json.loads((RESULTS / "quality.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert quality.readme_table(report) in text, "README.md does not quote quality.json"
    assert f"the run of {report['date']}" in text


def test_the_reliability_table_is_the_one_in_its_results():
    results = json.loads((RESULTS / "reliability.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert reliability.readme_table(results) in text, "README.md does not quote reliability.json"
    assert reliability.overload_table(results) in text, "README.md lacks the overload tables"
    assert f"The run of {results['date']}" in text


def test_the_search_scale_tables_are_the_ones_in_its_results():
    results = json.loads((RESULTS / "search_scale.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert search_scale.readme_table(results) in text, "README.md does not quote it"
    assert f"search_scale.json of {results['date'][:10]}" in text


def test_the_ranker_comparison_is_the_one_in_its_results():
    report = json.loads((RESULTS / "quality.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert quality.ranker_table(report) in text, "README.md lacks the ranker comparison"
    assert f"ranker comparison of {report['ranker_comparison']['date']}" in text


def test_the_dp_comparison_is_the_one_in_its_results():
    report = json.loads((RESULTS / "quality.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert quality.dp_table(report) in text, "README.md lacks the DP comparison"
    assert f"DP comparison of {report['dp_comparison']['date']}" in text


def test_the_queue_timeout_table_is_the_one_in_its_results():
    runs = [
        json.loads((RESULTS / "queue_timeouts" / f"{us}.json").read_text())
        for us in (50000, 16667, 8333)
    ]
    text = (ROOT / "README.md").read_text()
    assert reliability.queue_timeout_table(runs) in text
    assert all(
        run["settings"]["queue_timeout_us"] == us for run, us in zip(runs, (50000, 16667, 8333))
    )
    assert f"runs of {runs[0]['date']}" in text
