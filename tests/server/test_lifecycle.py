"""Starting and stopping the real tritonserver: readiness, failures, strays, CLI."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builders import names
from server import ServerError, TritonServer
from server.launcher import processes_in_group
from tests import tiny_models

ROOT = Path(__file__).resolve().parents[2]


def stub_pids(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions `marker` (a backend stub's model path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def repo(tmp_path):
    tiny_models.write_ranker(tmp_path, "ranker", instance_group=[{"count": 2, "kind": "KIND_CPU"}])
    return tmp_path


def test_stop_leaves_no_stray_processes(repo):
    server = TritonServer(repo, exit_timeout_secs=5)
    with server:
        assert server.is_ready() and server.is_model_ready("ranker")
        pgid = server.pid
        # instance_group count 2 gives two backend stub processes for the model.
        assert len(stub_pids(str(repo / "ranker"))) == 2
        assert len(processes_in_group(pgid)) >= 3
    assert server.process.returncode == 0
    assert processes_in_group(pgid) == []
    assert stub_pids(str(repo)) == []


def test_serving_leaves_the_models_the_builder_wrote_as_they_were(tmp_path, small_repository):
    """The stubs of the builder's Python stages write nothing into the repository (the
    builder wrote their bytecode): a file added to a model makes Triton reload it from its
    files when it next loads a pipeline of it, dropping the config it was loaded with."""
    model = names.QUERY_TOKENIZER
    shutil.copytree(small_repository / model, tmp_path / model)
    assert list((tmp_path / model).glob("*/__pycache__/model.*.pyc"))

    def tree() -> dict:
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    before = tree()
    with TritonServer(tmp_path, exit_timeout_secs=5) as server:
        assert server.is_model_ready(model)
    assert tree() == before


def test_failed_start_reports_the_servers_own_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("max_batch_size: [")
    server = TritonServer(tmp_path, exit_timeout_secs=2)
    with pytest.raises(ServerError) as caught:
        server.start()
    message = str(caught.value)
    assert "tritonserver exited with code" in message
    # The server's own words, from its log:
    assert "Poll failed for model directory 'broken'" in message
    assert "Expected integer, got: [" in message
    assert processes_in_group(server.pid) == []


def test_failed_explicit_start_model_reports_the_framework_error(repo):
    (repo / "ranker" / "1" / "model.onnx").unlink()
    server = TritonServer(repo, model_control="explicit", load_models=["ranker"])
    with pytest.raises(ServerError, match="model.onnx does not exist"):
        server.start()
    assert processes_in_group(server.pid) == []


def test_startup_timeout_stops_the_server(repo):
    server = TritonServer(repo, startup_timeout=0.05)
    with pytest.raises(ServerError, match="was not ready after"):
        server.start()
    assert processes_in_group(server.pid) == []
    assert stub_pids(str(repo)) == []


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ServerError, match="is not a directory"):
        TritonServer(tmp_path / "nope").start()


def test_two_servers_at_once(repo, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    tiny_models.write_doubler(other, "doubler")
    with TritonServer(repo) as first, TritonServer(other) as second:
        assert first.http_url != second.http_url and first.grpc_url != second.grpc_url
        assert first.is_model_ready("ranker") and not first.is_model_ready("doubler")
        assert second.is_model_ready("doubler") and not second.is_model_ready("ranker")


def test_explicit_load_and_unload(repo):
    with TritonServer(repo, model_control="explicit") as server:
        assert not server.is_model_ready("ranker")
        server.load_model("ranker")
        assert server.is_model_ready("ranker")
        assert len(stub_pids(str(repo / "ranker"))) == 2
        server.unload_model("ranker")
        deadline = time.monotonic() + 30
        while stub_pids(str(repo / "ranker")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.is_model_ready("ranker")
        assert stub_pids(str(repo / "ranker")) == []
        with pytest.raises(ServerError, match="failed to poll from model repository|not found"):
            server.load_model("no_such_model")
        assert server.is_ready()


@pytest.mark.slow
def test_poll_mode_picks_up_a_new_model(repo):
    with TritonServer(repo, model_control="poll", repository_poll_secs=1) as server:
        assert server.is_model_ready("ranker")
        tiny_models.write_doubler(repo, "doubler")
        deadline = time.monotonic() + 60
        while not server.is_model_ready("doubler") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert server.is_model_ready("doubler")


def test_cli_serves_until_interrupted(repo):
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--model-repository", str(repo)]
        + ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready: HTTP 127.0.0.1:"), "".join(lines)
        assert len(stub_pids(str(repo / "ranker"))) == 2
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "stopped (exit code 0)" in output
    assert stub_pids(str(repo)) == []


def test_cli_reports_a_failed_start(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("max_batch_size: [")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--model-repository", str(tmp_path)]
        + ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "error: tritonserver exited with code" in result.stderr
