"""Tests of the simulated clicks' traits and their exact ground truth (the oracle)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from signalloop import simulate as sim
from signalloop.simulate import simulation, traits
from signalloop.simulate.traits import DEPTHS, TRAIT_COLUMNS

DAYS, CAMPAIGNS, SEED = 56, 4, 11  # as tests/test_simulate.py
#: the large account of the statistical tests: 90 days, 6 campaigns (meta, google, linkedin)
BIG = {"days": 90, "campaigns": 6, "seed": 42}
#: z-score bound of the binomial comparisons
Z = 4.0


def config(**kw: Any) -> sim.SimulationConfig:
    return sim.SimulationConfig(**({"days": DAYS, "campaigns": CAMPAIGNS, "seed": SEED} | kw))


@cache
def run(**kw: Any) -> sim.Simulation:
    return sim.simulate(config(**kw))


def joined(s: sim.Simulation) -> pd.DataFrame:
    """The oracle with the touchpoints' traits beside it."""
    o = s.oracle.to_pandas()
    t = s.tables["touchpoints"].select(list(TRAIT_COLUMNS)).to_pandas()
    out: pd.DataFrame = pd.concat([o, t], axis=1)
    return out


def z_score(hit: pd.Series, p: pd.Series) -> float:
    """Observed minus expected successes over the binomial standard deviation."""
    return float((hit.sum() - p.sum()) / np.sqrt(max((p * (1 - p)).sum(), 1e-9)))


def without_traits(table: pa.Table) -> pa.Table:
    return table.drop_columns(list(TRAIT_COLUMNS))


# ---- determinism and nothing else changes ----------------------------------------------------


def test_same_seed_same_traits_and_different_seed_differs() -> None:
    a, b = sim.simulate(config(days=30, campaigns=3, seed=5)), run(days=30, campaigns=3, seed=5)
    assert a.tables["touchpoints"].equals(b.tables["touchpoints"])
    assert a.oracle.equals(b.oracle)
    assert a.truth["traits"] == b.truth["traits"]
    c = run(days=30, campaigns=3, seed=6)
    assert (
        not a.tables["touchpoints"]
        .select(["device"])
        .equals(c.tables["touchpoints"].select(["device"]))
    )


def test_traits_change_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the trait step every table and truth key is as with it, bar the new ones."""
    base = run()

    def nothing(*_: Any) -> tuple[dict[str, pa.Array], pa.Table, dict[str, Any]]:
        return {}, pa.table({}), {}

    monkeypatch.setattr(simulation, "draw_traits", nothing)
    bare = sim.simulate(config())
    for kind, table in base.tables.items():
        want = without_traits(table) if kind == "touchpoints" else table
        assert want.equals(bare.tables[kind]), kind
    assert bare.truth.pop("traits") == {} and bare.oracle.num_rows == 0
    assert list(base.truth) == [*bare.truth, "traits"]
    assert all(base.truth[k] == bare.truth[k] for k in bare.truth)
    # the row counts the simulator gave before traits existed (56 days, 4 campaigns, seed 11)
    rows = {k: t.num_rows for k, t in base.tables.items()}
    assert rows == {
        "spend": 1709,
        "touchpoints": 101091,
        "conversions": 4004,
        "crm": 4055,
        "changes": 118,
    }
    kinds = base.tables["conversions"].column("kind").to_pandas().value_counts().to_dict()
    assert kinds == {"purchase": 1744, "lead": 1666, "sql": 386, "opportunity": 191, "deal": 17}


def test_trait_stream_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another trait stream gives other traits and leaves every other value as it was."""
    base = run()
    monkeypatch.setattr(traits, "TRAIT_STREAM", 104729)
    other = sim.simulate(config())
    for kind, table in base.tables.items():
        if kind == "touchpoints":
            assert without_traits(table).equals(without_traits(other.tables[kind]))
            assert not table.select(["age_band"]).equals(other.tables[kind].select(["age_band"]))
        else:
            assert table.equals(other.tables[kind]), kind
    keep = ("touch_id", "campaign_id", "depth", "p_adset")
    assert base.oracle.select(keep).equals(other.oracle.select(keep))
    assert {k: v for k, v in base.truth.items() if k != "traits"} == {
        k: v for k, v in other.truth.items() if k != "traits"
    }


def test_write_adds_oracle_only_if_asked(tmp_path: Path) -> None:
    s = run(days=14, campaigns=3, seed=2)
    plain = sim.write(s, tmp_path / "a")
    assert set(plain) == {"spend", "touchpoints", "conversions", "crm", "changes", "truth"}
    assert not (tmp_path / "a" / "oracle.parquet").exists()
    paths = sim.write(s, tmp_path / "b", oracle=True)
    assert pq.read_table(paths["oracle"]).equals(s.oracle)
    header = (tmp_path / "b" / "touchpoints.csv").open().readline().strip().split(",")
    assert header[-len(TRAIT_COLUMNS) :] == list(TRAIT_COLUMNS)


# ---- the design and the oracle ---------------------------------------------------------------


def test_traits_follow_the_design() -> None:
    s = run()
    df, design = joined(s), s.truth["traits"]
    assert design["columns"] == list(TRAIT_COLUMNS)
    assert (df.touch_id == s.tables["touchpoints"].column("touch_id").to_pandas()).all()
    for cid, g in df.groupby("campaign_id"):
        d = design["campaigns"][cid]
        lead = d["objective"] == "lead"
        assert set(d["traits"]) == set(TRAIT_COLUMNS if lead else TRAIT_COLUMNS[:3])
        assert g.company_size.notna().all() if lead else g.company_size.isna().all()
        assert g.p_sql.notna().all() == lead and g.p_won.notna().all() == lead
        assert g.depth.max() <= (3 if lead else 1)
        assert sum(d["p_depth_given_conversion"].values()) == pytest.approx(1.0)
        for name, t in d["traits"].items():
            assert set(g[name]) <= set(t["categories"]), (cid, name)
            for row in t["pi"].values():
                assert sum(row) == pytest.approx(1.0) and min(row) > 0
            assert 1.5 <= t["likelihood_ratio_range"] <= 3.0, (cid, name)
    # depth >= 1 exactly for the clicks whose conversion (cvN) exists, observed or censored
    conv = s.tables["conversions"].to_pandas()
    seen = set("t" + conv.conversion_id[conv.kind.isin(["purchase", "lead"])].str[2:])
    assert seen <= set(df.touch_id[df.depth >= 1])
    assert (df.depth >= 1).sum() - len(seen) <= s.truth["censored"]["conversions"]
    assert ((df.p_adset > 0) & (df.p_adset <= 1)).all()
    assert ((df.p_conversion > 0) & (df.p_conversion < 1)).all()
    lead_rows = df.p_sql.notna()
    assert (df.p_won[lead_rows] <= df.p_sql[lead_rows]).all()
    assert (df.p_sql[lead_rows] <= df.p_conversion[lead_rows]).all()


def test_oracle_follows_from_the_truth() -> None:
    """Bayes from truth["traits"] and p_adset gives the oracle's probabilities."""
    s = run()
    df = joined(s)
    for cid, g in df.groupby("campaign_id"):
        d = s.truth["traits"]["campaigns"][cid]
        prior = np.array(list(d["p_depth_given_conversion"].values()))
        nd = len(prior) + 1
        lik = np.ones((nd, len(g)))
        for name, t in d["traits"].items():
            pos = g[name].map({c: i for i, c in enumerate(t["categories"])}).to_numpy()
            pi = np.array([t["pi"][DEPTHS[k]] for k in range(nd)])
            lik *= pi[:, pos]
        p = g.p_adset.to_numpy()
        w = np.vstack([(1 - p) * lik[0], p * prior[:, None] * lik[1:]])
        np.testing.assert_allclose(w[1:].sum(0) / w.sum(0), g.p_conversion, rtol=1e-7)
        if d["objective"] == "lead":
            np.testing.assert_allclose(w[2:].sum(0) / w.sum(0), g.p_sql, rtol=1e-7)
            np.testing.assert_allclose(w[3] / w.sum(0), g.p_won, rtol=1e-7)


# ---- the oracle is the truth: calibration and ranking ----------------------------------------


@pytest.mark.slow
def test_conversion_rate_per_category_matches_the_oracle() -> None:
    df = joined(run(**BIG))
    hit = df.depth >= 1
    assert abs(z_score(hit, df.p_conversion)) < Z
    assert hit.mean() == pytest.approx(df.p_conversion.mean(), rel=0.03)
    checked = 0
    for name in TRAIT_COLUMNS:
        for value, g in df.groupby(name):
            assert abs(z_score(g.depth >= 1, g.p_conversion)) < Z, (name, value)
            checked += 1
    assert checked == 3 + 5 + 10 + 5  # device, age bands, placements of 3 platforms, sizes
    lead = df[df.p_sql.notna()]
    for value, g in lead.groupby("company_size"):
        assert abs(z_score(g.depth >= 2, g.p_sql)) < Z, value
        assert abs(z_score(g.depth == 3, g.p_won)) < Z, value


@pytest.mark.slow
def test_traits_carry_the_signal_they_were_given() -> None:
    """Desktop converts better than mobile; big companies reach sql more often per lead."""
    df = joined(run(**BIG))
    rate = (df.depth >= 1).groupby(df.device).mean()
    assert rate["desktop"] > 1.3 * rate["mobile"]
    leads = df[(df.depth >= 1) & df.company_size.notna()]
    sql = (leads.depth >= 2).groupby(leads.company_size).mean()
    assert sql["1000+"] > 1.8 * sql["1-10"]


@pytest.mark.slow
def test_oracle_auc_beats_p_adset() -> None:
    df = joined(run(**BIG))
    hit = df.depth >= 1
    oracle, adset = roc_auc_score(hit, df.p_conversion), roc_auc_score(hit, df.p_adset)
    assert oracle > adset + 0.03
    for cid, g in df.groupby("campaign_id"):
        assert roc_auc_score(g.depth >= 1, g.p_conversion) > roc_auc_score(
            g.depth >= 1, g.p_adset
        ), cid
