"""The run report: ``report.json`` (everything) and one self-contained, offline ``report.html``.

:func:`charts` turns a run document (:func:`signalloop.run.run`) plus a few small workspace
queries into chart data, JSON-ready; :func:`render_html` draws that data with Plotly, with
plotly.js embedded once so the file opens without a network. The HTML's every chart and table
has its numbers in ``report.json`` under ``charts`` (the JSON twin).

Charts: the signal environment over time; daily conversions with outage windows shaded;
observed against nowcast CPA and ROAS; the learning-phase timeline with edits by actor;
creative fatigue curves; allocation before and after with intervals. Tables: the diagnoses and
the decision lens.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from signalloop import jsonout
from signalloop.checks.base import creative_rows
from signalloop.fatigue import FATIGUE_RATIO
from signalloop.store import Workspace

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
#: Days of the CPA/ROAS chart (the nowcast matters for the latest ones).
RECENT_DAYS = 28
#: Days of the conversions chart.
CONVERSION_DAYS = 90
ACTOR_COLOURS = {"human": "#d62728", "automation": "#1f77b4", "unknown": "#7f7f7f"}
STATE_COLOURS = {
    "learning": "#ff7f0e",
    "learning_limited": "#9467bd",
    "stable": "#2ca02c",
    "paused": "#7f7f7f",
}
STATUS_COLOURS = {"fresh": "#2ca02c", "peaking": "#ff7f0e", "fatigued": "#d62728"}
SEVERITY_COLOURS = {"critical": "#b00020", "warn": "#b26a00", "info": "#5f6368"}


# -- chart data ---------------------------------------------------------------------------------


def _safe_ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 4) if den and num is not None else None


def _environment(doc: dict[str, Any]) -> dict[str, Any]:
    hist = doc.get("history") or []
    dims = sorted({k for h in hist for k in h["signal_environment"]["account"]})
    return {
        "dates": [h["as_of"] for h in hist],
        "source": [h["source"] for h in hist],
        "scores": {d: [h["signal_environment"]["account"].get(d) for h in hist] for d in dims},
        "held": [
            None if h["gates"] is None else sum(1 for g in h["gates"] if g["gate"] != "open")
            for h in hist
        ],
    }


def _account_by_date(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The nowcast's account totals per cohort date (``account.by_date[key]``).

    Their intervals come from the campaigns' draws added per date, so they are the total's own
    90% intervals (adding the campaigns' bounds would give a wider band than the label says).
    """
    nc = doc["state"]["nowcast"]
    rows: list[dict[str, Any]] = ((nc.get("account") or {}).get("by_date") or {}).get(key) or []
    return rows


def _conversions(doc: dict[str, Any]) -> dict[str, Any]:
    cohorts = doc["state"]["nowcast"].get("cohorts", [])
    by: dict[str, dict[str, Any]] = defaultdict(lambda: {"dates": [], "observed": []})
    for c in cohorts:
        by[c["campaign_id"]]["dates"].append(c["date"])
        by[c["campaign_id"]]["observed"].append(c["observed_conversions"])
    # every cohort, those in an outage window too: the chart shows the hole the shading explains
    total = _account_by_date(doc, "click_with_excluded")[-CONVERSION_DAYS:]
    days = [r["date"] for r in total]
    windows = [
        {
            "campaign_id": e["campaign_id"],
            "start": str(e["start"])[:10],
            "end": str(e["end"])[:10],
            "reason": e.get("reason", ""),
        }
        for e in doc["checks"].get("exclusions", [])
    ]
    for f in doc["checks"].get("findings", []):
        if f["check"] == "integration_dropout" and f.get("window") and f.get("active"):
            w = f["window"]
            if not any(x["campaign_id"] == f["campaign_id"] for x in windows):
                windows.append(
                    {
                        "campaign_id": f["campaign_id"],
                        "start": str(w["start"])[:10],
                        "end": str(w["end"])[:10],
                        "reason": f["message"],
                    }
                )
    return {
        "campaigns": {
            cid: {
                "dates": [d for d in s["dates"] if d >= days[0]],
                "observed": [
                    o for d, o in zip(s["dates"], s["observed"], strict=True) if d >= days[0]
                ],
            }
            for cid, s in sorted(by.items())
        }
        if days
        else {},
        "account": {
            "dates": days,
            "observed": [r["observed_conversions"] for r in total],
            "expected": [r["expected_conversions"] for r in total],
            "lower": [r["lower"] for r in total],
            "upper": [r["upper"] for r in total],
        },
        "outages": windows,
    }


def _cpa_roas(doc: dict[str, Any]) -> dict[str, Any]:
    # cohorts in an outage window are left out: their spend bought no data
    click = _account_by_date(doc, "click")[-RECENT_DAYS:]
    crm = _account_by_date(doc, "crm")
    value_from = "crm" if crm else "click"
    value = (crm or _account_by_date(doc, "click"))[-RECENT_DAYS:]
    return {
        "dates": [r["date"] for r in click],
        "observed_cpa": [_safe_ratio(r["spend"], r["observed_conversions"]) for r in click],
        "nowcast_cpa": [_safe_ratio(r["spend"], r["expected_conversions"]) for r in click],
        "cpa_low": [_safe_ratio(r["spend"], r["upper"]) for r in click],
        "cpa_high": [_safe_ratio(r["spend"], r["lower"]) for r in click],
        "roas_from": value_from,
        "roas_dates": [r["date"] for r in value],
        "observed_roas": [_safe_ratio(r["observed_value"], r["spend"]) for r in value],
        "nowcast_roas": [_safe_ratio(r["expected_value"], r["spend"]) for r in value],
        "roas_low": [_safe_ratio(r["value_lower"], r["spend"]) for r in value],
        "roas_high": [_safe_ratio(r["value_upper"], r["spend"]) for r in value],
    }


def _timeline(doc: dict[str, Any]) -> dict[str, Any]:
    as_of = date.fromisoformat(doc["as_of"])
    rows = []
    for e in sorted(doc["state"]["phase"]["entities"], key=lambda e: e["entity_id"], reverse=True):
        periods = []
        for r in e["resets"]:
            start = date.fromisoformat(r["date"])
            days = r.get("days_in_learning")
            periods.append(
                {
                    "start": r["date"],
                    "days": days if days is not None else (as_of - start).days + 1,
                    "open": days is None,
                    "actor": r["actor"],
                    "field": r["field"],
                    "detail": r.get("detail", ""),
                }
            )
        rows.append(
            {
                "entity_id": e["entity_id"],
                "campaign_id": e["campaign_id"],
                "state": e["state"],
                "human_resets": e["human_resets"],
                "periods": periods,
            }
        )
    return {"as_of": doc["as_of"], "entities": rows}


def _fatigue_curves(ws: Workspace, doc: dict[str, Any]) -> dict[str, Any]:
    """Daily CTR relative to each live creative's fitted start, and its fitted curve, over
    the days the fatigue report lists (its ``listed.days``; every day of each creative's
    life when it lists them all): a creative delivering for a year is not drawn, sent and
    written a year long every day. The exposure of each day still counts every impression
    before it."""
    fat = doc["state"]["fatigue"]
    creatives = [c for c in fat["creatives"] if c["live"]]
    if not creatives:
        return {"creatives": []}
    ids = [c["creative_id"] for c in creatives]
    as_of = date.fromisoformat(doc["as_of"])
    days = (fat.get("listed") or {}).get("days")
    edge = as_of - timedelta(days=int(days) - 1) if days else None
    spend = creative_rows(ws.table("spend"))  # (an ad without a creative id as ad:<ad_id>)
    # the live creatives as a table, not a literal list (thousands of them at 1,000 campaigns:
    # a list that long takes longer to compile than the query takes to run)
    live = ibis.memtable({"creative_id": ids}, schema={"creative_id": "string"})
    spend = spend.filter(spend.creative_id.isin(live.creative_id) & (spend.date <= as_of))
    recent = spend if edge is None else spend.filter(spend.date >= edge)
    daily = (
        recent.group_by(["creative_id", "date"])
        .aggregate(impressions=recent.impressions.sum(), clicks=recent.clicks.sum())
        .order_by(["creative_id", "date"])
        .to_pyarrow()
    )
    before: dict[str, float] = {}  # each creative's impressions before the days shown
    if edge is not None:
        old = spend.filter(spend.date < edge)
        got = old.group_by("creative_id").aggregate(n=old.impressions.sum()).to_pyarrow()
        before = {
            str(k): float(v or 0.0)
            for k, v in zip(got["creative_id"].to_pylist(), got["n"].to_pylist(), strict=True)
        }
    # by whole columns (165,000 live creative-days at 1,000 campaigns): each creative's rows
    # are one slice of the sorted table, its exposure the running sum of the impressions before
    imp = daily["impressions"].to_numpy(zero_copy_only=False).astype(float)
    imp[np.isnan(imp)] = 0.0
    kept = np.nonzero(imp != 0)[0]  # (a day without impressions has no CTR)
    imp = imp[kept]
    clicks = daily["clicks"].to_numpy(zero_copy_only=False).astype(float)[kept]
    day = daily["date"].cast("int32").to_numpy(zero_copy_only=False).astype(np.int64)[kept]
    names = daily["creative_id"].to_numpy(zero_copy_only=False)[kept]
    if not len(names):
        return {"creatives": []}
    bounds = np.flatnonzero(names[1:] != names[:-1]) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(names)]
    where = {str(names[i]): (int(i), int(j)) for i, j in zip(starts, ends, strict=True)}
    shown = [(c, where[c["creative_id"]]) for c in creatives if c["creative_id"] in where]
    if not shown:
        return {"creatives": []}
    # every shown creative's rows one after another, with its own fit beside each row
    spans = np.array([span for _, span in shown], dtype=np.int64)
    n = spans[:, 1] - spans[:, 0]
    rows = np.concatenate([np.arange(lo, hi) for lo, hi in spans])

    def each(key: str) -> npt.NDArray[np.float64]:
        return np.repeat(np.array([float(c[key] or 0.0) for c, _ in shown]), n)

    epoch = date(1970, 1, 1)
    launched = np.repeat([(date.fromisoformat(c["launched"]) - epoch).days for c, _ in shown], n)
    age = day[rows] - launched
    im = imp[rows]
    run = np.cumsum(im)
    first = np.repeat(np.r_[0, np.cumsum(n)[:-1]], n)
    expo = run - im - (run[first] - im[first])  # impressions before each day, in day order
    expo += np.repeat([before.get(c["creative_id"], 0.0) for c, _ in shown], n)
    start = each("ctr_start")  # 0 when the fit found no clicks to start from: no ratio
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = jsonout.rounded(np.where(start != 0, clicks[rows] / im / start, np.nan), 4)
    # math.exp per day: the floats the report always had (NumPy's exp may differ in the last
    # bit, which the fourth decimal can show)
    z = -each("decay_per_day") * age - each("decay_per_100k_impressions") * expo / 1e5
    fit = jsonout.rounded([math.exp(x) for x in z.tolist()], 4)
    ages = age.tolist()
    out = []
    at = 0
    for (c, _), k in zip(shown, n.tolist(), strict=True):
        out.append(
            {
                "creative_id": c["creative_id"],
                "campaign_id": c["campaign_id"],
                "status": c["status"],
                "age_days": ages[at : at + k],
                "relative_ctr": rel[at : at + k],
                "fitted": fit[at : at + k],
            }
        )
        at += k
    return {"creatives": out}


def _allocation(doc: dict[str, Any]) -> dict[str, Any]:
    a = doc.get("allocation")
    if not a:
        return {"arms": []}
    return {
        "budget": a["budget"],
        "policy": a["policy"],
        "objective": a["objective"],
        "arms": [
            {
                "campaign_id": x["campaign_id"],
                "current": x["current"],
                "recommended": x["recommended"],
                "expected_cpa": x.get("expected_cpa"),
                "cpa_interval": x.get("cpa_interval"),
                "reasons": x.get("reasons", []),
            }
            for x in a["arms"]
        ],
    }


def charts(ws: Workspace, doc: dict[str, Any]) -> dict[str, Any]:
    """Every chart's data, JSON-ready (``report.json["charts"]``)."""
    return {
        "signal_environment": _environment(doc),
        "conversions": _conversions(doc),
        "cpa_roas": _cpa_roas(doc),
        "learning_timeline": _timeline(doc),
        "fatigue_curves": _fatigue_curves(ws, doc),
        "allocation": _allocation(doc),
    }


# -- figures ------------------------------------------------------------------------------------


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
        hovermode="closest",
    )
    return fig


def _empty(fig: go.Figure, why: str) -> go.Figure:
    """Say in the chart why it has nothing to show (a blank frame says nothing)."""
    fig.add_annotation(
        text=why, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 15}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def fig_environment(c: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    symbols = ["circle" if s == "run" else "circle-open" for s in c["source"]]
    for dim, ys in c["scores"].items():
        fig.add_trace(
            go.Scatter(
                x=c["dates"],
                y=ys,
                name=dim.replace("_", " "),
                mode="lines+markers",
                marker={"symbol": symbols, "size": 8},
            )
        )
    fig.update_yaxes(range=[0, 1.05], title="score (1 = fit to learn from)")
    return _layout(fig, "Signal environment over time (filled: a run saw it; open: backfilled)")


#: Above this many campaigns their conversion lines are one grey trace (hover names each)
LINES_PER_CAMPAIGN = 25


def fig_conversions(c: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    if len(c["campaigns"]) <= LINES_PER_CAMPAIGN:
        for cid, s in c["campaigns"].items():
            fig.add_trace(go.Scatter(x=s["dates"], y=s["observed"], name=cid, mode="lines"))
    else:
        # a legend of hundreds says nothing and a trace each costs seconds: one trace, its
        # lines split by gaps, each point's hover naming its campaign
        x: list[Any] = []
        y: list[Any] = []
        names: list[str] = []
        for cid, s in c["campaigns"].items():
            # a NaN count breaks the line; its date repeats the last, so the dates stay text
            x += [*s["dates"], s["dates"][-1] if s["dates"] else ""]
            y += [*s["observed"], None]
            names += [cid] * (len(s["dates"]) + 1)
        # arrays, not lists: plotly checks a list point by point (about a second at 1,000
        # campaigns) and writes the counts as typed binary
        fig.add_trace(
            go.Scatter(
                x=np.array(x, dtype=str),
                y=np.array(y, dtype=np.float32),
                text=np.array(names, dtype=str),
                name=f"{len(c['campaigns'])} campaigns",
                mode="lines",
                line={"color": "rgba(31,119,180,0.35)", "width": 1},
                hovertemplate="%{text}<br>%{x}: %{y}<extra></extra>",
            )
        )
    acc = c["account"]
    fig.add_trace(
        go.Scatter(
            x=acc["dates"] + acc["dates"][::-1],
            y=acc["upper"] + acc["lower"][::-1],
            fill="toself",
            fillcolor="rgba(0,0,0,0.08)",
            line={"width": 0},
            name="account nowcast 90% interval",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=acc["dates"], y=acc["observed"], name="account observed", line={"color": "black"}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=acc["dates"],
            y=acc["expected"],
            name="account nowcast",
            line={"color": "black", "dash": "dot"},
        )
    )
    _shade_outages(fig, c["outages"])
    fig.update_yaxes(title="conversions by click date")
    if not acc["dates"]:
        _empty(fig, "no clicks or conversions in the workspace yet")
    return _layout(fig, "Daily conversions, outage windows shaded", 420)


def _shade_outages(fig: go.Figure, windows: list[dict[str, Any]]) -> None:
    """Shade each outage window, one band and one label per span of days (``N campaigns``
    where several campaigns share it), all set on the layout at once.

    ``add_vrect`` per window re-validates every shape added before (quadratic): 581 windows
    of a half-year account took its report over two minutes. Overlaid labels of the same
    span said nothing more either.
    """
    spans: dict[tuple[str, str], list[str]] = {}
    for w in windows:
        names = spans.setdefault((str(w["start"]), str(w["end"])), [])
        if w["campaign_id"] not in names:
            names.append(w["campaign_id"])
    shapes, notes = [], []
    for (start, end), names in sorted(spans.items()):
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": start,
                "x1": end,
                "y0": 0,
                "y1": 1,
                "fillcolor": "rgba(214,39,40,0.15)",
                "line": {"width": 0},
            }
        )
        who = names[0] if len(names) == 1 else f"{len(names)} campaigns'"
        notes.append(
            {
                "x": start,
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "xanchor": "left",
                "yanchor": "top",
                "showarrow": False,
                "text": f"{who} outage (excluded)",
            }
        )
    if shapes:
        fig.update_layout(
            shapes=[*fig.layout.shapes, *shapes], annotations=[*fig.layout.annotations, *notes]
        )


def fig_cpa_roas(c: dict[str, Any]) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "CPA: observed vs nowcast (account)",
            f"ROAS: observed vs nowcast ({'CRM deals' if c['roas_from'] == 'crm' else 'value'})",
        ),
    )

    def band(x: list[str], lo: list[Any], hi: list[Any], col: int, name: str) -> None:
        keep = [
            (d, a, b) for d, a, b in zip(x, lo, hi, strict=True) if a is not None and b is not None
        ]
        xs = [k[0] for k in keep]
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=[k[2] for k in keep] + [k[1] for k in keep][::-1],
                fill="toself",
                fillcolor="rgba(31,119,180,0.15)",
                line={"width": 0},
                name=name,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )

    band(c["dates"], c["cpa_low"], c["cpa_high"], 1, "CPA 90% interval")
    fig.add_trace(go.Scatter(x=c["dates"], y=c["observed_cpa"], name="observed CPA"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=c["dates"], y=c["nowcast_cpa"], name="nowcast CPA", line={"dash": "dot"}),
        row=1,
        col=1,
    )
    band(c["roas_dates"], c["roas_low"], c["roas_high"], 2, "ROAS 90% interval")
    fig.add_trace(
        go.Scatter(x=c["roas_dates"], y=c["observed_roas"], name="observed ROAS"), row=1, col=2
    )
    fig.add_trace(
        go.Scatter(
            x=c["roas_dates"], y=c["nowcast_roas"], name="nowcast ROAS", line={"dash": "dot"}
        ),
        row=1,
        col=2,
    )
    if not c["dates"] and not c["roas_dates"]:
        _empty(fig, "no clicks or conversions yet: nothing to nowcast")
    return _layout(fig, f"Last {RECENT_DAYS} days: what is known now vs what will arrive", 400)


def fig_timeline(c: dict[str, Any]) -> go.Figure:
    """Learning periods as bars and the edits that began them as markers, per ad set.

    One bar trace and one marker trace per actor, whatever the number of ad sets (a trace
    per period made a 100-campaign report spend seconds in Plotly alone).
    """
    fig = go.Figure()
    bars: dict[str, list[Any]] = {"base": [], "x": [], "y": [], "text": []}
    edits: dict[str, dict[str, list[Any]]] = {}
    for e in c["entities"]:
        label = f"{e['entity_id']} ({e['state'].replace('_', ' ')})"
        for p in e["periods"]:
            bars["base"].append(p["start"])
            bars["x"].append(p["days"] * 86_400_000)
            bars["y"].append(label)
            bars["text"].append(
                f"{p['days']} days in learning" + (" (still learning)" if p["open"] else "")
            )
            pts = edits.setdefault(p["actor"], {"x": [], "y": [], "text": []})
            pts["x"].append(p["start"])
            pts["y"].append(label)
            pts["text"].append(f"{p['actor']}: {p['field']} {p['detail']}")
    if bars["x"]:
        fig.add_trace(
            go.Bar(
                base=bars["base"],
                x=bars["x"],
                y=bars["y"],
                orientation="h",
                marker={"color": STATE_COLOURS["learning"], "opacity": 0.35},
                name="in learning",
                legendgroup="learning",
                hovertext=bars["text"],
                hoverinfo="text",
            )
        )
    for actor in ("human", "automation", "unknown"):
        marks = edits.get(actor)
        if not marks:
            continue
        fig.add_trace(
            go.Scatter(
                x=marks["x"],
                y=marks["y"],
                mode="markers",
                marker={
                    "color": ACTOR_COLOURS.get(actor, "#7f7f7f"),
                    "size": 11,
                    "symbol": "x" if actor == "human" else "diamond",
                },
                name=f"edit by {actor}",
                legendgroup=actor,
                hovertext=marks["text"],
                hoverinfo="text",
            )
        )
    fig.update_xaxes(type="date")
    fig.update_layout(barmode="overlay")
    if not c["entities"]:
        _empty(fig, "no ad sets in the spend data yet (adset_id), so no learning phase")
    height = 120 + 28 * max(len(c["entities"]), 1)
    return _layout(fig, "Learning phase per ad set: edits that reset learning, by actor", height)


def fig_fatigue(c: dict[str, Any]) -> go.Figure:
    """Each live creative's daily CTR (dots) and fitted decay (line), coloured by status.

    Two traces per status (lines broken between creatives), whatever the number of creatives.
    """
    fig = go.Figure()
    by_status: dict[str, dict[str, list[Any]]] = {}
    for cr in sorted(c["creatives"], key=lambda x: x["status"]):
        name = f"{cr['creative_id']} ({cr['campaign_id']})"
        d = by_status.setdefault(cr["status"], {"x": [], "y": [], "fit": [], "name": []})
        d["x"] += [*cr["age_days"], None]
        d["y"] += [*cr["relative_ctr"], None]
        d["fit"] += [*cr["fitted"], None]
        d["name"] += [name] * len(cr["age_days"]) + [""]
    for status, lists in by_status.items():
        colour = STATUS_COLOURS.get(status, "#7f7f7f")
        # arrays, not lists: plotly checks a list point by point (seconds at 10,000
        # creatives) and writes an array as typed binary (float32: a chart needs no more); NaN
        # breaks a line as None does
        arr: dict[str, Any] = {k: np.array(lists[k], dtype=np.float32) for k in ("x", "y", "fit")}
        arr["name"] = np.array(lists["name"], dtype=str)
        fig.add_trace(
            go.Scatter(
                x=arr["x"],
                y=arr["y"],
                mode="markers",
                marker={"color": colour, "size": 4, "opacity": 0.4},
                name=f"{status} creatives, daily",
                legendgroup=status,
                showlegend=False,
                text=arr["name"],
                hovertemplate="%{text}: day %{x}, CTR x%{y:.2f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=arr["x"],
                y=arr["fit"],
                mode="lines",
                line={"color": colour, "width": 1.5},
                name=f"{status} creatives",
                legendgroup=status,
                text=arr["name"],
                hovertemplate="%{text}: fitted x%{y:.2f} at day %{x}<extra></extra>",
            )
        )
    fig.add_hline(y=FATIGUE_RATIO, line_dash="dash", annotation_text="fatigue threshold")
    fig.update_xaxes(title="days since launch")
    fig.update_yaxes(title="CTR relative to launch")
    if not c["creatives"]:
        _empty(fig, "no live creative with delivery (creative_id or ad_id in the spend data) yet")
    return _layout(
        fig, "Creative fatigue: live creatives' CTR decay (dots daily, lines fitted)", 440
    )


def fig_allocation(c: dict[str, Any]) -> go.Figure:
    arms = c["arms"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "daily budget: now and recommended",
            "expected CPA at the recommended budget (90% interval)",
        ),
    )
    ids = [a["campaign_id"] for a in arms]
    fig.add_trace(go.Bar(x=ids, y=[a["current"] for a in arms], name="now"), row=1, col=1)
    fig.add_trace(
        go.Bar(x=ids, y=[a["recommended"] for a in arms], name="recommended"), row=1, col=1
    )
    with_cpa = [a for a in arms if a["expected_cpa"] is not None and a["cpa_interval"]]
    fig.add_trace(
        go.Scatter(
            x=[a["campaign_id"] for a in with_cpa],
            y=[a["expected_cpa"] for a in with_cpa],
            mode="markers",
            name="expected CPA",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [a["cpa_interval"][1] - a["expected_cpa"] for a in with_cpa],
                "arrayminus": [a["expected_cpa"] - a["cpa_interval"][0] for a in with_cpa],
            },
        ),
        row=1,
        col=2,
    )
    if not arms:
        _empty(fig, "no budget to allocate: no spend in the last 7 days and no [run] budget")
    title = f"Tomorrow's budget: {c.get('budget', 0):,.2f} split by {c.get('policy', '-')}"
    return _layout(fig, title, 400)


FIGURES = (
    ("signal_environment", fig_environment),
    ("conversions", fig_conversions),
    ("cpa_roas", fig_cpa_roas),
    ("learning_timeline", fig_timeline),
    ("fatigue_curves", fig_fatigue),
    ("allocation", fig_allocation),
)


# -- HTML ---------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#202124;
background:#f8f9fa}
header{background:#202124;color:#fff;padding:16px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#bdc1c6}
main{max-width:1200px;margin:0 auto;padding:16px 24px}
section{background:#fff;border:1px solid #dadce0;border-radius:8px;margin:16px 0;padding:12px 16px}
h2{font-size:17px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f1f3f4}
.verdict{font-size:18px;font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block}
.scale{background:#e6f4ea;color:#137333} .keep_scoped{background:#fef7e0;color:#b06000}
.pass{color:#137333;font-weight:600} .fail{color:#c5221f;font-weight:600}
td.ev{font-size:11px;color:#5f6368;min-width:190px} td.ev .k{color:#202124}
td.ev .src{font-style:italic} details{margin-top:10px} summary{cursor:pointer;color:#1a73e8}
.sev{font-weight:600} .kpis{display:flex;gap:12px;flex-wrap:wrap}
.kpi{background:#fff;border:1px solid #dadce0;border-radius:8px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:20px} .muted{color:#5f6368;font-size:12px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v)
    return str(v)


def _evidence(ev: dict[str, Any]) -> str:
    """One line per number, then where they came from."""
    lines = [
        f"<div><span class='k'>{_e(k.replace('_', ' '))}</span> {_e(_value(v))}</div>"
        for k, v in ev.items()
        if k not in ("message", "source")
    ]
    if ev.get("source"):
        lines.append(f"<div class='src'>from {_e(ev['source'])}</div>")
    return "".join(lines)


DIAGNOSIS_HEAD = (
    "severity",
    "campaign",
    "failure",
    "at stake",
    "root cause",
    "evidence",
    "recovery action",
    "days",
    "conf.",
)


def _impact(impact: dict[str, Any]) -> str:
    """A diagnosis' money at stake: spend a day and its share, conversions a week."""
    spend = impact.get("spend_per_day")
    if spend is None:
        return "-"
    share = impact.get("share_of_account_spend")
    conv = impact.get("conversions_per_week")
    lines = [f"<div>{_e(f'{spend:,.2f}')} a day</div>"]
    if share is not None:
        lines.append(f"<div>{_e(f'{share:.1%}')} of spend</div>")
    if conv is not None:
        what = (
            "platform-reported conversions"
            if impact.get("conversions_source") == "platform_reported"
            else "conversions"
        )
        lines.append(f"<div>{_e(f'{conv:,.0f}')} {what} a week</div>")
    return "".join(lines)


def _diagnosis_rows(diagnoses: list[dict[str, Any]]) -> str:
    rows = []
    for d in diagnoses:
        colour = SEVERITY_COLOURS.get(d["severity"], "#000")
        days = d["expected_recovery_days"]
        rows.append(
            "<tr>"
            f"<td class='sev' style='color:{colour}'>{_e(d['severity'])}</td>"
            f"<td>{_e(d['campaign_id'] or 'account')}</td>"
            f"<td>{_e(d['failure_type'].replace('_', ' '))}</td>"
            f"<td class='ev'>{_impact(d.get('impact') or {})}</td>"
            f"<td>{_e(d['root_cause'])}</td>"
            f"<td class='ev'>{_evidence(d['evidence'])}</td>"
            f"<td>{_e(d['recovery_action'])}</td>"
            f"<td>{'-' if days is None else _e(f'{days:g}')}</td>"
            f"<td>{d['confidence']:.2f}</td>"
            "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in DIAGNOSIS_HEAD)
    return f"<tr>{head}</tr>{''.join(rows)}"


def _diagnosis_table(diag: dict[str, Any]) -> str:
    """Warn and critical diagnoses in the open; the info ones folded below them."""
    all_ = diag.get("diagnoses", [])
    if not all_:
        return "<p>No diagnoses: nothing is wrong that signalloop can see.</p>"
    urgent = [d for d in all_ if d["severity"] != "info"]
    info = [d for d in all_ if d["severity"] == "info"]
    html_ = (
        f"<table id='diagnoses' class='diagnoses'>{_diagnosis_rows(urgent)}</table>"
        if urgent
        else "<p>No warn or critical diagnosis.</p>"
    )
    if info:
        html_ += (
            f"<details><summary>{len(info)} info diagnoses (nothing to act on now)</summary>"
            f"<table id='diagnoses-info' class='diagnoses'>{_diagnosis_rows(info)}</table>"
            "</details>"
        )
    return html_


def _lens_table(lens: dict[str, Any]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(c['name'].replace('_', ' '))}</td>"
        f"<td class='{'pass' if c['passed'] else 'fail'}'>{'pass' if c['passed'] else 'fail'}</td>"
        f"<td>{_e(c['evidence'].get('message', ''))}</td>"
        "</tr>"
        for c in lens["checks"]
    )
    weakest = f" &mdash; fix <b>{_e(lens['weakest'])}</b> first" if lens.get("weakest") else ""
    return (
        f"<p><span class='verdict {_e(lens['verdict'])}'>{_e(lens['verdict'].replace('_', ' '))}"
        f"</span>{weakest}</p>"
        f"<table id='lens'><tr><th>question</th><th>result</th><th>evidence</th></tr>{rows}</table>"
    )


def _models_table(models: list[dict[str, Any]]) -> str:
    if not models:
        return "<p>No models: the workspace has no conversions yet.</p>"
    rows = []
    for m in models:
        auc = (m.get("time_split") or {}).get("auc")
        rows.append(
            f"<tr><td>{_e(m['outcome'])}</td><td>{_e(m['status'])}</td>"
            f"<td>{_e(m.get('reason', ''))}"
            + (f"; refit with <code>{_e(m['command'])}</code>" if m.get("command") else "")
            + "</td>"
            f"<td>{'-' if auc is None else f'{auc:.3f}'}</td></tr>"
        )
    return (
        "<table id='models'><tr><th>outcome</th><th>status</th><th>why</th>"
        f"<th>time-split AUC</th></tr>{''.join(rows)}</table>"
    )


def _inbox(inbox: dict[str, Any] | None) -> str:
    if inbox is None:
        return "<p class='muted'>No inbox configured ([run] inbox): nothing new was ingested.</p>"
    items = [
        f"<li>{_e(f['file'])}: {_e(f['status'])}, {f['rows_loaded']:,} loaded, "
        f"{f['rows_quarantined']:,} quarantined</li>"
        for f in inbox["files"]
    ]
    items += [f"<li class='fail'>{_e(x['file'])}: {_e(x['message'])}</li>" for x in inbox["errors"]]
    items += [
        f"<li class='muted'>{_e(x['file'])}: not taken, {_e(x['reason'])}</li>"
        for x in inbox["not_taken"]
    ]
    return f"<p>Inbox {_e(inbox['inbox'])}</p><ul>{''.join(items) or '<li>empty</li>'}</ul>"


def _learnable_table(doc: dict[str, Any] | None) -> str:
    """What the workspace can learn from (:func:`signalloop.shapes.learnable`)."""
    if not doc or not doc.get("campaigns"):
        return "<p class='muted'>No campaign with spend yet: nothing to learn from.</p>"
    acct = doc["account"]
    shapes = ", ".join(f"{n} {_e(s)}" for s, n in acct["by_shape"].items())
    rows = []
    for cap in doc["capabilities"]:
        uses = "<br>".join(
            f"{_e(b['uses'])}"
            + (
                f" <span class='muted'>({b['campaigns']} campaigns)</span>"
                if len(cap["bases"]) > 1
                else ""
            )
            for b in cap["bases"]
        )
        used = cap.get("used") or {}
        if used:
            counts: dict[str, int] = {}
            for v in used.values():
                counts[v] = counts.get(v, 0) + 1
            uses += (
                "<br><span class='muted'>this run: "
                + _e(", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
                + "</span>"
            )
        unlock = _e(", ".join(cap["missing"])) if cap["status"] != "full" else ""
        rows.append(
            f"<tr class='cap-{_e(cap['status'])}'><td>{_e(cap['name'])}</td>"
            f"<td>{_e(cap['status'])}</td><td>{uses}</td><td>{unlock}</td></tr>"
        )
    notes = "".join(
        f"<li>to unlock {_e(', '.join(u['unlocks']))}: send {_e(u['export'])}</li>"
        for u in doc.get("unlock", [])
    ) + "".join(f"<li>{_e(n)}</li>" for n in acct["notes"])
    return (
        f"<p>Data shape <b>{_e(acct['shape'])}</b> ({shapes} campaigns). Each capability uses "
        "the best data present; what it leaves out, and the export that would unlock it:</p>"
        "<table id='learnable'><tr><th>capability</th><th>status</th><th>uses</th>"
        f"<th>left out</th></tr>{''.join(rows)}</table>" + (f"<ul>{notes}</ul>" if notes else "")
    )


def _push_table(push: dict[str, Any] | None) -> str:
    """What was sent back to the platforms (or, in a dry run, would be)."""
    if not push:
        return (
            "<p class='muted'>Nothing is sent back to the platforms: add a [push] table to "
            "signalloop.toml (Meta pixel id, Google customer id and conversion actions) to send "
            "validated CRM outcomes and outage exclusions.</p>"
        )
    what = {
        "meta": "Meta CRM events",
        "google": "Google click conversions",
        "exclusions": "Google data exclusions",
    }
    rows = []
    for name, t in push["targets"].items():
        if "counts" not in t:
            rows.append(
                f"<tr><td>{_e(what[name])}</td><td>{_e(t['status'])}</td>"
                f"<td colspan='5'>{_e(t['message'])}</td></tr>"
            )
            continue
        c = t["counts"]
        moved = c.get("sent", c.get("planned", 0))

        def reasons(d: dict[str, int]) -> str:
            return ", ".join(f"{n:,} {k}" for k, n in sorted(d.items(), key=lambda x: -x[1]))

        rows.append(
            f"<tr><td>{_e(what[name])}</td><td>{_e(t['status'])}</td><td>{moved:,}</td>"
            f"<td>{c['already_sent']:,}</td><td>{_e(reasons(t['skipped_by_reason']))}</td>"
            f"<td>{_e(reasons(t['left_out_by_reason']))}</td>"
            f"<td>{_e(reasons(t['rejected_by_code']))}</td></tr>"
        )
    mode = "live" if push["live"] else "dry run: request bodies written, nothing sent"
    return (
        f"<p>{_e(mode)} ({_e(push['out'])}). Only validated outcomes leave: nothing from a "
        "campaign the gate holds, a record whose stages went backwards, a duplicate person or "
        "a CRM sync dropout.</p><table id='push'><tr><th>what</th><th>status</th>"
        f"<th>{'sent' if push['live'] else 'would send'}</th><th>already sent</th>"
        "<th>skipped (validation)</th><th>left out (platform rules)</th><th>rejected</th>"
        f"</tr>{''.join(rows)}</table>"
    )


def _kpis(doc: dict[str, Any]) -> str:
    diag = doc["diagnosis"]["diagnoses"]
    crit = sum(1 for d in diag if d["severity"] == "critical")
    warn = sum(1 for d in diag if d["severity"] == "warn")
    held = sum(1 for c in doc["checks"]["campaigns"] if c["gate"] != "open")
    alloc = doc.get("allocation") or {}
    cards = [
        ("as of", doc["as_of"]),
        ("decision lens", doc["lens"]["verdict"].replace("_", " ")),
        ("critical / warn", f"{crit} / {warn}"),
        ("campaigns held by the gate", f"{held} of {len(doc['checks']['campaigns'])}"),
        ("tomorrow's budget", f"{alloc.get('budget', 0):,.2f}"),
    ]
    return (
        "<div class='kpis'>"
        + "".join(
            f"<div class='kpi'><span class='muted'>{_e(k)}</span><b>{_e(v)}</b></div>"
            for k, v in cards
        )
        + "</div>"
    )


def render_html(doc: dict[str, Any]) -> str:
    """The self-contained report page for a run document that has ``charts``."""
    divs = []
    for name, make in FIGURES:
        fig = make(doc["charts"][name])
        divs.append(
            f"<section id='sec-{name}'>"
            + pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=False,
                div_id=f"chart-{name}",
                config={"displaylogo": False, "responsive": True},
            )
            + "</section>"
        )
    charts_html = "\n".join(divs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>signalloop report {_e(doc["as_of"])}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>signalloop report &mdash; as of {_e(doc["as_of"])}</h1>
<p>workspace {_e(doc["workspace"])} &middot; signalloop {_e(doc["signalloop_version"])}
&middot; the numbers behind every chart are in report.json</p></header>
<main>
{_kpis(doc)}
<section id="sec-lens"><h2>Decision lens: scale spend, or keep it scoped?</h2>
{_lens_table(doc["lens"])}</section>
<section id="sec-learnable"><h2>What this workspace can learn from</h2>
{_learnable_table(doc.get("learnable"))}</section>
<section id="sec-diagnosis"><h2>Diagnoses, most severe first</h2>
{_diagnosis_table(doc["diagnosis"])}</section>
{charts_html}
<section id="sec-models"><h2>Models</h2>{_models_table(doc["models"])}</section>
<section id="sec-push"><h2>Sent back to the platforms</h2>{_push_table(doc.get("push"))}</section>
<section id="sec-inbox"><h2>This run's input</h2>{_inbox(doc["inbox"])}</section>
</main></body></html>
"""


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become ``None``."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_report(ws: Workspace, doc: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Add ``charts`` to ``doc`` and write ``report.json`` and ``report.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc["charts"] = _clean(charts(ws, doc))
    paths = {"html": str(out / REPORT_HTML), "json": str(out / REPORT_JSON)}
    doc["report"] = paths
    jsonout.write(doc, out / REPORT_JSON)
    (out / REPORT_HTML).write_text(render_html(doc), encoding="utf-8")
    return paths
