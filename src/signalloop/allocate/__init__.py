"""Budget allocation: Bayesian policies with priors and guardrails, and their evaluation.

The budget allocation of issue 6:

* :mod:`signalloop.allocate.posterior`: the arm model, ``conversions ~ Poisson(theta *
  spend ** beta)`` with a Gamma posterior on ``theta`` pooled from the account (empirical
  Bayes), fed by each campaign's best outcome source (nowcast cohorts, first-party
  conversions by conversion day, or the platform's own counts, discounted), and the
  water-filling optimum.
* :mod:`signalloop.allocate.policy`: the :class:`~signalloop.allocate.policy.Policy`
  interface, the registry :data:`~signalloop.allocate.policy.POLICIES` (``guarded_bayes``,
  ``even_split``, ``greedy_cpa``, ``epsilon_greedy``, ``thompson``) and
  :func:`~signalloop.allocate.policy.allocate`, the ``signalloop allocate`` command's library:
  every policy's budgets within the guardrails (held and learning campaigns unchanged, no
  campaign moved more than the daily change limit), what they cannot place reported as
  ``unallocated``.
* :mod:`signalloop.allocate.loop`: the policy time loop against the simulator (regret
  against the oracle), observing the account through a data shape.
* :mod:`signalloop.allocate.ope`: off-policy evaluation (IPW, SNIPW, DR) of allocation
  policies on logged bandit data with known propensities.

The submodules are imported on use (``from signalloop.allocate.policy import allocate``).
"""
