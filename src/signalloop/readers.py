"""Read an export file into a staging table of text columns, in file order.

CSV: the delimiter is the one that splits the header line into the most fields (``,``, ``;``,
tab or ``|``), quoting is RFC 4180 (``"``, doubled to escape), UTF-8 with or without a BOM,
optionally gzip-compressed; a profile may name header markers so that report preambles
(Google Ads' title lines) are skipped. Rows with too many or too few fields are set aside by
DuckDB's CSV reader and end up in quarantine; a file it cannot read at all (an unterminated
quote, not UTF-8) is diagnosed line by line in Python and raises
:class:`~signalloop.errors.InputError` naming the line. Parquet is read as is, every column
cast to text, so that one validation pass serves both.

Line numbers count the header as line 1 and one line per record (a quoted field holding a
newline does not start a new line); in Parquet ``line`` is the 1-based row.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from signalloop.errors import InputError
from signalloop.profiles import Profile

#: Cell values read as "no value" (exactly these; "NA" is not one: it is also a region).
NULL_TOKENS = ("", "NULL", "null", "None", "none", "NaN", "nan", "N/A", "n/a", "#N/A", "--")
_DELIMITERS = (",", ";", "\t", "|")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


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


@dataclass
class StagedFile:
    """A file staged as the text table ``_raw``; the view ``_rawv`` adds ``_rec``, its order.

    Attributes
    ----------
    headers
        The file's column names.
    fmt
        ``csv`` or ``parquet``.
    skip
        Lines before the header (report preambles).
    rejects
        Whether DuckDB's CSV rejects tables (``_rej``) exist for this file.
    melted
        Whether rows were unpivoted (several staged rows then share one ``_rec``).
    """

    headers: list[str]
    fmt: str
    skip: int
    rejects: bool
    melted: bool = False


def _header_names(line: str, delim: str) -> list[str] | None:
    """The header's column names when DuckDB would take them as they are, else ``None``.

    Empty or repeated names (case-insensitively) are renamed by DuckDB's sniffer: those
    headers are left to it.

    >>> _header_names('a,"b,c",d', ","), _header_names("a,A", ","), _header_names("a,,b", ",")
    (['a', 'b,c', 'd'], None, None)
    """
    try:
        names = next(csv.reader([line], delimiter=delim, strict=True))
    except (csv.Error, StopIteration):
        return None
    folded = [n.casefold() for n in names]
    if not names or any(not n.strip() for n in names) or len(set(folded)) != len(folded):
        return None
    return names


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, profile: Profile) -> StagedFile:
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
                f"file_row_number AS _rec FROM read_parquet({quote_literal(str(path))}, "
                "file_row_number = true)"
            )
        except duckdb.Error as exc:
            raise InputError(f"cannot read as Parquet: {exc}", file=path) from None
        cols = [r[0] for r in con.execute("DESCRIBE _raw").fetchall() if r[0] != "_rec"]
        tokens = ", ".join(quote_literal(t) for t in NULL_TOKENS)
        casts = ", ".join(
            f"CASE WHEN CAST({quote_ident(c)} AS VARCHAR) IN ({tokens}) THEN NULL "
            f"ELSE CAST({quote_ident(c)} AS VARCHAR) END AS {quote_ident(c)}"
            for c in cols
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE _raw AS SELECT _rec, {casts} FROM _raw")
        con.execute("CREATE OR REPLACE TEMP VIEW _rawv AS SELECT * FROM _raw")
        return StagedFile(cols, "parquet", 0, rejects=False)

    gz = magic[:2] == b"\x1f\x8b"
    lines = _head_lines(path, gz)
    if not lines or not lines[0].strip():
        raise InputError("the file is empty: expected a header line and rows", file=path, line=1)
    skip = _header_line(lines, profile.header_markers)
    delim = _delimiter(lines[skip])
    options = (
        f"delim = {quote_literal(delim)}, quote = '\"', escape = '\"', header = true, "
        f"skip = {skip}, "
        f"all_varchar = true, compression = {quote_literal('gzip' if gz else 'none')}, "
        "null_padding = false, max_line_size = 4194304, "
        f"nullstr = [{', '.join(quote_literal(t) for t in NULL_TOKENS)}], "
        "store_rejects = true, rejects_table = '_rej', rejects_scan = '_rejscan'"
    )
    names = _header_names(lines[skip], delim)
    if names is not None and _read_known_header(con, path, options, names):
        pass  # the header is known: read without DuckDB's sniffer (~15 ms a file or more)
    else:
        _read_csv(con, path, options, gz=gz, delim=delim, skip=skip)
    headers = [r[0] for r in con.execute("DESCRIBE _raw").fetchall()]
    if len(headers) == 1 and any(d in headers[0] for d in _DELIMITERS):
        raise InputError(
            f"could not split the header {headers[0]!r} into columns", file=path, line=skip + 1
        )
    con.execute("CREATE OR REPLACE TEMP VIEW _rawv AS SELECT rowid AS _rec, * FROM _raw")
    return StagedFile(headers, "csv", skip, rejects=True)


def _read_known_header(
    con: duckdb.DuckDBPyConnection, path: Path, options: str, names: list[str]
) -> bool:
    """Stage with the header's names and no sniffing; ``False`` (nothing staged) when a row
    was set aside for anything but its field count (an unterminated quote: the sniffing
    path then reports it as the file error it is)."""
    columns = ", ".join(f"{quote_literal(n)}: 'VARCHAR'" for n in names)
    try:
        con.execute(
            "CREATE TEMP TABLE _raw AS SELECT * FROM read_csv("
            f"{quote_literal(str(path))}, {options}, auto_detect = false, columns = {{{columns}}})"
        )
    except duckdb.Error:
        ok = False
    else:
        row = con.execute(
            "SELECT count(*) FROM _rej WHERE error_type NOT IN "
            "('TOO MANY COLUMNS', 'TOO FEW COLUMNS')"
        ).fetchone()
        ok = row is not None and row[0] == 0
    if not ok:
        for t in ("_raw", "_rej", "_rejscan"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return ok


def _read_csv(
    con: duckdb.DuckDBPyConnection, path: Path, options: str, *, gz: bool, delim: str, skip: int
) -> None:
    """Stage with DuckDB's sniffer; a file it cannot read raises the error naming the line."""
    try:
        con.execute(
            "CREATE TEMP TABLE _raw AS SELECT * FROM "
            f"read_csv({quote_literal(str(path))}, {options})"
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


def line_sql(src: StagedFile, rec: str) -> str:
    """SQL for the 1-based file line of the staged record ``rec``."""
    if src.fmt == "parquet":
        return f"({rec} + 1)"
    base = f"({rec} + 2 + {src.skip})"
    if not src.rejects:
        return base
    # Rejected records are missing from _raw: shift by the rejected lines that came before.
    return f"({base} + (SELECT count(*) FROM _rejg WHERE _rejg.g <= {rec}))"
