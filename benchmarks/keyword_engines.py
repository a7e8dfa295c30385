"""Keyword search engines compared: ragstore's BM25 postings, SQLite FTS5, bm25s, tantivy.

Every engine indexes the same BEIR corpora, read in place; a document is one unit, its
title and text. All score with Okapi BM25, k1 = 1.2 and b = 0.75, and analyse text the
same way as far as each allows:

* ``ragstore``: ragstore's keyword side. ``terms.encode_terms`` (lower case, code-like
  compounds kept whole and split, Lucene's English stop words dropped, Porter stems)
  writes each chunk's terms into a ``chunks`` row in a WAL database file with ragstore's
  pragmas; ``BM25Index`` loads its postings from those rows, and a query runs
  ``BM25Index.search`` on ``terms.query_terms``. An update deletes and inserts the row
  in one committed transaction, then catches the postings up (remove + add), as a search
  does after a write.
* ``fts5``: the engine ragstore used before, with the same analyser: the analysed text
  into an FTS5 ``(title, text)`` table (``porter unicode61 remove_diacritics 2
  tokenchars '._-'``), ranked by ``bm25()`` with column weights 1/1. Its scores are the
  ones ragstore's postings reproduce (tests/test_bm25.py).
* ``bm25s``: its English stop words (the same Lucene set) and the PyStemmer English
  (Snowball) stemmer, for documents and queries alike; numpy backend.
* ``tantivy``: the ``en_stem`` tokenizer (lower case, Snowball English stemmer, no stop
  words) and tantivy's BM25. ``tantivy_stop`` adds Lucene's English stop words, so that
  its text processing matches the others'. Queries go through tantivy's query parser;
  every character that is not a letter or digit becomes a space first (the tokenizer
  splits there anyway, and this stops ``? : ( -`` and AND/OR/NOT acting as operators or
  turning a hyphenated word into a phrase), so a query is an OR of its terms, as in the
  other engines. One indexing thread, on disk.

Measured, with the engines interleaved in each repeat (their order rotating) so that noise
on the shared machine hits all of them alike:

* quality: nDCG@10 and Recall@100 of the top 100 per query (``ragstore.eval.metrics``);
* ``build_s``: from the documents in memory to a searchable index;
* query latency: one query at a time, top 100, from query text to document ids, after an
  untimed pass over the same queries; p50/p99 per repeat, then the median over repeats;
* ``update_one_doc_ms``: replace one existing document (new text) in the built index and
  make it searchable: FTS5 deletes and inserts its rows and commits; tantivy deletes by
  id, adds, commits and reloads the searcher. bm25s cannot update an index in place, so
  its figure is a full re-index: the changed document is tokenized, and the index is
  rebuilt from the token lists of all the others, kept from the build (a lower bound of
  what a rebuild costs). Each update is checked, untimed, to be searchable. tantivy
  fsyncs every commit; ragstore's SQLite (WAL, ``synchronous = NORMAL``) does not, so
  the two SQLite engines' updates are timed a second time with ``synchronous = FULL``,
  durable alike.

bm25s is also run once with the settings of MTEB's bm25s baseline (k1 = 1.5), to check
the pipeline against the published SciFact figure, which the output quotes.

    python benchmarks/keyword_engines.py [--datasets scifact cranfield-beir] [--repeats 3]

Results go to ``benchmarks/results/keyword_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import bm25s
import numpy as np
import Stemmer
import tantivy

from ragstore import terms
from ragstore.eval.beir import BeirDataset, load_beir
from ragstore.eval.metrics import evaluate_run
from ragstore.index.bm25 import BM25Index

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "keyword_engines.json"
TOP_K = 100
REFERENCE = {
    "scifact": {
        "mteb_bm25s_ndcg@10": 0.687,
        "beir_paper_elasticsearch_bm25_ndcg@10": 0.665,
    }
}


@dataclass(frozen=True)
class Doc:
    """One corpus document."""

    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and text as one string, for engines indexing a single field."""
        return f"{self.title} {self.text}"


class Engine(Protocol):
    """A keyword index over documents numbered 0..n-1 in corpus order."""

    def build(self, docs: Sequence[Doc]) -> None: ...

    def search(self, query: str, k: int) -> list[tuple[int, float]]: ...

    def replace(self, index: int, doc: Doc) -> None: ...

    def close(self) -> None: ...


class PostingsEngine:
    """ragstore's stored terms and in-memory BM25 postings."""

    def __init__(self, folder: Path) -> None:
        self.conn = _database(folder / "terms.db")
        self.conn.execute(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "document_id INTEGER NOT NULL, terms BLOB NOT NULL)"
        )
        self.conn.execute("CREATE INDEX chunks_document ON chunks (document_id)")
        self.index = BM25Index()
        self.chunk_doc: dict[int, int] = {}

    def build(self, docs: Sequence[Doc]) -> None:
        with _transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO chunks (document_id, terms) VALUES (?, ?)",
                [(i, terms.encode_terms(doc.title, doc.text)) for i, doc in enumerate(docs)],
            )
        self._catch_up()

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        ids, scores = self.index.search(terms.query_terms(query), k)
        return [(self.chunk_doc[c], s) for c, s in zip(ids.tolist(), scores.tolist(), strict=True)]

    def replace(self, index: int, doc: Doc) -> None:
        with _transaction(self.conn):
            old = [
                r[0]
                for r in self.conn.execute("SELECT id FROM chunks WHERE document_id = ?", (index,))
            ]
            self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (index,))
            self.conn.execute(
                "INSERT INTO chunks (document_id, terms) VALUES (?, ?)",
                (index, terms.encode_terms(doc.title, doc.text)),
            )
        self.index.remove(np.array(old, dtype=np.int64))
        self._catch_up()

    def close(self) -> None:
        self.conn.close()

    def _catch_up(self) -> None:
        found = self.conn.execute(
            "SELECT id, document_id, terms FROM chunks WHERE id > ? ORDER BY id",
            (self.index.last_chunk,),
        ).fetchall()
        ids = np.array([row[0] for row in found], dtype=np.int64)
        self.chunk_doc.update((row[0], row[1]) for row in found)
        self.index.add(ids, [row[2] for row in found])


FTS_TOKENIZE = "porter unicode61 remove_diacritics 2 tokenchars '._-'"


class Fts5Engine:
    """The FTS5 table, analyser and ranking SQL ragstore used before its own postings."""

    def __init__(self, folder: Path) -> None:
        self.conn = _database(folder / "fts.db")
        self.conn.execute(
            f'CREATE VIRTUAL TABLE fts USING fts5(title, text, tokenize = "{FTS_TOKENIZE}")'
        )

    def build(self, docs: Sequence[Doc]) -> None:
        with _transaction(self.conn):
            for index, doc in enumerate(docs):
                self._insert(index, doc)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        wanted = dict.fromkeys(terms.analyze(query))
        if not wanted:
            return []
        rows = self.conn.execute(
            "SELECT rowid, -bm25(fts, 1.0, 1.0) AS score FROM fts WHERE fts MATCH ? "
            "ORDER BY score DESC, rowid LIMIT ?",
            (" OR ".join(f'"{term}"' for term in wanted), k),
        ).fetchall()
        return [(int(rowid) - 1, float(score)) for rowid, score in rows]

    def replace(self, index: int, doc: Doc) -> None:
        with _transaction(self.conn):
            self.conn.execute("DELETE FROM fts WHERE rowid = ?", (index + 1,))
            self._insert(index, doc)

    def close(self) -> None:
        self.conn.close()

    def _insert(self, index: int, doc: Doc) -> None:
        title, text = " ".join(terms.analyze(doc.title)), " ".join(terms.analyze(doc.text))
        self.conn.execute(
            "INSERT INTO fts (rowid, title, text) VALUES (?, ?, ?)", (index + 1, title, text)
        )


def _database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Bm25sEngine:
    """bm25s with its English stop words and PyStemmer's English stemmer."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.stemmer = Stemmer.Stemmer("english")
        self.tokens: list[list[str]] = []
        self.retriever: Any = None

    def build(self, docs: Sequence[Doc]) -> None:
        self.tokens = self._tokenize([doc.full_text for doc in docs])
        self._index()

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        terms = [t for t in self._tokenize([query])[0] if t in self.retriever.vocab_dict]
        if not terms:
            return []
        ids, scores = self.retriever.retrieve([terms], k=k, show_progress=False, n_threads=0)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def replace(self, index: int, doc: Doc) -> None:
        self.tokens[index] = self._tokenize([doc.full_text])[0]
        self._index()

    def close(self) -> None:
        self.retriever = None

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        tokens: list[list[str]] = bm25s.tokenize(
            texts, stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        return tokens

    def _index(self) -> None:
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(self.tokens, show_progress=False)
        self.retriever = retriever


class TantivyEngine:
    """tantivy on disk: one stemmed text field and an integer id field."""

    _NON_WORD = re.compile(r"[\W_]+")

    def __init__(self, folder: Path, stop_words: bool) -> None:
        tokenizer = "en_stem_stop" if stop_words else "en_stem"
        schema = tantivy.SchemaBuilder()
        schema.add_text_field("text", tokenizer_name=tokenizer)
        schema.add_integer_field("idx", indexed=True, fast=True)
        self.index = tantivy.Index(schema.build(), path=str(folder))
        if stop_words:
            self.index.register_tokenizer(tokenizer, _en_stem_stop())
        self.writer = self.index.writer(num_threads=1)
        self.searcher = self.index.searcher()

    def build(self, docs: Sequence[Doc]) -> None:
        for index, doc in enumerate(docs):
            self.writer.add_document(tantivy.Document(idx=index, text=doc.full_text))
        self._commit()

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        text = self._NON_WORD.sub(" ", query).lower().strip()
        if not text:
            return []
        parsed = self.index.parse_query(text, ["text"])
        hits = self.searcher.search(parsed, k, count=False).hits
        ids = self.searcher.fast_field_values("idx", [address for _, address in hits])
        if any(i is None for i in ids):
            raise RuntimeError("a tantivy hit has no idx value")
        return [(int(i), float(s)) for (s, _), i in zip(hits, ids, strict=True) if i is not None]

    def replace(self, index: int, doc: Doc) -> None:
        self.writer.delete_documents_by_term("idx", index)
        self.writer.add_document(tantivy.Document(idx=index, text=doc.full_text))
        self._commit()

    def close(self) -> None:
        self.writer.wait_merging_threads()

    def _commit(self) -> None:
        self.writer.commit()
        self.index.reload()
        self.searcher = self.index.searcher()


def _en_stem_stop() -> tantivy.TextAnalyzer:
    """tantivy's ``en_stem`` with Lucene's English stop words removed before stemming."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


CONFIGS = {
    "ragstore": "terms.encode_terms stored per chunk in SQLite (WAL, synchronous=NORMAL), "
    "BM25Index postings in memory, k1=1.2 b=0.75 as FTS5's bm25(); update = delete + insert "
    "the row in one committed transaction, then remove + add on the postings",
    "fts5": f"terms.analyze + fts5 tokenize '{FTS_TOKENIZE}', "
    "bm25() k1=1.2 b=0.75, columns (title, text) weights 1/1; "
    "update = delete + insert rows, one committed transaction (WAL, synchronous=NORMAL "
    "as ragstore; update_one_doc_synchronous_full_ms: the same with an fsync per commit)",
    "bm25s": "bm25s.BM25(k1=1.2, b=0.75, method='lucene'), stopwords='en' (Lucene set), "
    "PyStemmer english, numpy backend, title + ' ' + text; update = full re-index "
    "(no incremental update in bm25s), token lists of unchanged documents reused",
    "tantivy": "tokenizer en_stem, default BM25 (k1=1.2, b=0.75), title + ' ' + text, "
    "on disk, 1 indexing thread; update = delete_documents_by_term + add_document + "
    "commit + reload searcher",
    "tantivy_stop": "as tantivy, plus tantivy's English stop word filter (Lucene set) "
    "before stemming",
}

ENGINES: dict[str, Callable[[Path], Engine]] = {
    "ragstore": PostingsEngine,
    "fts5": Fts5Engine,
    "bm25s": lambda _folder: Bm25sEngine(),
    "tantivy": lambda folder: TantivyEngine(folder, stop_words=False),
    "tantivy_stop": lambda folder: TantivyEngine(folder, stop_words=True),
}


@dataclass
class Corpus:
    """A dataset split with its documents in memory."""

    data: BeirDataset
    docs: list[Doc]


def load_corpus(name: str) -> Corpus:
    """The test split of a BEIR dataset under the shared datasets folder."""
    data = load_beir(DATASETS / name, "test")
    with data.corpus_path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    docs = [Doc(str(r["_id"]), r.get("title") or "", r.get("text") or "") for r in records]
    return Corpus(data, docs)


def run_queries(engine: Engine, corpus: Corpus) -> dict[str, dict[str, float]]:
    """The top ``TOP_K`` of every query, as a run keyed by corpus ids."""
    run: dict[str, dict[str, float]] = {}
    for qid, query in corpus.data.queries.items():
        run[qid] = {corpus.docs[i].id: score for i, score in engine.search(query, TOP_K)}
    return run


def query_latencies_ms(engine: Engine, corpus: Corpus) -> list[float]:
    """Milliseconds of each query, one at a time."""
    latencies = []
    for query in corpus.data.queries.values():
        started = time.perf_counter()
        engine.search(query, TOP_K)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def update_latencies_ms(engine: Engine, corpus: Corpus, count: int, seed: int) -> list[float]:
    """Milliseconds to replace one document and make it searchable, ``count`` times."""
    latencies = []
    for n, index in enumerate(random.Random(seed).sample(range(len(corpus.docs)), count)):
        marker = f"zqxmark{seed}u{n}"
        old = corpus.docs[index]
        new = Doc(old.id, old.title, f"{old.text} {marker}")
        started = time.perf_counter()
        engine.replace(index, new)
        latencies.append((time.perf_counter() - started) * 1000)
        found = engine.search(marker, 1)
        if [i for i, _ in found] != [index]:
            raise RuntimeError(f"update {n} not searchable: {marker} -> {found}")
    return latencies


def measure(name: str, corpus: Corpus, updates: int, seed: int) -> dict[str, Any]:
    """Build, evaluate, time queries and updates for one engine on a fresh index."""
    with tempfile.TemporaryDirectory() as folder:
        engine = ENGINES[name](Path(folder))
        try:
            started = time.perf_counter()
            engine.build(corpus.docs)
            build_s = time.perf_counter() - started
            quality = evaluate_run(run_queries(engine, corpus), corpus.data.qrels)
            queries = query_latencies_ms(engine, corpus)
            changes = update_latencies_ms(engine, corpus, updates, seed)
            durable = durable_updates_ms(engine, corpus, updates, seed)
        finally:
            engine.close()
    p50, p99 = np.percentile(queries, [50, 99])
    sample = {"quality": quality, "build_s": build_s, "p50": p50, "p99": p99}
    return {**sample, "updates": changes, "durable_updates": durable}


def durable_updates_ms(engine: Engine, corpus: Corpus, count: int, seed: int) -> list[float]:
    """SQLite engines only: updates again with ``synchronous = FULL`` (each commit fsyncs,
    as tantivy's).

    ragstore runs with ``synchronous = NORMAL``: in WAL mode a commit survives a crash of
    the process but not of the machine, while tantivy fsyncs every commit.
    """
    if not isinstance(engine, PostingsEngine | Fts5Engine):
        return []
    engine.conn.execute("PRAGMA synchronous = FULL")
    return update_latencies_ms(engine, corpus, count, seed + 1000)


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats; updates pooled over repeats."""
    quality = samples[0]["quality"]
    if any(s["quality"] != quality for s in samples):
        raise RuntimeError("quality differs between repeats: the engine is not deterministic")
    updates = [ms for sample in samples for ms in sample["updates"]]
    return {
        "ndcg@10": round(quality["ndcg@10"], 4),
        "recall@100": round(quality["recall@100"], 4),
        "build_s": round(statistics.median(s["build_s"] for s in samples), 3),
        "query_p50_ms": round(statistics.median(s["p50"] for s in samples), 3),
        "query_p99_ms": round(statistics.median(s["p99"] for s in samples), 3),
        "update_one_doc_ms": round(statistics.median(updates), 3),
        "update_one_doc_max_ms": round(max(updates), 3),
        "updates_timed": len(updates),
        **durable_summary(samples),
    }


def durable_summary(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The median SQLite update under ``synchronous = FULL``, when it was measured."""
    durable = [ms for sample in samples for ms in sample["durable_updates"]]
    if not durable:
        return {}
    return {"update_one_doc_synchronous_full_ms": round(statistics.median(durable), 3)}


def mteb_bm25s_check(corpus: Corpus) -> dict[str, float]:
    """bm25s as MTEB's baseline runs it (k1 = 1.5, b = 0.75), scored here."""
    engine = Bm25sEngine(k1=1.5, b=0.75)
    engine.build(corpus.docs)
    quality = evaluate_run(run_queries(engine, corpus), corpus.data.qrels)
    return {"k1": 1.5, "b": 0.75, **{k: round(v, 4) for k, v in quality.items()}}


def versions() -> dict[str, str]:
    """Versions of the engines and what they run on."""
    names = ["bm25s", "PyStemmer", "tantivy", "numpy", "ragstore"]
    return {"sqlite": sqlite3.sqlite_version, **{name: version(name) for name in names}}


def machine() -> dict[str, Any]:
    """Where the benchmark ran."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """One line per dataset and engine."""
    header = f"{'dataset':<15}{'engine':<14}{'nDCG@10':>8}{'R@100':>8}{'build s':>9}"
    print(f"{header}{'p50 ms':>9}{'p99 ms':>9}{'update ms':>11}{'fsync upd':>11}")
    for dataset, engines in results.items():
        for name, r in engines["engines"].items():
            durable = r.get("update_one_doc_synchronous_full_ms")
            print(
                f"{dataset:<15}{name:<14}{r['ndcg@10']:>8.4f}{r['recall@100']:>8.4f}"
                f"{r['build_s']:>9.3f}{r['query_p50_ms']:>9.3f}{r['query_p99_ms']:>9.3f}"
                f"{r['update_one_doc_ms']:>11.3f}"
                + (f"{durable:>11.3f}" if durable is not None else f"{'-':>11}")
            )


def benchmark(names: list[str], repeats: int, updates: int) -> dict[str, dict[str, Any]]:
    """All engines on all datasets, interleaved within each repeat."""
    corpora = {name: load_corpus(name) for name in names}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {engine: [] for engine in ENGINES} for name in names
    }
    order = list(ENGINES)
    for repeat in range(repeats):
        for name, corpus in corpora.items():
            for engine in order[repeat % len(order) :] + order[: repeat % len(order)]:
                samples[name][engine].append(measure(engine, corpus, updates, repeat))
                print(f"repeat {repeat} {name} {engine} done", flush=True)
    return {
        name: {
            "documents": len(corpus.docs),
            "queries": len(corpus.data.queries),
            "engines": {engine: summarize(s) for engine, s in samples[name].items()},
            "bm25s_mteb_settings": mteb_bm25s_check(corpus),
            "published": REFERENCE.get(name, {}),
        }
        for name, corpus in corpora.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["scifact", "cranfield-beir"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20, help="timed updates per repeat")
    args = parser.parse_args()

    started = time.perf_counter()
    results = benchmark(args.datasets, args.repeats, args.updates)
    print_table(results)
    output = {
        "benchmark": "keyword_engines",
        "repeats": args.repeats,
        "updates_per_repeat": args.updates,
        "top_k": TOP_K,
        "bm25": {"k1": 1.2, "b": 0.75},
        "engine_configs": CONFIGS,
        "versions": versions(),
        "machine": machine(),
        "datasets": results,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(f"wrote {RESULTS} in {output['runtime_s']} s")


if __name__ == "__main__":
    main()
