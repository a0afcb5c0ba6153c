"""The ``mu`` app: built-in command groups, plugin commands, and one-line errors."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer
from typer.core import TyperGroup

from merginguriel_core import __version__
from merginguriel_core.errors import MergingUrielError
from merginguriel_core.plugins import add_plugin_commands, get_registry


#: Options that take several values: ``--target-langs en-US sq-AL sw-KE`` works like
#: ``--target-langs en-US,sq-AL,sw-KE`` (and like repeating the option).
LIST_OPTIONS = {"--target-langs", "--voting-methods", "--locales", "--source-langs", "--evaluators"}


def join_list_options(args: list[str]) -> list[str]:
    """Rewrite ``--opt a b c`` into ``--opt a,b,c`` for the options in :data:`LIST_OPTIONS`."""
    rewritten, index = [], 0
    while index < len(args):
        arg = args[index]
        rewritten.append(arg)
        index += 1
        if arg in LIST_OPTIONS:
            values = []
            while index < len(args) and not args[index].startswith("-"):
                values.append(args[index])
                index += 1
            if values:
                rewritten.append(",".join(values))
    return rewritten


class _MuGroup(TyperGroup):
    """Shows a :class:`MergingUrielError` as ``Error: <one line>`` with exit code 1."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, join_list_options(list(args)))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MergingUrielError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=1) from None


class _NoteHandler(logging.Handler):
    """Prints the core's notes (logger ``merginguriel``) as ``Note: ...`` on standard error,
    looking the stream up at each note so test runners that swap it see them too."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"Note: {record.getMessage()}", err=True)


def _show_notes() -> None:
    logger = logging.getLogger("merginguriel")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler())
    logger.setLevel(logging.INFO)


_show_notes()

app = typer.Typer(
    name="mu",
    cls=_MuGroup,
    help="MergingUriel: merge or ensemble models fine-tuned on similar languages, weighted by URIEL similarity.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"merginguriel {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.", is_eager=True,
                                          callback=_show_version)] = False,
) -> None:
    pass


def _add_commands() -> None:
    from merginguriel_cli import demo, ensemble, evaluate, experiment, merge, nxn, plugins, report, similarity, train, train_iterative

    for module in (merge, ensemble, similarity, train, train_iterative, evaluate, nxn, experiment, report, plugins, demo):
        module.register(app)
    add_plugin_commands(get_registry(), app)


_add_commands()


def main() -> None:
    """Console-script entry point of ``mu``.

    SIGTERM is turned into an exception, so an interrupted merge removes its temporary
    folder like on Ctrl-C.
    """
    signal.signal(signal.SIGTERM, _terminate)
    app()


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)
