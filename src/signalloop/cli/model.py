"""``signalloop model fit|refresh|score|backtest|route``: conversion-probability models (library:
:mod:`signalloop.models`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from signalloop.cli.common import (
    AsOfOption,
    ConfigOption,
    DbOption,
    JsonOption,
    _estimate,
    _parse_date,
    emit_json,
    err,
    handle_errors,
    out,
    print_model,
    progress_bar,
)
from signalloop.errors import UsageError

model_app = typer.Typer(
    help="Conversion-probability models: fit, score, backtest (workspace or file), route leads.",
    no_args_is_help=True,
)

OutcomeOption = Annotated[
    str,
    typer.Option("--outcome", help="How deep the label reaches: conversion, sql, won or value."),
]
HorizonOption = Annotated[
    int | None,
    typer.Option(
        "--horizon-days",
        help="Days a unit's outcome may take to arrive before it counts as a negative "
        "\\[default: conversion 7, value 14, sql 30, won 60].",
        show_default=False,
    ),
]
ModelDirOption = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        help="Folder of the saved model \\[default: `<workspace>.models/<outcome>`].",
        show_default=False,
    ),
]


def _model_dir(db: str | None, outcome: str, model_dir: Path | None) -> Path:
    from signalloop.backends import local_path
    from signalloop.models.api import default_model_dir

    return model_dir or default_model_dir(local_path(db), outcome)


def _bar_progress(update: Callable[[str, float | None], None]) -> Callable[[str, int, int], None]:
    return lambda step, done, total: update(f"fitting models ({step})", done / total)


@model_app.command("fit")
@handle_errors
def model_fit(
    outcome: OutcomeOption = "conversion",
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the model for one outcome on the workspace and save it with its model card."""
    from signalloop.models.api import fit_workspace

    folder = _model_dir(db, outcome, model_dir)
    with err.status("fitting", spinner="dots"):
        doc = _estimate(
            lambda ws, day, settings: fit_workspace(
                ws, outcome, folder=folder, as_of=day, settings=settings, horizon_days=horizon_days
            ),
            as_of,
            db,
            config,
        )
    if as_json:
        emit_json(doc)
        return
    ts = doc["time_split"]
    out.print(
        f"fitted the {outcome} model on {doc['rows']:,} {doc['unit']}s "
        f"({doc['positives']:,} positive, {doc['censored']:,} too recent to label, "
        f"{doc['excluded']:,} in exclusion windows), {doc['window'][0][:10]} to "
        f"{doc['window'][1][:10]}; calibration {doc['calibration']}\n"
        f"time-ordered check (first 70% -> last 30%): AUC {_num(ts['auc'])}, log loss "
        f"{_num(ts['log_loss'])}, Brier {_num(ts['brier'])}, ECE {_num(ts['ece'])}\n"
        f"saved to {doc['model_dir']} (model card: card.json)",
        highlight=False,
    )
    for flag in doc["feedback"]["flags"]:
        out.print(f"[yellow]feedback:[/] {flag['message']}", highlight=False)


@model_app.command("refresh")
@handle_errors
def model_refresh(
    outcome: Annotated[
        list[str] | None,
        typer.Option(
            "--outcome",
            help="A model to refresh (repeatable) \\[default: \\[run] outcomes, else what the "
            "data supports, as `run` does].",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Refit every model, due or not.")] = False,
    as_of: AsOfOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refit and backtest the run's models that are due, as `run` does inline.

    With `[run] retrain = "separate"` the daily run only lists its due models and keeps
    using the saved ones: schedule this on its own (weekly, at night) to refit them where
    `run` reads them (`<workspace>.models/<outcome>`).
    """
    from signalloop.checks.base import default_as_of
    from signalloop.config import _MODEL_OUTCOMES, load_settings
    from signalloop.run import default_outcomes, refresh_models
    from signalloop.store import Workspace

    unknown = sorted(set(outcome or ()) - set(_MODEL_OUTCOMES))
    if unknown:
        raise UsageError(
            f"--outcome must be one of {', '.join(_MODEL_OUTCOMES)}, got {', '.join(unknown)}"
        )
    settings = load_settings(config)
    day = _parse_date(as_of, "--as-of")
    with (
        Workspace(db, read_only=True) as ws,
        progress_bar(not as_json or sys.stderr.isatty()) as progress,
    ):
        when = day or default_as_of(ws)
        if when is None:
            raise UsageError("the workspace holds no data yet: ingest something first")
        chosen = tuple(dict.fromkeys(outcome)) if outcome else None
        outcomes = chosen or settings.run.outcomes or default_outcomes(ws)
        entries = refresh_models(ws, when, settings, outcomes, progress, force=force)
    doc = {"as_of": when.isoformat(), "models": entries}
    if as_json:
        emit_json(doc)
        return
    if not entries:
        out.print("No models: the workspace has no conversions yet.")
    for m in entries:
        print_model(m, auc=True)


def _num(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


@model_app.command("score")
@handle_errors
def model_score(
    outcome: OutcomeOption = "conversion",
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    limit: Annotated[int, typer.Option(help="Units to show, highest first (0 = all).")] = 20,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score the units whose outcome has not arrived yet with the saved model."""
    from signalloop.models.api import score_workspace

    folder = _model_dir(db, outcome, model_dir)
    doc = _estimate(
        lambda ws, day, settings: score_workspace(
            ws, outcome, folder=folder, as_of=day, settings=settings, horizon_days=horizon_days
        ),
        as_of,
        db,
        config,
    )
    if as_json:
        emit_json(doc)
        return
    t = Table(
        title=f"{outcome} expected among {doc['scored']:,} open {doc['unit']}s",
        title_justify="left",
    )
    for col in ("campaign", "units", "expected"):
        t.add_column(col, justify="left" if col == "campaign" else "right")
    for c in doc["campaigns"]:
        t.add_row(c["campaign_id"], f"{c['units']:,}", f"{c['expected']:,.1f}")
    out.print(t)
    units = sorted(doc["units"], key=lambda u: -u["probability"])
    u = Table(title="highest probabilities", title_justify="left")
    idc = (
        next(k for k in units[0] if k not in ("campaign_id", "ts", "probability")) if units else ""
    )
    for col in (idc, "campaign", "time", "probability"):
        u.add_column(col, justify="right" if col == "probability" else "left")
    for r in units[: limit or None]:
        u.add_row(str(r[idc]), r["campaign_id"], r["ts"][:16], f"{r['probability']:.3f}")
    if units:
        out.print(u)


@model_app.command("backtest")
@handle_errors
def model_backtest(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="A table (CSV, delimiter sniffed, or Parquet); omit for the workspace."
        ),
    ] = None,
    outcome: OutcomeOption = "conversion",
    target: Annotated[
        str | None, typer.Option(help="FILE: the outcome column.", show_default=False)
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(help="FILE: the target value that counts as the outcome.", show_default=False),
    ] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="FILE: a time column to order by.")
    ] = None,
    time_order: Annotated[
        str | None,
        typer.Option("--time-order", help="FILE: 'row' when the rows are already in time order."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="FILE: a column not to learn from (repeatable)."),
    ] = None,
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Random split against the time-ordered live holdout, drift, and a retraining cadence."""
    from signalloop.config import load_settings
    from signalloop.models.api import backtest_file, backtest_workspace
    from signalloop.store import Workspace

    with progress_bar(not as_json or sys.stderr.isatty()) as update:
        if file is not None:
            if target is None:
                raise UsageError("model backtest FILE needs --target COLUMN (the outcome column)")
            doc = backtest_file(
                file,
                target=target,
                positive=positive,
                time=time,
                time_order=time_order,
                exclude=exclude,
                progress=_bar_progress(update),
            )
        else:
            if target or positive or time or time_order or exclude:
                raise UsageError(
                    "--target, --positive, --time, --time-order and --exclude are for a FILE; "
                    "the workspace backtest takes --outcome"
                )
            settings = load_settings(config)
            with Workspace(db, read_only=True) as ws:
                doc = backtest_workspace(
                    ws,
                    outcome,
                    as_of=_parse_date(as_of, "--as-of"),
                    settings=settings,
                    horizon_days=horizon_days,
                    progress=_bar_progress(update),
                )
            # beside a saved model of this outcome, the backtest is its cadence evidence (lens)
            folder = _model_dir(db, outcome, None)
            if (folder / "card.json").exists():
                (folder / "backtest.json").write_text(
                    json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n"
                )
                err.print(f"saved beside the model: {folder / 'backtest.json'}", highlight=False)
    if as_json:
        emit_json(doc)
    else:
        print_backtest(doc)


@model_app.command("route")
@handle_errors
def model_route(
    outcome: Annotated[
        str, typer.Option("--outcome", help="The lead outcome the model predicts: sql or won.")
    ] = "sql",
    threshold: Annotated[
        float | None,
        typer.Option(help="Probability from which a lead goes to sales \\[default: 2x base rate]."),
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option("--require", help="A CRM field that must be present (repeatable)."),
    ] = None,
    as_of: AsOfOption = None,
    horizon_days: HorizonOption = None,
    model_dir: ModelDirOption = None,
    limit: Annotated[int, typer.Option(help="Leads to show (0 = all).")] = 30,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Route open leads to sales, review or nurture: probability plus CRM-stage guardrails."""
    from signalloop.models.api import route_workspace

    folder = _model_dir(db, outcome, model_dir)
    doc = _estimate(
        lambda ws, day, settings: route_workspace(
            ws,
            folder=folder,
            outcome=outcome,
            as_of=day,
            threshold=threshold,
            settings=settings,
            required=tuple(require or ("user_id",)),
            horizon_days=horizon_days,
        ),
        as_of,
        db,
        config,
    )
    if as_json:
        emit_json(doc)
        return
    sm = doc["summary"]
    t = Table(
        title=f"lead routing as of {doc['as_of']} ({outcome} threshold {doc['threshold']:.3f}; "
        f"sales {sm.get('sales', 0)}, review {sm.get('review', 0)}, "
        f"nurture {sm.get('nurture', 0)})",
        title_justify="left",
    )
    for col in ("record", "campaign", "created", "probability", "route", "reasons"):
        t.add_column(col, justify="right" if col == "probability" else "left")
    colour = {"sales": "green", "review": "yellow", "nurture": "dim"}
    for lead in doc["leads"][: limit or None]:
        p = lead["probability"]
        t.add_row(
            lead["record_id"],
            lead["campaign_id"] or "-",
            str(lead["created"])[:16],
            "-" if p is None else f"{p:.3f}",
            f"[{colour.get(lead['route'], 'white')}]{lead['route']}[/]",
            "; ".join(r["message"] for r in lead["reasons"]),
        )
    out.print(t)


def print_backtest(doc: dict[str, Any]) -> None:
    """Render a backtest report as Rich tables."""
    t = Table(
        title=f"backtest of {doc['target']} on {doc['rows']:,} rows "
        f"({doc['positives']:,} positive)",
        title_justify="left",
    )
    for col in ("evaluation", "AUC", "log loss", "Brier", "ECE", "base rate"):
        t.add_column(col, justify="left" if col == "evaluation" else "right")
    for label, key in (
        ("random split 80/20", "random_split"),
        ("live: first 70% -> last 30%", "time_split"),
    ):
        s = doc[key]
        t.add_row(
            label,
            _num(s["auc"]),
            _num(s["log_loss"]),
            _num(s["brier"]),
            _num(s["ece"]),
            f"{s['base_rate']:.1%}",
        )
    out.print(t)
    g = doc["gap"]
    flag = "[red]overfit[/]" if doc["overfit"] else "[green]no overfitting flagged[/]"
    out.print(
        f"gap random - live: AUC {_num(g['auc'])}, log loss {_num(g['log_loss'])}: {flag} "
        f"(threshold {doc['overfit_threshold']})",
        highlight=False,
    )
    d = doc["drift"]
    moved = [f for f in d["features"] if f["shift"] != "stable"][:8]
    out.print(
        f"drift: base rate {d['base_rate_train']:.1%} in training -> {d['base_rate_holdout']:.1%} "
        "in the holdout; "
        + (
            "PSI " + ", ".join(f"{f['name']} {f['psi']:.2f} ({f['shift']})" for f in moved)
            if moved
            else "no feature shifted (PSI < 0.1)"
        ),
        highlight=False,
    )
    c = doc["cadence"]
    ct = Table(title=f"retraining cadence (rolling origin, in {doc['unit']})", title_justify="left")
    for col in ("retrain every", "retrains", "live AUC", "live log loss", "live ECE"):
        ct.add_column(col, justify="right")
    for r in c["candidates"]:
        every = "never" if r["every"] is None else f"{r['every']:g}"
        mark = " <- recommended" if r["every"] == c["recommended"] else ""
        ct.add_row(
            every + mark,
            str(r["retrains"]),
            _num(r["live_auc"]),
            _num(r["live_log_loss"]),
            _num(r["live_ece"]),
        )
    out.print(ct)
    out.print(f"verdict: {doc['verdict']}", highlight=False)
