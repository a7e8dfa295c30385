"""Cache keys: the normalised query text, and the scope that holds everything else that
changes a search's result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import unicodedata
from typing import Any

from ragstore.config import CollectionConfig
from ragstore.errors import InvalidInput
from ragstore.filters import And, Compare, Not, Or, to_json
from ragstore.inputs import check_text

KEY_VERSION = 1
"""Bumped whenever the cached form of hits or the key layout changes."""
MAX_TENANT_CHARS = 256
_FILTERS = (Compare, And, Or, Not)
_SCALARS = (str, int, float, bool, type(None))


def normalize(text: str) -> str:
    """Exact-level form of a query: NFKC, case-folded, whitespace collapsed.

    Both retrievers already ignore case (the model is uncased, BM25 lower-cases) and
    whitespace runs, so these forms share one answer; punctuation is kept, as the model
    sees it.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def check_tenant(tenant: object) -> str | None:
    """``tenant`` if valid: ``None`` or a non-empty string of at most 256 characters."""
    if tenant is None:
        return None
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS:
        raise InvalidInput(
            f"tenant must be a non-empty string of at most {MAX_TENANT_CHARS} characters",
            field="tenant",
        )
    return check_text(tenant, "tenant")


def params_json(params: object) -> dict[str, Any] | None:
    """Every field of a search request as canonical JSON, or ``None`` when a field holds
    something that cannot be keyed (such a search is not cached).

    Reading every dataclass field means a search parameter added later is keyed too.
    """
    keyed: dict[str, Any] = {}
    for field in dataclasses.fields(params):  # type: ignore[arg-type]
        value = getattr(params, field.name)
        if isinstance(value, _FILTERS):
            keyed[field.name] = to_json(value)
        elif isinstance(value, _SCALARS):
            keyed[field.name] = value
        else:
            return None
    return keyed


def scope_key(
    collection: tuple[int, str],
    config_json: str,
    index_version: int,
    tenant: str | None,
    params: dict[str, Any],
) -> str:
    """Hash of everything but the query text that decides a search's result."""
    payload = json.dumps(
        [KEY_VERSION, collection, config_json, index_version, tenant, params],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def config_json(config: CollectionConfig) -> str:
    """The collection config as keyed: model name, version and dim, chunking, index."""
    return config.to_json()
