"""API keys of a workspace: created once, stored hashed, checked by scope (issue 13).

A key belongs to the workspace it was created in (the table ``api_keys`` inside that DuckDB
file), so a key of one workspace cannot open another. The token is shown once, at creation,
as ``sl_<key id>_<secret>``; the workspace keeps the key id, a name, the scopes and the
SHA-256 of the secret (a 256-bit random secret needs no slow hash: nothing can be guessed from
it), never the secret. Scopes: ``ingest`` (send data), ``read`` (pages and their JSON),
``approve`` (approve or reject budget lines).

>>> from signalloop.store import Workspace
>>> ws = Workspace(":memory:")
>>> key = create_key(ws, "maria", ["ingest", "read"])
>>> check(ws, key.token, "read").name
'maria'
>>> check(ws, key.token, "approve") is None, check(ws, "sl_nope_x", "read") is None
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signalloop.errors import UsageError
from signalloop.store import Workspace

#: What a key may do.
SCOPES = ("ingest", "read", "approve")

KEYS_DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, name VARCHAR, scopes VARCHAR[], secret_sha256 VARCHAR,
    created_at TIMESTAMP, revoked_at TIMESTAMP, last_used_at TIMESTAMP
)"""
_TOKEN = re.compile(r"^sl_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[\w .@-]{1,64}$")


@dataclass(frozen=True)
class Key:
    """A key as stored (``token`` only right after :func:`create_key`)."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the token only when there is one (at creation)."""
        d: dict[str, Any] = {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "revoked_at": self.revoked_at.isoformat(timespec="seconds")
            if self.revoked_at
            else None,
            "last_used_at": (
                self.last_used_at.isoformat(timespec="seconds") if self.last_used_at else None
            ),
        }
        if self.token is not None:
            d["token"] = self.token
        return d


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from ``"ingest,read"`` or a list, checked and in :data:`SCOPES` order.

    >>> parse_scopes("read, ingest")
    ('ingest', 'read')
    """
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {s.strip().lower() for s in items if s.strip()}
    bad = sorted(wanted - set(SCOPES))
    if bad or not wanted:
        raise UsageError(
            f"scopes must be one or more of {', '.join(SCOPES)}, got {', '.join(bad) or 'none'}"
        )
    return tuple(s for s in SCOPES if s in wanted)


def create_key(ws: Workspace, name: str, scopes: str | Iterable[str]) -> Key:
    """Create a key; the returned :class:`Key` carries the token, which is never stored."""
    if not _NAME.match(name):
        raise UsageError(
            f"a key name is 1-64 letters, digits, spaces or . @ - _ (a person or a pipeline), "
            f"got {name!r}"
        )
    scoped = parse_scopes(scopes)
    ws.con.execute(KEYS_DDL)
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
    secret = secrets.token_urlsafe(32)
    now = datetime.now(UTC).replace(tzinfo=None)
    ws.con.execute(
        "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL, NULL)",
        [key_id, name, list(scoped), _digest(secret), now],
    )
    return Key(key_id, name, scoped, now, token=f"sl_{key_id}_{secret}")


def list_keys(ws: Workspace) -> list[Key]:
    """Every key of the workspace, newest first (never a token)."""
    ws.con.execute(KEYS_DDL)
    rows = ws.con.execute(
        "SELECT key_id, name, scopes, created_at, revoked_at, last_used_at FROM api_keys "
        "ORDER BY created_at DESC, key_id"
    ).fetchall()
    return [Key(r[0], r[1], tuple(r[2]), r[3], r[4], r[5]) for r in rows]


def revoke(ws: Workspace, key_id: str) -> Key:
    """Revoke a key by id; it stops working at once."""
    ws.con.execute(KEYS_DDL)
    now = datetime.now(UTC).replace(tzinfo=None)
    found = ws.con.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ? "
        "RETURNING key_id",
        [now, key_id],
    ).fetchall()
    if not found:
        known = ", ".join(k.key_id for k in list_keys(ws)) or "none"
        raise UsageError(f"no key {key_id!r} in workspace {ws.path} (keys: {known})")
    return next(k for k in list_keys(ws) if k.key_id == key_id)


def parse_token(token: str | None) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed token, else ``None`` (nothing is looked up).

    >>> parse_token("sl_abcdefghij_" + "x" * 43)[0]
    'abcdefghij'
    >>> parse_token("Bearer nonsense") is None
    True
    """
    m = _TOKEN.match(token or "")
    return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True)
class StoredKey:
    """A key's row as the server caches it: enough to verify a token without a query."""

    key: Key
    secret_sha256: str

    def verify(self, secret: str, scope: str) -> bool:
        """Whether ``secret`` is this key's (constant-time), it is live and holds ``scope``."""
        if scope not in SCOPES:
            raise UsageError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        same = hmac.compare_digest(self.secret_sha256, _digest(secret))
        return same and self.key.revoked_at is None and scope in self.key.scopes


def stored_keys(ws: Workspace) -> dict[str, StoredKey]:
    """Every key of the workspace by id, with its digest (for a server's cache)."""
    ws.con.execute(KEYS_DDL)
    rows = ws.con.execute(
        "SELECT key_id, name, scopes, created_at, revoked_at, last_used_at, secret_sha256 "
        "FROM api_keys"
    ).fetchall()
    return {r[0]: StoredKey(Key(r[0], r[1], tuple(r[2]), r[3], r[4], r[5]), r[6]) for r in rows}


def touch(ws: Workspace, key_id: str, when: datetime | None = None) -> None:
    """Record a use of the key in ``last_used_at``."""
    when = when or datetime.now(UTC).replace(tzinfo=None)
    ws.con.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", [when, key_id])


def check(ws: Workspace, token: str | None, scope: str) -> Key | None:
    """The key a token belongs to when it is valid, not revoked and has ``scope``; else None.

    The comparison is constant-time; a use is recorded in ``last_used_at``.
    """
    if scope not in SCOPES:
        raise UsageError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    parsed = parse_token(token)
    if parsed is None:
        return None
    found = stored_keys(ws).get(parsed[0])
    if found is None or not found.verify(parsed[1], scope):
        return None
    now = datetime.now(UTC).replace(tzinfo=None)
    touch(ws, parsed[0], now)
    k = found.key
    return Key(k.key_id, k.name, k.scopes, k.created_at, None, now)
