"""Budget allocation: Bayesian policies with priors and guardrails, and their evaluation.

This package will hold the budget allocation of issue 6. Its first part is
:mod:`signalloop.allocate.ope`, off-policy evaluation (IPW, SNIPW, DR) of allocation
policies on logged bandit data with known propensities.
"""
