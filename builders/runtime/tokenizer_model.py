"""Triton Python-backend model: query strings to the text encoder's inputs.

Copied as `model.py` into a version folder next to `tokenization.py`, `stage_glue.py` and
`tokenizer.json`. Config: `max_batch_size` > 0 with dynamic batching; input `query`
TYPE_STRING dims [1]; outputs `input_ids` and `attention_mask` TYPE_INT64 dims [-1], as wide
as the smallest of the parameter `length_buckets` (e.g. "8,16,32") that holds the request's
longest query, or `max_length` (parameter, default 32) without buckets. A batch is one
tokenizer call, each request still padded to its own width; a request with an empty query
gets an INVALID_ARG error response of its own.
"""

import json
import os
import sys
from pathlib import Path

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

# A stage shares the node's cores with the other stages and tokenises a dynamic batch of a
# few short queries: there the tokenizers library's thread pool costs about twice the CPU of
# encoding the batch on the calling thread. Offline embedding, in large batches, keeps it.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import stage_glue  # noqa: E402
from tokenization import EmptyQueryError, QueryTokenizer  # noqa: E402


class TritonPythonModel:
    name = "tokenisation"
    inputs = ("query",)
    outputs = ("input_ids", "attention_mask")
    invalid = EmptyQueryError

    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = QueryTokenizer.from_parameters(VERSION_DIR / "tokenizer.json", parameters)

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        return self.tokenizer.encode_each(
            [inputs["query"].reshape(-1).tolist() for inputs in group]
        )
