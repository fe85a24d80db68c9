"""Lexical retrieval: BM25 over the item texts' words and character trigrams, with `bm25s`.

Copied into the `hybrid_retrieval` model's version folder next to `hybrid_model.py` and
the saved index (`bm25/`). The build, the offline pipeline and the ranker's training examples use
the same `LexicalIndex`, so what the ranker learns from is what the stage serves.

Terms: the words as `bm25s` tokenises them (lower case, English stop words removed, Snowball
English stemming by PyStemmer; one-character words kept, unlike bm25s's default pattern, since
shoppers type sizes, plies and counts: "size 4", "3 ply", "2 batteries") plus the character
trigrams of each word of four or more characters, with its boundaries (`#hi`, `hik`, ...,
`ng#`), so a misspelt word still shares most of its terms with the right one ("sundess" and
"sundress" share 5 of 7). Shorter words get none: what a three-letter word shares with
others is one or two trigrams, which are noise, not typos ("tee" would match "tea tree").
Scored with bm25s's defaults (Lucene BM25, k1 = 1.5, b = 0.75). A query with no indexed
term (only stop words, or nothing an item has) matches nothing: every candidate is padding
(-1, score 0), and the dense candidates answer alone.

Synonyms (`synonyms.py`, the version's `synonyms.txt` when it has one) expand each query's
words before its trigrams are taken, never the item texts: an expanded query scores exactly as
if the shopper had typed the synonyms' words too (each added word once), so BM25 stays BM25
over one bag of query terms, and a query no rule matches scores as without synonyms.
"""

from __future__ import annotations

import re
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

if __package__:  # builders.runtime
    from .synonyms import FILE as SYNONYMS_FILE
    from .synonyms import Synonyms, read
else:  # a version folder, where synonyms.py lies next to this file
    from synonyms import FILE as SYNONYMS_FILE
    from synonyms import Synonyms, read

INDEX_FOLDER = "bm25"
#: The index of a padding candidate (fewer items match than candidates are asked for).
PADDING = -1
_STEMMER = Stemmer.Stemmer("english")
_WORD = r"(?u)\b\w+\b"
_SPLIT = re.compile(_WORD).findall
_STOPWORDS = frozenset(STOPWORDS_EN)


def words(texts: list[str]) -> list[list[str]]:
    """The indexed words of each text (lower case, stop words out, stemmed): what
    `bm25s.tokenize(texts, token_pattern=_WORD, stopwords="en", stemmer=_STEMMER,
    return_ids=False)` returns, without its per-call set-up (progress bars, a vocabulary of
    the call's words), which cost more than the work on a dynamic batch of short queries."""
    stem = _STEMMER.stemWords
    return [stem([w for w in _SPLIT(text.lower()) if w not in _STOPWORDS]) for text in texts]


def terms(texts: list[str], synonyms: Synonyms | None = None) -> list[list[str]]:
    """The indexed terms of each text: its words (expanded by `synonyms`, if any), then the
    character trigrams of its words of four or more characters."""
    analysed = words(texts)
    if synonyms is not None:
        analysed = [synonyms.expand(ws) for ws in analysed]
    return [
        [*ws, *(t for word in ws if len(word) >= 4 for t in _trigrams(word))] for ws in analysed
    ]


def synonyms_of(text: str, source: str) -> Synonyms:
    """A synonyms file's `text` (named `source` in errors), analysed as the index analyses."""
    return Synonyms(text, source, words)


def _trigrams(word: str) -> list[str]:
    """`~#hi`, `~hik`, ... (`~` marks a trigram, so it never equals a word)."""
    bounded = f"#{word}#"
    return [f"~{bounded[i : i + 3]}" for i in range(len(bounded) - 2)]


class LexicalIndex:
    def __init__(self, retriever: bm25s.BM25, synonyms: Synonyms | None = None) -> None:
        self.retriever = retriever
        self.synonyms = synonyms  # expands the queries
        self.n_items = int(retriever.scores["num_docs"])

    @classmethod
    def build(cls, texts: list[str], synonyms: Synonyms | None = None) -> LexicalIndex:
        """Index `texts` (item index = position); `synonyms` expand the queries."""
        if not texts:
            raise ValueError("the lexical index needs at least one item text")
        retriever = bm25s.BM25()
        retriever.index(terms(list(texts)), show_progress=False)
        return cls(retriever, synonyms)

    def save(self, folder: str | Path) -> None:
        """The index, and the synonyms file (as `synonyms.txt`) if it has one."""
        self.retriever.save(str(Path(folder) / INDEX_FOLDER))
        if self.synonyms is not None:
            (Path(folder) / SYNONYMS_FILE).write_text(self.synonyms.text, encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> LexicalIndex:
        """A saved index, with the folder's `synonyms.txt` if there is one."""
        path = Path(folder) / SYNONYMS_FILE
        synonyms = synonyms_of(read(path), str(path)) if path.exists() else None
        return cls(bm25s.BM25.load(str(Path(folder) / INDEX_FOLDER)), synonyms)

    def scores(self, query: str) -> np.ndarray:
        """BM25 of every item for one query, float32 [n_items]."""
        return self._scores(self._term_ids([query])[0])

    def _term_ids(self, queries: list[str]) -> list[list[int]]:
        """Each query's indexed terms as ids in the index's vocabulary (terms no item has left
        out), all queries tokenised in one call."""
        vocabulary = self.retriever.vocab_dict
        return [
            [vocabulary[t] for t in ts if t and t in vocabulary]
            for ts in terms(queries, self.synonyms)
        ]

    def _scores(self, term_ids: list[int]) -> np.ndarray:
        """BM25 of every item for one query's `term_ids`, float32 [n_items]."""
        return np.asarray(self.retriever.get_scores_from_ids(term_ids), dtype=np.float32)

    def search(
        self, queries: list[str], k: int, also: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best `k` items per query: (item indexes int64 [B, k], scores float32 [B, k]),
        best first, ties by item index, items without a matching term padding; and the
        scores of the items `also` names (int64 [B, M], -1 = padding: score 0), [B, M].
        The queries are tokenised together; bm25s scores and `best_items` picks one query
        at a time (bm25s has no batched scoring, and one `np.add.at` over the whole batch
        measured 2.4 times slower at 100k items)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        also = np.full((len(queries), 0), PADDING) if also is None else np.asarray(also)
        if also.shape[0] != len(queries):
            raise ValueError(f"{len(queries)} queries but {also.shape[0]} rows of items to score")
        if also.size and (also.min() < PADDING or also.max() >= self.n_items):
            raise ValueError(f"items to score must be in 0..{self.n_items - 1} (or -1)")
        indexes = np.full((len(queries), k), PADDING, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        also_scores = np.zeros(also.shape, dtype=np.float32)
        for row, term_ids in enumerate(self._term_ids(queries)):
            item_scores = self._scores(term_ids)
            also_scores[row] = np.where(also[row] >= 0, item_scores[also[row]], 0)
            top = best_items(item_scores, k)
            indexes[row, : len(top)] = top
            scores[row, : len(top)] = item_scores[top]
        return indexes, scores, also_scores


#: `best_items` samples every SAMPLE_STEP-th score of a catalog larger than SAMPLE_STEP * k.
SAMPLE_STEP = 64


def best_items(scores: np.ndarray, k: int) -> np.ndarray:
    """The indexes of the `k` best positive `scores`, best first, ties by index; fewer when
    fewer are positive.

    At 1M items a query's words and trigrams match a large share of the catalog, and sorting
    out every match costs more than scoring. So a large catalog's candidates are only the
    scores at or above a threshold, the best few of a strided sample (about 4 * k items
    reach it). When at least k items reach it, the k-th best score is at or above it, so the
    result is exactly the one over every match; otherwise every match is a candidate."""
    matched = None
    if len(scores) > SAMPLE_STEP * k:
        sample = scores[::SAMPLE_STEP]
        place = len(sample) - (4 * k // SAMPLE_STEP + 1)
        threshold = np.partition(sample, place)[place]
        if threshold > 0:
            matched = np.flatnonzero(scores >= threshold)
            if len(matched) < k:
                matched = None
    if matched is None:
        matched = np.flatnonzero(scores > 0)
    if len(matched) > k:
        kth_best = -np.partition(-scores[matched], k - 1)[k - 1]
        matched = matched[scores[matched] >= kth_best]  # every tie with the k-th best
    return matched[np.lexsort((matched, -scores[matched]))][:k]
