"""The ``export_glitches`` fault: corrupted CSV rows that ingest must quarantine, exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from signalloop import simulate as sim
from signalloop.contract import KINDS
from signalloop.ingest import ingest_file
from signalloop.simulate.glitches import GLITCHES, SHARE, Glitch
from signalloop.simulate.tables import csv_text
from signalloop.store import Workspace
from signalloop.validate import REASON_CODES

DAYS, CAMPAIGNS, SEED = 40, 4, 3
IDS = sim.campaign_ids(CAMPAIGNS)
GLITCHY = ("duplicate_events@c02:10-30", "export_glitches@*:5-35")
#: ingest "now": a day after the run, so only the skewed timestamps are in the future
NOW = dt.datetime(2026, 2, 11)


@cache
def run(*specs: str) -> sim.Simulation:
    faults = tuple(sim.parse_fault(s, days=DAYS, campaign_ids=IDS) for s in specs)
    config = sim.SimulationConfig(days=DAYS, campaigns=CAMPAIGNS, seed=SEED, faults=faults)
    return sim.simulate(config)


def glitch_truth(result: sim.Simulation) -> list[dict[str, Any]]:
    (note,) = [n for n in result.truth["faults"] if n["name"] == "export_glitches"]
    return note["glitches"]  # type: ignore[no-any-return]


def test_ingest_quarantines_exactly_the_glitches(tmp_path: Path) -> None:
    result = run(*GLITCHY)
    paths = sim.write(result, tmp_path)
    ws = Workspace(":memory:")
    for kind in KINDS:
        res = ingest_file(ws, kind, paths[kind], now=NOW)
        written = result.tables[kind].num_rows
        assert res.rows_read == written, kind
        assert res.rows_loaded + res.rows_quarantined + res.rows_folded == written, kind
        assert res.rows_existing == 0
    got = ws.con.execute('SELECT file, line, "column", code, len(problems) FROM quarantine')
    rows = got.fetchall()
    assert {n for *_, n in rows} == {1}  # every corrupted row has exactly one problem
    quarantined = {(Path(f).name, line, col, code) for f, line, col, code, _ in rows}
    truth = glitch_truth(result)
    expected = {(g["file"], g["line"], g["column"], g["code"]) for g in truth}
    assert len(quarantined) == len(rows) == len(truth)
    assert quarantined == expected
    malformed = {g["line"] for g in truth if g["code"] == "malformed_row"}
    assert malformed and all(g["column"] is None for g in truth if g["line"] in malformed)
    # every glitch type of every kind is exercised
    kinds_codes = {(g["file"], g["column"], g["code"]) for g in truth}
    assert kinds_codes == {
        (f"{k}.csv", col, code) for k, gs in GLITCHES.items() for col, code in gs
    }
    # the duplicates still fold: the glitches never hit a duplicated key
    folded = ws.con.execute("SELECT sum(copies) FROM duplicates").fetchone()
    assert folded is not None and folded[0] > 0
    ws.close()


def test_glitch_codes_are_reason_codes() -> None:
    for kind, glitches in GLITCHES.items():
        for column, code in glitches:
            assert code in REASON_CODES
            assert column is None or column in KINDS[kind].names


def test_tables_stay_clean_and_only_glitch_lines_change(tmp_path: Path) -> None:
    result, plain = run(*GLITCHY), run(GLITCHY[0])
    for kind in KINDS:
        assert result.tables[kind].equals(plain.tables[kind]), kind
    bad = sim.write(result, tmp_path / "bad")
    clean = sim.write(dataclasses.replace(result, glitches=[]), tmp_path / "clean")
    lines = Counter(g["file"] for g in glitch_truth(result))
    for kind in KINDS:
        a = bad[kind].read_text().split("\n")
        b = clean[kind].read_text().split("\n")
        assert len(a) == len(b) == result.tables[kind].num_rows + 2  # header, trailing newline
        differ = {i + 1 for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y}
        wanted = {g["line"] for g in glitch_truth(result) if g["file"] == f"{kind}.csv"}
        assert differ == wanted and len(wanted) == lines[f"{kind}.csv"], kind
    plain_paths = sim.write(plain, tmp_path / "plain")
    for kind in KINDS:
        assert clean[kind].read_bytes() == plain_paths[kind].read_bytes()


def test_glitches_inside_window_share_and_minimum() -> None:
    result = run(*GLITCHY)
    truth = glitch_truth(result)
    (note,) = [n for n in result.truth["faults"] if n["name"] == "export_glitches"]
    assert note["share"] == SHARE
    assert note["rows"]["changed"] == dict(Counter(g["file"][:-4] for g in truth))
    start = dt.date(2026, 1, 1) + dt.timedelta(days=5)
    end = dt.date(2026, 1, 1) + dt.timedelta(days=35)
    for g in result.glitches:
        row = result.tables[g.kind].slice(g.row, 1).to_pylist()[0]
        day = row["date"] if g.kind == "spend" else row["ts"].date()
        assert start <= day <= end, g
    per = Counter((g["file"], g["campaign"]) for g in truth)
    for kind, glitches in GLITCHES.items():
        for cid, info in result.truth["campaigns"].items():
            has_rows = kind != "crm" or info["objective"] == "lead"
            assert per[(f"{kind}.csv", cid)] >= len(glitches) * has_rows, (kind, cid)
    conversions = result.tables["conversions"]
    kinds = {conversions["kind"][g.row].as_py() for g in result.glitches if g.kind == "conversions"}
    assert {"lead", "sql", "opportunity"} <= kinds  # offline conversions are rows like any other
    touches = sum(n for (f, _), n in per.items() if f == "touchpoints.csv")
    in_window = result.tables["touchpoints"].num_rows * 31 / DAYS
    assert 0.5 * SHARE < touches / in_window < 2 * SHARE


def test_one_campaign_only_and_same_rows_as_star() -> None:
    one, star = run("export_glitches@c02:5-35"), run("export_glitches@*:5-35")
    assert {g["campaign"] for g in glitch_truth(one)} == {"c02"}
    from_star = [g for g in glitch_truth(star) if g["campaign"] == "c02"]
    assert glitch_truth(one) == from_star


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def digest(paths: dict[str, Path]) -> dict[str, str]:
        return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}

    faults = (sim.parse_fault("export_glitches@*:3-", days=20, campaign_ids=IDS[:2]),)
    config = sim.SimulationConfig(days=20, campaigns=2, seed=9, faults=faults)
    assert digest(sim.write(sim.simulate(config), tmp_path / "a")) == digest(
        sim.write(sim.simulate(config), tmp_path / "b")
    )


def test_parse_export_glitches() -> None:
    fault = sim.parse_fault("export_glitches@*:5-", days=90, campaign_ids=IDS)
    assert fault == sim.Fault("export_glitches", "*", 5, 89)
    assert "export_glitches" in sim.FAULT_NAMES


@pytest.mark.parametrize("style", ["none", "needed"])
def test_render_matches_the_csv_writer(style: str) -> None:
    table = pa.table({"a": ["x", None, "y"], "b": [1.5, 2.0, None], "c": ["p", "q", "r"]})
    text = csv_text(table)
    buf = io.BytesIO()
    pcsv.write_csv(text, buf, pcsv.WriteOptions(include_header=False, quoting_style=style))
    written = buf.getvalue().decode().splitlines(keepends=True)
    for row in range(3):
        fields = text.slice(row, 1).to_pylist()[0]
        same = Glitch("spend", row, "c01", "a", "negative")
        assert same.render(fields, quote_all=style == "needed") == written[row]
    cut = Glitch("touchpoints", 0, "c01", None, "malformed_row", keep=2)
    assert cut.render({"a": "x", "b": "1.50", "c": "p"}) == "x,1.50\n"
    comma = Glitch("conversions", 0, "c01", "b", "not_a_number", (("b", "1,50"),))
    assert comma.render({"a": "x", "b": "1.50", "c": 'say "hi"'}) == 'x,"1,50","say ""hi"""\n'
