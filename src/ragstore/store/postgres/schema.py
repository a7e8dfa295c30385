"""The PostgreSQL schema of a store, and its migrations.

``ragstore_meta`` holds the schema version (how many of :data:`MIGRATIONS` were
applied), the store's random id and the query cache's epoch. A process that opens the
database applies the missing steps in one transaction, holding an advisory lock, so two
processes opening a new database at once do not race; a schema newer than this code is
refused with :class:`~ragstore.errors.SchemaTooNew`.

The cache clock (``cache_clock``, ``cache_doc_changes``) is kept by triggers as the
SQLite store's is, in the writer's own transaction: an update or delete of a document
bumps its collection's ``seq`` and ``writes`` and records the change against the
document; an insert bumps ``writes``; a segment insert or delete, or a config change,
bumps ``index_version``. Removed chunks leave rows in ``removals`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final

import psycopg

from ragstore.errors import SchemaTooNew

SCHEMA_LOCK: Final = 0x72616753_00000001
"""Advisory lock key held while the schema is created or upgraded."""

_TABLES = """
CREATE TABLE ragstore_meta (
    name text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO ragstore_meta (name, value) VALUES
    ('schema_version', '0'),
    ('store_id', replace(gen_random_uuid()::text, '-', '')),
    ('epoch', '0');
CREATE TABLE collections (
    id bigserial PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    config text NOT NULL,
    created_at double precision NOT NULL,
    removal_floor bigint NOT NULL DEFAULT 0
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    collection_id bigint NOT NULL REFERENCES collections (id),
    doc_id text COLLATE "C" NOT NULL,
    source text,
    origin text COLLATE "C",
    title text NOT NULL,
    text text NOT NULL,
    metadata jsonb NOT NULL,
    metadata_text text NOT NULL,
    content_hash text NOT NULL,
    updated_at double precision NOT NULL,
    UNIQUE (collection_id, doc_id)
);
CREATE INDEX documents_by_origin ON documents (collection_id, origin);
CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    collection_id bigint NOT NULL,
    document_id bigint NOT NULL REFERENCES documents (id),
    ordinal integer NOT NULL,
    text text NOT NULL,
    start_char integer NOT NULL,
    end_char integer NOT NULL,
    hash text NOT NULL,
    vector vector NOT NULL,
    terms bytea NOT NULL,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_by_collection ON chunks (collection_id, id);
CREATE INDEX chunks_by_hash ON chunks (hash) WHERE hash <> '';
CREATE TABLE removals (
    seq bigserial PRIMARY KEY,
    collection_id bigint NOT NULL,
    chunk_id bigint NOT NULL
);
CREATE INDEX removals_by_collection ON removals (collection_id, seq);
CREATE TABLE segments (
    id bigserial PRIMARY KEY,
    collection_id bigint NOT NULL REFERENCES collections (id),
    node text NOT NULL,
    kind text NOT NULL,
    vectors bigint NOT NULL,
    first_chunk bigint NOT NULL,
    last_chunk bigint NOT NULL,
    files text NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX segments_by_collection ON segments (collection_id, node, first_chunk);
CREATE TABLE cache_clock (
    collection_id bigint PRIMARY KEY,
    seq bigint NOT NULL DEFAULT 0,
    writes bigint NOT NULL DEFAULT 0,
    index_version bigint NOT NULL DEFAULT 0
);
CREATE TABLE cache_doc_changes (
    collection_id bigint NOT NULL,
    doc_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (collection_id, doc_id)
);
CREATE INDEX cache_doc_changes_by_seq ON cache_doc_changes (collection_id, seq);
"""

# Statement-level triggers read the rows a statement touched from transition tables: one
# call per statement, not per row. All documents one statement changes get the same new
# seq; no reader can see the clock between them, so that tells it what one seq each did.
_TRIGGERS = """
CREATE FUNCTION ragstore_chunks_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO removals (collection_id, chunk_id)
        SELECT collection_id, id FROM removed_chunks ORDER BY id;
    RETURN NULL;
END $$;
CREATE TRIGGER chunks_removed AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS removed_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION ragstore_chunks_removed();

CREATE FUNCTION ragstore_documents_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
    top bigint;
BEGIN
    FOR changed IN
        SELECT collection_id, count(*) AS n FROM changed_documents GROUP BY collection_id
    LOOP
        INSERT INTO cache_clock AS k (collection_id, seq, writes)
            VALUES (changed.collection_id, changed.n, changed.n)
            ON CONFLICT (collection_id) DO UPDATE
                SET seq = k.seq + excluded.seq, writes = k.writes + excluded.writes
            RETURNING k.seq INTO top;
        INSERT INTO cache_doc_changes AS c (collection_id, doc_id, seq)
            SELECT collection_id, doc_id, top FROM changed_documents
                WHERE collection_id = changed.collection_id
            ON CONFLICT (collection_id, doc_id) DO UPDATE SET seq = excluded.seq;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER documents_updated AFTER UPDATE ON documents
    REFERENCING OLD TABLE AS changed_documents
    FOR EACH STATEMENT EXECUTE FUNCTION ragstore_documents_changed();
CREATE TRIGGER documents_deleted AFTER DELETE ON documents
    REFERENCING OLD TABLE AS changed_documents
    FOR EACH STATEMENT EXECUTE FUNCTION ragstore_documents_changed();

CREATE FUNCTION ragstore_documents_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_clock AS k (collection_id, writes)
        SELECT collection_id, count(*) FROM added_documents GROUP BY collection_id
        ON CONFLICT (collection_id) DO UPDATE SET writes = k.writes + excluded.writes;
    RETURN NULL;
END $$;
CREATE TRIGGER documents_inserted AFTER INSERT ON documents
    REFERENCING NEW TABLE AS added_documents
    FOR EACH STATEMENT EXECUTE FUNCTION ragstore_documents_added();

CREATE FUNCTION ragstore_index_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
BEGIN
    IF TG_TABLE_NAME = 'collections' THEN
        target := NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        target := OLD.collection_id;
    ELSE
        target := NEW.collection_id;
    END IF;
    INSERT INTO cache_clock AS k (collection_id, index_version) VALUES (target, 1)
        ON CONFLICT (collection_id) DO UPDATE SET index_version = k.index_version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER segments_inserted AFTER INSERT ON segments
    FOR EACH ROW EXECUTE FUNCTION ragstore_index_changed();
CREATE TRIGGER segments_deleted AFTER DELETE ON segments
    FOR EACH ROW EXECUTE FUNCTION ragstore_index_changed();
CREATE TRIGGER collections_config AFTER UPDATE OF config ON collections
    FOR EACH ROW EXECUTE FUNCTION ragstore_index_changed();
"""

# Schema 2: chunks of collections searched in the database (index kind pgvector) keep
# their text's tsvector, filled on insert by a per-collection trigger (search.py), so
# ranking a full-text match reads it instead of parsing the text again.
_TEXT_SEARCH = """
ALTER TABLE chunks ADD COLUMN tsv tsvector;
CREATE FUNCTION ragstore_fill_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tsv := to_tsvector('english'::regconfig, NEW.text);
    RETURN NEW;
END $$;
"""

# Schema 3: aliases, names that stand for a collection (see engine/store.py). previous_id
# is the collection an alias named before its last switch, for a rollback.
_ALIASES = """
CREATE TABLE aliases (
    name text COLLATE "C" PRIMARY KEY,
    collection_id bigint NOT NULL REFERENCES collections (id),
    previous_id bigint,
    updated_at double precision NOT NULL
);
"""

Connection = psycopg.Connection[Any]
Step = str | Callable[[Connection], None]

MIGRATIONS: Final[tuple[Step, ...]] = (_TABLES + _TRIGGERS, _TEXT_SEARCH, _ALIASES)
"""The schema is built by applying these steps in order."""
SCHEMA_VERSION: Final = len(MIGRATIONS)


def ensure_schema(conn: Connection, location: str) -> None:
    """Create or upgrade the schema through ``conn`` (an autocommit connection), or
    refuse a schema newer than this code."""
    version = schema_version(conn)
    _refuse_newer(version, location)
    if version == SCHEMA_VERSION:
        return
    # The lock is taken before the transaction begins, not inside it: a transaction that
    # waited for it inside would go on reading the catalog as its session had cached it
    # (no such table) and create again the tables the process before it just made.
    conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
    try:
        with conn.transaction():
            _migrate(conn, location)
    finally:
        with suppress(psycopg.Error):  # a connection that broke has let go of it anyway
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


def _migrate(conn: Connection, location: str) -> None:
    version = schema_version(conn)  # another process may have done it meanwhile
    _refuse_newer(version, location)
    if version == 0:
        _create_extension(conn)
    for step in MIGRATIONS[version:]:
        if callable(step):
            step(conn)
        else:
            conn.execute(step)
    conn.execute(
        "UPDATE ragstore_meta SET value = %s WHERE name = 'schema_version'",
        (str(SCHEMA_VERSION),),
    )


def schema_version(conn: Connection) -> int:
    """How many migration steps the database has (0 for a database without a store)."""
    found = conn.execute("SELECT to_regclass('ragstore_meta') IS NOT NULL").fetchone()
    if found is None or not found[0]:
        return 0
    row = conn.execute("SELECT value FROM ragstore_meta WHERE name = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def _create_extension(conn: Connection) -> None:
    """pgvector, unless it is there already (creating it may need more rights)."""
    found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if found is None:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _refuse_newer(version: int, location: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{location} has schema version {version}; this ragstore reads up to "
            f"{SCHEMA_VERSION}. Upgrade ragstore to open it."
        )
