"""Where source models come from: a folder of per-locale models, a CSV registry, or hub ids.

Every source is a :class:`ModelRef` keyed by its canonical locale. Locales are resolved with
:func:`merginguriel_core.languages.resolve_language`, so ``sw-KE``, ``swh_Latn`` and ``swh``
name the same model; two models for one locale are an error, never a silent pick.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from merginguriel_core.errors import ConfigError, LanguageError, ModelError, first_line
from merginguriel_core.languages import resolve_language

DEFAULT_PATTERN = "xlm-roberta-base_massive_k_{locale}"
#: Files fetched from the hub: weights as safetensors only, plus config and tokenizer files.
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "merges.txt", "vocab.*"]


@dataclass(frozen=True)
class ModelRef:
    """One source model: its canonical locale and a local path or hub id."""

    locale: str
    location: str
    base_model: str | None = None

    def is_local(self) -> bool:
        return Path(self.location).exists()


def _add(found: dict[str, ModelRef], ref: ModelRef, origin: str) -> None:
    previous = found.get(ref.locale)
    if previous is not None:
        raise ModelError(
            f"two models for locale {ref.locale} in {origin}: {previous.location} and {ref.location}"
        )
    found[ref.locale] = ref


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching folder names made from ``pattern`` (which must contain ``{locale}``)."""
    if pattern.count("{locale}") != 1:
        raise ConfigError(f"--model-pattern {pattern!r} must contain {{locale}} exactly once")
    if "/" in pattern or "\\" in pattern or ".." in pattern or (os.altsep and os.altsep in pattern):
        raise ConfigError(
            f"--model-pattern {pattern!r} must be a folder name: no path separator (/ or \\) and no '..'"
        )
    try:
        pattern.format(locale="xx")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"--model-pattern {pattern!r} may hold no braces other than {{locale}}") from None
    prefix, suffix = pattern.split("{locale}")
    return re.compile(re.escape(prefix) + r"(?P<locale>[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)?)" + re.escape(suffix) + "$")


def discover_models(folder: str | Path, pattern: str = DEFAULT_PATTERN) -> dict[str, ModelRef]:
    """Find per-locale model folders in ``folder`` whose names match ``pattern``.

    Folders whose locale part is not a known language code are an error naming them, so a
    typo never silently drops a model.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelError(f"--models {root} is not a folder")
    regex = pattern_regex(pattern)
    found: dict[str, ModelRef] = {}
    for child in sorted(root.iterdir()):
        match = regex.match(child.name)
        if not child.is_dir() or match is None:
            continue
        try:
            language = resolve_language(match.group("locale"))
        except LanguageError as exc:
            raise ModelError(f"model folder {child} does not name a known locale: {exc}") from None
        _add(found, ModelRef(language.locale, str(child)), str(root))
    if not found:
        raise ModelError(f"no model folders matching {pattern!r} in {root}")
    return found


def read_registry(path: str | Path) -> dict[str, ModelRef]:
    """Read a CSV registry with columns ``locale``, ``path`` (a path or hub id), optional ``base_model``.

    Relative paths are taken relative to the CSV file's folder.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise ModelError(f"--registry {csv_path} does not exist")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        missing = {"locale", "path"} - columns
        if missing:
            raise ModelError(
                f"registry {csv_path} lacks column(s) {', '.join(sorted(missing))}; "
                f"expected locale, path[, base_model], found {', '.join(sorted(columns)) or 'none'}"
            )
        found: dict[str, ModelRef] = {}
        for line, row in enumerate(reader, start=2):
            code, location = (row.get("locale") or "").strip(), (row.get("path") or "").strip()
            if not code or not location:
                raise ModelError(f"registry {csv_path} line {line}: empty locale or path")
            language = resolve_language(code)
            local = csv_path.parent / location
            if not Path(location).is_absolute() and local.exists():
                location = str(local)
            base = (row.get("base_model") or "").strip() or None
            _add(found, ModelRef(language.locale, location, base), str(csv_path))
    if not found:
        raise ModelError(f"registry {csv_path} lists no models")
    return found


def parse_model_options(items: Iterable[str]) -> dict[str, ModelRef]:
    """Parse ``--model LOCALE=PATH_OR_HUB_ID`` options."""
    found: dict[str, ModelRef] = {}
    for item in items:
        code, sep, location = item.partition("=")
        if not sep or not code.strip() or not location.strip():
            raise ConfigError(f"--model {item!r} is not LOCALE=PATH_OR_HUB_ID")
        _add(found, ModelRef(resolve_language(code.strip()).locale, location.strip()), "--model options")
    return found


def collect_models(
    models_dir: str | Path | None = None,
    pattern: str = DEFAULT_PATTERN,
    registry: str | Path | None = None,
    model_options: Iterable[str] = (),
) -> dict[str, ModelRef]:
    """All source models from every given origin; a locale given twice is an error."""
    found: dict[str, ModelRef] = {}
    origins: list[Mapping[str, ModelRef]] = []
    if models_dir is not None:
        origins.append(discover_models(models_dir, pattern))
    if registry is not None:
        origins.append(read_registry(registry))
    origins.append(parse_model_options(model_options))
    for origin in origins:
        for ref in origin.values():
            _add(found, ref, "the given model sources")
    if not found:
        raise ConfigError("no source models given; use --models DIR, --registry CSV or --model LOCALE=PATH")
    return found


def resolve_location(location: str) -> Path:
    """A local folder for ``location``: the path itself, or a hub snapshot (safetensors only).

    Hub downloads fetch only safetensors weights, configs and tokenizer files, never
    pickle checkpoints, and never run remote code.
    """
    path = Path(location)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model {location} is a file; expected a model folder")
        return path
    if location.startswith((".", "/", "~")) or location.count("/") > 1:
        raise ModelError(f"model folder {location} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, auth: all one message
        raise ModelError(
            f"cannot fetch hub model {location!r} (no local folder of that name either): {first_line(exc)}"
        ) from None
