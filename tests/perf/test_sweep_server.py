"""Sweeps against the real tritonserver with the real perf_analyzer: they complete, write
their report, and load every model's original config back, also when interrupted."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient
import yaml

from builders import names
from perf.tuning import report, spec, sweep
from perf.tuning.sweep import Sweep
from server import TritonServer

ROOT = Path(__file__).resolve().parents[2]
# Every query encoder: the single-model sweeps tune the teacher, search pins a student.
SEARCH_MODELS = [
    names.SEARCH,
    names.QUERY_TOKENIZER,
    *names.QUERY_ENCODERS,
    names.SEARCH_INDEX,
    names.SEARCH_RETRIEVAL,
    names.HYBRID_RETRIEVAL,
    names.SEARCH_QUERY,
    names.SEARCH_RANKING,
    names.RANKING_FEATURES,
    names.SEARCH_RANKER,
    names.TOP_K,
]
# Short windows and a wide stability band: the tests check the mechanics, not the numbers.
# Short windows of a few dozen requests: one slow request on 2 shared cores can make a window
# look unstable, so perf_analyzer gets more of them before it gives up.
QUICK = {"interval_ms": 500, "stability_percentage": 300, "max_trials": 12}


@pytest.fixture(scope="module")
def served(small_repository: Path, tmp_path_factory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("perf") / "repo"
    shutil.copytree(small_repository, repo)
    with TritonServer(
        repo, model_control="explicit", load_models=SEARCH_MODELS, exit_timeout_secs=5
    ) as server:
        yield server


def delay(server: TritonServer, model: str) -> int:
    config = httpclient.InferenceServerClient(server.http_url).get_model_config(model)
    return int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0))


def sweep_file(tmp_path: Path, server: TritonServer, **changes) -> Path:
    document = {
        "model": "text_encoder",
        "repository": str(server.model_repository),
        "search": "brute",
        "slo": {"p99_ms": 5000},
        "load": {"concurrency": [1, 2]},
        "space": {"text_encoder": {"max_queue_delay_microseconds": [0, 3000]}},
        "measurement": QUICK,
        "input_data": {"samples": 64},
        "capacity": {"target_qps": 500},
        **changes,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.slow
def test_tiny_sweep_completes_and_restores(served, tmp_path):
    original = delay(served, "text_encoder")
    assert original not in (0, 3000)
    seen = []
    parsed = spec.load(sweep_file(tmp_path, served))
    result = Sweep(parsed, served, tmp_path / "run", progress=seen.append).run()
    assert [len(t.measurements) for t in result.trials] == [2, 2]
    assert all(t.error is None for t in result.trials)
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[-1].total == 4
    assert all(m.throughput > 0 and m.p99_us > 0 for t in result.trials for m in t.measurements)
    assert delay(served, "text_encoder") == original
    summary = report.write(result, tmp_path / "run")
    assert summary["feasible"] and summary["measurements"] == 4
    assert (tmp_path / "run" / "chosen" / "text_encoder" / "config.pbtxt").is_file()
    assert (tmp_path / "run" / "latency_breakdown.png").stat().st_size > 0
    assert json.loads((tmp_path / "run" / "input_data.json").read_text())["data"][0]["input_ids"]


@pytest.mark.slow
def test_interrupt_from_progress_restores(served, tmp_path):
    original = delay(served, "text_encoder")
    applied = []

    def interrupt(progress):
        applied.append(delay(served, "text_encoder"))
        raise KeyboardInterrupt

    parsed = spec.load(sweep_file(tmp_path, served))
    with pytest.raises(KeyboardInterrupt):
        Sweep(parsed, served, tmp_path / "run", progress=interrupt).run()
    assert applied == [0]  # the first config was live when the interrupt came
    assert delay(served, "text_encoder") == original


@pytest.mark.slow
def test_sigint_to_the_cli_restores(served, tmp_path):
    original = delay(served, "text_encoder")
    path = sweep_file(tmp_path, served, load={"concurrency": [1, 2, 4, 8]})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perf",
            "sweep",
            str(path),
            "--url",
            served.http_url,
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while delay(served, "text_encoder") == original and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delay(served, "text_encoder") == 0, "the sweep never applied its first config"
        time.sleep(1.0)  # inside a perf_analyzer run
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "original configs are loaded back" in stderr
    assert delay(served, "text_encoder") == original


@pytest.mark.slow
def test_pipeline_sweep_reports_stages_and_restores(served, tmp_path):
    roles = spec.pipeline_roles(served.model_repository, names.SEARCH)
    query = roles["query"]
    originals = {m: delay(served, m) for m in (query, roles["ranking"])}
    path = sweep_file(
        tmp_path,
        served,
        model="search",
        search="smart",
        load={"concurrency": [2]},
        space={
            "query": {"max_queue_delay_microseconds": [0, 3000]},  # by its role
            names.SEARCH_RANKING: {"max_queue_delay_microseconds": [0]},  # by its name
        },
    )
    result = Sweep(spec.load(path), served, tmp_path / "run", progress=None).run()
    assert len(result.trials) == 2 and all(len(t.measurements) == 1 for t in result.trials)
    stages = result.trials[0].measurements[0].stages
    assert set(stages) == set(spec.pipeline_stages(served.model_repository, names.SEARCH))
    assert stages[query].compute_infer_us > 0
    assert {m: delay(served, m) for m in originals} == originals


def test_unknown_model_on_the_cli(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": "nosuch",
                "repository": str(tmp_path),
                "slo": {"p99_ms": 1},
                "load": {"concurrency": [1]},
                "space": {"nosuch": {"instance_count": [1]}},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "perf", "sweep", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: unknown model 'nosuch'" in result.stderr


@pytest.mark.slow
def test_a_confirmation_round_keeps_the_winner_only_if_it_wins_again(served, tmp_path):
    original = delay(served, "text_encoder")
    path = sweep_file(
        tmp_path,
        served,
        confirm_rounds=1,
        load={"concurrency": [2]},
        space={"text_encoder": {"max_queue_delay_microseconds": [original, 3000]}},
    )
    result = Sweep(spec.load(path), served, tmp_path / "run", progress=None).run()
    searched = result.trials[:2]
    if max(searched, key=lambda t: t.score(5000)) is searched[0]:  # the original delay won
        assert result.confirmation is None and len(result.trials) == 2
    else:
        # the original configs, then the winner, once more
        assert [t.config for t in result.trials[2:]] == [sweep.ORIGINAL, searched[1].config]
        ((original_figure, winner_figure),) = result.confirmation["rounds"]
        assert result.confirmation["kept"] == (winner_figure > original_figure)
        chosen = searched[1] if result.confirmation["kept"] else result.trials[2]
        assert result.best is chosen
        summary = report.write(result, tmp_path / "run")
        assert summary["confirmation"] == result.confirmation
        assert "Confirmation of config #1" in (tmp_path / "run" / "report.md").read_text()
    assert delay(served, "text_encoder") == original
