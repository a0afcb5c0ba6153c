"""``mu report RESULTS``: an experiment's tables, paired statistics and plots (see docs/reports.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    results: Annotated[Path, typer.Argument(help="An experiment's results folder (mu experiment run --output), finished or still running.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the report (default RESULTS/report).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="The metric the tables and tests use (an evaluator's: accuracy, macro_f1, ...).")] = "accuracy",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Resamples of the targets for each paired bootstrap 95% interval (at least 100).")] = 10000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap's random generator.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the report files already in --output.")] = False,
) -> None:
    """Tabulate every merge and vote cell beside its target's baselines, test each method against
    each baseline across targets (paired bootstrap, Wilcoxon), and plot the results; missing and
    failed cells are listed."""
    from merginguriel_core.experiments.report import write_report

    written = write_report(results, output, metric=metric, bootstrap=bootstrap, seed=seed, overwrite=overwrite)
    typer.echo(written.line())
    for note in written.notes:
        typer.echo(f"Note: {note}", err=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
