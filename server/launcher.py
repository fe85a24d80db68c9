"""Start and stop the real `tritonserver` on loopback.

`ServerOptions` is the typed spec and `build_command` turns it into argv (pure,
unit-tested). `TritonServer` runs that command in a process group of its own,
waits for readiness, drives the repository API in explicit mode, and stops
cleanly: SIGTERM, Triton's own exit timeout, then SIGKILL for whatever is left
of the group (backend stubs included).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from server import binaries
from server.tls import ServerTls, tls_args

MODEL_CONTROL_MODES = ("none", "poll", "explicit")
LOOPBACK = "127.0.0.1"
# glog error lines (`E1129 09:19:59.33 ...`) and errors of the libraries Triton embeds.
ERROR_LINE = re.compile(r"E\d{4} |\[\w+ ERROR ")
# Errors every CPU-only start logs; they do not explain a failure.
CPU_ONLY_NOISE = (
    "CudaDriverHelper has not been initialized",
    "CUDA driver version is insufficient",
)


class ServerError(RuntimeError):
    """The server failed to start, died, or refused a repository request."""


@dataclass(frozen=True)
class ServerOptions:
    """What `tritonserver` is started with. Ports must be concrete (non-zero)."""

    model_repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    model_control: str = "none"
    load_models: tuple[str, ...] = ()
    repository_poll_secs: int = 2
    exit_timeout_secs: int = 10
    strict_readiness: bool = True
    log_verbose: int = 0
    shm_region_prefix: str = field(default_factory=lambda: f"tpb_{uuid.uuid4().hex[:12]}_")
    #: Size of Triton's local response cache, for models whose config enables
    #: `response_cache`; 0 runs without a cache (those models then compute every request).
    response_cache_mb: int = 0
    #: gRPC over TLS (mutual when `tls.mutual`); None serves gRPC in plain text.
    tls: ServerTls | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.model_control not in MODEL_CONTROL_MODES:
            raise ValueError(
                f"model_control must be one of {', '.join(MODEL_CONTROL_MODES)}, "
                f"got {self.model_control!r}"
            )
        if self.load_models and self.model_control != "explicit":
            raise ValueError("load_models needs model_control='explicit'")
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {port}")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ValueError("the HTTP, gRPC and metrics ports must differ")
        if self.response_cache_mb < 0:
            raise ValueError(f"response_cache_mb must be >= 0, got {self.response_cache_mb}")


def build_command(
    options: ServerOptions,
    server: Path,
    backend_directory: Path,
    cache_directory: Path | None = None,
) -> list[str]:
    """The `tritonserver` argv for `options` (`cache_directory` holds the cache libraries)."""
    argv = [
        str(server),
        f"--model-repository={Path(options.model_repository).resolve()}",
        f"--backend-directory={backend_directory}",
        f"--http-address={LOOPBACK}",
        f"--http-port={options.http_port}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={options.grpc_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={options.metrics_port}",
        f"--model-control-mode={options.model_control}",
        f"--exit-timeout-secs={options.exit_timeout_secs}",
        f"--strict-readiness={str(options.strict_readiness).lower()}",
        f"--backend-config=python,shm-region-prefix-name={options.shm_region_prefix}",
        f"--log-verbose={options.log_verbose}",
    ]
    if options.model_control == "poll":
        argv.append(f"--repository-poll-secs={options.repository_poll_secs}")
    argv += [f"--load-model={name}" for name in options.load_models]
    if options.response_cache_mb:
        argv += [
            f"--cache-directory={cache_directory}",
            f"--cache-config=local,size={options.response_cache_mb * 2**20}",
        ]
    if options.tls is not None:
        argv += tls_args(options.tls)
    argv += list(options.extra_args)
    return argv


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on loopback that nothing listens on right now.

    The sockets stay bound until all are picked, so the kernel cannot hand the same
    port out twice (separate free_port() calls can, and a server then refuses to start).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_empty_group(pgid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while processes_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def processes_in_group(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def server_errors(log_lines: list[str]) -> list[str]:
    """The error lines of a tritonserver log, minus the CPU-only CUDA noise."""
    return [
        line
        for line in log_lines
        if ERROR_LINE.match(line)
        if not any(noise in line for noise in CPU_ONLY_NOISE)
    ]


class TritonServer:
    """The real `tritonserver` on loopback, as a context manager.

    A port of 0 picks a free one. `tls` serves gRPC over TLS (HTTP, which Triton cannot
    encrypt, stays on loopback). In explicit mode, `load_model` and
    `unload_model` drive Triton's repository API (`load_model` can override the
    config without a restart).

    Strict readiness (the server is ready only while every model in the
    repository is) defaults to on for model control `none`, where every model
    loads at start-up, and off for `poll` and `explicit`: there a model that
    fails to load would otherwise take the whole server out of readiness,
    while the models already loaded keep serving. Check one model with
    `is_model_ready`.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        model_control: str = "none",
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        load_models: tuple[str, ...] | list[str] = (),
        repository_poll_secs: int = 2,
        startup_timeout: float = 120.0,
        exit_timeout_secs: int = 10,
        strict_readiness: bool | None = None,
        log_verbose: int = 0,
        log_path: str | Path | None = None,
        response_cache_mb: int = 0,
        tls: ServerTls | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.model_control = model_control
        fixed = [port for port in (http_port, grpc_port, metrics_port) if port]
        if len(set(fixed)) < len(fixed):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {fixed}")
        self.requested_ports = (http_port, grpc_port, metrics_port)
        self.load_models = tuple(load_models)
        self.repository_poll_secs = repository_poll_secs
        self.startup_timeout = startup_timeout
        self.exit_timeout_secs = exit_timeout_secs
        self.strict_readiness = (
            model_control == "none" if strict_readiness is None else strict_readiness
        )
        self.log_verbose = log_verbose
        self.response_cache_mb = response_cache_mb
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.options: ServerOptions | None = None
        self.process: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------
    def _require_options(self) -> ServerOptions:
        if self.options is None:
            raise ServerError("the server has not been started")
        return self.options

    @property
    def http_url(self) -> str:
        """`host:port`, as tritonclient.http expects."""
        return f"{LOOPBACK}:{self._require_options().http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self._require_options().grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self._require_options().metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> TritonServer:
        if self.process is not None and self.process.poll() is None:
            raise ServerError("the server is already running")
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} is not a directory")
        if self.tls is not None and self.tls.missing_files():
            raise ServerError(f"TLS files not found: {', '.join(self.tls.missing_files())}")
        # A port picked as free can be taken before the server binds it: retry.
        attempts = 3 if 0 in self.requested_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except ServerError as err:
                if attempt == attempts or "in use" not in str(err):
                    raise

    def _start_once(self) -> None:
        ports: list[int] = []
        while len(set(ports)) < 3:  # a fresh port may equal a requested one
            fresh = iter(free_ports(3))
            ports = [port or next(fresh) for port in self.requested_ports]
        self.options = ServerOptions(
            model_repository=self.model_repository,
            http_port=ports[0],
            grpc_port=ports[1],
            metrics_port=ports[2],
            model_control=self.model_control,
            load_models=self.load_models,
            repository_poll_secs=self.repository_poll_secs,
            exit_timeout_secs=self.exit_timeout_secs,
            strict_readiness=self.strict_readiness,
            log_verbose=self.log_verbose,
            response_cache_mb=self.response_cache_mb,
            tls=self.tls,
            extra_args=self.extra_args,
        )
        argv = build_command(
            self.options,
            binaries.tritonserver_path(),
            binaries.backend_directory(),
            binaries.cache_directory(),
        )
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "server.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=binaries.server_environment(),
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(
                    f"tritonserver exited with code {code} during start-up\n{self._log_report()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise ServerError(
            f"tritonserver was not ready after {self.startup_timeout:g} s\n{self._log_report()}"
        )

    def _log_report(self) -> str:
        errors = "\n".join(server_errors(self.log_tail(lines=2000).splitlines()))
        return (
            f"server errors:\n{errors or '(none logged)'}\n"
            f"last lines of {self.log_path}:\n{self.log_tail(15)}"
        )

    def stop(self) -> int | None:
        """Stop the server and every process of its group; return its exit code."""
        if self.process is None:
            return None
        pgid = self.process.pid  # leader of its own session and group
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.exit_timeout_secs + 5)
        _wait_for_empty_group(pgid, seconds=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        code = self.process.wait()
        _wait_for_empty_group(pgid, seconds=5)  # killed stubs take a moment to go
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip()

    # -- HTTP API ----------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{self.http_url}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def is_ready(self) -> bool:
        try:
            status, _ = self._request("GET", "/v2/health/ready")
        except OSError:
            return False
        return status == 200

    def is_model_ready(self, name: str, version: str | int = "") -> bool:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version != "" else "") + "/ready"
        status, _ = self._request("GET", path)
        return status == 200

    def repository_index(self) -> list[dict]:
        status, body = self._request("POST", "/v2/repository/index", {})
        if status != 200:
            raise ServerError(f"repository index failed: {_error_text(body)}")
        return json.loads(body)

    def model_config(self, name: str) -> dict:
        """The config `name` is served with (the repository API's JSON form)."""
        status, body = self._request("GET", f"/v2/models/{name}/config")
        if status != 200:
            raise ServerError(f"reading the config of {name!r} failed: {_error_text(body)}")
        return json.loads(body)

    def load_model(self, name: str, config: dict | None = None) -> None:
        """Load or reload `name`; `config` (a model-config dict) overrides config.pbtxt."""
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
        status, response = self._request("POST", f"/v2/repository/models/{name}/load", body)
        if status != 200:
            raise ServerError(f"loading model {name!r} failed: {_error_text(response)}")

    def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        body = {"parameters": {"unload_dependents": unload_dependents}}
        status, response = self._request("POST", f"/v2/repository/models/{name}/unload", body)
        if status != 200:
            raise ServerError(f"unloading model {name!r} failed: {_error_text(response)}")


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body).get("error", body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")
