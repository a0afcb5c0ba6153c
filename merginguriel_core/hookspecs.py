"""The hook specifications every MergingUriel plugin implements a subset of.

Each ``register_*`` hook is called once per plugin when the plugin manager loads (see
:mod:`merginguriel_core.plugins`), through pluggy's hook caller: one hook call per plugin,
so ``MERGINGURIEL_TRACE_PLUGINS=1`` shows each. It receives a ``register`` callback and
calls it once for every object it provides. The manager records which plugin registered
what, and refuses a plugin that provides a name another plugin already provides, naming
both.

The objects registered are described in :mod:`merginguriel_core.interfaces`.
A plugin is any module (or object) with functions named like these hooks and decorated with
``merginguriel_core.hookimpl``; it is found through the ``merginguriel`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer

    from merginguriel_core.interfaces import Dataset, Evaluator, Executor, MergeStrategy, VotingMethod, Weighting

PROJECT = "merginguriel"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_weightings(register: Callable[[Weighting], None]) -> None:
    """Register weight calculators (which source models, with which weights).

    Called once at plugin load. Call ``register(weighting)`` for each
    :class:`~merginguriel_core.interfaces.Weighting`; ``weighting.name`` is what
    ``mu merge --weighting NAME`` selects.
    """


@hookspec
def register_strategies(register: Callable[[MergeStrategy], None]) -> None:
    """Register merge strategies (how K source tensors become one).

    Called once at plugin load. Call ``register(strategy)`` for each
    :class:`~merginguriel_core.interfaces.MergeStrategy`; ``strategy.name`` is what
    ``mu merge --strategy NAME`` selects.
    """


@hookspec
def register_voting_methods(register: Callable[[VotingMethod], None]) -> None:
    """Register voting methods (how K models' outputs on one example become one label).

    Called once at plugin load. Call ``register(method)`` for each
    :class:`~merginguriel_core.interfaces.VotingMethod`.
    """


@hookspec
def register_evaluators(register: Callable[[Evaluator], None]) -> None:
    """Register evaluators (metrics computed from predictions and gold labels).

    Called once at plugin load. Call ``register(evaluator)`` for each
    :class:`~merginguriel_core.interfaces.Evaluator`.
    """


@hookspec
def register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register datasets (labelled text per language and split).

    Called once at plugin load. Call ``register(dataset)`` for each
    :class:`~merginguriel_core.interfaces.Dataset`; ``dataset.name`` is what
    ``--dataset NAME`` selects in ``mu train``, ``mu evaluate`` and ``mu nxn``.
    """


@hookspec
def register_executors(register: Callable[[Executor], None]) -> None:
    """Register executors (where the cells of an experiment grid run: local processes, Ray).

    Called once at plugin load. Call ``register(executor)`` for each
    :class:`~merginguriel_core.interfaces.Executor`; ``executor.name`` is what ``mu
    experiment run --executor NAME`` selects.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the ``mu`` CLI.

    Called once when the CLI starts, with the root :class:`typer.Typer` app; add commands
    with ``@app.command()`` or sub-groups with ``app.add_typer(...)``. Built-in commands
    are added first, so a plugin cannot silently replace one.
    """
