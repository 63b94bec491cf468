"""The simulated world's objects (campaigns, ad sets, ads, creatives, edits) and event arrays.

Events travel as column arrays, ``dict[str, ndarray]`` laid out by :data:`SCHEMAS`, with
entities as indexes into the :class:`~signalloop.simulate.account.Account`'s lists and times
in seconds since the start of day 0; :func:`cols`, :func:`concat` and :func:`take` build,
join and select them.

>>> parts = [cols("crm", [1], [0], [0], [60], [7], [float("nan")], [2])]
>>> take(concat(parts * 2, "crm"), [1])["ts"]
array([60])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from signalloop.simulate.params import Arr

#: internal column layouts of the world's event arrays (a click's ``p`` is the conversion
#: probability its ad set had that day; the click converted with exactly that probability)
SCHEMAS: dict[str, tuple[tuple[str, Any], ...]] = {
    kind: tuple(
        (
            c,
            "S22"
            if c == "token"
            else float
            if c in {"spend", "value", "amount", "p"}
            else np.int64,
        )
        for c in names.split()
    )
    for kind, names in {
        "spend": "day camp adset ad creative impressions clicks spend",
        "clicks": "tn camp adset ad creative ts user token p",
        "conversions": "tn camp adset ad creative user click_ts ts value source kind token",
        "crm": "record camp stage ts user amount owner",
    }.items()
}


@dataclass
class Creative:
    """One creative: its CTR decay parameters and the impressions it has served."""

    id: str
    campaign: int
    adset: int
    ad: int
    launch_day: int
    peak_ctr: float
    floor: float
    lam_freq: float
    lam_age: float
    cum_imp: float = 0.0
    retire_day: int | None = None
    onset_day: int | None = None

    def fresh(self, day: int, audience: float) -> float:
        """Expected CTR on ``day`` as a share of the peak."""
        x = self.lam_freq * self.cum_imp / audience + self.lam_age * (day - self.launch_day)
        return self.floor + (1.0 - self.floor) * math.exp(-x)


@dataclass
class Ad:
    """One ad: the creative it runs now and the days it is paused."""

    id: str
    adset: int
    creative: int = -1
    paused: set[int] = field(default_factory=set)


@dataclass
class Adset:
    """One ad set: its delivery response, audience and learning-phase state."""

    id: str
    name: str
    campaign: int
    share: float
    cvr: float
    k: float
    b: float
    audience: float
    ctr_base: float
    ads: list[int] = field(default_factory=list)
    phase: str = "learning"
    reset_day: int = 0
    conv_since: int = 0
    conversions: list[int] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


@dataclass
class Campaign:
    """One campaign: platform, objective, baseline budget and its drawn parameters.

    ``last_launch`` is the day its newest creative launched.
    """

    idx: int
    id: str
    name: str
    platform: str
    objective: str
    budget: float
    delay_mu: float
    delay_sigma: float
    value_mean: float
    pixel_share: float
    stage_rates: tuple[float, ...]
    amount_mean: float
    adsets: list[int] = field(default_factory=list)
    n_creatives: int = 0
    last_launch: int = 0


@dataclass(frozen=True)
class Change:
    """One edit-log row; ``ts`` in seconds since the start of day 0."""

    ts: int
    level: str
    entity_id: str
    field: str
    old_value: str
    new_value: str
    actor: str


@dataclass
class DayEvents:
    """What one day of delivery produced; times in seconds since the start of day 0.

    ``spend``, ``clicks``, ``conversions`` and ``crm`` are column arrays (see :data:`SCHEMAS`;
    entities as indexes into the account's lists). ``conversions`` holds purchases, leads and
    the CRM path's offline conversions (sql, opportunity, deal) at their true event time,
    which may be after the day or the run. ``learning`` maps
    each ad set id to the phase that governed the day.
    """

    day: int
    spend: dict[str, Arr]
    clicks: dict[str, Arr]
    conversions: dict[str, Arr]
    crm: dict[str, Arr]
    changes: list[Change]
    learning: dict[str, str]


def cols(kind: str, *arrays: Any) -> dict[str, Arr]:
    """Column arrays of ``kind`` from ``arrays`` given in :data:`SCHEMAS` order."""
    return {n: np.asarray(a, dtype=t) for (n, t), a in zip(SCHEMAS[kind], arrays, strict=True)}


def concat(parts: Sequence[dict[str, Arr]], kind: str) -> dict[str, Arr]:
    """The rows of ``parts`` one after another (empty arrays of ``kind`` if there are none)."""
    if not parts:
        return {n: np.empty(0, dtype=t) for n, t in SCHEMAS[kind]}
    return {n: np.concatenate([p[n] for p in parts]) for n, _ in SCHEMAS[kind]}


def take(arrays: dict[str, Arr], idx: Arr | Sequence[int]) -> dict[str, Arr]:
    """The rows ``idx`` (indexes or a boolean mask) of every column."""
    return {k: v[idx] for k, v in arrays.items()}
