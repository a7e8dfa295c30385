"""Ranked-list fusion and diversification, as small pure functions.

* :func:`rrf`: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).
* :func:`weighted`: a convex combination of min-max normalised scores.
* :func:`absolute`: a convex combination of scores each put on a fixed [0, 1] scale, so
  that a key's fused score depends on its own scores only (comparable across queries).
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
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ragstore.errors import InvalidInput

K = TypeVar("K", bound=Hashable)

Ranked = Sequence[tuple[K, float]]
"""A ranked list: ``(key, score)`` pairs, best first."""
Scale = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
"""Maps a list's raw scores to [0, 1], never lowering a higher score's image."""


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
    table = _KeyTable(lists)
    parts = np.where(np.isfinite(table.ranks), np.asarray(w) / (k + table.ranks), 0.0)
    return table.ordered(_exact_row_sums(parts), w)


def weighted(lists: Sequence[Ranked[K]], weights: Sequence[float]) -> list[tuple[K, float]]:
    """Convex combination of min-max normalised scores: ``sum_i w_i * norm_i(d) / sum(w)``.

    Each list's scores are mapped to [0, 1] by ``(s - min) / (max - min)``; a list whose
    scores are all equal maps them to 1.0. A key missing from a list gets 0 from it.
    Scores must be finite and non-increasing down each list (best first). ``weights`` are
    divided by their sum, so they need not add up to 1.
    """
    w = _check_weights(weights, len(lists))
    total = math.fsum(w)
    table = _KeyTable(lists)
    parts = np.zeros(table.ranks.shape, dtype=np.float64)
    for index, (weight, ranked) in enumerate(zip(w, lists, strict=True)):
        parts[table.rows[index], index] = weight * _min_max(ranked, f"lists[{index}]")
    return table.ordered(_exact_row_sums(parts) / total, w)


def absolute(
    lists: Sequence[Ranked[K]], weights: Sequence[float], scales: Sequence[Scale]
) -> list[tuple[K, float]]:
    """Convex combination of scores on fixed scales: ``sum_i w_i * scale_i(s_i(d)) / sum(w)``.

    Unlike :func:`weighted`, no list is rescaled by its own minimum and maximum, so a
    key's fused score depends only on its own scores, not on what else was retrieved. A
    key missing from a list gets 0 from it. Scores must be finite and non-increasing
    down each list; ``weights`` are divided by their sum.
    """
    w = _check_weights(weights, len(lists))
    if len(scales) != len(lists):
        raise InvalidInput(f"expected {len(lists)} scales, one per list", field="scales")
    total = math.fsum(w)
    table = _KeyTable(lists)
    parts = np.zeros(table.ranks.shape, dtype=np.float64)
    for index, (weight, ranked, scale) in enumerate(zip(w, lists, scales, strict=True)):
        parts[table.rows[index], index] = weight * scale(_checked(ranked, f"lists[{index}]"))
    return table.ordered(_exact_row_sums(parts) / total, w)


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


class _KeyTable(Generic[K]):
    """The distinct keys of several ranked lists, with each key's 1-based rank per list.

    ``rows[i]`` gives the row of each entry of list ``i``; ``ranks`` is ``(keys, lists)``,
    ``inf`` where a key is missing from a list. A key repeated within a list is an error.
    """

    def __init__(self, lists: Sequence[Ranked[K]]) -> None:
        row_of: dict[K, int] = {}
        self.rows: list[npt.NDArray[np.int64]] = []
        for index, ranked in enumerate(lists):
            rows = [row_of.setdefault(key, len(row_of)) for key, _score in ranked]
            if len(set(rows)) != len(rows):
                key = next(key for key, _ in ranked if rows.count(row_of[key]) > 1)
                raise InvalidInput(
                    f"key {key!r} appears twice in list {index}", field=f"lists[{index}]"
                )
            self.rows.append(np.array(rows, dtype=np.int64))
        self.keys = list(row_of)
        self.ranks = np.full((len(self.keys), len(lists)), np.inf)
        for index, list_rows in enumerate(self.rows):
            self.ranks[list_rows, index] = np.arange(1, len(list_rows) + 1)

    def ordered(
        self, fused: npt.NDArray[np.float64], weights: list[float]
    ) -> list[tuple[K, float]]:
        """``(key, fused score)``, highest first, ties broken as the module docstring says."""
        positive = np.asarray(weights) > 0
        best_weighted = self.ranks[:, positive].min(axis=1, initial=np.inf)
        best_any = self.ranks.min(axis=1, initial=np.inf)
        order = np.lexsort((best_any, best_weighted, -fused))
        primary = np.stack([fused, best_weighted, best_any], axis=1)[order]
        tied = np.flatnonzero((primary[1:] == primary[:-1]).all(axis=1)).tolist()
        keys = _break_ties([self.keys[i] for i in order.tolist()], tied)
        # keys reordered among ties share their score, so the scores keep their order
        return list(zip(keys, fused[order].tolist(), strict=True))


def _break_ties(keys: list[K], tied: list[int]) -> list[K]:
    """Reorder each run of keys that tie on score and ranks by ``str(key)``, then type
    name; ``tied`` holds each ``i`` where ``keys[i]`` ties with ``keys[i + 1]``."""
    runs: list[list[int]] = []
    for i in tied:
        if runs and runs[-1][-1] == i:
            runs[-1].append(i + 1)
        else:
            runs.append([i, i + 1])
    for run in runs:
        start, end = run[0], run[-1] + 1
        keys[start:end] = sorted(keys[start:end], key=_tie_key)
    return keys


def _tie_key(key: Hashable) -> tuple[str, str]:
    return str(key), type(key).__qualname__


def _exact_row_sums(parts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each row's exactly rounded sum (``math.fsum``): the same whatever the column order.
    Two columns need no more than ``+``, which rounds once and commutes."""
    if parts.shape[1] <= 2:
        summed: npt.NDArray[np.float64] = parts.sum(axis=1)
        return summed
    return np.array([math.fsum(row) for row in parts.tolist()], dtype=np.float64)


def _min_max(ranked: Ranked[K], field: str) -> npt.NDArray[np.float64]:
    """Scores of one best-first list mapped to [0, 1]; all-equal scores map to 1.0."""
    values = _checked(ranked, field)
    if not len(values):
        return values
    high, low = values[0], values[-1]
    if high == low:
        return np.ones_like(values)
    normalised: npt.NDArray[np.float64] = (values - low) / (high - low)
    return normalised


def _checked(ranked: Ranked[K], field: str) -> npt.NDArray[np.float64]:
    """The scores of one list as float64, checked finite and non-increasing."""
    scores = [score for _key, score in ranked]
    if not all(type(score) is float for score in scores):  # the usual case, checked fast
        for score in scores:
            if not _is_real(score):
                raise InvalidInput(f"score is not a finite number: {score!r}", field=field)
    values = np.array(scores, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = scores[int(np.flatnonzero(~np.isfinite(values))[0])]
        raise InvalidInput(f"score is not a finite number: {bad!r}", field=field)
    if len(values) > 1 and (values[1:] > values[:-1]).any():
        raise InvalidInput("scores must be non-increasing (best first)", field=field)
    return values


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
