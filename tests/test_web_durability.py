"""An acknowledged batch survives ``kill -9`` of the server (issue 13, item 3 and 6).

``signalloop serve`` runs as a subprocess on a free port; client threads stream batches of
touchpoints; the server is killed with SIGKILL mid-stream, right after some answers. Opened
again, the workspace holds every row of every acknowledged batch, and no row twice. The
unacknowledged batches (the connection broke before an answer: committed or not) are then sent
again to a restarted server, and every row is present exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from signalloop.keys import create_key
from signalloop.store import Workspace

pytestmark = pytest.mark.slow

CLIENTS = 3
ROWS = 200
HEADER = "touch_id,ts,user_id,campaign_id\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``signalloop serve`` on a free port, its log in ``folder/serve-N.log``."""

    def __init__(self, folder: Path, n: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / f"serve-{n}.log").open("wb")
        cmd = [sys.executable, "-m", "signalloop", "serve", "--db", str(folder)]
        cmd += ["--port", str(self.port), "--no-schedule"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer within 60 s; see {self.log.name}")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            self.kill()
        self.log.close()


def body(ids: list[str]) -> bytes:
    rows = "".join(f"{t},2026-01-01T10:00:00Z,u{t},c1\n" for t in ids)
    return (HEADER + rows).encode()


def send(client: httpx.Client, url: str, token: str, n: int, ids: list[str]) -> httpx.Response:
    return client.post(
        f"{url}/api/v1/touchpoints",
        content=body(ids),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "text/csv",
            "Idempotency-Key": f"batch-{n}",
        },
        timeout=30,
    )


def stored(folder: Path) -> tuple[int, set[str]]:
    with Workspace(folder / "signalloop.duckdb") as ws:
        rows = ws.con.execute("SELECT touch_id FROM touchpoints").fetchall()
    return len(rows), {r[0] for r in rows}


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with Workspace(tmp_path / "signalloop.duckdb") as ws:
        key = create_key(ws, "pipeline", "ingest,read")
    assert key.token is not None
    yield tmp_path, key.token


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.07])
def test_acknowledged_batches_survive_kill_9(folder: tuple[Path, str], delay: float) -> None:
    """``delay``: how long after the 30th answer the kill comes (other batches in flight)."""
    path, token = folder
    server = Server(path, 1)
    acked: dict[int, list[str]] = {}
    unacked: dict[int, list[str]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def client() -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                ids = [f"b{n}_{i}" for i in range(ROWS)]
                try:
                    r = send(http, server.url, token, n, ids)
                except httpx.HTTPError:
                    with lock:
                        unacked[n] = ids
                    return  # the server is gone
                with lock:
                    (acked if r.status_code == 200 else unacked)[n] = ids

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 30 and time.monotonic() < deadline:  # well into the stream
        time.sleep(0.001)
    time.sleep(delay)
    server.kill()  # SIGKILL while batches are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 30, "the stream did not get going"

    total, ids = stored(path)  # the workspace as the killed server left it
    for n, batch in acked.items():
        assert set(batch) <= ids, f"acknowledged batch {n} lost"
    assert total == len(ids), "a row stored twice"
    landed = sum(1 for b in unacked.values() if set(b) <= ids)
    print(f"acknowledged {len(acked)}, unanswered {len(unacked)} (of which {landed} committed)")

    again = Server(path, 2)
    try:
        with httpx.Client() as http:
            for n, batch in sorted(unacked.items()):
                r = send(http, again.url, token, n, batch)
                assert r.status_code == 200, r.text
                doc = r.json()
                assert doc["rows_loaded"] + doc["rows_already_present"] == ROWS
            for n in list(acked)[:3]:  # the stored answers came through the kill too
                r = http.get(
                    f"{again.url}/api/v1/ingest/{_request_id(http, again.url, token, n, acked)}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 200
    finally:
        again.stop()
    total, ids = stored(path)
    expected = {t for batch in (*acked.values(), *unacked.values()) for t in batch}
    assert ids == expected and total == len(expected)  # every row, exactly once


def _request_id(
    http: httpx.Client, url: str, token: str, n: int, acked: dict[int, list[str]]
) -> str:
    """The request id of acknowledged batch ``n``, by replaying its Idempotency-Key."""
    r = send(http, url, token, n, acked[n])
    assert r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"
    return str(r.json()["request_id"])
