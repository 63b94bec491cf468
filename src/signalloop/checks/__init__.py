"""Signal checks and the validation gate: no decision runs on broken inputs.

>>> from signalloop.checks import REGISTRY, run_checks
>>> sorted(REGISTRY)[:3]
['attribution_match', 'conversion_volume', 'creative_freshness']
"""

from signalloop.checks import hygiene, signals  # noqa: F401  (register the checks)
from signalloop.checks.base import REGISTRY, CheckContext, CheckSpec, Finding, register
from signalloop.checks.engine import (
    CheckReport,
    exclusions_csv,
    load_exclusions,
    run_checks,
    save_exclusions,
)

__all__ = [
    "REGISTRY",
    "CheckContext",
    "CheckReport",
    "CheckSpec",
    "Finding",
    "exclusions_csv",
    "load_exclusions",
    "register",
    "run_checks",
    "save_exclusions",
]
