"""Stores: where collections live. The embedded default is one directory with SQLite."""
