"""The blocking client: `Client("localhost:8001").search("red running shoes", k=10)`.

Its settings, routing, retries and operations are the core's (`clients.core.ClientCore`);
this class gives them blocking transports and runs them (`clients.core.run`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clients import contract
from clients.core import ClientCore, run
from clients.results import Response, Result
from clients.transport import TRANSPORTS


class Client(ClientCore):
    """Blocking client of the `search` and `recommend` pipelines (and of any model).

    Thread-safe; keeps its connections open until `close()` (or the `with` block
    ends). Every call raises a `clients.errors.ClientError` subclass on failure.
    """

    transport_kinds = TRANSPORTS

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for transport in self.transports:
            transport.close()

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        """Any model: named input arrays (batch dimension included) -> its outputs."""
        return run(self._infer(model, inputs, version, timeout))

    def search(
        self,
        query: str | bytes,
        user_id: int | None = None,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Top `k` items for a query (and the user, when given), best first."""
        return run(self._search(query, user_id, k, version, timeout))

    def recommend(
        self,
        user_id: int,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Top `k` items for a user, best first (unknown users get popular items)."""
        return run(self._recommend(user_id, k, version, timeout))

    def health(self, timeout: float | None = None) -> list[dict]:
        """Liveness and readiness of every endpoint (one attempt each, no retries)."""
        return run(self._health(timeout))

    def models(self, timeout: float | None = None) -> list[dict]:
        """The repository index of the next endpoint: every model version, ready or not."""
        return run(self._models(timeout))

    def verify(
        self, models: Sequence[str] = contract.PIPELINES, timeout: float | None = None
    ) -> dict[str, tuple[int, ...]]:
        """Check that the endpoints serve the pipelines `models` with the expected inputs and
        outputs, and the releases the routes name; return each pipeline's served releases.
        Call it at start-up. Endpoints that do not answer are skipped, unless none does."""
        return run(self._verify(models, timeout))
