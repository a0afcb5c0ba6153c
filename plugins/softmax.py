"""Built-in weighting ``softmax``: softmax of similarity over a temperature, over the most similar
available models (see :mod:`merginguriel_core.signal_weighting`)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.maths.weights import softmax_weights
from merginguriel_core.params import Param
from merginguriel_core.signal_weighting import SignalWeighting


class SoftmaxWeighting(SignalWeighting):
    name = "softmax"
    description = "Softmax of similarity over a temperature, over the most similar available models."
    params = (Param("temperature", float, 0.05, "softmax temperature: smaller concentrates weight on the most similar",
                    minimum=0.0, min_inclusive=False),)

    def method_steps(self, request, matrix, target, candidates, similarity):
        return [], softmax_weights(similarity, request.params["temperature"]), {}


@hookimpl
def register_weightings(register):
    register(SoftmaxWeighting())
