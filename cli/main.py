"""The ``mu`` app: built-in command groups, plugin commands, and one-line errors."""

from __future__ import annotations

import signal

import typer
from typer.core import TyperGroup

from merginguriel_core.errors import MergingUrielError
from merginguriel_core.plugins import add_plugin_commands, get_registry


class _MuGroup(TyperGroup):
    """Shows a :class:`MergingUrielError` as ``Error: <one line>`` with exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MergingUrielError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="mu",
    cls=_MuGroup,
    help="MergingUriel: merge or ensemble models fine-tuned on similar languages, weighted by URIEL similarity.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _add_commands() -> None:
    from merginguriel_cli import demo, evaluate, merge, nxn, plugins, similarity, train

    for module in (merge, similarity, train, evaluate, nxn, plugins, demo):
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
