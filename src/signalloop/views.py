"""What each page of the web app shows, as plain data (its JSON twin is exactly this).

Every function takes what the library already computed (a run's ``report.json``, the runs
table, the workspace's logs) and selects and shapes it for one page; nothing here recomputes a
check, an estimate or a decision. The web layer (:mod:`signalloop.web.pages`) renders these
dicts as HTML, or returns them as JSON.

>>> doc = {"as_of": "2026-03-31", "lens": {"verdict": "scale", "weakest": None, "checks": []},
...        "checks": {"campaigns": [], "signal_environment": {}}, "diagnosis": {"diagnoses": []}}
>>> overview(doc, None, {"running": False}, None)["lens"]["verdict"]
'scale'
"""

from __future__ import annotations

from typing import Any

from signalloop.errors import UsageError
from signalloop.store import Workspace

SEVERITY_ORDER = {"critical": 0, "warn": 1, "info": 2}
TOP_DIAGNOSES = 5


def _impact_key(d: dict[str, Any]) -> tuple[int, float]:
    impact = d.get("impact") or {}
    return (SEVERITY_ORDER.get(str(d.get("severity")), 3), -float(impact.get("spend_per_day") or 0))


def _lens_summary(lens: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": lens.get("verdict"),
        "weakest": lens.get("weakest"),
        "checks": [
            {
                "name": c["name"],
                "passed": c["passed"],
                "message": (c.get("evidence") or {}).get("message"),
            }
            for c in lens.get("checks", [])
        ],
    }


def overview(
    doc: dict[str, Any] | None,
    run: dict[str, Any] | None,
    running: dict[str, Any],
    next_run: str | None,
) -> dict[str, Any]:
    """The overview: lens verdict and weakest link, signal environment over time, gates, the top
    diagnoses by impact, the last run and the next (``doc`` is ``None`` before any run)."""
    base: dict[str, Any] = {"last_run": run, "running": running, "next_run": next_run}
    if doc is None:
        return base | {"as_of": None, "message": "no run yet: start one on the Runs page"}
    checks = doc.get("checks") or {}
    diags = sorted((doc.get("diagnosis") or {}).get("diagnoses", []), key=_impact_key)
    return base | {
        "as_of": doc["as_of"],
        "lens": _lens_summary(doc.get("lens") or {}),
        "signal_environment": {
            k: v.get("score") for k, v in (checks.get("signal_environment") or {}).items()
        },
        "environment_history": (doc.get("charts") or {}).get("signal_environment"),
        "gates": [
            {"campaign_id": c["campaign_id"], "gate": c["gate"], "reasons": c["reasons"]}
            for c in checks.get("campaigns", [])
        ],
        "diagnoses": diags[:TOP_DIAGNOSES],
        "diagnoses_total": len(diags),
        "allocation": _allocation_total(doc.get("allocation")),
    }


def _allocation_total(a: dict[str, Any] | None) -> dict[str, Any] | None:
    if not a:
        return None
    moved = [x for x in a["arms"] if round(x["recommended"], 2) != round(x["current"], 2)]
    return {"budget": a["budget"], "lines": len(a["arms"]), "changed": len(moved)}


def campaign_ids(doc: dict[str, Any]) -> list[str]:
    """Every campaign a run's report knows of."""
    ids = {c["campaign_id"] for c in (doc.get("checks") or {}).get("campaigns", [])}
    ids |= {c["campaign_id"] for c in doc["state"]["nowcast"].get("campaigns", [])}
    return sorted(str(i) for i in ids)


def _ratio(num: Any, den: Any) -> float | None:
    return round(float(num) / float(den), 4) if num is not None and den else None


def _daily(cohorts: list[dict[str, Any]], cid: str, unit: str) -> dict[str, list[Any]]:
    """A campaign's daily observed and nowcast cost per outcome and ROAS, with 90% intervals."""
    rows = [c for c in cohorts if c["campaign_id"] == cid]
    got, want = ("observed_conversions", "expected_conversions")
    if unit == "deal":
        got, want = ("observed_deals", "expected_deals")
    return {
        "dates": [r["date"] for r in rows],
        "spend": [r["spend"] for r in rows],
        "observed": [r[got] for r in rows],
        "expected": [r[want] for r in rows],
        "observed_cost": [_ratio(r["spend"], r[got]) for r in rows],
        "nowcast_cost": [_ratio(r["spend"], r[want]) for r in rows],
        "cost_low": [_ratio(r["spend"], r["upper"]) for r in rows],
        "cost_high": [_ratio(r["spend"], r["lower"]) for r in rows],
        "observed_roas": [_ratio(r["observed_value"], r["spend"]) for r in rows],
        "nowcast_roas": [_ratio(r["expected_value"], r["spend"]) for r in rows],
        "roas_low": [_ratio(r["value_lower"], r["spend"]) for r in rows],
        "roas_high": [_ratio(r["value_upper"], r["spend"]) for r in rows],
        "excluded": [bool(r.get("excluded")) for r in rows],
    }


def campaign(
    doc: dict[str, Any],
    cid: str,
    *,
    decision: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
    days: int = 28,
) -> dict[str, Any]:
    """One campaign: observed against nowcast CPA/ROAS with intervals, outage windows, the
    learning-phase timeline with edits by actor, creative fatigue, its diagnoses with evidence,
    model scores, its budget line and the routing of its open leads.

    Raises :class:`~signalloop.errors.UsageError` for a campaign the run does not know.
    """
    known = campaign_ids(doc)
    if cid not in known:
        raise UsageError(f"no campaign {cid!r} in the run of {doc['as_of']}; known: {known}")
    checks = doc.get("checks") or {}
    nc = doc["state"]["nowcast"]
    crm = nc.get("crm") or {}
    gate = next((c for c in checks.get("campaigns", []) if c["campaign_id"] == cid), None)
    arm = next(
        (a for a in (doc.get("allocation") or {}).get("arms", []) if a["campaign_id"] == cid),
        None,
    )
    diags = [
        d for d in (doc.get("diagnosis") or {}).get("diagnoses", []) if d["campaign_id"] == cid
    ]
    charts = doc.get("charts") or {}
    outages = [
        o for o in (charts.get("conversions") or {}).get("outages", []) if o["campaign_id"] == cid
    ]
    click = _daily(nc.get("cohorts", []), cid, "conversion")
    deal = _daily(crm.get("cohorts", []), cid, "deal")
    cut = {k: v[-days:] for k, v in click.items()}
    cut_deal = {k: v[-days:] for k, v in deal.items()}
    leads = (routing or {}).get("leads") or []
    return {
        "as_of": doc["as_of"],
        "campaign_id": cid,
        "gate": gate,
        "nowcast": next((c for c in nc.get("campaigns", []) if c["campaign_id"] == cid), None),
        "nowcast_crm": next((c for c in crm.get("campaigns", []) if c["campaign_id"] == cid), None),
        "daily": cut,
        "daily_crm": cut_deal if cut_deal["dates"] else None,
        "outages": outages,
        "findings": [f for f in checks.get("findings", []) if f.get("campaign_id") == cid],
        "phase": [e for e in doc["state"]["phase"].get("entities", []) if e["campaign_id"] == cid],
        "timeline": [
            e
            for e in (charts.get("learning_timeline") or {}).get("entities", [])
            if e["campaign_id"] == cid
        ],
        "fatigue": [
            c for c in doc["state"]["fatigue"].get("creatives", []) if c["campaign_id"] == cid
        ],
        "fatigue_curves": [
            c
            for c in (charts.get("fatigue_curves") or {}).get("creatives", [])
            if c["campaign_id"] == cid
        ],
        "diagnoses": sorted(diags, key=_impact_key),
        "models": model_scores(doc),
        "allocation": arm,
        "decision": decision,
        "routing": None
        if routing is None
        else {k: routing.get(k) for k in ("outcome", "threshold", "base_rate", "trained", "error")}
        | {
            "leads": [lead for lead in leads if lead.get("campaign_id") == cid],
        },
    }


def model_scores(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's live (time-ordered) scores from the run."""
    out = []
    for m in doc.get("models") or []:
        ts = m.get("time_split") or {}
        out.append(
            {
                "outcome": m["outcome"],
                "status": m["status"],
                "reason": m.get("reason"),
                "rows": m.get("rows"),
                "positives": m.get("positives"),
                "auc": ts.get("auc"),
                "log_loss": ts.get("log_loss"),
                "brier": ts.get("brier"),
                "ece": ts.get("ece"),
                "calibration": m.get("calibration"),
            }
        )
    return out


def allocation(doc: dict[str, Any], decided: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Today against recommended per campaign with intervals and reasons, and each decision."""
    a = doc.get("allocation")
    gates = {c["campaign_id"]: c for c in (doc.get("checks") or {}).get("campaigns", [])}
    if not a:
        return {"as_of": doc["as_of"], "run_id": doc.get("run_id"), "lines": [], "budget": None}
    lines = []
    for arm in a["arms"]:
        cid = arm["campaign_id"]
        lines.append(
            arm
            | {
                "gate": (gates.get(cid) or {}).get("gate"),
                "decision": decided.get(cid),
            }
        )
    return {
        "as_of": doc["as_of"],
        "run_id": doc.get("run_id"),
        "budget": a["budget"],
        "policy": a["policy"],
        "objective": a["objective"],
        "unallocated": a.get("unallocated"),
        "unallocated_reason": a.get("unallocated_reason"),
        "lines": lines,
        "open": sum(1 for x in lines if x["decision"] is None),
    }


def _rows(ws: Workspace, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = ws.con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        r = dict(zip(cols, row, strict=True))
        for k, v in r.items():
            if hasattr(v, "isoformat"):
                r[k] = v.isoformat()
        out.append(r)
    return out


QUARANTINE_FILTERS = ("kind", "code", "file")


def quarantine(
    ws: Workspace,
    *,
    kind: str | None = None,
    code: str | None = None,
    file: str | None = None,
    limit: int | None = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """Quarantined rows, filtered by kind, reason code and file, with the counts per filter."""
    where, params = [], []
    for col, value in (("kind", kind), ("code", code), ("file", file)):
        if value:
            where.append(f'"{col}" = ?')
            params.append(value)
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    total = ws.con.execute(f"SELECT count(*) FROM quarantine {cond}", params).fetchone()
    page = "" if limit is None else f"LIMIT {int(limit)} OFFSET {int(offset)}"
    rows = _rows(
        ws,
        'SELECT ingest_id, kind, file, line, "column", code, reason, CAST(raw AS VARCHAR) AS raw '
        f"FROM quarantine {cond} ORDER BY ingest_id, line {page}",
        params,
    )
    facets = {
        col: [
            {"value": v, "rows": n}
            for v, n in ws.con.execute(
                f'SELECT "{col}", count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1'
            ).fetchall()
        ]
        for col in QUARANTINE_FILTERS
    }
    return {
        "filters": {"kind": kind, "code": code, "file": file},
        "total": int(total[0]) if total else 0,
        "offset": offset,
        "rows": rows,
        "facets": facets,
    }


def data(ws: Workspace, doc: dict[str, Any] | None, **filters: Any) -> dict[str, Any]:
    """The data page: ingest log, quarantine (filtered), what the workspace can learn from
    (from the last run) and the push ledger."""
    from signalloop.push import ledger

    log = _rows(
        ws,
        "SELECT ingest_id, started_at, kind, file, profile, status, rows_read, rows_loaded, "
        "rows_quarantined, rows_existing, rows_folded, message FROM ingest_log "
        "ORDER BY ingest_id DESC LIMIT 200",
        [],
    )
    return {
        "counts": ws.counts(),
        "ingest_log": log,
        "quarantine": quarantine(ws, **filters),
        "learnable": (doc or {}).get("learnable"),
        "push_ledger": {"summary": ledger.summary(ws), "recent": ledger.recent(ws, limit=50)},
    }


def runs_page(
    runs: list[dict[str, Any]], running: dict[str, Any], next_run: str | None
) -> dict[str, Any]:
    """Every past run with its status and report, the one in progress and the next."""
    return {"runs": runs, "running": running, "next_run": next_run}
