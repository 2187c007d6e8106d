"""API keys: who may do what to which collection.

A key is a random string shown once at creation; the registry keeps only
HMAC-SHA256(server secret, key), so a copy of the database alone cannot be
turned back into keys, nor checked offline without the secret (kept in the data
directory, or given as ``RAG_AUTH_SECRET`` when several hosts serve one
registry).

Scopes are ``<role>:<collection>``, ``*`` for every collection. Roles nest:
``admin`` ⊃ ``write`` ⊃ ``read``.

- read: list and read the collection, its documents, runs and versions; search, ask, chat, evaluate;
- write: upload and delete documents;
- admin: create and delete the collection, its folder source, schedules, re-index runs,
  rollback and golden questions. ``admin:*`` also manages keys.

A key that has no scope on a collection gets the same 403 whether that
collection exists or not, so a key never learns the names of the collections
it may not see; listings show it only its own.

A key found valid is trusted for ``RAG_AUTH_CACHE_S`` seconds without asking
the registry again (``KeyAuthority.recall``: no database round trip, so the
HTTP door checks it on the event loop without a thread-pool hop). Revoking a
key through this process forgets it at once; through another API process
sharing the registry, it stops working here within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from rag.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from rag.registry import ApiKeyRecord, Database

__all__ = [
    "ALL_ACCESS",
    "BOOTSTRAP_KEY_ID",
    "KeyAuthority",
    "Principal",
    "Role",
    "Scope",
    "load_or_create_secret",
    "parse_scopes",
]

BOOTSTRAP_KEY_ID = "bootstrap"
MIN_KEY_LENGTH = 16
_SCOPE = re.compile(r"^(read|write|admin):(\*|[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})$")


class Role(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True)
class Scope:
    role: Role
    collection: str  # "*" = every collection

    def __str__(self) -> str:
        return f"{self.role.name.lower()}:{self.collection}"

    def covers(self, collection: str) -> bool:
        return self.collection in ("*", collection)


def parse_scopes(texts: list[str]) -> tuple[Scope, ...]:
    if not texts:
        raise InvalidRequestError("a key needs at least one scope, e.g. read:<collection>")
    scopes = []
    for text in texts:
        match = _SCOPE.match(text.strip())
        if match is None:
            raise InvalidRequestError(
                f"scope {text!r} is not <read|write|admin>:<collection or *>"
            )
        scopes.append(Scope(Role[match.group(1).upper()], match.group(2)))
    return tuple(scopes)


@dataclass(frozen=True)
class Principal:
    """The caller: a key's id and scopes (or everything, with authentication off)."""

    key_id: str | None
    scopes: tuple[Scope, ...]

    def role_on(self, collection: str) -> Role | None:
        roles = [s.role for s in self.scopes if s.covers(collection)]
        return max(roles) if roles else None

    def can(self, role: Role, collection: str) -> bool:
        held = self.role_on(collection)
        return held is not None and held >= role

    def can_see(self, collection: str) -> bool:
        return self.role_on(collection) is not None

    @property
    def is_admin(self) -> bool:
        return any(s.role is Role.ADMIN and s.collection == "*" for s in self.scopes)

    def check(self, role: Role, collection: str) -> None:
        """Raise 403 unless this caller holds ``role`` on ``collection``. With no
        scope there at all, the words say nothing of whether it exists."""
        held = self.role_on(collection)
        if held is None:
            raise PermissionDeniedError(f"this key has no scope on collection {collection!r}")
        if held < role:
            raise PermissionDeniedError(
                f"this key's role on collection {collection!r} is {held.name.lower()}; this needs {role.name.lower()}"
            )

    def check_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDeniedError("this needs a key with the scope admin:*")


ALL_ACCESS = Principal(key_id=None, scopes=(Scope(Role.ADMIN, "*"),))


def load_or_create_secret(configured: str | None, data_dir: Path) -> bytes:
    """The HMAC secret: ``RAG_AUTH_SECRET`` if set, else ``DATA/auth_secret``
    (created on first start, readable by the owner only)."""
    if configured:
        if len(configured) < 32:
            raise ConfigurationError("RAG_AUTH_SECRET must be at least 32 characters")
        return configured.encode()
    path = data_dir / "auth_secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this data directory made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value


_RECALLED_KEYS = 1024  # distinct valid keys ``recall`` keeps (the least recently checked go first)


class KeyAuthority:
    """Creates, checks, lists and revokes keys in the registry."""

    def __init__(
        self,
        registry: Database,
        secret: bytes,
        *,
        cache_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._secret = secret
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        # HMAC of a key found valid -> (its principal, when that was checked); oldest first.
        self._valid: dict[str, tuple[Principal, float]] = {}
        self._forgotten = 0  # ``forget`` calls so far: a check that read the registry before one keeps nothing

    def _hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def recall(self, key: str | None) -> Principal | None:
        """The principal of ``key`` if it was found valid less than
        ``cache_s`` seconds ago, without asking the registry; else None
        (then ``authenticate``). Quick enough for the event loop."""
        if not key or self._cache_s <= 0:
            return None
        digest = self._hash(key)
        with self._lock:
            hit = self._valid.get(digest)
            if hit is None:
                return None
            if self._clock() - hit[1] < self._cache_s:
                return hit[0]
            del self._valid[digest]
            return None

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>'")
        digest = self._hash(key)
        checked, forgotten = self._clock(), self._forgotten
        record = self._registry.api_key_by_hash(digest)
        if record is None or record.revoked_at is not None:
            raise AuthenticationError("the API key is not valid")
        principal = Principal(key_id=record.id, scopes=parse_scopes(record.scopes))
        if self._cache_s > 0:
            with self._lock:
                if forgotten != self._forgotten:
                    return principal  # a key was revoked meanwhile: this row may predate it
                self._valid.pop(digest, None)
                self._valid[digest] = (principal, checked)
                while len(self._valid) > _RECALLED_KEYS:
                    del self._valid[next(iter(self._valid))]
        return principal

    def forget(self, key_id: str) -> None:
        """Drops ``key_id`` from what ``recall`` trusts."""
        with self._lock:
            self._forgotten += 1
            for digest in [d for d, (p, _) in self._valid.items() if p.key_id == key_id]:
                del self._valid[digest]

    def create(self, name: str, scopes: list[str], *, key: str | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key; returns its record and the key itself (shown once)."""
        parsed = parse_scopes(scopes)
        name = name.strip()
        if not 1 <= len(name) <= 128 or not name.isprintable():
            raise InvalidRequestError("a key name is 1-128 printable characters")
        key = key or f"rag-{secrets.token_urlsafe(32)}"
        with self._registry.unit_of_work() as uow:
            record = uow.api_keys.add(
                name=name, key_hash=self._hash(key), prefix=key[:8], scopes=[str(s) for s in parsed]
            )
        assert record is not None  # only if_absent inserts may find the row there
        return record, key

    def list(self) -> list[ApiKeyRecord]:
        with self._registry.unit_of_work() as uow:
            return uow.api_keys.list_all()

    def revoke(self, key_id: str) -> ApiKeyRecord:
        with self._registry.unit_of_work() as uow:
            record = uow.api_keys.revoke(key_id)
        self.forget(key_id)
        if record is None:
            raise NotFoundError(f"key {key_id!r} not found")
        return record

    def ensure_bootstrap(self, configured: str | None) -> str | None:
        """On the first start, one ``admin:*`` key: ``RAG_BOOTSTRAP_ADMIN_KEY`` if
        set, else a generated one, which is returned so the caller can show it
        once. Later starts (the bootstrap row exists, even revoked) do nothing."""
        configured = configured or None  # an empty setting is no setting
        if configured is not None and len(configured) < MIN_KEY_LENGTH:
            raise ConfigurationError(f"RAG_BOOTSTRAP_ADMIN_KEY must be at least {MIN_KEY_LENGTH} characters")
        key = configured or f"rag-{secrets.token_urlsafe(32)}"
        with self._registry.unit_of_work() as uow:
            created = uow.api_keys.add(
                name="bootstrap admin",
                key_hash=self._hash(key),
                # A key chosen by the operator may be short: none of it is kept in clear.
                prefix=key[:8] if configured is None else "(setting)",
                scopes=["admin:*"],
                key_id=BOOTSTRAP_KEY_ID,
                if_absent=True,
            )
        return key if created is not None and configured is None else None
