"""Triton Python-backend model `lexical_index`: query strings to BM25 candidates.

Copied as `model.py` into a version folder next to `lexical.py`, `tokenization.py` (for
`decode_query`) and the saved index `bm25/`. Config: `max_batch_size` > 0 with dynamic
batching; inputs `query` TYPE_STRING dims [1] and `dense_indexes` TYPE_INT64 dims [-1] (the
dense candidates, -1 = padding); outputs `candidate_indexes` TYPE_INT64 dims [N] (-1 =
padding), `candidate_scores` TYPE_FP32 dims [N] (BM25, best first) and `bm25_of_dense`
TYPE_FP32 dims [-1] (the BM25 of each dense candidate). A query no item matches is all
padding, not an error: the dense candidates still answer it.
"""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from lexical import LexicalIndex  # noqa: E402
from tokenization import decode_query  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        outputs = {o["name"]: o for o in config["output"]}
        self.num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        self.index = LexicalIndex.load(VERSION_DIR)

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy().reshape(-1)
            dense = pb_utils.get_input_tensor_by_name(request, "dense_indexes").as_numpy()
            indexes, scores, bm25_of_dense = self.index.search(
                [decode_query(q) for q in queries.tolist()], self.num_candidates, dense
            )
        except ValueError as err:  # items to score outside the catalog
            return pb_utils.InferenceResponse(
                output_tensors=[],
                error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG),
            )
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return pb_utils.InferenceResponse(
                output_tensors=[],
                error=pb_utils.TritonError(
                    f"lexical retrieval failed: {type(err).__name__}: {err}",
                    pb_utils.TritonError.INTERNAL,
                ),
            )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("candidate_indexes", indexes),
                pb_utils.Tensor("candidate_scores", scores),
                pb_utils.Tensor("bm25_of_dense", bm25_of_dense),
            ]
        )
