"""Rewrite a DuckDB workspace into a fresh file: the space of deleted rows back, today's layout.

DuckDB reuses the blocks that deleted or rewritten rows leave, but never gives them back to
the file system: a workspace whose tables were rebuilt (a full re-attribution, a rollup
rebuilt for a new version) keeps its largest size. And a workspace made before
:data:`~signalloop.store.PLAIN_IDS` keeps its id columns compressed with FSST, which every
join across the history decodes row by row (about 5% of the next day at 1,000 campaigns,
``BENCHMARKS.md``). :func:`compact` copies every table into a new file, the id columns of
:data:`~signalloop.store.PLAIN_IDS` stored uncompressed, checks that every table holds the
same rows, and only then puts the new file in the workspace's place.

>>> import tempfile, pathlib
>>> from signalloop.store import Workspace
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ws.duckdb"
>>> Workspace(path).close()
>>> done = compact(path)
>>> done["tables"]["touchpoints"], done["plain_ids"]["touchpoints"]
(0, ['touch_id', 'user_id', 'click_id'])
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signalloop.errors import UsageError, disk_full
from signalloop.readers import quote_ident, quote_literal
from signalloop.store import PLAIN_IDS, Workspace, duckdb_path, resolve_db_path

Progress = Callable[[str, float | None], None]


def compact(db: str | Path | None = None, *, progress: Progress | None = None) -> dict[str, Any]:
    """Rewrite the DuckDB workspace ``db`` into a fresh file and put it in its place.

    The workspace stays open (and so locked against other writers) until the new file is
    complete and checked: every table, sequence and key of the old one, the same rows in
    each (counted, and the id columns' distinct values), the id columns of
    :data:`~signalloop.store.PLAIN_IDS` uncompressed. The old file is replaced only then;
    if anything fails before, the new file is removed and the workspace is as it was.

    Returns
    -------
    dict
        ``db``; ``bytes_before`` and ``bytes_after`` (the file's size); ``tables`` (name ->
        rows); ``plain_ids`` (table -> the id columns now stored uncompressed);
        ``rewritten_ids`` (table -> those of them that were compressed before); ``seconds``.

    Raises
    ------
    UsageError
        ``db`` is not a DuckDB file (a ``postgres://`` or ``pyspark://`` workspace, or
        ``:memory:``), does not exist, or is open in another process; or its folder has not
        the room for a second copy (checked first, from the blocks the workspace uses, and
        again if the disk fills while it is written).
    """
    report = progress or (lambda _msg, _frac: None)
    url = resolve_db_path(db)
    from signalloop import backends

    kind = backends.parse_url(url).backend
    if kind != "duckdb":
        raise UsageError(
            f"compact rewrites a DuckDB workspace file; {url.split('://')[0]}:// workspaces "
            "keep their tables on their server (PostgreSQL: VACUUM FULL gives the space back)"
        )
    path = duckdb_path(url)
    if path == ":memory:" or not Path(path).is_file():
        raise UsageError(
            f"workspace {path} is not a DuckDB file here: pass --db with the workspace's path"
        )
    started = time.perf_counter()
    target = Path(f"{path}.compacting")
    target.unlink(missing_ok=True)
    before = Path(path).stat().st_size
    with Workspace(path) as ws:  # (write access: the lock keeps other writers out)
        con = ws.con
        con.execute("CHECKPOINT")
        src = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        need = _space_needed(con, src)
        free = shutil.disk_usage(target.parent).free
        if free < need:
            raise UsageError(_no_room(target.parent, need, free))
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                "AND schema_name = 'main' AND NOT temporary ORDER BY table_name",
                [src],
            ).fetchall()
        ]
        was = {t: _compression(con, src, t, PLAIN_IDS.get(t, ())) for t in PLAIN_IDS}
        new = "_signalloop_compacted"
        con.execute(f"ATTACH {quote_literal(str(target))} AS {new}")
        try:
            report("copying the schema", None)
            con.execute(f"COPY FROM DATABASE {quote_ident(src)} TO {new} (SCHEMA)")
            plain: dict[str, list[str]] = {}
            for t, ids in PLAIN_IDS.items():
                if t in tables:
                    plain[t] = _plain_table(con, src, new, t, ids)
            counts: dict[str, int] = {}
            for i, t in enumerate(tables):
                report(f"copying {t}", i / max(len(tables), 1))
                q = quote_ident(t)
                con.execute(f"INSERT INTO {new}.{q} SELECT * FROM {quote_ident(src)}.{q}")
                counts[t] = _check_same(con, src, new, t, PLAIN_IDS.get(t, ()))
            report("copying the tables", 1.0)
            con.execute(f"CHECKPOINT {new}")
            now = {t: _compression(con, new, t, tuple(ids)) for t, ids in plain.items()}
            for t, got in now.items():
                if any(c != ["Uncompressed"] for c in got.values() if c):
                    raise RuntimeError(f"{t}: id columns not stored uncompressed: {got}")
        except BaseException as exc:
            con.execute(f"DETACH {new}")
            target.unlink(missing_ok=True)
            if disk_full(exc):
                free = shutil.disk_usage(target.parent).free
                raise UsageError(
                    f"no space left on the disk while writing the new copy: {exc}. "
                    + _no_room(target.parent, need, free)
                ) from None
            raise
        con.execute(f"DETACH {new}")
        os.replace(target, path)  # (on the same file system: the workspace, whole)
    Path(f"{path}.wal").unlink(missing_ok=True)  # (a clean close leaves none; not the old's)
    index = _rebuild_touch_index(path, report)
    return {
        "db": path,
        "bytes_before": before,
        "bytes_after": Path(path).stat().st_size,
        "tables": counts,
        "plain_ids": plain,
        "rewritten_ids": {
            t: [c for c, comp in was[t].items() if comp and comp != ["Uncompressed"]] for t in plain
        },
        "touch_index": index,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _rebuild_touch_index(path: str, report: Progress) -> dict[str, Any] | None:
    """Build the workspace's touch index again as one run, when it has one (``None`` when
    not): each ingest adds a run, and a lookup searches every run, so a long run of daily
    ingests is folded back into one here (:mod:`signalloop.touchindex`). The workspace is
    already rewritten: an index that cannot be written (a full disk) is said, not raised,
    and the next attribution refresh builds it, as it would any lost index."""
    from signalloop import touchindex

    with Workspace(path) as ws:
        index = touchindex.for_workspace(ws)
        if index is None or index.state() is None:
            return None
        before = index.runs()
        report("building the touch index again", None)
        index.forget()
        try:
            done = index.sync(ws.con, ws.ingest_state("touchpoints"))
        except touchindex.DAMAGED as e:
            done = f"unavailable: {type(e).__name__}: {e}"
        report("building the touch index again", 1.0)
        return {"runs_before": before, "runs": index.runs(), "refresh": done}


def _space_needed(con: Any, db: str) -> int:
    """Bytes the new copy takes at most: the blocks the workspace uses, and a tenth more."""
    row = con.execute(
        "SELECT used_blocks, block_size FROM pragma_database_size() WHERE database_name = ?",
        [db],
    ).fetchone()
    return int(row[0] * row[1] * 1.1) if row else 0


def _no_room(folder: Path, need: int, free: int) -> str:
    gb = 1024**3
    return (
        f"compact writes a new copy of the workspace beside it before putting it in its "
        f"place: that needs about {need / gb:,.1f} GiB free in {folder}, and "
        f"{free / gb:,.1f} GiB are. The workspace is as it was: free space there and run again"
    )


def _compression(con: Any, db: str, table: str, columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Per column of ``columns``: the compressions its stored segments use (sorted; empty
    when the table holds no rows)."""
    got: dict[str, list[str]] = {c: [] for c in columns}
    if not columns:
        return got
    rows = con.execute(
        f"SELECT column_name, list(DISTINCT compression ORDER BY compression) FROM "
        f"pragma_storage_info({quote_literal(f'{db}.{table}')}) WHERE segment_type = 'VARCHAR' "
        "AND compression <> 'Constant' GROUP BY column_name"
    ).fetchall()
    for name, comps in rows:
        if name in got:
            got[name] = sorted(comps)
    return got


def _plain_table(con: Any, src: str, new: str, table: str, ids: tuple[str, ...]) -> list[str]:
    """Make ``new``'s ``table`` again as ``src`` has it (its columns, types, defaults and
    nullability), the columns of ``ids`` it has stored uncompressed; those columns."""
    cols = con.execute(
        "SELECT column_name, data_type, column_default, is_nullable FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = 'main' AND table_name = ? "
        "ORDER BY column_index",
        [src, table],
    ).fetchall()
    specs, plain = [], []
    for name, dtype, default, nullable in cols:
        spec = f"{quote_ident(name)} {dtype}"
        if default is not None:
            spec += f" DEFAULT {default}"
        if not nullable:
            spec += " NOT NULL"
        if name in ids and dtype == "VARCHAR":
            spec += " USING COMPRESSION uncompressed"
            plain.append(name)
        specs.append(spec)
    q = quote_ident(table)
    con.execute(f"DROP TABLE {new}.{q}")
    con.execute(f"CREATE TABLE {new}.{q} ({', '.join(specs)})")
    return plain


def _check_same(con: Any, src: str, new: str, table: str, ids: tuple[str, ...]) -> int:
    """The rows of ``table`` in ``new`` are ``src``'s: as many, and as many distinct values
    of each id column; the number of rows."""
    q = quote_ident(table)
    measures = ", ".join(["count(*)", *(f"count(DISTINCT {quote_ident(c)})" for c in ids)])
    a = con.execute(f"SELECT {measures} FROM {quote_ident(src)}.{q}").fetchone()
    b = con.execute(f"SELECT {measures} FROM {new}.{q}").fetchone()
    if a != b:
        raise RuntimeError(f"{table}: the copy holds {b}, the workspace {a} (rows, ids)")
    return int(a[0])
