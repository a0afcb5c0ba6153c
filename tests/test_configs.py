"""Run configs: `--config FILE` for merge, ensemble, nxn and train; a merge_details.json redoes its merge."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli


def _same_tensors(a, b) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_merge_details_redo_the_merge_byte_for_byte(runner, zoo_dir, tmp_path):
    """DARE-TIES with a seed and a small chunk size: the random draws depend on both."""
    first = tmp_path / "first"
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir, "--strategy", "dare_ties",
                     "--base-model", zoo_dir / "base", "--seed", "7", "--param", "density=0.4",
                     "--chunk-size", "4KB", "--output", first, "--no-progress")
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    result = run_cli(runner, "merge", "--config", first / "merge_details.json", "--output", again, "--no-progress")
    assert result.exit_code == 0, result.output
    assert _same_tensors(first, again)
    old, new = (json.loads((f / "merge_details.json").read_text()) for f in (first, again))
    assert [(s["locale"], s["weight"]) for s in new["sources"]] == [(s["locale"], s["weight"]) for s in old["sources"]]
    assert new["params"] == old["params"] and new["seed"] == 7 and new["chunk_bytes"] == old["chunk_bytes"]
    # A different seed gives different draws: the record's seed is what made them equal.
    other = tmp_path / "other"
    assert run_cli(runner, "merge", "--config", first / "merge_details.json", "--seed", "8", "--output", other,
                   "--no-progress").exit_code == 0
    assert not _same_tensors(first, other)


def test_merge_details_record_which_plugins_did_it(runner, zoo_dir, tmp_path):
    out = tmp_path / "m"
    assert run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir, "--output", out,
                   "--no-progress").exit_code == 0
    plugins = json.loads((out / "merge_details.json").read_text())["plugins"]
    assert plugins["strategy"] == {"name": "linear", "plugin": "linear", "distribution": "merginguriel",
                                   "version": plugins["strategy"]["version"]}
    assert plugins["weighting"]["name"] == "uriel" and plugins["weighting"]["plugin"] == "uriel_similarity"
    assert plugins["weighting"]["distribution"] == "merginguriel" and plugins["strategy"]["version"]


def test_a_yaml_config_with_command_line_overrides(runner, zoo_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"target-lang: de-DE\nmodels: {zoo_dir}\nnum_languages: 4\nstrategy: ties\n"
                      f"base-model: {zoo_dir / 'base'}\nparam:\n  density: 0.3\n", encoding="utf-8")
    out = tmp_path / "m"
    result = run_cli(runner, "merge", "--config", config, "--num-languages", "2", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    assert len(details["sources"]) == 2  # the command line wins over the file
    assert details["strategy"] == "ties" and details["params"]["density"] == 0.3


def test_a_config_option_the_method_does_not_read_is_refused(runner, zoo_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"target-lang: de-DE\nmodels: {zoo_dir}\nbase-model: {zoo_dir / 'base'}\n", encoding="utf-8")
    result = run_cli(runner, "merge", "--config", config, "--output", tmp_path / "m")
    assert result.exit_code == 1
    assert "--base-model is not read by --strategy linear" in result.output and not (tmp_path / "m").exists()


@pytest.mark.parametrize("text, message", [
    ("target-lang: de-DE\ntopk: 3\n", "run.yaml:2: unknown key 'topk' for mu merge; did you mean 'top-k'?"),
    ("target-lang: de-DE\nmodels: [1\n", "run.yaml:3: not valid YAML or JSON"),
    ("- target-lang\n", "must hold a mapping of option names to values, not a list"),
    ("top-k: [1, 2]\n", "run.yaml:1: top-k takes one value, got a list"),
])
def test_bad_config_files_are_one_line_errors(runner, tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    result = run_cli(runner, "merge", "--config", config, "--dry-run")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_every_config_command_reads_its_own_keys(runner, tmp_path):
    for command, good in (("ensemble", "voting-method"), ("nxn", "split"), ("train", "epochs"),
                          ("compare-ensembles", "voting-methods")):
        config = tmp_path / f"{command}.yaml"
        config.write_text(f"{good}: x\nnot-an-option: 1\n", encoding="utf-8")
        result = run_cli(runner, command, "--config", config)
        assert f"{command}.yaml:2: unknown key 'not-an-option' for mu {command}" in result.output, result.output
    record = tmp_path / "merge_details.json"
    record.write_text(json.dumps({"strategy": "linear", "sources": [], "packages": {}}), encoding="utf-8")
    result = run_cli(runner, "ensemble", "--config", record)
    assert "is a merge record (merge_details.json); only mu merge reads one" in result.output


def test_ensemble_from_a_config(runner, zoo_dir, sib_dir, tmp_path):
    config = tmp_path / "ensemble.yaml"
    config.write_text(f"target-lang: af-ZA\nmodels: {zoo_dir}\nnum-languages: 2\ndata-dir: {sib_dir}\n"
                      f"voting-method: majority\nno-cache: true\nprogress: false\ndevice: cpu\n", encoding="utf-8")
    result = run_cli(runner, "ensemble", "--config", config)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["voting_method"] == "majority" and len(report["sources"]) == 2


def test_dry_run_needs_no_output_but_a_merge_does(runner, zoo_dir):
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir, "--dry-run")
    assert result.exit_code == 0 and "Dry run: nothing merged." in result.output
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir)
    assert result.exit_code == 1 and "mu merge needs --output FOLDER (only --dry-run goes without)" in result.output
