"""``doctor``: what is wrong with a store, the figures behind it, and what to do.

Each check gives one :class:`Finding`: ``ok``, ``warn`` or ``fail``, its figures and, when
not ok, advice. The checks of a collection:

- **vectors** (every stored vector, read in pages): non-finite values, zero vectors,
  norms away from 1 (the embedders and ``upsert_vectors`` store unit vectors), exact
  duplicates, and the share of near-duplicates among a sample;
- **consistency**: documents without chunks, chunks without a document, vectors of
  another size than the collection's, chunks missing their keyword terms;
- **segments**: each sealed segment's files loaded afresh (checksums verified), sampled
  vectors compared with the stored ones, and the backlog of deleted vectors it still
  holds;
- **quality**: recall@10 of the index against exact search on sampled stored vectors,
  and the index kind the capacity planner (:mod:`ragstore.engine.plan`) recommends for
  the collection's size;
- **model**: the embedding model this process loads against the name, version and
  dimension the collection recorded;
- **drift**: the newest tenth of the vectors against the older ones (mean direction,
  norm spread, nearest-neighbour similarity), and the recent queries the query cache
  holds against the earlier ones (how close the best document each finds is);
- **cache**: query cache entries citing documents the collection no longer holds.

And of the store: the SQLite write-ahead log's size, and the query cache's rates.

``repair`` fixes what is safe to fix from the store itself (rebuilds damaged segment
files or stale segments, deletes chunks whose document is gone, restores keyword terms,
compacts, removes cache entries citing documents that are gone) and examines again; the
rest is reported only.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ragstore.cache import cache_for
from ragstore.cache.base import CacheBackend, Entry
from ragstore.engine import plan
from ragstore.errors import RagstoreError, StoreError
from ragstore.index.vectors import SegmentedIndex, SegmentHealth
from ragstore.store.base import Anomaly, Reader
from ragstore.store.sqlite.db import DB_FILENAME
from ragstore.types import Matrix

if TYPE_CHECKING:
    from ragstore.engine.store import Collection, Store

Status = Literal["ok", "warn", "fail"]
EXIT_CODES: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}

PAGE = 50_000
"""Vectors read at a time."""
SAMPLE = 200
"""Vectors sampled for near-duplicates, drift and recall."""
NORM_TOLERANCE = 1e-3
NEAR_DUPLICATE_COSINE = 0.98
NEAR_DUPLICATE_SHARE = 0.25
"""Warn when more of the sampled vectors than this have a near-duplicate."""
DUPLICATE_SHARE = 0.01
RECALL_TARGET = 0.90
RECOMMEND_RECALL = 0.95
"""The recall the recommended search breadth must reach."""
DRIFT_MEAN_SHIFT = 0.2
"""Warn when the newest vectors' mean moved this far from the older ones' mean (or four
times the distance sampling alone gives, if more) …"""
DRIFT_NEIGHBOUR_DROP = 0.1
"""… or when their nearest older neighbours are this much less similar than usual."""
DRIFT_MIN_VECTORS = 100
QUERY_DRIFT_MIN = 20
"""Earlier queries needed to compare the recent ones with (and half as many recent)."""
KIND_WEIGHT_RATIO = 2.0
"""Warn when the collection's index kind needs this many times the cores and RAM of the
kind the planner recommends."""
WAL_WARN_BYTES = 1 << 30
CACHE_BATCH = 500
"""Cache entries checked against the store at a time."""
EXAMPLES = 5


@dataclass(slots=True)
class Finding:
    """One check's result."""

    check: str
    status: Status
    figures: dict[str, Any]
    advice: str = ""
    collection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "collection": self.collection,
            "check": self.check,
            "status": self.status,
            "figures": self.figures,
            "advice": self.advice,
        }


@dataclass(slots=True)
class Diagnosis:
    """Every finding of one ``doctor`` run, and the repairs it made before them."""

    findings: list[Finding]
    repairs: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        """The worst status found."""
        statuses = {finding.status for finding in self.findings}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"

    @property
    def exit_code(self) -> int:
        """0 when all is ok, 1 with warnings, 2 with failures."""
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "status": self.status,
            "findings": [finding.to_dict() for finding in self.findings],
            "repairs": self.repairs,
        }


def diagnose(store: Store, collections: Sequence[Collection], *, repair: bool) -> Diagnosis:
    """Examine ``collections`` and ``store``; with ``repair``, fix what is safe to fix and
    examine again."""
    findings = _examine(store, collections)
    if not repair:
        return Diagnosis(findings)
    repairs = [done for col in collections for done in _repair(col, findings)]
    return Diagnosis(_examine(store, collections) if repairs else findings, repairs)


def _examine(store: Store, collections: Sequence[Collection]) -> list[Finding]:
    findings = [f for col in collections for f in examine_collection(col, store.path)]
    return findings + _store_findings(store)


def examine_collection(col: Collection, store_path: Path | None = None) -> list[Finding]:
    """Every check of one collection (``store_path``: where a calibration may lie)."""
    with col.backend.read() as reader:
        anomalies = reader.anomalies(col.id, col.config.dim)
        findings = _consistency(anomalies)
        blocking = [name for name in _BLOCKING if anomalies[name].count]
        if blocking:
            advice = f"not examined until {' and '.join(blocking)} are dealt with"
            findings.append(Finding("vectors", "fail", {}, advice))
        else:
            findings += _vector_findings(_scan(reader, col.id, col.config.dim))
        index = col.vector_index
        if isinstance(index, SegmentedIndex):
            findings += _segment_findings(index.examine(reader), col.config.index.deleted_threshold)
    if not blocking:
        findings.append(_quality(col))
        findings.append(_index_kind(col, store_path))
    findings.append(_model(col))
    findings.append(_query_drift(col))
    findings.append(_stale_citations(col))
    for finding in findings:
        finding.collection = col.name
    return findings


# -- consistency ----------------------------------------------------------------------

_BLOCKING = ("vectors_of_wrong_size", "chunks_without_document")
"""Anomalies that keep the vectors from being read as a matrix of the collection's."""

_ANOMALY_ADVICE = {
    "documents_without_chunks": (
        "fail",
        "these documents cannot be found by search: ingest them again, or delete them",
    ),
    "chunks_without_document": ("fail", "doctor --repair deletes them"),
    "vectors_of_wrong_size": (
        "fail",
        "delete and ingest their documents again (the collection's dimension is fixed)",
    ),
    "chunks_without_terms": ("warn", "keyword search misses them: doctor --repair restores them"),
}


def _consistency(anomalies: dict[str, Anomaly]) -> list[Finding]:
    findings = []
    for name, anomaly in anomalies.items():
        status, advice = _ANOMALY_ADVICE[name]
        figures = {"count": anomaly.count, "examples": anomaly.examples}
        if not anomaly.count:
            findings.append(Finding(f"consistency.{name}", "ok", figures))
        else:
            findings.append(Finding(f"consistency.{name}", status, figures, advice))  # type: ignore[arg-type]
    return findings


# -- vectors --------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    """What one pass over a collection's vectors found."""

    vectors: int = 0
    non_finite: list[int] = field(default_factory=list)
    zero: list[int] = field(default_factory=list)
    off_unit: list[int] = field(default_factory=list)
    norm_spread: float = 0.0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicate_share: float | None = None
    drift: dict[str, Any] | None = None


class _Probe:
    """Sampled vectors, each with the highest cosine seen so far with another vector;
    fed page by page, so no more than a page is held."""

    def __init__(self, reader: Reader, chunk_ids: npt.NDArray[np.int64], dim: int) -> None:
        vectors = _stored_vectors(reader, chunk_ids, dim)
        norms = np.linalg.norm(vectors, axis=1)
        usable = np.isfinite(vectors).all(axis=1) & (norms > 0)
        self.ids = chunk_ids[usable]
        self.vectors = vectors[usable] / norms[usable, None]
        self.best = np.full(len(self.ids), -np.inf, dtype=np.float32)

    def observe(self, ids: npt.NDArray[np.int64], rows: Matrix) -> None:
        """Take in unit ``rows`` with chunk ids ``ids``."""
        if not len(self.ids) or not len(ids):
            return
        scores = self.vectors @ rows.T
        scores[self.ids[:, None] == ids[None, :]] = -np.inf  # never a vector's own
        self.best = np.maximum(self.best, scores.max(axis=1))

    def median(self) -> float:
        return round(float(np.median(self.best)), 4)


def _stored_vectors(reader: Reader, chunk_ids: npt.NDArray[np.int64], dim: int) -> Matrix:
    if not len(chunk_ids):
        return np.empty((0, dim), dtype=np.float32)
    return reader.vectors_for(chunk_ids.tolist()).reshape(len(chunk_ids), dim)


def _pages(
    reader: Reader, collection_id: int, ids: npt.NDArray[np.int64], dim: int
) -> Iterator[tuple[npt.NDArray[np.int64], Matrix, list[str]]]:
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        yield reader.chunk_vectors(collection_id, int(page[0]), int(page[-1]), dim)


def _scan(reader: Reader, collection_id: int, dim: int) -> _Scan:
    scan = _Scan()
    ids = reader.chunk_ids_between(collection_id, 1, 2**63 - 1)
    if not len(ids):
        return scan
    recent = max(len(ids) // 10, 1)
    older_ids = ids[:-recent]
    split = int(ids[-recent])  # chunk ids from here on are the recent ones
    anywhere = _Probe(reader, ids[_sample(len(ids), SAMPLE)], dim)
    older = _Probe(reader, older_ids[_sample(len(older_ids), SAMPLE, seed=1)], dim)
    newer = _Probe(reader, ids[-recent:][_sample(recent, SAMPLE, seed=2)], dim)
    sums = {"older": np.zeros(dim), "newer": np.zeros(dim)}
    first_doc: dict[bytes, str] = {}
    norms: list[np.ndarray] = []
    for page_ids, vectors, docs in _pages(reader, collection_id, ids, dim):
        scan.vectors += len(page_ids)
        finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(vectors).all(axis=1))
        scan.non_finite += page_ids[~finite].tolist()
        norm = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
        zero = finite & (norm < 1e-12)
        scan.zero += page_ids[zero].tolist()
        good = finite & ~zero
        scan.off_unit += page_ids[good & (np.abs(norm - 1) > NORM_TOLERANCE)].tolist()
        norms.append(norm[good])
        good_ids, rows = page_ids[good], vectors[good] / norm[good, None]
        is_older = good_ids < split
        anywhere.observe(good_ids, rows)
        older.observe(good_ids[is_older], rows[is_older])
        newer.observe(good_ids[is_older], rows[is_older])
        sums["older"] += rows[is_older].sum(axis=0)
        sums["newer"] += rows[~is_older].sum(axis=0)
        _note_duplicates(vectors[good], np.asarray(docs, dtype=object)[good], first_doc, scan)
    all_norms = np.concatenate(norms) if norms else np.empty(0)
    scan.norm_spread = float(np.std(all_norms)) if len(all_norms) else 0.0
    if len(anywhere.ids) and scan.vectors > 1:
        scan.near_duplicate_share = round(float((anywhere.best >= NEAR_DUPLICATE_COSINE).mean()), 4)
    if len(older_ids) >= DRIFT_MIN_VECTORS and len(older.ids) and len(newer.ids):
        old_mean, new_mean = sums["older"] / len(older_ids), sums["newer"] / recent
        scan.drift = {
            "vectors_recent": recent,
            "mean_shift": round(float(np.linalg.norm(new_mean - old_mean)), 4),
            "mean_shift_limit": round(max(DRIFT_MEAN_SHIFT, 4 / np.sqrt(recent)), 4),
            "mean_direction_cosine": round(_cosine(old_mean, new_mean), 4),
            "neighbour_cosine_baseline": older.median(),
            "neighbour_cosine_recent": newer.median(),
            "norm_std_baseline": round(float(np.std(all_norms[: len(older_ids)])), 6),
            "norm_std_recent": round(float(np.std(all_norms[len(older_ids) :])), 6),
        }
    return scan


def _note_duplicates(
    rows: Matrix, docs: npt.NDArray[Any], first_doc: dict[bytes, str], scan: _Scan
) -> None:
    """Record each row identical to an earlier one of another document."""
    for row, doc in zip(rows, docs, strict=True):
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        earlier = first_doc.setdefault(digest, doc)
        if earlier != doc:
            scan.duplicates.append((earlier, doc))


def _sample(count: int, size: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """Up to ``size`` positions out of ``count``, ascending."""
    chosen: npt.NDArray[np.int64] = np.sort(
        np.random.default_rng(seed).choice(count, size=min(size, count), replace=False)
    )
    return chosen


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / scale if scale else 0.0


def _vector_findings(scan: _Scan) -> list[Finding]:
    n = scan.vectors
    reembed = "delete and ingest their documents again"
    findings = [
        _listed("vectors.non_finite", scan.non_finite, n, "fail", f"NaN or infinite: {reembed}"),
        _listed("vectors.zero", scan.zero, n, "fail", f"zero vectors match nothing: {reembed}"),
        _listed(
            "vectors.unit_norm",
            scan.off_unit,
            n,
            "warn",
            f"cosine scores of these are off: {reembed}",
            norm_std=round(scan.norm_spread, 6),
        ),
    ]
    share = len(scan.duplicates) / n if n else 0.0
    near = scan.near_duplicate_share or 0.0
    advice = ""
    if share > DUPLICATE_SHARE:
        advice = "identical vectors in different documents crowd results: dedupe them"
    elif near > NEAR_DUPLICATE_SHARE:
        advice = "many near-duplicates crowd results: consider deduplicating before ingest"
    figures = {
        "count": len(scan.duplicates),
        "share": round(share, 4),
        "examples": [list(pair) for pair in scan.duplicates[:5]],
        "near_duplicate_share": scan.near_duplicate_share,
    }
    findings.append(Finding("vectors.duplicates", "warn" if advice else "ok", figures, advice))
    findings.append(_drift_finding(scan.drift))
    return findings


def _listed(
    check: str, chunk_ids: list[int], n: int, status: Status, advice: str, **extra: Any
) -> Finding:
    figures = {"count": len(chunk_ids), "of": n, "examples": chunk_ids[:5], **extra}
    return Finding(check, status if chunk_ids else "ok", figures, advice if chunk_ids else "")


def _drift_finding(drift: dict[str, Any] | None) -> Finding:
    if drift is None:
        return Finding("drift.documents", "ok", {"note": "too few vectors to compare"})
    drop = drift["neighbour_cosine_baseline"] - drift["neighbour_cosine_recent"]
    moved = drift["mean_shift"] > drift["mean_shift_limit"] or drop > DRIFT_NEIGHBOUR_DROP
    advice = (
        "the newest documents lie away from the rest: check the source, the model, or "
        "whether they belong in another collection"
    )
    return Finding("drift.documents", "warn" if moved else "ok", drift, advice if moved else "")


# -- segments, quality and the model ---------------------------------------------------


def _segment_findings(found: list[SegmentHealth], deleted_threshold: float) -> list[Finding]:
    damaged = [health for health in found if health.damaged]
    differing = [health for health in found if health.differing]
    backlog = sum(health.deleted for health in found)
    held = sum(health.vectors for health in found)
    share = backlog / held if held else 0.0
    return [
        Finding(
            "segments.files",
            "fail" if damaged else "ok",
            {"segments": len(found), "damaged": [f"{h.segment}: {h.damaged}" for h in damaged]},
            "doctor --repair rebuilds them from the store" if damaged else "",
        ),
        Finding(
            "segments.agree_with_store",
            "fail" if differing else "ok",
            {"segments_differing": [h.segment for h in differing]},
            "doctor --repair rebuilds them from the store" if differing else "",
        ),
        Finding(
            "segments.deleted_backlog",
            "warn" if share > deleted_threshold else "ok",
            {"deleted": backlog, "held": held, "share": round(share, 4)},
            "doctor --repair (or index --optimize) compacts them"
            if share > deleted_threshold
            else "",
        ),
    ]


def _quality(col: Collection) -> Finding:
    """Recall@10 as configured, and the narrowest search breadth that reaches
    :data:`RECOMMEND_RECALL`, both measured on the same sampled vectors."""
    kind = col.config.index.kind
    knob, values = _SWEEPS.get(kind, (None, ()))
    measured = col.check_recall(
        sample=SAMPLE,
        ef_search=values if knob == "ef_search" else (),
        nprobe=values if knob == "nprobe" else (),
    )
    figures = {"kind": kind, **measured, "target": RECALL_TARGET}
    by_value = measured.get(f"by_{knob}", {})
    reaching = [value for value, recall in by_value.items() if recall >= RECOMMEND_RECALL]
    if reaching:
        figures["recommended"] = {knob: reaching[0], "recall": by_value[reaching[0]]}
    recall = measured["recall"]
    if recall is None or recall >= RECALL_TARGET:
        return Finding("quality.recall", "ok", figures)
    if reaching:
        advice = (
            f"index --rebuild '{{\"{knob}\": {reaching[0]}}}' measured recall "
            f"{by_value[reaching[0]]} here"
        )
    else:
        advice = _RECALL_ADVICE.get(kind, "rebuild the index with wider search settings")
    return Finding("quality.recall", "warn", figures, advice)


_SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "hnsw": ("ef_search", (16, 32, 64, 128, 256, 512)),
    "pgvector": ("ef_search", (16, 32, 64, 128, 256, 512)),
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128)),
    "ivfpq": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128)),
}
"""The search breadth measured per kind, and the values tried."""


def _model(col: Collection) -> Finding:
    """The embedding model this process would load against the one the collection
    recorded (name, version, dimension)."""
    config = col.config
    figures = {"embedder": config.embedder, "version": config.embedder_version, "dim": config.dim}
    if config.embedder is None:
        return Finding("model", "ok", figures | {"note": "caller-supplied vectors"})
    try:
        _ = col.embedder
    except RagstoreError as exc:
        advice = "install the recorded model version, or re-index into a new collection"
        return Finding("model", "fail", figures | {"error": str(exc)}, advice)
    return Finding("model", "ok", figures)


_RECALL_ADVICE = {
    "hnsw": "no ef_search tried reached it: rebuild with a larger m",
    "ivf": "no nprobe tried reached it: rebuild with more lists (nlist)",
    "ivfpq": "raise rerank (index --rebuild '{\"rerank\": 64}'), or pq_m for finer codes",
    "sq8": "raise rerank (index --rebuild '{\"rerank\": 64}')",
    "binary": "raise rerank (index --rebuild '{\"rerank\": 100}')",
}


def _index_kind(col: Collection, store_path: Path | None) -> Finding:
    """The index kind the capacity planner recommends for the collection's size (at the
    recall doctor recommends for, 10 queries/s), against the kind it has."""
    kind, n = col.config.index.kind, max(col.info().chunks, 1)
    if kind == "pgvector":
        return Finding("quality.index_kind", "ok", {"kind": kind, "note": "in the database"})
    calibration, source = plan.calibration_for(store_path)
    result = plan.plan(plan.Target(vectors=n, dim=col.config.dim, recall=RECOMMEND_RECALL),
                       calibration)  # fmt: skip
    weights = {k.kind: plan.weight(k) for k in result.kinds if k.viable}
    figures = {"kind": kind, "vectors": n, "recommended": result.recommended,
               "calibration": source}  # fmt: skip
    best = result.recommended
    planned = {k.kind for k in result.kinds}
    if best is None or kind == best or kind not in planned:
        return Finding("quality.index_kind", "ok", figures)
    costly = kind not in weights or weights[kind] > KIND_WEIGHT_RATIO * weights[best]
    if not costly:
        return Finding("quality.index_kind", "ok", figures)
    advice = f'index --rebuild \'{{"kind": "{best}"}}\' (ragstore plan shows the figures)'
    return Finding("quality.index_kind", "warn", figures, advice)


def _query_drift(col: Collection) -> Finding:
    """Recent queries (the query cache's entries, which hold their embeddings) against
    the earlier ones: how close the best document each finds is."""
    backend = cache_for(col.backend).backend
    try:
        entries = [e for e in backend.entries(col.id) if e.vector is not None]
    except _cache_errors(backend) as exc:
        return Finding("drift.queries", "warn", {"error": str(exc)}, _UNREADABLE)
    entries.sort(key=lambda entry: entry.created_at)
    recent = max(len(entries) // 4, 1)
    if len(entries) - recent < QUERY_DRIFT_MIN or recent < QUERY_DRIFT_MIN // 2:
        note = "too few recent queries in the query cache to compare (searches with cache on)"
        return Finding("drift.queries", "ok", {"queries": len(entries), "note": note})
    before = _best_match(col, entries[:-recent][-SAMPLE:])
    after = _best_match(col, entries[-recent:][-SAMPLE:])
    figures = {"queries": len(entries), "recent": recent,
               "best_match_cosine_before": round(before, 4),
               "best_match_cosine_recent": round(after, 4)}  # fmt: skip
    if before - after <= DRIFT_NEIGHBOUR_DROP:
        return Finding("drift.queries", "ok", figures)
    advice = ("recent queries find less close documents than earlier ones: people ask about "
              "what the collection does not hold; add documents on it")  # fmt: skip
    return Finding("drift.queries", "warn", figures, advice)


def _best_match(col: Collection, entries: Sequence[Entry]) -> float:
    """Mean cosine of each query's best document."""
    best = []
    for entry in entries:
        assert entry.vector is not None
        _, scores = col.search_vectors(np.frombuffer(entry.vector, dtype=np.float32), 1)
        if len(scores):
            best.append(float(scores[0]))
    return float(np.mean(best)) if best else 0.0


# -- the query cache ------------------------------------------------------------------

_STALE_ADVICE = "they cite documents that are gone and take room: doctor --repair removes them"


def _stale_citations(col: Collection) -> Finding:
    """The collection's cache entries citing a document it no longer holds."""
    backend = cache_for(col.backend).backend
    count, missing = 0, set[str]()
    try:
        for _, gone in _stale_entries(col, backend):
            count += 1
            missing.update(gone)
    except _cache_errors(backend) as exc:
        return Finding("cache.stale_citations", "warn", {"error": str(exc)}, _UNREADABLE)
    figures = {"count": count, "examples": sorted(missing)[:EXAMPLES]}
    if not count:
        return Finding("cache.stale_citations", "ok", figures)
    return Finding("cache.stale_citations", "warn", figures, _STALE_ADVICE)


def _stale_entries(col: Collection, backend: CacheBackend) -> Iterator[tuple[Entry, list[str]]]:
    """Each cache entry of ``col`` citing documents the store lacks, with those ids;
    entries are read and checked :data:`CACHE_BATCH` at a time."""
    for batch in _batches(backend.entries(col.id), CACHE_BATCH):
        cited = sorted({doc_id for entry in batch for doc_id in entry.cites})
        with col.backend.read() as reader:
            stored = reader.content_hashes(col.id, cited)
        for entry in batch:
            gone = [doc_id for doc_id in entry.cites if doc_id not in stored]
            if gone:
                yield entry, gone


def _cache_errors(backend: CacheBackend) -> tuple[type[Exception], ...]:
    """What a cache backend raises when it fails, or is known to be down."""
    return (*backend.errors, StoreError)


def _batches(items: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# -- the store ------------------------------------------------------------------------


def _store_findings(store: Store) -> list[Finding]:
    findings = []
    if store.path is not None:
        wal = store.path / f"{DB_FILENAME}-wal"
        size = wal.stat().st_size if wal.exists() else 0
        big = size > WAL_WARN_BYTES
        findings.append(
            Finding(
                "store.write_ahead_log",
                "warn" if big else "ok",
                {"bytes": size},
                "a reader held open for long keeps it from being checkpointed" if big else "",
            )
        )
    findings.append(_cache_finding(store))
    return findings


_UNREADABLE = "the cache backend cannot be read"


def _cache_finding(store: Store) -> Finding:
    try:
        stats = store.cache.stats().to_dict()
    except StoreError as exc:
        return Finding("cache", "warn", {"error": str(exc)}, _UNREADABLE)
    lookups = stats["exact_hits"] + stats["semantic_hits"] + stats["misses"]
    for name in ("hits", "invalidations", "evictions"):
        count = stats["exact_hits"] + stats["semantic_hits"] if name == "hits" else stats[name]
        stats[f"{name.rstrip('s')}_rate"] = round(count / lookups, 4) if lookups else None
    return Finding("cache", "ok", stats)


# -- repairs --------------------------------------------------------------------------


def _repair(col: Collection, findings: list[Finding]) -> list[str]:
    failing = {f.check: f for f in findings if f.collection == col.name and f.status != "ok"}
    return [
        f"{col.name}: {action(col, failing[check])}"
        for check, action in _REPAIRS.items()
        if check in failing
    ]


def _delete_orphans(col: Collection, _: Finding) -> str:
    with col.backend.write() as writer:
        deleted = writer.delete_orphan_chunks(col.id)
    return f"deleted {deleted} chunk(s) whose document was gone"


def _restore_terms(col: Collection, _: Finding) -> str:
    with col.backend.write() as writer:
        restored = writer.restore_terms(col.id)
    return f"restored the keyword terms of {restored} chunk(s)"


def _rebuild_damaged(col: Collection, _: Finding) -> str:
    index = col.vector_index
    if isinstance(index, SegmentedIndex):
        index.reload()
    return "rebuilt the damaged segment files from the store"


def _rebuild_differing(col: Collection, finding: Finding) -> str:
    differing = finding.figures["segments_differing"]
    index = col.vector_index
    if isinstance(index, SegmentedIndex):
        index.reload(rebuild=differing)
    return f"rebuilt segment(s) {', '.join(map(str, differing))} from the store"


def _compact(col: Collection, _: Finding) -> str:
    col.optimize()
    return "compacted the segments"


def _remove_stale_entries(col: Collection, _: Finding) -> str:
    backend = cache_for(col.backend).backend
    removed = 0
    try:
        for entry, _gone in _stale_entries(col, backend):
            backend.remove(entry)
            removed += 1
    except _cache_errors(backend) as exc:
        return f"removed {removed} cache entries citing documents that are gone, then: {exc}"
    return f"removed {removed} cache entries citing documents that are gone"


_REPAIRS: dict[str, Callable[[Collection, Finding], str]] = {
    "consistency.chunks_without_document": _delete_orphans,
    "consistency.chunks_without_terms": _restore_terms,
    "segments.files": _rebuild_damaged,
    "segments.agree_with_store": _rebuild_differing,
    "segments.deleted_backlog": _compact,
    "cache.stale_citations": _remove_stale_entries,
}
"""What ``repair`` does about each check that is not ok, in this order."""
