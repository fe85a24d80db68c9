"""The clients against the real tritonserver (the shared `small_server`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clients import (
    AsyncClient,
    Client,
    ContractError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    Route,
    UnavailableError,
)
from clients.batch import score_file
from clients.transport import GrpcTransport

UNKNOWN_USER = 10**12
MODES = [("grpc", False), ("http", False), ("grpc", True), ("http", True)]
MODE_IDS = ["grpc", "http", "grpc-async", "http-async"]


def url_of(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def requests(small_dataset):
    queries = [*small_dataset.sample_queries(4, seed=21), "runing shoos"]
    users = [int(u) for u in small_dataset.sample_user_ids(3, seed=21)] + [UNKNOWN_USER]
    return queries, users


def run_calls(url, protocol, use_async, calls, **options):
    """Each call is (method name, args, kwargs); returns the results or errors in order."""

    def outcome(function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 (the test compares errors too)
            return error

    if not use_async:
        with Client(url, protocol=protocol, **options) as client:
            return [outcome(getattr(client, name), *a, **kw) for name, a, kw in calls]

    async def main():
        results = []
        async with AsyncClient(url, protocol=protocol, **options) as client:
            for name, args, kwargs in calls:
                try:
                    results.append(await getattr(client, name)(*args, **kwargs))
                except Exception as error:  # noqa: BLE001
                    results.append(error)
        return results

    return asyncio.run(main())


def test_transports_and_modes_give_identical_results(small_server, requests, catalog_path):
    queries, users = requests
    calls = [("search", (q,), {"user_id": u, "k": 10}) for q, u in zip(queries, users * 2)]
    calls += [("search", (queries[0],), {"k": 7})]
    calls += [("recommend", (u,), {"k": 10}) for u in users]
    results = {
        mode: run_calls(url_of(small_server, mode[0]), *mode, calls, catalog=catalog_path)
        for mode in MODES
    }
    baseline = results[MODES[0]]
    assert all(r.version == 1 and len(r.items) == c[2]["k"] for r, c in zip(baseline, calls))
    assert all(item.title and item.category for r in baseline for item in r.items)
    for mode in MODES[1:]:
        assert results[mode] == baseline, mode
        assert {r.endpoint for r in results[mode]} == {url_of(small_server, mode[0])}

    # the typed result holds exactly what a bare tritonclient call returns
    bare = grpcclient.InferenceServerClient(small_server.grpc_url)
    try:
        k = grpcclient.InferInput("k", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[10]], np.int32))
        user = grpcclient.InferInput("user_id", [1, 1], "INT64")
        user.set_data_from_numpy(np.array([[users[0]]], np.int64))
        raw = bare.infer("recommend", [k, user])
    finally:
        bare.close()
    typed = baseline[len(queries) + 1]
    assert [i.item_id for i in typed.items] == raw.as_numpy("item_ids")[0].tolist()
    assert [i.score for i in typed.items] == raw.as_numpy("scores")[0].tolist()


@pytest.mark.parametrize(("protocol", "use_async"), MODES, ids=MODE_IDS)
def test_raw_infer_reaches_any_model(small_server, protocol, use_async):
    query = {"query": np.array([[b"red running shoes"]], dtype=object)}
    calls = [("infer", ("query_tokenizer", query), {})]
    (tokens,) = run_calls(url_of(small_server, protocol), protocol, use_async, calls)
    assert tokens.model == "query_tokenizer" and tokens.version == 1
    assert tokens.outputs["input_ids"].shape == (1, 8)  # a short query: the 8-token bucket
    assert set(tokens.outputs) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize(("protocol", "use_async"), MODES, ids=MODE_IDS)
def test_bad_input_fails_fast_with_the_servers_message(small_server, protocol, use_async):
    calls = [
        ("search", ("",), {"k": 5}),
        ("search", ("shoes",), {"k": 0}),
        ("recommend", (1,), {"version": 9}),
        ("search", ("shoes",), {"user_id": "42"}),
    ]
    empty, zero, version, user = run_calls(
        url_of(small_server, protocol), protocol, use_async, calls
    )
    assert isinstance(empty, InvalidArgumentError) and "empty query" in str(empty)
    assert isinstance(zero, InvalidArgumentError) and "'k' must be at least 1, got 0" in str(zero)
    assert isinstance(version, NotFoundError) and "'recommend_v9'" in str(version)
    assert isinstance(user, InvalidArgumentError) and "'user_id' must be an integer" in str(user)
    assert empty.attempts == zero.attempts == version.attempts == 1
    assert empty.exit_code == 2 and "\n" not in str(empty)
    assert small_server.is_ready()


@pytest.mark.parametrize(("protocol", "use_async"), MODES, ids=MODE_IDS)
def test_unreachable_endpoint_is_a_clear_error_within_the_deadline(
    refused_url, protocol, use_async
):
    started = time.monotonic()
    calls = [("search", ("shoes",), {})]
    (error,) = run_calls(refused_url, protocol, use_async, calls, timeout=3.0)
    elapsed = time.monotonic() - started
    assert isinstance(error, UnavailableError), error
    assert "refused" in str(error).lower() and refused_url in str(error)
    assert "gave up after 5 attempts" in str(error) and error.attempts == 5
    assert elapsed < 3.0 + 1.0


@pytest.mark.parametrize(("protocol", "use_async"), MODES, ids=MODE_IDS)
def test_silent_endpoint_and_short_deadlines_expire_in_time(
    small_server, silent_url, protocol, use_async
):
    started = time.monotonic()
    calls = [("recommend", (1,), {})]
    (silent,) = run_calls(silent_url, protocol, use_async, calls, timeout=0.5)
    elapsed = time.monotonic() - started
    assert isinstance(silent, DeadlineExceededError), silent
    assert "recommend: no answer within the deadline of 0.5 s" in str(silent)
    assert elapsed < 0.5 + 1.0
    calls = [("search", ("shoes",), {"timeout": 0.001}), ("search", ("shoes",), {})]
    expired, after = run_calls(url_of(small_server, protocol), protocol, use_async, calls)
    assert isinstance(expired, DeadlineExceededError) and expired.exit_code == 4
    assert after.version == 1  # the connection still works after a call timed out


def test_round_robin_moves_on_from_a_dead_endpoint(small_server, refused_url):
    with Client([refused_url, small_server.grpc_url]) as client:
        results = [client.recommend(UNKNOWN_USER, k=3) for _ in range(6)]
    assert {r.endpoint for r in results} == {small_server.grpc_url}
    # the first call finds the dead endpoint; round-robin then skips it for a while
    assert [r.attempts for r in results] == [2, 1, 1, 1, 1, 1]
    assert len({r for r in results}) == 1


def test_health_models_and_verify(small_server, refused_url):
    with Client([small_server.grpc_url, refused_url], timeout=2) as client:
        live, dead = client.health()
        assert live == {
            "endpoint": small_server.grpc_url,
            "live": True,
            "ready": True,
            "server_version": "2.51.0",
        }
        assert dead["endpoint"] == refused_url and not dead["live"] and "refused" in dead["error"]
        assert client.verify() == {"search": (1,), "recommend": (1,)}  # skips the dead one
    with Client(small_server.http_url, protocol="http") as client:
        states = {(m["name"], m["version"]): m["state"] for m in client.models()}
    assert states[("search", "1")] == states[("recommend", "1")] == "READY"
    with Client(refused_url, timeout=2) as client, pytest.raises(UnavailableError):
        client.verify()


def test_verify_names_what_differs_from_the_contract(small_server):
    with Client(small_server.grpc_url, routes={"search": Route.pinned(2)}) as client:
        with pytest.raises(ContractError, match=r"model 'search': version\(s\) 2 not loaded"):
            client.verify(["search"])
        with pytest.raises(ContractError, match="model 'nope' is not served"):
            client.verify(["nope"])
    transport = GrpcTransport(small_server.grpc_url)
    try:
        served_recommend = transport.metadata("recommend", 5)
    finally:
        transport.close()
    with Client(small_server.grpc_url) as client, pytest.raises(ContractError) as caught:
        client.check(small_server.grpc_url, "search", served_recommend, releases=(1,))
    assert "input 'query' is missing (expected query BYTES [-1, 1])" in str(caught.value)
    assert caught.value.exit_code == 5


def test_batch_scores_a_file_in_order_and_keeps_errors(small_server, tmp_path, catalog_path):
    source = tmp_path / "queries.txt"
    source.write_text("red running shoes\n\nsilk dress\t7\n\t42\nbackpack\tnot-a-user\n" * 3)
    output = tmp_path / "out.jsonl"
    reports = []

    async def main():
        async with AsyncClient(small_server.grpc_url, catalog=catalog_path) as client:
            return await score_file(
                client,
                "search",
                str(source),
                str(output),
                k=3,
                concurrency=4,
                progress=reports.append,
                every=0.0,
            )

    summary = asyncio.run(main())
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15]
    assert summary.done == summary.total == 12 and summary.errors == 6
    assert records[0]["query"] == "red running shoes" and len(records[0]["items"]) == 3
    assert records[0]["items"][0]["title"] and records[0]["version"] == 1
    assert records[1]["user_id"] == 7 and "error" not in records[1]
    assert (
        records[2]["error_type"] == "InvalidArgumentError" and "empty query" in records[2]["error"]
    )
    assert records[3]["error"] == "not a user id after the tab: 'not-a-user'"
    assert reports[-1].done == 12 and len(reports) >= 2


def open_connections(port: int) -> int:
    """Established TCP connections from this process to `port` on loopback (Linux /proc)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            count += remote_port == port and fields[3] == "01" and fields[9] in inodes
    return count


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_connections_are_reused(small_server, protocol):
    url = url_of(small_server, protocol)
    port = int(url.rsplit(":", 1)[1])
    gc.collect()  # clients other tests dropped without closing
    before = open_connections(port)
    with Client(url, protocol=protocol) as client:
        for user in range(20):
            client.recommend(user, k=3)
        assert open_connections(port) == before + 1
    # gRPC's core closes the socket on its own thread, a moment after `close()` returns.
    for _ in range(50):
        if open_connections(port) == before:
            break
        time.sleep(0.1)
    assert open_connections(port) == before
