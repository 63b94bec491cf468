"""JSON text of signalloop's documents: the report, ``--json`` output, the API's large answers.

One encoder (orjson, in C) for every large document: Python's own encoder has no C path
once it indents, and a 1,000-campaign report (over 100 MB of JSON) took it about 20 s.
NaN and infinities become ``null``; dates and datetimes are written as ``str()`` writes them
(``2026-03-31``, ``2026-03-31 00:00:00``); anything else unknown goes through ``str``.

>>> import math
>>> from datetime import date
>>> print(dumps({"a": [1, math.nan], "d": date(2026, 3, 31), 3: "x"}))
{
  "a": [
    1,
    null
  ],
  "d": "2026-03-31",
  "3": "x"
}
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_SERIALIZE_NUMPY
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def dumps(doc: Any) -> str:
    """``doc`` as indented JSON text (no trailing newline)."""
    return orjson.dumps(doc, default=str, option=_OPTIONS).decode()


def write(doc: Any, path: Any) -> None:
    """``doc`` as indented JSON into the file ``path``, with a final newline."""
    with open(path, "wb") as f:
        f.write(orjson.dumps(doc, default=str, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE))
