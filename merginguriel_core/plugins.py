"""The plugin manager: loads plugins from the ``merginguriel`` entry-point group.

Built-in plugins (this distribution's own) load first, then third-party ones sorted by
distribution and name, so conflicts resolve the same way every time. A plugin that fails
to import, raises (or calls ``sys.exit``) while registering, registers an object of the
wrong type or without a name, or provides a name another plugin already provides is
recorded as broken with its error; everything else keeps working. A name two plugins
provide is *ambiguous*: :meth:`Registry.get` refuses it, naming both, rather than silently
using the first.

``MERGINGURIEL_PLUGINS=a,b`` narrows loading to the named entry points (built-ins that are
not named are skipped too, so a test can load exactly what it needs).
"""

from __future__ import annotations

import importlib.metadata
import os
import types
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from merginguriel_core import hookspecs
from merginguriel_core.errors import ConfigError, PluginError
from merginguriel_core.notes import note_once

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
#: kind -> the name of the class in :mod:`merginguriel_core.interfaces` its objects must be.
KIND_CLASSES = {
    "weighting": "Weighting",
    "strategy": "MergeStrategy",
    "voting_method": "VotingMethod",
    "evaluator": "Evaluator",
    "dataset": "Dataset",
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
    #: (kind, name) -> every plugin that provides it, in load order, when more than one does.
    ambiguous: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        """Names usable for ``kind``, sorted. An ambiguous name (several plugins provide it) is
        left out, so listing every strategy or evaluator keeps working; a note says so once."""
        for (of_kind, name), providers in self.ambiguous.items():
            if of_kind == kind:
                note_once(f"{kind} {name!r} is provided by {' and by '.join(_describe(self, p) for p in providers)}; "
                          f"it cannot be used until all but one are uninstalled or left out of MERGINGURIEL_PLUGINS",
                          key=f"ambiguous {kind} {name} {providers}")
        return sorted(name for name in self.objects[kind] if (kind, name) not in self.ambiguous)

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` for ``kind``, or a one-line error listing what exists.

        A name that several plugins provide is refused (:class:`PluginError` naming them all
        and how to resolve it) rather than silently resolved to the first.
        """
        providers = self.ambiguous.get((kind, name))
        if providers:
            raise PluginError(
                f"{KIND_OPTIONS[kind]} {name!r} is ambiguous: {kind} {name!r} is provided by "
                f"{' and by '.join(_describe(self, p) for p in providers)}; uninstall all but one of them, or set "
                f"MERGINGURIEL_PLUGINS to the comma-separated plugins to load, leaving out all but one of "
                f"{', '.join(map(repr, providers))}"
            )
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
    except BaseException as exc:  # a broken plugin must not break the others, not even by sys.exit
        _reraise_interrupt(exc)
        record.error = _failure(exc, "importing")
        return
    try:
        registry.manager.register(plugin, name=candidate.name)
    except BaseException as exc:
        _reraise_interrupt(exc)
        _unregister(registry, candidate.name)  # pluggy may have added some of its hooks already
        record.error = _failure(exc, "registering its hooks")
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
    provided: list[tuple[str, Any]] = []
    phase = "registering"
    try:
        for kind, hook_name in KINDS.items():
            phase = f"calling {hook_name}"
            for impl in getattr(registry.manager.hook, hook_name).get_hookimpls():
                if impl.plugin_name == candidate.name:
                    impl.function(register=lambda obj, kind=kind: provided.append((kind, obj)))
        phase = "checking what it registered"
        named = _check_provided(candidate.name, provided)
        _check_conflicts(registry, candidate, named)
    except BaseException as exc:
        _reraise_interrupt(exc)
        _unregister(registry, candidate.name)
        record.error = _failure(exc, phase)
        return
    for kind, name, obj in named:
        registry.objects[kind][name] = obj
        registry.owners[(kind, name)] = candidate.name
        record.provides.append((kind, name))


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C stops loading; every other exception (``SystemExit`` included) only breaks its plugin."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


def _failure(exc: BaseException, phase: str) -> str:
    """The one-line error recorded for a plugin that raised ``exc`` while ``phase``.

    ``RuntimeError: boom`` for an ordinary exception (a :class:`PluginError` is its message
    alone); ``SystemExit(3) while importing`` for the rest (``sys.exit``, ``GeneratorExit``).
    """
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, Exception):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip()
    return f"{exc!r} while {phase}"


def _unregister(registry: Registry, plugin_name: str) -> None:
    """Remove ``plugin_name``'s hooks from the manager, if any were added."""
    if registry.manager.has_plugin(plugin_name):
        registry.manager.unregister(name=plugin_name)


def _describe(registry: Registry, plugin_name: str) -> str:
    record = registry.record(plugin_name)
    dist = f"{record.distribution} {record.version}" if record.distribution else "no distribution"
    return f"plugin {plugin_name!r} ({dist})"


def _object_name(obj: Any) -> str:
    """How an error names a registered object: ``class pkg.mod.Halve``, ``pkg.mod.Halve object 'halve'``."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"function {getattr(obj, '__module__', None) or '?'}.{obj.__qualname__}"
    name = getattr(obj, "name", None)
    named = f" {name!r}" if isinstance(name, str) and name else ""
    return f"{type(obj).__module__}.{type(obj).__qualname__} object{named}"


def _check_provided(plugin_name: str, provided: list[tuple[str, Any]]) -> list[tuple[str, str, Any]]:
    """``(kind, name, object)`` for each registered object, after checking it is an instance of
    its kind's class in :mod:`merginguriel_core.interfaces` with a non-empty string ``name``."""
    from merginguriel_core import interfaces  # imported here: torch is heavy, and only plugins need it

    checked = []
    for kind, obj in provided:
        expected = getattr(interfaces, KIND_CLASSES[kind])
        if not isinstance(obj, expected):
            is_subclass = isinstance(obj, type) and issubclass(obj, expected)
            hint = f"; register an instance, {obj.__qualname__}()" if is_subclass else ""
            raise PluginError(
                f"plugin {plugin_name!r} registered {_object_name(obj)} as a {kind}, but a {kind} must be an "
                f"instance of merginguriel_core.interfaces.{expected.__name__}{hint}"
            )
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise PluginError(
                f"plugin {plugin_name!r} registered a {kind} ({_object_name(obj)}) without a name; "
                f"its `name` must be a non-empty string, got {name!r}"
            )
        checked.append((kind, name, obj))
    return checked


def _check_conflicts(registry: Registry, candidate: _Candidate, provided: list[tuple[str, str, Any]]) -> None:
    """Refuse a plugin that registers a name twice, or a name another plugin already provides.

    In the second case every clashing name becomes *ambiguous* (:attr:`Registry.ambiguous`):
    the first plugin keeps it listed, but :meth:`Registry.get` refuses it, naming both.
    """
    seen: set[tuple[str, str]] = set()
    for kind, name, _ in provided:
        if (kind, name) in seen:
            raise PluginError(f"plugin {candidate.name!r} registers {kind} {name!r} twice")
        seen.add((kind, name))
    owners = registry.owners
    clashes = [(kind, name, owners[(kind, name)]) for kind, name, _ in provided if (kind, name) in owners]
    if not clashes:
        return
    for kind, name, owner in clashes:
        registry.ambiguous.setdefault((kind, name), [owner]).append(candidate.name)
    kind, name, owner = clashes[0]
    more = f" (and {len(clashes) - 1} more names)" if len(clashes) > 1 else ""
    raise PluginError(
        f"{kind} {name!r} from {_describe(registry, candidate.name)} conflicts with {kind} {name!r} from "
        f"{_describe(registry, owner)}{more}; the second was refused, and {KIND_OPTIONS[kind]} {name!r} is refused "
        f"as ambiguous until one is uninstalled or left out of MERGINGURIEL_PLUGINS"
    )


def add_plugin_commands(registry: Registry, app: Any) -> None:
    """Call each plugin's ``register_commands`` on its own, after the built-in commands.

    A plugin that raises (or calls ``sys.exit``), or adds a command whose name is already
    taken, is marked broken and its commands are removed; the other plugins and the
    built-ins keep working.
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
        except BaseException as exc:
            _reraise_interrupt(exc)
            app.registered_commands[:], app.registered_groups[:] = before
            record.error = _failure(exc, "calling register_commands")


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
