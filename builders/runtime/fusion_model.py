"""Triton Python-backend model `hybrid_fusion`: dense and lexical candidates to one list.

Copied as `model.py` into a version folder next to `fusion.py`, `stage_glue.py`,
`fusion.json` (this version's `FusionSettings`: versions share the config) and
`item_embeddings.npy` (the paired search index's). Config: `max_batch_size` > 0 with dynamic
batching; inputs `dense_indexes`, `lexical_indexes` TYPE_INT64 dims [-1], `dense_scores`,
`lexical_scores`, `bm25_of_dense` TYPE_FP32 dims [-1] (each list best first, -1 = padding)
and `query_embedding` TYPE_FP32 dims [dim]; outputs `candidate_indexes` TYPE_INT64 dims [N],
`candidate_scores` (the fused score), `candidate_dense_scores` and `candidate_lexical_scores`
TYPE_FP32 dims [N], in fused order (see `fusion.fuse`). A batch is one `fuse` call; a
malformed request gets an error response of its own.
"""

import json
import sys
from pathlib import Path

import numpy as np

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from fusion import EMBEDDINGS_FILE, FusionError, FusionSettings, dense_scores_of, fuse  # noqa: E402


class TritonPythonModel:
    name = "fusion"
    inputs = (
        "dense_indexes",
        "dense_scores",
        "lexical_indexes",
        "lexical_scores",
        "bm25_of_dense",
        "query_embedding",
    )
    outputs = (
        "candidate_indexes",
        "candidate_scores",
        "candidate_dense_scores",
        "candidate_lexical_scores",
    )
    invalid = FusionError

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        outputs = {o["name"]: o for o in config["output"]}
        self.num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        self.settings = FusionSettings.load(VERSION_DIR)
        self.item_embeddings = np.load(VERSION_DIR / EMBEDDINGS_FILE, mmap_mode="r")

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        arrays = stage_glue.stack(group)
        fused = fuse(
            arrays["dense_indexes"],
            arrays["dense_scores"],
            arrays["lexical_indexes"],
            arrays["lexical_scores"],
            arrays["bm25_of_dense"],
            dense_scores_of(
                self.item_embeddings, arrays["query_embedding"], arrays["lexical_indexes"]
            ),
            self.num_candidates,
            self.settings,
        )
        return stage_glue.split(group, *fused)
