"""Evaluation: the harness (`harness`: scorers over datasets, scores / metrics / plots written to the
workdir), metrics and plots."""
