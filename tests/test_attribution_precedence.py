"""Attribution precedence when a conversion carries several keys that point at different campaigns.

The contract: ``campaign_id`` first, else ``click_id`` (the earliest touchpoint with that click),
else ``user_id`` (the user's last touchpoint at or before the conversion). In the tiny account
below the three rules disagree on purpose; :func:`~signalloop.attribution.attributed_conversions`
and the nowcast's click linking must pick the same winner.
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
]
WINNERS = {c[0]: c[5] for c in CONVERSIONS}


@pytest.fixture
def account(ws: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    write_csv(
        tmp_path / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [[DAY.isoformat(), "meta", c, 1000, 3, 30.0] for c in ("cA", "cB", "cC")],
    )
    write_csv(
        tmp_path / "tp.csv", ["touch_id", "ts", "user_id", "click_id", "campaign_id"], TOUCHPOINTS
    )
    write_csv(
        tmp_path / "conv.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id"],
        [[cid, ts, "purchase", u, k, c] for cid, ts, u, k, c, _ in CONVERSIONS],
    )
    for kind, name in (("spend", "spend"), ("touchpoints", "tp"), ("conversions", "conv")):
        r = ingest_file(ws, kind, tmp_path / f"{name}.csv")
        assert r.rows_quarantined == 0, r
    yield ws


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
    assert attribution_counts(account) == {"campaign_id": 2, "click_id": 2, "user_id": 4}


def test_nowcast_links_each_conversion_to_the_same_campaign(account: Workspace) -> None:
    src = _Source(account, DAY)
    try:
        rows = _link_clicks(src, src.table("conversions")).to_pyarrow().to_pylist()
    finally:
        src.release()
    linked = {r["conversion_id"]: r for r in rows}
    assert {k: r["campaign_id"] for k, r in linked.items()} == {k: w[0] for k, w in WINNERS.items()}
    # where the click decided (or the user's touch did), the click time is that touchpoint's
    clicks = {k: linked[k]["click"] for k in ("x2", "x3", "x4", "x6", "x7", "x8")}
    assert clicks == {
        "x2": datetime(2026, 1, 1, 10, 30),  # k3's touch
        "x3": datetime(2026, 1, 1, 14, 0),  # u1's last touch
        "x4": datetime(2026, 1, 1, 14, 0),
        "x6": datetime(2026, 1, 1, 9, 0),  # k4's earliest touch
        "x7": datetime(2026, 1, 1, 10, 0),  # u1's last touch by 12:00
        "x8": datetime(2026, 1, 1, 14, 0),
    }


def test_nowcast_counts_each_campaign_what_attribution_gives_it(account: Workspace) -> None:
    """Every conversion here has its own click, so the nowcast's observed counts are the
    attribution's per campaign: cA 3 (x1, x5, x6), cB 2 (x2, x7), cC 3 (x3, x4, x8)."""
    doc = nowcast(account, DAY).to_dict()
    got = {c["campaign_id"]: c["observed_conversions"] for c in doc["campaigns"]}
    assert got == {"cA": 3, "cB": 2, "cC": 3}
