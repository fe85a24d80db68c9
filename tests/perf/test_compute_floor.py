"""perf.benchmarks.compute_floor: the summary, the order and the table (pure), its errors, and a
short run of both pipelines' own stages on the small repository."""

from __future__ import annotations

import pytest

from perf.benchmarks import compute_floor

SAMPLES = {
    "search": {1: [(1000.0, 900.0), (1200.0, 1000.0), (1100.0, 950.0)], 8: [(400.0, 300.0)]},
    "recommend": {1: [(500.0, 450.0)], 8: [(250.0, 200.0)]},
}


def test_the_summary_takes_the_rounds_medians_and_divides_the_cores_by_the_cpu():
    summary = compute_floor.summarise(SAMPLES, cores=2)
    one = summary["search"]["1"]
    assert one["cpu_us_each"] == [1000.0, 1200.0, 1100.0]
    assert one["cpu_us_per_request"] == 1100.0 and one["wall_us_per_request"] == 950.0
    assert one["cpu_vs_smallest_batch"] == 1.0
    assert one["floor_requests_per_s"] == round(2e6 / 1100, 1)
    assert summary["search"]["8"]["cpu_vs_smallest_batch"] == round(400 / 1100, 3)
    assert summary["recommend"]["8"]["cpu_vs_smallest_batch"] == 0.5
    assert summary["recommend"]["8"]["floor_requests_per_s"] == 8000.0


def test_each_round_starts_one_batch_size_later():
    sizes = (1, 4, 8)
    assert [compute_floor.rotated(sizes, r) for r in range(4)] == [
        [1, 4, 8],
        [4, 8, 1],
        [8, 1, 4],
        [1, 4, 8],
    ]


def test_the_table_shows_each_size_s_median_range_ratio_and_floor():
    results = {"machine": {"cores": 2}, **compute_floor.summarise(SAMPLES, cores=2)}
    lines = compute_floor.table(results).splitlines()
    assert lines[0].endswith("| floor, req/s on 2 cores |")
    assert lines[2:] == [
        "| search | 1 | 1,100 (1,000–1,200) | 1.00 | 950 | 1,818 |",
        "| search | 8 | 400 (400–400) | 0.36 | 300 | 5,000 |",
        "| recommend | 1 | 500 (500–500) | 1.00 | 450 | 4,000 |",
        "| recommend | 8 | 250 (250–250) | 0.50 | 200 | 8,000 |",
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--repository", "{tmp}"], "no search or recommend pipeline in {tmp}: build it first"),
        (["--rounds", "0"], "the measurement needs rounds >= 1 and seconds > 0, got 0, 2.0"),
        (["--batch-sizes", "0", "8"], "batch sizes must be at least 1, got [0, 8]"),
    ],
)
def test_bad_arguments_are_a_one_line_error(tmp_path, capsys, args, error):
    args = [a.format(tmp=tmp_path) for a in args]
    assert compute_floor.main(args) == 2
    assert capsys.readouterr().err == f"compute_floor: {error.format(tmp=tmp_path)}\n"


@pytest.mark.slow
def test_a_short_run_measures_every_batch_size_of_both_pipelines_each_round(small_repository):
    results = compute_floor.measure(small_repository, (1, 4), seconds=0.05, rounds=2)
    assert results["machine"]["cores"] >= 1 and results["rounds"] == 2
    for kind in compute_floor.PIPELINES:
        assert set(results[kind]) == {"1", "4"}
        for row in results[kind].values():
            assert len(row["cpu_us_each"]) == len(row["wall_us_each"]) == 2
            assert row["cpu_us_per_request"] > 0 and row["floor_requests_per_s"] > 0
        assert results[kind]["1"]["cpu_vs_smallest_batch"] == 1.0
    with pytest.raises(ValueError, match="at most the bench's 512 requests"):
        compute_floor.measure(small_repository, (1, 513), seconds=0.05, rounds=1)
