"""The simulator's data shapes and its platform-reported conversions.

Every shape simulates the same world (same seed, same truth); the shape only picks the kinds
written, and in the partial shapes every conversion carries its campaign_id. The platform's
own conversion counts in the spend table are noisy and over-count the tracked conversions.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalloop import simulate as sim
from signalloop.contract import KINDS
from signalloop.errors import UsageError

from .conftest import simulated_workspace
from .test_cli import assert_no_traceback, run

DAYS, CAMPAIGNS, SEED = 28, 3, 4


@cache
def simulated(shape: str = "full", click_ts: bool = True, faults: str = "") -> sim.Simulation:
    """One seeded simulation per (shape, click_ts, faults), shared by the tests."""
    ids = sim.campaign_ids(CAMPAIGNS)
    parsed = tuple(sim.parse_fault(f, days=DAYS, campaign_ids=ids) for f in faults.split() if f)
    return sim.simulate(
        sim.SimulationConfig(
            days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=parsed, shape=shape, click_ts=click_ts
        )
    )


def written(tmp_path: Path, res: sim.Simulation) -> dict[str, bytes]:
    """The files :func:`~signalloop.simulate.write` writes, by name, as bytes."""
    paths = sim.write(res, tmp_path / res.config.shape)
    return {p.name: p.read_bytes() for p in paths.values()}


def header(data: bytes) -> list[str]:
    return data.split(b"\n", 1)[0].decode().split(",")


# ---- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "files"),
    [
        ("spend", ["spend.csv", "truth.json"]),
        ("spend_conversions", ["conversions.csv", "spend.csv", "truth.json"]),
        ("crm", ["conversions.csv", "crm.csv", "spend.csv", "truth.json"]),
        (
            "full",
            [*sorted(f"{k}.csv" for k in KINDS), "truth.json"],
        ),
    ],
)
def test_each_shape_writes_its_kinds_with_the_contract_columns(
    tmp_path: Path, shape: str, files: list[str]
) -> None:
    res = simulated(shape)
    out = written(tmp_path, res)
    assert sorted(out) == files
    assert list(res.tables) == list(sim.SHAPE_KINDS[shape])
    for name, data in out.items():
        if name.endswith(".csv"):
            kind = name.removesuffix(".csv")
            cols = header(data)
            assert set(KINDS[kind].required) <= set(cols)
            ours = [c for c in cols if c in KINDS[kind].names]  # in contract order, first
            assert ours == [c for c in KINDS[kind].names if c in cols] == cols[: len(ours)]
    spend = header(out["spend.csv"])
    assert "platform_conversions" in spend and "platform_conversion_value" in spend
    truth = json.loads(out["truth.json"])
    assert truth["config"]["shape"] == shape
    assert truth["config"]["kinds"] == list(sim.SHAPE_KINDS[shape])
    assert truth["config"]["click_ts"] is True


def test_shapes_are_named_in_order_of_data() -> None:
    assert sim.SHAPES == ("spend", "spend_conversions", "crm", "full")
    assert sim.SimulationConfig().shape == "full"
    with pytest.raises(UsageError, match="unknown shape 'touchpoints'; expected one of spend, "):
        sim.SimulationConfig(shape="touchpoints")


def world(truth: bytes) -> dict[str, dict[str, object]]:
    """``truth.json`` without the shape it was written in."""
    doc: dict[str, dict[str, object]] = json.loads(truth)
    del doc["config"]["shape"], doc["config"]["kinds"]
    return doc


def test_the_world_is_the_same_for_every_shape(tmp_path: Path) -> None:
    full = written(tmp_path, simulated("full"))
    for shape in ("spend", "spend_conversions", "crm"):
        out = written(tmp_path, simulated(shape))
        assert out["spend.csv"] == full["spend.csv"]
        if "crm.csv" in out:
            assert out["crm.csv"] == full["crm.csv"]
        assert world(out["truth.json"]) == world(full["truth.json"])


def test_partial_shapes_give_every_conversion_its_campaign() -> None:
    full = simulated("full").tables
    part = simulated("spend_conversions").tables["conversions"]
    conv = full["conversions"]
    assert part.column_names == conv.column_names
    for name in conv.column_names:
        if name != "campaign_id":
            assert part[name].equals(conv[name]), name
    # full: only the pixel's rows carry campaign_id; the partial shapes: every row
    f, p = conv.to_pandas(), part.to_pandas()
    assert f.campaign_id.notna().sum() == 1180 and len(f) == 1474
    assert p.campaign_id.notna().all()
    assert (p.campaign_id[f.campaign_id.notna()] == f.campaign_id.dropna()).all()
    # the campaign is the click's: conversion cvN / sqN / opN / dlN comes from touch tN
    touch = full["touchpoints"].to_pandas().set_index("touch_id").campaign_id
    click = "t" + p.conversion_id.str[2:]
    assert (p.campaign_id.to_numpy() == touch.loc[click].to_numpy()).all()
    assert p.click_ts.notna().all() and p.user_id.notna().all() and p.click_id.notna().all()
    kinds = p.kind.value_counts().to_dict()
    assert kinds == {"purchase": 1383, "lead": 73, "sql": 12, "opportunity": 4, "deal": 2}


def test_click_ts_false_leaves_the_column_out(tmp_path: Path) -> None:
    for shape in ("spend_conversions", "full"):
        base = simulated(shape).tables["conversions"]
        res = simulated(shape, click_ts=False)
        conv = res.tables["conversions"]
        assert "click_ts" not in conv.column_names
        assert conv.equals(base.drop_columns(["click_ts"]))
        assert res.truth["config"]["click_ts"] is False
    out = written(tmp_path, simulated("spend_conversions", click_ts=False))
    assert "click_ts" not in header(out["conversions.csv"])


def test_simulated_workspace_ingests_the_shape_only(tmp_path: Path) -> None:
    ws, _, paths = simulated_workspace(
        tmp_path, days=DAYS, campaigns=CAMPAIGNS, seed=SEED, shape="spend_conversions"
    )
    with ws:
        assert sorted(paths) == ["conversions", "spend", "truth"]
        assert ws.table("spend").count().execute() == 643
        assert ws.table("conversions").count().execute() == 1474
        conv = ws.table("conversions")
        assert conv.filter(conv.campaign_id.isnull()).count().execute() == 0


def test_glitches_of_a_shape_are_those_of_its_kinds(tmp_path: Path) -> None:
    full = simulated("full", faults="export_glitches@*")
    spend = simulated("spend", faults="export_glitches@*")
    assert spend.glitches == [g for g in full.glitches if g.kind == "spend"]
    note = spend.truth["faults"][0]
    assert note["rows"]["changed"] == {"spend": 9}
    assert [g["file"] for g in note["glitches"]] == ["spend.csv"] * 9
    assert written(tmp_path, spend)["spend.csv"] == written(tmp_path / "f", full)["spend.csv"]


def test_cli_shape(tmp_path: Path) -> None:
    out = tmp_path / "s"
    p = run(
        "simulate", "--out", str(out), "--days", "14", "--campaigns", "2", "--shape", "spend",
        "--json",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert sorted(doc["files"]) == ["spend", "truth"] and list(doc["rows"]) == ["spend"]
    assert sorted(f.name for f in out.iterdir()) == ["spend.csv", "truth.json"]
    assert json.loads((out / "truth.json").read_text())["config"]["shape"] == "spend"
    p = run("simulate", "--out", str(tmp_path / "b"), "--shape", "clicks")
    assert p.returncode == 2
    assert_no_traceback(p)
    assert "--shape expects one of spend, spend_conversions, crm, full, got 'clicks'" in p.stderr
    assert not (tmp_path / "b").exists()
    # the policy's time loop sees only what the shape exports: the platform's own counts
    p = run(
        "simulate", "--policy", "guarded_bayes", "--shape", "spend", "--days", "21",
        "--campaigns", "3", "--json",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    loop = json.loads(p.stdout)
    assert loop["config"]["shape"] == "spend"
    assert loop["totals"]["outcome_source"] == "platform_reported"
    assert loop["totals"]["breaches"] == 0


# ---- platform-reported conversions ----------------------------------------------------------


def tracked_vs_reported(res: sim.Simulation) -> pd.DataFrame:
    """Per spend row: the tracked (pixel / server) conversions of its click day and ad."""
    t = res.tables
    conv = t["conversions"].to_pandas()
    conv = conv[conv.source.isin(["pixel", "server"])]
    touch = t["touchpoints"].to_pandas().set_index("touch_id")
    click = touch.loc["t" + conv.conversion_id.str[2:]]
    key = pd.DataFrame(
        {"date": click.ts.dt.date.to_numpy(), "ad_id": click.ad_id.to_numpy(), "n": 1}
    )
    tracked = key.groupby(["date", "ad_id"]).n.sum()
    spend = t["spend"].to_pandas()
    idx = pd.MultiIndex.from_arrays([spend.date, spend.ad_id])
    spend["tracked"] = tracked.reindex(idx).fillna(0).to_numpy()
    assert tracked.sum() == spend.tracked.sum()  # every tracked conversion has its spend row
    return spend


def test_platform_conversions_over_count_the_tracked_ones() -> None:
    res = simulated("full")
    spend = tracked_vs_reported(res)
    assert (spend.platform_conversions >= spend.tracked).all()
    assert (spend.platform_conversions[spend.tracked == 0] == 0).all()
    per = spend.groupby("campaign_id")[["tracked", "platform_conversions"]].sum()
    truth = {c: v["platform_conversions"] for c, v in res.truth["campaigns"].items()}
    assert truth == {
        "c01": {"overcount": 1.183, "day_sigma": 0.3, "tracked": 73, "reported": 84},
        "c02": {"overcount": 1.3792, "day_sigma": 0.3, "tracked": 1167, "reported": 1642},
        "c03": {"overcount": 1.3851, "day_sigma": 0.3, "tracked": 216, "reported": 278},
    }
    for cid, v in truth.items():
        assert per.loc[cid].tolist() == [v["tracked"], v["reported"]]
        assert 1.10 <= v["overcount"] <= 1.40
    # the big campaign reports close to its over-count factor; its days scatter around it
    c02 = spend[spend.campaign_id == "c02"].groupby("date")[["tracked", "platform_conversions"]]
    daily = c02.sum()
    ratio = daily.platform_conversions / daily.tracked
    assert per.loc["c02"].platform_conversions / per.loc["c02"].tracked == pytest.approx(
        1.3792, abs=0.04
    )
    assert ratio.std() > 0.05 and ratio.min() >= 1.0
    # the value is the tracked value scaled alike (purchases only), none without a conversion
    has = spend.platform_conversions > 0
    shop = spend.campaign_id.map(lambda c: res.truth["campaigns"][c]["objective"] == "purchase")
    assert (spend.platform_conversion_value[~has | ~shop] == 0).all()
    assert (spend.platform_conversion_value[has & shop] > 0).all()
    assert sorted(spend.campaign_id[shop].unique()) == ["c02", "c03"]


def test_platform_counts_draw_per_campaign() -> None:
    base = simulated("full").tables["spend"].to_pandas()
    bad = simulated("full", faults="tracking_outage@c02:10-16").tables["spend"].to_pandas()
    assert list(base.columns) == list(bad.columns) and len(base) == len(bad)
    other = base.campaign_id != "c02"
    pd.testing.assert_frame_equal(base[other], bad[other])
    cols = ["date", "ad_id", "impressions", "clicks", "spend"]
    pd.testing.assert_frame_equal(base[cols], bad[cols])
    day = pd.to_datetime(base.date)
    window = (base.campaign_id == "c02") & (day >= "2026-01-11") & (day <= "2026-01-17")
    # the outage loses the pixel's conversions for the platform too; after it, nothing moves
    assert bad.platform_conversions[window].sum() < 0.5 * base.platform_conversions[window].sum()
    rest = (base.campaign_id == "c02") & (day > "2026-01-17")
    assert rest.sum() == 109
    np.testing.assert_array_equal(
        bad.platform_conversions[rest].to_numpy(), base.platform_conversions[rest].to_numpy()
    )


def test_same_seed_same_bytes_in_every_shape(tmp_path: Path) -> None:
    def digest(shape: str, where: Path) -> dict[str, str]:
        cfg = sim.SimulationConfig(days=14, campaigns=2, seed=9, shape=shape)
        out = written(where, sim.simulate(cfg))
        return {k: hashlib.sha256(v).hexdigest() for k, v in out.items()}

    for shape in sim.SHAPES:
        assert digest(shape, tmp_path / "a") == digest(shape, tmp_path / "b")
