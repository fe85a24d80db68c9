"""The bench's baseline servers, started for real: perf.benchmarks.naive (FastAPI + PyTorch) and
perf.benchmarks.ray_serve (Ray Serve, `@serve.batch`, in build/ray-venv) answer like the offline
pipeline, refuse bad input alone, and stop cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from builders.offline import OfflinePipeline
from builders.repository import model_versions
from server.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
RAY_PYTHON = ROOT / "build" / "ray-venv" / "bin" / "python"
# (query, user, k): a known user, no user, an unknown user (cold start); different k.
SEARCHES = [("running shoes", 1, 5), ("perfume", None, 3), ("bluetooth speaker", 10**9, 10)]
RECOMMENDS = [(1, 5), (42, 3), (10**9, 10)]


def post(port: int, path: str, body: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@contextmanager
def serving(python: Path | str, module: str, repo: Path):
    port = free_port()
    argv = [str(python), "-m", module, "--repository", str(repo), "--port", str(port)]
    process = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"{module} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{module} never answered /health"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)
    # Nothing it started (Ray's raylet, GCS, workers) outlives it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"processes of {module} were still running 15 s after it exited")


def expected(repo: Path, kind: str, k: int, **inputs) -> tuple[list, np.ndarray]:
    pipeline = OfflinePipeline(repo, kind, max(model_versions(repo, kind)))
    items, scores = pipeline.run(k, **inputs)[0]
    return items.tolist(), scores


def check_server(port: int, repo: Path) -> None:
    requests = [("/search", {"query": q, "user_id": u, "k": k}) for q, u, k in SEARCHES]
    requests += [("/recommend", {"user_id": u, "k": k}) for u, k in RECOMMENDS]
    requests.append(("/search", {"query": "!!!", "user_id": 1, "k": 5}))  # nothing to search
    # Sent at once, so a batching server batches them (and the bad query fails alone).
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: post(port, *r), requests))
    for (path, body), (status, answer) in zip(requests[:-1], answers):
        assert status == 200, answer
        if path == "/search":
            items, scores = expected(
                repo, "search", body["k"], queries=[body["query"]], user_ids=[body["user_id"]]
            )
        else:
            items, scores = expected(repo, "recommend", body["k"], user_ids=[body["user_id"]])
        assert answer["item_ids"] == items, body
        np.testing.assert_allclose(answer["scores"], scores, atol=1e-3)
    status, answer = answers[-1]
    assert status == 400 and "empty query" in answer["error"]
    assert post(port, "/search", {"query": "shoes", "k": 0})[0] == 422


def test_naive_answers_like_the_offline_pipeline(small_repository: Path) -> None:
    with serving(sys.executable, "perf.benchmarks.naive", small_repository) as port:
        check_server(port, small_repository)


@pytest.mark.slow
@pytest.mark.skipif(
    not RAY_PYTHON.exists(), reason=f"no Ray environment at {RAY_PYTHON.parents[1]}: make ray-env"
)
def test_ray_serve_answers_like_the_offline_pipeline(small_repository: Path) -> None:
    with serving(RAY_PYTHON, "perf.benchmarks.ray_serve", small_repository) as port:
        check_server(port, small_repository)
