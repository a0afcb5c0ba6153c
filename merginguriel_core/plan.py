"""The one door: plan a merge or an ensemble once, checked, frozen; then run the plan.

:func:`plan_merge` resolves everything a merge needs (plugins by name, the sources and
their weights, the base model, labelled data, device, chunk and shard sizes, the output)
and checks all of it before any weights are read, reporting every independent problem at
once. The :class:`~merginguriel_core.merge.MergePlan` it returns is frozen;
:func:`~merginguriel_core.merge.run_merge` only reads it. ``mu merge``, the experiment
runner and a notebook all go through here, so the same options give the same merge.

Plugins given by name are looked up in ``registry`` (a
:class:`~merginguriel_core.plugins.Registry`; default: the installed plugins, loaded for
this call); objects are used as given.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from merginguriel_core.errors import ConfigError, MergingUrielError, ModelError
from merginguriel_core.adapters import check_output_format
from merginguriel_core.interfaces import DATA_OPTIONS, Dataset, LabelledData, MergeStrategy, Weighting
from merginguriel_core.models import DEFAULT_PATTERN, ModelRef, collect_models
from merginguriel_core.selection import (
    Selection, SelectionOptions, check_weighting_options, normalised, select_sources,
)

if TYPE_CHECKING:
    from merginguriel_core.ensemble import EnsemblePlan
    from merginguriel_core.merge import MergePlan

__all__ = ["ModelSources", "Problems", "plan_merge", "fetch_models", "choose_sources", "resolve_plugin", "plan_ensemble",
           "evaluate", "data_location", "evaluator_objects"]


@dataclass(frozen=True)
class ModelSources:
    """Where the source models are: the ``--models``, ``--model-pattern``, ``--registry`` and
    ``--model`` options. ``models`` holds ``LOCALE=PATH_OR_HUB_ID`` entries."""

    folder: Path | None = None
    pattern: str = DEFAULT_PATTERN
    registry: Path | None = None
    models: tuple[str, ...] = ()

    def collect(self) -> dict[str, ModelRef]:
        """Every source model by canonical locale (an error when none is given)."""
        return collect_models(self.folder, self.pattern, self.registry, self.models)


ModelsLike = ModelSources | Mapping[str, "ModelRef | str | Path"] | str | Path


def model_refs(models: ModelsLike) -> dict[str, ModelRef]:
    """``models`` as locale -> :class:`ModelRef`: a :class:`ModelSources`, a folder of
    per-locale models (default pattern), or a mapping of locale codes to folders or hub ids."""
    from merginguriel_core.languages import resolve_language

    if isinstance(models, ModelSources):
        return models.collect()
    if isinstance(models, (str, Path)):
        return ModelSources(folder=Path(models)).collect()
    refs: dict[str, ModelRef] = {}
    for code, ref in models.items():
        locale = resolve_language(code).locale
        if locale in refs:
            raise ConfigError(f"the models name {locale} twice (aliases count as the same language)")
        refs[locale] = ref if isinstance(ref, ModelRef) else ModelRef(locale, str(ref))
    if not refs:
        raise ConfigError("no source models given; use --models DIR, --registry CSV or --model LOCALE=PATH")
    return refs


class Problems:
    """Collects the errors of independent checks, to report them all at once.

    ``with problems.check(): ...`` records a :class:`MergingUrielError` raised inside;
    :meth:`raise_any` raises the only one as it was, or several as one :class:`ConfigError`
    listing each on its own line.
    """

    def __init__(self) -> None:
        self.errors: list[MergingUrielError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except MergingUrielError as exc:
            self.errors.append(exc)

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigError(f"{len(self.errors)} problems:\n" + "\n".join(f"  - {e}" for e in self.errors))


def resolve_plugin(kind: str, value: Any, registry: Any = None) -> Any:
    """``value`` itself, or the ``kind`` plugin it names, looked up in ``registry`` (default:
    the installed plugins)."""
    if not isinstance(value, str):
        return value
    if registry is None:
        from merginguriel_core.plugins import load_plugins

        registry = load_plugins()
    return registry.get(kind, value)


def _registry_for(registry: Any, *values: Any) -> Any:
    """``registry``, or the installed plugins loaded once for this call when a name needs them."""
    if registry is None and any(isinstance(value, str) for value in values):
        from merginguriel_core.plugins import load_plugins

        return load_plugins()
    return registry


def plugin_provenance(kind: str, obj: Any, registry: Any = None) -> dict[str, Any]:
    """Which plugin (distribution and version) provides ``obj``, for ``merge_details.json``:
    from ``registry`` when it registered ``obj``, else from the package of ``obj``'s class."""
    import importlib.metadata

    name = getattr(obj, "name", None)
    owner = getattr(registry, "owners", {}).get((kind, name)) if registry is not None else None
    if owner is not None and registry.objects[kind].get(name) is obj:
        record = registry.record(owner)
        return {"name": name, "plugin": owner, "distribution": record.distribution, "version": record.version}
    module = type(obj).__module__
    distributions = importlib.metadata.packages_distributions().get(module.split(".")[0], [])
    distribution = distributions[0] if distributions else None
    try:
        version = importlib.metadata.version(distribution) if distribution else None
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"name": name, "plugin": None, "module": module, "distribution": distribution, "version": version}


def _alternatives(kind: str, registry: Any) -> list[Any]:
    """Every usable plugin of ``kind`` (for "read by ..." hints), none without a registry."""
    return [] if registry is None else [registry.get(kind, name) for name in registry.names(kind)]


def choose_sources(options: SelectionOptions, models: ModelsLike, *, registry: Any = None,
                   given: Iterable[str] | None = None, base_model: Any = None,
                   device: str = "auto") -> tuple[Selection, dict[str, ModelRef]]:
    """Collect the source models and run ``options.weighting`` over them.

    ``given``: the options the user set explicitly (the CLI knows; default: those that differ
    from their defaults); one the weighting does not read is refused, so none is ignored.
    ``base_model`` and ``device`` reach weightings that run models.
    """
    from merginguriel_core.languages import resolve_language

    weighting: Weighting = resolve_plugin("weighting", options.weighting, registry)
    target = resolve_language(options.target).locale if options.target is not None else None
    check_weighting_options(weighting, options.given() if given is None else given, target,
                            _alternatives("weighting", registry))
    refs = model_refs(models)
    return select_sources(weighting, options, available=list(refs), models={l: r.location for l, r in refs.items()},
                          base_model=base_model, device=device), refs


def _given_strategy_options(base_model: Any, data: LabelledData | None, seed: int) -> set[str]:
    given = {"base_model"} if base_model is not None else set()
    if data is not None:
        given |= DATA_OPTIONS - {"dataset"}
    return given | ({"seed"} if seed else set())


def plan_merge(
    output: str | Path | None,
    *,
    strategy: str | MergeStrategy = "linear",
    selection: SelectionOptions | Selection | None = None,
    models: ModelsLike | None = None,
    sources: Iterable[Any] | None = None,
    params: Mapping[str, Any] | None = None,
    base_model: str | Path | None = None,
    data: LabelledData | None = None,
    device: str = "auto",
    dtype: str = "auto",
    chunk_size: str | int | None = None,
    max_shard_size: str | int = "2GB",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    registry: Any = None,
    given: Iterable[str] | None = None,
    fetch: bool = True,
    group_weights: Any = None,
    output_format: str = "model",
    adapter_rank: int | None = None,
) -> "MergePlan":
    """Resolve and check a merge; return its frozen plan for :func:`~merginguriel_core.merge.run_merge`.

    The sources come either from ``selection`` (options for a weighting, or a finished
    :class:`~merginguriel_core.selection.Selection`) over ``models``, or directly from
    ``sources`` (:class:`~merginguriel_core.merge.SourceModel` with any non-negative
    weights). Weights are normalised to sum to 1 exactly once, by the selection or here.
    ``params`` are the strategy's (``--param``), checked against its declared params.
    ``data`` is the labelled data of a data-dependent strategy (fisher, regmean).
    ``given`` names the options the user set explicitly (names with underscores, as the
    CLI knows them); an option the weighting or strategy does not read is refused. Without
    it, options that differ from their defaults count as given.
    ``fetch=False`` leaves hub ids unfetched (a dry run); :func:`fetch_models` fetches later.
    ``output=None`` plans without an output (to look at the sources); such a plan cannot run.
    ``group_weights`` (:class:`~merginguriel_core.groups.GroupWeights` over the same
    sources) gives some tensor groups their own weights; a selection whose weighting returned
    them brings its own. ``output_format="adapter"`` (adapter sources only) writes one LoRA
    adapter instead of a whole model: the exact concatenation for ``linear`` without
    ``adapter_rank``, else rank ``adapter_rank`` (default: the sources' largest) by truncated SVD.
    Task-vector strategies over adapter sources default ``base_model`` to the adapters' base.

    Every check that needs no model file runs first, and all their problems are reported
    together; then the sources are selected, and (with ``fetch``) their folders resolved.
    """
    from merginguriel_core.merge import MergePlan, check_output, merge_inputs

    output = Path(output) if output is not None else None
    registry = _registry_for(registry, strategy, getattr(selection, "weighting", None),
                             (data.dataset or "sib200") if data is not None and data.data_file is None else None)
    problems = Problems()
    resolved: dict[str, Any] = {}
    with problems.check():
        resolved["strategy"] = resolve_plugin("strategy", strategy, registry)
    resolved |= _run_settings(problems, output, overwrite, device, dtype, chunk_size, max_shard_size, data, registry)
    with problems.check():
        check_output_format(output_format, adapter_rank)
    if isinstance(selection, SelectionOptions):
        with problems.check():
            selection.check()
    if (selection is None) == (sources is None):
        problems.errors.append(ConfigError("give the sources of a merge: a selection over models, or sources"))
    if "strategy" in resolved:
        given_here = _given_strategy_options(base_model, data, seed) if given is None else set(given)
        _strategy_settings(problems, resolved, params, given_here, registry, _weighting_params(selection, registry))
    problems.raise_any()

    chosen: MergeStrategy = resolved["strategy"]
    picked, refs, chosen_selection = _merge_sources(selection, sources, models, registry, given, base_model, resolved["device"])
    if base_model is None and chosen.needs_base and refs:
        base_model = _default_base([s.locale for s in picked], refs)
    if base_model is None and chosen.needs_base:
        base_model = _adapters_base(picked)
    if output_format == "adapter":
        _check_adapter_sources(picked)
    chosen.check(resolved["params"], len(picked), resolved.get("data"))
    if chosen.needs_base and base_model is None:
        raise ConfigError(f"strategy {chosen.name!r} needs a base model; pass --base-model PATH_OR_HUB_ID")
    details: dict[str, Any] = {} if chosen_selection is None else {
        "target": chosen_selection.target, "weighting": chosen_selection.weighting,
        "weighting_details": chosen_selection.result.details}
    details["plugins"] = {"strategy": plugin_provenance("strategy", chosen, registry)}
    if chosen_selection is not None and isinstance(selection, SelectionOptions):
        weighting = resolve_plugin("weighting", selection.weighting, registry)
        details["plugins"]["weighting"] = plugin_provenance("weighting", weighting, registry)
    if chosen_selection is not None and chosen_selection.group_weights is not None:
        if group_weights is not None:
            raise ConfigError(f"weighting {chosen_selection.weighting!r} gives its own group weights; "
                              f"do not pass group_weights as well")
        group_weights = chosen_selection.group_weights
    if group_weights is not None:
        group_weights = group_weights.normalised().reordered(s.locale for s in picked)
    plan = MergePlan(
        sources=picked, strategy=chosen, output=output, params=resolved["params"], group_weights=group_weights,
        base=Path(base_model) if base_model is not None else None, device=resolved["device"], dtype=dtype,
        chunk_bytes=resolved["chunk_bytes"], max_shard_bytes=resolved["max_shard_bytes"], overwrite=overwrite,
        seed=seed, progress=progress, data=resolved.get("data"), details=details, selection=chosen_selection,
        output_format=output_format, adapter_rank=adapter_rank,
    )
    if output is not None:
        check_output(output, overwrite, merge_inputs(picked, plan.base))
    return fetch_models(plan, {locale: ref.location for locale, ref in refs.items()}) if fetch else plan


def _run_settings(problems: Problems, output: Path | None, overwrite: bool, device: str, dtype: str,
                  chunk_size: str | int | None, max_shard_size: str | int, data: LabelledData | None,
                  registry: Any) -> dict[str, Any]:
    """The merge's device, sizes, output and data, each checked on its own into ``problems``."""
    from merginguriel_core.io import parse_size
    from merginguriel_core.merge import DTYPES, check_output, resolve_device

    resolved: dict[str, Any] = {}
    with problems.check():
        resolved["device"] = resolve_device(device)
    with problems.check():
        if dtype != "auto" and dtype not in DTYPES:
            raise ConfigError(f"unknown --dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}")
    with problems.check():
        resolved["chunk_bytes"] = None if chunk_size in (None, "auto") else parse_size(chunk_size)
    with problems.check():
        resolved["max_shard_bytes"] = parse_size(max_shard_size)
    if output is not None:
        with problems.check():
            check_output(output, overwrite)
    if data is not None:
        with problems.check():
            resolved["data"] = _checked_data(data, registry)
    return resolved


def _weighting_params(selection: Any, registry: Any) -> dict[str, str]:
    """The weighting's parameter names -> where they go, for the hint of a misplaced ``--param``."""
    if not isinstance(selection, SelectionOptions):
        return {}
    try:
        weighting = resolve_plugin("weighting", selection.weighting, registry)
    except MergingUrielError:
        return {}  # reported by the selection's own check
    return {p.name: f"weighting {weighting.name!r}: --weighting-param" for p in getattr(weighting, "params", ())}


def _strategy_settings(problems: Problems, resolved: dict[str, Any], params: Mapping[str, Any] | None,
                       given: set[str], registry: Any, elsewhere: Mapping[str, str]) -> None:
    """The strategy's options read, params and needs, each checked on its own into ``problems``."""
    from merginguriel_core.merge import check_strategy_options
    from merginguriel_core.params import resolve_params

    chosen: MergeStrategy = resolved["strategy"]
    with problems.check():
        check_strategy_options(chosen, given, _alternatives("strategy", registry))
    with problems.check():
        resolved["params"] = resolve_params(chosen.params, params or {}, f"strategy {chosen.name!r}", elsewhere)
    with problems.check():
        _check_needs(chosen, resolved.get("data"))


def _merge_sources(selection: SelectionOptions | Selection | None, sources: Iterable[Any] | None,
                   models: ModelsLike | None, registry: Any, given: Iterable[str] | None, base_model: Any = None,
                   device: Any = "auto"):
    """``(sources with normalised weights, model refs, the selection or None)``."""
    from merginguriel_core.merge import SourceModel

    if sources is not None:
        sources = list(sources)
        weights = normalised([(s.locale, s.weight) for s in sources])
        return tuple(replace(s, path=Path(s.path), weight=w) for s, (_, w) in zip(sources, weights)), {}, None
    if models is None:
        raise ConfigError("a selection needs the models it chooses from (--models, --registry or --model)")
    if isinstance(selection, SelectionOptions):
        chosen, refs = choose_sources(selection, models, registry=registry, given=given, base_model=base_model,
                                      device=str(device))
    else:
        chosen, refs = selection, model_refs(models)
    picked = tuple(SourceModel(locale, Path(refs[locale].location), weight) for locale, weight in chosen.weights)
    return picked, refs, chosen


def fetch_models(plan: "MergePlan", locations: Mapping[str, str] | None = None) -> "MergePlan":
    """``plan`` with every source and the base model as a local folder (hub ids fetched,
    safetensors only), each checked to exist; the output is checked against them again."""
    from merginguriel_core.merge import check_output, merge_inputs
    from merginguriel_core.models import resolve_location

    locations = locations or {}
    fetched = []
    for source in plan.sources:
        location = locations.get(source.locale, str(source.path))
        path = resolve_location(location)
        if not path.is_dir():
            raise ModelError(f"model folder {path} for {source.locale} does not exist")
        fetched.append(replace(source, path=path, origin=source.origin or (None if str(path) == location else location)))
    base, details = plan.base, dict(plan.details)
    if base is not None:
        base = resolve_location(str(plan.base))
        if not base.is_dir():
            raise ModelError(f"base model folder {base} does not exist")
        if str(base) != str(plan.base):
            details["base_model_origin"] = str(plan.base)
    if plan.output is not None:
        check_output(plan.output, plan.overwrite, merge_inputs(fetched, base))
    return replace(plan, sources=tuple(fetched), base=base, details=details)


def _checked_data(data: LabelledData, registry: Any) -> LabelledData:
    """``data`` with its dataset resolved and its statistics folder defaulted, after checking
    that exactly one of the folder and the file is given and exists."""
    from merginguriel_core.statistics import default_stats_dir

    if data.data_file is not None and not Path(data.data_file).is_file():
        raise ConfigError(f"--data-file {data.data_file} does not exist")
    if data.data_dir is not None and not Path(data.data_dir).is_dir():
        raise ConfigError(f"--data-dir {data.data_dir} is not a folder")
    if data.data_dir is not None and data.data_file is not None:
        raise ConfigError("give --data-dir or --data-file, not both")
    if data.max_length < 2:
        raise ConfigError(f"--max-length must be at least 2, got {data.max_length}")
    dataset: Dataset | None = resolve_plugin("dataset", data.dataset or "sib200", registry)
    return replace(data, dataset=dataset, data_dir=Path(data.data_dir) if data.data_dir is not None else None,
                   data_file=Path(data.data_file) if data.data_file is not None else None,
                   stats_dir=Path(data.stats_dir) if data.stats_dir is not None else default_stats_dir())


def _check_needs(strategy: MergeStrategy, data: LabelledData | None) -> None:
    if strategy.needs_data and (data is None or (data.data_dir is None and data.data_file is None)):
        raise ConfigError(
            f"strategy {strategy.name!r} needs labelled data; pass --data-dir DIR (SIB-200 layout, "
            f"each model's own training split) or --data-file FILE (CSV/TSV/JSONL with text and label columns)"
        )


def _check_adapter_sources(sources) -> None:
    """``--output-format adapter`` merges adapter folders only (local folders checked here,
    fetched ones by the engine)."""
    from merginguriel_core.adapters import is_adapter

    for source in sources:
        if Path(source.path).is_dir() and not is_adapter(source.path):
            raise ConfigError(f"--output-format adapter needs adapter sources; {source.locale} ({source.path}) "
                              f"is a whole model (use --output-format model)")


def _adapters_base(sources) -> Path | None:
    """The base model that every source names, when every source is a local adapter folder."""
    from merginguriel_core.adapters import adapter_base, is_adapter

    if not sources or not all(is_adapter(s.path) for s in sources):
        return None
    return adapter_base(sources[0].path)


def _default_base(selected: list[str], refs: Mapping[str, ModelRef]) -> str | None:
    """The registry's base_model when every selected source names the same one."""
    bases = {refs[locale].base_model for locale in selected}
    if len(bases) == 1:
        return bases.pop()
    if None not in bases:
        raise ConfigError(
            f"the selected sources name different base models in the registry ({', '.join(sorted(bases))}); "
            f"pass --base-model"
        )
    return None




def data_location(data_dir: str | Path | None = None, data_file: str | Path | None = None) -> str | None:
    """The dataset location from ``--data-dir`` or ``--data-file`` (at most one, existing),
    or ``None`` for the dataset's hub id."""
    if data_dir is not None and data_file is not None:
        raise ConfigError("give --data-dir or --data-file, not both")
    location = data_dir if data_dir is not None else data_file
    if location is not None and not Path(location).exists():
        raise ConfigError(f"{'--data-dir' if data_dir is not None else '--data-file'} {location} does not exist")
    return str(location) if location is not None else None


def _cache_dir(cache_dir: str | Path | None, no_cache: bool) -> Path | None:
    from merginguriel_core.evaluation import default_cache_dir

    return None if no_cache else Path(cache_dir) if cache_dir is not None else default_cache_dir()


def evaluator_objects(evaluators: Iterable[Any] | None, registry: Any = None) -> tuple[Any, ...]:
    """The evaluators named (or given) in ``evaluators``; every installed one for ``None``."""
    if evaluators is None:
        if registry is None:
            from merginguriel_core.plugins import load_plugins

            registry = load_plugins()
        evaluators = registry.names("evaluator")
    return tuple(resolve_plugin("evaluator", e, registry) for e in evaluators)


def plan_ensemble(
    *,
    selection: SelectionOptions | Selection | None = None,
    models: ModelsLike,
    sources: Iterable[tuple[str, float]] | None = None,
    target: str | None = None,
    method: Any = "uriel_logits",
    dataset: Any = "sib200",
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    split: str = "test",
    evaluators: Iterable[Any] | None = None,
    zero_shot_pool: Iterable[str] | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    no_cache: bool = False,
    progress: bool = False,
    baselines: bool = True,
    nxn: str | Path | None = None,
    registry: Any = None,
    given: Iterable[str] | None = None,
) -> "EnsemblePlan":
    """Resolve and check an ensemble of the sources `mu merge` would select (``selection``
    over ``models``), or of ``sources`` ``(locale, weight)`` for ``target``; return its frozen
    plan for :func:`~merginguriel_core.ensemble.run_ensemble`. Independent problems are
    reported together; model folders are resolved (hub ids fetched) last.

    The best-overall zero-shot baseline runs every model of ``zero_shot_pool`` (default: all)
    on the target's split; ``nxn``, a folder written by ``mu nxn`` on the same dataset and
    split, gives their accuracies instead (each must be in it), and ``baselines=False`` skips
    that baseline."""
    from merginguriel_core.ensemble import EnsemblePlan
    from merginguriel_core.evaluation import check_batching
    from merginguriel_core.languages import resolve_language
    from merginguriel_core.merge import resolve_device
    from merginguriel_core.models import resolve_location

    problems, resolved = Problems(), {}
    for key, kind, value in (("method", "voting_method", method), ("dataset", "dataset", dataset)):
        with problems.check():
            resolved[key] = resolve_plugin(kind, value, registry)
    with problems.check():
        resolved["evaluators"] = evaluator_objects(evaluators, registry)
    with problems.check():
        resolved["location"] = data_location(data_dir, data_file)
    with problems.check():
        check_batching(batch_size, max_length)
    with problems.check():
        resolved["device"] = resolve_device(device)
    if isinstance(selection, SelectionOptions):
        with problems.check():
            selection.check()
    if (selection is None) == (sources is None):
        problems.errors.append(ConfigError("give the sources of an ensemble: a selection over models, or sources"))
    with problems.check():
        resolved["nxn"] = _nxn_matrix_file(nxn, baselines)
    problems.raise_any()
    if isinstance(selection, SelectionOptions):
        chosen, refs = choose_sources(selection, models, registry=registry, given=given, device=str(resolved["device"]))
    else:
        chosen, refs = selection, model_refs(models)
    if chosen is not None:
        target, weights = chosen.target, chosen.weights
    else:
        weights = normalised([(resolve_language(code).locale, w) for code, w in sources])
    if target is None:
        raise ConfigError("an ensemble needs a target (--target-lang)")
    target = resolve_language(target).locale
    missing = [locale for locale, _ in weights if locale not in refs]
    if missing:
        raise ConfigError(f"no model for source {missing[0]}; the models are {', '.join(sorted(refs))}")
    pool = tuple(resolve_language(c).locale for c in zero_shot_pool) if zero_shot_pool is not None else None
    unknown = [locale for locale in pool or () if locale not in refs]
    if unknown:
        raise ConfigError(f"no model for zero-shot pool language {unknown[0]}; the models are {', '.join(sorted(refs))}")
    folders = {locale: resolve_location(ref.location) for locale, ref in refs.items()}
    plan = EnsemblePlan(
        target=target, sources=tuple(weights), models=folders, method=resolved["method"], dataset=resolved["dataset"],
        location=resolved["location"], split=split, evaluators=resolved["evaluators"], zero_shot_pool=pool,
        batch_size=batch_size, max_length=max_length, device=resolved["device"],
        cache_dir=_cache_dir(cache_dir, no_cache), progress=progress, selection=chosen, baselines=baselines,
    )
    if resolved["nxn"] is None:
        return plan
    accuracies = _nxn_zero_shot(resolved["nxn"], plan.target, plan.zero_shot_candidates, plan.dataset.name, split)
    return replace(plan, zero_shot=accuracies, zero_shot_from=resolved["nxn"])


def _nxn_matrix_file(nxn: str | Path | None, baselines: bool) -> Path | None:
    """The accuracy matrix in the ``mu nxn`` folder ``nxn`` (``None`` without one)."""
    from merginguriel_core.reports import NXN_MATRIX

    if nxn is None:
        return None
    if not baselines:
        raise ConfigError("give --nxn DIR or --no-baselines, not both (--nxn only serves the best-overall baseline)")
    if not Path(nxn).is_dir():
        raise ConfigError(f"--nxn {nxn} is not a folder; give the --output folder of a `mu nxn` run")
    matrix = Path(nxn) / NXN_MATRIX
    if not matrix.is_file():
        raise ConfigError(f"--nxn {nxn} has no {NXN_MATRIX}; give the --output folder of a `mu nxn` run")
    return matrix


def _nxn_zero_shot(matrix: Path, target: str, pool: list[str], dataset: str, split: str) -> dict[str, float]:
    """Each model of ``pool``'s accuracy on ``target`` from ``mu nxn``'s ``matrix``, which must
    have been evaluated on ``dataset``'s ``split`` (as its ``nxn_details.json`` says)."""
    import json
    import math

    from merginguriel_core.signal_weighting import read_nxn

    details = matrix.parent / "nxn_details.json"
    if details.is_file():
        try:
            written = json.loads(details.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {details}: {error}") from None
        written = written if isinstance(written, dict) else {}
        for what, ours in (("dataset", dataset), ("split", split)):
            if written.get(what, ours) != ours:
                raise ConfigError(f"--nxn {matrix.parent} was evaluated on {what} {written[what]!r}, this ensemble "
                                  f"on {ours!r}; give an N×N matrix of the same {what}")
    rows, columns, values = read_nxn(matrix)
    if target not in columns:
        raise ConfigError(f"--nxn {matrix} has no column for the target {target}; its targets are {', '.join(columns)}")
    column = {source: float(value) for source, value in zip(rows, values[:, columns.index(target)])}
    missing = [locale for locale in pool if not math.isfinite(column.get(locale, math.nan))]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"--nxn {matrix} has no accuracy of model {missing[0]}{more} on {target}; rerun `mu nxn` "
                          f"with every model, or use --no-baselines")
    return {locale: column[locale] for locale in pool}


def evaluate(
    model: str | Path,
    dataset: Any = "sib200",
    locale: str = "",
    *,
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    split: str = "test",
    evaluators: Iterable[Any] | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    no_cache: bool = False,
    registry: Any = None,
) -> dict[str, Any]:
    """Metrics (accuracy, macro-F1, ... or the chosen ``evaluators``) of the classifier in
    folder ``model`` on ``locale``'s ``split`` of ``dataset``, as ``mu evaluate`` prints them.

    Labels are read in the dataset's order (or the model's own, for a table dataset); logits
    go through the cache unless ``no_cache``.
    """
    from merginguriel_core.evaluation import LogitsCache, Predictor, check_batching, gold_ids, label_space_for, score
    from merginguriel_core.languages import resolve_language
    from merginguriel_core.merge import resolve_device

    problems, resolved = Problems(), {}
    with problems.check():
        check_batching(batch_size, max_length)
    with problems.check():
        resolved["dataset"] = resolve_plugin("dataset", dataset, registry)
    with problems.check():
        resolved["evaluators"] = evaluator_objects(evaluators, registry)
    with problems.check():
        if not Path(model).is_dir():
            raise ConfigError(f"--model {model} is not a folder")
    with problems.check():
        resolved["location"] = data_location(data_dir, data_file)
    with problems.check():
        resolved["locale"] = resolve_language(locale).locale
    with problems.check():
        resolved["device"] = resolve_device(device)
    problems.raise_any()
    data, location, code, model = resolved["dataset"], resolved["location"], resolved["locale"], Path(model)
    examples = data.load(location, code, split)
    label_space = label_space_for(data, location, [model])
    predictor = Predictor(LogitsCache(_cache_dir(cache_dir, no_cache)), resolved["device"], batch_size, max_length)
    logits = predictor.logits(model, examples, label_space)
    return {
        "model": str(model), "dataset": data.name, "data": location or data.hub_id, "locale": code, "split": split,
        "examples": len(examples), "cached": predictor.cache_hits > 0,
        **score(logits.argmax(-1), gold_ids(examples, label_space), len(label_space), resolved["evaluators"]),
    }


def train(
    output: str | Path,
    locale: str,
    base_model: str | Path,
    dataset: Any = "sib200",
    *,
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    training: Any = None,
    adapter: Any = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    registry: Any = None,
) -> dict[str, Any]:
    """``mu train --locale``: fine-tune ``base_model`` on ``locale``'s train split of ``dataset``
    (``training``: a :class:`~merginguriel_core.training.TrainingConfig`), or with ``adapter``
    (an :class:`~merginguriel_core.training.AdapterTraining`) a LoRA adapter and the head; save
    into ``output`` atomically and return ``training_details.json`` as a dictionary.
    Every problem that needs no model file is reported together, before training starts."""
    from merginguriel_core.languages import resolve_language
    from merginguriel_core.merge import resolve_device
    from merginguriel_core.training import TrainingConfig, train_one

    training = TrainingConfig() if training is None else training
    output = Path(output)
    problems, resolved = Problems(), {}
    with problems.check():
        resolved["dataset"] = resolve_plugin("dataset", dataset, registry)
    with problems.check():
        resolved["location"] = data_location(data_dir, data_file)
    with problems.check():
        resolved["locale"] = resolve_language(locale).locale
    with problems.check():
        training.check()
    if adapter is not None:
        with problems.check():
            adapter.check()
    with problems.check():
        resolved["device"] = resolve_device(device)
    with problems.check():
        if output.exists() and not overwrite:
            raise ConfigError(f"{output} already exists; pass overwrite=True to retrain {locale}")
    problems.raise_any()
    return train_one(resolved["dataset"], resolved["location"], resolved["locale"], str(base_model), output,
                     training, resolved["device"], progress, overwrite, adapter)
