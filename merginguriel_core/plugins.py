"""The plugin manager: loads plugins from the ``merginguriel`` entry-point group into a
:class:`Registry`, the one object the CLI (or a Python caller) resolves names with.

Loading
    Built-in plugins (this distribution's own) load first, then third-party ones sorted by
    distribution and name, so conflicts resolve the same way every time, then any ``extra``
    plugin objects the caller passes. A plugin that fails to import, raises (or calls
    ``sys.exit``) while registering, registers an object of the wrong type or without a
    name, or provides a name another plugin already provides is recorded as broken with its
    error; everything else keeps working. A name two plugins provide is *ambiguous*:
    :meth:`Registry.get` refuses it, naming both, rather than silently using the first.

Hook calls
    Every hook is called through pluggy's hook caller, never by hand. Each plugin is
    registered in the registry's :attr:`Registry.manager` (every plugin that loaded) and in
    a pluggy manager of its own (:meth:`Registry.hooks`), whose hook caller reaches that
    plugin's implementations only: each ``register_*`` call (and ``register_commands``,
    from :func:`add_plugin_commands`) is one real pluggy hook call per plugin, so what it
    registers and any exception it raises belong to that plugin alone. (pluggy's
    ``subset_hook_caller`` would need every plugin object to be hashable; a per-plugin
    manager does not.)

``MERGINGURIEL_TRACE_PLUGINS=1``
    Prints every hook call to standard error through pluggy's ``add_hookcall_monitoring``:
    the hook, the plugins whose implementations it calls, its arguments summarised, and what
    it returned, raised or registered::

        trace: register_strategies(register=<register strategy>) calls linear (merginguriel_plugins.linear)
        trace: register_strategies from linear returned [], registered strategy 'linear'

``MERGINGURIEL_PLUGINS=a,b`` (or ``only=`` of :meth:`Registry.load`)
    Narrows which entry points load, by entry-point name. Third-party plugins not named are
    left out. Built-in plugins not named are left out too, except those that provide
    something the defaults of ``mu`` select (:data:`DEFAULT_NEEDS`: weighting ``uriel``,
    strategy ``linear``, dataset ``sib200``, voting method ``uriel_logits``, every
    evaluator): those always load, whatever their entry-point name. A built-in is judged by
    what it registers, so it is imported and registered before being left out; one that is
    broken stays listed, since it may be one the defaults need. ``extra`` plugins always
    load. A name that matches no entry point is noted.

The registry
    :meth:`Registry.load` builds one explicitly (reading no environment variable but the
    tracing switch); :func:`load_plugins` is what ``mu`` loads (``only`` from
    ``MERGINGURIEL_PLUGINS``). :func:`get_registry` is the process's registry for the CLI:
    the one installed with :func:`set_registry` or :func:`use_registry`, else
    :func:`load_plugins` once. Core code never calls it: the caller resolves names to
    objects and passes them in.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, TextIO

import pluggy

from merginguriel_core import hookspecs
from merginguriel_core.errors import ConfigError, PluginError, first_line
from merginguriel_core.notes import note_once

#: kind -> hook name. A kind is what ``mu plugins`` prints before the provided names.
KINDS: dict[str, str] = {
    "weighting": "register_weightings",
    "strategy": "register_strategies",
    "voting_method": "register_voting_methods",
    "evaluator": "register_evaluators",
    "dataset": "register_datasets",
    "executor": "register_executors",
}
#: kind -> the CLI option that selects it, for error messages.
KIND_OPTIONS = {
    "weighting": "--weighting",
    "strategy": "--strategy",
    "voting_method": "--voting-method",
    "evaluator": "--evaluators",
    "dataset": "--dataset",
    "executor": "--executor",
}
#: kind -> the name of the class in :mod:`merginguriel_core.interfaces` its objects must be.
KIND_CLASSES = {
    "weighting": "Weighting",
    "strategy": "MergeStrategy",
    "voting_method": "VotingMethod",
    "evaluator": "Evaluator",
    "dataset": "Dataset",
    "executor": "Executor",
}
BUILTIN_DISTRIBUTION = "merginguriel"
#: What the defaults of ``mu`` select, as ``(kind, name)``; ``(kind, "*")`` is every object of
#: the kind (``--evaluators`` defaults to all). A built-in plugin that provides one of these
#: always loads, whatever ``MERGINGURIEL_PLUGINS`` says (see the module docstring).
DEFAULT_NEEDS: frozenset[tuple[str, str]] = frozenset({
    ("weighting", "uriel"),
    ("strategy", "linear"),
    ("dataset", "sib200"),
    ("voting_method", "uriel_logits"),
    ("evaluator", "*"),
    ("executor", "local"),
})
#: The environment variables read here: the plugins to load, and the hook-call tracing switch.
PLUGINS_ENV = "MERGINGURIEL_PLUGINS"
TRACE_ENV = "MERGINGURIEL_TRACE_PLUGINS"


def needed_by_defaults(kind: str, name: str) -> bool:
    """Whether ``kind`` ``name`` is something the defaults of ``mu`` select (:data:`DEFAULT_NEEDS`)."""
    return (kind, name) in DEFAULT_NEEDS or (kind, "*") in DEFAULT_NEEDS


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

    @property
    def pinned(self) -> bool:
        """A built-in that provides something the defaults select: ``MERGINGURIEL_PLUGINS`` cannot leave it out."""
        return self.distribution == BUILTIN_DISTRIBUTION and any(needed_by_defaults(k, n) for k, n in self.provides)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "provides": [{"kind": kind, "name": name} for kind, name in self.provides],
            "hooks": self.hooks,
            "pinned": self.pinned,
            "broken": self.broken,
            "error": self.error,
        }


@dataclass
class Registry:
    """Everything the loaded plugins provide, by kind and name.

    Build one with :meth:`Registry.load`; the CLI uses :func:`get_registry`.
    """

    #: Every plugin that loaded (broken ones are unregistered).
    manager: pluggy.PluginManager
    records: list[PluginRecord]
    objects: dict[str, dict[str, Any]]
    owners: dict[tuple[str, str], str]
    #: (kind, name) -> every plugin that provides it, in load order, when more than one does.
    ambiguous: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: plugin name -> a pluggy manager holding that plugin alone, whose hook caller calls only it.
    plugin_managers: dict[str, pluggy.PluginManager] = field(default_factory=dict)

    @classmethod
    def load(cls, extra: Iterable[tuple[str, Any]] = (), *, only: str | Iterable[str] | None = None,
             trace: bool | TextIO | None = None) -> Registry:
        """Load the entry-point plugins, then ``extra`` ``(name, plugin_object)`` pairs.

        ``only``: entry-point names to load (a list, or ``"a,b"``), narrowed as the module
        docstring says (built-ins the defaults need always load); ``None`` loads every one.
        ``extra`` plugins always load, last, as third-party ones would; tests use them to
        register a plugin object without installing a distribution. ``trace``: print every
        hook call to standard error (``True``) or to a stream; ``None`` follows
        ``MERGINGURIEL_TRACE_PLUGINS``. Nothing else is read from the environment.
        """
        if trace is None:
            trace = _trace_from_environment()
        manager = _new_manager(trace)
        registry = cls(manager, [], {kind: {} for kind in KINDS}, {})
        extras = [
            _Candidate(name, getattr(obj, "__name__", type(obj).__name__), None, None, (lambda o=obj: o))
            for name, obj in extra
        ]
        wanted = _narrow(_entry_point_candidates(), _names(only), also_known={c.name for c in extras})
        wanted += [(candidate, False) for candidate in extras]
        for candidate, only_if_default in wanted:
            _load_one(registry, candidate, trace, only_if_default)
        return registry

    def hooks(self, plugin_name: str) -> pluggy.HookRelay:
        """The hook relay of ``plugin_name`` alone: ``registry.hooks("linear").register_strategies(register=f)``
        calls that plugin's implementation through pluggy (and tracing), no other plugin's."""
        return self.plugin_managers[plugin_name].hook

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
                f"{' and by '.join(_describe(self, p) for p in providers)}; {_resolution(self, providers)}"
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


def load_plugins(extra: Iterable[tuple[str, Any]] = (), *, only: str | Iterable[str] | None = None,
                 trace: bool | TextIO | None = None) -> Registry:
    """What ``mu`` loads: :meth:`Registry.load`, with ``only`` from ``MERGINGURIEL_PLUGINS``
    when not given."""
    if only is None:
        only = os.environ.get(PLUGINS_ENV) or None
    return Registry.load(extra, only=only, trace=trace)


def _resolution(registry: Registry, providers: list[str]) -> str:
    """How to resolve an ambiguity between ``providers``: leave out all but one, or, when a
    built-in that always loads is one of them, every other."""
    pinned = [p for p in providers if registry.record(p).pinned]
    others = [p for p in providers if p not in pinned]
    if pinned and others:
        named = ", ".join(map(repr, others))
        return (f"uninstall {named}, or set MERGINGURIEL_PLUGINS to the comma-separated plugins to load, leaving out "
                f"{named} (the built-in {pinned[0]!r} provides a default of `mu`, so it always loads)")
    return (f"uninstall all but one of them, or set MERGINGURIEL_PLUGINS to the comma-separated plugins to load, "
            f"leaving out all but one of {', '.join(map(repr, providers))}")


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


def _names(only: str | Iterable[str] | None) -> set[str] | None:
    if only is None:
        return None
    parts = only.split(",") if isinstance(only, str) else only
    return {part.strip() for part in parts if part.strip()}


def _narrow(candidates: list[_Candidate], only: set[str] | None,
            also_known: set[str] = frozenset()) -> list[tuple[_Candidate, bool]]:
    """``(candidate, only_if_default)`` for each entry point to load: with ``only``, the named
    ones, and the built-ins not named, to be kept only if they provide a default. A name in
    ``only`` that is neither an entry point nor in ``also_known`` (the extra plugins) is noted."""
    if only is None:
        return [(c, False) for c in candidates]
    missing = sorted(only - {c.name for c in candidates} - also_known)
    if missing:
        note_once(f"{PLUGINS_ENV} names {', '.join(map(repr, missing))}, which no installed plugin is called; "
                  f"installed: {', '.join(sorted({c.name for c in candidates}))}")
    return [
        (c, c.name not in only)
        for c in candidates
        if c.name in only or c.distribution == BUILTIN_DISTRIBUTION
    ]


class _Collect:
    """The ``register`` callback one ``register_*`` hook call receives: keeps what it registers."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.objects: list[Any] = []

    def __call__(self, obj: Any) -> None:
        self.objects.append(obj)

    def __repr__(self) -> str:
        return f"<register {self.kind}>"


def _new_manager(trace: bool | TextIO) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if trace:
        manager.add_hookcall_monitoring(*_tracer(None if trace is True else trace))
    return manager


def _load_one(registry: Registry, candidate: _Candidate, trace: bool | TextIO, only_if_default: bool) -> None:
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
    own = _new_manager(trace)
    try:
        registry.manager.register(plugin, name=candidate.name)
        own.register(plugin, name=candidate.name)
    except BaseException as exc:
        _reraise_interrupt(exc)
        _unregister(registry, candidate.name)  # pluggy may have added some of its hooks already
        record.error = _failure(exc, "registering its hooks")
        return
    callers = own.get_hookcallers(plugin) or []
    unknown = sorted(hook.name for hook in callers if not hook.has_spec())
    if unknown:
        _unregister(registry, candidate.name)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        record.error = f"implements unknown hook {unknown[0]}; known hooks: {known}"
        return
    record.hooks = sorted(hook.name for hook in callers)
    provided: list[tuple[str, Any]] = []
    phase = "registering"
    try:
        for kind, hook_name in KINDS.items():
            if hook_name not in record.hooks:
                continue
            phase = f"calling {hook_name}"
            collect = _Collect(kind)
            getattr(own.hook, hook_name)(register=collect)
            provided += [(kind, obj) for obj in collect.objects]
        phase = "checking what it registered"
        named = _check_provided(candidate.name, provided)
        if only_if_default and not any(needed_by_defaults(kind, name) for kind, name, _ in named):
            _unregister(registry, candidate.name)  # left out by MERGINGURIEL_PLUGINS
            registry.records.remove(record)
            return
        _check_conflicts(registry, candidate, named)
    except BaseException as exc:
        _reraise_interrupt(exc)
        _unregister(registry, candidate.name)
        record.error = _failure(exc, phase)
        return
    registry.plugin_managers[candidate.name] = own
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
        return f"{type(exc).__name__}: {first_line(exc, '')}".rstrip()
    return f"{exc!r} while {phase}"


def _unregister(registry: Registry, plugin_name: str) -> None:
    """Remove ``plugin_name``'s hooks from the registry's manager, if any were added, and
    forget its own manager."""
    if registry.manager.has_plugin(plugin_name):
        registry.manager.unregister(name=plugin_name)
    registry.plugin_managers.pop(plugin_name, None)


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
    """Call each plugin's ``register_commands`` on its own (through its hook caller, in load
    order), after the built-in commands.

    A plugin that raises (or calls ``sys.exit``), or adds a command whose name is already
    taken, is marked broken and its commands are removed; the other plugins and the
    built-ins keep working.
    """
    for record in list(registry.records):
        if record.broken or "register_commands" not in record.hooks or record.name not in registry.plugin_managers:
            continue
        before = list(app.registered_commands), list(app.registered_groups)
        taken = {_command_name(c) for c in before[0]} | {g.name for g in before[1] if g.name}
        try:
            registry.hooks(record.name).register_commands(app=app)
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


# ---------------------------------------------------------------- tracing hook calls
def _trace_from_environment() -> bool:
    return os.environ.get(TRACE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception as exc:  # a plugin's object may have a broken __repr__
        text = f"<{type(value).__qualname__} (repr failed: {type(exc).__name__})>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _registered_label(kind: str, obj: Any) -> str:
    name = getattr(obj, "name", None)
    return f"{kind} {name!r}" if isinstance(name, str) and name else f"{kind} {_short(obj, 60)}"


def _tracer(stream: TextIO | None):
    """pluggy ``before`` and ``after`` monitors that print one line each per hook call to
    ``stream`` (``None``: standard error, looked up at each call so a swapped one sees it)."""

    def out(line: str) -> None:
        print(f"trace: {line}", file=stream if stream is not None else sys.stderr, flush=True)

    def plugins_of(impls) -> str:
        return ", ".join(f"{impl.plugin_name} ({getattr(impl.function, '__module__', None) or '?'})"
                         for impl in impls) or "no plugin"

    def before(hook_name, impls, kwargs) -> None:
        arguments = ", ".join(f"{key}={_short(value, 60)}" for key, value in kwargs.items())
        out(f"{hook_name}({arguments}) calls {plugins_of(impls)}")

    def after(outcome, hook_name, impls, kwargs) -> None:
        names = ", ".join(impl.plugin_name for impl in impls) or "no plugin"
        if outcome.exception is not None:
            out(f"{hook_name} from {names} raised {_short(outcome.exception)}")
            return
        line = f"{hook_name} from {names} returned {_short(outcome.get_result())}"
        collect = kwargs.get("register")
        if isinstance(collect, _Collect):
            line += ", registered " + (", ".join(_registered_label(collect.kind, o) for o in collect.objects) or "nothing")
        out(line)

    return before, after


# ------------------------------------------------------- the process's registry (CLI)
_INSTALLED: Registry | None = None


def get_registry() -> Registry:
    """The registry of this process, for the CLI: the one installed with :func:`set_registry`
    or :func:`use_registry`, else :func:`load_plugins` (from the environment), loaded once."""
    global _INSTALLED
    if _INSTALLED is None:
        _INSTALLED = load_plugins()
    return _INSTALLED


def set_registry(registry: Registry | None) -> Registry | None:
    """Install ``registry`` as the process's (``None``: forget it, so :func:`get_registry`
    loads again); returns the one installed before, if any."""
    global _INSTALLED
    previous, _INSTALLED = _INSTALLED, registry
    return previous


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Install ``registry`` as the process's for the ``with`` block, then restore the previous one."""
    previous = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


def reset_registry() -> None:
    """Forget the process's registry, so the next :func:`get_registry` loads again."""
    set_registry(None)
