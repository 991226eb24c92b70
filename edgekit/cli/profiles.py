"""`edgekit profiles list|show`: print bundled or user device profiles (parsing and printing only)."""

from __future__ import annotations

from typing import Any, Dict, List

import click

from edgekit.cli.common import print_json
import yaml

from edgekit.core.profiles import DeviceProfile, bundled_names, load_profile, profile_as_dict, profile_as_json


def _summary(p: DeviceProfile) -> Dict[str, Any]:
    """One table row: the facts that decide a plan."""
    accs = [f"{a.type} {'/'.join(a.precisions)}" + (f" via {'/'.join(a.runtimes)}" if a.runtimes else " (unused)") for a in p.accelerators]
    return {
        "name": p.name,
        "arch": p.arch,
        "cores": p.cpu.cores,
        "threads": p.threads,
        "accelerators": ", ".join(accs) or "-",
        "runtimes": ", ".join(p.runtimes),
        "precisions": ", ".join(p.precisions),
        "energy": p.energy.source,
    }


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped/captured: no colours (rich's default) and no wrapping at 80 columns
        console = Console(width=200)
    return console


def _flow_scalar_lists(dumper, data):
    """Lists of scalars print on one line ([fp32, fp16]) like the bundled files; lists of mappings stay in block style."""
    flow = all(not isinstance(x, (dict, list)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


class _FlowListDumper(yaml.SafeDumper):
    """SafeDumper with one-line lists of scalars."""


_FlowListDumper.add_representer(list, _flow_scalar_lists)


@click.group("profiles")
def profiles():
    """List and show device profiles (bundled names or your own YAML files)."""


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print every resolved bundled profile as a JSON list.")
def list_cmd(as_json: bool) -> None:
    """List the bundled device profiles."""
    loaded = [load_profile(name) for name in bundled_names()]
    if as_json:
        print_json([profile_as_dict(p) for p in loaded])
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="bundled device profiles", title_justify="left")
    columns = ["name", "arch", "cores", "threads", "accelerators", "runtimes", "precisions", "energy"]
    for col in columns:
        table.add_column(col, justify="right" if col in ("cores", "threads") else "left", overflow="fold")
    for p in loaded:
        row = _summary(p)
        table.add_row(*(escape(str(row[c])) for c in columns))
    console = _console()
    console.print(table)
    console.print("show one: edgekit profiles show NAME   |   your own: --profile path/to/my.yaml (may `extends:` a bundled name)")


@profiles.command("show")
@click.argument("name_or_path", metavar="NAME|PATH")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved profile as JSON (the exact schema dump).")
def show(name_or_path: str, as_json: bool) -> None:
    """Show one resolved profile: a bundled NAME or a PATH to your YAML.

    `extends:` is applied; the header names every file the values came from.
    """
    profile = load_profile(name_or_path)
    if as_json:
        print_json(profile_as_json(profile))
        return
    data = profile.model_dump(mode="json", exclude_none=True, exclude={"source_file", "source_files"})
    header: List[str] = [f"# {profile.name}: resolved from {profile.source_file}"]
    for ancestor in profile.source_files[1:]:
        header.append(f"#   extends {ancestor}")
    click.echo("\n".join(header))
    click.echo(yaml.dump(data, Dumper=_FlowListDumper, sort_keys=False, allow_unicode=True, width=100).rstrip())
