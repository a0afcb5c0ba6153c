"""Built-in weighting ``learned``: weights from predicted accuracy, fitted on an N×N zero-shot matrix
(see :mod:`merginguriel_core.signal_weighting`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.maths.weights import fit_accuracy
from merginguriel_core.params import Param
from merginguriel_core.signal_weighting import SignalWeighting, read_nxn

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


class LearnedWeighting(SignalWeighting):
    name = "learned"
    description = ("Weights from an N×N zero-shot matrix: fit accuracy ≈ a + b·similarity (pairs involving the target "
                   "left out), weight sources by predicted accuracy^power.")
    params = (
        Param("nxn_matrix", str, "", "mu nxn's evaluation_matrix.csv (rows sources, columns targets)"),
        Param("power", float, 1.0, "exponent on predicted accuracy (larger sharpens)", minimum=0.0),
    )

    def method_steps(self, request, matrix, target, candidates, similarity):
        if not request.params["nxn_matrix"]:
            raise ConfigError("weighting 'learned' needs --weighting-param nxn_matrix=PATH (mu nxn's evaluation_matrix.csv)")
        path = Path(request.params["nxn_matrix"])
        sources, targets, accuracy = read_nxn(path)
        pairs_x, pairs_y = [], []
        for i, source in enumerate(sources):
            for j, other in enumerate(targets):
                if source == other or target in (source, other) or not math.isfinite(accuracy[i, j]):
                    continue
                if source in matrix.locales and other in matrix.locales:
                    pairs_x.append(matrix.values[matrix.index(source), matrix.index(other)])
                    pairs_y.append(accuracy[i, j])
        intercept, slope = fit_accuracy(np.array(pairs_x), np.array(pairs_y))
        predicted = intercept + slope * similarity
        raised = np.power(np.clip(predicted, 0.0, None), request.params["power"])
        if not raised.sum() > 0:
            raise ConfigError(f"the fit (accuracy = {intercept:.3f} + {slope:.3f}·similarity) predicts no positive "
                              f"accuracy for any candidate of {target}")
        details: dict[str, Any] = {"fit": {"intercept": intercept, "slope": slope, "pairs": len(pairs_x),
                                           "left_out_target": target, "nxn_matrix": str(path)}}
        if slope < 0:
            details["note"] = (f"the fitted accuracy falls with similarity (slope {slope:.3f}): less similar "
                               "sources get more weight")
        return [("predicted accuracy", predicted)], raised / raised.sum(), details


@hookimpl
def register_weightings(register):
    register(LearnedWeighting())
