"""Triton Python-backend model `top_k`: ranked candidates to the pipelines' answer.

Copied as `model.py` into a version folder next to `topk.py` and `item_ids.npy` (the
catalog's item ids in item-index order). Config: `max_batch_size` > 0 with dynamic
batching; inputs `candidate_indexes` TYPE_INT64 dims [-1] (-1 = padding),
`candidate_scores` TYPE_FP32 dims [-1] and `k` TYPE_INT32 dims [1]; outputs `item_ids`
TYPE_INT64 dims [-1], `scores` TYPE_FP32 dims [-1] (best first) and `truncated`
TYPE_BOOL dims [1]. Each request is answered on its own (its own k and length), so a
bad `k` gets an INVALID_ARG error of its own and the rest of the batch is answered.
"""

import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from topk import RequestError, parse_k, results  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.item_ids = np.load(VERSION_DIR / "item_ids.npy")

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        def get(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        try:
            k = parse_k(get("k"))
            ids, scores, truncated = results(
                self.item_ids, get("candidate_indexes"), get("candidate_scores"), k
            )
        except RequestError as err:
            return _error_response(str(err), pb_utils.TritonError.INVALID_ARG)
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return _error_response(
                f"top-k failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL
            )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("item_ids", ids.reshape(1, -1)),
                pb_utils.Tensor("scores", scores.reshape(1, -1)),
                pb_utils.Tensor("truncated", np.array([[truncated]], dtype=np.bool_)),
            ]
        )


def _error_response(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
