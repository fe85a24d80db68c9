"""Triton Python-backend model `lexical_index`: query strings to BM25 candidates.

Copied as `model.py` into a version folder next to `lexical.py`, `tokenization.py` (for
`decode_query`), `stage_glue.py` and the saved index `bm25/`. Config: `max_batch_size` > 0
with dynamic batching; inputs `query` TYPE_STRING dims [1] and `dense_indexes` TYPE_INT64
dims [-1] (the dense candidates, -1 = padding); outputs `candidate_indexes` TYPE_INT64 dims
[N] (-1 = padding), `candidate_scores` TYPE_FP32 dims [N] (BM25, best first) and
`bm25_of_dense` TYPE_FP32 dims [-1] (the BM25 of each dense candidate). A batch is one
`LexicalIndex.search`; dense candidates outside the catalog are an INVALID_ARG error of the
request's own. A query no item matches is all padding, not an error: the dense candidates
still answer it.
"""

import json
import sys
from pathlib import Path

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from lexical import LexicalIndex  # noqa: E402
from tokenization import decode_query  # noqa: E402


class TritonPythonModel:
    name = "lexical retrieval"
    inputs = ("query", "dense_indexes")
    outputs = ("candidate_indexes", "candidate_scores", "bm25_of_dense")
    invalid = ValueError

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        outputs = {o["name"]: o for o in config["output"]}
        self.num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        self.index = LexicalIndex.load(VERSION_DIR)

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        arrays = stage_glue.stack(group)
        queries = [decode_query(query) for query in arrays["query"].reshape(-1).tolist()]
        found = self.index.search(queries, self.num_candidates, arrays["dense_indexes"])
        return stage_glue.split(group, *found)
