"""What each remote operation sends and how its answer becomes a Python value.

Every operation is written once, here, as a generator of :class:`Call` and
:class:`Wait` steps that receives each call's :class:`Answer` and returns the result;
no step does any I/O. The blocking client (:mod:`ragstore.client.sync`) and the
asyncio one (:mod:`ragstore.client.aio`) only drive these generators, so both send the
same requests and raise the same errors.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from ragstore import errors
from ragstore.answer import types as answers
from ragstore.config import (
    DEFAULT_EMBEDDER,
    ChunkingConfig,
    CollectionConfig,
    IndexConfig,
    check_payload_path,
)
from ragstore.engine.store import CollectionInfo
from ragstore.errors import (
    AccessDenied,
    Conflict,
    DimensionMismatch,
    InvalidInput,
    NotFound,
    RagstoreError,
    RemoteError,
)
from ragstore.records import (
    check_delete_target,
    doc_ids,
    text_records,
    vector_batch,
    vector_records,
)
from ragstore.search.hybrid import SearchOptions, SearchResults, batch_inputs
from ragstore.store.base import AliasRow
from ragstore.types import DocumentPage, Hit, IngestReport, StoredDocument

UPSERT_BATCH = 32
"""Documents sent per upsert request: a server writes this many before it answers
(``sync_max_documents``); a larger batch would become a background job."""
SEARCH_BATCH = 100
"""Searches sent per batch request (the most a server takes in one)."""
JOB_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request: method, path under the server's URL, JSON body."""

    method: str
    path: str
    body: Any = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep this long before the next step (while a server-side job runs)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Answer:
    """A server's answer: status, parsed JSON body (``None`` when not JSON), headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


T = TypeVar("T")
Steps: TypeAlias = Generator[Call | Wait, Answer | None, T]
"""An operation returning ``T``: yields steps, is sent each :class:`Call`'s
:class:`Answer`."""


# ------------------------------------------------------------------ answers


def checked(answer: Answer | None) -> Any:
    """The body of a successful answer; the error the embedded store would raise for a
    failed one."""
    assert answer is not None
    if answer.status < 400:
        return answer.body
    raise error_from(answer)


def error_from(answer: Answer) -> RagstoreError:
    """The ragstore error a failed answer stands for: the class the server named, else
    one chosen by status."""
    detail = answer.body.get("error") if isinstance(answer.body, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    message = str(detail.get("message") or f"the server answered HTTP {answer.status}")
    field_name = detail.get("field")
    named = getattr(errors, str(detail.get("class")), None)
    if isinstance(named, type) and issubclass(named, RagstoreError):
        rebuilt = _rebuild(named, message, field_name, detail)
        if rebuilt is not None:
            return rebuilt
    return _by_status(answer, message, field_name)


def _rebuild(
    cls: type[RagstoreError], message: str, field_name: Any, detail: Mapping[str, Any]
) -> RagstoreError | None:
    if issubclass(cls, DimensionMismatch):
        expected, got = detail.get("expected"), detail.get("got")
        if isinstance(expected, int) and isinstance(got, int):
            return DimensionMismatch(expected, got, field=field_name)
        return None
    if issubclass(cls, InvalidInput):
        return cls(message, field=field_name)
    try:
        return cls(message)
    except TypeError:  # a class whose constructor takes more than a message
        return None


def _by_status(answer: Answer, message: str, field_name: Any) -> RagstoreError:
    status = answer.status
    if status in (401, 403):
        return AccessDenied(message, status=status)
    if status in (400, 413, 422):
        return InvalidInput(message, field=field_name)
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    return RemoteError(message, status=status, retry_after=_retry_after(answer.headers))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


# -------------------------------------------------------------- collections


def collections_path(tenant: str) -> str:
    """The URL path of a tenant's collections."""
    return f"/v1/tenants/{quote(tenant, safe='')}/collections"


def collection_path(tenant: str, name: str) -> str:
    """The URL path of one collection."""
    return f"{collections_path(tenant)}/{quote(name, safe='')}"


def info_of(body: Mapping[str, Any]) -> CollectionInfo:
    """A collection's info from its JSON form."""
    config = CollectionConfig.parse(body["config"])
    return CollectionInfo(body["name"], config, int(body["documents"]), int(body["chunks"]))


def get_collection(tenant: str, name: str) -> Steps[tuple[CollectionInfo, dict[str, Any]]]:
    """A collection's info, and its index statistics."""
    body = checked((yield Call("GET", collection_path(tenant, name))))
    return info_of(body), body.get("index", {})


def list_collections(tenant: str) -> Steps[list[CollectionInfo]]:
    """Every collection of the tenant."""
    body = checked((yield Call("GET", collections_path(tenant))))
    return [info_of(each) for each in body["collections"]]


def create_collection(
    tenant: str,
    name: str,
    *,
    embedder: str | None,
    dim: int | None,
    chunk_size: int,
    chunk_overlap: int,
    index: Mapping[str, Any] | IndexConfig | None,
) -> Steps[CollectionInfo]:
    """Create a collection; its info."""
    settings = index.model_dump() if isinstance(index, IndexConfig) else dict(index or {})
    body = {"name": name, "embedder": embedder, "dim": dim, "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap, "index": settings}  # fmt: skip
    return info_of(checked((yield Call("POST", collections_path(tenant), body))))


def get_or_create(tenant: str, name: str) -> Steps[CollectionInfo]:
    """The collection's info, creating it with the default config if it does not exist
    (or another client created it in between)."""
    try:
        return (yield from get_collection(tenant, name))[0]
    except NotFound:
        pass
    try:
        return (yield from create_collection(tenant, name, **_DEFAULT_CONFIG))
    except Conflict:
        return (yield from get_collection(tenant, name))[0]


_DEFAULT_CONFIG: dict[str, Any] = {
    "embedder": DEFAULT_EMBEDDER,
    "dim": None,
    "chunk_size": ChunkingConfig().chunk_size,
    "chunk_overlap": ChunkingConfig().chunk_overlap,
    "index": None,
}


def delete_collection(tenant: str, name: str) -> Steps[None]:
    """Delete a collection and every document in it."""
    checked((yield Call("DELETE", collection_path(tenant, name))))


# ------------------------------------------------------------------ aliases


def _alias_path(tenant: str, alias: str | None = None) -> str:
    base = f"/v1/tenants/{quote(tenant, safe='')}/aliases"
    return base if alias is None else f"{base}/{quote(alias, safe='')}"


def _alias_row(body: Mapping[str, Any]) -> AliasRow:
    return AliasRow(body["name"], body["collection"], body.get("previous"))


def set_alias(tenant: str, alias: str, collection: str) -> Steps[AliasRow]:
    """Point ``alias`` at ``collection``."""
    body = {"collection": collection}
    return _alias_row(checked((yield Call("PUT", _alias_path(tenant, alias), body))))


def rollback_alias(tenant: str, alias: str) -> Steps[AliasRow]:
    """Point ``alias`` back at the collection it named before."""
    path = _alias_path(tenant, alias) + "/rollback"
    return _alias_row(checked((yield Call("POST", path))))


def delete_alias(tenant: str, alias: str) -> Steps[None]:
    """Remove an alias."""
    checked((yield Call("DELETE", _alias_path(tenant, alias))))


def list_aliases(tenant: str) -> Steps[list[AliasRow]]:
    """Every alias of the tenant."""
    body = checked((yield Call("GET", _alias_path(tenant))))
    return [_alias_row(each) for each in body["aliases"]]


# ------------------------------------------------------------------- writes


def upsert(
    path: str, config: CollectionConfig, records: Iterable[Mapping[str, Any]]
) -> Steps[IngestReport]:
    """Validate every record as the embedded store does, then send them in batches."""
    if config.embedder is None:
        documents = [
            _vector_document(r.document, r.vector) for r in vector_records(records, config.dim)
        ]
    else:
        documents = [_text_document(d) for d in text_records(records)]
    return (yield from _send_documents(path, documents))


def upsert_vectors(
    path: str,
    config: CollectionConfig,
    ids: Sequence[str],
    vectors: Any,
    metadata: Sequence[Mapping[str, Any]] | None,
) -> Steps[IngestReport]:
    """Bulk upsert of a vector collection: ids, an ``(n, dim)`` array, metadata."""
    if config.embedder is not None:
        raise InvalidInput(
            "this collection embeds its own text: upsert text records", field="vectors"
        )
    batch = vector_batch(ids, vectors, metadata, config.dim)
    documents = [_vector_document(r.document, r.vector) for r in batch]
    return (yield from _send_documents(path, documents))


def _text_document(doc: Any) -> dict[str, Any]:
    out = {"id": doc.id, "text": doc.text, "title": doc.title, "metadata": doc.metadata}
    return out | ({"source": doc.source} if doc.source is not None else {})


def _vector_document(doc: Any, vector: Any) -> dict[str, Any]:
    out = {"id": doc.id, "vector": np.asarray(vector, dtype=np.float32).ravel().tolist()}
    out |= {"metadata": doc.metadata} | ({"text": doc.text} if doc.text else {})
    return out | ({"source": doc.source} if doc.source is not None else {})


def _send_documents(path: str, documents: list[dict[str, Any]]) -> Steps[IngestReport]:
    total = IngestReport()
    for start in range(0, len(documents), UPSERT_BATCH):
        batch = documents[start : start + UPSERT_BATCH]
        body = checked((yield Call("POST", path + "/documents", {"documents": batch})))
        part = body.get("report")
        if part is None:  # the server made it a job: wait for it
            part = yield from _finished_job(body["job"]["id"])
        _add(total, part)
    return total


def _finished_job(job_id: str) -> Steps[dict[str, Any]]:
    while True:
        job = checked((yield Call("GET", f"/v1/jobs/{quote(job_id, safe='')}")))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded" or job["errors"]:
                first = job["errors"][0] if job["errors"] else {}
                raise InvalidInput(
                    first.get("message", f"job {job['status']}"), field=first.get("field")
                )
            report: dict[str, Any] = job["report"]
            return report
        yield Wait(JOB_POLL_S)


def _add(total: IngestReport, part: Mapping[str, Any]) -> None:
    for name, value in part.items():
        if name == "seconds":
            total.seconds = round(total.seconds + float(value), 3)
        elif isinstance(value, list):
            getattr(total, name).extend(value)
        elif hasattr(total, name):
            setattr(total, name, getattr(total, name) + int(value))


def delete(path: str, ids: Any, where: Mapping[str, Any] | None, all: bool) -> Steps[int]:
    """Delete by ids, by filter, or all; how many were deleted."""
    check_delete_target(ids, where, all)
    body: dict[str, Any] = {"all": True} if all else {}
    if ids is not None:
        body["ids"] = doc_ids(ids)
    if where is not None:
        body["filter"] = where
    return int(checked((yield Call("POST", path + "/delete", body)))["deleted"])


# ----------------------------------------------------------- payload indexes


def _payload_index_path(path: str, field_path: str) -> str:
    check_payload_path(field_path, "path")  # refused here as the embedded store does
    return f"{path}/payload-indexes/{quote(field_path, safe='')}"


def create_payload_index(path: str, field_path: str) -> Steps[None]:
    """Index the metadata field ``field_path`` explicitly."""
    checked((yield Call("PUT", _payload_index_path(path, field_path))))


def drop_payload_index(path: str, field_path: str) -> Steps[None]:
    """Stop indexing ``field_path`` explicitly."""
    checked((yield Call("DELETE", _payload_index_path(path, field_path))))


def payload_indexes(path: str) -> Steps[list[dict[str, Any]]]:
    """The metadata fields indexed for filters."""
    body = checked((yield Call("GET", path + "/payload-indexes")))
    found: list[dict[str, Any]] = body["payload_indexes"]
    return found


# -------------------------------------------------------------------- reads


def get(
    path: str,
    ids: Any,
    where: Mapping[str, Any] | None,
    limit: int,
    cursor: str | None,
    include: Sequence[str],
) -> Steps[DocumentPage]:
    """Documents by ids, or a listing page."""
    body: dict[str, Any] = {
        "filter": where,
        "limit": limit,
        "cursor": cursor,
        "include": list(include),
    }
    if ids is not None:
        body["ids"] = doc_ids(ids)
    found = checked((yield Call("POST", path + "/get", body)))
    documents = [_stored_document(d) for d in found["documents"]]
    return DocumentPage(documents, found.get("next_cursor"))


def _stored_document(body: Mapping[str, Any]) -> StoredDocument:
    vectors = body.get("vectors")
    matrix = None if vectors is None else np.asarray(vectors, dtype=np.float32)
    return StoredDocument(
        id=body["id"], text=body.get("text"), title=body.get("title", ""),
        metadata=body.get("metadata"), source=body.get("source"),
        content_hash=body.get("content_hash", ""), updated_at=float(body.get("updated_at", 0.0)),
        chunk_count=int(body.get("chunk_count", 0)), vectors=matrix,
    )  # fmt: skip


def count(path: str, where: Mapping[str, Any] | None) -> Steps[int]:
    """How many documents (match ``where``)."""
    return int(checked((yield Call("POST", path + "/count", {"filter": where})))["count"])


def search_body(
    query: str | None, vector: Any, explain: bool, cache: bool, options: SearchOptions
) -> dict[str, Any]:
    """The JSON body of one search."""
    body: dict[str, Any] = {"query": query, "explain": explain, "cache": cache}
    if vector is not None:
        body["vector"] = _vector_list(vector)
    for name, value in options.items():
        body["filter" if name == "where" else name] = value
    return body


def _vector_list(vector: Any) -> Any:
    try:
        return np.asarray(vector, dtype=np.float64).tolist()
    except (TypeError, ValueError):
        raise InvalidInput("vector must be a list of numbers", field="vector") from None


def results_of(body: Mapping[str, Any]) -> SearchResults:
    """One search's hits from its JSON form."""
    results = SearchResults(Hit(**hit) for hit in body["hits"])
    results.plan = body.get("plan")
    return results


def search(path: str, body: Mapping[str, Any]) -> Steps[SearchResults]:
    """One search."""
    return results_of(checked((yield Call("POST", path + "/search", body))))


def batch_bodies(
    queries: Any, vectors: Any, cache: bool, options: SearchOptions
) -> list[dict[str, Any]]:
    """The bodies of a batch search: one per text of ``queries`` or row of ``vectors``."""
    inputs = batch_inputs(queries, vectors)
    if isinstance(inputs, list):
        return [search_body(q, None, False, cache, options) for q in inputs]
    return [search_body(None, row, False, cache, options) for row in inputs]


def search_batch(path: str, bodies: list[dict[str, Any]]) -> Steps[list[SearchResults]]:
    """Several searches, :data:`SEARCH_BATCH` to a request."""
    results = []
    for start in range(0, len(bodies), SEARCH_BATCH):
        part = {"searches": bodies[start : start + SEARCH_BATCH]}
        found = checked((yield Call("POST", path + "/search/batch", part)))
        results += [results_of(each) for each in found["results"]]
    return results


def answer_body(
    question: str,
    k: int,
    where: Mapping[str, Any] | None,
    mode: str | None,
    min_score: float | None,
    cache: bool,
    extractive: bool,
) -> dict[str, Any]:
    """The JSON body of one (unstreamed) answer."""
    return {"question": question, "k": k, "filter": where, "mode": mode,
            "min_score": min_score, "cache": cache, "extractive": extractive}  # fmt: skip


def answer(path: str, body: Mapping[str, Any]) -> Steps[answers.Answer]:
    """One answer, written by the server's language model or extractive."""
    return answers.Answer.from_dict(checked((yield Call("POST", path + "/answer", body))))


def ids_and_scores(hits: Sequence[Hit]) -> tuple[list[str], npt.NDArray[np.float32]]:
    """``search_vectors``'s answer from a dense search's hits."""
    return [h.doc_id for h in hits], np.array([h.score for h in hits], dtype=np.float32)
