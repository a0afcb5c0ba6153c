"""``mu train-iterative``: train several source models from one base, merging them every few
epochs (:func:`~merginguriel_core.iterative.plan_iterative`, then
:func:`~merginguriel_core.iterative.run_iterative`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.params import parse_assignments
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt


def train_iterative(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: log, checkpoints, result, the final model (model/) and a results layout for `mu report`.")],
    base_model: Annotated[str, typer.Option("--base-model", help="Pre-trained encoder every model starts from: folder or hub id.")],
    target_lang: opt.TargetLang = None,
    locales: Annotated[Optional[list[str]], typer.Option("--locales", help="Source languages to train (comma-separated or repeated); default: chosen by --weighting among the dataset's languages, as mu merge chooses.")] = None,
    max_epochs: Annotated[int, typer.Option("--max-epochs", help="Epochs every model trains in all (the learning-rate schedule spans them).")] = 15,
    merge_frequency: Annotated[int, typer.Option("--merge-frequency", help="Merge every N epochs (and after the last).")] = 3,
    merge_mix: Annotated[float, typer.Option("--merge-mix", help="Each model continues from MIX × merge + (1 − MIX) × its own weights; 1: from the merge.")] = 1.0,
    adaptive_merge_frequency: Annotated[bool, typer.Option("--adaptive-merge-frequency", help="Merge more often as the training loss falls: interval = ceil(N × sqrt(loss / first loss)).")] = False,
    performance_merge_trigger: Annotated[bool, typer.Option("--performance-merge-trigger", help="Also merge after an epoch in which the models' mean dev accuracy rose by less than --convergence-threshold.")] = False,
    convergence_threshold: Annotated[float, typer.Option("--convergence-threshold", help="Smallest rise of mean dev accuracy (0..1) that counts as progress.")] = 0.01,
    parallel: Annotated[bool, typer.Option("--parallel/--sequential", help="Train the models of an epoch in parallel processes when memory allows (default: one after another).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint (same options required).")] = False,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Keep the last checkpoint when the run is done.")] = False,
    strategy: Annotated[str, typer.Option("--strategy", help="Merge strategy of every periodic merge (see `mu plugins`).")] = "linear",
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Strategy parameter KEY=VALUE (repeatable).")] = None,
    weighting: opt.Weighting = opt.DEFAULTS["weighting"],
    weighting_param: opt.WeightingParams = None,
    top_k: opt.TopK = opt.DEFAULTS["top_k"],
    sinkhorn_iters: opt.SinkhornIters = opt.DEFAULTS["sinkhorn_iters"],
    num_languages: opt.NumLanguages = opt.DEFAULTS["num_languages"],
    features: opt.Features = opt.DEFAULTS["features"],
    similarity_matrix: opt.SimilarityMatrix = None,
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    eval_split: Annotated[str, typer.Option("--eval-split", help="The target's split the final model is scored on; none: not scored.")] = "test",
    learning_rate: opt.LearningRate = 5e-5,
    batch_size: opt.BatchSize = 16,
    max_length: opt.MaxLength = 96,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the heads' initialisation, dropout, the order of batches and random strategies.")] = 0,
    freeze_embeddings: opt.FreezeEmbeddings = False,
    group_by_length: opt.GroupByLength = True,
    max_train_examples: opt.MaxTrainExamples = None,
    device: opt.Device = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the sources, weights and merge schedule; train nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON when done.")] = False,
    progress: opt.Progress = True,
    config: opt.Config = None,
) -> None:
    """Train source models from --base-model together, merging them every --merge-frequency
    epochs; the last merge is the model for --target-lang (written to OUTPUT/model)."""
    from merginguriel_core.iterative import IterativeOptions, plan_iterative, run_iterative, write_results
    from merginguriel_core.training import TrainingConfig

    if target_lang is None:
        raise ConfigError("mu train-iterative needs --target-lang")
    codes = opt.split_list(locales)
    if codes and "num_languages" in opt.given_options(ctx):
        raise ConfigError("give --locales or --num-languages, not both (--num-languages sizes the automatic choice)")
    training = TrainingConfig(learning_rate=learning_rate, batch_size=batch_size, max_length=max_length, seed=seed,
                              freeze_embeddings=freeze_embeddings, group_by_length=group_by_length,
                              max_train_examples=max_train_examples)
    options = IterativeOptions(max_epochs=max_epochs, merge_frequency=merge_frequency, merge_mix=merge_mix,
                               adaptive_merge_frequency=adaptive_merge_frequency,
                               performance_merge_trigger=performance_merge_trigger,
                               convergence_threshold=convergence_threshold, parallel=parallel)
    plan = plan_iterative(
        output, target=target_lang, locales=codes or None, selection=opt.selection_options(ctx), strategy=strategy,
        params=parse_assignments(param or (), "--param"), base_model=base_model, dataset=dataset, data_dir=data_dir,
        data_file=data_file, training=training, options=options, device=device,
        eval_split=None if eval_split == "none" else eval_split, keep_checkpoints=keep_checkpoints,
        progress=progress, registry=get_registry(),
    )
    sources = ", ".join(f"{locale} {weight:.3f}" for locale, weight in plan.sources)
    typer.echo(f"Iterative training for {plan.target}: {len(plan.sources)} models ({sources}) from {plan.base_model}, "
               f"{options.max_epochs} epochs, {plan.strategy.name} merge every {options.merge_frequency}")
    if dry_run:
        typer.echo(f"Merges after epochs {_schedule(options)}; the final merge -> {output / 'model'}")
        typer.echo("Dry run: nothing trained.")
        return
    result = run_iterative(plan, resume=resume, on_event=None if json_out else _echo)
    write_results(plan, result)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    scored = (", ".join(f"{name} {value:.4f}" for name, value in result.metrics.items())
              + f" on {result.eval_split} ({result.examples} examples)") if result.metrics else "not scored"
    typer.echo(f"Final merge for {plan.target}: {scored}; {len(result.merges)} merges, {result.steps_per_model} steps "
               f"per model, {result.seconds:.0f} s -> {result.model_folder or output}")


def _schedule(options) -> str:
    """The merge epochs as planned (adaptive and stall-triggered merges are decided while training)."""
    fixed = list(range(options.merge_frequency, options.max_epochs, options.merge_frequency)) + [options.max_epochs]
    text = ", ".join(str(epoch) for epoch in fixed)
    if options.adaptive_merge_frequency:
        text = (f"{fixed[0]}, then every ceil({options.merge_frequency} × sqrt(loss / first loss)) epochs, "
                f"and {options.max_epochs}")
    if options.performance_merge_trigger:
        text += f", and after any epoch whose mean dev accuracy rises by less than {options.convergence_threshold}"
    return text


def _echo(entry: dict) -> None:
    kind = entry["event"]
    if kind == "epoch":
        devs = " ".join(f"{locale} {m['dev_accuracy']:.3f}" for locale, m in entry["models"].items())
        loss = entry["mean_train_loss"]
        typer.echo(f"epoch {entry['epoch']}: train loss {loss:.4f}, dev accuracy {devs} ({entry['seconds']:.0f} s, "
                   f"peak {entry['peak_memory_bytes'] / 2**20:.0f} MiB)"
                   if loss is not None else f"epoch {entry['epoch']}: no training step")
    elif kind == "merge":
        dev = entry["target_dev_accuracy"]
        after = f"; next merge after epoch {entry['next_merge']}" if entry["next_merge"] else ""
        typer.echo(f"merge after epoch {entry['epoch']} ({entry['reason']}): target dev accuracy "
                   f"{'n/a' if dev is None else f'{dev:.3f}'} ({entry['seconds']:.1f} s){after}")
    elif kind == "cycle":
        typer.echo(f"cycle of epochs {entry['epochs'][0]}-{entry['epochs'][1]}: {entry['seconds']:.0f} s, peak memory "
                   f"{entry['peak_memory_bytes'] / 2**20:.0f} MiB")
    elif kind == "resumed":
        typer.echo(f"resumed from the checkpoint after epoch {entry['epoch']}")


def register(app: typer.Typer) -> None:
    app.command("train-iterative")(train_iterative)
