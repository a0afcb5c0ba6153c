"""Built-in voting method ``entropy_min``: per-example ensemble weights tuned at test time to
make the prediction confident (EMEA, Wang et al., Findings of EMNLP 2021)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod
from merginguriel_core.maths.voting import entropy_minimised_weights
from merginguriel_core.params import Param


class EntropyMin(VotingMethod):
    name = "entropy_min"
    description = ("Σ wᵢ · logitsᵢ with per-example weights: a few gradient steps from the selection's (URIEL) "
                   "weights that lower the prediction's entropy (EMEA, test-time, no labels).")
    params = (
        Param("steps", int, 5, "gradient steps per example (0: uriel_logits)", minimum=0, maximum=1000),
        Param("learning_rate", float, 1.0, "step size on the weights' logits (halved where a step raises the entropy)",
              minimum=0.0, min_inclusive=False),
    )

    def combine(self, logits, weights, params):
        _, mixed = entropy_minimised_weights(logits, weights, int(params["steps"]), float(params["learning_rate"]))
        return mixed


@hookimpl
def register_voting_methods(register):
    register(EntropyMin())
