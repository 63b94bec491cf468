"""Score the learning-phase replay against the simulator's truth.

For each seed, a 90-day account of 8 campaigns (one with an ``override_storm``: people's
edits resetting learning every few days) is simulated, ingested and replayed as of its last
day. Scored against the truth's per-ad-set resets and daily learning states: reset recall and
precision (same day), human resets counted, agreement of the daily state and of the state on
the as-of day.

Run: ``.venv/bin/python benchmarks/phase_quality.py [--seeds 20]`` (writes BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _report import ingested, write_section

from signalloop import simulate as sim
from signalloop.phase import phase

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- phase-quality:begin -->", "<!-- phase-quality:end -->"
DAYS, CAMPAIGNS = 90, 8
STATES = ("learning", "learning_limited", "stable")


def run_seed(seed: int) -> Counter[str]:
    storm = sim.Fault("override_storm", f"c0{1 + seed % CAMPAIGNS}", 30, 60)
    config = sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=seed, faults=(storm,))
    res = sim.simulate(config)
    with ingested(res) as ws:
        rep = phase(ws)
    tot: Counter[str] = Counter()
    for e in rep.entities:
        t = res.truth["learning"][e.entity_id]
        truth_resets = {r["date"] for r in t["resets"]}
        ours = {r.day.isoformat() for r in e.resets}
        tot["reset_tp"] += len(truth_resets & ours)
        tot["reset_fn"] += len(truth_resets - ours)
        tot["reset_fp"] += len(ours - truth_resets)
        # one reset a day: a day with any human significant edit counts once
        human_truth = len({r["day"] for r in t["resets"] if r["actor"] == "human" and r["day"] > 0})
        tot["human_truth"] += human_truth
        tot["human_ours"] += e.human_resets
        for i, st in enumerate(t["states"]):
            o = e.states.get((config.start + timedelta(days=i)).isoformat())
            if o is None:
                continue
            tot["days"] += 1
            tot["agree"] += o == st
            tot[f"{st}>{o}"] += 1
        tot["entities"] += 1
        tot["asof_agree"] += e.state == t["states"][-1]
    return tot


def markdown(tot: Counter[str], seeds: int) -> str:
    recall = tot["reset_tp"] / max(tot["reset_tp"] + tot["reset_fn"], 1)
    precision = tot["reset_tp"] / max(tot["reset_tp"] + tot["reset_fp"], 1)
    lines = [
        BEGIN,
        "## Learning phase against the simulator's truth",
        "",
        f"Command: `.venv/bin/python benchmarks/phase_quality.py --seeds {seeds}`. Measured "
        f"{datetime.now(UTC):%Y-%m-%d}; {seeds} seeds, each a {DAYS}-day account of "
        f"{CAMPAIGNS} campaigns with an `override_storm` on one of them; {tot['entities']} ad "
        "sets in all. The truth counts an ad set's conversions on their click day (as the "
        "platform attributes them later); the replay sees them when they happen, so a state "
        "can change a day or two later than the truth's.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| significant-edit resets found (recall, same day) | {recall:.1%} "
        f"({tot['reset_tp']}/{tot['reset_tp'] + tot['reset_fn']}) |",
        f"| resets reported that the truth has (precision) | {precision:.1%} |",
        f"| days with a human reset (after launch): truth / reported | {tot['human_truth']} / "
        f"{tot['human_ours']} |",
        f"| daily state agreement | {tot['agree'] / max(tot['days'], 1):.1%} over "
        f"{tot['days']:,} ad-set days |",
        f"| state on the as-of day agreement | {tot['asof_agree'] / max(tot['entities'], 1):.1%} |",
        "",
        "Daily states, truth (rows) against the replay (columns):",
        "",
        "| truth \\ replay | " + " | ".join(STATES) + " |",
        "|---|" + "---|" * len(STATES),
    ]
    for st in STATES:
        lines.append(f"| {st} | " + " | ".join(f"{tot[f'{st}>{o}']:,}" for o in STATES) + " |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tot: Counter[str] = Counter()
    for seed in range(1, args.seeds + 1):
        tot += run_seed(seed)
        print(f"seed {seed}: {dict(tot)}", file=sys.stderr)
    block = markdown(tot, args.seeds)
    print(block)
    if args.no_write:
        return
    write_section(block, BEGIN, END)


if __name__ == "__main__":
    main()
