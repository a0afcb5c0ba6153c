"""Built-in voting method ``soft``: the mean of the models' probability distributions."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod
from merginguriel_core.maths.voting import softmax


class Soft(VotingMethod):
    name = "soft"
    description = "Average of the models' probability distributions (softmax of the logits), unweighted."

    def combine(self, logits, weights, params):
        return softmax(logits).mean(0)


@hookimpl
def register_voting_methods(register):
    register(Soft())
