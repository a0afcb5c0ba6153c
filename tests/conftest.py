"""Shared fixtures: a tiny model zoo built once per session, and a CLI runner."""

from __future__ import annotations

import contextlib
import functools
import shutil
from pathlib import Path

import numpy as np

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


# ------------------------------------------------------------------------ plugins
@functools.lru_cache(maxsize=None)
def installed_registry():
    """The installed plugins, loaded explicitly once (no ``MERGINGURIEL_PLUGINS`` narrows them):
    for helpers; a test can take the ``registry`` fixture instead, the same object."""
    from merginguriel_core.plugins import Registry

    return Registry.load()


@pytest.fixture(scope="session")
def registry():
    """:func:`installed_registry`."""
    return installed_registry()


@pytest.fixture(scope="session", autouse=True)
def _cli_registry(registry):
    """In-process ``mu`` runs (``run_cli``) use :func:`registry`, not one loaded from the environment."""
    from merginguriel_core import plugins

    with plugins.use_registry(registry):
        yield registry


@pytest.fixture
def use_registry():
    """``use_registry(Registry.load(...))`` installs that registry for the CLI for one test;
    the session's is restored afterwards."""
    from merginguriel_core import plugins

    with contextlib.ExitStack() as stack:
        yield lambda registry: stack.enter_context(plugins.use_registry(registry))


def run_cli(runner: CliRunner, *args: str):
    """Invoke ``mu`` in-process; returns the click Result."""
    from merginguriel_cli.main import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------- tiny labelled data and fine-tuned models
WORDS = {
    "sports": "team match player game", "health": "doctor virus health", "politics": "vote law court election",
    "travel": "hotel flight travel", "geography": "river mountain map border", "entertainment": "film music star",
    "science/technology": "computer science data energy",
}


def _sib_folder(root: Path, codes=("afr_Latn", "deu_Latn", "nld_Latn", "swh_Latn"), per_label=(6, 2, 3)) -> Path:
    """A tiny SIB-200-style folder whose words the zoo's tokenizer knows."""
    rng = np.random.default_rng(0)
    for code in codes:
        (root / code).mkdir(parents=True)
        for split, count in zip(("train", "dev", "test"), per_label):
            rows = ["index_id\tcategory\ttext"]
            for label, words in WORDS.items():
                for i in range(count):
                    rows.append(f"{i}\t{label}\tthe {' '.join(rng.permutation(words.split()))}")
            (root / code / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "labels.txt").write_text("\n".join(["science/technology", "travel", "politics", "sports", "health",
                                                "entertainment", "geography"]) + "\n")
    return root


@pytest.fixture(scope="session")
def sib_dir(tmp_path_factory) -> Path:
    return _sib_folder(tmp_path_factory.mktemp("sib"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, zoo_dir, sib_dir) -> Path:
    """Four tiny models fine-tuned with `mu train --locales` (a batch)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("trained")
    result = run_cli(CliRunner(), "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir,
                     "--locales", "af-ZA,de-DE,nl-NL", "--locales", "swh_Latn", "--output-dir", out, "--epochs", "6",
                     "--learning-rate", "2e-2", "--batch-size", "8", "--max-length", "16", "--no-progress",
                     # in this tiny data a text's length gives its label away, so length-grouped
                     # batches would each hold one label; real data has no such link
                     "--no-group-by-length")
    assert result.exit_code == 0, result.output
    return out


