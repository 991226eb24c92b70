"""`edgekit setup`: prepare a device's venv with the runtimes its profile pins."""

from __future__ import annotations

import click

from edgekit.cli.common import console, json_option, print_json, profile_option, progress_printer, ssh_options


@click.command()
@profile_option()
@ssh_options
@click.option("--wheelhouse", type=click.Path(file_okay=False), default=None,
              help="Download the wheels here (for the device's platform and Python), upload them and install offline: for boards without internet.")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def setup(profile, host, ssh, wheelhouse, as_json, quiet):
    """Create (or repair) a venv under the device's work dir with the runtimes and numpy the profile pins.

    \b
    deploy, bench and doctor use that venv's Python automatically afterwards.
    Examples:
      edgekit setup --host pi@raspberrypi.local --profile raspberry-pi-5
      edgekit setup --host nano --profile jetson-nano --wheelhouse ./wheels
    """
    from edgekit.workflows.setup import setup as run_setup

    res = run_setup(profile, host, ssh=ssh, wheelhouse=wheelhouse, progress=progress_printer(not quiet and not as_json))
    if as_json:
        print_json(res)
        return
    from rich.markup import escape

    state = "already set up" if res["unchanged"] else ("repaired" if res["repaired"] else "set up")
    c = console()
    c.print(f"[bold]{escape(res['host'])}[/bold]: {state} in {res['seconds']} s — {escape(res['venv'])} "
            f"(Python {res['device_python']}, {res['machine']}{', from a wheelhouse' if res['wheelhouse'] else ''})")
    for name, ver in sorted(res["installed"].items()):
        c.print(f"  {escape(name)} {escape(str(ver))}")
    c.print("deploy/bench/doctor on this host now use " + escape(res["python"]))
