"""The workspace: one DuckDB file holding every kind, the quarantine and the ingest log.

Reads and heavy computation go through :attr:`Workspace.ibis`, an ibis backend on the same
DuckDB connection, so the same expressions can later run on Spark or a warehouse. Raw SQL is
kept to the loader (:mod:`signalloop.ingest`) and to schema management here.

>>> ws = Workspace(":memory:")
>>> sorted(ws.counts())[:3]
['changes', 'conversions', 'crm']
>>> ws.table("spend").count().execute()
0
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import ibis

from signalloop.contract import EXTRA_COLUMNS, KINDS, Kind
from signalloop.errors import InputError, UsageError
from signalloop.readers import quote_ident

SCHEMA_VERSION = 1
DEFAULT_DB = "signalloop.duckdb"
ENV_DB = "SIGNALLOOP_DB"

#: Tables besides the five kinds.
QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id BIGINT, kind VARCHAR, file VARCHAR, line BIGINT, "column" VARCHAR,
    code VARCHAR, reason VARCHAR, problems VARCHAR[], raw JSON
)"""
DUPLICATES_DDL = """
CREATE TABLE IF NOT EXISTS duplicates (
    ingest_id BIGINT, kind VARCHAR, file VARCHAR, key VARCHAR, campaign_id VARCHAR,
    first_line BIGINT, copies BIGINT
)"""
INGEST_LOG_DDL = """
CREATE TABLE IF NOT EXISTS ingest_log (
    ingest_id BIGINT PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP,
    kind VARCHAR, file VARCHAR, sha256 VARCHAR, size_bytes BIGINT, fingerprint VARCHAR,
    profile VARCHAR, status VARCHAR, rows_read BIGINT, rows_loaded BIGINT,
    rows_quarantined BIGINT, rows_existing BIGINT, rows_folded BIGINT, message VARCHAR
)"""
META_DDL = "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
ENV_MEMORY_LIMIT = "SIGNALLOOP_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "4GB"


def memory_limit() -> str:
    """DuckDB's memory limit for a workspace: ``$SIGNALLOOP_MEMORY_LIMIT``, else 4GB.

    Past it DuckDB spills to a temporary folder beside the workspace file instead of growing
    (its own default is 80% of the machine's memory: a 12 GB export held in temporary tables
    while it is validated took 19 GB). Any DuckDB size works (``8GB``, ``512MB``).
    """
    return os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT


def resolve_db_path(db: str | Path | None = None) -> str:
    """Where the workspace lives: ``db``, else ``$SIGNALLOOP_DB``, else ``./signalloop.duckdb``.

    >>> resolve_db_path("x.duckdb")
    'x.duckdb'
    """
    if db is not None and str(db) != "":
        return str(db)
    env = os.environ.get(ENV_DB)
    if env:
        return env
    return DEFAULT_DB


def duckdb_path(db: str) -> str:
    """The DuckDB file a workspace URL names: ``duckdb:///abs/path`` and ``duckdb://rel/path``
    are the paths after ``duckdb://`` (``duckdb://`` alone is ``:memory:``); anything else is
    taken as it is (see :mod:`signalloop.backends` for ``postgres://`` and ``pyspark://``).

    >>> duckdb_path("duckdb:///tmp/x.duckdb"), duckdb_path("x.duckdb"), duckdb_path("duckdb://")
    ('/tmp/x.duckdb', 'x.duckdb', ':memory:')
    """
    if db.lower().startswith("duckdb://"):
        return db[len("duckdb://") :] or ":memory:"
    return db


#: Id columns of (nearly) one value per row, which joins look up across the whole history,
#: stored uncompressed. DuckDB would compress them with FSST, which each such join decodes
#: row by row: at 1,000 campaigns (32M touchpoints over 89 days) a semi-join of the history
#: on a day's users and click ids takes 1.2 s instead of 2.1-3.7 s and the ingest's
#: anti-join on touch ids 0.37 s instead of 0.7 s; the next day runs about 2.4 s faster, for
#: a workspace 26% larger and 0.8 GiB more of DuckDB's cache in use (``BENCHMARKS.md``,
#: "History"). A workspace made before keeps its compression until ``signalloop compact``
#: rewrites it (:mod:`signalloop.compact`).
PLAIN_IDS: dict[str, tuple[str, ...]] = {
    "touchpoints": ("touch_id", "user_id", "click_id"),
    "conversions": ("conversion_id", "user_id", "click_id"),
}


def kind_ddl(kind: Kind) -> str:
    """``CREATE TABLE`` statement for one kind: contract columns, kept attributes, provenance.

    >>> print(kind_ddl(KINDS["touchpoints"]).splitlines()[1])
        "touch_id" VARCHAR USING COMPRESSION uncompressed,
    """
    plain = PLAIN_IDS.get(kind.name, ())
    cols = [
        f'"{c.name}" {c.sql_type}' + (" USING COMPRESSION uncompressed" if c.name in plain else "")
        for c in kind.columns
    ]
    cols += [f'"{name}" {sql_type}' for name, sql_type in EXTRA_COLUMNS]
    return f'CREATE TABLE IF NOT EXISTS "{kind.name}" (\n    ' + ",\n    ".join(cols) + "\n)"


class Workspace:
    """A signalloop workspace: one DuckDB database.

    Parameters
    ----------
    db
        Path of the DuckDB file, or ``":memory:"``. ``None`` resolves through
        :func:`resolve_db_path`.
    read_only
        Open without write access (several readers may share the file).
    """

    #: Where the tables live: ``duckdb`` here; ``postgres`` or ``pyspark`` on a
    #: :class:`~signalloop.backends.BackendWorkspace`.
    backend = "duckdb"

    def __new__(cls, db: str | Path | None = None, *, read_only: bool = False) -> Workspace:
        """A ``postgres://`` or ``pyspark://`` URL opens a
        :class:`~signalloop.backends.BackendWorkspace`; anything else this class."""
        if cls is Workspace:
            from signalloop import backends

            url = resolve_db_path(db)
            if backends.parse_url(url).backend != "duckdb":  # a bad URL is a UsageError
                return object.__new__(backends.BackendWorkspace)
        return object.__new__(cls)

    def __init__(self, db: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = duckdb_path(resolve_db_path(db))
        self.read_only = read_only
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise UsageError(
                    f"workspace {self.path}: folder {parent} does not exist; create it or pass --db"
                )
            if read_only and not Path(self.path).exists():
                raise UsageError(
                    f"workspace {self.path} does not exist yet: ingest something first "
                    "(signalloop ingest KIND FILE) or pass --db"
                )
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                pid = re.search(r"PID (\d+)", str(exc))
                raise UsageError(
                    f"workspace {self.path} is open in another process"
                    + (f" (PID {pid.group(1)}, e.g. signalloop serve)" if pid else "")
                    + ": DuckDB lets one process write a file; stop it, or do this through "
                    "that process (the web app's pages and ingest API)"
                ) from None
            raise InputError(f"cannot open as a DuckDB workspace: {exc}", file=self.path) from exc
        self.con.execute("SET TimeZone = 'UTC'")
        try:
            self.con.execute("SET memory_limit = ?", [memory_limit()])
        except duckdb.Error as exc:
            raise UsageError(
                f"${ENV_MEMORY_LIMIT}={memory_limit()!r} is not a memory size DuckDB takes "
                f"(such as 4GB or 512MB): {exc}"
            ) from None
        #: DuckDB connection of signalloop's own records (runs, run history): the workspace's
        #: own here; a local file on a :class:`~signalloop.backends.BackendWorkspace`
        self.records: Any = self.con
        #: The file that names the workspace's local folders (``<stem>.models``, ``.runs``)
        self.local_path: str = self.path
        if not read_only:
            self._ensure_schema()

    # -- schema -----------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        statements = [kind_ddl(k) for k in KINDS.values()]
        statements += [QUARANTINE_DDL, DUPLICATES_DDL, INGEST_LOG_DDL, META_DDL]
        for sql in statements:
            self.con.execute(sql)
        self.con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
            [str(SCHEMA_VERSION)],
        )
        found = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None or int(found[0]) != SCHEMA_VERSION:
            raise UsageError(
                f"workspace {self.path} has schema version {found[0] if found else '?'}, "
                f"this signalloop expects {SCHEMA_VERSION}"
            )

    # -- reading ----------------------------------------------------------------------------
    @cached_property
    def ibis(self) -> Any:
        """An ibis DuckDB backend sharing this workspace's connection (its plain-scan CTEs are
        inlined: :func:`inline_scans`)."""
        backend = ibis.duckdb.from_connection(self.con)
        backend.compiler = _inlining(type(backend.compiler))()
        return backend

    def temp_table(self, name: str, expr: Any) -> Any:
        """``expr`` into the temporary table ``name`` (replacing one of that name), and that
        table. On DuckDB one ``CREATE TABLE AS``: ibis's ``create_table`` creates, inserts,
        then copies a replaced table once more."""
        if self.backend != "duckdb":
            return self.ibis.create_table(name, expr, temp=True, overwrite=True)
        sql = self.ibis.compile(expr)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {quote_ident(name)} AS {sql}")
        return self.ibis.table(name)

    def table(self, name: str) -> Any:
        """The ibis table expression for ``name`` (a kind, ``quarantine``, ``ingest_log`` ...)."""
        return self.ibis.table(name)

    def has_table(self, name: str) -> bool:
        """Whether the database holds a (non-temporary) table ``name``."""
        row = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [name]
        ).fetchone()
        return bool(row and row[0])

    def read_meta(self, key: str) -> dict[str, Any]:
        """The JSON document stored under ``key`` in ``meta`` (``{}`` when there is none)."""
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        found: dict[str, Any] = json.loads(row[0]) if row else {}
        return found

    def write_meta(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` as JSON under ``key`` in ``meta``."""
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, json.dumps(value)])

    def ingest_state(self, kind: str) -> list[int]:
        """``[rows, highest _ingest_id]`` of ``kind`` (``-1`` when none): what a store kept
        current from it (:mod:`signalloop.rollups`, the stored attribution) last saw."""
        row = self.con.execute(
            f"SELECT count(*), coalesce(max(_ingest_id), -1) FROM {kind}"
        ).fetchone()
        return [int(row[0]), int(row[1])] if row else [0, -1]

    def appended_since(self, kind: str, seen: list[int]) -> bool:
        """Whether every row of ``kind`` since ``seen`` (an :meth:`ingest_state`) came by a
        later ingest and none went away: what lets a store refresh incrementally."""
        n0, hi0 = seen
        row = self.con.execute(
            f"SELECT count(*) FROM {kind} WHERE _ingest_id > ?", [hi0]
        ).fetchone()
        return row is not None and n0 + int(row[0]) == self.ingest_state(kind)[0]

    def counts(self) -> dict[str, int]:
        """Row counts per kind, computed with ibis."""
        return {name: int(self.table(name).count().execute()) for name in KINDS}

    # -- lifecycle --------------------------------------------------------------------------
    def cursor(self) -> Workspace:
        """Another handle on the same open database, for another thread (``con.cursor()``).

        DuckDB lets one process open a file once; threads (the web server's requests, its
        daily run) each take a cursor, with their own transactions and temporary tables.

        >>> ws = Workspace(":memory:")
        >>> with ws.cursor() as other:
        ...     other.table("spend").count().execute()
        0
        """
        other = object.__new__(Workspace)
        other.path, other.read_only = self.path, self.read_only
        other.con = self.con.cursor()
        other.con.execute("SET TimeZone = 'UTC'")
        other.records, other.local_path = other.con, self.local_path
        return other

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: all of it lands, or none of it."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")


# -- compiled SQL ---------------------------------------------------------------------------


def _plain_scan(select: Any) -> bool:
    """Whether a CTE body only reads one table or CTE, filtered and projected: no join,
    grouping, aggregate, window, DISTINCT, ORDER, LIMIT, subquery or random function."""
    import sqlglot.expressions as sge

    if not isinstance(select, sge.Select):
        return False
    if any(select.args.get(k) for k in ("joins", "group", "distinct", "order", "limit", "having")):
        return False
    source = select.args.get("from_") or select.args.get("from")
    if source is None or not isinstance(source.this, sge.Table):
        return False
    body = [select.args.get("expressions") or [], [select.args.get("where")]]
    banned = (sge.AggFunc, sge.Window, sge.Select, sge.Subquery, sge.Rand)
    for node in (n for part in body for e in part if e is not None for n in e.walk()):
        if isinstance(node, banned):
            return False
        if isinstance(node, sge.Anonymous) and str(node.name).lower() in ("random", "uuid"):
            return False
    return True


def inline_scans(tree: Any) -> Any:
    """Mark every plain-scan CTE of a compiled query ``NOT MATERIALIZED`` (in place).

    DuckDB materialises a CTE that a query reads more than once. ibis names a filtered table
    as a CTE whenever an expression reuses it (the clicks of the touchpoints, say), so a
    query over 30 million touchpoints first copied them all to scan the copy twice; inlined,
    each read pushes its own filters and columns into the table scan (the lens's labels at
    1,000 campaigns: 15 -> 8 s). A plain scan (:func:`_plain_scan`) gives the same rows each
    time it is read, so the results are the same; CTEs that aggregate, join or window stay
    materialised, computed once.

    >>> import sqlglot
    >>> q = sqlglot.parse_one(
    ...     "WITH c AS (SELECT a FROM t WHERE a > 1), g AS (SELECT a, count(*) AS n FROM c "
    ...     "GROUP BY a) SELECT * FROM c JOIN g USING (a)", read="duckdb")
    >>> print(inline_scans(q).sql("duckdb"))  # doctest: +NORMALIZE_WHITESPACE
    WITH c AS NOT MATERIALIZED (SELECT a FROM t WHERE a > 1), g AS (SELECT a, COUNT(*) AS n
    FROM c GROUP BY a) SELECT * FROM c JOIN g USING (a)
    """
    import sqlglot.expressions as sge

    for cte in tree.find_all(sge.CTE):
        if _plain_scan(cte.this):
            cte.set("materialized", False)
    return tree


def _inlining(base: type) -> type:
    """A subclass of the ibis compiler ``base`` whose queries get :func:`inline_scans`."""

    class Inlining(base):  # type: ignore[misc, valid-type]
        def to_sqlglot(self, expr: Any, **kwargs: Any) -> Any:
            return inline_scans(super().to_sqlglot(expr, **kwargs))

    return Inlining
