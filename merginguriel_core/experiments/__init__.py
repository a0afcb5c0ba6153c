"""Experiment grids: a checked spec, one resumable runner, executors, reports."""
