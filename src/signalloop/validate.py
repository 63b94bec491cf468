"""Map staged text columns onto a kind's contract and validate every row in one SQL pass.

:func:`validation_sql` builds one ``SELECT`` over the staging table that yields, per row,
the typed canonical columns, the kept attributes (JSON) and a list of problems, each with
the column, a reason code from :data:`REASON_CODES` and a message that shows the value.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from signalloop.contract import UTM_COLUMNS, Column, Kind
from signalloop.errors import InputError
from signalloop.profiles import PROFILES, Plan, Profile
from signalloop.readers import StagedFile, quote_ident, quote_literal

#: Timestamps further than this in the future (at ingest time) are quarantined.
FUTURE_TOLERANCE = "1 day"
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


# -- mapping and validation ---------------------------------------------------------------------


def _clean(expr: str) -> str:
    """Trim surrounding spaces (only where there are any: trimming every cell is slow)."""
    return (
        f"CASE WHEN {expr} LIKE ' %' OR {expr} LIKE '% ' THEN NULLIF(trim({expr}), '') "
        f"ELSE NULLIF({expr}, '') END"
    )


def _blank_is_null(expr: str) -> str:
    """The value as written, but null when it is empty or only spaces."""
    return f"CASE WHEN trim({expr}) = '' THEN NULL ELSE {expr} END"


def _problem(cond: str, column: str, code: str, reason_sql: str) -> str:
    """SQL for one validation rule: a struct (column, code, reason) when ``cond`` holds."""
    assert code in REASON_CODES, code
    return (
        f"CASE WHEN {cond} THEN {{'column': {quote_literal(column)}, "
        f"'code': {quote_literal(code)}, 'reason': {reason_sql}}} END"
    )


def _number(s: str, profile: Profile) -> str:
    """SQL for the number in the cleaned text ``s`` (``NULL`` when it is not one), the
    profile's thousands separator (Google Ads: ``1,234``) taken out first."""
    if profile.thousands:
        s = f"replace({s}, {quote_literal(profile.thousands)}, '')"
    return f"TRY_CAST({s} AS DOUBLE)"


def _typed(col: Column, s: str, profile: Profile, now: str) -> tuple[str, list[str]]:
    """SQL for the typed value of ``col`` given its cleaned text ``s``, and its problems."""
    name = col.name
    problems: list[str] = []
    if col.required:
        problems.append(_problem(f"{s} IS NULL", name, "missing_value", "'missing required value'"))
    shown = f"'''' || {s} || ''''"
    if col.type in ("int", "float"):
        d = _number(s, profile)
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
    if col.type in ("date", "ts"):
        fmt = profile.date_format if col.type == "date" else profile.timestamp_format
        if col.type == "date":
            parsed = f"TRY_STRPTIME({s}, {quote_literal(fmt)})" if fmt else None
            value = f"CAST({parsed} AS DATE)" if parsed else f"TRY_CAST({s} AS DATE)"
            limit = f"CAST({now} + INTERVAL {FUTURE_TOLERANCE} AS DATE)"
            noun, code = "date", "bad_date"
        else:
            value = (
                f"TRY_STRPTIME({s}, {quote_literal(fmt)})"
                if fmt
                else f"CAST(TRY_CAST({s} AS TIMESTAMPTZ) AS TIMESTAMP)"
            )
            limit = f"{now} + INTERVAL {FUTURE_TOLERANCE}"
            noun, code = "timestamp", "bad_timestamp"
        expected = fmt or ("YYYY-MM-DD" if col.type == "date" else "ISO 8601")
        problems.append(
            _problem(
                f"{s} IS NOT NULL AND {value} IS NULL",
                name,
                code,
                f"'not a {noun} (expected {expected}): ' || {shown}",
            )
        )
        problems.append(
            _problem(f"{value} > {limit}", name, "future", f"'{noun} in the future: ' || {shown}")
        )
        return value, problems
    if col.type == "enum":
        assert col.choices is not None
        value = f"lower({s})"
        allowed = ", ".join(quote_literal(c) for c in col.choices)
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
        raw = f"CAST({quote_ident(plan.sources[col.name])} AS VARCHAR)"
        # UTM values keep their spelling (spaces included): utm_hygiene reports the variants.
        expr = _clean(raw) if col.name not in UTM_COLUMNS else _blank_is_null(raw)
    elif col.name in plan.constants:
        expr = quote_literal(plan.constants[col.name])
    else:
        expr = "CAST(NULL AS VARCHAR)"
    if col.name in UTM_COLUMNS and "landing_url" in present:
        url = _clean(f"CAST({quote_ident(plan.sources['landing_url'])} AS VARCHAR)")
        from_url = (
            f"NULLIF(url_decode(replace(regexp_extract({url}, "
            f"'[?&]{col.name}=([^&#]*)', 1), '+', ' ')), '')"
        )
        expr = f"CASE WHEN {expr} IS NULL THEN {from_url} ELSE {expr} END"
    vmap = profile.value_map(col.name)
    if vmap:
        cases = " ".join(
            f"WHEN {quote_literal(k)} THEN {quote_literal(v)}" for k, v in vmap.items()
        )
        key = f"lower(regexp_replace({expr}, '\\s+', ' ', 'g'))"
        expr = f"COALESCE(CASE {key} {cases} END, {expr})"
    if col.name == "stage":
        expr = f"lower({expr})"
    return expr


def validation_sql(kind: Kind, plan: Plan, profile: Profile, src: StagedFile, now: str) -> str:
    present = set(plan.sources)
    texts = {c.name: _text_expr(c, plan, profile, present) for c in kind.columns}
    inner = ", ".join(f"{texts[c.name]} AS {quote_ident('t_' + c.name)}" for c in kind.columns)
    typed: list[str] = []
    problems: list[str] = []
    for c in kind.columns:
        value, probs = _typed(c, quote_ident("t_" + c.name), profile, now)
        typed.append(f"{value} AS {quote_ident(c.name)}")
        problems.extend(probs)
    if kind.name == "spend":
        # (numbers as the typed columns read them: "1,500" clicks of "1,200" impressions)
        clicks, impressions = (_number(f"t_{c}", profile) for c in ("clicks", "impressions"))
        problems.append(
            _problem(
                f"{clicks} > {impressions}",
                "clicks",
                "clicks_exceed_impressions",
                "'clicks (' || t_clicks || ') exceed impressions (' || t_impressions || ')'",
            )
        )
    if profile.summary_prefixes and src.headers:
        first = quote_ident(src.headers[0])
        cond = " OR ".join(
            f"starts_with(trim({first}), {quote_literal(p)})" for p in profile.summary_prefixes
        )
        # first, so that a total row is reported as such rather than by its odd date
        problems.insert(
            0, _problem(cond, src.headers[0], "summary_row", "'report summary row, not data'")
        )
    if plan.attributes:
        pairs = ", ".join(f"{quote_literal(a)}, {quote_ident(a)}" for a in plan.attributes)
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


def melt(con: duckdb.DuckDBPyConnection, plan: Plan) -> Plan:
    """Unpivot wide stage-date columns into ``_melted`` (one row per record and stage)."""
    assert plan.melt is not None
    keep = [h for h in _melt_keep(plan)]
    keep_sql = ", ".join(quote_ident(h) for h in dict.fromkeys(keep))
    keep_sql = (keep_sql + ", ") if keep_sql else ""
    parts = []
    for header, stage in plan.melt.items():
        parts.append(
            f"SELECT _rec, {keep_sql}{quote_literal(stage)} AS __stage, "
            f"{quote_ident(header)} AS __ts FROM _rawv "
            f"WHERE {_clean(quote_ident(header))} IS NOT NULL"
        )
    none = " AND ".join(f"{_clean(quote_ident(h))} IS NULL" for h in plan.melt)
    parts.append(
        f"SELECT _rec, {keep_sql}CAST(NULL AS VARCHAR) AS __stage, CAST(NULL AS VARCHAR) AS __ts "
        f"FROM _rawv WHERE {none}"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _melted AS " + " UNION ALL ".join(parts))
    sources = {k: v for k, v in plan.sources.items() if k not in ("stage", "ts")}
    moved = [v for k, v in plan.sources.items() if k in ("stage", "ts")]
    sources.update({"stage": "__stage", "ts": "__ts"})
    return Plan(sources, plan.constants, plan.attributes + moved, plan.melt)


def missing_columns_error(
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
        msg += (
            ". If the export covers one reporting period, pass --date YYYY-MM-DD (for the "
            "inbox of signalloop run: put the date in the file name)"
        )
    for other in PROFILES.values():
        if other.name == profile.name:
            continue
        p2 = other.plan(headers, kind.name)
        if all(c in p2.sources or c in p2.constants or c == "date" for c in kind.required):
            msg += f". It looks like a {other.name} export: try --profile {other.name}"
            break
    column = "date" if missing == ["date"] else None  # what `--date` (or a file name) supplies
    return InputError(msg, file=path, line=1 if headers else None, column=column)
