"""``signalloop demo``: simulate an account with faults, ingest it fresh, summarise it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ibis

from signalloop import simulate as sim
from signalloop.allocate.policy import allocate
from signalloop.checks import run_checks
from signalloop.contract import KINDS
from signalloop.fatigue import fatigue
from signalloop.ingest import ingest_file
from signalloop.nowcast import nowcast
from signalloop.phase import phase
from signalloop.store import Workspace
from signalloop.summary import workspace_summary

#: The demo account: 90 days, 6 campaigns, a fault on each of c01-c05 (c06 stays healthy)
#: and bad rows in every export.
DEMO_DAYS = 90
DEMO_CAMPAIGNS = 6
DEMO_FAULTS = (
    "stage_overwrite@c01:40-80",  # CRM stages moved backwards
    "tracking_outage@c02:60-66",  # pixel and server conversions lost for a week
    "utm_mess@c03:30-89",  # utm_source / utm_medium spelled several ways
    "duplicate_events@c04:20-40",  # a pixel firing twice
    "override_storm@c05:40-55",  # people's edits resetting learning
    "export_glitches@*:0-89",  # bad rows in every export: ingest quarantines them
)


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 7,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict[str, Any]:
    """Simulate the demo account into ``out_dir/data`` and ingest it into a fresh workspace.

    Returns :func:`~signalloop.summary.workspace_summary` plus ``data_dir``, ``faults``,
    ``ingested`` (one entry per file), ``checks`` (the check report: gates, findings,
    exclusions), ``state`` (``nowcast``, ``phase`` and ``fatigue`` reports), ``allocation``
    (:func:`~signalloop.allocate.policy.allocate` of the last week's mean daily spend) and
    ``seconds``.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    data_dir = out / "data"
    db = out / "signalloop.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    report = progress or (lambda label, frac: None)
    ids = sim.campaign_ids(DEMO_CAMPAIGNS)
    faults = tuple(sim.parse_fault(f, days=DEMO_DAYS, campaign_ids=ids) for f in DEMO_FAULTS)
    config = sim.SimulationConfig(
        days=DEMO_DAYS, campaigns=DEMO_CAMPAIGNS, seed=seed, faults=faults
    )
    report("simulating the account", None)
    result = sim.simulate(config)
    paths = sim.write(result, data_dir)
    report("simulating the account", 1.0)
    ingested = []
    with Workspace(db) as ws:
        for kind in KINDS:
            res = ingest_file(ws, kind, paths[kind], progress=progress)
            ingested.append(res.to_dict())
        summary = workspace_summary(ws)
        report("checking the signals", None)
        checks = run_checks(ws).to_dict()
        report("checking the signals", 1.0)
        report("estimating campaign state", None)
        state = {
            "nowcast": nowcast(ws).to_dict(),
            "phase": phase(ws).to_dict(),
            "fatigue": fatigue(ws).to_dict(),
        }
        report("estimating campaign state", 1.0)
        report("allocating tomorrow's budget", None)
        spend = ws.table("spend")
        recent = spend.filter(spend.date > spend.date.max() - ibis.interval(days=7))
        budget = round(float(recent.spend.sum().execute()) / 7.0, 2)
        allocation = allocate(ws, budget)
        report("allocating tomorrow's budget", 1.0)
    summary.update(
        checks=checks,
        state=state,
        allocation=allocation,
        data_dir=str(data_dir),
        faults=list(DEMO_FAULTS),
        ingested=ingested,
        seconds=round(time.perf_counter() - started, 2),
    )
    return summary
