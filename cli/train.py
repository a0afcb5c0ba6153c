"""``mu train``: fine-tune a pre-trained encoder on one language, or a batch of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.languages import resolve_language
from merginguriel_core.merge import resolve_device
from merginguriel_core.models import DEFAULT_PATTERN, pattern_regex
from merginguriel_core.outputs import check_output_path
from merginguriel_core.plugins import get_registry
from merginguriel_core.training import AdapterTraining, TrainingConfig, is_finished, train_one
from merginguriel_cli import options as opt


def train(
    ctx: typer.Context,
    base_model: Annotated[str, typer.Option("--base-model", help="Pre-trained encoder: folder or hub id (e.g. xlm-roberta-base).")],
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    locale: Annotated[Optional[str], typer.Option("--locale", help="One language to fine-tune on.")] = None,
    locales: Annotated[Optional[list[str]], typer.Option("--locales", help="A batch of languages (comma-separated or repeated); one model folder each.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Model folder (with --locale).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Folder of per-locale model folders (with --locales).")] = None,
    model_pattern: opt.ModelPattern = DEFAULT_PATTERN,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the training split (fractions allowed: 0.5 is half of one).")] = 3.0,
    learning_rate: opt.LearningRate = 5e-5,
    batch_size: opt.BatchSize = 16,
    max_length: opt.MaxLength = 96,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the classifier head's initialisation, dropout and the order of batches.")] = 0,
    freeze_embeddings: opt.FreezeEmbeddings = False,
    group_by_length: opt.GroupByLength = True,
    max_train_examples: opt.MaxTrainExamples = None,
    device: opt.Device = "auto",
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="Train a LoRA adapter and the head instead of the whole model (lora; needs the adapters extra, peft).")] = None,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="With --adapter lora: the adapter's rank r.")] = 8,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="With --adapter lora: the scale is lora_alpha / r.")] = 16.0,
    lora_targets: Annotated[Optional[list[str]], typer.Option("--lora-targets", help="With --adapter lora: the modules adapted (comma-separated; default query,value).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Retrain a locale whose model folder exists.")] = False,
    progress: opt.Progress = True,
    config: opt.Config = None,
) -> None:
    """Fine-tune --base-model on --locale (or each of --locales) and save safetensors, tokenizer,
    labels and training_details.json. A batch skips locales whose model is already finished."""
    data = get_registry().get("dataset", dataset)
    location = opt.data_location(data_dir, data_file)
    config = TrainingConfig(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
                            seed=seed, freeze_embeddings=freeze_embeddings, max_train_examples=max_train_examples,
                            group_by_length=group_by_length)
    config.check()
    lora_given = {"lora_rank", "lora_alpha", "lora_targets"} & opt.given_options(ctx)
    if adapter is None and lora_given:
        raise ConfigError(f"--{sorted(lora_given)[0].replace('_', '-')} goes with --adapter lora")
    trained_adapter = None
    if adapter is not None:
        trained_adapter = AdapterTraining(adapter, lora_rank, lora_alpha,
                                          tuple(opt.split_list(lora_targets)) or ("query", "value"))
        trained_adapter.check()
    torch_device = resolve_device(device)
    batch = opt.split_list(locales)
    if (locale is None) == (not batch):
        raise ConfigError("give either --locale with --output, or --locales with --output-dir")
    if locale is not None:
        if output is None:
            raise ConfigError("--locale needs --output FOLDER")
        jobs = [(resolve_language(locale).locale, output)]
    else:
        if output_dir is None:
            raise ConfigError("--locales needs --output-dir FOLDER")
        pattern_regex(model_pattern)
        check_output_path(output_dir, [Path(base_model), location], "--output-dir")
        codes = [resolve_language(code).locale for code in batch]
        jobs = [(code, output_dir / model_pattern.format(locale=code)) for code in codes]
    opt.check_locales(data, location, [code for code, _ in jobs], "train")
    inputs = [Path(base_model), location]
    for code, folder in jobs:  # every job is checked before the first one trains
        check_output_path(folder, inputs, "--output" if locale is not None else "--output-dir")
        if folder.exists() and not overwrite and not (is_finished(folder) and locale is None):
            raise ConfigError(f"{folder} already exists; pass --overwrite to retrain {code}")
    if locale is None:
        output_dir.mkdir(parents=True, exist_ok=True)
    for code, folder in jobs:
        if folder.exists() and not overwrite:
            typer.echo(f"{code}: already trained in {folder}; skipped")
            continue
        details = train_one(data, location, code, base_model, folder, config, torch_device, progress, overwrite,
                            trained_adapter)
        typer.echo(json.dumps({"locale": code, "output": str(folder), "dev_accuracy": round(details["dev_accuracy"], 4),
                               "steps": details["steps"], "seconds": details["seconds"]}))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
