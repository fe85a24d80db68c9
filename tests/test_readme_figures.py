"""The figures the READMEs quote are the ones in the committed results files (docs/results/:
copies of what `make bench`, `make quality`, `make reliability`, `make bench-search-scale`,
`make bench-spinning`, `make bench-builds` and `make bench-compute` wrote under perf/results/,
and the BLS comparison's record)."""

import json
from pathlib import Path

import pytest

from perf.benchmarks import bench, builds_ab, compute_floor, search_scale, spinning_ab, stage_cpu
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
    for kind in ("search", bench.TEACHER_SEARCH, *bench.APART.values()):
        if kind in measured["stage_cpu"]:
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


#: (results file, the table a README quotes from it, that README, the words that date it).
QUOTED_TABLES = [
    ("quality.json", quality.readme_table, "README.md", "the run of {date}"),
    ("quality.json", quality.ranker_table, "README.md", "ranker comparison of {ranker_date}"),
    ("quality.json", quality.dp_table, "README.md", "DP comparison of {dp_date}"),
    ("reliability.json", reliability.readme_table, "README.md", "The run of {date}"),
    ("reliability.json", reliability.overload_table, "README.md", "The run of {date}"),
    ("search_scale.json", search_scale.readme_table, "README.md", "search_scale.json of {day}"),
    ("spinning_ab.json", spinning_ab.readme_table, "README.md", "The run of\n{date}"),
    ("builds_ab.json", builds_ab.table, "README.md", "two builds side by side on {date}"),
    ("compute_floor.json", compute_floor.table, "README.md", "`make bench-compute` of {date}"),
]


@pytest.mark.parametrize(
    ("name", "table", "readme", "dated"),
    QUOTED_TABLES,
    ids=[f"{name}:{table.__name__}" for name, table, _, _ in QUOTED_TABLES],
)
def test_each_quoted_table_is_the_one_in_its_results(name, table, readme, dated):
    results = json.loads((RESULTS / name).read_text())
    text = (ROOT / readme).read_text()
    assert table(results) in text, f"{readme} does not quote {table.__name__} of {name}"
    date = results["date"]
    assert (
        dated.format(
            date=date,
            day=date[:10],
            ranker_date=results.get("ranker_comparison", {}).get("date"),
            dp_date=results.get("dp_comparison", {}).get("date"),
        )
        in text
    )


def test_the_overload_runs_tables_are_the_ones_in_their_results():
    def run(limit: str, n: int) -> dict:
        return json.loads((RESULTS / "overload" / f"{limit}_{n}.json").read_text())

    none, auto = [run("none", n) for n in (1, 2)], [run("auto", n) for n in (1, 2)]
    text = (ROOT / "README.md").read_text()
    assert reliability.stage_work_table(none) in text
    assert reliability.stage_work_table(auto) in text
    assert reliability.in_flight_table([none[0], auto[0], none[1], auto[1]]) in text
    assert [r["settings"]["client_in_flight"] for r in none + auto] == ["none"] * 2 + ["auto"] * 2
    assert all(r["settings"]["queue_timeout_us"] is None for r in none + auto)
    assert len({r["date"] for r in none + auto}) == 1 and f"runs of {none[0]['date']}" in text


def test_the_adaptive_limit_runs_table_is_the_one_in_their_results():
    names = ("auto_3", "adaptive_from_120_1", "auto_4", "adaptive_from_120_2")
    runs = [json.loads((RESULTS / "overload" / f"{name}.json").read_text()) for name in names]
    text = (ROOT / "README.md").read_text()
    assert reliability.in_flight_table(runs) in text
    settings = [r["settings"]["client_in_flight"] for r in runs]
    assert settings == ["auto", "adaptive:120", "auto", "adaptive:120"]
    assert len({r["date"] for r in runs}) == 1 and f"runs of {runs[0]['date']}" in text


def test_the_scheduler_tick_runs_table_is_the_one_in_their_results():
    runs = [json.loads((RESULTS / "overload" / f"tick_{n}.json").read_text()) for n in (1, 2)]
    text = (ROOT / "README.md").read_text()
    assert reliability.in_flight_table(runs) in text
    assert [r["settings"]["client_in_flight"] for r in runs] == ["auto", "auto"]
    assert {r["date"] for r in runs} == {
        json.loads((RESULTS / "reliability.json").read_text())["date"]
    }


def test_the_full_runs_table_is_the_one_in_their_results():
    # the earlier runs, then the one quoted in full
    runs = [
        json.loads((RESULTS / "reliability_runs" / f"run_{n}.json").read_text()) for n in (1, 2, 3)
    ] + [json.loads((RESULTS / "reliability.json").read_text())]
    text = (ROOT / "README.md").read_text()
    assert reliability.full_runs_table(runs) in text
    assert len({r["date"] for r in runs}) == 1 and f"full runs of {runs[0]['date']}" in text


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
