"""Iterative training with periodic merges (`mu train-iterative`, plan_iterative/run_iterative,
the runner's iterative cells) on tiny models and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from merginguriel_core.errors import ConfigError
from merginguriel_core.iterative import IterativeOptions, plan_iterative, run_iterative
from merginguriel_core.selection import SelectionOptions
from merginguriel_core.training import TrainingConfig

#: The tiny data's settings (as the `trained` fixture's models were fine-tuned).
TRAINING = TrainingConfig(learning_rate=2e-2, batch_size=8, max_length=16, group_by_length=False)
TRAINING_ARGS = ["--learning-rate", "2e-2", "--batch-size", "8", "--max-length", "16", "--no-group-by-length"]
SOURCES = ["af-ZA", "de-DE", "nl-NL"]


def _plan(tmp_path, zoo_dir, sib_dir, registry, name="run", **options):
    from dataclasses import replace

    keep = options.pop("keep_checkpoints", False)
    training = replace(TRAINING, freeze_embeddings=options.pop("freeze_embeddings", False))
    return plan_iterative(tmp_path / name, target="sw-KE", locales=SOURCES, selection=SelectionOptions(weighting="softmax"),
                          base_model=zoo_dir / "base", data_dir=sib_dir, training=training,
                          options=IterativeOptions(**{"max_epochs": 4, "merge_frequency": 2, **options}),
                          keep_checkpoints=keep, progress=False, registry=registry)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert sorted(first) == sorted(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


# ------------------------------------------------------------------------- bad input
def test_every_problem_of_the_options_at_once(zoo_dir, sib_dir, tmp_path, registry):
    with pytest.raises(ConfigError) as caught:
        plan_iterative(tmp_path / "run", target="sw-KE", locales=["af-ZA", "sw-KE"], strategy="nope",
                       base_model=zoo_dir / "base", data_dir=sib_dir,
                       options=IterativeOptions(max_epochs=3, merge_frequency=5, merge_mix=0), registry=registry)
    text = str(caught.value)
    assert text.startswith("4 problems:")
    assert "--merge-frequency 5 is larger than --max-epochs 3" in text
    assert "--merge-mix must be in (0, 1]" in text
    assert "unknown --strategy 'nope'" in text
    assert "--locales names the target sw-KE" in text


def test_a_language_without_training_data_is_named(zoo_dir, sib_dir, tmp_path, registry):
    with pytest.raises(ConfigError, match="has no data for fr-FR; it has af-ZA, de-DE, nl-NL, sw-KE"):
        plan_iterative(tmp_path / "run", target="sw-KE", locales=["af-ZA", "fr-FR"], base_model=zoo_dir / "base",
                       data_dir=sib_dir, registry=registry)


def test_cli_errors_are_one_line_and_write_nothing(runner, zoo_dir, sib_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(runner, "train-iterative", "--target-lang", "sw-KE", "--locales", "af-ZA,de-DE", "--base-model",
                     zoo_dir / "base", "--data-dir", sib_dir, "--max-epochs", "2", "--merge-frequency", "3",
                     "--output", out)
    assert result.exit_code != 0
    assert "--merge-frequency 3 is larger than --max-epochs 2" in result.output
    assert not out.exists()
    result = run_cli(runner, "train-iterative", "--target-lang", "sw-KE", "--locales", "af-ZA,de-DE", "--num-languages",
                     "2", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--output", out)
    assert result.exit_code != 0 and "give --locales or --num-languages, not both" in result.output


def test_dry_run_shows_the_schedule_and_writes_nothing(runner, zoo_dir, sib_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(runner, "train-iterative", "--target-lang", "sw-KE", "--locales", ",".join(SOURCES), "--weighting",
                     "softmax", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--max-epochs", "7",
                     "--merge-frequency", "3", "--output", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 models (af-ZA 0.455, de-DE 0.292, nl-NL 0.253)" in result.output
    assert "Merges after epochs 3, 6, 7" in result.output and not out.exists()


# -------------------------------------------------------------------------- behaviour
def test_one_merge_at_the_end_is_the_one_shot_merge(runner, zoo_dir, sib_dir, trained, tmp_path, registry):
    """With a single merge after the last epoch, iterative training is exactly `mu train` of
    each source (same seed, steps and schedule) followed by `mu merge`: the same weights."""
    plan = _plan(tmp_path, zoo_dir, sib_dir, registry, max_epochs=6, merge_frequency=6)
    result = run_iterative(plan)
    assert [m["epoch"] for m in result.merges] == [6] and result.merges[0]["reason"] == "final"
    merged = tmp_path / "one-shot"
    done = run_cli(runner, "merge", "--models", trained, "--target-lang", "sw-KE", "--source-langs", ",".join(SOURCES),
                   "--weighting", "softmax", "--num-languages", "3", "--output", merged, "--no-progress")
    assert done.exit_code == 0, done.output
    _assert_same(_weights(tmp_path / "run" / "model"), _weights(merged))


def test_a_run_logs_every_epoch_and_merge_and_reports(runner, zoo_dir, sib_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(runner, "train-iterative", "--target-lang", "sw-KE", "--locales", ",".join(SOURCES),
                     "--weighting", "softmax", "--base-model", zoo_dir / "base", "--data-dir", sib_dir,
                     "--max-epochs", "4", "--merge-frequency", "2", *TRAINING_ARGS, "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "merge after epoch 2 (scheduled)" in result.output and "MiB" in result.output and "merge after epoch 4 (final)" in result.output
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "epoch", "epoch", "merge", "cycle", "epoch", "epoch", "merge", "cycle", "done"]
    epoch = events[1]
    assert sorted(epoch["models"]) == SOURCES and all(0 <= m["dev_accuracy"] <= 1 for m in epoch["models"].values())
    assert epoch["peak_memory_bytes"] > 10 * 2**20 and events[3]["peak_memory_bytes"] > 10 * 2**20
    outcome = json.loads((out / "result.json").read_text())
    # 42 training examples in batches of 8: 6 steps an epoch, 4 epochs
    assert outcome["steps_per_model"] == 24 and outcome["examples"] == 21
    assert [c["epochs"] for c in outcome["cycles"]] == [[1, 2], [3, 4]]
    assert all(c["peak_memory_bytes"] > 10 * 2**20 for c in outcome["cycles"])
    assert not (out / "checkpoints").exists()  # removed when done
    cell = json.loads((out / "cells" / "sw-KE" / "iterative-linear@softmax" / "results.json").read_text())
    assert cell["kind"] == "iterative" and cell["metrics"] == outcome["metrics"]
    assert cell["iterative"]["steps_per_model"] == 24 and len(cell["iterative"]["merges"]) == 2
    report = run_cli(runner, "report", out)
    assert report.exit_code == 0, report.output
    assert "iterative-linear@softmax" in (out / "report" / "report.md").read_text()


def test_the_final_model_is_the_merge_of_the_last_checkpoint(runner, zoo_dir, sib_dir, tmp_path, registry):
    plan = _plan(tmp_path, zoo_dir, sib_dir, registry, keep_checkpoints=True)
    run_iterative(plan)
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-4"
    models = [arg for locale in SOURCES for arg in ("--model", f"{locale}={checkpoint / locale}")]
    done = run_cli(runner, "merge", *models, "--target-lang", "sw-KE", "--weighting", "softmax", "--num-languages", "3",
                   "--output", tmp_path / "again", "--no-progress")
    assert done.exit_code == 0, done.output
    _assert_same(_weights(tmp_path / "run" / "model"), _weights(tmp_path / "again"))


def test_models_continue_from_the_blend_of_merge_and_own_weights(zoo_dir, sib_dir, tmp_path, registry):
    from merginguriel_core.iterative import _Member, _Setup

    plan = _plan(tmp_path, zoo_dir, sib_dir, registry)
    member = _Member(_Setup.of(plan), "de-DE")
    own = {k: v.clone() for k, v in member.model.state_dict().items()}
    merged = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in own.items()}
    member.absorb(merged, 0.25)
    for name, value in member.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * merged[name] + 0.75 * own[name], rtol=0, atol=1e-6)
    member.absorb(merged, 1.0)
    assert all(torch.equal(v, merged[k]) for k, v in member.model.state_dict().items())


def test_adaptive_interval_is_adacomms_rule():
    from merginguriel_core.iterative import adaptive_interval

    assert adaptive_interval(4, 1.0, 1.0, 15) == 4  # no progress: the interval stays
    assert adaptive_interval(4, 0.25, 1.0, 15) == 2  # a quarter of the loss: half the interval
    assert adaptive_interval(3, 0.5, 1.0, 15) == 3  # ceil(2.12)
    assert adaptive_interval(2, 0.001, 1.0, 15) == 1  # never below 1
    assert adaptive_interval(5, 9.0, 1.0, 12) == 12  # a rising loss merges less often, within the run


def test_adaptive_frequency_follows_the_training_loss(zoo_dir, sib_dir, tmp_path, registry):
    from merginguriel_core.iterative import adaptive_interval

    plan = _plan(tmp_path, zoo_dir, sib_dir, registry, max_epochs=9, merge_frequency=3, adaptive_merge_frequency=True)
    result = run_iterative(plan)
    first = result.epochs[0]["mean_train_loss"]
    assert result.merges[0]["epoch"] == 3 and result.merges[-1]["epoch"] == 9
    for merge, after in zip(result.merges, result.merges[1:]):
        loss = result.epochs[merge["epoch"] - 1]["mean_train_loss"]
        assert merge["next_merge"] - merge["epoch"] == adaptive_interval(3, loss, first, 9)
        assert after["epoch"] == min(merge["next_merge"], 9)


def test_a_stalled_dev_accuracy_triggers_a_merge(zoo_dir, sib_dir, tmp_path, registry):
    plan = _plan(tmp_path, zoo_dir, sib_dir, registry, max_epochs=5, merge_frequency=4, performance_merge_trigger=True,
                 convergence_threshold=0.99)  # no epoch raises the mean dev accuracy by 0.99
    result = run_iterative(plan)
    assert [(m["epoch"], m["reason"]) for m in result.merges] == [(2, "stalled"), (3, "stalled"), (4, "stalled"),
                                                                   (5, "final")]


def test_sequential_models_share_what_never_changes(zoo_dir, sib_dir, tmp_path, registry):
    from merginguriel_core.iterative import _Sequential

    members = _Sequential(_plan(tmp_path, zoo_dir, sib_dir, registry, freeze_embeddings=True), None).members
    embeddings = {m.model.get_input_embeddings().weight.data_ptr() for m in members}
    heads = {m.model.classifier.out_proj.weight.data_ptr() for m in members}
    assert len(embeddings) == 1 and len(heads) == len(members)
    assert len({id(m.run.tokenizer) for m in members}) == 1


@pytest.mark.parametrize("freeze", [False, True])
def test_parallel_training_matches_sequential(zoo_dir, sib_dir, tmp_path, registry, freeze):
    sequential = run_iterative(_plan(tmp_path, zoo_dir, sib_dir, registry, name="one", freeze_embeddings=freeze))
    parallel = run_iterative(_plan(tmp_path, zoo_dir, sib_dir, registry, name="many", parallel=True,
                                   freeze_embeddings=freeze))
    log = [json.loads(line) for line in (tmp_path / "many" / "log.jsonl").read_text().splitlines()]
    assert log[0]["parallel"] is True
    for a, b in zip(sequential.epochs, parallel.epochs):  # other thread counts: float rounding only
        for locale in SOURCES:
            assert a["models"][locale]["train_loss"] == pytest.approx(b["models"][locale]["train_loss"], abs=1e-3)
    assert sequential.metrics["accuracy"] == pytest.approx(parallel.metrics["accuracy"], abs=0.05)


def test_parallel_falls_back_when_memory_is_short(zoo_dir, sib_dir, tmp_path, registry, monkeypatch, capsys):
    from merginguriel_core import iterative

    monkeypatch.setattr(iterative, "_free_bytes", lambda device: 1024)
    run_iterative(_plan(tmp_path, zoo_dir, sib_dir, registry, max_epochs=2, merge_frequency=2, parallel=True))
    assert "training them one after another instead" in capsys.readouterr().err
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["parallel"] is False


# ----------------------------------------------------------------------------- resume
def _command(out: Path, zoo_dir: Path, sib_dir: Path, *extra: str) -> list[str]:
    return ["train-iterative", "--target-lang", "sw-KE", "--locales", ",".join(SOURCES), "--weighting", "softmax",
            "--base-model", str(zoo_dir / "base"), "--data-dir", str(sib_dir), "--max-epochs", "8",
            "--merge-frequency", "2", *TRAINING_ARGS, "--output", str(out), "--no-progress", *extra]


def test_a_killed_run_resumes_to_the_same_weights(runner, zoo_dir, sib_dir, tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "merginguriel_cli", *_command(killed, zoo_dir, sib_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "epoch-2").is_dir():
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists() and not (killed / "model").exists()  # killed mid-run

    resumed = run_cli(runner, *_command(killed, zoo_dir, sib_dir, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from the checkpoint after epoch" in resumed.output
    whole = run_cli(runner, *_command(tmp_path / "whole", zoo_dir, sib_dir))
    assert whole.exit_code == 0, whole.output
    _assert_same(_weights(killed / "model"), _weights(tmp_path / "whole" / "model"))
    first, second = (json.loads((folder / "result.json").read_text()) for folder in (killed, tmp_path / "whole"))
    assert first["metrics"] == second["metrics"] and first["resumed_from"] and not second["resumed_from"]
    assert [m["epoch"] for m in first["merges"]] == [2, 4, 6, 8]


def test_resume_refuses_another_configuration_and_a_rerun_needs_it(runner, zoo_dir, sib_dir, tmp_path):
    out = tmp_path / "run"
    command = _command(out, zoo_dir, sib_dir)
    command[command.index("--max-epochs") + 1] = "2"
    assert run_cli(runner, *command).exit_code == 0
    again = run_cli(runner, *command)
    assert again.exit_code != 0 and "holds an iterative run already; pass --resume" in again.output
    other = run_cli(runner, *command, "--resume", "--merge-mix", "0.5")
    assert other.exit_code != 0
    assert "was started with another configuration: merge_mix was 1.0, now 0.5" in other.output
    missing = run_cli(runner, *_command(tmp_path / "none", zoo_dir, sib_dir, "--resume"))
    assert missing.exit_code != 0 and "holds no iterative run to resume" in missing.output


# ------------------------------------------------------------------------- the runner
def _spec(tmp_path, trained, zoo_dir, sib_dir, **changes):
    from test_experiments import write_spec

    return write_spec(tmp_path, trained, zoo_dir, sib_dir, **{
        "targets": ["sw-KE", "de-DE"], "selection": {"num_languages": 3}, "selections": ["softmax"],
        "strategies": ["linear"], "voting": [], "baselines": ["english"],
        "iterative": [{"strategy": "linear", "max_epochs": 4, "merge_frequency": 2}],
        "training": {"learning_rate": 0.02, "batch_size": 8, "max_length": 16, "group_by_length": False}, **changes})


def test_spec_iterative_entries_are_checked_in_place(tmp_path, trained, zoo_dir, sib_dir, registry):
    from merginguriel_core.experiments.spec import load_spec

    path = _spec(tmp_path, trained, zoo_dir, sib_dir,
                 iterative=[{"strategy": "linear", "max_epochs": 2, "merge_frequency": 3, "compare_with": "ties"},
                            {"strategy": "linear", "label": "b", "frequency": 1}],
                 training={"learning_rate": -1})
    with pytest.raises(ConfigError) as caught:
        load_spec(path, registry)
    text = str(caught.value)
    assert "iterative[0]: merge_frequency 3 is larger than max_epochs 2" in text
    assert "iterative[1].frequency: unknown key" in text
    assert "iterative[0].compare_with: no strategies: entry labelled 'ties'; the merge labels are linear" in text
    assert "training: learning_rate must be positive, got -1" in text


@pytest.mark.parametrize("workers", [None, 2])
def test_runner_trains_iterative_cells_beside_one_shot_merges(tmp_path, trained, zoo_dir, sib_dir, registry, workers):
    from merginguriel_core.experiments.report import write_report
    from merginguriel_core.experiments.runner import run_experiment

    spec = _spec(tmp_path, trained, zoo_dir, sib_dir)
    summary = run_experiment(spec, tmp_path / "results", workers=workers, progress=False, registry=registry)
    assert summary.failed == 0 and summary.computed == 2 * (4 + 1 + 1 + 1)
    cell = json.loads((tmp_path / "results" / "cells" / "sw-KE" / "iterative-linear@softmax" / "results.json").read_text())
    assert cell["status"] == "done" and cell["compare_with"] == "merge-linear@softmax"
    assert [s[0] for s in cell["sources"]] == [s[0] for s in json.loads(
        (tmp_path / "results" / "cells" / "sw-KE" / "merge-linear@softmax" / "results.json").read_text())["sources"]]
    assert not (tmp_path / "results" / "iterative" / "sw-KE" / "iterative-linear@softmax" / "checkpoints").exists()
    again = run_experiment(spec, tmp_path / "results", progress=False, registry=registry)
    assert again.computed == 0  # finished cells are kept
    report = write_report(tmp_path / "results")
    entry = next(e for e in report.summary if e["method"] == "iterative-linear@softmax")
    assert entry["comparisons"]["one_shot"]["n"] == 2
    assert entry["comparisons"]["one_shot"]["against"] == "a one-shot merge of the same sources"


def test_ray_executor_runs_iterative_cells(tmp_path, trained, zoo_dir, sib_dir, registry):
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    from merginguriel_core.experiments.runner import run_experiment

    spec = _spec(tmp_path, trained, zoo_dir, sib_dir, targets=["sw-KE"], baselines=[])
    local = run_experiment(spec, tmp_path / "local", progress=False, registry=registry)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_experiment(spec, tmp_path / "on-ray", executor="ray", progress=False, registry=registry)
    finally:
        if started_here:
            ray.shutdown()
    assert local.failed == on_ray.failed == 0 and on_ray.computed == local.computed == 4 + 1 + 1
    cells = [json.loads((tmp_path / where / "cells" / "sw-KE" / "iterative-linear@softmax" / "results.json").read_text())
             for where in ("local", "on-ray")]
    assert [m["epoch"] for m in cells[1]["iterative"]["merges"]] == [m["epoch"] for m in cells[0]["iterative"]["merges"]]
    assert cells[1]["iterative"]["steps_per_model"] == cells[0]["iterative"]["steps_per_model"] == 24
    # Ray's workers run other thread counts: the same run up to float rounding
    assert cells[1]["metrics"]["accuracy"] == pytest.approx(cells[0]["metrics"]["accuracy"], abs=0.1)
