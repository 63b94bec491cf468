"""Workspaces on PostgreSQL or PySpark, chosen by a URL (``--db``).

``--db`` takes a plain path or ``duckdb:///path`` (the embedded DuckDB file, as always),
``postgres://USER@HOST:PORT/DATABASE`` (a PostgreSQL server; the password from the URL or
``$PGPASSWORD``, never printed: every message shows the URL masked) or ``pyspark://local``
(a local Spark session; its warehouse folder from ``?warehouse=DIR``, else
``$SIGNALLOOP_SPARK_WAREHOUSE``, else ``./signalloop-warehouse``).

On such a backend the kinds' tables, the quarantine, the duplicates, the ingest log and the
exclusions live there, and the analysis reads them through the same ibis expressions as on
DuckDB (:attr:`BackendWorkspace.ibis`). Ingest stays DuckDB's: a file is validated and
quarantined in an in-memory DuckDB workspace (:func:`signalloop.ingest.ingest_file`, so the
rules are the same to the letter), and its new good rows, anti-joined on the kind's natural key,
are appended to the backend's table (:func:`ingest_file`); to Spark they go as a Parquet file
that DuckDB writes and Spark reads, so a file of tens of millions of rows never passes through
Python. Raw SQL on ``ws.con`` is DuckDB's alone: a backend workspace answers it with a
:class:`~signalloop.errors.UsageError` naming the backend.

>>> parse_url("postgres://ana:s3cret@db.example:5433/marketing").masked
'postgres://ana:***@db.example:5433/marketing'
>>> parse_url("duckdb:///tmp/ws.duckdb").path
'/tmp/ws.duckdb'
>>> parse_url("pyspark://local?warehouse=/tmp/wh").warehouse
'/tmp/wh'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

import ibis
import pyarrow as pa

from signalloop.errors import UsageError
from signalloop.store import SCHEMA_VERSION, Workspace, resolve_db_path

#: The backends a workspace URL may name.
BACKENDS = ("duckdb", "postgres", "pyspark")
#: URL schemes of the backends other than DuckDB.
REMOTE_SCHEMES = {"postgres": "postgres", "postgresql": "postgres", "pyspark": "pyspark"}
ENV_WAREHOUSE = "SIGNALLOOP_SPARK_WAREHOUSE"
DEFAULT_WAREHOUSE = "signalloop-warehouse"
#: The local Spark driver's memory (its JVM heap, which in local mode does all the work):
#: ``$SIGNALLOOP_SPARK_MEMORY`` (``8g``, ``16g``), else a quarter of the machine's memory between
#: 1 and 8 GiB. Spark's own default, 1 GiB, spills a 1,000-campaign account's joins to disk.
ENV_SPARK_MEMORY = "SIGNALLOOP_SPARK_MEMORY"
ENV_STATE_DIR = "SIGNALLOOP_STATE_DIR"
DEFAULT_STATE_DIR = "signalloop-state"
#: The exclusions table (as :data:`signalloop.checks.engine.EXCLUSIONS_DDL` makes it).
EXCLUSIONS_SCHEMA = ibis.schema(
    {
        "campaign_id": "string",
        "start": "date",
        "end": "date",
        "reason": "string",
        "source": "string",
        "as_of": "date",
        "created_at": "timestamp",
    }
)
_EXPECTED = (
    "a path, duckdb:///PATH, postgres://USER@HOST:PORT/DATABASE or pyspark://local[?warehouse=DIR]"
)


@dataclass(frozen=True)
class BackendURL:
    """A parsed workspace URL.

    Attributes
    ----------
    backend
        ``duckdb``, ``postgres`` or ``pyspark``.
    path
        DuckDB: the file (or ``:memory:``).
    host, port, user, password, database
        PostgreSQL: where to connect; ``password`` from the URL, else ``$PGPASSWORD``.
    warehouse
        PySpark: the folder holding the tables.
    """

    backend: str
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str | None = None
    password: str | None = None
    database: str = ""
    warehouse: str = ""

    @property
    def masked(self) -> str:
        """The URL to show: the password replaced by ``***``.

        >>> parse_url("postgres://u:pw@h/db").masked
        'postgres://u:***@h:5432/db'
        """
        if self.backend == "duckdb":
            return self.path
        if self.backend == "pyspark":
            return f"pyspark://local?warehouse={self.warehouse}"
        who = quote(self.user or "", safe="")
        if self.password is not None:  # from the URL or $PGPASSWORD: only that there is one
            who += ":***"
        at = f"{who}@" if who else ""
        return f"postgres://{at}{self.host}:{self.port}/{self.database}"

    def __repr__(self) -> str:  # never the password, even in a traceback
        return f"BackendURL({self.masked!r})"


def mask(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``.

    >>> mask("password 'hunter2' refused", "hunter2")
    "password '***' refused"
    """
    return text.replace(secret, "***") if secret else text


def is_remote(db: str | Path | None) -> bool:
    """Whether ``db`` names a PostgreSQL or PySpark workspace (not a DuckDB file).

    >>> is_remote("postgres://u@h/db"), is_remote("ws.duckdb"), is_remote("duckdb:///x")
    (True, False, False)
    """
    if db is None:
        return False
    scheme, sep, _ = str(db).partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def parse_url(db: str | Path) -> BackendURL:
    """Parse a workspace URL; :class:`~signalloop.errors.UsageError` when it is none.

    >>> parse_url("ws.duckdb").backend, parse_url("duckdb://:memory:").path
    ('duckdb', ':memory:')
    >>> parse_url("mysql://h/db")
    Traceback (most recent call last):
    ...
    signalloop.errors.UsageError: --db: expected a path, duckdb:///PATH, \
postgres://USER@HOST:PORT/DATABASE or pyspark://local[?warehouse=DIR], got mysql://h/db
    """
    text = str(db)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return BackendURL("duckdb", path=text)
    scheme = scheme.lower()
    if scheme == "duckdb":
        return BackendURL("duckdb", path=rest or ":memory:")
    if scheme not in REMOTE_SCHEMES:
        raise UsageError(f"--db: expected {_EXPECTED}, got {_masked_text(text)}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--db: expected {_EXPECTED}, got {_masked_text(text)} ({exc})") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if REMOTE_SCHEMES[scheme] == "pyspark":
        if parts.hostname != "local" or parts.path not in ("", "/") or set(query) - {"warehouse"}:
            raise UsageError(
                f"--db: expected pyspark://local[?warehouse=DIR], got {_masked_text(text)}"
            )
        warehouse = query.get("warehouse") or os.environ.get(ENV_WAREHOUSE) or DEFAULT_WAREHOUSE
        return BackendURL("pyspark", warehouse=str(Path(warehouse).expanduser().resolve()))
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database or query:
        raise UsageError(
            f"--db: expected postgres://USER@HOST:PORT/DATABASE, got {_masked_text(text)}"
        )
    password = unquote(parts.password) if parts.password is not None else None
    return BackendURL(
        "postgres",
        host=parts.hostname,
        port=port or 5432,
        user=unquote(parts.username) if parts.username else os.environ.get("PGUSER"),
        password=password if password is not None else os.environ.get("PGPASSWORD"),
        database=database,
    )


def _masked_text(text: str) -> str:
    """A URL as given, its password (``user:PASSWORD@``) masked even when it does not parse.

    >>> _masked_text("postgres://u:pw@h:x/db")
    'postgres://u:***@h:x/db'
    """
    scheme, _, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


#: ibis 12 compiles ``arbitrary()`` and ``first()`` on PostgreSQL as ``first(...)``, an
#: aggregate PostgreSQL 15 does not have (16 has ``any_value``): the usual definition.
_PG_FIRST = """
DO $$ BEGIN
  IF to_regprocedure('first(anyelement)') IS NULL THEN
    CREATE FUNCTION _signalloop_first(anyelement, anyelement) RETURNS anyelement
      LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $1';
    CREATE AGGREGATE first(anyelement) (
      SFUNC = _signalloop_first, STYPE = anyelement, PARALLEL = SAFE);
  END IF;
END $$"""


class _NoRawSQL:
    """Stands for ``ws.con`` on a backend workspace: raw DuckDB SQL is refused by name."""

    def __init__(self, where: str, backend: str) -> None:
        self._where, self._backend = where, backend

    def __getattr__(self, name: str) -> Any:
        raise UsageError(
            f"workspace {self._where} is on {self._backend}: this step runs DuckDB SQL "
            f"(con.{name}) and is not available there yet; use a DuckDB workspace for it"
        )


@cache
def _duckdb_schemas() -> dict[str, Any]:
    """The ibis schema of every table a fresh DuckDB workspace has (the contract's tables)."""
    with Workspace(":memory:") as ws:
        return {name: ws.table(name).schema() for name in ws.ibis.list_tables()}


class BackendWorkspace(Workspace):
    """A workspace whose tables live on PostgreSQL or PySpark.

    :class:`~signalloop.store.Workspace` opens one of these for a ``postgres://`` or
    ``pyspark://`` URL, so ``Workspace(url)`` is all a caller writes. :meth:`table`,
    :attr:`ibis` and :meth:`counts` work as on DuckDB; ``con`` (raw DuckDB SQL),
    :meth:`transaction` and :meth:`cursor` raise :class:`~signalloop.errors.UsageError`.

    Parameters
    ----------
    db
        The URL (``None``: ``$SIGNALLOOP_DB``).
    read_only
        Do not create the tables (a reader of a workspace someone else writes).
    """

    def __init__(self, db: str | Path | None = None, *, read_only: bool = False) -> None:
        self.url = parse_url(resolve_db_path(db))
        if self.url.backend == "duckdb":
            raise UsageError(f"--db {self.url.path}: a DuckDB file opens as Workspace(path)")
        self.backend = self.url.backend
        self.path = self.url.masked
        self.read_only = read_only
        self.con = cast(Any, _NoRawSQL(self.path, self.backend))
        self.local_path = str(local_records_path(self.url))
        self._records: Any = None
        self._client = _connect(self.url)
        if self.backend == "pyspark":
            _register_warehouse(self._client, self.url.warehouse)
        if not read_only:
            self._ensure_schema()

    @property  # type: ignore[override]
    def records(self) -> Any:
        """The local DuckDB connection of signalloop's own records, opened on first use (a
        reader that never needs them leaves the file free for the process that writes it)."""
        if self._records is None:
            self._records = _open_records(self.local_path, self.read_only)
        return self._records

    @records.setter
    def records(self, con: Any) -> None:
        self._records = con

    @cached_property
    def ibis(self) -> Any:
        """The ibis backend (PostgreSQL or PySpark) holding this workspace's tables."""
        return self._client

    def _ensure_schema(self) -> None:
        if self.backend == "postgres":
            self._client.raw_sql(_PG_FIRST).close()
        have = set(self._client.list_tables())
        for name, schema in _duckdb_schemas().items():
            if name not in have:
                self._client.create_table(name, schema=_portable(schema, self.backend))
        meta = self.table("meta")
        found = meta.filter(meta.key == "schema_version").value.to_pyarrow().to_pylist()
        if not found:
            self._client.insert(
                "meta", ibis.memtable({"key": ["schema_version"], "value": [str(SCHEMA_VERSION)]})
            )
        elif int(found[0]) != SCHEMA_VERSION:
            raise UsageError(
                f"workspace {self.path} has schema version {found[0]}, "
                f"this signalloop expects {SCHEMA_VERSION}"
            )

    def cursor(self) -> Workspace:
        raise UsageError(f"workspace {self.path} is on {self.backend}: no DuckDB cursor there")

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        raise UsageError(
            f"workspace {self.path} is on {self.backend}: DuckDB transactions are not available"
        )
        yield  # pragma: no cover

    def close(self) -> None:
        """Disconnect from PostgreSQL; a Spark session stays up for the process's next use."""
        if self._records is not None:
            self._records.close()
        if self.backend == "postgres":
            self._client.disconnect()


def local_records_path(url: BackendURL) -> Path:
    """The local DuckDB file of a backend workspace's own records, which names its folders.

    The data stays on the backend; what signalloop itself keeps (the runs and their reports,
    the signal history, the fitted models: ``<stem>.runs``, ``<stem>.models``) lives on the
    machine that runs it, as beside a DuckDB file: in ``$SIGNALLOOP_STATE_DIR`` (default
    ``./signalloop-state``) as ``postgres-HOST-PORT-DATABASE.duckdb``, or in the Spark
    warehouse as ``signalloop.duckdb``.

    >>> local_records_path(parse_url("postgres://ana@db.example:5433/marketing")).name
    'postgres-db.example-5433-marketing.duckdb'
    """
    if url.backend == "pyspark":
        return Path(url.warehouse) / "signalloop.duckdb"
    folder = Path(os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)
    return folder / f"postgres-{url.host}-{url.port}-{url.database}.duckdb"


def local_path(db: str | Path | None) -> str:
    """The file that names a workspace's local folders: the DuckDB file itself, or a
    backend's :func:`local_records_path` (``db`` as ``--db`` takes it)."""
    url = parse_url(resolve_db_path(db))
    return url.path if url.backend == "duckdb" else str(local_records_path(url))


def _open_records(path: str, read_only: bool) -> Any:
    """The records' DuckDB connection (created, with its folder, unless ``read_only``)."""
    import duckdb

    if read_only and not Path(path).exists():
        con = duckdb.connect(":memory:")
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            raise UsageError(
                f"cannot open the workspace's local records {path} (another process may be "
                f"writing them, e.g. signalloop serve or run): {exc}"
            ) from None
    con.execute("SET TimeZone = 'UTC'")
    return con


def _portable(schema: Any, backend: str) -> Any:
    """``schema`` as the backend can store it: JSON as text on Spark, no NOT NULL there."""
    if backend != "pyspark":
        return schema
    return ibis.schema(
        {
            name: ("string" if dtype.is_json() else dtype.copy(nullable=True))
            for name, dtype in schema.items()
        }
    )


def _connect(url: BackendURL) -> Any:
    """An ibis backend for ``url``; :class:`UsageError` (masked) when it cannot be reached."""
    if url.backend == "postgres":
        try:
            import psycopg
        except ImportError:
            raise UsageError(
                f"--db {url.masked}: PostgreSQL needs the postgres extra "
                "(pip install 'signalloop[postgres]')"
            ) from None
        try:
            return ibis.postgres.connect(
                host=url.host,
                port=url.port,
                user=url.user,
                password=url.password,
                database=url.database,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            raise UsageError(
                f"--db {url.masked}: expected a reachable PostgreSQL server, got: "
                + mask(str(exc).strip(), url.password)
            ) from None
    return _spark_backend().connect(spark_session(url.warehouse))


@cache
def _spark_backend() -> Any:
    """ibis's PySpark backend, its scalar results null as on DuckDB.

    ibis 12 executes on PySpark through pandas, so a null scalar (the sum of no rows) comes
    back as ``NaN`` where DuckDB and PostgreSQL give ``None``; ``int(x or 0)`` then fails.
    """
    import math

    from ibis.backends.pyspark import Backend

    ibis.pyspark  # noqa: B018 - loading it via ibis registers ibis.options.pyspark

    class SparkBackend(Backend):  # type: ignore[misc]
        def _register_in_memory_table(self, op: Any) -> None:
            """In-memory rows (what ingest appends) go to Spark as Arrow: ibis 12 passes them
            through pandas, whose missing strings Spark then stores as the text ``'NaN'``."""
            from ibis.backends.pyspark.datatypes import PySparkSchema

            table = op.data.to_pyarrow(op.schema)
            df = self._session.createDataFrame(table, schema=PySparkSchema.from_ibis(op.schema))
            df.createOrReplaceTempView(op.name)

        def execute(self, expr: Any, /, **kwargs: Any) -> Any:
            value = super().execute(expr, **kwargs)
            if isinstance(value, float) and math.isnan(value):
                return expr.to_pyarrow(**kwargs).as_py()  # None, or a real NaN
            return value

    return SparkBackend()


def spark_session(warehouse: str) -> Any:
    """The process's local Spark session (made once, on both cores), tables under
    ``warehouse``; times in UTC, the driver bound to the loopback address."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise UsageError(
            "--db pyspark://local: expected Java 17 (java on PATH or $JAVA_HOME), got none"
        )
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError(
            "--db pyspark://local: PySpark needs the pyspark extra "
            "(pip install 'signalloop[pyspark]')"
        ) from None
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    if active is not None:
        have = active.conf.get("spark.sql.warehouse.dir")
        if have is None or Path(have.removeprefix("file:")).resolve() != Path(warehouse):
            raise UsageError(
                f"--db pyspark://local?warehouse={warehouse}: this process's Spark session "
                f"already uses the warehouse {have}"
            )
        return active
    Path(warehouse).mkdir(parents=True, exist_ok=True)
    builder = cast(Any, SparkSession.builder)
    session = (
        builder.master("local[2]")
        .appName("signalloop")
        .config("spark.sql.warehouse.dir", warehouse)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", spark_memory())
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.legacy.createHiveTableByDefault", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_memory() -> str:
    """The local Spark driver's memory: ``$SIGNALLOOP_SPARK_MEMORY``, else a quarter of this
    machine's memory, between 1 and 8 GiB, in Spark's notation (``6144m`` on 24 GiB). It is
    read when the session starts, so it holds for the process's first Spark workspace.
    """
    given = os.environ.get(ENV_SPARK_MEMORY)
    if given:
        return given
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: Spark's floor of 1 GiB
        total = 4 * 1024**3
    return f"{min(max(total // 4, 1024**3), 8 * 1024**3) // 1024**2}m"


def _register_warehouse(client: Any, warehouse: str) -> None:
    """Make the tables an earlier process left in ``warehouse`` known to this session (a local
    session's catalogue lives in memory; the tables' Parquet folders stay).

    A table that never got a row (an empty quarantine, say) has a folder with no Parquet file
    to read a schema from: a workspace table gets its own schema; any other such folder is
    left alone.
    """
    from ibis.backends.pyspark.datatypes import PySparkSchema

    have = set(client.list_tables())
    schemas = _duckdb_schemas()
    for folder in sorted(Path(warehouse).iterdir()):
        name = folder.name
        if not (folder.is_dir() and name.isidentifier() and name not in have):
            continue
        options: dict[str, Any] = {}
        if not any(folder.glob("*.parquet")):
            if name not in schemas:
                continue
            options["schema"] = PySparkSchema.from_ibis(_portable(schemas[name], "pyspark"))
        client._session.catalog.createTable(name, path=str(folder), source="parquet", **options)


# -- ingest -------------------------------------------------------------------------------------


def ingest_file(ws: Workspace, kind: str, path: str | Path, **options: Any) -> Any:
    """Ingest one file into ``ws``, whatever its backend; returns an
    :class:`~signalloop.ingest.IngestResult`.

    On DuckDB this is :func:`signalloop.ingest.ingest_file`. On a backend the file goes
    through that same function on an in-memory DuckDB staging workspace (reading, mapping,
    validation, quarantine, folding of copies), then this ingest's quarantine, duplicates and
    log rows, and its good rows whose natural key the backend's table does not hold yet, are
    appended there under the backend's next ingest id. A file already ingested the same way
    (its fingerprint in the backend's log) is skipped, as on DuckDB.
    """
    from signalloop import ingest

    if not isinstance(ws, BackendWorkspace):
        return ingest.ingest_file(ws, kind, path, **options)
    client = ws.ibis
    log_t = ws.table("ingest_log")
    next_id = int(log_t.ingest_id.max().fill_null(0).execute()) + 1
    with Workspace(":memory:") as stage:
        try:
            result = ingest.ingest_file(stage, kind, path, **options)
        except Exception:
            _copy_rows(stage, client, "ingest_log", next_id, "ingest_id")
            raise
        staged_log = stage.table("ingest_log").to_pyarrow().to_pylist()[0]
        seen = (
            log_t.filter((log_t.fingerprint == staged_log["fingerprint"]) & (log_t.status == "ok"))
            .order_by("ingest_id")
            .limit(1)
            .select("ingest_id", "started_at")
            .to_pyarrow()
            .to_pylist()
        )
        if seen:
            result.status, result.ingest_id = "skipped", int(seen[0]["ingest_id"])
            result.rows_read = result.rows_loaded = result.rows_quarantined = 0
            result.rows_existing = result.rows_folded = 0
            result.quarantine_reasons = {}
            result.message = (
                f"already ingested as #{seen[0]['ingest_id']} on "
                f"{seen[0]['started_at']:%Y-%m-%d %H:%M}; nothing added"
            )
            return result
        _copy_rows(stage, client, "quarantine", next_id, "ingest_id")
        _copy_rows(stage, client, "duplicates", next_id, "ingest_id")
        loaded = _append_new(stage, ws, kind, next_id)
        result.ingest_id = next_id
        result.rows_existing = result.rows_loaded - loaded
        result.rows_loaded = loaded
        log_row = stage.table("ingest_log").mutate(
            ingest_id=ibis.literal(next_id, "int64"),
            rows_loaded=ibis.literal(loaded, "int64"),
            rows_existing=ibis.literal(result.rows_existing, "int64"),
        )
        append_rows(client, "ingest_log", log_row.to_pyarrow())
    return result


def _copy_rows(stage: Workspace, client: Any, name: str, ingest_id: int, column: str) -> None:
    """Append the staging workspace's rows of ``name`` to the backend, under ``ingest_id``."""
    t = stage.table(name).mutate(**{column: ibis.literal(ingest_id, "int64")})
    if _on_spark(client):
        if int(t.count().execute()):
            with _staged_on_spark(client, t, client.table(name).schema()) as rows:
                _insert_select(client, name, rows)
        return
    rows = t.to_pyarrow()
    if rows.num_rows:
        append_rows(client, name, rows)


def _on_spark(client: Any) -> bool:
    """Whether ``client`` is ibis's PySpark backend (whose rows arrive by
    :func:`_staged_on_spark`, not through Arrow in Python)."""
    return bool(client.name == "pyspark")


@contextmanager
def _staged_on_spark(client: Any, rows: Any, schema: Any) -> Iterator[Any]:
    """DuckDB's staged ``rows`` as a Spark table: written by DuckDB to a Parquet file in a
    hidden folder of the warehouse (each column as ``schema`` has it), read by Spark, and gone
    when the block ends. Tens of millions of rows go this way in a minute, where handing them
    to Spark from Python as Arrow would hold them twice in Python and once more in the driver.
    """
    session = client._session
    warehouse = Path(session.conf.get("spark.sql.warehouse.dir").removeprefix("file:"))
    folder = Path(tempfile.mkdtemp(prefix=".staging-", dir=warehouse))
    view = "_signalloop_staged_" + folder.name.removeprefix(".staging-").replace("-", "_")
    try:
        rows.select(
            **{c: rows[c].cast("string" if t.is_json() else t) for c, t in schema.items()}
        ).to_parquet(folder / "rows.parquet")
        session.read.parquet(str(folder)).createOrReplaceTempView(view)
        yield client.table(view)
    finally:
        session.catalog.dropTempView(view)
        shutil.rmtree(folder, ignore_errors=True)


def append_rows(client: Any, name: str, rows: Any) -> None:
    """Append an Arrow table to the backend's table ``name`` (columns matched by name, JSON
    as text where the backend keeps it so)."""
    target = client.table(name)
    mem = ibis.memtable(rows)
    exprs, json_cols = {}, []
    for col, dtype in target.schema().items():
        value = mem[col]
        if dtype.is_json():  # text here; PostgreSQL's json is cast below, in SQL
            value = value.cast("string")
            json_cols.append(col)
        elif value.type() != dtype:
            value = value.cast(dtype)
        exprs[col] = value
    if not json_cols:
        client.insert(name, mem.select(**exprs))
        return
    temp = f"_signalloop_text_{name}"
    client.create_table(temp, mem.select(**exprs), temp=True, overwrite=True)
    try:
        _insert_select(client, name, client.table(temp))
    finally:
        client.drop_table(temp, force=True)


def _insert_select(client: Any, name: str, expr: Any) -> None:
    """``INSERT INTO name SELECT ...`` of an expression on the backend itself.

    ibis 12 compiles a cast to JSON on PostgreSQL as ``VARCHAR``, which a ``json`` column
    refuses: there the insert is written in SQL, its JSON columns cast with ``::json``.
    """
    target = client.table(name).schema()
    json_cols = [c for c, dtype in target.items() if dtype.is_json()]
    if not json_cols:
        client.insert(name, expr.select(*target.names))
        return
    cols = ", ".join(f'"{c}"' for c in target.names)
    proj = ", ".join(f'"{c}"::json' if c in json_cols else f'"{c}"' for c in target.names)
    sql = client.compile(expr.select(*target.names))
    client.raw_sql(f'INSERT INTO "{name}" ({cols}) SELECT {proj} FROM ({sql}) AS s').close()


def _append_new(stage: Workspace, ws: BackendWorkspace, kind: str, ingest_id: int) -> int:
    """Append the staged good rows of ``kind`` whose natural key ``ws`` does not hold yet;
    returns how many were appended."""
    from signalloop.contract import get_kind

    spec = get_kind(kind)
    client = ws.ibis
    staged = stage.table(kind).mutate(_ingest_id=ibis.literal(ingest_id, "int64"))
    if not int(staged.count().execute()):
        return 0
    target = ws.table(kind)
    before = int(target.count().execute())
    if _on_spark(client):
        with _staged_on_spark(client, staged, target.schema()) as new:
            if before:
                new = new.anti_join(target, [new[k].identical_to(target[k]) for k in spec.key])
            _insert_select(client, kind, new)
        return int(ws.table(kind).count().execute()) - before
    rows = staged.to_pyarrow()
    if not before:
        append_rows(client, kind, rows)
    else:
        temp = f"_signalloop_stage_{kind}"
        client.create_table(temp, schema=target.schema(), overwrite=True)
        try:
            append_rows(client, temp, rows)
            new = client.table(temp)
            fresh = new.anti_join(target, [new[k].identical_to(target[k]) for k in spec.key])
            _insert_select(client, kind, fresh)
        finally:
            client.drop_table(temp, force=True)
    return int(ws.table(kind).count().execute()) - before


# -- exclusions ---------------------------------------------------------------------------------


def save_exclusions(ws: Workspace, exclusions: list[dict[str, Any]], as_of: date) -> None:
    """Replace the check-made exclusions (``source = 'check'``) of any workspace, keeping the
    manual ones: :func:`signalloop.checks.engine.save_exclusions` on DuckDB; on a backend the
    table is rewritten through ibis (neither a Spark Parquet table nor ibis has ``DELETE``)."""
    if not isinstance(ws, BackendWorkspace):
        from signalloop.checks import engine

        engine.save_exclusions(ws, exclusions, as_of)
        return
    client = ws.ibis
    kept: list[dict[str, Any]] = []
    if "exclusions" in client.list_tables():
        ex = ws.table("exclusions")
        kept = ex.filter(ex.source.isnull() | (ex.source != "check")).to_pyarrow().to_pylist()
    rows = [{k: r.get(k) for k in EXCLUSIONS_SCHEMA.names} for r in kept]
    rows += check_exclusion_rows(exclusions, as_of)
    table = pa.Table.from_pylist(rows, EXCLUSIONS_SCHEMA.to_pyarrow())
    if ws.backend == "pyspark":
        if "exclusions" not in client.list_tables():  # a create_table from a schema ignores
            client.create_table("exclusions", ibis.memtable(table), overwrite=True)  # overwrite
            return
        # rewritten in place: a table another process registered from its folder cannot be
        # dropped and created again under the same location
        from ibis.backends.pyspark.datatypes import PySparkSchema

        staged = "_signalloop_exclusions_new"
        names = EXCLUSIONS_SCHEMA.names
        session = client._session
        df = session.createDataFrame(
            [tuple(r[c] for c in names) for r in rows], PySparkSchema.from_ibis(EXCLUSIONS_SCHEMA)
        )
        df.createOrReplaceTempView(staged)
        cols = ", ".join(f"`{c}`" for c in names)
        session.sql(f"INSERT OVERWRITE TABLE exclusions SELECT {cols} FROM {staged}")
        session.catalog.dropTempView(staged)
        return
    client.create_table("exclusions", schema=EXCLUSIONS_SCHEMA, overwrite=True)
    if rows:
        append_rows(client, "exclusions", table)


def check_exclusion_rows(exclusions: list[dict[str, Any]], as_of: date) -> list[dict[str, Any]]:
    """The rows of :data:`EXCLUSIONS_SCHEMA` that store the checks' windows ``exclusions``
    (``campaign_id``, ``start``, ``end``, ``reason``; dates as ISO text or dates), made
    ``as_of``, now (what every backend's ``save_exclusions`` writes)."""
    now = datetime.now()
    return [
        {
            "campaign_id": e["campaign_id"],
            "start": _as_date(e["start"]),
            "end": _as_date(e["end"]),
            "reason": e["reason"],
            "source": "check",
            "as_of": as_of,
            "created_at": now,
        }
        for e in exclusions
    ]


def _as_date(v: Any) -> date | None:
    """A date from an ISO string, a datetime or a date (``None`` stays ``None``).

    >>> _as_date("2026-01-02"), _as_date(None)
    (datetime.date(2026, 1, 2), None)
    """
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    return date.fromisoformat(str(v))
