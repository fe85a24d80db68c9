"""The client's pure parts: routing, retry policy and budget, contract check, typing, tables."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from builders import names
from clients import batch, cli, contract, formatting
from clients.core import split_urls
from clients.errors import (
    ContractError,
    DeadlineExceededError,
    InFlightLimitError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    ServerError,
    UnavailableError,
    error_for_status,
)
from clients.results import Catalog, Response, make_result
from clients.retry import (
    AdaptiveInFlightLimit,
    Attempts,
    FailureCounts,
    RetryBudget,
    RetryPolicy,
)
from clients.routing import RoundRobin, Route, parse_split, user_point, version_at
from clients.transport import request_timeout_us


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- routing -------------------------------------------------------------------


def test_version_at_splits_the_unit_interval_by_weight():
    weights = ((1, 90.0), (2, 10.0))
    assert version_at(weights, 0.0) == 1
    assert version_at(weights, 0.8999) == 1
    assert version_at(weights, 0.9) == 2
    assert version_at(weights, 0.99999) == 2
    assert version_at(((1, 0.0), (2, 5.0)), 0.0) == 2


def test_random_split_follows_the_weights():
    route = Route.split({1: 90, 2: 10})
    rng = random.Random(0)
    counts = Counter(route.choose(None, rng) for _ in range(20_000))
    assert abs(counts[2] / 20_000 - 0.10) < 0.01


def test_sticky_split_gives_a_user_one_version_and_spreads_users():
    route = Route.split({1: 90, 2: 10}, sticky=True)
    rng = random.Random(0)
    for user in range(50):
        assert len({route.choose(user, rng) for _ in range(20)}) == 1
    share = sum(route.choose(u, rng) == 2 for u in range(20_000)) / 20_000
    assert abs(share - 0.10) < 0.01
    assert user_point(42) == user_point(42) and 0 <= user_point(42) < 1


def test_sticky_without_a_user_falls_back_to_random():
    route = Route.split({1: 50, 2: 50}, sticky=True)
    assert {route.choose(None, random.Random(s)) for s in range(20)} == {1, 2}


def test_pinned_and_default_routes():
    assert Route.pinned(3).choose(7, random.Random()) == 3
    assert Route.pinned(3).versions == (3,)
    assert Route().choose(7, random.Random()) is None


@pytest.mark.parametrize(
    "weights", [{1: -1, 2: 5}, {1: 0, 2: 0}, {0: 1}], ids=["negative", "zero-sum", "version-0"]
)
def test_bad_routes_are_refused(weights):
    with pytest.raises(ValueError):
        Route.split(weights)


def test_parse_split():
    assert parse_split("1:90, 2:10") == {1: 90.0, 2: 10.0}
    for bad in ("1", "1:x", "a:5", ""):
        with pytest.raises(ValueError, match="VERSION:WEIGHT"):
            parse_split(bad)


def test_round_robin_cycles_and_skips_endpoints_marked_down():
    clock = FakeClock()
    robin = RoundRobin(["a", "b", "c"], clock)
    assert [robin.next() for _ in range(4)] == ["a", "b", "c", "a"]
    robin.mark_down("c", 1.0)
    assert [robin.next() for _ in range(4)] == ["b", "a", "b", "a"]
    robin.mark_down("a", 1.0)
    robin.mark_down("b", 1.0)
    assert robin.next() in {"a", "b", "c"}  # all down: keep trying them in turn
    clock.now += 1.5
    assert sorted(robin.next() for _ in range(3)) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        RoundRobin([])


def test_a_retry_avoids_the_endpoint_its_last_attempt_failed_on():
    clock = FakeClock()
    robin = RoundRobin(["a", "b", "c"], clock)
    assert [robin.next(avoid="a") for _ in range(3)] == ["b", "c", "b"]
    robin.mark_down("b", 1.0)
    assert robin.next(avoid="c") == "a"
    assert RoundRobin(["a"], clock).next(avoid="a") == "a"  # the only one
    robin.mark_down("a", 1.0)
    assert robin.next(avoid="c") == "c"  # the only one up


def test_split_urls():
    assert split_urls("a:1, http://b:2/") == ["a:1", "b:2"]
    assert split_urls("dns:///triton-grpc.shop.svc:8001") == ["dns:///triton-grpc.shop.svc:8001"]
    assert split_urls(["a:1"]) == ["a:1"]
    with pytest.raises(ValueError):
        split_urls(" , ")


# -- errors and retries ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.UNAVAILABLE", UnavailableError),
        ("StatusCode.INVALID_ARGUMENT", InvalidArgumentError),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError),
        ("StatusCode.NOT_FOUND", NotFoundError),
        ("StatusCode.INTERNAL", ServerError),
        ("400", InvalidArgumentError),
        ("404", NotFoundError),
        ("503", UnavailableError),
        ("500", ServerError),
        (None, ServerError),
    ],
)
def test_statuses_map_to_error_classes(status, kind):
    error = error_for_status(status, "boom\n  two lines", "host:1")
    assert type(error) is kind
    assert str(error) == "host:1: boom two lines"
    assert error.retryable == (kind is UnavailableError)


@pytest.mark.parametrize("status", ["StatusCode.INTERNAL", "500"])
def test_a_dead_stage_stub_is_retryable(status):
    message = "in ensemble 'search', Stub process 'top_k_0_0' is not healthy."
    error = error_for_status(status, message, "host:1")
    assert type(error) is UnavailableError and error.retryable
    assert type(error_for_status(status, "in ensemble 'search', boom")) is ServerError


SHED = (
    "[request id: <id_unknown>] Exceeds maximum queue size",
    "in ensemble 'search', [request id: <id_unknown>] Exceeds maximum queue size",
    "in ensemble 'search', Request timeout expired",
)


@pytest.mark.parametrize("status", ["StatusCode.UNAVAILABLE", "503"])
@pytest.mark.parametrize("message", SHED)
def test_a_request_the_server_shed_is_an_overload(status, message):
    error = error_for_status(status, message, "host:1")
    assert type(error) is OverloadedError and isinstance(error, UnavailableError)
    assert error.retryable and not error.endpoint_down
    assert error.exit_code == 7 and error.message == f"server overloaded: {message}"
    assert type(error_for_status("StatusCode.UNAVAILABLE", "Socket closed")) is UnavailableError
    assert type(error_for_status("500", message)) is ServerError  # only as UNAVAILABLE


def test_an_overload_is_retried_and_kept_when_the_deadline_is_near():
    clock = FakeClock()
    call = attempts(timeout=0.3, policy=RetryPolicy(initial_backoff=1.0), clock=clock, rand=0.1)
    call.start()
    assert call.after_failure(OverloadedError("server overloaded: x", "h:1")) == pytest.approx(0.1)
    call.start()
    call = attempts(timeout=0.3, policy=RetryPolicy(initial_backoff=1.0), clock=clock, rand=0.9)
    call.start()
    with pytest.raises(OverloadedError, match="gave up after 1 attempts, deadline near"):
        call.after_failure(OverloadedError("server overloaded: x", "h:1"))


def test_an_overload_exits_with_its_own_code(monkeypatch, capsys):
    def shed(args):
        raise OverloadedError("server overloaded: Exceeds maximum queue size", "h:1")

    monkeypatch.setitem(cli.COMMANDS, "health", shed)
    assert cli.main(["health"]) == 7
    assert capsys.readouterr().err == "error: h:1: server overloaded: Exceeds maximum queue size\n"


def test_failed_attempts_are_counted_by_kind():
    counts = FailureCounts()
    for error in (OverloadedError("x"), OverloadedError("y"), UnavailableError("z")):
        counts.record(error)
    assert counts.overloaded == 2
    assert counts.snapshot() == {"OverloadedError": 2, "UnavailableError": 1}


def test_a_call_carries_its_seconds_as_the_request_timeout():
    assert request_timeout_us(1.5) == 1_500_000
    assert request_timeout_us(0.0) == 1


def test_backoff_grows_exponentially_with_full_jitter():
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    assert [policy.backoff(n, 0.999999) for n in (1, 2, 3, 4, 5)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0], rel=1e-5
    )
    assert policy.backoff(3, 0.0) == 0.0
    assert policy.backoff(3, 0.5) == pytest.approx(0.2)


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def attempts(timeout=10.0, policy=None, budget=None, clock=None, rand=0.5):
    clock = clock or FakeClock()
    budget = budget or RetryBudget(clock=clock)
    return Attempts("search", timeout, policy or RetryPolicy(), budget, FixedRandom(rand), clock)


def test_unavailable_is_retried_until_max_attempts():
    call = attempts(policy=RetryPolicy(max_attempts=3))
    for _ in range(2):
        call.start()
        assert call.after_failure(UnavailableError("refused", "h:1")) >= 0
    call.start()
    with pytest.raises(UnavailableError, match="gave up after 3 attempts") as caught:
        call.after_failure(UnavailableError("refused", "h:1"))
    assert caught.value.attempts == 3


def test_every_failed_attempt_is_reported():
    seen = []
    clock = FakeClock()
    call = Attempts(
        "search",
        10.0,
        RetryPolicy(max_attempts=2),
        RetryBudget(clock=clock),
        FixedRandom(0.5),
        clock,
        on_failure=seen.append,
    )
    errors = [UnavailableError("refused", "h:1"), UnavailableError("refused again", "h:1")]
    call.start()
    call.after_failure(errors[0])
    call.start()
    with pytest.raises(UnavailableError):
        call.after_failure(errors[1])
    assert seen == errors


@pytest.mark.parametrize("error", [InvalidArgumentError("bad k"), NotFoundError("no model")])
def test_other_errors_are_not_retried(error):
    call = attempts()
    call.start()
    with pytest.raises(type(error)) as caught:
        call.after_failure(error)
    assert caught.value.attempts == 1


def test_no_wait_runs_past_the_deadline():
    clock = FakeClock()
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=1.0)
    call = attempts(timeout=0.3, policy=policy, clock=clock, rand=0.9)
    call.start()
    with pytest.raises(DeadlineExceededError, match="deadline of 0.3 s .*last error: h:1: down"):
        call.after_failure(UnavailableError("down", "h:1"))  # a 0.9 s wait: too long
    call = attempts(timeout=0.3, policy=policy, clock=clock, rand=0.1)
    call.start()
    assert call.after_failure(UnavailableError("down", "h:1")) == pytest.approx(0.1)
    clock.now += 1
    with pytest.raises(DeadlineExceededError, match=r"\(1 attempt\(s\)\)$"):
        call.start()


def test_an_attempt_timing_out_ends_the_call():
    call = attempts()
    call.start()
    with pytest.raises(DeadlineExceededError, match="the last one to h:1"):
        call.after_failure(DeadlineExceededError("no answer", "h:1"))


def test_retry_budget_is_a_share_of_recent_calls():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.1, window=10.0, clock=clock)
    assert budget.try_spend()  # the minimum: 0.1/s over 10 s = 1 retry
    assert not budget.try_spend()
    for _ in range(4):
        budget.record_call()
    assert budget.try_spend() and budget.try_spend()  # 1 + 0.5 * 4 = 3 in the window
    assert not budget.try_spend()
    clock.now += 10.5  # all of it left the window
    assert budget.try_spend() and not budget.try_spend()


def test_a_spent_budget_stops_retries():
    clock = FakeClock()
    call = attempts(budget=RetryBudget(ratio=0.0, min_per_second=0.0, clock=clock), clock=clock)
    call.start()
    with pytest.raises(UnavailableError, match="retry budget spent"):
        call.after_failure(UnavailableError("down"))


def answer(limit: AdaptiveInFlightLimit, clock: FakeClock, seconds: float, busy: int = 0) -> None:
    """One attempt answered in `seconds`, while `busy` others are in flight."""
    limit.in_flight = busy
    with limit.slot():
        clock.now += seconds
    limit.in_flight = 0


def test_an_adaptive_limit_grows_by_one_a_round_of_fast_answers_while_it_is_used():
    clock = FakeClock()
    limit = AdaptiveInFlightLimit(10, target=0.1, clock=clock)
    for _ in range(10):
        answer(limit, clock, 0.05, busy=5)  # over half of it in use
    assert 10.9 < limit.limit < 11.0  # ten answers of 1/limit each
    for _ in range(500):
        answer(limit, clock, 0.05, busy=int(limit.limit) - 1)
    # additive: limit² grows by about 2 an answer
    assert limit.limit == pytest.approx((10**2 + 2 * 510) ** 0.5, rel=0.02)
    grown = limit.limit
    for _ in range(100):
        answer(limit, clock, 0.05)  # one call in flight: the limit is not what holds it
    assert limit.limit == grown


def test_an_adaptive_limit_is_cut_once_a_target_by_slow_answers_and_rejections():
    clock = FakeClock()
    limit = AdaptiveInFlightLimit(20, target=0.1, clock=clock)
    answer(limit, clock, 0.2)  # slower than the target
    assert limit.limit == pytest.approx(18.0) and limit.cuts == 1
    answer(limit, clock, 0.05)  # one burst of slow answers is one signal: no second cut
    assert limit.limit == pytest.approx(18.0)  # nor growth: 1 of 18 in use
    with pytest.raises(OverloadedError), limit.slot():
        raise OverloadedError("server overloaded")
    assert limit.cuts == 1
    clock.now += 0.1
    with pytest.raises(DeadlineExceededError), limit.slot():
        raise DeadlineExceededError("no answer within 1 s")
    assert limit.limit == pytest.approx(18 * 0.9) and limit.cuts == 2
    with pytest.raises(InvalidArgumentError), limit.slot():  # not a sign of load
        raise InvalidArgumentError("bad k")
    assert limit.cuts == 2 and limit.in_flight == 0


def test_an_adaptive_limit_stays_within_its_bounds_and_refuses_at_its_floor():
    clock = FakeClock()
    limit = AdaptiveInFlightLimit(2, target=0.1, minimum=2, maximum=3, clock=clock)
    for _ in range(5):
        clock.now += 1
        answer(limit, clock, 1.0)
    assert limit.limit == 2
    with limit.slot(), limit.slot(), pytest.raises(InFlightLimitError, match="limit of 2"):
        limit.slot().__enter__()
    for _ in range(100):
        answer(limit, clock, 0.01, busy=1)
    assert limit.limit == 3
    with pytest.raises(ValueError, match="minimum <= initial <= maximum"):
        AdaptiveInFlightLimit(1, target=0.1, minimum=2)
    with pytest.raises(ValueError, match="target > 0"):
        AdaptiveInFlightLimit(4, target=0.0)


# -- contract --------------------------------------------------------------------


def served_search(**changes) -> contract.ModelMetadata:
    expected = contract.EXPECTED[names.SEARCH]
    return contract.ModelMetadata(
        "search",
        changes.get("versions", (1, 2)),
        changes.get("inputs", expected.inputs),
        expected.outputs,
    )


def test_expected_contract_follows_the_builders_specs():
    search = contract.EXPECTED[names.SEARCH]
    assert [str(t) for t in search.inputs] == [
        "query BYTES [-1, 1]",
        "user_id INT64 [-1, 1]",
        "k INT32 [-1, 1]",
    ]
    assert [str(t) for t in search.outputs] == [
        "item_ids INT64 [-1, -1]",
        "scores FP32 [-1, -1]",
        "truncated BOOL [-1, 1]",
    ]


def test_contract_problems_name_each_difference():
    expected = contract.EXPECTED[names.SEARCH]
    assert contract.contract_problems(expected, served_search()) == []
    inputs = (
        contract.Tensor("query", "BYTES", (-1, 1)),
        contract.Tensor("k", "INT64", (-1, 1)),
        contract.Tensor("extra", "FP32", (-1, 4)),
    )
    problems = contract.contract_problems(expected, served_search(inputs=inputs), versions=(3,))
    assert problems == [  # user_id is optional: a catalog-only search does not take it
        "input 'k' is served as k INT64 [-1, 1], expected k INT32 [-1, 1]",
        "unexpected input extra FP32 [-1, 4]",
        "version(s) 3 not loaded (loaded: 1, 2)",
    ]


def test_parse_metadata_takes_grpc_and_http_forms():
    grpc_form = {
        "name": "m",
        "versions": ["2", "1"],
        "inputs": [{"name": "a", "datatype": "FP32", "shape": ["-1", "3"]}],
    }
    http_form = {
        "name": "m",
        "versions": ["1", "2"],
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert contract.parse_metadata(grpc_form) == contract.parse_metadata(http_form)
    assert contract.parse_metadata(grpc_form).versions == (1, 2)


def test_check_raises_a_contract_error(tmp_path):
    from clients import Client

    config = Client("h:1", routes={"search": Route.pinned(3)})
    with pytest.raises(ContractError, match=r"h:1: model 'search': version\(s\) 3 not loaded"):
        config.check("h:1", "search", served_search(), releases=(1, 2))
    assert config.check("h:1", "search", served_search(), releases=(2, 3)) == (2, 3)


def test_served_releases_come_from_ready_release_ensembles():
    rows = [
        {"name": "search", "version": "2", "state": "READY"},
        {"name": "search_v1", "version": "1", "state": "READY"},
        {"name": "search_v2", "version": "2", "state": "READY"},
        {"name": "search_v3", "version": "3", "state": "UNAVAILABLE"},
        {"name": "recommend_v1", "version": "1", "state": "READY"},
        {"name": "search_ranker", "version": "1", "state": "READY"},
    ]
    assert contract.served_releases("search", rows) == (1, 2)
    assert contract.served_releases("recommend", rows) == (1,)


def test_calls_go_to_the_newest_release_or_the_routed_one():
    from clients import Client

    config = Client("h:1", routes={"recommend": Route.pinned(1)})
    assert config.pipeline_model("search", None, None) == "search"
    assert config.pipeline_model("search", None, 2) == "search_v2"
    assert config.pipeline_model("recommend", 5, None) == "recommend_v1"


def test_requests_are_batches_of_one():
    inputs = contract.search_inputs("red shoes", 42, 5)
    assert inputs["query"].tolist() == [[b"red shoes"]] and inputs["query"].dtype == object
    assert inputs["user_id"].dtype == np.int64 and inputs["k"].dtype == np.int32
    assert "user_id" not in contract.search_inputs(b"x", None, 5)
    assert contract.recommend_inputs(7, 3)["user_id"].tolist() == [[7]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: contract.search_inputs(None, None, 5), "'query' must be text"),
        (lambda: contract.search_inputs("x", "42", 5), "'user_id' must be an integer"),
        (lambda: contract.search_inputs("x", None, 2**40), "'k' is out of range for int32"),
        (lambda: contract.recommend_inputs(True, 5), "'user_id' must be an integer"),
    ],
)
def test_bad_request_values_fail_before_sending(call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call()


# -- results and tables -----------------------------------------------------------


def response(ids, scores, truncated=False):
    outputs = {
        "item_ids": np.array([ids], np.int64),
        "scores": np.array([scores], np.float32),
        "truncated": np.array([[truncated]]),
    }
    return Response("search", 2, outputs, "h:1", attempts=3)


def test_results_are_typed_and_take_catalog_fields(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,title,category,brand,price\n5,Red shoe,Shoes,Acme,49.5\n6,Cap,,,\n")
    result = make_result(response([5, 6, 7], [0.9, 0.5, 0.1], True), Catalog.load(path))
    assert result.version == 2 and result.truncated and result.attempts == 3
    first, second, unknown = result.items
    assert (first.item_id, first.title, first.category, first.brand, first.price) == (
        5,
        "Red shoe",
        "Shoes",
        "Acme",
        49.5,
    )
    assert first.score == pytest.approx(0.9)
    assert second.title == "Cap" and second.category is None and second.price is None
    assert unknown.item_id == 7 and unknown.title is None
    # equality ignores where and how the result was asked
    plain = make_result(response([5], [0.9]))
    assert plain == make_result(Response("search", 2, response([5], [0.9]).outputs, "other:2"))
    assert plain.to_dict()["items"][0] == {
        "item_id": 5,
        "score": pytest.approx(0.9),
        "title": None,
        "category": None,
        "brand": None,
        "price": None,
    }


def test_catalog_needs_item_ids(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,title\n1,x\n")
    with pytest.raises(ValueError, match="no item_id column"):
        Catalog.load(path)


def test_table_aligns_numbers_right_and_truncates_text():
    text = formatting.format_table(
        ["name", "count", "score"],
        [["short", 5, 0.5], ["x" * 80, 12345, None]],
        {"score": ".2f"},
    )
    lines = text.splitlines()
    assert lines[0].split() == ["name", "count", "score"]
    assert lines[2].endswith("    5   0.50")
    assert lines[3].startswith("x" * 45 + "...") and "12345" in lines[3]
    assert len({len(line) for line in lines[:3]}) == 1


def test_result_table_shows_version_catalog_fields_and_truncation(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,title,category,brand,price\n5,Red shoe,Shoes,Acme,49.5\n")
    result = make_result(response([5, 6], [0.91234, 0.5], True), Catalog.load(path))
    lines = formatting.result_table(result).splitlines()
    assert (
        lines[0]
        == "search: 2 items from release 2 at h:1 (truncated: fewer items exist than asked for)"
    )
    assert lines[1].split() == ["#", "item_id", "title", "category", "brand", "price", "score"]
    assert lines[3].split() == ["1", "5", "Red", "shoe", "Shoes", "Acme", "49.50", "0.9123"]
    plain = formatting.result_table(make_result(response([5], [0.5])))
    assert plain.splitlines()[1].split() == ["#", "item_id", "score"]


# -- batch and CLI options -----------------------------------------------------------


def test_batch_lines_parse_to_requests():
    assert batch.parse_line("search", "red shoes\n") == {"query": "red shoes"}
    assert batch.parse_line("search", "red shoes\t42\n") == {"query": "red shoes", "user_id": 42}
    assert batch.parse_line("recommend", " 42 \n") == {"user_id": 42}
    with pytest.raises(InvalidArgumentError, match="not a user id"):
        batch.parse_line("recommend", "abc")
    with pytest.raises(InvalidArgumentError, match="after the tab"):
        batch.parse_line("search", "shoes\tabc")
    assert batch.Progress(50, 100, 2, 2.0).line() == "scored 50/100 (2 errors) in 2.0 s, 25/s"
    shed = batch.Progress(50, 100, 2, 2.0, overloaded=1).line()
    assert shed == "scored 50/100 (2 errors, 1 overloaded) in 2.0 s, 25/s"


def test_cli_options_build_routes():
    parser = cli.build_parser()
    args = parser.parse_args(["search", "x", "--split", "1:90,2:10", "--sticky"])
    options = cli.client_options(args, "search")
    assert options["urls"] == "localhost:8001" and options["protocol"] == "grpc"
    assert options["routes"]["search"] == Route(((1, 90.0), (2, 10.0)), sticky=True)
    args = parser.parse_args(
        ["recommend", "--user", "1", "--model-version", "2", "--protocol", "http"]
    )
    options = cli.client_options(args, "recommend")
    assert options["routes"] == {"recommend": Route.pinned(2)}
    assert options["urls"] == "localhost:8000"
    for bad in (["--model-version", "2", "--split", "1:1"], ["--sticky"]):
        with pytest.raises(ValueError):
            cli.client_options(parser.parse_args(["search", "x", *bad]), "search")
