"""The cells of an experiment grid, and how each is computed.

A cell is one target × one method: an N×N cell (one model evaluated zero-shot on the
target), a merge (a strategy under a selection), a vote (a voting method under a selection)
or a baseline (a single model chosen by a rule: the target's own, English, the closest
language's, the best zero-shot one). Work is handed to an executor as *tasks*: an N×N row
(one model, loaded once, over every target), one merge, or one target's votes and
baselines (which read the logits the N×N row cached, so they cost no forward pass).

Each cell writes ``cells/TARGET/CELL/results.json`` atomically (:mod:`.results`); a task
that fails records the error in each of its cells and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from merginguriel_core.errors import ConfigError, MergingUrielError, first_line
from merginguriel_core.experiments.spec import ExperimentSpec, MethodSpec, SelectionSpec

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np

ENGLISH = "en-US"


@dataclass(frozen=True)
class Cell:
    """One target × one method. ``method`` is a strategy or voting label, a model's locale
    (N×N) or a baseline's name; ``selection`` and ``draw`` say which sources a merge or vote uses."""

    target: str
    kind: str
    method: str
    selection: str | None = None
    draw: int | None = None

    @property
    def id(self) -> str:
        if self.kind in ("nxn", "baseline"):
            return f"{self.kind}-{self.method}"
        chosen = self.selection + (f"#{self.draw}" if self.draw is not None else "")
        return f"{self.kind}-{self.method}@{chosen}"

    @property
    def key(self) -> str:
        return f"{self.target}/{self.id}"


@dataclass(frozen=True)
class Task:
    """What one executor call computes: ``kind`` is ``nxn`` (a model's row), ``merge``,
    ``iterative`` (one iterative training run) or ``target`` (one target's votes and
    baselines); ``cells`` are their keys."""

    kind: str
    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        first = self.cells[0]
        if self.kind == "nxn":
            return f"N×N {first.method} → {len(self.cells)} targets"
        if self.kind in ("merge", "iterative"):
            return first.key
        return f"{first.target}: {len(self.cells)} votes and baselines"


def selection_draws(selection: SelectionSpec) -> list[int | None]:
    return list(range(selection.draws)) if selection.weighting == "random" else [None]


def expand(spec: ExperimentSpec, targets: Iterable[str], models: Iterable[str]) -> list[Cell]:
    """Every cell of the grid, in a stable order (per target: N×N, baselines, merges, votes)."""
    models = sorted(models)
    cells = []
    for target in targets:
        cells += [Cell(target, "nxn", locale) for locale in models]
        cells += [Cell(target, "baseline", name) for name in spec.baselines]
        for method in spec.methods:
            for name in method.selections:
                for draw in selection_draws(spec.selection_named(name)):
                    cells.append(Cell(target, method.kind, method.label, name, draw))
    return cells


def tasks_for(cells: Iterable[Cell]) -> tuple[list[Task], list[Task]]:
    """``(first, then)``: the N×N rows, then the merges and the per-target tasks that read them."""
    rows: dict[str, list[Cell]] = {}
    merges, per_target = [], {}
    for cell in cells:
        if cell.kind == "nxn":
            rows.setdefault(cell.method, []).append(cell)
        elif cell.kind in ("merge", "iterative"):
            merges.append(Task(cell.kind, (cell,)))
        else:
            per_target.setdefault(cell.target, []).append(cell)
    first = [Task("nxn", tuple(row)) for _, row in sorted(rows.items())]
    return first, merges + [Task("target", tuple(group)) for group in per_target.values()]


def definition(context: "Context", cell: Cell) -> dict[str, Any]:
    """What decides a cell's numbers, and nothing else; its hash (:func:`definition_hash`) says
    whether a stored result still answers the spec.

    Every cell: the target's evaluation examples (their content, not where they lie), the
    evaluators and the token limit. N×N cells: the model's locale. Merges and votes: the
    method and its params, the selection with its options and draw, the seed and the models
    the selection chooses from; merges also the base model's name and the statistics split.
    ``closest`` and ``oracle``: the models they choose among. Not the models' weights: a
    retrained model counts as the same model (use a new results folder after retraining
    with other settings)."""
    spec, data = context.spec, context.spec.data
    common: dict[str, Any] = {"cell": cell.key, "data": {"dataset": data.dataset, "split": data.split,
                                                         "examples": context.data_fingerprint(cell.target),
                                                         "evaluators": list(data.evaluators),
                                                         "max_length": data.max_length}}
    if cell.kind in ("merge", "vote", "iterative"):
        method = _method(spec, cell)
        selection = spec.selection_named(cell.selection)
        options = {**spec.selection, **selection.options}
        if "similarity_matrix" in options:
            options["similarity_matrix"] = _file_digest(options["similarity_matrix"])
        common |= {"plugin": method.plugin, "params": dict(method.params), "seed": spec.seed,
                   "selection": {"weighting": selection.weighting, "params": dict(selection.params),
                                 "options": options, "sources": selection.sources, "draw": cell.draw},
                   "candidates": context.candidates(cell.target)}
        if context.reads_target_text(selection):
            common["target_text"] = context.target_text_fingerprint(cell.target)
            common["base"] = spec.models.base.name if spec.models.base is not None else None
        if cell.kind in ("merge", "iterative"):
            common["data"] |= {"statistics_split": data.statistics_split}
            common["base"] = spec.models.base.name if spec.models.base is not None else None
        if cell.kind == "iterative":  # trained here: the recipe decides the numbers
            common["iterative"] = {k: v for k, v in method.options.items() if k != "compare_with"}
            common["training"] = dict(spec.training)
            common["data"] |= {"training": "train"}
    elif cell.kind == "baseline" and cell.method in ("closest", "oracle"):
        common["candidates"] = context.candidates(cell.target)
        if cell.method == "closest":
            matrix = spec.selection.get("similarity_matrix")
            common["similarity"] = {"features": spec.selection.get("features", "syntax_knn"),
                                    "matrix": _file_digest(matrix) if matrix is not None else None}
    return json.loads(json.dumps(common, default=str))


def _file_digest(path: Any) -> str:
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def definition_hash(context: "Context", cell: Cell) -> str:
    text = json.dumps(definition(context, cell), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _method(spec: ExperimentSpec, cell: Cell) -> MethodSpec:
    return next(m for m in spec.methods if m.kind == cell.kind and m.label == cell.method)


# ------------------------------------------------------------------------- computing cells
@dataclass
class Context:
    """What every cell of one run reads, built once per process: the checked spec, the
    plugins, the models, the data, the logits cache and the N×N results so far."""

    spec: ExperimentSpec
    results: Path
    registry: Any
    models: dict[str, Path]
    keep_models: bool = False
    _examples: dict[str, Any] = field(default_factory=dict, repr=False)
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)
    _predictor: Any = field(default=None, repr=False)
    _label_space: list[str] | None = field(default=None, repr=False)

    @property
    def dataset(self):
        return self.registry.get("dataset", self.spec.data.dataset)

    @property
    def location(self) -> str | None:
        data = self.spec.data
        location = data.data_dir if data.data_dir is not None else data.data_file
        return str(location) if location is not None else None

    @property
    def evaluators(self) -> list[Any]:
        return [self.registry.get("evaluator", name) for name in self.spec.data.evaluators]

    @property
    def device(self):
        from merginguriel_core.merge import resolve_device

        return resolve_device(self.spec.device)

    def label_space(self) -> list[str]:
        if self._label_space is None:
            from merginguriel_core.evaluation import label_space_for

            self._label_space = label_space_for(self.dataset, self.location, self.models.values())
        return self._label_space

    def data_fingerprint(self, target: str) -> str:
        """A hash of the target's evaluation examples (or why they cannot be read)."""
        if target not in self._fingerprints:
            from merginguriel_core.evaluation import examples_fingerprint

            try:
                self._fingerprints[target] = examples_fingerprint(self.examples(target))
            except MergingUrielError as exc:
                self._fingerprints[target] = f"unavailable: {first_line(exc)}"
        return self._fingerprints[target]

    def examples(self, target: str):
        """The target's evaluation split (read once per process)."""
        if target not in self._examples:
            self._examples[target] = self.dataset.load(self.location, target, self.spec.data.split)
        return self._examples[target]

    def predictor(self):
        if self._predictor is None:
            from merginguriel_core.evaluation import LogitsCache, Predictor

            data = self.spec.data
            self._predictor = Predictor(LogitsCache(self.results / "cache"), self.device, data.batch_size,
                                        data.max_length)
        return self._predictor

    def metrics(self, logits_or_predictions, target: str) -> dict[str, float]:
        from merginguriel_core.evaluation import gold_ids, score

        values = np.asarray(logits_or_predictions)
        predictions = values.argmax(-1) if values.ndim == 2 else values
        labels = self.label_space()
        return score(predictions, gold_ids(self.examples(target), labels), len(labels), self.evaluators)

    def candidates(self, target: str) -> list[str]:
        """The models a target's selections choose from: all, without its own unless the spec keeps it."""
        return [m for m in self.models if not (self.spec.leave_target_out and m == target)]

    def selection(self, cell: Cell):
        """The sources and weights of a merge or vote cell, chosen as `mu merge` would."""
        from merginguriel_core.selection import SelectionOptions, select_sources

        chosen = self.spec.selection_named(cell.selection)
        candidates = self.candidates(cell.target)
        options = SelectionOptions(**{**self.spec.selection, **chosen.options})
        params = dict(chosen.params) | ({"draw": cell.draw} if cell.draw is not None else {})
        if chosen.weighting == "random":
            params["seed"] = self.spec.seed  # the spec's seed decides the draws
        weighting = self.registry.get("weighting", chosen.weighting)
        if chosen.sources == "all":
            return select_sources(weighting, options, available=candidates, target=None,
                                  source_langs=tuple(candidates), weighting_params=params)
        text = self.spec.text_for_weightings() if weighting.needs_target_text else None
        return select_sources(weighting, options, available=candidates, target=cell.target,
                              include_target=not self.spec.leave_target_out, weighting_params=params,
                              target_text=text, models=self.models, base_model=self.spec.models.base,
                              device=self.spec.device)

    def reads_target_text(self, selection) -> bool:
        """Whether ``selection``'s weighting reads the spec's target text."""
        return bool(self.spec.target_text) and self.registry.get("weighting", selection.weighting).needs_target_text

    def target_text_fingerprint(self, target: str) -> str:
        """A hash of the target text a cell's weighting reads (or why it cannot be read)."""
        from merginguriel_core.target_text import fingerprint

        key = f"target_text:{target}"  # read once per target, as the evaluation examples are
        if key not in self._fingerprints:
            try:
                self._fingerprints[key] = fingerprint(self.spec.text_for_weightings().sentences(target, self.registry))
            except MergingUrielError as exc:
                self._fingerprints[key] = f"unavailable: {first_line(exc)}"
        return self._fingerprints[key]


def run_nxn_row(context: Context, task: Task) -> list[dict[str, Any]]:
    """One model on every target of the row: loaded once, each target's logits cached."""
    model = task.cells[0].method
    outcomes = []
    for cell in task.cells:
        started = time.perf_counter()
        try:
            logits = context.predictor().logits(context.models[model], context.examples(cell.target),
                                                context.label_space())
            outcomes.append({"cell": cell, "status": "done", "model": model,
                             "metrics": context.metrics(logits, cell.target), "examples": len(logits),
                             "timings": {"total": time.perf_counter() - started}})
        except MergingUrielError as exc:
            outcomes.append(failed(cell, exc, started))
    return outcomes


def run_merge_cell(context: Context, cell: Cell) -> dict[str, Any]:
    """Select, merge in memory and evaluate; the model is written only with ``keep_models``."""
    from merginguriel_core.interfaces import LabelledData
    from merginguriel_core.plan import plan_merge

    started = time.perf_counter()
    method = _method(context.spec, cell)
    strategy = context.registry.get("strategy", method.plugin)
    selection = context.selection(cell)
    selected = time.perf_counter()
    data = None
    if strategy.needs_data:
        spec = context.spec.data
        data = LabelledData(context.dataset, spec.data_dir, spec.data_file, spec.statistics_split, spec.max_length,
                            context.spec.seed, context.results / "statistics")
    plan = plan_merge(None, strategy=strategy, selection=selection, models=dict(context.models), params=method.params,
                      base_model=context.spec.models.base if strategy.needs_base else None, data=data,
                      device=context.spec.device, seed=context.spec.seed, progress=False, registry=context.registry,
                      overwrite=True,  # the cell owns its --keep-models folder: a retry replaces what a kill left
                      given=strategy.options_read(),  # the grid sets exactly what the strategy reads
                      output_format=method.options.get("output_format", "model"),
                      adapter_rank=method.options.get("adapter_rank"))
    keep = context.results / "models" / cell.target / cell.id if context.keep_models else None
    from merginguriel_core.inmemory import merge_and_evaluate

    evaluation = merge_and_evaluate(plan, context.examples(cell.target), context.label_space(),
                                    batch_size=context.spec.data.batch_size, max_length=context.spec.data.max_length,
                                    evaluators=context.evaluators, keep=keep)
    timings = {"select": selected - started, **evaluation.timings, "total": time.perf_counter() - started}
    return {"cell": cell, "status": "done", "sources": [list(pair) for pair in selection.weights],
            "notes": list(selection.notes), "metrics": evaluation.metrics, "examples": len(evaluation.predictions),
            "timings": timings, **({"model_folder": str(keep)} if keep is not None else {})}


def run_iterative_cell(context: Context, cell: Cell) -> dict[str, Any]:
    """Train the selection's sources from the base model, merging them as they train
    (:mod:`merginguriel_core.iterative`), and score the final merge on the target. The run
    lives in ``RESULTS/iterative/TARGET/CELL`` while it trains, so a killed grid resumes it
    from its last checkpoint; its final model is kept there only with ``keep_models``."""
    from merginguriel_core.iterative import IterativeOptions, cell_outcome, plan_iterative, run_iterative
    from merginguriel_core.training import TrainingConfig

    method = _method(context.spec, cell)
    selection = context.selection(cell)
    spec, data = context.spec, context.spec.data
    options = {k: v for k, v in method.options.items() if k != "compare_with"}
    plan = plan_iterative(
        context.results / "iterative" / cell.target / cell.id, target=cell.target, selection=selection,
        strategy=context.registry.get("strategy", method.plugin), params=method.params, base_model=spec.models.base,
        dataset=context.dataset, data_dir=data.data_dir, data_file=data.data_file,
        training=TrainingConfig(**spec.training, seed=spec.seed), options=IterativeOptions(**options),
        device=spec.device, eval_split=data.split, evaluators=context.evaluators, eval_max_length=data.max_length,
        eval_batch_size=data.batch_size, keep_model=context.keep_models,
        stats_dir=context.results / "statistics", progress=False, registry=context.registry)
    result = run_iterative(plan, resume="auto")
    compared = method.options.get("compare_with") or method.label
    return {"cell": cell, **cell_outcome(plan, result), "notes": list(selection.notes),
            "compare_with": f"merge-{compared}@{cell.selection}"}


def run_vote_cell(context: Context, cell: Cell) -> dict[str, Any]:
    """Combine the sources' cached logits on the target with the voting method."""
    started = time.perf_counter()
    method = _method(context.spec, cell)
    voting = context.registry.get("voting_method", method.plugin)
    selection = context.selection(cell)
    examples, labels = context.examples(cell.target), context.label_space()
    predictor = context.predictor()
    passes = predictor.forward_passes
    logits = np.stack([predictor.logits(context.models[locale], examples, labels) for locale, _ in selection.weights])
    weights = np.array([w for _, w in selection.weights], dtype=np.float64)
    scores = voting.combine(logits, weights, dict(method.params))
    return {"cell": cell, "status": "done", "sources": [list(pair) for pair in selection.weights],
            "notes": list(selection.notes), "metrics": context.metrics(scores, cell.target), "examples": len(scores),
            "forward_passes": predictor.forward_passes - passes, "timings": {"total": time.perf_counter() - started}}


def run_baseline_cell(context: Context, cell: Cell, zero_shot: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A single model chosen by the baseline's rule, scored from its N×N cell (``zero_shot``:
    model -> that cell's results on this target)."""
    started = time.perf_counter()
    target, rule = cell.target, cell.method
    candidates = [m for m in context.candidates(target) if m in zero_shot]
    if rule == "own":
        if target not in context.models:
            return skipped(cell, f"{target} has no model of its own", started)
        model, why = target, "the target's own model (an upper bound)"
    elif rule == "english":
        if ENGLISH not in context.models:
            return skipped(cell, f"there is no English ({ENGLISH}) model", started)
        if ENGLISH == target and context.spec.leave_target_out:
            return skipped(cell, "the target is English, whose own model is left out", started)
        model, why = ENGLISH, "the English model alone"
    elif rule == "closest":
        if not candidates:
            return skipped(cell, "no source model was evaluated on the target", started)
        model, similarity = _closest(context, target, candidates)
        why = f"the most URIEL-similar language with a model (similarity {similarity:.4f})"
    else:  # oracle
        if not candidates:
            return skipped(cell, "no source model was evaluated on the target", started)
        metric = "accuracy" if "accuracy" in zero_shot[candidates[0]]["metrics"] else next(
            iter(zero_shot[candidates[0]]["metrics"]))
        model = max(candidates, key=lambda m: (zero_shot[m]["metrics"][metric], m))
        why = f"the best source model by {metric} on the target's own test data (an oracle choice)"
    if model not in zero_shot:
        raise ConfigError(f"the N×N cell of {model} on {target} did not finish; see its results")
    found = zero_shot[model]
    return {"cell": cell, "status": "done", "model": model, "why": why, "metrics": dict(found["metrics"]),
            "examples": found.get("examples"), "compared": sorted(candidates),
            "timings": {"total": time.perf_counter() - started}}


def _closest(context: Context, target: str, candidates: list[str]) -> tuple[str, float]:
    from merginguriel_core.interfaces import WeightingRequest
    from merginguriel_core.selection import similarity_matrix_for

    options = context.spec.selection
    matrix = similarity_matrix_for(WeightingRequest(target=target, available=tuple(candidates),
                                                    features=options.get("features", "syntax_knn"),
                                                    similarity_matrix=options.get("similarity_matrix")))
    row = matrix.row(target)
    index = {locale: i for i, locale in enumerate(matrix.locales)}
    scored = [(float(row[index[m]]) if m in index else float("-inf"), m) for m in candidates]
    similarity, model = max(scored)
    return model, similarity


def failed(cell: Cell, error: BaseException, started: float) -> dict[str, Any]:
    return {"cell": cell, "status": "failed", "error": f"{type(error).__name__}: {first_line(error)}",
            "timings": {"total": time.perf_counter() - started}}


def skipped(cell: Cell, reason: str, started: float) -> dict[str, Any]:
    """A cell that has no answer for this target (not a failure: rerunning changes nothing)."""
    return {"cell": cell, "status": "skipped", "reason": reason, "timings": {"total": time.perf_counter() - started}}
