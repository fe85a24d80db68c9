"""The asyncio client: `async with AsyncClient(url) as client: await client.search(...)`.

Same settings, routing, retries and results as `Client`; the transports use
tritonclient's asyncio clients (grpc.aio and aiohttp), created on first use
inside the running event loop and reused for every call. Use one
`AsyncClient` within one event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Mapping, Sequence

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from builders import names
from clients import contract
from clients.client import DOWN_SECONDS, ClientConfig, not_served, unreachable
from clients.errors import (
    ClientError,
    DeadlineExceededError,
    NotFoundError,
    TlsError,
    UnavailableError,
)
from clients.results import Response, Result
from clients.routing import RoundRobin
from clients.tls import TlsConfig, explain_ssl_error
from clients.transport import (
    HTTP_SOCKET_TIMEOUT,
    connection_error,
    deadline_error,
    grpc_channel,
    grpc_response,
    http_response,
    infer_inputs,
    model_states,
    request_timeout_us,
    server_error,
    tls_reset_error,
)


def ssl_cause(err: Exception) -> ssl.SSLError | None:
    """The `ssl` error behind an aiohttp one (its `certificate_error`, `os_error` or
    cause), if any."""
    causes = ("certificate_error", "os_error", "__cause__")
    for cause in [getattr(err, name, None) for name in causes] + [err]:
        if isinstance(cause, ssl.SSLError):
            return cause
    return None


class AsyncGrpcTransport:
    """One gRPC endpoint over grpc.aio: one channel for every coroutine; over TLS when
    `tls` is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._client = None

    async def _call(self, seconds: float, method: str, *args, **kwargs):
        if self._client is None:
            self._client = grpcaio.InferenceServerClient(self.url, **grpc_channel(self.tls))
        try:
            return await getattr(self._client, method)(*args, client_timeout=seconds, **kwargs)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds, self.tls) from None

    async def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        tensors = infer_inputs(grpcaio, inputs)
        result = await self._call(
            timeout,
            "infer",
            model,
            tensors,
            model_version=str(version or ""),
            timeout=request_timeout_us(timeout),
        )
        return grpc_response(model, result, self.url)

    async def health(self, timeout: float) -> dict:
        live = await self._call(timeout, "is_server_live")
        ready = await self._call(timeout, "is_server_ready")
        server = await self._call(timeout, "get_server_metadata", as_json=True)
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    async def metadata(self, model: str, timeout: float) -> contract.ModelMetadata:
        return contract.parse_metadata(
            await self._call(timeout, "get_model_metadata", model, as_json=True)
        )

    async def models(self, timeout: float) -> list[dict]:
        index = await self._call(timeout, "get_model_repository_index", as_json=True)
        return model_states(index.get("models", []))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class AsyncHttpTransport:
    """One HTTP endpoint over aiohttp: a pool of keep-alive connections; HTTPS when `tls`
    is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._client = None

    async def _call(self, seconds: float, method: str, *args, **kwargs):
        if self._client is None:
            https = {"ssl": True, "ssl_context": self.tls.ssl_context()} if self.tls else {}
            self._client = httpaio.InferenceServerClient(
                self.url, conn_timeout=HTTP_SOCKET_TIMEOUT, **https
            )
        try:
            return await asyncio.wait_for(getattr(self._client, method)(*args, **kwargs), seconds)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds) from None
        except TimeoutError:
            raise deadline_error(seconds, self.url) from None
        except (OSError, aiohttp.ClientConnectionError) as err:
            raise self._connection_error(err) from None

    def _connection_error(self, err: Exception) -> ClientError:
        cause = ssl_cause(err) if self.tls else None
        if cause is not None:
            return TlsError(explain_ssl_error(cause, self.tls), self.url)
        if self.tls and isinstance(getattr(err, "os_error", err), ConnectionResetError):
            return tls_reset_error(self.url)
        return connection_error(err, self.url)

    async def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        result = await self._call(
            timeout,
            "infer",
            model,
            infer_inputs(httpaio, inputs),
            model_version=str(version or ""),
            timeout=request_timeout_us(timeout),
        )
        return http_response(model, result, self.url)

    async def health(self, timeout: float) -> dict:
        live = await self._call(timeout, "is_server_live")
        ready = await self._call(timeout, "is_server_ready")
        server = await self._call(timeout, "get_server_metadata")
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    async def metadata(self, model: str, timeout: float) -> contract.ModelMetadata:
        return contract.parse_metadata(await self._call(timeout, "get_model_metadata", model))

    async def models(self, timeout: float) -> list[dict]:
        return model_states(await self._call(timeout, "get_model_repository_index"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


TRANSPORTS = {"grpc": AsyncGrpcTransport, "http": AsyncHttpTransport}


class AsyncClient(ClientConfig):
    """Asyncio client with the same methods as `Client`, as coroutines."""

    def __init__(self, urls: str | Sequence[str], **options) -> None:
        super().__init__(urls, **options)
        self.transports = [
            TRANSPORTS[self.protocol](url, **self.transport_options) for url in self.urls
        ]
        self._endpoints = RoundRobin(self.transports)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()

    async def _with_retries(self, what: str, timeout: float | None, call):
        attempts, failed_on = self.attempts(what, timeout), None
        while True:
            seconds = attempts.start()
            transport = self._endpoints.next(avoid=failed_on)
            try:
                return await call(transport, seconds), attempts.count
            except ClientError as error:
                failed_on = transport
                if error.endpoint_down:
                    self._endpoints.mark_down(transport, DOWN_SECONDS)
                await asyncio.sleep(attempts.after_failure(error))

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        response, count = await self._with_retries(
            model, timeout, lambda t, seconds: t.infer(model, version, inputs, seconds)
        )
        return dataclasses.replace(response, attempts=count)

    async def search(
        self,
        query: str | bytes,
        user_id: int | None = None,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        user_id = self.user(user_id)
        inputs = contract.search_inputs(query, user_id, k)
        model = self.pipeline_model(names.SEARCH, user_id, version)
        return self.result(names.SEARCH, await self.infer(model, inputs, timeout=timeout))

    async def recommend(
        self,
        user_id: int,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        user_id = self.user(user_id)
        inputs = contract.recommend_inputs(user_id, k)
        model = self.pipeline_model(names.RECOMMEND, user_id, version)
        return self.result(names.RECOMMEND, await self.infer(model, inputs, timeout=timeout))

    async def health(self, timeout: float | None = None) -> list[dict]:
        rows = []
        for transport in self.transports:
            try:
                state = await transport.health(timeout or self.timeout)
            except ClientError as error:
                state = unreachable(error)
            rows.append({"endpoint": transport.url, **state})
        return rows

    async def models(self, timeout: float | None = None) -> list[dict]:
        states, _ = await self._with_retries("models", timeout, lambda t, s: t.models(s))
        return states

    async def verify(
        self, models: Sequence[str] = contract.PIPELINES, timeout: float | None = None
    ) -> dict[str, tuple[int, ...]]:
        versions, down = {}, []
        for transport in self.transports:
            try:
                index = await transport.models(timeout or self.timeout)
                for model in models:
                    try:
                        served = await transport.metadata(model, timeout or self.timeout)
                    except NotFoundError as error:
                        raise not_served(model, error) from None
                    releases = contract.served_releases(model, index)
                    versions[model] = self.check(transport.url, model, served, releases)
            except (UnavailableError, DeadlineExceededError) as error:
                down.append(error)
        if len(down) == len(self.transports):
            raise down[0]
        return versions
