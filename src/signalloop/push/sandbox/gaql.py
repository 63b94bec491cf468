"""The GAQL subset, ``googleAds:search`` and ``googleAds:searchStream``.

``POST /{version}/customers/{cid}/googleAds:search``: see :func:`parse_gaql`; rows as
``{"biddingDataExclusion": {...}}`` (or ``{"campaign": {...}, "adGroup": {...}, "metrics":
{...}, "segments": {...}}``) in proto3 JSON (int64 as strings, doubles as numbers, empty fields
and an empty ``results`` omitted), pages of ``search_page_size`` rows with ``nextPageToken``.

``POST /{version}/customers/{cid}/googleAds:searchStream``: the same rows as a JSON array of
``SearchGoogleAdsStreamResponse`` batches (``results``, ``fieldMask``, ``requestId``) of
``stream_batch_size`` rows, no paging (googleapis ``google_ads_service.proto``: confirmed).

Rules enforced on the delivery reports (``ad_group``, ``campaign``; the rows
:meth:`~signalloop.push.sandbox.Sandbox.load_delivery` stored): a field of a resource the
``FROM`` resource cannot be selected with answers ``PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE``,
an unknown one ``UNRECOGNIZED_FIELD``; selecting ``segments.date`` without a condition on it
answers ``EXPECTED_FILTERS_ON_DATE_RANGE`` (QueryError enum: confirmed); without
``segments.date`` the metrics are summed over the filtered dates. ``metrics.cost_micros`` is the
cost in millionths of the account currency (PLATFORMS.md). Conditions on metrics filter the
daily rows before they are summed (a simplification of the API). ``change_event`` (the edit
history) and its rules: :mod:`.google_changes`.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signalloop.push.sandbox.budgets import _GoogleBudgets, _json_budget
from signalloop.push.sandbox.common import _DIGITS, Payload, _camel
from signalloop.push.sandbox.google_errors import _gerr, _google_error, _normalised, _ShapeError


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


@dataclass(frozen=True)
class GaqlField:
    """Where a GAQL field sits in a result row: ``row[obj][key]``, and its proto3 JSON kind
    (``int64`` values travel as strings, ``double`` as numbers)."""

    obj: str
    key: str
    #: "string" | "int64" | "double" | "enum" | "date" | "list" | "object" | "bool"
    kind: str = "string"


def _fields(prefix: str, names: dict[str, str]) -> dict[str, GaqlField]:
    obj = _camel(prefix)
    return {f"{prefix}.{n}": GaqlField(obj, _camel(n), kind) for n, kind in names.items()}


_CAMPAIGN = _fields(
    "campaign", {"resource_name": "string", "id": "int64", "name": "string", "status": "enum"}
)
_AD_GROUP = _fields(
    "ad_group",
    {
        "resource_name": "string",
        "id": "int64",
        "name": "string",
        "status": "enum",
        "campaign": "string",
    },
)
_CUSTOMER = _fields(
    "customer",
    {
        "resource_name": "string",
        "id": "int64",
        "currency_code": "string",
        "time_zone": "string",
        "descriptive_name": "string",
    },
)
_SEGMENTS = _fields("segments", {"date": "date"})
#: A campaign's budget (what ``signalloop apply`` reads): its attributed resource.
_CAMPAIGN_BUDGET = {
    "campaign.campaign_budget": GaqlField("campaign", "campaignBudget"),
    **_fields(
        "campaign_budget",
        {"resource_name": "string", "amount_micros": "int64", "explicitly_shared": "bool"},
    ),
}
_METRICS = _fields(
    "metrics",
    {
        "impressions": "int64",
        "clicks": "int64",
        "cost_micros": "int64",
        "conversions": "double",
        "conversions_value": "double",
    },
)


@dataclass(frozen=True)
class GaqlResource:
    """A resource ``FROM`` may name: the fields a query on it may select (its own and those of
    its attributed resources, segments and metrics), and the fields that identify one of its
    rows (metrics are summed over the rest when ``segments.date`` is not selected)."""

    fields: dict[str, GaqlField]
    keys: tuple[str, ...] = ()


#: GAQL resources the sandbox serves. ``ad_group`` and ``campaign`` are the delivery reports
#: (issue 15's pulls) over the rows :meth:`Sandbox.load_delivery` stored.
GAQL_RESOURCES: dict[str, GaqlResource] = {
    "bidding_data_exclusion": GaqlResource(
        _fields(
            "bidding_data_exclusion",
            {
                "resource_name": "string",
                "data_exclusion_id": "int64",
                "scope": "enum",
                "status": "enum",
                "start_date_time": "string",
                "end_date_time": "string",
                "name": "string",
                "description": "string",
                "devices": "list",
                "campaigns": "list",
                "advertising_channel_types": "list",
            },
        )
    ),
    "ad_group": GaqlResource(
        {**_AD_GROUP, **_CAMPAIGN, **_CUSTOMER, **_SEGMENTS, **_METRICS},
        keys=("ad_group.id",),
    ),
    "campaign": GaqlResource(
        {**_CAMPAIGN, **_CAMPAIGN_BUDGET, **_CUSTOMER, **_SEGMENTS, **_METRICS},
        keys=("campaign.id",),
    ),
    "customer": GaqlResource(dict(_CUSTOMER)),
    # the edit history (issue 15): see google_changes
    "change_event": GaqlResource(
        _fields(
            "change_event",
            {
                "resource_name": "string",
                "change_date_time": "string",
                "change_resource_type": "enum",
                "change_resource_name": "string",
                "client_type": "enum",
                "user_email": "string",
                "resource_change_operation": "enum",
                "changed_fields": "string",
                "old_resource": "object",
                "new_resource": "object",
                "campaign": "string",
                "ad_group": "string",
            },
        )
    ),
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
_STREAM_FIELDS = {"customerId": str, "query": str, "summaryRowSetting": str}


class _GaqlSearch(_GoogleBudgets):
    """``googleAds:search`` and ``googleAds:searchStream`` over the sandbox's own state
    (:data:`GAQL_RESOURCES`)."""

    def _query(self, version: str, cid: str, text: Any) -> tuple[GaqlQuery, list[dict[str, Any]]]:
        """Parse and run a query: its rows (full field name -> value); an error answer is
        raised as :class:`_ShapeError`."""
        if not text:
            msg = "The required field was not present: query."
            raise _ShapeError(
                _google_error(
                    400,
                    msg,
                    [_gerr("fieldError", "REQUIRED", msg, [{"fieldName": "query"}])],
                    version,
                )
            )

        def query_error(code: str, msg: str) -> _ShapeError:
            return _ShapeError(_google_error(400, msg, [_gerr("queryError", code, msg)], version))

        try:
            q = parse_gaql(text)
        except GaqlError as exc:
            raise query_error(exc.code, str(exc)) from None
        spec = GAQL_RESOURCES.get(q.resource)
        if spec is None:
            raise query_error(
                "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                f"Invalid resource type {q.resource!r} in the FROM clause (the sandbox serves "
                f"{', '.join(sorted(GAQL_RESOURCES))}).",
            )
        for name in (*q.fields, *(c[0] for c in q.conditions), *(o[0] for o in q.order_by)):
            if name not in spec.fields:
                prefix = name.partition(".")[0]
                if not any(f.startswith(prefix + ".") for f in spec.fields):
                    raise query_error(
                        "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                        f"A field that comes from an incompatible resource was included: {name}.",
                    )
                raise query_error(
                    "UNRECOGNIZED_FIELD", f"Unrecognized field in the query: '{name}'."
                )
        if "segments.date" in q.fields and not any(c[0] == "segments.date" for c in q.conditions):
            raise query_error(
                "EXPECTED_FILTERS_ON_DATE_RANGE",
                "Missing filters on date related fields: a query that selects segments.date "
                "must filter it to a finite date range.",
            )
        if q.resource == "change_event":
            problem = self._change_event_problem(q)
            if problem is not None:
                msg = problem[1]
                raise _ShapeError(
                    _google_error(400, msg, [_gerr("changeEventError", problem[0], msg)], version)
                )
        rows = self._gaql_rows(q.resource, cid)
        try:
            rows = [
                r for r in rows if all(_gaql_match(r.get(c[0]), c[1], c[2]) for c in q.conditions)
            ]
            if spec.keys and "segments.date" not in q.fields:
                rows = _summed(rows, spec.keys)
            for name, desc in reversed(q.order_by):
                rows.sort(key=_row_sort_key(name), reverse=desc)
        except GaqlError as exc:
            raise query_error(exc.code, str(exc)) from None
        if q.limit is not None:
            rows = rows[: q.limit]
        return q, rows

    def _search(self, version: str, cid: str, payload: Any) -> Payload:
        req = _normalised(payload, _SEARCH_FIELDS, "")
        text = str(req.get("query") or "")
        q, rows = self._query(version, cid, text)
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
        out: dict[str, Any] = {}
        results = [_result_row(q, r) for r in page]
        if results:
            out["results"] = results
        out["fieldMask"] = _field_mask(q)
        if offset + self.search_page_size < len(rows):
            nxt = secrets.token_urlsafe(16)
            with self._lock:
                self._page_tokens[nxt] = (cid, text, offset + self.search_page_size)
            out["nextPageToken"] = nxt
        if req.get("returnTotalResultsCount") is True:
            out["totalResultsCount"] = str(len(rows))
        return 200, out

    def _search_stream(self, version: str, cid: str, payload: Any) -> tuple[int, Any]:
        """``searchStream``: a JSON array of batches (``results``, ``fieldMask``,
        ``requestId``), every row of the query, no page tokens. A broken stream
        (:meth:`Sandbox.break_next_stream`) ends with an ``{"error": ...}`` element after its
        first batch, as a stream that failed midway does."""
        req = _normalised(payload, _STREAM_FIELDS, "")
        q, rows = self._query(version, cid, req.get("query"))
        size = self.stream_batch_size
        batches: list[dict[str, Any]] = []
        for i in range(0, max(len(rows), 1), size):
            batch: dict[str, Any] = {}
            chunk = rows[i : i + size]
            if chunk:
                batch["results"] = [_result_row(q, r) for r in chunk]
            batch["fieldMask"] = _field_mask(q)
            batch["requestId"] = secrets.token_urlsafe(12)
            batches.append(batch)
        with self._lock:
            broken = self._broken_streams > 0
            if broken:
                self._broken_streams -= 1
        if broken:
            msg = "Internal error encountered."
            _, err = _google_error(
                500, msg, [_gerr("internalError", "INTERNAL_ERROR", msg)], version
            )
            return 200, [*batches[:1], err]
        return 200, batches

    def _gaql_rows(self, resource: str, cid: str) -> list[dict[str, Any]]:
        """Every row of ``resource`` for the customer, keyed by full field name."""
        if resource == "change_event":
            return self._change_event_rows(cid, GAQL_RESOURCES[resource].fields)
        if resource == "bidding_data_exclusion":
            spec = GAQL_RESOURCES[resource].fields
            prefix = f"customers/{cid}/"
            with self._lock:
                found = [
                    copy.deepcopy(ex)
                    for name, ex in self._exclusions.items()
                    if name.startswith(prefix)
                ]
            return [{n: ex.get(f.key) for n, f in spec.items()} for ex in found]
        with self._lock:
            stored = list(self._delivery.get(("google", cid), {}).values())
            currency = self._currencies.get(("google", cid))
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        customer = {
            "customer.resource_name": f"customers/{cid}",
            "customer.id": cid,
            "customer.currency_code": currency,
            "customer.time_zone": str(self.google_time_zone),
            "customer.descriptive_name": f"Sandbox customer {cid}",
        }
        if resource == "customer":
            return [customer]
        for d in stored:
            camp = {
                "campaign.resource_name": f"customers/{cid}/campaigns/{d['campaign_id']}",
                "campaign.id": d["campaign_id"],
                "campaign.name": d.get("campaign_name"),
                "campaign.status": "ENABLED",
            }
            if resource == "ad_group":
                key: tuple[Any, ...] = (d["date"], d["campaign_id"], d["adset_id"])
                own = {
                    "ad_group.resource_name": f"customers/{cid}/adGroups/{d['adset_id']}",
                    "ad_group.id": d["adset_id"],
                    "ad_group.name": d.get("adset_name"),
                    "ad_group.status": "ENABLED",
                    "ad_group.campaign": camp["campaign.resource_name"],
                }
            else:
                key = (d["date"], d["campaign_id"])
                own = _json_budget(self._budget_of(cid, str(d["campaign_id"])))
            row = out.get(key)
            if row is None:
                row = out[key] = {
                    **customer,
                    **camp,
                    **own,
                    "segments.date": d["date"],
                    **dict.fromkeys(_METRICS, 0),
                }
            row["metrics.impressions"] += d["impressions"]
            row["metrics.clicks"] += d["clicks"]
            row["metrics.cost_micros"] += round(d["spend"] * 1_000_000)
            row["metrics.conversions"] += float(d["conversions"])
            row["metrics.conversions_value"] += float(d["conversion_value"])
        return [out[k] for k in sorted(out)]


def _summed(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows summed over the dates (a report without ``segments.date``)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r.get(x) for x in keys)
        have = out.get(k)
        if have is None:
            out[k] = {**r, "segments.date": None}
            continue
        for m in _METRICS:
            have[m] += r[m]
    return list(out.values())


def _json_value(value: Any, kind: str) -> Any:
    if kind == "int64":
        if value is None:
            return None
        # the simulator's ids (c01, c01_as1) are served as they are: a sandbox leniency, so
        # its account can be pulled back with the ids its other kinds use
        return (
            str(int(value))
            if isinstance(value, int | float) or _DIGITS.fullmatch(str(value))
            else str(value)
        )
    if kind == "double":
        return float(value) if value is not None else None
    if kind == "object":
        return copy.deepcopy(value)
    return value


def _result_row(q: GaqlQuery, row: dict[str, Any]) -> dict[str, Any]:
    """One result in proto3 JSON: nested objects, int64 as strings, empty values omitted; each
    selected resource's ``resourceName`` is always there, as the API returns it."""
    spec = GAQL_RESOURCES[q.resource].fields
    names = list(q.fields)
    for name in q.fields:
        prefix = name.partition(".")[0]
        rn = f"{prefix}.resource_name"
        if rn in spec and rn not in names:
            names.insert(0, rn)
    out: dict[str, Any] = {}
    for name in names:
        f = spec[name]
        value = row.get(name)
        if value in (None, "", []):
            continue
        out.setdefault(f.obj, {})[f.key] = _json_value(value, f.kind)
    return out


def _field_mask(q: GaqlQuery) -> str:
    spec = GAQL_RESOURCES[q.resource].fields
    return ",".join(f"{spec[f].obj}.{spec[f].key}" for f in q.fields)


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
