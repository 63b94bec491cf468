"""``signalloop demo``: simulate an account with faults and run the whole loop on it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from signalloop import simulate as sim
from signalloop.config import Settings, settings_from_dict
from signalloop.run import run
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


def demo_settings(campaigns: dict[str, str]) -> Settings:
    """The demo's ``signalloop.toml``: pushes configured with example ids, dry run.

    ``campaigns`` maps campaign id -> platform; each Google campaign gets an example Google id
    (``90000000NN``). Nothing is sent: ``live`` stays false, so the run writes the request
    bodies under ``report/push``.
    """
    google = {c: f"90000000{c[1:].zfill(2)}" for c, p in campaigns.items() if p == "google"}
    return settings_from_dict(
        {
            "push": {
                "live": False,
                "crm_name": "HubSpot",
                "meta": {"pixel_id": "1234567890"},
                "google": {
                    "customer_id": "123-456-7890",
                    "time_zone": "America/New_York",
                    "currency": "USD",
                    "conversion_actions": {"sql": "111", "won": "222"},
                    "campaigns": google,
                },
            }
        },
        source="<demo>",
    )


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 7,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict[str, Any]:
    """Simulate the demo account into ``out_dir/data`` and run the whole loop on it.

    The simulated exports are the inbox of :func:`signalloop.run.run`, which ingests them into
    a fresh workspace ``out_dir/signalloop.duckdb``, checks, estimates, fits the models,
    allocates, diagnoses, reads the lens and writes ``out_dir/report/report.html`` and
    ``report.json``.

    Returns :func:`~signalloop.summary.workspace_summary` plus ``data_dir``, ``faults``,
    ``ingested`` (one entry per file), ``checks``, ``state`` (``nowcast``, ``phase`` and
    ``fatigue`` reports), ``allocation``, ``diagnosis``, ``lens``, ``models``, ``report``
    (the two paths) and ``seconds``.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    data_dir = out / "data"
    db = out / "signalloop.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    for folder in (data_dir, out / "signalloop.models", out / "report"):
        if folder.exists():
            shutil.rmtree(folder)
    report = progress or (lambda label, frac: None)
    ids = sim.campaign_ids(DEMO_CAMPAIGNS)
    faults = tuple(sim.parse_fault(f, days=DEMO_DAYS, campaign_ids=ids) for f in DEMO_FAULTS)
    config = sim.SimulationConfig(
        days=DEMO_DAYS, campaigns=DEMO_CAMPAIGNS, seed=seed, faults=faults
    )
    report("simulating the account", None)
    simulation = sim.simulate(config)
    sim.write(simulation, data_dir)
    report("simulating the account", 1.0)
    platforms = {c: str(t["platform"]) for c, t in simulation.truth["campaigns"].items()}
    # the replay is sent the morning after its last day, as a daily run would be
    send_clock = datetime.combine(config.start + timedelta(days=DEMO_DAYS), dtime(6), UTC)
    with Workspace(db) as ws:
        doc = run(
            ws,
            inbox=data_dir,
            out_dir=out / "report",
            progress=progress,
            settings=demo_settings(platforms),
            push_now=send_clock,
        )
        summary = workspace_summary(ws)
    inbox = doc["inbox"] or {}
    summary.update(
        checks=doc["checks"],
        state=doc["state"],
        allocation=doc["allocation"],
        diagnosis=doc["diagnosis"],
        lens=doc["lens"],
        models=doc["models"],
        report=doc["report"],
        push=doc["push"],
        timings=doc["timings"],
        data_dir=str(data_dir),
        faults=list(DEMO_FAULTS),
        ingested=inbox.get("files", []),
        not_ingested=inbox.get("not_taken", []) + inbox.get("errors", []),
        seconds=round(time.perf_counter() - started, 2),
    )
    return summary
