"""Send validated outcomes back to the ad platforms, and outage windows to bidding.

* :mod:`signalloop.push.meta`: the Meta Conversions API's rules for CRM leads ("Conversion
  Leads"), as pure functions: contact fields normalised and hashed as Meta specifies, one
  event per record and funnel stage with a stable ``event_id``, and requests of at most
  1,000 events that never carry an event older than 7 days (Meta rejects the whole request).
* :mod:`signalloop.push.google`: Google Ads offline conversions and bidding data exclusions, as
  pure functions: conversionDateTime in the account's zone, enhanced conversions for leads
  hashed as Google documents (gmail periods dropped, E.164 phones), click conversions checked
  against the click-age rules (90-day window, 6-hour minimum, conversion after click) in
  requests of at most 2,000 with each partial-failure row error parsed, Google's upload file,
  and outage windows as exclusions of at most 14 days on the account's wall clock.
* :mod:`signalloop.push.outcomes`: which CRM outcomes may leave (the gate, stage regression,
  duplicate people, CRM sync dropouts), each skipped one with its reason.
* :mod:`signalloop.push.send`: the jobs (``push meta``, ``push google``, ``push exclusions``)
  that build, write, send and record; :mod:`signalloop.push.ledger` what was sent;
  :mod:`signalloop.push.client` the HTTP client; :mod:`signalloop.push.settings` ``[push]``;
  :mod:`signalloop.push.sandbox` local stand-ins for both platforms that enforce their rules.

The submodules are imported on use.
"""
