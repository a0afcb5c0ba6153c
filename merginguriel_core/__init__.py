"""MergingUriel core: hook specifications, plugin manager, similarity and the merge engine."""

from merginguriel_core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
