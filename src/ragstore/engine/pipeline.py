"""From documents to stored rows: hash, skip the unchanged, chunk, embed what is new, write.

Documents are written in batches, each batch in one transaction, so a reader (or a crash)
never sees half a document. Embeddings are reused by (model, hash of the embedded text): a
chunk whose text any collection of the same model already holds is never embedded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragstore.config import ChunkingConfig
from ragstore.embed.base import Embedder
from ragstore.errors import InvalidInput, printable
from ragstore.ingest.chunking import SECTION_CHARS, chunk_text
from ragstore.ingest.loaders import (
    DEFAULT_MAX_FILE_BYTES,
    LoadProblem,
    list_files,
    load_file,
)
from ragstore.store.base import (
    REMOVALS_KEPT,
    ChunkRow,
    DocumentRow,
    Reader,
    StorageBackend,
    Writer,
)
from ragstore.types import Document, IngestReport, Span

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while files are ingested."""
Guard = Callable[[Writer], None]
"""Called inside each write transaction before anything is written; what it raises
rolls the transaction back (an aliased collection checks that its alias still names
the collection written to)."""

BATCH_DOCUMENTS = 64
BATCH_CHUNKS = 512
EMBED_TEXTS = 256
"""Chunk texts handed to the embedder at once (the heap it frees is trimmed after each)."""
MIN_CHUNK_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Target:
    """Where a batch of documents goes: a collection and how it embeds and chunks."""

    store: StorageBackend
    collection_id: int
    embedder: Embedder
    chunking: ChunkingConfig
    guard: Guard | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A new or changed document with its chunks, waiting for vectors."""

    document: Document
    origin: str | None
    content_hash: str
    spans: list[Span]
    chunk_hashes: list[str]
    embed_texts: list[str]


def document_hash(doc: Document, metadata_json: str | None = None) -> str:
    """Hash of everything stored for a document; equal hashes mean nothing to do.

    ``metadata_json`` is the document's metadata already serialised canonically
    (:func:`ragstore.records.metadata_json`): the same hash, one serialisation fewer.
    """
    if metadata_json is None:
        payload = json.dumps(
            [doc.text, doc.title, doc.metadata, doc.source], sort_keys=True, ensure_ascii=False
        )
    else:  # exactly what json.dumps writes for the list above
        text, title = _json_string(doc.text), _json_string(doc.title)
        source = "null" if doc.source is None else _json_string(doc.source)
        payload = f"[{text}, {title}, {metadata_json}, {source}]"
    return hashlib.sha256(payload.encode()).hexdigest()


_json_string: Callable[[str], str] = json.encoder.encode_basestring
"""A JSON string literal as ``json.dumps(..., ensure_ascii=False)`` writes it."""


def text_hash(text: str) -> str:
    """Hash of the exact text a chunk is embedded from."""
    return hashlib.sha256(text.encode()).hexdigest()


def write_batches(
    target: Target,
    documents: Iterable[tuple[Document, str | None]],
    report: IngestReport,
) -> None:
    """Write ``(document, origin)`` pairs batch by batch, counting into ``report``."""
    for batch in _batches(documents):
        pending = _pending(target, batch, report)
        vectors = _vectors(target, pending, report)
        _write(target, pending, vectors)


def write_rows(
    store: StorageBackend,
    collection_id: int,
    documents: Sequence[DocumentRow],
    guard: Guard | None = None,
) -> None:
    """Write prepared rows in one transaction, after ``guard`` (if given) passed in it."""
    now = time.time()
    with store.write() as writer:
        if guard is not None:
            guard(writer)
        writer.write_documents(collection_id, documents, now)
        writer.trim_removals(collection_id, REMOVALS_KEPT)


def ingest_paths(
    target: Target,
    paths: Sequence[str | Path],
    *,
    sync: bool = False,
    progress: ProgressFn | None = None,
    follow_symlinks: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IngestReport:
    """Load every supported file under ``paths`` and write what changed.

    With ``sync``, documents that came from files under ``paths`` that are gone (or no
    longer hold them) are deleted. Nothing that could not be read this run is deleted:
    a file with any problem (unreadable, too large, or a bad record) keeps all its
    documents, and so does everything under a folder that could not be listed or a
    link that was not followed. See :func:`list_files` for which files are read.
    """
    started = time.perf_counter()
    roots = _resolve_roots(paths)
    report = IngestReport()
    files: list[tuple[Path, str]] = []
    kept: list[Path] = []
    for root in roots:
        listing = list_files(root, roots=roots, follow_symlinks=follow_symlinks)
        files += listing.files
        kept += listing.unlisted
        _note_problems(listing.problems, report)
        _note_unsupported(listing.unsupported, report)
    seen: set[str] = set()

    def loaded_documents() -> Iterator[tuple[Document, str | None]]:
        for done, (path, relpath) in enumerate(files, start=1):
            loaded = load_file(path, relpath, max_file_bytes=max_file_bytes)
            _note_problems(loaded.problems, report)
            _note_warnings(loaded.warnings, report)
            if loaded.problems:  # sync must not delete what a bad line may still hold
                kept.append(path)
            # A skipped file is one problem; otherwise each problem is one record left out.
            report.documents_skipped += 1 if loaded.skipped else len(loaded.problems)
            for doc in loaded.documents:
                seen.add(doc.id)
                yield doc, str(path)
            if progress is not None:
                progress(done, len(files))

    write_batches(target, loaded_documents(), report)
    if sync:
        report.documents_deleted = _sync_deletions(target, roots, seen, kept)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _resolve_roots(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise InvalidInput("give at least one file or directory to ingest", field="paths")
    roots = []
    for given in paths:
        try:
            root = Path(given).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreachable, or a link loop
            name = printable(str(given))
            raise InvalidInput(f"no such file or directory: {name}", field="paths") from None
        roots.append(root)
    return roots


def _note_problems(problems: Sequence[LoadProblem], report: IngestReport) -> None:
    for problem in problems:
        logger.warning("skipped %s: %s", problem.location, problem.message)
        report.errors.append(f"{problem.location}: {problem.message}")


def _note_warnings(warnings: Sequence[LoadProblem], report: IngestReport) -> None:
    for warning in warnings:
        logger.info("%s: %s", warning.location, warning.message)
        report.warnings.append(f"{warning.location}: {warning.message}")


def _note_unsupported(relpaths: Sequence[str], report: IngestReport) -> None:
    for relpath in relpaths:
        logger.info("skipped %s: unsupported file type", relpath)
    report.files_unsupported += relpaths


def _sync_deletions(
    target: Target, roots: Sequence[Path], seen: set[str], kept: Sequence[Path]
) -> int:
    """Delete the documents of files under ``roots`` that this run did not find, except
    those from a ``kept`` path (a file with problems, or anything under a folder or
    link that was not read)."""
    kept_origins = {str(path) for path in kept}
    kept_folders = tuple(str(path) + os.sep for path in kept)
    # a root whose name is not valid UTF-8 never held a stored document
    searched = [str(root) for root in roots if printable(str(root)) == str(root)]
    with target.store.write() as writer:
        if target.guard is not None:
            target.guard(writer)
        stale = [
            doc_id
            for doc_id, origin in writer.docs_from_origins(target.collection_id, searched)
            if doc_id not in seen
            and origin not in kept_origins
            and not (origin or "").startswith(kept_folders)
        ]
        return writer.delete_documents(target.collection_id, stale)


def _batches(
    documents: Iterable[tuple[Document, str | None]],
) -> Iterator[list[tuple[Document, str | None]]]:
    batch: dict[str, tuple[Document, str | None]] = {}
    size = 0
    for doc, origin in documents:
        batch[doc.id] = (doc, origin)  # a later copy of the same id wins
        size += 1 + len(doc.text) // 1000
        if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_CHUNKS:
            yield list(batch.values())
            batch, size = {}, 0
    if batch:
        yield list(batch.values())


def prepare_rows(
    target: Target,
    batch: list[tuple[Document, str | None]],
    report: IngestReport,
    reader: Reader,
) -> list[DocumentRow]:
    """The rows to write for the new or changed ``(document, origin)`` pairs of a batch
    (no document twice), chunked and embedded; ``reader`` (a writer's own transaction,
    when the rows are written in it) says what is stored already."""
    pending = _pending(target, batch, report, reader)
    vectors = _vectors(target, pending, report, reader)
    return [_row(p, vectors) for p in pending]


def _pending(
    target: Target,
    batch: list[tuple[Document, str | None]],
    report: IngestReport,
    reader: Reader | None = None,
) -> list[Pending]:
    with _reading(target, reader) as found:
        stored = found.content_hashes(target.collection_id, [doc.id for doc, _ in batch])
    pending = []
    for doc, origin in batch:
        digest = document_hash(doc)
        if stored.get(doc.id) == digest:
            report.documents_unchanged += 1
            continue
        if doc.id in stored:
            report.documents_updated += 1
        else:
            report.documents_added += 1
        pending.append(_chunked(target, doc, origin, digest))
    return pending


def _chunked(target: Target, doc: Document, origin: str | None, digest: str) -> Pending:
    spans = chunk_document(doc, target.embedder, target.chunking)
    if len(doc.text) > SECTION_CHARS:  # hand back what tokenizing its sections left
        _release_freed_memory()
    texts = [embed_text(doc.title, span.text) for span in spans]
    return Pending(doc, origin, digest, spans, [text_hash(t) for t in texts], texts)


def chunk_document(doc: Document, embedder: Embedder, chunking: ChunkingConfig) -> list[Span]:
    """Cut a document into spans that fit the model together with the document's title."""
    title_tokens = len(embedder.token_offsets(doc.title)) + 1 if doc.title else 0
    budget = max(min(chunking.chunk_size, embedder.max_tokens - title_tokens), MIN_CHUNK_TOKENS)
    overlap = min(chunking.chunk_overlap, budget // 2 - 1)
    return chunk_text(doc.text, embedder.token_offsets, chunk_size=budget, overlap=overlap)


def embed_text(title: str, chunk: str) -> str:
    """What the model sees for a chunk: the document title, then the chunk's text."""
    return f"{title}\n{chunk}" if title else chunk


@contextmanager
def _reading(target: Target, reader: Reader | None) -> Iterator[Reader]:
    """``reader`` when given; else a read snapshot of the target's store."""
    if reader is not None:
        yield reader
        return
    with target.store.read() as opened:
        yield opened


def _vectors(
    target: Target, pending: list[Pending], report: IngestReport, reader: Reader | None = None
) -> dict[str, np.ndarray]:
    wanted = sorted({h for p in pending for h in p.chunk_hashes})
    with _reading(target, reader) as found:
        model = (target.embedder.name, target.embedder.version)
        stored = found.vectors_by_hash(model, wanted)
    vectors = {h: np.frombuffer(blob, dtype=np.float32) for h, blob in stored.items()}
    missing: dict[str, str] = {}
    for p in pending:
        for digest, text in zip(p.chunk_hashes, p.embed_texts, strict=True):
            if digest not in vectors:
                missing.setdefault(digest, text)
    report.chunks_reused += sum(len(p.chunk_hashes) for p in pending) - len(missing)
    # A slice at a time: the embedder tokenizes all it is given up front (about 36 KB
    # per 256-token text): 620 MB for the chunks of a 20 MB document.
    digests, texts = list(missing), list(missing.values())
    for offset in range(0, len(texts), EMBED_TEXTS):
        embedded = target.embedder.embed_documents(texts[offset : offset + EMBED_TEXTS])
        vectors.update(zip(digests[offset : offset + EMBED_TEXTS], embedded, strict=True))
        _release_freed_memory()
    report.chunks_embedded += len(missing)
    return vectors


def _malloc_trim() -> Callable[[int], object] | None:
    """glibc's ``malloc_trim``; ``None`` where the C library has none."""
    import ctypes

    try:
        trim: Callable[[int], object] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def _release_freed_memory() -> None:
    """Give the heap freed by tokenizing and embedding back to the system (glibc only).

    A forward pass allocates and frees tensors of many sizes; glibc keeps what is freed
    in fragments it cannot reuse, and the resident set grew by 340 MB over 2,600 chunks
    here, never returning. Trimming after every 256 chunks kept it flat.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _write(target: Target, pending: list[Pending], vectors: dict[str, np.ndarray]) -> None:
    if pending:
        rows = [_row(p, vectors) for p in pending]
        write_rows(target.store, target.collection_id, rows, target.guard)


def _row(p: Pending, vectors: dict[str, np.ndarray]) -> DocumentRow:
    doc = p.document
    chunks = [
        ChunkRow(ordinal, span.text, span.start, span.end, digest, vectors[digest])
        for ordinal, (span, digest) in enumerate(zip(p.spans, p.chunk_hashes, strict=True))
    ]
    return DocumentRow(
        doc.id, doc.source, p.origin, doc.title, doc.text, doc.metadata, p.content_hash, chunks
    )
