"""How a weighting got from similarity to weights, step by step, for ``--explain``.

A weighting returns an :class:`Explanation` as ``WeightResult.trace``: for each step (raw
similarity, top-k, normalisation, available models, final weights) the value every
listed language has after it. :func:`explanation_table` prints it; :func:`plot_explanation`
draws it as grouped bars (one group per language, one bar per step) into a PNG.
Weightings that return no explanation are explained by their final weights alone, next to
the raw similarity when a target and a matrix are known (:func:`fallback_explanation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from merginguriel_core.languages import resolve_language
from merginguriel_core.outputs import atomic_file

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


@dataclass
class Explanation:
    """One target's weights after each step of a weighting.

    Attributes:
        target: the target's canonical locale.
        locales: the languages shown, one per entry of each step's values.
        steps: ``(step name, values)`` in order; ``values[i]`` belongs to ``locales[i]``
            (NaN where the step does not apply to that language).
        selected: the final ``(locale, weight)`` pairs, highest first, summing to 1.
        notes: remarks of the weighting (fewer sources than asked, sources skipped, ...).
    """

    target: str
    locales: list[str]
    steps: list[tuple[str, np.ndarray]]
    selected: list[tuple[str, float]]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.steps = [(name, np.asarray(values, dtype=np.float64)) for name, values in self.steps]
        for name, values in self.steps:
            if values.shape != (len(self.locales),):
                raise ValueError(f"step {name!r} has {values.shape} values for {len(self.locales)} languages")

    def order(self) -> list[int]:
        """Rows to show: selected sources first (by weight), then by raw similarity."""
        weights = dict(self.selected)
        first = self.steps[0][1] if self.steps else np.zeros(len(self.locales))
        return sorted(
            range(len(self.locales)),
            key=lambda i: (-weights.get(self.locales[i], -1.0), -np.nan_to_num(first[i], nan=-1.0), self.locales[i]),
        )

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "steps": [name for name, _ in self.steps],
            "languages": [
                {"locale": self.locales[i], "name": _name(self.locales[i]),
                 **{name: (None if math.isnan(values[i]) else float(values[i])) for name, values in self.steps}}
                for i in self.order()
            ],
            "selected": [[locale, weight] for locale, weight in self.selected],
            "notes": list(self.notes),
        }


def _name(locale: str) -> str:
    try:
        return resolve_language(locale).name
    except Exception:  # a locale from a user's matrix that we cannot name
        return locale


def final_step(locales: list[str], selected: list[tuple[str, float]]) -> np.ndarray:
    weights = dict(selected)
    return np.array([weights.get(locale, 0.0) for locale in locales])


def fallback_explanation(target: str, selected: list[tuple[str, float]], notes: list[str],
                         similarity: dict[str, float] | None) -> Explanation:
    """An explanation from final weights alone (and raw similarity when known)."""
    locales = sorted({*dict(selected), *(similarity or {})})
    steps = []
    if similarity:
        steps.append(("similarity", np.array([similarity.get(locale, math.nan) for locale in locales])))
    steps.append(("final", final_step(locales, selected)))
    return Explanation(target, locales, steps, selected, notes)


def explanation_table(explanation: Explanation, limit: int | None = 20) -> str:
    """The steps as a fixed-width table, one row per language."""
    names = [name for name, _ in explanation.steps]
    width = max(9, *(len(name) for name in names))
    header = f"{'rank':>4}  {'locale':<10} {'language':<22}" + "".join(f" {name:>{width}}" for name in names)
    lines = [header]
    rows = explanation.order()
    for rank, i in enumerate(rows[:limit] if limit else rows, start=1):
        cells = "".join(
            f" {'—':>{width}}" if math.isnan(values[i]) else f" {values[i]:>{width}.4f}" for _, values in explanation.steps
        )
        lines.append(f"{rank:>4}  {explanation.locales[i]:<10} {_name(explanation.locales[i])[:22]:<22}{cells}")
    return "\n".join(lines)


def plot_explanation(explanation: Explanation, path: Path, title: str, limit: int = 12, *, replace: bool = True) -> None:
    """Grouped bar chart of the steps for the ``limit`` first languages, written atomically.

    Each step is scaled to sum to 1 over the languages shown (similarities and weights live
    on different scales; the shares are what a step does to the ranking), so bars compare
    how much of the total each language gets at each step.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = explanation.order()[:limit]
    labels = [explanation.locales[i] for i in rows]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.75 * len(rows) + 2), 4.2), dpi=110)
    count = len(explanation.steps)
    width = 0.8 / max(count, 1)
    positions = np.arange(len(rows))
    for index, (name, values) in enumerate(explanation.steps):
        shown = np.nan_to_num(values[rows], nan=0.0)
        total = shown.sum()
        share = shown / total if total > 0 else shown
        axis.bar(positions + (index - (count - 1) / 2) * width, share, width, label=name)
    axis.set_xticks(positions, labels, rotation=45, ha="right")
    axis.set_ylabel("share of the step's total over the languages shown")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    try:
        with atomic_file(path, "wb", replace=replace) as handle:
            figure.savefig(handle, format="png")
    finally:
        plt.close(figure)
