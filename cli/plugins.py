"""``mu plugins``: every installed plugin, what it provides, and which are broken."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from merginguriel_core.plugins import Registry, get_registry

#: The option that sets a parameter of each kind of plugin.
PARAM_OPTIONS = {"strategy": "--param", "weighting": "--weighting-param"}


def _describe(obj: Any) -> dict[str, Any]:
    return {
        "description": getattr(obj, "description", ""),
        "reference": getattr(obj, "reference", None),
        "needs_base": getattr(obj, "needs_base", None),
        "params": [
            {"name": p.name, "type": p.type.__name__, "default": p.default, "help": p.help, "allowed": p.range_text()}
            for p in getattr(obj, "params", ())
        ],
    }


def _others(registry: Registry, kind: str, name: str, plugin_name: str) -> list[str]:
    """The other plugins that provide ``kind`` ``name`` too (it is then ambiguous and refused)."""
    return [p for p in registry.ambiguous.get((kind, name), ()) if p != plugin_name]


def _provided(registry: Registry, plugin_name: str, kind: str, name: str) -> str:
    others = _others(registry, kind, name, plugin_name)
    return f"{kind}: {name}" + (f" (AMBIGUOUS, also from {', '.join(others)}: refused)" if others else "")


def plugins(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show descriptions and parameters.")] = False,
) -> None:
    """List installed plugins: name, version, distribution, what they provide; broken ones with their error."""
    registry = get_registry()
    if json_out:
        rows = []
        for record in registry.records:
            row = record.as_dict()
            for item in row["provides"]:
                if item["kind"] in registry.objects:  # not a command
                    item.update(_describe(registry.objects[item["kind"]][item["name"]]))
                item["ambiguous_with"] = _others(registry, item["kind"], item["name"], record.name)
            rows.append(row)
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    width = max((len(r.name) for r in registry.records), default=10)
    for record in registry.records:
        dist = f"{record.distribution or '-'} {record.version or ''}".strip()
        if record.broken:
            typer.echo(f"{record.name:<{width}}  {dist:<24}  BROKEN: {record.error}")
            continue
        provides = ", ".join(_provided(registry, record.name, kind, name) for kind, name in record.provides)
        provides = provides or "(commands only)"
        typer.echo(f"{record.name:<{width}}  {dist:<24}  {provides}")
        if verbose:
            hooks = ", ".join(record.hooks) or "none"
            pinned = "; always loaded (provides a default of `mu`)" if record.pinned else ""
            typer.echo(f"{'':<{width}}    hooks: {hooks}{pinned}")
            for kind, name in record.provides:
                if kind not in registry.objects:  # a command: its help is `mu NAME --help`
                    continue
                info = _describe(registry.objects[kind][name])
                typer.echo(f"{'':<{width}}    {name}: {info['description']}")
                if info["reference"]:
                    typer.echo(f"{'':<{width}}      reference: {info['reference']}")
                option = PARAM_OPTIONS.get(kind, "param")
                for p in info["params"]:
                    allowed = f" {p['allowed']}" if p["allowed"] else ""
                    typer.echo(f"{'':<{width}}      {option} {p['name']}={p['default']} ({p['type']}{allowed}): "
                               f"{p['help']}")


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
