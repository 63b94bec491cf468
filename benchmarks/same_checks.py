"""The check suite's results, drop after drop, with this checkout's code and another's.

A change meant to make the checks cheaper (reading stored aggregates instead of every row)
must not change what they find. This runs the checks after each daily drop of the accounts
``tests/test_attribution_incremental.py`` uses (every simulated shape; the full and crm shapes
with every fault; a full account with an outage, a CRM sync dropout and click-id loss), as of
each drop's last day and nine days earlier, once with this checkout's code and once with the
code in ``--against`` (another checkout's ``src``, e.g. from ``git worktree add``), each in a
fresh workspace that it keeps current drop by drop, and compares the two reports (timings
aside). Exit 1 when any differs.

Run::

    git worktree add /tmp/wt-old <commit>
    .venv/bin/python benchmarks/same_checks.py --against /tmp/wt-old/src
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The faults of the extra account: an outage, a CRM sync dropout and click-id loss.
EXTRA = ("tracking_outage@c02:8-12", "crm_sync_dropout@c03:14-18", "click_id_loss@c01:10-27")


def _cases() -> list[tuple[str, tuple[str, ...]]]:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import drop_cases

    return [*drop_cases(), ("full", EXTRA)]


def write_drops(folder: Path, seed: int) -> None:
    """Simulate every case and cut it into daily drops under ``folder/case<i>``."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import simulated_drops

    for i, (shape, faults) in enumerate(_cases()):
        d = folder / f"case{i}"
        d.mkdir(parents=True)
        drops = simulated_drops(d, shape, faults, seed=seed)
        listed = [{k: str(v) for k, v in x.items()} for x in drops]
        (d / "drops.json").write_text(json.dumps(listed))


def emit(folder: Path, out: Path) -> None:
    """Ingest each case's drops into a fresh workspace and write the checks' reports."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import DROP_CUTS, DROP_DAYS, ingest_drop

    from signalloop.checks.engine import run_checks
    from signalloop.store import Workspace

    ends = [date.fromisoformat(c) - timedelta(days=1) for c in DROP_CUTS]
    ends.append(date(2026, 1, DROP_DAYS))
    found: dict[str, Any] = {}
    for i, (shape, faults) in enumerate(_cases()):
        d = folder / f"case{i}"
        drops = [
            {k: Path(v) for k, v in x.items()} for x in json.loads((d / "drops.json").read_text())
        ]
        db = d / f"ws-{os.getpid()}.duckdb"
        with Workspace(db) as ws:
            for j, drop in enumerate(drops):
                ingest_drop(ws, drop)
                for as_of in (ends[j], ends[j] - timedelta(days=9)):
                    doc = run_checks(ws, as_of=as_of).to_dict()
                    doc.pop("timings", None)
                    text = json.dumps(doc, sort_keys=True, default=str)
                    key = f"{shape}+{len(faults)} faults, drop {j + 1}, as of {as_of}"
                    found[key] = {
                        "hash": hashlib.sha256(text.encode()).hexdigest(),
                        "findings": len(doc["findings"]),
                        "doc": text,
                    }
        db.unlink()
    out.write_text(json.dumps(found))


def _run(src: Path, folder: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--emit", str(out), "--data", str(folder)]
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="the other checkout's src folder")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--emit", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.emit:
        emit(args.data, args.emit)
        return 0
    if args.against is None or not (args.against / "signalloop").is_dir():
        ap.error("--against must be another checkout's src folder (holding signalloop/)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_drops(folder / "data", args.seed)
        mine, theirs = folder / "mine.json", folder / "theirs.json"
        _run(ROOT / "src", folder / "data", mine)
        _run(args.against, folder / "data", theirs)
        a, b = json.loads(mine.read_text()), json.loads(theirs.read_text())
    differ = [k for k in a if a[k]["hash"] != b.get(k, {}).get("hash")]
    findings = sum(v["findings"] for v in a.values())
    print(f"{len(a)} check runs, {findings} findings: {len(differ)} differ from {args.against}")
    for k in differ[:10]:
        mine_doc, their_doc = json.loads(a[k]["doc"]), json.loads(b[k]["doc"])
        parts = sorted(p for p in mine_doc if mine_doc[p] != their_doc.get(p))
        print(f"  {k}: {', '.join(parts)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
