"""What a hit's ``score`` means in each mode, as small pure functions.

* ``dense``: the cosine similarity of the chunk's vector to the query's, in [-1, 1].
* ``keyword``: the chunk's BM25 score (FTS5's formula), 0 or more, unbounded; its scale
  grows with the number and rarity of the query's words.
* ``hybrid`` with ``fusion="weighted"`` (the default):
  ``alpha * cosine+ + (1 - alpha) * bm25 / (bm25 + BM25_HALF)``, in [0, 1], where
  ``cosine+`` is the chunk's cosine clipped to [0, 1] (:func:`unit_cosine`; computed for
  the keyword side's candidates that the dense side did not retrieve) and the BM25 term
  is a fixed saturating map (:func:`saturated`: half way to 1 at ``BM25_HALF``; 0 for a
  chunk the keyword side did not retrieve). Neither map looks at the other hits of the
  query, so a hit's score does not depend on what else was found, and scores are
  comparable across queries. (Where the keyword side is PostgreSQL's ``ts_rank``, which
  has no fixed scale, weighted fusion min-max normalises both sides per query instead.)
* ``hybrid`` with ``fusion="rrf"``: ``Σ w / (rrf_k + rank)``, rank-based; it says where a
  hit ranked, not how well it matched, so it is not comparable across queries.

:func:`at_least` is ``min_score``: it keeps the hits that score at least a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

BM25_HALF = 40.0
"""The BM25 score that :func:`saturated` maps to 0.5 (chosen on SciFact's train split,
``benchmarks/scores.py``)."""

Floats = npt.NDArray[np.float64]
T = TypeVar("T")


def unit_cosine(cosine: npt.ArrayLike) -> Floats:
    """Cosine similarities clipped to [0, 1]: no similarity and opposite count alike."""
    return np.clip(np.asarray(cosine, dtype=np.float64), 0.0, 1.0)


def saturated(bm25: npt.ArrayLike, half: float = BM25_HALF) -> Floats:
    """BM25 scores mapped to [0, 1) by ``s / (s + half)``: 0 stays 0, ``half`` maps to
    0.5, and the map rises strictly with the score (Robertson's saturation, applied to the
    whole score). Negative scores count as 0."""
    scores = np.maximum(np.asarray(bm25, dtype=np.float64), 0.0)
    mapped: Floats = scores / (scores + half)
    return mapped


def at_least(scored: Sequence[T], scores: Sequence[float], min_score: float | None) -> list[T]:
    """The items whose score is at least ``min_score`` (all of them when it is ``None``),
    in their order."""
    if min_score is None:
        return list(scored)
    return [item for item, score in zip(scored, scores, strict=True) if score >= min_score]
