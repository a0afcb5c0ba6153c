"""From options to chosen sources: the similarity matrix a weighting works on, and the
one entry point (:func:`select_sources`) that ``mu merge`` (and the ensemble commands)
use, so the same options always give the same weights. ``mu similarity`` shows the same
uriel computation step by step, from the same :func:`similarity_matrix_for`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
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
    """:func:`check_options_read` for a weighting's shared selection options (and the target text)."""
    given = set(given)
    alternatives = list(alternatives)
    check_options_read(given, SELECTION_OPTIONS, weighting.options_read(target), f"--weighting {weighting.name}",
                       {other.name: other.options_read(target) for other in alternatives})
    if "target_text" in given and not weighting.needs_target_text:
        check_target_text(weighting, True, [other.name for other in alternatives if other.needs_target_text])


def check_target_text(weighting: Weighting, given: bool, readers: Iterable[str] = (), option: str = "--target-text") -> None:
    """Target text goes with exactly the weightings that read it: refuse it unread, or missing."""
    if given and not weighting.needs_target_text:
        hint = f" (read by {', '.join(sorted(readers))})" if readers else ""
        raise ConfigError(f"{option} is not read by --weighting {weighting.name}{hint}; drop it, or choose a "
                          f"weighting that reads it")
    if weighting.needs_target_text and not given:
        raise ConfigError(f"weighting {weighting.name!r} needs unlabelled target text; pass --target-text FILE "
                          f"(one sentence per line) or --target-text-split SPLIT (a split of --data-dir, labels unused)")


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


@dataclass(frozen=True)
class SelectionOptions:
    """Which sources a target gets, and how they are weighted: the shared selection options.

    Every command that selects sources (``mu merge``, ``mu ensemble``, ``mu
    compare-ensembles``, ``mu similarity --explain``) maps its options onto this one object,
    and the defaults are written only here. ``target`` and the codes in ``source_langs`` and
    ``manual_weights`` may be any code :func:`~merginguriel_core.languages.resolve_language`
    reads; ``weighting`` names a weighting plugin (``--weighting``), ``weighting_params`` its
    ``--weighting-param`` values.
    """

    target: str | None = None
    weighting: str = "uriel"
    weighting_params: Mapping[str, Any] = field(default_factory=dict)
    top_k: int = 20
    sinkhorn_iters: int = 20
    num_languages: int = 5
    include_target: bool = False
    features: str = "syntax_knn"
    similarity_matrix: Path | None = None
    source_langs: tuple[str, ...] | None = None
    manual_weights: Mapping[str, float] | None = None
    #: Unlabelled target-language text (:class:`~merginguriel_core.target_text.TargetText`),
    #: for the weightings that read it.
    target_text: Any = None

    def __post_init__(self) -> None:
        # Frozen all the way down: a plan built from these options cannot change under its run.
        object.__setattr__(self, "weighting_params", MappingProxyType(dict(self.weighting_params or {})))
        if self.manual_weights is not None:
            object.__setattr__(self, "manual_weights", MappingProxyType(dict(self.manual_weights)))
        if self.source_langs is not None:
            object.__setattr__(self, "source_langs", tuple(self.source_langs))
        if self.similarity_matrix is not None:
            object.__setattr__(self, "similarity_matrix", Path(self.similarity_matrix))

    def check(self) -> None:
        """The ranges of the numeric options (:func:`check_selection_options`), and the target text."""
        check_selection_options(self.top_k, self.sinkhorn_iters, self.num_languages)
        if self.target_text is not None:
            self.target_text.check()

    def given(self) -> frozenset[str]:
        """The option names (``top_k``, ``weights``, ...) set to something other than their
        default, for :func:`check_weighting_options` when no command line says what was given."""
        defaults = SelectionOptions()
        names = {"top_k", "sinkhorn_iters", "num_languages", "include_target", "features", "similarity_matrix"}
        given = {name for name in names if getattr(self, name) != getattr(defaults, name)}
        return frozenset(given | ({"weights"} if self.manual_weights else set())
                         | ({"target_text"} if self.target_text is not None else set()))


#: The option defaults, from :class:`SelectionOptions` (the CLI declares its options with these).
SELECTION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {f.name: getattr(SelectionOptions(), f.name) for f in fields(SelectionOptions)}
)


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_sources`: the chosen sources with weights summing to 1.

    ``weights`` is the one normalised copy every later step reads (merge, ensemble, the
    record in ``merge_details.json``); ``result`` is what the weighting returned.
    """

    weighting: str
    target: str | None
    result: WeightResult
    request: WeightingRequest
    weights: tuple[tuple[str, float], ...] = ()
    options: SelectionOptions | None = None

    @property
    def notes(self) -> list[str]:
        return self.result.notes

    @property
    def group_weights(self):
        """The weighting's per-group weights (:class:`~merginguriel_core.groups.GroupWeights`),
        normalised, sources in the order of :attr:`weights`; ``None`` when it gave none."""
        groups = self.result.group_weights
        return None if groups is None else groups.normalised().reordered(locale for locale, _ in self.weights)


def normalised(weights: Iterable[tuple[str, float]], owner: str = "the weights") -> tuple[tuple[str, float], ...]:
    """``(locale, weight)`` pairs scaled to sum to 1: the one place a merge's weights are normalised.

    Weights must be finite and non-negative, and not all zero.
    """
    pairs = [(locale, float(weight)) for locale, weight in weights]
    if not pairs:
        raise ConfigError("no source models selected")
    for locale, weight in pairs:
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{owner}: the weight of {locale} is {weight}; weights must be finite and >= 0")
    total = math.fsum(weight for _, weight in pairs)
    if total <= 0:
        raise ConfigError(f"{owner}: all source weights are zero")
    return tuple((locale, weight / total) for locale, weight in pairs)


def select_sources(weighting: Weighting, options: SelectionOptions | None = None, *,
                   available: Iterable[str], models: Mapping[str, Any] | None = None, base_model: Any = None,
                   device: str = "auto", **changes: Any) -> Selection:
    """Resolve codes, narrow the ``available`` locales, run ``weighting`` and check its result.

    ``changes`` replace fields of ``options`` (default :class:`SelectionOptions`), so
    ``select_sources(w, available=..., target="sw-KE", num_languages=3)`` reads as it should.
    ``models`` (locale -> folder or hub id), ``base_model`` and ``device`` reach the
    weightings that read the models (``adamerging``, ``representation``).
    """
    options = replace(options or SelectionOptions(), **changes)
    options.check()
    target_locale = resolve_language(options.target).locale if options.target else None
    if weighting.needs_target and target_locale is None:
        raise ConfigError(f"weighting {weighting.name!r} needs --target-lang")
    check_target_text(weighting, options.target_text is not None,
                      option=getattr(options.target_text, "option", "--target-text"))
    candidates = _candidates(options, target_locale, [resolve_language(code).locale for code in available])
    request = WeightingRequest(
        target=target_locale,
        available=tuple(candidates),
        top_k=options.top_k,
        sinkhorn_iters=options.sinkhorn_iters,
        num_languages=options.num_languages,
        include_target=options.include_target,
        features=options.features,
        similarity_matrix=options.similarity_matrix,
        manual_weights=_manual_weights(options.manual_weights),
        params=resolve_params(weighting.params, options.weighting_params, f"weighting {weighting.name!r}"),
        target_text=options.target_text,
        models={resolve_language(code).locale: str(location) for code, location in (models or {}).items()},
        base_model=None if base_model is None else str(base_model),
        device=device,
    )
    result = weighting.compute(request)
    _check_result(weighting.name, result, set(candidates))
    if result.group_weights is not None and sorted(result.group_weights.locales) != sorted(l for l, _ in result.weights):
        raise ConfigError(f"weighting {weighting.name!r} gave group weights for {', '.join(result.group_weights.locales)}"
                          f" but chose {', '.join(l for l, _ in result.weights)}")
    unused = [code for code in candidates if code not in dict(result.weights)]
    if unused and options.source_langs:
        result.notes.append(f"not used (weight 0 or beyond --num-languages): {', '.join(unused)}")
    return Selection(weighting.name, target_locale, result, request,
                     normalised(result.weights, f"weighting {weighting.name!r}"), options)


def _manual_weights(weights: Mapping[str, float] | None) -> Mapping[str, float] | None:
    """``--weights`` with canonical locales (codes may be aliases)."""
    if not weights:
        return weights
    return parse_manual_weights([f"{code}={value}" for code, value in weights.items()])


def _candidates(options: SelectionOptions, target: str | None, available: list[str]) -> list[str]:
    """The locales a weighting may choose from: narrowed by ``source_langs``, the target's own
    model left out unless ``include_target``."""
    if options.source_langs:
        wanted = [resolve_language(code).locale for code in options.source_langs]
        repeated = sorted({code for code in wanted if wanted.count(code) > 1})
        if repeated:
            raise ConfigError(f"--source-langs names {', '.join(repeated)} more than once (aliases count as the same language)")
        missing = [code for code in wanted if code not in available]
        if missing:
            raise ConfigError(
                f"--source-langs {', '.join(missing)} has no model; available: {', '.join(sorted(available))}"
            )
        available = wanted
    if not options.include_target and target is not None:
        available = [code for code in available if code != target]
    if not available:
        raise ConfigError(
            f"no source models available for target {target}"
            + ("" if options.include_target else " (its own model is excluded; pass --include-target to allow it)")
        )
    return available


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


@dataclass(frozen=True)
class Neighbour:
    """One row of :func:`similarity_table`: a language, its similarity to the target, and
    what each step of the uriel weighting makes of it."""

    locale: str
    name: str
    similarity: float
    after_top_k: float
    after_sinkhorn: float
    available: bool
    weight: float


@dataclass(frozen=True)
class SimilarityTable:
    """A target's neighbours, most similar first, and the sources the uriel weighting picks."""

    target: str
    neighbours: tuple[Neighbour, ...]
    selected: tuple[tuple[str, float], ...]
    notes: tuple[str, ...]
    matrix: SimilarityMatrix
    options: SelectionOptions

    def to_frame(self):
        """The neighbours as a :class:`pandas.DataFrame`, one row per language."""
        import pandas as pd

        return pd.DataFrame([vars(row) for row in self.neighbours])


def similarity_table(options: SelectionOptions, available: Iterable[str] | None = None) -> SimilarityTable:
    """The uriel weighting of ``options.target`` step by step (``mu similarity``).

    ``available``: the locales that have a model; ``None`` counts every language of the
    matrix (the 52 MASSIVE locales, or those of ``options.similarity_matrix``) as available.
    """
    from merginguriel_core.similarity import uriel_weights

    options.check()
    if options.target is None:
        raise ConfigError("a similarity table needs a target (--target-lang)")
    target = resolve_language(options.target).locale
    given = [resolve_language(code).locale for code in available] if available is not None else []
    matrix = similarity_matrix_for(WeightingRequest(target=target, available=tuple(given), features=options.features,
                                                    similarity_matrix=options.similarity_matrix))
    candidates = given if available is not None else [
        code for code in matrix.locales if code != target or options.include_target]
    trace = uriel_weights(matrix, target, candidates, top_k=options.top_k, sinkhorn_iters=options.sinkhorn_iters,
                          num_languages=options.num_languages, include_target=options.include_target)
    final = dict(trace.selected)
    order = sorted(range(len(trace.locales)), key=lambda i: (-trace.raw[i], trace.locales[i]))
    rows = tuple(
        Neighbour(trace.locales[i], resolve_language(trace.locales[i]).name, float(trace.raw[i]),
                  float(trace.after_top_k[i]), float(trace.after_sinkhorn[i]), trace.locales[i] in candidates,
                  final.get(trace.locales[i], 0.0))
        for i in order if trace.locales[i] != target or options.include_target
    )
    return SimilarityTable(target, rows, tuple(trace.selected), tuple(trace.notes), matrix, options)
