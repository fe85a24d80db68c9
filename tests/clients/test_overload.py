"""Overload against the real server: what Triton answers when a stage's bounded queue
sheds a request, how the client maps and counts it, and a deadline that travels with the
request as Triton's request timeout.

A `gate` stage (a Python model behind a one-request queue, configured through
`builders.specs`) holds every request whose input is 1 until the test opens the gate, so
the queue is full, or a request has outlived its deadline, exactly when the test says;
`gated` is an ensemble of it, as the pipelines are. Nothing here depends on timings.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from builders.specs import (
    DynamicBatching,
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    QueuePolicy,
    TensorSpec,
)
from clients import Client, ClientError, DeadlineExceededError, OverloadedError, RetryPolicy
from k8s.canary_gate import parse_metrics
from server import TritonServer

GATE_MODEL = """
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json

        params = json.loads(args["model_config"])["parameters"]
        self.folder = params["folder"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if x.any():  # a held request (the warm-up sends zeros)
                open(os.path.join(self.folder, "started"), "w").close()
                deadline = time.monotonic() + 120
                while not os.path.exists(os.path.join(self.folder, "open")):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return responses
"""
X = (TensorSpec("x", "FP32", (1,)),)
Y = (TensorSpec("y", "FP32", (1,)),)
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}


def gate_specs(folder: Path) -> tuple[ModelSpec, EnsembleSpec]:
    gate = ModelSpec(
        name="gate",
        backend="python",
        inputs=X,
        outputs=Y,
        max_batch_size=1,
        dynamic_batching=DynamicBatching(0, (), QueuePolicy(1, 60_000_000)),
        parameters={"folder": str(folder)},
    )
    step = EnsembleStep("gate", 1, {"x": "x"}, {"y": "y"})
    return gate, EnsembleSpec("gated", X, Y, (step,), max_batch_size=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Where the gate marks a held request (`started`) and finds the test's `open`."""
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def server(triton_server: TritonServer, folder: Path) -> Iterator[TritonServer]:
    repo = triton_server.model_repository
    for spec in gate_specs(folder):
        (repo / spec.name / "1").mkdir(parents=True)
        (repo / spec.name / "config.pbtxt").write_text(spec.to_pbtxt())
    (repo / "gate" / "1" / "model.py").write_text(GATE_MODEL)
    for name in ("gate", "gated"):
        triton_server.load_model(name)
    yield triton_server
    triton_server.unload_model("gated")
    triton_server.unload_model("gate")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds (a bound that only stops a broken run from hanging)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what}")
        time.sleep(0.02)


def counters(server: TritonServer) -> dict[str, float]:
    """The gate's counters and gauges as `metric model[:reason]` -> value."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        samples = parse_metrics(response.read().decode())
    values: dict[str, float] = {}
    for name, labels, value in samples:
        if labels.get("model") in ("gate", "gated"):
            key = f"{name} {':'.join(filter(None, (labels['model'], labels.get('reason'))))}"
            values[key] = values.get(key, 0.0) + value
    return values


def since(server: TritonServer, before: dict[str, float]) -> dict[str, float]:
    """How much each counter grew since `before`."""
    return {key: value - before.get(key, 0.0) for key, value in counters(server).items()}


class Gate:
    """Hold requests in `gate` until `open()`; calls run in threads and keep their outcome."""

    def __init__(self, server: TritonServer, folder: Path) -> None:
        self.server, self.folder = server, folder
        for marker in ("started", "open"):
            (self.folder / marker).unlink(missing_ok=True)
        self.threads: list[threading.Thread] = []
        self.outcomes: list[object] = []

    def call(self, client: Client, timeout: float = 60.0) -> None:
        def run() -> None:
            try:
                self.outcomes.append(client.infer("gated", one(), timeout=timeout))
            except ClientError as error:
                self.outcomes.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def hold_one_and_queue_one(self, client: Client) -> None:
        """One request held in the stage, one waiting in its queue: the queue is full."""
        self.call(client)
        wait_for((self.folder / "started").exists, "the gate to hold a request")
        self.call(client)
        wait_for(lambda: self.pending() == 1, "a request to wait in the queue")

    def pending(self) -> float:
        return counters(self.server).get("nv_inference_pending_request_count gate", 0.0)

    def open(self) -> None:
        (self.folder / "open").touch()
        for thread in self.threads:
            thread.join()


def one() -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 1), np.float32)}


def url(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_full_queue_answers_unavailable_and_the_client_counts_an_overload(
    server, folder, protocol
):
    before = counters(server)
    module = PROTOCOLS[protocol]
    with Client(url(server, protocol), protocol=protocol, retry=RetryPolicy(1)) as client:
        gate = Gate(server, folder)
        gate.hold_one_and_queue_one(client)
        raw = module.InferenceServerClient(url(server, protocol))
        tensor = module.InferInput("x", [1, 1], "FP32")
        tensor.set_data_from_numpy(one()["x"])
        with pytest.raises(InferenceServerException) as rejected:
            raw.infer("gated", [tensor])
        raw.close()
        with pytest.raises(OverloadedError) as shed:
            client.infer("gated", one())
        gate.open()
        assert client.overloaded == 1 and client.failures.snapshot() == {"OverloadedError": 1}
    assert rejected.value.status() == {"grpc": "StatusCode.UNAVAILABLE", "http": "503"}[protocol]
    message = "in ensemble 'gated', [request id: <id_unknown>] Exceeds maximum queue size"
    assert rejected.value.message() == message
    assert shed.value.message.startswith(f"server overloaded: {message}")
    assert shed.value.exit_code == 7
    assert [type(outcome).__name__ for outcome in gate.outcomes] == ["Response", "Response"]
    # The server's count of the two shed requests: Triton 2.51 adds 2 to a failed ensemble
    # request's counter (reason OTHER) and counts a full queue's rejection nowhere else.
    wait_for(
        lambda: since(server, before).get("nv_inference_request_success gated") == 2,
        "the server to count the answers",
    )
    grown = since(server, before)
    assert grown["nv_inference_request_failure gated:OTHER"] == 2 * 2
    assert grown["nv_inference_request_failure gate:REJECTED"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_deadline_travels_and_the_stage_drops_what_the_client_gave_up_on(
    server, folder, protocol
):
    before = counters(server)
    with Client(url(server, protocol), protocol=protocol, retry=RetryPolicy(1)) as client:
        gate = Gate(server, folder)
        gate.call(client)
        wait_for((folder / "started").exists, "the gate to hold a request")
        with pytest.raises(DeadlineExceededError):
            client.infer("gated", one(), timeout=0.2)  # waits in the queue past its deadline
        gate.open()
    # Once the gate opens, the stage rejects the expired request instead of running it.
    wait_for(
        lambda: since(server, before)["nv_inference_request_failure gate:REJECTED"] == 1,
        "the stage to reject the expired request",
    )
    assert since(server, before)["nv_inference_request_success gate"] == 1  # the held one
