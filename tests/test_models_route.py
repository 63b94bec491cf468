"""Lead routing: probabilities, guardrails against the simulator's faults, exact tiny routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from signalloop.errors import UsageError
from signalloop.models.estimator import ConversionModel
from signalloop.models.features import build_frame
from signalloop.models.route import default_threshold, route_leads
from signalloop.store import Workspace

from .conftest import simulated_workspace

FAULTS = ("duplicate_events@c01:40-59", "stage_overwrite@c04:40-59")


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Any]]:
    """Seeded 4-campaign account (c01, c04 lead with CRM) with duplicates and overwrites."""
    tmp = tmp_path_factory.mktemp("route")
    ws, result, _ = simulated_workspace(tmp, days=60, campaigns=4, seed=3, faults=FAULTS)
    yield ws, result
    ws.close()


@pytest.fixture(scope="module")
def model(account: tuple[Workspace, Any]) -> ConversionModel:
    tf = build_frame(account[0], "sql")
    return ConversionModel(n_estimators=30, random_state=0).fit(
        tf.frame[tf.features], tf.frame.label
    )


@pytest.fixture(scope="module")
def routed(account: tuple[Workspace, Any], model: ConversionModel) -> dict[str, Any]:
    return route_leads(account[0], model)


def note(result: Any, name: str) -> dict[str, Any]:
    return next(x for x in result.truth["faults"] if x["name"] == name)


def with_code(out: dict[str, Any], code: str, text: str = "") -> set[str]:
    return {
        x["record_id"]
        for x in out["leads"]
        if any(r["code"] == code and text in r["message"] for r in x["reasons"])
    }


def test_routes_the_censored_leads_of_the_last_week(
    account: tuple[Workspace, Any], routed: dict[str, Any]
) -> None:
    ws, _ = account
    tf = build_frame(ws, "sql", include_censored=True)
    f = tf.frame
    recent = f[(f.label == -1) & (f.ts >= pd.Timestamp("2026-02-23", tz="UTC"))]
    assert routed["as_of"] == "2026-03-01" and routed["since"] == "2026-02-23"
    assert {x["record_id"] for x in routed["leads"]} == set(recent.record_id)
    assert len(routed["leads"]) == len(recent) > 100
    base = float(f.label[f.label >= 0].mean())
    assert routed["base_rate"] == round(base, 4)
    assert routed["threshold"] == pytest.approx(default_threshold(base), abs=1e-4)
    assert sum(routed["summary"].values()) == len(routed["leads"])
    assert json.loads(json.dumps(routed)) == routed


def test_route_follows_threshold_and_guardrails(routed: dict[str, Any]) -> None:
    t = routed["threshold"]
    probs = [x["probability"] for x in routed["leads"]]
    assert probs == sorted(probs, reverse=True)
    for x in routed["leads"]:
        want = "nurture" if x["probability"] < t else ("review" if x["reasons"] else "sales")
        assert x["route"] == want
        assert all(set(r) == {"code", "message"} and r["message"] for r in x["reasons"])


def test_stage_overwrite_records_fail_the_stage_guardrail(
    account: tuple[Workspace, Any], routed: dict[str, Any]
) -> None:
    _, result = account
    truth = set(note(result, "stage_overwrite")["record_ids"])
    ids = {x["record_id"] for x in routed["leads"]}
    flagged = with_code(routed, "stage_regression")
    assert flagged == truth & ids and len(flagged) >= 10


def test_duplicated_lead_conversions_are_flagged(
    account: tuple[Workspace, Any], routed: dict[str, Any]
) -> None:
    _, result = account
    dup = set(note(result, "duplicate_events")["conversion_ids"])
    ids = {x["record_id"] for x in routed["leads"]}
    truth = {r for r in ids if "cv" + r.removeprefix("rec") in dup}
    assert with_code(routed, "duplicate", "under one id") == truth and len(truth) >= 3
    assert truth <= with_code(routed, "duplicate")


def test_already_progressed_matches_the_crm(
    account: tuple[Workspace, Any], routed: dict[str, Any]
) -> None:
    ws, _ = account
    reached = set(
        ws.con.execute(
            "SELECT DISTINCT record_id FROM crm WHERE lower(stage) IN ('sql', 'opportunity', 'won')"
        )
        .df()
        .record_id
    )
    ids = {x["record_id"] for x in routed["leads"]}
    assert with_code(routed, "already_progressed") == reached & ids != set()


def test_threshold_override_and_errors(
    account: tuple[Workspace, Any], model: ConversionModel
) -> None:
    ws, _ = account
    everyone = route_leads(ws, model, threshold=0.0, since=date(2026, 2, 27))
    assert everyone["threshold"] == 0.0 and everyone["summary"]["nurture"] == 0
    assert everyone["summary"]["sales"] == sum(not x["reasons"] for x in everyone["leads"])
    assert min(x["created"] for x in everyone["leads"]) >= "2026-02-27"
    nobody = route_leads(ws, model, threshold=1.0, since=date(2026, 2, 27))
    assert nobody["summary"] == {"sales": 0, "review": 0, "nurture": len(nobody["leads"])}
    with pytest.raises(UsageError, match="lead outcome"):
        route_leads(ws, model, outcome="conversion")
    with pytest.raises(UsageError, match="not optional CRM columns"):
        route_leads(ws, model, required=("user_id", "email"))
    with pytest.raises(UsageError, match="threshold"):
        route_leads(ws, model, threshold=1.5)


def test_default_threshold() -> None:
    assert default_threshold(0.25) == 0.5 and default_threshold(0.1) == pytest.approx(0.2)
    assert default_threshold(0.5) == 0.75 and default_threshold(None) == 0.5


class Stub:
    """A 'model' whose probability per lead is fixed by its record id."""

    def __init__(self, p: dict[str, float]) -> None:
        self.p = p
        self.features_ = ["campaign_id"]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.array([self.p[r] for r in X["record_id"]])


def tiny_leads(ws: Workspace) -> None:
    """Six lead records in the week before 2026-02-10, one per guardrail."""
    base = pd.Timestamp("2026-02-03 10:00")

    def at(days: float) -> str:
        return str(base + timedelta(days=days))

    users = {"u1": 0, "u2": 1, "u3": 2, "u4": 3, "u5": 5}
    ws.con.executemany(
        "INSERT INTO touchpoints (touch_id, ts, user_id, click_id, platform, campaign_id, "
        "adset_id, creative_id, utm_source, utm_medium) VALUES (?, ?, ?, ?, 'meta', 'c1', 'as1', "
        "'cr1', 'facebook', 'paid_social')",
        [(f"t{u}", at(d), u, f"k{u}") for u, d in users.items()],
    )
    ws.con.executemany(
        "INSERT INTO conversions (conversion_id, ts, kind, user_id, click_id, source) "
        "VALUES (?, ?, 'lead', ?, ?, 'pixel')",
        [(f"cv{u}", at(d + 0.1), u, f"k{u}") for u, d in users.items()],
    )
    crm = [
        ("rec1", "lead", at(0.1), "u1", "ann"),  # clean
        ("rec2", "lead", at(1.1), "u2", None),
        ("rec2", "mql", at(2), "u2", None),
        ("rec2", "lead", at(3), "u2", None),  # went backwards
        ("rec3", "lead", at(2.1), "u3", None),
        ("rec3", "sql", at(4), "u3", None),  # already progressed
        ("rec4", "lead", at(3.1), "u4", None),  # low probability, duplicated conversion
        ("rec5", "lead", at(5.1), "u1", "bob"),  # u1 again: duplicate of rec1
        ("rec6", "lead", at(4), None, "ann"),  # no user: unscored
        ("rec7", "lead", at(5.1), "u5", "cy"),  # clean but a touch below the threshold
    ]
    ws.con.executemany(
        "INSERT INTO crm (record_id, stage, ts, user_id, owner) VALUES (?, ?, ?, ?, ?)", crm
    )
    ws.con.execute("INSERT INTO duplicates VALUES (1, 'conversions', 'x.csv', 'cvu4', 'c1', 3, 1)")
    ws.con.execute(
        "INSERT INTO spend (date, platform, campaign_id, creative_id, impressions, clicks, spend) "
        "VALUES ('2026-02-01', 'meta', 'c1', 'cr1', 100, 3, 9.5)"
    )


P = {"rec1": 0.9, "rec2": 0.8, "rec3": 0.7, "rec4": 0.2, "rec5": 0.9, "rec7": 0.49}


def test_tiny_workspace_exact_routes(ws: Workspace) -> None:
    tiny_leads(ws)
    out = route_leads(ws, Stub(P), as_of=date(2026, 2, 9), threshold=0.5)
    assert out["as_of"] == "2026-02-09" and out["since"] == "2026-02-03"
    assert out["base_rate"] is None and out["threshold"] == 0.5
    got = {x["record_id"]: (x["route"], [r["code"] for r in x["reasons"]]) for x in out["leads"]}
    assert got == {
        "rec1": ("sales", []),
        "rec5": ("review", ["duplicate"]),
        "rec2": ("review", ["stage_regression"]),
        "rec3": ("review", ["already_progressed"]),
        "rec7": ("nurture", []),
        "rec4": ("nurture", ["duplicate"]),
        "rec6": ("review", ["missing_field"]),
    }
    assert [x["record_id"] for x in out["leads"]] == [
        "rec1", "rec5", "rec2", "rec3", "rec7", "rec4", "rec6",
    ]  # fmt: skip
    lead = {x["record_id"]: x for x in out["leads"]}
    assert lead["rec6"]["probability"] is None and lead["rec6"]["campaign_id"] is None
    assert lead["rec1"] == {
        "record_id": "rec1",
        "campaign_id": "c1",
        "created": "2026-02-03T12:24:00+00:00",
        "probability": 0.9,
        "route": "sales",
        "reasons": [],
    }
    assert "rec1" in lead["rec5"]["reasons"][0]["message"]
    assert "cvu4" in lead["rec4"]["reasons"][0]["message"]
    assert "reached sql" in lead["rec3"]["reasons"][0]["message"]
    assert out["summary"] == {"sales": 1, "review": 4, "nurture": 2}

    owners = route_leads(
        ws, Stub(P), as_of=date(2026, 2, 9), threshold=0.5, required=("user_id", "owner")
    )
    codes = {x["record_id"]: [r["code"] for r in x["reasons"]] for x in owners["leads"]}
    assert codes["rec1"] == [] and codes["rec2"] == ["missing_field", "stage_regression"]
    assert codes["rec6"] == ["missing_field"]

    late = route_leads(ws, Stub(P), as_of=date(2026, 2, 9), threshold=0.5, since=date(2026, 2, 8))
    assert {x["record_id"] for x in late["leads"]} == {"rec5", "rec7"}
