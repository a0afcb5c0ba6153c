"""MergingUriel's Python API: the same door the ``mu`` CLI goes through.

    import merginguriel_core as mu

    plan = mu.plan_merge("merged-sw", strategy="ties", base_model="base",
                         selection=mu.SelectionOptions(target="sw-KE"), models="models")
    summary = mu.run_merge(plan)

Everything here is documented in docs/python-api.md. Names load on first use, so that
importing the package (every ``mu`` call does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from merginguriel_core.hookspecs import hookimpl

__version__ = "0.1.0"

#: public name -> the module that defines it.
_EXPORTS = {
    # choosing sources
    "SelectionOptions": "selection", "Selection": "selection", "select_sources": "selection",
    "similarity_table": "selection", "SimilarityTable": "selection", "Neighbour": "selection",
    # merging
    "ModelSources": "plan", "plan_merge": "plan", "fetch_models": "plan",
    "MergePlan": "merge", "MergeSummary": "merge", "SourceModel": "merge", "run_merge": "merge",
    "LabelledData": "interfaces",
    # ensembles and evaluation
    "plan_ensemble": "plan", "EnsemblePlan": "ensemble", "EnsembleResult": "ensemble", "run_ensemble": "ensemble",
    "evaluate": "plan",
    # training
    "train": "plan", "AdapterTraining": "training", "TrainingConfig": "training", "IterativeOptions": "iterative", "IterativePlan": "iterative",
    "IterativeResult": "iterative", "plan_iterative": "iterative", "run_iterative": "iterative",
    "TargetText": "target_text", "GroupWeights": "groups",
    # plugins and errors
    "Registry": "plugins", "load_plugins": "plugins", "Param": "params",
    "MergingUrielError": "errors", "ConfigError": "errors",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'merginguriel_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"merginguriel_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
