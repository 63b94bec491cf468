"""Settings: ``signalloop.toml``, with defaults that need no file at all.

Looked up as ``--config PATH``, else ``$SIGNALLOOP_CONFIG``, else ``./signalloop.toml`` if it
exists. Everything has a default; a file only overrides what it names::

    learning_threshold = 50            # optimisation events per 7 days

    [taxonomy]
    sources = ["facebook", "google", "linkedin"]
    mediums = ["paid_social", "cpc"]

    [taxonomy.aliases]                 # variant (case-insensitive) = canonical value
    "fb" = "facebook"

    [checks.integration_dropout]       # any check's thresholds, by name
    min_expected = 8

    [models]
    max_frame_rows = 2000000           # mature units fetched per model; more are sampled
    [models.horizon_days]              # days an outcome may take before "no" is a label
    sql = 21

    [nowcast]
    settle_days = 42                   # click days this old are reported as observed (0: never)
    crm_settle_days = 180              # lead days this old likewise: no more deals drawn (0: never)

    [lens]                             # the decision lens (signalloop.lens)
    retrain_every_days = 7             # declared retraining cadence (none: the check fails)
    decision_every_days = 1            # how often budgets are decided (feedback latency)
    cold_start_plan = "guarded allocator, manual bids below threshold"
    cold_start_days = 28               # a campaign younger than this is in cold start
    min_days_covered = 0.9             # share of days with delivery data (data completeness)
    context_ratio = 2.0                # volume now vs the model's training data, either way

    [owners]                           # campaign id or model outcome = owner name
    c01 = "Ana"
    sql = "Ben"

    [run]                              # signalloop run: the daily loop (signalloop.run)
    inbox = "exports"                  # folder of new exports: <kind>*.csv|.csv.gz|.parquet
    out = "signalloop-report"          # where report.html and report.json go
    budget = 1500.0                    # daily budget (default: last 7 days' mean spend)
    policy = "guarded_bayes"           # allocator by name
    objective = "conversions"          # or "value"
    outcomes = ["conversion", "sql"]   # models kept fresh (default: what the data supports)

    pull = true                        # pull spend from the [connect] accounts first
    apply = "dry-run"                  # or "live": apply the allocation last (signalloop apply)
    retrain = "inline"                 # or "separate": refit due models in `model refresh`
    [run.profiles]                     # export profile per kind (default canonical)
    spend = "meta_ads"

    [push]                             # validated outcomes to Meta and Google
    live = false                       # (signalloop.push.settings has every key)

    [connect.meta]                     # the ad accounts pulls read from
    ad_account_id = "act_1234567890"   # (signalloop.connect.settings has every key)

>>> s = Settings()
>>> s.learning_threshold, s.canonical_utm("  FB ")
(50, 'facebook')
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from signalloop.connect.settings import ConnectSettings, connect_from
from signalloop.contract import FUNNEL, KINDS
from signalloop.errors import ConfigError
from signalloop.push.settings import PushSettings, push_from

ENV_CONFIG = "SIGNALLOOP_CONFIG"
DEFAULT_CONFIG = "signalloop.toml"

DEFAULT_SOURCES = (
    "facebook",
    "instagram",
    "google",
    "bing",
    "linkedin",
    "tiktok",
    "twitter",
    "youtube",
    "email",
    "newsletter",
    "referral",
    "organic",
)
DEFAULT_MEDIUMS = (
    "paid_social",
    "cpc",
    "display",
    "video",
    "email",
    "organic",
    "referral",
    "affiliate",
)
#: Common spellings of the same source or medium (compared case- and whitespace-insensitively).
DEFAULT_ALIASES: dict[str, str] = {
    "fb": "facebook",
    "facebook.com": "facebook",
    "m.facebook.com": "facebook",
    "meta": "facebook",
    "ig": "instagram",
    "instagram.com": "instagram",
    "adwords": "google",
    "google ads": "google",
    "googleads": "google",
    "google.com": "google",
    "gads": "google",
    "li": "linkedin",
    "linkedin.com": "linkedin",
    "lnkd.in": "linkedin",
    "tt": "tiktok",
    "x": "twitter",
    "t.co": "twitter",
    "yt": "youtube",
    "ppc": "cpc",
    "paid search": "cpc",
    "paid-search": "cpc",
    "paidsearch": "cpc",
    "sem": "cpc",
    "paid social": "paid_social",
    "paid-social": "paid_social",
    "paidsocial": "paid_social",
    "social paid": "paid_social",
    "social_paid": "paid_social",
    "cpm": "display",
    "banner": "display",
    "e-mail": "email",
    "mail": "email",
}

_TOP_KEYS = {
    "learning_threshold",
    "funnel",
    "taxonomy",
    "checks",
    "models",
    "lens",
    "owners",
    "run",
    "push",
    "connect",
    "serve",
    "nowcast",
}
#: Click days at least this old are settled by the nowcast (``[nowcast] settle_days``)
SETTLE_DAYS = 42
#: Lead days at least this old are settled by the CRM nowcast (``[nowcast] crm_settle_days``)
CRM_SETTLE_DAYS = 180
#: Outcomes a ``[models] horizon_days`` table may name.
_MODEL_OUTCOMES = ("conversion", "sql", "won", "value")


@dataclass(frozen=True)
class LensSettings:
    """``[lens]``: the declarations the decision lens (:mod:`signalloop.lens`) checks."""

    #: How often models are retrained, in days; ``None`` = undeclared.
    retrain_every_days: int | None = None
    #: How often budget decisions are made, in days.
    decision_every_days: int = 1
    #: The declared plan for campaigns in cold start; ``None`` = undeclared.
    cold_start_plan: str | None = None
    #: A campaign whose first delivery is fewer days ago than this is in cold start.
    cold_start_days: int = 28
    #: Least share of days (first delivery to as-of) with delivery data.
    min_days_covered: float = 0.9
    #: Largest factor, either way, between a model's training volume and the volume now.
    context_ratio: float = 2.0


_LENS_INTS = ("retrain_every_days", "decision_every_days", "cold_start_days")


@dataclass(frozen=True)
class RunSettings:
    """``[run]``: what ``signalloop run`` reads and writes (:mod:`signalloop.run`)."""

    #: Folder of new exports; ``None`` = no inbox. Relative paths in a config file are
    #: relative to the file's folder.
    inbox: str | None = None
    #: Folder for ``report.html`` and ``report.json``.
    out: str = "signalloop-report"
    #: Total daily budget to allocate; ``None`` = the last 7 days' mean daily spend.
    budget: float | None = None
    #: Allocation policy by name (:data:`signalloop.allocate.policy.POLICIES`).
    policy: str = "guarded_bayes"
    #: ``"conversions"`` or ``"value"``.
    objective: str = "conversions"
    #: Model outcomes kept fresh; ``None`` = conversion, plus sql when CRM data exists.
    outcomes: tuple[str, ...] | None = None
    #: Export profile per kind for inbox files (default ``canonical``).
    profiles: dict[str, str] = field(default_factory=dict)
    #: Pull spend from the ``[connect]`` accounts first
    #: (:func:`signalloop.connect.pull.pull_connected`).
    pull: bool = False
    #: Apply the day's allocation to the ``[connect]`` accounts last
    #: (:func:`signalloop.connect.apply.apply`): ``"dry-run"`` (what would change, nothing
    #: sent), ``"live"``, or ``None`` (not at all).
    apply: str | None = None
    #: Where models that are due are refitted: ``"inline"`` (in the run, with their backtest)
    #: or ``"separate"`` (the run keeps using the saved models and lists the due ones as
    #: ``due``; ``signalloop model refresh``, scheduled on its own, refits them). A refit at
    #: 1,000 campaigns takes about three minutes on two cores, four times a whole next day.
    retrain: str = "inline"


@dataclass(frozen=True)
class ServeSettings:
    """``[serve]``: the web app (:mod:`signalloop.web`)."""

    #: Local time ("HH:MM", the server's clock) of the daily run inside the server; ``None`` =
    #: no scheduled run.
    run_at: str | None = None
    #: Largest ingest body accepted, in megabytes (decompressed); larger gets 413.
    max_body_mb: float = 50.0
    #: How long a browser login lasts.
    session_hours: float = 12.0


@dataclass(frozen=True)
class Settings:
    """Project settings; every field has a working default."""

    learning_threshold: int = 50
    funnel: tuple[str, ...] = FUNNEL
    sources: tuple[str, ...] = DEFAULT_SOURCES
    mediums: tuple[str, ...] = DEFAULT_MEDIUMS
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``[models]``: ``horizon_days = {conversion = 7, sql = 30, ...}`` (label windows) and
    #: ``max_frame_rows`` (mature units fetched per model frame; more are sampled).
    models: dict[str, Any] = field(default_factory=dict)
    #: ``[lens]``: declarations for the decision lens.
    lens: LensSettings = field(default_factory=LensSettings)
    #: ``[owners]``: campaign id or model outcome -> owner name.
    owners: dict[str, str] = field(default_factory=dict)
    #: ``[run]``: the daily loop's inbox, report folder, budget and models.
    run: RunSettings = field(default_factory=RunSettings)
    #: ``[push]``: sending validated outcomes to Meta and Google (:mod:`signalloop.push`).
    push: PushSettings = field(default_factory=PushSettings)
    #: ``[connect]``: the ad accounts spend is pulled from (:mod:`signalloop.connect`).
    connect: ConnectSettings = field(default_factory=ConnectSettings)
    #: ``[serve]``: the web app's schedule and limits.
    serve: ServeSettings = field(default_factory=ServeSettings)
    #: ``[nowcast] settle_days``: click days at least this old are reported as observed and
    #: left out of the delay's fit (:class:`~signalloop.nowcast.NowcastOptions`; ``None``, 0
    #: in the file: never).
    settle_days: int | None = SETTLE_DAYS
    #: ``[nowcast] crm_settle_days``: lead days at least this old are reported as observed
    #: by the CRM path (their open leads still count in its fit; ``None``, 0 in the file:
    #: never).
    crm_settle_days: int | None = CRM_SETTLE_DAYS
    path: str | None = None

    def canonical_utm(self, value: str) -> str:
        """The canonical spelling of a UTM value: trimmed, lower-case, aliases resolved."""
        v = " ".join(value.split()).lower()
        return self.aliases.get(v, v)

    def check_options(self, name: str) -> dict[str, Any]:
        """Threshold overrides for the check ``name`` (empty when none)."""
        return dict(self.checks.get(name, {}))


def find_config(path: str | Path | None = None) -> Path | None:
    """The config file to read, or ``None`` when there is none (defaults apply)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    env = os.environ.get(ENV_CONFIG)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"${ENV_CONFIG} names {p}, which does not exist")
        return p
    p = Path(DEFAULT_CONFIG)
    return p if p.is_file() else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read settings from ``path`` (see :func:`find_config`); defaults where the file is silent."""
    p = find_config(path)
    if p is None:
        return Settings()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    return settings_from_dict(doc, source=str(p))


def settings_from_dict(doc: dict[str, Any], source: str = "<dict>") -> Settings:
    """Build :class:`Settings` from a parsed TOML document, checking every key."""
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(_TOP_KEYS))}"
        )
    s = Settings(path=source)
    if "learning_threshold" in doc:
        t = doc["learning_threshold"]
        if not isinstance(t, int) or t <= 0:
            raise ConfigError(f"{source}: learning_threshold must be a positive integer, got {t!r}")
        s = replace(s, learning_threshold=t)
    if "funnel" in doc:
        f = doc["funnel"]
        if not isinstance(f, list) or not f or not all(isinstance(x, str) for x in f):
            raise ConfigError(f"{source}: funnel must be a list of stage names, got {f!r}")
        s = replace(s, funnel=tuple(x.lower() for x in f))
    tax = doc.get("taxonomy", {})
    if not isinstance(tax, dict):
        raise ConfigError(f"{source}: [taxonomy] must be a table")
    bad = set(tax) - {"sources", "mediums", "aliases"}
    if bad:
        raise ConfigError(
            f"{source}: unknown taxonomy key(s) {', '.join(sorted(bad))}; "
            "expected sources, mediums, aliases"
        )
    if "sources" in tax:
        s = replace(s, sources=tuple(str(x).lower() for x in tax["sources"]))
    if "mediums" in tax:
        s = replace(s, mediums=tuple(str(x).lower() for x in tax["mediums"]))
    if "aliases" in tax:
        aliases = dict(s.aliases)
        aliases.update(
            {" ".join(str(k).split()).lower(): str(v) for k, v in tax["aliases"].items()}
        )
        s = replace(s, aliases=aliases)
    checks = doc.get("checks", {})
    if not isinstance(checks, dict) or not all(isinstance(v, dict) for v in checks.values()):
        raise ConfigError(f"{source}: [checks.NAME] sections must be tables of thresholds")
    models = doc.get("models", {})
    if not isinstance(models, dict) or set(models) - {"horizon_days", "max_frame_rows"}:
        raise ConfigError(
            f"{source}: [models] takes horizon_days and max_frame_rows, got {models!r}"
        )
    cap = models.get("max_frame_rows")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 2):
        raise ConfigError(
            f"{source}: [models] max_frame_rows must be a number of rows of at least 2, got {cap!r}"
        )
    horizon = models.get("horizon_days", {})
    if not isinstance(horizon, dict) or set(horizon) - set(_MODEL_OUTCOMES):
        raise ConfigError(
            f"{source}: [models] horizon_days must map outcomes "
            f"({', '.join(_MODEL_OUTCOMES)}) to days, got {horizon!r}"
        )
    for k, v in horizon.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{source}: [models] horizon_days.{k} must be a positive integer")
    push = push_from(doc["push"], source) if "push" in doc else PushSettings()
    settle_days, crm_settle_days = _nowcast_from(doc.get("nowcast", {}), source)
    return replace(
        s,
        settle_days=settle_days,
        crm_settle_days=crm_settle_days,
        checks={k: dict(v) for k, v in checks.items()},
        models={"horizon_days": dict(horizon)}
        | ({"max_frame_rows": cap} if cap is not None else {}),
        lens=_lens_from(doc.get("lens", {}), source),
        owners=_owners_from(doc.get("owners", {}), source),
        run=_run_from(doc.get("run", {}), source),
        push=push,
        connect=(
            connect_from(doc["connect"], source, push.secrets)
            if "connect" in doc
            else ConnectSettings(secrets=push.secrets)
        ),
        serve=_serve_from(doc.get("serve", {}), source),
    )


def _nowcast_from(nc: Any, source: str) -> tuple[int | None, int | None]:
    """``[nowcast]``: ``settle_days`` and ``crm_settle_days``, each a whole number of days, 0
    for never (``None``)."""
    defaults = {"settle_days": SETTLE_DAYS, "crm_settle_days": CRM_SETTLE_DAYS}
    if not isinstance(nc, dict) or set(nc) - set(defaults):
        raise ConfigError(f"{source}: [nowcast] takes settle_days and crm_settle_days, got {nc!r}")
    out: list[int | None] = []
    for key, default in defaults.items():
        v = nc.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(
                f"{source}: [nowcast] {key} must be a whole number of days (0: never), got {v!r}"
            )
        out.append(v or None)
    return out[0], out[1]


def _serve_from(serve: Any, source: str) -> ServeSettings:
    _check_table(serve, "serve", ServeSettings, source)
    run_at = serve.get("run_at")
    if run_at is not None:
        ok = isinstance(run_at, str) and len(run_at) == 5 and run_at[2] == ":"
        hh, mm = (run_at[:2], run_at[3:]) if ok else ("", "")
        if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
            raise ConfigError(f'{source}: [serve] run_at must be "HH:MM" (24 h), got {run_at!r}')
    numbers = {}
    for name in ("max_body_mb", "session_hours"):
        v = serve.get(name, getattr(ServeSettings, name))
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(f"{source}: [serve] {name} must be a positive number, got {v!r}")
        numbers[name] = float(v)
    return ServeSettings(run_at=run_at, **numbers)


def _check_table(table: Any, name: str, cls: type, source: str) -> None:
    """``[name]`` must be a table whose keys are fields of the dataclass ``cls``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name for f in fields(cls)}
    bad = set(table) - known
    if bad:
        raise ConfigError(
            f"{source}: unknown [{name}] key(s) {', '.join(sorted(bad))}; "
            f"expected {', '.join(sorted(known))}"
        )


def _lens_from(lens: Any, source: str) -> LensSettings:
    """Validate a ``[lens]`` table into :class:`LensSettings`."""
    _check_table(lens, "lens", LensSettings, source)
    for k in _LENS_INTS:
        v = lens.get(k)
        if k in lens and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{source}: [lens] {k} must be a positive integer, got {v!r}")
    plan = lens.get("cold_start_plan")
    if "cold_start_plan" in lens and (not isinstance(plan, str) or not plan.strip()):
        raise ConfigError(f"{source}: [lens] cold_start_plan must be a non-empty string")
    cov = lens.get("min_days_covered", 0.9)
    if isinstance(cov, bool) or not isinstance(cov, int | float) or not 0 <= cov <= 1:
        raise ConfigError(
            f"{source}: [lens] min_days_covered must be a number from 0 to 1, got {cov!r}"
        )
    ratio = lens.get("context_ratio", 2.0)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio < 1:
        raise ConfigError(f"{source}: [lens] context_ratio must be a number >= 1, got {ratio!r}")
    return replace(
        LensSettings(),
        **{k: v for k, v in lens.items() if k not in ("min_days_covered", "context_ratio")},
        min_days_covered=float(cov),
        context_ratio=float(ratio),
    )


def _owners_from(owners: Any, source: str) -> dict[str, str]:
    """Validate an ``[owners]`` table: ids or outcomes to non-empty owner names."""
    if not isinstance(owners, dict):
        raise ConfigError(f"{source}: [owners] must be a table of id = owner name")
    for k, v in owners.items():
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{source}: [owners] {k} must be a non-empty owner name, got {v!r}")
    return {str(k): v.strip() for k, v in owners.items()}


def _run_from(run: Any, source: str) -> RunSettings:
    """Validate a ``[run]`` table into :class:`RunSettings`."""
    _check_table(run, "run", RunSettings, source)
    for k in ("inbox", "out", "policy"):
        if k in run and (not isinstance(run[k], str) or not run[k].strip()):
            raise ConfigError(f"{source}: [run] {k} must be a non-empty string, got {run[k]!r}")
    pull = run.get("pull", False)
    if not isinstance(pull, bool):
        raise ConfigError(f"{source}: [run] pull must be true or false, got {pull!r}")
    apply = run.get("apply")
    if apply is not None and apply not in ("dry-run", "live"):
        raise ConfigError(f'{source}: [run] apply must be "dry-run" or "live", got {apply!r}')
    retrain = run.get("retrain", RunSettings.retrain)
    if retrain not in ("inline", "separate"):
        raise ConfigError(
            f'{source}: [run] retrain must be "inline" or "separate", got {retrain!r}'
        )
    budget = run.get("budget")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0
    ):
        raise ConfigError(f"{source}: [run] budget must be a positive number, got {budget!r}")
    objective = run.get("objective", "conversions")
    if objective not in ("conversions", "value"):
        raise ConfigError(
            f"{source}: [run] objective must be conversions or value, got {objective!r}"
        )
    outcomes = run.get("outcomes")
    if outcomes is not None and (
        not isinstance(outcomes, list) or not set(outcomes) <= set(_MODEL_OUTCOMES)
    ):
        raise ConfigError(
            f"{source}: [run] outcomes must be a list of {', '.join(_MODEL_OUTCOMES)}, "
            f"got {outcomes!r}"
        )
    profiles = run.get("profiles", {})
    if not isinstance(profiles, dict) or set(profiles) - set(KINDS):
        raise ConfigError(
            f"{source}: [run.profiles] maps kinds ({', '.join(KINDS)}) to profile names, "
            f"got {profiles!r}"
        )

    def beside_config(path: str | None) -> str | None:
        if path is None or source == "<dict>" or Path(path).is_absolute():
            return path
        return str(Path(source).parent / path)

    return RunSettings(
        inbox=beside_config(run.get("inbox")),
        out=str(beside_config(run.get("out", RunSettings.out))),
        budget=None if budget is None else float(budget),
        policy=str(run.get("policy", RunSettings.policy)),
        objective=str(objective),
        outcomes=None if outcomes is None else tuple(outcomes),
        profiles={str(k): str(v) for k, v in profiles.items()},
        pull=pull,
        apply=apply,
        retrain=str(retrain),
    )
