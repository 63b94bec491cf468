"""Audience and ad-context traits of each click, with their exact true effect (the oracle).

The traits (:data:`TRAIT_COLUMNS`: ``device``, ``age_band``, ``placement`` and, for lead
campaigns, ``company_size``) are drawn *after* the world's outcomes are decided, conditionally
on each click's outcome **depth** ``d`` (:data:`DEPTHS`): 0 no conversion, 1 converted, 2 its
CRM record reached sql (lead campaigns), 3 it reached won. They come from a random stream of
their own, ``np.random.default_rng([seed, 7919, campaign index])``, which nothing else draws
from, so every other row, value and truth key is the same as without them.

Each trait is drawn independently given ``d`` with category probabilities
``pi_d[k] ∝ pi0[k] * exp(beta_d * effect[k])`` (``beta_0 = 0``). By Bayes the true probability
that a click with ad-set conversion probability ``p`` and traits ``t`` converts is

    P(convert | p, t) = p * L1(t) / (p * L1(t) + (1 - p) * L0(t)),
    L1(t) = sum_{d >= 1} P(d | convert) * prod_traits pi_d(t),  L0(t) = prod_traits pi_0(t),

with ``P(d | convert)`` from the campaign's stage rates (lead -> mql -> sql -> opportunity ->
won, applied successively; see :func:`depth_probs`). :func:`draw_traits` gives the trait
columns, that oracle per click (also ``P(sql)`` and ``P(won)`` for lead campaigns) and the
design for ``truth["traits"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from signalloop.simulate.entities import Campaign
from signalloop.simulate.params import KIND_NAMES, Arr
from signalloop.simulate.tables import strings

if TYPE_CHECKING:
    from signalloop.simulate.account import Account

#: outcome depths of a click; purchase campaigns use the first two only
DEPTHS = ("none", "conversion", "sql", "won")
#: the trait columns appended to the touchpoints table, in order
TRAIT_COLUMNS = ("device", "age_band", "placement", "company_size")
#: the traits' random stream: ``default_rng([seed, TRAIT_STREAM, campaign index])``
TRAIT_STREAM = 7919


@dataclass(frozen=True)
class Trait:
    """One trait: categories, base probabilities ``pi0`` and the effect on outcome depth.

    ``beta[d - 1]`` scales ``effect`` at depth ``d`` (1 conversion, 2 sql, 3 won).
    """

    name: str
    categories: tuple[str, ...]
    pi0: tuple[float, ...]
    effect: tuple[float, ...]
    beta: tuple[float, float, float]

    def pi(self, depths: int) -> Arr:
        """Category probabilities per depth ``0 .. depths - 1`` (rows), each row summing to 1."""
        base, eff = np.asarray(self.pi0), np.asarray(self.effect)
        rows = [base / base.sum()]
        for d in range(1, depths):
            w = base * np.exp(self.beta[d - 1] * eff)
            rows.append(w / w.sum())
        return np.vstack(rows)


DEVICE = Trait(
    "device",
    ("mobile", "desktop", "tablet"),
    (0.62, 0.30, 0.08),
    (-0.25, 0.35, 0.05),
    (1, 1.2, 1.4),
)
AGE_BAND = Trait(
    "age_band",
    ("18-24", "25-34", "35-44", "45-54", "55+"),
    (0.22, 0.30, 0.22, 0.15, 0.11),
    (-0.45, 0.05, 0.25, 0.20, -0.15),
    (1.0, 1.0, 1.0),
)
#: placements per platform
PLACEMENT = {
    "meta": Trait(
        "placement",
        ("feed", "stories", "reels", "audience_network"),
        (0.50, 0.25, 0.15, 0.10),
        (0.20, -0.10, -0.20, -0.55),
        (1.0, 1.0, 1.0),
    ),
    "google": Trait(
        "placement",
        ("search", "display", "youtube", "discover"),
        (0.55, 0.25, 0.10, 0.10),
        (0.35, -0.45, -0.25, -0.10),
        (1.0, 1.0, 1.0),
    ),
    "linkedin": Trait(
        "placement",
        ("feed", "sponsored_messaging", "right_rail"),
        (0.70, 0.20, 0.10),
        (0.10, 0.35, -0.45),
        (1.0, 1.0, 1.0),
    ),
}
#: B2B signal: weak on converting, strong on reaching sql and won
COMPANY_SIZE = Trait(
    "company_size",
    ("1-10", "11-50", "51-200", "201-1000", "1000+"),
    (0.35, 0.25, 0.18, 0.13, 0.09),
    (-0.60, -0.25, 0.10, 0.40, 0.55),
    (0.3, 1.2, 1.5),
)


def design(c: Campaign) -> list[Trait]:
    """The traits of campaign ``c``, in :data:`TRAIT_COLUMNS` order (those it has)."""
    out = [DEVICE, AGE_BAND, PLACEMENT[c.platform]]
    return [*out, COMPANY_SIZE] if c.objective == "lead" else out


def depth_probs(c: Campaign) -> Arr:
    """``P(d | converted)`` for ``d = 1 ..`` (lead: 1, 2, 3; purchase: 1).

    A lead reaches sql with probability ``r_mql * r_sql`` and won with ``r_mql * r_sql *
    r_opportunity * r_won`` (the stage rates apply successively, independently of the click).
    """
    if c.objective != "lead":
        return np.array([1.0])
    r = c.stage_rates
    sql, won = r[0] * r[1], r[0] * r[1] * r[2] * r[3]
    return np.array([1.0 - sql, sql - won, won])


def click_depths(tn: Arr, conv: dict[str, Arr]) -> Arr:
    """Outcome depth of each click ``tn`` from the uncensored conversions (offline kinds too)."""
    kind, ctn = conv["kind"], conv["tn"]
    depth = np.zeros(len(tn), dtype=np.int64)
    depth[np.isin(tn, ctn[kind <= 1])] = 1  # purchase or lead
    depth[np.isin(tn, ctn[kind == KIND_NAMES.index("sql")])] = 2
    depth[np.isin(tn, ctn[kind == KIND_NAMES.index("deal")])] = 3
    return depth


def draw_traits(
    acct: Account, touches: dict[str, Arr], conv: dict[str, Arr]
) -> tuple[dict[str, pa.Array], pa.Table, dict[str, Any]]:
    """Draw every click's traits given its outcome depth; the oracle and the design.

    Parameters
    ----------
    acct
        The account, after every day was delivered.
    touches
        The clicks' arrays in touchpoints-table order (with ``p``, the ad set's conversion
        probability of the click).
    conv
        The true conversions (before censoring and observation faults).

    Returns
    -------
    tuple
        The trait columns (string arrays in table order, ``company_size`` null outside lead
        campaigns); the oracle table (``touch_id``, ``campaign_id``, ``depth``, ``p_adset``,
        ``p_conversion``, ``p_sql``, ``p_won``; one row per touchpoint, in table order; the
        last two null outside lead campaigns); and ``truth["traits"]``.
    """
    n, tn, camp, p = len(touches["tn"]), touches["tn"], touches["camp"], touches["p"]
    depth = click_depths(tn, conv)
    idx = {name: np.full(n, -1, dtype=np.int64) for name in TRAIT_COLUMNS}
    cats = {name: _categories(acct, name) for name in TRAIT_COLUMNS}
    probs = {k: np.full(n, np.nan) for k in ("p_conversion", "p_sql", "p_won")}
    per_campaign: dict[str, Any] = {}
    for c in acct.campaigns:
        rows = np.flatnonzero(camp == c.idx)
        rng = np.random.default_rng([acct.config.seed, TRAIT_STREAM, c.idx])
        prior = depth_probs(c)
        nd = len(prior) + 1
        lik = np.ones((nd, len(rows)))  # prod over traits of pi_d(t), per depth d
        for t in design(c):
            pi = t.pi(nd)
            cdf = np.cumsum(pi, axis=1)
            d = depth[rows]
            k = np.minimum((rng.random(len(rows))[:, None] >= cdf[d]).sum(axis=1), len(pi[0]) - 1)
            lik *= pi[:, k]
            idx[t.name][rows] = _positions(cats[t.name], t.categories)[k]
        pc = p[rows]
        w = np.vstack([(1.0 - pc) * lik[0], pc * prior[:, None] * lik[1:]])
        total = w.sum(axis=0)
        probs["p_conversion"][rows] = w[1:].sum(axis=0) / total
        if c.objective == "lead":
            probs["p_sql"][rows] = w[2:].sum(axis=0) / total
            probs["p_won"][rows] = w[3] / total
        per_campaign[c.id] = _campaign_design(c)
    columns = {name: strings(cats[name], idx[name]) for name in TRAIT_COLUMNS}
    oracle = pa.table(
        {
            "touch_id": pa.array(np.char.add("t", tn.astype(str))),
            "campaign_id": strings(acct.ids, camp),
            "depth": pa.array(depth),
            "p_adset": pa.array(p.astype(float)),
            **{k: pa.array(v, mask=np.isnan(v)) for k, v in probs.items()},
        }
    )
    truth = {
        "columns": list(TRAIT_COLUMNS),
        "depths": list(DEPTHS),
        "stream": f"numpy default_rng([seed, {TRAIT_STREAM}, campaign index])",
        "model": "traits drawn independently given the click's outcome depth d (0 none, "
        "1 converted, 2 reached sql, 3 reached won; purchase campaigns 0-1), after the "
        "outcomes; pi_d[k] = pi0[k] * exp(beta_d * effect[k]) / sum, beta_0 = 0; "
        "P(convert | p, t) = p L1 / (p L1 + (1 - p) L0), L1 = sum_{d>=1} P(d | convert) "
        "prod_traits pi_d(t), L0 = prod_traits pi_0(t), p the ad set's conversion "
        "probability of the click (Simulation.oracle has it per click)",
        "campaigns": per_campaign,
    }
    return columns, oracle, truth


def _categories(acct: Account, name: str) -> list[str]:
    """Every category of trait column ``name`` over the account's campaigns, in order."""
    out: list[str] = []
    for c in acct.campaigns:
        for t in design(c):
            if t.name == name:
                out += [x for x in t.categories if x not in out]
    return out


def _positions(values: list[str], wanted: tuple[str, ...]) -> Arr:
    return np.array([values.index(x) for x in wanted], dtype=np.int64)


def _campaign_design(c: Campaign) -> dict[str, Any]:
    """One campaign's trait design for the truth: P(d | convert) and per trait pi_d."""
    prior = depth_probs(c)
    nd = len(prior) + 1
    traits: dict[str, Any] = {}
    for t in design(c):
        pi = t.pi(nd)
        ratio = prior @ (pi[1:] / pi[0])  # P(t | convert) / P(t | no conversion)
        traits[t.name] = {
            "categories": list(t.categories),
            "effect": list(t.effect),
            "beta": {DEPTHS[d]: float(t.beta[d - 1]) for d in range(1, nd)},
            "pi": {DEPTHS[d]: _rn(pi[d]) for d in range(nd)},
            "likelihood_ratio": _rn(ratio, 6),
            "likelihood_ratio_range": round(float(ratio.max() / ratio.min()), 4),
        }
    return {
        "objective": c.objective,
        "platform": c.platform,
        "p_depth_given_conversion": {
            DEPTHS[d + 1]: round(float(x), 10) for d, x in enumerate(prior)
        },
        "traits": traits,
    }


def _rn(a: Arr, nd: int = 10) -> list[float]:
    return [round(v, nd) for v in np.asarray(a, dtype=float).tolist()]
