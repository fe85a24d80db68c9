"""The client core that `Client` (blocking) and `AsyncClient` (asyncio) share.

`ClientCore` holds the settings (endpoints, protocol, deadline, retry policy and budget,
canary routes and catalog, user-id key), the pure steps around a call (which version, which
request, which result) and every operation (`_infer`, `_search`, `_recommend`, `_health`,
`_models`, `_verify`, with their retries) written once, as generators that do no I/O: they
yield what they need done, a `Call` of a transport method or a `Sleep`, and are sent back
its result (or thrown its error). `run` carries the effects out with blocking transports,
`run_async` with asyncio ones, so the two clients differ only in their transports and in
those two loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from builders import names, pseudonyms
from builders.pipelines import release_model
from clients import contract
from clients.errors import (
    ClientError,
    ContractError,
    DeadlineExceededError,
    NotFoundError,
    UnavailableError,
)
from clients.results import Catalog, Response, Result, make_result
from clients.retry import Attempts, FailureCounts, InFlightLimit, RetryBudget, RetryPolicy
from clients.routing import RoundRobin, Route
from clients.tls import TlsConfig

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
# After a connection failure, round-robin skips the endpoint this long (unless all are down).
DOWN_SECONDS = 1.0
PROTOCOLS = tuple(DEFAULT_PORTS)


@dataclass(frozen=True)
class Call:
    """Call a transport's `method` (blocking or a coroutine function) with `args`."""

    method: Callable
    args: tuple = ()


@dataclass(frozen=True)
class Sleep:
    seconds: float


#: An operation of the core: yields `Call`s and `Sleep`s, returns its result.
Operation = Generator[Call | Sleep, Any, Any]


def run(operation: Operation) -> Any:
    """Carry out `operation` with blocking transports; its result, or the error it raises."""
    try:
        effect = next(operation)
        while True:
            value, error = None, None
            try:
                if isinstance(effect, Sleep):
                    time.sleep(effect.seconds)
                else:
                    value = effect.method(*effect.args)
            except Exception as err:  # noqa: BLE001 - the operation decides what it handles
                error = err
            effect = operation.send(value) if error is None else operation.throw(error)
    except StopIteration as done:
        return done.value


async def run_async(operation: Operation) -> Any:
    """`run` for asyncio transports: each `Call` is awaited, each `Sleep` is asyncio's."""
    try:
        effect = next(operation)
        while True:
            value, error = None, None
            try:
                if isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                else:
                    value = await effect.method(*effect.args)
            except Exception as err:  # noqa: BLE001 - the operation decides what it handles
                error = err
            effect = operation.send(value) if error is None else operation.throw(error)
    except StopIteration as done:
        return done.value


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """Endpoints from `"a:8001,b:8001"` or a list. `http://` and `https://` are dropped;
    gRPC targets such as `dns:///name:8001` stay as they are."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    endpoints = [
        u.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        for u in items
        if u.strip()
    ]
    if not endpoints:
        raise ValueError("at least one endpoint (host:port) is needed")
    return endpoints


def not_served(model: str, error: NotFoundError) -> ContractError:
    return ContractError(f"model {model!r} is not served: {error.message}", error.endpoint)


def unreachable(error: ClientError) -> dict:
    """The health row of an endpoint that did not answer."""
    return {"live": False, "ready": False, "server_version": "", "error": str(error)}


class ClientCore:
    """Settings, pure call logic and the operations shared by `Client` and `AsyncClient`.

    * `urls`: one endpoint or several (round-robin; a retry goes to the next one).
    * `timeout`: each call's default deadline in seconds, all attempts included.
    * `routes`: per model, a `Route` (pin a version or split between versions);
      models without one go to the server's latest version.
    * `catalog`: a `Catalog` or a CSV/Parquet path, to fill in the items' fields.
    * `seed`: seeds the random canary split and the retry jitter.
    * `tls`: a `TlsConfig` to call over TLS: gRPC to Triton itself, HTTP to a TLS terminator
      in front of it (the Gateway; Triton's HTTP endpoint has no TLS of its own).
    * `on_failed_attempt`: called with the error of every failed attempt, retried or final
      (to count them, e.g. next to the server's own failure counters).
    * `user_key`: the key of a build made with `--pseudonymise-users`
      (`builders.pseudonyms.read_key`); user ids are then hashed with it before they leave
      the client, canary routing included.
    * `max_in_flight`: at most this many attempts in flight at once (`InFlightLimit`), or
      a limit of its own (an `AdaptiveInFlightLimit`, or one that several clients share);
      a call whose attempt would go beyond it fails at once with `InFlightLimitError`, not
      retried. None (the default): no limit.

    `failures` counts the failed attempts of every call by kind of error; `overloaded`
    is how many the server shed (`OverloadedError`; `InFlightLimitError` counts apart). A
    subclass names its transport class per protocol (`transport_kinds`); the core makes one
    per endpoint.
    """

    transport_kinds: Mapping[str, type] = {}

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        protocol: str = "grpc",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        routes: Mapping[str, Route] | None = None,
        catalog: Catalog | str | Path | None = None,
        seed: int | None = None,
        on_failed_attempt: Callable[[ClientError], None] | None = None,
        user_key: bytes | None = None,
        tls: TlsConfig | None = None,
        max_in_flight: int | InFlightLimit | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if tls is not None and tls.server_name and protocol != "grpc":
            raise ValueError("a TLS server name (--tls-server-name) works over gRPC only")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.urls = split_urls(urls)
        self.protocol = protocol
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.budget = budget or RetryBudget()
        self.routes = dict(routes or {})
        self.catalog = Catalog.load(catalog) if isinstance(catalog, str | Path) else catalog
        self.rng = random.Random(seed)
        self.on_failed_attempt = on_failed_attempt
        self.failures = FailureCounts()
        self.tls = tls
        self.in_flight = (
            InFlightLimit(max_in_flight) if isinstance(max_in_flight, int) else max_in_flight
        )
        self.user_key = None if user_key is None else pseudonyms.check_key(user_key)
        if protocol not in self.transport_kinds:
            raise TypeError(f"{type(self).__name__} has no transports: use Client or AsyncClient")
        self.transports = [
            self.transport_kinds[protocol](url, **self.transport_options) for url in self.urls
        ]
        self._endpoints = RoundRobin(self.transports)

    @property
    def transport_options(self) -> dict:
        """Keyword arguments of every transport (TLS, when set)."""
        return {"tls": self.tls} if self.tls is not None else {}

    @property
    def overloaded(self) -> int:
        """Attempts the server shed (`OverloadedError`), over every call so far."""
        return self.failures.overloaded

    def _failed_attempt(self, error: ClientError) -> None:
        self.failures.record(error)
        if self.on_failed_attempt is not None:
            self.on_failed_attempt(error)

    def user(self, user_id: int | None) -> int | None:
        """The user id a call sends: its pseudonym when the client has a `user_key`."""
        if user_id is None or self.user_key is None:
            return user_id
        (raw,) = contract.scalar_tensor("user_id", user_id, np.int64)[0]  # refuses a non-INT64 id
        return pseudonyms.pseudonym(raw, self.user_key)

    def version_for(self, model: str, user_id: int | None, version: int | None) -> int | None:
        """The version a call asks for: `version` if given, else the model's route."""
        if version is not None:
            return version
        route = self.routes.get(model)
        return route.choose(user_id, self.rng) if route else None

    def pipeline_model(self, kind: str, user_id: int | None, release: int | None) -> str:
        """The ensemble a pipeline call goes to: `kind` itself (the newest release) unless
        `release` or the route picks one, then that release's `<kind>_v<R>`."""
        chosen = self.version_for(kind, user_id, release)
        return kind if chosen is None else release_model(kind, chosen)

    def attempts(self, what: str, timeout: float | None) -> Attempts:
        return Attempts(
            what,
            timeout or self.timeout,
            self.retry,
            self.budget,
            self.rng,
            on_failure=self._failed_attempt,
        )

    def result(self, kind: str, response: Response) -> Result:
        """A pipeline's answer; `model` is the pipeline and `version` the release."""
        return make_result(dataclasses.replace(response, model=kind), self.catalog)

    def check(
        self, endpoint: str, model: str, served: contract.ModelMetadata, releases: tuple[int, ...]
    ) -> tuple[int, ...]:
        """The served releases of pipeline `model`; `ContractError` when `served` is not
        what the client expects (tensors, or releases its route names)."""
        route = self.routes.get(model)
        problems = contract.contract_problems(
            contract.EXPECTED[model],
            dataclasses.replace(served, versions=releases),
            route.versions if route else (),
        )
        if problems:
            raise ContractError(f"model {model!r}: " + "; ".join(problems), endpoint)
        return releases

    # -- operations: generators of `Call`s and `Sleep`s (see the module's docstring) --

    def _retrying(self, what: str, timeout: float | None, method: str, *args) -> Operation:
        """(result, attempts) of the transports' `method(*args, seconds)`, tried on the next
        endpoint round-robin and again, after a backoff, on a retryable error, within the
        call's deadline."""
        attempts, failed_on = self.attempts(what, timeout), None
        while True:
            seconds = attempts.start()
            transport = self._endpoints.next(avoid=failed_on)
            try:
                with self.in_flight.slot() if self.in_flight else contextlib.nullcontext():
                    result = yield Call(getattr(transport, method), (*args, seconds))
                return result, attempts.count
            except ClientError as error:
                failed_on = transport
                if error.endpoint_down:
                    self._endpoints.mark_down(transport, DOWN_SECONDS)
                yield Sleep(attempts.after_failure(error))

    def _infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int | None,
        timeout: float | None,
    ) -> Operation:
        response, count = yield from self._retrying(model, timeout, "infer", model, version, inputs)
        return dataclasses.replace(response, attempts=count)

    def _search(
        self,
        query: str | bytes,
        user_id: int | None,
        k: int,
        version: int | None,
        timeout: float | None,
    ) -> Operation:
        user_id = self.user(user_id)
        inputs = contract.search_inputs(query, user_id, k)
        model = self.pipeline_model(names.SEARCH, user_id, version)
        return self.result(names.SEARCH, (yield from self._infer(model, inputs, None, timeout)))

    def _recommend(
        self, user_id: int, k: int, version: int | None, timeout: float | None
    ) -> Operation:
        user_id = self.user(user_id)
        inputs = contract.recommend_inputs(user_id, k)
        model = self.pipeline_model(names.RECOMMEND, user_id, version)
        return self.result(names.RECOMMEND, (yield from self._infer(model, inputs, None, timeout)))

    def _health(self, timeout: float | None) -> Operation:
        rows = []
        for transport in self.transports:
            try:
                state = yield Call(transport.health, (timeout or self.timeout,))
            except ClientError as error:
                state = unreachable(error)
            rows.append({"endpoint": transport.url, **state})
        return rows

    def _models(self, timeout: float | None) -> Operation:
        states, _ = yield from self._retrying("models", timeout, "models")
        return states

    def _verify(self, models: Sequence[str], timeout: float | None) -> Operation:
        versions, down = {}, []
        for transport in self.transports:
            try:
                index = yield Call(transport.models, (timeout or self.timeout,))
                for model in models:
                    try:
                        served = yield Call(transport.metadata, (model, timeout or self.timeout))
                    except NotFoundError as error:
                        raise not_served(model, error) from None
                    releases = contract.served_releases(model, index)
                    versions[model] = self.check(transport.url, model, served, releases)
            except (UnavailableError, DeadlineExceededError) as error:
                down.append(error)
        if len(down) == len(self.transports):
            raise down[0]
        return versions
