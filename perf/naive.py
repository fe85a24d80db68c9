"""The naive way to serve search: FastAPI, one request per model call, the query
encoder in PyTorch eager (the same all-MiniLM weights), no batching.

Retrieval, features and ranking run in-process from the repository's own files
(the same code path as the offline pipeline), so the answers match the served
pipeline's and only the serving differs.

`python -m perf.naive --repository model_repository --port 8090`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from builders import text_encoder
from builders.offline import OfflinePipeline
from builders.repository import model_versions


class EagerPipeline(OfflinePipeline):
    """The offline search pipeline with the query encoder in PyTorch eager."""

    def __init__(self, repo: Path) -> None:
        super().__init__(repo, "search", max(model_versions(repo, "search")))
        # One request at a time gains nothing from two threads; on 2 shared cores
        # their spin-waits made each call about ten times slower.
        torch.set_num_threads(1)
        self.encoder = text_encoder.load_reference()

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        tokenizer = self._sessions.get("tokenizer")
        if tokenizer is None:
            super().embed_queries(queries)  # loads the tokenizer
            tokenizer = self._sessions["tokenizer"]
        ids, mask = tokenizer.encode(queries)
        with torch.inference_mode():
            return self.encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


class SearchRequest(BaseModel):
    query: str
    user_id: int | None = None
    k: int = 10


def create_app(repo: Path) -> FastAPI:
    pipeline = EagerPipeline(repo)
    app = FastAPI()

    @app.post("/search")
    def search(request: SearchRequest) -> dict:
        users = None if request.user_id is None else [request.user_id]
        items, scores = pipeline.run(request.k, queries=[request.query], user_ids=users)[0]
        return {"item_ids": items.tolist(), "scores": scores.tolist()}

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.naive", description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    app = create_app(Path(args.repository).resolve())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
