"""Blocking transports: one endpoint each, over tritonclient's gRPC or HTTP client.

A transport makes one attempt within the seconds it is given and turns every
failure into a `ClientError`. Retries, routing and typing live in the client.
An inference carries those seconds to the server too, as Triton's request
timeout: a stage's queue drops a request that waited longer, rather than run it
for a client that has given up.
Connections are kept and reused: gRPC multiplexes all threads over one
channel; the HTTP client is not thread-safe, so each thread keeps its own
keep-alive connection, dropped after a failure or a timeout (a connection cut
mid-request is never reused).
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
from collections.abc import Mapping

import gevent
import gevent.ssl
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from clients.contract import ModelMetadata, parse_metadata
from clients.errors import (
    ClientError,
    DeadlineExceededError,
    InvalidArgumentError,
    TlsError,
    UnavailableError,
    error_for_status,
)
from clients.results import Response
from clients.tls import TlsConfig, explain_ssl_error, explain_tls_failure

# Reconnect quickly after a server restart (gRPC's default backoff grows to 120 s), and
# spread calls over every address a name resolves to (a headless Kubernetes Service).
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.lb_policy_name", "round_robin"),
]
# The per-call deadline bounds every HTTP call; these only stop geventhttpclient's own.
HTTP_SOCKET_TIMEOUT = 24 * 3600.0


def infer_inputs(module, inputs: Mapping[str, np.ndarray]) -> list:
    """tritonclient `InferInput`s (of `module`: grpc or http) for named arrays."""
    tensors = []
    for name, value in inputs.items():
        value = np.asarray(value)
        datatype = np_to_triton_dtype(value.dtype)
        if datatype is None:
            raise InvalidArgumentError(f"input {name!r}: unsupported dtype {value.dtype}")
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def grpc_response(model: str, result, endpoint: str) -> Response:
    message = result.get_response()
    outputs = {o.name: result.as_numpy(o.name) for o in message.outputs}
    return Response(model, int(message.model_version), outputs, endpoint)


def http_response(model: str, result, endpoint: str) -> Response:
    body = result.get_response()
    outputs = {o["name"]: result.as_numpy(o["name"]) for o in body["outputs"]}
    return Response(model, int(body["model_version"]), outputs, endpoint)


def model_states(index: list[Mapping]) -> list[dict]:
    """The repository index as rows of name, version, state, reason."""
    return [
        {
            "name": entry["name"],
            "version": entry.get("version", ""),
            "state": entry.get("state", "") or "UNAVAILABLE",
            "reason": entry.get("reason", ""),
        }
        for entry in index
    ]


def connection_error(err: Exception, endpoint: str) -> UnavailableError:
    """A failed connection, named by its errno when it has one ("Connection refused")."""
    cause = getattr(err, "os_error", err)  # aiohttp wraps the OSError
    errno = getattr(cause, "errno", None)
    reason = os.strerror(errno) if errno else f"{type(err).__name__}: {err}"
    return UnavailableError(f"cannot reach the server: {reason}", endpoint)


def tls_reset_error(endpoint: str) -> UnavailableError:
    """A connection reset over TLS: what a plain-text port does to a TLS handshake (kept
    retryable, as a reset of a working connection is)."""
    message = "connection reset over TLS: if every call fails so, the port does not speak TLS"
    return UnavailableError(message, endpoint)


def infer_arguments(
    module, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
) -> tuple[tuple, dict]:
    """tritonclient `infer`'s arguments for one attempt (`module`: grpc or http, blocking or
    asyncio): the model, its inputs, the version (the latest when None) and Triton's request
    timeout."""
    kwargs = {"model_version": str(version or ""), "timeout": request_timeout_us(timeout)}
    return (model, infer_inputs(module, inputs)), kwargs


def request_timeout_us(seconds: float) -> int:
    """An attempt's seconds as Triton's request timeout (microseconds, at least 1). A stage
    rejects the request once it has waited that long in its queue; the request may shorten
    the stage's own `default_timeout_microseconds`, never lengthen it."""
    return max(1, int(seconds * 1_000_000))


def server_error(
    err: InferenceServerException, endpoint: str, timeout: float, tls: TlsConfig | None = None
) -> ClientError:
    message = err.message() or str(err)
    explained = explain_tls_failure(message, tls)
    if explained is not None:
        return (TlsError if tls is not None else UnavailableError)(explained, endpoint)
    error = error_for_status(err.status(), message, endpoint)
    if isinstance(error, DeadlineExceededError):
        return deadline_error(timeout, endpoint)
    return error


def deadline_error(timeout: float, endpoint: str) -> DeadlineExceededError:
    return DeadlineExceededError(f"no answer within {timeout:.3g} s", endpoint)


def grpc_channel(tls: TlsConfig | None) -> dict:
    """tritonclient gRPC client keyword arguments: channel options and TLS credentials."""
    if tls is None:
        return {"channel_args": GRPC_CHANNEL_ARGS}
    return {"channel_args": GRPC_CHANNEL_ARGS + tls.channel_args(), "creds": tls.credentials()}


class GrpcTransport:
    """One gRPC endpoint: one channel, shared by every thread; over TLS when `tls` is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._client = grpcclient.InferenceServerClient(url, **grpc_channel(tls))

    def _call(self, seconds: float, method: str, *args, **kwargs):
        try:
            return getattr(self._client, method)(*args, client_timeout=seconds, **kwargs)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds, self.tls) from None

    def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        args, kwargs = infer_arguments(grpcclient, model, version, inputs, timeout)
        return grpc_response(model, self._call(timeout, "infer", *args, **kwargs), self.url)

    def health(self, timeout: float) -> dict:
        live = self._call(timeout, "is_server_live")
        ready = self._call(timeout, "is_server_ready")
        server = self._call(timeout, "get_server_metadata", as_json=True)
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    def metadata(self, model: str, timeout: float) -> ModelMetadata:
        return parse_metadata(self._call(timeout, "get_model_metadata", model, as_json=True))

    def models(self, timeout: float) -> list[dict]:
        index = self._call(timeout, "get_model_repository_index", as_json=True)
        return model_states(index.get("models", []))

    def close(self) -> None:
        self._client.close()


class HttpTransport:
    """One HTTP endpoint: a keep-alive connection per thread; HTTPS when `tls` is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._https = {}
        if tls is not None:
            context = tls.ssl_context(gevent.ssl.create_default_context)
            self._https = {"ssl": True, "ssl_context_factory": lambda: context}
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpclient.InferenceServerClient(
                self.url,
                connection_timeout=HTTP_SOCKET_TIMEOUT,
                network_timeout=HTTP_SOCKET_TIMEOUT,
                **self._https,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop(self) -> None:
        client = self._local.client
        self._local.client = None
        with self._lock:
            self._clients.remove(client)
        client.close()

    def _call(self, seconds: float, method: str, *args, **kwargs):
        client = self._client()
        expired = deadline_error(seconds, self.url)
        try:
            with gevent.Timeout(seconds, expired):
                return getattr(client, method)(*args, **kwargs)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds) from None
        except DeadlineExceededError:
            self._drop()
            raise
        except ssl.SSLError as err:
            self._drop()
            raise TlsError(explain_ssl_error(err, self.tls), self.url) from None
        except (OSError, http.client.HTTPException) as err:
            self._drop()
            if self.tls and isinstance(err, ConnectionResetError):
                raise tls_reset_error(self.url) from None
            raise connection_error(err, self.url) from None

    def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        args, kwargs = infer_arguments(httpclient, model, version, inputs, timeout)
        return http_response(model, self._call(timeout, "infer", *args, **kwargs), self.url)

    def health(self, timeout: float) -> dict:
        live = self._call(timeout, "is_server_live")
        ready = self._call(timeout, "is_server_ready")
        server = self._call(timeout, "get_server_metadata")
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    def metadata(self, model: str, timeout: float) -> ModelMetadata:
        return parse_metadata(self._call(timeout, "get_model_metadata", model))

    def models(self, timeout: float) -> list[dict]:
        return model_states(self._call(timeout, "get_model_repository_index"))

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


TRANSPORTS = {"grpc": GrpcTransport, "http": HttpTransport}
