"""Ties in time: a user's touches on two campaigns in the same second.

The contract's "last touchpoint before it" and a click's "earliest touchpoint" name no winner
when two touchpoints share the instant. ``arg_max`` then returns whichever row the parallel
aggregation met first, and two runs of the same code could differ (one CRM record in 623,880
at 1,000 campaigns did). :mod:`signalloop.ties` breaks the tie by the value: the last touch
goes to the greatest campaign id, the first touch to the least, whatever order the rows came
in (the fixture ingests the touchpoints as written and reversed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import ibis
import pandas as pd
import pytest

from signalloop.attribution import attributed_conversions, crm_record_campaigns
from signalloop.ingest import ingest_file
from signalloop.nowcast import _link_clicks, _Source
from signalloop.store import Workspace
from signalloop.ties import first_by, last_by

from .conftest import write_csv

DAY = date(2026, 1, 1)
TOUCHPOINTS = [
    # touch_id, ts, user_id, click_id, campaign_id: u1 on cD and cE at 10:00 (two click ids),
    # click k3 on cF and cG at 11:00
    ["t1", "2026-01-01T10:00:00Z", "u1", "k1", "cD"],
    ["t2", "2026-01-01T10:00:00Z", "u1", "k2", "cE"],
    ["t3", "2026-01-01T11:00:00Z", "u2", "k3", "cG"],
    ["t4", "2026-01-01T11:00:00Z", "u2", "k3", "cF"],
]


@pytest.fixture(params=["as_written", "reversed"])
def account(ws: Workspace, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    rows = TOUCHPOINTS if request.param == "as_written" else TOUCHPOINTS[::-1]
    write_csv(
        tmp_path / "spend.csv",
        ["date", "platform", "campaign_id", "impressions", "clicks", "spend"],
        [[DAY.isoformat(), "meta", c, 1000, 3, 30.0] for c in ("cD", "cE", "cF", "cG")],
    )
    write_csv(tmp_path / "tp.csv", ["touch_id", "ts", "user_id", "click_id", "campaign_id"], rows)
    write_csv(
        tmp_path / "conv.csv",
        ["conversion_id", "ts", "kind", "user_id", "click_id", "campaign_id"],
        [
            ["x1", "2026-01-01T12:00:00Z", "purchase", "u1", "", ""],  # by user: a tie
            ["x2", "2026-01-01T12:00:00Z", "purchase", "", "k3", ""],  # by click: a tie
        ],
    )
    write_csv(
        tmp_path / "crm.csv",
        ["record_id", "stage", "ts", "user_id"],
        [["r1", "lead", "2026-01-01T11:30:00Z", "u1"]],  # no lead conversion: last touch
    )
    for kind, name in (("spend", "spend"), ("touchpoints", "tp"), ("conversions", "conv")):
        assert ingest_file(ws, kind, tmp_path / f"{name}.csv").rows_quarantined == 0
    assert ingest_file(ws, "crm", tmp_path / "crm.csv").rows_quarantined == 0
    yield ws


def test_last_and_first_by_break_ties_by_the_value() -> None:
    t = ibis.memtable(
        pd.DataFrame(
            {
                "g": ["a"] * 4,
                "ts": pd.to_datetime(["2026-01-01 10:00"] * 2 + ["2026-01-01 09:00"] * 2),
                "x": ["b", "c", "z", "y"],
                "id": ["2", "1", "3", "4"],
            }
        )
    )
    got = t.aggregate(
        last=last_by(t.x, t.ts),
        first=first_by(t.x, t.ts),
        last_by_id=last_by(t.x, t.ts, t.id),
        first_by_id=first_by(t.x, t.ts, t.id),
    ).to_pyarrow()
    assert got.to_pylist() == [{"last": "c", "first": "y", "last_by_id": "b", "first_by_id": "z"}]


def test_attribution_ties_go_by_campaign_id(account: Workspace) -> None:
    got = {
        r["conversion_id"]: (r["attributed_campaign_id"], r["attributed_by"])
        for r in attributed_conversions(account).to_pyarrow().to_pylist()
    }
    # x1: u1's last touch, cD and cE at 10:00: the greatest; x2: k3's first, cF and cG: the least
    assert got == {"x1": ("cE", "user_id"), "x2": ("cF", "click_id")}
    records = crm_record_campaigns(account).to_pyarrow().to_pylist()
    assert {r["record_id"]: r["campaign_id"] for r in records} == {"r1": "cE"}


def test_the_nowcast_links_ties_as_the_attribution(account: Workspace) -> None:
    src = _Source(account, DAY)
    try:
        rows = _link_clicks(src, src.table("conversions")).to_pyarrow().to_pylist()
    finally:
        src.release()
    assert {r["conversion_id"]: r["campaign_id"] for r in rows} == {"x1": "cE", "x2": "cF"}
