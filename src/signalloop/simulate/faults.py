"""Observation faults: what the exports show differs from what happened.

The world faults (``creative_starvation``, ``override_storm``, ``low_volume``) are built into
the plan (:mod:`~signalloop.simulate.plan`), but for ``audience_bias``, applied here to the
delivered rows first (:func:`bias_audience`); the others here change only the observed rows,
in the order :func:`~signalloop.simulate.simulation.simulate` applies them:

1. :func:`delay_offline` (``late_offline_conversions``), before right-censoring;
2. :func:`duplicate_records` (``crm_duplicates``), after right-censoring (a duplicate exists
   only once entered);
3. :func:`drop_untracked` (``tracking_outage``, ``crm_sync_dropout``), before the platform
   counts its conversions (a dropout loses duplicates' rows as it loses any);
4. :func:`lose_click_ids` (``click_id_loss``), after the platform counted its conversions
   (the platform models the conversions it cannot tie to a click, so its count is unchanged);
5. :func:`add_copies` (``duplicate_events``, ``stage_overwrite``), so a copy of a conversion
   that lost its click id lost it too;
6. :func:`utm_pairs` (``utm_mess``) while the touchpoints table is built;
7. ``export_glitches`` last, on the finished tables (:mod:`~signalloop.simulate.glitches`).

Every fault draws from its own random stream, so a fault on one campaign leaves the others'
rows unchanged; each fills its note (``truth["faults"][i]``) with row counts and ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from signalloop.simulate.config import Fault
from signalloop.simulate.entities import take
from signalloop.simulate.params import (
    DAY,
    KIND_NAMES,
    MESSY_UTM,
    OFFLINE_KINDS,
    PLATFORMS,
    SOURCE_NAMES,
    Arr,
    H,
)
from signalloop.simulate.tables import conversion_ids

if TYPE_CHECKING:
    from signalloop.simulate.account import Account

Notes = list[dict[str, Any]]
#: the faults that change the world (delivery) rather than what is observed
WORLD_FAULTS = ("override_storm", "low_volume", "creative_starvation")
#: source indexes from here on are offline / CRM (below: pixel, server)
OFFLINE = SOURCE_NAMES.index("offline")


def window(f: Fault, ts: Arr, camp: Arr, ids: Sequence[str]) -> Arr:
    """Mask of the rows at ``ts`` (seconds) of campaigns ``camp`` that fault ``f`` covers."""
    inside = (ts >= f.start * DAY) & (ts < (f.end + 1) * DAY)
    return inside if f.campaign == "*" else inside & (camp == ids.index(f.campaign))


def count(note: dict[str, Any], what: str, table: str, n: int) -> None:
    """Add ``n`` rows of ``table`` to the note's ``rows[what]`` (removed / changed / added)."""
    rows = note.setdefault("rows", {"removed": {}, "changed": {}, "added": {}})
    rows[what][table] = rows[what].get(table, 0) + int(n)


def fault_notes(acct: Account) -> Notes:
    """One truth note per fault of the config: its window and what the world faults did."""
    ids = acct.ids
    return [
        {
            "name": f.name,
            "campaign": f.campaign,
            "campaigns": ids if f.campaign == "*" else [f.campaign],
            "start": f.start,
            "end": f.end,
            "start_date": acct.date(f.start),
            "end_date": acct.date(f.end),
            "rows": {"removed": {}, "changed": {}, "added": {}},
            **acct.fault_notes[i],
        }
        for i, f in enumerate(acct.config.faults)
    ]


def delay_offline(acct: Account, conv: dict[str, Arr], notes: Notes) -> dict[str, Arr]:
    """``late_offline_conversions``: offline / CRM conversions in the window arrive late.

    Every conversion of source offline or crm (sql, opportunity and deal rows) whose true
    time is in the window is stamped 14-35 days later; those pushed past the last day are
    then censored like anything else not yet arrived. The note gets ``conversion_ids`` (all
    delayed), ``delayed_by_kind`` and ``delayed_past_end``.
    """
    end, ids = acct.days * DAY, acct.ids
    for i, f in enumerate(acct.config.faults):
        if f.name == "late_offline_conversions":
            m = window(f, conv["ts"], conv["camp"], ids) & (conv["source"] >= OFFLINE)
            rng = np.random.default_rng([acct.config.seed, 2, i])
            delay = rng.integers(14 * DAY, 35 * DAY, len(m))
            conv["ts"] = conv["ts"] + m * delay
            count(notes[i], "changed", "conversions", m.sum())
            kinds = np.bincount(conv["kind"][m], minlength=len(KIND_NAMES))
            notes[i]["delayed_by_kind"] = {
                KIND_NAMES[k]: int(kinds[k]) for k in OFFLINE_KINDS.values()
            }
            notes[i]["delayed_past_end"] = int((m & (conv["ts"] >= end)).sum())
            notes[i]["conversion_ids"] = conversion_ids(take(conv, m)).tolist()
    return conv


def drop_untracked(
    acct: Account, conv: dict[str, Arr], crm: dict[str, Arr], notes: Notes
) -> tuple[dict[str, Arr], dict[str, Arr]]:
    """``tracking_outage`` and ``crm_sync_dropout``: rows in the window never arrive.

    An outage loses the pixel and server conversions; a CRM sync dropout loses the CRM rows
    and the offline / CRM conversions (sql, opportunity and deal rows). Each note lists the
    removed ``conversion_ids`` (and for a dropout the ``record_ids`` that lost rows).
    """
    ids = acct.ids
    for i, f in enumerate(acct.config.faults):
        if f.name == "tracking_outage":
            m = window(f, conv["ts"], conv["camp"], ids) & (conv["source"] < OFFLINE)
            count(notes[i], "removed", "conversions", m.sum())
            notes[i]["conversion_ids"] = conversion_ids(take(conv, m)).tolist()
            conv = take(conv, ~m)
        elif f.name == "crm_sync_dropout":
            m = window(f, crm["ts"], crm["camp"], ids)
            count(notes[i], "removed", "crm", m.sum())
            notes[i]["record_ids"] = sorted(set(f"rec{r}" for r in crm["record"][m]))
            crm = take(crm, ~m)
            m = window(f, conv["ts"], conv["camp"], ids) & (conv["source"] >= OFFLINE)
            count(notes[i], "removed", "conversions", m.sum())
            notes[i]["conversion_ids"] = conversion_ids(take(conv, m)).tolist()
            conv = take(conv, ~m)
    return conv, crm


#: Under ``crm_duplicates``, the share of the covered campaign's records created in the window
#: that are entered a second time.
DUPLICATE_SHARE = 0.3
#: the random stream of ``crm_duplicates``: ``default_rng([seed, DUPLICATE_STREAM, fault])``
DUPLICATE_STREAM = 14
#: how much later a duplicate's rows are stamped than the original's, in seconds: log-uniform
#: from two minutes (a form sent twice) to twelve hours (a sync re-creating the contact)
DUPLICATE_SHIFT = (120, 12 * H)


def duplicate_numbers(acct: Account) -> int:
    """The first record number of a duplicate: past every click number of the account.

    Click (and record) numbers of campaign ``i`` are ``((i + 1) * 10_000 + day) * 10**6 + n``,
    so the block of a campaign ``K + 1`` is free.

    >>> from signalloop.simulate.account import Account
    >>> from signalloop.simulate.config import SimulationConfig
    >>> duplicate_numbers(Account(SimulationConfig(days=2, campaigns=3)))
    40000000000
    """
    return (len(acct.campaigns) + 1) * 10_000 * 1_000_000


def duplicate_records(acct: Account, crm: dict[str, Arr], notes: Notes) -> dict[str, Arr]:
    """``crm_duplicates``: records entered twice in the CRM under a new record id.

    Of the covered campaign's records whose first row (the lead row) is in the window,
    :data:`DUPLICATE_SHARE` (drawn per record, in record order, from the fault's own stream)
    are entered a second time, as when a form is submitted twice or a sync re-creates a
    contact: a new record (numbered on from :func:`duplicate_numbers`, in order of creation)
    of the same person, with a copy of every stage row the original has, each stamped the same
    ``shift`` later (log-uniform in :data:`DUPLICATE_SHIFT`), amount and owner as they were;
    copies stamped after the last day are not there yet. The arrays get an ``origin`` column
    (the record whose identity each row carries: its own, or the original's for a
    duplicate), which :mod:`~signalloop.simulate.identities` reads. Conversions are
    unchanged. The note gets ``share``, ``records_in_window`` (the originals that could be
    duplicated), ``record_ids`` (the duplicates, sorted), ``duplicate_of`` (duplicate ->
    original record id) and ``shift_seconds`` (duplicate -> shift).
    """
    end, ids, nxt = acct.days * DAY, acct.ids, duplicate_numbers(acct)
    for i, f in enumerate(acct.config.faults):
        if f.name != "crm_duplicates":
            continue
        if "origin" not in crm:
            crm = crm | {"origin": crm["record"].copy()}
        rng = np.random.default_rng([acct.config.seed, DUPLICATE_STREAM, i])
        order = np.lexsort((crm["ts"], crm["record"]))
        records, first = np.unique(crm["record"][order], return_index=True)
        created, camp = crm["ts"][order][first], crm["camp"][order][first]
        chosen = window(f, created, camp, ids) & (records < duplicate_numbers(acct))
        pick = records[chosen]
        pick = pick[rng.random(len(pick)) < DUPLICATE_SHARE]
        lo, hi = np.log(DUPLICATE_SHIFT[0]), np.log(DUPLICATE_SHIFT[1])
        shift = np.exp(rng.uniform(lo, hi, len(pick))).astype(np.int64)
        born = created[np.searchsorted(records, pick)] + shift
        live = born < end
        pick, shift, born = pick[live], shift[live], born[live]
        number = np.empty(len(pick), dtype=np.int64)
        number[np.lexsort((pick, born))] = nxt + np.arange(len(pick))
        nxt += len(pick)
        rows = take(crm, np.isin(crm["record"], pick))
        at = np.searchsorted(pick, rows["record"])
        rows["ts"] = rows["ts"] + shift[at]
        rows["record"] = number[at]
        rows = take(rows, rows["ts"] < end)
        crm = {k: np.concatenate([crm[k], rows[k]]) for k in crm}
        count(notes[i], "added", "crm", len(rows["ts"]))
        notes[i]["share"] = DUPLICATE_SHARE
        notes[i]["records_in_window"] = int(chosen.sum())
        dup = [f"rec{n}" for n in number.tolist()]
        notes[i]["record_ids"] = sorted(dup)
        notes[i]["duplicate_of"] = {
            d: f"rec{o}" for d, o in sorted(zip(dup, pick.tolist(), strict=True))
        }
        notes[i]["shift_seconds"] = {d: s for d, s in sorted(zip(dup, shift.tolist(), strict=True))}
    return crm


def add_copies(
    acct: Account,
    conv: dict[str, Arr],
    crm: dict[str, Arr],
    spend: dict[str, Arr],
    notes: Notes,
) -> tuple[dict[str, Arr], dict[str, Arr]]:
    """``duplicate_events`` and ``stage_overwrite`` add rows; world faults count their rows.

    A duplicate is a second copy of 10-20% of the window's conversions, 1-9 seconds later; an
    overwrite moves ~30% of the window's records at mql..opportunity back to an earlier stage.
    """
    end, ids = acct.days * DAY, acct.ids
    for i, f in enumerate(acct.config.faults):
        rng = np.random.default_rng([acct.config.seed, 2, i])
        if f.name == "duplicate_events":
            share = float(rng.uniform(0.10, 0.20))
            m = window(f, conv["ts"], conv["camp"], ids) & (rng.random(len(conv["ts"])) < share)
            dup = take(conv, m)
            dup["ts"] = np.minimum(dup["ts"] + rng.integers(1, 10, len(dup["ts"])), end - 1)
            conv = {k: np.concatenate([conv[k], dup[k]]) for k in conv}
            count(notes[i], "added", "conversions", len(dup["ts"]))
            notes[i]["share"] = round(share, 4)
            notes[i]["conversion_ids"] = sorted(conversion_ids(dup).tolist())
        elif f.name == "stage_overwrite":
            crm, records = _overwrite(f, crm, rng, ids, end)
            count(notes[i], "added", "crm", len(records))
            notes[i]["record_ids"] = [f"rec{r}" for r in records]
        elif f.name in WORLD_FAULTS:  # delivery changed on these rows
            changed = window(f, spend["day"] * DAY, spend["camp"], ids).sum()
            count(notes[i], "changed", "spend", changed)
    return conv, crm


def _overwrite(
    f: Fault, crm: dict[str, Arr], rng: np.random.Generator, ids: Sequence[str], end: int
) -> tuple[dict[str, Arr], list[int]]:
    """Add rows moving ~30% of the records at mql..opportunity backwards inside the window."""
    m = window(f, crm["ts"], crm["camp"], ids) & (crm["stage"] >= 1) & (crm["stage"] <= 3)
    idx = np.flatnonzero(m)
    idx = idx[np.lexsort((crm["ts"][idx], crm["record"][idx]))]
    pick = idx[np.unique(crm["record"][idx], return_index=True)[1]]
    pick = pick[rng.random(len(pick)) < 0.3]
    limit = min(end, (f.end + 1) * DAY) - 1
    new_ts = np.minimum(crm["ts"][pick] + rng.integers(H, 3 * DAY, len(pick)), limit)
    pick, new_ts = pick[new_ts > crm["ts"][pick]], new_ts[new_ts > crm["ts"][pick]]
    add = take(crm, pick)
    add["stage"] = np.floor(rng.random(len(pick)) * add["stage"]).astype(np.int64)
    add["ts"], add["amount"] = new_ts, np.full(len(pick), np.nan)
    out = {k: np.concatenate([crm[k], add[k]]) for k in crm}
    return out, sorted(int(r) for r in add["record"])


def utm_pairs(acct: Account, t: dict[str, Arr], notes: Notes) -> tuple[Arr, list[tuple[str, str]]]:
    """The (utm_source, utm_medium) of each touchpoint, as indexes into a list of pairs.

    Pair ``c.idx`` is campaign ``c``'s canonical pair; ``utm_mess`` gives ~35% of the
    window's touchpoints a messy variant (case, spaces, aliases) instead.

    Parameters
    ----------
    acct
        The account.
    t
        The touchpoints' arrays, in table order.
    notes
        The fault notes, to count the changed rows in.

    Returns
    -------
    tuple
        The index array and the list of pairs.
    """
    n, cs = len(t["tn"]), acct.campaigns
    pairs = [PLATFORMS[c.platform][:2] for c in cs]
    utm = t["camp"].copy()
    for i, f in enumerate(acct.config.faults):
        if f.name != "utm_mess":
            continue
        rng = np.random.default_rng([acct.config.seed, 2, i])
        hit, pick = window(f, t["ts"], t["camp"], acct.ids) & (rng.random(n) < 0.35), rng.random(n)
        for c in cs:
            rows = np.flatnonzero(hit & (t["camp"] == c.idx))
            variants = [v.split("/", 1) for v in MESSY_UTM[c.platform].split("|")]
            utm[rows] = len(pairs) + np.floor(pick[rows] * len(variants)).astype(np.int64)
            pairs += [(v[0], v[1]) for v in variants]
        count(notes[i], "changed", "touchpoints", hit.sum())
        notes[i]["share"] = 0.35
    return utm, pairs


#: Under ``audience_bias``, the share of the window's converting clicks that come from users
#: who had already converted (anywhere in the account) at least a day before the click.
KNOWN_SHARE = 0.85


def bias_audience(acct: Account, world: dict[str, dict[str, Arr]], notes: Notes) -> None:
    """``audience_bias`` (a world fault): the learner retargets users it already knows.

    In the window, :data:`KNOWN_SHARE` of the covered campaign's converting clicks go to users
    whose first conversion came at least a day before the click (drawn uniformly among them);
    that user replaces the drawn one on the click, its conversions and its CRM rows, so the
    outcome counts and CPA stay as they were while new-user acquisition starves. From its own
    stream: nothing else changes. The note gets ``clicks_reassigned`` and ``known_user_share``
    (of the window's converting clicks).
    """
    ids = acct.ids
    for i, f in enumerate(acct.config.faults):
        if f.name != "audience_bias":
            continue
        rng = np.random.default_rng([acct.config.seed, 11, i])
        conv, clicks = world["conversions"], world["clicks"]
        users = np.unique(conv["user"])
        first = np.full(len(users), np.iinfo(np.int64).max)
        np.minimum.at(first, np.searchsorted(users, conv["user"]), conv["ts"])
        by_time = np.argsort(first, kind="stable")
        users, first = users[by_time], first[by_time]
        converting = window(f, clicks["ts"], clicks["camp"], ids) & np.isin(
            clicks["tn"], conv["tn"]
        )
        idx = np.flatnonzero(converting)
        pick = idx[rng.random(len(idx)) < KNOWN_SHARE]
        known = np.searchsorted(first, clicks["ts"][pick] - DAY, side="right")
        draw = (rng.random(len(pick)) * np.maximum(known, 1)).astype(np.int64)
        pick, draw = pick[known > 0], draw[known > 0]
        tn = clicks["tn"][pick]
        order = np.argsort(tn)
        tn, new = tn[order], users[draw][order]
        for table, key in (("clicks", "tn"), ("conversions", "tn"), ("crm", "record")):
            rows = world[table]
            at = np.searchsorted(tn, rows[key])
            hit = (at < len(tn)) & (tn[np.minimum(at, len(tn) - 1)] == rows[key])
            user = rows["user"].copy()
            user[hit] = new[at[hit]]
            world[table] = {**rows, "user": user}
            count(notes[i], "changed", "touchpoints" if table == "clicks" else table, hit.sum())
        notes[i]["clicks_reassigned"] = len(tn)
        notes[i]["known_user_share"] = round(len(tn) / len(idx), 4) if len(idx) else None


#: Under ``click_id_loss``, the share of the covered campaign's clicks in the window whose click
#: id is never captured (a consent banner or a redirect that strips gclid / fbclid).
LOSS_SHARE = 0.7
#: the random stream of ``click_id_loss``: ``default_rng([seed, LOSS_STREAM, fault, campaign])``
LOSS_STREAM = 12


def lose_click_ids(
    acct: Account, clicks: dict[str, Arr], conv: dict[str, Arr], notes: Notes
) -> tuple[dict[str, Arr], dict[int, Arr]]:
    """``click_id_loss``: a share of a campaign's clicks lose their click id from day N.

    Of the covered campaign's clicks in the window (by click time), :data:`LOSS_SHARE` (drawn
    per click, from a stream of its own per fault and campaign) are never tied to their click
    id by the site: every conversion of such a click (the purchase or lead, and the sql,
    opportunity and deal rows of its CRM record, whose form field held no click id) arrives
    with ``user_id`` only: no ``click_id``, no ``click_ts`` and no ``campaign_id``, ad set or
    creative (the pixel, without the click id, cannot tie it to the ad). Attribution then has
    to fall back to the user's last touchpoint. The touchpoints (the site's click log) keep
    their click ids, and the platform still counts the conversions (it models them).

    Returns
    -------
    tuple
        ``conv`` with a boolean column ``lost`` (True on the rows that lost their click id),
        and per fault index the click numbers it took the click id from, for
        :func:`note_click_id_loss` to count once the table is final. The notes get ``share``
        and ``clicks_affected``.
    """
    lost = np.zeros(len(conv["tn"]), dtype=bool)
    by_fault: dict[int, Arr] = {}
    ids = acct.ids
    for i, f in enumerate(acct.config.faults):
        if f.name != "click_id_loss":
            continue
        inside = window(f, clicks["ts"], clicks["camp"], ids)
        affected: list[Arr] = []
        for c in acct.campaigns:
            if not f.covers(c.id):
                continue
            tn = np.sort(clicks["tn"][inside & (clicks["camp"] == c.idx)])
            rng = np.random.default_rng([acct.config.seed, LOSS_STREAM, i, c.idx])
            affected.append(tn[rng.random(len(tn)) < LOSS_SHARE])
        tns = np.concatenate(affected) if affected else np.empty(0, np.int64)
        lost |= np.isin(conv["tn"], tns)
        notes[i]["share"] = LOSS_SHARE
        notes[i]["clicks_affected"] = len(tns)
        by_fault[i] = tns
    return conv | {"lost": lost}, by_fault


def note_click_id_loss(
    acct: Account, conv: dict[str, Arr], lost: dict[int, Arr], notes: Notes
) -> None:
    """Count what each ``click_id_loss`` fault did to the final conversions (table order).

    Each note gets ``conversions_affected`` (rows that lost the click id, copies included),
    ``affected_by_kind``, ``conversion_ids`` (their ids, sorted, each once), and
    ``conversions_in_window`` with ``kept_share``: of the covered campaigns' conversions
    whose click was in the window, how many there are and the share that still carries a
    click id (every conversion outside the fault carries one).
    """
    for i, tns in lost.items():
        f = acct.config.faults[i]
        mine = np.isin(conv["tn"], tns)
        inside = window(f, conv["click_ts"], conv["camp"], acct.ids)
        count(notes[i], "changed", "conversions", mine.sum())
        notes[i]["conversions_affected"] = int(mine.sum())
        kinds = np.bincount(conv["kind"][mine], minlength=len(KIND_NAMES))
        notes[i]["affected_by_kind"] = {
            KIND_NAMES[k]: int(kinds[k]) for k in range(len(KIND_NAMES)) if kinds[k]
        }
        notes[i]["conversion_ids"] = sorted(set(conversion_ids(take(conv, mine)).tolist()))
        notes[i]["conversions_in_window"] = int(inside.sum())
        kept = 1 - mine.sum() / inside.sum() if inside.sum() else None
        notes[i]["kept_share"] = None if kept is None else round(float(kept), 4)
