"""Budget policies in the time loop against the simulator: regret, resets, held spend.

For each seed, each scenario (:data:`signalloop.allocate.loop.SCENARIOS`: ``cold_start``,
``tracking_outage``, ``fatigue``) and each registered policy, the policy runs 8 simulated
weeks after its warm-up on a 6-campaign account (:func:`signalloop.allocate.loop.run_scenario`).
Reported per scenario and policy: mean and median regret as a % of the oracle's expected
conversions, learning resets caused, spend moved in held campaigns, held campaign-days and
realised conversions; and whether the issue's targets for the guarded policy are met.

Run: ``.venv/bin/python benchmarks/allocate_quality.py [--seeds 20] [--workers 2]``
(writes BENCHMARKS.md unless ``--no-write``).

``--shapes`` runs the allocation per data shape instead (:func:`shape_rows`, also called by
``shapes_quality.py``): the guarded policy seeing only what each shape shows (the loop's
``SimulationConfig.shape`` / ``click_ts``, :func:`signalloop.allocate.loop.observed_source`)
against an even split, as regret, the share of the full-data gain over an even split and
guardrail breaches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

from _report import log, machine, write_section

from signalloop.allocate.loop import (
    RUN_DAYS,
    SCENARIO_WARMUP,
    SCENARIOS,
    observed_source,
    run_scenario,
    scenario_config,
)
from signalloop.allocate.policy import POLICIES

PACKAGES = ("numpy",)
BEGIN, END = "<!-- allocate-quality:begin -->", "<!-- allocate-quality:end -->"
CAMPAIGNS = 6
GUARDED = "guarded_bayes"
ORDER = [GUARDED, *sorted(p for p in POLICIES if p != GUARDED)]


def run_seed(seed: int) -> list[dict[str, Any]]:
    """Every scenario x policy on one seed: the loop's totals."""
    rows = []
    for scenario in SCENARIOS:
        for policy in ORDER:
            res = run_scenario(scenario, policy, seed, campaigns=CAMPAIGNS)
            rows.append({"seed": seed, "scenario": scenario, "policy": policy, **res.totals})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (scenario, policy): means, medians and worst cases over the seeds."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r["policy"])].append(r)
    out = {}
    for key, rs in by.items():
        reg = [r["regret_pct"] for r in rs]
        out[key] = {
            "n": len(rs),
            "regret_mean": statistics.fmean(reg),
            "regret_median": statistics.median(reg),
            "regret_free_mean": statistics.fmean(r["regret_ignoring_learning_pct"] for r in rs),
            "resets_mean": statistics.fmean(r["resets_caused"] for r in rs),
            "resets_max": max(r["resets_caused"] for r in rs),
            "moved_held_total": sum(r["spend_moved_held"] for r in rs),
            "moved_held_mean": statistics.fmean(r["spend_moved_held"] for r in rs),
            "held_days_mean": statistics.fmean(r["held_days"] for r in rs),
            "realised_mean": statistics.fmean(r["realised"] for r in rs),
            "expected_mean": statistics.fmean(r["expected"] for r in rs),
        }
    return out


def markdown(
    summary: dict[tuple[str, str], dict[str, float]], seeds: int, seconds: float, workers: int
) -> str:
    lines = [
        BEGIN,
        "## Budget policies in the time loop against the simulator",
        "",
        f"Command: `make bench-allocate` (= `.venv/bin/python benchmarks/allocate_quality.py "
        f"--seeds {seeds}`). Measured {datetime.now(UTC):%Y-%m-%d} on {machine(PACKAGES)}; "
        f"{seeds} seeds x {len(SCENARIOS)} scenarios x {len(ORDER)} policies, "
        f"{workers} processes over seeds, {seconds:.0f} s in all.",
        "",
        f"Each run: a {CAMPAIGNS}-campaign simulated account, warm-up days at the account's own "
        f"plan, then {RUN_DAYS} days ({RUN_DAYS // 7} weeks) in which the policy splits the "
        "same daily budget (the plan's total on the last warm-up day) over the campaigns, "
        "seeing each morning only what was observable by the end of the day before: spend, "
        "clicks, the conversions that had arrived (real click-to-conversion delays, corrected "
        "by a chain-ladder delay estimate) and got through the observation faults, the gate "
        "(held while a campaign's conversions stop arriving although its clicks go on) and the "
        "ad sets' learning state (`signalloop.allocate.loop.run_policy`). Scenarios: "
        f"**cold_start** (warm-up {SCENARIO_WARMUP['cold_start']} days from launch: every arm "
        f"new), **tracking_outage** (warm-up {SCENARIO_WARMUP['tracking_outage']} days; the "
        "largest campaign loses its pixel and server conversions for 7 days from the 22nd "
        f"policy day), **fatigue** (warm-up {SCENARIO_WARMUP['fatigue']} days; "
        "`creative_starvation` on the largest campaign for the whole run: its creatives "
        "fatigue and are never refreshed).",
        "",
        "Regret = the oracle's expected conversions minus the policy's, as a % of the "
        "oracle's, summed over the policy days. The policy's expected conversions are the "
        "simulator's noise-free expectation at its budgets with each ad set's conversion rate "
        "scaled by its learning state that day (learning 0.8, learning-limited 0.9, stable "
        "1.0, the simulator's own multipliers), so what a reset costs counts; the oracle is "
        "the allocation that maximises the stable expectation for the same budget, held from "
        "the first policy day and never resetting learning (an upper bound: the switch to it "
        "from the warm-up budgets would itself reset some ad sets). The expectation assumes "
        "creatives at 80% of their peak CTR, so fatigue beyond that is left out of regret (the "
        "fatigue scenario's starved arm looks as good to the oracle as ever). *Regret "
        "ignoring learning* scores the allocation alone (every ad set stable). Realised "
        "conversions (what the clicks of the policy days actually "
        "produced) carry everything. Resets caused: ad-set learning resets from the policy's "
        "budget edits (> 20% a day, or a restart after 7+ days at zero). Spend moved in held "
        "campaigns: sum of |budget - the day before's| over the campaign-days the gate held.",
        "",
    ]
    for sc in SCENARIOS:
        lines += [
            f"### {sc}",
            "",
            "| policy | regret mean | regret median | regret ignoring learning (mean) | "
            "resets caused (mean / max) | "
            "spend moved in held campaigns (total) | held campaign-days (mean) | "
            "realised conversions (mean) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in ORDER:
            s = summary[(sc, p)]
            lines.append(
                f"| {p} | {s['regret_mean']:.1f}% | {s['regret_median']:.1f}% | "
                f"{s['regret_free_mean']:.1f}% | {s['resets_mean']:.1f} / {s['resets_max']:.0f} | "
                f"{s['moved_held_total']:,.2f} | {s['held_days_mean']:.1f} | "
                f"{s['realised_mean']:,.0f} |"
            )
        lines.append("")
    lines += ["### Targets (issue 6)", ""]
    lowest = []
    for sc in SCENARIOS:
        mine = summary[(sc, GUARDED)]["regret_mean"]
        best = min(ORDER, key=lambda p: summary[(sc, p)]["regret_mean"])
        if best == GUARDED:
            lowest.append(f"{sc}: lowest ({mine:.1f}%)")
        else:
            lowest.append(
                f"{sc}: {mine:.1f}% against {best}'s {summary[(sc, best)]['regret_mean']:.1f}%"
            )
    all_low = all(
        summary[(sc, GUARDED)]["regret_mean"] <= min(summary[(sc, p)]["regret_mean"] for p in ORDER)
        for sc in SCENARIOS
    )
    resets = sum(summary[(sc, GUARDED)]["resets_max"] for sc in SCENARIOS)
    moved = sum(summary[(sc, GUARDED)]["moved_held_total"] for sc in SCENARIOS)
    held = summary[("tracking_outage", GUARDED)]["held_days_mean"]
    most = [
        f"{sc}: {max(ORDER, key=lambda p: summary[(sc, p)]['realised_mean'])}" for sc in SCENARIOS
    ]
    lines += [
        f"- Lowest regret of all for the guarded policy (mean regret, every scenario): "
        f"**{'met' if all_low else 'NOT met'}** ({'; '.join(lowest)}).",
        "- Zero learning resets and zero budget moved in held campaigns for the guarded "
        f"policy (every seed and scenario): **{'met' if resets == 0 and moved == 0 else 'NOT met'}"
        f"** (worst run: {resets:.0f} resets; {moved:,.2f} moved in held campaigns over "
        f"all runs; the gate held {held:.1f} campaign-days a run on average in the outage "
        "scenario).",
        f"- For reference, the most realised conversions (mean): {'; '.join(most)}.",
        "",
        END,
    ]
    return "\n".join(lines)


# ---- per data shape ----------------------------------------------------------------------

SHAPES_BEGIN, SHAPES_END = "<!-- allocate-shapes:begin -->", "<!-- allocate-shapes:end -->"
#: (label, shape, click_ts): what the guarded policy sees, from the least data to the most
SHAPE_VARIANTS: tuple[tuple[str, str, bool], ...] = (
    (NO_OUTCOMES := "spend, no conversion counts", "spend", True),
    ("spend (platform-reported only)", "spend", True),
    ("spend_conversions, no click_ts", "spend_conversions", False),
    ("spend_conversions", "spend_conversions", True),
    ("full", "full", True),
)
EVEN = "even_split"
#: targets of issue 11: share of the full-data gain over an even split, per shape
SHARE_TARGETS = {"spend": 0.5, "spend_conversions": 0.8}


def run_shapes_seed(seed: int) -> list[dict[str, Any]]:
    """Every scenario on one seed: the even split, and the guarded policy on every shape."""
    rows = []
    for scenario in SCENARIOS:
        res = run_scenario(scenario, EVEN, seed, campaigns=CAMPAIGNS)
        rows.append({"seed": seed, "scenario": scenario, "variant": EVEN, **res.totals})
        for label, shape, click_ts in SHAPE_VARIANTS:
            res = run_scenario(
                scenario,
                GUARDED,
                seed,
                campaigns=CAMPAIGNS,
                shape=shape,
                click_ts=click_ts,
                source="none" if label == NO_OUTCOMES else None,
            )
            rows.append({"seed": seed, "scenario": scenario, "variant": label, **res.totals})
    return rows


def summarise_shapes(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per scenario (and ``all``) and variant: mean regret, breaches, unallocated, shares.

    ``share`` = (regret of the even split - regret of the variant) / (regret of the even
    split - regret on the full shape), on the means over the seeds; ``data_share`` the same
    against the guarded policy that sees no outcome (an even split within the guardrails),
    i.e. the share of what the full data adds beyond the guardrails.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sc in [*SCENARIOS, "all"]:
        mine = [r for r in rows if sc in ("all", r["scenario"])]
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in mine:
            by[r["variant"]].append(r)
        stats = {
            v: {
                "n": len(rs),
                "regret_mean": statistics.fmean(r["regret_pct"] for r in rs),
                "breaches": sum(r["breaches"] for r in rs),
                "resets": sum(r["resets_caused"] for r in rs),
                "unallocated_mean": statistics.fmean(r["unallocated"] for r in rs),
            }
            for v, rs in by.items()
        }
        even, full = stats[EVEN]["regret_mean"], stats["full"]["regret_mean"]
        blind = stats[NO_OUTCOMES]["regret_mean"]
        for v in stats:
            gain, data_gain = even - full, blind - full
            reg = stats[v]["regret_mean"]
            stats[v]["share"] = (even - reg) / gain if gain > 0 else 1.0
            stats[v]["data_share"] = (blind - reg) / data_gain if data_gain > 0 else float("nan")
        out[sc] = stats
    return out


def shape_rows(seeds: int, workers: int) -> list[str]:
    """Markdown lines of the allocation per data shape (the table, then the targets)."""
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, part in enumerate(pool.map(run_shapes_seed, range(1, seeds + 1)), 1):
            rows += part
            log(f"allocation per shape: seed {i}/{seeds} done ({time.perf_counter() - t0:.0f} s)")
    summary = summarise_shapes(rows)
    seconds = time.perf_counter() - t0
    sources = {
        label: observed_source(scenario_config("cold_start", 1, shape=shape, click_ts=cts))
        for label, shape, cts in SHAPE_VARIANTS
    }
    sources[NO_OUTCOMES] = "none"
    lines = [
        f"Command: `.venv/bin/python benchmarks/allocate_quality.py --shapes --seeds {seeds}`; "
        f"{seeds} seeds x {len(SCENARIOS)} scenarios ({', '.join(SCENARIOS)}) on a "
        f"{CAMPAIGNS}-campaign account, {RUN_DAYS} policy days each, {seconds:.0f} s with "
        f"{workers} processes. The time loop of `bench-allocate`, with the guarded policy "
        "seeing only what the shape shows (outcome source in brackets): `spend` the "
        "platform's reported conversions by click day (over-counting by a campaign factor "
        "1.10-1.40 and a daily noise, uncorrected for delay, no gate); `spend_conversions` "
        "without click_ts the first-party conversions on their arrival day; with click_ts, "
        "and `full`, click-day cohorts completed for the delay (the loop already reads "
        "conversions by their campaign and click_ts against the spend export's clicks, so "
        "these two see the same). Share = (regret of an even split - regret of the shape) "
        "/ (regret of an even split - regret on `full`), on the mean regrets. Breaches: "
        "campaign-days on which a campaign that spent moved more than 18%, or a held or "
        "learning one moved at all. Share beyond the guardrails: the same share against the "
        f"guarded policy that sees no outcome (`{NO_OUTCOMES}`: an even split within the "
        "guardrails) instead of the raw even split, i.e. how much of what the full data adds "
        "on top of the guardrails the shape keeps.",
        "",
        "| scenario | data shape (outcome source) | regret (mean) | share of the full-data "
        "gain | share beyond the guardrails | guardrail breaches | resets caused | "
        "unallocated a run (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sc in [*SCENARIOS, "all"]:
        st = summary[sc]
        lines.append(
            f"| {sc} | even split (raw) | {st[EVEN]['regret_mean']:.1f}% | 0% | - | "
            f"{st[EVEN]['breaches']:.0f} | {st[EVEN]['resets']:.0f} | - |"
        )
        for label, _, _ in SHAPE_VARIANTS:
            v = st[label]
            lines.append(
                f"| {sc} | {label} ({sources[label]}) | {v['regret_mean']:.1f}% | "
                f"{100 * v['share']:.0f}% | {100 * v['data_share']:.0f}% | "
                f"{v['breaches']:.0f} | {v['resets']:.0f} | "
                f"{v['unallocated_mean']:,.2f} |"
            )
    allst = summary["all"]
    checks = []
    for label, shape, cts in SHAPE_VARIANTS:
        target = SHARE_TARGETS.get(shape)
        if target is None or not cts or label == NO_OUTCOMES:
            continue
        got = allst[label]["share"]
        checks.append(
            f"{label} >= {target:.0%}: **{'met' if got >= target else 'NOT met'}** "
            f"({got:.0%}; {allst[label]['data_share']:.0%} beyond the guardrails)"
        )
    breaches = sum(allst[label]["breaches"] for label, _, _ in SHAPE_VARIANTS)
    lines += [
        "",
        f"Targets (issue 11, all scenarios): {'; '.join(checks)}; guardrail breaches 0 on "
        f"every shape: **{'met' if breaches == 0 else 'NOT met'}** ({breaches:.0f}).",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--shapes", action="store_true", help="the allocation per data shape")
    args = ap.parse_args()
    if args.shapes:
        lines = shape_rows(args.seeds, args.workers)
        block = "\n".join(
            [
                SHAPES_BEGIN,
                "## Budget allocation per data shape",
                "",
                f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine(PACKAGES)}.",
                "",
                *lines,
                SHAPES_END,
            ]
        )
        print(block)
        if not args.no_write:
            write_section(block, SHAPES_BEGIN, SHAPES_END)
        return
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seeds = list(range(1, args.seeds + 1))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, part in enumerate(pool.map(run_seed, seeds), 1):
            rows += part
            log(f"seed {i}/{len(seeds)} done ({time.perf_counter() - t0:.0f} s)")
    seconds = time.perf_counter() - t0
    block = markdown(summarise(rows), args.seeds, seconds, args.workers)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
