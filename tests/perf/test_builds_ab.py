"""perf.benchmarks.builds_ab: the ratios and the table (pure), and a short run of both arms on
the real tritonserver."""

from __future__ import annotations

import pytest

from perf.benchmarks import builds_ab


def run(arm, repetition, cpu, throughput, processes):
    return {
        "arm": arm,
        "repetition": repetition,
        "cpu_us_per_request": cpu,
        "throughput": throughput,
        "processes": {name: {"cpu_us_per_request": us} for name, us in processes.items()},
    }


ROWS = [
    run("before", 0, 1000.0, 900.0, {"search_query": 600.0, "tritonserver": 400.0}),
    run("after", 0, 800.0, 1080.0, {"search_query": 450.0, "tritonserver": 350.0}),
    run("after", 1, 900.0, 990.0, {"search_query": 500.0, "load generator": 400.0}),
    run("before", 1, 1000.0, 900.0, {"search_query": 500.0, "tritonserver": 500.0}),
]


def test_ratios_compare_the_arms_means_and_each_repetition_s_runs_whatever_their_order():
    ratios = builds_ab.ratios(ROWS)
    # Of the means: a process counts where every run measured it.
    assert ratios["overall"] == {
        "cpu_us_per_request": 0.85,
        "throughput": 1.15,
        "processes": {"search_query": 0.864},
    }
    first, second = ratios["each"]
    assert first == {
        "cpu_us_per_request": 0.8,
        "throughput": 1.2,
        "processes": {"search_query": 0.75, "tritonserver": 0.875},
    }
    assert second == {
        "cpu_us_per_request": 0.9,
        "throughput": 1.1,
        "processes": {"search_query": 1.0},
    }


def test_table_lists_each_repetition_then_the_means_with_their_ratios():
    lines = builds_ab.table({"rows": ROWS, "ratios": builds_ab.ratios(ROWS)}).splitlines()
    assert lines[2:] == [
        "| 1 | 1,000 | 800 | 0.80 | 900 | 1,080 | 1.20 |",
        "| 2 | 1,000 | 900 | 0.90 | 900 | 990 | 1.10 |",
        "| mean | 1,000 | 850 | 0.85 | 900 | 1,035 | 1.15 |",
    ]


def test_a_repository_without_the_pipeline_or_no_repetition_is_a_one_line_error(tmp_path, capsys):
    code = builds_ab.main(["--before", str(tmp_path), "--after", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"builds_ab: no search pipeline in {tmp_path}, {tmp_path}: build it first\n"
    )
    code = builds_ab.main(["--before", ".", "--after", ".", "--repetitions", "0"])
    assert code == 2
    assert capsys.readouterr().err == (
        "builds_ab: the comparison needs at least one repetition, got 0\n"
    )


@pytest.mark.slow
def test_a_short_run_serves_each_arm_once_a_repetition(small_repository):
    repos = {"before": small_repository, "after": small_repository}
    results = builds_ab.measure(repos, "search", seconds=0.5, repetitions=2)
    assert [(r["repetition"], r["arm"]) for r in results["rows"]] == [
        (0, "before"),
        (0, "after"),
        (1, "after"),
        (1, "before"),
    ]
    assert all(r["errors"] == 0 and r["throughput"] > 0 for r in results["rows"])
    assert all("tritonserver" in r["processes"] for r in results["rows"])
    assert (
        len(results["ratios"]["each"]) == 2
        and "tritonserver" in results["ratios"]["overall"]["processes"]
    )
