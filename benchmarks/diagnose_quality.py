"""Score the diagnoses against the simulator's ground truth.

For each seed, a 90-day account of 13 campaigns gets one fault of every kind below, each on
its own campaign at a random window (the fault plan of ``checks_quality.py`` plus an
``override_storm``; campaigns with a CRM path get the CRM faults), and the three campaigns
left are clean and run healthy (``SimulationConfig.healthy``: a budget that takes every ad
set over the learning threshold with a margin, and a creative pipeline that replaces
creatives before their fatigue onset and launches something new at least every 14 days;
the other campaigns' world is exactly as without it). The files are ingested into a fresh
workspace and diagnosed as of the last day. A fault is *found* when one of its expected
failure types is among the top two diagnoses of the affected campaign (in
:func:`~signalloop.diagnose.diagnose`'s order: most severe first, then most money at stake,
then most confident). A
*false alarm* is a warn or critical diagnosis on a campaign without any fault; the report
says what the truth says about each one.

Run: ``.venv/bin/python benchmarks/diagnose_quality.py [--seeds 20] [--workers 2]``
(writes BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _report import ingested, machine, write_section
from checks_quality import DAYS
from checks_quality import scenario as checks_scenario

from signalloop import simulate as sim
from signalloop.diagnose import STARVATION_DAYS, diagnose
from signalloop.simulate import params as sim_params

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- diagnose-quality:begin -->"
END = "<!-- diagnose-quality:end -->"

#: fault -> the failure types that count as the right diagnosis
EXPECTED: dict[str, tuple[str, ...]] = {
    "tracking_outage": ("integration_dropout", "attribution_error"),
    "crm_sync_dropout": ("integration_dropout",),
    "utm_mess": ("attribution_error",),
    "duplicate_events": ("attribution_error",),
    "stage_overwrite": ("label_quality",),
    "late_offline_conversions": ("label_quality",),
    "creative_starvation": ("creative_fatigue",),
    "override_storm": ("override_churn",),
    "low_volume": ("low_volume_manual", "signal_gap"),
    "audience_bias": ("audience_bias",),
}
#: faults whose evidence can legitimately fade once the window is over
FADING = ("tracking_outage", "crm_sync_dropout", "override_storm")
PACKAGES = ("duckdb", "ibis-framework", "numpy", "scipy", "pandas")
CAMPAIGNS = 13
TARGET = 0.9
#: a window that ended more than this many days before the as-of date counts as "old"
#: (the diagnosis' override window, OVERRIDE_WINDOW_DAYS)
RECENT_DAYS = 28


def scenario(seed: int) -> tuple[sim.SimulationConfig, dict[str, sim.Fault]]:
    """The faults of one seed, drawn as in ``checks_quality.py`` (with an ``override_storm``
    of 20-40 days, in half the seeds still going at the as-of date); the campaigns without a
    fault run healthy."""
    config, faults = checks_scenario(seed, tuple(EXPECTED), CAMPAIGNS)
    faulted = {f.campaign for f in faults.values()}
    clean = tuple(c for c in sim.campaign_ids(CAMPAIGNS) if c not in faulted)
    return dataclasses.replace(config, healthy=clean), faults


def _short(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": d["failure_type"],
        "severity": d["severity"],
        "confidence": d["confidence"],
        "evidence": {
            k: v for k, v in d["evidence"].items() if isinstance(v, int | float | str | None)
        },
    }


def run_seed(seed: int) -> dict[str, Any]:
    config, faults = scenario(seed)
    result = sim.simulate(config)
    as_of = config.start + timedelta(days=DAYS - 1)
    with ingested(result) as ws:
        t0 = time.perf_counter()
        report = diagnose(ws, as_of)
        seconds = time.perf_counter() - t0
    by: dict[str | None, list[dict[str, Any]]] = {}
    for d in report["diagnoses"]:
        by.setdefault(d["campaign_id"], []).append(d)
    outcome: dict[str, Any] = {"seed": seed, "seconds": seconds, "faults": {}, "clean": {}}
    for name, fault in faults.items():
        ds = by.get(fault.campaign, [])
        types = [d["failure_type"] for d in ds]
        rank = next((i + 1 for i, t in enumerate(types) if t in EXPECTED[name]), None)
        outcome["faults"][name] = {
            "campaign": fault.campaign,
            "window": [fault.start, fault.end],
            "ended_days_before": DAYS - 1 - fault.end,
            "found": rank is not None and rank <= 2,
            "rank": rank,
            "diagnoses": [_short(d) for d in ds],
        }
    faulted = {f.campaign for f in faults.values()}
    truly_low = {
        cid
        for cid, d in result.truth["daily"].items()
        if sum(d["conversions_by_event_date"][-7:]) < 50
    }
    for cid in sorted(result.truth["campaigns"]):
        if cid in faulted:
            continue
        ds = by.get(cid, [])
        launches = sorted(
            {c["launch_day"] for c in result.truth["creatives"] if c["campaign"] == cid}
        )
        adset_7d = [
            sum(a["conversions"][-7:])
            for a in result.truth["learning"].values()
            if a["campaign"] == cid
        ]
        outcome["clean"][cid] = {
            "alarms": [_short(d) for d in ds if d["severity"] in ("warn", "critical")],
            "diagnoses": [_short(d) for d in ds],
            "truly_low": cid in truly_low,
            "healthy": config.is_healthy(cid),
            "true_volume_7d": sum(result.truth["daily"][cid]["conversions_by_event_date"][-7:]),
            "true_min_adset_7d": min(adset_7d, default=0),
            "true_max_launch_gap": max(
                b - a for a, b in zip(launches, [*launches[1:], DAYS - 1], strict=True)
            ),
            "true_fatigue_onsets": sum(
                1
                for c in result.truth["creatives"]
                if c["campaign"] == cid and c["fatigue_onset_day"] is not None
            ),
            # the truth's creatives: days since the newest launched, and how many of the
            # live ones are past their fatigue onset at the as-of date
            "true_days_since_launch": DAYS
            - 1
            - max(
                (c["launch_day"] for c in result.truth["creatives"] if c["campaign"] == cid),
                default=0,
            ),
            "true_fatigued_live": [
                sum(
                    1
                    for c in result.truth["creatives"]
                    if c["campaign"] == cid
                    and c["retire_day"] is None
                    and c["fatigue_onset_day"] is not None
                    and c["fatigue_onset_day"] <= DAYS - 1
                ),
                sum(
                    1
                    for c in result.truth["creatives"]
                    if c["campaign"] == cid and c["retire_day"] is None
                ),
            ],
        }
    outcome["account"] = [_short(d) for d in by.get(None, [])]
    return outcome


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {}
    for name in EXPECTED:
        fs = [r["faults"][name] for r in results]
        found = sum(f["found"] for f in fs)
        recent = [f for f in fs if f["ended_days_before"] <= RECENT_DAYS]
        old = [f for f in fs if f["ended_days_before"] > RECENT_DAYS]
        ongoing = [f for f in fs if f["ended_days_before"] == 0]
        over = [f for f in fs if f["ended_days_before"] > 0]
        misses = Counter(
            f"{f['diagnoses'][0]['type']} ({f['diagnoses'][0]['severity']})"
            if f["diagnoses"]
            else "no diagnosis"
            for f in fs
            if not f["found"]
        )
        top = Counter(f"{f['diagnoses'][0]['type']}" if f["diagnoses"] else "none" for f in fs)
        rows[name] = {
            "expected": list(EXPECTED[name]),
            "found": found,
            "injected": len(fs),
            "rate": found / len(fs),
            "met": found / len(fs) >= TARGET,
            "ongoing": [sum(f["found"] for f in ongoing), len(ongoing)],
            "ended": [sum(f["found"] for f in over), len(over)],
            "recent": [sum(f["found"] for f in recent), len(recent)],
            "old": [sum(f["found"] for f in old), len(old)],
            "missed_seeds": [
                {
                    "seed": r["seed"],
                    "window": r["faults"][name]["window"],
                    "ended_days_before": r["faults"][name]["ended_days_before"],
                    "diagnoses": r["faults"][name]["diagnoses"][:3],
                }
                for r in results
                if not r["faults"][name]["found"]
            ],
            "top_on_miss": dict(misses),
            "top": dict(top),
        }
    clean = [c for r in results for c in r["clean"].values()]
    alarms = Counter(f"{a['type']} ({a['severity']})" for c in clean for a in c["alarms"])
    alarm_low = sum(len(c["alarms"]) for c in clean if c["truly_low"])
    alarm_cases = [
        {
            "seed": r["seed"],
            "campaign": cid,
            "alarms": c["alarms"],
            "true_days_since_launch": c["true_days_since_launch"],
            "true_fatigued_live": c["true_fatigued_live"],
            "truly_low": c["truly_low"],
        }
        for r in results
        for cid, c in r["clean"].items()
        if c["alarms"]
    ]
    return {
        "seeds": len(results),
        "faults": rows,
        "clean_campaigns": len(clean),
        "clean_healthy": sum(1 for c in clean if c["healthy"]),
        "clean_truth": {
            k: [min(c[k] for c in clean), max(c[k] for c in clean)] if clean else None
            for k in (
                "true_volume_7d",
                "true_min_adset_7d",
                "true_days_since_launch",
                "true_max_launch_gap",
                "true_fatigue_onsets",
            )
        },
        "clean_with_alarm": sum(1 for c in clean if c["alarms"]),
        "clean_alarms": sum(len(c["alarms"]) for c in clean),
        "clean_alarms_by_type": dict(alarms),
        "clean_alarms_truly_low": alarm_low,
        "clean_alarm_cases": alarm_cases,
        "clean_info": dict(
            Counter(d["type"] for c in clean for d in c["diagnoses"] if d["severity"] == "info")
        ),
        "account_diagnoses": dict(
            Counter(f"{a['type']} ({a['severity']})" for r in results for a in r["account"])
        ),
        "mean_diagnose_seconds": float(np.mean([r["seconds"] for r in results])),
    }


def _clean_truth(summary: dict[str, Any]) -> list[str]:
    """What the simulator's truth says about the alarms on campaigns without a fault."""
    cases = summary["clean_alarm_cases"]
    if not cases:
        return []
    fat = [c for c in cases for a in c["alarms"] if a["type"] == "creative_fatigue"]
    low = [c for c in cases for a in c["alarms"] if a["type"] in ("low_volume_manual",)]
    other = [
        a["type"]
        for c in cases
        for a in c["alarms"]
        if a["type"] not in ("creative_fatigue", "low_volume_manual")
    ]
    out = []
    if fat:
        days = [c["true_days_since_launch"] for c in fat]
        starving = sum(1 for d in days if d >= STARVATION_DAYS)
        out.append(
            f"`creative_fatigue` x{len(fat)}: in the truth, the campaign's newest creative had "
            f"launched {min(days)}-{max(days)} days before the as-of date ({starving} of "
            f"{len(fat)} past the {STARVATION_DAYS}-day starvation window), with "
            f"{sum(c['true_fatigued_live'][0] for c in fat)} of "
            f"{sum(c['true_fatigued_live'][1] for c in fat)} live creatives past their true "
            "fatigue onset: the baseline account's own creative cadence, not an injected fault"
        )
    if low:
        vols = [
            a["evidence"].get("pooled_projected_conversions_7d")
            for c in low
            for a in c["alarms"]
            if a["type"] == "low_volume_manual"
        ]
        out.append(
            f"`low_volume_manual` x{len(low)}: {sum(c['truly_low'] for c in low)} of them on "
            "a campaign whose true volume over the last 7 days is under the learning "
            f"threshold (pooled projection {min(vols)}-{max(vols)} per 7 days): seeds "
            + ", ".join(f"{c['seed']} ({c['campaign']})" for c in low)
        )
    if other:
        out.append("other: " + ", ".join(f"{k} x{v}" for k, v in sorted(Counter(other).items())))
    return [
        "What the truth says about those alarms: " + "; ".join(out) + ". The target counts "
        "them all the same: a campaign without an injected fault is not free of problems "
        "in the simulated world.",
        "",
    ]


def _clean_state(summary: dict[str, Any]) -> list[str]:
    """What the simulator's truth says about the campaigns without a fault."""
    t = summary["clean_truth"]
    if not t:
        return []

    def span(k: str) -> str:
        lo, hi = t[k]
        return f"{lo:.0f}" if lo == hi else f"{lo:.0f}-{hi:.0f}"

    return [
        f"In the truth, those {summary['clean_campaigns']} campaigns ({summary['clean_healthy']} "
        f"run healthy) made {span('true_volume_7d')} conversions over the last 7 days (each ad "
        f"set at least {t['true_min_adset_7d'][0]:.0f}; threshold 50); their newest creative "
        f"was {span('true_days_since_launch')} days old at the as-of date, the longest gap "
        f"between launches {span('true_max_launch_gap')} days (starvation window "
        f"{STARVATION_DAYS}), and {span('true_fatigue_onsets')} creatives per campaign reached "
        "their true fatigue onset.",
        "",
    ]


def _frac(pair: list[int]) -> str:
    return f"{pair[0]}/{pair[1]}" if pair[1] else "-"


def markdown(summary: dict[str, Any], command: str, wall: float, workers: int) -> str:
    n = summary["seeds"]
    lines = [
        BEGIN,
        "## Diagnoses against the simulator's truth",
        "",
        f"Command: `{command}`. Measured {datetime.now(UTC):%Y-%m-%d} on {machine(PACKAGES)}; "
        f"{workers} worker processes, {wall / 60:.1f} min in all (mean `diagnose()` "
        f"{summary['mean_diagnose_seconds']:.1f} s per account, checks, phase, fatigue, "
        "nowcast and feedback depth included; simulation and ingest not).",
        "",
        f"{n} seeds, each a {DAYS}-day account of {CAMPAIGNS} campaigns with one fault of "
        "every kind below on its own campaign (the fault plan of `checks_quality.py` plus an "
        "`override_storm` of 20-40 days, still going at the as-of date in about half the "
        "seeds; half the outages are still going too) and three clean campaigns, run "
        "healthy (`SimulationConfig(healthy=...)`: a budget that takes every ad set over the "
        "learning threshold with a margin, a creative pipeline that replaces creatives before "
        "their fatigue onset and launches one at least every "
        f"{sim_params.HEALTHY_CADENCE_DAYS} days; the other campaigns' world is as without "
        "it, though the observation faults that draw over every row at once, the late "
        "offline delays, duplicate copies and UTM variants, fall differently on the faulted "
        "campaign's rows), diagnosed as of the last day. A fault is found when one of its "
        "expected types is among the top two diagnoses of the affected campaign (diagnose's "
        "order: most severe, then most money at stake, then most confident). "
        f"Target: >= {TARGET:.0%} of seeds per fault.",
        "",
        "| fault | expected failure type | found (top two) | target | window still open "
        f"| ended <= {RECENT_DAYS} d before as-of | ended > {RECENT_DAYS} d before |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["faults"].items():
        exp = " or ".join(f"`{t}`" for t in r["expected"])
        recent_ended = [r["recent"][0] - r["ongoing"][0], r["recent"][1] - r["ongoing"][1]]
        lines.append(
            f"| {name} | {exp} | {r['rate']:.0%} ({r['found']}/{r['injected']}) | "
            f"{'met' if r['met'] else '**NOT met**'} | {_frac(r['ongoing'])} | "
            f"{_frac(recent_ended)} | {_frac(r['old'])} |"
        )
    fading = []
    for name in FADING:
        r = summary["faults"][name]
        hit, tot = r["recent"]
        if tot and not r["met"]:
            ok = hit / tot >= TARGET
            fading.append(
                f"`{name}` on the seeds whose window ended at most {RECENT_DAYS} days before "
                f"the as-of date: {hit}/{tot} ({hit / tot:.0%}, "
                f"{'met' if ok else '**NOT met**'})"
            )
    if fading:
        lines += ["", "Leaving out the windows that may have faded: " + "; ".join(fading) + "."]
    missed = {k: v for k, v in summary["faults"].items() if v["missed_seeds"]}
    if missed:
        lines += ["", "Misses (what the affected campaign's top diagnosis was instead):", ""]
        for name, r in missed.items():
            seeds = "; ".join(
                f"seed {m['seed']}, window days {m['window'][0]}-{m['window'][1]} "
                f"(ended {m['ended_days_before']} d before as-of): "
                + (
                    ", ".join(f"{d['type']} ({d['severity']})" for d in m["diagnoses"][:2])
                    or "no diagnosis at all"
                )
                for m in r["missed_seeds"]
            )
            lines.append(f"* `{name}`: {seeds}.")
    clean_types = ", ".join(f"{k} x{v}" for k, v in sorted(summary["clean_alarms_by_type"].items()))
    met = summary["clean_alarms"] == 0
    lines += [
        "",
        f"Campaigns without a fault: {summary['clean_campaigns']} over {n} seeds; "
        f"**{summary['clean_alarms']}** warn/critical diagnoses on "
        f"{summary['clean_with_alarm']} of them (target: none, "
        f"{'met' if met else '**NOT met**'})"
        + (f": {clean_types}" if clean_types else "")
        + (
            f"; {summary['clean_alarms_truly_low']} of them on a campaign whose true volume "
            "over the last 7 days is under the learning threshold"
            if summary["clean_alarms"]
            else ""
        )
        + ". Info diagnoses on them: "
        + (", ".join(f"{k} x{v}" for k, v in sorted(summary["clean_info"].items())) or "none")
        + ". Account-wide diagnoses: "
        + (
            ", ".join(f"{k} x{v}" for k, v in sorted(summary["account_diagnoses"].items()))
            or "none"
        )
        + ".",
        "",
        *_clean_state(summary),
        *_clean_truth(summary),
        "An outage or override storm whose window ended long before the as-of date may "
        "legitimately have faded: a closed outage stays an info diagnosis (its window is "
        f"already excluded), and override resets count over the last {RECENT_DAYS} days only; "
        "the last three columns split the seeds by the window's distance from the as-of "
        "date.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--details", action="store_true", help="Print every miss and alarm.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(run_seed, range(1, args.seeds + 1)):
            results.append(r)
            missed = [n for n, f in r["faults"].items() if not f["found"]]
            alarms = sum(len(c["alarms"]) for c in r["clean"].values())
            print(
                f"seed {r['seed']}: missed {missed or '-'}; clean alarms {alarms}; "
                f"{r['seconds']:.1f} s",
                file=sys.stderr,
            )
            if args.details:
                for n in missed:
                    print(f"   miss {n}: {r['faults'][n]}", file=sys.stderr)
                for cid, c in r["clean"].items():
                    if c["alarms"]:
                        print(f"   alarm {cid}: {c}", file=sys.stderr)
    wall = time.perf_counter() - t0
    summary = summarise(results)
    summary["wall_seconds"] = wall
    print(json.dumps(summary, indent=2))
    command = (
        f"make bench-diagnose (benchmarks/diagnose_quality.py --seeds {args.seeds} "
        f"--workers {args.workers})"
    )
    block = markdown(summary, command, wall, args.workers)
    if args.no_write:
        print(block)
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
