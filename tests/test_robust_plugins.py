"""Robustness: ambiguous, mistyped or exiting plugins; damaged logits caches; bad batching
options; table datasets evaluated in the model's own label order."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from merginguriel_core import hookimpl, plugins
from merginguriel_core.errors import ConfigError, PluginError
from merginguriel_core.evaluation import (
    LogitsCache, Predictor, check_batching, gold_ids, label_space_for, model_labels,
)
from merginguriel_core.interfaces import MergeStrategy, VotingMethod
from merginguriel_core.plugins import Registry, _Candidate, add_plugin_commands
from merginguriel_core.zoo import LABELS

from conftest import WORDS, run_cli

PATTERN = "xlm-roberta-base_massive_k_{locale}"
HERE = __name__  # the module name error messages use for the classes defined here


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


class _Halve(MergeStrategy):
    name = "halve_first"
    description = "Half of the first source (a test strategy)."

    def merge_chunk(self, chunk, statistics):
        return chunk.sources[0] / 2


def _with_candidates(monkeypatch, *extra: _Candidate) -> None:
    """Make ``extra`` look like installed entry points, after the real ones."""
    original = plugins._entry_point_candidates
    monkeypatch.setattr(plugins, "_entry_point_candidates", lambda: original() + list(extra))


def _strategy_plugin(name: str, cls_name: str = "Strategy"):
    strategy = type(cls_name, (_Halve,), {"name": name})

    def register_strategies(register):
        register(strategy())

    return types.SimpleNamespace(register_strategies=hookimpl(register_strategies))


# ------------------------------------------------------------ 1. ambiguous names
def test_name_provided_twice_is_refused_as_ambiguous_naming_both(monkeypatch):
    _with_candidates(
        monkeypatch,
        _Candidate("halve_a", "mu_halve_a.plugin", "mu-halve-a", "1.0", lambda: _strategy_plugin("halve_first")),
        _Candidate("halve_b", "mu_halve_b.plugin", "mu-halve-b", "2.0", lambda: _strategy_plugin("halve_first")),
    )
    registry = Registry.load()
    assert registry.ambiguous == {("strategy", "halve_first"): ["halve_a", "halve_b"]}
    with pytest.raises(PluginError) as caught:
        registry.get("strategy", "halve_first")
    assert str(caught.value) == (
        "--strategy 'halve_first' is ambiguous: strategy 'halve_first' is provided by plugin 'halve_a' (mu-halve-a 1.0) "
        "and by plugin 'halve_b' (mu-halve-b 2.0); uninstall all but one of them, or set MERGINGURIEL_PLUGINS to the "
        "comma-separated plugins to load, leaving out all but one of 'halve_a', 'halve_b'"
    )
    assert "\n" not in str(caught.value)
    # The second is listed as refused, naming both; everything else works as before.
    assert "conflicts with strategy 'halve_first' from plugin 'halve_a' (mu-halve-a 1.0)" in registry.record("halve_b").error
    assert registry.record("halve_a").provides == [("strategy", "halve_first")]
    assert registry.get("strategy", "linear").name == "linear"
    assert registry.get("weighting", "manual").name == "manual"


def test_narrowing_with_the_env_var_resolves_the_ambiguity(monkeypatch):
    second = _strategy_plugin("halve_first", "SecondHalve")
    _with_candidates(
        monkeypatch,
        _Candidate("halve_a", "mu_halve_a.plugin", "mu-halve-a", "1.0", lambda: _strategy_plugin("halve_first")),
        _Candidate("halve_b", "mu_halve_b.plugin", "mu-halve-b", "2.0", lambda: second),
    )
    registry = Registry.load(only="linear,halve_b")
    assert registry.ambiguous == {}
    assert type(registry.get("strategy", "halve_first")).__name__ == "SecondHalve"
    monkeypatch.setenv("MERGINGURIEL_PLUGINS", "halve_a")
    assert plugins.load_plugins().ambiguous == {}


def test_ambiguous_builtin_name_refused_by_merge_and_shown_by_plugins(use_registry, runner, zoo_dir, tmp_path,
                                                                     monkeypatch):
    from merginguriel_core import notes

    monkeypatch.setattr(notes, "_said", set())
    registry = use_registry(Registry.load(extra=[("copycat", _strategy_plugin("linear"))]))
    out = tmp_path / "out"
    result = run_cli(runner, "merge", "--weighting", "manual", "--weights", "de-DE=1", "--strategy", "linear",
                     "--models", zoo_dir, "--output", out, "--no-progress")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --strategy 'linear' is ambiguous: strategy 'linear' is provided by plugin 'linear' (merginguriel 0.1.0) "
        "and by plugin 'copycat' (no distribution); uninstall 'copycat', or set MERGINGURIEL_PLUGINS to the "
        "comma-separated plugins to load, leaving out 'copycat' (the built-in 'linear' provides a default of `mu`, "
        "so it always loads)"
    ]
    assert not out.exists()
    listing = run_cli(runner, "plugins").output.splitlines()
    assert any(l.startswith("linear ") and "strategy: linear (AMBIGUOUS, also from copycat: refused)" in l for l in listing)
    assert any(l.startswith("copycat ") and "BROKEN: strategy 'linear' from plugin 'copycat'" in l for l in listing)
    rows = {row["name"]: row for row in json.loads(run_cli(runner, "plugins", "--json").output)}
    assert rows["linear"]["provides"][0]["ambiguous_with"] == ["copycat"]
    # Other strategies keep working; listing every strategy leaves the ambiguous one out, saying so once.
    other = run_cli(runner, "merge", "--weighting", "manual", "--weights", "de-DE=1", "--strategy", "task_arithmetic",
                    "--base-model", zoo_dir / "base", "--models", zoo_dir, "--output", tmp_path / "ta", "--no-progress")
    assert other.exit_code == 0, other.output
    assert (tmp_path / "ta" / "model.safetensors").is_file()
    assert ("Note: strategy 'linear' is provided by plugin 'linear' (merginguriel 0.1.0) and by plugin 'copycat' "
            "(no distribution); it cannot be used until all but one are uninstalled or left out of "
            "MERGINGURIEL_PLUGINS") in other.output.splitlines()
    assert "linear" not in registry.names("strategy") and plugins.get_registry() is registry


# ------------------------------------------------------ 2. wrongly typed objects
class _NotAPlugin:
    name = "fake"
    description = "Has the right methods but not the right base class."

    def combine(self, logits, weights, params):
        return logits[0]

    def merge_chunk(self, chunk, statistics):
        return chunk.sources[0]


@pytest.mark.parametrize("hook, kind, expected", [
    ("register_weightings", "weighting", "Weighting"),
    ("register_strategies", "strategy", "MergeStrategy"),
    ("register_voting_methods", "voting_method", "VotingMethod"),
    ("register_evaluators", "evaluator", "Evaluator"),
    ("register_datasets", "dataset", "Dataset"),
])
def test_object_of_the_wrong_type_breaks_its_plugin(hook, kind, expected):
    def register(register):
        register(_NotAPlugin())

    registry = Registry.load(extra=[("duck", _plugin(**{hook: register}))])
    record = registry.record("duck")
    assert record.error == (
        f"plugin 'duck' registered {HERE}._NotAPlugin object 'fake' as a {kind}, but a {kind} must be an "
        f"instance of merginguriel_core.interfaces.{expected}"
    )
    assert record.provides == [] and "fake" not in registry.names(kind)
    assert "linear" in registry.names("strategy")


def test_wrongly_typed_voting_method_is_listed_broken_and_refused_before_inference(use_registry, runner):
    def register_voting_methods(register):
        register(_NotAPlugin())

    registry = use_registry(Registry.load(extra=[("duck", _plugin(register_voting_methods=register_voting_methods))]))
    line = next(l for l in run_cli(runner, "plugins").output.splitlines() if l.startswith("duck "))
    assert f"BROKEN: plugin 'duck' registered {HERE}._NotAPlugin object 'fake' as a voting_method" in line
    with pytest.raises(ConfigError, match=r"unknown --voting-method 'fake'; .*\(broken plugins: duck; see `mu plugins`\)"):
        registry.get("voting_method", "fake")


def test_registering_the_class_instead_of_an_instance_is_named():
    def register_strategies(register):
        register(_Halve)

    error = Registry.load(extra=[("classy", _plugin(register_strategies=register_strategies))]).record("classy").error
    assert error == (f"plugin 'classy' registered class {HERE}._Halve as a strategy, but a strategy must be an "
                     f"instance of merginguriel_core.interfaces.MergeStrategy; register an instance, _Halve()")


class _Nameless(VotingMethod):
    description = "No name."

    def combine(self, logits, weights, params):
        return logits[0]


@pytest.mark.parametrize("name, shown", [(None, "None"), ("", "''"), ("  ", "'  '"), (3, "3")])
def test_missing_empty_or_non_string_name_breaks_its_plugin(name, shown):
    def register_voting_methods(register):
        method = _Nameless()
        if name is not None:
            method.name = name
        register(method)

    registry = Registry.load(extra=[("nameless", _plugin(register_voting_methods=register_voting_methods))])
    named = f" {shown}" if isinstance(name, str) and name else ""
    assert registry.record("nameless").error == (
        f"plugin 'nameless' registered a voting_method ({HERE}._Nameless object{named}) without a name; "
        f"its `name` must be a non-empty string, got {shown}"
    )
    assert "majority" in registry.names("voting_method")


# -------------------------------------------------- 3. sys.exit and BaseException
def _exits(code):
    def load():
        sys.exit(code)

    return load


def test_sys_exit_while_importing_is_broken_others_work(monkeypatch):
    _with_candidates(monkeypatch, _Candidate("quitter", "mu_quitter.plugin", "mu-quitter", "0.1", _exits(3)))
    registry = Registry.load()
    assert registry.record("quitter").error == "SystemExit(3) while importing"
    assert "linear" in registry.names("strategy") and "uriel" in registry.names("weighting")


def test_base_exception_in_a_register_hook_is_broken_and_unregistered():
    class Fatal(BaseException):
        pass

    def register_strategies(register):
        register(_Halve())
        sys.exit("no strategies today")

    def register_voting_methods(register):
        raise Fatal("gone")

    registry = Registry.load(extra=[
        ("exits", _plugin(register_strategies=register_strategies)),
        ("fatal", _plugin(register_voting_methods=register_voting_methods)),
    ])
    assert registry.record("exits").error == "SystemExit('no strategies today') while calling register_strategies"
    assert registry.record("fatal").error == "Fatal('gone') while calling register_voting_methods"
    assert "halve_first" not in registry.names("strategy")
    assert not registry.manager.has_plugin("exits") and not registry.manager.has_plugin("fatal")
    assert "majority" in registry.names("voting_method")


def test_keyboard_interrupt_still_stops_loading():
    def register_strategies(register):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Registry.load(extra=[("ctrl_c", _plugin(register_strategies=register_strategies))])


def test_sys_exit_in_register_commands_is_broken_others_work():
    import typer

    def quits(app):
        @app.command("half-added")
        def half_added():
            pass

        sys.exit(4)

    def hello(app):
        @app.command("hello")
        def hello_command():
            print("hello")

    registry = Registry.load(extra=[("quits", _plugin(register_commands=quits)),
                                   ("hello", _plugin(register_commands=hello))])
    app = typer.Typer()
    add_plugin_commands(registry, app)
    assert [c.name for c in app.registered_commands] == ["hello"]
    assert registry.record("quits").error == "SystemExit(4) while calling register_commands"


def test_cli_starts_and_lists_plugins_that_exit(monkeypatch, use_registry, runner):
    """The real start-up (`_add_commands`) with plugins that exit at import and in register_commands."""
    import typer
    from typer.testing import CliRunner

    from merginguriel_cli import main

    def quits(app):
        sys.exit(5)

    _with_candidates(monkeypatch, _Candidate("quitter", "mu_quitter.plugin", "mu-quitter", "0.1", _exits(3)))
    use_registry(Registry.load(extra=[("quits", _plugin(register_commands=quits))]))
    monkeypatch.setattr(main, "app", typer.Typer(name="mu", cls=main._MuGroup, pretty_exceptions_enable=False,
                                                 add_completion=False, rich_markup_mode=None))
    main._add_commands()
    result = CliRunner().invoke(main.app, ["plugins"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(l.startswith("quitter ") and "mu-quitter 0.1" in l and "BROKEN: SystemExit(3) while importing" in l
               for l in lines)
    assert any(l.startswith("quits ") and "BROKEN: SystemExit(5) while calling register_commands" in l for l in lines)
    assert any(l.startswith("linear ") and "strategy: linear" in l for l in lines)
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(main.app, ["plugins", "--json"]).output)}
    assert rows["quitter"]["broken"] is True and rows["linear"]["broken"] is False


# ------------------------------------------------------- 4. damaged logits cache
def _nxn(runner, zoo_dir, sib_dir, out, cache, *extra):
    return run_cli(runner, "nxn", "--model", f"de-DE={zoo_dir / PATTERN.format(locale='de-DE')}",
                   "--model", f"nl-NL={zoo_dir / PATTERN.format(locale='nl-NL')}", "--data-dir", sib_dir,
                   "--output", out, "--cache-dir", cache, "--no-progress", "--device", "cpu", *extra)


def test_truncated_or_garbage_cache_files_are_named_removed_and_recomputed(runner, zoo_dir, sib_dir, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "nxn"
    assert _nxn(runner, zoo_dir, sib_dir, out, cache).exit_code == 0
    first = pd.read_csv(out / "evaluation_matrix.csv", index_col="source")
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 4
    originals = {f: np.load(f)["logits"] for f in files}
    truncated, garbage, wrong_shape, wrong_dtype = files
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(b"\x00not a zip at all\xff" * 10)
    np.savez(wrong_shape, logits=np.zeros((2, 3), dtype=np.float32))
    np.savez(wrong_dtype, logits=originals[wrong_dtype].astype(np.float64))

    result = _nxn(runner, zoo_dir, sib_dir, out, cache, "--overwrite")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out / "evaluation_matrix.csv", index_col="source").equals(first)
    details = json.loads((out / "nxn_details.json").read_text())
    assert details["forward_passes"] == 4 and details["cache_hits"] == 0
    notes = [l for l in result.output.splitlines() if l.startswith("Note: logits cache file")]
    assert len(notes) == 4
    for file in files:
        assert any(f"Note: logits cache file {file} is unreadable (" in n and "removed it, recomputing" in n for n in notes)
    assert any(f"{truncated} is unreadable (BadZipFile:" in n for n in notes)
    assert any(f"{wrong_shape} is unreadable (shape (2, 3), expected (21, 7))" in n for n in notes)
    assert any(f"{wrong_dtype} is unreadable (dtype float64, expected float32)" in n for n in notes)
    for file in files:  # cached again, valid
        np.testing.assert_array_equal(np.load(file)["logits"], originals[file])
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.name for f in files)  # no temporary files left
    again = _nxn(runner, zoo_dir, sib_dir, out, cache, "--overwrite")
    assert json.loads((out / "nxn_details.json").read_text())["cache_hits"] == 4 and "Note: logits" not in again.output


def test_cache_put_is_atomic_and_fsynced(tmp_path, monkeypatch):
    cache = LogitsCache(tmp_path / "c")
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", Path(src), Path(dst))),
                                                         real_replace(src, dst))[1])
    logits = np.arange(6, dtype=np.float64).reshape(3, 2)
    cache.put("k", logits)
    replaces = [e for e in events if e[0] == "replace"]
    assert len(replaces) == 1
    _, src, dst = replaces[0]
    assert dst == tmp_path / "c" / "k.npz" and src.parent == dst.parent and src.name.startswith(".k.")
    assert events[0][0] == "fsync"  # the temporary file is fsync'd before the rename
    stored = cache.get("k", (3, 2))
    assert stored.dtype == np.float32 and stored.tolist() == logits.tolist()

    # A write that fails half-way leaves the old entry intact and no temporary file.
    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cache.put("k", np.zeros((3, 2)))
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["k.npz"]
    assert cache.get("k", (3, 2)).tolist() == logits.tolist()


# ---------------------------------------------------- 5. batch size and max length
def test_check_batching_messages():
    check_batching(1, 2)
    for args, message in [((0, 128), "--batch-size must be at least 1, got 0"),
                          ((-4, 128), "--batch-size must be at least 1, got -4"),
                          ((8, 0), "--max-length must be at least 2, got 0"),
                          ((8, -1), "--max-length must be at least 2, got -1"),
                          ((True, 8), "--batch-size must be a whole number, got True"),
                          ((8, 2.5), "--max-length must be a whole number, got 2.5")]:
        with pytest.raises(ConfigError) as caught:
            check_batching(*args)
        assert str(caught.value) == message
    with pytest.raises(ConfigError, match=r"^--batch-size must be at least 1, got 0$"):
        Predictor(LogitsCache(None), torch.device("cpu"), batch_size=0)


def _command(name, zoo_dir, sib_dir, tmp_path):
    model = zoo_dir / PATTERN.format(locale="de-DE")
    common = ["--data-dir", sib_dir, "--cache-dir", tmp_path / "cache", "--device", "cpu"]
    return {
        "evaluate": ["evaluate", "--model", model, "--locale", "nl-NL", *common],
        "nxn": ["nxn", "--model", f"de-DE={model}", "--output", tmp_path / "out", "--no-progress", *common],
        "ensemble": ["ensemble", "--target-lang", "nl-NL", "--weighting", "manual", "--weights", "de-DE=1",
                     "--models", zoo_dir, "--no-progress", *common],
        "compare-ensembles": ["compare-ensembles", "--target-langs", "nl-NL", "--weighting", "manual",
                              "--weights", "de-DE=1", "--models", zoo_dir, "--output", tmp_path / "out",
                              "--no-progress", *common],
    }[name]


@pytest.mark.parametrize("command", ["evaluate", "nxn", "ensemble", "compare-ensembles"])
@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--batch-size", "-2", "--batch-size must be at least 1, got -2"),
    ("--max-length", "0", "--max-length must be at least 2, got 0"),
])
def test_bad_batching_is_one_line_before_any_model_loads(runner, zoo_dir, sib_dir, tmp_path, monkeypatch,
                                                         command, option, value, message):
    import merginguriel_core.statistics as statistics

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(statistics, "load_classifier", no_load)
    result = run_cli(runner, *_command(command, zoo_dir, sib_dir, tmp_path), option, value)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output.splitlines()
    assert "Traceback" not in result.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


# ------------------------------------------------ 6. table labels in model order
def _table(path: Path, labels=LABELS, locales=("de-DE", "nl-NL", "af-ZA")) -> Path:
    rng = np.random.default_rng(1)
    rows = ["text,label,locale,split"]
    for locale in locales:
        for label in labels:
            words = WORDS.get(label, "the data map").split()
            for _ in range(2):
                rows.append(f"the {' '.join(rng.permutation(words))},{label},{locale},test")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def unordered_table(monkeypatch):
    """The `table` dataset with ``fixed_label_order = False`` (its labels are a sorted set)."""
    from merginguriel_plugins.table import LocalTable

    monkeypatch.setattr(LocalTable, "fixed_label_order", False, raising=False)
    return LocalTable()


def _hand_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.numpy()


def _hand_accuracy(model_dir: Path, texts: list[str], labels: list[str]) -> float:
    label2id = {label: i for i, label in enumerate(model_labels(model_dir))}
    gold = np.array([label2id[label] for label in labels])
    return float(np.mean(_hand_logits(model_dir, texts).argmax(-1) == gold))


def test_evaluate_table_in_the_models_label_order(runner, zoo_dir, tmp_path, unordered_table):
    csv = _table(tmp_path / "sib.csv")
    model = zoo_dir / PATTERN.format(locale="de-DE")
    assert unordered_table.labels(str(csv)) == sorted(LABELS) != list(LABELS) == model_labels(model)
    result = run_cli(runner, "evaluate", "--model", model, "--dataset", "table", "--data-file", csv,
                     "--locale", "de-DE", "--no-cache", "--device", "cpu")
    assert result.exit_code == 0, result.output
    examples = unordered_table.load(str(csv), "de-DE", "test")
    assert json.loads(result.output)["accuracy"] == pytest.approx(_hand_accuracy(model, examples.texts, examples.labels))


def test_nxn_table_in_the_models_label_order(runner, zoo_dir, tmp_path, unordered_table):
    csv = _table(tmp_path / "sib.csv")
    out = tmp_path / "nxn"
    models = {loc: zoo_dir / PATTERN.format(locale=loc) for loc in ("de-DE", "nl-NL")}
    result = run_cli(runner, "nxn", *[a for loc, m in models.items() for a in ("--model", f"{loc}={m}")],
                     "--dataset", "table", "--data-file", csv, "--output", out, "--no-cache", "--no-progress",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    matrix = pd.read_csv(out / "evaluation_matrix.csv", index_col="source")
    for source, model in models.items():
        for target in models:
            examples = unordered_table.load(str(csv), target, "test")
            assert matrix.at[source, target] == pytest.approx(
                _hand_accuracy(model, examples.texts, examples.labels), abs=5e-5)


def test_models_with_different_label_orders_are_refused_for_a_table(runner, zoo_dir, tmp_path, unordered_table):
    csv = _table(tmp_path / "sib.csv")
    swapped = tmp_path / PATTERN.format(locale="nl-NL")
    shutil.copytree(zoo_dir / PATTERN.format(locale="nl-NL"), swapped)
    config = json.loads((swapped / "config.json").read_text())
    config["id2label"]["0"], config["id2label"]["1"] = config["id2label"]["1"], config["id2label"]["0"]
    (swapped / "config.json").write_text(json.dumps(config))
    first = zoo_dir / PATTERN.format(locale="de-DE")
    result = run_cli(runner, "nxn", "--model", f"de-DE={first}", "--model", f"nl-NL={swapped}", "--dataset", "table",
                     "--data-file", csv, "--output", tmp_path / "out", "--no-cache", "--no-progress")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: models {first} ({', '.join(LABELS)}) and {swapped} (travel, science/technology, "
        f"{', '.join(LABELS[2:])}) have different labels or label orders; dataset 'table' takes its label order from "
        f"the models, so they must share id2label"
    ]


def test_table_label_the_model_lacks_is_refused_naming_both_sets(runner, zoo_dir, tmp_path, unordered_table):
    csv = _table(tmp_path / "t.csv", labels=("sports", "cinema"))
    model = zoo_dir / PATTERN.format(locale="de-DE")
    result = run_cli(runner, "evaluate", "--model", model, "--dataset", "table", "--data-file", csv,
                     "--locale", "de-DE", "--no-cache")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: the data {csv} has labels cinema, sports but model {model} has {', '.join(LABELS)}; "
        f"not the model's: cinema"
    ]


def test_table_with_a_subset_of_the_models_labels_is_fine(zoo_dir, tmp_path, unordered_table):
    csv = _table(tmp_path / "t.csv", labels=("travel", "sports"))
    model = zoo_dir / PATTERN.format(locale="de-DE")
    assert label_space_for(unordered_table, str(csv), [model]) == list(LABELS)


def test_fixed_order_datasets_keep_their_own_order(zoo_dir, sib_dir, registry):
    sib = registry.get("dataset", "sib200")
    assert label_space_for(sib, str(sib_dir), [zoo_dir / PATTERN.format(locale="de-DE")]) == sib.labels(str(sib_dir))


def test_ensemble_on_a_table_in_the_models_label_order(runner, zoo_dir, tmp_path, unordered_table, registry):
    from merginguriel_core.ensemble import run_ensemble
    from merginguriel_core.plan import plan_ensemble

    csv = _table(tmp_path / "sib.csv")
    models = {loc: zoo_dir / PATTERN.format(locale=loc) for loc in ("de-DE", "nl-NL", "af-ZA")}
    sources = [("de-DE", 0.7), ("nl-NL", 0.3)]
    plan = plan_ensemble(target="af-ZA", sources=sources, models=models, method="uriel_logits", dataset=unordered_table,
                         data_file=csv, evaluators=["accuracy"], no_cache=True, device="cpu", registry=registry)
    result = run_ensemble(plan, Predictor(LogitsCache(None), torch.device("cpu")))
    examples = unordered_table.load(str(csv), "af-ZA", "test")
    combined = sum(w * _hand_logits(models[loc], examples.texts) for loc, w in sources)
    gold = gold_ids(examples, list(LABELS))
    assert result.label_space == list(LABELS)
    assert result.metrics["accuracy"] == pytest.approx(float(np.mean(combined.argmax(-1) == gold)))
    assert [result.label_space[p] for p in result.predictions] == [LABELS[p] for p in combined.argmax(-1)]

    cli = run_cli(runner, "ensemble", "--target-lang", "af-ZA", "--weighting", "manual",
                  "--weights", "de-DE=0.7,nl-NL=0.3", *[a for loc, m in models.items() for a in ("--model", f"{loc}={m}")],
                  "--dataset", "table", "--data-file", csv, "--voting-method", "uriel_logits", "--no-cache",
                  "--no-progress", "--device", "cpu")
    assert cli.exit_code == 0, cli.output
    report = json.loads(cli.output[cli.output.index("{"):])
    assert report["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_unwritable_cache_is_noted_once_and_the_logits_still_returned(tmp_path, monkeypatch, caplog):
    from merginguriel_core import notes

    monkeypatch.setattr(notes, "_said", set())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = LogitsCache(blocker / "cache")
    with caplog.at_level("WARNING", logger="merginguriel"):
        cache.put("a", np.zeros((2, 2)))
        cache.put("b", np.zeros((2, 2)))
    messages = [r.getMessage() for r in caplog.records if r.name == "merginguriel"]
    assert len(messages) == 1
    assert messages[0].startswith(f"cannot write the logits cache in {blocker / 'cache'} (")
    assert messages[0].endswith("logits are computed but not cached")
    assert cache.get("a") is None
