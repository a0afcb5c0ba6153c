"""The plugin manager: loads plugins from the ``merginguriel`` entry-point group.

Built-in plugins (this distribution's own) load first, then third-party ones sorted by
distribution and name, so conflicts resolve the same way every time. A plugin that fails
to import, raises while registering, or provides a name another plugin already provides
is recorded as broken with its error; everything else keeps working.

``MERGINGURIEL_PLUGINS=a,b`` narrows loading to the named entry points (built-ins that are
not named are skipped too, so a test can load exactly what it needs).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from merginguriel_core import hookspecs
from merginguriel_core.errors import ConfigError, PluginError

#: kind -> hook name. A kind is what ``mu plugins`` prints before the provided names.
KINDS: dict[str, str] = {
    "weighting": "register_weightings",
    "strategy": "register_strategies",
    "voting_method": "register_voting_methods",
    "evaluator": "register_evaluators",
    "dataset": "register_datasets",
}
#: kind -> the CLI option that selects it, for error messages.
KIND_OPTIONS = {
    "weighting": "--weighting",
    "strategy": "--strategy",
    "voting_method": "--voting-method",
    "evaluator": "--evaluators",
    "dataset": "--dataset",
}
BUILTIN_DISTRIBUTION = "merginguriel"


@dataclass
class PluginRecord:
    """One loaded (or broken) plugin as ``mu plugins`` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    provides: list[tuple[str, str]] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "provides": [{"kind": kind, "name": name} for kind, name in self.provides],
            "hooks": self.hooks,
            "broken": self.broken,
            "error": self.error,
        }


@dataclass
class Registry:
    """Everything the loaded plugins provide, by kind and name."""

    manager: pluggy.PluginManager
    records: list[PluginRecord]
    objects: dict[str, dict[str, Any]]
    owners: dict[tuple[str, str], str]

    def names(self, kind: str) -> list[str]:
        """Names provided for ``kind``, sorted."""
        return sorted(self.objects[kind])

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` for ``kind``, or a one-line error listing what exists."""
        found = self.objects[kind].get(name)
        if found is not None:
            return found
        option = KIND_OPTIONS[kind]
        allowed = ", ".join(self.names(kind)) or "none installed"
        broken = [r.name for r in self.records if r.broken]
        hint = f" (broken plugins: {', '.join(broken)}; see `mu plugins`)" if broken else ""
        raise ConfigError(f"unknown {option} {name!r}; available: {allowed}{hint}")

    def record(self, plugin_name: str) -> PluginRecord:
        return next(r for r in self.records if r.name == plugin_name)


@dataclass(frozen=True)
class _Candidate:
    name: str
    module: str
    distribution: str | None
    version: str | None
    load: Any  # () -> plugin object


def _entry_point_candidates() -> list[_Candidate]:
    seen: set[tuple[str, str]] = set()
    candidates = []
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(ep, "dist", None)
        candidates.append(
            _Candidate(
                name=ep.name,
                module=ep.value,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                load=ep.load,
            )
        )
    candidates.sort(key=lambda c: (c.distribution != BUILTIN_DISTRIBUTION, c.distribution or "", c.name))
    return candidates


def _wanted(candidates: list[_Candidate]) -> list[_Candidate]:
    only = os.environ.get("MERGINGURIEL_PLUGINS")
    if not only:
        return candidates
    names = {n.strip() for n in only.split(",") if n.strip()}
    return [c for c in candidates if c.name in names]


def load_plugins(extra: Iterable[tuple[str, Any]] = ()) -> Registry:
    """Load every entry-point plugin plus ``extra`` ``(name, plugin_object)`` pairs.

    ``extra`` plugins load last, as third-party ones would; tests use it to register a
    plugin object without installing a distribution.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry(manager, [], {kind: {} for kind in KINDS}, {})

    candidates = _wanted(_entry_point_candidates())
    candidates += [
        _Candidate(name, getattr(obj, "__name__", type(obj).__name__), None, None, (lambda o=obj: o))
        for name, obj in extra
    ]
    for candidate in candidates:
        _load_one(registry, candidate)
    return registry


def _load_one(registry: Registry, candidate: _Candidate) -> None:
    earlier = next((r for r in registry.records if r.name == candidate.name), None)
    record = PluginRecord(candidate.name, candidate.module, candidate.distribution, candidate.version)
    registry.records.append(record)
    if earlier is not None:
        record.error = (
            f"plugin name {candidate.name!r} of {candidate.distribution or 'no distribution'} ({candidate.module}) "
            f"is already taken by {earlier.distribution or 'no distribution'} ({earlier.module}); the second was refused"
        )
        return
    try:
        plugin = candidate.load()
        registry.manager.register(plugin, name=candidate.name)
    except Exception as exc:  # a broken plugin must not break the others
        record.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return
    unknown = sorted(
        name for name in dir(registry.manager.hook)
        if not name.startswith("_")
        and not getattr(registry.manager.hook, name).has_spec()
        and any(impl.plugin_name == candidate.name for impl in getattr(registry.manager.hook, name).get_hookimpls())
    )
    if unknown:
        registry.manager.unregister(name=candidate.name)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        record.error = f"implements unknown hook {unknown[0]}; known hooks: {known}"
        return
    record.hooks = sorted(
        hook.name for hook in registry.manager.get_hookcallers(plugin) or () if hook.name.startswith("register_")
    )
    provided: list[tuple[str, str, Any]] = []
    try:
        for kind, hook_name in KINDS.items():
            for impl in getattr(registry.manager.hook, hook_name).get_hookimpls():
                if impl.plugin_name == candidate.name:
                    impl.function(register=lambda obj, kind=kind: provided.append((kind, obj.name, obj)))
        _check_conflicts(registry, candidate, provided)
    except Exception as exc:
        registry.manager.unregister(name=candidate.name)
        record.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PluginError) else str(exc)
        return
    for kind, name, obj in provided:
        registry.objects[kind][name] = obj
        registry.owners[(kind, name)] = candidate.name
        record.provides.append((kind, name))


def _describe(registry: Registry, plugin_name: str) -> str:
    record = registry.record(plugin_name)
    dist = f"{record.distribution} {record.version}" if record.distribution else "no distribution"
    return f"plugin {plugin_name!r} ({dist})"


def _check_conflicts(registry: Registry, candidate: _Candidate, provided: list[tuple[str, str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for kind, name, _ in provided:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {candidate.name!r} registered a {kind} without a name")
        owner = registry.owners.get((kind, name))
        if owner is not None:
            raise PluginError(
                f"{kind} {name!r} from {_describe(registry, candidate.name)} conflicts with "
                f"{kind} {name!r} from {_describe(registry, owner)}; the second was refused"
            )
        if (kind, name) in seen:
            raise PluginError(f"plugin {candidate.name!r} registers {kind} {name!r} twice")
        seen.add((kind, name))


def add_plugin_commands(registry: Registry, app: Any) -> None:
    """Call each plugin's ``register_commands`` on its own, after the built-in commands.

    A plugin that raises, or adds a command whose name is already taken, is marked broken
    and its commands are removed; the other plugins and the built-ins keep working.
    """
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        record = registry.record(impl.plugin_name)
        before = list(app.registered_commands), list(app.registered_groups)
        taken = {_command_name(c) for c in before[0]} | {g.name for g in before[1] if g.name}
        try:
            impl.function(app=app)
            added = [c for c in app.registered_commands if c not in before[0]]
            clash = sorted({_command_name(c) for c in added} & taken)
            if clash:
                raise PluginError(f"command {clash[0]!r} is already provided; the plugin's commands were refused")
            record.provides += [("command", _command_name(c)) for c in added]
        except Exception as exc:
            app.registered_commands[:], app.registered_groups[:] = before
            record.error = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"


def _command_name(command: Any) -> str:
    return command.name or command.callback.__name__.replace("_", "-")


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded once (idempotent)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_plugins()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry, so the next :func:`get_registry` loads again."""
    global _REGISTRY
    _REGISTRY = None
