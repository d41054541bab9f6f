"""Experiments: config files, run directories, the classifier and generation pipelines,
the comparison, the audit, tuning and their reports.

Everything that reads a config or writes a run directory lives in this package; the
method and the training infrastructure above it never do.
"""
