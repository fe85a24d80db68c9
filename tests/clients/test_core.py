"""The client core's operations, run by both drivers over scripted transports (no server):
the blocking and the asyncio client make the same attempts and get the same answers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clients.core import Call, ClientCore, run, run_async
from clients.errors import (
    DeadlineExceededError,
    InFlightLimitError,
    InvalidArgumentError,
    OverloadedError,
)
from clients.results import Response
from clients.retry import AdaptiveInFlightLimit, RetryPolicy

#: What each endpoint answers, call after call: a value, or an exception to raise.
SCRIPTS: dict[str, list] = {}


class ScriptedTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[str] = []

    def answer(self, call: str):
        self.calls.append(call)
        outcome = SCRIPTS[self.url].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def infer(self, model, version, inputs, timeout):
        return self.answer(f"infer {model}")

    def health(self, timeout):
        return self.answer("health")

    def models(self, timeout):
        return self.answer("models")


class AsyncScriptedTransport(ScriptedTransport):
    async def infer(self, model, version, inputs, timeout):
        await asyncio.sleep(0)
        return self.answer(f"infer {model}")

    async def health(self, timeout):
        return self.answer("health")

    async def models(self, timeout):
        return self.answer("models")


class BlockingCore(ClientCore):
    transport_kinds = {"grpc": ScriptedTransport}


class AsyncCore(ClientCore):
    transport_kinds = {"grpc": AsyncScriptedTransport}


def response(url: str) -> Response:
    return Response("search", 1, {"item_ids": np.array([[3, 1]])}, endpoint=url)


def scripted(core_class, scripts: dict[str, list], **settings):
    SCRIPTS.clear()
    SCRIPTS.update({url: list(outcomes) for url, outcomes in scripts.items()})
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001)
    return core_class(",".join(scripts), retry=retry, seed=0, **settings)


DRIVERS = {
    "blocking": (BlockingCore, run),
    "asyncio": (AsyncCore, lambda operation: asyncio.run(run_async(operation))),
}


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_shed_attempt_is_retried_on_the_next_endpoint(driver):
    core_class, carry_out = DRIVERS[driver]
    core = scripted(core_class, {"a:1": [OverloadedError("busy", "a:1")], "b:1": [response("b:1")]})
    answer = carry_out(core._infer("search", {}, None, None))
    assert answer.endpoint == "b:1" and answer.attempts == 2
    assert [t.calls for t in core.transports] == [["infer search"], ["infer search"]]
    assert core.overloaded == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_that_is_not_retryable_ends_the_call_at_once(driver):
    core_class, carry_out = DRIVERS[driver]
    core = scripted(core_class, {"a:1": [InvalidArgumentError("bad k", "a:1")], "b:1": []})
    with pytest.raises(InvalidArgumentError, match="bad k"):
        carry_out(core._infer("search", {}, None, None))
    assert [t.calls for t in core.transports] == [["infer search"], []]


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_unexpected_error_reaches_the_caller_unchanged(driver):
    core_class, carry_out = DRIVERS[driver]
    core = scripted(core_class, {"a:1": [KeyError("outputs")]})
    with pytest.raises(KeyError, match="outputs"):
        carry_out(core._infer("search", {}, None, None))


@pytest.mark.parametrize("driver", DRIVERS)
def test_health_asks_every_endpoint_once_and_reports_the_silent_one(driver):
    core_class, carry_out = DRIVERS[driver]
    up = {"live": True, "ready": True, "server_version": "2.51.0"}
    core = scripted(
        core_class, {"a:1": [up], "b:1": [DeadlineExceededError("no answer in 1 s", "b:1")]}
    )
    rows = carry_out(core._health(None))
    assert rows[0] == {"endpoint": "a:1", **up}
    assert rows[1]["endpoint"] == "b:1" and rows[1]["ready"] is False
    assert "no answer" in rows[1]["error"]


def test_both_drivers_make_the_same_attempts_for_the_same_script():
    script = {
        "a:1": [OverloadedError("busy", "a:1"), response("a:1")],
        "b:1": [OverloadedError("busy", "b:1")],
    }
    outcomes = []
    for core_class, carry_out in DRIVERS.values():
        core = scripted(core_class, script)
        answer = carry_out(core._infer("search", {}, None, None))
        outcomes.append((answer.endpoint, answer.attempts, [t.calls for t in core.transports]))
    assert outcomes[0] == outcomes[1] == ("a:1", 3, [["infer search"] * 2, ["infer search"]])


def test_the_core_alone_has_no_transports():
    with pytest.raises(TypeError, match="use Client or AsyncClient"):
        ClientCore("a:1")


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_attempt_beyond_the_in_flight_limit_is_refused_before_it_is_sent(driver):
    core_class, carry_out = DRIVERS[driver]
    core = scripted(core_class, {"a:1": [response("a:1"), response("a:1")]}, max_in_flight=1)
    held = core._infer("search", {}, None, None)
    assert isinstance(next(held), Call)  # its attempt is in flight, holding the one slot
    failed = []
    core.on_failed_attempt = failed.append
    with pytest.raises(InFlightLimitError, match="limit of 1 calls in flight") as refused:
        carry_out(core._infer("search", {}, None, None))
    assert refused.value.attempts == 1 and len(failed) == 1  # failed at once, not retried
    assert core.transports[0].calls == [] and core.overloaded == 0  # nothing reached a server
    assert core.failures.snapshot() == {"InFlightLimitError": 1}
    with pytest.raises(StopIteration):  # the held call ends and gives its slot back
        held.send(response("a:1"))
    assert carry_out(core._infer("search", {}, None, None)).endpoint == "a:1"
    assert core.in_flight.in_flight == 0


def test_a_failed_or_abandoned_attempt_gives_its_slot_back():
    core = scripted(BlockingCore, {"a:1": []}, max_in_flight=2)
    failing, abandoned = (core._infer("search", {}, None, None) for _ in range(2))
    next(failing), next(abandoned)
    assert core.in_flight.in_flight == 2
    with pytest.raises(InvalidArgumentError):
        failing.throw(InvalidArgumentError("bad k", "a:1"))
    abandoned.close()  # e.g. an asyncio call cancelled mid-attempt
    assert core.in_flight.in_flight == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_limit_of_its_own_is_used_and_hears_how_each_attempt_ended(driver):
    core_class, carry_out = DRIVERS[driver]
    limit = AdaptiveInFlightLimit(4, target=60.0)
    script = {"a:1": [OverloadedError("busy", "a:1"), response("a:1")]}
    core = scripted(core_class, script, max_in_flight=limit)
    assert carry_out(core._infer("search", {}, None, None)).attempts == 2
    assert core.in_flight is limit and limit.cuts == 1  # the shed attempt cut it
    assert limit.limit == pytest.approx(4 * 0.9)  # the answer, 1 of 3.6 in flight, did not raise it
    assert limit.in_flight == 0


def test_an_in_flight_limit_is_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        scripted(BlockingCore, {"a:1": []}, max_in_flight=0)
