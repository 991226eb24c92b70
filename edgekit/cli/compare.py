"""`edgekit compare`: is run B faster, slower, or not detectably different from run A?"""

from __future__ import annotations

import click

from edgekit.cli.common import json_option, parse_percent, print_json
from edgekit.cli.history import history_option


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--fail-if-slower", default=None, metavar="5%", help="Exit with code 3 when B is significantly slower than A by more than this (CI gate).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Confidence of the bootstrap interval.")
@click.option("--min-effect", default="2%", show_default=True, metavar="2%", help="Smaller changes of the median count as no detectable difference.")
@history_option
@json_option
def compare(run_a, run_b, fail_if_slower, confidence, min_effect, history_path, as_json):
    """Compare the latency of RUN_B against RUN_A (history ids like 12, or report.json / bench --out paths).

    Ratio of medians B/A with a bootstrap interval and a Mann-Whitney rank test; the verdict is faster, slower
    or no detectable difference; environment differences (runtime version, power mode, emulation...) are listed.

    \b
    Examples:
      edgekit compare 3 7
      edgekit compare out-main/report.json out-pr/report.json --fail-if-slower 5%
    """
    from edgekit.report.compare import compare_runs, describe, load_run

    gate = parse_percent(fail_if_slower, "--fail-if-slower", upper=10.0)
    effect = parse_percent(min_effect, "--min-effect")
    res = compare_runs(load_run(run_a, history_path), load_run(run_b, history_path), confidence=confidence, min_effect=effect, fail_if_slower=gate)
    if as_json:
        print_json(res)
    else:
        for line in describe(res):
            click.echo(line)
    if res["regression"]:
        from edgekit.report.compare import RegressionError

        raise RegressionError(
            f"B is {(res['ratio'] - 1) * 100:.1f} % slower than A (interval {res['lo']:.3f}–{res['hi']:.3f}), over the --fail-if-slower {gate:.1%} gate",
            hint="this exit code (3) is meant for CI; compare the environment differences listed above",
        )
