"""MergingUriel core: hook specifications, plugin manager, similarity and the merge engine."""

__version__ = "0.1.0"
