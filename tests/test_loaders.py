"""Tests for ragstore.ingest.loaders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ragstore.errors import InvalidInput
from ragstore.ingest.loaders import (
    SUPPORTED_SUFFIXES,
    LoadedFile,
    LoadProblem,
    list_files,
    load_file,
)
from ragstore.types import Document


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` to ``tmp_path / name`` (creating folders) and return the path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def load(tmp_path: Path, name: str, content: str | bytes) -> LoadedFile:
    """Write a file and load it with its name as relpath."""
    return load_file(write(tmp_path, name, content), name)


def by_id(loaded: LoadedFile) -> dict[str, Document]:
    """The loaded documents keyed by id."""
    return {doc.id: doc for doc in loaded.documents}


def pdf_bytes(pages: list[str], title: str) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            f" /Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    positions = []
    for number, body in enumerate(objects, start=1):
        positions.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{pos:010d} 00000 n \n" for pos in positions).encode()
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# --- whole-file formats ------------------------------------------------------------


def test_plain_text_is_one_document(tmp_path: Path) -> None:
    path = write(tmp_path, "notes/a.txt", "Hello\n\nworld\n")
    loaded = load_file(path, "notes/a.txt")
    assert not loaded.skipped and loaded.problems == []
    [doc] = loaded.documents
    assert (doc.id, doc.text, doc.title, doc.source) == (
        "notes/a.txt",
        "Hello\n\nworld\n",
        "",
        "notes/a.txt",
    )
    assert doc.metadata == {
        "source": "notes/a.txt",
        "file_type": "txt",
        "modified_at": path.stat().st_mtime,
    }
    assert isinstance(doc.metadata["modified_at"], float)


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "bom.rst", "\ufeffTitle\n=====\n".encode())
    assert loaded.documents[0].text == "Title\n=====\n"
    assert loaded.documents[0].metadata["file_type"] == "rst"


def test_markdown_title_is_first_level_one_heading(tmp_path: Path) -> None:
    text = "intro\n## Not this\n# Learn C# ##\nbody\n# Later\n"
    loaded = load(tmp_path, "doc.markdown", text)
    [doc] = loaded.documents
    assert (doc.title, doc.text, doc.metadata["file_type"]) == ("Learn C#", text, "markdown")
    assert load(tmp_path, "plain.md", "no heading #here").documents[0].title == ""


def test_empty_file_is_one_empty_document(tmp_path: Path) -> None:
    loaded = load(tmp_path, "empty.txt", b"")
    assert not loaded.skipped
    assert [doc.text for doc in loaded.documents] == [""]


def test_html_visible_text(tmp_path: Path) -> None:
    html = """<!DOCTYPE html><html><head><title> My
      Page </title><style>p { color: red }</style><meta charset="utf-8"></head>
    <body><script>var hidden = 1;</script>
    <h1>Heading</h1><p>First   paragraph
    with <b>bold</b> &amp; entities&nbsp;&lt;ok&gt;.</p>
    <div>Line one<br>Line two</div><ul><li>item 1</li><li>item 2</li></ul>
    <table><tr><td>a</td><td>b</td></tr></table><template>not shown</template>
    </body></html>"""
    [doc] = load(tmp_path, "page.html", html).documents
    assert doc.title == "My Page"
    assert doc.text == (
        "Heading\n\nFirst paragraph with bold & entities <ok>.\n\n"
        "Line one\n\nLine two\n\nitem 1\n\nitem 2\n\na b"
    )
    assert doc.metadata["file_type"] == "html"


def test_html_with_unclosed_head_keeps_body(tmp_path: Path) -> None:
    [doc] = load(tmp_path, "page.htm", "<title>T</title><body><p>Body text</p>").documents
    assert (doc.title, doc.text) == ("T", "Body text")


def test_unparseable_html_is_skipped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "bad.html", "<![bogus[ x ]]> text")
    assert loaded.skipped
    assert "HTML" in loaded.problems[0].message


def test_pdf_pages_are_joined(tmp_path: Path) -> None:
    loaded = load(tmp_path, "paper.pdf", pdf_bytes(["First page text", "Second page"], "A Paper"))
    assert not loaded.skipped and loaded.problems == []
    [doc] = loaded.documents
    assert doc.text == "First page text\n\nSecond page"
    assert (doc.id, doc.title, doc.metadata["file_type"]) == ("paper.pdf", "A Paper", "pdf")


def test_broken_pdf_is_skipped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a pdf")
    assert loaded.skipped and loaded.documents == []
    [problem] = loaded.problems
    assert problem.location == "broken.pdf"
    assert "PDF" in problem.message


# --- unusable files ----------------------------------------------------------------


def test_binary_file_is_skipped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "blob.txt", b"abc\x00def")
    assert loaded.skipped and loaded.documents == []
    assert loaded.problems == [LoadProblem("blob.txt", "binary or non-UTF-8 file")]


def test_non_utf8_file_is_skipped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "latin.md", "café".encode("latin-1"))
    assert loaded.skipped
    assert "non-UTF-8" in loaded.problems[0].message


def test_unreadable_path_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    loaded = load_file(folder, "folder.txt")
    assert loaded.skipped
    assert loaded.problems[0].message.startswith("not a regular file")


def test_unsupported_suffix_is_skipped(tmp_path: Path) -> None:
    loaded = load(tmp_path, "a/b.bin", b"data")
    assert loaded.skipped
    assert loaded.problems == [LoadProblem("a/b.bin", "unsupported file type '.bin'")]


# --- records formats ---------------------------------------------------------------


def test_beir_corpus_jsonl_loads_as_is(tmp_path: Path) -> None:
    lines = [
        {"_id": "doc1", "title": "Title one", "text": "Body one.", "metadata": {}},
        {"_id": "doc2", "title": "", "text": "Body two.", "metadata": {"url": "http://x"}},
    ]
    content = "\n".join(json.dumps(line) for line in lines) + "\n"
    loaded = load(tmp_path, "beir/corpus.jsonl", content)
    assert not loaded.skipped and loaded.problems == []
    docs = by_id(loaded)
    assert list(docs) == ["doc1", "doc2"]
    assert (docs["doc1"].title, docs["doc1"].text) == ("Title one", "Body one.")
    assert docs["doc1"].source == "beir/corpus.jsonl"
    assert docs["doc1"].metadata == {"source": "beir/corpus.jsonl", "file_type": "jsonl"}
    assert docs["doc2"].metadata["url"] == "http://x"


def test_nested_metadata_is_merged_over_other_fields(tmp_path: Path) -> None:
    record = {"id": 7, "text": "t", "lang": "en", "year": 1999, "metadata": {"year": 2001}}
    [doc] = load(tmp_path, "r.jsonl", json.dumps(record)).documents
    assert doc.id == "7"
    assert doc.metadata == {"lang": "en", "year": 2001, "source": "r.jsonl", "file_type": "jsonl"}


def test_malformed_jsonl_line_is_reported_and_rest_loads(tmp_path: Path) -> None:
    content = '{"id": "a", "text": "one"}\n\n{"id": "b", "text": \n{"id": "c", "text": "three"}\n'
    loaded = load(tmp_path, "data/x.jsonl", content)
    assert not loaded.skipped
    assert list(by_id(loaded)) == ["a", "c"]
    [problem] = loaded.problems
    assert problem.location == "data/x.jsonl:3"
    assert "not valid JSON" in problem.message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "no id"}, "no 'id'"),
        ({"id": "", "text": "empty id"}, "no 'id'"),
        ({"id": True, "text": "bool id"}, "no 'id'"),
        ({"id": "x"}, "'text'"),
        ({"id": "x", "text": 3}, "'text'"),
        ({"id": "x", "text": "t", "title": 5}, "'title'"),
        ({"id": "x", "text": "\ud800"}, "surrogate"),
        (["not", "an", "object"], "not an object"),
    ],
)
def test_bad_record_is_reported_at_its_line(tmp_path: Path, record: object, message: str) -> None:
    content = json.dumps({"id": "ok", "text": "fine"}) + "\n" + json.dumps(record) + "\n"
    loaded = load(tmp_path, "r.jsonl", content)
    assert list(by_id(loaded)) == ["ok"]
    [problem] = loaded.problems
    assert problem.location == "r.jsonl:2"
    assert message in problem.message


def test_duplicate_id_later_record_wins(tmp_path: Path) -> None:
    content = '{"id": "a", "text": "old"}\n{"id": "b", "text": "b"}\n{"id": "a", "text": "new"}\n'
    loaded = load(tmp_path, "d.jsonl", content)
    assert [(doc.id, doc.text) for doc in loaded.documents] == [("a", "new"), ("b", "b")]
    [problem] = loaded.problems
    assert problem.location == "d.jsonl:3"
    assert "duplicate id 'a'" in problem.message and "d.jsonl:1" in problem.message


def test_json_single_object_and_list(tmp_path: Path) -> None:
    single = load(tmp_path, "one.json", json.dumps({"id": "s", "text": "solo", "title": "T"}))
    assert [(doc.id, doc.title) for doc in single.documents] == [("s", "T")]
    assert single.documents[0].metadata == {"source": "one.json", "file_type": "json"}
    items = [{"id": 1, "text": "a"}, 42, {"_id": "2", "text": "b"}]
    many = load(tmp_path, "many.json", json.dumps(items))
    assert list(by_id(many)) == ["1", "2"]
    assert [problem.location for problem in many.problems] == ["many.json[1]"]


@pytest.mark.parametrize("content", ["{not json", "42"])
def test_unusable_json_file_is_skipped(tmp_path: Path, content: str) -> None:
    loaded = load(tmp_path, "bad.json", content)
    assert loaded.skipped and loaded.documents == []
    assert loaded.problems[0].location == "bad.json"


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl", "empty.csv"])
def test_empty_records_file_has_no_documents_and_no_problems(tmp_path: Path, name: str) -> None:
    loaded = load(tmp_path, name, "")
    assert (loaded.skipped, loaded.documents, loaded.problems) == (False, [], [])


def test_csv_rows_become_records(tmp_path: Path) -> None:
    content = (
        "id,title,text,lang\r\n"
        'r1,First,"Multi\nline text",en\r\n'
        "\r\n"
        ",No id,orphan,en\r\n"
        "r3,Third,short\r\n"
        "r4,,fourth,fr\r\n"
    )
    loaded = load(tmp_path, "table.csv", content)
    docs = by_id(loaded)
    assert list(docs) == ["r1", "r4"]
    assert (docs["r1"].title, docs["r1"].text) == ("First", "Multi\nline text")
    assert docs["r4"].metadata == {"lang": "fr", "source": "table.csv", "file_type": "csv"}
    assert [problem.location for problem in loaded.problems] == ["table.csv:5", "table.csv:6"]
    assert "no 'id'" in loaded.problems[0].message
    assert "3 fields" in loaded.problems[1].message


# --- walking -----------------------------------------------------------------------


def test_list_files_walks_sorted_and_skips_hidden_and_unsupported(tmp_path: Path) -> None:
    for name in ["b.txt", "a/z.md", "a/y.pdf", ".hidden.txt", ".git/config.txt", "c.bin", "a.txt"]:
        write(tmp_path, name, "x")
    write(tmp_path, "a/deep/er.csv", "x")
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    listing = list_files(tmp_path)
    relpaths = [relpath for _, relpath in listing.files]
    assert relpaths == ["a.txt", "b.txt", "a/y.pdf", "a/z.md", "a/deep/er.csv"]
    assert all(path.is_absolute() and path == tmp_path / rel for path, rel in listing.files)
    assert listing.problems == []  # links inside the root: listed under their own paths


def test_list_files_on_a_single_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sub/only.json", "{}")
    assert list_files(path).files == [(path, "only.json")]


def test_links_outside_the_roots_are_reported_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.txt", "not to be ingested")
    root = tmp_path / "root"
    write(root, "kept.txt", "x")
    (root / "secret.txt").symlink_to(outside)
    (root / "elsewhere").symlink_to(outside.parent, target_is_directory=True)
    listing = list_files(root)
    assert [rel for _, rel in listing.files] == ["kept.txt"]
    assert {p.location for p in listing.problems} == {"elsewhere", "secret.txt"}
    assert all("--follow-symlinks" in p.message for p in listing.problems)
    assert set(listing.unlisted) == {root / "elsewhere", root / "secret.txt"}
    followed = list_files(root, follow_symlinks=True)
    assert [rel for _, rel in followed.files] == ["kept.txt", "secret.txt", "elsewhere/secret.txt"]


def test_a_link_named_in_the_roots_is_inside_them(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/a.txt", "x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").symlink_to(outside)
    listing = list_files(root, roots=[root, outside])
    assert listing.files == [] and listing.problems == []


def test_link_loops_end(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "a/x.txt", "x")
    (root / "a" / "up").symlink_to(root, target_is_directory=True)
    (root / "loop.txt").symlink_to(root / "loop.txt")
    listing = list_files(root, follow_symlinks=True)
    assert [rel for _, rel in listing.files] == ["a/x.txt"]
    assert [p.location for p in listing.problems] == ["loop.txt"]
    outside = tmp_path / "outside"
    write(outside, "y.txt", "y")
    (outside / "back").symlink_to(outside, target_is_directory=True)
    (root / "out").symlink_to(outside, target_is_directory=True)
    followed = list_files(root, follow_symlinks=True)
    assert [rel for _, rel in followed.files] == ["a/x.txt", "out/y.txt"]


def test_a_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "f.txt"
    os.mkfifo(fifo)
    result: list[LoadedFile] = []
    reader = threading.Thread(target=lambda: result.append(load_file(fifo, "f.txt")), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert result[0].skipped
    assert result[0].problems[0].message.startswith("not a regular file")


def test_a_file_over_the_size_limit_is_skipped_unread(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "x" * 2000)
    loaded = load_file(path, "big.txt", max_file_bytes=1999)
    assert loaded.skipped and loaded.documents == []
    assert "over the limit of 1,999" in loaded.problems[0].message
    assert load_file(path, "big.txt", max_file_bytes=2000).documents[0].text == "x" * 2000


def test_a_name_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.txt"))
    path.write_bytes(b"hello")
    loaded = load_file(path, path.name)
    assert loaded.skipped
    assert loaded.problems[0].location == "caf\\udce9.txt"  # printable
    assert "not valid UTF-8" in loaded.problems[0].message


def test_nan_and_infinity_in_records_are_bad_records(tmp_path: Path) -> None:
    lines = [
        '{"id": "a", "text": "x", "score": NaN}',
        '{"id": "b", "text": "x", "score": -Infinity}',
        '{"id": "c", "text": "x", "score": 1.5}',
    ]
    loaded = load(tmp_path, "r.jsonl", "\n".join(lines))
    assert [doc.id for doc in loaded.documents] == ["c"]
    assert [p.location for p in loaded.problems] == ["r.jsonl:1", "r.jsonl:2"]
    assert all("not a JSON number" in p.message for p in loaded.problems)
    assert load(tmp_path, "r.json", '[{"id": "a", "text": "x", "n": NaN}]').skipped


def test_list_files_on_a_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        list_files(tmp_path / "missing")


def test_supported_suffixes() -> None:
    expected = {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf", ".json"}
    assert expected | {".jsonl", ".csv"} == SUPPORTED_SUFFIXES


def test_csv_numbers_become_numbers_but_ids_and_text_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,text,price,weight,code,note\n7,42,199,1.5,007,1e5\n")

    [doc] = load_file(path, "items.csv").documents

    assert (doc.id, doc.text) == ("7", "42")
    assert doc.metadata["price"] == 199
    assert doc.metadata["weight"] == 1.5
    assert doc.metadata["code"] == "007"
    assert doc.metadata["note"] == "1e5"
