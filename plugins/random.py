"""Built-in weighting ``random``: ``--num-languages`` sources drawn at random, equal weights.

The control for URIEL's choice: merge (or ensemble) K random sources the way ``average``
merges URIEL's K nearest, and compare. Draw ``d`` for target ``t`` is the same on every run
and machine (the generator is seeded from ``seed``, ``t`` and ``d``), so a grid's R draws
are R fixed source sets: ``--weighting random --weighting-param draw=2``.
"""

from __future__ import annotations

import hashlib
import random

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_core.params import Param


def random_sources(available: list[str], count: int, target: str | None, draw: int, seed: int) -> list[str]:
    """``count`` of ``available`` (all of them if fewer), drawn by a generator seeded from
    ``(seed, target, draw)``; the result does not depend on the order of ``available``."""
    key = hashlib.sha256(f"{seed}|{target}|{draw}".encode()).digest()
    generator = random.Random(int.from_bytes(key[:8], "big"))
    return generator.sample(sorted(available), min(count, len(available)))


class RandomWeighting(Weighting):
    name = "random"
    description = "--num-languages sources drawn at random (seeded per target and draw), equal weights: URIEL's control."
    needs_target = False
    reads = frozenset({"num_languages", "include_target"})
    params = (
        Param("draw", int, 0, "which draw: each number is another fixed random source set", minimum=0),
        Param("seed", int, 0, "seeds every draw", minimum=0),
    )

    def compute(self, request: WeightingRequest) -> WeightResult:
        chosen = random_sources(list(request.available), request.num_languages, request.target,
                                request.params["draw"], request.params["seed"])
        notes = []
        if len(chosen) < request.num_languages:
            notes.append(f"only {len(chosen)} sources available for --num-languages {request.num_languages}")
        details = {"draw": request.params["draw"], "seed": request.params["seed"], "from": len(request.available)}
        return WeightResult([(locale, 1.0) for locale in chosen], details, None, notes)


@hookimpl
def register_weightings(register):
    register(RandomWeighting())
