"""``mu nxn``: every source model on every language's split, the matrix and its baselines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.evaluation import LogitsCache, Predictor, default_cache_dir, nxn_matrix
from merginguriel_core.languages import resolve_language
from merginguriel_core.merge import resolve_device
from merginguriel_core.models import collect_models, resolve_location
from merginguriel_core.outputs import OutputLock, check_results_folder
from merginguriel_core.plugins import get_registry
from merginguriel_core.reports import NXN_FILES, nxn_summary, write_nxn_report
from merginguriel_cli import options as opt
from merginguriel_cli.evaluate import evaluator_plugins

def nxn(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for evaluation_matrix.csv and the baselines.")],
    models: opt.Models = None,
    model_pattern: opt.ModelPattern = opt.DEFAULTS["model_pattern"],
    registry: opt.Registry = None,
    model: opt.Model = None,
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    target_langs: Annotated[Optional[list[str]], typer.Option("--target-langs", help="Columns (default: every source's language).")] = None,
    split: opt.Split = "test",
    evaluators: opt.Evaluators = None,
    batch_size: opt.BatchSize = 64,
    max_length: opt.MaxLength = 128,
    cache_dir: opt.CacheDir = None,
    no_cache: opt.NoCache = False,
    device: opt.Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing evaluation_matrix.csv in --output.")] = False,
    progress: opt.Progress = True,
    config: opt.Config = None,
) -> None:
    """Evaluate every source model on every target language (logits cached; a rerun computes only what is missing)."""

    data = get_registry().get("dataset", dataset)
    chosen = evaluator_plugins(evaluators)
    location = opt.data_location(data_dir, data_file)
    refs = collect_models(models, model_pattern, registry, model or ())
    inputs = [models, registry, location, *(ref.location for ref in refs.values())]
    check_results_folder(output, NXN_FILES, overwrite, inputs)
    targets = [resolve_language(code).locale for code in opt.split_list(target_langs)] or list(refs)
    opt.check_locales(data, location, targets, split)
    folders = {locale: resolve_location(ref.location) for locale, ref in refs.items()}
    # no bar per cell: nxn_matrix shows one bar over all cells
    predictor = Predictor(LogitsCache(None if no_cache else (cache_dir or default_cache_dir())), resolve_device(device),
                          batch_size, max_length)
    with OutputLock(output):  # a second run to the same --output fails at once, naming this one
        _run(output, folders, targets, data, dataset, location, split, chosen, predictor, overwrite, progress)


def _run(output: Path, folders, targets, data, dataset: str, location, split: str, chosen, predictor,
         overwrite: bool, progress: bool) -> None:
    started = time.perf_counter()
    result = nxn_matrix(folders, targets, data, location, split, chosen, predictor, progress)
    wall = time.perf_counter() - started
    accuracy = write_nxn_report(output, result, dataset=dataset, data=location or data.hub_id, split=split,
                                sources=list(folders), targets=targets, wall_seconds=wall, replace=overwrite)
    typer.echo(accuracy.to_string(float_format=lambda v: f"{v:.3f}"))
    typer.echo(nxn_summary(result, wall, output))


def register(app: typer.Typer) -> None:
    app.command("nxn")(nxn)
