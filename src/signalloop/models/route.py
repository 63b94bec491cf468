"""Lead routing: a conversion probability per recent lead, with CRM-stage guardrails.

"A B2B demand team treated Meta lead quality as a probability score instead of a binary
pass/fail and improved sales acceptance by adding CRM-stage guardrails before routing."
:func:`route_leads` does that for the leads whose outcome is not known yet: the CRM records
that :func:`~signalloop.models.features.build_frame` leaves out as right-censored (kept here
with ``include_censored=True``), created on or after ``since``.

Routes
------
* ``sales`` -- ``probability >= threshold`` and every guardrail passes;
* ``review`` -- the probability clears the threshold but a guardrail fails, or the lead cannot
  be scored at all (a record without ``user_id`` links to no click, so it has no features:
  ``probability`` is ``None``);
* ``nurture`` -- below the threshold (its failed guardrails are still listed).

Guardrails (reason codes)
-------------------------
* ``missing_field`` -- a required CRM field (``user_id`` by default; add ``owner`` with
  ``required=("user_id", "owner")``) is empty on every row of the record.
* ``duplicate`` -- another CRM record of the same user began within the previous
  :data:`DUPLICATE_DAYS` days, or the conversion that created the lead (the user's latest
  primary conversion up to an hour after the record began, the rule of the lead frame) was
  repeated under its id: it is in the ``duplicates`` table the ``duplicates`` check reads.
* ``stage_regression`` -- the record's stage history went backwards or was overwritten (two
  stages at the same time), in the funnel order of ``settings.funnel``: the per-record form
  of the ``stage_regression`` check's expression.
* ``already_progressed`` -- the record already reached ``sql`` or a later stage: sales has it.

Default threshold
-----------------
``threshold=None`` routes to sales the leads at least :data:`LIFT` (2) times as likely as the
typical lead to reach the outcome: ``2 x base_rate``, where the base rate is the outcome rate
among the mature leads of the same frame (the rows a model is trained on). When doubling is
impossible (base rate above 1/3) it is halfway from the base rate to certainty,
``(1 + base_rate) / 2``; with no mature leads it is :data:`FALLBACK_THRESHOLD`. On the
simulator (lead to sql about 25%) this is about 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import ibis
import numpy as np
import pandas as pd

from signalloop.checks import core
from signalloop.config import Settings
from signalloop.contract import KINDS
from signalloop.errors import UsageError
from signalloop.models.features import (
    OFFLINE_KINDS,
    build_frame,
    horizon_for,
)
from signalloop.store import Workspace
from signalloop.ties import last_by

ROUTES: tuple[str, ...] = ("sales", "review", "nurture")
REASONS: tuple[str, ...] = ("missing_field", "duplicate", "stage_regression", "already_progressed")
#: Sales gets leads at least this many times as likely as the base rate.
LIFT = 2.0
#: Threshold when no mature lead gives a base rate.
FALLBACK_THRESHOLD = 0.5
#: Another record of the same user this recent makes a lead a duplicate.
DUPLICATE_DAYS = 30
#: Default ``since``: leads created in the last this many days up to and including ``as_of``.
RECENT_DAYS = 7


def default_threshold(base_rate: float | None) -> float:
    """The default routing threshold for an outcome base rate (see the module docstring).

    >>> default_threshold(0.25), default_threshold(0.6), default_threshold(None)
    (0.5, 0.8, 0.5)
    """
    if base_rate is None or not np.isfinite(base_rate):
        return FALLBACK_THRESHOLD
    return float(min(LIFT * base_rate, (1 + base_rate) / 2))


def stage_flags(crm: Any, funnel: Sequence[str]) -> Any:
    """Per CRM record, how often its stage went backwards or was overwritten.

    The ``stage_regression`` check's rule (:func:`signalloop.checks.core.stage_flags`) per
    record, on stages trimmed and lower-cased, in the order of ``funnel``.

    Parameters
    ----------
    crm
        An ibis table with ``record_id``, ``stage`` and ``ts``.
    funnel
        The ordered funnel stages.

    Returns
    -------
    ibis table
        ``(record_id, backwards, overwritten)``, one row per record with funnel stages.
    """
    t = crm.mutate(stage=crm.stage.strip().lower())
    flags = core.stage_flags(t, "record_id", "stage", "ts", core.funnel_ranks(funnel))
    return flags.drop("last_bad")


def _record_facts(
    ws: Workspace, cutoff: datetime, funnel: tuple[str, ...], required: Sequence[str]
) -> pd.DataFrame:
    """Per CRM record up to the cut-off: start, user, stage facts and every guardrail input."""
    cut = ibis.literal(cutoff, type="timestamp")
    crm = ws.table("crm")
    crm = crm.filter(crm.ts < cut)
    stage = crm.stage.strip().lower()
    rank = ibis.cases(*[(stage == s, i + 1) for i, s in enumerate(funnel)], else_=0)
    sql_rank = funnel.index("sql") + 1

    def present(col: str) -> Any:
        v = crm[col].cast("string").strip()
        return (v.notnull() & (v != "")).any()

    user = crm.user_id.strip()
    rec = crm.group_by("record_id").aggregate(
        user_id=ibis.ifelse(user == "", ibis.null().cast("string"), user).max(),
        first_ts=crm.ts.min(),
        top_rank=rank.max(),
        progressed=(rank >= sql_rank).any(),
        **{f"has_{c}": present(c) for c in required},
    )
    flags = stage_flags(crm, funnel)
    rec = rec.left_join(flags, rec.record_id == flags.record_id).drop("record_id_right")
    # another record of the same user that began in the previous DUPLICATE_DAYS days
    o = rec.select(o_rec=rec.record_id, o_user=rec.user_id, o_ts=rec.first_ts)
    before = rec.join(
        o,
        (rec.user_id == o.o_user)
        & (o.o_rec != rec.record_id)
        & (o.o_ts >= rec.first_ts - ibis.interval(days=DUPLICATE_DAYS))
        & ((o.o_ts < rec.first_ts) | ((o.o_ts == rec.first_ts) & (o.o_rec < rec.record_id))),
    )
    earlier = before.group_by(e_rec=before.record_id).aggregate(earlier=before.o_rec.min())
    # the conversion that created the lead, and whether ingest folded copies of it
    conv = ws.table("conversions")
    conv = conv.filter((conv.ts < cut) & conv.user_id.notnull())
    offline = (*OFFLINE_KINDS, *funnel[1:])
    conv = conv.filter(~conv.kind.strip().lower().isin(offline))
    c = conv.select(c_id=conv.conversion_id, c_user=conv.user_id, c_ts=conv.ts)
    lead = rec.join(
        c, (rec.user_id == c.c_user) & (c.c_ts <= rec.first_ts + ibis.interval(hours=1))
    )
    lead = lead.group_by(l_rec=lead.record_id).aggregate(
        conversion_id=last_by(lead.c_id, lead.c_ts)
    )
    dup = ws.table("duplicates")
    dup = dup.filter(dup.kind == "conversions")
    dup = dup.group_by(d_key=dup.key).aggregate(copies=dup.copies.sum())
    j = rec.left_join(earlier, rec.record_id == earlier.e_rec)
    j = j.left_join(lead, j.record_id == lead.l_rec)
    j = j.left_join(dup, j.conversion_id == dup.d_key)
    df = j.drop("e_rec", "l_rec", "d_key").to_pandas()
    df["first_ts"] = pd.to_datetime(df["first_ts"])
    out: pd.DataFrame = df.set_index("record_id")
    return out


def _reasons(r: Any, required: Sequence[str], funnel: tuple[str, ...]) -> list[dict[str, str]]:
    """The failed guardrails of one record (a row of :func:`_record_facts`)."""
    out: list[dict[str, str]] = []
    for col in required:
        if not bool(r[f"has_{col}"]):
            out.append({"code": "missing_field", "message": f"the CRM record has no {col}"})
    if isinstance(r["earlier"], str):
        out.append(
            {
                "code": "duplicate",
                "message": f"the same user has CRM record {r['earlier']} from the previous "
                f"{DUPLICATE_DAYS} days",
            }
        )
    copies = r["copies"]
    if copies is not None and not pd.isna(copies) and copies > 0:
        out.append(
            {
                "code": "duplicate",
                "message": f"the lead's conversion {r['conversion_id']} arrived "
                f"{int(copies) + 1} times under one id",
            }
        )
    back = 0 if pd.isna(r["backwards"]) else int(r["backwards"])
    over = 0 if pd.isna(r["overwritten"]) else int(r["overwritten"])
    if back or over:
        what = [f"went backwards {back} time(s)"] if back else []
        what += [f"was overwritten {over} time(s)"] if over else []
        out.append(
            {
                "code": "stage_regression",
                "message": "the record's stage " + " and ".join(what) + " in the funnel order",
            }
        )
    if bool(r["progressed"]):
        top = funnel[int(r["top_rank"]) - 1]
        out.append(
            {
                "code": "already_progressed",
                "message": f"the record already reached {top}: nothing to route",
            }
        )
    return out


def route_leads(
    ws: Workspace,
    model: Any,
    *,
    as_of: date | None = None,
    threshold: float | None = None,
    settings: Settings | None = None,
    required: Sequence[str] = ("user_id",),
    outcome: str = "sql",
    since: date | None = None,
    horizon_days: int | None = None,
) -> dict[str, Any]:
    """Route the recent leads whose outcome is still open to sales, review or nurture.

    Parameters
    ----------
    ws
        The workspace (touchpoints, conversions and crm ingested).
    model
        A fitted model with ``predict(X) -> P(outcome)`` and ``features_`` (e.g.
        :class:`~signalloop.models.estimator.ConversionModel` fitted on the ``outcome`` frame).
    as_of
        Last day of data (default: the last day with touchpoints).
    threshold
        Probability from which a lead goes to sales; ``None`` for :func:`default_threshold` of
        the outcome's base rate among the mature leads.
    settings
        Funnel order and ``[models] horizon_days``; defaults when ``None``.
    required
        CRM fields that must not be empty (``missing_field``).
    outcome
        ``"sql"`` or ``"won"``: the lead outcome the model predicts.
    since
        Route leads created on or after this day (default: the :data:`RECENT_DAYS` days up to
        and including ``as_of``).
    horizon_days
        Label window, as in :func:`~signalloop.models.features.build_frame`.

    Returns
    -------
    dict
        JSON-ready: ``as_of``, ``outcome``, ``threshold`` (and ``base_rate``, ``since``),
        ``leads`` (``record_id``, ``campaign_id``, ``created``, ``probability``, ``route``,
        ``reasons``: a list of ``{code, message}``), sorted by probability (highest first),
        and ``summary`` (leads per route).

    Raises
    ------
    UsageError
        Outcome not a lead outcome, a required field that is no CRM column, a threshold
        outside [0, 1], or what :func:`build_frame` raises.
    """
    if outcome not in ("sql", "won"):
        raise UsageError(f"leads are routed on a lead outcome (sql or won), not {outcome!r}")
    crm_cols = [c.name for c in KINDS["crm"].columns]
    bad = [c for c in required if c not in crm_cols or c in ("record_id", "stage", "ts")]
    if bad:
        raise UsageError(
            f"required field(s) {', '.join(bad)} are not optional CRM columns "
            f"(expected some of user_id, amount, owner, source)"
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    settings = settings or Settings()
    funnel = tuple(s.strip().lower() for s in settings.funnel)
    tf = build_frame(
        ws,
        outcome,
        as_of=as_of,
        settings=settings,
        horizon_days=horizon_days,
        include_censored=True,
    )
    if as_of is None:
        as_of = pd.Timestamp(ws.table("touchpoints").ts.max().execute()).date()
    since = since if since is not None else as_of - timedelta(days=RECENT_DAYS - 1)
    cutoff = datetime.combine(as_of + timedelta(days=1), time())
    f = tf.frame
    mature = f[f.label >= 0]
    base_rate = float(mature.label.mean()) if len(mature) else None
    if threshold is None:
        threshold = default_threshold(base_rate)
    start = pd.Timestamp(since, tz="UTC")
    todo = f[(f.label < 0) & (f.ts >= start)]
    prob = np.asarray(model.predict(todo), dtype=float) if len(todo) else np.array([])

    facts = _record_facts(ws, cutoff, funnel, required)
    leads: list[dict[str, Any]] = []
    for (_, row), p in zip(todo.iterrows(), prob, strict=True):
        reasons = _reasons(facts.loc[row.record_id], required, funnel)
        route = "nurture" if p < threshold else ("review" if reasons else "sales")
        leads.append(
            {
                "record_id": str(row.record_id),
                "campaign_id": None if pd.isna(row.campaign_id) else str(row.campaign_id),
                "created": row.ts.isoformat(),
                "probability": round(float(p), 4),
                "route": route,
                "reasons": reasons,
            }
        )
    # records no click can be linked to for want of a user_id: unscored, to review
    horizon = horizon_for(outcome, settings, horizon_days)
    open_from = pd.Timestamp(cutoff - timedelta(days=horizon))
    orphans = facts[
        facts.user_id.isna()
        & (facts.first_ts >= pd.Timestamp(datetime.combine(since, time())))
        & (facts.first_ts > open_from)
    ]
    need = tuple(dict.fromkeys(("user_id", *required)))
    for rid, r in orphans.iterrows():
        r = r.copy()
        r["has_user_id"] = False
        leads.append(
            {
                "record_id": str(rid),
                "campaign_id": None,
                "created": pd.Timestamp(r.first_ts).tz_localize("UTC").isoformat(),
                "probability": None,
                "route": "review",
                "reasons": _reasons(r, need, funnel),
            }
        )
    leads.sort(key=lambda x: (x["probability"] is None, -(x["probability"] or 0), x["record_id"]))
    summary = {k: sum(1 for x in leads if x["route"] == k) for k in ROUTES}
    return {
        "as_of": as_of.isoformat(),
        "outcome": outcome,
        "threshold": round(float(threshold), 4),
        "base_rate": None if base_rate is None else round(base_rate, 4),
        "since": since.isoformat(),
        "leads": leads,
        "summary": summary,
    }
