"""`mu similarity`, `mu demo` and the installed console script, as a user runs them."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

MU = shutil.which("mu", path=str(Path(sys.executable).parent)) or "mu"


def test_similarity_table_for_german(runner):
    result = run_cli(runner, "similarity", "--target-lang", "deu_Latn")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Target de-DE (German); similarity from URIEL syntax_knn")
    first_row = lines[2].split()
    assert first_row[:2] == ["1", "nl-NL"]  # Dutch is German's most similar language
    assert lines[-1].startswith("Selected: ka-GE 0.")  # ... but the seed's Sinkhorn puts Georgian first


def test_similarity_json_with_models_limits_availability(runner, zoo_dir):
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--models", zoo_dir, "--json")
    data = json.loads(result.output)
    selected = [locale for locale, _ in data["selected"]]
    assert len(selected) == 5 and set(selected) <= {"nl-NL", "af-ZA", "da-DK", "sv-SE", "fr-FR", "ja-JP", "fa-IR", "tr-TR", "sw-KE"}
    assert sum(w for _, w in data["selected"]) == pytest.approx(1.0)
    rows = {row["locale"]: row for row in data["neighbours"]}
    assert rows["ko-KR"]["available"] is False and rows["ko-KR"]["weight"] == 0.0
    assert rows["nl-NL"]["similarity"] > rows["ja-JP"]["similarity"]


def test_similarity_export_and_reuse(runner, zoo_dir, tmp_path):
    path = tmp_path / "sim.csv"
    assert run_cli(runner, "similarity", "--export", path).exit_code == 0
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 53 and len(rows[0]) == 53 and rows[0][1] == "af-ZA"
    # Exporting again refuses to overwrite.
    again = run_cli(runner, "similarity", "--export", path)
    assert again.exit_code != 0 and "already exists" in again.output
    # The exported matrix gives the same weights as URIEL itself.
    from_csv = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir, "--similarity-matrix", path,
                       "--output", tmp_path / "a", "--dry-run")
    from_uriel = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir,
                         "--output", tmp_path / "b", "--dry-run")
    assert from_csv.exit_code == 0 and from_csv.output == from_uriel.output


def test_same_options_same_weights_in_similarity_and_merge(runner, zoo_dir, tmp_path):
    sim = json.loads(run_cli(runner, "similarity", "--target-lang", "sv-SE", "--models", zoo_dir, "--top-k", "10",
                             "--num-languages", "3", "--json").output)
    out = tmp_path / "m"
    assert run_cli(runner, "merge", "--target-lang", "sv-SE", "--models", zoo_dir, "--top-k", "10",
                   "--num-languages", "3", "--output", out, "--no-progress").exit_code == 0
    details = json.loads((out / "merge_details.json").read_text())
    assert [[s["locale"], pytest.approx(s["weight"])] for s in details["sources"]] == sim["selected"]


def test_plugins_verbose_shows_descriptions(runner):
    result = run_cli(runner, "plugins", "-v")
    assert "linear: Weighted average of the source parameters" in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    # each parameter under the option that sets it
    assert any(line.startswith("--weighting-param temperature=") for line in lines), result.output
    assert any(line.startswith("--param density=") for line in lines), result.output
    assert not any(line.startswith("--param temperature=") for line in lines)


def test_unknown_feature_set(runner):
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--features", "syntax_nope")
    assert result.exit_code != 0
    assert "unknown URIEL feature set 'syntax_nope'" in result.output


def test_console_script_demo(tmp_path):
    """The README's first command: the installed `mu` script, run from another folder."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([MU, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "URIEL (syntax_knn) sources for sw-KE (Swahili):" in result.stdout
    assert "fa-IR    Persian" in result.stdout
    merged = tmp_path / "demo-output" / "merged-sw-KE"
    details = json.loads((merged / "merge_details.json").read_text())
    assert len(details["sources"]) == 5 and details["target"] == "sw-KE"
    assert "Loaded it with AutoModelForSequenceClassification" in result.stdout
    # Running it again reuses the zoo and replaces only its own merged model.
    again = subprocess.run([MU, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Building a zoo" not in again.stdout


def test_demo_refuses_foreign_folder(runner, tmp_path):
    (tmp_path / "mine").mkdir()
    result = run_cli(runner, "demo", "--output", tmp_path / "mine")
    assert result.exit_code != 0 and "was not made by `mu demo`" in result.output


def test_console_script_error_is_one_line(tmp_path):
    result = subprocess.run([MU, "merge", "--target-lang", "xx-XX", "--models", tmp_path, "--output", tmp_path / "o"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: unknown language code 'xx-XX'")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_export_makes_missing_folders_and_replaces_only_with_overwrite(runner, tmp_path):
    export = tmp_path / "nowhere" / "sim.csv"
    result = run_cli(runner, "similarity", "--export", export)
    assert result.exit_code == 0, result.output
    header = export.read_text().splitlines()[0].split(",")
    assert header[0] == "" and "de-DE" in header
    export.write_text("mine")
    again = run_cli(runner, "similarity", "--export", export)
    assert again.exit_code == 1
    assert again.output.strip() == f"Error: --export {export} already exists; choose another path or pass --overwrite"
    assert export.read_text() == "mine"
    assert run_cli(runner, "similarity", "--export", export, "--overwrite").exit_code == 0
    assert export.read_text().splitlines()[0] == ",".join(header)


def test_explain_chart_shows_the_languages_of_the_table(runner, tmp_path, monkeypatch):
    from merginguriel_cli import similarity as command

    drawn = {}
    monkeypatch.setattr(command, "plot_explanation",
                        lambda explanation, path, title, limit, replace: drawn.update(title=title, limit=limit))
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--explain", "--limit", "7",
                     "--plot", tmp_path / "charts" / "w.png")
    assert result.exit_code == 0, result.output
    table_rows = [line for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(table_rows) == 7 and drawn["limit"] == 7
    assert drawn["title"] == "uriel weights for de-DE (German): each step's share over the 7 languages shown"


def test_similarity_for_a_language_outside_massive(runner):
    result = run_cli(runner, "similarity", "--target-lang", "yor_Latn", "--json")
    data = json.loads(result.output)
    assert data["target"] == "yor" and len(data["selected"]) == 5
