"""Score the nowcast against the simulator's truth.

For each seed, a 90-day account of 6-10 campaigns (two seeds in three also get one fault that
does not touch tracking: ``duplicate_events``, ``utm_mess``, ``creative_starvation``,
``override_storm`` or ``low_volume``) is simulated, written, ingested into a fresh workspace
and nowcast as of its last day. For the last 14 cohort days of every campaign:

* **click path**: expected eventual conversions against the truth's
  ``conversions_by_click_date`` (every conversion those clicks make, censored or not); the
  naive estimate is what was observed so far. Error ratio = sum |expected - truth| / sum
  |observed - truth| over those cohorts; coverage = share of cohorts whose 90% interval holds
  the truth. Value likewise against ``value_by_click_date`` (purchase campaigns).
* **CRM path** (lead to won deal): cohorts are lead days (the day a CRM record began). The
  truth's ``deals_by_click_date`` counts by click day, so the truth per lead day is derived
  from the simulated world itself: the account is replayed (the same seeded
  :class:`~signalloop.simulate.Account` steps :func:`~signalloop.simulate.simulate` runs) and
  every record's ``lead`` time and whether it is ever won are read from its uncensored CRM
  rows; a consistency check asserts that the observed won rows are exactly the world's won
  rows before the end. Besides single lead days (mostly 0 or 1 deal each, where absolute
  errors say little), the per-campaign totals over the last 14 and 60 lead days are scored
  the same way (intervals from the summed draws).
* **partial data** (the nowcast's ``basis``): the same world written as ``spend_conversions``
  (spend + conversions with campaign_id and click_ts, no touchpoints, no crm: basis
  ``click_ts``, and the CRM path built from the lead / sql / opportunity / deal conversions),
  and twice more with the click times (click_ts, click_id) of half the campaigns removed
  (odd, then even campaigns: basis ``conversion_day``, with the delay of the others), so
  every campaign is scored once on each basis. Per campaign the last 7 and 28 days' totals
  against the truth; the naive estimate is what was observed (by click day for
  ``click_ts``, by conversion day for ``conversion_day``); also the mean distance from the
  touchpoint path's totals of the same campaign.

Run: ``.venv/bin/python benchmarks/nowcast_quality.py [--seeds 20]`` (writes BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _report import ingested, machine, write_section
from scipy import stats  # type: ignore[import-untyped]

from signalloop import simulate as sim
from signalloop.ingest import ingest_file
from signalloop.nowcast import NowcastOptions, nowcast
from signalloop.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("duckdb", "ibis-framework", "numpy", "scipy", "pandas")
BEGIN = "<!-- nowcast-quality:begin -->"
END = "<!-- nowcast-quality:end -->"
DAYS, LAST = 90, 14
#: Trailing windows (days) of the partial-data comparison
SHAPE_WINDOWS = (7, 28)
SOFT_FAULTS = (
    "duplicate_events",
    "utm_mess",
    "creative_starvation",
    "override_storm",
    "low_volume",
)


def scenario(seed: int) -> sim.SimulationConfig:
    """The account of one seed: 6-10 campaigns, a non-tracking fault on two seeds in three."""
    rng = np.random.default_rng(3000 + seed)
    k = 6 + seed % 5
    faults: tuple[sim.Fault, ...] = ()
    if seed % 3:
        name = str(rng.choice(SOFT_FAULTS))
        cid = sim.campaign_ids(k)[int(rng.integers(0, k))]
        start = int(rng.integers(20, 60))
        end = DAYS - 1 if name in ("creative_starvation", "low_volume") else start + 20
        faults = (sim.Fault(name, cid, start, min(end, DAYS - 1)),)
    return sim.SimulationConfig(days=DAYS, campaigns=k, seed=seed, faults=faults)


def crm_truth(config: sim.SimulationConfig) -> dict[tuple[str, date], int]:
    """Won deals per (campaign, lead day) of the uncensored world (see the module docstring)."""
    from signalloop.simulate.entities import concat
    from signalloop.simulate.params import DAY, STAGES

    acct = sim.Account(config)
    events = [acct.step(d, acct.plan_budgets(d)) for d in range(config.days)]
    crm = concat([e.crm for e in events], "crm")
    lead = crm["stage"] == STAGES.index("lead")
    won = set(crm["record"][crm["stage"] == STAGES.index("won")].tolist())
    out: dict[tuple[str, date], int] = {}
    for rec, camp, ts in zip(crm["record"][lead], crm["camp"][lead], crm["ts"][lead], strict=True):
        day = int(ts // DAY)
        if day >= config.days:
            continue
        key = (acct.ids[int(camp)], config.start + timedelta(days=day))
        out[key] = out.get(key, 0) + int(rec in won)
    end = config.days * DAY
    world_won = int(((crm["stage"] == STAGES.index("won")) & (crm["ts"] < end)).sum())
    out[("__won_before_end__", config.start)] = world_won
    return out


def without_click_times(conv: pa.Table, campaigns: set[str]) -> pa.Table:
    """``conv`` with click_ts and click_id emptied on the rows of ``campaigns``."""
    drop = pa.array([c in campaigns for c in conv.column("campaign_id").to_pylist()])
    for col in ("click_ts", "click_id"):
        i = conv.column_names.index(col)
        blank = pa.nulls(len(conv), conv.schema.field(col).type)
        conv = conv.set_column(i, col, pc.if_else(drop, blank, conv.column(col)))
    return conv


def tables_nowcast(tables: dict[str, pa.Table], opts: NowcastOptions) -> dict[str, Any]:
    """Nowcast (as a dict) of a fresh in-memory workspace holding ``tables`` (Parquet)."""
    with tempfile.TemporaryDirectory() as tmp, Workspace(":memory:") as ws:
        for kind, table in tables.items():
            path = Path(tmp) / f"{kind}.parquet"
            pq.write_table(table, path)
            ingest_file(ws, kind, path, now=datetime(2030, 1, 1))
        t0 = time.perf_counter()
        doc = nowcast(ws, options=opts).to_dict()
        doc["seconds"] = time.perf_counter() - t0
    return doc


def shape_rows(
    config: sim.SimulationConfig,
    full: Any,
    truth_crm: dict[tuple[str, date], int],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Partial-data rows of one seed (see the module docstring) and the nowcasts' seconds.

    ``full`` is the touchpoint path's report; its window totals are sums of its cohorts.
    """
    as_of = config.start + timedelta(days=DAYS - 1)
    part = sim.simulate(replace(config, shape="spend_conversions"))
    daily = part.truth["daily"]
    ids = sim.campaign_ids(config.campaigns)
    odd = {c for i, c in enumerate(ids) if i % 2}
    spend, conv = part.tables["spend"], part.tables["conversions"]
    opts = NowcastOptions(windows=(*SHAPE_WINDOWS, 14, 60))
    runs = [("click_ts", conv, set(ids), opts)]
    for mine in (odd, set(ids) - odd):
        no_crm = NowcastOptions(windows=SHAPE_WINDOWS, crm=False)
        runs.append(("conversion_day", without_click_times(conv, mine), mine, no_crm))
    rows: list[dict[str, Any]] = []
    crm_rows: list[dict[str, Any]] = []
    seconds = 0.0
    for basis, table, scored, o in runs:
        doc = tables_nowcast({"spend": spend, "conversions": table}, o)
        seconds += doc["seconds"]
        for c in doc["campaigns"]:
            cid = c["campaign_id"]
            if cid not in scored:
                continue
            assert c["basis"] == basis, f"{cid}: basis {c['basis']}, expected {basis}"
            for n in SHAPE_WINDOWS:
                since = as_of - timedelta(days=n - 1)
                x = c["windows"][f"{n}d"]
                ref = sum(
                    r["expected_conversions"]
                    for r in full.cohorts
                    if r["campaign_id"] == cid and date.fromisoformat(r["date"]) >= since
                )
                rows.append(
                    {
                        "basis": basis,
                        "campaign": cid,
                        "window": n,
                        "truth": sum(daily[cid]["conversions_by_click_date"][DAYS - n :]),
                        "observed": x["observed_conversions"],
                        "expected": x["expected_conversions"],
                        "lower": x["lower"],
                        "upper": x["upper"],
                        "full": ref,
                    }
                )
        for c in doc["crm"].get("campaigns", []) if basis == "click_ts" else []:
            for w, n in (("14d", 14), ("60d", 60)):
                since = as_of - timedelta(days=n - 1)
                x = c["windows"].get(w) or {}
                if not x:
                    continue
                crm_rows.append(
                    {
                        "campaign": c["campaign_id"],
                        "window": w,
                        "truth": sum(
                            v
                            for (cid, day), v in truth_crm.items()
                            if cid == c["campaign_id"] and day >= since
                        ),
                        "observed": x["observed_deals"],
                        "expected": x["expected_deals"],
                        "lower": x["lower"],
                        "upper": x["upper"],
                    }
                )
    return rows, crm_rows, seconds


def run_seed(seed: int) -> dict[str, Any]:
    config = scenario(seed)
    t0 = time.perf_counter()
    result = sim.simulate(config)
    truth_crm = crm_truth(config)
    world_won = truth_crm.pop(("__won_before_end__", config.start))
    observed_won = int(
        sum(1 for s in result.tables["crm"].column("stage").to_pylist() if s == "won")
    )
    assert observed_won == world_won, f"seed {seed}: world replay differs ({world_won})"
    as_of = config.start + timedelta(days=DAYS - 1)
    first = as_of - timedelta(days=LAST - 1)
    opts = NowcastOptions(windows=(14, 60))
    with ingested(result) as ws:
        prep = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = nowcast(ws, options=opts)
        seconds = time.perf_counter() - t1
    assert report.as_of == as_of
    daily = result.truth["daily"]
    click = []
    for r in report.cohorts:
        d = date.fromisoformat(r["date"])
        if d < first:
            continue
        i = (d - config.start).days
        t = daily[r["campaign_id"]]
        click.append(
            {
                "campaign": r["campaign_id"],
                "day": i,
                "truth": t["conversions_by_click_date"][i],
                "observed": r["observed_conversions"],
                "expected": r["expected_conversions"],
                "lower": r["lower"],
                "upper": r["upper"],
                "truth_value": t["value_by_click_date"][i],
                "observed_value": r["observed_value"],
                "expected_value": r["expected_value"],
                "value_lower": r["value_lower"],
                "value_upper": r["value_upper"],
            }
        )
    crm = []
    for r in report.crm.get("cohorts", []):
        d = date.fromisoformat(r["date"])
        if d < first:
            continue
        crm.append(
            {
                "campaign": r["campaign_id"],
                "day": (d - config.start).days,
                "truth": truth_crm.get((r["campaign_id"], d), 0),
                "observed": r["observed_deals"],
                "expected": r["expected_deals"],
                "lower": r["lower"],
                "upper": r["upper"],
            }
        )
    windows = []
    for c in report.crm.get("campaigns", []):
        for w, n in (("14d", 14), ("60d", 60)):
            since = as_of - timedelta(days=n - 1)
            truth = sum(
                v for (cid, day), v in truth_crm.items() if cid == c["campaign_id"] and day >= since
            )
            x = c["windows"][w]
            windows.append(
                {
                    "campaign": c["campaign_id"],
                    "window": w,
                    "truth": truth,
                    "observed": x["observed_deals"],
                    "expected": x["expected_deals"],
                    "lower": x["lower"],
                    "upper": x["upper"],
                }
            )
    click_windows = []
    for c in report.campaigns:
        x = c["windows"]["14d"]
        first_day = (as_of - timedelta(days=13) - config.start).days
        click_windows.append(
            {
                "campaign": c["campaign_id"],
                "window": "14d",
                "truth": sum(daily[c["campaign_id"]]["conversions_by_click_date"][first_day:]),
                "observed": x["observed_conversions"],
                "expected": x["expected_conversions"],
                "lower": x["lower"],
                "upper": x["upper"],
            }
        )
    shapes, shape_crm, shape_seconds = shape_rows(config, report, truth_crm)
    return {
        "seed": seed,
        "campaigns": config.campaigns,
        "faults": [f"{f.name}@{f.campaign}:{f.start}-{f.end}" for f in config.faults],
        "prep_seconds": prep,
        "nowcast_seconds": seconds,
        "click": click,
        "click_windows": click_windows,
        "crm": crm,
        "crm_windows": windows,
        "phi": report.account.get("click", {}).get("overdispersion"),
        "shapes": shapes,
        "shape_crm": shape_crm,
        "shape_seconds": shape_seconds,
    }


def score(rows: Iterable[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    """Error ratio (expected vs naive) and interval coverage of ``rows``."""
    rows = list(rows)
    if not rows:
        return {"n": 0}
    truth = np.array([r[f"truth{prefix}"] for r in rows], float)
    obs = np.array([r[f"observed{prefix}"] for r in rows], float)
    exp = np.array([r[f"expected{prefix}"] for r in rows], float)
    lo_key, hi_key = ("value_lower", "value_upper") if prefix else ("lower", "upper")
    lo = np.array([r[lo_key] for r in rows], float)
    hi = np.array([r[hi_key] for r in rows], float)
    err, naive = np.abs(exp - truth).sum(), np.abs(obs - truth).sum()
    inside = (lo <= truth + 1e-9) & (truth <= hi + 1e-9)
    # the error floor: what still has to arrive is a count, random even when its expectation
    # is known exactly; with m expected, E|X - m| = 2 m P(X = floor(m)) for X ~ Poisson(m)
    rest = np.maximum(exp - obs, 0.0)
    floor = (
        float(np.sum(2 * rest * stats.poisson.pmf(np.floor(rest), rest))) if not prefix else None
    )
    return {
        "n": len(rows),
        "truth": float(truth.sum()),
        "observed": float(obs.sum()),
        "expected": float(exp.sum()),
        "abs_error": float(err),
        "naive_abs_error": float(naive),
        "error_ratio": float(err / naive) if naive else None,
        "floor_ratio": floor / float(naive) if naive and floor is not None else None,
        "coverage": float(inside.mean()),
        "below": float((truth < lo - 1e-9).mean()),
        "above": float((truth > hi + 1e-9).mean()),
        "bias": float((exp - truth).sum() / max(truth.sum(), 1.0)),
    }


def shape_score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`score` of partial-data rows, with the touchpoint path's error beside it.

    ``rel_error`` and ``full_error``: sum |estimate - truth| / sum truth of this basis and of
    the touchpoint path on the same campaigns; ``vs_full``: sum |estimate - touchpoint
    path| / sum touchpoint path. No noise floor (the naive count of ``conversion_day`` is
    by conversion day, not the cohort's).
    """
    out = score(rows) | {"floor_ratio": None}
    if not rows:
        return out
    t = np.array([r["truth"] for r in rows], float)
    e = np.array([r["expected"] for r in rows], float)
    f = np.array([r["full"] for r in rows], float)
    return out | {
        "rel_error": float(np.abs(e - t).sum() / t.sum()),
        "full_error": float(np.abs(f - t).sum() / t.sum()),
        "vs_full": float(np.abs(e - f).sum() / f.sum()),
        "vs_full_max": float(np.max(np.abs(e - f) / np.maximum(f, 1.0))),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    def every(key: str) -> list[dict[str, Any]]:
        return [r for res in results for r in res[key]]

    click = every("click")
    purchase = [r for r in click if r["truth_value"] > 0 or r["observed_value"] > 0]
    by_age = {}
    for age in range(LAST):
        day = DAYS - 1 - age
        by_age[age] = score(r for r in click if r["day"] == day)
    crm_age = {}
    for lo_age, hi_age in ((0, 6), (7, 13)):
        crm_age[f"{lo_age}-{hi_age}"] = score(
            r for r in every("crm") if lo_age <= DAYS - 1 - r["day"] <= hi_age
        )
    per_seed = [
        {
            "seed": res["seed"],
            "campaigns": res["campaigns"],
            "faults": res["faults"],
            "click": score(res["click"]),
            "crm": score(res["crm"]),
            "nowcast_seconds": res["nowcast_seconds"],
            "phi": res["phi"],
        }
        for res in results
    ]
    cw = every("crm_windows")
    volume: dict[str, list[dict[str, Any]]] = {"< 10": [], "10-30": [], ">= 30": []}
    for res in results:
        per: dict[str, list[dict[str, Any]]] = {}
        for r in res["click"]:
            per.setdefault(r["campaign"], []).append(r)
        for rows in per.values():
            mean = float(np.mean([r["truth"] for r in rows]))
            key = "< 10" if mean < 10 else "10-30" if mean < 30 else ">= 30"
            volume[key] += rows
    shapes = every("shapes")
    by_basis = {}
    for basis in ("click_ts", "conversion_day"):
        for n in SHAPE_WINDOWS:
            rows = [r for r in shapes if r["basis"] == basis and r["window"] == n]
            by_basis[f"{basis} {n}d"] = shape_score(rows)
    scrm = every("shape_crm")
    return {
        "seeds": len(results),
        "shapes": by_basis,
        "shape_crm_14d": score(r for r in scrm if r["window"] == "14d"),
        "shape_crm_60d": score(r for r in scrm if r["window"] == "60d"),
        "shape_seconds": float(np.mean([r["shape_seconds"] for r in results])),
        "click": score(click),
        "click_value": score(purchase, "_value"),
        "click_by_age": by_age,
        "click_by_volume": {k: score(v) for k, v in volume.items()},
        "click_14d_totals": score(every("click_windows")),
        "crm": score(every("crm")),
        "crm_by_age": crm_age,
        "crm_14d_totals": score(r for r in cw if r["window"] == "14d"),
        "crm_60d_totals": score(r for r in cw if r["window"] == "60d"),
        "per_seed": per_seed,
        "nowcast_seconds": float(np.mean([r["nowcast_seconds"] for r in results])),
        "nowcast_seconds_max": float(np.max([r["nowcast_seconds"] for r in results])),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _row(name: str, s: dict[str, Any]) -> str:
    if not s.get("n"):
        return f"| {name} | 0 | - | - | - | - | - | - |"
    ratio = "-" if s["error_ratio"] is None else f"{s['error_ratio']:.3f}"
    floor = "-" if s.get("floor_ratio") is None else f"{s['floor_ratio']:.3f}"
    return (
        f"| {name} | {s['n']} | {s['abs_error']:.0f} / {s['naive_abs_error']:.0f} | **{ratio}** "
        f"| {floor} | **{_pct(s['coverage'])}** ({_pct(s['below'])} below, "
        f"{_pct(s['above'])} above) | {s['truth']:.0f} / {s['observed']:.0f} / "
        f"{s['expected']:.0f} | {s['bias']:+.1%} |"
    )


def _check(value: float | None, ok: bool) -> str:
    return "-" if value is None else ("met" if ok else "**not met**")


def _shape_reading(summary: dict[str, Any]) -> str:
    """The "Reading it" bullet of the partial-data table, from its numbers."""
    sh = summary["shapes"]
    ts7, ts28 = sh["click_ts 7d"], sh["click_ts 28d"]
    cd7, cd28 = sh["conversion_day 7d"], sh["conversion_day 28d"]
    if not all(x.get("n") for x in (ts7, ts28, cd7, cd28)):
        return "* **Partial data**: not measured."
    return (
        "* **Partial data.** Without touchpoints, the spend table's daily clicks with the "
        "conversions' click_ts give the touchpoint path's totals: "
        f"{ts7['vs_full']:.1%} apart on 7 days (at most {ts7['vs_full_max']:.1%} on one "
        f"campaign) and {ts28['vs_full']:.1%} on 28; only the hours of the clicks that did "
        "not convert are unknown, and the hour-of-day profile of the converted clicks stands "
        "in for them. With the conversion day only, the nowcast's error on 7 days is "
        f"{cd7['rel_error']:.1%} of the truth against {cd7['full_error']:.1%} for the "
        f"touchpoint path on the same campaigns ({cd28['rel_error']:.1%} / "
        f"{cd28['full_error']:.1%} on 28 days), and the observed count by conversion day "
        f"scores error ratio {cd7['error_ratio']:.2f}: in a steady account the conversions "
        "of the last days stand in for those the last days' clicks will still make, so the "
        "naive count is already close, and what the delay correction adds is the change of "
        f"volume within the window. Its intervals hold {_pct(cd7['coverage'])} / "
        f"{_pct(cd28['coverage'])}: the delay of a campaign never seen is the account's with "
        "the spread between campaigns, the back-allocation of each day's conversions to "
        "click days is drawn, and the day-level rate variation is not in the allocation."
    )


def markdown(summary: dict[str, Any], command: str) -> str:
    head = (
        "| cohorts | n | abs error: nowcast / naive | error ratio | noise floor "
        "| 90% interval coverage | truth / observed / nowcast | bias |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    day, tot = summary["click"], summary["click_14d_totals"]
    crm, crm14, crm60 = summary["crm"], summary["crm_14d_totals"], summary["crm_60d_totals"]
    targets = [
        ("click, per campaign: last 14 cohort days summed", "error ratio <= 1/3", tot, "ratio"),
        ("click, per cohort day (last 14)", "error ratio <= 1/3", day, "ratio"),
        ("click, per cohort day (last 14)", "coverage 85-95%", day, "coverage"),
        ("click, per campaign: last 14 days summed", "coverage 85-95%", tot, "coverage"),
        ("CRM, per campaign: last 14 lead days summed", "error ratio <= 1/3", crm14, "ratio"),
        ("CRM, per lead day (last 14)", "error ratio <= 1/3", crm, "ratio"),
        ("CRM, per lead day (last 14)", "coverage 85-95%", crm, "coverage"),
        ("CRM, per campaign: last 14 lead days summed", "coverage 85-95%", crm14, "coverage"),
        ("CRM, per campaign: last 60 lead days summed", "coverage 85-95%", crm60, "coverage"),
    ]
    lines = [
        BEGIN,
        "## Nowcast against the simulator's truth",
        "",
        f"Command: `{command}`. Measured {datetime.now(UTC):%Y-%m-%d} on {machine(PACKAGES)}.",
        "",
        f"{summary['seeds']} seeds, each a {DAYS}-day account of 6-10 campaigns (two seeds in "
        "three with one non-tracking fault: duplicate_events, utm_mess, creative_starvation, "
        "override_storm or low_volume), nowcast as of the last day with the defaults "
        "(`lognormal_cure`, 1000 draws). Scored: the last 14 cohort days of every campaign. "
        "Error ratio = sum |nowcast - truth| / sum |observed so far - truth|; coverage = share "
        "of cohorts (or sums) whose 90% interval holds the truth. Truth of the click path: "
        "`conversions_by_click_date` / `value_by_click_date`; of the CRM path: won deals per "
        "lead day, read from the replayed uncensored world (see the script's docstring). "
        "*Noise floor*: the error ratio a forecaster would score if it knew each cohort's "
        "expected remainder `m` exactly (sum of `E|X - m|`, `X ~ Poisson(m)`, with `m` the "
        "nowcast's own remainder): what is still to arrive is a random count, so no estimate "
        "of it can do better on average.",
        "",
        "### Against the targets",
        "",
        "| what | target | result | |",
        "|---|---|---|---|",
    ]
    for what, target, sc, kind in targets:
        if kind == "ratio":
            v = sc.get("error_ratio")
            res = f"{v:.3f} (noise floor {sc['floor_ratio']:.3f})" if v is not None else "-"
            ok = v is not None and v <= 1 / 3
        else:
            v = sc.get("coverage")
            res = _pct(v)
            ok = v is not None and 0.85 <= v <= 0.95
        lines.append(f"| {what} | {target} | {res} | {_check(v, ok)} |")
    lines += [
        "",
        "### Click path (click to conversion, hours)",
        "",
        head,
        _row("click days, last 14", day),
        _row("value of purchase days, last 14", summary["click_value"]),
        _row("campaign totals, last 14 days", tot),
        "",
        "By campaign volume (mean true conversions per day over the 14 days):",
        "",
        head,
    ]
    for k, sc in summary["click_by_volume"].items():
        lines.append(_row(f"{k} a day", sc))
    lines += ["", "By cohort age (0 = the as-of day, clicks 0-24 h old):", "", head]
    for age, sc in summary["click_by_age"].items():
        lines.append(_row(f"age {age} d", sc))
    lines += [
        "",
        "### CRM path (lead to won deal, days to months)",
        "",
        head,
        _row("lead days, last 14", crm),
    ]
    for k, sc in summary["crm_by_age"].items():
        lines.append(_row(f"lead days aged {k} d", sc))
    lines += [
        _row("campaign totals, last 14 lead days", crm14),
        _row("campaign totals, last 60 lead days", crm60),
        "",
        "### Partial data: the nowcast's basis",
        "",
        "The same worlds without touchpoints (see the script's docstring): `click_ts` = spend "
        "+ conversions with campaign_id and click_ts (cohorts of the spend table's clicks); "
        "`conversion_day` = conversions with campaign_id only, for half the campaigns at a "
        "time (the delay of the other half, conversions spread back over click days). Per "
        "campaign, the last 7 and 28 days summed. Naive: observed so far (by click day; by "
        "conversion day for `conversion_day`). *Touchpoint path*: the full data's nowcast of "
        "the same campaigns.",
        "",
        "| basis | window | n | abs error: nowcast / naive | error ratio "
        "| 90% interval coverage | truth / observed / nowcast | bias "
        "| abs error / truth: this / touchpoint path | distance from the touchpoint path "
        "(mean, max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, sc in summary["shapes"].items():
        basis, win = key.split(" ")
        if not sc.get("n"):
            continue
        lines.append(
            f"| `{basis}` | {win} | {sc['n']} | {sc['abs_error']:.0f} / "
            f"{sc['naive_abs_error']:.0f} | **{sc['error_ratio']:.3f}** "
            f"| **{_pct(sc['coverage'])}** ({_pct(sc['below'])} below, {_pct(sc['above'])} "
            f"above) | {sc['truth']:.0f} / {sc['observed']:.0f} / {sc['expected']:.0f} "
            f"| {sc['bias']:+.1%} | {sc['rel_error']:.1%} / {sc['full_error']:.1%} "
            f"| {sc['vs_full']:.1%}, {sc['vs_full_max']:.1%} |"
        )
    s14, s60 = summary["shape_crm_14d"], summary["shape_crm_60d"]
    lines += [
        "",
        "CRM path built from conversions (no crm table: each lead conversion a record, the "
        "deal conversions of the same click its wins; lost leads unknown), against the crm "
        "table's path above:",
        "",
        head,
        _row("from conversions: campaign totals, last 14 lead days", s14),
        _row("from conversions: campaign totals, last 60 lead days", s60),
        _row("crm table: campaign totals, last 14 lead days", crm14),
        _row("crm table: campaign totals, last 60 lead days", crm60),
        "",
        f"The three partial-data nowcasts took {summary['shape_seconds']:.2f} s per account "
        "together.",
        "",
        "### Reading it",
        "",
        f"* **Click path, per cohort day: at the noise floor.** The error ratio "
        f"{day['error_ratio']:.3f} is what knowing each cohort's expected remainder exactly "
        f"would score ({day['floor_ratio']:.3f}), so the day-level target of 1/3 is out of "
        "reach for any estimate on accounts of this size (about 15 conversions per "
        "campaign-day): what is still to come on a cohort arrives or not by chance. On the "
        "youngest days the nowcast removes most of the naive error; from about a week of age "
        "only one or two late conversions remain and both errors are that Poisson noise. "
        "Campaigns with 30+ conversions a day are below 1/3 (table by volume), and summed "
        "over each campaign's last 14 days, where the noise averages out, the ratio is "
        f"{tot['error_ratio']:.3f}.",
        "* **Intervals** combine the delay parameters' posterior (parameter uncertainty), "
        "the cohort-level rate variation (a gamma multiplier, updated by what the cohort has "
        "already shown) and the binomial count of what is still to come, by Monte Carlo. They "
        "are whole numbers taken from the randomised quantiles of the count "
        "(`signalloop.nowcast.count_interval`): a plain quantile interval of a count covers "
        "more than asked, and on nearly complete cohorts almost always. Each also holds its "
        "nowcast (the whole numbers next to it), so a nearly complete cohort with a mean of "
        "k + 0.1 gets [k, k + 1]: single cohorts cover a few points more than 90% for it, "
        "sums over days are unchanged.",
        f"* **CRM path**: biased low, {-crm60['bias']:.0%} on 60-day sums and "
        f"{-crm['bias']:.0%} on the last 14 lead days, which is what keeps the 14-day sums "
        "under 85% coverage. Lead to won is a sum of four stage lags (in the simulator), not "
        "a lognormal: fitted to the early part that censoring leaves, the lognormal's tail is "
        "too short and the deal rate comes out low. A shifted (three-parameter) lognormal "
        "(`crm_model_params={'shift': True}`) removes that bias on large data but ran away "
        "into long tails on three of these seeds (40-180 observed deals each), so it is not "
        "the default. Per lead day (mostly 0 or 1 deal) the error ratio is near 1 for any "
        "estimate; the sums carry the information.",
        _shape_reading(summary),
        "",
        "Per seed (click path / CRM lead days):",
        "",
        "| seed | campaigns | fault | click error ratio | click coverage | CRM error ratio "
        "| CRM coverage | nowcast s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sd in summary["per_seed"]:
        c, r = sd["click"], sd["crm"]
        cr = "-" if not r.get("n") or r["error_ratio"] is None else f"{r['error_ratio']:.2f}"
        lines.append(
            f"| {sd['seed']} | {sd['campaigns']} | {', '.join(sd['faults']) or '-'} "
            f"| {c['error_ratio']:.3f} | {_pct(c['coverage'])} | {cr} "
            f"| {_pct(r.get('coverage'))} | {sd['nowcast_seconds']:.2f} |"
        )
    lines += [
        "",
        f"`nowcast()` took {summary['nowcast_seconds']:.2f} s per account on average "
        f"(max {summary['nowcast_seconds_max']:.2f} s; both paths, in-memory workspace, two "
        "seeds running at once on the two cores).",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--dump", type=Path, help="Write every scored cohort as JSON here.")
    args = ap.parse_args()
    seeds = list(range(1, args.seeds + 1))
    with ProcessPoolExecutor(args.jobs) as pool:
        results = []
        for r in pool.map(run_seed, seeds):
            results.append(r)
            c = score(r["click"])
            print(
                f"seed {r['seed']}: click ratio {c['error_ratio']:.3f} coverage "
                f"{c['coverage']:.0%}; nowcast {r['nowcast_seconds']:.2f} s",
                file=sys.stderr,
            )
    summary = summarise(results)
    if args.dump:
        args.dump.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=2))
    block = markdown(summary, f"benchmarks/nowcast_quality.py --seeds {args.seeds}")
    if args.no_write:
        print(block)
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
