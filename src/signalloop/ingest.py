"""Ingest exports into the workspace: read, map, validate, quarantine, de-duplicate, land.

One file goes through these steps, all inside DuckDB so that large files stream and never
sit whole in Python memory:

1. **Read** CSV (delimiter from the header line, RFC 4180 quoting, UTF-8 with or without BOM,
   gzip) or Parquet into a staging table of text columns, in file order. Rows the CSV parser
   cannot split (too many or too few fields) go to quarantine; a file it cannot read at all
   (an unterminated quote, not UTF-8 text) raises :class:`~signalloop.errors.InputError`
   naming the line.
2. **Map** the export's headers onto the contract with a profile or mapping file
   (:mod:`signalloop.profiles`); unmapped columns are kept as JSON attributes.
3. **Validate** every row in one SQL pass: required values, types, negative counts or spend,
   unparseable or future dates and timestamps, ``clicks > impressions``, enum values. A row
   with any problem goes to ``quarantine`` with file, line, column and reason.
4. **De-duplicate** by the kind's natural key: copies inside the file are folded to one (and
   counted in ``duplicates``), rows already in the workspace are skipped, so ingesting the
   same rows again adds nothing. A file whose content was already ingested the same way is
   skipped outright. With ``restate=True`` (a platform pull, whose recent days the platform
   restates) a row whose key is stored with other values *replaces* the stored row instead,
   and is counted and described in ``rows_restated`` / ``restated``; identical rows are still
   skipped, and the whole-file shortcut is off (the same file may need to restate back).

Line numbers count the header as line 1, one line per record (a quoted field holding a
newline does not start a new line); in Parquet files ``line`` is the 1-based row.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from signalloop import touchindex
from signalloop.contract import Kind, get_kind
from signalloop.errors import InputError, UsageError
from signalloop.profiles import Profile, get_profile, load_mapping
from signalloop.readers import StagedFile, line_sql, quote_ident, quote_literal, stage_file
from signalloop.store import Workspace
from signalloop.validate import melt, missing_columns_error, validation_sql

Progress = Callable[[str, float | None], None]


@dataclass
class IngestResult:
    """What one file's ingest did."""

    file: str
    kind: str
    profile: str
    status: str  # "ok" or "skipped"
    ingest_id: int | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_existing: int = 0
    rows_folded: int = 0
    #: Rows that replaced a stored row of the same key with other values (``restate=True``).
    rows_restated: int = 0
    #: Columns that changed, with the number of restated rows each changed in.
    restated_columns: dict[str, int] = field(default_factory=dict)
    #: The first restated rows (up to 20): their key and each changed column's old and new value.
    restated: list[dict[str, Any]] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the pipeline -------------------------------------------------------------------------------


def _fingerprint(path: Path, kind: str, profile: Profile) -> tuple[str, str, int]:
    """The file's sha256, a fingerprint of (content, kind, profile), and its size."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    digest = h.hexdigest()
    conf = hashlib.sha256(repr((kind, profile)).encode()).hexdigest()[:16]
    return digest, f"{digest}:{conf}", size


class _Poller:
    """Report DuckDB's progress on the running query from a background thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection, label: str, progress: Progress | None):
        self.con, self.label, self.progress = con, label, progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Poller:
        if self.progress is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self.progress is not None
        while not self._stop.wait(0.25):
            try:
                pct = float(self.con.query_progress())
            except Exception:  # pragma: no cover - progress is best effort
                return
            if pct >= 0:
                self.progress(self.label, pct / 100.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def ingest_file(
    ws: Workspace,
    kind: str,
    path: str | Path,
    *,
    profile: str = "canonical",
    mapping: str | Path | None = None,
    report_date: date | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    restate: bool = False,
    label: str | None = None,
) -> IngestResult:
    """Ingest one file of ``kind`` into the workspace.

    Parameters
    ----------
    ws
        The workspace to write to.
    kind
        One of ``spend``, ``touchpoints``, ``conversions``, ``crm``, ``changes``.
    path
        CSV (optionally gzip) or Parquet file.
    profile
        Built-in profile name (ignored when ``mapping`` is given, unless it ``extends`` one).
    mapping
        A TOML mapping file.
    report_date
        The reporting date for a spend export that has no date column.
    now
        Reference time for "in the future" checks (default: the current UTC time).
    progress
        Called with a label and a fraction (or ``None``) as the work proceeds.
    restate
        Replace a stored row whose natural key matches but whose values differ (a platform
        restating a day) instead of skipping it; DuckDB workspaces only.
    label
        What the ingest log, quarantine and duplicates name as the file (default its path):
        a pull names its source (``pull:meta:act_1:2026-01-01..2026-01-28``).
    """
    if restate and ws.backend != "duckdb":
        raise UsageError(
            f"restating rows needs a DuckDB workspace; this one is on {ws.backend}: pull into "
            "a DuckDB workspace, or export and ingest the rows"
        )
    if ws.backend != "duckdb":  # validate in DuckDB, then append on the backend
        from signalloop import backends

        result: IngestResult = backends.ingest_file(
            ws,
            kind,
            path,
            profile=profile,
            mapping=mapping,
            report_date=report_date,
            now=now,
            progress=progress,
        )
        return result
    started = time.perf_counter()
    spec = get_kind(kind)
    prof = load_mapping(mapping, kind) if mapping else get_profile(profile)
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file" if not p.exists() else "not a regular file", file=p)
    if report_date is not None:
        prof = _with_constant(prof, "date", report_date.isoformat())
    digest, fingerprint, size = _fingerprint(p, kind, prof)
    con = ws.con
    name = label or str(p)
    seen = con.execute(
        "SELECT ingest_id, started_at FROM ingest_log WHERE fingerprint = ? AND status = 'ok' "
        "ORDER BY ingest_id LIMIT 1",
        [fingerprint],
    ).fetchone()
    if seen is not None and not restate:
        return IngestResult(
            file=name,
            kind=kind,
            profile=prof.name,
            status="skipped",
            ingest_id=int(seen[0]),
            message=f"already ingested as #{seen[0]} on {seen[1]:%Y-%m-%d %H:%M}; nothing added",
            seconds=time.perf_counter() - started,
        )
    started_at = datetime.now(UTC).replace(tzinfo=None)
    now_dt = now or started_at
    now_sql = f"TIMESTAMP {quote_literal(now_dt.strftime('%Y-%m-%d %H:%M:%S'))}"
    next_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingest_log").fetchone()
    ingest_id = int(next_id[0]) if next_id else 1
    label = label or p.name

    def log(status: str, counts: dict[str, int], message: str) -> None:
        con.execute(
            "INSERT INTO ingest_log VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?)",
            [
                ingest_id,
                started_at,
                kind,
                name,
                digest,
                size,
                fingerprint,
                prof.name,
                status,
                counts.get("read"),
                counts.get("loaded"),
                counts.get("quarantined"),
                counts.get("existing"),
                counts.get("folded"),
                message,
            ],
        )

    try:
        # Staging only writes temporary tables, outside the transaction (so that rowids
        # count from 0 in file order); landing below is one transaction.
        with _Poller(con, f"reading {label}", progress):
            src = stage_file(con, p, prof)
        plan = prof.plan(src.headers, kind)
        if plan.melt:
            plan = melt(con, plan)
            src.melted = True
        if any(c not in plan.sources and c not in plan.constants for c in spec.required):
            raise missing_columns_error(spec, plan, src.headers, prof, p)
        sql = validation_sql(spec, plan, prof, src, now_sql)
        # a view: each of the passes below (problems, duplicate keys, landing) types the
        # staged text as it reads it, which costs less than writing the typed copy of a
        # large file to the spill and reading it back (32M touchpoints: 97 s to materialise,
        # 18 s a pass)
        con.execute(f"CREATE OR REPLACE TEMP VIEW _valid AS {sql}")
        notes = []
        if report_date is not None and "date" in plan.sources:
            notes.append(
                f"--date ignored: the file has its own date column {plan.sources['date']!r}"
            )
        counts = _set_aside(con, spec, src, name, ingest_id)
        # the touch index (signalloop.touchindex) holds the stored touch ids' hashes: a file
        # none of whose ids it holds lands without looking them up in the whole history
        index = touchindex.for_workspace(ws) if kind == "touchpoints" else None
        with ws.transaction():
            state = ws.ingest_state(kind)
            current = index is not None and index.state() == state
            fresh = False
            if current and index is not None and state[0] and not restate:
                try:
                    fresh = not index.holds_any_key(_key_hashes(con, spec))
                except touchindex.DAMAGED:  # (the anti-join, and built again next)
                    index.forget()
                    current = False
            valid = counts.pop("valid", None)
            counts.update(
                _land(con, spec, src, name, ingest_id, restate=restate, valid=valid, fresh=fresh)
            )
            log("ok", counts, "; ".join(notes))
            reasons = dict(
                con.execute(
                    "SELECT code, count(*) FROM quarantine WHERE ingest_id = ? "
                    "GROUP BY 1 ORDER BY 2 DESC, 1",
                    [ingest_id],
                ).fetchall()
            )
        if current and index is not None:  # (the new rows, added as the index's run)
            _keep_index(ws, index)
    except InputError as exc:
        log("failed", {}, str(exc))
        raise
    finally:
        _drop_staging(con)
    if progress is not None:
        progress(f"done {label}", 1.0)
    restated_info: dict[str, Any] = counts.pop("restated_info", {})  # type: ignore[assignment]
    return IngestResult(
        file=name,
        kind=kind,
        profile=prof.name,
        status="ok",
        ingest_id=ingest_id,
        rows_read=counts["read"],
        rows_loaded=counts["loaded"],
        rows_quarantined=counts["quarantined"],
        rows_existing=counts["existing"],
        rows_folded=counts["folded"],
        rows_restated=counts.get("restated", 0),
        restated_columns=restated_info.get("columns", {}),
        restated=restated_info.get("sample", []),
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        attributes=list(plan.attributes),
        message="; ".join(notes),
        seconds=time.perf_counter() - started,
    )


def _with_constant(profile: Profile, column: str, value: str) -> Profile:
    from dataclasses import replace

    return replace(profile, constants={**profile.constants, column: value})


def _set_aside(
    con: duckdb.DuckDBPyConnection, kind: Kind, src: StagedFile, path: str, ingest_id: int
) -> dict[str, int]:
    """Collect this file's quarantine rows into ``_quar`` and count the rows read.

    Runs before the landing transaction. The staged text stays until the rows are landed:
    ``_valid`` types it as it is read.
    """
    file = quote_literal(path)
    kind_lit = quote_literal(kind.name)
    parts = []
    if src.rejects:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _rejl AS SELECT line, any_value(error_message) AS msg, "
            "any_value(csv_line) AS csv_line FROM _rej GROUP BY line"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _rejg AS SELECT line, "
            f"line - 2 - {src.skip} - (row_number() OVER (ORDER BY line) - 1) AS g FROM _rejl"
        )
        parts.append(
            f"SELECT {ingest_id} AS ingest_id, {kind_lit} AS kind, {file} AS file, "
            f"line + {src.skip} AS line, NULL AS \"column\", 'malformed_row' AS code, "
            "'malformed row: ' || regexp_replace(msg, "
            "'Expected Number of Columns: (\\d+) Found: (\\d+)', 'expected \\1 fields, found \\2') "
            "AS reason, ['malformed row: ' || msg] AS problems, "
            "json_object('csv_line', csv_line) AS raw FROM _rejl"
        )
    raw_json = (
        "json_object("
        + ", ".join(f"{quote_literal(h)}, r.{quote_ident(h)}" for h in src.headers)
        + ")"
    )
    parts.append(
        f"SELECT {ingest_id}, {kind_lit}, {file}, {line_sql(src, 'v._rec')}, "
        "v._problems[1].column, v._problems[1].code, v._problems[1].reason, "
        "list_transform(v._problems, lambda p: p.column || ': ' || p.reason), "
        f"{raw_json} FROM _valid v JOIN _rawv r ON r._rec = v._rec "
        "WHERE len(v._problems) > 0"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _quar AS " + " UNION ALL ".join(parts))
    rejected = _scalar(con, "SELECT count(*) FROM _rejl") if src.rejects else 0
    if src.melted:  # a record is several rows
        row = con.execute(
            "SELECT count(DISTINCT _rec), count(DISTINCT _rec) FILTER (WHERE len(_problems) > 0) "
            "FROM _valid"
        ).fetchone()
        parsed, bad = (int(row[0]), int(row[1])) if row else (0, 0)
    else:  # one row a record: the staged rows, and the quarantined ones just collected
        parsed = _scalar(con, "SELECT count(*) FROM _rawv")
        bad = _scalar(con, "SELECT count(*) FROM _quar") - rejected
    # the rows are typed from the staged text (_valid is a view over it): it is kept
    _drop_staging(con, keep=("_raw", "_rawv", "_melted", "_valid", "_quar", "_rejg"))
    out = {"read": parsed + rejected, "quarantined": bad + rejected}
    return out if src.melted else out | {"valid": parsed - bad}


def _drop_staging(con: duckdb.DuckDBPyConnection, keep: tuple[str, ...] = ()) -> None:
    """Drop the temporary tables and views of one file's ingest (except ``keep``), and set
    back the insertion order a failed landing left off."""
    con.execute("SET preserve_insertion_order = true")
    for view in ("_goodv", "_valid", "_rawv"):  # (the views over the tables first)
        if view not in keep:
            con.execute(f"DROP VIEW IF EXISTS {view}")
    for table in (
        "_raw",
        "_melted",
        "_rej",
        "_rejscan",
        "_rejl",
        "_rejg",
        "_quar",
        "_good",
        "_dupk",
    ):
        if table not in keep:
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _land(
    con: duckdb.DuckDBPyConnection,
    kind: Kind,
    src: StagedFile,
    path: str,
    ingest_id: int,
    *,
    restate: bool = False,
    valid: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Write quarantine, folded duplicates and the new good rows (inside a transaction).

    ``valid``: how many rows passed validation, when known (saves a pass over them).
    ``fresh``: no key of these rows is stored (the touch index says so), so they land without
    the anti-join against the stored rows."""
    file = quote_literal(path)
    con.execute("INSERT INTO quarantine SELECT * FROM _quar")
    keys = ", ".join(quote_ident(k) for k in kind.key)
    key_str = _key_text(kind)
    campaign = "any_value(campaign_id)" if "campaign_id" in kind.names else "NULL"
    # the keys found more than once, with their first record (a small table). The keys
    # alone first: typing them is a fraction of typing every column and finding each row's
    # problems (32M touchpoints: about 3 s against 18 s), and a file usually has none twice
    found = (
        f"SELECT {keys}, min(_rec) AS _first, count(*) - 1 AS _copies, {campaign} AS _campaign "
        f"FROM _valid WHERE len(_problems) = 0 GROUP BY {keys} HAVING count(*) > 1"
    )
    twice = con.execute(f"SELECT {keys} FROM _valid GROUP BY {keys} HAVING count(*) > 1 LIMIT 1")
    if twice.fetchone() is None:
        found += " LIMIT 0"  # (no key twice, with or without problems: none to fold)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dupk AS {found}")
    con.execute(
        f"INSERT INTO duplicates SELECT {ingest_id}, {quote_literal(kind.name)}, {file}, "
        f"{key_str}, _campaign, {line_sql(src, '_first')}, _copies FROM _dupk"
    )
    folded = _scalar(con, "SELECT coalesce(sum(_copies), 0) FROM _dupk")
    if folded and src.melted:  # keep the first copy of each key, in file order
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _good AS SELECT * FROM _valid WHERE len(_problems) = 0 "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _rec) = 1"
        )
        good_src = "_good"
    elif folded:  # one row a record: every copy of a key but its first record's is left out
        same = " AND ".join(
            f"d.{quote_ident(k)} IS NOT DISTINCT FROM v.{quote_ident(k)}" for k in kind.key
        )
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _goodv AS SELECT * FROM _valid v WHERE "
            f"len(v._problems) = 0 AND NOT EXISTS (SELECT 1 FROM _dupk d WHERE {same} "
            "AND v._rec <> d._first)"
        )
        good_src = "_goodv"
    else:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _goodv AS SELECT * FROM _valid WHERE len(_problems) = 0"
        )
        good_src = "_goodv"
    # the valid rows less the later copies folded into a key's first, or counted
    good = valid - folded if valid is not None else _scalar(con, f"SELECT count(*) FROM {good_src}")
    target = quote_ident(kind.name)
    before = _scalar(con, f"SELECT count(*) FROM {target}")
    restated: dict[str, Any] = {}
    if restate and before:
        restated = _restate(con, kind, target, good_src)
        before -= restated.get("rows", 0)
    cols = ", ".join(quote_ident(c) for c in kind.names)
    select = f"SELECT {cols}, attrs, {ingest_id} FROM {good_src} g"
    if before and not fresh:  # skip rows whose natural key is already in the store
        match = " AND ".join(
            f"t.{quote_ident(k)} IS NOT DISTINCT FROM g.{quote_ident(k)}" for k in kind.key
        )
        select += f" ANTI JOIN {target} t ON {match}"
    # Row order in the store carries no meaning: let DuckDB write in parallel.
    con.execute("SET preserve_insertion_order = false")
    # (a failed insert aborts the transaction, where no SET runs: _drop_staging sets it back
    # after the rollback, and the insert's own error is the one raised)
    con.execute(f"INSERT INTO {target} ({cols}, attrs, _ingest_id) {select}")
    con.execute("SET preserve_insertion_order = true")
    inserted = _scalar(con, f"SELECT count(*) FROM {target}") - before
    n_restated = int(restated.get("rows", 0))
    return {
        "loaded": inserted - n_restated,
        "existing": good - inserted,
        "folded": folded,
        "restated": n_restated,
        "restated_info": restated,
    }


def _key_text(kind: Kind) -> str:
    """SQL of a row's natural key as one text (the key columns, a null as empty, joined by
    the unit separator): the duplicate check's key, and what the touch index hashes."""
    return " || chr(31) || ".join(
        f"coalesce(CAST({quote_ident(k)} AS VARCHAR), '')" for k in kind.key
    )


def _key_hashes(con: duckdb.DuckDBPyConnection, kind: Kind) -> Any:
    """DuckDB's 64-bit hash of the key of every staged row (those with problems too: only
    the key columns are typed), as NumPy."""
    return con.execute(f"SELECT hash({_key_text(kind)}) AS h FROM _valid").fetchnumpy()["h"]


def _keep_index(ws: Workspace, index: touchindex.TouchIndex) -> None:
    """Add the rows just landed to the touch index (a full disk leaves it behind: the next
    attribution refresh builds it again, and ingests meanwhile make the anti-join)."""
    with contextlib.suppress(*touchindex.DAMAGED):
        index.sync(ws.con, ws.ingest_state("touchpoints"))


def _restate(
    con: duckdb.DuckDBPyConnection, kind: Kind, target: str, good_src: str
) -> dict[str, Any]:
    """Delete the stored rows that a good row of the file restates (same natural key, other
    values), so the insert that follows lands the new ones; what changed, for the report."""
    match = " AND ".join(
        f"t.{quote_ident(k)} IS NOT DISTINCT FROM g.{quote_ident(k)}" for k in kind.key
    )
    values = [c for c in kind.names if c not in kind.key] + ["attrs"]
    diff = " OR ".join(f"t.{quote_ident(c)} IS DISTINCT FROM g.{quote_ident(c)}" for c in values)
    changes = ", ".join(
        f"CASE WHEN t.{quote_ident(c)} IS DISTINCT FROM g.{quote_ident(c)} THEN "
        f"struct_pack(col := {quote_literal(c)}, old := CAST(t.{quote_ident(c)} AS VARCHAR), "
        f"new := CAST(g.{quote_ident(c)} AS VARCHAR)) END"
        for c in values
    )
    keys = ", ".join(f"CAST(g.{quote_ident(k)} AS VARCHAR) AS {quote_ident(k)}" for k in kind.key)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _restated AS SELECT t.rowid AS _rid, g._rec AS _rec, "
        f"{keys}, list_filter([{changes}], x -> x IS NOT NULL) AS changed "
        f"FROM {target} t JOIN {good_src} g ON {match} WHERE {diff}"
    )
    try:
        n = _scalar(con, "SELECT count(*) FROM _restated")
        if not n:
            return {}
        columns = dict(
            con.execute(
                "SELECT c.col, count(*) FROM (SELECT unnest(changed) AS c FROM _restated) "
                "GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        )
        key_cols = ", ".join(quote_ident(k) for k in kind.key)
        sample = []
        for row in con.execute(
            f"SELECT {key_cols}, changed FROM _restated ORDER BY _rec LIMIT 20"
        ).fetchall():
            item: dict[str, Any] = {k: v for k, v in zip(kind.key, row[:-1], strict=True)}
            item["changed"] = {c["col"]: [c["old"], c["new"]] for c in row[-1]}
            sample.append(item)
        con.execute(f"DELETE FROM {target} WHERE rowid IN (SELECT _rid FROM _restated)")
        return {
            "rows": n,
            "columns": {str(k): int(v) for k, v in columns.items()},
            "sample": sample,
        }
    finally:
        con.execute("DROP TABLE IF EXISTS _restated")


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def ingest_files(
    ws: Workspace,
    kind: str,
    paths: Iterable[str | Path],
    **options: Any,
) -> list[IngestResult]:
    """Ingest several files of one kind; see :func:`ingest_file` for the options."""
    paths = list(paths)
    if not paths:
        raise UsageError("no files given: expected one or more CSV or Parquet files")
    return [ingest_file(ws, kind, p, **options) for p in paths]
