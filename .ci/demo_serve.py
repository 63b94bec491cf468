"""CI: a new user's path through the web app on the demo workspace, as the README tells it.

`signalloop serve --db signalloop-demo/signalloop.duckdb` starts; the demo's key opens the
overview and every page's JSON twin; the overview says what report.json says; approving one
budget line records it; the server log and every answer are free of the key.
"""

import json
import pathlib
import socket
import subprocess
import sys
import time

import httpx

from signalloop.keys import parse_token

root = pathlib.Path("signalloop-demo")
report = json.loads((root / "report" / "report.json").read_text())
token = (root / "demo-key.txt").read_text().strip()
# the token's secret as the server reads it (sl_<key id>_<secret>): the secret is urlsafe
# base64 and may itself hold "_", so the text after the last "_" can be two characters
# that any page happens to contain
parsed = parse_token(token)
assert parsed is not None, "demo-key.txt does not hold a key"
secret = parsed[1]
assert len(secret) >= 40, len(secret)

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
log = open(root / "serve.log", "w+")  # noqa: SIM115
server = subprocess.Popen(
    [sys.executable, "-m", "signalloop", "serve", "--db", str(root / "signalloop.duckdb"),
     "--port", str(port), "--no-schedule"],
    stdout=log, stderr=subprocess.STDOUT,
)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        raise SystemExit("signalloop serve did not come up: " + log.read())
    ws = "signalloop-demo"
    bodies = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/w/{ws}.json", headers={"Authorization": ""}).status_code == 401
        over = c.get(f"/w/{ws}.json").json()
        assert over["lens"]["verdict"] == report["lens"]["verdict"], over["lens"]
        assert over["as_of"] == report["as_of"] and over["diagnoses"], over
        for page in ("", "/allocation", "/data", "/runs", "/campaigns/c02"):
            for suffix in ("", ".json"):
                r = c.get(f"/w/{ws}{page}{suffix}")
                assert r.status_code == 200, (page, suffix, r.status_code, r.text[:300])
                bodies.append(r.text)
        line = report["allocation"]["arms"][0]["campaign_id"]
        r = c.post(f"/w/{ws}/allocation", data={"decision": "approve", "campaign": line})
        assert r.status_code == 200, r.text
        (decided,) = r.json()["decided"]
        assert decided["person"] == "demo" and decided["decision"] == "approve", decided
        lines = c.get(f"/w/{ws}/allocation.json").json()["lines"]
        assert next(x for x in lines if x["campaign_id"] == line)["decision"]["person"] == "demo"
finally:
    server.terminate()
    server.wait(30)
log.seek(0)
text = log.read()
assert secret not in text and all(secret not in b for b in bodies), "the key leaked"
print(f"serve OK: {len(bodies)} pages and twins, 1 approval recorded, no key in answers or log")
