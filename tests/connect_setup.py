"""What the connect tests set up alike: the ad-platform environment and a sandbox serving one
Meta ad account and one Google Ads customer.

Each module keeps its own tokens (so a leaked secret names its module) and loads its own data:
its ``_env`` fixture (autouse, so only that module's tests) calls :func:`platform_env`, and its
``sb`` fixture opens :func:`sandbox` and loads delivery, objects or edit history into it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from signalloop.push.sandbox import Sandbox

#: The sandbox's clock.
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
#: The Meta ad account (without ``act_``) and the Google Ads customer the sandbox serves.
ACT = "42"
CID = "1234567890"
#: The platforms' credentials and the settings file: what :func:`platform_env` clears.
ENV = (
    "SIGNALLOOP_META_ACCESS_TOKEN",
    "SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN",
    "SIGNALLOOP_GOOGLE_ACCESS_TOKEN",
    "SIGNALLOOP_GOOGLE_REFRESH_TOKEN",
    "SIGNALLOOP_GOOGLE_CLIENT_ID",
    "SIGNALLOOP_GOOGLE_CLIENT_SECRET",
    "SIGNALLOOP_CONFIG",
)


def platform_env(monkeypatch: pytest.MonkeyPatch, token: str, dev: str, access: str) -> None:
    """Clear :data:`ENV` from the environment, then set the Meta access token and the Google
    developer and access tokens to ``token``, ``dev`` and ``access``."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIGNALLOOP_META_ACCESS_TOKEN", token)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_DEVELOPER_TOKEN", dev)
    monkeypatch.setenv("SIGNALLOOP_GOOGLE_ACCESS_TOKEN", access)


def sandbox(token: str, dev: str, access: str, **options: Any) -> Sandbox:
    """A sandbox at :data:`NOW` (running inside ``with``) that serves :data:`ACT` and
    :data:`CID` only and accepts these tokens; ``options`` go to :class:`Sandbox` as they are
    (page sizes, report-job polls, Google's OAuth secrets)."""
    return Sandbox(
        now=NOW,
        meta_token=token,
        meta_ad_accounts=[ACT],
        google_developer_token=dev,
        google_access_tokens=[access],
        customer_ids=[CID],
        **options,
    )
