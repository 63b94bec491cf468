"""The web app in a real browser (issue 13): Playwright driving Debian's Chromium against
uvicorn on a free port. Log in with a key, open the overview, follow a diagnosis to its
campaign and see its charts drawn, approve one allocation line and see it recorded, filter
the quarantine by a reason. Any console error, page error or request to another host fails
the test, and no page or response header may carry the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import CHROMIUM_ARGS, chromium
from tests.webutil import (
    LiveServer,
    LogSecrets,
    assert_no_secret,
    copy_workspace,
    log_lines,
    report_doc,
    secret_parts,
    settle,
    web_template,
)

from signalloop.store import Workspace
from signalloop.web.app import create_app
from signalloop.web.registry import Registry

__all__ = ["log_lines", "web_template"]  # fixtures used by name

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
NAME = "acme"
TIMEOUT = 30_000  # ms, per wait: generous for 2 busy cores


def test_a_team_member_logs_in_follows_a_diagnosis_approves_and_filters(
    web_template: Path, tmp_path: Path, log_lines: LogSecrets
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium()
    w = copy_workspace(web_template, tmp_path / NAME, keys={"maria": ("read", "approve")})
    secrets = secret_parts(w.tokens.values())
    doc = report_doc(w)
    moved = [
        a for a in doc["allocation"]["arms"] if round(a["recommended"], 2) != round(a["current"], 2)
    ]
    assert moved, "the account's allocation moves no line: raise webutil.BUDGET"
    line = moved[0]
    server = LiveServer(create_app(Registry.discover(db=w.db), schedule=False)).start()
    problems: list[str] = []
    off_site: list[str] = []
    seen: list[str] = []

    def on_request(req: Any) -> None:
        parts = urlsplit(req.url)
        seen.append(req.url)
        if parts.scheme not in ("data", "blob", "about") and parts.hostname not in LOCAL_HOSTS:
            off_site.append(req.url)

    def on_response(resp: Any) -> None:
        for k, v in resp.headers.items():
            assert_no_secret(f"header {k} of {resp.url}", v, secrets)

    def checked_html(page: Any) -> str:
        html: str = page.content()
        assert_no_secret(f"the page {page.url}", html, secrets)
        return html

    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(TIMEOUT)
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type == "error"
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("request", on_request)
                page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
                page.on("response", on_response)

                # log in: the home page sends a stranger to the login form
                page.goto(server.url + "/", wait_until="load")
                assert urlsplit(page.url).path == "/login"
                page.evaluate("console.error('probe')")  # the listeners do listen
                assert problems == ["console error: probe"]
                problems.clear()
                page.fill("#key", w.tokens["maria"])
                page.click("form[action='/login'] button[type=submit]")
                page.wait_for_url(f"{server.url}/w/{NAME}")
                html = checked_html(page)
                assert f"as of {doc['as_of']}" in html
                assert page.locator("#lens .badge").first.inner_text().strip() != ""
                page.wait_for_selector("#fig-environment .plot-container")

                # follow a diagnosis to its campaign: its charts are drawn
                link = page.locator("a.diagnosis-link").first
                cid = link.inner_text().strip()
                link.click()
                page.wait_for_url(f"{server.url}/w/{NAME}/campaigns/{cid}")
                page.wait_for_selector("#fig-cost_conversion .plot-container")
                traces = page.locator("#fig-cost_conversion .scatterlayer .trace").count()
                assert traces >= 2, "the nowcast and the observed series"
                page.wait_for_selector("#fig-timeline .plot-container")
                html = checked_html(page)
                assert f"Campaign {cid}" in html

                # approve one line on the Allocation page
                page.click("header nav a:has-text('Allocation')")
                page.wait_for_url(f"{server.url}/w/{NAME}/allocation")
                row = page.locator(f"tr[data-campaign='{line['campaign_id']}']")
                row.locator("button[value=approve]").click()
                page.wait_for_url(f"{server.url}/w/{NAME}/allocation")
                decision = row.locator("td.decision")
                decision.wait_for()
                assert "approved by maria" in " ".join(decision.inner_text().split())
                checked_html(page)
                twin = page.request.get(f"{server.url}/w/{NAME}/allocation.json")
                assert twin.ok
                assert_no_secret("allocation.json", twin.body(), secrets)
                shown = next(
                    x for x in twin.json()["lines"] if x["campaign_id"] == line["campaign_id"]
                )
                assert shown["decision"]["person"] == "maria"
                assert shown["decision"]["edit_logged"] is True

                # filter the quarantine by a reason: only that reason's rows
                page.click("header nav a:has-text('Data')")
                page.wait_for_url(f"{server.url}/w/{NAME}/data")
                data = page.request.get(f"{server.url}/w/{NAME}/data.json").json()
                facet = data["quarantine"]["facets"]["code"][-1]  # the rarest reason
                page.select_option("#quarantine-filter select[name=code]", facet["value"])
                page.click("#quarantine-filter button[type=submit]")
                page.wait_for_url(f"**/w/{NAME}/data?*code={facet['value']}*")
                reasons = page.locator("#quarantine-rows tbody tr td:nth-child(5) b")
                got = reasons.all_inner_texts()
                assert got == [facet["value"]] * min(facet["rows"], 200)
                checked_html(page)
                csv_href = page.locator("#quarantine-csv").get_attribute("href")
                assert csv_href is not None and f"code={facet['value']}" in csv_href
            finally:
                browser.close()
    finally:
        settle([NAME])
        server.stop()
    assert problems == [], problems
    assert off_site == [], off_site
    assert any("/static-plotly/plotly.min.js" in u for u in seen), "plotly came from the server"
    # the change is in the edit log, with the person (read after the server let go of the file)
    with Workspace(w.db) as ws:
        rows = ws.con.execute(
            "SELECT entity_id, field, actor, new_value, attrs FROM changes "
            "WHERE json_extract_string(attrs, '$.via') = 'signalloop'"
        ).fetchall()
    assert len(rows) == 1
    entity, fld, actor, new, attrs = rows[0]
    assert (entity, fld, actor) == (line["campaign_id"], "budget", "human")
    assert float(new) == line["recommended"]
    assert json.loads(attrs)["person"] == "maria"
    for text in log_lines.lines:
        assert_no_secret("the server log", text, secrets)
