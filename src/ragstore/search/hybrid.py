"""One search, from request to hits: dense side, keyword side, fusion, grouping,
diversity and reranking.

Both sides retrieve ``depth`` candidates under the same filter, evaluated once into a mask
over chunk ids: the dense side searches only the chunks it lets through, and the BM25
side keeps only those among the chunks that contain a query term.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, get_args

import numpy as np

from ragstore import terms
from ragstore.errors import InvalidInput
from ragstore.filters import Filter, parse_filter, to_json
from ragstore.index.ann import Knobs
from ragstore.index.base import Matrix
from ragstore.index.database import DatabaseIndex
from ragstore.index.payload import Filtered
from ragstore.index.vectors import SegmentedIndex
from ragstore.search import fusion, scores
from ragstore.store.base import HitBody, Reader
from ragstore.types import Hit

Mode = Literal["dense", "keyword", "hybrid"]
QueryVector = Matrix | Future[Matrix | None] | None
"""A search's query vector, possibly still being computed on another thread."""
Fusion = Literal["rrf", "weighted"]
MAX_K = 1000
MAX_DEPTH = 5000
RRF_K = 60
DEFAULT_FUSION: Fusion = "weighted"
"""Chosen on SciFact's train split (benchmarks/tune_fusion.py): weighted fusion at
alpha 0.5 beat RRF at every k tried."""
DEFAULT_ALPHA = 0.5
MAX_EF_SEARCH = 4096
MAX_NPROBE = 65536


class SearchOptions(TypedDict, total=False):
    """A text search's settings, as :func:`search_params` takes them."""

    k: int
    where: Mapping[str, Any] | None
    mode: Mode | None
    candidates: int | None
    fusion: Fusion
    rrf_k: int
    alpha: float
    group_by_doc: bool
    mmr_lambda: float | None
    highlight: bool
    ef_search: int | None
    nprobe: int | None
    min_score: float | None


class SearchResults(list[Hit]):
    """The hits of a search, best first; ``plan`` says how it ran when asked to explain."""

    plan: dict[str, object] | None = None


class Reranker(Protocol):
    """Reorders the best hits of a search, e.g. with a cross-encoder."""

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """The same hits, best first, with ``score`` set to the reranker's score."""
        ...


@dataclass(frozen=True, slots=True)
class SearchParams:
    """A validated search request (everything but the query itself)."""

    mode: Mode = "hybrid"
    k: int = 10
    where: Filter | None = None
    depth: int | None = None
    fusion: Fusion = DEFAULT_FUSION
    rrf_k: int = RRF_K
    alpha: float = DEFAULT_ALPHA
    group_by_doc: bool = False
    mmr_lambda: float | None = None
    highlight: bool = False
    ef_search: int | None = None
    nprobe: int | None = None
    min_score: float | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        _check_choice(self.mode, "mode")
        _check_choice(self.fusion, "fusion")
        check_dense(self.k, self.ef_search, self.nprobe)
        _check_int(self.rrf_k, 1, 10_000, "rrf_k")
        if self.depth is not None:
            _check_int(self.depth, 1, MAX_DEPTH, "candidates")
        _check_unit(self.alpha, "alpha")
        if self.mmr_lambda is not None:
            _check_unit(self.mmr_lambda, "mmr_lambda")
        if self.min_score is not None:
            _check_finite(self.min_score, "min_score")
            object.__setattr__(self, "min_score", float(self.min_score))

    @property
    def knobs(self) -> Knobs:
        """Per-query index settings."""
        return Knobs(ef_search=self.ef_search, nprobe=self.nprobe)

    @property
    def candidates(self) -> int:
        """How many chunks each side retrieves."""
        if self.depth is not None:
            return max(self.depth, self.k)
        widen = self.group_by_doc or self.mmr_lambda is not None or self.mode == "hybrid"
        return min(max(4 * self.k, 100), MAX_DEPTH) if widen else self.k


def search_params(
    by_vector: bool,
    *,
    k: int = 10,
    where: Mapping[str, Any] | None = None,
    mode: Mode | None = None,
    candidates: int | None = None,
    fusion: Fusion = DEFAULT_FUSION,
    rrf_k: int = RRF_K,
    alpha: float = DEFAULT_ALPHA,
    group_by_doc: bool = False,
    mmr_lambda: float | None = None,
    highlight: bool = False,
    ef_search: int | None = None,
    nprobe: int | None = None,
    min_score: float | None = None,
    explain: bool = False,
) -> SearchParams:
    """Validated settings of a search; ``mode`` defaults to ``dense`` for a vector
    query (``by_vector``) and ``hybrid`` for text, and ``where`` is parsed."""
    return SearchParams(
        mode=mode or ("dense" if by_vector else "hybrid"),
        k=k,
        where=parse_filter(where),
        depth=candidates,
        fusion=fusion,
        rrf_k=rrf_k,
        alpha=alpha,
        group_by_doc=group_by_doc,
        mmr_lambda=mmr_lambda,
        highlight=highlight,
        ef_search=ef_search,
        nprobe=nprobe,
        min_score=min_score,
        explain=explain,
    )


def batch_inputs(queries: Any, vectors: Any) -> list[str] | Matrix:
    """What a batch search runs on, checked: the texts of ``queries`` or the rows of
    ``vectors`` (a 2-D array of numbers); exactly one of them must be given."""
    if (queries is None) == (vectors is None):
        raise InvalidInput("give queries or vectors (exactly one)", field="queries")
    if queries is not None:
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise InvalidInput("queries must be a list of texts", field="queries")
        return list(queries)
    matrix = np.asarray(vectors, dtype=np.float32) if _numeric(vectors) else None
    if matrix is None or matrix.ndim != 2:
        raise InvalidInput("vectors must be a 2-D array of numbers", field="vectors")
    return matrix


def _numeric(value: object) -> bool:
    """Whether ``value`` converts to an array of numbers (not strings or objects)."""
    try:
        return np.asarray(value).dtype.kind in "iuf"
    except (ValueError, TypeError):  # ragged rows
        return False


@dataclass(frozen=True, slots=True)
class Side:
    """One retriever's ranked ``(chunk id, score)`` list, and how it was found.

    ``scale`` maps its scores to [0, 1] on a scale that does not depend on the query
    (``None``: there is none, and weighted fusion min-max normalises them per query).
    ``unranked`` holds this side's scores of chunks it did not retrieve but that fusion
    scores (the dense side's cosines of the keyword side's other candidates).
    """

    ranked: list[tuple[int, float]]
    plan: object = None
    scale: fusion.Scale | None = scores.unit_cosine
    unranked: dict[int, float] = dataclasses.field(default_factory=dict)

    def scored(self) -> list[tuple[int, float]]:
        """``ranked`` and ``unranked`` together, best first."""
        if not self.unranked:
            return self.ranked
        return sorted([*self.ranked, *self.unranked.items()], key=lambda pair: -pair[1])

    def explain(self) -> dict[int, tuple[float, int]]:
        """chunk id -> (score, 1-based rank)."""
        return {cid: (score, rank) for rank, (cid, score) in enumerate(self.ranked, start=1)}


def run(
    reader: Reader,
    index: SegmentedIndex | DatabaseIndex,
    params: SearchParams,
    *,
    text: str | None,
    vector: QueryVector,
    reranker: Reranker | None = None,
) -> SearchResults:
    """Execute one search inside the caller's read transaction.

    The index lock is held while the index catches up, the filter is evaluated (once, on
    the index's metadata columns; it restricts both sides) and the keyword side runs,
    then again while the dense side runs: ``vector`` may still be computing (a future)
    when the search starts, and is awaited between the two. Another thread may catch the
    index up meanwhile; hits newer than this transaction are then left out, as they are
    when read. Fusion and reading the hits go on without the lock. Candidates stay
    ``(chunk id, score)`` pairs until the end; only the hits returned (or handed to the
    reranker) are read in full.
    """
    if isinstance(index, DatabaseIndex):
        dense, lexical = _database_sides(reader, index, params, text, vector)
    else:
        dense, lexical = _memory_sides(reader, index, params, text, vector)
    ranked = _fuse(params, dense, lexical)
    if params.group_by_doc:
        ranked = best_per_document(reader, ranked)
    if params.mmr_lambda is not None:
        ranked = _diversify(reader, ranked, params.k, params.mmr_lambda)
    if reranker is None or text is None:
        hits = _hits(reader, ranked[: params.k], dense, lexical)
    else:
        hits = reranker.rerank(text, _hits(reader, ranked, dense, lexical))[: params.k]
    hits = scores.at_least(hits, [hit.score for hit in hits], params.min_score)
    if params.highlight and text is not None:
        hits = [dataclasses.replace(h, highlight=terms.highlight(h.text, text)) for h in hits]
    results = SearchResults(hits)
    if params.explain:
        results.plan = _plan(params, dense, lexical)
    return results


def _memory_sides(
    reader: Reader,
    index: SegmentedIndex,
    params: SearchParams,
    text: str | None,
    vector: QueryVector,
) -> tuple[Side | None, Side | None]:
    depth = params.candidates
    with index.lock:
        index.catch_up(reader)
        allowed = None if params.where is None else index.allowed(reader, params.where)
        lexical = _keyword(reader, index, text, allowed, depth, params.mode)
    query_vector = vector.result() if isinstance(vector, Future) else vector
    with index.lock:
        dense = _dense(index, query_vector, allowed, params, depth)
    return _with_cosines(reader, params, dense, lexical, query_vector), lexical


def _database_sides(
    reader: Reader,
    index: DatabaseIndex,
    params: SearchParams,
    text: str | None,
    vector: QueryVector,
) -> tuple[Side | None, Side | None]:
    """Both sides as statements in the database, the filter inside each."""
    depth = params.candidates
    lexical = None
    if params.mode != "dense" and text is not None:
        ids, ranks = index.keyword(reader, text, depth, params.where)
        plan = "postgresql full-text" + (" + filter in sql" if params.where else "")
        # ts_rank has no fixed scale: weighted fusion min-max normalises it per query
        lexical = Side(list(zip(ids.tolist(), ranks.tolist(), strict=True)), plan, scale=None)
    query_vector = vector.result() if isinstance(vector, Future) else vector
    if query_vector is None:
        return None, lexical
    found = index.dense(reader, query_vector, depth, params.where, params.knobs)
    dense = Side(list(zip(found.ids.tolist(), found.scores.tolist(), strict=True)), found.plan)
    return _with_cosines(reader, params, dense, lexical, query_vector), lexical


def _with_cosines(
    reader: Reader,
    params: SearchParams,
    dense: Side | None,
    lexical: Side | None,
    vector: Matrix | None,
) -> Side | None:
    """The dense side, plus the cosine of each keyword candidate it did not retrieve, for
    weighted fusion: a candidate is scored by its own cosine, wherever the dense side's
    cut fell. Chunks this read transaction cannot see are left out."""
    if dense is None or lexical is None or vector is None or params.fusion != "weighted":
        return dense
    if lexical.scale is None:  # min-max fusion: scores only what each side retrieved
        return dense
    retrieved = {chunk_id for chunk_id, _ in dense.ranked}
    others = [chunk_id for chunk_id, _ in lexical.ranked if chunk_id not in retrieved]
    if not others:
        return dense
    others, vectors = _visible_vectors(reader, others)
    if not others:
        return dense
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    cosines = (np.asarray(vectors, dtype=np.float32) @ query).tolist()
    return dataclasses.replace(dense, unranked=dict(zip(others, cosines, strict=True)))


def _visible_vectors(reader: Reader, chunk_ids: list[int]) -> tuple[list[int], Matrix]:
    """The chunks of ``chunk_ids`` that this read transaction sees, and their vectors."""
    try:
        return chunk_ids, reader.vectors_for(chunk_ids)
    except KeyError:  # a chunk newer than this transaction: rare, so checked only now
        visible = reader.documents_of(chunk_ids)
        seen = [chunk_id for chunk_id in chunk_ids if chunk_id in visible]
        return seen, reader.vectors_for(seen) if seen else np.empty((0, 0), np.float32)


def _plan(params: SearchParams, dense: Side | None, lexical: Side | None) -> dict[str, object]:
    plan: dict[str, object] = {"mode": params.mode, "candidates": params.candidates}
    if params.min_score is not None:
        plan["min_score"] = params.min_score
    if params.where is not None:
        plan["filter"] = to_json(params.where)
    if dense is not None:
        plan["dense"] = dense.plan
    if lexical is not None:
        plan["keyword"] = lexical.plan
    if dense is not None and lexical is not None:
        plan["fusion"] = params.fusion
    return plan


def best_per_document(
    reader: Reader, ranked: Sequence[tuple[int, float]]
) -> list[tuple[int, float]]:
    """Keep the best chunk of each document (``ranked`` is best first)."""
    document_of = reader.documents_of([chunk_id for chunk_id, _ in ranked])
    seen: set[int] = set()
    kept = []
    for chunk_id, score in ranked:
        document = document_of.get(chunk_id)
        if document is not None and document not in seen:
            seen.add(document)
            kept.append((chunk_id, score))
    return kept


def _dense(
    index: SegmentedIndex,
    vector: Matrix | None,
    allowed: Filtered | None,
    params: SearchParams,
    depth: int,
) -> Side | None:
    if vector is None:
        return None
    found = index.search(vector, depth, allowed, params.knobs)
    return Side(list(zip(found.ids.tolist(), found.scores.tolist(), strict=True)), found.plan)


def _keyword(
    reader: Reader,
    index: SegmentedIndex,
    text: str | None,
    allowed: Filtered | None,
    depth: int,
    mode: Mode,
) -> Side | None:
    if mode == "dense" or text is None:
        return None
    ids, bm25 = index.keyword_search(reader, terms.query_terms(text), depth, allowed)
    plan = "bm25 postings" + (" + filter mask" if allowed is not None else "")
    return Side(list(zip(ids.tolist(), bm25.tolist(), strict=True)), plan, scores.saturated)


def _fuse(
    params: SearchParams, dense: Side | None, lexical: Side | None
) -> list[tuple[int, float]]:
    if lexical is None:
        return dense.ranked if dense else []
    if dense is None:
        return lexical.ranked
    weights = [params.alpha, 1.0 - params.alpha]
    if params.fusion == "rrf":
        return fusion.rrf([dense.ranked, lexical.ranked], k=params.rrf_k, weights=weights)
    if dense.scale is None or lexical.scale is None:
        return fusion.weighted([dense.ranked, lexical.ranked], weights)
    lists = [dense.scored(), lexical.ranked]
    return fusion.absolute(lists, weights, [dense.scale, lexical.scale])


def _hits(
    reader: Reader,
    ranked: Sequence[tuple[int, float]],
    dense: Side | None,
    lexical: Side | None,
) -> list[Hit]:
    """The hits of ``ranked`` that this read transaction sees, in its order, each built
    once with its score and each side's score and rank."""
    bodies = reader.hit_bodies([chunk_id for chunk_id, _ in ranked])
    by_dense = dense.explain() if dense else {}
    by_keyword = lexical.explain() if lexical else {}
    hits = []
    for chunk_id, score in ranked:
        body = bodies.get(chunk_id)
        if body is not None:
            hits.append(_hit(body, score, by_dense.get(chunk_id), by_keyword.get(chunk_id)))
    return hits


def _hit(
    body: HitBody,
    score: float,
    dense: tuple[float, int] | None,
    lexical: tuple[float, int] | None,
) -> Hit:
    doc_id, chunk_id, text, source, metadata, start, end = body
    dense_score, dense_rank = dense or (None, None)
    keyword_score, keyword_rank = lexical or (None, None)
    return Hit(
        doc_id=doc_id,
        chunk_id=chunk_id,
        score=score,
        text=text,
        source=source,
        metadata=metadata,
        start=start,
        end=end,
        dense_score=dense_score,
        dense_rank=dense_rank,
        keyword_score=keyword_score,
        keyword_rank=keyword_rank,
    )


def _diversify(
    reader: Reader, ranked: list[tuple[int, float]], k: int, lambda_: float
) -> list[tuple[int, float]]:
    if len(ranked) <= 1:
        return ranked
    vectors = reader.vectors_for([chunk_id for chunk_id, _ in ranked])
    values = np.array([score for _, score in ranked], dtype=np.float64)
    spread = float(values.max() - values.min())
    relevance = (values - values.min()) / spread if spread > 0 else np.ones_like(values)
    order = fusion.mmr(list(range(len(ranked))), relevance.tolist(), vectors, k=k, lambda_=lambda_)
    return [ranked[i] for i in order]


_CHOICES = {"mode": get_args(Mode), "fusion": get_args(Fusion)}


def check_dense(k: object, ef_search: object, nprobe: object) -> None:
    """Validate a dense search's ``k`` and per-query index settings."""
    _check_int(k, 1, MAX_K, "k")
    if ef_search is not None:
        _check_int(ef_search, 1, MAX_EF_SEARCH, "ef_search")
    if nprobe is not None:
        _check_int(nprobe, 1, MAX_NPROBE, "nprobe")


def _check_choice(value: object, field: str) -> None:
    allowed = _CHOICES[field]
    if value not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", field=field)


def _check_int(value: object, low: int, high: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}", field=field)


def _check_finite(value: object, field: str) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number", field=field)


def _check_unit(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput(f"{field} must be a number from 0 to 1", field=field)
