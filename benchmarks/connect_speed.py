"""Connected accounts: pull speed against the local stand-ins, and budgets applied in the loop.

**Pull speed.** A synthetic 90-day account of 200 campaigns x 5 ad sets (ad groups) x 2 ads
(2,000 ads, every ad delivering every day) with an edit history (about one edit per campaign
every three days: budgets, statuses, bids, targeting, creatives, by people, rules and the
platform), once as a Meta ad account and once as a Google Ads customer, is served by
:class:`signalloop.push.sandbox.Sandbox` in its own process (on the same 2 cores: the platform
is not on our CPU in real life, so this is the harder case). ``signalloop.connect.pull.pull``
(what ``signalloop pull meta|google`` runs) reads it into a workspace file: Meta's Insights at
``level=ad`` (report jobs for the 31-day chunks, pages of 500), Google's GAQL ``ad_group`` report
through ``searchStream``, then the edit history (Meta's activity log over the range; Google's
``change_event`` keeps 30 days), each landed through ingest with restate. Three pulls per
platform: the first, the same range again (nothing must be added), and the default 28-day
lookback after the platform restated the last 3 days (a share of their rows changed).

**Budgets applied in the time loop.** :func:`signalloop.allocate.loop.run_policy` runs policies
day by day against the simulator (6 campaigns, 7 warm-up days at the account's plan, then 56
policy days). The guarded policy (``guarded_bayes``) runs *through the apply path*: each
morning the simulator's delivery of the day before and its own edits are served by an
in-process sandbox (Meta campaign budgets, Google campaign budgets), the workspace pulls both
platforms (spend and edit history, ``pull``), the policy's budgets become a run document (the
loop's gate and learning states as the run's checks and phase) and
``signalloop.connect.apply.apply(..., live=True)`` reads every budget from the sandbox, checks
it against the guardrails and what the workspace knows, and changes it there; the budgets the
sandbox then holds are what the simulated world delivers that day. The learning resets are the
simulator's (a budget change of more than 20% resets every ad set of the campaign). Against it:
the same policy with its budgets applied straight (the loop as ``allocate_quality.py`` runs it)
and a human-style weekly re-budget (every 7th day, the campaigns of the best half by last week's
observed CPA +30%, the rest -30%, as edited in Ads Manager: not through apply, which would
refuse every line).

Run: ``make bench-connect`` or ``.venv/bin/python benchmarks/connect_speed.py`` (writes
BENCHMARKS.md unless ``--no-write``; ``--seeds``, ``--skip-loop``, ``--skip-pull``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from _report import log, machine, write_section

BEGIN, END = "<!-- connect-speed:begin -->", "<!-- connect-speed:end -->"
PACKAGES = ("duckdb", "httpx", "fastapi", "uvicorn")
META_ACCOUNT = "1000000001"
CUSTOMER = "1234567890"
TOKENS = {
    "SIGNALLOOP_META_ACCESS_TOKEN": "sandbox-meta-token",
    "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN": "sandbox-developer-token",
    "SIGNALLOOP_GOOGLE_ACCESS_TOKEN": "sandbox-access-token",
}
TARGET_SECONDS = 30.0
DAYS, CAMPAIGNS, ADSETS, ADS = 90, 200, 5, 2
RESTATED_DAYS, RESTATED_SHARE = 3, 0.3
#: edits per campaign per day (about one every three days)
EDIT_RATE = 1 / 3
LOOP_CAMPAIGNS, LOOP_WARMUP, LOOP_DAYS = 6, 7, 56
HUMAN_STEP, HUMAN_EVERY = 0.30, 7


# ---- the pulled account ------------------------------------------------------------------


def resize(campaigns: int, days: int) -> None:
    """A smaller account for a quick try (``--campaigns``, ``--days``)."""
    global CAMPAIGNS, DAYS
    CAMPAIGNS, DAYS = campaigns, days


def ids(platform: str) -> tuple[list[str], list[str], list[str]]:
    """Campaign, ad set and ad ids (numeric strings, as the platforms' are), flattened so
    ad ``k`` belongs to ad set ``k // ADS`` and ad set ``j`` to campaign ``j // ADSETS``."""
    base = 120210000000 if platform == "meta" else 21000000000
    camps = [str(base + c) for c in range(CAMPAIGNS)]
    sets = [str(base * 10 + c * 100 + s) for c in range(CAMPAIGNS) for s in range(ADSETS)]
    ads = [f"{s}{a:02d}" for s in sets for a in range(ADS)]
    return camps, sets, ads


def delivery(platform: str, last: date, seed: int) -> list[dict[str, Any]]:
    """Canonical ``spend`` rows of the account: every ad, every day of the 90 up to ``last``."""
    rng = np.random.default_rng([seed, 0 if platform == "meta" else 1])
    camps, sets, ads = ids(platform)
    n_ads = len(ads)
    scale = rng.lognormal(3.0, 0.8, n_ads)  # an ad's typical daily spend
    ctr, cpc = rng.uniform(0.005, 0.03, n_ads), rng.uniform(0.4, 2.5, n_ads)
    cvr = rng.uniform(0.01, 0.08, n_ads)
    rows: list[dict[str, Any]] = []
    first = last - timedelta(days=DAYS - 1)
    for d in range(DAYS):
        day = (first + timedelta(days=d)).isoformat()
        spend = np.round(scale * rng.lognormal(0.0, 0.3, n_ads), 2)
        clicks = np.maximum(1, np.round(spend / cpc)).astype(int)
        impressions = np.maximum(clicks, np.round(clicks / ctr)).astype(int)
        conv = rng.binomial(clicks, cvr)
        for k in range(n_ads):
            s = k // ADS
            c = s // ADSETS
            rows.append(
                {
                    "date": day,
                    "platform": platform,
                    "campaign_id": camps[c],
                    "campaign_name": f"campaign {c}",
                    "adset_id": sets[s],
                    "adset_name": f"ad set {s}",
                    "ad_id": ads[k],
                    "ad_name": f"ad {k}",
                    "impressions": int(impressions[k]),
                    "clicks": int(clicks[k]),
                    "spend": float(spend[k]),
                    "platform_conversions": int(conv[k]),
                    "platform_conversion_value": float(conv[k]) * 40.0,
                }
            )
    return rows


def edit_log(platform: str, last: date, seed: int) -> list[dict[str, Any]]:
    """Canonical ``changes`` rows over the 90 days: budgets, statuses, bids, targeting and
    creatives, by a person (50%), an automated rule (35%) or the platform (15%)."""
    rng = np.random.default_rng([seed, 2 if platform == "meta" else 3])
    camps, sets, ads = ids(platform)
    first = datetime.combine(last - timedelta(days=DAYS - 1), datetime.min.time(), UTC)
    n = int(rng.poisson(EDIT_RATE * DAYS * CAMPAIGNS))
    kinds = ("budget", "status", "bid", "targeting", "creative")
    budgets = {c: round(float(rng.uniform(50, 500)), 2) for c in camps}
    out = []
    for t in sorted(rng.uniform(0, DAYS * 86400 - 1, n)):
        ts = (first + timedelta(seconds=float(t))).isoformat()
        actor = str(rng.choice(["human", "automation", "platform"], p=[0.5, 0.35, 0.15]))
        kind = kinds[int(rng.integers(len(kinds)))]
        c = int(rng.integers(CAMPAIGNS))
        s = c * ADSETS + int(rng.integers(ADSETS))
        a = s * ADS + int(rng.integers(ADS))
        if kind == "budget":
            old = budgets[camps[c]]
            new = budgets[camps[c]] = round(old * float(rng.uniform(0.7, 1.3)), 2)
            row = ("campaign", camps[c], "budget", f"{old:.2f}", f"{new:.2f}")
        elif kind == "status":
            row = ("ad", ads[a], "status", "ACTIVE", "PAUSED")
        elif kind == "bid":
            row = ("adset", sets[s], "bid", "1.20", f"{float(rng.uniform(0.8, 2.0)):.2f}")
        elif kind == "targeting":
            row = ("adset", sets[s], "targeting", "age 25-54", "age 18-65")
        else:
            row = ("ad", ads[a], "creative", f"creative {a}", f"creative {a}b")
        level, entity, fld, old_v, new_v = row
        out.append(
            {
                "ts": ts,
                "level": level,
                "entity_id": entity,
                "field": fld,
                "old_value": old_v,
                "new_value": new_v,
                "actor": actor,
            }
        )
    return out


def restate(rows: list[dict[str, Any]], last: date, seed: int) -> list[dict[str, Any]]:
    """The rows of the last :data:`RESTATED_DAYS` days that the platform restates: a share of
    them with spend and conversions moved (late conversions, invalid-click credits)."""
    rng = np.random.default_rng([seed, 4])
    since = (last - timedelta(days=RESTATED_DAYS - 1)).isoformat()
    out = []
    for r in rows:
        if r["date"] >= since and rng.random() < RESTATED_SHARE:
            extra = int(rng.integers(1, 3))
            out.append(
                {
                    **r,
                    "spend": round(r["spend"] * float(rng.uniform(0.9, 0.99)), 2),
                    "platform_conversions": r["platform_conversions"] + extra,
                    "platform_conversion_value": r["platform_conversion_value"] + 40.0 * extra,
                }
            )
    return out


def serve(
    conn: Connection, last_iso: str, seed: int, size: tuple[int, int]
) -> None:  # pragma: no cover - child
    """The child process: a sandbox serving both accounts until told to stop."""
    from signalloop.push.sandbox import Sandbox

    resize(*size)

    last = date.fromisoformat(last_iso)
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=6)
    sb = Sandbox(now=now)
    spend = {p: delivery(p, last, seed) for p in ("meta", "google")}
    served: dict[str, Any] = {}
    for p, rows in spend.items():
        served[p] = sb.load_spend(rows, meta_account=META_ACCOUNT, google_customer=CUSTOMER)[p]
        edits = edit_log(p, last, seed)
        got = sb.load_changes(edits, rows, meta_account=META_ACCOUNT, google_customer=CUSTOMER)
        served[f"{p}_edits"] = got[p]
    sb.start()
    conn.send({"base_url": sb.base_url, "served": served})
    while True:
        msg = conn.recv()
        if msg == "restate":
            n = {}
            for p, rows in spend.items():
                n[p] = sb.load_spend(
                    restate(rows, last, seed), meta_account=META_ACCOUNT, google_customer=CUSTOMER
                )[p]
            conn.send(n)
        else:
            break
    sb.stop()
    conn.send("stopped")


@contextmanager
def sandbox_process(last: date, seed: int) -> Iterator[tuple[Connection, dict[str, Any]]]:
    """The sandbox in its own (spawned) process; yields the pipe and what it serves."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=serve, args=(child, last.isoformat(), seed, (CAMPAIGNS, DAYS)), daemon=True
    )
    proc.start()
    try:
        info = parent.recv()
        yield parent, info
    finally:
        try:
            parent.send("stop")
            parent.recv()
        except (OSError, EOFError):
            pass
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


class Landing:
    """Seconds spent landing rows through ingest (patched into :mod:`signalloop.connect`)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        import signalloop.connect.landing as landing

        saved = landing.ingest_file

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return saved(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0

        landing.ingest_file = timed
        try:
            yield
        finally:
            landing.ingest_file = saved


def one_pull(ws: Any, platform: str, settings: Any, **kw: Any) -> dict[str, Any]:
    """A pull with its wall time and the seconds its landing took."""
    from signalloop.connect.pull import pull
    from signalloop.push.client import Client

    timer = Landing()
    with timer.timing(), Client() as client:
        t0 = time.perf_counter()
        res = pull(ws, platform, settings=settings, client=client, poll_wait=0, **kw)
        wall = time.perf_counter() - t0
    doc = res.to_dict()
    ch = doc.get("changes") or {}
    return {
        "wall": wall,
        "landing": timer.seconds,
        "requests": doc["requests"] + int(ch.get("requests") or 0),
        "report_jobs": doc["report_jobs"],
        "rows_pulled": doc["rows_pulled"],
        "rows_loaded": doc["rows_loaded"],
        "rows_restated": doc["rows_restated"],
        "rows_unchanged": doc["rows_unchanged"],
        "rows_quarantined": doc["rows_quarantined"],
        "restated_days": len(doc["restated_days"]),
        "events_read": int(ch.get("events_read") or 0),
        "edits_loaded": int(ch.get("rows_loaded") or 0),
        "edits_restated": int(ch.get("rows_restated") or 0),
        "edits_unchanged": int(ch.get("rows_unchanged") or 0),
        "status": doc["status"],
        "changes_status": ch.get("status"),
        "failed": doc["failed"],
    }


def pulls(folder: Path, seed: int) -> dict[str, Any]:
    """The three pulls per platform against the sandbox process."""
    from signalloop.config import settings_from_dict
    from signalloop.store import Workspace

    last = datetime.now(UTC).date() - timedelta(days=1)
    first, today = last - timedelta(days=DAYS - 1), last + timedelta(days=1)
    out: dict[str, Any] = {"since": first.isoformat(), "until": last.isoformat()}
    log(f"sandbox: building the accounts ({first}..{last})")
    with sandbox_process(last, seed) as (conn, info):
        out["served"] = info["served"]
        base = info["base_url"]
        settings = settings_from_dict(
            {
                "connect": {
                    "meta": {"ad_account_id": f"act_{META_ACCOUNT}", "base_url": base},
                    "google": {"customer_id": CUSTOMER, "base_url": base},
                }
            }
        )
        runs: dict[str, dict[str, Any]] = {}
        with Workspace(folder / "pull.duckdb") as ws:
            for p in ("meta", "google"):
                runs[p] = {}
                for label in ("first", "again"):
                    r = one_pull(ws, p, settings, since=first, until=last, today=today)
                    runs[p][label] = r
                    log(f"  {p} {label}: {r}")
            conn.send("restate")
            out["restated_rows"] = conn.recv()
            for p in ("meta", "google"):
                r = one_pull(ws, p, settings, today=today)
                runs[p]["restated"] = r
                log(f"  {p} restated: {r}")
            out["stored"] = {
                k: int(ws.con.execute(f"SELECT count(*) FROM {k}").fetchone()[0])  # type: ignore[index]
                for k in ("spend", "changes")
            }
    out["runs"] = runs
    return out


# ---- the time loop -------------------------------------------------------------------------


class HumanWeekly:
    """A person re-budgeting once a week: the best half by last week's observed CPA +30%, the
    rest -30% (no conversions counts as worst); budgets otherwise left as they are."""

    name = "human_weekly_30"

    def __init__(self, step: float = HUMAN_STEP, every: int = HUMAN_EVERY) -> None:
        self.step, self.every, self.calls = step, every, 0

    def allocate(self, arms: Sequence[Any], budget: float, rng: np.random.Generator) -> dict:
        out = {a.campaign_id: float(a.current) for a in arms}
        if self.calls % self.every == 0:

            def cpa(a: Any) -> float:
                week = a.history[-7:]
                conv = sum(d.conversions for d in week)
                return sum(d.spend for d in week) / conv if conv > 0 else float("inf")

            ranked = sorted(arms, key=cpa)
            for i, a in enumerate(ranked):
                f = 1 + self.step if i < len(ranked) // 2 else 1 - self.step
                out[a.campaign_id] = round(float(a.current) * f, 2)
        self.calls += 1
        return out


class _Recorder:
    """The loop's account, recorded: each delivered day's spend rows and edits (the
    simulator's own log), for the sandbox to serve."""

    account: Any = None


def _recording_account() -> type:
    from signalloop.simulate import Account

    class Recording(Account):  # type: ignore[misc,valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.days_done: list[Any] = []
            _Recorder.account = self

        def step(self, day: int, budgets: Mapping[str, float]) -> Any:
            ev = super().step(day, budgets)
            self.days_done.append(ev)
            return ev

    return Recording


class ThroughApply:
    """A policy whose budgets reach the simulated world through ``signalloop apply``.

    Each call (a morning): the sandbox serves yesterday's delivery and edits; the workspace
    pulls both platforms; the inner policy decides; ``apply(..., live=True)`` sends what the
    guardrails allow; the sandbox's budgets after the apply are returned to the loop.
    """

    def __init__(self, inner: Any, config: Any, warmup: int, folder: Path) -> None:
        from signalloop.config import settings_from_dict
        from signalloop.push.client import Client
        from signalloop.push.sandbox import Sandbox
        from signalloop.store import Workspace

        self.inner, self.name = inner, f"{inner.name} (through apply)"
        self.config, self.day = config, warmup
        self.clock = datetime.combine(config.start, datetime.min.time(), UTC)
        self.sb = Sandbox(now=lambda: self.clock).start()
        self.client = Client(sleep=lambda _: None)
        self.ws = Workspace(folder / f"loop-{config.seed}-{id(self)}.duckdb")
        self.settings = settings_from_dict(
            {
                "connect": {
                    "meta": {"ad_account_id": META_ACCOUNT, "base_url": self.sb.base_url},
                    "google": {"customer_id": CUSTOMER, "base_url": self.sb.base_url},
                }
            }
        )
        self.served_days = 0
        self.lines: Counter[str] = Counter()
        self.pull_rows: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.own_edits_seen = 0
        self.changes_recorded = 0
        self.platforms: dict[str, str] = {}
        self.all_spend: list[dict[str, Any]] = []

    def close(self) -> None:
        start = self.start_dt + timedelta(days=self.day_first)
        row = self.ws.con.execute(
            "SELECT count(*) FILTER (WHERE json_extract_string(attrs, '$.source') = "
            "'signalloop'), count(*) FILTER (WHERE coalesce(json_extract_string(attrs, "
            "'$.source'), '') <> 'signalloop') FROM changes WHERE field = 'budget' AND ts >= ?",
            [start.replace(tzinfo=None)],
        ).fetchone()
        assert row is not None
        self.budget_rows = {"own": int(row[0]), "other": int(row[1])}
        self.client.close()
        self.ws.close()
        self.sb.stop()

    def _date(self, d: int) -> date:
        return self.config.start + timedelta(days=d)

    def _serve_new_days(self, acct: Any) -> None:
        """Yesterday's (and any earlier unserved) delivery and edits, into the sandbox."""
        from signalloop.simulate.tables import platform_conversions, spend_table

        evs = acct.days_done[self.served_days :]
        rows: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for ev in evs:
            reported = platform_conversions(acct, ev.spend, ev.conversions)
            rows += spend_table(acct, ev.spend, reported[:2]).to_pylist()
            for ch in ev.changes:
                # budget edits from the first policy day on are apply's own: the sandbox
                # recorded them when apply sent them
                if ch.field == "budget" and ev.day >= self.day_first:
                    continue
                changes.append(
                    {
                        "ts": (self.start_dt + timedelta(seconds=int(ch.ts))).isoformat(),
                        "level": ch.level,
                        "entity_id": ch.entity_id,
                        "field": ch.field,
                        "old_value": ch.old_value,
                        "new_value": ch.new_value,
                        "actor": ch.actor,
                    }
                )
        for r in rows:
            r["date"] = str(r["date"])
            r["platform"] = self.platforms[str(r["campaign_id"])]
        self.sb.load_spend(rows, meta_account=META_ACCOUNT, google_customer=CUSTOMER)
        self.all_spend += rows
        if changes:
            self.sb.load_changes(
                changes, self.all_spend, meta_account=META_ACCOUNT, google_customer=CUSTOMER
            )
        self.served_days = len(acct.days_done)

    def _budgets_first(self, arms: Sequence[Any]) -> None:
        """The platforms' budgets on the first policy morning: the plan's last warm-up day."""
        acct = _Recorder.account
        # no LinkedIn connector: the simulator's LinkedIn campaign is served as a Meta one
        self.platforms = {
            c.id: c.platform if c.platform in ("meta", "google") else "meta" for c in acct.campaigns
        }
        self.sb.load_meta_objects(
            META_ACCOUNT,
            [
                {"id": a.campaign_id, "kind": "campaign", "daily_budget": round(a.current * 100)}
                for a in arms
                if self.platforms[a.campaign_id] == "meta"
            ],
        )
        self.sb.load_google_budgets(
            CUSTOMER,
            {
                a.campaign_id: round(a.current * 100) * 10_000
                for a in arms
                if self.platforms[a.campaign_id] == "google"
            },
        )

    def allocate(self, arms: Sequence[Any], budget: float, rng: np.random.Generator) -> dict:
        from signalloop.connect.apply import apply
        from signalloop.connect.pull import pull

        acct = _Recorder.account
        d = self.day
        if d == self.day_first:
            self._budgets_first(arms)
        self.clock = datetime.combine(self._date(d), datetime.min.time(), UTC) + timedelta(hours=6)
        self._serve_new_days(acct)
        t0 = time.perf_counter()
        since = self.config.start if d == self.day_first else self._date(d - 1)
        for p in ("meta", "google"):
            res = pull(
                self.ws,
                p,
                settings=self.settings,
                client=self.client,
                since=since,
                until=self._date(d - 1),
                today=self._date(d),
                poll_wait=0,
            )
            doc = res.to_dict()
            self.pull_rows["spend_loaded"] += doc["rows_loaded"]
            self.pull_rows["spend_restated"] += doc["rows_restated"]
            self.pull_rows["spend_quarantined"] += doc["rows_quarantined"]
            ch = doc.get("changes") or {}
            self.pull_rows["edits_loaded"] += int(ch.get("rows_loaded") or 0)
            self.own_edits_seen += int(ch.get("rows_own") or 0)
        self.seconds["pull"] += time.perf_counter() - t0
        wanted = self.inner.allocate(arms, budget, rng)
        as_of = self._date(d - 1).isoformat()
        doc = {
            "run_id": f"loop-day-{d}",
            "as_of": as_of,
            "allocation": {
                "arms": [
                    {
                        "campaign_id": a.campaign_id,
                        "current": float(a.current),
                        "recommended": float(wanted.get(a.campaign_id, 0.0)),
                    }
                    for a in arms
                ]
            },
            "checks": {
                "campaigns": [
                    {"campaign_id": a.campaign_id, "gate": a.gate, "reasons": list(a.gate_reasons)}
                    for a in arms
                ]
            },
            "state": {
                "phase": {
                    "entities": [
                        {
                            "campaign_id": a.campaign_id,
                            "level": "campaign",
                            "entity_id": a.campaign_id,
                            "state": a.learning_state,
                        }
                        for a in arms
                    ]
                }
            },
        }
        t0 = time.perf_counter()
        res = apply(
            self.ws,
            settings=self.settings,
            live=True,
            run_doc=doc,
            client=self.client,
            now=self.clock,
        )
        self.seconds["apply"] += time.perf_counter() - t0
        self.changes_recorded += res.changes_recorded
        for ln in res.lines:
            key = ln.status
            if ln.status == "refused":
                key += ": " + _reason_kind(ln.reason)
            self.lines[key] += 1
        meta, google = self.sb.meta_budgets, self.sb.google_budgets
        out = {}
        for a in arms:
            if self.platforms[a.campaign_id] == "meta":
                out[a.campaign_id] = (meta.get(a.campaign_id) or 0) / 100
            else:
                out[a.campaign_id] = google.get(a.campaign_id, 0) / 1_000_000
        self.day += 1
        return out

    @property
    def day_first(self) -> int:
        return LOOP_WARMUP

    @property
    def start_dt(self) -> datetime:
        return datetime.combine(self.config.start, datetime.min.time(), UTC)


def _reason_kind(reason: str) -> str:
    if "learning_limited" in reason:
        return "learning-limited"
    if "in learning" in reason:
        return "in learning"
    for key in ("daily limit", "gate holds", "someone changed", "edit history"):
        if key in reason:
            return key
    return reason[:40]


def loop_config(scenario: str, seed: int) -> Any:
    from signalloop.allocate.loop import scenario_config
    from signalloop.simulate import SimulationConfig

    if scenario == "steady":
        return SimulationConfig(days=LOOP_WARMUP + LOOP_DAYS, campaigns=LOOP_CAMPAIGNS, seed=seed)
    return scenario_config(scenario, seed, LOOP_WARMUP + LOOP_DAYS, LOOP_CAMPAIGNS)


def _campaign_resets(res: Any, warm_budgets: Mapping[str, float]) -> int:
    """Campaign-days whose budget moved more than 20% (what resets its ad sets)."""
    last = dict(warm_budgets)
    n = 0
    for row in res.rows:
        for c, b in row.budgets.items():
            if last.get(c, 0) > 0 and b > 0 and abs(b / last[c] - 1.0) > 0.2:
                n += 1
        last = dict(row.budgets)
    return n


def loop_one(scenario: str, seed: int, policy: str, folder: Path) -> dict[str, Any]:
    """One policy over one seeded account: the loop's totals (and the apply's counts)."""
    import signalloop.allocate.loop as loop
    from signalloop.allocate.policy import make_policy
    from signalloop.simulate import Account

    config = loop_config(scenario, seed)
    warm = Account(config).plan_budgets(LOOP_WARMUP - 1)
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    if policy in (THROUGH, WHAT_IF):
        import signalloop.connect.apply as applying

        saved, states = loop.Account, applying.LEARNING_STATES
        loop.Account = _recording_account()
        if policy == WHAT_IF:  # apply as it was: learning-limited campaigns refused too
            applying.LEARNING_STATES = ("learning", "learning_limited")
        chosen = ThroughApply(make_policy("guarded_bayes"), config, LOOP_WARMUP, folder)
        try:
            res = loop.run_policy(chosen, config, warmup_days=LOOP_WARMUP, random_state=seed)
        finally:
            loop.Account, applying.LEARNING_STATES = saved, states
            chosen.close()
        extra = {
            "lines": dict(chosen.lines),
            "pulled": dict(chosen.pull_rows),
            "own_edits_seen": chosen.own_edits_seen,
            "budget_rows": chosen.budget_rows,
            "changes_recorded": chosen.changes_recorded,
            "pull_s": chosen.seconds["pull"],
            "apply_s": chosen.seconds["apply"],
        }
    elif policy == "human_weekly_30":
        res = loop.run_policy(HumanWeekly(), config, warmup_days=LOOP_WARMUP, random_state=seed)
    else:
        res = loop.run_policy(policy, config, warmup_days=LOOP_WARMUP, random_state=seed)
    tot = res.totals
    months = LOOP_CAMPAIGNS * tot["days"] / 30.0
    placed = sum(sum(r.budgets.values()) for r in res.rows) / (res.budget * len(res.rows))
    return {
        "scenario": scenario,
        "seed": seed,
        "policy": policy,
        "resets": tot["resets_caused"],
        "resets_per_cm": tot["resets_caused"] / months,
        "campaign_resets": _campaign_resets(res, warm),
        "campaign_resets_per_cm": _campaign_resets(res, warm) / months,
        "breaches": tot["breaches"],
        "regret_pct": tot["regret_pct"],
        "placed": placed,
        "days": tot["days"],
        "seconds": time.perf_counter() - t0,
        "budgets": [r.budgets for r in res.rows],
        **extra,
    }


THROUGH = "guarded_bayes (through apply)"
WHAT_IF = "guarded_bayes (through apply, learning-limited refused too: as before)"
LOOP_POLICIES = (THROUGH, WHAT_IF, "guarded_bayes", "human_weekly_30")


def loops(seeds: int, scenarios: Sequence[str], folder: Path) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        for seed in range(1, seeds + 1):
            for policy in LOOP_POLICIES:
                r = loop_one(scenario, seed, policy, folder)
                log(
                    f"  loop {scenario} seed {seed} {policy}: resets {r['resets']} "
                    f"({r['resets_per_cm']:.2f}/campaign-month), breaches {r['breaches']}, "
                    f"{r['seconds']:.1f} s" + (f", lines {r['lines']}" if "lines" in r else "")
                )
                rows.append(r)
    return rows


# ---- the section -------------------------------------------------------------------------


def _pull_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| platform | pull | wall s | landing s | spend rows read | rows/s | new | restated "
        "| unchanged | quarantined | restated days | edit events read | edits new / restated "
        "/ unchanged | requests (report jobs) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    names = {
        "first": f"first: {res['since']}..{res['until']}",
        "again": "the same range again",
        "restated": f"28-day lookback after {RESTATED_DAYS} days restated",
    }
    for p, runs in res["runs"].items():
        for label, r in runs.items():
            lines.append(
                f"| {p} | {names[label]} | {r['wall']:.1f} | {r['landing']:.1f} "
                f"| {r['rows_pulled']:,} | {r['rows_pulled'] / r['wall']:,.0f} "
                f"| {r['rows_loaded']:,} | {r['rows_restated']:,} | {r['rows_unchanged']:,} "
                f"| {r['rows_quarantined']:,} | {r['restated_days']} | {r['events_read']:,} "
                f"| {r['edits_loaded']:,} / {r['edits_restated']:,} / {r['edits_unchanged']:,} "
                f"| {r['requests']} ({r['report_jobs']}) |"
            )
    return lines


def _loop_table(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r["policy"])].append(r)
    lines = [
        "| scenario | policy | seeds | ad-set resets / campaign-month (mean, max) "
        "| campaign budget edits over 20% / campaign-month | guardrail breaches "
        "| regret % (mean) | budgets placed / the day's budget (mean) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (scenario, policy), rs in by.items():
        per = [r["resets_per_cm"] for r in rs]
        lines.append(
            f"| {scenario} | {policy} | {len(rs)} | {statistics.fmean(per):.2f} "
            f"({max(per):.2f}) | {statistics.fmean(r['campaign_resets_per_cm'] for r in rs):.2f} "
            f"| {sum(r['breaches'] for r in rs)} "
            f"| {statistics.fmean(r['regret_pct'] for r in rs):.1f} "
            f"| {statistics.fmean(r['placed'] for r in rs):.0%} |"
        )
    return lines


def _loop_notes(rows: list[dict[str, Any]]) -> str:
    """What the table says, in numbers."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["policy"]].append(r)
    if not all(p in by for p in (THROUGH, "guarded_bayes", "human_weekly_30")):
        return ""
    resets = {p: sum(r["resets"] for r in rs) for p, rs in by.items()}
    months = {p: sum(LOOP_CAMPAIGNS * r["days"] / 30.0 for r in rs) for p, rs in by.items()}
    regret = {p: statistics.fmean(r["regret_pct"] for r in rs) for p, rs in by.items()}
    what_if = ""
    if WHAT_IF in by:
        what_if = (
            f"; refusing learning-limited campaigns too (as apply first did) "
            f"{regret[WHAT_IF]:.1f}% with {resets[WHAT_IF]} resets"
        )
    return (
        f"**Resets: the guarded policy applying its own budgets through apply caused "
        f"{resets[THROUGH]} learning resets in {months[THROUGH]:,.0f} campaign-months; the "
        f"weekly human re-budget {resets['human_weekly_30']:,} "
        f"({resets['human_weekly_30'] / months['human_weekly_30']:.1f} per campaign-month).** "
        f"Regret through apply {regret[THROUGH]:.1f}% against {regret['guarded_bayes']:.1f}% "
        f"for the same policy applied straight{what_if} (the lines below)."
    )


def _apply_summary(rows: list[dict[str, Any]]) -> str:
    through = [r for r in rows if r["policy"] == THROUGH]
    if not through:
        return ""
    lines: Counter[str] = Counter()
    pulled: Counter[str] = Counter()
    for r in through:
        lines.update(r["lines"])
        pulled.update(r["pulled"])
    own = sum(r["own_edits_seen"] for r in through)
    stored = sum(r["budget_rows"]["own"] for r in through)
    other = sum(r["budget_rows"]["other"] for r in through)
    recorded = sum(r["changes_recorded"] for r in through)
    direct = {(r["scenario"], r["seed"]): r for r in rows if r["policy"] == "guarded_bayes"}
    gaps = []
    for r in through:
        d = direct.get((r["scenario"], r["seed"]))
        if d is None:
            continue
        for a, b in zip(r["budgets"], d["budgets"], strict=False):
            gaps += [abs(a[c] - b[c]) / b[c] for c in a if b.get(c, 0) > 0]
    n_days = sum(r["days"] for r in through)
    pull_s = sum(r["pull_s"] for r in through) / n_days
    apply_s = sum(r["apply_s"] for r in through) / n_days
    gap = (
        f" Budgets through apply against the same policy applied straight: median relative "
        f"difference {statistics.median(gaps):.2%}, max {max(gaps):.1%} (lines moved by 0.5% "
        "or less are left unchanged by apply, budgets are rounded to cents, apply leaves "
        "learning-limited campaigns alone where the policy moves them within its limit, and "
        "the paths diverge once a budget differs)."
        if gaps
        else ""
    )
    return (
        f"**Through apply** ({len(through)} runs, {n_days} policy days): apply's lines "
        + ", ".join(f"{n:,} {k}" for k, n in sorted(lines.items()))
        + f"; {recorded:,} changes recorded with actor automation (source signalloop); the "
        f"next morning's pull read {own:,} of them back from the platforms' edit history "
        "and recognised them as signalloop's own (the last morning's are never read back: "
        f"the loop ends): the workspace holds {stored:,} budget edits of the policy days, "
        f"all apply's, and {other:,} others; pulls landed "
        f"{pulled['spend_loaded']:,} spend rows "
        f"({pulled['spend_restated']:,} restated, {pulled['spend_quarantined']:,} "
        f"quarantined) and {pulled['edits_loaded']:,} edits (the simulator's own: launches, "
        f"creative rotations and plan edits); per day {pull_s:.2f} s pulling both platforms "
        f"and {apply_s:.2f} s applying (in-process sandbox)." + gap
    )


def section(
    pull_res: dict[str, Any] | None,
    loop_rows: list[dict[str, Any]],
    seeds: int,
    scenarios: Sequence[str],
    seconds: float,
    load: float,
) -> str:
    lines = [
        BEGIN,
        "## Connected accounts: pulling from the local stand-ins, and budgets applied in the loop",
        "",
        "`make bench-connect` (`.venv/bin/python benchmarks/connect_speed.py --seeds "
        f"{seeds}`), {datetime.now(UTC):%Y-%m-%d}, {machine(PACKAGES)}; whole script "
        f"{seconds:.0f} s; load average {load:.1f}.",
        "",
    ]
    if pull_res is not None:
        meta1 = pull_res["runs"]["meta"]["first"]["wall"]
        goog1 = pull_res["runs"]["google"]["first"]["wall"]
        worst = max(meta1, goog1)
        lines += [
            f"**Pull.** A synthetic account of {CAMPAIGNS} campaigns x {ADSETS} ad sets x {ADS} "
            f"ads ({CAMPAIGNS * ADSETS * ADS:,} ads, each delivering every day of {DAYS}) with "
            f"an edit history (about one edit per campaign every {round(1 / EDIT_RATE)} days: "
            "budgets, statuses, bids, targeting, creatives; people 50%, rules 35%, the "
            "platform 15%), served once as a Meta ad account and once as a Google Ads customer "
            "by `signalloop.push.sandbox.Sandbox` in its own process on the same machine. "
            "`signalloop.connect.pull.pull` (= `signalloop pull meta|google --since --until`) "
            "into a DuckDB workspace file: Meta Insights at `level=ad` (31-day chunks through "
            "report jobs, pages of 500 rows; the 2 s between a job's status polls set to 0: a "
            "real job's wait is the platform's), Google's GAQL `ad_group` report through "
            "`searchStream` (one row per ad group and day: "
            f"{CAMPAIGNS * ADSETS:,} ad groups), then the edit history (Meta's activity log "
            "over the range; Google's `change_event` keeps 30 days, so only those are read). "
            "*Wall* includes the HTTP reads, mapping, and landing through ingest (validation, "
            "quarantine, natural keys, restate: the *landing* column).",
            "",
            f"**{DAYS} days, {CAMPAIGNS} campaigns, {CAMPAIGNS * ADSETS * ADS:,} ads: Meta "
            f"{meta1:.1f} s, Google {goog1:.1f} s** (target < {TARGET_SECONDS:.0f} s on 2 "
            f"cores: {'met' if worst < TARGET_SECONDS else 'NOT met'}). The second pull of the "
            "same range adds nothing; after the platform restated "
            f"{RESTATED_SHARE:.0%} of the rows of the last {RESTATED_DAYS} days "
            f"({pull_res['restated_rows']['meta']:,} Meta rows, "
            f"{pull_res['restated_rows']['google']:,} Google ad rows), the default 28-day "
            "lookback pull replaces exactly those (Google's restated ad rows sum into its ad "
            "group rows) and reports the days whose spend moved. Workspace afterwards: "
            f"{pull_res['stored']['spend']:,} spend rows, {pull_res['stored']['changes']:,} "
            "edits.",
            "",
            *_pull_table(pull_res),
            "",
        ]
    if loop_rows:
        lines += [
            "**Budgets applied in the time loop.** `signalloop.allocate.loop.run_policy` on "
            f"{LOOP_CAMPAIGNS}-campaign simulated accounts (seeds 1..{seeds}; scenarios: "
            + ", ".join(f"`{s}`" for s in scenarios)
            + f"; {LOOP_WARMUP} warm-up days at the account's plan, then {LOOP_DAYS} policy "
            "days). *guarded_bayes (through apply)*: every policy morning the simulator's "
            "delivery and edits of the day before are served by an in-process sandbox (Meta "
            "and Google campaign budgets, each campaign on its simulated platform; the "
            "simulator's LinkedIn campaign, which no connector reaches, served as a Meta one), "
            "the "
            "workspace pulls both platforms (`pull`: spend and edit history), the policy's "
            "budgets become a run document (the loop's gate and learning states as the run's "
            "checks and phase) and `signalloop.connect.apply.apply(live=True)` reads each "
            "budget from the sandbox, checks it (daily limit 18%, gate, learning, the budget "
            "the workspace last knew) and sends it; the budgets the sandbox holds afterwards "
            "are what the simulated world delivers that day. What is simulated: the world "
            "(delivery, conversions, learning), what the policy sees (the loop's observer, "
            "not the pulled rows) and the decision; what runs through the product's code: "
            "pull, apply and their records. *guarded_bayes*: the same policy's budgets handed "
            "to the simulator directly (as `allocate_quality.py` runs it). *human_weekly_30*: "
            f"every {HUMAN_EVERY}th policy day a person moves the better half of the campaigns "
            f"by last week's observed CPA up {HUMAN_STEP:.0%} and the rest down "
            f"{HUMAN_STEP:.0%}, in Ads Manager (straight to the simulator; apply would refuse "
            "every such line). Resets are the simulator's: a budget change of more than 20% "
            "puts every ad set of the campaign back into learning; *ad-set resets / "
            "campaign-month* = resets / (campaigns x policy days / 30); the next column counts "
            "the campaign budget edits that caused them. *" + WHAT_IF + "*: the same, with "
            "apply refusing learning-limited campaigns too, as it first did (`LEARNING_STATES` "
            "patched for this row only); apply now moves them within the daily limit, as the "
            "policy does. Regret as in the allocate benchmark above (the oracle's expected "
            "conversions minus the policy's, learning's cost included); the human re-budget "
            "does not keep the day's total (+30% and -30% on halves of unequal size, "
            "compounding), so its regret is not comparable: see *budgets placed*.",
            "",
            *_loop_table(loop_rows),
            "",
            _loop_notes(loop_rows),
            "",
            _apply_summary(loop_rows),
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seeds", type=int, default=10, help="simulated accounts in the loop")
    ap.add_argument("--scenarios", default="steady,tracking_outage")
    ap.add_argument("--seed", type=int, default=11, help="the pulled account's seed")
    ap.add_argument("--skip-pull", action="store_true")
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--campaigns", type=int, default=CAMPAIGNS, help="of the pulled account")
    ap.add_argument("--days", type=int, default=DAYS, help="of the pulled account")
    ap.add_argument("--loop-days", type=int, default=56, help="policy days per run")
    args = ap.parse_args(argv)
    global LOOP_DAYS
    LOOP_DAYS = args.loop_days
    resize(args.campaigns, args.days)
    os.environ.update(TOKENS)  # the sandbox's own tokens, not credentials
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    scenarios = [s for s in args.scenarios.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="signalloop-bench-connect-") as tmp:
        pull_res = None if args.skip_pull else pulls(Path(tmp), args.seed)
        load = max(load, os.getloadavg()[1])
        loop_rows = [] if args.skip_loop else loops(args.seeds, scenarios, Path(tmp))
    block = section(pull_res, loop_rows, args.seeds, scenarios, time.perf_counter() - t0, load)
    print(block)
    if not args.no_write:
        write_section(block, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
