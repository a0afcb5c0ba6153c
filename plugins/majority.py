"""Built-in voting method ``majority``: a plain vote of the models' predicted labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod
from merginguriel_core.maths.voting import votes

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


class Majority(VotingMethod):
    name = "majority"
    description = "Plain majority vote of the models' predicted labels (ties: the lowest label id)."

    def combine(self, logits, weights, params):
        return votes(logits, np.ones(len(logits)))


@hookimpl
def register_voting_methods(register):
    register(Majority())
