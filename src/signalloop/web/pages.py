"""The pages: overview, campaign, allocation, data and runs, each with a JSON twin.

``/w/{ws}/campaigns/c01`` renders HTML; ``/w/{ws}/campaigns/c01.json`` (or the same path with
``Accept: application/json``) returns the very dict the page was rendered from, built by
:mod:`signalloop.views`. Forms post back with a CSRF token and redirect (303) to the page.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from signalloop import approvals, views
from signalloop import report as rpt
from signalloop.errors import SignalloopError, UsageError
from signalloop.runs import get_run, list_runs, next_run, run_report
from signalloop.web.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Principal,
    authenticate,
    get_registry,
    login,
    require,
    session_hours,
)
from signalloop.web.registry import WorkspaceHandle

log = logging.getLogger("signalloop.web")
router = APIRouter()
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
READ = Depends(require("read"))
APPROVE = Depends(require("approve"))
#: Report documents kept parsed per workspace (the newest runs).
DOC_CACHE = 4
#: Seconds the newest run is trusted without looking at the runs table again.
CURRENT_SECONDS = 5.0


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


templates.env.filters["fmt"] = _fmt


# -- helpers --------------------------------------------------------------------------------------
def handle_of(request: Request, p: Principal) -> WorkspaceHandle:
    return get_registry(request).get(p.workspace)


def load_doc(h: WorkspaceHandle, run: dict[str, Any]) -> dict[str, Any] | None:
    """A run's report document, parsed once and kept (it is a megabyte of JSON)."""
    cache: dict[str, dict[str, Any]] = h.extras.setdefault("docs", {})
    rid = run["run_id"]
    if rid not in cache:
        with h.open() as ws:
            doc = run_report(ws, rid, run)
        if doc is None:
            return None
        cache[rid] = doc
        for old in sorted(cache)[:-DOC_CACHE]:
            cache.pop(old, None)
    return cache[rid]


def current(h: WorkspaceHandle) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(run row, report)`` of the newest successful run.

    Kept for :data:`CURRENT_SECONDS` and dropped when a run of this server ends, so readers of
    a busy server do not query the runs table on every page view.
    """
    now = time.monotonic()
    cached = h.extras.get("current")
    ended = h.runs.state()["last_run_id"]
    if cached is not None and now - cached[0] < CURRENT_SECONDS and cached[1] == ended:
        found: tuple[dict[str, Any], dict[str, Any]] | None = cached[2]
        return found
    with h.open() as ws:
        rows = list_runs(ws, limit=50)
    found = None
    for r in rows:
        if r["status"] == "ok":
            doc = load_doc(h, r)
            if doc is not None:
                found = (r, doc)
                break
    h.extras["current"] = (now, ended, found)
    return found


def warm(h: WorkspaceHandle) -> None:
    """Read the newest run and route its open leads ahead of the first page view."""
    try:
        found = current(h)
        if found is not None:
            _routing(h, found[1])
    except Exception:  # warming is best effort: a page view does the same and reports errors
        log.exception("warming the caches of workspace %s", h.name)


def _next_run(h: WorkspaceHandle) -> str | None:
    from datetime import datetime

    try:
        at = h.settings().serve.run_at
    except SignalloopError:
        return None
    return next_run(at, datetime.now()).isoformat(timespec="minutes") if at else None


def respond(
    request: Request,
    template: str,
    data: dict[str, Any],
    p: Principal,
    *,
    figures: Callable[[], list[tuple[str, go.Figure]]] | None = None,
    cache: tuple[WorkspaceHandle, str] | None = None,
    title: str = "",
    nav: str = "",
) -> Response:
    """The page, or its JSON twin (``data`` as is).

    ``figures`` makes the page's Plotly figures (only for HTML); with ``cache`` (the workspace
    and a key naming the run and page) their JSON is made once per run.
    """
    from signalloop.web.app import wants_json

    if wants_json(request):
        return JSONResponse(json.loads(json.dumps(data, default=str)))
    figs = _figures(figures, cache)
    return templates.TemplateResponse(
        request,
        template,
        {
            "d": data,
            "p": p,
            "ws": p.workspace,
            "csrf": p.csrf,
            "csrf_field": CSRF_FIELD,
            "figures": figs,
            "title": title,
            "nav": nav,
            "json_url": request.url.path
            + ".json"
            + (f"?{request.url.query}" if request.url.query else ""),
        },
    )


def _figures(
    make: Callable[[], list[tuple[str, go.Figure]]] | None,
    cache: tuple[WorkspaceHandle, str] | None,
) -> list[tuple[str, str]]:
    if make is None:
        return []
    if cache is None:
        return [(name, fig.to_json()) for name, fig in make()]
    h, key = cache
    store: dict[str, list[tuple[str, str]]] = h.extras.setdefault("figures", {})
    if key not in store:
        if len(store) > 64:
            store.clear()
        store[key] = [(name, fig.to_json()) for name, fig in make()]
    return store[key]


def render_error(request: Request, status: int, message: str) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "title": f"{status}", "p": None, "nav": ""},
        status_code=status,
    )


def _no_run(h: WorkspaceHandle) -> HTTPException:
    return HTTPException(
        404, f"workspace {h.name} has no finished run yet: start one on /w/{h.name}/runs"
    )


# -- login ----------------------------------------------------------------------------------------
def _safe_next(nxt: str | None, fallback: str) -> str:
    if nxt and nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return fallback


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    p = authenticate(request)
    if p is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(f"/w/{p.workspace}", status_code=303)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": next or "", "error": None, "p": None, "nav": "", "title": "log in"},
    )


@router.post("/login", include_in_schema=False)
def login_post(request: Request, key: str = Form(""), next: str = Form("")) -> Response:
    registry = get_registry(request)
    found = login(registry, key)
    if found is None:
        return templates.TemplateResponse(
            request,
            "login.html",
            {
                "next": next,
                "error": "that key is not valid here (unknown, revoked, or without the read scope)",
                "p": None,
                "nav": "",
                "title": "log in",
            },
            status_code=401,
        )
    p, value = found
    hours = session_hours(registry.get(p.workspace))
    resp = RedirectResponse(_safe_next(next, f"/w/{p.workspace}"), status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(hours * 3600),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


@router.post("/logout", include_in_schema=False)
def logout() -> Response:
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


# -- overview -------------------------------------------------------------------------------------
@router.get("/w/{ws}", tags=["pages"], summary="Overview", response_class=HTMLResponse)
@router.get("/w/{ws}.json", tags=["pages"], summary="Overview (JSON)")
def overview_page(request: Request, ws: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    found = current(h)
    run, doc = found if found else (None, None)
    data = views.overview(doc, run, h.runs.state(), _next_run(h)) | {"workspace": h.name}

    def figures() -> list[tuple[str, go.Figure]]:
        charts = (doc or {}).get("charts") or {}
        out = []
        if charts.get("signal_environment"):
            out.append(("environment", rpt.fig_environment(charts["signal_environment"])))
        if charts.get("conversions"):
            out.append(("conversions", rpt.fig_conversions(charts["conversions"])))
        return out

    return respond(
        request,
        "overview.html",
        data,
        p,
        figures=figures,
        cache=(h, f"{run['run_id']}:overview") if run else None,
        title="Overview",
        nav="overview",
    )


# -- campaign -------------------------------------------------------------------------------------
def _routing(h: WorkspaceHandle, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Open leads routed with the run's lead model, once per run (None without a lead model)."""
    cache: dict[str, Any] = h.extras.setdefault("routing", {})
    rid = str(doc.get("run_id"))
    if rid in cache:
        result: dict[str, Any] | None = cache[rid]
        return result
    from datetime import date

    from signalloop.models.api import route_workspace

    outcome = next(
        (
            m["outcome"]
            for m in doc.get("models") or []
            if m["outcome"] in ("sql", "won") and m["status"] != "skipped"
        ),
        None,
    )
    out: dict[str, Any] | None = None
    if outcome is not None:
        model = next(m for m in doc["models"] if m["outcome"] == outcome)
        try:
            with h.open() as ws:
                out = route_workspace(
                    ws,
                    folder=model["model_dir"],
                    outcome=outcome,
                    as_of=date.fromisoformat(doc["as_of"]),
                    settings=h.settings(),
                )
        except SignalloopError as exc:
            out = {"outcome": outcome, "error": str(exc), "leads": []}
    cache.clear()
    cache[rid] = out
    return out


@router.get(
    "/w/{ws}/campaigns/{cid}", tags=["pages"], summary="Campaign", response_class=HTMLResponse
)
@router.get("/w/{ws}/campaigns/{cid}.json", tags=["pages"], summary="Campaign (JSON)")
def campaign_page(request: Request, ws: str, cid: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    found = current(h)
    if found is None:
        raise _no_run(h)
    run, doc = found
    if cid not in views.campaign_ids(doc):
        raise HTTPException(404, f"no campaign {cid!r} in the run of {doc['as_of']}")
    with h.open() as w:
        decided = approvals.decisions(w, run["run_id"]).get(cid)
    data = views.campaign(doc, cid, decision=decided, routing=_routing(h, doc))
    data["workspace"] = h.name
    return respond(
        request,
        "campaign.html",
        data,
        p,
        figures=lambda: campaign_figures(data),
        cache=(h, f"{run['run_id']}:campaign:{cid}"),
        title=f"Campaign {cid}",
        nav="overview",
    )


def campaign_figures(d: dict[str, Any]) -> list[tuple[str, go.Figure]]:
    """Cost per outcome and ROAS (observed against nowcast, 90% band), the learning timeline
    and the creatives' fatigue curves of one campaign."""
    out: list[tuple[str, go.Figure]] = []
    for key, unit in (("daily", "conversion"), ("daily_crm", "deal")):
        s = d.get(key)
        if not s or not s["dates"]:
            continue
        fig = go.Figure()
        x = s["dates"]
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=s["cost_high"] + s["cost_low"][::-1],
                fill="toself",
                line={"width": 0},
                fillcolor="rgba(31,119,180,0.15)",
                name="nowcast 90% interval",
                hoverinfo="skip",
                connectgaps=False,
            )
        )
        fig.add_trace(
            go.Scatter(x=x, y=s["nowcast_cost"], name="nowcast", line={"color": "#1f77b4"})
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=s["observed_cost"],
                name="observed so far",
                line={"color": "#d62728", "dash": "dot"},
            )
        )
        for o in d.get("outages", []):
            fig.add_vrect(
                x0=o["start"],
                x1=o["end"],
                fillcolor="grey",
                opacity=0.2,
                line_width=0,
                annotation_text="outage",
                annotation_position="top left",
            )
        out.append(
            (f"cost_{unit}", rpt._layout(fig, f"Cost per {unit}: observed against nowcast", 340))
        )
        if any(v for v in s["nowcast_roas"] if v):
            fig = go.Figure()
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=s["roas_high"] + s["roas_low"][::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor="rgba(44,160,44,0.15)",
                    name="nowcast 90% interval",
                    hoverinfo="skip",
                )
            )
            fig.add_trace(
                go.Scatter(x=x, y=s["nowcast_roas"], name="nowcast", line={"color": "#2ca02c"})
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=s["observed_roas"],
                    name="observed so far",
                    line={"color": "#d62728", "dash": "dot"},
                )
            )
            out.append(
                (
                    f"roas_{unit}",
                    rpt._layout(fig, f"ROAS ({unit} value): observed against nowcast", 340),
                )
            )
    if d.get("timeline"):
        out.append(("timeline", rpt.fig_timeline({"as_of": d["as_of"], "entities": d["timeline"]})))
    if d.get("fatigue_curves"):
        out.append(("fatigue", rpt.fig_fatigue({"creatives": d["fatigue_curves"]})))
    return out


# -- allocation -----------------------------------------------------------------------------------
@router.get("/w/{ws}/allocation", tags=["pages"], summary="Allocation", response_class=HTMLResponse)
@router.get("/w/{ws}/allocation.json", tags=["pages"], summary="Allocation (JSON)")
def allocation_page(request: Request, ws: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    found = current(h)
    if found is None:
        raise _no_run(h)
    run, doc = found
    with h.open() as w:
        decided = approvals.decisions(w, run["run_id"])
    data = views.allocation(doc, decided) | {
        "workspace": h.name,
        "can_approve": "approve" in p.scopes,
    }

    def figures() -> list[tuple[str, go.Figure]]:
        chart = (doc.get("charts") or {}).get("allocation") or {}
        return [("allocation", rpt.fig_allocation(chart))] if chart.get("arms") else []

    return respond(
        request,
        "allocation.html",
        data,
        p,
        figures=figures,
        cache=(h, f"{run['run_id']}:allocation"),
        title="Allocation",
        nav="allocation",
    )


@router.post("/w/{ws}/allocation", tags=["pages"], summary="Approve or reject budget lines")
def allocation_decide(
    request: Request,
    ws: str,
    decision: str = Form(..., pattern="^(approve|reject)$"),
    campaign: str = Form("all", max_length=200),
    note: str | None = Form(None, max_length=500),
    p: Principal = APPROVE,
) -> Response:
    """Approve or reject one line (``campaign``) or every open line (``campaign=all``)."""
    from signalloop.web.app import wants_json

    h = handle_of(request, p)
    found = current(h)
    if found is None:
        raise _no_run(h)
    _, doc = found
    with h.open() as w:
        done = approvals.decide(
            w,
            doc,
            None if campaign == "all" else [campaign],
            decision,
            person=p.name,
            key_id=p.key_id,
            note=note,
        )
    if wants_json(request) or p.via == "token":
        return JSONResponse({"decided": done})
    return RedirectResponse(f"/w/{h.name}/allocation", status_code=303)


# -- data -----------------------------------------------------------------------------------------
@router.get("/w/{ws}/data", tags=["pages"], summary="Data", response_class=HTMLResponse)
@router.get("/w/{ws}/data.json", tags=["pages"], summary="Data (JSON)")
def data_page(
    request: Request,
    ws: str,
    kind: str | None = Query(None, max_length=40),
    code: str | None = Query(None, max_length=80),
    file: str | None = Query(None, max_length=2000),
    offset: int = Query(0, ge=0, le=10_000_000),
    p: Principal = READ,
) -> Response:
    h = handle_of(request, p)
    found = current(h)
    with h.open() as w:
        data = views.data(
            w, found[1] if found else None, kind=kind, code=code, file=file, offset=offset
        )
    data["workspace"] = h.name
    q = {k: v for k, v in (("kind", kind), ("code", code), ("file", file)) if v}
    data["csv_url"] = f"/w/{h.name}/data/quarantine.csv" + (f"?{urlencode(q)}" if q else "")
    return respond(request, "data.html", data, p, title="Data", nav="data")


@router.get("/w/{ws}/data/quarantine.csv", tags=["pages"], summary="Quarantine as CSV")
def quarantine_csv(
    request: Request,
    ws: str,
    kind: str | None = Query(None, max_length=40),
    code: str | None = Query(None, max_length=80),
    file: str | None = Query(None, max_length=2000),
    p: Principal = READ,
) -> Response:
    h = handle_of(request, p)
    with h.open() as w:
        q = views.quarantine(w, kind=kind, code=code, file=file, limit=None)
    buf = io.StringIO()
    cols = ["ingest_id", "kind", "file", "line", "column", "code", "reason", "raw"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(q["rows"])
    # the filter values go into a header: only characters that are safe there
    name = "quarantine" + "".join(f"-{_slug(v)}" for v in (kind, code) if v) + ".csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _slug(value: str) -> str:
    """``value`` reduced to letters, digits, ``.``, ``-`` and ``_`` (a download's file name).

    >>> _slug("bad_value"), _slug('Ā"x\\r\\ny')
    ('bad_value', '_x_y')
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:60]


# -- runs -----------------------------------------------------------------------------------------
@router.get("/w/{ws}/runs", tags=["pages"], summary="Runs", response_class=HTMLResponse)
@router.get("/w/{ws}/runs.json", tags=["pages"], summary="Runs (JSON)")
def runs_page(request: Request, ws: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    with h.open() as w:
        rows = list_runs(w)
    data = views.runs_page(rows, h.runs.state(), _next_run(h)) | {
        "workspace": h.name,
        "can_run": "approve" in p.scopes,
    }
    return respond(request, "runs.html", data, p, title="Runs", nav="runs")


@router.post("/w/{ws}/runs", tags=["pages"], summary="Run now", status_code=202)
def run_now(request: Request, ws: str, p: Principal = APPROVE) -> Response:
    """Start the daily loop now (one run at a time per workspace; 409 while one runs)."""
    from signalloop.web.app import wants_json

    h = handle_of(request, p)
    run_id = h.runs.start(trigger="manual", actor=p.name)
    if wants_json(request) or p.via == "token":
        return JSONResponse({"run_id": run_id, "state": h.runs.state()}, status_code=202)
    return RedirectResponse(f"/w/{h.name}/runs", status_code=303)


@router.get("/w/{ws}/runs/{run_id}/report.html", tags=["pages"], summary="A run's report")
def run_report_html(request: Request, ws: str, run_id: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    with h.open() as w:
        run = get_run(w, run_id)
        doc = run_report(w, run_id, run) if run else None
    if run is None or doc is None:
        raise HTTPException(404, f"no readable report for run {run_id!r}")
    path = Path(run["report_dir"]) / "report.html"
    if not path.is_file():
        raise HTTPException(404, f"the report of run {run_id} is gone from {path.parent}")
    return HTMLResponse(path.read_text(encoding="utf-8"))


@router.get("/w/{ws}/runs/{run_id}.json", tags=["pages"], summary="A run's report document")
def run_report_json(request: Request, ws: str, run_id: str, p: Principal = READ) -> Response:
    h = handle_of(request, p)
    with h.open() as w:
        doc = run_report(w, run_id)
    if doc is None:
        raise HTTPException(404, f"no readable report for run {run_id!r}")
    return JSONResponse(doc)


_ = UsageError
