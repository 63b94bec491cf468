"""The ``audience_bias`` fault: converting clicks go to users who converted before."""

from __future__ import annotations

from functools import cache

import pyarrow.compute as pc

from signalloop import simulate as sim

DAYS, CAMPAIGNS, SEED = 60, 4, 3
IDS = sim.campaign_ids(CAMPAIGNS)


@cache
def run(*specs: str) -> sim.Simulation:
    faults = tuple(sim.parse_fault(s, days=DAYS, campaign_ids=IDS) for s in specs)
    return sim.simulate(
        sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=faults)
    )


def rows_of(s: sim.Simulation, kind: str, cid: str) -> list[dict[str, object]]:
    t = s.tables[kind]
    rows: list[dict[str, object]] = t.filter(pc.equal(t["campaign_id"], cid)).to_pylist()
    return rows


def test_the_note_counts_what_was_reassigned() -> None:
    note = run("audience_bias@c02:30-59").truth["faults"][0]
    assert note["clicks_reassigned"] == 432
    assert note["known_user_share"] == 0.8405
    assert note["rows"]["changed"] == {"touchpoints": 432, "conversions": 432, "crm": 0}


def test_only_user_ids_of_the_window_change_and_other_campaigns_not_at_all() -> None:
    base, biased = run(), run("audience_bias@c02:30-59")
    for kind in ("spend", "touchpoints", "conversions", "crm", "changes"):
        assert base.tables[kind].num_rows == biased.tables[kind].num_rows, kind
    for cid in ("c01", "c03", "c04"):
        assert rows_of(base, "touchpoints", cid) == rows_of(biased, "touchpoints", cid)
        assert rows_of(base, "conversions", cid) == rows_of(biased, "conversions", cid)
    before, after = rows_of(base, "conversions", "c02"), rows_of(biased, "conversions", "c02")
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed and all(
        {k for k in a if a[k] != b[k]} == {"user_id"} for a, b in changed
    )  # counts, times, values as they were: only who converted
    assert all(str(b["click_ts"]) >= "2026-01-31" for _, b in changed)  # day 30 on


def test_reassigned_users_had_converted_a_day_before_the_click() -> None:
    conv = run("audience_bias@c02:30-59").tables["conversions"].to_pylist()
    before = run().tables["conversions"].to_pylist()
    first: dict[str, object] = {}  # as the world had it before the fault moved anyone
    for r in sorted(before, key=lambda r: r["ts"]):
        first.setdefault(r["user_id"], r["ts"])
    base = {r["conversion_id"]: r["user_id"] for r in before}
    moved = [r for r in conv if base[r["conversion_id"]] != r["user_id"]]
    assert len(moved) == 410  # of 432: the other 22 conversions arrive after the last day
    day = 86_400
    assert all(
        (r["click_ts"] - first[r["user_id"]]).total_seconds() >= day  # type: ignore[operator]
        for r in moved
    )
