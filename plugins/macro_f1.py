"""Built-in evaluator ``macro_f1``: the unweighted mean of per-class F1."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Evaluator
from merginguriel_core.maths.metrics import macro_f1


class MacroF1(Evaluator):
    name = "macro_f1"
    description = "Mean of per-class F1 (classes present in gold or predictions)."

    def evaluate(self, predictions, labels, num_labels):
        return {"macro_f1": macro_f1(predictions, labels, num_labels)}


@hookimpl
def register_evaluators(register):
    register(MacroF1())
