"""Experiment grids: the spec is checked in full, the runner computes every cell once, resumes,
records failures per cell, refuses a second runner and another spec's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from merginguriel_core.errors import ConfigError
from merginguriel_core.experiments.results import iter_cells, read_cell
from merginguriel_core.experiments.runner import run_experiment
from merginguriel_core.experiments.spec import load_spec

PATTERN = "xlm-roberta-base_massive_k_{locale}"


def write_spec(folder: Path, trained: Path, zoo_dir: Path, sib_dir: Path, **changes) -> Path:
    spec = {
        "name": "tiny",
        "models": {"folder": str(trained), "pattern": PATTERN, "base": str(zoo_dir / "base")},
        "data": {"dataset": "sib200", "data_dir": str(sib_dir), "split": "test", "max_length": 16, "batch_size": 8},
        "targets": "all_with_model",
        "selection": {"num_languages": 2},
        "selections": ["softmax", "average", {"name": "all", "sources": "all"}, {"weighting": "random", "draws": 2}],
        "strategies": ["linear", {"strategy": "ties", "params": {"density": 0.5}, "selections": ["softmax"]}],
        "voting": ["majority", {"voting": "soft", "selections": ["softmax", "all"]}],
    }
    spec.update(changes)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def spec_file(tmp_path, trained, zoo_dir, sib_dir):
    return write_spec(tmp_path, trained, zoo_dir, sib_dir)


#: uriel gives Swahili no source with a nonzero weight among these three, so ``average`` (uriel's
#: sources, equal weights) has no answer there and its cells fail, saying so.
AVERAGE_ON_SWAHILI = "no available source language has a nonzero URIEL weight for sw-KE"


def _records(results: Path) -> dict[str, dict]:
    return {record["cell"]: record for _, record, _ in iter_cells(results) if record is not None}


# ------------------------------------------------------------------------------ the spec
def test_validate_counts_the_cells(runner, spec_file):
    result = run_cli(runner, "experiment", "validate", spec_file)
    assert result.exit_code == 0, result.output
    # 4 targets × (4 N×N + 4 baselines + linear over softmax, average, all, random×2 + ties + majority ×5 + soft ×2)
    assert "4 models, 4 targets, 84 cells: 16 nxn, 16 baseline, 24 merge, 28 vote" in result.output


def test_every_spec_problem_at_once_with_its_place(tmp_path, trained, zoo_dir, sib_dir, registry):
    path = write_spec(tmp_path, trained, zoo_dir, sib_dir,
                      strategies=["linear", {"strategy": "tie"}, {"strategy": "ties", "params": {"density": 1.5}},
                                  {"strategy": "ties", "params": {"k": 3}, "selections": ["nope"]}],
                      targets=["sw-KE", "xx-XX"], selections=["softmax", {"weighting": "softmax", "draws": 2}],
                      voting=[{"voting": "majority", "weights": 1}], baselines=["own", "best"], colour="red")
    with pytest.raises(ConfigError) as error:
        load_spec(path, registry)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{path}: 11 problems:"
    problems = [line.strip().removeprefix("- ") for line in lines[1:]]
    expected = [
        "colour: unknown key; allowed: ",
        "targets[1]: unknown language code 'xx-XX'",
        "selections[1].draws: only weighting 'random' draws; 'softmax' gives one source set",
        "selections: two selections are named 'softmax'; give one of them its own name:",
        "strategies[1].strategy: unknown --strategy 'tie'; available: ",
        "strategies[2].params.density: 1.5 is outside (0, 1]",
        "strategies[3].params.k: unknown parameter of strategy 'ties'; allowed: density, scaling",
        "strategies[3].selections: no selection named 'nope'; the selections are softmax, softmax",
        "strategies: two entries are labelled 'ties'; give each its own label:",
        "voting[0].weights: unknown key; allowed: voting, label, params, selections",
        "baselines[1]: unknown baseline 'best'; allowed: own, english, closest, oracle",
    ]
    assert len(problems) == len(expected)
    for got, want in zip(sorted(problems), sorted(expected)):
        assert got.startswith(want), (got, want)


def test_a_spec_that_is_not_yaml_names_the_line(tmp_path, registry):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: not valid YAML"):
        load_spec(path, registry)


def test_the_digest_ignores_where_the_folder_lies(tmp_path, trained, zoo_dir, sib_dir, registry):
    first = load_spec(write_spec(tmp_path, trained, zoo_dir, sib_dir), registry)
    assert first.digest() == load_spec(write_spec(tmp_path, trained, zoo_dir, sib_dir), registry).digest()
    changed = load_spec(write_spec(tmp_path, trained, zoo_dir, sib_dir, seed=3), registry)
    assert changed.digest() != first.digest()


# ---------------------------------------------------------------------------- the runner
@pytest.fixture(scope="module")
def finished(tmp_path_factory, trained, zoo_dir, sib_dir):
    """One grid, run to the end in this process."""
    folder = tmp_path_factory.mktemp("grid")
    spec = write_spec(folder, trained, zoo_dir, sib_dir)
    summary = run_experiment(spec, folder / "results", progress=False)
    return spec, folder / "results", summary


def test_every_cell_has_a_result_with_its_provenance(finished, trained):
    spec, results, summary = finished
    assert summary.cells == 84 and summary.computed == 84
    records = _records(results)
    assert len(records) == 84
    failed = {key: r["error"] for key, r in records.items() if r["status"] == "failed"}
    assert sorted(failed) == ["sw-KE/merge-linear@average", "sw-KE/vote-majority@average"], failed
    assert all(AVERAGE_ON_SWAHILI in error for error in failed.values())
    merge = records["sw-KE/merge-linear@softmax"]
    assert merge["status"] == "done" and merge["kind"] == "merge" and merge["method"] == "linear"
    assert merge["definition"]["plugin"] == "linear" and len(merge["sources"]) == 2
    assert sum(weight for _, weight in merge["sources"]) == pytest.approx(1.0)
    assert "sw-KE" not in [locale for locale, _ in merge["sources"]]  # leave_target_out
    assert 0 <= merge["metrics"]["accuracy"] <= 1 and merge["examples"] == 21
    assert set(merge["timings"]) >= {"select", "merge", "forward", "total"}
    assert merge["packages"]["torch"] and merge["spec"] == load_spec(spec).digest()
    assert not (results / "models").exists()  # evaluated in memory only
    every = records["sw-KE/merge-linear@all"]
    assert sorted(locale for locale, _ in every["sources"]) == ["af-ZA", "de-DE", "nl-NL"]
    draws = [records[f"sw-KE/merge-linear@random#{d}"]["sources"] for d in (0, 1)]
    assert all(len(d) == 2 for d in draws)


def test_votes_and_baselines_cost_no_forward_pass(finished):
    _, results, _ = finished
    records = _records(results)
    vote = records["de-DE/vote-majority@softmax"]
    assert vote["status"] == "done" and vote["forward_passes"] == 0
    nxn = {k: r for k, r in records.items() if r["kind"] == "nxn" and r["target"] == "de-DE"}
    assert len(nxn) == 4
    own = records["de-DE/baseline-own"]
    assert own["model"] == "de-DE" and own["metrics"] == nxn["de-DE/nxn-de-DE"]["metrics"]
    oracle = records["de-DE/baseline-oracle"]
    best = max((r["metrics"]["accuracy"], r["method"]) for k, r in nxn.items() if r["method"] != "de-DE")
    assert (oracle["metrics"]["accuracy"], oracle["model"]) == best
    assert records["de-DE/baseline-english"]["status"] == "skipped"  # no English model in the zoo
    assert records["de-DE/baseline-closest"]["model"] in {"af-ZA", "nl-NL", "sw-KE"}


def test_a_merge_cell_equals_the_merge_written_to_disk_and_evaluated(finished, runner, trained, sib_dir, tmp_path):
    _, results, _ = finished
    record = _records(results)["nl-NL/merge-linear@softmax"]
    weights = ",".join(f"{locale}={weight}" for locale, weight in record["sources"])
    merged = tmp_path / "merged"
    assert run_cli(runner, "merge", "--weighting", "manual", "--weights", weights, "--models", trained,
                   "--output", merged, "--no-progress").exit_code == 0
    result = run_cli(runner, "evaluate", "--model", merged, "--data-dir", sib_dir, "--locale", "nl-NL",
                     "--max-length", "16", "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_a_rerun_computes_nothing(finished):
    spec, results, _ = finished
    before = {path: path.stat().st_mtime_ns for path, _, _ in iter_cells(results)}
    again = run_experiment(spec, results, progress=False)
    assert again.reused == 84 and again.computed == 0
    assert {path: path.stat().st_mtime_ns for path, _, _ in iter_cells(results)} == before
    experiment = json.loads((results / "experiment.json").read_text())
    assert [run["to_compute"] for run in experiment["runs"]] == [84, 0]


def test_a_damaged_result_is_recomputed(tmp_path, finished):
    spec, results, _ = finished
    path = results / "cells" / "sw-KE" / "vote-majority@softmax" / "results.json"
    original = read_cell(path)[0]
    path.write_text(path.read_text().replace('"accuracy": ', '"accuracy": 1'), encoding="utf-8")
    assert read_cell(path) == (None, "its checksum does not match its content")
    again = run_experiment(spec, results, progress=False)
    assert again.computed == 1
    assert read_cell(path)[0]["metrics"] == original["metrics"]


def test_another_spec_is_refused_unless_forced(tmp_path, finished, trained, zoo_dir, sib_dir):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(finished[1], results)  # the other tests compare with the finished grid
    other = write_spec(tmp_path, trained, zoo_dir, sib_dir, voting=["majority", "soft", "uriel_logits"])
    with pytest.raises(ConfigError, match="holds the results of another spec .*pass --force"):
        run_experiment(other, results, progress=False)
    summary = run_experiment(other, results, progress=False, force=True)
    # soft under three more selections and uriel_logits under all five are new; the rest is kept
    assert summary.computed == 4 * (3 + 5) and summary.failed == 2  # soft and uriel_logits on sw-KE@average


def test_a_failed_target_fails_its_cells_only_and_retry_recomputes_them(tmp_path, trained, zoo_dir, sib_dir):
    import shutil

    data = tmp_path / "sib"
    shutil.copytree(sib_dir, data)
    (data / "swh_Latn" / "test.tsv").unlink()
    spec = write_spec(tmp_path, trained, zoo_dir, data, selections=["softmax"], strategies=["linear"],
                      voting=["majority"])
    results = tmp_path / "results"
    summary = run_experiment(spec, results, progress=False)
    records = _records(results)
    failed = sorted(key for key, record in records.items() if record["status"] == "failed")
    assert failed and all(key.startswith("sw-KE/") for key in failed)
    assert "test" in records["sw-KE/merge-linear@softmax"]["error"]
    assert all(r["status"] in ("done", "skipped") for k, r in records.items() if not k.startswith("sw-KE/"))
    assert summary.failed == len(failed)
    assert run_experiment(spec, results, progress=False).computed == 0  # failures are kept ...
    shutil.copy(sib_dir / "swh_Latn" / "test.tsv", data / "swh_Latn" / "test.tsv")
    retried = run_experiment(spec, results, progress=False, retry_failed=True)  # ... until retried
    # the restored file changes the target's data, so all its cells are computed again
    assert retried.computed == sum(1 for key in records if key.startswith("sw-KE/")) and retried.failed == 0


def test_a_second_runner_on_the_same_folder_fails_at_once(tmp_path, spec_file):
    from merginguriel_core.outputs import OutputLock

    results = tmp_path / "results"
    with OutputLock(results):
        with pytest.raises(Exception, match="is being written by another run"):
            run_experiment(spec_file, results, progress=False)


def test_cli_run_and_its_bad_input(runner, tmp_path, spec_file):
    result = run_cli(runner, "experiment", "run", spec_file, "--output", tmp_path / "r", "--address", "auto")
    assert result.exit_code == 1
    assert "--address goes with --executor ray, not --executor local" in result.output
    result = run_cli(runner, "experiment", "run", spec_file, "--output", tmp_path / "r", "--executor", "nope")
    assert result.exit_code == 1 and "unknown --executor 'nope'; available: local, ray" in result.output
    assert not (tmp_path / "r").exists()


def test_sigkill_then_rerun_gives_the_uninterrupted_results(tmp_path, finished, spec_file):
    """A real kill -9 in the middle of a grid; the rerun completes it with no duplicated cell."""
    _, uninterrupted, _ = finished
    results = tmp_path / "killed"
    command = [sys.executable, "-m", "merginguriel_cli", "experiment", "run", str(spec_file), "--output",
               str(results), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((results / "cells").glob("*/merge-*/results.json"))) < 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(list(iter_cells(results)))
    assert 0 < partial < 84
    resumed = run_experiment(spec_file, results, progress=False)
    assert resumed.reused == partial and resumed.computed == 84 - partial
    got, want = _records(results), _records(uninterrupted)
    assert sorted(got) == sorted(want)
    for key, record in want.items():
        assert got[key]["status"] == record["status"], key
        assert got[key].get("metrics") == record.get("metrics"), key


def test_the_python_snippet_of_the_docs_runs(tmp_path, monkeypatch, trained, zoo_dir, sib_dir, capsys):
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, trained, zoo_dir, sib_dir, targets=["nl-NL"], selections=["softmax"], strategies=["linear"],
               voting=["majority"])
    exec(compile(blocks[0], "docs/experiments.md", "exec"), {})
    assert capsys.readouterr().out.startswith("10 cells: 0 already done, 10 computed (0 failed, 1 without an answer)")
    assert len(list(iter_cells(tmp_path / "results"))) == 10


def test_two_worker_processes_give_the_same_cells(tmp_path, finished, spec_file):
    """--workers 2: tasks in spawned processes, which read the spec from experiment.json."""
    _, uninterrupted, _ = finished
    summary = run_experiment(spec_file, tmp_path / "parallel", workers=2, progress=False)
    assert summary.computed == 84 and summary.lost == 0
    got, want = _records(tmp_path / "parallel"), _records(uninterrupted)
    assert sorted(got) == sorted(want)
    assert all(got[key].get("metrics") == record.get("metrics") for key, record in want.items())
    assert all(got[key]["definition_hash"] == record["definition_hash"] for key, record in want.items())


def test_the_spec_shown_in_the_docs_is_valid_but_for_its_paths(tmp_path, registry):
    """docs/experiments.md's example spec: every key and value is accepted; only the folders it
    names (models, e5, the data) are absent here."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text(encoding="utf-8")
    shown = re.search(r"## The spec\n\n```yaml\n(.*?)```", doc, flags=re.S).group(1)
    path = tmp_path / "spec.yaml"
    path.write_text(shown, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_spec(path, registry)
    problems = [line.strip().removeprefix("- ") for line in str(error.value).splitlines()[1:]]
    assert problems == [f"models.folder: {tmp_path / 'models'} does not exist",
                        f"models.base: {tmp_path / 'e5'} does not exist",
                        f"data.data_dir: {tmp_path / '../shared/data/sib200'} does not exist"]
