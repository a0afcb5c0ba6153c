"""Built-in weighting ``local_sinkhorn``: Sinkhorn on the similarity matrix restricted to the target
and its most similar available models (see :mod:`merginguriel_core.signal_weighting`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core import hookimpl
from merginguriel_core.maths.weights import local_sinkhorn_weights
from merginguriel_core.signal_weighting import SignalWeighting

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


class LocalSinkhornWeighting(SignalWeighting):
    name = "local_sinkhorn"
    description = "Sinkhorn on the similarity matrix restricted to the target and its most similar available models."
    reads = SignalWeighting.reads | {"sinkhorn_iters"}

    def method_steps(self, request, matrix, target, candidates, similarity):
        others = [locale for locale in candidates if locale != target]
        rows = [matrix.index(target)] + [matrix.index(locale) for locale in others]
        block = matrix.values[np.ix_(rows, rows)]
        own = target in candidates  # --include-target made the target a candidate: it keeps its diagonal
        after, weights = local_sinkhorn_weights(block, request.sinkhorn_iters, include_target=own)
        order = ([target] if own else []) + others
        position = {locale: i for i, locale in enumerate(order)}
        index = [position[locale] for locale in candidates]
        return [("sinkhorn", after[index])], weights[index], {"sinkhorn_iters": request.sinkhorn_iters}


@hookimpl
def register_weightings(register):
    register(LocalSinkhornWeighting())
