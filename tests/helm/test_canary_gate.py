"""The canary gate: pure decision logic, metric parsing, the helm change it prints, and
decisions against real local Triton servers (and a real Prometheus scraping them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from k8s import canary_gate as gate
from k8s.canary_gate import Decision, Overlap, Thresholds, TrackStats
from server import TritonServer
from server.launcher import free_port

METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="search",version="1"} 120
nv_inference_request_success{model="search",version="2"} 30
nv_inference_request_success{model="search_ranker",version="1"} 500
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="search",reason="BACKEND",version="1"} 4
nv_inference_request_failure{model="search",reason="REJECTED",version="1"} 1
nv_inference_request_failure{model="search",reason="BACKEND",version="2"} 0
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="search",version="1"} 120
nv_inference_request_summary_us{model="search",version="1",quantile="0.5"} 800
nv_inference_request_summary_us{model="search",version="1",quantile="0.99"} 4500
nv_inference_request_summary_us{model="search",version="2",quantile="0.99"} NaN
"""

LIMITS = Thresholds(min_requests=100)


def stats(requests=1000, failures=0, p99_ms=10.0) -> TrackStats:
    return TrackStats(requests=requests, failures=failures, p99_ms=p99_ms)


# -- decision -----------------------------------------------------------------------------


def test_healthy_canary_is_promoted():
    decision = gate.decide(stats(), stats(p99_ms=11.0), LIMITS, Overlap(0.95, 50, 10))
    assert decision.action == gate.PROMOTE
    assert any("p99 canary 11.0 ms, stable 10.0 ms" in r for r in decision.reasons)


def test_slow_canary_is_rolled_back():
    decision = gate.decide(stats(p99_ms=10.0), stats(p99_ms=30.0), LIMITS)
    assert decision.action == gate.ROLLBACK
    assert "above x1.2 and +5 ms" in decision.reasons[0]


def test_small_absolute_p99_increase_is_tolerated():
    """x2 on a 1 ms model is +1 ms: below the absolute delta, not a regression."""
    assert gate.decide(stats(p99_ms=1.0), stats(p99_ms=2.0), LIMITS).action == gate.PROMOTE


def test_failing_canary_is_rolled_back():
    decision = gate.decide(stats(failures=1), stats(failures=50), LIMITS)
    assert decision.action == gate.ROLLBACK
    assert "error rate canary 5.00% (50/1000), stable 0.10%" in decision.reasons[0]


def test_errors_no_worse_than_stable_do_not_roll_back():
    assert gate.decide(stats(failures=30), stats(failures=32), LIMITS).action == gate.PROMOTE


def test_changed_ranking_is_rolled_back():
    decision = gate.decide(stats(), stats(), LIMITS, Overlap(0.4, 50, 10))
    assert decision == Decision(
        gate.ROLLBACK,
        (
            "top-10 overlap 0.40 over 50 queries: below 0.8",
            "error rate canary 0.00% (0/1000), stable 0.00%",
            "p99 canary 10.0 ms, stable 10.0 ms (x1.00, +0.0 ms)",
        ),
    )


def test_too_little_traffic_holds():
    decision = gate.decide(stats(), stats(requests=20, failures=20), LIMITS)
    assert decision.action == gate.HOLD
    assert decision.reasons == ("canary served 20 requests, need 100",)


def test_missing_latency_quantiles_hold():
    decision = gate.decide(stats(p99_ms=None), stats(), LIMITS)
    assert decision.action == gate.HOLD
    assert "summary_latencies=true" in decision.reasons[0]


def test_overlap_failure_rolls_back_even_with_little_traffic():
    decision = gate.decide(stats(requests=5), stats(requests=5), LIMITS, Overlap(0.1, 20, 10))
    assert decision.action == gate.ROLLBACK


@pytest.mark.parametrize(
    ("stable", "canary", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 1.0),
        ([1, 2, 3, 4], [4, 3, 9, 8], 0.5),
        ([1, 2], [], 0.0),
        ([], [], 1.0),
    ],
)
def test_topk_overlap(stable, canary, expected):
    assert gate.topk_overlap(stable, canary) == expected


def test_overlap_counts_canary_errors_and_skips_queries_stable_failed():
    class Answers:
        def __init__(self, answers: dict) -> None:
            self.answers, self.k = answers, 2

        def item_ids(self, query: str) -> list[int] | None:
            return self.answers[query]

    stable = Answers({"a": [1, 2], "b": None, "c": [3, 4], "d": [5, 6]})
    canary = Answers({"a": [1, 2], "b": [1, 2], "c": None, "d": [6, 9]})
    overlap = gate.measure_overlap(stable, canary, ["a", "b", "c", "d"])
    assert overlap == Overlap(mean=0.5, queries=3, k=2, canary_failures=1)


# -- metrics --------------------------------------------------------------------------------


def test_snapshot_of_triton_metrics_per_model_and_version():
    samples = gate.parse_metrics(METRICS)
    assert gate.snapshot(samples, {"model": "search"}) == gate.Snapshot(150, 5, 4500)
    assert gate.snapshot(samples, {"model": "search", "version": "2"}) == gate.Snapshot(30, 0, None)
    assert gate.snapshot(samples, {"model": "absent"}) == gate.Snapshot(0, 0, None)


def test_window_stats_are_counter_deltas():
    before, after = gate.Snapshot(100, 2, 900), gate.Snapshot(400, 12, 4000)
    assert gate.window_stats(before, after) == TrackStats(requests=310, failures=10, p99_ms=4.0)
    with pytest.raises(gate.GateError, match="restarted"):
        gate.window_stats(after, before)


def test_label_matchers_are_parsed_or_refused():
    assert gate.parse_matchers('track="canary", version="2"') == {"track": "canary", "version": "2"}
    with pytest.raises(gate.GateError, match="cannot read label matchers"):
        gate.parse_matchers("track=canary")


# -- the helm change -----------------------------------------------------------------------

RELEASE_VALUES = {
    "image": {"tag": "24.10-py3", "digest": "sha256:" + "0" * 64},
    "modelRepository": {"source": "s3", "s3": {"bucket": "shop", "prefix": "releases/a"}},
    "canary": {
        "enabled": True,
        "weight": 10,
        "image": {"repository": "", "tag": "24.11-py3"},
        "modelRepository": {"s3": {"prefix": "releases/b"}},
        "extraArgs": ["--model-load-thread-count=2"],
    },
}


def upgrade(action: str, values: dict) -> str | None:
    return gate.helm_upgrade(Decision(action, ()), "rel", "./chart", "shop", values, [25, 50, 100])


def test_rollback_disables_the_canary():
    assert upgrade(gate.ROLLBACK, RELEASE_VALUES) == (
        "helm upgrade rel ./chart --namespace shop --reuse-values --set-json canary.enabled=false"
    )


def test_promotion_walks_the_weight_steps():
    assert upgrade(gate.PROMOTE, RELEASE_VALUES).endswith("--set-json canary.weight=25")
    at_half = {**RELEASE_VALUES, "canary": {**RELEASE_VALUES["canary"], "weight": 50}}
    assert upgrade(gate.PROMOTE, at_half).endswith("--set-json canary.weight=100")


def test_final_promotion_moves_the_canary_settings_to_stable():
    final = {**RELEASE_VALUES, "canary": {**RELEASE_VALUES["canary"], "weight": 100}}
    assert upgrade(gate.PROMOTE, final) == (
        "helm upgrade rel ./chart --namespace shop --reuse-values "
        "--set-json 'image.tag=\"24.11-py3\"' --set-json 'image.digest=\"\"' "
        "--set-json 'modelRepository.s3.prefix=\"releases/b\"' "
        "--set-json 'extraArgs=[\"--model-load-thread-count=2\"]' "
        "--set-json canary.enabled=false"
    )


def test_hold_changes_nothing():
    assert upgrade(gate.HOLD, RELEASE_VALUES) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prometheus", "http://p:9090", "--stable-metrics", "http://s/metrics"], "either"),
        (["--stable-metrics", "http://s/metrics"], "both --stable-metrics and --canary-metrics"),
        (["--prometheus", "http://p:9090", "--release", "rel"], "--release and --values"),
        (["--prometheus", "http://p:9090", "--queries", "q.txt"], "top-k overlap needs"),
    ],
)
def test_bad_arguments_exit_with_a_clear_error(argv, message, capsys):
    assert gate.main(["--model", "search", *argv]) == 1
    assert message in capsys.readouterr().err


def test_unreachable_metrics_exit_with_a_clear_error(capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = ["--model", "search", "--stable-metrics", url, "--canary-metrics", url, "--window", "0"]
    assert gate.main(argv) == 1
    assert f"cannot read {url}" in capsys.readouterr().err


# -- against real servers ----------------------------------------------------------------------

SERVER_ARGS = ("--metrics-config=summary_latencies=true",)
CANARIES = {
    "healthy": {},
    "slow": {"delay_ms": 250},
    "failing": {"fail": True},
    "reranked": {"salt": "retrained"},
}
QUERIES = [
    f"{color} {item}" for color in ("red", "blue", "black") for item in ("shoes", "jacket", "bag")
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, search_model):
    """`servers(name)`: the stable server or a canary variant, started on first use."""
    with ExitStack() as stack:
        started: dict[str, TritonServer] = {}

        def get(name: str) -> TritonServer:
            if name not in started:
                repo = search_model(tmp_path_factory.mktemp(name), **CANARIES.get(name, {}))
                started[name] = stack.enter_context(TritonServer(repo, extra_args=SERVER_ARGS))
            return started[name]

        yield get


@pytest.fixture(scope="module")
def gate_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("gate")
    (folder / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    (folder / "values.yaml").write_text(yaml.safe_dump(RELEASE_VALUES))
    return folder / "queries.txt", folder / "values.yaml"


# Thresholds sized for a shared 2-core machine: the slow canary adds 250 ms per request.
REAL_LIMITS = ["--min-requests", "5", "--max-p99-ratio", "3", "--max-p99-delta-ms", "100"]


def run_gate(capsys, stable, canary, gate_files, *extra: str) -> tuple[int, dict]:
    queries, values = gate_files
    code = gate.main(
        [
            "--model", "search", "--window", "3", "--json", *REAL_LIMITS,
            "--stable-infer", stable.http_url, "--canary-infer", canary.http_url,
            "--queries", str(queries), "--k", "5", "--load",
            "--release", "rel", "--namespace", "shop", "--values", str(values),
            *extra,
        ]
    )  # fmt: skip
    output = capsys.readouterr()
    assert output.out, output.err
    return code, json.loads(output.out)


def metrics_args(stable: TritonServer, canary: TritonServer) -> list[str]:
    return ["--stable-metrics", stable.metrics_url, "--canary-metrics", canary.metrics_url]


def test_real_slow_canary_is_rolled_back(servers, gate_files, capsys):
    stable, canary = servers("stable"), servers("slow")
    code, result = run_gate(capsys, stable, canary, gate_files, *metrics_args(stable, canary))
    assert (code, result["decision"]) == (4, "rollback"), result
    assert result["canary"]["p99_ms"] > 200
    assert "p99 canary" in result["reasons"][0]
    assert result["overlap"]["mean"] == 1.0
    assert result["helm"].endswith("--set-json canary.enabled=false")


def test_real_failing_canary_is_rolled_back(servers, gate_files, capsys):
    stable, canary = servers("stable"), servers("failing")
    code, result = run_gate(capsys, stable, canary, gate_files, *metrics_args(stable, canary))
    assert (code, result["decision"]) == (4, "rollback"), result
    assert result["canary"]["failures"] == result["canary"]["requests"] > 0
    assert any(r.startswith("error rate canary 100.00%") for r in result["reasons"])


def test_real_reranked_canary_is_rolled_back(servers, gate_files, capsys):
    stable, canary = servers("stable"), servers("reranked")
    code, result = run_gate(capsys, stable, canary, gate_files, *metrics_args(stable, canary))
    assert (code, result["decision"]) == (4, "rollback"), result
    assert result["overlap"]["mean"] < 0.5
    assert result["reasons"][0].startswith("top-5 overlap")


def test_real_healthy_canary_is_promoted(servers, gate_files, capsys):
    stable, canary = servers("stable"), servers("healthy")
    code, result = run_gate(capsys, stable, canary, gate_files, *metrics_args(stable, canary))
    assert (code, result["decision"]) == (0, "promote"), result
    assert result["canary"]["requests"] >= 5 and result["canary"]["failures"] == 0
    assert result["helm"].endswith("--set-json canary.weight=25")


# -- through a real Prometheus -----------------------------------------------------------------

STABLE_POD = "rel-triton-ecommerce-5d8f7c9b4-abcde"
CANARY_POD = "rel-triton-ecommerce-canary-6c7d8f9b5-xyz12"


def prometheus_get(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(servers, render, select, tmp_path_factory):
    """Prometheus scraping stable and slow canary as the chart's pods, with the chart's rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install the Debian package `prometheus`")
    folder = tmp_path_factory.mktemp("prometheus")
    (rule,) = select(render("canary"), "PrometheusRule")
    (folder / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    targets = [
        {
            "targets": [servers(name).metrics_url.split("/")[2]],
            "labels": {"namespace": "shop", "pod": pod, "track": track},
        }
        for name, pod, track in (("stable", STABLE_POD, "stable"), ("slow", CANARY_POD, "canary"))
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yaml")],
        "scrape_configs": [{"job_name": "triton", "static_configs": targets}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Ready once both targets have been scraped.
        deadline = time.monotonic() + 60
        while not (_ready(f"{base}/-/ready") and len(prometheus_get(base, "up == 1")) == 2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{(folder / 'prometheus.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_prometheus_mode_rolls_back_the_slow_canary(servers, prometheus, gate_files, capsys):
    stable, canary = servers("stable"), servers("slow")
    code, result = run_gate(
        capsys, stable, canary, gate_files, "--prometheus", prometheus, "--window", "6"
    )
    assert (code, result["decision"]) == (4, "rollback"), result
    assert result["stable"]["requests"] > 0 and result["canary"]["p99_ms"] > 200
    # The chart's recording rules evaluate on the real Triton metrics.
    p99 = {
        r["metric"]["track"]: float(r["value"][1])
        for r in prometheus_get(prometheus, 'triton:request_latency_us:p99{model="search"}')
    }
    assert p99["canary"] > 200_000 > p99["stable"]
    ratios = prometheus_get(prometheus, "triton:queue_compute:ratio")
    assert {r["metric"]["pod"] for r in ratios} == {STABLE_POD, CANARY_POD}
