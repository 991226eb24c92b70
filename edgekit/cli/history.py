"""`edgekit history`: list and export the runs every deploy and bench recorded."""

from __future__ import annotations

import click

from edgekit.cli.common import console, json_option, print_json

history_option = click.option(
    "--history", "history_path", type=click.Path(dir_okay=False), default=None,
    help="History database (default: the user data dir, or $EDGEKIT_HISTORY; 'off' disables recording).",
)


@click.group(invoke_without_command=True)
@click.option("--model", "-m", default=None, help="Only runs whose model name, path or sha256 contains this.")
@click.option("--device", "-d", default=None, help="Only runs whose host, CPU, arch or profile contains this.")
@click.option("--last", "-n", type=click.IntRange(min=1), default=None, help="Only the last N matching runs.")
@history_option
@json_option
@click.pass_context
def history(ctx, model, device, last, history_path, as_json):
    """List recorded runs (every deploy and bench appends one), oldest first.

    \b
    Examples:
      edgekit history --last 10
      edgekit history --model ppocr-det --device x86 --json
      edgekit history export --format csv --out runs.csv
    """
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.report.history import History

    with History.open(history_path, create=False) as h:
        runs = h.query(model=model, device=device, last=last)
        path = h.path
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "samples"} | {"samples_ms": r["samples"]} for r in runs])
        return
    from rich.markup import escape
    from rich.table import Table

    from rich import box

    t = Table(title=f"{len(runs)} run(s) in {path}", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, expand=True)
    flex = {"model": 3, "runtime": 2, "device": 2}
    for col in ("id", "UTC", "model", "runtime", "device", "median ms", "p90 ms", "runs", "mJ/inf"):
        t.add_column(col, no_wrap=col not in flex, overflow="fold", ratio=flex.get(col))
    for r in runs:
        dev = r.get("device") or {}
        where = f"{r['host']} {r['arch']}" + (" emulated" if dev.get("emulated") else "")
        t.add_row(*[escape(str(c)) for c in (
            r["id"], (r["created"] or "")[5:16].replace("T", " "), f"{r['model'].split('/')[-1]} ({r['kind']})",
            f"{r['runtime']}/{r['precision'] or '?'}", where, f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}", r["runs"],
            "—" if r["energy_mj"] is None else f"{r['energy_mj']:.2f}")])
    console().print(t)


@history.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Output file (csv: default stdout; parquet: required).")
@click.option("--model", "-m", default=None)
@click.option("--device", "-d", default=None)
@history_option
def export(fmt, out, model, device, history_path):
    """Export runs as CSV (one row per run, samples as a space-separated column) or Parquet (samples as a list)."""
    from edgekit.report.export import export_runs
    from edgekit.report.history import History

    with History.open(history_path, create=False) as h:
        runs = h.query(model=model, device=device)
    text = export_runs(runs, fmt, out)
    if text is not None:
        click.echo(text, nl=False)
    elif out:
        click.echo(f"wrote {len(runs)} run(s) to {out}", err=True)
