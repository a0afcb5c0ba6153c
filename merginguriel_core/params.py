"""Declared parameters of plugins, parsed from ``KEY=VALUE`` text and validated up front."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from merginguriel_core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One parameter a strategy, weighting or voting method accepts.

    ``minimum``/``maximum`` bound numeric values; ``*_inclusive`` say whether the bound
    itself is allowed, so ``density`` in (0, 1] is ``minimum=0, min_inclusive=False,
    maximum=1``.
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    choices: tuple[Any, ...] | None = None

    def range_text(self) -> str:
        """The allowed values in interval notation, e.g. ``(0, 1]``; empty when unbounded."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.minimum is None and self.maximum is None:
            return ""
        low = "(" if not self.min_inclusive or self.minimum is None else "["
        high = ")" if not self.max_inclusive or self.maximum is None else "]"
        low_value = "-inf" if self.minimum is None else f"{self.minimum:g}"
        high_value = "inf" if self.maximum is None else f"{self.maximum:g}"
        return f"{low}{low_value}, {high_value}{high}"

    def parse(self, raw: Any, owner: str) -> Any:
        """Convert ``raw`` (text from the command line, or a Python value) and check it."""
        value = self._convert(raw, owner)
        self.check(value, owner)
        return value

    def _convert(self, raw: Any, owner: str) -> Any:
        if raw is None and self.default is None:  # "not set", for a param whose default is unset
            return None
        if not isinstance(raw, str):
            if self.type is float and isinstance(raw, int) and not isinstance(raw, bool):
                return float(raw)
            if isinstance(raw, self.type):
                return raw
            raw = str(raw)
        text = raw.strip()
        try:
            if self.type is bool:
                if text.lower() in _TRUE:
                    return True
                if text.lower() in _FALSE:
                    return False
                raise ValueError(text)
            return self.type(text)
        except ValueError:
            raise ConfigError(
                f"parameter {self.name}={raw!r} of {owner} is not a valid {self.type.__name__}"
            ) from None

    def check(self, value: Any, owner: str) -> None:
        """Raise :class:`ConfigError` naming the value and the allowed range if it is out of it."""
        allowed = self.range_text()
        bad = False
        if self.choices is not None:
            bad = value not in self.choices
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                bad = True
            if self.minimum is not None:
                bad |= value < self.minimum or (not self.min_inclusive and value == self.minimum)
            if self.maximum is not None:
                bad |= value > self.maximum or (not self.max_inclusive and value == self.maximum)
        if bad:
            raise ConfigError(f"parameter {self.name}={value} of {owner} is out of range; allowed: {allowed}")


def parse_pairs(items: Iterable[str], option: str) -> list[tuple[str, str]]:
    """Parse ``["a=1,b=2", "c=3"]`` (repeated options, commas also separate) into pairs."""
    pairs = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{option} {part!r} is not KEY=VALUE")
            pairs.append((key.strip(), value.strip()))
    return pairs


def parse_assignments(items: Iterable[str], option: str) -> dict[str, str]:
    """Parse ``["density=0.5", "t=0.3"]`` into a dict of raw strings; a key given twice is an error."""
    result: dict[str, str] = {}
    for key, value in parse_pairs(items, option):
        if key in result:
            raise ConfigError(f"{option} gives {key} twice")
        result[key] = value
    return result


def resolve_params(declared: Sequence[Param], given: Mapping[str, Any], owner: str,
                   elsewhere: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate ``given`` against ``declared`` and fill in defaults.

    Unknown names raise :class:`ConfigError` listing the allowed ones; values are converted
    and range-checked by :meth:`Param.parse`. ``elsewhere`` maps the names of other plugins'
    parameters to where they go (``"weighting 'softmax': --weighting-param"``), so that a
    parameter given to the wrong plugin says where it belongs.
    """
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        allowed = ", ".join(sorted(by_name)) or "none"
        hint = ""
        if elsewhere and unknown[0] in elsewhere:
            owner_there, option = elsewhere[unknown[0]].rsplit(": ", 1)
            hint = f"; {unknown[0]!r} is a parameter of {owner_there}: give it as {option} {unknown[0]}=VALUE"
        raise ConfigError(f"unknown parameter {unknown[0]!r} for {owner}; allowed: {allowed}{hint}")
    values = {p.name: p.default for p in declared}
    for name, raw in given.items():
        values[name] = by_name[name].parse(raw, owner)
    return values
