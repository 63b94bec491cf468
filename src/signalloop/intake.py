"""Take batches of rows sent over HTTP into a workspace, many requests per commit.

The ingest API (``POST /api/v1/{kind}``) calls this module; it needs no web code. A request
body (CSV, JSON lines or Parquet, optionally gzip) is decoded by :func:`parse_body`, then
queued on the workspace's :class:`Intake`, whose writer thread takes every request waiting at
that moment for the same kind and the same CSV header (up to :data:`GROUP_MAX_ROWS` rows),
writes them as one file, ingests it with :func:`signalloop.ingest.ingest_file` (the same
validation, quarantine and de-duplication as the CLI) and splits the outcome back per request
(:func:`ingest_group`): rows received, loaded, quarantined (with reasons and the first rows'
line, column and reason), and already present (in the workspace before, earlier in the group,
or a copy of an earlier row of the same request). This is group commit: one ingest costs
~60 ms however few rows it lands, so committing many requests at once is what lets the API
take tens of thousands of rows a second.

What is stored is what ingesting each body alone, in arrival order, would have stored, except
that the requests of a group share one ``ingest_id`` and one ``ingest_log`` row: the
quarantine and duplicates rows are relabelled with the request's own file label
(``api:<request id>``) and the line inside the request's body (a CSV body counts its header as
line 1, one line per record; a JSON-lines body counts record *n* on line *n*; a Parquet body
counts rows from 1). Blank lines are not records.

Durability: the group's landing, these rewrites and one ``api_requests`` row per request (the
stored answer, for ``Idempotency-Key``) are one DuckDB transaction, committed before any
request of the group is answered, so an acknowledged batch survives ``kill -9``.

>>> body = b"touch_id,ts,user_id\\nt1,2026-01-01T10:00:00Z,u1\\nt2,yesterday,u2\\n"
>>> parsed = parse_body(body, "text/csv", kind="touchpoints")
>>> parsed.rows, parsed.lines
(2, [2, 3])
>>> ws = Workspace(":memory:")
>>> (answer,) = ingest_group(ws, "touchpoints", [Batch(parsed, "r1")])
>>> answer["rows_loaded"], answer["rows_quarantined"], answer["quarantined"][0]["line"]
(1, 1, 3)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from signalloop.contract import KINDS, Kind
from signalloop.errors import InputError, SignalloopError
from signalloop.ingest import ingest_file
from signalloop.profiles import Profile, get_profile
from signalloop.readers import NULL_TOKENS, quote_ident
from signalloop.readers import _delimiter as csv_delimiter
from signalloop.store import Workspace
from signalloop.validate import _text_expr, _typed

#: Largest body accepted, compressed or decompressed (``[serve] max_body_mb`` can change it).
DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024
#: A writer groups requests up to this many rows into one ingest.
GROUP_MAX_ROWS = 50_000
#: How long a writer that wakes up waits for as many requests as its last commit took.
#: The writer checkpoints the WAL after this long with nothing to do ...
IDLE_SECONDS = 0.25
#: ... or, under sustained load, at most this often ...
CHECKPOINT_SECONDS = 60.0
#: ... once the WAL holds at least this much; DuckDB's own checkpoint waits for WAL_CAP_BYTES.
CHECKPOINT_MIN_BYTES = 1 * 2**20
WAL_CAP_BYTES = 1024 * 2**20
LINGER_SECONDS = 0.015
#: Bodies larger than this (decompressed) are ingested alone, as sent, without a Python parse.
GROUP_MAX_BODY_BYTES = 8 * 1024 * 1024
#: How many quarantined rows an answer lists (the counts by reason cover all of them).
SAMPLE_ROWS = 20
#: Accepted ``Content-Type`` values and the format each means.
CONTENT_TYPES: dict[str, str] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}
#: Accepted ``Content-Encoding`` values (besides none).
CONTENT_ENCODINGS = ("gzip", "x-gzip")

API_REQUESTS_DDL = """
CREATE TABLE IF NOT EXISTS api_requests (
    request_id VARCHAR PRIMARY KEY, key_id VARCHAR, idempotency_key VARCHAR,
    request_sha256 VARCHAR, kind VARCHAR, ingest_id BIGINT, status VARCHAR,
    received_at TIMESTAMP, answered_at TIMESTAMP, response JSON
)"""

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NEWLINES = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$")
_TRAILING_NEWLINE = re.compile(r"(?:\r\n|\n|\r)$")


# -- errors ---------------------------------------------------------------------------------------


class IntakeError(SignalloopError):
    """A request the intake refuses, with the HTTP status that says why.

    Parameters
    ----------
    message
        What was expected and what was got.
    line, column
        Where in the body (1-based line; a column name), when the problem has a place.
    """

    status = 400

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        self.message, self.line, self.column = message, line, column
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error document: ``error``, and ``line`` / ``column`` when known."""
        doc: dict[str, Any] = {"error": self.message}
        if self.line is not None or self.column is not None:
            doc.update(line=self.line, column=self.column)
        return doc


class UnknownKind(IntakeError):
    """The URL names no input kind (404)."""

    status = 404


class BodyTooLarge(IntakeError):
    """The body, compressed or decompressed, is over the size limit (413)."""

    status = 413


class UnsupportedBody(IntakeError):
    """The body's ``Content-Type`` or ``Content-Encoding`` is not one we read (415)."""

    status = 415


class UnreadableBody(IntakeError):
    """The body cannot be read as the declared format at all (422), naming line and column."""

    status = 422


class IdempotencyConflict(IntakeError):
    """An ``Idempotency-Key`` reused with a different body (422)."""

    status = 422


def check_kind(kind: str) -> Kind:
    """The :class:`~signalloop.contract.Kind` called ``kind``, or :class:`UnknownKind`.

    >>> check_kind("crm").name
    'crm'
    """
    try:
        return KINDS[kind]
    except KeyError:
        raise UnknownKind(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}") from None


# -- bodies ---------------------------------------------------------------------------------------


@dataclass
class Body:
    """A request body, decoded and ready to stage as one file.

    Attributes
    ----------
    source
        The format as sent: ``csv``, ``jsonl`` or ``parquet``.
    size
        Decompressed size in bytes.
    sha256
        Of the decompressed body (an ``Idempotency-Key`` replay must carry the same).
    header
        The CSV header line (JSON lines: the union of keys, in first-seen order), for a
        parsed body; ``None`` when the body is staged as sent (:attr:`raw`).
    records
        A parsed body's records, each ending in ``"\\n"``, as written in the body (JSON lines:
        as CSV), without blank lines.
    lines
        A parsed body's line of each record, in the body as sent.
    keys
        Per record, the text of the columns the kind's natural key is read from, or ``None``
        for a record with the wrong number of fields (quarantined as malformed).
    raw
        The file to stage as is when the body is not parsed (Parquet, a large or unusual CSV).
    groupable
        Whether the body may share an ingest with others of the same header.
    """

    source: str
    size: int
    sha256: str
    header: str | None = None
    records: str = ""
    lines: list[int] = field(default_factory=list)
    keys: list[tuple[str | None, ...] | None] = field(default_factory=list)
    raw: bytes | None = None
    groupable: bool = False

    @property
    def rows(self) -> int:
        """Records of a parsed body (``-1`` when staged as sent: ingest counts them)."""
        return len(self.lines) if self.header is not None else -1

    @property
    def suffix(self) -> str:
        return ".parquet" if self.source == "parquet" else ".csv"

    def file_bytes(self) -> bytes:
        """The body as one file: header and records, or the raw bytes."""
        if self.raw is not None:
            return self.raw
        assert self.header is not None
        return (self.header + "\n" + self.records).encode("utf-8")


def media_type(content_type: str | None) -> str:
    """The format a ``Content-Type`` declares, or :class:`UnsupportedBody` naming the accepted.

    >>> media_type("text/csv; charset=utf-8"), media_type("application/jsonl")
    ('csv', 'jsonl')
    """
    accepted = ", ".join(CONTENT_TYPES)
    if not content_type or not content_type.strip():
        raise UnsupportedBody(f"no Content-Type: expected one of {accepted}")
    main, *params = (p.strip() for p in content_type.split(";"))
    fmt = CONTENT_TYPES.get(main.lower())
    if fmt is None:
        raise UnsupportedBody(f"unsupported Content-Type {main!r}: expected one of {accepted}")
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedBody(f"charset {value.strip()!r} is not supported: send UTF-8")
    return fmt


def decompress(data: bytes, max_bytes: int) -> bytes:
    """Gunzip ``data`` (all members), stopping with :class:`BodyTooLarge` past ``max_bytes``.

    Output is produced in bounded steps, so a small body that expands enormously (a gzip
    bomb) is stopped at the limit and never held whole.

    >>> import gzip
    >>> decompress(gzip.compress(b"a,b\\n1,2\\n"), 100)
    b'a,b\\n1,2\\n'
    """
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = rest
        try:
            while chunk:
                out += d.decompress(chunk, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise BodyTooLarge(
                        f"the body decompresses to more than the limit of {max_bytes:,} bytes"
                    )
                chunk = d.unconsumed_tail
            if not d.eof:
                raise UnreadableBody("the gzip body is truncated: its end is missing")
        except zlib.error as exc:
            raise UnreadableBody(f"not a valid gzip body: {exc}") from None
        rest = d.unused_data
        if rest and not rest.startswith(b"\x1f\x8b"):
            break  # trailing padding after the last member
    return bytes(out)


def parse_body(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    kind: str,
    profile: str = "canonical",
    max_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Body:
    """Decode a request body into a :class:`Body`.

    Parameters
    ----------
    body
        The bytes as received.
    content_type
        The ``Content-Type`` header (see :data:`CONTENT_TYPES`).
    content_encoding
        The ``Content-Encoding`` header: none or ``gzip``; a body starting with the gzip
        magic bytes is decompressed either way.
    kind
        The kind the body is for (its natural key decides which values are kept).
    profile
        The profile the body is read with; bodies are grouped only with the canonical one.
    max_bytes
        Size limit, for the body as received and for the body decompressed.

    Raises
    ------
    BodyTooLarge, UnsupportedBody, UnreadableBody
        Over the limit (413), an unknown type or encoding (415), bad gzip or JSON (422).
        A CSV body is never refused here: one Python cannot parse is staged as sent, and
        ingest names its first unreadable line.
    """
    spec = check_kind(kind)
    fmt = media_type(content_type)
    if len(body) > max_bytes:
        raise BodyTooLarge(f"the body is over the limit of {max_bytes:,} bytes")
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity", *CONTENT_ENCODINGS):
        raise UnsupportedBody(
            f"unsupported Content-Encoding {content_encoding!r}: expected gzip or none"
        )
    data = decompress(body, max_bytes) if encoding in CONTENT_ENCODINGS else body
    if encoding not in CONTENT_ENCODINGS and data[:2] == b"\x1f\x8b":
        data = decompress(data, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip():
        raise UnreadableBody("the body is empty: expected a header line and rows", line=1)
    is_parquet = data[:4] == b"PAR1"
    if fmt == "parquet":
        if not is_parquet:
            raise UnreadableBody("declared Parquet, but the body does not start with PAR1")
        return Body("parquet", len(data), digest, raw=data)
    if is_parquet:
        raise UnreadableBody(
            f"the body is a Parquet file, but Content-Type says {fmt}: "
            "send it as application/vnd.apache.parquet"
        )
    prof = get_profile(profile)
    if fmt == "jsonl":
        return _parse_jsonl(data, digest, spec, prof)
    if len(data) > GROUP_MAX_BODY_BYTES:
        return Body("csv", len(data), digest, raw=data)
    return _parse_csv(data, digest, spec, prof)


def _key_sources(spec: Kind, prof: Profile, columns: Sequence[str]) -> list[int] | None:
    """Positions of the key columns' sources in ``columns``; ``None`` if not groupable.

    A body is grouped only when its header maps cleanly: canonical profile, no empty or
    case-insensitively repeated names (DuckDB would rename them), every required column.
    """
    if prof.name != "canonical" or not columns:
        return None
    folded = [c.casefold() for c in columns]
    if any(not c.strip() for c in columns) or len(set(folded)) != len(folded):
        return None
    plan = prof.plan(columns, spec.name)
    if plan.melt or any(c not in plan.sources and c not in plan.constants for c in spec.required):
        return None
    return [columns.index(plan.sources[k]) for k in _kept(spec) if k in plan.sources]


def _kept(spec: Kind) -> list[str]:
    """The columns whose text a parsed body keeps: the natural key's, and ``campaign_id``
    (the ``duplicates`` table names a folded key's campaign)."""
    extra = ["campaign_id"] if "campaign_id" in spec.names and "campaign_id" not in spec.key else []
    return [*spec.key, *extra]


def _null(value: str) -> str | None:
    return None if value in NULL_TOKENS else value


def _parse_csv(data: bytes, digest: str, spec: Kind, prof: Profile) -> Body:
    """Split a CSV body into records with Python's reader; staged as sent if it cannot."""
    as_sent = Body("csv", len(data), digest, raw=data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return as_sent  # ingest names the line
    if text.startswith("\ufeff"):
        text = text[1:]
    simple = _parse_csv_lines(text, len(data), digest, spec, prof)
    if simple is not None:
        return simple
    physical = _NEWLINES.findall(text)
    if not physical:
        return as_sent
    delim = csv_delimiter(physical[0])
    reader = csv.reader(iter(physical), delimiter=delim, strict=True)
    records: list[str] = []
    lines: list[int] = []
    keys: list[tuple[str | None, ...] | None] = []
    try:
        columns = next(reader)
        end = reader.line_num
        header = _TRAILING_NEWLINE.sub("", "".join(physical[:end]))
        sources = _key_sources(spec, prof, columns)
        if sources is None:
            return as_sent
        width = len(columns)
        line = 1
        for row in reader:
            start, end = end, reader.line_num
            if not row:
                continue  # a blank line is not a record
            line += 1
            chunk = physical[start] if end == start + 1 else "".join(physical[start:end])
            records.append(_TRAILING_NEWLINE.sub("", chunk) + "\n")
            lines.append(line)
            keys.append(tuple(_null(row[i]) for i in sources) if len(row) == width else None)
    except csv.Error:
        return as_sent  # an unterminated quote, a huge field: ingest decides and explains
    return Body(
        "csv",
        len(data),
        digest,
        header=header,
        records="".join(records),
        lines=lines,
        keys=keys,
        groupable=True,
    )


def _parse_csv_lines(text: str, size: int, digest: str, spec: Kind, prof: Profile) -> Body | None:
    """The common case fast: every record on one line, no blank line (else ``None``).

    ``"\r\n"`` endings become ``"\n"``: safe here, since no quoted value spans lines.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 1:
        return None
    delim = csv_delimiter(lines[0])
    keys: list[tuple[str | None, ...] | None] = []
    if '"' not in text:  # no quoting at all: a field is what lies between delimiters
        columns = lines[0].split(delim)
        sources = _key_sources(spec, prof, columns)
        if sources is None:
            return None
        width = len(columns)
        for line in lines[1:]:
            if not line:
                return None  # a blank line
            row = line.split(delim)
            keys.append(tuple(_null(row[i]) for i in sources) if len(row) == width else None)
        return _lines_body(text, size, digest, keys)
    reader = csv.reader(lines, delimiter=delim, strict=True)
    try:
        columns = next(reader)
        sources = _key_sources(spec, prof, columns)
        if reader.line_num != 1 or sources is None:
            return None
        width = len(columns)
        for n, row in enumerate(reader, start=2):
            if reader.line_num != n or not row:
                return None  # a record over several lines, or a blank line
            keys.append(tuple(_null(row[i]) for i in sources) if len(row) == width else None)
    except csv.Error:
        return None
    return _lines_body(text, size, digest, keys)


def _lines_body(
    text: str, size: int, digest: str, keys: list[tuple[str | None, ...] | None]
) -> Body:
    header, _, records = text.partition("\n")
    if records and not records.endswith("\n"):
        records += "\n"
    return Body(
        "csv",
        size,
        digest,
        header=header,
        records=records,
        lines=list(range(2, len(keys) + 2)),
        keys=keys,
        groupable=True,
    )


def _cell(value: Any) -> str:
    """A JSON value as CSV text: null empty, nested values as JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse_jsonl(data: bytes, digest: str, spec: Kind, prof: Profile) -> Body:
    """JSON lines (one object per line) to CSV with the union of keys, in first-seen order."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableBody(
            f"not UTF-8 text (byte 0x{data[exc.start : exc.start + 1].hex()}); send UTF-8",
            line=line,
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    objects: list[dict[str, Any]] = []
    lines: list[int] = []
    columns: dict[str, None] = {}
    for n, raw in enumerate(text.split("\n"), start=1):
        s = raw.strip()
        if not s:
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise UnreadableBody(
                f"not valid JSON: {exc.msg} at character {exc.colno}", line=n
            ) from None
        if not isinstance(obj, dict):
            raise UnreadableBody(
                f"expected one JSON object per line, got {type(obj).__name__}", line=n
            )
        for k in obj:
            if k not in columns:
                if not k.strip():
                    raise UnreadableBody("a JSON object has an empty key", line=n)
                columns[k] = None
        objects.append(obj)
        lines.append(n)
    if not objects:
        raise UnreadableBody("the body holds no JSON objects", line=1)
    if not columns:
        raise UnreadableBody("the JSON objects have no keys: expected the kind's columns")
    names = list(columns)
    buf = io.StringIO()
    # "\r\n" as terminator makes the writer quote a value holding a lone "\r"; each record
    # then ends in "\n" like the records of CSV bodies, so either kind of body can share a file.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(names)
    header = buf.getvalue()[:-2]
    records: list[str] = []
    keys: list[tuple[str | None, ...] | None] = []
    sources = _key_sources(spec, prof, names)
    for obj in objects:
        row = [_cell(obj.get(k)) for k in names]
        buf.seek(0)
        buf.truncate()
        writer.writerow(row)
        records.append(buf.getvalue()[:-2] + "\n")
        keys.append(tuple(_null(row[i]) for i in sources) if sources is not None else None)
    return Body(
        "jsonl",
        len(data),
        digest,
        header=header,
        records="".join(records),
        lines=lines,
        keys=keys,
        groupable=sources is not None,
    )


# -- one group ------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One request: its body and who sent it.

    Attributes
    ----------
    body
        The decoded body.
    request_id
        The request's id; its rows are labelled ``api:<request_id>`` in quarantine.
    key_id
        The API key that sent it (never the token), or ``None``.
    idempotency_key
        The client's ``Idempotency-Key``, if any.
    received_at
        When it arrived (UTC, naive).
    """

    body: Body
    request_id: str
    key_id: str | None = None
    idempotency_key: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @property
    def label(self) -> str:
        return f"api:{self.request_id}"


def new_request_id() -> str:
    """A fresh request id: 20 lower-case hex digits.

    >>> len(new_request_id())
    20
    """
    return secrets.token_hex(10)


class _HeldCommit(Workspace):
    """A cursor whose :meth:`transaction` begins but leaves the commit to the caller.

    :func:`~signalloop.ingest.ingest_file` lands a file in one ``ws.transaction()`` block;
    run on this wrapper, that transaction stays open after it returns, so the relabelling
    and the ``api_requests`` rows commit together with the rows (or all roll back).
    """

    def __init__(self, ws: Workspace) -> None:
        self.path, self.read_only, self.con = ws.path, ws.read_only, ws.con
        self.open = False

    def __enter__(self) -> _HeldCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.open:
            self.rollback()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        self.open = True
        try:
            yield self.con
        except BaseException:
            self.rollback()
            raise

    def begin(self) -> None:
        if not self.open:
            self.con.execute("BEGIN TRANSACTION")
            self.open = True

    def commit(self) -> None:
        self.con.execute("COMMIT")
        self.open = False

    def rollback(self) -> None:
        self.open = False
        self.con.execute("ROLLBACK")


class _Mismatch(Exception):
    """The group's split did not add up to ingest's own counts (then: ingest one by one)."""


def ingest_group(
    ws: Workspace,
    kind: str,
    batches: Sequence[Batch],
    *,
    profile: str = "canonical",
    now: datetime | None = None,
    staging_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Ingest several requests' bodies as one file and answer each request.

    Parameters
    ----------
    ws
        The workspace (a cursor of it, for a thread), outside any transaction.
    kind
        The kind of every batch.
    batches
        The requests, in arrival order. Groupable bodies with the same header share one
        ingest; a body that is not groupable, or a group whose ingest fails or whose split
        does not add up, is ingested alone.
    profile
        The profile the bodies are read with.
    now
        Reference time for "in the future" checks (default: now).
    staging_dir
        Where the group's file is written (and removed afterwards); a temporary folder when
        ``None``.

    Returns
    -------
    list of dict
        One answer per batch, in order: ``status`` ``ok`` (or ``skipped``: this exact body
        was ingested before), ``rows_received``, ``rows_loaded``, ``rows_quarantined``,
        ``rows_already_present`` (``rows_existing`` in the workspace or earlier in the group,
        plus ``rows_folded``, copies inside the same body), ``quarantine_reasons`` (code ->
        count), ``quarantined`` (the first :data:`SAMPLE_ROWS` rows: line, column, code,
        reason), ``file``, ``ingest_id``, ``group_size``; or ``status`` ``failed`` with
        ``error``, ``line`` and ``column`` when ingest cannot read the body at all. Every
        answer that is not ``failed`` is also stored in ``api_requests``, in the same
        commit as the rows.
    """
    check_kind(kind)
    if not batches:
        return []
    ws.con.execute(API_REQUESTS_DDL)
    with _staging(staging_dir) as folder:
        groupable = all(b.body.groupable for b in batches)
        same = len({b.body.header for b in batches}) == 1
        if len(batches) > 1 and groupable and same:
            try:
                return _ingest_together(ws, kind, batches, profile, now, folder)
            except (_Mismatch, InputError):
                pass  # one by one below: each gets its own answer or error
        return [_ingest_alone(ws, kind, b, profile, now, folder) for b in batches]


@contextmanager
def _staging(folder: str | Path | None) -> Iterator[Path]:
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        yield Path(folder)
        return
    tmp = tempfile.mkdtemp(prefix="signalloop-intake-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(folder: Path, batches: Sequence[Batch]) -> Path:
    first = batches[0]
    path = folder / f"api-{first.request_id}{first.body.suffix}"
    if len(batches) == 1:
        path.write_bytes(first.body.file_bytes())
        return path
    assert first.body.header is not None
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(first.body.header + "\n")
        for b in batches:
            fh.write(b.body.records)
    return path


def _register_records(con: duckdb.DuckDBPyConnection, batches: Sequence[Batch]) -> None:
    """The temporary view ``_sl_recs(g, req, file, line)``: staged line -> request, line."""
    g: list[int] = []
    req: list[int] = []
    line: list[int] = []
    for i, b in enumerate(batches):
        start = len(g) + 2
        g.extend(range(start, start + len(b.body.lines)))
        req.extend([i] * len(b.body.lines))
        line.extend(b.body.lines)
    labels = pa.array([b.label for b in batches], pa.string())
    table = pa.table(
        {
            "g": pa.array(g, pa.int64()),
            "req": pa.array(req, pa.int32()),
            "file": labels.take(pa.array(req, pa.int32())),
            "line": pa.array(line, pa.int64()),
        }
    )
    con.register("_sl_recs", table)


def _relabel(
    con: duckdb.DuckDBPyConnection,
    ingest_id: int,
    staged: Path,
    batches: Sequence[Batch],
    *,
    quarantine: bool,
    duplicates: bool,
) -> None:
    """Give this ingest's quarantine and duplicates rows the requests' labels and lines
    (``_sl_recs`` maps them for a parsed body); only the tables that got rows are touched."""
    path = str(staged)
    mapped = batches[0].body.header is not None
    tables = [t for t, has in (("quarantine", quarantine), ("duplicates", duplicates)) if has]
    if mapped and quarantine:
        con.execute(
            "UPDATE quarantine SET file = r.file, line = r.line FROM _sl_recs r "
            "WHERE quarantine.ingest_id = ? AND quarantine.file = ? AND quarantine.line = r.g",
            [ingest_id, path],
        )
    if mapped and duplicates:
        con.execute(
            "UPDATE duplicates SET file = r.file, first_line = r.line FROM _sl_recs r "
            "WHERE duplicates.ingest_id = ? AND duplicates.file = ? "
            "AND duplicates.first_line = r.g",
            [ingest_id, path],
        )
    label = batches[0].label  # whatever did not map (a single body only)
    for table in tables:
        con.execute(
            f"UPDATE {table} SET file = ? WHERE ingest_id = ? AND file = ?",
            [label, ingest_id, path],
        )
    ids = ",".join(b.request_id for b in batches)
    con.execute("UPDATE ingest_log SET file = ? WHERE ingest_id = ?", [f"api:{ids}", ingest_id])


def _ingest_alone(
    ws: Workspace,
    kind: str,
    batch: Batch,
    profile: str,
    now: datetime | None,
    folder: Path,
) -> dict[str, Any]:
    staged = _write(folder, [batch])
    held = _HeldCommit(ws)
    con = ws.con
    try:
        with held:
            try:
                res = ingest_file(held, kind, staged, profile=profile, now=now)
            except InputError as exc:
                con.execute(
                    "UPDATE ingest_log SET file = ? WHERE file = ? AND status = 'failed'",
                    [batch.label, str(staged)],
                )
                return _failed(batch, exc, staged)
            assert res.ingest_id is not None
            if res.status == "skipped":
                held.begin()
                answer = _skipped(con, kind, batch, res.ingest_id, res.message)
            else:
                bad, folded = res.rows_quarantined > 0, res.rows_folded > 0
                if batch.body.header is not None and (bad or folded):
                    _register_records(con, [batch])
                _relabel(con, res.ingest_id, staged, [batch], quarantine=bad, duplicates=folded)
                counts = {
                    "received": res.rows_read,
                    "loaded": res.rows_loaded,
                    "quarantined": res.rows_quarantined,
                    "existing": res.rows_existing,
                    "folded": res.rows_folded,
                }
                (answer,) = _answers(con, kind, res.ingest_id, [batch], [counts])
            _store(con, [batch], [answer], profile)
            held.commit()
            return answer
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister("_sl_recs")
        staged.unlink(missing_ok=True)


def _failed(batch: Batch, exc: InputError, staged: Path) -> dict[str, Any]:
    """The answer for a body ingest cannot read, its line mapped into the body as sent.

    The message names the request, never the staging file, and keeps its first line (a
    DuckDB error may go on with the SQL it ran).
    """
    line = exc.line
    body = batch.body
    if line is not None and body.header is not None:
        if 2 <= line < len(body.lines) + 2:
            line = body.lines[line - 2]
        elif body.source == "jsonl":
            line = None  # the header of the CSV we made: no line of the body
    return {
        "request_id": batch.request_id,
        "status": "failed",
        "error": exc.message.replace(str(staged), batch.label).split("\n")[0].strip(),
        "line": line,
        "column": exc.column,
    }


def _skipped(
    con: duckdb.DuckDBPyConnection, kind: str, batch: Batch, ingest_id: int, message: str
) -> dict[str, Any]:
    row = con.execute(
        "SELECT rows_read FROM ingest_log WHERE ingest_id = ?", [ingest_id]
    ).fetchone()
    received = int(row[0]) if row and row[0] is not None else max(batch.body.rows, 0)
    text = message.replace("already ingested", "this exact body was already ingested", 1)
    return _answer(
        batch,
        kind,
        ingest_id,
        "skipped",
        {"received": received, "existing": received},
        {},
        [],
        1,
        text,
    )


def _answer(
    batch: Batch,
    kind: str,
    ingest_id: int,
    status: str,
    counts: dict[str, int],
    reasons: dict[str, int],
    sample: list[dict[str, Any]],
    group_size: int,
    message: str = "",
) -> dict[str, Any]:
    existing, folded = counts.get("existing", 0), counts.get("folded", 0)
    quarantined = counts.get("quarantined", 0)
    return {
        "request_id": batch.request_id,
        "kind": kind,
        "status": status,
        "file": batch.label,
        "ingest_id": ingest_id,
        "rows_received": counts.get("received", 0),
        "rows_loaded": counts.get("loaded", 0),
        "rows_quarantined": quarantined,
        "rows_already_present": existing + folded,
        "rows_existing": existing,
        "rows_folded": folded,
        "quarantine_reasons": reasons,
        "quarantined": sample,
        "quarantined_more": max(quarantined - len(sample), 0),
        "group_size": group_size,
        "message": message,
        "replayed": False,
    }


def _answers(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    ingest_id: int,
    batches: Sequence[Batch],
    counts: Sequence[dict[str, int]],
) -> list[dict[str, Any]]:
    """Each request's answer, its quarantine reasons and first rows read back by label."""
    reasons: dict[str, dict[str, int]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    if not any(c.get("quarantined") for c in counts):
        return [
            _answer(b, kind, ingest_id, "ok", c, {}, [], len(batches))
            for b, c in zip(batches, counts, strict=True)
        ]
    for file, code, n in con.execute(
        "SELECT file, code, count(*) FROM quarantine WHERE ingest_id = ? "
        "GROUP BY ALL ORDER BY 1, 3 DESC, 2",
        [ingest_id],
    ).fetchall():
        reasons.setdefault(str(file), {})[str(code)] = int(n)
    for file, line, column, code, reason in con.execute(
        'SELECT file, line, "column", code, reason FROM quarantine WHERE ingest_id = ? '
        f"QUALIFY row_number() OVER (PARTITION BY file ORDER BY line) <= {SAMPLE_ROWS} "
        "ORDER BY file, line",
        [ingest_id],
    ).fetchall():
        samples.setdefault(str(file), []).append(
            {"line": line, "column": column, "code": code, "reason": reason}
        )
    return [
        _answer(
            b,
            kind,
            ingest_id,
            "ok",
            c,
            reasons.get(b.label, {}),
            samples.get(b.label, []),
            len(batches),
        )
        for b, c in zip(batches, counts, strict=True)
    ]


def request_digest(kind: str, profile: str, body_sha256: str) -> str:
    """What an ``Idempotency-Key`` replay must match: the kind, the profile and the body.

    >>> request_digest("crm", "canonical", "ab") == request_digest("spend", "canonical", "ab")
    False
    """
    return hashlib.sha256(f"{kind}\n{profile}\n{body_sha256}".encode()).hexdigest()


def _store(
    con: duckdb.DuckDBPyConnection,
    batches: Sequence[Batch],
    answers: Sequence[dict[str, Any]],
    profile: str,
) -> None:
    """One ``api_requests`` row per answered request (inside the caller's transaction)."""
    answered = datetime.now(UTC).replace(tzinfo=None)
    params: list[Any] = []
    for b, a in zip(batches, answers, strict=True):
        digest = request_digest(a["kind"], profile, b.body.sha256)
        params += [b.request_id, b.key_id, b.idempotency_key, digest, a["kind"]]
        params += [a["ingest_id"], a["status"], b.received_at, answered]
        params.append(json.dumps(a, ensure_ascii=False))
    row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS JSON))"
    con.execute(f"INSERT INTO api_requests VALUES {', '.join([row] * len(batches))}", params)


def _ingest_together(
    ws: Workspace,
    kind: str,
    batches: Sequence[Batch],
    profile: str,
    now: datetime | None,
    folder: Path,
) -> list[dict[str, Any]]:
    """One ingest for several parsed bodies of one header; the split checked against it."""
    spec = KINDS[kind]
    staged = _write(folder, batches)
    held = _HeldCommit(ws)
    con = ws.con
    try:
        with held:
            try:
                res = ingest_file(held, kind, staged, profile=profile, now=now)
            except InputError:
                ids = ",".join(b.request_id for b in batches)
                con.execute(
                    "UPDATE ingest_log SET file = ? WHERE file = ? AND status = 'failed'",
                    [f"api:{ids}", str(staged)],
                )
                raise
            if res.status != "ok" or not held.open:
                raise _Mismatch("skipped as a whole")
            ingest_id = res.ingest_id
            assert ingest_id is not None
            total = sum(len(b.body.lines) for b in batches)
            if res.rows_read != total:
                raise _Mismatch(f"ingest read {res.rows_read} rows, the bodies hold {total}")
            clean = res.rows_existing == 0 and res.rows_folded == 0
            if res.rows_quarantined or not clean:
                _register_records(con, batches)
            if clean:  # every good record is new and its key's only one: all loaded
                counts = _split_clean(con, ingest_id, batches, res.rows_quarantined)
            else:
                prof = get_profile(profile)
                _register_keys(con, spec, prof, batches)
                key, campaign = _key_sql(spec, prof, _header_columns(batches))
                counts = _split(
                    con, spec, key, campaign, ingest_id, len(batches), res.rows_quarantined
                )
            if (
                sum(c["loaded"] for c in counts) != res.rows_loaded
                or sum(c["quarantined"] for c in counts) != res.rows_quarantined
            ):
                raise _Mismatch("the per-request counts do not add up to the ingest's")
            for b, c in zip(batches, counts, strict=True):
                c["received"] = len(b.body.lines)
            if not clean:
                _per_request_duplicates(con, spec, ingest_id, staged)
            _relabel(
                con,
                ingest_id,
                staged,
                batches,
                quarantine=res.rows_quarantined > 0,
                duplicates=False,  # rewritten per request above
            )
            answers = _answers(con, kind, ingest_id, batches, counts)
            _store(con, batches, answers, profile)
            held.commit()
            return answers
    finally:
        for view in ("_sl_recs", "_sl_keys"):
            with contextlib.suppress(duckdb.Error):
                con.unregister(view)
        con.execute("DROP TABLE IF EXISTS _sl_good")
        staged.unlink(missing_ok=True)


def _header_columns(batches: Sequence[Batch]) -> list[str]:
    header = batches[0].body.header
    assert header is not None
    return next(csv.reader([header], delimiter=csv_delimiter(header)))


def _register_keys(
    con: duckdb.DuckDBPyConnection, spec: Kind, prof: Profile, batches: Sequence[Batch]
) -> None:
    """``_sl_keys(g, req, <key source columns>)`` for records with the right field count."""
    columns = _header_columns(batches)
    plan = prof.plan(columns, spec.name)
    names = [plan.sources[k] for k in _kept(spec) if k in plan.sources]
    g: list[int] = []
    req: list[int] = []
    values: list[list[str | None]] = [[] for _ in names]
    line = 2
    for i, b in enumerate(batches):
        for keys in b.body.keys:
            if keys is not None:
                g.append(line)
                req.append(i)
                for col, v in zip(values, keys, strict=True):
                    col.append(v)
            line += 1
    data: dict[str, pa.Array] = {
        "_sl_g": pa.array(g, pa.int64()),
        "_sl_req": pa.array(req, pa.int32()),
    }
    for name, col in zip(names, values, strict=True):
        data[name] = pa.array(col, pa.string())
    con.register("_sl_keys", pa.table(data))


def _key_sql(spec: Kind, prof: Profile, columns: Sequence[str]) -> tuple[str, str]:
    """SQL over ``_sl_keys`` for the natural key as ingest writes it to ``duplicates``, and
    for the typed ``campaign_id``: the same mapping and typing SQL as validation."""
    plan = prof.plan(columns, spec.name)
    present = set(plan.sources)

    def typed(name: str) -> str:
        col = spec.column(name)
        text = _text_expr(col, plan, prof, present)
        value, _ = _typed(col, f"({text})", prof, "TIMESTAMP '2000-01-01 00:00:00'")
        return value

    key = " || chr(31) || ".join(f"coalesce(CAST({typed(k)} AS VARCHAR), '')" for k in spec.key)
    campaign = typed("campaign_id") if "campaign_id" in spec.names else "NULL"
    return key, campaign


def _stored_key_sql(spec: Kind) -> str:
    return " || chr(31) || ".join(
        f"coalesce(CAST({quote_ident(k)} AS VARCHAR), '')" for k in spec.key
    )


def _split(
    con: duckdb.DuckDBPyConnection,
    spec: Kind,
    key: str,
    campaign: str,
    ingest_id: int,
    n: int,
    quarantined: int,
) -> list[dict[str, int]]:
    """Per request: loaded, quarantined, existing (before or earlier in the group), folded.

    A good record is loaded when it is its key's first in the group and the key is among
    the rows this ingest landed; existing when it is its key's first in its request but not
    loaded; folded when an earlier record of the same request has its key: what ingesting
    the requests one by one, in order, would have counted.
    """
    per = _quarantined_per_request(con, ingest_id, n, quarantined)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _sl_good AS SELECT _sl_g AS g, _sl_req AS req, {key} "
        f"AS key, {campaign} AS campaign FROM _sl_keys WHERE _sl_g NOT IN "
        "(SELECT line FROM quarantine WHERE ingest_id = ?)",
        [ingest_id],
    )
    target = quote_ident(spec.name)
    rows = con.execute(
        f"""
        WITH landed_rows AS (
            SELECT {_stored_key_sql(spec)} AS key FROM {target} WHERE _ingest_id = ?
        ), landed AS (
            SELECT DISTINCT key FROM landed_rows
        ), ranked AS (
            SELECT req, key,
                row_number() OVER (PARTITION BY key ORDER BY g) AS in_group,
                row_number() OVER (PARTITION BY key, req ORDER BY g) AS in_req
            FROM _sl_good
        )
        SELECT req,
            count(*) FILTER (WHERE in_group = 1 AND key IN (SELECT key FROM landed)),
            count(*) FILTER (WHERE in_req > 1),
            count(*),
            (SELECT count(*) FROM landed_rows),
            (SELECT count(*) FROM landed)
        FROM ranked GROUP BY req
        """,
        [ingest_id],
    ).fetchall()
    counts = [{"loaded": 0, "quarantined": bad, "existing": 0, "folded": 0} for bad in per]
    landed = (0, 0)
    for req, loaded, folded, good, landed_rows, landed_keys in rows:
        c = counts[int(req)]
        c.update(loaded=int(loaded), folded=int(folded), existing=int(good - loaded - folded))
        landed = (int(landed_rows), int(landed_keys))
    total = sum(c["loaded"] for c in counts)
    if landed != (total, total):
        raise _Mismatch("the landed rows do not match the records' keys")
    return counts


def _quarantined_per_request(
    con: duckdb.DuckDBPyConnection, ingest_id: int, n: int, quarantined: int
) -> list[int]:
    """Quarantined records per request, by staged line; every line must map to a record."""
    per = [0] * n
    if not quarantined:
        return per
    row = con.execute(
        "SELECT count(*), count(r.g) FROM quarantine q LEFT JOIN _sl_recs r ON r.g = q.line "
        "WHERE q.ingest_id = ?",
        [ingest_id],
    ).fetchone()
    if row is None or int(row[0]) != quarantined or int(row[1]) != quarantined:
        raise _Mismatch("quarantined lines outside the staged records")
    for req, bad in con.execute(
        "SELECT r.req, count(*) FROM quarantine q JOIN _sl_recs r ON r.g = q.line "
        "WHERE q.ingest_id = ? GROUP BY 1",
        [ingest_id],
    ).fetchall():
        per[int(req)] = int(bad)
    return per


def _split_clean(
    con: duckdb.DuckDBPyConnection, ingest_id: int, batches: Sequence[Batch], quarantined: int
) -> list[dict[str, int]]:
    """The split when the group landed every good record (nothing existing, nothing folded)."""
    per = _quarantined_per_request(con, ingest_id, len(batches), quarantined)
    return [
        {"loaded": len(b.body.lines) - bad, "quarantined": bad, "existing": 0, "folded": 0}
        for b, bad in zip(batches, per, strict=True)
    ]


def _per_request_duplicates(
    con: duckdb.DuckDBPyConnection, spec: Kind, ingest_id: int, staged: Path
) -> None:
    """Replace the group's folded copies with each request's own (key, first line, copies)."""
    path = str(staged)
    con.execute(
        """
        INSERT INTO duplicates
        SELECT ?, ?, r.file, d.key, d.campaign, r.line, d.copies
        FROM (
            SELECT req, key, min(g) AS g, count(*) - 1 AS copies,
                any_value(campaign ORDER BY g) AS campaign
            FROM _sl_good GROUP BY req, key HAVING count(*) > 1
        ) d
        JOIN _sl_recs r ON r.g = d.g
        ORDER BY d.g
        """,
        [ingest_id, spec.name],
    )
    con.execute("DELETE FROM duplicates WHERE ingest_id = ? AND file = ?", [ingest_id, path])


# -- stored answers -------------------------------------------------------------------------------


def find_request(
    ws: Workspace,
    *,
    request_id: str | None = None,
    key_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """A stored answer, by request id or by (key id, ``Idempotency-Key``).

    Returns
    -------
    tuple or None
        ``(request_sha256, answer)`` (see :func:`request_digest`), or ``None`` when there
        is none (or no table yet).
    """
    if not ws.has_table("api_requests"):
        return None
    if request_id is not None:
        row = ws.con.execute(
            "SELECT request_sha256, response FROM api_requests WHERE request_id = ?", [request_id]
        ).fetchone()
    else:
        row = ws.con.execute(
            "SELECT request_sha256, response FROM api_requests WHERE key_id IS NOT DISTINCT FROM ? "
            "AND idempotency_key = ? ORDER BY received_at LIMIT 1",
            [key_id, idempotency_key],
        ).fetchone()
    if row is None:
        return None
    return str(row[0]), json.loads(row[1])


def _replay(found: tuple[str, dict[str, Any]], digest: str, idempotency_key: str) -> dict[str, Any]:
    stored, answer = found
    if stored != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was already used with a different body, kind "
            "or profile "
            f"(request {answer.get('request_id')}); use a new key for new data"
        )
    return {**answer, "replayed": True}


# -- the writer -----------------------------------------------------------------------------------


@dataclass
class _Job:
    kind: str
    profile: str
    batch: Batch
    future: Future[dict[str, Any]] = field(default_factory=Future)

    @property
    def group_key(self) -> tuple[str, str, str] | None:
        body = self.batch.body
        if not body.groupable or body.header is None:
            return None
        return (self.kind, self.profile, body.header)


class Intake:
    """One workspace's ingest queue: requests wait while one writer thread commits them.

    Parameters
    ----------
    open_ws
        Returns a context manager yielding a workspace cursor for the writer thread (the
        server's ``WorkspaceHandle.open``; :meth:`for_workspace` for a plain workspace).
    lock
        Held around every ingest into the workspace (the daily run's inbox ingest takes it
        too); a private lock when ``None``.
    max_body_bytes
        Body size limit, compressed and decompressed.
    group_rows
        A group is closed when the next request would take it past this many rows.
    linger
        Seconds a writer that wakes up waits for as many requests as its last commit took
        (clients answered together tend to come back together).
    staging_dir
        Where group files are written (removed after each ingest); a private temporary
        folder when ``None``.
    now
        Reference time for "in the future" checks (tests); the current time when ``None``.

    Examples
    --------
    >>> ws = Workspace(":memory:")
    >>> intake = Intake.for_workspace(ws)
    >>> body = b"touch_id,ts,user_id\\nt1,2026-01-01T10:00:00Z,u1\\n"
    >>> intake.submit("touchpoints", body, "text/csv")["rows_loaded"]
    1
    >>> intake.submit("touchpoints", body, "text/csv")["status"]
    'skipped'
    >>> intake.close()
    """

    def __init__(
        self,
        open_ws: Callable[[], AbstractContextManager[Workspace]],
        lock: threading.Lock | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        group_rows: int = GROUP_MAX_ROWS,
        linger: float = LINGER_SECONDS,
        staging_dir: str | Path | None = None,
        now: datetime | None = None,
    ) -> None:
        self._open = open_ws
        self._lock = lock if lock is not None else threading.Lock()
        self.max_body_bytes = max_body_bytes
        self.group_rows = group_rows
        self._own_staging = staging_dir is None
        self.staging_dir = Path(
            staging_dir if staging_dir is not None else tempfile.mkdtemp(prefix="sl-intake-")
        )
        if self._own_staging:  # removed at exit too, when nobody calls close()
            weakref.finalize(self, shutil.rmtree, self.staging_dir, ignore_errors=True)
        self.now = now
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.groups = 0  # ingests run (for the benchmark's report)
        self.linger = linger
        self._last = 0  # requests the last round took
        self._inflight = 0  # requests between submit() and their answer

    @classmethod
    def for_workspace(cls, ws: Workspace, **options: Any) -> Intake:
        """An intake on an open workspace: the writer works on its own cursor of it."""
        return cls(ws.cursor, **options)

    # -- requests -------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None = None,
        idempotency_key: str | None = None,
        principal_key_id: str | None = None,
        *,
        profile: str = "canonical",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Ingest one request's body; returns its answer once it is committed.

        Parameters
        ----------
        kind
            One of :data:`~signalloop.contract.KINDS`.
        body, content_type, content_encoding
            The body as received and its headers (see :func:`parse_body`).
        idempotency_key
            The client's ``Idempotency-Key``: the same key (for the same API key) returns
            the stored answer with ``replayed`` true and ingests nothing.
        principal_key_id
            The API key's id (never its token), which scopes idempotency keys.
        profile
            The profile to read the body with.
        request_id
            The request's id (a new one when ``None``).

        Returns
        -------
        dict
            The answer (see :func:`ingest_group`), with ``replayed``.

        Raises
        ------
        IntakeError
            :class:`UnknownKind`, :class:`BodyTooLarge`, :class:`UnsupportedBody`,
            :class:`UnreadableBody` (also when ingest cannot read the body, with the line
            and column), :class:`IdempotencyConflict`.
        """
        with self._cond:
            self._inflight += 1
        try:
            return self._submit(
                kind,
                body,
                content_type,
                content_encoding,
                idempotency_key,
                principal_key_id,
                profile,
                request_id,
            )
        finally:
            with self._cond:
                self._inflight -= 1

    def _submit(
        self,
        kind: str,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        idempotency_key: str | None,
        principal_key_id: str | None,
        profile: str,
        request_id: str | None,
    ) -> dict[str, Any]:
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise UnreadableBody(
                "an Idempotency-Key is 1 to 255 visible ASCII characters, got "
                f"{len(idempotency_key)} characters"
            )
        parsed = parse_body(
            body,
            content_type,
            content_encoding,
            kind=kind,
            profile=profile,
            max_bytes=self.max_body_bytes,
        )
        if idempotency_key is not None:
            with self._open() as ws:
                found = find_request(ws, key_id=principal_key_id, idempotency_key=idempotency_key)
            if found is not None:
                digest = request_digest(kind, profile, parsed.sha256)
                return _replay(found, digest, idempotency_key)
        batch = Batch(parsed, request_id or new_request_id(), principal_key_id, idempotency_key)
        job = _Job(kind, profile, batch)
        with self._cond:
            if self._closed:
                raise RuntimeError("this intake is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="signalloop-intake", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        answer = job.future.result()
        if answer["status"] == "failed":
            raise UnreadableBody(answer["error"], line=answer["line"], column=answer["column"])
        return answer

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        """The stored answer of a request, or ``None``."""
        with self._open() as ws:
            found = find_request(ws, request_id=request_id)
        return found[1] if found else None

    def close(self) -> None:
        """Answer what is queued, then stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._own_staging:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        self._manage_checkpoints()
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    if not self._cond.wait(IDLE_SECONDS) and self._inflight == 0:
                        self._checkpoint(idle=True)
                if not self._queue:
                    return
                # Requests still being parsed, and the clients answered by the last commit
                # (usually on their way back), are worth a short wait: one commit for all.
                deadline = time.monotonic() + self.linger
                while len(self._queue) < max(self._last, self._inflight) and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                jobs = list(self._queue)
                self._queue.clear()
                self._last = len(jobs)
            groups, later = self._plan(jobs)
            if later:
                with self._cond:
                    self._queue.extendleft(reversed(later))
            for group in groups:
                self._process(group)
            self._checkpoint(idle=False)

    # -- checkpoints ----------------------------------------------------------------------
    # DuckDB folds its write-ahead log into the database file at every 16 MB of log, inside
    # the commit that crosses the mark: the whole group waits for it (0.3-0.5 s, a third of
    # the writer's time under load, measured with py-spy). The writer takes that work off the
    # request path: automatic checkpoints are pushed out to WAL_CAP_BYTES, and the writer
    # checkpoints when no request is waiting or in flight, or at most every
    # CHECKPOINT_SECONDS under sustained load.
    def _manage_checkpoints(self) -> None:
        self._last_checkpoint = time.monotonic()
        self._wal: Path | None = None
        try:
            with self._open() as ws:
                if ws.path == ":memory:":
                    return
                self._wal = Path(str(ws.path) + ".wal")
                ws.con.execute(f"SET checkpoint_threshold = '{WAL_CAP_BYTES // 2**20}MB'")
        except Exception:  # keep DuckDB's own checkpoints
            self._wal = None

    def _checkpoint(self, *, idle: bool) -> None:
        if self._wal is None:
            return
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        due = time.monotonic() - self._last_checkpoint > CHECKPOINT_SECONDS
        if size < CHECKPOINT_MIN_BYTES or not (idle or due):
            return
        try:
            with self._lock, self._open() as ws:
                ws.con.execute("CHECKPOINT")
        except duckdb.Error:  # a transaction of the run is open: next time
            return
        self._last_checkpoint = time.monotonic()

    def _plan(self, jobs: list[_Job]) -> tuple[list[list[_Job]], list[_Job]]:
        """Groups in arrival order, and the jobs left for the next round.

        A job whose ``Idempotency-Key`` another job of this round already carries waits for
        the next round, so that it sees the first one's stored answer.
        """
        groups: list[list[_Job]] = []
        open_groups: dict[tuple[str, str, str], tuple[list[_Job], int]] = {}
        seen: set[tuple[str | None, str]] = set()
        later: list[_Job] = []
        for job in jobs:
            b = job.batch
            if b.idempotency_key is not None:
                scope = (b.key_id, b.idempotency_key)
                if scope in seen:
                    later.append(job)
                    continue
                seen.add(scope)
            key = job.group_key
            if key is None:
                groups.append([job])
                continue
            current = open_groups.get(key)
            rows = b.body.rows
            if current is not None and current[1] + rows <= self.group_rows:
                current[0].append(job)
                open_groups[key] = (current[0], current[1] + rows)
            else:
                group = [job]
                groups.append(group)
                open_groups[key] = (group, rows)
        return groups, later

    def _process(self, group: list[_Job]) -> None:
        try:
            with self._lock, self._open() as ws:
                fresh: list[_Job] = []
                for job in group:
                    b = job.batch
                    found = (
                        find_request(ws, key_id=b.key_id, idempotency_key=b.idempotency_key)
                        if b.idempotency_key is not None
                        else None
                    )
                    if found is None:
                        fresh.append(job)
                        continue
                    assert b.idempotency_key is not None
                    try:
                        digest = request_digest(job.kind, job.profile, b.body.sha256)
                        job.future.set_result(_replay(found, digest, b.idempotency_key))
                    except IdempotencyConflict as exc:
                        job.future.set_exception(exc)
                if fresh:
                    answers = ingest_group(
                        ws,
                        fresh[0].kind,
                        [j.batch for j in fresh],
                        profile=fresh[0].profile,
                        now=self.now,
                        staging_dir=self.staging_dir,
                    )
                    self.groups += 1
                    for job, answer in zip(fresh, answers, strict=True):
                        job.future.set_result(answer)
        except Exception as exc:
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
