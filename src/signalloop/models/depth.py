"""Feedback depth per campaign, and models trained shallower than the labels that exist.

"A complete feedback loop connects ad exposure, engagement, pipeline progression, and revenue
outcomes. If the loop breaks after top-funnel events, models optimise for clicks instead of
business value." :func:`feedback_depth` says, per campaign, the deepest of :data:`LEVELS` with
labels; :func:`shallow_model` flags a model whose outcome stops above it.

Levels, counted up to the end of ``as_of`` (the label rules of
:mod:`~signalloop.models.features`):

* ``click`` -- touchpoints of the campaign;
* ``conversion`` -- its primary conversions (lead, signup, purchase, ...: every kind but the
  offline funnel imports), attributed by the contract's rule;
* ``pipeline`` -- CRM records linked to the campaign
  (:func:`~signalloop.attribution.crm_record_campaigns`): the units of the ``sql`` outcome;
* ``revenue`` -- records that reached ``won`` plus conversions with ``value > 0`` that are not
  pipeline stages (a purchase, an offline deal): the positives of ``won`` / ``value``. A
  purchase campaign reaches revenue without any CRM.

``outcome_known_share`` comes from the ``label_completeness`` check's feedback-depth
computation: the share of CRM records older than its ``outcome_age_days`` (60) that reached
``won`` or ``lost``, i.e. of the converted leads old enough to have closed, how many have a
known CRM outcome (``None`` without such records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from signalloop.attribution import crm_record_campaigns
from signalloop.checks.base import REGISTRY, CheckContext, Finding, default_as_of
from signalloop.checks.hygiene import _feedback_depth
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.models.features import OFFLINE_KINDS, OUTCOMES, PIPELINE_KINDS
from signalloop.store import Workspace

LEVELS: tuple[str, ...] = ("click", "conversion", "pipeline", "revenue")
#: The feedback level each model outcome learns from.
OUTCOME_LEVEL: dict[str, str] = {
    "conversion": "conversion",
    "sql": "pipeline",
    "won": "revenue",
    "value": "revenue",
}


def check_feedback_depth(ctx: CheckContext) -> list[Finding]:
    """The ``label_completeness`` check's feedback-depth findings (one per campaign).

    A public wrapper of :func:`signalloop.checks.hygiene._feedback_depth` with the check's
    thresholds (and the project's overrides) from ``ctx.settings``.
    """
    opt = REGISTRY["label_completeness"].options(ctx.settings)
    return _feedback_depth(ctx, opt)


def feedback_depth(
    ws: Workspace,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    checks: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per campaign: the deepest feedback level with labels, and the counts per level.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Last day of data (default: the last day with spend, touchpoints or conversions).
    settings
        Funnel order and check thresholds; defaults when ``None``.
    checks
        The run's checks (``run_checks(...).to_dict()`` at the same ``as_of``): their
        ``label_completeness`` findings give ``outcome_known_share`` instead of running that
        check again.

    Returns
    -------
    list of dict
        One per campaign with spend or touchpoints, sorted by id: ``campaign_id``, ``depth``
        (one of :data:`LEVELS`), ``counts`` (per level), ``outcome_known_share``.

    Raises
    ------
    UsageError
        The workspace is empty.
    """
    settings = settings or Settings()
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError("the workspace is empty: ingest something first")
    ctx = CheckContext(ws, as_of, settings)
    funnel = tuple(s.strip().lower() for s in settings.funnel)
    offline = (*OFFLINE_KINDS, *funnel[1:])

    tp = ctx.rollup("touch_daily")
    tp = tp.filter(tp.campaign_id.notnull())
    clicks = tp.group_by("campaign_id").aggregate(n=tp.n.sum())
    # the attributed conversions' counts per day, campaign and kind, kept current as rows
    # arrive (not every conversion of the history again)
    conv = ctx.rollup("conversion_kinds")
    conv = conv.filter(conv.campaign_id.notnull())
    kind = conv.kind.strip().lower()
    prim = conv.filter(~kind.isin(offline))
    primary = prim.group_by("campaign_id").aggregate(n=prim.n.sum())
    paid = conv.filter(~kind.isin(PIPELINE_KINDS))
    paid = paid.group_by("campaign_id").aggregate(n=paid.paid.sum())
    rec = crm_record_campaigns(ws, ctx.cutoff)
    rec = rec.filter(rec.campaign_id.notnull())
    crm = ctx.table("crm")
    won_ids = crm.filter(crm.stage.strip().lower() == "won").select("record_id").distinct()
    rec = rec.mutate(won=rec.record_id.isin(won_ids.record_id))
    records = rec.group_by("campaign_id").aggregate(n=rec.count(), won=rec.won.sum())

    def rows(t: Any) -> dict[str, dict[str, Any]]:
        return {str(r["campaign_id"]): r for r in t.to_pyarrow().to_pylist()}

    c_clicks, c_prim, c_paid, c_rec = (rows(t) for t in (clicks, primary, paid, records))
    given = [
        f
        for f in (checks or {}).get("findings", [])
        if f.get("check") == "label_completeness" and "outcome_known_share" in f["evidence"]
    ]
    known = (
        {f["campaign_id"]: f["evidence"]["outcome_known_share"] for f in given}
        if given
        else {
            f.campaign_id: f.evidence.get("outcome_known_share") for f in check_feedback_depth(ctx)
        }
    )
    out = []
    for cid in ctx.campaigns:
        counts = {
            "click": int(c_clicks.get(cid, {}).get("n", 0)),
            "conversion": int(c_prim.get(cid, {}).get("n", 0)),
            "pipeline": int(c_rec.get(cid, {}).get("n", 0)),
            "revenue": int(c_paid.get(cid, {}).get("n", 0))
            + int(c_rec.get(cid, {}).get("won", 0) or 0),
        }
        depth = next((lv for lv in reversed(LEVELS) if counts[lv] > 0), "click")
        out.append(
            {
                "campaign_id": cid,
                "depth": depth,
                "counts": counts,
                "outcome_known_share": known.get(cid),
            }
        )
    return out


def _advice(available: str, row: Mapping[str, Any]) -> str:
    if available == "pipeline":
        return "sql or won"
    if row.get("counts", {}).get("pipeline", 0) > 0:
        return "won"
    return "value"


def shallow_model(outcome: str, depth_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The campaigns where a model on ``outcome`` learns from shallower labels than exist.

    Parameters
    ----------
    outcome
        The model's outcome, one of :data:`~signalloop.models.features.OUTCOMES`.
    depth_rows
        Rows of :func:`feedback_depth`.

    Returns
    -------
    list of dict
        ``campaign_id``, ``outcome``, ``available`` (the deeper level) and ``message``, one
        per campaign whose depth lies beyond the outcome's level.

    Examples
    --------
    >>> rows = [{"campaign_id": "c1", "depth": "pipeline", "counts": {"pipeline": 4}},
    ...         {"campaign_id": "c2", "depth": "conversion", "counts": {}}]
    >>> [r["message"] for r in shallow_model("conversion", rows)]
    ['c1: trained on leads where pipeline outcomes exist: train on sql or won']
    """
    if outcome not in OUTCOMES:
        raise UsageError(f"unknown outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
    level = OUTCOME_LEVEL[outcome]
    out = []
    for row in depth_rows:
        available = str(row["depth"])
        if LEVELS.index(available) <= LEVELS.index(level):
            continue
        crm = row.get("counts", {}).get("pipeline", 0) > 0
        nouns = {"conversion": "leads" if crm else "conversions", "pipeline": "pipeline stages"}
        noun = nouns.get(level, level)
        out.append(
            {
                "campaign_id": row["campaign_id"],
                "outcome": outcome,
                "available": available,
                "message": f"{row['campaign_id']}: trained on {noun} where {available} "
                f"outcomes exist: train on {_advice(available, row)}",
            }
        )
    return out


__all__ = ["LEVELS", "OUTCOME_LEVEL", "check_feedback_depth", "feedback_depth", "shallow_model"]
