"""Triton Python-backend model `hybrid_fusion`: dense and lexical candidates to one list.

Copied as `model.py` into a version folder next to `fusion.py`, `fusion.json` (this version's
`FusionSettings`: versions share the config) and `item_embeddings.npy` (the paired
search index's). Config: `max_batch_size` > 0 with dynamic batching; inputs `dense_indexes`,
`lexical_indexes` TYPE_INT64 dims [-1], `dense_scores`, `lexical_scores`, `bm25_of_dense`
TYPE_FP32 dims [-1] (each list best first, -1 = padding) and `query_embedding` TYPE_FP32
dims [dim]; outputs `candidate_indexes` TYPE_INT64 dims [N], `candidate_scores` (the fused
score), `candidate_dense_scores` and `candidate_lexical_scores` TYPE_FP32 dims [N], in fused
order (see `fusion.fuse`). A malformed request gets an error response of its own; the others
are answered.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from fusion import (  # noqa: E402
    EMBEDDINGS_FILE,
    FusionError,
    FusionSettings,
    dense_scores_of,
    fuse,
)

_OUTPUTS = (
    "candidate_indexes",
    "candidate_scores",
    "candidate_dense_scores",
    "candidate_lexical_scores",
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        outputs = {o["name"]: o for o in config["output"]}
        self.num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        self.settings = FusionSettings.load(VERSION_DIR)
        self.item_embeddings = np.load(VERSION_DIR / EMBEDDINGS_FILE, mmap_mode="r")

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        def get(name):
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        try:
            lexical_indexes = get("lexical_indexes")
            fused = fuse(
                get("dense_indexes"),
                get("dense_scores"),
                lexical_indexes,
                get("lexical_scores"),
                get("bm25_of_dense"),
                dense_scores_of(self.item_embeddings, get("query_embedding"), lexical_indexes),
                self.num_candidates,
                self.settings,
            )
        except FusionError as err:
            return _error_response(str(err), pb_utils.TritonError.INVALID_ARG)
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return _error_response(
                f"fusion failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL
            )
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in zip(_OUTPUTS, fused)]
        )


def _error_response(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
