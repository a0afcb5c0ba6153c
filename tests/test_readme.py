"""Every command of the README runs as written, in order, on what `mu demo` leaves behind.

The commands run in a scratch copy of the repository layout (``repo/`` with ``docs/examples``,
``shared/`` beside it pointing at the real ``../shared`` when present), in a shell where
``mu`` is this checkout's and ``pip`` installs into a private folder that ``mu`` sees (so
the example plugin never lands in the test environment). Commands that need the Hugging
Face hub are skipped by name; those that read ``../shared/data/sib200`` are skipped, with the
reason, when it is absent.
"""

from __future__ import annotations

import re
import sys

import pytest
from doc_commands import ROOT, SHARED, make_workspace, run, steps

#: README commands that fetch from the hub, which this machine cannot reach.
NEEDS_HUB = ("--base-model xlm-roberta-base",)
#: README commands that read ../shared/data/sib200: directly, through the example spec, or
#: what an earlier SIB-200 step made (the grid, iterative training, the adapters).
NEEDS_DATA = ("../shared/data/sib200", "docs/examples/experiment.yaml", "results/grid", "results/iterative",
              "--models adapters")


def readme_steps() -> list[tuple[str, str]]:
    """Every step after the set-up block, in README order."""
    return steps(ROOT / "README.md", skip_blocks=1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("readme"))


def test_the_first_command_then_every_readme_command(workspace):
    repo, env = workspace
    # The first set-up command's own step (the install is this test environment).
    demo = run(repo, env, ["mu", "demo"])
    assert demo.returncode == 0, demo.stderr
    assert "untrained tiny stand-ins" in demo.stdout and "Next, try" in demo.stdout
    ran, skipped = [], []
    for kind, step in readme_steps():
        if step == "source .venv/bin/activate":
            continue  # the shell here already has this checkout's mu and pip
        if any(marker in step for marker in NEEDS_HUB):
            skipped.append(f"{step} (needs the Hugging Face hub)")
            continue
        if any(marker in step for marker in NEEDS_DATA) and not SHARED.joinpath("data", "sib200").is_dir():
            skipped.append(f"{step} (../shared/data/sib200 is absent)")
            continue
        command = [sys.executable, "-c", step] if kind == "python" else ["bash", "-c", step]
        result = run(repo, env, command)
        assert result.returncode == 0, f"README step failed: {step}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        ran.append(step)
    assert skipped == [s for s in skipped if "hub" in s or "absent" in s]
    assert len(ran) + len(skipped) == len(readme_steps()) - 1  # every step but `source`: run or skipped by name
    assert len(ran) >= (14 if SHARED.joinpath("data", "sib200").is_dir() else 9)
    # What the commands were for.
    assert (repo / "merged-sw-KE" / "model.safetensors").is_file()
    assert (repo / "merged-sw-KE-again" / "model.safetensors").read_bytes() == \
        (repo / "merged-sw-KE" / "model.safetensors").read_bytes()
    assert (repo / "similarity.csv").is_file() and (repo / "de-softmax.png").is_file()
    assert (repo / "merged-median" / "model.safetensors").is_file()
    if SHARED.joinpath("data", "sib200").is_dir():
        assert {p.name for p in (repo / "models").iterdir()} >= {
            f"xlm-roberta-base_massive_k_{locale}" for locale in ("en-US", "de-DE", "sw-KE")}
        assert (repo / "results" / "nxn" / "evaluation_matrix.csv").is_file()
        assert (repo / "results" / "ensembles" / "comparison.md").is_file()
        cells = list((repo / "results" / "grid" / "cells").glob("*/*/results.json"))
        assert len(cells) == 3 * (3 + 4 + 5 + 8 + 1)  # targets × (N×N + baselines + merges + votes + iterative)
        assert (repo / "results" / "iterative-sq-AL" / "model" / "model.safetensors").is_file()
        assert (repo / "results" / "iterative-sq-AL" / "report" / "report.md").is_file()
        assert (repo / "results" / "grid" / "report" / "report.md").is_file()
        assert (repo / "adapters" / "xlm-roberta-base_massive_k_de-DE" / "adapter_config.json").is_file()
        assert (repo / "merged-af-ZA-adapter" / "adapter_model.safetensors").is_file()


def test_the_readme_names_no_command_the_test_cannot_see():
    """Every README command block is one the test runs: bash or python, nothing else."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    fences = re.findall(r"```(\w*)\n", text)
    assert set(fences) <= {"bash", "python", ""}, set(fences)
    assert readme_steps()[0] == ("bash", "source .venv/bin/activate")
