"""The simulator's account served by the local stand-ins and pulled back (issue 15): the demo
path without credentials."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from signalloop.config import settings_from_dict
from signalloop.connect.pull import pull
from signalloop.push.client import Client
from signalloop.push.sandbox import Sandbox
from signalloop.simulate.config import SimulationConfig
from signalloop.simulate.simulation import simulate
from signalloop.store import Workspace


def test_simulated_spend_round_trips_through_both_platforms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = SimulationConfig(days=12, campaigns=4, shape="spend")
    rows = simulate(cfg).tables["spend"].to_pylist()
    last = cfg.start + timedelta(days=cfg.days - 1)
    truth: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        truth[(r["platform"], r["campaign_id"])] += r["spend"]
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", "sandbox-meta-token")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", "sandbox-developer-token")
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", "sandbox-access-token")
    now = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    with Sandbox(now=now) as sb:
        served = sb.load_spend(rows, meta_account="act_7", google_customer="5550001111")
        assert served == {
            "meta": sum(r["platform"] == "meta" for r in rows),
            "google": sum(r["platform"] == "google" for r in rows),
        }
        settings = settings_from_dict(
            {
                "connect": {
                    "meta": {"ad_account_id": "act_7", "base_url": sb.base_url},
                    "google": {"customer_id": "5550001111", "base_url": sb.base_url},
                }
            }
        )
        ws = Workspace(":memory:")
        for platform in ("meta", "google"):
            res = pull(
                ws,
                platform,
                since=cfg.start,
                until=last,
                settings=settings,
                client=Client(sleep=lambda _: None),
                today=last + timedelta(days=1),
                poll_wait=0,
            )
            assert res.status == "ok" and res.rows_quarantined == 0
    got = dict(
        ((p, c), s)
        for p, c, s in ws.con.execute(
            "SELECT platform, campaign_id, sum(spend) FROM spend GROUP BY 1, 2"
        ).fetchall()
    )
    assert set(got) == set(truth)
    for key, spend in truth.items():
        assert got[key] == pytest.approx(spend, abs=0.01)
