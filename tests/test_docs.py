"""Docs that must stay true to the code."""

import inspect
import re
from pathlib import Path

from merginguriel_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_documented_with_its_signature():
    text = (ROOT / "docs" / "hooks.md").read_text()
    hooks = [name for name, fn in vars(hookspecs).items() if name.startswith("register_") and callable(fn)]
    assert len(hooks) >= 5
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in text, f"docs/hooks.md lacks ### `{name}({params})`"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    first = blocks[0].strip().splitlines()
    assert len(first) == 2 and first[0].endswith("mu demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert first[1] in ci


def test_builtin_entry_points_match_plugins_folder():
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.entry-points.merginguriel]")[1].split("[")[0]
    modules = set(re.findall(r'"merginguriel_plugins\.(\w+)"', section))
    assert modules, "no built-in entry points found"
    for module in modules:
        assert (ROOT / "plugins" / f"{module}.py").is_file()


def test_cli_reference_is_generated_from_the_code():
    from merginguriel_cli.reference import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), "regenerate: python -m merginguriel_cli.reference > docs/cli.md"
