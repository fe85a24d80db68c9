"""Which model version a call asks for, and which endpoint it goes to.

A `Route` pins one version or splits calls by weight between versions (a
canary). Sticky routes hash the user id to a point in [0, 1), so a user always
lands on the same version; other calls draw the point at random.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """Versions and their weights; no versions means the server picks (its latest)."""

    weights: tuple[tuple[int, float], ...] = ()
    sticky: bool = False

    def __post_init__(self) -> None:
        versions = [v for v, _ in self.weights]
        if len(set(versions)) != len(versions):
            raise ValueError(f"a version appears twice in {self.weights}")
        if any(v < 1 for v in versions):
            raise ValueError("model versions are >= 1")
        if any(w < 0 for _, w in self.weights) or (
            self.weights and sum(w for _, w in self.weights) <= 0
        ):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")

    @classmethod
    def pinned(cls, version: int) -> Route:
        return cls(((version, 1.0),))

    @classmethod
    def split(cls, weights: Mapping[int, float], sticky: bool = False) -> Route:
        """`Route.split({1: 90, 2: 10})`: 90 % of calls to version 1, 10 % to version 2."""
        return cls(tuple(sorted(weights.items())), sticky)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(v for v, w in self.weights if w > 0)

    def choose(self, user_id: int | None, rng: random.Random) -> int | None:
        """The version for one call (None: let the server pick)."""
        if not self.weights:
            return None
        if self.sticky and user_id is not None:
            return version_at(self.weights, user_point(user_id))
        return version_at(self.weights, rng.random())


def user_point(user_id: int) -> float:
    """A stable point in [0, 1) for a user id (the same in every process)."""
    digest = hashlib.blake2b(str(int(user_id)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def version_at(weights: Sequence[tuple[int, float]], point: float) -> int:
    """The version whose share of [0, 1) holds `point` (shares in the order given)."""
    total = sum(w for _, w in weights)
    edge = 0.0
    for version, weight in weights:
        edge += weight / total
        if point < edge and weight > 0:
            return version
    return next(v for v, w in reversed(weights) if w > 0)


def parse_split(text: str) -> dict[int, float]:
    """`"1:90,2:10"` -> {1: 90.0, 2: 10.0}."""
    weights = {}
    for part in text.split(","):
        version, _, weight = part.strip().partition(":")
        try:
            weights[int(version)] = float(weight)
        except ValueError:
            raise ValueError(f"expected VERSION:WEIGHT[,VERSION:WEIGHT...], got {text!r}") from None
    return weights


class RoundRobin:
    """Cycles through items, skipping those marked down until their pause ends (unless
    all are down) and the one to `avoid` (unless no other is up); safe to share between
    threads."""

    def __init__(self, items: Sequence, clock: Callable[[], float] = time.monotonic) -> None:
        if not items:
            raise ValueError("at least one endpoint is needed")
        self.items = list(items)
        self._down_until = [0.0] * len(self.items)
        self._next = 0
        self._clock = clock
        self._lock = threading.Lock()

    def next(self, avoid=None):
        """The next item; `avoid` (the one a retry's last attempt failed on) only when no
        other is up."""
        with self._lock:
            now, count = self._clock(), len(self.items)
            order = [(self._next + offset) % count for offset in range(count)]
            up = [i for i in order if self._down_until[i] <= now] or order
            index = next((i for i in up if self.items[i] is not avoid), up[0])
            self._next = index + 1
            return self.items[index]

    def mark_down(self, item, seconds: float) -> None:
        """Skip `item` for `seconds` (it refused a connection, say)."""
        with self._lock:
            self._down_until[self.items.index(item)] = self._clock() + seconds
