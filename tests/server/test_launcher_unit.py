"""Unit tests of the launcher's pure parts (no server started)."""

import os
import subprocess
from pathlib import Path

import pytest

from server.launcher import (
    ServerOptions,
    TritonServer,
    build_command,
    free_port,
    free_ports,
    processes_in_group,
    server_errors,
)


def options(**overrides):
    values = dict(
        model_repository=Path("/models"), http_port=8000, grpc_port=8001, metrics_port=8002
    )
    values.update(overrides)
    return ServerOptions(**values)


def test_build_command_explicit_mode():
    argv = build_command(
        options(model_control="explicit", load_models=("search", "recommend")),
        Path("/bin/tritonserver"),
        Path("/backends"),
    )
    assert argv[0] == "/bin/tritonserver"
    for flag in (
        "--model-repository=/models",
        "--backend-directory=/backends",
        "--http-address=127.0.0.1",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--model-control-mode=explicit",
        "--load-model=search",
        "--load-model=recommend",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
    ):
        assert flag in argv
    assert not any(a.startswith("--repository-poll-secs") for a in argv)
    assert any(a.startswith("--backend-config=python,shm-region-prefix-name=tpb_") for a in argv)


def test_build_command_poll_mode_and_extra_args():
    argv = build_command(
        options(model_control="poll", repository_poll_secs=5, extra_args=("--log-info=false",)),
        Path("/bin/tritonserver"),
        Path("/backends"),
    )
    assert "--repository-poll-secs=5" in argv and argv[-1] == "--log-info=false"


def test_response_cache_flags():
    argv = build_command(options(response_cache_mb=64), Path("/t"), Path("/b"), Path("/caches"))
    assert "--cache-directory=/caches" in argv
    assert f"--cache-config=local,size={64 * 2**20}" in argv
    assert not any("cache" in a for a in build_command(options(), Path("/t"), Path("/b")))
    with pytest.raises(ValueError, match="response_cache_mb"):
        options(response_cache_mb=-1)


def test_strict_readiness_flag():
    argv = build_command(options(strict_readiness=False), Path("/t"), Path("/b"))
    assert "--strict-readiness=false" in argv


def test_each_server_gets_its_own_shared_memory_prefix():
    assert options().shm_region_prefix != options().shm_region_prefix


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_control": "auto"}, "model_control must be one of none, poll, explicit"),
        ({"load_models": ("a",)}, "load_models needs model_control='explicit'"),
        ({"http_port": 0}, "http_port must be in 1..65535"),
        ({"grpc_port": 8000}, "ports must differ"),
    ],
)
def test_options_are_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        options(**overrides)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct():
    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3


def test_a_server_refuses_equal_fixed_ports(tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        TritonServer(tmp_path, http_port=8000, metrics_port=8000)


def test_processes_in_group_finds_a_real_group():
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert processes_in_group(child.pid) == [child.pid]
        assert os.getpid() not in processes_in_group(child.pid)
    finally:
        child.kill()
        child.wait()
    assert processes_in_group(child.pid) == []


def test_server_errors_keeps_real_errors_only():
    log = [
        'I1129 09:19:59.33 1 server.cc:1] "Started"',
        'E1129 09:19:59.33 1 server.cc:241] "CudaDriverHelper has not been initialized."',
        "[libprotobuf ERROR text_format.cc:337] Error parsing text-format inference.ModelConfig",
        "E1129 09:19:59.33 1 model_repository_manager.cc:1460] \"Poll failed for 'broken'\"",
        "Every ERROR here is not a log level",
    ]
    assert server_errors(log) == log[2:4]
