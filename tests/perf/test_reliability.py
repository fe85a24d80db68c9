"""Reliability scenarios: the pure accounting parts, the stub watchdog's parsing, and a
short run of each scenario on the real server (zero lost calls, client and server agree)."""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from collections import Counter

import pytest

from builders import names
from builders.specs import parse_pbtxt, render_pbtxt
from clients import (
    DeadlineExceededError,
    InFlightLimitError,
    OverloadedError,
    ServerError,
    UnavailableError,
)
from perf.reliability import scenarios as reliability
from perf.reliability.scenarios import Counts, Harness, Settings, Tally
from perf.tuning.sweep import apply_tunables
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
    series = reliability.entry_series(METRICS)
    assert {model for _, model, _, _ in series} == {"search", "search_v1", "recommend"}
    assert reliability.entry_counts(series) == Counts(success=150, failure=2)
    assert [reliability.is_entry_model(m) for m in ("search_v3", "recommend", "top_k")] == [
        True,
        True,
        False,
    ]


SHED_METRICS = """\
nv_inference_request_failure{model="search",reason="OTHER",version="2"} 6
nv_inference_request_failure{model="text_encoder",reason="REJECTED",version="1"} 2
nv_inference_request_failure{model="top_k",reason="REJECTED",version="1"} 1
nv_inference_request_failure{model="top_k",reason="BACKEND",version="1"} 4
"""
BEFORE_SPIKE = """\
nv_inference_request_success{model="search",version="2"} 100
nv_inference_request_success{model="query_tokenizer",version="1"} 100
nv_inference_request_success{model="top_k",version="1"} 150
nv_inference_request_success{model="ranker",version="1"} 50
nv_inference_queue_duration_us{model="query_tokenizer",version="1"} 5000
nv_inference_request_duration_us{model="query_tokenizer",version="1"} 9000
"""
AFTER_SPIKE = """\
nv_inference_request_success{model="search",version="2"} 260
nv_inference_request_success{model="search_v1",version="1"} 40
nv_inference_request_success{model="recommend",version="1"} 20
nv_inference_request_success{model="query_tokenizer",version="1"} 900
nv_inference_request_success{model="top_k",version="1"} 370
nv_inference_request_success{model="ranker",version="1"} 150
nv_inference_request_failure{model="ranker",reason="REJECTED",version="1"} 30
nv_inference_request_failure{model="ranker",reason="OTHER",version="1"} 7
nv_inference_queue_duration_us{model="query_tokenizer",version="1"} 1605000
nv_inference_request_duration_us{model="query_tokenizer",version="1"} 2409000
"""


def test_stage_work_says_where_the_spikes_work_went():
    members = {"search": ("query_tokenizer", "top_k"), "recommend": ("ranker", "top_k")}
    work = reliability.stage_work(BEFORE_SPIKE, AFTER_SPIKE, 10.0, members)
    assert work["pipelines"] == {
        "search": {"answered_per_second": 20.0},  # `search` and its releases
        "recommend": {"answered_per_second": 2.0},
    }
    assert list(work["stages"]) == ["query_tokenizer", "top_k", "ranker"]
    tokenizer, top_k, ranker = work["stages"].values()
    # 800 tokenised, 200 of them answered: 3 in 4 went to calls shed later
    assert tokenizer == {
        "pipelines": ["search"],
        "answered_per_second": 80.0,
        "shed_per_second": 0.0,
        "queue_ms": 2.0,
        "duration_ms": 3.0,
        "spent_on_unanswered": 0.75,
    }
    assert top_k["pipelines"] == ["recommend", "search"] and top_k["spent_on_unanswered"] == 0.0
    assert ranker["shed_per_second"] == 3.0  # REJECTED only: queue timeouts
    assert ranker["spent_on_unanswered"] == 0.8 and ranker["queue_ms"] == 0.0


def test_stage_work_of_an_idle_stage_has_no_means():
    work = reliability.stage_work("", "", 5.0, {"search": ("query_tokenizer",), "recommend": ()})
    assert work["stages"]["query_tokenizer"] == {
        "pipelines": ["search"],
        "answered_per_second": 0.0,
        "shed_per_second": 0.0,
        "queue_ms": None,
        "duration_ms": None,
        "spent_on_unanswered": None,
    }


FULL = OverloadedError("server overloaded: in ensemble 'search', Exceeds maximum queue size")
EXPIRED = OverloadedError("server overloaded: in ensemble 'search', Request timeout expired")
REFUSED = InFlightLimitError("client at its limit of 8 calls in flight")


def test_the_spike_clients_in_flight_limit_is_half_an_slo_of_saturation():
    assert reliability.in_flight_limit("auto", saturation=670.0, slo_ms=100.0) == 34
    assert reliability.in_flight_limit("auto", saturation=5.0, slo_ms=100.0) == 1
    assert reliability.in_flight_limit("none", 670.0, 100.0) is None
    assert reliability.in_flight_limit("12", 670.0, 100.0) == 12
    adaptive = reliability.in_flight_limit("adaptive", 670.0, 100.0)
    assert adaptive.limit == 34 and adaptive.target == 0.1
    assert reliability.in_flight_limit("adaptive:120", 670.0, 100.0).limit == 120
    assert [reliability.in_flight_setting(t) for t in ("adaptive:8", "none", "7")] == [
        "adaptive:8",
        "none",
        "7",
    ]
    for text in ("adaptive:0", "adaptive:x", "-3", "auto:4"):
        with pytest.raises(argparse.ArgumentTypeError, match="adaptive:N"):
            reliability.in_flight_setting(text)


def test_rejections_are_told_apart_and_counted_on_both_sides():
    assert reliability.stage_timeouts(SHED_METRICS) == 3
    errors = (FULL, EXPIRED, REFUSED, UnavailableError("x"))
    kinds = [reliability.rejection_kind(e) for e in errors]
    assert kinds == ["queue_full", "queue_timeout", "client_limit", None]
    tally = Tally()
    for error in (FULL, FULL, EXPIRED, REFUSED, ServerError("in ensemble 'search', boom")):
        tally.failed_attempt(error)
    tally.call("error", 0.01, None, 3, at=1.0, error=FULL, lag=0.002)
    tally.call("error", 0.02, None, 1, at=1.5, error=REFUSED)
    assert (tally.shed, tally.errors, tally.failed_at_model) == (2, 2, 4)
    assert tally.timeline[0] == reliability.Call(1.0, 0.002, 0.01, False)
    agreed = reliability.rejection_accounting(tally, server_failures=4, server_timeouts=1)
    assert agreed["agree"] and agreed["client_rejections"] == agreed["server_rejections"] == 3
    assert agreed["client_other_failures_at_a_model"] == 1
    assert agreed["client_in_flight_refusals"] == 1  # never reached the server
    assert not reliability.rejection_accounting(tally, 4, server_timeouts=2)["agree"]
    assert not reliability.rejection_accounting(tally, 5, server_timeouts=1)["agree"]


def test_goodput_p99_and_recovery_come_from_the_timeline():
    Call = reliability.Call
    timeline = [
        Call(0.1, 0.0, 0.05, True),
        Call(0.5, 0.1, 0.3, True),  # started 0.1 s late: 0.2 s from its start
        Call(0.9, 0.0, 0.01, False),
        Call(1.2, 0.0, 0.02, True),
    ]
    spike = reliability.window(timeline, 0.0, 1.0, slo_s=0.1)
    assert spike == {
        "seconds": 1.0,
        "requests": 3,
        "answered": 2,
        "goodput": 1.0,
        "p99_ms": 198.5,
        "due_p99_ms": 297.5,
    }
    assert reliability.per_second(timeline, 0.0, 2) == [[0.05, pytest.approx(0.2)], [0.02]]


def test_recovery_ends_with_the_backlog_not_with_the_last_slow_second():
    fast, slow = [0.03] * 100, [0.25] * 100
    assert reliability.recovery_seconds([slow, [], slow, fast, fast], 100) == 3
    # a lone slow second long after the spike: 1 % of what follows is no backlog
    assert reliability.recovery_seconds([slow] + [fast] * 98 + [[0.2]], 100) == 1
    assert reliability.recovery_seconds([fast, fast], 100) == 0
    assert reliability.recovery_seconds([fast, slow], 100) is None
    assert reliability.recovery_seconds([[], []], 100) is None
    assert reliability.recovery_seconds([], 100) is None


def test_an_overload_passes_with_shed_calls_but_not_with_other_errors():
    report = {
        "errors": 5,
        "shed_requests": 5,
        "accounting": {"agree": True},
        "overload": {"checks": {"goodput": True, "recovered": True}},
    }
    assert reliability.scenario_passed(report)
    assert not reliability.scenario_passed({**report, "errors": 6})
    failing = {"checks": {"goodput": True, "recovered": False}}
    assert not reliability.scenario_passed({**report, "overload": failing})
    assert not reliability.scenario_passed({k: v for k, v in report.items() if k != "overload"})


SEARCH_OK = ("nv_inference_request_success", "search", "1", "")
CANARY_OK = ("nv_inference_request_success", "search_v3", "1", "")
CANARY_FAILED = ("nv_inference_request_failure", "search_v3", "3", "OTHER")


def test_counters_add_up_across_a_restart():
    before_kill = {SEARCH_OK: 110}
    # the new process counts from zero (`{}`), even past what the old one had counted
    scrapes = [{SEARCH_OK: 10}, before_kill, {}, {SEARCH_OK: 130}]
    assert reliability.counter_increase(scrapes) == {SEARCH_OK: 230}


def test_an_unloaded_models_counters_count_once_whether_they_go_or_stay():
    start, before_unload = {SEARCH_OK: 5}, {SEARCH_OK: 50, CANARY_OK: 7, CANARY_FAILED: 2}
    gone = {SEARCH_OK: 90}
    stayed = {SEARCH_OK: 90, CANARY_FAILED: 2}  # Triton 2.51 keeps some of them
    expected = {SEARCH_OK: 85, CANARY_OK: 7, CANARY_FAILED: 2}
    assert reliability.counter_increase([start, before_unload, gone]) == expected
    assert reliability.counter_increase([start, before_unload, stayed]) == expected


def test_a_reloaded_models_counters_that_start_again_are_added():
    assert reliability.counter_increase([{SEARCH_OK: 40}, {SEARCH_OK: 60}, {SEARCH_OK: 3}]) == {
        SEARCH_OK: 23
    }
    # a model loaded during the scenario counts from zero
    assert reliability.counter_increase([{}, {CANARY_OK: 4}]) == {CANARY_OK: 4}


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
    assert reliability.accounting(tally, Counts(139, 4), gate=(39, 1))["agree"]
    assert not reliability.accounting(tally, Counts(140, 3), gate=(39, 1))["agree"]
    assert not reliability.accounting(tally, Counts(101, 3))["agree"]
    assert not reliability.accounting(tally, Counts(100, 2))["agree"]


def test_the_gates_calls_are_those_stable_and_the_canary_answered_or_failed():
    # 20 queries; stable answered 18, the canary 16 of those 18.
    overlap = {"mean": 0.5, "queries": 18, "k": 10, "canary_failures": 2}
    assert reliability.gate_calls(20, overlap) == (18 + 16, 2 + 2)
    assert reliability.gate_calls(20, None) == (0, 0)


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


class SlowSearches:
    """Calls for the closed loop: searches take ten times as long as recommends."""

    def __init__(self) -> None:
        self.kinds: Counter = Counter()

    def send(self, client, index: int) -> tuple[str, int, int]:
        kind = reliability.Requests.kind(index)
        self.kinds[kind] += 1
        time.sleep(0.01 if kind == "search" else 0.001)
        return kind, 1, 1


def test_saturation_sends_both_kinds_alike_whatever_each_costs():
    calls = SlowSearches()
    assert reliability.saturation(None, calls, 0.3, concurrency=4) > 0
    assert abs(calls.kinds["search"] - calls.kinds["recommend"]) <= 4  # one a worker at most


def test_the_servers_cpu_per_call_counts_the_processes_it_read_twice():
    before = {10: ("server", 5.0), 11: ("server", 1.0), 12: ("server", 2.0)}
    # 12 ended (a reloaded stub), 13 started meanwhile: neither counts
    after = {10: ("server", 5.3), 11: ("server", 1.1), 13: ("server", 9.0)}
    assert reliability.cpu_us_per_call(before, after, calls=200) == 2000.0
    assert reliability.cpu_us_per_call(before, after, calls=0) is None


def test_a_held_load_starts_no_call_until_released():
    calls, tally = StuckSearches(), Tally()
    load = reliability.OpenLoop(None, calls, rate=200.0, tally=tally, workers=8).start()
    time.sleep(0.05)
    load.hold()
    time.sleep(0.05)  # the calls started before the hold end (recommends) or stay (searches)
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


def test_an_open_loop_takes_a_new_rate():
    calls, tally = StuckSearches(), Tally()
    calls.unstick.set()
    load = reliability.OpenLoop(None, calls, rate=500.0, tally=tally, workers=4).start()
    time.sleep(0.05)
    load.change_rate(0.01)  # one call every 100 s from now on
    scheduled = len(calls.started)
    time.sleep(0.2)
    load.stop()
    assert len(calls.started) <= scheduled + 1 + 4  # the next one, and those already queued


def test_a_ticking_scheduler_starts_every_call_once_and_none_before_it_is_due():
    calls, tally = StuckSearches(), Tally()
    calls.unstick.set()
    load = reliability.OpenLoop(None, calls, rate=2000.0, tally=tally, workers=4).start()
    time.sleep(0.2)  # 40 ticks
    load.stop()
    assert sorted(calls.started) == list(range(len(calls.started))) and len(calls.started) > 40
    assert all(call.lag >= 0 for call in tally.timeline)


def test_memory_growth():
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
    bad = (["--scenarios", "soak,flood"], ["--load", "1.5"], ["--soak-seconds", "0"])
    for argv in (*bad, ["--queue-timeout-us", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "unknown scenario(s) flood" in capsys.readouterr().err


def test_quick_settings_take_the_options_given():
    parser = reliability.build_parser()
    settings = reliability.settings_from(parser.parse_args(["--quick", "--soak-seconds", "60"]))
    assert (settings.soak_seconds, settings.seconds) == (60.0, reliability.QUICK.seconds)
    options = ["--spike-seconds", "90", "--slo-ms", "50"]
    spike = reliability.settings_from(parser.parse_args(options))
    assert (spike.spike_seconds, spike.slo_ms, spike.spike) == (90.0, 50.0, 2.0)
    assert reliability.settings_from(parser.parse_args([])) == Settings()
    timeouts = reliability.settings_from(parser.parse_args(["--queue-timeout-us", "8333"]))
    assert timeouts.queue_timeout_us == 8333 and Settings().queue_timeout_us is None


def test_queue_timeouts_are_set_on_every_stage_config_and_nothing_else(small_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(small_repository, repo)
    built = reliability.queue_timeouts(repo)
    assert len(built) > 5 and names.SEARCH not in built  # an ensemble has no queue
    before = {path: config for path, config in reliability.stage_configs(repo)}
    reliability.set_queue_timeouts(repo, 8333)
    assert reliability.queue_timeouts(repo) == dict.fromkeys(built, 8333)
    after = dict(reliability.stage_configs(repo))
    assert after.keys() == before.keys()
    for path, config in before.items():
        timed_out = apply_tunables(config, {"default_timeout_microseconds": 8333})
        expected = parse_pbtxt(render_pbtxt(timed_out))
        assert after[path] == expected, path


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


def assert_accounting_agrees(report: dict) -> None:
    seen = {"accounting": report["accounting"], "failures": report["failed_attempts_by_error"]}
    assert report["accounting"]["agree"], json.dumps(seen)


def assert_nothing_lost(report: dict) -> None:
    assert report["errors"] == 0, report["failed_attempts_by_error"]
    assert report["requests"] > 0
    assert_accounting_agrees(report)
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
    assert report["accounting"]["gate_answered"] > 0


@pytest.mark.slow
def test_a_killed_stage_stub_is_reloaded_and_its_calls_retried(harness):
    report = reliability.stage_crash(harness, SHORT, RATE)
    assert_nothing_lost(report)
    assert report["recovered"] and report["watchdog"][0]["model"] == names.SEARCH_RANKING
    assert report["failed_attempts"] == report["accounting"]["server_failure"] > 0


@pytest.mark.slow
def test_an_overload_sheds_with_unavailable_and_both_sides_count_it(harness):
    """Every recommend is shed: its ranking stage's queue rejects whatever waited at all (a
    1 us timeout). The client's and the server's counts of the shed attempts must agree."""
    ranker = names.RECOMMEND_RANKING
    original = harness.server.model_config(ranker)
    harness.server.load_model(
        ranker, config=apply_tunables(original, {"default_timeout_microseconds": 1})
    )
    short = Settings(
        spike_seconds=3.0,
        after_spike_seconds=2.0,
        overload_workers=16,
        client_in_flight="none",
        saturation_seconds=1.0,
    )
    try:
        report = reliability.overload(harness, short, RATE)
    finally:  # as an override too: Triton does not reload a model whose files are unchanged
        harness.server.load_model(ranker, config=original)
    shed, rejections = report["shed_requests"], report["overload"]["rejections"]
    assert report["errors"] == shed > 0, report["failed_attempts_by_error"]
    shed_by = "OverloadedError: server overloaded: in ensemble 'recommend'"
    assert all(key.startswith(shed_by) for key in report["failed_attempts_by_error"])
    assert rejections["client_queue_timeout"] == report["failed_attempts"] > 0
    assert rejections["agree"] and report["accounting"]["agree"], json.dumps(report)
    assert report["overload"]["readiness"]["not_ready"] == 0
    assert report["answered_by_release"] and all(
        key.startswith("search") for key in report["answered_by_release"]
    )
    # where the work went: recommend is its ranking stage alone, which shed its calls before
    # working on them, so none of its work went to calls shed later
    work, members = report["overload"]["stage_work"], reliability.pipeline_stages(harness.repo)
    assert members["recommend"] == (ranker,)
    assert work["pipelines"]["recommend"]["answered_per_second"] == 0
    assert work["pipelines"]["search"]["answered_per_second"] > 0
    assert work["stages"][ranker]["shed_per_second"] > 0
    assert work["stages"][ranker]["spent_on_unanswered"] is None  # it answered none
    assert work["stages"][members["search"][0]]["spent_on_unanswered"] < 0.5


@pytest.mark.slow
def test_the_clients_in_flight_limit_refuses_before_the_server_sees_the_call(harness):
    """One call in flight at a time from 16 threads: the client refuses most attempts
    itself; the server counts exactly the calls that reached it."""
    short = Settings(
        spike_seconds=2.0,
        after_spike_seconds=1.0,
        overload_workers=16,
        client_in_flight="1",
        saturation_seconds=1.0,
    )
    report = reliability.overload(harness, short, RATE)
    rejections = report["overload"]["rejections"]
    assert report["overload"]["client_in_flight_limit"] == 1
    assert rejections["client_in_flight_refusals"] > 0 and rejections["agree"]
    assert_accounting_agrees(report)
    assert report["overload"]["checks"]["only_overload_failures"]
    refused = "InFlightLimitError: client at its limit of 1 calls in flight"
    assert (
        report["failed_attempts_by_error"].get(refused) == rejections["client_in_flight_refusals"]
    )
    assert report["errors"] == report["shed_requests"]


@pytest.mark.slow
def test_an_adaptive_limit_is_reported_every_second_and_grows_only_in_use(harness):
    """16 threads never use half of a limit of 64: it may be cut, never raised."""
    short = Settings(
        spike_seconds=2.0,
        after_spike_seconds=1.0,
        overload_workers=16,
        client_in_flight="adaptive:64",
        saturation_seconds=1.0,
    )
    report = reliability.overload(harness, short, RATE)
    overload = report["overload"]
    adaptive = overload["client_in_flight_adaptive"]
    assert overload["client_in_flight_limit"] == 64 and adaptive["target_ms"] == short.slo_ms
    assert len(adaptive["per_second"]) == 3 and max(adaptive["per_second"]) <= 64
    assert overload["rejections"]["agree"] and report["accounting"]["agree"]
    assert overload["generator_cores_in_spike"] > 0  # the load generator's own CPU
    # saturation read again after the spike; the goodput counts against both readings
    assert overload["saturation_after"] > 0 and overload["server_cpu_us_per_call"]["spike"] > 0
    assert overload["capacity"] == round((RATE + overload["saturation_after"]) / 2, 1)


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


def test_the_overload_tables_quote_its_report():
    spike = {"seconds": 60.0, "requests": 30000, "answered": 13800, "goodput": 225.0}
    after = {"seconds": 30.0, "requests": 3750, "answered": 3750, "goodput": 124.0}
    report = {
        "saturation": 240.0,
        "saturation_after": 260.0,
        "capacity": 250.0,
        "server_cpu_us_per_call": {"saturation": 2950, "spike": 3104.4, "saturation_after": 3020},
        "spike": {"rate": 500.0, **spike, "p99_ms": 98.5},
        "after_spike": {"rate": 125.0, **after, "p99_ms": 61.2},
        "recovery_seconds": 2,
        "client_in_flight_limit": 12,
        "rejections": {
            "client_in_flight_refusals": 4000,
            "client_rejections": 17000,
            "server_rejections": 17000.0,
            "client_queue_timeout": 16000,
            "server_queue_timeouts": 16000.0,
        },
        "readiness": {"probes": 90, "not_ready": 0},
    }
    tables = reliability.overload_table({"scenarios": {"overload": {"overload": report}}})
    lines = tables.splitlines()
    assert lines[2] == "| spike at 500 calls/s | 60 | 500.0 | 230.0 | 225 | 0.90 | 16,200 | 98.5 |"
    assert lines[3].startswith("| after_spike at 125 calls/s | 30 | 125.0 | 125.0 | 124 |")
    # goodput counts against the mean of the readings before and after the spike
    assert lines[7] == "| 240 | 260 | 250 | 2,950 / 3,104 / 3,020 |"
    assert lines[-1] == "| 2 s | 12 (4,000) | 17,000 / 17,000 | 16,000 / 16,000 | 0 of 90 |"
    # an adaptive limit: where it started, and where it was when the spike ended
    report["client_in_flight_adaptive"] = {"per_second": [11.0] * 59 + [27.6] + [30.2] * 30}
    tables = reliability.overload_table({"scenarios": {"overload": {"overload": report}}})
    assert tables.splitlines()[-1].startswith("| 2 s | adaptive, 12 to 28 (4,000) |")
    assert reliability.overload_table({"scenarios": {}}) == ""


def test_the_full_runs_table_gives_each_runs_readings_and_dashes_what_it_lacks():
    def run(after: float | None) -> dict:
        overload = {"saturation": 400.0, "spike": {"goodput": 380.0, "p99_ms": 91.4}}
        if after is not None:
            overload |= {
                "saturation_after": after,
                "capacity": (400.0 + after) / 2,
                "server_cpu_us_per_call": {"saturation": 3100.0, "saturation_after": 3300.0},
            }
        scenarios = {"soak": {"passed": True}, "overload": {"passed": True, "overload": overload}}
        return {"saturation": {"throughput": 450.0}, "scenarios": scenarios}

    lines = reliability.full_runs_table([run(None), run(360.0)]).splitlines()
    assert lines[2] == "| 1 | 450 / 400 / – | – / – / – | 0.95 | – | 91 | 2 of 2 |"
    assert lines[3] == "| 2 | 450 / 400 / 360 | – / 3,100 / 3,300 | 0.95 | 1.00 | 91 | 2 of 2 |"


def test_the_stage_work_table_gives_each_runs_figures():
    def run(answered: float, spent: float | None) -> dict:
        stage = {
            "pipelines": ["recommend", "search"],
            "answered_per_second": answered,
            "shed_per_second": 1.5,
            "queue_ms": 4.0,
            "duration_ms": 9.25,
            "spent_on_unanswered": spent,
        }
        work = {"pipelines": {"search": {"answered_per_second": 80.0}}, "stages": {"top_k": stage}}
        return {"scenarios": {"overload": {"overload": {"stage_work": work}}}}

    lines = reliability.stage_work_table([run(120.0, 0.25), run(0.0, None)]).splitlines()
    assert lines[2] == "| **search** (answered calls) | 80, 80 | | | | |"
    assert lines[3] == (
        "| top_k (recommend, search) | 120, 0 | 1.5, 1.5 | 4, 4 | 9.25, 9.25 | 0.25, – |"
    )
