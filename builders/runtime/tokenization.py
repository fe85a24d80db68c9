"""Query tokenisation for the text encoder, shared by the served model and offline embedding.

Copied next to `tokenizer.json` into the tokenizer model's version folder, so it imports
only the standard library, numpy and `tokenizers`. Every batch comes out padded to exactly
`max_length` so that Triton's dynamic batcher can join the encoder's requests (equal shapes).
Normalisation (lower-casing, accent stripping, control-character removal) is the one
`tokenizer.json` declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

DEFAULT_MAX_LENGTH = 32
# Queries are cut to this many characters before tokenising, so a huge query stays cheap.
# Far more than `max_length` tokens of ordinary text need.
MAX_QUERY_CHARS = 4096
_MAX_UTF8_BYTES_PER_CHAR = 4
# [CLS], at least one token, [SEP].
_MIN_MAX_LENGTH = 3


class EmptyQueryError(ValueError):
    """A query with nothing to search for: no token with a letter or digit. Empty queries,
    whitespace, control characters, invalid UTF-8 (normalisation drops the replacement
    character), punctuation and symbols alone, or only characters outside the vocabulary
    (emoji: `[UNK]`)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"empty query: query {index} has no letters or digits to search for")
        self.index = index


def decode_query(query: bytes | str) -> str:
    """The query as text: UTF-8 with invalid bytes replaced, cut to MAX_QUERY_CHARS."""
    if isinstance(query, bytes):
        # Each character takes at most 4 bytes, so the cut never shortens the text below
        # MAX_QUERY_CHARS; the character cut below is the one that counts.
        query = query[: MAX_QUERY_CHARS * _MAX_UTF8_BYTES_PER_CHAR].decode(
            "utf-8", errors="replace"
        )
    return query[:MAX_QUERY_CHARS]


class QueryTokenizer:
    """Texts to the encoder's `input_ids` and `attention_mask`, int64 [n, max_length]."""

    def __init__(self, tokenizer_json: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < _MIN_MAX_LENGTH:
            raise ValueError(f"max_length must be at least {_MIN_MAX_LENGTH}, got {max_length}")
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._unknown = getattr(self._tokenizer.model, "unk_token", None)
        padding = self._tokenizer.padding or {"pad_id": 0, "pad_token": "[PAD]"}
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(
            length=max_length, pad_id=padding["pad_id"], pad_token=padding["pad_token"]
        )

    def encode(self, texts: Sequence[bytes | str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise a batch; raises EmptyQueryError naming the first empty query."""
        encodings = self._tokenizer.encode_batch([decode_query(text) for text in texts])
        for index, encoding in enumerate(encodings):
            if not self._searchable(encoding):
                raise EmptyQueryError(index)
        shape = (len(encodings), self.max_length)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return input_ids, attention_mask.reshape(shape)

    def _searchable(self, encoding) -> bool:
        """Whether a token other than [CLS], [SEP], padding and [UNK] has a letter or digit."""
        return any(
            not special and token != self._unknown and any(c.isalnum() for c in token)
            for token, special in zip(encoding.tokens, encoding.special_tokens_mask)
        )
