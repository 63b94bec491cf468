"""The ``click_id_loss`` fault: from day N a share of a campaign's conversions lose the click id.

A consent banner or a redirect that strips gclid / fbclid: the conversions of ~70% of the
campaign's clicks arrive with user_id only (no click_id, click_ts, campaign, ad set or
creative), so attribution falls back to the user's last touchpoint. Seeded, exact.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from signalloop import simulate as sim
from signalloop.attribution import attributed_conversions, attribution_counts
from signalloop.simulate.faults import LOSS_SHARE

from .conftest import simulated_workspace

DAYS, CAMPAIGNS, SEED = 28, 3, 4
LOSS = "click_id_loss@c03:14-"
TIED = ["click_id", "click_ts", "campaign_id", "adset_id", "creative_id"]


@cache
def simulated(faults: tuple[str, ...] = (), shape: str = "full") -> sim.Simulation:
    ids = sim.campaign_ids(CAMPAIGNS)
    parsed = tuple(sim.parse_fault(f, days=DAYS, campaign_ids=ids) for f in faults)
    return sim.simulate(
        sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=parsed, shape=shape)
    )


def frames(res: sim.Simulation) -> dict[str, pd.DataFrame]:
    return {k: t.to_pandas() for k, t in res.tables.items()}


def test_parse_and_name() -> None:
    assert "click_id_loss" in sim.FAULT_NAMES
    ids = sim.campaign_ids(6)
    assert sim.parse_fault("click_id_loss@c03:55-", days=90, campaign_ids=ids) == sim.Fault(
        "click_id_loss", "c03", 55, 89
    )
    assert LOSS_SHARE == 0.7


def test_truth_note_counts_exactly() -> None:
    note = dict(simulated((LOSS,)).truth["faults"][0])
    ids = note.pop("conversion_ids")
    assert note == {
        "name": "click_id_loss",
        "campaign": "c03",
        "campaigns": ["c03"],
        "start": 14,
        "end": 27,
        "start_date": "2026-01-15",
        "end_date": "2026-01-28",
        "rows": {"removed": {}, "changed": {"conversions": 48}, "added": {}},
        "share": 0.7,
        "clicks_affected": 2351,
        "conversions_affected": 48,
        "affected_by_kind": {"purchase": 48},
        "conversions_in_window": 71,
        "kept_share": 0.3239,
    }
    assert len(ids) == len(set(ids)) == 48 and ids == sorted(ids)
    assert ids[:3] == ["cv30014000102", "cv30014000136", "cv30014000189"]
    # ~70% of the campaign's clicks in the window
    touch = frames(simulated())["touchpoints"]
    day = touch.ts.dt.tz_convert(None) - pd.Timestamp("2026-01-01")
    window = (touch.campaign_id == "c03") & (day.dt.days >= 14)
    assert 2351 / window.sum() == pytest.approx(LOSS_SHARE, abs=0.02)


def test_lost_rows_keep_only_the_user() -> None:
    base, bad = frames(simulated()), frames(simulated((LOSS,)))
    note = simulated((LOSS,)).truth["faults"][0]
    conv, clean = bad["conversions"], base["conversions"]
    assert len(conv) == len(clean) == 1474
    assert (conv.conversion_id == clean.conversion_id).all()
    lost = conv.conversion_id.isin(note["conversion_ids"])
    assert lost.sum() == 48
    assert conv.loc[lost, TIED].isna().all().all()
    assert conv.loc[lost, "user_id"].notna().all()
    assert conv.loc[lost, "user_id"].tolist() == clean.loc[lost, "user_id"].tolist()
    # nothing else changes: the other rows, the other columns, touchpoints and spend
    pd.testing.assert_frame_equal(conv[~lost], clean[~lost])
    keep = [c for c in conv.columns if c not in TIED]
    pd.testing.assert_frame_equal(conv[keep], clean[keep])
    for kind in ("spend", "touchpoints", "crm", "changes"):
        pd.testing.assert_frame_equal(bad[kind], base[kind])
    # the lost rows are c03's clicks in the window; before it every conversion has its click id
    touch = base["touchpoints"].set_index("touch_id")
    click = touch.loc["t" + conv.conversion_id.str[2:]]
    camp, when = click.campaign_id.to_numpy(), click.ts.to_numpy()
    start = pd.Timestamp("2026-01-15", tz="UTC")
    assert (camp[lost.to_numpy()] == "c03").all() and (when[lost.to_numpy()] >= start).all()
    assert conv.click_id[when < start].notna().all()
    in_window = (camp == "c03") & (when >= start)
    assert in_window.sum() == 71 and round(1 - 48 / 71, 4) == note["kept_share"]


def test_crm_conversions_of_a_lost_lead_lose_it_too() -> None:
    res = simulated(("click_id_loss@c01:7-",))
    note = res.truth["faults"][0]
    assert note["affected_by_kind"] == {"lead": 33, "sql": 4}
    assert note["conversions_affected"] == 37 and note["clicks_affected"] == 779
    assert (note["conversions_in_window"], note["kept_share"]) == (53, 0.3019)
    conv = frames(res)["conversions"]
    lost = conv[conv.conversion_id.isin(note["conversion_ids"])]
    # a record's sql / opportunity / deal rows share its lead's click number: all or none lost
    n = conv.conversion_id.str[2:]
    for num in lost.conversion_id.str[2:]:
        assert conv.click_id[n == num].isna().all()


def test_copies_of_a_lost_conversion_are_lost_too() -> None:
    res = simulated((LOSS, "duplicate_events@c03:10-"))
    conv = frames(res)["conversions"]
    loss, dup = res.truth["faults"]
    assert dup["rows"]["added"] == {"conversions": 16}
    assert loss["conversions_affected"] == 54 and loss["rows"]["changed"] == {"conversions": 54}
    # the same 48 conversions as without the copies, 6 of them copied
    assert loss["conversion_ids"] == simulated((LOSS,)).truth["faults"][0]["conversion_ids"]
    ids = set(loss["conversion_ids"])
    assert conv.conversion_id.isin(ids).sum() == 54
    assert conv.click_id[conv.conversion_id.isin(ids)].isna().all()
    assert conv.click_id[~conv.conversion_id.isin(ids)].notna().all()


def test_attribution_falls_back_to_the_user(tmp_path: Path) -> None:
    ws, res, _ = simulated_workspace(
        tmp_path, days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=[LOSS], db=":memory:"
    )
    with ws:
        assert attribution_counts(ws) == {"user_id": 48, "click_id": 288, "campaign_id": 1138}
        a = attributed_conversions(ws).to_pandas()
        lost = a[a.conversion_id.isin(res.truth["faults"][0]["conversion_ids"])]
        by = lost.groupby(["attributed_by", "attributed_campaign_id"]).size().to_dict()
        # the user's last touchpoint before the conversion: mostly the lost click's campaign
        assert by == {("user_id", "c02"): 6, ("user_id", "c03"): 42}


def test_partial_shapes_lose_the_utm_campaign_too(tmp_path: Path) -> None:
    res = simulated((LOSS,), "spend_conversions")
    note = res.truth["faults"][0]
    conv = res.tables["conversions"]
    lost = pc.is_in(conv["conversion_id"], pa.array(note["conversion_ids"]))
    assert note["conversions_affected"] == 48
    assert conv.filter(lost)["campaign_id"].null_count == 48
    assert conv.filter(pc.invert(lost))["campaign_id"].null_count == 0
    ws, _, _ = simulated_workspace(
        tmp_path,
        days=DAYS,
        campaigns=CAMPAIGNS,
        seed=SEED,
        faults=[LOSS],
        db=":memory:",
        shape="spend_conversions",
    )
    with ws:  # no touchpoints to fall back on: the lost rows cannot be attributed
        assert attribution_counts(ws) == {"unattributed": 48, "campaign_id": 1426}
