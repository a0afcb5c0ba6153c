"""Built-in evaluator ``accuracy``: the fraction of predictions equal to the gold label."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Evaluator
from merginguriel_core.maths.metrics import accuracy


class Accuracy(Evaluator):
    name = "accuracy"
    description = "Fraction of examples whose predicted label is the gold label."

    def evaluate(self, predictions, labels, num_labels):
        return {"accuracy": accuracy(predictions, labels)}


@hookimpl
def register_evaluators(register):
    register(Accuracy())
