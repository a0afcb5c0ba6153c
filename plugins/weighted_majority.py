"""Built-in voting method ``weighted_majority``: each predicted label counts with its model's weight."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod
from merginguriel_core.maths.voting import votes


class WeightedMajority(VotingMethod):
    name = "weighted_majority"
    description = "Each model's predicted label counts with the model's weight (ties: the lowest label id)."

    def combine(self, logits, weights, params):
        return votes(logits, weights)


@hookimpl
def register_voting_methods(register):
    register(WeightedMajority())
