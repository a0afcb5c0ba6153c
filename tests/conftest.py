"""Shared fixtures: a tiny model zoo built once per session, and a CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from merginguriel_core.zoo import build_zoo

ZOO_LOCALES = ("sw-KE", "de-DE", "nl-NL", "af-ZA", "da-DK", "sv-SE", "fr-FR", "ja-JP", "fa-IR", "tr-TR")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """A read-only-by-convention zoo of tiny XLM-R classifiers, one per locale, plus ``base/``."""
    folder = tmp_path_factory.mktemp("zoo")
    build_zoo(folder, ZOO_LOCALES)
    return folder


@pytest.fixture
def zoo_copy(zoo_dir, tmp_path) -> Path:
    """A private copy of the zoo that a test may damage."""
    target = tmp_path / "zoo"
    shutil.copytree(zoo_dir, target)
    return target


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run_cli(runner: CliRunner, *args: str):
    """Invoke ``mu`` in-process; returns the click Result."""
    from merginguriel_cli.main import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
