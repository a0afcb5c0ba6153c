"""Built-in voting method ``uriel_logits``: the weighted sum of the models' logits (the ensemble's
default, with URIEL weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


class UrielLogits(VotingMethod):
    name = "uriel_logits"
    description = "Σ wᵢ · logitsᵢ with wᵢ the normalised weights (URIEL by default) of the selected sources."

    def combine(self, logits, weights, params):
        return np.tensordot(weights, logits, axes=1)


@hookimpl
def register_voting_methods(register):
    register(UrielLogits())
