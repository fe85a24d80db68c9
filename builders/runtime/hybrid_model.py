"""Triton Python-backend model `hybrid_retrieval`: BM25 retrieval and its fusion with the
dense candidates, one query-only stage.

Copied as `model.py` into a version folder next to `lexical.py` and the saved BM25 index
(`bm25/`), `synonyms.py` (and `synonyms.txt`, where the version was built with a synonyms
file: `lexical.LexicalIndex.load` reads it), `fusion.py`, `fusion.json` (this version's
`FusionSettings`: versions share the config), `item_embeddings.npy` (the paired search
index's), `tokenization.py` (for `decode_query`) and `stage_glue.py`. Config:
`max_batch_size` > 0 with dynamic batching; inputs `query` TYPE_STRING dims [1],
`dense_indexes` TYPE_INT64 and `dense_scores` TYPE_FP32 dims [-1] (the dense index's
candidates, best first, -1 = padding) and `query_embedding` TYPE_FP32 dims [dim]; outputs
`candidate_indexes` TYPE_INT64 dims [N], `candidate_scores` (the fused score),
`candidate_dense_scores` and `candidate_lexical_scores` TYPE_FP32 dims [N], in fused order
(see `fusion.hybrid`). A batch is one `hybrid` call; a malformed request gets an error
response of its own. A query no item matches lexically is answered by the dense candidates
alone.
"""

import json
import sys
from pathlib import Path

import numpy as np

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from fusion import EMBEDDINGS_FILE, FusionSettings, hybrid  # noqa: E402
from lexical import LexicalIndex  # noqa: E402
from tokenization import decode_query  # noqa: E402


class TritonPythonModel:
    name = "hybrid retrieval"
    inputs = ("query", "dense_indexes", "dense_scores", "query_embedding")
    outputs = (
        "candidate_indexes",
        "candidate_scores",
        "candidate_dense_scores",
        "candidate_lexical_scores",
    )
    invalid = ValueError  # FusionError and the lexical index's refusals

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        outputs = {o["name"]: o for o in config["output"]}
        self.num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        self.index = LexicalIndex.load(VERSION_DIR)
        self.settings = FusionSettings.load(VERSION_DIR)
        self.item_embeddings = np.load(VERSION_DIR / EMBEDDINGS_FILE, mmap_mode="r")

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        arrays = stage_glue.stack(group)
        fused = hybrid(
            [decode_query(query) for query in arrays["query"].reshape(-1).tolist()],
            arrays["query_embedding"],
            arrays["dense_indexes"],
            arrays["dense_scores"],
            self.index,
            self.item_embeddings,
            self.num_candidates,
            self.settings,
        )
        return stage_glue.split(group, *fused)
