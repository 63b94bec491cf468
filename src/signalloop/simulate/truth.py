"""The ground truth: everything the generative model knows, as a JSON-ready dictionary.

:func:`build_truth` gives the config, the model's formulas, each campaign's drawn parameters,
the true daily series (by click date and by event date), every creative's decay and fatigue
onset, and each ad set's learning-phase history; :func:`~signalloop.simulate.simulation.simulate`
adds ``censored`` and ``faults``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from signalloop.contract import FUNNEL
from signalloop.simulate.entities import Campaign
from signalloop.simulate.params import (
    DAY,
    FATIGUE_ONSET,
    KIND_NAMES,
    LEARNING_THRESHOLD,
    LEARNING_WINDOW,
    OFFLINE_KINDS,
    PHASE_CVR,
    PLATFORM_DAY_SIGMA,
    PLATFORM_OVERCOUNT,
    PLATFORMS,
    REPLACE_AT,
    SIGNIFICANT,
    STAGE_LAG_DAYS,
    Arr,
)

if TYPE_CHECKING:
    from signalloop.simulate.account import Account


def _r(x: float, nd: int = 6) -> float:
    """``x`` as a float rounded to ``nd`` decimals."""
    return round(float(x), nd)


def _rl(a: Arr, nd: int = 2) -> list[float]:
    """``a`` as a list of floats rounded to ``nd`` decimals."""
    return [round(v, nd) for v in np.asarray(a, dtype=float).tolist()]


def build_truth(acct: Account, world: dict[str, dict[str, Arr]]) -> dict[str, Any]:
    """Everything the generative model knows.

    Parameters
    ----------
    acct
        The account, after every day was delivered.
    world
        The true events per kind (``spend``, ``clicks``, ``conversions``, ``crm``), before
        censoring and observation faults.

    Returns
    -------
    dict
        ``config`` (with the data ``shape``, the ``kinds`` it writes and ``click_ts``),
        ``model``, ``campaigns``, ``daily``, ``creatives``, ``learning``. With
        ``SimulationConfig.healthy`` set, ``config["healthy"]`` lists it and each healthy
        campaign has ``healthy``: its ``drawn_budget`` and the ``budget_scale`` applied.
        ``daily[campaign]`` holds per-day lists: ``budget``, ``spend``, ``impressions``,
        ``clicks``, and for every ``X_by_click_date`` also ``X_by_event_date`` (the day the
        click happened / the conversion did, whether or not that is observed by the end):
        ``conversions`` and ``value`` (purchases and leads), ``deals`` and ``deal_value``,
        ``sqls``, ``opportunities`` and ``opportunity_value``, and ``offline_conversions``
        (sql + opportunity + deal rows, everything of source offline / crm).
    """
    cfg, days, k = acct.config, acct.days, len(acct.campaigns)

    def grid(camp: Arr, day: Arr, weights: Arr | None = None) -> Arr:
        ok = (day >= 0) & (day < days)
        w = None if weights is None else np.nan_to_num(weights[ok])
        return np.bincount(camp[ok] * days + day[ok], weights=w, minlength=k * days).reshape(
            k, days
        )

    s, cv = world["spend"], world["conversions"]
    cols = {"spend": grid(s["camp"], s["day"], s["spend"])}
    cols |= {n: grid(s["camp"], s["day"], s[n].astype(float)) for n in ("impressions", "clicks")}
    kind = cv["kind"]
    for name, vname, m in (
        ("conversions", "value", kind <= 1),
        ("deals", "deal_value", kind == KIND_NAMES.index("deal")),
        ("sqls", None, kind == KIND_NAMES.index("sql")),
        ("opportunities", "opportunity_value", kind == KIND_NAMES.index("opportunity")),
        ("offline_conversions", None, np.isin(kind, list(OFFLINE_KINDS.values()))),
    ):
        camp, val = cv["camp"][m], cv["value"][m]
        for by, day in (("click", cv["click_ts"][m] // DAY), ("event", cv["ts"][m] // DAY)):
            cols[f"{name}_by_{by}_date"] = grid(camp, day)
            if vname:
                cols[f"{vname}_by_{by}_date"] = grid(camp, day, val)
    daily = {
        c.id: {"budget": _rl(acct.budget_plan[c.idx])} | {n: _rl(a[c.idx]) for n, a in cols.items()}
        for c in acct.campaigns
    }
    campaigns = {c.id: _campaign_truth(acct, c) for c in acct.campaigns}
    creatives = [
        {
            "creative_id": cr.id,
            "campaign": acct.ids[cr.campaign],
            "adset": acct.adsets[cr.adset].id,
            "ad": acct.ads[cr.ad].id,
            "launch_day": cr.launch_day,
            "retire_day": cr.retire_day,
            "peak_ctr": _r(cr.peak_ctr),
            "fatigue_onset_day": cr.onset_day,
            "decay": {
                "floor": _r(cr.floor, 4),
                "lam_freq": _r(cr.lam_freq, 4),
                "lam_age": _r(cr.lam_age, 5),
                "final_frequency": _r(cr.cum_imp / acct.adsets[cr.adset].audience, 4),
            },
        }
        for cr in sorted(acct.creatives, key=lambda x: (x.campaign, x.launch_day, x.ad))
    ]
    learning = {
        a.id: {
            "campaign": acct.ids[a.campaign],
            "resets": a.resets,
            "states": a.states,
            "conversions": a.conversions,
        }
        for a in acct.adsets
    }
    faults = [
        {"name": f.name, "campaign": f.campaign, "start": f.start, "end": f.end} for f in cfg.faults
    ]
    config: dict[str, Any] = {
        "days": days,
        "campaigns": k,
        "seed": cfg.seed,
        "start": cfg.start.isoformat(),
        "end": acct.date(days - 1),
        "faults": faults,
        "shape": cfg.shape,
        "kinds": list(cfg.kinds),
        "click_ts": cfg.click_ts,
    }
    if cfg.healthy:  # only when asked, so the default truth is as it always was
        config["healthy"] = list(cfg.healthy)
        for ci, note in acct.healthy.items():
            campaigns[acct.ids[ci]]["healthy"] = note
    return {
        "config": config,
        "model": {
            "response": "impressions = k * spend ** b; clicks ~ Binomial(impressions, ctr)",
            "ctr": "peak * (floor + (1 - floor) * exp(-lam_freq * frequency - lam_age * age_days))",
            "frequency": "cumulative impressions of the creative / audience of its ad set",
            "fatigue_onset": f"first day the expected CTR is below {FATIGUE_ONSET} x peak",
            "replace_below": REPLACE_AT,
            "learning": {
                "threshold": LEARNING_THRESHOLD,
                "window_days": LEARNING_WINDOW,
                "cvr_multiplier": {p: v[0] for p, v in PHASE_CVR.items()},
                "significant": ["budget > 20%", *SIGNIFICANT, "creative", "pause >= 7 days"],
            },
            "delay": "click-to-conversion hours ~ LogNormal(mu, sigma)",
            "ids": "touch tN, conversion cvN, CRM record recN and its offline conversions sqN "
            "(sql), opN (opportunity), dlN (won deal) share the click number N",
            "offline_conversions": "a CRM record reaching sql, opportunity or won is a "
            "conversion of kind sql, opportunity or deal at that stage's time",
            "platform_conversions": "per spend row: tracked pixel/server conversions on the "
            "click day + floor(tracked * (overcount - 1) * e + u); overcount ~ "
            f"U{PLATFORM_OVERCOUNT} per campaign, e ~ LogNormal(-s^2/2, s) per campaign-day "
            f"(s = {PLATFORM_DAY_SIGMA}), u ~ U(0, 1)",
        },
        "campaigns": campaigns,
        "daily": daily,
        "creatives": creatives,
        "learning": learning,
    }


def _campaign_truth(acct: Account, c: Campaign) -> dict[str, Any]:
    """One campaign's drawn parameters: delay, value, CRM funnel and ad sets."""
    lead = c.objective == "lead"
    crm = {
        "stage_rates": {s: _r(r, 4) for s, r in zip(FUNNEL[1:], c.stage_rates, strict=True)},
        "lag_median_days": dict(
            zip(("mql", "sql", "opportunity", "won"), STAGE_LAG_DAYS, strict=True)
        ),
        "lag_sigma": 0.8,
        "lost_share": 0.8,
        "lost_lag_median_days": 10.0,
        "amount_mean": _r(c.amount_mean, 2),
        "deal_source": "crm" if c.platform == "google" else "offline",
        "offline_conversion_kinds": [KIND_NAMES[k] for k in OFFLINE_KINDS.values()],
    }
    adsets = {
        a.id: {
            "name": a.name,
            "budget_share": _r(a.share, 4),
            "cvr": _r(a.cvr),
            "k": _r(a.k, 4),
            "b": _r(a.b, 4),
            "ctr_base": _r(a.ctr_base),
            "audience": _r(a.audience, 1),
            "ads": [acct.ads[i].id for i in a.ads],
        }
        for a in (acct.adsets[i] for i in c.adsets)
    }
    return {
        "name": c.name,
        "platform": c.platform,
        "objective": c.objective,
        "utm_source": PLATFORMS[c.platform][0],
        "utm_medium": PLATFORMS[c.platform][1],
        "baseline_budget": _r(c.budget, 2),
        "pixel_share": _r(c.pixel_share, 4),
        "delay": {
            "mu": _r(c.delay_mu),
            "sigma": _r(c.delay_sigma),
            "median_hours": _r(math.exp(c.delay_mu), 3),
            "mean_hours": _r(math.exp(c.delay_mu + c.delay_sigma**2 / 2), 3),
        },
        "value": None
        if lead
        else {"distribution": "lognormal", "mean": _r(c.value_mean, 2), "sigma": 0.6},
        "crm": crm if lead else None,
        "adsets": adsets,
    }
