"""``mu ensemble`` and ``mu compare-ensembles``: combine source models' outputs at inference time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.ensemble import run_ensemble
from merginguriel_core.errors import ConfigError
from merginguriel_core.outputs import OutputLock, check_results_folder, write_text_atomically
from merginguriel_core.plan import data_location, plan_ensemble
from merginguriel_core.plugins import get_registry
from merginguriel_core.reports import COMPARISON_FILES, comparison_row, write_comparison_report
from merginguriel_cli import options as opt
from merginguriel_cli.selecting import print_selection

Nxn = Annotated[Optional[Path], typer.Option(
    "--nxn", help="Folder written by `mu nxn` (same dataset and split): take the best-overall zero-shot baseline from "
                  "its evaluation_matrix.csv instead of a forward pass of every model.")]
NoBaselines = Annotated[bool, typer.Option(
    "--no-baselines", help="Skip the best-overall zero-shot baseline (a forward pass of every model); the report says "
                           "it was not computed.")]


def ensemble(
    ctx: typer.Context,
    target_lang: opt.TargetLang = None,
    voting_method: Annotated[str, typer.Option("--voting-method", help="majority, weighted_majority, soft, uriel_logits, ...")] = "uriel_logits",
    weighting: opt.Weighting = opt.DEFAULTS["weighting"],
    models: opt.Models = None,
    model_pattern: opt.ModelPattern = opt.DEFAULTS["model_pattern"],
    registry: opt.Registry = None,
    model: opt.Model = None,
    source_langs: opt.SourceLangs = None,
    weights: opt.Weights = None,
    weighting_param: opt.WeightingParams = None,
    top_k: opt.TopK = opt.DEFAULTS["top_k"],
    sinkhorn_iters: opt.SinkhornIters = opt.DEFAULTS["sinkhorn_iters"],
    num_languages: opt.NumLanguages = opt.DEFAULTS["num_languages"],
    include_target: opt.IncludeTarget = False,
    features: opt.Features = opt.DEFAULTS["features"],
    similarity_matrix: opt.SimilarityMatrix = None,
    target_text: opt.TargetTextFile = None,
    target_text_split: opt.TargetTextSplit = None,
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    split: opt.Split = "test",
    evaluators: opt.Evaluators = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="Write text, gold and predicted label per example (CSV).")] = None,
    nxn: Nxn = None,
    no_baselines: NoBaselines = False,
    batch_size: opt.BatchSize = 64,
    max_length: opt.MaxLength = 128,
    cache_dir: opt.CacheDir = None,
    no_cache: opt.NoCache = False,
    device: opt.Device = "auto",
    progress: opt.Progress = True,
    config: opt.Config = None,
) -> None:
    """Ensemble the sources `mu merge` would select (same options, same weights) on --target-lang's split."""
    import pandas as pd  # imported here: it costs every `mu` call ~0.5 s

    if predictions is not None and predictions.exists():  # missing folders above it are made when it is written
        raise ConfigError(f"--predictions {predictions} already exists; choose a new file")
    if target_lang is None:
        raise ConfigError("mu ensemble needs --target-lang")
    plan = plan_ensemble(
        selection=opt.selection_options(ctx), models=opt.model_sources(ctx), method=voting_method, dataset=dataset,
        data_dir=data_dir, data_file=data_file, split=split,
        evaluators=opt.split_list(evaluators) or None, batch_size=batch_size, max_length=max_length, device=device,
        cache_dir=cache_dir, no_cache=no_cache, progress=progress, baselines=not no_baselines, nxn=nxn,
        registry=get_registry(), given=opt.given_options(ctx),
    )
    print_selection(plan.selection, locations=plan.models)
    predictor = plan.predictor()
    result = run_ensemble(plan, predictor)
    if predictions is not None:
        labels = result.label_space
        rows = pd.DataFrame({"text": result.examples.texts, "gold": result.examples.labels,
                             "predicted": [labels[int(p)] for p in result.predictions]})
        write_text_atomically(predictions, rows.to_csv(index=False), replace=False)
    report = result.as_dict() | {"forward_passes": predictor.forward_passes, "cache_hits": predictor.cache_hits}
    typer.echo(json.dumps(report, indent=2))


def compare_ensembles(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for comparison.csv, .json and .md.")],
    target_langs: Annotated[list[str], typer.Option("--target-langs", help="Targets (space- or comma-separated).")],
    voting_methods: Annotated[Optional[list[str]], typer.Option("--voting-methods", help="Methods to compare (default: all).")] = None,
    weighting: opt.Weighting = opt.DEFAULTS["weighting"],
    models: opt.Models = None,
    model_pattern: opt.ModelPattern = opt.DEFAULTS["model_pattern"],
    registry: opt.Registry = None,
    model: opt.Model = None,
    source_langs: opt.SourceLangs = None,
    weights: opt.Weights = None,
    weighting_param: opt.WeightingParams = None,
    top_k: opt.TopK = opt.DEFAULTS["top_k"],
    sinkhorn_iters: opt.SinkhornIters = opt.DEFAULTS["sinkhorn_iters"],
    num_languages: opt.NumLanguages = opt.DEFAULTS["num_languages"],
    include_target: opt.IncludeTarget = False,
    features: opt.Features = opt.DEFAULTS["features"],
    similarity_matrix: opt.SimilarityMatrix = None,
    target_text: opt.TargetTextFile = None,
    target_text_split: opt.TargetTextSplit = None,
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    split: opt.Split = "test",
    nxn: Nxn = None,
    no_baselines: NoBaselines = False,
    batch_size: opt.BatchSize = 64,
    max_length: opt.MaxLength = 128,
    cache_dir: opt.CacheDir = None,
    no_cache: opt.NoCache = False,
    device: opt.Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing comparison files in --output.")] = False,
    progress: opt.Progress = True,
    config: opt.Config = None,
) -> None:
    """Every (target, voting method) pair: accuracy next to the baselines, with mean, std, rank and wins per method."""
    registry_ = get_registry()
    methods = [registry_.get("voting_method", name) for name in opt.split_list(voting_methods) or registry_.names("voting_method")]
    check_results_folder(output, COMPARISON_FILES, overwrite, [models, registry, data_location(data_dir, data_file)])
    with OutputLock(output):  # a second run to the same --output fails at once, naming this one
        started, rows, predictor = time.perf_counter(), [], None
        for target in opt.split_list(target_langs):
            for method in methods:
                plan = plan_ensemble(
                    selection=opt.selection_options(ctx, target=target), models=opt.model_sources(ctx), method=method,
                    dataset=dataset, data_dir=data_dir, data_file=data_file, split=split, batch_size=batch_size,
                    max_length=max_length, device=device, cache_dir=cache_dir, no_cache=no_cache, progress=progress,
                    baselines=not no_baselines, nxn=nxn, registry=registry_, given=opt.given_options(ctx),
                )
                predictor = predictor or plan.predictor()  # one for every run: each model runs on each split once
                if method is methods[0]:
                    for note in plan.selection.notes:
                        typer.echo(f"Note ({plan.target}): {note}", err=True)
                rows.append(comparison_row(run_ensemble(plan, predictor)))
        wall = time.perf_counter() - started
        markdown = write_comparison_report(output, rows, replace=overwrite, extra={
            "forward_passes": predictor.forward_passes, "cache_hits": predictor.cache_hits, "wall_seconds": round(wall, 2),
        })
    typer.echo(markdown)
    typer.echo(f"{len(rows)} runs, {predictor.forward_passes} forward passes, {predictor.cache_hits} cached, "
               f"{wall:.1f} s -> {output}")


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble)
    app.command("compare-ensembles")(compare_ensembles)
