"""The seven-question decision lens on a small simulated account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from signalloop.config import Settings, settings_from_dict
from signalloop.errors import ConfigError
from signalloop.lens import CHECK_NAMES, lens
from signalloop.models.api import fit_workspace
from signalloop.store import Workspace

from .conftest import simulated_workspace

CAMPAIGNS = ["c01", "c02", "c03", "c04"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A seeded 45-day, 4-campaign account without faults, and a saved conversion model."""
    tmp = tmp_path_factory.mktemp("lens")
    w, _, _ = simulated_workspace(tmp, days=45, campaigns=4, seed=5, db=tmp / "acct.duckdb")
    with w:
        fit_workspace(w, "conversion", folder=tmp / "acct.models" / "conversion")
        yield w


def full(**lens_over: Any) -> Settings:
    owners = {c: "Ana" for c in CAMPAIGNS} | {"conversion": "Ben"}
    doc = {
        "lens": {
            "retrain_every_days": 7,
            "decision_every_days": 2,
            "cold_start_plan": "guarded allocator; manual bids below the threshold",
        }
        | lens_over,
        "owners": owners,
    }
    return settings_from_dict(doc)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


def test_defaults_keep_scoped_naming_missing_declarations(ws: Workspace) -> None:
    doc = lens(ws, model_dirs={})
    assert doc["verdict"] == "keep_scoped"
    c = by_name(doc)
    assert not c["context_fit"]["passed"]
    assert "no model is saved" in c["context_fit"]["evidence"]["message"]
    assert not c["retraining_cadence"]["passed"]
    assert "retrain_every_days" in c["retraining_cadence"]["evidence"]["message"]
    assert not c["owner_accountability"]["passed"]
    assert c["owner_accountability"]["evidence"]["missing"] == CAMPAIGNS
    failed = [x["name"] for x in doc["checks"] if not x["passed"]]
    assert doc["weakest"] == failed[0]


def test_full_settings_on_a_clean_account_pass(ws: Workspace) -> None:
    doc = lens(ws, settings=full())
    c = by_name(doc)
    for name in CHECK_NAMES:
        assert c[name]["passed"], (name, c[name]["evidence"])
    assert doc["verdict"] == "scale" and doc["weakest"] is None
    assert c["data_completeness"]["evidence"]["days_covered"] == {k: 1.0 for k in CAMPAIGNS}
    fit = c["context_fit"]["evidence"]["models"]["conversion"]
    assert fit["problems"] == [] and fit["horizon_days"] == 7
    # a daily decision is shorter than c03's median delay: most conversions arrive later
    latency = by_name(lens(ws, settings=full(decision_every_days=1)))["feedback_latency"]
    assert not latency["passed"] and "c03" in latency["evidence"]["late"]


def test_owner_missing_for_one_campaign(ws: Workspace) -> None:
    s = full()
    owners = {k: v for k, v in s.owners.items() if k != "c02"}
    doc = lens(ws, settings=settings_from_dict({"lens": {}, "owners": owners}), model_dirs={})
    own = by_name(doc)["owner_accountability"]
    assert not own["passed"] and own["evidence"]["missing"] == ["c02"]
    assert "c02" in own["evidence"]["message"]


def test_json_contract(ws: Workspace) -> None:
    doc = lens(ws, settings=full(), model_dirs={})
    assert set(doc) == {"as_of", "verdict", "weakest", "checks"}
    assert doc["as_of"] == "2026-02-14"
    assert [c["name"] for c in doc["checks"]] == list(CHECK_NAMES)
    assert all(set(c) == {"name", "passed", "evidence"} for c in doc["checks"])
    assert doc["weakest"] == "context_fit" and doc["verdict"] == "keep_scoped"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"retrain_every_days": 0}, "retrain_every_days"),
        ({"decision_every_days": "daily"}, "decision_every_days"),
        ({"min_days_covered": 1.5}, "min_days_covered"),
        ({"cold_start_plan": ""}, "cold_start_plan"),
        ({"retrain": 7}, "retrain"),
    ],
)
def test_bad_lens_value_is_a_config_error(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        settings_from_dict({"lens": table})


def test_bad_owner_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="c01"):
        settings_from_dict({"owners": {"c01": ""}})


def test_cli_lens(ws: Workspace, tmp_path: Any) -> None:
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    ws.con.execute("CHECKPOINT")  # the fixture holds the file open: work on a copy
    src = Path(ws.path)
    db = str(tmp_path / src.name)
    shutil.copy(src, db)
    shutil.copytree(src.with_name("acct.models"), tmp_path / "acct.models")
    toml = tmp_path / "signalloop.toml"
    toml.write_text("[lens]\nretrain_every_days = 0\n")
    bad = subprocess.run(
        [sys.executable, "-m", "signalloop", "lens", "--db", db, "--config", str(toml)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "retrain_every_days" in bad.stderr
    p = subprocess.run(
        [sys.executable, "-m", "signalloop", "lens", "--db", db, "--json", "--fail-on-keep-scoped"],
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(p.stdout)
    assert [c["name"] for c in doc["checks"]] == list(CHECK_NAMES)
    assert p.returncode == (0 if doc["verdict"] == "scale" else 1)
