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
   skipped outright.

Line numbers count the header as line 1, one line per record (a quoted field holding a
newline does not start a new line); in Parquet files ``line`` is the 1-based row.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from signalloop.contract import UTM_COLUMNS, Column, Kind, get_kind
from signalloop.errors import InputError, UsageError
from signalloop.profiles import PROFILES, Plan, Profile, get_profile, load_mapping
from signalloop.store import Workspace

#: Cell values read as "no value" (exactly these; "NA" is not one: it is also a region).
NULL_TOKENS = ("", "NULL", "null", "None", "none", "NaN", "nan", "N/A", "n/a", "#N/A", "--")
#: Timestamps further than this in the future (at ingest time) are quarantined.
FUTURE_TOLERANCE = "1 day"
_DELIMITERS = (",", ";", "\t", "|")

Progress = Callable[[str, float | None], None]

#: Quarantine reason codes, with what each means.
REASON_CODES: dict[str, str] = {
    "malformed_row": "the CSV row has more or fewer fields than the header",
    "missing_value": "a required column is empty",
    "not_a_number": "a count or amount is not a number (or not whole, for counts)",
    "negative": "a count, spend or amount is negative",
    "bad_date": "a date is not YYYY-MM-DD (or the mapping's date_format)",
    "bad_timestamp": "a timestamp is not ISO 8601 (or the mapping's timestamp_format)",
    "future": "a date or timestamp lies more than a day after the ingest time",
    "clicks_exceed_impressions": "a spend row reports more clicks than impressions",
    "bad_value": "a value outside the contract's allowed set (source, level, field, actor)",
    "summary_row": "a report's total row, not data",
}


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
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    """Quote an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# -- reading ------------------------------------------------------------------------------------


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(4)


def _open_bytes(path: Path, gz: bool) -> Any:
    return gzip.open(path, "rb") if gz else path.open("rb")


def _open_text(path: Path, gz: bool) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        _open_bytes(path, gz), encoding="utf-8-sig", newline="", errors="strict"
    )


def _head_lines(path: Path, gz: bool, n: int = 40) -> list[str]:
    with _open_bytes(path, gz) as raw:
        chunk: bytes = raw.read(256 * 1024)
    text = chunk.decode("utf-8-sig", errors="replace")
    return text.splitlines()[:n]


def _header_line(lines: list[str], markers: Sequence[str]) -> int:
    """Index of the header line: the first with two or more profile markers, else 0."""
    if not markers:
        return 0
    wanted = [m.casefold() for m in markers]
    for i, line in enumerate(lines):
        low = line.casefold()
        if sum(1 for m in wanted if m in low) >= 2:
            return i
    return 0


def _delimiter(header: str) -> str:
    """The delimiter that splits the header line into the most fields (outside quotes).

    >>> _delimiter('"age";"job";"y"')
    ';'
    >>> _delimiter("a,b\\tc,d")
    ','
    """
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def diagnose_csv(path: Path, *, gz: bool, delimiter: str, skip: int = 0) -> InputError | None:
    """Find the first line that makes ``path`` unreadable as CSV, streaming it with Python.

    Returns an :class:`InputError` naming the line, or ``None`` if Python reads it cleanly.
    """
    with _open_bytes(path, gz) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 1].hex()
                return InputError(
                    f"not UTF-8 text (byte 0x{bad} at position {exc.start + 1} of the line); "
                    "re-export as UTF-8",
                    file=path,
                    line=lineno,
                )
    old_limit = csv.field_size_limit()
    csv.field_size_limit(1 << 20)
    try:
        with _open_text(path, gz) as fh:
            for _ in range(skip):
                fh.readline()
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            start = 1 + skip
            try:
                for _row in reader:
                    start = reader.line_num + 1 + skip
            except csv.Error as exc:
                text = str(exc)
                if "end of data" in text or "field larger" in text:
                    return InputError(
                        "unterminated quote: the quoted field that starts on this line is "
                        "never closed",
                        file=path,
                        line=start,
                    )
                return InputError(f"malformed CSV: {text}", file=path, line=start)
    finally:
        csv.field_size_limit(old_limit)
    return None


class _Source:
    """A file staged as the text table ``_raw`` (columns = the file's headers, plus ``_rec``)."""

    def __init__(self, headers: list[str], fmt: str, skip: int, rejects: bool) -> None:
        self.headers = headers
        self.fmt = fmt
        self.skip = skip
        self.rejects = rejects


def _stage(con: duckdb.DuckDBPyConnection, path: Path, profile: Profile) -> _Source:
    con.execute("DROP VIEW IF EXISTS _rawv")
    for t in ("_raw", "_rej", "_rejscan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    magic = _magic(path)
    if not magic:
        raise InputError("the file is empty: expected a header line and rows", file=path)
    if magic == b"PAR1":
        try:
            con.execute(
                "CREATE TEMP TABLE _raw AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS _rec FROM read_parquet({_lit(str(path))}, "
                "file_row_number = true)"
            )
        except duckdb.Error as exc:
            raise InputError(f"cannot read as Parquet: {exc}", file=path) from None
        cols = [r[0] for r in con.execute("DESCRIBE _raw").fetchall() if r[0] != "_rec"]
        tokens = ", ".join(_lit(t) for t in NULL_TOKENS)
        casts = ", ".join(
            f"CASE WHEN CAST({_q(c)} AS VARCHAR) IN ({tokens}) THEN NULL "
            f"ELSE CAST({_q(c)} AS VARCHAR) END AS {_q(c)}"
            for c in cols
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE _raw AS SELECT _rec, {casts} FROM _raw")
        con.execute("CREATE OR REPLACE TEMP VIEW _rawv AS SELECT * FROM _raw")
        return _Source(cols, "parquet", 0, rejects=False)

    gz = magic[:2] == b"\x1f\x8b"
    lines = _head_lines(path, gz)
    if not lines or not lines[0].strip():
        raise InputError("the file is empty: expected a header line and rows", file=path, line=1)
    skip = _header_line(lines, profile.header_markers)
    delim = _delimiter(lines[skip])
    options = (
        f"delim = {_lit(delim)}, quote = '\"', escape = '\"', header = true, skip = {skip}, "
        f"all_varchar = true, compression = {_lit('gzip' if gz else 'none')}, "
        "null_padding = false, max_line_size = 4194304, "
        f"nullstr = [{', '.join(_lit(t) for t in NULL_TOKENS)}], "
        "store_rejects = true, rejects_table = '_rej', rejects_scan = '_rejscan'"
    )
    try:
        con.execute(
            f"CREATE TEMP TABLE _raw AS SELECT * FROM read_csv({_lit(str(path))}, {options})"
        )
    except duckdb.Error as exc:
        found = diagnose_csv(path, gz=gz, delimiter=delim, skip=skip)
        if found is not None:
            raise found from None
        m = re.search(r"[Ll]ine:? (\d+)", str(exc))
        first = str(exc).strip().splitlines()[0]
        raise InputError(
            f"cannot read as CSV: {first}", file=path, line=int(m.group(1)) if m else None
        ) from None
    headers = [r[0] for r in con.execute("DESCRIBE _raw").fetchall()]
    if len(headers) == 1 and any(d in headers[0] for d in _DELIMITERS):
        raise InputError(
            f"could not split the header {headers[0]!r} into columns", file=path, line=skip + 1
        )
    con.execute("CREATE OR REPLACE TEMP VIEW _rawv AS SELECT rowid AS _rec, * FROM _raw")
    return _Source(headers, "csv", skip, rejects=True)


# -- mapping and validation ---------------------------------------------------------------------


def _clean(expr: str) -> str:
    """Trim surrounding spaces (only where there are any: trimming every cell is slow)."""
    return (
        f"CASE WHEN {expr} LIKE ' %' OR {expr} LIKE '% ' THEN NULLIF(trim({expr}), '') "
        f"ELSE NULLIF({expr}, '') END"
    )


def _problem(cond: str, column: str, code: str, reason_sql: str) -> str:
    """SQL for one validation rule: a struct (column, code, reason) when ``cond`` holds."""
    assert code in REASON_CODES, code
    return (
        f"CASE WHEN {cond} THEN {{'column': {_lit(column)}, 'code': {_lit(code)}, "
        f"'reason': {reason_sql}}} END"
    )


def _typed(col: Column, s: str, profile: Profile, now: str) -> tuple[str, list[str]]:
    """SQL for the typed value of ``col`` given its cleaned text ``s``, and its problems."""
    name = col.name
    problems: list[str] = []
    if col.required:
        problems.append(_problem(f"{s} IS NULL", name, "missing_value", "'missing required value'"))
    shown = f"'''' || {s} || ''''"
    if col.type in ("int", "float"):
        num = s
        if profile.thousands:
            num = f"replace({s}, {_lit(profile.thousands)}, '')"
        d = f"TRY_CAST({num} AS DOUBLE)"
        problems.append(
            _problem(
                f"{s} IS NOT NULL AND ({d} IS NULL OR isnan({d}) OR isinf({d}))",
                name,
                "not_a_number",
                f"'not a number: ' || {shown}",
            )
        )
        if col.type == "int":
            problems.append(
                _problem(
                    f"{d} <> floor({d})", name, "not_a_number", f"'not a whole number: ' || {shown}"
                )
            )
            value = f"CAST({d} AS BIGINT)"
        else:
            value = d
        if col.nonnegative:
            problems.append(
                _problem(f"{d} < 0", name, "negative", f"'negative {name}: ' || {shown}")
            )
        return value, problems
    if col.type == "date":
        if profile.date_format:
            value = f"CAST(TRY_STRPTIME({s}, {_lit(profile.date_format)}) AS DATE)"
            expected = profile.date_format
        else:
            value = f"TRY_CAST({s} AS DATE)"
            expected = "YYYY-MM-DD"
        problems.append(
            _problem(
                f"{s} IS NOT NULL AND {value} IS NULL",
                name,
                "bad_date",
                f"'not a date (expected {expected}): ' || {shown}",
            )
        )
        problems.append(
            _problem(
                f"{value} > CAST({now} + INTERVAL {FUTURE_TOLERANCE} AS DATE)",
                name,
                "future",
                f"'date in the future: ' || {shown}",
            )
        )
        return value, problems
    if col.type == "ts":
        if profile.timestamp_format:
            value = f"TRY_STRPTIME({s}, {_lit(profile.timestamp_format)})"
            expected = profile.timestamp_format
        else:
            value = f"CAST(TRY_CAST({s} AS TIMESTAMPTZ) AS TIMESTAMP)"
            expected = "ISO 8601"
        problems.append(
            _problem(
                f"{s} IS NOT NULL AND {value} IS NULL",
                name,
                "bad_timestamp",
                f"'not a timestamp (expected {expected}): ' || {shown}",
            )
        )
        problems.append(
            _problem(
                f"{value} > {now} + INTERVAL {FUTURE_TOLERANCE}",
                name,
                "future",
                f"'timestamp in the future: ' || {shown}",
            )
        )
        return value, problems
    if col.type == "enum":
        assert col.choices is not None
        value = f"lower({s})"
        allowed = ", ".join(_lit(c) for c in col.choices)
        problems.append(
            _problem(
                f"{value} NOT IN ({allowed})",
                name,
                "bad_value",
                f"'expected one of {'/'.join(col.choices)}, got ' || {shown}",
            )
        )
        return value, problems
    return s, problems


def _text_expr(col: Column, plan: Plan, profile: Profile, present: set[str]) -> str:
    """Cleaned text for one canonical column: from its source header, a constant, or a URL."""
    if col.name in plan.sources:
        expr = _clean(f"CAST({_q(plan.sources[col.name])} AS VARCHAR)")
    elif col.name in plan.constants:
        expr = _lit(plan.constants[col.name])
    else:
        expr = "CAST(NULL AS VARCHAR)"
    if col.name in UTM_COLUMNS and "landing_url" in present:
        url = _clean(f"CAST({_q(plan.sources['landing_url'])} AS VARCHAR)")
        from_url = (
            f"NULLIF(url_decode(replace(regexp_extract({url}, "
            f"'[?&]{col.name}=([^&#]*)', 1), '+', ' ')), '')"
        )
        expr = f"CASE WHEN {expr} IS NULL THEN {from_url} ELSE {expr} END"
    vmap = profile.value_map(col.name)
    if vmap:
        cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in vmap.items())
        key = f"lower(regexp_replace({expr}, '\\s+', ' ', 'g'))"
        expr = f"COALESCE(CASE {key} {cases} END, {expr})"
    if col.name == "stage":
        expr = f"lower({expr})"
    return expr


def _validation_sql(kind: Kind, plan: Plan, profile: Profile, src: _Source, now: str) -> str:
    present = set(plan.sources)
    texts = {c.name: _text_expr(c, plan, profile, present) for c in kind.columns}
    inner = ", ".join(f"{texts[c.name]} AS {_q('t_' + c.name)}" for c in kind.columns)
    typed: list[str] = []
    problems: list[str] = []
    for c in kind.columns:
        value, probs = _typed(c, _q("t_" + c.name), profile, now)
        typed.append(f"{value} AS {_q(c.name)}")
        problems.extend(probs)
    if kind.name == "spend":
        problems.append(
            _problem(
                "TRY_CAST(t_clicks AS DOUBLE) > TRY_CAST(t_impressions AS DOUBLE)",
                "clicks",
                "clicks_exceed_impressions",
                "'clicks (' || t_clicks || ') exceed impressions (' || t_impressions || ')'",
            )
        )
    if profile.summary_prefixes and src.headers:
        first = _q(src.headers[0])
        cond = " OR ".join(
            f"starts_with(trim({first}), {_lit(p)})" for p in profile.summary_prefixes
        )
        # first, so that a total row is reported as such rather than by its odd date
        problems.insert(
            0, _problem(cond, src.headers[0], "summary_row", "'report summary row, not data'")
        )
    if plan.attributes:
        pairs = ", ".join(f"{_lit(a)}, {_q(a)}" for a in plan.attributes)
        attrs = f"json_object({pairs})"
    else:
        attrs = "CAST(NULL AS JSON)"
    plist = "list_filter([" + ", ".join(problems) + "], lambda p: p IS NOT NULL)"
    source = "_melted" if plan.melt else "_rawv"
    return (
        f"SELECT _rec, {', '.join(typed)}, {attrs} AS attrs, {plist} AS _problems "
        f"FROM (SELECT _rec, {inner}, * EXCLUDE (_rec) FROM {source})"
    )


def _melt_keep(plan: Plan) -> list[str]:
    """Source headers carried through the unpivot: all but the stage-date columns."""
    melted = set(plan.melt or {})
    headers = [*plan.sources.values(), *plan.attributes]
    return [h for h in dict.fromkeys(headers) if h not in melted]


def _melt(con: duckdb.DuckDBPyConnection, plan: Plan) -> Plan:
    """Unpivot wide stage-date columns into ``_melted`` (one row per record and stage)."""
    assert plan.melt is not None
    keep = [h for h in _melt_keep(plan)]
    keep_sql = ", ".join(_q(h) for h in dict.fromkeys(keep))
    keep_sql = (keep_sql + ", ") if keep_sql else ""
    parts = []
    for header, stage in plan.melt.items():
        parts.append(
            f"SELECT _rec, {keep_sql}{_lit(stage)} AS __stage, {_q(header)} AS __ts FROM _rawv "
            f"WHERE {_clean(_q(header))} IS NOT NULL"
        )
    none = " AND ".join(f"{_clean(_q(h))} IS NULL" for h in plan.melt)
    parts.append(
        f"SELECT _rec, {keep_sql}CAST(NULL AS VARCHAR) AS __stage, CAST(NULL AS VARCHAR) AS __ts "
        f"FROM _rawv WHERE {none}"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _melted AS " + " UNION ALL ".join(parts))
    sources = {k: v for k, v in plan.sources.items() if k not in ("stage", "ts")}
    moved = [v for k, v in plan.sources.items() if k in ("stage", "ts")]
    sources.update({"stage": "__stage", "ts": "__ts"})
    return Plan(sources, plan.constants, plan.attributes + moved, plan.melt)


def _missing_columns_error(
    kind: Kind, plan: Plan, headers: list[str], profile: Profile, path: Path
) -> InputError:
    missing = [c for c in kind.required if c not in plan.sources and c not in plan.constants]
    wanted = []
    for c in missing:
        alts = [a for a in profile.columns.get(c, ()) if not a.startswith("re:")]
        wanted.append(f"{c!r}" + (f" (or {', '.join(repr(a) for a in alts)})" if alts else ""))
    msg = (
        f"a {kind.name} file needs column(s) {', '.join(wanted)}, which the header does not "
        f"have (profile {profile.name}); the header has: {', '.join(headers)}"
    )
    if missing == ["date"] or "date" in missing:
        msg += ". If the export covers one reporting period, pass --date YYYY-MM-DD"
    for other in PROFILES.values():
        if other.name == profile.name:
            continue
        p2 = other.plan(headers, kind.name)
        if all(c in p2.sources or c in p2.constants or c == "date" for c in kind.required):
            msg += f". It looks like a {other.name} export: try --profile {other.name}"
            break
    return InputError(msg, file=path, line=1 if headers else None)


# -- the pipeline -------------------------------------------------------------------------------


def _fingerprint(path: Path, kind: str, profile: Profile, extra: str) -> tuple[str, str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    digest = h.hexdigest()
    conf = hashlib.sha256(repr((kind, profile, extra)).encode()).hexdigest()[:16]
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
    """
    started = time.perf_counter()
    spec = get_kind(kind)
    prof = load_mapping(mapping, kind) if mapping else get_profile(profile)
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file" if not p.exists() else "not a regular file", file=p)
    if report_date is not None:
        prof = _with_constant(prof, "date", report_date.isoformat())
    digest, fingerprint, size = _fingerprint(p, kind, prof, "")
    con = ws.con
    seen = con.execute(
        "SELECT ingest_id, started_at FROM ingest_log WHERE fingerprint = ? AND status = 'ok' "
        "ORDER BY ingest_id LIMIT 1",
        [fingerprint],
    ).fetchone()
    if seen is not None:
        return IngestResult(
            file=str(p),
            kind=kind,
            profile=prof.name,
            status="skipped",
            ingest_id=int(seen[0]),
            message=f"already ingested as #{seen[0]} on {seen[1]:%Y-%m-%d %H:%M}; nothing added",
            seconds=time.perf_counter() - started,
        )
    now_dt = now or datetime.now(UTC).replace(tzinfo=None)
    now_sql = f"TIMESTAMP {_lit(now_dt.strftime('%Y-%m-%d %H:%M:%S'))}"
    next_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingest_log").fetchone()
    ingest_id = int(next_id[0]) if next_id else 1
    label = p.name

    # Staging only writes temporary tables, outside the transaction (so that rowids count
    # from 0 in file order); landing below is one transaction.
    with _Poller(con, f"reading {label}", progress):
        src = _stage(con, p, prof)
    plan = prof.plan(src.headers, kind)
    if plan.melt:
        plan = _melt(con, plan)
    if any(c not in plan.sources and c not in plan.constants for c in spec.required):
        raise _missing_columns_error(spec, plan, src.headers, prof, p)
    sql = _validation_sql(spec, plan, prof, src, now_sql)
    with _Poller(con, f"validating {label}", progress):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _valid AS {sql}")
    with ws.transaction():
        counts = _land(con, spec, src, p, ingest_id)
        con.execute(
            "INSERT INTO ingest_log VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, 'ok', "
            "?, ?, ?, ?, ?, ?)",
            [
                ingest_id,
                now_dt,
                kind,
                str(p),
                digest,
                size,
                fingerprint,
                prof.name,
                counts["read"],
                counts["loaded"],
                counts["quarantined"],
                counts["existing"],
                counts["folded"],
                "",
            ],
        )
        reasons = dict(
            con.execute(
                "SELECT code, count(*) FROM quarantine WHERE ingest_id = ? "
                "GROUP BY 1 ORDER BY 2 DESC, 1",
                [ingest_id],
            ).fetchall()
        )
    con.execute("DROP VIEW IF EXISTS _rawv")
    for t in ("_raw", "_valid", "_melted", "_rej", "_rejscan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    if progress is not None:
        progress(f"done {label}", 1.0)
    return IngestResult(
        file=str(p),
        kind=kind,
        profile=prof.name,
        status="ok",
        ingest_id=ingest_id,
        rows_read=counts["read"],
        rows_loaded=counts["loaded"],
        rows_quarantined=counts["quarantined"],
        rows_existing=counts["existing"],
        rows_folded=counts["folded"],
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        attributes=list(plan.attributes),
        seconds=time.perf_counter() - started,
    )


def _with_constant(profile: Profile, column: str, value: str) -> Profile:
    from dataclasses import replace

    return replace(profile, constants={**profile.constants, column: value})


def _line_sql(src: _Source, rec: str) -> str:
    """SQL for the 1-based file line of the staged record ``rec``."""
    if src.fmt == "parquet":
        return f"({rec} + 1)"
    base = f"({rec} + 2 + {src.skip})"
    if not src.rejects:
        return base
    # Rejected records are missing from _raw: shift by the rejected lines that came before.
    return f"({base} + (SELECT count(*) FROM _rejg WHERE _rejg.g <= {rec}))"


def _land(
    con: duckdb.DuckDBPyConnection, kind: Kind, src: _Source, path: Path, ingest_id: int
) -> dict[str, int]:
    file = _lit(str(path))
    if src.rejects:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _rejl AS SELECT line, any_value(error_message) AS msg, "
            "any_value(csv_line) AS csv_line FROM _rej GROUP BY line"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _rejg AS SELECT line, "
            f"line - 2 - {src.skip} - (row_number() OVER (ORDER BY line) - 1) AS g FROM _rejl"
        )
        con.execute(
            f"INSERT INTO quarantine SELECT {ingest_id}, {_lit(kind.name)}, {file}, "
            f"line + {src.skip}, NULL, 'malformed_row', 'malformed row: ' || "
            "regexp_replace(msg, 'Expected Number of Columns: (\\d+) Found: (\\d+)', "
            "'expected \\1 fields, found \\2'), ['malformed row: ' || msg], "
            "json_object('csv_line', csv_line) FROM _rejl"
        )
        rejected = _scalar(con, "SELECT count(*) FROM _rejl")
    else:
        rejected = 0
    line = _line_sql(src, "v._rec")
    raw_cols = [h for h in src.headers]
    raw_json = "json_object(" + ", ".join(f"{_lit(h)}, r.{_q(h)}" for h in raw_cols) + ")"
    con.execute(
        f"INSERT INTO quarantine SELECT {ingest_id}, {_lit(kind.name)}, {file}, {line}, "
        "v._problems[1].column, v._problems[1].code, v._problems[1].reason, "
        "list_transform(v._problems, lambda p: p.column || ': ' || p.reason), "
        f"{raw_json} FROM _valid v JOIN _rawv r ON r._rec = v._rec "
        "WHERE len(v._problems) > 0"
    )
    parsed = _scalar(con, "SELECT count(DISTINCT _rec) FROM _valid")
    bad = _scalar(con, "SELECT count(DISTINCT _rec) FROM _valid WHERE len(_problems) > 0")
    keys = ", ".join(_q(k) for k in kind.key)
    key_str = " || chr(31) || ".join(f"coalesce(CAST({_q(k)} AS VARCHAR), '')" for k in kind.key)
    campaign = "any_value(campaign_id)" if "campaign_id" in kind.names else "NULL"
    first_line = _line_sql(src, "min(_rec)")
    con.execute(
        f"INSERT INTO duplicates SELECT {ingest_id}, {_lit(kind.name)}, {file}, {key_str}, "
        f"{campaign}, {first_line}, count(*) - 1 FROM _valid WHERE len(_problems) = 0 "
        f"GROUP BY {keys} HAVING count(*) > 1"
    )
    folded = _scalar(
        con, f"SELECT coalesce(sum(copies), 0) FROM duplicates WHERE ingest_id = {ingest_id}"
    )
    cols = ", ".join(_q(c) for c in kind.names)
    match = " AND ".join(f"t.{_q(k)} IS NOT DISTINCT FROM g.{_q(k)}" for k in kind.key)
    if folded:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _good AS SELECT * FROM _valid WHERE len(_problems) = 0 "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _rec) = 1"
        )
    else:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _goodv AS SELECT * FROM _valid WHERE len(_problems) = 0"
        )
    good_src = "_good" if folded else "_goodv"
    good = _scalar(con, f"SELECT count(*) FROM {good_src}")
    before = _scalar(con, f"SELECT count(*) FROM {_q(kind.name)}")
    con.execute(
        f"INSERT INTO {_q(kind.name)} ({cols}, attrs, _ingest_id) "
        f"SELECT {cols}, attrs, {ingest_id} FROM {good_src} g WHERE NOT EXISTS "
        f"(SELECT 1 FROM {_q(kind.name)} t WHERE {match})"
    )
    loaded = _scalar(con, f"SELECT count(*) FROM {_q(kind.name)}") - before
    con.execute("DROP VIEW IF EXISTS _goodv")
    for t in ("_good", "_rejl", "_rejg"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return {
        "read": parsed + rejected,
        "loaded": loaded,
        "quarantined": bad + rejected,
        "existing": good - loaded,
        "folded": folded,
    }


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
