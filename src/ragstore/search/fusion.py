"""Ranked-list fusion and diversification, as small pure functions.

* :func:`rrf`: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).
* :func:`weighted`: a convex combination of min-max normalised scores.
* :func:`mmr`: maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998).

A ranked list is a sequence of ``(key, score)`` pairs, best first, with each key at most
once. Fused results are sorted by fused score, highest first. Equal fused scores are broken
deterministically, independent of the order of the input lists: first by the key's best
(smallest) rank in any list with a positive weight, then by its best rank in any list,
then by ``str(key)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from itertools import pairwise
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ragstore.errors import InvalidInput

K = TypeVar("K", bound=Hashable)

Ranked = Sequence[tuple[K, float]]
"""A ranked list: ``(key, score)`` pairs, best first."""


def rrf(
    lists: Sequence[Ranked[K]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[K, float]]:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    Only positions matter; the input scores are ignored. A key missing from a list gets
    nothing from it. ``weights`` defaults to 1 for every list. The sum is exactly rounded
    (``math.fsum``), so permuting the lists with their weights gives the same result.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInput(f"k must be a positive integer, got {k!r}", field="k")
    w = _check_weights(weights if weights is not None else [1.0] * len(lists), len(lists))
    ranks = _rank_tables(lists)
    contributions: dict[K, list[float]] = {}
    for weight, table in zip(w, ranks, strict=True):
        for key, rank in table.items():
            contributions.setdefault(key, []).append(weight / (k + rank))
    fused = {key: math.fsum(parts) for key, parts in contributions.items()}
    return _sorted_fused(fused, ranks, w)


def weighted(lists: Sequence[Ranked[K]], weights: Sequence[float]) -> list[tuple[K, float]]:
    """Convex combination of min-max normalised scores: ``sum_i w_i * norm_i(d) / sum(w)``.

    Each list's scores are mapped to [0, 1] by ``(s - min) / (max - min)``; a list whose
    scores are all equal maps them to 1.0. A key missing from a list gets 0 from it.
    Scores must be finite and non-increasing down each list (best first). ``weights`` are
    divided by their sum, so they need not add up to 1.
    """
    w = _check_weights(weights, len(lists))
    total = math.fsum(w)
    ranks = _rank_tables(lists)
    contributions: dict[K, list[float]] = {}
    for index, (weight, ranked) in enumerate(zip(w, lists, strict=True)):
        for key, norm in _min_max(ranked, f"lists[{index}]").items():
            contributions.setdefault(key, []).append(weight * norm)
    fused = {key: math.fsum(parts) / total for key, parts in contributions.items()}
    return _sorted_fused(fused, ranks, w)


def mmr(
    candidates: Sequence[Hashable],
    relevance: Sequence[float],
    vectors: npt.ArrayLike,
    *,
    k: int,
    lambda_: float = 0.5,
) -> list[int]:
    """Maximal marginal relevance: pick up to ``k`` candidates greedily, returning indices.

    Each step picks the candidate maximising
    ``lambda_ * relevance[i] - (1 - lambda_) * max_{j picked} cos(vectors[i], vectors[j])``
    (the first pick is simply the most relevant). Rows of ``vectors`` are normalised to unit
    length, so similarity is cosine. Ties go to the lower index, so ``lambda_ = 1``
    reproduces the relevance order.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInput(f"k must be a positive integer, got {k!r}", field="k")
    if not (_is_real(lambda_) and 0.0 <= lambda_ <= 1.0):
        raise InvalidInput(f"lambda_ must be in [0, 1], got {lambda_!r}", field="lambda_")
    rel = _check_relevance(relevance, len(candidates))
    unit = _unit_rows(vectors, len(candidates))
    return _greedy_mmr(rel, unit, min(k, len(candidates)), float(lambda_))


def _greedy_mmr(
    rel: npt.NDArray[np.float64], unit: npt.NDArray[np.float64], count: int, lambda_: float
) -> list[int]:
    """The greedy MMR loop over validated, unit-normalised inputs."""
    if count == 0:
        return []
    picked = [int(np.argmax(rel))]  # the first pick is the most relevant, whatever lambda_
    max_sim = unit @ unit[picked[0]]  # each candidate's highest cosine to a picked one
    available = np.ones(len(rel), dtype=bool)
    available[picked[0]] = False
    for _ in range(count - 1):
        gain = lambda_ * rel - (1.0 - lambda_) * max_sim
        index = int(np.argmax(np.where(available, gain, -np.inf)))
        picked.append(index)
        available[index] = False
        max_sim = np.maximum(max_sim, unit @ unit[index])
    return picked


def _check_weights(weights: Sequence[float], count: int) -> list[float]:
    """One finite, non-negative weight per list, at least one of them positive."""
    values = list(weights)
    if len(values) != count:
        raise InvalidInput(
            f"expected {count} weights, one per list, got {len(values)}", field="weights"
        )
    for weight in values:
        if not _is_real(weight) or not math.isfinite(weight) or weight < 0:
            raise InvalidInput(f"weights must be finite and >= 0, got {weight!r}", field="weights")
    if count and not any(weight > 0 for weight in values):
        raise InvalidInput("at least one weight must be positive", field="weights")
    return [float(weight) for weight in values]


def _rank_tables(lists: Sequence[Ranked[K]]) -> list[dict[K, int]]:
    """Per list, key -> 1-based rank; a key repeated within a list is an error."""
    tables: list[dict[K, int]] = []
    for index, ranked in enumerate(lists):
        table: dict[K, int] = {}
        for rank, (key, _score) in enumerate(ranked, start=1):
            if key in table:
                raise InvalidInput(
                    f"key {key!r} appears twice in list {index}", field=f"lists[{index}]"
                )
            table[key] = rank
        tables.append(table)
    return tables


def _min_max(ranked: Ranked[K], field: str) -> dict[K, float]:
    """Scores of one best-first list mapped to [0, 1]; all-equal scores map to 1.0."""
    scores = [score for _key, score in ranked]
    for score in scores:
        if not _is_real(score) or not math.isfinite(score):
            raise InvalidInput(f"score is not a finite number: {score!r}", field=field)
    if any(later > earlier for earlier, later in pairwise(scores)):
        raise InvalidInput("scores must be non-increasing (best first)", field=field)
    if not scores:
        return {}
    high, low = scores[0], scores[-1]
    if high == low:
        return {key: 1.0 for key, _score in ranked}
    return {key: (score - low) / (high - low) for key, score in ranked}


def _sorted_fused(
    fused: dict[K, float], ranks: list[dict[K, int]], weights: list[float]
) -> list[tuple[K, float]]:
    """Fused scores, highest first, ties broken as the module docstring describes."""
    positive = [table for table, weight in zip(ranks, weights, strict=True) if weight > 0]

    def order(key: K) -> tuple[float, float, int, str, str]:
        best_weighted = min((t[key] for t in positive if key in t), default=math.inf)
        best_any = min(t[key] for t in ranks if key in t)
        return (-fused[key], best_weighted, best_any, str(key), type(key).__qualname__)

    return [(key, fused[key]) for key in sorted(fused, key=order)]


def _check_relevance(relevance: Sequence[float], count: int) -> npt.NDArray[np.float64]:
    """One finite relevance score per candidate, as float64."""
    if len(relevance) != count:
        raise InvalidInput(
            f"expected {count} relevance scores, one per candidate, got {len(relevance)}",
            field="relevance",
        )
    rel = np.asarray(relevance, dtype=np.float64).reshape(count)
    if not np.all(np.isfinite(rel)):
        raise InvalidInput("relevance scores must be finite", field="relevance")
    return rel


def _unit_rows(vectors: npt.ArrayLike, count: int) -> npt.NDArray[np.float64]:
    """``vectors`` as a (count, dim) float64 array with rows scaled to unit length."""
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != count:
        raise InvalidInput(
            f"vectors must have shape ({count}, dim), got {array.shape}", field="vectors"
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(array)) or np.any(norms == 0):
        raise InvalidInput("vectors must be finite and non-zero", field="vectors")
    unit: npt.NDArray[np.float64] = array / norms
    return unit


def _is_real(value: object) -> bool:
    """A real number (numpy scalars included), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
