"""The tritonserver arguments the chart renders start the real local tritonserver 2.51.

Only what must differ on this machine is changed: the model repository path (a temp
folder with the tiny `search` model), the ports (free loopback ports), `$(VAR)`
references (expanded as Kubernetes does), and local additions (backend directory,
loopback addresses, a private shared-memory prefix). GPU-only flags are dropped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from server import binaries
from server.launcher import free_ports

GPU_ONLY = ("--cuda-memory-pool-byte-size",)
PORT_FLAGS = ("--http-port", "--grpc-port", "--metrics-port")


def local_args(
    rendered: list[str], repo: Path, ports: dict[str, int], env: dict[str, str]
) -> list[str]:
    """The rendered args with this machine's repository, ports and $(VAR) values."""
    args = []
    for arg in rendered:
        flag = arg.split("=", 1)[0]
        if flag in GPU_ONLY:
            continue
        if flag == "--model-repository":
            arg = f"--model-repository={repo}"
        elif flag in PORT_FLAGS:
            arg = f"{flag}={ports[flag]}"
        args.append(re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg))
    return args


def http(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextmanager
def tritonserver(args: list[str], log: Path):
    """Run tritonserver with `args` (plus local additions) until ready; stop it afterwards."""
    argv = [
        str(binaries.tritonserver_path()),
        *args,
        f"--backend-directory={binaries.backend_directory()}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--backend-config=python,shm-region-prefix-name=helm_{uuid.uuid4().hex[:10]}_",
    ]
    base = "http://127.0.0.1:" + next(a for a in args if a.startswith("--http-port=")).split("=")[1]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=binaries.server_environment(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"tritonserver exited ({process.returncode}):\n{log.read_text()[-3000:]}"
                )
            try:
                if http(f"{base}/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tritonserver not ready after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with suppress(ProcessLookupError):  # backend stubs left in the process group
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rendered_args(render, select, scenario: str) -> list[str]:
    (deployment,) = select(render(scenario), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["args"]


def test_cpu_scenario_args_start_tritonserver(render, select, search_model, tmp_path):
    """The cpu scenario's args serve `search`, and the `helm test` pod's script passes."""
    rendered = rendered_args(render, select, "cpu")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    args = local_args(rendered, search_model(tmp_path / "repo"), ports, {})
    assert len(args) == len(rendered)  # nothing GPU-only in the cpu scenario
    (pod,) = select(render("cpu"), "Pod")
    (test_container,) = pod["spec"]["containers"]
    with tritonserver(args, tmp_path / "server.log") as base:
        script = test_container["args"][0].replace("http://rel-triton-ecommerce:8000", base)
        env = {**os.environ, **{e["name"]: e["value"] for e in test_container["env"]}}
        result = subprocess.run(
            [*test_container["command"], script],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "search returned item_ids, scores and truncated" in result.stdout
        # The rendered --metrics-config flags took effect: p99 summaries are exported.
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{ports['--metrics-port']}/metrics", timeout=10
        ).read()
        assert re.search(
            rb'nv_inference_request_summary_us\{model="search",.*quantile="0.99"', metrics
        )


def test_restricted_scenario_args_guard_the_repository_api(render, select, search_model, tmp_path):
    rendered = rendered_args(render, select, "restricted")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    key = uuid.uuid4().hex
    args = local_args(
        rendered, search_model(tmp_path / "repo"), ports, {"TRITON_RESTRICTED_API_KEY": key}
    )
    header = "triton-admin-key"
    with tritonserver(args, tmp_path / "server.log") as base:
        status, body = http(f"{base}/v2/repository/index", {})
        assert status == 403 and header.encode() in body
        assert http(f"{base}/v2/repository/index", {}, {header: "wrong"})[0] == 403
        status, body = http(f"{base}/v2/repository/index", {}, {header: key})
        assert status == 200 and json.loads(body)[0]["name"] == "search"
        assert http(f"{base}/v2/models/search/config")[0] == 403  # model-config is restricted too
        assert http(f"{base}/v2/models/search/ready")[0] == 200  # health stays open for probes


def test_gpu_scenario_args_start_tritonserver_without_gpu_only_flags(
    render, select, search_model, tmp_path
):
    rendered = rendered_args(render, select, "gpu")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    args = local_args(rendered, search_model(tmp_path / "repo"), ports, {})
    gpu_only = [arg for arg in rendered if arg.split("=", 1)[0] in GPU_ONLY]
    assert gpu_only == ["--cuda-memory-pool-byte-size=0:268435456"]
    assert len(args) == len(rendered) - 1
    with tritonserver(args, tmp_path / "server.log") as base:
        assert http(f"{base}/v2/models/search/ready")[0] == 200
