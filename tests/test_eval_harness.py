"""The evaluation harness and ``ragstore eval`` on a small BEIR folder made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ragstore
from ragstore.cli import cli
from ragstore.eval import evaluate

CORPUS = {
    "d1": ("Photosynthesis", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
    "d2": ("Volcanoes", "Magma rises through the crust and erupts as lava and ash."),
    "d3": ("Tides", "The moon's gravity pulls the oceans, raising tides twice a day."),
    "d4": ("Glaciers", "Compacted snow becomes ice that flows slowly downhill."),
    "d5": ("Earthquakes", "Stress between tectonic plates is released as seismic waves."),
}
QUERIES = {
    "q1": "how do plants make sugar from light",
    "q2": "what causes ocean tides",
    "q3": "seismic waves from tectonic plates",
}
QRELS = {"q1": "d1", "q2": "d3", "q3": "d5"}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) + "\n"
            for i, (t, x) in CORPUS.items()
        )
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (folder / "qrels" / "test.tsv").write_bytes(
        b"query-id\tcorpus-id\tscore\r\n"
        + b"".join(f"{q}\t{d}\t1\r\n".encode() for q, d in QRELS.items())
    )
    return folder


def test_evaluate_scores_every_mode_and_reuses_the_collection(
    store: ragstore.Store, dataset: Path
) -> None:
    first = evaluate(store, dataset)
    second = evaluate(store, dataset, modes=["keyword"])

    assert [r.mode for r in first.results] == ["dense", "keyword", "hybrid"]
    for result in first.results:
        assert result.queries == 3
        assert result.ndcg_at_10 == pytest.approx(1.0)  # each query's document ranks first
        assert result.recall_at_100 == pytest.approx(1.0)
        assert result.latency_p99_ms >= result.latency_p50_ms > 0
    assert first.ingest["documents_added"] == 5
    assert second.ingest["chunks_embedded"] == 0
    assert second.ingest["documents_unchanged"] == 5


def test_eval_command_prints_json(tmp_path: Path, dataset: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "s"), "eval", str(dataset), "--mode", "hybrid", "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dataset"] == "tiny"
    assert [r["mode"] for r in report["results"]] == ["hybrid"]


def test_eval_of_a_missing_split_exits_2(tmp_path: Path, dataset: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "s"), "eval", str(dataset), "--split", "dev"]
    )

    assert result.exit_code == 2
    assert "test" in result.output  # names the splits that exist
