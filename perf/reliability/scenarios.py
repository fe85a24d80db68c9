"""Reliability under load and faults: `python -m perf.reliability.scenarios` (`make reliability`).

Serves a scratch copy of a built repository with the real `tritonserver` (explicit model
control, a `StubWatchdog`) and drives `search` + `recommend` with the project's `Client`
(retries on) as open-loop load, then runs each scenario under that load:

* `soak`: at `--load` (60 %) of the saturation throughput measured first in the same run;
  the resident memory of tritonserver and of every backend stub, after a warm-up and at
  the end, must grow less than 5 %;
* `hot_swap`: a new search release (a retrained ranker) is built and loaded;
* `canary_rollback`: a bad canary (a ranker whose scores are inverted) takes 10 % of the
  search traffic until `k8s.canary_gate` rolls it back;
* `stage_crash`: the stub process of one stage is killed with SIGKILL (Triton 2.51 does
  not start a new one; the watchdog reloads the model, the client retries);
* `server_restart`: the server process is killed and started again on the same ports;
* `overload`: a spike at twice the saturation throughput, then half of it: the client's
  in-flight limit refuses at once what the server could not answer within the SLO
  (`InFlightLimitError`); where the stages' queues are bounded (`--queue-timeout-us`, or a
  repository built with `--slo-ms`), they shed what still comes too fast (UNAVAILABLE, the
  client's `OverloadedError`, retried within the client's budget);
  the server stays ready, and the report
  gives the goodput (answers within the SLO a second, as a share of the saturation read
  before and after the spike), the p99 of the answered calls,
  the rejections as client and server count them, how long p99 took to come back under
  the SLO, and where the spike's work went (`stage_work`: what each stage answered and
  shed, and how much of it went to calls a later stage shed).

Every failure is accounted for, twice: as the client sees it (calls that failed after
their retries, and every failed attempt) and as the server's Prometheus counters count
it (`nv_inference_request_success` / `_failure` at the pipelines' entry models `search`,
`recommend` and `<kind>_v<R>`: an ensemble's failure is also counted on the step that
failed, so steps are left out; they are read as Prometheus's `increase()` reads them,
across unloads, reloads and server restarts: `counter_increase`). The two
must agree, and no call may fail. Results go to `perf/results/reliability.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import itertools
import json
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from builders import machine, names, pipelines
from builders.progress import progress
from builders.repository import CONFIG, model_configs, model_versions, rewrite_config
from builders.specs import parse_pbtxt
from clients import (
    AdaptiveInFlightLimit,
    Client,
    ClientError,
    DeadlineExceededError,
    InFlightLimitError,
    OverloadedError,
    RetryBudget,
    RetryPolicy,
    Route,
)
from k8s import canary_gate
from perf import write_results
from perf.benchmarks import stage_cpu
from perf.latency import percentile_ms
from perf.tuning.sweep import apply_tunables, configs_current_value
from server.launcher import TritonServer, free_ports, processes_in_group
from server.stub_watchdog import StubWatchdog, server_stubs

SCENARIOS = ("soak", "hot_swap", "canary_rollback", "stage_crash", "server_restart", "overload")
MEMORY_GROWTH_LIMIT = 0.05
#: What Triton 2.51 adds to an ensemble's failure counters for one failed request.
ENSEMBLE_FAILURE_COUNT = 2
#: One Prometheus series of an entry model's counter: (metric, model, version, reason).
SeriesKey = tuple[str, str, str, str]
#: Messages of failed attempts that never reached a model (so no server counter has them):
#: refused or dropped connections (HTTP and gRPC), and a model the server does not know.
NOT_AT_A_MODEL = (
    "cannot reach the server",
    "failed to connect",
    "connections to all backends failing",
    "Socket closed",
    "Connection reset",
    "Broken pipe",
    "Request for unknown model",
)
# Retries sized to ride out a server restart (a minute of start-up on a loaded machine)
# with every worker retrying: backoff up to 2 s, a deadline of 2 minutes, and a budget of
# 50 retries a second on top of the default 20 % of the calls.
RETRY = RetryPolicy(max_attempts=200, initial_backoff=0.05, max_backoff=2.0)
DEADLINE_S = 120.0
T = TypeVar("T")
QUIET_S, SETTLE_S = 0.5, 10.0  # a scrape's counters must hold still this long (at most)
KILL_QUIET_S, KILL_WITHIN_S, FREEZE_TRIES = 0.15, 0.5, 10  # see `freeze_stages`
# The open loop's scheduler wakes at most this often: waking for every call (a thousand a
# second in a spike) took from the 2 cores the server shares with the load generator.
SCHEDULE_TICK_S = 0.005
CANARY_SHARE = 10
K = 10
# `overload` passes when: goodput during the spike >= GOODPUT_SHARE of saturation (the mean of
# the readings before and after the spike), p99 of the answered calls <= P99_SLOS x the SLO,
# and p99 back under the SLO within RECOVERY_S.
GOODPUT_SHARE, P99_SLOS, RECOVERY_S = 0.9, 2.0, 10.0
# Its client: a deadline of DEADLINE_SLOS x the SLO (bounded stage queues shed long before;
# a deadline the server outlasts would end calls the server still counts), and up to 3
# attempts, backoff from a quarter of the SLO up to the SLO. Its load is only what was
# asked for when 99 % of the calls started within LAG_SLOS x the SLO of their schedule.
DEADLINE_SLOS, LAG_SLOS = 30.0, 0.25
# Readiness is probed like the chart's probe: every second, 5 s to answer.
PROBE_EVERY_S, PROBE_TIMEOUT_S = 1.0, 5.0
# What Triton 2.51 answers (UNAVAILABLE, HTTP 503) when a request waited in a stage's queue
# past its timeout (counted as the stage's `nv_inference_request_failure{reason="REJECTED"}`);
# a full queue answers "Exceeds maximum queue size" (counted in no metric of the stage).
QUEUE_TIMEOUT = "Request timeout expired"
#: The queue policy field `--queue-timeout-us` sets (a perf sweep's tunable of that name).
QUEUE_TIMEOUT_TUNABLE = "default_timeout_microseconds"


# -- pure parts ---------------------------------------------------------------------------


def is_entry_model(name: str) -> bool:
    """A pipeline's entry ensemble: `search`, `recommend` or a release `<kind>_v<R>`."""
    return name in pipelines.KINDS or pipelines.parse_release_model(name) is not None


@dataclass(frozen=True)
class Counts:
    """Requests the server counted as answered and as failed."""

    success: float = 0.0
    failure: float = 0.0


def entry_series(metrics_text: str) -> dict[SeriesKey, float]:
    """The success and failure counters of the entry models, by series, from `/metrics`."""
    series = {}
    for name, labels, value in canary_gate.parse_metrics(metrics_text):
        model = labels.get("model", "")
        if name in (canary_gate.SUCCESS, canary_gate.FAILURE) and is_entry_model(model):
            series[(name, model, labels.get("version", ""), labels.get("reason", ""))] = value
    return series


def counter_increase(scrapes: list[dict[SeriesKey, float]]) -> dict[SeriesKey, float]:
    """How much each series grew over `scrapes` (in time order; the first is the baseline),
    read as Prometheus's `increase()` reads it: a series that fell, or that comes back after
    a scrape without it (its model was unloaded, or the server restarted), counts again
    from zero. A series that outlives its model's unload is counted once."""
    grown: dict[SeriesKey, float] = {}
    for before, after in zip(scrapes, scrapes[1:]):
        for key, value in after.items():
            start = before.get(key, 0.0)
            grown[key] = grown.get(key, 0.0) + (value - start if value >= start else value)
    return grown


def entry_counts(series: dict[SeriesKey, float]) -> Counts:
    """Requests answered and failed in entry-model `series`. Triton 2.51 counts a failed
    ensemble request twice, both with reason OTHER: on the release's version and on version
    1 (checked: a failed `search_v3` call adds 1 to version 3 and 1 to version 1), so
    failed requests are half the counters."""
    success = sum(v for (name, *_), v in series.items() if name == canary_gate.SUCCESS)
    failure = sum(v for (name, *_), v in series.items() if name == canary_gate.FAILURE)
    return Counts(success, failure / ENSEMBLE_FAILURE_COUNT)


def stage_timeouts(metrics_text: str) -> float:
    """Requests the stages rejected for waiting in their queue past their timeout, from
    `/metrics`: `nv_inference_request_failure{reason="REJECTED"}` of every model but the
    entry ensembles (Triton 2.51 counts a full queue's rejection in no metric)."""
    return sum(
        value
        for name, labels, value in canary_gate.parse_metrics(metrics_text)
        if name == canary_gate.FAILURE
        and labels.get("reason") == "REJECTED"
        and not is_entry_model(labels.get("model", ""))
    )


#: The cumulative per-model counters `stage_work` reads (Triton's names, all versions summed).
STAGE_COUNTERS = {
    canary_gate.SUCCESS: "answered",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_duration_us": "duration_us",
}


def model_counters(metrics_text: str) -> dict[str, Counter]:
    """Per model: requests answered and shed at its queue (`REJECTED`), and the microseconds
    its answered requests spent queued and in all (`STAGE_COUNTERS`), from `/metrics`."""
    counters: dict[str, Counter] = {}
    for name, labels, value in canary_gate.parse_metrics(metrics_text):
        model = labels.get("model")
        if model is None:
            continue
        if name in STAGE_COUNTERS:
            counters.setdefault(model, Counter())[STAGE_COUNTERS[name]] += value
        elif name == canary_gate.FAILURE and labels.get("reason") == "REJECTED":
            counters.setdefault(model, Counter())["shed"] += value
    return counters


def stage_work(
    before: str, after: str, seconds: float, members: dict[str, tuple[str, ...]]
) -> dict:
    """What each pipeline and each of its stages did between two `/metrics` scrapes
    `seconds` apart: answers a second (a pipeline's at its entry ensembles), requests shed at
    the stage's queue a second, the mean time an answered request queued and spent there, and
    the share of the stage's answers that went to calls the pipelines did not answer
    (`spent_on_unanswered`: work a later stage shed, or a call that failed after it).
    `members`: the stages of each pipeline kind in step order (its newest release's models);
    the stages come in that order, each once."""
    start, end = model_counters(before), model_counters(after)
    done = {model: end[model] - start.get(model, Counter()) for model in end}

    def per_second(value: float) -> float:
        return round(value / seconds, 1)

    answered = {kind: 0.0 for kind in members}
    for model, counts in done.items():
        release = pipelines.parse_release_model(model)  # `search_v2` counts for `search`
        kind = release[0] if release else model
        if kind in answered:
            answered[kind] += counts["answered"]
    stages = {}
    for model in dict.fromkeys(m for stages_of in members.values() for m in stages_of):
        counts = done.get(model, Counter())
        served = sorted(kind for kind, stages_of in members.items() if model in stages_of)
        n = counts["answered"]
        stages[model] = {
            "pipelines": served,
            "answered_per_second": per_second(n),
            "shed_per_second": per_second(counts["shed"]),
            "queue_ms": round(counts["queue_us"] / n / 1000, 1) if n else None,
            "duration_ms": round(counts["duration_us"] / n / 1000, 1) if n else None,
            "spent_on_unanswered": (
                round(max(0.0, 1 - sum(answered[kind] for kind in served) / n), 3) if n else None
            ),
        }
    return {
        "seconds": round(seconds, 1),
        "pipelines": {kind: {"answered_per_second": per_second(n)} for kind, n in answered.items()},
        "stages": stages,
    }


def in_flight_limit(
    setting: str, saturation: float, slo_ms: float
) -> int | AdaptiveInFlightLimit | None:
    """The spike client's in-flight limit: a number as given, None for "none", for "auto"
    the calls the server answers in half the SLO at its saturation throughput (so the mean
    time in the server stays at half the SLO: Little's law), and for "adaptive[:N]" an
    `AdaptiveInFlightLimit` aiming at the SLO, from N (default: auto's)."""
    if setting == "none":
        return None
    auto = max(1, round(saturation * slo_ms / 1000 / 2))
    kind, _, start = setting.partition(":")
    if kind == "adaptive":
        return AdaptiveInFlightLimit(int(start) if start else auto, target=slo_ms / 1000)
    return auto if setting == "auto" else int(setting)


def rejection_kind(error: ClientError) -> str | None:
    """`queue_full` or `queue_timeout` for an attempt a stage's queue shed, `client_limit`
    for one the client's in-flight limit refused before sending it, else None."""
    if isinstance(error, InFlightLimitError):
        return "client_limit"
    if not isinstance(error, OverloadedError):
        return None
    return "queue_timeout" if QUEUE_TIMEOUT in error.message else "queue_full"


def reached_a_model(error: ClientError) -> bool:
    """Whether a failed attempt was answered by a model (so the server counted it)."""
    if isinstance(error, DeadlineExceededError | InFlightLimitError):
        return False
    return not any(marker in error.message for marker in NOT_AT_A_MODEL)


def memory_growth(start: dict[str, int], end: dict[str, int], limit: float) -> dict:
    """Resident memory (kB) of the processes at start and end; growth of the total."""
    total_start, total_end = sum(start.values()), sum(end.values())
    growth = (total_end - total_start) / total_start if total_start else 0.0
    return {
        "start_kb": total_start,
        "end_kb": total_end,
        "growth": round(growth, 4),
        "limit": limit,
        "passed": growth < limit,
        "processes": {
            name: {"start_kb": start.get(name), "end_kb": end.get(name)}
            for name in sorted(set(start) | set(end))
        },
    }


def accounting(tally: Tally, server: Counts, gate: tuple[int, int] = (0, 0)) -> dict:
    """The client's and the server's counts side by side, and whether they agree: every
    call answered once, every failed attempt that reached a model counted. `gate`: the
    canary gate's own top-k overlap calls (answered, failed), on top of the client's."""
    gate_answered, gate_failed = gate
    answered = tally.answered + gate_answered
    failed = tally.failed_at_model + gate_failed
    return {
        "client_answered": tally.answered,
        "gate_answered": gate_answered,
        "gate_failed": gate_failed,
        "server_success": server.success,
        "client_failed_attempts_at_a_model": tally.failed_at_model,
        "server_failure": server.failure,
        "agree": answered == server.success and failed == server.failure,
        "counted_at": "entry ensembles: search, recommend, <kind>_v<R>",
    }


def rejection_accounting(tally: Tally, server_failures: float, server_timeouts: float) -> dict:
    """The shed attempts as both sides count them. The client counts each one, by kind; the
    server counts every failed request at the entry ensembles (the shed ones and any other
    failure the client also saw at a model) and the queue timeouts at the stages. Attempts
    the client's own in-flight limit refused never reached the server: they count apart."""
    shed = tally.rejections["queue_full"] + tally.rejections["queue_timeout"]
    other = tally.failed_at_model - shed
    return {
        "client_in_flight_refusals": tally.rejections["client_limit"],
        "client_rejections": shed,
        "client_queue_full": tally.rejections["queue_full"],
        "client_queue_timeout": tally.rejections["queue_timeout"],
        "client_other_failures_at_a_model": other,
        "server_rejections": server_failures - other,
        "server_queue_timeouts": server_timeouts,
        "agree": shed == server_failures - other
        and tally.rejections["queue_timeout"] == server_timeouts,
    }


class Call(NamedTuple):
    """One call of the load: when it was due, how late it started (the load generator's
    lag), its latency from when it was due, and whether it was answered."""

    at: float
    lag: float
    latency: float
    answered: bool

    @property
    def sent_latency(self) -> float:
        """From when the call started: what the server (and the client's retries) took."""
        return self.latency - self.lag


def window(timeline: list[Call], start: float, end: float, slo_s: float) -> dict:
    """The calls due in [start, end): how many, answered, the goodput (answers within the
    SLO a second) and the p99 of the answered ones, from when each started (`p99_ms`) and
    from when it was due (`due_p99_ms`: the load generator's lag too)."""
    calls = [call for call in timeline if start <= call.at < end]
    answered = [call for call in calls if call.answered]
    seconds = end - start
    return {
        "seconds": round(seconds, 1),
        "requests": len(calls),
        "answered": len(answered),
        "goodput": round(sum(call.sent_latency <= slo_s for call in answered) / seconds, 1),
        "p99_ms": percentile_ms([call.sent_latency for call in answered], 99, 2, seconds=True),
        "due_p99_ms": percentile_ms([call.latency for call in answered], 99, 2, seconds=True),
    }


def per_second(timeline: list[Call], start: float, count: int) -> list[list[float]]:
    """The latencies (from the start of each call) of the calls answered in each of `count`
    seconds from `start`, by the second they were due."""
    seconds: list[list[float]] = [[] for _ in range(count)]
    for call in timeline:
        if call.answered and 0 <= call.at - start < count:
            seconds[int(call.at - start)].append(call.sent_latency)
    return seconds


def recovery_seconds(seconds: list[list[float]], slo_ms: float) -> int | None:
    """Seconds until p99 came back under the SLO: the first second from which the calls
    answered to the end (latencies in seconds, one list a second) have their p99 under it;
    None when none does. A backlog keeps the p99 of what follows it above the SLO for as
    long as it lasts; a lone slow second later on (a few slow calls) is not one, and does
    not undo the recovery."""
    for start in range(len(seconds)):
        rest = [latency for second in seconds[start:] for latency in second]
        p99 = percentile_ms(rest, 99, seconds=True)
        if p99 is not None and p99 <= slo_ms:
            return start
    return None


def load_plan(changed: set[str], removed: set[str], entries: bool) -> tuple[list, list]:
    """(unload, load) for a repository change: unload what is gone first, then load the
    stages, then the release ensembles, then (with `entries`) `search` / `recommend`."""
    stages = sorted(m for m in changed if not is_entry_model(m))
    releases = sorted(m for m in changed if pipelines.parse_release_model(m))
    kinds = sorted(m for m in changed if m in pipelines.KINDS) if entries else []
    return sorted(removed), stages + releases + kinds


def repository_state(repo: Path) -> dict[str, str]:
    """Each model's config text and version folders: what a load would pick up."""
    state = {}
    for config in repo.glob("*/config.pbtxt"):
        versions = ",".join(str(v) for v in model_versions(repo, config.parent.name))
        state[config.parent.name] = config.read_text() + versions
    return state


def stage_configs(repo: Path) -> Iterator[tuple[Path, dict]]:
    """Every config file (the served one and the profiles') of a stage, a model with a
    dynamic batcher (an ensemble has none), parsed."""
    for served in sorted(repo.glob(f"*/{CONFIG}")):
        for path in model_configs(served.parent):
            config = parse_pbtxt(path.read_text())
            if "dynamic_batching" in config:
                yield path, config


def queue_timeouts(repo: Path) -> dict[str, int]:
    """Each stage's queue timeout (µs) in the served configs of `repo` (0: none)."""
    return {
        path.parent.name: configs_current_value(config, QUEUE_TIMEOUT_TUNABLE)
        for path, config in stage_configs(repo)
        if path.name == CONFIG
    }


def set_queue_timeouts(repo: Path, microseconds: int) -> None:
    """Give every stage of `repo` a queue timeout of `microseconds`."""
    for path, config in stage_configs(repo):
        rewrite_config(path, apply_tunables(config, {QUEUE_TIMEOUT_TUNABLE: microseconds}))


def scenario_passed(report: dict) -> bool:
    """No call lost (`overload` may shed calls: they failed with the server's overload
    answer, nothing else), the accounting agrees, and the scenario's own checks passed."""
    allowed = report["shed_requests"] if "overload" in report else 0
    checks = [report["errors"] == allowed, report["accounting"]["agree"]]
    if "memory" in report:
        checks.append(report["memory"]["passed"])
    if "overload" in report:
        checks += report["overload"]["checks"].values()
    checks += [report[key] for key in ("rolled_back", "recovered", "swapped") if key in report]
    return all(checks)


# -- client-side tally and the load ---------------------------------------------------------


@dataclass
class Tally:
    """What the client saw: calls, their latencies, every failed attempt."""

    calls: int = 0
    answered: int = 0
    errors: int = 0
    retried_calls: int = 0
    failed_attempts: int = 0
    failed_at_model: int = 0
    #: Calls whose last attempt was shed (`OverloadedError`: by the server, or refused by
    #: the client's in-flight limit).
    shed: int = 0
    latencies: list[float] = field(default_factory=list)
    timeline: list[Call] = field(default_factory=list)
    #: Attempts shed, by `rejection_kind`.
    rejections: Counter = field(default_factory=Counter)
    releases: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    last_failure_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed_attempt(self, error: ClientError) -> None:
        with self.lock:
            self.failed_attempts += 1
            self.failed_at_model += reached_a_model(error)
            if (kind := rejection_kind(error)) is not None:
                self.rejections[kind] += 1
            self.failures[f"{type(error).__name__}: {error.message[:120]}"] += 1
            self.last_failure_at = time.monotonic()

    def call(
        self,
        kind: str,
        latency: float,
        version: int | None,
        attempts: int,
        at: float = 0.0,
        error: ClientError | None = None,
        lag: float = 0.0,
    ) -> None:
        """A call due `at` that started `lag` late, answered by release `version` (None: it
        failed with `error`)."""
        with self.lock:
            self.calls += 1
            self.latencies.append(latency)
            self.timeline.append(Call(at, lag, latency, version is not None))
            self.retried_calls += attempts > 1
            if version is None:
                self.errors += 1
                self.shed += isinstance(error, OverloadedError)
            else:
                self.answered += 1
                self.releases[f"{kind} {version}"] += 1

    def summary(self, seconds: float) -> dict:
        return {
            "seconds": round(seconds, 1),
            "requests": self.calls,
            "errors": self.errors,
            "p99_ms": percentile_ms(self.latencies, 99, 2, seconds=True),
            "start_lag_p99_ms": percentile_ms(
                [call.lag for call in self.timeline], 99, 2, seconds=True
            ),
            "throughput": round(self.calls / seconds, 1) if seconds else 0.0,
            "retried_requests": self.retried_calls,
            "failed_attempts": self.failed_attempts,
            "failed_attempts_by_error": dict(self.failures),
            "shed_requests": self.shed,
            "answered_by_release": dict(sorted(self.releases.items())),
        }


@dataclass(frozen=True)
class Requests:
    """Logged queries and user ids, drawn with their frequency; even calls search."""

    queries: list[str]
    users: list[int]

    @staticmethod
    def kind(index: int) -> str:
        return names.SEARCH if index % 2 == 0 else names.RECOMMEND

    def send(self, client: Client, index: int) -> tuple[str, int, int]:
        """Make call `index`; return (kind, release that answered, attempts)."""
        user = self.users[index % len(self.users)]
        if self.kind(index) == names.SEARCH:
            result = client.search(self.queries[index % len(self.queries)], user, K)
            return names.SEARCH, result.version, result.attempts
        result = client.recommend(user, K)
        return names.RECOMMEND, result.version, result.attempts


def timed_call(
    client: Client, requests: Requests, index: int, since: float, tally: Tally, lag: float = 0.0
):
    """Make call `index`, due at `since` and started `lag` later, and tally it."""
    try:
        kind, version, attempts = requests.send(client, index)
    except ClientError as error:
        tally.call("error", time.monotonic() - since, None, error.attempts, since, error, lag)
        return
    tally.call(kind, time.monotonic() - since, version, attempts, since, lag=lag)


class OpenLoop:
    """Calls scheduled at `rate` a second whatever the answers, run by `workers` threads.

    A call's latency runs from its scheduled time, so time spent queued behind slow
    answers counts, and so does the scheduler's tick: it wakes at most every
    `SCHEDULE_TICK_S` and hands out every call due by then. `change_rate` sets another rate
    from then on. `stop` stops scheduling and waits for every scheduled call.
    """

    def __init__(
        self, client: Client, requests: Requests, rate: float, tally: Tally, workers: int = 32
    ) -> None:
        self.client, self.requests, self.rate, self.tally = client, requests, rate, tally
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work) for _ in range(workers)]
        self._scheduler = threading.Thread(target=self._schedule)
        self._active: dict[int, float] = {}
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self.started_at = 0.0
        self._scheduled = 0
        #: (since, first call index, rate): calls from `first` on are due at `rate` from `since`
        self._phase = (0.0, 0, rate)

    def start(self) -> OpenLoop:
        self.started_at = time.monotonic()
        self._phase = (self.started_at, 0, self.rate)
        for thread in [*self._threads, self._scheduler]:
            thread.start()
        return self

    def change_rate(self, rate: float) -> None:
        """Schedule `rate` calls a second from now on."""
        self.rate = rate
        self._phase = (time.monotonic(), self._scheduled, rate)

    def _schedule(self) -> None:
        index = 0
        while not self._stop.is_set():
            since, first, rate = self._phase
            due = since + (index - first) / rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(min(max(delay, SCHEDULE_TICK_S), 0.1))
                continue
            self._queue.put((index, due))
            index += 1
            self._scheduled = index
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            index, due = item
            self._open.wait()
            with self._lock:
                self._active[index] = started = time.monotonic()
            timed_call(self.client, self.requests, index, due, self.tally, started - due)
            with self._lock:
                del self._active[index]

    def settle(self, since: float) -> None:
        """Wait until every call that started before `since` has ended."""
        while True:
            with self._lock:
                if all(started >= since for started in self._active.values()):
                    return
            time.sleep(0.01)

    def hold(self) -> None:
        """Start no call until `release` (they stay scheduled, and their latency grows)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def stop(self) -> float:
        """Stop scheduling, wait for the scheduled calls; the seconds the load ran."""
        self.release()
        self._stop.set()
        for thread in [self._scheduler, *self._threads]:
            thread.join()
        return time.monotonic() - self.started_at


def saturation(client: Client, requests: Requests, seconds: float, concurrency: int) -> float:
    """Closed-loop throughput (calls a second) with `concurrency` calls always in flight.
    Every call takes the next index, so the calls alternate kinds as the open loop's do
    (a worker of its own per kind would make more of the cheaper kind, and overstate what
    the open loop's mix can get)."""
    tally, stop_at, indexes = Tally(), time.monotonic() + seconds, itertools.count()

    def work() -> None:
        while time.monotonic() < stop_at:
            timed_call(client, requests, next(indexes), time.monotonic(), tally)

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally.answered / (time.monotonic() - started)


class Saturation(NamedTuple):
    """A saturation reading and what it cost: the load generator's CPU (in cores) and the
    server's (tritonserver and its stubs) per answered call. The server's CPU per call
    shows how fast the machine was: on shared virtual cores the same work can cost more
    CPU at one time than at another."""

    throughput: float
    generator_cores: float
    server_cpu_us_per_call: float | None


def measure_saturation(harness: Harness, settings: Settings) -> Saturation:
    """`saturation` over `settings.saturation_seconds`, with what it cost, through a client
    without retries: a call the server sheds is not answered, and not waited for."""
    client = Client(
        harness.server.grpc_url,
        timeout=DEADLINE_SLOS * settings.slo_ms / 1000,
        retry=RetryPolicy(max_attempts=1),
    )
    with client:
        before, started = server_cpu(harness.server), time.monotonic()
        throughput, cores = generator_cores(
            lambda: saturation(
                client, harness.requests, settings.saturation_seconds, settings.concurrency
            )
        )
        after, seconds = server_cpu(harness.server), time.monotonic() - started
    cpu_us = cpu_us_per_call(before, after, throughput * seconds)
    return Saturation(round(throughput, 1), cores, cpu_us)


# -- the server, its processes and its repository --------------------------------------------


def generator_cores(work: Callable[[], T]) -> tuple[T, float]:
    """What `work` returns, and the CPU this process (the load generator, which shares the
    machine with the server) used meanwhile, in cores."""
    cpu, started = os.times(), time.monotonic()
    result = work()
    end = os.times()
    used = end.user + end.system - cpu.user - cpu.system
    return result, round(used / (time.monotonic() - started), 3)


def server_cpu(server: TritonServer) -> stage_cpu.Snapshot:
    """The CPU seconds of tritonserver and of its stubs (its process group) so far."""
    return stage_cpu.snapshot({pid: "server" for pid in processes_in_group(server.pid)})


def cpu_us_per_call(
    before: stage_cpu.Snapshot, after: stage_cpu.Snapshot, calls: float
) -> float | None:
    """The server's CPU between two `server_cpu` readings per call answered meanwhile, in
    µs (processes in both readings; None when no call was answered)."""
    spent = sum(stage_cpu.spent(before, after).values())
    return round(spent / calls * 1e6, 1) if calls > 0 else None


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in kB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def server_memory(server: TritonServer) -> dict[str, int]:
    """RSS of tritonserver and of each backend stub (named model:version:instance)."""
    processes = {"tritonserver": server.pid}
    for pid, stub in server_stubs(server.pid).items():
        processes[f"{stub.model}:{stub.version}:{stub.instance}"] = pid
    sizes = {name: rss_kb(pid) for name, pid in processes.items()}
    return {name: size for name, size in sizes.items() if size is not None}


def settled(read: Callable[[], T], quiet: float = QUIET_S, timeout: float = SETTLE_S) -> T:
    """What `read` returns once it holds still for `quiet` seconds (at most `timeout`):
    Triton counts an ensemble request when its last step's request is released, which can
    come a moment after the client has the answer."""
    value, still_since = read(), time.monotonic()
    deadline = still_since + timeout
    while time.monotonic() - still_since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        if (now := read()) != value:
            value, still_since = now, time.monotonic()
    return value


def scrape(
    server: TritonServer,
    models: set[str] | None = None,
    quiet: float = QUIET_S,
    timeout: float = SETTLE_S,
) -> dict[SeriesKey, float]:
    """The entry models' counters, read once those of `models` (default: all) hold still
    (see `settled`)."""

    def read() -> dict[SeriesKey, float]:
        return entry_series(canary_gate.fetch_text(server.metrics_url))

    settled(
        lambda: {key: v for key, v in read().items() if models is None or key[1] in models},
        quiet,
        timeout,
    )
    return read()


def build_release(repo: Path, only: tuple[str, ...], seed: int, invert_ranker: bool) -> None:
    """Build a release into `repo` (run in a process of its own: training takes the GIL)."""
    from builders.build import BuildOptions, build
    from builders.pipelines import PIPELINE_FILE, PipelineSpec, query_encoder
    from perf.inputs import dataset_of

    latest = max(model_versions(repo, names.SEARCH))
    encoder = query_encoder(
        repo, PipelineSpec.load(repo / names.SEARCH / str(latest) / PIPELINE_FILE)
    )
    if invert_ranker:
        write_inverted_ranker(repo)
    options = BuildOptions(repo=repo, only=only, seed=seed, encoder=encoder.model)
    build(options, dataset_of(repo, names.SEARCH))


def write_inverted_ranker(repo: Path) -> int:
    """A new `search_ranker` version whose scores are those of the latest, negated: the
    candidates come back worst first (a sign slip in an export). Returns its version."""
    import onnx
    from onnx import helper

    from builders.repository import MANIFEST, file_digests

    latest = max(model_versions(repo, names.SEARCH_RANKER))
    version = latest + 1
    source, target = repo / names.SEARCH_RANKER / str(latest), repo / names.SEARCH_RANKER
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".staging-"))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    model = onnx.load(staging / "model.onnx")
    (output,) = model.graph.output
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == output.name else o for o in node.output]
    model.graph.node.append(helper.make_node("Neg", [f"{output.name}_raw"], [output.name]))
    onnx.save(model, staging / "model.onnx")
    manifest = json.loads((staging / MANIFEST).read_text())
    manifest.update(version=version, files=file_digests(staging))
    manifest["metrics"] = {**manifest.get("metrics", {}), "fault": "scores negated"}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    staging.rename(target / str(version))
    return version


class Harness:
    """The server on a scratch repository, one client with retries, the load's requests."""

    def __init__(
        self,
        repo: Path,
        work: Path,
        workers: int,
        canary_queries: int = 200,
        queue_timeout_us: int | None = None,
    ) -> None:
        from perf.inputs import dataset_of

        self.repo = work / "repository"
        if self.repo.exists():
            shutil.rmtree(self.repo)
        shutil.copytree(repo, self.repo)
        #: Every stage's queue timeout, the built one's replaced (in releases built later too).
        self.queue_timeout_us = queue_timeout_us
        if queue_timeout_us is not None:
            set_queue_timeouts(self.repo, queue_timeout_us)
        dataset = dataset_of(self.repo, names.SEARCH)
        self.requests = Requests(
            dataset.sample_queries(4096, 0), [int(u) for u in dataset.sample_user_ids(4096, 1)]
        )
        self.queries = work / "canary_queries.txt"
        self.queries_sent = canary_queries
        self.queries.write_text("\n".join(dataset.sample_queries(self.queries_sent, 2)) + "\n")
        # fixed ports: a restart comes back on them
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3)))
        self.server = TritonServer(
            self.repo,
            model_control="explicit",
            load_models=["*"],
            exit_timeout_secs=5,
            startup_timeout=300,
            log_path=work / "server.log",
            extra_args=("--metrics-config=summary_latencies=true",),
            **ports,
        )
        self.workers = workers
        self.tally = Tally()
        self.client: Client | None = None
        self.watchdog: StubWatchdog | None = None
        self.load: OpenLoop | None = None
        #: The entry counters read during a scenario, in time order (`counter_increase`).
        self.scrapes: list[dict[SeriesKey, float]] = []

    def __enter__(self) -> Harness:
        progress(f"starting tritonserver on {self.repo}", "reliability")
        self.server.start()
        self.watchdog = StubWatchdog(self.server).__enter__()
        self.client = Client(
            self.server.grpc_url,
            timeout=DEADLINE_S,
            retry=RETRY,
            budget=RetryBudget(min_per_second=50.0),
            on_failed_attempt=lambda error: self.tally.failed_attempt(error),
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.close()
        self.watchdog.stop()
        self.server.stop()

    @contextlib.contextmanager
    def under_load(
        self, rate: float, client: Client | None = None, workers: int | None = None
    ) -> Iterator[dict]:
        """Run the open-loop load (through `client`, by default the harness's own) while the
        body runs; fills in the scenario's report: the client's tally and the server's
        counters over the same calls."""
        self.tally = Tally()
        report: dict = {"rate": round(rate, 1)}
        self.scrapes = [scrape(self.server)]
        self.load = OpenLoop(
            client or self.client, self.requests, rate, self.tally, workers or self.workers
        ).start()
        try:
            yield report
        finally:
            seconds = self.load.stop()
        self.scrapes.append(scrape(self.server))
        server = entry_counts(counter_increase(self.scrapes))
        report.update(self.tally.summary(seconds))
        report["accounting"] = accounting(self.tally, server, report.pop("_gate", (0, 0)))

    def sync(self, before: dict[str, str], entries: bool = True) -> dict:
        """Load into the server what changed in the repository since `before`."""
        after = repository_state(self.repo)
        changed = {m for m in after if before.get(m) != after[m]}
        unload, load = load_plan(changed, set(before) - set(after), entries)
        started = time.monotonic()
        # An unloaded model's counters may leave /metrics, and a reloaded one's may start
        # again: read them before (once the unloaded ones' last calls are counted) and after.
        self.scrapes.append(scrape(self.server, set(unload)))
        for model in unload:
            self.server.unload_model(model)
        for model in load:
            self.server.load_model(model)
        self.scrapes.append(scrape(self.server, set()))
        return {"unloaded": unload, "loaded": load, "seconds": round(time.monotonic() - started, 2)}

    def build(self, only: tuple[str, ...], seed: int, invert_ranker: bool = False) -> float:
        """Build a release into the scratch repository in a spawned process; its seconds."""
        started = time.monotonic()
        process = multiprocessing.get_context("spawn").Process(
            target=build_release, args=(self.repo, only, seed, invert_ranker)
        )
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"building {', '.join(only)} failed (exit {process.exitcode})")
        if self.queue_timeout_us is not None:
            set_queue_timeouts(self.repo, self.queue_timeout_us)
        return round(time.monotonic() - started, 1)


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    soak_seconds: float = 600.0
    seconds: float = 30.0
    #: Long enough to read a stable saturation (10 s overstated what 2 shared cores sustain).
    saturation_seconds: float = 30.0
    #: The soak's share of saturation: 80 % of a 10 s reading was more than 2 cores serve
    #: open-loop (the load generator shares them), so its queue grew for the whole soak.
    load: float = 0.6
    fault_load: float = 0.5
    crash_stage: str = names.SEARCH_RANKING
    concurrency: int = 16
    workers: int = 32
    #: `overload`: `spike` x saturation for `spike_seconds`, then `after_spike` x saturation
    #: for `after_spike_seconds`, against the SLO the repository's queues were built for.
    spike: float = 2.0
    spike_seconds: float = 60.0
    after_spike: float = 0.5
    after_spike_seconds: float = 30.0
    slo_ms: float = names.SLO_MS
    #: Threads of the spike's open loop: calls in flight at twice saturation.
    overload_workers: int = 256
    #: Every stage's queue timeout (µs) in place of the built one; None keeps the build's.
    queue_timeout_us: int | None = None
    #: `overload`: the spike client's in-flight limit (`in_flight_limit`): "auto", "none",
    #: "adaptive", "adaptive:N" or a number.
    client_in_flight: str = "auto"


QUICK = Settings(
    soak_seconds=20.0,
    seconds=6.0,
    saturation_seconds=3.0,
    spike_seconds=10.0,
    after_spike_seconds=12.0,
)


def soak(harness: Harness, settings: Settings, rate: float) -> dict:
    """Steady load; memory after a warm-up and at the end."""
    warmup = min(30.0, settings.soak_seconds / 5)
    with harness.under_load(rate) as report:
        time.sleep(warmup)
        start = server_memory(harness.server)
        end_at = time.monotonic() + settings.soak_seconds - warmup
        while (left := end_at - time.monotonic()) > 0:
            time.sleep(min(60.0, left))
            progress(
                f"soak: {harness.tally.calls} calls, {harness.tally.errors} errors", "reliability"
            )
        end = server_memory(harness.server)
    report["warmup_seconds"] = warmup
    report["memory"] = memory_growth(start, end, MEMORY_GROWTH_LIMIT)
    return report


def hot_swap(harness: Harness, settings: Settings, rate: float) -> dict:
    """Build a search release with a retrained ranker under load, then load it."""
    before = repository_state(harness.repo)
    seed = max(model_versions(harness.repo, names.SEARCH_RANKER)) + 1
    with harness.under_load(rate) as report:
        time.sleep(settings.seconds / 3)
        report["build_seconds"] = harness.build((names.SEARCH_RANKER, names.SEARCH), seed=seed)
        release = max(model_versions(harness.repo, names.SEARCH))
        report["load"] = harness.sync(before)
        swapped_at = harness.tally.releases[f"search {release}"]
        time.sleep(settings.seconds / 3)
    report["release"] = release
    report["swapped"] = report["answered_by_release"].get(f"search {release}", 0) > swapped_at
    return report


def canary_rollback(harness: Harness, settings: Settings, rate: float) -> dict:
    """Serve a bad canary to 10 % of the search calls until the gate rolls it back."""
    stable = max(model_versions(harness.repo, names.SEARCH))
    before = repository_state(harness.repo)
    window = max(settings.seconds / 3, 2.0)
    with harness.under_load(rate) as report:
        report["build_seconds"] = harness.build((names.SEARCH,), seed=0, invert_ranker=True)
        canary = max(model_versions(harness.repo, names.SEARCH))
        report["load"] = harness.sync(before, entries=False)  # `search` stays on stable
        routes = harness.client.routes
        routes[names.SEARCH] = Route.split({stable: 100 - CANARY_SHARE, canary: CANARY_SHARE})
        gate = gate_decision(harness, stable, canary, window, rate)
        report["gate"] = gate
        overlap = gate["overlap"]
        report["_gate"] = gate_calls(harness.queries_sent, overlap)
        canary_calls = -1
        if gate["decision"] == canary_gate.ROLLBACK:
            rolled_back_at = time.monotonic()
            routes[names.SEARCH] = Route.pinned(stable)
            harness.load.settle(rolled_back_at)  # calls that chose the canary have ended
            canary_calls = harness.tally.releases[f"search {canary}"]
            report["rollback"] = roll_back(harness, canary)
            report["rollback"]["seconds"] = round(time.monotonic() - rolled_back_at, 2)
            time.sleep(settings.seconds / 3)
        routes.pop(names.SEARCH)
    report.update(stable=stable, canary=canary)
    report["rolled_back"] = gate["decision"] == canary_gate.ROLLBACK and (
        report["answered_by_release"].get(f"search {canary}", 0) == canary_calls
    )
    return report


def gate_decision(harness: Harness, stable: int, canary: int, window: float, rate: float) -> dict:
    """The canary gate on the server's metrics, release `stable` against `canary`."""
    server = harness.server
    min_requests = max(5, int(rate / 2 * CANARY_SHARE / 100 * window / 2))
    argv = [
        "--model", pipelines.release_model(names.SEARCH, stable),
        "--canary-model", pipelines.release_model(names.SEARCH, canary),
        "--stable-metrics", server.metrics_url, "--canary-metrics", server.metrics_url,
        "--stable-infer", server.http_url, "--canary-infer", server.http_url,
        "--queries", str(harness.queries), "--k", str(K),
        "--window", str(window), "--min-requests", str(min_requests),
    ]  # fmt: skip
    result = canary_gate.run(canary_gate.build_parser().parse_args(argv))
    return {key: result[key] for key in ("decision", "reasons", "stable", "canary", "overlap")}


def gate_calls(sent: int, overlap: dict | None) -> tuple[int, int]:
    """(answered, failed) of the gate's overlap calls: it asks stable each of the `sent`
    queries, and the canary each query stable answered (`overlap["queries"]`), of which
    `canary_failures` were answered with an error."""
    if not overlap:
        return 0, 0
    answered_by_stable, canary_failed = overlap["queries"], overlap["canary_failures"]
    answered = 2 * answered_by_stable - canary_failed
    return answered, sent - answered_by_stable + canary_failed


def roll_back(harness: Harness, canary: int) -> dict:
    """Take the canary release out of the repository and the server (no traffic goes there
    any more): its record goes, the served versions are reconciled and loaded."""
    from builders.build import reconcile_served_versions

    before = repository_state(harness.repo)
    shutil.rmtree(harness.repo / names.SEARCH / str(canary))
    reconcile_served_versions(harness.repo)
    return harness.sync(before)


def stage_crash(harness: Harness, settings: Settings, rate: float) -> dict:
    """SIGKILL the stub processes of one stage under load; the watchdog reloads it."""
    stage = settings.crash_stage
    restarts = len(harness.watchdog.restarts)
    with harness.under_load(rate) as report:
        time.sleep(settings.seconds / 3)
        victims = [p for p, s in server_stubs(harness.server.pid).items() if s.model == stage]
        if not victims:
            raise RuntimeError(f"no backend stub process serves {stage!r}")
        killed_at = time.monotonic()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        deadline = killed_at + 60
        while len(harness.watchdog.restarts) == restarts and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settings.seconds / 3)
    events = harness.watchdog.restarts[restarts:]
    reloaded = [e for e in events if e.reloaded_at is not None]
    last_failure = harness.tally.last_failure_at
    report.update(
        stage=stage,
        killed_pids=victims,
        detected_after_s=round(events[0].detected_at - killed_at, 2) if events else None,
        reloaded_after_s=round(reloaded[0].reloaded_at - killed_at, 2) if reloaded else None,
        last_failed_attempt_after_s=(
            round(last_failure - killed_at, 2) if last_failure is not None else None
        ),
        watchdog=[{"model": e.model, "pid": e.pid, "error": e.error} for e in events],
    )
    report["recovered"] = bool(reloaded) and any(
        s.model == stage for s in server_stubs(harness.server.pid).values()
    )
    return report


def freeze_stages(harness: Harness) -> tuple[int, dict[SeriesKey, float]]:
    """Hold the load and freeze the server's Python stages until no call can complete before
    a kill: (tries, the server's counters then).

    Every pipeline ends at a Python stage, so once they are frozen only the calls already
    past the last one can complete, within `KILL_QUIET_S`. A frozen stage fails its calls
    as "not healthy" (the Python backend gives a stub a second to show it is alive, and
    the stub shows it every 0.3 s), never sooner than 0.7 s after the freeze. A freeze whose
    counters did not hold still within `KILL_WITHIN_S` of it (a slow machine) is thawed and
    tried again, so the kill never comes after a failure the counters missed."""
    stubs = list(server_stubs(harness.server.pid))
    for tries in itertools.count(1):
        harness.load.hold()
        frozen_at = time.monotonic()
        for pid in stubs:
            os.kill(pid, signal.SIGSTOP)
        counters = scrape(harness.server, quiet=KILL_QUIET_S, timeout=KILL_WITHIN_S)
        if time.monotonic() - frozen_at < KILL_WITHIN_S or tries == FREEZE_TRIES:
            return tries, counters
        for pid in stubs:
            os.kill(pid, signal.SIGCONT)
        harness.load.release()
        time.sleep(1.0)


def server_restart(harness: Harness, settings: Settings, rate: float) -> dict:
    """Kill the server under load and start it again on the same ports."""
    server = harness.server
    with harness.under_load(rate) as report:
        time.sleep(settings.seconds / 3)
        harness.watchdog.stop()
        # The dying server's last counters must be all it served: nothing may complete
        # between that reading and the kill.
        report["freezes"], last = freeze_stages(harness)
        harness.scrapes.append(last)
        killed_at = time.monotonic()
        os.killpg(server.pid, signal.SIGKILL)
        harness.load.release()  # calls made while the server is down must retry
        server.stop()
        for region in glob.glob(f"/dev/shm/{server.options.shm_region_prefix}*"):
            os.unlink(region)  # the killed server's Python-backend shared memory
        server.start()
        report["down_seconds"] = round(time.monotonic() - killed_at, 2)
        harness.watchdog.start()
        harness.scrapes.append({})  # a new process counts from zero
        time.sleep(settings.seconds / 3)
    report["server_lifetimes"] = 2
    report["recovered"] = server.is_ready()
    return report


class ReadinessProbe:
    """Asks `/v2/health/ready` every `PROBE_EVERY_S` while the body runs, as the chart's
    readiness probe does (`PROBE_TIMEOUT_S` to answer); counts the probes that failed."""

    def __init__(self, http_url: str) -> None:
        self.url = f"http://{http_url}/v2/health/ready"
        self.probes = self.not_ready = 0
        self.slowest_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe)

    def __enter__(self) -> ReadinessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _probe(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=PROBE_TIMEOUT_S) as response:
                    ready = response.status == 200
            except OSError:  # urllib's HTTPError (a 503) is one too
                ready = False
            self.probes += 1
            self.not_ready += not ready
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)

    def summary(self) -> dict:
        return {
            "probes": self.probes,
            "not_ready": self.not_ready,
            "slowest_ms": round(self.slowest_s * 1000, 1),
        }


def read_stage_timeouts(server: TritonServer) -> float:
    return stage_timeouts(canary_gate.fetch_text(server.metrics_url))


def pipeline_stages(repo: Path) -> dict[str, tuple[str, ...]]:
    """The models each pipeline kind's newest release serves as its steps, in step order."""
    stages = {}
    for kind in pipelines.KINDS:
        newest = max(model_versions(repo, kind))
        spec = pipelines.PipelineSpec.load(repo / kind / str(newest) / pipelines.PIPELINE_FILE)
        stages[kind] = tuple(step.model for step in pipelines.ensemble_steps(spec))
    return stages


def overload(harness: Harness, settings: Settings, rate: float) -> dict:
    """`settings.spike` x the saturation throughput `rate`, then `settings.after_spike` x,
    through a client whose deadline (`DEADLINE_SLOS`) outlasts the stages' queue timeouts
    and whose in-flight limit (`settings.client_in_flight`) refuses at once what the server
    could not answer within the SLO; bounded stage queues, where set, shed what still comes
    too fast, and the client retries what they shed within its budget. Saturation is read
    again after it: the goodput is a share of the mean of `rate` and that reading."""
    slo_s = settings.slo_ms / 1000
    limit = in_flight_limit(settings.client_in_flight, rate, settings.slo_ms)
    adaptive = limit if isinstance(limit, AdaptiveInFlightLimit) else None
    limits: list[float] = []  # an adaptive limit, each second

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            if adaptive is not None:
                limits.append(round(adaptive.limit, 1))

    client = Client(
        harness.server.grpc_url,
        timeout=DEADLINE_SLOS * slo_s,
        retry=RetryPolicy(max_attempts=3, initial_backoff=slo_s / 4, max_backoff=slo_s),
        on_failed_attempt=lambda error: harness.tally.failed_attempt(error),
        max_in_flight=limit,
    )
    timeouts = settled(lambda: read_stage_timeouts(harness.server))
    members = pipeline_stages(harness.repo)
    load = harness.under_load(settings.spike * rate, client, settings.overload_workers)
    before_spike = canary_gate.fetch_text(harness.server.metrics_url)
    with client, ReadinessProbe(harness.server.http_url) as probe, load as report:
        spike_start, cpu_at_start = harness.load.started_at, server_cpu(harness.server)
        _, spike_cores = generator_cores(lambda: wait(settings.spike_seconds))
        spike_end, cpu_at_end = time.monotonic(), server_cpu(harness.server)
        during_spike = stage_work(
            before_spike,
            canary_gate.fetch_text(harness.server.metrics_url),
            spike_end - spike_start,
            members,
        )
        harness.load.change_rate(settings.after_spike * rate)
        wait(settings.after_spike_seconds)
        end = time.monotonic()
    timeouts = settled(lambda: read_stage_timeouts(harness.server)) - timeouts
    # The machine's speed can drift between the reading before the spike and the spike:
    # read saturation after it too, and count the goodput against the two readings' mean.
    progress("overload: measuring saturation after the spike", "reliability")
    after_reading = measure_saturation(harness, settings)
    capacity = (rate + after_reading.throughput) / 2
    timeline = harness.tally.timeline
    spike = window(timeline, spike_start, spike_end, slo_s)
    after = window(timeline, spike_end, end, slo_s)
    seconds = per_second(timeline, spike_start, int(end - spike_start))
    p99s = [percentile_ms(latencies, 99, 2, seconds=True) for latencies in seconds]
    recovery = recovery_seconds(seconds[int(spike_end - spike_start) :], settings.slo_ms)
    rejections = rejection_accounting(
        harness.tally, report["accounting"]["server_failure"], timeouts
    )
    goodput_share = spike["goodput"] / capacity
    report["overload"] = {
        "slo_ms": settings.slo_ms,
        "saturation": round(rate, 1),
        "saturation_after": after_reading.throughput,
        "capacity": round(capacity, 1),
        "server_cpu_us_per_call": {
            "spike": cpu_us_per_call(cpu_at_start, cpu_at_end, spike["answered"]),
            "saturation_after": after_reading.server_cpu_us_per_call,
        },
        "client_in_flight_limit": adaptive.initial if adaptive else limit,
        "generator_cores_in_spike": spike_cores,
        "spike": {"rate": round(settings.spike * rate, 1), **spike},
        "after_spike": {"rate": round(settings.after_spike * rate, 1), **after},
        "goodput_share": round(goodput_share, 3),
        "recovery_seconds": recovery,
        "per_second": {
            "answered": [len(latencies) for latencies in seconds],
            "goodput": [sum(x <= slo_s for x in latencies) for latencies in seconds],
            "p99_ms": p99s,
        },
        "rejections": rejections,
        "stage_work": during_spike,
        "readiness": probe.summary(),
        "checks": {
            "goodput": goodput_share >= GOODPUT_SHARE,
            "admitted_p99": spike["p99_ms"] is not None
            and spike["p99_ms"] <= P99_SLOS * settings.slo_ms,
            "recovered": recovery is not None and recovery <= RECOVERY_S,
            "only_overload_failures": rejections["client_other_failures_at_a_model"] == 0
            and harness.tally.failed_attempts
            == harness.tally.failed_at_model + rejections["client_in_flight_refusals"],
            "rejections_agree": rejections["agree"],
            "ready_throughout": probe.not_ready == 0,
            "load_on_schedule": report["start_lag_p99_ms"] is not None
            and report["start_lag_p99_ms"] <= LAG_SLOS * settings.slo_ms,
        },
    }
    if adaptive is not None:
        report["overload"]["client_in_flight_adaptive"] = {
            "target_ms": settings.slo_ms,
            "cuts": adaptive.cuts,
            "per_second": limits,
        }
    return report


RUNNERS: dict[str, Callable[[Harness, Settings, float], dict]] = {
    "soak": soak,
    "hot_swap": hot_swap,
    "canary_rollback": canary_rollback,
    "stage_crash": stage_crash,
    "server_restart": server_restart,
    "overload": overload,
}


def run(repo: Path, work: Path, settings: Settings, scenarios: tuple[str, ...]) -> dict:
    """Measure saturation, then run `scenarios` in order; the results document."""
    work.mkdir(parents=True, exist_ok=True)
    with Harness(
        repo, work, settings.workers, queue_timeout_us=settings.queue_timeout_us
    ) as harness:
        progress(f"measuring saturation for {settings.saturation_seconds:g} s", "reliability")
        saturation(harness.client, harness.requests, 2.0, settings.concurrency)  # warm-up
        reading = measure_saturation(harness, settings)
        results: dict = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine.describe(),
            "repository": str(repo),
            "settings": asdict(settings),
            "queue_timeouts_us": queue_timeouts(harness.repo),
            "saturation": {
                "concurrency": settings.concurrency,
                "mix": "search and recommend alternating",
                **reading._asdict(),
            },
            "scenarios": {},
        }
        for name in scenarios:
            fraction = {"soak": settings.load, "overload": 1.0}.get(name, settings.fault_load)
            if name == "overload" and results["scenarios"]:
                # its goodput is a share of what the server sustains now, after the
                # scenarios before it swapped releases, reloaded stages and restarted it
                progress("overload: measuring saturation again", "reliability")
                reading = measure_saturation(harness, settings)
            peak = reading.throughput
            progress(f"{name}: open-loop at {fraction:.0%} of {peak:.0f} calls/s", "reliability")
            report = RUNNERS[name](harness, settings, fraction * peak)
            if name == "overload":
                report["overload"]["generator_cores_at_saturation"] = reading.generator_cores
                report["overload"]["server_cpu_us_per_call"]["saturation"] = (
                    reading.server_cpu_us_per_call
                )
            report["passed"] = scenario_passed(report)
            results["scenarios"][name] = report
            progress(
                f"{name}: {report['requests']} calls, {report['errors']} errors, "
                f"accounting {'agrees' if report['accounting']['agree'] else 'DISAGREES'}, "
                f"{'passed' if report['passed'] else 'FAILED'}",
                "reliability",
            )
    results["passed"] = all(r["passed"] for r in results["scenarios"].values())
    return results


# -- command line ----------------------------------------------------------------------------


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def microseconds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 µs, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def in_flight_setting(text: str) -> str:
    number = text.removeprefix("adaptive:")
    if text in ("auto", "none", "adaptive") or (number.isdigit() and int(number) > 0):
        return text
    raise argparse.ArgumentTypeError(
        f"expected auto, none, adaptive, adaptive:N or a positive number N, got {text!r}"
    )


def scenario_list(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return tuple(s for s in SCENARIOS if s in chosen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perf.reliability.scenarios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    full = Settings()
    parser.add_argument("--repo", type=Path, default=Path("model_repository"), help="%(default)s")
    parser.add_argument(
        "--out", type=Path, default=Path("perf/results/reliability.json"), help="%(default)s"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("build/reliability"),
        help="scratch folder: the repository copy the scenarios change, the server log",
    )
    parser.add_argument("--scenarios", type=scenario_list, default=SCENARIOS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"short runs: soak {QUICK.soak_seconds:g} s, {QUICK.seconds:g} s per scenario, "
        f"saturation {QUICK.saturation_seconds:g} s (the options below still apply)",
    )
    parser.add_argument("--soak-seconds", type=positive, help=f"default {full.soak_seconds:g}")
    parser.add_argument(
        "--seconds", type=positive, help=f"load of each other scenario, default {full.seconds:g}"
    )
    parser.add_argument(
        "--saturation-seconds", type=positive, help=f"default {full.saturation_seconds:g}"
    )
    parser.add_argument(
        "--load", type=fraction, help=f"soak rate, share of saturation, default {full.load:g}"
    )
    parser.add_argument(
        "--fault-load",
        type=fraction,
        help=f"rate of the other scenarios, share of saturation, default {full.fault_load:g}",
    )
    parser.add_argument(
        "--spike-seconds",
        type=positive,
        help=f"overload: the spike at {full.spike:g}x saturation, default {full.spike_seconds:g}",
    )
    parser.add_argument(
        "--slo-ms",
        type=positive,
        help=f"overload: the p99 SLO the calls are held to, default {full.slo_ms:g}",
    )
    parser.add_argument(
        "--queue-timeout-us",
        type=microseconds,
        help="bound every stage's queue with this timeout in microseconds "
        "(default_timeout_microseconds; releases the scenarios build get it too; default: "
        "the queues as built, unbounded unless built with --slo-ms)",
    )
    parser.add_argument(
        "--client-in-flight",
        type=in_flight_setting,
        help="overload: the spike client's limit on calls in flight: a number, none, auto "
        f"(default {full.client_in_flight}: the calls answered in half the SLO at saturation), "
        "or adaptive[:N] (AIMD on the SLO, from N; default auto's)",
    )
    parser.add_argument(
        "--crash-stage",
        help=f"the stage whose stub stage_crash kills, default {full.crash_stage} "
        "(search's last step)",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """`--quick` or the full settings, with the options given on top."""
    given = {
        name: getattr(args, name)
        for name in (
            "soak_seconds",
            "seconds",
            "saturation_seconds",
            "load",
            "fault_load",
            "spike_seconds",
            "slo_ms",
            "queue_timeout_us",
            "client_in_flight",
            "crash_stage",
        )
        if getattr(args, name) is not None
    }
    return dataclasses.replace(QUICK if args.quick else Settings(), **given)


def readme_table(results: dict) -> str:
    """The table README.md quotes from a results file (a test checks it quotes the
    committed copy, docs/results/reliability.json)."""
    lines = [
        "| scenario | seconds | calls | errors | p99 ms | accounting | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in results["scenarios"].items():
        agrees = "agrees" if report["accounting"]["agree"] else "disagrees"
        lines.append(
            f"| {name} | {report['seconds']:g} | {report['requests']:,} | {report['errors']} "
            f"| {report['p99_ms']} | {agrees} | {'yes' if report['passed'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def in_flight_label(report: dict) -> str:
    """The spike client's in-flight limit in a table: "none", N, or "adaptive, N to M" (the
    limit an adaptive one started and ended the spike at)."""
    limit, adaptive = report["client_in_flight_limit"], report.get("client_in_flight_adaptive")
    if adaptive:
        spike = adaptive["per_second"][: round(report["spike"]["seconds"])]
        return f"adaptive, {limit} to {spike[-1]:.0f}"
    return str(limit) if limit else "none"


def overload_table(results: dict) -> str:
    """The tables README.md quotes for the `overload` scenario ("" when it did not run)."""
    if "overload" not in results["scenarios"]:
        return ""
    report = results["scenarios"]["overload"]["overload"]
    rows = [
        "| phase | seconds | calls/s | answered/s | goodput/s | goodput ÷ saturation "
        "| failed calls | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in ("spike", "after_spike"):
        part = report[phase]
        seconds = part["seconds"]
        rows.append(
            f"| {phase} at {part['rate']:g} calls/s | {seconds:g} "
            f"| {part['requests'] / seconds:.1f} | {part['answered'] / seconds:.1f} "
            f"| {part['goodput']:g} | {part['goodput'] / report['capacity']:.2f} "
            f"| {part['requests'] - part['answered']:,} | {part['p99_ms']} |"
        )
    shed, probes = report["rejections"], report["readiness"]
    cpu = report["server_cpu_us_per_call"]
    rows += [
        "",
        "| saturation before the spike, calls/s | after it | their mean "
        "| the server's CPU per answered call, µs: before / spike / after |",
        "|---|---|---|---|",
        f"| {report['saturation']:g} | {report['saturation_after']:g} | {report['capacity']:g} "
        f"| {cpu['saturation']:,.0f} / {cpu['spike']:,.0f} / {cpu['saturation_after']:,.0f} |",
        "",
        "| p99 under the SLO again after | client's in-flight limit (attempts it refused) "
        "| shed attempts, client / server | queue timeouts, client / server "
        "| readiness probes failed |",
        "|---|---|---|---|---|",
        f"| {report['recovery_seconds']} s | {in_flight_label(report)} "
        f"({shed['client_in_flight_refusals']:,}) | {shed['client_rejections']:,} / "
        f"{shed['server_rejections']:,.0f} | {shed['client_queue_timeout']:,} / "
        f"{shed['server_queue_timeouts']:,.0f} | {probes['not_ready']} of {probes['probes']} |",
    ]
    return "\n".join(rows) + "\n"


#: The figures of a stage `stage_work_table` gives, in its columns' order.
STAGE_WORK_COLUMNS = (
    "answered_per_second",
    "shed_per_second",
    "queue_ms",
    "duration_ms",
    "spent_on_unanswered",
)


def stage_work_table(runs: list[dict]) -> str:
    """Where the spike's work went, one row per pipeline and per stage, each cell the runs'
    figures in order (README.md quotes docs/results/overload/)."""
    works = [run["scenarios"]["overload"]["overload"]["stage_work"] for run in runs]

    def cells(section: str, name: str, *keys: str) -> str:
        """Per key, the runs' figures of `work[section][name][key]`, as table cells."""
        figures = [[work[section][name][key] for work in works] for key in keys]
        return " | ".join(
            ", ".join("–" if value is None else f"{value:g}" for value in values)
            for values in figures
        )

    lines = [
        "| pipeline or stage | answered/s | shed at its queue/s | queued ms | in the stage ms "
        "| share of its answers for calls not answered |",
        "|---|---|---|---|---|---|",
    ]
    for kind in works[0]["pipelines"]:
        answered = cells("pipelines", kind, "answered_per_second")
        lines.append(f"| **{kind}** (answered calls) | {answered} | | | | |")
    for model, stage in works[0]["stages"].items():
        figures = cells("stages", model, *STAGE_WORK_COLUMNS)
        lines.append(f"| {model} ({', '.join(stage['pipelines'])}) | {figures} |")
    return "\n".join(lines) + "\n"


def in_flight_table(runs: list[dict]) -> str:
    """One row per `overload` run: the spike client's in-flight limit and what the spike
    gave with it (README.md quotes docs/results/overload/)."""
    lines = [
        "| client's in-flight limit | saturation calls/s | spike calls/s | answered/s "
        "| goodput ÷ saturation | answered p99 ms | attempts refused by the client "
        "| attempts shed by the server | p99 under the SLO again after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for results in runs:
        report = results["scenarios"]["overload"]["overload"]
        spike, shed = report["spike"], report["rejections"]
        lines.append(
            f"| {in_flight_label(report)} | {report['saturation']:,.0f} "
            f"| {spike['rate']:,.0f} | {spike['answered'] / spike['seconds']:,.0f} "
            f"| {report['goodput_share']:.2f} | {spike['p99_ms']:.0f} "
            f"| {shed['client_in_flight_refusals']:,} | {shed['client_rejections']:,} "
            f"| {report['recovery_seconds']} s |"
        )
    return "\n".join(lines) + "\n"


def queue_timeout_table(runs: list[dict]) -> str:
    """One row per run of the same scenarios with another `--queue-timeout-us`: what each
    stage queue timeout cost and gave (README.md quotes docs/results/queue_timeouts/)."""
    lines = [
        "| stage queue timeout | saturation calls/s | soak: errors (shed attempts) "
        "| hot_swap: errors (shed attempts) | server_restart: errors, p99 s "
        "| spike: goodput ÷ saturation | spike: answered p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for results in runs:
        timeout_ms = results["settings"]["queue_timeout_us"] / 1000
        scenarios = results["scenarios"]
        soak, swap, restart = (scenarios[n] for n in ("soak", "hot_swap", "server_restart"))
        spike = scenarios["overload"]["overload"]
        lines.append(
            f"| {timeout_ms:.1f} ms | {results['saturation']['throughput']:,.0f} "
            f"| {soak['errors']:,} ({soak['failed_attempts']:,}) "
            f"| {swap['errors']:,} ({swap['failed_attempts']:,}) "
            f"| {restart['errors']:,}, {restart['p99_ms'] / 1000:.1f} "
            f"| {spike['goodput_share']:.2f} | {spike['spike']['p99_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def full_runs_table(runs: list[dict]) -> str:
    """One row per full run, in order (README.md quotes docs/results/reliability_runs/): the
    saturation readings and the server's CPU per call at each, what the spike gave, and the
    scenarios that passed; "–" for what a run did not record."""

    def figure(value: float | None, spec: str = ",.0f") -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| run | saturation calls/s: start / before the spike / after it "
        "| the server's CPU per call, µs: the same three | spike goodput ÷ the reading before "
        "| ÷ the mean of before and after | spike answered p99 ms | scenarios passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, results in enumerate(runs, 1):
        scenarios = results["scenarios"]
        report = scenarios["overload"]["overload"]
        cpu = report.get("server_cpu_us_per_call", {})
        readings = (
            results["saturation"]["throughput"],
            report["saturation"],
            report.get("saturation_after"),
        )
        costs = (
            results["saturation"].get("server_cpu_us_per_call"),
            cpu.get("saturation"),
            cpu.get("saturation_after"),
        )
        goodput = report["spike"]["goodput"]
        capacity = report.get("capacity")
        passed = sum(r["passed"] for r in scenarios.values())
        lines.append(
            f"| {n} | {' / '.join(map(figure, readings))} | {' / '.join(map(figure, costs))} "
            f"| {goodput / report['saturation']:.2f} "
            f"| {figure(None if capacity is None else goodput / capacity, '.2f')} "
            f"| {report['spike']['p99_ms']:.0f} | {passed} of {len(scenarios)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.repo / names.SEARCH).is_dir() or not (args.repo / names.RECOMMEND).is_dir():
        parser.error(f"{args.repo} holds no built search and recommend pipelines (make models)")
    settings = settings_from(args)
    if not (args.repo / settings.crash_stage).is_dir():
        parser.error(f"--crash-stage {settings.crash_stage}: no such model in {args.repo}")
    results = run(args.repo, args.work, settings, args.scenarios)
    write_results(args.out, results)
    for name, report in results["scenarios"].items():
        print(
            f"{name:16} {report['seconds']:7.1f} s {report['requests']:7d} requests "
            f"{report['errors']:3d} errors  p99 {report['p99_ms']} ms  "
            f"accounting {'agrees' if report['accounting']['agree'] else 'DISAGREES'}  "
            f"{'passed' if report['passed'] else 'FAILED'}"
        )
    print(overload_table(results), end="")
    if "overload" in results["scenarios"]:
        print(stage_work_table([results]), end="")
    print(f"wrote {args.out}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
