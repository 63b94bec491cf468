"""``signalloop simulate`` and ``demo``: the simulated account, a policy's time loop, and the
whole loop on a simulated account (library: :mod:`signalloop.simulate`,
:mod:`signalloop.allocate.loop`, :mod:`signalloop.demo`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from signalloop.cli.check import print_check
from signalloop.cli.common import (
    JsonOption,
    _parse_date,
    emit_json,
    err,
    handle_errors,
    out,
    progress_bar,
)
from signalloop.cli.ingest import print_summary
from signalloop.cli.run import print_run
from signalloop.cli.state import print_state
from signalloop.errors import UsageError


@handle_errors
def simulate(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Folder to write the CSVs and truth.json (required without --policy)."
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Days to simulate.")] = 90,
    campaigns: Annotated[int, typer.Option(min=1, help="Number of campaigns.")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 0,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2026-01-01",
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="NAME@CAMPAIGN:START-END (0-based days, inclusive); repeatable. "
            "CAMPAIGN is an id like c02, a number, or *.",
        ),
    ] = None,
    shape: Annotated[
        str,
        typer.Option(
            "--shape",
            help="Data shape to write: spend (spend.csv only, with platform-reported "
            "conversions), spend_conversions (+ conversions with campaign_id and click_ts), "
            "crm (+ crm) or full (all five kinds). Same world for every shape.",
        ),
    ] = "full",
    no_click_ts: Annotated[
        bool,
        typer.Option(
            "--no-click-ts",
            help="Write the conversions without their click_ts column.",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="Run this budget policy in a daily loop against the simulated account "
            "(guarded_bayes, even_split, greedy_cpa, epsilon_greedy, thompson) and print "
            "regret, learning resets caused and spend moved in held campaigns; the policy "
            "sees only what --shape (and --no-click-ts) would export.",
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            help="With --policy: total daily budget (default: the plan's on the last warm-up day).",
        ),
    ] = None,
    warmup: Annotated[
        int,
        typer.Option("--warmup", min=1, help="With --policy: days at the account's plan first."),
    ] = 7,
    as_json: JsonOption = False,
) -> None:
    """Simulate an ad account (canonical CSVs of a data shape and truth.json), with faults.

    With --policy, run the policy's time loop instead (allocate, deliver, observe with real
    delays, repeat) and print its totals against the oracle.
    """
    from signalloop import simulate as sim

    day0 = _parse_date(start, "--start")
    assert day0 is not None
    ids = sim.campaign_ids(campaigns)
    faults = tuple(sim.parse_fault(f, days=days, campaign_ids=ids) for f in (fault or []))
    if shape not in sim.SHAPES:
        raise UsageError(f"--shape expects one of {', '.join(sim.SHAPES)}, got {shape!r}")
    config = sim.SimulationConfig(
        days=days,
        campaigns=campaigns,
        seed=seed,
        start=day0,
        faults=faults,
        shape=shape,
        click_ts=not no_click_ts,
    )
    if policy is not None:
        from signalloop.allocate.loop import run_policy

        with err.status(f"running {policy} over {days} simulated days", spinner="dots"):
            res = run_policy(policy, config, budget=budget, warmup_days=warmup, random_state=seed)
        if as_json:
            emit_json(res.to_dict())
        else:
            print_loop(res.to_dict())
        return
    if budget is not None or warmup != 7:
        raise UsageError("--budget and --warmup need --policy")
    if out_dir is None:
        raise UsageError("--out is required (the folder for the CSVs), unless --policy is given")
    with err.status("simulating", spinner="dots"):
        result = sim.simulate(config)
        paths = sim.write(result, out_dir)
    rows = {k: t.num_rows for k, t in result.tables.items()}
    if as_json:
        emit_json(
            {"out": str(out_dir), "files": {k: str(v) for k, v in paths.items()}, "rows": rows}
        )
        return
    out.print(f"wrote {out_dir}/", highlight=False)
    for k, pth in paths.items():
        n = f"{rows[k]:,} rows" if k in rows else "ground truth"
        out.print(f"  {Path(pth).name:<18} {n}", highlight=False)


def print_loop(doc: dict[str, Any]) -> None:
    """The totals of a policy's time loop (``signalloop simulate --policy``)."""
    tot = doc["totals"]
    t = Table(
        title=f"policy {doc['policy']}: {tot['days']} days after {doc['warmup_days']} warm-up "
        f"days, budget {doc['budget']:,.2f} a day",
        title_justify="left",
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("expected conversions, policy", f"{tot['expected']:,.1f}")
    t.add_row("expected conversions, oracle", f"{tot['oracle']:,.1f}")
    t.add_row("regret", f"{tot['regret']:,.1f} ({tot['regret_pct']:.1f}% of the oracle)")
    t.add_row("regret ignoring learning", f"{tot['regret_ignoring_learning_pct']:.1f}%")
    t.add_row("realised conversions", f"{tot['realised']:,.0f}")
    t.add_row("learning resets caused (ad sets)", f"{tot['resets_caused']}")
    t.add_row("spend moved in held campaigns", f"{tot['spend_moved_held']:,.2f}")
    t.add_row("held campaign-days", f"{tot['held_days']}")
    if "outcome_source" in tot:
        shape = doc["config"].get("shape", "full")
        t.add_row("outcomes the policy saw", f"{tot['outcome_source']} ({shape} shape)")
    if "breaches" in tot:
        t.add_row("guardrail breaches", f"{tot['breaches']}")
    out.print(t)
    out.print(
        "expected conversions are noise-free, at 80% of peak CTR and each ad set's learning-"
        "phase conversion rate (a reset costs); the oracle keeps its allocation, never "
        "resetting; fatigue beyond 80% is only in the realised conversions",
        highlight=False,
    )


@handle_errors
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the simulated CSVs and the workspace.")
    ] = Path("signalloop-demo"),
    seed: Annotated[int, typer.Option(help="Random seed of the simulated account.")] = 7,
    connected: Annotated[
        bool,
        typer.Option(
            "--connected",
            help="The connected loop: the account served as Meta and Google on a local "
            "sandbox, pulled, run and applied as a dry run (no credentials; --out defaults to "
            "signalloop-demo-connected).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Simulate a 90-day account with faults and run the whole loop on it (signalloop run)."""
    from signalloop.demo import run_demo

    if connected:
        if out_dir == Path("signalloop-demo"):
            out_dir = Path("signalloop-demo-connected")
        connected_demo(out_dir, seed, as_json)
        return
    with progress_bar(not as_json or sys.stderr.isatty()) as progress:
        summary = run_demo(out_dir, seed=seed, progress=progress)
    if as_json:
        emit_json(summary)
        return
    print_summary(summary)
    print_check(summary["checks"], min_severity="warn")
    print_state(summary["state"])
    print_run(summary, inbox=False)
    out.print(
        f"\nsimulated files and truth.json: {summary['data_dir']}\n"
        f"workspace: {summary['db']}\n"
        f"next, with --db {summary['db']}: signalloop run | check | diagnose | lens | nowcast "
        "| phase | fatigue | allocate --budget X | model backtest (each takes --json)",
        highlight=False,
    )
    serve = summary["serve"]
    out.print(
        f"\nthe web app: {serve['command']}  then open {serve['url']} and log in with the "
        f"key in {serve['key_file']} (readable by you only)",
        highlight=False,
    )


def connected_demo(out_dir: Path, seed: int, as_json: bool) -> None:
    """``demo --connected``: the backfill pulls, the run, the dry-run apply, what comes next."""
    from signalloop.cli.apply import print_apply
    from signalloop.cli.connect import print_pull
    from signalloop.cli.run import run_summary
    from signalloop.demo_connected import run_connected_demo

    with progress_bar(not as_json or sys.stderr.isatty()) as progress:
        doc = run_connected_demo(out_dir, seed=seed, progress=progress)
    if as_json:
        emit_json({**doc, "run": run_summary(doc["run"])})
        return
    served = doc["served"]
    out.print(
        f"[bold]sandbox[/] on 127.0.0.1:{doc['port']}: the account's Meta and Google campaigns "
        f"({served['rows']['meta']:,} + {served['rows']['google']:,} delivery rows, "
        f"{served['edits']['meta']:,} + {served['edits']['google']:,} edits, "
        f"{doc['since']}..{doc['until']}); the rest as exports in {doc['data_dir']}",
        highlight=False,
    )
    out.print("\n[bold]1. backfill[/]: signalloop pull meta|google --since " + doc["since"])
    for p in doc["backfill"]:
        print_pull(p)
    out.print(
        '\n[bold]2. signalloop run[/] (\\[run] pull = true, apply = "dry-run"): pulls the '
        "lookback again, ingests the inbox, decides, applies last as a dry run"
    )
    print_run(doc["run"])
    out.print("\n[bold]3. signalloop apply[/] (a dry run: nothing is sent)")
    print_apply(doc["apply"])
    out.print(
        f"\nworkspace: {doc['db']}\nconfig: {doc['config']}\nto go on by hand:",
        highlight=False,
    )
    for line in doc["next"]:
        out.print(f"  {line}", highlight=False)
