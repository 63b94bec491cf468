"""The model operations the CLI and notebooks call: fit, score, backtest (workspace or file).

Each returns one JSON-ready dict; the CLI only parses options, calls these and formats.

>>> default_model_dir("marketing.duckdb", "sql")
PosixPath('marketing.models/sql')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from signalloop.config import Settings
from signalloop.errors import UsageError
from signalloop.models.backtest import HOLDOUT, MAX_EVAL_ROWS, Progress, backtest
from signalloop.models.card import config_of, load_model, save_model, schema_of
from signalloop.models.estimator import ConversionModel
from signalloop.models.features import TrainingFrame, build_frame, horizon_for
from signalloop.models.metrics import reliability_table, scores
from signalloop.models.table import read_table, table_frame
from signalloop.store import Workspace

#: The backtest saved beside a model by :func:`refresh_workspace` (what diagnose reads).
BACKTEST_FILE = "backtest.json"


def default_model_dir(db: str, outcome: str) -> Path:
    """Where a workspace's model for ``outcome`` lives: ``<workspace stem>.models/<outcome>``."""
    if db == ":memory:":
        raise UsageError("an in-memory workspace has nowhere to keep models: pass --model-dir")
    p = Path(db)
    return p.with_name(p.stem + ".models") / outcome


def model_config(
    outcome: str, settings: Settings, horizon_days: int | None = None, random_state: int = 0
) -> dict[str, Any]:
    """The config a model fitted now would carry (what its card's ``config_hash`` hashes)."""
    params = ConversionModel(random_state=random_state).get_params()
    return config_of(outcome, horizon_for(outcome, settings, horizon_days), settings.funnel, params)


def _clock_days(tf: TrainingFrame) -> np.ndarray:
    ts = tf.frame[tf.time]
    out: np.ndarray = ((ts - ts.min()).dt.total_seconds() / 86400.0).to_numpy(dtype=float)
    return out


def _feedback(ws: Workspace, outcome: str, as_of: date | None, tf: TrainingFrame) -> dict[str, Any]:
    """Feedback depth per campaign, and flags for the campaigns this model learns from."""
    from signalloop.models.depth import feedback_depth, shallow_model

    depth = feedback_depth(ws, as_of=as_of)
    # (the distinct ids first: each of a 2M-row frame's ids made a string one by one, 2 s)
    used = set(tf.frame["campaign_id"].dropna().unique().astype(str))
    return {
        "campaigns": depth,
        "flags": shallow_model(outcome, [d for d in depth if d["campaign_id"] in used]),
    }


def _training_frame(
    ws: Workspace,
    outcome: str,
    as_of: date | None,
    settings: Settings | None,
    horizon_days: int | None,
    random_state: int,
) -> TrainingFrame:
    """The mature units to learn from (sampled with ``random_state`` over the frame cap)."""
    return build_frame(
        ws,
        outcome,
        as_of=as_of,
        settings=settings,
        horizon_days=horizon_days,
        random_state=random_state,
    )


def _frame_info(tf: TrainingFrame) -> dict[str, Any]:
    """Rows and positives are the account's mature units (what a sampled frame stands for);
    ``sample`` says how the frame was sampled (``None``: every unit is in it)."""
    units, positives = tf.units
    return {
        "unit": tf.unit,
        "rows": units,
        "positives": positives,
        "window": [tf.window[0].isoformat(), tf.window[1].isoformat()],
        "censored": tf.censored,
        "excluded": tf.excluded,
        "sample": tf.sample,
    }


def fit_workspace(
    ws: Workspace,
    outcome: str,
    *,
    folder: str | Path,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    random_state: int = 0,
) -> dict[str, Any]:
    """Fit the ``outcome`` model on every mature unit and save it with its card.

    The card's metrics come from a time-ordered check made first: the same model trained on
    the earliest 70% of units and scored on the latest 30%.
    """
    settings = settings or Settings()
    tf = _training_frame(ws, outcome, as_of, settings, horizon_days, random_state)
    template = ConversionModel(random_state=random_state)
    return _fit_frame(ws, outcome, tf, template, folder, as_of, settings, horizon_days)


def _fit_frame(
    ws: Workspace,
    outcome: str,
    tf: TrainingFrame,
    template: ConversionModel,
    folder: str | Path,
    as_of: date | None,
    settings: Settings,
    horizon_days: int | None,
) -> dict[str, Any]:
    """:func:`fit_workspace` on a frame already built: the 70/30 check, the full fit, saved."""
    X, y, w = tf.frame[tf.features], tf.frame[tf.target].to_numpy(dtype=int), tf.weights()
    cut = round(len(y) * (1 - HOLDOUT))
    w_head, w_tail = (None, None) if w is None else (w[:cut], w[cut:])
    check = ConversionModel(**template.get_params()).fit(X.iloc[:cut], y[:cut], w_head)
    p = check.predict(X.iloc[cut:])
    holdout: dict[str, Any] = dict(scores(y[cut:], p, w_tail))
    holdout["reliability"] = reliability_table(y[cut:], p, weight=w_tail)
    model = ConversionModel(**template.get_params()).fit(X, y, w)
    return _save_fit(ws, outcome, tf, model, holdout, folder, as_of, settings, horizon_days)


def _save_fit(
    ws: Workspace,
    outcome: str,
    tf: TrainingFrame,
    model: ConversionModel,
    holdout: dict[str, Any],
    folder: str | Path,
    as_of: date | None,
    settings: Settings,
    horizon_days: int | None,
    feedback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save ``model`` with its card (``holdout``: the time-split check) and describe it."""
    horizon = horizon_for(outcome, settings, horizon_days)
    config = config_of(outcome, horizon, settings.funnel, model.get_params())
    info = _frame_info(tf)
    info["as_of"] = str(as_of) if as_of else None
    feedback = feedback or _feedback(ws, outcome, as_of, tf)
    card = save_model(
        folder,
        model,
        config=config,
        schema=schema_of(tf.features, tf.categorical),
        data=info,
        metrics={"time_split": holdout, "feedback_flags": feedback["flags"]},
    )
    return {
        "model_dir": str(folder),
        "outcome": outcome,
        **info,
        "features": tf.features,
        "categorical": tf.categorical,
        "calibration": model.calibration_method_,
        "time_split": holdout,
        "feedback": feedback,
        "config_hash": card["config_hash"],
        "schema_hash": card["schema_hash"],
    }


def refresh_workspace(
    ws: Workspace,
    outcome: str,
    *,
    folder: str | Path,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    random_state: int = 0,
    workers: int | None = None,
    cadences: Sequence[float] | None = None,
    progress: Progress | None = None,
    model: ConversionModel | None = None,
    max_eval_rows: int | None = MAX_EVAL_ROWS,
) -> dict[str, Any]:
    """Fit, backtest and save the ``outcome`` model from one frame: what a run does per outcome.

    One :func:`~signalloop.models.features.build_frame`, and one pass of
    :func:`~signalloop.models.backtest.backtest` whose fits (random split, time split, the
    cadence refits and the final model on every unit) share its worker processes. The time
    split doubles as the card's 70/30 check: it is the same model on the same rows as
    :func:`fit_workspace`'s. The model and its card are saved in ``folder``, the backtest
    beside them as ``backtest.json``. ``model`` (an unfitted template, default
    :class:`ConversionModel` with ``random_state``) and ``max_eval_rows`` are passed to the
    backtest; the card's config carries the template's parameters.

    Returns
    -------
    dict
        What :func:`fit_workspace` returns (``time_split`` is the backtest's), plus
        ``backtest``: the document saved as ``backtest.json``. When the frame is too small to
        backtest (fewer than 200 units or 20 of either outcome) but not to fit, the model is
        fitted and saved as :func:`fit_workspace` does it, from the same frame, ``backtest``
        is ``None``, ``backtest_error`` says why, and ``backtest.json`` is left as it was.
    """
    settings = settings or Settings()
    template = model or ConversionModel(random_state=random_state)
    tf = _training_frame(ws, outcome, as_of, settings, horizon_days, template.random_state)
    kept: list[ConversionModel] = []
    try:
        doc = _backtest_frame(
            ws,
            outcome,
            tf,
            as_of,
            template,
            workers,
            cadences,
            progress,
            max_eval_rows,
            kept.append,
        )
    except UsageError as exc:
        out = _fit_frame(ws, outcome, tf, template, folder, as_of, settings, horizon_days)
        return {**out, "backtest": None, "backtest_error": str(exc)}
    holdout = {k: v for k, v in doc["time_split"].items() if k != "calibration"}
    out = _save_fit(
        ws, outcome, tf, kept[0], holdout, folder, as_of, settings, horizon_days, doc["feedback"]
    )
    text = json.dumps(doc, indent=2, default=str, allow_nan=False)
    (Path(folder) / BACKTEST_FILE).write_text(text + "\n")
    out["backtest"] = doc
    return out


def score_workspace(
    ws: Workspace,
    outcome: str,
    *,
    folder: str | Path,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
) -> dict[str, Any]:
    """Score the units whose outcome is not known yet with the saved ``outcome`` model.

    The model is loaded only if its config and feature schema match what the workspace gives
    now (see :func:`~signalloop.models.card.load_model`).
    """
    settings = settings or Settings()
    tf = build_frame(
        ws,
        outcome,
        as_of=as_of,
        settings=settings,
        horizon_days=horizon_days,
        include_censored=True,
    )
    horizon = horizon_for(outcome, settings, horizon_days)
    # the model's own parameters come with it; what must match is what it means here
    model, card = load_model(
        folder,
        config=config_of(outcome, horizon, settings.funnel, card_params(folder)),
        schema=schema_of(tf.features, tf.categorical),
    )
    f = tf.frame
    open_units = f[f[tf.target] < 0]  # label -1: the outcome has not had time to arrive
    p = model.predict(open_units[tf.features]) if len(open_units) else np.array([])
    rows = [
        {
            tf.id_column: str(r[tf.id_column]),
            "campaign_id": r["campaign_id"],
            "ts": r[tf.time].isoformat(),
            "probability": round(float(pi), 6),
        }
        for (_, r), pi in zip(open_units.iterrows(), p, strict=True)
    ]
    by_campaign: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = by_campaign.setdefault(r["campaign_id"], {"units": 0, "expected": 0.0})
        c["units"] += 1
        c["expected"] += r["probability"]
    return {
        "outcome": outcome,
        "model_dir": str(folder),
        "trained": card["created"],
        "unit": tf.unit,
        "scored": len(rows),
        "campaigns": [
            {"campaign_id": k, "units": v["units"], "expected": round(v["expected"], 2)}
            for k, v in sorted(by_campaign.items())
        ],
        "units": rows,
    }


def card_params(folder: str | Path) -> dict[str, Any]:
    """The model parameters a saved card was fitted with (they are part of its config)."""
    from signalloop.models.card import read_card

    params: dict[str, Any] = read_card(folder)["config"]["params"]
    return params


def backtest_workspace(
    ws: Workspace,
    outcome: str,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    random_state: int = 0,
    workers: int | None = None,
    cadences: Sequence[float] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`~signalloop.models.backtest.backtest` on the workspace's ``outcome`` frame.

    The clock is the unit time in days, so the recommended cadence (chosen among
    ``cadences``, default :func:`~signalloop.models.backtest.candidate_cadences`) is in days.
    """
    tf = _training_frame(ws, outcome, as_of, settings, horizon_days, random_state)
    template = ConversionModel(random_state=random_state)
    return _backtest_frame(ws, outcome, tf, as_of, template, workers, cadences, progress)


def _backtest_frame(
    ws: Workspace,
    outcome: str,
    tf: TrainingFrame,
    as_of: date | None,
    template: ConversionModel,
    workers: int | None,
    cadences: Sequence[float] | None,
    progress: Progress | None,
    max_eval_rows: int | None = MAX_EVAL_ROWS,
    final: Callable[[ConversionModel], None] | None = None,
) -> dict[str, Any]:
    """The backtest document of a workspace frame (``final`` as in :func:`backtest`)."""
    doc = backtest(
        tf.frame[tf.features],
        tf.frame[tf.target].to_numpy(dtype=int),
        clock=_clock_days(tf),
        unit="days",
        target=outcome,
        model=template,
        random_state=template.random_state,
        workers=workers,
        cadences=cadences,
        progress=progress,
        max_eval_rows=max_eval_rows,
        final=final,
        sample_weight=tf.weights(),
    )
    doc["source"] = "workspace"
    info = _frame_info(tf)
    doc.update({k: v for k, v in info.items() if k not in ("rows", "positives", "unit")})
    doc["row_unit"] = info["unit"]  # "unit" is the cadence's (days)
    doc["feedback"] = _feedback(ws, outcome, as_of, tf)
    return doc


def backtest_file(
    path: str | Path,
    *,
    target: str,
    positive: str | None = None,
    time: str | None = None,
    time_order: str | None = None,
    exclude: list[str] | None = None,
    random_state: int = 0,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`~signalloop.models.backtest.backtest` on a table file (a CRM lead export)."""
    df = read_table(path)
    f = table_frame(
        df,
        target=target,
        positive=positive,
        time=time,
        time_order=time_order,
        exclude=exclude,
        source=str(path),
    )
    doc = backtest(
        f.X,
        f.y,
        clock=f.clock,
        unit=f.unit,
        target=target,
        random_state=random_state,
        workers=workers,
        progress=progress,
    )
    doc.update(source=str(path), positive=f.positive, features=f.features, ignored=f.ignored)
    return doc


def route_workspace(
    ws: Workspace,
    *,
    folder: str | Path,
    outcome: str = "sql",
    as_of: date | None = None,
    threshold: float | None = None,
    settings: Settings | None = None,
    required: tuple[str, ...] = ("user_id",),
    horizon_days: int | None = None,
) -> dict[str, Any]:
    """Route the open leads with the saved ``outcome`` model (see
    :func:`~signalloop.models.route.route_leads`); the model must match the settings now."""
    from signalloop.models.route import route_leads

    settings = settings or Settings()
    horizon = horizon_for(outcome, settings, horizon_days)
    model, card = load_model(
        folder, config=config_of(outcome, horizon, settings.funnel, card_params(folder))
    )
    doc = route_leads(
        ws,
        model,
        as_of=as_of,
        threshold=threshold,
        settings=settings,
        required=required,
        outcome=outcome,
        horizon_days=horizon_days,
    )
    doc["model_dir"] = str(folder)
    doc["trained"] = card["created"]
    return doc
