"""``mu nxn``: every source model on every language's split, the matrix and its baselines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import LogitsCache, Predictor, best_overall_zero_shot, default_cache_dir, nxn_matrix
from merginguriel_core.languages import resolve_language
from merginguriel_core.merge import resolve_device
from merginguriel_core.models import collect_models, resolve_location
from merginguriel_core.outputs import OutputLock
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt
from merginguriel_cli.evaluate import evaluator_plugins
from merginguriel_cli.results import check_results_folder, write_json_atomically, write_text_atomically

if TYPE_CHECKING:  # pandas is imported where it is used: it costs every `mu` call ~0.5 s
    import pandas as pd

MATRIX = "evaluation_matrix.csv"
#: The files every run writes (plus one matrix per further metric).
RESULTS = (MATRIX, "baselines.csv", "nxn_details.json")


def _write_csv(frame: pd.DataFrame, path: Path, replace: bool) -> None:
    write_text_atomically(path, frame.to_csv(float_format="%.4f"), replace=replace)


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
) -> None:
    """Evaluate every source model on every target language (logits cached; a rerun computes only what is missing)."""

    data = get_registry().get("dataset", dataset)
    chosen = evaluator_plugins(evaluators)
    location = opt.data_location(data_dir, data_file)
    refs = collect_models(models, model_pattern, registry, model or ())
    inputs = [models, registry, location, *(ref.location for ref in refs.values())]
    check_results_folder(output, RESULTS, overwrite, inputs)
    targets = [resolve_language(code).locale for code in opt.split_list(target_langs)] or list(refs)
    opt.check_locales(data, location, targets, split)
    folders = {locale: resolve_location(ref.location) for locale, ref in refs.items()}
    predictor = Predictor(LogitsCache(None if no_cache else (cache_dir or default_cache_dir())), resolve_device(device),
                          batch_size, max_length, progress)
    with OutputLock(output):  # a second run to the same --output fails at once, naming this one
        _run(output, folders, targets, data, dataset, location, split, chosen, predictor, overwrite)


def _run(output: Path, folders, targets, data, dataset: str, location, split: str, chosen, predictor,
         overwrite: bool) -> None:
    import pandas as pd

    started = time.perf_counter()
    result = nxn_matrix(folders, targets, data, location, split, chosen, predictor)
    wall = time.perf_counter() - started
    output.mkdir(exist_ok=True)
    for metric, frame in result.matrices.items():
        _write_csv(frame, output / (MATRIX if metric == "accuracy" else f"evaluation_matrix_{metric}.csv"), overwrite)
    accuracy = result.matrices.get("accuracy", next(iter(result.matrices.values())))
    baselines = []
    for target in targets:
        own = accuracy.at[target, target] if target in accuracy.index else None
        try:
            best, value = best_overall_zero_shot(accuracy, target)
        except ConfigError:
            best, value = None, None
        baselines.append({"target": target, "own_model": own, "best_zero_shot_source": best, "best_zero_shot": value})
    _write_csv(pd.DataFrame(baselines).set_index("target"), output / "baselines.csv", overwrite)
    cells = len(result.seconds)
    write_json_atomically(output / "nxn_details.json", replace=overwrite, data={
        "dataset": dataset, "data": location or data.hub_id, "split": split, "sources": list(folders),
        "targets": targets, "cells": cells, "forward_passes": result.forward_passes, "cache_hits": result.cache_hits,
        "wall_seconds": round(wall, 2),
        "seconds_per_cell": {f"{s}->{t}": round(v, 3) for (s, t), v in result.seconds.items()},
    })
    typer.echo(accuracy.to_string(float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"{cells} cells ({result.forward_passes} computed, {result.cache_hits} from the cache) in {wall:.1f} s "
               f"-> {output / MATRIX}")


def register(app: typer.Typer) -> None:
    app.command("nxn")(nxn)
