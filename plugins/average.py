"""Built-in weighting ``average``: equal weights.

With a target, the sources are the ones ``uriel`` would select (same options), so the two
weightings differ only in the weights; without a target, every available model.
"""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_plugins.uriel_similarity import UrielWeighting


class AverageWeighting(Weighting):
    name = "average"
    description = "Equal weights over the sources uriel would select (or every available model without a target)."
    needs_target = False

    def options_read(self, target: str | None) -> frozenset[str]:
        """uriel's options with a target (they choose the sources); none without one."""
        return UrielWeighting.reads if target is not None else frozenset()

    def compute(self, request: WeightingRequest) -> WeightResult:
        explanation = None
        if request.target is None:
            locales = sorted(request.available)
            notes = []
        else:
            chosen = UrielWeighting().compute(request)
            locales, notes = [locale for locale, _ in chosen.weights], chosen.notes
        weight = 1.0 / len(locales)
        selected = [(locale, weight) for locale in locales]
        if request.target is not None:
            seed = chosen.trace  # uriel's steps up to its choice, then equal weights
            explanation = Explanation(seed.target, seed.locales, [*seed.steps[:1], ("uriel weight", seed.steps[-1][1]),
                                                                   ("final", final_step(seed.locales, selected))],
                                      selected, notes)
        details = {"selected_by": "uriel" if request.target else "all available models"}
        return WeightResult(selected, details, explanation, notes)


@hookimpl
def register_weightings(register):
    register(AverageWeighting())
