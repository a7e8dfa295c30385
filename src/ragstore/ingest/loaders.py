"""Turn files into :class:`Document` objects, one loader per file type.

Loading streams file by file and never fails a whole run on one bad file: a file that
cannot be used at all comes back ``skipped`` with a problem, and a bad record inside a
records file (JSONL, JSON, CSV) is reported at ``file:line`` while the rest loads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from ragstore.errors import InvalidInput
from ragstore.types import Document, Metadata

_SNIFF_BYTES = 8192
_BINARY = "binary or non-UTF-8 file"


@dataclass(frozen=True)
class LoadProblem:
    """Something wrong with a file (``location`` is its relpath) or with one record in it
    (``location`` is ``relpath:line`` or, for a JSON list, ``relpath[index]``)."""

    location: str
    message: str


@dataclass(frozen=True)
class LoadedFile:
    """The documents loaded from one file and the problems met on the way.

    ``skipped`` means the whole file was unusable (binary, unreadable, unparseable).
    """

    path: Path
    relpath: str
    documents: list[Document]
    problems: list[LoadProblem]
    skipped: bool


class _SkipFile(Exception):
    """Raised by a loader when the whole file is unusable; the message says why."""


class _BadRecord(Exception):
    """Raised for one record that cannot become a document; the message says why."""


@dataclass(frozen=True)
class _Source:
    """One file's bytes and what every loader needs to know about it."""

    relpath: str
    file_type: str
    modified_at: float
    data: bytes

    def text(self) -> str:
        """The content as text, BOM stripped; binary or non-UTF-8 content skips the file."""
        if b"\x00" in self.data[:_SNIFF_BYTES]:
            raise _SkipFile(_BINARY)
        try:
            return self.data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _SkipFile(_BINARY) from None

    def document(self, text: str, title: str = "") -> Document:
        """The one document of a whole-file format (text, HTML, PDF)."""
        metadata: Metadata = {
            "source": self.relpath,
            "file_type": self.file_type,
            "modified_at": self.modified_at,
        }
        return Document(self.relpath, text, title, metadata, source=self.relpath)


_Loaded = tuple[list[Document], list[LoadProblem]]
_Loader = Callable[[_Source], _Loaded]


def iter_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Yield ``(absolute path, relpath)`` for each file to load under ``root``.

    A file root is yielded as is, with its name as relpath (an unsupported type is then
    reported by :func:`load_file`). A directory is walked recursively and
    deterministically (each folder's files by name, then its subfolders by name),
    skipping hidden files and folders, symlinked folders, unreadable folders, special
    files and unsupported types. Relpaths are POSIX-style and relative to ``root``.

    Raises:
        InvalidInput: ``root`` does not exist.
    """
    root = root.absolute()
    if root.is_dir():
        yield from _walk(root)
    elif root.exists():
        yield root, root.name
    else:
        raise InvalidInput(f"no such file or directory: {root}", field="path")


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Each folder's files in name order, then its subfolders in name order.

    ``os.walk`` skips unreadable folders and does not follow symlinked folders.
    """
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            path = Path(folder, name)
            if _wanted(path):
                yield path, path.relative_to(root).as_posix()


def _wanted(path: Path) -> bool:
    """A visible file of a supported type that is not a FIFO, socket or device."""
    if path.name.startswith(".") or path.suffix.lower() not in SUPPORTED_SUFFIXES:
        return False
    try:
        return path.is_file()
    except OSError:
        return True  # cannot even stat it: let load_file report the problem


def load_file(path: Path, relpath: str) -> LoadedFile:
    """Load the documents of one file; never raises for a bad file.

    ``relpath`` becomes the id of whole-file documents and the ``source`` of all of
    them. Problems come back in the result; ``skipped`` is set when nothing was usable.
    """
    try:
        loader = _loader_for(path)
        documents, problems = loader(_read(path, relpath))
    except _SkipFile as skip:
        return LoadedFile(path, relpath, [], [LoadProblem(relpath, str(skip))], skipped=True)
    return LoadedFile(path, relpath, documents, problems, skipped=False)


def _loader_for(path: Path) -> _Loader:
    """The loader registered for the file's suffix."""
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise _SkipFile(f"unsupported file type {path.suffix!r}")
    return loader


def _read(path: Path, relpath: str) -> _Source:
    """Read the file's bytes and modification time."""
    try:
        data = path.read_bytes()
        modified_at = path.stat().st_mtime
    except OSError as exc:
        raise _SkipFile(f"cannot read file: {exc.strerror or exc}") from None
    return _Source(relpath, path.suffix.lower().lstrip("."), modified_at, data)


# --- whole-file formats ------------------------------------------------------------

_MARKDOWN_H1 = re.compile(r"^ {0,3}#[ \t]+(.+)$", re.MULTILINE)
_CLOSING_HASHES = re.compile(r"(?:^|\s)#+$")


def _load_plain(source: _Source) -> _Loaded:
    """Plain text (.txt, .rst): the content as is."""
    return [source.document(source.text())], []


def _load_markdown(source: _Source) -> _Loaded:
    """Markdown: the content as is, titled by its first ``# heading``."""
    text = source.text()
    heading = _MARKDOWN_H1.search(text)
    title = _CLOSING_HASHES.sub("", heading.group(1).strip()).strip() if heading else ""
    return [source.document(text, title)], []


def _load_html(source: _Source) -> _Loaded:
    """HTML: the visible text, one paragraph per block element, titled by ``<title>``."""
    parser = _HTMLText()
    try:
        parser.feed(source.text())
        parser.close()
    except AssertionError as exc:  # html.parser's signal for markup it cannot parse
        raise _SkipFile(f"cannot parse HTML: {exc}") from None
    return [source.document(parser.text(), parser.title())], []


def _load_pdf(source: _Source) -> _Loaded:
    """PDF: the text of each page, pages separated by a blank line."""
    try:
        reader = PdfReader(io.BytesIO(source.data))
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        title = _pdf_title(reader)
    except Exception as exc:  # pypdf raises many exception types on malformed files
        raise _SkipFile(f"cannot parse PDF: {exc}") from None
    return [source.document(text, title)], []


def _pdf_title(reader: PdfReader) -> str:
    """The title in the PDF's document information, or ``""``."""
    info = reader.metadata
    title = info.title if info is not None else None
    return title.strip() if isinstance(title, str) else ""


_SKIPPED_TAGS = frozenset({"script", "style", "template"})
_CELL_TAGS = frozenset({"td", "th"})
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details"}
    | {"dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p"}
    | {"pre", "section", "summary", "table", "tr", "ul"}
)


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML page, paragraph by paragraph, and its title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._blocks: list[list[str]] = [[]]
        self._titles: list[list[str]] = []
        self._skip_depth = 0
        self._in_head = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track a tag opening."""
        self._on_tag(tag, opening=True)

    def handle_endtag(self, tag: str) -> None:
        """Track a tag closing."""
        self._on_tag(tag, opening=False)

    def handle_data(self, data: str) -> None:
        """Keep text unless it is inside head, script, style or template."""
        if self._in_title:
            self._titles[-1].append(data)
        elif not (self._skip_depth or self._in_head):
            self._blocks[-1].append(data)

    def _on_tag(self, tag: str, *, opening: bool) -> None:
        """Update the parse state for one tag (``<body>`` also ends an unclosed head)."""
        if tag == "title":
            self._in_title = opening
            if opening:
                self._titles.append([])
        elif tag in ("head", "body"):
            self._in_head = opening and tag == "head"
        elif tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth + (1 if opening else -1))
        if tag in _BLOCK_TAGS:
            self._blocks.append([])
        elif tag in _CELL_TAGS:
            self._blocks[-1].append(" ")

    def text(self) -> str:
        """The visible text: whitespace collapsed, paragraphs joined by a blank line."""
        paragraphs = (_collapse("".join(block)) for block in self._blocks)
        return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)

    def title(self) -> str:
        """The text of the first non-empty ``<title>``, or ``""``."""
        titles = (_collapse("".join(parts)) for parts in self._titles)
        return next((title for title in titles if title), "")


def _collapse(text: str) -> str:
    """Collapse every run of whitespace to one space and trim the ends."""
    return " ".join(text.split())


# --- records formats ---------------------------------------------------------------

_RESERVED_FIELDS = frozenset({"text", "title", "metadata"})


@dataclass
class _Records:
    """Documents built from the records of one file, last record per id winning."""

    source: _Source
    documents: dict[str, tuple[Document, str]] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)

    def add(self, record: object, location: str) -> None:
        """Turn ``record`` into a document, or note why it cannot be one."""
        try:
            document = _record_document(record, self.source)
        except _BadRecord as bad:
            self.problem(location, str(bad))
            return
        previous = self.documents.get(document.id)
        if previous is not None:
            self.problem(location, f"duplicate id {document.id!r} replaces {previous[1]}")
        self.documents[document.id] = (document, location)

    def problem(self, location: str, message: str) -> None:
        """Note a problem with one record."""
        self.problems.append(LoadProblem(location, message))

    def result(self) -> _Loaded:
        """The documents and problems gathered so far."""
        return [document for document, _ in self.documents.values()], self.problems


def _record_document(record: object, source: _Source) -> Document:
    """Build a document from one record: ``id``/``_id``, ``text``, ``title``, metadata."""
    if not isinstance(record, dict):
        raise _BadRecord("record is not an object")
    id_field = "id" if "id" in record else "_id"
    doc_id = _record_id(record.get(id_field))
    text = record.get("text")
    title = record.get("title")
    if not isinstance(text, str):
        raise _BadRecord("record has no string 'text'")
    if title is not None and not isinstance(title, str):
        raise _BadRecord("'title' must be a string")
    if not _encodable(text) or not _encodable(title or ""):
        raise _BadRecord("'text' or 'title' holds an unpaired surrogate (not valid Unicode)")
    skip = _RESERVED_FIELDS | {id_field}
    metadata = {key: value for key, value in record.items() if key not in skip}
    metadata.update(_nested_metadata(record.get("metadata")))
    metadata.update(source=source.relpath, file_type=source.file_type)
    return Document(doc_id, text, title or "", metadata, source=source.relpath)


def _record_id(value: object) -> str:
    """A record's id as a string; it must be a non-empty string or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise _BadRecord("record has no 'id' or '_id' (a non-empty string or an integer)")


def _encodable(value: str) -> bool:
    """Whether ``value`` is valid Unicode (JSON escapes can smuggle in lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nested_metadata(value: object) -> dict[str, Any]:
    """Fields of a record's ``metadata`` object, merged over its other fields."""
    if isinstance(value, dict):
        return dict(value)
    return {} if value is None else {"metadata": value}


def _load_jsonl(source: _Source) -> _Loaded:
    """JSON Lines: one record per line; a bad line is reported and the rest still load."""
    records = _Records(source)
    for lineno, line in enumerate(source.text().split("\n"), start=1):
        if line.strip():
            location = f"{source.relpath}:{lineno}"
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:
                records.problem(location, f"invalid JSON: {exc}")
                continue
            records.add(record, location)
    return records.result()


def _load_json(source: _Source) -> _Loaded:
    """JSON: one record object, or a list of them; an unparseable file is skipped."""
    text = source.text()
    if not text.strip():
        return [], []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _SkipFile(f"invalid JSON: {exc}") from None
    records = _Records(source)
    if isinstance(value, list):
        for index, item in enumerate(value):
            records.add(item, f"{source.relpath}[{index}]")
    elif isinstance(value, dict):
        records.add(value, source.relpath)
    else:
        raise _SkipFile("expected a JSON object or a list of objects")
    return records.result()


def _load_csv(source: _Source) -> _Loaded:
    """CSV with a header row: one record per row, located by the row's first line."""
    records = _Records(source)
    reader = csv.reader(io.StringIO(source.text(), newline=""))
    header = next(reader, None)
    row_line = reader.line_num + 1
    try:
        for row in reader:
            _add_csv_row(records, header or [], row, f"{source.relpath}:{row_line}")
            row_line = reader.line_num + 1
    except csv.Error as exc:
        records.problem(f"{source.relpath}:{row_line}", f"invalid CSV, rest of file ignored: {exc}")
    return records.result()


def _add_csv_row(records: _Records, header: list[str], row: list[str], location: str) -> None:
    """Add one CSV row as a record; blank rows are ignored."""
    if not row:
        return
    if len(row) != len(header):
        records.problem(location, f"row has {len(row)} fields, header has {len(header)}")
        return
    record = {
        name: cell if name in _CSV_TEXT_COLUMNS else _csv_value(cell)
        for name, cell in zip(header, row, strict=True)
    }
    records.add(record, location)


_CSV_TEXT_COLUMNS = frozenset({"id", "_id", "text", "title"})
_CSV_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_CSV_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def _csv_value(cell: str) -> str | int | float:
    """A metadata cell as a number when it is written as one (so ``$lt`` works on it).

    Only canonical forms convert: ``007`` and ``1,5`` stay strings.
    """
    if _CSV_INT.fullmatch(cell):
        return int(cell)
    if _CSV_FLOAT.fullmatch(cell):
        return float(cell)
    return cell


_LOADERS: dict[str, _Loader] = {
    ".txt": _load_plain,
    ".rst": _load_plain,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
    ".json": _load_json,
    ".jsonl": _load_jsonl,
    ".csv": _load_csv,
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)
"""File suffixes :func:`load_file` can load (lower case, with the dot)."""
