import json
import types

import pytest

from merginguriel_core import hookimpl, plugins
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import MergeStrategy
from merginguriel_core.plugins import Registry, _Candidate

from conftest import run_cli


class _Halve(MergeStrategy):
    name = "halve_first"
    description = "Half of the first source (a test strategy)."

    def merge_chunk(self, chunk, statistics):
        return chunk.sources[0] / 2


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def test_builtins_load_through_entry_points():
    registry = Registry.load()
    assert {"uriel", "average", "manual"} <= set(registry.names("weighting"))
    assert "linear" in registry.names("strategy")
    record = registry.record("linear")
    assert (record.distribution, record.module) == ("merginguriel", "merginguriel_plugins.linear")
    assert record.provides == [("strategy", "linear")]
    assert record.hooks == ["register_strategies"]


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError, match=r"unknown --strategy 'nope'; available: .*linear"):
        Registry.load().get("strategy", "nope")


def test_duplicate_name_is_refused_naming_both():
    def register_strategies(register):
        class Linear(_Halve):
            name = "linear"

        register(Linear())

    registry = Registry.load(extra=[("copycat", _plugin(register_strategies=register_strategies))])
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

    registry = Registry.load(extra=[("explodes", _plugin(register_strategies=register_strategies))])
    assert registry.record("explodes").error == "RuntimeError: boom"
    assert "linear" in registry.names("strategy")


def test_import_failure_listed_as_broken(monkeypatch, use_registry, runner):
    original = plugins._entry_point_candidates

    def failing_load():
        raise ImportError("No module named 'missing_dependency'")

    def candidates():
        return original() + [_Candidate("needs_missing", "mu_broken.plugin", "mu-broken", "0.3", failing_load)]

    monkeypatch.setattr(plugins, "_entry_point_candidates", candidates)
    use_registry(Registry.load())
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

    use_registry(Registry.load(extra=[("halver", _plugin(register_strategies=register_strategies))]))
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




def test_same_entry_point_name_twice_names_both(monkeypatch):
    original = plugins._entry_point_candidates

    def candidates():
        return original() + [_Candidate("linear", "other_linear", "other-dist", "1.0", lambda: types.SimpleNamespace())]

    monkeypatch.setattr(plugins, "_entry_point_candidates", candidates)
    registry = Registry.load()
    refused = [r for r in registry.records if r.name == "linear" and r.broken]
    assert len(refused) == 1
    assert refused[0].error == ("plugin name 'linear' of other-dist (other_linear) is already taken by "
                                "merginguriel (merginguriel_plugins.linear); the second was refused")
    assert "linear" in registry.names("strategy")


def test_misspelled_hook_is_broken():
    def register_strategys(register):
        register(_Halve())

    registry = Registry.load(extra=[("typo", _plugin(register_strategys=register_strategys))])
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

    registry = use_registry(Registry.load(extra=[
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


# ------------------------------------------------ hooks through pluggy, and tracing
def test_hooks_are_called_through_pluggy_one_plugin_at_a_time():
    calls = []

    @hookimpl(specname="register_strategies")  # pluggy's own option: only a real hook call honours it
    def strategies(register):
        calls.append("halver")
        register(_Halve())

    registry = Registry.load(extra=[("halver", types.SimpleNamespace(strategies=strategies))])
    assert registry.record("halver").hooks == ["register_strategies"]
    assert registry.record("halver").provides == [("strategy", "halve_first")]
    assert calls == ["halver"]  # called once, for its own plugin only
    again = []
    registry.hooks("halver").register_strategies(register=again.append)
    assert [type(s) for s in again] == [_Halve] and calls == ["halver", "halver"]
    assert registry.manager.has_plugin("halver") and registry.manager.has_plugin("linear")


def test_trace_to_a_stream_names_each_hook_call_its_plugin_and_what_it_did(monkeypatch, capsys):
    import io

    import typer

    from merginguriel_core.plugins import add_plugin_commands

    def register_strategies(register):
        register(_Halve())

    def explode(app):
        raise RuntimeError("no commands today")

    stream = io.StringIO()
    registry = Registry.load(extra=[("halver", _plugin(register_strategies=register_strategies)),
                                    ("explode", _plugin(register_commands=explode))], trace=stream)
    add_plugin_commands(registry, typer.Typer())
    lines = stream.getvalue().splitlines()
    assert "trace: register_strategies(register=<register strategy>) calls linear (merginguriel_plugins.linear)" in lines
    assert "trace: register_strategies from linear returned [], registered strategy 'linear'" in lines
    assert f"trace: register_strategies(register=<register strategy>) calls halver ({__name__})" in lines
    assert "trace: register_strategies from halver returned [], registered strategy 'halve_first'" in lines
    assert any(l.startswith("trace: register_commands(app=<typer") and l.endswith(f"calls explode ({__name__})")
               for l in lines)
    assert "trace: register_commands from explode raised RuntimeError('no commands today')" in lines
    assert registry.record("explode").error == "RuntimeError: no commands today"
    monkeypatch.delenv("MERGINGURIEL_TRACE_PLUGINS", raising=False)
    capsys.readouterr()
    Registry.load()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MERGINGURIEL_TRACE_PLUGINS", "1")  # tracing follows the variable unless told
    Registry.load(trace=False)
    assert capsys.readouterr().err == ""
    Registry.load()
    assert "trace: register_strategies(register=<register strategy>) calls linear" in capsys.readouterr().err


def _mu_subprocess(*args, **env):
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MERGINGURIEL_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "merginguriel_cli", *args], env=environment,
                          capture_output=True, text=True)


def test_trace_env_var_prints_every_hook_call_of_mu_plugins(registry):
    traced = _mu_subprocess("plugins", MERGINGURIEL_TRACE_PLUGINS="1")
    plain = _mu_subprocess("plugins")
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout  # the trace goes to standard error only
    trace = [l for l in traced.stderr.splitlines() if l.startswith("trace: ")]
    for record in registry.records:
        for hook in record.hooks:
            assert any(l.startswith(f"trace: {hook}(") and f"calls {record.name} (" in l for l in trace), (hook, record)
            assert any(l.startswith(f"trace: {hook} from {record.name} returned") for l in trace), (hook, record)
    assert any("register_strategies" in l and "linear" in l for l in trace)
    assert "trace:" not in plain.stderr


# ------------------------------------------------------- MERGINGURIEL_PLUGINS
def _third_party(monkeypatch):
    original = plugins._entry_point_candidates

    def strategy_plugin(name):
        strategy = type("Strategy", (_Halve,), {"name": name})
        return lambda: _plugin(register_strategies=lambda register: register(strategy()))

    monkeypatch.setattr(plugins, "_entry_point_candidates", lambda: original() + [
        _Candidate("halve_a", "mu_halve_a.plugin", "mu-halve-a", "1.0", strategy_plugin("halve_a")),
        _Candidate("halve_b", "mu_halve_b.plugin", "mu-halve-b", "2.0", strategy_plugin("halve_b")),
    ])


def test_only_narrows_third_party_plugins_but_keeps_what_the_defaults_need(monkeypatch):
    _third_party(monkeypatch)
    registry = Registry.load(only="halve_b")
    assert "halve_a" not in [r.name for r in registry.records]
    assert registry.get("strategy", "halve_b").name == "halve_b"
    for kind, name in [("weighting", "uriel"), ("strategy", "linear"), ("dataset", "sib200"),
                       ("voting_method", "uriel_logits"), ("evaluator", "accuracy"), ("evaluator", "macro_f1")]:
        assert registry.get(kind, name).name == name
    # Built-ins the defaults do not need are left out too, so a test loads what it names.
    assert "manual" not in registry.names("weighting") and "ties" not in registry.names("strategy")
    builtins = [r for r in registry.records if r.distribution == plugins.BUILTIN_DISTRIBUTION]
    assert builtins and all(r.pinned for r in builtins)
    assert not registry.record("halve_b").pinned


def test_only_can_name_a_builtin_the_defaults_do_not_need(registry):
    manual = registry.owners[("weighting", "manual")]
    narrowed = Registry.load(only=[manual])
    assert "manual" in narrowed.names("weighting") and not narrowed.record(manual).pinned
    assert "uriel" in narrowed.names("weighting") and "ties" not in narrowed.names("strategy")


def test_env_var_narrows_what_mu_loads_but_not_an_explicit_registry(monkeypatch):
    from merginguriel_core.plugins import load_plugins

    _third_party(monkeypatch)
    monkeypatch.setenv("MERGINGURIEL_PLUGINS", "halve_a")
    loaded = load_plugins()
    assert "halve_a" in loaded.names("strategy") and "halve_b" not in loaded.names("strategy")
    assert "linear" in loaded.names("strategy")
    explicit = Registry.load()
    assert {"halve_a", "halve_b", "ties"} <= set(explicit.names("strategy"))


def test_a_name_no_plugin_has_is_noted(monkeypatch, caplog):
    from merginguriel_core import notes

    monkeypatch.setattr(notes, "_said", set())
    with caplog.at_level("WARNING", logger="merginguriel"):
        registry = Registry.load(only="lineer")
    assert "linear" in registry.names("strategy")
    [message] = [r.getMessage() for r in caplog.records if "lineer" in r.getMessage()]
    assert message.startswith("MERGINGURIEL_PLUGINS names 'lineer', which no installed plugin is called; installed: ")
    caplog.clear()
    with caplog.at_level("WARNING", logger="merginguriel"):
        narrowed = Registry.load(extra=[("halver", _plugin(register_strategies=lambda register: register(_Halve())))],
                                 only="halver")
    assert "halve_first" in narrowed.names("strategy") and not caplog.records  # an extra plugin is known too


def test_every_cli_default_is_one_the_rule_keeps():
    """What a `mu` option defaults to must be in DEFAULT_NEEDS, or narrowing could break the default."""
    import typer

    from merginguriel_cli.main import app

    options = {"--weighting": "weighting", "--strategy": "strategy", "--dataset": "dataset",
               "--voting-method": "voting_method"}
    seen = set()

    def walk(command):
        for sub in getattr(command, "commands", {}).values():
            walk(sub)
        for param in command.params:
            for opt in param.opts:
                if opt in options and isinstance(param.default, str):
                    assert plugins.needed_by_defaults(options[opt], param.default), (command.name, opt, param.default)
                    seen.add(opt)

    walk(typer.main.get_command(app))
    assert seen == set(options)


# ------------------------------------------------------------- the process's registry
def test_get_registry_is_the_installed_one(registry):
    from merginguriel_core.plugins import get_registry, set_registry, use_registry

    assert get_registry() is registry  # conftest installs the session's explicit registry
    other = Registry.load(only="linear")
    with use_registry(other) as installed:
        assert installed is other and get_registry() is other
    assert get_registry() is registry
    previous = set_registry(other)
    try:
        assert previous is registry and get_registry() is other
    finally:
        set_registry(previous)
    assert get_registry() is registry
