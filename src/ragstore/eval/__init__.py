"""Retrieval evaluation: trec_eval-exact IR metrics, a BEIR reader, and a harness."""

from ragstore.eval.harness import EvalReport, ModeResult, evaluate, score

__all__ = ["EvalReport", "ModeResult", "evaluate", "score"]
