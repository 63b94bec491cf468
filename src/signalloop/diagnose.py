"""Diagnose what is wrong with each campaign and the account, and what to do about it.

:func:`diagnose` gathers the signal checks (:func:`~signalloop.checks.run_checks`), the
learning phase (:func:`~signalloop.phase.phase`), creative fatigue
(:func:`~signalloop.fatigue.fatigue`), the nowcast (:func:`~signalloop.nowcast.nowcast`) and
the feedback depth (:func:`~signalloop.models.depth.feedback_depth`), then runs every rule of
:data:`RULES` over that evidence. A rule is data: a :class:`Rule` names its failure type and
holds one function from the gathered :class:`Evidence` to zero or more diagnoses.

Each diagnosis has ``campaign_id`` (``None`` for account-wide), ``failure_type``,
``root_cause``, ``evidence`` (numbers, and ``source``: the checks or estimates they came from),
``recovery_action``, ``expected_recovery_days``, ``severity`` (info / warn / critical),
``confidence`` (0-1) and ``impact``: the money at stake, ``{"spend_per_day",
"conversions_per_week", "share_of_account_spend", "conversions_source"}``. For a campaign's
diagnosis that is the campaign's mean daily spend over the last 7 days, its conversions in
those 7 days (first-party, else platform-reported: ``conversions_source`` says which, ``None``
with no conversions of any kind) and its share of the account's spend; an account-wide
diagnosis touches the share of the account its findings' events are (1 duplicate among 10,000
conversions touches 0.01% of the spend), or all of it (a model, a finding without counts); its
``conversions_source`` is the account's (``"mixed"`` when campaigns differ).
The values are ``None`` when the evidence carries no spend (:attr:`Evidence.spend`). They come
ordered most severe first, then by spend at stake, then most confident.

One diagnosis per root cause: findings are grouped per campaign and per check (and per kind
of ``attribution_match`` finding: click-id match, click-id loss, platform disagreement), each
group with its one recovery action.

Severity and confidence per failure type (thresholds are the module constants below):

* ``integration_dropout`` -- from ``integration_dropout`` findings. Critical while the outage
  is still open (conversion confidence 0.95 when under 10% of the expected events arrive,
  else 0.8); info once closed (the window is excluded from learning already); a delivery stop
  is info (confidence 0.5: confirm it was intended).
* ``attribution_error`` -- ``duplicates``, ``attribution_match``, ``utm_hygiene`` and
  ``timestamps`` findings of severity warn or above, one diagnosis per campaign and root cause
  (and for the account's own ones). Severity: the worst finding's, lowered to info when the
  findings count fewer than :data:`MIN_AFFECTED_EVENTS` affected events (a handful of
  duplicates is not worth a warning); confidence 0.9 (critical) or 0.7 (warn), plus 0.05 per
  further finding, at most 0.95. A campaign's click-id loss (``attribution_match`` kind
  ``click_id_loss``: its match share fell against its own history) has confidence 0.5 plus
  the fall in share (at most 0.95) and the action "fix click-id capture".
* ``label_quality`` -- ``stage_regression``, ``late_offline_conversions`` and
  ``label_completeness`` findings (warn or above; feedback-depth findings excluded, they feed
  ``feedback_loop_broken``). Our own type rather than ``attribution_error``: the labels the
  models learn from are wrong, not the link from click to conversion. Severity and
  confidence as for ``attribution_error``.
* ``learning_variance`` -- ad sets in learning whose projected 7-day volume reaches the
  threshold: info (calibration noise, not failure); confidence 0.6 rising to 0.9 as the
  projection clears the threshold; recovery = days until ``evaluation_ready_on``.
* ``signal_gap`` -- ad sets below the threshold (not ``stable``; any state when the
  workspace has no edit log, since then no reset is seen and ``stable`` only means an ad set
  left learning once) while the campaign's pooled volume (the larger
  of the ad sets' projections and the nowcast's expected last-7-day conversions) is at least
  :data:`MANUAL_SHARE` of it: info (a setup change fixes it); confidence 0.5 plus up to 0.4 by
  how far below the threshold the pool is. Also, info with confidence 0.3, a campaign with no
  conversions of any kind (its phase entities' ``conversions_source`` is ``None``): the
  volume is unknown, and the evidence says what is missing and which export unlocks it.
* ``low_volume_manual`` -- pooled volume under :data:`MANUAL_SHARE` of the threshold: warn;
  confidence 0.6 plus up to 0.3 by how far below.
  Both volume types skip campaigns with an open outage (their counts are not measured) and
  have their confidence multiplied by :data:`FATIGUE_DISCOUNT` where the campaign is starving
  of creatives (the fatigue explains part of the shortfall). Their evidence names the
  ``volume_source``: ``first_party``, or ``platform_reported`` when the campaign has no
  first-party conversions and the phase counted the platform's own (confidence then times
  :data:`PLATFORM_DISCOUNT`: platforms over-count).
* ``creative_fatigue`` -- warn on creative starvation or a ``creative_freshness`` finding;
  info when at least :data:`FATIGUED_SHARE_INFO` of the last 7 days' live spend went to
  fatigued creatives; confidence 0.5 + 0.45 x that share (+0.05 once nothing new has launched
  for twice the starvation window).
* ``override_churn`` -- human resets in the last :data:`OVERRIDE_WINDOW_DAYS` days on the
  campaign's busiest ad set: warn from :data:`OVERRIDE_WARN_RESETS`, info from
  :data:`OVERRIDE_INFO_RESETS` (or one reset with :data:`OVERRIDE_DAYS_LOST` days of learning
  lost); confidence 0.5 + 0.05 per reset, at most 0.95. The baseline simulated account has
  people resetting an ad set up to about 4 times in 28 days; a storm does 7 or more.
* ``feedback_loop_broken`` -- feedback depth stops at click or conversion (a lead campaign
  without CRM outcomes), or fewer than :data:`FEEDBACK_MIN_KNOWN_SHARE` of the leads old
  enough to have closed have a known CRM outcome: warn; confidence 0.8 (click), 0.7 (otherwise).
* ``overfitting`` -- fires only on backtests passed in ``models["backtests"]`` (a list of
  :func:`~signalloop.models.backtest.backtest` results, each optionally with ``campaign_id``
  and ``name``; ``signalloop run`` and ``signalloop diagnose`` pass the ones saved beside the
  workspace's models): when ``overfit`` is true or ``gap.auc`` exceeds :data:`OVERFIT_GAP`,
  warn (critical from twice that), confidence 0.6 + 2 x the gap.
* ``audience_bias`` -- ``models["audience"]`` (default :func:`signalloop.audience.audience`:
  per campaign, the share of the last 28 days' conversions from users known before the
  click): from :data:`AUDIENCE_KNOWN_SHARE`, warn, confidence rising with the share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any

from signalloop.checks.base import SEVERITY_RANK, CheckContext, default_as_of
from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.store import Workspace

#: Findings about fewer affected events than this are info, whatever the check said.
MIN_AFFECTED_EVENTS = 10
#: Confidence multiplier for volume diagnoses read from platform-reported conversions.
PLATFORM_DISCOUNT = 0.8
#: Days over which the spend at stake is averaged.
IMPACT_DAYS = 7
#: Checks whose findings mean the link from click to conversion is broken.
ATTRIBUTION_CHECKS: tuple[str, ...] = (
    "duplicates",
    "attribution_match",
    "utm_hygiene",
    "timestamps",
)
#: Checks whose findings mean the outcome labels are wrong or late.
LABEL_CHECKS: tuple[str, ...] = (
    "stage_regression",
    "late_offline_conversions",
    "label_completeness",
)
#: Days of clean data after restoring an integration before learning can trust it again.
INTEGRATION_RECOVERY_DAYS = 7
#: Days of clean data after fixing tracking or naming.
ATTRIBUTION_RECOVERY_DAYS = 7
#: Days for corrected labels to flow through (a CRM re-sync, a closed offline window).
LABEL_RECOVERY_DAYS = 14
#: Pooled volume below this share of the learning threshold: no model, bid manually.
MANUAL_SHARE = 0.25
#: Days of consolidated (or higher-funnel) delivery before the threshold can be judged.
SIGNAL_GAP_RECOVERY_DAYS = 14
#: When to look again at a campaign put on manual bidding.
MANUAL_REVIEW_DAYS = 28
#: Confidence multiplier for volume diagnoses in a campaign starving of creatives.
FATIGUE_DISCOUNT = 0.7
#: Share of the last 7 days' live spend on fatigued creatives that makes an info diagnosis.
FATIGUED_SHARE_INFO = 0.5
#: Starvation window (days without a new creative), as in :func:`~signalloop.fatigue.fatigue`.
STARVATION_DAYS = 21
#: A new creative's learning window.
CREATIVE_RECOVERY_DAYS = 7
#: Window over which human resets count.
OVERRIDE_WINDOW_DAYS = 28
#: Human resets of one ad set in the window for an info / warn diagnosis.
OVERRIDE_INFO_RESETS = 2
OVERRIDE_WARN_RESETS = 6
#: Days of learning lost to people's resets that make one recent reset worth an info.
OVERRIDE_DAYS_LOST = 28
#: How long to stop manual overrides.
OVERRIDE_FREEZE_DAYS = 14
#: Share of old-enough leads with a known CRM outcome below which the loop is broken.
FEEDBACK_MIN_KNOWN_SHARE = 0.3
#: Days for CRM outcomes to accrue once connected.
FEEDBACK_RECOVERY_DAYS = 28
#: AUC gap (random split minus time split) that counts as overfitting.
OVERFIT_GAP = 0.05
#: Days to retrain on a recent window and watch the live holdout.
OVERFIT_RECOVERY_DAYS = 14
#: Share of conversions from already-known users that counts as audience bias.
AUDIENCE_KNOWN_SHARE = 0.7
#: Days for CRM-based audiences to start feeding new-user acquisition.
AUDIENCE_RECOVERY_DAYS = 28

_LEARNING = ("learning", "learning_limited")


@dataclass
class Evidence:
    """Everything the rules read, as plain dicts (the ``to_dict()`` forms of the reports).

    Attributes
    ----------
    as_of
        The diagnosis date.
    threshold
        Conversions per 7 days an ad set needs to leave learning.
    checks, phase, fatigue, nowcast
        The reports' dicts (``nowcast`` may be ``None``).
    depth
        Rows of :func:`~signalloop.models.depth.feedback_depth`.
    models
        Optional model evidence (``backtests``, ``audience``); see the module docstring.
    spend
        The spend at stake, :func:`spend_at_stake`'s dict: ``account`` (``spend_per_day``,
        ``conversions_per_week``, and the totals ``conversions``, ``touchpoints``,
        ``crm_records`` account-wide shares are taken of) and ``campaigns`` (campaign id ->
        ``spend_per_day``, ``conversions_per_week``, ``conversions_source``). Empty: every
        impact is ``None``.
    platforms
        Campaign id -> ``meta``, ``google`` or ``None``: which push command a
        ``feedback_loop_broken`` recommends.
    """

    as_of: date
    threshold: int
    checks: Mapping[str, Any]
    phase: Mapping[str, Any]
    fatigue: Mapping[str, Any]
    nowcast: Mapping[str, Any] | None
    depth: list[Mapping[str, Any]]
    models: Mapping[str, Any] = field(default_factory=dict)
    spend: Mapping[str, Any] = field(default_factory=dict)
    #: campaign -> ``meta``, ``google`` or ``None`` (which push command closes its loop).
    platforms: Mapping[str, str | None] = field(default_factory=dict)

    def findings(self, *checks: str) -> list[Mapping[str, Any]]:
        """The check findings of these checks (in the checks' order of findings)."""
        if len(checks) == 1:  # the rules ask per campaign: one pass over the findings in all
            return list(self._by_check.get(checks[0], ()))
        return [f for f in self.checks.get("findings", []) if f["check"] in checks]

    @cached_property
    def _by_check(self) -> dict[str, list[Mapping[str, Any]]]:
        out: dict[str, list[Mapping[str, Any]]] = {}
        for f in self.checks.get("findings", []):
            out.setdefault(f["check"], []).append(f)
        return out

    def open_outage(self, campaign_id: str) -> bool:
        """Whether an integration outage (not a delivery stop) is still open for a campaign."""
        return any(
            f["campaign_id"] == campaign_id
            and f["active"]
            and f["evidence"].get("kind") != "delivery_stop"
            for f in self.findings("integration_dropout")
        )

    def starving(self, campaign_id: str) -> bool:
        """Whether fatigue judged the campaign starving of fresh creatives."""
        return any(
            c["campaign_id"] == campaign_id and c.get("starvation")
            for c in self.fatigue.get("campaigns", [])
        )

    def nowcast_7d(self, campaign_id: str) -> float | None:
        """The nowcast's expected conversions over the campaign's last 7 days, if known."""
        for c in (self.nowcast or {}).get("campaigns", []):
            if c.get("campaign_id") == campaign_id:
                v = c.get("windows", {}).get("7d", {}).get("expected_conversions")
                return float(v) if v is not None else None
        return None

    def entities(self) -> dict[str, list[Mapping[str, Any]]]:
        """Phase entities grouped by campaign."""
        out: dict[str, list[Mapping[str, Any]]] = {}
        for e in self.phase.get("entities", []):
            out.setdefault(str(e["campaign_id"]), []).append(e)
        return out


RuleFn = Callable[[Evidence], list[dict[str, Any]]]


@dataclass(frozen=True)
class Rule:
    """A diagnosis rule: the failure type it reports and the function finding it."""

    failure_type: str
    description: str
    fn: RuleFn


def _dx(
    campaign_id: str | None,
    failure_type: str,
    root_cause: str,
    evidence: dict[str, Any],
    action: str,
    days: int | None,
    severity: str,
    confidence: float,
    touches: float | None = None,
) -> dict[str, Any]:
    """A diagnosis; ``touches`` is the share of the account an account-wide one is about
    (``None``: all of it), turned into ``impact`` by :func:`diagnose_evidence`."""
    return {
        "campaign_id": campaign_id,
        "failure_type": failure_type,
        "root_cause": root_cause,
        "evidence": evidence,
        "recovery_action": action,
        "expected_recovery_days": days,
        "severity": severity,
        "confidence": round(min(0.99, max(0.05, confidence)), 2),
        "_touches": touches,
    }


def _numbers(ev: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numeric top-level entries of a finding's evidence."""
    return {
        f"{prefix}{k}": v
        for k, v in ev.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _days_until(iso: str | None, as_of: date) -> int | None:
    return max(0, (date.fromisoformat(iso) - as_of).days) if iso else None


# -- rules ------------------------------------------------------------------------------------


def _integration_dropout(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for f in ev.findings("integration_dropout"):
        e = f["evidence"]
        kind = str(e.get("kind", "outage"))
        window = f.get("window") or {}
        nums = {
            **_numbers(e),
            "window_start": window.get("start"),
            "window_end": window.get("end"),
            "source": "check:integration_dropout",
        }
        if kind == "delivery_stop":
            out.append(
                _dx(
                    f["campaign_id"],
                    "integration_dropout",
                    f"delivery stopped: {f['message']}",
                    nums,
                    "confirm the pause was intended; if not, restore the ad platform "
                    "connection and the campaign's delivery",
                    0,
                    "info",
                    0.5,
                )
            )
            continue
        expected = float(e.get("expected") or 0.0)
        ratio = float(e.get("observed") or 0.0) / expected if expected else 1.0
        if f["active"]:
            out.append(
                _dx(
                    f["campaign_id"],
                    "integration_dropout",
                    f"{kind.replace('_', ' ')} still open: {f['message']}",
                    nums,
                    "restore the integration (pixel / server events / CRM sync) and backfill; "
                    "the window is excluded from learning until it closes",
                    INTEGRATION_RECOVERY_DAYS,
                    "critical",
                    0.95 if ratio <= 0.1 else 0.8,
                )
            )
        else:
            out.append(
                _dx(
                    f["campaign_id"],
                    "integration_dropout",
                    f"past {kind.replace('_', ' ')}: {f['message']}",
                    nums,
                    "none needed: the window is excluded from learning; backfill it if the "
                    "source can resend the events",
                    0,
                    "info",
                    0.8,
                )
            )
    return out


_ATTRIBUTION_ACTIONS = {
    "duplicates": "deduplicate the conversion events (one event id shared by pixel and server)",
    "attribution_match": "fix pixel and click-id capture (gclid / fbclid / li_fat_id kept "
    "through redirects and forms)",
    "attribution_match.click_id_loss": "fix click-id capture: find what strips gclid / fbclid "
    "/ li_fat_id since the week it broke (a consent banner, a redirect, a form or landing-page "
    "change) and keep the click id from the landing page to the conversion event",
    "attribution_match.platform_disagreement": "reconcile the platform's conversion count with "
    "yours: the same conversion event, attribution window and deduplication on both sides",
    "utm_hygiene": "enforce one UTM naming convention and map the variants to it",
    "timestamps": "fix the event clocks and time zones at the source",
}
_LABEL_ACTIONS = {
    "stage_regression": "stop CRM stages being overwritten or moved backwards (lock the "
    "lifecycle field, fix the sync's write rule)",
    "late_offline_conversions": "upload offline conversions sooner and widen the conversion "
    "window to cover the delay",
    "label_completeness": "fill the missing conversion kinds, values and CRM stages at the source",
}
#: Evidence keys that count a finding's affected events, most specific first.
_AFFECTED_KEYS = (
    "copies",
    "unmatched_after",
    "unmatched",
    "unattributed",
    "missing_value",
    "late",
    "conversion_before_click",
    "records",
    "rows",
)
#: What the events of a check's findings are counted among (for an account-wide share).
_AFFECTED_BASE = {"utm_hygiene": "touchpoints", "stage_regression": "crm_records"}


def _root_key(f: Mapping[str, Any], actions: Mapping[str, str]) -> str:
    """The root cause of a finding: ``check.kind`` where that has its own action, else
    ``check``."""
    key = f"{f['check']}.{f['evidence'].get('kind')}"
    return key if key in actions else str(f["check"])


def _affected(f: Mapping[str, Any]) -> int | None:
    """The number of events a finding is about, when its evidence counts them."""
    e = f["evidence"]
    for k in _AFFECTED_KEYS:
        v = e.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return int(v)
    v = e.get("before_first_spend")
    if isinstance(v, Mapping) and v:
        return int(sum(int(x) for x in v.values()))
    variants, proposed = e.get("variants"), e.get("proposed")
    if isinstance(variants, Mapping) and isinstance(proposed, str):  # spellings of one value
        return int(sum(int(n) for k, n in variants.items() if k != proposed))
    return None


def _affected_base(f: Mapping[str, Any]) -> str:
    """What a finding's events are counted among: touchpoints, CRM records or conversions."""
    kind = f["evidence"].get("kind")
    if kind == "touchpoints":
        return "touchpoints"
    if kind == "crm":
        return "crm_records"
    return _AFFECTED_BASE.get(str(f["check"]), "conversions")


def _grouped(
    ev: Evidence,
    checks: tuple[str, ...],
    failure_type: str,
    actions: Mapping[str, str],
    days: int,
    keep: Callable[[Mapping[str, Any]], bool] = lambda f: True,
) -> list[dict[str, Any]]:
    """One diagnosis per campaign and root cause (see :func:`_root_key`)."""
    by: dict[tuple[str | None, str], list[Mapping[str, Any]]] = {}
    for f in ev.findings(*checks):
        if SEVERITY_RANK[f["severity"]] >= SEVERITY_RANK["warn"] and keep(f):
            by.setdefault((f["campaign_id"], _root_key(f, actions)), []).append(f)
    totals = (ev.spend or {}).get("account", {})
    out = []
    for (cid, key), fs in by.items():
        fs = sorted(fs, key=lambda f: -SEVERITY_RANK[f["severity"]])
        top = fs[0]
        evidence: dict[str, Any] = {"findings": len(fs)}
        for f in fs:
            for k, v in _numbers(f["evidence"], f"{f['check']}.").items():
                evidence.setdefault(k, v)
        counts = [_affected(f) for f in fs]
        affected = None if None in counts else sum(n for n in counts if n is not None)
        if affected is not None:
            evidence["affected_events"] = affected
        evidence["source"] = f"check:{top['check']}"
        severity = str(top["severity"])
        cause = f"{top['check']}: {top['message']}"
        if affected is not None and affected < MIN_AFFECTED_EVENTS:
            if severity != "info":
                cause += f" (only {affected} event(s) affected: info, not {severity})"
            severity = "info"
        if key == "attribution_match.click_id_loss":
            e = top["evidence"]
            fall = float(e.get("share_before", 0.0)) - float(e.get("share_after", 0.0))
            confidence = min(0.95, 0.5 + fall)
        else:
            base = 0.9 if top["severity"] == "critical" else 0.7
            confidence = min(0.95, base + 0.05 * (len(fs) - 1))
        touches = None
        if cid is None and affected is not None:
            among = totals.get(_affected_base(top))
            touches = min(1.0, affected / among) if among else None
        out.append(
            _dx(
                cid,
                failure_type,
                cause,
                evidence,
                actions[key],
                days,
                severity,
                confidence,
                touches,
            )
        )
    return out


def _attribution_error(ev: Evidence) -> list[dict[str, Any]]:
    return _grouped(
        ev, ATTRIBUTION_CHECKS, "attribution_error", _ATTRIBUTION_ACTIONS, ATTRIBUTION_RECOVERY_DAYS
    )


def _label_quality(ev: Evidence) -> list[dict[str, Any]]:
    return _grouped(
        ev,
        LABEL_CHECKS,
        "label_quality",
        _LABEL_ACTIONS,
        LABEL_RECOVERY_DAYS,
        keep=lambda f: "depth" not in f["evidence"],
    )


def _learning_variance(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for cid, ents in ev.entities().items():
        if ev.open_outage(cid):
            continue
        sets = [
            e
            for e in ents
            if e["state"] in _LEARNING and e["projected_conversions_7d"] >= ev.threshold
        ]
        if not sets:
            continue
        days = [_days_until(e["evaluation_ready_on"], ev.as_of) for e in sets]
        known = [d for d in days if d is not None]
        margin = min(e["projected_conversions_7d"] for e in sets) / ev.threshold - 1.0
        out.append(
            _dx(
                cid,
                "learning_variance",
                f"{len(sets)} ad set(s) still learning but on track for the threshold of "
                f"{ev.threshold} conversions per 7 days: results swing with calibration noise",
                {
                    "adsets_learning": len(sets),
                    "min_projected_conversions_7d": min(
                        e["projected_conversions_7d"] for e in sets
                    ),
                    "threshold": ev.threshold,
                    "source": "estimate:phase",
                },
                "hold the calibration window: no significant edits until evaluation is ready",
                max(known) if known else None,
                "info",
                0.6 + 0.3 * min(1.0, max(0.0, margin)),
            )
        )
    return out


def _source(e: Mapping[str, Any]) -> str | None:
    """Where a phase entity's conversions come from (older phase dicts: first-party)."""
    return e.get("conversions_source", "first_party")  # type: ignore[no-any-return]


def _below(ev: Evidence, e: Mapping[str, Any]) -> bool:
    """An ad set below the threshold that is not ``stable`` (any state when the workspace has
    no edit log: then no reset is seen, and ``stable`` only means it left learning once)."""
    blind = not ev.phase.get("edit_log", True)
    low = (e["projected_conversions_7d"] or 0.0) < ev.threshold
    return bool(low and (e["state"] != "stable" or blind))


def _volume(ev: Evidence, cid: str, ents: list[Mapping[str, Any]]) -> tuple[float, dict[str, Any]]:
    pooled = sum(float(e["projected_conversions_7d"] or 0.0) for e in ents)
    now = ev.nowcast_7d(cid)
    vol = max(pooled, now or 0.0)
    source = (
        "platform_reported"
        if any(_source(e) == "platform_reported" for e in ents)
        else ("first_party")
    )
    check = next((f for f in ev.findings("conversion_volume") if f["campaign_id"] == cid), None)
    evidence: dict[str, Any] = {
        "pooled_projected_conversions_7d": round(pooled, 1),
        "nowcast_expected_conversions_7d": now,
        "threshold": ev.threshold,
        "adsets": len(ents),
        "adsets_below": sum(1 for e in ents if _below(ev, e)),
        "volume_source": source,
    }
    if source == "platform_reported":
        evidence["history_days"] = min(int(e.get("history_days") or 0) for e in ents)
    if check is not None and check["evidence"].get("volume_source", "first_party") == source:
        evidence["conversions_7d"] = check["evidence"].get("conversions_7d")
    sources = ["estimate:phase", "estimate:nowcast" if now is not None else None]
    if check is not None:
        sources.append("check:conversion_volume")
    evidence["source"] = "+".join(s for s in sources if s)
    return vol, evidence


def _what(evidence: Mapping[str, Any]) -> str:
    """How the volume was counted, in words, for a root cause."""
    if evidence.get("volume_source") != "platform_reported":
        return "conversions per 7 days"
    days = int(evidence.get("history_days") or 0)
    return (
        "platform-reported conversions per 7 days (no first-party conversions for this "
        "campaign; platforms over-count"
        + (
            f"; the spend rows cover {days} day(s), so this is their total, not a 7-day rate)"
            if days < 7
            else ")"
        )
    )


def _unknown_volume(cid: str, ents: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A campaign with no conversions of any kind: its volume cannot be judged."""
    unlock = next((e.get("unlock") for e in ents if e.get("unlock")), None)
    return _dx(
        cid,
        "signal_gap",
        "conversion volume unknown: the workspace holds no conversions of any kind for this "
        "campaign (no first-party conversions, no platform-reported counts in its spend rows), "
        "so neither the learning state nor a bidding strategy can be judged",
        {
            "adsets": len(ents),
            "volume_source": None,
            "missing": "conversions",
            "unlock": unlock,
            "source": "estimate:phase",
        },
        f"send {unlock}" if unlock else "send the campaign's conversions",
        None,
        "info",
        0.3,
    )


def _volume_rules(ev: Evidence, manual: bool) -> list[dict[str, Any]]:
    out = []
    for cid, ents in ev.entities().items():
        if ev.open_outage(cid):
            continue
        if all(_source(e) is None for e in ents):
            if not manual:
                out.append(_unknown_volume(cid, ents))
            continue
        below = [e for e in ents if _below(ev, e)]
        if not below:
            continue
        vol, evidence = _volume(ev, cid, ents)
        floor = ev.threshold * MANUAL_SHARE
        is_manual = vol < floor
        if is_manual != manual:
            continue
        discount = FATIGUE_DISCOUNT if ev.starving(cid) else 1.0
        note = " (creative starvation explains part of it)" if discount < 1.0 else ""
        if evidence["volume_source"] == "platform_reported":
            discount *= PLATFORM_DISCOUNT
        if manual:
            out.append(
                _dx(
                    cid,
                    "low_volume_manual",
                    f"{vol:.0f} {_what(evidence)} across the campaign against a threshold "
                    f"of {ev.threshold}: even a higher-funnel event cannot feed a bidding "
                    f"model{note}",
                    evidence,
                    "bid manually (fixed bids or a CPA cap) and pool learning across campaigns; "
                    "revisit when volume reaches a quarter of the threshold",
                    MANUAL_REVIEW_DAYS,
                    "warn",
                    (0.6 + 0.3 * (1.0 - vol / floor)) * discount,
                )
            )
            continue
        if vol >= ev.threshold and len(ents) > 1:
            action = (
                f"consolidate the campaign's {len(ents)} ad sets into one learner: pooled they "
                "reach the threshold"
            )
        else:
            action = (
                "optimise for an event higher up the funnel (more frequent) and consolidate "
                "ad sets until the volume reaches the threshold"
            )
        gap = max(0.0, 1.0 - vol / ev.threshold)
        out.append(
            _dx(
                cid,
                "signal_gap",
                f"{len(below)} of {len(ents)} ad set(s) below {ev.threshold} "
                f"{_what(evidence)} ({vol:.0f} pooled): too few events to leave learning{note}",
                evidence,
                action,
                SIGNAL_GAP_RECOVERY_DAYS,
                "info",
                (0.5 + 0.4 * gap) * discount,
            )
        )
    return out


def _signal_gap(ev: Evidence) -> list[dict[str, Any]]:
    return _volume_rules(ev, manual=False)


def _low_volume_manual(ev: Evidence) -> list[dict[str, Any]]:
    return _volume_rules(ev, manual=True)


def _creative_fatigue(ev: Evidence) -> list[dict[str, Any]]:
    fresh = {f["campaign_id"]: f for f in ev.findings("creative_freshness")}
    live: dict[str, int] = {}
    for c in ev.fatigue.get("creatives", []):
        if c["live"] and c["status"] == "fatigued":
            live[c["campaign_id"]] = live.get(c["campaign_id"], 0) + 1
    out = []
    for c in ev.fatigue.get("campaigns", []):
        cid = c["campaign_id"]
        share = float(c["fatigued_spend_share_7d"])
        finding = fresh.get(cid)
        flagged = bool(c["starvation"]) or (
            finding is not None and SEVERITY_RANK[finding["severity"]] >= SEVERITY_RANK["warn"]
        )
        if not flagged and share < FATIGUED_SHARE_INFO:
            continue
        since = int(c["days_since_newest_creative"])
        evidence: dict[str, Any] = {
            "days_since_newest_creative": since,
            "live_creatives": c["live_creatives"],
            "fatigued_live_creatives": live.get(cid, 0),
            "fatigued_spend_share_7d": share,
            "source": "estimate:fatigue" + ("+check:creative_freshness" if finding else ""),
        }
        bonus = 0.05 if since >= 2 * STARVATION_DAYS else 0.0
        out.append(
            _dx(
                cid,
                "creative_fatigue",
                str(c["message"]),
                evidence,
                "build a creative pipeline: launch fresh creatives now and on a steady cadence, "
                "retire the fatigued ones as the new ones take spend",
                CREATIVE_RECOVERY_DAYS,
                "warn" if flagged else "info",
                0.5 + 0.45 * share + bonus,
            )
        )
    return out


def _override_churn(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for cid, ents in ev.entities().items():
        recent = []
        for e in ents:
            n = sum(
                1
                for r in e["resets"]
                if r["actor"] == "human"
                and r["detail"] != "launch"
                and (ev.as_of - date.fromisoformat(r["date"])).days < OVERRIDE_WINDOW_DAYS
            )
            recent.append(n)
        worst = max(recent, default=0)
        lost = max((int(e["days_lost"]) for e in ents), default=0)
        if worst >= OVERRIDE_WARN_RESETS:
            severity = "warn"
        elif worst >= OVERRIDE_INFO_RESETS or (worst >= 1 and lost >= OVERRIDE_DAYS_LOST):
            severity = "info"
        else:
            continue
        out.append(
            _dx(
                cid,
                "override_churn",
                f"people's edits reset learning {sum(recent)} time(s) in the last "
                f"{OVERRIDE_WINDOW_DAYS} days ({worst} on the busiest ad set); the resets cost "
                f"up to {lost} days of learning per ad set",
                {
                    "human_resets_window": sum(recent),
                    "max_adset_human_resets_window": worst,
                    "human_resets_total": sum(int(e["human_resets"]) for e in ents),
                    "max_days_lost": lost,
                    "window_days": OVERRIDE_WINDOW_DAYS,
                    "source": "estimate:phase",
                },
                f"stop manual overrides for {OVERRIDE_FREEZE_DAYS} days: batch changes, keep "
                "budget moves under 20%, route edits through the campaign owner",
                OVERRIDE_FREEZE_DAYS,
                severity,
                min(0.95, 0.5 + 0.05 * worst),
            )
        )
    return out


def push_command(platform: str | None) -> str:
    """The command that sends a campaign's validated CRM outcomes to its platform.

    >>> push_command("google")[:40]
    'signalloop push google (with [push.googl'
    """
    if platform == "meta":
        return (
            "signalloop push meta (with [push.meta] pixel_id in signalloop.toml) sends the "
            "validated CRM stages to Meta's Conversions API"
        )
    if platform == "google":
        return (
            "signalloop push google (with [push.google] customer_id and conversion_actions) "
            "uploads the validated CRM stages as offline conversions"
        )
    return (
        "import the validated CRM stages as offline conversions (signalloop pushes to Meta "
        "and Google)"
    )


def _feedback_loop_broken(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for row in ev.depth:
        counts = row.get("counts", {})
        depth = str(row.get("depth"))
        known = row.get("outcome_known_share")
        evidence = {
            **{f"{k}s" if k != "revenue" else k: v for k, v in counts.items()},
            "outcome_known_share": known,
            "source": "estimate:feedback_depth+check:label_completeness",
        }
        if depth in ("click", "conversion") and counts.get("click", 0) > 0:
            what = "clicks" if depth == "click" else "conversions (leads without CRM outcomes)"
            out.append(
                _dx(
                    row["campaign_id"],
                    "feedback_loop_broken",
                    f"feedback stops at {what}: the platform optimises for them, not for "
                    "pipeline or revenue",
                    evidence,
                    "connect CRM outcomes (sql, won, deal value) and train on them: "
                    + push_command(ev.platforms.get(str(row["campaign_id"]))),
                    FEEDBACK_RECOVERY_DAYS,
                    "warn",
                    0.8 if depth == "click" else 0.7,
                )
            )
        elif known is not None and float(known) < FEEDBACK_MIN_KNOWN_SHARE:
            out.append(
                _dx(
                    row["campaign_id"],
                    "feedback_loop_broken",
                    f"only {float(known):.0%} of the leads old enough to have closed have a "
                    "known CRM outcome: won / lost are not flowing back",
                    evidence,
                    "connect CRM outcomes: sync won / lost stages back, then "
                    + push_command(ev.platforms.get(str(row["campaign_id"]))),
                    FEEDBACK_RECOVERY_DAYS,
                    "warn",
                    0.7,
                )
            )
    return out


def _overfitting(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for bt in ev.models.get("backtests", []) or []:
        gap = (bt.get("gap") or {}).get("auc")
        if not bt.get("overfit") and (gap is None or gap <= OVERFIT_GAP):
            continue
        g = float(gap or OVERFIT_GAP)
        name = bt.get("name") or bt.get("target") or "model"
        out.append(
            _dx(
                bt.get("campaign_id"),
                "overfitting",
                f"{name}: the random split beats the live (time-ordered) holdout by "
                f"{g:.3f} AUC: the backtest and live performance disagree",
                {
                    "auc_gap": g,
                    "random_auc": (bt.get("random_split") or {}).get("auc"),
                    "live_auc": (bt.get("time_split") or {}).get("auc"),
                    "source": "estimate:backtest",
                },
                "retrain on a recent window, simplify the model (fewer features, stronger "
                "regularisation) and judge it on the live holdout",
                OVERFIT_RECOVERY_DAYS,
                "critical" if g >= 2 * OVERFIT_GAP else "warn",
                0.6 + 2.0 * g,
            )
        )
    return out


def _audience_bias(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for a in ev.models.get("audience", []) or []:
        share = a.get("known_user_share")
        if share is None or float(share) < AUDIENCE_KNOWN_SHARE:
            continue
        s = float(share)
        out.append(
            _dx(
                a.get("campaign_id"),
                "audience_bias",
                f"{s:.0%} of conversions come from users already known before the click: the "
                "learner favours short-cycle returning users while new-user acquisition starves",
                {
                    "known_user_share": s,
                    "conversions": a.get("conversions"),
                    "source": "estimate:audience",
                },
                "feed CRM-based audiences (lookalikes of won deals, exclusions of existing "
                "customers) so the learner sees new-user outcomes",
                AUDIENCE_RECOVERY_DAYS,
                "warn",
                0.5 + (s - AUDIENCE_KNOWN_SHARE) / (1.0 - AUDIENCE_KNOWN_SHARE) * 0.4,
            )
        )
    return out


#: Every diagnosis rule, in the order they run (the output is sorted afterwards).
RULES: tuple[Rule, ...] = (
    Rule("integration_dropout", "an integration stopped delivering events", _integration_dropout),
    Rule(
        "attribution_error", "tracking, click-id capture or UTM naming broken", _attribution_error
    ),
    Rule("label_quality", "outcome labels overwritten, missing or late", _label_quality),
    Rule("learning_variance", "learning on track: calibration noise", _learning_variance),
    Rule("signal_gap", "too few events per ad set", _signal_gap),
    Rule("low_volume_manual", "too few events for any model", _low_volume_manual),
    Rule("creative_fatigue", "fatigued creatives, nothing fresh", _creative_fatigue),
    Rule("override_churn", "people's edits keep resetting learning", _override_churn),
    Rule("feedback_loop_broken", "optimising short of business outcomes", _feedback_loop_broken),
    Rule("overfitting", "backtest and live disagree (needs models['backtests'])", _overfitting),
    Rule(
        "audience_bias", "known users crowd out new ones (needs models['audience'])", _audience_bias
    ),
)

#: The failure types :data:`RULES` can report.
FAILURE_TYPES: tuple[str, ...] = tuple(r.failure_type for r in RULES)


def _order(d: Mapping[str, Any]) -> tuple[int, float, float, str, str]:
    return (
        -SEVERITY_RANK[d["severity"]],
        -float(d["impact"]["spend_per_day"] or 0.0),
        -float(d["confidence"]),
        d["campaign_id"] or "",
        d["failure_type"],
    )


def _impact(ev: Evidence, d: Mapping[str, Any]) -> dict[str, Any]:
    """The money at stake of a diagnosis (see the module docstring)."""
    acct = (ev.spend or {}).get("account")
    if not acct:
        return {
            "spend_per_day": None,
            "conversions_per_week": None,
            "share_of_account_spend": None,
            "conversions_source": None,
        }
    total = float(acct.get("spend_per_day") or 0.0)
    if d["campaign_id"] is not None:
        c = (ev.spend.get("campaigns") or {}).get(d["campaign_id"], {})
        spend = float(c.get("spend_per_day") or 0.0)
        conv = c.get("conversions_per_week")
        source = c.get("conversions_source")
    else:
        touches = d.get("_touches")
        share = 1.0 if touches is None else float(touches)
        spend = share * total
        acct_conv = acct.get("conversions_per_week")
        conv = share * float(acct_conv) if acct_conv is not None else None
        source = acct.get("conversions_source")
    return {
        "spend_per_day": round(spend, 2),
        "conversions_per_week": round(float(conv), 1) if conv is not None else None,
        "share_of_account_spend": round(spend / total, 4) if total else None,
        "conversions_source": source,
    }


def spend_at_stake(ws: Workspace, as_of: date, days: int = IMPACT_DAYS) -> dict[str, Any]:
    """Spend and conversions per campaign over the last ``days`` days, for :class:`Evidence`.

    Returns ``{"account": {...}, "campaigns": {campaign id: {...}}}``: per campaign
    ``spend_per_day`` (the window's spend / ``days``), ``conversions_per_week`` (its tracked
    first-party conversions in the window, scaled to 7 days; when it has no first-party
    conversion at all, the platform-reported ones of its spend rows; ``None`` with neither)
    and ``conversions_source`` (``first_party``, ``platform_reported`` or ``None``); the
    account the same summed, and its history totals ``conversions`` (every conversion,
    attributed or not), ``touchpoints`` and ``crm_records``.
    """
    ctx = CheckContext(ws, as_of, Settings())
    start = as_of - timedelta(days=days - 1)
    sp = ctx.table("spend")
    sp = sp.filter(sp.campaign_id.notnull())
    recent = sp.filter(sp.date >= start)
    spend = {
        str(r["campaign_id"]): (float(r["s"] or 0.0), r["p"])
        for r in recent.group_by("campaign_id")
        .aggregate(s=recent.spend.sum(), p=recent.platform_conversions.sum())
        .to_pyarrow()
        .to_pylist()
    }
    ever_reported = {
        str(r["campaign_id"])
        for r in sp.group_by("campaign_id")
        .aggregate(p=sp.platform_conversions.sum())
        .to_pyarrow()
        .to_pylist()
        if (r["p"] or 0) > 0
    }
    # (the per-day aggregate of the attributed conversions, not every conversion)
    c = ctx.rollup("conversion_kinds")
    tracked = c.filter(c.source.isin(["pixel", "server"]) | c.source.isnull())
    tracked = tracked.filter(tracked.campaign_id.notnull())
    conv = {
        str(r["campaign_id"]): (int(r["n"]), int(r["recent"] or 0))
        for r in tracked.group_by("campaign_id")
        .aggregate(n=tracked.n.sum(), recent=tracked.n.sum(where=tracked.day >= start))
        .to_pyarrow()
        .to_pylist()
    }
    scale = 7.0 / days
    campaigns: dict[str, dict[str, Any]] = {}
    for cid in sorted(set(spend) | set(conv)):
        s, reported = spend.get(cid, (0.0, None))
        if cid in conv:
            n: float | None = conv[cid][1] * scale
            source: str | None = "first_party"
        elif cid in ever_reported:
            n, source = float(reported or 0.0) * scale, "platform_reported"
        else:
            n, source = None, None
        campaigns[cid] = {
            "spend_per_day": s / days,
            "conversions_per_week": n,
            "conversions_source": source,
        }
    known = [v["conversions_per_week"] for v in campaigns.values()]
    sources = {v["conversions_source"] for v in campaigns.values()} - {None}
    account = {
        "spend_per_day": sum(v["spend_per_day"] for v in campaigns.values()),
        "conversions_per_week": sum(n for n in known if n is not None) if sources else None,
        "conversions_source": (
            sources.pop() if len(sources) == 1 else "mixed" if sources else None
        ),
        "conversions": int(c.n.sum().execute() or 0),
        # (every touchpoint is counted on its day in the daily rollup: no scan of them all)
        "touchpoints": int(ctx.rollup("touch_daily").n.sum().execute() or 0),
        "crm_records": _crm_records(ctx),
    }
    return {"account": account, "campaigns": campaigns}


def _crm_records(ctx: CheckContext) -> int:
    """The CRM records (distinct ids) with a row up to the cut.

    At the end of the data (the daily run) with the stored record campaigns current (one row
    per record, kept with the attribution), their count; else the distinct ids of the CRM
    rows. Counting those again took 0.30 s at 1,000 campaigns and 89 days and 0.61 s behind
    179, every day.
    """
    from signalloop.attribution import crm_record_campaigns, refresh_attribution

    if ctx.at_the_end and refresh_attribution(ctx.ws):
        return int(crm_record_campaigns(ctx.ws, ctx.cutoff).record_id.count().execute())
    return int(ctx.table("crm").record_id.nunique().execute())


def diagnose(
    ws: Workspace,
    as_of: date | None = None,
    *,
    settings: Settings | None = None,
    checks: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
    rules: tuple[Rule, ...] = RULES,
) -> dict[str, Any]:
    """Diagnose every campaign and the account as of a date.

    Parameters
    ----------
    ws
        The workspace.
    as_of
        Diagnosis date; default the ``checks`` report's date, else the last day with data.
    settings
        Project settings (learning threshold, check thresholds); defaults when ``None``.
    checks
        A precomputed :func:`~signalloop.checks.run_checks` report dict (``to_dict()``);
        computed (storing its exclusions, as a run does) when ``None``.
    state
        Precomputed estimates by name: ``phase``, ``fatigue``, ``nowcast`` (the reports'
        dicts), ``depth`` (rows of :func:`~signalloop.models.depth.feedback_depth`) and
        ``spend`` (:func:`spend_at_stake`); the missing ones are computed.
    models
        Model evidence: ``backtests`` (a list of :func:`~signalloop.models.backtest.backtest`
        dicts, each optionally with ``campaign_id`` and ``name``) for ``overfitting``, which
        nothing here computes; ``audience`` (a list of ``{"campaign_id",
        "known_user_share", "conversions"}``) for ``audience_bias``, computed with
        :func:`signalloop.audience.audience` when missing.
    rules
        The rules to run (default :data:`RULES`).

    Returns
    -------
    dict
        ``{"as_of": "YYYY-MM-DD", "diagnoses": [...]}``, each diagnosis with
        ``campaign_id`` (``None`` = account-wide), ``failure_type``, ``root_cause``,
        ``evidence`` (numbers plus ``source``), ``recovery_action``,
        ``expected_recovery_days``, ``severity``, ``confidence`` and ``impact``
        (``spend_per_day``, ``conversions_per_week``, ``share_of_account_spend``,
        ``conversions_source``), most severe first, then most spend at stake, then most
        confident.

    Raises
    ------
    UsageError
        The workspace holds no data.
    """
    from signalloop.checks import run_checks
    from signalloop.fatigue import fatigue
    from signalloop.models.depth import feedback_depth
    from signalloop.nowcast import nowcast
    from signalloop.phase import phase

    settings = settings or Settings()
    if as_of is None and checks is not None:
        as_of = date.fromisoformat(str(checks["as_of"]))
    as_of = as_of or default_as_of(ws)
    if as_of is None:
        raise UsageError(f"workspace {ws.path} holds no data yet: ingest something first")
    if checks is None:
        checks = run_checks(ws, as_of=as_of, settings=settings).to_dict()
    state = dict(state or {})
    if state.get("phase") is None:
        state["phase"] = phase(ws, as_of, settings=settings).to_dict()
    if state.get("fatigue") is None:
        state["fatigue"] = fatigue(ws, as_of, settings=settings).to_dict()
    if state.get("nowcast") is None:
        state["nowcast"] = nowcast(ws, as_of, settings=settings).to_dict()
    if state.get("depth") is None:
        state["depth"] = feedback_depth(ws, as_of=as_of, settings=settings, checks=checks)
    from signalloop.push.outcomes import campaign_platforms

    models = dict(models or {})
    if models.get("audience") is None:
        from signalloop.audience import audience

        models["audience"] = audience(ws, as_of)
    ev = Evidence(
        as_of=as_of,
        threshold=int(state["phase"].get("threshold", settings.learning_threshold)),
        checks=checks,
        phase=state["phase"],
        fatigue=state["fatigue"],
        nowcast=state["nowcast"],
        depth=list(state["depth"]),
        models=models,
        spend=state.get("spend") or spend_at_stake(ws, as_of),
        platforms=campaign_platforms(ws),
    )
    return diagnose_evidence(ev, rules)


def diagnose_evidence(ev: Evidence, rules: tuple[Rule, ...] = RULES) -> dict[str, Any]:
    """Run the rules over gathered evidence (no workspace needed).

    Parameters
    ----------
    ev
        The gathered evidence.
    rules
        The rules to run.

    Returns
    -------
    dict
        As :func:`diagnose`.

    Examples
    --------
    >>> ev = Evidence(date(2026, 3, 1), 50, {"findings": []}, {"entities": []},
    ...               {"campaigns": [], "creatives": []}, None, [],
    ...               {"audience": [{"campaign_id": "c1", "known_user_share": 0.9}]})
    >>> [d["failure_type"] for d in diagnose_evidence(ev)["diagnoses"]]
    ['audience_bias']
    """
    found = [d for rule in rules for d in rule.fn(ev)]
    for d in found:
        d["impact"] = _impact(ev, d)
        d.pop("_touches", None)
    found.sort(key=_order)
    return {"as_of": ev.as_of.isoformat(), "diagnoses": found}


__all__ = [
    "FAILURE_TYPES",
    "RULES",
    "Evidence",
    "Rule",
    "diagnose",
    "diagnose_evidence",
    "spend_at_stake",
]
