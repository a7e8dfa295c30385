"""The public engine: stores and collections over a storage backend, the ingest pipeline."""
