"""docs/writing-plugins.md can be followed literally: its Python snippets run in order in one
namespace, and its shell commands run on what `mu demo` leaves behind."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from doc_commands import ROOT, make_workspace, run, steps
from safetensors.torch import load_file

DOC = ROOT / "docs" / "writing-plugins.md"
EXAMPLE = ROOT / "docs" / "examples" / "merginguriel-median"


def _printed_comments(block: str) -> list[str]:
    """The ``# ...`` lines that follow a ``print(...)`` statement: what the page says it prints."""
    return [line[2:] for line in block.splitlines() if line.startswith("# ") and not line.startswith("#   ")]


def test_every_python_snippet_runs_and_prints_what_the_page_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLE))  # section 6 imports the example plugin's module
    blocks = [text for kind, text in steps(DOC) if kind == "python"]
    assert len(blocks) >= 5
    namespace: dict = {}
    for number, block in enumerate(blocks, start=1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"{DOC.name} python block {number}", "exec"), namespace)
        said = _printed_comments(block)
        got = printed.getvalue().splitlines()
        assert [line for line in got if line in said] == said, f"block {number} printed {got}, the page says {said}"
    # the trimmed mean over four models with trim=1: the mean of the middle two, per element
    import torch

    merged = load_file(tmp_path / "merged-trimmed" / "model.safetensors")
    sources = [load_file(path) for path in sorted((tmp_path / "plugin-models").glob("*_??-??/model.safetensors"))]
    assert len(sources) == 4
    name = next(n for n in merged if n.endswith("dense.weight"))
    ordered = torch.stack([s[name] for s in sources]).sort(dim=0).values
    torch.testing.assert_close(merged[name], ordered[1:3].mean(dim=0))
    assert not (tmp_path / "merged-trimmed-2").exists()
    assert namespace["registry"].names("strategy") == ["linear", "median"]  # section 6: built-ins + the example


def test_every_snippet_imports_what_it_uses():
    """Each block stands alone for the names it takes from libraries (torch, the plugin API)."""
    for number, block in enumerate((text for kind, text in steps(DOC) if kind == "python"), start=1):
        for name in ("torch", "hookimpl", "MergeStrategy", "Param", "ConfigError", "mu"):
            if re.search(rf"\b{name}\.", block) or re.search(rf"\({name}\)|\b{name}\(", block):
                assert re.search(rf"^(import|from) .*\b{name}\b", block, flags=re.M), f"block {number} uses {name}"


def test_the_shell_commands_run_on_the_demo_output(tmp_path):
    repo, env = make_workspace(tmp_path)
    assert run(repo, env, ["mu", "demo"]).returncode == 0
    commands = [text for kind, text in steps(DOC) if kind == "bash"]
    assert commands, "the page shows no shell commands"
    outputs = {}
    for command in commands:
        result = run(repo, env, ["bash", "-c", command])
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        outputs[command] = result.stdout
    listing = outputs["mu plugins"]
    assert re.search(r"^median\s+merginguriel-median 0\.1\.0\s+strategy: median, voting_method: median_logits$",
                     listing, flags=re.M), listing
    assert (repo / "merged-median" / "model.safetensors").is_file()


@pytest.mark.parametrize("option", ["--param", "--weighting-param"])
def test_the_page_names_both_parameter_options(option):
    assert option in DOC.read_text(encoding="utf-8")
