"""IR metrics: hand-computed values, and agreement with trec_eval through pytrec_eval."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragstore.errors import InvalidInput
from ragstore.eval.metrics import (
    Qrels,
    Run,
    evaluate_run,
    mrr_at,
    ndcg_at,
    recall_at,
    trec_ranking,
)

try:
    import pytrec_eval

    HAVE_PYTREC = True
except ImportError:  # pragma: no cover - the dev extra installs it
    HAVE_PYTREC = False

needs_pytrec = pytest.mark.skipif(not HAVE_PYTREC, reason="pytrec-eval-terrier not installed")

TOL = 1e-9


def log2(x: float) -> float:
    return math.log2(x)


# --- ranking -----------------------------------------------------------------


def test_ranking_breaks_ties_by_doc_id_descending() -> None:
    scores = {"a": 1.0, "c": 1.0, "b": 2.0, "d": 0.5, "ab": 1.0}
    assert trec_ranking(scores) == ["b", "c", "ab", "a", "d"]
    assert trec_ranking(scores, 2) == ["b", "c"]


def test_ranking_compares_ids_as_strings_not_numbers() -> None:
    assert trec_ranking({"9": 1.0, "10": 1.0, "100": 1.0}) == ["9", "100", "10"]


def test_ranking_compares_scores_in_single_precision_like_trec_eval() -> None:
    # trec_eval keeps scores as C float: these pairs tie, so the doc id decides.
    assert trec_ranking({"a": 1.0000000001, "b": 1.0}) == ["b", "a"]
    assert trec_ranking({"a": 1e-300, "b": -1e-300}) == ["b", "a"]
    assert trec_ranking({"a": 2e300, "b": 1e300, "c": 1e30}) == ["b", "a", "c"]
    assert trec_ranking({"a": 1.0 + 2**-23, "b": 1.0}) == ["a", "b"]


# --- hand-computed values ------------------------------------------------------


def test_ndcg_graded_by_hand() -> None:
    qrels = {"q": {"a": 3, "b": 2, "c": 0, "d": 1}}
    run = {"q": {"c": 0.9, "b": 0.8, "x": 0.7, "a": 0.6}}
    dcg = 0 / log2(2) + 2 / log2(3) + 0 / log2(4) + 3 / log2(5)
    ideal = 3 / log2(2) + 2 / log2(3) + 1 / log2(4)
    assert ndcg_at(run, qrels, 10)["q"] == pytest.approx(dcg / ideal, abs=TOL)
    dcg3 = 2 / log2(3)
    ideal3 = 3 + 2 / log2(3) + 1 / log2(4)
    assert ndcg_at(run, qrels, 3)["q"] == pytest.approx(dcg3 / ideal3, abs=TOL)
    ideal2 = 3 + 2 / log2(3)
    assert ndcg_at(run, qrels, 2)["q"] == pytest.approx(dcg3 / ideal2, abs=TOL)


def test_ndcg_ideal_is_cut_at_k_and_perfect_run_scores_one() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    for k in (1, 2, 3, 10):
        assert ndcg_at(run, qrels, k)["q"] == pytest.approx(1.0, abs=TOL)


def test_tie_break_decides_the_metric() -> None:
    # "b" and "a" tie; trec_eval ranks "b" first (doc id descending).
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert mrr_at(run, qrels, 10)["q"] == pytest.approx(0.5)
    assert mrr_at(run, qrels, 1)["q"] == 0.0
    assert recall_at(run, qrels, 1)["q"] == 0.0
    assert ndcg_at(run, qrels, 10)["q"] == pytest.approx(1 / log2(3))


def test_recall_counts_only_positive_grades() -> None:
    qrels = {"q": {"a": 1, "b": 2, "c": 0, "d": -1, "e": 1}}
    run = {"q": {"a": 5.0, "c": 4.0, "d": 3.0, "b": 2.0, "z": 1.0}}
    assert recall_at(run, qrels, 2)["q"] == pytest.approx(1 / 3)
    assert recall_at(run, qrels, 4)["q"] == pytest.approx(2 / 3)
    assert recall_at(run, qrels, 100)["q"] == pytest.approx(2 / 3)


def test_mrr_is_reciprocal_rank_cut_at_k() -> None:
    qrels = {"q": {"r": 1, "n": 0}}
    run = {"q": {"x": 4.0, "n": 3.0, "r": 2.0}}
    assert mrr_at(run, qrels, 3)["q"] == pytest.approx(1 / 3)
    assert mrr_at(run, qrels, 2)["q"] == 0.0


def test_per_query_covers_every_qrels_query_and_only_those() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": {"a": 1.0}, "q3": {"c": 1.0}, "extra": {"a": 1.0}}
    for metric in (ndcg_at, recall_at, mrr_at):
        assert metric(run, qrels, 10) == {"q1": 1.0, "q2": 0.0, "q3": 0.0}


def test_evaluate_run_means_over_judged_queries_with_a_relevant_doc() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": {"a": 1.0, "z": 0.5}, "q3": {"c": 1.0}, "extra": {"a": 1.0}}
    # q2 is missing from the run: scores 0 and counts; q3 has no relevant doc: left out.
    assert evaluate_run(run, qrels) == {"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5}
    assert set(evaluate_run(run, qrels, ndcg_k=5, recall_k=20, mrr_k=3)) == {
        "ndcg@5",
        "recall@20",
        "mrr@3",
    }


def test_numpy_scores_and_grades_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    run = {"q": {"a": np.float32(0.5), "b": np.float64(0.25)}}
    qrels = {"q": {"b": np.int64(2)}}
    assert mrr_at(run, qrels, 10)["q"] == pytest.approx(0.5)


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_cutoff_must_be_positive_int(k: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        ndcg_at({}, {"q": {"a": 1}}, k)
    assert info.value.field == "k"


def test_evaluate_run_names_the_bad_cutoff() -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate_run({}, {"q": {"a": 1}}, recall_k=0)
    assert info.value.field == "recall_k"


def test_nan_score_and_non_integer_grade_are_rejected() -> None:
    with pytest.raises(InvalidInput) as info:
        recall_at({"q": {"a": math.nan}}, {"q": {"a": 1}}, 10)
    assert info.value.field == "run"
    with pytest.raises(InvalidInput) as info:
        recall_at({"q": {"a": 1.0}}, {"q": {"a": 0.5}}, 10)  # type: ignore[dict-item]
    assert info.value.field == "qrels"


def test_evaluate_run_needs_a_relevant_document() -> None:
    with pytest.raises(InvalidInput) as info:
        evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 0}})
    assert info.value.field == "qrels"


# --- agreement with trec_eval (pytrec_eval) -------------------------------------

CUTS = (1, 3, 5, 10)


def reference(run: Run, qrels: Qrels) -> dict[str, dict[str, float]]:
    """pytrec_eval's per-query values for queries in both run and qrels."""
    cuts = ",".join(str(k) for k in CUTS)
    measures = {f"ndcg_cut.{cuts}", f"recall.{cuts}", "recip_rank"}
    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(j) for q, j in qrels.items()}, measures)
    result: dict[str, dict[str, float]] = evaluator.evaluate(
        {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    )
    return result


def recip_rank_cut(value: float, k: int) -> float:
    """trec_eval's recip_rank_cut.k from its uncut recip_rank (rank = 1 / value)."""
    return value if value > 0 and round(1 / value) <= k else 0.0


def assert_matches_reference(run: Run, qrels: Qrels) -> None:
    ref = reference(run, qrels)
    assert set(ref) == set(qrels) & set(run)
    for k in CUTS:
        ours = {"ndcg": ndcg_at(run, qrels, k), "recall": recall_at(run, qrels, k)}
        mrr = mrr_at(run, qrels, k)
        for qid in qrels:
            if qid not in ref:
                assert ours["ndcg"][qid] == ours["recall"][qid] == mrr[qid] == 0.0
                continue
            assert ours["ndcg"][qid] == pytest.approx(ref[qid][f"ndcg_cut_{k}"], abs=TOL)
            assert ours["recall"][qid] == pytest.approx(ref[qid][f"recall_{k}"], abs=TOL)
            expected = recip_rank_cut(ref[qid]["recip_rank"], k)
            assert mrr[qid] == pytest.approx(expected, abs=TOL)


@needs_pytrec
def test_hand_made_cases_match_trec_eval() -> None:
    qrels = {
        "q1": {"a": 3, "b": 2, "c": 0, "d": 1},
        "q2": {"x": 1, "y": 1, "10": 2, "9": 1},
        "q3": {"m": 0, "n": -1, "o": 2},
        "q4": {"p": 1},
    }
    run = {
        "q1": {"c": 0.9, "b": 0.8, "x": 0.7, "a": 0.6, "d": 0.6},
        "q2": {"y": 1.0, "x": 1.0, "9": 1.0, "10": 1.0, "z": 1.0, "w": 2.0},
        "q3": {"n": 3.0, "m": 2.0, "o": 2.0, "zz": -1.0},
        "q5": {"p": 1.0},
    }
    assert_matches_reference(run, qrels)


@needs_pytrec
def test_mean_matches_beir_style_average_when_every_query_is_run() -> None:
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}, "q3": {"d": 1, "e": 1}}
    run = {
        "q1": {"b": 0.2, "a": 0.9, "z": 0.5},
        "q2": {"x": 0.4, "c": 0.3},
        "q3": {"y": 0.1},
    }
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    means = evaluate_run(run, qrels)
    expected_ndcg = sum(v["ndcg_cut_10"] for v in ref.values()) / len(ref)
    expected_recall = sum(v["recall_100"] for v in ref.values()) / len(ref)
    assert means["ndcg@10"] == pytest.approx(expected_ndcg, abs=TOL)
    assert means["recall@100"] == pytest.approx(expected_recall, abs=TOL)


DOC_IDS = ["a", "b", "c", "ab", "ba", "A", "1", "2", "10", "9", "d-1", "é", "z_z", "Ω"]
QUERY_IDS = ["q1", "q2", "q3", "q4", "q5"]

scores_st = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]),  # many ties
    st.sampled_from([1.0 + 1e-10, 1e300, -1e300, 1e-300, -0.0]),  # ties only in float32
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64),
    st.floats(allow_nan=False),
)


@st.composite
def judgments_st(draw: st.DrawFn) -> dict[str, int]:
    """Graded judgments for one query, with at least one grade >= 0.

    (trec_eval keeps stale state for a query whose every grade is negative, so the
    reference is not meaningful there.)
    """
    judged = draw(st.dictionaries(st.sampled_from(DOC_IDS), st.integers(-1, 3), max_size=8))
    anchor = draw(st.sampled_from(DOC_IDS))
    if not any(grade >= 0 for grade in judged.values()):
        judged[anchor] = draw(st.integers(0, 3))
    return judged


run_st = st.dictionaries(
    st.sampled_from(QUERY_IDS), st.dictionaries(st.sampled_from(DOC_IDS), scores_st), max_size=5
)
qrels_st = st.dictionaries(st.sampled_from(QUERY_IDS), judgments_st(), min_size=1, max_size=5)


@needs_pytrec
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=run_st, qrels=qrels_st)
def test_random_runs_match_trec_eval(run: dict[str, dict[str, float]], qrels: Qrels) -> None:
    assert_matches_reference(run, qrels)


@needs_pytrec
@settings(max_examples=150, deadline=None)
@given(run=run_st, qrels=qrels_st)
def test_random_means_match_trec_eval_filled_with_zeros(
    run: dict[str, dict[str, float]], qrels: Qrels
) -> None:
    judged = [q for q, j in qrels.items() if any(g > 0 for g in j.values())]
    if not judged:
        with pytest.raises(InvalidInput):
            evaluate_run(run, qrels, ndcg_k=5, recall_k=10, mrr_k=3)
        return
    ref = reference(run, qrels)

    def mean(values: list[float]) -> float:
        return sum(values) / len(judged)

    expected = {
        "ndcg@5": mean([ref[q]["ndcg_cut_5"] for q in judged if q in ref]),
        "recall@10": mean([ref[q]["recall_10"] for q in judged if q in ref]),
        "mrr@3": mean([recip_rank_cut(ref[q]["recip_rank"], 3) for q in judged if q in ref]),
    }
    got = evaluate_run(run, qrels, ndcg_k=5, recall_k=10, mrr_k=3)
    assert got == pytest.approx(expected, abs=TOL)
