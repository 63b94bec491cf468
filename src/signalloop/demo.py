"""``signalloop demo``: simulate an account with faults and run the whole loop on it."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from signalloop import simulate as sim
from signalloop.config import Settings, load_settings, settings_from_dict
from signalloop.keys import SCOPES, create_key
from signalloop.runs import execute
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


#: The demo key's token (all scopes), readable by its owner only.
KEY_FILE = "demo-key.txt"


def demo_config(campaigns: dict[str, str]) -> dict[str, Any]:
    """The demo's ``signalloop.toml`` as a document: pushes configured with example ids (dry
    run), the simulated exports as the inbox, the report folder, and a daily run at 06:00.

    ``campaigns`` maps campaign id -> platform; each Google campaign gets an example Google id
    (``90000000NN``). Nothing is sent: ``live`` stays false, so a run writes the request
    bodies under ``report/push``.
    """
    google = {c: f"90000000{c[1:].zfill(2)}" for c, p in campaigns.items() if p == "google"}
    return {
        "run": {"inbox": "data", "out": "report"},
        "serve": {"run_at": "06:00"},
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
        },
    }


def demo_settings(campaigns: dict[str, str]) -> Settings:
    """:func:`demo_config` as :class:`~signalloop.config.Settings`."""
    return settings_from_dict(demo_config(campaigns), source="<demo>")


def to_toml(doc: dict[str, Any]) -> str:
    """A small TOML writer for the demo's config (strings, numbers, booleans, nested tables).

    >>> print(to_toml({"run": {"inbox": "data"}, "push": {"live": False, "meta": {"id": "1"}}}))
    [run]
    inbox = "data"
    <BLANKLINE>
    [push]
    live = false
    <BLANKLINE>
    [push.meta]
    id = "1"
    <BLANKLINE>
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v))

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict))
        lines.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)

    for name, d in doc.items():
        table(name, d)
    return "\n".join(lines)


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
    for folder in (
        data_dir,
        out / "signalloop.models",
        out / "signalloop.runs",
        out / "signalloop.touches",
        out / "report",
    ):
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
    config_file = out / "signalloop.toml"
    config_file.write_text(
        "# signalloop demo: written by `signalloop demo` (paths are relative to this file)\n"
        + to_toml(demo_config(platforms)),
        encoding="utf-8",
    )
    with Workspace(db) as ws:
        doc = execute(
            ws,
            trigger="demo",
            actor="signalloop demo",
            settings=load_settings(config_file),
            out_dir=out / "report",
            progress=progress,
            push_now=send_clock,
        )
        summary = workspace_summary(ws)
        key = create_key(ws, "demo", SCOPES)
    key_file = out / KEY_FILE
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{key.token}\n")
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
        serve={
            "command": f"signalloop serve --db {db}",
            "url": "http://127.0.0.1:8000/",
            "key_file": str(key_file),
            "key_id": key.key_id,
            "config": str(config_file),
        },
    )
    return summary
