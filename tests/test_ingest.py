"""Ingesting folders: incremental re-ingest, one-paragraph edits, --sync, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DOCS
from hypothesis import given, settings
from hypothesis import strategies as st

import ragstore
from ragstore.engine.pipeline import document_hash
from ragstore.records import metadata_json, vector_batch
from ragstore.types import Document


def paragraph(i: int) -> str:
    return (
        f"Section {i}. The committee reviewed proposal number {i} about river {i} and its "
        f"bridges. Members asked how the budget for year {2000 + i} would be spent, and the "
        f"engineers explained the plan for inspection, repair and painting in detail. "
    ) * 2


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, root)
    return root


def test_sample_folder_loads_every_format(store: ragstore.Store, folder: Path) -> None:
    col = store.collection("docs")

    report = col.ingest([folder])

    # 5 files of prose, 4 JSONL records, 3 CSV rows
    assert report.documents_added == 12
    assert report.documents_skipped == 0
    assert col.count(where={"file_type": "jsonl"}) == 4
    assert col.get(["faq-2"])[0].metadata["lang"] == "de"
    [html] = col.get(["guides/two-factor.html"])
    assert html.title == "Two-factor authentication"
    assert "console.log" not in html.text
    assert col.search("how many days to return headphones?", k=3)[0].doc_id in {
        "policies/refunds.md",
        "p-100",
    }


def test_second_ingest_of_an_unchanged_folder_embeds_nothing(
    store: ragstore.Store, folder: Path
) -> None:
    col = store.collection("docs")
    first = col.ingest([folder])

    second = col.ingest([folder])

    assert first.chunks_embedded > 0
    assert second.chunks_embedded == 0
    assert second.documents_unchanged == first.documents_added
    assert (second.documents_added, second.documents_updated) == (0, 0)


def test_editing_one_paragraph_reembeds_only_its_chunks(
    store: ragstore.Store, tmp_path: Path
) -> None:
    root = tmp_path / "long"
    root.mkdir()
    paragraphs = [paragraph(i) for i in range(24)]
    (root / "report.txt").write_text("\n\n".join(paragraphs))
    col = store.collection("docs")
    first = col.ingest([root])

    paragraphs[12] = paragraphs[12].replace("painting", "repainting the railings")
    (root / "report.txt").write_text("\n\n".join(paragraphs))
    second = col.ingest([root])

    assert first.chunks_embedded >= 10
    assert second.documents_updated == 1
    assert 1 <= second.chunks_embedded <= 2
    assert second.chunks_reused == first.chunks_embedded - second.chunks_embedded
    hits = col.search("repainting the railings", k=1)
    assert "repainting the railings" in hits[0].text


def test_sync_deletes_documents_whose_files_are_gone(store: ragstore.Store, folder: Path) -> None:
    col = store.collection("docs")
    col.ingest([folder])
    (folder / "policies" / "shipping.md").unlink()
    lines = (folder / "faq.jsonl").read_text().splitlines()
    (folder / "faq.jsonl").write_text("\n".join(lines[:3]) + "\n")  # drop faq-4

    without_sync = col.ingest([folder])
    assert without_sync.documents_deleted == 0
    assert col.count() == 12

    with_sync = col.ingest([folder], sync=True)

    assert with_sync.documents_deleted == 2
    assert col.get(["policies/shipping.md", "faq-4"]) == []
    assert all(h.doc_id != "policies/shipping.md" for h in col.search("express shipping", k=20))


def test_sync_is_scoped_to_the_given_folder(store: ragstore.Store, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.txt").write_text("alpha document")
    (tmp_path / "b" / "two.txt").write_text("beta document")
    col = store.collection("docs")
    col.ingest([tmp_path / "a"])
    col.ingest([tmp_path / "b"])

    report = col.ingest([tmp_path / "b"], sync=True)

    assert report.documents_deleted == 0
    assert col.count() == 2


def test_bad_files_are_skipped_and_counted_and_good_ones_load(
    store: ragstore.Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("A perfectly good note about tea.")
    (root / "empty.txt").write_text("")
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    records = [
        json.dumps({"id": "r1", "text": "first"}),
        "{not json",
        json.dumps({"id": "r3", "text": "third"}),
    ]
    (root / "records.jsonl").write_text("\n".join(records) + "\n")
    col = store.collection("docs")

    report = col.ingest([root])

    assert report.documents_added == 4  # good.md, empty.txt, r1, r3
    assert report.documents_skipped == 3  # image.txt, latin1.txt, records.jsonl:2
    assert any("records.jsonl:2" in error for error in report.errors)
    assert "records.jsonl:2" in caplog.text
    assert col.get(["empty.txt"])[0].chunk_count == 0


def test_missing_path_is_invalid_input(store: ragstore.Store, tmp_path: Path) -> None:
    with pytest.raises(ragstore.InvalidInput, match="no such file"):
        store.collection("docs").ingest([tmp_path / "nope"])


def test_beir_corpus_loads_as_is(store: ragstore.Store, tmp_path: Path) -> None:
    corpus = (
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"
    )
    if not corpus.exists():
        pytest.skip("shared/datasets is not beside this checkout")
    sample = tmp_path / "corpus.jsonl"
    with corpus.open() as lines:
        sample.write_text("".join(next(lines) for _ in range(5)))
    col = store.create_collection("beir", chunk_size=128, chunk_overlap=16)

    report = col.ingest([sample])

    assert report.documents_added == 5
    first = json.loads(sample.read_text().splitlines()[0])
    [doc] = col.get([first["_id"]])
    assert (doc.title, doc.text) == (first["title"], first["text"])


def test_sync_keeps_records_of_a_file_with_a_malformed_line(
    store: ragstore.Store, tmp_path: Path
) -> None:
    root = tmp_path / "records"
    root.mkdir()
    lines = [json.dumps({"id": f"r{i}", "text": f"record number {i}"}) for i in range(3)]
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    col = store.collection("docs")
    col.ingest([root])

    lines[1] = lines[1][:-3]  # r1's line is now malformed
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    report = col.ingest([root], sync=True)

    assert report.documents_skipped == 1
    assert report.documents_deleted == 0
    assert [d.id for d in col.get(["r0", "r1", "r2"])] == ["r0", "r1", "r2"]


def json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=8,
    )


JSON_VALUES = json_values(st.floats(allow_nan=False))
"""What ``json.dumps`` writes by default (infinities included)."""
PLAIN_JSON_VALUES = json_values(st.floats(allow_nan=False, allow_infinity=False))
"""What metadata validation accepts."""


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=20),
    title=st.text(max_size=10),
    metadata=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=5),
    source=st.none() | st.text(max_size=10),
)
def test_document_hash_is_the_same_from_stored_metadata_json(
    text: str, title: str, metadata: dict[str, object], source: str | None
) -> None:
    doc = Document("d", text, title, metadata, source)
    assert document_hash(doc, metadata_json(metadata)) == document_hash(doc)


@settings(max_examples=200, deadline=None)
@given(metadata=st.dictionaries(st.text(max_size=5), PLAIN_JSON_VALUES, max_size=5))
def test_vector_batch_keeps_a_plain_json_copy_of_metadata(metadata: dict[str, object]) -> None:
    given = {
        key: tuple(value) if isinstance(value, list) else value for key, value in metadata.items()
    }
    [record] = vector_batch(["d"], np.ones((1, 4), dtype=np.float32), [given], 4)

    assert record.metadata_json == json.dumps(given, sort_keys=True, ensure_ascii=False)
    assert record.document.metadata == json.loads(record.metadata_json)
    assert record.document.metadata is not given
