"""The daily run's cost, step by step: a first run on a new workspace, then the next day's.

The demo account (90 days, 6 campaigns, the demo's faults, seed 7) is simulated into an inbox.
The **first run** (as of day 89) ingests the inbox into a fresh workspace, fits and backtests
both models and backfills the signal-environment history; the **next day's run** (as of day
90) finds nothing new in the inbox, keeps the models (they are one day old) and records one
history point. Each step's seconds come from the run's own ``timings``.

Run: ``.venv/bin/python benchmarks/run_loop.py`` (writes BENCHMARKS.md; ``make bench-run``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _report import log, machine, write_section

from signalloop import simulate as sim
from signalloop.demo import DEMO_CAMPAIGNS, DEMO_DAYS, DEMO_FAULTS
from signalloop.run import run
from signalloop.store import Workspace

BEGIN, END = "<!-- run-loop:begin -->", "<!-- run-loop:end -->"
PACKAGES = ("duckdb", "ibis-framework", "lightgbm", "plotly")
STEPS = ("ingest", "checks", "state", "models", "allocate", "diagnose_lens", "history")


def measure(seed: int) -> dict[str, Any]:
    ids = sim.campaign_ids(DEMO_CAMPAIGNS)
    faults = tuple(sim.parse_fault(f, days=DEMO_DAYS, campaign_ids=ids) for f in DEMO_FAULTS)
    config = sim.SimulationConfig(
        days=DEMO_DAYS, campaigns=DEMO_CAMPAIGNS, seed=seed, faults=faults
    )
    last = date(2026, 1, 1) + timedelta(days=DEMO_DAYS - 1)
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        sim.write(sim.simulate(config), inbox)
        runs = []
        with Workspace(Path(tmp) / "ws.duckdb") as ws:
            for label, day in (("first run", last - timedelta(days=1)), ("next day", last)):
                log(f"{label}, as of {day}")
                t0 = time.perf_counter()
                doc = run(ws, as_of=day, inbox=inbox, out_dir=Path(tmp) / label)
                total = time.perf_counter() - t0
                html = Path(doc["report"]["html"]).stat().st_size
                runs.append(
                    {
                        "label": label,
                        "as_of": day.isoformat(),
                        "seconds": total,
                        "timings": doc["timings"],
                        "rows": sum(f["rows_loaded"] for f in doc["inbox"]["files"]),
                        "models": [f"{m['outcome']} {m['status']}" for m in doc["models"]],
                        "history": len(doc["history"]),
                        "html_mb": html / 1e6,
                    }
                )
    return {"runs": runs}


def render(res: dict[str, Any], seed: int) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    head = "| step | " + " | ".join(r["label"] for r in res["runs"]) + " |"
    lines = [
        BEGIN,
        "## The daily run (`signalloop run`), step by step",
        "",
        f"Command: `make bench-run` (benchmarks/run_loop.py --seed {seed}). Measured {stamp} "
        f"on {machine(PACKAGES)}.",
        "",
        f"The demo account ({DEMO_DAYS} days, {DEMO_CAMPAIGNS} campaigns, the demo's faults) "
        "as the inbox. The first run ingests it into a fresh workspace, fits and backtests "
        "the conversion and SQL models and backfills the weekly signal history; the next "
        "day's run finds nothing new, keeps both models and records one history point. "
        "No anchor: this is where the time of a run goes.",
        "",
        head,
        "|---|" + "---:|" * len(res["runs"]),
    ]
    for step in STEPS:
        cells = [f"{r['timings'].get(step, 0.0):.1f} s" for r in res["runs"]]
        lines.append(f"| {step.replace('_', ' + ')} | " + " | ".join(cells) + " |")
    lines += [
        "| **whole run** (report included) | "
        + " | ".join(f"**{r['seconds']:.1f} s**" for r in res["runs"])
        + " |",
        "| rows ingested | " + " | ".join(f"{r['rows']:,}" for r in res["runs"]) + " |",
        "| models | " + " | ".join(", ".join(r["models"]) for r in res["runs"]) + " |",
        "| history points | " + " | ".join(str(r["history"]) for r in res["runs"]) + " |",
        "| report.html | " + " | ".join(f"{r['html_mb']:.1f} MB" for r in res["runs"]) + " |",
        "",
        "The HTML's size is mostly plotly.js (about 4.6 MB), embedded so the file opens offline.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    res = measure(args.seed)
    block = render(res, args.seed)
    write_section(block, BEGIN, END)
    print(block)


if __name__ == "__main__":
    main()
