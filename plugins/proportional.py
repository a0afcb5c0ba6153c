"""Built-in weighting ``proportional``: similarity^power over the most similar available models
(see :mod:`merginguriel_core.signal_weighting` for the steps it shares)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.maths.weights import proportional_weights
from merginguriel_core.params import Param
from merginguriel_core.signal_weighting import SignalWeighting


class ProportionalWeighting(SignalWeighting):
    name = "proportional"
    description = "Similarity^power normalised over the most similar available models (power 0 = their plain average)."
    params = (Param("power", float, 1.0, "exponent on similarity: 0 equal weights, 1 proportional, larger sharper",
                    minimum=0.0),)

    def method_steps(self, request, matrix, target, candidates, similarity):
        return [], proportional_weights(similarity, request.params["power"]), {}


@hookimpl
def register_weightings(register):
    register(ProportionalWeighting())
