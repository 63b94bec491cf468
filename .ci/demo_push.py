"""CI: the demo's dry-run request bodies, sent as they are to the local stand-ins, are accepted;
then a live push of the demo workspace to them sends each item exactly once across two runs."""

import json
import os
import pathlib
from datetime import UTC, datetime, timedelta

import httpx

from signalloop.demo import demo_settings
from signalloop.push.client import Client
from signalloop.push.sandbox import Sandbox
from signalloop.push.send import push
from signalloop.store import Workspace

root = pathlib.Path("signalloop-demo")
doc = json.loads((root / "report" / "report.json").read_text())

now = datetime.fromisoformat(doc["as_of"]).replace(tzinfo=UTC) + timedelta(days=1, hours=6)
os.environ.update(
    SIGNALLOOP_META_ACCESS_TOKEN="ci-meta",
    SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN="ci-dev",
    SIGNALLOOP_GOOGLE_ACCESS_TOKEN="ci-access",
)
with Sandbox(
    now=now,
    meta_token="ci-meta",
    google_developer_token="ci-dev",
    google_access_tokens=("ci-access",),
    google_time_zone="America/New_York",
) as sb:
    base = sb.base_url
    counts = {}
    for name, t in doc["push"]["targets"].items():
        assert "counts" in t, (name, t)
        for r in t["requests"]:
            path = "/" + r["url"].split("/", 3)[3]
            headers = (
                {"Authorization": "Bearer ci-meta"}
                if name == "meta"
                else {"Authorization": "Bearer ci-access", "developer-token": "ci-dev"}
            )
            reply = httpx.post(
                base + path, json=json.loads(pathlib.Path(r["file"]).read_text()), headers=headers
            )
            assert reply.status_code == 200 and "partialFailureError" not in reply.json(), (
                reply.text
            )
        counts[name] = len(t["requests"])
    assert counts["meta"] and counts["google"] and counts["exclusions"], counts
    print("demo dry-run bodies accepted by the stand-ins:", counts)
with Sandbox(
    now=now,
    meta_token="ci-meta",
    google_developer_token="ci-dev",
    google_access_tokens=("ci-access",),
    google_time_zone="America/New_York",
) as sb:
    settings = demo_settings({c: "google" for c in ("c02", "c04", "c06")})
    from dataclasses import replace

    p = settings.push
    settings = replace(
        settings,
        push=replace(
            p,
            meta=replace(p.meta, base_url=sb.base_url),
            google=replace(p.google, base_url=sb.base_url, token_url=sb.base_url + "/token"),
        ),
    )
    as_of = datetime.fromisoformat(doc["as_of"]).date()
    runs = []
    for _ in range(2):
        with Workspace(root / "signalloop.duckdb") as ws:
            runs.append(
                {
                    t: push(
                        ws,
                        t,
                        as_of=as_of,
                        settings=settings,
                        dry_run=False,
                        now=now,
                        client=Client(backoff=0.01),
                    ).sent
                    for t in ("meta", "google", "exclusions")
                }
            )
    assert all(runs[0].values()) and not any(runs[1].values()), runs
    assert all(e.count == 1 for e in sb.meta_events)
    print("live push to the stand-ins, twice:", runs)
