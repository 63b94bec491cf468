"""Send validated outcomes back to the ad platforms (issue 12, in progress).

* :mod:`signalloop.push.meta`: the Meta Conversions API's rules for CRM leads ("Conversion
  Leads"), as pure functions: contact fields normalised and hashed as Meta specifies, one
  event per record and funnel stage with a stable ``event_id``, and requests of at most
  1,000 events that never carry an event older than 7 days (Meta rejects the whole request).

The submodules are imported on use.
"""
