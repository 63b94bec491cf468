"""The six core check computations: exact answers on hand-made tables, and the same results as
the DuckDB SQL anchor (``shared/bench/anchor_engines.py``) on generated event logs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from signalloop.checks.core import (
    Dropout,
    daily_dropouts,
    delay_quantiles,
    duplicate_count,
    duplicate_counts_by,
    null_rates,
    outside_taxonomy,
    stage_regressions,
)
from signalloop.contract import FUNNEL
from signalloop.ingest import ingest_file
from signalloop.store import Workspace

from .conftest import write_csv

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("SIGNALLOOP_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
T0 = datetime(2025, 1, 1)
D0 = date(2025, 1, 1)


def day(i: int) -> date:
    return D0 + timedelta(days=i)


# ----------------------------------------------------------------------------- hand-made tables
def test_null_rates_exact() -> None:
    t = ibis.memtable(
        {"a": [1, None, 3, None], "b": ["x", None, "z", "w"], "c": [None, None, None, None]},
        schema={"a": "int64", "b": "string", "c": "float64"},
    )
    assert null_rates(t) == {"a": 0.5, "b": 0.25, "c": 1.0}
    assert null_rates(t, ["c", "a"]) == {"c": 1.0, "a": 0.5}
    empty = t.filter(t.a > 100)
    assert null_rates(empty, ["a", "b"]) == {"a": 0.0, "b": 0.0}


def test_duplicate_count_exact() -> None:
    t = ibis.memtable(
        {"id": [1, 1, 1, 2, None, None], "k": ["x", "x", "y", "x", "x", "x"]},
        schema={"id": "int64", "k": "string"},
    )
    # 6 rows, 2 distinct non-NULL ids: the 2 extra copies of 1 and both NULL-id rows
    assert duplicate_count(t, "id") == 4
    # composite key: (1,x), (1,y), (2,x) distinct; one extra (1,x); 2 rows without a full key
    assert duplicate_count(t, ["id", "k"]) == 3
    assert duplicate_count(t.filter(t.id == 2), "id") == 0
    assert duplicate_count(t.filter(t.id > 100), "id") == 0
    with pytest.raises(ValueError):
        duplicate_count(t, [])


def test_duplicate_counts_by_group() -> None:
    t = ibis.memtable({"id": [1, 1, 1, 2, 3, 3], "c": ["x", "x", "y", "y", "z", "z"]})
    assert duplicate_counts_by(t, "id", "c") == {"x": 1, "y": 0, "z": 1}
    both = duplicate_counts_by(t, "id", ["c", "c"])
    assert both == {("x", "x"): 1, ("y", "y"): 0, ("z", "z"): 1}


def test_outside_taxonomy_exact() -> None:
    t = ibis.memtable(
        {"s": ["google", "Google", "google ", None, "fb", "fb", "facebook", "google"]},
        schema={"s": "string"},
    )
    got = outside_taxonomy(t, "s", ["google", "facebook"])
    # exact comparison (case and spaces matter); most frequent first, then by value, NULL last
    assert list(got.items()) == [("fb", 2), ("Google", 1), ("google ", 1), (None, 1)]
    assert outside_taxonomy(t, "s", ["google", "Google", "google ", "fb", "facebook"]) == {None: 1}
    assert (
        outside_taxonomy(
            t.filter(t.s.notnull()), "s", {"google", "Google", "google ", "fb", "facebook"}
        )
        == {}
    )
    assert outside_taxonomy(t, "s", []) == {
        "google": 2,
        "fb": 2,
        "Google": 1,
        "facebook": 1,
        "google ": 1,
        None: 1,
    }


def _daily_table(counts: dict[str, list[int]], as_date: bool = False) -> Any:
    ts: list[Any] = []
    grp: list[str | None] = []
    for g, per_day in counts.items():
        for i, k in enumerate(per_day):
            for j in range(k):  # spread over the day; the day is what counts
                ts.append(T0 + timedelta(days=i, minutes=37 * j))
                grp.append(g)
    # rows that are never counted: a NULL group on a day of its own, a NULL time
    ts += [T0 + timedelta(days=3), None]
    grp += [None, "a"]
    col: list[Any] = [x.date() if (as_date and x is not None) else x for x in ts]
    return ibis.memtable(
        {"ts": col, "g": grp}, schema={"ts": "date" if as_date else "timestamp", "g": "string"}
    )


COUNTS = {
    "a": [10, 10, 10, 10, 10, 10, 10, 1, 0, 10],  # drops on days 7 and 8
    "b": [0, 0, 0, 0, 0, 10, 10, 10, 10, 10],  # starts late: zeros first, no flag
    "c": [10, 0, 10, 10, 10, 10, 10, 10, 10, 10],  # day 1 has < 7 previous days: no flag
}


def test_daily_dropouts_exact() -> None:
    t = _daily_table(COUNTS)
    # day 8: previous 7 days are [10,10,10,10,10,10,1] -> median 10
    assert daily_dropouts(t, "ts", "g") == [
        Dropout("a", day(7), 1, 10.0),
        Dropout("a", day(8), 0, 10.0),
    ]
    # an even window interpolates the median: day 8 sees [10, 1] -> 5.5
    assert daily_dropouts(t, "ts", "g", ratio=0.2, window=2) == [
        Dropout("a", day(7), 1, 10.0),
        Dropout("a", day(8), 0, 5.5),
    ]
    # strictly below: with ratio 1, a's day 9 (10 against a median of 10) is still not flagged
    assert daily_dropouts(t, "ts", "g", ratio=1.0) == daily_dropouts(t, "ts", "g")
    assert daily_dropouts(t, "ts", "g", ratio=0.05) == [Dropout("a", day(8), 0, 10.0)]
    assert daily_dropouts(t.filter(t.g == "zzz"), "ts", "g") == []
    with pytest.raises(ValueError):
        daily_dropouts(t, "ts", "g", window=0)


def test_daily_dropouts_date_column_same_as_timestamp() -> None:
    by_ts = daily_dropouts(_daily_table(COUNTS), "ts", "g")
    by_date = daily_dropouts(_daily_table(COUNTS, as_date=True), "ts", "g")
    assert by_ts == by_date and len(by_ts) == 2


def test_daily_dropouts_grid_spans_all_groups_days() -> None:
    # b's last days are empty, but the grid runs to the last day of any group: b drops on 8, 9
    counts = {"a": [5] * 10, "b": [5] * 8 + [0, 0]}
    got = daily_dropouts(_daily_table(counts), "ts", "g")
    assert got == [Dropout("b", day(8), 0, 5.0), Dropout("b", day(9), 0, 5.0)]


def test_delay_quantiles_exact() -> None:
    rows = [
        ("a", 0.0),
        ("a", 10.0),
        ("a", 20.0),
        ("a", 30.0),
        ("a", 100.0),
        ("b", -60.0),  # the click after the conversion: a negative delay
        ("b", None),  # no click time: left out
        ("c", 0.5),
    ]
    t = ibis.memtable(
        {
            "g": [g for g, _ in rows],
            "ts": [T0 + timedelta(days=1) for _ in rows],
            "click": [None if s is None else T0 + timedelta(days=1, seconds=-s) for _, s in rows],
        },
        schema={"g": "string", "ts": "timestamp", "click": "timestamp"},
    )
    got = delay_quantiles(t, "ts", "click", "g")
    assert list(got) == ["a", "b", "c"]
    assert got["a"] == pytest.approx((20.0, 72.0, 97.2), rel=1e-12)
    assert got["b"] == (-60.0, -60.0, -60.0)
    assert got["c"] == (0.5, 0.5, 0.5)
    assert delay_quantiles(t, "ts", "click", "g", qs=(0.0, 1.0))["a"] == (0.0, 100.0)
    with pytest.raises(ValueError):
        delay_quantiles(t, "ts", "click", "g", qs=(0.5, 1.5))


def test_stage_regressions_exact() -> None:
    ranks = {"lead": 1, "mql": 2, "sql": 3}
    events: list[tuple[str | None, str, int | None]] = [
        ("u1", "lead", 1),
        ("u1", "mql", 2),
        ("u1", "sql", 3),  # in order
        ("u2", "mql", 1),
        ("u2", "lead", 2),
        ("u2", "mql", 3),
        ("u2", "lead", 4),  # backwards twice: counted once
        ("u3", "sql", 1),
        ("u3", "lead", 1),
        ("u3", "mql", 1),  # same time: ordered by rank, not backwards
        ("u4", "lead", 1),
        ("u4", "sql", 2),
        ("u4", "mql", 3),  # sql -> mql
        ("u5", "sql", 1),
        ("u5", "unknown", 2),
        ("u5", "sql", 3),  # stages outside the ranks are ignored
        (None, "mql", 1),
        (None, "lead", 2),  # no entity: ignored
        ("u6", "mql", 1),
        ("u6", "lead", None),  # a NULL time sorts last: mql -> lead
        ("u7", "mql", None),
        ("u7", "lead", None),  # both NULL: ordered by rank
    ]
    t = ibis.memtable(
        {
            "u": [e for e, _, _ in events],
            "stage": [s for _, s, _ in events],
            "ts": [None if x is None else T0 + timedelta(hours=x) for _, _, x in events],
        },
        schema={"u": "string", "stage": "string", "ts": "timestamp"},
    )
    assert stage_regressions(t, "u", "stage", "ts", ranks) == 3  # u2, u4, u6
    assert stage_regressions(t, "u", "stage", "ts", {"lead": 1, "mql": 1, "sql": 1}) == 0
    assert stage_regressions(t, "u", "stage", "ts", {}) == 0
    # two stages at one rank: u4's sql -> mql is no longer backwards
    assert stage_regressions(t, "u", "stage", "ts", {"lead": 1, "mql": 2, "sql": 2}) == 2


def test_on_workspace_tables(ws: Workspace, tmp_path: Path) -> None:
    """The same functions on canonical workspace tables."""
    crm = write_csv(
        tmp_path / "crm.csv",
        ["record_id", "stage", "ts"],
        [
            ["r1", "lead", "2026-01-01T10:00:00Z"],
            ["r1", "mql", "2026-01-02T10:00:00Z"],
            ["r1", "lead", "2026-01-03T10:00:00Z"],
            ["r2", "lead", "2026-01-01T10:00:00Z"],
            ["r2", "won", "2026-01-05T10:00:00Z"],
        ],
    )
    conv = write_csv(
        tmp_path / "conv.csv",
        ["conversion_id", "ts", "kind", "campaign_id", "click_ts"],
        [
            ["k1", "2026-01-02T00:00:00Z", "lead", "c1", "2026-01-01T00:00:00Z"],
            ["k2", "2026-01-03T00:00:00Z", "lead", "c1", "2026-01-01T00:00:00Z"],
            ["k3", "2026-01-03T00:00:00Z", "lead", "c2", ""],
        ],
    )
    ingest_file(ws, "crm", crm)
    ingest_file(ws, "conversions", conv)
    ranks = {s: i for i, s in enumerate(FUNNEL)}
    assert stage_regressions(ws.table("crm"), "record_id", "stage", "ts", ranks) == 1
    c = ws.table("conversions")
    assert null_rates(c, ["conversion_id", "click_ts"]) == pytest.approx(
        {"conversion_id": 0.0, "click_ts": 1 / 3}
    )
    assert duplicate_count(c, "conversion_id") == 0
    assert delay_quantiles(c, "ts", "click_ts", "campaign_id", qs=(0.5,)) == {"c1": (129600.0,)}


# ----------------------------------------------------------------------------- against the anchor
@pytest.fixture(scope="module")
def bench() -> tuple[ModuleType, ModuleType]:
    """The anchor engines and the benchmark's normaliser, or skip with the reason."""
    if not (BENCH / "anchor_engines.py").exists() or not (BENCH / "gen_events.py").exists():
        pytest.skip(f"shared/bench (anchor_engines.py, gen_events.py) not available: {BENCH}")
    if str(ROOT / "benchmarks") not in sys.path:  # the benchmark imports its _report helper
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "checks_speed", ROOT / "benchmarks" / "checks_speed.py"
    )
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    return speed.anchors(), speed


def _compare(path: Path, bench: tuple[ModuleType, ModuleType]) -> dict[str, Any]:
    anchor, speed = bench
    ctx = anchor.duckdb_sql.setup(str(path))
    t = ibis.duckdb.connect().read_parquet(str(path))
    ours: dict[str, Callable[[], Any]] = speed.signalloop_checks(t)
    got = {c: speed.normalise(c, fn()) for c, fn in ours.items()}
    ref = {c: speed.normalise(c, getattr(anchor.duckdb_sql, c)(ctx)) for c in speed.CHECKS}
    assert speed.mismatches(got, ref, speed.CHECKS) == []
    return got


def test_same_as_anchor_on_generated_events(
    bench: tuple[ModuleType, ModuleType], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    subprocess.run(
        [sys.executable, str(BENCH / "gen_events.py"), "200000", str(path), "--chunk", "100000"],
        check=True,
        capture_output=True,
    )
    got = _compare(path, bench)
    # the planted defects are found
    assert got["b_dup_ids"] > 0 and got["f_regress"] > 0
    assert None in got["c_bad_utm"] and "fb" in got["c_bad_utm"]
    assert {g for g, *_ in got["d_dropout"]} >= {"cmp_0003", "cmp_0005"}
    assert len(got["e_delay_q"]) == 200


def _random_events(seed: int, n: int = 3000) -> pa.Table:
    """A small event log in the anchor's schema with many ties, NULLs and dropouts."""
    rng = np.random.default_rng(seed)
    days = 12
    slot = rng.integers(0, days * 4, n)  # 6-hour slots: many equal times
    ts = np.array([T0 + timedelta(hours=6 * int(s)) for s in slot], dtype=object)
    cmp = rng.choice(np.array(["c1", "c2", "c3", None], dtype=object), n, p=[0.4, 0.3, 0.27, 0.03])
    d = slot // 4
    keep = ~(((cmp == "c1") & (d == 9)) | ((cmp == "c2") & (d == 10) & (rng.random(n) < 0.9)))
    ts[rng.random(n) < 0.02] = None
    etype = rng.choice(
        np.array(["impression", "click", "lead", "mql", "sql", "opportunity", "won", "lost"]), n
    )
    uid = np.array([f"u{i}" for i in rng.integers(0, 40, n)], dtype=object)
    uid[rng.random(n) < 0.1] = None
    src = rng.choice(np.array(["facebook", "google", "linkedin", "Google", "fb ", "", None]), n)
    delay = rng.lognormal(8, 1.5, n) * np.where(rng.random(n) < 0.05, -1, 1)
    click = np.array(
        [
            None if (x is None or r < 0.3) else x - timedelta(seconds=float(s))
            for x, r, s in zip(ts, rng.random(n), delay, strict=True)
        ],
        dtype=object,
    )
    eid = np.array([f"e{i}" for i in rng.integers(0, int(n * 0.9), n)], dtype=object)
    eid[rng.random(n) < 0.01] = None
    cost = rng.gamma(2.0, 1.0, n)
    table = pa.table(
        {
            "event_id": pa.array(eid, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us")),
            "event_type": pa.array(etype, pa.string()),
            "campaign_id": pa.array(cmp, pa.string()),
            "creative_id": pa.array(
                [None if r < 0.5 else "cr1" for r in rng.random(n)], pa.string()
            ),
            "utm_source": pa.array(src, pa.string()),
            "utm_medium": pa.array(
                [None if r < 0.1 else "cpc" for r in rng.random(n)], pa.string()
            ),
            "cost": pa.array(cost, mask=rng.random(n) < 0.2),
            "revenue": pa.array(cost * 100, mask=rng.random(n) < 0.9),
            "user_id": pa.array(uid, pa.string()),
            "click_ts": pa.array(click, pa.timestamp("us")),
        }
    )
    return table.filter(pa.array(keep))


@pytest.mark.parametrize("seed", range(6))
def test_same_as_anchor_on_random_edge_cases(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path, seed: int
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_random_events(seed), path)
    got = _compare(path, bench)
    assert got["f_regress"] > 0
    assert ("c1", day(9), 0) in {(g, d, k) for g, d, k, _ in got["d_dropout"]}
