"""Running a page's shell commands as a user would: in a scratch copy of the repository
layout (``repo/`` with ``docs/examples``, ``shared/`` beside it pointing at the real
``../shared`` when present), in a shell where ``mu`` is this checkout's and ``pip`` installs
into a private folder that ``mu`` sees (so the example plugin never lands in the test
environment). Used by the README and docs-page tests."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def steps(page: Path, skip_blocks: int = 0) -> list[tuple[str, str]]:
    """``(kind, text)`` for every step of ``page`` after its first ``skip_blocks`` blocks:
    ``bash`` command lines (with their continuations joined) and ``python`` blocks, in order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for kind, body in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)[skip_blocks:]:
        if kind == "python":
            found.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip():
                found.append(("bash", " ".join(line.split())))
    return found


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def make_workspace(root: Path) -> tuple[Path, dict[str, str]]:
    """``(repo folder, environment)`` of a fresh scratch layout under ``root``."""
    repo = root / "repo"
    shutil.copytree(ROOT / "docs" / "examples", repo / "docs" / "examples",
                    ignore=shutil.ignore_patterns("build", "*.egg-info"))
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    site, tools = root / "site", root / "bin"
    tools.mkdir()
    python = sys.executable
    _tool(tools, "mu", f'exec "{python}" -m merginguriel_cli "$@"')
    _tool(tools, "pip", f'if [ "$1" = install ]; then shift; exec "{python}" -m pip install --quiet --no-deps '
                        f'--no-build-isolation --no-index --target "{site}" "$@"; fi; exec "{python}" -m pip "$@"')
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               XDG_CACHE_HOME=str(root / "cache"), HF_HUB_OFFLINE="1")
    return repo, env


def run(repo: Path, env: dict, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
