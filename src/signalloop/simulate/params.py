"""The model's fixed parameters: platforms, rates, lags, the learning phase, names and times.

Everything here is a constant; what varies per campaign is drawn in
:mod:`signalloop.simulate.account` and recorded in ``truth["campaigns"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from signalloop.contract import FUNNEL

Arr = npt.NDArray[Any]
#: seconds in a day and in an hour; every simulated time is seconds since the start of day 0
DAY = 86_400
H = 3_600

#: platform -> (utm_source, utm_medium, click-id URL parameter, click-id prefix)
PLATFORMS: dict[str, tuple[str, str, str, str]] = {
    "meta": ("facebook", "paid_social", "fbclid", "IwAR"),
    "google": ("google", "cpc", "gclid", "Cj0KCQiA"),
    "linkedin": ("linkedin", "paid_social", "li_fat_id", "AQE"),
}
CPM = {"meta": 9.0, "google": 24.0, "linkedin": 38.0}
CTR = {"meta": 0.013, "google": 0.034, "linkedin": 0.0065}
CVR = {"lead": {"meta": 0.07, "google": 0.05, "linkedin": 0.10}, "purchase": {"meta": 0.03}}
CVR["purchase"].update(google=0.04, linkedin=0.02)
STAGE_RATES = (0.5, 0.5, 0.6, 0.3)
STAGE_LAG_DAYS = (1.5, 4.0, 7.0, 21.0)
STAGES = (*FUNNEL, "lost")
LEARNING_THRESHOLD, LEARNING_WINDOW = 50, 7
PHASE_CVR = {"learning": (0.8, 0.3), "learning_limited": (0.9, 0.2), "stable": (1.0, 0.08)}
SIGNIFICANT = ("bid", "bid_strategy", "targeting", "optimization_event")
FATIGUE_ONSET, REPLACE_AT = 0.7, 0.6
#: healthy campaigns (``SimulationConfig.healthy``): every ad set's expected conversions per
#: 7 days at the baseline budget are at least HEALTHY_VOLUME x the learning threshold; an ad
#: set is refreshed (with certainty) once a live creative's expected CTR is below
#: HEALTHY_REFRESH_AT of its peak, just before the fatigue onset, taking along every creative
#: below HEALTHY_BATCH_AT (one learning reset for the batch); and the campaign launches a new
#: creative at least every HEALTHY_CADENCE_DAYS days (the stalest one's successor)
HEALTHY_VOLUME, HEALTHY_REFRESH_AT, HEALTHY_BATCH_AT = 2.0, 0.75, 0.85
HEALTHY_CADENCE_DAYS = 14
#: platform-reported conversions (``spend.platform_conversions``): the platform counts the
#: tracked (pixel / server) conversions on their click day and ad, x a per-campaign over-count
#: factor ~ U(PLATFORM_OVERCOUNT) (view-through and modelled conversions, and conversions that
#: another platform's click also claims inside the attribution windows) with a per
#: campaign-day LogNormal(-s^2 / 2, s) factor on the excess, s = PLATFORM_DAY_SIGMA; drawn
#: from ``default_rng([seed, PLATFORM_STREAM, campaign index])``
PLATFORM_OVERCOUNT = (1.10, 1.40)
PLATFORM_DAY_SIGMA = 0.3
PLATFORM_STREAM = 5
#: conversion kinds (the ``kind`` column) and sources (``source``); kind indexes 2-4 are the
#: offline / CRM conversions of lead campaigns: a won deal and the sql and opportunity stages
KIND_NAMES = ("purchase", "lead", "deal", "sql", "opportunity")
SOURCE_NAMES = ("pixel", "server", "offline", "crm")
#: conversion-id prefix per kind, followed by the click number N: cvN, dlN, sqN, opN
KIND_PREFIXES = ("cv", "cv", "dl", "sq", "op")
#: CRM stage index (into :data:`STAGES`) -> kind index of the offline conversion it emits
OFFLINE_KINDS = {
    STAGES.index(stage): KIND_NAMES.index(kind)
    for stage, kind in (("sql", "sql"), ("opportunity", "opportunity"), ("won", "deal"))
}
OWNERS = ("alex.kim", "maria.lopez", "sam.okafor", "jin.chen", "priya.nair", "tom.berg")
THEMES = ("demo_requests", "spring_sale", "free_trial", "bestsellers", "webinar", "retargeting")
TARGETING = (
    "age 25-54; interests saas marketing",
    "age 25-54; lookalike 1% customers",
    "age 30-65; job titles marketing managers",
    "broad; advantage+ audience",
    "age 21-44; interests ecommerce shopping",
    "remarketing 30d site visitors",
)
#: messy (utm_source, utm_medium) variants per platform for the ``utm_mess`` fault
MESSY_UTM = {
    "meta": "Facebook/paid_social|FACEBOOK/paid_social|facebook /paid_social|fb/paid_social|"
    "facebook/paid-social|facebook/Paid Social|fb/social",
    "google": "Google/cpc|GOOGLE/cpc|google /cpc|adwords/cpc|google/ppc|google/CPC|adwords/ppc",
    "linkedin": "LinkedIn/paid_social|LINKEDIN/paid_social|linkedin /paid_social|li/paid_social|"
    "linkedin/paid-social",
}
#: relative click volume per hour of the day (UTC), hours 0..23
HOUR_WEIGHTS: tuple[float, ...] = (3, 2.5, 2, 1.5, 1, 0.8, 0.6, 0.6, 0.8, 1.2, 1.6, 2)
HOUR_WEIGHTS += (2.4, 2.8, 3, 3.2, 3.3, 3.4, 3.5, 3.6, 3.8, 4, 3.8, 3.4)
HOUR_CDF = np.cumsum(np.r_[HOUR_WEIGHTS])
HOUR_CDF /= HOUR_CDF[-1]
#: characters of click-id tokens
ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8
)
