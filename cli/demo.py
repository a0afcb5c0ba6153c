"""``mu demo``: the main job on an embedded default — build a tiny model zoo, merge for a target."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language
from merginguriel_core.merge import run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_core.plugins import get_registry
from merginguriel_core.selection import SelectionOptions
from merginguriel_core.zoo import build_zoo

_MARKER = ".mu-demo"


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the demo zoo and merged model.")] = Path("demo-output"),
    target_lang: Annotated[str, typer.Option("--target-lang", help="Target language of the demo merge.")] = "sw-KE",
    strategy: Annotated[str, typer.Option("--strategy", help="Merge strategy.")] = "linear",
    num_languages: Annotated[int, typer.Option("--num-languages", help="Source models to merge.")] = 5,
) -> None:
    """Build 52 tiny XLM-R-shaped models (one per MASSIVE locale) and URIEL-merge them for a target."""
    if output.exists() and not (output / _MARKER).exists():
        raise ConfigError(f"--output {output} exists and was not made by `mu demo`; choose another folder")
    target = resolve_language(target_lang).locale
    zoo = output / "zoo"
    if not (zoo / _MARKER).exists():
        shutil.rmtree(zoo, ignore_errors=True)
        typer.echo(f"Building a zoo of {len(MASSIVE_LOCALES)} tiny models in {zoo} ...")
        build_zoo(zoo, MASSIVE_LOCALES)
        (zoo / _MARKER).touch()
    (output / _MARKER).touch()

    merged = output / f"merged-{target}"
    models = {loc: zoo / f"xlm-roberta-base_massive_k_{loc}" for loc in MASSIVE_LOCALES}
    chosen = get_registry().get("strategy", strategy)
    plan = plan_merge(merged, strategy=chosen, selection=SelectionOptions(target=target, num_languages=num_languages),
                      models=models, base_model=zoo / "base" if chosen.needs_base else None, overwrite=True,
                      progress=False, registry=get_registry())
    summary = run_merge(plan)
    selection = plan.selection
    typer.echo(f"URIEL (syntax_knn) sources for {target} ({resolve_language(target).name}):")
    for locale, weight in selection.weights:
        typer.echo(f"  {locale:<8} {resolve_language(locale).name:<22} weight {weight:.4f}")
    typer.echo(f"Merged with {strategy} in {summary.seconds:.2f} s -> {merged}")
    typer.echo(_classify(merged))
    typer.echo("The zoo's models are untrained tiny stand-ins (random weights around one base), so that label "
               "says nothing about accuracy: the demo shows the pipeline, not a result.")
    typer.echo("")
    typer.echo("Next, try (the zoo's models and base work with every command):")
    for command in next_commands(output, target):
        typer.echo(f"  {command}")


def next_commands(output: Path, target: str) -> list[str]:
    """Three commands to paste after the demo, on what it left in ``output``."""
    mu = _mu()
    zoo = output / "zoo"
    return [
        f"{mu} similarity --target-lang {target} --models {zoo}",
        f"{mu} merge --target-lang {target} --weighting softmax --strategy ties --base-model {zoo / 'base'} "
        f"--models {zoo} --output {output / f'merged-{target}-ties'} --overwrite",
        f"{mu} plugins -v",
    ]


def _mu() -> str:
    """How this `mu` was called (``.venv/bin/mu`` when the venv is not active), else ``mu``."""
    called = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return str(called) if called is not None and called.name == "mu" else "mu"


def _classify(folder: Path) -> str:
    """Load the merged model like any Hugging Face model and classify one sentence."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sentence = "the team won the match"
    with torch.no_grad():
        logits = model(**tokenizer([sentence], return_tensors="pt")).logits[0]
    label = model.config.id2label[int(logits.argmax())]
    return f"Loaded it with AutoModelForSequenceClassification: {sentence!r} -> {label} (logits {[round(float(x), 3) for x in logits]})"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
