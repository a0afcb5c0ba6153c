"""From options to chosen sources: the similarity matrix a weighting works on, and the
one entry point (:func:`select_sources`) that ``mu merge`` (and the ensemble commands)
use, so the same options always give the same weights. ``mu similarity`` shows the same
uriel computation step by step, from the same :func:`similarity_matrix_for`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import SELECTION_OPTIONS, WeightingRequest, WeightResult, Weighting
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language
from merginguriel_core.params import parse_pairs, resolve_params
from merginguriel_core.similarity import SimilarityMatrix, uriel_similarity_matrix


def check_selection_options(top_k: int, sinkhorn_iters: int, num_languages: int) -> None:
    """The shared options' ranges, checked before anything is computed."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if sinkhorn_iters < 0:
        raise ConfigError(f"--sinkhorn-iters must be at least 0, got {sinkhorn_iters}")
    if num_languages < 1:
        raise ConfigError(f"--num-languages must be at least 1, got {num_languages}")


def check_options_read(given: Iterable[str], universe: Iterable[str], read: Iterable[str], owner: str,
                       readers: Mapping[str, Iterable[str]] | None = None) -> None:
    """Refuse an option the user gave that ``owner`` does not read, so none is silently ignored.

    ``given``: options given explicitly (names with underscores); ``universe``: the options
    this check is about; ``read``: those ``owner`` reads; ``readers``: other plugin name ->
    the options it reads, to say which would read it.
    """
    unread = sorted(set(given) & set(universe) - set(read))
    if not unread:
        return
    option = "--" + unread[0].replace("_", "-")
    others = sorted(name for name, options in (readers or {}).items() if unread[0] in set(options))
    hint = f" (read by {', '.join(others)})" if others else ""
    raise ConfigError(f"{option} is not read by {owner}{hint}; drop it, or choose a method that reads it")


def check_weighting_options(weighting: Weighting, given: Iterable[str], target: str | None,
                            alternatives: Iterable[Weighting] = ()) -> None:
    """:func:`check_options_read` for a weighting's shared selection options."""
    check_options_read(given, SELECTION_OPTIONS, weighting.options_read(target), f"--weighting {weighting.name}",
                       {other.name: other.options_read(target) for other in alternatives})


def similarity_matrix_for(request: WeightingRequest) -> SimilarityMatrix:
    """The matrix a similarity-based weighting works on.

    From ``--similarity-matrix`` when given; otherwise URIEL similarity over the 52 MASSIVE
    locales plus the target and any available locale outside them.
    """
    if request.similarity_matrix is not None:
        matrix = SimilarityMatrix.from_csv(request.similarity_matrix)
        if request.target is not None and request.target not in matrix.locales:
            raise ConfigError(
                f"target {request.target} is not in --similarity-matrix {request.similarity_matrix}"
            )
        return matrix
    universe = list(MASSIVE_LOCALES)
    for locale in [request.target, *request.available]:
        if locale is not None and locale not in universe:
            universe.append(locale)
    return uriel_similarity_matrix(universe, request.features)


def similarity_details(request: WeightingRequest, **extra: Any) -> dict[str, Any]:
    """The options a similarity-based weighting used, for ``merge_details.json``."""
    return {
        "features": None if request.similarity_matrix else request.features,
        "similarity_matrix": str(request.similarity_matrix) if request.similarity_matrix else None,
        "top_k": request.top_k,
        "num_languages": request.num_languages,
        "include_target": request.include_target,
        **extra,
    }


def parse_manual_weights(items: Iterable[str]) -> dict[str, float]:
    """Parse ``--weights de-DE=0.5,nl-NL=0.5`` into canonical locale -> weight."""
    weights: dict[str, float] = {}
    for code, value in parse_pairs(items, "--weights"):
        entry = f"{code}={value}"
        locale = resolve_language(code).locale
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"--weights entry {entry!r}: {value!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--weights entry {entry!r}: weights must be finite and >= 0")
        if locale in weights:
            raise ConfigError(f"--weights names {locale} twice")
        weights[locale] = weight
    return weights


@dataclass
class Selection:
    """The outcome of :func:`select_sources`."""

    weighting: str
    target: str | None
    result: WeightResult
    request: WeightingRequest


def select_sources(
    weighting: Weighting,
    *,
    target: str | None,
    available: Iterable[str],
    source_langs: Iterable[str] | None = None,
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    num_languages: int = 5,
    include_target: bool = False,
    features: str = "syntax_knn",
    similarity_matrix: Path | None = None,
    manual_weights: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Selection:
    """Resolve codes, narrow the available models, run ``weighting`` and check its result."""
    check_selection_options(top_k, sinkhorn_iters, num_languages)
    target_locale = resolve_language(target).locale if target else None
    if weighting.needs_target and target_locale is None:
        raise ConfigError(f"weighting {weighting.name!r} needs --target-lang")
    available_set = [resolve_language(code).locale for code in available]
    if source_langs:
        wanted = [resolve_language(code).locale for code in source_langs]
        repeated = sorted({code for code in wanted if wanted.count(code) > 1})
        if repeated:
            raise ConfigError(f"--source-langs names {', '.join(repeated)} more than once (aliases count as the same language)")
        missing = [code for code in wanted if code not in available_set]
        if missing:
            raise ConfigError(
                f"--source-langs {', '.join(missing)} has no model; available: {', '.join(sorted(available_set))}"
            )
        available_set = wanted
    if not include_target and target_locale is not None:
        available_set = [code for code in available_set if code != target_locale]
    if not available_set:
        raise ConfigError(
            f"no source models available for target {target_locale}"
            + ("" if include_target else " (its own model is excluded; pass --include-target to allow it)")
        )
    request = WeightingRequest(
        target=target_locale,
        available=tuple(available_set),
        top_k=top_k,
        sinkhorn_iters=sinkhorn_iters,
        num_languages=num_languages,
        include_target=include_target,
        features=features,
        similarity_matrix=similarity_matrix,
        manual_weights=manual_weights,
        params=resolve_params(weighting.params, params or {}, f"weighting {weighting.name!r}"),
    )
    result = weighting.compute(request)
    _check_result(weighting.name, result, set(available_set))
    unused = [code for code in available_set if code not in dict(result.weights)]
    if unused and source_langs:
        result.notes.append(f"not used (weight 0 or beyond --num-languages): {', '.join(unused)}")
    return Selection(weighting.name, target_locale, result, request)


def _check_result(name: str, result: WeightResult, available: set[str]) -> None:
    if not result.weights:
        raise ConfigError(f"weighting {name!r} selected no source models")
    chosen = [locale for locale, _ in result.weights]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"weighting {name!r} selected a language twice: {', '.join(chosen)}")
    for locale, weight in result.weights:
        if locale not in available:
            raise ConfigError(f"weighting {name!r} selected {locale}, which has no available model")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"weighting {name!r} gave {locale} the weight {weight}; weights must be finite and >= 0")
    total = sum(w for _, w in result.weights)
    if not math.isclose(total, 1.0, rel_tol=1e-6):
        raise ConfigError(f"weighting {name!r} returned weights summing to {total}, not 1")
