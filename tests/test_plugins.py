import json
import types

import pytest

from merginguriel_core import hookimpl, plugins
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import MergeStrategy
from merginguriel_core.plugins import _Candidate, load_plugins

from conftest import run_cli


class _Halve(MergeStrategy):
    name = "halve_first"
    description = "Half of the first source (a test strategy)."

    def merge_chunk(self, chunk, statistics):
        return chunk.sources[0] / 2


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


@pytest.fixture
def use_registry():
    """Install a registry for the CLI, always restoring the default afterwards."""

    def install(registry):
        plugins._REGISTRY = registry
        return registry

    try:
        yield install
    finally:
        plugins.reset_registry()


def test_builtins_load_through_entry_points():
    registry = load_plugins()
    assert {"uriel", "average", "manual"} <= set(registry.names("weighting"))
    assert "linear" in registry.names("strategy")
    record = registry.record("linear")
    assert (record.distribution, record.module) == ("merginguriel", "merginguriel_plugins.linear")
    assert record.provides == [("strategy", "linear")]
    assert record.hooks == ["register_strategies"]


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError, match=r"unknown --strategy 'nope'; available: .*linear"):
        load_plugins().get("strategy", "nope")


def test_duplicate_name_is_refused_naming_both():
    def register_strategies(register):
        class Linear(_Halve):
            name = "linear"

        register(Linear())

    registry = load_plugins(extra=[("copycat", _plugin(register_strategies=register_strategies))])
    record = registry.record("copycat")
    assert record.broken
    assert "strategy 'linear' from plugin 'copycat'" in record.error
    assert "plugin 'linear' (merginguriel 0.1.0)" in record.error
    # The original keeps working.
    assert registry.owners[("strategy", "linear")] == "linear"
    assert registry.record("copycat").provides == []


def test_plugin_raising_in_hook_is_broken_others_work():
    def register_strategies(register):
        raise RuntimeError("boom")

    registry = load_plugins(extra=[("explodes", _plugin(register_strategies=register_strategies))])
    assert registry.record("explodes").error == "RuntimeError: boom"
    assert "linear" in registry.names("strategy")


def test_import_failure_listed_as_broken(monkeypatch, use_registry, runner):
    original = plugins._entry_point_candidates

    def failing_load():
        raise ImportError("No module named 'missing_dependency'")

    def candidates():
        return original() + [_Candidate("needs_missing", "mu_broken.plugin", "mu-broken", "0.3", failing_load)]

    monkeypatch.setattr(plugins, "_entry_point_candidates", candidates)
    use_registry(load_plugins())
    result = run_cli(runner, "plugins")
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith("needs_missing"))
    assert "mu-broken 0.3" in line and "BROKEN: ImportError: No module named 'missing_dependency'" in line
    assert any(l.startswith("linear") and "strategy: linear" in l for l in result.output.splitlines())
    data = json.loads(run_cli(runner, "plugins", "--json").output)
    broken = next(row for row in data if row["name"] == "needs_missing")
    assert broken["broken"] is True and broken["distribution"] == "mu-broken"


def test_extra_strategy_is_usable_from_merge(use_registry, runner, zoo_dir, tmp_path):
    from safetensors.torch import load_file

    def register_strategies(register):
        register(_Halve())

    use_registry(load_plugins(extra=[("halver", _plugin(register_strategies=register_strategies))]))
    out = tmp_path / "out"
    result = run_cli(
        runner, "merge", "--weighting", "manual", "--weights", "de-DE=1", "--strategy", "halve_first",
        "--models", zoo_dir, "--output", out, "--no-progress",
    )
    assert result.exit_code == 0, result.output
    merged = load_file(out / "model.safetensors")
    source = load_file(zoo_dir / "xlm-roberta-base_massive_k_de-DE" / "model.safetensors")
    name = "classifier.out_proj.weight"
    assert (merged[name] == source[name] / 2).all()


def test_plugins_json_lists_params_and_provides(runner):
    data = json.loads(run_cli(runner, "plugins", "--json").output)
    linear = next(row for row in data if row["name"] == "linear")
    assert linear["provides"][0]["kind"] == "strategy"
    assert linear["provides"][0]["name"] == "linear"
    assert linear["version"] == "0.1.0" and linear["broken"] is False


def test_env_var_narrows_loading(monkeypatch):
    monkeypatch.setenv("MERGINGURIEL_PLUGINS", "linear")
    registry = load_plugins()
    assert [r.name for r in registry.records] == ["linear"]
    assert registry.names("weighting") == []


def test_same_entry_point_name_twice_names_both(monkeypatch):
    original = plugins._entry_point_candidates

    def candidates():
        return original() + [_Candidate("linear", "other_linear", "other-dist", "1.0", lambda: types.SimpleNamespace())]

    monkeypatch.setattr(plugins, "_entry_point_candidates", candidates)
    registry = load_plugins()
    refused = [r for r in registry.records if r.name == "linear" and r.broken]
    assert len(refused) == 1
    assert refused[0].error == ("plugin name 'linear' of other-dist (other_linear) is already taken by "
                                "merginguriel (merginguriel_plugins.linear); the second was refused")
    assert "linear" in registry.names("strategy")


def test_misspelled_hook_is_broken():
    def register_strategys(register):
        register(_Halve())

    registry = load_plugins(extra=[("typo", _plugin(register_strategys=register_strategys))])
    assert registry.record("typo").error.startswith("implements unknown hook register_strategys; known hooks:")


def test_plugin_commands_cannot_replace_builtins_or_break_others(use_registry, runner):
    import typer as typer_module

    from merginguriel_core.plugins import add_plugin_commands

    def shadow(app):
        @app.command("merge")
        def merge():
            print("hijacked")

    def explode(app):
        raise RuntimeError("no commands today")

    def hello(app):
        @app.command("hello")
        def hello_command():
            print("hello from a plugin")

    registry = use_registry(load_plugins(extra=[
        ("shadow", _plugin(register_commands=shadow)),
        ("explode", _plugin(register_commands=explode)),
        ("hello", _plugin(register_commands=hello)),
    ]))
    app = typer_module.Typer()
    app.command("merge")(lambda: None)
    add_plugin_commands(registry, app)
    names = [c.name for c in app.registered_commands]
    assert names == ["merge", "hello"]
    assert registry.record("shadow").error == "command 'merge' is already provided; the plugin's commands were refused"
    assert registry.record("explode").error == "RuntimeError: no commands today"
    assert registry.record("hello").provides == [("command", "hello")]
