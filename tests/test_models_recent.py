"""The lens's recent labels from the per-day store equal counting them from the rows.

:func:`assert_recent_current` compares :func:`~signalloop.models.recent.recent_labels` (stored
days plus the days new rows reach) with labelling every unit afresh. It runs after every
daily drop of every data shape and fault in ``test_attribution_incremental.py`` (the daily
run's order: the cutoff moves a day, the new rows arrive); here, late touchpoints and
conversions, the as-of date moving back, exclusions, a changed label window, rows not from an
ingest and a read-only workspace.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from signalloop.checks.engine import EXCLUSIONS_DDL
from signalloop.errors import UsageError
from signalloop.ingest import ingest_file
from signalloop.models import recent
from signalloop.models.features import _build
from signalloop.models.recent import TABLE, recent_labels, recent_labels_all
from signalloop.store import Workspace

from .conftest import ingest_drop, simulated_drops

SEED = 13
#: (outcome, label window in days or None for the default, window of recent days)
CASES: tuple[tuple[str, int | None, int], ...] = (("conversion", None, 3), ("sql", 5, 4))


def _truth(ws: Workspace, outcome: str, as_of: date, days: int, horizon: int | None) -> object:
    """Every unit labelled, then the last ``days`` days of the mature ones counted; the
    error's text when there is nothing to count."""
    try:
        kept = _build(ws, outcome, as_of=as_of, labels_only=True, horizon_days=horizon)
        f = kept.filter(kept._mature).select("ts", "label").to_pandas()
    except UsageError as e:
        return str(e)
    if f.empty:
        return "no mature units"
    recent = f[f.ts > f.ts.max() - pd.Timedelta(days=days)]
    return len(recent), int(recent.label.sum())


def _stored(ws: Workspace, outcome: str, as_of: date, days: int, horizon: int | None) -> object:
    try:
        return recent_labels(ws, outcome, as_of=as_of, days=days, horizon_days=horizon)
    except UsageError as e:
        return str(e)


def assert_recent_current(ws: Workspace, as_of: date) -> None:
    """recent_labels at ``as_of`` (through the store) equals labelling every unit afresh:
    first the outcomes together (their new days' clicks read in one pass), then each alone."""
    wants = [_truth(ws, outcome, as_of, 3, horizon) for outcome, horizon, _ in CASES]
    horizons = {outcome: horizon for outcome, horizon, _ in CASES}
    try:
        together: object = recent_labels_all(
            ws, list(horizons), as_of=as_of, days=3, horizon_days=horizons
        )
    except UsageError as e:
        together = str(e)
    failed = [w for w in wants if isinstance(w, str)]
    if failed:  # the first outcome that cannot be counted stops it, with its message
        assert isinstance(together, str) and failed[0].split(":")[0] in together, together
    else:
        assert together == dict(zip(horizons, wants, strict=True)), (as_of, together, wants)
    for outcome, horizon, days in CASES:
        want = _truth(ws, outcome, as_of, days, horizon)
        got = _stored(ws, outcome, as_of, days, horizon)
        if isinstance(want, str):
            assert isinstance(got, str) and want.split(":")[0] in got, (outcome, got, want)
        else:
            assert got == want, (outcome, as_of, got, want)


def _last_day(ws: Workspace) -> date:
    row = ws.con.execute("SELECT max(ts) FROM touchpoints").fetchone()
    return row[0].date() if row and row[0] is not None else date(2026, 1, 28)


def _state(ws: Workspace, outcome: str) -> dict[str, Any]:
    return ws.read_meta(f"recent_labels:{outcome}")


def _days_stored(ws: Workspace, outcome: str) -> int:
    row = ws.con.execute(
        f"SELECT count(DISTINCT day) FROM {TABLE} WHERE outcome = ?", [outcome]
    ).fetchone()
    return int(row[0]) if row else 0


def test_days_are_stored_and_reused(tmp_path: Path) -> None:
    """The second run of a day counts nothing from the rows; the next day's drop leaves the
    days older than its rows' reach stored, and both equal labelling afresh."""
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for drop in drops[:2]:
            ingest_drop(ws, drop)
        as_of = _last_day(ws)
        assert_recent_current(ws, as_of)
        stored = _days_stored(ws, "conversion")
        assert stored >= 3  # the window of CASES (3 days) and the day before it
        before = ws.con.execute(f"SELECT * FROM {TABLE} ORDER BY ALL").fetchall()
        assert_recent_current(ws, as_of)  # nothing new: the same rows, nothing rewritten
        assert ws.con.execute(f"SELECT * FROM {TABLE} ORDER BY ALL").fetchall() == before
        ingest_drop(ws, drops[2])
        assert_recent_current(ws, _last_day(ws))
        after = ws.con.execute(f"SELECT * FROM {TABLE} ORDER BY ALL").fetchall()
        kept = {r[:2] for r in after} & {r[:2] for r in before}
        assert kept  # days both runs hold are the same rows (reused, or counted the same)
        assert [r for r in after if r[:2] in kept] == [r for r in before if r[:2] in kept]


def test_outcomes_counted_together_read_the_clicks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lead outcomes with days to count take their clicks from one shared pass over the
    history (a table that is gone afterwards); the conversion outcome reads only the clicks
    from its first day to count on (the stored attribution says which conversions name an
    earlier click). Each counts what it counts alone; after the next day's drop, and on the
    same day again, too."""
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    shared: list[list[str]] = []
    share = recent._share_clicks

    def spy(*args: Any) -> list[str]:
        shared.append(share(*args))
        return shared[-1]

    monkeypatch.setattr(recent, "_share_clicks", spy)
    horizons: dict[str, int | None] = {"conversion": None, "sql": 5, "won": 6}
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for drop in drops[:2]:
            ingest_drop(ws, drop)
        for step in range(2):
            as_of = _last_day(ws)
            got = recent_labels_all(ws, list(horizons), as_of=as_of, days=3, horizon_days=horizons)
            want = {o: _truth(ws, o, as_of, 3, h) for o, h in horizons.items()}
            assert got == want
            assert len(shared[-1]) == 1  # the two lead outcomes had new days: one pass
            assert not ws.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [shared[-1][0]]
            ).fetchone()[0]
            # the conversion outcome's clicks: from its first day to count on (the window's
            # 3 days and the day before, back from its 7-day label window's edge), no earlier
            first = ws.con.execute("SELECT min(ts) FROM _unit_day_clicks_conversion").fetchone()
            oldest = ws.con.execute("SELECT min(ts) FROM touchpoints").fetchone()
            bound = as_of - timedelta(days=7 + 3 + 1)
            assert first[0] is not None and first[0].date() >= bound, (first, bound)
            assert oldest[0].date() < bound - timedelta(days=3)  # (there were earlier ones)
            if step == 0:
                ingest_drop(ws, drops[2])
        # the same day again (its edge day is counted again, from the shared pass): the same
        assert (
            recent_labels_all(ws, list(horizons), as_of=as_of, days=3, horizon_days=horizons) == got
        )


def test_late_rows_and_the_as_of_moving_back(tmp_path: Path) -> None:
    """Touchpoints of old days arriving after their conversions, and conversions for old
    days arriving late, relabel the stored days they reach; an earlier as-of date, then the
    later one again, still count as the rows say."""
    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        first, last = drops[0], drops[-1]
        ingest_file(ws, "conversions", last["conversions"])  # conversions before their clicks
        ingest_file(ws, "crm", last["crm"])
        for kind in ("touchpoints", "conversions", "crm"):
            ingest_file(ws, kind, first[kind])
        as_of = _last_day(ws)
        assert_recent_current(ws, as_of)
        ingest_file(ws, "touchpoints", last["touchpoints"])  # the clicks come late
        later = _last_day(ws)
        assert_recent_current(ws, later)
        for d in (later - timedelta(days=6), later - timedelta(days=2), later):
            assert_recent_current(ws, d)


def test_conversions_before_the_clicks_they_name(tmp_path: Path) -> None:
    """A conversion dated before the click it names labels that click (by its id): the
    conversion outcome's days find such conversions among the stored attribution's, not
    only those from their first day on."""
    with Workspace(tmp_path / "ws.duckdb") as ws:
        as_of = _every_drop(ws, tmp_path)
        kind = ws.con.execute(
            "SELECT kind FROM conversions GROUP BY kind ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        assert kind is not None
        # clicks of the mature days around the window that no conversion names, each
        # converting 40 days before it
        early = ws.con.execute(
            "SELECT 'early-' || touch_id AS conversion_id, ts - INTERVAL 40 DAY AS ts, "
            "? AS kind, user_id, click_id FROM touchpoints WHERE click_id IS NOT NULL "
            "AND campaign_id IS NOT NULL AND ts >= ? AND ts < ? AND click_id NOT IN "
            "(SELECT click_id FROM conversions WHERE click_id IS NOT NULL) "
            "ORDER BY hash(touch_id) LIMIT 400",
            [kind[0], as_of - timedelta(days=14), as_of - timedelta(days=3)],
        ).df()
        assert len(early) == 400
        path = tmp_path / "early.csv"
        early.to_csv(path, index=False)
        before = _truth(ws, "conversion", as_of, 3, None)
        ingest_file(ws, "conversions", path)
        assert _truth(ws, "conversion", as_of, 3, None) != before  # (they label the window)
        assert_recent_current(ws, as_of)


def _every_drop(ws: Workspace, tmp_path: Path) -> date:
    """Every daily drop of the full shape ingested into ``ws`` and counted; the as-of date."""
    for drop in simulated_drops(tmp_path, "full", (), seed=SEED):
        ingest_drop(ws, drop)
    as_of = _last_day(ws)
    assert_recent_current(ws, as_of)
    return as_of


def test_exclusions_are_applied_when_read(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws.duckdb") as ws:
        as_of = _every_drop(ws, tmp_path)
        ws.con.execute(EXCLUSIONS_DDL)
        edge = as_of - timedelta(days=8)
        ws.con.execute(
            "INSERT INTO exclusions SELECT DISTINCT campaign_id, ?, ?, 't', 'test', NULL, NULL "
            "FROM touchpoints WHERE campaign_id IS NOT NULL",
            [edge - timedelta(days=2), edge],
        )
        ws.con.execute(
            "INSERT INTO exclusions VALUES ('c01', ?, NULL, 't', 'test', NULL, NULL)",
            [as_of - timedelta(days=20)],
        )
        assert_recent_current(ws, as_of)


def test_other_windows_rows_not_from_an_ingest_and_read_only(tmp_path: Path) -> None:
    drops = simulated_drops(tmp_path, "full", ("crm_duplicates@c02:3-20",), seed=SEED)
    path = tmp_path / "ws.duckdb"
    with Workspace(path) as ws:
        for drop in drops:
            ingest_drop(ws, drop)
        as_of = _last_day(ws)
        assert_recent_current(ws, as_of)
        # another label window: stored apart from nothing, the store starts again
        got = recent_labels(ws, "conversion", as_of=as_of, days=3, horizon_days=2)
        assert got == _truth(ws, "conversion", as_of, 3, 2)
        assert _state(ws, "conversion")["ident"]["horizon"] == 2
        # rows removed, not by an ingest: everything is counted again
        ws.con.execute(
            "DELETE FROM touchpoints WHERE touch_id IN "
            "(SELECT touch_id FROM touchpoints ORDER BY ts DESC LIMIT 300)"
        )
        assert_recent_current(ws, as_of)
    with Workspace(path, read_only=True) as ro:  # counted from the rows, nothing written
        assert_recent_current(ro, as_of)


@pytest.mark.parametrize("shape", ["spend", "spend_conversions", "crm"])
def test_shapes_without_clicks_say_so(tmp_path: Path, shape: str) -> None:
    drops = simulated_drops(tmp_path, shape, (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_drop(ws, drops[0])
        with pytest.raises(UsageError, match="no touchpoints"):
            recent_labels(ws, "conversion", as_of=date(2026, 1, 15), days=3)


@pytest.mark.parametrize("outcomes", [["sql"], ["sql", "won"]])
def test_lead_clicks_read_ahead_in_the_attribution_pass(
    tmp_path: Path, outcomes: list[str]
) -> None:
    """The daily run asks which users and click ids the lead outcomes' first days to count
    will read (:func:`~signalloop.models.recent.prefetch`) before the stored attribution's
    incremental pass over the history, which reads them too; the counts then take their
    clicks from what it kept (alone, or shared by two outcomes) and equal labelling every
    unit afresh. Rows ingested after the pass make the counts read the history again."""
    from signalloop.attribution import refresh_attribution

    drops = simulated_drops(tmp_path, "full", (), seed=SEED)
    with Workspace(tmp_path / "ws.duckdb") as ws:
        for drop in drops[:2]:
            ingest_drop(ws, drop)
        assert refresh_attribution(ws)
        windows = {o: 5 for o in outcomes}  # (label windows the drops' days can close)
        recent_labels_all(ws, outcomes, as_of=_last_day(ws), days=3, horizon_days=windows)
        ingest_drop(ws, drops[2])
        as_of = _last_day(ws)
        ahead = recent.prefetch(
            ws, ["conversion", *outcomes], as_of=as_of, days=3, horizon_days=windows
        )
        assert ahead is not None and [e[0] for e in ahead.entries] == outcomes
        assert refresh_attribution(ws, also=lambda: ahead)
        assert _refresh(ws) == "incremental" and ahead.table is not None
        got = recent_labels_all(ws, outcomes, as_of=as_of, days=3, horizon_days=windows)
        assert sorted(ahead.used) == sorted(outcomes)  # no pass of their own
        assert got == {o: _truth(ws, o, as_of, 3, 5) for o in outcomes}
        recent.forget_prefetch(ws)
        assert not ws.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_recent_prefetch%'"
        ).fetchone()[0]
        # read ahead, then rows arrive: the counts read the history, not the stale rows
        for kind in ("spend", "touchpoints", "conversions"):
            ingest_file(ws, kind, drops[3][kind])
        as_of = _last_day(ws)
        ahead = recent.prefetch(ws, outcomes, as_of=as_of, days=3, horizon_days=windows)
        assert ahead is not None
        assert refresh_attribution(ws, also=lambda: ahead) and ahead.table is not None
        ingest_file(ws, "crm", drops[3]["crm"])
        got = recent_labels_all(ws, outcomes, as_of=as_of, days=3, horizon_days=windows)
        assert ahead.used == []
        assert got == {o: _truth(ws, o, as_of, 3, 5) for o in outcomes}


def _refresh(ws: Workspace) -> str:
    from signalloop.attribution import ATTRIBUTION_STATE

    return str(ws.read_meta(ATTRIBUTION_STATE).get("refresh"))
