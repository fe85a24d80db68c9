"""`python -m clients` as a subprocess against the shared `small_server`."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from clients import Client

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clients", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_search_prints_a_table_with_catalog_fields(small_server, catalog_path):
    result = cli(
        "search",
        "red running shoes",
        "--user",
        "42",
        "-k",
        "4",
        "--url",
        small_server.grpc_url,
        "--catalog",
        str(catalog_path),
    )
    assert result.returncode == 0, result.stderr
    heading, header, rule, *rows = result.stdout.splitlines()
    assert heading == f"search: 4 items from release 1 at {small_server.grpc_url}"
    assert header.split() == ["#", "item_id", "title", "category", "brand", "price", "score"]
    assert set(rule.replace(" ", "")) == {"-"} and len(rows) == 4
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4"]


def test_json_output_matches_the_python_api(small_server, catalog_path):
    result = cli(
        "recommend",
        "--user",
        "7",
        "-k",
        "5",
        "--json",
        "--protocol",
        "http",
        "--url",
        small_server.http_url,
        "--catalog",
        str(catalog_path),
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    with Client(small_server.grpc_url, catalog=catalog_path) as client:
        expected = client.recommend(7, k=5)
    assert answer["model"] == "recommend" and answer["version"] == 1
    assert answer["truncated"] is False and answer["endpoint"] == small_server.http_url
    assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in expected.items]
    assert [i["title"] for i in answer["items"]] == [i.title for i in expected.items]


def test_health_and_models(small_server, refused_url):
    health = cli("health", "--url", small_server.grpc_url)
    assert health.returncode == 0, health.stderr
    assert health.stdout.splitlines()[2].split() == [small_server.grpc_url, "yes", "yes", "2.51.0"]
    models = cli("models", "--json", "--url", small_server.grpc_url)
    assert models.returncode == 0, models.stderr
    rows = json.loads(models.stdout)
    assert {"name": "search", "version": "1", "state": "READY", "reason": ""} in rows
    both = cli("health", "--url", f"{small_server.grpc_url},{refused_url}", "--json")
    assert both.returncode == 3
    assert [row["ready"] for row in json.loads(both.stdout)] == [True, False]
    assert both.stderr == f"error: 1 of 2 endpoint(s) not ready: {refused_url}\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "   "], 2, "empty query"),
        (["recommend", "--user", "1", "-k", "0"], 2, "'k' must be at least 1, got 0"),
        (["search", "shoes", "--model-version", "3"], 5, "version(s) 3 not loaded (loaded: 1)"),
        (["search", "shoes", "--timeout", "0.001"], 4, "no answer within"),
        (["search", "shoes", "--split", "1:x"], 2, "expected VERSION:WEIGHT"),
        (["recommend", "--user", "1", "--catalog", "/nonexistent.csv"], 2, "No such file"),
    ],
    ids=["empty-query", "k-zero", "missing-version", "deadline", "bad-split", "no-catalog"],
)
def test_errors_exit_non_zero_with_one_line(small_server, args, code, message):
    result = cli(*args, "--url", small_server.grpc_url)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_unreachable_server_and_bad_usage(refused_url):
    down = cli("recommend", "--user", "1", "--url", refused_url, "--timeout", "2")
    assert down.returncode == 3 and "Connection refused" in down.stderr
    assert down.stderr.count("\n") == 1
    usage = cli("recommend")
    assert usage.returncode == 2 and "--user" in usage.stderr


def test_batch_writes_json_lines_and_reports_progress(small_server, tmp_path):
    source = tmp_path / "users.txt"
    source.write_text("1\n2\nthree\n\n4\n")
    output = tmp_path / "out.jsonl"
    result = cli(
        "batch",
        "recommend",
        str(source),
        "-o",
        str(output),
        "-k",
        "3",
        "--concurrency",
        "2",
        "--url",
        small_server.grpc_url,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 4 records (1 errors) to {output}\n"
    assert result.stderr.startswith("scored 4/4 (1 errors)")
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 5]
    assert [len(r.get("items", [])) for r in records] == [3, 3, 0, 3]
    assert records[2]["error"] == "not a user id: 'three'"


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["ecommerce-client"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
