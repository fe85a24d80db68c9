"""Triton Python-backend model: query strings to the text encoder's inputs.

Copied as `model.py` into a version folder next to `tokenization.py` and `tokenizer.json`.
Config: `max_batch_size` > 0 with dynamic batching; input `query` TYPE_STRING dims [1];
outputs `input_ids` and `attention_mask` TYPE_INT64 dims [-1], as wide as the smallest of
the parameter `length_buckets` (e.g. "8,16,32") that holds the request's longest query, or
`max_length` (parameter, default 32) without buckets. A request with an empty query gets an
INVALID_ARG error response of its own; the other requests of the batch are answered.
"""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from tokenization import EmptyQueryError, QueryTokenizer  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = QueryTokenizer.from_parameters(VERSION_DIR / "tokenizer.json", parameters)

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy().reshape(-1)
        try:
            input_ids, attention_mask = self.tokenizer.encode(queries.tolist())
        except EmptyQueryError as err:
            return _error_response(str(err))
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return _error_response(f"tokenisation failed: {type(err).__name__}: {err}")
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("input_ids", input_ids),
                pb_utils.Tensor("attention_mask", attention_mask),
            ]
        )


def _error_response(message: str):
    return pb_utils.InferenceResponse(
        output_tensors=[],
        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG),
    )
