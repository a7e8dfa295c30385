"""API keys: roles, tenants and collections, stored hashed, compared in constant time.

A key file (``--keys FILE``, env ``RAGSTORE_KEYS_FILE``) or the env variable
``RAGSTORE_KEYS`` holds JSON::

    {"keys": [
      {"id": "acme-search", "sha256": "<hex sha256 of the key>", "role": "read",
       "tenants": ["acme"], "collections": ["docs"]},
      {"id": "ops", "sha256": "...", "role": "admin", "tenants": ["*"]}
    ]}

Roles are ordered ``read < write < admin``. ``tenants`` lists the tenants the key may
touch (``"*"``: all, and the store-wide cache routes); ``collections``, when given,
narrows it to those collection names. Only the SHA-256 of a key is ever held; keys are
random 256-bit strings (``python -m ragstore.server.auth``), so a fast hash is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragstore.errors import InvalidConfig, InvalidInput
from ragstore.inputs import check_text, parse_json
from ragstore.server.errors import ApiError

Role = Literal["read", "write", "admin"]
ROLE_RANK: dict[str, int] = {"read": 0, "write": 1, "admin": 2}
ALL_TENANTS = "*"
DEFAULT_TENANT = "default"
"""The tenant whose collections are the store's own, made outside the server (the CLI,
the Python API): admin keys only, whatever role a route asks for."""
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class KeyEntry(BaseModel):
    """One key as the key file describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Role
    tenants: tuple[str, ...] = Field(min_length=1)
    collections: tuple[str, ...] | None = None


class KeyFile(BaseModel):
    """The key file's top level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: tuple[KeyEntry, ...]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id (never the key), role and scope."""

    key_id: str
    role: Role
    tenants: frozenset[str]
    collections: frozenset[str] | None

    def require(self, role: Role, tenant: str | None, collection: str | None = None) -> None:
        """Raise 403 unless this caller has ``role`` on ``tenant`` (and ``collection``);
        ``tenant=None`` asks for the store-wide scope, and :data:`DEFAULT_TENANT` for
        admin whatever ``role`` says."""
        if tenant == DEFAULT_TENANT:
            role = "admin"
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            where = " (tenant 'default' is admin-only)" if tenant == DEFAULT_TENANT else ""
            raise ApiError(
                403, f"key {self.key_id!r} has role {self.role!r}; needs {role!r}{where}"
            )
        if not self.may_see(tenant, collection):
            scope = "the whole store" if tenant is None else f"tenant {tenant!r}"
            if collection is not None and tenant is not None:
                scope = f"collection {collection!r} of tenant {tenant!r}"
            raise ApiError(403, f"key {self.key_id!r} may not use {scope}")

    def may_see(self, tenant: str | None, collection: str | None = None) -> bool:
        """Whether ``tenant`` (and ``collection``) are within this caller's scope."""
        if ALL_TENANTS not in self.tenants and (tenant is None or tenant not in self.tenants):
            return False
        return collection is None or self.collections is None or collection in self.collections


ANONYMOUS = Principal("anonymous", "admin", frozenset({ALL_TENANTS}), None)
"""The caller when the server runs without keys (loopback only)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as key files store it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The configured keys, by hash."""

    def __init__(self, entries: tuple[KeyEntry, ...]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented key; 401 when it is missing or unknown.

        Every stored hash is compared, in constant time, whatever matches first.
        """
        if not self._entries:
            return ANONYMOUS
        if not presented:
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(presented).encode()
        found: KeyEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256.encode()):
                found = entry
        if found is None:
            raise _unauthorized("unknown API key")
        collections = frozenset(found.collections) if found.collections is not None else None
        return Principal(found.id, found.role, frozenset(found.tenants), collections)


def load_keys(path: Path | None, inline: str | None) -> KeyRing:
    """Keys from a file and/or inline JSON (both may be given; ids must be unique)."""
    entries: list[KeyEntry] = []
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(f"cannot read key file {path}: {exc}", field="keys") from None
        entries += _parse_keys(text, str(path))
    if inline:
        entries += _parse_keys(inline, "RAGSTORE_KEYS")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InvalidConfig("key ids must be unique", field="keys")
    return KeyRing(tuple(entries))


def _parse_keys(text: str, origin: str) -> list[KeyEntry]:
    try:
        return list(KeyFile.model_validate(parse_json(text, origin)).keys)
    except InvalidInput as exc:  # not JSON, too deep, or not valid Unicode
        raise InvalidConfig(str(exc), field="keys") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidConfig(f"{origin}: {where}: {first['msg']}", field="keys") from None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def new_key_entry(key_id: str, role: Role, tenants: list[str]) -> tuple[str, dict[str, object]]:
    """A fresh random key and the key-file entry that admits it."""
    key = "rsk_" + secrets.token_urlsafe(32)
    entry: dict[str, object] = {"id": key_id, "sha256": hash_key(key), "role": role}
    entry["tenants"] = tenants
    return key, entry


def check_tenants(tenants: list[str]) -> None:
    """:class:`InvalidInput` naming the first tenant no route can match: each must match
    :data:`TENANT_PATTERN` (lower-case, as the routes' ``{tenant}``) or be ``"*"``."""
    for tenant in tenants:
        check_text(tenant, "tenant")
        if tenant != ALL_TENANTS and not re.fullmatch(TENANT_PATTERN, tenant):
            raise InvalidInput(
                f"tenant {tenant!r} can never match a route: use 1-32 of a-z 0-9 _ - "
                f"(starting with a letter or digit), or {ALL_TENANTS!r} for all",
                field="tenant",
            )


def main(argv: list[str] | None = None) -> None:
    """``python -m ragstore.server.auth ID ROLE TENANT...``: print a new key (once) and
    its key-file entry. A bad argument exits with status 2 and one line saying why."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] not in ROLE_RANK:
        usage = "usage: python -m ragstore.server.auth ID read|write|admin TENANT..."
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    role: Role = "admin" if args[1] == "admin" else ("write" if args[1] == "write" else "read")
    key, entry = new_key_entry(args[0], role, args[2:])
    try:
        check_text(args[0], "ID")
        check_tenants(args[2:])
        KeyEntry.model_validate(entry)  # what the server will load
    except InvalidInput as exc:
        _fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    print(f"key (shown once, give it to the client): {key}")
    print(json.dumps(entry))


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
