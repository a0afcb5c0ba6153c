"""``mu experiment run|validate SPEC.yaml``: a grid of merges, ensembles and baselines over many targets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.params import parse_assignments
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt

app = typer.Typer(help="Experiment grids: every target × every merge, ensemble and baseline, resumable.",
                  no_args_is_help=True)

Spec = Annotated[Path, typer.Argument(help="The experiment spec (YAML); see docs/experiments.md.")]


@app.command("validate")
def validate(spec: Spec) -> None:
    """Check SPEC in full (every problem at once, each with its place) and say what the grid holds."""
    from merginguriel_core.experiments.grid import expand
    from merginguriel_core.experiments.runner import build_context, resolve_targets
    from merginguriel_core.experiments.spec import load_spec

    checked = load_spec(spec, get_registry())
    context = build_context(checked, Path("."), registry=get_registry(), fetch=False)  # nothing is downloaded
    targets = resolve_targets(checked, context)
    cells = expand(checked, targets, context.models)
    kinds = Counter(cell.kind for cell in cells)
    typer.echo(f"{spec}: valid (digest {checked.digest()}); {len(context.models)} models, {len(targets)} targets, "
               f"{len(cells)} cells: " + ", ".join(f"{kinds[k]} {k}" for k in ("nxn", "baseline", "merge", "vote", "iterative")
                                                     if k != "iterative" or kinds[k]))


@app.command("run")
def run(
    spec: Spec,
    output: Annotated[Path, typer.Option("--output", "-o", help="The results folder (made if missing; a rerun resumes it).")],
    executor: Annotated[str, typer.Option("--executor", help="Where cells run: local (default) or ray (see `mu plugins`).")] = "local",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Tasks at once (local: worker processes, default 1; ray: tasks in flight, default as many as the cluster takes).", min=1)] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="With --executor ray: the cluster (auto joins a running one).")] = None,
    executor_param: Annotated[Optional[list[str]], typer.Option("--executor-param", help="Executor parameter KEY=VALUE (repeatable).")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Compute again the cells that failed before.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run in a folder made by another spec (cells whose definition is unchanged are kept).")] = False,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Also write each merged model to OUTPUT/models/ (default: evaluated in memory only).")] = False,
    progress: opt.Progress = True,
) -> None:
    """Run every cell of SPEC that has no result in --output yet; finished cells are skipped, a failed
    cell records its error and the grid goes on."""
    from merginguriel_core.experiments.runner import run_experiment

    params = parse_assignments(executor_param or (), "--executor-param")
    if address is not None:
        if executor != "ray":
            raise ConfigError(f"--address goes with --executor ray, not --executor {executor}")
        params["address"] = address
    summary = run_experiment(spec, output, executor=executor, workers=workers, executor_params=params,
                             retry_failed=retry_failed, force=force, keep_models=keep_models, progress=progress,
                             registry=get_registry())
    typer.echo(summary.line())
    for failure in summary.failures[:10]:
        typer.echo(f"failed: {failure}", err=True)
    if len(summary.failures) > 10:
        typer.echo(f"... and {len(summary.failures) - 10} more failures (see `mu report {output}`)", err=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experiment")
