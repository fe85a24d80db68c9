"""Reliability scenarios: the pure accounting parts, the stub watchdog's parsing, and a
short run of each scenario on the real server (zero lost calls, client and server agree)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from clients import DeadlineExceededError, ServerError, UnavailableError
from perf import reliability
from perf.reliability import Counts, Harness, Settings, Tally
from server.stub_watchdog import Stub, parse_stub, restarted_config

METRICS = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="search",version="2"} 90
nv_inference_request_success{model="search_v1",version="1"} 10
nv_inference_request_success{model="recommend",version="1"} 50
nv_inference_request_success{model="top_k",version="1"} 150
nv_inference_request_failure{model="search",reason="OTHER",version="2"} 4
nv_inference_request_failure{model="top_k",reason="BACKEND",version="1"} 2
nv_inference_request_duration_us{model="search",version="2"} 12345
"""


def test_only_entry_ensembles_are_counted_and_failures_are_halved():
    assert reliability.entry_counts(METRICS) == Counts(success=150, failure=2)
    assert reliability.entry_counts(METRICS, {"search_v1"}) == Counts(success=10)
    assert [reliability.is_entry_model(m) for m in ("search_v3", "recommend", "top_k")] == [
        True,
        True,
        False,
    ]


def test_lifetimes_add_up_after_a_restart():
    lifetimes = [(Counts(10, 1), Counts(110, 3)), (Counts(), Counts(40, 0))]
    assert reliability.lifetime_counts(lifetimes) == Counts(140, 2)


def test_failed_attempts_that_reached_no_model_are_told_apart():
    dead_stub = UnavailableError("in ensemble 'search', Stub process 'top_k_0_0' is not healthy.")
    assert reliability.reached_a_model(dead_stub)
    assert reliability.reached_a_model(ServerError("in ensemble 'search', boom"))
    refused = "connections to all backends failing; last error: UNKNOWN: Failed to connect"
    assert not reliability.reached_a_model(UnavailableError(refused))
    assert not reliability.reached_a_model(UnavailableError("Stream removed (Socket closed)"))
    assert not reliability.reached_a_model(DeadlineExceededError("no answer within 1 s"))


def test_accounting_agrees_only_when_both_sides_match():
    tally = Tally(answered=100, failed_at_model=3)
    assert reliability.accounting(tally, Counts(100, 3))["agree"]
    assert reliability.accounting(tally, Counts(140, 3), gate_requests=40)["agree"]
    assert not reliability.accounting(tally, Counts(101, 3))["agree"]
    assert not reliability.accounting(tally, Counts(100, 2))["agree"]


def test_tally_counts_calls_errors_and_retries():
    tally = Tally()
    tally.call("search", 0.010, 2, attempts=1)
    tally.call("search", 0.030, 2, attempts=3)
    tally.call("error", 0.500, None, attempts=5)
    tally.failed_attempt(UnavailableError("Stream removed (Socket closed)"))
    summary = tally.summary(seconds=2.0)
    assert (summary["requests"], summary["errors"], summary["retried_requests"]) == (3, 1, 2)
    assert summary["answered_by_release"] == {"search 2": 2}
    assert summary["failed_attempts"] == 1 and tally.failed_at_model == 0


class StuckSearches:
    """Calls for the load loop: searches wait until `unstick`, recommends end at once."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.unstick = threading.Event()

    def send(self, client, index: int) -> tuple[str, int, int]:
        self.started.append(index)
        if reliability.Requests.kind(index) == "search":
            self.unstick.wait()
        return reliability.Requests.kind(index), 1, 1


def test_a_held_load_starts_no_call_and_drains_to_the_calls_allowed_to_stay():
    calls, tally = StuckSearches(), Tally()
    load = reliability.OpenLoop(None, calls, rate=200.0, tally=tally, workers=8).start()
    time.sleep(0.05)
    load.hold()
    load.drain(lambda index: reliability.Requests.kind(index) == "search")
    started = len(calls.started)
    time.sleep(0.1)
    assert len(calls.started) == started  # held: nothing new starts
    assert tally.answered == sum(1 for i in calls.started if i % 2)  # every recommend ended
    calls.unstick.set()
    load.release()
    time.sleep(0.1)
    assert len(calls.started) > started
    load.stop()
    assert tally.answered == len(calls.started)


def test_p99_and_memory_growth():
    assert reliability.p99_ms([]) is None
    assert reliability.p99_ms([0.001] * 98 + [1.0, 1.0]) == pytest.approx(1000.0)
    growth = reliability.memory_growth({"a": 1000, "b": 1000}, {"a": 1040, "b": 1050}, 0.05)
    assert (growth["growth"], growth["passed"]) == (0.045, True)
    assert not reliability.memory_growth({"a": 1000}, {"a": 1060}, 0.05)["passed"]


def test_loads_go_stages_first_then_releases_then_entries():
    changed = {"search", "search_v3", "search_ranker", "top_k"}
    unload, load = reliability.load_plan(changed, {"search_v1"}, entries=True)
    assert unload == ["search_v1"]
    assert load == ["search_ranker", "top_k", "search_v3", "search"]
    assert reliability.load_plan(changed, set(), entries=False)[1][-1] == "search_v3"


def test_bad_options_are_clear_errors(capsys):
    parser = reliability.build_parser()
    for argv in (["--scenarios", "soak,flood"], ["--load", "1.5"], ["--soak-seconds", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "unknown scenario(s) flood" in capsys.readouterr().err


def test_quick_settings_take_the_options_given():
    parser = reliability.build_parser()
    settings = reliability.settings_from(parser.parse_args(["--quick", "--soak-seconds", "60"]))
    assert (settings.soak_seconds, settings.seconds) == (60.0, reliability.QUICK.seconds)
    assert reliability.settings_from(parser.parse_args([])) == Settings()


def test_instance_stubs_are_parsed_and_config_stubs_left_out():
    argv = ["/b/python/triton_python_backend_stub", "/repo/top_k/1/model.py", "shm", "1", "1"]
    argv += ["42", "/b/python", "336", "top_k_0_0", "DEFAULT"]
    assert parse_stub(7, argv) == Stub(7, "top_k", 1, "top_k_0_0")
    assert parse_stub(8, argv[:8] + ["top_k", "DEFAULT"]) is None  # config auto-complete
    assert parse_stub(9, ["/usr/bin/python3", "x"]) is None
    config = restarted_config({"name": "top_k", "parameters": {"k": {"string_value": "1"}}})
    assert config["parameters"]["stub_restart"] == {"string_value": "1"}
    assert restarted_config(config)["parameters"]["stub_restart"] == {"string_value": "2"}
    assert config["parameters"]["k"] == {"string_value": "1"}


def test_a_settled_reading_is_the_first_that_holds_still():
    readings = iter([1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    assert reliability.settled(lambda: next(readings), quiet=0.2) == 3
    ticks = iter(range(1000))
    assert reliability.settled(lambda: next(ticks), quiet=0.2, timeout=0.3) > 3  # gives up


# -- short runs on the real server (in order: the last one restarts it) --------------------

SHORT = Settings(soak_seconds=4.0, seconds=3.0, saturation_seconds=1.0, fault_load=0.2)
RATE = 40.0


@pytest.fixture(scope="module")
def harness(tmp_path_factory, small_repository):
    with Harness(small_repository, tmp_path_factory.mktemp("reliability"), 8, 20) as running:
        yield running


def assert_nothing_lost(report: dict) -> None:
    assert report["errors"] == 0, report["failed_attempts_by_error"]
    assert report["requests"] > 0
    assert report["accounting"]["agree"], json.dumps(report["accounting"])
    assert reliability.scenario_passed(report), json.dumps(report)


@pytest.mark.slow
def test_soak_loses_nothing_and_reports_memory(harness):
    assert reliability.saturation(harness.client, harness.requests, 1.0, 4) > 0
    report = reliability.soak(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert {"tritonserver", "top_k:1:top_k_0_0"} <= set(report["memory"]["processes"])


@pytest.mark.slow
def test_a_release_built_and_loaded_under_load_takes_over(harness):
    report = reliability.hot_swap(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert report["swapped"] and report["load"]["loaded"][-1] == "search"


@pytest.mark.slow
def test_the_gate_rolls_a_bad_canary_back_under_load(harness):
    report = reliability.canary_rollback(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert report["gate"]["decision"] == "rollback" and report["rolled_back"]
    assert f"search {report['canary']}" in report["answered_by_release"]
    assert report["accounting"]["gate_requests"] > 0


@pytest.mark.slow
def test_a_killed_stage_stub_is_reloaded_and_its_calls_retried(harness):
    report = reliability.stage_crash(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert report["recovered"] and report["watchdog"][0]["model"] == "top_k"
    assert report["failed_attempts"] == report["accounting"]["server_failure"] > 0


@pytest.mark.slow
def test_calls_ride_out_a_server_restart(harness):
    report = reliability.server_restart(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert report["recovered"] and report["retried_requests"] > 0


def test_the_readme_table_has_a_row_per_scenario():
    results = {
        "scenarios": {
            "soak": {
                "seconds": 600.0,
                "requests": 185432,
                "errors": 0,
                "p99_ms": 41.2,
                "accounting": {"agree": True},
                "passed": True,
            }
        }
    }
    table = reliability.readme_table(results)
    assert "| soak | 600 | 185,432 | 0 | 41.2 | agrees | yes |" in table.splitlines()
