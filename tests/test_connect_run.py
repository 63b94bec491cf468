"""``signalloop run`` with ``[run] pull = true`` against the simulator's account served by the
local stand-ins (issue 15): pulled first, nothing duplicated across runs, a refused
credential reported while the loop goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signalloop.config import settings_from_dict
from signalloop.push.sandbox import Sandbox
from signalloop.run import run
from signalloop.simulate.config import SimulationConfig
from signalloop.simulate.simulation import simulate
from signalloop.store import Workspace


def test_run_pulls_first_and_repeats_add_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = SimulationConfig(days=21, campaigns=3, shape="spend")
    rows = simulate(cfg).tables["spend"].to_pylist()
    last = cfg.start + timedelta(days=cfg.days - 1)
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", "sandbox-meta-token")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", "sandbox-developer-token")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", "sandbox-access-token")
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    with Sandbox(now=now) as sb:
        sb.load_spend(rows, meta_account="7", google_customer="5550001111")
        settings = settings_from_dict(
            {
                "run": {"pull": True, "out": str(tmp_path / "report")},
                "connect": {
                    "lookback_days": 28,
                    "meta": {"ad_account_id": "7", "base_url": sb.base_url},
                    "google": {"customer_id": "5550001111", "base_url": sb.base_url},
                },
            }
        )
        with Workspace(str(tmp_path / "w.duckdb")) as ws:
            first = run(ws, settings=settings, pull_today=last + timedelta(days=1))
            assert [p["status"] for p in first["pull"]] == ["ok", "ok"]
            assert first["as_of"] == last.isoformat()
            n = ws.con.execute("SELECT count(*) FROM spend").fetchone()
            assert n is not None and n[0] == sum(p["rows_loaded"] for p in first["pull"]) > 0
            monkeypatch.delenv("SIGNALLOOP_META_ACCESS_TOKEN")
            second = run(ws, settings=settings, pull_today=last + timedelta(days=1))
            meta, google = second["pull"]
            assert meta["status"] == "error" and "SIGNALLOOP_META_ACCESS_TOKEN" in meta["message"]
            assert (google["rows_loaded"], google["rows_restated"]) == (0, 0)
            assert ws.con.execute("SELECT count(*) FROM spend").fetchone() == n
            assert second["report"]["json"]
