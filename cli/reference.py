"""Renders docs/cli.md from the commands themselves: `python -m merginguriel_cli.reference > docs/cli.md`.

A test compares the file with this output, so the CLI reference cannot drift from the code.
"""

from __future__ import annotations

from typer.main import get_command

BUILT_IN = ("merge", "ensemble", "compare-ensembles", "similarity", "train", "evaluate", "evaluate-encoder", "nxn",
            "experiment validate", "experiment run", "report", "plugins", "demo")
HEADER = """# `mu` command reference

Generated from the commands by `python -m merginguriel_cli.reference > docs/cli.md`
(a test fails when this file and the code disagree). Options are kebab-case; the shared
selection options (`--target-lang`, `--top-k`, `--sinkhorn-iters`, `--num-languages`,
`--include-target`, `--features`, `--similarity-matrix`, `--models`, `--model-pattern`,
`--registry`, `--model`) mean the same in every command. Errors print one line,
`Error: ...`, and exit with code 1; usage errors caught by the option parser (an unknown
option, a missing value, a value of the wrong type) print the command's usage and exit
with code 2. `mu --version` prints the version.
"""


def render() -> str:
    from merginguriel_cli.main import app

    group = get_command(app)
    parts = [HEADER]
    for name in BUILT_IN:
        command = group
        for part in name.split():  # "experiment run": a command of a group
            command = command.commands[part]
        parts.append(f"## `mu {name}`\n")
        parts.append((command.help or "").strip() + "\n")
        parts.append("| option | default | meaning |\n|---|---|---|")
        for param in command.params:
            if param.name == "help":
                continue
            if param.param_type_name == "argument":
                flags = f"`{param.name.upper()}` (argument)"
            else:
                flags = " / ".join(f"`{flag}`" for flag in [*param.opts, *param.secondary_opts])
            default = "required" if param.required else ("" if param.default in (None, False) else f"`{param.default}`")
            parts.append(f"| {flags} | {default} | {param.help} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
