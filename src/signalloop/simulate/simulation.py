"""Run the account, right-censor what has not happened yet, observe it through the faults.

:func:`simulate` is the one entry point; it returns a :class:`Simulation` with the canonical
tables of the config's data shape (clean, typed data) and the complete truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from signalloop.simulate.account import Account
from signalloop.simulate.config import SimulationConfig
from signalloop.simulate.entities import SCHEMAS, concat, take
from signalloop.simulate.faults import (
    add_copies,
    bias_audience,
    count,
    delay_offline,
    drop_untracked,
    duplicate_records,
    fault_notes,
    lose_click_ids,
    note_click_id_loss,
    utm_pairs,
)
from signalloop.simulate.glitches import Glitch, change_campaigns, plan_glitches
from signalloop.simulate.identities import identity_columns
from signalloop.simulate.params import DAY, KIND_NAMES
from signalloop.simulate.tables import (
    changes_order,
    changes_table,
    conversion_order,
    conversion_table,
    crm_order,
    crm_table,
    platform_conversions,
    spend_table,
    touch_order,
    touch_table,
)
from signalloop.simulate.traits import draw_traits
from signalloop.simulate.truth import build_truth


@dataclass
class Simulation:
    """A simulated account: its config, the canonical tables of its shape and the ground truth.

    ``tables`` hold the kinds of ``config.shape`` (all five for ``full``), the clean, typed
    data as observed through the faults, except
    ``export_glitches``: its corrupted rows (``glitches``, also in the fault's truth note)
    exist only in the CSV text :func:`~signalloop.simulate.output.write` writes.

    ``oracle`` has one row per touchpoint, in the touchpoints table's order: ``touch_id``,
    ``campaign_id``, ``depth`` (0 none, 1 converted, 2 reached sql, 3 reached won, from the
    uncensored world), ``p_adset`` (the ad set's conversion probability of the click),
    ``p_conversion`` (the true probability given ``p_adset`` and the click's traits) and,
    for lead campaigns (else null), ``p_sql`` and ``p_won``; see
    :mod:`~signalloop.simulate.traits`.
    """

    config: SimulationConfig
    tables: dict[str, pa.Table]
    truth: dict[str, Any]
    glitches: list[Glitch] = field(default_factory=list)
    oracle: pa.Table = field(default_factory=lambda: pa.table({}))


def simulate(config: SimulationConfig) -> Simulation:
    """Simulate the account described by ``config``.

    Runs :meth:`Account.step` over every day at the account's own budget plan, drops every
    event timestamped after the end of the last day (right-censoring, as an export taken then
    would be) and applies the observation faults; ``export_glitches`` rows are decided here
    and rendered by :func:`~signalloop.simulate.output.write`. The clicks' traits are drawn
    last, given each click's outcome, from a stream of their own
    (:func:`~signalloop.simulate.traits.draw_traits`).

    Parameters
    ----------
    config
        What to simulate.

    Returns
    -------
    Simulation
        ``tables`` keyed by kind (the kinds of ``config.shape``), with canonical column
        names, and a JSON-serialisable ``truth``. Every shape simulates the same world and
        the same truth; the shape only picks the tables, and in the partial shapes every
        conversion carries its campaign_id.
    """
    acct = Account(config)
    events = [acct.step(d, acct.plan_budgets(d)) for d in range(config.days)]
    world = {k: concat([getattr(e, k) for e in events], k) for k in SCHEMAS}
    notes = fault_notes(acct)
    bias_audience(acct, world, notes)
    truth = build_truth(acct, world)
    conv = delay_offline(acct, dict(world["conversions"]), notes)
    crm = dict(world["crm"])
    end = config.days * DAY
    truth["censored"] = {
        "conversions": int((conv["ts"] >= end).sum()),
        "crm": int((crm["ts"] >= end).sum()),
    }
    conv, crm = take(conv, conv["ts"] < end), take(crm, crm["ts"] < end)
    crm = duplicate_records(acct, crm, notes)
    conv, crm = drop_untracked(acct, conv, crm, notes)
    platform = platform_conversions(acct, world["spend"], conv)
    conv, lost = lose_click_ids(acct, world["clicks"], conv, notes)
    conv, crm = add_copies(acct, conv, crm, world["spend"], notes)
    touches = take(world["clicks"], touch_order(world["clicks"]))
    traits, oracle, trait_truth = draw_traits(acct, touches, world["conversions"])
    utm, pairs = utm_pairs(acct, touches, notes)
    conv = take(conv, conversion_order(conv))
    note_click_id_loss(acct, conv, lost, notes)
    crm = take(crm, crm_order(crm))
    leads = take(world["conversions"], world["conversions"]["kind"] == KIND_NAMES.index("lead"))
    leads = take(leads, np.argsort(leads["tn"]))
    lost_tns = np.concatenate([np.empty(0, np.int64), *lost.values()])
    identities, identity_truth = identity_columns(
        acct, crm, (leads["tn"], leads["token"]), lost_tns
    )
    changes = changes_order([ch for e in events for ch in e.changes])
    partial = config.shape != "full"
    every: dict[str, pa.Table] = {
        "spend": spend_table(acct, world["spend"], platform[:2]),
        "touchpoints": _with_columns(touch_table(acct, touches, utm, pairs), traits),
        "conversions": conversion_table(acct, conv, utm_campaign=partial, click_ts=config.click_ts),
        "crm": _with_columns(crm_table(acct, crm), identities),
        "changes": changes_table(acct, changes),
    }
    tables = {k: every[k] for k in config.kinds}
    for cid, note in platform[2].items():
        truth["campaigns"][cid]["platform_conversions"] = note
    for i, f in enumerate(config.faults):
        if f.name == "override_storm":
            count(notes[i], "added", "changes", sum(notes[i]["edits"].values()))
    glitches: list[Glitch] = []
    if any(f.name == "export_glitches" for f in config.faults):
        where = {
            "spend": (world["spend"]["camp"], world["spend"]["day"] * DAY),
            "touchpoints": (touches["camp"], touches["ts"]),
            "conversions": (conv["camp"], conv["ts"]),
            "crm": (crm["camp"], crm["ts"]),
            "changes": (
                change_campaigns(acct, changes),
                np.array([ch.ts for ch in changes], dtype=np.int64),
            ),
        }
        glitches = plan_glitches(acct, tables, {k: where[k] for k in tables}, notes)
    truth["identities"] = identity_truth
    truth["faults"] = notes
    truth["traits"] = trait_truth
    return Simulation(config, tables, truth, glitches, oracle)


def _with_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """``table`` with ``columns`` appended after its own."""
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table
