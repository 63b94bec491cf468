"""Attribution precedence when a conversion carries several keys that point at different campaigns.

The contract: ``campaign_id`` first, else ``click_id`` (the earliest touchpoint with that click),
else ``user_id`` (the user's last touchpoint at or before the conversion). In the tiny account
below the three rules disagree on purpose; :func:`~signalloop.attribution.attributed_conversions`
and the nowcast's click linking must pick the same winner. The nowcast's click time then comes
from a touch on the winning campaign only (never another campaign's touch), and two conversions
of one click at the same instant go to the lowest campaign id whatever the row order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from signalloop.attribution import attributed_conversions, attribution_counts
from signalloop.ingest import ingest_file
from signalloop.nowcast import _link_clicks, _Source, nowcast
from signalloop.store import Workspace

from .conftest import write_csv

DAY = date(2026, 1, 1)
TOUCHPOINTS = [
    # touch_id, ts, user_id, click_id, campaign_id
    ["t1", "2026-01-01T09:00:00Z", "u2", "k4", "cA"],
    ["t2", "2026-01-01T10:00:00Z", "u1", "k1", "cB"],
    ["t5", "2026-01-01T10:30:00Z", "u3", "k3", "cB"],
    ["t3", "2026-01-01T11:00:00Z", "u2", "k4", "cC"],  # k4 again, later, on another campaign
    ["t4", "2026-01-01T14:00:00Z", "u1", "k2", "cC"],
    ["t6", "2026-01-01T12:00:00Z", "u4", "k6", "cB"],  # k6 on two campaigns
    ["t7", "2026-01-01T12:30:00Z", "u4", "k6", "cC"],
]
#: conversion_id, ts, user_id, click_id, campaign_id, and the winner (campaign, rule).
CONVERSIONS = [
    # own campaign cA beats click k1 (cB) and u1's last touch (cC)
    ("x1", "2026-01-01T15:00:00Z", "u1", "k1", "cA", ("cA", "campaign_id")),
    # no campaign: click k3 (cB) beats u1's last touch (cC)
    ("x2", "2026-01-01T15:00:00Z", "u1", "k3", "", ("cB", "click_id")),
    # only the user: u1's last touch, t4 (cC)
    ("x3", "2026-01-01T15:00:00Z", "u1", "", "", ("cC", "user_id")),
    # a click id no touchpoint has falls through to the user
    ("x4", "2026-01-01T15:00:00Z", "u1", "k9", "", ("cC", "user_id")),
    # own campaign cA beats u1's last touch (cC)
    ("x5", "2026-01-01T15:00:00Z", "u1", "", "cA", ("cA", "campaign_id")),
    # click k4's earliest touch (t1, cA) beats its later one (cC) and u2's last touch (cC)
    ("x6", "2026-01-01T15:00:00Z", "u2", "k4", "", ("cA", "click_id")),
    # u1's last touch at or before 12:00 is t2 (cB), not the later t4 (cC)
    ("x7", "2026-01-01T12:00:00Z", "u1", "", "", ("cB", "user_id")),
    # a touch at the conversion's own instant counts
    ("x8", "2026-01-01T14:00:00Z", "u1", "", "", ("cC", "user_id")),
    # own campaign cC; click k4's touch on cC (t3), not its earliest (t1, cA)
    ("x9", "2026-01-01T16:00:00Z", "u2", "k4", "cC", ("cC", "campaign_id")),
    # own campaign cB, no click: u1's last touch on cB (t2), not the later t4 (cC)
    ("x10", "2026-01-01T15:00:00Z", "u1", "", "cB", ("cB", "campaign_id")),
    # one click (k6), one instant, two campaigns: a tie the lowest campaign id (cB) wins
    ("x11", "2026-01-01T16:00:00Z", "u4", "k6", "cC", ("cC", "campaign_id")),
    ("x12", "2026-01-01T16:00:00Z", "u4", "k6", "cB", ("cB", "campaign_id")),
]
WINNERS = {c[0]: c[5] for c in CONVERSIONS}


def ingest_account(ws: Workspace, folder: Path, conversions: list[tuple[Any, ...]]) -> Workspace:
    write_csv(
        folder / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [[DAY.isoformat(), "meta", c, 1000, 3, 30.0] for c in ("cA", "cB", "cC")],
    )
    write_csv(
        folder / "tp.csv", ["touch_id", "ts", "user_id", "click_id", "campaign_id"], TOUCHPOINTS
    )
    write_csv(
        folder / "conv.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id"],
        [[cid, ts, "purchase", u, k, c] for cid, ts, u, k, c, _ in conversions],
    )
    for kind, name in (("spend", "spend"), ("touchpoints", "tp"), ("conversions", "conv")):
        r = ingest_file(ws, kind, folder / f"{name}.csv")
        assert r.rows_quarantined == 0, r
    return ws


@pytest.fixture(params=["as_written", "reversed"])
def account(ws: Workspace, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    """The account, its conversions ingested as written or in reverse (ties must not care)."""
    rows = CONVERSIONS if request.param == "as_written" else CONVERSIONS[::-1]
    yield ingest_account(ws, tmp_path, rows)


def candidates(conversion: tuple[Any, ...]) -> tuple[str | None, str | None, str | None]:
    """What each rule alone says: own campaign, the click's earliest touch, the user's last."""
    _, ts, user, click, campaign, _ = conversion
    by_time = sorted(TOUCHPOINTS, key=lambda t: t[1])
    on_click = [t[4] for t in by_time if click and t[3] == click]
    before = [t[4] for t in by_time if user and t[2] == user and t[1] <= ts]
    return (campaign or None, on_click[0] if on_click else None, before[-1] if before else None)


def test_the_rules_disagree_and_the_first_that_answers_wins() -> None:
    """The hand-written winners follow the precedence, and the rules do disagree."""
    rules = ("campaign_id", "click_id", "user_id")
    for conv in CONVERSIONS:
        cands = candidates(conv)
        first = next(i for i, c in enumerate(cands) if c is not None)
        assert WINNERS[conv[0]] == (cands[first], rules[first]), conv
    each = {c[0]: candidates(c) for c in CONVERSIONS}
    assert each["x1"] == ("cA", "cB", "cC")  # all three differ
    assert each["x2"] == (None, "cB", "cC")
    assert each["x5"] == ("cA", None, "cC")
    assert each["x6"] == (None, "cA", "cC")
    assert each["x4"] == (None, None, "cC")  # k9 is no touchpoint's click


def test_attributed_conversions_campaign_then_click_then_user(account: Workspace) -> None:
    got = {
        r["conversion_id"]: (r["attributed_campaign_id"], r["attributed_by"])
        for r in attributed_conversions(account).to_pyarrow().to_pylist()
    }
    assert got == WINNERS
    assert attribution_counts(account) == {"campaign_id": 6, "click_id": 2, "user_id": 4}


def linked_rows(ws: Workspace) -> dict[str, dict[str, Any]]:
    src = _Source(ws, DAY)
    try:
        rows = _link_clicks(src, src.table("conversions")).to_pyarrow().to_pylist()
    finally:
        src.release()
    return {r["conversion_id"]: r for r in rows}


def test_nowcast_links_each_conversion_to_the_same_campaign(account: Workspace) -> None:
    linked = linked_rows(account)
    assert {k: r["campaign_id"] for k, r in linked.items()} == {k: w[0] for k, w in WINNERS.items()}
    # the click time is a touch on the campaign the rules chose, or none
    clicks = {k: r["click"] for k, r in linked.items()}
    assert clicks == {
        "x1": None,  # cA: its click k1 touched cB, and u1 never touched cA
        "x2": datetime(2026, 1, 1, 10, 30),  # k3's touch
        "x3": datetime(2026, 1, 1, 14, 0),  # u1's last touch
        "x4": datetime(2026, 1, 1, 14, 0),
        "x5": None,  # cA: u1's last touch (14:00) is on cC, never on cA
        "x6": datetime(2026, 1, 1, 9, 0),  # k4's earliest touch
        "x7": datetime(2026, 1, 1, 10, 0),  # u1's last touch by 12:00
        "x8": datetime(2026, 1, 1, 14, 0),
        "x9": datetime(2026, 1, 1, 11, 0),  # k4's touch on cC, not its earliest (cA)
        "x10": datetime(2026, 1, 1, 10, 0),  # u1's last touch on cB, not the later on cC
        "x11": datetime(2026, 1, 1, 12, 30),  # k6's touch on cC
        "x12": datetime(2026, 1, 1, 12, 0),  # k6's touch on cB
    }
    # the attribution's own candidates agree: a touch on the winner's campaign
    for k, r in linked.items():
        if r["click"] is None:
            continue
        at = r["click"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert any(t[1] == at and t[4] == r["campaign_id"] for t in TOUCHPOINTS), k


def test_a_tie_on_one_click_goes_to_the_lowest_campaign_id(account: Workspace) -> None:
    """x11 (cC) and x12 (cB) convert click k6 at the same instant: cB's, with cB's click
    time (12:00), whatever order the rows came in (the fixture runs both)."""
    doc = nowcast(account, DAY).to_dict()
    k6 = [c for c in doc["cohorts"] if c["campaign_id"] in ("cB", "cC")]
    got = {c["campaign_id"]: c["observed_conversions"] for c in k6}
    assert got == {"cB": 4, "cC": 3}  # cB: x2, x7, x10, x12; cC: x3, x4, x8 (x9, x11 second)
    src = _Source(account, DAY)
    try:
        from signalloop.nowcast import _first_of_click

        linked = _link_clicks(src, src.table("conversions"))
        linked = linked.filter(linked.click.notnull())
        first = {r["key"]: r for r in _first_of_click(linked).to_pyarrow().to_pylist()}
    finally:
        src.release()
    assert (first["k6"]["campaign_id"], first["k6"]["click"]) == ("cB", datetime(2026, 1, 1, 12))
    assert (first["k4"]["campaign_id"], first["k4"]["click"]) == ("cA", datetime(2026, 1, 1, 9))


def test_nowcast_counts_each_campaign_what_attribution_gives_it(account: Workspace) -> None:
    """The nowcast counts each click's first conversion, on a click time of its own campaign.

    Attribution gives cA 3 (x1, x5, x6), cB 4 (x2, x7, x10, x12), cC 5 (x3, x4, x8, x9, x11).
    The nowcast observes cA 1: x1 and x5 have no touch on cA to time their click, so they are
    cA's unlinked conversions; cC 3: x9 and x11 are the second conversions of clicks k4 and
    k6, whose first went to cA and cB.
    """
    doc = nowcast(account, DAY).to_dict()
    got = {c["campaign_id"]: c["observed_conversions"] for c in doc["campaigns"]}
    assert got == {"cA": 1, "cB": 4, "cC": 3}
    unlinked = {c["campaign_id"]: c["unlinked_conversions"] for c in doc["campaigns"]}
    assert unlinked == {"cA": 2, "cB": 0, "cC": 0}
    assert doc["account"]["click"]["unlinked_conversions"] == {"cA": 2}
