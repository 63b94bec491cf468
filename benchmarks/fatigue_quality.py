"""Score creative-fatigue onsets and starvation against the simulator's truth.

For each seed, a 90-day account of 8 campaigns (one starved of new creatives from day 30)
is simulated, ingested and fitted as of its last day. A creative's true onset is the first
day its expected CTR falls below 70% of its peak. Scored: of the creatives with a true onset,
how many get an onset and how far from the truth; onsets claimed for creatives that never
fatigued; and whether the starved campaign is flagged.

Run: ``.venv/bin/python benchmarks/fatigue_quality.py [--seeds 20]`` (writes BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _report import ingested, write_section

from signalloop import simulate as sim
from signalloop.fatigue import fatigue

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- fatigue-quality:begin -->", "<!-- fatigue-quality:end -->"
DAYS, CAMPAIGNS = 90, 8


def run_seed(seed: int) -> tuple[Counter[str], list[int]]:
    starved = f"c0{1 + seed % CAMPAIGNS}"
    fault = sim.Fault("creative_starvation", starved, 30, DAYS - 1)
    res = sim.simulate(
        sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=seed, faults=(fault,))
    )
    with ingested(res) as ws:
        rep = fatigue(ws)
    truth = {c["creative_id"]: c for c in res.truth["creatives"]}
    tot: Counter[str] = Counter()
    errors: list[int] = []
    start = res.config.start
    for c in rep.creatives:
        t = truth.get(c.creative_id)
        if t is None:
            continue
        on = t["fatigue_onset_day"]
        ours = (c.onset - start).days if c.onset else None
        if on is not None and on < DAYS:
            tot["true_onsets"] += 1
            if ours is not None:
                tot["found"] += 1
                errors.append(ours - on)
        else:
            tot["never_fatigued"] += 1
            tot["false_onsets"] += ours is not None
    camps = {c["campaign_id"]: c for c in rep.campaigns}
    tot["starved_flagged"] += bool(camps[starved]["starvation"])
    tot["top_fatigued_on_starved"] += camps[starved]["top_creative_status"] == "fatigued"
    tot["others_flagged"] += sum(1 for k, c in camps.items() if k != starved and c["starvation"])
    tot["others"] += len(camps) - 1
    return tot, errors


def markdown(tot: Counter[str], errors: list[int], seeds: int) -> str:
    e = np.abs(np.array(errors)) if errors else np.array([0])
    lines = [
        BEGIN,
        "## Creative fatigue against the simulator's truth",
        "",
        f"Command: `.venv/bin/python benchmarks/fatigue_quality.py --seeds {seeds}`. Measured "
        f"{datetime.now(UTC):%Y-%m-%d}; {seeds} seeds, each a {DAYS}-day account of "
        f"{CAMPAIGNS} campaigns, one starved of new creatives from day 30. The truth's onset is "
        "the first day a creative's expected CTR is below 70% of its peak (its decay has a "
        "floor and runs on frequency and age); the fit is log-linear in age and exposure.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| creatives with a true onset given an onset | {tot['found']}/{tot['true_onsets']} "
        f"({tot['found'] / max(tot['true_onsets'], 1):.0%}) |",
        f"| onset error, median / 80th percentile | {np.median(e):.0f} / "
        f"{np.percentile(e, 80):.0f} days |",
        f"| onsets within 7 days of the truth | {(e <= 7).sum()}/{tot['true_onsets']} |",
        f"| onsets claimed for creatives that never fatigued | {tot['false_onsets']}/"
        f"{tot['never_fatigued']} |",
        f"| starved campaign flagged (starvation) | {tot['starved_flagged']}/{seeds} |",
        f"| starved campaign's biggest creative called fatigued | "
        f"{tot['top_fatigued_on_starved']}/{seeds} |",
        f"| other campaigns flagged | {tot['others_flagged']}/{tot['others']} |",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tot: Counter[str] = Counter()
    errors: list[int] = []
    for seed in range(1, args.seeds + 1):
        t, e = run_seed(seed)
        tot += t
        errors += e
        print(f"seed {seed}: {dict(t)}", file=sys.stderr)
    block = markdown(tot, errors, args.seeds)
    print(block)
    if args.no_write:
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
