"""The training frame: one row per touchpoint or lead, with its signals and its label.

:func:`build_frame` turns a workspace into a :class:`TrainingFrame` for one outcome depth.
The joins and window functions are ibis expressions over :meth:`Workspace.table` (they run
wherever the workspace runs); only the finished frame goes to pandas.

Label rules
-----------
A conversion is *tied* to a touchpoint by the contract's attribution rule at touch level: by
``click_id`` to the earliest touchpoint with that click, else by ``user_id`` to the user's last
touchpoint with a campaign at or before the conversion (within the conversion's campaign when
it names one). *Primary* conversions are the campaign's own events (lead, signup, purchase,
...): every kind except the offline funnel imports (:data:`OFFLINE_KINDS` and the funnel stages
after the first). A CRM record is linked to the touch of the user's latest primary conversion
up to an hour after the record began (the lead that created it), else to the user's last
touchpoint before it, as :func:`signalloop.attribution.crm_record_campaigns` does.

* ``conversion`` -- unit: touchpoint with a campaign. Label 1 if a primary conversion is tied
  to it within the horizon (default 7 days).
* ``value`` -- unit: touchpoint. Label 1 if, within the horizon (14 days), a conversion with
  ``value > 0`` that is not a pipeline stage (:data:`PIPELINE_KINDS`) is tied to it, or a CRM
  record linked to it reached ``won``.
* ``sql`` / ``won`` -- unit: lead (one row per CRM record, with the features of the touch it is
  linked to, ``ts`` = when the record began). Label 1 if the record reached ``sql`` or later
  (``won``) in the funnel order within the horizon (30 / 60 days) of its start.

Censoring and the cut-off
-------------------------
Only rows with ``ts < as_of + 1 day`` are read (``as_of`` defaults to the last day with
touchpoints). A unit younger than its horizon at that cut-off could still turn positive: it is
right-censored, left out, and counted in :attr:`TrainingFrame.censored`, never taken as a
negative (``include_censored=True`` keeps them, with ``label = -1``, to be scored). Units in a
stored exclusion window of their campaign are left out first and counted in
:attr:`TrainingFrame.excluded`. Every feature is computed from data strictly before the touch
time (for a lead, its click), so no feature sees the label window.

Large accounts: a sampled frame
-------------------------------
A frame of more mature units than ``max_rows`` (default :data:`MAX_FRAME_ROWS`, or
``[models] max_frame_rows``) is sampled on the backend, before anything is fetched: every
positive while they fit in half the cap, and a uniform sample of the negatives for the rest
(:func:`~signalloop.models.estimator.class_quotas`). A unit is kept when a hash of its id and
``random_state`` falls under its class's rate, so the sample is the same on every run over the
same data. Each kept unit carries a ``weight`` column, its class's units over its class's kept
units, so the weighted frame has the account's positives and negatives: the fits, scores and
drift read the weights and the probabilities stay calibrated to the true base rate.
:attr:`TrainingFrame.sample` says how many units the frame stands for. Censored units kept by
``include_censored`` (the ones to score) are never sampled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import ibis
import numpy as np
import pandas as pd

from signalloop.checks.engine import without_exclusions
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.models.estimator import class_quotas
from signalloop.store import Workspace
from signalloop.ties import first_by, last_by

OUTCOMES: tuple[str, ...] = ("conversion", "sql", "won", "value")
#: Label windows in days, per outcome (``[models] horizon_days`` or ``horizon_days`` override).
DEFAULT_HORIZON_DAYS: dict[str, int] = {"conversion": 7, "value": 14, "sql": 30, "won": 60}
#: Conversion kinds that are offline imports of CRM stages, not a campaign's own event.
OFFLINE_KINDS: tuple[str, ...] = ("mql", "sql", "opportunity", "deal", "won", "lost")
#: Kinds whose value is pipeline or an estimate, not revenue.
PIPELINE_KINDS: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "lost")
#: Cap on the mature units fetched into one frame; larger frames are sampled on the backend
#: (module docstring). Each fit then learns from at most ``ConversionModel.max_rows`` of them
#: and each evaluation scores at most ``backtest.MAX_EVAL_ROWS``: two million rows leave every
#: holdout, test set and training window larger than those, and keep the frame near 1 GiB
#: in pandas where the 1,000-campaign account's 30 million units took more than 16.
MAX_FRAME_ROWS = 2_000_000
#: Resolution of the hash that samples a frame (rates are multiples of its inverse).
_HASH_BUCKETS = 1 << 30
#: A string attribute with more distinct values than this is not used as a feature.
MAX_ATTR_LEVELS = 50
BASE_CATEGORICAL: tuple[str, ...] = (
    "platform",
    "campaign_id",
    "adset_id",
    "creative_id",
    "utm_source",
    "utm_medium",
)
BASE_NUMERIC: tuple[str, ...] = (
    "creative_age_days",
    "hour",
    "weekday",
    "touches_before",
    "hours_since_prev_touch",
    "prior_conversions",
)
_DAY = 86400.0


@dataclass
class TrainingFrame:
    """A model-ready frame: one row per unit, sorted by :attr:`time`.

    Attributes
    ----------
    frame
        The id column, ``ts``, ``label`` and the features (lead frames also carry ``touch_id``).
    target, time
        Names of the 0/1 label column and of the unit's UTC timestamp column.
    features
        Feature columns, in a stable order; :attr:`categorical` lists the ``category`` ones.
    unit, outcome, id_column
        ``"touchpoint"`` / ``"touch_id"`` or ``"lead"`` / ``"record_id"``, and the outcome.
    censored, excluded
        Units left out because their label window was still open at ``as_of``, or because they
        fall in an exclusion window of their campaign.
    window
        The first and last unit time in :attr:`frame`.
    weight
        ``"weight"`` when the frame was sampled (the column of each row's weight), else
        ``None`` (every row weighs one).
    sample
        When sampled: ``units`` and ``positives`` (the mature units the frame stands for),
        ``rows`` (mature rows fetched), ``cap`` and the kept share of each class
        (``rate_positive``, ``rate_negative``); else ``None``.
    """

    frame: pd.DataFrame
    target: str
    time: str
    features: list[str]
    categorical: list[str]
    unit: str
    outcome: str
    id_column: str
    censored: int
    excluded: int
    window: tuple[datetime, datetime]
    weight: str | None = None
    sample: dict[str, Any] | None = None

    def weights(self) -> np.ndarray | None:
        """Each row's weight (``None`` when the frame was not sampled)."""
        if self.weight is None:
            return None
        return self.frame[self.weight].to_numpy(dtype=float)

    @property
    def units(self) -> tuple[int, int]:
        """Mature units and positives the frame stands for (its own, when not sampled)."""
        if self.sample is not None:
            return int(self.sample["units"]), int(self.sample["positives"])
        y = self.frame[self.target]
        return int((y >= 0).sum()), int((y == 1).sum())


def horizon_for(outcome: str, settings: Settings, horizon_days: int | None = None) -> int:
    """The label window in days: ``horizon_days``, else ``[models] horizon_days``, else default.

    >>> horizon_for("sql", Settings()), horizon_for("sql", Settings(), 10)
    (30, 10)
    >>> horizon_for("sql", Settings(models={"horizon_days": {"sql": 21}}))
    21
    """
    days: Any = horizon_days
    if days is None:
        days = settings.models.get("horizon_days", {}).get(outcome)
    if days is None:
        return DEFAULT_HORIZON_DAYS[outcome]
    if not isinstance(days, int) or days < 1:
        raise UsageError(f"horizon_days must be a positive number of days, got {days!r}")
    return int(days)


def build_frame(
    ws: Workspace,
    outcome: str,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    include_censored: bool = False,
    max_rows: int | None = None,
    random_state: int = 0,
) -> TrainingFrame:
    """Build the training frame of ``outcome`` from the workspace.

    Parameters
    ----------
    ws
        The workspace.
    outcome
        One of :data:`OUTCOMES` (see the module docstring for each label rule).
    as_of
        Last day of data to use (default: the last day with touchpoints); later rows are ignored.
    settings
        Funnel order and optional ``[models] horizon_days``; defaults when ``None``.
    horizon_days
        Label window in days, overriding settings and :data:`DEFAULT_HORIZON_DAYS`.
    include_censored
        Keep the right-censored units (label window still open at ``as_of``) in the frame with
        ``label = -1`` (unknown, never a negative); :attr:`TrainingFrame.censored` still counts
        them. This is the set to *score* (e.g. the recent leads to route), never to train on:
        select ``frame.label >= 0`` for training.
    max_rows
        Cap on the mature units fetched: more are sampled on the backend, with weights (see
        the module docstring). Default ``[models] max_frame_rows``, else
        :data:`MAX_FRAME_ROWS`.
    random_state
        Seed of that sample.

    Returns
    -------
    TrainingFrame
        Mature (and with ``include_censored``, censored), non-excluded units sorted by time,
        with counts of those left out or censored.

    Raises
    ------
    UsageError
        Unknown outcome, empty workspace, or no mature units (with ``include_censored``: no
        units at all).
    """
    from signalloop.attribution import hold_expr

    with ExitStack() as held:

        def hold(expr: Any) -> Any:
            kept, release = hold_expr(ws.ibis, expr)
            held.callback(release)
            return kept

        frame: TrainingFrame = _build(
            ws,
            outcome,
            as_of=as_of,
            settings=settings,
            horizon_days=horizon_days,
            include_censored=include_censored,
            max_rows=max_rows,
            random_state=random_state,
            hold=hold,
        )
    return frame


def _build(
    ws: Workspace,
    outcome: str,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    include_censored: bool = False,
    labels_only: bool = False,
    recent_days: int | None = None,
    unit_days: list[date] | None = None,
    exclude: bool = True,
    max_rows: int | None = None,
    random_state: int = 0,
    pool: ClickPool | None = None,
    hold: Callable[[Any], Any] | None = None,
) -> Any:
    """:func:`build_frame`; with ``labels_only`` the units' ibis table (``ts``, ``label``,
    ``_mature``, ``campaign_id``, no features), not fetched.

    ``unit_days`` (with ``labels_only``; sorted) keeps only the units whose ``ts`` falls on
    one of those days, with the labels they have among all units: the rows that cannot tie to
    them (see :func:`_unit_day_rows`) are left out before the ties are worked out.
    ``exclude=False`` keeps the units of exclusion windows. ``pool`` (with ``unit_days``)
    makes the table of the clicks those units' ties need (see :func:`_unit_day_rows`).

    ``recent_days`` (with ``labels_only``, for the ``conversion`` outcome) keeps only the
    units of the last ``recent_days`` days up to the latest mature unit, with the same labels:
    a unit's label comes from the conversions tied to it, and a conversion ties to a touch in
    that window only through its ``click_id`` or, by its user, at or after the window's
    start, so the other conversions are left out before the ties are worked out.

    ``hold(expr)`` (a frame's build) gives ``expr`` computed once on the backend: the
    conversions' ties and the records, which the counts, the sample and the features each
    read (each read would otherwise work them out again from the touchpoints).
    """
    if outcome not in OUTCOMES:
        raise UsageError(f"unknown outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
    settings = settings or Settings()
    horizon = horizon_for(outcome, settings, horizon_days)
    funnel = tuple(s.strip().lower() for s in settings.funnel)
    for need in {"sql": ("sql",), "won": ("won",), "value": ("won",)}.get(outcome, ()):
        if need not in funnel:
            raise UsageError(f"outcome {outcome!r} needs stage {need!r} in the funnel {funnel}")
    if as_of is None:
        last = ws.table("touchpoints").ts.max().execute()
        if last is None or pd.isna(last):
            raise UsageError("no touchpoints in the workspace: ingest touchpoints first")
        as_of = pd.Timestamp(last).date()
    cutoff = datetime.combine(as_of + timedelta(days=1), time())
    cut = ibis.literal(cutoff, type="timestamp")
    tp, conv, crm = (ws.table(k) for k in ("touchpoints", "conversions", "crm"))
    tp, conv, crm = tp.filter(tp.ts < cut), conv.filter(conv.ts < cut), crm.filter(crm.ts < cut)
    spend = ws.table("spend")
    spend = spend.filter(spend.date < as_of + timedelta(days=1))

    clicks = tp.filter(tp.campaign_id.notnull())
    # (the labels alone ask only whether there is one: a scan that stops at the first)
    n_clicks = int((clicks.limit(1) if labels_only else clicks).count().execute())
    if n_clicks == 0:
        raise UsageError(
            f"no touchpoints with a campaign before {as_of + timedelta(days=1)}: "
            "ingest touchpoints first"
        )
    h = horizon * _DAY
    units_from = clicks
    if labels_only and unit_days is not None:
        got = _unit_day_rows(ws, outcome, unit_days, h, clicks, conv, crm, pool, cut=cut)
        units_from, clicks, conv, crm = got
    elif labels_only and recent_days is not None and outcome == "conversion":
        since = _recent_start(ws, clicks, cutoff, h, recent_days)
        if since is not None:
            units_from = clicks.filter(clicks.ts > since)
            conv = conv.filter((conv.ts > since) | conv.click_id.isin(units_from.click_id))
    kind = conv.kind.strip().lower()
    offline = (*OFFLINE_KINDS, *funnel[1:])
    conv = conv.mutate(_kind=kind, _primary=~kind.isin(offline))
    ties = _tie_conversions(conv, clicks)
    if hold is not None:  # read by the counts, the records, the features: worked out once
        ties = hold(ties)
    stage_rank = ibis.cases(
        *[(crm.stage.strip().lower() == s, i + 1) for i, s in enumerate(funnel)], else_=0
    )
    crm = crm.mutate(_rank=stage_rank)
    records = _records(crm, ties, clicks, funnel)
    if hold is not None:
        records = hold(records)
    unit, id_column = (
        ("touchpoint", "touch_id")
        if outcome in ("conversion", "value")
        else (
            "lead",
            "record_id",
        )
    )

    def units_of(touches: Any) -> Any:
        """The non-excluded units over ``touches`` with ``label`` and ``_mature``."""
        if outcome in ("conversion", "value"):
            t_ts = ties.t_ts.epoch_seconds()
            soon = (ties.ts.epoch_seconds() - t_ts) <= h
            if outcome == "conversion":
                pos = ties.filter(ties._primary & ties.touch_id.notnull() & soon).select("touch_id")
            else:
                paid = ties.filter(
                    ties.touch_id.notnull()
                    & (ties.value > 0)
                    & ~ties._kind.isin(PIPELINE_KINDS)
                    & soon
                ).select("touch_id")
                won = records.filter(
                    (records.won_ts.epoch_seconds() - records.t_ts.epoch_seconds()) <= h
                ).select("touch_id")
                pos = paid.union(won)
            pos = pos.distinct().mutate(label=ibis.literal(1))
            units = touches.left_join(pos, touches.touch_id == pos.touch_id).drop("touch_id_right")
        else:
            reached = records.sql_ts if outcome == "sql" else records.won_ts
            rec = records.mutate(
                label=ibis.ifelse(
                    (reached.epoch_seconds() - records.first_ts.epoch_seconds()) <= h, 1, 0
                )
            ).drop("user_id", "t_ts", "sql_ts", "won_ts")
            units = rec.join(touches, "touch_id")
            units = units.mutate(
                days_since_click=(units.first_ts.epoch_seconds() - units.ts.epoch_seconds()) / _DAY,
                ts=units.first_ts,
            ).drop("first_ts")
        units = units.mutate(
            label=units.label.fill_null(0).cast("int64"),
            _mature=units.ts.epoch_seconds() + h <= ibis.literal(cutoff).epoch_seconds(),
        )
        return without_exclusions(ws, units, "campaign_id", units.ts.date()) if exclude else units

    labelled = units_of(units_from.select("touch_id", "ts", "campaign_id"))
    if labels_only:  # the units and labels, none of the features
        return labelled
    # every click is a touch unit; a lead unit is a record linked to a click
    total = n_clicks if unit == "touchpoint" else int(records.count().execute())
    if total == 0:
        raise UsageError(
            f"no leads linked to a click before {as_of + timedelta(days=1)}: "
            "ingest crm, conversions and touchpoints first"
        )
    kept_n, mature_n, positives = _label_counts(labelled)
    censored, excluded = kept_n - mature_n, total - kept_n
    if mature_n == 0 and not (include_censored and kept_n):
        raise UsageError(
            f"no mature {unit}s for outcome {outcome!r} at as_of {as_of}: {censored} are "
            f"younger than the {horizon}-day horizon and {excluded} excluded; "
            "use a shorter horizon or a later as_of"
        )
    attrs = _attr_plan_of(ws, clicks)
    cap = max_rows if max_rows is not None else settings.models.get("max_frame_rows")
    cap = MAX_FRAME_ROWS if cap is None else cap
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 2:
        raise UsageError(f"max_frame_rows must be a number of rows of at least 2, got {cap!r}")
    rates: tuple[float, float] | None = None
    if mature_n > cap:
        k_pos, k_neg = class_quotas(positives, mature_n - positives, cap)
        rates = (k_pos / max(positives, 1), k_neg / max(mature_n - positives, 1))
    users = None
    if rates is not None:
        # only the users of the units the sample keeps: every feature window is per user, so
        # their own rows are all it needs (see _touch_features), and a sample of 2M units of
        # 30M leaves most users out. Their labels are the frame's, so the same units are kept.
        chosen = labelled.filter(
            (~labelled._mature if include_censored else ibis.literal(False))
            | (labelled._mature & _hash_sample(labelled, id_column, random_state, rates))
        )
        users = clicks.filter(clicks.touch_id.isin(chosen.touch_id)).user_id
    elif unit == "lead":  # only the users whose clicks the records link to
        users = clicks.filter(clicks.touch_id.isin(records.touch_id)).user_id
    kept = units_of(_touch_features(tp, clicks, ties, crm, spend, attrs, users))
    if not include_censored:
        kept = kept.filter(kept._mature)
    sample: dict[str, Any] | None = None
    if rates is not None:
        kept = kept.filter(~kept._mature | _hash_sample(kept, id_column, random_state, rates))
        sample = {
            "units": mature_n,
            "positives": positives,
            "cap": cap,
            "rate_positive": round(rates[0], 6),
            "rate_negative": round(rates[1], 6),
        }
    df = kept.to_pandas()
    mature = df["_mature"].astype(bool)
    if sample is not None:  # each class's units over its kept rows
        is_pos = df["label"].to_numpy() == 1
        got_pos = int((mature & is_pos).sum())
        got_neg = int((mature & ~is_pos).sum())
        sample["rows"] = got_pos + got_neg
        w_pos = positives / max(got_pos, 1)
        w_neg = (mature_n - positives) / max(got_neg, 1)
        df["weight"] = np.where(mature, np.where(is_pos, w_pos, w_neg), 1.0)
    if include_censored:
        df = df.assign(label=df["label"].where(mature, -1))
    df = df.drop(columns="_mature")
    return _finish(df, outcome, unit, id_column, funnel, attrs, censored, excluded, sample=sample)


def _label_counts(units: Any) -> tuple[int, int, int]:
    """Units, mature units and mature positives of a labelled units table (one query)."""
    mature = units._mature
    row = (
        units.aggregate(
            n=units.count(),
            mature=ibis.ifelse(mature, 1, 0).sum(),
            pos=ibis.ifelse(mature & (units.label == 1), 1, 0).sum(),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    return int(row["n"] or 0), int(row["mature"] or 0), int(row["pos"] or 0)


def _hash_sample(t: Any, id_column: str, seed: int, rates: tuple[float, float]) -> Any:
    """Whether a mature unit of ``t`` is in the sample: a hash of its id and ``seed``, mapped
    to [0, 1), under the rate of its class (positive, negative). The same ids and seed give
    the same sample on every run; the hash is the backend's own."""
    h = (t[id_column].cast("string") + f"|{seed}").hash()
    u = ((h % _HASH_BUCKETS) + _HASH_BUCKETS) % _HASH_BUCKETS
    limit = ibis.ifelse(t.label == 1, int(rates[0] * _HASH_BUCKETS), int(rates[1] * _HASH_BUCKETS))
    return u < limit


#: ``pool(clicks, users, click_ids)``: a table of the rows of ``clicks`` whose user is among
#: ``users`` or whose click id is among ``click_ids`` (two ibis columns), with the columns
#: ``touch_id``, ``ts``, ``user_id``, ``click_id`` and ``campaign_id``.
ClickPool = Callable[[Any, Any, Any], Any]


def _unit_day_rows(
    ws: Workspace,
    outcome: str,
    days: list[date],
    h: float,
    clicks: Any,
    conv: Any,
    crm: Any,
    make_pool: ClickPool | None = None,
    *,
    cut: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """The units of ``days`` and the clicks, conversions and CRM rows they need, exactly:
    ``(units, clicks, conversions, crm)``.

    A touch unit is one of the clicks of those days. A conversion ties to it by its
    ``click_id`` or, by its user, at or after it; it labels it within ``h`` seconds after it
    (or before it, by click id), so a conversion neither from those days on nor naming one of
    their click ids, or later than ``h`` after the last day, cannot. A lead unit is a record
    begun on one of the days (its first row's time); it links to its user's last primary
    conversion up to an hour after that, or else to its user's last click before it, so only
    its users' conversions up to an hour after the last day matter (a conversion with no user
    by the user of the click it names). Ties are worked out per conversion, so leaving other
    conversions out changes none, and a conversion's tie needs only the clicks of its user
    and those carrying its click id: those clicks (and the records' users') are read from
    the whole history once, into a temporary table the rest works on (for the conversion
    outcome, where the stored attribution says which click ids name an earlier click, only
    the clicks from the first day on: :func:`_named_clicks_from`). The ``value`` outcome
    (a record's link may run through any earlier conversion) keeps every conversion up to
    an hour after its label window, every click, and the records of the units' users.

    ``make_pool`` builds that table (default: from ``clicks``, into a temporary table); one
    that reads it from a table already holding those rows (several outcomes' clicks read in
    one pass: :mod:`signalloop.models.recent`) gives the same rows. ``cut``: the cutoff the
    given tables are cut at (the conversion outcome reads its conversions from the stored
    attribution, cut there too).
    """
    lo = ibis.literal(datetime.combine(days[0], time()), type="timestamp")
    hi = ibis.literal(datetime.combine(days[-1] + timedelta(days=1), time()), type="timestamp")
    soon = hi + ibis.interval(hours=1)

    def on_days(ts: Any) -> Any:
        return (ts >= lo) & (ts < hi) & ts.date().isin(days)

    def pool(users: Any, ids: Any, source: Any = clicks) -> Any:
        if make_pool is not None:
            return make_pool(source, users, ids)
        rows = pool_rows(source, users, ids)
        return ws.temp_table(f"_unit_day_clicks_{outcome}", rows)

    if outcome in ("conversion", "value"):
        units = clicks.filter(on_days(clicks.ts))
        late = hi + ibis.interval(seconds=int(h))
        if outcome == "value":
            conv = conv.filter(conv.ts <= late + ibis.interval(hours=1))
            return units, clicks, conv, crm.filter(crm.user_id.isin(units.user_id))
        later = None if cut is None else _named_clicks_from(ws, units, cut, lo, hi, late)
        if later is not None:  # only the clicks from the first day on: a scan of those days
            return (
                units,
                pool(later.user_id, later.click_id, clicks.filter(clicks.ts >= lo)),
                later,
                crm,
            )
        conv = conv.filter(
            (conv.ts <= late) & ((conv.ts >= lo) | conv.click_id.isin(units.click_id))
        )
        return units, pool(conv.user_id, conv.click_id), conv, crm
    # a record whose first row is on the days has a row on them: only those records' rows
    # are grouped for their first, not every record's of the history
    some = crm.filter(crm.record_id.isin(crm.filter(on_days(crm.ts)).record_id))
    first = some.group_by(f_rec=some.record_id).aggregate(f_ts=some.ts.min())
    crm = crm.filter(crm.record_id.isin(first.filter(on_days(first.f_ts)).f_rec))
    users = crm.user_id
    maybe = conv.filter((conv.ts <= soon) & (conv.user_id.isin(users) | conv.user_id.isnull()))
    mine = pool(users, maybe.click_id)
    theirs = mine.filter(mine.user_id.isin(users)).click_id
    conv = conv.filter(
        (conv.ts <= soon)
        & (conv.user_id.isin(users) | (conv.user_id.isnull() & conv.click_id.isin(theirs)))
    )
    return mine, mine, conv, crm


def _named_clicks_from(ws: Workspace, units: Any, cut: Any, lo: Any, hi: Any, late: Any) -> Any:
    """The conversions that can label the click ``units`` (from ``lo`` to before ``hi``)
    within their window (up to ``late``), without those whose click id names a click from
    before ``lo`` (its first touchpoint with a campaign, ``link_click_first`` in the stored
    attribution), read from the stored attribution (cut at ``cut``); ``None`` where it
    cannot say (:func:`~signalloop.attribution.refresh_attribution` answers ``False``:
    another backend, ids not unique, a read-only workspace behind).

    A conversion whose click id names an earlier click ties to that click, so it labels no
    unit from ``lo`` on. Every other one ties to a unit from ``lo`` on through a click from
    ``lo`` on: by its id, whose first click is then from ``lo`` on, or else to its user's last
    click before it, which is a unit's only when no later click of the user comes between.
    So the clicks from ``lo`` on are all their ties need, not the user's whole history: the
    conversion outcome's units of a few days read a few days of clicks, zone maps skipping
    the rest.

    Which conversions: those from ``lo`` to ``late``, and those before ``lo`` that name a
    unit's click. A click id among the units' has its first touchpoint with a campaign
    before ``hi``, so the second kind is looked for only among the conversions whose
    ``link_click_first`` lies from ``lo`` to before ``hi``: a few rows, where testing every
    conversion's click id against the units' (and every conversion id against the earlier
    clicks') read the whole history's conversions, twice the work behind twice the history.
    """
    from signalloop.attribution import ATTRIBUTION_TABLE, refresh_attribution

    if not refresh_attribution(ws):
        return None
    a = ws.table(ATTRIBUTION_TABLE)
    first = a.link_click_first
    since = a.filter(
        (a.ts >= lo) & (a.ts <= late) & (a.ts < cut) & (first.isnull() | (first >= lo))
    )
    # (first >= lo & first < hi: what naming a unit's click implies, tested before it is)
    before = a.filter((a.ts < lo) & (first >= lo) & (first < hi) & a.click_id.isin(units.click_id))
    cols = ws.table("conversions").columns
    return since.select(*cols).union(before.select(*cols))


def pool_rows(clicks: Any, users: Any, ids: Any) -> Any:
    """The rows of ``clicks`` of a user among ``users`` or a click id among ``ids``, with the
    columns a :data:`ClickPool` table has."""
    rows = clicks.filter(clicks.user_id.isin(users) | clicks.click_id.isin(ids))
    return rows.select("touch_id", "ts", "user_id", "click_id", "campaign_id")


def _recent_start(ws: Workspace, clicks: Any, cutoff: datetime, h: float, days: int) -> Any:
    """The start of the last ``days`` days of mature, non-excluded clicks (``None``: none).

    Mature as :func:`_build` has it (``h`` seconds of label window before ``cutoff``). The
    latest such click is looked for among the last ``2 * days`` days before that first
    (exclusion windows rarely cover them all), then in the whole history.
    """
    edge = cutoff - timedelta(seconds=h)
    base = clicks.filter(clicks.ts.epoch_seconds() + h <= ibis.literal(cutoff).epoch_seconds())
    for lo in (edge - timedelta(days=2 * days), None):
        t = base if lo is None else base.filter(base.ts > ibis.literal(lo, type="timestamp"))
        t = t.select("ts", "campaign_id")
        end = without_exclusions(ws, t, "campaign_id", t.ts.date()).ts.max().execute()
        if end is not None and not pd.isna(end):
            return pd.Timestamp(end).to_pydatetime() - timedelta(days=days)
    return None


def _tie_conversions(conv: Any, clicks: Any) -> Any:
    """Every conversion with the ``touch_id``, ``t_ts`` and user of the touch it is tied to."""
    # only the clicks and users the conversions name (semi-joins: a few percent of the
    # touchpoints, so the grouping and the range join below stay small)
    named = clicks.filter(clicks.click_id.notnull() & clicks.click_id.isin(conv.click_id))
    first = named.group_by(k_click=named.click_id)
    first = first.aggregate(by_click=first_by(named.touch_id, named.ts))
    c = conv.select(
        "conversion_id", "ts", "user_id", "click_id", "campaign_id", "value", "_kind", "_primary"
    )
    users = clicks.filter(clicks.user_id.isin(conv.user_id))
    u = users.select(
        u_touch=users.touch_id, u_user=users.user_id, u_ts=users.ts, u_camp=users.campaign_id
    )
    last = (
        c.join(
            u,
            (c.user_id == u.u_user)
            & (u.u_ts <= c.ts)
            & (c.campaign_id.isnull() | (c.campaign_id == u.u_camp)),
        )
        .group_by(l_conv=c.conversion_id)
        .aggregate(by_user=last_by(u.u_touch, u.u_ts))
    )
    j = c.left_join(first, c.click_id == first.k_click).left_join(
        last, c.conversion_id == last.l_conv
    )
    j = j.mutate(touch_id=ibis.coalesce(j.by_click, j.by_user))
    t = clicks.select(t_touch=clicks.touch_id, t_ts=clicks.ts, t_user=clicks.user_id)
    j = j.left_join(t, j.touch_id == t.t_touch)
    cols = ("conversion_id", "ts", "click_id", "value", "_kind", "_primary", "touch_id", "t_ts")
    return j.select(*cols, user_id=ibis.coalesce(j.user_id, j.t_user))


def _records(crm: Any, ties: Any, clicks: Any, funnel: tuple[str, ...]) -> Any:
    """One row per CRM record, linked to its click: start, first owner/source, stage times."""
    sql_rank, won_rank = funnel.index("sql") + 1, funnel.index("won") + 1
    rec = crm.group_by("record_id").aggregate(
        user_id=crm.user_id.arbitrary(),
        first_ts=crm.ts.min(),
        crm_source=first_by(crm.source, crm.ts),
        crm_owner=first_by(crm.owner, crm.ts),
        sql_ts=crm.ts.min(where=crm._rank >= sql_rank),
        won_ts=crm.ts.min(where=crm._rank >= won_rank),
    )
    leads = ties.filter(ties._primary & ties.touch_id.notnull() & ties.user_id.notnull())
    leads = leads.select(c_user=leads.user_id, c_ts=leads.ts, c_touch=leads.touch_id)
    by_lead = (
        rec.join(
            leads,
            (rec.user_id == leads.c_user) & (leads.c_ts <= rec.first_ts + ibis.interval(hours=1)),
        )
        .group_by(b_rec=rec.record_id)
        .aggregate(lead_touch=last_by(leads.c_touch, leads.c_ts))
    )
    t = clicks.select(t_user=clicks.user_id, t_ts=clicks.ts, t_touch=clicks.touch_id)
    by_touch = (
        rec.join(t, (rec.user_id == t.t_user) & (t.t_ts <= rec.first_ts))
        .group_by(b_rec=rec.record_id)
        .aggregate(last_touch=last_by(t.t_touch, t.t_ts))
    )
    j = rec.left_join(by_lead, rec.record_id == by_lead.b_rec).left_join(
        by_touch, rec.record_id == by_touch.b_rec
    )
    j = j.mutate(touch_id=ibis.coalesce(j.lead_touch, j.last_touch))
    j = j.filter(j.touch_id.notnull())
    j = j.join(t.select("t_touch", "t_ts"), j.touch_id == t.t_touch)
    cols = ("record_id", "user_id", "touch_id", "t_ts", "first_ts", "sql_ts", "won_ts")
    return j.select(*cols, "crm_source", "crm_owner")


def _touch_features(
    tp: Any,
    clicks: Any,
    ties: Any,
    crm: Any,
    spend: Any,
    attrs: list[tuple[str, str, str]],
    users: Any = None,
) -> Any:
    """Touchpoints with a campaign and every feature, each from data before the touch.

    ``users`` (a column expression of user ids) limits the result to those users' clicks,
    exactly: every window here is per user, so their own rows are all those windows need
    (only a creative's first appearance looks across users, and it still reads every row). A
    lead frame passes the users of the clicks its records link to, a few percent of an
    account's touchpoints.
    """
    seen = _creative_first_seen(tp, spend)
    if users is not None:
        tp = tp.filter(tp.user_id.isin(users))
        clicks = clicks.filter(clicks.user_id.isin(users))
        ties = ties.filter(ties.user_id.isin(users))
        crm = crm.filter(crm.user_id.isin(users))
    w = ibis.window(group_by=tp.user_id, order_by=[tp.ts, tp.touch_id])
    prev = tp.ts.lag().over(w)
    beh = tp.select(
        b_touch=tp.touch_id,
        touches_before=ibis.rank().over(ibis.window(group_by=tp.user_id, order_by=tp.ts)),
        hours_since_prev_touch=(tp.ts.epoch_seconds() - prev.epoch_seconds()) / 3600.0,
    )
    null_id = ibis.null().cast("string")
    zero, one = ibis.literal(0, type="int64"), ibis.literal(1, type="int64")
    ev_t = clicks.select(
        e_user=clicks.user_id,
        e_ts=clicks.ts,
        e_touch=clicks.touch_id,
        _ord=zero,
        _conv=zero,
        _rank=zero,
    )
    cv = ties.filter(ties._primary & ties.user_id.notnull())
    ev_c = cv.select(
        e_user=cv.user_id, e_ts=cv.ts, e_touch=null_id, _ord=one, _conv=one, _rank=zero
    )
    cr = crm.filter(crm.user_id.notnull())
    ev_r = cr.select(
        e_user=cr.user_id,
        e_ts=cr.ts,
        e_touch=null_id,
        _ord=one,
        _conv=zero,
        _rank=cr._rank.cast("int64"),
    )
    ev = ev_t.union(ev_c).union(ev_r)
    ew = ibis.window(group_by=ev.e_user, order_by=[ev.e_ts, ev._ord], rows=(None, 0))
    hist = ev.mutate(prior_conversions=ev._conv.sum().over(ew), stage_code=ev._rank.max().over(ew))
    hist = hist.filter(hist._ord == 0).select("e_touch", "prior_conversions", "stage_code")

    c = clicks
    base = c.select(
        "touch_id",
        "user_id",
        "ts",
        "platform",
        "campaign_id",
        "adset_id",
        "creative_id",
        utm_source=c.utm_source.strip().lower(),
        utm_medium=c.utm_medium.strip().lower(),
        hour=c.ts.hour().cast("int64"),
        weekday=c.ts.day_of_week.index().cast("int64"),
        **{name: expr for name, expr in _attr_exprs(c, attrs)},
    )
    j = base.left_join(beh, base.touch_id == beh.b_touch)
    j = j.left_join(hist, j.touch_id == hist.e_touch)
    j = j.left_join(seen, j.creative_id == seen.k_cr)
    return j.mutate(
        creative_age_days=(j.ts.epoch_seconds() - j.first.epoch_seconds()) / _DAY,
        touches_before=j.touches_before.cast("int64"),
        prior_conversions=j.prior_conversions.fill_null(0).cast("int64"),
        stage_code=j.stage_code.fill_null(0).cast("int64"),
    ).drop("b_touch", "e_touch", "k_cr", "first", "user_id")


def _creative_first_seen(tp: Any, spend: Any) -> Any:
    """``k_cr``, ``first``: each creative's first touch or spend day, over every row."""
    seen_t = tp.filter(tp.creative_id.notnull()).group_by(k_cr=tp.creative_id)
    seen_t = seen_t.aggregate(first=tp.ts.min().cast("timestamp"))
    seen_s = spend.filter(spend.creative_id.notnull()).group_by(k_cr=spend.creative_id)
    seen_s = seen_s.aggregate(first=spend.date.min().cast("timestamp"))
    seen = seen_t.union(seen_s)
    return seen.group_by("k_cr").aggregate(first=seen.first.min())


def _json_get(t: Any, key: str) -> Any:
    """The JSON value of ``attrs[key]`` (on DuckDB a map lookup when the key would break a
    JSON path; PostgreSQL's ``->`` takes any key)."""
    simple = re.fullmatch(r"[\w\- ]+", key) or ibis.get_backend(t).name != "duckdb"
    return t.attrs[key] if simple else t.attrs.map[key]


def _attr_keys(t: Any) -> list[str]:
    """The distinct keys of ``t.attrs`` (non-null), sorted."""
    backend = ibis.get_backend(t)
    if backend.name == "duckdb":
        keys = t.select(k=t.attrs.map.keys().unnest()).distinct()
    else:  # ibis has no portable JSON-keys operation: the dialect's own, over ibis's SQL
        sql = backend.compile(t.select("attrs"))
        if backend.name == "pyspark":  # JSON is text there
            each = "explode(json_object_keys(CAST(a.attrs AS STRING)))"
        else:
            each = "jsonb_object_keys(CAST(a.attrs AS JSONB))"
        keys = backend.sql(f"SELECT DISTINCT {each} AS k FROM ({sql}) AS a")
    return sorted(str(k) for k in keys.to_pyarrow().column("k").to_pylist() if k is not None)


def _attr_plan_of(ws: Workspace, t: Any) -> list[tuple[str, str, str]]:
    """:func:`_attr_plan` of ``t`` (touchpoints of ``ws``), remembered per workspace for the
    same expression and the same touchpoint rows (count and last ingest): a run's models
    build their frames over the same clicks, and each plan reads every click's attributes."""
    tp = ws.table("touchpoints")
    state = tp.aggregate(n=tp.count(), hi=tp._ingest_id.max()).to_pyarrow().to_pylist()[0]
    key = (t.op(), int(state["n"] or 0), state["hi"])
    memo: dict[Any, list[tuple[str, str, str]]] = getattr(ws, "_attr_plans", {})
    if key not in memo:
        memo = {key: _attr_plan(t)}  # only the latest: a later cutoff or ingest replaces it
        ws._attr_plans = memo  # type: ignore[attr-defined]
    return list(memo[key])


def _attr_plan(t: Any) -> list[tuple[str, str, str]]:
    """``(key, feature name, "category" | "number")`` for each usable ``attrs`` key of ``t``.

    Worked out over the distinct ``attrs`` documents, each weighted by its rows: the same
    counts as over every row (two documents that differ only in spacing or key order give the
    same values, so the distinct values are the same too), with each document parsed once
    instead of once per row and key (a few hundred documents for tens of millions of clicks).
    """
    names, row = _attr_stats(t)
    plan: list[tuple[str, str, str]] = []
    used: set[str] = set()
    for i, key in enumerate(names):
        n, x, d = (int(row[f"{p}{i}"] or 0) for p in "nxd")
        name = "attr_" + (re.sub(r"\W+", "_", key.strip().lower()).strip("_") or str(i))
        if n == 0 or name in used or (x < n and d > MAX_ATTR_LEVELS):
            continue
        used.add(name)
        plan.append((key, name, "number" if x == n else "category"))
    return plan


def _attr_stats(t: Any) -> tuple[list[str], dict[str, Any]]:
    """The ``attrs`` keys of ``t`` and, for the ``i``-th, ``n{i}`` rows with a value, ``x{i}``
    rows with a number, ``d{i}`` distinct values (see :func:`_attr_plan`)."""
    with_attrs = t.filter(t.attrs.notnull())
    docs = with_attrs.group_by(_doc=with_attrs.attrs.cast("string")).aggregate(
        _w=with_attrs.count()
    )
    docs = docs.select(attrs=docs._doc.cast("json"), _w=docs._w)
    names = _attr_keys(docs)
    if not names:
        return [], {}
    stats: dict[str, Any] = {}
    for i, key in enumerate(names):
        text, num = _attr_values(docs, key)
        stats[f"n{i}"] = ibis.ifelse(text.notnull(), docs._w, 0).sum()
        stats[f"x{i}"] = ibis.ifelse(num.notnull(), docs._w, 0).sum()
        stats[f"d{i}"] = text.nunique()
    return names, docs.aggregate(**stats).to_pyarrow().to_pylist()[0]


def _attr_values(t: Any, key: str) -> tuple[Any, Any]:
    """``attrs[key]`` as text and as a number (a number also when written as a string)."""
    backend = ibis.get_backend(t).name
    if backend == "pyspark":
        text = spark_json_text(t, key)
        return text, _guarded_number(text.strip())
    v = _json_get(t, key)
    text = ibis.coalesce(v.str, v.float.cast("string"), v.bool.cast("string"))
    s = v.str.strip()
    # PostgreSQL's "try_cast" is a cast that fails the query on "25-34": test first there
    parsed = s.try_cast("float64") if backend == "duckdb" else _guarded_number(s)
    return text, ibis.coalesce(v.float, parsed)


def spark_json_text(t: Any, key: str) -> Any:
    """``t.attrs[key]`` on PySpark, where JSON is text: Spark's ``get_json_object``, every
    value as text (null when absent)."""
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    return _get_json_object(t.attrs.cast("string"), f"$['{quoted}']")


def _guarded_number(s: Any) -> Any:
    """``s`` as a float when it is written as a number, else null (never a failed cast)."""
    number = s.re_search(r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$")
    return ibis.ifelse(number, s, ibis.null("string")).cast("float64")


@ibis.udf.scalar.builtin(name="get_json_object")  # type: ignore[untyped-decorator]
def _get_json_object(json: str, path: str) -> str:  # type: ignore[empty-body]
    """Spark SQL's ``get_json_object``: the value at ``path`` as text (null when absent)."""


def _attr_exprs(t: Any, plan: list[tuple[str, str, str]]) -> list[tuple[str, Any]]:
    out = []
    for key, name, how in plan:
        text, num = _attr_values(t, key)
        out.append((name, num if how == "number" else text))
    return out


def _finish(
    df: pd.DataFrame,
    outcome: str,
    unit: str,
    id_column: str,
    funnel: tuple[str, ...],
    attrs: list[tuple[str, str, str]],
    censored: int,
    excluded: int,
    sample: dict[str, Any] | None = None,
) -> TrainingFrame:
    """Order, type and describe the pulled frame."""
    stages = ["none", *funnel]
    codes = df.pop("stage_code").to_numpy(dtype="int64")
    df["crm_stage_before"] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(stages))
    categorical = [*BASE_CATEGORICAL, "crm_stage_before"]
    numeric = list(BASE_NUMERIC)
    lead_extra: list[str] = []
    if unit == "lead":
        numeric.append("days_since_click")
        lead_extra = [c for c in ("crm_source", "crm_owner") if df[c].notna().any()]
        df = df.drop(columns=[c for c in ("crm_source", "crm_owner") if c not in lead_extra])
    categorical += lead_extra
    attr_cat = [name for _, name, how in attrs if how == "category"]
    attr_num = [name for _, name, how in attrs if how == "number"]
    categorical += attr_cat
    for col in categorical:
        if col != "crm_stage_before":
            df[col] = df[col].astype("category")
    counts = ("hour", "weekday", "touches_before", "prior_conversions")
    for col in [*numeric, *attr_num]:
        df[col] = pd.to_numeric(df[col]).astype("int64" if col in counts else "float64")
    features = [*BASE_CATEGORICAL, *numeric, "crm_stage_before", *lead_extra]
    features += [name for _, name, _ in attrs]
    df["ts"] = pd.to_datetime(df["ts"]).dt.tz_localize("UTC")
    df["label"] = df["label"].astype("int64")
    ids = [id_column, "touch_id"] if unit == "lead" else [id_column]
    df = df.sort_values(["ts", id_column], kind="stable").reset_index(drop=True)
    weight = ["weight"] if sample is not None else []
    df = df[[*ids, "ts", "label", *weight, *features]]
    first, last = df["ts"].iloc[0].to_pydatetime(), df["ts"].iloc[-1].to_pydatetime()
    return TrainingFrame(
        frame=df,
        target="label",
        time="ts",
        features=features,
        categorical=[c for c in features if c in categorical],
        unit=unit,
        outcome=outcome,
        id_column=id_column,
        censored=censored,
        excluded=excluded,
        window=(first, last),
        weight="weight" if sample is not None else None,
        sample=sample,
    )
