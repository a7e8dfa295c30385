"""Reading BEIR-format folders: a hand-made one, its failure modes, and the real datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragstore.errors import InvalidInput
from ragstore.eval.beir import BeirDataset, load_beir

DATASETS = Path("/work/shared/datasets")


def write_beir(
    folder: Path,
    *,
    qrels: dict[str, str] | None = None,
    queries: list[dict[str, object]] | None = None,
) -> Path:
    """A small BEIR folder; ``qrels`` maps split name to the raw TSV text."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {}},
        {"_id": "d2", "title": "Dogs", "text": "Dogs bark.", "metadata": {}},
        {"_id": "d3", "title": "", "text": "Birds sing.", "metadata": {"x": 1}},
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    if queries is None:
        queries = [
            {"_id": "q1", "text": "what purrs", "metadata": {}},
            {"_id": "q2", "text": "what barks"},
            {"_id": "q3", "text": "unjudged query"},
        ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    if qrels is None:
        qrels = {
            "test": "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t2\r\nq2\td3\t0\r\n",
            "train": "query-id\tcorpus-id\tscore\nq3\td3\t1\n",
        }
    (folder / "qrels").mkdir(exist_ok=True)
    for split, text in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_bytes(text.encode())
    return folder


def test_loads_split_with_crlf_qrels(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    dataset = load_beir(folder)
    assert dataset == BeirDataset(
        name="mini",
        corpus_path=folder / "corpus.jsonl",
        queries={"q1": "what purrs", "q2": "what barks"},
        qrels={"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}},
    )


def test_other_split_keeps_only_its_queries(tmp_path: Path) -> None:
    dataset = load_beir(write_beir(tmp_path / "mini"), split="train")
    assert dataset.queries == {"q3": "unjudged query"}
    assert dataset.qrels == {"q3": {"d3": 1}}


def test_qrels_without_header_and_with_blank_lines(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini", qrels={"test": "q1\td1\t1\r\n\r\nq2\td2\t1"})
    assert load_beir(folder).qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found") as info:
        load_beir(tmp_path / "nope")
    assert info.value.field == str(tmp_path / "nope")


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    folder = write_beir(tmp_path / "mini")
    (folder / name).unlink()
    with pytest.raises(InvalidInput, match=name) as info:
        load_beir(folder)
    assert info.value.field == str(folder / name)


def test_missing_split_lists_available(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    with pytest.raises(InvalidInput, match=r"'dev' not found .*available: test, train") as info:
        load_beir(folder, split="dev")
    assert info.value.field == str(folder / "qrels" / "dev.tsv")


def test_missing_qrels_folder(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini", qrels={})
    (folder / "qrels").rmdir()
    with pytest.raises(InvalidInput, match="qrels") as info:
        load_beir(folder)
    assert info.value.field == str(folder / "qrels")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, "3 tab-separated fields"),
        ("query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\tyes\r\n", 3, "not an integer"),
        ("q1\td1\t1\nq1\td1\t1\n", 2, "repeated judgment"),
        ("q1\t\t1\n", 1, "empty"),
    ],
)
def test_malformed_qrels_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    folder = write_beir(tmp_path / "mini", qrels={"test": text})
    path = folder / "qrels" / "test.tsv"
    with pytest.raises(InvalidInput, match=reason) as info:
        load_beir(folder)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert info.value.field == str(path)


def test_header_only_qrels(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini", qrels={"test": "query-id\tcorpus-id\tscore\n"})
    with pytest.raises(InvalidInput, match="no judgments"):
        load_beir(folder)


def test_malformed_queries_line(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    path = folder / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": \n')
    with pytest.raises(InvalidInput, match="invalid JSON") as info:
        load_beir(folder)
    assert str(info.value).startswith(f"{path}:2: ")
    assert info.value.field == str(path)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "no id"}, '"_id"'),
        ({"_id": 7, "text": "numeric id"}, '"_id"'),
        ({"_id": "q1"}, '"text"'),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_query_records(tmp_path: Path, record: object, reason: str) -> None:
    folder = write_beir(tmp_path / "mini")
    (folder / "queries.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(InvalidInput, match=reason):
        load_beir(folder)


def test_repeated_query_id(tmp_path: Path) -> None:
    queries: list[dict[str, object]] = [{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]
    folder = write_beir(tmp_path / "mini", queries=queries)
    with pytest.raises(InvalidInput, match=r"queries.jsonl:2: repeated query id"):
        load_beir(folder)


def test_judged_query_missing_from_queries(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini", queries=[{"_id": "q1", "text": "a"}])
    with pytest.raises(InvalidInput, match=r"1 judged queries are missing, e\.g\. 'q2'") as info:
        load_beir(folder)
    assert info.value.field == str(folder / "queries.jsonl")


def test_non_utf8_file(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_beir(folder)


# --- the real datasets (skipped where absent) ------------------------------------------


def real(name: str) -> Path:
    folder = DATASETS / name
    if not (folder / "queries.jsonl").is_file():
        pytest.skip(f"{folder} not present")
    return folder


def pairs(dataset: BeirDataset) -> int:
    return sum(len(judged) for judged in dataset.qrels.values())


@pytest.mark.parametrize(
    ("name", "split", "queries", "judgments"),
    [
        ("scifact", "test", 300, 339),
        ("scifact", "train", 809, 919),
        ("cranfield-beir", "test", 225, 1612),
    ],
)
def test_real_dataset_counts(name: str, split: str, queries: int, judgments: int) -> None:
    dataset = load_beir(real(name), split=split)
    assert dataset.name == name
    assert dataset.corpus_path.is_file()
    assert len(dataset.queries) == queries
    assert set(dataset.queries) == set(dataset.qrels)
    assert pairs(dataset) == judgments
    assert all(text.strip() for text in dataset.queries.values())
    assert all(not qid.endswith("\r") for qid in dataset.qrels)
    assert {g for judged in dataset.qrels.values() for g in judged.values()} == {1}


def test_real_scifact_has_no_dev_split() -> None:
    with pytest.raises(InvalidInput, match="available: test, train"):
        load_beir(real("scifact"), split="dev")
