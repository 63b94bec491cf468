"""Write one benchmark's section into BENCHMARKS.md, between its begin/end markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


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
