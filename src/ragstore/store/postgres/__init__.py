"""The PostgreSQL backend: one database (with pgvector) as the source of truth, shared by
processes on any number of hosts; index files stay local to each host."""

from ragstore.store.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
