"""Model cards: what a saved model was trained on, and the refusal to use it on anything else.

A saved model is a folder with ``model.joblib`` (the fitted
:class:`~signalloop.models.estimator.ConversionModel`) and ``card.json``: the outcome and unit,
the data window, rows and positives, the features with their kinds (the *schema*), the model's
parameters, its calibration, its validation metrics, and two hashes:

* ``config_hash`` -- of everything that decides what the model means: outcome, label horizon,
  funnel order, model parameters;
* ``schema_hash`` -- of the feature names and kinds, in order.

:func:`load_model` recomputes both for the data and settings at hand and refuses, naming each
difference, when either differs: a model trained under another funnel or horizon, or on other
columns, does not silently score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from signalloop import __version__
from signalloop.errors import UsageError
from signalloop.models.estimator import ConversionModel

MODEL_FILE = "model.joblib"
CARD_FILE = "card.json"


def content_hash(doc: Any) -> str:
    """A short, stable hash of a JSON-able document (a card's config and schema hashes)."""
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def schema_of(features: Sequence[str], categorical: Sequence[str]) -> list[dict[str, str]]:
    """The feature schema: name and kind (``categorical`` or ``numeric``), in order.

    >>> schema_of(["a", "b"], ["b"])
    [{'name': 'a', 'kind': 'numeric'}, {'name': 'b', 'kind': 'categorical'}]
    """
    cats = set(categorical)
    return [{"name": f, "kind": "categorical" if f in cats else "numeric"} for f in features]


def config_of(
    outcome: str, horizon_days: int | None, funnel: Sequence[str], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings that decide what a model means (hashed into ``config_hash``)."""
    return {
        "outcome": outcome,
        "horizon_days": horizon_days,
        "funnel": list(funnel),
        "params": dict(params),
    }


def save_model(
    folder: str | Path,
    model: ConversionModel,
    *,
    config: Mapping[str, Any],
    schema: list[dict[str, str]],
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``model.joblib`` and ``card.json`` into ``folder`` and return the card."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    card = {
        "signalloop_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": dict(config),
        "config_hash": content_hash(config),
        "schema": schema,
        "schema_hash": content_hash(schema),
        "data": dict(data),
        "calibration": model.calibration_method_,
        "calibration_scores": model.calibration_scores_,
        "metrics": dict(metrics),
        "feature_importance": dict(
            sorted(model.feature_importances_.items(), key=lambda kv: -kv[1])
        ),
    }
    joblib.dump(model, path / MODEL_FILE)
    (path / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of the model saved in ``folder``."""
    f = Path(folder) / CARD_FILE
    if not f.exists():
        raise UsageError(f"no model saved in {folder} (no {CARD_FILE}): run signalloop model fit")
    doc: dict[str, Any] = json.loads(f.read_text())
    return doc


def load_model(
    folder: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    schema: list[dict[str, str]] | None = None,
) -> tuple[ConversionModel, dict[str, Any]]:
    """Load a saved model, refusing it when its config or schema differ from the ones given.

    Parameters
    ----------
    folder
        Where :func:`save_model` wrote it.
    config, schema
        What the caller is about to use the model under; ``None`` skips that check.

    Raises
    ------
    UsageError
        Naming each setting or feature that differs, and what to do.
    """
    card = read_card(folder)
    problems = []
    if config is not None and content_hash(config) != card["config_hash"]:
        saved = card["config"]
        for k in sorted(set(saved) | set(config)):
            if saved.get(k) != config.get(k):
                problems.append(f"{k}: model has {saved.get(k)!r}, now {config.get(k)!r}")
    if schema is not None and content_hash(schema) != card["schema_hash"]:
        have = {s["name"]: s["kind"] for s in card["schema"]}
        now = {s["name"]: s["kind"] for s in schema}
        gone = [n for n in have if n not in now]
        new = [n for n in now if n not in have]
        kinds = [n for n in have if n in now and have[n] != now[n]]
        if gone:
            problems.append(f"features the model needs are missing: {', '.join(gone)}")
        if new:
            problems.append(f"features the model never saw: {', '.join(new)}")
        for n in kinds:
            problems.append(f"feature {n} was {have[n]}, is now {now[n]}")
        if not (gone or new or kinds):
            problems.append("the features are in another order")
    if problems:
        raise UsageError(
            f"the model in {folder} (trained {card['created']}) does not fit the data or "
            "settings now: " + "; ".join(problems) + ". Refit it: signalloop model fit"
        )
    model = joblib.load(Path(folder) / MODEL_FILE)
    if not isinstance(model, ConversionModel):
        raise UsageError(f"{Path(folder) / MODEL_FILE} does not hold a signalloop model")
    return model, card
