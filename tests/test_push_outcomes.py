"""Which CRM outcomes may leave: validated candidates and every skipped one with its reason."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import simulated_workspace

from signalloop.checks.engine import save_exclusions
from signalloop.push.outcomes import validated_outcomes
from signalloop.store import Workspace

AS_OF = date(2026, 3, 1)
FAULTS = ("stage_overwrite@c01:20-50", "crm_duplicates@c04:20-40")


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("outcomes")
    ws, _, paths = simulated_workspace(folder, days=60, campaigns=4, seed=3, faults=FAULTS)
    truth = json.loads(Path(paths["truth"]).read_text())
    yield ws, truth
    ws.close()


def _keys(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(x["record_id"], x["stage"]) for x in items]


def test_every_record_stage_once_first_time_reached(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    o = validated_outcomes(ws, as_of=AS_OF, held={})
    keys = _keys(o.candidates) + _keys(o.skipped)
    assert len(keys) == len(set(keys))
    first = {
        (r, s): t
        for r, s, t in ws.con.execute(
            "SELECT record_id, stage, min(ts) FROM crm WHERE stage <> 'lost' "
            "AND ts < '2026-03-02' GROUP BY ALL"
        ).fetchall()
    }
    assert set(keys) == set(first)
    for c in o.candidates:
        assert c["ts"].replace(tzinfo=None) == first[(c["record_id"], c["stage"])]
        assert c["platform"] in ("meta", "google")


def test_stage_regression_skips_exactly_the_overwritten_records(
    account: tuple[Workspace, Any],
) -> None:
    ws, truth = account
    o = validated_outcomes(ws, as_of=AS_OF, held={})
    fault = next(f for f in truth["faults"] if f["name"] == "stage_overwrite")
    skipped = {s["record_id"] for s in o.skipped if s["reason"] == "stage_regression"}
    assert skipped == set(fault["record_ids"])
    assert not {c["record_id"] for c in o.candidates} & skipped
    assert {s["campaign_id"] for s in o.skipped if s["reason"] == "stage_regression"} == {"c01"}


def test_a_held_campaign_sends_nothing(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    o = validated_outcomes(ws, as_of=AS_OF, held={"c04": ["integration_dropout"]})
    assert not [c for c in o.candidates if c["campaign_id"] == "c04"]
    held = [s for s in o.skipped if s["reason"] == "gate_held"]
    assert held and {s["campaign_id"] for s in held} == {"c04"}
    assert "integration_dropout" in held[0]["detail"]
    free = validated_outcomes(ws, as_of=AS_OF, held={})
    c04 = [x for x in free.candidates + free.skipped if x["campaign_id"] == "c04"]
    assert len(c04) == len(held)  # the gate is tested first: every c04 item is held


def test_crm_dropout_window_skips_the_stage_changes_inside_it(
    account: tuple[Workspace, Any],
) -> None:
    ws, _ = account
    window = {"campaign_id": "c04", "start": "2026-02-10", "end": "2026-02-16"}
    save_exclusions(ws, [{**window, "reason": "crm_sync_dropout: test window"}], AS_OF)
    try:
        o = validated_outcomes(ws, as_of=AS_OF, held={})
    finally:
        save_exclusions(ws, [], AS_OF)
    inside = [s for s in o.skipped if s["reason"] == "crm_dropout"]
    assert inside
    for s in inside:
        assert s["campaign_id"] == "c04" and "2026-02-10" <= s["ts"][:10] <= "2026-02-16"
    for c in o.candidates:
        if c["campaign_id"] == "c04":
            assert not date(2026, 2, 10) <= c["ts"].date() <= date(2026, 2, 16)
    # a tracking outage window does not stop CRM outcomes (the CRM's record is whole)
    save_exclusions(ws, [{**window, "reason": "tracking_outage: test window"}], AS_OF)
    try:
        o2 = validated_outcomes(ws, as_of=AS_OF, held={})
    finally:
        save_exclusions(ws, [], AS_OF)
    assert not [s for s in o2.skipped if s["reason"] == "crm_dropout"]


def test_without_crm_says_which_export_is_missing(ws: Workspace) -> None:
    o = validated_outcomes(ws, as_of=AS_OF, held={})
    assert o.candidates == [] and o.skipped == []
    assert o.missing is not None and "crm kind" in o.missing


def test_duplicate_records_are_skipped_and_name_their_original(
    account: tuple[Workspace, Any],
) -> None:
    ws, truth = account
    o = validated_outcomes(ws, as_of=AS_OF, held={})
    fault = next(f for f in truth["faults"] if f["name"] == "crm_duplicates")
    dup = {s["record_id"]: s for s in o.skipped if s["reason"] == "duplicate"}
    assert set(fault["record_ids"]) <= set(dup)
    for rid, orig in fault["duplicate_of"].items():
        assert f"record {orig}," in dup[rid]["detail"]
    # the originals are sent; besides the fault's copies only the simulated people who came
    # back within a day are duplicates (a person returning later is a new lead)
    extra = set(dup) - set(fault["record_ids"])
    sent = {c["record_id"] for c in o.candidates}
    assert set(fault["duplicate_of"].values()) - extra <= sent | {
        s["record_id"] for s in o.skipped if s["reason"] != "duplicate"
    }
    assert len(extra) == 4


def test_reasons_are_counted_per_platform(account: tuple[Workspace, Any]) -> None:
    ws, _ = account
    o = validated_outcomes(ws, as_of=AS_OF, held={})
    meta_c, meta_s = o.for_platform("meta")
    google_c, google_s = o.for_platform("google")
    assert len(meta_c) + len(google_c) == len(o.candidates)
    assert Counter(s["reason"] for s in meta_s) == Counter({"stage_regression": len(meta_s)})
    assert set(Counter(s["reason"] for s in google_s)) == {"duplicate"}
