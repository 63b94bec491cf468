"""Outage windows to Google data exclusions: shifted, split, keyed, capped at 500 active."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import simulated_workspace

from signalloop.checks.engine import save_exclusions
from signalloop.config import Settings, settings_from_dict
from signalloop.push import ledger
from signalloop.push.exclusions import median_delays, push_exclusions
from signalloop.store import Workspace

AS_OF = date(2026, 1, 20)
NOW = datetime(2026, 1, 21, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws, _, _ = simulated_workspace(tmp_path_factory.mktemp("excl"), days=20, campaigns=4, seed=3)
    yield ws
    ws.close()


def settings() -> Settings:
    return settings_from_dict(
        {"push": {"google": {"customer_id": "1234567890", "campaigns": {"c04": "444"}}}}
    )


def test_windows_shift_split_and_skip_with_reasons(small: Workspace, tmp_path: Path) -> None:
    windows = [
        {"campaign_id": "c04", "start": "2025-12-01", "end": "2025-12-30", "reason": "x: 30 days"},
        {"campaign_id": "c02", "start": "2026-01-05", "end": "2026-01-06", "reason": "x: no id"},
        {"campaign_id": "c01", "start": "2026-01-05", "end": "2026-01-06", "reason": "x: meta"},
    ]
    save_exclusions(small, windows, AS_OF)
    r = push_exclusions(small, as_of=AS_OF, settings=settings(), out=tmp_path, now=NOW)
    delay = median_delays(small, datetime(2026, 1, 21))["c04"]
    bodies = [json.loads(Path(f).read_text())["operations"][0]["create"] for f in r.files]
    starts = [datetime.fromisoformat(b["startDateTime"]) for b in bodies]
    ends = [datetime.fromisoformat(b["endDateTime"]) for b in bodies]
    assert starts[0] == datetime(2025, 12, 1) - delay  # moved back by the median delay (UTC)
    assert ends[-1] == datetime(2025, 12, 30, 23, 59, 59)
    assert all(e - s <= timedelta(days=14) for s, e in zip(starts, ends, strict=True))
    assert all(b["campaigns"] == ["customers/1234567890/campaigns/444"] for b in bodies)
    assert len(bodies) == 3  # 30 days and the shift: 14 + 14 + the rest
    reasons = {s["campaign_id"]: s["reason"] for s in r.skipped}
    assert reasons == {"c02": "no_google_id", "c01": "not_google"}


def test_at_most_500_active(small: Workspace, tmp_path: Path) -> None:
    save_exclusions(
        small,
        [
            {
                "campaign_id": "c04",
                "start": f"2026-01-{d:02d}",
                "end": f"2026-01-{d:02d}",
                "reason": "x",
            }
            for d in (2, 9, 16)
        ],
        AS_OF,
    )
    far = {"start": "2026-01-01 00:00:00", "end": "2099-01-01 00:00:00"}
    ledger.write(
        small,
        [
            ledger.entry(
                "google",
                "exclusion",
                f"old-{i}",
                status="sent",
                request_id="r",
                resource=f"customers/1/biddingDataExclusions/{i}",
                detail=far,
            )
            for i in range(499)
        ],
    )
    try:
        r = push_exclusions(small, as_of=AS_OF, settings=settings(), out=tmp_path, now=NOW)
    finally:
        small.con.execute("DELETE FROM push_ledger")
    assert len(r.requests) == 1
    limited = [x for x in r.left_out if x["reason"] == "account_limit"]
    assert len(limited) == 2
    kept = json.loads(Path(r.files[0]).read_text())["operations"][0]["create"]
    assert kept["startDateTime"] > "2026-01-10"  # the newest window (16th, shifted) goes first


def test_the_latest_sent_version_is_one_row_the_later_written_on_a_tie(tmp_path: Path) -> None:
    """Two versions of one exclusion sent at the same microsecond: the one written later is
    the latest, its resource and its window together (two ``arg_max`` over the same time
    could pair one row's resource with the other's window)."""
    at = datetime(2026, 3, 1, 12, 0)
    with Workspace(tmp_path / "ledger.duckdb") as ws:
        for order in ((1, 2), (2, 1)):
            ws.con.execute("DROP TABLE IF EXISTS push_ledger")
            rows = [
                ledger.entry(
                    "google",
                    "exclusion",
                    "k",
                    status="sent",
                    request_id="r",
                    resource=f"customers/1/biddingDataExclusions/{v}",
                    detail={"start": f"2026-01-0{v} 00:00:00", "end": f"2026-01-0{v} 23:00:00"},
                    sent_at=at,
                )
                for v in order
            ]
            ledger.write(ws, rows[:1])
            ledger.write(ws, rows[1:])
            got = ledger.sent_exclusions(ws)["k"]
            v = order[1]
            assert got["resource"].endswith(f"/{v}") and got["start"] == f"2026-01-0{v} 00:00:00"
        ws.con.execute(
            "UPDATE push_ledger SET sent_at = sent_at + INTERVAL 1 SECOND WHERE resource LIKE '%/2'"
        )
        assert ledger.sent_exclusions(ws)["k"]["resource"].endswith("/2")  # later in time wins
