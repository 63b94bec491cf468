"""Conversion-probability models with honest validation.

Input signals in, probability out, and an account of when that probability can be trusted:

* :mod:`~signalloop.models.features` -- one row per touchpoint or lead from the workspace,
  with the signals the model may use and the label of the chosen outcome depth.
* :mod:`~signalloop.models.table` -- the same frame from a file (a CRM lead export).
* :mod:`~signalloop.models.estimator` -- :class:`ConversionModel`: LightGBM calibrated on a
  later time slice than it was trained on.
* :mod:`~signalloop.models.metrics` -- AUC, log loss, Brier, expected calibration error,
  the reliability table, population stability (PSI).
* :mod:`~signalloop.models.backtest` -- random split against the time-ordered live holdout,
  the overfitting gap, drift, and the retraining cadence from rolling-origin evaluation.
"""
