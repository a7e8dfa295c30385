"""Turn files into :class:`Document` objects, one loader per file type.

Loading streams file by file and never fails a whole run on one bad file: a file that
cannot be used at all comes back ``skipped`` with a problem, and a bad record inside a
records file (JSONL, JSON, CSV) is reported at ``file:line`` while the rest loads.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from stat import S_ISREG
from typing import Any

from pypdf import PdfReader

from ragstore.errors import InvalidInput, printable
from ragstore.inputs import parse_json
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
    ``warnings`` are what the library that parsed it (pypdf) logged about the file, kept
    here instead of reaching the terminal; they leave nothing out.
    """

    path: Path
    relpath: str
    documents: list[Document]
    problems: list[LoadProblem]
    skipped: bool
    warnings: list[LoadProblem] = field(default_factory=list)


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


@dataclass(frozen=True)
class Listing:
    """What a walk of one root found: the files to load as ``(absolute path, relpath)``,
    what it passed over with a reason, and the paths it did not read (folders it could
    not list, links it did not follow): their contents are unknown this run, so a sync
    must keep the documents that came from under them."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)
    unlisted: list[Path] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    """Relpaths of the regular files passed over for their type."""


def list_files(root: Path, *, roots: Sequence[Path] = (), follow_symlinks: bool = False) -> Listing:
    """The files to load under ``root``.

    A file root is listed as is, with its name as relpath (an unsupported type is then
    reported by :func:`load_file`). A directory is walked recursively and
    deterministically (each folder's files by name, then its subfolders by name),
    skipping hidden files and folders, special files (FIFOs, sockets, devices) and
    unsupported types (listed in ``unsupported``). Relpaths are POSIX-style and relative
    to ``root``.

    Symbolic links: a link whose target lies inside ``roots`` (the resolved roots of
    this run) is passed over quietly, since its target is listed under its own path;
    a link leading outside them is skipped and reported, unless ``follow_symlinks``.
    Followed folder links are walked once each, so a link loop ends.

    Raises:
        InvalidInput: ``root`` does not exist.
    """
    root = root.absolute()
    if root.is_dir():
        return _Walk(root, [r.resolve() for r in roots or [root]], follow_symlinks).run()
    if root.exists():
        return Listing(files=[(root, root.name)])
    raise InvalidInput(f"no such file or directory: {printable(str(root))}", field="path")


@dataclass
class _Walk:
    """One directory walk: depth first, files before subfolders, each by name."""

    root: Path
    roots: list[Path]
    follow_symlinks: bool
    listing: Listing = field(default_factory=Listing)
    walked: set[tuple[int, int]] = field(default_factory=set)

    def run(self) -> Listing:
        pending = [self.root]
        while pending:
            folder = pending.pop()
            subfolders = self._list(folder)
            pending.extend(reversed(subfolders))
        return self.listing

    def _list(self, folder: Path) -> list[Path]:
        """Record the files of ``folder``; return its subfolders to walk, by name."""
        try:
            stat = folder.stat()
            with os.scandir(folder) as scan:
                entries = sorted(
                    (e for e in scan if not e.name.startswith(".")), key=lambda e: e.name
                )
        except OSError as exc:
            self._problem(folder, f"cannot list folder: {exc.strerror or exc}")
            return []
        if (stat.st_dev, stat.st_ino) in self.walked:
            return []  # reached again through a followed link
        self.walked.add((stat.st_dev, stat.st_ino))
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink() and not self._follow(path):
                continue
            if _is_dir(entry):
                subfolders.append(path)
            elif _is_file(entry):
                relpath = path.relative_to(self.root).as_posix()
                if path.suffix.lower() in SUPPORTED_SUFFIXES:
                    self.listing.files.append((path, relpath))
                else:
                    self.listing.unsupported.append(printable(relpath))
        return subfolders

    def _follow(self, link: Path) -> bool:
        """Whether to follow a symbolic link. Broken links, loops and links leading
        outside the roots that are not followed are reported when they would have
        been loaded (a folder, or a file of a supported type)."""
        wanted = link.suffix.lower() in SUPPORTED_SUFFIXES
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):  # broken, or a loop
            if wanted:
                self._problem(link, "broken symbolic link (or a link loop): skipped")
            return False
        if any(target.is_relative_to(root) for root in self.roots):
            return False  # listed under its own path
        if self.follow_symlinks:
            return True
        if wanted or target.is_dir():
            self._problem(
                link,
                f"symbolic link to {printable(str(target))}, outside the ingested paths: "
                "skipped (--follow-symlinks follows it)",
            )
        return False

    def _problem(self, path: Path, message: str) -> None:
        """Note a path passed over: reported, and its documents kept by a sync."""
        self.listing.unlisted.append(path)
        relpath = printable(path.relative_to(self.root).as_posix())
        self.listing.problems.append(LoadProblem(relpath, message))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    """A regular file (FIFOs, sockets and devices are not); a file that cannot even be
    stat'ed is listed, so that :func:`load_file` reports it."""
    try:
        return entry.is_file()
    except OSError:
        return True


DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
"""Files larger than this are skipped and reported, never read (``max_file_bytes``)."""


def load_file(
    path: Path, relpath: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> LoadedFile:
    """Load the documents of one file; never raises for a bad file.

    ``relpath`` becomes the id of whole-file documents and the ``source`` of all of
    them. Problems come back in the result; ``skipped`` is set when nothing was usable:
    a name that is not valid UTF-8, a file that is not a regular file (a FIFO is never
    opened for reading, which would block), a file over ``max_file_bytes``, an
    unreadable or unparseable one.
    """
    logged: list[str] = []
    try:
        loader = _loader_for(path)
        _check_name(path)
        source = _read(path, relpath, max_file_bytes)
        with _library_warnings(path, logged):
            documents, problems = loader(source)
    except _SkipFile as skip:
        problem = LoadProblem(printable(relpath), str(skip))
        return LoadedFile(path, relpath, [], [problem], True, _warnings(relpath, logged))
    return LoadedFile(path, relpath, documents, problems, False, _warnings(relpath, logged))


_LIBRARY_LOGGERS = {".pdf": "pypdf"}
"""Per file type, the logger of the library that parses it."""
_LIBRARY_LOCK = threading.Lock()
"""Held while a library's logger is diverted, so each message goes to its own file."""


class _Collect(logging.Handler):
    """Keeps the text of each warning a library logs."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextmanager
def _library_warnings(path: Path, into: list[str]) -> Iterator[None]:
    """Collect in ``into`` the warnings that the library parsing ``path`` logs meanwhile
    (pypdf reports malformed PDFs so), instead of letting them reach the terminal."""
    name = _LIBRARY_LOGGERS.get(path.suffix.lower())
    if name is None:
        yield
        return
    library = logging.getLogger(name)
    handler = _Collect(into)
    with _LIBRARY_LOCK:
        level, propagate = library.level, library.propagate
        library.addHandler(handler)
        library.setLevel(logging.WARNING)
        library.propagate = False
        try:
            yield
        finally:
            library.removeHandler(handler)
            library.setLevel(level)
            library.propagate = propagate


def _warnings(relpath: str, messages: list[str]) -> list[LoadProblem]:
    location = printable(relpath)
    return [LoadProblem(location, printable(" ".join(m.split()))) for m in messages]


def _check_name(path: Path) -> None:
    """A file whose path is not valid UTF-8 cannot be an id, a source or an origin."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise _SkipFile("path is not valid UTF-8: rename it to ingest the file") from None


def _loader_for(path: Path) -> _Loader:
    """The loader registered for the file's suffix."""
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise _SkipFile(f"unsupported file type {path.suffix!r}")
    return loader


def _read(path: Path, relpath: str, max_bytes: int) -> _Source:
    """Read a regular file's bytes and modification time, if it is not too large.

    The file is opened without blocking (a FIFO would wait for a writer forever) and
    checked on its open descriptor, so a file swapped in between is read as checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _SkipFile(f"cannot read file: {exc.strerror or exc}") from None
    try:
        stat = os.fstat(fd)
        _check_readable(stat, max_bytes)
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(stat.st_size + 1)
            if len(data) > stat.st_size:  # it grew since: read on, up to the limit
                data += file.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise _SkipFile(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew after the check
        raise _SkipFile(f"file is over the limit of {max_bytes:,} bytes (--max-file-size)")
    return _Source(relpath, path.suffix.lower().lstrip("."), stat.st_mtime, data)


def _check_readable(stat: os.stat_result, max_bytes: int) -> None:
    if not S_ISREG(stat.st_mode):
        raise _SkipFile("not a regular file (a folder, FIFO, socket or device)")
    if stat.st_size > max_bytes:
        raise _SkipFile(
            f"file is {stat.st_size:,} bytes, over the limit of {max_bytes:,} (--max-file-size)"
        )


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
                record = parse_json(line, "record")
            except InvalidInput as bad:
                records.problem(location, str(bad))
                continue
            records.add(record, location)
    return records.result()


def _load_json(source: _Source) -> _Loaded:
    """JSON: one record object, or a list of them; an unparseable file is skipped."""
    text = source.text()
    if not text.strip():
        return [], []
    try:
        value = parse_json(text, "file")
    except InvalidInput as bad:
        raise _SkipFile(str(bad)) from None
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
