"""Budget allocation: Bayesian policies with priors and guardrails, and their evaluation.

The budget allocation of issue 6:

* :mod:`signalloop.allocate.posterior`: the arm model, ``conversions ~ Poisson(theta *
  spend ** beta)`` with a Gamma posterior on ``theta`` pooled from the account (empirical
  Bayes), fed by nowcast-corrected outcomes, and the water-filling optimum.
* :mod:`signalloop.allocate.policy`: the :class:`~signalloop.allocate.policy.Policy`
  interface, the registry :data:`~signalloop.allocate.policy.POLICIES` (``guarded_bayes``,
  ``even_split``, ``greedy_cpa``, ``epsilon_greedy``, ``thompson``) and
  :func:`~signalloop.allocate.policy.allocate`, the ``signalloop allocate`` command's library.
* :mod:`signalloop.allocate.ope`: off-policy evaluation (IPW, SNIPW, DR) of allocation
  policies on logged bandit data with known propensities.

The submodules are imported on use (``from signalloop.allocate.policy import allocate``).
"""
