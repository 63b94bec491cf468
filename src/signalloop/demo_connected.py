"""``signalloop demo --connected``: the connected loop end to end, without credentials.

The demo account (:mod:`signalloop.demo`: 90 days, 6 campaigns, the same faults), dated so
its last day is yesterday, is split as a connected account would be:

* what the platforms hold (the Meta and Google campaigns' daily delivery per ad and their
  edit history, as the platforms serve it: clean, no export glitches) goes to ``platform/``
  and is served by :class:`~signalloop.push.sandbox.Sandbox` on ``127.0.0.1`` as a Meta ad
  account and a Google Ads customer, each campaign with the daily budget its edit history
  last set (else a quarter above its mean daily spend);
* what no connector reaches (the clicks, conversions and CRM exports, and the LinkedIn
  campaign's spend and edits) goes to the inbox ``data/`` as exports, glitches included.

Then, with ``signalloop.toml`` holding ``[connect]`` (the sandbox's base URL) and ``[run]``
``pull = true``, ``apply = "dry-run"``:

1. the history is backfilled, ``signalloop pull meta|google --since <first day>``;
2. ``signalloop run``: pulls the lookback again (nothing new), ingests the inbox, checks,
   decides, and applies last as a dry run;
3. ``signalloop apply`` (a dry run): each budget read from the platform, checked against the
   guardrails, and what would change.

The sandbox's own tokens are put in the environment for the demo only (and every other
platform credential taken out of it meanwhile, so nothing real can reach the sandbox or leave
the machine); they are never written to a file.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from signalloop import simulate as sim
from signalloop.config import load_settings
from signalloop.demo import DEMO_CAMPAIGNS, DEMO_DAYS, DEMO_FAULTS, to_toml
from signalloop.push.settings import _ENV, GOOGLE_PLATFORMS, META_PLATFORMS

Progress = Callable[[str, float | None], None]

#: The ids the sandbox serves (as ``signalloop connect sandbox`` does).
META_ACCOUNT = "1000000001"
GOOGLE_CUSTOMER = "1234567890"
#: The sandbox's own tokens (what it accepts; not credentials of any account).
SANDBOX_TOKENS = {
    "SIGNALLOOP_META_ACCESS_TOKEN": "sandbox-meta-token",
    "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN": "sandbox-developer-token",
    "SIGNALLOOP_GOOGLE_ACCESS_TOKEN": "sandbox-access-token",
}


def connected_platform(platform: Any) -> str | None:
    """``meta`` or ``google`` for a spend row's platform, ``None`` for one no connector reads."""
    p = str(platform or "").strip().lower()
    return "meta" if p in META_PLATFORMS else "google" if p in GOOGLE_PLATFORMS else None


def last_budgets(
    changes: Iterable[Mapping[str, Any]], spend: Iterable[Mapping[str, Any]]
) -> dict[str, float]:
    """Each connected campaign's daily budget as its edit history last set it (campaign budget
    edits, in time order), for campaigns of the ``spend`` rows on Meta or Google.

    >>> spend = [{"platform": "meta", "campaign_id": "c1"}]
    >>> last_budgets([
    ...     {"ts": "2026-01-02T06:00:00Z", "level": "campaign", "entity_id": "c1",
    ...      "field": "budget", "new_value": "120.00"},
    ...     {"ts": "2026-01-01T06:00:00Z", "level": "campaign", "entity_id": "c1",
    ...      "field": "budget", "new_value": "100.00"}], spend)
    {'c1': 120.0}
    """
    connected = {
        str(r["campaign_id"]) for r in spend if connected_platform(r.get("platform")) is not None
    }
    edits = [
        r
        for r in changes
        if r.get("field") == "budget"
        and r.get("level") == "campaign"
        and str(r.get("entity_id")) in connected
    ]
    out: dict[str, float] = {}
    for r in sorted(edits, key=lambda r: str(r.get("ts"))):
        try:
            value = Decimal(str(r.get("new_value")))
        except InvalidOperation:
            continue
        if value > 0:
            out[str(r["entity_id"])] = float(value)
    return out


def budgets_from_history(
    sandbox: Any,
    spend: Sequence[Mapping[str, Any]],
    changes: Sequence[Mapping[str, Any]] | None,
    *,
    meta_account: str = META_ACCOUNT,
    google_customer: str = GOOGLE_CUSTOMER,
) -> dict[str, float]:
    """Give every served campaign a daily budget: the last one its edit history sets (so the
    workspace that pulls that history knows the budget the platform holds), else a quarter
    above its mean daily spend (:meth:`Sandbox.give_budgets`). Returns campaign -> budget."""
    budgets: dict[str, float] = sandbox.give_budgets(
        spend, meta_account=meta_account, google_customer=google_customer
    )
    platform = {
        str(r["campaign_id"]): connected_platform(r.get("platform"))
        for r in spend
        if r.get("campaign_id")
    }
    for cid, value in last_budgets(changes or [], spend).items():
        if platform.get(cid) == "meta":
            sandbox.set_meta_budget(cid, round(value * 100))
        else:
            sandbox.set_google_budget(google_customer, cid, round(value * 100) * 10_000)
        budgets[cid] = value
    return budgets


@contextmanager
def sandbox_credentials() -> Iterator[None]:
    """The sandbox's tokens in the environment, every other platform credential out of it;
    the environment as it was afterwards."""
    names = set(_ENV.values()) | set(SANDBOX_TOKENS)
    saved = {k: os.environ.get(k) for k in names}
    try:
        for k in names:
            os.environ.pop(k, None)
        os.environ.update(SANDBOX_TOKENS)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connected_config(base_url: str) -> dict[str, Any]:
    """The connected demo's ``signalloop.toml`` as a document."""
    account = {"base_url": base_url, "time_zone": "UTC", "currency": "USD"}
    return {
        "run": {"inbox": "data", "out": "report", "pull": True, "apply": "dry-run"},
        "connect": {
            "lookback_days": 28,
            "meta": {"ad_account_id": f"act_{META_ACCOUNT}", **account},
            "google": {"customer_id": GOOGLE_CUSTOMER, **account},
        },
    }


def _split(result: sim.Simulation) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """The spend and changes tables: (on a connected platform, the rest)."""
    spend = result.tables["spend"]
    plat = pc.utf8_lower(pc.utf8_trim_whitespace(spend["platform"]))
    on = pc.is_in(plat, pa.array(sorted({*META_PLATFORMS, *GOOGLE_PLATFORMS})))
    served = spend.filter(on)
    ids: set[str] = set()
    for col in ("campaign_id", "adset_id", "ad_id", "creative_id"):
        if col in served.column_names:
            ids |= {str(x) for x in served[col].to_pylist() if x is not None}
    changes = result.tables["changes"]
    mine = pc.is_in(changes["entity_id"], pa.array(sorted(ids), pa.string()))
    return (
        {"spend": served, "changes": changes.filter(mine)},
        {"spend": spend.filter(pc.invert(on)), "changes": changes.filter(pc.invert(mine))},
    )


def _write(result: sim.Simulation, tables: dict[str, pa.Table], folder: Path) -> dict[str, Path]:
    """Canonical CSVs of ``tables`` (no glitches), as the simulator writes them."""
    paths = sim.write(replace(result, tables=tables, glitches=[]), folder)
    paths.pop("truth", None)
    (folder / "truth.json").unlink(missing_ok=True)
    return paths


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def run_connected_demo(
    out_dir: str | Path,
    *,
    seed: int = 7,
    days: int = DEMO_DAYS,
    campaigns: int = DEMO_CAMPAIGNS,
    faults: Iterable[str] = DEMO_FAULTS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Simulate the demo account, serve its connected part on a local sandbox, and run the
    connected loop on it: backfill pulls, ``signalloop run`` (pull, inbox, ..., apply as a dry
    run) and ``signalloop apply`` (a dry run).

    Returns ``out_dir``, ``db``, ``config``, ``data_dir``, ``platform_dir``, ``since``,
    ``until``, ``faults``, ``served`` (rows and edits per platform, each campaign's budget),
    ``backfill`` (the two pulls), ``run`` (the run's document), ``apply`` (the dry run's
    document), ``port``, ``next`` (the commands to go on by hand) and ``seconds``.
    """
    from signalloop.connect.apply import apply
    from signalloop.connect.pull import pull
    from signalloop.push.sandbox import Sandbox
    from signalloop.runs import execute
    from signalloop.store import Workspace

    started = time.perf_counter()
    report = progress or (lambda label, frac: None)
    out = Path(out_dir)
    data_dir, platform_dir = out / "data", out / "platform"
    db = out / "signalloop.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    for folder in (
        data_dir,
        platform_dir,
        out / "signalloop.models",
        out / "signalloop.runs",
        out / "signalloop.touches",
    ):
        if folder.exists():
            shutil.rmtree(folder)
    if (out / "report").exists():
        shutil.rmtree(out / "report")

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    start = yesterday - timedelta(days=days - 1)
    ids = sim.campaign_ids(campaigns)
    parsed = tuple(sim.parse_fault(f, days=days, campaign_ids=ids) for f in faults)
    config = sim.SimulationConfig(
        days=days, campaigns=campaigns, seed=seed, start=start, faults=parsed
    )
    report("simulating the account", None)
    result = sim.simulate(config)
    served, exported = _split(result)
    with tempfile.TemporaryDirectory(prefix="signalloop-demo-") as tmp:
        written = sim.write(result, Path(tmp))  # the exports, glitches included
        data_dir.mkdir(parents=True)
        for kind in ("touchpoints", "conversions", "crm"):
            if kind in written:
                shutil.move(str(written[kind]), data_dir / f"{kind}.csv")
    platform_paths = _write(result, served, platform_dir)
    others = {k: t for k, t in exported.items() if t.num_rows}
    if others:
        with tempfile.TemporaryDirectory(prefix="signalloop-demo-") as tmp:
            for kind, path in _write(result, others, Path(tmp)).items():
                shutil.move(str(path), data_dir / f"{kind}-not-connected.csv")
    report("simulating the account", 1.0)

    spend_rows = _rows(platform_paths["spend"])
    change_rows = _rows(platform_paths["changes"]) if "changes" in platform_paths else []
    sb = Sandbox(async_polls=1)
    served_rows = sb.load_spend(
        spend_rows, meta_account=META_ACCOUNT, google_customer=GOOGLE_CUSTOMER
    )
    edits = sb.load_changes(
        change_rows, spend_rows, meta_account=META_ACCOUNT, google_customer=GOOGLE_CUSTOMER
    )
    budgets = budgets_from_history(sb, spend_rows, change_rows)
    sb.start()
    try:
        port = int(sb.base_url.rsplit(":", 1)[1])
        config_file = out / "signalloop.toml"
        config_file.write_text(
            "# signalloop connected demo: written by `signalloop demo --connected` (paths are "
            "relative to this file;\n# the sandbox's tokens come from `signalloop connect "
            "sandbox`, never from this file)\n" + to_toml(connected_config(sb.base_url)),
            encoding="utf-8",
        )
        with sandbox_credentials(), Workspace(db) as ws:
            settings = load_settings(config_file)
            backfill = []
            for platform in ("meta", "google"):
                report(f"backfilling {platform} from {start}", None)
                res = pull(
                    ws,
                    platform,
                    since=start,
                    until=yesterday,
                    settings=settings,
                    progress=progress,
                    poll_wait=0.1,
                )
                backfill.append(res.to_dict())
            doc = execute(
                ws,
                trigger="demo",
                actor="signalloop demo --connected",
                settings=settings,
                out_dir=out / "report",
                progress=progress,
            )
            dry = apply(ws, settings=settings, live=False, progress=progress).to_dict()
    finally:
        sb.stop()
    rel = {
        "spend": platform_dir / "spend.csv",
        "changes": platform_dir / "changes.csv",
    }
    sandbox_cmd = f"signalloop connect sandbox --spend {rel['spend']} --port {port}"
    if "changes" in platform_paths:
        sandbox_cmd = (
            f"signalloop connect sandbox --spend {rel['spend']} --changes {rel['changes']} "
            f"--port {port}"
        )
    return {
        "out_dir": str(out),
        "db": str(db),
        "config": str(config_file),
        "data_dir": str(data_dir),
        "platform_dir": str(platform_dir),
        "since": start.isoformat(),
        "until": yesterday.isoformat(),
        "faults": list(faults),
        "served": {
            "rows": served_rows,
            "edits": edits,
            "budgets": {k: round(v, 2) for k, v in sorted(budgets.items())},
            "not_connected": {k: t.num_rows for k, t in exported.items()},
        },
        "backfill": backfill,
        "run": doc,
        "apply": dry,
        "port": port,
        "next": [
            f"{sandbox_cmd}   # serves the account again; prints the exports to set",
            f"signalloop run --config {config_file} --db {db}",
            f"signalloop apply --config {config_file} --db {db}",
        ],
        "seconds": round(time.perf_counter() - started, 2),
    }
