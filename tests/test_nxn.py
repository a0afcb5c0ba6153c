"""`mu nxn`'s progress: one bar over all cells, naming the current one; none with --no-progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import run_cli

#: One drawing of a tqdm bar: ``N×N:  50%|█████     | 8/16 [00:01<00:01, 6.2cell/s, de-DE → nl-NL]``.
BAR = re.compile(r"^(?P<desc>[^:|]*): *\d+%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) \[(?P<stats>[^\]]*)\]$")


def _drawings(stderr: str) -> list[re.Match]:
    """Every progress-bar drawing in ``stderr`` (tqdm redraws with carriage returns)."""
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stderr)  # cursor moves of nested bars
    parts = [part.strip() for part in re.split(r"[\r\n]", plain) if part.strip()]
    bars = [part for part in parts if "%|" in part]
    matches = [BAR.match(part) for part in bars]
    assert all(matches), [part for part, match in zip(bars, matches) if not match]
    return matches


def test_nxn_shows_one_bar_over_all_cells(trained, sib_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERGINGURIEL_")} | {"PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "merginguriel_cli", "nxn", "--models", str(trained), "--data-dir", str(sib_dir),
         "--output", str(tmp_path / "nxn"), "--cache-dir", str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )
    assert done.returncode == 0, done.stderr
    drawings = _drawings(done.stderr)
    models = targets = 4  # af-ZA, de-DE, nl-NL, sw-KE; every source's language is a target
    assert {m["desc"] for m in drawings} == {"N×N"}  # one bar: no forward-pass bar per cell under it
    assert {int(m["total"]) for m in drawings} == {models * targets}
    assert (drawings[-1]["done"], drawings[-1]["total"]) == ("16", "16")
    assert drawings[-1]["stats"].endswith("sw-KE → sw-KE")  # the postfix names the cell: source → target
    shown = {m["stats"].rsplit(", ", 1)[-1] for m in drawings if "→" in m["stats"]}
    assert {"af-ZA → af-ZA", "af-ZA → de-DE"} <= shown
    assert [int(m["done"]) for m in drawings] == sorted(int(m["done"]) for m in drawings)


def test_nxn_no_progress_draws_no_bar(runner, trained, sib_dir, tmp_path):
    result = run_cli(runner, "nxn", "--models", trained, "--data-dir", sib_dir, "--output", tmp_path / "nxn",
                     "--cache-dir", tmp_path / "cache", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "%|" not in result.stderr and "N×N" not in result.stderr
    assert result.stdout.splitlines()[-1].startswith("16 cells (16 computed, 0 from the cache)")
