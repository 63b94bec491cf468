"""Connected ad accounts: pull daily delivery and the edit history from Meta and Google Ads
(issue 15).

* :mod:`.settings`: ``[connect]`` in ``signalloop.toml`` (accounts, time zones, currencies;
  credentials from the environment or a secrets file);
* :mod:`.meta`: the Insights API (paged reads and report jobs) to canonical ``spend`` rows;
* :mod:`.google`: GAQL ``searchStream`` over ``ad_group`` to canonical ``spend`` rows;
* :mod:`.pull`: :func:`~signalloop.connect.pull.pull`, a range of days through the ingest path,
  restated days replacing the stored rows;
* :mod:`.edits` and :mod:`.changes`: the activity log and ``change_event`` as ``changes`` rows
  with the actor, landed the same way (:mod:`.landing`);
* :mod:`.check`: :func:`~signalloop.connect.check.check_connections`, what each connection
  lacks.

The local stand-ins for both platforms are :class:`signalloop.push.sandbox.Sandbox`.
"""

from __future__ import annotations

from signalloop.connect.settings import ConnectSettings, GoogleConnection, MetaConnection

# .pull and .check import signalloop.config, which imports .settings: import them directly.
__all__ = ["ConnectSettings", "GoogleConnection", "MetaConnection"]
