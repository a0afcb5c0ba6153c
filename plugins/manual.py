"""Built-in weighting ``manual``: the weights given with ``--weights LOCALE=W,...``, normalised."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult


class ManualWeighting(Weighting):
    name = "manual"
    description = "Weights given with --weights LOCALE=WEIGHT,..., normalised to sum to 1."
    needs_target = False
    reads = frozenset({"weights", "include_target"})

    def compute(self, request: WeightingRequest) -> WeightResult:
        given = dict(request.manual_weights or {})
        if not given:
            raise ConfigError("weighting 'manual' needs --weights LOCALE=WEIGHT[,LOCALE=WEIGHT...]")
        if request.target in given and not request.include_target:
            raise ConfigError(
                f"--weights names the target {request.target}, whose own model is excluded; pass --include-target to use it"
            )
        missing = [locale for locale in given if locale not in request.available]
        if missing:
            raise ConfigError(
                f"--weights names {', '.join(missing)} without an available model; "
                f"available: {', '.join(sorted(request.available))}"
            )
        largest = max(given.values())
        if largest <= 0:
            raise ConfigError("--weights are all zero")
        scaled = {locale: w / largest for locale, w in given.items()}  # no overflow for huge weights
        total = sum(scaled.values())
        ordered = sorted(scaled.items(), key=lambda item: (-item[1], item[0]))
        return WeightResult([(locale, w / total) for locale, w in ordered if w > 0], {"given": given})


@hookimpl
def register_weightings(register):
    register(ManualWeighting())
