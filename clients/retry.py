"""Retries: which errors, how long to wait, how many, and within which deadline.

Only errors marked `retryable` (UNAVAILABLE, a refused or dropped connection, a
request the server shed because it is overloaded) are retried, with exponential
backoff and full jitter (as gRPC's own retry policy: a wait drawn uniformly below
`initial * multiplier ** n`, capped at `max_backoff`). A `RetryBudget` shared by
all calls of a client keeps retries a bounded share of the traffic, so an outage
or an overload does not multiply the load. Every call has a deadline: the total
time for all its attempts and waits. `FailureCounts` counts a client's failed
attempts by kind, overload rejections apart. An `InFlightLimit` bounds a client's
attempts in flight and fails the rest at once (`InFlightLimitError`, not retried):
admission control before the server, which Triton 2.51 has only stage by stage; an
`AdaptiveInFlightLimit` moves its bound with the latency and the rejections it sees.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from clients.errors import ClientError, DeadlineExceededError, InFlightLimitError, OverloadedError


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries per call (1: no retries)."""

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < self.initial_backoff <= self.max_backoff or self.multiplier < 1:
            raise ValueError("need 0 < initial_backoff <= max_backoff and multiplier >= 1")

    def backoff(self, retry: int, rand: float) -> float:
        """The wait before retry number `retry` (1, 2, ...); `rand` is uniform in [0, 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return rand * ceiling


class RetryBudget:
    """Retries allowed in the last `window` seconds: `min_per_second * window` plus
    `ratio` of the calls made in that window (Finagle's retry budget; its defaults)."""

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio, self.min_per_second, self.window = ratio, min_per_second, window
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        for events in (self._calls, self._retries):
            while events and events[0] <= now - self.window:
                events.popleft()

    def record_call(self) -> None:
        with self._lock:
            now = self._clock()
            self._trim(now)
            self._calls.append(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            allowed = self.min_per_second * self.window + self.ratio * len(self._calls)
            if len(self._retries) >= allowed:
                return False
            self._retries.append(now)
            return True


class InFlightLimit:
    """At most `limit` attempts in flight at once, over every call of a client; thread-safe
    (the asyncio client's calls share its event loop's thread). `slot` refuses an attempt
    beyond the limit at once with `InFlightLimitError` instead of queueing it.

    Sized from the server's capacity: with `throughput` calls a second answered at
    saturation and a p99 SLO, `throughput * SLO / 2` in flight keeps the mean time in the
    server at half the SLO (Little's law), split among the clients that share the server."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self.limit: float = limit
        self.in_flight = 0
        self._lock = threading.Lock()
        self._clock: Callable[[], float] = time.monotonic

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the slots while the block runs."""
        with self._lock:
            if self.in_flight >= int(self.limit):
                raise InFlightLimitError(
                    f"client at its limit of {int(self.limit)} calls in flight"
                )
            self.in_flight += 1
        started = self._clock()
        try:
            yield
        except (OverloadedError, DeadlineExceededError):
            self._observe(None)
            raise
        else:
            self._observe(self._clock() - started)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _observe(self, latency: float | None) -> None:
        """An attempt ended: answered in `latency` seconds, or None: shed or out of time."""


class AdaptiveInFlightLimit(InFlightLimit):
    """An in-flight limit that follows what the servers sustain, as TCP's congestion window
    does (additive increase, multiplicative decrease): an attempt answered within `target`
    seconds raises the limit by 1/limit (about one for each round of answers) while at least
    half of it is in use (a limit the calls do not reach learns nothing, and would only
    grow); a slower answer, an overload rejection or a deadline cuts it to `decrease` of
    itself, at most once every `target` seconds (one burst of slow answers is one signal).
    It stays within [`minimum`, `maximum`].

    Start it where a static limit would be sized (`InFlightLimit`); with a fleet that
    scales, at the fleet's size now. It grows as pods come and shrinks as they go, so it
    need not be sized for `maxReplicas`. `target`: the p99 SLO, so that the answers it
    admits come within it."""

    def __init__(
        self,
        initial: int,
        target: float,
        minimum: int = 1,
        maximum: int = 10_000,
        decrease: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(initial)
        self.initial = initial
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(
                f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}"
            )
        if target <= 0 or not 0 < decrease < 1:
            raise ValueError("need target > 0 and 0 < decrease < 1")
        self.target, self.minimum, self.maximum, self.decrease = target, minimum, maximum, decrease
        self._clock = clock
        self._last_cut = float("-inf")
        #: How many times the limit was cut.
        self.cuts = 0

    def _observe(self, latency: float | None) -> None:
        with self._lock:
            if latency is not None and latency <= self.target:
                if 2 * self.in_flight >= self.limit:  # in use: a fast answer says there is room
                    self.limit = min(self.maximum, self.limit + 1 / self.limit)
                return
            now = self._clock()
            if now - self._last_cut >= self.target:
                self.limit = max(self.minimum, self.limit * self.decrease)
                self._last_cut = now
                self.cuts += 1


class FailureCounts:
    """Failed attempts by kind of error (its class name), for every call of a client;
    thread-safe. `overloaded` is the requests the server shed."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, error: ClientError) -> None:
        with self._lock:
            self._counts[type(error).__name__] += 1

    @property
    def overloaded(self) -> int:
        with self._lock:
            return self._counts[OverloadedError.__name__]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Attempts:
    """One call's attempts: the time left for each, and whether to retry after a failure.

    The sync and async clients run the same loop around it; they differ only in
    how they sleep.
    """

    def __init__(
        self,
        what: str,
        timeout: float,
        policy: RetryPolicy,
        budget: RetryBudget,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[ClientError], None] | None = None,
    ) -> None:
        self.what, self.timeout, self.policy, self.budget = what, timeout, policy, budget
        self._rng, self._clock, self._on_failure = rng, clock, on_failure
        self.deadline = clock() + timeout
        self.count = 0
        budget.record_call()

    def start(self) -> float:
        """Begin the next attempt; return the seconds it may take."""
        remaining = self.deadline - self._clock()
        if remaining <= 0:
            raise self._final(self._expired(None))
        self.count += 1
        return remaining

    def after_failure(self, error: ClientError) -> float:
        """The wait before the next attempt; raises the error when the call should stop."""
        if self._on_failure is not None:
            self._on_failure(error)
        if isinstance(error, DeadlineExceededError):
            raise self._final(self._expired(error))
        if not error.retryable:
            raise self._final(error)
        if self.count >= self.policy.max_attempts:
            raise self._final(_gave_up(error, f"{self.count} attempts"))
        delay = self.policy.backoff(self.count, self._rng.random())
        if self._clock() + delay >= self.deadline:
            if isinstance(error, OverloadedError):  # the server's answer says more
                raise self._final(_gave_up(error, f"{self.count} attempts, deadline near"))
            raise self._final(self._expired(error))
        if not self.budget.try_spend():
            raise self._final(_gave_up(error, f"{self.count} attempts, retry budget spent"))
        return delay

    def _final(self, error: ClientError) -> ClientError:
        error.attempts = self.count
        return error

    def _expired(self, last: ClientError | None) -> DeadlineExceededError:
        message = (
            f"{self.what}: no answer within the deadline of {self.timeout:g} s "
            f"({self.count} attempt(s))"
        )
        if isinstance(last, DeadlineExceededError):
            message += f", the last one to {last.endpoint}" if last.endpoint else ""
        elif last is not None:
            message += f"; last error: {last}"
        return DeadlineExceededError(message)


def _gave_up(error: ClientError, why: str) -> ClientError:
    return type(error)(f"{error.message} (gave up after {why})", error.endpoint)
