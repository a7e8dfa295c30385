"""IR metrics that reproduce trec_eval (and so pytrec_eval and BEIR) exactly.

Semantics, each taken from trec_eval 9.x (``form_res_rels.c``, ``m_ndcg_cut.c``,
``m_recall.c``, ``m_recip_rank_cut.c``):

* **Ranking.** A query's run is sorted by score, highest first; equal scores are broken by
  document id in *descending* string order (``comp_sim_docno``: ``strcmp(p2, p1)``). The
  order a run lists its documents in never matters. trec_eval holds scores as C ``float``
  (``TEXT_RESULTS.sim`` in ``trec_format.h``), so scores are first rounded to single
  precision: doubles that differ only beyond float32 precision tie, and the document id
  decides. pytrec_eval does the same.
* **Relevance.** A document is relevant when its qrels grade is ``> 0`` (trec_eval's default
  ``relevance_level`` of 1). Unjudged documents and grades ``<= 0`` are non-relevant.
* **nDCG@k** (``ndcg_cut.k``): gain is the grade itself, discount ``log2(rank + 1)`` with
  1-based ranks; the ideal DCG ranks the query's positive grades from the qrels, highest
  first, cut at ``k``. A query without relevant documents scores 0.
* **Recall@k** (``recall.k``): relevant documents in the top ``k`` over all relevant
  documents of the query in the qrels; 0 when it has none.
* **MRR@k** (``recip_rank_cut.k``): ``1 / rank`` of the first relevant document when that rank
  is at most ``k``, else 0.

Which queries are scored: the per-query functions return a value for **every query in the
qrels** (a query the run does not have scores 0) and ignore run queries the qrels lack.
:func:`evaluate_run` averages over the qrels queries with at least one relevant document.
trec_eval without ``-c`` and pytrec_eval instead average over queries in both the run and
the qrels, and BEIR divides by the number of queries pytrec_eval returned; the results agree
whenever every judged query was run and has a relevant document, which is how the
ragstore harness evaluates.
"""

from __future__ import annotations

import heapq
import math
import numbers
from array import array
from collections.abc import Callable, Mapping

from ragstore.errors import InvalidInput

Run = Mapping[str, Mapping[str, float]]
"""Query id -> {document id: score}; higher scores rank first."""

Qrels = Mapping[str, Mapping[str, int]]
"""Query id -> {document id: relevance grade}; grades ``> 0`` are relevant."""

_PerQuery = Callable[[Mapping[str, float], Mapping[str, int], int], float]


def trec_ranking(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Document ids in trec_eval's order: score descending, then document id descending.

    Scores are compared after rounding to float32, as trec_eval stores them; the tie-break
    is trec_eval's ``comp_sim_docno``. ``k`` keeps only the first ``k`` ids. Scores must
    not be NaN.
    """
    items = list(zip(scores, array("f", scores.values()).tolist(), strict=True))
    if k is None:
        return [doc for doc, _ in sorted(items, key=_score_then_doc, reverse=True)]
    return [doc for doc, _ in heapq.nlargest(k, items, key=_score_then_doc)]


def ndcg_at(run: Run, qrels: Qrels, k: int) -> dict[str, float]:
    """nDCG@k per qrels query, as trec_eval's ``ndcg_cut.k``.

    Linear gain (the grade), discount ``log2(rank + 1)``, ideal DCG from the query's
    positive qrels grades. Queries missing from the run score 0.
    """
    return _per_query(run, qrels, _check_k(k, "k"), _ndcg_one)


def recall_at(run: Run, qrels: Qrels, k: int) -> dict[str, float]:
    """Recall@k per qrels query, as trec_eval's ``recall.k``.

    The denominator is the number of documents with grade ``> 0`` in the query's qrels.
    """
    return _per_query(run, qrels, _check_k(k, "k"), _recall_one)


def mrr_at(run: Run, qrels: Qrels, k: int) -> dict[str, float]:
    """Reciprocal rank cut at k per qrels query, as trec_eval's ``recip_rank_cut.k``.

    ``1 / rank`` of the first relevant document if it is within the top ``k``, else 0.
    """
    return _per_query(run, qrels, _check_k(k, "k"), _mrr_one)


def evaluate_run(
    run: Run, qrels: Qrels, *, ndcg_k: int = 10, recall_k: int = 100, mrr_k: int = 10
) -> dict[str, float]:
    """Mean nDCG, recall and MRR over the qrels queries that have a relevant document.

    Returns ``{"ndcg@<ndcg_k>": ..., "recall@<recall_k>": ..., "mrr@<mrr_k>": ...}``.
    A judged query the run lacks counts as 0; run queries outside the qrels are ignored.
    Raises :class:`InvalidInput` if no qrels query has a relevant document.
    """
    cuts = {
        "ndcg": (_check_k(ndcg_k, "ndcg_k"), _ndcg_one),
        "recall": (_check_k(recall_k, "recall_k"), _recall_one),
        "mrr": (_check_k(mrr_k, "mrr_k"), _mrr_one),
    }
    judged = [qid for qid, judgments in qrels.items() if _num_relevant(judgments) > 0]
    if not judged:
        raise InvalidInput("no query in the qrels has a relevant document", field="qrels")
    means: dict[str, float] = {}
    for name, (k, metric) in cuts.items():
        per_query = _per_query(run, qrels, k, metric)
        means[f"{name}@{k}"] = math.fsum(per_query[qid] for qid in judged) / len(judged)
    return means


def _per_query(run: Run, qrels: Qrels, k: int, metric: _PerQuery) -> dict[str, float]:
    """Apply ``metric`` to every qrels query; a query absent from the run scores 0."""
    empty: Mapping[str, float] = {}
    values: dict[str, float] = {}
    for qid, judgments in qrels.items():
        _check_grades(qid, judgments)
        scores = run.get(qid, empty)
        _check_scores(qid, scores)
        values[qid] = metric(scores, judgments, k)
    return values


def _ndcg_one(scores: Mapping[str, float], judgments: Mapping[str, int], k: int) -> float:
    """nDCG@k of one query (``m_ndcg_cut.c``)."""
    ideal = _dcg(sorted((g for g in judgments.values() if g > 0), reverse=True)[:k])
    if ideal <= 0.0:
        return 0.0
    gains = [judgments.get(doc, 0) for doc in trec_ranking(scores, k)]
    return _dcg(gains) / ideal


def _recall_one(scores: Mapping[str, float], judgments: Mapping[str, int], k: int) -> float:
    """Recall@k of one query (``m_recall.c``)."""
    relevant = _num_relevant(judgments)
    if relevant == 0:
        return 0.0
    found = sum(1 for doc in trec_ranking(scores, k) if judgments.get(doc, 0) > 0)
    return found / relevant


def _mrr_one(scores: Mapping[str, float], judgments: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (``m_recip_rank_cut.c``)."""
    for rank, doc in enumerate(trec_ranking(scores, k), start=1):
        if judgments.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dcg(gains: list[int]) -> float:
    """Discounted cumulative gain, summed in rank order as trec_eval does."""
    total = 0.0
    for index, gain in enumerate(gains):
        if gain > 0:
            total += gain / math.log2(index + 2)
    return total


def _num_relevant(judgments: Mapping[str, int]) -> int:
    """How many judged documents have a grade above 0."""
    return sum(1 for grade in judgments.values() if grade > 0)


def _score_then_doc(item: tuple[str, float]) -> tuple[float, str]:
    """Sort key whose descending order is trec_eval's ranking."""
    return item[1], item[0]


def _check_k(k: int, field: str) -> int:
    """A cutoff must be a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInput(f"{field} must be a positive integer, got {k!r}", field=field)
    return k


def _check_grades(qid: str, judgments: Mapping[str, int]) -> None:
    """Qrels grades must be integers, as trec_eval reads them."""
    for doc, grade in judgments.items():
        if isinstance(grade, bool) or not isinstance(grade, numbers.Integral):
            raise InvalidInput(
                f"qrels grade for query {qid!r}, document {doc!r} is not an integer: {grade!r}",
                field="qrels",
            )


def _check_scores(qid: str, scores: Mapping[str, float]) -> None:
    """Run scores must be real numbers that can be ordered (no NaN)."""
    for doc, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or math.isnan(score):
            raise InvalidInput(
                f"run score for query {qid!r}, document {doc!r} is not a number: {score!r}",
                field="run",
            )
