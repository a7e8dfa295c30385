"""Read a dataset in BEIR format (Thakur et al., 2021).

A BEIR folder holds::

    corpus.jsonl        {"_id", "title", "text", "metadata"} per line
    queries.jsonl       {"_id", "text", ...} per line
    qrels/<split>.tsv   header "query-id<TAB>corpus-id<TAB>score", then one judgment a line

:func:`load_beir` reads the queries and the qrels of one split and keeps only the queries
judged in that split, as BEIR's ``GenericDataLoader`` does. The corpus is not read; its path
is returned so a caller can stream it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragstore.errors import InvalidInput

QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR dataset.

    ``queries`` holds only the queries judged in the split's qrels;
    ``qrels`` maps query id -> {corpus id: relevance grade}.
    """

    name: str
    corpus_path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """Load the queries and qrels of ``split`` from the BEIR folder ``folder``.

    Raises :class:`InvalidInput` (``field`` names the file) for a missing folder or file,
    an unknown split (the message lists the available ones), a malformed line
    (the message gives ``file:line``), or a judged query that ``queries.jsonl`` lacks.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"BEIR folder not found: {folder}", field=str(folder))
    corpus_path = _require_file(folder / "corpus.jsonl")
    qrels = read_qrels(_split_file(folder, split))
    queries_path = _require_file(folder / "queries.jsonl")
    all_queries = read_queries(queries_path)
    missing = sorted(qid for qid in qrels if qid not in all_queries)
    if missing:
        shown = ", ".join(repr(qid) for qid in missing[:5])
        raise InvalidInput(
            f"{queries_path}: {len(missing)} judged queries are missing, e.g. {shown}",
            field=str(queries_path),
        )
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(folder.name, corpus_path, queries, qrels)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Parse a BEIR qrels TSV: the header (optional), then ``query-id, corpus-id, score`` lines.

    CR before the newline is stripped; blank lines are skipped; a repeated
    (query, document) pair is an error, as in trec_eval.
    """
    qrels: dict[str, dict[str, int]] = {}
    for index, (lineno, line) in enumerate(_lines(path)):
        fields = line.split("\t")
        if index == 0 and tuple(f.strip() for f in fields) == QRELS_HEADER:
            continue
        qid, doc, grade = _qrels_fields(path, lineno, fields)
        judgments = qrels.setdefault(qid, {})
        if doc in judgments:
            raise _bad_line(path, lineno, f"repeated judgment for query {qid!r}, doc {doc!r}")
        judgments[doc] = grade
    if not qrels:
        raise InvalidInput(f"{path}: no judgments", field=str(path))
    return qrels


def read_queries(path: Path) -> dict[str, str]:
    """Parse a BEIR ``queries.jsonl`` into query id -> text."""
    queries: dict[str, str] = {}
    for lineno, line in _lines(path):
        record = _json_object(path, lineno, line)
        qid, text = record.get("_id"), record.get("text")
        if not isinstance(qid, str) or not qid:
            raise _bad_line(path, lineno, '"_id" must be a non-empty string')
        if not isinstance(text, str):
            raise _bad_line(path, lineno, '"text" must be a string')
        if qid in queries:
            raise _bad_line(path, lineno, f"repeated query id {qid!r}")
        queries[qid] = text
    return queries


def _split_file(folder: Path, split: str) -> Path:
    """The qrels file of ``split``, or an error listing the splits that exist."""
    qrels_dir = folder / "qrels"
    if not qrels_dir.is_dir():
        raise InvalidInput(f"qrels folder not found: {qrels_dir}", field=str(qrels_dir))
    path = qrels_dir / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in qrels_dir.glob("*.tsv") if p.is_file())
        listed = ", ".join(available) if available else "none"
        raise InvalidInput(
            f"split {split!r} not found in {qrels_dir} (available: {listed})", field=str(path)
        )
    return path


def _require_file(path: Path) -> Path:
    """``path`` if it is a file, else an error naming it."""
    if not path.is_file():
        raise InvalidInput(f"file not found: {path}", field=str(path))
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file with their 1-based numbers, CR/LF stripped."""
    try:
        with path.open(encoding="utf-8", newline="\n") as handle:
            for lineno, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason})", field=str(path)) from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror})", field=str(path)) from exc


def _qrels_fields(path: Path, lineno: int, fields: list[str]) -> tuple[str, str, int]:
    """Query id, corpus id and integer grade of one qrels line."""
    if len(fields) != 3:
        raise _bad_line(path, lineno, f"expected 3 tab-separated fields, got {len(fields)}")
    qid, doc, score = (f.strip() for f in fields)
    if not qid or not doc:
        raise _bad_line(path, lineno, "empty query id or corpus id")
    try:
        grade = int(score)
    except ValueError:
        raise _bad_line(path, lineno, f"score is not an integer: {score!r}") from None
    return qid, doc, grade


def _json_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSON-lines record, which must be an object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad_line(path, lineno, f"invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise _bad_line(path, lineno, "expected a JSON object")
    return record


def _bad_line(path: Path, lineno: int, reason: str) -> InvalidInput:
    """An error for a malformed line, located as ``file:line``."""
    return InvalidInput(f"{path}:{lineno}: {reason}", field=str(path))
