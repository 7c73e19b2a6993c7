"""Experiments over many runs: the method comparison and the multi-task transfer table, with one
run-or-reuse mechanism (``runs``), markdown tables (``tables``) and plots (``plots``). Imports training."""
