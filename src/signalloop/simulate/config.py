"""What to simulate: :class:`SimulationConfig`, the faults (:class:`Fault`, :func:`parse_fault`).

>>> cfg = SimulationConfig(days=30, campaigns=2, faults=(Fault("low_volume", "c02", 7, 20),))
>>> cfg.faults[0].covers("c02"), cfg.faults[0].covers("c01")
(True, False)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from signalloop.errors import UsageError

#: Every fault the simulator can inject. ``creative_starvation``, ``override_storm``,
#: ``low_volume`` and ``audience_bias`` change the world; the others only what is observed
#: (``export_glitches`` only the written CSV text; ``click_id_loss`` only the conversions
#: table: the click id, click time and campaign of a share of the campaign's conversions;
#: ``crm_duplicates`` only the CRM: records of the window entered a second time under a new
#: record id, same person and identity, stage rows copied minutes to hours later).
FAULT_NAMES: tuple[str, ...] = (
    "tracking_outage",
    "crm_sync_dropout",
    "utm_mess",
    "duplicate_events",
    "stage_overwrite",
    "late_offline_conversions",
    "creative_starvation",
    "override_storm",
    "low_volume",
    "audience_bias",
    "export_glitches",
    "click_id_loss",
    "crm_duplicates",
)

#: Data shape -> the kinds the simulator writes for it, from the least data to the most: a
#: platform export alone (``spend``, with the platform-reported conversions), spend and the
#: first-party conversions (``spend_conversions``: an order or deal export whose campaign came
#: from the UTM and whose click time the site stored), the same with the CRM
#: (``crm``) and every kind with click-level touchpoints and the edit log (``full``).
SHAPE_KINDS: dict[str, tuple[str, ...]] = {
    "spend": ("spend",),
    "spend_conversions": ("spend", "conversions"),
    "crm": ("spend", "conversions", "crm"),
    "full": ("spend", "touchpoints", "conversions", "crm", "changes"),
}
#: The data shapes (:data:`SHAPE_KINDS`), from the least data to the most.
SHAPES: tuple[str, ...] = tuple(SHAPE_KINDS)


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    ``name`` (one of :data:`FAULT_NAMES`) applies to ``campaign`` (an id, or ``"*"`` for every
    campaign) on the 0-based days ``start`` .. ``end``, inclusive.
    """

    name: str
    campaign: str
    start: int
    end: int

    def covers(self, campaign: str) -> bool:
        """Whether the fault applies to ``campaign``."""
        return self.campaign in ("*", campaign)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: length, campaigns, seed, first day, faults, healthy campaigns, shape.

    ``healthy`` names campaigns (ids, or ``"*"`` for every campaign) that the account runs
    well: a budget large enough for every ad set to clear the learning threshold with a
    margin, and an automated creative pipeline that replaces creatives before their fatigue
    onset and launches something new at least every
    :data:`~signalloop.simulate.params.HEALTHY_CADENCE_DAYS` days (see
    :meth:`~signalloop.simulate.account.Account.make_healthy`). Faults still apply on top.
    The default (none) leaves the simulation exactly as without the option; naming a
    campaign changes only that campaign's rows.

    ``shape`` (one of :data:`SHAPES`, default ``"full"``) is what the account exports: the
    kinds :data:`SHAPE_KINDS` names. The world is the same for every shape (same seed, same
    delivery, conversions, platform counts and truth, but for ``truth["config"]``'s
    ``shape`` and ``kinds``); only what is observed differs. In the
    partial shapes (every shape but ``full``) every conversion carries the campaign_id its
    click's UTM tags named (in ``full`` only the pixel's do; the others join a touchpoint by
    click_id), besides its click_ts, user_id and click_id.

    ``click_ts`` False leaves the click_ts column out of the conversions table (a conversion
    export that never stored the click time), in any shape; the default True writes it.

    >>> SimulationConfig(shape="spend").kinds
    ('spend',)
    >>> SimulationConfig(shape="touchpoints")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    signalloop.errors.UsageError: unknown shape 'touchpoints'; expected one of spend, ...
    """

    days: int = 90
    campaigns: int = 6
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 1)
    faults: tuple[Fault, ...] = ()
    healthy: tuple[str, ...] = ()
    shape: str = "full"
    click_ts: bool = True

    def __post_init__(self) -> None:
        if self.shape not in SHAPE_KINDS:
            raise UsageError(f"unknown shape {self.shape!r}; expected one of {', '.join(SHAPES)}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds the :attr:`shape` writes (:data:`SHAPE_KINDS`)."""
        return SHAPE_KINDS[self.shape]

    def is_healthy(self, campaign: str) -> bool:
        """Whether ``campaign`` is one of the :attr:`healthy` campaigns."""
        return "*" in self.healthy or campaign in self.healthy


def campaign_ids(n: int) -> list[str]:
    """Return the campaign ids ``c01`` .. ``cNN``.

    >>> campaign_ids(3)
    ['c01', 'c02', 'c03']
    """
    if n < 1:
        raise UsageError(f"the number of campaigns must be at least 1, got {n}")
    width = max(2, len(str(n)))
    return [f"c{i + 1:0{width}d}" for i in range(n)]


def parse_fault(spec: str, *, days: int, campaign_ids: Sequence[str]) -> Fault:
    """Parse ``NAME@CAMPAIGN[:START-END]`` into a :class:`Fault`.

    Parameters
    ----------
    spec
        CAMPAIGN is an id (``c02``), a 1-based number (``2``) or ``*``; START and END are
        0-based inclusive day indexes. Without ``:START-END`` the fault covers the whole run,
        ``START-`` runs to the last day and a lone ``START`` is one day.
    days
        Length of the run, to check the window against.
    campaign_ids
        The valid campaign ids.

    Returns
    -------
    Fault

    Raises
    ------
    UsageError
        Saying what was expected and what was got.

    Examples
    --------
    >>> parse_fault("tracking_outage@c02:60-66", days=90, campaign_ids=["c01", "c02"])
    Fault(name='tracking_outage', campaign='c02', start=60, end=66)
    >>> parse_fault("low_volume@1", days=90, campaign_ids=["c01", "c02"])
    Fault(name='low_volume', campaign='c01', start=0, end=89)
    >>> parse_fault("utm_mess@*:30-", days=90, campaign_ids=["c01"]).end
    89
    >>> parse_fault("crm_duplicates@c01:20-40", days=90, campaign_ids=["c01"])
    Fault(name='crm_duplicates', campaign='c01', start=20, end=40)
    """
    form = "NAME@CAMPAIGN[:START-END] (e.g. tracking_outage@c02:60-66)"
    if "@" not in spec:
        raise UsageError(f"fault {spec!r}: expected {form}")
    name, rest = (p.strip() for p in spec.strip().split("@", 1))
    if name not in FAULT_NAMES:
        raise UsageError(
            f"fault {spec!r}: unknown fault name {name!r}; expected one of {', '.join(FAULT_NAMES)}"
        )
    camp, _, window = (p.strip() for p in rest.partition(":"))
    ids = list(campaign_ids)
    if camp.isdigit() and 1 <= int(camp) <= len(ids) and camp not in ids:
        camp = ids[int(camp) - 1]
    if camp != "*" and camp not in ids:
        raise UsageError(
            f"fault {spec!r}: unknown campaign {camp!r}; expected *, a number 1-{len(ids)} "
            f"or one of {', '.join(ids)}"
        )
    start, end = 0, days - 1
    if window:
        lo, dash, hi = window.partition("-")
        try:
            start = int(lo)
            end = int(hi) if hi.strip() else (days - 1 if dash else start)
        except ValueError:
            raise UsageError(
                f"fault {spec!r}: expected the days as START-END, START- or START "
                f"(0-based day indexes), got {window!r}"
            ) from None
        if not 0 <= start <= end <= days - 1:
            raise UsageError(
                f"fault {spec!r}: days {start}-{end} are out of range; expected "
                f"0 <= START <= END <= {days - 1} for a {days}-day run"
            )
    return Fault(name, camp, start, end)
