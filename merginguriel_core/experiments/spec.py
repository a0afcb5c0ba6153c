"""The experiment spec: a YAML file that says which grid to run, checked in full before anything runs.

A spec names the source models, the labelled data, the targets, the selections (which
sources, with what weights), the merge strategies and voting methods, and the baselines::

    name: sib200-e5
    models: {folder: models, pattern: "e5-small_sib200_{locale}", base: e5}
    data: {dataset: sib200, data_dir: ../shared/data/sib200, split: test}
    targets: all_with_test_data          # or all_with_model, or a list of codes
    selection: {top_k: 20, num_languages: 5}
    selections: [uriel, softmax, average, {name: all, weighting: average, sources: all},
                 {weighting: random, draws: 3}]
    strategies: [linear, {strategy: ties, params: {density: 0.2}, selections: [uriel, softmax]}]
    voting: [majority, soft, uriel_logits]

:func:`load_spec` reads it, resolves every plugin name and parameter and reports every
problem at once, each with its place (``strategies[1].params.density: 1.5 is outside (0,
1]``). Relative paths are relative to the spec file; ``$VARS`` and ``~`` are expanded.
The result is a frozen :class:`ExperimentSpec`; :meth:`ExperimentSpec.digest` identifies
it (paths as written, so a clone elsewhere has the same digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from merginguriel_core.errors import ConfigError, MergingUrielError
from merginguriel_core.params import Param
from merginguriel_core.selection import SELECTION_DEFAULTS

#: Target lists a spec may name instead of codes.
TARGET_SETS = ("all_with_test_data", "all_with_model")
#: Baselines a report sets every cell beside (each costs no forward pass once the N×N is done).
BASELINES = ("own", "english", "closest", "oracle")
#: Shared selection options a selection (or the spec's ``selection``) may set.
SELECTION_KEYS = ("top_k", "sinkhorn_iters", "num_languages", "features", "similarity_matrix")
#: What a selection's name or a method's label may hold: they become parts of cell names and folders.
NAME = re.compile(r"[A-Za-z0-9_.+-]+")
TOP_KEYS = ("name", "models", "data", "targets", "leave_target_out", "selection", "selections", "strategies",
            "voting", "iterative", "training", "target_text", "baselines", "seed", "device", "description")
#: What an ``iterative:`` entry may set besides strategy, label, params and selections
#: (:class:`~merginguriel_core.iterative.IterativeOptions`), and ``compare_with``: the label
#: of the ``strategies:`` entry that is its one-shot counterpart.
#: What a ``strategies:`` entry may set besides strategy, label, params and selections: the
#: merged model's form (``output_format: adapter`` with adapter sources, ``adapter_rank``).
MERGE_KEYS = ("output_format", "adapter_rank")
ITERATIVE_KEYS = ("max_epochs", "merge_frequency", "merge_mix", "adaptive_merge_frequency",
                  "performance_merge_trigger", "convergence_threshold", "compare_with")
#: What ``training:`` may set (:class:`~merginguriel_core.training.TrainingConfig`; the seed is the spec's).
TRAINING_KEYS = ("learning_rate", "batch_size", "max_length", "freeze_embeddings", "weight_decay", "warmup_ratio",
                 "max_train_examples", "group_by_length")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class SelectionSpec:
    """One way of choosing sources: a weighting with its params and options.

    ``sources="all"``: every available model with equal weights (the target's own left out
    unless ``leave_target_out`` is false). ``draws`` (weighting ``random``): R fixed random
    source sets, one cell each.
    """

    name: str
    weighting: str
    params: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    sources: str | None = None
    draws: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))
        object.__setattr__(self, "options", _frozen(self.options))


@dataclass(frozen=True)
class MethodSpec:
    """A merge strategy (``kind="merge"``), voting method (``"vote"``) or iterative training
    run (``"iterative"``, a strategy merging models as they train) with its params, run under
    each of ``selections``. ``label`` names it in results and reports; ``options`` are an
    iterative entry's (:data:`ITERATIVE_KEYS`)."""

    kind: str
    label: str
    plugin: str
    params: Mapping[str, Any] = field(default_factory=dict)
    selections: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))
        object.__setattr__(self, "options", _frozen(self.options))


@dataclass(frozen=True)
class ModelsSpec:
    folder: Path | None = None
    registry: Path | None = None
    pattern: str = "xlm-roberta-base_massive_k_{locale}"
    base: Path | None = None


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "sib200"
    data_dir: Path | None = None
    data_file: Path | None = None
    split: str = "test"
    evaluators: tuple[str, ...] = ("accuracy", "macro_f1")
    batch_size: int = 64
    max_length: int = 128
    #: The split data-dependent strategies (fisher, regmean) compute their statistics on.
    statistics_split: str = "train"


@dataclass(frozen=True)
class ExperimentSpec:
    """A checked experiment spec (see the module docstring); build it with :func:`load_spec`."""

    name: str
    models: ModelsSpec
    data: DataSpec
    targets: str | tuple[str, ...]
    selections: tuple[SelectionSpec, ...]
    methods: tuple[MethodSpec, ...]
    leave_target_out: bool = True
    selection: Mapping[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = BASELINES
    seed: int = 0
    device: str = "auto"
    source: Path | None = None
    #: Fine-tuning settings of the iterative entries (:data:`TRAINING_KEYS`).
    training: Mapping[str, Any] = field(default_factory=dict)
    #: Unlabelled target text for the weightings that read it: ``{"split": "dev"}`` (of the
    #: data, labels unused) or ``{"file": path}`` (``{locale}`` in it is each target's locale).
    target_text: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", _frozen(self.selection))
        object.__setattr__(self, "training", _frozen(self.training))
        object.__setattr__(self, "target_text", _frozen(self.target_text))

    def text_for_weightings(self):
        """:attr:`target_text` as a :class:`~merginguriel_core.target_text.TargetText` over the
        spec's data (``None`` without one)."""
        from merginguriel_core.target_text import TargetText

        if not self.target_text:
            return None
        location = self.data.data_dir if self.data.data_dir is not None else self.data.data_file
        return TargetText(file=self.target_text.get("file"), split=self.target_text.get("split"),
                          dataset=self.data.dataset, location=str(location) if location is not None else None)

    def digest(self) -> str:
        """A short hash of the checked spec (paths relative to the spec's folder, so a clone
        elsewhere has the same digest): a results folder remembers the spec it ran. Settings
        left empty (no ``training:``, a method without ``options``) are not part of it, so a
        spec keeps its digest across versions that add such settings."""
        root = self.source.parent if self.source is not None else Path.cwd()
        content = {k: v for k, v in _plain(self, root).items()
                   if k != "source" and not (k in ("training", "target_text") and not v)}
        content["methods"] = [{k: v for k, v in m.items() if not (k == "options" and not v)} for m in content["methods"]]
        text = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def selection_named(self, name: str) -> SelectionSpec:
        return next(s for s in self.selections if s.name == name)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the checked spec with every default filled in."""
        return _plain(self)


def _plain(value: Any, root: Path | None = None) -> Any:
    """JSON-ready ``value``; paths as text, relative to ``root`` when given."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), root) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, root) for v in value]
    if isinstance(value, Path):
        return os.path.relpath(value, root) if root is not None else str(value)
    return value


class _Checker:
    """Collects every problem of a spec, each with its place."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, place: str, message: str) -> None:
        self.problems.append(f"{place}: {message}" if place else message)

    def mapping(self, value: Any, place: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(place, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.add(f"{place}.{key}" if place else str(key), f"unknown key; allowed: {', '.join(allowed)}")
        return {k: v for k, v in value.items() if k in allowed}

    def raise_any(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(f"{self.source}: {self.problems[0]}")
        if self.problems:
            listed = "\n".join(f"  - {problem}" for problem in self.problems)
            raise ConfigError(f"{self.source}: {len(self.problems)} problems:\n{listed}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", int: "a number", float: "a number",
            bool: "true/false"}.get(type(value), type(value).__name__)


def load_spec(path: str | Path, registry: Any = None) -> ExperimentSpec:
    """Read and check the spec at ``path`` (YAML or JSON) against the installed plugins (or
    ``registry``); every problem is reported at once in one :class:`ConfigError`."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"experiment spec {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return check_spec(data, source=path, registry=registry)


def check_spec(data: Any, *, source: Path | None = None, registry: Any = None) -> ExperimentSpec:
    """Check a spec given as a mapping (what the YAML holds); see :func:`load_spec`."""
    if registry is None:
        from merginguriel_core.plugins import load_plugins

        registry = load_plugins()
    check = _Checker(str(source) if source else "experiment spec")
    if not isinstance(data, Mapping):
        check.add("", f"an experiment spec is a mapping of {', '.join(TOP_KEYS[:9])}, ...; got {_kind(data)}")
        check.raise_any()
    top = check.mapping(data, "", TOP_KEYS)
    root = source.parent if source is not None else Path.cwd()
    models = _models(check, top.get("models"), root)
    data_spec = _data(check, top.get("data"), root, registry)
    targets = _targets(check, top.get("targets", "all_with_test_data"))
    shared = _selection_options(check, top.get("selection"), "selection", root)
    selections = _selections(check, top.get("selections", ["uriel"]), registry, root)
    names = [s.name for s in selections]
    methods = _methods(check, top.get("strategies", ()), "strategies", "merge", registry, names, models, data_spec)
    methods += _methods(check, top.get("voting", ()), "voting", "vote", registry, names, models, data_spec)
    methods += _methods(check, top.get("iterative", ()), "iterative", "iterative", registry, names, models, data_spec)
    if not methods:
        check.add("", "name at least one merge strategy (strategies:), voting method (voting:) or iterative run "
                      "(iterative:)")
    training = _training(check, top.get("training"), top.get("seed", 0))
    target_text = _target_text(check, top.get("target_text"), root, selections, registry)
    _check_compared(check, methods)
    baselines = _baselines(check, top.get("baselines", list(BASELINES)))
    leave_out = top.get("leave_target_out", True)
    if not isinstance(leave_out, bool):
        check.add("leave_target_out", f"must be true or false, not {leave_out!r}")
    seed = top.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        check.add("seed", f"must be a whole number >= 0, not {seed!r}")
    device = top.get("device", "auto")
    if device not in ("auto", "cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
        check.add("device", f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
    name = top.get("name") or (source.stem if source else "experiment")
    check.raise_any()
    spec = ExperimentSpec(
        name=str(name), models=models, data=data_spec, targets=targets, selections=tuple(selections),
        methods=tuple(methods), leave_target_out=leave_out, selection=shared, baselines=baselines, seed=seed,
        device=str(device), source=source, training=training, target_text=target_text,
    )
    return spec


def _target_text(check: _Checker, value: Any, root: Path, selections: list[SelectionSpec],
                 registry: Any) -> dict[str, Any]:
    """``target_text:`` (``split`` or ``file``), given exactly when a selection's weighting reads it."""
    from merginguriel_core.target_text import SPLITS

    readers, others = [], []
    for index, selection in enumerate(selections):
        try:
            reads = registry.get("weighting", selection.weighting).needs_target_text
        except MergingUrielError:
            continue  # reported at the selection
        (readers if reads else others).append((index, selection))
    given = check.mapping(value, "target_text", ("split", "file")) if value is not None else {}
    if value is not None and isinstance(value, Mapping) and ("split" in given) == ("file" in given):
        check.add("target_text", "give split (a split of the data, labels unused) or file (one sentence per line; "
                                 "{locale} is each target's locale), one of them")
    if "split" in given and given["split"] not in SPLITS:
        check.add("target_text.split", f"unknown split {given['split']!r}; allowed: {', '.join(SPLITS)}")
    if "file" in given:
        given["file"] = _path(given["file"], root)
    if readers and not given:
        index, selection = readers[0]
        check.add(f"selections[{index}]", f"weighting {selection.weighting!r} needs unlabelled target text; "
                                          f"give target_text: {{split: dev}} or {{file: PATH}}")
    if given and not readers:
        check.add("target_text", "no selection reads it (weightings adamerging and representation do); drop it")
    return given


def _training(check: _Checker, value: Any, seed: Any) -> dict[str, Any]:
    """``training:`` checked as :class:`~merginguriel_core.training.TrainingConfig` checks it."""
    from merginguriel_core.training import TrainingConfig

    given = check.mapping(value, "training", TRAINING_KEYS) if value is not None else {}
    try:
        TrainingConfig(**given, seed=seed if isinstance(seed, int) else 0).check()
    except ConfigError as exc:
        check.add("training", _spec_words(str(exc)))
    except TypeError as exc:
        check.add("training", str(exc))
    return dict(given)


def _spec_words(message: str) -> str:
    """A command-line message in a spec's words: ``--merge-frequency`` becomes ``merge_frequency``."""
    return re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), message)


def _check_compared(check: _Checker, methods: list[MethodSpec]) -> None:
    """Each iterative entry's ``compare_with`` names a merge entry."""
    merges = [m.label for m in methods if m.kind == "merge"]
    for index, method in enumerate(m for m in methods if m.kind == "iterative"):
        compared = method.options.get("compare_with")
        if compared is not None and compared not in merges:
            check.add(f"iterative[{index}].compare_with", f"no strategies: entry labelled {compared!r}; "
                      f"the merge labels are {', '.join(merges) or 'none'}")


def _path(value: Any, root: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return path if path.is_absolute() else root / path


def _models(check: _Checker, value: Any, root: Path) -> ModelsSpec:
    if value is None:
        check.add("models", "missing: give models: {folder: FOLDER, pattern: ..., base: BASE_MODEL}")
        return ModelsSpec()
    given = check.mapping(value, "models", ("folder", "registry", "pattern", "base"))
    folder = _path(given["folder"], root) if given.get("folder") is not None else None
    registry = _path(given["registry"], root) if given.get("registry") is not None else None
    if (folder is None) == (registry is None):
        check.add("models", "give one of folder: (a folder of model folders) or registry: (a registry file)")
    for key, path in (("folder", folder), ("registry", registry)):
        if path is not None and not path.exists():
            check.add(f"models.{key}", f"{path} does not exist")
    pattern = str(given.get("pattern", ModelsSpec.pattern))
    if "{locale}" not in pattern:
        check.add("models.pattern", f"{pattern!r} must contain {{locale}}")
    base = _path(given["base"], root) if given.get("base") is not None else None
    if base is not None and not base.exists():
        check.add("models.base", f"{base} does not exist")
    return ModelsSpec(folder, registry, pattern, base)


def _data(check: _Checker, value: Any, root: Path, registry: Any) -> DataSpec:
    given = check.mapping(value, "data", tuple(DataSpec.__dataclass_fields__))
    spec = DataSpec()
    dataset = str(given.get("dataset", spec.dataset))
    try:
        registry.get("dataset", dataset)
    except MergingUrielError as exc:
        check.add("data.dataset", str(exc))
    paths = {key: _path(given[key], root) for key in ("data_dir", "data_file") if given.get(key) is not None}
    if len(paths) == 2:
        check.add("data", "give data_dir or data_file, not both")
    for key, path in paths.items():
        if not path.exists():
            check.add(f"data.{key}", f"{path} does not exist")
    evaluators = given.get("evaluators", list(spec.evaluators))
    if not isinstance(evaluators, list) or not evaluators:
        check.add("data.evaluators", f"must be a list of evaluator names, not {evaluators!r}")
        evaluators = list(spec.evaluators)
    for index, name in enumerate(evaluators):
        try:
            registry.get("evaluator", str(name))
        except MergingUrielError as exc:
            check.add(f"data.evaluators[{index}]", str(exc))
    numbers = {}
    for key in ("batch_size", "max_length"):
        number = given.get(key, getattr(spec, key))
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            check.add(f"data.{key}", f"must be a whole number >= 1, not {number!r}")
            number = getattr(spec, key)
        numbers[key] = number
    return DataSpec(dataset, paths.get("data_dir"), paths.get("data_file"), str(given.get("split", spec.split)),
                    tuple(str(e) for e in evaluators), numbers["batch_size"], numbers["max_length"],
                    str(given.get("statistics_split", spec.statistics_split)))


def _targets(check: _Checker, value: Any) -> str | tuple[str, ...]:
    from merginguriel_core.languages import resolve_language

    if isinstance(value, str):
        if value in TARGET_SETS:
            return value
        value = [value]
    if not isinstance(value, list) or not value:
        check.add("targets", f"must be {' or '.join(TARGET_SETS)}, or a list of language codes; got {value!r}")
        return ()
    codes = []
    for index, code in enumerate(value):
        try:
            codes.append(resolve_language(str(code)).locale)
        except MergingUrielError as exc:
            check.add(f"targets[{index}]", str(exc))
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        check.add("targets", f"names {', '.join(repeated)} more than once")
    return tuple(codes)


def _selection_options(check: _Checker, value: Any, place: str, root: Path) -> dict[str, Any]:
    given = check.mapping(value, place, SELECTION_KEYS)
    options = {}
    for key, raw in given.items():
        default = SELECTION_DEFAULTS[key]
        if key == "similarity_matrix":
            options[key] = _path(raw, root)
            if not options[key].is_file():
                check.add(f"{place}.{key}", f"{options[key]} does not exist")
        elif key == "features":
            options[key] = str(raw)
        elif not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
            check.add(f"{place}.{key}", f"must be a whole number >= 1, not {raw!r} (default {default})")
        else:
            options[key] = raw
    return options


def _selections(check: _Checker, value: Any, registry: Any, root: Path) -> list[SelectionSpec]:
    if not isinstance(value, list) or not value:
        check.add("selections", f"must be a list of weightings (uriel, softmax, ...) or mappings; got {value!r}")
        return []
    chosen = []
    for index, entry in enumerate(value):
        place = f"selections[{index}]"
        entry = {"weighting": entry} if isinstance(entry, str) else entry
        given = check.mapping(entry, place, ("name", "weighting", "params", "sources", "draws", *SELECTION_KEYS))
        if not given:
            continue
        weighting_name = str(given.get("weighting", "average" if given.get("sources") == "all" else ""))
        try:
            weighting = registry.get("weighting", weighting_name)
        except MergingUrielError as exc:
            check.add(f"{place}.weighting", str(exc))
            weighting = None
        params = _params(check, getattr(weighting, "params", ()), given.get("params"), f"{place}.params",
                         f"weighting {weighting_name!r}") if weighting is not None else {}
        options = _selection_options(check, {k: v for k, v in given.items() if k in SELECTION_KEYS}, place, root)
        sources = given.get("sources")
        if sources not in (None, "all"):
            check.add(f"{place}.sources", f"{sources!r} is not allowed; allowed: all (every available model)")
        draws = given.get("draws", 1)
        if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
            check.add(f"{place}.draws", f"must be a whole number >= 1, not {draws!r}")
            draws = 1
        elif draws > 1 and weighting_name != "random":
            check.add(f"{place}.draws", f"only weighting 'random' draws; {weighting_name!r} gives one source set")
        if sources == "all" and weighting_name != "average":
            check.add(f"{place}.sources", f"all (every source, equal weights) goes with weighting average, not "
                                          f"{weighting_name!r}")
        name = str(given.get("name") or ("all" if sources == "all" else weighting_name))
        if not NAME.fullmatch(name):
            check.add(f"{place}.name", f"{name!r} may hold only letters, digits and _ . + -")
        chosen.append(SelectionSpec(name, weighting_name, params, options, sources, draws))
    names = [s.name for s in chosen]
    for repeated in sorted({n for n in names if names.count(n) > 1}):
        check.add("selections", f"two selections are named {repeated!r}; give one of them its own name:")
    return chosen


def _params(check: _Checker, declared: tuple[Param, ...], given: Any, place: str, owner: str) -> dict[str, Any]:
    """``given`` checked against ``declared``, each problem at its own place; defaults filled in."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        check.add(place, f"must be a mapping of parameter names to values, not {_kind(given)}")
        return {}
    by_name = {p.name: p for p in declared}
    values = {p.name: p.default for p in declared}
    for name, raw in given.items():
        param = by_name.get(name)
        if param is None:
            allowed = ", ".join(sorted(by_name)) or "none"
            check.add(f"{place}.{name}", f"unknown parameter of {owner}; allowed: {allowed}")
            continue
        try:
            values[name] = param.parse(raw, owner)
        except ConfigError as exc:
            if "out of range" in str(exc) and param.choices is not None:
                check.add(f"{place}.{name}", f"{raw!r} is not allowed; allowed: {param.range_text()}")
            elif "out of range" in str(exc):
                check.add(f"{place}.{name}", f"{raw!r} is outside {param.range_text()}")
            else:
                check.add(f"{place}.{name}", f"{raw!r} is not a valid {param.type.__name__}")
    return values


def _methods(check: _Checker, value: Any, place: str, kind: str, registry: Any, selections: list[str],
             models: ModelsSpec, data: DataSpec) -> list[MethodSpec]:
    key, plugin_kind = ("voting", "voting_method") if kind == "vote" else ("strategy", "strategy")
    extra = ITERATIVE_KEYS if kind == "iterative" else MERGE_KEYS if kind == "merge" else ()
    if not isinstance(value, (list, tuple)):
        check.add(place, f"must be a list, not {_kind(value)}")
        return []
    methods = []
    for index, entry in enumerate(value):
        here = f"{place}[{index}]"
        entry = {key: entry} if isinstance(entry, str) else entry
        given = check.mapping(entry, here, (key, "label", "params", "selections", *extra))
        if not given:
            continue
        name = str(given.get(key, ""))
        try:
            plugin = registry.get(plugin_kind, name)
        except MergingUrielError as exc:
            check.add(f"{here}.{key}", str(exc))
            continue
        params = _params(check, getattr(plugin, "params", ()), given.get("params"), f"{here}.params",
                         f"{plugin_kind.replace('_', ' ')} {name!r}")
        if kind == "merge" and getattr(plugin, "needs_base", False) and models.base is None:
            check.add(f"{here}.{key}", f"{name} needs a base model; give models.base")
        options = {k: given[k] for k in extra if k in given}
        if kind == "iterative":
            _iterative_options(check, options, here, models, data)
        if kind == "merge":
            _merge_options(check, options, here)
        if kind != "vote" and getattr(plugin, "needs_data", False) and data.data_dir is None:
            check.add(f"{here}.{key}", f"{name} computes statistics from labelled data; give data.data_dir")
        wanted = given.get("selections", selections)
        if isinstance(wanted, str):
            wanted = [wanted]
        if not isinstance(wanted, list) or not wanted or not all(isinstance(w, str) for w in wanted):
            check.add(f"{here}.selections", f"must be a non-empty list of selection names, not {wanted!r}")
            wanted = []
        label = str(given.get("label", name))
        if not NAME.fullmatch(label):
            check.add(f"{here}.label", f"{label!r} may hold only letters, digits and _ . + -")
        for unknown in [s for s in wanted if s not in selections]:
            check.add(f"{here}.selections", f"no selection named {unknown!r}; the selections are {', '.join(selections)}")
        methods.append(MethodSpec(kind, label, name, params,
                                  tuple(s for s in wanted if s in selections), options))
    labels = [m.label for m in methods]
    for repeated in sorted({label for label in labels if labels.count(label) > 1}):
        check.add(place, f"two entries are labelled {repeated!r}; give each its own label:")
    return methods


def _merge_options(check: _Checker, options: Mapping[str, Any], here: str) -> None:
    """A ``strategies:`` entry's ``output_format`` and ``adapter_rank``, checked as ``mu merge`` checks them."""
    from merginguriel_core.adapters import OUTPUT_FORMATS

    form, rank = options.get("output_format", "model"), options.get("adapter_rank")
    if form not in OUTPUT_FORMATS:
        check.add(f"{here}.output_format", f"{form!r} is not one of: {', '.join(OUTPUT_FORMATS)}")
    if rank is not None and form != "adapter":
        check.add(f"{here}.adapter_rank", "goes with output_format: adapter")
    elif rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        check.add(f"{here}.adapter_rank", f"must be a whole number >= 1, not {rank!r}")


def _iterative_options(check: _Checker, options: dict[str, Any], here: str, models: ModelsSpec, data: DataSpec) -> None:
    """An ``iterative:`` entry's options, checked as ``mu train-iterative`` checks them."""
    from merginguriel_core.iterative import IterativeOptions

    if models.base is None:
        check.add(here, "iterative training starts every model from the base model; give models.base")
    if data.data_dir is None and data.data_file is None:
        check.add(here, "iterative training needs the sources' training data; give data.data_dir")
    try:
        for problem in IterativeOptions(**{k: v for k, v in options.items() if k != "compare_with"}).problems():
            check.add(here, _spec_words(problem))
    except TypeError as exc:
        check.add(here, f"a value has the wrong type ({exc})")


def _baselines(check: _Checker, value: Any) -> tuple[str, ...]:
    if value in (None, "none", False):
        return ()
    if value == "all":
        return BASELINES
    if not isinstance(value, list):
        check.add("baselines", f"must be all, none or a list of {', '.join(BASELINES)}; got {value!r}")
        return BASELINES
    for index, name in enumerate(value):
        if name not in BASELINES:
            check.add(f"baselines[{index}]", f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
        elif value.index(name) != index:
            check.add(f"baselines[{index}]", f"{name} is named twice")
    return tuple(dict.fromkeys(name for name in value if name in BASELINES))
