"""The ``ragstore`` command: a thin shell over the Python API, with the same verbs.

Exit codes: 0 success, 1 a ragstore error (unknown collection or store, model
mismatch…), 2 bad usage or bad input (an invalid filter, option or record), 3 an ingest
that skipped files or records for a problem (the rest is written; ``--allow-skips``
exits 0 then).
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click
from pydantic import ValidationError

import ragstore
from ragstore.answer.service import DEFAULT_K as DEFAULT_ANSWER_K
from ragstore.answer.service import AnswerStream
from ragstore.answer.types import Answer
from ragstore.cache import QueryCache
from ragstore.config import DEFAULT_EMBEDDER, config_error
from ragstore.embed.local import MiniLMEmbedder
from ragstore.engine import plan
from ragstore.engine import snapshot as snapshots
from ragstore.engine.calibrate import MIN_SIZE, SIZES, calibrate_store
from ragstore.engine.store import DEFAULT_PAGE, MAX_PAGE, Collection, Store
from ragstore.errors import (
    InvalidConfig,
    InvalidFilter,
    InvalidInput,
    NotFound,
    QualityGate,
    RagstoreError,
)
from ragstore.filters import parse_filter
from ragstore.ingest.loaders import DEFAULT_MAX_FILE_BYTES
from ragstore.inputs import parse_json
from ragstore.search.hybrid import DEFAULT_ALPHA, DEFAULT_FUSION, RRF_K, Fusion, Mode
from ragstore.store import is_url
from ragstore.types import DocumentPage, Hit, IngestReport

SNIPPET_CHARS = 240
EXIT_SKIPPED = 3
"""``ingest`` wrote what it could but skipped files or records for a problem."""
UNSUPPORTED_SHOWN = 10
RATE_SECONDS = 30.0
"""The progress bar's rate is the average over this many seconds."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def exit_code_for(error: RagstoreError) -> int:
    """The one mapping from ragstore errors to process exit codes."""
    return 2 if isinstance(error, InvalidInput) else 1


class Context:
    """What every command needs: where the store is and which collection to use."""

    def __init__(self, store_path: str | Path, collection: str) -> None:
        self.store_path = store_path
        self.collection_name = collection
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, opened on first use; one that does not exist yet is not made."""
        return self.open_store(create=False)

    def open_store(self, *, create: bool = False) -> Store:
        """The store, opened on first use (and made there first when ``create``)."""
        if self._store is None:
            self._store = _open_store(self.store_path, create=create)
            # closing saves the query cache's counters and releases the connections
            click.get_current_context().call_on_close(self._store.close)
        return self._store

    def collection(self, *, create: bool = False) -> Collection:
        """The selected collection (created with defaults when ``create``)."""
        if create:
            return self.open_store(create=True).collection(self.collection_name)
        store = self.store
        try:
            return store.get_collection(self.collection_name)
        except NotFound as missing:
            raise NotFound(
                f"{missing} in the store at {_shown(store.location)}: `ragstore collections` "
                "lists the collections there; `ragstore ingest PATH...` makes this one"
            ) from None


def _open_store(location: str | Path, *, create: bool) -> Store:
    """The store at ``location``; a missing one is an error naming where it looked."""
    try:
        return ragstore.open(location, create=create)
    except NotFound as missing:
        raise NotFound(
            f"{missing}: `ragstore ingest PATH...` makes one there; --store (env "
            "RAGSTORE_PATH) names another"
        ) from None


def _shown(location: str) -> str:
    """A store's location as messages show it: a directory made absolute."""
    return location if is_url(location) else str(Path(location).absolute())


pass_context = click.make_pass_decorator(Context)


class StoreLocation(click.ParamType):  # type: ignore[type-arg]
    """A ``postgresql://`` URL as given, or a directory path (checked like click's)."""

    name = "directory|url"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str | Path:
        if isinstance(value, str) and is_url(value):
            return value
        directory = click.Path(path_type=Path, file_okay=False)
        converted: Path = directory.convert(value, param, ctx)
        return converted


Command = TypeVar("Command", bound=Callable[..., Any])


def _set_store(ctx: click.Context, _param: click.Parameter, value: str | Path | None) -> None:
    if value is not None:
        _context_of(ctx).store_path = value


def _set_collection(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _context_of(ctx).collection_name = value


def _context_of(ctx: click.Context) -> Context:
    found = ctx.find_object(Context)
    assert found is not None, "a command's options are parsed after the group's"
    return found


def store_option(command: Command) -> Command:
    """``--store`` after the verb too; there it overrides one given before it."""
    option = click.option(
        "--store",
        "store_after",
        type=StoreLocation(),
        expose_value=False,
        callback=_set_store,
        help="Store directory, or a postgresql:// URL (also accepted before the command).",
    )
    return option(command)


def collection_option(command: Command) -> Command:
    """``--collection`` after the verb too; there it overrides one given before it."""
    option = click.option(
        "--collection",
        "collection_after",
        expose_value=False,
        callback=_set_collection,
        help="Collection (or alias) name (also accepted before the command).",
    )
    return option(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_path",
    type=StoreLocation(),
    envvar="RAGSTORE_PATH",
    default="./ragstore-data",
    show_default=True,
    help="Store directory, or a postgresql:// URL (env RAGSTORE_PATH).",
)
@click.option(
    "--collection", default="default", show_default=True, help="Collection (or alias) name."
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar="RAGSTORE_LOG_LEVEL",
    default="warning",
    show_default=True,
    help="Least severe log messages shown on stderr (env RAGSTORE_LOG_LEVEL).",
)
@click.option(
    "-v", "--verbose", "verbosity", count=True, help="More log messages: -v info, -vv debug."
)
@click.version_option(ragstore.__version__, prog_name="ragstore")
@click.pass_context
def cli(
    ctx: click.Context, store_path: str | Path, collection: str, log_level: str, verbosity: int
) -> None:
    """ragstore: ingest documents and search them by meaning, offline."""
    level = logging.getLevelName(log_level.upper())
    if verbosity:
        level = min(level, _verbose_level(verbosity))
    _configure_logging(level)
    ctx.obj = Context(store_path, collection)


def _verbose_level(verbosity: int) -> int:
    """The level ``-v`` flags ask for: info (``-v``), debug (``-vv`` or more)."""
    return logging.INFO if verbosity == 1 else logging.DEBUG


class _LevelPrefix(logging.Formatter):
    """``warning: message``: the level in lower case, like the CLI's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def _configure_logging(level: int) -> None:
    """Show ragstore's log messages from ``level`` up on stderr, and other libraries'
    from warning (or ``level``, if higher) up."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LevelPrefix("%(message)s"))
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(max(level, logging.WARNING))
    logging.getLogger("ragstore").setLevel(level)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sync", is_flag=True, help="Delete documents whose files are gone.")
@click.option(
    "--follow-symlinks", is_flag=True, help="Follow links that lead outside the given paths."
)
@click.option(
    "--max-file-size",
    "max_file_mb",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_FILE_BYTES / 2**20,
    show_default=True,
    help="Skip (and report) files larger than this many MiB.",
)
@click.option(
    "--allow-skips",
    is_flag=True,
    help=f"Exit 0 even when files or records were skipped for a problem (else {EXIT_SKIPPED}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress on stderr (problems are still reported)."
)
@store_option
@collection_option
@pass_context
def ingest(
    obj: Context,
    paths: tuple[Path, ...],
    sync: bool,
    follow_symlinks: bool,
    max_file_mb: float,
    allow_skips: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Ingest files and folders (.txt .md .rst .html .pdf .json .jsonl .csv).

    Unchanged documents are skipped; changed ones re-embed only the chunks whose text
    changed. Hidden files, special files and links leading outside PATHS are skipped;
    files of other types are listed as skipped. A file or record skipped for a problem
    makes the exit code 3 (the rest is still written), unless --allow-skips.

    On a terminal, a bar on stderr counts the chunks embedded, with their rate and the
    time left, and names each stage that has no count (loading the model, reading a file).
    """
    shown = not (as_json or quiet) and _on_terminal()
    with _failures(), _progress(enabled=shown, label="loading the model") as bar:
        col = obj.collection(create=True)
        report = col.ingest(
            list(paths),
            sync=sync,
            progress=bar,
            follow_symlinks=follow_symlinks,
            max_file_bytes=max(1, int(max_file_mb * 2**20)),
        )
        _prepare_query_model(col, bar, quiet=quiet or as_json)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_ingest_summary(report)
    if report.errors and not allow_skips:
        sys.exit(EXIT_SKIPPED)


def _prepare_query_model(col: Collection, bar: _Bar | None = None, *, quiet: bool = False) -> None:
    """Load the collection's model and set its query encoder up, saying so when the
    encoder is not cached yet (its export takes seconds, once): the first query would
    otherwise wait for it without a word. With a ``bar``, its spinner runs meanwhile."""
    embedder = col.embedder
    if isinstance(embedder, MiniLMEmbedder) and not embedder.query_model_path.exists():
        message = "preparing the query model (once, about 10 s)..."
        if bar is not None:
            bar.note(message)
            bar.waiting("preparing the query model")
        elif not quiet:
            click.echo(message, err=True)
        _ = embedder.query_runtime


def _print_ingest_summary(report: IngestReport) -> None:
    """The counts on stdout; what was skipped or warned about on stderr."""
    summary = report.to_dict()
    problems, warned, unsupported = (
        summary.pop(key) for key in ("errors", "warnings", "files_unsupported")
    )
    click.echo(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in summary.items()))
    if unsupported:
        shown = ", ".join(unsupported[:UNSUPPORTED_SHOWN])
        more = len(unsupported) - UNSUPPORTED_SHOWN
        rest = f" and {more} more (--json lists them)" if more > 0 else ""
        click.echo(
            f"skipped {len(unsupported)} file(s) of unsupported type: {shown}{rest}", err=True
        )
    if warned:
        click.echo(
            f"{len(warned)} warning(s) from reading files (-v or --json shows them)", err=True
        )
    if problems:
        click.echo(
            f"{len(problems)} problem(s): files or records skipped (--json lists them)", err=True
        )


@cli.command()
@click.argument("text")
@click.option("-k", "k", default=10, show_default=True, type=int, help="Number of hits.")
@click.option("--filter", "filter_json", help='Metadata filter as JSON, e.g. \'{"lang": "en"}\'.')
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "dense", "keyword"]),
    default="hybrid",
    show_default=True,
    help="Fused BM25 + vectors, vectors only, or BM25 only.",
)
@click.option("--group-by-doc", is_flag=True, help="At most one hit per document.")
@click.option("--no-cache", is_flag=True, help="Search without the query cache.")
@click.option("--ef-search", type=int, help="HNSW search breadth for this query.")
@click.option("--nprobe", type=int, help="IVF lists probed for this query.")
@click.option(
    "--min-score",
    type=float,
    help="Drop hits scoring below this (fewer than k may come back); see docs/search.md.",
)
@click.option("--explain", is_flag=True, help="Also print how the search ran.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@store_option
@collection_option
@pass_context
def query(
    obj: Context,
    text: str,
    k: int,
    filter_json: str | None,
    mode: str,
    group_by_doc: bool,
    no_cache: bool,
    ef_search: int | None,
    nprobe: int | None,
    min_score: float | None,
    explain: bool,
    as_json: bool,
) -> None:
    """Search the collection for the chunks that best match TEXT."""
    with _failures():
        where = _parse_filter_option(filter_json)
        col = obj.collection()
        if mode != "keyword":  # a keyword search never needs the model
            shown = not as_json and _on_terminal()
            with _progress(enabled=shown, label="loading the model") as bar:
                _prepare_query_model(col, bar)  # before the clock starts: took_ms is the search
        started = time.perf_counter()
        hits = col.search(
            text,
            k=k,
            where=where,
            mode=cast(Mode, mode),
            group_by_doc=group_by_doc,
            cache=not no_cache,
            ef_search=ef_search,
            nprobe=nprobe,
            min_score=min_score,
            explain=explain,
        )
        took_ms = round((time.perf_counter() - started) * 1000, 2)
    if as_json:
        body: dict[str, Any] = {"hits": [hit.to_dict() for hit in hits], "took_ms": took_ms}
        _print_json(body | ({"plan": hits.plan} if explain else {}))
        return
    if explain:
        click.echo(json.dumps(hits.plan, indent=2), err=True)
    for rank, hit in enumerate(hits, start=1):
        click.echo(
            f"{rank:>3}. {hit.score:.4f}  {hit.chunk_id}  ({hit.source or hit.doc_id}){_ranks(hit)}"
        )
        click.echo(f"     {_snippet(hit.text)}")
    cached = f" (cached: {hits[0].cached})" if hits and hits[0].cached else ""
    click.echo(f"{len(hits)} hit(s) in {took_ms} ms{cached}", err=True)


@cli.command()
@click.argument("question")
@click.option(
    "-k", "k", default=DEFAULT_ANSWER_K, show_default=True, type=int,
    help="Passages to answer from.",
)  # fmt: skip
@click.option("--filter", "filter_json", help='Metadata filter as JSON, e.g. \'{"lang": "en"}\'.')
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "dense", "keyword"]),
    default="hybrid",
    show_default=True,
    help="How the passages are searched for.",
)
@click.option(
    "--extractive", is_flag=True, help="Answer with the passages' sentences even when a "
    "language model is configured.",
)  # fmt: skip
@click.option("--no-cache", is_flag=True, help="Answer without the answer cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@store_option
@collection_option
@pass_context
def ask(
    obj: Context,
    question: str,
    k: int,
    filter_json: str | None,
    mode: str,
    extractive: bool,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Answer QUESTION from the collection, citing the passages it rests on.

    With RAGSTORE_LLM_URL and RAGSTORE_LLM_MODEL set, a language model writes the answer
    (docs/answers.md); without them the answer is extractive: the sentences of the best
    passages that answer the question best. A model that fails gives the extractive
    answer, with a note on stderr.
    """
    with _failures():
        where = _parse_filter_option(filter_json)
        col = obj.collection()
        with _progress(enabled=not as_json and _on_terminal(), label="loading the model") as bar:
            _prepare_query_model(col, bar, quiet=as_json)
        options: dict[str, Any] = {"k": k, "where": where, "mode": cast(Mode, mode),
                                   "cache": not no_cache, "extractive": extractive}  # fmt: skip
        if as_json:
            _print_json(col.answer(question, **options).to_dict())
            return
        written = col.answer(question, stream=True, **options)
        streamed = "".join(_echo_deltas(written))
        result = written.answer
    assert result is not None
    if result.degraded and streamed:  # failed midway: what came is not the answer
        click.echo("\n")
        click.echo(result.text)
    elif not streamed:
        click.echo("(no passage in the collection answers this)")
    else:
        click.echo()
    _print_answer_footer(result)


def _echo_deltas(written: AnswerStream) -> Iterator[str]:
    for delta in written:
        click.echo(delta, nl=False)
        yield delta


def _print_answer_footer(result: Answer) -> None:
    """The citations on stdout; how the answer was made on stderr."""
    for cited in result.citations:
        name = cited.source or cited.doc_id
        if cited.title and not name.endswith(cited.title):  # not just the file's name
            name = f"{cited.title} ({name})"
        click.echo(f"[{cited.marker}] {name}, {cited.chunk_id}, chars {cited.start}-{cited.end}")
    if result.degraded:
        click.echo(f"note: the language model failed ({result.reason}): extractive", err=True)
    how = result.model if result.mode == "generated" else "extractive"
    cached = f" (cached: {result.cached})" if result.cached else ""
    took = round(sum(result.timings_ms.values()), 2)
    click.echo(f"{how} answer from {len(result.hits)} passage(s) in {took} ms{cached}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_option
@pass_context
def collections(obj: Context, as_json: bool) -> None:
    """List collections with their config and counts."""
    with _failures():
        infos = obj.store.list_collections()
    if as_json:
        _print_json([info.to_dict() for info in infos])
        return
    for info in infos:
        config = info.config
        click.echo(
            f"{info.name}: {info.documents} documents, {info.chunks} chunks; "
            f"embedder {config.embedder or '(vectors supplied)'} dim {config.dim}, "
            f"chunks {config.chunking.chunk_size}/{config.chunking.chunk_overlap} tokens, "
            f"index {config.index.kind}{_payload_indexes_shown(config.payload_indexes)}"
        )


def _payload_indexes_shown(paths: tuple[str, ...]) -> str:
    return f", payload indexes {', '.join(paths)}" if paths else ""


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--filter", "filter_json", help="Only documents matching this filter.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_PAGE), default=DEFAULT_PAGE, show_default=True,
    help="Without IDS: documents per page.",
)  # fmt: skip
@click.option("--cursor", help="Without IDS: resume the listing where this cursor says.")
@store_option
@collection_option
@pass_context
def get(
    obj: Context, ids: tuple[str, ...], filter_json: str | None, limit: int, cursor: str | None
) -> None:
    """Print stored documents as JSON lines: those named by IDS, or without IDS a page
    of them in id order (the cursor of the next page goes to stderr)."""
    with _failures():
        where = _parse_filter_option(filter_json)
        col = obj.collection()
        if ids:
            documents = col.get(list(ids), where=where)
        else:
            documents = col.get(where=where, limit=limit, cursor=cursor)
    _print_documents(documents)
    if documents.next_cursor is not None:
        click.echo(f"next page: --cursor {documents.next_cursor}", err=True)
    missing = set(ids) - {d.id for d in documents}
    if missing and where is None:
        click.echo(f"not found: {', '.join(sorted(missing))}", err=True)
        sys.exit(1)


@cli.command()
@click.option("-n", "count", type=click.IntRange(1, MAX_PAGE), default=10, show_default=True)
@store_option
@collection_option
@pass_context
def peek(obj: Context, count: int) -> None:
    """Print the first documents in id order, as JSON lines."""
    with _failures():
        documents = obj.collection().peek(count)
    _print_documents(documents)


def _print_documents(documents: DocumentPage) -> None:
    for document in documents:
        click.echo(json.dumps(document.to_dict(), ensure_ascii=False))


@cli.command()
@click.argument("name")
@click.option(
    "--embedder",
    help="Embedding model: a registered name, sentence-transformers:FOLDER, openai:MODEL or "
    f"ollama:MODEL (default {DEFAULT_EMBEDDER}; see docs/embedders.md).",
)
@click.option(
    "--dim", type=click.IntRange(1, 65536),
    help="Take caller-supplied vectors of this dimension instead of embedding text.",
)  # fmt: skip
@click.option("--chunk-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=32, show_default=True)
@click.option("--index", "index_json", help='Index settings as JSON, e.g. \'{"kind": "hnsw"}\'.')
@store_option
@pass_context
def create(
    obj: Context,
    name: str,
    embedder: str | None,
    dim: int | None,
    chunk_size: int,
    chunk_overlap: int,
    index_json: str | None,
) -> None:
    """Create collection NAME with its embedder, chunking and index settings."""
    if embedder is not None and dim is not None:
        raise click.UsageError("give --embedder (text) or --dim (your own vectors), not both")
    with _failures():
        index = _parse_json_option(index_json, "--index")
        created = obj.open_store(create=True).create_collection(
            name,
            embedder=None if dim is not None else (embedder or DEFAULT_EMBEDDER),
            dim=dim,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            index=index,
        )
    click.echo(json.dumps(created.info().to_dict(), ensure_ascii=False))


@cli.command()
@click.option("--filter", "filter_json", help="Count only documents matching this filter.")
@store_option
@collection_option
@pass_context
def count(obj: Context, filter_json: str | None) -> None:
    """Print the number of documents."""
    with _failures():
        click.echo(obj.collection().count(where=_parse_filter_option(filter_json)))


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--filter", "filter_json", help="Delete every document matching this filter.")
@click.option("--all", "delete_all", is_flag=True, help="Delete every document.")
@click.option("--yes", is_flag=True, help="Delete by --filter or --all without asking.")
@store_option
@collection_option
@pass_context
def delete(
    obj: Context, ids: tuple[str, ...], filter_json: str | None, delete_all: bool, yes: bool
) -> None:
    """Delete documents by id, by --filter, or every one with --all.

    Deleting by --filter or --all says how many documents it would delete and asks
    first; --yes skips the question, and is required when stdin is not a terminal.
    """
    _check_delete_selection(ids, filter_json, delete_all)
    with _failures():
        where = _parse_filter_option(filter_json)
        if where is not None and parse_filter(where) is None:
            raise InvalidFilter(
                "--filter matches every document: delete them all with --all", field="filter"
            )
        col = obj.collection()
        if not ids and not yes:
            _confirm_bulk_delete(obj, col.count(where=where), filter_json)
        deleted = col.delete(list(ids)) if ids else col.delete(where=where, all=delete_all)
    click.echo(f"deleted {deleted} document(s)")


def _check_delete_selection(ids: tuple[str, ...], filter_json: str | None, every: bool) -> None:
    """A usage error unless exactly one of ids, ``--filter`` and ``--all`` is given."""
    given = sum((bool(ids), filter_json is not None, every))
    if given == 0:
        raise click.UsageError("nothing to delete: give document IDS, --filter JSON or --all")
    if given > 1:
        raise click.UsageError("give only one of document IDS, --filter JSON and --all")


def _confirm_bulk_delete(obj: Context, doomed: int, filter_json: str | None) -> None:
    """Ask before deleting ``doomed`` documents by filter or all; refuse without a
    terminal to ask on (``--yes`` is the way to delete from a script)."""
    if doomed == 0:
        return
    what = f"matching {filter_json}" if filter_json is not None else "(all of them)"
    plan = (
        f"{doomed} document(s) {what} from collection {obj.collection_name!r} in the store "
        f"at {_shown(obj.store.location)}"
    )
    if not sys.stdin.isatty():
        raise click.UsageError(f"would delete {plan}: add --yes to do so without a terminal")
    if not click.confirm(f"Delete {plan}?", default=False, err=True):
        click.echo("nothing deleted", err=True)
        sys.exit(1)


@cli.command(name="doctor")
@click.option(
    "--collection",
    "only",
    multiple=True,
    help="Examine just this collection (repeatable); every one without it.",
)
@click.option("--repair", is_flag=True, help="First fix what is safe to fix, and say what.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@store_option
@pass_context
def doctor(obj: Context, only: tuple[str, ...], repair: bool, as_json: bool) -> None:
    """Check vectors, consistency, index segments, recall, drift, the model and the cache.

    Each check says ok, warn or fail, with its figures and what to do. Exit code 0 when
    all is ok, 1 with warnings, 2 with failures.
    """
    with _failures():
        diagnosis = obj.store.doctor(collections=list(only) or None, repair=repair)
    if as_json:
        _print_json(diagnosis.to_dict())
    else:
        for done in diagnosis.repairs:
            click.echo(f"repaired  {done}")
        for finding in diagnosis.findings:
            where = f"{finding.collection}: " if finding.collection else ""
            figures = " ".join(f"{key}={value}" for key, value in finding.figures.items())
            advice = f"  -> {finding.advice}" if finding.advice else ""
            click.echo(f"{finding.status:<4}  {where}{finding.check}  {figures}{advice}")
    sys.exit(diagnosis.exit_code)


@cli.command(name="plan")
@click.option("--vectors", type=click.IntRange(min=1), help="Vectors (chunks) to plan for.")
@click.option("--dim", type=click.IntRange(1, 65_536), default=384, show_default=True)
@click.option("--qps", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Queries per second to serve.")  # fmt: skip
@click.option("--recall", type=click.FloatRange(0, 1, min_open=True), default=0.95,
              show_default=True, help="Recall@10 the index must reach.")  # fmt: skip
@click.option("--filter-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of queries that carry a metadata filter.")  # fmt: skip
@click.option("--selectivity", type=click.FloatRange(0, 1, min_open=True), default=0.01,
              show_default=True, help="Share of the vectors a filter lets through.")  # fmt: skip
@click.option("--metadata-bytes", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--growth", type=click.FloatRange(min=1), default=1.0, show_default=True,
              help="Plan for the vectors times this.")  # fmt: skip
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="JSON list of machine types: name, vcpus, ram_gib, price_per_hour.")  # fmt: skip
@click.option("--calibration", "calibration_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Calibration file to read (or, with --calibrate, to write).")  # fmt: skip
@click.option("--calibrate", is_flag=True, help="Measure this machine first, and keep the figures.")
@click.option("--sizes", default=",".join(str(n) for n in SIZES), show_default=True,
              help="With --calibrate: the vector counts measured, comma-separated.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@store_option
@collection_option
@pass_context
def plan_command(
    obj: Context,
    vectors: int | None,
    calibration_file: Path | None,
    calibrate: bool,
    sizes: str,
    prices: Path | None,
    as_json: bool,
    dim: int,
    qps: float,
    recall: float,
    filter_share: float,
    selectivity: float,
    metadata_bytes: int,
    growth: float,
) -> None:
    """RAM, disk, cores and index kind for a collection of --vectors, with the arithmetic.

    Its costs come from a calibration: --calibration FILE, else the store's own (made by
    `ragstore plan --calibrate`, which measures this machine on vectors shaped like the
    store's largest collection), else the one ragstore ships.
    """
    if vectors is None and not calibrate:
        raise click.UsageError("give --vectors N (or --calibrate)")
    with _failures():
        if calibrate:
            steps = _sizes_option(sizes)
            calibration_file = _calibrate_store(obj, calibration_file, steps, quiet=as_json)
        calibration, source = _calibration(obj, calibration_file)
        if vectors is None:
            return
        machines = plan.load_machines(prices) if prices else []
        target = plan.Target(vectors, dim, qps, recall, filter_share, selectivity,
                             metadata_bytes, growth)  # fmt: skip
        result = plan.plan(target, calibration, machines)
    if as_json:
        _print_json(result.to_dict() | {"calibration_file": source})
        return
    _print_plan(result, source)


def _sizes_option(raw: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput(f"--sizes: not whole numbers: {raw!r}", field="sizes") from None
    if len(sizes) < 2 or sizes[0] < MIN_SIZE:
        raise InvalidInput(f"--sizes: give two sizes or more, each {MIN_SIZE:,} or more",
                           field="sizes")  # fmt: skip
    return sizes


def _calibrate_store(obj: Context, into: Path | None, sizes: list[int], *, quiet: bool) -> Path:
    store = obj.store
    if into is None:
        if store.path is None:
            raise InvalidInput("a PostgreSQL store keeps no files: give --calibration FILE",
                               field="calibration")  # fmt: skip
        into = store.path / plan.CALIBRATION_FILE
    names = {info.name for info in store.list_collections()}
    collection = obj.collection_name if obj.collection_name in names else None
    say = (lambda _: None) if quiet else (lambda line: click.echo(f"measuring {line}", err=True))
    measured = calibrate_store(store, collection, sizes=sizes, progress=say)
    into.write_text(json.dumps(measured, indent=1) + "\n")
    if not quiet:
        click.echo(f"calibration written to {into}", err=True)
    return into


def _calibration(obj: Context, given: Path | None) -> tuple[dict[str, Any], str]:
    """The calibration to plan with, and where it came from."""
    if given is not None:
        return plan.load_calibration(given), str(given)
    return plan.calibration_for(None if is_url(obj.store_path) else Path(obj.store_path))


def _print_plan(result: plan.Plan, source: str) -> None:
    about = result.calibration
    machine = about.get("machine") or {}
    click.echo(f"calibration: {source} ({machine.get('cpu')}, {machine.get('cores')} cores, "
               f"{about.get('measured_at')})")  # fmt: skip
    t = result.target
    click.echo(f"target: {t.planned:,} vectors of {t.dim} dimensions, {t.qps:g} queries/s, "
               f"recall@10 {t.recall}")  # fmt: skip
    for kind in result.kinds:
        mark = "*" if kind.kind == result.recommended else " "
        if not kind.viable:
            click.echo(f"{mark} {kind.kind:<7} not viable: {kind.reason}")
            continue
        setting = " ".join(f"{k}={v}" for k, v in kind.setting.items())
        fleet = kind.machine
        where = f"  {fleet['nodes']} x {fleet['name']} ${fleet['cost_per_hour']}/h" if fleet else ""
        line = (
            f"{mark} {kind.kind:<7} RAM {_gib(kind.ram_bytes)}  disk {_gib(kind.disk_bytes)}  "
            f"cores {kind.cores}  {kind.qps_per_core:,} q/s/core  build {kind.build_s:,} s  "
            f"{setting}{where}"
        )
        click.echo(line.rstrip())
    recommended = next((k for k in result.kinds if k.kind == result.recommended), None)
    if recommended is None:
        click.echo("no kind reaches the target on the calibrated figures")
    else:
        click.echo(f"\nrecommended: {recommended.kind}")
        for line in recommended.arithmetic:
            click.echo(f"  {line}")
    for note in result.notes:
        click.echo(f"note: {note}")


def _gib(value: int | None) -> str:
    return f"{(value or 0) / (1 << 30):,.2f} GiB"


@cli.command(name="index")
@click.option("--optimize", is_flag=True, help="Seal the growing segment and merge now.")
@click.option(
    "--rebuild",
    "rebuild_json",
    help='Switch index settings and rebuild, e.g. \'{"kind": "hnsw", "m": 32}\'.',
)
@click.option(
    "--check-recall",
    "sample",
    type=int,
    help="Measure recall@10 against exact search on this many stored vectors.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_option
@collection_option
@pass_context
def index_command(
    obj: Context, optimize: bool, rebuild_json: str | None, sample: int | None, as_json: bool
) -> None:
    """Show the collection's index segments; optionally optimize, rebuild or check recall."""
    with _failures():
        settings = _parse_json_option(rebuild_json, "--rebuild")
        col = obj.collection()
        if settings is not None:
            col.rebuild_index(settings)
        elif optimize:
            col.optimize()
        report: dict[str, Any] = col.index_stats()
        if sample is not None:
            report["recall_check"] = col.check_recall(sample)
    if as_json:
        _print_json(report)
        return
    click.echo(
        f"kind {report['kind']}: {report['vectors']} vectors, "
        f"{report['bytes_per_vector']} bytes/vector"
    )
    for segment in report["segments"]:
        click.echo(
            f"  segment {segment['segment']}: {segment['kind']}, {segment['vectors']} vectors "
            f"({segment['deleted']} deleted), {segment['index_bytes']} bytes, "
            f"{segment['bytes_per_vector']} bytes/vector"
        )
    if sample is not None:
        check = report["recall_check"]
        click.echo(f"recall@{check['k']} {check['recall']:.4f} over {check['queries']} queries")


@cli.command(name="eval")
@click.argument("dataset_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--mode",
    type=click.Choice(["dense", "keyword", "hybrid", "all"]),
    default="all",
    show_default=True,
)
@click.option("--split", default="test", show_default=True, help="Which qrels split to score.")
@click.option(
    "--fusion",
    type=click.Choice(["weighted", "rrf"]),
    default=DEFAULT_FUSION,
    show_default=True,
    help="How hybrid fuses the two sides.",
)
@click.option("--rrf-k", default=RRF_K, show_default=True, type=int, help="RRF rank constant.")
@click.option(
    "--alpha", default=DEFAULT_ALPHA, show_default=True, type=float, help="Dense-side weight."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@store_option
@pass_context
def eval_command(
    obj: Context,
    dataset_dir: Path,
    mode: str,
    split: str,
    fusion: str,
    rrf_k: int,
    alpha: float,
    as_json: bool,
) -> None:
    """Score search modes on a BEIR-format dataset (nDCG@10, Recall@100, MRR@10, latency).

    The corpus is ingested into the collection eval-<folder name>, which later runs reuse.
    """
    from ragstore.eval import evaluate

    modes = ["dense", "keyword", "hybrid"] if mode == "all" else [mode]
    with _failures():
        report = evaluate(
            obj.open_store(create=True),
            dataset_dir,
            modes=modes,
            split=split,
            fusion=cast(Fusion, fusion),
            rrf_k=rrf_k,
            alpha=alpha,
        )
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(
        f"{report.dataset} ({report.split}): {report.documents} documents, {report.chunks} chunks"
    )
    click.echo(f"{'mode':<8} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for r in report.results:
        click.echo(
            f"{r.mode:<8} {r.ndcg_at_10:>8.4f} {r.recall_at_100:>7.4f} {r.mrr_at_10:>7.4f} "
            f"{r.latency_p50_ms:>8.2f} {r.latency_p99_ms:>8.2f}"
        )


@cli.group(name="alias")
def alias_group() -> None:
    """Names that stand for a collection: point one at a new collection and every
    command, search and server request that names it follows."""


@alias_group.command(name="set")
@click.argument("alias")
@click.argument("collection")
@store_option
@pass_context
def alias_set(obj: Context, alias: str, collection: str) -> None:
    """Point ALIAS at COLLECTION (creating the alias, or switching it)."""
    with _failures():
        found = obj.store.set_alias(alias, collection)
    click.echo(_alias_line(found.to_dict()))


@alias_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_option
@pass_context
def alias_list(obj: Context, as_json: bool) -> None:
    """List aliases with the collection each names (and the one before)."""
    with _failures():
        found = [alias.to_dict() for alias in obj.store.list_aliases()]
    if as_json:
        _print_json(found)
        return
    for alias in found:
        click.echo(_alias_line(alias))


@alias_group.command(name="delete")
@click.argument("alias")
@store_option
@pass_context
def alias_delete(obj: Context, alias: str) -> None:
    """Delete ALIAS (the collection it names stays)."""
    with _failures():
        obj.store.delete_alias(alias)
    click.echo(f"deleted alias {alias}")


@alias_group.command(name="rollback")
@click.argument("alias")
@store_option
@pass_context
def alias_rollback(obj: Context, alias: str) -> None:
    """Point ALIAS back at the collection it named before its last switch."""
    with _failures():
        found = obj.store.rollback_alias(alias)
    click.echo(_alias_line(found.to_dict()))


def _alias_line(alias: dict[str, str | None]) -> str:
    previous = f" (previously {alias['previous']})" if alias["previous"] else ""
    return f"{alias['name']} -> {alias['collection']}{previous}"


@cli.group(name="payload-index")
def payload_index_group() -> None:
    """Metadata fields indexed for filters: one made here is built at once and always
    kept; the others are built when a filter first uses them."""


@payload_index_group.command(name="create")
@click.argument("path")
@store_option
@collection_option
@pass_context
def payload_index_create(obj: Context, path: str) -> None:
    """Index the metadata field PATH (a filter field name, e.g. author.name) now and keep it."""
    with _failures():
        obj.collection().create_payload_index(path)
    click.echo(f"payload index on {path}")


@payload_index_group.command(name="drop")
@click.argument("path")
@store_option
@collection_option
@pass_context
def payload_index_drop(obj: Context, path: str) -> None:
    """Stop indexing PATH explicitly (exit 2 when no index was made on it)."""
    with _failures():
        obj.collection().drop_payload_index(path)
    click.echo(f"dropped payload index on {path}")


@payload_index_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_option
@collection_option
@pass_context
def payload_index_list(obj: Context, as_json: bool) -> None:
    """List the indexed metadata fields: made here (pinned) or built for filters."""
    with _failures():
        found = obj.collection().payload_indexes()
    if as_json:
        _print_json(found)
        return
    for entry in found:
        click.echo(_payload_index_line(entry))


def _payload_index_line(entry: dict[str, Any]) -> str:
    kind = "pinned" if entry["pinned"] else "automatic"
    if entry["served_by"] == "sql":
        return f"{entry['path']}: {kind}, filtered in SQL"
    if entry["values"] is None:
        return f"{entry['path']}: {kind}, not built yet"
    varied = ", too varied: the store filters it" if entry["too_varied"] else ""
    return f"{entry['path']}: {kind}, {entry['values']} values, {entry['bytes']} bytes{varied}"


@cli.group(name="cache")
@click.option(
    "--redis",
    "redis_url",
    envvar="RAGSTORE_CACHE_REDIS",
    help="Act on the Redis cache at this URL (env RAGSTORE_CACHE_REDIS), not the store's own.",
)
@click.pass_context
def cache_group(ctx: click.Context, redis_url: str | None) -> None:
    """Inspect or empty the query cache."""
    ctx.meta["cache_redis"] = redis_url


@cache_group.command(name="stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@store_option
@pass_context
def cache_stats(obj: Context, as_json: bool) -> None:
    """Hits, misses, evictions, invalidations, expirations, size and hit latency."""
    with _failures():
        stats = _query_cache(obj).stats().to_dict()
    if as_json:
        _print_json(stats)
        return
    for name, value in stats.items():
        click.echo(f"{name.replace('_', ' ')}: {value}")


@cache_group.command(name="clear")
@store_option
@pass_context
def cache_clear(obj: Context) -> None:
    """Drop every cached answer."""
    with _failures():
        dropped = _query_cache(obj).clear()
    click.echo(f"cleared {dropped} cached answer(s)")


@cli.group(name="snapshot")
def snapshot_group() -> None:
    """Take, verify and restore online snapshots of an embedded store."""


@snapshot_group.command(name="create")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--collection", "collections", multiple=True, help="Only this collection (repeatable)."
)
@click.option("--keep", type=click.IntRange(min=1), help="Then keep only the newest N there.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot's summary as JSON.")
@store_option
@pass_context
def snapshot_create(
    obj: Context, folder: Path, collections: tuple[str, ...], keep: int | None, as_json: bool
) -> None:
    """Snapshot the store into a new directory in FOLDER while it keeps serving."""
    with _failures():
        taken = obj.store.snapshot(folder, collections=list(collections) or None, keep=keep)
    if as_json:
        _print_json(taken.to_dict())
        return
    click.echo(f"{taken.path}  {len(taken.files)} files, {taken.bytes} bytes, {taken.seconds} s")


@snapshot_group.command(name="verify")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
def snapshot_verify(path: Path) -> None:
    """Re-hash every file of snapshot PATH and check its database; exit 1 naming the
    first bad file."""
    with _failures():
        checked = snapshots.verify(path)
    counts = ", ".join(f"{c['name']} ({c['documents']} documents)" for c in checked.collections)
    click.echo(
        f"ok: {len(checked.files)} files, {checked.bytes} bytes; {counts or 'no collections'}"
    )


@snapshot_group.command(name="restore")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("--to", "to", type=click.Path(path_type=Path), help="Restore the whole store here.")
@click.option("--force", is_flag=True, help="Replace a non-empty --to directory.")
@click.option("--collection", "only", help="Copy just this collection into --store …")
@click.option("--as", "new_name", help="… as a new collection with this name.")
@store_option
@pass_context
def snapshot_restore(
    obj: Context,
    path: Path,
    to: Path | None,
    force: bool,
    only: str | None,
    new_name: str | None,
) -> None:
    """Restore snapshot PATH: the whole store into a new directory (--to), or one
    collection into the store under a new name (--collection C --as NAME)."""
    with _failures():
        if (to is None) == (only is None) or (only is None) != (new_name is None):
            raise InvalidInput("give --to DIR, or --collection C with --as NAME", field="to")
        if to is not None:
            snapshots.restore(path, to, force=force)
            click.echo(f"restored {path} to {to}")
            return
        assert only is not None and new_name is not None
        restored = obj.open_store(create=True).restore_collection(path, only, name=new_name)
        click.echo(f"restored collection {only!r} as {new_name!r}: {restored.count()} documents")


@cli.command()
@click.argument("source")
@click.option("--to", "target", required=True, help="The new collection to build.")
@click.option("--embedder", help="Embed with this model instead (text collections).")
@click.option("--chunk-size", type=click.IntRange(min=1), help="New chunk size in tokens.")
@click.option("--chunk-overlap", type=click.IntRange(min=0), help="New chunk overlap.")
@click.option("--index", "index_json", help='New index settings as JSON, e.g. \'{"kind": "ivf"}\'.')
@click.option("--switch", "alias", help="Then point this alias at the new collection.")
@click.option("--drop-old", is_flag=True, help="After --switch, delete SOURCE.")
@click.option(
    "--min-ndcg",
    "min_ndcg",
    metavar="DATASET_DIR:SCORE",
    help="Switch only if the new collection scores at least SCORE (hybrid nDCG@10) on "
    "this BEIR-format dataset, whose documents it holds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@store_option
@pass_context
def reindex(
    obj: Context,
    source: str,
    target: str,
    embedder: str | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    index_json: str | None,
    alias: str | None,
    drop_old: bool,
    min_ndcg: str | None,
    as_json: bool,
) -> None:
    """Build collection --to from SOURCE (a collection or an alias) while SOURCE keeps
    serving and taking writes; with --switch, then move an alias to it in one step
    (`ragstore alias rollback` moves it back)."""
    with _failures():
        if drop_old and alias is None:
            raise InvalidInput("--drop-old needs --switch", field="drop-old")
        index = _parse_json_option(index_json, "--index")
        gate = None if min_ndcg is None else _ndcg_gate(min_ndcg)
        with _progress(
            enabled=not as_json and _on_terminal(), label="re-indexing", unit="documents"
        ) as bar:
            report = obj.store.reindex(
                source, target, embedder=embedder, chunk_size=chunk_size,
                chunk_overlap=chunk_overlap, index=index, switch=alias, drop_old=drop_old,
                progress=bar, gate=gate,
            )  # fmt: skip
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(
        f"{report.target}: {report.documents} documents from {report.source} in "
        f"{report.seconds} s ({report.replayed} replayed over {report.rounds} rounds, "
        f"{report.chunks_embedded} chunks embedded, {report.chunks_reused} reused)"
    )
    if report.switched:
        click.echo(f"alias {report.switched!r} now names {report.target!r}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="RAGSTORE_KEYS_FILE",
    help="API key file (env RAGSTORE_KEYS_FILE; or the keys as JSON in env RAGSTORE_KEYS).",
)
@click.option("--limits", "limits_json", help="Limits as JSON, e.g. '{\"max_batch\": 500}'.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="RAGSTORE_WORKERS",
    help="Worker processes (env RAGSTORE_WORKERS); each holds its own copy of the indexes.",
)
@click.option(
    "--snapshot-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="RAGSTORE_SNAPSHOT_DIR",
    help="Folder for snapshots taken over HTTP (env RAGSTORE_SNAPSHOT_DIR); off without it.",
)
@store_option
@pass_context
def serve(
    obj: Context,
    host: str,
    port: int,
    keys_file: Path | None,
    limits_json: str | None,
    workers: int,
    snapshot_dir: Path | None,
) -> None:
    """Serve the store over HTTP (routes under /v1, /healthz, /readyz, /metrics).

    Without API keys it listens only on a loopback address. One worker process per
    core makes the most of a machine's CPUs.
    """
    import os

    from ragstore.server import Limits, ServerSettings
    from ragstore.server import serve as run_server

    with _failures():
        try:
            limits = Limits.model_validate(_parse_json_option(limits_json, "--limits") or {})
        except ValidationError as exc:
            raise config_error(exc, "--limits") from None
        settings = ServerSettings(
            store_path=obj.store_path,
            host=host,
            port=port,
            keys_file=keys_file,
            keys_json=os.environ.get("RAGSTORE_KEYS"),
            limits=limits,
            workers=workers,
            snapshot_dir=snapshot_dir,
        )
        run_server(settings)


def _ndcg_gate(spec: str) -> Callable[[Collection], None]:
    """``DATASET_DIR:SCORE`` -> a check that a collection scores at least SCORE."""
    folder, _, bar = spec.rpartition(":")
    try:
        least = float(bar)
    except ValueError:
        least = -1.0
    if not folder or not 0.0 <= least <= 1.0:
        raise InvalidInput("--min-ndcg takes DATASET_DIR:SCORE, SCORE in [0, 1]", field="min-ndcg")

    def gate(collection: Collection) -> None:
        from ragstore.eval import score

        scored = score(collection, folder)
        if scored.ndcg_at_10 < least:
            raise QualityGate(
                f"{collection.name} scores nDCG@10 {scored.ndcg_at_10:.4f} on {folder}, "
                f"below {least}: not switched (it is kept; delete it or switch by hand)"
            )

    return gate


def _query_cache(obj: Context) -> QueryCache:
    redis_url = click.get_current_context().meta.get("cache_redis")
    if redis_url is None:
        return obj.store.cache
    return obj.store.configure_cache("redis", url=redis_url)


def main() -> None:
    """Console-script entry point."""
    # Python's last garbage collections at exit walk every object the model libraries
    # made: over a second of silence after the last line with torch loaded. Frozen
    # first, they are left to the process's end.
    atexit.register(gc.freeze)
    cli(prog_name="ragstore")


@contextmanager
def _failures() -> Iterator[None]:
    try:
        yield
    except RagstoreError as error:
        _fail(error)


def _fail(error: RagstoreError) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    sys.exit(exit_code_for(error))


def _parse_filter_option(raw: str | None) -> dict[str, Any] | None:
    return _parse_json_option(raw, "--filter", InvalidFilter)


def _parse_json_option(
    raw: str | None, option: str, error: type[InvalidInput] = InvalidConfig
) -> dict[str, Any] | None:
    """A JSON-object option's value; a usage error naming the option otherwise."""
    if raw is None:
        return None
    field = option.removeprefix("--")
    try:
        value = parse_json(raw, option)
    except InvalidInput as bad:
        raise error(str(bad), field=field) from None
    if not isinstance(value, dict):
        raise error(f"{option} must be a JSON object", field=field)
    return value


def _on_terminal() -> bool:
    """Whether stderr is a terminal, where a live progress bar may be drawn."""
    return sys.stderr.isatty()


class _Bar:
    """The one progress display: a spinner, a label and, while work is counted, ``done/total
    UNIT``, the rate and the time left, on stderr. It is the library's progress callback
    (a :class:`ragstore.engine.pipeline.StagedProgress`: the library names its stages)."""

    def __init__(self, shown: Any, unit: str, label: str) -> None:
        self._shown = shown
        self._unit = unit
        self._task = shown.add_task(label, total=None, count="", rate="", eta="")
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` units: the bar, the count, the rate and the time left."""
        if not self._samples:  # counting starts: the clock shows this stage's time
            self._shown.reset(self._task, total=total, completed=done)
        rate = self._rate(done)
        eta = None if rate is None or rate <= 0 else (total - done) / rate
        self._shown.update(
            self._task,
            completed=done,
            total=total,
            count=f"{done:,}/{total:,} {self._unit}",
            rate="" if rate is None else f"{rate:,.1f} {self._unit}/s",
            eta=f"ETA {_clock(eta)}",
        )

    def stage(self, label: str) -> None:
        """Name what runs now; the count so far stays."""
        self._shown.update(self._task, description=label)

    def waiting(self, label: str) -> None:
        """Name a stage that has no count: a spinner, the label and the stage's time."""
        self._samples.clear()
        self._shown.reset(self._task, total=None, description=label, count="", rate="", eta="")

    def note(self, message: str) -> None:
        """Print a line above the bar."""
        self._shown.console.print(message, markup=False, highlight=False)

    def _rate(self, done: int) -> float | None:
        """Units a second over the last :data:`RATE_SECONDS`, counting ``done`` now."""
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_SECONDS:
            self._samples.popleft()
        (first, before), (last, after) = self._samples[0], self._samples[-1]
        return None if last - first <= 0 or after == before else (after - before) / (last - first)


def _clock(seconds: float | None) -> str:
    """``0:01:05`` for 65 seconds; ``-:--:--`` while unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


@contextmanager
def _progress(*, enabled: bool, label: str, unit: str = "chunks") -> Iterator[_Bar | None]:
    """A live :class:`_Bar` on stderr while the block runs, labelled ``label`` until
    told otherwise, and cleared after; ``None`` when not ``enabled``."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Column

    label_column = Column(width=36, no_wrap=True, overflow="ellipsis")
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", table_column=label_column),
        BarColumn(bar_width=20),
        *(TextColumn(f"{{task.fields[{name}]}}") for name in ("count", "rate", "eta")),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=_stderr_console()) as shown, _logs_above():
        yield _Bar(shown, unit, label)


@contextmanager
def _logs_above() -> Iterator[None]:
    """Send the log messages written to stderr through ``sys.stderr`` as it is now (a
    live display's proxy, which prints them above the bar), and back after."""
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    previous = [(h, h.setStream(sys.stderr)) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in previous:
            if stream is not None:
                handler.setStream(stream)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _ranks(hit: Hit) -> str:
    sides = [
        f"{name} #{rank}"
        for name, rank in (("dense", hit.dense_rank), ("keyword", hit.keyword_rank))
        if rank is not None
    ]
    return f"  [{', '.join(sides)}]" if sides else ""


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))
