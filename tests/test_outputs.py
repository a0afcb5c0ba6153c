"""Outputs that cannot destroy data: races, kills, full disks, umask, fsync (issue 11).

The races and kills run a real merge in its own process (tests/merge_driver.py)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from merginguriel_core import outputs
from merginguriel_core.errors import ConfigError, OutputError, first_line
from merginguriel_core.merge import SourceModel, run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_plugins.linear import LinearStrategy

PATTERN = "xlm-roberta-base_massive_k_{locale}"
DRIVER = Path(__file__).with_name("merge_driver.py")


def _merge(runner, models, out, *extra):
    return run_cli(runner, "merge", "--models", models, "--output", out, "--no-progress", *extra)


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _hidden(parent: Path, name: str) -> list[str]:
    """What runs left beside output ``name`` (temporary, moved-aside or lock files)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _driver(mode: str, zoo: Path, out: Path, ready: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), mode, str(zoo), str(out), str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the driver never got to its first chunk"
        time.sleep(0.05)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# ------------------------------------------------------------------------ races
def test_a_folder_that_appears_during_the_merge_is_kept(zoo_dir, tmp_path):
    out = tmp_path / "merged"
    process = _driver("appear", zoo_dir, out, tmp_path / "ready")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stdout + stderr
    line = _error_lines(stderr)[0]
    assert f"{out} appeared while this run was writing it and was left as it is" in line
    kept = Path(line.rsplit(" is at ", 1)[1])
    assert (out / "theirs.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert kept.parent == tmp_path and kept.name.startswith("merged.new-")
    assert json.loads((kept / "merge_details.json").read_text())["strategy"] == "linear"
    assert (kept / "model.safetensors").stat().st_size > 0
    assert _hidden(tmp_path, "merged") == []


def test_a_second_run_to_the_same_output_fails_at_once(runner, zoo_dir, tmp_path):
    out, ready = tmp_path / "merged", tmp_path / "ready"
    first = _driver("hold", zoo_dir, out, ready)
    try:
        _wait_for(ready, first)
        started = time.monotonic()
        second = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1,sv-SE=1")
        assert time.monotonic() - started < 30
        assert second.exit_code == 1
        assert f"{out} is being written by another run (process {first.pid}, started" in _error_lines(second.output)[0]
        assert not out.exists()
    finally:
        ready.with_suffix(".go").write_text("")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    sources = [s["locale"] for s in json.loads((out / "merge_details.json").read_text())["sources"]]
    assert sources == ["de-DE", "nl-NL"]  # the first run's result, not thrown away
    assert _hidden(tmp_path, "merged") == []


# ------------------------------------------------------------------------ kills
def test_sigkill_leftovers_are_removed_by_the_next_run(runner, zoo_dir, tmp_path):
    out, ready = tmp_path / "merged", tmp_path / "ready"
    process = _driver("kill", zoo_dir, out, ready)
    _wait_for(ready, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    left = [name for name in _hidden(tmp_path, "merged") if ".tmp-" in name]
    assert len(left) == 1 and left[0].startswith(f".merged.tmp-{process.pid}-")
    result = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1")
    assert result.exit_code == 0, result.output
    assert f"Note: removed {tmp_path / left[0]} (" in result.output
    assert f"the unfinished output of a run (process {process.pid}) that was killed" in result.output
    assert _hidden(tmp_path, "merged") == [] and (out / "model.safetensors").is_file()


def test_a_kill_between_the_overwrite_renames_is_repaired(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    assert _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "sv-SE=1,da-DK=1").exit_code == 0
    original = _digest(out)
    process = _driver("kill-swap", zoo_dir, out, tmp_path / "ready")
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    aside = [name for name in _hidden(tmp_path, "merged") if ".old-" in name]
    assert not out.exists() and len(aside) == 1  # the state the old code left: nothing at --output
    result = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1")
    assert f"Note: restored {out} from {aside[0]}" in result.output
    assert result.exit_code == 1 and "already exists; pass --overwrite" in _error_lines(result.output)[0]
    assert _digest(out) == original and _hidden(tmp_path, "merged") == []


def test_an_old_output_left_beside_a_finished_one_is_reported_not_deleted(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    assert _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1").exit_code == 0
    aside = tmp_path / ".merged.old-999999"  # an earlier version's name, of a process that is gone
    assert _merge(runner, zoo_dir, aside, "--weighting", "manual", "--weights", "sv-SE=1").exit_code == 0
    result = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "nl-NL=1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert f"Note: {aside} (" in result.output and "holds the output a killed run replaced" in result.output
    assert (aside / "model.safetensors").is_file()


def test_ctrl_c_during_the_swap_lands_after_it(zoo_dir, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    sources = [SourceModel("de-DE", zoo_dir / PATTERN.format(locale="de-DE"), 1.0)]
    run_merge(plan_merge(out, strategy=LinearStrategy(), sources=sources, progress=False))
    real_exchange = outputs.exchange

    def interrupted_exchange(first, second):
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the renames of the placement
        return real_exchange(first, second)

    monkeypatch.setattr(outputs, "exchange", interrupted_exchange)
    new = [SourceModel("nl-NL", zoo_dir / PATTERN.format(locale="nl-NL"), 1.0)]
    with pytest.raises(KeyboardInterrupt):
        run_merge(plan_merge(out, strategy=LinearStrategy(), sources=new, overwrite=True, progress=False))
    assert json.loads((out / "merge_details.json").read_text())["sources"][0]["locale"] == "nl-NL"
    merged, source = load_file(out / "model.safetensors"), load_file(zoo_dir / PATTERN.format(locale="nl-NL") / "model.safetensors")
    assert merged.keys() == source.keys() and all(torch.equal(merged[k], source[k]) for k in merged)
    assert _hidden(tmp_path, "merged") == []


def test_overwrite_replaces_only_what_existed_at_the_start(zoo_dir, tmp_path):
    out = tmp_path / "merged"
    sources = [SourceModel("de-DE", zoo_dir / PATTERN.format(locale="de-DE"), 1.0)]
    run_merge(plan_merge(out, strategy=LinearStrategy(), sources=sources, progress=False))

    class SwapsTheOutput(LinearStrategy):
        done = False

        def merge_chunk(self, chunk, statistics):
            if not SwapsTheOutput.done:  # someone moves the old output away and puts theirs there
                SwapsTheOutput.done = True
                out.rename(tmp_path / "moved")
                out.mkdir()
                (out / "theirs.txt").write_text("theirs")
            return super().merge_chunk(chunk, statistics)

    with pytest.raises(OutputError, match="appeared while this run was writing it") as error:
        run_merge(plan_merge(out, strategy=SwapsTheOutput(), sources=sources, overwrite=True, progress=False))
    assert (out / "theirs.txt").read_text() == "theirs"
    kept = Path(str(error.value).rsplit(" is at ", 1)[1])
    assert (kept / "model.safetensors").is_file() and (tmp_path / "moved" / "model.safetensors").is_file()


# ------------------------------------------------------------------ full disks
def test_disk_full_is_one_line_and_leaves_nothing(runner, zoo_dir, tmp_path, monkeypatch):
    import merginguriel_core.io.writer as writer_module

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def close(self):
            self.handle.close()

    monkeypatch.setattr(writer_module, "open", lambda path, mode: FullDisk(open(path, mode)), raising=False)
    out = tmp_path / "merged"
    result = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1")
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert f"no space left on the device while writing {out / 'model.safetensors'}" in line
    needed = sum(t.numel() * t.element_size() for t in load_file(zoo_dir / PATTERN.format(locale="de-DE") / "model.safetensors").values())
    assert f"it needs {outputs.format_bytes(needed)} in all" in line and "is free there now" in line
    assert "written)" in line
    assert "Traceback" not in result.output and not out.exists() and _hidden(tmp_path, "merged") == []


def test_file_size_limit_is_one_line_and_leaves_nothing(zoo_dir, tmp_path):
    out = tmp_path / "merged"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    process = subprocess.run(
        [sys.executable, "-m", "merginguriel_cli", "merge", "--models", str(zoo_dir), "--output", str(out),
         "--weighting", "manual", "--weights", "de-DE=1,nl-NL=1", "--no-progress"],
        capture_output=True, text=True, preexec_fn=limit, timeout=300,
    )
    assert process.returncode == 1, process.stderr
    [line] = _error_lines(process.stderr)
    assert f"file too large while writing {out / 'model.safetensors'}" in line
    assert "(ulimit -f)" in line and "--max-shard-size" in line
    assert "Traceback" not in process.stderr and not out.exists() and _hidden(tmp_path, "merged") == []


# ------------------------------------------------------------------- hygiene
def test_outputs_follow_the_umask(runner, zoo_dir, tmp_path):
    previous = os.umask(0o027)
    try:
        out = tmp_path / "merged"
        assert _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1").exit_code == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o750
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        name: 0o640 for name in ("config.json", "merge_details.json", "merge_details.txt", "model.safetensors",
                                 "tokenizer.json", "tokenizer_config.json")
    }


def test_every_file_is_fsynced_before_it_is_placed(zoo_dir, tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def record(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        return real_fsync(descriptor)

    monkeypatch.setattr(outputs.os, "fsync", record)
    out = tmp_path / "merged"
    run_merge(plan_merge(out, strategy=LinearStrategy(), progress=False,
                         sources=[SourceModel("de-DE", zoo_dir / PATTERN.format(locale="de-DE"), 1.0)]))
    staged = {Path(p).name for p in synced if Path(p).parent.name.startswith(".merged.tmp-")}
    assert staged == {p.name for p in out.iterdir()}
    assert str(tmp_path) in synced  # the rename itself, through the parent folder


def test_result_files_are_not_replaced_when_they_appear(tmp_path):
    path = tmp_path / "comparison.csv"
    with pytest.raises(OutputError, match="appeared while this run was writing it") as error:
        with outputs.atomic_file(path, replace=False) as handle:
            handle.write("new")
            path.write_text("theirs")
    assert path.read_text() == "theirs"
    assert Path(str(error.value).rsplit(" is at ", 1)[1]).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_json_results_are_written_through_the_same_helper(tmp_path):
    path = tmp_path / "details.json"
    outputs.write_json_atomically(path, {"b": [1, 2], "a": "é"})
    assert path.read_text(encoding="utf-8") == json.dumps({"b": [1, 2], "a": "é"}, indent=2) + "\n"
    with pytest.raises(OutputError, match="appeared while this run was writing it"):
        outputs.write_json_atomically(path, {}, replace=False)
    assert json.loads(path.read_text()) == {"b": [1, 2], "a": "é"}


def test_a_results_folder_with_results_in_it_needs_overwrite(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "comparison.md").write_text("old")
    with pytest.raises(ConfigError, match=r"comparison.md already exists; pass --overwrite to replace it"):
        outputs.check_results_folder(out, ["comparison.csv", "comparison.md"], overwrite=False)
    outputs.check_results_folder(out, ["comparison.csv", "comparison.md"], overwrite=True)
    with pytest.raises(ConfigError, match=r"exists and is not a folder"):
        outputs.check_results_folder(out / "comparison.md", [], overwrite=True)


def test_first_line_of_an_error():
    assert first_line(ValueError("\n  bad value\nTraceback ...\n")) == "bad value"
    assert first_line(OSError()) == "OSError" and first_line(OSError(), "unreadable") == "unreadable"
    assert first_line("one\ntwo") == "one" and first_line("") == ""


def test_train_keeps_a_folder_that_appears_while_it_trains(runner, zoo_dir, sib_dir, tmp_path, monkeypatch):
    import merginguriel_core.training as training

    out = tmp_path / "de"
    real_train = training._train

    def train_then_someone_writes(*args, **kwargs):
        result = real_train(*args, **kwargs)
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
        return result

    monkeypatch.setattr(training, "_train", train_then_someone_writes)
    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", out, "--epochs", "1", "--max-length", "16", "--no-progress")
    assert result.exit_code == 1
    line = _error_lines(result.output)[0]
    assert f"{out} appeared while this run was writing it and was left as it is; the new fine-tuned model is at" in line
    kept = Path(line.rsplit(" is at ", 1)[1])
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert json.loads((kept / "training_details.json").read_text())["locale"] == "de-DE"
    assert (kept / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~outputs.current_umask()
    assert _hidden(tmp_path, "de") == []
