"""Every stage the builder writes has a bounded queue derived from the build's SLO, in
every profile; the ensembles have none of their own."""

from __future__ import annotations

from pathlib import Path

from builders.specs import parse_pbtxt, queue_policy
from tests.conftest import TEST_SLO_MS


def test_every_stage_config_bounds_its_queue_for_the_slo(small_repository: Path):
    configs = sorted(small_repository.glob("*/config.pbtxt"))
    configs += sorted(small_repository.glob("*/configs/*.pbtxt"))
    stages = 0
    for path in configs:
        config = parse_pbtxt(path.read_text())
        if config.get("platform") == "ensemble":
            assert "dynamic_batching" not in config, path
            continue
        expected = queue_policy(TEST_SLO_MS, config["max_batch_size"])
        assert config["dynamic_batching"]["default_queue_policy"] == {
            "default_timeout_microseconds": str(expected.timeout_microseconds),
            "allow_timeout_override": True,
            "max_queue_size": expected.max_queue_size,
        }, path
        stages += 1
    assert stages > 5
