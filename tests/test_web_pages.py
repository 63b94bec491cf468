"""The web app's pages and their JSON twins, approvals, the quarantine browser and runs
(issue 13), against one run account served in-process. Every response any test here makes
is checked for key secrets (body and headers), and so is every log line."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tests.webutil import (
    CONFIG,
    HTML,
    JSON,
    LogSecrets,
    WebWorkspace,
    assert_no_secret,
    copy_workspace,
    log_lines,
    make_client,
    report_doc,
    secret_parts,
    settle,
    web_template,
)

from signalloop.phase import BUDGET_THRESHOLD, phase
from signalloop.web.app import create_app
from signalloop.web.registry import Registry

__all__ = ["log_lines", "web_template"]  # fixtures used by name

NAME = "acme"
SEVERITY = {"critical": 0, "warn": 1, "info": 2}


@dataclass
class Site:
    w: WebWorkspace
    registry: Registry
    client: Any
    secrets: list[str]
    doc: dict[str, Any]

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers={**self.w.bearer("maria"), **kw.pop("headers", {})})

    def json(self, path: str) -> Any:
        r = self.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")
        return r.json()

    def db_rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.registry.get(NAME).open() as ws:
            return ws.con.execute(sql, params or []).fetchall()


def serve(w: WebWorkspace, log: LogSecrets, *, lifespan: bool = True) -> Iterator[Site]:
    """``w`` served in-process. ``lifespan`` false skips the app's start-up (its cache
    warming: CPU a short test does not need) and closes the registry as its shutdown does."""
    secrets = secret_parts(w.tokens.values())
    registry = Registry.discover(db=w.db)
    assert registry.names() == [w.name]
    app = create_app(registry, schedule=False)
    if lifespan:
        with make_client(app, secrets) as client:
            yield Site(w, registry, client, secrets, report_doc(w))
            settle([w.name])
    else:
        client = make_client(app, secrets)
        try:
            yield Site(w, registry, client, secrets, report_doc(w))
        finally:
            client.close()
            registry.close()
    for line in log.lines:
        assert_no_secret("the server log", line, secrets)


@pytest.fixture(scope="module")
def site(
    web_template: Path, tmp_path_factory: pytest.TempPathFactory, log_lines: LogSecrets
) -> Iterator[Site]:
    """The account served in-process (approvals here are this module's own)."""
    yield from serve(
        copy_workspace(web_template, tmp_path_factory.mktemp("pages") / NAME), log_lines
    )


@pytest.fixture
def fresh(web_template: Path, tmp_path: Path, log_lines: LogSecrets) -> Iterator[Site]:
    """A copy of its own, for a test that changes what the others read (runs, decisions)."""
    yield from serve(copy_workspace(web_template, tmp_path / NAME), log_lines, lifespan=False)


def changed_line(doc: dict[str, Any]) -> dict[str, Any]:
    """A budget line whose recommendation moves the budget (the fixture's budget makes one)."""
    moved = [
        a for a in doc["allocation"]["arms"] if round(a["recommended"], 2) != round(a["current"], 2)
    ]
    assert moved, "the account's allocation moves no line: raise webutil.BUDGET"
    return moved[0]


def unchanged_lines(doc: dict[str, Any]) -> list[str]:
    return [
        a["campaign_id"]
        for a in doc["allocation"]["arms"]
        if round(a["recommended"], 2) == round(a["current"], 2)
    ]


# -- every page, HTML and JSON --------------------------------------------------------------------
def page_paths(site: Site) -> list[str]:
    cids = sorted(c["campaign_id"] for c in site.doc["checks"]["campaigns"])
    return [
        f"/w/{NAME}",
        *(f"/w/{NAME}/campaigns/{c}" for c in cids),
        f"/w/{NAME}/allocation",
        f"/w/{NAME}/data",
        f"/w/{NAME}/data?kind=spend",
        f"/w/{NAME}/runs",
    ]


def twin(path: str) -> str:
    base, _, query = path.partition("?")
    return base + ".json" + (f"?{query}" if query else "")


def test_every_page_answers_html_and_the_same_json_both_ways(site: Site) -> None:
    for path in page_paths(site):
        page = site.get(path, headers=HTML)
        assert page.status_code == 200, (path, page.text[:300])
        assert page.headers["content-type"].startswith("text/html")
        link = re.search(r'id="json-twin" href="([^"]+)"|href="([^"]+)" id="json-twin"', page.text)
        assert link is not None, f"{path} links no JSON twin"
        assert (link.group(1) or link.group(2)).replace("&amp;", "&") == twin(path)
        by_suffix = site.json(twin(path))
        by_accept = site.get(path, headers=JSON)
        assert by_accept.status_code == 200
        assert by_accept.headers["content-type"].startswith("application/json")
        assert by_accept.json() == by_suffix, f"{path}: the two JSON twins differ"
        assert by_suffix["workspace"] == NAME


def test_the_run_report_the_csv_and_health_answer(site: Site) -> None:
    rid = site.doc["run_id"]
    assert site.json(f"/w/{NAME}/runs/{rid}.json") == site.doc
    html = site.get(f"/w/{NAME}/runs/{rid}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert f"as of {site.doc['as_of']}" in html.text
    csv_ = site.get(f"/w/{NAME}/data/quarantine.csv")
    assert csv_.status_code == 200 and csv_.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_.headers["content-disposition"]
    health = site.client.get("/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    assert site.get(f"/w/{NAME}/runs/nope.json").status_code == 404
    assert site.get(f"/w/{NAME}/runs/nope/report.html").status_code == 404
    missing = site.get(f"/w/{NAME}/campaigns/c99.json")
    assert missing.status_code == 404 and "c99" in missing.json()["error"]


# -- overview -------------------------------------------------------------------------------------
def impact_key(d: dict[str, Any]) -> tuple[int, float]:
    return SEVERITY.get(d["severity"], 3), -float((d.get("impact") or {}).get("spend_per_day") or 0)


def test_overview_has_the_lens_gates_top_diagnoses_and_last_run(site: Site) -> None:
    d, doc = site.json(f"/w/{NAME}.json"), site.doc
    assert d["as_of"] == doc["as_of"]
    assert d["lens"]["verdict"] == doc["lens"]["verdict"]
    assert d["lens"]["weakest"] == doc["lens"]["weakest"]
    assert [c["name"] for c in d["lens"]["checks"]] == [c["name"] for c in doc["lens"]["checks"]]
    assert d["gates"] == [
        {"campaign_id": c["campaign_id"], "gate": c["gate"], "reasons": c["reasons"]}
        for c in doc["checks"]["campaigns"]
    ]
    assert d["signal_environment"] == {
        k: v["score"] for k, v in doc["checks"]["signal_environment"].items()
    }
    every = doc["diagnosis"]["diagnoses"]
    top = d["diagnoses"]
    assert d["diagnoses_total"] == len(every) and 0 < len(top) <= len(every)
    assert [impact_key(x) for x in top] == sorted(impact_key(x) for x in top)
    left = [x for x in every if x not in top]
    assert all(impact_key(x) >= impact_key(top[-1]) for x in left), "a bigger one was left out"
    assert any(x["campaign_id"] for x in top), "the fixture should give a campaign diagnosis"
    assert d["last_run"]["run_id"] == doc["run_id"] and d["last_run"]["status"] == "ok"
    assert d["running"]["running"] is False
    assert d["allocation"]["lines"] == len(doc["allocation"]["arms"])
    html = site.get(f"/w/{NAME}", headers=HTML).text
    for x in top:
        if x["campaign_id"]:
            assert f'class="diagnosis-link" href="/w/{NAME}/campaigns/{x["campaign_id"]}"' in html
    assert doc["run_id"] in html


# -- campaign -------------------------------------------------------------------------------------
def ratio(num: Any, den: Any) -> float | None:
    return round(float(num) / float(den), 4) if num is not None and den else None


def test_campaign_pages_match_the_runs_report(site: Site) -> None:
    doc = site.doc
    nc = doc["state"]["nowcast"]
    actors: set[str] = set()
    for gate in doc["checks"]["campaigns"]:
        cid = gate["campaign_id"]
        d = site.json(f"/w/{NAME}/campaigns/{cid}.json")
        assert d["campaign_id"] == cid and d["as_of"] == doc["as_of"]
        assert d["gate"] == gate
        assert d["nowcast"] == next(c for c in nc["campaigns"] if c["campaign_id"] == cid)
        assert d["allocation"] == next(
            a for a in doc["allocation"]["arms"] if a["campaign_id"] == cid
        )
        phase_rows = [e for e in doc["state"]["phase"]["entities"] if e["campaign_id"] == cid]
        assert d["phase"] == phase_rows and phase_rows
        for e in d["phase"]:
            assert e["human_resets"] == sum(
                1 for r in e["resets"] if r["actor"] == "human" and r["detail"] != "launch"
            )
            actors |= {r["actor"] for r in e["resets"]}
        assert d["diagnoses"] == sorted(
            (x for x in doc["diagnosis"]["diagnoses"] if x["campaign_id"] == cid), key=impact_key
        )
        # the daily series: the last 28 days of the run's cohorts, cost and ROAS from them
        rows = [c for c in nc["cohorts"] if c["campaign_id"] == cid][-28:]
        daily = d["daily"]
        assert daily["dates"] == [r["date"] for r in rows]
        assert daily["observed"] == [r["observed_conversions"] for r in rows]
        assert daily["nowcast_cost"] == [ratio(r["spend"], r["expected_conversions"]) for r in rows]
        assert daily["cost_low"] == [ratio(r["spend"], r["upper"]) for r in rows]
        assert daily["cost_high"] == [ratio(r["spend"], r["lower"]) for r in rows]
        assert daily["excluded"] == [bool(r["excluded"]) for r in rows]
        outages = [o for o in doc["charts"]["conversions"]["outages"] if o["campaign_id"] == cid]
        assert d["outages"] == outages
        html = site.get(f"/w/{NAME}/campaigns/{cid}", headers=HTML).text
        assert 'data-target="fig-cost_conversion"' in html and 'id="fig-cost_conversion"' in html
        for o in outages:
            assert f"{o['start']} to {o['end']}" in html
    assert "human" in actors, "the account's edit log has people's edits"
    c02 = site.json(f"/w/{NAME}/campaigns/c02.json")
    assert c02["outages"] and c02["outages"][0]["start"] <= c02["outages"][0]["end"]
    assert any(c02["daily"]["excluded"]), "the outage's days are marked excluded"


# -- allocation and approvals ---------------------------------------------------------------------
def edits(site: Site) -> list[tuple[Any, ...]]:
    return site.db_rows(
        "SELECT entity_id, field, old_value, new_value, actor, attrs, ts FROM changes "
        "WHERE attrs IS NOT NULL AND json_extract_string(attrs, '$.via') = 'signalloop'"
    )


def test_approving_a_line_records_who_and_a_human_budget_edit(site: Site) -> None:
    doc = site.doc
    line = changed_line(doc)
    cid = line["campaign_id"]
    changes_before = site.db_rows("SELECT count(*) FROM changes")[0][0]
    with site.registry.get(NAME).open() as ws:
        day_before = {e.entity_id: e.human_resets for e in phase(ws, date.today()).entities}
    r = site.client.post(
        f"/w/{NAME}/allocation",
        data={"decision": "approve", "campaign": cid, "note": "looks right"},
        headers={**site.w.bearer("maria"), **JSON},
    )
    assert r.status_code == 200, r.text
    (decided,) = r.json()["decided"]
    assert decided["campaign_id"] == cid and decided["decision"] == "approve"
    assert decided["person"] == "maria" and decided["edit_logged"] is True
    approvals = site.db_rows(
        "SELECT decision, person, key_id, current, recommended, note FROM approvals "
        "WHERE run_id = ? AND campaign_id = ?",
        [doc["run_id"], cid],
    )
    assert approvals == [
        (
            "approve",
            "maria",
            site.w.key_ids["maria"],
            line["current"],
            line["recommended"],
            "looks right",
        )
    ]
    assert site.db_rows("SELECT count(*) FROM changes")[0][0] == changes_before + 1
    (edit,) = edits(site)
    entity, fld, old, new, actor, attrs, ts = edit
    assert (entity, fld, actor) == (cid, "budget", "human")
    assert float(old) == line["current"] and float(new) == line["recommended"]
    attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
    assert attrs["person"] == "maria" and attrs["run_id"] == doc["run_id"]
    # the page shows who decided; the line is decided once
    shown = site.json(f"/w/{NAME}/allocation.json")
    mine = next(x for x in shown["lines"] if x["campaign_id"] == cid)
    assert mine["decision"]["person"] == "maria" and mine["decision"]["decision"] == "approve"
    assert shown["open"] == len(shown["lines"]) - 1
    assert site.json(f"/w/{NAME}/campaigns/{cid}.json")["decision"]["person"] == "maria"
    again = site.client.post(
        f"/w/{NAME}/allocation",
        data={"decision": "reject", "campaign": cid},
        headers={**site.w.bearer("maria"), **JSON},
    )
    assert again.status_code == 409 and "maria" in again.json()["error"]
    assert len(edits(site)) == 1
    # learning-phase accounting reads it as a human budget edit on the day it was made: a
    # reset when it moves the budget by more than the threshold, none below it
    day = ts.date()
    with site.registry.get(NAME).open() as ws:
        after = phase(ws, day).entities
    big = abs(line["recommended"] / line["current"] - 1.0) > BUDGET_THRESHOLD
    for e in after:
        if e.campaign_id != cid:
            continue
        today = [r for r in e.resets if r.day == day]
        if big:
            assert [(r.actor, r.field) for r in today] == [("human", "budget")]
        else:
            assert today == []
        if day == date.today():
            assert e.human_resets == day_before[e.entity_id] + int(big)


def login(site: Site, key: str = "maria", nxt: str = "") -> Any:
    r = site.client.post(
        "/login", data={"key": site.w.tokens[key], "next": nxt}, follow_redirects=False
    )
    assert r.status_code == 303, r.text[:300]
    return r


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries no CSRF field"
    return found.group(1)


def test_session_form_posts_need_the_csrf_token(fresh: Site) -> None:
    site = fresh
    login(site)
    page = site.client.get(f"/w/{NAME}/allocation", headers=HTML)
    assert page.status_code == 200
    token = csrf_of(page.text)
    cids = unchanged_lines(site.doc)
    assert len(cids) >= 2
    url = f"/w/{NAME}/allocation"
    for bad in ({}, {"csrf": "x" * 32}):
        r = site.client.post(
            url, data={"decision": "reject", "campaign": cids[0], **bad}, follow_redirects=False
        )
        assert r.status_code == 403, r.text[:200]
    assert site.db_rows("SELECT count(*) FROM approvals")[0][0] == 0
    r = site.client.post(
        url,
        data={"decision": "reject", "campaign": cids[0], "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == url
    r = site.client.post(
        url,
        data={"decision": "approve", "campaign": cids[1]},
        headers={"X-CSRF-Token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    rows = site.db_rows("SELECT campaign_id, decision, person FROM approvals ORDER BY 1")
    assert rows == sorted([(cids[0], "reject", "maria"), (cids[1], "approve", "maria")])
    shown = site.client.get(url, headers=HTML).text
    assert "approved</b> by maria" in shown
    # run now from a session needs it too
    assert site.client.post(f"/w/{NAME}/runs", follow_redirects=False).status_code == 403
    assert site.registry.get(NAME).runs.state()["running"] is False


def test_a_rejected_line_reads_rejected(site: Site) -> None:
    cid = unchanged_lines(site.doc)[-1]
    r = site.client.post(
        f"/w/{NAME}/allocation",
        data={"decision": "reject", "campaign": cid},
        headers={**site.w.bearer("maria"), **JSON},
    )
    assert r.status_code == 200
    row = site.get(f"/w/{NAME}/allocation", headers=HTML).text.split(f'data-campaign="{cid}"')[1]
    assert "rejected</b> by maria" in row.split("</tr>")[0]
    page = site.get(f"/w/{NAME}/campaigns/{cid}", headers=HTML).text
    assert "rejected</b> by maria" in page


def test_rejecting_writes_no_edit_and_all_decides_the_open_lines(fresh: Site) -> None:
    site = fresh
    line = changed_line(site.doc)
    url, auth = f"/w/{NAME}/allocation", {**site.w.bearer("maria"), **JSON}
    r = site.client.post(
        url, data={"decision": "reject", "campaign": line["campaign_id"]}, headers=auth
    )
    assert r.status_code == 200 and r.json()["decided"][0]["edit_logged"] is False
    assert edits(site) == []
    r = site.client.post(url, data={"decision": "approve", "campaign": "all"}, headers=auth)
    assert r.status_code == 200
    assert sorted(x["campaign_id"] for x in r.json()["decided"]) == unchanged_lines(site.doc)
    assert edits(site) == []  # approving an unchanged budget is no edit
    assert site.json(f"{url}.json")["open"] == 0
    r = site.client.post(url, data={"decision": "approve", "campaign": "all"}, headers=auth)
    assert r.status_code == 200 and r.json()["decided"] == []
    bad = site.client.post(url, data={"decision": "approve", "campaign": "c99"}, headers=auth)
    assert bad.status_code == 400 and "c99" in bad.json()["error"]
    bad = site.client.post(url, data={"decision": "maybe", "campaign": "all"}, headers=auth)
    assert bad.status_code == 422


def test_a_key_caller_gets_json_errors_without_asking(site: Site) -> None:
    url, auth = f"/w/{NAME}/allocation", site.w.bearer("maria")
    bad = site.client.post(url, data={"decision": "approve", "campaign": "c99"}, headers=auth)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/json"), bad.text[:200]


# -- data: the quarantine browser -----------------------------------------------------------------
def csv_rows(site: Site, query: dict[str, str]) -> list[dict[str, str]]:
    r = site.get(f"/w/{NAME}/data/quarantine.csv" + (f"?{urlencode(query)}" if query else ""))
    assert r.status_code == 200
    return list(csv.DictReader(io.StringIO(r.text)))


def key(row: dict[str, Any]) -> tuple[str, str, str]:
    return str(row["ingest_id"]), str(row["line"]), str(row["code"])


def test_quarantine_filters_return_only_matching_rows_and_the_csv_the_same(site: Site) -> None:
    q = site.json(f"/w/{NAME}/data.json")["quarantine"]
    total, facets = q["total"], q["facets"]
    assert total > 0 and len(q["rows"]) == min(total, 200)
    for col in ("kind", "code", "file"):
        assert sum(f["rows"] for f in facets[col]) == total
        assert len(facets[col]) >= 2, f"the fixture should quarantine more than one {col}"
        for f in facets[col]:
            query = {col: f["value"]}
            got = site.json(f"/w/{NAME}/data.json?{urlencode(query)}")["quarantine"]
            assert got["total"] == f["rows"] and got["filters"][col] == f["value"]
            assert got["rows"] and all(r[col] == f["value"] for r in got["rows"])
            rows = csv_rows(site, query)
            assert len(rows) == f["rows"] and all(r[col] == f["value"] for r in rows)
            if f["rows"] <= 200:
                assert [key(r) for r in rows] == [key(r) for r in got["rows"]]
    # two filters at once
    first = q["rows"][0]
    both = {"kind": first["kind"], "code": first["code"]}
    got = site.json(f"/w/{NAME}/data.json?{urlencode(both)}")["quarantine"]
    assert got["rows"] and all(
        (r["kind"], r["code"]) == (both["kind"], both["code"]) for r in got["rows"]
    )
    assert [key(r) for r in csv_rows(site, both)] == [key(r) for r in got["rows"]]
    nothing = site.json(f"/w/{NAME}/data.json?code=no_such_reason")["quarantine"]
    assert nothing["total"] == 0 and nothing["rows"] == []
    assert csv_rows(site, {"code": "no_such_reason"}) == []
    # the pages of the unfiltered list are the CSV, in order
    paged: list[tuple[str, str, str]] = []
    offset = 0
    while offset < total:
        page = site.json(f"/w/{NAME}/data.json?offset={offset}")["quarantine"]
        assert page["offset"] == offset and page["rows"]
        paged += [key(r) for r in page["rows"]]
        offset += len(page["rows"])
    assert paged == [key(r) for r in csv_rows(site, {})]
    # the HTML page lists the matching rows only, the filter selected
    f = facets["code"][-1]
    html = site.get(f"/w/{NAME}/data?code={f['value']}", headers=HTML).text
    body = html.split('id="quarantine-rows"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td><b>([^<]+)</b>:", body) == [f["value"]] * min(f["rows"], 200)
    assert f'<option value="{f["value"]}" selected>' in html


def test_data_page_rejects_bad_filters_without_a_crash(site: Site) -> None:
    for query in ("offset=-1", "offset=abc", f"kind={'k' * 41}"):
        r = site.get(f"/w/{NAME}/data.json?{query}")
        assert r.status_code == 422, (query, r.status_code)
        assert "error" in r.json()


# -- runs -----------------------------------------------------------------------------------------
def test_a_failed_run_is_shown_with_its_error_and_the_server_goes_on(
    fresh: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fresh
    h = site.registry.get(NAME)
    toml = site.w.folder / "signalloop.toml"
    good = toml.read_text()
    toml.write_text("[run\ninbox = \n", encoding="utf-8")  # not TOML
    r = site.client.post(f"/w/{NAME}/runs", headers=site.w.bearer("maria"))
    assert r.status_code == 202
    h.runs.join(60)
    state = site.json(f"/w/{NAME}/runs.json")["running"]
    assert state["running"] is False and state["last_run_id"] == r.json()["run_id"]
    assert state["last_error"] and "signalloop.toml" in state["last_error"]
    page = site.get(f"/w/{NAME}/runs", headers=HTML)
    assert page.status_code == 200 and "failed" in page.text
    for path in (f"/w/{NAME}.json", f"/w/{NAME}/allocation.json", f"/w/{NAME}/data.json"):
        assert site.get(path).status_code == 200, path
    assert site.client.get("/healthz").status_code == 200
    toml.write_text(good, encoding="utf-8")

    # a run that fails inside the loop is recorded in the runs table with its error
    import signalloop.run

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the loop broke here (test)")

    monkeypatch.setattr(signalloop.run, "run", broken)
    r = site.client.post(f"/w/{NAME}/runs", headers=site.w.bearer("maria"))
    assert r.status_code == 202
    h.runs.join(120)
    runs = site.json(f"/w/{NAME}/runs.json")
    failed = next(x for x in runs["runs"] if x["run_id"] == r.json()["run_id"])
    assert failed["status"] == "failed" and "the loop broke here" in failed["error"]
    assert failed["trigger"] == "manual" and failed["actor"] == "maria"
    assert "the loop broke here" in site.get(f"/w/{NAME}/runs", headers=HTML).text
    # the pages keep reading the last good run
    assert site.json(f"/w/{NAME}.json")["last_run"]["run_id"] == site.doc["run_id"]


@contextmanager
def config(site: Site, text: str) -> Iterator[None]:
    """``signalloop.toml`` reads ``text`` inside the block; put back and logged out after."""
    toml = site.w.folder / "signalloop.toml"
    good = toml.read_text()
    toml.write_text(text, encoding="utf-8")
    try:
        yield
    finally:
        toml.write_text(good, encoding="utf-8")
        site.client.cookies.clear()


def test_people_can_log_in_while_the_config_is_broken(site: Site) -> None:
    with config(site, "[run\n"):
        login(site)
        assert site.client.get(f"/w/{NAME}/runs", headers=HTML).status_code == 200


def test_a_session_lasts_what_serve_session_hours_says(site: Site) -> None:
    import base64
    import time

    with config(site, CONFIG + "\n[serve]\nsession_hours = 1.0\n"):
        r = login(site)
    cookie = r.cookies["signalloop_session"]
    body = cookie.split(".")[0]
    exp = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"]
    assert "Max-Age=3600" in r.headers["set-cookie"]
    assert exp - time.time() <= 3600 + 60, "the signed session outlives session_hours"


def test_run_now_runs_in_the_background_one_at_a_time(
    fresh: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fresh
    h = site.registry.get(NAME)
    quarantined = site.db_rows("SELECT count(*) FROM quarantine")[0][0]
    hold = threading.Event()
    ingest = h.runs.before
    assert ingest is not None

    def held(ws: Any, settings: Any) -> None:  # the run waits here until the test lets it go
        assert hold.wait(120)
        ingest(ws, settings)

    monkeypatch.setattr(h.runs, "before", held)
    auth = {**site.w.bearer("maria"), **JSON}
    try:
        r = site.client.post(f"/w/{NAME}/runs", headers=auth)
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        state = site.json(f"/w/{NAME}/runs.json")["running"]
        assert state["running"] is True and state["run_id"] == run_id
        assert state["trigger"] == "manual" and state["actor"] == "maria"
        busy = site.client.post(f"/w/{NAME}/runs", headers=auth)
        assert busy.status_code == 409 and run_id in busy.json()["error"]
        page = site.get(f"/w/{NAME}/runs", headers=HTML).text
        assert 'data-running="yes"' in page and run_id in page
        assert site.json(f"/w/{NAME}.json")["running"]["run_id"] == run_id
        # reading and deciding go on while it runs
        assert site.get(f"/w/{NAME}/data.json").status_code == 200
    finally:
        hold.set()
        h.runs.join(600)
    runs = site.json(f"/w/{NAME}/runs.json")
    assert runs["running"]["running"] is False and runs["running"]["last_error"] is None
    newest = runs["runs"][0]
    assert newest["run_id"] == run_id and newest["status"] == "ok", newest.get("error")
    assert (newest["trigger"], newest["actor"]) == ("manual", "maria")
    over = site.json(f"/w/{NAME}.json")
    assert over["last_run"]["run_id"] == run_id
    assert site.json(f"/w/{NAME}/allocation.json")["run_id"] == run_id
    assert site.json(f"/w/{NAME}/runs/{run_id}.json")["run_id"] == run_id
    # the same inbox again: no row is quarantined twice
    assert site.db_rows("SELECT count(*) FROM quarantine")[0][0] == quarantined


def test_a_run_cut_short_by_a_shutdown_is_not_left_running(
    web_template: Path, tmp_path: Path, log_lines: LogSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signalloop.run

    w = copy_workspace(web_template, tmp_path / NAME, keys={"maria": ("read", "approve")})
    inside, go_on = threading.Event(), threading.Event()

    def slow(ws: Any, **kwargs: Any) -> Any:  # a loop still going when the server stops
        inside.set()
        go_on.wait(60)
        with suppress(Exception):  # closed under it, or not (a shutdown that waits)
            ws.con.execute("SELECT 1").fetchall()
        raise RuntimeError("cut short by the test")

    monkeypatch.setattr(signalloop.run, "run", slow)
    first = serve(w, log_lines)
    site = next(first)
    r = site.client.post(f"/w/{NAME}/runs", headers={**w.bearer("maria"), **JSON})
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    assert inside.wait(60)
    with pytest.raises(StopIteration):
        next(first)  # the server shuts down (lifespan end: the registry closes)
    go_on.set()
    site.registry.get(NAME).runs.join(60)
    again = serve(w, log_lines)  # and starts again
    site = next(again)
    try:
        row = next(x for x in site.json(f"/w/{NAME}/runs.json")["runs"] if x["run_id"] == run_id)
        assert row["status"] != "running" and row["error"], row
    finally:
        with pytest.raises(StopIteration):
            next(again)
