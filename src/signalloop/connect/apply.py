"""``signalloop apply``: the day's allocation applied to the ad platforms, within the guardrails.

**What is applied.** The allocation of the newest successful run for the as-of day
(``signalloop run`` stores each run's report; ``run`` itself passes its own when ``[run] apply``
is set). The allocator recommends a daily budget per campaign against its *current spend*
(the last 7 days' mean), so the change applied is the allocation's ratio,
``recommended / current``, applied to the budget the platform holds: a campaign that
under-delivers its budget keeps the headroom, and the relative change the guardrails allowed is
the one made. Meta: the campaign's ``daily_budget`` (campaign budget optimisation), else each
active ad set's, in minor units (``POST /{id}``); Google Ads: the campaign budget's
``amount_micros`` (``campaignBudgets:mutate``, whole cents, all lines in one request with
``partialFailure``).

**What is refused, per line** (the other lines go on): a change above the daily limit
(:data:`MAX_DAILY_CHANGE`, the allocator's); a campaign the gate holds or that is in learning
in that run (a learning-limited one is not refused: it is stuck for want of volume, not
learning, and the allocator moves it within the same daily limit; refusing it doubled the
guarded policy's regret in ``benchmarks/connect_speed.py``); a campaign the spend rows do
not place on a connected Meta or Google account; a lifetime or shared budget; a budget the
platform holds that differs from the one the workspace knows (the latest ``budget`` edit in
``changes``, pulled or applied): someone changed it since, so the line stops and says so.
Before its first apply on an account the workspace must have read the account's edit history
(``signalloop pull --what changes``): with no budget edit in it, the platform's budget is the
baseline.

**Dry run by default**: every line is read and checked, nothing is sent. ``live=True`` sends.
Every applied change is written to ``changes`` (actor ``automation``, ``attrs.source =
"signalloop"``, the apply id): the phase replay counts it as automated, not as a person's
override, and the next pull of the history recognises it instead of storing it twice. A run's
allocation is applied once per as-of day: a second apply finds the lines ``already_applied``.
:func:`rollback` restores the budgets an apply replaced, line by line, unless someone changed
them since.

Every apply (dry runs too) is recorded in the ``budget_applies`` table.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from signalloop.config import Settings, load_settings
from signalloop.connect import edits
from signalloop.connect.changes import history_pulled
from signalloop.connect.google import GoogleReader
from signalloop.connect.landing import land_rows
from signalloop.connect.meta import MetaReader, ReadFailed
from signalloop.errors import CredentialError, UsageError
from signalloop.push.client import Client, Reply
from signalloop.push.settings import GOOGLE_PLATFORMS, META_PLATFORMS
from signalloop.store import Workspace

Progress = Callable[[str, float | None], None]

#: Largest relative budget change applied in a day: the allocator's daily change limit.
MAX_DAILY_CHANGE = 0.18
#: Slack on the limit for rounding to minor units.
LIMIT_SLACK = 0.005
#: A ratio this close to 1 is no change.
NO_CHANGE = 0.005
#: Line states that have not reached the platform yet.
OPEN = ("pending", "would_apply", "would_restore")
#: Phase states in which a campaign's budget is not touched.
LEARNING_STATES = ("learning",)

APPLIES_DDL = """
CREATE TABLE IF NOT EXISTS budget_applies (
    apply_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, run_id VARCHAR, as_of DATE,
    mode VARCHAR, rollback_of VARCHAR, lines JSON
)"""
#: Columns of the ``changes`` rows an apply writes (attributes after the contract's).
APPLY_COLUMNS: tuple[str, ...] = (*edits.COLUMNS, "source", "apply_id", "run_id")


@dataclass
class Line:
    """One budget an apply looked at: what it read, decided and did."""

    platform: str
    campaign_id: str
    level: str = "campaign"
    entity_id: str = ""
    #: Google's budget resource name.
    budget_ref: str | None = None
    #: The allocation's current (mean daily spend) and recommended budget.
    current_spend: float = 0.0
    recommended: float = 0.0
    ratio: float | None = None
    #: Budgets in currency units: on the platform now, what the workspace knew, the new one.
    platform_budget: float | None = None
    workspace_budget: float | None = None
    new_budget: float | None = None
    change_pct: float | None = None
    #: ``would_apply`` (dry run), ``applied``, ``unchanged``, ``already_applied``,
    #: ``refused`` (a guardrail), ``failed`` (the platform said no), ``would_restore``,
    #: ``restored``.
    status: str = "pending"
    reason: str = ""
    #: The platform's units (Meta minor units, Google micros): before and after.
    old_units: int | None = None
    new_units: int | None = None

    def refuse(self, why: str) -> Line:
        """Mark the line refused with the reason."""
        self.status, self.reason = "refused", why
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class ApplyResult:
    """What one apply (or rollback) read, decided and did."""

    apply_id: str
    run_id: str | None
    as_of: str
    mode: str  # "dry-run" | "live"
    rollback_of: str | None = None
    lines: list[Line] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    changes_recorded: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (lines as dicts, counted by status)."""
        self.counts = {}
        for ln in self.lines:
            self.counts[ln.status] = self.counts.get(ln.status, 0) + 1
        doc = asdict(self)
        doc["lines"] = [ln.to_dict() for ln in self.lines]
        return doc


@contextmanager
def _http(client: Client | None) -> Iterator[Client]:
    """The caller's client, or a new one closed at the end."""
    if client is not None:
        yield client
        return
    with Client() as own:
        yield own


def _now() -> datetime:
    return datetime.now(UTC)


def new_apply_id(when: datetime | None = None) -> str:
    """A sortable apply id: ``apply-`` and the UTC time plus a short random suffix."""
    return f"apply-{(when or _now()):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


# ---- what the workspace knows ------------------------------------------------------------


def allocation_run(ws: Workspace, as_of: date | None) -> tuple[str | None, dict[str, Any]]:
    """The newest successful run (of ``as_of``, when given) whose report holds an allocation:
    its id and report document."""
    from signalloop.runs import list_runs, run_report

    for r in list_runs(ws):
        if r["status"] != "ok" or (as_of is not None and r["as_of"] != as_of.isoformat()):
            continue
        doc = run_report(ws, r["run_id"], r)
        if doc is not None and doc.get("allocation"):
            return str(r["run_id"]), doc
    day = f" for {as_of}" if as_of else ""
    raise UsageError(
        f"no run{day} with an allocation in workspace {ws.path}: run `signalloop run` first "
        "(apply applies the allocation a run recommended)"
    )


def held_and_learning(doc: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Campaigns the run's gate held (with the reasons) and those in learning (with the
    state), from a run's report document."""
    held = {
        str(c["campaign_id"]): "; ".join(str(x) for x in c.get("reasons") or []) or "held"
        for c in (doc.get("checks") or {}).get("campaigns", [])
        if c.get("gate") == "hold"
    }
    learning: dict[str, str] = {}
    for e in ((doc.get("state") or {}).get("phase") or {}).get("entities", []):
        if e.get("state") in LEARNING_STATES:
            learning[str(e["campaign_id"])] = f"{e['level']} {e['entity_id']} is {e['state']}"
    return held, learning


def campaign_platforms(ws: Workspace, ids: Iterable[str]) -> dict[str, str]:
    """``meta`` or ``google`` per campaign, from its spend rows (others left out)."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = ws.con.execute(
        "SELECT campaign_id, lower(trim(platform)) FROM spend WHERE campaign_id IN "
        f"({', '.join('?' for _ in wanted)}) GROUP BY 1, 2",
        wanted,
    ).fetchall()
    out: dict[str, str] = {}
    for cid, plat in rows:
        name = "meta" if plat in META_PLATFORMS else "google" if plat in GOOGLE_PLATFORMS else None
        if name is not None:
            out[str(cid)] = name
    return out


def known_budget(ws: Workspace, level: str, entity: str) -> tuple[Decimal, str] | None:
    """The latest budget the ``changes`` log records for an entity, and where it came from."""
    row = ws.con.execute(
        "SELECT new_value, actor, strftime(ts, '%Y-%m-%d %H:%M'), "
        "coalesce(json_extract_string(attrs, '$.source'), json_extract_string(attrs, "
        "'$.platform'), 'an export') FROM changes WHERE field = 'budget' AND level = ? "
        "AND entity_id = ? AND new_value IS NOT NULL ORDER BY ts DESC, _ingest_id DESC LIMIT 1",
        [level, entity],
    ).fetchone()
    if row is None:
        return None
    try:
        value = Decimal(str(row[0]))
    except ArithmeticError:
        return None
    return value, f"{row[1] or 'unknown'} edit of {row[2]} ({row[3]})"


def _applied_before(ws: Workspace, as_of: str) -> dict[tuple[str, str, str], str]:
    """Entities a live apply changed for ``as_of`` (and no rollback undid): -> apply id."""
    ws.records.execute(APPLIES_DDL)
    rows = ws.records.execute(
        "SELECT apply_id, lines FROM budget_applies WHERE as_of = ? AND mode = 'live' "
        "AND rollback_of IS NULL AND apply_id NOT IN (SELECT rollback_of FROM budget_applies "
        "WHERE rollback_of IS NOT NULL AND mode = 'live')",
        [as_of],
    ).fetchall()
    out: dict[tuple[str, str, str], str] = {}
    for aid, lines in rows:
        for ln in json.loads(lines):
            if ln["status"] == "applied":
                out[(ln["platform"], ln["level"], ln["entity_id"])] = str(aid)
    return out


# ---- the platforms ------------------------------------------------------------------------


def _minor_per_unit(settings: Settings) -> int:
    cur = (settings.connect.meta.currency or "").upper()
    return 1 if cur in edits.META_WHOLE_UNIT_CURRENCIES else 100


class _Platform:
    """One connected account: read budgets, send changes (Meta or Google)."""

    def __init__(self, name: str, http: Client, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.reader: MetaReader | GoogleReader
        if name == "meta":
            from signalloop.connect.pull import meta_token

            self.reader = MetaReader(http, settings.connect.meta, meta_token(settings))
            self.per_unit = _minor_per_unit(settings)
            self.account = str(settings.connect.meta.node)
        else:
            self.reader = GoogleReader(http, settings.connect)
            self.per_unit = 1_000_000
            self.account = str(settings.connect.google.customer_id)
        self._google: dict[str, tuple[str, int, bool]] | None = None

    def units(self, value: int) -> float:
        return float(Decimal(value) / self.per_unit)

    def lines_for(self, base: Line) -> list[Line]:
        """The budgets behind one allocation line, read from the platform (refused lines say
        why)."""
        if isinstance(self.reader, MetaReader):
            return self._meta_lines(self.reader, base)
        return [self._google_line(self.reader, base)]

    def _meta_lines(self, reader: MetaReader, base: Line) -> list[Line]:
        fields = "id,name,status,daily_budget,lifetime_budget"
        reply = reader.read(base.campaign_id, fields)
        if not reply.ok:
            return [base.refuse(f"Meta did not serve campaign {base.campaign_id}: {reply.error}")]
        camp = reply.body
        if camp.get("daily_budget") not in (None, ""):
            return [_with(base, "campaign", base.campaign_id, int(camp["daily_budget"]))]
        if camp.get("lifetime_budget") not in (None, "", "0"):
            return [base.refuse("a lifetime budget: apply changes daily budgets only")]
        try:
            sets = reader.adsets(base.campaign_id, fields)
        except ReadFailed as exc:
            return [base.refuse(str(exc))]
        out = []
        for s in sets:
            if str(s.get("status", "ACTIVE")) != "ACTIVE":
                continue
            if s.get("daily_budget") in (None, ""):
                out.append(
                    _with(base, "adset", str(s["id"]), None).refuse(
                        "no daily budget (a lifetime budget): not changed"
                    )
                )
                continue
            out.append(_with(base, "adset", str(s["id"]), int(s["daily_budget"])))
        return out or [base.refuse("no active ad set with a daily budget")]

    def _google_line(self, reader: GoogleReader, base: Line) -> Line:
        if self._google is None:
            self._google = {}
            rows = reader.stream(
                "SELECT campaign.id, campaign.campaign_budget, campaign_budget.amount_micros, "
                "campaign_budget.explicitly_shared FROM campaign"
            )
            for r in rows:
                b = r.get("campaignBudget") or {}
                camp = r.get("campaign") or {}
                if b.get("resourceName") and b.get("amountMicros") is not None:
                    self._google[str(camp.get("id"))] = (
                        str(b["resourceName"]),
                        int(b["amountMicros"]),
                        bool(b.get("explicitlyShared")),
                    )
        found = self._google.get(base.campaign_id)
        if found is None:
            return base.refuse("Google Ads returned no budget for this campaign")
        ref, micros, shared = found
        line = _with(base, "campaign", base.campaign_id, micros)
        line.budget_ref = ref
        if shared:
            return line.refuse("a shared budget: changing it moves other campaigns too")
        return line

    def send(self, lines: Sequence[Line]) -> None:
        """Send the new budgets: each line ``applied``/``restored`` or ``failed``."""
        done = "restored" if lines and lines[0].status == "would_restore" else "applied"
        if isinstance(self.reader, MetaReader):
            for ln in lines:
                reply = self.reader.update(ln.entity_id, {"daily_budget": str(ln.new_units)})
                _settle(ln, reply.ok, done, reply.error)
            return
        ops = [
            {
                "update": {"resourceName": ln.budget_ref, "amountMicros": str(ln.new_units)},
                "updateMask": "amount_micros",
            }
            for ln in lines
        ]
        reply = self.reader.call(
            "/campaignBudgets:mutate", {"operations": ops, "partialFailure": True}
        )
        if not reply.ok:
            for ln in lines:
                _settle(ln, False, done, reply.error)
            return
        failed = _partial_failures(reply)
        for i, ln in enumerate(lines):
            _settle(ln, i not in failed, done, failed.get(i, ""))


def _with(base: Line, level: str, entity: str, units: int | None) -> Line:
    line = Line(**{**asdict(base), "level": level, "entity_id": entity})
    line.old_units = units
    return line


def _settle(line: Line, ok: bool, done: str, error: str | None) -> None:
    line.status = done if ok else "failed"
    line.reason = line.reason if ok else f"the platform refused: {error}"


def _partial_failures(reply: Reply) -> dict[int, str]:
    """Google's ``partialFailureError``: operation index -> message."""
    err = reply.body.get("partialFailureError") or {}
    out: dict[int, str] = {}
    for d in err.get("details") or []:
        for e in d.get("errors") or []:
            path = (e.get("location") or {}).get("fieldPathElements") or []
            idx = next((p.get("index") for p in path if p.get("fieldName") == "operations"), None)
            if idx is not None:
                code = ", ".join(f"{k}: {v}" for k, v in (e.get("errorCode") or {}).items())
                out[int(idx)] = f"{code} ({e.get('message', '')})"
    return out


# ---- apply --------------------------------------------------------------------------------


def _each_platform(
    res: ApplyResult,
    client: Client | None,
    settings: Settings,
    work: Callable[[_Platform], None],
) -> CredentialError | None:
    """Run ``work`` for each platform that has lines to look at. A credential the platform
    refuses (or that is missing) fails that platform's open lines with the message and the
    other platform goes on, so what was already sent is still recorded; the first such error
    is returned."""
    problem: CredentialError | None = None
    with _http(client) as http:
        for name in ("meta", "google"):
            if not any(ln.platform == name and ln.status == "pending" for ln in res.lines):
                continue
            p: _Platform | None = None
            try:
                p = _Platform(name, http, settings)
                work(p)
            except CredentialError as exc:
                problem = problem or exc
                for ln in res.lines:
                    if ln.platform == name and ln.status in OPEN:
                        ln.status, ln.reason = "failed", str(exc)
            finally:
                if p is not None:
                    res.requests += p.reader.requests
    return problem


def _raise_if_nothing_moved(res: ApplyResult, problem: CredentialError | None) -> None:
    """A credential problem is the answer (exit 2) when no budget was changed; otherwise the
    lines it failed say so and the changes made stay recorded."""
    if problem is not None and not any(ln.status in ("applied", "restored") for ln in res.lines):
        raise problem


def _allocation_lines(
    doc: Mapping[str, Any], platforms: Mapping[str, str], settings: Settings
) -> list[Line]:
    held, learning = held_and_learning(doc)
    connected = {
        "meta": settings.connect.meta.ad_account_id is not None,
        "google": settings.connect.google.customer_id is not None,
    }
    out = []
    for arm in doc["allocation"].get("arms", []):
        cid = str(arm["campaign_id"])
        cur, rec = float(arm.get("current") or 0.0), float(arm.get("recommended") or 0.0)
        line = Line(platforms.get(cid, ""), cid, entity_id=cid, current_spend=cur, recommended=rec)
        line.ratio = round(rec / cur, 6) if cur > 0 else None
        if not line.platform:
            line.refuse("its spend rows name no Meta or Google platform")
        elif not connected[line.platform]:
            line.refuse(f"no [connect.{line.platform}] account in signalloop.toml")
        elif line.ratio is not None and abs(line.ratio - 1.0) <= NO_CHANGE:
            line.status, line.reason = "unchanged", "the allocation keeps its budget"
        elif cid in held:
            line.refuse(f"the gate holds it: {held[cid]}")
        elif cid in learning:
            line.refuse(f"in learning ({learning[cid]}): no budget edit until it is stable")
        elif line.ratio is None:
            line.refuse("no spend in the last 7 days to scale its budget from")
        elif abs(line.ratio - 1.0) > MAX_DAILY_CHANGE + LIMIT_SLACK:
            line.refuse(
                f"a {100 * (line.ratio - 1):+.1f}% change is over the daily limit "
                f"({MAX_DAILY_CHANGE:.0%})"
            )
        out.append(line)
    return out


def _check_line(ws: Workspace, p: _Platform, line: Line, history: bool) -> None:
    """Budget read: compute the new budget, compare with what the workspace knows."""
    assert line.old_units is not None and line.ratio is not None
    line.platform_budget = p.units(line.old_units)
    known = known_budget(ws, line.level, line.entity_id)
    if known is not None:
        line.workspace_budget = float(known[0])
        if abs(known[0] - Decimal(line.old_units) / p.per_unit) > Decimal("0.005"):
            line.refuse(
                f"the platform's budget is {line.platform_budget:g}, the workspace last knew "
                f"{line.workspace_budget:g} ({known[1]}): someone changed it since; pull the "
                f"edit history (signalloop pull {p.name} --what changes) and run again"
            )
            return
    elif not history:
        line.refuse(
            f"the workspace has not read this account's edit history: run `signalloop pull "
            f"{p.name} --what changes` (or set [run] pull = true) so a budget changed by hand "
            "is seen before apply changes it"
        )
        return
    else:
        line.reason = "no budget edit in the history: the platform's budget is the baseline"
    step = 10_000 if p.name == "google" else 1
    new = round(line.old_units * line.ratio / step) * step
    line.new_units = new
    line.new_budget = p.units(new)
    line.change_pct = round(100.0 * (new / line.old_units - 1.0), 1) if line.old_units else None
    if line.old_units and abs(new / line.old_units - 1.0) > MAX_DAILY_CHANGE + LIMIT_SLACK:
        line.refuse(f"{line.change_pct:+.1f}% after rounding is over the daily limit")
    elif new == line.old_units:
        line.status, line.reason = "unchanged", "the change rounds to nothing"
    else:
        line.status = "would_apply"


def _record(
    ws: Workspace, res: ApplyResult, lines: Sequence[Line], now: datetime, settings: Settings
) -> None:
    """The applied (or restored) lines into ``changes`` (actor automation, source signalloop),
    and the apply into ``budget_applies``."""
    rows = []
    for ln in lines:
        if ln.status not in ("applied", "restored"):
            continue
        old = ln.platform_budget if ln.status == "applied" else ln.workspace_budget
        rows.append(
            {
                "ts": now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
                "level": ln.level,
                "entity_id": ln.entity_id,
                "field": "budget",
                "old_value": None if old is None else edits.money_text(old),
                "new_value": None if ln.new_budget is None else edits.money_text(ln.new_budget),
                "actor": "automation",
                "platform": ln.platform,
                "account_id": (
                    settings.connect.meta.node
                    if ln.platform == "meta"
                    else settings.connect.google.customer_id
                ),
                "actor_name": "signalloop",
                "resource_name": ln.budget_ref,
                "source": "signalloop",
                "apply_id": res.apply_id,
                "run_id": res.run_id,
            }
        )
    if rows:
        got = land_rows(ws, "changes", rows, APPLY_COLUMNS, f"apply:{res.apply_id}")
        res.changes_recorded = got.rows_loaded + got.rows_restated
    ws.records.execute(APPLIES_DDL)
    ws.records.execute(
        "INSERT INTO budget_applies VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            res.apply_id,
            now.astimezone(UTC).replace(tzinfo=None),
            res.run_id,
            res.as_of,
            res.mode,
            res.rollback_of,
            json.dumps([ln.to_dict() for ln in res.lines]),
        ],
    )


def apply(
    ws: Workspace,
    *,
    settings: Settings | None = None,
    as_of: date | None = None,
    live: bool = False,
    run_doc: Mapping[str, Any] | None = None,
    client: Client | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply a run's allocation to the connected accounts (a dry run unless ``live``).

    Parameters
    ----------
    ws
        The workspace (its runs, spend, changes).
    settings
        Project settings (``[connect]``); default :func:`~signalloop.config.load_settings`.
    as_of
        The day whose run's allocation is applied (default: the newest run's).
    live
        Send the changes; otherwise read, check and report only.
    run_doc
        A run's report document (``signalloop run`` passes its own; its ``run_id`` names it).
    client
        The HTTP client (default: a new one, closed at the end).
    now
        The clock the recorded changes carry (default the wall clock).
    progress
        Called with a label and a fraction.

    Raises
    ------
    UsageError
        No run with an allocation (for ``as_of``).
    CredentialError
        A connected account's credential is missing or refused (the message names the fix).
    """
    settings = settings or load_settings()
    if run_doc is None:
        run_id, doc = allocation_run(ws, as_of)
    else:
        run_id, doc = run_doc.get("run_id"), dict(run_doc)
        if not doc.get("allocation"):
            raise UsageError("the run made no allocation (no budget to split): nothing to apply")
    when = now or _now()
    res = ApplyResult(
        new_apply_id(when), run_id, str(doc.get("as_of")), "live" if live else "dry-run"
    )
    arms = [str(a["campaign_id"]) for a in doc["allocation"].get("arms", [])]
    res.lines = _allocation_lines(doc, campaign_platforms(ws, arms), settings)
    before = _applied_before(ws, res.as_of)
    history = {name: history_pulled(ws, name) is not None for name in ("meta", "google")}

    def work(p: _Platform) -> None:
        todo = [ln for ln in res.lines if ln.platform == p.name and ln.status == "pending"]
        if progress:
            progress(f"reading {p.name} budgets", None)
        expanded: list[Line] = []
        for ln in todo:
            expanded += p.lines_for(ln)
        gone = {id(t) for t in todo}
        res.lines = [x for x in res.lines if id(x) not in gone] + expanded
        for ln in expanded:
            if ln.status != "pending":
                continue
            key = (ln.platform, ln.level, ln.entity_id)
            if key in before:
                ln.status = "already_applied"
                ln.reason = f"applied for {res.as_of} by {before[key]}"
                continue
            _check_line(ws, p, ln, history[p.name])
        ready = [ln for ln in expanded if ln.status == "would_apply"]
        if live and ready:
            if progress:
                progress(f"applying {len(ready)} {p.name} budget(s)", None)
            p.send(ready)

    problem = _each_platform(res, client, settings, work)
    _record(ws, res, res.lines, when, settings)
    _raise_if_nothing_moved(res, problem)
    if not live and any(ln.status == "would_apply" for ln in res.lines):
        res.notes.append('a dry run: nothing was sent (--yes, or [run] apply = "live", applies)')
    return res


def find_apply(ws: Workspace, target: str) -> tuple[str, dict[str, Any]]:
    """The live apply ``target`` names: an apply id, or a run id (that run's newest live
    apply that changed a budget)."""
    ws.records.execute(APPLIES_DDL)
    rows = ws.records.execute(
        "SELECT apply_id, run_id, as_of, mode, lines FROM budget_applies "
        "WHERE (apply_id = ? OR run_id = ?) AND rollback_of IS NULL ORDER BY started_at DESC",
        [target, target],
    ).fetchall()
    if not rows:
        raise UsageError(
            f"--rollback {target}: no apply or run of that id applied budgets in this workspace"
        )
    live = [r for r in rows if r[3] == "live"]
    if not live:
        raise UsageError(f"--rollback {target}: {rows[0][0]} was a dry run: nothing to roll back")
    changed = [r for r in live if any(ln["status"] == "applied" for ln in json.loads(r[4]))]
    if not changed:
        raise UsageError(f"--rollback {target}: {live[0][0]} changed no budget: nothing to restore")
    row = changed[0]
    done = ws.records.execute(
        "SELECT apply_id FROM budget_applies WHERE rollback_of = ? AND mode = 'live'", [row[0]]
    ).fetchone()
    if done is not None:
        raise UsageError(f"--rollback {target}: {row[0]} was already rolled back by {done[0]}")
    return str(row[0]), {
        "run_id": row[1],
        "as_of": row[2].isoformat() if row[2] else None,
        "lines": json.loads(row[4]),
    }


def rollback(
    ws: Workspace,
    target: str,
    *,
    settings: Settings | None = None,
    live: bool = False,
    client: Client | None = None,
    now: datetime | None = None,
) -> ApplyResult:
    """Restore the budgets a live apply replaced (``target``: its apply id or its run's id).

    Each applied line is read again: a budget that is still the one the apply set goes back to
    the one before; one that changed since is left alone and said so. A dry run unless
    ``live``; recorded like an apply (``rollback_of``).
    """
    settings = settings or load_settings()
    apply_id, rec = find_apply(ws, target)
    when = now or _now()
    res = ApplyResult(
        new_apply_id(when), rec["run_id"], str(rec["as_of"]), "live" if live else "dry-run"
    )
    res.rollback_of = apply_id
    applied = [Line(**ln) for ln in rec["lines"] if ln["status"] == "applied"]
    res.lines = [Line(**{**asdict(old), "status": "pending", "reason": ""}) for old in applied]

    def work(p: _Platform) -> None:
        for old, ln in zip(applied, res.lines, strict=True):
            if ln.platform != p.name:
                continue
            base = Line(
                p.name,
                old.campaign_id,
                old.level,
                old.entity_id,
                budget_ref=old.budget_ref,
                current_spend=old.current_spend,
                recommended=old.recommended,
            )
            base.ratio = 1.0
            now_line = next((x for x in p.lines_for(base) if x.entity_id == old.entity_id), base)
            if now_line.old_units is None:
                ln.refuse(now_line.reason or "the budget could not be read")
                continue
            ln.platform_budget = p.units(now_line.old_units)
            ln.workspace_budget = old.new_budget
            if now_line.old_units != old.new_units:
                ln.refuse(
                    f"the budget is {ln.platform_budget:g} now, the apply set "
                    f"{old.new_budget:g}: someone changed it since; left alone"
                )
                continue
            ln.old_units, ln.new_units = old.new_units, old.old_units
            ln.new_budget, ln.change_pct = old.platform_budget, None
            ln.status = "would_restore"
        ready = [ln for ln in res.lines if ln.platform == p.name and ln.status == "would_restore"]
        if live and ready:
            p.send(ready)

    problem = _each_platform(res, client, settings, work)
    _record(ws, res, res.lines, when, settings)
    _raise_if_nothing_moved(res, problem)
    return res


def apply_in_run(
    ws: Workspace,
    doc: Mapping[str, Any],
    settings: Settings,
    progress: Progress | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``signalloop run`` with ``[run] apply``: this run's allocation applied last (live or a
    dry run); a missing credential or allocation is reported, not raised. ``now`` is the
    clock the changes carry (a replay's). ``status``: ``ok``, ``skipped`` (no allocation:
    no budget to split) or ``error`` (with the ``message`` naming the fix)."""
    if not doc.get("allocation"):
        return {"status": "skipped", "message": "the run made no allocation: nothing to apply"}
    try:
        res = apply(
            ws,
            settings=settings,
            live=settings.run.apply == "live",
            run_doc=doc,
            progress=progress,
            now=now,
        )
    except (UsageError, CredentialError) as exc:
        return {"status": "error", "message": str(exc)}
    return {"status": "ok", **res.to_dict()}
