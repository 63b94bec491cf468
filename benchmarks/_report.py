"""Write one benchmark's section into BENCHMARKS.md, between its begin/end markers."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def child(one: Callable[[str, Path, Path], Any]) -> bool:
    """Whether this process is a measurement's own (``--one HOW STORE NEW_DAY``, as the
    benchmarks that time each method in a fresh process start it); if so, ``one``'s result
    is printed as JSON on stdout."""
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
        return True
    return False


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def machine(packages: Sequence[str] = ()) -> str:
    """The machine line of a section header: CPU, cores, RAM, kernel, Python, ``packages``."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    pk = []
    for p in packages:
        try:
            pk.append(f"{p} {importlib.metadata.version(p)}")
        except importlib.metadata.PackageNotFoundError:
            pk.append(f"{p} not installed")
    cpu = f"{platform.machine()}{' (' + model + ')' if model else ''}"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}" + "".join(f", {x}" for x in pk)
    )


def write_section(block: str, begin: str, end: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between ``begin`` and ``end`` (inclusive) with ``block``.

    ``block`` starts with ``begin`` and ends with ``end``. A section not there yet is
    appended; every other section of the file stays as it is.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def publish(block: str, begin: str, end: str, *, write: bool, raw: Any = None) -> None:
    """Print a section (into BENCHMARKS.md too when ``write``), and ``raw`` as JSON on
    stderr."""
    if write:
        write_section(block, begin, end)
    print(block)
    if raw is not None:
        print(json.dumps(raw, default=str), file=sys.stderr)


@contextmanager
def ingested(result: Any) -> Iterator[Any]:
    """A fresh in-memory workspace holding a simulation's five files, ingested as a user would.

    Ingest runs with a fixed "now" in the future so the simulated dates are never "future".
    """
    from signalloop import simulate as sim
    from signalloop.contract import KINDS
    from signalloop.ingest import ingest_file
    from signalloop.store import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        paths = sim.write(result, Path(tmp))
        with Workspace(":memory:") as ws:
            for kind in KINDS:
                ingest_file(ws, kind, paths[kind], now=datetime(2030, 1, 1))
            yield ws
