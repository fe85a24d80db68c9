"""Triton Python-backend model: retrieval candidates to the ranker's `sparse` and `dense` inputs.

Copied as `model.py` into a version folder next to `features.py`, `stage_glue.py` and
`tables.npz`. Config: `max_batch_size` > 0; inputs `user_id` TYPE_INT64 dims [1] (optional:
absent means unknown users), `candidate_ids` TYPE_INT64 dims [-1] (item indexes, -1 = padding),
`candidate_scores` TYPE_FP32 dims [-1] (dense retrieval) and `lexical_scores` TYPE_FP32
dims [-1] (optional: absent means 0, as in recommend); outputs `sparse` TYPE_INT64 dims [-1, S] and
`dense` TYPE_FP32 dims [-1, D] (S, D: `features.NUM_SPARSE`, `features.NUM_DENSE`).
A batch is one `ranker_inputs` call; a malformed request gets an error response of its own.
"""

import sys
from pathlib import Path

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from features import FeatureError, FeatureTables, ranker_inputs  # noqa: E402


class TritonPythonModel:
    name = "feature lookup"
    inputs = ("user_id", "candidate_ids", "candidate_scores", "lexical_scores")
    outputs = ("sparse", "dense")
    invalid = FeatureError

    def initialize(self, args: dict) -> None:
        self.tables = FeatureTables.load(VERSION_DIR / "tables.npz")

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        arrays = stage_glue.stack(group)
        user_ids = arrays["user_id"]
        features = ranker_inputs(
            self.tables,
            None if user_ids is None else user_ids.reshape(-1),
            arrays["candidate_ids"],
            arrays["candidate_scores"],
            arrays["lexical_scores"],
        )
        return stage_glue.split(group, *features)
