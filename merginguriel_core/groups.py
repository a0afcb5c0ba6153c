"""Per-tensor-group merge weights: a weight for every source in every group of tensors (a layer).

A weighting normally gives one weight per source for the whole model. One that learns more
(``adamerging``) may return :class:`GroupWeights` as well: for each group of tensors, named
by :func:`tensor_group`, its own weights over the same sources. The merge engine then gives
every tensor of a group that group's weights (``Chunk.weights``, ``TensorJob.weights``), so
every strategy honours them without knowing about groups; a tensor whose group is not listed
keeps the model-level weights. ``merge_details.json`` records the table, and a merged folder
holds ``group_weights.png``, a heatmap of group × source.

Groupings:

- ``layer``: the transformer blocks (``...layer.3...`` -> ``layer.3``), ``embeddings``
  (any tensor whose name mentions ``embed``) and ``head`` (everything else: pooler,
  classifier, final norms);
- ``tensor``: every tensor its own group (AdaMerging's "layer-wise" coefficients);
- ``model``: one group, ``model``, for all tensors (task-wise coefficients).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from merginguriel_core.errors import ConfigError

GROUPINGS = ("layer", "tensor", "model")
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def tensor_group(name: str, grouping: str) -> str:
    """The group of tensor ``name`` under ``grouping`` (one of :data:`GROUPINGS`)."""
    if grouping == "tensor":
        return name
    if grouping == "model":
        return "model"
    if grouping != "layer":
        raise ConfigError(f"unknown grouping {grouping!r}; allowed: {', '.join(GROUPINGS)}")
    block = _BLOCK.search(name)
    if block:
        return f"layer.{int(block.group(1))}"
    return "embeddings" if "embed" in name else "head"


def group_order(name: str) -> tuple[int, int, str]:
    """Sort key: embeddings, then layers by number, then the head, then anything else by name."""
    if name == "embeddings":
        return (0, 0, name)
    if name.startswith("layer.") and name[6:].isdigit():
        return (1, int(name[6:]), name)
    return (2 if name in ("head", "model") else 3, 0, name)


@dataclass(frozen=True)
class GroupWeights:
    """Weights per group of tensors: ``groups[g][i]`` is the weight of ``locales[i]`` in group ``g``.

    Each group's weights are finite, non-negative and sum to 1 (:meth:`normalised` makes them
    so). ``grouping`` says how tensor names map to groups (:func:`tensor_group`).
    """

    grouping: str
    locales: tuple[str, ...]
    groups: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"unknown grouping {self.grouping!r}; allowed: {', '.join(GROUPINGS)}")
        object.__setattr__(self, "locales", tuple(self.locales))
        groups = {str(g): tuple(float(w) for w in ws) for g, ws in dict(self.groups).items()}
        for group, weights in groups.items():
            if len(weights) != len(self.locales):
                raise ConfigError(f"group {group!r} has {len(weights)} weights for {len(self.locales)} sources")
            if any(not math.isfinite(w) or w < 0 for w in weights):
                raise ConfigError(f"group {group!r} has a weight that is negative or not finite: {list(weights)}")
            if sum(weights) <= 0:
                raise ConfigError(f"group {group!r}: all source weights are zero")
        object.__setattr__(self, "groups", MappingProxyType(dict(sorted(groups.items(), key=lambda i: group_order(i[0])))))

    def normalised(self) -> "GroupWeights":
        """Each group's weights scaled to sum to 1."""
        return GroupWeights(self.grouping, self.locales,
                            {g: tuple(w / math.fsum(ws) for w in ws) for g, ws in self.groups.items()})

    def reordered(self, locales: Iterable[str]) -> "GroupWeights":
        """The same weights with the sources in the order ``locales`` (which must be the same set)."""
        locales = tuple(locales)
        if sorted(locales) != sorted(self.locales):
            raise ConfigError(f"the group weights are for sources {', '.join(self.locales)}, "
                              f"the merge has {', '.join(locales)}")
        index = [self.locales.index(locale) for locale in locales]
        return GroupWeights(self.grouping, locales, {g: tuple(ws[i] for i in index) for g, ws in self.groups.items()})

    def for_tensor(self, name: str) -> tuple[float, ...] | None:
        """The weights of tensor ``name``'s group, or ``None`` when its group is not listed."""
        return self.groups.get(tensor_group(name, self.grouping))

    def mean(self) -> list[tuple[str, float]]:
        """Each source's mean weight over the groups (summing to 1): the model-level summary."""
        count = len(self.groups)
        return [(locale, math.fsum(ws[i] for ws in self.groups.values()) / count)
                for i, locale in enumerate(self.locales)]

    def to_json(self) -> dict[str, Any]:
        return {"grouping": self.grouping, "sources": list(self.locales),
                "groups": {g: [round(w, 6) for w in ws] for g, ws in self.groups.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GroupWeights":
        return cls(data["grouping"], tuple(data["sources"]), {g: tuple(ws) for g, ws in data["groups"].items()})

    def to_frame(self):
        """A :class:`pandas.DataFrame`: one row per group, one column per source."""
        import pandas as pd

        return pd.DataFrame([list(ws) for ws in self.groups.values()],
                            index=pd.Index(list(self.groups), name="tensor group"),
                            columns=pd.Index(list(self.locales), name="source"))

    def table(self) -> str:
        """The weights as fixed-width text, one line per group (for ``merge_details.txt``)."""
        width = max([len("Group")] + [len(g) for g in self.groups])
        lines = [f"{'Group':<{width}} " + " ".join(f"{locale:>8}" for locale in self.locales)]
        for group, weights in self.groups.items():
            lines.append(f"{group:<{width}} " + " ".join(f"{w:>8.4f}" for w in weights))
        return "\n".join(lines)

    def plot(self, path: Path, title: str) -> None:
        """A heatmap of group × source into the PNG ``path``."""
        from merginguriel_core.plots import heatmap

        heatmap(self.to_frame(), path, title, value_format=".2f", label="weight")
