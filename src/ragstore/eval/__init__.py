"""Retrieval evaluation: trec_eval-exact IR metrics and a BEIR-format dataset reader."""
