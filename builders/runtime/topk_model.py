"""Triton Python-backend model `top_k`: ranked candidates to the pipelines' answer.

Copied as `model.py` into a version folder next to `topk.py`, `stage_glue.py` and
`item_ids.npy` (the catalog's item ids in item-index order). Config: `max_batch_size` > 0
with dynamic batching; inputs `candidate_indexes` TYPE_INT64 dims [-1] (-1 = padding),
`candidate_scores` TYPE_FP32 dims [-1] and `k` TYPE_INT32 dims [1]; outputs `item_ids`
TYPE_INT64 dims [-1], `scores` TYPE_FP32 dims [-1] (best first) and `truncated`
TYPE_BOOL dims [1]. A batch is ordered in one sort; each request keeps its own k and
output length, and a bad `k` gets an INVALID_ARG error of its own.
"""

import sys
from pathlib import Path

import numpy as np

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from topk import RequestError, results  # noqa: E402


class TritonPythonModel:
    name = "top-k"
    inputs = ("candidate_indexes", "candidate_scores", "k")
    outputs = ("item_ids", "scores", "truncated")
    invalid = RequestError

    def initialize(self, args: dict) -> None:
        self.item_ids = np.load(VERSION_DIR / "item_ids.npy")

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        requests = [(i["candidate_indexes"], i["candidate_scores"], i["k"]) for i in group]
        return [
            answer if isinstance(answer, RequestError) else _outputs(*answer)
            for answer in results(self.item_ids, requests)
        ]


def _outputs(item_ids, scores, truncated):
    """One request's answer shaped as the outputs: a batch of one."""
    return item_ids.reshape(1, -1), scores.reshape(1, -1), np.array([[truncated]], np.bool_)
