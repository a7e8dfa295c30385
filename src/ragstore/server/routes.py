"""The ``/v1`` routes: the Python API's verbs over HTTP, each a thin shell.

Every route authenticates, checks the caller's role and scope, checks the limits,
then runs the store call on a bounded pool (reads and searches on ``search``, writes
on ``write``), so the event loop only ever waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from ragstore.config import IndexConfig
from ragstore.engine.store import Collection, CollectionInfo
from ragstore.errors import Conflict, InvalidConfig, InvalidInput, NotFound
from ragstore.search.hybrid import SearchOptions, SearchResults
from ragstore.server.answers import answer_dict, answer_once, answer_stream, check_answer
from ragstore.server.auth import TENANT_PATTERN, Principal, Role
from ragstore.server.errors import ApiError
from ragstore.server.jobs import Job
from ragstore.server.responses import JSON, hit_dict
from ragstore.server.runtime import Runtime, check_json_field, check_text
from ragstore.server.schemas import (
    AliasSet,
    AnswerRequest,
    BatchSearchRequest,
    CollectionCreate,
    CountRequest,
    DeleteRequest,
    DoctorRequest,
    DocumentIn,
    GetRequest,
    ReindexRequest,
    SearchRequest,
    SnapshotRequest,
    UpsertRequest,
)
from ragstore.server.tenancy import NAME_PATTERN, CollectionSpec, short_name, split_name
from ragstore.store.base import AliasRow
from ragstore.types import IngestReport

router = APIRouter(prefix="/v1")
_bearer = HTTPBearer(auto_error=False, description="An API key: 'Authorization: Bearer <key>'.")

Tenant = Annotated[str, Path(pattern=TENANT_PATTERN, description="The tenant that owns it.")]
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="The collection's name.")]
DocId = Annotated[str, Path(min_length=1, max_length=1024, description="A document id.")]
AliasName = Annotated[str, Path(pattern=NAME_PATTERN, description="The alias's name.")]
FieldPath = Annotated[
    str, Path(min_length=1, max_length=1024, description="A metadata field, e.g. author.name.")
]
COLLECTION = "/tenants/{tenant}/collections/{collection}"
ALIAS = "/tenants/{tenant}/aliases/{alias}"
_INDEX_DEPTH = 2
"""Index settings are flat: one object of numbers and names."""


def runtime(request: Request) -> Runtime:
    """The running server's state."""
    rt: Runtime = request.app.state.runtime
    return rt


# The dependencies are ``async`` on purpose: FastAPI runs a plain ``def`` dependency on
# its thread pool, a hop that costs more than the work (an attribute read; one SHA-256).


async def current_runtime(request: Request) -> Runtime:
    """The running server's state, as a dependency."""
    return runtime(request)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its API key (401 when missing or unknown)."""
    who = runtime(request).keys.authenticate(credentials.credentials if credentials else None)
    request.state.key_id = who.key_id
    return who


Rt = Annotated[Runtime, Depends(current_runtime)]
Who = Annotated[Principal, Depends(principal)]


# ----------------------------------------------------------------- collections


@router.get("/tenants/{tenant}/collections", summary="List a tenant's collections")
async def list_collections(tenant: Tenant, rt: Rt, who: Who) -> JSON:
    """The tenant's collections (those this key may see) with configs and counts."""
    who.require("read", tenant)
    found = await rt.search_pool.run(lambda: rt.collections.list(tenant))
    visible = [_info(i) for i in found if who.may_see(tenant, short_name(i.name))]
    return JSON({"collections": visible})


@router.post("/tenants/{tenant}/collections", status_code=201, summary="Create a collection")
async def create_collection(tenant: Tenant, body: CollectionCreate, rt: Rt, who: Who) -> JSON:
    """A new collection: text (embedded by the server's model) or vectors (``dim``)."""
    who.require("admin", tenant, body.name)
    index = _index_config(body.index)
    spec = CollectionSpec(
        body.embedder is not None, body.dim, body.chunk_size, body.chunk_overlap, index
    )
    created = await rt.write_pool.run(lambda: rt.collections.create(tenant, body.name, spec))
    return JSON(_info(created.info()), status_code=201)


@router.get(COLLECTION, summary="Get a collection")
async def get_collection(tenant: Tenant, collection: Name, rt: Rt, who: Who) -> JSON:
    """The collection's config, counts and index segments."""
    who.require("read", tenant, collection)

    def work() -> dict[str, Any]:
        col = rt.collections.get(tenant, collection)
        return _info(col.info()) | {"index": col.index_stats()}

    return JSON(await rt.search_pool.run(work))


@router.delete(COLLECTION, summary="Delete a collection")
async def delete_collection(tenant: Tenant, collection: Name, rt: Rt, who: Who) -> JSON:
    """Delete the collection and every document in it."""
    who.require("admin", tenant, collection)
    await rt.write_pool.run(lambda: rt.collections.delete(tenant, collection))
    return JSON({"deleted": collection})


@router.get(COLLECTION + "/payload-indexes", summary="List payload indexes")
async def list_payload_indexes(tenant: Tenant, collection: Name, rt: Rt, who: Who) -> JSON:
    """The metadata fields indexed for filters: those made explicitly (``pinned``) and
    those built for filters, with distinct ``values`` and ``bytes`` (see
    ``Collection.payload_indexes``)."""
    who.require("read", tenant, collection)
    found = await rt.search_pool.run(
        lambda: rt.collections.get(tenant, collection).payload_indexes()
    )
    return JSON({"payload_indexes": found})


@router.put(COLLECTION + "/payload-indexes/{path:path}", summary="Create a payload index")
async def create_payload_index(
    tenant: Tenant, collection: Name, path: FieldPath, rt: Rt, who: Who
) -> JSON:
    """Index the metadata field ``path`` explicitly: built now and always kept; doing it
    again changes nothing. Answers with every payload index."""
    who.require("write", tenant, collection)

    def work() -> list[dict[str, Any]]:
        col = rt.collections.get(tenant, collection)
        col.create_payload_index(path)
        return col.payload_indexes()

    return JSON({"payload_indexes": await rt.write_pool.run(work)})


@router.delete(COLLECTION + "/payload-indexes/{path:path}", summary="Drop a payload index")
async def drop_payload_index(
    tenant: Tenant, collection: Name, path: FieldPath, rt: Rt, who: Who
) -> JSON:
    """Stop indexing ``path`` explicitly; 422 naming ``path`` when none was made on it."""
    who.require("write", tenant, collection)
    await rt.write_pool.run(lambda: rt.collections.get(tenant, collection).drop_payload_index(path))
    return JSON({"deleted": path})


# --------------------------------------------------------------------- aliases


@router.get("/tenants/{tenant}/aliases", summary="List a tenant's aliases")
async def list_aliases(tenant: Tenant, rt: Rt, who: Who) -> JSON:
    """The tenant's aliases (those this key may see): the collection each names and
    the one it named before (``previous``, for a rollback)."""
    who.require("read", tenant)
    found = await rt.search_pool.run(lambda: rt.collections.aliases(tenant))
    return JSON({"aliases": [_alias(tenant, a) for a in found if who.may_see(tenant, a.name)]})


@router.put(ALIAS, summary="Create or switch an alias")
async def set_alias(tenant: Tenant, alias: AliasName, body: AliasSet, rt: Rt, who: Who) -> JSON:
    """Point the alias at one of the tenant's collections, in one step: every route
    that names the alias serves that collection from its next request (admin on both
    names)."""
    who.require("admin", tenant, alias)
    who.require("admin", tenant, body.collection)
    found = await rt.write_pool.run(
        lambda: rt.collections.set_alias(tenant, alias, body.collection)
    )
    return JSON(_alias(tenant, found))


@router.post(COLLECTION + "/reindex", status_code=202, summary="Re-index into a new collection")
async def reindex(tenant: Tenant, collection: Name, body: ReindexRequest, rt: Rt, who: Who) -> JSON:
    """A job that builds ``target`` from this collection (or alias) while it keeps
    serving and taking writes, then optionally switches an alias to it (admin on every
    name involved). Follow it at ``GET /v1/jobs/{id}``; its ``result`` is the report."""
    for name in (collection, body.target, body.switch):
        if name is not None:
            who.require("admin", tenant, name)
    index = None if body.index is None else _index_config(body.index)
    changes = {"chunk_size": body.chunk_size, "chunk_overlap": body.chunk_overlap,
               "index": index, "switch": body.switch, "drop_old": body.drop_old}  # fmt: skip
    collections = rt.collections

    def check() -> None:  # the plain mistakes answer now rather than in the job
        collections.get(tenant, collection)
        try:
            collections.get(tenant, body.target)
        except NotFound:
            return
        raise Conflict(f"{body.target!r} already exists")

    await rt.search_pool.run(check)

    def work(progress: Callable[[int, int], None]) -> dict[str, Any]:
        return collections.reindex(tenant, collection, body.target, progress, **changes)

    job = rt.jobs.submit_task(tenant, collection, "reindex", work)
    return JSON(job.to_dict(), status_code=202)


@router.post(ALIAS + "/rollback", summary="Roll an alias back")
async def rollback_alias(tenant: Tenant, alias: AliasName, rt: Rt, who: Who) -> JSON:
    """Point the alias back at the collection it named before its last switch (admin
    on the alias and on that collection); 409 when there is none."""
    who.require("admin", tenant, alias)

    def work() -> AliasRow:
        previous = rt.collections.alias(tenant, alias).previous
        if previous is not None:
            who.require("admin", tenant, previous)
        return rt.collections.rollback_alias(tenant, alias)

    return JSON(_alias(tenant, await rt.write_pool.run(work)))


@router.delete(ALIAS, summary="Delete an alias")
async def delete_alias(tenant: Tenant, alias: AliasName, rt: Rt, who: Who) -> JSON:
    """Remove the alias; the collection it names stays."""
    who.require("admin", tenant, alias)
    await rt.write_pool.run(lambda: rt.collections.delete_alias(tenant, alias))
    return JSON({"deleted": alias})


# ------------------------------------------------------------------- documents


@router.post(COLLECTION + "/documents", summary="Upsert documents")
async def upsert(tenant: Tenant, collection: Name, body: UpsertRequest, rt: Rt, who: Who) -> JSON:
    """Insert or replace a batch. Up to ``sync_max_documents`` documents are written
    before the answer (200, the report); a larger batch becomes a job (202)."""
    who.require("write", tenant, collection)
    _check_batch(body.documents, rt)
    records = [d.record() for d in body.documents]
    if len(records) > rt.limits.sync_max_documents:

        def submit() -> Job:
            return rt.jobs.submit(tenant, rt.collections.get(tenant, collection), records)

        job = await rt.search_pool.run(submit)  # the job board is a file
        rt.metrics.jobs_started.inc()
        headers = {"Location": f"/v1/jobs/{job.id}"}
        return JSON({"job": job.to_dict()}, status_code=202, headers=headers)
    write = lambda: _upsert(rt.collections.get(tenant, collection), records)  # noqa: E731
    report = await rt.write_pool.run(write)
    rt.metrics.documents_written.inc(report.documents_added + report.documents_updated)
    return JSON({"report": report.to_dict()})


@router.get(COLLECTION + "/documents", summary="List documents")
async def list_documents(
    tenant: Tenant,
    collection: Name,
    rt: Rt,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=8192)] = None,
) -> JSON:
    """Documents in id order, ``limit`` at a time; pass ``next_cursor`` back as
    ``cursor`` for the next page (``null`` at the end)."""
    who.require("read", tenant, collection)

    def work() -> dict[str, Any]:
        page = rt.collections.get(tenant, collection).get(limit=limit, cursor=cursor or None)
        return {"documents": [d.to_dict() for d in page], "next_cursor": page.next_cursor}

    return JSON(await rt.search_pool.run(work))


@router.post(COLLECTION + "/get", summary="Get documents by ids or filter")
async def get_documents(
    tenant: Tenant, collection: Name, body: GetRequest, rt: Rt, who: Who
) -> JSON:
    """The documents with ``ids`` (in that order, unknown ones left out), or ``limit``
    of those matching ``filter`` in id order with a ``next_cursor``; each with the
    fields ``include`` names (``vectors``: its chunk vectors)."""
    who.require("read", tenant, collection)
    check_json_field(body.filter, rt.limits.max_filter_depth, "filter")
    if body.ids is not None and len(body.ids) > rt.limits.max_batch:
        raise _too_many("ids", len(body.ids), rt.limits.max_batch)

    def work() -> dict[str, Any]:
        page = rt.collections.get(tenant, collection).get(
            body.ids, where=body.filter, limit=body.limit, cursor=body.cursor,
            include=body.include,
        )  # fmt: skip
        return {"documents": [d.to_dict() for d in page], "next_cursor": page.next_cursor}

    return JSON(await rt.search_pool.run(work))


@router.get(COLLECTION + "/documents/{doc_id:path}", summary="Get a document")
async def get_document(tenant: Tenant, collection: Name, doc_id: DocId, rt: Rt, who: Who) -> JSON:
    """One stored document; 404 when there is none."""
    who.require("read", tenant, collection)
    found = await rt.search_pool.run(lambda: rt.collections.get(tenant, collection).get([doc_id]))
    if not found:
        raise NotFound(f"no document {doc_id!r} in collection {collection!r}")
    return JSON(found[0].to_dict())


@router.delete(COLLECTION + "/documents/{doc_id:path}", summary="Delete a document")
async def delete_document(
    tenant: Tenant, collection: Name, doc_id: DocId, rt: Rt, who: Who
) -> JSON:
    """Delete one document; 404 when there is none."""
    who.require("write", tenant, collection)
    count = await rt.write_pool.run(lambda: rt.collections.get(tenant, collection).delete([doc_id]))
    if not count:
        raise NotFound(f"no document {doc_id!r} in collection {collection!r}")
    return JSON({"deleted": count})


@router.post(COLLECTION + "/delete", summary="Delete documents by ids or filter")
async def delete_documents(
    tenant: Tenant, collection: Name, body: DeleteRequest, rt: Rt, who: Who
) -> JSON:
    """Delete the documents with ``ids``, every one matching ``filter``, or with
    ``all: true`` every document (an empty filter is refused: it would match all)."""
    who.require("write", tenant, collection)
    _check_delete(body, rt)

    def work() -> int:
        col = rt.collections.get(tenant, collection)
        if body.all:
            return col.delete(where=None, all=True)
        return col.delete(body.ids, where=body.filter)

    return JSON({"deleted": await rt.write_pool.run(work)})


@router.post(COLLECTION + "/count", summary="Count documents")
async def count(tenant: Tenant, collection: Name, body: CountRequest, rt: Rt, who: Who) -> JSON:
    """How many documents (match ``filter``)."""
    who.require("read", tenant, collection)
    check_json_field(body.filter, rt.limits.max_filter_depth, "filter")
    found = await rt.search_pool.run(
        lambda: rt.collections.get(tenant, collection).count(body.filter)
    )
    return JSON({"count": found})


# ---------------------------------------------------------------------- search


@router.post(COLLECTION + "/search", summary="Search")
async def search(tenant: Tenant, collection: Name, body: SearchRequest, rt: Rt, who: Who) -> JSON:
    """The ``k`` best chunks for a text query or a vector (see ``Collection.search``).

    ``cache`` (default true) answers repeated text queries from the query cache;
    ``explain`` adds the plan each side ran.
    """
    who.require("read", tenant, collection)
    check_search(body, rt)
    hits, seconds, _ = await find_hits(rt, tenant, collection, body)
    return search_answer(rt, body, hits, seconds)  # the fast lane takes most searches


@router.post(COLLECTION + "/search/batch", summary="Several searches in one call")
async def search_batch(
    tenant: Tenant, collection: Name, body: BatchSearchRequest, rt: Rt, who: Who
) -> JSON:
    """Each of ``searches`` as ``POST .../search`` would answer it, in order:
    ``{"results": [{"hits", "took_ms"}, …]}``."""
    who.require("read", tenant, collection)
    for one in body.searches:
        check_search(one, rt)
    results = []
    for one in body.searches:
        hits, seconds, _ = await find_hits(rt, tenant, collection, one)
        results.append(_answer(rt, one, hits, seconds))
    return JSON({"results": results})


async def find_hits(
    rt: Runtime, tenant: str, collection: str, body: SearchRequest
) -> tuple[SearchResults, float, bool]:
    """A checked search's hits, how long finding them took, and whether they came from
    memory: a repeated text query's cached answer is looked up on the event loop (a
    lookup that reads no table, spared the hop to the search pool); any other search
    runs on the pool."""
    started = time.perf_counter()
    remembered = _answer_from_memory(rt, tenant, collection, body)
    if remembered is not None:
        return remembered, time.perf_counter() - started, True
    hits, seconds = await rt.search_pool.run(lambda: _search(rt, tenant, collection, body))
    return hits, seconds, False


def search_answer(rt: Runtime, body: SearchRequest, hits: SearchResults, seconds: float) -> JSON:
    """A search's answer, counted in the metrics."""
    return JSON(_answer(rt, body, hits, seconds))


def _answer(
    rt: Runtime, body: SearchRequest, hits: SearchResults, seconds: float
) -> dict[str, Any]:
    cached = next((h.cached for h in hits if h.cached), None)
    mode = body.mode or ("dense" if body.vector is not None else "hybrid")
    rt.metrics.search.labels(mode, cached or "no").observe(seconds)
    if body.cache and body.query is not None and body.vector is None and not body.explain:
        rt.metrics.cache.labels("hit" if cached else "miss").inc()
    out: dict[str, Any] = {"hits": [hit_dict(h) for h in hits], "took_ms": round(seconds * 1e3, 3)}
    if body.explain:
        out["plan"] = hits.plan
    return out


def _answer_from_memory(
    rt: Runtime, tenant: str, collection: str, body: SearchRequest
) -> SearchResults | None:
    if not body.cache or body.query is None or body.vector is not None or body.explain:
        return None
    return rt.collections.cached_answer(tenant, collection, body.query, _options(body))


def _search(
    rt: Runtime, tenant: str, collection: str, body: SearchRequest
) -> tuple[SearchResults, float]:
    col = rt.collections.get(tenant, collection)
    started = time.perf_counter()
    hits = col.search(
        body.query,
        vector=body.vector,
        explain=body.explain,
        cache=body.cache,
        tenant=tenant,
        **_options(body),
    )
    return hits, time.perf_counter() - started


def _options(body: SearchRequest) -> SearchOptions:
    return {
        "k": body.k,
        "where": body.filter,
        "mode": body.mode,
        "candidates": body.candidates,
        "fusion": body.fusion,
        "rrf_k": body.rrf_k,
        "alpha": body.alpha,
        "group_by_doc": body.group_by_doc,
        "mmr_lambda": body.mmr_lambda,
        "highlight": body.highlight,
        "ef_search": body.ef_search,
        "nprobe": body.nprobe,
        "min_score": body.min_score,
    }


# ---------------------------------------------------------------------- answer


@router.post(
    COLLECTION + "/answer",
    summary="Answer a question",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def answer(
    tenant: Tenant, collection: Name, body: AnswerRequest, rt: Rt, who: Who
) -> Response:
    """An answer to ``question`` from the ``k`` best chunks, with citations, token
    counts, cost and stage timings (see ``Collection.answer``): written by the server's
    language model, or extractive when none is configured or ``extractive`` is true, or
    when the model fails (``degraded: true`` and the ``reason``). ``cache`` (default
    true) reuses an answer while no document it rests on changed. With ``stream``, the
    answer comes as Server-Sent Events: ``hits``, then ``delta`` events with the text,
    then ``answer`` with the whole answer."""
    who.require("read", tenant, collection)
    check_answer(body, rt)
    if body.stream:
        return await answer_stream(rt, tenant, collection, body)
    return JSON(answer_dict(await answer_once(rt, tenant, collection, body)))


# ------------------------------------------------------------- jobs and cache


@router.get("/jobs/{job_id}", summary="Get an ingest job")
async def get_job(job_id: Annotated[str, Path(max_length=64)], rt: Rt, who: Who) -> JSON:
    """Status, progress, report and per-document errors of an ingest job."""
    job = await rt.search_pool.run(lambda: rt.jobs.get(job_id))  # the board is a file
    if job is None or not who.may_see(job["tenant"], job["collection"]):
        raise NotFound(f"no job {job_id!r}")
    who.require("read", job["tenant"], job["collection"])
    return JSON(job)


@router.get("/cache/stats", summary="Query cache statistics")
async def cache_stats(rt: Rt, who: Who) -> JSON:
    """The store-wide query cache's counters and size (keys scoped to all tenants)."""
    return JSON(await _cache_call(rt, who, "read", lambda: rt.cache_stats()))


@router.post("/cache/clear", summary="Empty the query cache")
async def cache_clear(rt: Rt, who: Who) -> JSON:
    """Drop every cached answer (keys scoped to all tenants, admin)."""
    return JSON({"cleared": await _cache_call(rt, who, "admin", lambda: rt.cache_clear())})


@router.post("/snapshots", status_code=201, summary="Take a snapshot of the store")
async def take_snapshot(body: SnapshotRequest, rt: Rt, who: Who) -> JSON:
    """An online snapshot into the server's snapshot folder (admin, every tenant);
    answers with its path, collections, files and size."""
    who.require("admin", None)
    folder = rt.settings.snapshot_dir
    if folder is None:
        raise ApiError(409, "snapshots are off: start the server with --snapshot-dir",
                       field="snapshot_dir", kind="conflict")  # fmt: skip
    taken = await rt.write_pool.run(lambda: rt.snapshot(folder, body.collections, body.keep))
    return JSON(taken, status_code=201)


@router.post("/doctor", summary="Examine the store, and repair it")
async def doctor(body: DoctorRequest, rt: Rt, who: Who) -> JSON:
    """Every check of ``ragstore doctor`` (admin, every tenant): each with its status,
    figures and advice, and the repairs made first when ``repair`` is true. The figures
    also become the ``ragstore_doctor_*`` gauges on ``/metrics``."""
    who.require("admin", None)
    return JSON(await rt.write_pool.run(lambda: rt.doctor(body.collections, body.repair)))


async def _cache_call(rt: Runtime, who: Principal, role: Role, fn: Any) -> Any:
    who.require(role, None)
    return await rt.search_pool.run(fn)


# --------------------------------------------------------------------- helpers


def _check_batch(documents: list[DocumentIn], rt: Runtime) -> None:
    limits = rt.limits
    if len(documents) > limits.max_batch:
        raise _too_many("documents", len(documents), limits.max_batch)
    for i, doc in enumerate(documents):
        check_text(doc.text, limits.max_text_chars, f"documents[{i}].text")
        check_text(doc.title, limits.max_text_chars, f"documents[{i}].title")
        check_json_field(doc.metadata, limits.max_metadata_depth, f"documents[{i}].metadata")


def check_search(body: SearchRequest, rt: Runtime) -> None:
    """413 or 422 naming the field when a search exceeds the server's limits."""
    limits = rt.limits
    check_text(body.query, limits.max_query_chars, "query")
    if body.k > limits.max_k:
        raise ApiError(422, f"k must be at most {limits.max_k}", field="k")
    check_json_field(body.filter, limits.max_filter_depth, "filter")


def _check_delete(body: DeleteRequest, rt: Runtime) -> None:
    """422 unless a delete names exactly one of ``ids``, a narrowing ``filter`` or
    ``all: true``; 413 for too many ids."""
    given = [name for name in ("ids", "filter") if getattr(body, name) is not None]
    given += ["all"] if body.all else []
    if len(given) != 1:
        field = given[-1] if given else "ids"
        raise InvalidInput("give exactly one of ids, filter or all: true", field=field)
    if body.filter == {}:
        message = 'an empty filter matches every document: send {"all": true} to delete them all'
        raise InvalidInput(message, field="filter")
    if body.ids is not None and len(body.ids) > rt.limits.max_batch:
        raise _too_many("ids", len(body.ids), rt.limits.max_batch)
    check_json_field(body.filter, rt.limits.max_filter_depth, "filter")


def _index_config(index: dict[str, Any]) -> IndexConfig:
    """The index settings of a new collection, validated strictly (no ``true`` for an
    integer); 422 naming ``index.<setting>``."""
    check_json_field(index, _INDEX_DEPTH, "index")
    try:
        return IndexConfig.model_validate(index, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["index", *(str(part) for part in first["loc"])])
        raise InvalidConfig(f"{field}: {first['msg']}", field=field) from None


def _too_many(field: str, got: int, limit: int) -> ApiError:
    return ApiError(413, f"{field} has {got} items; at most {limit} per request", field=field)


def _upsert(col: Collection, records: list[dict[str, Any]]) -> IngestReport:
    try:
        return col.upsert(records)
    except InvalidInput as error:  # name the request's field, not the library's
        if error.field:
            error.field = error.field.replace("records[", "documents[", 1)
        error.args = tuple(str(a).replace("records[", "documents[") for a in error.args)
        raise


def _alias(tenant: str, alias: AliasRow) -> dict[str, Any]:
    return alias.to_dict() | {"tenant": tenant}


def _info(info: CollectionInfo) -> dict[str, Any]:
    tenant, name = split_name(info.name) or ("", info.name)
    return info.to_dict() | {"name": name, "tenant": tenant}
