"""Allocation on partial data: the platform's own counts, mixed sources, the loop per shape."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pv
import pytest

from signalloop.allocate.loop import observed_source, run_policy
from signalloop.allocate.policy import ArmState, Day, GuardedBayes, allocate
from signalloop.allocate.posterior import PLATFORM_BIAS_CV, GammaPoissonArms, evidence_weight
from signalloop.ingest import ingest_file
from signalloop.simulate import SimulationConfig
from signalloop.store import Workspace

from .conftest import shared_data, simulated_workspace

START = date(2026, 1, 1)


def test_platform_counts_weigh_at_most_one_over_the_bias_cv_squared() -> None:
    days = (Day(START, 55_662.15, 2669, 2669.0),)
    reported = ArmState("1178", 7951.74, days, outcome_source="platform_reported")
    assert evidence_weight(reported) * 2669 == pytest.approx(2669 / (1 + 2669 * 0.04))
    assert evidence_weight(reported) * 2669 < 1 / PLATFORM_BIAS_CV**2 == pytest.approx(25.0)
    assert evidence_weight(ArmState("c", 1.0, days, outcome_source="nowcast")) == 1.0
    assert evidence_weight(ArmState("c", 1.0, days, outcome_source="observed")) == 1.0
    assert evidence_weight(ArmState("c", 1.0, days, outcome_source="none")) == 0.0


def test_platform_reported_posterior_is_wider_around_the_same_rate() -> None:
    rng = np.random.default_rng(2)
    hist = [
        tuple(
            Day(START + timedelta(days=d), 200.0, y, float(y))
            for d, y in enumerate(rng.poisson(theta * 200.0**0.8, 28))
        )
        for theta in (0.2, 0.1)
    ]
    first = GammaPoissonArms(beta=0.8).fit([ArmState("a", 200.0, h) for h in hist])
    platform = GammaPoissonArms(beta=0.8).fit(
        [ArmState("a", 200.0, h, outcome_source="platform_reported") for h in hist]
    )
    # ~390 and ~190 conversions: CV 5% and 7% first-party; the platform's at the bias floor
    assert first.cv_.max() < 0.08
    assert (platform.cv_ >= 1 / np.sqrt(25 + platform.prior_shape_) - 1e-9).all()
    assert (platform.cv_ > 2 * first.cv_).all()
    assert platform.mean_[0] > platform.mean_[1]  # the order survives the discount
    n = np.array([sum(d.conversions for d in h) for h in hist])
    assert platform.weight_ * n == pytest.approx(n / (1 + 0.04 * n))  # about 23 and 22
    assert (first.weight_ == 1.0).all()


def test_the_bias_cv_is_what_the_kag_export_shows() -> None:
    """PLATFORM_BIAS_CV: approved / platform-reported conversions differ between ad sets."""
    table = pv.read_csv(shared_data("facebook_ads_kag", "KAG_conversion_data.csv"))
    by = table.group_by("fb_campaign_id").aggregate(
        [("Total_Conversion", "sum"), ("Approved_Conversion", "sum")]
    )
    total = by["Total_Conversion_sum"].to_numpy().astype(float)
    approved = by["Approved_Conversion_sum"].to_numpy().astype(float)
    ok = total >= 20
    share, n = approved[ok] / total[ok], total[ok]
    p = approved[ok].sum() / n.sum()
    between = share.var(ddof=1) - float((p * (1 - p) / n).mean())  # beyond binomial noise
    assert ok.sum() == 37
    assert np.sqrt(between) / p == pytest.approx(0.18, abs=0.01)
    assert np.sqrt(between) / p <= PLATFORM_BIAS_CV


# ---- the KAG Meta export alone -------------------------------------------------------------


@pytest.fixture(scope="module")
def kag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kag") / "kag.duckdb"
    src = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    with Workspace(path) as ws:
        ingest_file(ws, "spend", src, profile="meta_ads", report_date=date(2017, 8, 30))
    return path


def test_kag_allocates_on_the_platform_counts_within_the_change_limit(kag: Path) -> None:
    with Workspace(kag) as ws:
        first = allocate(ws, 1000.0)
        budget = round(sum(a["current"] for a in first["arms"]), 2)
        doc = allocate(ws, budget)
    arms = {a["campaign_id"]: a for a in doc["arms"]}
    assert set(arms) == {"1178", "916", "936"}
    assert doc["outcome_sources"] == {"platform_reported": 3}
    assert doc["unallocated"] == 0.0 and doc["unallocated_reason"] is None
    cur = {c: a["current"] for c, a in arms.items()}
    rec = {c: a["recommended"] for c, a in arms.items()}
    assert cur == {"1178": 7951.74, "916": 21.39, "936": 413.34}  # spend / 7
    for a in arms.values():
        assert a["outcome_source"] == "platform_reported"
        assert any("platform-reported conversions" in r for r in a["reasons"])
        assert abs(a["change_pct"]) <= 18.0
        assert a["expected_cpa"] is not None and a["automation"] == "assisted"
    # share moves from the costliest (CPA 20.9 reported) to the cheaper two (2.6 and 5.4)
    assert rec["1178"] / sum(rec.values()) < cur["1178"] / sum(cur.values())
    assert rec["916"] > cur["916"] and rec["936"] > cur["936"]
    assert rec["1178"] < cur["1178"]
    assert arms["1178"]["expected_cpa"] > arms["936"]["expected_cpa"] > arms["916"]["expected_cpa"]
    assert arms["1178"]["p_best"] < 0.01


def test_kag_value_objective_says_it_has_no_value(kag: Path) -> None:
    with Workspace(kag) as ws:
        doc = allocate(ws, 8386.47, objective="value")
    for a in doc["arms"]:
        assert "no conversion value in any source: allocated on conversions" in a["reasons"]
        assert abs(a["change_pct"]) <= 18.0


# ---- mixed sources ----------------------------------------------------------------------


def test_a_campaign_without_first_party_conversions_uses_the_calibrated_platform_counts(
    tmp_path: Path,
) -> None:
    ws, sim, paths = simulated_workspace(
        tmp_path, days=35, campaigns=4, seed=3, shape="spend", db=tmp_path / "spend.duckdb"
    )
    ws.close()
    # the same world as spend and conversions, with c02's conversions missing from the export
    other, _, conv = simulated_workspace(
        tmp_path / "sc", days=35, campaigns=4, seed=3, shape="spend_conversions", db=":memory:"
    )
    other.close()
    table = pv.read_csv(conv["conversions"])
    table = table.filter(pc.not_equal(table["campaign_id"], "c02"))
    pv.write_csv(table, tmp_path / "conversions.csv")
    with Workspace(tmp_path / "mixed.duckdb") as mixed:
        ingest_file(mixed, "spend", paths["spend"])
        ingest_file(mixed, "conversions", tmp_path / "conversions.csv")
        doc = allocate(mixed, 1300.0)
    arms = {a["campaign_id"]: a for a in doc["arms"]}
    assert arms["c02"]["outcome_source"] == "platform_reported"
    assert {arms[c]["outcome_source"] for c in ("c01", "c03", "c04")} == {"nowcast"}
    assert doc["outcome_sources"] == {"nowcast": 3, "platform_reported": 1}
    # the simulator's platform over-counts by 1.10-1.40: first-party / reported below 1
    truth = sim.truth["campaigns"]
    factors = [truth[c]["platform_conversions"]["overcount"] for c in ("c01", "c03", "c04")]
    assert 1 / max(factors) - 0.05 < doc["platform_scale"] < 1 / min(factors) + 0.05
    assert any(f"scaled by {doc['platform_scale']:.2f}" in r for r in arms["c02"]["reasons"])
    assert all(abs(a["change_pct"]) <= 18.0 for a in arms.values())


# ---- the time loop per shape ----------------------------------------------------------------


def test_the_loop_shows_each_shape_its_own_outcomes() -> None:
    assert observed_source(SimulationConfig(shape="spend")) == "platform_reported"
    assert observed_source(SimulationConfig(shape="crm", click_ts=False)) == "observed"
    assert observed_source(SimulationConfig(shape="spend_conversions")) == "nowcast"
    base = {"days": 30, "campaigns": 4, "seed": 3}
    runs = {
        "full": run_policy("guarded_bayes", SimulationConfig(**base), warmup_days=7),
        "observed": run_policy(
            "guarded_bayes",
            SimulationConfig(**base, shape="spend_conversions", click_ts=False),
            warmup_days=7,
        ),
        "platform": run_policy(
            "guarded_bayes", SimulationConfig(**base, shape="spend"), warmup_days=7
        ),
        "none": run_policy(
            "guarded_bayes", SimulationConfig(**base, shape="spend"), warmup_days=7, source="none"
        ),
    }
    assert {k: r.totals["outcome_source"] for k, r in runs.items()} == {
        "full": "nowcast",
        "observed": "observed",
        "platform": "platform_reported",
        "none": "none",
    }
    for r in runs.values():
        assert r.totals["breaches"] == 0 and r.totals["resets_caused"] == 0
        assert abs(r.totals["unallocated"]) < 0.01 * r.budget
    # what the outcomes buy: every source beats seeing none
    for k in ("full", "observed", "platform"):
        assert runs[k].totals["regret"] < runs["none"].totals["regret"]
    even = run_policy("even_split", SimulationConfig(**base), warmup_days=7)
    assert even.totals["breaches"] > 0  # the raw baseline moves past the limit


def test_the_platform_counts_in_the_loop_over_count_the_tracked_ones() -> None:
    from signalloop.allocate.loop import _Observer
    from signalloop.simulate import Account

    acct = Account(SimulationConfig(days=20, campaigns=3, seed=1, shape="spend"))
    seen = _Observer(acct)
    for d in range(20):
        seen.add(acct.step(d, acct.plan_budgets(d)))
    hist, hold = seen.observe(20, "platform_reported")
    tracked, _ = seen.observe(20, "nowcast")
    assert hold == [False] * 3  # no first-party events: no gate
    reported = np.array([[d.conversions for d in h] for h in hist])
    first = np.array([[d.conversions for d in h] for h in tracked])
    assert (reported >= first).all() and reported.sum() > 1.05 * first.sum()
    assert all(d.expected_conversions == d.conversions for h in hist for d in h)


def test_guarded_bayes_even_split_without_outcomes_is_labelled() -> None:
    arms = [ArmState("c01", 100.0, (Day(START, 100.0),), outcome_source="none")]
    plan = GuardedBayes().plan(arms, 100.0, np.random.default_rng(0))
    assert plan.decisions[0].outcome_source == "none"
    assert plan.decisions[0].recommended == 100.0
