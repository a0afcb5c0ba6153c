"""Inputs that cannot slip through: ignored options, non-finite sources, outputs over inputs,
path-like model patterns (issue 11)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli, installed_registry

PATTERN = "xlm-roberta-base_massive_k_{locale}"


def _error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ------------------------------------------------------------- options not read
@pytest.mark.parametrize("args, message", [
    (("--target-lang", "de-DE", "--weights", "nl-NL=1"),
     "--weights is not read by --weighting uriel (read by adamerging, manual)"),
    (("--weighting", "manual", "--weights", "nl-NL=1", "--top-k", "3"),
     "--top-k is not read by --weighting manual (read by adamerging, learned, local_sinkhorn, proportional, softmax, uriel)"),
    (("--target-lang", "de-DE", "--weighting", "softmax", "--sinkhorn-iters", "5"),
     "--sinkhorn-iters is not read by --weighting softmax (read by adamerging, average, local_sinkhorn, uriel)"),
    (("--weighting", "average", "--features", "phonology_knn"),  # no target: average takes every model
     "--features is not read by --weighting average"),
    (("--target-lang", "de-DE", "--base-model", "{zoo}/base"),
     "--base-model is not read by --strategy linear (read by breadcrumbs, breadcrumbs_ties"),
    (("--target-lang", "de-DE", "--strategy", "ties", "--base-model", "{zoo}/base", "--seed", "3"),
     "--seed is not read by --strategy ties (read by dare, dare_linear, dare_ties, della, della_linear, fisher, regmean)"),
    (("--target-lang", "de-DE", "--data-dir", "{zoo}"), "--data-dir is not read by --strategy linear (read by fisher, regmean)"),
    (("--target-lang", "de-DE", "--strategy", "ties", "--base-model", "{zoo}/base", "--stats-dir", "{zoo}"),
     "--stats-dir is not read by --strategy ties (read by fisher, regmean)"),
])
def test_merge_refuses_options_it_would_ignore(runner, zoo_dir, tmp_path, args, message):
    args = [str(a).format(zoo=zoo_dir) for a in args]
    result = run_cli(runner, "merge", "--models", zoo_dir, "--output", tmp_path / "m", "--no-progress", *args)
    assert message in _error(result)
    assert not (tmp_path / "m").exists()


def test_options_that_are_read_still_work(runner, zoo_dir, tmp_path):
    result = run_cli(runner, "merge", "--models", zoo_dir, "--output", tmp_path / "m", "--target-lang", "de-DE",
                     "--strategy", "dare_ties", "--base-model", zoo_dir / "base", "--seed", "3", "--top-k", "20",
                     "--weighting", "softmax", "--num-languages", "3", "--dry-run")
    assert result.exit_code == 0, result.output


def test_ensemble_and_explain_refuse_weights_without_manual(runner, zoo_dir, tmp_path):
    result = run_cli(runner, "ensemble", "--target-lang", "de-DE", "--models", zoo_dir, "--data-dir", tmp_path,
                     "--weights", "nl-NL=1")
    assert "--weights is not read by --weighting uriel (read by adamerging, manual)" in _error(result)
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--explain", "--weighting", "manual",
                     "--weights", "nl-NL=1", "--top-k", "4", "--plot", tmp_path / "p.png")
    assert "--top-k is not read by --weighting manual" in _error(result) and not (tmp_path / "p.png").exists()


def test_every_builtin_declares_what_it_reads():
    """No built-in keeps the permissive default, so a new shared option cannot be ignored silently."""
    from merginguriel_core.interfaces import Weighting

    registry = installed_registry()
    for name in registry.names("weighting"):
        own = [k for k in type(registry.get("weighting", name)).__mro__ if k not in (Weighting, object) and
               ("reads" in vars(k) or "options_read" in vars(k))]
        assert own, f"weighting {name} does not declare the options it reads"
    assert registry.get("weighting", "manual").options_read(None) == {"weights", "include_target"}
    assert registry.get("weighting", "average").options_read(None) == frozenset()
    assert registry.get("strategy", "linear").options_read() == frozenset()
    assert registry.get("strategy", "dare_linear").options_read() == {"base_model", "seed"}
    assert registry.get("strategy", "fisher").options_read() >= {"data_dir", "stats_dir", "seed"}


# ---------------------------------------------------------- non-finite sources
@pytest.mark.parametrize("strategy", ["linear", "task_arithmetic", "ties", "dare", "dare_ties", "dare_linear",
                                      "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "karcher",
                                      "model_stock", "fisher_simple"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_source_is_named_for_every_strategy(runner, zoo_copy, tmp_path, strategy, value):
    path = zoo_copy / PATTERN.format(locale="nl-NL") / "model.safetensors"
    state = load_file(path)
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    state[name][1, 2] = value
    save_file(state, path)
    base = ["--base-model", zoo_copy / "base"] if "base_model" in installed_registry().get("strategy", strategy).options_read() else []
    result = run_cli(runner, "merge", "--models", zoo_copy, "--output", tmp_path / "m", "--no-progress",
                     "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1,sv-SE=1", "--strategy", strategy, *base)
    line = _error(result)
    assert f"tensor {name} of model nl-NL ({path.parent}) holds NaN or inf values" in line
    assert not (tmp_path / "m").exists()


def test_a_non_finite_base_is_named(runner, zoo_copy, tmp_path):
    path = zoo_copy / "base" / "model.safetensors"
    state = load_file(path)
    state["roberta.embeddings.word_embeddings.weight"][3, 0] = float("-inf")
    save_file(state, path)
    result = run_cli(runner, "merge", "--models", zoo_copy, "--output", tmp_path / "m", "--no-progress",
                     "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1", "--strategy", "ties",
                     "--base-model", zoo_copy / "base")
    assert f"tensor roberta.embeddings.word_embeddings.weight of the base model {zoo_copy / 'base'}" in _error(result)


# ------------------------------------------------------- outputs over inputs
def test_train_never_replaces_its_base_model(runner, zoo_copy, sib_dir, tmp_path):
    base = zoo_copy / "base"
    before = (base / "model.safetensors").read_bytes()
    for output in (base, base / "inside", zoo_copy):
        result = run_cli(runner, "train", "--base-model", base, "--data-dir", sib_dir, "--locale", "de-DE",
                         "--output", output, "--overwrite", "--no-progress")
        assert f"--output {output} would overwrite, hold or sit inside the input {base}" in _error(result)
    result = run_cli(runner, "train", "--base-model", base, "--data-dir", sib_dir, "--locales", "de-DE",
                     "--output-dir", sib_dir / "models", "--no-progress")
    assert f"would overwrite, hold or sit inside the input {sib_dir}" in _error(result)
    assert (base / "model.safetensors").read_bytes() == before and not (sib_dir / "models").exists()


def test_nxn_and_compare_never_write_into_their_inputs(runner, zoo_dir, sib_dir, tmp_path):
    result = run_cli(runner, "nxn", "--models", zoo_dir, "--data-dir", sib_dir, "--output", zoo_dir)
    assert f"--output {zoo_dir} would overwrite, hold or sit inside the input {zoo_dir}" in _error(result)
    model = zoo_dir / PATTERN.format(locale="de-DE")
    result = run_cli(runner, "nxn", "--models", zoo_dir, "--data-dir", sib_dir, "--output", model / "results")
    assert "would overwrite, hold or sit inside the input" in _error(result)
    result = run_cli(runner, "compare-ensembles", "--target-langs", "de-DE", "--models", zoo_dir,
                     "--data-dir", sib_dir, "--output", sib_dir / "deu_Latn")
    assert f"would overwrite, hold or sit inside the input {sib_dir}" in _error(result)
    assert not (model / "results").exists() and not (sib_dir / "deu_Latn" / "comparison.csv").exists()


# ------------------------------------------------------------ model patterns
@pytest.mark.parametrize("pattern", ["../../x_{locale}", "sub/x_{locale}", "..x_{locale}", "x_{locale}_{0}"])
def test_path_like_model_patterns_are_refused_everywhere(runner, zoo_dir, sib_dir, tmp_path, pattern):
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    commands = [
        ("train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locales", "de-DE", "--output-dir", out,
         "--model-pattern", pattern, "--no-progress"),
        ("merge", "--models", zoo_dir, "--model-pattern", pattern, "--target-lang", "de-DE", "--output", out / "m"),
        ("nxn", "--models", zoo_dir, "--model-pattern", pattern, "--data-dir", sib_dir, "--output", out / "n"),
    ]
    for command in commands:
        assert f"--model-pattern {pattern!r}" in _error(run_cli(runner, *command))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]


def test_a_damaged_statistics_file_is_recomputed(runner, zoo_dir, tmp_path):
    data = tmp_path / "data.tsv"
    data.write_text("text\tcategory\n" + "".join(f"the match {i}\tsports\nthe film {i}\tentertainment\n" for i in range(4)))
    stats = tmp_path / "stats"

    def merge(out):
        return run_cli(runner, "merge", "--models", zoo_dir, "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1",
                       "--strategy", "fisher", "--data-file", data, "--param", "examples=4", "--stats-dir", stats,
                       "--output", out, "--no-progress")

    assert merge(tmp_path / "first").exit_code == 0
    files = sorted(stats.glob("fisher-*.safetensors"))
    assert len(files) == 2
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated, as a killed copy or full disk leaves it
    result = merge(tmp_path / "second")
    assert result.exit_code == 0, result.output
    assert f"Note: statistics file {files[0]} is unreadable (" in result.output and "recomputing" in result.output
    first, second = load_file(tmp_path / "first" / "model.safetensors"), load_file(tmp_path / "second" / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)
    from merginguriel_core.io import read_header

    assert len(read_header(files[0])[1]) == len(read_header(files[1])[1])  # whole again
