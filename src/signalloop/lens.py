"""The seven-question decision lens: scale spend, or keep it scoped and fix the weakest first.

:func:`lens` answers, in this order, each with ``passed`` and its ``evidence``:

1. ``data_completeness`` -- no open critical finding of a hygiene or integration check, and
   every campaign has delivery data on at least ``[lens] min_days_covered`` (0.9) of the days
   from its first delivery to the as-of day.
2. ``label_quality`` -- no warn or critical finding of ``label_completeness``,
   ``stage_regression`` or ``duplicates`` (those checks' own thresholds decide).
3. ``context_fit`` -- for every saved model: positives per day over the last
   ``CONTEXT_DAYS`` (28) of mature units within ``[lens] context_ratio`` (2x) of the card's,
   positive rate likewise; the measured delay p90 (click path for ``conversion``, CRM path for
   ``won`` / ``value``) within the model's label horizon; and some campaign still with labels
   at the model's feedback level. Fails when no model is saved.
4. ``cold_start_plan`` -- campaigns in cold start (first delivery fewer than
   ``[lens] cold_start_days`` ago, or an ad set in ``learning`` / ``learning_limited``) need a
   declared ``[lens] cold_start_plan``; passes with no such campaign.
5. ``retraining_cadence`` -- ``[lens] retrain_every_days`` declared, and no longer than the
   recommended cadence when one is saved (``cadence.recommended`` in the card's metrics or in
   a ``backtest.json`` beside it).
6. ``feedback_latency`` -- per campaign, the click-to-conversion delay p50 (nowcast) at most
   ``[lens] decision_every_days`` (1): otherwise most conversions arrive after the decision.
7. ``owner_accountability`` -- ``[owners]`` names an owner for every campaign and every saved
   model (by outcome).

The verdict is ``scale`` only when all seven pass; otherwise ``keep_scoped``, and ``weakest``
is the first failed check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from signalloop.checks.base import default_as_of, to_date
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

CHECK_NAMES = (
    "data_completeness",
    "label_quality",
    "context_fit",
    "cold_start_plan",
    "retraining_cadence",
    "feedback_latency",
    "owner_accountability",
)
#: Checks whose open critical findings make the data incomplete.
DATA_CHECKS = (
    "utm_hygiene",
    "duplicates",
    "timestamps",
    "label_completeness",
    "stage_regression",
    "late_offline_conversions",
    "integration_dropout",
    "attribution_match",
)
LABEL_CHECKS = ("label_completeness", "stage_regression", "duplicates")
#: Days of recent mature units compared with a model's training data.
CONTEXT_DAYS = 28
OUTCOMES = ("conversion", "sql", "won", "value")


def _result(name: str, passed: bool, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "evidence": evidence}


def lens(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    checks: Mapping[str, Any] | None = None,
    nowcast: Mapping[str, Any] | None = None,
    phase: Mapping[str, Any] | None = None,
    model_dirs: Mapping[str, str | Path] | None = None,
    learnable: Mapping[str, Any] | None = None,
    depth: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Answer the seven questions before scaling spend.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Last day seen; defaults to the latest day with data.
    settings
        Project settings (``[lens]``, ``[owners]``, thresholds); defaults when ``None``.
    checks, nowcast, phase
        ``run_checks(...).to_dict()``, ``nowcast(...).to_dict()`` and ``phase(...).to_dict()``
        if already computed (computed here otherwise; checks without storing exclusions).
    model_dirs
        Saved models by outcome; default: the workspace's default model folders
        (:func:`~signalloop.models.api.default_model_dir`) that hold a card.
    learnable
        :func:`signalloop.shapes.learnable` as of the same day, if already computed: when a
        question cannot be answered from this data (no model can be trained, no delay can be
        measured) the evidence says which export would unlock it. Computed when needed.
    depth
        :func:`~signalloop.models.depth.feedback_depth` as of the same day, if already
        computed (the run computes it once for diagnose and the lens).

    Returns
    -------
    dict
        ``as_of``, ``verdict`` (``"scale"`` or ``"keep_scoped"``), ``weakest`` (the first
        failed check's name or ``None``) and ``checks``: seven ``{"name", "passed",
        "evidence"}`` in :data:`CHECK_NAMES` order.

    Raises
    ------
    UsageError
        The workspace holds no data.
    """
    settings = settings or Settings()
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    if checks is None:
        from signalloop.checks.engine import run_checks

        checks = run_checks(ws, as_of=as_of, settings=settings, store_exclusions=False).to_dict()
    if nowcast is None:
        from signalloop.nowcast import nowcast as run_nowcast

        nowcast = run_nowcast(ws, as_of, settings=settings).to_dict()
    models = _models(ws, model_dirs)
    campaigns = [str(c["campaign_id"]) for c in checks.get("campaigns", [])]
    delay_known = any(d.get("p50") is not None for d in nowcast.get("delay", {}).values())
    if learnable is None and (not models or not delay_known):
        from signalloop.shapes import learnable as shapes_learnable

        learnable = shapes_learnable(ws, as_of)
    results = [
        _data_completeness(ws, as_of, settings, checks),
        _label_quality(checks),
        _context_fit(ws, as_of, settings, nowcast, models, learnable, depth),
        _cold_start_plan(ws, as_of, settings, phase),
        _retraining_cadence(settings, models),
        _feedback_latency(settings, nowcast, learnable),
        _owner_accountability(settings, campaigns, models),
    ]
    weakest = next((r["name"] for r in results if not r["passed"]), None)
    return {
        "as_of": as_of.isoformat(),
        "verdict": "scale" if weakest is None else "keep_scoped",
        "weakest": weakest,
        "checks": results,
    }


def _models(ws: Workspace, model_dirs: Mapping[str, str | Path] | None) -> dict[str, Path]:
    """Saved models by outcome: the given folders, else the workspace's default ones."""
    from signalloop.models.card import CARD_FILE

    if model_dirs is not None:
        return {k: Path(v) for k, v in model_dirs.items()}
    if ws.path == ":memory:":
        return {}
    from signalloop.models.api import default_model_dir

    found = {o: default_model_dir(str(ws.local_path), o) for o in OUTCOMES}
    return {o: p for o, p in found.items() if (p / CARD_FILE).exists()}


def _data_completeness(
    ws: Workspace, as_of: date, settings: Settings, checks: Mapping[str, Any]
) -> dict[str, Any]:
    open_critical = [
        {"check": f["check"], "campaign_id": f["campaign_id"], "message": f["message"]}
        for f in checks.get("findings", [])
        if f["check"] in DATA_CHECKS
        and f["severity"] == "critical"
        and (f.get("active") or "window" not in f)
    ]
    spend = ws.table("spend")
    spend = spend.filter(spend.date <= as_of)
    rows = (
        spend.group_by("campaign_id")
        .aggregate(first=spend.date.min(), days=spend.date.nunique())
        .to_pyarrow()
        .to_pylist()
    )
    floor = settings.lens.min_days_covered
    covered: dict[str, float] = {}
    for r in rows:
        first = to_date(r["first"]) or as_of
        span = (as_of - first).days + 1
        covered[str(r["campaign_id"])] = round(int(r["days"]) / max(span, 1), 3)
    short = sorted(c for c, share in covered.items() if share < floor)
    passed = not open_critical and not short and bool(covered)
    return _result(
        "data_completeness",
        passed,
        {
            "open_critical_findings": open_critical,
            "days_covered": covered,
            "min_days_covered": floor,
            "below_coverage": short,
            "message": "no delivery data"
            if not covered
            else (
                f"{len(open_critical)} open critical hygiene/integration finding(s); "
                f"{len(short)} campaign(s) below {floor:.0%} of days covered"
                + (f" ({', '.join(short)})" if short else "")
            ),
        },
    )


def _label_quality(checks: Mapping[str, Any]) -> dict[str, Any]:
    bad = [
        {"check": f["check"], "campaign_id": f["campaign_id"], "message": f["message"]}
        for f in checks.get("findings", [])
        if f["check"] in LABEL_CHECKS and f["severity"] in ("warn", "critical")
    ]
    counts = {c: sum(1 for b in bad if b["check"] == c) for c in LABEL_CHECKS}
    return _result(
        "label_quality",
        not bad,
        {
            "findings": bad,
            "counts": counts,
            "message": "labels within the checks' thresholds"
            if not bad
            else f"{len(bad)} label finding(s) over threshold: "
            + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
        },
    )


def _days(window: Any) -> int:
    start, end = (date.fromisoformat(str(x)[:10]) for x in window)
    return max((end - start).days + 1, 1)


def _model_fit(
    ws: Workspace,
    as_of: date,
    settings: Settings,
    nowcast: Mapping[str, Any],
    outcome: str,
    folder: Path,
    depth: Sequence[Mapping[str, Any]],
    recent: tuple[int, int],
) -> dict[str, Any]:
    """One model's card against the data now: volume, cycle length, funnel depth.

    ``recent``: the units and positives of its frame's last :data:`CONTEXT_DAYS` days
    (:func:`~signalloop.models.recent.recent_labels`).
    """
    from signalloop.models.card import read_card
    from signalloop.models.depth import OUTCOME_LEVEL

    card = read_card(folder)
    data = card["data"]
    ratio = settings.lens.context_ratio
    problems: list[str] = []
    trained_days = _days(data["window"])
    trained = {
        "positives_per_day": round(data["positives"] / trained_days, 3),
        "positive_rate": round(data["positives"] / max(data["rows"], 1), 4),
    }
    rows, pos = recent
    now = {
        "positives_per_day": round(pos / CONTEXT_DAYS, 3),
        "positive_rate": round(pos / max(rows, 1), 4),
    }
    for k in trained:
        a, b = trained[k], now[k]
        if a <= 0 or b <= 0 or max(a / b, b / a) > ratio:
            problems.append(f"{k} {b} now against {a} in training (allowed {ratio}x either way)")
    horizon = card["config"].get("horizon_days")
    p90_days: float | None = None
    if outcome == "conversion":
        p90s = [d["p90"] for d in nowcast.get("delay", {}).values() if d.get("p90") is not None]
        p90_days = round(max(p90s) / 24, 2) if p90s else None
    elif outcome in ("won", "value"):
        crm = nowcast.get("crm", {}).get("delay", {})
        p90s = [d["p90"] for d in crm.values() if d.get("p90") is not None]
        p90_days = round(max(p90s), 2) if p90s else None
    if p90_days is not None and horizon is not None and p90_days > horizon:
        problems.append(
            f"delay p90 {p90_days} days is longer than the model's {horizon}-day label horizon"
        )
    level = OUTCOME_LEVEL[outcome]
    with_labels = [d["campaign_id"] for d in depth if d["counts"].get(level, 0) > 0]
    if not with_labels:
        problems.append(f"no campaign has {level} labels now; the model learned from them")
    return {
        "model_dir": str(folder),
        "trained_window": data["window"],
        "trained": trained,
        "now": now,
        "delay_p90_days": p90_days,
        "horizon_days": horizon,
        "feedback_level": level,
        "campaigns_with_labels": with_labels,
        "trained_feedback_flags": len(card.get("metrics", {}).get("feedback_flags", [])),
        "problems": problems,
    }


def _context_fit(
    ws: Workspace,
    as_of: date,
    settings: Settings,
    nowcast: Mapping[str, Any],
    models: Mapping[str, Path],
    learnable: Mapping[str, Any] | None = None,
    depth: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    if not models:
        cap = _capability(learnable, "conversion_model")
        if cap is not None and cap["status"] == "unavailable":
            message = (
                "no model can be trained on this data (it learns from click-level signals; "
                f"missing: {', '.join(cap['missing'])}): send {'; '.join(cap['unlock'])}"
            )
        else:
            message = (
                "no model is saved, so there is nothing the data can be compared "
                "with: run signalloop model fit"
            )
        return _result("context_fit", False, {"models": {}, "message": message})
    if depth is None:  # one read for every model
        from signalloop.models.depth import feedback_depth

        depth = feedback_depth(ws, as_of=as_of, settings=settings)
    from signalloop.models.recent import recent_labels_all

    # each frame's units and labels of the last CONTEXT_DAYS, counted without its features
    recent = recent_labels_all(ws, list(models), as_of=as_of, days=CONTEXT_DAYS, settings=settings)
    fits = {
        o: _model_fit(ws, as_of, settings, nowcast, o, p, depth, recent[o])
        for o, p in models.items()
    }
    bad = {o: f["problems"] for o, f in fits.items() if f["problems"]}
    message = (
        "the data looks like what every saved model learned from"
        if not bad
        else "; ".join(f"{o}: {', '.join(p)}" for o, p in bad.items())
    )
    return _result("context_fit", not bad, {"models": fits, "message": message})


def _cold_start_plan(
    ws: Workspace, as_of: date, settings: Settings, phase_doc: Mapping[str, Any] | None
) -> dict[str, Any]:
    from signalloop.phase import phase

    cfg = settings.lens
    spend = ws.table("spend")
    spend = spend.filter(spend.date <= as_of)
    firsts = {
        str(r["campaign_id"]): to_date(r["first"]) or as_of
        for r in spend.group_by("campaign_id")
        .aggregate(first=spend.date.min())
        .to_pyarrow()
        .to_pylist()
    }
    young = {c for c, d in firsts.items() if (as_of - d).days < cfg.cold_start_days}
    if phase_doc is None:
        phase_doc = phase(ws, as_of, settings=settings).to_dict()
    learning = {
        str(e["campaign_id"])
        for e in phase_doc["entities"]
        if e["state"] in ("learning", "learning_limited")
    }
    cold = sorted(young | learning)
    plan = cfg.cold_start_plan
    passed = not cold or plan is not None
    if not cold:
        message = "no campaign is in cold start"
    elif plan is not None:
        message = f"{len(cold)} campaign(s) in cold start, covered by the declared plan"
    else:
        why = []
        if young:
            why.append(f"younger than {cfg.cold_start_days} days: {', '.join(sorted(young))}")
        if learning - young:
            why.append(f"ad sets in learning: {', '.join(sorted(learning - young))}")
        message = (
            f"{len(cold)} campaign(s) in cold start ({'; '.join(why)}) and no plan: "
            "declare [lens] cold_start_plan in signalloop.toml"
        )
    return _result(
        "cold_start_plan",
        passed,
        {
            "cold_start": cold,
            "younger_than_days": sorted(young),
            "in_learning": sorted(learning),
            "cold_start_days": cfg.cold_start_days,
            "plan": plan,
            "message": message,
        },
    )


def recommended_cadence(folder: Path) -> float | None:
    """``cadence.recommended`` (days) from the card's metrics or a ``backtest.json`` beside it."""
    from signalloop.models.card import read_card

    docs: list[Any] = [read_card(folder).get("metrics", {})]
    bt = folder / "backtest.json"
    if bt.exists():
        docs.append(json.loads(bt.read_text()))
    for doc in docs:
        rec = (doc.get("cadence") or {}).get("recommended") if isinstance(doc, dict) else None
        if isinstance(rec, int | float):
            return float(rec)
    return None


def _retraining_cadence(settings: Settings, models: Mapping[str, Path]) -> dict[str, Any]:
    declared = settings.lens.retrain_every_days
    recommended = {o: recommended_cadence(p) for o, p in models.items()}
    known = {o: r for o, r in recommended.items() if r is not None}
    if declared is None:
        passed, message = False, "no cadence declared: set [lens] retrain_every_days"
    else:
        slower = sorted(o for o, r in known.items() if declared > r)
        passed = not slower
        if slower:
            message = f"retraining every {declared} days is slower than recommended for " + (
                ", ".join(f"{o} ({known[o]:g} days)" for o in slower)
            )
        elif known:
            message = f"retraining every {declared} days, within every recommended cadence"
        else:
            message = f"retraining every {declared} days; no recommended cadence is saved"
    return _result(
        "retraining_cadence",
        passed,
        {"declared_days": declared, "recommended_days": recommended, "message": message},
    )


def _capability(learnable: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """One capability's entry of :func:`signalloop.shapes.learnable`, if given."""
    caps = (learnable or {}).get("capabilities", [])
    return next((c for c in caps if c["name"] == name), None)


def _feedback_latency(
    settings: Settings, nowcast: Mapping[str, Any], learnable: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    every = settings.lens.decision_every_days
    hours = every * 24
    delay = {
        str(c): {"p50_hours": d.get("p50"), "p90_hours": d.get("p90")}
        for c, d in nowcast.get("delay", {}).items()
        if d.get("p50") is not None
    }
    late = sorted(c for c, d in delay.items() if d["p50_hours"] > hours)
    tail = sorted(c for c, d in delay.items() if (d["p90_hours"] or 0) > hours)
    cap = _capability(learnable, "nowcast")
    if not delay and cap is not None and cap["status"] == "unavailable":
        message = (
            "no measured delay: nothing to learn it from (missing: "
            f"{', '.join(cap['missing'])}): send {'; '.join(cap['unlock'][:2])}"
        )
    elif not delay:
        message = "no measured delay: the nowcast has no conversions to learn it from"
    elif late:
        message = f"most conversions arrive after the {every}-day decision in " + ", ".join(
            f"{c} (p50 {delay[c]['p50_hours']} h)" for c in late
        )
    else:
        message = f"most conversions arrive within the {every}-day decision cadence" + (
            f"; more than 10% arrive later in {', '.join(tail)}" if tail else ""
        )
    return _result(
        "feedback_latency",
        bool(delay) and not late,
        {
            "decision_every_days": every,
            "delay": delay,
            "late": late,
            "p90_beyond_cadence": tail,
            "message": message,
        },
    )


def _owner_accountability(
    settings: Settings, campaigns: list[str], models: Mapping[str, Path]
) -> dict[str, Any]:
    owners = settings.owners
    needed = [*campaigns, *(o for o in models if o not in campaigns)]
    missing = [x for x in needed if x not in owners]
    return _result(
        "owner_accountability",
        not missing,
        {
            "owners": {x: owners.get(x) for x in needed},
            "missing": missing,
            "message": "every campaign and model has an owner"
            if not missing
            else f"no owner in [owners] for {', '.join(missing)}",
        },
    )


__all__ = ["CHECK_NAMES", "lens"]
