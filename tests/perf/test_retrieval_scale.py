"""perf.benchmarks.retrieval_scale on a tiny catalog: the rows, the ratios and the plot."""

import json

import numpy as np

from perf.benchmarks import retrieval_scale


def test_mixture_is_clustered_on_the_unit_sphere():
    x = retrieval_scale.mixture(2000, dim=64)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    cosines = x[:50] @ x.T
    assert np.sort(cosines, axis=1)[:, -2].mean() > 0.4 > abs(cosines.mean())


def test_tiny_run_writes_rows_and_a_plot(tmp_path):
    out = tmp_path / "retrieval_scale.json"
    assert (
        retrieval_scale.main(
            [
                "--sizes",
                "10000,12000",
                "--queries",
                "40",
                "--served-size",
                "0",
                "--out",
                str(out),
                "--scratch",
                str(tmp_path / "scratch"),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    rows = {(r["items"], r["index"]): r for r in result["rows"]}
    assert set(rows) == {(10000, "exact"), (10000, "ann"), (12000, "exact"), (12000, "ann")}
    for row in rows.values():
        assert {
            "params",
            "recall_at_100",
            "p50_ms",
            "p99_ms",
            "qps",
            "memory_mb",
            "build_s",
        } <= set(row)
    assert rows[12000, "exact"]["recall_at_100"] == 1.0
    assert rows[12000, "ann"]["recall_at_100"] >= 0.98
    assert set(result["ratios"]) == {"10000", "12000"}
    assert out.with_suffix(".png").stat().st_size > 1000
