"""Logged bandit data: rounds of (context, action, position, reward, propensity).

:class:`LoggedBandit` holds the arrays the off-policy estimators of
:mod:`signalloop.allocate.ope` read; :func:`load_obd` reads the Open Bandit Dataset
(ZOZOTOWN) logs into one, with errors that name the file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalloop.errors import InputError, UsageError

REQUIRED_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
USER_FEATURE_PREFIX = "user_feature"
AFFINITY_PREFIX = "user-item_affinity_"

# --------------------------------------------------------------------------------------
# logged data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedBandit:
    """Logged bandit feedback: one row a round.

    Parameters
    ----------
    actions
        Logged action per round, integers in ``0 .. n_actions - 1``, shape (n_rounds,).
    positions
        Logged position (slot) per round, integers in ``0 .. n_positions - 1`` (the Open
        Bandit position 1 is 0), shape (n_rounds,).
    rewards
        Observed reward (click) per round, shape (n_rounds,).
    pscore
        Propensity of the logged action under the logging policy, in (0, 1], shape
        (n_rounds,).
    n_actions
        Number of actions.
    n_positions
        Number of positions.
    contexts
        Context features per round, shape (n_rounds, n_features); for the Open Bandit data
        the one-hot encoded user features (first level dropped, as obp does).
    timestamps
        Time of each round (``datetime64[ns]``, UTC), shape (n_rounds,).
    affinity
        Optional user-item affinity per round and action, shape (n_rounds, n_actions).
    context_names
        Names of the context columns.
    source
        Where the logs came from (a file path or a description).
    """

    actions: np.ndarray
    positions: np.ndarray
    rewards: np.ndarray
    pscore: np.ndarray
    n_actions: int
    n_positions: int
    contexts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="datetime64[ns]"))
    affinity: np.ndarray | None = None
    context_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        for name in ("positions", "rewards", "pscore"):
            if getattr(self, name).shape != (n,):
                raise UsageError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if n and (self.actions.min() < 0 or self.actions.max() >= self.n_actions):
            raise UsageError(f"actions must be in 0..{self.n_actions - 1}")
        if n and (self.positions.min() < 0 or self.positions.max() >= self.n_positions):
            raise UsageError(f"positions must be in 0..{self.n_positions - 1}")
        if n and (np.any(self.pscore <= 0) or np.any(self.pscore > 1)):
            raise UsageError("pscore must be in (0, 1]")

    @classmethod
    def from_arrays(
        cls,
        actions: Any,
        rewards: Any,
        pscore: Any,
        positions: Any = None,
        *,
        n_actions: int | None = None,
        n_positions: int | None = None,
        contexts: Any = None,
        source: str = "arrays",
    ) -> LoggedBandit:
        """Build logs from plain arrays (positions default to 0, sizes to max + 1).

        Parameters
        ----------
        actions, rewards, pscore
            Logged action, reward and propensity per round.
        positions
            Logged position per round (0-based); all 0 when omitted.
        n_actions, n_positions
            Sizes; inferred as ``max + 1`` when omitted.
        contexts
            Context features, shape (n_rounds, n_features); empty when omitted.
        source
            A description of where the logs came from.

        Returns
        -------
        LoggedBandit
            The logs.

        Examples
        --------
        >>> lb = LoggedBandit.from_arrays([0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5])
        >>> lb.n_rounds, lb.n_actions, lb.n_positions
        (3, 2, 1)
        """
        a = np.asarray(actions, dtype=np.int64)
        n = a.shape[0]
        pos = np.zeros(n, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        ctx = np.zeros((n, 0)) if contexts is None else np.asarray(contexts, dtype=float)
        return cls(
            actions=a,
            positions=pos,
            rewards=np.asarray(rewards, dtype=float),
            pscore=np.asarray(pscore, dtype=float),
            n_actions=int(n_actions if n_actions is not None else (a.max() + 1 if n else 1)),
            n_positions=int(
                n_positions if n_positions is not None else (pos.max() + 1 if n else 1)
            ),
            contexts=ctx,
            timestamps=np.zeros(n, dtype="datetime64[ns]"),
            source=source,
        )

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return int(self.actions.shape[0])

    def subset(self, index: np.ndarray | slice) -> LoggedBandit:
        """The rounds selected by ``index`` (a slice, integer or boolean array).

        Parameters
        ----------
        index
            Which rounds to keep.

        Returns
        -------
        LoggedBandit
            The selected rounds, with the same action and position sets.
        """
        ctx = self.contexts[index] if self.contexts.shape[0] == self.n_rounds else self.contexts
        ts = (
            self.timestamps[index] if self.timestamps.shape[0] == self.n_rounds else self.timestamps
        )
        return LoggedBandit(
            actions=self.actions[index],
            positions=self.positions[index],
            rewards=self.rewards[index],
            pscore=self.pscore[index],
            n_actions=self.n_actions,
            n_positions=self.n_positions,
            contexts=ctx,
            timestamps=ts,
            affinity=None if self.affinity is None else self.affinity[index],
            context_names=self.context_names,
            source=self.source,
        )


def _first_bad(mask: np.ndarray) -> int:
    """1-based file line of the first True in ``mask`` (the header is line 1)."""
    return int(np.flatnonzero(mask)[0]) + 2


def load_obd(folder: str | Path, campaign: str = "all") -> LoggedBandit:
    """Read one Open Bandit Dataset log (one logging policy, one campaign).

    The file is ``folder / campaign / f"{campaign}.csv"`` (e.g.
    ``open_bandit_sample/random/all/all.csv``), with its unnamed first index column. Rounds
    are sorted by timestamp (stable), as obp's ``OpenBanditDataset`` does.

    Parameters
    ----------
    folder
        The logging policy's folder (``.../open_bandit_sample/random`` or ``.../bts``).
    campaign
        ``all``, ``men`` or ``women``.

    Returns
    -------
    LoggedBandit
        Actions are the item ids; positions are 0-based (file position 1 is 0); rewards
        the clicks; pscore the logged ``propensity_score``; contexts the one-hot encoded
        ``user_feature_*`` columns (first level dropped, as obp does); affinity the
        ``user-item_affinity_*`` columns when present. ``n_actions`` is the number of items
        in ``item_context.csv`` when that file is there, else the largest item id + 1.

    Raises
    ------
    InputError
        The file is missing or unreadable, a required column is missing, or a value is out
        of range (the message names the file, line and column).
    """
    path = Path(folder) / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise InputError(
            f"missing Open Bandit log file (expected {campaign}/{campaign}.csv under {folder})",
            file=path,
        )
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as CSV: {exc}", file=path) from exc
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise InputError(
                f"missing required column (have: {list(df.columns)[:8]}...)", file=path, column=col
            )
    user_cols = [c for c in df.columns if str(c).startswith(USER_FEATURE_PREFIX)]
    if not user_cols:
        raise InputError("no user feature columns", file=path, column=f"{USER_FEATURE_PREFIX}_*")

    ts = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    if ts.isna().any():
        bad = ts.isna().to_numpy()
        raise InputError(
            "not an ISO 8601 timestamp", file=path, line=_first_bad(bad), column="timestamp"
        )
    df = df.assign(_ts=ts, _line=np.arange(len(df)) + 2)
    df = df.sort_values("_ts", kind="stable").reset_index(drop=True)

    def numeric(col: str) -> np.ndarray:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).any():
            line = int(df["_line"].to_numpy()[np.isnan(values)][0])
            raise InputError("not a number", file=path, line=line, column=col)
        return values

    def check(ok: np.ndarray, col: str, what: str) -> None:
        if not ok.all():
            line = int(df["_line"].to_numpy()[~ok][0])
            raise InputError(what, file=path, line=line, column=col)

    item = numeric("item_id")
    check((item >= 0) & (item == np.round(item)), "item_id", "item id must be an integer >= 0")
    position = numeric("position")
    check(
        (position >= 1) & (position == np.round(position)),
        "position",
        "position must be an integer >= 1",
    )
    click = numeric("click")
    check(np.isin(click, (0.0, 1.0)), "click", "click must be 0 or 1")
    pscore = numeric("propensity_score")
    check((pscore > 0) & (pscore <= 1), "propensity_score", "propensity must be in (0, 1]")

    actions = item.astype(np.int64)
    n_actions = int(actions.max()) + 1 if len(actions) else 1
    item_path = path.parent / "item_context.csv"
    if item_path.is_file():
        n_items = len(pd.read_csv(item_path, index_col=0))
        if n_items < n_actions:
            raise InputError(
                f"item_context.csv lists {n_items} items but item ids reach {n_actions - 1}",
                file=item_path,
            )
        n_actions = n_items

    dummies = pd.get_dummies(df[user_cols].astype(str), drop_first=True, dtype=float)
    aff_cols = [f"{AFFINITY_PREFIX}{j}" for j in range(n_actions)]
    affinity = (
        df[aff_cols].to_numpy(dtype=float) if all(c in df.columns for c in aff_cols) else None
    )
    positions = position.astype(np.int64) - 1
    return LoggedBandit(
        actions=actions,
        positions=positions,
        rewards=click,
        pscore=pscore,
        n_actions=n_actions,
        n_positions=int(positions.max()) + 1 if len(positions) else 1,
        contexts=dummies.to_numpy(dtype=float),
        timestamps=df["_ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"),
        affinity=affinity,
        context_names=tuple(str(c) for c in dummies.columns),
        source=str(path),
    )
