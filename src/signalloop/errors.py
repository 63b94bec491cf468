"""One exception tree for the whole package.

Every message says what was expected and what was got. The CLI maps
:class:`UsageError` and :class:`InputError` to exit code 2; nothing else in the
package decides exit codes.
"""

from __future__ import annotations

import errno
from pathlib import Path


class SignalloopError(Exception):
    """Base class of every error signalloop raises on purpose."""


class UsageError(SignalloopError):
    """The command or call was used wrongly (unknown name, bad option value)."""


class ConfigError(UsageError):
    """A profile, mapping file or ``signalloop.toml`` is malformed."""


class InputError(SignalloopError):
    """An input file cannot be read as the kind it was declared to be.

    Parameters
    ----------
    message
        What was expected and what was found.
    file
        The file, if known.
    line
        1-based line in the file (the header is line 1), if known.
    column
        The column involved, if any.

    >>> str(InputError("unterminated quote", file="a.csv", line=3))
    'a.csv, line 3: unterminated quote'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class CredentialError(ConfigError):
    """A platform credential is missing, invalid or expired (the message names the fix).

    The message never contains the credential itself.
    """


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk is full (an ``OSError`` or DuckDB's ``IOException``).

    >>> import errno
    >>> disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> disk_full(OSError(errno.EACCES, "Permission denied"))
    False
    """
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    import duckdb  # (imported here: the error tree itself needs no database)

    return isinstance(exc, duckdb.IOException) and "no space left" in str(exc).lower()


def disk_full_message(exc: BaseException, where: str, again: str) -> str:
    """What to tell the user of a full disk (:func:`disk_full`): what happened, that the
    write was rolled back, what to free (``where`` names the workspace as the caller knows
    it) and what to do then (``again``)."""
    return (
        f"no space left on the disk: {exc}. The step that was writing is rolled back; free "
        f"space where {where} and DuckDB's temporary files live, then {again}"
    )
