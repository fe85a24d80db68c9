"""Ranking metrics on graded relevance, shared by the build's quality gate and `make quality`.

`ranked` is a list of item keys, best first (item ids or item indexes, as long as `grades`
uses the same keys); `grades` maps the graded items to their grade (0 and absent alike mean
not relevant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg(ranked: Sequence[int], grades: Mapping[int, int], k: int = 10) -> float:
    """NDCG@k with gains 2^grade - 1 (0 when nothing is graded)."""
    gains = [2 ** grades.get(int(item), 0) - 1 for item in ranked[:k]]
    ideal = sorted((2**grade - 1 for grade in grades.values()), reverse=True)[:k]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    best = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / best if best else 0.0


def recall(ranked: Sequence[int], grades: Mapping[int, int], k: int = 100) -> float:
    """Share of the query's best-graded items in the top k (of at most k of them)."""
    top_grade = max(grades.values())
    best = {item for item, grade in grades.items() if grade == top_grade}
    return len(best & {int(item) for item in ranked[:k]}) / min(len(best), k)
