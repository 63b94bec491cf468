"""The GAQL subset and ``POST /{version}/customers/{cid}/googleAds:search``.

``googleAds:search``: see :func:`parse_gaql`; rows as ``{"biddingDataExclusion": {...}}`` in
proto3 JSON (int64 as strings, empty fields and an empty ``results`` omitted), pages of
``search_page_size`` rows with ``nextPageToken``.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signalloop.push.sandbox.common import _DIGITS, Payload, _camel, _Core
from signalloop.push.sandbox.google_errors import _gerr, _google_error, _normalised


@dataclass(frozen=True)
class GaqlQuery:
    """A parsed GAQL query (the subset :func:`parse_gaql` reads)."""

    fields: tuple[str, ...]
    resource: str
    conditions: tuple[tuple[str, str, Any], ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()  # (field, descending)
    limit: int | None = None


class GaqlError(ValueError):
    """A query the sandbox cannot run; ``code`` is a ``QueryError`` enum value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_GAQL_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)(?![\w.])"""
    r"""|(?P<op>!=|>=|<=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"""
)
_GAQL_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "ORDER", "BY", "ASC", "DESC", "LIMIT"}
_GAQL_KEYWORDS |= {"IN", "NOT", "LIKE", "IS", "NULL", "PARAMETERS"}


def _gaql_tokens(query: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = query.rstrip()
    while pos < len(text):
        while text[pos].isspace():
            pos += 1
        m = _GAQL_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos] in "'\"":
                raise GaqlError("STRING_NOT_TERMINATED", "Query contains unterminated string.")
            raise GaqlError("BAD_SYMBOL", f"Unexpected symbol {text[pos]!r} in the query.")
        pos = m.end()
        if m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("value", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("num") is not None:
            num = m.group("num")
            out.append(("value", float(num) if "." in num else int(num)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            word = m.group("word")
            if word.upper() in _GAQL_KEYWORDS:
                out.append(("kw", word.upper()))
            else:
                out.append(("word", word))
    return out


def parse_gaql(query: str) -> GaqlQuery:
    """Parse the GAQL subset the sandbox serves.

    Supported: ``SELECT f, ... FROM resource [WHERE cond AND ...] [ORDER BY f [ASC|DESC], ...]
    [LIMIT n]`` with conditions ``f = v``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``IN (v, ...)``,
    ``NOT IN (...)``, ``LIKE 'x%'``, ``IS NULL``, ``IS NOT NULL``; values are quoted strings,
    numbers or bare enum constants (``status = ENABLED``). Not supported (``GaqlError``):
    ``OR`` (GAQL has none either), ``BETWEEN``, ``DURING``, ``CONTAINS``, ``PARAMETERS``.

    >>> q = parse_gaql("SELECT bidding_data_exclusion.name FROM bidding_data_exclusion "
    ...                "WHERE bidding_data_exclusion.status = 'ENABLED' LIMIT 5")
    >>> q.resource, q.conditions, q.limit
    ('bidding_data_exclusion', (('bidding_data_exclusion.status', '=', 'ENABLED'),), 5)
    >>> parse_gaql("SELECT name")
    Traceback (most recent call last):
    ...
    signalloop.push.sandbox.gaql.GaqlError: Missing FROM clause.
    """
    toks = _gaql_tokens(query)
    i = 0

    def peek() -> tuple[str, Any] | None:
        return toks[i] if i < len(toks) else None

    def take() -> tuple[str, Any]:
        nonlocal i
        if i >= len(toks):
            raise GaqlError("UNEXPECTED_END_OF_QUERY", "Query is incomplete and cannot be parsed.")
        i += 1
        return toks[i - 1]

    def expect_kw(kw: str, code: str, message: str) -> None:
        tok = peek()
        if tok != ("kw", kw):
            raise GaqlError(code, message)
        take()

    def field_name() -> str:
        kind, val = take()
        if kind != "word":
            raise GaqlError("BAD_FIELD_NAME", f"Expected a field name, found {val!r}.")
        return str(val)

    def value() -> Any:
        kind, val = take()
        if kind in ("value", "word"):
            return val
        raise GaqlError("BAD_VALUE", f"Expected a value, found {val!r}.")

    expect_kw("SELECT", "EXPECTED_SELECT", "SELECT is missing at the beginning of query.")
    fields = [field_name()]
    while peek() == ("op", ","):
        take()
        fields.append(field_name())
    expect_kw("FROM", "EXPECTED_FROM", "Missing FROM clause.")
    resource = field_name()
    conditions: list[tuple[str, str, Any]] = []
    order: list[tuple[str, bool]] = []
    limit: int | None = None
    if peek() == ("kw", "WHERE"):
        take()
        while True:
            name = field_name()
            kind, op = take()
            if (kind, op) == ("kw", "NOT"):
                expect_kw("IN", "BAD_OPERATOR", "Expected IN after NOT.")
                op = "NOT IN"
            elif (kind, op) == ("kw", "IS"):
                if peek() == ("kw", "NOT"):
                    take()
                    op = "IS NOT NULL"
                else:
                    op = "IS NULL"
                expect_kw("NULL", "BAD_OPERATOR", "Expected NULL after IS.")
            elif kind == "kw" and op in ("IN", "LIKE"):
                pass
            elif kind != "op" or op in ("(", ")", ","):
                raise GaqlError("BAD_OPERATOR", f"Invalid operator {op!r}.")
            if op in ("IN", "NOT IN"):
                if take() != ("op", "("):
                    raise GaqlError("EXPECTED_LIST", f"{op} needs a list in parentheses.")
                items = [value()]
                while peek() == ("op", ","):
                    take()
                    items.append(value())
                if take() != ("op", ")"):
                    raise GaqlError("EXPECTED_LIST", "Unterminated list.")
                conditions.append((name, op, tuple(items)))
            elif op in ("IS NULL", "IS NOT NULL"):
                conditions.append((name, op, None))
            else:
                v = value()
                if op == "LIKE" and not isinstance(v, str):
                    raise GaqlError("INVALID_VALUE_WITH_LIKE_OPERATOR", "LIKE takes a string.")
                conditions.append((name, op, v))
            if peek() == ("kw", "AND"):
                take()
                continue
            break
    if peek() == ("kw", "ORDER"):
        take()
        expect_kw("BY", "EXPECTED_BY", "Expecting ORDER BY to have BY.")
        while True:
            name = field_name()
            desc = False
            if peek() in (("kw", "ASC"), ("kw", "DESC")):
                desc = take()[1] == "DESC"
            order.append((name, desc))
            if peek() == ("op", ","):
                take()
                continue
            break
    if peek() == ("kw", "LIMIT"):
        take()
        kind, n = take()
        if kind != "value" or not isinstance(n, int):
            raise GaqlError("BAD_LIMIT_VALUE", f"LIMIT takes a number, got {n!r}.")
        if n <= 0:
            raise GaqlError(
                "LIMIT_VALUE_TOO_LOW", "The value passed to the limit clause is too low."
            )
        limit = n
    extra = peek()
    if extra is not None:
        raise GaqlError("UNEXPECTED_INPUT", f"Query has an unexpected extra part: {extra[1]!r}.")
    return GaqlQuery(tuple(fields), resource, tuple(conditions), tuple(order), limit)


def _gaql_match(actual: Any, op: str, expected: Any) -> bool:
    if op == "IS NULL":
        return actual in (None, "", [])
    if op == "IS NOT NULL":
        return actual not in (None, "", [])
    if isinstance(actual, list):
        raise GaqlError(
            "PROHIBITED_FIELD_IN_WHERE_CLAUSE", "Repeated fields cannot be filtered here."
        )

    def norm(v: Any) -> Any:
        if isinstance(v, str) and _DIGITS.fullmatch(v) and isinstance(expected, int):
            return int(v)
        return v

    a = norm(actual)
    if op == "IN":
        return a in tuple(norm(x) for x in expected)
    if op == "NOT IN":
        return a not in tuple(norm(x) for x in expected)
    if op == "LIKE":
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in expected)
        return isinstance(a, str) and re.fullmatch(pattern, a) is not None
    if a is None:
        return False
    try:
        if op == "=":
            return bool(a == expected)
        if op == "!=":
            return bool(a != expected)
        if op == "<":
            return bool(a < expected)
        if op == "<=":
            return bool(a <= expected)
        if op == ">":
            return bool(a > expected)
        if op == ">=":
            return bool(a >= expected)
    except TypeError as exc:
        raise GaqlError("BAD_VALUE", f"Cannot compare {a!r} with {expected!r}.") from exc
    raise GaqlError("BAD_OPERATOR", f"Invalid operator {op!r}.")


#: GAQL resources the sandbox serves: resource -> (JSON key of a row, field -> JSON key).
#: Issue 15's pulls add their resources here.
GAQL_RESOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "bidding_data_exclusion": (
        "biddingDataExclusion",
        {
            f: _camel(f)
            for f in (
                "resource_name",
                "data_exclusion_id",
                "scope",
                "status",
                "start_date_time",
                "end_date_time",
                "name",
                "description",
                "devices",
                "campaigns",
                "advertising_channel_types",
            )
        },
    )
}


_SEARCH_FIELDS = {
    "customerId": str,
    "query": str,
    "pageToken": str,
    "pageSize": int,
    "validateOnly": bool,
    "returnTotalResultsCount": bool,
    "summaryRowSetting": str,
    "searchSettings": dict,
}


class _GaqlSearch(_Core):
    """``googleAds:search`` over the sandbox's own state (:data:`GAQL_RESOURCES`)."""

    def _search(self, version: str, cid: str, payload: Any) -> Payload:
        req = _normalised(payload, _SEARCH_FIELDS, "")
        text = req.get("query")
        if not text:
            msg = "The required field was not present: query."
            return _google_error(
                400, msg, [_gerr("fieldError", "REQUIRED", msg, [{"fieldName": "query"}])], version
            )

        def query_error(code: str, msg: str) -> Payload:
            return _google_error(400, msg, [_gerr("queryError", code, msg)], version)

        try:
            q = parse_gaql(text)
        except GaqlError as exc:
            return query_error(exc.code, str(exc))
        spec = GAQL_RESOURCES.get(q.resource)
        if spec is None:
            return query_error(
                "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                f"Invalid resource type {q.resource!r} in the FROM clause (the sandbox serves "
                f"{', '.join(sorted(GAQL_RESOURCES))}).",
            )
        row_key, fields = spec
        for name in (*q.fields, *(c[0] for c in q.conditions), *(o[0] for o in q.order_by)):
            prefix, _, attr = name.partition(".")
            if prefix != q.resource:
                return query_error(
                    "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                    f"A field that comes from an incompatible resource was included: {name}.",
                )
            if attr not in fields:
                return query_error(
                    "UNRECOGNIZED_FIELD", f"Unrecognized field in the query: '{name}'."
                )
        rows = self._gaql_rows(q.resource, cid)
        try:
            rows = [
                r
                for r in rows
                if all(
                    _gaql_match(r.get(fields[c[0].partition(".")[2]]), c[1], c[2])
                    for c in q.conditions
                )
            ]
            for name, desc in reversed(q.order_by):
                key = fields[name.partition(".")[2]]
                rows.sort(key=_row_sort_key(key), reverse=desc)
        except GaqlError as exc:
            return query_error(exc.code, str(exc))
        if q.limit is not None:
            rows = rows[: q.limit]
        offset = 0
        token = req.get("pageToken")
        if token:
            with self._lock:
                saved = self._page_tokens.get(token)
            if saved is None or saved[:2] != (cid, text):
                msg = "Next page token specified in user request is invalid."
                return _google_error(
                    400, msg, [_gerr("requestError", "INVALID_PAGE_TOKEN", msg)], version
                )
            offset = saved[2]
        page = rows[offset : offset + self.search_page_size]
        selected = [
            "resource_name",
            *(f.partition(".")[2] for f in q.fields if f.partition(".")[2] != "resource_name"),
        ]
        out: dict[str, Any] = {}
        results = []
        for r in page:
            item = {
                fields[a]: r[fields[a]] for a in selected if r.get(fields[a]) not in (None, "", [])
            }
            results.append({row_key: item})
        if results:
            out["results"] = results
        out["fieldMask"] = ",".join(f"{row_key}.{fields[f.partition('.')[2]]}" for f in q.fields)
        if offset + self.search_page_size < len(rows):
            nxt = secrets.token_urlsafe(16)
            with self._lock:
                self._page_tokens[nxt] = (cid, text, offset + self.search_page_size)
            out["nextPageToken"] = nxt
        if req.get("returnTotalResultsCount") is True:
            out["totalResultsCount"] = str(len(rows))
        return 200, out

    def _gaql_rows(self, resource: str, cid: str) -> list[dict[str, Any]]:
        with self._lock:
            if resource == "bidding_data_exclusion":
                prefix = f"customers/{cid}/"
                return [
                    copy.deepcopy(ex)
                    for name, ex in self._exclusions.items()
                    if name.startswith(prefix)
                ]
        return []


def _row_sort_key(key: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def sort_key(row: dict[str, Any]) -> tuple[bool, Any]:
        return (row.get(key) is None, _sort_key(row.get(key)))

    return sort_key


def _sort_key(value: Any) -> Any:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return (0, int(value), "")
    if isinstance(value, int | float):
        return (0, value, "")
    return (1, 0, str(value))
