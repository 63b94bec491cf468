"""What the workspace can learn from: shapes per campaign, each capability's basis."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import shared_data, simulated_workspace
from typer.testing import CliRunner

from signalloop.cli import app
from signalloop.ingest import ingest_file
from signalloop.shapes import CAPABILITIES, REGISTRY, UNLOCK, learnable, resolve, shape_of
from signalloop.store import Workspace


def _caps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["capabilities"]}


def _bases(cap: dict[str, Any]) -> dict[str | None, int]:
    return {b["basis"]: b["campaigns"] for b in cap["bases"]}


@pytest.fixture(scope="module")
def sim_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shapes")
    ws, _, paths = simulated_workspace(tmp, days=40, campaigns=3, seed=4)
    ws.close()
    return paths


def _partial(tmp: Path, paths: dict[str, Path], kinds: tuple[str, ...]) -> Workspace:
    ws = Workspace(tmp / "part.duckdb")
    for kind in kinds:
        ingest_file(ws, kind, paths[kind])
    return ws


def test_full_account_has_every_capability_on_its_best_basis(
    tmp_path: Path, sim_paths: dict[str, Path]
) -> None:
    kinds = ("spend", "touchpoints", "conversions", "crm", "changes")
    with _partial(tmp_path, sim_paths, kinds) as ws:
        doc = learnable(ws)
    assert [c["shape"] for c in doc["campaigns"]] == ["full"] * 3
    assert doc["account"]["shape"] == "full"
    assert doc["account"]["by_shape"] == {"full": 3}
    caps = _caps(doc)
    for name in ("nowcast", "attribution_accuracy", "utm_hygiene", "allocation", "audience_bias"):
        assert caps[name]["status"] == "full", name
        assert caps[name]["missing"] == [] and caps[name]["unlock"] == []
    assert _bases(caps["nowcast"]) == {"touchpoints": 3}
    c = doc["campaigns"][0]
    assert c["platform_conversions"] and c["changes"]
    assert c["counts"]["touchpoints"] > 0 and c["counts"]["spend_days"] == 40


def test_spend_and_conversions_without_clicks(tmp_path: Path, sim_paths: dict[str, Path]) -> None:
    with _partial(tmp_path, sim_paths, ("spend", "conversions")) as ws:
        doc = learnable(ws)
    assert {c["shape"] for c in doc["campaigns"]} == {"spend_conversions"}
    caps = _caps(doc)
    # conversions carrying campaign_id and click_ts: the nowcast's cohorts from spend clicks
    assert _bases(caps["nowcast"]) == {"click_ts": 3}
    assert caps["nowcast"]["status"] == "partial"
    assert caps["nowcast"]["missing"] == ["click-level touchpoints"]
    att = caps["attribution_accuracy"]
    assert att["status"] == "unavailable" and _bases(att) == {None: 3}
    assert UNLOCK["touchpoints"] in att["unlock"]
    assert caps["allocation"]["status"] == "full"
    assert caps["override_accounting"]["unlock"] == [UNLOCK["changes"]]
    # the conversions that carry only a click id reach no campaign without the click log
    assert any("reach no campaign" in n for n in doc["account"]["notes"])
    # the unlock list names each export once, with every capability it would improve
    by_layer = {u["layer"]: u for u in doc["unlock"]}
    assert "nowcast" in by_layer["touchpoints"]["unlocks"]
    assert by_layer["changes"]["unlocks"] == ["learning_phase", "override_accounting"]


def test_spend_only_uses_the_platforms_conversions(
    tmp_path: Path, sim_paths: dict[str, Path]
) -> None:
    with _partial(tmp_path, sim_paths, ("spend",)) as ws:
        doc = learnable(ws)
    assert {c["shape"] for c in doc["campaigns"]} == {"spend"}
    assert all(c["platform_conversions"] for c in doc["campaigns"])
    caps = _caps(doc)
    assert _bases(caps["allocation"]) == {"platform_reported": 3}
    assert _bases(caps["conversion_volume"]) == {"platform_reported": 3}
    assert caps["nowcast"]["status"] == "unavailable"
    assert caps["nowcast"]["missing"][0] == "first-party conversions"


def test_kag_meta_export_alone(tmp_path: Path) -> None:
    kag = shared_data("facebook_ads_kag", "KAG_conversion_data.csv")
    with Workspace(tmp_path / "kag.duckdb") as ws:
        ingest_file(ws, "spend", kag, profile="meta_ads", report_date=date(2017, 8, 30))
        doc = learnable(ws)
    assert [c["campaign_id"] for c in doc["campaigns"]] == ["1178", "916", "936"]
    assert {c["shape"] for c in doc["campaigns"]} == {"spend"}
    caps = _caps(doc)
    assert _bases(caps["allocation"]) == {"platform_reported": 3}
    # one period stamped with one date is not a daily history
    assert "daily spend history" in caps["creative_fatigue"]["missing"]
    assert caps["creative_fatigue"]["status"] == "unavailable"
    assert doc["campaigns"][0]["counts"]["spend_days"] == 1


def test_used_is_shown_beside_what_the_data_allows(
    tmp_path: Path, sim_paths: dict[str, Path]
) -> None:
    with _partial(tmp_path, sim_paths, ("spend",)) as ws:
        doc = learnable(ws, used={"allocation": {"c01": "platform_reported"}})
    assert _caps(doc)["allocation"]["used"] == {"c01": "platform_reported"}


def test_empty_workspace() -> None:
    doc = learnable(Workspace(":memory:"))
    assert doc["campaigns"] == [] and doc["capabilities"] == [] and doc["unlock"] == []


@pytest.mark.parametrize("cap", CAPABILITIES, ids=lambda c: c.name)
def test_every_capability_resolves_on_every_layer_set(cap: Any) -> None:
    """Conformance: the best basis is full, a later one partial, none unavailable; the
    missing layers are exactly what the better bases needed, each with an export."""
    everything = set(UNLOCK)
    best = resolve(cap, everything)
    assert best["status"] == "full" and best["missing"] == []
    nothing = resolve(cap, set())
    assert nothing["status"] == "unavailable" and nothing["basis"] is None
    assert set(nothing["missing"]) == {n for b in cap.bases for n in b.needs}
    for i, basis in enumerate(cap.bases):
        r = resolve(cap, set(basis.needs))
        assert r["basis"] == basis.name or r["status"] == "full"
        assert all(UNLOCK[m] in r["unlock"] for m in r["missing"])
        if i > 0 and r["basis"] == basis.name:
            assert r["status"] == "partial" and r["missing"]


def test_shape_names_follow_the_simulator() -> None:
    assert shape_of(set()) == "spend"
    assert shape_of({"spend", "conversions", "crm", "touchpoints"}) == "full"
    assert REGISTRY["nowcast"].bases[0].name == "touchpoints"


def test_status_shows_what_it_can_learn_from(tmp_path: Path, sim_paths: dict[str, Path]) -> None:
    with _partial(tmp_path, sim_paths, ("spend", "conversions")):
        pass
    db = str(tmp_path / "part.duckdb")
    res = CliRunner().invoke(app, ["status", "--db", db, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["learnable"]["account"]["shape"] == "spend_conversions"
    text = CliRunner().invoke(app, ["status", "--db", db])
    assert "what this workspace can learn from" in text.stdout
    assert "to unlock" in text.stdout and "click-level touchpoints" in text.stdout
