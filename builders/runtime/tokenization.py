"""Query tokenisation for the text encoder, shared by the served model and offline embedding.

Copied next to `tokenizer.json` into the tokenizer model's version folder, so it imports
only the standard library, numpy and `tokenizers`. Every batch comes out padded to a few
fixed widths so that Triton's dynamic batcher can join the encoder's requests (it batches
equal shapes only): to `max_length`, or with length buckets (e.g. 8, 16, 32) to the
smallest bucket that holds the batch's longest query, so the encoder's cost follows the
queries' real length (logged queries average under 6 tokens) while the requests of one
bucket still batch together. The requests of one dynamic batch are tokenised in one call
(`encode_each`), each still padded to its own width.
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


def parse_buckets(text: str) -> tuple[int, ...]:
    """Length buckets from `"8,16,32"` (empty text: none)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"length buckets must be integers like '8,16,32', got {text!r}") from None


def check_buckets(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
    """Ascending widths up to `max_length`, which is always the last (so every query fits);
    no buckets means padding to `max_length`."""
    widths = sorted(set(buckets))
    bad = [w for w in widths if not _MIN_MAX_LENGTH <= w <= max_length]
    if bad:
        raise ValueError(
            f"length buckets must lie in {_MIN_MAX_LENGTH}..{max_length} (max_length), got {bad}"
        )
    return tuple(w for w in widths if w < max_length) + (max_length,)


def longest_padding(max_length: int) -> tuple[int, ...]:
    """Buckets of every width: each batch is padded to its own longest text (offline
    embedding and batch-free servers, where no batcher needs equal shapes)."""
    return tuple(range(_MIN_MAX_LENGTH, max_length + 1))


class QueryTokenizer:
    """Texts to the encoder's `input_ids` and `attention_mask`, int64 [n, width]: width is
    `max_length`, or the smallest of `buckets` that holds the longest of the n texts."""

    def __init__(
        self,
        tokenizer_json: str | Path,
        max_length: int = DEFAULT_MAX_LENGTH,
        buckets: tuple[int, ...] = (),
    ) -> None:
        if max_length < _MIN_MAX_LENGTH:
            raise ValueError(f"max_length must be at least {_MIN_MAX_LENGTH}, got {max_length}")
        self.max_length = max_length
        self.buckets = check_buckets(buckets, max_length)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._unknown = getattr(self._tokenizer.model, "unk_token", None)
        padding = self._tokenizer.padding or {"pad_id": 0, "pad_token": "[PAD]"}
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(
            length=max_length, pad_id=padding["pad_id"], pad_token=padding["pad_token"]
        )

    @classmethod
    def from_parameters(cls, tokenizer_json: str | Path, parameters: dict) -> QueryTokenizer:
        """The tokenizer a model config's `parameters` (as Triton passes them) describe:
        `max_length` and `length_buckets` (`"8,16,32"`)."""

        def value(key: str, default: str) -> str:
            return parameters.get(key, {}).get("string_value", default)

        max_length = int(value("max_length", str(DEFAULT_MAX_LENGTH)))
        return cls(tokenizer_json, max_length, parse_buckets(value("length_buckets", "")))

    def encode(
        self, texts: Sequence[bytes | str], searchable: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise a batch; raises EmptyQueryError naming the first query without a letter
        or digit (with `searchable=False`, only one without any token: item titles)."""
        encoded = self.encode_each([texts], searchable)[0]
        if isinstance(encoded, EmptyQueryError):
            raise encoded
        return encoded

    def encode_each(
        self, batches: Sequence[Sequence[bytes | str]], searchable: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray] | EmptyQueryError]:
        """`encode` of several batches (a Python model's requests) in one tokenizer call:
        each batch's arrays, padded to its own width, or the EmptyQueryError refusing it."""
        texts = [decode_query(text) for batch in batches for text in batch]
        encodings = self._tokenizer.encode_batch(texts)
        shape = (len(encodings), self.max_length)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        attention_mask = attention_mask.reshape(shape)
        lengths = attention_mask.sum(axis=1)
        answers, start = [], 0
        for batch in batches:
            rows = slice(start, start + len(batch))
            start = rows.stop
            empty = self._first_empty(encodings[rows], searchable)
            if empty is not None:
                answers.append(EmptyQueryError(empty))
                continue
            width = self.width(int(lengths[rows].max(initial=0)))
            # Padding is on the right, so cutting the max_length-wide arrays is exact.
            answers.append((input_ids[rows, :width].copy(), attention_mask[rows, :width].copy()))
        return answers

    def width(self, longest: int) -> int:
        """The padded width for a batch whose longest sequence has `longest` tokens."""
        return next(w for w in self.buckets if w >= longest)

    def _first_empty(self, encodings, searchable: bool) -> int | None:
        """The position of the first encoding without a letter or digit (with
        `searchable=False`, without any token), or None."""
        for index, encoding in enumerate(encodings):
            # Special tokens ([CLS], [SEP], padding) are marked 1: all 1 means no token.
            has_token = 0 in encoding.special_tokens_mask
            if not (self._searchable(encoding) if searchable else has_token):
                return index
        return None

    def _searchable(self, encoding) -> bool:
        """Whether a token other than [CLS], [SEP], padding and [UNK] has a letter or digit."""
        return any(
            not special and token != self._unknown and any(c.isalnum() for c in token)
            for token, special in zip(encoding.tokens, encoding.special_tokens_mask)
        )
