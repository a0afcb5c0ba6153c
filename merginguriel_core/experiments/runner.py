"""One resumable runner for an experiment grid: ``mu experiment run SPEC.yaml``.

:func:`run_experiment` checks the spec, locks the results folder (a second runner on it
fails at once), refuses a folder made by another spec unless ``force``, then computes every
cell that has no valid result: first the N×N rows (each model loaded once, its logits
cached), then the merges and each target's votes and baselines, through an executor plugin
(``local`` or ``ray``). Finished cells are skipped on a rerun; failed ones are kept (with
their error) unless ``retry_failed``. A killed run loses at most the cells it was computing.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping

from merginguriel_core.errors import ConfigError, first_line
from merginguriel_core.experiments import grid
from merginguriel_core.experiments.grid import Cell, Context, Task
from merginguriel_core.experiments.results import (
    EXPERIMENT_FILE, FORMAT, cell_file, read_cell, read_experiment, write_cell,
)
from merginguriel_core.experiments.spec import ExperimentSpec, load_spec
from merginguriel_core.lazy import tqdm
from merginguriel_core.notes import note
from merginguriel_core.outputs import OutputLock, write_json_atomically


@dataclass
class RunSummary:
    """What one run did: cells in the grid, reused from earlier runs, computed now (and how
    many of those failed or had no answer), and the wall time."""

    results: Path
    cells: int
    reused: int
    computed: int = 0
    failed: int = 0
    skipped: int = 0
    #: Cells of tasks that never reported (a worker died): left without a result.
    lost: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        lost = f", {self.lost} lost (rerun to compute them)" if self.lost else ""
        return (f"{self.cells} cells: {self.reused} already done, {self.computed} computed "
                f"({self.failed} failed, {self.skipped} without an answer){lost} in {self.seconds:.0f} s; results in "
                f"{self.results}")


def resolve_targets(spec: ExperimentSpec, context: Context) -> list[str]:
    if spec.targets == "all_with_model":
        return sorted(context.models)
    if spec.targets == "all_with_test_data":
        return sorted(context.dataset.locales(context.location))
    return list(spec.targets)


def _models(spec: ExperimentSpec, fetch: bool = True) -> dict[str, Path]:
    """The spec's models by locale: local folders (hub ids fetched unless ``fetch`` is off)."""
    from merginguriel_core.models import collect_models, resolve_location

    refs = collect_models(spec.models.folder, spec.models.pattern, spec.models.registry)
    return {locale: resolve_location(ref.location) if fetch else Path(ref.location)
            for locale, ref in sorted(refs.items())}


def build_context(spec: ExperimentSpec, results: Path, *, registry: Any = None, keep_models: bool = False,
                  fetch: bool = True) -> Context:
    """What the cells read; ``fetch=False`` (``mu experiment validate``) leaves hub ids unfetched."""
    if registry is None:
        from merginguriel_core.plugins import load_plugins

        registry = load_plugins()
    return Context(spec, Path(results), registry, _models(spec, fetch), keep_models)


def plan_cells(spec: ExperimentSpec, context: Context, *, retry_failed: bool = False
               ) -> tuple[list[Cell], list[Cell], dict[str, str]]:
    """``(every cell, the ones to compute, definition hash by cell key)``."""
    targets = resolve_targets(spec, context)
    cells = grid.expand(spec, targets, context.models)
    hashes = {cell.key: grid.definition_hash(context, cell) for cell in cells}
    todo = []
    nxn_done: dict[str, set[str]] = {}  # target -> models whose N×N cell is done and stays
    nxn_todo: set[str] = set()  # targets with an N×N cell to compute
    for cell in cells:  # a target's N×N cells come before its baselines (expand's order)
        path = cell_file(context.results, cell.target, cell.id)
        record, damaged = read_cell(path)
        if damaged:
            note(f"{path} is damaged ({damaged}); recomputing {cell.key}")
        stale = (record is None or record.get("definition_hash") != hashes[cell.key]
                 or (retry_failed and record.get("status") == "failed"))
        if cell.kind == "nxn":
            if stale:
                nxn_todo.add(cell.target)
            elif record.get("status") == "done":
                nxn_done.setdefault(cell.target, set()).add(cell.method)
        elif cell.kind == "baseline" and not stale and cell.method in ("closest", "oracle"):
            # chosen among the N×N cells that were done then: recompute when that set changes
            stale = cell.target in nxn_todo or set(record.get("compared", ())) != (
                set(context.candidates(cell.target)) & nxn_done.get(cell.target, set()))
        if stale:
            todo.append(cell)
    return cells, todo, hashes


# ----------------------------------------------------------------------- the worker side
_CONTEXTS: dict[tuple[str, str], Context] = {}


def _context_for(results: str) -> tuple[Context, dict[str, Any]]:
    """The run's context in this process (built once, from ``experiment.json``)."""
    experiment = read_experiment(Path(results)) or {}
    if "spec_file" not in experiment or "digest" not in experiment:
        raise ConfigError(f"{Path(results) / EXPERIMENT_FILE} is missing or damaged on this worker; the results folder "
                          "must be on a file system every worker sees at the same path")
    key = (results, experiment["digest"])
    if key not in _CONTEXTS:
        spec = load_spec(experiment["spec_file"])
        if spec.digest() != experiment["digest"]:
            raise ConfigError(f"the spec {experiment['spec_file']} changed while the experiment ran; rerun it")
        _CONTEXTS[key] = build_context(spec, Path(results), keep_models=experiment.get("keep_models", False))
    return _CONTEXTS[key], experiment


def run_task(results: str, task: Task) -> list[dict[str, Any]]:
    """Compute one task's cells and write each cell's ``results.json``; return a short summary
    per cell. Called by the executor, in this process or a worker."""
    context, experiment = _context_for(results)
    return [_write(context, experiment, outcome) for outcome in _compute(context, task)]


def _write(context: Context, experiment: Mapping[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """Write one cell's ``results.json`` from its outcome; return the cell's short summary."""
    outcome = dict(outcome)
    cell = outcome.pop("cell")
    record = {"spec": experiment["digest"], "cell": cell.key, "target": cell.target, "kind": cell.kind,
              "method": cell.method, "selection": cell.selection, "draw": cell.draw,
              "definition_hash": grid.definition_hash(context, cell),
              "definition": grid.definition(context, cell), **outcome}
    write_cell(cell_file(context.results, cell.target, cell.id), record)
    return {"cell": cell.key, "status": outcome["status"], "error": outcome.get("error")}


def _compute(context: Context, task: Task) -> list[dict[str, Any]]:
    if task.kind == "nxn":
        return _guarded(context, task.cells, lambda cells: grid.run_nxn_row(context, Task("nxn", tuple(cells))))
    if task.kind == "merge":
        return [_one(task.cells[0], lambda cell: grid.run_merge_cell(context, cell))]
    if task.kind == "iterative":
        return [_one(task.cells[0], lambda cell: grid.run_iterative_cell(context, cell))]
    zero_shot = _zero_shot(context, task.cells[0].target)
    outcomes = []
    for cell in task.cells:
        if cell.kind == "vote":
            outcomes.append(_one(cell, lambda c: grid.run_vote_cell(context, c)))
        else:
            outcomes.append(_one(cell, lambda c: grid.run_baseline_cell(context, c, zero_shot)))
    return outcomes


def _one(cell: Cell, compute) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        return compute(cell)
    except Exception as exc:  # one cell's failure never stops the grid; its error is its result
        return grid.failed(cell, exc, started)


def _guarded(context: Context, cells: tuple[Cell, ...], compute) -> list[dict[str, Any]]:
    started = time.perf_counter()
    try:
        return compute(cells)
    except Exception as exc:  # e.g. the model does not load: every cell of the row fails with it
        return [grid.failed(cell, exc, started) for cell in cells]


def _zero_shot(context: Context, target: str) -> dict[str, dict[str, Any]]:
    """The finished N×N cells on ``target``, by model."""
    found = {}
    for model in context.models:
        record, _ = read_cell(cell_file(context.results, target, Cell(target, "nxn", model).id))
        if record is not None and record.get("status") == "done":
            found[model] = record
    return found


# ----------------------------------------------------------------------- the runner side
def run_experiment(spec: ExperimentSpec | str | Path, results: str | Path, *, executor: Any = "local",
                   workers: int | None = None, executor_params: Mapping[str, Any] | None = None, retry_failed: bool = False,
                   force: bool = False, keep_models: bool = False, progress: bool = True,
                   registry: Any = None) -> RunSummary:
    """Run every cell of ``spec`` that has no valid result in ``results``; see the module docstring."""
    from merginguriel_core.params import resolve_params
    from merginguriel_core.plan import resolve_plugin

    if registry is None:
        from merginguriel_core.plugins import load_plugins

        registry = load_plugins()
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec, registry)
    if spec.source is None:
        raise ConfigError("run_experiment needs a spec read from a file (load_spec), so that workers can read it")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    runner = resolve_plugin("executor", executor, registry)
    params = resolve_params(runner.params, executor_params or {}, f"executor {runner.name!r}")
    results = Path(results).resolve()  # workers (other processes, other nodes) read it by this path
    with OutputLock(results):
        started = time.perf_counter()
        experiment = _claim(results, spec, force, keep_models)
        context = build_context(spec, results, registry=registry, keep_models=keep_models)
        cells, todo, _ = plan_cells(spec, context, retry_failed=retry_failed)
        summary = RunSummary(results, len(cells), len(cells) - len(todo))
        # what the grid is, so that a report knows which cells are still missing
        experiment |= {"targets": sorted({cell.target for cell in cells}), "models": {k: str(v) for k, v in
                       context.models.items()}, "cells": [cell.key for cell in cells]}
        first, then = grid.tasks_for(todo)
        run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "executor": runner.name, "workers": workers,
               "pid": os.getpid(), "cells": len(cells), "to_compute": len(todo)}
        experiment["runs"].append(run)
        write_json_atomically(results / EXPERIMENT_FILE, experiment)
        _CONTEXTS[(str(results), experiment["digest"])] = context  # in-process tasks reuse it
        with tqdm(total=len(todo), desc=spec.name, unit="cell", disable=not progress, file=sys.stderr) as bar:
            for phase in (first, then):
                _run_phase(runner, phase, str(results), workers, params, bar, summary,
                           _task_environment(Path(spec.source).read_text(encoding="utf-8")))
        summary.seconds = time.perf_counter() - started
        run |= {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(summary.seconds, 1),
                "computed": summary.computed, "failed": summary.failed}
        write_json_atomically(results / EXPERIMENT_FILE, experiment)
    return summary


def _claim(results: Path, spec: ExperimentSpec, force: bool, keep_models: bool) -> dict[str, Any]:
    """The folder's ``experiment.json`` for this spec: new, the same spec's, or (with ``force``)
    another spec's taken over; another spec's without ``force`` is refused."""
    digest = spec.digest()
    experiment = read_experiment(results)
    if experiment is None and results.exists() and any(results.iterdir()):
        raise ConfigError(f"{results} is not empty and holds no {EXPERIMENT_FILE}: not an experiment's results "
                          "folder; choose another")
    if experiment and experiment.get("digest") != digest and not force:
        raise ConfigError(
            f"{results} holds the results of another spec ({experiment.get('name')!r}, digest "
            f"{experiment.get('digest')}; this one is {digest}); pass --force to run this spec there (cells whose "
            "definition is unchanged are kept) or choose another results folder")
    runs = list((experiment or {}).get("runs", []))
    results.mkdir(parents=True, exist_ok=True)
    return {"format": FORMAT, "name": spec.name, "digest": digest, "spec_file": str(Path(spec.source).resolve()),
            "spec": spec.describe(), "keep_models": keep_models, "runs": runs}


def _task_environment(spec_text: str) -> dict[str, str]:
    """The environment the tasks need wherever they run: the variables the spec names
    (``$MU_WORK``) and MergingUriel's own (``MERGINGURIEL_PLUGINS``, ...)."""
    import re

    named = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", spec_text))
    return {k: v for k, v in os.environ.items() if k in named or k.startswith("MERGINGURIEL_")}


def _run_phase(runner, tasks: list[Task], results: str, workers: int | None, params: Mapping[str, Any], bar,
               summary: RunSummary, env: Mapping[str, str]) -> None:
    if not tasks:
        return
    for index, outcome in runner.map(partial(run_task, results), tasks, workers=workers, params=params,
                                     env=env):
        task = tasks[index]
        if isinstance(outcome, BaseException):
            # Not a cell's failure (those are recorded by the task): the worker died or the
            # executor lost the task. Its cells stay without a result, so a rerun computes them.
            summary.lost += len(task.cells)
            summary.failures.append(f"{task.label}: lost ({type(outcome).__name__}: {first_line(outcome)}); "
                                    "rerun to compute it")
            bar.update(len(task.cells))
            continue
        for cell in outcome:
            summary.computed += 1
            if cell["status"] == "failed":
                summary.failed += 1
                summary.failures.append(f"{cell['cell']}: {cell['error']}")
            elif cell["status"] == "skipped":
                summary.skipped += 1
        bar.update(len(task.cells))
        bar.set_postfix_str(f"{summary.computed - summary.failed} done, {summary.failed} failed · {task.label}")
