"""Every capability on every data shape: diagnose recall per shape, allocation per shape.

Real accounts arrive partial. For each seed, one 90-day account of 14 campaigns gets one fault
of every kind of ``diagnose_quality.py`` plus a ``click_id_loss`` (from a day in 50-70 to the
end), each on its own campaign (the fault plan of ``checks_quality.py``); the campaigns left
are clean and run healthy. The same world is then exported in each shape the simulator writes
(:data:`signalloop.simulate.SHAPES`: ``spend`` alone with the platform's own conversion
counts, ``spend_conversions``, ``crm``, ``full``), each shape ingested into a fresh workspace
and diagnosed as of the last day.

A fault counts for a shape only when that shape holds the data that can show it
(:data:`SHOWABLE`: an edit-log storm needs the edit log, UTM naming needs the click log, a
click-id loss needs clicks to match, a CRM dropout needs the CRM, an outage needs first-party
conversions); it is *found* when one of its expected failure types is among the top two
diagnoses of its campaign, as in ``diagnose_quality.py``. A *false alarm* is a warn or
critical diagnosis on a clean campaign.

The allocation half (regret against the oracle, the share of the full-data gain over an even
split, guardrail breaches per shape) is ``allocate_quality.py --shapes``: the time loop of
:mod:`signalloop.allocate.loop` observed through each shape. ``make bench-shapes`` runs both.

Run: ``.venv/bin/python benchmarks/shapes_quality.py [--seeds 20] [--workers 2]``
(writes BENCHMARKS.md unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _report import log, machine, write_section
from checks_quality import DAYS
from checks_quality import scenario as checks_scenario
from diagnose_quality import EXPECTED as DIAGNOSE_EXPECTED

from signalloop import simulate as sim
from signalloop.diagnose import diagnose
from signalloop.ingest import ingest_file
from signalloop.shapes import learnable
from signalloop.store import Workspace

BEGIN, END = "<!-- shapes-quality:begin -->", "<!-- shapes-quality:end -->"
PACKAGES = ("duckdb", "ibis-framework", "numpy", "scipy")
CAMPAIGNS = 14
#: fault -> the failure types that count as the right diagnosis
EXPECTED: dict[str, tuple[str, ...]] = {
    **DIAGNOSE_EXPECTED,
    "click_id_loss": ("attribution_error",),
}
_CONVERSION_FAULTS = (
    "creative_starvation",
    "low_volume",
    "tracking_outage",
    "duplicate_events",
    "late_offline_conversions",
)
#: shape -> the faults its data can show (what the others would need is in the README of
#: the shapes: the edit log, the click log, the CRM)
SHOWABLE: dict[str, tuple[str, ...]] = {
    "spend": ("creative_starvation", "low_volume"),
    "spend_conversions": _CONVERSION_FAULTS,
    "crm": (*_CONVERSION_FAULTS, "crm_sync_dropout", "stage_overwrite"),
    "full": tuple(EXPECTED),
}
TARGET = 0.9


def scenario(seed: int) -> tuple[sim.SimulationConfig, dict[str, sim.Fault]]:
    """The faults of one seed (``checks_quality`` windows; ``click_id_loss`` from a day in
    50-70 to the end); the campaigns without a fault run healthy."""
    config, faults = checks_scenario(seed, tuple(EXPECTED), CAMPAIGNS)
    rng = np.random.default_rng(2000 + seed)
    loss = faults["click_id_loss"]
    faults["click_id_loss"] = sim.Fault(
        "click_id_loss", loss.campaign, int(rng.integers(50, 71)), DAYS - 1
    )
    faulted = {f.campaign for f in faults.values()}
    clean = tuple(c for c in sim.campaign_ids(CAMPAIGNS) if c not in faulted)
    config = dataclasses.replace(config, faults=tuple(faults.values()), healthy=clean)
    return config, faults


def _diagnose_shape(config: sim.SimulationConfig, shape: str) -> tuple[dict[str, Any], Any]:
    result = sim.simulate(dataclasses.replace(config, shape=shape))
    as_of = config.start + timedelta(days=DAYS - 1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = sim.write(result, Path(tmp))
        with Workspace(":memory:") as ws:
            for kind in sim.SHAPE_KINDS[shape]:
                ingest_file(ws, kind, paths[kind], now=datetime(2030, 1, 1))
            t0 = time.perf_counter()
            report = diagnose(ws, as_of)
            seconds = time.perf_counter() - t0
            shape_doc = learnable(ws, as_of)
    return {"report": report, "seconds": seconds, "learnable": shape_doc}, result


def run_seed(seed: int) -> dict[str, Any]:
    """Diagnose the seed's account in every shape; per shape, each fault's rank and alarms."""
    config, faults = scenario(seed)
    out: dict[str, Any] = {"seed": seed, "shapes": {}}
    for shape in sim.SHAPES:
        got, result = _diagnose_shape(config, shape)
        by: dict[str | None, list[dict[str, Any]]] = {}
        for d in got["report"]["diagnoses"]:
            by.setdefault(d["campaign_id"], []).append(d)
        row: dict[str, Any] = {
            "seconds": got["seconds"],
            "detected_shape": got["learnable"]["account"]["shape"],
            "faults": {},
            "clean_alarms": [],
        }
        for name, fault in faults.items():
            types = [d["failure_type"] for d in by.get(fault.campaign, [])]
            rank = next((i + 1 for i, t in enumerate(types) if t in EXPECTED[name]), None)
            row["faults"][name] = {
                "showable": name in SHOWABLE[shape],
                "found": rank is not None and rank <= 2,
                "rank": rank,
                "top": types[:2],
            }
        faulted = {f.campaign for f in faults.values()}
        for cid in sorted(result.truth["campaigns"]):
            if cid in faulted:
                continue
            row["clean_alarms"] += [
                f"{d['failure_type']} ({d['severity']})"
                for d in by.get(cid, [])
                if d["severity"] in ("warn", "critical")
            ]
        row["clean_campaigns"] = len(result.truth["campaigns"]) - len(faulted)
        out["shapes"][shape] = row
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape: recall of each showable fault, clean alarms, the detected shape."""
    shapes: dict[str, Any] = {}
    for shape in sim.SHAPES:
        rows = [r["shapes"][shape] for r in results]
        recall = {}
        for name in SHOWABLE[shape]:
            fs = [r["faults"][name] for r in rows]
            found = sum(f["found"] for f in fs)
            recall[name] = {
                "found": found,
                "injected": len(fs),
                "rate": found / len(fs),
                "top_on_miss": dict(
                    Counter(f["top"][0] if f["top"] else "none" for f in fs if not f["found"])
                ),
            }
        shapes[shape] = {
            "recall": recall,
            "detected": dict(Counter(r["detected_shape"] for r in rows)),
            "clean_campaigns": sum(r["clean_campaigns"] for r in rows),
            "clean_alarms": sum(len(r["clean_alarms"]) for r in rows),
            "clean_alarms_by_type": dict(Counter(a for r in rows for a in r["clean_alarms"])),
            "mean_diagnose_seconds": statistics.fmean(r["seconds"] for r in rows),
        }
    return {"seeds": len(results), "shapes": shapes}


def markdown(summary: dict[str, Any], command: str, wall: float) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        BEGIN,
        "## Every capability on every data shape (issue 11)",
        "",
        f"Command: `{command}` ({summary['seeds']} seeds; {wall / 60:.1f} min). "
        f"Machine: {machine(PACKAGES)}. Date: {datetime.now(UTC).date().isoformat()}.",
        "",
        f"One 90-day account of {CAMPAIGNS} campaigns per seed, one fault of every kind on its "
        "own campaign (the windows of `checks_quality.py`; `click_id_loss` from a day in 50-70 "
        "to the end), the clean campaigns healthy; the same world exported in each shape and "
        "diagnosed as of the last day. A fault counts for a shape only where its data can show "
        "it; found = an expected failure type in its campaign's top two.",
        "",
        "### Diagnose recall per shape",
        "",
        "| fault | " + " | ".join(sim.SHAPES) + " |",
        "|---|" + "---|" * len(sim.SHAPES),
    ]
    for name in EXPECTED:
        cells = []
        for shape in sim.SHAPES:
            r = summary["shapes"][shape]["recall"].get(name)
            if r is None:
                cells.append("not in this shape")
            else:
                cells.append(f"{r['rate']:.0%} ({r['found']}/{r['injected']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **false alarms on clean campaigns** | "
        + " | ".join(
            f"{s['clean_alarms']} on {s['clean_campaigns']}" for s in summary["shapes"].values()
        )
        + " |"
    )
    lines.append(
        "| shape detected by `signalloop status` | "
        + " | ".join(
            ", ".join(f"{k} {v}" for k, v in s["detected"].items())
            for s in summary["shapes"].values()
        )
        + " |"
    )
    lines.append("")
    for shape, s in summary["shapes"].items():
        misses = {n: r["top_on_miss"] for n, r in s["recall"].items() if r["top_on_miss"]}
        if misses or s["clean_alarms_by_type"]:
            lines.append(
                f"- `{shape}`: top diagnosis when missed {misses or '-'}; clean alarms "
                f"{s['clean_alarms_by_type'] or '-'}."
            )
    lines += [
        "",
        "The allocation per shape (regret, the share of the full-data gain, guardrail "
        "breaches) is the section written by `allocate_quality.py --shapes`, which "
        "`make bench-shapes` runs too.",
    ]
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    seeds = list(range(1, args.seeds + 1))
    with ProcessPoolExecutor(args.workers) as pool:
        results = []
        for r in pool.map(run_seed, seeds):
            results.append(r)
            log(f"seed {r['seed']} done ({time.perf_counter() - t0:.0f} s)")
    summary = summarise(results)
    wall = time.perf_counter() - t0
    command = "make bench-shapes"
    block = markdown(summary, command, wall)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
