"""The workspaces one server serves: one, or a folder of them (one per client account).

A workspace is a folder holding ``signalloop.duckdb`` (any ``*.duckdb`` when there is exactly
one) and, optionally, ``signalloop.toml`` beside it. The server opens each database once and
gives every request and background job its own cursor (:meth:`WorkspaceHandle.open`), so reads,
the ingest API and a daily run go on side by side in one process.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signalloop.config import Settings, load_settings
from signalloop.errors import UsageError
from signalloop.keys import StoredKey, stored_keys, touch
from signalloop.runs import RunManager, close_interrupted
from signalloop.store import DEFAULT_DB, Workspace

#: Seconds a server trusts its cached copy of a workspace's keys (a revoked key stops within it).
KEY_CACHE_SECONDS = 5.0
#: Seconds a shutdown waits for a workspace's run to end before leaving it behind.
CLOSE_WAIT = 10.0
#: A key's ``last_used_at`` is written at most this often (seconds).
TOUCH_EVERY = 60.0
log = logging.getLogger("signalloop.web")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
SECRET_FILE = ".signalloop-serve-secret"


def _db_in(folder: Path) -> Path | None:
    preferred = folder / DEFAULT_DB
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*.duckdb"))
    return found[0] if len(found) == 1 else None


class WorkspaceHandle:
    """One served workspace: its database (opened once), settings, locks and jobs."""

    def __init__(self, name: str, db_path: Path) -> None:
        self.name = name
        self.db_path = db_path
        self.folder = db_path.parent
        #: Held around every ingest into this workspace (API batches and the run's inbox).
        self.ingest_lock = threading.Lock()
        #: Per-workspace objects other modules attach (the ingest writer, caches).
        self.extras: dict[str, Any] = {}
        self._base: Workspace | None = None
        self._open_lock = threading.Lock()
        self._keys: dict[str, StoredKey] = {}
        self._keys_at = 0.0
        self._touched: dict[str, float] = {}
        self._settings: tuple[float, Settings] | None = None
        self.runs = RunManager(self.open, self.settings, before=self._ingest_inbox)

    # -- database ---------------------------------------------------------------------------
    def _database(self) -> Workspace:
        with self._open_lock:
            if self._base is None:
                self._base = Workspace(self.db_path)
                close_interrupted(self._base)  # runs the last server was stopped in
            return self._base

    @contextmanager
    def open(self) -> Iterator[Workspace]:
        """A cursor on this workspace for the calling thread; closed after the block."""
        ws = self._database().cursor()
        try:
            yield ws
        finally:
            ws.close()

    def close(self) -> None:
        # the ingest writer first: it answers what is queued, then stops (no thread left
        # holding a cursor on a closed database)
        for extra in list(self.extras.values()):
            stop = getattr(extra, "close", None)
            if callable(stop):
                stop()
        with self._open_lock:
            if self._base is not None:
                self._base.close()
                self._base = None

    # -- settings ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path | None:
        p = self.folder / "signalloop.toml"
        return p if p.is_file() else None

    def settings(self) -> Settings:
        """``signalloop.toml`` beside the database (re-read when it changes), else defaults."""
        p = self.config_path
        if p is None:
            return Settings()
        mtime = p.stat().st_mtime
        if self._settings is None or self._settings[0] != mtime:
            self._settings = (mtime, load_settings(p))
        return self._settings[1]

    def _ingest_inbox(self, ws: Workspace, settings: Settings) -> None:
        """The run's inbox, ingested under the ingest lock (the run is then told: no inbox)."""
        from signalloop.run import ingest_inbox

        if settings.run.inbox:
            with self.ingest_lock:
                ingest_inbox(ws, Path(settings.run.inbox), settings, lambda label, f: None)

    # -- keys -------------------------------------------------------------------------------
    def key(self, key_id: str) -> StoredKey | None:
        """The stored key ``key_id`` (cached for :data:`KEY_CACHE_SECONDS`; re-read on a miss)."""
        now = time.monotonic()
        age = now - self._keys_at
        # a miss re-reads the table (a key just created), but at most once a second, so a
        # stream of made-up key ids cannot turn every request into a query
        if age > KEY_CACHE_SECONDS or (key_id not in self._keys and age > 1.0):
            with self.open() as ws:
                self._keys = stored_keys(ws)
            self._keys_at = now
        return self._keys.get(key_id)

    def touch(self, key_id: str) -> None:
        """Record that a key was used, at most once a minute (never fails a request)."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        self._touched[key_id] = now
        try:
            with self.open() as ws:
                touch(ws, key_id, datetime.now(UTC).replace(tzinfo=None))
        except Exception:  # a write conflict with a running job: the next use records it
            self._touched.pop(key_id, None)


class Registry:
    """The served workspaces by name, and the server's session secret."""

    def __init__(self, handles: dict[str, WorkspaceHandle], secret: bytes, root: Path) -> None:
        if not handles:
            raise UsageError(f"no workspace to serve under {root}")
        self.handles = handles
        self.secret = secret
        self.root = root

    @classmethod
    def discover(
        cls, *, db: str | Path | None = None, workspaces: str | Path | None = None
    ) -> Registry:
        """One workspace (``db``: a ``.duckdb`` file or a folder holding one) or a folder of them.

        Raises :class:`~signalloop.errors.UsageError` naming what was looked for.
        """
        handles: dict[str, WorkspaceHandle] = {}
        if workspaces is not None:
            root = Path(workspaces).expanduser().resolve()
            if not root.is_dir():
                raise UsageError(f"--workspaces {workspaces}: not a folder")
            for sub in sorted(p for p in root.iterdir() if p.is_dir()):
                found = _db_in(sub)
                if found is not None and _NAME.match(sub.name):
                    handles[sub.name] = WorkspaceHandle(sub.name, found)
            if not handles:
                raise UsageError(
                    f"--workspaces {workspaces}: no sub-folder holds a {DEFAULT_DB} "
                    "(one folder per workspace, e.g. DIR/acme/signalloop.duckdb)"
                )
        else:
            p = Path(db if db is not None else DEFAULT_DB).expanduser().resolve()
            found = _db_in(p) if p.is_dir() else (p if p.is_file() else None)
            if found is None:
                raise UsageError(
                    f"no workspace at {p}: pass --db FILE.duckdb (or a folder holding "
                    f"{DEFAULT_DB}), or --workspaces DIR; `signalloop demo` makes one"
                )
            root = found.parent
            name = root.name if _NAME.match(root.name) else "default"
            handles[name] = WorkspaceHandle(name, found)
        return cls(handles, _secret(root), root)

    def get(self, name: str) -> WorkspaceHandle:
        """The workspace ``name``; ``KeyError`` when it is not served."""
        return self.handles[name]

    def names(self) -> list[str]:
        return sorted(self.handles)

    def find_key(self, key_id: str) -> tuple[WorkspaceHandle, StoredKey] | None:
        """The workspace a key id belongs to, with its stored key."""
        for h in self.handles.values():
            k = h.key(key_id)
            if k is not None:
                return h, k
        return None

    def close(self) -> None:
        for h in self.handles.values():
            h.runs.join(timeout=CLOSE_WAIT)
            if h.runs.state()["running"]:
                # closing DuckDB under a running query can crash the process: leave it to the
                # process exit; the run's row is closed as interrupted at the next start
                log.warning("workspace %s: a run is still going; not closing its database", h.name)
                continue
            h.close()


def _secret(root: Path) -> bytes:
    """The session-signing secret kept beside the workspaces (so a restart keeps logins)."""
    p = root / SECRET_FILE
    try:
        if p.is_file():
            return bytes.fromhex(p.read_text().strip())
        value = secrets.token_bytes(32)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value.hex())
        return value
    except (OSError, ValueError):  # read-only folder: logins last as long as the process
        return secrets.token_bytes(32)
