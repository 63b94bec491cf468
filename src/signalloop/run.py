"""``signalloop run``: the whole loop in order, ending in ``report.html`` and ``report.json``.

0. **Pull** spend from the connected ad accounts when ``[run] pull = true``
   (:func:`signalloop.connect.pull.pull_connected`: the lookback re-read, restated days
   replaced; a platform that cannot be read is reported and the loop goes on).
1. **Ingest** any new files from the inbox (``[run] inbox``): a file's kind is the folder it
   sits in (``inbox/spend/...``) or the start of its name (``spend_2026-03-31.csv``). Ingest is
   idempotent, so a file seen before adds nothing; a file whose kind cannot be told is listed,
   never silently dropped, and a file ingest refuses is reported and the loop goes on.
2. **Check** the signals (storing outage windows as exclusions for what follows).
3. **Nowcast**, **phase** and **fatigue**: the campaign state.
4. **Refresh models when due**: a model is due when none is saved, its settings changed, or
   it was trained ``retrain_every_days`` (declared, else its backtest's recommendation, else
   :data:`DEFAULT_RETRAIN_DAYS`) or more days before the as-of date. A refreshed model is
   backtested too, and the backtest is saved beside it. With ``[run] retrain = "separate"``
   the run only lists the due models (``status: due``) and keeps using the saved ones:
   :data:`REFRESH_COMMAND`, scheduled on its own, refits them (a large account's refit takes
   minutes, longer than the rest of its daily run).
5. **Allocate** tomorrow's budget, **diagnose** (with the saved backtests and who converts,
   :mod:`signalloop.audience`, as model evidence), and read the **decision lens**.
6. Record the signal environment in the workspace's run history, **apply** the allocation
   when ``[run] apply`` is ``"dry-run"`` or ``"live"`` (:mod:`signalloop.connect.apply`:
   within the guardrails, every change recorded) and write the report
   (:mod:`signalloop.report`).

Everything is one JSON-ready dict (``report.json``); the CLI only formats it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis

from signalloop import __version__
from signalloop.checks.base import default_as_of
from signalloop.config import Settings
from signalloop.contract import KINDS
from signalloop.errors import InputError, SignalloopError, UsageError
from signalloop.store import Workspace

if TYPE_CHECKING:
    from signalloop.nowcast import NowcastOptions

Progress = Callable[[str, float | None], None]

#: Retraining cadence in days when none is declared and no backtest recommends one.
DEFAULT_RETRAIN_DAYS = 7
#: Cadences (days) the run's backtest compares, with the declared ``retrain_every_days``; the
#: full grid is ``signalloop model backtest``.
RUN_CADENCES = (7, 14)
#: Weekly points of signal-environment history backfilled for a workspace's first run.
HISTORY_WEEKS = 12
#: Cohort days the run's report lists (the nowcast's ``cohort_days``): the days its
#: conversions chart shows. Older cohorts are counted in their campaigns' rows and left out of
#: the lists (``account["listed"]`` says how many), so a year of history does not make every
#: daily report, and each page of ``serve`` that reads it, four times larger; ``signalloop
#: nowcast --json`` lists every one.
REPORT_DAYS = 90
#: File endings an inbox file may have.
INBOX_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet")

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS run_history (
    as_of DATE PRIMARY KEY,
    recorded_at TIMESTAMPTZ,
    source VARCHAR,
    signal_environment JSON,
    gates JSON
)"""


def _quiet(label: str, frac: float | None) -> None:
    return None


# -- 1. inbox -----------------------------------------------------------------------------------


def inbox_kind(path: Path, inbox: Path) -> str | None:
    """The contract kind of an inbox file: its first folder, else the start of its name.

    >>> inbox_kind(Path("in/spend/meta.csv"), Path("in"))
    'spend'
    >>> inbox_kind(Path("in/touchpoints_2026-03-31.csv.gz"), Path("in"))
    'touchpoints'
    >>> inbox_kind(Path("in/notes.csv"), Path("in")) is None
    True
    """
    rel = path.relative_to(inbox)
    if len(rel.parts) > 1 and rel.parts[0].lower() in KINDS:
        return rel.parts[0].lower()
    name = rel.name.lower()
    # longest first: "conversions" before a hypothetical shorter kind it starts with
    for kind in sorted(KINDS, key=len, reverse=True):
        if name.startswith(kind):
            return kind
    return None


def name_date(path: Path) -> date | None:
    """The ISO date in a file's name, if it has exactly one.

    >>> name_date(Path("spend_meta_2017-08-30.csv"))
    datetime.date(2017, 8, 30)
    >>> name_date(Path("spend.csv")) is None
    True
    """
    found = re.findall(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)", path.name)
    if len(found) != 1:
        return None
    try:
        return date.fromisoformat(found[0])
    except ValueError:
        return None


def scan_inbox(inbox: Path) -> tuple[list[tuple[str, Path]], list[dict[str, Any]]]:
    """Files to ingest as ``(kind, path)`` in kind order, and the files that were not taken."""
    if not inbox.is_dir():
        raise UsageError(f"[run] inbox {inbox} is not a folder: create it or fix signalloop.toml")
    take: list[tuple[str, Path]] = []
    left: list[dict[str, Any]] = []
    for p in sorted(x for x in inbox.rglob("*") if x.is_file()):
        if p.name.startswith("."):
            continue
        if not p.name.lower().endswith(INBOX_SUFFIXES):
            left.append({"file": str(p), "reason": f"not one of {', '.join(INBOX_SUFFIXES)}"})
            continue
        kind = inbox_kind(p, inbox)
        if kind is None:
            left.append(
                {
                    "file": str(p),
                    "reason": "kind unknown: put it in a folder named after its kind or start "
                    f"its name with one ({', '.join(KINDS)})",
                }
            )
            continue
        take.append((kind, p))
    order = list(KINDS)
    take.sort(key=lambda kp: (order.index(kp[0]), str(kp[1])))
    return take, left


def ingest_inbox(
    ws: Workspace, inbox: Path, settings: Settings, progress: Progress = _quiet
) -> dict[str, Any]:
    """Ingest every new file in ``inbox``; refused files are reported, not raised."""
    from signalloop.ingest import ingest_file

    take, left = scan_inbox(inbox)
    files: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for kind, path in take:
        profile = settings.run.profiles.get(kind, "canonical")
        try:
            try:
                res = ingest_file(ws, kind, path, profile=profile, progress=progress)
            except InputError as exc:
                # a one-period export without a date column: the date in its name, if any
                day = name_date(path)
                if not (exc.column == "date" and exc.line == 1 and day):
                    raise
                res = ingest_file(
                    ws, kind, path, profile=profile, report_date=day, progress=progress
                )
                res.message = "; ".join(
                    x for x in (res.message, f"reporting date {day} from the file name") if x
                )
            files.append(res.to_dict())
        except InputError as exc:
            errors.append(
                {
                    "file": exc.file or str(path),
                    "kind": kind,
                    "line": exc.line,
                    "column": exc.column,
                    "message": str(exc),
                }
            )
    return {
        "inbox": str(inbox),
        "files": files,
        "loaded": sum(f["rows_loaded"] for f in files),
        "quarantined": sum(f["rows_quarantined"] for f in files),
        "not_taken": left,
        "errors": errors,
    }


# -- 4. models ----------------------------------------------------------------------------------


def default_outcomes(ws: Workspace) -> tuple[str, ...]:
    """``conversion`` when there are conversions, plus ``sql`` when the CRM has records."""
    counts = ws.counts()
    out: list[str] = []
    if counts.get("conversions", 0):
        out.append("conversion")
    if counts.get("crm", 0):
        out.append("sql")
    return tuple(out)


def model_due(folder: Path, outcome: str, as_of: date, settings: Settings) -> tuple[bool, str]:
    """Whether the model in ``folder`` needs refitting as of ``as_of``, and why."""
    from signalloop.lens import recommended_cadence
    from signalloop.models.api import model_config
    from signalloop.models.card import CARD_FILE, content_hash, read_card

    if not (folder / CARD_FILE).exists():
        return True, "no model saved yet"
    card = read_card(folder)
    if card.get("config_hash") != content_hash(model_config(outcome, settings)):
        return True, "its settings changed (horizon, funnel or parameters)"
    trained = str(card.get("data", {}).get("as_of") or str(card.get("created", ""))[:10])
    try:
        trained_on = date.fromisoformat(trained)
    except ValueError:
        return True, "its card does not say when it was trained"
    declared = settings.lens.retrain_every_days
    recommended = recommended_cadence(folder)
    every = declared or (int(recommended) if recommended else DEFAULT_RETRAIN_DAYS)
    basis = "declared" if declared else ("recommended" if recommended else "default")
    age = (as_of - trained_on).days
    if age >= every:
        return True, f"trained {age} days before {as_of} (retrain every {every} days, {basis})"
    if age < 0:
        return True, f"trained on data up to {trained_on}, after the as-of date {as_of}"
    return False, f"trained {age} days ago; due in {every - age} days ({basis} cadence)"


#: What refits the models a run leaves due (``[run] retrain = "separate"``).
REFRESH_COMMAND = "signalloop model refresh"
#: Beside a model that could not be fitted: when the last refit tried and why it failed.
SKIPPED_FILE = "skipped.json"


def _note_skip(folder: Path, as_of: date, reason: str) -> None:
    """Record in ``folder`` that a refit as of ``as_of`` could not fit the model."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"as_of": as_of.isoformat(), "reason": reason}
    (folder / SKIPPED_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def _recent_skip(folder: Path, as_of: date) -> str | None:
    """Why the last refit could not fit the model in ``folder``, if it tried in the
    :data:`DEFAULT_RETRAIN_DAYS` up to ``as_of``; ``None`` otherwise (then it is due again)."""
    try:
        doc = json.loads((folder / SKIPPED_FILE).read_text())
        tried = date.fromisoformat(doc["as_of"])
        reason = str(doc["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not 0 <= (as_of - tried).days < DEFAULT_RETRAIN_DAYS:
        return None
    again = tried + timedelta(days=DEFAULT_RETRAIN_DAYS)
    return f"the refit as of {tried} could not fit it: {reason} (tried again from {again})"


def refresh_models(
    ws: Workspace,
    as_of: date,
    settings: Settings,
    outcomes: Iterable[str],
    progress: Progress = _quiet,
    *,
    inline: bool = True,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Refit (and backtest) every model that is due; one entry per outcome.

    Each entry has ``outcome``, ``status`` and ``reason`` (why it is due or not), and
    ``model_dir`` where the outcome has a folder. ``status`` is ``refreshed``, ``fresh`` (not
    due), ``skipped`` (could not be fitted: ``reason`` says why) or, with ``inline=False``,
    ``due``: left for :data:`REFRESH_COMMAND` (the saved model, if any, is still the one
    used; ``saved`` says whether there is one). ``force`` refits every model, due or not.

    A refit that cannot fit a model that has none saved (too little data: ``skipped``)
    leaves :data:`SKIPPED_FILE` in its folder, and for :data:`DEFAULT_RETRAIN_DAYS` after it
    a run with ``inline=False`` lists that model as ``skipped`` with the refit's reason,
    instead of ``due`` every day; then it is due again. A model fitted removes the note.
    """
    from signalloop.models.api import default_model_dir, refresh_workspace
    from signalloop.models.card import CARD_FILE

    entries: list[dict[str, Any]] = []
    for outcome in outcomes:
        entry: dict[str, Any] = {"outcome": outcome}
        try:
            folder = default_model_dir(ws.local_path, outcome)
        except UsageError as exc:
            entries.append({**entry, "status": "skipped", "reason": str(exc)})
            continue
        entry["model_dir"] = str(folder)
        due, why = model_due(folder, outcome, as_of, settings)
        entry["reason"] = why if due or not force else f"refitted on request ({why})"
        if not due and not force:
            entries.append({**entry, "status": "fresh"})
            continue
        if not inline:
            saved = (folder / CARD_FILE).exists()
            skip = None if saved or force else _recent_skip(folder, as_of)
            if skip is not None:  # (not listed as due every day until the data can carry it)
                entries.append({**entry, "status": "skipped", "saved": False, "reason": skip})
                continue
            entries.append({**entry, "status": "due", "saved": saved, "command": REFRESH_COMMAND})
            continue
        progress(f"refreshing the {outcome} model", None)

        def step(name: str, done: int, total: int, o: str = outcome) -> None:
            progress(f"fitting and backtesting the {o} model ({name})", done / max(total, 1))

        declared = settings.lens.retrain_every_days
        cadences = sorted({*RUN_CADENCES, *([declared] if declared else [])})
        try:
            # one frame: the fit, its backtest (whose time split is the card's check) and
            # backtest.json, their fits sharing worker processes
            fit = refresh_workspace(
                ws,
                outcome,
                folder=folder,
                as_of=as_of,
                settings=settings,
                cadences=cadences,
                progress=step,
            )
        except SignalloopError as exc:
            if not (folder / CARD_FILE).exists():  # what a separate run then lists instead
                _note_skip(folder, as_of, str(exc))
            entries.append({**entry, "status": "skipped", "reason": str(exc)})
            continue
        (folder / SKIPPED_FILE).unlink(missing_ok=True)
        if fit.get("backtest") is None:  # fitted and saved, too small to backtest
            entries.append({**entry, "status": "skipped", "reason": str(fit.get("backtest_error"))})
            continue
        entries.append(
            {
                **entry,
                "status": "refreshed",
                "rows": fit["rows"],
                "positives": fit["positives"],
                "time_split": fit["time_split"],
                "calibration": fit["calibration"],
            }
        )
        progress(f"refreshing the {outcome} model", 1.0)
    return entries


def saved_backtests(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backtests saved beside the models, named by outcome (diagnose's overfitting rule)."""
    out = []
    for e in entries:
        p = Path(e.get("model_dir", "")) / "backtest.json"
        if e.get("model_dir") and p.exists():
            doc = json.loads(p.read_text())
            doc["name"] = e["outcome"]
            out.append(doc)
    return out


def model_evidence(
    ws: Workspace, entries: Iterable[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Diagnose's model evidence: the backtests saved beside the models (``entries`` as
    :func:`refresh_models` returns them; default the workspace's model folders). Who converts
    (``audience``) diagnose measures itself."""
    from signalloop.lens import OUTCOMES
    from signalloop.models.api import default_model_dir

    if entries is None:
        entries = (
            []
            if ws.path == ":memory:"
            else [
                {"outcome": o, "model_dir": str(default_model_dir(ws.local_path, o))}
                for o in OUTCOMES
            ]
        )
    return {"backtests": saved_backtests(entries)}


# -- 6. history ---------------------------------------------------------------------------------


def _snapshot(checks: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = {k: (v or {}).get("score") for k, v in checks["signal_environment"].items()}
    per = {
        c["campaign_id"]: {k: (v or {}).get("score") for k, v in c["signal_environment"].items()}
        for c in checks["campaigns"]
    }
    gates = [{"campaign_id": c["campaign_id"], "gate": c["gate"]} for c in checks["campaigns"]]
    return {"account": env, "campaigns": per}, gates


def _record(ws: Workspace, as_of: date, checks: dict[str, Any], source: str) -> None:
    env, gates = _snapshot(checks)
    ws.records.execute(
        "INSERT OR REPLACE INTO run_history VALUES (?, now(), ?, ?, ?)",
        [as_of, source, json.dumps(env), json.dumps(gates if source == "run" else None)],
    )


def signal_history(
    ws: Workspace,
    as_of: date,
    settings: Settings,
    checks: dict[str, Any],
    progress: Progress = _quiet,
    weeks: int = HISTORY_WEEKS,
) -> list[dict[str, Any]]:
    """The signal environment over time: this run's, every earlier run's, weekly backfill.

    A run records what it saw. Weekly points back from the earliest point recorded (so the
    backfill keeps one weekday), within the ``weeks`` weeks up to ``as_of`` and from the
    data's first full week, are computed once, as the data now knows them (``source =
    "backfill"``, from the environment's own checks only, so without gates), and kept. The
    first run fills those weeks; a later run adds its own point and computes nothing more
    (the weeks before the window stay out: each would be a run of the checks, every day,
    until the history's first week).
    """
    from signalloop.checks import run_checks
    from signalloop.checks.engine import ENVIRONMENT_CHECKS

    ws.records.execute(HISTORY_DDL)
    earliest = ws.records.execute("SELECT min(as_of) FROM run_history").fetchone()
    anchor = min(as_of, earliest[0]) if earliest and earliest[0] else as_of
    _record(ws, as_of, checks, "run")
    first_spend = ws.table("spend").date.min().to_pyarrow().as_py()
    start = min(first_spend, as_of) if first_spend else as_of
    have = {r[0] for r in ws.records.execute("SELECT as_of FROM run_history").fetchall()}
    # weekly points back from the earliest point known, inside the window, once: later runs
    # add one point each
    window = as_of - timedelta(days=7 * (weeks - 1))
    wanted = [anchor - timedelta(days=7 * k) for k in range(1, weeks)]
    wanted = [d for d in wanted if d >= max(start + timedelta(days=6), window) and d not in have]
    for i, day in enumerate(sorted(wanted)):
        progress("backfilling the signal history", i / len(wanted))
        past = run_checks(
            ws,
            as_of=day,
            settings=settings,
            only=list(ENVIRONMENT_CHECKS),
            store_exclusions=False,
        ).to_dict()
        _record(ws, day, past, "backfill")
    if wanted:
        progress("backfilling the signal history", 1.0)
    rows = ws.records.execute(
        "SELECT as_of, source, signal_environment, gates FROM run_history "
        "WHERE as_of <= ? ORDER BY as_of",
        [as_of],
    ).fetchall()
    return [
        {
            "as_of": r[0].isoformat(),
            "source": r[1],
            "signal_environment": json.loads(r[2]),
            "gates": json.loads(r[3]) if r[3] is not None else None,
        }
        for r in rows
    ]


# -- the loop -----------------------------------------------------------------------------------


def _listing(settings: Settings) -> NowcastOptions:
    """The run's nowcast options: the settings' settled days, :data:`REPORT_DAYS` listed."""
    from signalloop.nowcast import NowcastOptions

    return NowcastOptions(
        settle_days=settings.settle_days,
        crm_settle_days=settings.crm_settle_days,
        cohort_days=REPORT_DAYS,
    )


def steps_used(
    state: Mapping[str, Any], allocation: Mapping[str, Any] | None
) -> dict[str, dict[str, str]]:
    """What the run's steps actually used per campaign, for :func:`signalloop.shapes.learnable`.

    ``nowcast``: each campaign's ``basis``; ``allocation``: each arm's ``outcome_source``;
    ``learning_phase``: the ``conversions_source`` of a campaign's ad sets (the first seen).
    A step that does not report its source leaves its capability out.
    """
    used: dict[str, dict[str, str]] = {}
    for c in (state.get("nowcast") or {}).get("campaigns", []):
        if c.get("basis"):
            used.setdefault("nowcast", {})[str(c["campaign_id"])] = str(c["basis"])
    for a in (allocation or {}).get("arms", []):
        if a.get("outcome_source"):
            used.setdefault("allocation", {})[str(a["campaign_id"])] = str(a["outcome_source"])
    for e in (state.get("phase") or {}).get("entities", []):
        if e.get("conversions_source"):
            used.setdefault("learning_phase", {}).setdefault(
                str(e["campaign_id"]), str(e["conversions_source"])
            )
    return used


def recent_budget(ws: Workspace, as_of: date, days: int = 7) -> float:
    """Mean daily spend over the ``days`` days up to ``as_of``."""
    spend = ws.table("spend")
    recent = spend.filter(
        (spend.date > ibis.literal(as_of) - ibis.interval(days=days))
        & (spend.date <= ibis.literal(as_of))
    )
    return round(float(recent.spend.sum().execute() or 0.0) / days, 2)


def run(
    ws: Workspace,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    out_dir: str | Path | None = None,
    inbox: str | Path | None = None,
    budget: float | None = None,
    progress: Progress | None = None,
    push_now: datetime | None = None,
    run_id: str | None = None,
    pull_today: date | None = None,
) -> dict[str, Any]:
    """Run the whole loop on ``ws`` and write ``report.html`` and ``report.json``.

    Parameters
    ----------
    ws
        A writable workspace.
    as_of
        The day to decide for; default the last day with data (after the inbox is ingested).
    settings
        Project settings (``[run]`` supplies the inbox, report folder, budget, policy and
        model outcomes); defaults when ``None``.
    out_dir, inbox, budget
        Override ``[run] out``, ``[run] inbox`` and ``[run] budget``.
    progress
        ``(label, fraction)`` callback for long steps.
    push_now
        The send clock of the pushes ``[push]`` configures and of the budget changes ``[run]
        apply`` records (default the wall clock; a replay of an old account, such as the
        demo, passes the time it replays).
    run_id
        The id :mod:`signalloop.runs` recorded this run under; written into the report.
    pull_today
        "Today" for the pulls ``[run] pull`` asks for (default each account's clock; a replay
        of an old account passes the day after the one it replays).

    Returns
    -------
    dict
        ``as_of``, ``workspace``, ``pull`` (``None`` unless ``[run] pull``), ``inbox``,
        ``learnable`` (the data shape and what each
        capability used, :func:`~signalloop.shapes.learnable`), ``checks``, ``state``
        (``nowcast``, ``phase``, ``fatigue``), ``models``, ``allocation``, ``diagnosis``,
        ``lens``, ``history``, ``push`` (:func:`~signalloop.push.send.run_pushes`, ``None``
        without a ``[push]`` table), ``apply`` (:func:`~signalloop.connect.apply.apply_in_run`,
        ``None`` without ``[run] apply``), ``timings``, and ``report`` (the paths written).
        Also written as ``report.json``.

    Raises
    ------
    UsageError
        The workspace holds no data, or the inbox is not a folder.
    """
    from signalloop.allocate.policy import allocate
    from signalloop.checks import run_checks
    from signalloop.diagnose import diagnose
    from signalloop.fatigue import fatigue
    from signalloop.lens import lens
    from signalloop.nowcast import nowcast
    from signalloop.phase import phase
    from signalloop.report import write_report
    from signalloop.shapes import learnable

    settings = settings or Settings()
    report = progress or _quiet
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    pulled = None
    if settings.run.pull:
        from signalloop.connect.pull import pull_connected

        report("pulling spend from the connected accounts", None)
        pulled = pull_connected(ws, settings, today=pull_today, progress=report)
        report("pulling spend from the connected accounts", 1.0)
        lap("pull")
    folder = inbox if inbox is not None else settings.run.inbox
    ingested = ingest_inbox(ws, Path(folder), settings, report) if folder else None
    lap("ingest")
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        refused = (ingested or {}).get("errors", [])
        raise UsageError(
            f"workspace {ws.path} holds no data yet: "
            + (
                f"{len(refused)} inbox file(s) could not be ingested (first: "
                f"{refused[0]['message']})"
                if refused
                else "ingest something first or set [run] inbox"
            )
        )
    # the stored aggregates every step reads, brought up to date with what was ingested:
    # only the days new rows fall on, and only the conversions and records they touch
    from signalloop import rollups
    from signalloop.attribution import ATTRIBUTION_STATE, refresh_attribution
    from signalloop.lens import CONTEXT_DAYS
    from signalloop.models.recent import forget_prefetch, prefetch

    report("updating the aggregates", None)
    aggregates: dict[str, Any] = {}
    outcomes = settings.run.outcomes or default_outcomes(ws)
    if not ws.read_only:
        stored = ws.backend == "duckdb"  # (elsewhere attributed on the fly, for now)
        before = ws.read_meta(ATTRIBUTION_STATE) if stored else {}
        # the lens's lead labels read their users' clicks from the whole history: read in
        # the attribution's pass over it (when it makes one), not in one of their own
        current = refresh_attribution(
            ws,
            also=lambda: prefetch(
                ws, list(outcomes), as_of=as_of, days=CONTEXT_DAYS, settings=settings
            ),
        )
        after = ws.read_meta(ATTRIBUTION_STATE) if stored else {}
        aggregates["attribution"] = {
            "refresh": rollups.state_change(before, after)["refresh"] if current else "live"
        }
        if after != before and after.get("touch_index"):  # (what this refresh did to it)
            aggregates["attribution"]["touch_index"] = after["touch_index"]
        aggregates["rollups"] = rollups.refresh_all(ws)
    # (the rollups with params are refreshed where the steps read them: told at the end)
    per_params = rollups.read_states(ws)
    report("updating the aggregates", 1.0)
    lap("aggregates")
    report("checking the signals", None)
    checks = run_checks(ws, as_of=as_of, settings=settings).to_dict()
    report("checking the signals", 1.0)
    lap("checks")
    report("estimating campaign state", None)
    state = {
        "nowcast": nowcast(ws, as_of, settings=settings, options=_listing(settings)).to_dict(),
        "phase": phase(ws, as_of, settings=settings, list_days=REPORT_DAYS).to_dict(),
        "fatigue": fatigue(ws, as_of, settings=settings, list_days=REPORT_DAYS).to_dict(),
    }
    report("estimating campaign state", 1.0)
    lap("state")
    models = refresh_models(
        ws, as_of, settings, outcomes, report, inline=settings.run.retrain == "inline"
    )
    lap("models")
    report("allocating tomorrow's budget", None)
    daily = budget or settings.run.budget or recent_budget(ws, as_of)
    allocation = (
        allocate(
            ws,
            daily,
            objective=settings.run.objective,
            as_of=as_of,
            settings=settings,
            policy=settings.run.policy,
            checks=checks,
            phase_doc=state["phase"],
            nowcast_doc=state["nowcast"],
        )
        if daily > 0
        else None
    )
    report("allocating tomorrow's budget", 1.0)
    lap("allocate")
    shape = learnable(ws, as_of, used=steps_used(state, allocation))
    lap("learnable")
    report("diagnosing", None)
    from signalloop.models.depth import feedback_depth

    # read once for both: diagnose's feedback-loop rule and the lens's context fit
    depth = feedback_depth(ws, as_of=as_of, settings=settings, checks=checks)
    diagnosis = diagnose(
        ws,
        as_of,
        settings=settings,
        checks=checks,
        state={**state, "depth": depth},
        models=model_evidence(ws, models),
    )
    # (a model left due without a saved one has nothing to read yet)
    model_dirs = {
        m["outcome"]: m["model_dir"]
        for m in models
        if m["status"] != "skipped" and (m["status"] != "due" or m["saved"])
    }
    verdict = lens(
        ws,
        as_of,
        settings=settings,
        checks=checks,
        nowcast=state["nowcast"],
        phase=state["phase"],
        model_dirs=model_dirs,
        learnable=shape,
        depth=depth,
    )
    forget_prefetch(ws)
    report("diagnosing", 1.0)
    lap("diagnose_lens")
    if not ws.read_only:
        aggregates["rollups"] = {
            name: {k: v for k, v in st.items() if k in ("refresh", "days", "keys")}
            for name, st in (
                aggregates["rollups"] | rollups.what_changed(per_params, rollups.read_states(ws))
            ).items()
        }
    history = signal_history(ws, as_of, settings, checks, report)
    lap("history")
    out = Path(out_dir if out_dir is not None else settings.run.out)
    pushed = None
    if settings.push.configured:
        from signalloop.push.send import run_pushes

        report("pushing validated outcomes", None)
        held = {c["campaign_id"]: c["reasons"] for c in checks["campaigns"] if c["gate"] == "hold"}
        pushed = run_pushes(
            ws,
            as_of=as_of,
            settings=settings,
            held=held,
            out=settings.push.out or out / "push",
            now=push_now,
            progress=report,
        )
        report("pushing validated outcomes", 1.0)
        lap("push")
    applied = None
    if settings.run.apply:
        from signalloop.connect.apply import apply_in_run

        report("applying the allocation", None)
        mine = {"run_id": run_id, "as_of": as_of.isoformat(), "allocation": allocation}
        applied = apply_in_run(
            ws, {**mine, "checks": checks, "state": state}, settings, report, now=push_now
        )
        report("applying the allocation", 1.0)
        lap("apply")
    doc: dict[str, Any] = {
        "signalloop_version": __version__,
        "run_id": run_id,
        "as_of": as_of.isoformat(),
        "workspace": str(ws.path),
        "config": settings.path,
        "pull": pulled,
        "inbox": ingested,
        "aggregates": aggregates,
        "learnable": shape,
        "checks": checks,
        "state": state,
        "models": models,
        "allocation": allocation,
        "diagnosis": diagnosis,
        "lens": verdict,
        "history": history,
        "push": pushed,
        "apply": applied,
        "timings": timings,
    }
    report("writing the report", None)
    doc["report"] = write_report(ws, doc, out)
    report("writing the report", 1.0)
    lap("report")
    return doc
