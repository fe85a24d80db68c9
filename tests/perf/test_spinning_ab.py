"""perf.benchmarks.spinning_ab: the medians and the README table (pure), and a short run of
both arms on the real tritonserver."""

from __future__ import annotations

import pytest

from perf.benchmarks import spinning_ab


def row(arm, kind, concurrency, repetition, throughput, p99_ms):
    return {
        "arm": arm,
        "kind": kind,
        "concurrency": concurrency,
        "repetition": repetition,
        "throughput": throughput,
        "p99_ms": p99_ms,
        "errors": 0,
    }


def test_medians_and_table_take_each_arm_over_its_repetitions():
    results = {
        "rows": [
            row("spinning", "search", 16, 0, 200.0, 150.0),
            row("sleeping", "search", 16, 0, 300.0, 90.0),
            row("spinning", "search", 16, 1, 220.0, 130.0),
            row("sleeping", "search", 16, 1, 310.0, 100.0),
            row("spinning", "recommend", 16, 0, 1200.0, 40.0),
        ]
    }
    middle = spinning_ab.medians(results)
    assert middle[("search", 16, "spinning")] == (210.0, 140.0)
    assert middle[("search", 16, "sleeping")] == (305.0, 95.0)
    lines = spinning_ab.readme_table(results).splitlines()
    assert lines[2] == "| search | 16 | sleeping | 300, 310 | 90, 100 | 305 | 95 |"
    assert lines[3] == "| search | 16 | spinning | 200, 220 | 150, 130 | 210 | 140 |"
    assert lines[4].startswith("| recommend | 16 | spinning | 1,200 |")


@pytest.mark.slow
def test_a_short_run_measures_both_arms_without_errors(small_repository):
    results = spinning_ab.measure(small_repository, seconds=0.5, repetitions=1, concurrency=(2,))
    stages = results["onnxruntime_stages"]
    assert stages and all(s.endswith(("retrieval", "ranker")) for s in stages)
    assert {(r["arm"], r["kind"]) for r in results["rows"]} == {
        (arm, kind) for arm in spinning_ab.ARMS for kind in ("search", "recommend")
    }
    assert all(r["errors"] == 0 and r["throughput"] > 0 for r in results["rows"])


def test_a_repository_without_an_onnxruntime_stage_is_a_one_line_error(monkeypatch, capsys):
    def measure(repo, seconds, repetitions):
        raise ValueError(f"the pipelines of {repo} serve no stage on the onnxruntime backend")

    monkeypatch.setattr(spinning_ab, "measure", measure)
    assert spinning_ab.main(["--repository", "nowhere"]) == 2
    assert capsys.readouterr().err == (
        "spinning_ab: the pipelines of nowhere serve no stage on the onnxruntime backend\n"
    )
