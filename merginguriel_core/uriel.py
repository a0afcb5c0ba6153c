"""URIEL language vectors, read from the data files that the lang2vec wheel ships.

This module reads those ``.npz`` files itself, each once per process, with the same
selection as ``lang2vec.get_features`` (a test checks the values agree). Going through
lang2vec would cost 3 to 6 s: importing ``lang2vec.lang2vec`` scans a data file twice, and
every ``get_features`` call decompresses its file again.

lang2vec does ``import pkg_resources``, which setuptools 82 and later no longer provide.
:func:`load_lang2vec` installs a one-function stand-in (``resource_filename``, built on
:mod:`importlib.resources`) into ``sys.modules`` only when the real module is missing.

Missing values: lang2vec marks unknown feature values with -1 (``--`` in its text output).
They occur in the observed sets (``syntax_wals``, ``inventory_phoible_*`` ...), never in the
``*_knn`` sets. We read them as 0.0, "feature not attested", so they add nothing to a dot
product; a language with no known value in a set gets the zero vector, which
:func:`merginguriel_core.similarity.cosine_similarity_matrix` treats as similar to nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.languages import Language

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np

DEFAULT_FEATURES = "syntax_knn"

#: Where each lang2vec feature set lives: (data file, source, feature-name prefix), as in
#: lang2vec 1.1.2's ``FEATURE_SETS_DICT`` (a test checks they agree). Left out: ``id`` (a
#: one-hot identity, so every pair of languages is orthogonal) and ``learned`` (a pickled
#: table that covers only some languages).
_LOCATIONS: dict[str, tuple[str, str, str]] = {
    "syntax_knn": ("feature_predictions.npz", "predicted", "S_"),
    "phonology_knn": ("feature_predictions.npz", "predicted", "P_"),
    "inventory_knn": ("feature_predictions.npz", "predicted", "INV_"),
    "syntax_average": ("feature_averages.npz", "avg", "S_"),
    "phonology_average": ("feature_averages.npz", "avg", "P_"),
    "inventory_average": ("feature_averages.npz", "avg", "INV_"),
    "syntax_wals": ("features.npz", "WALS", "S_"),
    "phonology_wals": ("features.npz", "WALS", "P_"),
    "syntax_sswl": ("features.npz", "SSWL", "S_"),
    "syntax_ethnologue": ("features.npz", "ETHNO", "S_"),
    "phonology_ethnologue": ("features.npz", "ETHNO", "P_"),
    "inventory_ethnologue": ("features.npz", "ETHNO", "INV_"),
    "inventory_phoible_aa": ("features.npz", "PHOIBLE_AA", "INV_"),
    "inventory_phoible_gm": ("features.npz", "PHOIBLE_GM", "INV_"),
    "inventory_phoible_saphon": ("features.npz", "PHOIBLE_SAPHON", "INV_"),
    "inventory_phoible_spa": ("features.npz", "PHOIBLE_SPA", "INV_"),
    "inventory_phoible_ph": ("features.npz", "PHOIBLE_PH", "INV_"),
    "inventory_phoible_ra": ("features.npz", "PHOIBLE_RA", "INV_"),
    "inventory_phoible_upsid": ("features.npz", "PHOIBLE_UPSID", "INV_"),
    "fam": ("family_features.npz", "FAM", ""),
    "geo": ("geocoord_features.npz", "GEOCOORDS", ""),
}

#: The feature set names :func:`parse_features` accepts.
FEATURE_SETS: tuple[str, ...] = tuple(_LOCATIONS)

_MISSING = -1.0


def _resource_filename(package_or_module: str, resource: str) -> str:
    """Return the path of ``resource`` next to a module, like ``pkg_resources`` does."""
    spec = importlib.util.find_spec(package_or_module)
    if spec is not None and spec.submodule_search_locations is None:
        parent = package_or_module.rpartition(".")[0]
        if not parent:  # a top-level plain module: its resources sit beside its file
            return str(Path(spec.origin or "").parent / resource)
        package_or_module = parent
    return str(importlib.resources.files(package_or_module).joinpath(resource))


def pkg_resources_shim() -> types.ModuleType:
    """Return a stand-in ``pkg_resources`` module offering only ``resource_filename``."""
    module = types.ModuleType("pkg_resources")
    module.__doc__ = "MergingUriel stand-in: only resource_filename, for lang2vec."
    module.resource_filename = _resource_filename  # type: ignore[attr-defined]
    return module


def _ensure_pkg_resources() -> None:
    """Install :func:`pkg_resources_shim` unless a real ``pkg_resources`` imports."""
    if sys.modules.get("pkg_resources") is not None:
        return
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        sys.modules["pkg_resources"] = pkg_resources_shim()


@cache
def load_lang2vec() -> Any:
    """Import and return the ``lang2vec.lang2vec`` module (after the shim, if needed)."""
    _ensure_pkg_resources()
    return importlib.import_module("lang2vec.lang2vec")


def parse_features(spec: str) -> tuple[str, ...]:
    """Split a feature spec such as ``"syntax_knn+phonology_knn"`` into set names.

    The vectors of the named sets are concatenated in the order given.

    Raises:
        ConfigError: an empty or unknown set name, or a set named twice.
    """
    parts = tuple(part.strip() for part in str(spec).split("+"))
    for part in parts:
        if part not in FEATURE_SETS:
            raise ConfigError(
                f"unknown URIEL feature set {part!r} in {spec!r}; allowed: "
                f"{', '.join(FEATURE_SETS)} (join several with '+')"
            )
    if len(set(parts)) != len(parts):
        raise ConfigError(f"URIEL feature spec {spec!r} names a feature set twice")
    return parts


@dataclass(frozen=True)
class _FeatureTable:
    """One lang2vec feature set for all URIEL languages: ``values[row[iso]]``."""

    row: dict[str, int]
    values: np.ndarray  # (languages, features) float64, missing values already 0.0


def _data_file(filename: str) -> Path:
    """The path of one of lang2vec's data files, found through its installed distribution.

    Not through ``import lang2vec``: lang2vec also installs a script ``bin/lang2vec.py``,
    which shadows the package whenever the scripts folder is first on ``sys.path`` (as it is
    for the ``mu`` console script).
    """
    try:
        distribution = importlib.metadata.distribution("lang2vec")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("URIEL data needs the lang2vec package; pip install lang2vec==1.1.2") from None
    path = Path(str(distribution.locate_file(f"lang2vec/data/{filename}")))
    if not path.is_file():
        raise ConfigError(f"lang2vec is installed but its data file {path} is missing; reinstall lang2vec==1.1.2")
    return path


@cache
def _npz(filename: str) -> dict[str, np.ndarray]:
    """Load one of lang2vec's ``.npz`` files fully, once per process."""
    with np.load(_data_file(filename)) as archive:
        return {key: archive[key] for key in archive.files}


@cache
def _feature_table(feature_set: str) -> _FeatureTable:
    """Slice one feature set out of its lang2vec file (same selection as lang2vec)."""
    filename, source, prefix = _LOCATIONS[feature_set]
    database = _npz(filename)
    features = [i for i, name in enumerate(database["feats"]) if str(name).startswith(prefix)]
    (source_index,) = np.flatnonzero(database["sources"] == source)
    values = database["data"][:, features, source_index].astype(np.float64)
    values[values == _MISSING] = 0.0
    values.setflags(write=False)
    row = {str(code): i for i, code in enumerate(database["langs"])}
    return _FeatureTable(row=row, values=values)


@lru_cache(maxsize=4096)
def _vector(iso639_3: str, feature_sets: tuple[str, ...]) -> np.ndarray:
    """Return the concatenated URIEL vector of one language (read-only)."""
    parts = []
    for feature_set in feature_sets:
        table = _feature_table(feature_set)
        if iso639_3 not in table.row:
            raise LanguageError(
                f"language {iso639_3!r} has no URIEL vector in feature set {feature_set!r}"
            )
        parts.append(table.values[table.row[iso639_3]])
    vector = np.concatenate(parts)
    vector.setflags(write=False)
    return vector


def uriel_vectors(languages: Sequence[Language], features: str = DEFAULT_FEATURES) -> np.ndarray:
    """Return the URIEL vectors of ``languages`` as an ``(N, D)`` float64 array.

    Args:
        languages: the languages, one row each, in this order.
        features: a feature set name or several joined with ``+`` (see :func:`parse_features`).

    Raises:
        ConfigError: a bad feature spec.
        LanguageError: a language that URIEL does not cover.
    """
    feature_sets = parse_features(features)
    if not languages:
        width = sum(_feature_table(name).values.shape[1] for name in feature_sets)
        return np.zeros((0, width))
    return np.stack([_vector(language.iso639_3, feature_sets) for language in languages])
