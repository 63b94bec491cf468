"""The run report: offline HTML, opened in headless Chromium (Debian's), every chart drawn."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CHROMIUM_ARGS, chromium

from signalloop.report import FIGURES


def test_html_is_self_contained(loop_run: dict[str, Any]) -> None:
    text = Path(loop_run["doc"]["report"]["html"]).read_text(encoding="utf-8")
    assert "<script src" not in text  # plotly.js is inline, nothing is fetched
    page = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # plotly.js's own strings
    assert len(text) - len(page) > 3_000_000  # the library itself is in the file
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert text.count('class="plotly-graph-div"') == len(FIGURES)
    assert f"as of {loop_run['doc']['as_of']}" in text


@pytest.mark.slow
def test_report_draws_every_chart_in_chromium_without_console_errors(
    loop_run: dict[str, Any], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium()
    page_file = tmp_path / "report.html"
    shutil.copy(loop_run["doc"]["report"]["html"], page_file)  # alone: nothing beside it
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(FIGURES)}",
                timeout=20_000,
            )
            drawn = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
                    id: d.id,
                    traces: d.querySelectorAll('.trace, .point, .bars path').length,
                    width: d.getBoundingClientRect().width,
                    height: d.getBoundingClientRect().height,
                }))"""
            )
            verdict = page.inner_text("#sec-lens .verdict")
            rows = page.eval_on_selector_all(
                "table.diagnoses tr:not(:first-child)", "r => r.length"
            )
            page.click("#sec-diagnosis summary")  # the folded info diagnoses open
            info_visible = page.is_visible("#diagnoses-info")
        finally:
            browser.close()
    assert problems == []
    assert [r for r in requests if not r.startswith("file://")] == []
    assert [d["id"] for d in drawn] == [f"chart-{name}" for name, _ in FIGURES]
    for d in drawn:
        assert d["traces"] > 0, d
        assert d["width"] > 600 and d["height"] > 200, d
    assert verdict.replace(" ", "_") == loop_run["doc"]["lens"]["verdict"]
    assert rows == len(loop_run["doc"]["diagnosis"]["diagnoses"])  # every one, header aside
    assert info_visible


def test_a_creative_fitted_to_no_clicks_has_no_relative_ctr_not_a_crash(tmp_path: Path) -> None:
    """Seen at 1,000 campaigns: a creative whose fitted starting CTR is 0 (so small it
    rounded away) stopped the report with a division by zero. Its curve has no ratio now."""
    from signalloop.ingest import ingest_file
    from signalloop.report import _fatigue_curves
    from signalloop.store import Workspace

    spend = tmp_path / "spend.csv"
    spend.write_text(
        "date,platform,campaign_id,creative_id,impressions,clicks,spend\n"
        "2026-03-01,meta,c1,cr1,50000,0,10.0\n2026-03-02,meta,c1,cr1,40000,0,9.0\n"
    )
    creative = {
        "creative_id": "cr1",
        "campaign_id": "c1",
        "live": True,
        "launched": "2026-03-01",
        "status": "fresh",
        "ctr_start": 0.0,
        "decay_per_day": 0.0,
        "decay_per_100k_impressions": 0.0,
    }
    doc = {"as_of": "2026-03-02", "state": {"fatigue": {"creatives": [creative]}}}
    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_file(ws, "spend", spend)
        (curve,) = _fatigue_curves(ws, doc)["creatives"]
    assert curve["age_days"] == [0, 1] and curve["relative_ctr"] == [None, None]
    assert curve["fitted"] == [1.0, 1.0]


def test_outage_windows_are_one_band_per_span_of_days() -> None:
    """Outage windows shade the conversions chart once per span of days, its label naming
    the campaign or counting the campaigns (two reasons of one campaign count once); 2,000
    windows draw at once (one ``add_vrect`` each took minutes: each re-checks all before)."""
    from signalloop.report import fig_conversions

    days = ["2026-03-01", "2026-03-02"]
    account = {"dates": days, "observed": [1, 2], "expected": [1, 2], "lower": [1, 2]}
    chart: dict[str, Any] = {"campaigns": {}, "account": {**account, "upper": [1, 2]}}

    def window(cid: str, start: str, end: str) -> dict[str, Any]:
        return {"campaign_id": cid, "start": start, "end": end, "reason": "test"}

    chart["outages"] = [
        window("c1", "2026-03-01", "2026-03-02"),
        window("c1", "2026-03-01", "2026-03-02"),  # (a second reason, same days)
        window("c2", "2026-03-01", "2026-03-02"),
        window("c3", "2026-03-05", "2026-03-06"),
    ]
    fig = fig_conversions(chart)
    bands = [(s.x0, s.x1) for s in fig.layout.shapes]
    assert bands == [("2026-03-01", "2026-03-02"), ("2026-03-05", "2026-03-06")]
    notes = [a.text for a in fig.layout.annotations]
    assert notes == ["2 campaigns' outage (excluded)", "c3 outage (excluded)"]
    chart["outages"] = [
        window(f"c{i}", f"2026-{1 + i % 12:02d}-01", f"2026-{1 + i % 12:02d}-0{1 + i % 5}")
        for i in range(2000)
    ]
    fig = fig_conversions(chart)
    assert len(fig.layout.shapes) == len(fig.layout.annotations) == 60


def test_many_campaigns_conversion_lines_are_one_trace_with_every_point() -> None:
    """Past LINES_PER_CAMPAIGN campaigns the lines share one trace: every campaign's points,
    split by gaps, each hover naming its campaign; the account traces are unchanged."""
    from signalloop.report import LINES_PER_CAMPAIGN, fig_conversions

    n = LINES_PER_CAMPAIGN + 5
    days = ["2026-03-01", "2026-03-02"]
    chart = {
        "campaigns": {f"c{i:03d}": {"dates": days, "observed": [i, i + 1]} for i in range(n)},
        "account": {
            "dates": days,
            "observed": [1, 2],
            "expected": [1, 2.5],
            "lower": [1, 2],
            "upper": [1, 3],
        },
        "outages": [],
    }
    fig = fig_conversions(chart)
    lines = [t for t in fig.data if t.name == f"{n} campaigns"]
    assert len(lines) == 1 and len(fig.data) == 4
    # the counts as an array (typed binary in the page), each campaign's line ended by a NaN
    ys = [float(v) for v in lines[0].y if not math.isnan(v)]
    assert ys == [v for i in range(n) for v in (i, i + 1)]
    assert sum(math.isnan(v) for v in lines[0].y) == n
    assert len(lines[0].x) == len(lines[0].y) == len(lines[0].text)
    assert lines[0].text[0] == "c000" and lines[0].text[-1] == f"c{n - 1:03d}"
    few = fig_conversions({**chart, "campaigns": dict(list(chart["campaigns"].items())[:3])})
    assert [t.name for t in few.data][:3] == ["c000", "c001", "c002"]


def test_fatigue_curves_show_the_listed_days_with_the_whole_lifes_exposure(
    tmp_path: Path,
) -> None:
    """The curves cover the days the fatigue report lists (a long-lived creative is not
    drawn its whole life every day), and each shown day's fitted value still counts every
    impression before it: the shown days equal the tail of the whole life's curve."""
    from signalloop.ingest import ingest_file
    from signalloop.report import _fatigue_curves
    from signalloop.store import Workspace

    spend = tmp_path / "spend.csv"
    rows = [f"2026-03-{d:02d},meta,c1,cr1,{40000 + 1000 * d},{400 - 7 * d},10.0" for d in (1, 2)]
    rows += [
        f"2026-03-{d:02d},meta,c1,cr1,{40000 + 1000 * d},{400 - 7 * d},10.0" for d in range(4, 9)
    ]
    spend.write_text(
        "date,platform,campaign_id,creative_id,impressions,clicks,spend\n" + "\n".join(rows) + "\n"
    )
    creative = {
        "creative_id": "cr1",
        "campaign_id": "c1",
        "live": True,
        "launched": "2026-03-01",
        "status": "peaking",
        "ctr_start": 0.01,
        "decay_per_day": 0.02,
        "decay_per_100k_impressions": 0.3,
    }

    def curve(days: int | None) -> dict[str, Any]:
        fatigue = {"creatives": [creative], "listed": {"days": days}}
        doc = {"as_of": "2026-03-08", "state": {"fatigue": fatigue}}
        (out,) = _fatigue_curves(ws, doc)["creatives"]
        return dict(out)

    with Workspace(tmp_path / "ws.duckdb") as ws:
        ingest_file(ws, "spend", spend)
        whole, shown = curve(None), curve(4)
    assert whole["age_days"] == [0, 1, 3, 4, 5, 6, 7]
    assert shown["age_days"] == [4, 5, 6, 7]
    for key in ("relative_ctr", "fitted"):
        assert shown[key] == whole[key][3:]
    assert len(set(whole["fitted"])) == len(whole["fitted"])  # (the exposure moves the fit)
