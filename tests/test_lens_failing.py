"""Each of the lens's seven checks failing on its own: ``keep_scoped``, that check the weakest.

One seeded clean account (45 days, 4 campaigns, a saved conversion model) with its checks,
nowcast and phase computed once. With every declaration made the lens says ``scale``; each case
then changes one input (a finding, a declaration, the nowcast's delay, the model folder) so that
exactly one check fails, and asserts the verdict, the weakest check and that check's evidence.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from signalloop.checks.base import Finding
from signalloop.checks.engine import run_checks
from signalloop.config import Settings, settings_from_dict
from signalloop.lens import CHECK_NAMES, lens
from signalloop.models.api import fit_workspace
from signalloop.nowcast import nowcast
from signalloop.phase import phase
from signalloop.store import Workspace

from .conftest import simulated_workspace

CAMPAIGNS = ["c01", "c02", "c03", "c04"]
AS_OF = date(2026, 2, 14)
#: Every declaration the lens asks for; the clean account passes all seven checks with it.
LENS = {
    "retrain_every_days": 7,
    "decision_every_days": 2,
    "cold_start_plan": "guarded allocator; manual bids below the threshold",
}
OWNERS = {c: "Ana" for c in CAMPAIGNS} | {"conversion": "Ben"}


@dataclass(frozen=True)
class Account:
    """The workspace and the run's precomputed inputs to the lens."""

    ws: Workspace
    checks: dict[str, Any]
    nowcast: dict[str, Any]
    phase: dict[str, Any]
    model_dir: Path
    tmp: Path


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Account]:
    """A seeded 45-day, 4-campaign account without faults, its model, checks, nowcast, phase."""
    tmp = tmp_path_factory.mktemp("lens_failing")
    w, _, _ = simulated_workspace(tmp, days=45, campaigns=4, seed=5, db=tmp / "acct.duckdb")
    with w:
        folder = tmp / "acct.models" / "conversion"
        fit_workspace(w, "conversion", folder=folder)
        yield Account(
            ws=w,
            checks=run_checks(w, as_of=AS_OF, store_exclusions=False).to_dict(),
            nowcast=nowcast(w, AS_OF).to_dict(),
            phase=phase(w, AS_OF).to_dict(),
            model_dir=folder,
            tmp=tmp,
        )


def settings(
    lens_over: dict[str, Any] | None = None, owners: dict[str, str] | None = None
) -> Settings:
    """The full declarations, with ``lens_over`` replacing (``None`` values dropping) keys."""
    table = {k: v for k, v in (LENS | (lens_over or {})).items() if v is not None}
    return settings_from_dict({"lens": table, "owners": OWNERS if owners is None else owners})


@dataclass(frozen=True)
class Inputs:
    """What one lens call gets."""

    settings: Settings
    checks: dict[str, Any]
    nowcast: dict[str, Any]
    model_dir: Path


def base(acct: Account) -> Inputs:
    return Inputs(settings(), acct.checks, acct.nowcast, acct.model_dir)


def run_lens(acct: Account, inp: Inputs, as_of: date = AS_OF) -> dict[str, Any]:
    return lens(
        acct.ws,
        as_of,
        settings=inp.settings,
        checks=inp.checks,
        nowcast=inp.nowcast,
        phase=acct.phase,
        model_dirs={"conversion": inp.model_dir},
    )


def with_finding(checks: dict[str, Any], finding: Finding) -> dict[str, Any]:
    return {**checks, "findings": [*checks["findings"], finding.to_dict()]}


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


# -- the seven cases: each changes one input --------------------------------------------------

DROPOUT = Finding(
    check="integration_dropout",
    severity="critical",
    campaign_id="c02",
    message="no conversions from c02 since 2026-02-10",
    active=True,
    window=(date(2026, 2, 10), None),
)
DUPLICATES = Finding(
    check="duplicates",
    severity="warn",
    campaign_id="c01",
    message="12 duplicate conversion events (3.1% of c01's)",
)


def open_dropout(acct: Account) -> Inputs:
    """An integration dropout on c02 that is still open at the as-of day."""
    b = base(acct)
    return replace(b, checks=with_finding(b.checks, DROPOUT))


def duplicate_labels(acct: Account) -> Inputs:
    """A warn ``duplicates`` finding: bad labels, but not a critical data-completeness one."""
    b = base(acct)
    return replace(b, checks=with_finding(b.checks, DUPLICATES))


def delay_past_horizon(acct: Account) -> Inputs:
    """c03's delay p90 grows to 200 hours, past the model's 7-day label horizon (p50 as is)."""
    b = base(acct)
    delay = {k: dict(v) for k, v in b.nowcast["delay"].items()}
    delay["c03"]["p90"] = 200.0
    return replace(b, nowcast={**b.nowcast, "delay": delay})


def no_cold_start_plan(acct: Account) -> Inputs:
    return replace(base(acct), settings=settings({"cold_start_plan": None}))


def slower_than_recommended(acct: Account) -> Inputs:
    """A backtest beside a copy of the model recommends retraining every 3 days; 7 declared."""
    folder = acct.tmp / "slow.models" / "conversion"
    if not folder.exists():
        shutil.copytree(acct.model_dir, folder)
        (folder / "backtest.json").write_text(json.dumps({"cadence": {"recommended": 3}}))
    return replace(base(acct), model_dir=folder)


def daily_decisions(acct: Account) -> Inputs:
    """Decisions every day: shorter than c03's median click-to-conversion delay."""
    return replace(base(acct), settings=settings({"decision_every_days": 1}))


def model_without_owner(acct: Account) -> Inputs:
    return replace(base(acct), settings=settings(owners={c: "Ana" for c in CAMPAIGNS}))


def expect_data_completeness(ev: dict[str, Any], acct: Account) -> None:
    assert ev["open_critical_findings"] == [
        {"check": "integration_dropout", "campaign_id": "c02", "message": DROPOUT.message}
    ]
    assert ev["below_coverage"] == []
    assert ev["days_covered"] == {c: 1.0 for c in CAMPAIGNS}
    assert ev["message"] == (
        "1 open critical hygiene/integration finding(s); 0 campaign(s) below 90% of days covered"
    )


def expect_label_quality(ev: dict[str, Any], acct: Account) -> None:
    assert ev["findings"] == [
        {"check": "duplicates", "campaign_id": "c01", "message": DUPLICATES.message}
    ]
    assert ev["counts"] == {"label_completeness": 0, "stage_regression": 0, "duplicates": 1}
    assert ev["message"] == "1 label finding(s) over threshold: duplicates 1"


def expect_context_fit(ev: dict[str, Any], acct: Account) -> None:
    fit = ev["models"]["conversion"]
    assert fit["delay_p90_days"] == round(200 / 24, 2) and fit["horizon_days"] == 7
    assert fit["problems"] == ["delay p90 8.33 days is longer than the model's 7-day label horizon"]
    assert ev["message"] == "conversion: " + fit["problems"][0]


def expect_cold_start_plan(ev: dict[str, Any], acct: Account) -> None:
    # no campaign is younger than 28 days; c03 and c04 have ad sets still learning
    assert ev["plan"] is None
    assert ev["younger_than_days"] == []
    assert ev["in_learning"] == ev["cold_start"] == ["c03", "c04"]
    assert ev["message"] == (
        "2 campaign(s) in cold start (ad sets in learning: c03, c04) and no plan: "
        "declare [lens] cold_start_plan in signalloop.toml"
    )


def expect_retraining_cadence(ev: dict[str, Any], acct: Account) -> None:
    assert ev["declared_days"] == 7 and ev["recommended_days"] == {"conversion": 3.0}
    assert ev["message"] == (
        "retraining every 7 days is slower than recommended for conversion (3 days)"
    )


def expect_feedback_latency(ev: dict[str, Any], acct: Account) -> None:
    p50 = {c: d["p50"] for c, d in acct.nowcast["delay"].items()}
    assert ev["decision_every_days"] == 1
    assert ev["late"] == ["c03"]
    assert p50["c03"] > 24 and all(p50[c] <= 24 for c in ("c01", "c02", "c04"))
    assert ev["message"] == (
        f"most conversions arrive after the 1-day decision in c03 (p50 {p50['c03']} h)"
    )


def expect_owner_accountability(ev: dict[str, Any], acct: Account) -> None:
    assert ev["missing"] == ["conversion"]
    assert ev["owners"] == {c: "Ana" for c in CAMPAIGNS} | {"conversion": None}
    assert ev["message"] == "no owner in [owners] for conversion"


Case = tuple[str, Callable[[Account], Inputs], Callable[[dict[str, Any], Account], None]]
CASES: list[Case] = [
    ("data_completeness", open_dropout, expect_data_completeness),
    ("label_quality", duplicate_labels, expect_label_quality),
    ("context_fit", delay_past_horizon, expect_context_fit),
    ("cold_start_plan", no_cold_start_plan, expect_cold_start_plan),
    ("retraining_cadence", slower_than_recommended, expect_retraining_cadence),
    ("feedback_latency", daily_decisions, expect_feedback_latency),
    ("owner_accountability", model_without_owner, expect_owner_accountability),
]


def test_the_cases_cover_every_check() -> None:
    assert [c[0] for c in CASES] == list(CHECK_NAMES)


def test_every_declaration_on_the_clean_account_scales(account: Account) -> None:
    doc = run_lens(account, base(account))
    failed = {c["name"]: c["evidence"]["message"] for c in doc["checks"] if not c["passed"]}
    assert failed == {}
    assert doc["verdict"] == "scale" and doc["weakest"] is None


@pytest.mark.parametrize(("name", "make", "expect"), CASES, ids=[c[0] for c in CASES])
def test_one_check_failing_alone_keeps_scoped_and_is_the_weakest(
    account: Account,
    name: str,
    make: Callable[[Account], Inputs],
    expect: Callable[[dict[str, Any], Account], None],
) -> None:
    doc = run_lens(account, make(account))
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == [name]
    assert doc["verdict"] == "keep_scoped"
    assert doc["weakest"] == name
    expect(by_name(doc)[name]["evidence"], account)


def test_a_resolved_critical_outage_does_not_fail_data_completeness(account: Account) -> None:
    """A critical finding whose window closed before the as-of day is history, not a hole."""
    closed = replace(DROPOUT, active=False, window=(date(2026, 2, 1), date(2026, 2, 5)))
    b = base(account)
    doc = run_lens(account, replace(b, checks=with_finding(b.checks, closed)))
    assert doc["verdict"] == "scale"
    assert by_name(doc)["data_completeness"]["evidence"]["open_critical_findings"] == []


def test_exports_that_stopped_leave_every_campaign_below_coverage(account: Account) -> None:
    """Ten days after the last delivery, 45 of 55 days (0.818) are covered: below 0.9."""
    doc = run_lens(account, base(account), as_of=date(2026, 2, 24))
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == ["data_completeness"]
    assert doc["weakest"] == "data_completeness" and doc["verdict"] == "keep_scoped"
    ev = by_name(doc)["data_completeness"]["evidence"]
    assert ev["days_covered"] == {c: 0.818 for c in CAMPAIGNS}
    assert ev["below_coverage"] == CAMPAIGNS
    assert ev["open_critical_findings"] == []
